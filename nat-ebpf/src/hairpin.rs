//! Hairpinning (RFC 4787 REQ-9, RFC 5382 REQ-8, RFC 7857 section 2.4): a LAN host that
//! sends to the WAN address and another LAN host's external port reaches that host, seeing
//! the sender's external address and port, as a host on the WAN would. Done in XDP: source
//! translated by the sender's mapping, destination by the receiver's, sent back into the LAN.
//! Hairpinned packets come from our own side and are not filtered.

use aya_ebpf::programs::XdpContext;
use nat_common::{
    config::NatConfig,
    counters::{ClassCounters, Counter},
    maps::{
        EndpointKey, ExternalKey, MAPPING_ACTIVE, SESSION_FORWARDED, SESSION_OUTBOUND, SessionKey,
    },
    passthrough::classify,
    proto::{ICMP_ECHO_REQUEST, IPPROTO_ICMP, is_icmp_error},
    rewrite::{Side, rewrite_endpoint},
};

use crate::{
    Verdict,
    forward::{Route, deliver_out, route},
    maps::{FORWARDS, MAPPINGS_IN, count, port_in_pool, switch_on},
    packet::{Ipv4, icmp_type, parse_transport},
    state::{forwarded_port, mapping_for, touch_outbound},
};

/// A LAN packet addressed to the WAN address.
#[inline(always)]
pub fn try_hairpin(
    ctx: &XdpContext,
    cfg: &NatConfig,
    mut pkt: Ipv4<'_>,
    now: u64,
) -> Result<Verdict, Counter> {
    let Some(mut t) = parse_transport(ctx, &pkt, ICMP_ECHO_REQUEST)? else {
        if icmp_type(ctx, &pkt).is_some_and(is_icmp_error) {
            return crate::icmp_error::error_hairpin(ctx, cfg, pkt);
        }
        return Ok(Verdict::pass(Counter::PassToRouter));
    };
    // Echo requests to the WAN address, and ports the NAT does not own, are the router's.
    if pkt.proto == IPPROTO_ICMP || !port_in_pool(t.dport) {
        return Ok(Verdict::pass(Counter::PassToRouter));
    }
    let ext = ExternalKey {
        port: t.dport,
        proto: pkt.proto,
        _pad: 0,
    };
    // The receiver: a mapping's LAN host, or a port forward's (NAT reflection), which the
    // sender reaches from the WAN address.
    let (target_addr, target_port) = match MAPPINGS_IN.get_ptr(&ext) {
        Some(m) => {
            // SAFETY: map value pointer from a successful lookup, copied at once.
            let m = unsafe { *m };
            if m.state != MAPPING_ACTIVE {
                return Err(Counter::DropNoMapping);
            }
            (m.int_addr, m.int_port)
        }
        None => {
            let Some(f) = FORWARDS.get_ptr(&ext) else {
                return Err(Counter::DropNoMapping);
            };
            // SAFETY: map value pointer from a successful lookup, read at once.
            let f = unsafe { &*f };
            if f.retired != 0 {
                return Err(Counter::DropNoMapping);
            }
            if !f.admits(cfg.wan_addr) {
                return Err(Counter::DropForwardSource);
            }
            (f.int_addr, f.int_port)
        }
    };
    let class = classify(pkt.proto, u16::from_be(t.dport));
    if let Some(ClassCounters {
        switch_off: off, ..
    }) = Counter::for_class(class)
    {
        if !switch_on(class) {
            return Err(off);
        }
    }
    if pkt.ttl <= 1 {
        return Ok(Verdict::pass(Counter::PassTtlExceeded));
    }
    // The sender's own mapping and session, as for any outbound packet.
    let ep = EndpointKey {
        addr: pkt.src,
        port: t.sport,
        proto: pkt.proto,
        _pad: 0,
    };
    // A forwarded LAN endpoint answers from its forwarded port, as it does to the WAN.
    let (ext_src, origin) = match forwarded_port(pkt.proto, pkt.src, t.sport) {
        0 => (mapping_for(ctx, cfg, &ep, now)?, SESSION_OUTBOUND),
        port => (port, SESSION_FORWARDED),
    };
    let session = SessionKey::new(pkt.proto, pkt.src, t.sport, cfg.wan_addr, t.dport);
    touch_outbound(ctx, &session, ext_src, t.tcp_flags, class, now, origin)?;
    let r = route(ctx, cfg.wan_addr, target_addr, pkt.tos, pkt.tot_len);
    if let Route::NotForwarded = r {
        return Ok(Verdict::pass(Counter::PassToRouter));
    }
    // Back into the LAN, or nowhere (a mapping of an address no longer on the LAN side).
    if r.ifindex() != Some(cfg.lan_ifindex) {
        return Err(Counter::DropInboundNotToLan);
    }
    rewrite_endpoint(pkt.ip, &mut t.l4, Side::Source, cfg.wan_addr, ext_src);
    rewrite_endpoint(
        pkt.ip,
        &mut t.l4,
        Side::Destination,
        target_addr,
        target_port,
    );
    count(Counter::HairpinTranslated);
    // Back out of the LAN side, counted with the outbound traffic.
    deliver_out(&mut pkt, r)
}
