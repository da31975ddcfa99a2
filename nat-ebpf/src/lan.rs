//! LAN ingress: source NAT of traffic the kernel would route out of the WAN interface.

use aya_ebpf::{helpers::generated::bpf_check_mtu, programs::XdpContext};
use core::ops::ControlFlow::{self, Break, Continue};
use nat_common::{
    config::NatConfig,
    counters::{ClassCounters, Counter},
    maps::{EndpointKey, SESSION_FORWARDED, SESSION_OUTBOUND, SessionKey},
    passthrough::{CLASS_NONE, CLASS_PPTP, IKE_PORT, classify},
    proto::{
        ICMP_ECHO_REQUEST, IPPROTO_AH, IPPROTO_ESP, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_UDP,
        is_icmp_error,
    },
    rewrite::{L4, Side, rewrite_endpoint},
};

use crate::{
    Verdict, fast,
    forward::{Route, deliver_out, route},
    frag,
    gate::gate,
    hairpin, icmp_error,
    lan_side::{LanSide, lan_side},
    maps::{config, count, now, port_in_pool},
    mss,
    packet::{Ipv4, Transport, icmp_type, parse_ipv4, parse_transport, ptr_at},
    state::{
        forwarded_port, is_tunnel_server, mac_owner, mapping_for, new_session, refresh_outbound,
        touch_outbound,
    },
    vpn,
};

/// The LAN program: guard, what is not ours, classify and gate, state, rewrite, deliver.
pub fn try_nat_lan(ctx: &XdpContext) -> Result<Verdict, Counter> {
    let cfg = config().ok_or(Counter::DropNoConfig)?;
    let Some(mut pkt) = parse_ipv4(ctx)? else {
        return Ok(Verdict::pass(Counter::PassNotIpv4));
    };
    fast::prefetch_outbound(ctx, cfg, &pkt);
    if let Break(v) = guard_source(ctx, cfg, &pkt)? {
        return Ok(v);
    }
    let now = now();
    // A LAN host talking to the WAN address: hairpinning, or the router itself.
    if pkt.dst == cfg.wan_addr && !pkt.fragment {
        return hairpin::try_hairpin(ctx, cfg, pkt, now);
    }
    if let Some(v) = fast::outbound(ctx, cfg, &mut pkt, now)? {
        return Ok(v);
    }
    let r = match towards_wan(ctx, cfg, &pkt)? {
        Continue(r) => r,
        Break(not_ours) => return Ok(not_ours),
    };
    if pkt.later_fragment {
        return frag::later_out(pkt, r, now);
    }
    no_ip_options(&pkt)?;
    if matches!(pkt.proto, IPPROTO_GRE | IPPROTO_ESP | IPPROTO_AH) {
        return tunnel_out(ctx, cfg, pkt, r, now);
    }
    let Some(mut t) = parse_transport(ctx, &pkt, ICMP_ECHO_REQUEST)? else {
        if icmp_type(ctx, &pkt).is_some_and(is_icmp_error) {
            return icmp_error::error_out(ctx, cfg, pkt, r);
        }
        return Err(Counter::DropUnsupportedProto);
    };
    // A server behind a port forward answers from its forwarded port, and what it sends is
    // not passthrough (docs/forwarding.md).
    let forwarded = if pkt.proto == IPPROTO_ICMP {
        0
    } else {
        forwarded_port(pkt.proto, pkt.src, t.sport)
    };
    // Classify and gate: a class switched off goes no further.
    let class = if pkt.proto == IPPROTO_ICMP || forwarded != 0 {
        CLASS_NONE
    } else {
        classify(pkt.proto, u16::from_be(t.dport))
    };
    let class_counters = gate(class)?;
    remember_first_fragment(ctx, &pkt, cfg, now)?;
    // State: the mapping and the session.
    let shared_ike = forwarded == 0 && shares_ike_port(ctx, &pkt, &t);
    let ext_port = outbound_state(ctx, cfg, &pkt, &t, (shared_ike, forwarded), class, now)
        .inspect_err(|_| {
            if let Some(ClassCounters { alloc_fail, .. }) = class_counters {
                count(alloc_fail);
            }
        })?;
    // Rewrite and deliver.
    if let L4::Tcp(ref mut tcp) = t.l4 {
        mss::clamp(ctx, &pkt, tcp, cfg.mss_clamp);
    }
    rewrite_endpoint(pkt.ip, &mut t.l4, Side::Source, cfg.wan_addr, ext_port);
    if let Some(ClassCounters { translated, .. }) = class_counters {
        count(translated);
    }
    // PPTP control messages are read once the segment is translated (vpn::pptp_followup).
    deliver_out(&mut pkt, r).map(|v| v.pptp_followup(class == CLASS_PPTP))
}

/// BCP 38, whatever the destination (the router itself included): only LAN-side sources get
/// in, and none that claims to be the router; a DHCP client without an address yet goes to
/// the router (dhcp_client), and nowhere else.
#[inline(always)]
fn guard_source(
    ctx: &XdpContext,
    cfg: &NatConfig,
    pkt: &Ipv4<'_>,
) -> Result<ControlFlow<Verdict>, Counter> {
    match lan_side(cfg, pkt.src) {
        LanSide::Host => Ok(Continue(())),
        LanSide::Router => Err(Counter::DropLanSourceRouter),
        LanSide::Outside => dhcp_client(ctx, pkt).map(Break),
    }
}

/// The route of a packet the kernel would send out of the WAN interface, which is ours to
/// translate; for anything else, the verdict that hands it to the kernel.
#[inline(always)]
fn towards_wan(
    ctx: &XdpContext,
    cfg: &NatConfig,
    pkt: &Ipv4<'_>,
) -> Result<ControlFlow<Verdict, Route>, Counter> {
    let r = route(ctx, pkt.src, pkt.dst, pkt.tos, pkt.tot_len);
    if r.ifindex() != Some(cfg.wan_ifindex) {
        return Ok(Break(Verdict::pass(Counter::PassNotToWan)));
    }
    if pkt.ttl <= 1 {
        // The kernel answers with Time Exceeded to the LAN host; it never forwards it.
        return Ok(Break(Verdict::pass(Counter::PassTtlExceeded)));
    }
    if let Route::Kernel { too_big: true, .. } = r {
        // Over the WAN link's MTU, the kernel refuses a DF packet: it sends Fragmentation
        // Needed to the LAN host and forwards nothing. Within it (the lookup saw a smaller
        // path MTU the router learned), the kernel would forward it, by the link MTU: it is
        // translated first, and a hop beyond answers if it is too big for the path.
        if pkt.dont_fragment && over_link_mtu(ctx, cfg.wan_ifindex, pkt.tot_len) {
            return Ok(Break(Verdict::pass(Counter::PassFragNeeded)));
        }
    }
    Ok(Continue(r))
}

/// IP options: record route, timestamps and source routes name addresses, and a LAN host's
/// own, recorded in them, would leave the WAN inside the header. They are not parsed (a walk
/// through the option list multiplies what the verifier explores past the program's limit):
/// a LAN packet with any option does not leave.
#[inline(always)]
fn no_ip_options(pkt: &Ipv4<'_>) -> Result<(), Counter> {
    // SAFETY: a byte of the header parse_ipv4 checked. (verifier: volatile, see fast.rs.)
    if unsafe { core::ptr::read_volatile(&pkt.ip[0]) } != IPV4_NO_OPTIONS {
        return Err(Counter::DropIpOptions);
    }
    Ok(())
}

/// GRE and ESP out (PPTP and IPsec passthrough, vpn.rs), gated by their class; AH cannot
/// cross a NAT (it signs the addresses) and is dropped.
#[inline(always)]
fn tunnel_out(
    ctx: &XdpContext,
    cfg: &NatConfig,
    pkt: Ipv4<'_>,
    r: Route,
    now: u64,
) -> Result<Verdict, Counter> {
    if pkt.proto == IPPROTO_AH {
        return Err(Counter::DropAh);
    }
    if is_tunnel_server(pkt.proto, pkt.src) {
        // A VPN server behind a forward of its protocol: not passthrough.
        remember_first_fragment(ctx, &pkt, cfg, now)?;
        return vpn::tunnel_out(cfg.wan_addr, pkt, r, now);
    }
    gate(classify(pkt.proto, 0))?;
    remember_first_fragment(ctx, &pkt, cfg, now)?;
    match pkt.proto {
        IPPROTO_GRE => vpn::gre_out(ctx, cfg.wan_addr, pkt, r),
        _ => vpn::esp_out(ctx, cfg.wan_addr, pkt, r, now),
    }
}

/// IKE from port 500 to port 500 shares the external port 500 (told apart by SPI on the way
/// back) when the router itself does not use it. An ALG never drops what it cannot parse:
/// 500 to 500 that is not IKE takes ordinary NAPT (an ordinary port, never the shared 500).
#[inline(always)]
fn shares_ike_port(ctx: &XdpContext, pkt: &Ipv4<'_>, t: &Transport<'_>) -> bool {
    let ike = IKE_PORT.to_be();
    pkt.proto == IPPROTO_UDP
        && t.sport == ike
        && t.dport == ike
        && port_in_pool(ike)
        && vpn::is_ike(ctx, pkt)
}

/// The external port of an outbound TCP, UDP or ICMP packet: its session's, or for a new
/// session a mapping's (made if the endpoint has none), port 500 for IKE that shares it
/// (`shared.0`), or the forwarded port of a forwarded LAN endpoint (`shared.1`, 0 if not).
// verifier: `shared_ike` is decided by the caller; decided here, between the state's
// branches, the LAN program took 0.43 M instructions to verify instead of 0.28 M.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn outbound_state(
    ctx: &XdpContext,
    cfg: &NatConfig,
    pkt: &Ipv4<'_>,
    t: &Transport<'_>,
    (shared_ike, forwarded): (bool, u16),
    class: u8,
    now: u64,
) -> Result<u16, Counter> {
    let ike = IKE_PORT.to_be();
    let session = SessionKey::new(pkt.proto, pkt.src, t.sport, pkt.dst, t.dport);
    if shared_ike {
        vpn::ike_out(ctx, pkt, now).and_then(|()| {
            touch_outbound(
                ctx,
                &session,
                ike,
                t.tcp_flags,
                class,
                now,
                SESSION_OUTBOUND,
            )
            .map(|()| ike)
        })
    } else if let Some(ext_port) = refresh_outbound(&session, t.tcp_flags, now) {
        Ok(ext_port)
    } else if forwarded != 0 {
        new_session(
            ctx,
            &session,
            forwarded,
            t.tcp_flags,
            class,
            now,
            SESSION_FORWARDED,
        )
        .map(|()| forwarded)
    } else {
        let ep = EndpointKey {
            addr: pkt.src,
            port: t.sport,
            proto: pkt.proto,
            _pad: 0,
        };
        mapping_for(ctx, cfg, &ep, now).and_then(|ext_port| {
            new_session(
                ctx,
                &session,
                ext_port,
                t.tcp_flags,
                class,
                now,
                SESSION_OUTBOUND,
            )
            .map(|()| ext_port)
        })
    }
}

/// DHCP client port and server port (RFC 2131).
const DHCP_CLIENT_PORT: u16 = 68;
const DHCP_SERVER_PORT: u16 = 67;

/// A LAN packet from outside the LAN prefixes: dropped (BCP 38), except a DHCP client's
/// request from 0.0.0.0 (it has no address yet), which goes to the router.
#[inline(always)]
fn dhcp_client(ctx: &XdpContext, pkt: &Ipv4<'_>) -> Result<Verdict, Counter> {
    if pkt.src != 0 || pkt.proto != IPPROTO_UDP || pkt.fragment {
        return Err(Counter::DropLanSourceForeign);
    }
    // verifier: no check of l4_len first; with it, LLVM proves ptr_at's check redundant
    // (from parse_ipv4's length checks) and drops it, which the verifier cannot follow.
    let udp: *const [u8; 4] = ptr_at(ctx, pkt.l4_offset)?;
    // SAFETY: bounds-checked by ptr_at.
    let ports = unsafe { *udp };
    let (sport, dport) = (
        u16::from_be_bytes([ports[0], ports[1]]),
        u16::from_be_bytes([ports[2], ports[3]]),
    );
    if (sport, dport) == (DHCP_CLIENT_PORT, DHCP_SERVER_PORT) {
        Ok(Verdict::pass(Counter::PassDhcpClient))
    } else {
        Err(Counter::DropLanSourceForeign)
    }
}

/// Is an IPv4 packet of `tot_len` bytes longer than the MTU of interface `ifindex`? (The IP
/// length, not the frame's: Ethernet padding must not make a packet "too big".)
#[inline(always)]
fn over_link_mtu(ctx: &XdpContext, ifindex: u32, tot_len: u16) -> bool {
    let mut mtu_len = u32::from(tot_len);
    // SAFETY: the program's own context; mtu_len is a valid out-parameter.
    let ret = unsafe { bpf_check_mtu(ctx.ctx.cast(), ifindex, &mut mtu_len, 0, 0) };
    ret != BPF_MTU_CHK_RET_SUCCESS
}

/// bpf_check_mtu's answer when the frame fits (enum bpf_check_mtu_ret).
const BPF_MTU_CHK_RET_SUCCESS: i64 = 0;

/// A first fragment about to be translated: the fragments that follow get the same source
/// address. Only once the packet passed every check that could drop it, so that the later
/// fragments of a dropped one (AH, a class switched off) are dropped too.
#[inline(always)]
fn remember_first_fragment(
    ctx: &XdpContext,
    pkt: &Ipv4<'_>,
    cfg: &NatConfig,
    now: u64,
) -> Result<(), Counter> {
    if pkt.fragment {
        frag::remember(pkt, cfg.wan_addr, mac_owner(ctx, cfg, pkt.src), now)?;
    }
    Ok(())
}

/// Version 4, header length 5 words: an IPv4 header without options.
const IPV4_NO_OPTIONS: u8 = 0x45;
