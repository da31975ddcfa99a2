//! The data path of xdp-nat: parsing, translation, state and forwarding, shared by the two
//! eBPF objects built from this crate (one per binary target, aya-build in nat-ctl's build
//! script): the NAT's (main.rs, the programs the daemon loads) and the benchmarks'
//! (bin/bench.rs, which only `cargo xtask bench` loads). See docs/architecture.md for where each part of a packet's handling lives.
//!
//! Built for the host too, as a build-dependency of nat-ctl (so that cargo rebuilds the
//! objects when this crate changes); there the crate is empty.
#![cfg(target_arch = "bpf")]
#![no_std]
// Atomic add and OR on map values (per-host counts, TCP state bits): the BPF target's core
// has no atomic read-modify-write types; the intrinsics compile to BPF atomic instructions.
#![feature(core_intrinsics)]
#![allow(internal_features)]

pub mod egress;
pub mod fast;
pub mod flow_cache;
pub mod forward;
pub mod frag;
pub mod gate;
pub mod hairpin;
pub mod icmp_error;
pub mod lan;
pub mod lan_side;
pub mod maps;
pub mod mss;
pub mod packet;
pub mod refuse;
pub mod state;
pub mod sweep;
mod verdict;
pub mod vpn;
pub mod wan;

pub use verdict::{PPTP_FOLLOWUP, Verdict};
