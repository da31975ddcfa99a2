//! Session state, both directions: mappings and port claims, sessions made and refreshed
//! outbound, sessions and filters checked inbound, TCP state, the per-host and per-MAC
//! shares.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    cty::c_void,
    helpers::generated::{bpf_get_prandom_u32, bpf_loop},
    maps::HashMap,
    programs::XdpContext,
};
use nat_common::{
    config::{FILTER_ADDRESS_DEPENDENT, FILTER_ENDPOINT_INDEPENDENT, NatConfig},
    counters::Counter,
    flow_cache::{FlowKey, value_in},
    maps::{
        EndpointKey, ExternalKey, FIRST_REMOTE_TIME_SHIFT, MAC_SHARE_HOSTS, MAPPING_ACTIVE,
        Mapping, NextHop, SESSION_FORWARDED, Session, SessionKey, external_hint, lan_hint, mac_key,
    },
    passthrough::{CLASS_NONE, IKE_PORT, classify},
    ports::{DRAWS_PER_TRY, MAX_PORT_TRIES, draw_candidate, taken_bit, wants_privileged},
    proto::{IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    tcp_state::{self, Direction},
};

use crate::{
    flow_cache,
    maps::{
        FILTERS, FLOWS_IN, FLOWS_OUT, FORWARDS, FORWARDS_BY_LAN, HOST_MAPPINGS, HOST_SESSIONS,
        MAC_MAPPINGS, MAC_SESSIONS, MAPPING_MADE, MAPPINGS_IN, MAPPINGS_OUT, PORT_POOL,
        PORTS_TAKEN, SESSIONS, config, count, forward_hint, has_port,
    },
    packet::ptr_at,
};

/// The errno of a BPF_NOEXIST insert whose key is there (negated by the helper).
pub const EEXIST: i32 = 17;

enum Claim {
    /// This CPU made the mapping, with this port.
    Created(u16),
    /// Another CPU made the endpoint's mapping at the same moment, with this port.
    Existing(u16),
    /// Port taken: try another.
    Taken,
}

/// The per-MAC share's key for new state of LAN host `addr` (`mac_key` of the frame's source
/// MAC), when `addr` is on the LAN's own subnet: a host there that spoofs other addresses
/// keeps its MAC, and so its share. 0 (no per-MAC share) for a host routed behind a LAN
/// router, whose frames all carry that router's MAC.
#[inline(always)]
pub fn mac_owner(ctx: &XdpContext, cfg: &NatConfig, addr: u32) -> u64 {
    if addr & cfg.lan_mask != cfg.lan_net {
        return 0;
    }
    match ptr_at::<[u8; 6]>(ctx, ETH_SOURCE) {
        // SAFETY: bounds-checked by ptr_at.
        Ok(mac) => match mac_key(unsafe { &*mac }) {
            // No host sends from the zero or a multicast address: whoever does shares one
            // share with everyone else who does, rather than escaping the per-MAC count.
            key if key == 0 || key & 1 != 0 => FORGED_MAC_KEY,
            key => key,
        },
        Err(_) => 0,
    }
}

/// The per-MAC key every frame from the zero or a multicast MAC address counts under (not
/// a `mac_key` of any unicast address: its multicast bit is set).
const FORGED_MAC_KEY: u64 = 0xffff_ffff_ffff;

/// Where the source MAC lies in an Ethernet header.
const ETH_SOURCE: usize = 6;

/// The external port of `ep`'s mapping, creating the mapping if there is none (within the
/// host's share, by address and by MAC: `mac_owner` of the frame in `ctx`).
#[inline(always)]
pub fn mapping_for(
    ctx: &XdpContext,
    cfg: &NatConfig,
    ep: &EndpointKey,
    now: u64,
) -> Result<u16, Counter> {
    if let Some(m) = MAPPINGS_OUT.get_ptr(ep) {
        // SAFETY: map value pointer from a successful lookup.
        return Ok(unsafe { (*m).ext_port });
    }
    if at_limit(&HOST_MAPPINGS, &ep.addr, cfg.mappings_per_host) {
        return Err(Counter::DropHostQuota);
    }
    let mut m = Mapping {
        created_ns: now,
        released_ns: 0,
        int_addr: ep.addr,
        int_port: ep.port,
        ext_port: 0,
        proto: ep.proto,
        state: MAPPING_ACTIVE,
        mac_hi: 0,
        mac_lo: 0,
        // Set once the session is made (remember_remote).
        first_remote: 0,
        first_remote_at: 0,
    };
    // verifier: the MAC goes straight into the mapping and is read back from there, never
    // kept in a variable of its own: one more value live across the LAN program pushed its
    // stack over 512 bytes.
    m.set_mac(mac_owner(ctx, cfg, ep.addr));
    if m.mac() != 0
        && mac_full(
            MacShare::Mappings,
            m.mac(),
            mac_share(cfg.mappings_per_host),
        )
    {
        return Err(Counter::DropHostQuota);
    }
    // Keep the source port when the pool has it and it is free (RFC 4787 REQ-1 "port
    // preservation" is not required, but applications like it). A forwarded port is the
    // NAT's too (PORT_IN_POOL), but never a mapping's: the mapping would take its traffic;
    // nor is one that a reload left outside the pool while a mapping of another protocol
    // held it (the router may use it now).
    if pool_has(ep.port)
        && !shared_ike_port(ep.proto, ep.port)
        && !port_unavailable(ep.proto, ep.port)
    {
        match claim(ep, &mut m, ep.port)? {
            Claim::Created(p) => {
                count_new_mapping(&m);
                return Ok(p);
            }
            Claim::Existing(p) => return Ok(p),
            Claim::Taken => {}
        }
    }
    let mut search = PortSearch {
        ep: *ep,
        m,
        privileged: u16::from(wants_privileged(ep.proto, u16::from_be(ep.port))),
        created: 0,
        outcome: Err(Counter::DropPortsExhausted),
    };
    // verifier: the random draws run in a bpf_loop callback, which the verifier checks once;
    // as a loop in this function every draw was checked again on every path that gets here
    // (most of what the LAN program cost the verifier).
    // SAFETY: the callback has bpf_loop's signature and reads its context as the PortSearch
    // on this stack, which outlives the call.
    unsafe {
        bpf_loop(
            MAX_PORT_TRIES,
            try_random_port as *mut c_void,
            (&mut search as *mut PortSearch).cast(),
            0,
        );
    }
    // verifier: counted here, not in the callback, whose stack frame adds to this one's (a
    // subprogram called from the callback would add a third).
    if search.created != 0 {
        count_new_mapping(&search.m);
    }
    search.outcome
}

/// Is external `port` (wire order) of `proto` forwarded, or held by a mapping (by
/// PORTS_TAKEN)? A port that is neither is worth a claim.
// verifier: one function of its own (a BPF subprogram with its own stack frame) for both
// checks: its map key inlined would add to the LAN program's frame, which has little room
// left, and each call in the random draws' callback costs some 24 K instructions to verify.
#[inline(never)]
fn port_unavailable(proto: u8, port: u16) -> bool {
    is_forwarded(proto, port) || port_taken(proto, port)
}

/// Is external `port` (wire order) of `proto` forwarded?
#[inline(always)]
fn is_forwarded(proto: u8, port: u16) -> bool {
    if !forward_hint(external_hint(u16::from_be(port))) {
        return false;
    }
    let key = ExternalKey {
        port,
        proto,
        _pad: 0,
    };
    FORWARDS.get_ptr(&key).is_some()
}

/// A mapping this CPU made counts against its MAC's share (`claim` counted its host's), and
/// its port is taken. (A port found taken by a failed claim whose bit was clear, because
/// nat-ctl's rewrite of the bitmap lost it, waits for the next rewrite.)
#[inline(always)]
fn count_new_mapping(m: &Mapping) {
    if let Some(made) = MAPPING_MADE.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; a packet runs to its end on one CPU.
        unsafe { *made = made_tag(m.proto, m.ext_port) };
    }
    mark_taken(m.proto, m.ext_port);
    if m.mac() != 0 {
        count_for_mac(MacShare::Mappings, m.mac());
    }
}

/// MAPPING_MADE's value for the mapping of `proto` at external port `port` (never 0).
#[inline(always)]
fn made_tag(proto: u8, port: u16) -> u64 {
    1 << 32 | u64::from(proto) << 16 | u64::from(port)
}

/// UDP port 500 (wire order), which IKE from port 500 to port 500 shares among the LAN hosts
/// (told apart by SPI on the way back; docs/passthrough.md): never an ordinary mapping's, or
/// IKE replies with an SPI no one owns would reach that mapping's host.
#[inline(always)]
fn shared_ike_port(proto: u8, port: u16) -> bool {
    proto == IPPROTO_UDP && port == IKE_PORT.to_be()
}

/// A random search for a free external port (mapping_for), as bpf_loop's context.
struct PortSearch {
    ep: EndpointKey,
    m: Mapping,
    privileged: u16,
    /// 1 once a draw made the mapping (not another CPU).
    created: u16,
    /// The port won, or why none was: DropPortsExhausted until a draw ends the search.
    outcome: Result<u16, Counter>,
}

/// One random draw of the pool for a PortSearch: 0 to draw again, 1 when the search is over.
#[inline(never)]
extern "C" fn try_random_port(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes mapping_for's PortSearch back, unchanged.
    let s = unsafe { &mut *ctx.cast::<PortSearch>() };
    let Some(cfg) = config() else {
        return 1;
    };
    let port = match draw_pool_port(cfg, s.privileged != 0) {
        Ok(Some(port)) => port,
        // No candidate was the pool's: count it as a try.
        Ok(None) => return 0,
        Err(()) => return 1,
    };
    // A lease (NAT-PMP, PCP) stays in the pool, which it would otherwise drain: it is skipped
    // here instead.
    if shared_ike_port(s.ep.proto, port) || port_unavailable(s.ep.proto, port) {
        return 0;
    }
    match claim(&s.ep, &mut s.m, port) {
        Ok(Claim::Taken) => 0,
        Ok(Claim::Created(p)) => {
            s.outcome = Ok(p);
            s.created = 1;
            1
        }
        Ok(Claim::Existing(p)) => {
            s.outcome = Ok(p);
            1
        }
        Err(e) => {
            s.outcome = Err(e);
            1
        }
    }
}

/// A random port of `cfg`'s pool (wire order): a candidate of the part drawn from, kept if
/// PORT_POOL has it, up to DRAWS_PER_TRY candidates (None when none was). Err: that part of
/// the pool is empty.
// verifier: PORTS_TAKEN is checked by the caller, once: checked here for each candidate, the
// LAN program took 0.64 M instructions to verify instead of 0.3 M.
#[inline(always)]
fn draw_pool_port(cfg: &NatConfig, privileged: bool) -> Result<Option<u16>, ()> {
    // verifier: a bounded loop (DRAWS_PER_TRY), in the random draws' callback, which the
    // verifier checks once.
    for _ in 0..DRAWS_PER_TRY {
        // SAFETY: no arguments.
        let r = unsafe { bpf_get_prandom_u32() };
        let port = draw_candidate(r, privileged, cfg).ok_or(())?.to_be();
        if pool_has(port) {
            return Ok(Some(port));
        }
    }
    Ok(None)
}

/// Is `port` (wire order) one a mapping may take (PORT_POOL: the pool, less forwarded
/// ports)? PORT_IN_POOL, the ports the NAT answers on, also holds the forwarded ones and the
/// ports of mappings that a reload left outside the pool.
#[inline(always)]
fn pool_has(port: u16) -> bool {
    has_port(&PORT_POOL, port)
}

/// One more entry held by `owner` (a LAN host's address in HOST_MAPPINGS, HOST_SESSIONS,
/// HOST_VPN; its MAC in MAC_MAPPINGS, MAC_SESSIONS), an atomic add (CPUs counting for one
/// owner at once each count); the sweeper counts down what its due checks remove, and
/// recounts at each walk.
#[inline(always)]
pub fn count_for_host<K>(held: &HashMap<K, u32>, owner: &K) {
    match held.get_ptr_mut(owner) {
        // SAFETY: map value pointer from a successful lookup, naturally aligned.
        Some(n) => unsafe {
            core::intrinsics::atomic_xadd::<u32, u32, { core::intrinsics::AtomicOrdering::Relaxed }>(
                n, 1,
            );
        },
        None => {
            // A full table only means this owner is not limited until the sweeper recounts.
            let _ = held.insert(owner, &1, 0);
        }
    }
}

/// What one MAC address may hold: twice a host's share, so that a host with a few addresses
/// of its own keeps working, while one that spoofs ever more addresses of the subnet takes
/// at most half of the pool and of the session table (0: no limit).
#[inline(always)]
pub fn mac_share(host_share: u32) -> u32 {
    host_share.saturating_mul(MAC_SHARE_HOSTS)
}

/// The per-MAC shares (MAC_MAPPINGS, MAC_SESSIONS).
#[derive(Clone, Copy)]
enum MacShare {
    Mappings,
    Sessions,
}

/// `at_limit` for a MAC's share. verifier: a function of its own (a BPF subprogram, with its
/// own stack frame): inlined, its map key pushed the LAN program past 512 bytes of stack.
#[inline(never)]
fn mac_full(share: MacShare, mac: u64, limit: u32) -> bool {
    match share {
        MacShare::Mappings => at_limit(&MAC_MAPPINGS, &mac, limit),
        MacShare::Sessions => at_limit(&MAC_SESSIONS, &mac, limit),
    }
}

/// `count_for_host` for a MAC's share; out of line like `mac_full`.
#[inline(never)]
fn count_for_mac(share: MacShare, mac: u64) {
    match share {
        MacShare::Mappings => count_for_host(&MAC_MAPPINGS, &mac),
        MacShare::Sessions => count_for_host(&MAC_SESSIONS, &mac),
    }
}

/// Does `owner` hold `limit` entries already (0: no limit)?
#[inline(always)]
pub fn at_limit<K>(held: &HashMap<K, u32>, owner: &K, limit: u32) -> bool {
    // SAFETY: map value pointer from a successful lookup, read at once.
    limit > 0 && held.get_ptr(owner).map_or(0, |n| unsafe { *n }) >= limit
}

/// Claims external `port` for `ep` (which `port_unavailable` let through): first the external
/// side (atomic across CPUs through BPF_NOEXIST), then the internal side.
#[inline(always)]
fn claim(ep: &EndpointKey, m: &mut Mapping, port: u16) -> Result<Claim, Counter> {
    m.ext_port = port;
    let ext = ExternalKey {
        port,
        proto: ep.proto,
        _pad: 0,
    };
    match MAPPINGS_IN.insert(&ext, &*m, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(e) if e == -EEXIST => return Ok(Claim::Taken),
        Err(_) => return Err(Counter::DropMappingTableFull),
    }
    match MAPPINGS_OUT.insert(ep, &*m, BPF_NOEXIST as u64) {
        Ok(()) => {
            count(Counter::MappingCreated);
            count_for_host(&HOST_MAPPINGS, &ep.addr);
            Ok(Claim::Created(port))
        }
        Err(e) => {
            let _ = MAPPINGS_IN.remove(&ext);
            if e == -EEXIST {
                // Another CPU created this endpoint's mapping at the same moment: use it.
                match MAPPINGS_OUT.get_ptr(ep) {
                    Some(other) => Ok(Claim::Existing(unsafe { (*other).ext_port })),
                    None => Err(Counter::DropMappingTableFull),
                }
            } else {
                Err(Counter::DropMappingTableFull)
            }
        }
    }
}

/// Does a mapping hold external `port` (wire order) of `proto`, by PORTS_TAKEN? (A clear bit
/// only means "try it": MAPPINGS_IN decides.)
#[inline(always)]
fn port_taken(proto: u8, port: u16) -> bool {
    match taken_bit(proto, u16::from_be(port)) {
        Some((word, bit)) => PORTS_TAKEN.get(word).is_some_and(|w| w & bit != 0),
        None => false,
    }
}

/// Sets external `port`'s bit in PORTS_TAKEN (a set bit is not written again: the
/// sweeper's walk marks every live session's port).
// verifier: out of line, and called once per new mapping (count_new_mapping), never from the
// random draws' callback, where it cost 23 K instructions to verify.
#[inline(never)]
pub fn mark_taken(proto: u8, port: u16) {
    let Some((word, bit)) = taken_bit(proto, u16::from_be(port)) else {
        return;
    };
    if let Some(w) = PORTS_TAKEN.get_ptr_mut(word) {
        // SAFETY: map value pointer, naturally aligned: an atomic OR, as other CPUs set bits
        // of the same word.
        if unsafe { *w } & bit != 0 {
            return;
        }
        unsafe {
            core::intrinsics::atomic_or::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                w, bit,
            );
        }
    }
}

/// An outbound packet of an existing session: it already knows its external port, so the
/// mapping is not looked up (the sweeper removes any session whose mapping went away, so the
/// next packet takes the slow path and gets a fresh one). Refreshes it.
#[inline(always)]
pub fn refresh_outbound(key: &SessionKey, tcp_flags: u8, now: u64) -> Option<u16> {
    let s = SESSIONS.get_ptr_mut(key)?;
    // SAFETY: map value pointer; concurrent writers only race on refresh timestamps.
    let s = unsafe { &mut *s };
    s.last_seen_ns = now;
    if key.proto == IPPROTO_TCP {
        outbound_tcp(key, s, tcp_flags);
    }
    Some(s.ext_port)
}

/// Records a TCP segment that crossed `s` in `dir`, and returns the state after it. Bits the
/// segment adds are set with an atomic OR, so a FIN or RST the other direction records at the
/// same moment on another CPU is kept; a segment that adds nothing writes nothing. Only a SYN
/// that starts a closed 5-tuple afresh clears bits, with a plain write (what it would race
/// with, a segment of the closed connection, no longer matters).
#[inline(always)]
pub fn record_tcp(s: &mut Session, dir: Direction, tcp_flags: u8) -> u8 {
    // SAFETY: a field of a map value, read once.
    let old = unsafe { core::ptr::read_volatile(&s.tcp_state) };
    let new = tcp_state::next(old, dir, tcp_flags);
    if new & old != old {
        // SAFETY: as above, a byte store.
        unsafe { core::ptr::write_volatile(&mut s.tcp_state, new) };
    } else if new != old {
        let word = (&mut s.ext_port as *mut u16).cast::<u64>();
        // SAFETY: the aligned word that holds ext_port, tcp_state, class and padding
        // (Session::TCP_STATE_WORD_SHIFT); OR-ing bits of tcp_state leaves the others alone.
        unsafe {
            core::intrinsics::atomic_or::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                word,
                u64::from(new & !old) << Session::TCP_STATE_WORD_SHIFT,
            );
        }
    }
    new
}

/// TCP state after an outbound segment. A SYN may start the 5-tuple afresh: its replies then
/// wait for the peer's answer to be recorded again before they take the fast path.
#[inline(always)]
fn outbound_tcp(key: &SessionKey, s: &mut Session, tcp_flags: u8) {
    record_tcp(s, Direction::Outbound, tcp_flags);
    if tcp_flags & TCP_SYN != 0 {
        flow_cache::forget(&FLOWS_IN, &FlowKey::reply(&key.reply_key(s.ext_port)));
    }
}

/// Refreshes (or creates: `new_session`) the session for an outbound packet whose session was
/// not looked up yet (IKE on the shared port 500, hairpinning), at external port `ext_port`.
/// `origin` is SESSION_FORWARDED for a forwarded LAN endpoint's session, which has the
/// forwarded port and no mapping.
#[inline(always)]
pub fn touch_outbound(
    ctx: &XdpContext,
    key: &SessionKey,
    ext_port: u16,
    tcp_flags: u8,
    class: u8,
    now: u64,
    origin: u8,
) -> Result<(), Counter> {
    if let Some(s) = SESSIONS.get_ptr_mut(key) {
        // SAFETY: map value pointer; concurrent writers only race on refresh timestamps.
        let s = unsafe { &mut *s };
        if s.ext_port != ext_port {
            // The endpoint has a new mapping: replies to the old port stop here.
            flow_cache::forget(&FLOWS_IN, &FlowKey::reply(&key.reply_key(s.ext_port)));
            flow_cache::forget(&FLOWS_OUT, &FlowKey::out(key));
            s.ext_port = ext_port;
        }
        s.last_seen_ns = now;
        if key.proto == IPPROTO_TCP {
            outbound_tcp(key, s, tcp_flags);
        }
        return Ok(());
    }
    new_session(ctx, key, ext_port, tcp_flags, class, now, origin)
}

/// Creates the session for an outbound packet that has none (`refresh_outbound` found none),
/// within the host's share by address and by MAC (`mac_owner` of the frame in `ctx`); one
/// another CPU made meanwhile is left as it is. `origin` as for `touch_outbound`.
#[inline(always)]
pub fn new_session(
    ctx: &XdpContext,
    key: &SessionKey,
    ext_port: u16,
    tcp_flags: u8,
    class: u8,
    now: u64,
    origin: u8,
) -> Result<(), Counter> {
    let Some(cfg) = config() else {
        return Err(Counter::DropNoConfig);
    };
    let limit = cfg.sessions_per_host;
    if at_limit(&HOST_SESSIONS, &key.int_addr, limit) {
        return Err(Counter::DropHostSessionQuota);
    }
    let tcp = if key.proto == IPPROTO_TCP {
        tcp_state::next(0, Direction::Outbound, tcp_flags)
    } else {
        0
    };
    let s = Session {
        created_ns: now,
        last_seen_ns: now,
        ext_port,
        tcp_state: tcp,
        class,
        origin,
        orphan_mark: 0,
        _pad: [0; 2],
        // verifier: straight into the session, as in mapping_for.
        lan_mac: mac_owner(ctx, cfg, key.int_addr),
    };
    if s.lan_mac != 0 && mac_full(MacShare::Sessions, s.lan_mac, mac_share(limit)) {
        return Err(Counter::DropHostSessionQuota);
    }
    match SESSIONS.insert(key, &s, BPF_NOEXIST as u64) {
        Ok(()) => {
            count(Counter::SessionCreated);
            count_for_host(&HOST_SESSIONS, &key.int_addr);
            if s.lan_mac != 0 {
                count_for_mac(MacShare::Sessions, s.lan_mac);
            }
            if cfg.dmz_addr != 0 {
                // The DMZ host's sessions take any port no mapping holds, so its cached
                // replies may name this port and remote: they are this session's now.
                flow_cache::forget(&FLOWS_IN, &FlowKey::reply(&key.reply_key(ext_port)));
            }
        }
        // Created by another CPU meanwhile: fine.
        Err(e) if e == -EEXIST => {}
        Err(_) => return Err(Counter::DropSessionTableFull),
    }
    remember_remote(cfg, key, ext_port, now);
    Ok(())
}

/// Remembers the remote host of session `key` (made at external port `ext_port` by a packet
/// of time `now`) for address-dependent filtering, which asks about a UDP datagram without a
/// session and nothing else (`filter_allows`): a TCP or ICMP session needs nothing. The
/// session of the packet that made its mapping has its remote host kept in the mapping
/// (`Mapping::first_remote`; MAPPING_MADE tells), which spares a new flow a FILTERS insert,
/// the dearest step it had; any other makes an entry. UDP sessions do this under every
/// filtering mode, so that a reload into address-dependent filtering applies to the flows
/// already running. A full filter table only makes filtering stricter, never looser.
#[inline(always)]
fn remember_remote(cfg: &NatConfig, key: &SessionKey, ext_port: u16, now: u64) {
    if key.proto != IPPROTO_UDP {
        return;
    }
    // This packet made the session's mapping (the tag says which; a packet that made one
    // and failed to make its session leaves it to the mapping's next session): the mapping
    // keeps the remote host, unless it has one. Until this write it lets no more in than
    // before, and nothing can answer a packet that has not left yet.
    if let Some(made) = MAPPING_MADE.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; a packet runs to its end on one CPU.
        let made = unsafe { &mut *made };
        if *made == made_tag(IPPROTO_UDP, ext_port) {
            *made = 0;
            let ext = ExternalKey {
                port: ext_port,
                proto: IPPROTO_UDP,
                _pad: 0,
            };
            if let Some(m) = MAPPINGS_IN.get_ptr_mut(&ext) {
                // SAFETY: map value pointer from a successful lookup.
                let m = unsafe { &mut *m };
                let ours = m.int_addr == key.int_addr && m.int_port == key.int_port;
                // One a flush voided stays void (wan.rs heeds none of a mapping made before
                // the last flush): its hosts go to FILTERS.
                let heeded = m.made_after(cfg.flushed_ns);
                if ours && heeded && m.state == MAPPING_ACTIVE && m.first_remote == 0 {
                    m.first_remote_at = (now >> FIRST_REMOTE_TIME_SHIFT) as u32;
                    m.first_remote = key.rem_addr;
                    return;
                }
            }
        }
    }
    let _ = FILTERS.insert(&key.filter_key(), &now, BPF_NOEXIST as u64);
}

/// What an inbound packet that belongs to no session gets, by what its external port leads
/// to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum NewFlow {
    /// A mapping's port: RFC 4787 filtering decides (a UDP datagram may pass, statelessly).
    Filtered,
    /// A port forward's, or the DMZ host's: a session is made.
    Forwarded,
    /// A removed forward's: only its sessions still run.
    Refused,
}

/// An inbound packet of session `key` that reached external port `ext_port`: refreshes the
/// session and records a TCP segment. Gives the session's class and its TCP state after the
/// packet (0 for UDP and ICMP), or no state for a UDP datagram that address-dependent or
/// endpoint-independent filtering (RFC 4787 REQ-8) lets in without a session. Without a
/// session, `new` decides.
#[inline(always)]
pub fn inbound(
    cfg: &NatConfig,
    key: &SessionKey,
    (ext_port, first_remote): (u16, u32),
    tcp_flags: u8,
    new: NewFlow,
    now: u64,
) -> Result<(u8, Option<u8>), Counter> {
    let Some(s) = SESSIONS.get_ptr_mut(key) else {
        return match (new, key.proto) {
            (NewFlow::Forwarded, _) => forwarded_session(cfg, key, ext_port, tcp_flags, now),
            (NewFlow::Refused, _) => Err(Counter::DropNoMapping),
            (NewFlow::Filtered, IPPROTO_TCP) => Err(Counter::DropUnsolicitedTcp),
            (NewFlow::Filtered, IPPROTO_UDP) if filter_allows(cfg, key, first_remote) => {
                Ok((classify(key.proto, u16::from_be(key.rem_port)), None))
            }
            _ => Err(Counter::DropFiltered),
        };
    };
    // SAFETY: map value pointer; concurrent writers only race on refresh timestamps.
    let s = unsafe { &mut *s };
    if s.ext_port != ext_port {
        // A session left from an earlier, released mapping of this endpoint.
        return Err(Counter::DropNoMapping);
    }
    s.last_seen_ns = now;
    let tcp = if key.proto == IPPROTO_TCP {
        record_tcp(s, Direction::Inbound, tcp_flags)
    } else {
        0
    };
    Ok((s.class, Some(tcp)))
}

/// RFC 4787 REQ-8 for a UDP packet from a remote endpoint the mapping has not sent to; the
/// mapping's `first_remote` is a host it has sent to (`remember_remote`), the others have
/// FILTERS entries.
#[inline(always)]
fn filter_allows(cfg: &NatConfig, session: &SessionKey, first_remote: u32) -> bool {
    match cfg.filtering {
        FILTER_ENDPOINT_INDEPENDENT => true,
        FILTER_ADDRESS_DEPENDENT => {
            (first_remote != 0 && session.rem_addr == first_remote)
                || FILTERS.get_ptr(&session.filter_key()).is_some()
        }
        _ => false,
    }
}

/// Caches the reply flow of session `key` at external port `ext_port` (FLOWS_IN) for the
/// fast path of the replies that follow, with their next hop `hop`: a TCP session's only once
/// the peer's opening is recorded (`tcp_state`), and one the WAN side opened (a forward's)
/// only once its handshake ACK is, so that the fast path never lets a segment past the
/// state it would change.
#[inline(always)]
pub fn keep_reply_flow(
    cfg: &NatConfig,
    key: &SessionKey,
    ext_port: u16,
    class: u8,
    tcp_state: u8,
    hop: &NextHop,
) {
    if key.proto == IPPROTO_TCP && !tcp_state::replies_cacheable(tcp_state) {
        return;
    }
    let value = value_in(key.int_addr, key.int_port, class);
    flow_cache::fill(
        &FLOWS_IN,
        cfg,
        &FlowKey::reply(&key.reply_key(ext_port)),
        value,
        hop,
    );
}

/// A WAN host's first packet through a port forward (a TCP SYN, or any UDP datagram): a
/// session of the LAN host's, counted in its share of the table, so that a flood of new
/// flows to a forward takes at most that host's share. Its class is CLASS_NONE: forwarded
/// traffic is not passthrough, and the switches do not apply to it.
#[inline(always)]
fn forwarded_session(
    cfg: &NatConfig,
    key: &SessionKey,
    ext_port: u16,
    tcp_flags: u8,
    now: u64,
) -> Result<(u8, Option<u8>), Counter> {
    let tcp = if key.proto == IPPROTO_TCP {
        if tcp_flags & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST) != TCP_SYN {
            return Err(Counter::DropUnsolicitedTcp);
        }
        tcp_state::opened_in(tcp_flags)
    } else {
        0
    };
    if at_limit(&HOST_SESSIONS, &key.int_addr, cfg.sessions_per_host) {
        return Err(Counter::DropHostSessionQuota);
    }
    let s = Session {
        created_ns: now,
        last_seen_ns: now,
        ext_port,
        tcp_state: tcp,
        class: CLASS_NONE,
        origin: SESSION_FORWARDED,
        orphan_mark: 0,
        _pad: [0; 2],
        // Not counted per MAC: the MAC is the LAN host's, which did not ask for this.
        lan_mac: 0,
    };
    match SESSIONS.insert(key, &s, BPF_NOEXIST as u64) {
        Ok(()) => {
            count(Counter::SessionCreated);
            count(Counter::ForwardSessionCreated);
            count_for_host(&HOST_SESSIONS, &key.int_addr);
            // A DMZ session's port stays out of the draws while the session lives (the
            // sweeper's walk keeps the bit set), so that no mapping takes its replies; a
            // forward's ports are out of them anyway.
            mark_taken(key.proto, ext_port);
            let ext = ExternalKey {
                port: ext_port,
                proto: key.proto,
                _pad: 0,
            };
            if let Some(f) = FORWARDS.get_ptr_mut(&ext) {
                // SAFETY: map value pointer from a successful lookup; an aligned u64.
                unsafe {
                    core::intrinsics::atomic_xadd::<
                        u64,
                        u64,
                        { core::intrinsics::AtomicOrdering::Relaxed },
                    >(&raw mut (*f).hits, 1);
                }
            }
        }
        // Made by another CPU meanwhile: fine.
        Err(e) if e == -EEXIST => {}
        Err(_) => return Err(Counter::DropSessionTableFull),
    }
    Ok((CLASS_NONE, Some(tcp)))
}

/// The forwarded external port (wire order) of LAN endpoint `addr`:`port` of `proto`, or 0:
/// what a forwarded LAN server's traffic leaves from.
// verifier: a function of its own (a BPF subprogram with its own stack frame): its map key
// inlined would add to the LAN program's frame, which has little room left.
#[inline(never)]
pub fn forwarded_port(proto: u8, addr: u32, port: u16) -> u16 {
    if !forward_hint(lan_hint(u16::from_be(port))) {
        return 0;
    }
    let key = EndpointKey {
        addr,
        port,
        proto,
        _pad: 0,
    };
    // SAFETY: map value pointer from a successful lookup, read at once.
    FORWARDS_BY_LAN.get_ptr(&key).map_or(0, |p| unsafe { *p })
}

/// Is LAN host `addr` the VPN server a forward of GRE or ESP (`proto`) names?
// verifier: a function of its own, like `forwarded_port`.
#[inline(never)]
pub fn is_tunnel_server(proto: u8, addr: u32) -> bool {
    if !forward_hint(lan_hint(0)) {
        return false;
    }
    let key = EndpointKey {
        addr,
        port: 0,
        proto,
        _pad: 0,
    };
    FORWARDS_BY_LAN.get_ptr(&key).is_some()
}
