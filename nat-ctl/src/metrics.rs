//! `nat-ctl run --metrics ADDR`: Prometheus text exposition of the pinned state, read anew
//! for every scrape (so it always agrees with `nat-ctl stats`).

use anyhow::Result;
use nat_common::{counters::CounterKind, maps::names, passthrough::Switch};
use std::{collections::BTreeMap, fmt::Write as _};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use crate::{cli::proto_name, pins::Instance, state::NatMaps};

fn kind_name(k: CounterKind) -> &'static str {
    match k {
        CounterKind::Forwarded => "forwarded",
        CounterKind::State => "state",
        CounterKind::Pass => "pass",
        CounterKind::Drop => "drop",
    }
}

/// The exposition text for `instance`.
pub fn render(instance: &Instance) -> Result<String> {
    let maps = NatMaps::open_pinned(instance)?;
    let mut out = String::new();
    writeln!(
        out,
        "# HELP xdp_nat_packets_total Packets by verdict; `reason` is the counter nat-ctl stats names."
    )?;
    writeln!(out, "# TYPE xdp_nat_packets_total counter")?;
    for (c, v) in maps.counters()? {
        writeln!(
            out,
            "xdp_nat_packets_total{{reason=\"{}\",kind=\"{}\"}} {v}",
            c.name(),
            kind_name(c.kind())
        )?;
    }
    let mut by_proto: BTreeMap<&str, u64> =
        ["tcp", "udp", "icmp"].iter().map(|p| (*p, 0)).collect();
    let sessions = maps.sessions()?;
    for (k, _) in &sessions {
        *by_proto.entry(proto_name(k.proto)).or_default() += 1;
    }
    *by_proto.entry("gre").or_default() += maps.pptp_calls()?.len() as u64;
    *by_proto.entry("esp").or_default() += crate::state::entries(&maps.esp_out)?.len() as u64;
    writeln!(
        out,
        "# HELP xdp_nat_sessions Sessions by protocol (gre: PPTP calls, esp: ESP security associations)."
    )?;
    writeln!(out, "# TYPE xdp_nat_sessions gauge")?;
    for (p, n) in &by_proto {
        writeln!(out, "xdp_nat_sessions{{proto=\"{p}\"}} {n}")?;
    }
    writeln!(
        out,
        "# HELP xdp_nat_passthrough_enabled VPN passthrough switches (1 on, 0 off)."
    )?;
    writeln!(out, "# TYPE xdp_nat_passthrough_enabled gauge")?;
    for switch in Switch::ALL {
        writeln!(
            out,
            "xdp_nat_passthrough_enabled{{protocol=\"{}\"}} {}",
            switch.name(),
            u8::from(maps.switch(switch)?)
        )?;
    }
    let mappings = maps.mappings()?;
    let fill = [
        (names::SESSIONS, sessions.len()),
        // Full, it only sends replies the long way.
        (
            names::SESSIONS_IN,
            crate::state::entries(&maps.sessions_in)?.len(),
        ),
        (names::MAPPINGS_IN, mappings.len()),
        (names::PPTP_CALLS_IN, maps.pptp_calls()?.len()),
        (names::ESP_IN, maps.esp_bindings()?.len()),
        (names::IKE_SAS, maps.ike_sa_list()?.len()),
        (names::FRAGS, crate::state::entries(&maps.frags)?.len()),
        (
            names::FRAGS_IN,
            crate::state::entries(&maps.frags_in)?.len(),
        ),
    ];
    writeln!(out, "# HELP xdp_nat_table_entries Entries in each table.")?;
    writeln!(out, "# TYPE xdp_nat_table_entries gauge")?;
    for (t, n) in fill {
        writeln!(out, "xdp_nat_table_entries{{table=\"{t}\"}} {n}")?;
    }
    writeln!(out, "# HELP xdp_nat_table_capacity Capacity of each table.")?;
    writeln!(out, "# TYPE xdp_nat_table_capacity gauge")?;
    for (t, _) in fill {
        let cap = aya::maps::MapInfo::from_pin(instance.map_path(t))
            .map(|i| i.max_entries())
            .unwrap_or(0);
        writeln!(out, "xdp_nat_table_capacity{{table=\"{t}\"}} {cap}")?;
    }
    let cfg = maps.read_config()?;
    writeln!(
        out,
        "# HELP xdp_nat_port_pool_size External ports (and ICMP ids) the NAT may hand out."
    )?;
    writeln!(out, "# TYPE xdp_nat_port_pool_size gauge")?;
    writeln!(
        out,
        "xdp_nat_port_pool_size {}",
        cfg.pool_len + cfg.priv_pool_len
    )?;
    writeln!(
        out,
        "# HELP xdp_nat_port_pool_used External ports in use or cooling, by protocol."
    )?;
    writeln!(out, "# TYPE xdp_nat_port_pool_used gauge")?;
    let mut used: BTreeMap<&str, u64> = ["tcp", "udp", "icmp"].iter().map(|p| (*p, 0)).collect();
    for (k, _) in &mappings {
        *used.entry(proto_name(k.proto)).or_default() += 1;
    }
    for (p, n) in used {
        writeln!(out, "xdp_nat_port_pool_used{{proto=\"{p}\"}} {n}")?;
    }
    Ok(out)
}

/// Answers every HTTP request on `listener` with the metrics (any path: there is one page).
pub async fn serve(listener: TcpListener, instance: Instance) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let instance = instance.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            // The request itself does not matter; read what came so the client sees a reply.
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(2), conn.read(&mut buf)).await;
            let (status, body) = match render(&instance) {
                Ok(text) => ("200 OK", text),
                Err(e) => ("500 Internal Server Error", format!("error: {e:#}\n")),
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        });
    }
}
