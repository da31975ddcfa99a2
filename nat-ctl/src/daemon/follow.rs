//! How the daemon follows the kernel: interfaces that go and come back, the LAN side, the
//! WAN address, route and neighbour changes, the router's listening sockets.

use nat_common::maps::programs;

use crate::{lan_side::LanSide, loader, netdev, pins::Link, pool, sysctl};

use super::{Daemon, configure, plan::build_pool};

impl Daemon<'_> {
    pub(super) fn network_changed(&mut self, c: crate::netlink::Changes) {
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
                    log::warn!(
                        "cannot invalidate next hops ({e:#}); they follow changes within seconds"
                    )
                }
            }
        }
    }

    pub(super) fn follow_interfaces(&mut self) {
        let sides = [
            (
                Link::Lan,
                programs::LAN_INGRESS,
                self.plan.settings.lan.clone(),
            ),
            (
                Link::Wan,
                programs::WAN_INGRESS,
                self.plan.settings.wan.clone(),
            ),
        ];
        let mut back = Vec::new();
        for (side, prog, name) in sides {
            let Ok(index) = netdev::ifindex(&name) else {
                if self.missing.insert(side) {
                    log::error!(
                        "{} interface {name} went away: no NAT on it until an interface of that name is back",
                        side.name()
                    );
                }
                continue;
            };
            let known = if side == Link::Lan {
                self.plan.lan_index
            } else {
                self.plan.wan_index
            };
            if index == known {
                self.missing.remove(&side);
                continue;
            }
            // Redirects towards it must work from its first packet on.
            let attached = self.maps.set_devices(&[index]).and_then(|()| {
                let mode =
                    loader::reattach(self.ebpf, prog, &name, &self.instance.link_path(side))?;
                if side == Link::Wan {
                    loader::reattach_egress(
                        self.ebpf,
                        &name,
                        &self.instance.link_path(Link::WanEgress),
                    )?;
                }
                Ok(mode)
            });
            match attached {
                Ok(mode) => {
                    if side == Link::Lan {
                        self.plan.lan_index = index;
                    } else {
                        self.plan.wan_index = index;
                    }
                    self.missing.remove(&side);
                    back.push(format!(
                        "{} interface {name} (ifindex {index}, {mode:?})",
                        side.name()
                    ));
                }
                // Tried again on the next change.
                Err(e) => {
                    log::error!(
                        "{} interface {name} is back, but attaching failed: {e:#}",
                        side.name()
                    )
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

    pub(super) fn follow_lan_side(&mut self) {
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

    pub(super) fn follow_wan_address(&mut self) {
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

    pub(super) fn follow_listeners(&mut self) {
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
        let pool = match build_pool(&self.plan, &self.maps) {
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
}
