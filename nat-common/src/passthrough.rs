//! VPN passthrough classes and their runtime switches (docs/passthrough.md). A
//! session's class is fixed when it is created, from the outbound packet.

use crate::proto::{IPPROTO_AH, IPPROTO_ESP, IPPROTO_GRE, IPPROTO_TCP, IPPROTO_UDP};

pub const CLASS_NONE: u8 = 0;
pub const CLASS_PPTP: u8 = 1;
pub const CLASS_L2TP: u8 = 2;
pub const CLASS_IPSEC: u8 = 3;

/// Number of switches; PASSTHROUGH map slot = class - 1.
pub const NUM_SWITCHES: u32 = 3;
/// Switch names in slot order, as `nat-ctl passthrough` spells them.
pub const SWITCH_NAMES: [&str; NUM_SWITCHES as usize] = ["pptp", "l2tp", "ipsec"];

pub const SWITCH_OFF: u32 = 0;
pub const SWITCH_ON: u32 = 1;

pub const PPTP_PORT: u16 = 1723;
pub const L2TP_PORT: u16 = 1701;
pub const IKE_PORT: u16 = 500;
pub const NAT_T_PORT: u16 = 4500;

/// Class of an outbound packet: IP protocol, and destination port (host order) for TCP/UDP.
pub const fn classify(proto: u8, dport: u16) -> u8 {
    match (proto, dport) {
        (IPPROTO_TCP, PPTP_PORT) | (IPPROTO_GRE, _) => CLASS_PPTP,
        (IPPROTO_UDP, L2TP_PORT) => CLASS_L2TP,
        (IPPROTO_UDP, IKE_PORT)
        | (IPPROTO_UDP, NAT_T_PORT)
        | (IPPROTO_ESP, _)
        | (IPPROTO_AH, _) => CLASS_IPSEC,
        _ => CLASS_NONE,
    }
}

/// A VPN passthrough switch, as the API and the command line name it. Sessions store its
/// class (`Switch::class`, a u8: CLASS_PPTP, CLASS_L2TP, CLASS_IPSEC); PASSTHROUGH holds
/// its state at `Switch::slot`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    Pptp = CLASS_PPTP,
    L2tp = CLASS_L2TP,
    Ipsec = CLASS_IPSEC,
}

impl Switch {
    /// Every switch, in slot order.
    pub const ALL: [Switch; NUM_SWITCHES as usize] = [Switch::Pptp, Switch::L2tp, Switch::Ipsec];

    /// The class its sessions carry.
    pub const fn class(self) -> u8 {
        self as u8
    }

    /// Its PASSTHROUGH slot.
    pub const fn slot(self) -> u32 {
        self as u32 - 1
    }

    /// As `nat-ctl passthrough` spells it.
    pub const fn name(self) -> &'static str {
        SWITCH_NAMES[self.slot() as usize]
    }

    /// The switch of sessions of `class` (None for ordinary traffic).
    pub const fn of_class(class: u8) -> Option<Switch> {
        match class {
            CLASS_PPTP => Some(Switch::Pptp),
            CLASS_L2TP => Some(Switch::L2tp),
            CLASS_IPSEC => Some(Switch::Ipsec),
            _ => None,
        }
    }

    /// The switch named `name` (case-insensitive), for the command line.
    pub fn by_name(name: &str) -> Option<Switch> {
        Switch::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }
}

/// PASSTHROUGH slot of a class (None for ordinary traffic).
pub const fn switch_slot(class: u8) -> Option<u32> {
    match class {
        CLASS_PPTP | CLASS_L2TP | CLASS_IPSEC => Some(class as u32 - 1),
        _ => None,
    }
}

/// The name of `class`'s switch ("" for ordinary traffic).
pub const fn class_name(class: u8) -> &'static str {
    match Switch::of_class(class) {
        Some(s) => s.name(),
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::IPPROTO_ICMP;

    #[test]
    fn classes() {
        assert_eq!(classify(IPPROTO_TCP, 1723), CLASS_PPTP);
        assert_eq!(classify(IPPROTO_GRE, 0), CLASS_PPTP);
        assert_eq!(classify(IPPROTO_UDP, 1701), CLASS_L2TP);
        assert_eq!(classify(IPPROTO_UDP, 500), CLASS_IPSEC);
        assert_eq!(classify(IPPROTO_UDP, 4500), CLASS_IPSEC);
        assert_eq!(classify(IPPROTO_ESP, 0), CLASS_IPSEC);
        assert_eq!(classify(IPPROTO_AH, 0), CLASS_IPSEC);
        assert_eq!(classify(IPPROTO_TCP, 1701), CLASS_NONE);
        assert_eq!(classify(IPPROTO_UDP, 1723), CLASS_NONE);
        assert_eq!(classify(IPPROTO_ICMP, 0), CLASS_NONE);
    }

    #[test]
    fn names_and_slots() {
        assert_eq!(Switch::by_name("PPTP"), Some(Switch::Pptp));
        assert_eq!(Switch::by_name("IPsec"), Some(Switch::Ipsec));
        assert_eq!(Switch::by_name("gre"), None);
        for s in Switch::ALL {
            assert_eq!(Switch::of_class(s.class()), Some(s));
            assert_eq!(switch_slot(s.class()), Some(s.slot()));
        }
        for c in [CLASS_PPTP, CLASS_L2TP, CLASS_IPSEC] {
            assert_eq!(
                SWITCH_NAMES[switch_slot(c).unwrap() as usize],
                class_name(c)
            );
        }
        assert_eq!(switch_slot(CLASS_NONE), None);
    }
}
