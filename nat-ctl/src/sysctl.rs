//! The kernel settings the fallback path (XDP_PASS of a translated packet) depends on.

use anyhow::{Context as _, Result};
use std::fs;

fn path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

pub fn read(key: &str) -> Result<String> {
    Ok(fs::read_to_string(path(key))
        .with_context(|| format!("reading {key}"))?
        .trim()
        .to_string())
}

pub fn write(key: &str, value: &str) -> Result<()> {
    fs::write(path(key), value).with_context(|| format!("setting {key}={value}"))
}

/// Sets what the kernel needs to forward packets XDP handed back: ip_forward=1, and on the
/// LAN interface accept_local=1 and loose rp_filter (a packet translated on LAN ingress
/// carries the router's own WAN address when the kernel gets it). Loose rp_filter costs no
/// anti-spoofing: the LAN program drops every source outside the LAN prefixes first. On the
/// WAN interface, arp_announce=2: the router's ARP there names its WAN address, never the
/// LAN address of the packet that made it ask, and `arp_ignore=1`: it answers ARP there only
/// for its WAN addresses, never for a LAN one. Returns one line per change for the log.
pub fn prepare_forwarding(lan: &str, wan: &str) -> Result<Vec<String>> {
    let wanted = [
        ("net.ipv4.ip_forward".to_string(), "1"),
        (format!("net.ipv4.conf.{lan}.accept_local"), "1"),
        (format!("net.ipv4.conf.{lan}.rp_filter"), "2"),
        (format!("net.ipv4.conf.{wan}.arp_announce"), "2"),
        (format!("net.ipv4.conf.{wan}.arp_ignore"), "1"),
    ];
    let mut changed = Vec::new();
    for (key, value) in wanted {
        let old = read(&key)?;
        if old != value {
            write(&key, value)?;
            changed.push(format!("{key}: {old} -> {value}"));
        }
    }
    Ok(changed)
}
