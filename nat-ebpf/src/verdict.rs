//! What a program decides about a packet: the action and the counter that records it.

use aya_ebpf::bindings::xdp_action;
use nat_common::counters::Counter;

/// What to do with a packet, and the counter that records it.
pub struct Verdict {
    pub action: u32,
    pub counter: Counter,
}

/// A bit of `Verdict::action`: the packet is a PPTP control segment, whose messages the
/// entry point reads once the program has translated it (vpn::pptp_followup).
pub const PPTP_FOLLOWUP: u32 = 1 << 16;

impl Verdict {
    pub const fn new(action: u32, counter: Counter) -> Self {
        Self { action, counter }
    }

    /// This verdict, with the PPTP follow-up asked for when `pptp`.
    pub const fn pptp_followup(self, pptp: bool) -> Self {
        if pptp {
            Self {
                action: self.action | PPTP_FOLLOWUP,
                ..self
            }
        } else {
            self
        }
    }

    /// Hand the packet, untouched, to the kernel.
    pub const fn pass(counter: Counter) -> Self {
        Self::new(xdp_action::XDP_PASS, counter)
    }
}
