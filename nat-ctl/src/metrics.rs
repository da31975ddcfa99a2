//! `nat-ctl run --metrics ADDR`: the pinned state in the Prometheus/OpenMetrics text format
//! (prometheus-client), read anew for every scrape so that it always agrees with
//! `nat-ctl stats`, served over HTTP (hyper) at /metrics; any other path is 404.

use anyhow::Result;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use nat_common::{counters::CounterKind, maps::names, passthrough::Switch};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use std::collections::BTreeMap;
use tokio::net::TcpListener;

use crate::{cli::proto_name, pins::Instance, state::NatMaps};

fn kind_name(k: CounterKind) -> &'static str {
    match k {
        CounterKind::Forwarded => "forwarded",
        CounterKind::State => "state",
        CounterKind::Pass => "pass",
        CounterKind::Drop => "drop",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Verdict {
    reason: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Proto {
    proto: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Protocol {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Table {
    table: &'static str,
}

/// A gauge family of `registry` named `name`, with `help`.
fn gauges<L>(registry: &mut Registry, name: &str, help: &str) -> Family<L, Gauge>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Gauge>::default();
    registry.register(name, help, family.clone());
    family
}

/// The exposition text for `instance`.
pub fn render(instance: &Instance) -> Result<String> {
    let maps = NatMaps::open_pinned(instance)?;
    let mut registry = Registry::default();

    let packets = Family::<Verdict, Counter>::default();
    registry.register(
        "xdp_nat_packets",
        "Packets by verdict; `reason` is the counter nat-ctl stats names",
        packets.clone(),
    );
    for (c, v) in maps.counters()? {
        packets
            .get_or_create(&Verdict {
                reason: c.name(),
                kind: kind_name(c.kind()),
            })
            .inc_by(v);
    }

    let mut by_proto: BTreeMap<&'static str, u64> =
        ["tcp", "udp", "icmp"].iter().map(|p| (*p, 0)).collect();
    let sessions = maps.sessions()?;
    for (k, _) in &sessions {
        *by_proto.entry(proto_name(k.proto)).or_default() += 1;
    }
    *by_proto.entry("gre").or_default() += maps.pptp_calls()?.len() as u64;
    *by_proto.entry("esp").or_default() += crate::state::entries(&maps.esp_out)?.len() as u64;
    let family = gauges::<Proto>(
        &mut registry,
        "xdp_nat_sessions",
        "Sessions by protocol (gre: PPTP calls, esp: ESP security associations)",
    );
    for (proto, n) in by_proto {
        family.get_or_create(&Proto { proto }).set(n as i64);
    }

    let family = gauges::<Protocol>(
        &mut registry,
        "xdp_nat_passthrough_enabled",
        "VPN passthrough switches (1 on, 0 off)",
    );
    for switch in Switch::ALL {
        family
            .get_or_create(&Protocol {
                protocol: switch.name(),
            })
            .set(i64::from(maps.switch(switch)?));
    }

    let mappings = maps.mappings()?;
    let fill = [
        (names::SESSIONS, sessions.len()),
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
    let entries = gauges::<Table>(
        &mut registry,
        "xdp_nat_table_entries",
        "Entries in each table",
    );
    let capacity = gauges::<Table>(
        &mut registry,
        "xdp_nat_table_capacity",
        "Capacity of each table",
    );
    for (table, n) in fill {
        entries.get_or_create(&Table { table }).set(n as i64);
        let cap = aya::maps::MapInfo::from_pin(instance.map_path(table))
            .map(|i| i.max_entries())
            .unwrap_or(0);
        capacity.get_or_create(&Table { table }).set(i64::from(cap));
    }

    let cfg = maps.read_config()?;
    let pool_size = Gauge::<i64>::default();
    registry.register(
        "xdp_nat_port_pool_size",
        "External ports (and ICMP ids) the NAT may hand out",
        pool_size.clone(),
    );
    pool_size.set(i64::from(cfg.pool_len + cfg.priv_pool_len));
    let mut used: BTreeMap<&'static str, u64> =
        ["tcp", "udp", "icmp"].iter().map(|p| (*p, 0)).collect();
    for (k, _) in &mappings {
        *used.entry(proto_name(k.proto)).or_default() += 1;
    }
    let family = gauges::<Proto>(
        &mut registry,
        "xdp_nat_port_pool_used",
        "External ports in use or cooling, by protocol",
    );
    for (proto, n) in used {
        family.get_or_create(&Proto { proto }).set(n as i64);
    }

    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// The reply to one request: the metrics at /metrics, 404 anywhere else.
fn reply(instance: &Instance, path: &str) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if path != "/metrics" {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: the metrics are at /metrics\n".to_string(),
        )
    } else {
        match render(instance) {
            Ok(text) => (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            ),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("error: {e:#}\n"),
            ),
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// Serves the metrics on `listener`, one task per connection.
pub async fn serve(listener: TcpListener, instance: Instance) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let instance = instance.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let response = reply(&instance, req.uri().path());
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(conn), service)
                .await;
        });
    }
}
