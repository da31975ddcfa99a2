//! ICMP errors about translated flows (RFC 5508 REQ-3..7): the outer address, the quoted
//! IPv4 header and the quoted ports or echo id are translated, every checksum fixed. An
//! error matches an existing session or is dropped; it never creates or refreshes one.

use aya_ebpf::programs::XdpContext;
use nat_common::{
    checksum::{fold, replace_u16, sum_bytes_fixed},
    config::NatConfig,
    counters::Counter,
    maps::{
        EndpointKey, EspKey, ExternalKey, MAPPING_ACTIVE, Mapping, PeerIdKey, PptpClientKey,
        SessionKey,
    },
    proto::{
        ICMP_ECHO_REQUEST, ICMP_HDR_LEN, IPPROTO_ESP, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_TCP,
        IPPROTO_UDP,
    },
    rewrite::{
        ICMP_CHECK, ICMP_ID, IP_DST, IP_SRC, Side, get_u16, get_u32, rewrite_addr, rewrite_quoted,
        rewrite_quoted_addr, set_u16,
    },
    vpn::GRE_CALL_ID,
};

use crate::{
    Verdict,
    forward::{Route, deliver_in, deliver_out, route_in},
    lan_side::lan_side,
    maps::{
        ESP_IN, FORWARDS, FORWARDS_BY_LAN, MAPPINGS_IN, MAPPINGS_OUT, PEER_IDS, PPTP_CALLS_OUT,
        SESSIONS, count,
    },
    packet::{Frame, Ipv4, ptr_at},
    vpn::peer_state_live,
};

/// The quoted packet of an ICMP error: ICMP header, quoted IPv4 header (no options), first
/// 8 bytes of the quoted transport header.
struct Quoted<'a> {
    icmp: &'a mut [u8; ICMP_HDR_LEN],
    ip: &'a mut [u8; 20],
    l4: &'a mut [u8; 8],
    proto: u8,
}

/// The ICMP header and the quoted headers, as they lie in the packet.
#[repr(C)]
struct QuotedHeaders {
    icmp: [u8; ICMP_HDR_LEN],
    ip: [u8; 20],
    l4: [u8; 8],
}

/// ICMP errors are at most this long when the router that sent them follows RFC 1812 (and
/// Linux does); longer ones are translated without checking their checksum.
pub const MAX_CHECKED_ICMP_LEN: usize = 576;

/// Verifies the ICMP checksum over the whole message (RFC 5508 REQ-6: a bad one is dropped).
// verifier: a loop bounded by MAX_CHECKED_ICMP_LEN / 2 words, each read bounds-checked.
#[inline(always)]
fn icmp_checksum_ok(ctx: &impl Frame, pkt: &Ipv4<'_>) -> bool {
    let len = pkt.l4_len;
    if len > MAX_CHECKED_ICMP_LEN {
        return true;
    }
    let mut sum = 0u32;
    let mut at = 0;
    while at < MAX_CHECKED_ICMP_LEN {
        if at >= len {
            break;
        }
        if at + 1 == len {
            // An odd length: the last byte counts as a word padded with zero.
            let Ok(b) = ptr_at::<[u8; 1]>(ctx, pkt.l4_offset + at) else {
                return false;
            };
            sum += u16::from_ne_bytes([unsafe { (*b)[0] }, 0]) as u32;
            break;
        }
        let Ok(w) = ptr_at::<[u8; 2]>(ctx, pkt.l4_offset + at) else {
            return false;
        };
        // Native-order words: the one's-complement sum is valid in either byte order.
        sum += u16::from_ne_bytes(unsafe { *w }) as u32;
        at += 2;
    }
    fold(sum) == 0xffff
}

/// Ok(None): not something the NAT translates (too short, quoted options, other protocol):
/// the caller leaves it to the router.
#[inline(always)]
fn quoted<'a>(ctx: &impl Frame, pkt: &Ipv4<'_>) -> Result<Option<Quoted<'a>>, Counter> {
    if pkt.l4_len < ICMP_HDR_LEN + 20 + 8 {
        return Ok(None);
    }
    if !icmp_checksum_ok(ctx, pkt) {
        return Err(Counter::DropIcmpErrorBadChecksum);
    }
    // verifier: one bounds check for all three parts, which are fields of it; three checks
    // of their own can come out as pointers the verifier cannot relate to each other.
    let Ok(h) = ptr_at::<QuotedHeaders>(ctx, pkt.l4_offset) else {
        return Ok(None);
    };
    // SAFETY: bounds-checked by ptr_at.
    let h = unsafe { &mut *h };
    let (icmp, ip, l4) = (&mut h.icmp, &mut h.ip, &mut h.l4);
    if ip[0] != 0x45 {
        return if ip[0] >> 4 == 4 {
            Ok(None)
        } else {
            Err(Counter::DropIcmpErrorBadChecksum)
        };
    }
    if fold(sum_bytes_fixed(ip)) != 0xffff {
        return Err(Counter::DropIcmpErrorBadChecksum);
    }
    let proto = ip[9];
    let ok = match proto {
        IPPROTO_TCP | IPPROTO_UDP => true,
        IPPROTO_ICMP => l4[0] == ICMP_ECHO_REQUEST || l4[0] == nat_common::proto::ICMP_ECHO_REPLY,
        // Ids only (call id, SPI), which the peer chose: see peer_error_in/out.
        IPPROTO_GRE | IPPROTO_ESP => true,
        _ => false,
    };
    Ok(ok.then_some(Quoted {
        icmp,
        ip,
        l4,
        proto,
    }))
}

/// The quoted packet's port on `side` (ICMP: the echo id), wire order.
#[inline(always)]
fn quoted_port(q: &Quoted<'_>, side: Side) -> u16 {
    match (q.proto, side) {
        (IPPROTO_ICMP, _) => get_u16(q.l4, ICMP_ID),
        (_, Side::Source) => get_u16(q.l4, 0),
        (_, Side::Destination) => get_u16(q.l4, 2),
    }
}

/// The mapping whose external port is the quoted packet's source port: the LAN host the
/// quoted packet came from. A forwarded port's LAN endpoint stands in for a mapping.
#[inline(always)]
fn quoted_source_mapping(q: &Quoted<'_>) -> Result<Mapping, Counter> {
    let ext = ExternalKey {
        port: quoted_port(q, Side::Source),
        proto: q.proto,
        _pad: 0,
    };
    if let Some(m) = MAPPINGS_IN.get_ptr(&ext) {
        // SAFETY: map value pointer from a successful lookup, copied at once.
        return Ok(unsafe { *m });
    }
    let f = FORWARDS
        .get_ptr(&ext)
        .ok_or(Counter::DropIcmpErrorNoSession)?;
    // SAFETY: map value pointer from a successful lookup, read at once.
    let (int_addr, int_port) = unsafe { ((*f).int_addr, (*f).int_port) };
    Ok(Mapping {
        int_addr,
        int_port,
        state: MAPPING_ACTIVE,
        ..Mapping::default()
    })
}

/// The quoted packet's destination: a LAN host and its port.
#[inline(always)]
fn quoted_destination(q: &Quoted<'_>) -> EndpointKey {
    EndpointKey {
        addr: get_u32(q.ip, IP_DST),
        port: quoted_port(q, Side::Destination),
        proto: q.proto,
        _pad: 0,
    }
}

/// The quoted packet's destination (a LAN host and its port) and the external port of the
/// session it belongs to (whose remote end is the quoted source): the LAN host that received
/// the quoted packet, and is now sending the error. The session's port, not the endpoint's
/// mapping's: a forwarded endpoint's sessions have the forwarded port, whatever mapping the
/// endpoint may also have.
#[inline(always)]
fn quoted_destination_port(q: &Quoted<'_>) -> Result<(EndpointKey, u16), Counter> {
    let ep = quoted_destination(q);
    let session = SessionKey::new(
        q.proto,
        ep.addr,
        ep.port,
        get_u32(q.ip, IP_SRC),
        quoted_port(q, Side::Source),
    );
    let s = SESSIONS
        .get_ptr(&session)
        .ok_or(Counter::DropIcmpErrorNoSession)?;
    // SAFETY: map value pointer from a successful lookup.
    Ok((ep, unsafe { (*s).ext_port }))
}

/// The quoted packet's destination (a LAN host and its port) and that endpoint's own
/// external port (its mapping's, or its forward's), whatever the quoted source: for an error
/// about a hairpinned packet, where the erring host has no session with the sender.
#[inline(always)]
fn quoted_destination_mapping(q: &Quoted<'_>) -> Result<(EndpointKey, u16), Counter> {
    let ep = quoted_destination(q);
    if let Some(m) = MAPPINGS_OUT.get_ptr(&ep) {
        // SAFETY: map value pointer from a successful lookup.
        return Ok((ep, unsafe { (*m).ext_port }));
    }
    let p = FORWARDS_BY_LAN
        .get_ptr(&ep)
        .ok_or(Counter::DropIcmpErrorNoSession)?;
    // SAFETY: map value pointer from a successful lookup.
    Ok((ep, unsafe { *p }))
}

/// WAN -> LAN: an error about a packet we sent out (quoted source: the WAN address and an
/// external port), from the remote or from any router on the way (traceroute, PMTU).
#[inline(always)]
pub fn error_in(ctx: &XdpContext, cfg: &NatConfig, mut pkt: Ipv4<'_>) -> Result<Verdict, Counter> {
    let Some(q) = quoted(ctx, &pkt)? else {
        return Ok(Verdict::pass(Counter::PassIcmpToRouter));
    };
    if q.proto == IPPROTO_GRE || q.proto == IPPROTO_ESP {
        return peer_error_in(ctx, cfg, pkt, q);
    }
    if get_u32(q.ip, IP_SRC) != cfg.wan_addr
        || !crate::maps::port_in_pool(quoted_port(&q, Side::Source))
    {
        // About the router's own traffic.
        return Ok(Verdict::pass(Counter::PassIcmpToRouter));
    }
    let m = match quoted_source_mapping(&q) {
        Ok(m) => m,
        // Echo ids share one space with the router's own pings: an error about an echo
        // the NAT did not map is about the router's (its PMTU discovery, traceroute -I).
        Err(_) if q.proto == IPPROTO_ICMP => {
            return Ok(Verdict::pass(Counter::PassIcmpToRouter));
        }
        Err(e) => return Err(e),
    };
    let session = SessionKey::new(
        q.proto,
        m.int_addr,
        m.int_port,
        get_u32(q.ip, IP_DST),
        quoted_port(&q, Side::Destination),
    );
    if m.state != MAPPING_ACTIVE || SESSIONS.get_ptr(&session).is_none() {
        return Err(Counter::DropIcmpErrorNoSession);
    }
    let r = route_in(ctx, &pkt, m.int_addr)?;
    rewrite_addr(pkt.ip, Side::Destination, m.int_addr);
    rewrite_quoted(
        q.icmp,
        q.ip,
        q.l4,
        q.proto,
        Side::Source,
        m.int_addr,
        m.int_port,
    );
    count(Counter::IcmpErrorTranslated);
    deliver_in(&mut pkt, r)
}

/// The id a quoted GRE (call id) or ESP (SPI) packet carries, as PeerIdKey holds it.
#[inline(always)]
fn quoted_peer_id(q: &Quoted<'_>) -> u32 {
    if q.proto == IPPROTO_GRE {
        u32::from(get_u16(q.l4, GRE_CALL_ID))
    } else {
        get_u32(q.l4, 0)
    }
}

/// WAN -> LAN: an error about GRE or ESP a LAN host sent (quoted: from the WAN address, with
/// the server's call id or SPI, which the NAT left as they were). PEER_IDS names the host;
/// only the addresses change back. One about no known call or SA is the router's own (its
/// own tunnel), and goes to it.
#[inline(always)]
fn peer_error_in(
    ctx: &XdpContext,
    cfg: &NatConfig,
    mut pkt: Ipv4<'_>,
    q: Quoted<'_>,
) -> Result<Verdict, Counter> {
    if get_u32(q.ip, IP_SRC) != cfg.wan_addr {
        return Ok(Verdict::pass(Counter::PassIcmpToRouter));
    }
    let key = PeerIdKey {
        rem_addr: get_u32(q.ip, IP_DST),
        id: quoted_peer_id(&q),
        proto: q.proto,
        _pad: [0; 3],
    };
    // SAFETY: map value pointer from a successful lookup, copied at once.
    let Some(owner) = PEER_IDS.get_ptr(&key).map(|o| unsafe { *o }) else {
        return Ok(Verdict::pass(Counter::PassIcmpToRouter));
    };
    if !peer_state_live(&key, &owner) {
        return Err(Counter::DropIcmpErrorNoSession);
    }
    let r = route_in(ctx, &pkt, owner.int_addr)?;
    rewrite_addr(pkt.ip, Side::Destination, owner.int_addr);
    rewrite_quoted_addr(q.icmp, q.ip, Side::Source, owner.int_addr);
    count(Counter::IcmpErrorTranslated);
    deliver_in(&mut pkt, r)
}

/// LAN -> WAN: a LAN host's error about GRE or ESP it received through the NAT (quoted: from
/// the server to the host; GRE with the client's own call id, which goes back to the external
/// one the server knows; ESP with the SPI the host chose, bound to it).
#[inline(always)]
fn peer_error_out(
    cfg: &NatConfig,
    mut pkt: Ipv4<'_>,
    q: Quoted<'_>,
    r: Route,
) -> Result<Verdict, Counter> {
    let (server, host) = (get_u32(q.ip, IP_SRC), get_u32(q.ip, IP_DST));
    if host != pkt.src {
        return Err(Counter::DropIcmpErrorNoSession);
    }
    let ext_call_id = if q.proto == IPPROTO_GRE {
        let call = PptpClientKey {
            int_addr: host,
            rem_addr: server,
            call_id: get_u16(q.l4, GRE_CALL_ID),
            _pad: 0,
        };
        // SAFETY: map value pointer from a successful lookup, read at once.
        let Some(ext) = PPTP_CALLS_OUT
            .get_ptr(&call)
            .map(|c| unsafe { (*c).ext_call_id })
        else {
            return Err(Counter::DropIcmpErrorNoSession);
        };
        Some(ext)
    } else {
        let sa = EspKey {
            int_addr: 0,
            rem_addr: server,
            spi: get_u32(q.l4, 0),
        };
        // SAFETY: map value pointer from a successful lookup, read at once.
        if ESP_IN.get_ptr(&sa).map(|o| unsafe { (*o).int_addr }) != Some(host) {
            return Err(Counter::DropIcmpErrorNoSession);
        }
        None
    };
    rewrite_addr(pkt.ip, Side::Source, cfg.wan_addr);
    rewrite_quoted_addr(q.icmp, q.ip, Side::Destination, cfg.wan_addr);
    if let Some(ext) = ext_call_id {
        // GRE v1 has no checksum of its own: only the ICMP one covers the id.
        let old = get_u16(q.l4, GRE_CALL_ID);
        set_u16(q.l4, GRE_CALL_ID, ext);
        let check = replace_u16(get_u16(q.icmp, ICMP_CHECK), old, ext);
        set_u16(q.icmp, ICMP_CHECK, check);
    }
    count(Counter::IcmpErrorTranslated);
    deliver_out(&mut pkt, r)
}

/// LAN -> WAN: a LAN host's error about a packet it received through the NAT (quoted
/// destination: the LAN host and its port), e.g. port unreachable.
#[inline(always)]
pub fn error_out(
    ctx: &XdpContext,
    cfg: &NatConfig,
    mut pkt: Ipv4<'_>,
    r: Route,
) -> Result<Verdict, Counter> {
    let Some(q) = quoted(ctx, &pkt)? else {
        return Err(Counter::DropUnsupportedProto);
    };
    if q.proto == IPPROTO_GRE || q.proto == IPPROTO_ESP {
        return peer_error_out(cfg, pkt, q, r);
    }
    let (ep, ext_port) = quoted_destination_port(&q)?;
    if ep.addr != pkt.src {
        return Err(Counter::DropIcmpErrorNoSession);
    }
    rewrite_addr(pkt.ip, Side::Source, cfg.wan_addr);
    rewrite_quoted(
        q.icmp,
        q.ip,
        q.l4,
        q.proto,
        Side::Destination,
        cfg.wan_addr,
        ext_port,
    );
    count(Counter::IcmpErrorTranslated);
    deliver_out(&mut pkt, r)
}

/// LAN -> the WAN address: a LAN host's error about a hairpinned packet it received (quoted:
/// from the WAN address and another LAN host's external port, to this host). It goes back to
/// that other host, quoting the packet as that host sent it (RFC 5508 REQ-7).
#[inline(always)]
pub fn error_hairpin(
    ctx: &XdpContext,
    cfg: &NatConfig,
    mut pkt: Ipv4<'_>,
) -> Result<Verdict, Counter> {
    let Some(q) = quoted(ctx, &pkt)? else {
        return Ok(Verdict::pass(Counter::PassToRouter));
    };
    if get_u32(q.ip, IP_SRC) != cfg.wan_addr || (q.proto != IPPROTO_TCP && q.proto != IPPROTO_UDP) {
        // Not about a hairpinned TCP/UDP packet: the router's.
        return Ok(Verdict::pass(Counter::PassToRouter));
    }
    // The original sender, by its external port.
    let sender = quoted_source_mapping(&q)?;
    // The erroring host's own external port.
    let (me, my_ext) = quoted_destination_mapping(&q)?;
    let session = SessionKey::new(
        q.proto,
        sender.int_addr,
        sender.int_port,
        cfg.wan_addr,
        my_ext,
    );
    if sender.state != MAPPING_ACTIVE || me.addr != pkt.src || SESSIONS.get_ptr(&session).is_none()
    {
        return Err(Counter::DropIcmpErrorNoSession);
    }
    let r = crate::forward::route(ctx, cfg.wan_addr, sender.int_addr, pkt.tos, pkt.tot_len);
    if let Route::NotForwarded = r {
        return Ok(Verdict::pass(Counter::PassToRouter));
    }
    if r.ifindex() != Some(cfg.lan_ifindex) {
        return Err(Counter::DropInboundNotToLan);
    }
    rewrite_addr(pkt.ip, Side::Source, cfg.wan_addr);
    rewrite_addr(pkt.ip, Side::Destination, sender.int_addr);
    rewrite_quoted(
        q.icmp,
        q.ip,
        q.l4,
        q.proto,
        Side::Source,
        sender.int_addr,
        sender.int_port,
    );
    rewrite_quoted(
        q.icmp,
        q.ip,
        q.l4,
        q.proto,
        Side::Destination,
        cfg.wan_addr,
        my_ext,
    );
    count(Counter::IcmpErrorTranslated);
    // Back out of the LAN side, counted with the outbound traffic.
    deliver_out(&mut pkt, r)
}

/// Leaving the WAN (the egress last line): an ICMP error the router itself made. One that
/// quotes a packet translated to a LAN host (the kernel could not deliver a reply, say) gets
/// the quoted destination translated back to the WAN address and external port, as conntrack
/// does; one that quotes a LAN address no mapping explains is dropped. Ok(None): it quotes no
/// LAN address, and leaves as it is.
#[inline(always)]
pub fn error_egress(
    ctx: &impl Frame,
    cfg: &NatConfig,
    pkt: &Ipv4<'_>,
) -> Result<Option<Counter>, Counter> {
    // The quoted IPv4 addresses, as far as the error quotes them.
    let at = pkt.l4_offset + ICMP_HDR_LEN;
    let quoted_addr = |field: usize| -> Option<u32> {
        if pkt.l4_len < ICMP_HDR_LEN + field + 4 {
            return None;
        }
        let a: *const [u8; 4] = ptr_at(ctx, at + field).ok()?;
        // SAFETY: bounds-checked by ptr_at.
        Some(u32::from_ne_bytes(unsafe { *a }))
    };
    let lan = |a: Option<u32>| a.is_some_and(|a| lan_side(cfg, a).is_lan());
    let (src_lan, dst_lan) = (lan(quoted_addr(IP_SRC)), lan(quoted_addr(IP_DST)));
    if !src_lan && !dst_lan {
        return Ok(None);
    }
    if src_lan {
        // About a packet from the LAN side: its error belongs on the LAN, never out here.
        return Err(Counter::DropEgressLanQuoted);
    }
    // About a packet from outside that was translated to a LAN host.
    let Some(q) = quoted(ctx, pkt)? else {
        return Err(Counter::DropEgressLanQuoted);
    };
    let (_, ext_port) = quoted_destination_port(&q).map_err(|_| Counter::DropEgressLanQuoted)?;
    rewrite_quoted(
        q.icmp,
        q.ip,
        q.l4,
        q.proto,
        Side::Destination,
        cfg.wan_addr,
        ext_port,
    );
    Ok(Some(Counter::EgressIcmpErrorTranslated))
}
