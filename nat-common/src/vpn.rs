//! Pure parsing for VPN passthrough: PPTP control messages (RFC 2637 section 2), enhanced
//! GRE (RFC 2637 section 4.1) and the clear IKE header (RFC 7296 section 3.1, RFC 2408
//! section 3.1). Every function takes fixed-size arrays so the eBPF side reads them after a
//! single bounds check.

/// PPTP control message header plus the two 16-bit id fields that follow it.
pub const PPTP_CTRL_PREFIX: usize = 16;
pub const PPTP_MAGIC: u32 = 0x1a2b_3c4d;
pub const PPTP_CONTROL_MESSAGE: u16 = 1;

pub const PPTP_OUT_CALL_REQUEST: u16 = 7;
pub const PPTP_OUT_CALL_REPLY: u16 = 8;
pub const PPTP_IN_CALL_REQUEST: u16 = 9;
pub const PPTP_IN_CALL_REPLY: u16 = 10;
pub const PPTP_IN_CALL_CONNECTED: u16 = 11;
pub const PPTP_CALL_CLEAR_REQUEST: u16 = 12;
pub const PPTP_CALL_DISCONNECT_NOTIFY: u16 = 13;
pub const PPTP_WAN_ERROR_NOTIFY: u16 = 14;
pub const PPTP_SET_LINK_INFO: u16 = 15;

/// Offsets of the id fields inside a control message.
pub const PPTP_CALL_ID: usize = 12;
pub const PPTP_PEER_CALL_ID: usize = 14;

/// Length RFC 2637 gives each control message type (0: unknown type).
pub const fn pptp_message_len(ctrl_type: u16) -> u16 {
    match ctrl_type {
        1 | 2 => 156, // Start-Control-Connection-Request/Reply
        3 | 4 => 16,  // Stop-Control-Connection-Request/Reply
        5 => 16,      // Echo-Request
        6 => 20,      // Echo-Reply
        7 => 168,     // Outgoing-Call-Request
        8 => 32,      // Outgoing-Call-Reply
        9 => 220,     // Incoming-Call-Request
        10 => 24,     // Incoming-Call-Reply
        11 => 28,     // Incoming-Call-Connected
        12 => 16,     // Call-Clear-Request
        13 => 148,    // Call-Disconnect-Notify
        14 => 40,     // WAN-Error-Notify
        15 => 24,     // Set-Link-Info
        _ => 0,
    }
}

/// What the NAT does with a control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PptpAction {
    /// Nothing to rewrite.
    None,
    /// Client -> server: the client's call id at this offset becomes its external call id;
    /// `allocate`: the message introduces a new call (Outgoing-Call-Request,
    /// Incoming-Call-Reply), so an external id may be created.
    ClientCallId { offset: usize, allocate: bool },
    /// Server -> client: the external call id at this offset goes back to the client's id.
    PeerCallId { offset: usize },
}

/// The client (LAN side) is the PNS, the server the PAC (RFC 2637 section 1.2).
pub const fn pptp_action(ctrl_type: u16, outbound: bool) -> PptpAction {
    match (ctrl_type, outbound) {
        (PPTP_OUT_CALL_REQUEST, true) | (PPTP_IN_CALL_REPLY, true) => PptpAction::ClientCallId {
            offset: PPTP_CALL_ID,
            allocate: true,
        },
        (PPTP_CALL_CLEAR_REQUEST, true) => PptpAction::ClientCallId {
            offset: PPTP_CALL_ID,
            allocate: false,
        },
        (PPTP_OUT_CALL_REPLY, false) => PptpAction::PeerCallId {
            offset: PPTP_PEER_CALL_ID,
        },
        (PPTP_IN_CALL_CONNECTED, false) | (PPTP_WAN_ERROR_NOTIFY, false) => {
            PptpAction::PeerCallId {
                offset: PPTP_CALL_ID,
            }
        }
        _ => PptpAction::None,
    }
}

/// Validates the start of a control message and returns its type. `available` is the TCP
/// payload length. None: not a control message we understand (passed on unparsed).
#[inline(always)]
pub fn pptp_control_type(h: &[u8; PPTP_CTRL_PREFIX], available: usize) -> Option<u16> {
    // verifier: shifts, not from_be_bytes, whose arrays take stack in the LAN program, which
    // has little to spare (512 bytes over every frame of a call chain).
    let be16 = |at: usize| (h[at] as u16) << 8 | h[at + 1] as u16;
    let len = be16(0);
    let msg_type = be16(2);
    let magic = (be16(4) as u32) << 16 | be16(6) as u32;
    let ctrl = be16(8);
    let expected = pptp_message_len(ctrl);
    if msg_type != PPTP_CONTROL_MESSAGE || magic != PPTP_MAGIC || expected == 0 || len != expected {
        return None;
    }
    // The whole message must be in this segment (a split one is not rewritten).
    if (len as usize) > available {
        return None;
    }
    Some(ctrl)
}

/// Enhanced GRE header as PPTP uses it: flags/version, protocol, key (payload length +
/// call id).
pub const GRE_HDR_LEN: usize = 8;
pub const GRE_PROTO_PPP: u16 = 0x880b;
/// Offset of the call id in the GRE header.
pub const GRE_CALL_ID: usize = 6;

/// True for a well-formed PPTP GRE header: version 1, key present, no checksum or routing,
/// protocol PPP (RFC 2637 section 4.1).
pub const fn gre_v1_ok(h: &[u8; GRE_HDR_LEN]) -> bool {
    let flags = h[0];
    let ver = h[1] & 0x07;
    let c_r = flags & 0xc0;
    let k = flags & 0x20;
    let strict_source_route_and_recur = flags & 0x0f;
    let proto = u16::from_be_bytes([h[2], h[3]]);
    ver == 1
        && c_r == 0
        && k != 0
        && strict_source_route_and_recur == 0
        && h[1] & 0x78 == 0
        && proto == GRE_PROTO_PPP
}

/// IKE header: SPIs (16), next payload, version, exchange type, flags, message id, length.
pub const IKE_HDR_LEN: usize = 28;
/// RFC 3948: on port 4500 an IKE message is preceded by four zero bytes.
pub const NON_ESP_MARKER_LEN: usize = 4;
const IKEV2_FLAG_INITIATOR: u8 = 0x08;

/// The SPI that identifies the LAN client's IKE SA in this message: IKEv2 tells from the
/// Initiator flag which of the two SPIs the client chose; IKEv1 keys on the initiator
/// cookie (through NAT the client initiates). `outbound`: the client sent it. None: not an
/// IKE header, or an SPI of zero (nothing to key on).
pub fn ike_client_spi(h: &[u8; IKE_HDR_LEN], outbound: bool) -> Option<u64> {
    let spi_i = u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
    let spi_r = u64::from_be_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
    let major = h[17] >> 4;
    let spi = match major {
        2 => {
            let sender_is_original_initiator = h[19] & IKEV2_FLAG_INITIATOR != 0;
            // The client's SPI is the initiator's when the client is the original
            // initiator, i.e. when it sends with the flag or receives without it.
            if sender_is_original_initiator == outbound {
                spi_i
            } else {
                spi_r
            }
        }
        1 => spi_i,
        _ => return None,
    };
    if spi == 0 { None } else { Some(spi) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctrl(ctrl_type: u16, len: u16, call: u16, peer: u16) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[0..2].copy_from_slice(&len.to_be_bytes());
        h[2..4].copy_from_slice(&1u16.to_be_bytes());
        h[4..8].copy_from_slice(&PPTP_MAGIC.to_be_bytes());
        h[8..10].copy_from_slice(&ctrl_type.to_be_bytes());
        h[12..14].copy_from_slice(&call.to_be_bytes());
        h[14..16].copy_from_slice(&peer.to_be_bytes());
        h
    }

    #[test]
    fn control_messages_are_validated() {
        assert_eq!(pptp_control_type(&ctrl(7, 168, 1, 0), 168), Some(7));
        assert_eq!(
            pptp_control_type(&ctrl(7, 168, 1, 0), 100),
            None,
            "split across segments"
        );
        assert_eq!(
            pptp_control_type(&ctrl(7, 100, 1, 0), 168),
            None,
            "wrong length"
        );
        assert_eq!(
            pptp_control_type(&ctrl(99, 16, 1, 0), 16),
            None,
            "unknown type"
        );
        let mut bad = ctrl(8, 32, 1, 2);
        bad[5] ^= 1;
        assert_eq!(pptp_control_type(&bad, 32), None, "bad magic");
    }

    #[test]
    fn message_lengths_are_rfc_2637s() {
        // RFC 2637 section 2, each message's fixed length.
        let rfc = [
            (1, 156),
            (2, 156),
            (3, 16),
            (4, 16),
            (5, 16),
            (6, 20),
            (7, 168),
            (8, 32),
            (9, 220),
            (10, 24),
            (11, 28),
            (12, 16),
            (13, 148),
            (14, 40),
            (15, 24),
        ];
        for (ctrl, len) in rfc {
            assert_eq!(pptp_message_len(ctrl), len, "control message type {ctrl}");
        }
        assert_eq!(pptp_message_len(16), 0, "no such message");
    }

    #[test]
    fn rewrite_directions() {
        assert_eq!(
            pptp_action(PPTP_OUT_CALL_REQUEST, true),
            PptpAction::ClientCallId {
                offset: 12,
                allocate: true
            }
        );
        assert_eq!(
            pptp_action(PPTP_OUT_CALL_REPLY, false),
            PptpAction::PeerCallId { offset: 14 }
        );
        assert_eq!(
            pptp_action(PPTP_IN_CALL_REPLY, true),
            PptpAction::ClientCallId {
                offset: 12,
                allocate: true
            }
        );
        assert_eq!(
            pptp_action(PPTP_IN_CALL_CONNECTED, false),
            PptpAction::PeerCallId { offset: 12 }
        );
        assert_eq!(
            pptp_action(PPTP_CALL_CLEAR_REQUEST, true),
            PptpAction::ClientCallId {
                offset: 12,
                allocate: false
            }
        );
        assert_eq!(
            pptp_action(PPTP_WAN_ERROR_NOTIFY, false),
            PptpAction::PeerCallId { offset: 12 }
        );
        // These carry the server's own call id: nothing to do.
        assert_eq!(
            pptp_action(PPTP_CALL_DISCONNECT_NOTIFY, false),
            PptpAction::None
        );
        assert_eq!(pptp_action(PPTP_SET_LINK_INFO, true), PptpAction::None);
        assert_eq!(pptp_action(PPTP_IN_CALL_REQUEST, false), PptpAction::None);
        assert_eq!(pptp_action(PPTP_OUT_CALL_REQUEST, false), PptpAction::None);
    }

    #[test]
    fn gre_validation() {
        let ok = [0x30, 0x81, 0x88, 0x0b, 0, 0, 0, 7]; // K+S, A, ver 1
        assert!(gre_v1_ok(&ok));
        let mut v0 = ok;
        v0[1] = 0x00;
        assert!(!gre_v1_ok(&v0), "version 0");
        let mut nokey = ok;
        nokey[0] = 0x10;
        assert!(!gre_v1_ok(&nokey), "no key");
        let mut csum = ok;
        csum[0] |= 0x80;
        assert!(!gre_v1_ok(&csum), "checksum bit");
        let mut proto = ok;
        proto[3] = 0x00;
        assert!(!gre_v1_ok(&proto), "not PPP");
    }

    fn ike(spi_i: u64, spi_r: u64, major: u8, flags: u8) -> [u8; 28] {
        let mut h = [0u8; 28];
        h[0..8].copy_from_slice(&spi_i.to_be_bytes());
        h[8..16].copy_from_slice(&spi_r.to_be_bytes());
        h[17] = major << 4;
        h[19] = flags;
        h
    }

    #[test]
    fn ike_spi_selection() {
        // IKEv2, client initiated: the client's SPI is the initiator SPI both ways.
        assert_eq!(ike_client_spi(&ike(11, 0, 2, 0x08), true), Some(11));
        assert_eq!(ike_client_spi(&ike(11, 22, 2, 0x20), false), Some(11));
        // After the server rekeyed the IKE SA it is the original initiator of the new SA.
        assert_eq!(ike_client_spi(&ike(33, 44, 2, 0x08), false), Some(44));
        assert_eq!(ike_client_spi(&ike(33, 44, 2, 0x20), true), Some(44));
        // IKEv1: the initiator cookie.
        assert_eq!(ike_client_spi(&ike(55, 66, 1, 0), false), Some(55));
        assert_eq!(ike_client_spi(&ike(0, 66, 1, 0), true), None);
        assert_eq!(ike_client_spi(&ike(55, 66, 3, 0), true), None);
    }
}
