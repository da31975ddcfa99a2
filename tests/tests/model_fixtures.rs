//! Differential test of the data path against the reference model (tests/src/model.rs):
//! random sequences of packets from two LAN hosts, WAN peers and spoofers on both sides,
//! through the real programs (BPF_PROG_TEST_RUN), each verdict and each output frame compared
//! with what the model, written from the contract, says. The first packet of a flow takes the
//! full path and later ones the flow cache, so both are compared. A failing sequence is shrunk
//! by proptest and printed; XDP_NAT_MODEL_CASES runs more sequences.

use integration_tests::{
    fixture::*,
    model::{Event, Expect, L4, LanSrc, Model, Remote, Target, WanSrc},
    packets::{ACK, Flags, SYN, SYN_ACK},
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
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

/// How often each kind of event met each expectation, over a whole run.
type Coverage = std::collections::BTreeMap<(&'static str, &'static str), usize>;

fn kind(e: &Event) -> &'static str {
    match e {
        Event::Out { .. } => "out",
        Event::In { .. } => "in",
        Event::Hairpin { .. } => "hairpin",
        Event::ErrorIn { .. } => "icmp error in",
        Event::ErrorOut { .. } => "icmp error out",
        Event::IkeOut { .. } => "ike out",
        Event::IkeIn { .. } => "ike in",
        Event::EspOut { .. } => "esp out",
        Event::EspIn { .. } => "esp in",
        Event::Untranslatable { .. } => "untranslatable",
        Event::PptpCall { .. } => "pptp call",
        Event::PptpReply { .. } => "pptp reply",
        Event::GreOut { .. } => "gre out",
        Event::GreIn { .. } => "gre in",
    }
}

/// Runs one sequence from empty state; Err names the first packet the two disagree on.
fn run_sequence(
    fx: &mut Fixture,
    events: &[Event],
    coverage: &mut Coverage,
) -> Result<usize, TestCaseError> {
    fx.clear_state();
    let mut model = Model::new();
    for (i, e) in events.iter().enumerate() {
        let (lan, input, expect) = model.step(e);
        let (action, out) = if lan {
            fx.from_lan(&input)
        } else {
            fx.from_wan(&input)
        };
        let at = format!("packet {i} of {}: {e:?}", events.len());
        let outcome = match &expect {
            Expect::Drop => "drop",
            Expect::Pass => "pass",
            Expect::Forward(_) => "forward",
            Expect::NewMapping { .. } => "forward, new port",
            Expect::NewCallId { .. } => "forward, new call id",
        };
        *coverage.entry((kind(e), outcome)).or_default() += 1;
        match expect {
            Expect::Drop => prop_assert_eq!(verdict(action), "DROP", "{}", at),
            Expect::Pass => {
                prop_assert_eq!(verdict(action), "PASS", "{}", at);
                prop_assert_eq!(&out, &input, "{}: passed, but changed", at);
            }
            Expect::Forward(want) => {
                prop_assert_eq!(verdict(action), "REDIRECT", "{}", at);
                prop_assert_eq!(&out, &want, "{}: other bytes", at);
            }
            Expect::NewMapping { ep, port_at, frame } => {
                prop_assert_eq!(verdict(action), "REDIRECT", "{}", at);
                prop_assert!(out.len() >= port_at + 2, "{}: short output", at);
                let port = u16::from_be_bytes([out[port_at], out[port_at + 1]]);
                model
                    .adopt(ep, port)
                    .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                prop_assert_eq!(&out, &frame(port), "{}: other bytes", at);
            }
            Expect::NewCallId { call, id_at, frame } => {
                prop_assert_eq!(verdict(action), "REDIRECT", "{}", at);
                prop_assert!(out.len() >= id_at + 2, "{}: short output", at);
                let id = u16::from_be_bytes([out[id_at], out[id_at + 1]]);
                model
                    .adopt_call(call, id)
                    .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                prop_assert_eq!(&out, &frame(id), "{}: other bytes", at);
            }
        }
    }
    Ok(events.len())
}

#[test]
fn the_data_path_does_what_the_model_says() {
    let cases: u32 = std::env::var("XDP_NAT_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let packets = std::cell::Cell::new(0usize);
        // proptest takes a Fn; the fixture is used by one sequence at a time.
        let fx = std::cell::RefCell::new(fx);
        let coverage = std::cell::RefCell::new(Coverage::new());
        let result = runner.run(&prop::collection::vec(event(), 1..60), |events| {
            let n = run_sequence(&mut fx.borrow_mut(), &events, &mut coverage.borrow_mut())?;
            packets.set(packets.get() + n);
            Ok(())
        });
        if let Err(e) = result {
            panic!("the data path and the model disagree: {e}");
        }
        let coverage = coverage.into_inner();
        eprintln!(
            "model: {cases} sequences, {} packets, every verdict and output frame as the model says",
            packets.get()
        );
        for ((kind, outcome), n) in &coverage {
            eprintln!("  {kind:<15} {outcome:<18} {n}");
        }
        // A run that never reached a case proves nothing about it.
        for kind in [
            "out",
            "in",
            "hairpin",
            "icmp error in",
            "icmp error out",
            "ike out",
            "ike in",
            "esp out",
            "esp in",
            "pptp call",
            "pptp reply",
            "gre out",
            "gre in",
        ] {
            assert!(
                coverage.contains_key(&(kind, "forward")) || kind == "out" || kind == "hairpin",
                "no {kind} packet was forwarded in the whole run"
            );
        }
        for case in [
            ("out", "forward, new port"),
            ("out", "pass"),
            ("in", "drop"),
            ("hairpin", "forward"),
            ("pptp call", "forward, new call id"),
        ] {
            assert!(coverage.contains_key(&case), "never reached: {case:?}");
        }
    });
}
