//! Expiry, run by the daemon every few seconds: sessions past their timeout go, a mapping
//! with no session left is detached and, a walk later, released into the 120 s cooling
//! period (RFC 6888 REQ-8), a cooled external port is freed, and filter entries without a
//! session go. The sessions and filters are walked inside the kernel (nat_common::expiry);
//! what is left here reads tables the size of the mappings and the hosts. On a large table
//! most sweeps only check the sessions the last walk listed as due (`Schedule`).

use anyhow::{Context as _, Result};
use nat_common::{
    config::{
        ESP_LEARN_COOLDOWN_NS, ESP_TIMEOUT_SECS, FRAG_TIMEOUT_NS, GRE_TIMEOUT_SECS,
        MAPPING_GRACE_SECS, NatConfig, PORT_REUSE_DELAY_SECS, Timeouts,
    },
    expiry::{SWEEP_DUE, SWEEP_WALK, SweepWalk},
    maps::{
        EndpointKey, EspKey, FragEntry, FragKey, MAPPING_ACTIVE, MAPPING_COOLING, Mapping,
        PptpClientKey,
    },
    ports::taken_bit,
    proto::IPPROTO_GRE,
};
// foldhash is several times faster than std's SipHash, and seeded per process like it.
use foldhash::{HashMap, HashMapExt as _, HashSet};
use std::time::{Duration, Instant};

use crate::state::NatMaps;

const NS: u64 = 1_000_000_000;

pub use nat_common::expiry::{is_expired, remaining_secs, timeout_secs};

/// The sweeper takes at most 1/SWEEP_DUTY of a CPU (5%): when every sweep has to walk the
/// whole table (`Schedule`: the list of due sessions overflowed, or the shortest timeout
/// leaves no room between walks), about 0.25 us per session here (a cache and TLB miss),
/// the interval stretches, and walks are never closer than SWEEP_DUTY times their length
/// (`walk_period`). (It runs in a thread of its own, daemon/sweeps.rs: the daemon's
/// other work, signals, reloads, route changes, never waits for it.)
pub const SWEEP_DUTY: u32 = 20;

/// Walks of the whole table take at most 1/FULL_WALK_DUTY of a CPU (2.5%) where the
/// timeouts allow: the next walk runs FULL_WALK_DUTY times the last one's length later, and
/// the sweeps in between are due checks (`Schedule`).
pub const FULL_WALK_DUTY: u32 = 40;

/// When every sweep walks (a small table), the walks take in the filter entries in one walk
/// of FILTER_WALK_EVERY (the first included): a walk of the filter table costs about what
/// the walk of the sessions does. When walks are further apart than the interval, every
/// walk takes them in (their cost lengthens the walk, and so its period: the share of a CPU
/// stays the same). A filter entry goes within FILTER_WALK_EVERY sweeps, or one walk, of its
/// LAN endpoint's last session with its remote host; until then it lets that host's other
/// ports reach the endpoint (its mapping, or its next one), and it fills a slot of FILTERS,
/// whose size is the session table's: with that table nearly full and turning over fast, a
/// new session may find no room for its entry, and then only replies from its own remote
/// port get in.
pub const FILTER_WALK_EVERY: u32 = 4;

/// Whether the daemon's walk number `n` (from 0) walks the filter entries.
pub fn walks_filters(n: u64) -> bool {
    n.is_multiple_of(u64::from(FILTER_WALK_EVERY))
}

/// How long to wait before the next sweep, configured to run every `interval`, after one
/// that took `took`: the interval, or longer if the sweeps would otherwise take more than
/// their share of a CPU.
pub fn next_sweep_in(interval: Duration, took: Duration) -> Duration {
    interval.max(took * SWEEP_DUTY)
}

/// How long after a walk that took `took` the next walk runs, sweeping every `interval` with
/// timeouts `t`: FULL_WALK_DUTY times its length, at least an interval, and at most the
/// shortest timeout less an interval (`latest_walk_period`), unless walks that often would
/// take more than 1/SWEEP_DUTY of a CPU.
pub fn walk_period(interval: Duration, took: Duration, t: &Timeouts) -> Duration {
    (took * FULL_WALK_DUTY)
        .min(latest_walk_period(interval, t))
        .max(interval)
        .max(took * SWEEP_DUTY)
}

/// The share of the list of due sessions (EXPIRING) a walk plans to fill: walks are planned
/// closer together when the last one found so many sessions due per second that the list
/// would fill beyond this before the next (`fit_to_list`).
pub const LIST_FILL: f64 = 0.6;

/// The sessions a walk removes after its pass take at most 1/REMOVALS_SHARE of the list
/// (`SweepWalk::removals_max`): with LIST_FILL, the live due ones keep their room.
pub const REMOVALS_SHARE: u32 = 4;

/// `period` between walks, shortened so that the sessions falling due before the next walk
/// and an interval past it, at `due_per_sec` (what the last walk found), fill no more than
/// LIST_FILL of the list's `slots`: on a large table whose deadlines crowd together the list
/// would otherwise overflow, and every sweep would walk. Never below an interval (the list
/// may still overflow then; every sweep walks).
pub fn fit_to_list(period: Duration, interval: Duration, due_per_sec: f64, slots: u32) -> Duration {
    // (Nothing known, or no number: as planned.)
    if due_per_sec.is_nan() || due_per_sec <= 0.0 {
        return period;
    }
    let Ok(fits) = Duration::try_from_secs_f64(LIST_FILL * f64::from(slots) / due_per_sec) else {
        return period;
    };
    period.min(fits.saturating_sub(interval)).max(interval)
}

/// The longest period between walks at which every session still goes in the first sweep
/// past its deadline: the shortest timeout less an interval. A session made (or whose TCP
/// state shortened its timeout) after a walk is due no sooner than that timeout after its
/// packet, by when the next walk has run and listed it, so the sweeps in between may look
/// at the listed sessions only. A table so large that a walk takes more than 1/SWEEP_DUTY of
/// this (3 s with the default 60 s ICMP timeout, about ten million sessions here) is walked
/// less often, and sessions made between walks may go up to the difference late.
pub fn latest_walk_period(interval: Duration, t: &Timeouts) -> Duration {
    let shortest = t
        .udp
        .min(t.tcp_established)
        .min(t.tcp_transitory)
        .min(t.icmp);
    Duration::from_secs(shortest.into()).saturating_sub(interval)
}

/// The daemon's sweeps, every interval: each is either a walk of the whole table
/// (`sweep_with`), which lists the live sessions due before the walk after it, or a due check
/// of that list (`sweep_due`). A walk runs when `walk_period` says, and at once when there is
/// no list to trust or counts to mend: the first sweep, the timeouts changed (a reload), the
/// last walk failed or had no room to list every due session, or nat-ctl removed sessions
/// beside the sweeper (`NatConfig::sessions_removed_gen`: a flush, a passthrough switched
/// off, whose hosts' session counts only a walk lowers).
#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    last: Option<LastWalk>,
    /// Walks done: when every sweep walks, one in FILTER_WALK_EVERY takes in the filter
    /// entries too (a walk that failed is tried again as it was).
    walks: u64,
    /// How long the last walk's sweep took, from which the next one's period is planned.
    took: Duration,
    /// Whether the log said the list overflowed, or that walks run late.
    told_overflow: bool,
    told_late: bool,
    /// The least a walk is taken to cost (`assume_walks_take`).
    at_least: Duration,
    /// Live sessions the last walk found due per second of what it listed (0: none yet).
    due_per_sec: f64,
    /// Whether the last walk's list overflowed (every sweep walks until it does not).
    overflowed: bool,
    /// Whether the last walk took in the filter entries.
    filtered: bool,
}

/// What the sweeps after a walk go by.
#[derive(Debug, Clone, Copy)]
struct LastWalk {
    began_ns: u64,
    /// When the next walk runs: the first sweep at or past it walks.
    next_ns: u64,
    /// The timeouts the list was made with, and the sessions_removed_gen it saw.
    timeouts: Timeouts,
    removed_gen: u32,
    listed: u32,
    sessions: u64,
}

impl Schedule {
    pub fn new(interval: Duration) -> Schedule {
        Schedule {
            interval,
            last: None,
            walks: 0,
            took: Duration::ZERO,
            told_overflow: false,
            told_late: false,
            at_least: Duration::ZERO,
            due_per_sec: 0.0,
            overflowed: false,
            filtered: false,
        }
    }

    /// Plans the walks as if each took at least `d`, as they do on a table of millions: how
    /// the tests reach the due checks on a small one.
    pub fn assume_walks_take(mut self, d: Duration) -> Schedule {
        self.at_least = d;
        self
    }

    /// Whether the sweep at `now_ns`, under `cfg`, walks the whole table.
    pub fn walks(&self, now_ns: u64, cfg: &NatConfig) -> bool {
        !self.last.is_some_and(|l| {
            l.timeouts == cfg.timeouts
                && l.removed_gen == cfg.sessions_removed_gen
                && now_ns < l.next_ns
        })
    }

    /// Runs the sweep at `now_ns`, under `cfg` (its timeouts, and whether sessions were
    /// removed beside the sweeper).
    pub fn sweep(
        &mut self,
        maps: &mut NatMaps,
        cfg: &NatConfig,
        now_ns: u64,
    ) -> Result<SweepReport> {
        let t = &cfg.timeouts;
        if !self.walks(now_ns, cfg) {
            let last = self.last.expect("a due check follows a walk");
            return sweep_due(maps, t, now_ns, &last);
        }
        let start = Instant::now();
        // What the next walk will cost: the last one's, twice that when the last left out the
        // filter entries (their pass costs about what the sessions' does), which every walk
        // takes in once due checks come between walks.
        let took = if self.filtered {
            self.took
        } else {
            self.took * 2
        };
        // Closer together if the list would overflow, but never above 1/SWEEP_DUTY of a CPU
        // (the list then overflows, and the next sweep walks).
        let period = fit_to_list(
            walk_period(self.interval, took, t),
            self.interval,
            self.due_per_sec,
            maps.expiring.len(),
        )
        .max(took * SWEEP_DUTY);
        let latest = latest_walk_period(self.interval, t);
        if period > latest.max(self.interval) && !self.told_late {
            log::warn!(
                "a walk of the session table takes {took:.1?}: walking every {period:.0?}, more than the {latest:.0?} the shortest timeout allows, to stay under 1/{SWEEP_DUTY} of a CPU; sessions made between walks may expire up to {:.0?} late",
                period - latest
            );
            self.told_late = true;
        }
        let next_ns = now_ns + period.as_nanos() as u64;
        // Listed: due before the next walk, and an interval past it, for a walk that runs late.
        let list_before_ns = next_ns + self.interval.as_nanos() as u64;
        // Every walk takes in the filter entries when due checks come between walks; when
        // every sweep walks (a small table, or a list that overflowed), one in
        // FILTER_WALK_EVERY.
        let filters = walks_filters(self.walks) || (period > self.interval && !self.overflowed);
        self.last = None;
        let (report, w) = walk(maps, t, now_ns, filters, list_before_ns)?;
        self.walks += 1;
        self.took = start.elapsed().max(self.at_least);
        self.filtered = filters;
        self.due_per_sec = w.due as f64 / ((list_before_ns - now_ns) as f64 / 1e9);
        self.overflowed = w.list_lost > 0 || w.removals > w.removals_max;
        if self.overflowed {
            if !self.told_overflow {
                log::info!(
                    "{} sessions were due before the next walk and {} to remove, more than the list of due sessions holds ({}): walking again at the next sweep, and closer together from then on",
                    w.due,
                    w.removals,
                    maps.expiring.len()
                );
                self.told_overflow = true;
            }
        } else {
            self.last = Some(LastWalk {
                began_ns: now_ns,
                next_ns,
                timeouts: *t,
                removed_gen: cfg.sessions_removed_gen,
                listed: w.listed,
                sessions: w.sessions,
            });
        }
        Ok(report)
    }

    /// How long after the start of the sweep at `now_ns`, which took `took`, the next one
    /// begins: an interval, stretched (`next_sweep_in`) when it will walk again.
    pub fn next_in(&self, now_ns: u64, took: Duration) -> Duration {
        let walks_next = self
            .last
            .is_none_or(|l| l.next_ns <= now_ns + self.interval.as_nanos() as u64);
        if walks_next {
            next_sweep_in(self.interval, took)
        } else {
            self.interval
        }
    }
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

/// The same for the per-host session counts (HOST_SESSIONS, MAC_SESSIONS), from the live
/// sessions the walk counted per host and MAC (HOST_LIVE, MAC_LIVE, emptied here); `before`
/// holds the two maps' values taken before the walk. When the walk had no room to count
/// them all (`complete` false) the counts stay as they are.
fn recount_host_sessions(
    maps: &mut NatMaps,
    before: (HashMap<u32, u32>, HashMap<u64, u32>),
    complete: bool,
) -> Result<()> {
    let counts = drain(&mut maps.host_live)?;
    let macs = drain(&mut maps.mac_live)?;
    if !complete {
        log::warn!("the sweeper's walk could not count every host's sessions; counts kept");
        return Ok(());
    }
    write_counts(&mut maps.host_sessions, &before.0, counts)?;
    write_counts(&mut maps.mac_sessions, &before.1, macs)
}

/// Every entry of a count map, which is left empty.
fn drain<K: aya::Pod + Eq + std::hash::Hash>(
    map: &mut aya::maps::HashMap<aya::maps::MapData, K, u32>,
) -> Result<HashMap<K, u32>> {
    let all = crate::state::entries(map)?;
    for (k, _) in &all {
        crate::state::removed(map.remove(k))?;
    }
    Ok(all.into_iter().collect())
}

/// Rewrites PORTS_TAKEN from the tables: the ports mappings hold (MAPPINGS_IN), and those live
/// sessions use (PORTS_LIVE, as the last walk left it: a DMZ session's port stays out of the
/// draws while it lives). Each sweep does the same from what it read; the daemon's sweeper
/// calls this after a sweep that failed, which may have freed ports first.
pub fn rewrite_ports_taken(maps: &mut NatMaps) -> Result<()> {
    let held = maps.mapping_keys()?;
    let live = ports_live(maps)?;
    maps.write_ports_taken_with(&held, &live)
}

/// PORTS_LIVE as the walk left it: a bit per external port a live session uses.
fn ports_live(maps: &NatMaps) -> Result<Vec<u64>> {
    (0..nat_common::expiry::PORTS_LIVE_WORDS)
        .map(|w| maps.ports_live.get(&w, 0).context("reading PORTS_LIVE"))
        .collect()
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

/// A sweep that walks the whole table and the filter entries too.
pub fn sweep(maps: &mut NatMaps, t: &Timeouts, now_ns: u64) -> Result<SweepReport> {
    sweep_with(maps, t, now_ns, true)
}

/// A sweep that walks the whole table (and lists nothing); `filters`: walk the filter entries
/// too (`FILTER_WALK_EVERY`).
pub fn sweep_with(
    maps: &mut NatMaps,
    t: &Timeouts,
    now_ns: u64,
    filters: bool,
) -> Result<SweepReport> {
    Ok(walk(maps, t, now_ns, filters, 0)?.0)
}

/// A due check: the sessions of the last walk's list whose deadline has come go if they are
/// still idle (the walk's other work waits for the next walk), and VPN state expires.
fn sweep_due(
    maps: &mut NatMaps,
    t: &Timeouts,
    now_ns: u64,
    last: &LastWalk,
) -> Result<SweepReport> {
    let w = maps.walk_sessions(&SweepWalk {
        kind: SWEEP_DUE,
        now_ns,
        timeouts: *t,
        listed: last.listed,
        walk_ns: last.began_ns,
        sessions: last.sessions,
        ..Default::default()
    })?;
    if w.failed > 0 {
        log::warn!(
            "{} deletes failed in the sweeper's due check; the next sweep tries again",
            w.failed
        );
    }
    let vpn_state_expired = sweep_vpn(maps, t, now_ns)?;
    recount_host_vpn(maps)?;
    Ok(SweepReport {
        sessions_expired: w.expired as usize,
        // Left listed by a walk whose delete failed.
        orphans_removed: w.orphans as usize,
        vpn_state_expired,
        ..Default::default()
    })
}

/// A walk of the whole table, listing the live sessions due before `list_before_ns` (0: none);
/// gives the walk's results with the report.
fn walk(
    maps: &mut NatMaps,
    t: &Timeouts,
    now_ns: u64,
    filters: bool,
    list_before_ns: u64,
) -> Result<(SweepReport, SweepWalk)> {
    let mut report = SweepReport::default();
    // Where each endpoint's new sessions go (MAPPINGS_OUT), and the mappings as they are
    // before the walk reads the sessions.
    let ports: HashMap<EndpointKey, u16> = crate::state::entries(&maps.mappings_out)?
        .into_iter()
        .map(|(ep, m)| (ep, m.ext_port))
        .collect();
    let mappings = maps.mappings()?;
    let grace_ns = MAPPING_GRACE_SECS as u64 * NS;
    // Taken before the walk counts the live sessions, for the per-host session counts.
    let session_counts = (
        snapshot(&maps.host_sessions)?,
        snapshot(&maps.mac_sessions)?,
    );
    // The walk (nat_common::expiry) removes orphans, expired sessions and (with `filters`)
    // the filter entries no live session needs, and leaves the ports and owners of the live
    // ones.
    let filter_bits = if filters {
        (maps.filters_live.len() * 64).trailing_zeros()
    } else {
        0
    };
    // Emptied after every walk; a sweep that failed after its walk may have left counts.
    crate::state::clear(&mut maps.host_live)?;
    crate::state::clear(&mut maps.mac_live)?;
    let walk = maps.walk_sessions(&SweepWalk {
        kind: SWEEP_WALK,
        now_ns,
        walk_ns: now_ns,
        orphan_before_ns: now_ns.saturating_sub(grace_ns),
        timeouts: *t,
        filter_seed: rand::random(),
        filter_bits,
        list_before_ns,
        removals_max: maps.expiring.len() / REMOVALS_SHARE,
        ..Default::default()
    })?;
    report.sessions_expired = walk.expired as usize;
    report.orphans_removed = walk.orphans as usize;
    report.filters_removed = walk.filters_removed as usize;
    if walk.failed > 0 {
        log::warn!(
            "{} deletes failed in the sweeper's walk; the next sweep tries again",
            walk.failed
        );
    }
    let live = ports_live(maps)?;
    // Does a live session use external `port` (host order) of `proto`?
    let is_live = |proto: u8, port: u16| {
        taken_bit(proto, port).is_some_and(|(w, b)| live[w as usize] & b != 0)
    };
    // The external ports forwarded sessions still use: a removed forward stays until then.
    report.forwards_purged = crate::forwards::purge_retired(maps, is_live)?;

    // A mapping without sessions is released in two sweeps, because a CPU may create a
    // session on it while this one runs (after the walk went past). First it is
    // detached: MAPPINGS_OUT forgets it, so no new session can take it, while its port keeps
    // taking replies. A sweep later every session that took it is in the table; only if none
    // is live does the port cool. Until then it serves the sessions that have it.
    let cooling = PORT_REUSE_DELAY_SECS as u64 * NS;
    // The external ports mappings hold after this sweep.
    let mut held = Vec::with_capacity(mappings.len());
    for (ext, mut m) in mappings {
        let ep = mapping_endpoint(&m);
        match m.state {
            MAPPING_ACTIVE
                if !is_live(m.proto, u16::from_be(m.ext_port))
                    && now_ns >= m.created_ns + grace_ns =>
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
                    // A cooling port takes nothing in: no remote host to remember (the
                    // copy read before the walk may still have one the walk forgot).
                    m.first_remote = 0;
                    maps.mappings_in.insert(ext, m, 0)?;
                    report.mappings_released += 1;
                }
            }
            MAPPING_COOLING if now_ns >= m.released_ns + cooling => {
                let _ = maps.mappings_in.remove(&ext);
                report.ports_freed += 1;
                continue;
            }
            _ => {}
        }
        held.push(ext);
    }
    // The taken ports as they are now: freed ones clear, a DMZ session's that ended clear,
    // a live one's set. (A mapping made since the mappings were read may lose its bit: a
    // clear bit only means "try", MAPPINGS_IN still decides.)
    maps.write_ports_taken_with(&held, &live)?;

    recount_host_mappings(maps)?;
    recount_host_sessions(maps, session_counts, walk.counts_lost == 0)?;
    report.vpn_state_expired = sweep_vpn(maps, t, now_ns)?;
    recount_host_vpn(maps)?;
    Ok((report, walk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_walk_in_four_walks_the_filters_the_first_included() {
        let walked: Vec<u64> = (0..9).filter(|n| walks_filters(*n)).collect();
        assert_eq!(walked, [0, 4, 8]);
    }

    #[test]
    fn walks_are_planned_from_their_cost_within_the_shortest_timeout() {
        let every = Duration::from_secs(2);
        let t = Timeouts::DEFAULT;
        let ms = Duration::from_millis;
        // Quick walks: every sweep walks.
        assert_eq!(walk_period(every, ms(10), &t), every);
        // A million sessions: 40 times the walk.
        assert_eq!(walk_period(every, ms(300), &t), Duration::from_secs(12));
        // Never later than the shortest timeout (ICMP's 60 s) less an interval...
        assert_eq!(walk_period(every, ms(2000), &t), Duration::from_secs(58));
        // ... unless walks that often would take more than 1/20 of a CPU.
        assert_eq!(walk_period(every, ms(5000), &t), Duration::from_secs(100));
        let short = Timeouts {
            tcp_transitory: 3,
            ..t
        };
        assert_eq!(walk_period(every, ms(50), &short), every);
    }

    #[test]
    fn walks_come_closer_when_the_list_would_overflow() {
        let every = Duration::from_secs(2);
        let secs = Duration::from_secs;
        // Nothing known yet: as planned.
        assert_eq!(fit_to_list(secs(40), every, 0.0, 4096), secs(40));
        // 100 due a second, 4096 slots: 24.576 s of them fill 60%, less an interval.
        assert_eq!(
            fit_to_list(secs(40), every, 100.0, 4096),
            Duration::from_secs_f64(22.576)
        );
        // Room enough: as planned.
        assert_eq!(fit_to_list(secs(10), every, 100.0, 4096), secs(10));
        // Never below an interval.
        assert_eq!(fit_to_list(secs(40), every, 1e6, 4096), every);
    }

    #[test]
    fn a_slow_sweep_pushes_the_next_one_back() {
        let every = Duration::from_secs(2);
        assert_eq!(next_sweep_in(every, Duration::from_millis(100)), every);
        assert_eq!(
            next_sweep_in(every, Duration::from_millis(1500)),
            Duration::from_secs(30)
        );
    }
}
