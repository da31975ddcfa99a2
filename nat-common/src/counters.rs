//! Every verdict the data path can reach has a named per-CPU counter (COUNTERS map, indexed
//! by `Counter as u32`). `try_` functions in the eBPF crate return a `Verdict` naming one.

/// What happened to a packet, and why.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    // Translated and forwarded by XDP (DEVMAP redirect).
    OutRedirected = 0,
    InRedirected,
    // Translated, then handed to the kernel because the next hop's neighbour is unresolved.
    OutPassKernel,
    InPassKernel,
    // Created state.
    MappingCreated,
    SessionCreated,
    // Passed untouched to the kernel.
    PassNotIpv4,
    PassNotToWan,
    PassToRouter,
    PassTtlExceeded,
    PassFragNeeded,
    PassInboundFragment,
    PassIcmpToRouter,
    // Dropped.
    DropMalformed,
    DropUnsupportedProto,
    DropFragmentBeforeFirst,
    DropMartianSource,
    DropToLanAddress,
    DropLanSourceForeign,
    DropNoMapping,
    DropFiltered,
    DropUnsolicitedTcp,
    DropMappingTableFull,
    DropSessionTableFull,
    DropPortsExhausted,
    DropInboundTtl,
    DropInboundTooBig,
    DropRedirectFailed,
    PptpTranslated,
    L2tpTranslated,
    IpsecTranslated,
    PptpCallIdRewritten,
    PptpCallCreated,
    EspSpiLearned,
    PassPptpUnparsed,
    PassGreUnknownCall,
    PassEspUnknownSpi,
    DropPptpSwitchOff,
    DropL2tpSwitchOff,
    DropIpsecSwitchOff,
    DropPptpAllocFail,
    DropL2tpAllocFail,
    DropIpsecAllocFail,
    DropAh,
    DropGreMalformed,
    DropIkeMalformed,
    DropIkeSpiInUse,
    DropEspLearnBusy,
    FragmentsTranslated,
    DropFragTableFull,
    IcmpErrorTranslated,
    DropIcmpErrorNoSession,
    DropIcmpErrorBadChecksum,
    HairpinTranslated,
    DropHostQuota,
    MssClamped,
    FlowCacheFilled,
    DropLanSourceRouter,
    PassDhcpClient,
    DropWanSourceSelf,
    EgressIcmpErrorTranslated,
    DropEgressLanAddress,
    DropEgressLanQuoted,
    DropEgressLanArp,
    DropEspLearnLimit,
    PassEspRouterPeer,
    DropVlanPriorityTagged,
    DropInboundNotToLan,
    DropIpOptions,
    DropEgressUnparsed,
    DropHostSessionQuota,
    DropHostVpnQuota,
    DropHostFragQuota,
    IcmpProhibitedSent,
    DropNoConfig,
}

/// Number of counters; the COUNTERS map has this many slots.
pub const NUM_COUNTERS: u32 = Counter::DropNoConfig as u32 + 1;

/// Kind of verdict, for `nat-ctl stats` grouping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    Forwarded,
    State,
    Pass,
    Drop,
}

impl Counter {
    pub const ALL: [Counter; NUM_COUNTERS as usize] = [
        Counter::OutRedirected,
        Counter::InRedirected,
        Counter::OutPassKernel,
        Counter::InPassKernel,
        Counter::MappingCreated,
        Counter::SessionCreated,
        Counter::PassNotIpv4,
        Counter::PassNotToWan,
        Counter::PassToRouter,
        Counter::PassTtlExceeded,
        Counter::PassFragNeeded,
        Counter::PassInboundFragment,
        Counter::PassIcmpToRouter,
        Counter::DropMalformed,
        Counter::DropUnsupportedProto,
        Counter::DropFragmentBeforeFirst,
        Counter::DropMartianSource,
        Counter::DropToLanAddress,
        Counter::DropLanSourceForeign,
        Counter::DropNoMapping,
        Counter::DropFiltered,
        Counter::DropUnsolicitedTcp,
        Counter::DropMappingTableFull,
        Counter::DropSessionTableFull,
        Counter::DropPortsExhausted,
        Counter::DropInboundTtl,
        Counter::DropInboundTooBig,
        Counter::DropRedirectFailed,
        Counter::PptpTranslated,
        Counter::L2tpTranslated,
        Counter::IpsecTranslated,
        Counter::PptpCallIdRewritten,
        Counter::PptpCallCreated,
        Counter::EspSpiLearned,
        Counter::PassPptpUnparsed,
        Counter::PassGreUnknownCall,
        Counter::PassEspUnknownSpi,
        Counter::DropPptpSwitchOff,
        Counter::DropL2tpSwitchOff,
        Counter::DropIpsecSwitchOff,
        Counter::DropPptpAllocFail,
        Counter::DropL2tpAllocFail,
        Counter::DropIpsecAllocFail,
        Counter::DropAh,
        Counter::DropGreMalformed,
        Counter::DropIkeMalformed,
        Counter::DropIkeSpiInUse,
        Counter::DropEspLearnBusy,
        Counter::FragmentsTranslated,
        Counter::DropFragTableFull,
        Counter::IcmpErrorTranslated,
        Counter::DropIcmpErrorNoSession,
        Counter::DropIcmpErrorBadChecksum,
        Counter::HairpinTranslated,
        Counter::DropHostQuota,
        Counter::MssClamped,
        Counter::FlowCacheFilled,
        Counter::DropLanSourceRouter,
        Counter::PassDhcpClient,
        Counter::DropWanSourceSelf,
        Counter::EgressIcmpErrorTranslated,
        Counter::DropEgressLanAddress,
        Counter::DropEgressLanQuoted,
        Counter::DropEgressLanArp,
        Counter::DropEspLearnLimit,
        Counter::PassEspRouterPeer,
        Counter::DropVlanPriorityTagged,
        Counter::DropInboundNotToLan,
        Counter::DropIpOptions,
        Counter::DropEgressUnparsed,
        Counter::DropHostSessionQuota,
        Counter::DropHostVpnQuota,
        Counter::DropHostFragQuota,
        Counter::IcmpProhibitedSent,
        Counter::DropNoConfig,
    ];

    /// Stable snake_case name used by `nat-ctl stats` and its JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::OutRedirected => "out_redirected",
            Counter::InRedirected => "in_redirected",
            Counter::OutPassKernel => "out_pass_kernel",
            Counter::InPassKernel => "in_pass_kernel",
            Counter::MappingCreated => "mapping_created",
            Counter::SessionCreated => "session_created",
            Counter::PassNotIpv4 => "pass_not_ipv4",
            Counter::PassNotToWan => "pass_not_to_wan",
            Counter::PassToRouter => "pass_to_router",
            Counter::PassTtlExceeded => "pass_ttl_exceeded",
            Counter::PassFragNeeded => "pass_frag_needed",
            Counter::PassInboundFragment => "pass_inbound_fragment",
            Counter::PassIcmpToRouter => "pass_icmp_to_router",
            Counter::DropMalformed => "drop_malformed",
            Counter::DropUnsupportedProto => "drop_unsupported_proto",
            Counter::DropFragmentBeforeFirst => "drop_fragment_before_first",
            Counter::DropMartianSource => "drop_martian_source",
            Counter::DropToLanAddress => "drop_to_lan_address",
            Counter::DropLanSourceForeign => "drop_lan_source_foreign",
            Counter::DropNoMapping => "drop_no_mapping",
            Counter::DropFiltered => "drop_filtered",
            Counter::DropUnsolicitedTcp => "drop_unsolicited_tcp",
            Counter::DropMappingTableFull => "drop_mapping_table_full",
            Counter::DropSessionTableFull => "drop_session_table_full",
            Counter::DropPortsExhausted => "drop_ports_exhausted",
            Counter::DropInboundTtl => "drop_inbound_ttl",
            Counter::DropInboundTooBig => "drop_inbound_too_big",
            Counter::DropRedirectFailed => "drop_redirect_failed",
            Counter::PptpTranslated => "pptp_translated",
            Counter::L2tpTranslated => "l2tp_translated",
            Counter::IpsecTranslated => "ipsec_translated",
            Counter::PptpCallIdRewritten => "pptp_call_id_rewritten",
            Counter::PptpCallCreated => "pptp_call_created",
            Counter::EspSpiLearned => "esp_spi_learned",
            Counter::PassPptpUnparsed => "pass_pptp_unparsed",
            Counter::PassGreUnknownCall => "pass_gre_unknown_call",
            Counter::PassEspUnknownSpi => "pass_esp_unknown_spi",
            Counter::DropPptpSwitchOff => "drop_pptp_switch_off",
            Counter::DropL2tpSwitchOff => "drop_l2tp_switch_off",
            Counter::DropIpsecSwitchOff => "drop_ipsec_switch_off",
            Counter::DropPptpAllocFail => "drop_pptp_alloc_fail",
            Counter::DropL2tpAllocFail => "drop_l2tp_alloc_fail",
            Counter::DropIpsecAllocFail => "drop_ipsec_alloc_fail",
            Counter::DropAh => "drop_ah",
            Counter::DropGreMalformed => "drop_gre_malformed",
            Counter::DropIkeMalformed => "drop_ike_malformed",
            Counter::DropIkeSpiInUse => "drop_ike_spi_in_use",
            Counter::DropEspLearnBusy => "drop_esp_learn_busy",
            Counter::FragmentsTranslated => "fragments_translated",
            Counter::DropFragTableFull => "drop_frag_table_full",
            Counter::IcmpErrorTranslated => "icmp_error_translated",
            Counter::DropIcmpErrorNoSession => "drop_icmp_error_no_session",
            Counter::DropIcmpErrorBadChecksum => "drop_icmp_error_bad_checksum",
            Counter::HairpinTranslated => "hairpin_translated",
            Counter::DropHostQuota => "drop_host_quota",
            Counter::MssClamped => "mss_clamped",
            Counter::FlowCacheFilled => "flow_cache_filled",
            Counter::DropLanSourceRouter => "drop_lan_source_router",
            Counter::PassDhcpClient => "pass_dhcp_client",
            Counter::DropWanSourceSelf => "drop_wan_source_self",
            Counter::EgressIcmpErrorTranslated => "egress_icmp_error_translated",
            Counter::DropEgressLanAddress => "drop_egress_lan_address",
            Counter::DropEgressLanQuoted => "drop_egress_lan_quoted",
            Counter::DropEgressLanArp => "drop_egress_lan_arp",
            Counter::DropEspLearnLimit => "drop_esp_learn_limit",
            Counter::PassEspRouterPeer => "pass_esp_router_peer",
            Counter::DropVlanPriorityTagged => "drop_vlan_priority_tagged",
            Counter::DropInboundNotToLan => "drop_inbound_not_to_lan",
            Counter::DropIpOptions => "drop_ip_options",
            Counter::DropEgressUnparsed => "drop_egress_unparsed",
            Counter::DropHostSessionQuota => "drop_host_session_quota",
            Counter::DropHostVpnQuota => "drop_host_vpn_quota",
            Counter::DropHostFragQuota => "drop_host_frag_quota",
            Counter::IcmpProhibitedSent => "icmp_prohibited_sent",
            Counter::DropNoConfig => "drop_no_config",
        }
    }

    pub const fn kind(self) -> CounterKind {
        match self {
            Counter::OutRedirected
            | Counter::InRedirected
            | Counter::OutPassKernel
            | Counter::InPassKernel
            | Counter::FragmentsTranslated
            | Counter::IcmpErrorTranslated
            | Counter::EgressIcmpErrorTranslated
            | Counter::HairpinTranslated
            | Counter::PptpTranslated
            | Counter::L2tpTranslated
            | Counter::IpsecTranslated
            | Counter::IcmpProhibitedSent => CounterKind::Forwarded,
            Counter::MappingCreated
            | Counter::SessionCreated
            | Counter::PptpCallIdRewritten
            | Counter::PptpCallCreated
            | Counter::EspSpiLearned
            | Counter::MssClamped
            | Counter::FlowCacheFilled => CounterKind::State,
            Counter::PassNotIpv4
            | Counter::PassNotToWan
            | Counter::PassToRouter
            | Counter::PassTtlExceeded
            | Counter::PassFragNeeded
            | Counter::PassInboundFragment
            | Counter::PassIcmpToRouter
            | Counter::PassDhcpClient
            | Counter::PassPptpUnparsed
            | Counter::PassGreUnknownCall
            | Counter::PassEspUnknownSpi
            | Counter::PassEspRouterPeer => CounterKind::Pass,
            _ => CounterKind::Drop,
        }
    }

    /// One line on what the counter means, for `nat-ctl stats` and docs.
    pub const fn help(self) -> &'static str {
        match self {
            Counter::OutRedirected => "LAN->WAN packets translated and redirected by XDP",
            Counter::InRedirected => "WAN->LAN packets translated and redirected by XDP",
            Counter::OutPassKernel => {
                "LAN->WAN packets translated, then passed to the kernel (next hop unresolved, or fragmenting needed)"
            }
            Counter::InPassKernel => {
                "WAN->LAN packets translated, then passed to the kernel (LAN host unresolved, or fragmenting needed)"
            }
            Counter::MappingCreated => "new address+port mappings",
            Counter::SessionCreated => "new sessions",
            Counter::PassNotIpv4 => "non-IPv4 frames (ARP, IPv6, ...) passed untouched",
            Counter::PassNotToWan => {
                "LAN packets not routed out of the WAN interface, passed untouched"
            }
            Counter::PassToRouter => "packets for the router itself, passed untouched",
            Counter::PassTtlExceeded => {
                "LAN->WAN packets with TTL <= 1, passed so the kernel sends Time Exceeded"
            }
            Counter::PassFragNeeded => {
                "LAN->WAN DF packets over the WAN MTU, passed so the kernel sends Fragmentation Needed"
            }
            Counter::PassInboundFragment => {
                "WAN non-first fragments with no translated first fragment: the router's own, left to it"
            }
            Counter::PassIcmpToRouter => {
                "ICMP for the router (no echo mapping) passed to the kernel"
            }
            Counter::DropMalformed => "truncated or malformed IPv4/TCP/UDP/ICMP headers",
            Counter::DropUnsupportedProto => {
                "LAN->WAN packets of a protocol the NAT cannot translate"
            }
            Counter::DropFragmentBeforeFirst => {
                "LAN->WAN non-first fragments whose first fragment was not translated (RFC 4787 REQ-14 deviation: not held)"
            }
            Counter::DropMartianSource => "WAN packets from a LAN-side or martian source address",
            Counter::DropToLanAddress => {
                "WAN packets addressed straight to a LAN-side address (a LAN prefix or a route behind the LAN)"
            }
            Counter::DropLanSourceForeign => {
                "LAN packets whose source is outside the LAN prefixes (BCP 38), whatever their destination"
            }
            Counter::DropNoMapping => "WAN packets to a pool port/id with no mapping",
            Counter::DropFiltered => "WAN packets rejected by the filtering mode",
            Counter::DropUnsolicitedTcp => {
                "WAN TCP segments matching no session (e.g. unsolicited SYN)"
            }
            Counter::DropMappingTableFull => "new flows dropped: mapping table full",
            Counter::DropSessionTableFull => "new flows dropped: session table full",
            Counter::DropPortsExhausted => "new flows dropped: no free external port found",
            Counter::DropInboundTtl => "WAN packets with TTL <= 1 that would need forwarding",
            Counter::DropInboundTooBig => "WAN->LAN DF packets larger than the LAN MTU",
            Counter::DropRedirectFailed => "packets whose DEVMAP redirect failed",
            Counter::PptpTranslated => "PPTP packets (TCP 1723 control, GRE) translated",
            Counter::L2tpTranslated => "L2TP packets (UDP 1701) translated",
            Counter::IpsecTranslated => "IPsec packets (IKE, NAT-T, ESP) translated",
            Counter::PptpCallIdRewritten => "PPTP control messages whose call id was rewritten",
            Counter::PptpCallCreated => "PPTP calls given an external call id",
            Counter::EspSpiLearned => "inbound ESP SPIs bound to the LAN host that was learning",
            Counter::PassPptpUnparsed => {
                "PPTP control segments forwarded without parsing (split, several messages, unknown)"
            }
            Counter::PassGreUnknownCall => {
                "GRE to the router with no PPTP call, left to the router"
            }
            Counter::PassEspUnknownSpi => {
                "ESP to the router with no binding and no learner, left to the router"
            }
            Counter::DropPptpSwitchOff => "PPTP packets dropped: passthrough pptp is off",
            Counter::DropL2tpSwitchOff => "L2TP packets dropped: passthrough l2tp is off",
            Counter::DropIpsecSwitchOff => "IPsec packets dropped: passthrough ipsec is off",
            Counter::DropPptpAllocFail => "PPTP flows dropped: no port, call id or table entry",
            Counter::DropL2tpAllocFail => "L2TP flows dropped: no port or table entry",
            Counter::DropIpsecAllocFail => "IPsec flows dropped: no port, SPI slot or table entry",
            Counter::DropAh => {
                "AH packets: AH authenticates the addresses NAT rewrites, it cannot cross a NAT"
            }
            Counter::DropGreMalformed => {
                "LAN GRE that is not PPTP's enhanced GRE (version 1 with key)"
            }
            Counter::DropIkeMalformed => "IKE on port 500 without a usable header or SPI",
            Counter::DropIkeSpiInUse => {
                "IKE from a second LAN host with an SPI another host uses to that server"
            }
            Counter::DropEspLearnBusy => {
                "unlearned ESP of a host while another host learns from that server, or while its own turn cools down"
            }
            Counter::FragmentsTranslated => {
                "non-first fragments translated like their first fragment"
            }
            Counter::DropFragTableFull => "first fragments dropped: fragment table full",
            Counter::IcmpErrorTranslated => {
                "ICMP errors (unreachable, time exceeded, parameter problem) translated with their quoted packet"
            }
            Counter::DropIcmpErrorNoSession => {
                "ICMP errors about a flow with no session (they never create or refresh one)"
            }
            Counter::DropIcmpErrorBadChecksum => {
                "ICMP errors with a bad ICMP checksum, or whose quoted IPv4 header has a bad checksum or is not IPv4"
            }
            Counter::HairpinTranslated => {
                "LAN packets to the WAN address and a mapped port, sent back into the LAN translated both ways (hairpinning)"
            }
            Counter::DropHostQuota => "new flows dropped: the LAN host holds its quota of mappings",
            Counter::MssClamped => "TCP SYNs whose MSS option was lowered to the clamp",
            Counter::FlowCacheFilled => {
                "established flows written into the flow cache (about once a second per active flow)"
            }
            Counter::DropLanSourceRouter => {
                "LAN packets whose source is one of the router's own addresses (spoofed)"
            }
            Counter::PassDhcpClient => {
                "DHCP requests from 0.0.0.0 on the LAN, passed to the router"
            }
            Counter::DropWanSourceSelf => {
                "WAN packets whose source is the WAN address itself (spoofed)"
            }
            Counter::EgressIcmpErrorTranslated => {
                "ICMP errors the router made about a translated flow, leaving the WAN with the quoted LAN endpoint translated back to the WAN address"
            }
            Counter::DropEgressLanAddress => {
                "packets leaving the WAN with a LAN address in the IPv4 header (e.g. the router's own traffic from a LAN address): dropped by the egress last line"
            }
            Counter::DropEgressLanQuoted => {
                "ICMP errors leaving the WAN that quote a LAN address no mapping translates: dropped by the egress last line"
            }
            Counter::DropEgressLanArp => {
                "ARP leaving the WAN that names a LAN address: dropped by the egress last line"
            }
            Counter::DropEspLearnLimit => {
                "inbound ESP with an unknown SPI beyond the bindings one learning window allows (a spray of made-up SPIs)"
            }
            Counter::PassEspRouterPeer => {
                "ESP with an unknown SPI from a peer the router itself runs IKE with: the router's, never bound to a LAN host"
            }
            Counter::DropVlanPriorityTagged => {
                "frames with a VLAN tag of VLAN ID 0 (priority-tagged), which the kernel would take as untagged past the NAT"
            }
            Counter::DropInboundNotToLan => {
                "WAN packets whose translated destination the kernel would not route out of the LAN (a mapping of an address no longer on the LAN side)"
            }
            Counter::DropIpOptions => {
                "LAN->WAN packets with IP options (record route, timestamps and source routes name addresses, which would carry LAN addresses out; options are not parsed)"
            }
            Counter::DropEgressUnparsed => {
                "ICMP leaving the WAN whose headers could not be read, so the egress last line could not check them"
            }
            Counter::DropHostSessionQuota => {
                "new flows dropped: the LAN host holds its quota of sessions"
            }
            Counter::DropHostVpnQuota => {
                "new IKE SAs, ESP SAs, ESP learning windows or PPTP calls dropped: the LAN host holds its quota of VPN state"
            }
            Counter::DropHostFragQuota => {
                "first fragments dropped: the LAN host started its quota of fragmented datagrams in the last 2 s"
            }
            Counter::IcmpProhibitedSent => {
                "refused new flows answered with ICMP administratively prohibited ([limits] icmp_prohibited; each is also counted by its drop reason)"
            }
            Counter::DropNoConfig => "packets seen before nat-ctl configured the program",
        }
    }

    /// Per-class counters: translated, dropped because the switch is off, allocation failed.
    pub const fn for_class(class: u8) -> Option<(Counter, Counter, Counter)> {
        use crate::passthrough::{CLASS_IPSEC, CLASS_L2TP, CLASS_PPTP};
        match class {
            CLASS_PPTP => Some((
                Counter::PptpTranslated,
                Counter::DropPptpSwitchOff,
                Counter::DropPptpAllocFail,
            )),
            CLASS_L2TP => Some((
                Counter::L2tpTranslated,
                Counter::DropL2tpSwitchOff,
                Counter::DropL2tpAllocFail,
            )),
            CLASS_IPSEC => Some((
                Counter::IpsecTranslated,
                Counter::DropIpsecSwitchOff,
                Counter::DropIpsecAllocFail,
            )),
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
