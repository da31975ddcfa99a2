//! BPF_PROG_TEST_RUN fixtures: the real compiled object, loaded unpinned, configured the way
//! `nat-ctl run` configures it, in a private namespace whose routes and (permanent)
//! neighbours make bpf_fib_lookup answer deterministically.
//!
//!   lan0 192.168.1.1/24 (mac LAN_MAC)      neighbours .2 -> HOST_A_MAC, .3 -> HOST_B_MAC
//!   wan0 203.0.113.1/24 (mac WAN_MAC)      neighbours .2 -> SERVER_MAC, .254 -> GATEWAY_MAC
//!   default via 203.0.113.254;  192.168.1.9 has no neighbour entry (unresolved)

use anyhow::Result;
use aya::{Ebpf, TestRun as _, TestRunOptions};
use nat_common::maps::programs;
use nat_ctl::{
    config::{FileConfig, Interfaces, Overrides},
    loader::{self, Tables},
    netdev::{self, Ipv4Net},
    pool::PortPool,
    state::NatMaps,
};
use std::{collections::BTreeSet, net::Ipv4Addr};

use crate::{
    lab::{LAN_HOST_A, LAN_HOST_B, ROUTER_LAN, ROUTER_WAN, SERVER},
    netns::Netns,
    packets::{Hdr, Mac},
};

pub const LAN_MAC: Mac = [0x02, 0, 0, 0, 1, 1];
pub const HOST_A_MAC: Mac = [0x02, 0, 0, 0, 1, 2];
pub const HOST_B_MAC: Mac = [0x02, 0, 0, 0, 1, 3];
pub const WAN_MAC: Mac = [0x02, 0, 0, 0, 2, 1];
pub const SERVER_MAC: Mac = [0x02, 0, 0, 0, 2, 2];
pub const GATEWAY_MAC: Mac = [0x02, 0, 0, 0, 2, 0xfe];
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
/// Somewhere beyond the default gateway.
pub const FAR_SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// A LAN address with no neighbour entry.
pub const UNRESOLVED_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 9);
/// The router's own service port, kept out of the pool in fixtures.
pub const ROUTER_SSH: u16 = 22;

/// How long after its session's stamp a flow's last packet may have come (a flow the flow
/// cache carries goes back to its session at least every FLOW_TTL_NS): a session's timeout
/// runs from that much after its stamp.
pub const CACHE_LAG_NS: u64 = nat_common::config::FLOW_TTL_NS;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;

fn mac_str(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub struct Fixture {
    pub ebpf: Ebpf,
    pub maps: NatMaps,
    pub lan_ifindex: u32,
    pub wan_ifindex: u32,
}

/// Options for a fixture's settings, as in the config file.
pub struct FixtureConfig {
    pub toml: String,
    pub port_range: (u16, u16),
    /// The router's own ports, out of the pool.
    pub reserved: Vec<u16>,
}

impl Default for FixtureConfig {
    fn default() -> Self {
        FixtureConfig {
            toml: String::new(),
            port_range: (1024, 65535),
            reserved: vec![ROUTER_SSH],
        }
    }
}

fn build_ns(ns: &Netns) -> Result<()> {
    ns.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lanp",
    ])?;
    ns.ip(&[
        "link", "add", "wan0", "type", "veth", "peer", "name", "wanp",
    ])?;
    ns.ip(&["link", "set", "lan0", "address", &mac_str(&LAN_MAC)])?;
    ns.ip(&["link", "set", "wan0", "address", &mac_str(&WAN_MAC)])?;
    for dev in ["lan0", "lanp", "wan0", "wanp"] {
        ns.ip(&["link", "set", dev, "up"])?;
    }
    ns.ip(&["addr", "add", &format!("{ROUTER_LAN}/24"), "dev", "lan0"])?;
    ns.ip(&["addr", "add", &format!("{ROUTER_WAN}/24"), "dev", "wan0"])?;
    ns.ip(&["route", "add", "default", "via", &GATEWAY.to_string()])?;
    for (addr, mac, dev) in [
        (LAN_HOST_A, HOST_A_MAC, "lan0"),
        (LAN_HOST_B, HOST_B_MAC, "lan0"),
        (SERVER, SERVER_MAC, "wan0"),
        (GATEWAY, GATEWAY_MAC, "wan0"),
    ] {
        ns.ip(&[
            "neigh",
            "replace",
            &addr.to_string(),
            "lladdr",
            &mac_str(&mac),
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
    }
    ns.sysctl("net.ipv4.ip_forward", "1")
}

/// Runs `f` with a configured fixture, inside its namespace.
pub fn with_fixture<T: Send>(
    tables: Tables,
    cfg: FixtureConfig,
    f: impl FnOnce(&mut Fixture) -> T + Send,
) -> T {
    let ns = Netns::new(&crate::unique("fx")).expect("fixture namespace");
    build_ns(&ns).expect("fixture namespace setup");
    ns.run(move || {
        let lan_ifindex = netdev::ifindex("lan0").expect("lan0");
        let wan_ifindex = netdev::ifindex("wan0").expect("wan0");
        let mut ebpf = loader::load(None, tables).expect("load the eBPF object");
        let mut maps = NatMaps::from_ebpf(&mut ebpf).expect("maps");
        let settings = FileConfig::parse(&cfg.toml)
            .expect("fixture TOML")
            .settings(&Overrides {
                lan: Some("lan0".into()),
                wan: Some("wan0".into()),
                wan_addr: None,
                log_level: None,
            })
            .expect("fixture settings");
        let reserved: BTreeSet<u16> = cfg.reserved.iter().copied().collect();
        let pool = PortPool::build(cfg.port_range.0..=cfg.port_range.1, &reserved);
        let nat = settings.nat_config(
            &Interfaces {
                lan_index: lan_ifindex,
                wan_index: wan_ifindex,
                lan_net: Ipv4Net {
                    addr: ROUTER_LAN,
                    prefix_len: 24,
                },
                wan_addr: ROUTER_WAN,
                lan_extra: 0,
            },
            &pool,
        );
        maps.set_switches(&settings.passthrough)
            .expect("passthrough switches");
        maps.apply(&nat, &pool).expect("configure maps");
        let mut fx = Fixture {
            ebpf,
            maps,
            lan_ifindex,
            wan_ifindex,
        };
        f(&mut fx)
    })
    .expect("fixture thread")
}

/// Runs `prog` of `ebpf` once on `frame`; returns the action. Borrows only the object, so that
/// several threads can run programs of one fixture at the same moment, on different CPUs,
/// while another holds its maps. (The kernel's `repeat` is no help for this: it runs the
/// program again on the frame the previous run rewrote.)
pub fn run_shared(ebpf: &Ebpf, prog: &str, ifindex: u32, frame: &[u8]) -> u32 {
    xdp_test_run(ebpf, prog, ifindex, frame).0
}

/// One BPF_PROG_TEST_RUN of XDP program `prog` of `ebpf` on `frame`, received on `ifindex`:
/// the action, the frame as the program left it, the kernel's measure of its run time.
pub fn xdp_test_run(
    ebpf: &Ebpf,
    prog: &str,
    ifindex: u32,
    frame: &[u8],
) -> (u32, Vec<u8>, std::time::Duration) {
    let p: &aya::programs::Xdp = ebpf
        .program(prog)
        .expect("program")
        .try_into()
        .expect("an XDP program");
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
    let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let mut out = vec![0u8; frame.len() + 256];
    let r = p
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out, r.duration)
}

/// Opens the PPTP control connection of LAN host `host` (from `port`) and sends an
/// Outgoing-Call-Request with `call_id`; returns the call id the server sees.
pub fn pptp_call_request(
    fx: &mut Fixture,
    host: Ipv4Addr,
    mac: Mac,
    port: u16,
    call_id: u16,
) -> u16 {
    use crate::packets::{ACK, SYN, parse_checked, payload, pptp_ctrl, pptp_ids};
    let h = lan_hdr(host, mac, SERVER);
    assert_eq!(
        fx.from_lan(&crate::packets::tcp(&h, port, 1723, SYN, b""))
            .0,
        XDP_REDIRECT
    );
    let request = pptp_ctrl(nat_common::vpn::PPTP_OUT_CALL_REQUEST, call_id, 0);
    let (action, out) = fx.from_lan(&crate::packets::tcp(&h, port, 1723, ACK, &request));
    assert_eq!(action, XDP_REDIRECT);
    parse_checked(&out); // TCP checksum right after the rewrite
    pptp_ids(&payload(&out)).0
}

/// Makes `attempt` (told its number, from 0) until it gives an answer, at most three times. A
/// flow cache entry answers for a limited time (NEXT_HOP_TTL_NS once its next hop goes
/// unchecked, FLOW_TTL_NS at most): an attempt that took longer than it meant to (a loaded
/// machine) proves nothing either way, gives None, and is made again.
pub fn within_half_a_ttl<T>(mut attempt: impl FnMut(u16) -> Option<T>) -> T {
    (0..3)
        .find_map(&mut attempt)
        .unwrap_or_else(|| panic!("three attempts each took longer than the flow cache allows"))
}

pub fn default_tables() -> Tables {
    Tables {
        max_sessions: 1024,
        max_mappings: 1024,
    }
}

impl Fixture {
    /// Runs `prog` once on `frame` as if received on `ifindex`; returns the action and the
    /// frame as the program left it.
    pub fn run(&mut self, prog: &str, ifindex: u32, frame: &[u8]) -> (u32, Vec<u8>) {
        let (action, out, _) = self.run_timed(prog, ifindex, frame);
        (action, out)
    }

    /// `run`, with the kernel's own measure of the program's run time.
    pub fn run_timed(
        &mut self,
        prog: &str,
        ifindex: u32,
        frame: &[u8],
    ) -> (u32, Vec<u8>, std::time::Duration) {
        xdp_test_run(&self.ebpf, prog, ifindex, frame)
    }

    /// The external port of LAN host `host`'s (first) session.
    pub fn external_port(&self, host: Ipv4Addr) -> u16 {
        let int_addr = nat_ctl::wire::to_wire(host);
        let sessions = self.maps.sessions().expect("sessions");
        let (_, s) = sessions
            .iter()
            .find(|(k, _)| k.int_addr == int_addr)
            .expect("a session of the host");
        u16::from_be(s.ext_port)
    }

    /// Runs the WAN egress guard (TC) once on `frame` as the kernel sends it out of the WAN;
    /// returns the TC action (TC_ACT_OK, TC_ACT_SHOT) and the frame as it leaves.
    pub fn to_wan_egress(&mut self, frame: &[u8]) -> (i32, Vec<u8>) {
        let p = loader::tc(&mut self.ebpf, programs::WAN_EGRESS).expect("program");
        let mut out = vec![0u8; frame.len() + 256];
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN of the egress guard");
        out.truncate(r.data_size_out as usize);
        (r.return_value as i32, out)
    }

    /// Empties every table of NAT state (mappings, sessions, filters, VPN and fragment
    /// state) and retires the flow cache, as if no packet had passed yet.
    pub fn clear_state(&mut self) {
        let m = &mut self.maps;
        macro_rules! clear {
            ($($map:ident),*) => {$(
                let keys: Vec<_> = m.$map.keys().filter_map(|k| k.ok()).collect();
                for k in keys {
                    let _ = m.$map.remove(&k);
                }
            )*};
        }
        clear!(
            mappings_out,
            mappings_in,
            sessions,
            filters,
            pptp_calls_in,
            pptp_calls_out,
            ike_sas,
            esp_in,
            esp_out,
            esp_pending,
            frags,
            frags_in,
            host_mappings,
            host_sessions,
            router_ipsec_peers,
            peer_ids,
            host_vpn,
            host_frags,
            forwards,
            forwards_by_lan,
            mac_mappings,
            mac_sessions,
            mac_vpn,
            host_mac
        );
        m.write_ports_taken(&[]).expect("no port taken");
        m.bump_route_gen().expect("retire the flow cache");
    }

    /// A frame arriving from the LAN side.
    pub fn from_lan(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let i = self.lan_ifindex;
        self.run(programs::LAN_INGRESS, i, frame)
    }

    /// A frame arriving from the WAN side.
    pub fn from_wan(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let i = self.wan_ifindex;
        self.run(programs::WAN_INGRESS, i, frame)
    }

    pub fn counter(&self, name: &str) -> u64 {
        let c = nat_common::counters::Counter::from_name(name)
            .unwrap_or_else(|| panic!("no counter {name}"));
        self.maps.counter(c).expect("read counter")
    }
}

/// Addressing of a frame from LAN host `src` to `dst` through the router.
pub fn lan_hdr(src: Ipv4Addr, src_mac: Mac, dst: Ipv4Addr) -> Hdr {
    Hdr {
        smac: src_mac,
        dmac: LAN_MAC,
        src,
        dst,
        ttl: 64,
    }
}

/// Addressing of a frame from `src` on the WAN side to the router's WAN address.
pub fn wan_hdr(src: Ipv4Addr, src_mac: Mac) -> Hdr {
    Hdr {
        smac: src_mac,
        dmac: WAN_MAC,
        src,
        dst: ROUTER_WAN,
        ttl: 64,
    }
}

/// The session of internal `int`:`int_port` with remote `rem`:`rem_port` (host-order ports).
pub fn session(
    int: Ipv4Addr,
    int_port: u16,
    rem: Ipv4Addr,
    rem_port: u16,
    proto: u8,
) -> nat_common::maps::SessionKey {
    nat_common::maps::SessionKey::new(
        proto,
        nat_ctl::wire::to_wire(int),
        int_port.to_be(),
        nat_ctl::wire::to_wire(rem),
        rem_port.to_be(),
    )
}

/// A frame translated towards the WAN: from the router's WAN address and MAC to `next_hop`.
pub fn out_hdr(dst: Ipv4Addr, next_hop: Mac) -> Hdr {
    Hdr {
        smac: WAN_MAC,
        dmac: next_hop,
        src: ROUTER_WAN,
        dst,
        ttl: 63,
    }
}

/// A frame translated towards LAN host `dst`, from the router's LAN MAC.
pub fn in_hdr(src: Ipv4Addr, dst: Ipv4Addr, dst_mac: Mac) -> Hdr {
    Hdr {
        smac: LAN_MAC,
        dmac: dst_mac,
        src,
        dst,
        ttl: 63,
    }
}

/// `frame` with its TTL lowered by one, as the NAT forwarded it (an ICMP error's quote keeps
/// that).
pub fn forwarded(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[14 + 8] -= 1;
    f[14 + 10] = 0;
    f[14 + 11] = 0;
    let c = nat_common::checksum::checksum(&f[14..34]);
    f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    f
}
