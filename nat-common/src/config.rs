//! The runtime configuration the data path reads (CONFIG map, one entry) and the defaults.

use core::mem::size_of;

/// Changes whenever a map key or value layout changes (derived: crate::layout), so a daemon
/// can refuse pinned maps it would misread.
pub use crate::layout::LAYOUT_VERSION;

/// RFC 4787 REQ-8 filtering behaviours.
pub const FILTER_ENDPOINT_INDEPENDENT: u32 = 0;
pub const FILTER_ADDRESS_DEPENDENT: u32 = 1;
pub const FILTER_ADDRESS_PORT_DEPENDENT: u32 = 2;

/// RFC 6888 REQ-8: a released external port waits this long before reuse.
pub const PORT_REUSE_DELAY_SECS: u32 = 120;
/// Idle timeouts of the VPN passthrough state (docs/architecture.md, "Defaults").
pub const GRE_TIMEOUT_SECS: u32 = 300;
pub const ESP_TIMEOUT_SECS: u32 = 300;
/// How long the translation of a first fragment applies to the ones that follow.
pub const FRAG_TIMEOUT_NS: u64 = 2_000_000_000;
/// How long one host's raw-ESP learning window with a server lasts (its own retransmissions
/// do not extend it). After it, other hosts may open one at once, the same host only after as
/// long again (ESP_LEARN_COOLDOWN_NS), so a host whose server never answers gives the slot
/// back.
pub const ESP_PENDING_NS: u64 = 1_000_000_000;
pub const ESP_LEARN_COOLDOWN_NS: u64 = 2 * ESP_PENDING_NS;

/// Longest a next hop in the flow cache (a FLOW_HOPS slot) answers before the FIB is asked
/// again for it, so a neighbour's new MAC that the daemon did not signal (or made while it
/// was down) applies within this (within FLOW_TTL_NS if another address still has the old
/// MAC, which keeps the hop checked).
pub const NEXT_HOP_TTL_NS: u64 = 1_000_000_000;
/// Longest a flow cache entry answers before its flow goes back to its session (which
/// stamps the session for the sweeper, and asks the FIB for the flow's own route): a route
/// change the daemon did not signal applies within this. Longer than NEXT_HOP_TTL_NS, so
/// that an established flow reads its session every few seconds, not every second
/// (docs/fast-path.md, "The flow cache").
pub const FLOW_TTL_NS: u64 = 4 * NEXT_HOP_TTL_NS;
/// `NextHop::resolved` is bpf_ktime ns shifted right by this (units of about 1 ms).
pub const NEXT_HOP_TIME_SHIFT: u32 = 20;

/// A mapping younger than this is never released by the sweeper, so it cannot race the
/// first packet that creates its session.
pub const MAPPING_GRACE_SECS: u32 = 5;

/// Session timeouts in seconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub udp: u32,
    pub tcp_established: u32,
    pub tcp_transitory: u32,
    pub icmp: u32,
}
const _: () = assert!(size_of::<Timeouts>() == 16);

impl Timeouts {
    pub const DEFAULT: Timeouts = Timeouts {
        udp: 300,
        tcp_established: 7440,
        tcp_transitory: 240,
        icmp: 60,
    };
    /// RFC 4787 REQ-5: UDP mappings last at least 2 minutes.
    pub const MIN_UDP: u32 = 120;
    /// RFC 5508 REQ-1: ICMP query mappings last at least 60 s.
    pub const MIN_ICMP: u32 = 60;
    /// RFC 5382 REQ-5: established TCP idle timeout at least 2 h 4 min.
    pub const MIN_TCP_ESTABLISHED: u32 = 7440;
    /// RFC 5382 REQ-5: transitory TCP timeout at least 4 min.
    pub const MIN_TCP_TRANSITORY: u32 = 240;
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Value of the CONFIG map. Addresses are wire bytes read as native integers (see maps.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatConfig {
    pub layout_version: u32,
    pub wan_addr: u32,
    pub lan_addr: u32,
    pub lan_net: u32,
    pub lan_mask: u32,
    pub wan_ifindex: u32,
    pub lan_ifindex: u32,
    /// How many ports PORT_POOL holds for privileged sources (1-1023), and for the rest
    /// (`pool_first` to `pool_last`).
    pub priv_pool_len: u32,
    pub pool_len: u32,
    pub filtering: u32,
    pub timeouts: Timeouts,
    /// Largest TCP MSS a SYN may announce (0: no clamping).
    pub mss_clamp: u16,
    /// Bumped by the daemon on every route, neighbour, address and link change (and config
    /// write): cached next hops of another generation are looked up again.
    pub route_gen: u16,
    /// Most mappings one LAN host may hold (0: no limit; RFC 6888 REQ-4).
    pub mappings_per_host: u32,
    /// Seeds the flow cache's hash and checks (`flow_cache`): a new seed misses every entry.
    pub flow_seed: u32,
    /// log2 of the sets per flow cache; set by NatMaps from the maps' sizes.
    pub flow_set_bits: u32,
    /// LAN-side prefixes beyond `lan_net` and router addresses beyond `lan_addr`, in
    /// LAN_PREFIXES. 0: `lan_net` / `lan_addr` are the whole LAN side, and the data path
    /// compares inline instead of looking the trie up.
    pub lan_extra: u32,
    /// Most sessions one LAN host may hold (0: no limit; RFC 6888 REQ-4).
    pub sessions_per_host: u32,
    /// The network namespace (inode of /proc/self/ns/net) the daemon configured this in: the
    /// interface indexes mean something there only. Read by `nat-ctl status`.
    pub netns_ino: u64,
    /// Most VPN state entries (IKE SAs through port 500, outbound ESP SAs, ESP learning
    /// windows, PPTP calls) one LAN host may hold together (0: no limit).
    pub vpn_state_per_host: u32,
    /// 1: a LAN host whose new flow is refused for want of room gets ICMP destination
    /// unreachable, administratively prohibited (RFC 5508 REQ-8); 0: the packet is only
    /// dropped and counted.
    pub icmp_prohibited: u32,
    /// The DMZ host (0: none): new TCP and UDP flows to a port of the NAT's that no mapping
    /// and no forward explains go to it.
    pub dmz_addr: u32,
    /// Counts the times nat-ctl removed sessions beside the sweeper (a flush, a passthrough
    /// switched off): the sweeper then walks at once, to recount the per-host session
    /// counts, which only it counts down (nat-ctl's sweeper::Schedule).
    pub sessions_removed_gen: u32,
    /// When UDP sessions were last flushed (CLOCK_MONOTONIC_COARSE, the data path's clock):
    /// the first remote host of a mapping made no later (`Mapping::first_remote`) lets
    /// nothing in, as the filter entries the flush removed let nothing in.
    pub flushed_ns: u64,
    /// The lowest and the highest port of the pool's ordinary part (not privileged), and the
    /// widest run of ports between them that are not the pool's (the router's own
    /// ip_local_port_range, by default): a random draw picks from the span less that gap,
    /// keeping what PORT_POOL holds (ports::draw_candidate).
    pub pool_first: u16,
    pub pool_last: u16,
    pub pool_gap_first: u16,
    pub pool_gap_len: u16,
}
const _: () = assert!(size_of::<NatConfig>() == 120);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], integers only, no implicit padding (sizes asserted above).
    unsafe impl aya::Pod for super::NatConfig {}
}
