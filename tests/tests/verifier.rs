//! The kernel verifies every program before it runs, exploring its paths up to a limit of one
//! million instructions; a program past it does not load at all. A change that multiplies
//! what the verifier explores (a loop on the way to much code, a branch that narrows a
//! value the rest depends on) fails here, with the numbers, before it fails on a router.

use integration_tests::fixture::*;
use nat_common::maps::programs;

/// The kernel's limit (BPF_COMPLEXITY_LIMIT_INSNS).
const VERIFIER_LIMIT: u32 = 1_000_000;

#[test]
fn every_program_leaves_the_verifier_half_its_limit() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        for name in [
            programs::LAN_INGRESS,
            programs::WAN_INGRESS,
            programs::WAN_EGRESS,
        ] {
            let p = fx.ebpf.program(name).expect("program");
            let n = p
                .info()
                .expect("program info")
                .verified_instruction_count()
                .expect("the kernel reports verified instructions");
            eprintln!("{name}: {n} instructions verified");
            assert!(
                n < VERIFIER_LIMIT / 2,
                "{name}: the verifier explored {n} instructions, more than half its limit of {VERIFIER_LIMIT}"
            );
        }
    });
}
