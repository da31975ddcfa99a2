//! End-to-end forwarding rate: a generator namespace sends 60-byte UDP frames (live-frame
//! BPF_PROG_RUN of `bench_gen`, XDP_TX out of its veth), the router forwards, a sink
//! namespace counts them in XDP and drops them. Compared in the same run: (a) the XDP NAT run
//! by the real `nat-ctl run`, (b) the bare XDP forwarder (fib lookup + redirect, no NAT),
//! (b') the same with one read of per-flow state per packet, (c) kernel forwarding with
//! nftables masquerade.

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, TestRun as _, TestRunAttrs, TestRunOptions,
    maps::{Array, DevMapHash, MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use integration_tests::{
    daemon::NatDaemon,
    lab::{LAN_HOST_A, LAN_IF, Lab, SERVER, WAN_IF},
    netns::Netns,
};
use nat_common::maps::{BenchGen, Session, SessionKey, names, programs};
use nat_ctl::{
    loader::{self, Tables},
    wire::to_wire,
};
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

pub const FRAME_LEN: usize = 60;

/// Groups the flows start in over one FLOW_TTL_NS (`Bench::start_flows`): a timed window
/// then holds its share of the flows' renewals to within one group.
pub const STAGGER_STEPS: u32 = 16;
/// Frames per send while the flows start: the time is checked between sends, each of which
/// also idles 20-30 ms at its end, so a send must be short against a group's 250 ms. (The
/// kernel's masquerade, at a sixth of the NAT's rate, starts its flows in fewer, uneven
/// groups; it keeps no next hops to renew.)
const STAGGER_CHUNK: u32 = 50_000;

/// Remote ports each LAN endpoint sends to in the rate runs: 64 000 flows are 64 000
/// sessions of 4 000 mappings. The NAT's mappings are endpoint-independent (RFC 4787), one
/// external port per LAN endpoint, so 64 000 endpoints behind the one WAN address would take
/// 99% of its ~64 K port pool, and the run would measure port exhaustion, not forwarding.
pub const RATE_DST_PORTS: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Router {
    XdpNat,
    /// xdp-nat with RESIDENT_SESSIONS more sessions (idle, established TCP of other hosts)
    /// in its tables while the flows run: a carrier's or campus's gateway.
    XdpNatResident,
    XdpForward,
    XdpForwardState,
    /// The least a new flow needs (`bench_new_flow_floor`, all its map operations, on tables
    /// of the NAT's default sizes): for the new-session rate.
    XdpNewFlowFloor,
    KernelMasquerade,
}

impl Router {
    pub fn name(self) -> &'static str {
        match self {
            Router::XdpNat => "xdp-nat",
            Router::XdpNatResident => "xdp-nat, 1 M resident sessions",
            Router::XdpForward => "bare XDP forwarder",
            Router::XdpForwardState => "XDP forwarder + state read",
            Router::XdpNewFlowFloor => "new-flow floor (endpoint-independent)",
            Router::KernelMasquerade => "kernel + nftables masquerade",
        }
    }
}

/// The NAT's configuration for the new-session rate: the generator's flows come from two
/// addresses and one MAC, standing for the many LAN hosts whose first packets a gateway sees
/// at once, so the per-host and per-MAC shares (a quarter of the pool or table each, twice
/// that per MAC) are raised to the pool and the table; they are checked and counted as ever.
const NEW_SESSION_LIMITS: &str =
    "[limits]\nmappings_per_host = 64512\nsessions_per_host = 262144\n";

/// Sessions in the tables beside the flows' for Router::XdpNatResident.
pub const RESIDENT_SESSIONS: u32 = 1 << 20;

/// The LAN hosts of the resident sessions: addresses of their own (the flows come from
/// LAN_HOST_A), as a campus has them.
fn resident_host(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, (i % 240) as u8, 10)
}

fn small_tables() -> Tables {
    Tables {
        max_sessions: 1024,
        max_mappings: 1024,
    }
}

fn mac_of(ns: &Netns, dev: &str) -> Result<[u8; 6]> {
    let out = ns.cmd("ip").args(["-br", "link", "show", dev]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mac = text
        .split_whitespace()
        .nth(2)
        .context("no MAC in `ip -br link`")?;
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad MAC {mac}"))
}

/// Loads an object with `load` in `ns` and attaches its `prog` to `dev` there; the returned
/// object keeps the attachment alive.
fn attach_in(
    ns: &Netns,
    load: fn(Tables) -> Result<Ebpf>,
    prog: &'static str,
    dev: &'static str,
) -> Result<Ebpf> {
    ns.run(move || -> Result<Ebpf> {
        let mut ebpf = load(small_tables())?;
        loader::attach(&mut ebpf, prog, dev, None)?;
        Ok(ebpf)
    })?
}

/// A bare forwarder (`prog`) on the router's LAN side, its DEVMAP holding both interfaces.
/// The one that reads flow state reads FLOWS_OUT at its default size; the new-flow floor's
/// tables are the NAT's default sizes too.
fn forwarder_in(ns: &Netns, prog: &'static str) -> Result<Ebpf> {
    ns.run(move || -> Result<Ebpf> {
        let tables = if [
            programs::BENCH_FORWARD_STATE,
            programs::BENCH_NEW_FLOW_FLOOR,
        ]
        .contains(&prog)
        {
            Tables {
                max_sessions: nat_common::maps::DEFAULT_MAX_SESSIONS,
                max_mappings: nat_common::maps::DEFAULT_MAX_MAPPINGS,
            }
        } else {
            small_tables()
        };
        let mut ebpf = loader::load_bench(tables)?;
        let mut devmap: DevMapHash<MapData> = ebpf
            .take_map(nat_common::maps::names::DEVMAP)
            .context("DEVMAP")?
            .try_into()?;
        for dev in [LAN_IF, WAN_IF] {
            let i = nat_ctl::netdev::ifindex(dev)?;
            devmap.insert(i, i, None, 0)?;
        }
        loader::attach(&mut ebpf, prog, LAN_IF, None)?;
        Ok(ebpf)
    })?
}

const NFT_MASQUERADE: &str = "table ip bench {\n  chain post {\n    type nat hook postrouting priority srcnat;\n    oifname \"WAN\" masquerade\n  }\n}\n";

/// New sessions per second, timed two ways.
#[derive(Clone, Copy)]
pub struct NewSessions {
    /// Over the generator's whole run, its start and its idle tail (20-30 ms after the
    /// last frame) included.
    pub wall: f64,
    /// At the sink, from the first new flow's packet to the last: what the router kept up.
    pub at_sink: f64,
}

/// The new-session rates of one run: the NAT's, and the least a new flow needs
/// (Router::XdpNewFlowFloor), beside which a target for the NAT's is judged.
#[derive(Clone, Copy)]
pub struct NewSessionRates {
    pub nat: NewSessions,
    pub floor: NewSessions,
}

/// One lab for every configuration: router set up for each in turn.
/// What `Bench::rate` measured of a router.
pub struct Rate {
    /// Packets per second at the sink.
    pub pps: f64,
    /// ns per packet its XDP program ran for, in place (None for the kernel's masquerade).
    pub program_ns: Option<f64>,
    /// The NAT's flow cache fills per second while the timed packets ran: its flows' trips
    /// back to their sessions, every FLOW_TTL_NS per flow and once a second per next hop (None
    /// for the other routers).
    pub fills_per_sec: Option<f64>,
}

pub struct Bench {
    /// What the resident case's daemons' sweeper threads used (CPU time), and over how long
    /// (one period of the schedule each, `rate`), summed over the setups.
    pub resident_sweeper: (Duration, Duration),
    lab: Lab,
    _sink: Ebpf,
    sink_count: PerCpuArray<MapData, u64>,
    sink_clock: PerCpuArray<MapData, u64>,
    sink_timed: Array<MapData, u32>,
    generator: Ebpf,
    generator_config: Array<MapData, BenchGen>,
    gen_ifindex: u32,
}

impl Bench {
    pub fn new() -> Result<Bench> {
        let lab = Lab::new("bench")?;
        // Room for 64 K flows in the NAT's pool: keep the router's own ephemeral range small.
        lab.router
            .sysctl("net.ipv4.ip_local_port_range", "61000 61001")?;
        lab.router.sysctl("net.ipv4.ip_forward", "1")?;
        let sink_mac = mac_of(&lab.wan, "eth0")?;
        let mac = sink_mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        lab.router.ip(&[
            "neigh",
            "replace",
            &SERVER.to_string(),
            "lladdr",
            &mac,
            "dev",
            WAN_IF,
            "nud",
            "permanent",
        ])?;
        let mut sink = attach_in(&lab.wan, loader::load_bench, programs::BENCH_SINK, "eth0")?;
        let sink_count = sink
            .take_map("BENCH_SINK_COUNT")
            .context("BENCH_SINK_COUNT")?
            .try_into()?;
        let sink_clock = sink
            .take_map("BENCH_SINK_CLOCK")
            .context("BENCH_SINK_CLOCK")?
            .try_into()?;
        let sink_timed = sink
            .take_map("BENCH_SINK_TIMED")
            .context("BENCH_SINK_TIMED")?
            .try_into()?;
        let router_mac = mac_of(&lab.router, LAN_IF)?;
        let gen_mac = mac_of(&lab.lan, "eth0")?;
        let mut generator = loader::load_bench(small_tables())?;
        let mut generator_config: Array<MapData, BenchGen> = generator
            .take_map("BENCH_GEN_CONFIG")
            .context("BENCH_GEN_CONFIG")?
            .try_into()?;
        let cfg = BenchGen {
            dst_mac: router_mac,
            src_mac: gen_mac,
            src_addr: to_wire(LAN_HOST_A),
            dst_addr: to_wire(SERVER),
            flows: 1,
            dst_ports: 1,
        };
        generator_config.set(0, cfg, 0)?;
        let gen_ifindex = lab.lan.run(|| nat_ctl::netdev::ifindex("eth0"))??;
        Ok(Bench {
            resident_sweeper: Default::default(),
            lab,
            _sink: sink,
            sink_count,
            sink_clock,
            sink_timed,
            generator,
            generator_config,
            gen_ifindex,
        })
    }

    /// `flows` flows from LAN endpoints from `src` on, `dst_ports` flows each (BenchGen).
    fn set_flows(&mut self, flows: u32, src: Ipv4Addr, dst_ports: u32) -> Result<()> {
        let mut c = self.generator_config.get(&0, 0)?;
        c.flows = flows;
        c.dst_ports = dst_ports;
        c.src_addr = to_wire(src);
        self.generator_config.set(0, c, 0)?;
        Ok(())
    }

    /// Starts the `flows` flows in STAGGER_STEPS groups spread over one FLOW_TTL_NS, as a
    /// warm-up. The generator sends its flows in turn, so flows that start together go back
    /// to their sessions together, a TTL later, and again a TTL after that: started
    /// all at once, they would renew in one burst every TTL, which a timed window holds
    /// wholly or not at all. Spread like this, as on a real gateway, a window holds about
    /// its share of the once-a-TTL renewals whenever it starts.
    fn start_flows(&mut self, flows: u32) -> Result<()> {
        let ttl = Duration::from_nanos(nat_common::config::FLOW_TTL_NS);
        let start = Instant::now();
        for step in 1..=STAGGER_STEPS {
            self.set_flows(
                (flows * step / STAGGER_STEPS).max(1),
                LAN_HOST_A,
                RATE_DST_PORTS,
            )?;
            while start.elapsed() < ttl * step / STAGGER_STEPS {
                self.send(STAGGER_CHUNK)?;
            }
        }
        Ok(())
    }

    fn sink_count(&self) -> Result<u64> {
        Ok(self.sink_count.get(&0, 0)?.iter().sum())
    }

    /// Sends `packets` frames in one live-frame run; returns the seconds it took.
    fn send(&mut self, packets: u32) -> Result<f64> {
        let ifindex = self.gen_ifindex;
        let generator = &mut self.generator;
        let ns = &self.lab.lan;
        ns.run(|| -> Result<f64> {
            let prog = loader::xdp(generator, programs::BENCH_GEN)?;
            let frame = [0u8; FRAME_LEN];
            let md: [u32; 6] = [0, FRAME_LEN as u32, 0, ifindex, 0, 0];
            let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
            let start = Instant::now();
            prog.test_run(TestRunOptions {
                data_in: Some(&frame),
                ctx_in: Some(&ctx),
                repeat: packets,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..Default::default()
            })?;
            Ok(start.elapsed().as_secs_f64())
        })?
    }

    /// Packets per second through the router set up as `router`, with `flows` flows, and
    /// what its XDP program took per packet in place (`program_ns`) while it forwarded
    /// another `packets` frames after the timed ones (None for the kernel's masquerade).
    pub fn rate(&mut self, router: Router, flows: u32, warmup: u32, packets: u32) -> Result<Rate> {
        let mut setup = self.set_up(router)?;
        self.set_flows(flows, LAN_HOST_A, RATE_DST_PORTS)?;
        let mut tries = 0;
        let fills = |s: &Setup| s.nat.as_ref().map(|n| n.counter("flow_cache_filled"));
        let (secs, got, filled) = loop {
            let swept = setup.after_a_sweep()?;
            self.start_flows(flows)?;
            self.send(warmup)?;
            let (before, fills_before) = (self.sink_count()?, fills(&setup));
            let secs = self.send(packets)?;
            let got = self.sink_count()? - before;
            let filled = fills(&setup).zip(fills_before).map(|(a, b)| a - b);
            let sent = nat_ctl::monotonic_ns();
            // The resident case's packets are timed between two walks of the whole table,
            // whose own cost is measured apart ("The sweeper"): a walk that began before they
            // were all sent voids the try.
            let Some(t) = swept else {
                break (secs, got, filled);
            };
            let next = setup.next_walk(t)?;
            if next >= sent {
                // What the daemon's sweeper uses over one period of its schedule, once it is
                // planned from a walk of the resident sessions: from the end of the walk that
                // followed the timed packets to the end of the next (due checks, then a walk).
                setup.walk_ended(next)?;
                let pid = setup.nat.as_ref().and_then(|n| n.pid());
                setup.sweeper_from = pid.and_then(|p| Some((p, sweeper_cpu(p)?, Instant::now())));
                let after = setup.next_walk(next)?;
                setup.walk_ended(after)?;
                break (secs, got, filled);
            }
            tries += 1;
            eprintln!("bench: a walk ran while {} was timed", router.name());
            if tries == QUIET_TRIES {
                bail!("{}: a walk ran in each of {tries} tries", router.name());
            }
        };
        let program_ns = match router {
            Router::KernelMasquerade => None,
            _ => Some(self.program_ns(packets)?),
        };
        self.tear_down(router, setup)?;
        if got == 0 {
            bail!("{}: nothing reached the sink", router.name());
        }
        Ok(Rate {
            pps: got as f64 / secs,
            program_ns,
            fills_per_sec: filled.map(|n| n as f64 / secs),
        })
    }

    /// Nanoseconds per packet the XDP program on the router's LAN side ran for while it
    /// forwarded `packets` frames, by the kernel's run-time statistics (BPF_ENABLE_STATS).
    /// A separate send: the statistics cost two clock reads per run, which the timed send
    /// must not pay.
    fn program_ns(&mut self, packets: u32) -> Result<f64> {
        let id = self.router_program_id()?;
        let info = || -> Result<(u64, u64)> {
            let p = aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .find(|p| p.id() == id)
                .with_context(|| format!("XDP program {id} is gone"))?;
            Ok((p.run_time().as_nanos() as u64, p.run_count()))
        };
        let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("BPF_ENABLE_STATS (run-time statistics)")?;
        let (t0, n0) = info()?;
        self.send(packets)?;
        let (t1, n1) = info()?;
        if n1 <= n0 {
            bail!("XDP program {id} on the router did not run");
        }
        Ok((t1 - t0) as f64 / (n1 - n0) as f64)
    }

    /// The id of the XDP program attached to the router's LAN interface.
    fn router_program_id(&self) -> Result<u32> {
        let out = self
            .lab
            .router
            .cmd("ip")
            .args(["-j", "link", "show", "dev", LAN_IF])
            .output()?;
        let links: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("`ip -j link show dev {LAN_IF}` in the router"))?;
        links[0]["xdp"]["prog"]["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .with_context(|| format!("no XDP program on the router's {LAN_IF}: {links}"))
    }

    /// New sessions per second: `flows` packets, each the first of its flow (fresh source
    /// addresses for every call), counted by the NAT's session_created counter or the
    /// kernel's conntrack count.
    pub fn new_session_rate(
        &mut self,
        router: Router,
        flows: u32,
        src: Ipv4Addr,
    ) -> Result<NewSessions> {
        let setup = self.set_up_with(router, NEW_SESSION_LIMITS)?;
        // Every flow its own LAN endpoint: each first packet creates a mapping too.
        self.set_flows(flows, src, 1)?;
        let before = self.created(router, &setup)?;
        let sunk = self.sink_count()?;
        let cpus = nr_cpus().map_err(|(_, e)| e)?;
        for slot in 0..3 {
            self.sink_clock
                .set(slot, PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
        }
        self.sink_timed.set(0, 1, 0)?;
        let secs = self.send(flows);
        self.sink_timed.set(0, 0, 0)?;
        let created = self.created(router, &setup)?.saturating_sub(before);
        self.tear_down(router, setup)?;
        let secs = secs?;
        let sunk = self.sink_count()? - sunk;
        let first = self
            .sink_clock
            .get(&0, 0)?
            .iter()
            .filter(|t| **t != 0)
            .min()
            .copied();
        let last = self.sink_clock.get(&1, 0)?.iter().max().copied();
        let timed: u64 = self.sink_clock.get(&2, 0)?.iter().sum();
        eprintln!(
            "bench: {}: {created} sessions created, {sunk} packets at the sink, {secs:.3} s",
            router.name(),
        );
        // Intervals between the first packet and the last, each packet a new session's.
        let at_sink = match (first, last) {
            (Some(first), Some(last)) if last > first && timed > 1 => {
                let span = (last - first) as f64 / 1e9;
                eprintln!("bench: {timed} of them clocked in {span:.3} s, first to last");
                if timed.abs_diff(created) * 100 > created {
                    eprintln!(
                        "bench: {}: the sink clocked {timed} packets for {created} new sessions",
                        router.name()
                    );
                }
                (timed - 1) as f64 / span
            }
            _ => f64::NAN,
        };
        Ok(NewSessions {
            wall: created as f64 / secs,
            at_sink,
        })
    }

    /// Sessions created so far: the NAT's counter, the floor's session table, or the
    /// kernel's conntrack count.
    fn created(&self, router: Router, setup: &Setup) -> Result<u64> {
        Ok(match (&setup.nat, &setup._programs) {
            (Some(nat), _) => nat.counter("session_created"),
            (None, Some(ebpf)) if router == Router::XdpNewFlowFloor => {
                let sessions: aya::maps::HashMap<_, SessionKey, Session> = ebpf
                    .map(names::BENCH_FLOOR_OUT)
                    .context("BENCH_FLOOR_OUT")?
                    .try_into()?;
                sessions.keys().try_fold(0, |n, k| k.map(|_| n + 1))?
            }
            _ => {
                let out = self
                    .lab
                    .router
                    .cmd("cat")
                    .arg("/proc/sys/net/netfilter/nf_conntrack_count")
                    .output()?;
                String::from_utf8_lossy(&out.stdout).trim().parse()?
            }
        })
    }

    fn set_up(&self, router: Router) -> Result<Setup> {
        self.set_up_with(router, "")
    }

    /// `set_up`, the NAT configured with `toml` (the others take no configuration).
    fn set_up_with(&self, router: Router, toml: &str) -> Result<Setup> {
        let r = &self.lab.router;
        let mut setup = Setup {
            _programs: None,
            nat: None,
            sweeps: None,
            sweeper_from: None,
        };
        match router {
            Router::XdpNat => {
                // As deployed: the sweeper's work competes with the packets.
                let interval = nat_ctl::cli::DEFAULT_SWEEP_INTERVAL_SECS.to_string();
                setup.nat = Some(NatDaemon::start_with_config_and(
                    &self.lab,
                    toml,
                    &["--sweep-interval", &interval],
                )?)
            }
            Router::XdpNatResident => {
                let interval = nat_ctl::cli::DEFAULT_SWEEP_INTERVAL_SECS.to_string();
                // Room for the resident sessions beside the flows'.
                let toml = format!("[tables]\nsessions = {}\n", RESIDENT_SESSIONS + 131_072);
                let nat = NatDaemon::start_with_config_and(
                    &self.lab,
                    &toml,
                    &["--sweep-interval", &interval],
                )?;
                let instance = nat_ctl::pins::Instance::new(&nat.instance)?;
                let mut maps = nat_ctl::state::NatMaps::open_pinned(&instance)?;
                let start = Instant::now();
                super::prefill(
                    &mut maps,
                    RESIDENT_SESSIONS,
                    resident_host,
                    nat_common::proto::IPPROTO_TCP,
                    0,
                )?;
                eprintln!(
                    "bench: {RESIDENT_SESSIONS} resident sessions in {:.1} s",
                    start.elapsed().as_secs_f64()
                );
                // The packets are timed between two sweeps (Setup::after_a_sweep).
                setup.nat = Some(nat);
                setup.sweeps = Some(maps);
            }
            Router::XdpForward => setup._programs = Some(forwarder_in(r, programs::BENCH_FORWARD)?),
            Router::XdpForwardState => {
                setup._programs = Some(forwarder_in(r, programs::BENCH_FORWARD_STATE)?)
            }
            Router::XdpNewFlowFloor => {
                setup._programs = Some(forwarder_in(r, programs::BENCH_NEW_FLOW_FLOOR)?)
            }
            Router::KernelMasquerade => {
                let rules = std::env::temp_dir().join(format!("{}.nft", r.name));
                std::fs::write(&rules, NFT_MASQUERADE.replace("WAN", WAN_IF))?;
                r.exec("nft", &["-f", &rules.display().to_string()])?;
                // No conntrack entries left from an earlier run (they would hold ports).
                r.exec("conntrack", &["-F"])
                    .or_else(|_| r.exec("true", &[]))?;
                // Frames XDP_TX'd into a veth only arrive if the peer runs XDP.
                setup._programs = Some(attach_in(
                    r,
                    |t| loader::load(None, t),
                    programs::PASS,
                    LAN_IF,
                )?);
            }
        }
        Ok(setup)
    }

    fn tear_down(&mut self, router: Router, setup: Setup) -> Result<()> {
        if let Some((pid, cpu, since)) = setup.sweeper_from {
            if let Some(now) = sweeper_cpu(pid) {
                self.resident_sweeper.0 += now.saturating_sub(cpu);
                self.resident_sweeper.1 += since.elapsed();
            }
        }
        drop(setup);
        if router == Router::KernelMasquerade {
            self.lab
                .router
                .exec("nft", &["delete", "table", "ip", "bench"])?;
        }
        Ok(())
    }
}

/// What keeps a router configuration alive: its programs, or the nat-ctl daemon.
struct Setup {
    _programs: Option<Ebpf>,
    nat: Option<NatDaemon>,
    /// The resident case's handle on the daemon's maps, to time its packets between sweeps.
    sweeps: Option<nat_ctl::state::NatMaps>,
    /// The resident case's daemon, its sweeper thread's CPU time, and when, at the end of a
    /// walk of the resident sessions (`Bench::rate`); the period ends at the end of the next.
    sweeper_from: Option<(u32, Duration, Instant)>,
}

/// CPU time (user and system) the sweeper thread of daemon `pid` has used; None if it has
/// none (the thread is named "sweeper": daemon/sweeps.rs).
fn sweeper_cpu(pid: u32) -> Option<Duration> {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let dir = task.ok()?.path();
        if std::fs::read_to_string(dir.join("comm")).ok()?.trim() != "sweeper" {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // proc(5): after the name in parentheses, field 3 (state) on; utime and stime are
        // fields 14 and 15, in clock ticks.
        let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        return Some(Duration::from_secs_f64(ticks as f64 / tick as f64));
    }
    None
}

/// Tries at timing the resident case between two walks before the bench gives up.
const QUIET_TRIES: u32 = 3;

/// How long to wait for the sweeper's next walk: walks are at most the shortest timeout less
/// an interval apart (sweeper::latest_walk_period, 58 s by default), or 20 times their
/// length (seconds at 1 M sessions).
const WALK_WAIT_SECS: u64 = 120;

impl Setup {
    /// The sweeper's latest walk of the whole table as SWEEP_WALK holds it: when its sweep
    /// began (CLOCK_MONOTONIC) and the sessions the walk saw (0 until it is done: the daemon
    /// writes its orders with no results, the walk writes them back; the due checks between
    /// walks carry both). None for the other routers.
    fn last_sweep(&self) -> Result<Option<(u64, u64)>> {
        let Some(maps) = &self.sweeps else {
            return Ok(None);
        };
        let read = || -> Result<(u64, u64)> {
            let w = maps.sweep_walk.get(&0, 0).context("reading SWEEP_WALK")?;
            Ok((w.walk_ns, w.sessions))
        };
        // A read from userspace is not atomic against the walk's write: two alike in a row.
        let mut last = read()?;
        loop {
            let again = read()?;
            if again == last {
                return Ok(Some(last));
            }
            last = again;
        }
    }

    /// Waits (up to WALK_WAIT_SECS) until SWEEP_WALK holds what `done` accepts (`last_sweep`); gives
    /// it. `what` names the wait in an error.
    fn wait_walk(&self, what: &str, done: impl Fn(u64, u64) -> bool) -> Result<(u64, u64)> {
        let walk =
            integration_tests::wait_for(std::time::Duration::from_secs(WALK_WAIT_SECS), || {
                match self.last_sweep() {
                    Ok(Some((t, seen))) if done(t, seen) => Some(Ok((t, seen))),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            });
        walk.with_context(|| format!("{what} within {WALK_WAIT_SECS} s"))?
    }

    /// Waits until the walk that began at `began` has ended.
    fn walk_ended(&self, began: u64) -> Result<()> {
        self.wait_walk("the sweeper's walk did not end", |now, seen| {
            now != began || seen != 0
        })?;
        Ok(())
    }

    /// Waits until the sweeper's walk clock moves past `since`; gives the new clock: when
    /// the next walk of the whole table began.
    fn next_walk(&self, since: u64) -> Result<u64> {
        let (t, _) = self.wait_walk("the sweeper began no walk", |t, _| t != since)?;
        Ok(t)
    }

    /// For the resident case: waits until a walk of the full table has ended, then a second
    /// more for the rest of its sweep (recounts of tables the size of the hosts). The next
    /// walk begins FULL_WALK_DUTY times this one's length after it began, 10 s or more at 1 M
    /// sessions; the due checks in between run with the timed packets (they list nothing
    /// here: the resident sessions are established TCP, due in hours). Gives when this sweep
    /// began; None for the other routers.
    fn after_a_sweep(&self) -> Result<Option<u64>> {
        let Some((running, _)) = self.last_sweep()? else {
            return Ok(None);
        };
        // Not the walk under way, if one is: it may have begun long ago.
        let mut t = self.next_walk(running)?;
        let began = loop {
            let (now, seen) = self
                .wait_walk("no walk of the resident sessions ended", |now, seen| {
                    now != t || seen != 0
                })?;
            if now != t {
                // A newer sweep began meanwhile: that one.
                t = now;
            } else if seen >= u64::from(RESIDENT_SESSIONS) {
                break t;
            } else {
                t = self.next_walk(t)?;
            }
        };
        std::thread::sleep(std::time::Duration::from_secs(1));
        Ok(Some(began))
    }
}
