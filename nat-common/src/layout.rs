//! The pinned-layout version: a daemon adopts pinned maps only when the version written in
//! their CONFIG is its own. It is derived from the shapes (size and alignment) of every type
//! the pinned maps hold, from the pinned maps' names and from the number of counters, so a
//! change to any of them changes it with nothing to remember. LAYOUT_EPOCH is for the one
//! change a shape does not show: a field that changes meaning, or fields swapped in place.

use core::mem::{align_of, size_of};

use crate::{config, counters, expiry, flow_cache, maps};

/// Bumped by hand only when a stored field changes meaning without changing any shape.
pub const LAYOUT_EPOCH: u32 = 1;

/// Written into CONFIG by the daemon; compared by the next one.
pub const LAYOUT_VERSION: u32 = layout_version();

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

const fn mix(mut h: u32, v: u32) -> u32 {
    let b = v.to_le_bytes();
    let mut i = 0;
    while i < 4 {
        h = (h ^ b[i] as u32).wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

/// A type's shape, as the hash takes it.
macro_rules! shapes {
    ($h:ident, $($t:ty),* $(,)?) => {
        $($h = mix(mix($h, size_of::<$t>() as u32), align_of::<$t>() as u32);)*
    };
}

const fn layout_version() -> u32 {
    let mut h = mix(FNV_OFFSET, LAYOUT_EPOCH);
    shapes!(
        h,
        config::NatConfig,
        config::Timeouts,
        maps::EndpointKey,
        maps::ExternalKey,
        maps::Mapping,
        maps::SessionKey,
        maps::NextHop,
        maps::Session,
        maps::ReplyKey,
        maps::PptpCallKey,
        maps::PptpClientKey,
        maps::PptpCall,
        maps::IkeKey,
        maps::Owner,
        maps::EspLearner,
        maps::EspKey,
        maps::PeerIdKey,
        maps::PeerId,
        maps::FragQuota,
        maps::FragKey,
        maps::FragEntry,
        maps::Forward,
        flow_cache::CachedFlow,
        flow_cache::CachedHop,
        flow_cache::HopSlot,
        expiry::SweepWalk,
        expiry::Expiring,
    );
    h = mix(h, counters::NUM_COUNTERS);
    let mut i = 0;
    while i < maps::names::ALL.len() {
        let name = maps::names::ALL[i].as_bytes();
        let mut j = 0;
        while j < name.len() {
            h = mix(h, name[j] as u32);
            j += 1;
        }
        h = mix(h, 0);
        i += 1;
    }
    // Never 0: CONFIG holds 0 until a daemon first writes it.
    if h == 0 { 1 } else { h }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_stable_and_not_the_unwritten_zero() {
        assert_ne!(LAYOUT_VERSION, 0);
        assert_eq!(LAYOUT_VERSION, layout_version());
    }
}
