//! WAN egress (TC): the last line. Whatever made a packet (the XDP path's kernel fallback,
//! the kernel forwarding on its own, the router's own stack), none leaves the WAN interface
//! with a LAN-side address in its IPv4 header, in a header an ICMP error quotes, or in ARP.
//! XDP-redirected frames never pass here: the XDP path translates them itself.
//! See docs/architecture.md, "The egress last line".

use aya_ebpf::programs::TcContext;
use nat_common::{
    config::NatConfig,
    counters::Counter,
    passthrough::{IKE_PORT, NAT_T_PORT},
    proto::{ETH_HDR_LEN, ETH_P_IP, IPPROTO_ICMP, IPPROTO_UDP, IPV4_MIN_HDR_LEN, is_icmp_error},
    rewrite::{IP_DST, IP_SRC, get_u32},
};

use crate::{
    icmp_error::{self, MAX_CHECKED_ICMP_LEN},
    lan_side::lan_side,
    maps::{ROUTER_IPSEC_PEERS, config, now, port_in_pool},
    packet::{Frame, icmp_type, parse_ipv4, ptr_at},
};

const ETH_P_ARP: u16 = 0x0806;
/// Ethernet + an IPv4 ARP message, or IPv4 with options and UDP ports: everything the
/// checks before an ICMP error's read.
const HEAD_LEN: usize = ETH_HDR_LEN + 60 + 4;
/// Offsets of the sender's and the target's IPv4 address in an Ethernet ARP frame.
const ARP_SPA: usize = ETH_HDR_LEN + 14;
const ARP_TPA: usize = ETH_HDR_LEN + 24;
/// Most an ICMP error's checks read: Ethernet, IPv4 with options, the checked message.
const ICMP_ERROR_HEAD: usize = ETH_HDR_LEN + 60 + MAX_CHECKED_ICMP_LEN;

/// Ok(None): leaves untouched. Ok(Some(c)): leaves, changed as `c` counts. Err: dropped.
pub fn try_wan_egress(ctx: &TcContext) -> Result<Option<Counter>, Counter> {
    let Some(cfg) = config() else {
        return Ok(None);
    };
    // The kernel's packets usually hold their headers in the linear part; make sure.
    pull(ctx, HEAD_LEN);
    let Ok(eth) = ptr_at::<[u8; ETH_HDR_LEN]>(ctx, 0) else {
        return Ok(None);
    };
    // SAFETY: bounds-checked by ptr_at.
    let ethertype = unsafe { u16::from_be_bytes([(*eth)[12], (*eth)[13]]) };
    if ethertype == ETH_P_ARP {
        let lan = |at: usize| {
            ptr_at::<[u8; 4]>(ctx, at)
                .is_ok_and(|a| lan_side(cfg, u32::from_ne_bytes(unsafe { *a })).is_lan())
        };
        return if lan(ARP_SPA) || lan(ARP_TPA) {
            Err(Counter::DropEgressLanArp)
        } else {
            Ok(None)
        };
    }
    if ethertype != ETH_P_IP {
        return Ok(None);
    }
    // The outer header, read without parse_ipv4's length checks: a GSO packet of the
    // router's own TCP need not carry a total length that matches.
    let Ok(ip) = ptr_at::<[u8; IPV4_MIN_HDR_LEN]>(ctx, ETH_HDR_LEN) else {
        return Ok(None);
    };
    // SAFETY: bounds-checked by ptr_at.
    let ip = unsafe { &*ip };
    let (src, dst) = (get_u32(ip, IP_SRC), get_u32(ip, IP_DST));
    if lan_side(cfg, src).is_lan() || lan_side(cfg, dst).is_lan() {
        return Err(Counter::DropEgressLanAddress);
    }
    if ip[9] == IPPROTO_UDP {
        note_router_ike(ctx, cfg, ip, dst);
        return Ok(None);
    }
    if ip[9] != IPPROTO_ICMP {
        return Ok(None);
    }
    // ICMP is never GSO: the whole error, as far as the checks read, into the linear part.
    pull(ctx, ICMP_ERROR_HEAD);
    // What the kernel makes always reads; what does not is not let through unchecked.
    let Ok(Some(pkt)) = parse_ipv4(ctx) else {
        return Err(Counter::DropEgressUnparsed);
    };
    if pkt.later_fragment || !icmp_type(ctx, &pkt).is_some_and(quotes_a_header) {
        return Ok(None);
    }
    icmp_error::error_egress(ctx, cfg, &pkt)
}

/// ICMP messages that quote a header: the errors, and source quench and redirect too.
#[inline(always)]
fn quotes_a_header(icmp_type: u8) -> bool {
    is_icmp_error(icmp_type) || icmp_type == ICMP_SOURCE_QUENCH || icmp_type == ICMP_REDIRECT
}

const ICMP_SOURCE_QUENCH: u8 = 4;
const ICMP_REDIRECT: u8 = 5;

/// The router's own IKE (from port 500 or 4500 of the WAN address, when that port is not
/// the NAT's): its peer goes into ROUTER_IPSEC_PEERS, so that ESP from that peer with an
/// SPI no LAN host learned is left to the router, never bound to a LAN learner.
#[inline(always)]
fn note_router_ike(ctx: &TcContext, cfg: &NatConfig, ip: &[u8; IPV4_MIN_HDR_LEN], peer: u32) {
    if get_u32(ip, IP_SRC) != cfg.wan_addr {
        return;
    }
    // verifier: masking keeps the header length provably <= 60.
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let Ok(ports) = ptr_at::<[u8; 2]>(ctx, ETH_HDR_LEN + ihl) else {
        return;
    };
    // SAFETY: bounds-checked by ptr_at.
    let sport = u16::from_ne_bytes(unsafe { *ports });
    if (sport != IKE_PORT.to_be() && sport != NAT_T_PORT.to_be()) || port_in_pool(sport) {
        return;
    }
    let now = now();
    match ROUTER_IPSEC_PEERS.get_ptr_mut(&peer) {
        // SAFETY: map value pointer from a successful lookup.
        Some(seen) => unsafe { *seen = now },
        // A full table only means that peer's unknown ESP may reach a LAN learner.
        None => {
            let _ = ROUTER_IPSEC_PEERS.insert(&peer, &now, 0);
        }
    }
}

/// Makes the first `len` bytes (or the whole packet, if shorter) directly readable and
/// writable. A failure leaves less readable, which the bounds checks then see.
#[inline(always)]
fn pull(ctx: &TcContext, len: usize) {
    let len_now = Frame::len(ctx);
    let want = if len_now < len { len_now } else { len };
    if ctx.data() + want > ctx.data_end() {
        let _ = ctx.pull_data(want as u32);
    }
}
