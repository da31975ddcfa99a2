//! What the daemon resolves before it touches the kernel, and how it writes it to the maps.

use anyhow::{Context as _, Result, bail};
use nat_common::config::NatConfig;
use std::{collections::BTreeSet, time::Duration};

use crate::{
    cli::RunArgs,
    config::{FileConfig, Interfaces, Overrides, Settings},
    lan_side::LanSide,
    netdev,
    pool::{self, PortPool},
    state::NatMaps,
};

/// Everything `run` resolved before touching the kernel.
pub(crate) struct Plan {
    pub(crate) settings: Settings,
    pub(crate) lan_index: u32,
    pub(crate) wan_index: u32,
    pub(crate) lan_net: netdev::Ipv4Net,
    /// Every prefix and route of the LAN interface, and the router's addresses on it.
    pub(crate) lan_side: LanSide,
    pub(crate) wan_addr: std::net::Ipv4Addr,
    /// Ports the router has listened on since the start or the last reload: out of the pool
    /// for good (until a reload), so that a service that restarts finds its port free and no
    /// LAN host can take it in between.
    pub(crate) listening: BTreeSet<u16>,
}

pub(crate) fn plan(args: &RunArgs) -> Result<Plan> {
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
    // At start and on reload only: a LAN renumbered under a running daemon does not stop it
    // from following the network (the data path sends nothing out of the LAN side anyway).
    if let Some(dmz) = settings.dmz {
        let side: Vec<(std::net::Ipv4Addr, u8, u32)> = lan_side
            .checked_entries()?
            .iter()
            .map(|((a, l), k)| (*a, *l, *k))
            .collect();
        if let Some(why) = crate::forwards::not_a_lan_host(dmz, &side) {
            bail!("[dmz] host: {why}");
        }
    }
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
pub(crate) const LISTENER_CHECK: Duration = Duration::from_secs(1);

/// The pool for `plan`: its range without the router's own ports and the forwarded ones.
pub(crate) fn build_pool(plan: &Plan, maps: &NatMaps) -> Result<PortPool> {
    let (s, wan_addr) = (&plan.settings, plan.wan_addr);
    let mut reserved: BTreeSet<u16> = plan.listening.clone();
    reserved.extend(pool::local_port_range()?);
    reserved.extend(crate::forwards::forwarded_ports(maps)?);
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

/// Writes the pool, devices and CONFIG for `plan`; returns what it wrote.
pub(crate) fn configure(maps: &mut NatMaps, plan: &Plan) -> Result<(NatConfig, PortPool)> {
    // Held throughout: a forward added meanwhile must not see its ports put back in the pool.
    let _lock = maps.lock_config()?;
    let pool = build_pool(plan, maps)?;
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
