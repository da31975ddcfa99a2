//! External port (and ICMP id) selection: keep the source port when it is in the pool and
//! free, otherwise draw random ports of the pool (RFC 6056 style), a bounded number of
//! times.

use crate::{config::NatConfig, proto::IPPROTO_ICMP};

/// Highest privileged port (RFC 4787 REQ-3 keeps 0-1023 sources in 1-1023).
pub const PRIVILEGED_MAX: u16 = 1023;

/// Random draws after the source port itself was taken. Bounded for the verifier; with the
/// pool at 90% use, the chance that all fail is 0.9^32 = 3%.
pub const MAX_PORT_TRIES: u32 = 32;

/// PORT_IN_POOL and PORT_POOL are bitmaps, one bit per port: 1 K words (8 KiB) stay in the
/// CPU's caches, where an array of one 8-byte value per port (512 KiB) competed with the
/// session tables (a new flow's random draw waited about 140 ns for its slot of such an
/// array at 64 K sessions).
pub const POOL_BITMAP_WORDS: u32 = crate::maps::PORT_SLOTS / 64;

/// The PORT_IN_POOL (or PORT_POOL) word holding `port` (host order), and its bit in it.
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

/// Draws of a candidate port for one try of the random search: a candidate is kept only if
/// PORT_POOL has it (rejection sampling, uniform over the pool). The span a candidate comes
/// from leaves out the pool's widest gap (the router's own ip_local_port_range, by default),
/// so that nearly every candidate is the pool's, and a try finds a pool port as surely as
/// its draw of a slot of the pool's list did before. Bounded for the verifier, which
/// explores each draw (8 cost the LAN program 84 K instructions more than 4).
pub const DRAWS_PER_TRY: u32 = 4;

/// The candidate port (host order) of random draw `random`, for `cfg`'s pool: privileged
/// sources draw from 1-1023 when the privileged part is not empty; everyone else from the
/// ordinary part's span less its widest gap. None: the part drawn from is empty. The
/// candidate is the pool's only if PORT_POOL has it.
pub const fn draw_candidate(random: u32, privileged: bool, cfg: &NatConfig) -> Option<u16> {
    if privileged && cfg.priv_pool_len > 0 {
        return Some(1 + (random % PRIVILEGED_MAX as u32) as u16);
    }
    if cfg.pool_len == 0 || cfg.pool_first > cfg.pool_last {
        return None;
    }
    let span = (cfg.pool_last - cfg.pool_first) as u32 + 1;
    let gap = cfg.pool_gap_len as u32;
    if gap >= span {
        return None;
    }
    let mut port = cfg.pool_first as u32 + random % (span - gap);
    if gap > 0 && port >= cfg.pool_gap_first as u32 {
        port += gap;
    }
    Some(port as u16)
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

    /// A pool of `priv_len` privileged ports and `pool_len` ordinary ones in `first..=last`.
    fn pool(priv_len: u32, pool_len: u32, first: u16, last: u16) -> NatConfig {
        NatConfig {
            priv_pool_len: priv_len,
            pool_len,
            pool_first: first,
            pool_last: last,
            ..NatConfig::default()
        }
    }

    /// The default pool's shape: 1024-65535 less the router's 32768-60999.
    #[test]
    fn a_draw_skips_the_widest_gap() {
        let cfg = NatConfig {
            pool_gap_first: 32768,
            pool_gap_len: 28232,
            ..pool(0, 36280, 1024, 65535)
        };
        assert_eq!(draw_candidate(0, false, &cfg), Some(1024));
        assert_eq!(draw_candidate(32767 - 1024, false, &cfg), Some(32767));
        assert_eq!(draw_candidate(32768 - 1024, false, &cfg), Some(61000));
        assert_eq!(draw_candidate(36279, false, &cfg), Some(65535));
        // And wraps: draw 36280 is the first port again.
        assert_eq!(draw_candidate(36280, false, &cfg), Some(1024));
    }

    #[test]
    fn empty_pools() {
        assert_eq!(draw_candidate(7, false, &pool(10, 0, 0, 0)), None);
        assert_eq!(draw_candidate(7, true, &pool(0, 0, 0, 0)), None);
        // An empty privileged part falls back to the ordinary pool.
        assert_eq!(draw_candidate(7, true, &pool(0, 5, 2000, 2004)), Some(2002));
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
        fn a_candidate_stays_in_its_part_and_out_of_the_gap(
            r in any::<u32>(),
            priv_len in 0u32..1024,
            pool_len in 1u32..64513,
            first in 1024u16..=65535,
            width in 2u16..=64511,
            gap in (1u16..64511, 0u16..64511),
            privileged in any::<bool>(),
        ) {
            let last = first.saturating_add(width);
            // A gap strictly inside the span, as a pool's is (its ends are pool ports).
            let inner = last - first - 1;
            let gap_len = if inner == 0 { 0 } else { gap.1 % inner };
            let gap_first = first + 1 + if inner == 0 { 0 } else { gap.0 % (inner - gap_len + 1) };
            let cfg = NatConfig {
                pool_gap_first: gap_first,
                pool_gap_len: gap_len,
                ..pool(priv_len, pool_len, first, last)
            };
            match draw_candidate(r, privileged, &cfg) {
                None => prop_assert!(false, "a pool with ports drew nothing"),
                Some(p) if privileged && priv_len > 0 => prop_assert!((1..=PRIVILEGED_MAX).contains(&p)),
                Some(p) => {
                    prop_assert!(p >= first && p <= last);
                    prop_assert!(gap_len == 0 || p < gap_first || p >= gap_first + gap_len, "{} in the gap", p);
                }
            }
        }

        /// Every port of the ordinary span can be drawn: the draw is uniform over it (as
        /// the kept candidates are over the pool).
        #[test]
        fn every_port_of_the_span_can_come(first in 1024u16..60000, width in 0u16..4000, k in 0u16..4000) {
            let k = k % (width + 1);
            let cfg = pool(0, 1, first, first + width);
            prop_assert_eq!(draw_candidate(u32::from(k), false, &cfg), Some(first + k));
        }
    }
}
