//! Hostile and malformed packets through BPF_PROG_TEST_RUN: each gets its verdict and a
//! named counter; none is forwarded with a LAN address on the WAN side, none creates state.

use integration_tests::{
    fixture::*,
    lab::{LAN_HOST_A, LAN_HOST_B, ROUTER_LAN, SERVER},
    packets::{self, ACK, Hdr},
};
use nat_common::{
    checksum::checksum,
    proto::{IPPROTO_ESP, IPPROTO_GRE},
};
use std::net::Ipv4Addr;

fn lan_src(frame: &[u8]) -> bool {
    frame.len() >= 30 && frame[26..29] == [192, 168, 1]
}

fn fix_ip_checksum(f: &mut [u8]) {
    let ihl = ((f[14] & 0x0f) as usize) * 4;
    f[24] = 0;
    f[25] = 0;
    let end = (14 + ihl).min(f.len());
    let c = checksum(&f[14..end]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Would the fixture's kernel forward `frame`, as it stands, out of the WAN interface? The
/// fixture routes 192.168.1.0/24 to the LAN, holds 192.168.1.1 and 203.0.113.1 itself, and
/// sends everything else out of wan0; the kernel drops what fails its own IPv4 checks
/// (ip_rcv), and never forwards TTL 1, martian or multicast destinations.
fn kernel_would_forward_to_wan(frame: &[u8]) -> bool {
    kernel_forwards(frame).is_some_and(|dst| {
        let [a, b, c, _] = dst.octets();
        [a, b, c] != [192, 168, 1] && dst != ROUTER_WAN_ADDR
    })
}

/// Would the fixture's kernel forward `frame` from the WAN into the LAN (192.168.1.0/24)?
fn kernel_would_forward_to_lan(frame: &[u8]) -> bool {
    kernel_forwards(frame)
        .is_some_and(|dst| dst.octets()[..3] == [192, 168, 1] && dst != ROUTER_LAN)
}

/// The destination of `frame` if the kernel would route it on at all: an IPv4 frame (a
/// priority tag, VLAN 0, is stripped and the frame taken as untagged), passing the kernel's
/// own header checks, TTL above 1, not to the router's own WAN address, a martian or a
/// multicast address.
fn kernel_forwards(frame: &[u8]) -> Option<Ipv4Addr> {
    let mut at = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    if matches!(ethertype, 0x8100 | 0x88a8) {
        let vid = u16::from_be_bytes([*frame.get(at + 2)?, *frame.get(at + 3)?]) & 0x0fff;
        if vid != 0 {
            return None;
        }
        at += 4;
        ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    }
    let ip = frame.get(at + 2..)?;
    if ethertype != 0x0800 || ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let tot_len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ihl < 20 || tot_len < ihl || tot_len > ip.len() || checksum(&ip[..ihl]) != 0 {
        return None;
    }
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let a = dst.octets()[0];
    let unroutable = a == 0 || a == 127 || a >= 224 || dst == ROUTER_WAN_ADDR;
    (ip[8] > 1 && !unroutable).then_some(dst)
}

/// Every LAN-side frame, whatever the verdict: nothing leaves for the WAN with a LAN source,
/// and nothing is handed untranslated to a kernel that would forward it out of the WAN (that
/// is how packets leaked before: an XDP_PASS is not a safe verdict by itself).
fn assert_no_leak(what: &str, frame: &[u8], action: u32, out: &[u8]) {
    if action == XDP_REDIRECT || action == XDP_TX {
        assert!(!lan_src(out), "{what}: forwarded with a LAN source");
    }
    // Untouched, or changed and still with its LAN source: either way the kernel would
    // send it out of the WAN untranslated.
    if action == XDP_PASS && (out == frame || lan_src(out)) {
        assert!(
            !kernel_would_forward_to_wan(out),
            "{what}: passed to a kernel that forwards it out of the WAN untranslated"
        );
    }
}

/// Sum of every drop counter, to tell that each drop was counted under some name.
fn drops(fx: &Fixture) -> u64 {
    use nat_common::counters::CounterKind;
    fx.maps
        .counters()
        .unwrap()
        .iter()
        .filter(|(c, _)| c.kind() == CounterKind::Drop)
        .map(|(_, n)| n)
        .sum()
}

/// `frame` cut to `cut` bytes, its IPv4 total length and header checksum made to agree, so
/// the cut reaches the checks after the IPv4 header's.
fn cut_consistently(frame: &[u8], cut: usize) -> Vec<u8> {
    let mut f = frame[..cut].to_vec();
    let len = (cut - 14) as u16;
    f[16..18].copy_from_slice(&len.to_be_bytes());
    fix_ip_checksum(&mut f);
    f
}

#[test]
fn truncation_at_every_byte_offset() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        let frames = [
            ("udp", packets::udp(&h, 20000, 53, b"query")),
            ("tcp", packets::tcp(&h, 20001, 80, ACK, b"data")),
            ("icmp", packets::icmp_echo(&h, true, 9, 1, b"ping")),
            (
                "gre",
                packets::ip_proto(&h, IPPROTO_GRE, &packets::gre_v1(900, 1, b"ppp")),
            ),
            (
                "esp",
                packets::ip_proto(&h, IPPROTO_ESP, &packets::esp(0xa0, 1)),
            ),
        ];
        let mut cases = 0;
        for (what, full) in &frames {
            // The kernel refuses test frames shorter than an Ethernet header (as NICs never
            // deliver them), so cuts start after it.
            for cut in 14..full.len() {
                let (action, out) = fx.from_lan(&full[..cut]);
                assert_eq!(action, XDP_DROP, "{what} cut at {cut}");
                assert_no_leak(what, &full[..cut], action, &out);
                cases += 1;
            }
        }
        assert_eq!(fx.counter("drop_malformed"), cases);
        assert_eq!(
            fx.counter("mapping_created"),
            0,
            "no state from truncated packets"
        );
        assert!(fx.maps.sessions().unwrap().is_empty());
        eprintln!("{cases} truncated LAN frames");
    });
}

#[test]
fn broken_ip_and_transport_headers() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        let udp = packets::udp(&h, 20000, 53, b"query");
        let tcp = packets::tcp(&h, 20001, 80, ACK, b"data");
        let mut cases: Vec<(&str, Vec<u8>, u32, &str)> = Vec::new();
        let mut f = udp.clone();
        f[14] = 0x44; // IHL 4
        fix_ip_checksum(&mut f);
        cases.push(("IHL < 5", f, XDP_DROP, "drop_malformed"));
        let mut f = udp.clone();
        f[14] = 0x4f; // IHL 15: 60 bytes, more than the packet
        cases.push(("IHL beyond the packet", f, XDP_DROP, "drop_malformed"));
        let mut f = udp.clone();
        f[16..18].copy_from_slice(&200u16.to_be_bytes()); // total length > frame
        fix_ip_checksum(&mut f);
        cases.push((
            "total length larger than the frame",
            f,
            XDP_DROP,
            "drop_malformed",
        ));
        let mut f = udp.clone();
        f[16..18].copy_from_slice(&24u16.to_be_bytes()); // total length < IP + UDP header
        fix_ip_checksum(&mut f);
        cases.push((
            "total length smaller than the headers",
            f,
            XDP_DROP,
            "drop_malformed",
        ));
        let mut f = udp.clone();
        f[14] = 0x65; // version 6 in an IPv4 frame
        cases.push((
            "IP version 6 in an IPv4 frame",
            f,
            XDP_DROP,
            "drop_malformed",
        ));
        let mut f = tcp.clone();
        f[14 + 20 + 12] = 0x40; // data offset 4
        cases.push(("TCP data offset < 5", f, XDP_DROP, "drop_malformed"));
        let mut f = tcp.clone();
        f[14 + 20 + 12] = 0xf0; // data offset 15: beyond the packet
        cases.push((
            "TCP data offset beyond the packet",
            f,
            XDP_DROP,
            "drop_malformed",
        ));
        let mut f = udp.clone();
        f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&100u16.to_be_bytes());
        cases.push((
            "UDP length beyond the packet",
            f,
            XDP_DROP,
            "drop_malformed",
        ));
        let mut f = udp.clone();
        f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&4u16.to_be_bytes());
        cases.push(("UDP length < 8", f, XDP_DROP, "drop_malformed"));
        let esp_short = packets::ip_proto(&h, IPPROTO_ESP, &[0xa0, 0, 0]);
        cases.push((
            "ESP shorter than its header",
            esp_short,
            XDP_DROP,
            "drop_malformed",
        ));
        let mut gre = packets::gre_v1(900, 1, b"ppp");
        gre[1] = 0x02; // version 2
        cases.push((
            "GRE of another version",
            packets::ip_proto(&h, IPPROTO_GRE, &gre),
            XDP_DROP,
            "drop_gre_malformed",
        ));
        let mut gre = packets::gre_v1(900, 1, b"ppp");
        gre[0] |= 0x80; // checksum present: not PPTP's GRE
        cases.push((
            "GRE with a checksum",
            packets::ip_proto(&h, IPPROTO_GRE, &gre),
            XDP_DROP,
            "drop_gre_malformed",
        ));
        // An ICMP error quoting an ICMP error: nothing to translate.
        let inner = packets::icmp_error(&h, packets::port_unreachable(), &udp);
        let nested = packets::icmp_error(&h, packets::port_unreachable(), &inner);
        cases.push((
            "ICMP error inside an ICMP error",
            nested,
            XDP_DROP,
            "drop_unsupported_proto",
        ));
        for (what, frame, want, counter) in cases {
            let before = fx.counter(counter);
            let (action, out) = fx.from_lan(&frame);
            assert_eq!(action, want, "{what}");
            assert_eq!(
                fx.counter(counter),
                before + 1,
                "{what}: counted as {counter}"
            );
            assert_no_leak(what, &frame, action, &out);
        }
        assert_eq!(fx.counter("mapping_created"), 0);
    });
}

#[test]
fn bad_checksums_stay_bad_after_translation() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        // Incremental updates carry an error through: a corrupted packet is never made to
        // look valid (the receiver still drops it).
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        let mut udp = packets::udp(&h, 20000, 53, b"query");
        udp[14 + 20 + 6] ^= 0x01;
        let (action, out) = fx.from_lan(&udp);
        assert_eq!(action, XDP_REDIRECT);
        let mut pseudo = out[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&out[38..40]);
        let sum = nat_common::checksum::sum_bytes(
            &out[34..],
            nat_common::checksum::sum_bytes(&pseudo, 0),
        );
        assert_ne!(
            nat_common::checksum::fold(sum),
            0xffff,
            "UDP checksum error carried through"
        );
        let mut tcp = packets::tcp(&h, 20001, 80, ACK, b"data");
        tcp[14 + 10] ^= 0x01; // IPv4 header checksum
        let (action, out) = fx.from_lan(&tcp);
        assert_eq!(action, XDP_REDIRECT);
        assert_ne!(
            checksum(&out[14..34]),
            0,
            "IPv4 header checksum error carried through"
        );
    });
}

/// `frame` with `options` (a multiple of 4 bytes) inserted after its IPv4 header.
fn with_ip_options(frame: &[u8], options: &[u8]) -> Vec<u8> {
    let mut f = frame[..34].to_vec();
    f.extend_from_slice(options);
    f.extend_from_slice(&frame[34..]);
    f[14] = 0x45 + (options.len() / 4) as u8;
    let len = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&len.to_be_bytes());
    fix_ip_checksum(&mut f);
    f
}

#[test]
fn lan_packets_with_ip_options_never_leave_and_wan_ones_are_translated() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let plain = packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            20000,
            53,
            b"query",
        );
        fx.from_lan(&plain);
        // Record route with the host's own address in it, as `ping -R` sends it; and mere
        // padding, which is not parsed either.
        let record_route = [7, 7, 8, 192, 168, 1, 2, 0];
        for (what, options) in [
            ("record route", &record_route[..]),
            ("NOPs", &[1, 1, 1, 1][..]),
        ] {
            let f = with_ip_options(&plain, options);
            let before = fx.counter("drop_ip_options");
            let (action, out) = fx.from_lan(&f);
            assert_eq!(action, XDP_DROP, "{what}");
            assert_eq!(fx.counter("drop_ip_options"), before + 1, "{what}");
            assert_no_leak(what, &f, action, &out);
        }
        // From the WAN, options name no LAN address: translated, the port read after them.
        let reply = packets::udp(&wan_hdr(SERVER, SERVER_MAC), 53, 20000, b"answer");
        let (action, out) = fx.from_wan(&with_ip_options(&reply, &[1, 1, 1, 1]));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(&out[30..34], &[192, 168, 1, 2]);
        assert_eq!(
            u16::from_be_bytes([out[40], out[41]]),
            20000,
            "port after the options"
        );
        assert_eq!(
            checksum(&out[14..38]),
            0,
            "IPv4 header with options still sums right"
        );
        // Ethernet padding after a short packet.
        let mut padded = packets::udp(&lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER), 20002, 53, b"q");
        padded.resize(60, 0);
        let (action, out) = fx.from_lan(&padded);
        assert_eq!(action, XDP_REDIRECT);
        packets::parse_checked(&out[..14 + 20 + 8 + 1]);
    });
}

/// `frame` with an 802.1Q tag of VLAN `vid` after its MAC addresses.
fn vlan_tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&[0x81, 0x00]);
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

#[test]
fn priority_tagged_frames_are_dropped_both_ways() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        // VLAN 0 (priority tag): the kernel strips it and takes the frame as untagged, on
        // this interface, past the NAT; so the NAT drops it. Another VLAN is another
        // interface's (or dropped by the kernel as not for this host).
        let to_lan = Hdr {
            dst: LAN_HOST_A,
            ..wan_hdr(SERVER, SERVER_MAC)
        };
        let inbound = packets::udp(&to_lan, 53, 22, b"in");
        let outbound = packets::udp(
            &lan_hdr(Ipv4Addr::new(10, 9, 9, 9), HOST_A_MAC, SERVER),
            1,
            2,
            b"out",
        );
        for (what, lan, frame) in [
            ("from the WAN", false, &inbound),
            ("from the LAN", true, &outbound),
        ] {
            let f = vlan_tagged(frame, 0);
            let (action, _) = if lan {
                fx.from_lan(&f)
            } else {
                fx.from_wan(&f)
            };
            assert_eq!(action, XDP_DROP, "{what}");
            let tagged = vlan_tagged(frame, 7);
            let (action, out) = if lan {
                fx.from_lan(&tagged)
            } else {
                fx.from_wan(&tagged)
            };
            assert_eq!((action, out), (XDP_PASS, tagged), "{what}, VLAN 7");
        }
        assert_eq!(fx.counter("drop_vlan_priority_tagged"), 2);
    });
}

#[test]
fn nothing_from_the_wan_reaches_what_the_kernel_routes_into_the_lan() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        // A network behind a LAN host, in the kernel's routing table only (not in the LAN
        // side the daemon would follow): the FIB says where it is.
        std::process::Command::new("ip")
            .args([
                "route",
                "add",
                "10.77.0.0/24",
                "via",
                "192.168.1.2",
                "dev",
                "lan0",
            ])
            .status()
            .expect("ip route add");
        let h = Hdr {
            dst: Ipv4Addr::new(10, 77, 0, 5),
            ..wan_hdr(SERVER, SERVER_MAC)
        };
        let (action, _) = fx.from_wan(&packets::udp(&h, 53, 5555, b"in"));
        assert_eq!(action, XDP_DROP);
        assert_eq!(fx.counter("drop_to_lan_address"), 1);
        // Somewhere else entirely: the router's business, as before.
        let elsewhere = Hdr {
            dst: Ipv4Addr::new(198, 18, 0, 1),
            ..wan_hdr(SERVER, SERVER_MAC)
        };
        let f = packets::udp(&elsewhere, 53, 5555, b"x");
        assert_eq!(fx.from_wan(&f), (XDP_PASS, f.clone()));

        // A LAN host's mapping, then the host's address moves off the LAN (renumbered): its
        // replies go nowhere rather than out of the WAN, past the egress guard.
        let b = lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER);
        let (_, out) = fx.from_lan(&packets::udp(&b, 20000, 53, b"q"));
        let ext = u16::from_be_bytes([out[34], out[35]]);
        std::process::Command::new("ip")
            .args([
                "route",
                "add",
                "192.168.1.3/32",
                "via",
                "203.0.113.254",
                "dev",
                "wan0",
            ])
            .status()
            .expect("ip route add");
        let (action, _) = fx.from_wan(&packets::udp(&wan_hdr(SERVER, SERVER_MAC), 53, ext, b"a"));
        assert_eq!(action, XDP_DROP);
        assert_eq!(fx.counter("drop_inbound_not_to_lan"), 1);
    });
}

#[test]
fn hostile_wan_packets_never_reach_the_lan() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        fx.from_lan(&packets::udp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            20000,
            53,
            b"q",
        ));
        let wan = |src: Ipv4Addr, dst: Ipv4Addr| Hdr {
            src,
            dst,
            ..wan_hdr(SERVER, SERVER_MAC)
        };
        let cases = [
            (
                "spoofed LAN source to a mapped port",
                packets::udp(&wan(LAN_HOST_A, ROUTER_WAN_ADDR), 53, 20000, b"x"),
            ),
            (
                "broadcast source",
                packets::udp(&wan(Ipv4Addr::BROADCAST, ROUTER_WAN_ADDR), 53, 20000, b"x"),
            ),
            (
                "straight to a LAN host",
                packets::udp(&wan(SERVER, LAN_HOST_A), 53, 20000, b"x"),
            ),
            (
                "another host, address-dependent filter",
                packets::udp(&wan(FAR_SERVER, ROUTER_WAN_ADDR), 53, 20000, b"x"),
            ),
            (
                "unmapped pool port",
                packets::udp(&wan(SERVER, ROUTER_WAN_ADDR), 53, 20001, b"x"),
            ),
            (
                "SYN to a UDP mapping's port",
                packets::tcp(&wan(SERVER, ROUTER_WAN_ADDR), 53, 20000, packets::SYN, b""),
            ),
        ];
        for (what, frame) in cases {
            let (action, out) = fx.from_wan(&frame);
            assert_eq!(action, XDP_DROP, "{what}");
            assert_eq!(out[30..34], frame[30..34], "{what}: destination untouched");
        }
    });
}

const ROUTER_WAN_ADDR: Ipv4Addr = integration_tests::lab::ROUTER_WAN;

/// Bounded fuzzing of the real programs: random mutations (bit flips, truncation, junk
/// appended) of valid frames in both directions. Whatever the verdict, nothing leaves for
/// the WAN with a LAN source, nothing reaches the LAN from a LAN or martian source, and
/// every session in the table stays a LAN host's. `XDP_NAT_FUZZ_CASES` runs longer.
#[test]
fn random_mutations_never_leak_or_corrupt_state() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let cases: usize = std::env::var("XDP_NAT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        let w = wan_hdr(SERVER, SERVER_MAC);
        // Sessions for the replies to hit.
        fx.from_lan(&packets::udp(&h, 20000, 53, b"q"));
        fx.from_lan(&packets::tcp(&h, 20001, 80, packets::SYN, b""));
        fx.from_lan(&packets::icmp_echo(&h, true, 9, 1, b"ping"));
        let lan_frames = [
            packets::udp(&h, 20000, 53, b"query"),
            packets::tcp(&h, 20001, 80, ACK, b"data"),
            packets::icmp_echo(&h, true, 9, 1, b"ping"),
            packets::ip_proto(&h, IPPROTO_GRE, &packets::gre_v1(900, 1, b"ppp")),
            packets::ip_proto(&h, IPPROTO_ESP, &packets::esp(0xa0, 1)),
            packets::tcp(
                &h,
                20003,
                1723,
                ACK,
                &packets::pptp_ctrl(nat_common::vpn::PPTP_OUT_CALL_REQUEST, 7, 0),
            ),
        ];
        let wan_frames = [
            packets::udp(&w, 53, 20000, b"answer"),
            packets::tcp(&w, 80, 20001, packets::SYN_ACK, b""),
            packets::icmp_echo(&w, false, 9, 1, b"ping"),
            packets::icmp_error(
                &w,
                packets::frag_needed(),
                &fx.from_lan(&packets::udp(&h, 20000, 53, b"q")).1,
            ),
        ];
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let mut forwarded = 0;
        for i in 0..cases {
            let lan = i % 2 == 0;
            let base = if lan {
                &lan_frames[rng.gen_range(0..lan_frames.len())]
            } else {
                &wan_frames[rng.gen_range(0..wan_frames.len())]
            };
            let mut f = base.clone();
            match rng.gen_range(0..4) {
                0 => f.truncate(rng.gen_range(14..=f.len())),
                1 => f.extend((0..rng.gen_range(1..40)).map(|_| rng.r#gen::<u8>())),
                _ => {}
            }
            for _ in 0..rng.gen_range(1..4) {
                // Keep the Ethernet header: the programs only ever see IPv4 frames here.
                if f.len() > 14 {
                    let at = rng.gen_range(14..f.len());
                    f[at] ^= 1 << rng.gen_range(0..8);
                }
            }
            let (action, out) = if lan {
                fx.from_lan(&f)
            } else {
                fx.from_wan(&f)
            };
            if lan {
                assert_no_leak(&format!("case {i}: {f:?}"), &f, action, &out);
            } else {
                assert_nothing_foreign_enters(&format!("case {i}: {f:?}"), &f, action, &out);
            }
            if action == XDP_REDIRECT || action == XDP_TX || (action == XDP_PASS && out != f) {
                forwarded += 1;
                if lan {
                    assert!(
                        !lan_src(&out) || out[30..33] == [192, 168, 1],
                        "case {i}: LAN source leaving for the WAN: {f:?}"
                    );
                } else {
                    assert_ne!(
                        out[26..29],
                        [192, 168, 1],
                        "case {i}: LAN source arriving from the WAN: {f:?}"
                    );
                }
            }
        }
        for (k, _) in fx.maps.sessions().unwrap() {
            assert_eq!(
                u32::from_be(k.int_addr) >> 8,
                0xc0a801,
                "a session for a non-LAN host: {k:?}"
            );
        }
        eprintln!("{cases} fuzz cases, {forwarded} translated");
    });
}

/// Every cut of every kind of packet the NAT parses, with the IPv4 total length made to
/// agree with the cut, in both directions, with state in place for the replies: each
/// bounds check after the IPv4 header's is reached (transport, GRE, ESP, IKE, PPTP, the
/// headers an ICMP error quotes). Each cut is dropped and counted, or translated; none leaks.
#[test]
fn truncation_with_consistent_lengths_reaches_every_bounds_check() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        let w = wan_hdr(SERVER, SERVER_MAC);
        let pptp_call = packets::pptp_ctrl(nat_common::vpn::PPTP_OUT_CALL_REQUEST, 7, 0);
        // State for the replies: mappings and sessions of each kind.
        let udp_out = packets::udp(&h, 20000, 53, b"query");
        let (_, udp_translated) = fx.from_lan(&udp_out);
        let ext = u16::from_be_bytes([udp_translated[34], udp_translated[35]]);
        fx.from_lan(&packets::tcp(&h, 20001, 80, packets::SYN, b""));
        fx.from_lan(&packets::icmp_echo(&h, true, 9, 1, b"ping"));
        fx.from_lan(&packets::udp(&h, 500, 500, &packets::ike(0x1122, 0, 0x08)));
        fx.from_lan(&packets::tcp(&h, 20003, 1723, packets::SYN, b""));
        fx.from_lan(&packets::tcp(&h, 20003, 1723, ACK, &pptp_call));
        fx.from_lan(&packets::ip_proto(&h, IPPROTO_ESP, &packets::esp(0xa0, 1)));
        let about_reply = packets::udp(&wan_hdr(SERVER, SERVER_MAC), 53, ext, b"answer");
        let lan_frames = [
            ("udp", udp_out.clone()),
            ("tcp", packets::tcp(&h, 20001, 80, ACK, b"data")),
            ("icmp echo", packets::icmp_echo(&h, true, 9, 1, b"ping")),
            (
                "ike",
                packets::udp(&h, 500, 500, &packets::ike(0x1122, 0, 0x08)),
            ),
            (
                "pptp control",
                packets::tcp(&h, 20003, 1723, ACK, &pptp_call),
            ),
            (
                "gre",
                packets::ip_proto(&h, IPPROTO_GRE, &packets::gre_v1(900, 1, b"ppp")),
            ),
            (
                "esp",
                packets::ip_proto(&h, IPPROTO_ESP, &packets::esp(0xa0, 2)),
            ),
            (
                "icmp error about a reply",
                packets::icmp_error(
                    &h,
                    packets::port_unreachable(),
                    &packets::udp(
                        &Hdr {
                            src: SERVER,
                            dst: LAN_HOST_A,
                            ..h
                        },
                        53,
                        20000,
                        b"x",
                    ),
                ),
            ),
        ];
        let wan_frames = [
            ("udp reply", about_reply.clone()),
            (
                "tcp reply",
                packets::tcp(&w, 80, 20001, packets::SYN_ACK, b""),
            ),
            ("echo reply", packets::icmp_echo(&w, false, 9, 1, b"ping")),
            (
                "ike reply",
                packets::udp(&w, 500, 500, &packets::ike(0x1122, 0x3344, 0x20)),
            ),
            (
                "gre reply",
                packets::ip_proto(&w, IPPROTO_GRE, &packets::gre_v1(900, 1, b"ppp")),
            ),
            (
                "esp reply",
                packets::ip_proto(&w, IPPROTO_ESP, &packets::esp(0xb0, 1)),
            ),
            (
                "icmp error about our packet",
                packets::icmp_error(&w, packets::frag_needed(), &udp_translated),
            ),
        ];
        let mut cases = 0;
        for (lan, frames) in [(true, &lan_frames[..]), (false, &wan_frames[..])] {
            for (what, full) in frames {
                // From a whole IPv4 header to one byte short of the whole packet.
                for cut in 14 + 20..full.len() {
                    let f = cut_consistently(full, cut);
                    let before = drops(fx);
                    let (action, out) = if lan {
                        fx.from_lan(&f)
                    } else {
                        fx.from_wan(&f)
                    };
                    let what = format!("{what} cut at {cut}");
                    match action {
                        XDP_DROP => assert_eq!(drops(fx), before + 1, "{what}: drop not counted"),
                        XDP_REDIRECT | XDP_PASS => {}
                        other => panic!("{what}: verdict {other}"),
                    }
                    if lan {
                        assert_no_leak(&what, &f, action, &out);
                    } else {
                        assert_nothing_foreign_enters(&what, &f, action, &out);
                    }
                    if !lan && action != XDP_DROP {
                        assert_ne!(
                            out[26..29],
                            [192, 168, 1],
                            "{what}: LAN source from the WAN"
                        );
                    }
                    cases += 1;
                }
            }
        }
        for (k, _) in fx.maps.sessions().unwrap() {
            assert_eq!(u32::from_be(k.int_addr) >> 8, 0xc0a801, "{k:?}");
        }
        eprintln!("{cases} consistently truncated frames, both directions");
    });
}

/// Every WAN-side frame, whatever the verdict: nothing is handed untouched to a kernel that
/// would forward it into the LAN (only translation, by a mapping, may send it there; a
/// translated reply to a LAN host whose neighbour is unresolved is passed, by design).
fn assert_nothing_foreign_enters(what: &str, frame: &[u8], action: u32, out: &[u8]) {
    if action == XDP_PASS && out == frame {
        assert!(
            !kernel_would_forward_to_lan(out),
            "{what}: passed to a kernel that forwards it into the LAN"
        );
    }
}

/// `frame` as the first fragment (More Fragments set) of IP datagram `id`.
fn first_fragment(frame: &[u8], id: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[18..20].copy_from_slice(&id.to_be_bytes());
    f[20..22].copy_from_slice(&0x2000u16.to_be_bytes());
    fix_ip_checksum(&mut f);
    f
}

#[test]
fn a_wan_fragment_flood_stops_no_fragmented_traffic() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        let w = wan_hdr(SERVER, SERVER_MAC);
        let (_, out) = fx.from_lan(&packets::udp(&h, 20000, 53, b"query"));
        let ext = u16::from_be_bytes([out[34], out[35]]);
        // First fragments from a port the session never used (the filter lets them in, but
        // nothing from the WAN creates state without a session): no fragment state.
        for id in 0..100 {
            fx.from_wan(&first_fragment(&packets::udp(&w, 5353, ext, &[7; 64]), id));
        }
        assert_eq!(
            fx.maps.frags_in.keys().count(),
            0,
            "state from a datagram without a session"
        );
        // More first fragments than the fragment table holds, each with its own IP id, spoofed
        // from the session's own remote.
        let flood = nat_common::maps::DEFAULT_MAX_FRAGS as u16 + 1000;
        for id in 0..flood {
            fx.from_wan(&first_fragment(&packets::udp(&w, 53, ext, &[7; 64]), id));
        }
        assert_eq!(fx.counter("drop_frag_table_full"), 0);
        // The LAN host's own fragmented datagram still leaves whole.
        let big = packets::udp(&h, 20000, 53, &[1; 600]);
        let (first, later) = packets::fragment(&big, 304);
        assert_eq!(
            fx.from_lan(&first).0,
            XDP_REDIRECT,
            "outbound first fragment"
        );
        let (action, out) = fx.from_lan(&later);
        assert_eq!(action, XDP_REDIRECT, "outbound later fragment");
        assert_eq!(&out[26..30], &[203, 0, 113, 1]);
        // And a fragmented reply still arrives whole.
        let mut reply = packets::udp(&w, 53, ext, &[2; 600]);
        reply[18..20].copy_from_slice(&0xbeefu16.to_be_bytes());
        fix_ip_checksum(&mut reply);
        let (first, later) = packets::fragment(&reply, 304);
        assert_eq!(
            fx.from_wan(&first).0,
            XDP_REDIRECT,
            "inbound first fragment"
        );
        let (action, out) = fx.from_wan(&later);
        assert_eq!(action, XDP_REDIRECT, "inbound later fragment");
        assert_eq!(&out[30..34], &[192, 168, 1, 2]);
    });
}

/// One LAN host starting fragmented datagrams as fast as it can (more than the fragment
/// table holds) cannot keep another host's fragmented datagrams from leaving whole: a host
/// starts at most a quarter of the table's worth per fragment timeout.
#[test]
fn a_lan_hosts_fragment_flood_stops_no_other_hosts_fragmented_traffic() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let a = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        let b = lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER);
        // B's datagram whose first fragment is out before the flood and the rest after it.
        let mut during = packets::udp(&b, 20002, 53, &[3; 600]);
        during[18..20].copy_from_slice(&0x0b0bu16.to_be_bytes());
        fix_ip_checksum(&mut during);
        let (during_first, during_later) = packets::fragment(&during, 304);
        assert_eq!(fx.from_lan(&during_first).0, XDP_REDIRECT);
        let flood = nat_common::maps::DEFAULT_MAX_FRAGS as u16 + 1000;
        let mut passed = 0u32;
        for id in 0..flood {
            let (action, _) =
                fx.from_lan(&first_fragment(&packets::udp(&a, 20000, 53, &[7; 64]), id));
            passed += u32::from(action == XDP_REDIRECT);
        }
        // A share per fragment timeout (2 s): more than one window's worth only if the flood
        // outlasted a window on a slow machine.
        let share = nat_common::maps::FRAG_STARTS_PER_HOST;
        assert!(
            passed >= share && passed < u32::from(flood) - 1000,
            "A started {passed} datagrams, its share is {share} per window"
        );
        assert_eq!(
            fx.counter("drop_host_frag_quota"),
            u64::from(flood) - u64::from(passed)
        );
        let (action, out) = fx.from_lan(&during_later);
        assert_eq!(
            action, XDP_REDIRECT,
            "B's datagram the flood came in the middle of"
        );
        assert_eq!(&out[26..30], &[203, 0, 113, 1]);
        let big = packets::udp(&b, 20001, 53, &[1; 600]);
        let (first, later) = packets::fragment(&big, 304);
        assert_eq!(fx.from_lan(&first).0, XDP_REDIRECT, "B's first fragment");
        let (action, out) = fx.from_lan(&later);
        assert_eq!(action, XDP_REDIRECT, "B's later fragment");
        assert_eq!(&out[26..30], &[203, 0, 113, 1]);
    });
}

/// The fragment share counts per MAC too (twice a host's): a host spoofing other addresses
/// of the subnet starts no more fragmented datagrams than that.
#[test]
fn spoofing_other_lan_addresses_does_not_escape_the_fragment_share() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let share = nat_common::maps::FRAG_STARTS_PER_HOST;
        let mut passed = 0u32;
        for i in 0..3u8 {
            let spoofed = lan_hdr(Ipv4Addr::new(192, 168, 1, 100 + i), HOST_A_MAC, SERVER);
            for id in 0..share as u16 + 50 {
                let frame = first_fragment(&packets::udp(&spoofed, 20000, 53, &[7; 64]), id);
                passed += u32::from(fx.from_lan(&frame).0 == XDP_REDIRECT);
            }
        }
        // Three addresses' shares without the MAC's; a window's worth (2 s) of the MAC's, or
        // more only if the flood outlasted a window on a slow machine.
        assert!(
            passed >= 2 * share && passed < 3 * share,
            "{passed} datagrams started from one MAC"
        );
        let b = lan_hdr(LAN_HOST_B, HOST_B_MAC, SERVER);
        let (first, later) = packets::fragment(&packets::udp(&b, 20001, 53, &[1; 600]), 304);
        assert_eq!(fx.from_lan(&first).0, XDP_REDIRECT, "B's own share");
        assert_eq!(fx.from_lan(&later).0, XDP_REDIRECT);
    });
}
