//! A WAN-side tripwire: an AF_PACKET capture on the far end of the router's WAN link that
//! records every frame arriving there which names a private (LAN-side) address: in the IPv4
//! header, in the IPv4 header an ICMP error quotes, or in ARP. Written from the wire formats
//! (RFC 791, 792, 826), not from the data path's code.

use anyhow::{Context as _, Result, bail};
use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::netns::Netns;

/// A prefix whose addresses must never be seen on the WAN.
pub type Prefix = (Ipv4Addr, u8);

fn in_prefix(a: Ipv4Addr, (net, len): Prefix) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(a) & mask == u32::from(net) & mask
}

fn addr_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let a: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(a))
}

/// An ICMP error seen on the wire, with the header it quotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotedError {
    pub icmp_type: u8,
    pub outer_src: Ipv4Addr,
    pub outer_dst: Ipv4Addr,
    pub quoted_src: Ipv4Addr,
    pub quoted_dst: Ipv4Addr,
    /// The quoted transport header's first four bytes: ports, or ICMP type/code/checksum.
    pub quoted_ports: (u16, u16),
}

/// What one Ethernet frame shows: a description of each private address in it, and the
/// ICMP error it is, if it is one.
pub fn inspect(frame: &[u8], private: &[Prefix]) -> (Vec<String>, Option<QuotedError>) {
    let mut leaks = Vec::new();
    let private_addr =
        |a: Option<Ipv4Addr>| a.filter(|a| private.iter().any(|p| in_prefix(*a, *p)));
    // Up to two VLAN tags (802.1Q, 802.1ad) before the frame's own type.
    let mut at = 12;
    let ethertype = loop {
        let Some(t) = frame
            .get(at..at + 2)
            .map(|t| u16::from_be_bytes([t[0], t[1]]))
        else {
            return (leaks, None);
        };
        if matches!(t, 0x8100 | 0x88a8) && at < 20 {
            at += 4;
            continue;
        }
        break t;
    };
    let frame = &frame[at - 12..];
    match ethertype {
        0x0806 => {
            // ARP for IPv4 over Ethernet: sender address at 14, target address at 24.
            for (what, at) in [("ARP sender", 14 + 14), ("ARP target", 14 + 24)] {
                if let Some(a) = private_addr(addr_at(frame, at)) {
                    leaks.push(format!("{what} {a}"));
                }
            }
            (leaks, None)
        }
        0x0800 => {
            let ip = &frame[14..];
            let Some(ihl) = ip.first().map(|b| ((b & 0x0f) as usize) * 4) else {
                return (leaks, None);
            };
            let (src, dst) = (addr_at(ip, 12), addr_at(ip, 16));
            for (what, a) in [("source", src), ("destination", dst)] {
                if let Some(a) = private_addr(a) {
                    leaks.push(format!("IPv4 {what} {a} ({src:?} -> {dst:?})"));
                }
            }
            // IP options (record route, timestamps, source routes) hold addresses anywhere.
            let options = ip.get(20..ihl.max(20)).unwrap_or(&[]);
            for i in 0..options.len().saturating_sub(3) {
                if let Some(a) = private_addr(addr_at(options, i)) {
                    leaks.push(format!("IPv4 option bytes naming {a} ({src:?} -> {dst:?})"));
                }
            }
            let proto = ip.get(9).copied();
            let frag_offset = ip
                .get(6..8)
                .map(|f| u16::from_be_bytes([f[0], f[1]]) & 0x1fff);
            let icmp_type = ip.get(ihl).copied();
            let is_error = matches!(icmp_type, Some(3 | 4 | 5 | 11 | 12));
            if proto != Some(1) || frag_offset != Some(0) || !is_error {
                return (leaks, None);
            }
            let Some(q) = ip.get(ihl + 8..) else {
                return (leaks, None);
            };
            let qihl = q.first().map_or(20, |b| ((b & 0x0f) as usize) * 4);
            let (qsrc, qdst) = (addr_at(q, 12), addr_at(q, 16));
            for (what, a) in [("quoted source", qsrc), ("quoted destination", qdst)] {
                if let Some(a) = private_addr(a) {
                    leaks.push(format!(
                        "ICMP type {} {what} {a} ({src:?} -> {dst:?})",
                        icmp_type.unwrap_or(0)
                    ));
                }
            }
            let port = |at: usize| {
                q.get(qihl + at..qihl + at + 2)
                    .map(|p| u16::from_be_bytes([p[0], p[1]]))
            };
            let error = match (src, dst, qsrc, qdst) {
                (Some(outer_src), Some(outer_dst), Some(quoted_src), Some(quoted_dst)) => {
                    Some(QuotedError {
                        icmp_type: icmp_type.unwrap_or(0),
                        outer_src,
                        outer_dst,
                        quoted_src,
                        quoted_dst,
                        quoted_ports: (port(0).unwrap_or(0), port(2).unwrap_or(0)),
                    })
                }
                _ => None,
            };
            (leaks, error)
        }
        _ => (leaks, None),
    }
}

/// What the tripwire saw.
#[derive(Debug, Default)]
pub struct Capture {
    pub frames: usize,
    /// Every private address seen, with the frame's description.
    pub leaks: Vec<String>,
    pub icmp_errors: Vec<QuotedError>,
}

/// A capture running on a thread until `finish`.
pub struct Tripwire {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<Capture>>,
}

const ETH_P_ALL: u16 = 0x0003;
/// sockaddr_ll.sll_pkttype of frames this host sent (not received).
const PACKET_OUTGOING: u8 = 4;

impl Tripwire {
    /// Starts capturing frames received on `ifname` in `ns`.
    pub fn start(ns: &Netns, ifname: &str, private: Vec<Prefix>) -> Result<Tripwire> {
        let ifname = ifname.to_string();
        let fd = ns.run(move || -> Result<OwnedFd> {
            let ifindex = nat_ctl::netdev::ifindex(&ifname)?;
            // SAFETY: plain socket(2); the fd is owned at once.
            let raw = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    i32::from(ETH_P_ALL.to_be()),
                )
            };
            if raw < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            // SAFETY: a fresh fd from socket(2).
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: zeroed sockaddr_ll is valid; the fields set are the ones bind reads.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = ETH_P_ALL.to_be();
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: a valid sockaddr_ll and its size.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if r != 0 {
                bail!("binding the capture: {}", std::io::Error::last_os_error());
            }
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: a valid timeval and its size.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    size_of::<libc::timeval>() as u32,
                )
            };
            Ok(fd)
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = std::thread::spawn(move || -> Result<Capture> {
            let mut cap = Capture::default();
            let mut buf = vec![0u8; 65536];
            while !stopped.load(Ordering::Relaxed) {
                // SAFETY: zeroed sockaddr_ll is valid for recvfrom to fill.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = size_of::<libc::sockaddr_ll>() as u32;
                // SAFETY: buffer and address of the given sizes.
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut from as *mut libc::sockaddr_ll).cast(),
                        &mut len,
                    )
                };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) {
                        continue;
                    }
                    return Err(e).context("capture recvfrom");
                }
                if from.sll_pkttype == PACKET_OUTGOING {
                    continue;
                }
                cap.frames += 1;
                let (leaks, error) = inspect(&buf[..n as usize], &private);
                cap.leaks.extend(leaks);
                cap.icmp_errors.extend(error);
            }
            Ok(cap)
        });
        Ok(Tripwire { stop, handle })
    }

    /// Stops after what is in flight has arrived, and returns what was seen.
    pub fn finish(self) -> Result<Capture> {
        std::thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("tripwire thread panicked"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::{self, Hdr};

    const LAN: Prefix = (Ipv4Addr::new(192, 168, 1, 0), 24);

    fn hdr(src: [u8; 4], dst: [u8; 4]) -> Hdr {
        Hdr {
            smac: [2, 0, 0, 0, 0, 1],
            dmac: [2, 0, 0, 0, 0, 2],
            src: src.into(),
            dst: dst.into(),
            ttl: 64,
        }
    }

    #[test]
    fn outer_quoted_and_arp_addresses_are_caught() {
        let clean = packets::udp(&hdr([203, 0, 113, 1], [203, 0, 113, 2]), 1, 2, b"x");
        assert!(inspect(&clean, &[LAN]).0.is_empty());
        let outer = packets::udp(&hdr([192, 168, 1, 1], [203, 0, 113, 2]), 1, 2, b"x");
        assert_eq!(inspect(&outer, &[LAN]).0.len(), 1);
        let about = packets::udp(&hdr([203, 0, 113, 2], [192, 168, 1, 3]), 7, 4000, b"x");
        let err = packets::icmp_error(
            &hdr([203, 0, 113, 1], [203, 0, 113, 2]),
            packets::port_unreachable(),
            &about,
        );
        let (leaks, e) = inspect(&err, &[LAN]);
        assert_eq!(leaks.len(), 1, "{leaks:?}");
        let e = e.expect("an ICMP error");
        assert_eq!((e.icmp_type, e.quoted_ports), (3, (7, 4000)));
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        arp[28..32].copy_from_slice(&[192, 168, 1, 1]);
        arp[38..42].copy_from_slice(&[203, 0, 113, 2]);
        assert_eq!(inspect(&arp, &[LAN]).0, vec!["ARP sender 192.168.1.1"]);
        // Behind a VLAN tag, and inside IP options.
        let mut tagged = outer[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0, 0, 0]);
        tagged.extend_from_slice(&outer[12..]);
        assert_eq!(inspect(&tagged, &[LAN]).0.len(), 1);
        let mut rr = clean[..34].to_vec();
        rr.extend_from_slice(&[7, 7, 8, 192, 168, 1, 2, 0]);
        rr.extend_from_slice(&clean[34..]);
        rr[14] = 0x47;
        assert_eq!(
            inspect(&rr, &[LAN]).0.len(),
            1,
            "{:?}",
            inspect(&rr, &[LAN]).0
        );
    }
}
