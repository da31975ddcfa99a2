//! WAN ingress: reverse translation of replies to the WAN address, and the guard that keeps
//! anything unsolicited off the LAN.

use aya_ebpf::programs::XdpContext;
use core::ops::ControlFlow::{self, Break, Continue};
use nat_common::{
    config::NatConfig,
    counters::{ClassCounters, Counter},
    maps::{ExternalKey, MAPPING_ACTIVE, SessionKey},
    passthrough::{CLASS_IPSEC, CLASS_PPTP, IKE_PORT},
    proto::{
        ICMP_ECHO_REPLY, IPPROTO_ESP, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_UDP, is_icmp_error,
        is_martian_source,
    },
    rewrite::{L4, Side, rewrite_endpoint},
};

use crate::{
    Verdict, fast,
    forward::{deliver_in, next_hop, route, route_in},
    frag,
    gate::gate,
    icmp_error,
    lan_side::lan_side,
    maps::{FORWARDS, MAPPINGS_IN, config, count, now, port_in_pool, switch_on},
    mss,
    packet::{Ipv4, icmp_type, parse_ipv4, parse_transport},
    state::{self, NewFlow},
    vpn,
};

/// The WAN program: guard, what is not ours, the LAN endpoint, state, gate by class, rewrite,
/// deliver.
pub fn try_nat_wan(ctx: &XdpContext) -> Result<Verdict, Counter> {
    let cfg = config().ok_or(Counter::DropNoConfig)?;
    let Some(mut pkt) = parse_ipv4(ctx)? else {
        return Ok(Verdict::pass(Counter::PassNotIpv4));
    };
    fast::prefetch_inbound(ctx, cfg, &pkt);
    if let Break(v) = guard(ctx, cfg, &pkt)? {
        return Ok(v);
    }
    let now = now();
    if pkt.later_fragment {
        return frag::later_in(ctx, pkt, now);
    }
    match pkt.proto {
        IPPROTO_GRE => return vpn::gre_in(ctx, pkt, now),
        IPPROTO_ESP => return vpn::esp_in(ctx, pkt, switch_on(CLASS_IPSEC), now),
        _ => {}
    }
    let Some(mut t) = parse_transport(ctx, &pkt, ICMP_ECHO_REPLY)? else {
        if icmp_type(ctx, &pkt).is_some_and(is_icmp_error) {
            return icmp_error::error_in(ctx, cfg, pkt);
        }
        // Other protocols and ICMP types to the WAN address belong to the router.
        return Ok(to_router(pkt.proto));
    };
    // The external port (ICMP: the echo id) and the remote port.
    let (ext_port, rem_port) = if pkt.proto == IPPROTO_ICMP {
        (t.sport, 0)
    } else {
        (t.dport, t.sport)
    };
    // IKE on the shared port 500 is told apart by the client's SPI; everything else by its
    // mapping.
    let ike = IKE_PORT.to_be();
    let shared_ike = pkt.proto == IPPROTO_UDP && ext_port == ike && rem_port == ike;
    if !shared_ike {
        // A cached flow was filled past every check below (a new configuration retires all
        // entries).
        if let Some(v) = fast::inbound(ctx, cfg, &mut pkt, &mut t, ext_port, rem_port, now)? {
            return Ok(v);
        }
    }
    let to = match lan_endpoint(ctx, cfg, &pkt, ext_port, shared_ike, now)? {
        Continue(to) => to,
        Break(routers) => return Ok(routers),
    };
    let (int_addr, int_port) = (to.addr, to.port);
    // State: the session (or, for UDP, the filter that lets a new remote in; or the port
    // forward that makes one), then the gate of its class.
    let session = SessionKey::new(pkt.proto, int_addr, int_port, pkt.src, rem_port);
    let (class, session_tcp) = state::inbound(
        cfg,
        &session,
        (ext_port, to.first_remote),
        t.tcp_flags,
        to.new,
        now,
    )?;
    let class_counters = gate(class)?;
    let r = route_in(ctx, &pkt, int_addr)?;
    if let (Some(tcp_state), false) = (session_tcp, shared_ike) {
        // For the fast path of the replies that follow (a route the FIB did not resolve
        // gives no next hop, and caches nothing: flow_cache::fill).
        let hop = next_hop(&r, cfg, pkt.tot_len, now);
        state::keep_reply_flow(cfg, &session, ext_port, class, tcp_state, &hop);
    }
    // The fragments that follow, of a session only: a datagram the filter let in without one
    // creates no state (nothing from the WAN does).
    if pkt.fragment && session_tcp.is_some() {
        frag::remember_in(&pkt, int_addr, now)?;
    }
    // Rewrite and deliver.
    if let L4::Tcp(ref mut tcp) = t.l4 {
        mss::clamp(ctx, &pkt, tcp, cfg.mss_clamp);
    }
    rewrite_endpoint(pkt.ip, &mut t.l4, Side::Destination, int_addr, int_port);
    if let Some(ClassCounters { translated, .. }) = class_counters {
        count(translated);
    }
    // PPTP control messages are read once the segment is translated (vpn::pptp_followup).
    deliver_in(&mut pkt, r).map(|v| v.pptp_followup(class == CLASS_PPTP))
}

/// Spoofed LAN-side, martian or our own sources go first: not even the router answers them.
/// A packet "from" the WAN address would pass filters that hairpinning opened. Then only
/// what is addressed to the WAN address is the NAT's: anything for the LAN's addresses is
/// dropped, the rest is the router's.
#[inline(always)]
fn guard(
    ctx: &XdpContext,
    cfg: &NatConfig,
    pkt: &Ipv4<'_>,
) -> Result<ControlFlow<Verdict>, Counter> {
    if pkt.src == cfg.wan_addr {
        return Err(Counter::DropWanSourceSelf);
    }
    if lan_side(cfg, pkt.src).is_lan() || is_martian_source(u32::from_be(pkt.src)) {
        return Err(Counter::DropMartianSource);
    }
    if lan_side(cfg, pkt.dst).is_lan() {
        return Err(Counter::DropToLanAddress);
    }
    if pkt.dst != cfg.wan_addr {
        // Not only the LAN prefixes the daemon follows: whatever the kernel's routing (policy
        // rules, other tables) would send into the LAN stays out of it.
        if route(ctx, pkt.src, pkt.dst, pkt.tos, 0).ifindex() == Some(cfg.lan_ifindex) {
            return Err(Counter::DropToLanAddress);
        }
        return Ok(Break(Verdict::pass(Counter::PassToRouter)));
    }
    Ok(Continue(()))
}

/// The verdict for a packet to the WAN address that belongs to the router.
#[inline(always)]
fn to_router(proto: u8) -> Verdict {
    Verdict::pass(if proto == IPPROTO_ICMP {
        Counter::PassIcmpToRouter
    } else {
        Counter::PassToRouter
    })
}

/// Where a packet to the WAN address goes on the LAN.
struct LanEndpoint {
    addr: u32,
    port: u16,
    /// What a packet of no session gets there.
    new: NewFlow,
    /// The mapping's first remote host (`Mapping::first_remote`), or 0.
    first_remote: u32,
}

/// The LAN endpoint behind external port `ext_port`: the owner of the IKE SA for the shared
/// port 500, else the active mapping's, else the port forward's. A port the NAT does not
/// own, or an echo reply nothing explains (the router's own ping), is the router's.
#[inline(always)]
fn lan_endpoint(
    ctx: &XdpContext,
    cfg: &NatConfig,
    pkt: &Ipv4<'_>,
    ext_port: u16,
    shared_ike: bool,
    now: u64,
) -> Result<ControlFlow<Verdict, LanEndpoint>, Counter> {
    if !port_in_pool(ext_port) {
        return Ok(Break(to_router(pkt.proto)));
    }
    if shared_ike {
        if let Some(owner) = vpn::ike_owner(ctx, pkt, now) {
            return Ok(Continue(LanEndpoint {
                addr: owner,
                port: IKE_PORT.to_be(),
                new: NewFlow::Filtered,
                first_remote: 0,
            }));
        }
    }
    let ext = ExternalKey {
        port: ext_port,
        proto: pkt.proto,
        _pad: 0,
    };
    let Some(m) = MAPPINGS_IN.get_ptr(&ext) else {
        return forwarded_endpoint(cfg, pkt, &ext);
    };
    // SAFETY: map value pointer from a successful lookup; copied out at once.
    let m = unsafe { *m };
    if m.state != MAPPING_ACTIVE {
        return Err(Counter::DropNoMapping);
    }
    Ok(Continue(LanEndpoint {
        addr: m.int_addr,
        port: m.int_port,
        new: NewFlow::Filtered,
        // One a flush forgot is none (its tick included: stricter, never looser).
        first_remote: if m.made_after(cfg.flushed_ns) {
            m.first_remote
        } else {
            0
        },
    }))
}

/// The LAN endpoint of the port forward of `ext`, for a WAN source it admits; else the DMZ
/// host's same port, when there is one.
#[inline(always)]
fn forwarded_endpoint(
    cfg: &NatConfig,
    pkt: &Ipv4<'_>,
    ext: &ExternalKey,
) -> Result<ControlFlow<Verdict, LanEndpoint>, Counter> {
    let Some(f) = FORWARDS.get_ptr(ext) else {
        if cfg.dmz_addr != 0 && pkt.proto != IPPROTO_ICMP {
            // Nothing explains it: the DMZ host gets it (a TCP SYN or a UDP datagram makes a
            // session of its own, as through a forward).
            return Ok(Continue(LanEndpoint {
                addr: cfg.dmz_addr,
                port: ext.port,
                new: NewFlow::Forwarded,
                first_remote: 0,
            }));
        }
        // An echo reply to the router's own ping carries an id from the same space.
        return if pkt.proto == IPPROTO_ICMP {
            Ok(Break(Verdict::pass(Counter::PassIcmpToRouter)))
        } else {
            Err(Counter::DropNoMapping)
        };
    };
    // SAFETY: map value pointer from a successful lookup; read at once.
    let f = unsafe { &*f };
    if !f.admits(pkt.src) {
        return Err(Counter::DropForwardSource);
    }
    Ok(Continue(LanEndpoint {
        addr: f.int_addr,
        port: f.int_port,
        // Removed: its sessions run on, new flows do not.
        new: if f.retired != 0 {
            NewFlow::Refused
        } else {
            NewFlow::Forwarded
        },
        first_remote: 0,
    }))
}
