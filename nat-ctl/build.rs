//! Builds the eBPF object (nat-ebpf) with aya-build so that `include_bytes_aligned!` can
//! embed it. Needs the nightly toolchain with rust-src and bpf-linker (`cargo xtask setup`).
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../nat-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "nat-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
