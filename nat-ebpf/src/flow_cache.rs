//! Reading, filling and forgetting flow cache entries (nat_common::flow_cache) from the data
//! path. Entries are read and written word by word: another CPU may be writing the same
//! entry, and the check word tells a whole entry from a torn one.

use aya_ebpf::{helpers::generated::bpf_get_prandom_u32, maps::Array};
use nat_common::{
    config::NatConfig,
    counters::Counter,
    flow_cache::{
        ANSWERS_FOR, CachedFlow, CachedHop, ENTRY_GONE, FLOW_WAYS, FLOW_WORDS, Flow, FlowKey,
        HOP_RESTAMP_AFTER, HOP_WAYS, HopSlot, first_entry, hop_answers, hop_ref, hop_ref_tag,
        hop_set, hop_slot, hop_tag, set_entries, stamp,
    },
    maps::NextHop,
};

use crate::{
    forward::{Route, answers},
    maps::{FLOW_HOPS, config, count},
};

/// Word `j` of the entry at `p`.
#[inline(always)]
fn word(p: *const CachedFlow, j: usize) -> u64 {
    // SAFETY: `p` is a map value of FLOW_WORDS words, `j` < FLOW_WORDS at every call.
    unsafe { p.cast::<u64>().add(j).read_volatile() }
}

/// What the cache says of `key` at time `now`, if a way of one of its two sets holds a
/// whole entry for it: its first set, then its second, which holds flows only while every
/// way of the first answers (`place`). So a miss, the first packet of every new flow, reads
/// the second set only when the first is full.
#[inline(always)]
pub fn lookup(map: &Array<CachedFlow>, cfg: &NatConfig, key: &FlowKey, now: u64) -> Option<Flow> {
    let [first, second] = set_entries(cfg.flow_seed, cfg.flow_set_bits, key);
    if let Some(found) = lookup_in(map, cfg, key, first) {
        return found;
    }
    if !full(map, cfg, first, stamp(now))? {
        return None;
    }
    lookup_in(map, cfg, key, second)?
}

/// `Some(what the entry says)` if a way of the set from `first` holds `key`'s entry (a torn
/// one says None); None if none does.
#[inline(always)]
fn lookup_in(
    map: &Array<CachedFlow>,
    cfg: &NatConfig,
    key: &FlowKey,
    first: u32,
) -> Option<Option<Flow>> {
    for way in 0..FLOW_WAYS {
        let p = map.get_ptr(first + way)?;
        let (w0, w1) = (word(p, 0), word(p, 1));
        if key.matches(w0, w1) {
            // A torn copy of this flow's entry is a miss; the next fill rewrites it.
            return Some(CachedFlow::hit(
                cfg.flow_seed,
                key,
                &[w0, w1, word(p, 2), word(p, 3)],
            ));
        }
    }
    None
}

/// Does every way of the set from `first` hold an entry that still answers at `now`?
#[inline(always)]
fn full(map: &Array<CachedFlow>, cfg: &NatConfig, first: u32, now: u32) -> Option<bool> {
    for way in 0..FLOW_WAYS {
        let p = map.get_ptr(first + way)?;
        if age(cfg, p, now) == ENTRY_GONE {
            return Some(false);
        }
    }
    Some(true)
}

/// `nat_common::flow_cache::entry_age` of the entry at `p`.
// verifier: the same test, with word 3 read only where it is needed; reading both words
// first, to call entry_age, took the WAN program past the 512-byte BPF stack.
#[inline(always)]
fn age(cfg: &NatConfig, p: *const CachedFlow, now: u32) -> u32 {
    let w2 = word(p, 2);
    let age = now.wrapping_sub(w2 as u32);
    if (word(p, 3) >> 32) == 0 || (w2 >> 32) as u16 != cfg.route_gen || age >= ANSWERS_FOR {
        ENTRY_GONE
    } else {
        age
    }
}

/// Starts the read of the set `key` lives in, ahead of `lookup`: the checks that run
/// between the two do not wait for it, and the lookup finds the line in the CPU's cache. On
/// a table that has left the caches this hides part of a memory access per packet. Only the
/// set's first line: a load of the second too made the established rows slower, not faster.
#[inline(always)]
pub fn prefetch(map: &Array<CachedFlow>, cfg: &NatConfig, key: &FlowKey) {
    if let Some(p) = map.get_ptr(first_entry(cfg.flow_seed, cfg.flow_set_bits, key)) {
        // The value is not needed: the load is.
        let _ = word(p, 0);
    }
}

/// The route `f` gives a packet of `tot_len` bytes, if the entry still answers: filled under
/// the current route generation less than FLOW_TTL_NS ago, for packets at least this long,
/// its next hop still in FLOW_HOPS (another hop may have taken its slot) and given by a FIB
/// lookup less than NEXT_HOP_TTL_NS ago (`HopSlot::checked`).
#[inline(always)]
pub fn route(f: &Flow, cfg: &NatConfig, tot_len: u16, now: u64) -> Option<Route> {
    if !answers(f.resolved, f.route_gen, f.max_len, cfg, tot_len, now) {
        return None;
    }
    let slot = FLOW_HOPS.get_ptr(hop_slot(f.hop))?;
    // The first packet that finds its hop unchecked for a second goes to its session and the
    // FIB, and its fill stamps the hop again if the FIB still gives it; if not (the neighbour
    // changed its MAC), every flow of the hop does the same at its next packet. Read before
    // the hop: a fill writes the hop, then the stamp, so a stamp of a hop that just took the
    // slot comes with that hop's words, whose tag is not this flow's.
    // SAFETY: map value pointer, an aligned u32 field.
    if !hop_answers(
        unsafe { (&raw const (*slot).checked).read_volatile() },
        stamp(now),
    ) {
        return None;
    }
    // A torn read changes the tag, checked next.
    let w = slot_words(slot);
    if hop_tag(cfg.flow_seed, w) != hop_ref_tag(f.hop) {
        return None;
    }
    let hop = CachedHop::from_words(w);
    Some(Route::Resolved {
        ifindex: hop.ifindex,
        smac: hop.smac,
        dmac: hop.dmac,
    })
}

/// Caches flow `key` with translation `value` going to the resolved next hop `hop`, where
/// `place` says.
#[inline(always)]
pub fn fill(map: &Array<CachedFlow>, cfg: &NatConfig, key: &FlowKey, value: u64, hop: &NextHop) {
    // Nothing resolved (no interface, no MACs): nothing to cache; it would match any empty
    // FLOW_HOPS slot, and redirect to interface 0.
    if hop.ifindex == 0 {
        return;
    }
    let Some(hop_ref) = share(cfg.flow_seed, hop) else {
        return;
    };
    checked(hop_slot(hop_ref), hop.resolved);
    let Some(dst) = place(map, cfg, key, hop.resolved).and_then(|i| map.get_ptr_mut(i)) else {
        return;
    };
    let e = CachedFlow::new(cfg.flow_seed, key, value, hop, hop_ref);
    for j in 0..FLOW_WORDS {
        // SAFETY: in bounds of the map value (FLOW_WORDS words).
        unsafe { dst.cast::<u64>().add(j).write_volatile(e.words[j]) };
    }
    count(Counter::FlowCacheFilled);
}

/// Which entry `key` is cached in, at time `now` (`NextHop::resolved` units). Over its own
/// entry, in its first set; in its second, over its own entry there too, unless the first
/// now has a way that no longer answers: then there, its second copy forgotten (`lookup`
/// reads the second set only when the first is full). Else over the way of its first set
/// whose next hop was looked up longest ago, if that entry no longer answers; else over the
/// way of both sets looked up longest ago, which is in the second set when that one has
/// room. The first set is in the CPU's cache by then (the lookup that missed read it); the
/// second only if the first was full.
#[inline(always)]
fn place(map: &Array<CachedFlow>, cfg: &NatConfig, key: &FlowKey, now: u32) -> Option<u32> {
    let sets = set_entries(cfg.flow_seed, cfg.flow_set_bits, key);
    // Per set: the way looked up longest ago, and its age (ENTRY_GONE: it no longer answers).
    let mut oldest = [(0u32, 0u32); 2];
    let mut own_second = None;
    for (set, first) in sets.into_iter().enumerate() {
        for way in 0..FLOW_WAYS {
            let p = map.get_ptr(first + way)?;
            if key.matches(word(p, 0), word(p, 1)) {
                if set == 0 {
                    return Some(first + way);
                }
                own_second = Some(first + way);
            }
            let age = age(cfg, p, now);
            if way == 0 || age > oldest[set].1 {
                oldest[set] = (first + way, age);
            }
        }
    }
    let [(first, first_age), (second, second_age)] = oldest;
    if let Some(own) = own_second {
        if first_age != ENTRY_GONE {
            return Some(own);
        }
        forget_at(map, own);
        return Some(first);
    }
    Some(if first_age == ENTRY_GONE || first_age >= second_age {
        first
    } else {
        second
    })
}

/// The hop in FLOW_HOPS slot `slot` as the two words it is stored as (`CachedHop::words`).
#[inline(always)]
fn slot_words(slot: *const HopSlot) -> [u64; 2] {
    let p = slot.cast::<u64>();
    // SAFETY: a map value whose first two words are the hop.
    unsafe { [p.read_volatile(), p.add(1).read_volatile()] }
}

/// `slot_words` of FLOW_HOPS slot `i`.
#[inline(always)]
fn hop_words(i: u32) -> Option<[u64; 2]> {
    FLOW_HOPS.get_ptr(i).map(slot_words)
}

/// Puts `hop` in FLOW_HOPS, unless its set already holds it, and returns where it is
/// (`hop_ref`): the way that holds it, else the first empty one, else a random one (the flows
/// of the hop it displaces miss and go back to their sessions).
#[inline(always)]
fn share(seed: u32, hop: &NextHop) -> Option<u32> {
    let words = CachedHop::of(hop).words();
    let tag = hop_tag(seed, words);
    let first = hop_set(tag);
    let mut free = None;
    for way in 0..HOP_WAYS {
        let w = hop_words(first + way)?;
        if w == words {
            // Already there: not written again, the line stays shared between CPUs.
            return Some(hop_ref(tag, way));
        }
        if free.is_none() && w == [0, 0] {
            free = Some(way);
        }
    }
    // SAFETY: no arguments.
    let way = free.unwrap_or_else(|| unsafe { bpf_get_prandom_u32() } % HOP_WAYS);
    let p = FLOW_HOPS.get_ptr_mut(first + way)?.cast::<u64>();
    // SAFETY: a map value of two words; readers check the tag of what they read.
    unsafe {
        p.write_volatile(words[0]);
        p.add(1).write_volatile(words[1]);
    }
    Some(hop_ref(tag, way))
}

/// Stamps FLOW_HOPS slot `slot` as checked at `resolved`, when a FIB lookup just gave its
/// hop (after `share` wrote it: `route` reads them the other way round), unless a stamp of
/// the last HOP_RESTAMP_AFTER is there (the line stays shared between CPUs).
#[inline(always)]
fn checked(slot: u32, resolved: u32) {
    if let Some(s) = FLOW_HOPS.get_ptr_mut(slot) {
        // SAFETY: map value pointer, an aligned u32 field. Another CPU may write it at once,
        // a stamp of the same moment: either is right.
        unsafe {
            let p = &raw mut (*s).checked;
            // Signed: a stamp another CPU wrote just after this lookup is not older.
            if resolved.wrapping_sub(p.read_volatile()) as i32 >= HOP_RESTAMP_AFTER as i32 {
                p.write_volatile(resolved);
            }
        }
    }
}

/// Drops `key`'s entries, in either set, if cached: its session changed in a way the entry
/// does not show.
#[inline(always)]
pub fn forget(map: &Array<CachedFlow>, key: &FlowKey) {
    let Some(cfg) = config() else {
        return;
    };
    for first in set_entries(cfg.flow_seed, cfg.flow_set_bits, key) {
        for way in 0..FLOW_WAYS {
            let Some(p) = map.get_ptr(first + way) else {
                continue;
            };
            if key.matches(word(p, 0), word(p, 1)) {
                forget_at(map, first + way);
            }
        }
    }
}

/// Makes entry `i` a miss: a zero check never matches (`check` is odd), so clear the high
/// (little-endian) half of word 3 and keep the tag.
#[inline(always)]
fn forget_at(map: &Array<CachedFlow>, i: u32) {
    if let Some(p) = map.get_ptr_mut(i) {
        // SAFETY: map value pointer, word 3 in bounds.
        unsafe { p.cast::<u32>().add(7).write_volatile(0) };
    }
}
