//! Expiry over time, against a model: sessions made through the real data path, then
//! refreshed, established and closed as the data path records it, swept by the daemon's own
//! schedule (nat_ctl::sweeper::Schedule: walks of the whole table, and due checks of the
//! sessions a walk listed in between) on a simulated clock. After every sweep the table and
//! the per-host and per-MAC session counts must be what the model says: every session past
//! its deadline gone, no other one touched. The model's timeouts are its own table, from the
//! RFCs' rule (an established TCP session lasts long, an opening or closing one short).

use integration_tests::{
    fixture::*,
    lab::{LAN_HOST_A, LAN_HOST_B},
    packets::{self, SYN},
};
use nat_common::{
    config::Timeouts,
    maps::{SessionKey, mac_key},
    proto::{IPPROTO_TCP, IPPROTO_UDP},
    tcp_state::{FIN_IN, FIN_OUT, SYN_IN},
};
use nat_ctl::{sweeper::Schedule, wire::to_wire};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IteratorRandom};
use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    time::Duration,
};

const NS: u64 = 1_000_000_000;
const INTERVAL: Duration = Duration::from_secs(2);

/// Short enough that sessions come and go within a run; the transitory one the shortest.
const TIMEOUTS: Timeouts = Timeouts {
    udp: 120,
    tcp_established: 600,
    tcp_transitory: 30,
    icmp: 60,
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Udp,
    TcpOpening,
    TcpEstablished,
    TcpClosing,
}

/// The model's own timeout table.
fn timeout_secs(k: Kind) -> u64 {
    match k {
        Kind::Udp => 120,
        Kind::TcpEstablished => 600,
        Kind::TcpOpening | Kind::TcpClosing => 30,
    }
}

#[derive(Clone, Copy, Debug)]
struct Modelled {
    kind: Kind,
    last_seen_ns: u64,
    host: u32,
}

impl Modelled {
    fn deadline_ns(&self) -> u64 {
        self.last_seen_ns + timeout_secs(self.kind) * NS
    }
}

const HOSTS: [(Ipv4Addr, [u8; 6]); 2] = [(LAN_HOST_A, HOST_A_MAC), (LAN_HOST_B, HOST_B_MAC)];

/// Writes what the data path writes when a packet at `now_ns` crosses session `key`: its
/// timestamp, and the TCP state bits `add`.
fn touch(fx: &mut Fixture, key: &SessionKey, now_ns: u64, add: u8) {
    let mut s = fx
        .maps
        .sessions
        .get(key, 0)
        .expect("the session is in the table");
    s.last_seen_ns = now_ns;
    s.tcp_state |= add;
    fx.maps.sessions.insert(key, s, 0).unwrap();
}

/// One run: `secs` simulated seconds of sessions made, refreshed, established and closed at
/// random (`seed`), swept every INTERVAL. Gives the sessions the due checks removed and how
/// many sweeps walked, of how many.
fn run(fx: &mut Fixture, seed: u64, secs: u64) -> (usize, usize, usize) {
    fx.clear_state();
    let mut rng = StdRng::seed_from_u64(seed);
    // Ordered, so that a seed picks the same sessions each run.
    let mut model: BTreeMap<SessionKey, Modelled> = BTreeMap::new();
    // Walks planned as if each took a second, as at a few million sessions: every 28 s (the
    // shortest timeout less an interval), due checks in between.
    let mut schedule = Schedule::new(INTERVAL).assume_walks_take(Duration::from_secs(1));
    let start = nat_ctl::monotonic_ns();
    let (mut due_removed, mut walks, mut sweeps) = (0, 0, 0);
    for step in 1..=secs / INTERVAL.as_secs() {
        let sweep_at = start + step * INTERVAL.as_secs() * NS;
        // Two simulated seconds pass in a few real milliseconds: the flows cached since the
        // last step are retired, as they would have aged out (a cached flow comes back to
        // its session at least once per NEXT_HOP_TTL_NS, a second).
        fx.maps.bump_route_gen().unwrap();
        // Traffic in the second before the sweep.
        let now = sweep_at - NS;
        for _ in 0..rng.gen_range(0..4) {
            match rng.gen_range(0..10) {
                0..=2 => {
                    let h = rng.gen_range(0..HOSTS.len());
                    let (addr, mac) = HOSTS[h];
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
                    assert_eq!(fx.from_lan(&frame).0, XDP_REDIRECT, "seed {seed}");
                    // A SYN on a known 5-tuple starts it afresh once both sides closed it
                    // (RFC 793's TIME-WAIT reuse); before, it is a segment of that connection.
                    let kind = match model.get(&key) {
                        Some(m) if m.kind != Kind::TcpClosing => m.kind,
                        _ => kind,
                    };
                    touch(fx, &key, now, 0);
                    let host = to_wire(addr);
                    model.insert(
                        key,
                        Modelled {
                            kind,
                            last_seen_ns: now,
                            host,
                        },
                    );
                }
                3..=5 => {
                    // Traffic on a session the model has: a refresh, the handshake's end, or
                    // both FINs.
                    let Some((&key, m)) = model.iter_mut().choose(&mut rng) else {
                        continue;
                    };
                    let (kind, add) = match m.kind {
                        Kind::TcpOpening => (Kind::TcpEstablished, SYN_IN),
                        Kind::TcpEstablished if rng.gen_bool(0.5) => {
                            (Kind::TcpClosing, FIN_OUT | FIN_IN)
                        }
                        k => (k, 0),
                    };
                    m.kind = kind;
                    m.last_seen_ns = now;
                    touch(fx, &key, now, add);
                }
                _ => {}
            }
        }
        let walks_now = schedule.walks(sweep_at, &TIMEOUTS);
        let r = schedule
            .sweep(&mut fx.maps, &TIMEOUTS, sweep_at)
            .unwrap_or_else(|e| panic!("seed {seed}: sweep failed: {e:#}"));
        sweeps += 1;
        if walks_now {
            walks += 1;
        } else {
            due_removed += r.sessions_expired;
        }
        assert_eq!(r.orphans_removed, 0, "seed {seed} at {step}: {r:?}");

        // The model: what is due by now has gone, nothing else has.
        model.retain(|_, m| m.deadline_ns() > sweep_at);
        let table: HashMap<SessionKey, _> = fx.maps.sessions().unwrap().into_iter().collect();
        for (k, m) in &model {
            assert!(
                table.contains_key(k),
                "seed {seed}, sweep {step} ({}): {k:?} ({m:?}) is due in {} s, but went",
                if walks_now { "walk" } else { "due check" },
                (m.deadline_ns() - sweep_at) / NS
            );
        }
        for k in table.keys() {
            assert!(
                model.contains_key(k),
                "seed {seed}, sweep {step} ({}): {k:?} is past its deadline, but stays",
                if walks_now { "walk" } else { "due check" },
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
                "seed {seed}, sweep {step}: {addr}'s session count"
            );
            assert_eq!(
                count(fx.maps.mac_sessions.get(&mac_key(&mac), 0)),
                live,
                "seed {seed}, sweep {step}: {addr}'s MAC's session count"
            );
        }
    }
    (due_removed, walks, sweeps)
}

/// Between two walks the sweeps look only at the sessions the walk listed, yet every session
/// goes in the first sweep past its deadline: those made after the walk, and established
/// ones whose FINs shortened their timeout, are listed by the next walk in time.
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
