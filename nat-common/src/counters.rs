//! Every verdict the data path can reach has a named per-CPU counter (COUNTERS map, indexed
//! by `Counter as u32`). `try_` functions in the eBPF crate return a `Verdict` naming one.

/// Declares every counter once: its variant (the COUNTERS slot, in order), its kind, its
/// stable name for `nat-ctl stats`, JSON and metrics, and a line on what it means. From the
/// one list come the enum, `ALL`, `NUM_COUNTERS`, `name`, `kind` and `help`.
macro_rules! counters {
    ($($variant:ident: $kind:ident, $name:literal, $help:literal;)*) => {
        /// What happened to a packet, and why.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $($variant,)*
        }

        /// Number of counters; the COUNTERS map has this many slots.
        pub const NUM_COUNTERS: u32 = [$(Counter::$variant),*].len() as u32;

        impl Counter {
            /// Every counter, in slot order.
            pub const ALL: [Counter; NUM_COUNTERS as usize] = [$(Counter::$variant),*];

            /// Stable snake_case name used by `nat-ctl stats` and its JSON.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)*
                }
            }

            pub const fn kind(self) -> CounterKind {
                match self {
                    $(Counter::$variant => CounterKind::$kind,)*
                }
            }

            /// One line on what the counter means, for `nat-ctl stats` and docs.
            pub const fn help(self) -> &'static str {
                match self {
                    $(Counter::$variant => $help,)*
                }
            }
        }
    };
}

counters! {
    // Translated and forwarded by XDP (DEVMAP redirect).
    OutRedirected: Forwarded, "out_redirected",
        "LAN->WAN packets translated and redirected by XDP";
    InRedirected: Forwarded, "in_redirected",
        "WAN->LAN packets translated and redirected by XDP";
    // Translated, then handed to the kernel because the next hop's neighbour is unresolved.
    OutPassKernel: Forwarded, "out_pass_kernel",
        "LAN->WAN packets translated, then passed to the kernel (next hop unresolved, or fragmenting needed)";
    InPassKernel: Forwarded, "in_pass_kernel",
        "WAN->LAN packets translated, then passed to the kernel (LAN host unresolved, or fragmenting needed)";
    // Created state.
    MappingCreated: State, "mapping_created",
        "new address+port mappings";
    SessionCreated: State, "session_created",
        "new sessions";
    ForwardSessionCreated: State, "forward_session_created",
        "new sessions a WAN host opened through a port forward (also in session_created)";
    // Passed untouched to the kernel.
    PassNotIpv4: Pass, "pass_not_ipv4",
        "non-IPv4 frames (ARP, IPv6, ...) passed untouched";
    PassNotToWan: Pass, "pass_not_to_wan",
        "LAN packets not routed out of the WAN interface, passed untouched";
    PassToRouter: Pass, "pass_to_router",
        "packets for the router itself, passed untouched";
    PassTtlExceeded: Pass, "pass_ttl_exceeded",
        "LAN->WAN packets with TTL <= 1, passed so the kernel sends Time Exceeded";
    PassFragNeeded: Pass, "pass_frag_needed",
        "LAN->WAN DF packets over the WAN MTU, passed so the kernel sends Fragmentation Needed";
    PassInboundFragment: Pass, "pass_inbound_fragment",
        "WAN non-first fragments with no translated first fragment: the router's own, left to it";
    PassIcmpToRouter: Pass, "pass_icmp_to_router",
        "ICMP for the router (no echo mapping) passed to the kernel";
    // Dropped.
    DropMalformed: Drop, "drop_malformed",
        "truncated or malformed IPv4/TCP/UDP/ICMP headers";
    DropUnsupportedProto: Drop, "drop_unsupported_proto",
        "LAN->WAN packets of a protocol the NAT cannot translate";
    DropFragmentBeforeFirst: Drop, "drop_fragment_before_first",
        "LAN->WAN non-first fragments whose first fragment was not translated (RFC 4787 REQ-14 deviation: not held)";
    DropMartianSource: Drop, "drop_martian_source",
        "WAN packets from a LAN-side or martian source address";
    DropToLanAddress: Drop, "drop_to_lan_address",
        "WAN packets addressed straight to a LAN-side address (a LAN prefix or a route behind the LAN)";
    DropLanSourceForeign: Drop, "drop_lan_source_foreign",
        "LAN packets whose source is outside the LAN prefixes (BCP 38), whatever their destination";
    DropNoMapping: Drop, "drop_no_mapping",
        "WAN packets to a pool port/id with no mapping";
    DropFiltered: Drop, "drop_filtered",
        "WAN packets rejected by the filtering mode";
    DropUnsolicitedTcp: Drop, "drop_unsolicited_tcp",
        "WAN TCP segments matching no session (e.g. unsolicited SYN)";
    DropForwardSource: Drop, "drop_forward_source",
        "WAN packets to a forwarded port from a source outside the forward's `from` prefix";
    DropMappingTableFull: Drop, "drop_mapping_table_full",
        "new flows dropped: mapping table full";
    DropSessionTableFull: Drop, "drop_session_table_full",
        "new flows dropped: session table full";
    DropPortsExhausted: Drop, "drop_ports_exhausted",
        "new flows dropped: no free external port found";
    DropInboundTtl: Drop, "drop_inbound_ttl",
        "WAN packets with TTL <= 1 that would need forwarding";
    DropInboundTooBig: Drop, "drop_inbound_too_big",
        "WAN->LAN DF packets larger than the LAN MTU";
    DropRedirectFailed: Drop, "drop_redirect_failed",
        "packets whose DEVMAP redirect failed";
    PptpTranslated: Forwarded, "pptp_translated",
        "PPTP packets (TCP 1723 control, GRE) translated";
    L2tpTranslated: Forwarded, "l2tp_translated",
        "L2TP packets (UDP 1701) translated";
    IpsecTranslated: Forwarded, "ipsec_translated",
        "IPsec packets (IKE, NAT-T, ESP) translated";
    TunnelForwarded: Forwarded, "tunnel_forwarded",
        "GRE and ESP packets of a VPN server behind a forward of its protocol, both ways";
    PptpCallIdRewritten: State, "pptp_call_id_rewritten",
        "PPTP control messages whose call id was rewritten";
    PptpCallCreated: State, "pptp_call_created",
        "PPTP calls given an external call id";
    EspSpiLearned: State, "esp_spi_learned",
        "inbound ESP SPIs bound to the LAN host that was learning";
    PassPptpUnparsed: Pass, "pass_pptp_unparsed",
        "PPTP control segments forwarded without parsing (split, several messages, unknown)";
    PassGreUnknownCall: Pass, "pass_gre_unknown_call",
        "GRE to the router with no PPTP call, left to the router";
    PassEspUnknownSpi: Pass, "pass_esp_unknown_spi",
        "ESP to the router with no binding and no learner, left to the router";
    DropPptpSwitchOff: Drop, "drop_pptp_switch_off",
        "PPTP packets dropped: passthrough pptp is off";
    DropL2tpSwitchOff: Drop, "drop_l2tp_switch_off",
        "L2TP packets dropped: passthrough l2tp is off";
    DropIpsecSwitchOff: Drop, "drop_ipsec_switch_off",
        "IPsec packets dropped: passthrough ipsec is off";
    DropPptpAllocFail: Drop, "drop_pptp_alloc_fail",
        "PPTP flows dropped: no port, call id or table entry";
    DropL2tpAllocFail: Drop, "drop_l2tp_alloc_fail",
        "L2TP flows dropped: no port or table entry";
    DropIpsecAllocFail: Drop, "drop_ipsec_alloc_fail",
        "IPsec flows dropped: no port, SPI slot or table entry";
    DropAh: Drop, "drop_ah",
        "AH packets: AH authenticates the addresses NAT rewrites, it cannot cross a NAT";
    DropGreMalformed: Drop, "drop_gre_malformed",
        "LAN GRE that is not PPTP's enhanced GRE (version 1 with key)";
    DropIkeMalformed: Drop, "drop_ike_malformed",
        "IKE on port 500 without a usable header or SPI";
    DropIkeSpiInUse: Drop, "drop_ike_spi_in_use",
        "IKE from a second LAN host with an SPI another host uses to that server";
    DropEspLearnBusy: Drop, "drop_esp_learn_busy",
        "unlearned ESP of a host while another host learns from that server, or while its own turn cools down";
    FragmentsTranslated: Forwarded, "fragments_translated",
        "non-first fragments translated like their first fragment";
    DropFragTableFull: Drop, "drop_frag_table_full",
        "first fragments dropped: fragment table full";
    IcmpErrorTranslated: Forwarded, "icmp_error_translated",
        "ICMP errors (unreachable, time exceeded, parameter problem) translated with their quoted packet";
    DropIcmpErrorNoSession: Drop, "drop_icmp_error_no_session",
        "ICMP errors about a flow with no session (they never create or refresh one)";
    DropIcmpErrorBadChecksum: Drop, "drop_icmp_error_bad_checksum",
        "ICMP errors with a bad ICMP checksum, or whose quoted IPv4 header has a bad checksum or is not IPv4";
    HairpinTranslated: Forwarded, "hairpin_translated",
        "LAN packets to the WAN address and a mapped port, sent back into the LAN translated both ways (hairpinning)";
    DropHostQuota: Drop, "drop_host_quota",
        "new flows dropped: the LAN host holds its quota of mappings";
    MssClamped: State, "mss_clamped",
        "TCP SYNs whose MSS option was lowered to the clamp";
    FlowCacheFilled: State, "flow_cache_filled",
        "established flows written into the flow cache (every few seconds per active flow)";
    DropLanSourceRouter: Drop, "drop_lan_source_router",
        "LAN packets whose source is one of the router's own addresses (spoofed)";
    PassDhcpClient: Pass, "pass_dhcp_client",
        "DHCP requests from 0.0.0.0 on the LAN, passed to the router";
    DropWanSourceSelf: Drop, "drop_wan_source_self",
        "WAN packets whose source is the WAN address itself (spoofed)";
    EgressIcmpErrorTranslated: Forwarded, "egress_icmp_error_translated",
        "ICMP errors the router made about a translated flow, leaving the WAN with the quoted LAN endpoint translated back to the WAN address";
    DropEgressLanAddress: Drop, "drop_egress_lan_address",
        "packets leaving the WAN with a LAN address in the IPv4 header (e.g. the router's own traffic from a LAN address): dropped by the egress last line";
    DropEgressLanQuoted: Drop, "drop_egress_lan_quoted",
        "ICMP errors leaving the WAN that quote a LAN address no mapping translates: dropped by the egress last line";
    DropEgressLanArp: Drop, "drop_egress_lan_arp",
        "ARP leaving the WAN that names a LAN address: dropped by the egress last line";
    DropEspLearnLimit: Drop, "drop_esp_learn_limit",
        "inbound ESP with an unknown SPI beyond the bindings one learning window allows (a spray of made-up SPIs)";
    PassEspRouterPeer: Pass, "pass_esp_router_peer",
        "ESP with an unknown SPI from a peer the router itself runs IKE with: the router's, never bound to a LAN host";
    DropVlanPriorityTagged: Drop, "drop_vlan_priority_tagged",
        "frames with a VLAN tag of VLAN ID 0 (priority-tagged), which the kernel would take as untagged past the NAT";
    DropInboundNotToLan: Drop, "drop_inbound_not_to_lan",
        "WAN packets whose translated destination the kernel would not route out of the LAN (a mapping of an address no longer on the LAN side)";
    DropIpOptions: Drop, "drop_ip_options",
        "LAN->WAN packets with IP options (record route, timestamps and source routes name addresses, which would carry LAN addresses out; options are not parsed)";
    DropEgressUnparsed: Drop, "drop_egress_unparsed",
        "ICMP leaving the WAN whose headers could not be read, so the egress last line could not check them";
    DropHostSessionQuota: Drop, "drop_host_session_quota",
        "new flows dropped: the LAN host holds its quota of sessions";
    DropHostVpnQuota: Drop, "drop_host_vpn_quota",
        "new IKE SAs, ESP SAs, ESP learning windows or PPTP calls dropped: the LAN host holds its quota of VPN state";
    DropHostFragQuota: Drop, "drop_host_frag_quota",
        "first fragments dropped: the LAN host started its quota of fragmented datagrams in the last 2 s";
    IcmpProhibitedSent: Forwarded, "icmp_prohibited_sent",
        "refused new flows answered with ICMP administratively prohibited ([limits] icmp_prohibited; each is also counted by its drop reason)";
    DropNoConfig: Drop, "drop_no_config",
        "packets seen before nat-ctl configured the program";
}

/// The counters of one passthrough class (`Counter::for_class`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassCounters {
    /// Packets of the class translated.
    pub translated: Counter,
    /// Dropped because the class's switch is off.
    pub switch_off: Counter,
    /// Dropped because no port, call id or table entry could be had.
    pub alloc_fail: Counter,
}

/// Kind of verdict, for `nat-ctl stats` grouping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    Forwarded,
    State,
    Pass,
    Drop,
}

impl Counter {
    /// The counters of passthrough class `class`.
    pub const fn for_class(class: u8) -> Option<ClassCounters> {
        use crate::passthrough::{CLASS_IPSEC, CLASS_L2TP, CLASS_PPTP};
        match class {
            CLASS_PPTP => Some(ClassCounters {
                translated: Counter::PptpTranslated,
                switch_off: Counter::DropPptpSwitchOff,
                alloc_fail: Counter::DropPptpAllocFail,
            }),
            CLASS_L2TP => Some(ClassCounters {
                translated: Counter::L2tpTranslated,
                switch_off: Counter::DropL2tpSwitchOff,
                alloc_fail: Counter::DropL2tpAllocFail,
            }),
            CLASS_IPSEC => Some(ClassCounters {
                translated: Counter::IpsecTranslated,
                switch_off: Counter::DropIpsecSwitchOff,
                alloc_fail: Counter::DropIpsecAllocFail,
            }),
            _ => None,
        }
    }

    pub fn from_name(name: &str) -> Option<Counter> {
        Counter::ALL.iter().copied().find(|c| c.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_complete_and_ordered() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?} out of order");
            assert_eq!(Counter::from_name(c.name()), Some(*c));
        }
    }

    #[test]
    fn kinds_agree_with_names() {
        for c in Counter::ALL {
            let by_name = c.name().starts_with("drop_");
            assert_eq!(by_name, c.kind() == CounterKind::Drop, "{c:?}");
            assert_eq!(
                c.name().starts_with("pass_"),
                c.kind() == CounterKind::Pass,
                "{c:?}"
            );
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: std::vec::Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), NUM_COUNTERS as usize);
    }
}
