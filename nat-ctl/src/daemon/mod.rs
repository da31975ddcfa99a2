//! The daemon that `nat-ctl run` becomes once the programs are attached: its event loop
//! (signals, the data path's log, route and address changes, the sweeper's schedule, the
//! listening ports) in this file; what it resolves from the command line and the
//! configuration file (plan.rs); how it follows the kernel's interfaces, addresses, routes
//! and listening sockets (follow.rs); reload (reload.rs); and the sweeper's thread
//! (sweeps.rs).

mod follow;
pub(crate) mod plan;
mod reload;
mod sweeps;

use anyhow::{Context as _, Result};
use nat_common::config::NatConfig;
use std::{collections::BTreeSet, time::Duration};

use crate::{
    cli::RunArgs,
    pins::{Instance, RunState},
    pool::PortPool,
    state::NatMaps,
};
use tokio::signal::unix::{SignalKind, signal};

pub(crate) use plan::{LISTENER_CHECK, Plan, configure, plan};

/// The longest the route generation stays the same: the flow cache's stamps wrap
/// (`flow_cache::STAMP_WRAP_NS`, about 52 days), after which an entry no flow touched since
/// would answer again for up to FLOW_TTL_NS, under a generation that never moved (no route or
/// neighbour change, no reload, no netlink). Retiring every entry once a day costs each
/// flow one more next-hop lookup a day. (While a daemon runs: the data path goes on after
/// one is killed. And the generation is 16 bits: entries retired 65536 bumps ago could
/// match it again, which also needs their stamps to have come round.)
const GENERATION_LONGEST: Duration = Duration::from_secs(86_400);
const _: () =
    assert!(GENERATION_LONGEST.as_nanos() < nat_common::flow_cache::STAMP_WRAP_NS as u128 / 2);

/// The running daemon: sweeps, reloads on SIGHUP, serves metrics, stops on SIGINT/SIGTERM.
pub(crate) struct Daemon<'a> {
    pub(crate) kernel_log: Option<aya_log::EbpfLogger<crate::kernel_log::KernelLog>>,
    /// The loaded programs, to attach again to an interface that comes back.
    pub(crate) ebpf: &'a mut aya::Ebpf,
    pub(crate) instance: &'a Instance,
    pub(crate) args: &'a RunArgs,
    pub(crate) maps: NatMaps,
    pub(crate) cfg: NatConfig,
    /// The port pool as last configured (for PORT_IN_POOL after sweeps).
    pub(crate) pool: PortPool,
    pub(crate) plan: Plan,
    pub(crate) state: RunState,
    /// Sides whose interface is gone, reported once.
    pub(crate) missing: BTreeSet<crate::pins::Link>,
}

impl Daemon<'_> {
    pub(crate) async fn serve(&mut self) -> Result<()> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let every = Duration::from_secs(self.args.sweep_interval);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (swept, mut sweeps) = tokio::sync::mpsc::unbounded_channel();
        let walk = crate::state::walk_fd(self.ebpf)?;
        let _sweeper = sweeps::Sweeps::start(self.instance, every, swept, walk)?;
        let mut listeners = tokio::time::interval(LISTENER_CHECK);
        listeners.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut generations = tokio::time::interval_at(
            tokio::time::Instant::now() + GENERATION_LONGEST,
            GENERATION_LONGEST,
        );
        generations.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // SAFETY: the AsyncFd owns the logger and with it the ring buffer's fd, so the fd
        // outlives its registration.
        let mut kernel_log =
            unsafe { tokio::io::unix::AsyncFd::register(self.kernel_log.take().expect("logger")) }
                .map_err(|_| anyhow::anyhow!("cannot watch the aya-log ring buffer"))?;
        // Without it, flows still pick up a change within FLOW_TTL_NS (a neighbour's new MAC
        // within NEXT_HOP_TTL_NS, unless another address still has the old one).
        let mut routes = match crate::netlink::RouteWatch::open() {
            Ok(w) => Some(w),
            Err(e) => {
                log::warn!(
                    "cannot watch route and neighbour changes ({e}); flows follow them within seconds"
                );
                None
            }
        };
        // NAT-PMP and PCP for the LAN, when the configuration asks (a reload turns it on or
        // off).
        let mut portmap = None;
        self.follow_port_mapping(&mut portmap).await;
        let mut upnp = None;
        self.follow_upnp(&mut upnp);
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
                _ = hup.recv() => {
                    self.reload();
                    self.follow_port_mapping(&mut portmap).await;
                    self.follow_upnp(&mut upnp);
                }
                req = async { portmap.as_ref().expect("guarded").recv().await },
                    if portmap.is_some() =>
                {
                    match req {
                        Ok((msg, from)) => {
                            let pm = portmap.as_mut().expect("guarded");
                            pm.serve(&mut self.maps, &msg, from, self.plan.wan_addr).await;
                        }
                        Err(e) => log::warn!("port mapping socket: {e}"),
                    }
                }
                guard = kernel_log.readable_mut() => {
                    let mut guard = guard?;
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                changed = async { routes.as_mut().expect("guarded").changed().await },
                    if routes.is_some() =>
                {
                    match changed {
                        Ok(c) => {
                            let wan = self.plan.wan_addr;
                            self.network_changed(c);
                            if let (Some(pm), true) = (&mut portmap, self.plan.wan_addr != wan) {
                                pm.announce(self.plan.wan_addr);
                            }
                        }
                        Err(e) => {
                            log::warn!("route watch failed ({e:#}); flows follow changes within seconds");
                            routes = None;
                        }
                    }
                }
                _ = listeners.tick() => self.follow_listeners(),
                _ = generations.tick() => {
                    if let Err(e) = self.maps.bump_route_gen() {
                        log::warn!("cannot retire the cached next hops ({e:#})");
                    }
                }
                _ = tick.tick() => {
                    // Also without netlink (a failed watch, a missed message): the LAN side
                    // is read again every sweep period.
                    self.follow_lan_side();
                    self.follow_upnp(&mut upnp);
                    let now_s = crate::monotonic_secs();
                    match crate::forwards::expire_leases(&mut self.maps, now_s) {
                        Ok(0) => {}
                        Ok(n) => log::info!("port mapping: {n} lease(s) ended"),
                        Err(e) => log::warn!("ending port mapping leases failed: {e:#}"),
                    }
                }
                report = sweeps.recv() => {
                    let Some(r) = report else {
                        anyhow::bail!("the sweeper thread stopped (see the log above): nothing would expire");
                    };
                    log::info!("sweep: {r:?}");
                    // Freed ports outside the pool (a reload moved it) go back to the
                    // router. (The sweeper thread rewrote PORTS_TAKEN itself.)
                    if r.ports_freed > 0 {
                        if let Err(e) = self.maps.write_pool_bitmap(&self.pool) {
                            log::warn!("cannot update the port pool's bitmaps: {e:#}");
                        }
                    }
                }
            }
        }
        println!("stopping");
        Ok(())
    }

    /// Starts or stops the UPnP IGD service as the settings say, and starts it again on a
    /// new LAN address.
    fn follow_upnp(&self, upnp: &mut Option<crate::portmap::upnp::UpnpService>) {
        let want = self
            .plan
            .settings
            .upnp
            .then(|| (self.plan.settings.lan.clone(), self.plan.lan_net.addr));
        if want == upnp.as_ref().map(|u| u.lan.clone()) {
            return;
        }
        if upnp.take().is_some() {
            log::info!("UPnP IGD off");
        }
        let Some((lan, addr)) = want else {
            return;
        };
        let lan = &lan;
        match crate::portmap::upnp::UpnpService::open(self.instance, lan, addr) {
            Ok(u) => {
                log::info!(
                    "UPnP IGD on {addr} (SSDP on 1900, http://{addr}:{}/rootDesc.xml)",
                    crate::portmap::upnp::HTTP_PORT
                );
                *upnp = Some(u);
            }
            Err(e) => log::error!("cannot serve UPnP IGD: {e:#}"),
        }
    }

    /// Opens or closes the NAT-PMP/PCP service as the settings say, and announces the
    /// external address when it opens (a new epoch: clients make their mappings again).
    async fn follow_port_mapping(&self, portmap: &mut Option<crate::portmap::PortMapService>) {
        let wanted = self.plan.settings.pcp;
        if wanted == portmap.is_some() {
            return;
        }
        if !wanted {
            *portmap = None;
            log::info!("NAT-PMP and PCP off");
            return;
        }
        let (lan, addr) = (&self.plan.settings.lan, self.plan.lan_net.addr);
        match crate::portmap::PortMapService::open(lan, addr) {
            Ok(mut pm) => {
                log::info!(
                    "NAT-PMP and PCP on {addr}:{}",
                    crate::portmap::wire::SERVER_PORT
                );
                pm.announce(self.plan.wan_addr);
                *portmap = Some(pm);
            }
            Err(e) => log::error!("cannot serve NAT-PMP and PCP: {e:#}"),
        }
    }
}
