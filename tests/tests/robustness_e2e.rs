//! Floods, exhaustion, port shadowing and privileges, in namespaces with the real nat-ctl.

use etherparse::PacketBuilder;
use integration_tests::{
    daemon::NatDaemon,
    lab::{LAN_HOST_A, LAN_HOST_B, Lab, ROUTER_WAN, SERVER},
    traffic::{TcpSink, tcp_send_paced, udp_echo, udp_request},
    vpn_peers::raw_socket,
};
use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    time::Duration,
};

/// Sends `count` UDP datagrams from `src` with source ports `first_port..` to `dst`:`dport`
/// through a raw socket (IP_HDRINCL via IPPROTO_RAW), as fast as the socket takes them.
fn udp_burst(
    ns: &integration_tests::netns::Netns,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    first_port: u16,
    count: u16,
    dport: u16,
) {
    ns.run(move || {
        let s = raw_socket(255, src).unwrap();
        for i in 0..count {
            let mut pkt = Vec::new();
            PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
                .udp(first_port.wrapping_add(i), dport)
                .write(&mut pkt, b"flood")
                .unwrap();
            let _ = s.send_to(&pkt, &SocketAddr::from((dst, 0)).into());
        }
    })
    .unwrap();
}

/// A paced TCP transfer of `chunks` 32 KiB chunks from LAN host A to `sink`, with
/// `disturb` run 300 ms into it; the SHA-256 of what was sent and of what the sink echoed.
fn paced_transfer_during(
    lab: &Lab,
    sink: SocketAddrV4,
    chunks: usize,
    disturb: impl FnOnce(),
) -> ([u8; 32], [u8; 32]) {
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            tcp_send_paced(
                &lab.lan,
                LAN_HOST_A,
                sink,
                32 * 1024,
                chunks,
                Duration::from_millis(20),
            )
            .unwrap()
        });
        std::thread::sleep(Duration::from_millis(300));
        disturb();
        t.join().unwrap()
    })
}

#[test]
fn a_session_flood_from_the_lan_and_spoofers_on_the_wan_leave_established_flows_alone() {
    let lab = Lab::new("fld").unwrap();
    let nat =
        NatDaemon::start_with_config(&lab, "[tables]\nsessions = 2000\nmappings = 2000\n").unwrap();
    let sink = TcpSink::start(&lab.wan, SERVER, 5001).unwrap();
    let (sent, echoed) = paced_transfer_during(&lab, sink.addr, 80, || {
        // 10x the session table from one LAN host, then WAN spoofers at a pool port nobody
        // maps, each from its own source port.
        let start = std::time::Instant::now();
        udp_burst(&lab.lan, LAN_HOST_B, SERVER, 10000, 20000, 9);
        udp_burst(&lab.wan, SERVER, ROUTER_WAN, 10000, 20000, 20000);
        eprintln!(
            "flood: 40000 new-flow packets in {:.0} ms",
            start.elapsed().as_secs_f64() * 1000.0
        );
    });
    let (_, n, digest) = sink.finish().unwrap();
    assert_eq!(n, 32 * 1024 * 80);
    assert_eq!(
        (digest, echoed),
        (sent, sent),
        "the established transfer must survive the flood"
    );
    let stats = nat.json(&["stats"]);
    let c = |name: &str| stats["counters"][name].as_u64().unwrap();
    assert!(
        c("drop_session_table_full") + c("drop_mapping_table_full") > 10_000,
        "excess dropped and counted: {stats}"
    );
    assert!(
        c("drop_no_mapping") + c("drop_filtered") >= 1,
        "spoofed WAN traffic dropped: {stats}"
    );
    let sessions = nat.json(&["sessions"]).as_array().unwrap().len();
    assert!(sessions <= 2000, "table bounded: {sessions}");
}

#[test]
fn ports_the_router_listens_on_are_never_handed_out() {
    let lab = Lab::new("shd").unwrap();
    // The router runs its own service on UDP 5555 (and its IPsec on 4500).
    let _svc = lab
        .router
        .run(|| {
            (
                UdpSocket::bind((ROUTER_WAN, 5555)).unwrap(),
                UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 4500)).unwrap(),
            )
        })
        .unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let server = SocketAddrV4::new(SERVER, 7000);
    let echo = udp_echo(&lab.wan, server, 2).unwrap();
    for sport in [5555, 4500] {
        assert!(
            udp_request(&lab.lan, SocketAddrV4::new(LAN_HOST_A, sport), server, b"x")
                .unwrap()
                .is_some()
        );
    }
    let seen = echo.join().unwrap();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert!(
            s.port() != 5555 && s.port() != 4500,
            "a router port was handed to a LAN flow (CVE-2021-3773): {seen:?}"
        );
    }
    let _ = nat;
}

#[test]
fn without_privileges_every_command_says_so() {
    let lab = Lab::new("prv").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    for args in [
        vec!["status"],
        vec!["stats"],
        vec!["passthrough", "disable", "pptp"],
    ] {
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(integration_tests::daemon::nat_ctl_bin())
            .args(["--instance", &nat.instance])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error:") && err.contains("needs root"),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    assert_eq!(nat.json(&["passthrough"])["pptp"], "on", "nothing changed");
}

#[test]
fn an_exhausted_port_pool_refuses_new_flows_and_steals_nothing() {
    let lab = Lab::new("exh").unwrap();
    // 101 ordinary ports for the whole LAN, and no per-host limit below that: one host
    // exhausts the pool itself (the default limit, a quarter of it, is another test's).
    let nat = NatDaemon::start_with_config(
        &lab,
        "[ports]\nrange = \"20000-20100\"\n[limits]\nmappings_per_host = 1000\n",
    )
    .unwrap();
    let sink = TcpSink::start(&lab.wan, SERVER, 5001).unwrap();
    let started = std::time::Instant::now();
    let (sent, echoed) = paced_transfer_during(&lab, sink.addr, 60, || {
        udp_burst(&lab.lan, LAN_HOST_B, SERVER, 30000, 5000, 9)
    });
    let secs = started.elapsed().as_secs() as usize;
    let (_, _, digest) = sink.finish().unwrap();
    assert_eq!(
        (digest, echoed),
        (sent, sent),
        "the transfer keeps its port through the exhaustion"
    );
    assert!(
        nat.counter("drop_ports_exhausted") > 4000,
        "{}",
        nat.json(&["stats"])
    );
    let tcp = nat.json(&["sessions", "--proto", "tcp"]);
    assert_eq!(tcp.as_array().unwrap().len(), 1, "{tcp}");
    // Logged at the default level, but a line per second per CPU, not one per drop.
    let lines = nat.log().matches("drop: drop_ports_exhausted").count();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        (1..=(secs + 2) * cpus).contains(&lines),
        "{lines} log lines for the exhaustion in {secs} s on {cpus} CPUs"
    );
}

#[test]
fn one_host_flooding_udp_from_60000_ports_starves_no_other_host() {
    let lab = Lab::new("fair").unwrap();
    // The default pool and the default per-host limit: nothing configured.
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let limit = nat.json(&["status"])["port_pool"]["ordinary"]
        .as_u64()
        .unwrap()
        / 4;
    let sink = TcpSink::start(&lab.wan, SERVER, 5003).unwrap();
    // Host A (a torrent client, or a compromised host) floods UDP from 60 000 source ports
    // while host B downloads; B's new UDP, TCP and ICMP flows work during and after it.
    let (sent, echoed) = std::thread::scope(|s| {
        let transfer = s.spawn(|| {
            integration_tests::traffic::tcp_send_paced(
                &lab.lan,
                LAN_HOST_B,
                sink.addr,
                16 * 1024,
                100,
                Duration::from_millis(20),
            )
            .unwrap()
        });
        udp_burst(&lab.lan, LAN_HOST_A, SERVER, 1024, 60_000, 9);
        let echo = udp_echo(&lab.wan, SocketAddrV4::new(SERVER, 7000), 1).unwrap();
        let reply = udp_request(
            &lab.lan,
            SocketAddrV4::new(LAN_HOST_B, 45000),
            SocketAddrV4::new(SERVER, 7000),
            b"same protocol as the flood",
        )
        .unwrap();
        echo.join().unwrap();
        assert!(reply.is_some(), "B's new UDP flow during the flood");
        // (ping from B's address: A, the flooder, is at its limit for echo ids too.)
        let ping_b = lab
            .lan
            .cmd("ping")
            .args(["-c", "1", "-W", "2", "-n", "-I", &LAN_HOST_B.to_string()])
            .arg(SERVER.to_string())
            .output()
            .unwrap();
        assert!(ping_b.status.success(), "B's ping during the flood");
        transfer.join().unwrap()
    });
    let (_, _, digest) = sink.finish().unwrap();
    assert_eq!(
        (digest, echoed),
        (sent, sent),
        "B's TCP transfer across the flood"
    );
    let quota_drops = nat.counter("drop_host_quota");
    assert!(quota_drops > 0, "{}", nat.json(&["stats"]));
    assert_eq!(
        nat.counter("drop_ports_exhausted"),
        0,
        "{}",
        nat.json(&["stats"])
    );
    let a_holds = nat
        .json(&[
            "sessions",
            "--proto",
            "udp",
            "--src",
            &LAN_HOST_A.to_string(),
        ])
        .as_array()
        .unwrap()
        .len() as u64;
    assert!(
        a_holds <= limit,
        "A holds {a_holds} mappings, more than its share {limit}"
    );
    // After the flood, B opens new flows of every kind.
    let sink = TcpSink::start(&lab.wan, SERVER, 5004).unwrap();
    let data = vec![7u8; 256 * 1024];
    let hash =
        integration_tests::traffic::tcp_send(&lab.lan, LAN_HOST_B, sink.addr, &data).unwrap();
    assert_eq!(
        sink.finish().unwrap().2,
        hash,
        "a new TCP flow of B after the flood"
    );
}

/// With `[limits] icmp_prohibited`, an application whose new flow the NAT refuses learns it at
/// once: the ICMP administratively prohibited error reaches the LAN host's kernel, which
/// fails the connected socket with "no route to host" (EHOSTUNREACH) instead of leaving it
/// waiting. Without the setting the datagram is only dropped.
#[test]
fn a_refused_flow_fails_at_once_with_no_route_to_host_when_configured() {
    for (toml, told) in [
        (
            "[limits]\nmappings_per_host = 1\nicmp_prohibited = true\n",
            true,
        ),
        ("[limits]\nmappings_per_host = 1\n", false),
    ] {
        let lab = Lab::new("ap").unwrap();
        let nat = NatDaemon::start_with_config(&lab, toml).unwrap();
        let server = SocketAddrV4::new(SERVER, 7000);
        let echo = udp_echo(&lab.wan, server, 1).unwrap();
        let first = udp_request(&lab.lan, SocketAddrV4::new(LAN_HOST_A, 40000), server, b"x");
        assert!(first.unwrap().is_some(), "the host's one mapping works");
        echo.join().unwrap();
        let err = lab
            .lan
            .run(move || {
                let s = UdpSocket::bind(SocketAddrV4::new(LAN_HOST_A, 40001)).unwrap();
                s.connect(server).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                s.send(b"refused").unwrap();
                let mut buf = [0u8; 64];
                s.recv(&mut buf).unwrap_err()
            })
            .unwrap();
        if told {
            assert_eq!(err.raw_os_error(), Some(libc::EHOSTUNREACH), "{err}");
            assert_eq!(nat.counter("icmp_prohibited_sent"), 1);
        } else {
            assert!(
                matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{err}"
            );
        }
        assert_eq!(nat.counter("drop_host_quota"), 1);
    }
}
