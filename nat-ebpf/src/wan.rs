//! WAN ingress: reverse translation of replies to the WAN address, and the guard that keeps
//! anything unsolicited off the LAN.

use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, programs::XdpContext};
use nat_common::{
    config::{FILTER_ADDRESS_DEPENDENT, FILTER_ENDPOINT_INDEPENDENT, NatConfig},
    counters::Counter,
    maps::{ExternalKey, MAPPING_ACTIVE, SessionKey},
    proto::{
        ICMP_ECHO_REPLY, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, in_prefix, is_martian_source,
    },
    rewrite::{Side, decrement_ttl, rewrite_endpoint},
    tcp_state::{self, Direction},
};

use crate::{
    Verdict,
    forward::{Route, XDP_PASS, redirect, route},
    maps::{FILTERS, MAPPINGS_IN, SESSIONS, config, port_in_pool},
    packet::{parse_ipv4, parse_transport},
};

pub fn try_nat_wan(ctx: &XdpContext) -> Result<Verdict, Counter> {
    let cfg = config().ok_or(Counter::DropNoConfig)?;
    let Some(pkt) = parse_ipv4(ctx)? else {
        return Ok(Verdict::pass(Counter::PassNotIpv4));
    };
    // Spoofed LAN or martian sources go first: not even the router answers them.
    if in_prefix(pkt.src, cfg.lan_net, cfg.lan_mask) || is_martian_source(u32::from_be(pkt.src)) {
        return Err(Counter::DropMartianSource);
    }
    if in_prefix(pkt.dst, cfg.lan_net, cfg.lan_mask) {
        return Err(Counter::DropToLanAddress);
    }
    if pkt.dst != cfg.wan_addr {
        return Ok(Verdict::pass(Counter::PassToRouter));
    }
    if pkt.fragment {
        // Addressed to the router: the kernel reassembles it locally, nothing reaches the LAN.
        return Ok(Verdict::pass(Counter::PassInboundFragment));
    }
    let Some(t) = parse_transport(ctx, &pkt, ICMP_ECHO_REPLY)? else {
        // Other protocols and ICMP types to the WAN address belong to the router.
        return Ok(Verdict::pass(if pkt.proto == IPPROTO_ICMP {
            Counter::PassIcmpToRouter
        } else {
            Counter::PassToRouter
        }));
    };
    let icmp = pkt.proto == IPPROTO_ICMP;
    // The external port (ICMP: the echo id) and the remote port.
    let (ext_port, rem_port) = if icmp {
        (t.sport, 0)
    } else {
        (t.dport, t.sport)
    };
    if !port_in_pool(ext_port) {
        return Ok(Verdict::pass(if icmp {
            Counter::PassIcmpToRouter
        } else {
            Counter::PassToRouter
        }));
    }
    let ext = ExternalKey {
        port: ext_port,
        proto: pkt.proto,
        _pad: 0,
    };
    let Some(m) = MAPPINGS_IN.get_ptr(&ext) else {
        // An echo reply to the router's own ping carries an id from the same space.
        return if icmp {
            Ok(Verdict::pass(Counter::PassIcmpToRouter))
        } else {
            Err(Counter::DropNoMapping)
        };
    };
    // SAFETY: map value pointer from a successful lookup; copied out at once.
    let m = unsafe { *m };
    if m.state != MAPPING_ACTIVE {
        return Err(Counter::DropNoMapping);
    }
    let session = SessionKey {
        int_addr: m.int_addr,
        rem_addr: pkt.src,
        int_port: m.int_port,
        rem_port,
        proto: pkt.proto,
        _pad: [0; 3],
    };
    let now = unsafe { bpf_ktime_get_ns() };
    match SESSIONS.get_ptr_mut(&session) {
        Some(s) => {
            let s = unsafe { &mut *s };
            if s.ext_port != ext_port {
                // A session left from an earlier, released mapping of this endpoint.
                return Err(Counter::DropNoMapping);
            }
            s.last_seen_ns = now;
            if pkt.proto == IPPROTO_TCP {
                s.tcp_state = tcp_state::next(s.tcp_state, Direction::Inbound, t.tcp_flags);
            }
        }
        None if pkt.proto == IPPROTO_TCP => return Err(Counter::DropUnsolicitedTcp),
        None if pkt.proto == IPPROTO_UDP && filter_allows(cfg, &session) => {}
        None => return Err(Counter::DropFiltered),
    }
    if pkt.ttl <= 1 {
        return Err(Counter::DropInboundTtl);
    }
    let r = route(ctx, pkt.src, m.int_addr, pkt.tos, pkt.tot_len);
    if let Route::Kernel { too_big: true, .. } = r {
        if pkt.dont_fragment {
            // The kernel's Fragmentation Needed would quote the LAN address to the WAN.
            return Err(Counter::DropInboundTooBig);
        }
    }
    rewrite_endpoint(pkt.ip, t.l4, Side::Destination, m.int_addr, m.int_port);
    match r {
        Route::Resolved {
            ifindex,
            smac,
            dmac,
        } => {
            decrement_ttl(pkt.ip);
            let action = redirect(pkt.eth, ifindex, &smac, &dmac)?;
            Ok(Verdict::new(action, Counter::InRedirected))
        }
        _ => Ok(Verdict::new(XDP_PASS, Counter::InPassKernel)),
    }
}

/// RFC 4787 REQ-8 for a UDP packet from a remote port the mapping has not sent to.
#[inline(always)]
fn filter_allows(cfg: &NatConfig, session: &SessionKey) -> bool {
    match cfg.filtering {
        FILTER_ENDPOINT_INDEPENDENT => true,
        FILTER_ADDRESS_DEPENDENT => FILTERS.get_ptr(&session.filter_key()).is_some(),
        _ => false,
    }
}
