//! XDP and TC entry points of xdp-nat. Each is a thin wrapper around the data path in the
//! library (lib.rs): the `try_` function returns a verdict naming its counter, or the named
//! reason for a drop.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    macros::{classifier, raw_tracepoint, xdp},
    programs::{RawTracePointContext, TcContext, XdpContext},
};
use aya_log_ebpf::{debug, info};
use nat_common::counters::Counter;
use nat_ebpf::{PPTP_FOLLOWUP, Verdict, egress, lan, maps, packet, refuse, sweep, vpn, wan};

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

/// The PPTP follow-up of a verdict that asks for it: the segment's control messages are read
/// (and rewritten) now, at the entry point. verifier: here, not inside the programs, whose
/// stack leaves no room for it (512 bytes over a call chain).
#[inline(always)]
fn followup(
    ctx: &XdpContext,
    result: Result<Verdict, Counter>,
    outbound: bool,
) -> Result<Verdict, Counter> {
    match result {
        Ok(v) if v.action & PPTP_FOLLOWUP != 0 => {
            let v = Verdict::new(v.action & !PPTP_FOLLOWUP, v.counter);
            match vpn::pptp_followup(ctx.ctx, u64::from(outbound)) {
                vpn::PPTP_OK => Ok(v),
                vpn::PPTP_VPN_QUOTA => Err(Counter::DropHostVpnQuota),
                _ => Err(Counter::DropPptpAllocFail),
            }
        }
        other => other,
    }
}

#[xdp]
pub fn xdp_nat_lan(ctx: XdpContext) -> u32 {
    conclude_lan(&ctx, lan::try_nat_lan(&ctx))
}

/// What follows the LAN program's verdict: the PPTP follow-up, the counters and the log, and
/// for a refused new flow the host may be told (refuse.rs).
// verifier: a function of its own, so that what it keeps on the stack is not in the entry
// point's frame, which adds to the LAN program's (512 bytes over a call chain).
#[inline(never)]
fn conclude_lan(ctx: &XdpContext, result: Result<Verdict, Counter>) -> u32 {
    let result = followup(ctx, result, true);
    let refused = matches!(result, Err(reason) if refuse::is_refusal(reason));
    let action = finish(ctx, result);
    if refused {
        if let Some(answer) = refuse::admin_prohibited(ctx) {
            return answer;
        }
    }
    action
}

#[xdp]
pub fn xdp_nat_wan(ctx: XdpContext) -> u32 {
    conclude_wan(&ctx, wan::try_nat_wan(&ctx))
}

/// `conclude_lan` for the WAN program: the PPTP follow-up, the counters and the log.
#[inline(never)]
fn conclude_wan(ctx: &XdpContext, result: Result<Verdict, Counter>) -> u32 {
    finish(ctx, followup(ctx, result, false))
}

/// The sweeper's walk of the session table (nat_ebpf::sweep): nat-ctl runs it with
/// BPF_PROG_TEST_RUN and never attaches it. 0 once walked, 1 without orders. A raw tracepoint
/// program because its test runs leave softirqs on (an XDP program's run with them off): a
/// walk of a million sessions takes a quarter of a second, for which that CPU's packets
/// would otherwise wait.
#[raw_tracepoint(tracepoint = "nat_sweep")]
pub fn nat_sweep(_ctx: RawTracePointContext) -> i32 {
    if sweep::run() { 0 } else { 1 }
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
