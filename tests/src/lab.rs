//! The three-namespace lab: LAN hosts (one namespace, two addresses) - router (XDP NAT) -
//! WAN server, on veth pairs, set up the way veth labs require (README, "Veth labs"):
//! GRO on the receiving peers (or XDP-redirected frames vanish) and tx checksum offload off
//! on the senders (or redirected packets carry partial checksums).

use anyhow::Result;
use std::net::Ipv4Addr;

use crate::netns::Netns;

pub const LAN_HOST_A: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
pub const LAN_HOST_B: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 3);
pub const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
pub const ROUTER_WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// A host behind the server, on a link of MTU 1280 (`Lab::far`).
pub const FAR_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// Interface names inside the router namespace.
pub const LAN_IF: &str = "lan0";
pub const WAN_IF: &str = "wan0";

pub struct Lab {
    pub lan: Netns,
    pub router: Netns,
    pub wan: Netns,
}

impl Lab {
    pub fn new(tag: &str) -> Result<Lab> {
        let base = crate::unique(tag);
        let lab = Lab {
            lan: Netns::new(&format!("{base}-lan"))?,
            router: Netns::new(&format!("{base}-rtr"))?,
            wan: Netns::new(&format!("{base}-wan"))?,
        };
        lab.connect_wan()?;
        lab.connect_lan()?;
        Ok(lab)
    }

    /// (Re)creates the WAN link: router `wan0` <-> the server's `eth0`, addressed, up.
    pub fn connect_wan(&self) -> Result<()> {
        let r = &self.router;
        r.ip(&[
            "link",
            "add",
            WAN_IF,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &self.wan.name,
        ])?;
        r.ip(&["addr", "add", &format!("{ROUTER_WAN}/24"), "dev", WAN_IF])?;
        r.ip(&["link", "set", WAN_IF, "up"])?;
        self.wan
            .ip(&["addr", "add", &format!("{SERVER}/24"), "dev", "eth0"])?;
        self.wan.ip(&["link", "set", "eth0", "up"])?;
        self.wan
            .exec("ethtool", &["-K", "eth0", "tx", "off", "gro", "on"])?;
        Ok(())
    }

    /// (Re)creates the LAN link: router `lan0` <-> the LAN hosts' `eth0`, addressed, up, a
    /// default route on the hosts. Tests that unplug the LAN call it to plug it back.
    pub fn connect_lan(&self) -> Result<()> {
        self.router.ip(&[
            "link",
            "add",
            LAN_IF,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &self.lan.name,
        ])?;
        self.router
            .ip(&["addr", "add", &format!("{ROUTER_LAN}/24"), "dev", LAN_IF])?;
        self.router.ip(&["link", "set", LAN_IF, "up"])?;
        for a in [LAN_HOST_A, LAN_HOST_B] {
            self.lan
                .ip(&["addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
        }
        self.lan.ip(&["link", "set", "eth0", "up"])?;
        self.lan
            .ip(&["route", "add", "default", "via", &ROUTER_LAN.to_string()])?;
        self.lan
            .exec("ethtool", &["-K", "eth0", "tx", "off", "gro", "on"])?;
        Ok(())
    }
}

impl Lab {
    /// LAN hosts A and B in namespaces of their own, for clients that each need a whole host
    /// (two IKE daemons both on port 500): the LAN namespace becomes a bridge between the
    /// router's link and one veth per host. Returns (A, B).
    pub fn lan_hosts_apart(&self) -> Result<(Netns, Netns)> {
        let lan = &self.lan;
        lan.ip(&["addr", "flush", "dev", "eth0"])?;
        lan.ip(&["link", "add", "br0", "type", "bridge"])?;
        lan.ip(&["link", "set", "eth0", "master", "br0"])?;
        lan.ip(&["link", "set", "br0", "up"])?;
        let mut hosts = Vec::new();
        for (i, addr) in [LAN_HOST_A, LAN_HOST_B].into_iter().enumerate() {
            let host = Netns::new(&format!("{}-h{i}", lan.name))?;
            let port = format!("h{i}");
            lan.ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host.name,
            ])?;
            lan.ip(&["link", "set", &port, "master", "br0", "up"])?;
            host.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            host.ip(&["link", "set", "eth0", "up"])?;
            host.ip(&["route", "add", "default", "via", &ROUTER_LAN.to_string()])?;
            host.exec("ethtool", &["-K", "eth0", "tx", "off"])?;
            hosts.push(host);
        }
        let b = hosts.pop().expect("two hosts");
        let a = hosts.pop().expect("two hosts");
        Ok((a, b))
    }

    /// A fourth namespace behind the server, which routes to it: FAR_HOST on a link of MTU
    /// 1280, and the router's default route via the server. For traceroute and path MTU tests.
    pub fn far(&self) -> Result<Netns> {
        let far = Netns::new(&format!("{}-far", self.wan.name))?;
        self.wan.ip(&[
            "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &far.name,
        ])?;
        self.wan
            .ip(&["addr", "add", "198.51.100.1/24", "dev", "eth1"])?;
        self.wan.ip(&["link", "set", "eth1", "mtu", "1280", "up"])?;
        self.wan.sysctl("net.ipv4.ip_forward", "1")?;
        far.ip(&["addr", "add", &format!("{FAR_HOST}/24"), "dev", "eth0"])?;
        far.ip(&["link", "set", "eth0", "mtu", "1280", "up"])?;
        far.ip(&["route", "add", "default", "via", "198.51.100.1"])?;
        far.exec("ethtool", &["-K", "eth0", "tx", "off"])?;
        self.router
            .ip(&["route", "add", "default", "via", &SERVER.to_string()])?;
        Ok(far)
    }
}
