//! A reference model of what the NAT does with each packet, written from its contract
//! (docs/architecture.md, docs/passthrough.md, RFC 4787 / 5382 / 5508), not from the data
//! path: endpoint-independent mappings that keep the source port when they can,
//! address-dependent filtering, hairpinning, ICMP errors both ways, anti-spoofing on both
//! sides, IKE sharing port 500, raw-ESP learning, PPTP call ids in control messages and GRE. Given the packets so far, it says what
//! the next packet's verdict is and, when it is forwarded, the exact frame that must come out
//! (built by etherparse, every checksum computed in full).
//!
//! The fixture's world (tests/src/fixture.rs): LAN hosts A and B behind lan0, the server on
//! the WAN link, a far server behind the gateway; the pool is 1-65535 without the router's
//! port 22; each of the three filtering modes. Time stands still within a sequence: nothing
//! expires, an ESP learning window stays open. Left to other tests: timeouts and the sweeper,
//! fragments, IP options, VLAN tags, the passthrough switches, quotas and full tables, IKEv1,
//! the router owning port 500 (tests/tests/fixtures.rs, vpn_fixtures.rs, malformed_fixtures.rs).
//! A forwarded frame's MAC addresses are part of what is compared: the source MAC is that of
//! the interface the FIB sent it out of, so a frame sent out of the wrong side does not match.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::{
    fixture::{
        FAR_SERVER, GATEWAY, GATEWAY_MAC, HOST_A_MAC, HOST_B_MAC, LAN_MAC, ROUTER_SSH, SERVER_MAC,
        WAN_MAC,
    },
    lab::{LAN_HOST_A, LAN_HOST_B, ROUTER_LAN, ROUTER_WAN, SERVER},
    packets::{self, Flags, Hdr, Mac},
};

pub const UDP: u8 = 17;
pub const TCP: u8 = 6;
pub const ICMP: u8 = 1;
const ESP: u8 = 50;
const GRE: u8 = 47;
const PPTP_PORT: u16 = 1723;
const PPTP_OUT_CALL_REQUEST: u16 = 7;
const PPTP_OUT_CALL_REPLY: u16 = 8;
/// Byte offset of a control message's call id in a frame (Ethernet, IPv4, TCP without
/// options, then the message: Call ID at 12, Peer's Call ID at 14).
const CALL_ID_AT: usize = 14 + 20 + 20 + 12;

/// A client's PPTP control connection leaves from this port (no other event uses it as a
/// source port; the NAT may still have handed it out at random).
fn pptp_sport(host: Ipv4Addr) -> u16 {
    if host == LAN_HOST_A { 30_000 } else { 30_001 }
}

/// The call id the server picks for its side of the n-th call.
fn server_call_id(n: usize) -> u16 {
    0x5000 + n as u16
}
const IKE_PORT: u16 = 500;
/// ESP SPIs one learning window binds at most (docs/passthrough.md).
const ESP_BINDINGS_PER_WINDOW: usize = 4;

/// What a packet carries above IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Udp,
    Tcp(Flags),
    /// An echo request outbound, an echo reply inbound; the "port" is its id.
    Echo,
}

impl L4 {
    /// The kind of packet a session of `proto` carries (TCP as an ACK).
    fn of_session(proto: u8) -> L4 {
        match proto {
            TCP => L4::Tcp(packets::ACK),
            ICMP => L4::Echo,
            _ => L4::Udp,
        }
    }

    /// (source, destination) "ports" of a packet from remote port `remote` to local port (or
    /// echo id) `local`: an echo reply carries the id as its source and no destination.
    fn inbound_ports(self, remote: u16, local: u16) -> (u16, u16) {
        if self == L4::Echo {
            (local, 0)
        } else {
            (remote, local)
        }
    }

    fn proto(self) -> u8 {
        match self {
            L4::Udp => UDP,
            L4::Tcp(_) => TCP,
            L4::Echo => ICMP,
        }
    }
}

/// Who sends from the LAN side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LanSrc {
    Host(usize),
    /// A LAN host spoofing an address outside the LAN.
    Foreign,
    /// A LAN host spoofing the router's own LAN address.
    RouterLan,
}

/// Who sends from the WAN side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WanSrc {
    Server,
    Far,
    /// Spoofers: a LAN address, the WAN address itself, a martian address.
    SpoofLan,
    SpoofWan,
    Martian,
}

/// Where an outbound packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remote {
    Server,
    Far,
    /// The router's own LAN address: not the NAT's business.
    RouterLan,
}

/// Which external port an inbound or hairpinned packet is sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The n-th (mod count) existing mapping of the packet's protocol, if there is one.
    Mapped(usize),
    /// A pool port (most likely) without a mapping.
    Unmapped,
    /// The router's own port.
    Router,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Out {
        src: LanSrc,
        l4: L4,
        sport: u16,
        to: Remote,
        dport: u16,
        ttl: u8,
    },
    In {
        src: WanSrc,
        l4: L4,
        sport: u16,
        to: Target,
        /// To a LAN address straight, instead of the WAN address.
        to_lan: bool,
        ttl: u8,
    },
    Hairpin {
        host: usize,
        l4: L4,
        sport: u16,
        to: Target,
    },
    /// An ICMP error from the WAN about the n-th outbound session (or about nothing known).
    ErrorIn {
        from_gateway: bool,
        about: Option<usize>,
    },
    /// A LAN host's port unreachable about the n-th session's inbound packet.
    ErrorOut {
        about: usize,
    },
    IkeOut {
        host: usize,
        to: Remote,
        spi: u64,
    },
    IkeIn {
        from: Remote,
        spi: u64,
    },
    /// From port 500 to port 500, but not IKE: ordinary NAPT, never the shared port.
    NotIke500 {
        host: usize,
        to: Remote,
    },
    EspOut {
        host: usize,
        to: Remote,
        spi: u32,
    },
    EspIn {
        from: Remote,
        spi: u32,
    },
    /// A protocol the NAT cannot translate (IP 253), or AH.
    Untranslatable {
        host: usize,
        ah: bool,
    },
    /// A PPTP client's Outgoing-Call-Request for call `call_id` on its control connection.
    PptpCall {
        host: usize,
        to: Remote,
        call_id: u16,
    },
    /// The server's Outgoing-Call-Reply to its n-th known call (or to a call it never got).
    PptpReply {
        from: Remote,
        call: Option<usize>,
    },
    /// A client's GRE to its server: it carries the server's call id.
    GreOut {
        host: usize,
        to: Remote,
        key: u16,
    },
    /// The server's GRE for its n-th known call (or for a call id no one has).
    GreIn {
        from: Remote,
        call: Option<usize>,
    },
}

/// What must happen to a packet.
pub enum Expect {
    /// Dropped, and counted under this counter (its `nat-ctl stats` name).
    Drop(&'static str),
    /// Handed to the kernel untouched.
    Pass,
    /// Forwarded as exactly this frame.
    Forward(Vec<u8>),
    /// Forwarded with values the NAT picks at random (a port, a PPTP call id): each is read
    /// from what came out at its hole's offset and checked with `adopt` / `adopt_call`; then
    /// the frame must be exactly `frame(values)`.
    Adopt { holes: Vec<Hole>, frame: FrameOf },
}

/// Builds the expected frame from the values the NAT picked, in the order of the holes.
pub type FrameOf = Box<dyn Fn(&[u16]) -> Vec<u8>>;

/// A value the NAT picks, and where it is in the frame that comes out.
#[derive(Clone, Copy, Debug)]
pub enum Hole {
    /// A new mapping's external port (or echo id).
    Port { ep: Endpoint, at: usize },
    /// A new PPTP call's external call id.
    CallId { call: Call, at: usize },
}

/// RFC 4787 REQ-8 filtering, as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filtering {
    EndpointIndependent,
    AddressDependent,
    AddressAndPortDependent,
}

/// A PPTP call: client, server, the client's call id.
pub type Call = (Ipv4Addr, Ipv4Addr, u16);

/// A LAN endpoint: protocol, address, port (or echo id).
pub type Endpoint = (u8, Ipv4Addr, u16);

pub struct Model {
    filtering: Filtering,
    /// Endpoint -> external port, and back.
    mappings: BTreeMap<Endpoint, u16>,
    external: BTreeMap<(u8, u16), (Ipv4Addr, u16)>,
    /// (endpoint, remote address, remote port); echo: remote port 0.
    sessions: Vec<(Endpoint, Ipv4Addr, u16)>,
    /// (endpoint, remote address): address-dependent filtering.
    filters: BTreeSet<(Endpoint, Ipv4Addr)>,
    /// (server, initiator SPI) -> LAN host, through the shared port 500.
    ike: BTreeMap<(Ipv4Addr, u64), Ipv4Addr>,
    /// (host, server, outbound SPI) -> learned.
    esp_out: BTreeMap<(Ipv4Addr, Ipv4Addr, u32), bool>,
    /// (server, inbound SPI) -> host.
    esp_in: BTreeMap<(Ipv4Addr, u32), Ipv4Addr>,
    /// server -> (learner, its outbound SPI, SPIs bound in its window).
    windows: BTreeMap<Ipv4Addr, (Ipv4Addr, u32, usize)>,
    /// PPTP call -> external call id, in the order the calls were made.
    calls: Vec<(Call, u16)>,
    /// (host, server) whose 500-to-500 flow is IKE's, on the shared external port 500.
    ike_flows: BTreeSet<(Ipv4Addr, Ipv4Addr)>,
    /// Sessions that moved to the shared port 500 when IKE took over their 5-tuple: replies
    /// to their ordinary mapping's port no longer reach them.
    moved: BTreeSet<(Endpoint, Ipv4Addr, u16)>,
}

pub fn host_addr(i: usize) -> Ipv4Addr {
    [LAN_HOST_A, LAN_HOST_B][i % 2]
}

fn host_mac(a: Ipv4Addr) -> Mac {
    if a == LAN_HOST_A {
        HOST_A_MAC
    } else {
        HOST_B_MAC
    }
}

fn remote_addr(r: Remote) -> Ipv4Addr {
    match r {
        Remote::Server => SERVER,
        Remote::Far => FAR_SERVER,
        Remote::RouterLan => ROUTER_LAN,
    }
}

/// The MAC of the next hop towards WAN address `a`.
fn wan_next_hop(a: Ipv4Addr) -> Mac {
    if a == SERVER { SERVER_MAC } else { GATEWAY_MAC }
}

fn in_pool(port: u16) -> bool {
    port != 0 && port != ROUTER_SSH
}

/// UDP 500 is IKE's, shared by every LAN host's IKE from port 500: never an ordinary mapping.
fn shared_ike(proto: u8, port: u16) -> bool {
    proto == UDP && port == IKE_PORT
}

fn frame(h: &Hdr, l4: L4, sport: u16, dport: u16, inbound: bool) -> Vec<u8> {
    let payload = b"model payload";
    match l4 {
        L4::Udp => packets::udp(h, sport, dport, payload),
        L4::Tcp(f) => packets::tcp(h, sport, dport, f, payload),
        // The id travels as the source "port"; echo requests go out, replies come in.
        L4::Echo => packets::icmp_echo(h, !inbound, sport, 7, payload),
    }
}

fn hdr(smac: Mac, dmac: Mac, src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Hdr {
    Hdr {
        smac,
        dmac,
        src,
        dst,
        ttl,
    }
}

/// Byte offset of the source port (or echo id) in a frame without IP options.
fn sport_at(l4: L4) -> usize {
    match l4 {
        L4::Echo => 14 + 20 + 4,
        _ => 14 + 20,
    }
}

impl Model {
    pub fn new(filtering: Filtering) -> Model {
        Model {
            filtering,
            mappings: BTreeMap::new(),
            external: BTreeMap::new(),
            sessions: Vec::new(),
            filters: BTreeSet::new(),
            ike: BTreeMap::new(),
            esp_out: BTreeMap::new(),
            esp_in: BTreeMap::new(),
            windows: BTreeMap::new(),
            calls: Vec::new(),
            ike_flows: BTreeSet::new(),
            moved: BTreeSet::new(),
        }
    }

    /// The input frame of `e`, and what must become of it. `lan` tells which program gets it.
    pub fn step(&mut self, e: &Event) -> (bool, Vec<u8>, Expect) {
        match *e {
            Event::Out {
                src,
                l4,
                sport,
                to,
                dport,
                ttl,
            } => self.out(src, l4, sport, to, dport, ttl),
            Event::In {
                src,
                l4,
                sport,
                to,
                to_lan,
                ttl,
            } => self.inbound(src, l4, sport, to, to_lan, ttl),
            Event::Hairpin {
                host,
                l4,
                sport,
                to,
            } => self.hairpin(host, l4, sport, to),
            Event::ErrorIn {
                from_gateway,
                about,
            } => self.error_in(from_gateway, about),
            Event::ErrorOut { about } => self.error_out(about),
            Event::IkeOut { host, to, spi } => self.ike_out(host, to, spi),
            Event::IkeIn { from, spi } => self.ike_in(from, spi),
            Event::NotIke500 { host, to } => {
                let a = host_addr(host);
                let rem = remote_addr(to);
                let input = frame(
                    &hdr(host_mac(a), LAN_MAC, a, rem, 64),
                    L4::Udp,
                    IKE_PORT,
                    IKE_PORT,
                    false,
                );
                if to == Remote::RouterLan {
                    return (true, input, Expect::Pass);
                }
                let out_hdr = hdr(WAN_MAC, wan_next_hop(rem), ROUTER_WAN, rem, 63);
                // The same 5-tuple as an IKE flow: it is that flow, on the shared port.
                if self.ike_flows.contains(&(a, rem)) {
                    let out = frame(&out_hdr, L4::Udp, IKE_PORT, IKE_PORT, false);
                    return (true, input, Expect::Forward(out));
                }
                let e = self.translate_out(
                    (UDP, a, IKE_PORT),
                    L4::Udp,
                    rem,
                    IKE_PORT,
                    out_hdr,
                    IKE_PORT,
                );
                (true, input, e)
            }
            Event::EspOut { host, to, spi } => self.esp_out(host, to, spi),
            Event::EspIn { from, spi } => self.esp_in(from, spi),
            Event::PptpCall { host, to, call_id } => self.pptp_call(host, to, call_id),
            Event::PptpReply { from, call } => self.pptp_reply(from, call),
            Event::GreOut { host, to, key } => self.gre_out(host, to, key),
            Event::GreIn { from, call } => self.gre_in(from, call),
            Event::Untranslatable { host, ah } => {
                let a = host_addr(host);
                let h = hdr(host_mac(a), LAN_MAC, a, SERVER, 64);
                let (proto, why) = if ah {
                    (51, "drop_ah")
                } else {
                    (253, "drop_unsupported_proto")
                };
                (
                    true,
                    packets::ip_proto(&h, proto, b"opaque"),
                    Expect::Drop(why),
                )
            }
        }
    }

    /// A port chosen by the NAT for a new mapping of `ep`: in the pool, of the privileged
    /// part for a privileged TCP/UDP source, and no other mapping's. Records it.
    pub fn adopt(&mut self, ep: Endpoint, port: u16) -> Result<(), String> {
        let privileged = ep.0 != ICMP && ep.2 != 0 && ep.2 <= 1023;
        if !in_pool(port) || (privileged != (port <= 1023)) || shared_ike(ep.0, port) {
            return Err(format!(
                "{ep:?} got port {port}: not from its part of the pool"
            ));
        }
        if self.external.contains_key(&(ep.0, port)) {
            return Err(format!(
                "{ep:?} got port {port}, which another mapping holds"
            ));
        }
        self.mappings.insert(ep, port);
        self.external.insert((ep.0, port), (ep.1, ep.2));
        Ok(())
    }

    /// An external call id the NAT picked for `call`: not 0, and no other call's with that
    /// server. Records it.
    pub fn adopt_call(&mut self, call: Call, id: u16) -> Result<(), String> {
        if id == 0
            || self
                .calls
                .iter()
                .any(|(c, ext)| c.1 == call.1 && *ext == id)
        {
            return Err(format!(
                "{call:?} got call id {id}, which is 0 or another call's"
            ));
        }
        self.calls.push((call, id));
        Ok(())
    }

    /// The external port of `ep`: Ok(port) when it is known or kept, Err(()) when the NAT
    /// picks one (the caller adopts it).
    fn mapping(&mut self, ep: Endpoint) -> Result<u16, ()> {
        if let Some(p) = self.mappings.get(&ep) {
            return Ok(*p);
        }
        if in_pool(ep.2) && !shared_ike(ep.0, ep.2) && !self.external.contains_key(&(ep.0, ep.2)) {
            self.mappings.insert(ep, ep.2);
            self.external.insert((ep.0, ep.2), (ep.1, ep.2));
            return Ok(ep.2);
        }
        Err(())
    }

    fn open_session(&mut self, ep: Endpoint, rem: Ipv4Addr, rport: u16) {
        if !self.sessions.contains(&(ep, rem, rport)) {
            self.sessions.push((ep, rem, rport));
        }
        self.filters.insert((ep, rem));
    }

    /// A translated frame for `ep` sending to (rem, rport), with its mapping's port, or
    /// the Adopt expectation when the NAT picks the port; opens the session.
    fn translate_out(
        &mut self,
        ep: Endpoint,
        l4: L4,
        rem: Ipv4Addr,
        rport: u16,
        out_hdr: Hdr,
        dst_port: u16,
    ) -> Expect {
        let build = |h: &Hdr, l4: L4, p: u16, d: u16| frame(h, l4, p, d, false);
        let session_port = if l4 == L4::Echo { 0 } else { rport };
        match self.mapping(ep) {
            Ok(ext) => {
                self.open_session(ep, rem, session_port);
                Expect::Forward(build(&out_hdr, l4, ext, dst_port))
            }
            Err(()) => {
                // The session is opened once the port is adopted; it names the endpoint,
                // not the port.
                self.open_session(ep, rem, session_port);
                Expect::Adopt {
                    holes: vec![Hole::Port {
                        ep,
                        at: sport_at(l4),
                    }],
                    frame: Box::new(move |v| frame(&out_hdr, l4, v[0], dst_port, false)),
                }
            }
        }
    }

    fn out(
        &mut self,
        src: LanSrc,
        l4: L4,
        sport: u16,
        to: Remote,
        dport: u16,
        ttl: u8,
    ) -> (bool, Vec<u8>, Expect) {
        let (addr, mac) = match src {
            LanSrc::Host(i) => (host_addr(i), host_mac(host_addr(i))),
            LanSrc::Foreign => (Ipv4Addr::new(10, 9, 9, 9), HOST_A_MAC),
            LanSrc::RouterLan => (ROUTER_LAN, HOST_A_MAC),
        };
        let rem = remote_addr(to);
        let dport = if l4 == L4::Echo { 0 } else { dport };
        let input = frame(&hdr(mac, LAN_MAC, addr, rem, ttl), l4, sport, dport, false);
        // Anti-spoofing first, whatever the destination.
        match src {
            LanSrc::Foreign => return (true, input, Expect::Drop("drop_lan_source_foreign")),
            LanSrc::RouterLan => return (true, input, Expect::Drop("drop_lan_source_router")),
            LanSrc::Host(_) => {}
        }
        // The router's own address, and TTL 1 (the kernel answers Time Exceeded): the
        // kernel's, untouched.
        if to == Remote::RouterLan || ttl <= 1 {
            return (true, input, Expect::Pass);
        }
        let out_hdr = hdr(WAN_MAC, wan_next_hop(rem), ROUTER_WAN, rem, ttl - 1);
        let ep = (l4.proto(), addr, sport);
        let e = self.translate_out(ep, l4, rem, dport, out_hdr, dport);
        (true, input, e)
    }

    fn wan_src(&self, src: WanSrc) -> Ipv4Addr {
        match src {
            WanSrc::Server => SERVER,
            WanSrc::Far => FAR_SERVER,
            WanSrc::SpoofLan => LAN_HOST_A,
            WanSrc::SpoofWan => ROUTER_WAN,
            WanSrc::Martian => Ipv4Addr::new(127, 0, 0, 1),
        }
    }

    /// The external port `to` names for protocol `proto`.
    fn target_port(&self, proto: u8, to: Target) -> u16 {
        match to {
            Target::Mapped(n) => {
                let ports: Vec<u16> = self
                    .external
                    .keys()
                    .filter(|(p, _)| *p == proto)
                    .map(|(_, port)| *port)
                    .collect();
                if ports.is_empty() {
                    31_000
                } else {
                    ports[n % ports.len()]
                }
            }
            Target::Unmapped => (31_000..)
                .find(|p| !self.external.contains_key(&(proto, *p)))
                .expect("a free port"),
            Target::Router => ROUTER_SSH,
        }
    }

    fn inbound(
        &mut self,
        src: WanSrc,
        l4: L4,
        sport: u16,
        to: Target,
        to_lan: bool,
        ttl: u8,
    ) -> (bool, Vec<u8>, Expect) {
        let rem = self.wan_src(src);
        let proto = l4.proto();
        let ext = self.target_port(proto, to);
        let dst = if to_lan { LAN_HOST_A } else { ROUTER_WAN };
        // Echo replies carry the external id in place of a source port.
        let (s, d) = l4.inbound_ports(sport, ext);
        let input = frame(
            &hdr(wan_next_hop(rem), WAN_MAC, rem, dst, ttl),
            l4,
            s,
            d,
            true,
        );
        // Spoofed sources first: the WAN address itself, a LAN-side or a martian one.
        match src {
            WanSrc::SpoofWan => return (false, input, Expect::Drop("drop_wan_source_self")),
            WanSrc::SpoofLan | WanSrc::Martian => {
                return (false, input, Expect::Drop("drop_martian_source"));
            }
            WanSrc::Server | WanSrc::Far => {}
        }
        if to_lan {
            return (false, input, Expect::Drop("drop_to_lan_address"));
        }
        // Ports outside the pool are the router's.
        if !in_pool(ext) {
            return (false, input, Expect::Pass);
        }
        let Some(&(int, iport)) = self.external.get(&(proto, ext)) else {
            // Echo ids share their space with the router's own pings: an echo reply to an id
            // the NAT did not map answers the router's.
            let e = if l4 == L4::Echo {
                Expect::Pass
            } else {
                Expect::Drop("drop_no_mapping")
            };
            return (false, input, e);
        };
        let ep = (proto, int, iport);
        let rport = if l4 == L4::Echo { 0 } else { sport };
        if self.moved.contains(&(ep, rem, rport)) {
            return (false, input, Expect::Drop("drop_no_mapping"));
        }
        // TCP and echo replies need their session; UDP what the filtering mode allows.
        if !self.sessions.contains(&(ep, rem, rport)) {
            let allowed = l4 == L4::Udp
                && match self.filtering {
                    Filtering::EndpointIndependent => true,
                    Filtering::AddressDependent => self.filters.contains(&(ep, rem)),
                    Filtering::AddressAndPortDependent => false,
                };
            if !allowed {
                let why = if matches!(l4, L4::Tcp(_)) {
                    "drop_unsolicited_tcp"
                } else {
                    "drop_filtered"
                };
                return (false, input, Expect::Drop(why));
            }
        }
        // A forwarded packet never leaves the router with TTL 0.
        if ttl <= 1 {
            return (false, input, Expect::Drop("drop_inbound_ttl"));
        }
        let out_hdr = hdr(LAN_MAC, host_mac(int), rem, int, ttl - 1);
        let (s, d) = l4.inbound_ports(sport, iport);
        (
            false,
            input,
            Expect::Forward(frame(&out_hdr, l4, s, d, true)),
        )
    }

    fn hairpin(&mut self, host: usize, l4: L4, sport: u16, to: Target) -> (bool, Vec<u8>, Expect) {
        let addr = host_addr(host);
        let proto = l4.proto();
        let ext = self.target_port(proto, to);
        let dport = if l4 == L4::Echo { 0 } else { ext };
        let input = frame(
            &hdr(host_mac(addr), LAN_MAC, addr, ROUTER_WAN, 64),
            l4,
            sport,
            dport,
            false,
        );
        // Echo requests to the WAN address, and the router's own ports, are the router's.
        if l4 == L4::Echo || !in_pool(ext) {
            return (true, input, Expect::Pass);
        }
        let Some(&(int, iport)) = self.external.get(&(proto, ext)) else {
            return (true, input, Expect::Drop("drop_no_mapping"));
        };
        // Hairpinned packets come from our own side: not filtered, no session needed.
        let out_hdr = hdr(LAN_MAC, host_mac(int), ROUTER_WAN, int, 63);
        let ep = (proto, addr, sport);
        let e = self.translate_out(ep, l4, ROUTER_WAN, ext, out_hdr, iport);
        (true, input, e)
    }

    /// The n-th session (mod count) that has a mapping, with its external port.
    fn session(&self, n: usize) -> Option<((Endpoint, Ipv4Addr, u16), u16)> {
        let live: Vec<_> = self
            .sessions
            .iter()
            .filter(|(ep, rem, _)| *rem != ROUTER_WAN && self.mappings.contains_key(ep))
            .collect();
        if live.is_empty() {
            return None;
        }
        let s = *live[n % live.len()];
        Some((s, self.mappings[&s.0]))
    }

    fn error_in(&mut self, from_gateway: bool, about: Option<usize>) -> (bool, Vec<u8>, Expect) {
        let known = about.and_then(|n| self.session(n));
        // What the error quotes: one of our outbound packets as it left, or one to an
        // external port nobody holds.
        let ((proto, int, iport), rem, rport, ext) = match known {
            Some((s, ext)) => (s.0, s.1, s.2, ext),
            // An external port no mapping holds (the NAT draws ports at random).
            None => {
                let free = (31_001..).find(|p| !self.external.contains_key(&(UDP, *p)));
                ((UDP, LAN_HOST_A, 0), SERVER, 53, free.expect("a free port"))
            }
        };
        let l4 = L4::of_session(proto);
        let sender = if from_gateway { GATEWAY } else { rem };
        let quoted_wan = frame(
            &hdr(WAN_MAC, SERVER_MAC, ROUTER_WAN, rem, 60),
            l4,
            ext,
            rport,
            false,
        );
        let kind = if from_gateway {
            packets::ttl_exceeded()
        } else {
            packets::port_unreachable()
        };
        let outer = hdr(wan_next_hop(sender), WAN_MAC, sender, ROUTER_WAN, 64);
        let input = packets::icmp_error(&outer, kind.clone(), &quoted_wan);
        let Some(_) = known else {
            // No mapping for that port: dropped (an echo id would be the router's).
            return (false, input, Expect::Drop("drop_icmp_error_no_session"));
        };
        let quoted_lan = frame(
            &hdr(WAN_MAC, SERVER_MAC, int, rem, 60),
            l4,
            iport,
            rport,
            false,
        );
        let out = packets::icmp_error(
            &hdr(LAN_MAC, host_mac(int), sender, int, 63),
            kind,
            &quoted_lan,
        );
        (false, input, Expect::Forward(out))
    }

    fn error_out(&mut self, about: usize) -> (bool, Vec<u8>, Expect) {
        let Some(((ep, rem, rport), ext)) = self.session(about) else {
            // Nothing received yet: an error about an inbound packet nobody sent.
            let quoted = frame(
                &hdr(SERVER_MAC, WAN_MAC, SERVER, LAN_HOST_A, 60),
                L4::Udp,
                53,
                40_000,
                true,
            );
            let input = packets::icmp_error(
                &hdr(HOST_A_MAC, LAN_MAC, LAN_HOST_A, SERVER, 64),
                packets::port_unreachable(),
                &quoted,
            );
            return (true, input, Expect::Drop("drop_icmp_error_no_session"));
        };
        let (proto, int, iport) = ep;
        // An IKE flow on the shared port 500 takes the remote's packets there, whatever
        // mapping the endpoint also has (an earlier 500-to-500 flow that was not IKE): the
        // error quotes the packet as the remote sent it, to port 500.
        let ext = if proto == UDP
            && iport == IKE_PORT
            && rport == IKE_PORT
            && self.ike_flows.contains(&(int, rem))
        {
            IKE_PORT
        } else {
            ext
        };
        let l4 = L4::of_session(proto);
        // The packet as the LAN host received it, and as the remote sent it.
        let (qs, qd) = l4.inbound_ports(rport, iport);
        let quoted_lan = frame(&hdr(SERVER_MAC, WAN_MAC, rem, int, 60), l4, qs, qd, true);
        let (qs, qd) = l4.inbound_ports(rport, ext);
        let quoted_wan = frame(
            &hdr(SERVER_MAC, WAN_MAC, rem, ROUTER_WAN, 60),
            l4,
            qs,
            qd,
            true,
        );
        let input = packets::icmp_error(
            &hdr(host_mac(int), LAN_MAC, int, rem, 64),
            packets::port_unreachable(),
            &quoted_lan,
        );
        let out = packets::icmp_error(
            &hdr(WAN_MAC, wan_next_hop(rem), ROUTER_WAN, rem, 63),
            packets::port_unreachable(),
            &quoted_wan,
        );
        (true, input, Expect::Forward(out))
    }

    fn ike_out(&mut self, host: usize, to: Remote, spi: u64) -> (bool, Vec<u8>, Expect) {
        let a = host_addr(host);
        let rem = remote_addr(to);
        let msg = packets::ike(spi, 0, 0x08);
        let input = packets::udp(
            &hdr(host_mac(a), LAN_MAC, a, rem, 64),
            IKE_PORT,
            IKE_PORT,
            &msg,
        );
        if to == Remote::RouterLan {
            return (true, input, Expect::Pass);
        }
        // Port 500 is shared; an initiator SPI another host uses with that server is refused.
        match self.ike.get(&(rem, spi)) {
            Some(owner) if *owner != a => {
                return (true, input, Expect::Drop("drop_ike_spi_in_use"));
            }
            _ => {}
        }
        self.ike.insert((rem, spi), a);
        let ep = (UDP, a, IKE_PORT);
        if self.mappings.contains_key(&ep) && self.sessions.contains(&(ep, rem, IKE_PORT)) {
            self.moved.insert((ep, rem, IKE_PORT));
        }
        self.ike_flows.insert((a, rem));
        self.open_session(ep, rem, IKE_PORT);
        let out = packets::udp(
            &hdr(WAN_MAC, wan_next_hop(rem), ROUTER_WAN, rem, 63),
            IKE_PORT,
            IKE_PORT,
            &msg,
        );
        (true, input, Expect::Forward(out))
    }

    fn ike_in(&mut self, from: Remote, spi: u64) -> (bool, Vec<u8>, Expect) {
        let rem = remote_addr(from);
        let msg = packets::ike(spi, 0x77, 0x20);
        let input = packets::udp(
            &hdr(wan_next_hop(rem), WAN_MAC, rem, ROUTER_WAN, 64),
            IKE_PORT,
            IKE_PORT,
            &msg,
        );
        // An SPI no client started: port 500 is no ordinary mapping's either.
        let Some(&owner) = self.ike.get(&(rem, spi)) else {
            return (false, input, Expect::Drop("drop_no_mapping"));
        };
        let out = packets::udp(
            &hdr(LAN_MAC, host_mac(owner), rem, owner, 63),
            IKE_PORT,
            IKE_PORT,
            &msg,
        );
        (false, input, Expect::Forward(out))
    }

    fn esp_out(&mut self, host: usize, to: Remote, spi: u32) -> (bool, Vec<u8>, Expect) {
        let a = host_addr(host);
        let rem = remote_addr(to);
        let body = packets::esp(spi, 1);
        let input = packets::ip_proto(&hdr(host_mac(a), LAN_MAC, a, rem, 64), ESP, &body);
        if to == Remote::RouterLan {
            return (true, input, Expect::Pass);
        }
        let learned = *self.esp_out.entry((a, rem, spi)).or_insert(false);
        if !learned {
            match self.windows.get(&rem) {
                // Another host learns from that server: wait.
                Some((learner, _, _)) if *learner != a => {
                    return (true, input, Expect::Drop("drop_esp_learn_busy"));
                }
                Some(_) => {}
                None => {
                    self.windows.insert(rem, (a, spi, 0));
                }
            }
        }
        let out = packets::ip_proto(
            &hdr(WAN_MAC, wan_next_hop(rem), ROUTER_WAN, rem, 63),
            ESP,
            &body,
        );
        (true, input, Expect::Forward(out))
    }

    fn esp_in(&mut self, from: Remote, spi: u32) -> (bool, Vec<u8>, Expect) {
        let rem = remote_addr(from);
        let body = packets::esp(spi, 9);
        let input = packets::ip_proto(
            &hdr(wan_next_hop(rem), WAN_MAC, rem, ROUTER_WAN, 64),
            ESP,
            &body,
        );
        let owner = match self.esp_in.get(&(rem, spi)) {
            Some(o) => *o,
            None => {
                let Some((learner, out_spi, bound)) = self.windows.get_mut(&rem) else {
                    // Nobody learns from that server: the router's.
                    return (false, input, Expect::Pass);
                };
                if *bound >= ESP_BINDINGS_PER_WINDOW {
                    return (false, input, Expect::Drop("drop_esp_learn_limit"));
                }
                *bound += 1;
                let (learner, out_spi) = (*learner, *out_spi);
                self.esp_in.insert((rem, spi), learner);
                self.esp_out.insert((learner, rem, out_spi), true);
                learner
            }
        };
        let out = packets::ip_proto(&hdr(LAN_MAC, host_mac(owner), rem, owner, 63), ESP, &body);
        (false, input, Expect::Forward(out))
    }

    /// A call id no call with server `rem` has as its external one (the NAT picks them at
    /// random, so a fixed "unknown" id could be one).
    fn unused_call_id(&self, rem: Ipv4Addr) -> u16 {
        (0x7777..)
            .find(|id| !self.calls.iter().any(|(c, ext)| c.1 == rem && ext == id))
            .expect("a free call id")
    }

    fn pptp_call(&mut self, host: usize, to: Remote, call_id: u16) -> (bool, Vec<u8>, Expect) {
        let a = host_addr(host);
        let rem = remote_addr(to);
        let sport = pptp_sport(a);
        let msg = |id: u16| packets::pptp_ctrl(PPTP_OUT_CALL_REQUEST, id, 0);
        let input = packets::tcp(
            &hdr(host_mac(a), LAN_MAC, a, rem, 64),
            sport,
            PPTP_PORT,
            packets::ACK,
            &msg(call_id),
        );
        if to == Remote::RouterLan {
            return (true, input, Expect::Pass);
        }
        // The control connection: a TCP flow like any other.
        let ep = (TCP, a, sport);
        let port = self.mapping(ep).ok();
        self.open_session(ep, rem, PPTP_PORT);
        let out_hdr = hdr(WAN_MAC, wan_next_hop(rem), ROUTER_WAN, rem, 63);
        let frame =
            move |p: u16, id: u16| packets::tcp(&out_hdr, p, PPTP_PORT, packets::ACK, &msg(id));
        let call = (a, rem, call_id);
        // The call's external id: known, the client's own unless another call to that server
        // has it, or one the NAT picks.
        let id = match self.calls.iter().find(|(c, _)| *c == call) {
            Some((_, ext)) => Some(*ext),
            None if !self
                .calls
                .iter()
                .any(|(c, ext)| c.1 == rem && *ext == call_id) =>
            {
                self.calls.push((call, call_id));
                Some(call_id)
            }
            None => None,
        };
        let port_hole = Hole::Port {
            ep,
            at: sport_at(L4::Tcp(packets::ACK)),
        };
        let id_hole = Hole::CallId {
            call,
            at: CALL_ID_AT,
        };
        let e = match (port, id) {
            (Some(p), Some(id)) => Expect::Forward(frame(p, id)),
            (None, Some(id)) => Expect::Adopt {
                holes: vec![port_hole],
                frame: Box::new(move |v| frame(v[0], id)),
            },
            (Some(p), None) => Expect::Adopt {
                holes: vec![id_hole],
                frame: Box::new(move |v| frame(p, v[0])),
            },
            (None, None) => Expect::Adopt {
                holes: vec![port_hole, id_hole],
                frame: Box::new(move |v| frame(v[0], v[1])),
            },
        };
        (true, input, e)
    }

    fn pptp_reply(&mut self, from: Remote, call: Option<usize>) -> (bool, Vec<u8>, Expect) {
        let rem = remote_addr(from);
        let theirs: Vec<(usize, (Call, u16))> = self
            .calls
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, (c, _))| c.1 == rem)
            .collect();
        // The call answered: the n-th to this server, or a call id no one has (to host A).
        let (n, client, client_id, ext) = match call.filter(|_| !theirs.is_empty()) {
            Some(k) => {
                let (n, (c, ext)) = theirs[k % theirs.len()];
                (n, c.0, c.2, ext)
            }
            None => {
                let unknown = self.unused_call_id(rem);
                (99, LAN_HOST_A, unknown, unknown)
            }
        };
        let sport = pptp_sport(client);
        let mapped = self.mappings.get(&(TCP, client, sport)).copied();
        // To the control connection's external port; without one, to a port nobody holds.
        let ext_port = mapped.unwrap_or_else(|| {
            (sport..)
                .find(|p| !self.external.contains_key(&(TCP, *p)))
                .expect("a free port")
        });
        let msg = |peer: u16| packets::pptp_ctrl(PPTP_OUT_CALL_REPLY, server_call_id(n), peer);
        let input = packets::tcp(
            &hdr(wan_next_hop(rem), WAN_MAC, rem, ROUTER_WAN, 64),
            PPTP_PORT,
            ext_port,
            packets::ACK,
            &msg(ext),
        );
        // Only on the client's control connection (TCP needs its session).
        if mapped.is_none() {
            return (false, input, Expect::Drop("drop_no_mapping"));
        }
        if !self
            .sessions
            .contains(&((TCP, client, sport), rem, PPTP_PORT))
        {
            return (false, input, Expect::Drop("drop_unsolicited_tcp"));
        }
        // The peer's call id goes back to the client's own; an unknown one stays.
        let out = packets::tcp(
            &hdr(LAN_MAC, host_mac(client), rem, client, 63),
            PPTP_PORT,
            sport,
            packets::ACK,
            &msg(client_id),
        );
        (false, input, Expect::Forward(out))
    }

    fn gre_out(&mut self, host: usize, to: Remote, key: u16) -> (bool, Vec<u8>, Expect) {
        let a = host_addr(host);
        let rem = remote_addr(to);
        let body = packets::gre_v1(key, 1, b"ppp frame");
        let input = packets::ip_proto(&hdr(host_mac(a), LAN_MAC, a, rem, 64), GRE, &body);
        if to == Remote::RouterLan {
            return (true, input, Expect::Pass);
        }
        // It carries the server's call id: only the source address changes.
        let out = packets::ip_proto(
            &hdr(WAN_MAC, wan_next_hop(rem), ROUTER_WAN, rem, 63),
            GRE,
            &body,
        );
        (true, input, Expect::Forward(out))
    }

    fn gre_in(&mut self, from: Remote, call: Option<usize>) -> (bool, Vec<u8>, Expect) {
        let rem = remote_addr(from);
        let theirs: Vec<(Call, u16)> = self
            .calls
            .iter()
            .copied()
            .filter(|(c, _)| c.1 == rem)
            .collect();
        let known = call
            .filter(|_| !theirs.is_empty())
            .map(|k| theirs[k % theirs.len()]);
        let ext = known.map_or_else(|| self.unused_call_id(rem), |(_, ext)| ext);
        let input = packets::ip_proto(
            &hdr(wan_next_hop(rem), WAN_MAC, rem, ROUTER_WAN, 64),
            GRE,
            &packets::gre_v1(ext, 9, b"ppp frame"),
        );
        let Some(((client, _, client_id), _)) = known else {
            // No call has that id: the router's own GRE, perhaps.
            return (false, input, Expect::Pass);
        };
        let out = packets::ip_proto(
            &hdr(LAN_MAC, host_mac(client), rem, client, 63),
            GRE,
            &packets::gre_v1(client_id, 9, b"ppp frame"),
        );
        (false, input, Expect::Forward(out))
    }
}
