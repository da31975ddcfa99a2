//! Expiry, run by the daemon every few seconds: sessions past their timeout go, a mapping
//! with no session left is detached and, a sweep later, released into the 120 s cooling
//! period (RFC 6888 REQ-8), a cooled external port is freed, and filter entries without a
//! session go.

use anyhow::Result;
use nat_common::{
    config::{
        ESP_LEARN_COOLDOWN_NS, ESP_TIMEOUT_SECS, FRAG_TIMEOUT_NS, GRE_TIMEOUT_SECS,
        MAPPING_GRACE_SECS, PORT_REUSE_DELAY_SECS, Timeouts,
    },
    maps::{
        EndpointKey, EspKey, FragEntry, FragKey, MAPPING_ACTIVE, MAPPING_COOLING, Mapping,
        PptpClientKey, Session, SessionKey,
    },
    proto::{IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_TCP},
    tcp_state,
};
// The sweeper hashes every session a few times per sweep: foldhash is several times faster
// than std's SipHash there, and seeded per process like it.
use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};
use std::time::Duration;

use crate::state::NatMaps;

const NS: u64 = 1_000_000_000;

/// The idle timeout of a session, in seconds.
pub fn timeout_secs(key: &SessionKey, s: &Session, t: &Timeouts) -> u32 {
    match key.proto {
        IPPROTO_TCP if tcp_state::is_established(s.tcp_state) => t.tcp_established,
        IPPROTO_TCP => t.tcp_transitory,
        IPPROTO_ICMP => t.icmp,
        _ => t.udp,
    }
}

/// Seconds until the session expires (0 when it already has).
pub fn remaining_secs(key: &SessionKey, s: &Session, t: &Timeouts, now_ns: u64) -> u64 {
    let deadline = s.last_seen_ns + timeout_secs(key, s, t) as u64 * NS;
    deadline.saturating_sub(now_ns) / NS
}

pub fn is_expired(key: &SessionKey, s: &Session, t: &Timeouts, now_ns: u64) -> bool {
    now_ns >= s.last_seen_ns + timeout_secs(key, s, t) as u64 * NS
}

/// The sweeper takes at most 1/SWEEP_DUTY of a CPU: a sweep reads every session, which at a
/// million sessions takes seconds. (It runs in a thread of its own, daemon/sweeps.rs: the
/// daemon's other work, signals, reloads, route changes, never waits for it.)
pub const SWEEP_DUTY: u32 = 10;

/// How long to wait before the next sweep, configured to run every `interval`, after one
/// that took `took`: the interval, or longer if the sweeps would otherwise take more than
/// their share of a CPU.
pub fn next_sweep_in(interval: Duration, took: Duration) -> Duration {
    interval.max(took * SWEEP_DUTY)
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub sessions_expired: usize,
    /// Mappings without sessions that new sessions can no longer take (the first step of a
    /// release; their ports cool a sweep later if no session took them meanwhile).
    pub mappings_detached: usize,
    /// Mappings whose ports started cooling.
    pub mappings_released: usize,
    pub ports_freed: usize,
    pub filters_removed: usize,
    pub vpn_state_expired: usize,
    pub orphans_removed: usize,
    /// Ports of removed forwards whose last session ended.
    pub forwards_purged: usize,
}

/// Resets the per-host mapping counts (the data path only counts up) to what MAPPINGS_OUT
/// holds, and the per-MAC ones likewise. The data path goes on counting while the table is
/// read: see `write_counts`.
fn recount_host_mappings(maps: &mut NatMaps) -> Result<()> {
    let before = (
        snapshot(&maps.host_mappings)?,
        snapshot(&maps.mac_mappings)?,
    );
    let mut counts: HashMap<u32, u32> = HashMap::new();
    let mut macs: HashMap<u64, u32> = HashMap::new();
    for (ep, m) in crate::state::entries(&maps.mappings_out)? {
        *counts.entry(ep.addr).or_default() += 1;
        if m.mac() != 0 {
            *macs.entry(m.mac()).or_default() += 1;
        }
    }
    write_counts(&mut maps.host_mappings, &before.0, counts)?;
    write_counts(&mut maps.mac_mappings, &before.1, macs)
}

/// The same for the per-host session counts (HOST_SESSIONS, MAC_SESSIONS): `live` holds the
/// owner (address, MAC) of every session the sweep read and kept, `before` the two maps'
/// values taken before it read them (the sweep's one read of SESSIONS, which at a million
/// sessions is most of its time).
fn recount_host_sessions(
    maps: &mut NatMaps,
    before: (HashMap<u32, u32>, HashMap<u64, u32>),
    live: &[(u32, u64)],
) -> Result<()> {
    let mut counts: HashMap<u32, u32> = HashMap::new();
    let mut macs: HashMap<u64, u32> = HashMap::new();
    for &(addr, mac) in live {
        *counts.entry(addr).or_default() += 1;
        if mac != 0 {
            *macs.entry(mac).or_default() += 1;
        }
    }
    write_counts(&mut maps.host_sessions, &before.0, counts)?;
    write_counts(&mut maps.mac_sessions, &before.1, macs)
}

/// A count map's values now, taken just before its table is read.
fn snapshot<K: aya::Pod + Eq + std::hash::Hash>(
    map: &aya::maps::HashMap<aya::maps::MapData, K, u32>,
) -> Result<HashMap<K, u32>> {
    Ok(crate::state::entries(map)?.into_iter().collect())
}

/// Makes a per-owner count map hold `counts`, what the table held when it was read, plus
/// what the data path counted up since `before` was taken: entries it made while the table
/// was read may be in `counts` already, and are then counted twice until the next sweep
/// (stricter for a moment), but none is lost (an owner could otherwise go over its share
/// by what it made during the read). Writes only what differs.
fn write_counts<K: aya::Pod + Eq + std::hash::Hash>(
    map: &mut aya::maps::HashMap<aya::maps::MapData, K, u32>,
    before: &HashMap<K, u32>,
    mut counts: HashMap<K, u32>,
) -> Result<()> {
    for (owner, now) in crate::state::entries(map)? {
        let since = now.saturating_sub(before.get(&owner).copied().unwrap_or(0));
        let want = counts.remove(&owner).unwrap_or(0).saturating_add(since);
        if want == 0 {
            let _ = map.remove(&owner);
        } else if want != now {
            map.insert(owner, want, 0)?;
        }
    }
    for (owner, n) in counts {
        map.insert(owner, n, 0)?;
    }
    Ok(())
}

/// The LAN endpoint a mapping belongs to.
fn mapping_endpoint(m: &Mapping) -> EndpointKey {
    EndpointKey {
        addr: m.int_addr,
        port: m.int_port,
        proto: m.proto,
        _pad: 0,
    }
}

/// The same for the per-host VPN state counts (HOST_VPN), from the tables the data path
/// counts into it: IKE SAs, outbound ESP SAs, learning windows, PPTP calls.
fn recount_host_vpn(maps: &mut NatMaps) -> Result<()> {
    let before = (snapshot(&maps.host_vpn)?, snapshot(&maps.mac_vpn)?);
    let mut counts: HashMap<u32, u32> = HashMap::new();
    let mut add = |host: u32| *counts.entry(host).or_default() += 1;
    for (_, o) in crate::state::entries(&maps.ike_sas)? {
        add(o.int_addr);
    }
    for (k, _) in crate::state::entries(&maps.esp_out)? {
        add(k.int_addr);
    }
    for (_, p) in crate::state::entries(&maps.esp_pending)? {
        add(p.int_addr);
    }
    for (k, _) in crate::state::entries(&maps.pptp_calls_out)? {
        add(k.int_addr);
    }
    // Per MAC: each address's count goes to the MAC its VPN state came from (HOST_MAC); an
    // address with none left is forgotten.
    let mut macs: HashMap<u64, u32> = HashMap::new();
    for (addr, mac) in crate::state::entries(&maps.host_mac)? {
        match counts.get(&addr) {
            Some(n) => *macs.entry(mac).or_default() += n,
            None => {
                let _ = maps.host_mac.remove(&addr);
            }
        }
    }
    write_counts(&mut maps.host_vpn, &before.0, counts)?;
    write_counts(&mut maps.mac_vpn, &before.1, macs)
}

/// IKE sessions on the shared external port 500 have no mapping of their own.
fn is_shared_ike(k: &SessionKey, s: &Session) -> bool {
    let ike = nat_common::passthrough::IKE_PORT.to_be();
    k.proto == nat_common::proto::IPPROTO_UDP
        && k.int_port == ike
        && k.rem_port == ike
        && s.ext_port == ike
}

fn older_than(last_seen_ns: u64, secs: u32, now_ns: u64) -> bool {
    now_ns >= last_seen_ns + secs as u64 * NS
}

/// PPTP calls (GRE timeout), IKE SAs (UDP timeout), raw-ESP bindings and learners.
fn sweep_vpn(maps: &mut NatMaps, t: &Timeouts, now_ns: u64) -> Result<usize> {
    let mut n = 0;
    for (k, c) in maps.pptp_calls()? {
        if older_than(c.last_seen_ns, GRE_TIMEOUT_SECS, now_ns) {
            n += usize::from(maps.pptp_calls_in.remove(&k).is_ok());
            let out = nat_common::maps::PptpClientKey {
                int_addr: c.int_addr,
                rem_addr: c.rem_addr,
                call_id: c.int_call_id,
                _pad: 0,
            };
            let _ = maps.pptp_calls_out.remove(&out);
        }
    }
    for (k, o) in maps.ike_sa_list()? {
        if older_than(o.last_seen_ns, t.udp, now_ns) {
            n += usize::from(maps.ike_sas.remove(&k).is_ok());
        }
    }
    for (k, o) in maps.esp_bindings()? {
        if older_than(o.last_seen_ns, ESP_TIMEOUT_SECS, now_ns) {
            n += usize::from(maps.esp_in.remove(&k).is_ok());
        }
    }
    let outs = crate::state::entries(&maps.esp_out)?;
    for (k, o) in outs {
        if older_than(o.last_seen_ns, ESP_TIMEOUT_SECS, now_ns) {
            n += usize::from(maps.esp_out.remove(&k).is_ok());
        }
    }
    expire_peer_ids(maps)?;
    for (host, q) in crate::state::entries(&maps.host_frags)? {
        if now_ns >= q.window_start_ns + FRAG_TIMEOUT_NS {
            let _ = maps.host_frags.remove(&host);
        }
    }
    expire_frags(&mut maps.frags, now_ns)?;
    expire_frags(&mut maps.frags_in, now_ns)?;
    // A window is kept through its host's cooldown: the data path reads it to tell.
    let pending = crate::state::entries(&maps.esp_pending)?;
    for (k, p) in pending {
        if now_ns >= p.started_ns + ESP_LEARN_COOLDOWN_NS {
            let _ = maps.esp_pending.remove(&k);
        }
    }
    for (k, seen) in crate::state::entries(&maps.router_ipsec_peers)? {
        if older_than(seen, ESP_TIMEOUT_SECS, now_ns) {
            let _ = maps.router_ipsec_peers.remove(&k);
        }
    }
    Ok(n)
}

/// Removes the peer ids (PEER_IDS) whose call or SA is gone.
fn expire_peer_ids(maps: &mut NatMaps) -> Result<()> {
    // Read first: an id remembered after the calls and SAs were read would be removed with
    // its call or SA still alive.
    let ids = crate::state::entries(&maps.peer_ids)?;
    let calls: HashSet<PptpClientKey> = crate::state::entries(&maps.pptp_calls_out)?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let sas: HashSet<EspKey> = crate::state::entries(&maps.esp_out)?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for (k, owner) in ids {
        let live = if k.proto == IPPROTO_GRE {
            calls.contains(&PptpClientKey {
                int_addr: owner.int_addr,
                rem_addr: k.rem_addr,
                call_id: owner.int_id as u16,
                _pad: 0,
            })
        } else {
            sas.contains(&EspKey {
                int_addr: owner.int_addr,
                rem_addr: k.rem_addr,
                spi: owner.int_id,
            })
        };
        if !live {
            let _ = maps.peer_ids.remove(&k);
        }
    }
    Ok(())
}

/// Removes the fragment entries (either direction's table) older than FRAG_TIMEOUT_NS.
fn expire_frags(
    frags: &mut aya::maps::HashMap<aya::maps::MapData, FragKey, FragEntry>,
    now_ns: u64,
) -> Result<()> {
    for (k, f) in crate::state::entries(frags)? {
        if now_ns >= f.created_ns + FRAG_TIMEOUT_NS {
            let _ = frags.remove(&k);
        }
    }
    Ok(())
}

pub fn sweep(maps: &mut NatMaps, t: &Timeouts, now_ns: u64) -> Result<SweepReport> {
    let mut report = SweepReport::default();
    let mut expired = Vec::new();
    // Where each endpoint's new sessions go (MAPPINGS_OUT), and which external ports still
    // take replies for an endpoint (active MAPPINGS_IN entries: attached ones, and ones
    // detached by an earlier sweep whose sessions still run).
    let ports: HashMap<EndpointKey, u16> = crate::state::entries(&maps.mappings_out)?
        .into_iter()
        .map(|(ep, m)| (ep, m.ext_port))
        .collect();
    let mappings = maps.mappings()?;
    let reply_ports: HashSet<(EndpointKey, u16)> = mappings
        .iter()
        .filter(|(_, m)| m.state == MAPPING_ACTIVE)
        .map(|(_, m)| (mapping_endpoint(m), m.ext_port))
        .collect();
    let grace_ns = MAPPING_GRACE_SECS as u64 * NS;
    // Taken before SESSIONS is read, for the recount of the per-host session counts.
    let session_counts = (
        snapshot(&maps.host_sessions)?,
        snapshot(&maps.mac_sessions)?,
    );
    let sessions = maps.sessions()?;
    // The owner (address, MAC) of every session that stays.
    let mut live: Vec<(u32, u64)> = Vec::with_capacity(sessions.len());
    let mut live_ports: HashSet<(EndpointKey, u16)> = HashSet::with_capacity(sessions.len());
    let mut live_filters: HashSet<SessionKey> = HashSet::with_capacity(sessions.len());
    // The external ports forwarded sessions still use: a removed forward stays until then.
    let mut live_forwarded: HashSet<(u8, u16)> = HashSet::new();
    for (k, s) in &sessions {
        // The data path trusts a session's external port without looking at the mapping; a
        // session whose port takes no replies for its endpoint any more is removed here, and
        // the endpoint's next packet gets a fresh mapping.
        // A port forward's sessions have no mapping: they run until they expire, even when
        // their forward is removed (only its new flows stop).
        let orphan = !is_shared_ike(k, s)
            && s.origin != nat_common::maps::SESSION_FORWARDED
            && !reply_ports.contains(&(k.endpoint(), s.ext_port))
            && now_ns >= s.created_ns + grace_ns;
        if orphan {
            report.orphans_removed += usize::from(maps.remove_session(k));
        } else if is_expired(k, s, t, now_ns) {
            expired.push(*k);
        } else {
            live.push((k.int_addr, s.lan_mac));
            live_ports.insert((k.endpoint(), s.ext_port));
            live_filters.insert(k.filter_key());
            if s.origin == nat_common::maps::SESSION_FORWARDED {
                live_forwarded.insert((k.proto, u16::from_be(s.ext_port)));
            }
        }
    }
    for k in &expired {
        // A concurrent delete by `flush` is fine.
        if maps.remove_session(k) {
            report.sessions_expired += 1;
        }
    }
    report.forwards_purged = crate::forwards::purge_retired(maps, &live_forwarded)?;

    // A mapping without sessions is released in two sweeps, because a CPU may create a
    // session on it while this one runs (after the sessions above were read). First it is
    // detached: MAPPINGS_OUT forgets it, so no new session can take it, while its port keeps
    // taking replies. A sweep later every session that took it is in the table; only if none
    // is live does the port cool. Until then it serves the sessions that have it.
    let cooling = PORT_REUSE_DELAY_SECS as u64 * NS;
    for (ext, mut m) in mappings {
        let ep = mapping_endpoint(&m);
        match m.state {
            MAPPING_ACTIVE
                if !live_ports.contains(&(ep, m.ext_port)) && now_ns >= m.created_ns + grace_ns =>
            {
                if ports.get(&ep) == Some(&m.ext_port) {
                    if let Ok(cur) = maps.mappings_out.get(&ep, 0) {
                        if cur.ext_port == m.ext_port {
                            let _ = maps.mappings_out.remove(&ep);
                        }
                    }
                    report.mappings_detached += 1;
                } else {
                    // Cool the external side: no CPU can claim the port while it cools.
                    m.state = MAPPING_COOLING;
                    m.released_ns = now_ns;
                    maps.mappings_in.insert(ext, m, 0)?;
                    report.mappings_released += 1;
                }
            }
            MAPPING_COOLING if now_ns >= m.released_ns + cooling => {
                let _ = maps.mappings_in.remove(&ext);
                report.ports_freed += 1;
            }
            _ => {}
        }
    }

    let filters: Vec<SessionKey> = crate::state::entries(&maps.filters)?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for f in filters {
        if !live_filters.contains(&f) && maps.filters.remove(&f).is_ok() {
            report.filters_removed += 1;
        }
    }
    recount_host_mappings(maps)?;
    recount_host_sessions(maps, session_counts, &live)?;
    report.vpn_state_expired = sweep_vpn(maps, t, now_ns)?;
    recount_host_vpn(maps)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nat_common::proto::IPPROTO_UDP;
    use nat_common::tcp_state::{SYN_IN, SYN_OUT};

    fn key(proto: u8) -> SessionKey {
        SessionKey {
            proto,
            ..Default::default()
        }
    }

    #[test]
    fn timeouts_by_protocol_and_state() {
        let t = Timeouts::DEFAULT;
        let est = Session {
            tcp_state: SYN_OUT | SYN_IN,
            ..Default::default()
        };
        let syn = Session {
            tcp_state: SYN_OUT,
            ..Default::default()
        };
        assert_eq!(timeout_secs(&key(IPPROTO_TCP), &est, &t), 7440);
        assert_eq!(timeout_secs(&key(IPPROTO_TCP), &syn, &t), 240);
        assert_eq!(timeout_secs(&key(IPPROTO_UDP), &syn, &t), 300);
        assert_eq!(timeout_secs(&key(IPPROTO_ICMP), &syn, &t), 60);
    }

    #[test]
    fn a_slow_sweep_pushes_the_next_one_back() {
        let every = Duration::from_secs(2);
        assert_eq!(next_sweep_in(every, Duration::from_millis(100)), every);
        assert_eq!(
            next_sweep_in(every, Duration::from_millis(1500)),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn expiry_boundary() {
        let t = Timeouts::DEFAULT;
        let s = Session {
            last_seen_ns: 10 * NS,
            ..Default::default()
        };
        let k = key(IPPROTO_UDP);
        assert!(!is_expired(&k, &s, &t, 309 * NS));
        assert_eq!(remaining_secs(&k, &s, &t, 309 * NS), 1);
        assert!(is_expired(&k, &s, &t, 310 * NS));
        assert_eq!(remaining_secs(&k, &s, &t, 400 * NS), 0);
    }
}
