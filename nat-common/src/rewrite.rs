//! Header rewrites with incremental checksum updates. They work on fixed-size views of the
//! headers (`&mut [u8; N]`), which the eBPF program obtains after one bounds check, so every
//! access here is at a constant offset the verifier can see.
//!
//! Checksum arithmetic is byte-order agnostic: fields are read as native integers from the
//! wire bytes and written back the same way.

use crate::checksum::{replace_u16, replace_u32, udp_replace_u16, udp_replace_u32};

pub const IP_TTL: usize = 8;
pub const IP_CHECK: usize = 10;
pub const IP_SRC: usize = 12;
pub const IP_DST: usize = 16;
pub const TCP_CHECK: usize = 16;
pub const UDP_CHECK: usize = 6;
pub const ICMP_CHECK: usize = 2;
pub const ICMP_ID: usize = 4;

/// The transport header being rewritten, as much of it as the rewrite touches.
pub enum L4<'a> {
    Tcp(&'a mut [u8; 20]),
    Udp(&'a mut [u8; 8]),
    /// ICMP echo request/reply: the id plays the part of the port.
    IcmpEcho(&'a mut [u8; 8]),
}

/// Which endpoint of the packet is rewritten: the source (LAN->WAN SNAT) or the destination
/// (WAN->LAN reverse translation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

#[inline(always)]
pub fn get_u16<const N: usize>(b: &[u8; N], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub fn set_u16<const N: usize>(b: &mut [u8; N], at: usize, v: u16) {
    let v = v.to_ne_bytes();
    b[at] = v[0];
    b[at + 1] = v[1];
}

#[inline(always)]
pub fn get_u32<const N: usize>(b: &[u8; N], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub fn set_u32<const N: usize>(b: &mut [u8; N], at: usize, v: u32) {
    let v = v.to_ne_bytes();
    b[at] = v[0];
    b[at + 1] = v[1];
    b[at + 2] = v[2];
    b[at + 3] = v[3];
}

/// The port (or ICMP id) on `side`, wire bytes as a native integer.
#[inline(always)]
pub fn l4_port(l4: &L4<'_>, side: Side) -> u16 {
    match l4 {
        L4::Tcp(h) => get_u16(h, port_offset(side)),
        L4::Udp(h) => get_u16(h, port_offset(side)),
        L4::IcmpEcho(h) => get_u16(h, ICMP_ID),
    }
}

#[inline(always)]
const fn port_offset(side: Side) -> usize {
    match side {
        Side::Source => 0,
        Side::Destination => 2,
    }
}

/// Rewrites the address on `side` and fixes the IPv4 header checksum; returns the old
/// address. Enough on its own for protocols without a pseudo-header checksum (GRE, ESP).
#[inline(always)]
pub fn rewrite_addr(ip: &mut [u8; 20], side: Side, addr: u32) -> u32 {
    let addr_at = match side {
        Side::Source => IP_SRC,
        Side::Destination => IP_DST,
    };
    let old_addr = get_u32(ip, addr_at);
    set_u32(ip, addr_at, addr);
    set_u16(
        ip,
        IP_CHECK,
        replace_u32(get_u16(ip, IP_CHECK), old_addr, addr),
    );
    old_addr
}

/// Rewrites one 16-bit word of a TCP segment's payload (`at` is even counted from the
/// segment start, as PPTP's call ids are) and fixes the TCP checksum.
#[inline(always)]
pub fn rewrite_tcp_payload_u16<const N: usize>(
    tcp: &mut [u8; 20],
    data: &mut [u8; N],
    at: usize,
    new: u16,
) {
    let old = get_u16(data, at);
    set_u16(data, at, new);
    set_u16(
        tcp,
        TCP_CHECK,
        replace_u16(get_u16(tcp, TCP_CHECK), old, new),
    );
}

/// Rewrites the address and port on `side` to `addr`/`port` (wire-order natives) and fixes
/// the IPv4 header checksum and the transport checksum (pseudo-header included).
#[inline(always)]
pub fn rewrite_endpoint(ip: &mut [u8; 20], l4: &mut L4<'_>, side: Side, addr: u32, port: u16) {
    let old_addr = rewrite_addr(ip, side, addr);

    match l4 {
        L4::Tcp(h) => {
            let h = &mut **h;
            let at = port_offset(side);
            let old_port = get_u16(h, at);
            set_u16(h, at, port);
            let c = replace_u32(get_u16(h, TCP_CHECK), old_addr, addr);
            set_u16(h, TCP_CHECK, replace_u16(c, old_port, port));
        }
        L4::Udp(h) => {
            let h = &mut **h;
            let at = port_offset(side);
            let old_port = get_u16(h, at);
            set_u16(h, at, port);
            let c = udp_replace_u32(get_u16(h, UDP_CHECK), old_addr, addr);
            set_u16(h, UDP_CHECK, udp_replace_u16(c, old_port, port));
        }
        L4::IcmpEcho(h) => {
            let h = &mut **h;
            // The ICMP checksum has no pseudo-header: only the id matters.
            let old_id = get_u16(h, ICMP_ID);
            set_u16(h, ICMP_ID, port);
            set_u16(
                h,
                ICMP_CHECK,
                replace_u16(get_u16(h, ICMP_CHECK), old_id, port),
            );
        }
    }
}

/// Rewrites the address on `side` of the packet quoted inside an ICMP error: the quoted IPv4
/// header and its checksum, and the ICMP error's checksum. Alone, for quoted GRE and ESP,
/// whose ids pass the NAT unchanged; returns the old address.
#[inline(always)]
pub fn rewrite_quoted_addr(icmp: &mut [u8; 8], ip: &mut [u8; 20], side: Side, addr: u32) -> u32 {
    let old_ip_check = get_u16(ip, IP_CHECK);
    let old_addr = rewrite_addr(ip, side, addr);
    let new_ip_check = get_u16(ip, IP_CHECK);
    let mut icmp_check = get_u16(icmp, ICMP_CHECK);
    icmp_check = replace_u32(icmp_check, old_addr, addr);
    icmp_check = replace_u16(icmp_check, old_ip_check, new_ip_check);
    set_u16(icmp, ICMP_CHECK, icmp_check);
    old_addr
}

/// Rewrites the address and port on `side` of the packet quoted inside an ICMP error
/// (RFC 5508 REQ-3): the quoted IPv4 header and its checksum, the quoted port (or echo id)
/// and, for UDP and ICMP echo, the quoted checksum within the first 8 bytes; and the ICMP
/// error's own checksum for every word that changed. The outer header is the caller's.
#[inline(always)]
pub fn rewrite_quoted(
    icmp: &mut [u8; 8],
    ip: &mut [u8; 20],
    l4: &mut [u8; 8],
    proto: u8,
    side: Side,
    addr: u32,
    port: u16,
) {
    let old_addr = rewrite_quoted_addr(icmp, ip, side, addr);
    let mut icmp_check = get_u16(icmp, ICMP_CHECK);
    let port_at = if proto == crate::proto::IPPROTO_ICMP {
        ICMP_ID
    } else {
        port_offset(side)
    };
    // verifier: two constant offsets.
    let old_port = if port_at == ICMP_ID {
        get_u16(l4, ICMP_ID)
    } else if port_at == 0 {
        get_u16(l4, 0)
    } else {
        get_u16(l4, 2)
    };
    if port_at == ICMP_ID {
        set_u16(l4, ICMP_ID, port);
    } else if port_at == 0 {
        set_u16(l4, 0, port);
    } else {
        set_u16(l4, 2, port);
    }
    icmp_check = replace_u16(icmp_check, old_port, port);
    // The quoted transport checksum, when the first 8 bytes hold it.
    let quoted_check_at = match proto {
        crate::proto::IPPROTO_UDP => Some(UDP_CHECK),
        crate::proto::IPPROTO_ICMP => Some(ICMP_CHECK),
        _ => None,
    };
    if let Some(at) = quoted_check_at {
        let old = if at == UDP_CHECK {
            get_u16(l4, UDP_CHECK)
        } else {
            get_u16(l4, ICMP_CHECK)
        };
        let new = if proto == crate::proto::IPPROTO_UDP {
            udp_replace_u16(udp_replace_u32(old, old_addr, addr), old_port, port)
        } else {
            replace_u16(old, old_port, port)
        };
        if at == UDP_CHECK {
            set_u16(l4, UDP_CHECK, new)
        } else {
            set_u16(l4, ICMP_CHECK, new)
        }
        icmp_check = replace_u16(icmp_check, old, new);
    }
    set_u16(icmp, ICMP_CHECK, icmp_check);
}

/// Decrements the TTL of a packet we forward ourselves, fixing the header checksum.
/// The caller has checked TTL > 1.
#[inline(always)]
pub fn decrement_ttl(ip: &mut [u8; 20]) {
    // TTL shares its 16-bit word with the protocol byte.
    let old = get_u16(ip, IP_TTL);
    ip[IP_TTL] -= 1;
    let new = get_u16(ip, IP_TTL);
    set_u16(ip, IP_CHECK, replace_u16(get_u16(ip, IP_CHECK), old, new));
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;
    use std::vec::Vec;

    #[derive(Clone, Copy, Debug)]
    enum Kind {
        Tcp,
        Udp,
        UdpNoChecksum,
        Icmp,
    }

    fn build(
        kind: Kind,
        src: [u8; 4],
        dst: [u8; 4],
        sp: u16,
        dp: u16,
        ttl: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let b = PacketBuilder::ipv4(src, dst, ttl);
        let mut out = Vec::new();
        match kind {
            Kind::Tcp => b
                .tcp(sp, dp, 1234, 4096)
                .syn()
                .write(&mut out, payload)
                .unwrap(),
            Kind::Udp | Kind::UdpNoChecksum => b.udp(sp, dp).write(&mut out, payload).unwrap(),
            Kind::Icmp => b
                .icmpv4_echo_request(sp, dp)
                .write(&mut out, payload)
                .unwrap(),
        }
        if let Kind::UdpNoChecksum = kind {
            out[20 + 6] = 0;
            out[20 + 7] = 0;
        }
        out
    }

    fn apply(pkt: &mut [u8], kind: Kind, side: Side, addr: [u8; 4], port: u16) {
        let (ip, rest) = pkt.split_at_mut(20);
        let ip: &mut [u8; 20] = ip.try_into().unwrap();
        let port = u16::from_ne_bytes(port.to_be_bytes());
        let addr = u32::from_ne_bytes(addr);
        let l4 = match kind {
            Kind::Tcp => L4::Tcp((&mut rest[..20]).try_into().unwrap()),
            Kind::Udp | Kind::UdpNoChecksum => L4::Udp((&mut rest[..8]).try_into().unwrap()),
            Kind::Icmp => L4::IcmpEcho((&mut rest[..8]).try_into().unwrap()),
        };
        rewrite_endpoint(ip, &mut { l4 }, side, addr, port);
    }

    /// Recomputes every checksum with etherparse and compares with what the rewrite left.
    fn assert_checksums_valid(pkt: &[u8], kind: Kind) {
        let sliced = SlicedPacket::from_ip(pkt).unwrap();
        let net = match sliced.net.unwrap() {
            etherparse::NetSlice::Ipv4(v4) => v4,
            _ => panic!("not ipv4"),
        };
        let hdr = net.header().to_header();
        assert_eq!(
            hdr.header_checksum,
            hdr.calc_header_checksum(),
            "IPv4 header checksum"
        );
        let payload = net.payload().payload;
        match (sliced.transport.unwrap(), kind) {
            (TransportSlice::Tcp(t), _) => {
                let want = t.to_header().calc_checksum_ipv4(&hdr, t.payload()).unwrap();
                assert_eq!(t.checksum(), want, "TCP checksum");
            }
            (TransportSlice::Udp(u), Kind::UdpNoChecksum) => {
                assert_eq!(u.checksum(), 0, "UDP zero stays zero")
            }
            (TransportSlice::Udp(u), _) => {
                let want = u.to_header().calc_checksum_ipv4(&hdr, u.payload()).unwrap();
                // 0 and 0xffff are the same sum; UDP must send 0xffff.
                assert_ne!(u.checksum(), 0);
                assert_eq!(u.checksum(), want, "UDP checksum");
            }
            (TransportSlice::Icmpv4(i), _) => {
                let want = i.header().icmp_type.calc_checksum(i.payload());
                assert_eq!(i.checksum(), want, "ICMP checksum");
            }
            _ => panic!("unexpected transport"),
        }
        let _ = payload;
    }

    fn kind_strategy() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Tcp),
            Just(Kind::Udp),
            Just(Kind::UdpNoChecksum),
            Just(Kind::Icmp)
        ]
    }

    /// An ICMP error quoting `inner` (the first 28 bytes of it), as a router would send it.
    fn icmp_error(outer_src: [u8; 4], outer_dst: [u8; 4], inner: &[u8]) -> Vec<u8> {
        use etherparse::{Icmpv4Type, icmpv4::DestUnreachableHeader};
        let mut out = Vec::new();
        PacketBuilder::ipv4(outer_src, outer_dst, 64)
            .icmpv4(Icmpv4Type::DestinationUnreachable(
                DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
            ))
            .write(&mut out, &inner[..28])
            .unwrap();
        out
    }

    proptest! {
        /// Translating the quoted packet of an ICMP error leaves every checksum right: the
        /// outer ICMP checksum, the quoted IPv4 header's, and the quoted UDP/ICMP one.
        #[test]
        fn quoted_rewrite_keeps_checksums_valid(kind in prop_oneof![Just(Kind::Tcp), Just(Kind::Udp), Just(Kind::UdpNoChecksum), Just(Kind::Icmp)],
                                                src in any::<[u8;4]>(), dst in any::<[u8;4]>(), sp in 1u16.., dp in 1u16..,
                                                new_addr in any::<[u8;4]>(), new_port in 1u16..) {
            let inner = build(kind, src, dst, sp, dp, 64, b"0123456789abcdef");
            let mut err = icmp_error([9, 9, 9, 9], src, &inner);
            let proto = inner[9];
            {
                let (_, rest) = err.split_at_mut(20);
                let (icmp, rest) = rest.split_at_mut(8);
                let (ip, rest) = rest.split_at_mut(20);
                let l4 = &mut rest[..8];
                rewrite_quoted(icmp.try_into().unwrap(), ip.try_into().unwrap(), l4.try_into().unwrap(), proto, Side::Source,
                               u32::from_ne_bytes(new_addr), u16::from_ne_bytes(new_port.to_be_bytes()));
            }
            // Outer ICMP checksum over the whole message.
            prop_assert_eq!(crate::checksum::fold(crate::checksum::sum_bytes(&err[20..], 0)), 0xffff, "ICMP checksum");
            // Quoted IPv4 header checksum.
            prop_assert_eq!(crate::checksum::fold(crate::checksum::sum_bytes(&err[28..48], 0)), 0xffff, "quoted IP checksum");
            prop_assert_eq!(&err[28 + 12..28 + 16], &new_addr[..]);
            match kind {
                Kind::Icmp => prop_assert_eq!(&err[48 + 4..48 + 6], &new_port.to_be_bytes()[..]),
                _ => prop_assert_eq!(&err[48..50], &new_port.to_be_bytes()[..]),
            }
            // The quoted UDP checksum is what a full recomputation over the translated
            // original datagram gives.
            if let Kind::Udp = kind {
                let mut orig = inner.clone();
                orig[12..16].copy_from_slice(&new_addr);
                orig[20..22].copy_from_slice(&new_port.to_be_bytes());
                let fixed = SlicedPacket::from_ip(&orig).unwrap();
                if let (Some(etherparse::NetSlice::Ipv4(v4)), Some(TransportSlice::Udp(u))) = (fixed.net, fixed.transport) {
                    let want = u.to_header().calc_checksum_ipv4(&v4.header().to_header(), u.payload()).unwrap();
                    prop_assert_eq!(u16::from_be_bytes([err[48 + 6], err[48 + 7]]), want);
                }
            }
            if let Kind::UdpNoChecksum = kind {
                prop_assert_eq!(&err[48 + 6..48 + 8], &[0u8, 0][..]);
            }
        }

        #[test]
        fn rewrite_keeps_all_checksums_valid(kind in kind_strategy(), src in any::<[u8;4]>(), dst in any::<[u8;4]>(),
                                             sp in any::<u16>(), dp in any::<u16>(), ttl in 2u8..,
                                             new_addr in any::<[u8;4]>(), new_port in any::<u16>(), dest_side in any::<bool>(),
                                             payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut pkt = build(kind, src, dst, sp, dp, ttl, &payload);
            let side = if dest_side { Side::Destination } else { Side::Source };
            apply(&mut pkt, kind, side, new_addr, new_port);
            let sliced = SlicedPacket::from_ip(&pkt).unwrap();
            let (s, d) = match sliced.net.as_ref().unwrap() {
                etherparse::NetSlice::Ipv4(v4) => (v4.header().source(), v4.header().destination()),
                _ => unreachable!(),
            };
            match side {
                Side::Source => { prop_assert_eq!(s, new_addr); prop_assert_eq!(d, dst); }
                Side::Destination => { prop_assert_eq!(s, src); prop_assert_eq!(d, new_addr); }
            }
            match sliced.transport.as_ref().unwrap() {
                TransportSlice::Tcp(t) => prop_assert_eq!(if dest_side { t.destination_port() } else { t.source_port() }, new_port),
                TransportSlice::Udp(u) => prop_assert_eq!(if dest_side { u.destination_port() } else { u.source_port() }, new_port),
                TransportSlice::Icmpv4(i) => prop_assert_eq!(u16::from_be_bytes([i.bytes5to8()[0], i.bytes5to8()[1]]), new_port),
                _ => unreachable!(),
            }
            assert_checksums_valid(&pkt, kind);
        }

        #[test]
        fn ttl_decrement_keeps_header_checksum(kind in kind_strategy(), ttl in 2u8.., src in any::<[u8;4]>(), dst in any::<[u8;4]>()) {
            let mut pkt = build(kind, src, dst, 1000, 2000, ttl, b"x");
            let ip: &mut [u8; 20] = (&mut pkt[..20]).try_into().unwrap();
            decrement_ttl(ip);
            prop_assert_eq!(pkt[8], ttl - 1);
            assert_checksums_valid(&pkt, kind);
        }
    }
}
