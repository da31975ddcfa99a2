//! Which addresses are on the LAN side: every subnet of the LAN interface and every route
//! through it, and among them the router's own addresses. Anti-spoofing on both ingresses
//! and the WAN egress's last line ask here (docs/architecture.md, "The LAN side").

use aya_ebpf::maps::lpm_trie::Key;
use nat_common::{
    config::NatConfig,
    maps::{LAN_SIDE_PREFIX, LAN_SIDE_ROUTER},
    proto::in_prefix,
};

use crate::maps::LAN_PREFIXES;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LanSide {
    /// Not on the LAN side.
    Outside,
    /// A LAN host, or a host on a network routed behind the LAN.
    Host,
    /// One of the router's own addresses on the LAN interface.
    Router,
}

impl LanSide {
    #[inline(always)]
    pub fn is_lan(self) -> bool {
        self != LanSide::Outside
    }
}

/// Where `addr` (wire order) is. With one prefix and one router address (the usual LAN) it
/// compares with the configuration; otherwise it asks the LAN_PREFIXES trie.
#[inline(always)]
pub fn lan_side(cfg: &NatConfig, addr: u32) -> LanSide {
    if cfg.lan_extra == 0 {
        return if addr == cfg.lan_addr {
            LanSide::Router
        } else if in_prefix(addr, cfg.lan_net, cfg.lan_mask) {
            LanSide::Host
        } else {
            LanSide::Outside
        };
    }
    match LAN_PREFIXES.get(Key::new(32, addr)) {
        Some(&LAN_SIDE_ROUTER) => LanSide::Router,
        Some(&LAN_SIDE_PREFIX) => LanSide::Host,
        _ => LanSide::Outside,
    }
}
