//! The answer to a LAN host whose new flow the NAT refuses (its share or a table is used up):
//! when configured, ICMP destination unreachable, administratively prohibited (RFC 5508
//! REQ-8), so that its application fails at once ("no route to host") instead of waiting
//! for a timeout. The refused packet itself becomes the error, sent back out of the LAN
//! interface: its IPv4 header and first 8 transport bytes are what the error quotes.

use aya_ebpf::{
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use nat_common::{
    checksum::{fold, sum_bytes_fixed},
    counters::Counter,
    proto::{ETH_HDR_LEN, ETH_P_IP, ICMP_HDR_LEN, IPPROTO_ICMP, IPV4_MIN_HDR_LEN},
};

use crate::{
    maps::{DEVMAP, REFUSALS_SENT, config, count, now},
    packet::{Frame, ptr_at},
};

/// What the error quotes: the refused packet's IPv4 header (no options: the LAN program
/// drops packets with any) and its first 8 transport bytes.
const QUOTED_LEN: usize = IPV4_MIN_HDR_LEN + 8;
/// The new headers in front of the quote: IPv4 and ICMP.
const GROWN: usize = IPV4_MIN_HDR_LEN + ICMP_HDR_LEN;
/// The whole error frame.
const ERROR_FRAME_LEN: usize = ETH_HDR_LEN + GROWN + QUOTED_LEN;
/// ICMP destination unreachable, administratively prohibited (RFC 1812 section 5.2.7.1).
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ADMIN_PROHIBITED: u8 = 13;
/// At most this many errors per CPU and second, like the kernel's own ICMP rate limit: a host
/// that floods new flows gets a trickle of errors, not one per packet.
const REFUSALS_PER_SEC: u64 = 100;

/// Drops that refuse a new flow for want of room, which the host is told about.
#[inline(always)]
pub fn is_refusal(reason: Counter) -> bool {
    matches!(
        reason,
        Counter::DropHostQuota
            | Counter::DropHostSessionQuota
            | Counter::DropHostVpnQuota
            | Counter::DropPortsExhausted
            | Counter::DropSessionTableFull
            | Counter::DropMappingTableFull
    )
}

/// Turns the refused packet in `ctx` into the ICMP error to its sender; the redirect that
/// sends it, or None when
/// it cannot (not configured, over the rate, a packet too short to quote).
// verifier: a function of its own (a BPF subprogram): its frame is not added to the LAN
// program's, which has none to spare.
#[inline(never)]
pub fn admin_prohibited(ctx: &XdpContext) -> Option<u32> {
    let cfg = config()?;
    if cfg.icmp_prohibited == 0 {
        return None;
    }
    // What the new headers take from the old ones, read before they are overwritten.
    let eth: *const [u8; ETH_HDR_LEN] = ptr_at(ctx, 0).ok()?;
    // SAFETY: bounds-checked by ptr_at.
    let eth = unsafe { *eth };
    // Only a frame from one host to this router (unicast both ways, as Linux's icmp_send
    // insists): an error to a broadcast or multicast address would reach the whole LAN.
    if u16::from_be_bytes([eth[12], eth[13]]) != ETH_P_IP
        || eth[0] & 1 != 0
        || eth[6] & 1 != 0
        || eth[6..12] == [0; 6]
    {
        return None;
    }
    let quoted: *const [u8; QUOTED_LEN] = ptr_at(ctx, ETH_HDR_LEN).ok()?;
    // SAFETY: bounds-checked by ptr_at.
    let host = unsafe { [(*quoted)[12], (*quoted)[13], (*quoted)[14], (*quoted)[15]] };
    let host_addr = u32::from_ne_bytes(host);
    if host_addr | cfg.lan_mask == u32::MAX || host_addr == 0 || host[0] >= 224 {
        return None; // the subnet's broadcast address, or not a unicast source
    }
    // Last: only an error that will be sent takes from the budget.
    if !rate_allows() {
        return None;
    }
    let old_len = ctx.len();
    // SAFETY: the program's own context; a negative delta grows the frame at its head.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx.cast(), -(GROWN as i32)) } != 0 {
        return None;
    }
    // SAFETY: as above; shrinks the frame to the error's length (the quote's 8 bytes end it).
    let shrink = (ERROR_FRAME_LEN as i64 - (old_len + GROWN) as i64) as i32;
    if shrink != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx.cast(), shrink) } != 0 {
        return None;
    }
    let frame: *mut [u8; ERROR_FRAME_LEN] = ptr_at(ctx, 0).ok()?;
    // SAFETY: bounds-checked by ptr_at, after both adjustments.
    let f = unsafe { &mut *frame };
    // verifier: byte loops with constant bounds (unrolled), not copy_from_slice, which can
    // compile to a call of a byte-loop memcpy.
    // Ethernet: back to the sender (its router, for a host routed behind one).
    for i in 0..6 {
        f[i] = eth[6 + i];
        f[6 + i] = eth[i];
    }
    f[12] = eth[12];
    f[13] = eth[13];
    // IPv4, from the router's LAN address.
    let total = ((GROWN + QUOTED_LEN) as u16).to_be_bytes();
    let lan = cfg.lan_addr.to_ne_bytes();
    let mut ip = [
        0x45,
        0xc0,
        total[0],
        total[1],
        0,
        0,
        0,
        0,
        64,
        IPPROTO_ICMP,
        0,
        0,
        lan[0],
        lan[1],
        lan[2],
        lan[3],
        host[0],
        host[1],
        host[2],
        host[3],
    ];
    let check = (!fold(sum_bytes_fixed(&ip))).to_be_bytes();
    ip[10] = check[0];
    ip[11] = check[1];
    for i in 0..IPV4_MIN_HDR_LEN {
        f[ETH_HDR_LEN + i] = ip[i];
    }
    // ICMP over the quote, which already lies where it belongs.
    let quote: *const [u8; QUOTED_LEN] = ptr_at(ctx, ETH_HDR_LEN + GROWN).ok()?;
    // SAFETY: bounds-checked by ptr_at.
    let quoted_sum = sum_bytes_fixed(unsafe { &*quote });
    let mut icmp = [ICMP_DEST_UNREACH, ICMP_ADMIN_PROHIBITED, 0, 0, 0, 0, 0, 0];
    let check = (!fold(sum_bytes_fixed(&icmp) + quoted_sum)).to_be_bytes();
    icmp[2] = check[0];
    icmp[3] = check[1];
    for i in 0..ICMP_HDR_LEN {
        f[ETH_HDR_LEN + IPV4_MIN_HDR_LEN + i] = icmp[i];
    }
    // A redirect to the LAN interface, not XDP_TX, which a veth LAN
    // (the namespace labs) loses on the way to its peer.
    let action = DEVMAP.redirect(cfg.lan_ifindex, 0).ok()?;
    count(Counter::IcmpProhibitedSent);
    Some(action)
}

/// At most REFUSALS_PER_SEC errors per CPU and second.
#[inline(always)]
fn rate_allows() -> bool {
    let Some(w) = REFUSALS_SENT.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU slot, only this CPU writes it while we run.
    let w = unsafe { &mut *w };
    let now = now();
    if now.wrapping_sub(w[0]) >= 1_000_000_000 {
        *w = [now, 0];
    }
    if w[1] >= REFUSALS_PER_SEC {
        return false;
    }
    w[1] += 1;
    true
}
