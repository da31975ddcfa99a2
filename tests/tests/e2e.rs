//! Network-namespace end-to-end tests: LAN hosts - router (XDP NAT, the real nat-ctl) - WAN
//! server on veth, real sockets.

use integration_tests::{
    daemon::NatDaemon,
    lab::{LAN_HOST_A, LAN_HOST_B, Lab, ROUTER_WAN, SERVER},
    traffic::{TcpSink, accept_timeout, ping, ping_sized, sha256, tcp_send, udp_echo, udp_request},
};
use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket},
    time::Duration,
};

#[test]
fn ping_goes_through_the_nat() {
    let lab = Lab::new("png").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    assert!(
        ping(&lab.lan, SERVER, 3).unwrap(),
        "ping through the NAT failed; log: {}",
        nat.log()
    );
    let sessions = nat.json(&["sessions", "--proto", "icmp"]);
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
    assert!(nat.counter("in_redirected") >= 3);
}

#[test]
fn tcp_transfer_of_several_megabytes_arrives_intact_from_the_wan_address() {
    let lab = Lab::new("tcp").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let sink = TcpSink::start(&lab.wan, SERVER, 5001).unwrap();
    let hash_from_server = tcp_send(&lab.lan, LAN_HOST_A, sink.addr, &data).unwrap();
    let (peer, n, digest) = sink.finish().unwrap();
    assert_eq!(n, data.len());
    assert_eq!(digest, sha256(&data), "server received different bytes");
    assert_eq!(
        hash_from_server,
        sha256(&data),
        "client got a different hash back"
    );
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(ROUTER_WAN),
        "server must see the WAN address"
    );
    // The bulk of it went through XDP, not the kernel's forwarding path.
    assert!(
        nat.counter("out_redirected") > 1000,
        "stats: {}",
        nat.json(&["stats"])
    );
}

#[test]
fn udp_request_response() {
    let lab = Lab::new("udp").unwrap();
    let _nat = NatDaemon::start(&lab, &[]).unwrap();
    let server = SocketAddrV4::new(SERVER, 7000);
    let echo = udp_echo(&lab.wan, server, 3).unwrap();
    for i in 0..3 {
        let msg = format!("hello {i}");
        let reply = udp_request(
            &lab.lan,
            SocketAddrV4::new(LAN_HOST_A, 0),
            server,
            msg.as_bytes(),
        )
        .unwrap();
        assert_eq!(reply.as_deref(), Some(format!("echo:{msg}").as_bytes()));
    }
    let seen = echo.join().unwrap();
    assert!(
        seen.iter()
            .all(|s| s.ip() == std::net::IpAddr::V4(ROUTER_WAN)),
        "{seen:?}"
    );
}

#[test]
fn two_lan_hosts_with_the_same_source_port_at_once() {
    let lab = Lab::new("two").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let server = SocketAddrV4::new(SERVER, 7000);
    let echo = udp_echo(&lab.wan, server, 2).unwrap();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            udp_request(&lab.lan, SocketAddrV4::new(LAN_HOST_A, 20000), server, b"A").unwrap()
        });
        let b = s.spawn(|| {
            udp_request(&lab.lan, SocketAddrV4::new(LAN_HOST_B, 20000), server, b"B").unwrap()
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a.as_deref(), Some(&b"echo:A"[..]));
    assert_eq!(b.as_deref(), Some(&b"echo:B"[..]));
    let seen = echo.join().unwrap();
    assert_eq!(seen.len(), 2);
    assert_ne!(
        seen[0].port(),
        seen[1].port(),
        "each host needs its own external port: {seen:?}"
    );
    assert!(
        seen.iter().any(|s| s.port() == 20000),
        "the free source port is kept: {seen:?}"
    );
    let sessions = nat.json(&["sessions", "--proto", "udp"]);
    assert_eq!(sessions.as_array().unwrap().len(), 2, "{sessions}");
}

#[test]
fn unsolicited_inbound_tcp_syn_and_udp_never_reach_the_lan() {
    let lab = Lab::new("uns").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    // LAN host listens; an attacker on the WAN knows its address and routes it to us.
    let tcp = lab
        .lan
        .run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 7000)))
        .unwrap()
        .unwrap();
    let udp = lab
        .lan
        .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 7001)))
        .unwrap()
        .unwrap();
    lab.wan
        .ip(&[
            "route",
            "add",
            "192.168.1.0/24",
            "via",
            &ROUTER_WAN.to_string(),
        ])
        .unwrap();
    for dst in [ROUTER_WAN, LAN_HOST_A] {
        let _ = lab.wan.run(move || {
            let s = UdpSocket::bind((SERVER, 0)).unwrap();
            s.send_to(b"unsolicited", (dst, 7001)).unwrap();
            // A SYN; the connect itself must fail (dropped, so it times out).
            std::net::TcpStream::connect_timeout(
                &SocketAddrV4::new(dst, 7000).into(),
                Duration::from_millis(700),
            )
            .is_ok()
        });
    }
    assert!(
        accept_timeout(&tcp, Duration::from_secs(1)).is_err(),
        "a SYN reached the LAN"
    );
    udp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        udp.recv_from(&mut buf).is_err(),
        "a datagram reached the LAN"
    );
    assert!(
        nat.counter("drop_no_mapping") >= 2,
        "{}",
        nat.json(&["stats"])
    );
    assert!(
        nat.counter("drop_to_lan_address") >= 2,
        "{}",
        nat.json(&["stats"])
    );
}

#[test]
fn status_sessions_and_stats_work_from_another_shell() {
    let lab = Lab::new("cli").unwrap();
    let mut nat = NatDaemon::start(&lab, &[]).unwrap();
    let server = SocketAddrV4::new(SERVER, 7000);
    let echo = udp_echo(&lab.wan, server, 1).unwrap();
    udp_request(&lab.lan, SocketAddrV4::new(LAN_HOST_A, 21000), server, b"x")
        .unwrap()
        .expect("reply");
    echo.join().unwrap();

    let st = nat.json(&["status"]);
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["wan"]["address"], "203.0.113.1");
    assert_eq!(st["lan"]["interface"], "lan0");
    assert!(
        st["lan"]["program_id"].as_u64().is_some() && st["wan"]["program_id"].as_u64().is_some()
    );
    assert_eq!(st["sessions"]["by_protocol"]["udp"], 1);

    let sessions = nat.json(&["sessions", "--proto", "UDP"]);
    let s = &sessions[0];
    assert_eq!(s["internal"], "192.168.1.2:21000");
    assert_eq!(s["remote"], "203.0.113.2:7000");
    assert_eq!(s["external"], "203.0.113.1:21000");
    assert!(s["expires_in"].as_u64().unwrap() > 290);
    let human = String::from_utf8(nat.ctl(&["sessions"]).stdout).unwrap();
    assert!(
        human.contains("src=192.168.1.2:21000 dst=203.0.113.2:7000 ext=203.0.113.1:21000"),
        "{human}"
    );

    let stats = nat.json(&["stats"]);
    for c in nat_common::counters::Counter::ALL {
        assert!(
            stats["counters"][c.name()].is_u64(),
            "counter {} missing",
            c.name()
        );
    }
    assert!(stats["counters"]["session_created"].as_u64().unwrap() >= 1);

    // Stopped with --detach-on-exit: nothing left, status says so with exit 1.
    assert!(nat.stop().unwrap().success(), "log: {}", nat.log());
    let out = nat.ctl(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: no xdp-nat instance"));
}

#[test]
fn nat_keeps_forwarding_without_its_daemon_and_a_restart_adopts_the_sessions() {
    let lab = Lab::new("rst").unwrap();
    let instance = integration_tests::unique("keep");
    let mut first = NatDaemon::start_instance(&lab, &instance, &[]).unwrap();
    let server = SocketAddrV4::new(SERVER, 7000);
    let echo = udp_echo(&lab.wan, server, 2).unwrap();
    assert!(
        udp_request(&lab.lan, SocketAddrV4::new(LAN_HOST_A, 22000), server, b"1")
            .unwrap()
            .is_some()
    );
    assert!(
        first
            .ctl(&["passthrough", "disable", "l2tp"])
            .status
            .success()
    );
    assert!(first.stop().unwrap().success());

    // No daemon: status exits 3, the NAT still translates.
    assert_eq!(first.ctl(&["status"]).status.code(), Some(3));
    assert!(
        udp_request(&lab.lan, SocketAddrV4::new(LAN_HOST_A, 22000), server, b"2")
            .unwrap()
            .is_some()
    );
    echo.join().unwrap();

    let second = NatDaemon::start_instance(&lab, &instance, &["--detach-on-exit"]).unwrap();
    assert!(
        second.log().contains("1 sessions adopted"),
        "log: {}",
        second.log()
    );
    let sessions = second.json(&["sessions"]);
    assert_eq!(sessions[0]["external"], "203.0.113.1:22000", "{sessions}");
    assert_eq!(
        second.json(&["passthrough"])["l2tp"],
        "off",
        "an adopting daemon keeps the pinned switches"
    );
    drop(first);
}

#[test]
fn fragmented_datagrams_cross_the_nat_both_ways() {
    let lab = Lab::new("frag").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let server = SocketAddrV4::new(SERVER, 7000);
    let echo = udp_echo(&lab.wan, server, 1).unwrap();
    // 4000 bytes over a 1500-byte MTU: three fragments each way.
    let big: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let reply = udp_request(&lab.lan, SocketAddrV4::new(LAN_HOST_A, 0), server, &big).unwrap();
    let mut want = b"echo:".to_vec();
    want.extend_from_slice(&big);
    assert_eq!(reply, Some(want), "log: {}", nat.log());
    echo.join().unwrap();
    assert!(
        ping_sized(&lab.lan, SERVER, 2, 3000).unwrap(),
        "fragmented ping"
    );
    assert!(
        nat.counter("fragments_translated") >= 8,
        "{}",
        nat.json(&["stats"])
    );
    assert_eq!(nat.counter("drop_fragment_before_first"), 0);
}

/// LAN - NAT - WAN router - far server (198.51.100.10) behind a 1280-byte MTU link: the
/// WAN router's ICMP errors must reach the LAN host translated.
fn far_lab() -> (Lab, integration_tests::netns::Netns) {
    let lab = Lab::new("far").unwrap();
    let far = lab.far().unwrap();
    (lab, far)
}

#[test]
fn traceroute_and_path_mtu_discovery_work_through_the_nat() {
    let (lab, _far) = far_lab();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    assert!(
        ping(&lab.lan, Ipv4Addr::new(198, 51, 100, 10), 1).unwrap(),
        "far server reachable"
    );

    // TTL 2: the NAT forwards with TTL 1, the WAN router answers Time Exceeded.
    let out = lab
        .lan
        .cmd("ping")
        .args(["-c", "1", "-t", "2", "-W", "2", "-n", "198.51.100.10"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("From 203.0.113.2") && text.contains("Time to live exceeded"),
        "ping -t 2: {text}"
    );

    // 1400 bytes with DF over the 1280 link: Fragmentation Needed comes back, and the LAN
    // host learns the path MTU.
    let out = lab
        .lan
        .cmd("ping")
        .args([
            "-c",
            "2",
            "-M",
            "do",
            "-s",
            "1400",
            "-W",
            "2",
            "-n",
            "198.51.100.10",
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("mtu = 1280") || text.contains("mtu=1280"),
        "PMTU: {text}"
    );
    assert!(
        nat.counter("icmp_error_translated") >= 2,
        "{}",
        nat.json(&["stats"])
    );
}

#[test]
fn hairpinning_between_two_lan_hosts() {
    let lab = Lab::new("hp").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    // A gets a mapping by talking to the server from port 21000.
    let a = lab
        .lan
        .run(|| UdpSocket::bind((LAN_HOST_A, 21000)))
        .unwrap()
        .unwrap();
    a.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let echo = udp_echo(&lab.wan, SocketAddrV4::new(SERVER, 7000), 1).unwrap();
    a.send_to(b"hello server", (SERVER, 7000)).unwrap();
    let mut buf = [0u8; 100];
    a.recv_from(&mut buf).unwrap();
    echo.join().unwrap();
    // B reaches A through the external address, and A answers it there.
    let b = lab
        .lan
        .run(|| UdpSocket::bind((LAN_HOST_B, 0)))
        .unwrap()
        .unwrap();
    b.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    b.send_to(b"hi A", (ROUTER_WAN, 21000)).unwrap();
    let (n, from) = a.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hi A");
    assert_eq!(
        from.ip(),
        std::net::IpAddr::V4(ROUTER_WAN),
        "A must see B's external address, not {from}"
    );
    a.send_to(b"hi B", from).unwrap();
    let (n, from) = b.recv_from(&mut buf).unwrap();
    assert_eq!(
        (&buf[..n], from.to_string()),
        (&b"hi B"[..], "203.0.113.1:21000".to_string())
    );
    assert!(nat.counter("hairpin_translated") >= 2);
}

/// Does a datagram from `from` (an address of the WAN namespace) to the mapping reach
/// LAN host A's socket?
fn reaches_a(lab: &Lab, a: &UdpSocket, ext: SocketAddrV4, from: SocketAddrV4) -> bool {
    lab.wan
        .run(move || {
            UdpSocket::bind(from)
                .unwrap()
                .send_to(b"probe", ext)
                .unwrap()
        })
        .unwrap();
    let mut buf = [0u8; 16];
    a.recv_from(&mut buf).is_ok()
}

#[test]
fn each_filtering_mode_observed_from_two_wan_addresses() {
    let other = Ipv4Addr::new(198, 51, 100, 2);
    // (mode, same host other port, other host)
    for (mode, same_host, other_host) in [
        ("endpoint-independent", true, true),
        ("address-dependent", true, false),
        ("address-and-port-dependent", false, false),
    ] {
        let lab = Lab::new("flt").unwrap();
        lab.wan
            .ip(&["addr", "add", &format!("{other}/24"), "dev", "eth0"])
            .unwrap();
        lab.router
            .ip(&[
                "route",
                "add",
                "198.51.100.0/24",
                "via",
                &SERVER.to_string(),
            ])
            .unwrap();
        let _nat =
            NatDaemon::start_with_config(&lab, &format!("filtering = \"{mode}\"\n")).unwrap();
        let a = lab
            .lan
            .run(|| UdpSocket::bind((LAN_HOST_A, 28000)))
            .unwrap()
            .unwrap();
        a.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        // A talks to 203.0.113.2:7000; its mapping is 203.0.113.1:28000.
        let srv = lab
            .wan
            .run(|| UdpSocket::bind((SERVER, 7000)))
            .unwrap()
            .unwrap();
        srv.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        a.send_to(b"hello", (SERVER, 7000)).unwrap();
        let mut buf = [0u8; 16];
        let (_, ext) = srv.recv_from(&mut buf).unwrap();
        let std::net::SocketAddr::V4(ext) = ext else {
            unreachable!()
        };
        srv.send_to(b"reply", ext).unwrap();
        assert!(a.recv_from(&mut buf).is_ok(), "{mode}: the remote itself");
        assert_eq!(
            reaches_a(&lab, &a, ext, SocketAddrV4::new(SERVER, 7001)),
            same_host,
            "{mode}: same host, other port"
        );
        assert_eq!(
            reaches_a(&lab, &a, ext, SocketAddrV4::new(other, 7000)),
            other_host,
            "{mode}: another host"
        );
    }
}
