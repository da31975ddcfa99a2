//! BPF_PROG_TEST_RUN fixtures for the fast path: the flow cache and what makes it let go of
//! a flow, the next hop a session or a cached flow keeps and when it is looked up again,
//! replies refreshing their session, and TCP state changes that must not slip past it.

use aya::maps::{Array, MapData};
use integration_tests::{
    fixture::*,
    lab::{LAN_HOST_A, SERVER},
    packets::{self, ACK, Flags, Hdr, SYN, SYN_ACK},
};
use nat_common::{
    config::{FLOW_TTL_NS, NEXT_HOP_TTL_NS, NatConfig},
    flow_cache::{self, CachedFlow, FlowKey},
    maps::{ExternalKey, MAPPING_COOLING, NextHop, ReplyKey, Session, SessionKey, programs},
    proto::{IPPROTO_TCP, IPPROTO_UDP},
    tcp_state,
};
use nat_ctl::{sweeper, wire::to_wire};
use std::{process::Command, time::Duration};

const NEW_MAC: packets::Mac = [0x02, 0, 0, 0, 1, 0x99];
const OTHER_MAC: packets::Mac = [0x02, 0, 0, 0, 1, 0x98];
const FIN_ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: true,
    rst: false,
};
const RST: Flags = Flags {
    syn: false,
    ack: false,
    fin: false,
    rst: true,
};

fn mac_text(m: packets::Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Gives LAN host A another MAC address in the fixture's neighbour table (runs in the
/// fixture's namespace: children inherit the thread's).
fn move_host_a(mac: packets::Mac) {
    let ok = Command::new("ip")
        .args(["neigh", "replace", &LAN_HOST_A.to_string()])
        .args(["lladdr", &mac_text(mac), "dev", "lan0", "nud", "permanent"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "ip neigh replace");
}

fn query() -> Vec<u8> {
    query_from(5353)
}

/// A DNS query from LAN host A's `port`.
fn query_from(port: u16) -> Vec<u8> {
    packets::udp(&lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER), port, 53, b"q")
}

fn reply() -> Vec<u8> {
    reply_to(5353)
}

/// A reply from the server to LAN host A's `port` (its external port: the NAT kept it).
fn reply_to(port: u16) -> Vec<u8> {
    packets::udp(&wan_hdr(SERVER, SERVER_MAC), 53, port, b"a")
}

/// The reply as delivered to host A at `mac`.
fn delivered(mac: packets::Mac) -> Vec<u8> {
    delivered_to(5353, mac)
}

/// `reply_to(port)` as delivered to host A at `mac`.
fn delivered_to(port: u16, mac: packets::Mac) -> Vec<u8> {
    packets::udp(
        &Hdr {
            smac: LAN_MAC,
            dmac: mac,
            src: SERVER,
            dst: LAN_HOST_A,
            ttl: 63,
        },
        53,
        port,
        b"a",
    )
}

/// The key of the query's session.
fn query_key() -> SessionKey {
    query_key_from(5353)
}

/// The key of the session of `query_from(port)`.
fn query_key_from(port: u16) -> SessionKey {
    SessionKey::new(
        IPPROTO_UDP,
        to_wire(LAN_HOST_A),
        port.to_be(),
        to_wire(SERVER),
        53u16.to_be(),
    )
}

/// The first and second set of flow cache `key` (`flow_cache::set_entries`).
fn sets_of(cfg: &NatConfig, key: &FlowKey) -> [u32; 2] {
    flow_cache::set_entries(cfg.flow_seed, cfg.flow_set_bits, key)
}

/// Slots of flow cache `map` that hold a whole entry for `key`, in those of its sets that
/// `which` names (0: its first, 1: its second).
fn whole_entries(
    map: &Array<MapData, CachedFlow>,
    cfg: &NatConfig,
    key: &FlowKey,
    which: &[usize],
) -> Vec<u32> {
    let sets = sets_of(cfg, key);
    which
        .iter()
        .flat_map(|&w| sets[w]..sets[w] + flow_cache::FLOW_WAYS)
        .filter(|i| {
            let e = map.get(i, 0).unwrap();
            CachedFlow::hit(cfg.flow_seed, key, &e.words).is_some()
        })
        .collect()
}

const BOTH_SETS: &[usize] = &[0, 1];

/// Of `candidates` (ports), those whose flow (`sets` gives its two sets) has `set` for its
/// first set and another for its second: flows whose second set were the same one would
/// crowd it too (a few in a thousand at the fixtures' 256 sets).
fn sharing_first_set(
    candidates: impl Iterator<Item = u16>,
    set: u32,
    sets: impl Fn(u16) -> [u32; 2],
) -> impl Iterator<Item = u16> {
    candidates.filter(move |&p| {
        let [first, second] = sets(p);
        first == set && second != set
    })
}

/// The reply key of the query's session (its flow in FLOWS_IN).
fn reply_key(fx: &Fixture) -> ReplyKey {
    let key = query_key();
    key.reply_key(fx.maps.sessions.get(&key, 0).unwrap().ext_port)
}

#[test]
fn established_packets_are_translated_from_the_flow_cache() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        // First packet: the full path creates the session. Second: the session (one hash
        // lookup) fills the cache. From then on the cache alone translates.
        let first = fx.from_lan(&query());
        assert_eq!(first.0, XDP_REDIRECT);
        assert_eq!(fx.counter("flow_cache_filled"), 0);
        assert_eq!(fx.from_lan(&query()), first);
        assert_eq!(fx.counter("flow_cache_filled"), 1);
        let key = query_key();
        let session = fx.maps.sessions.get(&key, 0).unwrap();
        let cached = fx.maps.cached_out(&key).unwrap().expect("cached");
        assert_eq!(cached.port, session.ext_port);
        let cfg = fx.maps.read_config().unwrap();
        assert_eq!(
            (cached.route_gen, cached.max_len),
            (cfg.route_gen, first.1.len() as u16 - 14),
            "looked up under this route generation, for this packet's length"
        );
        let shared = fx.maps.cached_hop(cached.hop).unwrap().expect("hop");
        assert_eq!(
            (shared.ifindex, shared.dmac),
            (fx.wan_ifindex, SERVER_MAC),
            "the server's next hop, out of the WAN interface"
        );
        for _ in 0..3 {
            assert_eq!(fx.from_lan(&query()), first);
        }
        assert_eq!(
            fx.counter("flow_cache_filled"),
            1,
            "no lookup missed the cache"
        );

        // Replies: the first takes the full path (mapping, session), which caches the flow;
        // the rest come from the cache.
        let delivered_reply = fx.from_wan(&reply());
        assert_eq!(delivered_reply, (XDP_REDIRECT, delivered(HOST_A_MAC)));
        assert_eq!(fx.counter("flow_cache_filled"), 2);
        for _ in 0..4 {
            assert_eq!(fx.from_wan(&reply()), delivered_reply);
        }
        assert_eq!(fx.counter("flow_cache_filled"), 2);
        let rk = key.reply_key(session.ext_port);
        let cached = fx.maps.cached_in(&rk).unwrap().expect("cached");
        assert_eq!((cached.addr, cached.port), (key.int_addr, key.int_port));

        // The cache, not the session, answers: with the session deleted behind the control
        // plane's back, packets are still translated as before, and no session is made.
        fx.maps.sessions.remove(&key).unwrap();
        assert_eq!(fx.from_lan(&query()), first);
        assert_eq!(fx.from_wan(&reply()), delivered_reply);
        assert_eq!(fx.counter("session_created"), 1);

        // The control plane's removals make the cache let go: after a flush the next packet
        // is a new flow again.
        fx.maps.flush(None).unwrap();
        assert!(
            fx.maps.cached_out(&key).unwrap().is_some(),
            "still there..."
        );
        assert_eq!(fx.from_lan(&query()).0, XDP_REDIRECT);
        assert_eq!(fx.counter("session_created"), 2, "...but not used");
    });
}

#[test]
fn a_flow_served_from_the_cache_still_refreshes_its_session_each_ttl() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let key = query_key();
        let seen = |fx: &Fixture| fx.maps.sessions.get(&key, 0).unwrap().last_seen_ns;
        for _ in 0..2 {
            fx.from_lan(&query());
            fx.from_wan(&reply());
        }
        assert_eq!(fx.counter("flow_cache_filled"), 2);
        let filled = seen(fx);
        // Served from the cache: the session is not touched...
        fx.from_lan(&query());
        fx.from_wan(&reply());
        assert_eq!(seen(fx), filled);
        // ...until the entries no longer answer: the next packet either way goes to the
        // session, so the sweeper never sees an active flow idle for longer than an entry
        // answers. Alone on its next hops, this flow goes back when they are checked again,
        // a second on (with others on its hops, at most FLOW_TTL_NS on:
        // flows_that_share_a_next_hop_share_its_check_once_a_second). A reply alone refreshes
        // it (a download whose requests stopped).
        std::thread::sleep(Duration::from_nanos(NEXT_HOP_TTL_NS) + Duration::from_millis(100));
        assert_eq!(fx.from_wan(&reply()).0, XDP_REDIRECT);
        let by_reply = seen(fx);
        assert!(
            by_reply >= filled + NEXT_HOP_TTL_NS,
            "{filled} -> {by_reply}"
        );
        // (The data path's clock is coarse: a few ms apart.)
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(fx.from_lan(&query()).0, XDP_REDIRECT);
        let by_query = seen(fx);
        assert!(by_query > by_reply, "{by_reply} -> {by_query}");
        assert_eq!(
            fx.counter("flow_cache_filled"),
            4,
            "both entries filled again"
        );
        fx.from_lan(&query());
        fx.from_wan(&reply());
        assert_eq!(seen(fx), by_query);
    });
}

/// Twice as many busy flows as a set has ways, all with the same first set: the second
/// sets hold the flows the first cannot, so that once each is cached, all their packets in
/// turn are translated from the cache. With one set per flow they took each other's ways in
/// turn, and every one of their packets missed (about 1.8% of the flows of the bench's 64 K).
#[test]
fn more_busy_flows_than_a_set_holds_all_stay_cached() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let cfg = fx.maps.read_config().unwrap();
        let sets = |port| sets_of(&cfg, &FlowKey::out(&query_key_from(port)));
        let target = sets(20_000)[0];
        let ports: Vec<u16> = sharing_first_set(20_000..u16::MAX, target, sets)
            .take(2 * flow_cache::FLOW_WAYS as usize)
            .collect();
        // Slots holding a whole entry of flow `p`, in the sets `which` names.
        let entries = |fx: &Fixture, p: u16, which: &[usize]| {
            whole_entries(
                &fx.maps.flows_out,
                &cfg,
                &FlowKey::out(&query_key_from(p)),
                which,
            )
        };
        assert_eq!(ports.len(), 2 * flow_cache::FLOW_WAYS as usize);
        for &p in &ports {
            assert_eq!(
                fx.from_lan(&query_from(p)).0,
                XDP_REDIRECT,
                "port {p}: session made"
            );
        }
        // Entries answer while their hop was checked less than NEXT_HOP_TTL_NS ago: a pass
        // that took longer than half of it (a loaded machine) proves nothing either way, and
        // is tried again.
        within_half_a_ttl(|_| {
            // Every entry stops answering: the first pass fills one per flow.
            fx.maps.bump_route_gen().unwrap();
            let start = std::time::Instant::now();
            let before = fx.counter("flow_cache_filled");
            for &p in &ports {
                assert_eq!(fx.from_lan(&query_from(p)).0, XDP_REDIRECT);
            }
            let filled = fx.counter("flow_cache_filled");
            assert_eq!(filled - before, ports.len() as u64, "one fill per flow");
            for _ in 0..4 {
                for &p in &ports {
                    assert_eq!(fx.from_lan(&query_from(p)).0, XDP_REDIRECT);
                }
            }
            if start.elapsed() > Duration::from_nanos(NEXT_HOP_TTL_NS / 2) {
                return None;
            }
            assert_eq!(
                fx.counter("flow_cache_filled"),
                filled,
                "a flow went back to its session: its entry had been taken"
            );
            for &p in &ports {
                let session = fx.maps.sessions.get(&query_key_from(p), 0).unwrap();
                let cached = fx
                    .maps
                    .cached_out(&query_key_from(p))
                    .unwrap()
                    .expect("cached");
                assert_eq!(cached.port, session.ext_port, "port {p}");
            }

            // One flow of the first set ends: its entry no longer answers (as after its next
            // hop's expiry; here forgotten) and it sends no more. A lookup reads the second
            // set only while the first is full, so a flow from a second set takes the free
            // way at its next packet, and the others are found where they are: one fill in
            // all, not one per packet of each flow left in a second set.
            let way_of = |fx: &Fixture, p: u16| entries(fx, p, &[0]).first().copied();
            let (ended, way) = ports
                .iter()
                .find_map(|&p| way_of(fx, p).map(|w| (p, w)))
                .expect("a flow in the first set");
            let mut e = fx.maps.flows_out.get(&way, 0).unwrap();
            e.words[3] &= u32::MAX as u64;
            fx.maps.flows_out.set(way, e, 0).unwrap();
            let filled = fx.counter("flow_cache_filled");
            for _ in 0..4 {
                for &p in ports.iter().filter(|&&p| p != ended) {
                    assert_eq!(fx.from_lan(&query_from(p)).0, XDP_REDIRECT);
                }
            }
            if start.elapsed() > Duration::from_nanos(NEXT_HOP_TTL_NS / 2) {
                return None;
            }
            assert_eq!(
                fx.counter("flow_cache_filled") - filled,
                1,
                "one flow moved into the free way, and no other missed"
            );
            let in_first = ports.iter().filter(|&&p| way_of(fx, p).is_some()).count();
            assert_eq!(
                in_first,
                flow_cache::FLOW_WAYS as usize,
                "the first set is full again"
            );
            for &p in ports.iter().filter(|&&p| p != ended) {
                assert_eq!(
                    entries(fx, p, BOTH_SETS).len(),
                    1,
                    "port {p}: one entry, a moved flow's old one forgotten"
                );
            }
            Some(())
        });
    });
}

/// When both of a flow's sets are full of entries that still answer, its fill takes the way
/// of the two sets whose next hop was looked up longest ago.
#[test]
fn with_both_sets_full_a_fill_takes_the_oldest_way_of_the_two() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let cfg = fx.maps.read_config().unwrap();
        let sets = |port| sets_of(&cfg, &FlowKey::out(&query_key_from(port)));
        // A flow, four others of its first set, four whose first set is its second.
        let ports = 20_000..u16::MAX;
        let flow = ports.clone().find(|&p| sets(p)[0] != sets(p)[1]).unwrap();
        let [first, second] = sets(flow);
        let own_first: Vec<u16> = sharing_first_set(ports.clone(), first, sets)
            .filter(|&p| p != flow)
            .take(flow_cache::FLOW_WAYS as usize)
            .collect();
        let in_second: Vec<u16> = sharing_first_set(ports, second, sets)
            .take(flow_cache::FLOW_WAYS as usize)
            .collect();
        assert_eq!(
            own_first.len() + in_second.len(),
            2 * flow_cache::FLOW_WAYS as usize
        );
        for &p in in_second.iter().chain(&own_first).chain([&flow]) {
            assert_eq!(
                fx.from_lan(&query_from(p)).0,
                XDP_REDIRECT,
                "port {p}: session made"
            );
        }
        let cached =
            |fx: &Fixture, p: u16| fx.maps.cached_out(&query_key_from(p)).unwrap().is_some();
        // Filled oldest first: the second set's flows, then the first's (NextHop::resolved
        // counts about milliseconds). A pass that took longer than half of
        // NEXT_HOP_TTL_NS (a loaded machine) may have seen their hop expire, and is tried
        // again.
        within_half_a_ttl(|_| {
            fx.maps.bump_route_gen().unwrap();
            let start = std::time::Instant::now();
            for group in [&in_second, &own_first] {
                for &p in group {
                    assert_eq!(fx.from_lan(&query_from(p)).0, XDP_REDIRECT);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let filled = fx.counter("flow_cache_filled");
            assert_eq!(fx.from_lan(&query_from(flow)).0, XDP_REDIRECT);
            let (flow_cached, first_kept) =
                (cached(fx, flow), own_first.iter().all(|&p| cached(fx, p)));
            let gone: Vec<u16> = in_second
                .iter()
                .copied()
                .filter(|&p| !cached(fx, p))
                .collect();
            if start.elapsed() > Duration::from_nanos(NEXT_HOP_TTL_NS / 2) {
                return None;
            }
            assert_eq!(fx.counter("flow_cache_filled"), filled + 1);
            assert!(flow_cached, "the flow took a way");
            assert!(first_kept, "a younger entry of the first set went");
            assert_eq!(gone, in_second[..1], "the oldest way of the two sets went");
            Some(())
        });
    });
}

/// What changes a flow's translation forgets its entry in whichever set holds it: a LAN SYN
/// that starts a 5-tuple afresh forgets the replies' entry, here of flows that live in their
/// second set because their first is full.
#[test]
fn a_flow_in_its_second_set_is_forgotten_there_too() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let cfg = fx.maps.read_config().unwrap();
        let out = |dport: u16, f| {
            packets::tcp(
                &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
                40000,
                dport,
                f,
                b"",
            )
        };
        // The endpoint's one external port (its mapping, endpoint-independent).
        assert_eq!(fx.from_lan(&out(1, SYN)).0, XDP_REDIRECT);
        let ext = fx.maps.sessions().unwrap()[0].1.ext_port;
        let reply_key =
            |dport: u16| ReplyKey::new(IPPROTO_TCP, to_wire(SERVER), ext, dport.to_be());
        let sets = |dport| sets_of(&cfg, &FlowKey::reply(&reply_key(dport)));
        let target = sets(2)[0];
        let dports: Vec<u16> = sharing_first_set(2..u16::MAX, target, sets)
            .take(2 * flow_cache::FLOW_WAYS as usize)
            .collect();
        let inb =
            |dport: u16, f| packets::tcp(&wan_hdr(SERVER, SERVER_MAC), dport, 40000, f, b"data");
        for &d in &dports {
            assert_eq!(fx.from_lan(&out(d, SYN)).0, XDP_REDIRECT);
            assert_eq!(fx.from_wan(&inb(d, SYN_ACK)).0, XDP_REDIRECT);
            assert_eq!(fx.from_lan(&out(d, ACK)).0, XDP_REDIRECT);
            assert_eq!(fx.from_wan(&inb(d, ACK)).0, XDP_REDIRECT);
        }
        // Slots holding a whole entry of the replies of flow `d`, in the sets `which` names.
        let entries = |fx: &Fixture, d: u16, which: &[usize]| {
            whole_entries(
                &fx.maps.flows_in,
                &cfg,
                &FlowKey::reply(&reply_key(d)),
                which,
            )
        };
        let copies = |fx: &Fixture, d: u16| entries(fx, d, BOTH_SETS).len();
        let in_second: Vec<u16> = dports
            .iter()
            .copied()
            .filter(|&d| !entries(fx, d, &[1]).is_empty())
            .collect();
        assert!(
            !in_second.is_empty(),
            "no reply flow went to its second set"
        );
        // The WAN side finds them there: the server's segments of every flow are translated
        // from the cache (within a second of the fills: no next hop expired meanwhile).
        let filled = fx.counter("flow_cache_filled");
        for _ in 0..2 {
            for &d in &dports {
                assert_eq!(fx.from_wan(&inb(d, ACK)).0, XDP_REDIRECT);
            }
        }
        assert_eq!(
            fx.counter("flow_cache_filled"),
            filled,
            "a reply went past the cache"
        );
        for &d in &in_second {
            assert_eq!(copies(fx, d), 1, "port {d}: cached once");
            assert_eq!(fx.from_lan(&out(d, SYN)).0, XDP_REDIRECT);
            assert_eq!(
                copies(fx, d),
                0,
                "port {d}: the SYN forgot the replies' entry"
            );
        }
    });
}

#[test]
fn a_torn_or_foreign_flow_cache_entry_is_a_miss() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let first = fx.from_lan(&query());
        assert_eq!(fx.from_lan(&query()), first);
        let key = query_key();
        let cfg = fx.maps.read_config().unwrap();
        let fk = FlowKey::out(&key);
        let slot = whole_entries(&fx.maps.flows_out, &cfg, &fk, BOTH_SETS)
            .first()
            .copied()
            .expect("the second packet filled the cache");
        let good = fx.maps.flows_out.get(&slot, 0).unwrap();
        let f = CachedFlow::hit(cfg.flow_seed, &fk, &good.words).unwrap();
        let hop = NextHop {
            resolved: f.resolved,
            route_gen: f.route_gen,
            max_len: f.max_len,
            ..NextHop::NONE
        };
        let other_port = 999u16.to_be();
        assert_ne!(f.port, other_port);
        let entry = |seed| {
            let value = flow_cache::value_out(other_port, f.class);
            CachedFlow::new(seed, &fk, value, &hop, f.hop)
        };

        // Half written: another port, the old check word. Not used, and filled again.
        let mut torn = entry(cfg.flow_seed);
        torn.words[3] = good.words[3];
        fx.maps.flows_out.set(slot, torn, 0).unwrap();
        assert_eq!(fx.from_lan(&query()), first);
        assert_eq!(fx.counter("flow_cache_filled"), 2);

        // Whole, but sealed under another seed (written by an earlier configuration).
        fx.maps
            .flows_out
            .set(slot, entry(cfg.flow_seed ^ 1), 0)
            .unwrap();
        assert_eq!(fx.from_lan(&query()), first);
        assert_eq!(fx.counter("flow_cache_filled"), 3);

        // The same entry sealed under this configuration's seed is believed: the seal, not
        // luck, decided above.
        fx.maps
            .flows_out
            .set(slot, entry(cfg.flow_seed), 0)
            .unwrap();
        let (action, out) = fx.from_lan(&query());
        assert_eq!(action, XDP_REDIRECT);
        let sport = etherparse::SlicedPacket::from_ethernet(&out)
            .ok()
            .and_then(|p| match p.transport {
                Some(etherparse::TransportSlice::Udp(u)) => Some(u.source_port()),
                _ => None,
            });
        assert_eq!(sport, Some(999));
    });
}

#[test]
fn a_next_hop_slot_another_hop_took_is_a_miss() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        fx.from_lan(&query());
        for _ in 0..2 {
            assert_eq!(fx.from_wan(&reply()), (XDP_REDIRECT, delivered(HOST_A_MAC)));
        }
        let rk = reply_key(fx);
        let hop = fx.maps.cached_in(&rk).unwrap().expect("cached").hop;
        let slot = flow_cache::hop_slot(hop);
        // Another next hop took the slot: the reply must not go to that MAC; it takes the
        // full path (the FIB's answer) and shares its hop again.
        let mut other = fx.maps.hop_slot(hop).unwrap();
        other.hop.dmac = OTHER_MAC;
        fx.maps.flow_hops.set(slot, other, 0).unwrap();
        let fills = fx.counter("flow_cache_filled");
        assert_eq!(fx.from_wan(&reply()), (XDP_REDIRECT, delivered(HOST_A_MAC)));
        assert_eq!(fx.counter("flow_cache_filled"), fills + 1);
        let now = fx.maps.cached_in(&rk).unwrap().expect("cached again").hop;
        let shared = fx
            .maps
            .cached_hop(now)
            .unwrap()
            .expect("its hop is in FLOW_HOPS");
        assert_eq!(shared.dmac, HOST_A_MAC);
    });
}

#[test]
fn replies_keep_their_next_hop_until_a_route_change_or_its_ttl() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        assert_eq!(fx.from_lan(&query()).0, XDP_REDIRECT);
        let rk = reply_key(fx);
        assert!(
            fx.maps.cached_in(&rk).unwrap().is_none(),
            "cached by the first reply, not the query"
        );
        assert_eq!(fx.from_wan(&reply()), (XDP_REDIRECT, delivered(HOST_A_MAC)));
        let cached = fx
            .maps
            .cached_in(&rk)
            .unwrap()
            .expect("the first reply cached");
        assert_eq!(cached.addr, to_wire(LAN_HOST_A));
        let hop = fx.maps.cached_hop(cached.hop).unwrap().expect("its hop");
        assert_eq!(hop.dmac, HOST_A_MAC);

        // The host moved to another MAC address: the kept next hop still says the old one...
        move_host_a(NEW_MAC);
        assert_eq!(
            fx.from_wan(&reply()),
            (XDP_REDIRECT, delivered(HOST_A_MAC)),
            "replies use the next hop their cached flow keeps, not a FIB lookup each"
        );
        // ...until the route generation moves on (the daemon does that on the netlink
        // event), and the very next reply goes to the new address.
        fx.maps.bump_route_gen().unwrap();
        assert_eq!(fx.from_wan(&reply()), (XDP_REDIRECT, delivered(NEW_MAC)));

        // With nobody moving the generation on, the kept hop expires by itself.
        move_host_a(OTHER_MAC);
        assert_eq!(fx.from_wan(&reply()).1, delivered(NEW_MAC));
        std::thread::sleep(Duration::from_nanos(NEXT_HOP_TTL_NS) + Duration::from_millis(100));
        assert_eq!(fx.from_wan(&reply()).1, delivered(OTHER_MAC));
        assert_eq!(fx.counter("in_redirected"), 5);
    });
}

/// Flows that share a next hop share its check: once a second the first packet to find the
/// hop unchecked goes to its session and the FIB, and the others go on without theirs; a
/// neighbour's new MAC nobody signalled still reaches every flow within a second (no other
/// address has the old one here); and a flow
/// reads its session at least every FLOW_TTL_NS even while others keep its hop checked.
#[test]
fn flows_that_share_a_next_hop_share_its_check_once_a_second() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        const PORTS: [u16; 2] = [5353, 5354];
        for p in PORTS {
            fx.from_lan(&query_from(p));
            let ext = fx
                .maps
                .sessions
                .get(&query_key_from(p), 0)
                .unwrap()
                .ext_port;
            assert_eq!(u16::from_be(ext), p, "the source port kept");
            // The first reply takes the full path and caches the flow.
            assert_eq!(
                fx.from_wan(&reply_to(p)),
                (XDP_REDIRECT, delivered_to(p, HOST_A_MAC))
            );
        }
        let seen = |fx: &Fixture, p| {
            fx.maps
                .sessions
                .get(&query_key_from(p), 0)
                .unwrap()
                .last_seen_ns
        };
        let fills = fx.counter("flow_cache_filled");
        let wait = Duration::from_nanos(NEXT_HOP_TTL_NS) + Duration::from_millis(100);

        // Host A's hop went unchecked for a second: the first reply checks it for both.
        std::thread::sleep(wait);
        let before = seen(fx, PORTS[1]);
        assert_eq!(
            fx.from_wan(&reply_to(PORTS[0])).1,
            delivered_to(PORTS[0], HOST_A_MAC)
        );
        assert_eq!(
            fx.counter("flow_cache_filled"),
            fills + 1,
            "the hop checked"
        );
        assert_eq!(
            fx.from_wan(&reply_to(PORTS[1])).1,
            delivered_to(PORTS[1], HOST_A_MAC)
        );
        assert_eq!(
            fx.counter("flow_cache_filled"),
            fills + 1,
            "served from the cache"
        );
        assert_eq!(seen(fx, PORTS[1]), before, "its session not read");

        // Host A moves to another MAC and nobody moves the route generation on: within a
        // second of the last check, every flow of the hop finds the new MAC, the one whose
        // entry is two seconds old (FLOW_TTL_NS would keep it) included.
        move_host_a(NEW_MAC);
        assert_eq!(
            fx.from_wan(&reply_to(PORTS[1])).1,
            delivered_to(PORTS[1], HOST_A_MAC)
        );
        std::thread::sleep(wait);
        for p in [PORTS[1], PORTS[0]] {
            assert_eq!(
                fx.from_wan(&reply_to(p)).1,
                delivered_to(p, NEW_MAC),
                "port {p}"
            );
        }
        assert_eq!(fx.counter("flow_cache_filled"), fills + 3);

        // Its hop checked (as another flow's packet would have, a moment ago), a flow still
        // goes back to its session once its entry is FLOW_TTL_NS old.
        let filled = fx
            .maps
            .cached_in(&ReplyKey::new(
                IPPROTO_UDP,
                to_wire(SERVER),
                PORTS[1].to_be(),
                53u16.to_be(),
            ))
            .unwrap()
            .expect("cached");
        let hop_checked_now = |fx: &mut Fixture| {
            let now = flow_cache::stamp(nat_ctl::monotonic_coarse_ns());
            fx.maps.set_hop_checked(filled.hop, now).unwrap();
        };
        let ttl = Duration::from_nanos(FLOW_TTL_NS);
        std::thread::sleep(ttl / 2);
        hop_checked_now(fx);
        assert_eq!(
            fx.from_wan(&reply_to(PORTS[1])).1,
            delivered_to(PORTS[1], NEW_MAC)
        );
        assert_eq!(
            fx.counter("flow_cache_filled"),
            fills + 3,
            "younger than FLOW_TTL_NS"
        );
        std::thread::sleep(ttl / 2 + Duration::from_millis(100));
        hop_checked_now(fx);
        let before = seen(fx, PORTS[1]);
        assert_eq!(
            fx.from_wan(&reply_to(PORTS[1])).1,
            delivered_to(PORTS[1], NEW_MAC)
        );
        assert_eq!(
            fx.counter("flow_cache_filled"),
            fills + 4,
            "FLOW_TTL_NS old: renewed"
        );
        assert!(seen(fx, PORTS[1]) > before, "its session stamped");
    });
}

#[test]
fn a_packet_longer_than_the_kept_hop_was_checked_for_asks_the_fib() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let ok = Command::new("ip")
            .args(["link", "set", "wan0", "mtu", "1400"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip link set mtu");
        let h = lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER);
        for _ in 0..2 {
            assert_eq!(
                fx.from_lan(&packets::udp(&h, 5353, 53, b"q")).0,
                XDP_REDIRECT
            );
        }
        assert_eq!(fx.counter("flow_cache_filled"), 1);
        // The flow's cached next hop was checked for a small packet; one over the WAN MTU
        // must still go to the kernel (Fragmentation Needed, or fragmenting), never be
        // redirected onto a link that cannot carry it.
        let big = packets::udp(&h, 5353, 53, &[0u8; 1450]);
        assert_eq!(fx.from_lan(&big).0, XDP_PASS);
        assert_eq!(
            fx.counter("pass_frag_needed") + fx.counter("out_pass_kernel"),
            1
        );
        assert_eq!(
            fx.from_lan(&packets::udp(&h, 5353, 53, b"q")).0,
            XDP_REDIRECT
        );
        assert_eq!(fx.counter("out_redirected"), 3);
    });
}

#[test]
fn tcp_fin_and_rst_from_the_wan_reach_the_session_state_past_the_fast_path() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let out = |f| packets::tcp(&lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER), 40000, 443, f, b"");
        let inb = |f| packets::tcp(&wan_hdr(SERVER, SERVER_MAC), 443, 40000, f, b"data");
        let state = |fx: &Fixture| {
            fx.maps
                .sessions
                .get(
                    &nat_common::maps::SessionKey::new(
                        IPPROTO_TCP,
                        to_wire(LAN_HOST_A),
                        40000u16.to_be(),
                        to_wire(SERVER),
                        443u16.to_be(),
                    ),
                    0,
                )
                .unwrap()
                .tcp_state
        };
        assert_eq!(fx.from_lan(&out(SYN)).0, XDP_REDIRECT);
        assert_eq!(fx.from_wan(&inb(SYN_ACK)).0, XDP_REDIRECT);
        assert_eq!(fx.from_lan(&out(ACK)).0, XDP_REDIRECT);
        for _ in 0..3 {
            assert_eq!(fx.from_wan(&inb(ACK)).0, XDP_REDIRECT);
        }
        assert!(tcp_state::is_established(state(fx)));
        let session = fx.maps.sessions().unwrap()[0];
        let rk = session.0.reply_key(session.1.ext_port);
        assert!(fx.maps.cached_in(&rk).unwrap().is_some());
        assert_eq!(fx.from_wan(&inb(FIN_ACK)).0, XDP_REDIRECT);
        assert_ne!(
            state(fx) & tcp_state::FIN_IN,
            0,
            "the server's FIN was recorded"
        );
        assert_eq!(fx.from_wan(&inb(RST)).0, XDP_REDIRECT);
        assert_ne!(
            state(fx) & tcp_state::RST,
            0,
            "the server's RST was recorded"
        );

        // A new connection on the same 5-tuple: plain segments from the server wait for its
        // SYN-ACK to be recorded again before they skip the state machine.
        assert_eq!(fx.from_lan(&out(SYN)).0, XDP_REDIRECT);
        assert_eq!(state(fx), tcp_state::SYN_OUT);
        assert!(
            fx.maps.cached_in(&rk).unwrap().is_none(),
            "the SYN made the flow cache forget the server's side"
        );
        assert_eq!(fx.from_wan(&inb(SYN_ACK)).0, XDP_REDIRECT);
        assert!(tcp_state::is_established(state(fx)));
        assert!(
            fx.maps.cached_in(&rk).unwrap().is_some(),
            "the recorded SYN-ACK cached the flow again"
        );
    });
}

/// Pins the calling thread to `cpu`.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "pinning to CPU {cpu}"
        );
    }
}

/// The LAN and WAN programs record one TCP session's state on different CPUs at once. A FIN
/// from the server must not be lost to the LAN side writing back what it read a moment
/// before (the session would keep the 2-hour established timeout after the close).
#[test]
fn a_server_fin_recorded_while_the_lan_side_records_the_same_session_is_kept() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        let key = nat_common::maps::SessionKey::new(
            IPPROTO_TCP,
            to_wire(LAN_HOST_A),
            40000u16.to_be(),
            to_wire(SERVER),
            443u16.to_be(),
        );
        let out_fin = packets::tcp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            40000,
            443,
            FIN_ACK,
            b"",
        );
        let in_fin = packets::tcp(&wan_hdr(SERVER, SERVER_MAC), 443, 40000, FIN_ACK, b"");
        let syn = packets::tcp(
            &lan_hdr(LAN_HOST_A, HOST_A_MAC, SERVER),
            40000,
            443,
            SYN,
            b"",
        );
        assert_eq!(fx.from_lan(&syn).0, XDP_REDIRECT);
        assert_eq!(
            fx.from_wan(&packets::tcp(
                &wan_hdr(SERVER, SERVER_MAC),
                443,
                40000,
                SYN_ACK,
                b""
            ))
            .0,
            XDP_REDIRECT
        );
        let (lan, wan) = (fx.lan_ifindex, fx.wan_ifindex);
        // One thread retransmits the client's FIN on one CPU without pause, while on the other
        // the server's FIN arrives again and again, each time on a session that has seen
        // neither. A lost update is rare per packet (a plain write of the state byte lost
        // about 1 in 4 000 here; writing it only when it changes, 1 in 50 000), so count
        // over many.
        const ROUNDS: u32 = 200_000;
        let stop = std::sync::atomic::AtomicBool::new(false);
        let Fixture { ebpf, maps, .. } = fx;
        let ebpf = &*ebpf;
        // The two sides on two CPUs (where there are two), as the LAN and WAN queues are.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let lost = std::thread::scope(|scope| {
            // Stops the client's side however this thread leaves the scope (a failed assert
            // included), or the scope would wait for it for ever.
            struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
            impl Drop for StopOnDrop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            let _stop = StopOnDrop(&stop);
            if cpus >= 2 {
                pin_to_cpu(0);
            }
            let a = scope.spawn(|| {
                if cpus >= 2 {
                    pin_to_cpu(1);
                }
                let mut runs = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    assert_eq!(
                        run_shared(ebpf, programs::LAN_INGRESS, lan, &out_fin),
                        XDP_REDIRECT
                    );
                    runs += 1;
                }
                runs
            });
            let (mut lost, mut crossed) = (0, 0);
            for _ in 0..ROUNDS {
                // Established, no FIN recorded yet: the two FINs cross.
                let mut s = maps.sessions.get(&key, 0).unwrap();
                s.tcp_state = tcp_state::SYN_OUT | tcp_state::SYN_IN;
                maps.sessions.insert(key, s, 0).unwrap();
                assert_eq!(
                    run_shared(ebpf, programs::WAN_INGRESS, wan, &in_fin),
                    XDP_REDIRECT
                );
                let state = maps.sessions.get(&key, 0).unwrap().tcp_state;
                lost += u32::from(state & tcp_state::FIN_IN == 0);
                crossed += u32::from(state & tcp_state::FIN_OUT != 0);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let runs = a.join().expect("the LAN side");
            assert!(
                runs > u64::from(ROUNDS / 4),
                "the client's side ran alongside ({runs} runs)"
            );
            // The client's FIN went through the state machine in many rounds, so the two
            // sides did write the state at the same time.
            assert!(
                crossed > ROUNDS / 10,
                "the FINs crossed in {crossed} rounds only"
            );
            lost
        });
        assert_eq!(
            lost, 0,
            "the server's FIN was lost in {lost} of {ROUNDS} rounds"
        );
    });
}

#[test]
fn a_reply_keeps_its_session_alive_and_an_expired_session_takes_no_more() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        fx.from_lan(&query());
        let sent = fx.maps.sessions().unwrap()[0].1.last_seen_ns;
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(fx.from_wan(&reply()).0, XDP_REDIRECT);
        let replied = fx.maps.sessions().unwrap()[0].1.last_seen_ns;
        assert!(replied > sent, "the reply refreshed the session");

        // Idle from the reply on (or from a packet the flow cache carried, up to
        // FLOW_TTL_NS after it): the sweeper keeps it just short of the timeout from the
        // latest that can be...
        let t = fx.maps.read_config().unwrap().timeouts;
        let udp_ns = t.udp as u64 * 1_000_000_000 + FLOW_TTL_NS;
        let r = sweeper::sweep(&mut fx.maps, &t, replied + udp_ns - 1).unwrap();
        assert_eq!(r.sessions_expired, 0, "{r:?}");
        // ...and removes it then.
        let r = sweeper::sweep(&mut fx.maps, &t, replied + udp_ns).unwrap();
        assert_eq!(r.sessions_expired, 1, "{r:?}");
        assert!(fx.maps.sessions().unwrap().is_empty());
        // A session expires only after its flow's cached entries have (it would have been
        // refreshed otherwise); then the next reply finds nothing to go to.
        std::thread::sleep(Duration::from_nanos(FLOW_TTL_NS) + Duration::from_millis(100));
        assert_eq!(fx.from_wan(&reply()).0, XDP_DROP);
    });
}

/// A reply whose cached entry is there but whose next hop expired renews from the session the
/// entry names, without the full path (which here would drop it: its mapping cools), and only
/// if that session is still the entry's flow.
#[test]
fn a_reply_past_its_entrys_next_hop_renews_from_the_session_the_entry_names() {
    with_fixture(default_tables(), FixtureConfig::default(), |fx| {
        fx.from_lan(&query());
        assert_eq!(fx.from_wan(&reply()), (XDP_REDIRECT, delivered(HOST_A_MAC)));
        let key = query_key();
        let session = fx.maps.sessions.get(&key, 0).unwrap();
        let ext = ExternalKey {
            port: session.ext_port,
            proto: IPPROTO_UDP,
            _pad: 0,
        };
        let mut m = fx.maps.mappings_in.get(&ext, 0).unwrap();
        m.state = MAPPING_COOLING;
        fx.maps.mappings_in.insert(ext, m, 0).unwrap();
        // A route change: the entry's next hop no longer answers.
        fx.maps.bump_route_gen().unwrap();
        let fills = fx.counter("flow_cache_filled");
        assert_eq!(fx.from_wan(&reply()), (XDP_REDIRECT, delivered(HOST_A_MAC)));
        assert_eq!(fx.counter("flow_cache_filled"), fills + 1, "renewed");
        // The session on another external port now: not the entry's flow; the full path
        // decides (and drops: the mapping cools).
        let moved = Session {
            ext_port: 999u16.to_be(),
            ..session
        };
        fx.maps.sessions.insert(key, moved, 0).unwrap();
        fx.maps.bump_route_gen().unwrap();
        assert_eq!(fx.from_wan(&reply()).0, XDP_DROP);
    });
}
