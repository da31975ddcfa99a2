//! Port forwards in the data path, packet by packet (BPF_PROG_TEST_RUN on the real object):
//! what a WAN host's packets to a forwarded port become, what the LAN host's replies
//! become, who is refused, and what a flood through a forward can take. Forwards are added
//! the way `nat-ctl forward add` adds them (nat_ctl::forwards), with its checks.

use integration_tests::{
    fixture::*,
    lab::{LAN_HOST_A, LAN_HOST_B, ROUTER_LAN, ROUTER_WAN, SERVER},
    packets::{self, ACK, Hdr, SYN, SYN_ACK, parse_checked},
};
use nat_common::maps::{FORWARD_FROM_COMMAND, SESSION_FORWARDED, external_hint, lan_hint};
use nat_common::proto::{IPPROTO_TCP, IPPROTO_UDP};
use nat_ctl::{
    forwards::{self, ForwardRule},
    lan_side::LanSide,
    netdev::Ipv4Net,
    sweeper,
};

const NS: u64 = 1_000_000_000;

/// Gives the fixture its LAN side (a forward must lead into it), then adds `spec` as
/// `nat-ctl forward add` would: "tcp 8080 192.168.1.2:80 [CIDR]".
fn forward(fx: &mut Fixture, spec: &str) -> anyhow::Result<()> {
    let lan = Ipv4Net {
        addr: ROUTER_LAN,
        prefix_len: 24,
    };
    fx.maps.write_lan_side(&LanSide::from_parts(&[lan], &[]))?;
    let p: Vec<&str> = spec.split_whitespace().collect();
    let rules = ForwardRule::parse(p[0], p[1], p.get(2).copied(), p.get(3).copied())?;
    forwards::add(&mut fx.maps, &rules, FORWARD_FROM_COMMAND)
}

#[test]
fn a_syn_through_a_forward_reaches_the_lan_host_and_its_replies_leave_from_the_forwarded_port() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        forward(fx, &format!("tcp 8080 {LAN_HOST_A}:80")).unwrap();
        let (action, out) = fx.from_wan(&packets::tcp(
            &wan_hdr(SERVER, SERVER_MAC),
            40000,
            8080,
            SYN,
            b"",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(
            out,
            packets::tcp(&in_hdr(SERVER, LAN_HOST_A, HOST_A_MAC), 40000, 80, SYN, b"")
        );
        let key = session(LAN_HOST_A, 80, SERVER, 40000, IPPROTO_TCP);
        let s = fx.maps.sessions.get(&key, 0).expect("a session");
        assert_eq!(
            (s.origin, u16::from_be(s.ext_port)),
            (SESSION_FORWARDED, 8080)
        );

        // The LAN host's answer leaves from the forwarded port, and the handshake completes.
        let (action, out) = fx.from_lan(&packets::tcp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            80,
            40000,
            SYN_ACK,
            b"",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(
            out,
            packets::tcp(&out_hdr(SERVER, SERVER_MAC), 8080, 40000, SYN_ACK, b"")
        );
        // A LAN server answers spoofed SYNs too: its SYN-ACK does not establish the session
        // (which would hold it for the established timeout); the client's ACK does.
        let s = fx.maps.sessions.get(&key, 0).unwrap();
        assert!(!nat_common::tcp_state::is_established(s.tcp_state));
        let (action, out) = fx.from_wan(&packets::tcp(
            &wan_hdr(SERVER, SERVER_MAC),
            40000,
            8080,
            ACK,
            b"data",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(parse_checked(&out).dport, 80);
        let s = fx.maps.sessions.get(&key, 0).unwrap();
        assert!(nat_common::tcp_state::is_established(s.tcp_state));
        assert_eq!(fx.counter("forward_session_created"), 1);
        let listed = forwards::list(&fx.maps).unwrap();
        assert_eq!(listed[0].hits, 1, "one new flow");
    });
}

#[test]
fn a_forward_lets_in_new_tcp_connections_only_and_from_its_prefix_only() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        forward(fx, &format!("tcp 9000 {LAN_HOST_A} 198.51.100.0/24")).unwrap();
        // Not from the prefix: dropped, counted.
        let (action, _) = fx.from_wan(&packets::tcp(
            &wan_hdr(SERVER, SERVER_MAC),
            40000,
            9000,
            SYN,
            b"",
        ));
        assert_eq!(action, XDP_DROP);
        assert_eq!(fx.counter("drop_forward_source"), 1);
        // From it, a segment that opens nothing (an ACK, a FIN) makes no session.
        for flags in [
            ACK,
            packets::Flags {
                fin: true,
                ack: true,
                ..ACK
            },
        ] {
            let (action, _) = fx.from_wan(&packets::tcp(
                &wan_hdr(FAR_SERVER, GATEWAY_MAC),
                40000,
                9000,
                flags,
                b"",
            ));
            assert_eq!(action, XDP_DROP);
        }
        assert_eq!(fx.counter("drop_unsolicited_tcp"), 2);
        assert!(fx.maps.sessions.keys().next().is_none(), "no session made");
        // Its SYN goes through.
        let (action, out) = fx.from_wan(&packets::tcp(
            &wan_hdr(FAR_SERVER, GATEWAY_MAC),
            40000,
            9000,
            SYN,
            b"",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(parse_checked(&out).dst, LAN_HOST_A);
    });
}

#[test]
fn a_flood_through_a_forward_takes_the_forwarded_hosts_share_and_no_more() {
    let cfg = FixtureConfig {
        toml: "[limits]\nsessions_per_host = 4\n".into(),
        ..FixtureConfig::default()
    };
    with_fixture(default_tables(), cfg, |fx| {
        forward(fx, &format!("udp 9100 {LAN_HOST_A}")).unwrap();
        let mut through = 0;
        for sport in 30000..30010 {
            let (action, _) = fx.from_wan(&packets::udp(
                &wan_hdr(SERVER, SERVER_MAC),
                sport,
                9100,
                b"x",
            ));
            through += usize::from(action == XDP_REDIRECT);
        }
        assert_eq!(through, 4, "the forwarded host's share of sessions");
        assert_eq!(fx.counter("drop_host_session_quota"), 6);
        // The other LAN host is not touched by it.
        let (action, _) = fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER),
            5000,
            53,
            b"q",
        ));
        assert_eq!(action, XDP_REDIRECT);
    });
}

#[test]
fn the_sweeper_keeps_a_forwards_sessions_which_have_no_mapping_until_they_expire() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        forward(fx, &format!("udp 9200 {LAN_HOST_A}")).unwrap();
        fx.from_wan(&packets::udp(
            &wan_hdr(SERVER, SERVER_MAC),
            30000,
            9200,
            b"x",
        ));
        let key = session(LAN_HOST_A, 9200, SERVER, 30000, IPPROTO_UDP);
        let seen = fx.maps.sessions.get(&key, 0).unwrap().last_seen_ns;
        let t = fx.maps.read_config().unwrap().timeouts;
        // Past the grace an orphan gets, before the UDP timeout.
        let r = sweeper::sweep(&mut fx.maps, &t, seen + 60 * NS).unwrap();
        assert_eq!(r.orphans_removed, 0, "{r:?}");
        assert!(
            fx.maps.sessions.get(&key, 0).is_ok(),
            "the forward's session went"
        );
        let r = sweeper::sweep(&mut fx.maps, &t, seen + 300 * NS + CACHE_LAG_NS).unwrap();
        assert_eq!(r.sessions_expired, 1, "{r:?}");
    });
}

#[test]
fn a_forwarded_port_leaves_the_pool_and_a_port_a_mapping_holds_is_refused() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        // A LAN host's mapping holds 20000 (a free source port is kept).
        fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER),
            20000,
            53,
            b"q",
        ));
        let e = forward(fx, &format!("udp 20000 {LAN_HOST_A}")).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("held by the mapping of 192.168.1.3:20000"),
            "{e}"
        );
        // TCP 20000 is another port: it can be forwarded, and then no mapping takes 20000.
        forward(fx, &format!("tcp 20000 {LAN_HOST_A}")).unwrap();
        let pool = fx.maps.read_drawable().unwrap();
        assert!(
            !pool.ordinary.contains(&20000) && pool.ordinary.contains(&20001),
            "the forwarded port is still drawn, or its neighbour is not"
        );
        let cfg = fx.maps.read_config().unwrap();
        assert_eq!(cfg.pool_len as usize, pool.ordinary.len());
        let (_, out) = fx.from_lan(&packets::tcp(
            &lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER),
            20000,
            80,
            SYN,
            b"",
        ));
        assert_ne!(
            parse_checked(&out).sport,
            20000,
            "a mapping took the forwarded port"
        );
    });
}

#[test]
fn icmp_errors_about_a_forwards_flows_are_translated_both_ways() {
    use packets::{frag_needed, icmp_error, port_unreachable};
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        // A's port 53 has a mapping of its own too (it sent from it before the forward came):
        // errors about the forward's flows must quote the forwarded port all the same.
        let (_, early) = fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, FAR_SERVER),
            53,
            53,
            b"early",
        ));
        assert_ne!(parse_checked(&early).sport, 9300);
        forward(fx, &format!("udp 9300 {LAN_HOST_A}:53")).unwrap();
        // A WAN client's datagram through the forward, as it was on the WAN and on the LAN.
        let on_wan = packets::udp(&wan_hdr(SERVER, SERVER_MAC), 30000, 9300, b"q");
        let (action, on_lan) = fx.from_wan(&on_wan);
        assert_eq!(action, XDP_REDIRECT);
        // Out: A's port unreachable about it reaches the client quoting the client's packet.
        let err = icmp_error(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            port_unreachable(),
            &on_lan,
        );
        let (action, out) = fx.from_lan(&err);
        assert_eq!(
            action,
            XDP_REDIRECT,
            "log: {}",
            fx.counter("drop_icmp_error_no_session")
        );
        assert_eq!(
            out,
            icmp_error(
                &out_hdr(SERVER, SERVER_MAC),
                port_unreachable(),
                &forwarded(&on_wan)
            )
        );
        // In: an error about A's reply (from the forwarded port) reaches A, quoting its reply.
        let reply = packets::udp(&lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER), 53, 30000, b"r");
        let (action, translated) = fx.from_lan(&reply);
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(parse_checked(&translated).sport, 9300);
        let from_gateway = icmp_error(&wan_hdr(GATEWAY, GATEWAY_MAC), frag_needed(), &translated);
        let (action, out) = fx.from_wan(&from_gateway);
        assert_eq!(action, XDP_REDIRECT);
        let to_a = Hdr {
            smac: LAN_MAC,
            dmac: HOST_A_MAC,
            src: GATEWAY,
            dst: LAN_HOST_A,
            ttl: 63,
        };
        assert_eq!(out, icmp_error(&to_a, frag_needed(), &forwarded(&reply)));
        assert_eq!(fx.counter("icmp_error_translated"), 2);
    });
}

#[test]
fn a_forwarded_server_answers_from_its_forwarded_port_and_passthrough_does_not_apply() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        // An IPsec server behind the router, with IPsec passthrough (for LAN clients) off.
        forward(fx, &format!("udp 500 {LAN_HOST_A}")).unwrap();
        fx.maps
            .set_switch(nat_common::passthrough::Switch::Ipsec, false)
            .unwrap();
        let ike = packets::ike(0x1111, 0, 0x08);
        let (action, _) = fx.from_wan(&packets::udp(&wan_hdr(SERVER, SERVER_MAC), 500, 500, &ike));
        assert_eq!(action, XDP_REDIRECT, "the forward lets the initiator in");
        let (action, out) = fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            500,
            500,
            &packets::ike(0x1111, 0x2222, 0x20),
        ));
        assert_eq!(
            action, XDP_REDIRECT,
            "the server's answer is not passthrough"
        );
        assert_eq!(parse_checked(&out).sport, 500);
        assert_eq!(fx.counter("drop_ipsec_switch_off"), 0);
        assert!(
            fx.maps.ike_sas.keys().next().is_none(),
            "no IKE SA of a LAN client made"
        );

        // A new flow of a forwarded endpoint leaves from its forwarded port too.
        forward(fx, &format!("udp 9400 {LAN_HOST_B}:5000")).unwrap();
        let (action, out) = fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER),
            5000,
            53,
            b"q",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(parse_checked(&out).sport, 9400);
        let key = session(LAN_HOST_B, 5000, SERVER, 53, IPPROTO_UDP);
        let s = fx.maps.sessions.get(&key, 0).unwrap();
        assert_eq!(
            s.origin, SESSION_FORWARDED,
            "kept by the sweeper without a mapping"
        );
    });
}

#[test]
fn a_removed_forward_stops_new_flows_keeps_its_sessions_and_goes_when_they_end() {
    // The forwarded port is outside the dynamic pool, so that only the forward keeps it the
    // NAT's when the daemon writes the pool's bitmap again (after a sweep that freed ports).
    let cfg = FixtureConfig {
        port_range: (20000, 30000),
        ..FixtureConfig::default()
    };
    with_fixture(default_tables(), cfg, |fx| {
        // FORWARD_HINTS: the bits that let a new flow skip the forward tables.
        let hinted = |fx: &Fixture, (word, bit): (u32, u64)| {
            fx.maps.forward_hints.get(&word, 0).unwrap() & bit != 0
        };
        assert!(!hinted(fx, external_hint(9500)) && !hinted(fx, lan_hint(5000)));
        forward(fx, &format!("udp 9500 {LAN_HOST_A}:5000")).unwrap();
        assert!(hinted(fx, external_hint(9500)) && hinted(fx, lan_hint(5000)));
        let from_server = |fx: &mut Fixture, sport| {
            fx.from_wan(&packets::udp(
                &wan_hdr(SERVER, SERVER_MAC),
                sport,
                9500,
                b"x",
            ))
            .0
        };
        assert_eq!(from_server(fx, 30000), XDP_REDIRECT);
        let removed = forwards::remove(&mut fx.maps, IPPROTO_UDP, &(9500..=9500)).unwrap();
        assert_eq!(removed.rule.to, LAN_HOST_A);
        let pool = nat_ctl::pool::PortPool::build(20000..=30000, &[22].into());
        fx.maps.write_pool_bitmap(&pool).unwrap();
        // Its session still works, both ways; a new flow does not get in.
        assert_eq!(from_server(fx, 30000), XDP_REDIRECT, "the session was cut");
        let (action, out) = fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            5000,
            30000,
            b"r",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(parse_checked(&out).sport, 9500);
        assert_eq!(from_server(fx, 30001), XDP_DROP, "a new flow got in");
        // Once the session expires, the forward is gone for good.
        let key = session(LAN_HOST_A, 5000, SERVER, 30000, IPPROTO_UDP);
        let seen = fx.maps.sessions.get(&key, 0).unwrap().last_seen_ns;
        let t = fx.maps.read_config().unwrap().timeouts;
        let r = sweeper::sweep(&mut fx.maps, &t, seen + 100 * NS).unwrap();
        assert_eq!(r.forwards_purged, 0, "{r:?}");
        let r = sweeper::sweep(&mut fx.maps, &t, seen + 300 * NS + CACHE_LAG_NS).unwrap();
        assert_eq!((r.sessions_expired, r.forwards_purged), (1, 1), "{r:?}");
        assert!(fx.maps.forwards.keys().next().is_none());
        assert!(fx.maps.forwards_by_lan.keys().next().is_none());
        assert!(!hinted(fx, external_hint(9500)) && !hinted(fx, lan_hint(5000)));
        // And the same forward can be made again.
        forward(fx, &format!("udp 9500 {LAN_HOST_A}:5000")).unwrap();
    });
}

#[test]
fn a_vpn_server_behind_forwards_of_gre_and_esp_is_reached_and_clients_keep_their_calls() {
    use nat_common::proto::{IPPROTO_ESP, IPPROTO_GRE};
    use packets::{addrs, payload};
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        // A PPTP server (TCP 1723 and GRE) and an IPsec server (ESP) on host A.
        forward(fx, &format!("tcp 1723 {LAN_HOST_A}")).unwrap();
        forward(fx, &format!("gre {LAN_HOST_A}")).unwrap();
        let esp_rule = ForwardRule::parse(
            "esp",
            &LAN_HOST_A.to_string(),
            None,
            Some("198.51.100.0/24"),
        )
        .unwrap();
        forwards::add(&mut fx.maps, &esp_rule, FORWARD_FROM_COMMAND).unwrap();
        // Host B is a PPTP client of the server, with a call of its own.
        let b_ext = pptp_call_request(fx, LAN_HOST_B, HOST_B_MAC, 40001, 7);
        // GRE from a remote client no LAN client's call explains: to the server, as it came.
        let gre = packets::gre_v1(4242, 1, b"ppp");
        let (action, out) = fx.from_wan(&packets::ip_proto(
            &wan_hdr(SERVER, SERVER_MAC),
            IPPROTO_GRE,
            &gre,
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(
            (addrs(&out), payload(&out)),
            ((SERVER, LAN_HOST_A), gre.clone())
        );
        parse_checked_ip(&out);
        // B's call is still B's.
        let (action, out) = fx.from_wan(&packets::ip_proto(
            &wan_hdr(SERVER, SERVER_MAC),
            IPPROTO_GRE,
            &packets::gre_v1(b_ext, 1, b"ppp"),
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(addrs(&out).1, LAN_HOST_B);
        // The server's GRE leaves from the WAN address, its call ids as they are, and with
        // PPTP passthrough off: it is not passthrough.
        fx.maps
            .set_switch(nat_common::passthrough::Switch::Pptp, false)
            .unwrap();
        let (action, out) = fx.from_lan(&packets::ip_proto(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            IPPROTO_GRE,
            &packets::gre_v1(77, 2, b"ppp"),
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(
            (addrs(&out), payload(&out)),
            ((ROUTER_WAN, SERVER), packets::gre_v1(77, 2, b"ppp"))
        );
        // ESP: from the forward's prefix only, both ways.
        let esp = packets::esp(0xabcd, 1);
        let (action, _) = fx.from_wan(&packets::ip_proto(
            &wan_hdr(SERVER, SERVER_MAC),
            IPPROTO_ESP,
            &esp,
        ));
        assert_eq!(action, XDP_DROP, "outside the ESP forward's prefix");
        let (action, out) = fx.from_wan(&packets::ip_proto(
            &wan_hdr(FAR_SERVER, GATEWAY_MAC),
            IPPROTO_ESP,
            &esp,
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(
            (addrs(&out), payload(&out)),
            ((FAR_SERVER, LAN_HOST_A), esp.clone())
        );
        let (action, out) = fx.from_lan(&packets::ip_proto(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, FAR_SERVER),
            IPPROTO_ESP,
            &packets::esp(0x1234, 1),
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(addrs(&out), (ROUTER_WAN, FAR_SERVER));
        assert!(fx.counter("tunnel_forwarded") >= 4);
        assert!(
            fx.maps.esp_out.keys().next().is_none(),
            "the server's SPIs are not learned as a client's"
        );
        // Host B, a client, opens an ESP learning window with the server's peer: the peer's
        // ESP under a new SPI is still the server's, never B's.
        let (action, _) = fx.from_lan(&packets::ip_proto(
            &lan_hdr(LAN_HOST_B, HOST_B_MAC, FAR_SERVER),
            IPPROTO_ESP,
            &packets::esp(0x5555, 1),
        ));
        assert_eq!(action, XDP_REDIRECT);
        let (action, out) = fx.from_wan(&packets::ip_proto(
            &wan_hdr(FAR_SERVER, GATEWAY_MAC),
            IPPROTO_ESP,
            &packets::esp(0x7777, 1),
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(
            addrs(&out).1,
            LAN_HOST_A,
            "a client's learning window took the server's ESP"
        );
        // Removed, GRE goes back to being the router's.
        forwards::remove(&mut fx.maps, IPPROTO_GRE, &(0..=0)).unwrap();
        let (action, _) = fx.from_wan(&packets::ip_proto(
            &wan_hdr(SERVER, SERVER_MAC),
            IPPROTO_GRE,
            &gre,
        ));
        assert_eq!(action, XDP_PASS);
    });
}

/// The IPv4 header checksum of `frame` is right.
fn parse_checked_ip(frame: &[u8]) {
    let ip = &frame[14..34];
    assert_eq!(
        nat_common::checksum::checksum(ip),
        0,
        "IPv4 header checksum"
    );
}

/// The configuration of the DMZ fixtures: LAN host B is the DMZ host.
fn dmz_is_host_b() -> FixtureConfig {
    FixtureConfig {
        toml: format!("[dmz]\nhost = \"{LAN_HOST_B}\"\n"),
        ..FixtureConfig::default()
    }
}

/// A WAN host's datagram "from" the resolver (SERVER:53) to port 25000, which no mapping
/// holds: the DMZ host's, with a session; 512 bytes, so its cached flow answers for the
/// shorter answers that follow.
fn spoof_from_the_resolver_to_25000() -> Vec<u8> {
    packets::udp(&wan_hdr(SERVER, SERVER_MAC), 53, 25000, &[0u8; 512])
}

#[test]
fn a_dmz_session_made_by_a_spoofer_never_takes_a_lan_hosts_replies() {
    with_fixture(default_tables(), dmz_is_host_b(), |fx| {
        // A WAN host spoofs the resolver host A will use, to a port nobody holds: the DMZ
        // host gets it, and a session (its flow cached for packets up to this long one).
        let spoof = spoof_from_the_resolver_to_25000();
        let (action, out) = fx.from_wan(&spoof);
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(parse_checked(&out).dst, LAN_HOST_B);
        // Host A then asks that resolver from that very port: the DMZ session holds it, so
        // A's mapping gets another.
        let (action, out) = fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            25000,
            53,
            b"query",
        ));
        assert_eq!(action, XDP_REDIRECT);
        let port = parse_checked(&out).sport;
        assert_ne!(port, 25000, "a port the DMZ host's session holds");
        // The answer is A's, not the DMZ host's; the DMZ host's flow is still its own.
        let answer = |fx: &mut Fixture, port| {
            let h = wan_hdr(SERVER, SERVER_MAC);
            parse_checked(&fx.from_wan(&packets::udp(&h, 53, port, b"answer")).1).dst
        };
        assert_eq!(answer(fx, port), LAN_HOST_A, "the DMZ host got A's answer");
        assert_eq!(answer(fx, 25000), LAN_HOST_B);
        // After a sweep and the rewrite of the taken ports that follows one that freed ports
        // (the daemon's order), the port is still held: the rewrite keeps the ports of live
        // sessions.
        let t = fx.maps.read_config().unwrap().timeouts;
        nat_ctl::sweeper::sweep(&mut fx.maps, &t, nat_ctl::monotonic_ns()).unwrap();
        nat_ctl::sweeper::rewrite_ports_taken(&mut fx.maps).unwrap();
        // (A new LAN endpoint that asks from port 25000, which would keep it if it were free.)
        let c = std::net::Ipv4Addr::new(192, 168, 1, 77);
        let (action, out) = fx.from_lan(&packets::udp(
            &lan_hdr(c, [2, 0, 0, 0, 1, 77], SERVER),
            25000,
            53,
            b"query",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_ne!(parse_checked(&out).sport, 25000);
        // Once the DMZ session has expired, the sweep that removes it frees its port.
        let r = nat_ctl::sweeper::sweep(
            &mut fx.maps,
            &t,
            nat_ctl::monotonic_ns() + t.udp as u64 * NS + CACHE_LAG_NS,
        )
        .unwrap();
        assert!(r.sessions_expired >= 1, "{r:?}");
        let d = std::net::Ipv4Addr::new(192, 168, 1, 78);
        let (action, out) = fx.from_lan(&packets::udp(
            &lan_hdr(d, [2, 0, 0, 0, 1, 78], SERVER),
            25000,
            53,
            b"query",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(parse_checked(&out).sport, 25000, "the port is free again");
    });
}

/// Should a mapping still get a DMZ session's port (a reload rewrites the taken ports from the
/// mappings alone, until the next sweep marks the DMZ's again), the replies it caches are not
/// the DMZ host's: the new session forgets them.
#[test]
fn a_mapping_that_gets_a_dmz_sessions_port_takes_its_cached_replies() {
    with_fixture(default_tables(), dmz_is_host_b(), |fx| {
        // Cached for packets up to this long one.
        let spoof = spoof_from_the_resolver_to_25000();
        assert_eq!(fx.from_wan(&spoof).0, XDP_REDIRECT);
        assert_eq!(fx.counter("flow_cache_filled"), 1);
        let held = fx.maps.mapping_keys().unwrap();
        fx.maps.write_ports_taken(&held).unwrap();
        let (action, out) = fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            25000,
            53,
            b"query",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(parse_checked(&out).sport, 25000, "A keeps its port");
        let h = wan_hdr(SERVER, SERVER_MAC);
        let (action, out) = fx.from_wan(&packets::udp(&h, 53, 25000, b"answer"));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(
            parse_checked(&out).dst,
            LAN_HOST_A,
            "the DMZ host got A's answer"
        );
    });
}
