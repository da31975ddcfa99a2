//! VPN passthrough in the data path: PPTP control messages and enhanced GRE, IKE through
//! the shared port 500, raw ESP with per-server SPI learning.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_md},
    helpers::generated::bpf_get_prandom_u32,
    programs::XdpContext,
};
use nat_common::{
    config::{ESP_LEARN_COOLDOWN_NS, ESP_PENDING_NS, ESP_TIMEOUT_SECS},
    counters::Counter,
    maps::{
        EspKey, EspLearner, ExternalKey, IkeKey, MAX_ESP_BINDINGS_PER_WINDOW, Owner, PeerId,
        PeerIdKey, PptpCall, PptpCallKey, PptpClientKey,
    },
    passthrough::CLASS_PPTP,
    proto::{IPPROTO_ESP, IPPROTO_GRE, IPPROTO_TCP, UDP_HDR_LEN},
    rewrite::{Side, get_u16, get_u32, rewrite_addr, rewrite_tcp_payload_u16, set_u16},
    vpn::{
        GRE_CALL_ID, GRE_HDR_LEN, IKE_HDR_LEN, PPTP_CALL_ID, PPTP_CTRL_PREFIX, PPTP_OUT_CALL_REPLY,
        PptpAction, gre_v1_ok, ike_client_spi, pptp_action, pptp_control_type, pptp_message_len,
    },
};

use crate::{
    Verdict,
    forward::{Route, deliver_in, deliver_out, route_in},
    frag,
    maps::{
        ESP_IN, ESP_OUT, ESP_PENDING, FORWARDS, HOST_MAC, HOST_VPN, IKE_SAS, MAC_VPN, MAPPINGS_IN,
        PEER_IDS, PPTP_CALLS_IN, PPTP_CALLS_OUT, ROUTER_IPSEC_PEERS, TUNNEL_PEERS, config, count,
        now, switch_on,
    },
    packet::{Ipv4, parse_ipv4, ptr_at},
    state::{at_limit, count_for_host, mac_owner, mac_share},
};

const EEXIST: i32 = 17;
/// Random draws for an external PPTP call id after the client's own was taken.
const MAX_CALL_ID_TRIES: u32 = 16;

/// The 16-bit id at `offset` (PPTP_CALL_ID or PPTP_PEER_CALL_ID) of a control message.
// verifier: two constant-index branches instead of one variable index.
#[inline(always)]
fn id_at(h: &[u8; PPTP_CTRL_PREFIX], offset: usize) -> u16 {
    if offset == PPTP_CALL_ID {
        get_u16(h, PPTP_CALL_ID)
    } else {
        get_u16(h, PPTP_CALL_ID + 2)
    }
}

#[inline(always)]
fn set_id_at(tcp: &mut [u8; 20], h: &mut [u8; PPTP_CTRL_PREFIX], offset: usize, v: u16) {
    if offset == PPTP_CALL_ID {
        rewrite_tcp_payload_u16(tcp, h, PPTP_CALL_ID, v)
    } else {
        rewrite_tcp_payload_u16(tcp, h, PPTP_CALL_ID + 2, v)
    }
}

/// Control messages of one TCP segment the ALG reads at most; any beyond are forwarded as
/// they are (and counted). A full-sized segment holds nine of the longest common ones.
const MAX_PPTP_MESSAGES: usize = 16;

/// The PPTP follow-up (main.rs): rewrites the call ids in the control messages of the TCP
/// 1723 segment in `ctx`, already translated (`outbound` 1: LAN -> WAN), every whole message
/// in order. What it cannot parse (a message split across segments, a bogus length) and
/// everything after it is forwarded as it is (and counted), never half-rewritten. PPTP_OK,
/// or the drop (PPTP_ALLOC_FAIL, PPTP_VPN_QUOTA).
// verifier: a global function (no_mangle, extern "C"), checked once on its own, called from
// the entry points, whose stack has room for it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pptp_followup(ctx: *mut xdp_md, outbound: u64) -> i64 {
    let ctx = XdpContext::new(ctx);
    let Ok(Some(pkt)) = parse_ipv4(&ctx) else {
        return PPTP_OK;
    };
    let Ok(tcp) = ptr_at::<[u8; 20]>(&ctx, pkt.l4_offset) else {
        return PPTP_OK;
    };
    // SAFETY: bounds-checked by ptr_at; read at once.
    let (doff, sport) = unsafe { (((*tcp)[12] >> 4) as usize * 4, get_u16(&*tcp, 0)) };
    if pkt.l4_len <= doff {
        return PPTP_OK; // no payload: handshake, ACKs
    }
    // The LAN host: the destination of a translated inbound segment; for an outbound one,
    // the owner of its external port.
    let (int_addr, rem_addr) = if outbound != 0 {
        let ext = ExternalKey {
            port: sport,
            proto: IPPROTO_TCP,
            _pad: 0,
        };
        // SAFETY: map value pointer from a successful lookup, read at once.
        let Some(int_addr) = MAPPINGS_IN.get_ptr(&ext).map(|m| unsafe { (*m).int_addr }) else {
            return PPTP_OK;
        };
        (int_addr, pkt.dst)
    } else {
        (pkt.dst, pkt.src)
    };
    let end = pkt.l4_offset + pkt.l4_len;
    let mut at = pkt.l4_offset + doff;
    let segment = pkt.l4_offset as u64 | outbound << 32;
    let peers = u64::from(int_addr) << 32 | u64::from(rem_addr);
    for _ in 0..MAX_PPTP_MESSAGES {
        if at >= end {
            return PPTP_OK;
        }
        match pptp_message(ctx.ctx, segment, at as u64, end as u64, peers) {
            len if len > 0 => at += len as usize,
            0 => break,
            drop => return drop,
        }
    }
    // Stopped before the end: a message it could not parse, or too many.
    count(Counter::PassPptpUnparsed);
    PPTP_OK
}

/// One control message of a segment (pptp_followup): the message at frame offset `at`, the
/// TCP payload ending at `end`; `segment` holds the TCP header's offset (low 32 bits) and 1 for
/// LAN -> WAN (high), `peers` the LAN host (high 32 bits) and the server (low). Returns the
/// message's length when it was read whole (and rewritten as it needs), 0 when it cannot be
/// parsed, PPTP_ALLOC_FAIL or PPTP_VPN_QUOTA for a drop.
// verifier: a global function (no_mangle, extern "C"): the verifier checks it once, with any
// arguments, instead of again on every path that reaches a PPTP segment (with the messages
// read in a loop, that took the LAN program past the verifier's limit).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pptp_message(
    ctx: *mut xdp_md,
    segment: u64,
    at: u64,
    end: u64,
    peers: u64,
) -> i64 {
    let ctx = XdpContext::new(ctx);
    let (tcp_offset, outbound) = ((segment & 0xffff) as usize, segment >> 32 != 0);
    let (at, end) = (at as usize, end as usize);
    if at >= end {
        return 0;
    }
    let (Ok(tcp), Ok(h)) = (
        ptr_at::<[u8; 20]>(&ctx, tcp_offset),
        ptr_at::<[u8; PPTP_CTRL_PREFIX]>(&ctx, at),
    ) else {
        return 0;
    };
    // SAFETY: bounds-checked by ptr_at.
    let (tcp, h) = unsafe { (&mut *tcp, &mut *h) };
    let Some(ctrl) = pptp_control_type(h, end - at) else {
        return 0;
    };
    let (int_addr, rem_addr) = ((peers >> 32) as u32, peers as u32);
    match control_message(tcp, h, ctrl, int_addr, rem_addr, outbound, now()) {
        Ok(()) => i64::from(pptp_message_len(ctrl)),
        Err(Counter::DropHostVpnQuota) => PPTP_VPN_QUOTA,
        Err(_) => PPTP_ALLOC_FAIL,
    }
}

/// pptp_followup's and pptp_message's answers: done, or the drop a message caused (no
/// external call id could be had, the host holds its share of VPN state).
pub const PPTP_OK: i64 = 0;
pub const PPTP_ALLOC_FAIL: i64 = -1;
pub const PPTP_VPN_QUOTA: i64 = -2;

/// Rewrites the call id of one whole control message `h` of type `ctrl` (the TCP checksum in
/// `tcp` follows).
#[inline(always)]
fn control_message(
    tcp: &mut [u8; 20],
    h: &mut [u8; PPTP_CTRL_PREFIX],
    ctrl: u16,
    int_addr: u32,
    rem_addr: u32,
    outbound: bool,
    now: u64,
) -> Result<(), Counter> {
    match pptp_action(ctrl, outbound) {
        PptpAction::None => {}
        PptpAction::ClientCallId { offset, allocate } => {
            let id = id_at(h, offset);
            if let Some(ext) = call_out(int_addr, rem_addr, id, allocate, now)? {
                set_id_at(tcp, h, offset, ext);
                count(Counter::PptpCallIdRewritten);
            }
        }
        PptpAction::PeerCallId { offset } => {
            let key = PptpCallKey {
                rem_addr,
                call_id: id_at(h, offset),
                _pad: 0,
            };
            if let Some(c) = PPTP_CALLS_IN.get_ptr_mut(&key) {
                // SAFETY: map value pointer from a successful lookup.
                let c = unsafe { &mut *c };
                if c.int_addr == int_addr {
                    c.last_seen_ns = now;
                    let client_id = c.int_call_id;
                    set_id_at(tcp, h, offset, client_id);
                    count(Counter::PptpCallIdRewritten);
                    if ctrl == PPTP_OUT_CALL_REPLY {
                        // The server's call id, which the client's GRE will carry: learned
                        // only from what the server sends (a LAN host could name any id in
                        // its own messages), and the server's word wins.
                        let server_id = id_at(h, PPTP_CALL_ID);
                        let key = PeerIdKey {
                            rem_addr,
                            id: server_id.into(),
                            proto: IPPROTO_GRE,
                            _pad: [0; 3],
                        };
                        let owner = PeerId {
                            int_addr,
                            int_id: client_id.into(),
                        };
                        let _ = PEER_IDS.insert(&key, &owner, 0);
                    }
                }
            }
        }
    }
    Ok(())
}

/// The external call id of the client's call `id` to `rem_addr`; with `allocate`, one is
/// created: the client's own id when no other call to that server uses it, else a random
/// free one.
#[inline(always)]
fn call_out(
    int_addr: u32,
    rem_addr: u32,
    id: u16,
    allocate: bool,
    now: u64,
) -> Result<Option<u16>, Counter> {
    let key = PptpClientKey {
        int_addr,
        rem_addr,
        call_id: id,
        _pad: 0,
    };
    if let Some(c) = PPTP_CALLS_OUT.get_ptr_mut(&key) {
        let c = unsafe { &mut *c };
        c.last_seen_ns = now;
        return Ok(Some(c.ext_call_id));
    }
    if !allocate {
        return Ok(None);
    }
    // Read once the segment is translated: its Ethernet header is no longer the host's, so
    // PPTP calls count by address only.
    vpn_quota(int_addr, 0)?;
    let mut call = PptpCall {
        last_seen_ns: now,
        int_addr,
        rem_addr,
        int_call_id: id,
        ext_call_id: id,
        _pad: 0,
    };
    if id != 0 && claim_call(&key, &mut call, id)? {
        return Ok(Some(id));
    }
    // verifier: bounded retries.
    for _ in 0..MAX_CALL_ID_TRIES {
        let candidate = (unsafe { bpf_get_prandom_u32() } as u16).to_be();
        if candidate != 0 && claim_call(&key, &mut call, candidate)? {
            return Ok(Some(candidate));
        }
    }
    Err(Counter::DropPptpAllocFail)
}

/// Claims external call id `ext` for the call (server side first, atomically).
#[inline(always)]
fn claim_call(key: &PptpClientKey, call: &mut PptpCall, ext: u16) -> Result<bool, Counter> {
    call.ext_call_id = ext;
    let in_key = PptpCallKey {
        rem_addr: key.rem_addr,
        call_id: ext,
        _pad: 0,
    };
    match PPTP_CALLS_IN.insert(&in_key, &*call, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(e) if e == -EEXIST => return Ok(false),
        Err(_) => return Err(Counter::DropPptpAllocFail),
    }
    if PPTP_CALLS_OUT
        .insert(key, &*call, BPF_NOEXIST as u64)
        .is_err()
    {
        let _ = PPTP_CALLS_IN.remove(&in_key);
        return Err(Counter::DropPptpAllocFail);
    }
    count(Counter::PptpCallCreated);
    count_vpn(key.int_addr, 0);
    Ok(true)
}

/// May LAN host `int_addr`, sending from `mac` (`state::mac_owner`; 0: not counted by
/// MAC), create one more VPN state entry (an IKE SA, an outbound ESP SA, a learning window, a
/// PPTP call)? Its share of those tables (NatConfig::vpn_state_per_host), and twice that per
/// MAC (`state::mac_share`), so that spoofing other LAN addresses does not escape it.
// verifier: a subprogram, as are the per-MAC counts (state.rs): its map keys stay off the LAN
// program's frame.
#[inline(never)]
fn vpn_quota(int_addr: u32, mac: u64) -> Result<(), Counter> {
    let limit = config().map_or(0, |c| c.vpn_state_per_host);
    if at_limit(&HOST_VPN, &int_addr, limit)
        || (mac != 0 && at_limit(&MAC_VPN, &mac, mac_share(limit)))
    {
        Err(Counter::DropHostVpnQuota)
    } else {
        Ok(())
    }
}

/// One more VPN state entry made by `int_addr` from `mac` (see `vpn_quota`).
#[inline(never)]
fn count_vpn(int_addr: u32, mac: u64) {
    count_for_host(&HOST_VPN, &int_addr);
    if mac != 0 {
        count_for_host(&MAC_VPN, &mac);
        let _ = HOST_MAC.insert(&int_addr, &mac, 0);
    }
}

/// The frame's `mac_owner` for LAN host `addr`.
#[inline(always)]
fn sender_mac(ctx: &XdpContext, addr: u32) -> u64 {
    config().map_or(0, |cfg| mac_owner(ctx, cfg, addr))
}

/// Remembers that LAN host `int_addr` sends `server`'s id `id` (PEER_IDS), so that an ICMP
/// error quoting such a packet finds the host; `int_id` names the host's state it belongs to.
/// The first host to send an id keeps it (an ICMP error checks that its state still exists).
#[inline(always)]
fn remember_peer_id(server: u32, id: u32, proto: u8, int_addr: u32, int_id: u32) {
    let key = PeerIdKey {
        rem_addr: server,
        id,
        proto,
        _pad: [0; 3],
    };
    let owner = PeerId { int_addr, int_id };
    // A full LRU evicts. An id already taken stays its sender's while that sender's call or
    // SA lives; a dead one's (the sweeper has not removed it yet) is taken over.
    if PEER_IDS.insert(&key, &owner, BPF_NOEXIST as u64).is_err() {
        // SAFETY: map value pointer from a successful lookup, copied at once.
        if let Some(cur) = PEER_IDS.get_ptr(&key).map(|c| unsafe { *c }) {
            if !peer_state_live(&key, &cur) {
                let _ = PEER_IDS.insert(&key, &owner, 0);
            }
        }
    }
}

/// Does the call or SA that `owner` sends `key`'s id for still exist?
#[inline(always)]
pub fn peer_state_live(key: &PeerIdKey, owner: &PeerId) -> bool {
    if key.proto == IPPROTO_GRE {
        let call = PptpClientKey {
            int_addr: owner.int_addr,
            rem_addr: key.rem_addr,
            call_id: owner.int_id as u16,
            _pad: 0,
        };
        PPTP_CALLS_OUT.get_ptr(&call).is_some()
    } else {
        let sa = EspKey {
            int_addr: owner.int_addr,
            rem_addr: key.rem_addr,
            spi: owner.int_id,
        };
        ESP_OUT.get_ptr(&sa).is_some()
    }
}

/// LAN -> WAN enhanced GRE: it carries the server's call id, so only the source address
/// changes.
#[inline(always)]
pub fn gre_out(
    ctx: &XdpContext,
    wan_addr: u32,
    mut pkt: Ipv4<'_>,
    r: Route,
) -> Result<Verdict, Counter> {
    let h: *mut [u8; GRE_HDR_LEN] = ptr_at(ctx, pkt.l4_offset)?;
    if pkt.l4_len < GRE_HDR_LEN || !gre_v1_ok(unsafe { &*h }) {
        return Err(Counter::DropGreMalformed);
    }
    rewrite_addr(pkt.ip, Side::Source, wan_addr);
    count(Counter::PptpTranslated);
    deliver_out(&mut pkt, r)
}

/// WAN -> LAN enhanced GRE: the call id is the external one we gave the client's call.
#[inline(always)]
pub fn gre_in(ctx: &XdpContext, pkt: Ipv4<'_>, now: u64) -> Result<Verdict, Counter> {
    let h: *mut [u8; GRE_HDR_LEN] = ptr_at(ctx, pkt.l4_offset)?;
    let h = unsafe { &mut *h };
    if pkt.l4_len < GRE_HDR_LEN || !gre_v1_ok(h) {
        // Not PPTP's GRE: a forward's, or the router's own tunnel, perhaps.
        return tunnel_in(ctx, pkt, now, Counter::PassGreUnknownCall);
    }
    let key = PptpCallKey {
        rem_addr: pkt.src,
        call_id: get_u16(h, GRE_CALL_ID),
        _pad: 0,
    };
    let Some(c) = PPTP_CALLS_IN.get_ptr_mut(&key) else {
        // No LAN client's call: a PPTP server's behind a forward of GRE, if there is one.
        return tunnel_in(ctx, pkt, now, Counter::PassGreUnknownCall);
    };
    if !switch_on(CLASS_PPTP) {
        return Err(Counter::DropPptpSwitchOff);
    }
    let c = unsafe { &mut *c };
    c.last_seen_ns = now;
    let (int_addr, int_call_id) = (c.int_addr, c.int_call_id);
    set_u16(h, GRE_CALL_ID, int_call_id);
    to_lan_host(ctx, pkt, int_addr, now, Counter::PptpTranslated)
}

/// Delivers `pkt` to LAN host `host`, its destination rewritten, counted as `counter`; the
/// fragments that follow go there too.
#[inline(always)]
fn to_lan_host(
    ctx: &XdpContext,
    mut pkt: Ipv4<'_>,
    host: u32,
    now: u64,
    counter: Counter,
) -> Result<Verdict, Counter> {
    let r = route_in(ctx, &pkt, host)?;
    if pkt.fragment {
        frag::remember_in(&pkt, host, now)?;
    }
    rewrite_addr(pkt.ip, Side::Destination, host);
    count(counter);
    deliver_in(&mut pkt, r)
}

/// WAN -> LAN GRE or ESP that no LAN client's call or SA explains: to the VPN server a
/// forward of its protocol names (not passthrough: no switch applies), else the router's,
/// counted as `otherwise`.
#[inline(always)]
fn tunnel_in(
    ctx: &XdpContext,
    pkt: Ipv4<'_>,
    now: u64,
    otherwise: Counter,
) -> Result<Verdict, Counter> {
    let ext = ExternalKey {
        port: 0,
        proto: pkt.proto,
        _pad: 0,
    };
    let Some(f) = FORWARDS.get_ptr(&ext) else {
        return Ok(Verdict::pass(otherwise));
    };
    // SAFETY: map value pointer from a successful lookup; read at once.
    let f = unsafe { &*f };
    if f.retired != 0 {
        return Ok(Verdict::pass(otherwise));
    }
    if !f.admits(pkt.src) {
        return Err(Counter::DropForwardSource);
    }
    to_lan_host(ctx, pkt, f.int_addr, now, Counter::TunnelForwarded)
}

/// LAN -> WAN GRE or ESP of the VPN server a forward of its protocol names: only the source
/// address changes (it is the only such server, so its call ids and SPIs need no mapping).
#[inline(always)]
pub fn tunnel_out(
    wan_addr: u32,
    mut pkt: Ipv4<'_>,
    r: Route,
    now: u64,
) -> Result<Verdict, Counter> {
    if pkt.proto == IPPROTO_ESP {
        note_tunnel_peer(pkt.dst, now);
    }
    rewrite_addr(pkt.ip, Side::Source, wan_addr);
    count(Counter::TunnelForwarded);
    deliver_out(&mut pkt, r)
}

/// The SPI of an ESP packet (wire order), after checking the header is there.
#[inline(always)]
fn esp_spi(ctx: &XdpContext, pkt: &Ipv4<'_>) -> Result<u32, Counter> {
    // SPI and sequence number.
    let h: *const [u8; 8] = ptr_at(ctx, pkt.l4_offset)?;
    if pkt.l4_len < 8 {
        return Err(Counter::DropMalformed);
    }
    Ok(get_u32(unsafe { &*h }, 0))
}

/// LAN -> WAN raw ESP. An outbound SA no inbound SPI has been bound to yet opens a learning
/// window with its server (one host per server at a time; docs/passthrough.md), unless
/// another host's window is open or its own turn is cooling down: then the packet is dropped,
/// so that the server's answer cannot arrive during someone else's window.
#[inline(always)]
pub fn esp_out(
    ctx: &XdpContext,
    wan_addr: u32,
    mut pkt: Ipv4<'_>,
    r: Route,
    now: u64,
) -> Result<Verdict, Counter> {
    let spi = esp_spi(ctx, &pkt)?;
    let (int_addr, server) = (pkt.src, pkt.dst);
    let key = EspKey {
        int_addr,
        rem_addr: server,
        spi,
    };
    let learned = match ESP_OUT.get_ptr_mut(&key) {
        Some(o) => {
            let o = unsafe { &mut *o };
            o.last_seen_ns = now;
            o.spi != 0
        }
        None => {
            vpn_quota(int_addr, sender_mac(ctx, int_addr))?;
            let o = Owner {
                last_seen_ns: now,
                int_addr,
                spi: 0,
            };
            match ESP_OUT.insert(&key, &o, BPF_NOEXIST as u64) {
                Ok(()) => {
                    count_vpn(int_addr, sender_mac(ctx, int_addr));
                    remember_peer_id(server, spi, IPPROTO_ESP, int_addr, spi);
                }
                Err(e) if e == -EEXIST => {}
                Err(_) => return Err(Counter::DropIpsecAllocFail),
            }
            false
        }
    };
    if !learned {
        learn_window(server, int_addr, sender_mac(ctx, int_addr), spi, now)?;
    }
    rewrite_addr(pkt.ip, Side::Source, wan_addr);
    count(Counter::IpsecTranslated);
    deliver_out(&mut pkt, r)
}

/// Lets host `int_addr`'s unlearned SA `spi` with `server` go out: inside its own open
/// window, or by opening one. Err when another host's window is open, or when this host's
/// last window ended less than a window ago (the others' turn first).
#[inline(always)]
fn learn_window(server: u32, int_addr: u32, mac: u64, spi: u32, now: u64) -> Result<(), Counter> {
    if let Some(p) = ESP_PENDING.get_ptr(&server) {
        // SAFETY: map value pointer from a successful lookup, copied at once.
        let p = unsafe { *p };
        let age = now.wrapping_sub(p.started_ns);
        let open = age < ESP_PENDING_NS;
        if p.int_addr == int_addr && open {
            // Its own window; a retransmission does not extend it.
            return Ok(());
        }
        if open || (p.int_addr == int_addr && age < ESP_LEARN_COOLDOWN_NS) {
            return Err(Counter::DropEspLearnBusy);
        }
        // Over: reopened below (if this host may hold one more window: checked first, or a
        // refused host would end the old one's cooldown). Two CPUs doing so at once race; the
        // NOEXIST insert lets one of them win.
        vpn_quota(int_addr, mac)?;
        let _ = ESP_PENDING.remove(&server);
    } else {
        vpn_quota(int_addr, mac)?;
    }
    let p = EspLearner {
        started_ns: now,
        int_addr,
        spi,
        bound: 0,
    };
    match ESP_PENDING.insert(&server, &p, BPF_NOEXIST as u64) {
        Ok(()) => {
            count_vpn(int_addr, mac);
            Ok(())
        }
        // Another host (or CPU) opened it first.
        Err(e) if e == -EEXIST => Err(Counter::DropEspLearnBusy),
        Err(_) => Err(Counter::DropIpsecAllocFail),
    }
}

/// WAN -> LAN raw ESP: a known SPI goes to its owner. An unknown one from a peer the router
/// itself runs IKE with is the router's; otherwise it binds to the host whose learning window
/// with that server is open, which keeps the window: a made-up SPI spoofed from the server
/// binds to the learner too, and does not keep the learner's real SPI from binding after it.
#[inline(always)]
pub fn esp_in(
    ctx: &XdpContext,
    pkt: Ipv4<'_>,
    ipsec_on: bool,
    now: u64,
) -> Result<Verdict, Counter> {
    let spi = esp_spi(ctx, &pkt)?;
    let server = pkt.src;
    let key = EspKey {
        int_addr: 0,
        rem_addr: server,
        spi,
    };
    let owner = match ESP_IN.get_ptr_mut(&key) {
        Some(o) => {
            if !ipsec_on {
                return Err(Counter::DropIpsecSwitchOff);
            }
            let o = unsafe { &mut *o };
            o.last_seen_ns = now;
            o.int_addr
        }
        None => match learn_inbound(&key, ipsec_on, now)? {
            Inbound::Learner(host) => host,
            // No LAN client's SA: a server's behind a forward of ESP, if there is one.
            Inbound::Router(Counter::PassEspUnknownSpi) => {
                return tunnel_in(ctx, pkt, now, Counter::PassEspUnknownSpi);
            }
            Inbound::Router(counter) => return Ok(Verdict::pass(counter)),
        },
    };
    to_lan_host(ctx, pkt, owner, now, Counter::IpsecTranslated)
}

/// Where an inbound SPI no one owns goes.
enum Inbound {
    /// Bound to this LAN host, the server's learner.
    Learner(u32),
    /// Left to the router, counted as this.
    Router(Counter),
}

#[inline(always)]
fn learn_inbound(key: &EspKey, ipsec_on: bool, now: u64) -> Result<Inbound, Counter> {
    let server = key.rem_addr;
    if seen_lately(ROUTER_IPSEC_PEERS.get_ptr(&server), now) {
        return Ok(Inbound::Router(Counter::PassEspRouterPeer));
    }
    if seen_lately(TUNNEL_PEERS.get_ptr(&server), now) {
        // The forwarded server's peer: its ESP goes there (esp_in's tunnel_in).
        return Ok(Inbound::Router(Counter::PassEspUnknownSpi));
    }
    let Some(p) = ESP_PENDING.get_ptr_mut(&server) else {
        return Ok(Inbound::Router(Counter::PassEspUnknownSpi));
    };
    // SAFETY: map value pointer from a successful lookup.
    let p = unsafe { &mut *p };
    if now.wrapping_sub(p.started_ns) >= ESP_PENDING_NS {
        return Ok(Inbound::Router(Counter::PassEspUnknownSpi));
    }
    if !ipsec_on {
        return Err(Counter::DropIpsecSwitchOff);
    }
    let learner = (p.int_addr, p.spi);
    // A plain increment: CPUs binding at the same instant may each bind one more than the
    // limit, which still bounds what a spray can bind.
    if p.bound >= MAX_ESP_BINDINGS_PER_WINDOW {
        return Err(Counter::DropEspLearnLimit);
    }
    p.bound += 1;
    let o = Owner {
        last_seen_ns: now,
        int_addr: learner.0,
        spi: 0,
    };
    match ESP_IN.insert(key, &o, BPF_NOEXIST as u64) {
        Ok(()) => {}
        // The same SPI bound by another CPU a moment ago, to the same learner.
        Err(e) if e == -EEXIST => {}
        Err(_) => return Err(Counter::DropIpsecAllocFail),
    }
    let out_key = EspKey {
        int_addr: learner.0,
        rem_addr: server,
        spi: learner.1,
    };
    if let Some(out) = ESP_OUT.get_ptr_mut(&out_key) {
        // SAFETY: map value pointer from a successful lookup. The first SPI bound marks the
        // outbound SA learned; the window stays open for the others.
        unsafe {
            if (*out).spi == 0 {
                (*out).spi = key.spi;
            }
        }
    }
    count(Counter::EspSpiLearned);
    Ok(Inbound::Learner(learner.0))
}

/// The IKE header of a UDP packet, if the datagram is long enough to hold one.
#[inline(always)]
fn ike_header(ctx: &XdpContext, pkt: &Ipv4<'_>) -> Option<&'static [u8; IKE_HDR_LEN]> {
    if pkt.l4_len < UDP_HDR_LEN + IKE_HDR_LEN {
        return None;
    }
    let h: *const [u8; IKE_HDR_LEN] = ptr_at(ctx, pkt.l4_offset + UDP_HDR_LEN).ok()?;
    Some(unsafe { &*h })
}

/// Is this UDP datagram an IKE message with a client SPI (so that port 500 may be shared)?
#[inline(always)]
pub fn is_ike(ctx: &XdpContext, pkt: &Ipv4<'_>) -> bool {
    ike_header(ctx, pkt).is_some_and(|h| ike_client_spi(h, true).is_some())
}

/// Records that LAN host `int_addr` runs the IKE SA named by this packet's client SPI with
/// server `pkt.dst`, through the shared external port 500.
#[inline(always)]
pub fn ike_out(ctx: &XdpContext, pkt: &Ipv4<'_>, now: u64) -> Result<(), Counter> {
    let h = ike_header(ctx, pkt).ok_or(Counter::DropIkeMalformed)?;
    let spi = ike_client_spi(h, true).ok_or(Counter::DropIkeMalformed)?;
    let key = IkeKey {
        rem_addr: pkt.dst,
        _pad: 0,
        spi,
    };
    if let Some(o) = IKE_SAS.get_ptr_mut(&key) {
        let o = unsafe { &mut *o };
        if o.int_addr != pkt.src {
            return Err(Counter::DropIkeSpiInUse);
        }
        o.last_seen_ns = now;
        return Ok(());
    }
    vpn_quota(pkt.src, sender_mac(ctx, pkt.src))?;
    let o = Owner {
        last_seen_ns: now,
        int_addr: pkt.src,
        spi: 0,
    };
    match IKE_SAS.insert(&key, &o, BPF_NOEXIST as u64) {
        Ok(()) => {
            count_vpn(pkt.src, sender_mac(ctx, pkt.src));
            Ok(())
        }
        // Another CPU, same packet flow; the owner check happens on the next packet.
        Err(e) if e == -EEXIST => Ok(()),
        Err(_) => Err(Counter::DropIpsecAllocFail),
    }
}

/// The LAN host an IKE message from server `pkt.src` to port 500 is for.
#[inline(always)]
pub fn ike_owner(ctx: &XdpContext, pkt: &Ipv4<'_>, now: u64) -> Option<u32> {
    let h = ike_header(ctx, pkt)?;
    let spi = ike_client_spi(h, false)?;
    let key = IkeKey {
        rem_addr: pkt.src,
        _pad: 0,
        spi,
    };
    let o = IKE_SAS.get_ptr_mut(&key)?;
    let o = unsafe { &mut *o };
    o.last_seen_ns = now;
    Some(o.int_addr)
}

/// The forwarded ESP server talks to `peer`: its ESP with SPIs no one learnt is the server's
/// (learn_inbound), not a LAN client's that opened a learning window with the same peer.
// verifier: a function of its own (its key and value on its own stack frame, not the LAN
// program's).
#[inline(never)]
fn note_tunnel_peer(peer: u32, now: u64) {
    let _ = TUNNEL_PEERS.insert(&peer, &now, 0);
}

/// Was a peer, whose last-seen time a peer map lookup gave, seen within the ESP timeout?
#[inline(always)]
fn seen_lately(seen: Option<*const u64>, now: u64) -> bool {
    // SAFETY: a map value pointer from a successful lookup, read at once.
    seen.is_some_and(|t| now.wrapping_sub(unsafe { *t }) < ESP_TIMEOUT_SECS as u64 * 1_000_000_000)
}
