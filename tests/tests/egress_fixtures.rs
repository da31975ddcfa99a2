//! The WAN egress guard (TC) through BPF_PROG_TEST_RUN: what the kernel sends out of the WAN
//! on its own never carries a LAN address; a router-made ICMP error about a translated flow
//! leaves quoting the flow as the remote knows it, byte for byte what etherparse builds.

use integration_tests::{
    fixture::*,
    lab::{LAN_HOST_A, ROUTER_LAN, ROUTER_WAN, SERVER},
    packets::{self, Hdr},
};
use std::net::Ipv4Addr;

fn from_router(src: Ipv4Addr, dst: Ipv4Addr) -> Hdr {
    Hdr {
        smac: WAN_MAC,
        dmac: SERVER_MAC,
        src,
        dst,
        ttl: 64,
    }
}

fn remote_to(dst: Ipv4Addr) -> Hdr {
    Hdr {
        smac: SERVER_MAC,
        dmac: WAN_MAC,
        src: SERVER,
        dst,
        ttl: 63,
    }
}

#[test]
fn lan_addresses_never_leave_the_wan() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let clean = packets::udp(&from_router(ROUTER_WAN, SERVER), 5353, 53, b"q");
        assert_eq!(fx.to_wan_egress(&clean), (TC_ACT_OK, clean.clone()));
        let cases = [
            (
                "the router's own packet from its LAN address",
                packets::icmp_echo(&from_router(ROUTER_LAN, SERVER), true, 1, 1, b"ping"),
                "drop_egress_lan_address",
            ),
            (
                "a LAN host's packet the kernel forwarded untranslated",
                packets::tcp(
                    &from_router(LAN_HOST_A, SERVER),
                    20000,
                    80,
                    packets::SYN,
                    b"",
                ),
                "drop_egress_lan_address",
            ),
            (
                "to a LAN address",
                packets::udp(&from_router(ROUTER_WAN, LAN_HOST_A), 1, 2, b"x"),
                "drop_egress_lan_address",
            ),
            (
                "an error quoting a LAN source",
                packets::icmp_error(
                    &from_router(ROUTER_WAN, SERVER),
                    packets::ttl_exceeded(),
                    &packets::udp(&from_router(LAN_HOST_A, SERVER), 20000, 53, b"q"),
                ),
                "drop_egress_lan_quoted",
            ),
            (
                "an error quoting a LAN host no mapping explains",
                packets::icmp_error(
                    &from_router(ROUTER_WAN, SERVER),
                    packets::host_unreachable(),
                    &packets::udp(&remote_to(LAN_HOST_A), 53, 20099, b"a"),
                ),
                "drop_egress_lan_quoted",
            ),
            (
                "a redirect quoting a LAN host",
                packets::icmp_error(
                    &from_router(ROUTER_WAN, SERVER),
                    etherparse::Icmpv4Type::Redirect(etherparse::icmpv4::RedirectHeader {
                        code: etherparse::icmpv4::RedirectCode::RedirectForNetwork,
                        gateway_internet_address: [203, 0, 113, 254],
                    }),
                    &packets::udp(&from_router(LAN_HOST_A, SERVER), 20000, 53, b"q"),
                ),
                "drop_egress_lan_quoted",
            ),
            (
                "ARP naming the LAN address",
                packets::arp_request(WAN_MAC, ROUTER_LAN, SERVER),
                "drop_egress_lan_arp",
            ),
        ];
        for (what, frame, counter) in cases {
            let before = fx.counter(counter);
            assert_eq!(fx.to_wan_egress(&frame).0, TC_ACT_SHOT, "{what}");
            assert_eq!(
                fx.counter(counter),
                before + 1,
                "{what}: counted as {counter}"
            );
        }
        let arp = packets::arp_request(WAN_MAC, ROUTER_WAN, SERVER);
        assert_eq!(fx.to_wan_egress(&arp), (TC_ACT_OK, arp.clone()));
        // ICMP it cannot read is not let through unchecked.
        let mut broken = packets::icmp_error(
            &from_router(ROUTER_WAN, SERVER),
            packets::host_unreachable(),
            &packets::udp(&remote_to(LAN_HOST_A), 53, 20099, b"a"),
        );
        broken[16..18].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(fx.to_wan_egress(&broken).0, TC_ACT_SHOT);
        assert_eq!(fx.counter("drop_egress_unparsed"), 1);
    });
}

#[test]
fn router_made_errors_about_translated_flows_leave_quoting_the_external_endpoint() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        let (_, out) = fx.from_lan(&packets::udp(&h, 20000, 53, b"q"));
        let ext = u16::from_be_bytes([out[34], out[35]]);
        let (_, out) = fx.from_lan(&packets::icmp_echo(&h, true, 9, 1, b"ping"));
        let ext_id = u16::from_be_bytes([out[38], out[39]]);
        let outer = from_router(ROUTER_WAN, SERVER);
        // The kernel could not deliver a translated reply (no ARP answer) and says so, quoting
        // it as it tried to deliver it; it must leave quoting it as the server sent it.
        let cases = [
            (
                packets::udp(&remote_to(LAN_HOST_A), 53, 20000, b"answer"),
                packets::udp(&remote_to(ROUTER_WAN), 53, ext, b"answer"),
            ),
            (
                packets::icmp_echo(&remote_to(LAN_HOST_A), false, 9, 1, b"ping"),
                packets::icmp_echo(&remote_to(ROUTER_WAN), false, ext_id, 1, b"ping"),
            ),
        ];
        for (as_delivered, as_sent) in cases {
            let made = packets::icmp_error(&outer, packets::host_unreachable(), &as_delivered);
            let want = packets::icmp_error(&outer, packets::host_unreachable(), &as_sent);
            assert_eq!(fx.to_wan_egress(&made), (TC_ACT_OK, want));
        }
        assert_eq!(fx.counter("egress_icmp_error_translated"), 2);
    });
}

#[test]
fn the_routers_own_ike_peers_are_remembered() {
    // IKE leaving the WAN from port 500 to the server.
    let ike = packets::udp(
        &from_router(ROUTER_WAN, SERVER),
        500,
        500,
        &packets::ike(1, 0, 8),
    );
    // The router listens on 500 and 4500 itself: they are out of the pool.
    let own_ike = FixtureConfig {
        reserved: vec![ROUTER_SSH, 500, 4500],
        ..Default::default()
    };
    with_fixture(default_tables(), own_ike, |fx| {
        assert_eq!(fx.to_wan_egress(&ike).0, TC_ACT_OK);
        let peers: Vec<u32> = fx
            .maps
            .router_ipsec_peers
            .keys()
            .filter_map(|k| k.ok())
            .collect();
        assert_eq!(peers, vec![u32::from_ne_bytes(SERVER.octets())]);
    });
    // Port 500 is the NAT's: what leaves from it is a LAN host's, translated.
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        assert_eq!(fx.to_wan_egress(&ike).0, TC_ACT_OK);
        assert_eq!(fx.maps.router_ipsec_peers.keys().count(), 0);
    });
}
