//! The kernel verifies every program before it runs, exploring its paths up to a limit of one
//! million instructions and 512 bytes of stack over a call chain; a program past either does
//! not load at all. A change that multiplies what the verifier explores (a loop on the way to
//! much code, a branch that narrows a value the rest depends on) or grows a frame fails here,
//! with the numbers, before it fails on a router. At every log level the daemon offers: the
//! data path's log lines are code the verifier explores only when their level is on.

use nat_common::maps::programs;
use nat_ctl::{config::LogLevel, loader};

/// The kernel's limit (BPF_COMPLEXITY_LIMIT_INSNS).
const VERIFIER_LIMIT: u32 = 1_000_000;

#[test]
fn every_program_leaves_the_verifier_half_its_limit_at_every_log_level() {
    for level in [
        LogLevel::Off,
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ] {
        let ebpf = loader::load_with_log(None, integration_tests::fixture::default_tables(), level)
            .unwrap_or_else(|e| panic!("at log level {level:?}: {e:#}"));
        for name in [
            programs::LAN_INGRESS,
            programs::WAN_INGRESS,
            programs::WAN_EGRESS,
            programs::SWEEP,
        ] {
            let p = ebpf.program(name).expect("program");
            let n = p
                .info()
                .expect("program info")
                .verified_instruction_count()
                .expect("the kernel reports verified instructions");
            eprintln!("{level:?} {name}: {n} instructions verified");
            assert!(
                n < VERIFIER_LIMIT / 2,
                "{name} at log level {level:?}: the verifier explored {n} instructions, more than half its limit of {VERIFIER_LIMIT}"
            );
        }
    }
}
