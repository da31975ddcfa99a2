//! UPnP IGD for LAN hosts (`[port_mapping] upnp = true`): SSDP discovery (M-SEARCH answers
//! on 239.255.255.250:1900), the device description, and the WANIPConnection:1 service
//! (AddPortMapping, DeletePortMapping, GetExternalIPAddress, GetGenericPortMappingEntry,
//! GetSpecificPortMappingEntry, GetStatusInfo, GetConnectionTypeInfo) with
//! WANCommonInterfaceConfig:1's GetCommonLinkProperties, over HTTP on the LAN address.
//!
//! It runs in two threads of its own (SSDP; HTTP with hyper on a runtime of its own), with
//! their own handles on the pinned maps: a mapping is a lease (forwards::lease), as for
//! NAT-PMP and PCP, and the same rules hold (a host maps only to itself, its share, the
//! router's ports). Every HTTP connection is bounded: few at once (per host and in all), small
//! headers and bodies, a deadline, and a request rate per host; a request whose Host is not
//! the router's LAN address (DNS rebinding) is refused.

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
const L3_FORWARDING: &str = "urn:schemas-upnp-org:service:Layer3Forwarding:1";

/// The running service; dropping it stops both threads (promptly: nothing in them waits
/// without a deadline).
pub struct UpnpService {
    stop: Arc<AtomicBool>,
    http_stop: Option<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Where it listens: a new LAN address means a new service.
    pub lan: (String, Ipv4Addr),
}

impl Drop for UpnpService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(tx) = self.http_stop.take() {
            let _ = tx.send(());
        }
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

/// HTTP connections at once, in all and from one host.
const MAX_CONNECTIONS: usize = 32;
const MAX_CONNECTIONS_PER_HOST: usize = 4;
/// A connection's whole life: a client that is slower is cut off.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);
/// The largest request body (a SOAP action is a few hundred bytes) and header block.
const MAX_BODY: usize = 16 * 1024;
const MAX_HEADERS: usize = 8 * 1024;
/// SOAP requests one host may make per second on average, and at once.
const ACTIONS_PER_SECOND: f64 = 20.0;
const ACTION_BURST: f64 = 40.0;
/// M-SEARCH answers per second to one source, at most.
const SEARCHES_PER_SECOND: u32 = 10;

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
        tcp.listen(64)?;
        tcp.set_nonblocking(true)?;
        let listener = std::net::TcpListener::from(tcp);

        let device = Device {
            uuid: uuid(),
            lan_addr,
            started: Instant::now(),
            instance: instance.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (http_stop, stopped) = tokio::sync::oneshot::channel();
        let threads = vec![
            {
                let (stop, device) = (stop.clone(), device.clone());
                std::thread::spawn(move || ssdp_loop(&ssdp, &device, &stop))
            },
            std::thread::spawn(move || http_thread(listener, device, stopped)),
        ];
        Ok(UpnpService {
            stop,
            http_stop: Some(http_stop),
            threads,
            lan: (lan_if.to_string(), lan_addr),
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

/// Answers M-SEARCH requests for our types (or ssdp:all) from the LAN, a few a second per
/// source at most (an answer is bigger than the question).
fn ssdp_loop(socket: &UdpSocket, d: &Device, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    let mut second = Instant::now();
    let mut answered: std::collections::HashMap<Ipv4Addr, u32> = Default::default();
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => {
                log::warn!("ssdp: {e}");
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        let SocketAddr::V4(from_v4) = from else {
            continue;
        };
        if second.elapsed() >= Duration::from_secs(1) {
            answered.clear();
            second = Instant::now();
        }
        if answered.len() > 4096 {
            continue;
        }
        let count = answered.entry(*from_v4.ip()).or_insert(0);
        if *count >= SEARCHES_PER_SECOND {
            continue;
        }
        let text = String::from_utf8_lossy(&buf[..n]);
        let Some(st) = m_search_target(&text) else {
            continue;
        };
        *count += 1;
        for (target, usn) in targets(d) {
            if st != "ssdp:all" && st != target {
                continue;
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nST: {target}\r\nUSN: {usn}\r\nEXT:\r\nSERVER: Linux UPnP/1.1 xdp-nat/{}\r\nLOCATION: http://{}:{HTTP_PORT}/rootDesc.xml\r\nContent-Length: 0\r\n\r\n",
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

/// The HTTP side, on a runtime of its own in this thread, until `stopped`.
fn http_thread(
    listener: std::net::TcpListener,
    d: Device,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("upnp: {e}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        let state = std::rc::Rc::new(Http {
            device: d,
            maps: std::cell::RefCell::new(None),
            connections: std::cell::RefCell::new(std::collections::HashMap::new()),
            rates: std::cell::RefCell::new(super::Rates::new(ACTIONS_PER_SECOND, ACTION_BURST)),
        });
        tokio::pin!(stopped);
        loop {
            let (conn, from) = tokio::select! {
                _ = &mut stopped => return,
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors, say: wait, do not spin.
                        log::warn!("upnp: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                },
            };
            let SocketAddr::V4(from) = from else { continue };
            let host = *from.ip();
            if !state.open_connection(host) {
                continue;
            }
            let state = state.clone();
            tokio::task::spawn_local(async move {
                let service = hyper::service::service_fn({
                    let state = state.clone();
                    move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.handle(host, req).await) }
                    }
                });
                let serve = hyper::server::conn::http1::Builder::new()
                    .max_buf_size(MAX_HEADERS)
                    .serve_connection(hyper_util::rt::TokioIo::new(conn), service);
                let _ = tokio::time::timeout(CONNECTION_DEADLINE, serve).await;
                state.close_connection(host);
            });
        }
    });
}

/// What the HTTP connections share (in one thread).
struct Http {
    device: Device,
    /// The pinned maps, opened at the first action.
    maps: std::cell::RefCell<Option<NatMaps>>,
    /// Open connections per host.
    connections: std::cell::RefCell<std::collections::HashMap<Ipv4Addr, usize>>,
    /// Actions per host.
    rates: std::cell::RefCell<super::Rates>,
}

type Body = http_body_util::Full<hyper::body::Bytes>;

impl Http {
    fn open_connection(&self, host: Ipv4Addr) -> bool {
        let mut c = self.connections.borrow_mut();
        let total: usize = c.values().sum();
        let mine = c.entry(host).or_insert(0);
        if total >= MAX_CONNECTIONS || *mine >= MAX_CONNECTIONS_PER_HOST {
            return false;
        }
        *mine += 1;
        true
    }

    fn close_connection(&self, host: Ipv4Addr) {
        let mut c = self.connections.borrow_mut();
        if let Some(n) = c.get_mut(&host) {
            *n -= 1;
            if *n == 0 {
                c.remove(&host);
            }
        }
    }

    async fn handle(
        &self,
        client: Ipv4Addr,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Body> {
        use http_body_util::BodyExt as _;
        let d = &self.device;
        // DNS rebinding: a page of another site, rebound to this address, names its own host.
        let host_ok = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| {
                let h = h.trim();
                h == d.lan_addr.to_string() || h == format!("{}:{HTTP_PORT}", d.lan_addr)
            });
        if !host_ok {
            return response(403, String::new());
        }
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let (code, body) = match (method, path.as_str()) {
            (hyper::Method::GET, "/rootDesc.xml") => xml(200, root_description(d)),
            (hyper::Method::GET, "/WANIPCn.xml") => xml(200, scpd_wan_ip_connection()),
            (hyper::Method::GET, "/WANCfg.xml") => xml(200, scpd_wan_common()),
            (hyper::Method::GET, "/L3F.xml") => xml(200, scpd(&[], "")),
            (hyper::Method::POST, "/ctl/IPConn" | "/ctl/CmnIfCfg" | "/ctl/L3F") => {
                let action = req
                    .headers()
                    .get("soapaction")
                    .and_then(|h| h.to_str().ok())
                    .map(|h| h.trim().trim_matches('"').to_string())
                    .unwrap_or_default();
                let body = http_body_util::Limited::new(req.into_body(), MAX_BODY);
                let Ok(body) = body.collect().await else {
                    return response(413, String::new());
                };
                let body = String::from_utf8_lossy(&body.to_bytes()).into_owned();
                if !self.rates.borrow_mut().admit(client) {
                    fault(501, "ActionFailed")
                } else {
                    let mut maps = self.maps.borrow_mut();
                    if maps.is_none() {
                        *maps = NatMaps::open_pinned(&d.instance).ok();
                    }
                    match maps.as_mut() {
                        Some(m) => control(m, d, client, &action, &body),
                        None => fault(501, "ActionFailed"),
                    }
                }
            }
            _ => (404, String::new()),
        };
        response(code, body)
    }
}

fn response(code: u16, body: String) -> hyper::Response<Body> {
    let mut r = hyper::Response::new(http_body_util::Full::new(hyper::body::Bytes::from(body)));
    *r.status_mut() =
        hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/xml; charset=\"utf-8\""),
    );
    r
}

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
<root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>0</minor></specVersion><URLBase>http://{lan}:{HTTP_PORT}</URLBase><device><deviceType>{IGD}</deviceType><friendlyName>xdp-nat</friendlyName><manufacturer>xdp-nat</manufacturer><modelName>xdp-nat</modelName><modelNumber>{ver}</modelNumber><UDN>uuid:{u}</UDN><serviceList>{l3f}</serviceList><deviceList><device><deviceType>{WAN_DEVICE}</deviceType><friendlyName>WAN device</friendlyName><manufacturer>xdp-nat</manufacturer><modelName>xdp-nat</modelName><UDN>uuid:{u}-1</UDN><serviceList>{common}</serviceList><deviceList><device><deviceType>{WAN_CONNECTION_DEVICE}</deviceType><friendlyName>WAN connection</friendlyName><manufacturer>xdp-nat</manufacturer><modelName>xdp-nat</modelName><UDN>uuid:{u}-2</UDN><serviceList>{ip}</serviceList></device></deviceList></device></deviceList><presentationURL>http://{lan}/</presentationURL></device></root>"#,
        lan = d.lan_addr,
        ver = env!("CARGO_PKG_VERSION"),
        common = service(WAN_COMMON, "WANCommonIFC1", "/WANCfg.xml", "/ctl/CmnIfCfg"),
        ip = service(
            WAN_IP_CONNECTION,
            "WANIPConn1",
            "/WANIPCn.xml",
            "/ctl/IPConn"
        ),
        l3f = service(L3_FORWARDING, "L3Forwarding1", "/L3F.xml", "/ctl/L3F"),
    )
}

/// An action of a service description: its name and arguments (name, "in" or "out", the
/// state variable it relates to).
type Action = (
    &'static str,
    &'static [(&'static str, &'static str, &'static str)],
);

const MAPPING_ARGS: &[(&str, &str, &str)] = &[
    ("NewInternalPort", "out", "InternalPort"),
    ("NewInternalClient", "out", "InternalClient"),
    ("NewEnabled", "out", "PortMappingEnabled"),
    ("NewPortMappingDescription", "out", "PortMappingDescription"),
    ("NewLeaseDuration", "out", "PortMappingLeaseDuration"),
];

/// WANIPConnection:1's actions (every one the standard requires).
const WAN_IP_CONNECTION_ACTIONS: &[Action] = &[
    (
        "SetConnectionType",
        &[("NewConnectionType", "in", "ConnectionType")],
    ),
    (
        "GetConnectionTypeInfo",
        &[
            ("NewConnectionType", "out", "ConnectionType"),
            (
                "NewPossibleConnectionTypes",
                "out",
                "PossibleConnectionTypes",
            ),
        ],
    ),
    ("RequestConnection", &[]),
    ("ForceTermination", &[]),
    (
        "GetStatusInfo",
        &[
            ("NewConnectionStatus", "out", "ConnectionStatus"),
            ("NewLastConnectionError", "out", "LastConnectionError"),
            ("NewUptime", "out", "Uptime"),
        ],
    ),
    (
        "GetNATRSIPStatus",
        &[
            ("NewRSIPAvailable", "out", "RSIPAvailable"),
            ("NewNATEnabled", "out", "NATEnabled"),
        ],
    ),
    (
        "GetGenericPortMappingEntry",
        &[
            ("NewPortMappingIndex", "in", "PortMappingNumberOfEntries"),
            ("NewRemoteHost", "out", "RemoteHost"),
            ("NewExternalPort", "out", "ExternalPort"),
            ("NewProtocol", "out", "PortMappingProtocol"),
            ("NewInternalPort", "out", "InternalPort"),
            ("NewInternalClient", "out", "InternalClient"),
            ("NewEnabled", "out", "PortMappingEnabled"),
            ("NewPortMappingDescription", "out", "PortMappingDescription"),
            ("NewLeaseDuration", "out", "PortMappingLeaseDuration"),
        ],
    ),
    ("GetSpecificPortMappingEntry", SPECIFIC_ARGS),
    (
        "AddPortMapping",
        &[
            ("NewRemoteHost", "in", "RemoteHost"),
            ("NewExternalPort", "in", "ExternalPort"),
            ("NewProtocol", "in", "PortMappingProtocol"),
            ("NewInternalPort", "in", "InternalPort"),
            ("NewInternalClient", "in", "InternalClient"),
            ("NewEnabled", "in", "PortMappingEnabled"),
            ("NewPortMappingDescription", "in", "PortMappingDescription"),
            ("NewLeaseDuration", "in", "PortMappingLeaseDuration"),
        ],
    ),
    (
        "DeletePortMapping",
        &[
            ("NewRemoteHost", "in", "RemoteHost"),
            ("NewExternalPort", "in", "ExternalPort"),
            ("NewProtocol", "in", "PortMappingProtocol"),
        ],
    ),
    (
        "GetExternalIPAddress",
        &[("NewExternalIPAddress", "out", "ExternalIPAddress")],
    ),
];

const SPECIFIC_ARGS: &[(&str, &str, &str)] = &[
    ("NewRemoteHost", "in", "RemoteHost"),
    ("NewExternalPort", "in", "ExternalPort"),
    ("NewProtocol", "in", "PortMappingProtocol"),
    MAPPING_ARGS[0],
    MAPPING_ARGS[1],
    MAPPING_ARGS[2],
    MAPPING_ARGS[3],
    MAPPING_ARGS[4],
];

const WAN_IP_CONNECTION_VARS: &str = concat!(
    r#"<stateVariable sendEvents="no"><name>ConnectionType</name><dataType>string</dataType></stateVariable>"#,
    r#"<stateVariable sendEvents="yes"><name>PossibleConnectionTypes</name><dataType>string</dataType></stateVariable>"#,
    r#"<stateVariable sendEvents="yes"><name>ConnectionStatus</name><dataType>string</dataType></stateVariable>"#,
    r#"<stateVariable sendEvents="no"><name>Uptime</name><dataType>ui4</dataType></stateVariable>"#,
    r#"<stateVariable sendEvents="no"><name>LastConnectionError</name><dataType>string</dataType></stateVariable>"#,
    r#"<stateVariable sendEvents="no"><name>RSIPAvailable</name><dataType>boolean</dataType></stateVariable>"#,
    r#"<stateVariable sendEvents="no"><name>NATEnabled</name><dataType>boolean</dataType></stateVariable>"#,
    r#"<stateVariable sendEvents="yes"><name>ExternalIPAddress</name><dataType>string</dataType></stateVariable>"#,
    r#"<stateVariable sendEvents="yes"><name>PortMappingNumberOfEntries</name><dataType>ui2</dataType></stateVariable>"#,
    r#"<stateVariable sendEvents="no"><name>PortMappingEnabled</name><dataType>boolean</dataType></stateVariable>"#,
    r#"<stateVariable sendEvents="no"><name>PortMappingLeaseDuration</name><dataType>ui4</dataType></stateVariable>"#,
    r#"<stateVariable sendEvents="no"><name>RemoteHost</name><dataType>string</dataType></stateVariable>"#,
    r#"<stateVariable sendEvents="no"><name>ExternalPort</name><dataType>ui2</dataType></stateVariable>"#,
    r#"<stateVariable sendEvents="no"><name>InternalPort</name><dataType>ui2</dataType></stateVariable>"#,
    r#"<stateVariable sendEvents="no"><name>PortMappingProtocol</name><dataType>string</dataType><allowedValueList><allowedValue>TCP</allowedValue><allowedValue>UDP</allowedValue></allowedValueList></stateVariable>"#,
    r#"<stateVariable sendEvents="no"><name>InternalClient</name><dataType>string</dataType></stateVariable>"#,
    r#"<stateVariable sendEvents="no"><name>PortMappingDescription</name><dataType>string</dataType></stateVariable>"#,
);

fn scpd_wan_ip_connection() -> String {
    scpd(WAN_IP_CONNECTION_ACTIONS, WAN_IP_CONNECTION_VARS)
}

fn scpd_wan_common() -> String {
    scpd(
        &[(
            "GetCommonLinkProperties",
            &[
                ("NewWANAccessType", "out", "WANAccessType"),
                (
                    "NewLayer1UpstreamMaxBitRate",
                    "out",
                    "Layer1UpstreamMaxBitRate",
                ),
                (
                    "NewLayer1DownstreamMaxBitRate",
                    "out",
                    "Layer1DownstreamMaxBitRate",
                ),
                ("NewPhysicalLinkStatus", "out", "PhysicalLinkStatus"),
            ],
        )],
        concat!(
            r#"<stateVariable sendEvents="no"><name>WANAccessType</name><dataType>string</dataType></stateVariable>"#,
            r#"<stateVariable sendEvents="no"><name>Layer1UpstreamMaxBitRate</name><dataType>ui4</dataType></stateVariable>"#,
            r#"<stateVariable sendEvents="no"><name>Layer1DownstreamMaxBitRate</name><dataType>ui4</dataType></stateVariable>"#,
            r#"<stateVariable sendEvents="yes"><name>PhysicalLinkStatus</name><dataType>string</dataType></stateVariable>"#,
        ),
    )
}

/// A service description: its actions with their arguments, and its state variables.
fn scpd(actions: &[Action], vars: &str) -> String {
    let list: String = actions
        .iter()
        .map(|(name, args)| {
            let args: String = args
                .iter()
                .map(|(a, dir, var)| {
                    format!(
                        "<argument><name>{a}</name><direction>{dir}</direction><relatedStateVariable>{var}</relatedStateVariable></argument>"
                    )
                })
                .collect();
            let args = if args.is_empty() {
                String::new()
            } else {
                format!("<argumentList>{args}</argumentList>")
            };
            format!("<action><name>{name}</name>{args}</action>")
        })
        .collect();
    format!(
        r#"<?xml version="1.0"?>
<scpd xmlns="urn:schemas-upnp-org:service-1-0"><specVersion><major>1</major><minor>0</minor></specVersion><actionList>{list}</actionList><serviceStateTable>{vars}</serviceStateTable></scpd>"#
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
    let Some((service, name)) = action.rsplit_once('#') else {
        return fault(401, "Invalid Action");
    };
    // Answers name the caller's service: one of ours only, never text it made up.
    if ![WAN_IP_CONNECTION, WAN_COMMON, L3_FORWARDING].contains(&service) {
        return fault(401, "Invalid Action");
    }
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
        "GetNATRSIPStatus" => ok(vec![
            ("NewRSIPAvailable", "0".into()),
            ("NewNATEnabled", "1".into()),
        ]),
        // Always connected while the NAT runs: nothing to set or bring up.
        "SetConnectionType" | "RequestConnection" => ok(vec![]),
        "ForceTermination" => fault(606, "Action not authorized"),
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
    // A disabled mapping is not kept (nothing would let it in).
    if arg("NewEnabled").is_some_and(|e| e.trim() == "0") {
        return fault(402, "Invalid Args");
    }
    let lifetime = match arg("NewLeaseDuration").map(|v| v.trim().parse::<u32>()) {
        Some(Ok(0)) => PERMANENT_LEASE,
        Some(Ok(s)) => s.min(PERMANENT_LEASE),
        _ => return fault(402, "Invalid Args"),
    };
    // The same external port of the same host again, to another internal port: an update
    // (IGD:1). Another host's: a conflict.
    if let Some(e) = leases(maps)
        .into_iter()
        .find(|e| e.proto == proto && e.external == external)
    {
        if e.client != client {
            return fault(718, "ConflictInMappingEntry");
        }
        if e.internal != internal {
            if let Err(err) = forwards::end_lease(maps, client, proto, e.internal, None) {
                log::warn!("upnp: AddPortMapping from {client}: {err:#}");
                return fault(501, "ActionFailed");
            }
        }
    }
    let req = LeaseRequest {
        client,
        proto,
        internal_port: internal,
        suggested_port: external,
        lifetime,
        now_s: crate::monotonic_secs(),
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
        // IGD:1 has no code for it (IGD:2's 728 NoPortMapsAvailable).
        Ok(Err(LeaseRefused::Quota(_))) => fault(501, "ActionFailed"),
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
    let now = crate::monotonic_secs();
    forwards::list(maps)
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l.origin == FORWARD_FROM_UPNP && !l.retired)
        .map(|l| Entry {
            proto: l.rule.proto,
            external: *l.rule.ports.start(),
            internal: l.rule.to_port,
            client: l.rule.to,
            // Never 0, which would say "permanent": one that ended is gone at the next sweep.
            left: l.expires_s.saturating_sub(now).max(1),
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
