//! `nat-ctl status`: exit 0 iff a live daemon owns the instance and its programs (both XDP
//! programs and the WAN egress guard) are attached; 3 if pinned state exists without a daemon; 1 if there is no instance.

use anyhow::Result;
use aya::{
    maps::MapInfo,
    programs::links::{FdLink, PinnedLink},
};
use nat_common::maps::{LAN_SIDE_ROUTER, names};
use serde_json::json;
use std::collections::BTreeMap;

use crate::{
    cli::proto_name,
    config::Filtering,
    netdev::{if_exists, ifname},
    pins::Instance,
    pins::Link,
    state::NatMaps,
    wire::addr,
};

pub const EXIT_RUNNING: u8 = 0;
pub const EXIT_NO_INSTANCE: u8 = 1;
pub const EXIT_NO_DAEMON: u8 = 3;

/// Program id attached through the pinned link of `side` to interface `ifindex`, if that
/// link is alive and the interface still exists (a pinned link outlives its interface).
fn attached_program(instance: &Instance, link: Link, ifindex: u32) -> Option<u32> {
    if !if_exists(ifindex) {
        return None;
    }
    let link = PinnedLink::from_pin(instance.link_path(link)).ok()?;
    FdLink::from(link).info().ok().map(|i| i.program_id())
}

fn capacity(instance: &Instance, map: &str) -> Option<u32> {
    MapInfo::from_pin(instance.map_path(map))
        .ok()
        .map(|i| i.max_entries())
}

pub fn status(instance: &Instance, json_out: bool) -> Result<u8> {
    if !instance.exists() {
        if json_out {
            println!("{}", json!({"instance": instance.name, "state": "absent"}));
        } else {
            eprintln!(
                "error: no xdp-nat instance '{}' (start one with `nat-ctl run --lan IF --wan IF`)",
                instance.name
            );
        }
        return Ok(EXIT_NO_INSTANCE);
    }
    let maps = NatMaps::open_pinned(instance)?;
    let cfg = maps.read_config()?;
    // Pins are host-wide, interfaces are per network namespace: from another namespace the
    // instance's ifindexes name other interfaces, or none.
    let here = crate::netdev::netns_ino();
    if cfg.netns_ino != 0 && here != 0 && cfg.netns_ino != here {
        if json_out {
            println!(
                "{}",
                json!({"instance": instance.name, "state": "other-namespace", "netns_inode": cfg.netns_ino})
            );
        } else {
            println!(
                "instance   {} (in another network namespace, inode {}: run nat-ctl there, e.g. `nsenter --net=/run/netns/NAME nat-ctl --instance {} status`)",
                instance.name, cfg.netns_ino, instance.name
            );
        }
        return Ok(EXIT_NO_DAEMON);
    }
    let pid = instance.daemon_pid();
    let lan_prog = attached_program(instance, Link::Lan, cfg.lan_ifindex);
    let wan_prog = attached_program(instance, Link::Wan, cfg.wan_ifindex);
    let egress_prog = attached_program(instance, Link::WanEgress, cfg.wan_ifindex);
    let mut per_proto: BTreeMap<&str, usize> = BTreeMap::new();
    let sessions = maps.sessions()?;
    for (k, _) in &sessions {
        *per_proto.entry(proto_name(k.proto)).or_default() += 1;
    }
    let mappings = maps.mappings()?.len();
    let running =
        pid.is_some() && lan_prog.is_some() && wan_prog.is_some() && egress_prog.is_some();
    // Interfaces removed while no daemon ran: the pinned links are severed, nothing forwards.
    let gone = !if_exists(cfg.lan_ifindex) || !if_exists(cfg.wan_ifindex);
    let state = if running {
        "running"
    } else if gone {
        "interfaces-gone"
    } else if pid.is_none() {
        "no-daemon"
    } else {
        "detached"
    };
    let filtering = Filtering::from_map(cfg.filtering)
        .map(|f| f.name())
        .unwrap_or("unknown");
    let lan_prefix = u32::from_be(cfg.lan_mask).count_ones();
    if json_out {
        println!(
            "{}",
            json!({
                "instance": instance.name,
                "state": state,
                "daemon_pid": pid,
                "lan": {"interface": ifname(cfg.lan_ifindex), "ifindex": cfg.lan_ifindex,
                        "address": format!("{}/{}", addr(cfg.lan_addr), lan_prefix), "program_id": lan_prog},
                "wan": {"interface": ifname(cfg.wan_ifindex), "ifindex": cfg.wan_ifindex,
                        "address": addr(cfg.wan_addr).to_string(), "program_id": wan_prog,
                        "egress_program_id": egress_prog},
                "lan_side": maps.lan_side_entries()?.iter().map(|(a, l, k)| json!({
                    "prefix": format!("{a}/{l}"),
                    "kind": if *k == LAN_SIDE_ROUTER { "router" } else { "lan" },
                })).collect::<Vec<_>>(),
                "filtering": filtering,
                "sessions": {"total": sessions.len(), "by_protocol": per_proto,
                             "capacity": capacity(instance, names::SESSIONS)},
                "mappings": {"total": mappings, "capacity": capacity(instance, names::MAPPINGS_IN)},
                "port_pool": {"ordinary": cfg.pool_len, "privileged": cfg.priv_pool_len},
                // Moves on with every route, neighbour, address or link change the daemon
                // sees (and every config write): cached next hops are looked up again.
                "route_generation": cfg.route_gen,
            })
        );
    } else {
        let prog =
            |p: Option<u32>| p.map_or("NOT ATTACHED".to_string(), |id| format!("program id {id}"));
        println!(
            "instance   {} ({})",
            instance.name,
            match pid {
                Some(p) if running => format!("running, daemon pid {p}"),
                _ if gone => format!(
                    "its interfaces are gone (ifindex {} and {}): nothing is translated until `nat-ctl --instance {} run --lan IF --wan IF` attaches it again (the sessions are kept), or `nat-ctl --instance {} detach` removes it",
                    cfg.lan_ifindex, cfg.wan_ifindex, instance.name, instance.name
                ),
                Some(p) => format!("daemon pid {p}, but a program is not attached"),
                None => "no daemon: the NAT keeps forwarding but nothing sweeps expired sessions"
                    .to_string(),
            }
        );
        println!(
            "lan        {} (ifindex {}) {}/{}, {}",
            ifname(cfg.lan_ifindex),
            cfg.lan_ifindex,
            addr(cfg.lan_addr),
            lan_prefix,
            prog(lan_prog)
        );
        println!(
            "wan        {} (ifindex {}) {}, {}; egress guard {}",
            ifname(cfg.wan_ifindex),
            cfg.wan_ifindex,
            addr(cfg.wan_addr),
            prog(wan_prog),
            prog(egress_prog)
        );
        if cfg.lan_extra != 0 {
            let nets: Vec<String> = maps
                .lan_side_entries()?
                .iter()
                .filter(|(_, _, k)| *k != LAN_SIDE_ROUTER)
                .map(|(a, l, _)| format!("{a}/{l}"))
                .collect();
            println!("lan side   {}", nets.join(", "));
        }
        println!("filtering  {filtering}");
        let by: Vec<String> = per_proto.iter().map(|(p, n)| format!("{p} {n}")).collect();
        println!(
            "sessions   {} of {} ({})",
            sessions.len(),
            capacity(instance, names::SESSIONS).unwrap_or(0),
            if by.is_empty() {
                "none".to_string()
            } else {
                by.join(", ")
            }
        );
        println!(
            "mappings   {} of {}",
            mappings,
            capacity(instance, names::MAPPINGS_IN).unwrap_or(0)
        );
        println!(
            "port pool  {} ordinary + {} privileged",
            cfg.pool_len, cfg.priv_pool_len
        );
    }
    Ok(if running {
        EXIT_RUNNING
    } else {
        EXIT_NO_DAEMON
    })
}
