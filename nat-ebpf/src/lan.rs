//! LAN ingress: source NAT of traffic the kernel would route out of the WAN interface.

use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, programs::XdpContext};
use nat_common::{
    counters::Counter,
    maps::{EndpointKey, SessionKey},
    proto::{ICMP_ECHO_REQUEST, IPPROTO_ICMP, in_prefix},
    rewrite::{Side, decrement_ttl, rewrite_endpoint},
};

use crate::{
    Verdict,
    forward::{Route, XDP_PASS, redirect, route},
    maps::config,
    packet::{parse_ipv4, parse_transport},
    state::{mapping_for, touch_outbound},
};

pub fn try_nat_lan(ctx: &XdpContext) -> Result<Verdict, Counter> {
    let cfg = config().ok_or(Counter::DropNoConfig)?;
    let Some(pkt) = parse_ipv4(ctx)? else {
        return Ok(Verdict::pass(Counter::PassNotIpv4));
    };
    // Only what the kernel would send out of the WAN interface is ours to translate.
    let r = route(ctx, pkt.src, pkt.dst, pkt.tos, pkt.tot_len);
    if r.ifindex() != Some(cfg.wan_ifindex) {
        return Ok(Verdict::pass(Counter::PassNotToWan));
    }
    if pkt.ttl <= 1 {
        // The kernel answers with Time Exceeded to the LAN host; it never forwards it.
        return Ok(Verdict::pass(Counter::PassTtlExceeded));
    }
    if let Route::Kernel { too_big: true, .. } = r {
        if pkt.dont_fragment {
            // The kernel sends Fragmentation Needed to the LAN host and forwards nothing.
            return Ok(Verdict::pass(Counter::PassFragNeeded));
        }
    }
    if !in_prefix(pkt.src, cfg.lan_net, cfg.lan_mask) {
        return Err(Counter::DropLanSourceForeign);
    }
    if pkt.fragment {
        return Err(Counter::DropOutboundFragment);
    }
    let Some(t) = parse_transport(ctx, &pkt, ICMP_ECHO_REQUEST)? else {
        return Err(Counter::DropUnsupportedProto);
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let ep = EndpointKey {
        addr: pkt.src,
        port: t.sport,
        proto: pkt.proto,
        _pad: 0,
    };
    let ext_port = mapping_for(cfg, &ep, now)?;
    let session = SessionKey {
        int_addr: pkt.src,
        rem_addr: pkt.dst,
        int_port: t.sport,
        rem_port: if pkt.proto == IPPROTO_ICMP {
            0
        } else {
            t.dport
        },
        proto: pkt.proto,
        _pad: [0; 3],
    };
    touch_outbound(&session, ext_port, t.tcp_flags, now)?;

    rewrite_endpoint(pkt.ip, t.l4, Side::Source, cfg.wan_addr, ext_port);
    match r {
        Route::Resolved {
            ifindex,
            smac,
            dmac,
        } => {
            decrement_ttl(pkt.ip);
            let action = redirect(pkt.eth, ifindex, &smac, &dmac)?;
            Ok(Verdict::new(action, Counter::OutRedirected))
        }
        // The kernel forwards (and decrements TTL, and fragments when needed).
        _ => Ok(Verdict::new(XDP_PASS, Counter::OutPassKernel)),
    }
}
