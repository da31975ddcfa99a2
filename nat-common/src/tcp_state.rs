//! TCP session tracking for timeouts (RFC 5382 REQ-5, RFC 7857 section 2.2). The state is a
//! set of bits: which side has sent SYN and FIN, and whether a RST was seen. A session is
//! "established" once both sides have spoken and neither FIN pair nor RST closed it; every
//! other state uses the transitory timeout.

use crate::proto::{TCP_FIN, TCP_RST, TCP_SYN};

pub const SYN_OUT: u8 = 0x01;
pub const SYN_IN: u8 = 0x02;
pub const FIN_OUT: u8 = 0x04;
pub const FIN_IN: u8 = 0x08;
pub const RST: u8 = 0x10;
/// The WAN side sent a segment that was not a SYN: for a connection opened from the WAN, the
/// end of the three-way handshake.
pub const ACK_IN: u8 = 0x20;
/// The WAN side opened the connection (through a port forward). Such a session is
/// established only once the WAN side completed the handshake (ACK_IN): a LAN server
/// answers spoofed SYNs with SYN-ACKs (SYN cookies do), and those half-open sessions must
/// not get the long established timeout.
pub const OPENED_IN: u8 = 0x40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// LAN -> WAN
    Outbound,
    /// WAN -> LAN
    Inbound,
}

/// State after a segment with `flags` went through in `dir`.
pub const fn next(state: u8, dir: Direction, flags: u8) -> u8 {
    if flags & TCP_RST != 0 {
        return state | RST;
    }
    let mut s = state;
    // A SYN after the connection closed starts a new one on the same 5-tuple.
    if flags & TCP_SYN != 0 && (s & RST != 0 || (s & FIN_OUT != 0 && s & FIN_IN != 0)) {
        s = 0;
    }
    match dir {
        // Any outbound segment means the LAN side is open (a non-SYN one picks up a
        // connection that predates this session, e.g. after a flush).
        Direction::Outbound => s |= SYN_OUT,
        // A session only exists once the LAN side spoke, so any inbound segment completes
        // the pair (SYN-ACK in the normal case, simultaneous open's SYN otherwise).
        Direction::Inbound => s |= SYN_IN,
    }
    if flags & TCP_FIN != 0 {
        s |= match dir {
            Direction::Outbound => FIN_OUT,
            Direction::Inbound => FIN_IN,
        };
    }
    if matches!(dir, Direction::Inbound) && flags & TCP_SYN == 0 {
        s |= ACK_IN;
    }
    s
}

/// The state of a session a WAN host's SYN opened (through a port forward).
pub const fn opened_in(flags: u8) -> u8 {
    next(0, Direction::Inbound, flags) | OPENED_IN
}

/// May the replies of a TCP session in `state` take the fast path, which records nothing?
/// Only once the peer's opening is recorded, and for a connection the WAN side opened (a
/// forward's), once its handshake ACK is: the fast path never lets a segment past the state
/// it would change.
pub const fn replies_cacheable(state: u8) -> bool {
    state & SYN_IN != 0 && (state & OPENED_IN == 0 || state & ACK_IN != 0)
}

/// True when the established (long) timeout applies.
pub const fn is_established(state: u8) -> bool {
    state & (SYN_OUT | SYN_IN) == (SYN_OUT | SYN_IN)
        && (state & OPENED_IN == 0 || state & ACK_IN != 0)
        && state & RST == 0
        && state & (FIN_OUT | FIN_IN) != (FIN_OUT | FIN_IN)
}

/// Short human name for `nat-ctl sessions`.
pub const fn name(state: u8) -> &'static str {
    if state & RST != 0 {
        "RESET"
    } else if state & (FIN_OUT | FIN_IN) == (FIN_OUT | FIN_IN) {
        "CLOSED"
    } else if state & (FIN_OUT | FIN_IN) != 0 {
        "FIN_WAIT"
    } else if is_established(state) {
        "ESTABLISHED"
    } else if state & OPENED_IN != 0 {
        // Opened from the WAN, the handshake not complete.
        "SYN_RECEIVED"
    } else if state & SYN_OUT != 0 {
        "SYN_SENT"
    } else if state & SYN_IN != 0 {
        // Opened from the WAN (a port forward), not answered yet.
        "SYN_RECEIVED"
    } else {
        "NONE"
    }
}

#[cfg(test)]
mod tests {
    use super::Direction::*;
    use super::*;
    use crate::proto::TCP_ACK;

    fn run(steps: &[(Direction, u8)]) -> u8 {
        steps.iter().fold(0, |s, (d, f)| next(s, *d, *f))
    }

    #[test]
    fn replies_are_cached_once_the_peer_is_recorded() {
        // Outbound connection: from the peer's SYN-ACK on.
        assert!(!replies_cacheable(run(&[(Outbound, TCP_SYN)])));
        assert!(replies_cacheable(run(&[
            (Outbound, TCP_SYN),
            (Inbound, TCP_SYN | TCP_ACK)
        ])));
        // A forward's: not on the WAN side's SYN, only once its handshake ACK is recorded.
        let syn = opened_in(TCP_SYN);
        assert!(!replies_cacheable(syn));
        let s = next(syn, Outbound, TCP_SYN | TCP_ACK);
        assert!(!replies_cacheable(s));
        assert!(replies_cacheable(next(s, Inbound, TCP_ACK)));
    }

    #[test]
    fn three_way_handshake_establishes() {
        let s = run(&[(Outbound, TCP_SYN)]);
        assert!(!is_established(s));
        assert_eq!(name(s), "SYN_SENT");
        let s = run(&[
            (Outbound, TCP_SYN),
            (Inbound, TCP_SYN | TCP_ACK),
            (Outbound, TCP_ACK),
        ]);
        assert!(is_established(s));
        assert_eq!(name(s), "ESTABLISHED");
    }

    #[test]
    fn simultaneous_open_establishes() {
        let s = run(&[(Outbound, TCP_SYN), (Inbound, TCP_SYN)]);
        assert!(is_established(s));
    }

    #[test]
    fn fin_pair_and_rst_go_transitory() {
        let est = run(&[(Outbound, TCP_SYN), (Inbound, TCP_SYN | TCP_ACK)]);
        let half = next(est, Outbound, TCP_FIN | TCP_ACK);
        assert!(is_established(half), "one FIN keeps the long timeout");
        let closed = next(half, Inbound, TCP_FIN | TCP_ACK);
        assert!(!is_established(closed));
        assert_eq!(name(closed), "CLOSED");
        let reset = next(est, Inbound, TCP_RST);
        assert!(!is_established(reset));
        assert_eq!(name(reset), "RESET");
    }

    #[test]
    fn syn_after_close_reopens() {
        let closed = run(&[
            (Outbound, TCP_SYN),
            (Inbound, TCP_SYN | TCP_ACK),
            (Inbound, TCP_RST),
        ]);
        let s = next(closed, Outbound, TCP_SYN);
        assert_eq!(s, SYN_OUT);
    }

    #[test]
    fn a_connection_opened_from_the_wan_is_established_only_by_the_wan_sides_ack() {
        let syn = opened_in(TCP_SYN);
        assert_eq!(name(syn), "SYN_RECEIVED");
        // The LAN server's SYN-ACK (to a spoofed SYN, say) does not establish it.
        let answered = next(syn, Outbound, TCP_SYN | TCP_ACK);
        assert!(!is_established(answered));
        assert_eq!(name(answered), "SYN_RECEIVED");
        let acked = next(answered, Inbound, TCP_ACK);
        assert!(is_established(acked));
        assert_eq!(name(acked), "ESTABLISHED");
        // A connection the LAN opened is established by the SYN-ACK, as before.
        let out = run(&[(Outbound, TCP_SYN), (Inbound, TCP_SYN | TCP_ACK)]);
        assert!(is_established(out));
    }
}
