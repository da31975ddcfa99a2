//! The sweeper's walk of the session table, inside the kernel: nat-ctl runs it each sweep
//! with BPF_PROG_TEST_RUN (it is never attached). What it does, and why here: see
//! nat_common::expiry. Read from userspace, a million sessions took the sweeper most of a
//! second of copies and hashing each sweep; here each session costs a visit.

use aya_ebpf::{
    cty::{c_long, c_void},
    helpers::generated::{bpf_for_each_map_elem, bpf_loop},
};
use nat_common::{
    expiry::{
        Expiring, Fate, NS_PER_SEC, ORPHAN_DUE_NS, PORT_OWNER_SLOTS, PORTS_LIVE_WORDS, SWEEP_DUE,
        SweepWalk, deadline_ns, fate, filter_bit, filter_words, is_expired, owner_slot, owner_tag,
    },
    maps::{ExternalKey, FIRST_REMOTE_TIME_SHIFT, MAPPING_ACTIVE, Mapping, Session, SessionKey},
    ports::taken_bit,
    proto::IPPROTO_UDP,
};

use crate::{
    maps::{
        EXPIRING, FILTERS, FILTERS_LIVE, HOST_LIVE, HOST_SESSIONS, MAC_LIVE, MAC_SESSIONS,
        MAPPINGS_IN, PORT_OWNERS, PORTS_LIVE, SESSIONS, SWEEP_WALK,
    },
    state,
};

/// What the callbacks share: a copy of the orders, and the results so far (the callbacks'
/// context must live on the stack).
struct Walk {
    w: SweepWalk,
    /// Words of FILTERS_LIVE.
    filter_words: u32,
}

/// Runs one walk, or due check, as SWEEP_WALK orders; false if there is no SWEEP_WALK entry.
#[inline(always)]
pub fn run() -> bool {
    let Some(orders) = SWEEP_WALK.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: map value pointer from a successful lookup; one walk runs at a time.
    let mut walk = Walk {
        w: unsafe { *orders },
        filter_words: 0,
    };
    walk.w.expired = 0;
    walk.w.orphans = 0;
    walk.w.failed = 0;
    if walk.w.kind == SWEEP_DUE {
        let ctx = (&mut walk as *mut Walk).cast::<c_void>();
        // SAFETY: as below.
        unsafe {
            bpf_loop(walk.w.listed, check_due::<false> as *mut c_void, ctx, 0);
            *orders = walk.w;
        }
        return true;
    }
    walk.w.sessions = 0;
    walk.w.filters_removed = 0;
    walk.w.counts_lost = 0;
    walk.w.listed = 0;
    walk.w.list_lost = 0;
    walk.w.due = 0;
    // SAFETY: as above. (The removals are counted in the map: defer_removal.)
    unsafe { (*orders).removals = 0 };
    // 0: no filter pass (and a size filter_words cannot take is none either).
    walk.filter_words = if (6..=31).contains(&walk.w.filter_bits) {
        filter_words(walk.w.filter_bits)
    } else {
        0
    };
    let ctx = (&mut walk as *mut Walk).cast::<c_void>();
    // SAFETY: each callback has its helper's signature and reads `ctx` as the Walk on this
    // stack, which outlives the calls; the maps are this object's.
    unsafe {
        bpf_loop(PORT_OWNER_SLOTS, clear_owner as *mut c_void, ctx, 0);
        bpf_loop(PORTS_LIVE_WORDS, clear_port_live as *mut c_void, ctx, 0);
        bpf_loop(walk.filter_words, clear_filter_live as *mut c_void, ctx, 0);
        each(
            core::ptr::addr_of!(MAPPINGS_IN),
            note_owner as *mut c_void,
            ctx,
        );
        each(
            core::ptr::addr_of!(SESSIONS),
            visit_session as *mut c_void,
            ctx,
        );
        // The sessions the pass found expired or orphaned go now, after it.
        bpf_loop(walk.w.listed, check_due::<true> as *mut c_void, ctx, 0);
        walk.w.removals = (*orders).removals;
        if walk.filter_words != 0 {
            each(
                core::ptr::addr_of!(FILTERS),
                visit_filter as *mut c_void,
                ctx,
            );
            each(
                core::ptr::addr_of!(MAPPINGS_IN),
                visit_first_remote as *mut c_void,
                ctx,
            );
        }
        *orders = walk.w;
    }
    true
}

/// One pass of the walk: `callback` (a bpf_for_each_map_elem callback) on each element of
/// `map`, with the walk's `ctx`.
///
/// # Safety
/// `callback` has the helper's callback signature for `map`'s key and value, and `ctx` is
/// what it expects.
#[inline(always)]
unsafe fn each<M>(map: *const M, callback: *mut c_void, ctx: *mut c_void) {
    // SAFETY: as the caller promises; `map` is one of this object's maps.
    unsafe { bpf_for_each_map_elem(map as *mut c_void, callback, ctx, 0) };
}

/// bpf_loop callbacks that zero word `i` of the walk's scratch maps.
#[inline(never)]
extern "C" fn clear_owner(i: u64, _ctx: *mut c_void) -> c_long {
    if let Some(p) = PORT_OWNERS.get_ptr_mut(i as u32) {
        // SAFETY: map value pointer from a successful lookup.
        unsafe { *p = 0 };
    }
    0
}

#[inline(never)]
extern "C" fn clear_port_live(i: u64, _ctx: *mut c_void) -> c_long {
    if let Some(p) = PORTS_LIVE.get_ptr_mut(i as u32) {
        // SAFETY: as above.
        unsafe { *p = 0 };
    }
    0
}

#[inline(never)]
extern "C" fn clear_filter_live(i: u64, _ctx: *mut c_void) -> c_long {
    if let Some(p) = FILTERS_LIVE.get_ptr_mut(i as u32) {
        // SAFETY: as above.
        unsafe { *p = 0 };
    }
    0
}

/// Pass 1, for each mapping: an active one names its endpoint the owner of its port.
#[inline(never)]
extern "C" fn note_owner(
    _map: *mut c_void,
    key: *const ExternalKey,
    m: *const Mapping,
    _ctx: *mut c_void,
) -> c_long {
    // SAFETY: the element the helper passes, valid for the call.
    let (k, m) = unsafe { (&*key, &*m) };
    if m.state != MAPPING_ACTIVE {
        return 0;
    }
    if let Some(slot) = owner_slot(k.proto, k.port) {
        if let Some(p) = PORT_OWNERS.get_ptr_mut(slot) {
            // SAFETY: map value pointer from a successful lookup.
            unsafe { *p = owner_tag(m.int_addr, m.int_port) };
        }
    }
    0
}

/// Pass 2, for each session: removes an orphan or an expired one; notes a live one's port,
/// filter entry and owners.
#[inline(never)]
extern "C" fn visit_session(
    _map: *mut c_void,
    key: *const SessionKey,
    s: *mut Session,
    ctx: *mut c_void,
) -> c_long {
    // SAFETY: the element the helper passes, valid for the call; `ctx` is run's Walk.
    let (k, s, walk) = unsafe { (&*key, &mut *s, &mut *ctx.cast::<Walk>()) };
    walk.w.sessions += 1;
    let owned = || {
        owner_slot(k.proto, s.ext_port)
            .and_then(|slot| PORT_OWNERS.get(slot))
            .is_some_and(|tag| *tag == owner_tag(k.int_addr, k.int_port))
    };
    let f = fate(k, s, &walk.w, owned);
    // An orphan goes in the second walk in a row that finds it one: a walk may miss a
    // mapping that a CPU's insert or delete moved under it (an element of a preallocated
    // hash table is reused at once), and would take its sessions for orphans.
    let confirmed = f == Fate::Orphan && s.orphan_mark != 0;
    if f == Fate::Live || (f == Fate::Orphan && !confirmed) {
        let mark = u8::from(f == Fate::Orphan);
        if s.orphan_mark != mark {
            // A byte of its own: the data path's atomic OR on the word around it keeps it.
            s.orphan_mark = mark;
        }
        live(k, s, walk);
        list_if_due(k, s, walk);
        return 0;
    }
    // Removed after the pass (check_due::<true>), not under it: an element of a preallocated hash
    // table is reused at once, and another CPU's insert could then take the walk down another
    // bucket's chain, past sessions it would not list. (Due now: check_due looks again, and
    // keeps one refreshed since.) Beyond the list's share for removals (after sweeps without
    // walks there are few), now, and nat-ctl walks again at the next sweep, as this walk may
    // have missed some (deleting the element the walk is at is allowed: the iteration holds
    // no bucket lock); neither `k` nor `s` is read after it.
    let due_ns = if f == Fate::Orphan {
        ORPHAN_DUE_NS
    } else {
        walk.w.now_ns
    };
    if defer_removal(k, due_ns, walk) {
        return 0;
    }
    if SESSIONS.remove(k).is_err() {
        // Still there: counted as live, so that nothing it holds goes with it.
        walk.w.failed += 1;
        live(k, s, walk);
    } else if f == Fate::Expired {
        walk.w.expired += 1;
    } else {
        walk.w.orphans += 1;
    }
    0
}

/// A live session: its port (live, and taken: a DMZ session's port stays out of the draws
/// while it lives), its filter entry, its host and MAC.
#[inline(always)]
fn live(k: &SessionKey, s: &Session, walk: &mut Walk) {
    if let Some((word, bit)) = taken_bit(k.proto, u16::from_be(s.ext_port)) {
        if let Some(p) = PORTS_LIVE.get_ptr_mut(word) {
            // SAFETY: map value pointer from a successful lookup; one walk at a time.
            unsafe { *p |= bit };
        }
    }
    state::mark_taken(k.proto, s.ext_port);
    // Only UDP sessions have filter entries (state::remember_remote).
    if walk.filter_words != 0 && k.proto == IPPROTO_UDP {
        let (word, bit) = filter_bit(walk.w.filter_seed, walk.w.filter_bits, &k.filter_key());
        if word < walk.filter_words {
            if let Some(p) = FILTERS_LIVE.get_ptr_mut(word) {
                // SAFETY: as above.
                unsafe { *p |= bit };
            }
        }
    }
    if !count_live(&HOST_LIVE, &k.int_addr)
        || (s.lan_mac != 0 && !count_live(&MAC_LIVE, &s.lan_mac))
    {
        walk.w.counts_lost += 1;
    }
}

/// Lists a session the walk removes after its pass; false when the list has no room for it
/// (its share for removals, `SweepWalk::removals_max`, is used up, or it is full), which
/// leaves `removals` above `removals_max`: nat-ctl walks again at the next sweep.
// verifier: the count is kept in SWEEP_WALK, not in the walk's copy on the stack: compared
// there, or counted on the way that removes under the pass, a known count made every visit
// a state of its own; read from the map it is any number.
#[inline(always)]
fn defer_removal(k: &SessionKey, due_ns: u64, walk: &mut Walk) -> bool {
    let Some(orders) = SWEEP_WALK.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: map value pointer from a successful lookup; one walk at a time.
    let orders = unsafe { &mut *orders };
    if orders.removals >= orders.removals_max {
        orders.removals = orders.removals.wrapping_add(1);
        return false;
    }
    // (Full of live sessions due before the next walk: this one goes under the pass.)
    let Some(e) = EXPIRING.get_ptr_mut(walk.w.listed) else {
        return false;
    };
    // SAFETY: as above.
    unsafe { *e = Expiring { key: *k, due_ns } };
    walk.w.listed += 1;
    orders.removals += 1;
    true
}

/// A live session due before the next walk goes on EXPIRING, for the due checks.
#[inline(always)]
fn list_if_due(k: &SessionKey, s: &Session, walk: &mut Walk) {
    let due_ns = deadline_ns(k, s, &walk.w.timeouts);
    if due_ns >= walk.w.list_before_ns {
        return;
    }
    walk.w.due = walk.w.due.wrapping_add(1);
    match EXPIRING.get_ptr_mut(walk.w.listed) {
        Some(e) => {
            // SAFETY: map value pointer from a successful lookup; one walk at a time.
            unsafe { *e = Expiring { key: *k, due_ns } };
            walk.w.listed += 1;
        }
        None => walk.w.list_lost += 1,
    }
}

/// A look at EXPIRING entry `i`, by a due check or after a walk's pass (`AFTER_WALK`): a
/// session whose deadline has come goes if it is still idle, and one the walk found an
/// orphan goes; one that saw traffic since is due later (and, after a walk's pass, counts as
/// live). A due check also takes a session it removes off its host's and MAC's counts (the
/// walk, which recounts them, may be many sweeps away).
// verifier: one callback for each (`AFTER_WALK`), not a test of `SweepWalk::kind` in one: the
// walk's states, which cannot tell the kind, took both ways past half the verifier's limit.
#[inline(never)]
extern "C" fn check_due<const AFTER_WALK: bool>(i: u64, ctx: *mut c_void) -> c_long {
    // SAFETY: `ctx` is run's Walk, as for the walk's callbacks.
    let walk = unsafe { &mut *ctx.cast::<Walk>() };
    let Some(e) = EXPIRING.get_ptr_mut(i as u32) else {
        return 1;
    };
    // SAFETY: map value pointer from a successful lookup; one walk or check at a time.
    let e = unsafe { &mut *e };
    if e.due_ns == 0 || e.due_ns > walk.w.now_ns {
        return 0;
    }
    let Some(s) = SESSIONS.get_ptr(&e.key) else {
        // Gone already (a flush, or ended and made again: the next walk lists that one).
        e.due_ns = 0;
        return 0;
    };
    // SAFETY: as above; the data path may refresh it meanwhile, as during a walk.
    let s = unsafe { &*s };
    // (A session made afresh under the orphan's key since has no orphan mark.)
    let orphan = e.due_ns == ORPHAN_DUE_NS && s.orphan_mark != 0;
    let (host, mac) = (e.key.int_addr, s.lan_mac);
    let goes = orphan || is_expired(&e.key, s, &walk.w.timeouts, walk.w.now_ns);
    if !goes || SESSIONS.remove(&e.key).is_err() {
        if goes {
            // Listed still: the next due check or walk tries again.
            walk.w.failed += 1;
        } else {
            e.due_ns = deadline_ns(&e.key, s, &walk.w.timeouts);
        }
        // Live after a walk's pass, so that nothing it holds goes with it.
        if AFTER_WALK {
            let k = e.key;
            live(&k, s, walk);
        }
        return 0;
    }
    e.due_ns = 0;
    if orphan {
        walk.w.orphans += 1;
    } else {
        walk.w.expired += 1;
    }
    // After a walk's pass the recount that follows sets the counts.
    if !AFTER_WALK {
        uncount(&HOST_SESSIONS, &host);
        if mac != 0 {
            uncount(&MAC_SESSIONS, &mac);
        }
    }
    0
}

/// One session less for `owner`. The data path only counts up and only the sweeper counts
/// down, so a count read above 0 is still so when the atomic add of -1 lands.
#[inline(always)]
fn uncount<K>(counts: &aya_ebpf::maps::HashMap<K, u32>, owner: &K) {
    if let Some(n) = counts.get_ptr_mut(owner) {
        // SAFETY: map value pointer from a successful lookup, naturally aligned; other CPUs
        // add to it atomically.
        unsafe {
            if core::ptr::read_volatile(n) > 0 {
                core::intrinsics::atomic_xadd::<
                    u32,
                    u32,
                    { core::intrinsics::AtomicOrdering::Relaxed },
                >(n, u32::MAX);
            }
        }
    }
}

/// Counts one more live session for `owner`; false if the table had no room for it.
#[inline(always)]
fn count_live<K>(counts: &aya_ebpf::maps::HashMap<K, u32>, owner: &K) -> bool {
    match counts.get_ptr_mut(owner) {
        // SAFETY: map value pointer from a successful lookup; one walk at a time.
        Some(n) => unsafe {
            *n += 1;
            true
        },
        None => counts.insert(owner, &1, 0).is_ok(),
    }
}

/// Pass 3, for each filter entry: one that no live session set the bit of goes.
#[inline(never)]
extern "C" fn visit_filter(
    _map: *mut c_void,
    key: *const SessionKey,
    made: *const u64,
    ctx: *mut c_void,
) -> c_long {
    // SAFETY: as for visit_session.
    let (f, made, walk) = unsafe { (&*key, *made, &mut *ctx.cast::<Walk>()) };
    // An entry made while the walk ran may belong to a session the walk had gone past: kept
    // (entries are stamped with the data path's coarse clock, hence the second's margin).
    if made + NS_PER_SEC >= walk.w.now_ns {
        return 0;
    }
    let (word, bit) = filter_bit(walk.w.filter_seed, walk.w.filter_bits, f);
    let live = word < walk.filter_words && FILTERS_LIVE.get(word).is_some_and(|w| w & bit != 0);
    if !live {
        if FILTERS.remove(f).is_ok() {
            walk.w.filters_removed += 1;
        } else {
            walk.w.failed += 1;
        }
    }
    0
}

/// Pass 4, for each mapping, with pass 3: a first remote host (`Mapping::first_remote`, the
/// filter entry a UDP mapping keeps itself) that no live session set the bit of is
/// forgotten, as its FILTERS entry would go.
#[inline(never)]
extern "C" fn visit_first_remote(
    _map: *mut c_void,
    _key: *const ExternalKey,
    m: *mut Mapping,
    ctx: *mut c_void,
) -> c_long {
    // SAFETY: as for visit_session.
    let (m, walk) = unsafe { (&mut *m, &mut *ctx.cast::<Walk>()) };
    // One set while the walk ran may have a session the walk had gone past: kept, as a
    // filter entry made then is (a unit: at least a second, as for those).
    if m.first_remote == 0
        || u64::from(m.first_remote_at) + 1 >= walk.w.now_ns >> FIRST_REMOTE_TIME_SHIFT
    {
        return 0;
    }
    let f = SessionKey::new(m.proto, m.int_addr, m.int_port, m.first_remote, 0);
    let (word, bit) = filter_bit(walk.w.filter_seed, walk.w.filter_bits, &f);
    let live = word < walk.filter_words && FILTERS_LIVE.get(word).is_some_and(|w| w & bit != 0);
    if !live {
        // The data path writes it once, with the mapping's first session
        // (state::remember_remote).
        m.first_remote = 0;
        walk.w.filters_removed += 1;
    }
    0
}
