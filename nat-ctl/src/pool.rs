//! The external port pool (docs/architecture.md, "Defaults"): the configured range minus the router's own
//! ip_local_port_range and the ports it listens on, plus 1-1023 (minus listeners) for
//! privileged sources.

use anyhow::{Context as _, Result};
use nat_common::ports::PRIVILEGED_MAX;
use std::{collections::BTreeSet, fs, ops::RangeInclusive};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPool {
    /// Ports 1-1023 for privileged sources.
    pub privileged: Vec<u16>,
    /// Ports for everything else (and ICMP ids).
    pub ordinary: Vec<u16>,
}

impl PortPool {
    /// `range` is the configured ordinary range; `reserved` are ports the router uses.
    pub fn build(range: RangeInclusive<u16>, reserved: &BTreeSet<u16>) -> PortPool {
        let privileged = (1..=PRIVILEGED_MAX)
            .filter(|p| !reserved.contains(p))
            .collect();
        let lo = (*range.start()).max(PRIVILEGED_MAX + 1);
        let ordinary = (lo..=*range.end())
            .filter(|p| !reserved.contains(p))
            .collect();
        PortPool {
            privileged,
            ordinary,
        }
    }

    /// The widest run of ports between two of the ordinary part's that are not the pool's:
    /// its first port and its length ((0, 0): none).
    pub fn widest_gap(&self) -> (u16, u16) {
        self.ordinary
            .windows(2)
            .map(|w| (w[0] + 1, w[1] - w[0] - 1))
            .fold((0, 0), |best, g| if g.1 > best.1 { g } else { best })
    }

    pub fn contains(&self, port: u16) -> bool {
        self.privileged.binary_search(&port).is_ok() || self.ordinary.binary_search(&port).is_ok()
    }
}

/// The router's own ephemeral range, from /proc/sys/net/ipv4/ip_local_port_range.
pub fn local_port_range() -> Result<RangeInclusive<u16>> {
    let path = "/proc/sys/net/ipv4/ip_local_port_range";
    let s = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse_local_port_range(&s).with_context(|| format!("parsing {path}: {s:?}"))
}

pub fn parse_local_port_range(s: &str) -> Option<RangeInclusive<u16>> {
    let mut it = s.split_whitespace().map(|x| x.parse::<u16>());
    match (it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b))) if a <= b => Some(a..=b),
        _ => None,
    }
}

/// Ports with a listening TCP socket or a bound UDP socket on this host (this namespace).
pub fn listening_ports() -> Result<BTreeSet<u16>> {
    let mut ports = BTreeSet::new();
    for (path, listen_state) in [
        ("/proc/net/tcp", Some("0A")),
        ("/proc/net/tcp6", Some("0A")),
        ("/proc/net/udp", None),
        ("/proc/net/udp6", None),
    ] {
        let Ok(s) = fs::read_to_string(path) else {
            continue; // IPv6 may be disabled
        };
        ports.extend(parse_proc_net(&s, listen_state));
    }
    Ok(ports)
}

/// Local ports in a /proc/net/{tcp,udp} table, optionally only those in state `state`.
pub fn parse_proc_net(table: &str, state: Option<&str>) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let local = cols.nth(1)?;
            let st = cols.nth(1)?;
            if state.is_some_and(|want| want != st) {
                return None;
            }
            let port = local.rsplit(':').next()?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_excludes_reserved_and_splits_privileged() {
        let reserved: BTreeSet<u16> = [22, 53, 2000, 40000].into_iter().collect();
        let pool = PortPool::build(1024..=65535, &reserved);
        assert_eq!(pool.privileged.len(), 1023 - 2);
        assert!(!pool.contains(22) && !pool.contains(2000) && !pool.contains(40000));
        assert!(pool.contains(1) && pool.contains(1024) && pool.contains(65535));
        assert!(!pool.contains(0));
        assert_eq!(pool.ordinary.len(), 65535 - 1024 + 1 - 2);
    }

    #[test]
    fn the_widest_gap_is_the_routers_own_range() {
        let mut reserved: BTreeSet<u16> = (32768..=60999).collect();
        reserved.extend([2000, 2001, 40000_u16]);
        let pool = PortPool::build(1024..=65535, &reserved);
        assert_eq!(pool.widest_gap(), (32768, 60999 - 32768 + 1));
        let whole = PortPool::build(1024..=65535, &BTreeSet::new());
        assert_eq!(whole.widest_gap(), (0, 0));
        let two = PortPool::build(5000..=5001, &BTreeSet::new());
        assert_eq!(two.widest_gap(), (0, 0));
    }

    #[test]
    fn range_below_1024_is_clamped() {
        let pool = PortPool::build(10..=2000, &BTreeSet::new());
        assert_eq!(pool.ordinary.first(), Some(&1024));
        assert_eq!(pool.ordinary.last(), Some(&2000));
    }

    #[test]
    fn proc_net_parsing() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:8AE2 0100007F:0016 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n";
        assert_eq!(parse_proc_net(tcp, Some("0A")), vec![22]);
        assert_eq!(parse_proc_net(tcp, None), vec![22, 0x8ae2]);
    }

    #[test]
    fn local_range_parsing() {
        assert_eq!(
            parse_local_port_range("32768\t60999\n"),
            Some(32768..=60999)
        );
        assert_eq!(parse_local_port_range("9 1"), None);
        assert_eq!(parse_local_port_range("junk"), None);
    }
}
