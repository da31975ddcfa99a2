//! Map keys and values. One definition each, `#[repr(C)]` with explicit padding and a size
//! assertion, because the kernel and `nat-ctl` read the same bytes.
//!
//! Byte order: fields named `*_addr` and `*_port` hold the wire bytes read as a native
//! integer (`u32::from_ne_bytes(packet[..])`), so the data path never swaps; userspace
//! converts with `u32::from_be` / `u16::from_be` for display.

use core::mem::size_of;

/// Declares each pinned map's name once: a constant per map, and ALL, the list the loader
/// pins (a map left out would not survive a restart of the daemon; tests/tests/maps.rs
/// compares the list with the maps in the built object).
macro_rules! pinned_maps {
    ($($name:ident),* $(,)?) => {
        $(pub const $name: &str = stringify!($name);)*
        /// Every map the control plane pins, in a stable order.
        pub const ALL: &[&str] = &[$($name),*];
    };
}

/// Names of the maps in the object, as `nat-ctl` finds and pins them.
pub mod names {
    pinned_maps! {
        CONFIG,
        MAPPINGS_OUT,
        MAPPINGS_IN,
        SESSIONS,
        FLOWS_OUT,
        FLOWS_IN,
        FLOW_HOPS,
        FILTERS,
        PORT_POOL,
        PORT_IN_POOL,
        COUNTERS,
        DEVMAP,
        PASSTHROUGH,
        PPTP_CALLS_IN,
        PPTP_CALLS_OUT,
        IKE_SAS,
        ESP_IN,
        ESP_OUT,
        ESP_PENDING,
        FRAGS,
        HOST_MAPPINGS,
        LAN_PREFIXES,
        ROUTER_IPSEC_PEERS,
        FRAGS_IN,
        HOST_SESSIONS,
        PEER_IDS,
        HOST_VPN,
        HOST_FRAGS,
        MAC_MAPPINGS,
        MAC_SESSIONS,
        MAC_VPN,
        HOST_MAC,
        FORWARDS,
        FORWARDS_BY_LAN,
        FORWARD_HINTS,
        PORTS_TAKEN,
        SWEEP_WALK,
        EXPIRING,
        PORT_OWNERS,
        PORTS_LIVE,
        FILTERS_LIVE,
        HOST_LIVE,
        MAC_LIVE,
    }

    /// Maps of the NAT's object that are not pinned: per-CPU scratch whose content never
    /// outlives a packet.
    /// A forwarded VPN server's ESP peers (TUNNEL_PEERS) are learnt again from its next
    /// packet after a restart.
    pub const UNPINNED: &[&str] = &["LOGGED_AT", "REFUSALS_SENT", "MAPPING_MADE", "TUNNEL_PEERS"];

    /// The benchmarks' object's own tables for the new-flow floor (programs::
    /// BENCH_NEW_FLOW_FLOOR): sized as the session table (OUT) and as the mapping tables
    /// (IN, EP), the ports it took (TAKEN), and which of its operations it leaves out (SKIP).
    pub const BENCH_FLOOR_OUT: &str = "BENCH_FLOOR_OUT";
    pub const BENCH_FLOOR_IN: &str = "BENCH_FLOOR_IN";
    pub const BENCH_FLOOR_EP: &str = "BENCH_FLOOR_EP";
    pub const BENCH_FLOOR_SKIP: &str = "BENCH_FLOOR_SKIP";
    pub const BENCH_FLOOR_TAKEN: &str = "BENCH_FLOOR_TAKEN";
}

/// Names of the XDP programs in the object.
pub mod programs {
    /// On the LAN interface: source NAT of LAN->WAN traffic.
    pub const LAN_INGRESS: &str = "xdp_nat_lan";
    /// On the WAN interface: reverse translation of WAN->LAN traffic.
    pub const WAN_INGRESS: &str = "xdp_nat_wan";
    /// Returns XDP_PASS after the same parse: the benchmark baseline, and what labs attach to
    /// veth peers so redirected frames are received.
    pub const PASS: &str = "xdp_pass";
    /// TC egress on the WAN interface: the last line, which lets no LAN address out.
    pub const WAN_EGRESS: &str = "tc_wan_egress";
    /// Never attached: the sweeper's walk of the session table, a raw tracepoint program
    /// that nat-ctl runs with BPF_PROG_TEST_RUN (nat_common::expiry).
    pub const SWEEP: &str = "nat_sweep";
    /// Benchmarks only: fib lookup + redirect without NAT (the bare forwarder baseline).
    pub const BENCH_FORWARD: &str = "bench_forward";
    /// Benchmarks only: the bare forwarder plus one read of per-flow state per packet.
    pub const BENCH_FORWARD_STATE: &str = "bench_forward_state";
    /// Benchmarks only: rewrites live frames into UDP flows and transmits them (XDP_TX).
    pub const BENCH_GEN: &str = "bench_gen";
    /// Benchmarks only: counts and drops.
    pub const BENCH_SINK: &str = "bench_sink";
    /// Benchmarks only: the least a new flow's first packet needs (BENCH_FLOOR_OPS) on top
    /// of the forwarder with its state read.
    pub const BENCH_NEW_FLOW_FLOOR: &str = "bench_new_flow_floor";

    /// The XDP programs of the NAT's object, which the daemon loads (and the TC program,
    /// WAN_EGRESS).
    pub const NAT_XDP: &[&str] = &[LAN_INGRESS, WAN_INGRESS, PASS];
    /// The programs of the benchmarks' object, which only the bench loads.
    pub const BENCH_XDP: &[&str] = &[
        BENCH_FORWARD,
        BENCH_FORWARD_STATE,
        BENCH_GEN,
        BENCH_SINK,
        BENCH_NEW_FLOW_FLOOR,
    ];
}

/// The map operations of the new-flow floor (programs::BENCH_NEW_FLOW_FLOOR), on tables as
/// full as the NAT's, in the order the NAT makes them for a new endpoint's first packet;
/// bit i of the floor's BENCH_FLOOR_SKIP leaves operation i out, so that the bench can time
/// what each adds.
pub const BENCH_FLOOR_OPS: [&str; 5] = [
    "the flow's session looked up (a miss, SESSIONS)",
    "its endpoint's mapping looked up (a miss, MAPPINGS_OUT)",
    "an external port claimed, the key its replies find it by (MAPPINGS_IN)",
    "its endpoint's mapping inserted (MAPPINGS_OUT)",
    "its session inserted (SESSIONS)",
];

/// All of BENCH_FLOOR_OPS, as bits.
pub const BENCH_FLOOR_ALL: u32 = (1 << BENCH_FLOOR_OPS.len()) - 1;

/// The operations of BENCH_FLOOR_OPS (bits) that any NAT needs for a new flow: it is found,
/// recorded, and reachable by its replies. The other two are what endpoint-independent
/// mapping adds.
pub const BENCH_FLOOR_ANY_NAT: u32 = 0b10101;

/// The external port the new-flow floor tries at its `attempt`th draw for a flow from
/// `src`, port `sport` (wire order): spread over all ports as a NAT's random draws are, the
/// floor drawing again when it is taken (the benchmark's flows share a few source ports and
/// the first octets of their address, which alone would give a few dozen ports, every claim
/// but the first on each a collision with a bucket already in the caches).
pub const fn bench_floor_port(src: u32, sport: u16, attempt: u32) -> u16 {
    (fmix32(src ^ fmix32(sport as u32 | attempt << 16)) >> 16) as u16
}

/// MurmurHash3's finalizer: every input bit moves every output bit.
const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ h >> 16
}

/// Compile-time default capacities (docs/architecture.md, "Defaults"); nat-ctl overrides them
/// at load.
pub const DEFAULT_MAX_SESSIONS: u32 = 262_144;
pub const DEFAULT_MAX_MAPPINGS: u32 = 131_072;
/// Ports there are; PORT_POOL and PORT_IN_POOL have a bit each (ports::pool_bit).
pub const PORT_SLOTS: u32 = 65_536;
/// DEVMAP holds the LAN and WAN interfaces, keyed by ifindex.
pub const MAX_DEVICES: u32 = 64;
/// Most LAN-side prefixes and router addresses (LAN_PREFIXES): the LAN interface's addresses,
/// their subnets, and the routes through it.
pub const MAX_LAN_PREFIXES: u32 = 256;
/// LAN_PREFIXES values: a LAN subnet (or a network routed behind the LAN), and one of the
/// router's own addresses on the LAN interface (a /32, which wins the longest match).
pub const LAN_SIDE_PREFIX: u32 = 1;
pub const LAN_SIDE_ROUTER: u32 = 2;
pub const DEFAULT_MAX_PPTP_CALLS: u32 = 4096;
pub const DEFAULT_MAX_ESP_SPIS: u32 = 4096;
pub const DEFAULT_MAX_IKE_SAS: u32 = 4096;
pub const DEFAULT_MAX_FRAGS: u32 = 8192;
/// LAN hosts tracked for the per-host mapping quota.
pub const MAX_QUOTA_HOSTS: u32 = 65_536;
/// One pending ESP learner per server.
pub const MAX_ESP_PENDING: u32 = 1024;

/// Mapping states. A released mapping stays in MAPPINGS_IN as `COOLING` so its external port
/// is not handed out again for [`crate::config::PORT_REUSE_DELAY_SECS`] (RFC 6888 REQ-8).
pub const MAPPING_ACTIVE: u8 = 1;
pub const MAPPING_COOLING: u8 = 2;

/// Internal endpoint: the LAN host's address and source port (or ICMP echo id). Key of
/// MAPPINGS_OUT: endpoint-independent mapping (RFC 4787 REQ-1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<EndpointKey>() == 8);

/// External port (or ICMP id) on the WAN address. Key of MAPPINGS_IN.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExternalKey {
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<ExternalKey>() == 4);

/// A MAC address as a map key and a Mapping/Session field: its 6 bytes in the low bytes of a
/// little-endian u64.
pub const fn mac_key(mac: &[u8; 6]) -> u64 {
    // verifier: shifts, not from_le_bytes, whose 8-byte array takes stack in the programs.
    (mac[0] as u64)
        | (mac[1] as u64) << 8
        | (mac[2] as u64) << 16
        | (mac[3] as u64) << 24
        | (mac[4] as u64) << 32
        | (mac[5] as u64) << 40
}

/// One address+port mapping, the value of both MAPPINGS_OUT and MAPPINGS_IN.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    pub created_ns: u64,
    /// When the control plane released it (state `MAPPING_COOLING`); 0 while active.
    pub released_ns: u64,
    pub int_addr: u32,
    pub int_port: u16,
    pub ext_port: u16,
    pub proto: u8,
    pub state: u8,
    /// The LAN host's MAC address when the mapping was made, for the per-MAC share
    /// (`mac_key`; 0 for a host routed behind a LAN router). verifier: two integers, not a
    /// byte array, which compiles to a call of a byte-loop memset.
    pub mac_hi: u16,
    pub mac_lo: u32,
    /// A UDP mapping's first remote host (wire order), for address-dependent filtering in
    /// place of a FILTERS entry; 0 for none, or once the sweeper found no live session with
    /// it. Set in MAPPINGS_IN only.
    pub first_remote: u32,
    /// When `first_remote` was set, in units of 2^FIRST_REMOTE_TIME_SHIFT ns of the data
    /// path's clock: the sweeper keeps one set as it walks.
    pub first_remote_at: u32,
}

/// `Mapping::first_remote_at`'s unit: 2^30 ns, about a second.
pub const FIRST_REMOTE_TIME_SHIFT: u32 = 30;
const _: () = assert!(size_of::<Mapping>() == 40);

impl Mapping {
    /// Was it made after the last flush of UDP sessions (`NatConfig::flushed_ns`)? Only such
    /// a mapping's first remote host counts (and only such a mapping takes one).
    pub const fn made_after(&self, flushed_ns: u64) -> bool {
        self.created_ns > flushed_ns
    }

    /// `mac_hi`/`mac_lo` as one `mac_key`.
    pub const fn mac(&self) -> u64 {
        ((self.mac_hi as u64) << 32) | self.mac_lo as u64
    }

    pub fn set_mac(&mut self, mac: u64) {
        self.mac_hi = (mac >> 32) as u16;
        self.mac_lo = mac as u32;
    }
}

/// A session: mapping + remote endpoint (RFC 6146's session table). For ICMP echo the ports
/// are the id and 0. The FILTERS map reuses this key with `rem_port == 0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub int_addr: u32,
    pub rem_addr: u32,
    pub int_port: u16,
    pub rem_port: u16,
    pub proto: u8,
    pub _pad1: u8,
    pub _pad2: u16,
}
const _: () = assert!(size_of::<SessionKey>() == 16);

impl SessionKey {
    /// The session of `proto` between the internal and the remote endpoint. An ICMP echo
    /// session has the echo id as `int_port` and no remote port: `rem_port` is ignored.
    pub const fn new(
        proto: u8,
        int_addr: u32,
        int_port: u16,
        rem_addr: u32,
        rem_port: u16,
    ) -> Self {
        SessionKey {
            int_addr,
            rem_addr,
            int_port,
            rem_port: if proto == crate::proto::IPPROTO_ICMP {
                0
            } else {
                rem_port
            },
            proto,
            _pad1: 0,
            _pad2: 0,
        }
    }

    /// The key of this session's reply flow (FLOWS_IN), through external port `ext_port`.
    pub const fn reply_key(&self, ext_port: u16) -> ReplyKey {
        ReplyKey::new(self.proto, self.rem_addr, ext_port, self.rem_port)
    }

    /// The mapping this session belongs to.
    pub const fn endpoint(&self) -> EndpointKey {
        EndpointKey {
            addr: self.int_addr,
            port: self.int_port,
            proto: self.proto,
            _pad: 0,
        }
    }

    /// The address-dependent filter entry (remote port wildcarded) for this session.
    pub const fn filter_key(&self) -> SessionKey {
        SessionKey {
            rem_port: 0,
            ..*self
        }
    }
}

/// Where the FIB sent a flow's packets, kept with the flow so that the next packets skip
/// bpf_fib_lookup. It answers only while `route_gen` equals `NatConfig::route_gen` (which
/// the daemon bumps on every route, neighbour, address or link change), for at most
/// [`crate::config::FLOW_TTL_NS`] after the lookup while a lookup (of any flow's) gave the
/// same hop in the last [`crate::config::NEXT_HOP_TTL_NS`], and for packets no longer than
/// one the lookup passed (so the egress MTU was checked).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// Egress interface; 0 when nothing is cached.
    pub ifindex: u32,
    /// Largest IP total length the lookup was made for.
    pub max_len: u16,
    pub route_gen: u16,
    /// When it was looked up: bpf_ktime ns >> NEXT_HOP_TIME_SHIFT (about ms), wrapping.
    pub resolved: u32,
}
const _: () = assert!(size_of::<NextHop>() == 24);

impl NextHop {
    /// Nothing cached: the next packet asks the FIB.
    pub const NONE: NextHop = NextHop {
        dmac: [0; 6],
        smac: [0; 6],
        ifindex: 0,
        max_len: 0,
        route_gen: 0,
        resolved: 0,
    };
}

/// A session, the value of SESSIONS. Replies find it through their mapping (MAPPINGS_IN
/// gives the LAN endpoint, which with the remote endpoint is the key); the flow cache
/// (FLOWS_OUT, FLOWS_IN) spares established flows even that, and keeps their next hops.
///
/// 32 bytes, 112 of kernel memory with its key and the hash table's share. (It was 64, with
/// a next hop and room to spare, when every established packet read it; now only a packet
/// the flow cache misses does, about one per flow every few seconds.)
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Session {
    pub created_ns: u64,
    /// bpf_ktime (CLOCK_MONOTONIC) of the last packet either way that went past the flow
    /// cache (a cached flow comes back at least once per FLOW_TTL_NS).
    pub last_seen_ns: u64,
    pub ext_port: u16,
    /// `tcp_state` bits for TCP, 0 otherwise.
    pub tcp_state: u8,
    /// Passthrough class (`passthrough::CLASS_*`), fixed at creation.
    pub class: u8,
    /// How the session began: SESSION_OUTBOUND, or SESSION_FORWARDED (a WAN host through a
    /// port forward; it has no mapping of its own).
    pub origin: u8,
    /// Written by the sweeper's walk only: 1 once a walk found the session an orphan
    /// (nat_common::expiry), which the next walk confirms or clears.
    pub orphan_mark: u8,
    pub _pad: [u8; 2],
    /// The LAN host's MAC (`mac_key`) when the session was made, for the per-MAC share; 0
    /// for a host routed behind a LAN router.
    pub lan_mac: u64,
}
const _: () = assert!(size_of::<Session>() == 32);

impl Session {
    /// `tcp_state` is set from both directions at once (the LAN and WAN programs run on
    /// different CPUs). The BPF target's atomic OR works on aligned 64-bit words (32-bit ones
    /// need the v3 instruction set), so the bits are set with an atomic OR on the word that
    /// starts at `ext_port`, where they are bits 16..24 (the BPF target is little-endian); a
    /// plain write of the byte could undo the other side's FIN.
    pub const TCP_STATE_WORD_SHIFT: u32 = 16;
}
const _: () = assert!(
    core::mem::offset_of!(Session, ext_port) % 8 == 0
        && core::mem::offset_of!(Session, tcp_state)
            == core::mem::offset_of!(Session, ext_port) + 2
);

/// A reply flow: remote endpoint and external port, what a packet from the WAN names (the
/// key of FLOWS_IN; `SessionKey::reply_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyKey {
    pub rem_addr: u32,
    pub ext_port: u16,
    pub rem_port: u16,
    pub proto: u8,
    pub _pad1: u8,
    pub _pad2: u16,
}
const _: () = assert!(size_of::<ReplyKey>() == 12);

impl ReplyKey {
    /// Ports in wire order.
    pub const fn new(proto: u8, rem_addr: u32, ext_port: u16, rem_port: u16) -> Self {
        ReplyKey {
            rem_addr,
            ext_port,
            rem_port,
            proto,
            _pad1: 0,
            _pad2: 0,
        }
    }
}

/// A PPTP call seen from the WAN: server address + external call id (the id the server
/// writes into its GRE packets). Key of PPTP_CALLS_IN.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PptpCallKey {
    pub rem_addr: u32,
    pub call_id: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<PptpCallKey>() == 8);

/// A PPTP call seen from the LAN: client, server and the client's own call id. Key of
/// PPTP_CALLS_OUT.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PptpClientKey {
    pub int_addr: u32,
    pub rem_addr: u32,
    pub call_id: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<PptpClientKey>() == 12);

/// Value of both PPTP maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PptpCall {
    pub last_seen_ns: u64,
    pub int_addr: u32,
    pub rem_addr: u32,
    pub int_call_id: u16,
    pub ext_call_id: u16,
    pub _pad: u32,
}
const _: () = assert!(size_of::<PptpCall>() == 24);

/// An IKE SA through the shared external port 500: server + the client's SPI.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IkeKey {
    pub rem_addr: u32,
    pub _pad: u32,
    /// As on the wire, read as a native integer.
    pub spi: u64,
}
const _: () = assert!(size_of::<IkeKey>() == 16);

/// Owner of something learned about a LAN host: the value of IKE_SAS, ESP_IN, ESP_OUT and
/// ESP_PENDING. `spi` is ESP_OUT's learned inbound SPI (0: none yet) and ESP_PENDING's
/// outbound SPI of the learner; unused elsewhere.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub last_seen_ns: u64,
    pub int_addr: u32,
    pub spi: u32,
}
const _: () = assert!(size_of::<Owner>() == 16);

/// The one LAN host learning inbound SPIs from a server (value of ESP_PENDING): its window
/// opened at `started_ns`, by its outbound SA `spi`; `bound` SPIs bound to it in this window
/// so far (at most MAX_ESP_BINDINGS_PER_WINDOW).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EspLearner {
    pub started_ns: u64,
    pub int_addr: u32,
    pub spi: u32,
    pub bound: u64,
}
const _: () = assert!(size_of::<EspLearner>() == 24);

/// Inbound SPIs one learning window binds at most: a made-up SPI spoofed from the server
/// during the window binds to the learner (harmlessly: only the learner gets its packets)
/// without keeping the learner's real SPI from binding too; a spray of many cannot fill
/// ESP_IN.
pub const MAX_ESP_BINDINGS_PER_WINDOW: u64 = 4;
/// Peers the router itself runs IKE with (ROUTER_IPSEC_PEERS).
pub const MAX_ROUTER_IPSEC_PEERS: u32 = 1024;

/// Raw ESP from a server with the SPI the LAN host chose (ESP_IN), or from a LAN host to a
/// server with the server's SPI (ESP_OUT, `int_addr` set).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EspKey {
    pub int_addr: u32,
    pub rem_addr: u32,
    pub spi: u32,
}
const _: () = assert!(size_of::<EspKey>() == 12);

/// An id a remote peer chose and a LAN host sends it, which the NAT leaves as it is: the
/// server's PPTP call id in client -> server GRE, the SPI of an outbound ESP SA. An ICMP error
/// about such a packet quotes it with the WAN address as its source; this is how the error
/// finds its LAN host. Key of PEER_IDS.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerIdKey {
    pub rem_addr: u32,
    /// As on the wire, read as a native integer (a call id in the low 16 bits).
    pub id: u32,
    /// IPPROTO_GRE or IPPROTO_ESP.
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<PeerIdKey>() == 12);

/// The LAN host that sends a PeerIdKey's id, and what names its state: for GRE the client's
/// own call id (its PPTP_CALLS_OUT entry), for ESP the SA's SPI (its ESP_OUT entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerId {
    pub int_addr: u32,
    pub int_id: u32,
}
const _: () = assert!(size_of::<PeerId>() == 8);

/// Session::origin: a LAN host's packet made the session (through its mapping).
pub const SESSION_OUTBOUND: u8 = 0;
/// Session::origin: a WAN host's packet to a forwarded port made the session.
pub const SESSION_FORWARDED: u8 = 1;

/// A forwarded external port of the WAN address, and where it leads. Value of FORWARDS,
/// keyed by `ExternalKey` (protocol and port); a forward of a port range has an entry per
/// port, all naming the range.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forward {
    /// The LAN host.
    pub int_addr: u32,
    /// WAN sources allowed: those with `src & from_mask == from_net` (mask 0: any).
    pub from_net: u32,
    pub from_mask: u32,
    /// The LAN port for this external port.
    pub int_port: u16,
    /// The forward's external range, host order: this port is one of them.
    pub first_port: u16,
    pub last_port: u16,
    /// FORWARD_FROM_*: who made it.
    pub origin: u8,
    /// Removed (`nat-ctl forward del`, a lease that ended): it lets no new flow in, but
    /// stays until its sessions end, so that their packets keep finding the port the NAT's.
    pub retired: u8,
    /// For a lease (NAT-PMP, PCP): CLOCK_MONOTONIC second at which it ends; 0: never.
    pub expires_s: u32,
    /// New flows this port let in (sessions it made), counted with atomic adds.
    pub hits: u64,
    /// For a PCP lease: the mapping nonce, which a refresh or delete must repeat.
    pub nonce: [u8; 12],
    pub _pad2: u32,
}
const _: () = assert!(size_of::<Forward>() == 48);

impl Forward {
    /// Is a packet from WAN source `src` (wire order) allowed through?
    pub const fn admits(&self, src: u32) -> bool {
        src & self.from_mask == self.from_net
    }
}

/// Forward::origin: from the configuration file's `[[forward]]` tables (a reload makes
/// them what the file says).
pub const FORWARD_FROM_FILE: u8 = 1;
/// Forward::origin: from `nat-ctl forward add` (kept until `forward del`).
pub const FORWARD_FROM_COMMAND: u8 = 2;
/// Forward::origin: a NAT-PMP lease of the LAN host it leads to (RFC 6886).
pub const FORWARD_FROM_NATPMP: u8 = 3;
/// Forward::origin: a PCP MAP lease of the LAN host it leads to (RFC 6887).
pub const FORWARD_FROM_PCP: u8 = 4;
/// Forward::origin: a UPnP IGD AddPortMapping of the LAN host it leads to.
pub const FORWARD_FROM_UPNP: u8 = 5;

/// Forwarded external ports (FORWARDS), all forwards together: a port range counts a port
/// each.
pub const MAX_FORWARD_PORTS: u32 = 16_384;

/// FORWARD_HINTS: one bitmap of external ports (the FORWARDS keys), then one of LAN ports (the
/// FORWARDS_BY_LAN keys), each bit set when some forward of any protocol has that port. A
/// clear bit answers "not forwarded" from one word of a small array, so that a new flow pays
/// no lookup in the forward tables when its ports are not forwarded (most flows); a set bit
/// only means "look it up".
pub const FORWARD_HINT_WORDS: u32 = 2 * crate::ports::POOL_BITMAP_WORDS;

/// The FORWARD_HINTS word and bit of external `port` (host order).
pub const fn external_hint(port: u16) -> (u32, u64) {
    crate::ports::pool_bit(port)
}

/// The FORWARD_HINTS word and bit of LAN `port` (host order; 0 for a forward of GRE or ESP).
pub const fn lan_hint(port: u16) -> (u32, u64) {
    let (word, bit) = crate::ports::pool_bit(port);
    (crate::ports::POOL_BITMAP_WORDS + word, bit)
}

/// Peer ids remembered (PEER_IDS, an LRU: an id that falls out only leaves ICMP errors about
/// its packets to the router).
pub const MAX_PEER_IDS: u32 = 8192;

/// VPN state entries one LAN host may hold by default (NatConfig::vpn_state_per_host): a
/// quarter of the smallest table they go to (ESP learning windows), so no host can fill any
/// of them.
pub const DEFAULT_VPN_STATE_PER_HOST: u32 = {
    let mut m = DEFAULT_MAX_PPTP_CALLS;
    if DEFAULT_MAX_ESP_SPIS < m {
        m = DEFAULT_MAX_ESP_SPIS;
    }
    if DEFAULT_MAX_IKE_SAS < m {
        m = DEFAULT_MAX_IKE_SAS;
    }
    if MAX_ESP_PENDING < m {
        m = MAX_ESP_PENDING;
    }
    m / 4
};

/// First fragments one LAN host may start per FRAG_TIMEOUT_NS (HOST_FRAGS): a quarter of the
/// fragment table, which keeps entries that long, so that no host can crowd the others'
/// fragmented datagrams out of it.
pub const FRAG_STARTS_PER_HOST: u32 = DEFAULT_MAX_FRAGS / 4;

/// HOST_FRAGS keys: a MAC's `mac_key` (below 2^48), or a LAN address with this bit set.
pub const FRAG_ADDR_KEY: u64 = 1 << 48;

/// What one MAC address may hold of a per-host share: twice it, so that a host with a few
/// addresses of its own keeps working, while one that spoofs ever more addresses of the
/// subnet takes at most half of a table.
pub const MAC_SHARE_HOSTS: u32 = 2;

/// A LAN host's count of first fragments in its current window (HOST_FRAGS value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragQuota {
    pub window_start_ns: u64,
    pub started: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<FragQuota>() == 16);

/// An IPv4 datagram being fragmented, as its fragments arrive: addresses (as received),
/// IP id and protocol. Key of FRAGS.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: u32,
    pub dst: u32,
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<FragKey>() == 12);

/// How the first fragment was translated: the new address (source for LAN->WAN,
/// destination for WAN->LAN) the later fragments get.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragEntry {
    pub created_ns: u64,
    pub addr: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<FragEntry>() == 16);

#[cfg(feature = "user")]
// Every impl below rests on the one SAFETY comment at its head.
#[allow(clippy::undocumented_unsafe_blocks)]
mod pod {
    // SAFETY: all of these are #[repr(C)], hold only integers, and have explicit padding.
    unsafe impl aya::Pod for super::EndpointKey {}
    unsafe impl aya::Pod for super::ExternalKey {}
    unsafe impl aya::Pod for super::Mapping {}
    unsafe impl aya::Pod for super::SessionKey {}
    unsafe impl aya::Pod for super::Session {}
    unsafe impl aya::Pod for super::NextHop {}
    unsafe impl aya::Pod for super::ReplyKey {}
    unsafe impl aya::Pod for super::PptpCallKey {}
    unsafe impl aya::Pod for super::PptpClientKey {}
    unsafe impl aya::Pod for super::PptpCall {}
    unsafe impl aya::Pod for super::IkeKey {}
    unsafe impl aya::Pod for super::Owner {}
    unsafe impl aya::Pod for super::EspKey {}
    unsafe impl aya::Pod for super::EspLearner {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::FragEntry {}
    unsafe impl aya::Pod for super::PeerIdKey {}
    unsafe impl aya::Pod for super::PeerId {}
    unsafe impl aya::Pod for super::FragQuota {}
    unsafe impl aya::Pod for super::Forward {}
    unsafe impl aya::Pod for crate::expiry::SweepWalk {}
    unsafe impl aya::Pod for crate::expiry::Expiring {}
}

/// Benchmark traffic generator settings (BENCH_GEN map, one entry): the generator program
/// rewrites every header of each live frame from these, flow by flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BenchGen {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// First source address (wire order). Flow f is sent by LAN endpoint e = f / dst_ports
    /// (address src_addr + e / BENCH_PORTS_PER_HOST, port 10000 + e % BENCH_PORTS_PER_HOST)
    /// to port 9 + f % dst_ports of dst_addr.
    pub src_addr: u32,
    pub dst_addr: u32,
    pub flows: u32,
    /// Destination ports per LAN endpoint (0 counts as 1).
    pub dst_ports: u32,
}
const _: () = assert!(size_of::<BenchGen>() == 28);

/// Source ports per generator host (see BenchGen::src_addr).
pub const BENCH_PORTS_PER_HOST: u32 = 50_000;

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], integers and byte arrays only, size asserted.
unsafe impl aya::Pod for BenchGen {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{IPPROTO_ICMP, IPPROTO_UDP};

    #[test]
    fn an_icmp_echo_session_has_no_remote_port() {
        let icmp = SessionKey::new(IPPROTO_ICMP, 1, 7, 2, 7);
        assert_eq!((icmp.int_port, icmp.rem_port), (7, 0));
        let udp = SessionKey::new(IPPROTO_UDP, 1, 7, 2, 53);
        assert_eq!((udp.int_port, udp.rem_port), (7, 53));
    }

    /// The benchmark's new flows (240 hosts of one /24 sharing source ports, 20000 a round)
    /// claim nearly as many ports as flows, spread over the range: not a few dozen hot keys.
    #[test]
    fn the_floors_claims_spread_over_the_ports() {
        let flows = 20_000u32;
        let ports: std::collections::HashSet<u16> = (0..flows)
            .map(|i| {
                let host = u32::from_be_bytes([192, 168, 1, (10 + i % 240) as u8]).to_be();
                bench_floor_port(host, (1024 + i / 240) as u16, 0)
            })
            .collect();
        // Random draws of 20000 of 65536 ports hold about 17300 distinct ones.
        assert!(ports.len() > 16_500, "{} distinct ports", ports.len());
        let high = ports.iter().filter(|p| **p >= 32_768).count();
        assert!(
            high.abs_diff(ports.len() / 2) < ports.len() / 20,
            "{high} high"
        );
        // A second draw for the same flow is another port.
        assert_ne!(bench_floor_port(7, 1024, 0), bench_floor_port(7, 1024, 1));
    }
}
