//! The passthrough switches as a step of the programs: a packet of a class that is switched
//! off goes no further.

use nat_common::counters::{ClassCounters, Counter};

use crate::maps::switch_on;

/// The counters of passthrough class `class` (none for ordinary traffic), or the drop
/// reason when the class is switched off.
#[inline(always)]
pub fn gate(class: u8) -> Result<Option<ClassCounters>, Counter> {
    let counters = Counter::for_class(class);
    if let Some(ClassCounters { switch_off, .. }) = counters {
        if !switch_on(class) {
            return Err(switch_off);
        }
    }
    Ok(counters)
}
