//! Automatic port mapping for LAN hosts: NAT-PMP (RFC 6886) and PCP (RFC 6887, MAP and
//! ANNOUNCE) on UDP 5351 of the router's LAN address, `[port_mapping] pcp = true`. A mapping
//! is a port forward to the host that asked (forwards::lease), for the lifetime it asked (at
//! most MAX_LIFETIME); the daemon removes it when it ends (forwards::expire_leases).
//!
//! What the RFCs ask for security: requests are served on the LAN interface only, from LAN
//! hosts only, each host maps only to itself (the source address of the request: PCP's
//! client address must match it), a PCP mapping is refreshed or deleted only with the nonce
//! that made it, and a host's leases count in its share of mappings.

pub mod upnp;
pub mod wire;

use anyhow::{Context as _, Result};
use nat_common::maps::{FORWARD_FROM_NATPMP, FORWARD_FROM_PCP};
use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::Instant,
};
use tokio::net::UdpSocket;
use wire::{Request, natpmp_result, pcp_result};

use crate::{
    forwards::{self, LeaseRefused, LeaseRequest},
    state::NatMaps,
};

/// The longest lease granted, whatever is asked (a client renews before it ends).
pub const MAX_LIFETIME: u32 = 86_400;

/// Requests one LAN host may make per second, on average, and at once: more are dropped
/// unanswered (RFC 6887 section 8.3 lets a server do so when it is overloaded), so that no
/// host keeps the daemon, which serves them between its other work, busy.
const REQUESTS_PER_SECOND: f64 = 20.0;
const REQUEST_BURST: f64 = 40.0;
/// Hosts whose request rate is followed; beyond, the least recent is forgotten.
const RATE_HOSTS: usize = 1024;

/// The NAT-PMP and PCP server.
pub struct PortMapService {
    socket: std::sync::Arc<UdpSocket>,
    /// The epoch both protocols report counts from here (a client that sees it go back
    /// knows the server lost its mappings or changed its address, and makes them again).
    started: Instant,
    rates: Rates,
}

/// A request rate per LAN host: a token bucket each, `per_second` on average and `burst` at
/// once. At most RATE_HOSTS hosts are followed; beyond, the least recent is forgotten.
pub(crate) struct Rates {
    per_second: f64,
    burst: f64,
    /// Per host: tokens left and when they were counted.
    hosts: std::collections::HashMap<Ipv4Addr, (f64, Instant)>,
}

impl Rates {
    pub(crate) fn new(per_second: f64, burst: f64) -> Rates {
        Rates {
            per_second,
            burst,
            hosts: std::collections::HashMap::new(),
        }
    }

    /// May `host` make one more request now?
    pub(crate) fn admit(&mut self, host: Ipv4Addr) -> bool {
        let now = Instant::now();
        if self.hosts.len() >= RATE_HOSTS && !self.hosts.contains_key(&host) {
            let oldest = self
                .hosts
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(a, _)| *a);
            if let Some(a) = oldest {
                self.hosts.remove(&a);
            }
        }
        let (tokens, at) = self.hosts.entry(host).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
    }
}

impl PortMapService {
    /// Listens on `lan_addr`:5351, on interface `lan_if` only (SO_BINDTODEVICE: nothing that
    /// arrives on another interface reaches it, whatever its destination address).
    pub fn open(lan_if: &str, lan_addr: Ipv4Addr) -> Result<PortMapService> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.bind_device(Some(lan_if.as_bytes()))
            .with_context(|| format!("binding the port-mapping socket to {lan_if}"))?;
        s.bind(&SocketAddr::from((lan_addr, wire::SERVER_PORT)).into())
            .with_context(|| format!("listening on {lan_addr}:{}", wire::SERVER_PORT))?;
        s.set_multicast_if_v4(&lan_addr)?;
        s.set_nonblocking(true)?;
        Ok(PortMapService {
            socket: std::sync::Arc::new(UdpSocket::from_std(s.into())?),
            started: Instant::now(),
            rates: Rates::new(REQUESTS_PER_SECOND, REQUEST_BURST),
        })
    }

    fn epoch(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    /// The next request: its bytes and where it came from.
    pub async fn recv(&self) -> std::io::Result<(Vec<u8>, SocketAddr)> {
        // One more than PCP's largest message, so that a longer one is seen as such.
        let mut buf = vec![0u8; 1101];
        let (n, from) = self.socket.recv_from(&mut buf).await?;
        buf.truncate(n);
        Ok((buf, from))
    }

    /// Answers one request from `from` (if it needs an answer), acting on `maps`.
    pub async fn serve(&mut self, maps: &mut NatMaps, msg: &[u8], from: SocketAddr, wan: Ipv4Addr) {
        let SocketAddr::V4(from) = from else {
            return;
        };
        if !self.rates.admit(*from.ip()) {
            log::debug!("port mapping: {from} asks too often; dropped");
            return;
        }
        let answer = match self.answer(maps, msg, from, wan) {
            Ok(a) => a,
            Err(e) => {
                log::warn!("port mapping request from {from}: {e:#}");
                None
            }
        };
        if let Some(a) = answer {
            if let Err(e) = self.socket.send_to(&a, from).await {
                log::debug!("answering {from}: {e}");
            }
        }
    }

    fn answer(
        &self,
        maps: &mut NatMaps,
        msg: &[u8],
        from: SocketAddrV4,
        wan: Ipv4Addr,
    ) -> Result<Option<Vec<u8>>> {
        let epoch = self.epoch();
        let req = match wire::parse(msg, epoch) {
            Ok(r) => r,
            Err(wire::Refused(answer)) => return Ok(answer),
        };
        let client = *from.ip();
        Ok(Some(match req {
            Request::ExternalAddress => wire::natpmp_external(natpmp_result::SUCCESS, epoch, wan),
            Request::Announce => wire::pcp_announce(epoch),
            Request::Map {
                proto,
                internal_port,
                suggested_port,
                lifetime,
                pcp,
            } => {
                if let Some(m) = &pcp {
                    if m.client != client {
                        // A host maps only to itself (RFC 6887 section 8.1).
                        log::info!("pcp: {client} asked for a mapping of {}: refused", m.client);
                        return Ok(Some(wire::pcp_map(
                            m,
                            proto,
                            pcp_result::ADDRESS_MISMATCH,
                            wire::PCP_ERROR_LIFETIME,
                            epoch,
                            (internal_port, 0),
                            Ipv4Addr::UNSPECIFIED,
                        )));
                    }
                }
                let nonce = pcp.as_ref().map(|m| m.nonce);
                let (result, port, lifetime) = if internal_port == 0 && lifetime != 0 {
                    // NAT-PMP: port 0 only ever means "all", for deleting.
                    let refused = LeaseRefused::NotAuthorized("internal port 0".into());
                    (Err(refused), 0, 0)
                } else if lifetime == 0 {
                    let ended = forwards::end_lease(maps, client, proto, internal_port, nonce)?;
                    match ended {
                        Ok(freed) => {
                            if !freed.is_empty() {
                                log::info!(
                                    "port mapping: {client} ended its lease of {} port(s) {freed:?}",
                                    forwards::proto_name(proto)
                                );
                            }
                            (Ok(()), 0, 0)
                        }
                        Err(refused) => (Err(refused), 0, 0),
                    }
                } else {
                    let lifetime = lifetime.min(MAX_LIFETIME);
                    let req = LeaseRequest {
                        client,
                        proto,
                        internal_port,
                        suggested_port,
                        lifetime,
                        now_s: crate::monotonic_secs(),
                        nonce,
                        origin: if pcp.is_some() {
                            FORWARD_FROM_PCP
                        } else {
                            FORWARD_FROM_NATPMP
                        },
                        exact: false,
                    };
                    match forwards::lease(maps, &req)? {
                        Ok(port) => {
                            log::info!(
                                "port mapping: {client}:{internal_port} {} leased external port {port} for {lifetime} s",
                                forwards::proto_name(proto)
                            );
                            (Ok(()), port, lifetime)
                        }
                        Err(refused) => {
                            log::info!(
                                "port mapping for {client}:{internal_port} refused: {refused:?}"
                            );
                            (Err(refused), 0, 0)
                        }
                    }
                };
                match &pcp {
                    Some(m) => {
                        let (code, lifetime) = match result {
                            Ok(()) => (pcp_result::SUCCESS, lifetime),
                            Err(r) => (pcp_code(&r), wire::PCP_ERROR_LIFETIME),
                        };
                        wire::pcp_map(m, proto, code, lifetime, epoch, (internal_port, port), wan)
                    }
                    None => {
                        let code = match result {
                            Ok(()) => natpmp_result::SUCCESS,
                            Err(LeaseRefused::NotAuthorized(_)) => natpmp_result::NOT_AUTHORIZED,
                            Err(_) => natpmp_result::OUT_OF_RESOURCES,
                        };
                        wire::natpmp_map(proto, code, epoch, internal_port, port, lifetime)
                    }
                }
            }
        }))
    }

    /// Tells the LAN the external address, at start or when it changed: the epoch starts
    /// again (RFC 6887 section 8.5: so PCP clients make their mappings again), and NAT-PMP's
    /// announcement and PCP's unsolicited ANNOUNCE go to 224.0.0.1:5350, ten times, 250 ms
    /// apart at first and twice as long each time (RFC 6886 section 3.2.1, RFC 6887
    /// section 14.1.3), in the background.
    pub fn announce(&mut self, wan: Ipv4Addr) {
        self.started = Instant::now();
        let socket = self.socket.clone();
        let started = self.started;
        tokio::spawn(async move {
            let to = SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 1), wire::ANNOUNCE_PORT);
            let mut pause = std::time::Duration::from_millis(250);
            for _ in 0..10 {
                let epoch = started.elapsed().as_secs() as u32;
                for msg in [
                    wire::natpmp_external(natpmp_result::SUCCESS, epoch, wan),
                    wire::pcp_announce(epoch),
                ] {
                    if let Err(e) = socket.send_to(&msg, to).await {
                        log::warn!("announcing the external address {wan} to the LAN: {e}");
                        return;
                    }
                }
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        });
    }
}

fn pcp_code(r: &LeaseRefused) -> u8 {
    match r {
        LeaseRefused::NotAuthorized(_) => pcp_result::NOT_AUTHORIZED,
        LeaseRefused::Quota(_) => pcp_result::USER_EX_QUOTA,
        LeaseRefused::NoResources(_) => pcp_result::NO_RESOURCES,
    }
}
