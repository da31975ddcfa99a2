//! IPv4 fragments: the translation of a first fragment (which carries the ports) is applied
//! to the fragments that follow it, which only need their address rewritten.

use aya_ebpf::programs::XdpContext;
use nat_common::{
    config::FRAG_TIMEOUT_NS,
    counters::Counter,
    maps::{FRAG_ADDR_KEY, FRAG_STARTS_PER_HOST, FragEntry, FragKey, FragQuota},
    rewrite::{Side, rewrite_addr},
};

use crate::{
    Verdict,
    forward::{Route, deliver_in, deliver_out, route_in},
    maps::{FRAGS, FRAGS_IN, HOST_FRAGS, count},
    packet::Ipv4,
    state::mac_share,
};

#[inline(always)]
fn key(pkt: &Ipv4<'_>) -> FragKey {
    FragKey {
        src: pkt.src,
        dst: pkt.dst,
        id: pkt.id,
        proto: pkt.proto,
        _pad: 0,
    }
}

/// Records how the first fragment of a LAN->WAN datagram was translated (`addr`: the new
/// source), within its sender's share (`mac`: its `state::mac_owner`). Called with the
/// packet's addresses as received.
#[inline(always)]
pub fn remember(pkt: &Ipv4<'_>, addr: u32, mac: u64, now: u64) -> Result<(), Counter> {
    if !frag_quota(
        u64::from(pkt.src) | FRAG_ADDR_KEY,
        FRAG_STARTS_PER_HOST,
        now,
    ) || (mac != 0 && !frag_quota(mac, mac_share(FRAG_STARTS_PER_HOST), now))
    {
        return Err(Counter::DropHostFragQuota);
    }
    // An update, not NOEXIST: a datagram that reuses an old IP id replaces the stale entry.
    FRAGS
        .insert(&key(pkt), &entry(addr, now), 0)
        .map_err(|_| Counter::DropFragTableFull)
}

/// Counts a first fragment started by `owner` (a LAN address with FRAG_ADDR_KEY, or a MAC):
/// at most `limit` per FRAG_TIMEOUT_NS window, so that one host cannot crowd the others'
/// datagrams out of FRAGS, not even by spoofing other LAN addresses. False when over. Plain
/// (not atomic) updates: CPUs counting for one owner at once may admit a few more.
// verifier: a subprogram, its map key off the LAN program's frame.
#[inline(never)]
fn frag_quota(owner: u64, limit: u32, now: u64) -> bool {
    match HOST_FRAGS.get_ptr_mut(&owner) {
        Some(q) => {
            // SAFETY: map value pointer from a successful lookup.
            let q = unsafe { &mut *q };
            if now.wrapping_sub(q.window_start_ns) >= FRAG_TIMEOUT_NS {
                q.window_start_ns = now;
                q.started = 1;
            } else if q.started >= limit {
                return false;
            } else {
                q.started += 1;
            }
        }
        None => {
            let q = FragQuota {
                window_start_ns: now,
                started: 1,
                _pad: 0,
            };
            // A full table only means this owner is not limited until the sweeper clears it.
            let _ = HOST_FRAGS.insert(&owner, &q, 0);
        }
    }
    true
}

/// `remember` for a WAN->LAN datagram (`addr`: the new destination), of an existing session
/// or binding only (the callers' rule: nothing from the WAN creates state on its own).
#[inline(always)]
pub fn remember_in(pkt: &Ipv4<'_>, addr: u32, now: u64) -> Result<(), Counter> {
    FRAGS_IN
        .insert(&key(pkt), &entry(addr, now), 0)
        .map_err(|_| Counter::DropFragTableFull)
}

#[inline(always)]
fn entry(addr: u32, now: u64) -> FragEntry {
    FragEntry {
        created_ns: now,
        addr,
        _pad: 0,
    }
}

/// The address a later fragment gets, if its first fragment was translated recently.
#[inline(always)]
fn fresh(e: Option<*const FragEntry>, now: u64) -> Option<u32> {
    // SAFETY: map value pointer from a successful lookup.
    let e = unsafe { &*e? };
    (now.wrapping_sub(e.created_ns) < FRAG_TIMEOUT_NS).then_some(e.addr)
}

/// A later LAN->WAN fragment: translated only when its first fragment was; otherwise it is
/// dropped, since forwarding it would put a LAN address on the WAN.
#[inline(always)]
pub fn later_out(mut pkt: Ipv4<'_>, r: Route, now: u64) -> Result<Verdict, Counter> {
    let addr = fresh(FRAGS.get_ptr(&key(&pkt)), now).ok_or(Counter::DropFragmentBeforeFirst)?;
    rewrite_addr(pkt.ip, Side::Source, addr);
    count(Counter::FragmentsTranslated);
    deliver_out(&mut pkt, r)
}

/// A later WAN->LAN fragment to the WAN address: translated when its first fragment was;
/// otherwise it is the router's own (it reassembles locally, nothing reaches the LAN).
#[inline(always)]
pub fn later_in(ctx: &XdpContext, mut pkt: Ipv4<'_>, now: u64) -> Result<Verdict, Counter> {
    let Some(addr) = fresh(FRAGS_IN.get_ptr(&key(&pkt)), now) else {
        return Ok(Verdict::pass(Counter::PassInboundFragment));
    };
    let r = route_in(ctx, &pkt, addr)?;
    rewrite_addr(pkt.ip, Side::Destination, addr);
    count(Counter::FragmentsTranslated);
    deliver_in(&mut pkt, r)
}
