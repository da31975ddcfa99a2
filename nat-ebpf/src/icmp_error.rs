//! ICMP errors about translated flows (RFC 5508 REQ-3..7): the outer address, the quoted
//! IPv4 header and the quoted ports or echo id are translated, every checksum fixed. An
//! error matches an existing session or is dropped; it never creates or refreshes one.

use aya_ebpf::programs::XdpContext;
use nat_common::{
    checksum::{fold, sum_bytes_fixed},
    config::NatConfig,
    counters::Counter,
    maps::{EndpointKey, ExternalKey, MAPPING_ACTIVE, Mapping, SessionKey},
    proto::{ICMP_ECHO_REQUEST, ICMP_HDR_LEN, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    rewrite::{ICMP_ID, IP_DST, IP_SRC, Side, get_u16, get_u32, rewrite_addr, rewrite_quoted},
};

use crate::{
    Verdict,
    forward::{Route, deliver_in, deliver_out, route_in},
    lan_side::lan_side,
    maps::{MAPPINGS_IN, MAPPINGS_OUT, SESSIONS, count},
    packet::{Frame, Ipv4, ptr_at},
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
/// quoted packet came from.
#[inline(always)]
fn quoted_source_mapping(q: &Quoted<'_>) -> Result<Mapping, Counter> {
    let ext = ExternalKey {
        port: quoted_port(q, Side::Source),
        proto: q.proto,
        _pad: 0,
    };
    let m = MAPPINGS_IN
        .get_ptr(&ext)
        .ok_or(Counter::DropIcmpErrorNoSession)?;
    // SAFETY: map value pointer from a successful lookup, copied at once.
    Ok(unsafe { *m })
}

/// The quoted packet's destination (a LAN host and its port) and that endpoint's external
/// port: the LAN host that received the quoted packet, and is now sending the error.
#[inline(always)]
fn quoted_destination_port(q: &Quoted<'_>) -> Result<(EndpointKey, u16), Counter> {
    let ep = EndpointKey {
        addr: get_u32(q.ip, IP_DST),
        port: quoted_port(q, Side::Destination),
        proto: q.proto,
        _pad: 0,
    };
    let m = MAPPINGS_OUT
        .get_ptr(&ep)
        .ok_or(Counter::DropIcmpErrorNoSession)?;
    // SAFETY: map value pointer from a successful lookup.
    Ok((ep, unsafe { (*m).ext_port }))
}

/// WAN -> LAN: an error about a packet we sent out (quoted source: the WAN address and an
/// external port), from the remote or from any router on the way (traceroute, PMTU).
#[inline(always)]
pub fn error_in(ctx: &XdpContext, cfg: &NatConfig, mut pkt: Ipv4<'_>) -> Result<Verdict, Counter> {
    let Some(q) = quoted(ctx, &pkt)? else {
        return Ok(Verdict::pass(Counter::PassIcmpToRouter));
    };
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
    let (ep, ext_port) = quoted_destination_port(&q)?;
    let (int_addr, int_port) = (ep.addr, ep.port);
    let session = SessionKey::new(
        q.proto,
        int_addr,
        int_port,
        get_u32(q.ip, IP_SRC),
        quoted_port(&q, Side::Source),
    );
    if int_addr != pkt.src || SESSIONS.get_ptr(&session).is_none() {
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
    if get_u32(q.ip, IP_SRC) != cfg.wan_addr || q.proto == IPPROTO_ICMP {
        // Not about a hairpinned TCP/UDP packet: the router's.
        return Ok(Verdict::pass(Counter::PassToRouter));
    }
    // The original sender, by its external port.
    let sender = quoted_source_mapping(&q)?;
    // The erroring host's own external port.
    let (me, my_ext) = quoted_destination_port(&q)?;
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
