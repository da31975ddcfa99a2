//! Differential test of the data path against the reference model (tests/src/model.rs):
//! random sequences of packets from two LAN hosts, WAN peers and spoofers on both sides,
//! through the real programs (BPF_PROG_TEST_RUN), each verdict and each output frame compared
//! with what the model, written from the contract, says. The first packet of a flow takes the
//! full path and later ones the flow cache, so both are compared. A failing sequence is shrunk
//! by proptest and printed; XDP_NAT_MODEL_CASES runs more sequences.

use integration_tests::{
    fixture::*,
    model::{Event, Expect, Filtering, Hole, L4, LanSrc, Model, Remote, Target, WanSrc},
    packets::{ACK, Flags, SYN, SYN_ACK},
};
use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner},
};

fn l4() -> impl Strategy<Value = L4> {
    let fin = Flags {
        fin: true,
        ack: true,
        ..Flags::default()
    };
    prop_oneof![
        3 => Just(L4::Udp),
        1 => Just(L4::Tcp(SYN)),
        1 => Just(L4::Tcp(SYN_ACK)),
        2 => Just(L4::Tcp(ACK)),
        1 => Just(L4::Tcp(fin)),
        2 => Just(L4::Echo),
    ]
}

fn remote() -> impl Strategy<Value = Remote> {
    prop_oneof![4 => Just(Remote::Server), 3 => Just(Remote::Far), 1 => Just(Remote::RouterLan)]
}

fn remote_wan() -> impl Strategy<Value = Remote> {
    prop_oneof![Just(Remote::Server), Just(Remote::Far)]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        6 => (0usize..8).prop_map(Target::Mapped),
        1 => Just(Target::Unmapped),
        1 => Just(Target::Router),
    ]
}

/// Source ports: shared between the hosts (so one keeps it, the other gets another), a
/// privileged one, one at the top of the privileged range, the router's own, and IKE's port
/// to another port (ordinary NAPT, never the shared port 500).
fn sport() -> impl Strategy<Value = u16> {
    prop::sample::select(vec![20000u16, 20001, 40000, 53, 1023, 22, 500])
}

fn event() -> impl Strategy<Value = Event> {
    let host = 0usize..2;
    let lan_src = prop_oneof![
        8 => host.clone().prop_map(LanSrc::Host),
        1 => Just(LanSrc::Foreign),
        1 => Just(LanSrc::RouterLan),
    ];
    let wan_src = prop_oneof![
        6 => Just(WanSrc::Server),
        3 => Just(WanSrc::Far),
        1 => Just(WanSrc::SpoofLan),
        1 => Just(WanSrc::SpoofWan),
        1 => Just(WanSrc::Martian),
    ];
    let ttl = prop_oneof![9 => Just(64u8), 1 => Just(1u8)];
    prop_oneof![
        10 => (lan_src, l4(), sport(), remote(), prop::sample::select(vec![53u16, 80, 7000]), ttl.clone())
            .prop_map(|(src, l4, sport, to, dport, ttl)| Event::Out { src, l4, sport, to, dport, ttl }),
        10 => (wan_src, l4(), prop::sample::select(vec![53u16, 80, 7000, 9999]), target(), prop::bool::weighted(0.05), ttl)
            .prop_map(|(src, l4, sport, to, to_lan, ttl)| Event::In { src, l4, sport, to, to_lan, ttl }),
        3 => (host.clone(), l4(), sport(), target())
            .prop_map(|(host, l4, sport, to)| Event::Hairpin { host, l4, sport, to }),
        2 => (any::<bool>(), prop::option::weighted(0.8, 0usize..16))
            .prop_map(|(from_gateway, about)| Event::ErrorIn { from_gateway, about }),
        2 => (0usize..16).prop_map(|about| Event::ErrorOut { about }),
        2 => (host.clone(), remote(), 1u64..4).prop_map(|(host, to, spi)| Event::IkeOut { host, to, spi }),
        2 => (remote_wan(), 1u64..5).prop_map(|(from, spi)| Event::IkeIn { from, spi }),
        1 => (host.clone(), remote()).prop_map(|(host, to)| Event::NotIke500 { host, to }),
        2 => (host.clone(), remote(), 0xa0u32..0xa3).prop_map(|(host, to, spi)| Event::EspOut { host, to, spi }),
        2 => (remote_wan(), 0xb0u32..0xb7).prop_map(|(from, spi)| Event::EspIn { from, spi }),
        1 => (host.clone(), any::<bool>()).prop_map(|(host, ah)| Event::Untranslatable { host, ah }),
        2 => (host.clone(), remote(), prop::sample::select(vec![7u16, 8, 0x5000]))
            .prop_map(|(host, to, call_id)| Event::PptpCall { host, to, call_id }),
        2 => (remote_wan(), prop::option::weighted(0.9, 0usize..8))
            .prop_map(|(from, call)| Event::PptpReply { from, call }),
        1 => (host, remote(), prop::sample::select(vec![0x5000u16, 0x5001]))
            .prop_map(|(host, to, key)| Event::GreOut { host, to, key }),
        2 => (remote_wan(), prop::option::weighted(0.9, 0usize..8))
            .prop_map(|(from, call)| Event::GreIn { from, call }),
    ]
}

const XDP_NAMES: [&str; 5] = ["ABORTED", "DROP", "PASS", "TX", "REDIRECT"];

fn verdict(action: u32) -> &'static str {
    XDP_NAMES.get(action as usize).copied().unwrap_or("?")
}

/// How often each kind of packet met each outcome, over a whole run.
type Coverage = std::collections::BTreeMap<(String, String), usize>;

fn proto_name(l4: &L4) -> &'static str {
    match l4 {
        L4::Udp => "udp",
        L4::Tcp(_) => "tcp",
        L4::Echo => "echo",
    }
}

/// The kind of packet an event sends, by protocol where it has several.
fn kind(e: &Event) -> String {
    match e {
        Event::Out { l4, .. } => format!("out {}", proto_name(l4)),
        Event::In { l4, .. } => format!("in {}", proto_name(l4)),
        Event::Hairpin { l4, .. } => format!("hairpin {}", proto_name(l4)),
        Event::ErrorIn { .. } => "icmp error in".into(),
        Event::ErrorOut { .. } => "icmp error out".into(),
        Event::IkeOut { .. } => "ike out".into(),
        Event::IkeIn { .. } => "ike in".into(),
        Event::NotIke500 { .. } => "udp 500 not ike".into(),
        Event::EspOut { .. } => "esp out".into(),
        Event::EspIn { .. } => "esp in".into(),
        Event::Untranslatable { .. } => "untranslatable".into(),
        Event::PptpCall { .. } => "pptp call".into(),
        Event::PptpReply { .. } => "pptp reply".into(),
        Event::GreOut { .. } => "gre out".into(),
        Event::GreIn { .. } => "gre in".into(),
    }
}

/// Runs one sequence from empty state; Err names the first packet the two disagree on.
fn run_sequence(
    fx: &mut Fixture,
    filtering: Filtering,
    events: &[Event],
    coverage: &mut Coverage,
) -> Result<usize, TestCaseError> {
    fx.clear_state();
    let mut model = Model::new(filtering);
    for (i, e) in events.iter().enumerate() {
        let (lan, input, expect) = model.step(e);
        let before = match &expect {
            Expect::Drop(counter) => fx.counter(counter),
            _ => 0,
        };
        let (action, out) = if lan {
            fx.from_lan(&input)
        } else {
            fx.from_wan(&input)
        };
        let at = format!("{filtering:?}, packet {i} of {}: {e:?}", events.len());
        let outcome = match &expect {
            Expect::Drop(counter) => format!("drop {counter}"),
            Expect::Pass => "pass".into(),
            Expect::Forward(_) => "forward".into(),
            Expect::Adopt { holes, .. } => format!("forward, {} picked", holes.len()),
        };
        *coverage.entry((kind(e), outcome)).or_default() += 1;
        match expect {
            Expect::Drop(counter) => {
                prop_assert_eq!(verdict(action), "DROP", "{}", at);
                prop_assert_eq!(
                    fx.counter(counter),
                    before + 1,
                    "{}: not counted as {}",
                    at,
                    counter
                );
            }
            Expect::Pass => {
                prop_assert_eq!(verdict(action), "PASS", "{}", at);
                prop_assert_eq!(&out, &input, "{}: passed, but changed", at);
            }
            Expect::Forward(want) => {
                prop_assert_eq!(verdict(action), "REDIRECT", "{}", at);
                prop_assert_eq!(&out, &want, "{}: other bytes", at);
            }
            Expect::Adopt { holes, frame } => {
                prop_assert_eq!(verdict(action), "REDIRECT", "{}", at);
                let mut values = Vec::new();
                for hole in holes {
                    let offset = match hole {
                        Hole::Port { at, .. } | Hole::CallId { at, .. } => at,
                    };
                    prop_assert!(out.len() >= offset + 2, "{}: short output", at);
                    let v = u16::from_be_bytes([out[offset], out[offset + 1]]);
                    let adopted = match hole {
                        Hole::Port { ep, .. } => model.adopt(ep, v),
                        Hole::CallId { call, .. } => model.adopt_call(call, v),
                    };
                    adopted.map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                    values.push(v);
                }
                prop_assert_eq!(&out, &frame(&values), "{}: other bytes", at);
            }
        }
    }
    Ok(events.len())
}

/// Outcomes a run must have reached, or it proves nothing about them.
const MUST_REACH: &[(&str, &str)] = &[
    ("out udp", "forward"),
    ("out tcp", "forward"),
    ("out echo", "forward"),
    ("out udp", "forward, 1 picked"),
    ("out udp", "pass"),
    ("out udp", "drop drop_lan_source_foreign"),
    ("out tcp", "drop drop_lan_source_router"),
    ("in udp", "forward"),
    ("in tcp", "forward"),
    ("in echo", "forward"),
    ("in udp", "drop drop_martian_source"),
    ("in udp", "drop drop_wan_source_self"),
    ("in udp", "drop drop_to_lan_address"),
    ("in udp", "drop drop_no_mapping"),
    ("in tcp", "drop drop_unsolicited_tcp"),
    ("in echo", "pass"),
    ("hairpin udp", "forward"),
    ("hairpin tcp", "drop drop_no_mapping"),
    ("icmp error in", "forward"),
    ("icmp error in", "drop drop_icmp_error_no_session"),
    ("icmp error out", "forward"),
    ("ike out", "forward"),
    ("ike out", "drop drop_ike_spi_in_use"),
    ("ike in", "forward"),
    ("ike in", "drop drop_no_mapping"),
    ("udp 500 not ike", "forward, 1 picked"),
    ("esp out", "forward"),
    ("esp out", "drop drop_esp_learn_busy"),
    ("esp in", "forward"),
    ("esp in", "pass"),
    ("pptp call", "forward"),
    ("pptp call", "forward, 1 picked"),
    ("pptp reply", "forward"),
    ("pptp reply", "drop drop_unsolicited_tcp"),
    ("gre out", "forward"),
    ("gre in", "forward"),
    ("gre in", "pass"),
    ("untranslatable", "drop drop_ah"),
];

#[test]
fn the_data_path_does_what_the_model_says() {
    let cases: u32 = std::env::var("XDP_NAT_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    // A seed of its own each run (more sequences over time), printed so that a failure can be
    // replayed: XDP_NAT_MODEL_SEED=<seed>.
    let seed: u64 = std::env::var("XDP_NAT_MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("model: seed {seed} (XDP_NAT_MODEL_SEED={seed} replays this run)");
    let mut coverage = Coverage::new();
    let mut packets = 0;
    // Most sequences under the default filtering; the other two modes too.
    for (filtering, toml, share) in [
        (Filtering::AddressDependent, "", 2),
        (
            Filtering::EndpointIndependent,
            "filtering = \"endpoint-independent\"",
            1,
        ),
        (
            Filtering::AddressAndPortDependent,
            "filtering = \"address-and-port-dependent\"",
            1,
        ),
    ] {
        let config = FixtureConfig {
            toml: toml.into(),
            ..Default::default()
        };
        let (n, c) = with_fixture(default_tables(), config, |fx| {
            let mut seed_bytes = [0u8; 32];
            seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
            seed_bytes[8] = share;
            let mut runner = TestRunner::new_with_rng(
                Config {
                    cases: cases * share as u32 / 4,
                    failure_persistence: None,
                    ..Config::default()
                },
                TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
            );
            // proptest takes a Fn; the fixture is used by one sequence at a time.
            let fx = std::cell::RefCell::new(fx);
            let coverage = std::cell::RefCell::new(Coverage::new());
            let packets = std::cell::Cell::new(0usize);
            let result = runner.run(&prop::collection::vec(event(), 1..60), |events| {
                let n = run_sequence(
                    &mut fx.borrow_mut(),
                    filtering,
                    &events,
                    &mut coverage.borrow_mut(),
                )?;
                packets.set(packets.get() + n);
                Ok(())
            });
            if let Err(e) = result {
                panic!("the data path and the model disagree (seed {seed}): {e}");
            }
            (packets.get(), coverage.into_inner())
        });
        packets += n;
        for (k, v) in c {
            *coverage.entry(k).or_default() += v;
        }
    }
    eprintln!(
        "model: {cases} sequences, {packets} packets, every verdict, drop counter and output frame as the model says"
    );
    for ((kind, outcome), n) in &coverage {
        eprintln!("  {kind:<15} {outcome:<40} {n}");
    }
    for (kind, outcome) in MUST_REACH {
        assert!(
            coverage.contains_key(&(kind.to_string(), outcome.to_string())),
            "the run never reached {kind}: {outcome} (seed {seed})"
        );
    }
}
