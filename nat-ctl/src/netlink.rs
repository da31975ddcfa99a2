//! Route, address, link and neighbour changes from rtnetlink (messages decoded by
//! netlink-packet-route). The data path keeps each
//! cached flow's route for up to FLOW_TTL_NS and each next hop (`NextHop`) for up to
//! NEXT_HOP_TTL_NS; the daemon moves the route generation on when one of these changes, so
//! flows follow a new route or a neighbour's new MAC address at once instead of within those
//! times. Address and link changes also make it
//! look at the WAN address again (DHCP).

use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd as _, OwnedFd},
};

use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
};
use nix::{
    errno::Errno,
    sys::socket::{
        AddressFamily as SocketFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
        bind, recv, socket,
    },
};
use tokio::io::unix::AsyncFd;

const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_NEIGH: u32 = 0x4;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;

/// What one neighbour message says: (ifindex, IPv4 address) and its MAC, if it has one.
#[derive(Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: i32,
    pub addr: [u8; 4],
    pub lladdr: Option<Vec<u8>>,
    pub deleted: bool,
}

/// What a batch of netlink messages changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Cached next hops may be wrong: look them up again.
    pub next_hops: bool,
    /// An address or link changed: the WAN address may be another one.
    pub addresses: bool,
}

/// Parses the messages in one netlink datagram (netlink-packet-route): what routes,
/// addresses and links changed (always relevant to next hops), and the IPv4 neighbour
/// messages (relevant only when a MAC address changes, which `Neighbours` tells).
pub fn parse(buf: &[u8]) -> (Changes, Vec<Neighbour>) {
    let mut changes = Changes::default();
    let mut neighbours = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        // The header's length, to step on even past a message the crate cannot decode.
        let Ok(len) = NetlinkBuffer::new_checked(&buf[off..]).map(|b| b.length() as usize) else {
            break;
        };
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len]) {
            Ok(NetlinkMessage {
                payload: NetlinkPayload::InnerMessage(message),
                ..
            }) => match message {
                RouteNetlinkMessage::NewNeighbour(n) => neighbours.extend(neighbour(&n, false)),
                RouteNetlinkMessage::DelNeighbour(n) => neighbours.extend(neighbour(&n, true)),
                RouteNetlinkMessage::NewAddress(_)
                | RouteNetlinkMessage::DelAddress(_)
                | RouteNetlinkMessage::NewLink(_)
                | RouteNetlinkMessage::DelLink(_) => {
                    changes.next_hops = true;
                    changes.addresses = true;
                }
                _ => changes.next_hops = true,
            },
            // Anything else (a message it cannot decode included) may have moved a route.
            _ => changes.next_hops = true,
        }
        // Messages are 4-byte aligned.
        off += (len + 3) & !3;
    }
    (changes, neighbours)
}

/// An IPv4 neighbour message's address and MAC.
fn neighbour(n: &NeighbourMessage, deleted: bool) -> Option<Neighbour> {
    if n.header.family != AddressFamily::Inet {
        return None;
    }
    let (mut addr, mut lladdr) = (None, None);
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => addr = Some(ip.octets()),
            NeighbourAttribute::LinkLayerAddress(mac) => lladdr = Some(mac.clone()),
            _ => {}
        }
    }
    Some(Neighbour {
        ifindex: n.header.ifindex as i32,
        addr: addr?,
        // A failed neighbour has no usable MAC, whatever the message carries.
        lladdr: lladdr.filter(|_| n.header.state != NeighbourState::Failed),
        deleted,
    })
}

/// The MAC each neighbour had when last heard of. Neighbour entries change state all the
/// time (reachable, stale, probe...) without any effect on forwarding; only a new or lost
/// MAC address matters.
#[derive(Default)]
pub struct Neighbours(HashMap<(i32, [u8; 4]), Vec<u8>>);

impl Neighbours {
    /// Records `n`; true when cached next hops may now be wrong.
    pub fn update(&mut self, n: Neighbour) -> bool {
        let key = (n.ifindex, n.addr);
        match (n.lladdr.filter(|_| !n.deleted), self.0.get(&key)) {
            (Some(mac), Some(old)) if *old == mac => false,
            (Some(mac), _) => {
                self.0.insert(key, mac);
                true
            }
            (None, had) => {
                let had = had.is_some();
                self.0.remove(&key);
                had
            }
        }
    }
}

/// A socket subscribed to the changes that can move a next hop.
pub struct RouteWatch {
    fd: AsyncFd<OwnedFd>,
    neighbours: Neighbours,
}

impl RouteWatch {
    pub fn open() -> io::Result<RouteWatch> {
        let fd: OwnedFd = socket(
            SocketFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        let groups = RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
        Ok(RouteWatch {
            // SAFETY: the AsyncFd owns the fd, so it outlives its registration.
            fd: unsafe { AsyncFd::register(fd) }?,
            neighbours: Neighbours::default(),
        })
    }

    /// Waits until something changed that can move a next hop or the WAN address;
    /// everything queued is read.
    pub async fn changed(&mut self) -> io::Result<Changes> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut guard = self.fd.readable().await?;
            let mut changed = Changes::default();
            loop {
                let n = match recv(self.fd.get_ref().as_raw_fd(), &mut buf, MsgFlags::empty()) {
                    Ok(n) => n,
                    Err(Errno::EAGAIN) => break,
                    // The kernel dropped messages for us: assume the worst.
                    Err(Errno::ENOBUFS) => {
                        changed = Changes {
                            next_hops: true,
                            addresses: true,
                        };
                        continue;
                    }
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                };
                let (changes, neighbours) = parse(&buf[..n]);
                changed.next_hops |= changes.next_hops;
                changed.addresses |= changes.addresses;
                for nb in neighbours {
                    changed.next_hops |= self.neighbours.update(nb);
                }
            }
            guard.clear_ready();
            if changed != Changes::default() {
                return Ok(changed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The kernel's numbers (linux/rtnetlink.h, linux/neighbour.h), to build messages as it
    // sends them.
    const RTM_NEWADDR: u16 = 20;
    const RTM_NEWNEIGH: u16 = 28;
    const RTM_DELNEIGH: u16 = 29;
    const NLMSG_HDR_LEN: usize = 16;
    const NDA_DST: u16 = 1;
    const NDA_LLADDR: u16 = 2;
    const AF_INET: u8 = 2;
    const NUD_FAILED: u16 = 0x20;

    fn nlmsg(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDR_LEN + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn neigh(state: u16, addr: [u8; 4], mac: Option<[u8; 6]>) -> Vec<u8> {
        let mut b = vec![AF_INET, 0, 0, 0];
        b.extend_from_slice(&7i32.to_ne_bytes());
        b.extend_from_slice(&state.to_ne_bytes());
        b.extend_from_slice(&[0, 1]);
        b.extend(attr(NDA_DST, &addr));
        if let Some(mac) = mac {
            b.extend(attr(NDA_LLADDR, &mac));
        }
        b
    }

    #[test]
    fn routes_always_count_and_neighbours_only_when_their_mac_changes() {
        let (a, m1, m2) = ([192, 168, 1, 10], [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let route = nlmsg(24, &[0; 12]);
        let next_hops = Changes {
            next_hops: true,
            addresses: false,
        };
        assert_eq!(parse(&route), (next_hops, vec![]));
        let both = Changes {
            next_hops: true,
            addresses: true,
        };
        assert_eq!(parse(&nlmsg(RTM_NEWADDR, &[0; 8])), (both, vec![]));

        let mut table = Neighbours::default();
        let mut feed = |kind: u16, state: u16, mac: Option<[u8; 6]>| {
            let (changes, ns) = parse(&nlmsg(kind, &neigh(state, a, mac)));
            assert_eq!(changes, Changes::default());
            ns.into_iter().fold(false, |c, n| table.update(n) | c)
        };
        assert!(feed(RTM_NEWNEIGH, 0x02, Some(m1)), "first heard of");
        assert!(!feed(RTM_NEWNEIGH, 0x04, Some(m1)), "reachable -> stale");
        assert!(feed(RTM_NEWNEIGH, 0x02, Some(m2)), "new MAC");
        assert!(feed(RTM_NEWNEIGH, NUD_FAILED, Some(m2)), "failed");
        assert!(!feed(RTM_NEWNEIGH, NUD_FAILED, None), "still failed");
        assert!(feed(RTM_NEWNEIGH, 0x02, Some(m2)), "back");
        assert!(feed(RTM_DELNEIGH, 0x02, Some(m2)), "deleted");
    }

    #[test]
    fn truncated_messages_are_not_read_past_their_end() {
        let mut m = nlmsg(RTM_NEWNEIGH, &neigh(0x02, [10, 0, 0, 1], Some([2; 6])));
        m[0] = 200; // claims more than there is
        assert_eq!(parse(&m), (Changes::default(), vec![]));
        assert_eq!(parse(&[1, 2, 3]), (Changes::default(), vec![]));
    }
}
