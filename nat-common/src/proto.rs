//! Protocol numbers and header constants (network byte order helpers live with their users).

pub const ETH_HDR_LEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;

pub const IPV4_MIN_HDR_LEN: usize = 20;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_AH: u8 = 51;

/// IPv4 flags/fragment-offset field (host order): More Fragments bit and offset mask.
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET_MASK: u16 = 0x1fff;

pub const TCP_HDR_LEN: usize = 20;
/// Where a TCP header's flags byte is.
pub const TCP_FLAGS_OFFSET: usize = 13;
pub const UDP_HDR_LEN: usize = 8;
pub const ICMP_HDR_LEN: usize = 8;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// ICMP errors that quote the packet they are about and are translated (RFC 5508).
pub const fn is_icmp_error(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
    )
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// True for a source address that can never legitimately arrive from the WAN:
/// "this network" (0/8), loopback (127/8), multicast and reserved (224/3), link-local (169.254/16).
/// `addr` is in host byte order.
pub const fn is_martian_source(addr: u32) -> bool {
    let first = (addr >> 24) as u8;
    first == 0 || first == 127 || first >= 224 || (addr >> 16) == 0xa9fe
}

/// True when `addr` is inside `net`/`mask` (all host byte order; a zero mask matches nothing).
pub const fn in_prefix(addr: u32, net: u32, mask: u32) -> bool {
    mask != 0 && (addr & mask) == (net & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn martians() {
        assert!(is_martian_source(0x7f00_0001));
        assert!(is_martian_source(0x0000_0000));
        assert!(is_martian_source(0xe000_0001));
        assert!(is_martian_source(0xffff_ffff));
        assert!(is_martian_source(0xa9fe_0101));
        assert!(!is_martian_source(0xcb00_7101)); // 203.0.113.1
        assert!(!is_martian_source(0xc0a8_0102)); // 192.168.1.2 is not martian, only LAN
    }

    #[test]
    fn prefixes() {
        assert!(in_prefix(0xc0a8_0105, 0xc0a8_0100, 0xffff_ff00));
        assert!(!in_prefix(0xc0a8_0205, 0xc0a8_0100, 0xffff_ff00));
        assert!(!in_prefix(0xc0a8_0105, 0, 0));
    }
}
