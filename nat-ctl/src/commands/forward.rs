//! `nat-ctl forward [add|del ...] [--json]`: port forwards, changed in the pinned maps (the
//! next packet sees the change; no reload, no other session touched).

use anyhow::Result;
use nat_common::maps::FORWARD_FROM_COMMAND;
use serde_json::json;

use crate::{
    cli::ForwardAction,
    forwards::{self, ForwardProto, ForwardRule, Listed, parse_ports, proto_name, range_text},
    pins::Instance,
    state::NatMaps,
};

pub fn forward(instance: &Instance, action: Option<&ForwardAction>, json_out: bool) -> Result<()> {
    match action {
        None => {
            let all = forwards::list(&NatMaps::open_pinned(instance)?)?;
            // Removed forwards wait out their sessions, but are no longer there for anyone.
            let active: Vec<Listed> = all.into_iter().filter(|l| !l.retired).collect();
            print_list(&active, json_out)
        }
        Some(ForwardAction::Add {
            proto,
            ports,
            to,
            from,
        }) => {
            // What the arguments say is checked before the instance is looked at.
            let rules = ForwardRule::parse(proto, ports, to.as_deref(), from.as_deref())?;
            let mut maps = NatMaps::open_pinned(instance)?;
            forwards::add(&mut maps, &rules, FORWARD_FROM_COMMAND)?;
            for r in &rules {
                println!("forwarding {}", r.describe());
            }
            Ok(())
        }
        Some(ForwardAction::Del { proto, ports }) => {
            let proto = ForwardProto::parse(proto)?;
            let ports = match (proto.has_ports(), ports) {
                (true, Some(p)) => parse_ports(p)?,
                (true, None) => anyhow::bail!("which port? `forward del tcp|udp PORT[-END]`"),
                (false, None) => 0..=0,
                (false, Some(_)) => anyhow::bail!("gre and esp forwards have no ports"),
            };
            let mut maps = NatMaps::open_pinned(instance)?;
            let mut removed = Vec::new();
            let mut missing = None;
            for &p in proto.numbers() {
                match forwards::remove(&mut maps, p, &ports) {
                    Ok(l) => removed.push(l),
                    Err(e) => missing = Some(e),
                }
            }
            // `del both` removes what there is of the two.
            if removed.is_empty() {
                return Err(missing.unwrap_or_else(|| anyhow::anyhow!("no forward to remove")));
            }
            for l in removed {
                println!(
                    "removed {} ({} new flows; its sessions run until they end)",
                    l.rule.describe(),
                    l.hits
                );
            }
            Ok(())
        }
    }
}

fn print_list(list: &[Listed], json_out: bool) -> Result<()> {
    let now_s = crate::monotonic_secs();
    // A lease's remaining seconds (who mapped what until when); None for a forward.
    let expires_in = |l: &Listed| (l.expires_s != 0).then(|| l.expires_s.saturating_sub(now_s));
    if json_out {
        let rows: Vec<_> = list
            .iter()
            .map(|l| {
                let r = &l.rule;
                json!({
                    "proto": proto_name(r.proto),
                    "port": *r.ports.start(),
                    "last_port": *r.ports.end(),
                    "to": r.to.to_string(),
                    "to_port": r.to_port,
                    "from": r.from.map(|n| format!("{}/{}", n.network(), n.prefix_len)),
                    "hits": l.hits,
                    "origin": l.origin_name(),
                    "expires_in": expires_in(l),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    if list.is_empty() {
        println!("no port forwards (add one with `nat-ctl forward add tcp 8080 192.168.1.10:80`)");
        return Ok(());
    }
    println!(
        "{:<5} {:<12} {:<28} {:<20} {:>8}  origin",
        "proto", "port", "to", "from", "hits"
    );
    for l in list {
        let r = &l.rule;
        let (ports, to) = if r.ports == (0..=0) {
            // GRE, ESP: no ports.
            ("-".to_string(), r.to.to_string())
        } else {
            (
                range_text(&r.ports),
                format!("{}:{}", r.to, range_text(&r.lan_ports())),
            )
        };
        let from = r.from.map_or("any".to_string(), |n| {
            format!("{}/{}", n.network(), n.prefix_len)
        });
        let origin = match expires_in(l) {
            Some(s) => format!("{}, {s} s left", l.origin_name()),
            None => l.origin_name().to_string(),
        };
        println!(
            "{:<5} {:<12} {:<28} {:<20} {:>8}  {origin}",
            proto_name(r.proto),
            ports,
            to,
            from,
            l.hits,
        );
    }
    Ok(())
}
