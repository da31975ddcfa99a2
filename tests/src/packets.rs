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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// An IPv4 frame carrying `payload` as IP protocol `proto` (GRE, ESP, AH...).
pub fn ip_proto(h: &Hdr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    base(h)
        .write(&mut out, etherparse::IpNumber(proto), payload)
        .expect("build ip");
    out
}

/// PPTP enhanced GRE (version 1, key and sequence number present) for `call_id`.
pub fn gre_v1(call_id: u16, seq: u32, ppp: &[u8]) -> Vec<u8> {
    let mut g = vec![0x30, 0x01, 0x88, 0x0b];
    g.extend_from_slice(&(ppp.len() as u16).to_be_bytes());
    g.extend_from_slice(&call_id.to_be_bytes());
    g.extend_from_slice(&seq.to_be_bytes());
    g.extend_from_slice(ppp);
    g
}

/// A PPTP control message of `ctrl_type` with its RFC 2637 length, the call id at offset
/// 12 and the peer's call id at 14 (zero-filled otherwise).
pub fn pptp_ctrl(ctrl_type: u16, call_id: u16, peer_call_id: u16) -> Vec<u8> {
    let len = nat_common::vpn::pptp_message_len(ctrl_type);
    assert!(len >= 16, "unknown control type {ctrl_type}");
    let mut m = vec![0u8; len as usize];
    m[0..2].copy_from_slice(&len.to_be_bytes());
    m[2..4].copy_from_slice(&1u16.to_be_bytes());
    m[4..8].copy_from_slice(&nat_common::vpn::PPTP_MAGIC.to_be_bytes());
    m[8..10].copy_from_slice(&ctrl_type.to_be_bytes());
    m[12..14].copy_from_slice(&call_id.to_be_bytes());
    m[14..16].copy_from_slice(&peer_call_id.to_be_bytes());
    m
}

/// The call id (offset 12) and peer call id (offset 14) of a control message.
pub fn pptp_ids(msg: &[u8]) -> (u16, u16) {
    (
        u16::from_be_bytes([msg[12], msg[13]]),
        u16::from_be_bytes([msg[14], msg[15]]),
    )
}

/// An IKE message: header (SPIs, IKEv2, IKE_SA_INIT, `flags`) and a little body.
pub fn ike(spi_i: u64, spi_r: u64, flags: u8) -> Vec<u8> {
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(&spi_i.to_be_bytes());
    m.extend_from_slice(&spi_r.to_be_bytes());
    m.extend_from_slice(&[33, 0x20, 34, flags]);
    m.extend_from_slice(&0u32.to_be_bytes());
    m.extend_from_slice(&40u32.to_be_bytes());
    m.extend_from_slice(&[0u8; 12]);
    m
}

/// ESP header (SPI, sequence number) and some ciphertext.
pub fn esp(spi: u32, seq: u32) -> Vec<u8> {
    let mut m = spi.to_be_bytes().to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&[0xab; 32]);
    m
}

/// The transport payload of a frame (after the TCP/UDP header, or the IP payload for other
/// protocols).
pub fn payload(frame: &[u8]) -> Vec<u8> {
    let p = SlicedPacket::from_ethernet(frame).expect("parse frame");
    match p.transport {
        Some(TransportSlice::Tcp(t)) => t.payload().to_vec(),
        Some(TransportSlice::Udp(u)) => u.payload().to_vec(),
        _ => match p.net {
            Some(etherparse::NetSlice::Ipv4(v4)) => v4.payload().payload.to_vec(),
            _ => panic!("no payload"),
        },
    }
}

/// Source and destination address of a frame, after checking the IPv4 header checksum.
pub fn addrs(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    let p = SlicedPacket::from_ethernet(frame).expect("parse frame");
    match p.net {
        Some(etherparse::NetSlice::Ipv4(v4)) => {
            let h = v4.header().to_header();
            assert_eq!(
                h.header_checksum,
                h.calc_header_checksum(),
                "IPv4 header checksum"
            );
            (Ipv4Addr::from(h.source), Ipv4Addr::from(h.destination))
        }
        _ => panic!("not ipv4"),
    }
}

/// Splits an Ethernet+IPv4 frame into two fragments, the first carrying `at` bytes of the IP
/// payload (a multiple of 8), with lengths, flags, offsets and header checksums set.
pub fn fragment(frame: &[u8], at: usize) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(at % 8, 0);
    let (eth_ip, payload) = frame.split_at(14 + 20);
    let build = |part: &[u8], mf: bool, offset: usize| {
        let mut f = eth_ip.to_vec();
        f.extend_from_slice(part);
        let ip = &mut f[14..34];
        ip[2..4].copy_from_slice(&((20 + part.len()) as u16).to_be_bytes());
        let flags = if mf { 0x2000u16 } else { 0 } | (offset / 8) as u16;
        ip[6..8].copy_from_slice(&flags.to_be_bytes());
        ip[10] = 0;
        ip[11] = 0;
        let c = nat_common::checksum::checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f
    };
    (
        build(&payload[..at], true, 0),
        build(&payload[at..], false, at),
    )
}

/// An ICMP error of `icmp_type` quoting the first 28 bytes (IPv4 header + 8) of `about`, an
/// Ethernet frame.
pub fn icmp_error(h: &Hdr, icmp_type: etherparse::Icmpv4Type, about: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    base(h)
        .icmpv4(icmp_type)
        .write(&mut out, &about[14..14 + 28])
        .expect("build icmp error");
    out
}

/// Destination unreachable, fragmentation needed (MTU 1400).
pub fn frag_needed() -> etherparse::Icmpv4Type {
    etherparse::Icmpv4Type::DestinationUnreachable(
        etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
    )
}

/// Destination unreachable, port unreachable.
pub fn port_unreachable() -> etherparse::Icmpv4Type {
    etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port)
}

/// Time exceeded in transit.
pub fn ttl_exceeded() -> etherparse::Icmpv4Type {
    etherparse::Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit)
}

/// Destination unreachable, host unreachable (what the kernel sends when ARP gets no answer).
pub fn host_unreachable() -> etherparse::Icmpv4Type {
    etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Host)
}

/// An Ethernet ARP request from `sender` asking for `target`.
pub fn arp_request(smac: Mac, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&smac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&smac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}
