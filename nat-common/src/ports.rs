//! External port (and ICMP id) selection: keep the source port when it is in the pool and
//! free, otherwise draw random pool slots (RFC 6056 style), a bounded number of times.

use crate::proto::IPPROTO_ICMP;

/// Highest privileged port (RFC 4787 REQ-3 keeps 0-1023 sources in 1-1023).
pub const PRIVILEGED_MAX: u16 = 1023;

/// Random draws after the source port itself was taken. Bounded for the verifier; with the
/// pool at 90% use, the chance that all fail is 0.9^32 = 3%.
pub const MAX_PORT_TRIES: u32 = 32;

/// PORT_IN_POOL is a bitmap, one bit per port: 1 K words (8 KiB) stay in the CPU's caches,
/// where an array of one 8-byte value per port (512 KiB) competed with the session tables.
pub const POOL_BITMAP_WORDS: u32 = crate::maps::PORT_SLOTS / 64;

/// The PORT_IN_POOL word holding `port` (host order), and its bit in it.
pub const fn pool_bit(port: u16) -> (u32, u64) {
    ((port / 64) as u32, 1 << (port % 64))
}

/// PORTS_TAKEN: a bitmap of the external ports mappings hold (MAPPINGS_IN), one per protocol
/// that has mappings (TCP, UDP, ICMP ids), so that a port draw skips a taken port by one bit
/// in a 24 KiB array the caches keep, instead of a failed insert into MAPPINGS_IN, which
/// stays the arbiter (a clear bit only means "try it").
pub const PORTS_TAKEN_WORDS: u32 = 3 * POOL_BITMAP_WORDS;

/// Which of the per-protocol port tables (PORTS_TAKEN's, the sweeper's PORTS_LIVE and
/// PORT_OWNERS) a protocol's mappings use; None for a protocol without mappings.
pub const fn port_table(proto: u8) -> Option<u32> {
    match proto {
        crate::proto::IPPROTO_TCP => Some(0),
        crate::proto::IPPROTO_UDP => Some(1),
        IPPROTO_ICMP => Some(2),
        _ => None,
    }
}

/// The PORTS_TAKEN word and bit of external `port` (host order) of `proto`; None for a
/// protocol without mappings.
pub const fn taken_bit(proto: u8, port: u16) -> Option<(u32, u64)> {
    let Some(table) = port_table(proto) else {
        return None;
    };
    let (word, bit) = pool_bit(port);
    Some((table * POOL_BITMAP_WORDS + word, bit))
}

/// Does a flow from `port` (host order) want a privileged external port?
/// ICMP ids have no privileged range.
pub const fn wants_privileged(proto: u8, port: u16) -> bool {
    proto != IPPROTO_ICMP && port != 0 && port <= PRIVILEGED_MAX
}

/// Slot of PORT_POOL to try for random draw `random`. Privileged sources draw from the
/// privileged part when it is not empty; everyone else from the rest. None: empty pool.
pub const fn pool_slot(random: u32, privileged: bool, priv_len: u32, pool_len: u32) -> Option<u32> {
    if privileged && priv_len > 0 {
        Some(random % priv_len)
    } else if pool_len > 0 {
        Some(priv_len + random % pool_len)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{IPPROTO_TCP, IPPROTO_UDP};
    use proptest::prelude::*;

    #[test]
    fn privileged_classification() {
        assert!(wants_privileged(IPPROTO_TCP, 22));
        assert!(wants_privileged(IPPROTO_UDP, 1023));
        assert!(!wants_privileged(IPPROTO_UDP, 1024));
        assert!(!wants_privileged(IPPROTO_ICMP, 5));
        assert!(!wants_privileged(IPPROTO_TCP, 0));
    }

    #[test]
    fn empty_pools() {
        assert_eq!(pool_slot(7, false, 10, 0), None);
        assert_eq!(pool_slot(7, true, 0, 0), None);
        // An empty privileged part falls back to the ordinary pool.
        assert_eq!(pool_slot(7, true, 0, 5), Some(2));
    }

    #[test]
    fn every_taken_port_has_its_own_bit() {
        let mut seen = std::collections::HashSet::new();
        for proto in [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP] {
            for port in 0..=u16::MAX {
                let (word, bit) = taken_bit(proto, port).unwrap();
                assert!(word < PORTS_TAKEN_WORDS && bit.count_ones() == 1);
                assert!(seen.insert((word, bit)), "{proto} {port}");
            }
        }
        assert_eq!(taken_bit(47, 1), None);
    }

    #[test]
    fn every_port_has_its_own_bit() {
        let mut seen = std::collections::HashSet::new();
        for port in 0..=u16::MAX {
            let (word, bit) = pool_bit(port);
            assert!(word < POOL_BITMAP_WORDS && bit.count_ones() == 1);
            assert!(seen.insert((word, bit)), "port {port}");
        }
    }

    proptest! {
        #[test]
        fn slot_stays_in_its_part(r in any::<u32>(), priv_len in 0u32..1024, pool_len in 0u32..65536, privileged in any::<bool>()) {
            match pool_slot(r, privileged, priv_len, pool_len) {
                None => prop_assert!(pool_len == 0 && (!privileged || priv_len == 0)),
                Some(s) if privileged && priv_len > 0 => prop_assert!(s < priv_len),
                Some(s) => prop_assert!(s >= priv_len && s < priv_len + pool_len),
            }
        }
    }
}
