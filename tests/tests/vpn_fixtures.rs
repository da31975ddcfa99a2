//! BPF_PROG_TEST_RUN fixtures for VPN passthrough: PPTP control rewrites (checksums checked),
//! GRE both ways, IKE demultiplexing by SPI, raw-ESP SPI learning, AH, and each switch off.

use integration_tests::{
    fixture::*,
    lab::{LAN_HOST_A, LAN_HOST_B, ROUTER_WAN, SERVER},
    packets::{self, ACK, addrs, parse_checked, payload, pptp_ctrl, pptp_ids},
};
use nat_common::{
    passthrough::{CLASS_IPSEC, CLASS_L2TP, CLASS_PPTP, Switch},
    proto::{IPPROTO_AH, IPPROTO_ESP, IPPROTO_GRE},
    vpn::{PPTP_IN_CALL_CONNECTED, PPTP_OUT_CALL_REPLY, PPTP_OUT_CALL_REQUEST},
};
use nat_ctl::passthrough;

const A_PORT: u16 = 40000;
const B_PORT: u16 = 40001;

#[test]
fn pptp_two_clients_same_call_id_same_server() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let a_ext = pptp_call_request(fx, LAN_HOST_A, HOST_A_MAC, A_PORT, 7);
        let b_ext = pptp_call_request(fx, LAN_HOST_B, HOST_B_MAC, B_PORT, 7);
        assert_eq!(a_ext, 7, "the first client keeps its call id");
        assert_ne!(b_ext, 7, "the second gets its own external call id");
        assert_eq!(fx.counter("pptp_call_created"), 2);

        // Outgoing-Call-Reply to B's control connection names B's external id as the peer.
        let b_ext_port = fx.external_port(LAN_HOST_B);
        let reply = packets::tcp(
            &wan_hdr(SERVER, SERVER_MAC),
            1723,
            b_ext_port,
            ACK,
            &pptp_ctrl(PPTP_OUT_CALL_REPLY, 900, b_ext),
        );
        let (action, out) = fx.from_wan(&reply);
        assert_eq!(action, XDP_REDIRECT);
        let seen = parse_checked(&out);
        assert_eq!((seen.dst, seen.dport), (LAN_HOST_B, B_PORT));
        assert_eq!(
            pptp_ids(&payload(&out)),
            (900, 7),
            "peer call id back to B's own"
        );

        // Server -> client GRE carries the external call id; each client gets its own.
        for (ext, host) in [(a_ext, LAN_HOST_A), (b_ext, LAN_HOST_B)] {
            let gre = packets::ip_proto(
                &wan_hdr(SERVER, SERVER_MAC),
                IPPROTO_GRE,
                &packets::gre_v1(ext, 1, b"ppp"),
            );
            let (action, out) = fx.from_wan(&gre);
            assert_eq!(action, XDP_REDIRECT, "GRE for call {ext}");
            assert_eq!(addrs(&out), (SERVER, host));
            assert_eq!(
                payload(&out),
                packets::gre_v1(7, 1, b"ppp"),
                "call id back to the client's"
            );
        }
        // Client -> server GRE carries the server's call id: only the source changes.
        let gre = packets::ip_proto(
            &lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER),
            IPPROTO_GRE,
            &packets::gre_v1(900, 5, b"ppp"),
        );
        let (action, out) = fx.from_lan(&gre);
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(addrs(&out), (ROUTER_WAN, SERVER));
        assert_eq!(payload(&out), packets::gre_v1(900, 5, b"ppp"));
        assert!(fx.counter("pptp_translated") >= 6);
    });
}

#[test]
fn pptp_several_calls_in_one_control_connection() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let first = pptp_call_request(fx, LAN_HOST_A, HOST_A_MAC, A_PORT, 1);
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        let (_, out) = fx.from_lan(&packets::tcp(
            &h,
            A_PORT,
            1723,
            ACK,
            &pptp_ctrl(PPTP_OUT_CALL_REQUEST, 2, 0),
        ));
        let second = pptp_ids(&payload(&out)).0;
        assert_eq!((first, second), (1, 2));
        assert_eq!(fx.maps.pptp_calls().unwrap().len(), 2);
        // Incoming-Call-Connected for call 2 goes back with the client's id.
        let (_, out) = fx.from_wan(&packets::tcp(
            &wan_hdr(SERVER, SERVER_MAC),
            1723,
            A_PORT,
            ACK,
            &pptp_ctrl(PPTP_IN_CALL_CONNECTED, 2, 0),
        ));
        parse_checked(&out);
        assert_eq!(pptp_ids(&payload(&out)).0, 2);
    });
}

#[test]
fn pptp_malformed_and_split_control_messages_are_not_rewritten() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        pptp_call_request(fx, LAN_HOST_A, HOST_A_MAC, A_PORT, 7);
        pptp_call_request(fx, LAN_HOST_B, HOST_B_MAC, B_PORT, 8);
        let h = lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER);
        // Truncated: claims 168 bytes, carries 100 (the rest would follow in another segment).
        let msg = pptp_ctrl(PPTP_OUT_CALL_REQUEST, 7, 0);
        let (action, out) = fx.from_lan(&packets::tcp(&h, B_PORT, 1723, ACK, &msg[..100]));
        assert_eq!(action, XDP_REDIRECT);
        parse_checked(&out);
        assert_eq!(payload(&out), msg[..100].to_vec(), "forwarded as it was");
        // A bogus length field.
        let mut bogus = pptp_ctrl(PPTP_OUT_CALL_REQUEST, 7, 0);
        bogus[0..2].copy_from_slice(&9999u16.to_be_bytes());
        let (_, out) = fx.from_lan(&packets::tcp(&h, B_PORT, 1723, ACK, &bogus));
        assert_eq!(payload(&out), bogus);
        assert_eq!(fx.counter("pass_pptp_unparsed"), 2);
        assert_eq!(
            fx.maps.pptp_calls().unwrap().len(),
            2,
            "no call created from them"
        );
    });
}

#[test]
fn gre_that_is_not_pptp() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let mut v0 = packets::gre_v1(7, 1, b"x");
        v0[1] = 0x00; // version 0: plain GRE
        let out_frame =
            packets::ip_proto(&lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER), IPPROTO_GRE, &v0);
        assert_eq!(fx.from_lan(&out_frame).0, XDP_DROP);
        assert_eq!(fx.counter("drop_gre_malformed"), 1);
        // To the router: its own business.
        let in_frame = packets::ip_proto(&wan_hdr(SERVER, SERVER_MAC), IPPROTO_GRE, &v0);
        let (action, out) = fx.from_wan(&in_frame);
        assert_eq!((action, out), (XDP_PASS, in_frame));
        let unknown = packets::ip_proto(
            &wan_hdr(SERVER, SERVER_MAC),
            IPPROTO_GRE,
            &packets::gre_v1(4242, 1, b"x"),
        );
        assert_eq!(fx.from_wan(&unknown).0, XDP_PASS);
        assert_eq!(fx.counter("pass_gre_unknown_call"), 2);
    });
}

#[test]
fn ike_clients_share_port_500_and_are_told_apart_by_spi() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        for (host, mac, spi) in [
            (LAN_HOST_A, HOST_A_MAC, 0x1111u64),
            (LAN_HOST_B, HOST_B_MAC, 0x2222),
        ] {
            let (action, out) = fx.from_lan(&packets::udp(
                &lan_hdr(host, mac, SERVER),
                500,
                500,
                &packets::ike(spi, 0, 0x08),
            ));
            assert_eq!(action, XDP_REDIRECT);
            let seen = parse_checked(&out);
            assert_eq!(
                (seen.src, seen.sport),
                (ROUTER_WAN, 500),
                "both leave from port 500"
            );
        }
        for (host, spi) in [(LAN_HOST_B, 0x2222u64), (LAN_HOST_A, 0x1111)] {
            let resp = packets::udp(
                &wan_hdr(SERVER, SERVER_MAC),
                500,
                500,
                &packets::ike(spi, 0x9999, 0x20),
            );
            let (action, out) = fx.from_wan(&resp);
            assert_eq!(action, XDP_REDIRECT);
            let seen = parse_checked(&out);
            assert_eq!((seen.dst, seen.dport), (host, 500), "SPI {spi:#x}");
        }
        let stray = packets::udp(
            &wan_hdr(SERVER, SERVER_MAC),
            500,
            500,
            &packets::ike(0x3333, 1, 0x20),
        );
        assert_eq!(fx.from_wan(&stray).0, XDP_DROP, "unknown SPI");
        // A second host reusing A's SPI towards the same server is refused, never mixed up.
        let clash = packets::udp(
            &lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER),
            500,
            500,
            &packets::ike(0x1111, 0, 0x08),
        );
        assert_eq!(fx.from_lan(&clash).0, XDP_DROP);
        assert_eq!(fx.counter("drop_ike_spi_in_use"), 1);
        assert_eq!(fx.maps.ike_sa_list().unwrap().len(), 2);
    });
}

#[test]
fn nat_t_and_l2tp_are_endpoint_independent_udp() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let mut ports = Vec::new();
        let marker_and_ike = [&[0u8; 4][..], &packets::ike(5, 6, 0x08)].concat();
        for (host, mac) in [(LAN_HOST_A, HOST_A_MAC), (LAN_HOST_B, HOST_B_MAC)] {
            let (action, out) = fx.from_lan(&packets::udp(
                &lan_hdr(host, mac, SERVER),
                4500,
                4500,
                &marker_and_ike,
            ));
            assert_eq!(action, XDP_REDIRECT);
            assert_eq!(
                payload(&out),
                marker_and_ike,
                "non-ESP marker and IKE untouched"
            );
            ports.push(parse_checked(&out).sport);
        }
        assert_eq!(ports[0], 4500);
        assert_ne!(ports[1], 4500);
        // NAT-T keepalive (one 0xff byte) back to B.
        let (action, out) = fx.from_wan(&packets::udp(
            &wan_hdr(SERVER, SERVER_MAC),
            4500,
            ports[1],
            &[0xff],
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(parse_checked(&out).dst, LAN_HOST_B);
        let (_, out) = fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            1701,
            1701,
            b"l2tp",
        ));
        assert_eq!(parse_checked(&out).sport, 1701, "L2TP keeps 1701 when free");
        assert_eq!(fx.counter("l2tp_translated"), 1);
        assert!(fx.counter("ipsec_translated") >= 3);
    });
}

#[test]
fn datagrams_from_500_to_500_that_are_not_ike_take_ordinary_napt() {
    // An ALG never drops what it cannot parse.
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        let (action, out) = fx.from_lan(&packets::udp(&h, 500, 500, b"not IKE"));
        assert_eq!(action, XDP_REDIRECT);
        let ext = u16::from_be_bytes([out[34], out[35]]);
        assert_ne!(ext, 500, "an ordinary mapping, never the shared port");
        assert_eq!(fx.counter("drop_ike_malformed"), 0);
        let (action, out) = fx.from_wan(&packets::udp(
            &wan_hdr(SERVER, SERVER_MAC),
            500,
            ext,
            b"reply",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(addrs(&out), (SERVER, LAN_HOST_A));
        assert_eq!(u16::from_be_bytes([out[36], out[37]]), 500);
    });
}

#[test]
fn the_shared_ike_port_is_never_an_ordinary_mapping() {
    // Found by the model (model_fixtures.rs): an ordinary UDP mapping on external port 500,
    // kept from its source port or drawn at random, took the IKE replies no SPI explained.
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        let (action, out) = fx.from_lan(&packets::udp(&h, 500, 7000, b"not IKE's port pair"));
        assert_eq!(action, XDP_REDIRECT);
        let ext = u16::from_be_bytes([out[34], out[35]]);
        assert_ne!(ext, 500, "source port 500 kept for an ordinary mapping");
        // An IKE reply from that server with an SPI no LAN host started goes nowhere.
        let reply = packets::udp(
            &wan_hdr(SERVER, SERVER_MAC),
            500,
            500,
            &packets::ike(0x99, 1, 0x20),
        );
        assert_eq!(fx.from_wan(&reply).0, XDP_DROP);
    });
}

#[test]
fn esp_spi_learning_one_learner_per_server() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let esp_out = |host, mac, server, spi| {
            packets::ip_proto(
                &lan_hdr(host, mac, server),
                IPPROTO_ESP,
                &packets::esp(spi, 1),
            )
        };
        let esp_in = |server, spi| {
            packets::ip_proto(
                &wan_hdr(server, SERVER_MAC),
                IPPROTO_ESP,
                &packets::esp(spi, 1),
            )
        };
        // A window lasts ESP_PENDING_NS; the clock is bpf_ktime's (coarse).
        let window = || std::thread::sleep(std::time::Duration::from_millis(1100));
        let (action, out) = fx.from_lan(&esp_out(LAN_HOST_A, HOST_A_MAC, SERVER, 0xa0));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(addrs(&out), (ROUTER_WAN, SERVER));
        // B must wait while A learns.
        assert_eq!(
            fx.from_lan(&esp_out(LAN_HOST_B, HOST_B_MAC, SERVER, 0xb0))
                .0,
            XDP_DROP
        );
        assert_eq!(fx.counter("drop_esp_learn_busy"), 1);
        // A made-up SPI spoofed from the server's address during A's window binds to A, and
        // does not keep A's real SPI, which comes after it, from binding too.
        let (action, out) = fx.from_wan(&esp_in(SERVER, 0x5f));
        assert_eq!((action, addrs(&out)), (XDP_REDIRECT, (SERVER, LAN_HOST_A)));
        let (action, out) = fx.from_wan(&esp_in(SERVER, 0xa1));
        assert_eq!((action, addrs(&out)), (XDP_REDIRECT, (SERVER, LAN_HOST_A)));
        // The window runs its time: B still waits.
        assert_eq!(
            fx.from_lan(&esp_out(LAN_HOST_B, HOST_B_MAC, SERVER, 0xb0))
                .0,
            XDP_DROP
        );
        window();
        // Now B learns.
        assert_eq!(
            fx.from_lan(&esp_out(LAN_HOST_B, HOST_B_MAC, SERVER, 0xb0))
                .0,
            XDP_REDIRECT
        );
        assert_eq!(
            addrs(&fx.from_wan(&esp_in(SERVER, 0xb1)).1),
            (SERVER, LAN_HOST_B)
        );
        // Learned SPIs keep their owners.
        assert_eq!(
            addrs(&fx.from_wan(&esp_in(SERVER, 0xa1)).1),
            (SERVER, LAN_HOST_A)
        );
        assert_eq!(
            addrs(&fx.from_wan(&esp_in(SERVER, 0xb1)).1),
            (SERVER, LAN_HOST_B)
        );
        // Once B's window is over, a further outbound packet of A goes out and does not start
        // learning again (A's SA is learned): an unknown SPI right after it is the router's.
        window();
        assert_eq!(
            fx.from_lan(&esp_out(LAN_HOST_A, HOST_A_MAC, SERVER, 0xa0))
                .0,
            XDP_REDIRECT
        );
        let (action, _) = fx.from_wan(&esp_in(SERVER, 0xc1));
        assert_eq!(
            action, XDP_PASS,
            "an unknown SPI with no learner is the router's"
        );
        assert_eq!(fx.counter("esp_spi_learned"), 3);
        assert_eq!(fx.counter("pass_esp_unknown_spi"), 1);
    });
}

#[test]
fn esp_learning_gives_the_slot_back_and_a_spray_binds_little() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let esp_out = |host, mac, spi| {
            packets::ip_proto(
                &lan_hdr(host, mac, FAR_SERVER),
                IPPROTO_ESP,
                &packets::esp(spi, 1),
            )
        };
        let esp_in = |spi| {
            packets::ip_proto(
                &wan_hdr(FAR_SERVER, GATEWAY_MAC),
                IPPROTO_ESP,
                &packets::esp(spi, 1),
            )
        };
        let window = || std::thread::sleep(std::time::Duration::from_millis(1100));
        // A's server never answers; A keeps sending. Its retransmissions do not extend its
        // window, and once the window is over B gets the next one, not A.
        assert_eq!(
            fx.from_lan(&esp_out(LAN_HOST_A, HOST_A_MAC, 0xa0)).0,
            XDP_REDIRECT
        );
        assert_eq!(
            fx.from_lan(&esp_out(LAN_HOST_A, HOST_A_MAC, 0xa0)).0,
            XDP_REDIRECT
        );
        window();
        assert_eq!(
            fx.from_lan(&esp_out(LAN_HOST_A, HOST_A_MAC, 0xa0)).0,
            XDP_DROP,
            "A's turn cools down"
        );
        assert_eq!(
            fx.from_lan(&esp_out(LAN_HOST_B, HOST_B_MAC, 0xb0)).0,
            XDP_REDIRECT
        );
        assert_eq!(
            fx.from_lan(&esp_out(LAN_HOST_A, HOST_A_MAC, 0xa0)).0,
            XDP_DROP
        );
        // A spray of made-up SPIs during B's window binds a few to B, then is dropped.
        let limit = nat_common::maps::MAX_ESP_BINDINGS_PER_WINDOW;
        for spi in 0..limit + 3 {
            let (action, out) = fx.from_wan(&esp_in(0x1000 + spi as u32));
            if spi < limit {
                assert_eq!(
                    (action, addrs(&out)),
                    (XDP_REDIRECT, (FAR_SERVER, LAN_HOST_B))
                );
            } else {
                assert_eq!(action, XDP_DROP, "spray SPI {spi}");
            }
        }
        assert_eq!(fx.counter("drop_esp_learn_limit"), 3);
        assert_eq!(fx.maps.esp_bindings().unwrap().len() as u64, limit);
        // A peer the router itself runs IKE with (the egress saw its IKE): an unknown SPI
        // from it is the router's, even while a LAN host learns from it.
        fx.maps
            .router_ipsec_peers
            .insert(
                u32::from_ne_bytes(FAR_SERVER.octets()),
                nat_ctl::monotonic_ns(),
                0,
            )
            .unwrap();
        window();
        assert_eq!(
            fx.from_lan(&esp_out(LAN_HOST_A, HOST_A_MAC, 0xa0)).0,
            XDP_REDIRECT
        );
        let (action, _) = fx.from_wan(&esp_in(0x2000));
        assert_eq!(action, XDP_PASS);
        assert_eq!(fx.counter("pass_esp_router_peer"), 1);
    });
}

#[test]
fn ah_cannot_cross_the_nat() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let ah = packets::ip_proto(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            IPPROTO_AH,
            &[0u8; 24],
        );
        assert_eq!(fx.from_lan(&ah).0, XDP_DROP);
        assert_eq!(fx.counter("drop_ah"), 1);
    });
}

#[test]
fn each_switch_off_blocks_its_traffic_both_ways_and_nothing_else() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        // Establish one flow of every class, and an ordinary one.
        let a_ext = pptp_call_request(fx, LAN_HOST_A, HOST_A_MAC, A_PORT, 7);
        fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            1701,
            1701,
            b"l2tp",
        ));
        fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            4500,
            4500,
            &[0xff],
        ));
        fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            33000,
            53,
            b"dns",
        ));

        let gre_in = packets::ip_proto(
            &wan_hdr(SERVER, SERVER_MAC),
            IPPROTO_GRE,
            &packets::gre_v1(a_ext, 1, b"p"),
        );
        let gre_out = packets::ip_proto(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            IPPROTO_GRE,
            &packets::gre_v1(900, 1, b"p"),
        );
        let l2tp_in = packets::udp(&wan_hdr(SERVER, SERVER_MAC), 1701, 1701, b"l2tp");
        let l2tp_out = packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            1701,
            1701,
            b"l2tp",
        );
        let natt_in = packets::udp(&wan_hdr(SERVER, SERVER_MAC), 4500, 4500, &[0xff]);
        let esp_out = packets::ip_proto(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            IPPROTO_ESP,
            &packets::esp(0xa0, 1),
        );
        let dns_in = packets::udp(&wan_hdr(SERVER, SERVER_MAC), 53, 33000, b"answer");
        let ping = packets::icmp_echo(&lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER), true, 99, 1, b"");

        for (class, counter) in [
            (CLASS_PPTP, "drop_pptp_switch_off"),
            (CLASS_L2TP, "drop_l2tp_switch_off"),
            (CLASS_IPSEC, "drop_ipsec_switch_off"),
        ] {
            passthrough::set(&mut fx.maps, Switch::of_class(class).unwrap(), false).unwrap();
            let blocked: Vec<&Vec<u8>> = match class {
                CLASS_PPTP => vec![&gre_out],
                CLASS_L2TP => vec![&l2tp_out, &l2tp_in],
                _ => vec![&esp_out, &natt_in],
            };
            let before = fx.counter(counter);
            for f in &blocked {
                let from_lan = f[6..12] != SERVER_MAC;
                let action = if from_lan {
                    fx.from_lan(f).0
                } else {
                    fx.from_wan(f).0
                };
                assert_eq!(action, XDP_DROP, "class {class} off");
            }
            assert_eq!(fx.counter(counter), before + blocked.len() as u64);
            if class == CLASS_PPTP {
                // The call state is gone with the switch: GRE for it is no longer translated.
                assert_ne!(fx.from_wan(&gre_in).0, XDP_REDIRECT);
                assert!(fx.maps.pptp_calls().unwrap().is_empty());
            }
            assert!(
                fx.maps
                    .sessions()
                    .unwrap()
                    .iter()
                    .all(|(_, s)| s.class != class),
                "sessions of class {class} removed"
            );
            // Ordinary traffic is untouched.
            assert_eq!(fx.from_wan(&dns_in).0, XDP_REDIRECT);
            assert_eq!(fx.from_lan(&ping).0, XDP_REDIRECT);
            // On again: new flows start.
            passthrough::set(&mut fx.maps, Switch::of_class(class).unwrap(), true).unwrap();
        }
        assert_eq!(fx.from_lan(&l2tp_out).0, XDP_REDIRECT);
        assert_eq!(fx.from_lan(&gre_out).0, XDP_REDIRECT);
        assert_eq!(fx.from_lan(&esp_out).0, XDP_REDIRECT);
    });
}

/// By default no LAN host can fill a VPN table: one that sprays IKE_SA_INITs with ever new
/// SPIs (or opens ESP SAs, learning windows and PPTP calls without end) holds at most its
/// share, DEFAULT_VPN_STATE_PER_HOST entries of them together, and the other hosts' VPNs
/// still start.
#[test]
fn by_default_one_host_cannot_fill_the_vpn_tables() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let quota = nat_common::maps::DEFAULT_VPN_STATE_PER_HOST;
        let ike = |host, mac, spi: u64| {
            packets::udp(
                &lan_hdr(host, mac, SERVER),
                500,
                500,
                &packets::ike(spi, 0, 0x08),
            )
        };
        let mut passed = 0;
        for spi in 1..=u64::from(nat_common::maps::DEFAULT_MAX_IKE_SAS) + 10 {
            passed += u32::from(fx.from_lan(&ike(LAN_HOST_A, HOST_A_MAC, spi)).0 == XDP_REDIRECT);
        }
        assert_eq!(passed, quota, "A's share of the IKE SAs");
        assert!(fx.counter("drop_host_vpn_quota") > 0);
        // The share covers every kind of VPN state: A gets no ESP SA and no PPTP call either.
        let esp = |host, mac, spi| {
            packets::ip_proto(
                &lan_hdr(host, mac, SERVER),
                IPPROTO_ESP,
                &packets::esp(spi, 1),
            )
        };
        let refused = fx.counter("drop_host_vpn_quota");
        assert_eq!(fx.from_lan(&esp(LAN_HOST_A, HOST_A_MAC, 0xa0)).0, XDP_DROP);
        assert_eq!(
            fx.counter("drop_host_vpn_quota"),
            refused + 1,
            "refused for A's share"
        );
        // B, meanwhile, starts IKE, an ESP SA and a PPTP call.
        assert_eq!(
            fx.from_lan(&ike(LAN_HOST_B, HOST_B_MAC, 0xb1b1)).0,
            XDP_REDIRECT
        );
        assert_eq!(
            fx.from_lan(&esp(LAN_HOST_B, HOST_B_MAC, 0xb0)).0,
            XDP_REDIRECT
        );
        let b_ext = pptp_call_request(fx, LAN_HOST_B, HOST_B_MAC, B_PORT, 7);
        assert_ne!(b_ext, 0);
        assert_eq!(fx.counter("pptp_call_created"), 1);
        // When A's SAs expire, the sweeper's recount gives A room again.
        let t = fx.maps.read_config().unwrap().timeouts;
        let later = nat_ctl::monotonic_ns() + (u64::from(t.udp) + 1) * 1_000_000_000;
        nat_ctl::sweeper::sweep(&mut fx.maps, &t, later).unwrap();
        assert_eq!(
            fx.from_lan(&ike(LAN_HOST_A, HOST_A_MAC, 0x7777)).0,
            XDP_REDIRECT
        );
    });
}

/// `[limits] vpn_state_per_host` sets the share.
#[test]
fn the_vpn_state_share_is_configurable() {
    let cfg = FixtureConfig {
        toml: "[limits]\nvpn_state_per_host = 2\n".into(),
        ..FixtureConfig::default()
    };
    with_fixture(default_tables(), cfg, |fx| {
        let ike = |spi: u64| {
            packets::udp(
                &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
                500,
                500,
                &packets::ike(spi, 0, 0x08),
            )
        };
        assert_eq!(fx.from_lan(&ike(1)).0, XDP_REDIRECT);
        let call = pptp_call_request(fx, LAN_HOST_A, HOST_A_MAC, A_PORT, 9);
        assert_eq!(call, 9, "the second entry: a PPTP call");
        assert_eq!(fx.from_lan(&ike(2)).0, XDP_DROP, "a third entry");
        assert_eq!(fx.counter("drop_host_vpn_quota"), 1);
    });
}

/// A segment that carries several control messages (a client that writes two requests at
/// once, a server that answers both in one segment) has every one of them rewritten, each at
/// its own offset, with the TCP checksum right; what follows a message the ALG cannot parse
/// is forwarded as it is.
#[test]
fn pptp_every_message_of_a_segment_is_rewritten() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        // B takes call id 5 first, so A's own 5 must become another id.
        pptp_call_request(fx, LAN_HOST_B, HOST_B_MAC, B_PORT, 5);
        let a_ext = pptp_call_request(fx, LAN_HOST_A, HOST_A_MAC, A_PORT, 4);
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        let mut two = pptp_ctrl(PPTP_OUT_CALL_REQUEST, 5, 0);
        two.extend(pptp_ctrl(PPTP_OUT_CALL_REQUEST, 6, 0));
        let (action, out) = fx.from_lan(&packets::tcp(&h, A_PORT, 1723, ACK, &two));
        assert_eq!(action, XDP_REDIRECT);
        parse_checked(&out);
        let sent = payload(&out);
        let first = pptp_ids(&sent).0;
        let second = pptp_ids(&sent[168..]).0;
        assert_ne!(
            first, 5,
            "the first message's id, taken by B, was rewritten"
        );
        assert_eq!(
            second, 6,
            "the second message's call was created (its id kept)"
        );
        assert_eq!(fx.maps.pptp_calls().unwrap().len(), 4);
        // The server answers both calls in one segment: both peer ids go back to A's own.
        let a_port = fx.external_port(LAN_HOST_A);
        let mut replies = pptp_ctrl(PPTP_OUT_CALL_REPLY, 901, first);
        replies.extend(pptp_ctrl(PPTP_OUT_CALL_REPLY, 902, second));
        replies.extend(pptp_ctrl(PPTP_OUT_CALL_REPLY, 900, a_ext));
        let (action, out) = fx.from_wan(&packets::tcp(
            &wan_hdr(SERVER, SERVER_MAC),
            1723,
            a_port,
            ACK,
            &replies,
        ));
        assert_eq!(action, XDP_REDIRECT);
        parse_checked(&out);
        let got = payload(&out);
        assert_eq!(
            [pptp_ids(&got), pptp_ids(&got[32..]), pptp_ids(&got[64..])],
            [(901, 5), (902, 6), (900, 4)],
            "each reply's peer call id back to A's own"
        );
        assert_eq!(fx.counter("pass_pptp_unparsed"), 0);
        // A message, then bytes that are no message: the message is rewritten, the rest
        // forwarded as it is, and counted.
        let mut mixed = pptp_ctrl(PPTP_OUT_CALL_REQUEST, 5, 0);
        mixed.extend_from_slice(&[0xee; 40]);
        let (_, out) = fx.from_lan(&packets::tcp(&h, A_PORT, 1723, ACK, &mixed));
        parse_checked(&out);
        let sent = payload(&out);
        assert_eq!(pptp_ids(&sent).0, first, "the known call's external id");
        assert_eq!(&sent[168..], &[0xee; 40][..]);
        assert_eq!(fx.counter("pass_pptp_unparsed"), 1);
    });
}

/// A host that spoofs other addresses of the LAN's subnet keeps its MAC, and a MAC holds at
/// most twice a host's share of VPN state: IKE SAs started under made-up addresses count
/// against it. Another host (another MAC) starts its own.
#[test]
fn spoofing_other_lan_addresses_does_not_escape_the_vpn_share() {
    let cfg = FixtureConfig {
        toml: "[limits]\nvpn_state_per_host = 3\n".into(),
        ..FixtureConfig::default()
    };
    with_fixture(default_tables(), cfg, |fx| {
        let ike = |host, mac, spi: u64| {
            packets::udp(
                &lan_hdr(host, mac, SERVER),
                500,
                500,
                &packets::ike(spi, 0, 0x08),
            )
        };
        let mut passed = 0;
        for i in 0..4u8 {
            let spoofed = std::net::Ipv4Addr::new(192, 168, 1, 100 + i);
            for spi in 1..=3u64 {
                let spi = u64::from(i) << 8 | spi;
                passed += u32::from(fx.from_lan(&ike(spoofed, HOST_A_MAC, spi)).0 == XDP_REDIRECT);
            }
        }
        assert_eq!(passed, 6, "the MAC's share: twice a host's 3");
        assert_eq!(fx.counter("drop_host_vpn_quota"), 6);
        assert_eq!(
            fx.from_lan(&ike(LAN_HOST_B, HOST_B_MAC, 0xb0b0)).0,
            XDP_REDIRECT
        );
        // The sweeper recounts the MAC's share from the tables (from a wrong count).
        let mac = nat_common::maps::mac_key(&HOST_A_MAC);
        fx.maps.mac_vpn.insert(mac, 0, 0).unwrap();
        let t = fx.maps.read_config().unwrap().timeouts;
        nat_ctl::sweeper::sweep(&mut fx.maps, &t, nat_ctl::monotonic_ns()).unwrap();
        assert_eq!(fx.maps.mac_vpn.get(&mac, 0).unwrap(), 6);
        let spoofed = std::net::Ipv4Addr::new(192, 168, 1, 120);
        assert_eq!(fx.from_lan(&ike(spoofed, HOST_A_MAC, 0x7777)).0, XDP_DROP);
    });
}
