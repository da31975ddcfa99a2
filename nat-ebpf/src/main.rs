//! XDP entry points of xdp-nat. Each is a thin wrapper: the `try_` function returns a verdict
//! naming its counter, or the named reason for a drop.
#![no_std]
#![no_main]
// Atomic add and OR on map values (per-host counts, TCP state bits): the BPF target's core
// has no atomic read-modify-write types; the intrinsics compile to BPF atomic instructions.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod bench;
mod egress;
mod fast;
mod flow_cache;
mod forward;
mod frag;
mod hairpin;
mod icmp_error;
mod lan;
mod lan_side;
mod maps;
mod mss;
mod packet;
mod refuse;
mod state;
mod vpn;
mod wan;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::{debug, info};
use nat_common::counters::Counter;

/// What to do with a packet, and the counter that records it.
pub struct Verdict {
    pub action: u32,
    pub counter: Counter,
}

impl Verdict {
    pub const fn new(action: u32, counter: Counter) -> Self {
        Self { action, counter }
    }

    /// Hand the packet, untouched, to the kernel.
    pub const fn pass(counter: Counter) -> Self {
        Self::new(xdp_action::XDP_PASS, counter)
    }
}

#[inline(always)]
fn finish(ctx: &XdpContext, result: Result<Verdict, Counter>) -> u32 {
    match result {
        Ok(v) => {
            maps::count(v.counter);
            v.action
        }
        Err(reason) => {
            maps::count(reason);
            log_drop(ctx, reason);
            xdp_action::XDP_DROP
        }
    }
}

/// Kernel-side log lines (nat-ctl run --log-level): running out of something at info, every
/// other drop at debug. Filtered by AYA_LOG_LEVEL before any work. The reason goes as its
/// number (`drop: N`), which the daemon turns back into its name.
// verifier: formatting the name here (Counter::name, a match of every reason) was verified
// again on every path that drops: the LAN program went from 0.3 M to 0.6 M instructions at
// info level, past the 1 M limit at debug.
#[inline(always)]
fn log_drop(ctx: &XdpContext, reason: Counter) {
    if matches!(
        reason,
        Counter::DropSessionTableFull
            | Counter::DropMappingTableFull
            | Counter::DropPortsExhausted
            | Counter::DropHostQuota
            | Counter::DropFragTableFull
    ) {
        // On by default, and exhaustion comes in floods: a line per second per CPU says it;
        // the counter counts every packet.
        if maps::log_due(reason) {
            info!(ctx, "drop: {} (table or pool exhausted)", reason as u32);
        }
    } else {
        debug!(ctx, "drop: {}", reason as u32);
    }
}

#[xdp]
pub fn xdp_nat_lan(ctx: XdpContext) -> u32 {
    let result = lan::try_nat_lan(&ctx);
    let refused = matches!(result, Err(reason) if refuse::is_refusal(reason));
    let action = finish(&ctx, result);
    // A refused new flow (counted by finish): the host may be told (refuse.rs).
    // verifier: after finish, so that nothing of the result stays live on this frame, which
    // adds to the LAN program's.
    if refused {
        if let Some(answer) = refuse::admin_prohibited(&ctx) {
            return answer;
        }
    }
    action
}

#[xdp]
pub fn xdp_nat_wan(ctx: XdpContext) -> u32 {
    finish(&ctx, wan::try_nat_wan(&ctx))
}

#[classifier]
pub fn tc_wan_egress(ctx: TcContext) -> i32 {
    match egress::try_wan_egress(&ctx) {
        Ok(changed) => {
            if let Some(c) = changed {
                maps::count(c);
            }
            TC_ACT_OK
        }
        Err(reason) => {
            maps::count(reason);
            debug!(&ctx, "egress drop: {}", reason as u32);
            TC_ACT_SHOT
        }
    }
}

/// Parse-only baseline for benchmarks, and the program labs attach to veth peers so frames
/// redirected towards them are received.
#[xdp]
pub fn xdp_pass(ctx: XdpContext) -> u32 {
    match packet::parse_ipv4(&ctx) {
        Ok(Some(pkt)) => {
            let _ = packet::parse_transport(&ctx, &pkt, nat_common::proto::ICMP_ECHO_REQUEST);
            xdp_action::XDP_PASS
        }
        _ => xdp_action::XDP_PASS,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
