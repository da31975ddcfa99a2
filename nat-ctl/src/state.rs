//! Typed access to the NAT's maps, whether freshly loaded or opened from their pins.

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::{
        Array, DevMapHash, HashMap, Map, MapData, PerCpuArray,
        lpm_trie::{Key as LpmKey, LpmTrie},
    },
};
use nat_common::{
    config::{LAYOUT_VERSION, NatConfig},
    counters::{Counter, NUM_COUNTERS},
    expiry::SweepWalk,
    flow_cache::{self, CachedFlow, CachedHop, Flow, FlowKey, HopSlot},
    maps::{
        EndpointKey, EspKey, EspLearner, ExternalKey, Forward, FragEntry, FragKey, FragQuota,
        IkeKey, Mapping, Owner, PeerId, PeerIdKey, PptpCall, PptpCallKey, PptpClientKey, ReplyKey,
        Session, SessionKey, names,
    },
    passthrough::{SWITCH_OFF, SWITCH_ON, Switch},
    ports::{POOL_BITMAP_WORDS, PORTS_TAKEN_WORDS, PRIVILEGED_MAX, pool_bit, taken_bit},
    proto::{IPPROTO_ESP, IPPROTO_GRE, IPPROTO_UDP},
};

use crate::{
    pins::{Instance, InstanceError},
    pool::PortPool,
};

pub struct NatMaps {
    pub config: Array<MapData, NatConfig>,
    pub mappings_out: HashMap<MapData, EndpointKey, Mapping>,
    pub mappings_in: HashMap<MapData, ExternalKey, Mapping>,
    pub sessions: HashMap<MapData, SessionKey, Session>,
    pub flows_out: Array<MapData, CachedFlow>,
    pub flows_in: Array<MapData, CachedFlow>,
    pub flow_hops: Array<MapData, HopSlot>,
    pub filters: HashMap<MapData, SessionKey, u64>,
    pub port_pool: Array<MapData, u64>,
    pub port_in_pool: Array<MapData, u64>,
    pub counters: PerCpuArray<MapData, u64>,
    pub devmap: DevMapHash<MapData>,
    pub passthrough: Array<MapData, u32>,
    pub pptp_calls_in: HashMap<MapData, PptpCallKey, PptpCall>,
    pub pptp_calls_out: HashMap<MapData, PptpClientKey, PptpCall>,
    pub ike_sas: HashMap<MapData, IkeKey, Owner>,
    pub esp_in: HashMap<MapData, EspKey, Owner>,
    pub esp_out: HashMap<MapData, EspKey, Owner>,
    pub esp_pending: HashMap<MapData, u32, EspLearner>,
    pub frags: HashMap<MapData, FragKey, FragEntry>,
    pub frags_in: HashMap<MapData, FragKey, FragEntry>,
    pub host_mappings: HashMap<MapData, u32, u32>,
    pub host_sessions: HashMap<MapData, u32, u32>,
    pub lan_prefixes: LpmTrie<MapData, u32, u32>,
    pub router_ipsec_peers: HashMap<MapData, u32, u64>,
    pub peer_ids: HashMap<MapData, PeerIdKey, PeerId>,
    pub host_vpn: HashMap<MapData, u32, u32>,
    pub host_frags: HashMap<MapData, u64, FragQuota>,
    pub mac_mappings: HashMap<MapData, u64, u32>,
    pub mac_sessions: HashMap<MapData, u64, u32>,
    pub mac_vpn: HashMap<MapData, u64, u32>,
    pub host_mac: HashMap<MapData, u32, u64>,
    /// The instance's CONFIG lock (pins::Instance::config_lock_path), taken around every
    /// read-change-write of CONFIG; None for maps no other process shares (tests).
    pub config_lock: Option<std::path::PathBuf>,
    /// Set while this process holds the CONFIG lock, so that a change made under it can call
    /// what takes it again (flock would wait for itself).
    config_locked: std::rc::Rc<std::cell::Cell<bool>>,
    pub forwards: HashMap<MapData, ExternalKey, Forward>,
    pub forwards_by_lan: HashMap<MapData, EndpointKey, u16>,
    pub forward_hints: Array<MapData, u64>,
    pub ports_taken: Array<MapData, u64>,
    pub sweep_walk: Array<MapData, SweepWalk>,
    /// The sweeper's list of due sessions: only its size is read here.
    pub expiring: Array<MapData, nat_common::expiry::Expiring>,
    pub ports_live: Array<MapData, u64>,
    pub filters_live: Array<MapData, u64>,
    pub host_live: HashMap<MapData, u32, u32>,
    pub mac_live: HashMap<MapData, u64, u32>,
    /// The sweeper's walk (programs::SWEEP): set from a loaded object (`from_ebpf`), or by
    /// the daemon for its sweeper's maps (`set_walk`); None in the other commands.
    walk: Option<std::os::fd::OwnedFd>,
}

/// The CONFIG lock, while held (NatMaps::lock_config).
pub struct ConfigLock {
    _file: Option<nix::fcntl::Flock<std::fs::File>>,
    held: Option<std::rc::Rc<std::cell::Cell<bool>>>,
}

impl Drop for ConfigLock {
    fn drop(&mut self) {
        if let Some(h) = &self.held {
            h.set(false);
        }
    }
}

/// A file descriptor of the sweeper's walk (programs::SWEEP) in loaded object `ebpf`.
pub fn walk_fd(ebpf: &Ebpf) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd as _;
    let name = nat_common::maps::programs::SWEEP;
    let prog: &aya::programs::RawTracePoint = ebpf
        .program(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
        .try_into()?;
    Ok(prog.fd()?.as_fd().try_clone_to_owned()?)
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
}

fn pinned(instance: &Instance, name: &str) -> Result<Map> {
    let path = instance.map_path(name);
    let data = MapData::from_pin(&path)
        .with_context(|| format!("opening pinned map {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("map {}", path.display()))
}

impl NatMaps {
    fn build(mut get: impl FnMut(&str) -> Result<Map>) -> Result<NatMaps> {
        Ok(NatMaps {
            config: get(names::CONFIG)?.try_into()?,
            mappings_out: get(names::MAPPINGS_OUT)?.try_into()?,
            mappings_in: get(names::MAPPINGS_IN)?.try_into()?,
            sessions: get(names::SESSIONS)?.try_into()?,
            flows_out: get(names::FLOWS_OUT)?.try_into()?,
            flows_in: get(names::FLOWS_IN)?.try_into()?,
            flow_hops: get(names::FLOW_HOPS)?.try_into()?,
            filters: get(names::FILTERS)?.try_into()?,
            port_pool: get(names::PORT_POOL)?.try_into()?,
            port_in_pool: get(names::PORT_IN_POOL)?.try_into()?,
            counters: get(names::COUNTERS)?.try_into()?,
            devmap: get(names::DEVMAP)?.try_into()?,
            passthrough: get(names::PASSTHROUGH)?.try_into()?,
            pptp_calls_in: get(names::PPTP_CALLS_IN)?.try_into()?,
            pptp_calls_out: get(names::PPTP_CALLS_OUT)?.try_into()?,
            ike_sas: get(names::IKE_SAS)?.try_into()?,
            esp_in: get(names::ESP_IN)?.try_into()?,
            esp_out: get(names::ESP_OUT)?.try_into()?,
            esp_pending: get(names::ESP_PENDING)?.try_into()?,
            frags: get(names::FRAGS)?.try_into()?,
            frags_in: get(names::FRAGS_IN)?.try_into()?,
            host_mappings: get(names::HOST_MAPPINGS)?.try_into()?,
            host_sessions: get(names::HOST_SESSIONS)?.try_into()?,
            lan_prefixes: get(names::LAN_PREFIXES)?.try_into()?,
            router_ipsec_peers: get(names::ROUTER_IPSEC_PEERS)?.try_into()?,
            peer_ids: get(names::PEER_IDS)?.try_into()?,
            host_vpn: get(names::HOST_VPN)?.try_into()?,
            host_frags: get(names::HOST_FRAGS)?.try_into()?,
            mac_mappings: get(names::MAC_MAPPINGS)?.try_into()?,
            mac_sessions: get(names::MAC_SESSIONS)?.try_into()?,
            mac_vpn: get(names::MAC_VPN)?.try_into()?,
            host_mac: get(names::HOST_MAC)?.try_into()?,
            config_lock: None,
            config_locked: Default::default(),
            forwards: get(names::FORWARDS)?.try_into()?,
            forwards_by_lan: get(names::FORWARDS_BY_LAN)?.try_into()?,
            forward_hints: get(names::FORWARD_HINTS)?.try_into()?,
            ports_taken: get(names::PORTS_TAKEN)?.try_into()?,
            sweep_walk: get(names::SWEEP_WALK)?.try_into()?,
            expiring: get(names::EXPIRING)?.try_into()?,
            ports_live: get(names::PORTS_LIVE)?.try_into()?,
            filters_live: get(names::FILTERS_LIVE)?.try_into()?,
            host_live: get(names::HOST_LIVE)?.try_into()?,
            mac_live: get(names::MAC_LIVE)?.try_into()?,
            walk: None,
        })
    }

    /// Takes the maps out of a loaded object (the programs keep their own references), with
    /// the sweeper's walk.
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<NatMaps> {
        let walk = walk_fd(ebpf)?;
        let mut maps = Self::build(|n| take(ebpf, n))?;
        maps.walk = Some(walk);
        Ok(maps)
    }

    /// Gives maps opened from the pins the sweeper's walk of the object that `walk` came
    /// from (`walk_fd`).
    pub fn set_walk(&mut self, walk: std::os::fd::OwnedFd) {
        self.walk = Some(walk);
    }

    /// Runs the sweeper's walk of the session table with `orders` (nat_common::expiry) and
    /// gives its results.
    pub fn walk_sessions(&mut self, orders: &SweepWalk) -> Result<SweepWalk> {
        use std::os::fd::AsFd as _;
        let walk = self
            .walk
            .as_ref()
            .ok_or_else(|| anyhow!("no sweeper walk: these maps were opened without it"))?;
        self.sweep_walk
            .set(0, orders, 0)
            .context("writing SWEEP_WALK")?;
        let ret = crate::test_run::run_once(walk.as_fd())
            .context("running the sweeper's walk (BPF_PROG_TEST_RUN)")?;
        // 0: walked (1: SWEEP_WALK had no entry).
        if ret != 0 {
            bail!("the sweeper's walk found no orders (returned {ret})");
        }
        self.sweep_walk.get(&0, 0).context("reading SWEEP_WALK")
    }

    /// Opens an instance's pinned maps, for the commands that run beside the daemon.
    pub fn open_pinned(instance: &Instance) -> Result<NatMaps> {
        if !instance.exists() {
            return Err(InstanceError::NotFound {
                name: instance.name.clone(),
                dir: instance.dir().display().to_string(),
            }
            .into());
        }
        let mut maps = Self::build(|n| pinned(instance, n))?;
        maps.check_layout()?;
        maps.config_lock = Some(instance.config_lock_path());
        Ok(maps)
    }

    pub fn read_config(&self) -> Result<NatConfig> {
        Ok(self.config.get(&0, 0)?)
    }

    /// Refuses state written by an incompatible version rather than misreading it.
    pub fn check_layout(&self) -> Result<()> {
        let cfg = self.read_config()?;
        if cfg.layout_version != 0 && cfg.layout_version != LAYOUT_VERSION {
            return Err(InstanceError::LayoutMismatch {
                pinned: cfg.layout_version,
                ours: LAYOUT_VERSION,
            }
            .into());
        }
        Ok(())
    }

    /// Configures the data path: the pool and devices first, the config (which makes the
    /// programs act) last.
    pub fn apply(&mut self, cfg: &NatConfig, pool: &PortPool) -> Result<()> {
        self.write_pool(pool)?;
        self.set_devices(&[cfg.lan_ifindex, cfg.wan_ifindex])?;
        self.write_config(cfg)
    }

    /// Writes the configuration. The route generation moves on, so every cached next hop
    /// is looked up again under it (the WAN interface may be another one now), and the flow
    /// cache gets a fresh seed and the set count of its maps as they were created.
    pub fn write_config(&mut self, cfg: &NatConfig) -> Result<()> {
        let _lock = self.lock_config()?;
        let old = self.read_config().ok();
        let generation = old.map_or(0, |c| c.route_gen);
        let entries = self.flows_out.len().min(self.flows_in.len());
        let cfg = NatConfig {
            flow_seed: rand::random(),
            flow_set_bits: flow_cache::set_bits(entries),
            flushed_ns: old.map_or(0, |c| c.flushed_ns),
            sessions_removed_gen: old.map_or(0, |c| c.sessions_removed_gen),
            ..*cfg
        };
        self.store_config(&cfg, generation)
    }

    /// Invalidates every cached next hop and so every flow cache entry (a route, neighbour,
    /// address or link changed, or sessions were removed).
    pub fn bump_route_gen(&mut self) -> Result<()> {
        let _lock = self.lock_config()?;
        let cfg = self.read_config()?;
        self.store_config(&cfg, cfg.route_gen)
    }

    /// Holds the CONFIG lock while the returned guard lives (nothing without one, and
    /// nothing more when this process holds it already).
    pub fn lock_config(&self) -> Result<ConfigLock> {
        let Some(path) = self.config_lock.as_deref() else {
            return Ok(ConfigLock {
                _file: None,
                held: None,
            });
        };
        if self.config_locked.get() {
            return Ok(ConfigLock {
                _file: None,
                held: None,
            });
        }
        let file = crate::pins::lock_file(path)?;
        self.config_locked.set(true);
        Ok(ConfigLock {
            _file: Some(file),
            held: Some(self.config_locked.clone()),
        })
    }

    /// Writes `cfg` with the route generation after `generation`.
    fn store_config(&mut self, cfg: &NatConfig, generation: u16) -> Result<()> {
        let cfg = NatConfig {
            route_gen: generation.wrapping_add(1),
            ..*cfg
        };
        self.config.set(0, cfg, 0).context("writing CONFIG")
    }

    /// Writes the pool; the caller writes its lengths and span into NatConfig afterwards
    /// (a draw meanwhile keeps only what PORT_POOL holds).
    pub fn write_pool(&mut self, pool: &PortPool) -> Result<()> {
        self.write_drawable(pool)?;
        self.write_pool_bitmap(pool)?;
        // At start (adopted mappings) and on reload; after a sweep, the sweeper writes it.
        let held = self.mapping_keys()?;
        self.write_ports_taken(&held)
    }

    /// PORT_POOL: the ports of `pool`, which mappings draw from.
    pub fn write_drawable(&mut self, pool: &PortPool) -> Result<()> {
        let drawable = pool_words(pool.privileged.iter().chain(pool.ordinary.iter()).copied());
        write_bitmap(&mut self.port_pool, &drawable, names::PORT_POOL)
    }

    /// The pool PORT_POOL holds, as `write_drawable` wrote it (less what forwards took).
    pub fn read_drawable(&self) -> Result<PortPool> {
        let mut pool = PortPool {
            privileged: Vec::new(),
            ordinary: Vec::new(),
        };
        for word in 0..POOL_BITMAP_WORDS {
            let bits = self.port_pool.get(&word, 0).context("reading PORT_POOL")?;
            for b in (0..64).filter(|b| bits & (1 << b) != 0) {
                let port = (word * 64 + b) as u16;
                if port <= PRIVILEGED_MAX {
                    pool.privileged.push(port);
                } else {
                    pool.ordinary.push(port);
                }
            }
        }
        Ok(pool)
    }

    /// PORT_IN_POOL: the pool's ports, and the ports of the mappings that still exist (active
    /// or cooling down). A reload that narrows or moves the range leaves those the NAT's until
    /// they are freed, so that no session `nat-ctl sessions` lists has its replies go to the
    /// router; the daemon writes the bitmap again after each sweep that freed ports.
    pub fn write_pool_bitmap(&mut self, pool: &PortPool) -> Result<()> {
        // Under the CONFIG lock: a forward being added sets its ports' bits meanwhile.
        let _lock = self.lock_config()?;
        // And the forwarded ports, which the WAN program looks up in FORWARDS.
        let forwarded = entries(&self.forwards)?.into_iter().map(|(k, _)| k);
        let live = self
            .mapping_keys()?
            .into_iter()
            .chain(forwarded)
            .map(|k| u16::from_be(k.port));
        let in_pool = pool_words(
            pool.privileged
                .iter()
                .chain(pool.ordinary.iter())
                .copied()
                .chain(live),
        );
        write_bitmap(&mut self.port_in_pool, &in_pool, names::PORT_IN_POOL)
    }

    /// MAPPINGS_IN's keys: the external ports mappings hold.
    pub fn mapping_keys(&self) -> Result<Vec<ExternalKey>> {
        Ok(self.mappings()?.into_iter().map(|(k, _)| k).collect())
    }

    /// PORTS_TAKEN from `mappings` (MAPPINGS_IN's keys): ports freed since are clear again.
    /// A bit a CPU sets between the read of MAPPINGS_IN and this write may be lost; its
    /// port's draws then find MAPPINGS_IN's entry (a failed insert, no double claim) until
    /// the next rewrite sets it again.
    pub fn write_ports_taken(&mut self, mappings: &[ExternalKey]) -> Result<()> {
        self.write_ports_taken_with(mappings, &[])
    }

    /// `write_ports_taken`, with the ports whose bits are set in `live` (PORTS_LIVE, as
    /// the sweeper's walk left it: a DMZ session's port stays taken while it lives).
    pub fn write_ports_taken_with(&mut self, mappings: &[ExternalKey], live: &[u64]) -> Result<()> {
        let mut taken = vec![0u64; PORTS_TAKEN_WORDS as usize];
        for (t, l) in taken.iter_mut().zip(live) {
            *t |= l;
        }
        for k in mappings {
            if let Some((word, bit)) = taken_bit(k.proto, u16::from_be(k.port)) {
                taken[word as usize] |= bit;
            }
        }
        write_bitmap(&mut self.ports_taken, &taken, names::PORTS_TAKEN)
    }

    /// Makes LAN_PREFIXES hold exactly `side`'s entries. The caller writes the config's
    /// `lan_extra` after it.
    pub fn write_lan_side(&mut self, side: &crate::lan_side::LanSide) -> Result<()> {
        let wanted = side.checked_entries()?;
        for ((addr, len), kind) in wanted {
            let key = LpmKey::new(u32::from(*len), u32::from_ne_bytes(addr.octets()));
            self.lan_prefixes
                .insert(&key, kind, 0)
                .with_context(|| format!("adding {addr}/{len} to LAN_PREFIXES"))?;
        }
        let stale: Vec<LpmKey<u32>> = self
            .lan_prefixes
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| {
                let addr = std::net::Ipv4Addr::from(k.data().to_ne_bytes());
                !wanted.contains_key(&(addr, k.prefix_len() as u8))
            })
            .collect();
        for k in &stale {
            self.lan_prefixes
                .remove(k)
                .context("removing from LAN_PREFIXES")?;
        }
        Ok(())
    }

    /// LAN_PREFIXES as (address, prefix length, kind).
    pub fn lan_side_entries(&self) -> Result<Vec<(std::net::Ipv4Addr, u8, u32)>> {
        let mut out = Vec::new();
        for kv in self.lan_prefixes.iter() {
            let (k, v) = kv.context("reading LAN_PREFIXES")?;
            out.push((
                std::net::Ipv4Addr::from(k.data().to_ne_bytes()),
                k.prefix_len() as u8,
                v,
            ));
        }
        Ok(out)
    }

    pub fn set_devices(&mut self, ifindexes: &[u32]) -> Result<()> {
        for &i in ifindexes {
            self.devmap
                .insert(i, i, None, 0)
                .with_context(|| format!("adding ifindex {i} to DEVMAP"))?;
        }
        Ok(())
    }

    /// Per-CPU counters summed, in `Counter::ALL` order.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>> {
        let mut out = Vec::with_capacity(NUM_COUNTERS as usize);
        for c in Counter::ALL {
            let per_cpu = self.counters.get(&(c as u32), 0)?;
            out.push((c, per_cpu.iter().sum()));
        }
        Ok(out)
    }

    pub fn counter(&self, c: Counter) -> Result<u64> {
        Ok(self.counters.get(&(c as u32), 0)?.iter().sum())
    }

    /// Is `switch` on?
    pub fn switch(&self, switch: Switch) -> Result<bool> {
        Ok(self.passthrough.get(&switch.slot(), 0)? == SWITCH_ON)
    }

    pub fn set_switch(&mut self, switch: Switch, on: bool) -> Result<()> {
        self.passthrough
            .set(switch.slot(), if on { SWITCH_ON } else { SWITCH_OFF }, 0)
            .context("writing PASSTHROUGH")
    }

    /// Sets every switch at once (`on` in Switch::ALL order).
    pub fn set_switches(&mut self, on: &[bool; 3]) -> Result<()> {
        for (switch, on) in Switch::ALL.into_iter().zip(on) {
            self.set_switch(switch, *on)?;
        }
        Ok(())
    }

    /// Every session.
    pub fn sessions(&self) -> Result<Vec<(SessionKey, Session)>> {
        entries(&self.sessions)
    }

    /// Removes a session; Ok(false) if it was already gone, Err for any other map error.
    pub fn try_remove_session(&mut self, k: &SessionKey) -> Result<bool> {
        removed(self.sessions.remove(k))
    }

    /// Removes the sessions `which` picks; how many went. The sweeper is told
    /// (`note_sessions_removed`) even when a delete fails part way.
    pub fn remove_sessions(
        &mut self,
        which: impl Fn(&SessionKey, &nat_common::maps::Session) -> bool,
    ) -> Result<usize> {
        let mut gone = 0;
        let mut each = || -> Result<()> {
            for (k, s) in self.sessions()? {
                if which(&k, &s) && self.try_remove_session(&k)? {
                    gone += 1;
                }
            }
            Ok(())
        };
        let done = each();
        self.note_sessions_removed()?;
        done.map(|()| gone)
    }

    /// `try_remove_session` for callers to whom a failed delete is one less removed.
    pub fn remove_session(&mut self, k: &SessionKey) -> bool {
        self.sessions.remove(k).is_ok()
    }

    /// Removes the sessions of protocol `proto` (all with None) and the state that goes
    /// with them: filter entries, IKE SAs (UDP), PPTP calls (GRE), ESP bindings (ESP).
    /// Returns how many sessions and VPN entries went.
    pub fn flush(&mut self, proto: Option<u8>) -> Result<usize> {
        let matches = |p: u8| proto.is_none_or(|w| w == p);
        let mut removed = self.remove_sessions(|k, _| matches(k.proto))?;
        for (k, _) in entries(&self.filters)? {
            if matches(k.proto) {
                crate::state::removed(self.filters.remove(&k))?;
            }
        }
        if matches(IPPROTO_UDP) {
            removed += clear(&mut self.ike_sas)?;
        }
        if matches(IPPROTO_GRE) {
            removed += clear(&mut self.pptp_calls_in)?;
            clear(&mut self.pptp_calls_out)?;
        }
        if matches(IPPROTO_ESP) {
            removed += clear(&mut self.esp_out)?;
            clear(&mut self.esp_in)?;
            clear(&mut self.esp_pending)?;
        }
        // The flow cache may still hold the removed sessions' translations (a new route
        // generation retires it); the mappings their remote hosts (flushed_ns).
        let _lock = self.lock_config()?;
        let cfg = self.read_config()?;
        let flushed_ns = if matches(IPPROTO_UDP) {
            crate::monotonic_coarse_ns()
        } else {
            cfg.flushed_ns
        };
        self.store_config(&NatConfig { flushed_ns, ..cfg }, cfg.route_gen)?;
        Ok(removed)
    }

    /// Tells the sweeper that sessions were removed beside it (`sessions_removed_gen`).
    pub fn note_sessions_removed(&mut self) -> Result<()> {
        let _lock = self.lock_config()?;
        let cfg = self.read_config()?;
        let sessions_removed_gen = cfg.sessions_removed_gen.wrapping_add(1);
        self.store_config(
            &NatConfig {
                sessions_removed_gen,
                ..cfg
            },
            cfg.route_gen,
        )
    }

    /// What the flow cache holds for an outbound flow, if a lookup now finds a whole entry
    /// (`cached`). In its first set the entry may have expired (see `Flow::resolved`); one
    /// in its second set is found only while every way of the first still answers.
    pub fn cached_out(&self, k: &SessionKey) -> Result<Option<Flow>> {
        cached(&self.flows_out, &self.read_config()?, &FlowKey::out(k))
    }

    /// `cached_out` for a reply flow.
    pub fn cached_in(&self, k: &ReplyKey) -> Result<Option<Flow>> {
        cached(&self.flows_in, &self.read_config()?, &FlowKey::reply(k))
    }

    /// The next hop of a cached flow (`Flow::hop`), if its slot still holds it.
    pub fn cached_hop(&self, hop_ref: u32) -> Result<Option<CachedHop>> {
        let hop = self.hop_slot(hop_ref)?.hop;
        let seed = self.read_config()?.flow_seed;
        Ok((hop.tag(seed) == flow_cache::hop_ref_tag(hop_ref)).then_some(hop))
    }

    /// The FLOW_HOPS slot hop reference `hop_ref` points at, whatever it holds.
    pub fn hop_slot(&self, hop_ref: u32) -> Result<HopSlot> {
        self.flow_hops
            .get(&flow_cache::hop_slot(hop_ref), 0)
            .context("reading FLOW_HOPS")
    }

    /// Marks the next hop in the slot `hop_ref` points at as checked by a FIB lookup at
    /// `checked` (`flow_cache::stamp` units), as the fill of another flow through it would.
    pub fn set_hop_checked(&mut self, hop_ref: u32, checked: u32) -> Result<()> {
        let slot = HopSlot {
            checked,
            ..self.hop_slot(hop_ref)?
        };
        self.flow_hops
            .set(flow_cache::hop_slot(hop_ref), slot, 0)
            .context("writing FLOW_HOPS")
    }

    pub fn mappings(&self) -> Result<Vec<(ExternalKey, Mapping)>> {
        entries(&self.mappings_in)
    }

    pub fn pptp_calls(&self) -> Result<Vec<(PptpCallKey, PptpCall)>> {
        entries(&self.pptp_calls_in)
    }

    pub fn ike_sa_list(&self) -> Result<Vec<(IkeKey, Owner)>> {
        entries(&self.ike_sas)
    }

    pub fn esp_bindings(&self) -> Result<Vec<(EspKey, Owner)>> {
        entries(&self.esp_in)
    }
}

/// The entry for `key` in flow cache `map`, looked for as the data path does
/// (nat-ebpf/src/flow_cache.rs, `lookup`), now: in its first set; in its second only when
/// the first does not hold it and every way of the first still answers. A torn or forgotten
/// copy is a miss.
fn cached(
    map: &Array<MapData, CachedFlow>,
    cfg: &NatConfig,
    key: &FlowKey,
) -> Result<Option<Flow>> {
    let now = flow_cache::stamp(crate::monotonic_coarse_ns());
    let [first, second] = flow_cache::set_entries(cfg.flow_seed, cfg.flow_set_bits, key);
    let set = |at: u32| -> Result<Vec<CachedFlow>> {
        (at..at + flow_cache::FLOW_WAYS)
            .map(|i| map.get(&i, 0).context("reading the flow cache"))
            .collect()
    };
    let find = |ways: &[CachedFlow]| {
        ways.iter()
            .find(|e| key.matches(e.words[0], e.words[1]))
            .map(|e| CachedFlow::hit(cfg.flow_seed, key, &e.words))
    };
    let ways = set(first)?;
    if let Some(found) = find(&ways) {
        return Ok(found);
    }
    let full = ways.iter().all(|e| {
        flow_cache::entry_age(e.words[2], e.words[3], cfg.route_gen, now) != flow_cache::ENTRY_GONE
    });
    if !full {
        return Ok(None);
    }
    Ok(find(&set(second)?).flatten())
}

/// Removes every entry of a hash map; returns how many went.
pub fn clear<K: aya::Pod, V: aya::Pod>(map: &mut HashMap<MapData, K, V>) -> Result<usize> {
    let keys: Vec<K> = entries(map)?.into_iter().map(|(k, _)| k).collect();
    let mut n = 0;
    for k in &keys {
        n += usize::from(removed(map.remove(k))?);
    }
    Ok(n)
}

/// What a map delete did: Ok(true) removed, Ok(false) already gone (the data path or the
/// sweeper got there first), Err for anything else, which the caller reports rather than
/// claim success.
pub fn removed(r: std::result::Result<(), aya::maps::MapError>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(false)
        }
        Err(e) => Err(e).context("removing a map entry"),
    }
}

/// PORT_POOL's or PORT_IN_POOL's words with the bits of `ports` (host order) set.
fn pool_words(ports: impl IntoIterator<Item = u16>) -> Vec<u64> {
    let mut words = vec![0u64; POOL_BITMAP_WORDS as usize];
    for port in ports {
        let (word, bit) = pool_bit(port);
        words[word as usize] |= bit;
    }
    words
}

/// Makes bitmap array `map` (named `name`) hold `words`, writing only the words that differ
/// from its current ones: fast when little changed (a restart, a sweep).
pub fn write_bitmap(map: &mut Array<MapData, u64>, words: &[u64], name: &str) -> Result<()> {
    for (word, v) in words.iter().enumerate() {
        if map.get(&(word as u32), 0)? != *v {
            map.set(word as u32, v, 0)
                .with_context(|| format!("writing {name}"))?;
        }
    }
    Ok(())
}

/// Every entry of a hash map (a snapshot; entries may change meanwhile): batched when the
/// kernel can, else entry by entry.
pub fn entries<K: aya::Pod, V: aya::Pod>(map: &HashMap<MapData, K, V>) -> Result<Vec<(K, V)>> {
    match crate::batch::lookup_all(map) {
        Ok(Some(all)) => Ok(all),
        Ok(None) | Err(_) => map.iter().map(|r| r.map_err(Into::into)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delete_failed(errno: i32) -> std::result::Result<(), aya::maps::MapError> {
        Err(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_delete_elem",
            io_error: std::io::Error::from_raw_os_error(errno),
        }))
    }

    #[test]
    fn a_delete_that_fails_is_reported_and_one_already_done_is_not() {
        assert!(removed(Ok(())).unwrap());
        assert!(!removed(delete_failed(libc::ENOENT)).unwrap());
        let e = removed(delete_failed(libc::EPERM)).unwrap_err();
        assert!(format!("{e:#}").contains("removing a map entry"), "{e:#}");
    }
}
