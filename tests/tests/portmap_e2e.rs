//! NAT-PMP and PCP end to end: the real nat-ctl with `[port_mapping] pcp = true`, the
//! NAT-PMP client people use (natpmpc, Debian's libnatpmp) and a PCP client of the tests'
//! own (RFC 6887 MAP, written from the RFC), LAN hosts asking and WAN hosts coming in.

use integration_tests::{
    daemon::NatDaemon,
    lab::{LAN_HOST_A, LAN_HOST_B, Lab, ROUTER_LAN, ROUTER_WAN, SERVER},
    netns::Netns,
    traffic::{TcpSink, sha256, tcp_connect, tcp_send, udp_echo, udp_request},
    wait_for,
};
use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    time::Duration,
};

const CONFIG: &str = "[port_mapping]\npcp = true\n";

/// `natpmpc -g ROUTER_LAN ARGS` in `ns`: (success, stdout).
fn natpmpc(ns: &Netns, args: &[&str]) -> (bool, String) {
    let out = ns
        .cmd("timeout")
        .args(["10", "natpmpc", "-g", &ROUTER_LAN.to_string()])
        .args(args)
        .output()
        .expect("natpmpc");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Waits until the daemon answers NAT-PMP on the LAN.
fn until_served(lab: &Lab, nat: &NatDaemon) {
    let up = wait_for(Duration::from_secs(10), || {
        let (ok, out) = natpmpc(&lab.lan, &[]);
        (ok && out.contains(&format!("Public IP address : {ROUTER_WAN}"))).then_some(())
    });
    assert!(up.is_some(), "no NAT-PMP answer; log: {}", nat.log());
}

#[test]
fn natpmpc_maps_a_port_that_a_wan_client_reaches_and_deletes_it() {
    let lab = Lab::new("pmnat").unwrap();
    let nat = NatDaemon::start_with_config(&lab, CONFIG).unwrap();
    until_served(&lab, &nat);
    // natpmpc asks from the LAN namespace's first address, host A.
    let (ok, out) = natpmpc(&lab.lan, &["-a", "8085", "85", "tcp", "600"]);
    assert!(ok, "{out}; log: {}", nat.log());
    assert!(
        out.contains("Mapped public port 8085 protocol TCP to local port 85"),
        "{out}"
    );
    let list = nat.json(&["forward"]);
    assert_eq!(list[0]["origin"], "nat-pmp", "{list}");
    assert_eq!(list[0]["to"], LAN_HOST_A.to_string(), "{list}");
    let left = list[0]["expires_in"].as_u64().unwrap();
    assert!((590..=600).contains(&left), "{list}");

    let sink = TcpSink::start(&lab.lan, LAN_HOST_A, 85).unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    let hash = tcp_send(
        &lab.wan,
        SERVER,
        SocketAddrV4::new(ROUTER_WAN, 8085),
        &payload,
    )
    .unwrap_or_else(|e| panic!("{e:#}; log: {}", nat.log()));
    let (peer, _, digest) = sink.finish().unwrap();
    assert_eq!((hash, digest), (sha256(&payload), sha256(&payload)));
    assert_eq!(peer.ip(), std::net::IpAddr::V4(SERVER));

    // Lifetime 0 deletes it: the next connection does not get through.
    let (ok, out) = natpmpc(&lab.lan, &["-a", "8085", "85", "tcp", "0"]);
    assert!(ok, "{out}");
    assert_eq!(nat.json(&["forward"]), serde_json::json!([]));
    let _listener = lab
        .lan
        .run(|| std::net::TcpListener::bind((LAN_HOST_A, 85)))
        .unwrap()
        .unwrap();
    let refused = tcp_connect(&lab.wan, SocketAddrV4::new(ROUTER_WAN, 8085)).unwrap();
    assert!(refused.is_err(), "reached a deleted mapping");
}

#[test]
fn a_lease_ends_with_its_lifetime_and_the_wan_cannot_ask() {
    let lab = Lab::new("pmexp").unwrap();
    let nat = NatDaemon::start_with_config(&lab, CONFIG).unwrap();
    until_served(&lab, &nat);
    let (ok, out) = natpmpc(&lab.lan, &["-a", "6086", "86", "udp", "3"]);
    assert!(
        ok && out.contains("Mapped public port 6086 protocol UDP"),
        "{out}"
    );
    let echo = udp_echo(&lab.lan, SocketAddrV4::new(LAN_HOST_A, 86), 1).unwrap();
    let reply = udp_request(
        &lab.wan,
        SocketAddrV4::new(SERVER, 42000),
        SocketAddrV4::new(ROUTER_WAN, 6086),
        b"in",
    )
    .unwrap();
    assert_eq!(reply.as_deref(), Some(&b"echo:in"[..]));
    echo.join().unwrap();
    // The daemon removes it once its 3 s are over (it sweeps every 2 s).
    let gone = wait_for(Duration::from_secs(10), || {
        (nat.json(&["forward"]) == serde_json::json!([])).then_some(())
    });
    assert!(
        gone.is_some(),
        "the lease outlived its lifetime: {}",
        nat.json(&["forward"])
    );
    // From the WAN, the service is not there at all: not at the WAN address, and not at the
    // LAN address either, even for a WAN host that routes the LAN through the router.
    lab.wan
        .ip(&[
            "route",
            "add",
            "192.168.1.0/24",
            "via",
            &ROUTER_WAN.to_string(),
        ])
        .unwrap();
    let dropped = nat.counter("drop_to_lan_address");
    for gateway in [ROUTER_WAN, ROUTER_LAN] {
        let gw = gateway.to_string();
        let wan = lab
            .wan
            .cmd("timeout")
            .args(["5", "natpmpc", "-g", &gw, "-a", "7000", "7000", "tcp", "60"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&wan.stdout).contains("Mapped public port"),
            "the WAN got a mapping from {gateway}: {}",
            String::from_utf8_lossy(&wan.stdout)
        );
    }
    assert!(
        nat.counter("drop_to_lan_address") > dropped,
        "not dropped by the WAN program"
    );
    assert_eq!(nat.json(&["forward"]), serde_json::json!([]));
}

/// A PCP MAP request (RFC 6887 sections 7.1 and 11.1), written from the RFC.
fn pcp_map(client: Ipv4Addr, nonce: [u8; 12], proto: u8, port: u16, lifetime: u32) -> Vec<u8> {
    let mut m = vec![2, 1, 0, 0];
    m.extend_from_slice(&lifetime.to_be_bytes());
    m.extend_from_slice(&client.to_ipv6_mapped().octets());
    m.extend_from_slice(&nonce);
    m.extend_from_slice(&[proto, 0, 0, 0]);
    m.extend_from_slice(&port.to_be_bytes());
    m.extend_from_slice(&port.to_be_bytes());
    m.extend_from_slice(&[0; 16]);
    m
}

/// What a PCP MAP answer says: (result code, lifetime, assigned port, assigned address).
fn pcp_answer(a: &[u8]) -> (u8, u32, u16, Ipv4Addr) {
    assert_eq!(a.len(), 60, "a MAP answer is 60 bytes: {a:?}");
    assert_eq!((a[0], a[1]), (2, 0x81), "version 2, a MAP response");
    let addr: [u8; 16] = a[44..60].try_into().unwrap();
    (
        a[3],
        u32::from_be_bytes(a[4..8].try_into().unwrap()),
        u16::from_be_bytes([a[42], a[43]]),
        std::net::Ipv6Addr::from(addr)
            .to_ipv4_mapped()
            .expect("IPv4-mapped"),
    )
}

/// Sends `msg` from `src` to the router's PCP port and returns the answer.
fn pcp(ns: &Netns, src: Ipv4Addr, msg: Vec<u8>) -> Vec<u8> {
    ns.run(move || {
        let s = UdpSocket::bind((src, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(&msg, (ROUTER_LAN, 5351)).unwrap();
        let mut buf = [0u8; 1100];
        let n = s.recv(&mut buf).expect("a PCP answer");
        buf[..n].to_vec()
    })
    .unwrap()
}

#[test]
fn a_pcp_map_is_granted_to_its_host_only_and_deleted_with_its_nonce_only() {
    let lab = Lab::new("pmpcp").unwrap();
    let nat = NatDaemon::start_with_config(&lab, CONFIG).unwrap();
    until_served(&lab, &nat);
    let nonce = [0x5a; 12];
    let udp = nat_common::proto::IPPROTO_UDP;
    let (code, lifetime, port, addr) = pcp_answer(&pcp(
        &lab.lan,
        LAN_HOST_B,
        pcp_map(LAN_HOST_B, nonce, udp, 7000, 120),
    ));
    assert_eq!(
        (code, lifetime, addr),
        (0, 120, ROUTER_WAN),
        "log: {}",
        nat.log()
    );
    let echo = udp_echo(&lab.lan, SocketAddrV4::new(LAN_HOST_B, 7000), 1).unwrap();
    let reply = udp_request(
        &lab.wan,
        SocketAddrV4::new(SERVER, 42001),
        SocketAddrV4::new(ROUTER_WAN, port),
        b"pcp",
    )
    .unwrap();
    assert_eq!(
        reply.as_deref(),
        Some(&b"echo:pcp"[..]),
        "log: {}",
        nat.log()
    );
    echo.join().unwrap();

    // Host A asking for host B: ADDRESS_MISMATCH (12), nothing made.
    let (code, ..) = pcp_answer(&pcp(
        &lab.lan,
        LAN_HOST_A,
        pcp_map(LAN_HOST_B, [1; 12], udp, 7001, 120),
    ));
    assert_eq!(code, 12);
    // Deleting with another nonce: NOT_AUTHORIZED (2); with the right one, it goes.
    let (code, ..) = pcp_answer(&pcp(
        &lab.lan,
        LAN_HOST_B,
        pcp_map(LAN_HOST_B, [9; 12], udp, 7000, 0),
    ));
    assert_eq!(code, 2);
    assert_eq!(nat.json(&["forward"]).as_array().unwrap().len(), 1);
    let (code, lifetime, ..) = pcp_answer(&pcp(
        &lab.lan,
        LAN_HOST_B,
        pcp_map(LAN_HOST_B, nonce, udp, 7000, 0),
    ));
    assert_eq!((code, lifetime), (0, 0));
    assert_eq!(nat.json(&["forward"]), serde_json::json!([]));
}

#[test]
fn a_new_wan_address_is_announced_to_the_lan() {
    let lab = Lab::new("pmann").unwrap();
    let nat = NatDaemon::start_with_config(&lab, CONFIG).unwrap();
    until_served(&lab, &nat);
    let listener = lab
        .lan
        .run(|| {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 5350)).unwrap();
            s.join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 1), &LAN_HOST_A)
                .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        })
        .unwrap();
    let wan = integration_tests::lab::WAN_IF;
    lab.router
        .ip(&["addr", "del", "203.0.113.1/24", "dev", wan])
        .unwrap();
    lab.router
        .ip(&["addr", "add", "203.0.113.9/24", "dev", wan])
        .unwrap();
    // NAT-PMP's announcement: version 0, opcode 128, success, epoch, the new address.
    let mut buf = [0u8; 64];
    let mut natpmp = None;
    for _ in 0..4 {
        let Ok((n, from)) = listener.recv_from(&mut buf) else {
            break;
        };
        if n == 12 && buf[..2] == [0, 128] {
            natpmp = Some((from, buf[8..12].to_vec()));
            break;
        }
    }
    let (from, addr) = natpmp.unwrap_or_else(|| panic!("no announcement; log: {}", nat.log()));
    assert_eq!(from.ip(), std::net::IpAddr::V4(ROUTER_LAN));
    assert_eq!(addr, [203, 0, 113, 9]);
}

/// A NAT-PMP map request (RFC 6886 section 3.3) from `src` (UDP if `udp`): (result code,
/// external port, lifetime) of the answer.
fn natpmp_map(
    ns: &Netns,
    src: Ipv4Addr,
    udp: bool,
    internal: u16,
    suggested: u16,
    lifetime: u32,
) -> (u16, u16, u32) {
    let mut m = vec![0, if udp { 1 } else { 2 }, 0, 0];
    m.extend_from_slice(&internal.to_be_bytes());
    m.extend_from_slice(&suggested.to_be_bytes());
    m.extend_from_slice(&lifetime.to_be_bytes());
    let a = ns
        .run(move || {
            let s = UdpSocket::bind((src, 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.send_to(&m, (ROUTER_LAN, 5351)).unwrap();
            let mut buf = [0u8; 64];
            let n = s.recv(&mut buf).expect("a NAT-PMP answer");
            buf[..n].to_vec()
        })
        .unwrap();
    assert_eq!(a.len(), 16, "{a:?}");
    (
        u16::from_be_bytes([a[2], a[3]]),
        u16::from_be_bytes([a[10], a[11]]),
        u32::from_be_bytes(a[12..16].try_into().unwrap()),
    )
}

fn ordinary_pool(nat: &NatDaemon) -> u64 {
    nat.json(&["status"])["port_pool"]["ordinary"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_host_has_a_share_of_leases_which_leaves_the_pool_whole() {
    let lab = Lab::new("pmquo").unwrap();
    let nat = NatDaemon::start_with_config(&lab, CONFIG).unwrap();
    until_served(&lab, &nat);
    let pool = ordinary_pool(&nat);
    let mut granted = 0;
    let mut refused = 0;
    for i in 0..130u16 {
        // Paced under the per-host request rate.
        std::thread::sleep(Duration::from_millis(60));
        match natpmp_map(&lab.lan, LAN_HOST_A, true, 20_000 + i, 20_000 + i, 600) {
            (0, ext, 600) => {
                assert_ne!(ext, 0);
                granted += 1;
            }
            (4, 0, 0) => refused += 1,
            other => panic!("lease {i}: {other:?}"),
        }
    }
    assert_eq!((granted, refused), (128, 2), "a host's share of leases");
    // Another host is not affected, and the dynamic pool lost no port to the leases.
    assert_eq!(natpmp_map(&lab.lan, LAN_HOST_B, true, 5000, 0, 600).0, 0);
    assert_eq!(ordinary_pool(&nat), pool);
    // NAT-PMP's "all of mine": internal port 0, lifetime 0.
    assert_eq!(natpmp_map(&lab.lan, LAN_HOST_A, true, 0, 0, 0), (0, 0, 0));
    let left = nat.json(&["forward"]);
    assert_eq!(
        left.as_array().unwrap().len(),
        1,
        "only B's lease is left: {left}"
    );
    assert_eq!(left[0]["to"], LAN_HOST_B.to_string());
}

#[test]
fn leases_are_clamped_avoid_the_routers_ports_and_respect_the_operator_and_nonces() {
    let lab = Lab::new("pmrul").unwrap();
    let nat = NatDaemon::start_with_config(&lab, CONFIG).unwrap();
    until_served(&lab, &nat);
    // A day at most.
    let (code, _, lifetime) = natpmp_map(&lab.lan, LAN_HOST_A, false, 81, 8081, 1_000_000);
    assert_eq!((code, lifetime), (0, 86_400));
    // A port the router listens on is not leased: another one is.
    let _service = lab
        .router
        .run(|| std::net::TcpListener::bind(("0.0.0.0", 2323)))
        .unwrap()
        .unwrap();
    let (code, ext, _) = natpmp_map(&lab.lan, LAN_HOST_A, false, 82, 2323, 600);
    assert_eq!(code, 0);
    assert_ne!(ext, 2323, "leased the router's own port");

    // The operator removes a forward whose connection still runs: the host it led to cannot
    // bring it back.
    let out = nat.ctl(&["forward", "add", "tcp", "8090", &format!("{LAN_HOST_A}:90")]);
    assert!(out.status.success());
    let listener = lab
        .lan
        .run(|| std::net::TcpListener::bind((LAN_HOST_A, 90)))
        .unwrap()
        .unwrap();
    let _client = lab
        .wan
        .run(|| TcpStream::connect((ROUTER_WAN, 8090)))
        .unwrap()
        .unwrap();
    let _server = listener.accept().unwrap();
    assert!(nat.ctl(&["forward", "del", "tcp", "8090"]).status.success());
    let (code, ..) = natpmp_map(&lab.lan, LAN_HOST_A, false, 90, 8090, 600);
    assert_eq!(
        code, 2,
        "a host brought back the operator's removed forward"
    );
    let active = nat.json(&["forward"]);
    assert!(
        active
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["origin"] != "command"),
        "{active}"
    );

    // A PCP lease is not NAT-PMP's to renew or delete: its nonce is needed.
    let udp = nat_common::proto::IPPROTO_UDP;
    let (code, ..) = pcp_answer(&pcp(
        &lab.lan,
        LAN_HOST_B,
        pcp_map(LAN_HOST_B, [3; 12], udp, 7100, 600),
    ));
    assert_eq!(code, 0);
    assert_eq!(natpmp_map(&lab.lan, LAN_HOST_B, true, 7100, 0, 600).0, 2);
    assert_eq!(natpmp_map(&lab.lan, LAN_HOST_B, true, 7100, 0, 0).0, 2);
    // A bad PCP request's answer names its nonce, so the client can match it.
    let a = pcp(
        &lab.lan,
        LAN_HOST_B,
        pcp_map(LAN_HOST_B, [4; 12], 132, 7101, 600),
    );
    assert_eq!(
        (a[3], &a[24..36]),
        (9, &[4u8; 12][..]),
        "UNSUPP_PROTOCOL, nonce echoed"
    );
}

/// `upnpc -m eth0 -i ARGS` in `ns` (miniupnpc, discovering the router by SSDP on the LAN):
/// (success, stdout). `-i`: miniupnpc takes an IGD whose external address is reserved (the
/// labs' is a documentation address, 203.0.113.1) for "not connected" and does nothing
/// with it unless told to go on.
fn upnpc(ns: &Netns, args: &[&str]) -> (bool, String) {
    let out = ns
        .cmd("timeout")
        .args(["20", "upnpc", "-m", "eth0", "-i"])
        .args(args)
        .output()
        .expect("upnpc");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn upnpc_maps_lists_and_deletes_a_port_that_a_wan_client_reaches() {
    let lab = Lab::new("pmupnp").unwrap();
    let nat = NatDaemon::start_with_config(&lab, "[port_mapping]\nupnp = true\n").unwrap();
    let a = LAN_HOST_A.to_string();
    let (_, out) = upnpc(&lab.lan, &["-a", &a, "86", "8086", "TCP", "600"]);
    assert!(
        out.contains("is redirected to internal 192.168.1.2:86"),
        "{out}\nlog: {}",
        nat.log()
    );
    let list = nat.json(&["forward"]);
    assert_eq!(
        (list[0]["origin"].as_str(), list[0]["port"].as_u64()),
        (Some("upnp"), Some(8086)),
        "{list}"
    );
    let sink = TcpSink::start(&lab.lan, LAN_HOST_A, 86).unwrap();
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 13) as u8).collect();
    let hash = tcp_send(
        &lab.wan,
        SERVER,
        SocketAddrV4::new(ROUTER_WAN, 8086),
        &payload,
    )
    .unwrap_or_else(|e| panic!("{e:#}; log: {}", nat.log()));
    assert_eq!(hash, sha256(&payload));
    sink.finish().unwrap();
    // upnpc -l lists it, with the external address.
    let (_, out) = upnpc(&lab.lan, &["-l"]);
    assert!(
        out.contains(&format!("ExternalIPAddress = {ROUTER_WAN}")),
        "{out}"
    );
    assert!(out.contains("8086->192.168.1.2:86"), "{out}");
    // Another host's address is refused; so is a port another forward has.
    let b = LAN_HOST_B.to_string();
    let (_, out) = upnpc(&lab.lan, &["-a", &b, "87", "8087", "TCP", "600"]);
    assert!(!out.contains("is redirected"), "{out}");
    assert_eq!(nat.json(&["forward"]).as_array().unwrap().len(), 1);
    // Deleted, it lets nothing in.
    let (_, out) = upnpc(&lab.lan, &["-d", "8086", "TCP"]);
    assert!(
        out.contains("UPNP_DeletePortMapping() returned : 0"),
        "{out}"
    );
    assert_eq!(nat.json(&["forward"]), serde_json::json!([]));
}

/// An HTTP request `raw` to the router's UPnP port from `src`: what came back (empty if the
/// connection was refused or closed first).
fn http_raw(ns: &Netns, src: Ipv4Addr, raw: &'static str) -> String {
    use std::io::{Read as _, Write as _};
    ns.run(move || {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::from((src, 0)).into()).unwrap();
        if sock
            .connect_timeout(
                &SocketAddr::from((ROUTER_LAN, 49000)).into(),
                Duration::from_secs(2),
            )
            .is_err()
        {
            return String::new();
        }
        let mut s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let _ = s.write_all(raw.as_bytes());
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .unwrap()
}

#[test]
fn the_upnp_service_withstands_hostile_clients_and_turns_off() {
    let lab = Lab::new("pmhos").unwrap();
    let nat = NatDaemon::start_with_config(&lab, "[port_mapping]\nupnp = true\n").unwrap();
    let desc = "GET /rootDesc.xml HTTP/1.1\r\nHost: 192.168.1.1:49000\r\nConnection: close\r\n\r\n";
    let ok = wait_for(Duration::from_secs(5), || {
        http_raw(&lab.lan, LAN_HOST_B, desc)
            .contains("InternetGatewayDevice:1")
            .then_some(())
    });
    assert!(ok.is_some(), "no description; log: {}", nat.log());
    // A body that claims to be a terabyte, and one that never comes: the service answers
    // others meanwhile, and the daemon lives on.
    let huge = "POST /ctl/IPConn HTTP/1.1\r\nHost: 192.168.1.1:49000\r\nSOAPAction: \"urn:schemas-upnp-org:service:WANIPConnection:1#GetExternalIPAddress\"\r\nContent-Length: 1000000000000\r\n\r\n<x/>";
    let answer = http_raw(&lab.lan, LAN_HOST_A, huge);
    assert!(!answer.contains("200 OK"), "{answer}");
    std::thread::scope(|scope| {
        let slow: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    http_raw(
                        &lab.lan,
                        LAN_HOST_A,
                        "GET /rootDesc.xml HTTP/1.1\r\nHost: 192.168.1.1",
                    )
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let started = std::time::Instant::now();
        assert!(
            http_raw(&lab.lan, LAN_HOST_B, desc).contains("InternetGatewayDevice:1"),
            "another host is not served while A's slow connections are open"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        for t in slow {
            // Cut off at the deadline, never answered.
            assert!(!t.join().unwrap().contains("200 OK"));
        }
    });
    assert!(nat.ctl(&["status"]).status.success(), "log: {}", nat.log());
    // DNS rebinding: a request naming another host is refused.
    let rebound = http_raw(
        &lab.lan,
        LAN_HOST_B,
        "GET /rootDesc.xml HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
    );
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    // Off by reload: the port closes.
    std::fs::write(nat.config_path(), "[port_mapping]\nupnp = false\n").unwrap();
    assert!(nat.ctl(&["reload"]).status.success());
    let closed = wait_for(Duration::from_secs(5), || {
        http_raw(&lab.lan, LAN_HOST_B, desc)
            .is_empty()
            .then_some(())
    });
    assert!(
        closed.is_some(),
        "UPnP still answers after it was turned off"
    );
}
