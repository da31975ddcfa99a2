//! Addresses and ports as the maps hold them: wire-order bytes read as native integers.

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
