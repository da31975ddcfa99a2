//! Test packets, built with etherparse, and checks of what came out.

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use std::net::Ipv4Addr;

pub type Mac = [u8; 6];

/// Ethernet + IPv4 addressing of a test packet.
#[derive(Clone, Copy, Debug)]
pub struct Hdr {
    pub smac: Mac,
    pub dmac: Mac,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

pub const SYN: Flags = Flags {
    syn: true,
    ack: false,
    fin: false,
    rst: false,
};
pub const SYN_ACK: Flags = Flags {
    syn: true,
    ack: true,
    fin: false,
    rst: false,
};
pub const ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: false,
    rst: false,
};

fn base(h: &Hdr) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    PacketBuilder::ethernet2(h.smac, h.dmac).ipv4(h.src.octets(), h.dst.octets(), h.ttl)
}

pub fn tcp(h: &Hdr, sport: u16, dport: u16, f: Flags, payload: &[u8]) -> Vec<u8> {
    let mut b = base(h).tcp(sport, dport, 1000, 64240);
    if f.syn {
        b = b.syn();
    }
    if f.ack {
        b = b.ack(2000);
    }
    if f.fin {
        b = b.fin();
    }
    if f.rst {
        b = b.rst();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).expect("build tcp");
    out
}

pub fn udp(h: &Hdr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    base(h)
        .udp(sport, dport)
        .write(&mut out, payload)
        .expect("build udp");
    out
}

pub fn icmp_echo(h: &Hdr, request: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let b = base(h);
    if request {
        b.icmpv4_echo_request(id, seq)
            .write(&mut out, payload)
            .expect("build icmp");
    } else {
        b.icmpv4_echo_reply(id, seq)
            .write(&mut out, payload)
            .expect("build icmp");
    }
    out
}

/// The fields a test checks in a translated frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    pub smac: Mac,
    pub dmac: Mac,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    /// Ports, or (id, 0) for ICMP echo.
    pub sport: u16,
    pub dport: u16,
}

/// Parses a frame, asserting every checksum in it is right.
pub fn parse_checked(frame: &[u8]) -> Seen {
    let p = SlicedPacket::from_ethernet(frame).expect("parse frame");
    let eth = match p.link.as_ref().expect("ethernet") {
        etherparse::LinkSlice::Ethernet2(e) => e.to_header(),
        other => panic!("unexpected link {other:?}"),
    };
    let ip = match p.net.as_ref().expect("ip") {
        etherparse::NetSlice::Ipv4(v4) => v4.header().to_header(),
        other => panic!("not ipv4: {other:?}"),
    };
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let (sport, dport) = match p.transport.as_ref().expect("transport") {
        TransportSlice::Tcp(t) => {
            assert_eq!(
                t.checksum(),
                t.to_header().calc_checksum_ipv4(&ip, t.payload()).unwrap(),
                "TCP checksum"
            );
            (t.source_port(), t.destination_port())
        }
        TransportSlice::Udp(u) => {
            if u.checksum() != 0 {
                assert_eq!(
                    u.checksum(),
                    u.to_header().calc_checksum_ipv4(&ip, u.payload()).unwrap(),
                    "UDP checksum"
                );
            }
            (u.source_port(), u.destination_port())
        }
        TransportSlice::Icmpv4(i) => {
            assert_eq!(
                i.checksum(),
                i.header().icmp_type.calc_checksum(i.payload()),
                "ICMP checksum"
            );
            let b = i.bytes5to8();
            (u16::from_be_bytes([b[0], b[1]]), 0)
        }
        other => panic!("unexpected transport {other:?}"),
    };
    Seen {
        smac: eth.source,
        dmac: eth.destination,
        src: Ipv4Addr::from(ip.source),
        dst: Ipv4Addr::from(ip.destination),
        ttl: ip.time_to_live,
        sport,
        dport,
    }
}
