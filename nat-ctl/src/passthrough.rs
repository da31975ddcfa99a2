//! Passthrough switches: flipping one writes a map flag (the data path reads it on the next
//! packet); turning one off also removes that class's existing state.

use anyhow::Result;
use nat_common::passthrough::Switch;

use crate::state::{NatMaps, clear};

/// (name, on) for pptp, l2tp, ipsec.
pub fn list(maps: &NatMaps) -> Result<Vec<(&'static str, bool)>> {
    Switch::ALL
        .into_iter()
        .map(|s| Ok((s.name(), maps.switch(s)?)))
        .collect()
}

/// Sets a switch; returns how many sessions/state entries were removed when turned off.
pub fn set(maps: &mut NatMaps, switch: Switch, on: bool) -> Result<usize> {
    maps.set_switch(switch, on)?;
    if on {
        return Ok(0);
    }
    let mut removed = maps.remove_sessions(|_, s| s.class == switch.class())?;
    if switch == Switch::Pptp {
        removed += clear(&mut maps.pptp_calls_in)?;
        clear(&mut maps.pptp_calls_out)?;
    }
    if switch == Switch::Ipsec {
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
