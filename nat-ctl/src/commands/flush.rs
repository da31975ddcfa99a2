//! `nat-ctl flush [--proto P]`: removes sessions (like `conntrack -F`); their mappings are
//! released by the sweeper into the usual 120 s cooling period.

use anyhow::Result;

use crate::{cli::ProtoFilter, pins::Instance, state::NatMaps};

pub fn flush(instance: &Instance, proto: Option<ProtoFilter>) -> Result<()> {
    let mut maps = NatMaps::open_pinned(instance)?;
    let removed = maps.flush(proto.map(ProtoFilter::number))?;
    println!(
        "flushed {removed} entr{}",
        if removed == 1 { "y" } else { "ies" }
    );
    Ok(())
}
