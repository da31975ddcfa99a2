//! The flow cache: what the fast path needs of an established flow, one cache line per flow,
//! in an array indexed by a hash of the flow's key (FLOWS_OUT for LAN->WAN, FLOWS_IN for
//! replies). A hit costs one array access, which the verifier inlines, and one memory line;
//! a BPF hash map lookup costs a bucket line and an element (two dependent misses once the
//! tables outgrow the CPU caches).
//!
//! It is a cache, never the truth: SESSIONS / SESSIONS_IN stay authoritative, and the fast
//! path fills an entry from them (fast.rs). An entry answers only while its next hop does
//! (same route generation, younger than NEXT_HOP_TTL_NS), so every active flow goes back to
//! its session at least once a second, which keeps the session's `last_seen_ns` (and so the
//! sweeper's timeouts) within a second. Whatever changes a session's translation (a new
//! external port, an unsynced TCP half) forgets its entries; the control plane's bulk
//! removals move the route generation on.
//!
//! Four ways per set (four adjacent entries), sized with an entry per session slot: at a
//! flow per entry a set overflows for well under 1% of flows (two ways left about 3% of the
//! benchmark's packets missing). Entries are written by any CPU with plain stores, so a
//! reader may see one half-written: the last word is a check over the other seven, and an
//! entry whose check does not match is a miss.

use core::mem::size_of;

use crate::maps::{NextHop, ReplyKey, SessionKey};

/// Entries per set: a flow lives in one of the adjacent entries of its set.
pub const FLOW_WAYS: u32 = 4;
/// Words of an entry, the last being the check.
pub const FLOW_WORDS: usize = 8;
/// Fewest and most entries per cache (each is 64 bytes).
pub const MIN_FLOW_ENTRIES: u32 = 1024;
pub const MAX_FLOW_ENTRIES: u32 = 1 << 21;

/// One flow in the cache (64 bytes, one cache line).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedFlow {
    /// The flow's key, as `key_out` / `key_in` give it.
    pub key: [u64; 2],
    pub hop: NextHop,
    /// FLOWS_IN: the LAN host. FLOWS_OUT: 0 (the WAN address is in the config).
    pub addr: u32,
    /// FLOWS_OUT: the external port. FLOWS_IN: the LAN host's port (ICMP: echo id).
    pub port: u16,
    /// Passthrough class of the session.
    pub class: u8,
    pub _pad: u8,
    pub _reserved: u64,
    /// `check(seed, first seven words)`; anything else (0 after `forget`) is a miss.
    pub check: u64,
}
const _: () = assert!(size_of::<CachedFlow>() == FLOW_WORDS * 8);

/// Entries per direction for a session table of `max_sessions`: one per session, a power of
/// two (the set index is a mask of the hash).
pub const fn entries_for(max_sessions: u32) -> u32 {
    let n = if max_sessions < MIN_FLOW_ENTRIES {
        MIN_FLOW_ENTRIES
    } else if max_sessions > MAX_FLOW_ENTRIES {
        MAX_FLOW_ENTRIES
    } else {
        max_sessions
    };
    n.next_power_of_two()
}

/// `NatConfig::flow_set_bits` for a cache of `entries` entries (a power of two).
pub const fn set_bits(entries: u32) -> u32 {
    match entries / FLOW_WAYS {
        0 => 0,
        sets => sets.ilog2(),
    }
}

/// An outbound flow's key words.
pub const fn key_out(k: &SessionKey) -> [u64; 2] {
    [
        k.int_addr as u64 | (k.rem_addr as u64) << 32,
        k.int_port as u64 | (k.rem_port as u64) << 16 | (k.proto as u64) << 32,
    ]
}

/// A reply's key words.
pub const fn key_in(k: &ReplyKey) -> [u64; 2] {
    [
        k.rem_addr as u64 | (k.ext_port as u64) << 32 | (k.rem_port as u64) << 48,
        k.proto as u64,
    ]
}

/// Odd constants (from the splitmix64 / xxhash families) the key and check words are
/// multiplied by.
const MUL: [u64; FLOW_WORDS] = [
    0x9e37_79b9_7f4a_7c15,
    0xc2b2_ae3d_27d4_eb4f,
    0x1656_67b1_9e37_79f9,
    0x27d4_eb2f_1656_67c5,
    0x94d0_49bb_1331_11eb,
    0xbf58_476d_1ce4_e5b9,
    0x85eb_ca77_c2b2_ae63,
    0xff51_afd7_ed55_8ccd,
];

/// The first entry of the set `key` lives in, of 2^`bits` sets: FLOW_WAYS * the top `bits`
/// bits of a multiplicative hash (the top bits of a product depend on every bit of the key;
/// lower bits do not, and would put flows that differ only in an address's last byte, the
/// top byte of a wire-order word, into one set). The key words are multiplied independently
/// and the result mixed once more: this runs for every packet.
#[inline(always)]
pub const fn first_entry(seed: u32, bits: u32, key: &[u64; 2]) -> u32 {
    let h = (key[0] ^ seed as u64).wrapping_mul(MUL[0]) ^ key[1].wrapping_mul(MUL[1]);
    let h = (h ^ (h >> 31)).wrapping_mul(MUL[2]);
    // bits == 0 (not configured) gives an index past any cache: a miss.
    (h.wrapping_shr(64 - bits) as u32).wrapping_mul(FLOW_WAYS)
}

/// The check word over an entry's first seven words, which a reader recomputes to tell a
/// whole entry from one another CPU is halfway through writing. Each word is multiplied by
/// its own odd constant (so a change in any word changes the sum) and the products summed:
/// independent multiplies, a few cycles on the per-packet path. Never 0, so a zeroed entry
/// is a miss.
#[inline(always)]
pub const fn check(seed: u32, w: &[u64; FLOW_WORDS]) -> u64 {
    let mut h = (seed as u64).wrapping_mul(MUL[FLOW_WORDS - 1]);
    // verifier: a fixed count, unrolled.
    let mut i = 0;
    while i < FLOW_WORDS - 1 {
        h = h.wrapping_add(w[i].wrapping_mul(MUL[i]));
        i += 1;
    }
    h | 1
}

impl CachedFlow {
    /// An entry for `key`, sealed with its check.
    #[inline(always)]
    pub fn new(seed: u32, key: [u64; 2], hop: &NextHop, addr: u32, port: u16, class: u8) -> Self {
        let mut e = CachedFlow {
            key,
            hop: *hop,
            addr,
            port,
            class,
            _pad: 0,
            _reserved: 0,
            check: 0,
        };
        e.check = check(seed, &e.words());
        e
    }

    /// The entry as words (what is written and read).
    #[inline(always)]
    pub fn words(&self) -> [u64; FLOW_WORDS] {
        // SAFETY: #[repr(C)], 64 bytes of integers without implicit padding, 8-aligned.
        unsafe { core::mem::transmute::<CachedFlow, [u64; FLOW_WORDS]>(*self) }
    }

    /// The entry these words hold, whatever they hold (see `holds`).
    #[inline(always)]
    pub fn from_words(w: [u64; FLOW_WORDS]) -> Self {
        // SAFETY: every bit pattern is a valid CachedFlow (integers only).
        unsafe { core::mem::transmute::<[u64; FLOW_WORDS], CachedFlow>(w) }
    }

    /// Is this a whole entry for `key`, written under `seed`?
    #[inline(always)]
    pub fn holds(&self, seed: u32, key: &[u64; 2]) -> bool {
        Self::hit(seed, key, self.words()).is_some()
    }

    /// The entry in words `w` if they are a whole entry for `key` written under `seed`.
    #[inline(always)]
    pub fn hit(seed: u32, key: &[u64; 2], w: [u64; FLOW_WORDS]) -> Option<Self> {
        if w[0] == key[0] && w[1] == key[1] && w[FLOW_WORDS - 1] == check(seed, &w) {
            Some(Self::from_words(w))
        } else {
            None
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], integers only, size asserted.
unsafe impl aya::Pod for CachedFlow {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

    fn hop(ifindex: u32) -> NextHop {
        NextHop {
            dmac: [2, 0, 0, 0, 0, 1],
            smac: [2, 0, 0, 0, 0, 2],
            ifindex,
            max_len: 1500,
            route_gen: 3,
            resolved: 77,
        }
    }

    #[test]
    fn an_entry_holds_its_key_and_nothing_else() {
        let k = key_out(&SessionKey::new(IPPROTO_TCP, 1, 2, 3, 4));
        let e = CachedFlow::new(9, k, &hop(5), 0, 4000, 0);
        assert!(e.holds(9, &k));
        assert_eq!(CachedFlow::from_words(e.words()), e);
        let other = key_out(&SessionKey::new(IPPROTO_UDP, 1, 2, 3, 4));
        assert!(!e.holds(9, &other));
        // Written under another seed (an earlier run): a miss.
        assert!(!e.holds(10, &k));
        assert!(!CachedFlow::default().holds(0, &[0, 0]));
    }

    #[test]
    fn a_half_written_entry_is_a_miss() {
        let k = key_out(&SessionKey::new(IPPROTO_TCP, 1, 2, 3, 4));
        let a = CachedFlow::new(9, k, &hop(5), 0, 4000, 0).words();
        let b = CachedFlow::new(9, k, &hop(6), 0, 5000, 0).words();
        // Every mix of the two writes' words that is neither whole entry.
        for mask in 1..(1u32 << FLOW_WORDS) - 1 {
            let mut w = a;
            for (i, word) in w.iter_mut().enumerate() {
                if mask & (1 << i) != 0 {
                    *word = b[i];
                }
            }
            if w != a && w != b {
                assert!(!CachedFlow::from_words(w).holds(9, &k), "mask {mask:#b}");
            }
        }
    }

    #[test]
    fn keys_differ_in_every_field() {
        let base = SessionKey::new(IPPROTO_UDP, 1, 2, 3, 4);
        let variants = [
            SessionKey::new(IPPROTO_TCP, 1, 2, 3, 4),
            SessionKey::new(IPPROTO_UDP, 9, 2, 3, 4),
            SessionKey::new(IPPROTO_UDP, 1, 9, 3, 4),
            SessionKey::new(IPPROTO_UDP, 1, 2, 9, 4),
            SessionKey::new(IPPROTO_UDP, 1, 2, 3, 9),
        ];
        for v in variants {
            assert_ne!(key_out(&v), key_out(&base), "{v:?}");
        }
        let r = base.reply_key(7);
        assert_ne!(key_in(&r), key_in(&base.reply_key(8)));
        assert_ne!(
            key_in(&r),
            key_in(&SessionKey::new(IPPROTO_ICMP, 1, 2, 3, 4).reply_key(7))
        );
    }

    #[test]
    fn flows_spread_over_the_sets() {
        let entries = entries_for(65_536);
        let bits = set_bits(entries);
        let mut used = std::vec![0u32; 1 << bits];
        // A flow per four entries (the benchmark's 64 K flows in the default 256 K entries),
        // made like its flows: a few hosts, consecutive ports, each to its own remote.
        let flows = entries / 4;
        let wire = |a, b, c: u32| u32::from_ne_bytes([a, b, (c >> 8) as u8, c as u8]);
        for i in 0..flows {
            let host = wire(192, 168, 10 + i % 240);
            let port = (1024 + i / 240) as u16;
            let k = SessionKey::new(IPPROTO_TCP, host, port.to_be(), wire(10, 9, i), 443);
            let first = first_entry(1234, bits, &key_out(&k));
            assert_eq!(first % FLOW_WAYS, 0);
            assert!(first < entries);
            used[(first / FLOW_WAYS) as usize] += 1;
        }
        // At half a flow per set, a uniform hash leaves about 3% of flows without a way
        // (Poisson: sum over k > 2 of (k - 2) P(k) per set).
        let overfull: u32 = used
            .iter()
            .filter(|&&n| n > FLOW_WAYS)
            .map(|n| n - FLOW_WAYS)
            .sum();
        assert!(
            overfull < flows / 20,
            "{overfull} of {flows} flows did not fit"
        );
    }

    #[test]
    fn sizes_are_powers_of_two_within_bounds() {
        assert_eq!(entries_for(0), MIN_FLOW_ENTRIES);
        assert_eq!(entries_for(262_144), 262_144);
        assert_eq!(entries_for(300_000), 524_288);
        assert_eq!(entries_for(u32::MAX), MAX_FLOW_ENTRIES);
        assert_eq!(1 << set_bits(1024), 1024 / FLOW_WAYS);
        assert!(
            first_entry(7, 0, &[1, 2]) >= MAX_FLOW_ENTRIES,
            "unconfigured: a miss"
        );
    }
}
