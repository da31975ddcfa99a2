//! BPF_PROG_TEST_RUN fixtures for ICMP errors (RFC 5508): translated byte for byte in both
//! directions, dropped without a session or with a bad quoted header, never refreshing state.

use integration_tests::{
    fixture::*,
    lab::{LAN_HOST_A, LAN_HOST_B, ROUTER_WAN, SERVER},
    packets::{self, ACK, Hdr, frag_needed, icmp_error, port_unreachable, ttl_exceeded},
};
use nat_common::proto::IPPROTO_UDP;

/// An error from the gateway on the path, about `translated` (a frame we sent out).
fn from_gateway(kind: etherparse::Icmpv4Type, translated: &[u8]) -> Vec<u8> {
    icmp_error(&wan_hdr(GATEWAY, GATEWAY_MAC), kind, translated)
}

/// What host A must receive: the same error quoting the packet as A sent it (less one hop).
fn to_host_a(kind: etherparse::Icmpv4Type, original: &[u8]) -> Vec<u8> {
    let original = &forwarded(original);
    icmp_error(
        &Hdr {
            smac: LAN_MAC,
            dmac: HOST_A_MAC,
            src: GATEWAY,
            dst: LAN_HOST_A,
            ttl: 63,
        },
        kind,
        original,
    )
}

#[test]
fn inbound_errors_quote_the_packet_as_the_lan_host_sent_it() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let cases = [
            (
                "UDP, fragmentation needed",
                packets::udp(
                    &lan_hdr(LAN_HOST_A, HOST_A_MAC, FAR_SERVER),
                    20000,
                    53,
                    b"query",
                ),
                frag_needed(),
            ),
            (
                "TCP, fragmentation needed",
                packets::tcp(
                    &lan_hdr(LAN_HOST_A, HOST_A_MAC, FAR_SERVER),
                    20001,
                    443,
                    ACK,
                    b"data",
                ),
                frag_needed(),
            ),
            (
                "echo, time exceeded (traceroute)",
                packets::icmp_echo(
                    &lan_hdr(LAN_HOST_A, HOST_A_MAC, FAR_SERVER),
                    true,
                    777,
                    1,
                    b"trace",
                ),
                ttl_exceeded(),
            ),
        ];
        for (what, original, kind) in cases {
            let (action, translated) = fx.from_lan(&original);
            assert_eq!(action, XDP_REDIRECT, "{what}");
            let (action, out) = fx.from_wan(&from_gateway(kind.clone(), &translated));
            assert_eq!(action, XDP_REDIRECT, "{what}");
            assert_eq!(out, to_host_a(kind, &original), "{what}: byte for byte");
        }
        assert_eq!(fx.counter("icmp_error_translated"), 3);
    });
}

#[test]
fn outbound_errors_quote_the_packet_as_the_remote_sent_it() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            20000,
            5000,
            b"hi",
        ));
        // The server's datagram as it reached A, and as it was on the WAN.
        let on_wan = packets::udp(&wan_hdr(SERVER, SERVER_MAC), 5000, 20000, b"late");
        let (_, on_lan) = fx.from_wan(&on_wan);
        // A has closed the socket: port unreachable.
        let err = icmp_error(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            port_unreachable(),
            &on_lan,
        );
        let (action, out) = fx.from_lan(&err);
        assert_eq!(action, XDP_REDIRECT);
        let want = icmp_error(
            &out_hdr(SERVER, SERVER_MAC),
            port_unreachable(),
            &forwarded(&on_wan),
        );
        assert_eq!(
            out, want,
            "the server sees its own packet quoted, from the WAN address"
        );
    });
}

#[test]
fn errors_without_a_session_or_with_a_bad_quote_are_dropped_and_refresh_nothing() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let original = packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, FAR_SERVER),
            20000,
            53,
            b"q",
        );
        let (_, translated) = fx.from_lan(&original);
        let before = fx.maps.sessions().unwrap();

        // Quoting a flow to another remote through the same mapping: no such session.
        let mut other = translated.clone();
        other[14 + 19] ^= 1; // quoted destination address
        other[14 + 10] = 0;
        other[14 + 11] = 0;
        let c = nat_common::checksum::checksum(&other[14..34]);
        other[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            fx.from_wan(&from_gateway(frag_needed(), &other)).0,
            XDP_DROP
        );
        assert_eq!(fx.counter("drop_icmp_error_no_session"), 1);

        // A quoted header with a bad checksum.
        let mut bad = translated.clone();
        bad[14 + 10] ^= 0xff;
        assert_eq!(fx.from_wan(&from_gateway(frag_needed(), &bad)).0, XDP_DROP);
        assert_eq!(fx.counter("drop_icmp_error_bad_checksum"), 1);

        // Errors never touch sessions (RFC 5508 REQ-4), not even the good one.
        fx.from_wan(&from_gateway(frag_needed(), &translated));
        assert_eq!(fx.maps.sessions().unwrap(), before);
        assert!(
            fx.maps
                .sessions()
                .unwrap()
                .iter()
                .all(|(k, _)| k.proto == IPPROTO_UDP)
        );

        // About the router's own traffic (a port outside the pool): the router's business.
        let own = packets::udp(
            &Hdr {
                src: ROUTER_WAN,
                ..out_hdr(FAR_SERVER, GATEWAY_MAC)
            },
            ROUTER_SSH,
            53,
            b"q",
        );
        let err = from_gateway(frag_needed(), &own);
        assert_eq!(fx.from_wan(&err), (XDP_PASS, err.clone()));
    });
}

#[test]
fn the_icmp_checksum_of_an_error_is_verified() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let original = packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, FAR_SERVER),
            20000,
            53,
            b"query",
        );
        let (_, translated) = fx.from_lan(&original);
        // The MTU field changed in transit: the ICMP checksum no longer matches.
        let mut bad = from_gateway(frag_needed(), &translated);
        bad[14 + 20 + 7] ^= 0x10;
        assert_eq!(fx.from_wan(&bad).0, XDP_DROP);
        assert_eq!(fx.counter("drop_icmp_error_bad_checksum"), 1);
        // An odd-length error (one byte more of the quoted packet) is checked and translated.
        let mut odd = Vec::new();
        etherparse::PacketBuilder::ethernet2(GATEWAY_MAC, WAN_MAC)
            .ipv4(GATEWAY.octets(), ROUTER_WAN.octets(), 64)
            .icmpv4(frag_needed())
            .write(&mut odd, &translated[14..14 + 29])
            .unwrap();
        let (action, out) = fx.from_wan(&odd);
        assert_eq!(action, XDP_REDIRECT);
        packets::parse_checked(&out);
        assert_eq!(fx.counter("drop_icmp_error_bad_checksum"), 1);
    });
}

#[test]
fn hairpinned_errors_go_back_to_the_sender_quoting_its_packet() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        // B is 203.0.113.1:21000 outside; A hairpins a datagram to it.
        fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER),
            21000,
            53,
            b"q",
        ));
        let from_a = packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, ROUTER_WAN),
            20000,
            21000,
            b"hi B",
        );
        let (action, at_b) = fx.from_lan(&from_a);
        assert_eq!(action, XDP_REDIRECT);
        // B has no socket there: port unreachable, to the address it saw (the WAN address).
        let err = icmp_error(
            &lan_hdr(LAN_HOST_B, HOST_B_MAC, ROUTER_WAN),
            port_unreachable(),
            &at_b,
        );
        let (action, out) = fx.from_lan(&err);
        assert_eq!(action, XDP_REDIRECT);
        // A gets it from B's external address, quoting its own datagram as A sent it.
        let want = icmp_error(
            &Hdr {
                smac: LAN_MAC,
                dmac: HOST_A_MAC,
                src: ROUTER_WAN,
                dst: LAN_HOST_A,
                ttl: 63,
            },
            port_unreachable(),
            &forwarded(&from_a),
        );
        assert_eq!(out, want);
        assert_eq!(fx.counter("icmp_error_translated"), 1);
    });
}

/// Opens host A's PPTP call to the server (client call id 7, the server's 900); returns the
/// external call id the server knows A's call by.
fn pptp_call_of_a(fx: &mut Fixture) -> u16 {
    let ext_call = pptp_call_request(fx, LAN_HOST_A, HOST_A_MAC, 40000, 7);
    let reply = packets::pptp_ctrl(nat_common::vpn::PPTP_OUT_CALL_REPLY, 900, ext_call);
    let (action, _) = fx.from_wan(&packets::tcp(
        &wan_hdr(SERVER, SERVER_MAC),
        1723,
        fx.external_port(LAN_HOST_A),
        ACK,
        &reply,
    ));
    assert_eq!(action, XDP_REDIRECT);
    ext_call
}

/// Errors about ESP and GRE that LAN hosts sent (fragmentation needed on a tunnel, the
/// common case) go to the host that sent the packet, quoting it as the host sent it.
#[test]
fn inbound_errors_about_esp_and_gre_reach_the_host_that_sent_them() {
    use nat_common::proto::{IPPROTO_ESP, IPPROTO_GRE};
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        pptp_call_of_a(fx);
        let cases = [
            (
                "ESP of A",
                packets::ip_proto(
                    &lan_hdr(LAN_HOST_A, HOST_A_MAC, FAR_SERVER),
                    IPPROTO_ESP,
                    &packets::esp(0xa0, 1),
                ),
            ),
            (
                "GRE of A's call (the server's call id)",
                packets::ip_proto(
                    &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
                    IPPROTO_GRE,
                    &packets::gre_v1(900, 1, &[0xff; 1400]),
                ),
            ),
        ];
        for (what, original, kind) in cases.map(|(w, o)| (w, o, frag_needed())) {
            let (action, translated) = fx.from_lan(&original);
            assert_eq!(action, XDP_REDIRECT, "{what}");
            let (action, out) = fx.from_wan(&from_gateway(kind.clone(), &translated));
            assert_eq!(action, XDP_REDIRECT, "{what}");
            assert_eq!(out, to_host_a(kind, &original), "{what}: byte for byte");
        }
        assert_eq!(fx.counter("icmp_error_translated"), 2);

        // B's own SA with another server: its errors go to B, not A.
        let b_esp = packets::ip_proto(
            &lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER),
            IPPROTO_ESP,
            &packets::esp(0xb0, 1),
        );
        let (_, translated) = fx.from_lan(&b_esp);
        let (action, out) = fx.from_wan(&from_gateway(frag_needed(), &translated));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(packets::addrs(&out).1, LAN_HOST_B);

        // About a call id or SPI no LAN host sends: the router's own tunnel.
        let routers =
            |proto, payload: &[u8]| packets::ip_proto(&out_hdr(SERVER, SERVER_MAC), proto, payload);
        for about in [
            routers(IPPROTO_GRE, &packets::gre_v1(901, 1, b"ppp")),
            routers(IPPROTO_ESP, &packets::esp(0xc0, 1)),
        ] {
            let (action, _) = fx.from_wan(&from_gateway(frag_needed(), &about));
            assert_eq!(action, XDP_PASS);
        }
    });
}

/// A LAN host's error about ESP or GRE it received goes to the server quoting the packet as
/// the server sent it (the WAN address; for GRE the external call id).
#[test]
fn outbound_errors_about_esp_and_gre_quote_the_packet_as_the_server_sent_it() {
    use nat_common::proto::{IPPROTO_ESP, IPPROTO_GRE};
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let ext_call = pptp_call_of_a(fx);
        // A's SA opens the learning window; the server's SPI 0xa1 binds to A.
        fx.from_lan(&packets::ip_proto(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            IPPROTO_ESP,
            &packets::esp(0xa0, 1),
        ));
        let wan = wan_hdr(SERVER, SERVER_MAC);
        for (what, on_wan) in [
            (
                "ESP",
                packets::ip_proto(&wan, IPPROTO_ESP, &packets::esp(0xa1, 1)),
            ),
            (
                "GRE",
                packets::ip_proto(&wan, IPPROTO_GRE, &packets::gre_v1(ext_call, 1, b"ppp")),
            ),
        ] {
            let (action, on_lan) = fx.from_wan(&on_wan);
            assert_eq!(action, XDP_REDIRECT, "{what}");
            let err = icmp_error(
                &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
                packets::host_unreachable(),
                &on_lan,
            );
            let (action, out) = fx.from_lan(&err);
            assert_eq!(action, XDP_REDIRECT, "{what}");
            let want = icmp_error(
                &out_hdr(SERVER, SERVER_MAC),
                packets::host_unreachable(),
                &forwarded(&on_wan),
            );
            assert_eq!(out, want, "{what}: the server sees its own packet quoted");
        }
        // B claiming A's SA in an error: refused.
        let (_, on_lan) = fx.from_wan(&packets::ip_proto(
            &wan,
            IPPROTO_ESP,
            &packets::esp(0xa1, 2),
        ));
        let mut lie = on_lan.clone();
        lie[14 + 16..14 + 20].copy_from_slice(&LAN_HOST_B.octets());
        lie[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
        let c = nat_common::checksum::checksum(&lie[14..34]);
        lie[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
        let err = icmp_error(
            &lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER),
            packets::host_unreachable(),
            &lie,
        );
        assert_eq!(fx.from_lan(&err).0, XDP_DROP);
        assert_eq!(fx.counter("drop_icmp_error_no_session"), 1);
    });
}
