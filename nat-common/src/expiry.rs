//! Session expiry, and the walk of the session table that nat-ctl's sweeper runs inside the
//! kernel (nat-ebpf/src/sweep.rs): when a session expires, what the walk is told and tells
//! (`SweepWalk`), and the bitmaps it leaves for nat-ctl. One definition for both sides.
//!
//! A walk makes three or four passes, each a `bpf_for_each_map_elem`:
//! 1. MAPPINGS_IN: every active mapping writes its owner's tag into PORT_OWNERS, one word per
//!    external port and protocol (`owner_slot`, `owner_tag`);
//! 2. SESSIONS: a session whose external port no longer belongs to its LAN endpoint (after
//!    MAPPING_GRACE_SECS) is an orphan and goes, an expired one goes (both listed in EXPIRING
//!    and removed after the pass, which then looks at them again), and a live one sets its
//!    port's bit in PORTS_LIVE and (UDP) its filter's bit in FILTERS_LIVE, and counts for its host
//!    and MAC in HOST_LIVE / MAC_LIVE;
//! 3. FILTERS: an entry whose bit is clear (no live session has that LAN endpoint and remote
//!    host) goes. Only in a walk told to (`SweepWalk::filter_bits` not 0): when every sweep
//!    walks, nat-ctl has the filter entries walked every few sweeps, which halves what the
//!    other sweeps cost, and otherwise at every walk;
//! 4. MAPPINGS_IN again, with pass 3: a mapping's first remote host (`Mapping::first_remote`,
//!    the filter entry a UDP mapping keeps itself) is forgotten by the same rule.
//!
//! nat-ctl then releases the mappings whose port bit is clear, purges the removed forwards
//! whose ports are clear, and sets the per-host session counts from HOST_LIVE / MAC_LIVE.
//!
//! A walk costs a cache miss per session, whatever it finds: at a million sessions, more
//! than 5% of a CPU if it ran every sweep. So the walk also lists in EXPIRING the live
//! sessions whose deadline falls before the next walk (`SweepWalk::list_before_ns`), and the
//! sweeps in between are due checks (`SWEEP_DUE`): they look up only the listed sessions whose
//! deadline has come, remove those still idle and move the others' deadlines on. A session
//! the walk did not list cannot fall due before the next walk: its deadline was past the
//! list's end, and one made (or whose TCP state shortened its timeout) after the walk is
//! due a full timeout after that packet, later than the next walk (nat-ctl's
//! `sweeper::Schedule` keeps walks closer together than the shortest timeout).

use core::mem::size_of;

use crate::{
    config::{FLOW_TTL_NS, Timeouts},
    maps::{SESSION_FORWARDED, Session, SessionKey},
    passthrough::IKE_PORT,
    proto::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    tcp_state,
};

pub const NS_PER_SEC: u64 = 1_000_000_000;

/// The idle timeout of a session, in seconds.
pub const fn timeout_secs(key: &SessionKey, s: &Session, t: &Timeouts) -> u32 {
    match key.proto {
        IPPROTO_TCP if tcp_state::is_established(s.tcp_state) => t.tcp_established,
        IPPROTO_TCP => t.tcp_transitory,
        IPPROTO_ICMP => t.icmp,
        _ => t.udp,
    }
}

/// How much later than its session's stamp (`Session::last_seen_ns`) a flow's last packet
/// may have come: the flow cache carries a busy flow's packets without its session, and the
/// flow goes back to stamp it only when its entry no longer answers, less than FLOW_TTL_NS
/// after the last stamp (`flow_cache::ANSWERS_FOR`, docs/fast-path.md). A
/// session's timeout runs from this much after its stamp, so that it never expires before
/// its flow was idle for the timeout (RFC 4787 REQ-5's two minutes for a UDP mapping is the
/// least UDP timeout nat-ctl accepts), and at most this much after.
pub const STAMP_LAG_NS: u64 = FLOW_TTL_NS;

/// When the session expires, idle since `last_seen_ns` (or up to STAMP_LAG_NS later).
pub const fn deadline_ns(key: &SessionKey, s: &Session, t: &Timeouts) -> u64 {
    s.last_seen_ns + timeout_secs(key, s, t) as u64 * NS_PER_SEC + STAMP_LAG_NS
}

pub const fn is_expired(key: &SessionKey, s: &Session, t: &Timeouts, now_ns: u64) -> bool {
    now_ns >= deadline_ns(key, s, t)
}

/// Seconds until the session expires (0 when it already has).
pub const fn remaining_secs(key: &SessionKey, s: &Session, t: &Timeouts, now_ns: u64) -> u64 {
    deadline_ns(key, s, t).saturating_sub(now_ns) / NS_PER_SEC
}

/// Does the session rest on a mapping of its LAN endpoint? IKE on the shared external port
/// 500 has none, nor has a port forward's session (which runs until it expires, even when
/// its forward is removed).
pub const fn has_mapping(k: &SessionKey, s: &Session) -> bool {
    let ike = IKE_PORT.to_be();
    let shared_ike =
        k.proto == IPPROTO_UDP && k.int_port == ike && k.rem_port == ike && s.ext_port == ike;
    !shared_ike && s.origin != SESSION_FORWARDED
}

/// What a walk does with a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Its external port takes no replies for its endpoint any more (the data path trusts
    /// a session's port without looking at the mapping): removed, and the endpoint's next
    /// packet gets a fresh mapping.
    Orphan,
    Expired,
    Live,
}

/// The fate of session `k` in walk `w`; `owned` tells whether its port still belongs to its
/// endpoint, and is asked only of a session that has a mapping, is past the grace and has not
/// expired (an expired one goes at once, orphan or not).
#[inline(always)]
pub fn fate(k: &SessionKey, s: &Session, w: &SweepWalk, owned: impl FnOnce() -> bool) -> Fate {
    if is_expired(k, s, &w.timeouts, w.now_ns) {
        Fate::Expired
    } else if has_mapping(k, s) && s.created_ns <= w.orphan_before_ns && !owned() {
        Fate::Orphan
    } else {
        Fate::Live
    }
}

/// PORT_OWNERS has a word per external port of each protocol that has mappings (TCP, UDP,
/// ICMP), like PORTS_TAKEN has a bit.
pub const PORT_OWNER_SLOTS: u32 = 3 * crate::maps::PORT_SLOTS;

/// The PORT_OWNERS slot of external `port` (wire order) of `proto`.
pub const fn owner_slot(proto: u8, port: u16) -> Option<u32> {
    let Some(table) = crate::ports::port_table(proto) else {
        return None;
    };
    Some(table * crate::maps::PORT_SLOTS + u16::from_be(port) as u32)
}

/// A LAN endpoint's tag in PORT_OWNERS: a hash of address and port, never 0 (no owner). Two
/// endpoints with one tag (1 in 2^31 pairs) only keep an orphan until it expires.
pub const fn owner_tag(int_addr: u32, int_port: u16) -> u32 {
    let h = ((int_addr as u64) << 16 | int_port as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 32) as u32 | 1
}

/// FILTERS_LIVE's size: 16 bits per session slot, a power of two, at least 2^16. With every
/// slot live that leaves about 6% of the bits set, so a filter whose sessions are gone
/// shares its bit with a live one in about 6% of the sweeps (a new seed each), and goes a
/// sweep later.
pub const fn filter_bits_for(max_sessions: u32) -> u32 {
    let want = (max_sessions as u64) * 16;
    let mut bits = 16;
    while (1u64 << bits) < want && bits < 31 {
        bits += 1;
    }
    bits
}

/// Words of FILTERS_LIVE for 2^`bits` bits.
pub const fn filter_words(bits: u32) -> u32 {
    1 << (bits - 6)
}

/// The FILTERS_LIVE word and bit of filter entry `f` (`SessionKey::filter_key`).
pub const fn filter_bit(seed: u32, bits: u32, f: &SessionKey) -> (u32, u64) {
    let a = (f.int_addr as u64) << 32 | f.rem_addr as u64;
    let b = (f.int_port as u64) << 8 | f.proto as u64;
    let h = (a ^ seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    let h = (h ^ (h >> 29)).wrapping_mul(0x1656_67b1_9e37_79f9);
    let i = (h >> (64 - bits)) as u32;
    (i >> 6, 1 << (i & 63))
}

/// One walk's orders and results: the value of SWEEP_WALK (one entry). nat-ctl writes the
/// orders, runs the walk (BPF_PROG_TEST_RUN of programs::SWEEP) and reads the results.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepWalk {
    /// The sweep's clock (CLOCK_MONOTONIC, as bpf_ktime).
    pub now_ns: u64,
    /// Sessions made at or before this may go as orphans: `now_ns` less MAPPING_GRACE_SECS.
    pub orphan_before_ns: u64,
    pub timeouts: Timeouts,
    /// FILTERS_LIVE's hash seed, new each walk.
    pub filter_seed: u32,
    /// FILTERS_LIVE has 2^filter_bits bits (`filter_bits_for`); 0: this walk leaves FILTERS
    /// and FILTERS_LIVE alone.
    pub filter_bits: u32,
    /// Results: sessions seen, removed as expired, removed as orphans; filter entries
    /// removed; deletes that failed (the session stays listed, or for the next walk).
    pub sessions: u64,
    pub expired: u64,
    pub orphans: u64,
    pub filters_removed: u64,
    pub failed: u64,
    /// Live sessions HOST_LIVE or MAC_LIVE had no room to count: nat-ctl then keeps the
    /// per-host session counts as they are.
    pub counts_lost: u64,
    /// SWEEP_WALK (a walk of the whole table) or SWEEP_DUE (a check of EXPIRING's due
    /// entries).
    pub kind: u32,
    /// Entries of EXPIRING in use: written by a walk, which lists afresh; read by a due check.
    pub listed: u32,
    /// A walk lists the live sessions whose deadline is before this (0: none; EXPIRING then
    /// holds only the sessions the walk removed after its pass, gone).
    pub list_before_ns: u64,
    /// Live sessions due before `list_before_ns` that EXPIRING had no room for: nat-ctl then
    /// walks again at the next sweep.
    pub list_lost: u64,
    /// When the latest walk began, and `sessions` as it counted them: a due check carries
    /// both (what the benchmark reads to know when walks run).
    pub walk_ns: u64,
    /// Live sessions a walk found due before `list_before_ns`, listed or not (EXPIRING also
    /// holds, for the time of the walk, the sessions it removes after its pass): how many
    /// the list must hold, from which nat-ctl plans how far apart walks may be.
    pub due: u64,
    /// Sessions a walk removes after its pass may take at most `removals_max` entries of
    /// EXPIRING (the others go at once, under the walk), so that the live ones due before
    /// the next walk keep their room; `removals` counts those it wanted to list, and is above
    /// `removals_max` when some went under the walk, which may then have missed others:
    /// nat-ctl walks again at the next sweep.
    pub removals_max: u32,
    pub removals: u32,
}
const _: () = assert!(size_of::<SweepWalk>() == 136);

/// `Expiring::due_ns` of an orphan the walk removes after its pass (no deadline is 1 ns).
pub const ORPHAN_DUE_NS: u64 = 1;

/// `SweepWalk::kind`.
pub const SWEEP_WALK: u32 = 0;
pub const SWEEP_DUE: u32 = 1;

/// An entry of EXPIRING: a session and when the last look at it found it due (0: no longer
/// listed: it went; ORPHAN_DUE_NS: an orphan the walk's pass found, which goes after it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expiring {
    pub key: SessionKey,
    pub due_ns: u64,
}
const _: () = assert!(size_of::<Expiring>() == 24);

/// EXPIRING's size for a session table of `max_sessions`: a quarter of it (at least 4096,
/// at most what one bpf_loop visits). Where sessions' deadlines are spread over their
/// timeouts, the seconds between walks list a few percent of them (nat-ctl plans walks
/// closer together when more would not fit); when more fall due at once (a table filled in
/// one burst ages together), the list overflows and the next sweep walks.
pub const fn expiring_slots_for(max_sessions: u32) -> u32 {
    let n = max_sessions / 4;
    if n < 4096 {
        4096
    } else if n > BPF_MAX_LOOPS {
        BPF_MAX_LOOPS
    } else {
        n
    }
}

/// The most iterations bpf_loop makes (the kernel's BPF_MAX_LOOPS).
pub const BPF_MAX_LOOPS: u32 = 1 << 23;

/// Words of PORTS_LIVE: a bit per external port of TCP, UDP and ICMP (`ports::taken_bit`).
pub const PORTS_LIVE_WORDS: u32 = crate::ports::PORTS_TAKEN_WORDS;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp_state::{SYN_IN, SYN_OUT};

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
    fn expiry_boundary() {
        let t = Timeouts::DEFAULT;
        let s = Session {
            last_seen_ns: 10 * NS_PER_SEC,
            ..Default::default()
        };
        let k = key(IPPROTO_UDP);
        // Stamped at 10 s, the flow's last packet may have come up to four seconds later
        // (FLOW_TTL_NS): the 300 s run from 14 s.
        assert!(!is_expired(&k, &s, &t, 310 * NS_PER_SEC));
        assert!(!is_expired(&k, &s, &t, 314 * NS_PER_SEC - 1));
        assert_eq!(remaining_secs(&k, &s, &t, 310 * NS_PER_SEC), 4);
        assert!(is_expired(&k, &s, &t, 314 * NS_PER_SEC));
        assert_eq!(remaining_secs(&k, &s, &t, 400 * NS_PER_SEC), 0);
    }

    #[test]
    fn orphans_only_past_the_grace_and_only_with_a_mapping() {
        let w = SweepWalk {
            now_ns: 100 * NS_PER_SEC,
            orphan_before_ns: 95 * NS_PER_SEC,
            timeouts: Timeouts {
                udp: 30,
                ..Timeouts::DEFAULT
            },
            ..Default::default()
        };
        let old = Session {
            created_ns: 90 * NS_PER_SEC,
            last_seen_ns: 99 * NS_PER_SEC,
            ..Default::default()
        };
        let young = Session {
            created_ns: 96 * NS_PER_SEC,
            ..old
        };
        let k = key(IPPROTO_UDP);
        assert_eq!(fate(&k, &old, &w, || false), Fate::Orphan);
        assert_eq!(fate(&k, &old, &w, || true), Fate::Live);
        assert_eq!(
            fate(&k, &young, &w, || panic!("not asked in the grace")),
            Fate::Live
        );
        let forwarded = Session {
            origin: SESSION_FORWARDED,
            ..old
        };
        assert_eq!(fate(&k, &forwarded, &w, || panic!("not asked")), Fate::Live);
        let stale = Session {
            last_seen_ns: 0,
            ..old
        };
        assert_eq!(fate(&k, &stale, &w, || true), Fate::Expired);
        // Expired and unowned: it goes now, not a walk later as an orphan would.
        assert_eq!(fate(&k, &stale, &w, || false), Fate::Expired);
        // Shared IKE (port 500 to 500 on the shared external port) has no mapping.
        let ike = IKE_PORT.to_be();
        let ike_key = SessionKey::new(IPPROTO_UDP, 1, ike, 2, ike);
        let ike_session = Session {
            ext_port: ike,
            ..old
        };
        assert_eq!(
            fate(&ike_key, &ike_session, &w, || panic!("not asked")),
            Fate::Live
        );
        // Made exactly at the grace's end: past it.
        let at_grace = Session {
            created_ns: w.orphan_before_ns,
            ..old
        };
        assert_eq!(fate(&k, &at_grace, &w, || false), Fate::Orphan);
    }

    #[test]
    fn owner_tags_and_slots() {
        assert_ne!(owner_tag(0, 0), 0);
        assert_ne!(owner_tag(1, 2), owner_tag(1, 3));
        assert_ne!(owner_tag(1, 2), owner_tag(2, 2));
        assert_eq!(owner_slot(IPPROTO_UDP, 80u16.to_be()), Some(65_536 + 80));
        assert_eq!(owner_slot(IPPROTO_ICMP, 65_535), Some(3 * 65_536 - 1));
        assert_eq!(owner_slot(47, 1), None);
    }

    #[test]
    fn filter_bits_stay_in_the_map_and_spread() {
        assert_eq!(filter_bits_for(0), 16);
        assert_eq!(filter_bits_for(262_144), 22);
        let bits = filter_bits_for(4096);
        let words = filter_words(bits);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..4096u32 {
            let f = SessionKey::new(IPPROTO_UDP, i, 5353, 7, 0).filter_key();
            let (w, b) = filter_bit(1, bits, &f);
            assert!(w < words && b.count_ones() == 1);
            seen.insert((w, b));
        }
        // 4096 keys in 2^16 bits: a uniform hash collides for about 3% of them.
        assert!(seen.len() > 3900, "{} distinct bits", seen.len());
    }
}
