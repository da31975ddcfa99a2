//! Reading, filling and forgetting flow cache entries (nat_common::flow_cache) from the data
//! path. Entries are read and written word by word: another CPU may be writing the same
//! entry, and the check word tells a whole entry from a torn one.

use aya_ebpf::{helpers::generated::bpf_get_prandom_u32, maps::Array};
use nat_common::{
    config::NatConfig,
    counters::Counter,
    flow_cache::{
        CachedFlow, CachedHop, FLOW_WAYS, FLOW_WORDS, Flow, FlowKey, HOP_WAYS, first_entry,
        hop_ref, hop_ref_tag, hop_set, hop_slot, hop_tag,
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

/// What the cache says of `key`, if one of its set's ways holds a whole entry for it.
#[inline(always)]
pub fn lookup(map: &Array<CachedFlow>, cfg: &NatConfig, key: &FlowKey) -> Option<Flow> {
    let first = first_entry(cfg.flow_seed, cfg.flow_set_bits, key);
    for way in 0..FLOW_WAYS {
        let p = map.get_ptr(first + way)?;
        let (w0, w1) = (word(p, 0), word(p, 1));
        if key.matches(w0, w1) {
            // A torn copy of this flow's entry is a miss; the next fill rewrites it.
            return CachedFlow::hit(cfg.flow_seed, key, &[w0, w1, word(p, 2), word(p, 3)]);
        }
    }
    None
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

/// The route `f` gives a packet of `tot_len` bytes, if its next hop still answers: looked up
/// under the current route generation less than NEXT_HOP_TTL_NS ago, for packets at least
/// this long, and still in FLOW_HOPS (another hop may have taken its slot).
#[inline(always)]
pub fn route(f: &Flow, cfg: &NatConfig, tot_len: u16, now: u64) -> Option<Route> {
    if !answers(f.resolved, f.route_gen, f.max_len, cfg, tot_len, now) {
        return None;
    }
    // A torn read changes the tag, checked next.
    let w = hop_words(hop_slot(f.hop))?;
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

/// Caches flow `key` with translation `value` going to the resolved next hop `hop`: over
/// the entry of the same flow if there is one, else over the way whose next hop was looked
/// up longest ago (an empty or forgotten way usually is that one).
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
    let first = first_entry(cfg.flow_seed, cfg.flow_set_bits, key);
    let mut victim = first;
    let mut oldest = 0;
    for way in 0..FLOW_WAYS {
        let Some(p) = map.get_ptr(first + way) else {
            return;
        };
        if key.matches(word(p, 0), word(p, 1)) {
            victim = first + way;
            break;
        }
        // A torn read only picks another victim.
        let age = hop.resolved.wrapping_sub(word(p, 2) as u32);
        if way == 0 || age > oldest {
            (victim, oldest) = (first + way, age);
        }
    }
    let Some(dst) = map.get_ptr_mut(victim) else {
        return;
    };
    let e = CachedFlow::new(cfg.flow_seed, key, value, hop, hop_ref);
    for j in 0..FLOW_WORDS {
        // SAFETY: in bounds of the map value (FLOW_WORDS words).
        unsafe { dst.cast::<u64>().add(j).write_volatile(e.words[j]) };
    }
    count(Counter::FlowCacheFilled);
}

/// FLOW_HOPS slot `i` as the two words a hop is stored as (`CachedHop::words`).
#[inline(always)]
fn hop_words(i: u32) -> Option<[u64; 2]> {
    let p = FLOW_HOPS.get_ptr(i)?.cast::<u64>();
    // SAFETY: a map value of two words.
    Some(unsafe { [p.read_volatile(), p.add(1).read_volatile()] })
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

/// Drops `key`'s entry, if cached: its session changed in a way the entry does not show.
#[inline(always)]
pub fn forget(map: &Array<CachedFlow>, key: &FlowKey) {
    let Some(cfg) = config() else {
        return;
    };
    let first = first_entry(cfg.flow_seed, cfg.flow_set_bits, key);
    for way in 0..FLOW_WAYS {
        let Some(p) = map.get_ptr_mut(first + way) else {
            continue;
        };
        if key.matches(word(p, 0), word(p, 1)) {
            // A zero check never matches (`check` is odd): clear the high (little-endian)
            // half of word 3, keep the tag.
            // SAFETY: map value pointer, word 3 in bounds.
            unsafe { p.cast::<u32>().add(7).write_volatile(0) };
        }
    }
}
