//! Real-socket traffic for the end-to-end tests and the demo, each call bounded in time.

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};
use socket2::{Domain, Protocol, Socket, Type};
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use crate::netns::Netns;

pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for something that may rightly never come (a reply to blocked traffic).
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(2);

/// `ping -c N` from `ns`; true when every echo got its reply.
pub fn ping(ns: &Netns, dst: Ipv4Addr, count: u32) -> Result<bool> {
    ping_sized(ns, dst, count, 56)
}

/// `ping -c N -s SIZE`: sizes above the MTU send fragmented echoes.
pub fn ping_sized(ns: &Netns, dst: Ipv4Addr, count: u32, size: u32) -> Result<bool> {
    let (count, size, dst) = (count.to_string(), size.to_string(), dst.to_string());
    let out = ns
        .cmd("ping")
        .args([
            "-c", &count, "-s", &size, "-i", "0.2", "-W", "2", "-n", &dst,
        ])
        .output()
        .context("running ping")?;
    Ok(out.status.success())
}

/// A TCP sink in `ns` on `port`: accepts one connection, hashes everything it receives,
/// sends the hash back, and reports (peer, bytes, hash).
pub struct TcpSink {
    pub addr: SocketAddrV4,
    handle: std::thread::JoinHandle<Result<(SocketAddr, usize, [u8; 32])>>,
}

impl TcpSink {
    pub fn start(ns: &Netns, bind: Ipv4Addr, port: u16) -> Result<TcpSink> {
        let listener = ns.run(move || TcpListener::bind((bind, port)))??;
        listener.set_nonblocking(false)?;
        let addr = SocketAddrV4::new(bind, port);
        let handle = std::thread::spawn(move || -> Result<_> {
            let (mut conn, peer) = accept_timeout(&listener, IO_TIMEOUT)?;
            conn.set_read_timeout(Some(IO_TIMEOUT))?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0;
            loop {
                let got = conn.read(&mut buf)?;
                if got == 0 {
                    break;
                }
                h.update(&buf[..got]);
                n += got;
            }
            let digest: [u8; 32] = h.finalize().into();
            conn.write_all(&digest)?;
            Ok((peer, n, digest))
        });
        Ok(TcpSink { addr, handle })
    }

    pub fn finish(self) -> Result<(SocketAddr, usize, [u8; 32])> {
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("sink thread panicked"))?
    }
}

/// Accepts one connection or fails after `timeout`.
pub fn accept_timeout(l: &TcpListener, timeout: Duration) -> Result<(TcpStream, SocketAddr)> {
    l.set_nonblocking(true)?;
    let got = crate::wait_for(timeout, || match l.accept() {
        Ok(c) => Some(Ok(c)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => Some(Err(e)),
    });
    let (s, peer) = got.context("no connection arrived")??;
    s.set_nonblocking(false)?;
    Ok((s, peer))
}

/// Sends `data` from `ns` (bound to `src`) to the sink and returns the sink's hash of it.
pub fn tcp_send(ns: &Netns, src: Ipv4Addr, dst: SocketAddrV4, data: &[u8]) -> Result<[u8; 32]> {
    let data = data.to_vec();
    ns.run(move || -> Result<[u8; 32]> {
        let sock = bind_tcp(src)?;
        let mut s = connect_timeout(sock, dst)?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.write_all(&data)?;
        s.shutdown(Shutdown::Write)?;
        let mut digest = [0u8; 32];
        s.read_exact(&mut digest)
            .context("reading the sink's hash")?;
        Ok(digest)
    })?
}

/// A TCP socket bound to `src` (std cannot bind before connecting).
fn bind_tcp(src: Ipv4Addr) -> Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SocketAddr::from((src, 0)).into())
        .with_context(|| format!("bind {src}"))?;
    Ok(s)
}

fn connect_timeout(sock: Socket, dst: SocketAddrV4) -> Result<TcpStream> {
    sock.connect_timeout(&SocketAddr::V4(dst).into(), IO_TIMEOUT)
        .with_context(|| format!("connect {dst}"))?;
    Ok(sock.into())
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A UDP echo server in `ns`: answers each datagram with "echo:" + payload, reporting
/// the sources it saw, until `count` datagrams arrived or time ran out.
pub fn udp_echo(
    ns: &Netns,
    bind: SocketAddrV4,
    count: usize,
) -> Result<std::thread::JoinHandle<Vec<SocketAddr>>> {
    udp_echo_idle(ns, bind, count, SHORT_TIMEOUT)
}

/// `udp_echo` that gives up after `idle` without a datagram: longer than SHORT_TIMEOUT when
/// a client may retry after a request that went unanswered (the client waits SHORT_TIMEOUT
/// for the answer, and the server must still be there for its retry).
pub fn udp_echo_idle(
    ns: &Netns,
    bind: SocketAddrV4,
    count: usize,
    idle: Duration,
) -> Result<std::thread::JoinHandle<Vec<SocketAddr>>> {
    let sock = ns.run(move || UdpSocket::bind(bind))??;
    sock.set_read_timeout(Some(idle))?;
    Ok(std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 65536];
        while seen.len() < count {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                break;
            };
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = sock.send_to(&reply, from);
            seen.push(from);
        }
        seen
    }))
}

/// Sends `payload` from `src` to `dst` over UDP in `ns` and returns the reply, if any.
pub fn udp_request(
    ns: &Netns,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Result<Option<Vec<u8>>> {
    let payload = payload.to_vec();
    ns.run(move || -> Result<Option<Vec<u8>>> {
        let s = UdpSocket::bind(src)?;
        s.set_read_timeout(Some(SHORT_TIMEOUT))?;
        s.send_to(&payload, dst)?;
        let mut buf = vec![0u8; 65536];
        loop {
            match s.recv_from(&mut buf) {
                Ok((n, _)) => return Ok(Some(buf[..n].to_vec())),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                // A signal to the test process (a child's exit) is not an answer: wait on.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    })?
}

/// Sends `chunks` chunks of `chunk` bytes from `src` to the sink, pausing `pause` between
/// them, so the transfer lasts while the test does something else; returns the SHA-256 of
/// what was sent and the sink's hash of what it got.
pub fn tcp_send_paced(
    ns: &Netns,
    src: Ipv4Addr,
    dst: SocketAddrV4,
    chunk: usize,
    chunks: usize,
    pause: Duration,
) -> Result<([u8; 32], [u8; 32])> {
    ns.run(move || -> Result<([u8; 32], [u8; 32])> {
        let sock = bind_tcp(src)?;
        let mut s = connect_timeout(sock, dst)?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut h = Sha256::new();
        for i in 0..chunks {
            let data: Vec<u8> = (0..chunk).map(|j| ((i * 31 + j) % 251) as u8).collect();
            s.write_all(&data)?;
            h.update(&data);
            std::thread::sleep(pause);
        }
        s.shutdown(Shutdown::Write)?;
        let mut digest = [0u8; 32];
        s.read_exact(&mut digest)
            .context("reading the sink's hash")?;
        Ok((h.finalize().into(), digest))
    })?
}

/// A UDP socket bound to `bind` in `ns` (it stays there), its reads timing out after `timeout`.
pub fn udp_socket(ns: &Netns, bind: SocketAddrV4, timeout: Duration) -> Result<UdpSocket> {
    let s = ns.run(move || UdpSocket::bind(bind))??;
    s.set_read_timeout(Some(timeout))?;
    Ok(s)
}

/// One datagram from `src` (any port) to `dst`, sent in `ns`.
pub fn udp_send(ns: &Netns, src: Ipv4Addr, dst: SocketAddrV4, payload: &[u8]) -> Result<()> {
    let payload = payload.to_vec();
    ns.run(move || UdpSocket::bind((src, 0))?.send_to(&payload, dst))??;
    Ok(())
}

/// A TCP connection from `ns` to `dst`, or the error after SHORT_TIMEOUT (a forward that is
/// not there, a source it refuses).
pub fn tcp_connect(ns: &Netns, dst: SocketAddrV4) -> Result<std::io::Result<TcpStream>> {
    ns.run(move || TcpStream::connect_timeout(&SocketAddr::V4(dst), SHORT_TIMEOUT))
}
