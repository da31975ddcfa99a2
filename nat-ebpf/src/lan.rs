//! LAN ingress: source NAT of traffic the kernel would route out of the WAN interface.

use aya_ebpf::programs::XdpContext;
use nat_common::{
    counters::Counter,
    maps::{EndpointKey, SessionKey},
    passthrough::{CLASS_NONE, CLASS_PPTP, IKE_PORT, classify},
    proto::{
        ICMP_ECHO_REQUEST, IPPROTO_AH, IPPROTO_ESP, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_UDP,
        in_prefix, is_icmp_error,
    },
    rewrite::{L4, Side, rewrite_endpoint},
};

use crate::{
    Verdict, fast,
    forward::{Route, deliver_out, next_hop, route},
    frag, hairpin, icmp_error,
    maps::{config, count, now, port_in_pool, switch_on},
    mss,
    packet::{icmp_type, parse_ipv4, parse_transport},
    state::{mapping_for, refresh_outbound, touch_outbound},
    vpn,
};

pub fn try_nat_lan(ctx: &XdpContext) -> Result<Verdict, Counter> {
    let cfg = config().ok_or(Counter::DropNoConfig)?;
    let Some(mut pkt) = parse_ipv4(ctx)? else {
        return Ok(Verdict::pass(Counter::PassNotIpv4));
    };
    let now = now();
    // A LAN host talking to the WAN address: hairpinning, or the router itself.
    if pkt.dst == cfg.wan_addr && !pkt.fragment && in_prefix(pkt.src, cfg.lan_net, cfg.lan_mask) {
        return hairpin::try_hairpin(ctx, cfg, pkt, now);
    }
    if let Some(v) = fast::outbound(ctx, cfg, &mut pkt, now)? {
        return Ok(v);
    }
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
    if pkt.later_fragment {
        return frag::later_out(pkt, r, now);
    }
    if pkt.fragment {
        // A first fragment: the ones that follow get the same source address.
        frag::remember(&pkt, cfg.wan_addr, now)?;
    }
    if matches!(pkt.proto, IPPROTO_GRE | IPPROTO_ESP | IPPROTO_AH) {
        let class = classify(pkt.proto, 0);
        if let Some((_, off, _)) = Counter::for_class(class) {
            if !switch_on(class) {
                return Err(off);
            }
        }
        return match pkt.proto {
            IPPROTO_GRE => vpn::gre_out(ctx, cfg.wan_addr, pkt, r),
            IPPROTO_ESP => vpn::esp_out(ctx, cfg.wan_addr, pkt, r, now),
            _ => Err(Counter::DropAh),
        };
    }
    let Some(mut t) = parse_transport(ctx, &pkt, ICMP_ECHO_REQUEST)? else {
        if icmp_type(ctx, &pkt).is_some_and(is_icmp_error) {
            return icmp_error::error_out(ctx, cfg, pkt, r);
        }
        return Err(Counter::DropUnsupportedProto);
    };
    let class = if pkt.proto == IPPROTO_ICMP {
        CLASS_NONE
    } else {
        classify(pkt.proto, u16::from_be(t.dport))
    };
    let class_counters = Counter::for_class(class);
    if let Some((_, off, _)) = class_counters {
        if !switch_on(class) {
            return Err(off);
        }
    }
    let ike = IKE_PORT.to_be();
    // IKE from port 500 to port 500 shares the external port 500 (told apart by SPI on the
    // way back) when the router itself does not use it.
    let shared_ike =
        pkt.proto == IPPROTO_UDP && t.sport == ike && t.dport == ike && port_in_pool(ike);
    let session = SessionKey::new(pkt.proto, pkt.src, t.sport, pkt.dst, t.dport);
    // Kept in the session for the fast path of the packets that follow.
    let hop = next_hop(&r, cfg, pkt.tot_len, now);
    let state = if shared_ike {
        vpn::ike_out(ctx, &pkt, now).and_then(|()| {
            touch_outbound(&session, ike, t.tcp_flags, class, &hop, now).map(|()| ike)
        })
    } else if let Some(ext_port) = refresh_outbound(&session, t.tcp_flags, &hop, now) {
        Ok(ext_port)
    } else {
        let ep = EndpointKey {
            addr: pkt.src,
            port: t.sport,
            proto: pkt.proto,
            _pad: 0,
        };
        mapping_for(cfg, &ep, now).and_then(|ext_port| {
            touch_outbound(&session, ext_port, t.tcp_flags, class, &hop, now).map(|()| ext_port)
        })
    };
    let ext_port = match state {
        Ok(p) => p,
        Err(e) => {
            if let Some((_, _, alloc_fail)) = class_counters {
                count(alloc_fail);
            }
            return Err(e);
        }
    };
    if let L4::Tcp(ref mut tcp) = t.l4 {
        mss::clamp(ctx, &pkt, tcp, cfg.mss_clamp);
        if class == CLASS_PPTP {
            vpn::pptp_control(ctx, &pkt, tcp, pkt.src, pkt.dst, true, now)?;
        }
    }

    rewrite_endpoint(pkt.ip, &mut t.l4, Side::Source, cfg.wan_addr, ext_port);
    if let Some((translated, _, _)) = class_counters {
        count(translated);
    }
    deliver_out(&mut pkt, r)
}
