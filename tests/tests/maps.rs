//! The maps of the built eBPF object and the list the loader pins (nat_common::maps::names)
//! are the same maps: a map missing from the list would not be pinned, and a restarted
//! daemon would lose what it holds. And the NAT's object holds the NAT's programs only: the
//! benchmark programs are in an object of their own, which loads too.

use nat_common::maps::{names, programs};
use std::collections::BTreeSet;

#[test]
fn every_map_of_the_object_is_pinned_or_known_to_be_scratch() {
    let ebpf = nat_ctl::loader::load(None, integration_tests::fixture::default_tables())
        .expect("load the eBPF object");
    // aya's own maps: the object's global data sections and aya-log's ring buffer.
    let in_object: BTreeSet<&str> = ebpf
        .maps()
        .map(|(name, _)| name)
        .filter(|n| !n.starts_with('.') && *n != "AYA_LOGS")
        .collect();
    let pinned: BTreeSet<&str> = names::ALL.iter().copied().collect();
    let scratch: BTreeSet<&str> = names::UNPINNED.iter().copied().collect();
    assert_eq!(pinned.len(), names::ALL.len(), "a name listed twice");
    let unlisted: Vec<_> = in_object
        .difference(&pinned)
        .filter(|n| !scratch.contains(*n))
        .collect();
    assert!(
        unlisted.is_empty(),
        "maps in the object that nothing pins: {unlisted:?}"
    );
    let missing: Vec<_> = pinned
        .union(&scratch)
        .filter(|n| !in_object.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "listed maps the object does not have: {missing:?}"
    );
}

#[test]
fn the_nat_object_holds_no_benchmark_program_and_the_bench_object_loads() {
    let tables = integration_tests::fixture::default_tables();
    let nat = nat_ctl::loader::load(None, tables).expect("load the NAT's object");
    let in_nat: BTreeSet<&str> = nat.programs().map(|(name, _)| name).collect();
    let mut expected: BTreeSet<&str> = programs::NAT_XDP.iter().copied().collect();
    expected.insert(programs::WAN_EGRESS);
    expected.insert(programs::SWEEP);
    assert_eq!(in_nat, expected, "the programs of the NAT's object");
    // Every benchmark program passes the verifier (load_bench loads each one).
    let bench = nat_ctl::loader::load_bench(tables).expect("load the benchmarks' object");
    let in_bench: BTreeSet<&str> = bench.programs().map(|(name, _)| name).collect();
    let expected: BTreeSet<&str> = programs::BENCH_XDP.iter().copied().collect();
    assert_eq!(in_bench, expected, "the programs of the benchmarks' object");
}
