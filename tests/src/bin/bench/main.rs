//! `cargo xtask bench [--short]`: per-packet program cost of the NAT next to a parse-only
//! baseline in the same object, both measured by the kernel (BPF_PROG_TEST_RUN) in the same
//! run, with 1 K, 64 K and 1 M live sessions and lookups spread over the whole table; and
//! the memory every table takes. Prints a table; without --short also writes BENCHMARKS.md.
//!
//! Each packet is run once (repeat = 1): the NAT rewrites the packet in place, so a repeated
//! run would measure the second pass over an already translated packet. The kernel's
//! duration for one run includes two clock reads; the baseline pays the same.

use anyhow::{Context as _, Result};
use aya::{Ebpf, maps::DevMapHash};
use integration_tests::{
    fixture::*,
    lab::{LAN_HOST_A, ROUTER_WAN, SERVER},
    packets::{self, ACK, SYN, SYN_ACK},
};
use nat_common::{
    config::Timeouts,
    counters::Counter,
    maps::{
        BENCH_FLOOR_ALL, BENCH_FLOOR_ANY_NAT, BENCH_FLOOR_OPS, EndpointKey, ExternalKey,
        MAPPING_ACTIVE, Mapping, Session, SessionKey, names, programs,
    },
    proto::{IPPROTO_ESP, IPPROTO_GRE, IPPROTO_TCP, IPPROTO_UDP},
    tcp_state::{SYN_IN, SYN_OUT},
    vpn::PPTP_OUT_CALL_REQUEST,
};
use nat_ctl::{loader::Tables, monotonic_ns, wire::to_wire};
use rand::{Rng, SeedableRng, rngs::StdRng};

mod forwarding;
mod profile;
use std::{fmt::Write as _, net::Ipv4Addr, process::Command, time::Duration};

/// LAN hosts used for the synthetic sessions: 192.168.1.10 - 192.168.1.249.
const HOSTS: u32 = 240;
/// Mappings in the tables (the pool has ~64 K ports; the rest of the sessions share them).
const MAX_PREFILLED_MAPPINGS: u32 = 30_000;

struct Flow {
    int_addr: Ipv4Addr,
    int_port: u16,
    rem_addr: Ipv4Addr,
    ext_port: u16,
}

fn host(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 1, 10 + (i % HOSTS) as u8)
}

fn host_mac(i: u32) -> packets::Mac {
    [2, 0, 0, 1, 0, 10 + (i % HOSTS) as u8]
}

/// Fills the tables with `sessions` sessions of `proto` (established TCP, or UDP) over at
/// most MAX_PREFILLED_MAPPINGS mappings of LAN hosts `host(0..)`, each to its own remote
/// (beyond the gateway): UDP ones with their remote host remembered for filtering, as the
/// data path does (the first in the mapping, the others in FILTERS). Their last packets are
/// spread evenly over the `idle_up_to_ns` before now (0: all now).
pub(crate) fn prefill(
    maps: &mut nat_ctl::state::NatMaps,
    sessions: u32,
    host: fn(u32) -> Ipv4Addr,
    proto: u8,
    idle_up_to_ns: u64,
) -> Result<Vec<Flow>> {
    let now = monotonic_ns();
    let idle = |i: usize| (i as u64 * idle_up_to_ns / u64::from(sessions)).min(now);
    let mappings = sessions.min(MAX_PREFILLED_MAPPINGS);
    let per_mapping = sessions.div_ceil(mappings);
    let mut flows = Vec::with_capacity(sessions as usize);
    for m in 0..mappings {
        let (int_addr, int_port, ext_port) = (host(m), 1024 + (m / HOSTS) as u16, 1024 + m as u16);
        let rem_addr =
            |r: u32| Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 1)) + r * 1000 + m % 1000);
        let mapping = Mapping {
            created_ns: now,
            released_ns: 0,
            int_addr: to_wire(int_addr),
            int_port: int_port.to_be(),
            ext_port: ext_port.to_be(),
            proto,
            state: MAPPING_ACTIVE,
            first_remote: if proto == IPPROTO_UDP {
                to_wire(rem_addr(0))
            } else {
                0
            },
            ..Default::default()
        };
        let ep = EndpointKey {
            addr: mapping.int_addr,
            port: mapping.int_port,
            proto,
            _pad: 0,
        };
        maps.mappings_out.insert(ep, mapping, 0)?;
        maps.mappings_in.insert(
            ExternalKey {
                port: mapping.ext_port,
                proto,
                _pad: 0,
            },
            mapping,
            0,
        )?;
        for r in 0..per_mapping {
            if flows.len() as u32 == sessions {
                break;
            }
            let rem_addr = rem_addr(r);
            let key = SessionKey::new(
                proto,
                mapping.int_addr,
                mapping.int_port,
                to_wire(rem_addr),
                443u16.to_be(),
            );
            let seen = now - idle(flows.len());
            let s = Session {
                created_ns: seen,
                last_seen_ns: seen,
                ext_port: mapping.ext_port,
                tcp_state: if proto == IPPROTO_TCP {
                    SYN_OUT | SYN_IN
                } else {
                    0
                },
                class: 0,
                ..Default::default()
            };
            maps.sessions
                .insert(key, s, 0)
                .context("prefilling SESSIONS")?;
            // Each with its own remote host: a filter entry each for UDP but the first, kept
            // in the mapping, as the data path makes them (TCP sessions have none).
            if proto == IPPROTO_UDP && r > 0 {
                maps.filters
                    .insert(key.filter_key(), now, 0)
                    .context("prefilling FILTERS")?;
            }
            flows.push(Flow {
                int_addr,
                int_port,
                rem_addr,
                ext_port,
            });
        }
    }
    let held = maps.mapping_keys()?;
    maps.write_ports_taken(&held)?;
    Ok(flows)
}

/// Permanent neighbour entries for the synthetic LAN hosts, so replies take the XDP
/// redirect path. Runs in the fixture's namespace (children inherit the thread's).
fn add_neighbours() -> Result<()> {
    let mut batch = String::new();
    for i in 0..HOSTS {
        let m = host_mac(i);
        let mac = m
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        writeln!(
            batch,
            "neigh replace {} lladdr {mac} dev lan0 nud permanent",
            host(i)
        )?;
    }
    let path = std::env::temp_dir().join(format!("bench-neigh-{}", std::process::id()));
    std::fs::write(&path, batch)?;
    let ok = Command::new("ip")
        .arg("-batch")
        .arg(&path)
        .status()?
        .success();
    let _ = std::fs::remove_file(path);
    anyhow::ensure!(ok, "ip -batch neigh failed");
    Ok(())
}

/// What the NAT has seen of a scenario's flows before its packets are timed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prep {
    /// Nothing: the frames are timed as they come.
    None,
    /// Every frame ran once, untimed, less than a second before (in chunks of WARM_CHUNK),
    /// after the route generation moved on: established flows in steady state, whose flow
    /// cache entries answer and whose next hops were checked.
    Warm,
    /// Warm, then left alone for longer than FLOW_TTL_NS, each frame being of another
    /// flow: every timed packet finds its entry expired, goes back to its session and looks
    /// its route up again, as one packet per flow does every FLOW_TTL_NS.
    Expired,
}

/// Frames warmed, then timed, at a time: each runs in about 1.3 us, so a chunk's timed packets
/// follow their warm-up (and the last check of their next hop) well within NEXT_HOP_TTL_NS
/// (1 s), while a chunk still touches far more sessions than the caches hold.
const WARM_CHUNK: usize = 250_000;

/// What one program measured of a scenario, over its rounds.
struct Cost {
    /// Mean kernel-measured ns per packet, best of the rounds.
    ns: f64,
    /// Verdict of the last packet.
    action: u32,
    /// Packets of the benchmarks' programs (round_bench) that were not redirected.
    not_redirected: usize,
    /// Flow cache fills and timed packets over all rounds: their ratio is the share of
    /// packets that missed the cache and went to the session tables (0 for the baselines).
    filled: u64,
    timed: usize,
    /// Each round's ns per packet, in order.
    per_round: Vec<f64>,
}

impl Cost {
    fn new() -> Cost {
        Cost {
            ns: f64::MAX,
            action: 0,
            not_redirected: 0,
            filled: 0,
            timed: 0,
            per_round: Vec::new(),
        }
    }

    /// Records one round's `total` over `packets`.
    fn record(&mut self, total: Duration, packets: usize) {
        let ns = total.as_nanos() as f64 / packets.max(1) as f64;
        self.per_round.push(ns);
        self.ns = self.ns.min(ns);
    }

    fn fills(&self) -> f64 {
        self.filled as f64 / self.timed.max(1) as f64
    }

    /// Runs `frames` through `prog` once more (one round), warmed as `prep` says.
    fn round(
        &mut self,
        fx: &mut Fixture,
        prog: &str,
        ifindex: u32,
        prep: Prep,
        frames: &[Vec<u8>],
    ) {
        let fills = |fx: &Fixture| fx.maps.counter(Counter::FlowCacheFilled).unwrap_or(0);
        let mut total = Duration::ZERO;
        for chunk in frames.chunks(WARM_CHUNK) {
            if prep != Prep::None {
                // Every flow of the chunk looks its route up again (and refills its flow
                // cache entry) in the warm-up, as after a route change: the timed packets
                // then all come well within NEXT_HOP_TTL_NS of their hop's last check. Without
                // this, hops checked by an earlier chunk would expire during this one's
                // timed pass, mixing renewals (their own row) into these.
                fx.maps.bump_route_gen().expect("bump the route generation");
                for f in chunk {
                    fx.run_timed(prog, ifindex, f);
                }
            }
            if prep == Prep::Expired {
                std::thread::sleep(
                    Duration::from_nanos(nat_common::config::FLOW_TTL_NS)
                        + Duration::from_millis(100),
                );
            }
            let before = fills(fx);
            for f in chunk {
                let (a, _, d) = fx.run_timed(prog, ifindex, f);
                self.action = a;
                total += d;
            }
            self.filled += fills(fx) - before;
            self.timed += chunk.len();
        }
        self.record(total, frames.len());
    }

    /// One round of `frames` through `prog` of the benchmarks' object (a bare forwarder,
    /// stateless but for what it reads).
    fn round_bench(&mut self, bench: &Ebpf, prog: &str, ifindex: u32, frames: &[Vec<u8>]) {
        let mut total = Duration::ZERO;
        for f in frames {
            let (a, _, d) = xdp_test_run(bench, prog, ifindex, f);
            self.action = a;
            self.not_redirected += usize::from(a != XDP_REDIRECT);
            total += d;
        }
        self.timed += frames.len();
        self.record(total, frames.len());
    }
}

struct Row {
    scenario: &'static str,
    sessions: u32,
    nat_ns: f64,
    base_ns: f64,
    /// The bare forwarder (fib lookup + redirect) on the same frames.
    fwd_ns: f64,
    /// The bare forwarder reading one 32-byte entry of per-flow state per packet.
    state_ns: f64,
    action: u32,
    /// Share of the NAT's timed packets that missed the flow cache.
    fills: f64,
    /// NAT less forwarder + state read, round by round (the two ran one after the other):
    /// the spread behind the best-of figures.
    paired: Vec<f64>,
    /// The new-flow scenario only: the least a new flow needs here (`new_flow_floor`).
    floor: Option<Floor>,
}

/// `r` as `show` writes it, or `none` for a rate that could not be measured (NaN).
fn shown(r: f64, none: &str, show: impl FnOnce(f64) -> String) -> String {
    if r.is_nan() {
        none.to_string()
    } else {
        show(r)
    }
}

/// The median of `v` (the mean of the middle two for an even count); NaN for none.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn action_name(a: u32) -> &'static str {
    match a {
        XDP_DROP => "DROP",
        XDP_PASS => "PASS",
        XDP_TX => "TX",
        XDP_REDIRECT => "REDIRECT",
        _ => "ABORTED",
    }
}

/// What the sweeper costs on a table of `sessions` UDP sessions turning over (measured at the
/// largest, `measure_size`).
#[derive(Clone, Copy)]
struct SweepCost {
    sessions: u32,
    /// A walk of the whole table that finds every session live and leaves the filter entries
    /// alone.
    live: Duration,
    /// The same walk, taking in the filter entries too (one walk in FILTER_WALK_EVERY).
    live_filters: Duration,
    /// The daemon's schedule run over SWEEP_SIMULATED on a simulated clock: its sweeps, the
    /// walks among them, what they all took, the longest due check, the sessions removed,
    /// and those left in the table past their deadline.
    sweeps: u32,
    walks: u32,
    took: Duration,
    longest_due: Duration,
    removed: usize,
    /// New sessions made after the sweeps, as many as went.
    made: u32,
    overdue: usize,
    /// Sessions that went before their deadline (must be none).
    early: usize,
    /// A sweep that finds every session expired and removes them all.
    expiring: Duration,
    expired: usize,
}

impl SweepCost {
    /// The share of one CPU the daemon's sweeps took at the default interval.
    fn share(&self) -> f64 {
        self.took.as_secs_f64() / SWEEP_SIMULATED.as_secs_f64()
    }
}

/// Live walks timed of each kind (the best is reported).
const SWEEP_ROUNDS: u32 = 3;

/// How long the daemon's schedule runs on the simulated clock.
const SWEEP_SIMULATED: Duration = Duration::from_secs(120);

/// Times the sweeper on `fx`'s tables (`flows`, from `prefill`), whose sessions were last
/// seen over the UDP timeout (less half a minute) before now: walks with every session live,
/// without and with the filter entries; the daemon's schedule (walks and due checks,
/// `sweeper::Schedule`, paced by its own `next_in`) for SWEEP_SIMULATED on a simulated clock,
/// as sessions fall due and as many new ones are made after each sweep (the table turns
/// over: each new one on a mapping of the table, to a remote host of its own, with its
/// filter entry, as the data path makes them); then a day later, when every one has expired.
fn sweep_cost(fx: &mut Fixture, flows: &[Flow]) -> Result<SweepCost> {
    let cfg = fx.maps.read_config()?;
    let t = cfg.timeouts;
    let timeout_ns = u64::from(t.udp) * 1_000_000_000;
    let now = monotonic_ns();
    // When each session was last seen (none is seen again), to tell which must have gone.
    let mut seen: Vec<u64> = fx
        .maps
        .sessions()?
        .iter()
        .map(|(_, s)| s.last_seen_ns)
        .collect();
    let sessions = seen.len() as u32;
    // Each kind of walk the best of SWEEP_ROUNDS, in turn, so that neither is always the
    // first on freshly filled tables.
    let (mut live, mut live_filters) = (Duration::MAX, Duration::MAX);
    for _ in 0..SWEEP_ROUNDS {
        let start = std::time::Instant::now();
        nat_ctl::sweeper::sweep_with(&mut fx.maps, &t, now, false)?;
        live = live.min(start.elapsed());
        let start = std::time::Instant::now();
        nat_ctl::sweeper::sweep(&mut fx.maps, &t, now)?;
        live_filters = live_filters.min(start.elapsed());
    }
    let interval = Duration::from_secs(nat_ctl::cli::DEFAULT_SWEEP_INTERVAL_SECS);
    let mut schedule = nat_ctl::sweeper::Schedule::new(interval);
    let (mut sweeps, mut walks, mut removed, mut made) = (0, 0, 0, 0u32);
    let (mut took, mut longest_due) = (Duration::ZERO, Duration::ZERO);
    let (mut at, mut last) = (now, now);
    while at < now + SWEEP_SIMULATED.as_nanos() as u64 {
        let walk = schedule.walks(at, &cfg);
        let start = std::time::Instant::now();
        let gone = schedule.sweep(&mut fx.maps, &cfg, at)?.sessions_expired;
        let this = start.elapsed();
        took += this;
        sweeps += 1;
        if walk {
            walks += 1;
        } else {
            longest_due = longest_due.max(this);
        }
        removed += gone;
        // As many new sessions as went, made just after the sweep.
        for _ in 0..gone {
            let f = &flows[made as usize % flows.len()];
            let key = SessionKey::new(
                IPPROTO_UDP,
                to_wire(f.int_addr),
                f.int_port.to_be(),
                to_wire(Ipv4Addr::from(0x6480_0000 + made)),
                443u16.to_be(),
            );
            let s = Session {
                created_ns: at,
                last_seen_ns: at,
                ext_port: f.ext_port.to_be(),
                ..Default::default()
            };
            fx.maps.sessions.insert(key, s, 0)?;
            // A full FILTERS only makes that session filter more strictly, as in the data path.
            let _ = fx.maps.filters.insert(key.filter_key(), at, 0);
            seen.push(at);
            made += 1;
        }
        last = at;
        at += schedule.next_in(at, this).as_nanos() as u64;
    }
    // By the last sweep every session whose UDP timeout ran out must have gone, and every
    // other one must still be there. (A timeout runs from the latest a session's last packet
    // can have come, which a cached flow sends up to STAMP_LAG_NS after the stamp.)
    let table: Vec<_> = fx.maps.sessions()?;
    let deadline = |seen: u64| seen + timeout_ns + nat_common::expiry::STAMP_LAG_NS;
    let overdue = table
        .iter()
        .filter(|(_, s)| deadline(s.last_seen_ns) <= last)
        .count();
    let due_later = seen.iter().filter(|&&s| deadline(s) > last).count();
    let early = due_later.saturating_sub(table.len() - overdue);
    let start = std::time::Instant::now();
    let r = nat_ctl::sweeper::sweep(&mut fx.maps, &t, now + 86_400 * 1_000_000_000)?;
    Ok(SweepCost {
        sessions,
        live,
        live_filters,
        sweeps,
        walks,
        took,
        longest_due,
        removed,
        made,
        overdue,
        early,
        expiring: start.elapsed(),
        expired: r.sessions_expired,
    })
}

/// The sweeper's section of the report.
fn sweep_section(report: &mut String, costs: &[SweepCost]) -> Result<()> {
    if costs.is_empty() {
        return Ok(());
    }
    writeln!(
        report,
        "\n## The sweeper (nat-ctl's expiry of sessions, in its own thread beside the daemon's event loop)\n\n\
         UDP sessions, each to a host of its own (remembered for filtering: a filter entry each, but a mapping's first), last seen at even steps over the UDP timeout ({udp} s) less half a minute, so that they fall due evenly, and after each sweep as many new ones as it removed, each with its filter entry: a full table turning over. The daemon's schedule (`sweeper::Schedule`, paced as in the daemon) ran for {sim} s on a simulated clock; the sweeps' own time is real. It sweeps every {interval} s: a walk of the whole table every {duty} times the last walk's length (within the shortest timeout, {shortest} s, less an interval; taking in the filter entries when walks are further apart than the interval), and in between a due check of the sessions the walk listed as due before the next. Each live walk is the best of {rounds}, the two kinds timed in turn.\n\n\
         | sessions | a walk, all live | with the filter entries | sweeps in {sim} s | walks (mean period) | removed, and made | gone early | left past their deadline | longest due check | share of one CPU | a sweep that removes every session | removed |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        udp = Timeouts::DEFAULT.udp,
        shortest =
            nat_ctl::sweeper::latest_walk_period(Duration::ZERO, &Timeouts::DEFAULT).as_secs(),
        interval = nat_ctl::cli::DEFAULT_SWEEP_INTERVAL_SECS,
        duty = nat_ctl::sweeper::FULL_WALK_DUTY,
        sim = SWEEP_SIMULATED.as_secs(),
        rounds = SWEEP_ROUNDS,
    )?;
    for c in costs {
        writeln!(
            report,
            "| {} | {:.2} s | {:.2} s | {} | {} ({:.0} s) | {}, {} | {} | {} | {:.1} ms | {:.1}% | {:.2} s | {} |",
            c.sessions,
            c.live.as_secs_f64(),
            c.live_filters.as_secs_f64(),
            c.sweeps,
            c.walks,
            SWEEP_SIMULATED.as_secs_f64() / f64::from(c.walks.max(1)),
            c.removed,
            c.made,
            c.early,
            c.overdue,
            c.longest_due.as_secs_f64() * 1e3,
            100.0 * c.share(),
            c.expiring.as_secs_f64(),
            c.expired
        )?;
    }
    writeln!(
        report,
        "\nA session goes in the first sweep past its deadline. At walks only: a mapping without sessions is released (in two walks), and a filter entry without sessions goes (within a walk, or {} sweeps when every sweep walks). Walks come closer together when the sessions due before the next would fill more than {:.0}% of the list (a quarter of the session table); when more fall due than it holds, the next sweep walks, and sweeps that would take more than 1/{} of a CPU stretch the interval (nat-ctl says so once in its log).",
        nat_ctl::sweeper::FILTER_WALK_EVERY,
        100.0 * nat_ctl::sweeper::LIST_FILL,
        nat_ctl::sweeper::SWEEP_DUTY,
    )?;
    Ok(())
}

/// Where a new flow's first packet spends its time, at each table size the three scenarios it
/// needs were measured at: the differences between a new flow, a new session of an existing
/// mapping, and a known session's packet past the flow cache, each measured in this run.
fn new_flow_section(report: &mut String, rows: &[Row]) -> Result<()> {
    let find = |scenario: &str, sessions: u32| {
        rows.iter()
            .find(|r| r.scenario == scenario && r.sessions == sessions)
    };
    let mut sizes: Vec<u32> = rows.iter().map(|r| r.sessions).collect();
    sizes.dedup();
    for n in sizes {
        let (Some(flow), Some(session), Some(known)) = (
            find(SCENARIO_NEW_FLOW, n),
            find(SCENARIO_NEW_SESSION, n),
            find(SCENARIO_OUT_EXPIRED, n),
        ) else {
            continue;
        };
        writeln!(
            report,
            "\n## Where a new UDP flow's first packet spends its time ({n} sessions)\n\n\
             Differences between rows of the table above.\n\n| step | ns |\n|---|---:|"
        )?;
        for (step, ns) in [
            (
                "parse, FIB lookup, redirect: the bare forwarder on the same frames",
                flow.fwd_ns,
            ),
            (
                "a known session's packet past the flow cache, beyond the forwarder: SESSIONS lookup, rewrite, flow cache fill (\"TCP out, entry expired\")",
                known.nat_ns - known.fwd_ns,
            ),
            (
                "making the session: the full path's checks, MAPPINGS_OUT lookup, the host's and MAC's session shares (2 lookups, 2 counts), SESSIONS and FILTERS inserts (\"new session of an existing mapping\" less the row above)",
                session.nat_ns - known.nat_ns,
            ),
            (
                "making the mapping: the shares (2 lookups, 2 counts), the port claim (the source port is taken: random draws over PORT_POOL's bits, PORTS_TAKEN, FORWARD_HINTS), MAPPINGS_IN and MAPPINGS_OUT inserts, less the FILTERS insert the mapping spares its first session (it keeps that remote host) (\"new flow\" less \"new session\")",
                flow.nat_ns - session.nat_ns,
            ),
            ("the whole first packet", flow.nat_ns),
        ] {
            writeln!(report, "| {step} | {ns:.0} |")?;
        }
        floor_section(report, n, flow)?;
    }
    Ok(())
}

/// The least a new flow needs, one map operation at a time (`new_flow_floor`), set beside
/// the NAT's first packet of a new flow (`flow`) at `n` sessions.
fn floor_section(report: &mut String, n: u32, flow: &Row) -> Result<()> {
    let Some(floor) = &flow.floor else {
        return Ok(());
    };
    writeln!(
        report,
        "\n### The least a new flow needs, one map operation at a time ({n} sessions)\n\n\
         The benchmarks' floor program (`bench_new_flow_floor`) on the same frames, on tables as full as the NAT's ({n} sessions, {} mappings), timed with one map operation more at a time, in the order the NAT makes them for a new endpoint: what each adds to those before it (best of the rounds each, every round timing each set in turn, so a small step can read below zero). A port is claimed as the NAT claims one (a bitmap of the ports taken, then BPF_NOEXIST; drawn again when taken); no share or pool is checked, no counter kept.\n\n\
         | map operation | ns it adds | the floor with it, ns |\n|---|---:|---:|",
        n.min(MAX_PREFILLED_MAPPINGS)
    )?;
    let mut before = None;
    for (k, ns) in floor.by_ops.iter().enumerate() {
        let what = match k {
            0 => "none: the floor's parse, its read of per-flow state, FIB lookup and redirect",
            k => BENCH_FLOOR_OPS[k - 1],
        };
        let step = before.map_or(String::new(), |b| format!("{:+.0}", ns - b));
        writeln!(report, "| {what} | {step} | {ns:.0} |")?;
        before = Some(*ns);
    }
    writeln!(
        report,
        "| = the least a NAT with endpoint-independent mapping in hash tables needs | | {:.0} |\n\
         | the least any NAT needs: the session's lookup, the port claim and the session's insert only (the flow found, recorded, and reachable by its replies), timed on their own | | {:.0} |\n\
         | the NAT's first packet of a new flow | | {:.0} |\n\
         | the NAT beyond the endpoint-independent floor: among it, its checks, the random port draw, the shares and their counts, the rewrite | {:+.0} | |",
        floor.eim(),
        floor.any_nat,
        flow.nat_ns,
        flow.nat_ns - floor.eim()
    )?;
    Ok(())
}

/// The table size at which the sweeper is timed (a carrier or campus gateway).
const SWEEP_SESSIONS: u32 = 1_048_576;

fn measure_size(
    sessions: u32,
    runs: usize,
    rounds: u32,
    only: Option<&str>,
    profile: bool,
) -> (Vec<Row>, Option<SweepCost>, Vec<Result<String>>) {
    // The default table sizes, as deployed, unless the sessions need more room (1 M).
    let tables = Tables {
        max_sessions: (sessions + 65_536).max(nat_common::maps::DEFAULT_MAX_SESSIONS),
        max_mappings: nat_common::maps::DEFAULT_MAX_MAPPINGS,
    };
    with_fixture(tables, FixtureConfig::default(), |fx| {
        add_neighbours().expect("neighbours");
        let flows = prefill(&mut fx.maps, sessions, host, IPPROTO_TCP, 0).expect("prefill");
        // The bare forwarders, in their own object, redirect through the fixture's interfaces.
        let mut bench = bench_object(fx, tables).expect("the benchmarks' object");
        let mut rng = StdRng::seed_from_u64(sessions as u64);
        let sample: Vec<usize> = (0..runs).map(|_| rng.gen_range(0..flows.len())).collect();
        let (lan, wan) = (fx.lan_ifindex, fx.wan_ifindex);
        let mut rows = Vec::new();
        let mut profiles = Vec::new();
        let mut both = |fx: &mut Fixture,
                        scenario: &'static str,
                        ifindex: u32,
                        prep: Prep,
                        make: &mut dyn FnMut(&mut Fixture) -> Vec<Vec<u8>>| {
            if only.is_some_and(|o| !scenario.contains(o)) {
                return;
            }
            let prog = if ifindex == lan {
                programs::LAN_INGRESS
            } else {
                programs::WAN_INGRESS
            };
            // Round by round, each program in turn: a noisy moment on this shared machine
            // then costs every program one round, not one program all of its rounds.
            let [mut nat, mut base, mut fwd, mut state] = [(); 4].map(|_| Cost::new());
            // A profile that cannot be made does not stop the rounds: the caller says why.
            let perf = profile.then(|| -> Result<_> {
                let id = fx.ebpf.program(prog).context(prog)?.info()?.id();
                Ok((profile::jit_lines(id)?, profile::Perf::start()?))
            });
            for _ in 0..rounds {
                let frames = make(fx);
                nat.round(fx, prog, ifindex, prep, &frames);
                base.round(fx, programs::PASS, ifindex, Prep::None, &frames);
                fwd.round_bench(&bench, programs::BENCH_FORWARD, ifindex, &frames);
                state.round_bench(&bench, programs::BENCH_FORWARD_STATE, ifindex, &frames);
            }
            if let Some(started) = perf {
                let made = started.and_then(|(jit, perf)| {
                    let script = perf.stop()?;
                    let (total, sites) = profile::attribute(&script, &[prog], &jit);
                    anyhow::ensure!(
                        total > 0,
                        "perf sampled nothing in {prog}: can it name BPF programs \
                         (/proc/kallsyms, net.core.bpf_jit_kallsyms)?"
                    );
                    Ok(profile::report(
                        scenario,
                        sessions,
                        total,
                        &sites,
                        PROFILE_MIN_SHARE,
                    ))
                });
                let what = format!("no profile of \"{scenario}\", {sessions} sessions");
                profiles.push(made.context(what));
            }
            // A floor whose read failed (XDP_ABORTED) would be a fast lie.
            assert_eq!(
                action_name(state.action),
                action_name(fwd.action),
                "{scenario}: the forwarder with a state read must forward as the bare one does"
            );
            rows.push(Row {
                fwd_ns: fwd.ns,
                state_ns: state.ns,
                scenario,
                sessions,
                nat_ns: nat.ns,
                base_ns: base.ns,
                action: nat.action,
                fills: nat.fills(),
                paired: nat
                    .per_round
                    .iter()
                    .zip(&state.per_round)
                    .map(|(n, s)| n - s)
                    .collect(),
                floor: None,
            });
        };

        let out_frames: Vec<Vec<u8>> = sample
            .iter()
            .map(|&i| {
                let f = &flows[i];
                packets::tcp(
                    &lan_hdr(f.int_addr, host_mac(i as u32), f.rem_addr),
                    f.int_port,
                    443,
                    ACK,
                    b"",
                )
            })
            .collect();
        both(fx, SCENARIO_OUT, lan, Prep::Warm, &mut |_| {
            out_frames.clone()
        });
        let in_frames: Vec<Vec<u8>> = sample
            .iter()
            .map(|&i| {
                let f = &flows[i];
                packets::tcp(&wan_hdr(f.rem_addr, GATEWAY_MAC), 443, f.ext_port, ACK, b"")
            })
            .collect();
        both(fx, SCENARIO_IN, wan, Prep::Warm, &mut |_| in_frames.clone());
        // A reply with SYN takes the full path: its mapping, then its session, then the flow
        // cache filled. Here to sessions already open, so the state records nothing new,
        // where the answer to a new connection also records SYN_IN (one atomic OR).
        let syn_ack_frames: Vec<Vec<u8>> = sample
            .iter()
            .map(|&i| {
                let f = &flows[i];
                packets::tcp(
                    &wan_hdr(f.rem_addr, GATEWAY_MAC),
                    443,
                    f.ext_port,
                    SYN_ACK,
                    b"",
                )
            })
            .collect();
        both(fx, "TCP in, SYN-ACK", wan, Prep::None, &mut |_| {
            syn_ack_frames.clone()
        });
        // The same packets when the next hop has to be looked up again, every packet.
        // The same flows' packets once their entries expired: one packet per flow.
        let mut seen = std::collections::HashSet::new();
        let once: Vec<usize> = (0..sample.len())
            .filter(|&j| seen.insert(sample[j]))
            .take(WARM_CHUNK.min(50_000))
            .collect();
        let pick = |frames: &[Vec<u8>]| once.iter().map(|&j| frames[j].clone()).collect();
        both(fx, SCENARIO_OUT_EXPIRED, lan, Prep::Expired, &mut |_| {
            pick(&out_frames)
        });
        both(fx, "TCP in, entry expired", wan, Prep::Expired, &mut |_| {
            pick(&in_frames)
        });
        // A remote's port unreachable about a flow: the error and the quoted packet inside
        // are translated (RFC 5508).
        let error_frames: Vec<Vec<u8>> = sample
            .iter()
            .map(|&i| {
                let f = &flows[i];
                let sent = packets::tcp(
                    &packets::Hdr {
                        smac: WAN_MAC,
                        dmac: GATEWAY_MAC,
                        src: ROUTER_WAN,
                        dst: f.rem_addr,
                        ttl: 63,
                    },
                    f.ext_port,
                    443,
                    ACK,
                    b"",
                );
                packets::icmp_error(
                    &wan_hdr(f.rem_addr, GATEWAY_MAC),
                    packets::port_unreachable(),
                    &sent,
                )
            })
            .collect();
        both(
            fx,
            "ICMP error in (port unreachable)",
            wan,
            Prep::None,
            &mut |_| error_frames.clone(),
        );

        // New flows: each its own LAN endpoint. The 240 hosts send from the same source
        // ports, so all but the first from each port draw a random free one, as hosts behind
        // a NAT with the same ephemeral ranges do. Removed again after each round.
        let new_flows = runs.min(NEW_FLOWS_PER_ROUND);
        let mut round = 0u32;
        both(
            fx,
            SCENARIO_NEW_FLOW,
            lan,
            Prep::None,
            &mut |fx: &mut Fixture| {
                round += 1;
                forget_flows(fx, |proto, _| proto == IPPROTO_UDP);
                (0..new_flows as u32)
                    .map(|i| new_flow(i, round).0)
                    .collect()
            },
        );
        // The same for TCP: each SYN a new endpoint's, from source ports above the usual
        // ip_local_port_range (in the pool) that the hosts share, as above. A TCP session
        // makes no filter entry. Removed again after each round.
        let mut round = 0u32;
        let syn_port = |i: u32, round: u32| 61_000 + (i / HOSTS) as u16 + round as u16 * 100;
        both(
            fx,
            SCENARIO_NEW_TCP_FLOW,
            lan,
            Prep::None,
            &mut |fx: &mut Fixture| {
                round += 1;
                forget_flows(fx, |proto, port| {
                    proto == IPPROTO_TCP && u16::from_be(port) >= syn_port(0, 1)
                });
                (0..new_flows as u32)
                    .map(|i| {
                        packets::tcp(
                            &lan_hdr(host(i), host_mac(i), SERVER),
                            syn_port(i, round),
                            443,
                            SYN,
                            b"",
                        )
                    })
                    .collect()
            },
        );
        // New sessions of endpoints that have a mapping (made in the first round, to another
        // remote): what a new flow costs without the port claim. Removed after each round.
        let anchor = Ipv4Addr::new(198, 51, 100, 1);
        let mut round = 0u32;
        both(
            fx,
            SCENARIO_NEW_SESSION,
            lan,
            Prep::None,
            &mut |fx: &mut Fixture| {
                round += 1;
                let ep = |i: u32| (host(i), host_mac(i), 3000 + (i / HOSTS) as u16);
                if round == 1 {
                    for i in 0..new_flows as u32 {
                        let (h, mac, port) = ep(i);
                        let first = packets::udp(&lan_hdr(h, mac, anchor), port, 53, b"q");
                        assert_eq!(fx.from_lan(&first).0, XDP_REDIRECT, "a mapping for {h}");
                    }
                }
                for (k, _) in fx.maps.sessions().unwrap() {
                    if k.proto == nat_common::proto::IPPROTO_UDP && k.rem_addr == to_wire(SERVER) {
                        fx.maps.remove_session(&k);
                    }
                }
                // And the filter entries they made, so that each round's sessions make theirs
                // (an entry already there refuses the insert: another path).
                let filtered: Vec<SessionKey> = fx
                    .maps
                    .filters
                    .keys()
                    .filter_map(Result::ok)
                    .filter(|k| k.rem_addr == to_wire(SERVER))
                    .collect();
                for k in &filtered {
                    fx.maps.filters.remove(k).expect("remove a filter entry");
                }
                (0..new_flows as u32)
                    .map(|i| {
                        let (h, mac, port) = ep(i);
                        packets::udp(&lan_hdr(h, mac, SERVER), port, 53, b"q")
                    })
                    .collect()
            },
        );
        let ping = packets::icmp_echo(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            true,
            4242,
            1,
            b"payload",
        );
        both(fx, "ICMP echo out", lan, Prep::None, &mut |_| {
            vec![ping.clone(); runs]
        });

        // PPTP: one call set up through the control connection, then the server's GRE.
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        fx.from_lan(&packets::tcp(&h, 40000, 1723, SYN, b""));
        let (_, out) = fx.from_lan(&packets::tcp(
            &h,
            40000,
            1723,
            ACK,
            &packets::pptp_ctrl(PPTP_OUT_CALL_REQUEST, 7, 0),
        ));
        let ext_call = packets::pptp_ids(&packets::payload(&out)).0;
        let gre = packets::ip_proto(
            &wan_hdr(SERVER, SERVER_MAC),
            IPPROTO_GRE,
            &packets::gre_v1(ext_call, 1, &[0u8; 32]),
        );
        both(fx, "GRE in (PPTP call)", wan, Prep::None, &mut |_| {
            vec![gre.clone(); runs]
        });

        fx.from_lan(&packets::ip_proto(&h, IPPROTO_ESP, &packets::esp(0xa0, 1)));
        let esp = packets::ip_proto(
            &wan_hdr(SERVER, SERVER_MAC),
            IPPROTO_ESP,
            &packets::esp(0xa1, 2),
        );
        fx.from_wan(&esp);
        both(fx, "ESP in (learned SPI)", wan, Prep::None, &mut |_| {
            vec![esp.clone(); runs]
        });
        // The least a new flow needs, on the same kind of frames as the NAT's new flows.
        if let Some(row) = rows.iter_mut().find(|r| r.scenario == SCENARIO_NEW_FLOW) {
            let floor = new_flow_floor(&mut bench, lan, sessions, new_flows as u32, rounds)
                .expect("the new-flow floor");
            eprintln!(
                "bench: {sessions} sessions: new flow {:.0} ns, the least one needs here {:.0} ns, with endpoint-independent mapping {:.0} ns (one operation more at a time: {:.0?})",
                row.nat_ns,
                floor.any_nat,
                floor.eim(),
                floor.by_ops
            );
            row.floor = Some(floor);
        }
        // Last: the sweeper, on as many UDP sessions, each to a remote host of its own, so each
        // but a mapping's first with a filter entry (TCP sessions have none): the most a full
        // table asks of it. Its expiring sweep empties the tables.
        let sweep = (sessions >= SWEEP_SESSIONS).then(|| {
            fx.clear_state();
            let udp = fx.maps.read_config().expect("CONFIG").timeouts.udp;
            let idle = u64::from(udp - 30) * 1_000_000_000;
            let udp_flows =
                prefill(&mut fx.maps, sessions, host, IPPROTO_UDP, idle).expect("prefill UDP");
            sweep_cost(fx, &udp_flows).expect("sweep")
        });
        (rows, sweep, profiles)
    })
}

/// The new-flow scenario's flow `i` in round `round`: its first frame, and its session.
/// The hosts send from the same source ports, so all but the first from each port draw a
/// random free one at the NAT, as hosts behind a NAT with the same ephemeral ranges do.
fn new_flow(i: u32, round: u32) -> (Vec<u8>, SessionKey) {
    let port = 1024 + (i / HOSTS) as u16 + (round as u16 * 100);
    let frame = packets::udp(&lan_hdr(host(i), host_mac(i), SERVER), port, 53, b"q");
    let key = SessionKey::new(
        IPPROTO_UDP,
        to_wire(host(i)),
        port.to_be(),
        to_wire(SERVER),
        53u16.to_be(),
    );
    (frame, key)
}

/// What the new-flow floor costs (ns per packet) on the NAT's new flows.
struct Floor {
    /// With the first k of BENCH_FLOOR_OPS, at index k (0: none; all of them: the least a
    /// NAT with endpoint-independent mapping needs).
    by_ops: Vec<f64>,
    /// With BENCH_FLOOR_ANY_NAT's operations only: the least any NAT needs.
    any_nat: f64,
}

impl Floor {
    fn eim(&self) -> f64 {
        self.by_ops.last().copied().unwrap_or(f64::NAN)
    }
}

/// The new-flow floor (programs::BENCH_NEW_FLOW_FLOOR) on `flows` new flows, with its tables
/// holding `sessions` flows and as many mappings of their own as the NAT's do: ns per packet
/// with the first k of its map operations (BENCH_FLOOR_OPS) for every k, and with those any
/// NAT needs, each the best of `rounds`. Each round times every set of operations in turn
/// (so that a slow moment of the machine does not fall on one of them only), each on flows
/// of its own, removed after it.
fn new_flow_floor(
    bench: &mut Ebpf,
    ifindex: u32,
    sessions: u32,
    flows: u32,
    rounds: u32,
) -> Result<Floor> {
    // (Distinct from the timed flows: other LAN and remote addresses, and TCP mappings where
    // the timed flows claim UDP ports.)
    let resident = |i: u32| {
        let addr = to_wire(Ipv4Addr::from(0x0a00_0000 + i));
        let key = SessionKey::new(
            IPPROTO_UDP,
            addr,
            1000u16.to_be(),
            to_wire(Ipv4Addr::from(0xcb00_0000 + i)),
            53u16.to_be(),
        );
        let m = Mapping {
            int_addr: addr,
            int_port: 1000u16.to_be(),
            ext_port: (i as u16).to_be(),
            proto: IPPROTO_TCP,
            state: MAPPING_ACTIVE,
            ..Default::default()
        };
        (key, m)
    };
    let ep_key = |addr: u32, port: u16, proto: u8| EndpointKey {
        addr,
        port,
        proto,
        _pad: 0,
    };
    let mut out_table: aya::maps::HashMap<_, SessionKey, Session> = bench
        .take_map(names::BENCH_FLOOR_OUT)
        .context("BENCH_FLOOR_OUT")?
        .try_into()?;
    let mut in_table: aya::maps::HashMap<_, ExternalKey, Mapping> = bench
        .take_map(names::BENCH_FLOOR_IN)
        .context("BENCH_FLOOR_IN")?
        .try_into()?;
    let mut ep_table: aya::maps::HashMap<_, EndpointKey, Mapping> = bench
        .take_map(names::BENCH_FLOOR_EP)
        .context("BENCH_FLOOR_EP")?
        .try_into()?;
    let mut skip: aya::maps::Array<_, u32> = bench
        .take_map(names::BENCH_FLOOR_SKIP)
        .context("BENCH_FLOOR_SKIP")?
        .try_into()?;
    let mut taken: aya::maps::Array<_, u64> = bench
        .take_map(names::BENCH_FLOOR_TAKEN)
        .context("BENCH_FLOOR_TAKEN")?
        .try_into()?;
    // As many mappings as the NAT holds (prefill), each with sessions.
    let mappings = sessions.min(MAX_PREFILLED_MAPPINGS);
    for i in 0..sessions {
        let (key, m) = resident(i);
        out_table.insert(key, Session::default(), 0)?;
        if i < mappings {
            let ext = ExternalKey {
                port: m.ext_port,
                proto: m.proto,
                _pad: 0,
            };
            in_table.insert(ext, m, 0)?;
            ep_table.insert(ep_key(m.int_addr, m.int_port, m.proto), m, 0)?;
        }
    }
    // The operations left out: for the first k done, every later one; then all but any
    // NAT's.
    let sets: Vec<u32> = (0..=BENCH_FLOOR_OPS.len())
        .map(|k| BENCH_FLOOR_ALL & !((1 << k) - 1))
        .chain([BENCH_FLOOR_ALL & !BENCH_FLOOR_ANY_NAT])
        .collect();
    let mut costs: Vec<Cost> = sets.iter().map(|_| Cost::new()).collect();
    let mut batch = 0;
    for _ in 0..rounds {
        for (left_out, cost) in sets.iter().zip(costs.iter_mut()) {
            // Flows of their own for each set, as the NAT's rounds have: the set before
            // touched its flows' buckets, which would still be in the caches.
            batch += 1;
            let (frames, keys): (Vec<_>, Vec<_>) = (0..flows).map(|i| new_flow(i, batch)).unzip();
            skip.set(0, *left_out, 0)?;
            cost.round_bench(bench, programs::BENCH_NEW_FLOW_FLOOR, ifindex, &frames);
            if cost.not_redirected > 0 {
                anyhow::bail!(
                    "the new-flow floor (operations left out: {left_out:#b}) did not forward {} of its packets: no floor",
                    cost.not_redirected
                );
            }
            // What the program made of the flows, as far as its operations went: their
            // sessions, their endpoints' mappings, and the UDP ports they claimed (the
            // resident mappings are TCP).
            for key in &keys {
                let _ = out_table.remove(key);
                let _ = ep_table.remove(&ep_key(key.int_addr, key.int_port, key.proto));
            }
            let claimed: Vec<ExternalKey> = in_table
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| k.proto == IPPROTO_UDP)
                .collect();
            for ext in claimed {
                in_table.remove(&ext)?;
            }
            for word in 0..taken.len() {
                taken.set(word, 0, 0)?;
            }
        }
    }
    let any_nat = costs.pop().map_or(f64::NAN, |c| c.ns);
    Ok(Floor {
        by_ops: costs.iter().map(|c| c.ns).collect(),
        any_nat,
    })
}

/// Removes the sessions and mappings of the LAN endpoints `ours` picks (by protocol and
/// port, wire order), so that a new-flow scenario's next round makes them afresh; the
/// ports those mappings held are free again, as after the sweeper's.
fn forget_flows(fx: &mut Fixture, ours: impl Fn(u8, u16) -> bool) {
    for (k, _) in fx.maps.sessions().unwrap() {
        if ours(k.proto, k.int_port) {
            fx.maps.remove_session(&k);
        }
    }
    for (ext, m) in fx.maps.mappings().unwrap() {
        if ours(m.proto, m.int_port) {
            let _ = fx.maps.mappings_in.remove(&ext);
            let _ = fx.maps.mappings_out.remove(&EndpointKey {
                addr: m.int_addr,
                port: m.int_port,
                proto: m.proto,
                _pad: 0,
            });
        }
    }
    let held = fx.maps.mapping_keys().unwrap();
    fx.maps.write_ports_taken(&held).unwrap();
}

/// The benchmarks' object, loaded in the fixture's namespace with its DEVMAP holding the
/// fixture's two interfaces, and its flow table at the size of the NAT's for `tables`.
fn bench_object(fx: &Fixture, tables: Tables) -> Result<Ebpf> {
    let mut bench = nat_ctl::loader::load_bench(tables)?;
    let mut devmap: DevMapHash<_> = bench.map_mut(names::DEVMAP).context("DEVMAP")?.try_into()?;
    for i in [fx.lan_ifindex, fx.wan_ifindex] {
        devmap.insert(i, i, None, 0)?;
    }
    Ok(bench)
}

/// Kernel-charged bytes of each of our maps, from /proc/self/fdinfo (memlock), with the
/// default table sizes.
fn memory() -> Result<Vec<(String, u32, u64)>> {
    let tables = Tables {
        max_sessions: nat_common::maps::DEFAULT_MAX_SESSIONS,
        max_mappings: nat_common::maps::DEFAULT_MAX_MAPPINGS,
    };
    let _ebpf = nat_ctl::loader::load(None, tables)?;
    let mut by_id = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo")? {
        let text = std::fs::read_to_string(entry?.path()).unwrap_or_default();
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        if let (Some(id), Some(mem)) = (field("map_id:"), field("memlock:")) {
            by_id.insert(id.parse::<u32>()?, mem.parse::<u64>()?);
        }
    }
    let mut out = Vec::new();
    for info in aya::maps::loaded_maps() {
        let info = info?;
        let Some(name) = info.name_as_str() else {
            continue;
        };
        if let (true, Some(mem)) = (names::ALL.contains(&name), by_id.get(&info.id())) {
            out.push((name.to_string(), info.max_entries(), *mem));
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    Ok(out)
}

/// End-to-end rates, each configuration with 1, 1 K and 64 K flows, all in one lab.
const SCENARIO_OUT: &str = "TCP out, established";
const SCENARIO_IN: &str = "TCP in, reply";
/// Most new flows (each a new endpoint's first packet) a round of the new-flow scenarios
/// makes: its mappings fit the pool beside the prefilled ones.
const NEW_FLOWS_PER_ROUND: usize = 20_000;
const SCENARIO_NEW_FLOW: &str = "UDP out, first packet of a new flow";
const SCENARIO_OUT_EXPIRED: &str = "TCP out, entry expired";
const SCENARIO_NEW_TCP_FLOW: &str = "TCP out, SYN of a new flow";
const SCENARIO_NEW_SESSION: &str = "UDP out, first packet of a new session of an existing mapping";

/// End-to-end packets/s with one flow count: xdp-nat, bare forwarder, kernel masquerade.
struct Rates {
    flows: u32,
    nat: f64,
    fwd: f64,
    /// The forwarder reading one entry of per-flow state per packet.
    state: f64,
    kern: f64,
    /// ns per packet each XDP router's program ran for, in place (BPF_ENABLE_STATS).
    nat_ns: f64,
    /// The NAT's flow cache fills per second during the timed packets, least and most of the
    /// rounds (forwarding::Rate::fills_per_sec).
    nat_fills: (f64, f64),
    fwd_ns: f64,
    state_ns: f64,
    /// The NAT's rate with RESIDENT_SESSIONS more sessions in its tables (measured at the
    /// most flows only).
    resident: Option<f64>,
}

/// The benchmark targets (BENCHMARKS.md), each against the numbers of this run.
/// Everything a target is judged on, from one run.
struct Measured<'a> {
    cost: &'a [Row],
    rates: &'a [Rates],
    /// The NAT's end-to-end new sessions per second, and the floor's.
    new_sessions: Option<forwarding::NewSessionRates>,
    sweep: Option<SweepCost>,
    /// Bytes per session, every table a session takes its share of, and per filter entry
    /// (the memory table).
    session_bytes: Option<(f64, f64)>,
}

/// The targets, each as measured in this run: met or not.
fn targets(m: &Measured<'_>) -> Result<String> {
    const TARGET_SESSIONS: u32 = 65_536;
    const TARGET_FLOWS: u32 = 64_000;
    let mut table = String::new();
    let mut line = |what: String, measured: String, met: Option<bool>| {
        writeln!(
            table,
            "| {what} | {measured} | {} |",
            match met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "not measured",
            }
        )
    };
    for r in m.rates.iter().filter(|r| r.flows == TARGET_FLOWS) {
        let (vs_fwd, vs_state, vs_kern) = (r.nat / r.fwd, r.nat / r.state, r.nat / r.kern);
        line(
            format!("end to end, {TARGET_FLOWS} flows: >= 5x kernel + nftables masquerade"),
            format!("{vs_kern:.1}x"),
            Some(vs_kern >= 5.0),
        )?;
        // Whichever bar is lower in this run.
        let bar = (0.9 * r.fwd).min(r.state);
        line(
            format!(
                "end to end, {TARGET_FLOWS} flows: >= 90% of the bare forwarder or 100% of forwarder + state read, whichever is lower ({:.2} Mpps here)",
                bar / 1e6
            ),
            format!("{:.0}% / {:.0}%", 100.0 * vs_fwd, 100.0 * vs_state),
            Some(r.nat >= bar),
        )?;
    }
    let resident = m.rates.iter().find(|r| r.flows == TARGET_FLOWS);
    line(
        format!(
            "end to end with {} resident sessions (timed between walks of them): within 10% of the {TARGET_FLOWS}-flow rate",
            forwarding::RESIDENT_SESSIONS
        ),
        resident
            .and_then(|r| Some(format!("{:.0}%", 100.0 * r.resident? / r.nat)))
            .unwrap_or_else(|| "-".into()),
        resident.and_then(|r| Some(r.resident? >= 0.9 * r.nat)),
    )?;
    // The established-flow rows, both directions.
    let established = |r: &&Row| r.scenario == SCENARIO_OUT || r.scenario == SCENARIO_IN;
    for r in m
        .cost
        .iter()
        .filter(|r| r.sessions == TARGET_SESSIONS)
        .filter(established)
    {
        // The median of the rounds' paired differences: a margin this small is within
        // this VM's spread between rounds, and the best of each side may come from
        // different rounds.
        let over = median(&r.paired);
        let rounds: Vec<String> = r.paired.iter().map(|d| format!("{d:+.1}")).collect();
        line(
            format!(
                "{}, {TARGET_SESSIONS} sessions: within 15 ns of forwarder + state read (median of the rounds' paired differences, each in brackets; best of each side after them)",
                r.scenario
            ),
            format!(
                "{over:+.1} ns ({}; {:+.1})",
                rounds.join(", "),
                r.nat_ns - r.state_ns
            ),
            Some(over <= 15.0),
        )?;
    }
    for r in m
        .cost
        .iter()
        .filter(|r| r.sessions == TARGET_SESSIONS && r.scenario == SCENARIO_NEW_FLOW)
    {
        let floor = r.floor.as_ref().map_or(String::new(), |f| {
            format!(
                " (the least a new flow needs here: {:.0} ns; with endpoint-independent mapping: {:.0} ns)",
                f.any_nat,
                f.eim()
            )
        });
        line(
            format!("{}, {TARGET_SESSIONS} sessions: <= 600 ns", r.scenario),
            format!("{:.0} ns{floor}", r.nat_ns),
            Some(r.nat_ns <= 600.0),
        )?;
    }
    if let Some(forwarding::NewSessionRates { nat: n, floor }) = m.new_sessions {
        let clocked = |r: f64| shown(r, "not clocked", |r| format!("{:.0} K/s", r / 1e3));
        line(
            "new sessions end to end (at the sink, first packet to last): >= 1.2 M/s".into(),
            format!(
                "{} ({:.0} K/s over the generator's whole run; the least an endpoint-independent NAT needs: {})",
                clocked(n.at_sink),
                n.wall / 1e3,
                clocked(floor.at_sink),
            ),
            (!n.at_sink.is_nan()).then_some(n.at_sink >= 1.2e6),
        )?;
    }
    if let Some(s) = m.sweep {
        let share = s.share();
        line(
            format!(
                "sweeper, {} sessions turning over: < 5% of one CPU at the default interval ({} s), none left past its deadline, none gone before",
                s.sessions,
                nat_ctl::cli::DEFAULT_SWEEP_INTERVAL_SECS,
            ),
            format!(
                "{:.1}%, {} left, {} gone early",
                100.0 * share,
                s.overdue,
                s.early
            ),
            Some(share < 0.05 && s.overdue == 0 && s.early == 0),
        )?;
    }
    if let Some((b, filter)) = m.session_bytes {
        line(
            "memory: <= 200 bytes per session, all tables included (the 352 measured before, SESSIONS_IN and flow caches with it; a filter entry, per LAN endpoint and remote host, apart)".into(),
            format!(
                "{b:.0} bytes ({:.0} with a filter entry of its own)",
                b + filter
            ),
            Some(b <= 200.0),
        )?;
    }
    let mut out = String::from("\n## Targets\n\n");
    if table.is_empty() {
        writeln!(
            out,
            "Not measured in this run: the targets are at {TARGET_SESSIONS} sessions and {TARGET_FLOWS} flows (`cargo xtask bench`)."
        )?;
    } else {
        writeln!(out, "| target | measured | met |\n|---|---:|---|\n{table}")?;
    }
    // What no NAT can avoid: reading each packet's flow state, once the flows outgrow the
    // CPU caches. Measured, not assumed: the forwarder with one such read per packet.
    let mut floor = String::new();
    for r in m.rates.iter().filter(|r| r.flows == TARGET_FLOWS) {
        writeln!(
            floor,
            "- end to end, {TARGET_FLOWS} flows: the forwarder with one state read per packet reaches {:.0}% of the bare forwarder; the NAT reaches {:.0}% of it. In place, the programs ran {:.0} ns (bare forwarder), {:.0} ns (with the state read) and {:.0} ns (NAT) per packet.",
            100.0 * r.state / r.fwd,
            100.0 * r.nat / r.state,
            r.fwd_ns,
            r.state_ns,
            r.nat_ns
        )?;
    }
    for r in m
        .cost
        .iter()
        .filter(|r| r.sessions == TARGET_SESSIONS)
        .filter(established)
    {
        writeln!(
            floor,
            "- {}, {TARGET_SESSIONS} sessions: the forwarder with one state read costs {:.2}x the bare forwarder ({:+.1} ns); the NAT costs {:.2}x it ({:+.1} ns).",
            r.scenario,
            r.state_ns / r.fwd_ns,
            r.state_ns - r.fwd_ns,
            r.nat_ns / r.state_ns,
            r.nat_ns - r.state_ns
        )?;
    }
    if !floor.is_empty() {
        writeln!(
            out,
            "\nThe floor, in the same run: a NAT must read each packet's flow state, and at these sizes that state has left the CPU caches; the bare forwarder reads none. A forwarder that reads one 32-byte entry per packet from a table the size of the flow cache (slot by a hash of the flow) costs what that one memory access costs on this machine at the time of the run:\n\n{floor}"
        )?;
    }
    Ok(out)
}

/// The end-to-end rates, and the NAT's new sessions per second.
fn forwarding_section(
    report: &mut String,
    short: bool,
    only_flows: &[u32],
) -> Result<(Vec<Rates>, forwarding::NewSessionRates)> {
    use forwarding::{Bench, Router};
    // New sessions first, while the router has no state from the rate runs.
    let new_flows: u32 = if short { 5_000 } else { 60_000 };
    let mut bench = Bench::new()?;
    let nat_new = bench.new_session_rate(
        Router::XdpNat,
        new_flows,
        std::net::Ipv4Addr::new(192, 168, 1, 100),
    )?;
    let kern_new = bench.new_session_rate(
        Router::KernelMasquerade,
        new_flows,
        std::net::Ipv4Addr::new(192, 168, 1, 110),
    )?;
    let floor_new = bench.new_session_rate(
        Router::XdpNewFlowFloor,
        new_flows,
        std::net::Ipv4Addr::new(192, 168, 1, 120),
    )?;
    let (warmup, packets, flows, rounds): (u32, u32, &[u32], u32) = if short {
        (20_000, 50_000, &[1_000], 1)
    } else {
        (1_000_000, 5_000_000, &[1, 1_000, 64_000], 5)
    };
    writeln!(
        report,
        "\n## End-to-end forwarding (60-byte UDP frames, packets/s at the sink)\n"
    )?;
    writeln!(
        report,
        "Generator: live-frame BPF_PROG_RUN, XDP_TX out of its veth; before each measurement the flows start in {steps} groups over one flow cache TTL ({ttl} s), so that their once-a-TTL renewals spread over time as on a gateway (the generator sends the flows in turn: flows started together would renew together, in one burst that a timed window holds wholly or not at all); then {warmup} frames to warm up and {packets} timed; best of {rounds} measurements per router (each set up afresh); router and sink on the same 2 vCPUs. Each LAN endpoint sends {dst_ports} flows, to {dst_ports} ports of the sink: 64000 flows are 64000 sessions of 4000 mappings (the NAT maps endpoint-independently, one external port per LAN endpoint; 64000 endpoints would fill 99% of the WAN address's port pool and measure port exhaustion).\n",
        dst_ports = forwarding::RATE_DST_PORTS,
        steps = forwarding::STAGGER_STEPS,
        ttl = nat_common::config::FLOW_TTL_NS / 1_000_000_000,
    )?;
    writeln!(
        report,
        "| flows | xdp-nat | bare XDP forwarder | forwarder + state read | kernel + nftables masquerade | nat / forwarder | nat / (forwarder + state read) | nat / masquerade |"
    )?;
    writeln!(report, "|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let flows = if only_flows.is_empty() {
        flows
    } else {
        only_flows
    };
    let mut rates = Vec::new();
    for &f in flows {
        eprintln!("bench: forwarding with {f} flows ...");
        // Rounds alternate between the routers, so a noisy moment on the VM hits them alike.
        let mut r = Rates {
            flows: f,
            nat: 0.0,
            fwd: 0.0,
            state: 0.0,
            kern: 0.0,
            nat_ns: f64::MAX,
            fwd_ns: f64::MAX,
            state_ns: f64::MAX,
            nat_fills: (f64::MAX, 0.0),
            resident: None,
        };
        for _ in 0..rounds {
            for (router, pps, ns) in [
                (Router::XdpNat, &mut r.nat, Some(&mut r.nat_ns)),
                (Router::XdpForward, &mut r.fwd, Some(&mut r.fwd_ns)),
                (Router::XdpForwardState, &mut r.state, Some(&mut r.state_ns)),
                (Router::KernelMasquerade, &mut r.kern, None),
            ] {
                let m = bench.rate(router, f, warmup, packets)?;
                *pps = pps.max(m.pps);
                if let (Some(best), Some(t)) = (ns, m.program_ns) {
                    *best = best.min(t);
                }
                if let Some(n) = m.fills_per_sec {
                    r.nat_fills = (r.nat_fills.0.min(n), r.nat_fills.1.max(n));
                }
            }
        }
        writeln!(
            report,
            "| {f} | {:.2} Mpps | {:.2} Mpps | {:.2} Mpps | {:.2} Mpps | {:.0}% | {:.0}% | {:.1}x |",
            r.nat / 1e6,
            r.fwd / 1e6,
            r.state / 1e6,
            r.kern / 1e6,
            100.0 * r.nat / r.fwd,
            100.0 * r.nat / r.state,
            r.nat / r.kern
        )?;
        rates.push(r);
    }
    // The most flows again, with a million sessions resident beside them: the NAT alone,
    // set up afresh (and filled) each round, best of the rounds as above.
    if let Some(r) = rates.last_mut().filter(|_| !short) {
        eprintln!(
            "bench: forwarding with {} flows and {} resident sessions ...",
            r.flows,
            forwarding::RESIDENT_SESSIONS
        );
        let mut best: f64 = 0.0;
        for _ in 0..rounds {
            best = best.max(
                bench
                    .rate(Router::XdpNatResident, r.flows, warmup, packets)?
                    .pps,
            );
        }
        r.resident = Some(best);
        writeln!(
            report,
            "\nWith {} idle sessions resident in the tables beside the {} flows (established TCP of 240 other LAN hosts over 30000 mappings, each to its own remote; measured between two of the sweeper's walks of them, whose own cost is under \"The sweeper\"): xdp-nat {:.2} Mpps, {:.0}% of its rate without them.",
            forwarding::RESIDENT_SESSIONS,
            r.flows,
            best / 1e6,
            100.0 * best / r.nat
        )?;
        let (cpu, wall) = bench.resident_sweeper;
        if !wall.is_zero() {
            writeln!(
                report,
                "\nThe daemon's own sweeper thread, on the real clock, used {:.1}% of a CPU over one period of its schedule after the timed packets, each round: {:.1} s over {:.0} s, from the end of one walk of the resident sessions and the flows' to the end of the next (due checks, which list nothing here: established TCP is due in hours; then the walk). The flows were idle meanwhile.",
                100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
                cpu.as_secs_f64(),
                wall.as_secs_f64()
            )?;
        }
    }
    in_place_section(report, &rates, packets, rounds)?;
    writeln!(
        report,
        "\n## New sessions per second ({new_flows} new UDP flows in one burst, fresh router state)\n"
    )?;
    writeln!(
        report,
        "| timed | xdp-nat | kernel + nftables masquerade (conntrack) | ratio | the least an endpoint-independent NAT needs (floor) | xdp-nat / floor |"
    )?;
    writeln!(report, "|---|---:|---:|---:|---:|---:|")?;
    for (timed, nat, kern, floor) in [
        (
            "at the sink, from the first packet to the last",
            nat_new.at_sink,
            kern_new.at_sink,
            floor_new.at_sink,
        ),
        (
            "over the generator's whole run",
            nat_new.wall,
            kern_new.wall,
            floor_new.wall,
        ),
    ] {
        let rate = |r: f64| shown(r, "-", |r| format!("{r:.0} /s"));
        let times = |r: f64| shown(r, "-", |r| format!("{r:.1}x"));
        let percent = |r: f64| shown(r, "-", |r| format!("{:.0}%", 100.0 * r));
        writeln!(
            report,
            "| {timed} | {} | {} | {} | {} | {} |",
            rate(nat),
            rate(kern),
            times(nat / kern),
            rate(floor),
            percent(nat / floor),
        )?;
    }
    writeln!(
        report,
        "\nEach packet is a new flow's first, and the router makes its session (and its mapping) as it forwards it. The sink clocks the first and the last packet it receives: what the router kept up while the burst lasted. The generator's whole run also holds its start and its idle tail after the last frame (20-30 ms per live-frame run), which understate that rate. The program-level cost of a new flow is in the first table (\"first packet of a new flow\"). The flows come from two addresses and one MAC, standing for many LAN hosts: for this run the NAT's per-host and per-MAC shares are raised to the pool and the table (checked and counted as ever; at their defaults they would refuse all but about 26000 of the flows, as they should from one host). The floor is the benchmarks' `bench_new_flow_floor` as the router, tables at the NAT's default sizes: the forwarder with its read of per-flow state, and the map operations an endpoint-independent NAT cannot do without (the program-cost section times each); a port claimed as the NAT claims one, no share or pool checked, no counter kept."
    )?;
    Ok((
        rates,
        forwarding::NewSessionRates {
            nat: nat_new,
            floor: floor_new,
        },
    ))
}

/// Where the end-to-end time goes: each XDP router's program time per packet, in place,
/// next to the wall time per packet the rates give.
fn in_place_section(report: &mut String, rates: &[Rates], packets: u32, rounds: u32) -> Result<()> {
    writeln!(
        report,
        "\n### The routers' programs in place (ns per packet)\n\nHow long each router's XDP program ran per packet while it forwarded, by the kernel's run-time statistics (BPF_ENABLE_STATS: run_time_ns / run_cnt), over another {packets} frames sent right after each timed measurement (the statistics cost two clock reads per packet, which the timed one does not pay); best of {rounds}. \"NAT - forwarder, wall time\" is the difference in what one packet costs end to end at the measured rates (1 / packets per second), to set beside the difference in program time. \
         \"xdp-nat renewals\": the NAT's flow cache fills per second during the timed packets (least and most of the rounds), each a flow's trip back to its session and the FIB, which its program time includes: every {flow_ttl} s per flow (FLOW_TTL_NS), and once a second per next hop.\n",
        flow_ttl = nat_common::config::FLOW_TTL_NS / 1_000_000_000,
    )?;
    writeln!(
        report,
        "| flows | xdp-nat ns | bare forwarder ns | forwarder + state read ns | NAT - forwarder, program ns | NAT - forwarder, wall time ns | NAT - (forwarder + state read), program ns | xdp-nat renewals per second |"
    )?;
    writeln!(report, "|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for r in rates {
        writeln!(
            report,
            "| {} | {:.1} | {:.1} | {:.1} | {:+.1} | {:+.1} | {:+.1} | {:.0}-{:.0} |",
            r.flows,
            r.nat_ns,
            r.fwd_ns,
            r.state_ns,
            r.nat_ns - r.fwd_ns,
            1e9 / r.nat - 1e9 / r.fwd,
            r.nat_ns - r.state_ns,
            r.nat_fills.0,
            r.nat_fills.1
        )?;
    }
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{} x {cpu}, kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim()
    )
}

/// `cargo xtask bench [--short]` runs it all; the other options narrow a run down while
/// profiling one path.
#[derive(clap::Parser)]
struct Args {
    /// Few repeats and one table size: CI's check that the benchmark still runs.
    #[arg(long)]
    short: bool,
    /// Program cost only: no end-to-end forwarding, no memory table, no BENCHMARKS.md.
    #[arg(long, conflicts_with = "forwarding_only")]
    cost_only: bool,
    /// End-to-end forwarding and new-session rates only.
    #[arg(long)]
    forwarding_only: bool,
    /// Flow counts to measure end-to-end forwarding at.
    #[arg(long, value_delimiter = ',')]
    flows: Vec<u32>,
    /// Session counts to measure program cost at.
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<u32>,
    /// Packets per program-cost measurement.
    #[arg(long)]
    runs: Option<usize>,
    /// Measurements per program-cost figure (the best is reported).
    #[arg(long)]
    rounds: Option<u32>,
    /// Only the program-cost scenarios whose name contains this (e.g. "new flow").
    #[arg(long)]
    scenario: Option<String>,
    /// With --cost-only and --scenario: sample the NAT's program with `perf record` while
    /// each scenario runs, and print where its time goes by source line (map operations,
    /// the FIB lookup, the program's own code).
    #[arg(long, requires_all = ["cost_only", "scenario"])]
    profile: bool,
}

/// Sites under this share of a profile's samples are summed in one row.
const PROFILE_MIN_SHARE: f64 = 0.01;
/// The full run's profile of a new flow: at the targets' table size, packets per round (the
/// most the new-flow scenario takes) and rounds, for about 10 000 samples.
const PROFILE_SESSIONS: u32 = 65_536;
const PROFILE_RUNS: usize = NEW_FLOWS_PER_ROUND;
const PROFILE_ROUNDS: u32 = 12;

/// Does `args` narrow the run down (to profile one part)? Only a complete run writes the
/// report.
fn narrowed(args: &Args) -> bool {
    args.forwarding_only
        || !args.sizes.is_empty()
        || !args.flows.is_empty()
        || args.runs.is_some()
        || args.rounds.is_some()
        || args.scenario.is_some()
}

/// Is `perf` there to profile with?
fn perf_installed() -> bool {
    Command::new("perf")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    let short = args.short;
    let (mut runs, mut rounds, mut sizes): (usize, u32, Vec<u32>) = if short {
        (5_000, 1, vec![1_000])
    } else {
        (1_000_000, 3, vec![1_000, 65_536, 1_048_576])
    };
    runs = args.runs.unwrap_or(runs);
    rounds = args.rounds.unwrap_or(rounds);
    if !args.sizes.is_empty() {
        sizes = args.sizes.clone();
    }
    let mut report = String::new();
    let mut cost_rows = Vec::new();
    let mut sweep_costs = Vec::new();
    let mut profiled = Vec::new();
    writeln!(
        report,
        "## Program cost (BPF_PROG_TEST_RUN, ns per packet, kernel-measured)\n"
    )?;
    let flow_ttl = nat_common::config::FLOW_TTL_NS / 1_000_000_000;
    writeln!(
        report,
        "{runs} packets per measurement, each run once, best of {rounds}; lookups spread over the table by random sampling. \
         Established rows: each sampled packet also ran once, untimed, less than a second before, after the route generation moved on (a flow in steady state, whose flow cache entry answers and whose next hop was checked; warmed and timed in chunks of {WARM_CHUNK}). \
         Each flow also pays one \"entry expired\" packet every {flow_ttl} s (FLOW_TTL_NS), and each next hop one a second (NEXT_HOP_TTL_NS: the first packet of any of its flows after that goes to its session to check it); the end-to-end rates below include those. \
         \"Entry expired\" rows: one packet per flow, more than FLOW_TTL_NS after the flow's previous one, so each goes back to its session and looks its route up again: what one packet per flow costs every {flow_ttl} s, and after every route or neighbour change. \
         The forwarder looks up the FIB for every packet. \
         \"Flow cache misses\": the share of the NAT's timed packets that went past the flow cache to the session tables (and filled it); \
         a new flow, a SYN-ACK, an ICMP error and a PPTP/IPsec packet never use the cache.\n"
    )?;
    writeln!(
        report,
        "| scenario | sessions | verdict | NAT ns | parse-only ns | ratio | forwarder ns | NAT - forwarder ns | forwarder + state read ns | NAT - (forwarder + state read) ns | flow cache misses |"
    )?;
    writeln!(
        report,
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    if args.forwarding_only {
        sizes.clear();
    }
    for &n in &sizes {
        eprintln!("bench: {n} sessions ...");
        let (rows, sweep, profiles) =
            measure_size(n, runs, rounds, args.scenario.as_deref(), args.profile);
        profiled.extend(profiles);
        sweep_costs.extend(sweep);
        for r in rows {
            writeln!(
                report,
                "| {} | {} | {} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1}% |",
                r.scenario,
                r.sessions,
                action_name(r.action),
                r.nat_ns,
                r.base_ns,
                r.nat_ns / r.base_ns,
                r.fwd_ns,
                r.nat_ns - r.fwd_ns,
                r.state_ns,
                r.nat_ns - r.state_ns,
                r.fills * 100.0
            )?;
            cost_rows.push(r);
        }
    }
    new_flow_section(&mut report, &cost_rows)?;
    // The full run profiles the target's new flow; a narrowed one profiles on request.
    if !short && !narrowed(&args) {
        if perf_installed() {
            eprintln!("bench: profiling a new flow at {PROFILE_SESSIONS} sessions ...");
            let (_, _, profiles) = measure_size(
                PROFILE_SESSIONS,
                PROFILE_RUNS,
                PROFILE_ROUNDS,
                Some(SCENARIO_NEW_FLOW),
                true,
            );
            profiled.extend(profiles);
        } else {
            writeln!(
                report,
                "\nNo profile of the new flow: `perf` is not installed (Debian: linux-perf; `cargo xtask bench` installs it)."
            )?;
        }
    }
    // A full run says in the report why a profile is missing; a profile asked for fails the
    // run, once the report is out.
    let mut unprofiled = None;
    for p in profiled {
        match p {
            Ok(p) => report.push_str(&p),
            Err(e) if args.profile => unprofiled = Some(e),
            Err(e) => writeln!(report, "\n{e:#}")?,
        }
    }
    sweep_section(&mut report, &sweep_costs)?;
    if args.cost_only {
        println!("{report}");
        return unprofiled.map_or(Ok(()), Err);
    }
    let (rates, new_sessions) = forwarding_section(&mut report, short, &args.flows)?;
    writeln!(
        report,
        "\n## Memory at the default table sizes (kernel memlock per map)\n"
    )?;
    writeln!(report, "| map | entries | bytes | bytes per entry |")?;
    writeln!(report, "|---|---:|---:|---:|")?;
    let mut total = 0;
    let maps = memory()?;
    for (name, entries, bytes) in &maps {
        total += bytes;
        writeln!(
            report,
            "| {name} | {entries} | {bytes} | {:.0} |",
            *bytes as f64 / (*entries).max(1) as f64
        )?;
    }
    writeln!(
        report,
        "| total | | {total} ({:.1} MiB) | |",
        total as f64 / (1 << 20) as f64
    )?;
    // Tables are preallocated: every entry costs its share whether used or not.
    // (entries, bytes) of map `name`.
    let map = |name: &str| {
        maps.iter()
            .find(|(n, _, _)| n == name)
            .map_or((1, 0), |(_, e, b)| ((*e).max(1), *b))
    };
    let per_entry = |name: &str| {
        let (entries, bytes) = map(name);
        bytes as f64 / entries as f64
    };
    use nat_common::maps::names;
    // The flow caches have an entry per session slot (rounded up to a power of two).
    let cache_per_session =
        (map(names::FLOWS_OUT).1 + map(names::FLOWS_IN).1) as f64 / map(names::SESSIONS).0 as f64;
    // The sweeper's filter bitmap has bits for each session slot too, and its list of due
    // sessions a slot for each quarter.
    let walk_per_session = (map(names::FILTERS_LIVE).1 + map(names::EXPIRING).1) as f64
        / map(names::SESSIONS).0 as f64;
    let per_session = per_entry(names::SESSIONS) + cache_per_session + walk_per_session;
    writeln!(
        report,
        "\nPer session: {:.0} bytes ({} + {:.0} of {} and {} + {:.0} of {} and {}), plus {:.0} in {} for each remote host a UDP mapping sends to after its first (which the mapping keeps) ({:.0} with it). \
         Per mapping: {:.0} bytes ({} + {}).",
        per_session,
        names::SESSIONS,
        cache_per_session,
        names::FLOWS_OUT,
        names::FLOWS_IN,
        walk_per_session,
        names::FILTERS_LIVE,
        names::EXPIRING,
        per_entry(names::FILTERS),
        names::FILTERS,
        per_session + per_entry(names::FILTERS),
        per_entry(names::MAPPINGS_OUT) + per_entry(names::MAPPINGS_IN),
        names::MAPPINGS_OUT,
        names::MAPPINGS_IN,
    )?;
    println!("{report}");
    // Only a complete run is the report; a narrowed one (profiling) only prints.
    let narrowed = narrowed(&args);
    let targets = targets(&Measured {
        cost: &cost_rows,
        rates: &rates,
        new_sessions: Some(new_sessions),
        sweep: sweep_costs.first().copied(),
        session_bytes: Some((per_session, per_entry(names::FILTERS))),
    })?;
    println!("{targets}");
    if !short && !narrowed {
        let doc = format!(
            "# Benchmarks\n\nMeasured by `cargo xtask bench` on {}.\nEvery ratio compares numbers taken in the same run.\n{targets}\n{report}",
            machine()
        );
        std::fs::write("BENCHMARKS.md", doc)?;
        eprintln!("bench: wrote BENCHMARKS.md");
    }
    Ok(())
}
