// Empty library target: nat-ctl's build.rs depends on this crate so that cargo rebuilds the
// eBPF object when it changes (aya-build builds the binary target for the BPF target).
#![no_std]
