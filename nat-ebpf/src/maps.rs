//! Every map of the object, in one place. Capacities are defaults: nat-ctl sets the real
//! ones at load time (EbpfLoader::map_max_entries) and pins the maps under
//! /sys/fs/bpf/<instance>/ so that a restarted daemon adopts them.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use nat_common::{
    config::NatConfig,
    counters::{Counter, NUM_COUNTERS},
    expiry::{self, Expiring, PORT_OWNER_SLOTS, PORTS_LIVE_WORDS, SweepWalk},
    flow_cache::{self, CachedFlow, HopSlot},
    maps::{
        DEFAULT_MAX_ESP_SPIS, DEFAULT_MAX_FRAGS, DEFAULT_MAX_IKE_SAS, DEFAULT_MAX_MAPPINGS,
        DEFAULT_MAX_PPTP_CALLS, DEFAULT_MAX_SESSIONS, EndpointKey, EspKey, EspLearner, ExternalKey,
        FORWARD_HINT_WORDS, Forward, FragEntry, FragKey, FragQuota, IkeKey, MAX_DEVICES,
        MAX_ESP_PENDING, MAX_FORWARD_PORTS, MAX_LAN_PREFIXES, MAX_PEER_IDS, MAX_QUOTA_HOSTS,
        MAX_ROUTER_IPSEC_PEERS, Mapping, Owner, PeerId, PeerIdKey, PptpCall, PptpCallKey,
        PptpClientKey, Session, SessionKey,
    },
    passthrough::{NUM_SWITCHES, SWITCH_ON, switch_slot},
    ports::{POOL_BITMAP_WORDS, PORTS_TAKEN_WORDS, pool_bit},
};

/// The per-host and per-MAC count maps take memory only for the hosts they hold (a
/// preallocated table would take its whole size, about 5 MiB each, for a handful of
/// hosts); they are written when state is created, never per packet.
const QUOTA_MAP_FLAGS: u32 = BPF_F_NO_PREALLOC;

/// Slot 0: the runtime configuration written by nat-ctl.
#[map]
pub static CONFIG: Array<NatConfig> = Array::with_max_entries(1, 0);

/// Internal endpoint -> mapping (endpoint-independent mapping).
#[map]
pub static MAPPINGS_OUT: HashMap<EndpointKey, Mapping> =
    HashMap::with_max_entries(DEFAULT_MAX_MAPPINGS, 0);

/// External port/id -> mapping. A BPF_NOEXIST insert here is how a CPU claims a port.
#[map]
pub static MAPPINGS_IN: HashMap<ExternalKey, Mapping> =
    HashMap::with_max_entries(DEFAULT_MAX_MAPPINGS, 0);

/// Mapping + remote endpoint -> session state.
#[map]
pub static SESSIONS: HashMap<SessionKey, Session> =
    HashMap::with_max_entries(DEFAULT_MAX_SESSIONS, 0);

/// The flow cache (nat_common::flow_cache) of LAN->WAN flows: what the fast path needs of a
/// session, 32 bytes per flow. Sized by nat-ctl to the session table.
#[map]
pub static FLOWS_OUT: Array<CachedFlow> =
    Array::with_max_entries(flow_cache::entries_for(DEFAULT_MAX_SESSIONS), FLOWS_FLAGS);

/// The flow cache of replies (WAN->LAN): remote endpoint and external port (`ReplyKey`).
#[map]
pub static FLOWS_IN: Array<CachedFlow> =
    Array::with_max_entries(flow_cache::entries_for(DEFAULT_MAX_SESSIONS), FLOWS_FLAGS);

/// Next hops of the cached flows, each once, in the slot its tag picks (flow_cache::hop_slot),
/// with when a FIB lookup last gave each (`HopSlot::checked`).
#[map]
pub static FLOW_HOPS: Array<HopSlot> = Array::with_max_entries(flow_cache::HOP_SLOTS, FLOWS_FLAGS);

/// A plain array's values start 312 bytes into its allocation (after struct bpf_array, on
/// 6.x kernels), so a set of four 32-byte flow entries would straddle a pair of cache lines,
/// and a 32-byte hop slot (its hop and stamp) two lines; an mmapable array's values start on
/// a page. Nothing maps these: the flag is for the alignment.
const FLOWS_FLAGS: u32 = BPF_F_MMAPABLE;

/// Mapping + remote address (port 0) -> creation time: the remote hosts a mapping has sent
/// to, for address-dependent filtering.
#[map]
pub static FILTERS: HashMap<SessionKey, u64> = HashMap::with_max_entries(DEFAULT_MAX_SESSIONS, 0);

/// The ports a mapping may draw at random, a bit each (ports::pool_bit): the pool, less the
/// forwarded ports (NatConfig::priv_pool_len / pool_len count them; pool_first / pool_last
/// bound the ordinary part).
#[map]
pub static PORT_POOL: Array<u64> = Array::with_max_entries(POOL_BITMAP_WORDS, 0);

/// The external ports mappings (and live DMZ sessions) hold, a bit each
/// (nat_common::ports::taken_bit): set by the CPU that claims one (or makes the DMZ session),
/// rewritten by every walk of the sweeper from MAPPINGS_IN and the ports it found live
/// sessions on.
#[map]
pub static PORTS_TAKEN: Array<u64> = Array::with_max_entries(PORTS_TAKEN_WORDS, 0);

/// One bit per port (ports::pool_bit): 1 when the NAT owns it, 0 when it belongs to the
/// router itself.
#[map]
pub static PORT_IN_POOL: Array<u64> = Array::with_max_entries(POOL_BITMAP_WORDS, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

/// ifindex -> ifindex for bpf_redirect_map.
#[map]
pub static DEVMAP: DevMapHash = DevMapHash::with_max_entries(MAX_DEVICES, 0);

/// Per CPU, per counter: when a drop of that reason was last logged at info (`log_due`).
#[map]
pub static LOGGED_AT: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

/// When this CPU's current second of refusal errors began, and how many it sent
/// (refuse.rs); not pinned.
#[map]
pub static REFUSALS_SENT: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// The mapping the last packet on this CPU made (`state::made_tag`), until a session of
/// that packet takes it: tells that session it is its mapping's first, whose remote host the
/// mapping keeps (`state::remember_remote`); not pinned.
#[map]
pub static MAPPING_MADE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Whether a drop for `reason` may be logged now: at most once a second per CPU.
#[inline(always)]
pub fn log_due(reason: Counter) -> bool {
    let Some(last) = LOGGED_AT.get_ptr_mut(reason as u32) else {
        return false;
    };
    let now = now();
    // SAFETY: per-CPU slot, only this CPU writes it while we run.
    let last = unsafe { &mut *last };
    if *last != 0 && now.wrapping_sub(*last) < LOG_INTERVAL_NS {
        return false;
    }
    *last = now;
    true
}

const LOG_INTERVAL_NS: u64 = 1_000_000_000;

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *slot += 1 };
    }
}

/// Now, on CLOCK_MONOTONIC (the sweeper's clock), to the last timer tick.
// bpf_ktime_get_ns reads the clocksource (a paravirtual TSC read in a VM, a visible share
// of a packet's cost); every timeout here is in seconds, so tick resolution is plenty.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: no arguments, no preconditions.
    unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
pub fn config() -> Option<&'static NatConfig> {
    CONFIG.get(0)
}

/// Is `port` (wire order) one the NAT hands out, rather than the router's own?
#[inline(always)]
pub fn port_in_pool(port: u16) -> bool {
    has_port(&PORT_IN_POOL, port)
}

/// Does port bitmap `map` (PORT_IN_POOL, PORT_POOL: ports::pool_bit) have `port` (wire
/// order)?
#[inline(always)]
pub fn has_port(map: &Array<u64>, port: u16) -> bool {
    let (word, bit) = pool_bit(u16::from_be(port));
    map.get(word).is_some_and(|w| w & bit != 0)
}

/// (server, the id it chose: PPTP call id or outbound SPI) -> the LAN host sending it, for
/// ICMP errors that quote such packets. An LRU: LAN hosts fill it, and losing an entry only
/// leaves an error to the router.
#[map]
pub static PEER_IDS: LruHashMap<PeerIdKey, PeerId> = LruHashMap::with_max_entries(MAX_PEER_IDS, 0);

/// Passthrough switches, slot = class - 1 (nat_common::passthrough); 1 = on.
#[map]
pub static PASSTHROUGH: Array<u32> = Array::with_max_entries(NUM_SWITCHES, 0);

/// (server, external call id) -> PPTP call.
#[map]
pub static PPTP_CALLS_IN: HashMap<PptpCallKey, PptpCall> =
    HashMap::with_max_entries(DEFAULT_MAX_PPTP_CALLS, 0);

/// (client, server, client's call id) -> PPTP call.
#[map]
pub static PPTP_CALLS_OUT: HashMap<PptpClientKey, PptpCall> =
    HashMap::with_max_entries(DEFAULT_MAX_PPTP_CALLS, 0);

/// (server, client's SPI) -> client, for IKE through the shared external port 500.
#[map]
pub static IKE_SAS: HashMap<IkeKey, Owner> = HashMap::with_max_entries(DEFAULT_MAX_IKE_SAS, 0);

/// (server, SPI the LAN host chose) -> LAN host. `int_addr` of the key is 0.
#[map]
pub static ESP_IN: HashMap<EspKey, Owner> = HashMap::with_max_entries(DEFAULT_MAX_ESP_SPIS, 0);

/// (LAN host, server, server's SPI) -> last seen, and the inbound SPI learned for it.
#[map]
pub static ESP_OUT: HashMap<EspKey, Owner> = HashMap::with_max_entries(DEFAULT_MAX_ESP_SPIS, 0);

/// Server -> the one LAN host learning inbound SPIs from it (docs/passthrough.md).
#[map]
pub static ESP_PENDING: HashMap<u32, EspLearner> = HashMap::with_max_entries(MAX_ESP_PENDING, 0);

/// Peers the router itself runs IKE with (seen by the WAN egress: the router's own UDP from
/// port 500 or 4500 outside the pool) -> when last seen. ESP from them with an unknown SPI
/// is the router's, never a LAN learner's. Only the router's own traffic fills it.
#[map]
pub static ROUTER_IPSEC_PEERS: HashMap<u32, u64> =
    HashMap::with_max_entries(MAX_ROUTER_IPSEC_PEERS, 0);

/// The peers the VPN server behind a forward of ESP sends ESP to -> when last seen: ESP from
/// them with an unknown SPI is the server's, never a LAN learner's. An LRU: only the
/// server's own traffic fills it, and one that falls out only waits for its next packet.
#[map]
pub static TUNNEL_PEERS: LruHashMap<u32, u64> =
    LruHashMap::with_max_entries(MAX_ROUTER_IPSEC_PEERS, 0);

/// Is traffic of `class` allowed? Ordinary traffic always is.
#[inline(always)]
pub fn switch_on(class: u8) -> bool {
    match switch_slot(class) {
        None => true,
        Some(slot) => matches!(PASSTHROUGH.get(slot), Some(&SWITCH_ON)),
    }
}

/// LAN->WAN first fragments translated recently, so the later ones get the same address. An
/// LRU: old entries (dead after FRAG_TIMEOUT_NS) make room for new ones, and HOST_FRAGS keeps
/// any one host from starting more than its share.
#[map]
pub static FRAGS: LruHashMap<FragKey, FragEntry> =
    LruHashMap::with_max_entries(DEFAULT_MAX_FRAGS, 0);

/// The same for WAN->LAN, kept apart so that nothing from the WAN can fill the LAN's table,
/// and least-recently-used: a flood of first fragments (which a host spoofing a session's
/// remote can send) evicts the oldest entries instead of refusing new ones. Entries live for
/// the moment between a first fragment and the ones that follow.
#[map]
pub static FRAGS_IN: LruHashMap<FragKey, FragEntry> =
    LruHashMap::with_max_entries(DEFAULT_MAX_FRAGS, 0);

/// LAN host -> mappings it holds, for the per-host quota. The data path counts up; the
/// sweeper recounts from MAPPINGS_OUT.
#[map]
pub static HOST_MAPPINGS: HashMap<u32, u32> =
    HashMap::with_max_entries(MAX_QUOTA_HOSTS, QUOTA_MAP_FLAGS);

/// LAN host -> sessions it holds, for the per-host session limit: one mapping talking to
/// many remotes (a scanner) must not fill the session table for everyone. Counted up by the
/// data path, recounted from SESSIONS by the sweeper.
#[map]
pub static HOST_SESSIONS: HashMap<u32, u32> =
    HashMap::with_max_entries(MAX_QUOTA_HOSTS, QUOTA_MAP_FLAGS);

/// The per-host mapping and session shares again, per source MAC address (of hosts on the
/// LAN's own subnet): a host that spoofs other LAN addresses keeps its MAC, and with it its
/// share. Counted up by the data path, recounted by the sweeper.
#[map]
pub static MAC_MAPPINGS: HashMap<u64, u32> =
    HashMap::with_max_entries(MAX_QUOTA_HOSTS, QUOTA_MAP_FLAGS);

#[map]
pub static MAC_SESSIONS: HashMap<u64, u32> =
    HashMap::with_max_entries(MAX_QUOTA_HOSTS, QUOTA_MAP_FLAGS);

/// LAN host -> VPN state entries it holds (IKE SAs, outbound ESP SAs, ESP learning windows,
/// PPTP calls), for the per-host VPN limit. Counted up by the data path, recounted by the
/// sweeper.
#[map]
pub static HOST_VPN: HashMap<u32, u32> =
    HashMap::with_max_entries(MAX_QUOTA_HOSTS, QUOTA_MAP_FLAGS);

/// LAN host (its address, FRAG_ADDR_KEY set) and its MAC -> first fragments it started in
/// its current window (FRAG_STARTS_PER_HOST per FRAG_TIMEOUT_NS; twice that per MAC).
#[map]
pub static HOST_FRAGS: HashMap<u64, FragQuota> =
    HashMap::with_max_entries(MAX_QUOTA_HOSTS * 2, QUOTA_MAP_FLAGS);

/// MAC -> VPN state entries made from it (HOST_VPN's per-MAC twin), and LAN address -> the
/// MAC its VPN state came from, with which the sweeper recounts MAC_VPN.
#[map]
pub static MAC_VPN: HashMap<u64, u32> = HashMap::with_max_entries(MAX_QUOTA_HOSTS, QUOTA_MAP_FLAGS);

#[map]
pub static HOST_MAC: HashMap<u32, u64> =
    HashMap::with_max_entries(MAX_QUOTA_HOSTS, QUOTA_MAP_FLAGS);

/// The LAN side (lan_side.rs): the LAN interface's subnets and the routes through it
/// (LAN_SIDE_PREFIX), and the router's own addresses on it (LAN_SIDE_ROUTER, /32). Kept by
/// the daemon from netlink; looked up only when NatConfig::lan_extra says there is more than
/// the primary prefix.
#[map]
pub static LAN_PREFIXES: LpmTrie<u32, u32> = LpmTrie::with_max_entries(MAX_LAN_PREFIXES, 0);

/// Port forwards: a forwarded external port of the WAN address -> the LAN host and port
/// (nat-ctl forward, `[[forward]]`). Written by nat-ctl only.
#[map]
pub static FORWARDS: HashMap<ExternalKey, Forward> =
    HashMap::with_max_entries(MAX_FORWARD_PORTS, 0);

/// The same forwards from the LAN side: a forwarded LAN endpoint -> its external port (wire
/// order), so that what it sends to the WAN address (hairpinning) leaves from that port.
#[map]
pub static FORWARDS_BY_LAN: HashMap<EndpointKey, u16> =
    HashMap::with_max_entries(MAX_FORWARD_PORTS, 0);

/// Which ports any forward has, external and LAN side (nat_common::maps::FORWARD_HINT_WORDS):
/// set by nat-ctl before it writes a forward's entries, recomputed after it removes some.
#[map]
pub static FORWARD_HINTS: Array<u64> = Array::with_max_entries(FORWARD_HINT_WORDS, 0);

/// Might a forward have bit `bit` of FORWARD_HINTS word `word`? (No: it has none.)
#[inline(always)]
pub fn forward_hint((word, bit): (u32, u64)) -> bool {
    FORWARD_HINTS.get(word).is_some_and(|w| w & bit != 0)
}

/// The sweeper's walk (nat_common::expiry): its orders and results, one entry.
#[map]
pub static SWEEP_WALK: Array<SweepWalk> = Array::with_max_entries(1, 0);

/// The live sessions the last walk found due before the next one, which the due checks in
/// between look at (nat_common::expiry). Sized by nat-ctl to the session table
/// (`expiry::expiring_slots_for`).
#[map]
pub static EXPIRING: Array<Expiring> =
    Array::with_max_entries(expiry::expiring_slots_for(DEFAULT_MAX_SESSIONS), 0);

/// The walk's scratch: the owner tag (`expiry::owner_tag`) of every external port an active
/// mapping holds, per protocol.
#[map]
pub static PORT_OWNERS: Array<u32> = Array::with_max_entries(PORT_OWNER_SLOTS, 0);

/// What the walk leaves for nat-ctl: a bit per external port a live session uses, per
/// protocol (`ports::taken_bit`).
#[map]
pub static PORTS_LIVE: Array<u64> = Array::with_max_entries(PORTS_LIVE_WORDS, 0);

/// The walk's scratch: a bit per live session's filter entry (`expiry::filter_bit`). Sized
/// by nat-ctl to the session table (`expiry::filter_bits_for`).
#[map]
pub static FILTERS_LIVE: Array<u64> = Array::with_max_entries(
    expiry::filter_words(expiry::filter_bits_for(DEFAULT_MAX_SESSIONS)),
    0,
);

/// What the walk leaves for nat-ctl: live sessions per LAN host, and per MAC, from which it
/// sets HOST_SESSIONS and MAC_SESSIONS. nat-ctl empties them after each walk.
#[map]
pub static HOST_LIVE: HashMap<u32, u32> =
    HashMap::with_max_entries(MAX_QUOTA_HOSTS, QUOTA_MAP_FLAGS);

#[map]
pub static MAC_LIVE: HashMap<u64, u32> =
    HashMap::with_max_entries(MAX_QUOTA_HOSTS, QUOTA_MAP_FLAGS);
