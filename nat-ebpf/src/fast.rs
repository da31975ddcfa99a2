//! The fast path: a packet of an established flow found in the flow cache costs one array
//! access. On a miss, an outbound packet costs a session lookup and a FIB lookup, and fills
//! the cache; so does a reply whose entry is there but whose next hop expired; a reply with
//! no entry takes the full path, which finds its session through the mapping and
//! fills the cache (wan.rs, `state::keep_reply_flow`). Anything unusual (a
//! first packet, TCP SYN/FIN/RST, a fragment, an expiring TTL, PPTP control, shared IKE, a
//! switch turned off, a route the FIB does not resolve) returns `None` and takes the full
//! path in lan.rs / wan.rs, which also sets up what this path relies on.

use aya_ebpf::programs::XdpContext;
use nat_common::{
    config::NatConfig,
    counters::{ClassCounters, Counter},
    flow_cache::{Flow, FlowKey, value_in, value_out},
    maps::{NextHop, ReplyKey, SessionKey},
    passthrough::{CLASS_NONE, CLASS_PPTP, IKE_PORT},
    proto::{
        ICMP_ECHO_REQUEST, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN,
        TCP_FLAGS_OFFSET, TCP_RST, TCP_SYN,
    },
    rewrite::{Side, rewrite_endpoint},
    tcp_state::{self, Direction},
};

use crate::{
    Verdict, flow_cache as cache,
    forward::{Route, deliver_in, deliver_out, next_hop, route},
    maps::{FLOWS_IN, FLOWS_OUT, MAPPINGS_OUT, SESSIONS, count, port_in_pool, switch_on},
    packet::{Ipv4, Transport, parse_transport, ptr_at},
    state,
};

/// TCP segments that change the session's state go the full way.
const TCP_STATE_FLAGS: u8 = TCP_SYN | TCP_FIN | TCP_RST;

/// Version 4, header length 5 words: an IPv4 header without options.
const IPV4_NO_OPTIONS: u8 = 0x45;

/// May a packet take the fast path at all?
#[inline(always)]
fn eligible(pkt: &Ipv4<'_>) -> bool {
    // IP options take the full path, which checks them.
    // verifier: a volatile read of the version/IHL byte, so that the compiler does not turn
    // this into a constant header length and compile (and the verifier explore) the rest
    // twice, once per header length: that takes the program past the verifier's limit.
    !pkt.fragment
        && pkt.ttl > 1
        && unsafe { core::ptr::read_volatile(&pkt.ip[0]) } == IPV4_NO_OPTIONS
        && matches!(pkt.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP)
}

/// May traffic of `class` take the fast path? PPTP control messages need rewriting; a class
/// whose switch is off is dropped (and counted) by the full path.
#[inline(always)]
fn class_ok(class: u8) -> bool {
    class == CLASS_NONE || (class != CLASS_PPTP && switch_on(class))
}

/// The FIB's answer for `pkt` towards `dst`, and the next hop to cache, when it resolves the
/// route out of interface `via`. None otherwise (an unresolved neighbour, too big for the
/// link, somewhere else): the full path decides then.
#[inline(always)]
fn resolved(
    ctx: &XdpContext,
    cfg: &NatConfig,
    pkt: &Ipv4<'_>,
    (dst, via): (u32, u32),
    now: u64,
) -> Option<(Route, NextHop)> {
    let r = route(ctx, pkt.src, dst, pkt.tos, pkt.tot_len);
    match r {
        Route::Resolved { ifindex, .. } if ifindex == via => {
            let hop = next_hop(&r, cfg, pkt.tot_len, now);
            Some((r, hop))
        }
        _ => None,
    }
}

/// The route a flow cache entry gives `pkt`, if its class may pass and its next hop still
/// answers (which bounds how long an entry is used without its session: FLOW_TTL_NS).
#[inline(always)]
fn cached(c: &Flow, cfg: &NatConfig, pkt: &Ipv4<'_>, now: u64) -> Option<Route> {
    if !class_ok(c.class) {
        return None;
    }
    cache::route(c, cfg, pkt.tot_len, now)
}

/// Counts a translated packet of a passthrough class.
#[inline(always)]
fn count_class(class: u8) {
    if let Some(ClassCounters { translated, .. }) = Counter::for_class(class) {
        count(translated);
    }
}

/// The source and destination ports (wire order) of a TCP or UDP packet that is not a
/// fragment, read ahead of the transport parse for the prefetches below.
#[inline(always)]
fn ports_ahead(ctx: &XdpContext, pkt: &Ipv4<'_>) -> Option<[u16; 2]> {
    if pkt.fragment || !matches!(pkt.proto, IPPROTO_TCP | IPPROTO_UDP) {
        return None;
    }
    let ports = ptr_at::<[u16; 2]>(ctx, pkt.l4_offset).ok()?;
    // SAFETY: bounds-checked by ptr_at.
    Some(unsafe { *ports })
}

/// Does a TCP packet's flags byte, read ahead of the transport parse, have SYN, FIN or RST?
/// (No for a packet too short to have one: the parse refuses it.)
#[inline(always)]
fn state_segment_ahead(ctx: &XdpContext, pkt: &Ipv4<'_>) -> bool {
    pkt.proto == IPPROTO_TCP
        && ptr_at::<u8>(ctx, pkt.l4_offset + TCP_FLAGS_OFFSET)
            // SAFETY: bounds-checked by ptr_at.
            .is_ok_and(|f| unsafe { *f } & TCP_STATE_FLAGS != 0)
}

/// Starts reading the FLOWS_OUT set of a TCP or UDP packet's flow (flow_cache::prefetch), right
/// after the IPv4 header is parsed, so that the LAN program's checks before `outbound` run
/// while it comes from memory. Not for a packet that never reads it: a TCP segment with SYN,
/// FIN or RST, which `outbound` sends the full way without a look at the cache, nor one to
/// the WAN address (hairpinning). A load holds the CPU up until its line is in, used or
/// not: 15% of a new connection's SYN (docs/fast-path.md).
#[inline(always)]
pub fn prefetch_outbound(ctx: &XdpContext, cfg: &NatConfig, pkt: &Ipv4<'_>) {
    if let Some([sport, dport]) = ports_ahead(ctx, pkt) {
        if pkt.dst == cfg.wan_addr || state_segment_ahead(ctx, pkt) {
            return;
        }
        let key = SessionKey::new(pkt.proto, pkt.src, sport, pkt.dst, dport);
        cache::prefetch(&FLOWS_OUT, cfg, &FlowKey::out(&key));
    }
}

/// Starts the lookup of the mapping of session `key`'s LAN endpoint, whose value is not
/// needed here: what is wanted is its hash bucket on its way into the CPU caches while the
/// session's lookup waits for its own, rather than after it. A new flow's first packet
/// misses in both tables, each a wait for memory; looked up back to back, as here, the two
/// waits overlap, and `state::mapping_for` finds the bucket in the caches.
#[inline(always)]
fn prefetch_mapping(key: &SessionKey) {
    let _ = MAPPINGS_OUT.get_ptr(&key.endpoint());
}

/// `prefetch_mapping` for the session itself, whose lookup the full path makes
/// (`state::refresh_outbound`).
#[inline(always)]
fn prefetch_session(key: &SessionKey) {
    let _ = SESSIONS.get_ptr(key);
}

/// LAN -> WAN.
#[inline(always)]
pub fn outbound(
    ctx: &XdpContext,
    cfg: &NatConfig,
    pkt: &mut Ipv4<'_>,
    now: u64,
) -> Result<Option<Verdict>, Counter> {
    // The source is a LAN host's: try_nat_lan checked it first.
    if !eligible(pkt) {
        return Ok(None);
    }
    let Some(mut t) = parse_transport(ctx, pkt, ICMP_ECHO_REQUEST)? else {
        return Ok(None);
    };
    let ike = IKE_PORT.to_be();
    let key = SessionKey::new(pkt.proto, pkt.src, t.sport, pkt.dst, t.dport);
    if t.tcp_flags & TCP_STATE_FLAGS != 0
        || (pkt.proto == IPPROTO_UDP && t.sport == ike && t.dport == ike)
    {
        if t.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            // A new connection: the full path looks both up.
            prefetch_mapping(&key);
            prefetch_session(&key);
        }
        return Ok(None);
    }
    let cache_key = FlowKey::out(&key);
    match cache::lookup(&FLOWS_OUT, cfg, &cache_key, now) {
        Some(c) => {
            if let Some(route) = cached(&c, cfg, pkt, now) {
                rewrite_endpoint(pkt.ip, &mut t.l4, Side::Source, cfg.wan_addr, c.port);
                count_class(c.class);
                return deliver_out(pkt, route).map(Some);
            }
        }
        // Not a flow the cache knows: a new UDP or ICMP flow's first packet, whose session
        // lookup below misses and whose mapping the full path looks up next, or its second
        // (the full path does not fill the cache) and the packets of flows the cache cannot
        // hold, which pay for the mapping's lookup, overlapped with the session's. A TCP
        // flow's first packet, its SYN, went the full way above.
        None if pkt.proto != IPPROTO_TCP => prefetch_mapping(&key),
        None => {}
    }
    let Some(s) = SESSIONS.get_ptr_mut(&key) else {
        return Ok(None);
    };
    // SAFETY: map value pointer; concurrent writers only race on refresh timestamps.
    let s = unsafe { &mut *s };
    if !class_ok(s.class) {
        return Ok(None);
    }
    let Some((route, hop)) = resolved(ctx, cfg, pkt, (pkt.dst, cfg.wan_ifindex), now) else {
        return Ok(None);
    };
    s.last_seen_ns = now;
    if pkt.proto == IPPROTO_TCP {
        // An established flow's plain segment: the LAN side has spoken.
        state::record_tcp(s, Direction::Outbound, 0);
    }
    let value = value_out(s.ext_port, s.class);
    cache::fill(&FLOWS_OUT, cfg, &cache_key, value, &hop);
    rewrite_endpoint(pkt.ip, &mut t.l4, Side::Source, cfg.wan_addr, s.ext_port);
    count_class(s.class);
    deliver_out(pkt, route).map(Some)
}

/// `prefetch_outbound` for a reply's FLOWS_IN set, right after the WAN program parses the
/// IPv4 header.
#[inline(always)]
pub fn prefetch_inbound(ctx: &XdpContext, cfg: &NatConfig, pkt: &Ipv4<'_>) {
    if let Some([rem_port, ext_port]) = ports_ahead(ctx, pkt) {
        let key = ReplyKey::new(pkt.proto, pkt.src, ext_port, rem_port);
        cache::prefetch(&FLOWS_IN, cfg, &FlowKey::reply(&key));
    }
}

/// WAN -> LAN, for a packet to the WAN address (transport header `t`) on external port
/// `ext_port` (ICMP: the echo id) from remote port `rem_port` (ICMP: 0), not shared IKE.
#[inline(always)]
pub fn inbound(
    ctx: &XdpContext,
    cfg: &NatConfig,
    pkt: &mut Ipv4<'_>,
    t: &mut Transport<'_>,
    ext_port: u16,
    rem_port: u16,
    now: u64,
) -> Result<Option<Verdict>, Counter> {
    if !eligible(pkt) || t.tcp_flags & TCP_STATE_FLAGS != 0 {
        return Ok(None);
    }
    let key = ReplyKey::new(pkt.proto, pkt.src, ext_port, rem_port);
    let cache_key = FlowKey::reply(&key);
    let Some(c) = cache::lookup(&FLOWS_IN, cfg, &cache_key, now) else {
        // The full path finds the session through the mapping and caches the flow.
        return Ok(None);
    };
    if let Some(route) = cached(&c, cfg, pkt, now) {
        rewrite_endpoint(pkt.ip, &mut t.l4, Side::Destination, c.addr, c.port);
        count_class(c.class);
        return deliver_in(pkt, route).map(Some);
    }
    // Cached, but the entry no longer answers (FLOW_TTL_NS went by, its hop was not checked
    // for NEXT_HOP_TTL_NS, a route changed, a longer packet): the session the entry names,
    // if it is still the flow's, renews it. An established flow comes here every few seconds.
    if !port_in_pool(ext_port) || !class_ok(c.class) {
        return Ok(None);
    }
    let session = SessionKey::new(pkt.proto, c.addr, c.port, pkt.src, rem_port);
    let Some(s) = SESSIONS.get_ptr_mut(&session) else {
        return Ok(None);
    };
    // SAFETY: map value pointer; concurrent writers only race on refresh timestamps.
    let s = unsafe { &mut *s };
    if s.ext_port != ext_port
        || s.class != c.class
        || (pkt.proto == IPPROTO_TCP && !tcp_state::replies_cacheable(s.tcp_state))
    {
        return Ok(None);
    }
    let Some((r, hop)) = resolved(ctx, cfg, pkt, (c.addr, cfg.lan_ifindex), now) else {
        return Ok(None);
    };
    s.last_seen_ns = now;
    cache::fill(
        &FLOWS_IN,
        cfg,
        &cache_key,
        value_in(c.addr, c.port, c.class),
        &hop,
    );
    rewrite_endpoint(pkt.ip, &mut t.l4, Side::Destination, c.addr, c.port);
    count_class(c.class);
    deliver_in(pkt, r).map(Some)
}
