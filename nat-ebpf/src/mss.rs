//! TCP MSS clamping for PPPoE and tunnel WAN links: a SYN whose MSS option announces more
//! than the configured clamp gets the clamp, with the TCP checksum fixed.

use aya_ebpf::programs::XdpContext;
use nat_common::{
    counters::Counter,
    proto::{TCP_HDR_LEN, TCP_SYN},
    rewrite::{get_u16, rewrite_tcp_payload_u16},
};

use crate::{
    maps::count,
    packet::{Ipv4, ptr_at},
};

const TCPOPT_MSS: u8 = 2;
const TCPOLEN_MSS: u8 = 4;

/// Clamps the MSS of a SYN. Only an MSS option placed first is looked at, which is where
/// Linux, Windows, macOS and the BSDs put it.
// verifier: a fixed 4-byte read after the fixed header instead of walking the options.
#[inline(always)]
pub fn clamp(ctx: &XdpContext, pkt: &Ipv4<'_>, tcp: &mut [u8; TCP_HDR_LEN], clamp: u16) {
    if clamp == 0 || tcp[13] & TCP_SYN == 0 || ((tcp[12] >> 4) as usize) * 4 < TCP_HDR_LEN + 4 {
        return;
    }
    let Ok(opt) = ptr_at::<[u8; 4]>(ctx, pkt.l4_offset + TCP_HDR_LEN) else {
        return;
    };
    // SAFETY: bounds-checked by ptr_at.
    let opt = unsafe { &mut *opt };
    if opt[0] != TCPOPT_MSS || opt[1] != TCPOLEN_MSS {
        return;
    }
    // The option starts at offset 20 of the segment: its value sits at 22, an even offset.
    if u16::from_be(get_u16(opt, 2)) > clamp {
        rewrite_tcp_payload_u16(tcp, opt, 2, clamp.to_be());
        count(Counter::MssClamped);
    }
}
