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
    DropOutboundFragment,
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
        Counter::DropOutboundFragment,
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
            Counter::DropOutboundFragment => "drop_outbound_fragment",
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
            Counter::DropNoConfig => "drop_no_config",
        }
    }

    pub const fn kind(self) -> CounterKind {
        match self {
            Counter::OutRedirected
            | Counter::InRedirected
            | Counter::OutPassKernel
            | Counter::InPassKernel => CounterKind::Forwarded,
            Counter::MappingCreated | Counter::SessionCreated => CounterKind::State,
            Counter::PassNotIpv4
            | Counter::PassNotToWan
            | Counter::PassToRouter
            | Counter::PassTtlExceeded
            | Counter::PassFragNeeded
            | Counter::PassInboundFragment
            | Counter::PassIcmpToRouter => CounterKind::Pass,
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
                "WAN fragments for the router passed to the kernel untranslated"
            }
            Counter::PassIcmpToRouter => {
                "ICMP for the router (no echo mapping) passed to the kernel"
            }
            Counter::DropMalformed => "truncated or malformed IPv4/TCP/UDP/ICMP headers",
            Counter::DropUnsupportedProto => {
                "LAN->WAN packets of a protocol the NAT cannot translate"
            }
            Counter::DropOutboundFragment => "LAN->WAN IPv4 fragments (not yet translatable)",
            Counter::DropMartianSource => "WAN packets from a LAN or martian source address",
            Counter::DropToLanAddress => "WAN packets addressed straight to a LAN address",
            Counter::DropLanSourceForeign => {
                "LAN->WAN packets whose source is outside the LAN prefix"
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
            Counter::DropNoConfig => "packets seen before nat-ctl configured the program",
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
    fn names_are_unique() {
        let mut names: std::vec::Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), NUM_COUNTERS as usize);
    }
}
