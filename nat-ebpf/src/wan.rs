//! WAN ingress: reverse translation of replies to the WAN address, and the guard that keeps
//! anything unsolicited off the LAN.

use aya_ebpf::programs::XdpContext;
use nat_common::{
    config::{FILTER_ADDRESS_DEPENDENT, FILTER_ENDPOINT_INDEPENDENT, NatConfig},
    counters::{ClassCounters, Counter},
    maps::{ExternalKey, MAPPING_ACTIVE, SessionIn, SessionKey},
    passthrough::{CLASS_IPSEC, CLASS_PPTP, IKE_PORT, classify},
    proto::{
        ICMP_ECHO_REPLY, IPPROTO_ESP, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
        is_icmp_error, is_martian_source,
    },
    rewrite::{L4, Side, rewrite_endpoint},
    tcp_state::{Direction, SYN_IN},
};

use crate::{
    Verdict, fast,
    forward::{deliver_in, next_hop, route, route_in},
    frag, icmp_error,
    lan_side::lan_side,
    maps::{
        FILTERS, MAPPINGS_IN, SESSIONS, SESSIONS_IN, config, count, now, port_in_pool, switch_on,
    },
    mss,
    packet::{icmp_type, parse_ipv4, parse_transport},
    state, vpn,
};

pub fn try_nat_wan(ctx: &XdpContext) -> Result<Verdict, Counter> {
    let cfg = config().ok_or(Counter::DropNoConfig)?;
    let Some(mut pkt) = parse_ipv4(ctx)? else {
        return Ok(Verdict::pass(Counter::PassNotIpv4));
    };
    // Spoofed LAN-side, martian or our own sources go first: not even the router answers
    // them. A packet "from" the WAN address would pass filters that hairpinning opened.
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
        return Ok(Verdict::pass(Counter::PassToRouter));
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
    // IKE on the shared port 500 is told apart by the client's SPI; everything else by its
    // mapping.
    let ike = IKE_PORT.to_be();
    let shared_ike = pkt.proto == IPPROTO_UDP && ext_port == ike && rem_port == ike;
    if !shared_ike {
        // Checks whether the port is the NAT's itself before it looks at any session.
        if let Some(v) = fast::inbound(ctx, cfg, &mut pkt, &mut t, ext_port, rem_port, now)? {
            return Ok(v);
        }
    }
    if !port_in_pool(ext_port) {
        return Ok(Verdict::pass(if icmp {
            Counter::PassIcmpToRouter
        } else {
            Counter::PassToRouter
        }));
    }
    let ike_owner = if shared_ike {
        vpn::ike_owner(ctx, &pkt, now)
    } else {
        None
    };
    let (int_addr, int_port) = match ike_owner {
        Some(owner) => (owner, ike),
        None => {
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
            (m.int_addr, m.int_port)
        }
    };
    let session = SessionKey::new(pkt.proto, int_addr, int_port, pkt.src, rem_port);
    // The session's TCP state after this segment (0 for UDP/ICMP); None without a session.
    let (class, session_tcp) = match SESSIONS.get_ptr_mut(&session) {
        Some(s) => {
            let s = unsafe { &mut *s };
            if s.ext_port != ext_port {
                // A session left from an earlier, released mapping of this endpoint.
                return Err(Counter::DropNoMapping);
            }
            s.last_seen_ns = now;
            let tcp = if pkt.proto == IPPROTO_TCP {
                state::record_tcp(s, Direction::Inbound, t.tcp_flags)
            } else {
                0
            };
            (s.class, Some(tcp))
        }
        None if pkt.proto == IPPROTO_TCP => return Err(Counter::DropUnsolicitedTcp),
        None if pkt.proto == IPPROTO_UDP && filter_allows(cfg, &session) => {
            (classify(pkt.proto, u16::from_be(rem_port)), None)
        }
        None => return Err(Counter::DropFiltered),
    };
    let class_counters = Counter::for_class(class);
    if let Some(ClassCounters {
        switch_off: off, ..
    }) = class_counters
    {
        if !switch_on(class) {
            return Err(off);
        }
    }
    let r = route_in(ctx, &pkt, int_addr)?;
    if let (Some(tcp_state), false) = (session_tcp, shared_ike) {
        // The inbound half of the session, for the fast path of the replies that follow.
        let half = SessionIn {
            last_seen_ns: now,
            int_addr,
            int_port,
            class,
            tcp_synced: u8::from(tcp_state & SYN_IN != 0),
            hop: next_hop(&r, cfg, pkt.tot_len, now),
            _reserved1: 0,
            _reserved2: 0,
            _reserved3: 0,
        };
        let key = session.reply_key(ext_port);
        match SESSIONS_IN.get_ptr_mut(&key) {
            // SAFETY: map value pointer from a successful lookup. Written in place: an insert
            // over an existing entry would take a fresh element and free the old one.
            Some(old) => unsafe { *old = half },
            // A full table only means replies keep taking this path.
            None => {
                let _ = SESSIONS_IN.insert(&key, &half, 0);
            }
        }
    }
    // The fragments that follow, of a session only: a datagram the filter let in without one
    // creates no state (nothing from the WAN does).
    if pkt.fragment && session_tcp.is_some() {
        frag::remember_in(&pkt, int_addr, now)?;
    }
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

/// RFC 4787 REQ-8 for a UDP packet from a remote port the mapping has not sent to.
#[inline(always)]
fn filter_allows(cfg: &NatConfig, session: &SessionKey) -> bool {
    match cfg.filtering {
        FILTER_ENDPOINT_INDEPENDENT => true,
        FILTER_ADDRESS_DEPENDENT => FILTERS.get_ptr(&session.filter_key()).is_some(),
        _ => false,
    }
}
