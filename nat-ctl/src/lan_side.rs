//! The LAN side, as the data path's anti-spoofing and the WAN egress's last line see it:
//! every IPv4 subnet of the LAN interface and every route through it (main table), and the
//! router's own addresses on it. Read from the kernel at start and again whenever netlink
//! reports an address or route change (see docs/architecture.md, "The LAN side").

use anyhow::{Context as _, Result};
use nat_common::maps::{LAN_SIDE_PREFIX, LAN_SIDE_ROUTER, MAX_LAN_PREFIXES};
use std::{collections::BTreeMap, net::Ipv4Addr};

use crate::netdev::{self, Ipv4Net};

/// (network, prefix length) -> LAN_SIDE_PREFIX or LAN_SIDE_ROUTER (always /32).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LanSide {
    pub primary: Option<Ipv4Net>,
    pub entries: BTreeMap<(Ipv4Addr, u8), u32>,
}

impl LanSide {
    /// What the kernel says about interface `lan` now.
    pub fn read(lan: &str) -> Result<LanSide> {
        let addrs = netdev::ipv4_all(lan)?;
        let routes =
            std::fs::read_to_string("/proc/net/route").context("reading /proc/net/route")?;
        Ok(Self::from_parts(&addrs, &routes_via(&routes, lan)))
    }

    /// The LAN side of addresses `addrs` (primary first) and routes `routes` through the
    /// LAN interface.
    pub fn from_parts(addrs: &[Ipv4Net], routes: &[Ipv4Net]) -> LanSide {
        let mut entries = BTreeMap::new();
        for net in addrs.iter().chain(routes) {
            // A default route through the LAN would make the whole Internet "LAN": not a
            // LAN prefix, whatever it is for.
            if net.prefix_len > 0 {
                entries.insert((net.network(), net.prefix_len), LAN_SIDE_PREFIX);
            }
        }
        for a in addrs {
            entries.insert((a.addr, 32), LAN_SIDE_ROUTER);
        }
        LanSide {
            primary: addrs.first().copied(),
            entries,
        }
    }

    /// How many entries there are beyond the primary subnet and address, which the data path
    /// checks inline (NatConfig::lan_extra).
    pub fn extra(&self) -> u32 {
        let Some(p) = self.primary else {
            return 0;
        };
        let inline = [(p.network(), p.prefix_len), (p.addr, 32)];
        self.entries.keys().filter(|k| !inline.contains(k)).count() as u32
    }

    /// The entries, refusing more than the map holds.
    pub fn checked_entries(&self) -> Result<&BTreeMap<(Ipv4Addr, u8), u32>> {
        anyhow::ensure!(
            self.entries.len() <= MAX_LAN_PREFIXES as usize,
            "the LAN interface has {} addresses and routes; xdp-nat follows at most {MAX_LAN_PREFIXES}",
            self.entries.len()
        );
        Ok(&self.entries)
    }

    /// For the log: "192.168.1.0/24, 10.9.0.0/16 (router 192.168.1.1)".
    pub fn describe(&self) -> String {
        let nets: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, k)| **k == LAN_SIDE_PREFIX)
            .map(|((a, l), _)| format!("{a}/{l}"))
            .collect();
        let routers: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, k)| **k == LAN_SIDE_ROUTER)
            .map(|((a, _), _)| a.to_string())
            .collect();
        format!("{} (router {})", nets.join(", "), routers.join(", "))
    }
}

/// The routes of /proc/net/route (the main table) whose interface is `lan`.
fn routes_via(table: &str, lan: &str) -> Vec<Ipv4Net> {
    // Iface Destination Gateway Flags RefCnt Use Metric Mask ...; each address is its
    // wire-order word printed as a native integer in hex.
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 || f[0] != lan {
                return None;
            }
            let dst = u32::from_str_radix(f[1], 16).ok()?;
            let mask = u32::from_str_radix(f[7], 16).ok()?;
            Some(Ipv4Net {
                addr: Ipv4Addr::from(dst.to_ne_bytes()),
                prefix_len: mask.count_ones() as u8,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(a: [u8; 4], l: u8) -> Ipv4Net {
        Ipv4Net {
            addr: Ipv4Addr::from(a),
            prefix_len: l,
        }
    }

    #[test]
    fn proc_net_route_lines_are_read() {
        // As printed on a little-endian host: 10.9.0.0/16 via 192.168.1.254 on lan0.
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     wan0\t00000000\t017100CB\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     lan0\t0000090A\tFE01A8C0\t0003\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                     lan0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        if cfg!(target_endian = "little") {
            assert_eq!(
                routes_via(table, "lan0"),
                vec![net([10, 9, 0, 0], 16), net([192, 168, 1, 0], 24)]
            );
        }
        assert!(routes_via(table, "eth9").is_empty());
    }

    #[test]
    fn addresses_routes_and_the_router() {
        let primary = net([192, 168, 1, 1], 24);
        let plain = LanSide::from_parts(&[primary], &[net([192, 168, 1, 0], 24)]);
        assert_eq!(plain.extra(), 0, "{plain:?}");
        let more = LanSide::from_parts(
            &[primary, net([192, 168, 7, 1], 24)],
            &[net([10, 9, 0, 0], 16), net([0, 0, 0, 0], 0)],
        );
        // 192.168.7.0/24, 192.168.7.1/32, 10.9.0.0/16; never the default route.
        assert_eq!(more.extra(), 3, "{more:?}");
        assert_eq!(
            more.entries.get(&(Ipv4Addr::new(192, 168, 7, 1), 32)),
            Some(&LAN_SIDE_ROUTER)
        );
        assert!(!more.entries.contains_key(&(Ipv4Addr::UNSPECIFIED, 0)));
        assert_eq!(
            more.describe(),
            "10.9.0.0/16, 192.168.1.0/24, 192.168.7.0/24 (router 192.168.1.1, 192.168.7.1)"
        );
    }
}
