//! The flow cache: what the fast path needs of an established flow, in 32 bytes, in an array
//! indexed by a hash of the flow's key (FLOWS_OUT for LAN->WAN, FLOWS_IN for replies). A hit
//! costs one array access, which the verifier inlines, and one memory line; a BPF hash map
//! lookup costs a bucket line and an element (two dependent misses once the tables outgrow
//! the CPU caches). Next hops, which many flows share, are kept once each in FLOW_HOPS.
//!
//! It is a cache, never the truth: SESSIONS (and, for replies, MAPPINGS_IN) stay
//! authoritative, and the data path fills an entry from them (fast.rs, wan.rs). An entry
//! answers under the route generation it was filled under, for less than FLOW_TTL_NS (4 s),
//! so every active flow goes back to its session at least that often, which keeps the
//! session's `last_seen_ns` (and so the sweeper's timeouts) within FLOW_TTL_NS; and only
//! while its next hop answers: a FIB lookup gave that hop less than NEXT_HOP_TTL_NS (1 s) ago
//! (`HopSlot::checked`, stamped by the fills), so one flow per hop and second
//! checks the hop for all the flows that share it. Whatever changes a session's translation
//! (a new external port, an unsynced TCP half) forgets its entries; the control plane's bulk
//! removals move the route generation on.
//!
//! Four 32-byte ways per set: a set is one 128-byte pair of cache lines. A flow may live in
//! two sets (`set_entries`): its own, which a lookup reads first, and a second one by
//! another hash, which holds flows only while every way of the first still answers
//! (`entry_age`): a lookup reads it only when the first is full and does not hold the flow,
//! and a flow there moves back to its first set at the fill after a way of the first frees
//! up. With one set, the flows of a set that more than four busy flows hash to took each
//! other's ways in turn and every one of their packets missed (about 1.8% of 64 K flows in a
//! cache of 256 K entries); with two, busy flows keep their entries unless both of their sets
//! are full, which at these loads next to never happens. Entries are written
//! by any CPU with plain stores, so a reader may see one half-written: a check word over the
//! rest tells, and an entry whose check does not match is a miss. A flow finds its next hop
//! by the hop's tag (a hash of interface and MACs, which picks a set of FLOW_HOPS) and way;
//! the reader recomputes the tag from what it finds, so a slot another hop took over, or one
//! being written, is a miss too.
//!
//! Entry words:
//! - 0, 1: the flow's key and its translation (`FlowKey`, `value_out` / `value_in`);
//! - 2: when the entry was filled, its next hop looked up (`NextHop::resolved`), the route
//!   generation, and the longest packet the lookup checked against the MTU;
//! - 3: where the next hop is (`hop_ref`, low half) and the check (high half).

use core::mem::size_of;

use crate::{
    config::{FLOW_TTL_NS, NEXT_HOP_TIME_SHIFT, NEXT_HOP_TTL_NS},
    maps::{NextHop, ReplyKey, SessionKey},
};

/// Entries per set: a flow lives in one of the adjacent entries of its set.
pub const FLOW_WAYS: u32 = 4;
/// Words of an entry.
pub const FLOW_WORDS: usize = 4;
/// Fewest and most entries per cache. The cache holds the flows busy now, not every session
/// the table keeps until it times out, so it stops growing at 256 K entries (8 MiB) a
/// direction: a table of a million sessions keeps the cache a table of 256 K has, and its
/// busy flows' entries spread over no more pages.
pub const MIN_FLOW_ENTRIES: u32 = 1024;
pub const MAX_FLOW_ENTRIES: u32 = 1 << 18;
/// Slots of FLOW_HOPS (32 bytes each: `HopSlot`), in sets of HOP_WAYS: a gateway has a next
/// hop per LAN host and a few on the WAN side; 4 K hops fill a quarter of the slots, where a set
/// overflows for well under 1% of them (a hop that finds no free way takes one over, and the
/// flows of the hop it displaced go back to their sessions).
pub const HOP_SLOTS: u32 = 16_384;
pub const HOP_WAYS: u32 = 4;
/// Bits of a hop tag: a flow keeps the tag and the hop's way in 32 bits.
const HOP_TAG_BITS: u32 = 30;

/// One flow in the cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedFlow {
    pub words: [u64; FLOW_WORDS],
}
const _: () = assert!(size_of::<CachedFlow>() == 32);

/// A next hop shared by the flows whose entries carry its tag.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedHop {
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub ifindex: u32,
}
const _: () = assert!(size_of::<CachedHop>() == 16);

/// A FLOW_HOPS slot: a next hop, and when a FIB lookup last gave it (`stamp` units), in one
/// cache line with it, so that checking a hop costs no line beyond the hop's own (a map of
/// its own cost an inbound packet 5-8 ns more at 64 K flows, over 240 LAN hosts' hops). A
/// hop answers for NEXT_HOP_TTL_NS after the stamp (`hop_answers`); the fill of any flow that
/// the FIB sends there again stamps it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HopSlot {
    pub hop: CachedHop,
    pub checked: u32,
    pub _pad: [u32; 3],
}
const _: () = assert!(size_of::<HopSlot>() == 32);

/// A flow's key words; `mask` selects the key bits of word 1 (the rest carry the value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    pub words: [u64; 2],
    pub mask: u64,
}

/// Key bits of word 1: LAN->WAN ports and protocol; WAN->LAN protocol.
const OUT_KEY_MASK: u64 = (1 << 40) - 1;
const IN_KEY_MASK: u64 = 0xff;

impl FlowKey {
    /// An outbound flow (SESSIONS' key).
    pub const fn out(k: &SessionKey) -> Self {
        FlowKey {
            words: [
                k.int_addr as u64 | (k.rem_addr as u64) << 32,
                k.int_port as u64 | (k.rem_port as u64) << 16 | (k.proto as u64) << 32,
            ],
            mask: OUT_KEY_MASK,
        }
    }

    /// A reply flow.
    pub const fn reply(k: &ReplyKey) -> Self {
        FlowKey {
            words: [
                k.rem_addr as u64 | (k.ext_port as u64) << 32 | (k.rem_port as u64) << 48,
                k.proto as u64,
            ],
            mask: IN_KEY_MASK,
        }
    }

    /// Do an entry's first two words belong to this flow?
    #[inline(always)]
    pub const fn matches(&self, w0: u64, w1: u64) -> bool {
        w0 == self.words[0] && w1 & self.mask == self.words[1]
    }
}

/// Word 1's value bits of an outbound flow: external port and class.
pub const fn value_out(ext_port: u16, class: u8) -> u64 {
    (class as u64) << 40 | (ext_port as u64) << 48
}

/// Word 1's value bits of a reply flow: the LAN host's address and port, and the class.
pub const fn value_in(int_addr: u32, int_port: u16, class: u8) -> u64 {
    (class as u64) << 8 | (int_port as u64) << 16 | (int_addr as u64) << 32
}

/// What an entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Outbound: the external port. Reply: the LAN host's port.
    pub port: u16,
    /// Reply: the LAN host. Outbound: 0.
    pub addr: u32,
    pub class: u8,
    /// `NextHop::resolved` of the lookup the entry was made from.
    pub resolved: u32,
    pub route_gen: u16,
    pub max_len: u16,
    /// Where its next hop is in FLOW_HOPS (`hop_ref`).
    pub hop: u32,
}

impl Flow {
    /// Decodes words 1-3 of an entry of `key`'s direction.
    #[inline(always)]
    pub const fn decode(key: &FlowKey, w1: u64, w2: u64, w3: u64) -> Self {
        let (port, addr, class) = if key.mask == OUT_KEY_MASK {
            ((w1 >> 48) as u16, 0, (w1 >> 40) as u8)
        } else {
            ((w1 >> 16) as u16, (w1 >> 32) as u32, (w1 >> 8) as u8)
        };
        Flow {
            port,
            addr,
            class,
            resolved: w2 as u32,
            route_gen: (w2 >> 32) as u16,
            max_len: (w2 >> 48) as u16,
            hop: w3 as u32,
        }
    }
}

/// Odd constants (from the splitmix64 / xxhash families) words are multiplied by.
const MUL: [u64; 6] = [
    0x9e37_79b9_7f4a_7c15,
    0xc2b2_ae3d_27d4_eb4f,
    0x1656_67b1_9e37_79f9,
    0x27d4_eb2f_1656_67c5,
    0x94d0_49bb_1331_11eb,
    0xbf58_476d_1ce4_e5b9,
];

/// Folds a 64-bit product so that every input bit reaches the low half too.
#[inline(always)]
const fn fold(h: u64) -> u64 {
    let h = (h ^ (h >> 31)).wrapping_mul(MUL[5]);
    h ^ (h >> 32)
}

/// Sets a flow may live in: its own, and a second one (`set_entries`).
pub const FLOW_CHOICES: usize = 2;

/// `now_ns` (CLOCK_MONOTONIC) in `NextHop::resolved` units (about milliseconds), wrapping.
#[inline(always)]
pub const fn stamp(now_ns: u64) -> u32 {
    (now_ns >> NEXT_HOP_TIME_SHIFT) as u32
}

/// How often `stamp` wraps (about 52 days): an entry no flow touched for that long would
/// seem young again under a route generation that never moved, which the daemon moves at
/// least daily for that reason.
pub const STAMP_WRAP_NS: u64 = 1 << (32 + NEXT_HOP_TIME_SHIFT);

/// Age, in `NextHop::resolved` units, from which an entry no longer answers: a tick of the
/// coarse clock (at most 10 ms) short of FLOW_TTL_NS, so that a cached flow's packets come
/// less than FLOW_TTL_NS after the stamp of its session (taken by that clock, which runs up
/// to a tick behind), by any clock: the sweeper gives them that long
/// (`expiry::STAMP_LAG_NS`).
pub const ANSWERS_FOR: u32 = ((FLOW_TTL_NS - COARSE_TICK_NS) >> NEXT_HOP_TIME_SHIFT) as u32;

/// Age, in the same units, from which a FLOW_HOPS slot's next hop no longer answers unless
/// a FIB lookup gave it again (`HopSlot::checked`): NEXT_HOP_TTL_NS.
pub const HOP_ANSWERS_FOR: u32 = (NEXT_HOP_TTL_NS >> NEXT_HOP_TIME_SHIFT) as u32;

/// A fill stamps its hop's slot (`HopSlot::checked`) only once the stamp there is this old
/// (about 60 ms): every outbound flow shares the WAN gateway's slot, and a line that every
/// CPU wrote at each new flow would move between their caches at each.
pub const HOP_RESTAMP_AFTER: u32 = HOP_ANSWERS_FOR / 16;

/// The longest tick of the coarse clock the data path reads (HZ 100).
const COARSE_TICK_NS: u64 = 10_000_000;

// An entry's last answer and a tick of the coarse clock come within FLOW_TTL_NS of the stamp.
const _: () = assert!(((ANSWERS_FOR as u64) << NEXT_HOP_TIME_SHIFT) + COARSE_TICK_NS < FLOW_TTL_NS);
// A hop is checked again more often than a flow reads its session: otherwise the hop's
// check would add nothing.
const _: () = assert!(HOP_ANSWERS_FOR < ANSWERS_FOR);

/// Does the next hop whose `HopSlot::checked` is `checked` still answer at `now` (`stamp`
/// units)? A FIB lookup gave it less than NEXT_HOP_TTL_NS ago.
#[inline(always)]
pub const fn hop_answers(checked: u32, now: u32) -> bool {
    now.wrapping_sub(checked) < HOP_ANSWERS_FOR
}

/// The age `entry_age` gives an entry that no longer answers: older than any that does.
pub const ENTRY_GONE: u32 = u32::MAX;

/// How long ago, at `now` (`stamp` units), the next hop of the entry whose words 2 and 3 are
/// `w2`, `w3` was looked up, if the entry still answers under route generation `route_gen`;
/// ENTRY_GONE when it is empty or forgotten (no check), of another route generation, or
/// expired. A torn entry gives some age, which only makes it a likelier victim of a fill.
#[inline(always)]
pub const fn entry_age(w2: u64, w3: u64, route_gen: u16, now: u32) -> u32 {
    let age = now.wrapping_sub(w2 as u32);
    if (w3 >> 32) == 0 || (w2 >> 32) as u16 != route_gen || age >= ANSWERS_FOR {
        ENTRY_GONE
    } else {
        age
    }
}

/// The hash of `key` its sets are picked by. The key words are multiplied independently and
/// the result mixed once more: this runs for every packet.
#[inline(always)]
const fn key_hash(seed: u32, key: &FlowKey) -> u64 {
    let k = &key.words;
    let h = (k[0] ^ seed as u64).wrapping_mul(MUL[0]) ^ k[1].wrapping_mul(MUL[1]);
    (h ^ (h >> 31)).wrapping_mul(MUL[2])
}

/// The first entry of the set picked by the top `bits` bits of `h`, of 2^`bits` sets (the
/// top bits of a product depend on every bit of the key; lower bits do not, and would put
/// flows that differ only in an address's last byte, the top byte of a wire-order word, into
/// one set).
#[inline(always)]
const fn set_of(h: u64, bits: u32) -> u32 {
    // bits == 0 (not configured) gives an index past any cache: a miss.
    (h.wrapping_shr(64 - bits) as u32).wrapping_mul(FLOW_WAYS)
}

/// The first entry of the set `key` lives in first, of 2^`bits` sets.
#[inline(always)]
pub const fn first_entry(seed: u32, bits: u32, key: &FlowKey) -> u32 {
    set_of(key_hash(seed, key), bits)
}

/// The first entries of the two sets `key` may live in, its own first: the second is
/// picked by the hash multiplied once more, so that flows that share their first set
/// spread over as many second ones. (For a few flows both are the same set.)
#[inline(always)]
pub const fn set_entries(seed: u32, bits: u32, key: &FlowKey) -> [u32; FLOW_CHOICES] {
    let h = key_hash(seed, key);
    let h2 = (h ^ (h >> 29)).wrapping_mul(MUL[3]);
    [set_of(h, bits), set_of(h2, bits)]
}

/// The check half of word 3 over words 0-2 and the hop reference: each word times its own odd
/// constant (independent multiplies: a few cycles per packet), folded. Never 0, so a zeroed
/// entry, or one `forget` cleared, is a miss.
#[inline(always)]
pub const fn check(seed: u32, w0: u64, w1: u64, w2: u64, hop: u32) -> u32 {
    let h = (seed as u64)
        .wrapping_mul(MUL[4])
        .wrapping_add(w0.wrapping_mul(MUL[0]))
        .wrapping_add(w1.wrapping_mul(MUL[1]))
        .wrapping_add(w2.wrapping_mul(MUL[2]))
        .wrapping_add((hop as u64).wrapping_mul(MUL[3]));
    fold(h) as u32 | 1
}

impl CachedHop {
    pub const fn of(h: &NextHop) -> Self {
        CachedHop {
            dmac: h.dmac,
            smac: h.smac,
            ifindex: h.ifindex,
        }
    }

    /// The hop as the two words it is stored as (little-endian, as the BPF target).
    #[inline(always)]
    pub const fn words(&self) -> [u64; 2] {
        let (d, s) = (&self.dmac, &self.smac);
        [
            u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], s[0], s[1]]),
            u32::from_le_bytes([s[2], s[3], s[4], s[5]]) as u64 | (self.ifindex as u64) << 32,
        ]
    }

    #[inline(always)]
    pub const fn from_words(w: [u64; 2]) -> Self {
        let (a, b) = (w[0].to_le_bytes(), w[1].to_le_bytes());
        CachedHop {
            dmac: [a[0], a[1], a[2], a[3], a[4], a[5]],
            smac: [a[6], a[7], b[0], b[1], b[2], b[3]],
            ifindex: (w[1] >> 32) as u32,
        }
    }

    /// The tag flows refer to this hop by under `seed`: a hash of all of it. Its top bits
    /// pick the slot.
    #[inline(always)]
    pub const fn tag(&self, seed: u32) -> u32 {
        hop_tag(seed, self.words())
    }
}

/// `CachedHop::tag` of the hop stored as words `w`, under the configuration's `seed`. The
/// seed is random per configuration: a LAN host that picks its own MAC cannot compute a hop
/// whose tag equals another host's, which would let its hop stand in for that host's in the
/// flows that refer to it.
#[inline(always)]
pub const fn hop_tag(seed: u32, w: [u64; 2]) -> u32 {
    let s = (seed as u64).wrapping_mul(MUL[4]);
    (fold((w[0] ^ s).wrapping_mul(MUL[0]) ^ (w[1] ^ s.rotate_left(32)).wrapping_mul(MUL[1])) as u32)
        >> (32 - HOP_TAG_BITS)
}

/// The first FLOW_HOPS slot of the set of the hop tagged `tag` (its top bits).
#[inline(always)]
pub const fn hop_set(tag: u32) -> u32 {
    (tag >> (HOP_TAG_BITS - (HOP_SLOTS / HOP_WAYS).trailing_zeros())) * HOP_WAYS
}

/// How a flow refers to its next hop: the hop's tag and its way in the tag's set.
#[inline(always)]
pub const fn hop_ref(tag: u32, way: u32) -> u32 {
    tag << (32 - HOP_TAG_BITS) | way
}

/// The tag in hop reference `r`.
#[inline(always)]
pub const fn hop_ref_tag(r: u32) -> u32 {
    r >> (32 - HOP_TAG_BITS)
}

/// The FLOW_HOPS slot hop reference `r` points at.
#[inline(always)]
pub const fn hop_slot(r: u32) -> u32 {
    hop_set(hop_ref_tag(r)) + (r & (HOP_WAYS - 1))
}

impl CachedFlow {
    /// The entry for flow `key` with translation `value` (`value_out` / `value_in`), whose
    /// packets go to next hop `hop` (in FLOW_HOPS at `hop_ref`), sealed under `seed`.
    #[inline(always)]
    pub const fn new(seed: u32, key: &FlowKey, value: u64, hop: &NextHop, hop_ref: u32) -> Self {
        let w0 = key.words[0];
        let w1 = key.words[1] | value;
        let w2 = hop.resolved as u64 | (hop.route_gen as u64) << 32 | (hop.max_len as u64) << 48;
        let w3 = hop_ref as u64 | (check(seed, w0, w1, w2, hop_ref) as u64) << 32;
        CachedFlow {
            words: [w0, w1, w2, w3],
        }
    }

    /// What the entry says, if it is a whole entry for `key` written under `seed`.
    #[inline(always)]
    pub const fn hit(seed: u32, key: &FlowKey, w: &[u64; FLOW_WORDS]) -> Option<Flow> {
        if !key.matches(w[0], w[1]) {
            return None;
        }
        if (w[3] >> 32) as u32 != check(seed, w[0], w[1], w[2], w[3] as u32) {
            return None;
        }
        Some(Flow::decode(key, w[1], w[2], w[3]))
    }
}

/// Entries per direction for a session table of `max_sessions`: one per session (up to
/// MAX_FLOW_ENTRIES), a power of two (the set index is bits of the hash).
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

#[cfg(feature = "user")]
// Every impl below rests on the one SAFETY comment at its head.
#[allow(clippy::undocumented_unsafe_blocks)]
mod pod {
    // SAFETY: #[repr(C)], integers only, sizes asserted.
    unsafe impl aya::Pod for super::CachedFlow {}
    unsafe impl aya::Pod for super::CachedHop {}
    unsafe impl aya::Pod for super::HopSlot {}
}

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

    fn entry(seed: u32, key: &FlowKey, port: u16, h: &NextHop) -> CachedFlow {
        CachedFlow::new(
            seed,
            key,
            value_out(port, 2),
            h,
            hop_ref(CachedHop::of(h).tag(seed), 1),
        )
    }

    #[test]
    fn an_entry_says_what_was_put_in() {
        let h = hop(5);
        let out = FlowKey::out(&SessionKey::new(IPPROTO_TCP, 1, 2, 3, 4));
        let e = entry(9, &out, 4000, &h);
        let f = CachedFlow::hit(9, &out, &e.words).expect("hit");
        assert_eq!((f.port, f.addr, f.class), (4000, 0, 2));
        assert_eq!((f.resolved, f.route_gen, f.max_len), (77, 3, 1500));
        assert_eq!(f.hop, hop_ref(CachedHop::of(&h).tag(9), 1));
        assert_eq!(hop_ref_tag(f.hop), CachedHop::of(&h).tag(9));
        assert_eq!(hop_slot(f.hop), hop_set(CachedHop::of(&h).tag(9)) + 1);

        let reply = FlowKey::reply(&SessionKey::new(IPPROTO_UDP, 1, 2, 3, 4).reply_key(7));
        let e = CachedFlow::new(9, &reply, value_in(0xc0a8_010a, 5353, 1), &h, 42);
        let f = CachedFlow::hit(9, &reply, &e.words).expect("hit");
        assert_eq!((f.port, f.addr, f.class, f.hop), (5353, 0xc0a8_010a, 1, 42));
    }

    #[test]
    fn an_entry_holds_its_key_and_nothing_else() {
        let k = FlowKey::out(&SessionKey::new(IPPROTO_TCP, 1, 2, 3, 4));
        let e = entry(9, &k, 4000, &hop(5));
        let other = FlowKey::out(&SessionKey::new(IPPROTO_UDP, 1, 2, 3, 4));
        assert!(CachedFlow::hit(9, &other, &e.words).is_none());
        // Written under another seed (an earlier run): a miss.
        assert!(CachedFlow::hit(10, &k, &e.words).is_none());
        // Zeroed, or forgotten (check cleared): a miss.
        assert!(CachedFlow::hit(0, &FlowKey::reply(&ReplyKey::default()), &[0; 4]).is_none());
        let mut forgotten = e.words;
        forgotten[3] &= u32::MAX as u64;
        assert!(CachedFlow::hit(9, &k, &forgotten).is_none());
    }

    #[test]
    fn a_half_written_entry_is_a_miss() {
        let k = FlowKey::out(&SessionKey::new(IPPROTO_TCP, 1, 2, 3, 4));
        let a = entry(9, &k, 4000, &hop(5)).words;
        let b = entry(9, &k, 5000, &hop(6)).words;
        // Every mix of the two writes' words that is neither whole entry.
        for mask in 1..(1u32 << FLOW_WORDS) - 1 {
            let mut w = a;
            for (i, word) in w.iter_mut().enumerate() {
                if mask & (1 << i) != 0 {
                    *word = b[i];
                }
            }
            if w != a && w != b {
                assert!(CachedFlow::hit(9, &k, &w).is_none(), "mask {mask:#b}");
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
            assert_ne!(FlowKey::out(&v), FlowKey::out(&base), "{v:?}");
        }
        let r = FlowKey::reply(&base.reply_key(7));
        assert_ne!(r, FlowKey::reply(&base.reply_key(8)));
        let icmp = SessionKey::new(IPPROTO_ICMP, 1, 2, 3, 4);
        assert_ne!(r, FlowKey::reply(&icmp.reply_key(7)));
        // The value bits never reach the key bits.
        let k = FlowKey::out(&base);
        assert_eq!(value_out(u16::MAX, u8::MAX) & k.mask, 0);
        assert_eq!(value_in(u32::MAX, u16::MAX, u8::MAX) & r.mask, 0);
    }

    #[test]
    fn hops_are_told_apart_by_tag() {
        let a = CachedHop::of(&hop(5));
        assert_eq!(CachedHop::from_words(a.words()), a);
        // Stored little-endian, as the words are laid out in the map.
        let bytes: std::vec::Vec<u8> = a.words().iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(bytes[..6], a.dmac);
        assert_eq!(bytes[12..], a.ifindex.to_le_bytes());
        let b = CachedHop::of(&hop(6));
        let mut c = a;
        c.dmac[5] = 9;
        assert_ne!(a.tag(1), b.tag(1));
        assert_ne!(a.tag(1), c.tag(1));
        // Another configuration's seed gives another tag.
        assert_ne!(a.tag(1), a.tag(2));
        assert!(hop_set(a.tag(1)) + HOP_WAYS <= HOP_SLOTS);
        assert!(
            hop_slot(u32::MAX) < HOP_SLOTS
                && hop_set(hop_ref_tag(u32::MAX)).is_multiple_of(HOP_WAYS)
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
            let first = first_entry(1234, bits, &FlowKey::out(&k));
            assert_eq!(first % FLOW_WAYS, 0);
            assert!(first < entries);
            used[(first / FLOW_WAYS) as usize] += 1;
        }
        // At one flow per set of four, a uniform hash leaves about 0.4% of flows without a
        // way (Poisson: sum over k > 4 of (k - 4) P(k) per set).
        let overfull: u32 = used
            .iter()
            .filter(|&&n| n > FLOW_WAYS)
            .map(|n| n - FLOW_WAYS)
            .sum();
        assert!(
            overfull < flows / 100,
            "{overfull} of {flows} flows did not fit"
        );
    }

    #[test]
    fn a_hop_answers_for_a_second_after_its_check_across_the_stamps_wrap() {
        for checked in [5, u32::MAX - 5] {
            assert!(hop_answers(checked, checked));
            assert!(hop_answers(
                checked,
                checked.wrapping_add(HOP_ANSWERS_FOR - 1)
            ));
            assert!(!hop_answers(checked, checked.wrapping_add(HOP_ANSWERS_FOR)));
        }
    }

    #[test]
    fn an_entry_answers_while_whole_current_and_young() {
        let k = FlowKey::out(&SessionKey::new(IPPROTO_TCP, 1, 2, 3, 4));
        let h = hop(5);
        let e = entry(9, &k, 4000, &h).words;
        let now = h.resolved + 10;
        assert_eq!(entry_age(e[2], e[3], h.route_gen, now), 10);
        assert_eq!(
            entry_age(e[2], e[3], h.route_gen, h.resolved + ANSWERS_FOR - 1),
            ANSWERS_FOR - 1
        );
        assert_eq!(
            entry_age(e[2], e[3], h.route_gen, h.resolved + ANSWERS_FOR),
            ENTRY_GONE,
            "expired"
        );
        assert_eq!(
            entry_age(e[2], e[3], h.route_gen + 1, now),
            ENTRY_GONE,
            "another route generation"
        );
        let forgotten = e[3] & u32::MAX as u64;
        assert_eq!(
            entry_age(e[2], forgotten, h.route_gen, now),
            ENTRY_GONE,
            "forgotten"
        );
        assert_eq!(entry_age(0, 0, 0, now), ENTRY_GONE, "empty");
        // The stamp wraps (about every 52 days); an age does not.
        let late = NextHop {
            resolved: u32::MAX - 5,
            ..h
        };
        let e = entry(9, &k, 4000, &late).words;
        assert_eq!(entry_age(e[2], e[3], h.route_gen, 4), 10);
    }

    #[test]
    fn a_second_set_holds_the_flows_the_first_cannot() {
        let entries = entries_for(262_144);
        let bits = set_bits(entries);
        let mut used = std::vec![0u32; 1 << bits];
        let (mut second, mut same, mut homeless) = (0, 0, 0);
        // The benchmark's 64 K flows: 4 K endpoints of one host, 16 server ports each.
        let flows = entries / 4;
        for i in 0..flows {
            let k = SessionKey::new(
                IPPROTO_UDP,
                u32::from_ne_bytes([192, 168, 1, 10]),
                (10_000 + i / 16) as u16,
                u32::from_ne_bytes([203, 0, 113, 10]),
                (9 + i % 16) as u16,
            );
            let sets = set_entries(99, bits, &FlowKey::out(&k));
            assert_eq!(sets[0], first_entry(99, bits, &FlowKey::out(&k)));
            assert!(sets.iter().all(|&e| e % FLOW_WAYS == 0 && e < entries));
            same += u32::from(sets[0] == sets[1]);
            // Placed as the data path places busy flows: its first set while it has a free
            // way, else its second.
            let Some(set) = sets
                .iter()
                .map(|&e| (e / FLOW_WAYS) as usize)
                .find(|&s| used[s] < FLOW_WAYS)
            else {
                homeless += 1;
                continue;
            };
            second += u32::from(set != (sets[0] / FLOW_WAYS) as usize);
            used[set] += 1;
        }
        // One set each left about 1.8% of these flows in sets of more than four, where they
        // took each other's ways; and 0.4% without a way of their own. Two: a handful.
        assert!(
            homeless < flows / 10_000,
            "{homeless} of {flows} with no way in either set"
        );
        assert!(
            second < flows / 100,
            "{second} of {flows} in their second set"
        );
        assert!(same < flows / 1000, "{same} of {flows} with one set twice");
    }

    #[test]
    fn sizes_are_powers_of_two_within_bounds() {
        assert_eq!(entries_for(0), MIN_FLOW_ENTRIES);
        assert_eq!(entries_for(262_144), 262_144);
        assert_eq!(entries_for(200_000), 262_144);
        assert_eq!(entries_for(1 << 20), MAX_FLOW_ENTRIES);
        assert_eq!(entries_for(u32::MAX), MAX_FLOW_ENTRIES);
        assert_eq!(1 << set_bits(1024), 1024 / FLOW_WAYS);
        let unconfigured = FlowKey::out(&SessionKey::default());
        assert!(
            first_entry(7, 0, &unconfigured) >= MAX_FLOW_ENTRIES,
            "a miss"
        );
    }
}
