//! `nat-ctl sessions`: the session table, like `conntrack -L`.

use anyhow::Result;
use nat_common::{proto::IPPROTO_TCP, tcp_state};
use serde_json::json;

use crate::{
    cli::{ProtoFilter, proto_name},
    commands::{addr, port},
    monotonic_ns,
    pins::Instance,
    state::NatMaps,
    sweeper::remaining_secs,
};

pub fn sessions(instance: &Instance, proto: Option<ProtoFilter>, json_out: bool) -> Result<()> {
    let maps = NatMaps::open_pinned(instance)?;
    let cfg = maps.read_config()?;
    let now = monotonic_ns();
    let mut rows = maps.sessions()?;
    rows.retain(|(k, _)| proto.is_none_or(|p| p.number() == k.proto));
    rows.sort_by_key(|(k, _)| {
        (
            k.proto,
            u32::from_be(k.int_addr),
            port(k.int_port),
            u32::from_be(k.rem_addr),
            port(k.rem_port),
        )
    });
    let wan = addr(cfg.wan_addr);
    if json_out {
        let list: Vec<_> = rows
            .iter()
            .map(|(k, s)| {
                json!({
                    "proto": proto_name(k.proto),
                    "state": if k.proto == IPPROTO_TCP { tcp_state::name(s.tcp_state) } else { "" },
                    "internal": format!("{}:{}", addr(k.int_addr), port(k.int_port)),
                    "external": format!("{}:{}", wan, port(s.ext_port)),
                    "remote": format!("{}:{}", addr(k.rem_addr), port(k.rem_port)),
                    "expires_in": remaining_secs(k, s, &cfg.timeouts, now),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for (k, s) in &rows {
        println!(
            "{:<5} {:<12} src={}:{} dst={}:{} ext={}:{} expires={}s",
            proto_name(k.proto),
            if k.proto == IPPROTO_TCP {
                tcp_state::name(s.tcp_state)
            } else {
                "-"
            },
            addr(k.int_addr),
            port(k.int_port),
            addr(k.rem_addr),
            port(k.rem_port),
            wan,
            port(s.ext_port),
            remaining_secs(k, s, &cfg.timeouts, now),
        );
    }
    eprintln!("{} session(s)", rows.len());
    Ok(())
}
