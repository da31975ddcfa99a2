//! One module per verb.

pub mod detach;
pub mod flush;
pub mod passthrough;
pub mod reload;
pub mod run;
pub mod sessions;
pub mod stats;
pub mod status;
pub mod top;

use std::net::Ipv4Addr;

/// Wire-order native integer (as stored in the maps) to an address.
pub fn addr(v: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_be(v))
}

/// Wire-order native integer to a port number.
pub fn port(v: u16) -> u16 {
    u16::from_be(v)
}

/// Address to the maps' wire-order native integer.
pub fn to_wire(a: Ipv4Addr) -> u32 {
    u32::from(a).to_be()
}

/// The name of interface `index` in this network namespace, if it exists.
fn name_of(index: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: buffer of IF_NAMESIZE bytes as the call requires.
    if unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) }.is_null() {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// Does interface `index` exist (in this network namespace)?
pub fn if_exists(index: u32) -> bool {
    name_of(index).is_some()
}

/// Name of an interface index, or "ifindex N" when it is gone.
pub fn ifname(index: u32) -> String {
    name_of(index).unwrap_or_else(|| format!("ifindex {index}"))
}
