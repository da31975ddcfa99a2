//! Expiry over time, against a model: sessions made, refreshed, established and closed by
//! packets through the real data path (BPF_PROG_TEST_RUN), swept by the daemon's own schedule
//! (nat_ctl::sweeper::Schedule: walks of the whole table, and due checks of the sessions a
//! walk listed in between) on a simulated clock. After every sweep the table and the
//! per-host and per-MAC session counts must be what the model says: every session past its
//! deadline gone, no other one touched. The model's timeouts are its own tables, from the
//! RFCs' rule (an established TCP session lasts long, an opening or closing one short).

use integration_tests::{
    fixture::*,
    lab::{LAN_HOST_A, LAN_HOST_B},
    packets::{self, ACK, Flags, SYN, SYN_ACK},
};
use nat_common::{
    config::{FLOW_TTL_NS, NatConfig, Timeouts},
    flow_cache,
    maps::{SessionKey, mac_key},
    proto::{IPPROTO_TCP, IPPROTO_UDP},
};
use nat_ctl::{loader::Tables, sweeper::Schedule, wire::to_wire};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IteratorRandom};
use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    time::Duration,
};

const NS: u64 = 1_000_000_000;
const INTERVAL: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Udp,
    TcpOpening,
    TcpEstablished,
    TcpClosing,
}

/// The timeouts of a run's two halves (a reload changes them halfway), as the daemon is told
/// them, and as the model reads them.
const BEFORE: Timeouts = Timeouts {
    udp: 120,
    tcp_established: 600,
    tcp_transitory: 30,
    icmp: 60,
};
const AFTER: Timeouts = Timeouts {
    udp: 150,
    tcp_established: 300,
    tcp_transitory: 20,
    icmp: 60,
};

/// The model's own timeout table: seconds for a session of `kind`, in a run's first half or
/// second (`reloaded`).
fn timeout_secs(kind: Kind, reloaded: bool) -> u64 {
    match (kind, reloaded) {
        (Kind::Udp, false) => 120,
        (Kind::Udp, true) => 150,
        (Kind::TcpEstablished, false) => 600,
        (Kind::TcpEstablished, true) => 300,
        (Kind::TcpOpening | Kind::TcpClosing, false) => 30,
        (Kind::TcpOpening | Kind::TcpClosing, true) => 20,
    }
}

#[derive(Clone, Copy, Debug)]
struct Modelled {
    kind: Kind,
    last_seen_ns: u64,
    host: u32,
    /// The remote side, for packets from the WAN.
    remote: Ipv4Addr,
}

impl Modelled {
    /// The timeout runs from the session's last packet, which a flow the flow cache carries
    /// may send up to FLOW_TTL_NS after the packet that stamped `last_seen_ns`
    /// (`a_session_lasts_its_timeout_after_a_packet_the_flow_cache_carried`).
    fn deadline_ns(&self, reloaded: bool) -> u64 {
        self.last_seen_ns + timeout_secs(self.kind, reloaded) * NS + FLOW_TTL_NS
    }
}

const HOSTS: [(Ipv4Addr, [u8; 6]); 2] = [(LAN_HOST_A, HOST_A_MAC), (LAN_HOST_B, HOST_B_MAC)];

const FIN_ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: true,
    rst: false,
};

/// Moves session `key`'s last packet onto the simulated clock (`now_ns`), where the data
/// path stamped it with the real one.
fn shift(fx: &mut Fixture, key: &SessionKey, now_ns: u64) {
    let mut s = fx
        .maps
        .sessions
        .get(key, 0)
        .expect("the session is in the table");
    s.last_seen_ns = now_ns;
    fx.maps.sessions.insert(key, s, 0).unwrap();
}

/// Sends `frame` in from the LAN (`lan`) or the WAN, which must be forwarded, and says
/// whether it stamped session `key` (the data path's clock moved its last packet to now):
/// a packet that changes a session's TCP state always does, as the sweeper's schedule
/// counts on; one a cached flow carries may not.
fn send(fx: &mut Fixture, lan: bool, frame: &[u8], key: &SessionKey) -> bool {
    let before = nat_ctl::monotonic_coarse_ns();
    let verdict = if lan {
        fx.from_lan(frame).0
    } else {
        fx.from_wan(frame).0
    };
    assert_eq!(verdict, XDP_REDIRECT);
    fx.maps
        .sessions
        .get(key, 0)
        .is_ok_and(|s| s.last_seen_ns >= before)
}

/// One run: `secs` simulated seconds of sessions made, refreshed, established and closed at
/// random (`seed`), swept every INTERVAL; halfway, a reload changes the timeouts, and at
/// three quarters a flush removes the TCP sessions. Gives the sessions the due checks
/// removed and how many sweeps walked, of how many.
fn run(fx: &mut Fixture, seed: u64, secs: u64) -> (usize, usize, usize) {
    fx.clear_state();
    let mut rng = StdRng::seed_from_u64(seed);
    // Ordered, so that a seed picks the same sessions each run.
    let mut model: BTreeMap<SessionKey, Modelled> = BTreeMap::new();
    // Walks planned as if each took 0.4 s, as at a few million sessions: every 16 s (40
    // times that), never further apart than the shortest timeout less an interval (28 s, and
    // 18 s after the reload); due checks in between.
    let mut schedule = Schedule::new(INTERVAL).assume_walks_take(Duration::from_millis(400));
    let start = nat_ctl::monotonic_ns();
    let steps = secs / INTERVAL.as_secs();
    let (mut due_removed, mut walks, mut sweeps) = (0, 0, 0);
    for step in 1..=steps {
        let sweep_at = start + step * INTERVAL.as_secs() * NS;
        let reloaded = step > steps / 2;
        // Two simulated seconds pass in a few real milliseconds: the flows cached since the
        // last step are retired, so that every packet below goes to its session and stamps
        // it as the model does (a cached flow that went on would come back to its session
        // at least once per FLOW_TTL_NS, which the model's deadline allows for).
        fx.maps.bump_route_gen().unwrap();
        // Traffic in the second before the sweep.
        let now = sweep_at - NS;
        for _ in 0..rng.gen_range(0..4) {
            if rng.gen_range(0..10) < 3 {
                let (addr, mac) = HOSTS[rng.gen_range(0..HOSTS.len())];
                let remote = Ipv4Addr::new(198, 51, 100, rng.gen_range(10..20));
                let (sport, dport) = (rng.gen_range(20000..20004), rng.gen_range(1..4));
                let hdr = lan_hdr(addr, mac, remote);
                let tcp = rng.gen_bool(0.5);
                let (proto, frame, kind) = if tcp {
                    let f = packets::tcp(&hdr, sport, dport, SYN, b"");
                    (IPPROTO_TCP, f, Kind::TcpOpening)
                } else {
                    (
                        IPPROTO_UDP,
                        packets::udp(&hdr, sport, dport, b"q"),
                        Kind::Udp,
                    )
                };
                let key = SessionKey::new(
                    proto,
                    to_wire(addr),
                    sport.to_be(),
                    to_wire(remote),
                    dport.to_be(),
                );
                // A SYN on a known 5-tuple starts it afresh once both sides closed it
                // (RFC 793's TIME-WAIT reuse); before, it is a segment of that connection.
                let kind = match model.get(&key) {
                    Some(m) if m.kind != Kind::TcpClosing => m.kind,
                    _ => kind,
                };
                let stamped = send(fx, true, &frame, &key);
                assert!(
                    stamped || !tcp,
                    "seed {seed}: a SYN left its session's last packet where it was"
                );
                shift(fx, &key, now);
                let host = to_wire(addr);
                model.insert(
                    key,
                    Modelled {
                        kind,
                        last_seen_ns: now,
                        host,
                        remote,
                    },
                );
                continue;
            }
            if rng.gen_range(0..7) >= 3 {
                continue;
            }
            // A packet on a session the model has: a refresh from the LAN, the handshake's
            // answer, or both FINs.
            let Some((&key, m)) = model.iter_mut().choose(&mut rng) else {
                continue;
            };
            let (addr, mac) = HOSTS
                .into_iter()
                .find(|(a, _)| to_wire(*a) == m.host)
                .unwrap();
            let (sport, dport) = (u16::from_be(key.int_port), u16::from_be(key.rem_port));
            let out = lan_hdr(addr, mac, m.remote);
            let ext_port = u16::from_be(fx.maps.sessions.get(&key, 0).unwrap().ext_port);
            let back = wan_hdr(m.remote, SERVER_MAC);
            match m.kind {
                Kind::Udp => {
                    send(fx, true, &packets::udp(&out, sport, dport, b"q"), &key);
                }
                Kind::TcpOpening => {
                    let answer = packets::tcp(&back, dport, ext_port, SYN_ACK, b"");
                    assert!(
                        send(fx, false, &answer, &key),
                        "seed {seed}: the SYN-ACK left its session's last packet where it was"
                    );
                    m.kind = Kind::TcpEstablished;
                }
                Kind::TcpEstablished if rng.gen_bool(0.5) => {
                    for (lan, frame) in [
                        (true, packets::tcp(&out, sport, dport, FIN_ACK, b"")),
                        (false, packets::tcp(&back, dport, ext_port, FIN_ACK, b"")),
                    ] {
                        assert!(
                            send(fx, lan, &frame, &key),
                            "seed {seed}: a FIN left its session's last packet where it was"
                        );
                    }
                    m.kind = Kind::TcpClosing;
                }
                Kind::TcpEstablished | Kind::TcpClosing => {
                    send(fx, true, &packets::tcp(&out, sport, dport, ACK, b""), &key);
                }
            }
            m.last_seen_ns = now;
            shift(fx, &key, now);
        }
        // At three quarters, `nat-ctl flush tcp`.
        if step == steps * 3 / 4 {
            fx.maps.flush(Some(IPPROTO_TCP)).unwrap();
            model.retain(|k, _| k.proto != IPPROTO_TCP);
        }
        let cfg = NatConfig {
            timeouts: if reloaded { AFTER } else { BEFORE },
            ..fx.maps.read_config().unwrap()
        };
        let walks_now = schedule.walks(sweep_at, &cfg);
        let r = schedule
            .sweep(&mut fx.maps, &cfg, sweep_at)
            .unwrap_or_else(|e| panic!("seed {seed}: sweep failed: {e:#}"));
        sweeps += 1;
        if walks_now {
            walks += 1;
        } else {
            due_removed += r.sessions_expired;
        }
        assert_eq!(r.orphans_removed, 0, "seed {seed} at {step}: {r:?}");

        // The model: what is due by now has gone, nothing else has.
        let sweep = if walks_now { "walk" } else { "due check" };
        model.retain(|_, m| m.deadline_ns(reloaded) > sweep_at);
        let table: HashMap<SessionKey, _> = fx.maps.sessions().unwrap().into_iter().collect();
        for (k, m) in &model {
            assert!(
                table.contains_key(k),
                "seed {seed}, sweep {step} ({sweep}): {k:?} ({m:?}) is due in {} s, but went",
                (m.deadline_ns(reloaded) - sweep_at) / NS
            );
        }
        for k in table.keys() {
            assert!(
                model.contains_key(k),
                "seed {seed}, sweep {step} ({sweep}): {k:?} is past its deadline, but stays",
            );
        }
        // And each host's and MAC's session counts are its live sessions.
        for (addr, mac) in HOSTS {
            let host = to_wire(addr);
            let live = model.values().filter(|m| m.host == host).count() as u32;
            let count = |n: Result<u32, _>| n.unwrap_or(0);
            assert_eq!(
                count(fx.maps.host_sessions.get(&host, 0)),
                live,
                "seed {seed}, sweep {step} ({sweep}): {addr}'s session count"
            );
            assert_eq!(
                count(fx.maps.mac_sessions.get(&mac_key(&mac), 0)),
                live,
                "seed {seed}, sweep {step} ({sweep}): {addr}'s MAC's session count"
            );
        }
    }
    (due_removed, walks, sweeps)
}

/// Between two walks the sweeps look only at the sessions the walk listed, yet every session
/// goes in the first sweep past its deadline: those made after the walk, and established
/// ones whose FINs shortened their timeout, are listed by the next walk in time; a reload
/// that shortens the timeouts, and a flush, make the next sweep walk.
#[test]
fn due_checks_between_walks_expire_every_session_in_time() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let (mut due_removed, mut walks, mut sweeps) = (0, 0, 0);
        for seed in 0..4 {
            let (d, w, s) = run(fx, seed, 400);
            due_removed += d;
            walks += w;
            sweeps += s;
        }
        eprintln!("{sweeps} sweeps, {walks} walks; the due checks removed {due_removed} sessions");
        // The due checks did the work, not walks in disguise.
        assert!(
            walks * 5 < sweeps,
            "{walks} of {sweeps} sweeps walked the table"
        );
        assert!(
            due_removed > 50,
            "the due checks removed only {due_removed} sessions"
        );
    });
}

/// When more sessions fall due before the next walk than the list holds, the sweep after
/// that walk walks again, and no session is left past its deadline.
#[test]
fn a_list_too_short_for_the_due_sessions_makes_the_next_sweep_walk() {
    let tables = Tables {
        max_sessions: 40_000,
        max_mappings: 1024,
    };
    let slots = nat_common::expiry::expiring_slots_for(tables.max_sessions);
    let config = FixtureConfig {
        toml: "[limits]\nsessions_per_host = 100000\n".into(),
        ..FixtureConfig::default()
    };
    with_fixture(tables, config, |fx| {
        // More sessions than the list holds, all made now, all due in one UDP timeout.
        let made = slots + slots / 4;
        let hdr = |i: u32| lan_hdr(LAN_HOST_A, HOST_A_MAC, Ipv4Addr::from(0xc633_6400 + i / 50));
        for i in 0..made {
            let frame = packets::udp(&hdr(i), 20000, 1 + (i % 50) as u16, b"q");
            assert_eq!(fx.from_lan(&frame).0, XDP_REDIRECT, "session {i}");
        }
        assert_eq!(fx.maps.sessions().unwrap().len(), made as usize);
        let start = nat_ctl::monotonic_ns();
        let cfg = NatConfig {
            timeouts: BEFORE,
            ..fx.maps.read_config().unwrap()
        };
        let mut schedule = Schedule::new(INTERVAL).assume_walks_take(Duration::from_secs(1));
        // From 100 s on, sweeps every interval. The first walks and plans its next for an
        // interval on; the second walks and plans its next 28 s on, so it lists everything
        // due in the 30 s after it: all the sessions, more than the list holds. So the third
        // walks too, whatever it had planned.
        // Sweeps every interval from `from` to `to`: whether each walked.
        let mut sweeps = |fx: &mut Fixture, from: u64, to: u64| {
            let mut kinds = Vec::new();
            let mut at = from;
            while at <= to {
                kinds.push(schedule.walks(at, &cfg));
                schedule.sweep(&mut fx.maps, &cfg, at).unwrap();
                at += INTERVAL.as_nanos() as u64;
            }
            kinds
        };
        // Due 120 s after they were made, plus FLOW_TTL_NS (4 s) for packets the flow cache
        // may have carried.
        let kinds = sweeps(fx, start + 100 * NS, start + 126 * NS);
        assert_eq!(
            kinds[..3],
            [true, true, true],
            "sweeps that walked, from 100 s on: {kinds:?}"
        );
        assert!(
            fx.maps.sessions().unwrap().is_empty(),
            "every session was due at 124 s; sweeps that walked, from 100 s on: {kinds:?}"
        );
        // Fewer, made 130 s on: a walk lists them all, and the sweeps after it are due
        // checks again.
        let start = start + 130 * NS;
        for i in 0..100 {
            let frame = packets::udp(&hdr(i), 20001, 1 + (i % 50) as u16, b"q");
            assert_eq!(fx.from_lan(&frame).0, XDP_REDIRECT);
            let key = SessionKey::new(
                IPPROTO_UDP,
                to_wire(LAN_HOST_A),
                20001u16.to_be(),
                to_wire(Ipv4Addr::from(0xc633_6400 + i / 50)),
                (1 + (i % 50) as u16).to_be(),
            );
            shift(fx, &key, start);
        }
        let kinds = sweeps(fx, start + 100 * NS, start + 128 * NS);
        assert!(
            kinds.iter().filter(|w| **w).count() == 1,
            "sweeps that walked, from 100 s on: {kinds:?}"
        );
        assert!(fx.maps.sessions().unwrap().is_empty());
    });
}

/// A flow the flow cache carries stamps its session only when it goes back to it, at most
/// FLOW_TTL_NS after the last stamp: its last packet may come that long after
/// `last_seen_ns`. The session must last its timeout counted from that packet (RFC 4787
/// REQ-5: a UDP mapping lasts at least two minutes, the least nat-ctl accepts), and go once
/// the timeout has run from the latest that packet can have come.
#[test]
fn a_session_lasts_its_timeout_after_a_packet_the_flow_cache_carried() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        fx.clear_state();
        let remote = Ipv4Addr::new(198, 51, 100, 7);
        let cfg = NatConfig {
            timeouts: BEFORE,
            ..fx.maps.read_config().unwrap()
        };
        let udp = u64::from(BEFORE.udp) * NS;
        within_half_a_ttl(|attempt| {
            // A new flow each time.
            let sport = 21000 + attempt;
            let frame = packets::udp(&lan_hdr(LAN_HOST_A, HOST_A_MAC, remote), sport, 53, b"q");
            let key = SessionKey::new(
                IPPROTO_UDP,
                to_wire(LAN_HOST_A),
                sport.to_be(),
                to_wire(remote),
                53u16.to_be(),
            );
            // The first packet makes the session, the second fills the flow cache; each
            // stamps the session.
            assert!(send(fx, true, &frame, &key));
            assert!(send(fx, true, &frame, &key));
            let stamp = fx.maps.sessions.get(&key, 0).unwrap().last_seen_ns;
            // The third packet comes as late as the entry still carries it, nearly FLOW_TTL_NS
            // after the stamp, its next hop checked a moment before (as another flow's packet
            // through the same gateway would have done).
            std::thread::sleep(Duration::from_nanos(FLOW_TTL_NS) - Duration::from_millis(400));
            let hop = fx.maps.cached_out(&key).unwrap().expect("cached").hop;
            let checked = flow_cache::stamp(nat_ctl::monotonic_coarse_ns());
            fx.maps.set_hop_checked(hop, checked).unwrap();
            let last = nat_ctl::monotonic_coarse_ns();
            let stamped = send(fx, true, &frame, &key);
            if nat_ctl::monotonic_coarse_ns() - stamp > FLOW_TTL_NS - 200_000_000 {
                // A loaded machine: the entry may have aged out.
                return None;
            }
            assert!(!stamped, "the flow cache carried the third packet");
            // Idle for a millisecond less than its timeout since that packet: it stays.
            let mut schedule = Schedule::new(INTERVAL);
            schedule
                .sweep(&mut fx.maps, &cfg, last + udp - 1_000_000)
                .unwrap();
            assert!(
                fx.maps.sessions.get(&key, 0).is_ok(),
                "the session went before it was idle for its timeout (stamped {} ms before \
                 its last packet)",
                (last - stamp) / 1_000_000
            );
            // The timeout has run from the latest its last packet can have come: it goes.
            schedule
                .sweep(&mut fx.maps, &cfg, stamp + udp + FLOW_TTL_NS)
                .unwrap();
            assert!(
                fx.maps.sessions.get(&key, 0).is_err(),
                "the session stays a timeout after the latest its last packet can have come"
            );
            Some(())
        });
    });
}
