//! `nat-ctl sessions`: the session table, like `conntrack -L`, with PPTP calls (gre) and
//! raw-ESP security associations (esp).

use anyhow::Result;
use nat_common::{
    config::{ESP_TIMEOUT_SECS, GRE_TIMEOUT_SECS},
    passthrough::class_name,
    proto::{IPPROTO_ESP, IPPROTO_GRE, IPPROTO_TCP},
    tcp_state,
};
use serde::Serialize;

use crate::{
    cli::{ProtoFilter, SessionsArgs, proto_name},
    monotonic_ns,
    pins::Instance,
    state::{NatMaps, entries},
    sweeper::remaining_secs,
    wire::{addr, port},
};

#[derive(Serialize)]
struct Row {
    proto: &'static str,
    state: &'static str,
    /// pptp, l2tp, ipsec, or empty.
    passthrough: &'static str,
    internal: String,
    external: String,
    remote: String,
    expires_in: u64,
    /// Opened by a WAN host through a port forward.
    forwarded: bool,
}

fn left(last_seen_ns: u64, secs: u32, now: u64) -> u64 {
    (last_seen_ns + secs as u64 * 1_000_000_000).saturating_sub(now) / 1_000_000_000
}

fn hex(spi: u32) -> String {
    format!("0x{:08x}", u32::from_be(spi))
}

fn rows(maps: &NatMaps, proto: Option<u8>) -> Result<Vec<Row>> {
    let cfg = maps.read_config()?;
    let now = monotonic_ns();
    let wan = addr(cfg.wan_addr);
    let wanted = |p: u8| proto.is_none_or(|want| want == p);
    let mut out = Vec::new();
    let mut sessions = maps.sessions()?;
    sessions.retain(|(k, _)| wanted(k.proto));
    sessions.sort_by_key(|(k, _)| {
        (
            k.proto,
            u32::from_be(k.int_addr),
            port(k.int_port),
            u32::from_be(k.rem_addr),
            port(k.rem_port),
        )
    });
    for (k, s) in sessions {
        out.push(Row {
            proto: proto_name(k.proto),
            state: if k.proto == IPPROTO_TCP {
                tcp_state::name(s.tcp_state)
            } else {
                ""
            },
            passthrough: class_name(s.class),
            internal: format!("{}:{}", addr(k.int_addr), port(k.int_port)),
            external: format!("{}:{}", wan, port(s.ext_port)),
            remote: format!("{}:{}", addr(k.rem_addr), port(k.rem_port)),
            expires_in: remaining_secs(&k, &s, &cfg.timeouts, now),
            forwarded: s.origin == nat_common::maps::SESSION_FORWARDED,
        });
    }
    if wanted(IPPROTO_GRE) {
        for (_, c) in maps.pptp_calls()? {
            out.push(Row {
                proto: "gre",
                state: "",
                passthrough: "pptp",
                internal: format!("{} call {}", addr(c.int_addr), port(c.int_call_id)),
                external: format!("{} call {}", wan, port(c.ext_call_id)),
                remote: addr(c.rem_addr).to_string(),
                expires_in: left(c.last_seen_ns, GRE_TIMEOUT_SECS, now),
                forwarded: false,
            });
        }
    }
    if wanted(IPPROTO_ESP) {
        for (k, o) in entries(&maps.esp_out)? {
            out.push(Row {
                proto: "esp",
                state: if o.spi == 0 { "LEARNING" } else { "BOUND" },
                passthrough: "ipsec",
                internal: format!(
                    "{} spi-in {}",
                    addr(k.int_addr),
                    if o.spi == 0 { "?".into() } else { hex(o.spi) }
                ),
                external: wan.to_string(),
                remote: format!("{} spi-out {}", addr(k.rem_addr), hex(k.spi)),
                expires_in: left(o.last_seen_ns, ESP_TIMEOUT_SECS, now),
                forwarded: false,
            });
        }
    }
    Ok(out)
}

pub fn sessions(instance: &Instance, args: &SessionsArgs) -> Result<()> {
    let maps = NatMaps::open_pinned(instance)?;
    let mut rows = rows(&maps, args.proto.map(ProtoFilter::number))?;
    // Addresses lead each endpoint string ("192.168.1.2:40000", "192.168.1.2 call 7").
    let host = |endpoint: &str| endpoint.split([':', ' ']).next().unwrap_or("").to_string();
    rows.retain(|r| {
        args.src.is_none_or(|a| host(&r.internal) == a.to_string())
            && args.dst.is_none_or(|a| host(&r.remote) == a.to_string())
    });
    let json_out = args.json;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for r in &rows {
        println!(
            "{:<5} {:<12} src={} dst={} ext={} expires={}s{}",
            r.proto,
            if r.state.is_empty() { "-" } else { r.state },
            r.internal,
            r.remote,
            r.external,
            r.expires_in,
            if r.passthrough.is_empty() {
                String::new()
            } else {
                format!(" [{}]", r.passthrough)
            }
        );
    }
    eprintln!(
        "{} entr{}",
        rows.len(),
        if rows.len() == 1 { "y" } else { "ies" }
    );
    Ok(())
}
