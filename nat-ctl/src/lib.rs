//! nat-ctl: loads the xdp-nat XDP programs, configures and pins their maps, sweeps expired
//! sessions, and reads the pinned state back for the status/sessions/stats commands.

mod batch;
pub mod cli;
pub mod commands;
pub mod config;
mod daemon;
pub mod forwards;
pub mod kernel_log;
pub mod lan_side;
pub mod loader;
pub mod metrics;
pub mod netdev;
pub mod netlink;
pub mod passthrough;
pub mod pins;
pub mod pool;
pub mod portmap;
pub mod state;
pub mod sweeper;
pub mod sysctl;
mod test_run;
pub mod wire;

/// The NAT's eBPF object, built by build.rs from the nat-ebpf crate: what the daemon loads.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nat-ebpf"));

/// The benchmarks' eBPF object (nat-ebpf's bench binary): bare forwarders, a traffic
/// generator and a sink. Only `cargo xtask bench` loads it; nothing in the nat-ctl binary
/// refers to it, so the linker leaves it out there.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nat-ebpf-bench"));

/// Whole seconds of CLOCK_MONOTONIC, as leases count them (Forward::expires_s).
pub fn monotonic_secs() -> u32 {
    (monotonic_ns() / 1_000_000_000) as u32
}

/// Nanoseconds of CLOCK_MONOTONIC_COARSE: the clock bpf_ktime_get_coarse_ns reads (the
/// data path's, to the last timer tick).
pub fn monotonic_coarse_ns() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Nanoseconds of CLOCK_MONOTONIC: the clock bpf_ktime_get_ns reads.
pub fn monotonic_ns() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    // CLOCK_MONOTONIC always exists; a zero time would only make everything look old.
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}
