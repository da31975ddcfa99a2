//! VPN passthrough end to end: two LAN hosts and one WAN server in namespaces, crafted
//! tunnel packets on raw sockets (no GRE/ESP/PPP/L2TP modules here), a small PPTP server,
//! real strongSwan IKEv2 peers (userspace ESP), and the real nat-ctl.

use integration_tests::{
    daemon::NatDaemon,
    lab::{LAN_HOST_A, LAN_HOST_B, Lab, ROUTER_WAN, SERVER},
    packets,
    traffic::{ping, udp_echo, udp_request, udp_socket},
    vpn_peers::{pptp_client, pptp_server, raw_recv_all, raw_recv_first, raw_send, raw_socket},
};
use nat_common::proto::IPPROTO_ESP;
use std::{
    net::{SocketAddrV4, UdpSocket},
    time::Duration,
};

const WAIT: Duration = Duration::from_millis(600);

#[test]
fn two_pptp_clients_with_the_same_call_id_each_get_their_own_gre() {
    let lab = Lab::new("pptp").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let server = pptp_server(&lab.wan, SERVER, 2).unwrap();
    let a = pptp_client(&lab.lan, LAN_HOST_A, SERVER, 7).unwrap();
    let b = pptp_client(&lab.lan, LAN_HOST_B, SERVER, 7).unwrap();
    let calls = server.join().unwrap().unwrap();

    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|c| c.peer.ip() == std::net::IpAddr::V4(ROUTER_WAN)),
        "{calls:?}"
    );
    assert_ne!(
        calls[0].peer_call_id, calls[1].peer_call_id,
        "the server must see two different call ids: {calls:?}"
    );
    for (client, call) in [(&a, &calls[0]), (&b, &calls[1])] {
        assert_eq!(
            client.reply_peer_call_id, 7,
            "the reply names the client's own call id"
        );
        assert_eq!(client.server_call_id, call.server_call_id);
        let want = format!("to call {}", call.peer_call_id).into_bytes();
        assert_eq!(client.gre.len(), 3, "GRE received: {:?}", client.gre);
        for (src, id, payload) in &client.gre {
            assert_eq!((*src, *id), (SERVER, 7));
            assert_eq!(payload, &want, "a client got the other one's GRE");
        }
        assert_eq!(
            call.gre_from_client.len(),
            1,
            "client GRE reached the server: {call:?}"
        );
        assert_eq!(call.gre_from_client[0].0, ROUTER_WAN);
    }
    let gre = nat.json(&["sessions", "--proto", "gre"]);
    assert_eq!(gre.as_array().unwrap().len(), 2, "{gre}");
    assert!(nat.counter("pptp_translated") >= 10);
}

/// Raw ESP sockets of the server and of LAN hosts A and B.
fn esp_sockets(lab: &Lab) -> (socket2::Socket, socket2::Socket, socket2::Socket) {
    let raw = |ns: &integration_tests::netns::Netns, addr| {
        ns.run(move || raw_socket(IPPROTO_ESP, addr))
            .unwrap()
            .unwrap()
    };
    (
        raw(&lab.wan, SERVER),
        raw(&lab.lan, LAN_HOST_A),
        raw(&lab.lan, LAN_HOST_B),
    )
}

#[test]
fn raw_esp_both_ways_for_two_hosts_to_one_server() {
    let lab = Lab::new("esp").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let (srv, a, b) = esp_sockets(&lab);
    let spi_of = |p: &[u8]| u32::from_be_bytes([p[0], p[1], p[2], p[3]]);

    for (sock, out_spi, in_spi) in [(&a, 0xa0u32, 0xa1u32), (&b, 0xb0, 0xb1)] {
        raw_send(sock, SERVER, &packets::esp(out_spi, 1)).unwrap();
        let at_server = raw_recv_all(&srv, WAIT);
        assert_eq!(at_server.len(), 1);
        assert_eq!(
            (at_server[0].0, spi_of(&at_server[0].1)),
            (ROUTER_WAN, out_spi)
        );
        raw_send(&srv, ROUTER_WAN, &packets::esp(in_spi, 1)).unwrap();
        // A learning window runs its full second (docs/passthrough.md): the next host's
        // first ESP waits for it to end.
        std::thread::sleep(Duration::from_millis(1100));
    }
    // Each learned its SPI; now both directions again, interleaved.
    raw_send(&srv, ROUTER_WAN, &packets::esp(0xa1, 2)).unwrap();
    raw_send(&srv, ROUTER_WAN, &packets::esp(0xb1, 2)).unwrap();
    let got_a: Vec<u32> = raw_recv_all(&a, WAIT)
        .iter()
        .map(|(s, p)| {
            assert_eq!(*s, SERVER);
            spi_of(p)
        })
        .collect();
    let got_b: Vec<u32> = raw_recv_all(&b, WAIT)
        .iter()
        .map(|(s, p)| {
            assert_eq!(*s, SERVER);
            spi_of(p)
        })
        .collect();
    assert_eq!(got_a, vec![0xa1, 0xa1], "host A");
    assert_eq!(got_b, vec![0xb1, 0xb1], "host B");
    assert_eq!(nat.counter("esp_spi_learned"), 2);
    let esp = nat.json(&["sessions", "--proto", "esp"]);
    assert_eq!(esp.as_array().unwrap().len(), 2, "{esp}");
    assert!(
        esp.as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "BOUND"),
        "{esp}"
    );
}

#[test]
fn raw_esp_learning_resists_a_spoofer_and_leaves_the_routers_own_esp_alone() {
    let lab = Lab::new("esp2").unwrap();
    // The router runs IKE itself: port 500 is its own (listening before the NAT starts, so
    // out of the pool).
    let router_ike = lab
        .router
        .run(|| UdpSocket::bind((ROUTER_WAN, 500)))
        .unwrap()
        .unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let (srv, a, b) = esp_sockets(&lab);
    let spis = |sock| -> Vec<u32> {
        raw_recv_all(sock, WAIT)
            .iter()
            .map(|(_, p)| u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
            .collect()
    };

    // A starts learning; a spoofer "from the server" sprays a made-up SPI at the WAN
    // address before the server's real answer.
    // The learning window is a second: the server answers as soon as A's ESP arrives.
    raw_send(&a, SERVER, &packets::esp(0xa0, 1)).unwrap();
    assert!(
        raw_recv_first(&srv, WAIT).is_some(),
        "A's ESP reached the server"
    );
    for seq in 1..=3 {
        raw_send(&srv, ROUTER_WAN, &packets::esp(0x5f, seq)).unwrap();
    }
    raw_send(&srv, ROUTER_WAN, &packets::esp(0xa1, 1)).unwrap();
    let got = spis(&a);
    assert!(got.contains(&0xa1), "A's real SPI arrived: {got:x?}");
    raw_send(&srv, ROUTER_WAN, &packets::esp(0xa1, 2)).unwrap();
    assert_eq!(spis(&a), vec![0xa1], "and keeps arriving");

    // The router talks IKE with the server from its own port 500; the egress sees it.
    router_ike
        .send_to(b"router IKE_SA_INIT", (SERVER, 500))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    // B learns from the same server now, but ESP from the server with an SPI no LAN host
    // learned is the router's own, never B's.
    raw_send(&b, SERVER, &packets::esp(0xb0, 1)).unwrap();
    assert!(raw_recv_first(&srv, WAIT).is_some(), "B's ESP goes out");
    raw_send(&srv, ROUTER_WAN, &packets::esp(0xee, 1)).unwrap();
    assert!(spis(&b).is_empty(), "the router's ESP reached a LAN host");
    assert!(
        nat.counter("pass_esp_router_peer") >= 1,
        "{}",
        nat.json(&["stats"])
    );
    // A's SA still works.
    raw_send(&srv, ROUTER_WAN, &packets::esp(0xa1, 3)).unwrap();
    assert_eq!(spis(&a), vec![0xa1]);
}

fn udp_in(ns: &integration_tests::netns::Netns, bind: SocketAddrV4) -> UdpSocket {
    udp_socket(ns, bind, Duration::from_secs(2)).unwrap()
}

#[test]
fn ike_from_two_hosts_to_one_server_on_port_500() {
    let lab = Lab::new("ike").unwrap();
    let _nat = NatDaemon::start(&lab, &[]).unwrap();
    let srv = udp_in(&lab.wan, SocketAddrV4::new(SERVER, 500));
    let a = udp_in(&lab.lan, SocketAddrV4::new(LAN_HOST_A, 500));
    let b = udp_in(&lab.lan, SocketAddrV4::new(LAN_HOST_B, 500));
    a.send_to(&packets::ike(0x1111, 0, 0x08), (SERVER, 500))
        .unwrap();
    b.send_to(&packets::ike(0x2222, 0, 0x08), (SERVER, 500))
        .unwrap();
    let mut buf = [0u8; 512];
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (n, from) = srv.recv_from(&mut buf).unwrap();
        seen.push((from, u64::from_be_bytes(buf[..8].try_into().unwrap())));
        assert!(n >= 28);
    }
    for (from, spi) in &seen {
        assert_eq!(
            from.to_string(),
            "203.0.113.1:500",
            "both share external port 500"
        );
        srv.send_to(&packets::ike(*spi, 0x9999, 0x20), from)
            .unwrap();
    }
    for (sock, spi) in [(&a, 0x1111u64), (&b, 0x2222)] {
        let (_, from) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(from.to_string(), "203.0.113.2:500");
        assert_eq!(
            u64::from_be_bytes(buf[..8].try_into().unwrap()),
            spi,
            "a host got another host's IKE reply"
        );
    }
}

#[test]
fn nat_t_on_4500_and_l2tp_on_1701() {
    let lab = Lab::new("natt").unwrap();
    let _nat = NatDaemon::start(&lab, &[]).unwrap();
    let natt = udp_echo(&lab.wan, SocketAddrV4::new(SERVER, 4500), 2).unwrap();
    let l2tp = udp_echo(&lab.wan, SocketAddrV4::new(SERVER, 1701), 1).unwrap();
    let marker_ike = [&[0u8; 4][..], &packets::ike(5, 0, 0x08)].concat();
    for host in [LAN_HOST_A, LAN_HOST_B] {
        let r = udp_request(
            &lab.lan,
            SocketAddrV4::new(host, 4500),
            SocketAddrV4::new(SERVER, 4500),
            &marker_ike,
        )
        .unwrap();
        assert_eq!(
            r,
            Some([&b"echo:"[..], &marker_ike].concat()),
            "NAT-T reply to {host}"
        );
    }
    let r = udp_request(
        &lab.lan,
        SocketAddrV4::new(LAN_HOST_A, 1701),
        SocketAddrV4::new(SERVER, 1701),
        b"l2tp",
    )
    .unwrap();
    assert_eq!(r.as_deref(), Some(&b"echo:l2tp"[..]));
    let natt_seen = natt.join().unwrap();
    assert_eq!(
        natt_seen[0].port(),
        4500,
        "4500 kept when free: {natt_seen:?}"
    );
    assert_ne!(natt_seen[1].port(), 4500);
    assert_eq!(
        l2tp.join().unwrap()[0].to_string(),
        "203.0.113.1:1701",
        "1701 kept when free"
    );
}

/// Does a UDP request from LAN host A on `port` to the server get its echo?
fn udp_works(lab: &Lab, sport: u16, dport: u16) -> bool {
    let echo = udp_echo(&lab.wan, SocketAddrV4::new(SERVER, dport), 1).unwrap();
    let r = udp_request(
        &lab.lan,
        SocketAddrV4::new(LAN_HOST_A, sport),
        SocketAddrV4::new(SERVER, dport),
        b"x",
    )
    .unwrap();
    let _ = echo.join();
    r.is_some()
}

fn esp_works(lab: &Lab, spi: u32) -> bool {
    let srv = lab
        .wan
        .run(|| raw_socket(IPPROTO_ESP, SERVER))
        .unwrap()
        .unwrap();
    let a = lab
        .lan
        .run(|| raw_socket(IPPROTO_ESP, LAN_HOST_A))
        .unwrap()
        .unwrap();
    raw_send(&a, SERVER, &packets::esp(spi, 1)).unwrap();
    !raw_recv_all(&srv, WAIT).is_empty()
}

#[test]
fn each_switch_blocks_exactly_its_traffic_and_turning_it_on_restores_it() {
    let lab = Lab::new("sw").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let set = |verb: &str, name: &str| {
        let out = nat.ctl(&["passthrough", verb, name]);
        assert!(
            out.status.success(),
            "passthrough {verb} {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ordinary_ok = |lab: &Lab| ping(&lab.lan, SERVER, 1).unwrap() && udp_works(lab, 0, 7000);
    assert_eq!(
        nat.json(&["passthrough"]),
        serde_json::json!({"pptp": "on", "l2tp": "on", "ipsec": "on"})
    );

    // PPTP: the control connection cannot even start while off.
    set("disable", "PPTP");
    let server = pptp_server(&lab.wan, SERVER, 1).unwrap();
    assert!(
        pptp_client(&lab.lan, LAN_HOST_A, SERVER, 7).is_err(),
        "PPTP got through while off"
    );
    assert!(nat.counter("drop_pptp_switch_off") >= 1);
    assert!(ordinary_ok(&lab));
    set("enable", "pptp");
    let call = pptp_client(&lab.lan, LAN_HOST_A, SERVER, 7).unwrap();
    assert_eq!(call.gre.len(), 3, "PPTP works again");
    server.join().unwrap().unwrap();

    set("disable", "l2tp");
    assert!(!udp_works(&lab, 1701, 1701), "L2TP got through while off");
    assert!(udp_works(&lab, 1702, 1702), "other UDP must still work");
    assert!(nat.counter("drop_l2tp_switch_off") >= 1);
    set("enable", "l2tp");
    assert!(udp_works(&lab, 1701, 1701));

    set("disable", "ipsec");
    assert_eq!(nat.json(&["passthrough"])["ipsec"], "off");
    assert!(
        !udp_works(&lab, 4500, 4500) && !udp_works(&lab, 500, 500),
        "IKE/NAT-T got through while off"
    );
    assert!(!esp_works(&lab, 0xa0), "ESP got through while off");
    assert!(ordinary_ok(&lab));
    assert!(nat.counter("drop_ipsec_switch_off") >= 3);
    set("enable", "ipsec");
    assert!(udp_works(&lab, 4500, 4500) && esp_works(&lab, 0xa2));
    // Idempotent.
    set("enable", "ipsec");
    assert_eq!(
        nat.json(&["passthrough"]),
        serde_json::json!({"pptp": "on", "l2tp": "on", "ipsec": "on"})
    );
}

#[test]
fn a_fresh_start_takes_the_switches_from_the_config_file() {
    let lab = Lab::new("cfg").unwrap();
    let nat =
        NatDaemon::start_with_config(&lab, "[passthrough]\nipsec = false\npptp = true\n").unwrap();
    assert_eq!(
        nat.json(&["passthrough"]),
        serde_json::json!({"pptp": "on", "l2tp": "on", "ipsec": "off"})
    );
    assert!(!udp_works(&lab, 4500, 4500));
}

#[test]
fn each_switch_flip_is_hitless_for_every_other_flow() {
    let lab = Lab::new("flip").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let set = |verb: &str, name: &str| {
        let out = nat.ctl(&["passthrough", verb, name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Established flows of each kind, from fixed source ports: the same sessions every time.
    let l2tp = || udp_works(&lab, 1701, 1701);
    let nat_t = || udp_works(&lab, 4500, 4500);
    let plain = || udp_works(&lab, 41000, 7000);
    assert!(l2tp() && nat_t() && plain(), "before any flip");
    let sink = integration_tests::traffic::TcpSink::start(&lab.wan, SERVER, 5002).unwrap();
    let (sent, echoed) = std::thread::scope(|s| {
        // A plain TCP transfer that runs across every flip.
        let transfer = s.spawn(|| {
            integration_tests::traffic::tcp_send_paced(
                &lab.lan,
                LAN_HOST_B,
                sink.addr,
                16 * 1024,
                120,
                Duration::from_millis(25),
            )
            .unwrap()
        });
        for (name, others) in [
            (
                "pptp",
                [("l2tp", &l2tp as &dyn Fn() -> bool), ("nat-t", &nat_t)],
            ),
            (
                "l2tp",
                [("nat-t", &nat_t as &dyn Fn() -> bool), ("udp", &plain)],
            ),
            (
                "ipsec",
                [("l2tp", &l2tp as &dyn Fn() -> bool), ("udp", &plain)],
            ),
        ] {
            set("disable", name);
            // Other classes' sessions stay where they are: looked at before any packet
            // could make them again.
            let udp = nat.json(&["sessions", "--proto", "udp"]).to_string();
            assert!(
                udp.contains("41000"),
                "turning {name} off removed the plain UDP session: {udp}"
            );
            if name != "ipsec" {
                assert!(
                    udp.contains("4500"),
                    "turning {name} off removed the NAT-T session: {udp}"
                );
            }
            if name != "l2tp" {
                assert!(
                    udp.contains("1701"),
                    "turning {name} off removed the L2TP session: {udp}"
                );
            }
            for (what, works) in others {
                assert!(works(), "{what} stopped while {name} was off");
            }
            set("enable", name);
            // Its own flow starts again (turning it off ended its sessions).
            match name {
                "l2tp" => assert!(l2tp(), "L2TP after it was turned back on"),
                "ipsec" => assert!(nat_t(), "NAT-T after IPsec was turned back on"),
                _ => {}
            }
        }
        // And each class is back.
        assert!(l2tp() && nat_t() && plain(), "after the flips");
        transfer.join().unwrap()
    });
    let (_, _, digest) = sink.finish().unwrap();
    assert_eq!(
        (digest, echoed),
        (sent, sent),
        "the TCP transfer across the flips"
    );
    let udp = nat.json(&["sessions", "--proto", "udp"]);
    assert!(udp.as_array().unwrap().len() >= 3, "{udp}");
}

/// Pings `dst` from `ns` until one is answered, for up to `within`.
fn ping_within(
    ns: &integration_tests::netns::Netns,
    dst: std::net::Ipv4Addr,
    within: Duration,
) -> bool {
    integration_tests::wait_for(within, || ping(ns, dst, 1).unwrap().then_some(())).is_some()
}

/// Real IKEv2 through the NAT: strongSwan on two LAN hosts at once (each a namespace of its
/// own, both on port 500) to one strongSwan responder on the WAN side. Both detect the NAT,
/// move to NAT-T on 4500, get a virtual IP and reach the responder's inner address through
/// the tunnel; the ipsec switch cuts both tunnels and turning it on restores them.
#[test]
fn two_strongswan_clients_behind_the_nat_reach_one_responder_and_the_switch_cuts_them() {
    use integration_tests::strongswan::{Charon, client_conf, responder_conf};
    const INNER: &str = "10.99.0.1";
    let inner: std::net::Ipv4Addr = INNER.parse().unwrap();
    let lab = Lab::new("ss").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let (host_a, host_b) = lab.lan_hosts_apart().unwrap();
    lab.wan
        .ip(&["addr", "add", &format!("{INNER}/32"), "dev", "lo"])
        .unwrap();
    let responder = Charon::start(
        &lab.wan,
        "responder",
        &responder_conf(SERVER, "10.3.0.0/24", INNER),
    )
    .unwrap();
    let clients = [
        Charon::start(&host_a, "client-a", &client_conf("client-a", SERVER, INNER)).unwrap(),
        Charon::start(&host_b, "client-b", &client_conf("client-b", SERVER, INNER)).unwrap(),
    ];
    // Both at once, so that their IKE_SA_INITs share the external port 500 at the same time
    // and only the SPI tells the responder's answers apart.
    std::thread::scope(|scope| {
        for c in &clients {
            let responder = &responder;
            scope.spawn(move || {
                let out = c
                    .initiate("net")
                    .unwrap_or_else(|e| panic!("{e:#}\nresponder:\n{}", responder.log()));
                assert!(out.contains("initiate completed successfully"), "{out}");
            });
        }
    });
    let sas = responder.sas();
    for id in ["client-a", "client-b"] {
        assert!(sas.contains(id), "the responder has no SA of {id}:\n{sas}");
    }
    // Both behind the NAT, seen from the one WAN address, on NAT-T.
    assert_eq!(sas.matches(&format!("{ROUTER_WAN}[")).count(), 2, "{sas}");
    assert!(
        !sas.contains(&format!("{ROUTER_WAN}[500]")),
        "NAT-T not used:\n{sas}"
    );
    for (host, c) in [(&host_a, &clients[0]), (&host_b, &clients[1])] {
        assert!(
            ping_within(host, inner, Duration::from_secs(5)),
            "no traffic through {}'s tunnel:\n{}",
            c.name,
            c.sas()
        );
    }
    let sessions = nat.json(&["sessions"]);
    let nat_t: Vec<_> = sessions
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["proto"] == "udp" && s["remote"].as_str().is_some_and(|r| r.ends_with(":4500"))
        })
        .collect();
    assert_eq!(nat_t.len(), 2, "one NAT-T session per client: {sessions}");
    let shared_500 = sessions
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            let ends_500 = |f: &str| s[f].as_str().is_some_and(|v| v.ends_with(":500"));
            s["proto"] == "udp"
                && ends_500("internal")
                && ends_500("remote")
                && ends_500("external")
        })
        .count();
    assert_eq!(
        shared_500, 2,
        "both clients' IKE left from port 500: {sessions}"
    );

    let set = |verb: &str| {
        let out = nat.ctl(&["passthrough", verb, "ipsec"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    set("disable");
    for host in [&host_a, &host_b] {
        assert!(
            !ping(host, inner, 2).unwrap(),
            "a tunnel works with ipsec off"
        );
    }
    assert!(nat.counter("drop_ipsec_switch_off") >= 1);
    set("enable");
    // The clients' keepalives and dead peer detection bring their NAT-T mappings back.
    for (host, c) in [(&host_a, &clients[0]), (&host_b, &clients[1])] {
        assert!(
            ping_within(host, inner, Duration::from_secs(30)),
            "{}'s tunnel did not come back:\n{}\nresponder:\n{}",
            c.name,
            c.log(),
            responder.log()
        );
    }
}
