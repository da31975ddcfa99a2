//! Reading, filling and forgetting flow cache entries (nat_common::flow_cache) from the data
//! path. Entries are copied word by word: another CPU may be writing the same entry, and the
//! check word tells a whole entry from a torn one.

use aya_ebpf::maps::Array;
use core::mem::MaybeUninit;
use nat_common::{
    config::NatConfig,
    counters::Counter,
    flow_cache::{CachedFlow, FLOW_WAYS, FLOW_WORDS, first_entry},
};

use crate::maps::{config, count};

/// Entry `i` of `map`, as words, if it is keyed `key` (the key words are read first, so a
/// way of another flow costs two loads).
#[inline(always)]
fn read(map: &Array<CachedFlow>, i: u32, key: &[u64; 2]) -> Option<[u64; FLOW_WORDS]> {
    let src = map.get_ptr(i)?.cast::<u64>();
    // SAFETY: `src` is a map value of FLOW_WORDS words.
    if unsafe { src.read_volatile() != key[0] || src.add(1).read_volatile() != key[1] } {
        return None;
    }
    let mut w = MaybeUninit::<[u64; FLOW_WORDS]>::uninit();
    let dst = w.as_mut_ptr().cast::<u64>();
    // verifier: word loads into a stack copy; a struct copy compiles to a byte-loop memcpy.
    for j in 0..FLOW_WORDS {
        // SAFETY: in bounds of the map value and of `w`.
        unsafe { dst.add(j).write(src.add(j).read_volatile()) };
    }
    // SAFETY: every word written above.
    Some(unsafe { w.assume_init() })
}

/// Overwrites entry `i` of `map` with `w`.
#[inline(always)]
fn write(map: &Array<CachedFlow>, i: u32, w: &[u64; FLOW_WORDS]) {
    let Some(dst) = map.get_ptr_mut(i) else {
        return;
    };
    let dst = dst.cast::<u64>();
    for (j, word) in w.iter().enumerate() {
        // SAFETY: in bounds of the map value (FLOW_WORDS words).
        unsafe { dst.add(j).write_volatile(*word) };
    }
}

/// The cached entry for `key`, if one of its set's ways holds it whole.
#[inline(always)]
pub fn lookup(map: &Array<CachedFlow>, cfg: &NatConfig, key: &[u64; 2]) -> Option<CachedFlow> {
    let first = first_entry(cfg.flow_seed, cfg.flow_set_bits, key);
    for way in 0..FLOW_WAYS {
        if let Some(w) = read(map, first + way, key) {
            // A torn copy of this flow's entry: the next fill rewrites it.
            return CachedFlow::hit(cfg.flow_seed, key, w);
        }
    }
    None
}

/// Caches `e` (sealed with `cfg.flow_seed`) in its set: over the entry of the same flow if
/// there is one, else over the way whose next hop was resolved longest ago (an empty or
/// forgotten way, resolved at 0, is usually that one; a stale one always is, sooner or later).
#[inline(always)]
pub fn fill(map: &Array<CachedFlow>, cfg: &NatConfig, e: &CachedFlow) {
    let first = first_entry(cfg.flow_seed, cfg.flow_set_bits, &e.key);
    let mut victim = first;
    let mut oldest = 0;
    for way in 0..FLOW_WAYS {
        let Some(p) = map.get_ptr(first + way) else {
            return;
        };
        // SAFETY: map value pointer; a torn read only picks another victim.
        let w = unsafe { &*p };
        if w.key == e.key {
            victim = first + way;
            break;
        }
        let age = e.hop.resolved.wrapping_sub(w.hop.resolved);
        if way == 0 || age > oldest {
            (victim, oldest) = (first + way, age);
        }
    }
    write(map, victim, &e.words());
    count(Counter::FlowCacheFilled);
}

/// Drops `key`'s entry, if cached: its session changed in a way the entry does not show.
#[inline(always)]
pub fn forget(map: &Array<CachedFlow>, key: &[u64; 2]) {
    let Some(cfg) = config() else {
        return;
    };
    let first = first_entry(cfg.flow_seed, cfg.flow_set_bits, key);
    for way in 0..FLOW_WAYS {
        let Some(p) = map.get_ptr_mut(first + way) else {
            continue;
        };
        // SAFETY: map value pointer; a racing fill is caught by the check word.
        let e = unsafe { &mut *p };
        if e.key[0] == key[0] && e.key[1] == key[1] {
            // A zero check word never matches (`check` is odd).
            // SAFETY: as above.
            unsafe { core::ptr::addr_of_mut!(e.check).write_volatile(0) };
        }
    }
}
