//! NAT-PMP (RFC 6886) and PCP (RFC 6887) messages on UDP 5351: one request type for both,
//! parsed from the bytes a client sends, and the answers built from what the service did.
//! A PCP server answers NAT-PMP too (RFC 6887 section 9): version 0 is NAT-PMP, 2 is PCP.

use std::net::Ipv4Addr;

/// The port both protocols serve on (the LAN address of the router).
pub const SERVER_PORT: u16 = 5351;
/// Where both announce a new epoch or external address (to 224.0.0.1).
pub const ANNOUNCE_PORT: u16 = 5350;

pub const NATPMP_VERSION: u8 = 0;
pub const PCP_VERSION: u8 = 2;

/// NAT-PMP result codes (RFC 6886 section 3.5).
pub mod natpmp_result {
    pub const SUCCESS: u16 = 0;
    pub const UNSUPPORTED_VERSION: u16 = 1;
    pub const NOT_AUTHORIZED: u16 = 2;
    pub const NETWORK_FAILURE: u16 = 3;
    pub const OUT_OF_RESOURCES: u16 = 4;
    pub const UNSUPPORTED_OPCODE: u16 = 5;
}

/// PCP result codes (RFC 6887 section 7.4).
pub mod pcp_result {
    pub const SUCCESS: u8 = 0;
    pub const UNSUPP_VERSION: u8 = 1;
    pub const NOT_AUTHORIZED: u8 = 2;
    pub const MALFORMED_REQUEST: u8 = 3;
    pub const UNSUPP_OPCODE: u8 = 4;
    pub const UNSUPP_OPTION: u8 = 5;
    pub const MALFORMED_OPTION: u8 = 6;
    pub const NETWORK_FAILURE: u8 = 7;
    pub const NO_RESOURCES: u8 = 8;
    pub const UNSUPP_PROTOCOL: u8 = 9;
    pub const USER_EX_QUOTA: u8 = 10;
    pub const ADDRESS_MISMATCH: u8 = 12;
}

const PCP_OP_ANNOUNCE: u8 = 0;
const PCP_OP_MAP: u8 = 1;
const PCP_HEADER: usize = 24;
const PCP_MAP_DATA: usize = 36;
/// RFC 6887 section 7: a PCP message is at most 1100 bytes.
const PCP_MAX: usize = 1100;
/// How long a client should keep an error answer (the lifetime of an error response).
pub const PCP_ERROR_LIFETIME: u32 = 30;

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// NAT-PMP opcode 0: the external address.
    ExternalAddress,
    /// NAT-PMP opcodes 1 (UDP) and 2 (TCP), PCP MAP: a mapping of `internal_port` of the
    /// client, for `lifetime` seconds (0: delete; with `internal_port` 0, all of the client's
    /// of that protocol, NAT-PMP only).
    Map {
        proto: u8,
        internal_port: u16,
        suggested_port: u16,
        lifetime: u32,
        /// PCP: the mapping nonce, and the client address the request names.
        pcp: Option<PcpMap>,
    },
    /// PCP ANNOUNCE: "are you there, what is your epoch".
    Announce,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcpMap {
    pub nonce: [u8; 12],
    pub client: Ipv4Addr,
    /// The request's opcode, which the answer repeats.
    pub opcode: u8,
}

/// A message that is not a request the service can act on, and how to answer it (None:
/// not at all, as for a response or something too short to answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub Option<Vec<u8>>);

/// Reads a datagram sent to SERVER_PORT.
pub fn parse(msg: &[u8], epoch: u32) -> Result<Request, Refused> {
    match msg.first() {
        Some(&NATPMP_VERSION) => parse_natpmp(msg, epoch),
        Some(&PCP_VERSION) => parse_pcp(msg, epoch),
        // RFC 6887 section 9: a version neither speaks gets a PCP UNSUPP_VERSION answer
        // naming the highest version this server speaks (it is in the header).
        Some(_) if msg.len() >= 2 && msg[1] & 0x80 == 0 => Err(Refused(Some(pcp_header(
            msg[1] & 0x7f,
            pcp_result::UNSUPP_VERSION,
            PCP_ERROR_LIFETIME,
            epoch,
        )))),
        _ => Err(Refused(None)),
    }
}

fn parse_natpmp(msg: &[u8], epoch: u32) -> Result<Request, Refused> {
    let Some(&op) = msg.get(1) else {
        return Err(Refused(None));
    };
    if op >= 128 {
        // A response (another server's announcement): never answered.
        return Err(Refused(None));
    }
    match (op, msg.len()) {
        (0, 2..) => Ok(Request::ExternalAddress),
        (1 | 2, 12..) => Ok(Request::Map {
            proto: if op == 1 {
                nat_common::proto::IPPROTO_UDP
            } else {
                nat_common::proto::IPPROTO_TCP
            },
            internal_port: u16::from_be_bytes([msg[4], msg[5]]),
            suggested_port: u16::from_be_bytes([msg[6], msg[7]]),
            lifetime: u32::from_be_bytes([msg[8], msg[9], msg[10], msg[11]]),
            pcp: None,
        }),
        // Too short for its opcode: nothing to answer with.
        (0..=2, _) => Err(Refused(None)),
        // RFC 6886 section 3.5: the whole request comes back, as a response, with result
        // code 5 where a request has its reserved field.
        _ => {
            let mut back = msg.to_vec();
            back[1] |= 0x80;
            back.resize(back.len().max(4), 0);
            back[2..4].copy_from_slice(&natpmp_result::UNSUPPORTED_OPCODE.to_be_bytes());
            let _ = epoch;
            Err(Refused(Some(back)))
        }
    }
}

fn parse_pcp(msg: &[u8], epoch: u32) -> Result<Request, Refused> {
    if msg.len() < 2 || msg[1] & 0x80 != 0 {
        // A response: never answered.
        return Err(Refused(None));
    }
    let op = msg[1] & 0x7f;
    // An error answer repeats the request's opcode data when it has it (RFC 6887 section
    // 7.2): a client matches MAP answers by their nonce.
    let data = match op {
        PCP_OP_MAP if msg.len() >= PCP_HEADER + PCP_MAP_DATA => {
            &msg[PCP_HEADER..PCP_HEADER + PCP_MAP_DATA]
        }
        _ => &[][..],
    };
    let error = |code| {
        let mut a = pcp_header(op, code, PCP_ERROR_LIFETIME, epoch);
        a.extend_from_slice(data);
        Err(Refused(Some(a)))
    };
    // RFC 6887 section 8.3: shorter than a header, longer than 1100, not a multiple of 4.
    if msg.len() < PCP_HEADER || msg.len() > PCP_MAX || !msg.len().is_multiple_of(4) {
        return error(pcp_result::MALFORMED_REQUEST);
    }
    let lifetime = u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]);
    let client = match mapped_v4(&msg[8..24]) {
        Some(a) => a,
        // An IPv6 client: this NAT is IPv4 only, the address cannot be this host's.
        None => return error(pcp_result::ADDRESS_MISMATCH),
    };
    let options = match op {
        PCP_OP_ANNOUNCE => &msg[PCP_HEADER..],
        PCP_OP_MAP if msg.len() >= PCP_HEADER + PCP_MAP_DATA => &msg[PCP_HEADER + PCP_MAP_DATA..],
        PCP_OP_MAP => return error(pcp_result::MALFORMED_REQUEST),
        _ => return error(pcp_result::UNSUPP_OPCODE),
    };
    // Options: none is supported; one the server must understand (code < 128) refuses the
    // request, others are ignored (RFC 6887 section 7.3).
    let mut rest = options;
    while rest.len() >= 4 {
        let (code, len) = (rest[0], u16::from_be_bytes([rest[2], rest[3]]) as usize);
        let padded = len.div_ceil(4) * 4;
        if rest.len() < 4 + padded {
            return error(pcp_result::MALFORMED_OPTION);
        }
        if code < 128 {
            return error(pcp_result::UNSUPP_OPTION);
        }
        rest = &rest[4 + padded..];
    }
    if op == PCP_OP_ANNOUNCE {
        return Ok(Request::Announce);
    }
    let d = &msg[PCP_HEADER..PCP_HEADER + PCP_MAP_DATA];
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&d[..12]);
    let proto = d[12];
    if proto != nat_common::proto::IPPROTO_TCP && proto != nat_common::proto::IPPROTO_UDP {
        // 0 (all protocols) and the others: only TCP and UDP are forwarded.
        return error(pcp_result::UNSUPP_PROTOCOL);
    }
    let internal_port = u16::from_be_bytes([d[16], d[17]]);
    if internal_port == 0 && lifetime != 0 {
        // Port 0 is "all ports": for deleting all of the client's mappings (RFC 6887
        // section 11.1), not for making one.
        return error(pcp_result::MALFORMED_REQUEST);
    }
    Ok(Request::Map {
        proto,
        internal_port,
        suggested_port: u16::from_be_bytes([d[18], d[19]]),
        lifetime,
        pcp: Some(PcpMap {
            nonce,
            client,
            opcode: op,
        }),
    })
}

/// The IPv4 address of an IPv4-mapped IPv6 address (::ffff:a.b.c.d).
fn mapped_v4(b: &[u8]) -> Option<Ipv4Addr> {
    (b[..10].iter().all(|&x| x == 0) && b[10] == 0xff && b[11] == 0xff)
        .then(|| Ipv4Addr::new(b[12], b[13], b[14], b[15]))
}

fn v4_mapped(a: Ipv4Addr) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[10] = 0xff;
    b[11] = 0xff;
    b[12..].copy_from_slice(&a.octets());
    b
}

/// A NAT-PMP answer's first 8 bytes: version, opcode + 128, result, epoch.
fn natpmp_header(op: u8, result: u16, epoch: u32) -> Vec<u8> {
    let mut b = vec![NATPMP_VERSION, op | 0x80];
    b.extend_from_slice(&result.to_be_bytes());
    b.extend_from_slice(&epoch.to_be_bytes());
    b
}

/// The NAT-PMP answer to an external address request (also the announcement).
pub fn natpmp_external(result: u16, epoch: u32, addr: Ipv4Addr) -> Vec<u8> {
    let mut b = natpmp_header(0, result, epoch);
    b.extend_from_slice(&addr.octets());
    b
}

/// The NAT-PMP answer to a map request of `proto`.
pub fn natpmp_map(
    proto: u8,
    result: u16,
    epoch: u32,
    internal_port: u16,
    external_port: u16,
    lifetime: u32,
) -> Vec<u8> {
    let op = if proto == nat_common::proto::IPPROTO_UDP {
        1
    } else {
        2
    };
    let mut b = natpmp_header(op, result, epoch);
    b.extend_from_slice(&internal_port.to_be_bytes());
    b.extend_from_slice(&external_port.to_be_bytes());
    b.extend_from_slice(&lifetime.to_be_bytes());
    b
}

/// A PCP answer's 24-byte header.
pub fn pcp_header(op: u8, result: u8, lifetime: u32, epoch: u32) -> Vec<u8> {
    let mut b = vec![PCP_VERSION, op | 0x80, 0, result];
    b.extend_from_slice(&lifetime.to_be_bytes());
    b.extend_from_slice(&epoch.to_be_bytes());
    b.extend_from_slice(&[0; 12]);
    b
}

/// The PCP answer to a MAP request: `ports` are the internal and the assigned external one.
pub fn pcp_map(
    map: &PcpMap,
    proto: u8,
    result: u8,
    lifetime: u32,
    epoch: u32,
    (internal_port, external_port): (u16, u16),
    external_addr: Ipv4Addr,
) -> Vec<u8> {
    let mut b = pcp_header(map.opcode, result, lifetime, epoch);
    b.extend_from_slice(&map.nonce);
    b.extend_from_slice(&[proto, 0, 0, 0]);
    b.extend_from_slice(&internal_port.to_be_bytes());
    b.extend_from_slice(&external_port.to_be_bytes());
    b.extend_from_slice(&v4_mapped(external_addr));
    b
}

/// The PCP ANNOUNCE answer (also sent unsolicited when the epoch or address changes).
pub fn pcp_announce(epoch: u32) -> Vec<u8> {
    pcp_header(PCP_OP_ANNOUNCE, pcp_result::SUCCESS, 0, epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nat_common::proto::{IPPROTO_TCP, IPPROTO_UDP};

    fn pcp_map_request(client: [u8; 16], proto: u8, port: u16, lifetime: u32) -> Vec<u8> {
        let mut m = vec![2, 1, 0, 0];
        m.extend_from_slice(&lifetime.to_be_bytes());
        m.extend_from_slice(&client);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&[proto, 0, 0, 0]);
        m.extend_from_slice(&port.to_be_bytes());
        m.extend_from_slice(&0u16.to_be_bytes());
        m.extend_from_slice(&[0; 16]);
        m
    }

    #[test]
    fn natpmp_requests_as_rfc_6886_lays_them_out() {
        assert_eq!(parse(&[0, 0], 5), Ok(Request::ExternalAddress));
        let req = [0, 2, 0, 0, 0x1f, 0x90, 0x1f, 0x91, 0, 0, 0x0e, 0x10];
        assert_eq!(
            parse(&req, 5),
            Ok(Request::Map {
                proto: IPPROTO_TCP,
                internal_port: 8080,
                suggested_port: 8081,
                lifetime: 3600,
                pcp: None
            })
        );
        // A response is never answered; an unknown opcode gets its own header back.
        assert_eq!(parse(&[0, 128, 0, 0], 5), Err(Refused(None)));
        assert_eq!(
            parse(&[0, 9, 0, 0, 1, 2], 5),
            Err(Refused(Some(vec![0, 137, 0, 5, 1, 2]))),
            "the whole request back, result 5"
        );
        assert_eq!(parse(&[0, 1, 0, 0], 5), Err(Refused(None)), "too short");
        assert_eq!(
            natpmp_map(IPPROTO_UDP, 0, 9, 53, 5353, 60),
            [0, 129, 0, 0, 0, 0, 0, 9, 0, 53, 0x14, 0xe9, 0, 0, 0, 60]
        );
        assert_eq!(
            natpmp_external(0, 1, Ipv4Addr::new(203, 0, 113, 1)),
            [0, 128, 0, 0, 0, 0, 0, 1, 203, 0, 113, 1]
        );
    }

    #[test]
    fn pcp_map_requests_and_answers_as_rfc_6887_lays_them_out() {
        let client = v4_mapped(Ipv4Addr::new(192, 168, 1, 2));
        let req = pcp_map_request(client, IPPROTO_UDP, 5000, 600);
        assert_eq!(req.len(), 60);
        let Ok(Request::Map {
            proto,
            internal_port,
            lifetime,
            pcp: Some(m),
            ..
        }) = parse(&req, 1)
        else {
            panic!("{:?}", parse(&req, 1));
        };
        assert_eq!((proto, internal_port, lifetime), (IPPROTO_UDP, 5000, 600));
        assert_eq!(
            (m.nonce, m.client),
            ([7; 12], Ipv4Addr::new(192, 168, 1, 2))
        );
        let ans = pcp_map(
            &m,
            IPPROTO_UDP,
            0,
            600,
            1,
            (5000, 6000),
            Ipv4Addr::new(203, 0, 113, 1),
        );
        assert_eq!(ans.len(), 60);
        assert_eq!(&ans[..4], &[2, 0x81, 0, 0]);
        assert_eq!(&ans[24..36], &[7; 12], "the nonce comes back");
        assert_eq!(&ans[42..44], &6000u16.to_be_bytes());
        assert_eq!(&ans[44..], &v4_mapped(Ipv4Addr::new(203, 0, 113, 1)));
    }

    #[test]
    fn bad_pcp_requests_get_the_result_code_rfc_6887_names() {
        let client = v4_mapped(Ipv4Addr::new(192, 168, 1, 2));
        let code = |m: &[u8]| match parse(m, 1) {
            Err(Refused(Some(a))) => Some(a[3]),
            _ => None,
        };
        let mut short = pcp_map_request(client, IPPROTO_TCP, 80, 60);
        short.truncate(40);
        assert_eq!(code(&short), Some(pcp_result::MALFORMED_REQUEST));
        // An error answer to a MAP repeats its opcode data, nonce first.
        let sctp = match parse(&pcp_map_request(client, 132, 80, 60), 1) {
            Err(Refused(Some(a))) => a,
            other => panic!("{other:?}"),
        };
        assert_eq!((sctp.len(), &sctp[24..36]), (60, &[7u8; 12][..]));
        let mut truncated = pcp_map_request(client, IPPROTO_TCP, 80, 60);
        truncated.extend_from_slice(&[200, 0, 0, 8, 0, 0, 0, 0]);
        assert_eq!(code(&truncated), Some(pcp_result::MALFORMED_OPTION));
        assert!(
            matches!(
                parse(&pcp_map_request(client, IPPROTO_TCP, 0, 0), 1),
                Ok(Request::Map {
                    internal_port: 0,
                    lifetime: 0,
                    ..
                })
            ),
            "port 0, lifetime 0: delete all"
        );
        assert_eq!(
            code(&pcp_map_request(client, IPPROTO_TCP, 0, 60)),
            Some(pcp_result::MALFORMED_REQUEST)
        );
        let mut odd = pcp_map_request(client, IPPROTO_TCP, 80, 60);
        odd.push(0);
        assert_eq!(code(&odd), Some(pcp_result::MALFORMED_REQUEST));
        let sctp = pcp_map_request(client, 132, 80, 60);
        assert_eq!(code(&sctp), Some(pcp_result::UNSUPP_PROTOCOL));
        let mut v6 = client;
        v6[0] = 0x20;
        assert_eq!(
            code(&pcp_map_request(v6, IPPROTO_TCP, 80, 60)),
            Some(pcp_result::ADDRESS_MISMATCH)
        );
        let mut peer = pcp_map_request(client, IPPROTO_TCP, 80, 60);
        peer[1] = 2; // PEER
        assert_eq!(code(&peer), Some(pcp_result::UNSUPP_OPCODE));
        // A mandatory option (THIRD_PARTY, code 1) refuses; an optional one is ignored.
        let mut third = pcp_map_request(client, IPPROTO_TCP, 80, 60);
        third.extend_from_slice(&[1, 0, 0, 16]);
        third.extend_from_slice(&[0; 16]);
        assert_eq!(code(&third), Some(pcp_result::UNSUPP_OPTION));
        let mut optional = pcp_map_request(client, IPPROTO_TCP, 80, 60);
        optional.extend_from_slice(&[200, 0, 0, 0]);
        assert!(parse(&optional, 1).is_ok());
        assert_eq!(code(&[3, 1, 0, 0]), Some(pcp_result::UNSUPP_VERSION));
        // A response is not answered.
        assert_eq!(parse(&pcp_announce(1), 1), Err(Refused(None)));
    }
}
