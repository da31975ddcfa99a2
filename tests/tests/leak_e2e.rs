//! Nothing private leaves the WAN, nothing foreign enters the LAN, whatever path a packet
//! takes around the XDP fast path: spoofed LAN packets to the router, the router's own
//! traffic from its LAN address, errors the kernel makes about LAN hosts, DF packets the
//! kernel would forward by its own MTU, the router's own PMTU discovery and traceroute,
//! every LAN prefix and route. A tripwire (an AF_PACKET capture at the far end of the WAN
//! link, tests/src/tripwire.rs) fails a test on any LAN address it sees, outer or quoted.

use integration_tests::{
    daemon::NatDaemon,
    lab::{FAR_HOST, LAN_HOST_A, LAN_HOST_B, Lab, ROUTER_LAN, ROUTER_WAN, SERVER},
    netns::Netns,
    packets::{self, Hdr, SYN},
    traffic::{udp_send, udp_socket},
    tripwire::{Capture, Prefix, Tripwire},
    wait_for,
};
use socket2::{Domain, Protocol, Socket, Type};
use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    time::Duration,
};

const LAN: Prefix = (Ipv4Addr::new(192, 168, 1, 0), 24);

/// The WAN side's view: a tripwire on the server's end of the router's WAN link.
fn wan_tripwire(lab: &Lab, private: &[Prefix]) -> Tripwire {
    Tripwire::start(&lab.wan, "eth0", private.to_vec()).expect("tripwire")
}

fn assert_clean(cap: &Capture, nat: &NatDaemon) {
    assert!(cap.frames > 0, "the tripwire saw nothing at all");
    assert!(
        cap.leaks.is_empty(),
        "private addresses left the WAN: {:#?}\nstats: {}",
        cap.leaks,
        nat.json(&["stats"])
    );
}

/// An IPv4 packet (no Ethernet header) sent as is from `ns` with a raw IP_HDRINCL socket.
fn send_raw(ns: &Netns, frame: Vec<u8>) {
    ns.run(move || {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )
        .expect("raw socket");
        let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
        s.send_to(&frame[14..], &SocketAddr::from((dst, 0)).into())
            .expect("raw send");
    })
    .unwrap();
}

/// Waits (up to 2 s) for counter `name` to reach `at_least`.
fn counter_reaches(nat: &NatDaemon, name: &str, at_least: u64) -> bool {
    wait_for(Duration::from_secs(2), || {
        (nat.counter(name) >= at_least).then_some(())
    })
    .is_some()
}

fn hdr(src: Ipv4Addr, dst: Ipv4Addr) -> Hdr {
    Hdr {
        smac: [0; 6],
        dmac: [0; 6],
        src,
        dst,
        ttl: 64,
    }
}

fn out_text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn spoofed_and_router_sourced_packets_never_leave_the_wan() {
    let lab = Lab::new("lk1").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let trip = wan_tripwire(&lab, &[LAN]);

    // Ordinary traffic crosses, translated: the tripwire sees frames, none of them private.
    let server = udp_socket(
        &lab.wan,
        SocketAddrV4::new(SERVER, 7000),
        Duration::from_secs(3),
    )
    .unwrap();
    let host = udp_socket(
        &lab.lan,
        SocketAddrV4::new(LAN_HOST_A, 40000),
        Duration::from_millis(800),
    )
    .unwrap();
    host.send_to(b"hello", (SERVER, 7000)).unwrap();
    let mut buf = [0u8; 64];
    let (_, mapped) = server
        .recv_from(&mut buf)
        .expect("the datagram crosses the NAT");
    assert_eq!(mapped.ip(), std::net::IpAddr::V4(ROUTER_WAN));

    // A LAN host "from" the server's address to the router's LAN address: UDP, a TCP SYN, an
    // odd protocol. The router would answer out of the WAN, from its LAN address.
    let spoofed = hdr(SERVER, ROUTER_LAN);
    let foreign_before = nat.counter("drop_lan_source_foreign");
    send_raw(&lab.lan, packets::udp(&spoofed, 5353, 9, b"x"));
    send_raw(&lab.lan, packets::tcp(&spoofed, 5353, 22, SYN, b""));
    send_raw(&lab.lan, packets::ip_proto(&spoofed, 253, b"odd protocol"));

    // A LAN host's ping with record route: its own address rides in the IP options.
    let _ = lab
        .lan
        .cmd("ping")
        .args(["-c", "1", "-W", "1", "-R", "-n", &SERVER.to_string()])
        .output()
        .unwrap();

    // The router's own traffic from its LAN address.
    // (It gets no answer in any case: the server has no route back to the LAN. The tripwire
    // and the egress counter say whether it left.)
    let _ = lab
        .router
        .cmd("ping")
        .args([
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            &ROUTER_LAN.to_string(),
        ])
        .arg(SERVER.to_string())
        .output()
        .unwrap();
    udp_send(
        &lab.router,
        ROUTER_LAN,
        SocketAddrV4::new(SERVER, 7001),
        b"from the LAN address",
    )
    .unwrap();

    // Hairpinning: host B reaches A through A's mapping, and A answers through B's, which
    // opens A's address-dependent filter for the WAN address itself.
    let mapped_port = mapped.port();
    let b = udp_socket(
        &lab.lan,
        SocketAddrV4::new(LAN_HOST_B, 40001),
        Duration::from_secs(2),
    )
    .unwrap();
    b.send_to(b"hairpin", (ROUTER_WAN, mapped_port)).unwrap();
    let (_, b_mapped) = host.recv_from(&mut buf).expect("hairpinned to A");
    assert_eq!(b_mapped.ip(), std::net::IpAddr::V4(ROUTER_WAN));
    host.send_to(b"back", b_mapped).unwrap();
    b.recv_from(&mut buf).expect("hairpinned back to B");
    // From the WAN, "from" the WAN address: the filter would let it in, but the WAN address
    // never sends from the WAN.
    let self_before = nat.counter("drop_wan_source_self");
    send_raw(
        &lab.wan,
        packets::udp(&hdr(ROUTER_WAN, ROUTER_WAN), 7000, mapped_port, b"spoof"),
    );
    assert!(
        host.recv_from(&mut buf).is_err(),
        "a packet from the WAN address reached the LAN host"
    );

    let cap = trip.finish().unwrap();
    assert_clean(&cap, &nat);
    assert!(
        nat.counter("drop_lan_source_foreign") >= foreign_before + 3,
        "{}",
        nat.json(&["stats"])
    );
    assert!(
        nat.counter("drop_egress_lan_address") >= 3,
        "the router's own packets from its LAN address: {}",
        nat.json(&["stats"])
    );
    assert!(nat.counter("drop_wan_source_self") > self_before);
    assert!(
        nat.counter("drop_ip_options") >= 1,
        "{}",
        nat.json(&["stats"])
    );
}

#[test]
fn an_error_the_router_makes_about_a_lan_host_leaves_translated() {
    let lab = Lab::new("lk2").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let server = udp_socket(
        &lab.wan,
        SocketAddrV4::new(SERVER, 7100),
        Duration::from_secs(3),
    )
    .unwrap();
    let host = lab
        .lan
        .run(|| UdpSocket::bind((LAN_HOST_A, 41000)))
        .unwrap()
        .unwrap();
    host.send_to(b"open", (SERVER, 7100)).unwrap();
    let mut buf = [0u8; 64];
    let (_, mapped) = server
        .recv_from(&mut buf)
        .expect("the datagram crosses the NAT");

    // The LAN host goes quiet on ARP and the router forgets its MAC: the next replies are
    // translated and left to the kernel, which cannot deliver them and says so to the
    // server, quoting what it tried to deliver (the LAN host and its port).
    lab.lan.ip(&["link", "set", "eth0", "arp", "off"]).unwrap();
    lab.router.ip(&["neigh", "flush", "dev", "lan0"]).unwrap();
    // Cached next hops answer for at most a second.
    std::thread::sleep(Duration::from_millis(1200));
    let trip = wan_tripwire(&lab, &[LAN]);
    let errors = wait_for(Duration::from_secs(10), || {
        server.send_to(b"reply", mapped).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        (nat.counter("egress_icmp_error_translated") > 0).then_some(())
    });
    let cap = trip.finish().unwrap();
    assert_clean(&cap, &nat);
    assert!(
        errors.is_some(),
        "no error made it out: {}",
        nat.json(&["stats"])
    );
    let unreachable: Vec<_> = cap
        .icmp_errors
        .iter()
        .filter(|e| e.icmp_type == 3)
        .collect();
    assert!(!unreachable.is_empty(), "{cap:?}");
    for e in unreachable {
        assert_eq!(
            (e.outer_dst, e.quoted_src, e.quoted_dst, e.quoted_ports),
            (SERVER, SERVER, ROUTER_WAN, (7100, mapped.port())),
            "the error quotes what the server sent: {e:?}"
        );
    }
}

#[test]
fn the_routers_own_pmtu_discovery_and_traceroute_work_and_lan_df_packets_leave_translated() {
    let lab = Lab::new("lk3").unwrap();
    let _far = lab.far().unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let trip = wan_tripwire(&lab, &[LAN]);
    let far = FAR_HOST.to_string();

    // The router's own traceroute: ICMP (ping -t 1) and UDP (tracepath).
    let ttl = lab
        .router
        .cmd("ping")
        .args(["-c", "1", "-t", "1", "-W", "2", "-n", &far])
        .output()
        .unwrap();
    assert!(
        out_text(&ttl).contains("Time to live exceeded"),
        "the router's ping -t 1: {}\nstats: {}",
        out_text(&ttl),
        nat.json(&["stats"])
    );
    let tp = lab
        .router
        .cmd("tracepath")
        .args(["-n", "-m", "2", &far])
        .output()
        .unwrap();
    assert!(
        out_text(&tp).contains(&SERVER.to_string()),
        "the router's tracepath sees the first hop: {}",
        out_text(&tp)
    );

    // The router's own path MTU discovery: a DF ping over the 1280 hop.
    let _ = lab
        .router
        .cmd("ping")
        .args(["-c", "2", "-M", "do", "-s", "1400", "-W", "2", "-n", &far])
        .output()
        .unwrap();
    let route = lab
        .router
        .cmd("ip")
        .args(["route", "get", &far])
        .output()
        .unwrap();
    assert!(
        out_text(&route).contains("mtu 1280"),
        "the router learned the path MTU: {}\nstats: {}",
        out_text(&route),
        nat.json(&["stats"])
    );

    // Now the router knows the path is 1280: a LAN host's DF packet of 1428 bytes is too big
    // for that path but not for the WAN link, so the kernel would forward it. It leaves
    // translated, and the hop beyond tells the LAN host.
    let ping = lab
        .lan
        .cmd("ping")
        .args([
            "-c", "3", "-i", "0.3", "-M", "do", "-s", "1400", "-W", "2", "-n", &far,
        ])
        .output()
        .unwrap();
    let text = out_text(&ping);
    assert!(
        text.contains("mtu = 1280") || text.contains("mtu=1280"),
        "the LAN host learns the path MTU: {text}\nstats: {}",
        nat.json(&["stats"])
    );
    let cap = trip.finish().unwrap();
    assert_clean(&cap, &nat);
}

#[test]
fn every_lan_prefix_and_route_is_guarded_and_followed() {
    let lab = Lab::new("lk4").unwrap();
    // A secondary subnet on the LAN interface, and a network routed behind a LAN host.
    lab.router
        .ip(&["addr", "add", "10.99.0.1/24", "dev", "lan0"])
        .unwrap();
    lab.router
        .ip(&[
            "route",
            "add",
            "10.98.0.0/24",
            "via",
            "192.168.1.2",
            "dev",
            "lan0",
        ])
        .unwrap();
    lab.lan
        .ip(&["addr", "add", "10.99.0.5/24", "dev", "eth0"])
        .unwrap();
    lab.wan
        .ip(&["route", "add", "10.0.0.0/8", "via", &ROUTER_WAN.to_string()])
        .unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let side = nat.json(&["status"])["lan_side"].to_string();
    for p in [
        "10.99.0.0/24",
        "10.98.0.0/24",
        "192.168.1.0/24",
        "10.99.0.1/32",
    ] {
        assert!(side.contains(p), "{p} missing from {side}");
    }

    // Nothing from the WAN reaches any of it: a capture on the LAN side looks for the server.
    let inside = Tripwire::start(&lab.lan, "eth0", vec![(SERVER, 32)]).unwrap();
    let dropped_before = nat.counter("drop_to_lan_address");
    let send = |dst: [u8; 4]| {
        udp_send(
            &lab.wan,
            SERVER,
            SocketAddrV4::new(Ipv4Addr::from(dst), 5555),
            b"in",
        )
        .unwrap();
    };
    for dst in [[10, 99, 0, 5], [10, 99, 0, 1], [10, 98, 0, 7]] {
        send(dst);
    }
    assert!(
        counter_reaches(&nat, "drop_to_lan_address", dropped_before + 3),
        "{}",
        nat.json(&["stats"])
    );

    // A subnet added while the NAT runs is guarded too, once netlink says so.
    lab.router
        .ip(&["addr", "add", "10.97.0.1/24", "dev", "lan0"])
        .unwrap();
    let followed = wait_for(Duration::from_secs(5), || {
        nat.json(&["status"])["lan_side"]
            .to_string()
            .contains("10.97.0.0/24")
            .then_some(())
    });
    assert!(followed.is_some(), "{}", nat.log());
    // The trie, not only the FIB, follows it: a LAN host on the new subnet is a LAN host (the
    // LAN program's anti-spoofing reads the trie), and the new subnet is a spoofed source
    // from the WAN.
    let server = udp_socket(
        &lab.wan,
        SocketAddrV4::new(SERVER, 7300),
        Duration::from_secs(3),
    )
    .unwrap();
    lab.lan
        .ip(&["addr", "add", "10.97.0.5/24", "dev", "eth0"])
        .unwrap();
    udp_send(
        &lab.lan,
        Ipv4Addr::new(10, 97, 0, 5),
        SocketAddrV4::new(SERVER, 7300),
        b"from the new subnet",
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let (_, from) = server
        .recv_from(&mut buf)
        .expect("a host on the new subnet is translated");
    assert_eq!(from.ip(), std::net::IpAddr::V4(ROUTER_WAN));
    let martians = nat.counter("drop_martian_source");
    send_raw(
        &lab.wan,
        packets::udp(&hdr(Ipv4Addr::new(10, 97, 0, 9), ROUTER_WAN), 1, 2, b"x"),
    );
    assert!(
        counter_reaches(&nat, "drop_martian_source", martians + 1),
        "a source on the new subnet from the WAN"
    );
    let before = nat.counter("drop_to_lan_address");
    send([10, 97, 0, 9]);
    assert!(counter_reaches(&nat, "drop_to_lan_address", before + 1));
    // Routes come and go too: one added behind the LAN is followed, and so is its removal.
    let side = || nat.json(&["status"])["lan_side"].to_string();
    lab.router
        .ip(&[
            "route",
            "add",
            "10.96.0.0/16",
            "via",
            "192.168.1.3",
            "dev",
            "lan0",
        ])
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || side()
            .contains("10.96.0.0/16")
            .then_some(()))
        .is_some(),
        "{}",
        side()
    );
    // While it is there, a LAN host may send from it; once it is gone, no more.
    lab.lan
        .ip(&["addr", "add", "10.96.0.5/16", "dev", "eth0"])
        .unwrap();
    let from_96 = || {
        udp_send(
            &lab.lan,
            Ipv4Addr::new(10, 96, 0, 5),
            SocketAddrV4::new(SERVER, 7300),
            b"from behind the LAN",
        )
        .unwrap();
    };
    from_96();
    server
        .recv_from(&mut buf)
        .expect("a source on a routed LAN network is translated");
    lab.router
        .ip(&[
            "route",
            "del",
            "10.96.0.0/16",
            "via",
            "192.168.1.3",
            "dev",
            "lan0",
        ])
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || (!side()
            .contains("10.96.0.0/16"))
        .then_some(()))
        .is_some(),
        "{}",
        side()
    );
    let foreign = nat.counter("drop_lan_source_foreign");
    from_96();
    assert!(
        counter_reaches(&nat, "drop_lan_source_foreign", foreign + 1),
        "a source on a removed route is no longer the LAN's"
    );
    let cap = inside.finish().unwrap();
    assert!(cap.frames > 0, "the LAN-side capture saw nothing at all");
    assert!(
        cap.leaks.is_empty(),
        "WAN traffic reached the LAN: {:#?}",
        cap.leaks
    );

    // A host on the secondary subnet is a LAN host: its traffic is translated.
    let server = udp_socket(
        &lab.wan,
        SocketAddrV4::new(SERVER, 7200),
        Duration::from_secs(3),
    )
    .unwrap();
    udp_send(
        &lab.lan,
        Ipv4Addr::new(10, 99, 0, 5),
        SocketAddrV4::new(SERVER, 7200),
        b"from the secondary subnet",
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let (_, from) = server.recv_from(&mut buf).expect("translated");
    assert_eq!(from.ip(), std::net::IpAddr::V4(ROUTER_WAN));
}
