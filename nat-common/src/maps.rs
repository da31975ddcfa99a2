//! Map keys and values. One definition each, `#[repr(C)]` with explicit padding and a size
//! assertion, because the kernel and `nat-ctl` read the same bytes.
//!
//! Byte order: fields named `*_addr` and `*_port` hold the wire bytes read as a native
//! integer (`u32::from_ne_bytes(packet[..])`), so the data path never swaps; userspace
//! converts with `u32::from_be` / `u16::from_be` for display.

use core::mem::size_of;

/// Names of the maps in the object, as `nat-ctl` finds and pins them.
pub mod names {
    pub const CONFIG: &str = "CONFIG";
    pub const MAPPINGS_OUT: &str = "MAPPINGS_OUT";
    pub const MAPPINGS_IN: &str = "MAPPINGS_IN";
    pub const SESSIONS: &str = "SESSIONS";
    pub const FILTERS: &str = "FILTERS";
    pub const PORT_POOL: &str = "PORT_POOL";
    pub const PORT_IN_POOL: &str = "PORT_IN_POOL";
    pub const COUNTERS: &str = "COUNTERS";
    pub const DEVMAP: &str = "DEVMAP";
    /// Every map the control plane pins, in a stable order.
    pub const ALL: [&str; 9] = [
        CONFIG,
        MAPPINGS_OUT,
        MAPPINGS_IN,
        SESSIONS,
        FILTERS,
        PORT_POOL,
        PORT_IN_POOL,
        COUNTERS,
        DEVMAP,
    ];
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
}

/// Compile-time default capacities (DESIGN.md "Defaults"); nat-ctl overrides them at load.
pub const DEFAULT_MAX_SESSIONS: u32 = 262_144;
pub const DEFAULT_MAX_MAPPINGS: u32 = 131_072;
/// Port numbers index PORT_POOL / PORT_IN_POOL directly.
pub const PORT_SLOTS: u32 = 65_536;
/// DEVMAP holds the LAN and WAN interfaces, keyed by ifindex.
pub const MAX_DEVICES: u32 = 64;

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
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<Mapping>() == 32);

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
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<SessionKey>() == 16);

impl SessionKey {
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

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Session {
    pub created_ns: u64,
    /// bpf_ktime_get_ns (CLOCK_MONOTONIC) of the last packet in either direction.
    pub last_seen_ns: u64,
    pub ext_port: u16,
    /// `tcp_state` bits for TCP, 0 otherwise.
    pub tcp_state: u8,
    pub _pad: [u8; 5],
}
const _: () = assert!(size_of::<Session>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], hold only integers, and have explicit padding.
    unsafe impl aya::Pod for super::EndpointKey {}
    unsafe impl aya::Pod for super::ExternalKey {}
    unsafe impl aya::Pod for super::Mapping {}
    unsafe impl aya::Pod for super::SessionKey {}
    unsafe impl aya::Pod for super::Session {}
}
