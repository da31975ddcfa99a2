//! `nat-ctl stats`: every counter, summed over CPUs, by name.

use anyhow::Result;
use nat_common::counters::CounterKind;
use serde_json::{Map, Value, json};

use crate::{pins::Instance, state::NatMaps};

pub fn stats(instance: &Instance, json_out: bool) -> Result<()> {
    let maps = NatMaps::open_pinned(instance)?;
    let counters = maps.counters()?;
    if json_out {
        let mut m = Map::new();
        for (c, v) in &counters {
            m.insert(c.name().to_string(), json!(v));
        }
        println!(
            "{}",
            json!({"instance": instance.name, "counters": Value::Object(m)})
        );
        return Ok(());
    }
    for (title, kind) in [
        ("forwarded", CounterKind::Forwarded),
        ("state", CounterKind::State),
        ("passed to the kernel untouched", CounterKind::Pass),
        ("dropped", CounterKind::Drop),
    ] {
        println!("{title}:");
        for (c, v) in counters.iter().filter(|(c, _)| c.kind() == kind) {
            println!("  {:<26} {:>14}  {}", c.name(), v, c.help());
        }
    }
    Ok(())
}
