//! Interface lookups: index, IPv4 address and prefix.

use anyhow::{Context as _, Result};
use std::{ffi::CString, net::Ipv4Addr};

/// The inode of this process's network namespace (0 if it cannot be read): two processes see
/// the same interfaces (and ifindexes) exactly when it is the same.
pub fn netns_ino() -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino())
}

/// An interface the command line or the config file names does not exist here.
#[derive(Debug, thiserror::Error)]
#[error("interface '{0}' not found (see `ip link show` for the names on this host)")]
pub struct InterfaceNotFound(pub String);

/// The ifindex of `name`, or an error that says how to find the right name.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name).with_context(|| format!("invalid interface name {name:?}"))?;
    match nix::net::if_::if_nametoindex(c.as_c_str()) {
        Ok(idx) if idx != 0 => Ok(idx),
        _ => Err(InterfaceNotFound(name.to_string()).into()),
    }
}

/// An interface's first IPv4 address and its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Net {
    pub fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix_len as u32)
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// The first IPv4 address configured on `name`, if any.
pub fn ipv4_of(name: &str) -> Result<Option<Ipv4Net>> {
    Ok(ipv4_all(name)?.into_iter().next())
}

/// Every IPv4 address configured on `name`, primary first, with its prefix length.
pub fn ipv4_all(name: &str) -> Result<Vec<Ipv4Net>> {
    let v4 = |a: Option<nix::sys::socket::SockaddrStorage>| {
        a.and_then(|a| a.as_sockaddr_in().map(|s| s.ip()))
    };
    Ok(nix::ifaddrs::getifaddrs()
        .context("getifaddrs")?
        .filter(|ifa| ifa.interface_name == name)
        .filter_map(|ifa| {
            let addr = v4(ifa.address)?;
            let prefix_len = v4(ifa.netmask).map_or(32, |m| u32::from(m).count_ones() as u8);
            Some(Ipv4Net { addr, prefix_len })
        })
        .collect())
}

/// The name of interface `index` in this network namespace, if it exists.
// Not nix's if_indextoname: in nix 0.29 it takes the NULL that says "no such interface" for
// success and returns an empty name.
fn name_of(index: u32) -> Option<String> {
    let all = nix::net::if_::if_nameindex().ok()?;
    let found = all.iter().find(|i| i.index() == index)?;
    Some(found.name().to_string_lossy().into_owned())
}

/// Does interface `index` exist (in this network namespace)?
pub fn if_exists(index: u32) -> bool {
    name_of(index).is_some()
}

/// Name of an interface index, or "ifindex N" when it is gone.
pub fn ifname(index: u32) -> String {
    name_of(index).unwrap_or_else(|| format!("ifindex {index}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_exists_and_has_an_address() {
        assert_eq!(ifindex("lo").unwrap(), 1);
        let lo = ipv4_of("lo").unwrap().expect("lo has 127.0.0.1");
        assert_eq!(ifname(1), "lo");
        assert!(!if_exists(u32::MAX), "no interface has index {}", u32::MAX);
        assert_eq!(ifname(u32::MAX), format!("ifindex {}", u32::MAX));
        assert_eq!(lo.addr, Ipv4Addr::LOCALHOST);
        assert_eq!(lo.prefix_len, 8);
        assert_eq!(lo.network(), Ipv4Addr::new(127, 0, 0, 0));
    }

    #[test]
    fn missing_interface_error_names_it() {
        let e = ifindex("nosuch0").unwrap_err().to_string();
        assert!(e.contains("'nosuch0' not found"), "{e}");
    }
}
