//! BPF_PROG_TEST_RUN fixtures for the fast path: the next hop a session keeps, when it is
//! looked up again, the inbound half of a session (SESSIONS_IN), and TCP state changes that
//! must not slip past it.

use integration_tests::{
    fixture::*,
    lab::{LAN_HOST_A, SERVER},
    packets::{self, ACK, Flags, Hdr, SYN, SYN_ACK},
};
use nat_common::{
    config::NEXT_HOP_TTL_NS,
    maps::{ReplyKey, SessionIn},
    proto::{IPPROTO_TCP, IPPROTO_UDP},
    tcp_state,
};
use nat_ctl::{commands::to_wire, state::entries, sweeper};
use std::{net::Ipv4Addr, process::Command, time::Duration};

const NEW_MAC: packets::Mac = [0x02, 0, 0, 0, 1, 0x99];
const OTHER_MAC: packets::Mac = [0x02, 0, 0, 0, 1, 0x98];
const FIN_ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: true,
    rst: false,
};
const RST: Flags = Flags {
    syn: false,
    ack: false,
    fin: false,
    rst: true,
};

fn mac_text(m: packets::Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Gives LAN host A another MAC address in the fixture's neighbour table (runs in the
/// fixture's namespace: children inherit the thread's).
fn move_host_a(mac: packets::Mac) {
    let ok = Command::new("ip")
        .args(["neigh", "replace", &LAN_HOST_A.to_string()])
        .args(["lladdr", &mac_text(mac), "dev", "lan0", "nud", "permanent"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "ip neigh replace");
}

fn query() -> Vec<u8> {
    packets::udp(&lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER), 5353, 53, b"q")
}

fn reply() -> Vec<u8> {
    packets::udp(&wan_hdr(SERVER, SERVER_MAC), 53, 5353, b"a")
}

/// The reply as delivered to host A at `mac`.
fn delivered(mac: packets::Mac) -> Vec<u8> {
    packets::udp(
        &Hdr {
            smac: LAN_MAC,
            dmac: mac,
            src: SERVER,
            dst: LAN_HOST_A,
            ttl: 63,
        },
        53,
        5353,
        b"a",
    )
}

fn reply_half(fx: &Fixture) -> Option<SessionIn> {
    entries(&fx.maps.sessions_in)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k.proto == IPPROTO_UDP)
        .map(|(_, v)| v)
}

#[test]
fn replies_keep_their_next_hop_until_a_route_change_or_its_ttl() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        assert_eq!(fx.from_lan(&query()).0, XDP_REDIRECT);
        assert!(
            reply_half(fx).is_none(),
            "made by the first reply, not the query"
        );
        assert_eq!(fx.from_wan(&reply()), (XDP_REDIRECT, delivered(HOST_A_MAC)));
        let half = reply_half(fx).expect("the first reply made the inbound half");
        assert_eq!(half.int_addr, to_wire(LAN_HOST_A));
        assert_eq!(half.hop.dmac, HOST_A_MAC);

        // The host moved to another MAC address: the kept next hop still says the old one...
        move_host_a(NEW_MAC);
        assert_eq!(
            fx.from_wan(&reply()),
            (XDP_REDIRECT, delivered(HOST_A_MAC)),
            "replies use the next hop the session keeps, not a FIB lookup each"
        );
        // ...until the route generation moves on (the daemon does that on the netlink
        // event), and the very next reply goes to the new address.
        fx.maps.bump_route_gen().unwrap();
        assert_eq!(fx.from_wan(&reply()), (XDP_REDIRECT, delivered(NEW_MAC)));

        // With nobody moving the generation on, the kept hop expires by itself.
        move_host_a(OTHER_MAC);
        assert_eq!(fx.from_wan(&reply()).1, delivered(NEW_MAC));
        std::thread::sleep(Duration::from_nanos(NEXT_HOP_TTL_NS) + Duration::from_millis(100));
        assert_eq!(fx.from_wan(&reply()).1, delivered(OTHER_MAC));
        assert_eq!(fx.counter("in_redirected"), 5);
    });
}

#[test]
fn a_packet_longer_than_the_kept_hop_was_checked_for_asks_the_fib() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let ok = Command::new("ip")
            .args(["link", "set", "wan0", "mtu", "1400"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip link set mtu");
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        assert_eq!(
            fx.from_lan(&packets::udp(&h, 5353, 53, b"q")).0,
            XDP_REDIRECT
        );
        // The session keeps a next hop checked for a small packet; one over the WAN MTU
        // must still go to the kernel (Fragmentation Needed, or fragmenting), never be
        // redirected onto a link that cannot carry it.
        let big = packets::udp(&h, 5353, 53, &[0u8; 1450]);
        assert_eq!(fx.from_lan(&big).0, XDP_PASS);
        assert_eq!(
            fx.counter("pass_frag_needed") + fx.counter("out_pass_kernel"),
            1
        );
        assert_eq!(
            fx.from_lan(&packets::udp(&h, 5353, 53, b"q")).0,
            XDP_REDIRECT
        );
        assert_eq!(fx.counter("out_redirected"), 2);
    });
}

#[test]
fn tcp_fin_and_rst_from_the_wan_reach_the_session_state_past_the_fast_path() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let out = |f| packets::tcp(&lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER), 40000, 443, f, b"");
        let inb = |f| packets::tcp(&wan_hdr(SERVER, SERVER_MAC), 443, 40000, f, b"data");
        let state = |fx: &Fixture| {
            fx.maps
                .sessions
                .get(
                    &nat_common::maps::SessionKey::new(
                        IPPROTO_TCP,
                        to_wire(LAN_HOST_A),
                        40000u16.to_be(),
                        to_wire(SERVER),
                        443u16.to_be(),
                    ),
                    0,
                )
                .unwrap()
                .tcp_state
        };
        assert_eq!(fx.from_lan(&out(SYN)).0, XDP_REDIRECT);
        assert_eq!(fx.from_wan(&inb(SYN_ACK)).0, XDP_REDIRECT);
        assert_eq!(fx.from_lan(&out(ACK)).0, XDP_REDIRECT);
        for _ in 0..3 {
            assert_eq!(fx.from_wan(&inb(ACK)).0, XDP_REDIRECT);
        }
        assert!(tcp_state::is_established(state(fx)));
        assert_eq!(fx.from_wan(&inb(FIN_ACK)).0, XDP_REDIRECT);
        assert_ne!(
            state(fx) & tcp_state::FIN_IN,
            0,
            "the server's FIN was recorded"
        );
        assert_eq!(fx.from_wan(&inb(RST)).0, XDP_REDIRECT);
        assert_ne!(
            state(fx) & tcp_state::RST,
            0,
            "the server's RST was recorded"
        );

        // A new connection on the same 5-tuple: plain segments from the server wait for its
        // SYN-ACK to be recorded again before they skip the state machine.
        assert_eq!(fx.from_lan(&out(SYN)).0, XDP_REDIRECT);
        assert_eq!(state(fx), tcp_state::SYN_OUT);
        let half = entries(&fx.maps.sessions_in).unwrap()[0].1;
        assert_eq!(half.tcp_synced, 0);
        assert_eq!(fx.from_wan(&inb(SYN_ACK)).0, XDP_REDIRECT);
        assert!(tcp_state::is_established(state(fx)));
    });
}

#[test]
fn the_inbound_half_goes_with_its_session_and_strays_are_swept() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        fx.from_lan(&query());
        fx.from_wan(&reply());
        assert_eq!(entries(&fx.maps.sessions_in).unwrap().len(), 1);
        // A stray inbound half (its session gone, as after a crash between two deletes).
        let stray = ReplyKey {
            rem_addr: to_wire(Ipv4Addr::new(198, 51, 100, 7)),
            ext_port: 7777u16.to_be(),
            rem_port: 53u16.to_be(),
            proto: IPPROTO_UDP,
            ..Default::default()
        };
        let half = reply_half(fx).unwrap();
        fx.maps.sessions_in.insert(stray, half, 0).unwrap();

        let t = fx.maps.read_config().unwrap().timeouts;
        let now = nat_ctl::monotonic_ns();
        let r = sweeper::sweep(&mut fx.maps, &t, now).unwrap();
        assert_eq!(r.orphans_removed, 1, "{r:?}");
        assert_eq!(entries(&fx.maps.sessions_in).unwrap().len(), 1);

        // The reply refreshed the session: its idle time counts from the later half.
        let listed = fx.maps.sessions().unwrap();
        assert_eq!(
            listed[0].1.last_seen_ns,
            half.last_seen_ns.max(listed[0].1.last_seen_ns)
        );

        let r = sweeper::sweep(&mut fx.maps, &t, now + (t.udp as u64 + 1) * 1_000_000_000).unwrap();
        assert_eq!(r.sessions_expired, 1, "{r:?}");
        assert!(entries(&fx.maps.sessions_in).unwrap().is_empty());
        // And the next reply finds nothing to go to.
        assert_eq!(fx.from_wan(&reply()).0, XDP_DROP);
    });
}
