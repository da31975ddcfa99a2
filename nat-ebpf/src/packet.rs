//! Parsing: `ptr_at` is the only pointer arithmetic on packet data; `parse_ipv4` validates
//! the Ethernet and IPv4 headers and locates the transport header.

use aya_ebpf::programs::{TcContext, XdpContext};
use core::mem::size_of;
use nat_common::{
    counters::Counter,
    proto::{
        ETH_HDR_LEN, ETH_P_IP, ICMP_HDR_LEN, IP_MF, IP_OFFSET_MASK, IPPROTO_ICMP, IPPROTO_TCP,
        IPPROTO_UDP, IPV4_MIN_HDR_LEN, TCP_FLAGS_OFFSET, TCP_HDR_LEN, UDP_HDR_LEN,
    },
    rewrite::{IP_DST, IP_SRC, L4, get_u16, get_u32},
};

/// IPv4 "don't fragment" flag (host order of the flags/offset field).
pub const IP_DF: u16 = 0x4000;
/// 802.1Q and 802.1ad tags, and the VLAN ID bits of a tag's control information.
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_VID_MASK: u16 = 0x0fff;

/// A packet as both program types see it: XDP frames and TC socket buffers.
pub trait Frame {
    /// The start and the end of the bytes the program can read directly.
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// The whole packet's length (for an skb, more than its directly readable head).
    fn len(&self) -> usize;
}

impl Frame for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
    #[inline(always)]
    fn len(&self) -> usize {
        XdpContext::data_end(self) - XdpContext::data(self)
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
    #[inline(always)]
    fn len(&self) -> usize {
        TcContext::len(self) as usize
    }
}

/// No header or field the programs read lies further into a frame than this. (The verifier
/// tracks a packet pointer's range only while its variable part stays below 64 KiB.)
const MAX_PACKET_OFFSET: usize = 0x3fff;

/// A pointer to a `T` at `offset` into the packet, after checking it lies inside it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &impl Frame, offset: usize) -> Result<*mut T, Counter> {
    let start = ctx.data();
    let end = ctx.data_end();
    // verifier: an offset spilled to the stack and read back can lose its bounds, and packet
    // pointer arithmetic needs them; the explicit limit gives them back.
    if offset > MAX_PACKET_OFFSET || start + offset + size_of::<T>() > end {
        return Err(Counter::DropMalformed);
    }
    Ok((start + offset) as *mut T)
}

pub struct Ipv4<'a> {
    pub eth: &'a mut [u8; ETH_HDR_LEN],
    pub ip: &'a mut [u8; IPV4_MIN_HDR_LEN],
    /// Offset of the transport header from the start of the frame.
    pub l4_offset: usize,
    /// IP total length minus header length: bytes of transport header + payload.
    pub l4_len: usize,
    pub tot_len: u16,
    pub proto: u8,
    pub ttl: u8,
    pub tos: u8,
    pub src: u32,
    pub dst: u32,
    /// Any fragment: More Fragments set or a non-zero offset.
    pub fragment: bool,
    /// A fragment after the first (non-zero offset): no transport header.
    pub later_fragment: bool,
    pub dont_fragment: bool,
    /// IP identification, wire order.
    pub id: u16,
}

/// Ok(None): not IPv4 (ARP, IPv6, VLAN, ...), to be passed untouched.
#[inline(always)]
pub fn parse_ipv4(ctx: &impl Frame) -> Result<Option<Ipv4<'_>>, Counter> {
    let eth: *mut [u8; ETH_HDR_LEN] = ptr_at(ctx, 0)?;
    // SAFETY: bounds-checked by ptr_at.
    let eth = unsafe { &mut *eth };
    let ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    if ethertype != ETH_P_IP {
        if matches!(ethertype, ETH_P_8021Q | ETH_P_8021AD) {
            // VLAN ID 0 marks a priority-tagged frame, which the kernel takes as untagged,
            // on this very interface, past the NAT; another VLAN is another interface's.
            let tci: *const [u8; 2] = ptr_at(ctx, ETH_HDR_LEN)?;
            // SAFETY: bounds-checked by ptr_at.
            let tci = unsafe { *tci };
            if u16::from_be_bytes(tci) & VLAN_VID_MASK == 0 {
                return Err(Counter::DropVlanPriorityTagged);
            }
        }
        return Ok(None);
    }
    let ip: *mut [u8; IPV4_MIN_HDR_LEN] = ptr_at(ctx, ETH_HDR_LEN)?;
    let ip = unsafe { &mut *ip };
    if ip[0] >> 4 != 4 {
        return Err(Counter::DropMalformed);
    }
    // verifier: masking keeps the header length provably <= 60.
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let tot_len = u16::from_be_bytes([ip[2], ip[3]]);
    let frame_len = ctx.len();
    if ihl < IPV4_MIN_HDR_LEN
        || (tot_len as usize) < ihl
        || ETH_HDR_LEN + tot_len as usize > frame_len
    {
        return Err(Counter::DropMalformed);
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    Ok(Some(Ipv4 {
        l4_offset: ETH_HDR_LEN + ihl,
        l4_len: tot_len as usize - ihl,
        tot_len,
        proto: ip[9],
        ttl: ip[8],
        tos: ip[1],
        src: get_u32(ip, IP_SRC),
        dst: get_u32(ip, IP_DST),
        fragment: frag & (IP_MF | IP_OFFSET_MASK) != 0,
        later_fragment: frag & IP_OFFSET_MASK != 0,
        dont_fragment: frag & IP_DF != 0,
        id: get_u16(ip, 4),
        eth,
        ip,
    }))
}

/// The transport header of a TCP, UDP or ICMP echo packet, validated.
pub struct Transport<'a> {
    pub l4: L4<'a>,
    /// Source and destination port (ICMP: id and 0), wire order.
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte, 0 for other protocols.
    pub tcp_flags: u8,
}

/// Ok(None): a protocol (or ICMP type) the NAT does not translate.
#[inline(always)]
pub fn parse_transport<'a>(
    ctx: &XdpContext,
    pkt: &Ipv4<'_>,
    icmp_echo_type: u8,
) -> Result<Option<Transport<'a>>, Counter> {
    let off = pkt.l4_offset;
    match pkt.proto {
        IPPROTO_TCP => {
            let h: *mut [u8; TCP_HDR_LEN] = ptr_at(ctx, off)?;
            let h = unsafe { &mut *h };
            let doff = ((h[12] >> 4) as usize) * 4;
            if doff < TCP_HDR_LEN || doff > pkt.l4_len {
                return Err(Counter::DropMalformed);
            }
            let (sport, dport, flags) = (get_u16(h, 0), get_u16(h, 2), h[TCP_FLAGS_OFFSET]);
            Ok(Some(Transport {
                l4: L4::Tcp(h),
                sport,
                dport,
                tcp_flags: flags,
            }))
        }
        IPPROTO_UDP => {
            let h: *mut [u8; UDP_HDR_LEN] = ptr_at(ctx, off)?;
            let h = unsafe { &mut *h };
            let len = u16::from_be_bytes([h[4], h[5]]) as usize;
            // A first fragment holds only part of the datagram the length covers.
            if len < UDP_HDR_LEN || (len > pkt.l4_len && !pkt.fragment) {
                return Err(Counter::DropMalformed);
            }
            let (sport, dport) = (get_u16(h, 0), get_u16(h, 2));
            Ok(Some(Transport {
                l4: L4::Udp(h),
                sport,
                dport,
                tcp_flags: 0,
            }))
        }
        IPPROTO_ICMP => {
            let h: *mut [u8; ICMP_HDR_LEN] = ptr_at(ctx, off)?;
            let h = unsafe { &mut *h };
            if pkt.l4_len < ICMP_HDR_LEN {
                return Err(Counter::DropMalformed);
            }
            if h[0] != icmp_echo_type || h[1] != 0 {
                return Ok(None);
            }
            let id = get_u16(h, 4);
            Ok(Some(Transport {
                l4: L4::IcmpEcho(h),
                sport: id,
                dport: 0,
                tcp_flags: 0,
            }))
        }
        _ => Ok(None),
    }
}

/// The ICMP type of an ICMP packet, if its header is there.
#[inline(always)]
pub fn icmp_type(ctx: &impl Frame, pkt: &Ipv4<'_>) -> Option<u8> {
    if pkt.proto != IPPROTO_ICMP || pkt.l4_len < ICMP_HDR_LEN {
        return None;
    }
    let h: *const [u8; ICMP_HDR_LEN] = ptr_at(ctx, pkt.l4_offset).ok()?;
    // SAFETY: bounds-checked by ptr_at.
    Some(unsafe { (*h)[0] })
}
