//! Crafted VPN endpoints for the namespace tests (the kernel here has no GRE, ESP, PPP or
//! L2TP modules): a small PPTP control server that answers calls and sends GRE, clients that
//! place calls, and raw-socket GRE/ESP senders and receivers.

use anyhow::{Context as _, Result, bail};
use socket2::{Domain, Protocol, Socket, Type};
use std::{
    io::{Read, Write},
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use crate::{
    netns::Netns,
    packets::{gre_v1, pptp_ctrl, pptp_ids},
    traffic::{IO_TIMEOUT, SHORT_TIMEOUT, accept_timeout},
};
use nat_common::vpn::{PPTP_OUT_CALL_REPLY, PPTP_OUT_CALL_REQUEST};

const START_CONTROL_REQUEST: u16 = 1;
const START_CONTROL_REPLY: u16 = 2;

/// A raw IPv4 socket for IP protocol `proto`, bound to `local` (so it only sees packets for
/// that address). Must be created on a thread inside the namespace.
pub fn raw_socket(proto: u8, local: Ipv4Addr) -> Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(proto as i32)))?;
    s.bind(&SocketAddr::from((local, 0)).into())
        .with_context(|| format!("bind raw {proto} to {local}"))?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s)
}

/// Sends `payload` as IP protocol `proto` from the socket's address to `dst`.
pub fn raw_send(s: &Socket, dst: Ipv4Addr, payload: &[u8]) -> Result<()> {
    s.send_to(payload, &SocketAddr::from((dst, 0)).into())?;
    Ok(())
}

/// One packet of a raw IPv4 socket, if one arrives before the socket's read timeout:
/// (source, IP payload).
fn raw_recv_one(s: &Socket) -> Option<(Ipv4Addr, Vec<u8>)> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    let n = s.recv(&mut buf).ok()?;
    // SAFETY: recv initialised the first n bytes.
    let b: Vec<u8> = buf[..n]
        .iter()
        .map(|x| unsafe { x.assume_init() })
        .collect();
    let ihl = ((b[0] & 0x0f) as usize) * 4;
    Some((Ipv4Addr::new(b[12], b[13], b[14], b[15]), b[ihl..].to_vec()))
}

/// Packets received within `wait`: (source, IP payload).
pub fn raw_recv_all(s: &Socket, wait: Duration) -> Vec<(Ipv4Addr, Vec<u8>)> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        got.extend(raw_recv_one(s));
    }
    got
}

/// The first packet received within `wait`, as soon as it arrives: (source, IP payload).
pub fn raw_recv_first(s: &Socket, wait: Duration) -> Option<(Ipv4Addr, Vec<u8>)> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Some(p) = raw_recv_one(s) {
            return Some(p);
        }
    }
    None
}

fn read_message(s: &mut TcpStream) -> Result<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let len = u16::from_be_bytes(len) as usize;
    if len < 16 {
        bail!("control message of length {len}");
    }
    let mut m = vec![0u8; len];
    m[..2].copy_from_slice(&(len as u16).to_be_bytes());
    s.read_exact(&mut m[2..])?;
    Ok(m)
}

fn ctrl_type(m: &[u8]) -> u16 {
    u16::from_be_bytes([m[8], m[9]])
}

/// Start-Control-Connection-Request/Reply as RFC 2637 2.1/2.2 lays them out: protocol
/// version 1.0, result code 1 (success) in the reply, framing/bearer capabilities, a host
/// name. Stateful inspectors (nf_conntrack_pptp) need these.
fn start_control(reply: bool) -> Vec<u8> {
    let mut m = pptp_ctrl(
        if reply {
            START_CONTROL_REPLY
        } else {
            START_CONTROL_REQUEST
        },
        0x0100,
        0,
    );
    if reply {
        m[14] = 1; // result code: successful channel establishment
    }
    m[16..20].copy_from_slice(&3u32.to_be_bytes()); // framing: async + sync
    m[20..24].copy_from_slice(&3u32.to_be_bytes()); // bearer: analog + digital
    m[24..26].copy_from_slice(&1u16.to_be_bytes()); // maximum channels
    m[28..28 + 7].copy_from_slice(b"xdp-nat");
    m
}

/// Outgoing-Call-Request (RFC 2637 2.7) with `call_id` and a serial number.
fn call_request(call_id: u16) -> Vec<u8> {
    let mut m = pptp_ctrl(PPTP_OUT_CALL_REQUEST, call_id, call_id);
    m[16..20].copy_from_slice(&300u32.to_be_bytes()); // minimum bps
    m[20..24].copy_from_slice(&100_000_000u32.to_be_bytes()); // maximum bps
    m[24..28].copy_from_slice(&3u32.to_be_bytes()); // bearer type
    m[28..32].copy_from_slice(&3u32.to_be_bytes()); // framing type
    m[32..34].copy_from_slice(&64u16.to_be_bytes()); // receive window
    m
}

/// Outgoing-Call-Reply (RFC 2637 2.8): result code 1 (connected).
fn call_reply(server_call_id: u16, peer_call_id: u16) -> Vec<u8> {
    let mut m = pptp_ctrl(PPTP_OUT_CALL_REPLY, server_call_id, peer_call_id);
    m[16] = 1; // result code: connected
    m[20..24].copy_from_slice(&100_000_000u32.to_be_bytes()); // connect speed
    m[24..26].copy_from_slice(&64u16.to_be_bytes()); // receive window
    m
}

/// What the PPTP server saw of one call.
#[derive(Debug, Clone)]
pub struct ServerCall {
    pub peer: SocketAddr,
    /// The call id the client's Outgoing-Call-Request carried, as the server received it.
    pub peer_call_id: u16,
    pub server_call_id: u16,
    /// GRE the server received for its call id: (source, client's GRE payload).
    pub gre_from_client: Vec<(Ipv4Addr, Vec<u8>)>,
}

/// Runs a PPTP server (PAC) on `addr`:1723 for `clients` control connections, one call each:
/// answers Start-Control-Connection and Outgoing-Call-Request, sends three GRE packets to
/// the caller's call id, and collects the GRE the caller sends back.
pub fn pptp_server(
    ns: &Netns,
    addr: Ipv4Addr,
    clients: usize,
) -> Result<std::thread::JoinHandle<Result<Vec<ServerCall>>>> {
    let listener = ns.run(move || TcpListener::bind((addr, 1723)))??;
    let gre = ns.run(move || raw_socket(nat_common::proto::IPPROTO_GRE, addr))??;
    Ok(std::thread::spawn(move || {
        let mut calls = Vec::new();
        let mut conns = Vec::new();
        for i in 0..clients {
            let (mut c, peer) = accept_timeout(&listener, IO_TIMEOUT)?;
            c.set_read_timeout(Some(IO_TIMEOUT))?;
            let m = read_message(&mut c)?;
            if ctrl_type(&m) != START_CONTROL_REQUEST {
                bail!(
                    "expected Start-Control-Connection-Request, got type {}",
                    ctrl_type(&m)
                );
            }
            c.write_all(&start_control(true))?;
            let m = read_message(&mut c)?;
            if ctrl_type(&m) != PPTP_OUT_CALL_REQUEST {
                bail!("expected Outgoing-Call-Request, got type {}", ctrl_type(&m));
            }
            let (peer_call_id, _) = pptp_ids(&m);
            let server_call_id = 100 + i as u16;
            c.write_all(&call_reply(server_call_id, peer_call_id))?;
            let SocketAddr::V4(p) = peer else {
                bail!("IPv6 peer")
            };
            for seq in 0..3 {
                raw_send(
                    &gre,
                    *p.ip(),
                    &gre_v1(
                        peer_call_id,
                        seq,
                        format!("to call {peer_call_id}").as_bytes(),
                    ),
                )?;
            }
            calls.push(ServerCall {
                peer,
                peer_call_id,
                server_call_id,
                gre_from_client: Vec::new(),
            });
            conns.push(c);
        }
        let got = raw_recv_all(&gre, Duration::from_secs(2));
        for call in &mut calls {
            call.gre_from_client = got
                .iter()
                .filter(|(_, g)| {
                    g.len() >= 8 && u16::from_be_bytes([g[6], g[7]]) == call.server_call_id
                })
                .cloned()
                .collect();
        }
        Ok(calls)
    }))
}

/// What a PPTP client saw.
#[derive(Debug)]
pub struct ClientCall {
    /// The server's call id and the peer call id (ours, as translated back) from the reply.
    pub server_call_id: u16,
    pub reply_peer_call_id: u16,
    /// GRE received: (source, call id in the key, payload).
    pub gre: Vec<(Ipv4Addr, u16, Vec<u8>)>,
}

/// Places one call with `call_id` from `local` to the server, then answers with one GRE
/// packet to the server's call id. Runs inside `ns`.
pub fn pptp_client(
    ns: &Netns,
    local: Ipv4Addr,
    server: Ipv4Addr,
    call_id: u16,
) -> Result<ClientCall> {
    ns.run(move || -> Result<ClientCall> {
        let gre = raw_socket(nat_common::proto::IPPROTO_GRE, local)?;
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        s.bind(&SocketAddr::from((local, 0)).into())?;
        s.connect_timeout(
            &SocketAddr::V4(SocketAddrV4::new(server, 1723)).into(),
            SHORT_TIMEOUT,
        )?;
        let mut c: TcpStream = s.into();
        c.set_read_timeout(Some(IO_TIMEOUT))?;
        c.write_all(&start_control(false))?;
        let m = read_message(&mut c)?;
        if ctrl_type(&m) != START_CONTROL_REPLY {
            bail!("expected Start-Control-Connection-Reply");
        }
        c.write_all(&call_request(call_id))?;
        let m = read_message(&mut c)?;
        if ctrl_type(&m) != PPTP_OUT_CALL_REPLY {
            bail!("expected Outgoing-Call-Reply");
        }
        let (server_call_id, reply_peer_call_id) = pptp_ids(&m);
        raw_send(&gre, server, &gre_v1(server_call_id, 0, b"from client"))?;
        let got = raw_recv_all(&gre, Duration::from_secs(1));
        let gre = got
            .into_iter()
            .filter(|(_, g)| g.len() >= 8)
            .map(|(src, g)| (src, u16::from_be_bytes([g[6], g[7]]), g[12..].to_vec()))
            .collect();
        drop(c);
        Ok(ClientCall {
            server_call_id,
            reply_peer_call_id,
            gre,
        })
    })?
}
