//! Everything the XDP programs and `nat-ctl` share: map keys and values, protocol constants,
//! counter names, and the pure packet logic (checksums, header rewrites, TCP state, port
//! selection). The eBPF crate calls these same functions; the host unit-tests them.
#![no_std]

pub mod checksum;
pub mod config;
pub mod counters;
pub mod expiry;
pub mod flow_cache;
pub mod layout;
pub mod maps;
pub mod passthrough;
pub mod ports;
pub mod proto;
pub mod rewrite;
pub mod tcp_state;
pub mod vpn;

#[cfg(test)]
extern crate std;
