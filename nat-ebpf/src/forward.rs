//! Forwarding after translation: bpf_fib_lookup, MAC rewrite, DEVMAP redirect.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup as FibParams, xdp_action,
    },
    helpers::generated::bpf_fib_lookup,
    programs::XdpContext,
};
use core::mem::{MaybeUninit, size_of};
use nat_common::{
    config::NatConfig,
    counters::Counter,
    flow_cache::{ANSWERS_FOR, stamp},
    maps::NextHop,
};

use crate::maps::DEVMAP;

const AF_INET: u8 = 2;

/// Where the kernel's FIB would send a packet.
pub enum Route {
    /// Next hop resolved: redirect with these MACs.
    Resolved {
        ifindex: u32,
        smac: [u8; 6],
        dmac: [u8; 6],
    },
    /// Route found, but the neighbour is not resolved, or the packet exceeds the egress
    /// MTU (`too_big`): translate and let the kernel do the rest.
    Kernel { ifindex: u32, too_big: bool },
    /// Local delivery, unreachable, blackhole, forwarding disabled...
    NotForwarded,
}

impl Route {
    pub fn ifindex(&self) -> Option<u32> {
        match self {
            Route::Resolved { ifindex, .. } | Route::Kernel { ifindex, .. } => Some(*ifindex),
            Route::NotForwarded => None,
        }
    }
}

/// What a FIB lookup answered.
struct Fib {
    ret: i64,
    ifindex: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
}

/// Zeroes the lookup parameters in place.
// verifier: `mem::zeroed()` compiles to a call of the byte-at-a-time `memset` subprogram
// (64 iterations per lookup); volatile word stores cannot be merged back into a memset, and
// zeroing in place leaves no struct copy for the compiler to turn into one.
#[inline(always)]
fn zero_fib_params(p: &mut MaybeUninit<FibParams>) -> &mut FibParams {
    const WORDS: usize = size_of::<FibParams>() / size_of::<u32>();
    const _: () = assert!(WORDS * size_of::<u32>() == size_of::<FibParams>());
    const _: () = assert!(core::mem::align_of::<FibParams>() >= size_of::<u32>());
    let words = p.as_mut_ptr().cast::<u32>();
    for i in 0..WORDS {
        // SAFETY: in bounds of the struct (size checked above), which is 4-byte aligned.
        unsafe { words.add(i).write_volatile(0) };
    }
    // SAFETY: every byte written; all-zero is valid for this C struct of integers.
    unsafe { p.assume_init_mut() }
}

#[inline(always)]
fn fib(ctx: &XdpContext, src: u32, dst: u32, tos: u8, tot_len: u16, ifindex: u32) -> Fib {
    let mut params = MaybeUninit::uninit();
    let p = zero_fib_params(&mut params);
    p.family = AF_INET;
    p.__bindgen_anon_1.tot_len = tot_len;
    p.__bindgen_anon_2.tos = tos;
    p.__bindgen_anon_3.ipv4_src = src;
    p.__bindgen_anon_4.ipv4_dst = dst;
    p.ifindex = ifindex;
    let ret = unsafe { bpf_fib_lookup(ctx.ctx.cast(), &mut *p, size_of::<FibParams>() as i32, 0) };
    Fib {
        ret,
        ifindex: p.ifindex,
        smac: p.smac,
        dmac: p.dmac,
    }
}

/// Looks `dst` up in the FIB as if the packet arrived on this interface.
#[inline(always)]
pub fn route(ctx: &XdpContext, src: u32, dst: u32, tos: u8, tot_len: u16) -> Route {
    let ingress = ctx.ingress_ifindex() as u32;
    let p = fib(ctx, src, dst, tos, tot_len, ingress);
    match p.ret as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => Route::Resolved {
            ifindex: p.ifindex,
            smac: p.smac,
            dmac: p.dmac,
        },
        BPF_FIB_LKUP_RET_NO_NEIGH => Route::Kernel {
            ifindex: p.ifindex,
            too_big: false,
        },
        BPF_FIB_LKUP_RET_FRAG_NEEDED => {
            // The MTU check fails before the egress device is reported; ask again without
            // it (a zero length never exceeds an MTU) to learn where the packet would go.
            let p = fib(ctx, src, dst, tos, 0, ingress);
            match p.ret as u32 {
                BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH => Route::Kernel {
                    ifindex: p.ifindex,
                    too_big: true,
                },
                _ => Route::NotForwarded,
            }
        }
        _ => Route::NotForwarded,
    }
}

/// Does a flow cache entry filled at `resolved` (`NextHop::resolved`, its route looked up
/// then) under `route_gen`, for a packet of `max_len` bytes, still answer for one of
/// `tot_len` bytes now (FLOW_TTL_NS; its hop's own check is `flow_cache::route`'s)?
#[inline(always)]
pub fn answers(
    resolved: u32,
    route_gen: u16,
    max_len: u16,
    cfg: &NatConfig,
    tot_len: u16,
    now: u64,
) -> bool {
    let age = stamp(now).wrapping_sub(resolved);
    route_gen == cfg.route_gen && tot_len <= max_len && age < ANSWERS_FOR
}

/// What to cache of route `r`, found for a packet of `tot_len` bytes. Only a resolved
/// route is kept; anything else (`ifindex` 0) is looked up again by the next packet.
#[inline(always)]
pub fn next_hop(r: &Route, cfg: &NatConfig, tot_len: u16, now: u64) -> NextHop {
    let mut hop = NextHop {
        dmac: [0; 6],
        smac: [0; 6],
        ifindex: 0,
        max_len: tot_len,
        route_gen: cfg.route_gen,
        resolved: stamp(now),
    };
    if let Route::Resolved {
        ifindex,
        smac,
        dmac,
    } = r
    {
        hop.ifindex = *ifindex;
        hop.smac = *smac;
        hop.dmac = *dmac;
    }
    hop
}

/// Writes the next hop's MACs and redirects out of `ifindex`.
#[inline(always)]
pub fn redirect(
    eth: &mut [u8; 14],
    ifindex: u32,
    smac: &[u8; 6],
    dmac: &[u8; 6],
) -> Result<u32, Counter> {
    eth[..6].copy_from_slice(dmac);
    eth[6..12].copy_from_slice(smac);
    DEVMAP
        .redirect(ifindex, 0)
        .map_err(|_| Counter::DropRedirectFailed)
}

pub const XDP_PASS: u32 = xdp_action::XDP_PASS;

/// Sends a translated packet on: redirected by XDP when the next hop is resolved (TTL
/// decremented here), otherwise handed to the kernel, which forwards (and decrements TTL,
/// and fragments when needed).
#[inline(always)]
fn deliver(
    eth: &mut [u8; 14],
    ip: &mut [u8; 20],
    route: Route,
    redirected: Counter,
    to_kernel: Counter,
) -> Result<crate::Verdict, Counter> {
    match route {
        Route::Resolved {
            ifindex,
            smac,
            dmac,
        } => {
            nat_common::rewrite::decrement_ttl(ip);
            let action = redirect(eth, ifindex, &smac, &dmac)?;
            Ok(crate::Verdict::new(action, redirected))
        }
        _ => Ok(crate::Verdict::new(XDP_PASS, to_kernel)),
    }
}

/// Route towards LAN host `int_addr` for an inbound packet, refusing what the kernel could
/// only answer with an ICMP error quoting the LAN address to the WAN.
#[inline(always)]
pub fn route_in(
    ctx: &XdpContext,
    pkt: &crate::packet::Ipv4<'_>,
    int_addr: u32,
) -> Result<Route, Counter> {
    if pkt.ttl <= 1 {
        return Err(Counter::DropInboundTtl);
    }
    let r = route(ctx, pkt.src, int_addr, pkt.tos, pkt.tot_len);
    // A mapping of an address that is no longer on the LAN side (a renumbered LAN) must not
    // send its replies anywhere else: a redirect out of the WAN would pass no egress check.
    let lan = crate::maps::config().map_or(0, |c| c.lan_ifindex);
    if r.ifindex() != Some(lan) {
        return Err(Counter::DropInboundNotToLan);
    }
    if let Route::Kernel { too_big: true, .. } = r {
        if pkt.dont_fragment {
            return Err(Counter::DropInboundTooBig);
        }
    }
    Ok(r)
}

/// `deliver` for a LAN->WAN packet.
#[inline(always)]
pub fn deliver_out(
    pkt: &mut crate::packet::Ipv4<'_>,
    route: Route,
) -> Result<crate::Verdict, Counter> {
    deliver(
        pkt.eth,
        pkt.ip,
        route,
        Counter::OutRedirected,
        Counter::OutPassKernel,
    )
}

/// `deliver` for a WAN->LAN packet.
#[inline(always)]
pub fn deliver_in(
    pkt: &mut crate::packet::Ipv4<'_>,
    route: Route,
) -> Result<crate::Verdict, Counter> {
    deliver(
        pkt.eth,
        pkt.ip,
        route,
        Counter::InRedirected,
        Counter::InPassKernel,
    )
}
