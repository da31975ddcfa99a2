//! BPF_PROG_TEST_RUN fixtures against the real compiled object: packet in (built with
//! etherparse), expected packet bytes, action and map state out.

use integration_tests::{
    fixture::*,
    lab::{LAN_HOST_A, LAN_HOST_B, ROUTER_LAN, ROUTER_WAN, SERVER},
    packets::{self, ACK, Flags, Hdr, SYN, SYN_ACK, parse_checked},
};
use nat_common::{
    maps::{EndpointKey, ExternalKey, MAPPING_COOLING},
    ports::taken_bit,
    proto::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    tcp_state,
};
use nat_ctl::{loader::Tables, sweeper, wire::to_wire};
use std::net::Ipv4Addr;

const NS: u64 = 1_000_000_000;
/// A protocol the NAT does not translate.
const SCTP: u8 = 132;

fn endpoint(addr: Ipv4Addr, port: u16, proto: u8) -> EndpointKey {
    EndpointKey {
        addr: to_wire(addr),
        port: port.to_be(),
        proto,
        _pad: 0,
    }
}

/// A DNS-like query from LAN host A's `port` to the server.
fn query_from_a(port: u16) -> Vec<u8> {
    packets::udp(&lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER), port, 53, b"q")
}

#[test]
fn outbound_new_flow_keeps_free_source_port_and_records_state() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let frame = packets::tcp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            20000,
            80,
            SYN,
            b"",
        );
        let (action, out) = fx.from_lan(&frame);
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(
            out,
            packets::tcp(&out_hdr(SERVER, SERVER_MAC), 20000, 80, SYN, b""),
            "translated SYN, byte for byte"
        );

        let m = fx
            .maps
            .mappings_out
            .get(&endpoint(LAN_HOST_A, 20000, IPPROTO_TCP), 0)
            .expect("mapping");
        assert_eq!(u16::from_be(m.ext_port), 20000);
        let back = fx
            .maps
            .mappings_in
            .get(
                &ExternalKey {
                    port: 20000u16.to_be(),
                    proto: IPPROTO_TCP,
                    _pad: 0,
                },
                0,
            )
            .expect("reverse mapping");
        assert_eq!(back.int_addr, to_wire(LAN_HOST_A));
        let s = fx
            .maps
            .sessions
            .get(&session(LAN_HOST_A, 20000, SERVER, 80, IPPROTO_TCP), 0)
            .expect("session");
        assert_eq!(s.tcp_state, tcp_state::SYN_OUT);
        assert_eq!(u16::from_be(s.ext_port), 20000);
        assert_eq!(
            (
                fx.counter("mapping_created"),
                fx.counter("session_created"),
                fx.counter("out_redirected")
            ),
            (1, 1, 1)
        );
    });
}

#[test]
fn outbound_established_reuses_mapping_and_reaches_far_hosts_via_gateway() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        fx.from_lan(&packets::tcp(&h, 20000, 80, SYN, b""));
        let (action, out) =
            fx.from_lan(&packets::tcp(&h, 20000, 80, ACK, b"GET / HTTP/1.0\r\n\r\n"));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(
            out,
            packets::tcp(
                &out_hdr(SERVER, SERVER_MAC),
                20000,
                80,
                ACK,
                b"GET / HTTP/1.0\r\n\r\n"
            )
        );
        assert_eq!(
            fx.counter("mapping_created"),
            1,
            "same mapping for the second packet"
        );
        assert_eq!(fx.counter("session_created"), 1);

        // Same internal endpoint to another destination: same external port (EIM, RFC 4787 REQ-1),
        // sent to the default gateway's MAC.
        let (action, out) = fx.from_lan(&packets::tcp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, FAR_SERVER),
            20000,
            443,
            SYN,
            b"",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(
            out,
            packets::tcp(&out_hdr(FAR_SERVER, GATEWAY_MAC), 20000, 443, SYN, b"")
        );
        assert_eq!(fx.counter("mapping_created"), 1);
        assert_eq!(fx.counter("session_created"), 2);
    });
}

#[test]
fn inbound_reply_is_translated_back_to_the_lan_host() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        fx.from_lan(&packets::tcp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            20000,
            80,
            SYN,
            b"",
        ));
        let reply = packets::tcp(&wan_hdr(SERVER, SERVER_MAC), 80, 20000, SYN_ACK, b"");
        let (action, out) = fx.from_wan(&reply);
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(
            out,
            packets::tcp(
                &in_hdr(SERVER, LAN_HOST_A, HOST_A_MAC),
                80,
                20000,
                SYN_ACK,
                b""
            )
        );
        let s = fx
            .maps
            .sessions
            .get(&session(LAN_HOST_A, 20000, SERVER, 80, IPPROTO_TCP), 0)
            .unwrap();
        assert!(tcp_state::is_established(s.tcp_state));
        assert_eq!(fx.counter("in_redirected"), 1);
    });
}

#[test]
fn inbound_unsolicited_is_dropped_and_counted() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        // No mapping at all.
        let (action, _) = fx.from_wan(&packets::udp(
            &wan_hdr(SERVER, SERVER_MAC),
            5000,
            30000,
            b"x",
        ));
        assert_eq!(action, XDP_DROP);
        assert_eq!(fx.counter("drop_no_mapping"), 1);
        // A TCP mapping exists, but this SYN comes from a host it never talked to.
        fx.from_lan(&packets::tcp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            20000,
            80,
            SYN,
            b"",
        ));
        let (action, _) = fx.from_wan(&packets::tcp(
            &wan_hdr(FAR_SERVER, GATEWAY_MAC),
            4444,
            20000,
            SYN,
            b"",
        ));
        assert_eq!(action, XDP_DROP);
        assert_eq!(fx.counter("drop_unsolicited_tcp"), 1);
        // UDP, address-dependent filtering (the default): another port of the same host passes,
        // another host does not.
        fx.from_lan(&query_from_a(21000));
        let (action, out) = fx.from_wan(&packets::udp(
            &wan_hdr(SERVER, SERVER_MAC),
            5353,
            21000,
            b"r",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(parse_checked(&out).dst, LAN_HOST_A);
        let (action, _) = fx.from_wan(&packets::udp(
            &wan_hdr(FAR_SERVER, GATEWAY_MAC),
            53,
            21000,
            b"r",
        ));
        assert_eq!(action, XDP_DROP);
        assert_eq!(fx.counter("drop_filtered"), 1);
    });
}

/// The remote hosts the NAT remembers for address-dependent filtering: FILTERS entries,
/// and the first remote host a UDP mapping keeps itself (`Mapping::first_remote`).
fn remembered_remotes(fx: &Fixture) -> (usize, usize) {
    let entries = nat_ctl::state::entries(&fx.maps.filters).unwrap().len();
    let kept = fx.maps.mappings().unwrap();
    let kept = kept.iter().filter(|(_, m)| m.first_remote != 0).count();
    (entries, kept)
}

/// Filter entries answer address-dependent filtering, which asks about a UDP datagram
/// without a session and nothing else: TCP and ICMP sessions make none (each would cost an
/// insert, a slot of FILTERS and a step of the sweeper's walk for nothing). UDP sessions
/// make theirs under every mode, so that a reload into address-dependent filtering applies to
/// the flows already running; the first one of a mapping keeps it in the mapping.
#[test]
fn only_udp_sessions_make_filter_entries() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        assert_eq!(
            fx.from_lan(&packets::tcp(&h, 20000, 80, SYN, b"")).0,
            XDP_REDIRECT
        );
        let echo = packets::icmp_echo(&h, true, 77, 1, b"ping");
        assert_eq!(fx.from_lan(&echo).0, XDP_REDIRECT);
        assert_eq!(fx.counter("session_created"), 2);
        assert_eq!(
            remembered_remotes(fx),
            (0, 0),
            "TCP and ICMP sessions remember no remote host"
        );
        // Unsolicited TCP from another port of that host stays out, as ever.
        let syn = packets::tcp(&wan_hdr(SERVER, SERVER_MAC), 4444, 20000, SYN, b"");
        assert_eq!(fx.from_wan(&syn).0, XDP_DROP);
        assert_eq!(fx.counter("drop_unsolicited_tcp"), 1);
        assert_eq!(fx.from_lan(&query_from_a(21000)).0, XDP_REDIRECT);
        assert_eq!(
            remembered_remotes(fx),
            (0, 1),
            "a UDP mapping's first remote host"
        );
    });
    for mode in ["endpoint-independent", "address-and-port-dependent"] {
        let cfg = FixtureConfig {
            toml: format!("filtering = \"{mode}\""),
            ..Default::default()
        };
        with_fixture(default_tables(), cfg, |fx| {
            assert_eq!(fx.from_lan(&query_from_a(21000)).0, XDP_REDIRECT);
            let far = lan_hdr(LAN_HOST_A, HOST_A_MAC, FAR_SERVER);
            assert_eq!(
                fx.from_lan(&packets::udp(&far, 21000, 53, b"q")).0,
                XDP_REDIRECT
            );
            assert_eq!(remembered_remotes(fx), (1, 1), "{mode}");
        });
    }
}

/// A new UDP flow's remote host is kept in its mapping, not in FILTERS (a new flow's dearest
/// step was that insert): address-dependent filtering lets that host's other ports in as it
/// does a FILTERS entry's, and the sweeper's filter walk forgets it once no live session has
/// that host, as it removes an entry.
#[test]
fn a_new_udp_mappings_first_remote_host_filters_like_an_entry() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        assert_eq!(fx.from_lan(&query_from_a(21000)).0, XDP_REDIRECT);
        let (ext, m) = fx.maps.mappings().unwrap()[0];
        assert_eq!(m.first_remote, to_wire(SERVER));
        assert_eq!(remembered_remotes(fx), (0, 1), "no FILTERS entry for it");
        let from = |fx: &mut Fixture, host: Ipv4Addr, mac| {
            let h = wan_hdr(host, mac);
            fx.from_wan(&packets::udp(&h, 5353, u16::from_be(ext.port), b"x"))
                .0
        };
        assert_eq!(
            from(fx, SERVER, SERVER_MAC),
            XDP_REDIRECT,
            "another port of it"
        );
        assert_eq!(from(fx, FAR_SERVER, GATEWAY_MAC), XDP_DROP, "another host");
        // The same mapping to a second host: an entry of FILTERS, as before.
        let far = lan_hdr(LAN_HOST_A, HOST_A_MAC, FAR_SERVER);
        assert_eq!(
            fx.from_lan(&packets::udp(&far, 21000, 53, b"q")).0,
            XDP_REDIRECT
        );
        assert_eq!(remembered_remotes(fx), (1, 1));
        assert_eq!(from(fx, FAR_SERVER, GATEWAY_MAC), XDP_REDIRECT);
        // The first host's session expires; the mapping lives on with the second's.
        let first = nat_common::maps::SessionKey::new(
            IPPROTO_UDP,
            to_wire(LAN_HOST_A),
            21000u16.to_be(),
            to_wire(SERVER),
            53u16.to_be(),
        );
        let mut s = fx.maps.sessions.get(&first, 0).unwrap();
        s.last_seen_ns = 1;
        fx.maps.sessions.insert(first, s, 0).unwrap();
        let t = fx.maps.read_config().unwrap().timeouts;
        // Three seconds on: past the second a first remote host set as a walk runs is kept.
        let now = nat_ctl::monotonic_ns() + 3 * NS;
        // A sweep without the filter walk keeps it, as it keeps entries.
        let r = sweeper::sweep_with(&mut fx.maps, &t, now, false).unwrap();
        assert_eq!((r.sessions_expired, r.filters_removed), (1, 0), "{r:?}");
        assert_eq!(from(fx, SERVER, SERVER_MAC), XDP_REDIRECT);
        // The filter walk forgets it; the second host's entry stays.
        let r = sweeper::sweep(&mut fx.maps, &t, now).unwrap();
        assert_eq!((r.sessions_expired, r.filters_removed), (0, 1), "{r:?}");
        assert_eq!(remembered_remotes(fx), (1, 0));
        assert_eq!(from(fx, SERVER, SERVER_MAC), XDP_DROP, "forgotten");
        assert_eq!(from(fx, FAR_SERVER, GATEWAY_MAC), XDP_REDIRECT);
    });
}

/// A packet that makes a mapping but is refused its session (the host's share is used up)
/// leaves the mapping without a remote host: the host it was for gets in no more than
/// before. The mapping's first session made later keeps its own host in it.
#[test]
fn a_mapping_whose_first_session_was_refused_keeps_no_remote_host() {
    let one = FixtureConfig {
        toml: "[limits]\nsessions_per_host = 1\n".into(),
        ..Default::default()
    };
    with_fixture(default_tables(), one, |fx| {
        let from = |fx: &mut Fixture, host: Ipv4Addr, mac| {
            let h = wan_hdr(host, mac);
            fx.from_wan(&packets::udp(&h, 5353, 21001, b"x")).0
        };
        assert_eq!(fx.from_lan(&query_from_a(21000)).0, XDP_REDIRECT);
        assert_eq!(fx.from_lan(&query_from_a(21001)).0, XDP_DROP);
        assert_eq!(fx.counter("drop_host_session_quota"), 1);
        let made = fx.maps.mappings().unwrap();
        let refused = made.iter().find(|(ext, _)| ext.port == 21001u16.to_be());
        assert_eq!(refused.map(|(_, m)| m.first_remote), Some(0), "{made:?}");
        assert_eq!(
            from(fx, SERVER, SERVER_MAC),
            XDP_DROP,
            "the refused one's host"
        );
        // Room again (the first session gone), and the mapping's first session, to another
        // host: that host is the mapping's, the refused one's still is not.
        assert_eq!(
            fx.maps.sessions().unwrap().len(),
            1,
            "the refused packet made none"
        );
        fx.maps.flush(None).unwrap();
        fx.maps.host_sessions.remove(&to_wire(LAN_HOST_A)).unwrap();
        let far = lan_hdr(LAN_HOST_A, HOST_A_MAC, FAR_SERVER);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(
            fx.from_lan(&packets::udp(&far, 21001, 53, b"q")).0,
            XDP_REDIRECT
        );
        assert_eq!(from(fx, FAR_SERVER, GATEWAY_MAC), XDP_REDIRECT);
        assert_eq!(from(fx, SERVER, SERVER_MAC), XDP_DROP);
    });
}

/// A flush of the UDP sessions forgets their mappings' first remote hosts with their filter
/// entries, though the mappings wait for the sweeper: the host gets in no more.
#[test]
fn a_flush_forgets_the_first_remote_hosts_too() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let from = |fx: &mut Fixture, port: u16| {
            let h = wan_hdr(SERVER, SERVER_MAC);
            fx.from_wan(&packets::udp(&h, 5353, port, b"x")).0
        };
        assert_eq!(fx.from_lan(&query_from_a(21000)).0, XDP_REDIRECT);
        assert_eq!(
            from(fx, 21000),
            XDP_REDIRECT,
            "another port of the first host"
        );
        assert_eq!(fx.maps.flush(Some(IPPROTO_UDP)).unwrap(), 1);
        assert_eq!(remembered_remotes(fx), (0, 1), "the mapping still holds it");
        assert_eq!(from(fx, 21000), XDP_DROP, "but it lets nothing in");
        assert_eq!(fx.counter("drop_filtered"), 1);
        // A mapping made after the flush (the data path's clock moved on) keeps its own.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(fx.from_lan(&query_from_a(21001)).0, XDP_REDIRECT);
        assert_eq!(from(fx, 21001), XDP_REDIRECT);
        // A flush of TCP alone leaves it.
        assert_eq!(fx.maps.flush(Some(IPPROTO_TCP)).unwrap(), 0);
        assert_eq!(from(fx, 21001), XDP_REDIRECT);
    });
}

#[test]
fn endpoint_independent_and_port_dependent_filtering() {
    let eif = FixtureConfig {
        toml: "filtering = \"endpoint-independent\"".into(),
        ..Default::default()
    };
    with_fixture(default_tables(), eif, |fx| {
        fx.from_lan(&query_from_a(21000));
        let (action, _) = fx.from_wan(&packets::udp(
            &wan_hdr(FAR_SERVER, GATEWAY_MAC),
            53,
            21000,
            b"r",
        ));
        assert_eq!(action, XDP_REDIRECT, "any remote may reach an EIF mapping");
    });
    let apdf = FixtureConfig {
        toml: "filtering = \"address-and-port-dependent\"".into(),
        ..Default::default()
    };
    with_fixture(default_tables(), apdf, |fx| {
        fx.from_lan(&query_from_a(21000));
        let (action, _) = fx.from_wan(&packets::udp(
            &wan_hdr(SERVER, SERVER_MAC),
            5353,
            21000,
            b"r",
        ));
        assert_eq!(
            action, XDP_DROP,
            "another port of the same host is filtered"
        );
        let (action, _) = fx.from_wan(&packets::udp(&wan_hdr(SERVER, SERVER_MAC), 53, 21000, b"r"));
        assert_eq!(action, XDP_REDIRECT);
    });
}

#[test]
fn icmp_echo_both_ways() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let (action, out) = fx.from_lan(&packets::icmp_echo(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            true,
            0x1234,
            1,
            b"ping",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(
            out,
            packets::icmp_echo(&out_hdr(SERVER, SERVER_MAC), true, 0x1234, 1, b"ping")
        );
        let (action, out) = fx.from_wan(&packets::icmp_echo(
            &wan_hdr(SERVER, SERVER_MAC),
            false,
            0x1234,
            1,
            b"ping",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(
            out,
            packets::icmp_echo(
                &in_hdr(SERVER, LAN_HOST_A, HOST_A_MAC),
                false,
                0x1234,
                1,
                b"ping"
            )
        );
        assert!(
            fx.maps
                .sessions
                .get(&session(LAN_HOST_A, 0x1234, SERVER, 0, IPPROTO_ICMP), 0)
                .is_ok()
        );
    });
}

#[test]
fn traffic_for_the_router_itself_passes_untouched() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let cases: Vec<(&str, bool, Vec<u8>)> = vec![
            (
                "LAN DNS query to the router",
                true,
                packets::udp(
                    &lan_hdr(LAN_HOST_A, HOST_A_MAC, ROUTER_LAN),
                    40000,
                    53,
                    b"q",
                ),
            ),
            (
                "LAN ping of the router's WAN address",
                true,
                packets::icmp_echo(
                    &lan_hdr(LAN_HOST_A, HOST_A_MAC, ROUTER_WAN),
                    true,
                    7,
                    1,
                    b"",
                ),
            ),
            (
                "WAN SSH to the router (port outside the pool)",
                false,
                packets::tcp(&wan_hdr(SERVER, SERVER_MAC), 40000, ROUTER_SSH, SYN, b""),
            ),
            (
                "WAN ping of the router",
                false,
                packets::icmp_echo(&wan_hdr(SERVER, SERVER_MAC), true, 7, 1, b""),
            ),
            (
                "WAN plain GRE to the router",
                false,
                packets::ip_proto(&wan_hdr(SERVER, SERVER_MAC), 47, &[0u8; 8]),
            ),
            (
                "WAN SCTP to the router",
                false,
                packets::ip_proto(&wan_hdr(SERVER, SERVER_MAC), SCTP, &[0u8; 16]),
            ),
        ];
        for (what, lan, frame) in cases {
            let (action, out) = if lan {
                fx.from_lan(&frame)
            } else {
                fx.from_wan(&frame)
            };
            assert_eq!(action, XDP_PASS, "{what}");
            assert_eq!(out, frame, "{what}: untouched");
        }
        // ARP and IPv6 are not ours either.
        let mut arp = vec![0xffu8; 6];
        arp.extend_from_slice(&HOST_A_MAC);
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0u8; 28]);
        for (action, out) in [fx.from_lan(&arp), fx.from_wan(&arp)] {
            assert_eq!(action, XDP_PASS);
            assert_eq!(out, arp);
        }
        assert_eq!(fx.counter("mapping_created"), 0);
    });
}

#[test]
fn spoofed_and_direct_to_lan_packets_are_dropped() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let spoofed = packets::udp(
            &wan_hdr(Ipv4Addr::new(192, 168, 1, 50), SERVER_MAC),
            53,
            20000,
            b"x",
        );
        assert_eq!(fx.from_wan(&spoofed).0, XDP_DROP);
        let loopback = packets::udp(&wan_hdr(Ipv4Addr::LOCALHOST, SERVER_MAC), 53, 20000, b"x");
        assert_eq!(fx.from_wan(&loopback).0, XDP_DROP);
        assert_eq!(fx.counter("drop_martian_source"), 2);
        let direct = packets::udp(
            &Hdr {
                dst: LAN_HOST_A,
                ..wan_hdr(SERVER, SERVER_MAC)
            },
            53,
            20000,
            b"x",
        );
        assert_eq!(fx.from_wan(&direct).0, XDP_DROP);
        assert_eq!(fx.counter("drop_to_lan_address"), 1);
        // A LAN packet from outside the LAN prefix is not translated (nor leaked).
        let foreign = packets::udp(
            &lan_hdr(Ipv4Addr::new(10, 9, 9, 9), HOST_A_MAC, SERVER),
            1000,
            53,
            b"x",
        );
        assert_eq!(fx.from_lan(&foreign).0, XDP_DROP);
        assert_eq!(fx.counter("drop_lan_source_foreign"), 1);
    });
}

#[test]
fn two_hosts_with_the_same_source_port_get_distinct_external_ports() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let (_, a) = fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            20000,
            7000,
            b"a",
        ));
        let (_, b) = fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER),
            20000,
            7000,
            b"b",
        ));
        let (pa, pb) = (parse_checked(&a).sport, parse_checked(&b).sport);
        assert_eq!(pa, 20000, "first one keeps its port");
        assert_ne!(pb, 20000);
        for (port, host, mac) in [(pa, LAN_HOST_A, HOST_A_MAC), (pb, LAN_HOST_B, HOST_B_MAC)] {
            let (action, out) = fx.from_wan(&packets::udp(
                &wan_hdr(SERVER, SERVER_MAC),
                7000,
                port,
                b"r",
            ));
            assert_eq!(action, XDP_REDIRECT);
            let seen = parse_checked(&out);
            assert_eq!((seen.dst, seen.dport, seen.dmac), (host, 20000, mac));
        }
    });
}

#[test]
fn privileged_source_ports_map_to_privileged_ports_and_skip_router_ports() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        // Port 22 is the router's own: the LAN host's ssh client port must not take it.
        let (_, out) = fx.from_lan(&packets::tcp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            ROUTER_SSH,
            22,
            SYN,
            b"",
        ));
        let p = parse_checked(&out).sport;
        assert!((1..=1023).contains(&p) && p != ROUTER_SSH, "got {p}");
        let (_, out) = fx.from_lan(&packets::tcp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            700,
            22,
            SYN,
            b"",
        ));
        assert_eq!(parse_checked(&out).sport, 700);
    });
}

#[test]
fn full_session_table_drops_new_flows_and_keeps_old_ones() {
    let tables = Tables {
        max_sessions: 4,
        max_mappings: 64,
    };
    with_fixture(tables, FixtureConfig::default(), |fx| {
        let flow = |port: u16| {
            packets::udp(
                &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
                20000 + port,
                53,
                b"q",
            )
        };
        for i in 0..4 {
            assert_eq!(fx.from_lan(&flow(i)).0, XDP_REDIRECT);
        }
        assert_eq!(fx.from_lan(&flow(4)).0, XDP_DROP);
        assert_eq!(fx.counter("drop_session_table_full"), 1);
        // Refused flows count nothing against their host's or MAC's share of sessions.
        for i in 5..10 {
            assert_eq!(fx.from_lan(&flow(i)).0, XDP_DROP);
        }
        assert_eq!(fx.counter("drop_session_table_full"), 6);
        let a = u32::from_ne_bytes(LAN_HOST_A.octets());
        let mac = nat_common::maps::mac_key(&HOST_A_MAC);
        assert_eq!(fx.maps.host_sessions.get(&a, 0).unwrap(), 4);
        assert_eq!(fx.maps.mac_sessions.get(&mac, 0).unwrap(), 4);
        for i in 0..4 {
            assert_eq!(
                fx.from_lan(&flow(i)).0,
                XDP_REDIRECT,
                "existing session {i} still works"
            );
        }
        assert_eq!(fx.maps.sessions().unwrap().len(), 4);
        // The table drains by the timeouts, and new flows get in again.
        let t = fx.maps.read_config().unwrap().timeouts;
        let r = sweeper::sweep(
            &mut fx.maps,
            &t,
            nat_ctl::monotonic_ns() + 300 * NS + CACHE_LAG_NS,
        )
        .unwrap();
        assert_eq!(r.sessions_expired, 4);
        assert_eq!(fx.from_lan(&flow(4)).0, XDP_REDIRECT);
    });
}

#[test]
fn full_mapping_table_and_exhausted_pool_drop_new_flows() {
    let tables = Tables {
        max_sessions: 64,
        max_mappings: 2,
    };
    with_fixture(tables, FixtureConfig::default(), |fx| {
        for port in [20000, 20001] {
            assert_eq!(fx.from_lan(&query_from_a(port)).0, XDP_REDIRECT);
        }
        assert_eq!(fx.from_lan(&query_from_a(20002)).0, XDP_DROP);
        assert_eq!(fx.counter("drop_mapping_table_full"), 1);
        // Refused mappings count nothing against the host's or the MAC's share.
        assert_eq!(fx.from_lan(&query_from_a(20003)).0, XDP_DROP);
        assert_eq!(fx.counter("drop_mapping_table_full"), 2);
        assert_eq!(mapping_shares(fx), (2, 2));
    });
    let two_ports = FixtureConfig {
        port_range: (50000, 50001),
        ..Default::default()
    };
    with_fixture(default_tables(), two_ports, |fx| {
        let mut got = Vec::new();
        for port in [60001, 60002] {
            let (action, out) = fx.from_lan(&query_from_a(port));
            assert_eq!(action, XDP_REDIRECT);
            got.push(parse_checked(&out).sport);
        }
        got.sort();
        assert_eq!(got, vec![50000, 50001]);
        assert_eq!(fx.from_lan(&query_from_a(60003)).0, XDP_DROP);
        assert_eq!(fx.counter("drop_ports_exhausted"), 1);
        assert_eq!(mapping_shares(fx), (2, 2));
    });
}

/// A random draw takes only the pool's ports: the router's own ports inside the configured
/// range (here every other one) are never a mapping's, and every port of the pool is found.
#[test]
fn a_random_draw_takes_only_the_pools_ports() {
    let holes = FixtureConfig {
        port_range: (50000, 50007),
        reserved: vec![50001, 50003, 50005],
        ..Default::default()
    };
    with_fixture(default_tables(), holes, |fx| {
        // Source ports outside the pool, so each mapping's port is drawn; more flows than
        // the pool has ports, so that a draw that missed the last free one (its 32 tries
        // fail about once in a thousand) is made up for by the next flow's.
        let mut got = Vec::new();
        for port in 60001..=60012 {
            let (action, out) = fx.from_lan(&query_from_a(port));
            if action == XDP_REDIRECT {
                got.push(parse_checked(&out).sport);
            }
        }
        got.sort();
        assert_eq!(got, vec![50000, 50002, 50004, 50006, 50007]);
        assert_eq!(fx.counter("drop_ports_exhausted"), 12 - 5);
    });
}

/// The source port is kept only if the pool has it: not a port of the router's that
/// PORT_IN_POOL still holds because a mapping (of another protocol) outlived a reload that
/// took it out of the pool.
#[test]
fn a_source_port_outside_the_pool_is_not_kept() {
    let reserved = FixtureConfig {
        reserved: vec![ROUTER_SSH, 40000],
        ..Default::default()
    };
    with_fixture(default_tables(), reserved, |fx| {
        // As write_pool_bitmap leaves it while a TCP mapping holds 40000.
        let (word, bit) = nat_common::ports::pool_bit(40000);
        let v = fx.maps.port_in_pool.get(&word, 0).unwrap();
        fx.maps.port_in_pool.set(word, v | bit, 0).unwrap();
        let (action, out) = fx.from_lan(&query_from_a(40000));
        assert_eq!(action, XDP_REDIRECT);
        assert_ne!(
            parse_checked(&out).sport,
            40000,
            "a UDP mapping took the router's port"
        );
    });
}

/// LAN host A's count of mappings, and its MAC's.
fn mapping_shares(fx: &Fixture) -> (u32, u32) {
    let a = u32::from_ne_bytes(LAN_HOST_A.octets());
    let mac = nat_common::maps::mac_key(&HOST_A_MAC);
    (
        fx.maps.host_mappings.get(&a, 0).unwrap(),
        fx.maps.mac_mappings.get(&mac, 0).unwrap(),
    )
}

/// PORTS_TAKEN: a port draw skips a port whose bit is set, even one no mapping holds (until
/// nat-ctl rewrites the bitmap from MAPPINGS_IN), and a clear bit never hands out a port a
/// mapping holds: MAPPINGS_IN stays the arbiter.
#[test]
fn port_draws_skip_taken_ports_and_the_mapping_table_decides() {
    let three_ports = FixtureConfig {
        port_range: (50000, 50002),
        ..Default::default()
    };
    let taken = |fx: &Fixture, port: u16| {
        let (word, bit) = taken_bit(IPPROTO_UDP, port).unwrap();
        fx.maps.ports_taken.get(&word, 0).unwrap() & bit != 0
    };
    let mark = |fx: &mut Fixture, port: u16| {
        let (word, bit) = taken_bit(IPPROTO_UDP, port).unwrap();
        let w = fx.maps.ports_taken.get(&word, 0).unwrap();
        fx.maps.ports_taken.set(word, w | bit, 0).unwrap();
    };
    let external_port = |fx: &mut Fixture, src: u16| {
        let (action, out) = fx.from_lan(&query_from_a(src));
        (action == XDP_REDIRECT).then(|| parse_checked(&out).sport)
    };
    with_fixture(default_tables(), three_ports, |fx| {
        // Two ports marked taken without a mapping: the source port 50001 is not kept, and
        // the draws find the one port left.
        mark(fx, 50000);
        mark(fx, 50001);
        assert_eq!(external_port(fx, 50001), Some(50002));
        assert!(taken(fx, 50002), "a new mapping marks its port");
        assert_eq!(
            external_port(fx, 60001),
            None,
            "every bit set: no draw succeeds"
        );
        assert_eq!(fx.counter("drop_ports_exhausted"), 1);
        // The rewrite from MAPPINGS_IN clears the bits no mapping explains.
        let held = fx.maps.mapping_keys().unwrap();
        fx.maps.write_ports_taken(&held).unwrap();
        assert!(!taken(fx, 50000) && !taken(fx, 50001) && taken(fx, 50002));
        let second = external_port(fx, 60002).unwrap();
        assert!(second == 50000 || second == 50001, "{second}");
        // Every bit clear while two ports are held: only the third is handed out, and once it
        // is gone too, nothing is.
        fx.maps.write_ports_taken(&[]).unwrap();
        let third = external_port(fx, 60003).unwrap();
        let mut all = vec![50002, second, third];
        all.sort();
        assert_eq!(
            all,
            vec![50000, 50001, 50002],
            "a held port was handed out twice"
        );
        fx.maps.write_ports_taken(&[]).unwrap();
        assert_eq!(external_port(fx, 60004), None);
        assert_eq!(fx.counter("drop_ports_exhausted"), 2);
    });
}

#[test]
fn ttl_handling() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let low = packets::udp(
            &Hdr {
                ttl: 1,
                ..lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER)
            },
            20000,
            53,
            b"q",
        );
        let (action, out) = fx.from_lan(&low);
        assert_eq!(
            (action, &out),
            (XDP_PASS, &low),
            "TTL 1 goes to the kernel untranslated (it sends Time Exceeded)"
        );
        assert_eq!(fx.counter("pass_ttl_exceeded"), 1);
        fx.from_lan(&query_from_a(20000));
        let reply = packets::udp(
            &Hdr {
                ttl: 1,
                ..wan_hdr(SERVER, SERVER_MAC)
            },
            53,
            20000,
            b"r",
        );
        assert_eq!(fx.from_wan(&reply).0, XDP_DROP);
        assert_eq!(fx.counter("drop_inbound_ttl"), 1);
    });
}

#[test]
fn unresolved_lan_neighbour_falls_back_to_the_kernel_translated() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        fx.from_lan(&packets::udp(
            &lan_hdr(UNRESOLVED_HOST, [2, 0, 0, 0, 1, 9], SERVER),
            20000,
            53,
            b"q",
        ));
        let reply = packets::udp(&wan_hdr(SERVER, SERVER_MAC), 53, 20000, b"r");
        let (action, out) = fx.from_wan(&reply);
        assert_eq!(action, XDP_PASS);
        // Translated, MACs and TTL left for the kernel's forwarding path.
        assert_eq!(
            out,
            packets::udp(
                &Hdr {
                    dst: UNRESOLVED_HOST,
                    ..wan_hdr(SERVER, SERVER_MAC)
                },
                53,
                20000,
                b"r"
            )
        );
        assert_eq!(fx.counter("in_pass_kernel"), 1);
        // The replies after it too, until the neighbour resolves: nothing unresolved is
        // cached for them.
        for _ in 0..3 {
            assert_eq!(fx.from_wan(&reply), (XDP_PASS, out.clone()));
        }
        assert_eq!(fx.counter("in_pass_kernel"), 4);
        assert_eq!(fx.counter("flow_cache_filled"), 0);
    });
}

#[test]
fn untranslatable_lan_traffic_is_dropped_never_leaked() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let sctp = packets::ip_proto(&lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER), SCTP, &[0u8; 16]);
        assert_eq!(fx.from_lan(&sctp).0, XDP_DROP);
        assert_eq!(fx.counter("drop_unsupported_proto"), 1);
        let big = packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            20000,
            53,
            &[7u8; 100],
        );
        let (_, later) = packets::fragment(&big, 56);
        assert_eq!(
            fx.from_lan(&later).0,
            XDP_DROP,
            "a later fragment whose first was not seen"
        );
        assert_eq!(fx.counter("drop_fragment_before_first"), 1);
        let full = query_from_a(20000);
        for cut in [20, 14 + 19, 14 + 20 + 7] {
            assert_eq!(fx.from_lan(&full[..cut]).0, XDP_DROP, "truncated at {cut}");
        }
        assert_eq!(fx.counter("drop_malformed"), 3);
        assert_eq!(fx.counter("mapping_created"), 0);
    });
}

#[test]
fn udp_without_checksum_stays_without_checksum() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let mut f = query_from_a(20000);
        f[14 + 20 + 6] = 0;
        f[14 + 20 + 7] = 0;
        let (action, out) = fx.from_lan(&f);
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(&out[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
        parse_checked(&out);
    });
}

#[test]
fn sweeper_expires_sessions_cools_ports_then_frees_them() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        fx.from_lan(&query_from_a(20000));
        let key = session(LAN_HOST_A, 20000, SERVER, 53, IPPROTO_UDP);
        let seen = fx.maps.sessions.get(&key, 0).unwrap().last_seen_ns;
        let t = fx.maps.read_config().unwrap().timeouts;

        let r = sweeper::sweep(&mut fx.maps, &t, seen + 299 * NS).unwrap();
        assert_eq!(r.sessions_expired, 0, "UDP lives 300 s");
        let r = sweeper::sweep(&mut fx.maps, &t, seen + 300 * NS + CACHE_LAG_NS).unwrap();
        assert_eq!((r.sessions_expired, r.mappings_detached), (1, 1));
        let r = sweeper::sweep(&mut fx.maps, &t, seen + 301 * NS + CACHE_LAG_NS).unwrap();
        assert_eq!(
            r.mappings_released, 1,
            "a sweep later, still unused: it cools"
        );
        let ext = ExternalKey {
            port: 20000u16.to_be(),
            proto: IPPROTO_UDP,
            _pad: 0,
        };
        assert_eq!(
            fx.maps.mappings_in.get(&ext, 0).unwrap().state,
            MAPPING_COOLING
        );
        // The reply port is dead, and not handed out again while it cools.
        assert_eq!(
            fx.from_wan(&packets::udp(&wan_hdr(SERVER, SERVER_MAC), 53, 20000, b"r"))
                .0,
            XDP_DROP
        );
        let (_, out) = fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER),
            20000,
            53,
            b"q",
        ));
        assert_ne!(parse_checked(&out).sport, 20000, "cooling port reused");
        // Released a sweep after the session went, it cools PORT_REUSE_DELAY_SECS (120 s).
        let r = sweeper::sweep(&mut fx.maps, &t, seen + (301 + 121) * NS + CACHE_LAG_NS).unwrap();
        assert_eq!(r.ports_freed, 1);
        assert!(fx.maps.mappings_in.get(&ext, 0).is_err());
    });
}

/// A CPU may create a session on a mapping after the sweeper read the sessions and before it
/// releases the mapping (the sweeper runs in userspace, the data path meanwhile). That
/// session keeps its port: replies reach it, and the sweeper does not remove it as an orphan.
#[test]
fn a_session_created_while_the_sweeper_releases_its_mapping_keeps_working() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        fx.from_lan(&packets::udp(&h, 20000, 53, b"q"));
        // The mapping's only session went idle 301 s ago (and the mapping is past its grace).
        let first = session(LAN_HOST_A, 20000, SERVER, 53, IPPROTO_UDP);
        let mut s = fx.maps.sessions.get(&first, 0).unwrap();
        let t = fx.maps.read_config().unwrap().timeouts;
        let now = nat_ctl::monotonic_ns();
        s.last_seen_ns = now.saturating_sub(300 * NS + CACHE_LAG_NS);
        s.created_ns = now.saturating_sub(300 * NS + CACHE_LAG_NS);
        fx.maps.sessions.insert(first, s, 0).unwrap();
        let ext = ExternalKey {
            port: 20000u16.to_be(),
            proto: IPPROTO_UDP,
            _pad: 0,
        };
        let mut m = fx.maps.mappings_in.get(&ext, 0).unwrap();
        m.created_ns = now.saturating_sub(300 * NS + CACHE_LAG_NS);
        fx.maps.mappings_in.insert(ext, m, 0).unwrap();
        let r = sweeper::sweep(&mut fx.maps, &t, now).unwrap();
        assert_eq!(r.sessions_expired, 1, "{r:?}");
        // The session the racing CPU made, to port 54, as the data path writes it: after the
        // sweep read the table (so not in its snapshot), on the mapping's port.
        let racer = session(LAN_HOST_A, 20000, SERVER, 54, IPPROTO_UDP);
        s.created_ns = now;
        s.last_seen_ns = now;
        fx.maps.sessions.insert(racer, s, 0).unwrap();

        let reply = packets::udp(&wan_hdr(SERVER, SERVER_MAC), 54, 20000, b"r");
        let (action, out) = fx.from_wan(&reply);
        assert_eq!(
            action, XDP_REDIRECT,
            "the reply reaches the session made in the race"
        );
        assert_eq!(parse_checked(&out).dst, LAN_HOST_A);
        // The next sweeps see the session: the port stays the mapping's while it lives, and
        // the session is not an orphan.
        for later in [now + NS, now + 10 * NS] {
            let r = sweeper::sweep(&mut fx.maps, &t, later).unwrap();
            assert_eq!((r.orphans_removed, r.mappings_released), (0, 0), "{r:?}");
        }
        assert_eq!(fx.from_wan(&reply).0, XDP_REDIRECT);
        let (_, out) = fx.from_lan(&packets::udp(&h, 20000, 54, b"q"));
        assert_eq!(
            parse_checked(&out).sport,
            20000,
            "the session keeps its port"
        );
        // New sessions of the endpoint take a new mapping meanwhile (endpoint-independent
        // mapping is kept per session, not across the release).
        let (_, out) = fx.from_lan(&packets::udp(&h, 20000, 55, b"q"));
        assert_ne!(parse_checked(&out).sport, 20000);
        // When it expires, the old port cools (one sweep to see it gone, as before).
        let r = sweeper::sweep(
            &mut fx.maps,
            &t,
            nat_ctl::monotonic_ns() + 301 * NS + CACHE_LAG_NS,
        )
        .unwrap();
        assert_eq!(r.mappings_released, 1, "{r:?}");
    });
}

#[test]
fn tcp_state_picks_the_timeout() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        fx.from_lan(&packets::tcp(&h, 20000, 80, SYN, b""));
        let key = session(LAN_HOST_A, 20000, SERVER, 80, IPPROTO_TCP);
        let t = fx.maps.read_config().unwrap().timeouts;
        let s = fx.maps.sessions.get(&key, 0).unwrap();
        assert_eq!(
            sweeper::timeout_secs(&key, &s, &t),
            240,
            "SYN sent: transitory"
        );
        fx.from_wan(&packets::tcp(
            &wan_hdr(SERVER, SERVER_MAC),
            80,
            20000,
            SYN_ACK,
            b"",
        ));
        let s = fx.maps.sessions.get(&key, 0).unwrap();
        assert_eq!(sweeper::timeout_secs(&key, &s, &t), 7440, "established");
        fx.from_wan(&packets::tcp(
            &wan_hdr(SERVER, SERVER_MAC),
            80,
            20000,
            Flags {
                rst: true,
                ..Default::default()
            },
            b"",
        ));
        let s = fx.maps.sessions.get(&key, 0).unwrap();
        assert_eq!(
            sweeper::timeout_secs(&key, &s, &t),
            240,
            "RST: transitory, session kept"
        );
    });
}

#[test]
fn fragments_follow_the_translation_of_their_first_fragment() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let big = packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            20000,
            53,
            &[7u8; 100],
        );
        let (first, later) = packets::fragment(&big, 56);
        let (action, out) = fx.from_lan(&first);
        assert_eq!(action, XDP_REDIRECT);
        let (_, want_later) = packets::fragment(
            &packets::udp(&out_hdr(SERVER, SERVER_MAC), 20000, 53, &[7u8; 100]),
            56,
        );
        let (want_first, _) = packets::fragment(
            &packets::udp(&out_hdr(SERVER, SERVER_MAC), 20000, 53, &[7u8; 100]),
            56,
        );
        assert_eq!(
            out, want_first,
            "first fragment: address, port and the whole datagram's UDP checksum"
        );
        let (action, out) = fx.from_lan(&later);
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(out, want_later, "later fragment: address only");

        // And back: a fragmented reply reaches host A whole.
        let reply = packets::udp(&wan_hdr(SERVER, SERVER_MAC), 53, 20000, &[9u8; 100]);
        let (first, later) = packets::fragment(&reply, 56);
        let expect = packets::udp(
            &in_hdr(SERVER, LAN_HOST_A, HOST_A_MAC),
            53,
            20000,
            &[9u8; 100],
        );
        let (want_first, want_later) = packets::fragment(&expect, 56);
        assert_eq!(fx.from_wan(&first), (XDP_REDIRECT, want_first));
        assert_eq!(fx.from_wan(&later), (XDP_REDIRECT, want_later));
        assert_eq!(fx.counter("fragments_translated"), 2);

        // A later fragment for the router itself (no translated first fragment) is its own.
        let mut mine = packets::udp(&wan_hdr(SERVER, SERVER_MAC), 53, 40000, &[1u8; 100]);
        mine[14 + 4] = 0x42; // another IP id than the datagram above
        let (_, later) = packets::fragment(&mine, 56);
        assert_eq!(fx.from_wan(&later), (XDP_PASS, later.clone()));
        assert_eq!(fx.counter("pass_inbound_fragment"), 1);
    });
}

#[test]
fn hairpinning_reaches_the_other_lan_host_from_the_external_endpoint() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        // B is known outside as 203.0.113.1:21000 (UDP) and :22000 (TCP).
        fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER),
            21000,
            53,
            b"q",
        ));
        fx.from_lan(&packets::tcp(
            &lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER),
            22000,
            80,
            SYN,
            b"",
        ));
        let to_b = Hdr {
            smac: LAN_MAC,
            dmac: HOST_B_MAC,
            src: ROUTER_WAN,
            dst: LAN_HOST_B,
            ttl: 63,
        };
        let to_a = Hdr {
            smac: LAN_MAC,
            dmac: HOST_A_MAC,
            src: ROUTER_WAN,
            dst: LAN_HOST_A,
            ttl: 63,
        };

        let (action, out) = fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, ROUTER_WAN),
            20000,
            21000,
            b"hi B",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(
            out,
            packets::udp(&to_b, 20000, 21000, b"hi B"),
            "B sees A's external endpoint"
        );
        let (action, out) = fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_B, HOST_B_MAC, ROUTER_WAN),
            21000,
            20000,
            b"hi A",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(
            out,
            packets::udp(&to_a, 21000, 20000, b"hi A"),
            "and A sees B's"
        );

        let (action, out) = fx.from_lan(&packets::tcp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, ROUTER_WAN),
            30000,
            22000,
            SYN,
            b"",
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(out, packets::tcp(&to_b, 30000, 22000, SYN, b""));
        assert_eq!(fx.counter("hairpin_translated"), 3);

        // A pool port nobody maps: dropped; a router port: the router's.
        assert_eq!(
            fx.from_lan(&packets::udp(
                &lan_hdr(LAN_HOST_A, HOST_A_MAC, ROUTER_WAN),
                20000,
                39999,
                b"x"
            ))
            .0,
            XDP_DROP
        );
        let ssh = packets::tcp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, ROUTER_WAN),
            30001,
            ROUTER_SSH,
            SYN,
            b"",
        );
        assert_eq!(fx.from_lan(&ssh), (XDP_PASS, ssh.clone()));
    });
}

#[test]
fn a_session_that_lost_its_mapping_is_swept_and_the_next_packet_gets_a_new_one() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        fx.from_lan(&packets::udp(&h, 20000, 53, b"q"));
        // As if the mapping went away under a live session (a flush between two deletes).
        let ep = endpoint(LAN_HOST_A, 20000, IPPROTO_UDP);
        let ext = ExternalKey {
            port: 20000u16.to_be(),
            proto: IPPROTO_UDP,
            _pad: 0,
        };
        let mut m = fx.maps.mappings_in.get(&ext, 0).unwrap();
        m.state = MAPPING_COOLING;
        m.released_ns = nat_ctl::monotonic_ns();
        fx.maps.mappings_in.insert(ext, m, 0).unwrap();
        fx.maps.mappings_out.remove(&ep).unwrap();
        let t = fx.maps.read_config().unwrap().timeouts;
        // Found an orphan by two walks in a row (one could have missed its mapping)...
        let later = |s: u64| nat_ctl::monotonic_ns() + s * NS;
        let r = sweeper::sweep(&mut fx.maps, &t, later(6)).unwrap();
        assert_eq!(r.orphans_removed, 0, "{r:?}");
        // ...and a walk that finds its port owned again forgets the first finding.
        let mut active = m;
        active.state = nat_common::maps::MAPPING_ACTIVE;
        fx.maps.mappings_in.insert(ext, active, 0).unwrap();
        let r = sweeper::sweep(&mut fx.maps, &t, later(7)).unwrap();
        assert_eq!(r.orphans_removed, 0, "{r:?}");
        fx.maps.mappings_in.insert(ext, m, 0).unwrap();
        let r = sweeper::sweep(&mut fx.maps, &t, later(8)).unwrap();
        assert_eq!(r.orphans_removed, 0, "a first finding again: {r:?}");
        let r = sweeper::sweep(&mut fx.maps, &t, later(9)).unwrap();
        assert_eq!(r.orphans_removed, 1, "{r:?}");
        let (action, out) = fx.from_lan(&packets::udp(&h, 20000, 53, b"q"));
        assert_eq!(action, XDP_REDIRECT);
        let port = parse_checked(&out).sport;
        assert_ne!(port, 20000, "the cooling port is not reused");
        let (action, _) = fx.from_wan(&packets::udp(&wan_hdr(SERVER, SERVER_MAC), 53, port, b"r"));
        assert_eq!(
            action, XDP_REDIRECT,
            "replies reach the host on the new mapping"
        );
    });
}

#[test]
fn mss_clamping_lowers_syn_mss_both_ways() {
    let clamp = FixtureConfig {
        toml: "[tcp]\nmss_clamp = 1400\n".into(),
        ..Default::default()
    };
    with_fixture(default_tables(), clamp, |fx| {
        // etherparse's SYN carries no options: build one with MSS 1460 first.
        let syn_with_mss = |h: &Hdr, sport: u16, dport: u16, mss: u16, flags: packets::Flags| {
            let mut tcp = etherparse::TcpHeader::new(sport, dport, 1000, 64240);
            tcp.syn = flags.syn;
            tcp.ack = flags.ack;
            tcp.set_options(&[etherparse::TcpOptionElement::MaximumSegmentSize(mss)])
                .unwrap();
            let mut out = Vec::new();
            etherparse::PacketBuilder::ethernet2(h.smac, h.dmac)
                .ipv4(h.src.octets(), h.dst.octets(), h.ttl)
                .tcp_header(tcp)
                .write(&mut out, &[])
                .unwrap();
            out
        };
        let mss_of = |frame: &[u8]| u16::from_be_bytes([frame[14 + 20 + 22], frame[14 + 20 + 23]]);
        let (action, out) = fx.from_lan(&syn_with_mss(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            20000,
            80,
            1460,
            SYN,
        ));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(mss_of(&out), 1400);
        parse_checked(&out);
        let (_, out) = fx.from_wan(&syn_with_mss(
            &wan_hdr(SERVER, SERVER_MAC),
            80,
            20000,
            1460,
            SYN_ACK,
        ));
        assert_eq!(mss_of(&out), 1400, "the server's SYN-ACK too");
        parse_checked(&out);
        // Already small enough: untouched.
        let (_, out) = fx.from_lan(&syn_with_mss(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            20001,
            80,
            1200,
            SYN,
        ));
        assert_eq!(mss_of(&out), 1200);
        assert_eq!(fx.counter("mss_clamped"), 2);
    });
}

#[test]
fn by_default_one_host_cannot_take_the_whole_pool() {
    // 400 ordinary ports, no limit configured: the default gives each host a quarter.
    let small = FixtureConfig {
        port_range: (50000, 50399),
        ..Default::default()
    };
    with_fixture(default_tables(), small, |fx| {
        let limit = fx.maps.read_config().unwrap().mappings_per_host;
        assert_eq!(limit, 100);
        // A torrent client: a flow from every port it has.
        let mut got = 0;
        for port in 0..450 {
            got += u32::from(fx.from_lan(&query_from_a(20000 + port)).0 == XDP_REDIRECT);
        }
        assert_eq!(got, limit, "the flooding host holds its share");
        assert_eq!(fx.counter("drop_host_quota"), (450 - limit) as u64);
        assert_eq!(fx.counter("drop_ports_exhausted"), 0);
        // Its neighbour still gets ports: UDP, TCP and ping.
        let b = lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER);
        assert_eq!(
            fx.from_lan(&packets::udp(&b, 30000, 53, b"q")).0,
            XDP_REDIRECT
        );
        assert_eq!(
            fx.from_lan(&packets::tcp(&b, 30001, 80, packets::SYN, b""))
                .0,
            XDP_REDIRECT
        );
        assert_eq!(
            fx.from_lan(&packets::icmp_echo(&b, true, 77, 1, b"ping")).0,
            XDP_REDIRECT
        );
    });
}

#[test]
fn by_default_one_host_cannot_fill_the_session_table() {
    // A session table of 1024 (the fixture's), no limit configured: a quarter, or at least 256,
    // per host. One mapping talking to ever more remotes (a scanner) is held at that.
    let tables = FixtureConfig {
        toml: "[tables]\nsessions = 1024\n".into(),
        ..Default::default()
    };
    with_fixture(default_tables(), tables, |fx| {
        let limit = fx.maps.read_config().unwrap().sessions_per_host;
        assert_eq!(limit, 256);
        let mut made = 0;
        for i in 0..400u32 {
            let remote = std::net::Ipv4Addr::from(0xc633_0000 + i); // 198.51.0.0/16
            let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, remote);
            made += u32::from(fx.from_lan(&packets::udp(&h, 20000, 53, b"q")).0 == XDP_REDIRECT);
        }
        assert_eq!(made, limit);
        assert_eq!(fx.counter("drop_host_session_quota"), (400 - limit) as u64);
        assert_eq!(fx.counter("drop_session_table_full"), 0);
        // Its neighbour still opens sessions.
        let b = lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER);
        assert_eq!(
            fx.from_lan(&packets::udp(&b, 30000, 53, b"q")).0,
            XDP_REDIRECT
        );
        // The sweeper's recount finds what the data path counted.
        let t = fx.maps.read_config().unwrap().timeouts;
        sweeper::sweep(&mut fx.maps, &t, nat_ctl::monotonic_ns()).unwrap();
        let a = u32::from_ne_bytes(LAN_HOST_A.octets());
        assert_eq!(fx.maps.host_sessions.get(&a, 0).unwrap(), limit);
    });
}

#[test]
fn a_host_quota_limits_one_host_and_not_the_others() {
    let quota = FixtureConfig {
        toml: "[limits]\nmappings_per_host = 2\n".into(),
        ..Default::default()
    };
    with_fixture(default_tables(), quota, |fx| {
        for port in [20000, 20001] {
            assert_eq!(fx.from_lan(&query_from_a(port)).0, XDP_REDIRECT);
        }
        assert_eq!(fx.from_lan(&query_from_a(20002)).0, XDP_DROP);
        assert_eq!(fx.counter("drop_host_quota"), 1);
        // Existing flows of A go on; B has its own quota.
        assert_eq!(fx.from_lan(&query_from_a(20000)).0, XDP_REDIRECT);
        assert_eq!(
            fx.from_lan(&packets::udp(
                &lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER),
                20000,
                53,
                b"q"
            ))
            .0,
            XDP_REDIRECT
        );
        // When A's mappings expire, the sweeper's recount gives A room again.
        let t = fx.maps.read_config().unwrap().timeouts;
        sweeper::sweep(
            &mut fx.maps,
            &t,
            nat_ctl::monotonic_ns() + 300 * NS + CACHE_LAG_NS,
        )
        .unwrap();
        assert_eq!(fx.from_lan(&query_from_a(20003)).0, XDP_REDIRECT);
    });
}

/// A host that spoofs other addresses of the LAN's subnet keeps its MAC, and a MAC holds at
/// most twice a host's share: ports and sessions taken under made-up addresses count against
/// it. Another host (another MAC) is not affected.
#[test]
fn spoofing_other_lan_addresses_does_not_escape_the_host_quota() {
    let quota = FixtureConfig {
        toml: "[limits]\nmappings_per_host = 4\nsessions_per_host = 6\n".into(),
        ..Default::default()
    };
    with_fixture(default_tables(), quota, |fx| {
        // A's MAC, twelve addresses of the subnet, one new mapping each: a MAC holds twice a
        // host's share.
        let mut passed = 0;
        for i in 0..12u8 {
            let spoofed = Ipv4Addr::new(192, 168, 1, 100 + i);
            let h = lan_hdr(spoofed, HOST_A_MAC, SERVER);
            passed += u32::from(fx.from_lan(&packets::udp(&h, 20000, 53, b"q")).0 == XDP_REDIRECT);
        }
        assert_eq!(passed, 8, "the MAC's share of mappings");
        assert_eq!(fx.counter("drop_host_quota"), 4);
        // Sessions likewise (12 for the MAC): the eight mappings talking to more remote ports.
        let mut sessions = 0;
        for i in 0..8u8 {
            let h = lan_hdr(Ipv4Addr::new(192, 168, 1, 100 + i), HOST_A_MAC, SERVER);
            for dport in [54, 55] {
                sessions +=
                    u32::from(fx.from_lan(&packets::udp(&h, 20000, dport, b"q")).0 == XDP_REDIRECT);
            }
        }
        assert_eq!(
            sessions, 4,
            "the MAC's share of sessions: 12, eight of them taken"
        );
        assert_eq!(fx.counter("drop_host_session_quota"), 12);
        // B has its own share.
        for port in [20000, 20001, 20002] {
            let h = lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER);
            assert_eq!(
                fx.from_lan(&packets::udp(&h, port, 53, b"q")).0,
                XDP_REDIRECT
            );
        }
        // The sweeper recounts the MAC's entries from the tables (counts gone wrong first).
        let mac = nat_common::maps::mac_key(&HOST_A_MAC);
        fx.maps.mac_mappings.insert(mac, 1, 0).unwrap();
        fx.maps.mac_sessions.insert(mac, 100, 0).unwrap();
        let t = fx.maps.read_config().unwrap().timeouts;
        sweeper::sweep(&mut fx.maps, &t, nat_ctl::monotonic_ns()).unwrap();
        assert_eq!(fx.maps.mac_mappings.get(&mac, 0).unwrap(), 8);
        assert_eq!(fx.maps.mac_sessions.get(&mac, 0).unwrap(), 12);
        let h = lan_hdr(Ipv4Addr::new(192, 168, 1, 120), HOST_A_MAC, SERVER);
        assert_eq!(fx.from_lan(&packets::udp(&h, 20000, 53, b"q")).0, XDP_DROP);
    });
}

/// With `[limits] icmp_prohibited`, a new flow refused for want of room is answered with ICMP
/// destination unreachable, administratively prohibited (RFC 5508 REQ-8): from the router's
/// LAN address to the host, quoting the refused packet, sent back out of the LAN. Without the
/// setting (the default) the packet is only dropped. Flows that are not refused are not
/// answered.
#[test]
fn a_refused_new_flow_is_answered_with_admin_prohibited_when_configured() {
    let cfg = FixtureConfig {
        toml: "[limits]\nmappings_per_host = 1\nicmp_prohibited = true\n".into(),
        ..Default::default()
    };
    with_fixture(default_tables(), cfg, |fx| {
        assert_eq!(fx.from_lan(&query_from_a(20000)).0, XDP_REDIRECT);
        let refused = query_from_a(20001);
        let (action, out) = fx.from_lan(&refused);
        assert_eq!(action, XDP_REDIRECT, "answered, back out of the LAN");
        let seen = parse_checked(&out);
        assert_eq!(
            (seen.smac, seen.dmac, seen.src, seen.dst),
            (LAN_MAC, HOST_A_MAC, ROUTER_LAN, LAN_HOST_A)
        );
        let p = etherparse::SlicedPacket::from_ethernet(&out).unwrap();
        let Some(etherparse::TransportSlice::Icmpv4(icmp)) = p.transport else {
            panic!("not ICMP: {out:02x?}");
        };
        assert_eq!(
            icmp.icmp_type(),
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FilterProhibited
            )
        );
        assert_eq!(
            icmp.payload(),
            &refused[14..14 + 28],
            "it quotes the refused packet"
        );
        assert_eq!(out.len(), 14 + 20 + 8 + 28);
        assert_eq!(fx.counter("icmp_prohibited_sent"), 1);
        assert_eq!(
            fx.counter("drop_host_quota"),
            1,
            "and the refusal is counted"
        );
        // A refusal for another reason is answered too: B's session share (the mapping it
        // has talking to one more remote port than its share of sessions allows).
        let b = lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER);
        assert_eq!(
            fx.from_lan(&packets::udp(&b, 30000, 53, b"q")).0,
            XDP_REDIRECT
        );
        // A frame to a broadcast MAC is never answered (the whole LAN would get the error).
        let mut broadcast = query_from_a(20002);
        broadcast[0..6].copy_from_slice(&[0xff; 6]);
        assert_eq!(fx.from_lan(&broadcast).0, XDP_DROP);
        assert_eq!(fx.counter("icmp_prohibited_sent"), 1);
        // At most 100 answers per CPU and second (the fixture runs on one CPU, in well
        // under a second); every refusal is still counted.
        let before = fx.counter("drop_host_quota");
        let mut answered = 0;
        for port in 21000..21200u16 {
            answered += u32::from(fx.from_lan(&query_from_a(port)).0 == XDP_REDIRECT);
        }
        assert!(
            (99..=100).contains(&answered),
            "{answered} of 200 refusals answered in a burst"
        );
        assert_eq!(fx.counter("drop_host_quota"), before + 200);
    });
    let cfg = FixtureConfig {
        toml: "[limits]\nsessions_per_host = 1\nicmp_prohibited = true\n".into(),
        ..Default::default()
    };
    with_fixture(default_tables(), cfg, |fx| {
        let a = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        assert_eq!(
            fx.from_lan(&packets::udp(&a, 20000, 53, b"q")).0,
            XDP_REDIRECT
        );
        let (action, out) = fx.from_lan(&packets::udp(&a, 20000, 54, b"q"));
        assert_eq!(
            action, XDP_REDIRECT,
            "the session share's refusal is answered"
        );
        assert_eq!(parse_checked(&out).dst, LAN_HOST_A);
        assert_eq!(fx.counter("drop_host_session_quota"), 1);
    });
    // The default: dropped, not answered.
    let cfg = FixtureConfig {
        toml: "[limits]\nmappings_per_host = 1\n".into(),
        ..Default::default()
    };
    with_fixture(default_tables(), cfg, |fx| {
        assert_eq!(fx.from_lan(&query_from_a(20000)).0, XDP_REDIRECT);
        assert_eq!(fx.from_lan(&query_from_a(20001)).0, XDP_DROP);
        assert_eq!(fx.counter("icmp_prohibited_sent"), 0);
    });
}

/// Hosts routed behind a LAN router all send from that router's MAC: they are counted by
/// address only, so a subnet behind it is not squeezed into one MAC's share.
#[test]
fn hosts_routed_behind_a_lan_router_are_not_counted_by_mac() {
    let quota = FixtureConfig {
        toml: "[limits]\nmappings_per_host = 2\n".into(),
        ..Default::default()
    };
    with_fixture(default_tables(), quota, |fx| {
        let primary = nat_ctl::netdev::Ipv4Net {
            addr: ROUTER_LAN,
            prefix_len: 24,
        };
        let routed = nat_ctl::netdev::Ipv4Net {
            addr: Ipv4Addr::new(10, 9, 0, 0),
            prefix_len: 16,
        };
        let side = nat_ctl::lan_side::LanSide::from_parts(&[primary], &[routed]);
        fx.maps.write_lan_side(&side).unwrap();
        let mut cfg = fx.maps.read_config().unwrap();
        cfg.lan_extra = side.extra();
        fx.maps.write_config(&cfg).unwrap();
        let lan_router_mac = [0x02, 0, 0, 0, 1, 0xfe];
        let mut passed = 0;
        for host in 1..=4u8 {
            let h = lan_hdr(Ipv4Addr::new(10, 9, 0, host), lan_router_mac, SERVER);
            for port in [20000, 20001] {
                passed +=
                    u32::from(fx.from_lan(&packets::udp(&h, port, 53, b"q")).0 == XDP_REDIRECT);
            }
        }
        assert_eq!(
            passed, 8,
            "each routed host its own share, no MAC's share over them"
        );
        let mac = nat_common::maps::mac_key(&lan_router_mac);
        assert!(fx.maps.mac_mappings.get(&mac, 0).is_err());
    });
}

/// The sweeper's walk of the session table runs in the kernel (nat_common::expiry): it
/// removes the filter entries no live session needs and counts each host's live sessions,
/// whatever the counts said before; expired sessions take their filter entries and counts
/// with them.
#[test]
fn the_sweepers_walk_keeps_filters_and_host_counts_to_the_live_sessions() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let remote = |i: u8| Ipv4Addr::new(198, 51, 100, 10 + i);
        for i in 0..3 {
            let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, remote(i));
            assert_eq!(
                fx.from_lan(&packets::udp(&h, 20000, 53, b"q")).0,
                XDP_REDIRECT
            );
        }
        let h = lan_hdr(LAN_HOST_B, HOST_B_MAC, remote(0));
        assert_eq!(
            fx.from_lan(&packets::udp(&h, 30000, 53, b"q")).0,
            XDP_REDIRECT
        );
        // FILTERS entries, and the first remote host each UDP mapping keeps itself.
        let filters = |fx: &Fixture| {
            let (entries, kept) = remembered_remotes(fx);
            entries + kept
        };
        assert_eq!(filters(fx), 4, "one per LAN endpoint and remote host");
        assert_eq!(
            remembered_remotes(fx),
            (2, 2),
            "A's and B's first kept in the mapping"
        );
        // A filter entry with no session behind it, and counts gone wrong.
        let stray = nat_common::maps::SessionKey::new(
            IPPROTO_UDP,
            to_wire(LAN_HOST_A),
            20000u16.to_be(),
            to_wire(remote(9)),
            0,
        );
        fx.maps.filters.insert(stray, 1, 0).unwrap();
        // What address-dependent filtering (the default) lets in: a datagram from another
        // port of a remote host that A's mapping has sent to, and no session.
        let from = |fx: &mut Fixture, i: u8| {
            let h = wan_hdr(remote(i), SERVER_MAC);
            fx.from_wan(&packets::udp(&h, 5353, 20000, b"x")).0
        };
        assert_eq!(
            from(fx, 9),
            XDP_REDIRECT,
            "the stray entry lets its host in"
        );
        let (a, b) = (to_wire(LAN_HOST_A), to_wire(LAN_HOST_B));
        fx.maps.host_sessions.insert(a, 77, 0).unwrap();
        fx.maps.host_sessions.remove(&b).unwrap();
        let mac = nat_common::maps::mac_key(&HOST_A_MAC);
        fx.maps.mac_sessions.insert(mac, 50, 0).unwrap();

        let t = fx.maps.read_config().unwrap().timeouts;
        // Two seconds on: the live sessions' entries stay by their bits, not because they
        // were made during the walk (an entry made less than a second before a walk stays).
        let now = nat_ctl::monotonic_ns() + 2 * NS;
        // A sweep that leaves the filter entries alone (three in four of the daemon's
        // sweeps): the stray entry stays and still lets its host in; the counts are mended.
        let r = sweeper::sweep_with(&mut fx.maps, &t, now, false).unwrap();
        assert_eq!((r.sessions_expired, r.filters_removed), (0, 0), "{r:?}");
        assert_eq!(filters(fx), 5);
        assert_eq!(
            from(fx, 9),
            XDP_REDIRECT,
            "the stray entry waits for a filter walk"
        );
        assert_eq!(fx.maps.host_sessions.get(&a, 0).unwrap(), 3);
        assert_eq!(fx.maps.host_sessions.get(&b, 0).unwrap(), 1);
        // The next filter walk removes it.
        let r = sweeper::sweep(&mut fx.maps, &t, now).unwrap();
        assert_eq!((r.sessions_expired, r.filters_removed), (0, 1), "{r:?}");
        assert_eq!(filters(fx), 4);
        assert!(
            fx.maps.filters.get(&stray, 0).is_err(),
            "the stray entry went"
        );
        assert_eq!(from(fx, 9), XDP_DROP);
        assert_eq!(from(fx, 1), XDP_REDIRECT, "a live session's entry stays");
        assert_eq!(fx.maps.host_sessions.get(&a, 0).unwrap(), 3);
        assert_eq!(fx.maps.host_sessions.get(&b, 0).unwrap(), 1);
        assert_eq!(fx.maps.mac_sessions.get(&mac, 0).unwrap(), 3);
        assert!(
            nat_ctl::state::entries(&fx.maps.host_live)
                .unwrap()
                .is_empty(),
            "the walk's counts are emptied after use"
        );
        // An entry made as the walk runs (its session may be behind the walk) stays for now.
        let fresh = nat_common::maps::SessionKey::new(
            IPPROTO_UDP,
            to_wire(LAN_HOST_A),
            20000u16.to_be(),
            to_wire(remote(8)),
            0,
        );
        fx.maps.filters.insert(fresh, now, 0).unwrap();
        let r = sweeper::sweep(&mut fx.maps, &t, now).unwrap();
        assert_eq!(r.filters_removed, 0, "{r:?}");
        let r = sweeper::sweep(&mut fx.maps, &t, now + 2 * NS).unwrap();
        assert_eq!(r.filters_removed, 1, "a walk later it goes: {r:?}");

        // Past the UDP timeout every session goes; in a sweep that leaves the filter entries
        // alone, theirs stay, to go with the next filter walk, and so do their counts.
        let past = now + t.udp as u64 * NS + CACHE_LAG_NS;
        let r = sweeper::sweep_with(&mut fx.maps, &t, past, false).unwrap();
        assert_eq!((r.sessions_expired, r.filters_removed), (4, 0), "{r:?}");
        assert_eq!(filters(fx), 4);
        assert!(fx.maps.host_sessions.get(&a, 0).is_err());
        let r = sweeper::sweep(&mut fx.maps, &t, past).unwrap();
        assert_eq!((r.sessions_expired, r.filters_removed), (0, 4), "{r:?}");
        assert!(fx.maps.sessions().unwrap().is_empty());
        assert_eq!(filters(fx), 0);
        assert!(fx.maps.host_sessions.get(&a, 0).is_err());
        assert_eq!(
            from(fx, 1),
            XDP_DROP,
            "its session gone, the entry went too"
        );
    });
}
