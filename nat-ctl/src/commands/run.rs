//! `nat-ctl run`: load, configure, attach, then sweep until told to stop.

use anyhow::{Context as _, Result, bail};
use nat_common::{
    config::{LAYOUT_VERSION, NatConfig},
    maps::programs,
};
use std::{collections::BTreeSet, time::Duration};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::RunArgs,
    commands::{if_exists, ifname},
    config::{FileConfig, Interfaces, Overrides, Settings},
    lan_side::LanSide,
    loader::{self, Attached, Tables},
    monotonic_ns, netdev,
    pins::{DaemonLock, Instance, RunState, ensure_bpffs},
    pool::{self, PortPool},
    state::NatMaps,
    sweeper, sysctl,
};

/// The pinned link of the WAN egress guard (Instance::link_path).
pub const EGRESS_LINK: &str = "wan_egress";

/// Everything `run` resolved before touching the kernel.
struct Plan {
    settings: Settings,
    lan_index: u32,
    wan_index: u32,
    lan_net: netdev::Ipv4Net,
    /// Every prefix and route of the LAN interface, and the router's addresses on it.
    lan_side: LanSide,
    wan_addr: std::net::Ipv4Addr,
    /// Ports the router has listened on since the start or the last reload: out of the pool
    /// for good (until a reload), so that a service that restarts finds its port free and no
    /// LAN host can take it in between.
    listening: BTreeSet<u16>,
}

fn plan(args: &RunArgs) -> Result<Plan> {
    let file = FileConfig::discover(args.config.as_deref())?;
    let settings = file.settings(&Overrides {
        lan: args.lan.clone(),
        wan: args.wan.clone(),
        wan_addr: args.wan_addr,
        log_level: args.log_level,
    })?;
    let lan_index = netdev::ifindex(&settings.lan).context("--lan")?;
    let wan_index = netdev::ifindex(&settings.wan).context("--wan")?;
    let lan_side = LanSide::read(&settings.lan)?;
    let lan_net = lan_side.primary.with_context(|| {
        format!(
            "LAN interface '{}' has no IPv4 address: the LAN prefix is taken from it",
            settings.lan
        )
    })?;
    let wan_addr = match settings.wan_addr {
        Some(a) => a,
        None => {
            netdev::ipv4_of(&settings.wan)?
                .with_context(|| {
                    format!(
                        "WAN interface '{}' has no IPv4 address: give one with --wan-addr",
                        settings.wan
                    )
                })?
                .addr
        }
    };
    Ok(Plan {
        settings,
        lan_index,
        wan_index,
        lan_net,
        lan_side,
        wan_addr,
        listening: pool::listening_ports()?,
    })
}

/// How often the daemon reads the router's listening sockets, so that a service started
/// after it keeps its port (/proc/net/{tcp,udp}: reading the listeners is cheap next to the
/// sweep, and the window in which a new flow could take a new service's port is this long).
const LISTENER_CHECK: Duration = Duration::from_secs(1);

fn build_pool(plan: &Plan) -> Result<PortPool> {
    let (s, wan_addr) = (&plan.settings, plan.wan_addr);
    let mut reserved: BTreeSet<u16> = plan.listening.clone();
    reserved.extend(pool::local_port_range()?);
    let pool = PortPool::build(s.port_range.clone(), &reserved);
    if pool.ordinary.is_empty() {
        bail!(
            "the port range {}-{} leaves no port for the NAT once the router's own ports ({} reserved, incl. ip_local_port_range) are taken out; widen [ports] range",
            s.port_range.start(),
            s.port_range.end(),
            reserved.len()
        );
    }
    log::debug!(
        "port pool for {wan_addr}: {} privileged, {} ordinary",
        pool.privileged.len(),
        pool.ordinary.len()
    );
    Ok(pool)
}

pub fn run(instance: &Instance, args: &RunArgs) -> Result<()> {
    let plan = plan(args)?;
    ensure_bpffs()?;
    let mut lock = DaemonLock::acquire(instance)?;

    let adopting = instance.exists();
    if adopting {
        let old = NatMaps::open_pinned(instance)?.read_config()?;
        // Interfaces that are gone (removed while no daemon ran: their links are severed)
        // are replaced by the ones given; the sessions are adopted, the links made afresh.
        let gone = !if_exists(old.lan_ifindex) || !if_exists(old.wan_ifindex);
        if gone {
            log::warn!(
                "instance '{}': its interfaces (ifindex {} and {}) are gone; attaching to {} and {}",
                instance.name,
                old.lan_ifindex,
                old.wan_ifindex,
                plan.settings.lan,
                plan.settings.wan
            );
        }
        if old.layout_version == LAYOUT_VERSION
            && !gone
            && (old.lan_ifindex != plan.lan_index || old.wan_ifindex != plan.wan_index)
        {
            bail!(
                "instance '{}' is attached to {} and {}, not {} and {}: run `nat-ctl --instance {} detach` first, or pick another --instance",
                instance.name,
                ifname(old.lan_ifindex),
                ifname(old.wan_ifindex),
                plan.settings.lan,
                plan.settings.wan,
                instance.name
            );
        }
    }

    let tables = Tables {
        max_sessions: plan.settings.max_sessions,
        max_mappings: plan.settings.max_mappings,
    };
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(plan.settings.log_level.filter());
    }
    let mut ebpf = loader::load_with_log(Some(instance), tables, plan.settings.log_level)?;
    // The data path's log lines, forwarded to this process's log.
    let kernel_log = aya_log::EbpfLogger::init_with_logger(&mut ebpf, crate::kernel_log::KernelLog)
        .context("aya-log")?;
    let mut maps = NatMaps::from_ebpf(&mut ebpf)?;
    maps.config_lock = Some(instance.config_lock_path());
    // Switches before the config: the config is what makes the programs act.
    if adopting {
        let now: Vec<String> = crate::passthrough::list(&maps)?
            .iter()
            .map(|(n, on)| format!("{n} {}", if *on { "on" } else { "off" }))
            .collect();
        println!(
            "passthrough switches kept from the pinned state: {}",
            now.join(", ")
        );
    } else {
        maps.set_switches(&plan.settings.passthrough)?;
    }
    let (cfg, pool) = configure(&mut maps, &plan)?;

    for change in sysctl::prepare_forwarding(&plan.settings.lan, &plan.settings.wan)? {
        log::info!("sysctl {change}");
    }
    let lan_mode = loader::attach(
        &mut ebpf,
        programs::LAN_INGRESS,
        &plan.settings.lan,
        Some(&instance.link_path("lan")),
    )?;
    let wan_mode = loader::attach(
        &mut ebpf,
        programs::WAN_INGRESS,
        &plan.settings.wan,
        Some(&instance.link_path("wan")),
    )?;
    loader::attach_egress(
        &mut ebpf,
        &plan.settings.wan,
        &instance.link_path(EGRESS_LINK),
    )?;
    let describe = |a: Attached| match a {
        Attached::Replaced => "program replaced in the existing link",
        Attached::Native => "native XDP",
        Attached::Generic => "generic XDP (slower)",
    };
    println!(
        "xdp-nat '{}' running: LAN {} ({}, {}), WAN {} ({}, {}, egress guard), {} sessions adopted",
        instance.name,
        plan.settings.lan,
        plan.lan_side.describe(),
        describe(lan_mode),
        plan.settings.wan,
        plan.wan_addr,
        describe(wan_mode),
        if adopting { maps.sessions()?.len() } else { 0 },
    );
    println!(
        "port pool: {} ordinary + {} privileged ports; filtering {}; Ctrl-C stops the daemon and leaves the NAT running{}",
        pool.ordinary.len(),
        pool.privileged.len(),
        plan.settings.filtering.name(),
        if args.detach_on_exit {
            " (no: --detach-on-exit)"
        } else {
            ""
        }
    );

    let state = RunState {
        pid: std::process::id(),
        config: FileConfig::path(args.config.as_deref()),
        lan: args.lan.clone(),
        wan: args.wan.clone(),
        wan_addr: args.wan_addr,
        log_level: args.log_level,
        reloads: 0,
    };
    state.write(instance)?;
    lock.ready()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut daemon = Daemon {
        kernel_log: Some(kernel_log),
        ebpf: &mut ebpf,
        instance,
        args,
        maps,
        cfg,
        pool,
        plan,
        state,
        missing: BTreeSet::new(),
        sweeps_stretched: false,
    };
    let result = rt.block_on(daemon.serve());
    let _ = std::fs::remove_file(instance.run_state_path());
    if args.detach_on_exit {
        drop(daemon);
        drop(ebpf);
        instance.remove_pins()?;
        println!("detached and removed the pinned state");
    }
    result
}

/// Writes the pool, devices and CONFIG for `plan`; returns what it wrote.
fn configure(maps: &mut NatMaps, plan: &Plan) -> Result<(NatConfig, PortPool)> {
    let pool = build_pool(plan)?;
    let cfg = plan.settings.nat_config(
        &Interfaces {
            lan_index: plan.lan_index,
            wan_index: plan.wan_index,
            lan_net: plan.lan_net,
            wan_addr: plan.wan_addr,
            lan_extra: plan.lan_side.extra(),
        },
        &pool,
    );
    // The trie before the config that tells the programs to look at it.
    maps.write_lan_side(&plan.lan_side)?;
    maps.apply(&cfg, &pool)?;
    Ok((cfg, pool))
}

/// The running daemon: sweeps, reloads on SIGHUP, serves metrics, stops on SIGINT/SIGTERM.
struct Daemon<'a> {
    kernel_log: Option<aya_log::EbpfLogger<crate::kernel_log::KernelLog>>,
    /// The loaded programs, to attach again to an interface that comes back.
    ebpf: &'a mut aya::Ebpf,
    instance: &'a Instance,
    args: &'a RunArgs,
    maps: NatMaps,
    cfg: NatConfig,
    /// The port pool as last configured (for PORT_IN_POOL after sweeps).
    pool: PortPool,
    plan: Plan,
    state: RunState,
    /// Sides ("lan", "wan") whose interface is gone, reported once.
    missing: BTreeSet<&'static str>,
    /// The last sweep took too long for the configured interval (said once, until it no
    /// longer does).
    sweeps_stretched: bool,
}

impl Daemon<'_> {
    async fn serve(&mut self) -> Result<()> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut tick = tokio::time::interval(Duration::from_secs(self.args.sweep_interval));
        // A late tick (a long sweep, a stretched interval) waits a whole period, never bursts.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listeners = tokio::time::interval(LISTENER_CHECK);
        listeners.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // SAFETY: the AsyncFd owns the logger and with it the ring buffer's fd, so the fd
        // outlives its registration.
        let mut kernel_log =
            unsafe { tokio::io::unix::AsyncFd::register(self.kernel_log.take().expect("logger")) }
                .map_err(|_| anyhow::anyhow!("cannot watch the aya-log ring buffer"))?;
        // Without it, flows still pick up a change within NEXT_HOP_TTL_NS.
        let mut routes = match crate::netlink::RouteWatch::open() {
            Ok(w) => Some(w),
            Err(e) => {
                log::warn!(
                    "cannot watch route and neighbour changes ({e}); flows follow them within a second"
                );
                None
            }
        };
        if let Some(addr) = self.args.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics {addr}: cannot listen there"))?;
            println!("metrics on http://{addr}/metrics");
            tokio::spawn(crate::metrics::serve(listener, self.instance.clone()));
        }
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => self.reload(),
                guard = kernel_log.readable_mut() => {
                    let mut guard = guard?;
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                changed = async { routes.as_mut().expect("guarded").changed().await },
                    if routes.is_some() =>
                {
                    match changed {
                        Ok(c) => self.network_changed(c),
                        Err(e) => {
                            log::warn!("route watch failed ({e:#}); flows follow changes within a second");
                            routes = None;
                        }
                    }
                }
                _ = listeners.tick() => self.follow_listeners(),
                _ = tick.tick() => {
                    // Also without netlink (a failed watch, a missed message): the LAN side
                    // is read again every sweep.
                    self.follow_lan_side();
                    let start = std::time::Instant::now();
                                        match sweeper::sweep(&mut self.maps, &self.cfg.timeouts, monotonic_ns()) {
                        Ok(r) if r != Default::default() => {
                            log::info!("sweep: {r:?}");
                            // Freed ports outside the pool (a reload moved it) go back to
                            // the router.
                            if r.ports_freed > 0 {
                                if let Err(e) = self.maps.write_pool_bitmap(&self.pool) {
                                    log::warn!("cannot update the port pool's bitmap: {e:#}");
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(e) => log::warn!("sweep failed: {e:#}"),
                    }
                    let took = start.elapsed();
                    let every = tick.period();
                    let next = sweeper::next_sweep_in(every, took);
                    let stretched = next > every;
                    if stretched {
                        tick.reset_after(next);
                        if !self.sweeps_stretched {
                            log::info!(
                                "a sweep took {took:.1?}: sweeping every {next:.0?} or so, not every {every:?}, to stay under 1/{} of a CPU",
                                sweeper::SWEEP_DUTY
                            );
                        }
                    }
                    self.sweeps_stretched = stretched;
                }
            }
        }
        println!("stopping");
        Ok(())
    }

    /// Routes, addresses, links or a neighbour's MAC changed (rtnetlink).
    fn network_changed(&mut self, c: crate::netlink::Changes) {
        if c.addresses {
            self.follow_interfaces();
            self.follow_wan_address();
        }
        if c.next_hops {
            self.follow_lan_side();
        }
        if c.next_hops {
            match self.maps.bump_route_gen() {
                Ok(()) => log::debug!("route or neighbour change: next hops looked up again"),
                Err(e) => {
                    log::warn!("cannot invalidate next hops ({e:#}); they expire within a second")
                }
            }
        }
    }

    /// An interface went away (a USB modem unplugged, a driver reloaded, a PPP link down):
    /// say so once; when one of that name is back, attach to it again and carry on with the
    /// sessions (the next hops are looked up again).
    fn follow_interfaces(&mut self) {
        let sides = [
            ("lan", programs::LAN_INGRESS, self.plan.settings.lan.clone()),
            ("wan", programs::WAN_INGRESS, self.plan.settings.wan.clone()),
        ];
        let mut back = Vec::new();
        for (side, prog, name) in sides {
            let Ok(index) = netdev::ifindex(&name) else {
                if self.missing.insert(side) {
                    log::error!(
                        "{side} interface {name} went away: no NAT on it until an interface of that name is back"
                    );
                }
                continue;
            };
            let known = if side == "lan" {
                self.plan.lan_index
            } else {
                self.plan.wan_index
            };
            if index == known {
                self.missing.remove(side);
                continue;
            }
            // Redirects towards it must work from its first packet on.
            let attached = self.maps.set_devices(&[index]).and_then(|()| {
                let mode =
                    loader::reattach(self.ebpf, prog, &name, &self.instance.link_path(side))?;
                if side == "wan" {
                    loader::reattach_egress(
                        self.ebpf,
                        &name,
                        &self.instance.link_path(EGRESS_LINK),
                    )?;
                }
                Ok(mode)
            });
            match attached {
                Ok(mode) => {
                    if side == "lan" {
                        self.plan.lan_index = index;
                    } else {
                        self.plan.wan_index = index;
                    }
                    self.missing.remove(side);
                    back.push(format!(
                        "{side} interface {name} (ifindex {index}, {mode:?})"
                    ));
                }
                // Tried again on the next change.
                Err(e) => {
                    log::error!("{side} interface {name} is back, but attaching failed: {e:#}")
                }
            }
        }
        if back.is_empty() {
            return;
        }
        if let Ok(side) = LanSide::read(&self.plan.settings.lan) {
            if let Some(net) = side.primary {
                self.plan.lan_net = net;
                self.plan.lan_side = side;
            }
        }
        match sysctl::prepare_forwarding(&self.plan.settings.lan, &self.plan.settings.wan) {
            Ok(changes) => changes.iter().for_each(|c| log::info!("sysctl {c}")),
            Err(e) => log::warn!("{e:#}"),
        }
        match configure(&mut self.maps, &self.plan) {
            Ok((cfg, pool)) => {
                self.pool = pool;
                self.cfg = cfg;
                log::warn!("attached again: {}", back.join(", "));
            }
            Err(e) => log::error!("configuring the new interface failed: {e:#}"),
        }
    }

    /// The LAN interface's addresses or the routes through it changed (a secondary address,
    /// a subnet routed behind the LAN, a renumbered LAN): anti-spoofing and the egress guard
    /// follow at once. Sessions stay; a LAN host that is no longer on the LAN side can no
    /// longer use its own.
    fn follow_lan_side(&mut self) {
        let side = match LanSide::read(&self.plan.settings.lan) {
            Ok(s) => s,
            Err(e) => {
                log::warn!(
                    "cannot read the LAN side of {}: {e:#}",
                    self.plan.settings.lan
                );
                return;
            }
        };
        // No address (the interface is down or being renumbered): keep the old side until
        // one comes.
        let Some(primary) = side.primary else {
            return;
        };
        if side == self.plan.lan_side {
            return;
        }
        let old = std::mem::replace(&mut self.plan.lan_side, side);
        self.plan.lan_net = primary;
        match configure(&mut self.maps, &self.plan) {
            Ok((cfg, pool)) => {
                self.pool = pool;
                self.cfg = cfg;
                log::warn!(
                    "LAN side changed: {} (was {})",
                    self.plan.lan_side.describe(),
                    old.describe()
                );
            }
            Err(e) => log::error!("the LAN side changed, but applying it failed: {e:#}"),
        }
    }

    /// The WAN interface has another address (a DHCP lease changed): translate to it from
    /// now on. Sessions made for the old address are dropped, as netfilter's masquerade
    /// forgets its connections; their mappings are released by the sweeper. An address given
    /// with --wan-addr (or `wan_addr`) is kept whatever the interface says.
    fn follow_wan_address(&mut self) {
        if self.plan.settings.wan_addr.is_some() {
            return;
        }
        let addr = match netdev::ipv4_of(&self.plan.settings.wan) {
            Ok(Some(net)) => net.addr,
            // No address (lease lost, interface down): keep the old one until a new one comes.
            Ok(None) => return,
            Err(e) => {
                log::warn!(
                    "cannot read the WAN address of {}: {e:#}",
                    self.plan.settings.wan
                );
                return;
            }
        };
        if addr == self.plan.wan_addr {
            return;
        }
        let old = self.plan.wan_addr;
        self.plan.wan_addr = addr;
        let dropped = self.maps.flush(None);
        match configure(&mut self.maps, &self.plan) {
            Ok((cfg, pool)) => {
                self.pool = pool;
                self.cfg = cfg;
                log::warn!(
                    "WAN address changed from {old} to {addr}: translating to {addr}; {} sessions of the old address dropped",
                    dropped.unwrap_or(0)
                );
            }
            Err(e) => log::error!(
                "WAN address changed from {old} to {addr}, but applying it failed: {e:#}"
            ),
        }
    }

    /// A port the router started listening on (a service started after the daemon) leaves
    /// the pool, for good until a reload: one that came back, after a service restarted,
    /// would be the first a LAN host could claim (its source port kept) and hold, with the
    /// service's traffic. A live mapping that holds the port keeps it until it expires
    /// (nothing is taken from a running session); said in the log.
    fn follow_listeners(&mut self) {
        let now = match pool::listening_ports() {
            Ok(p) => p,
            Err(e) => {
                log::warn!("cannot follow the router's listening ports: {e:#}");
                return;
            }
        };
        if now.is_subset(&self.plan.listening) {
            return;
        }
        self.plan.listening.extend(now);
        let pool = match build_pool(&self.plan) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("cannot follow the router's listening ports: {e:#}");
                return;
            }
        };
        if pool == self.pool {
            return;
        }
        let taken: Vec<u16> = self
            .pool
            .ordinary
            .iter()
            .chain(self.pool.privileged.iter())
            .copied()
            .filter(|p| !pool.contains(*p))
            .collect();
        match configure(&mut self.maps, &self.plan) {
            Ok((cfg, pool)) => {
                self.cfg = cfg;
                self.pool = pool;
            }
            Err(e) => {
                log::error!(
                    "the router's listening ports changed, but updating the pool failed: {e:#}"
                );
                return;
            }
        }
        let held: Vec<String> = self
            .maps
            .mappings()
            .unwrap_or_default()
            .into_iter()
            .filter(|(ext, _)| taken.contains(&u16::from_be(ext.port)))
            .map(|(ext, m)| {
                format!(
                    "{} (held by {}:{} until its sessions end)",
                    u16::from_be(ext.port),
                    std::net::Ipv4Addr::from(u32::from_be(m.int_addr)),
                    u16::from_be(m.int_port)
                )
            })
            .collect();
        log::info!(
            "the router's listening ports changed: the pool has {} ordinary and {} privileged ports now{}",
            self.pool.ordinary.len(),
            self.pool.privileged.len(),
            if taken.is_empty() {
                String::new()
            } else {
                format!("; taken out: {taken:?}")
            }
        );
        if !held.is_empty() {
            log::warn!(
                "the router listens on ports a NAT mapping holds; it gets their traffic once they are freed: {}",
                held.join(", ")
            );
        }
    }

    /// SIGHUP: reads the configuration again and applies what can change without a restart
    /// (timeouts, filtering, port range, passthrough switches the file sets). An invalid
    /// file changes nothing.
    fn reload(&mut self) {
        let plan = match plan(self.args) {
            Ok(p) => p,
            Err(e) => {
                log::error!("reload rejected, the running settings stay: {e:#}");
                return;
            }
        };
        let (old, new) = (&self.plan.settings, &plan.settings);
        if plan.lan_index != self.plan.lan_index
            || plan.wan_index != self.plan.wan_index
            || new.max_sessions != old.max_sessions
            || new.max_mappings != old.max_mappings
        {
            log::warn!(
                "reload: interfaces and table sizes only change with a restart (nat-ctl detach, then run); applying the rest"
            );
        }
        let file = FileConfig::discover(self.args.config.as_deref()).unwrap_or_default();
        let explicit = [
            file.passthrough.pptp,
            file.passthrough.l2tp,
            file.passthrough.ipsec,
        ];
        let applied = configure(&mut self.maps, &plan).and_then(|(cfg, pool)| {
            for (i, on) in explicit.iter().enumerate() {
                if let Some(on) = on {
                    crate::passthrough::set(&mut self.maps, i as u8 + 1, *on)?;
                }
            }
            Ok((cfg, pool))
        });
        match applied {
            Ok((cfg, pool)) => {
                self.pool = pool;
                // The daemon's level changes now; the data path keeps the level it was loaded
                // with until the next start.
                if std::env::var_os("RUST_LOG").is_none() {
                    log::set_max_level(plan.settings.log_level.filter());
                }
                self.cfg = cfg;
                self.plan = plan;
                self.state.reloads += 1;
                if let Err(e) = self.state.write(self.instance) {
                    log::warn!("reload applied, but recording it failed: {e:#}");
                }
                log::info!(
                    "reloaded: timeouts udp {} s, tcp {}/{} s, icmp {} s; filtering {}",
                    cfg.timeouts.udp,
                    cfg.timeouts.tcp_established,
                    cfg.timeouts.tcp_transitory,
                    cfg.timeouts.icmp,
                    self.plan.settings.filtering.name()
                );
            }
            Err(e) => log::error!("reload failed while applying: {e:#}"),
        }
    }
}
