//! Passthrough switches: flipping one writes a map flag (the data path reads it on the next
//! packet); turning one off also removes that class's existing state.

use anyhow::Result;
use nat_common::passthrough::{CLASS_IPSEC, CLASS_PPTP, SWITCH_NAMES};

use crate::state::{NatMaps, clear};

/// (name, on) for pptp, l2tp, ipsec.
pub fn list(maps: &NatMaps) -> Result<Vec<(&'static str, bool)>> {
    SWITCH_NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| Ok((*name, maps.switch(i as u8 + 1)?)))
        .collect()
}

/// Sets a switch; returns how many sessions/state entries were removed when turned off.
pub fn set(maps: &mut NatMaps, class: u8, on: bool) -> Result<usize> {
    maps.set_switch(class, on)?;
    if on {
        return Ok(0);
    }
    let mut removed = 0;
    let sessions: Vec<_> = maps
        .sessions()?
        .into_iter()
        .filter(|(_, s)| s.class == class)
        .collect();
    for (k, s) in sessions {
        removed += usize::from(maps.try_remove_session(&k, &s)?);
    }
    if class == CLASS_PPTP {
        removed += clear(&mut maps.pptp_calls_in)?;
        clear(&mut maps.pptp_calls_out)?;
    }
    if class == CLASS_IPSEC {
        removed += clear(&mut maps.ike_sas)?;
        removed += clear(&mut maps.esp_in)?;
        clear(&mut maps.esp_out)?;
        clear(&mut maps.esp_pending)?;
    }
    // The flow cache may still hold the removed sessions (the data path also checks the
    // switch on every packet, so they would not pass; this keeps the cache honest).
    maps.bump_route_gen()?;
    Ok(removed)
}
