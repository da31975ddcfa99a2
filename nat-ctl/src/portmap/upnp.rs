//! UPnP IGD for LAN hosts (`[port_mapping] upnp = true`): SSDP discovery (M-SEARCH answers
//! on 239.255.255.250:1900), the device description, and the WANIPConnection:1 service
//! (AddPortMapping, DeletePortMapping, GetExternalIPAddress, GetGenericPortMappingEntry,
//! GetSpecificPortMappingEntry, GetStatusInfo, GetConnectionTypeInfo) with
//! WANCommonInterfaceConfig:1's GetCommonLinkProperties, over HTTP on the LAN address.
//!
//! It runs in two threads of its own (SSDP, HTTP with tiny_http), each with its own handles
//! on the pinned maps: a mapping is a lease (forwards::lease), as for NAT-PMP and PCP, and
//! the same rules hold (a host maps only to itself, its share, the router's ports).

use anyhow::{Context as _, Result};
use nat_common::{
    maps::FORWARD_FROM_UPNP,
    proto::{IPPROTO_TCP, IPPROTO_UDP},
};
use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    forwards::{self, LeaseRefused, LeaseRequest},
    pins::Instance,
    state::NatMaps,
};

/// The HTTP port of the description and control URLs, on the LAN address.
pub const HTTP_PORT: u16 = 49_000;
const SSDP_ADDR: Ipv4Addr = Ipv4Addr::new(239, 255, 255, 250);
const SSDP_PORT: u16 = 1900;
/// What a lease of "0" (IGD v1: permanent) gets: IGD v2's longest lease, a week.
pub const PERMANENT_LEASE: u32 = 604_800;

const IGD: &str = "urn:schemas-upnp-org:device:InternetGatewayDevice:1";
const WAN_DEVICE: &str = "urn:schemas-upnp-org:device:WANDevice:1";
const WAN_CONNECTION_DEVICE: &str = "urn:schemas-upnp-org:device:WANConnectionDevice:1";
const WAN_IP_CONNECTION: &str = "urn:schemas-upnp-org:service:WANIPConnection:1";
const WAN_COMMON: &str = "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1";

/// The running service; dropping it stops both threads.
pub struct UpnpService {
    stop: Arc<AtomicBool>,
    http: Arc<tiny_http::Server>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for UpnpService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.http.unblock();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What the description and the answers say about the router.
#[derive(Clone)]
struct Device {
    uuid: String,
    lan_addr: Ipv4Addr,
    started: Instant,
    instance: Instance,
}

impl UpnpService {
    /// Listens on `lan_addr` of interface `lan_if` (SSDP on 1900, HTTP on HTTP_PORT), with the
    /// instance's pinned maps.
    pub fn open(instance: &Instance, lan_if: &str, lan_addr: Ipv4Addr) -> Result<UpnpService> {
        use socket2::{Domain, Protocol, Socket, Type};
        let ssdp = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        ssdp.set_reuse_address(true)?;
        ssdp.bind_device(Some(lan_if.as_bytes()))
            .with_context(|| format!("binding the SSDP socket to {lan_if}"))?;
        ssdp.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, SSDP_PORT)).into())
            .context("listening on UDP 1900 (SSDP)")?;
        ssdp.join_multicast_v4(&SSDP_ADDR, &lan_addr)
            .context("joining 239.255.255.250 (SSDP)")?;
        ssdp.set_read_timeout(Some(Duration::from_millis(500)))?;
        let ssdp: UdpSocket = ssdp.into();

        let tcp = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        tcp.set_reuse_address(true)?;
        tcp.bind_device(Some(lan_if.as_bytes()))
            .with_context(|| format!("binding the UPnP HTTP socket to {lan_if}"))?;
        tcp.bind(&SocketAddr::from((lan_addr, HTTP_PORT)).into())
            .with_context(|| format!("listening on {lan_addr}:{HTTP_PORT} (UPnP)"))?;
        tcp.listen(16)?;
        let http = tiny_http::Server::from_listener(std::net::TcpListener::from(tcp), None)
            .map_err(|e| anyhow::anyhow!("UPnP HTTP server: {e}"))?;
        let http = Arc::new(http);

        let device = Device {
            uuid: uuid(),
            lan_addr,
            started: Instant::now(),
            instance: instance.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let threads = vec![
            {
                let (stop, device) = (stop.clone(), device.clone());
                std::thread::spawn(move || ssdp_loop(&ssdp, &device, &stop))
            },
            {
                let (stop, http) = (stop.clone(), http.clone());
                std::thread::spawn(move || http_loop(&http, &device, &stop))
            },
        ];
        Ok(UpnpService {
            stop,
            http,
            threads,
        })
    }
}

/// A UUID of this run (random, version 4 form).
fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0xfff,
        u16::from_be_bytes([b[8], b[9]]) & 0xfff,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

/// The search targets this device answers, with their USN.
fn targets(d: &Device) -> Vec<(&'static str, String)> {
    let u = &d.uuid;
    vec![
        ("upnp:rootdevice", format!("uuid:{u}::upnp:rootdevice")),
        (IGD, format!("uuid:{u}::{IGD}")),
        (WAN_DEVICE, format!("uuid:{u}::{WAN_DEVICE}")),
        (
            WAN_CONNECTION_DEVICE,
            format!("uuid:{u}::{WAN_CONNECTION_DEVICE}"),
        ),
        (WAN_IP_CONNECTION, format!("uuid:{u}::{WAN_IP_CONNECTION}")),
        (WAN_COMMON, format!("uuid:{u}::{WAN_COMMON}")),
    ]
}

/// Answers M-SEARCH requests for our types (or ssdp:all) from the LAN.
fn ssdp_loop(socket: &UdpSocket, d: &Device, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let Some(st) = m_search_target(&text) else {
            continue;
        };
        for (target, usn) in targets(d) {
            if st != "ssdp:all" && st != target {
                continue;
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: {target}\r\nUSN: {usn}\r\nEXT:\r\nSERVER: Linux UPnP/1.1 xdp-nat/{}\r\nLOCATION: http://{}:{HTTP_PORT}/rootDesc.xml\r\nContent-Length: 0\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                d.lan_addr
            );
            let _ = socket.send_to(answer.as_bytes(), from);
        }
    }
}

/// The search target of an SSDP M-SEARCH, if `text` is one.
fn m_search_target(text: &str) -> Option<String> {
    let mut lines = text.split("\r\n");
    if !lines.next()?.starts_with("M-SEARCH * HTTP/1.1") {
        return None;
    }
    let mut st = None;
    let mut discover = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        match k.trim().to_ascii_uppercase().as_str() {
            "ST" => st = Some(v.trim().to_string()),
            "MAN" => discover = v.trim().trim_matches('"') == "ssdp:discover",
            _ => {}
        }
    }
    st.filter(|_| discover)
}

fn http_loop(server: &tiny_http::Server, d: &Device, stop: &AtomicBool) {
    // The maps are opened here, in this thread, once the daemon pinned them.
    let mut maps = None;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut req) = server.recv() else {
            return;
        };
        let Some(SocketAddr::V4(from)) = req.remote_addr().copied() else {
            continue;
        };
        let answer = match (req.method(), req.url()) {
            (tiny_http::Method::Get, "/rootDesc.xml") => xml(200, root_description(d)),
            (tiny_http::Method::Get, "/WANIPCn.xml") => xml(200, scpd(WAN_IP_CONNECTION_ACTIONS)),
            (tiny_http::Method::Get, "/WANCfg.xml") => xml(200, scpd(WAN_COMMON_ACTIONS)),
            (tiny_http::Method::Post, "/ctl/IPConn" | "/ctl/CmnIfCfg") => {
                let action = req
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("SOAPAction"))
                    .map(|h| h.value.as_str().trim_matches('"').to_string())
                    .unwrap_or_default();
                let mut body = String::new();
                let read =
                    std::io::Read::take(req.as_reader(), 16 * 1024).read_to_string(&mut body);
                if read.is_err() {
                    continue;
                }
                if maps.is_none() {
                    maps = NatMaps::open_pinned(&d.instance).ok();
                }
                match maps.as_mut() {
                    Some(m) => control(m, d, *from.ip(), &action, &body),
                    None => fault(501, "ActionFailed"),
                }
            }
            _ => (404, String::new()),
        };
        let (code, text) = answer;
        let response = tiny_http::Response::from_string(text)
            .with_status_code(code)
            .with_header(
                "Content-Type: text/xml; charset=\"utf-8\""
                    .parse::<tiny_http::Header>()
                    .expect("a header"),
            );
        let _ = req.respond(response);
    }
}

use std::io::Read as _;

fn xml(code: u16, body: String) -> (u16, String) {
    (code, body)
}

fn root_description(d: &Device) -> String {
    let u = &d.uuid;
    let service = |ty: &str, id: &str, scpd: &str, ctl: &str| {
        format!(
            "<service><serviceType>{ty}</serviceType><serviceId>urn:upnp-org:serviceId:{id}</serviceId><SCPDURL>{scpd}</SCPDURL><controlURL>{ctl}</controlURL><eventSubURL>{ctl}/evt</eventSubURL></service>"
        )
    };
    format!(
        r#"<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>0</minor></specVersion><URLBase>http://{lan}:{HTTP_PORT}</URLBase><device><deviceType>{IGD}</deviceType><friendlyName>xdp-nat</friendlyName><manufacturer>xdp-nat</manufacturer><modelName>xdp-nat</modelName><modelNumber>{ver}</modelNumber><UDN>uuid:{u}</UDN><deviceList><device><deviceType>{WAN_DEVICE}</deviceType><friendlyName>WAN device</friendlyName><manufacturer>xdp-nat</manufacturer><modelName>xdp-nat</modelName><UDN>uuid:{u}-1</UDN><serviceList>{common}</serviceList><deviceList><device><deviceType>{WAN_CONNECTION_DEVICE}</deviceType><friendlyName>WAN connection</friendlyName><manufacturer>xdp-nat</manufacturer><modelName>xdp-nat</modelName><UDN>uuid:{u}-2</UDN><serviceList>{ip}</serviceList></device></deviceList></device></deviceList><presentationURL>http://{lan}/</presentationURL></device></root>"#,
        lan = d.lan_addr,
        ver = env!("CARGO_PKG_VERSION"),
        common = service(WAN_COMMON, "WANCommonIFC1", "/WANCfg.xml", "/ctl/CmnIfCfg"),
        ip = service(
            WAN_IP_CONNECTION,
            "WANIPConn1",
            "/WANIPCn.xml",
            "/ctl/IPConn"
        ),
    )
}

const WAN_IP_CONNECTION_ACTIONS: &[&str] = &[
    "AddPortMapping",
    "DeletePortMapping",
    "GetExternalIPAddress",
    "GetGenericPortMappingEntry",
    "GetSpecificPortMappingEntry",
    "GetStatusInfo",
    "GetConnectionTypeInfo",
];
const WAN_COMMON_ACTIONS: &[&str] = &["GetCommonLinkProperties"];

/// A service description naming its actions (their arguments are as the IGD:1 standard
/// defines them; clients do not read them here).
fn scpd(actions: &[&str]) -> String {
    let list: String = actions
        .iter()
        .map(|a| format!("<action><name>{a}</name></action>"))
        .collect();
    format!(
        r#"<?xml version="1.0"?>
<scpd xmlns="urn:schemas-upnp-org:service-1-0"><specVersion><major>1</major><minor>0</minor></specVersion><actionList>{list}</actionList><serviceStateTable/></scpd>"#
    )
}

/// The SOAP answer to `action` of the client at `client`: (HTTP status, body).
fn control(
    maps: &mut NatMaps,
    d: &Device,
    client: Ipv4Addr,
    action: &str,
    body: &str,
) -> (u16, String) {
    let (service, name) = action.rsplit_once('#').unwrap_or(("", action));
    let args = soap_args(body);
    let arg = |k: &str| args.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let wan = maps
        .read_config()
        .map(|c| crate::wire::addr(c.wan_addr))
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let ok = |out: Vec<(&str, String)>| (200, soap_response(service, name, &out));
    match name {
        "GetExternalIPAddress" => ok(vec![("NewExternalIPAddress", wan.to_string())]),
        "GetStatusInfo" => ok(vec![
            ("NewConnectionStatus", "Connected".into()),
            ("NewLastConnectionError", "ERROR_NONE".into()),
            ("NewUptime", d.started.elapsed().as_secs().to_string()),
        ]),
        "GetConnectionTypeInfo" => ok(vec![
            ("NewConnectionType", "IP_Routed".into()),
            ("NewPossibleConnectionTypes", "IP_Routed".into()),
        ]),
        "GetCommonLinkProperties" => ok(vec![
            ("NewWANAccessType", "Ethernet".into()),
            ("NewLayer1UpstreamMaxBitRate", "1000000000".into()),
            ("NewLayer1DownstreamMaxBitRate", "1000000000".into()),
            ("NewPhysicalLinkStatus", "Up".into()),
        ]),
        "AddPortMapping" => add_port_mapping(maps, client, service, &arg),
        "DeletePortMapping" => delete_port_mapping(maps, client, service, &arg),
        "GetSpecificPortMappingEntry" => {
            let (Some(proto), Some(port)) = (
                proto_arg(arg("NewProtocol")),
                port_arg(arg("NewExternalPort")),
            ) else {
                return fault(402, "Invalid Args");
            };
            match leases(maps)
                .into_iter()
                .find(|e| e.proto == proto && e.external == port)
            {
                Some(e) => ok(vec![
                    ("NewInternalPort", e.internal.to_string()),
                    ("NewInternalClient", e.client.to_string()),
                    ("NewEnabled", "1".into()),
                    ("NewPortMappingDescription", "xdp-nat".into()),
                    ("NewLeaseDuration", e.left.to_string()),
                ]),
                None => fault(714, "NoSuchEntryInArray"),
            }
        }
        "GetGenericPortMappingEntry" => {
            let Some(i) = arg("NewPortMappingIndex").and_then(|v| v.trim().parse::<usize>().ok())
            else {
                return fault(402, "Invalid Args");
            };
            match leases(maps).into_iter().nth(i) {
                Some(e) => ok(vec![
                    ("NewRemoteHost", String::new()),
                    ("NewExternalPort", e.external.to_string()),
                    (
                        "NewProtocol",
                        if e.proto == IPPROTO_TCP { "TCP" } else { "UDP" }.into(),
                    ),
                    ("NewInternalPort", e.internal.to_string()),
                    ("NewInternalClient", e.client.to_string()),
                    ("NewEnabled", "1".into()),
                    ("NewPortMappingDescription", "xdp-nat".into()),
                    ("NewLeaseDuration", e.left.to_string()),
                ]),
                None => fault(713, "SpecifiedArrayIndexInvalid"),
            }
        }
        _ => fault(401, "Invalid Action"),
    }
}

fn proto_arg(v: Option<&str>) -> Option<u8> {
    match v?.trim().to_ascii_uppercase().as_str() {
        "TCP" => Some(IPPROTO_TCP),
        "UDP" => Some(IPPROTO_UDP),
        _ => None,
    }
}

fn port_arg(v: Option<&str>) -> Option<u16> {
    v?.trim().parse().ok()
}

fn add_port_mapping<'a>(
    maps: &mut NatMaps,
    client: Ipv4Addr,
    service: &str,
    arg: &dyn Fn(&str) -> Option<&'a str>,
) -> (u16, String) {
    let (Some(proto), Some(external), Some(internal), Some(to)) = (
        proto_arg(arg("NewProtocol")),
        port_arg(arg("NewExternalPort")),
        port_arg(arg("NewInternalPort")),
        arg("NewInternalClient").and_then(|v| v.trim().parse::<Ipv4Addr>().ok()),
    ) else {
        return fault(402, "Invalid Args");
    };
    if arg("NewRemoteHost").is_some_and(|h| !h.trim().is_empty()) {
        return fault(726, "RemoteHostOnlySupportsWildcard");
    }
    if external == 0 {
        return fault(716, "WildCardNotPermittedInExtPort");
    }
    if internal == 0 {
        return fault(402, "Invalid Args");
    }
    // A host maps only to itself.
    if to != client {
        return fault(606, "Action not authorized");
    }
    let lifetime = match arg("NewLeaseDuration").and_then(|v| v.trim().parse::<u32>().ok()) {
        Some(0) | None => PERMANENT_LEASE,
        Some(s) => s.min(PERMANENT_LEASE),
    };
    let req = LeaseRequest {
        client,
        proto,
        internal_port: internal,
        suggested_port: external,
        lifetime,
        now_s: (crate::monotonic_ns() / 1_000_000_000) as u32,
        nonce: None,
        origin: FORWARD_FROM_UPNP,
        exact: true,
    };
    match forwards::lease(maps, &req) {
        Ok(Ok(port)) if port == external => {
            log::info!(
                "upnp: {client}:{internal} {} leased external port {port} for {lifetime} s",
                forwards::proto_name(proto)
            );
            (200, soap_response(service, "AddPortMapping", &[]))
        }
        // The host has that internal port forwarded on another external port already.
        Ok(Ok(_)) => fault(718, "ConflictInMappingEntry"),
        Ok(Err(LeaseRefused::NotAuthorized(_))) => fault(606, "Action not authorized"),
        Ok(Err(LeaseRefused::Quota(_))) => fault(728, "NoPortMapsAvailable"),
        Ok(Err(LeaseRefused::NoResources(_))) => fault(718, "ConflictInMappingEntry"),
        Err(e) => {
            log::warn!("upnp: AddPortMapping from {client}: {e:#}");
            fault(501, "ActionFailed")
        }
    }
}

fn delete_port_mapping<'a>(
    maps: &mut NatMaps,
    client: Ipv4Addr,
    service: &str,
    arg: &dyn Fn(&str) -> Option<&'a str>,
) -> (u16, String) {
    let (Some(proto), Some(external)) = (
        proto_arg(arg("NewProtocol")),
        port_arg(arg("NewExternalPort")),
    ) else {
        return fault(402, "Invalid Args");
    };
    let Some(lease) = leases(maps)
        .into_iter()
        .find(|e| e.proto == proto && e.external == external)
    else {
        return fault(714, "NoSuchEntryInArray");
    };
    if lease.client != client {
        return fault(606, "Action not authorized");
    }
    match forwards::end_lease(maps, client, proto, lease.internal, None) {
        Ok(Ok(_)) => (200, soap_response(service, "DeletePortMapping", &[])),
        Ok(Err(_)) => fault(606, "Action not authorized"),
        Err(e) => {
            log::warn!("upnp: DeletePortMapping from {client}: {e:#}");
            fault(501, "ActionFailed")
        }
    }
}

/// A lease as UPnP lists it.
struct Entry {
    proto: u8,
    external: u16,
    internal: u16,
    client: Ipv4Addr,
    /// Seconds left.
    left: u32,
}

/// The UPnP leases in force, in a stable order (GetGenericPortMappingEntry's index).
fn leases(maps: &NatMaps) -> Vec<Entry> {
    let now = (crate::monotonic_ns() / 1_000_000_000) as u32;
    forwards::list(maps)
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l.origin == FORWARD_FROM_UPNP && !l.retired)
        .map(|l| Entry {
            proto: l.rule.proto,
            external: *l.rule.ports.start(),
            internal: l.rule.to_port,
            client: l.rule.to,
            left: l.expires_s.saturating_sub(now),
        })
        .collect()
}

/// The arguments of a SOAP action: the child elements of the Body's one element, by local
/// name, with their text.
fn soap_args(body: &str) -> Vec<(String, String)> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(body);
    let mut depth = 0;
    let mut in_body_at = None;
    let mut current: Option<String> = None;
    let mut args = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                depth += 1;
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                match in_body_at {
                    None if name == "Body" => in_body_at = Some(depth),
                    // The action element, then its arguments.
                    Some(b) if depth == b + 2 => {
                        args.push((name.clone(), String::new()));
                        current = Some(name);
                    }
                    _ => {}
                }
            }
            // An empty argument (<NewRemoteHost/>), right inside the action element.
            Ok(Event::Empty(e)) if in_body_at.is_some_and(|b| depth + 1 == b + 2) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                args.push((name, String::new()));
            }
            Ok(Event::Text(t)) => {
                if let (Some(_), Some(last)) = (&current, args.last_mut()) {
                    if let Ok(v) = t.unescape() {
                        last.1.push_str(&v);
                    }
                }
            }
            Ok(Event::End(_)) => {
                current = None;
                depth -= 1;
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    args
}

fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

fn soap_response(service: &str, action: &str, out: &[(&str, String)]) -> String {
    let args: String = out
        .iter()
        .map(|(k, v)| format!("<{k}>{}</{k}>", escape(v)))
        .collect();
    format!(
        r#"<?xml version="1.0"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:{action}Response xmlns:u="{service}">{args}</u:{action}Response></s:Body></s:Envelope>"#
    )
}

/// A UPnP error: HTTP 500 with the SOAP fault the UPnP Device Architecture defines.
fn fault(code: u16, description: &str) -> (u16, String) {
    (
        500,
        format!(
            r#"<?xml version="1.0"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>{code}</errorCode><errorDescription>{description}</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>"#
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soap_arguments_are_read_by_local_name() {
        let body = r#"<?xml version="1.0"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:AddPortMapping xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"><NewRemoteHost></NewRemoteHost><NewExternalPort>8086</NewExternalPort><NewProtocol>TCP</NewProtocol><NewInternalClient>192.168.1.2</NewInternalClient><NewPortMappingDescription>a &amp; b</NewPortMappingDescription><NewEnabled/></u:AddPortMapping></s:Body></s:Envelope>"#;
        let args = soap_args(body);
        let get = |k: &str| args.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("NewExternalPort").as_deref(), Some("8086"));
        assert_eq!(get("NewRemoteHost").as_deref(), Some(""));
        assert_eq!(get("NewPortMappingDescription").as_deref(), Some("a & b"));
        assert_eq!(get("NewEnabled").as_deref(), Some(""));
        assert_eq!(
            get("AddPortMapping"),
            None,
            "the action itself is not an argument"
        );
    }

    #[test]
    fn m_search_targets() {
        let m = "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n";
        assert_eq!(m_search_target(m).as_deref(), Some(IGD));
        assert_eq!(m_search_target("NOTIFY * HTTP/1.1\r\nST: x\r\n\r\n"), None);
        let no_man = "M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\n\r\n";
        assert_eq!(
            m_search_target(no_man),
            None,
            "MAN: ssdp:discover is required"
        );
    }
}
