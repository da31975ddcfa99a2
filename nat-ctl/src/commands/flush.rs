//! `nat-ctl flush [--proto P]`: removes sessions (like `conntrack -F`); their mappings are
//! released by the sweeper into the usual 120 s cooling period.

use anyhow::Result;
use nat_common::proto::{IPPROTO_ESP, IPPROTO_GRE, IPPROTO_UDP};

use crate::{
    cli::ProtoFilter,
    pins::Instance,
    state::{NatMaps, clear},
};

pub fn flush(instance: &Instance, proto: Option<ProtoFilter>) -> Result<()> {
    let mut maps = NatMaps::open_pinned(instance)?;
    let want = proto.map(ProtoFilter::number);
    let matches = |p: u8| want.is_none_or(|w| w == p);
    let mut removed = 0;
    for (k, s) in maps.sessions()? {
        if matches(k.proto) && maps.remove_session(&k, &s) {
            removed += 1;
        }
    }
    for (k, _) in crate::state::entries(&maps.filters)? {
        if matches(k.proto) {
            let _ = maps.filters.remove(&k);
        }
    }
    if matches(IPPROTO_UDP) {
        removed += clear(&mut maps.ike_sas);
    }
    if matches(IPPROTO_GRE) {
        removed += clear(&mut maps.pptp_calls_in);
        clear(&mut maps.pptp_calls_out);
    }
    if matches(IPPROTO_ESP) {
        removed += clear(&mut maps.esp_out);
        clear(&mut maps.esp_in);
        clear(&mut maps.esp_pending);
    }
    println!(
        "flushed {removed} entr{}",
        if removed == 1 { "y" } else { "ies" }
    );
    Ok(())
}
