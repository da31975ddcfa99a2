//! `nat-ctl stats`: every counter, summed over CPUs, by name; and per passthrough protocol
//! its switch, sessions, packets translated, drops while off and allocation failures.

use anyhow::Result;
use nat_common::{
    counters::{Counter, CounterKind},
    passthrough::Switch,
};
use serde_json::{Map, Value, json};

use crate::{
    pins::Instance,
    state::{NatMaps, entries},
};

struct ClassStats {
    name: &'static str,
    on: bool,
    sessions: usize,
    translated: u64,
    switch_off: u64,
    alloc_fail: u64,
}

fn per_class(maps: &NatMaps, counters: &[(Counter, u64)]) -> Result<Vec<ClassStats>> {
    let sessions = maps.sessions()?;
    let value = |c: Counter| {
        counters
            .iter()
            .find(|(x, _)| *x == c)
            .map_or(0, |(_, v)| *v)
    };
    let mut out = Vec::new();
    for switch in Switch::ALL {
        let (name, class) = (switch.name(), switch.class());
        let counters = Counter::for_class(class).expect("switch classes have counters");
        let (translated, off, fail) = (
            counters.translated,
            counters.switch_off,
            counters.alloc_fail,
        );
        let mut n = sessions.iter().filter(|(_, s)| s.class == class).count();
        if switch == Switch::Pptp {
            n += maps.pptp_calls()?.len();
        }
        if switch == Switch::Ipsec {
            n += entries(&maps.esp_out)?.len();
        }
        out.push(ClassStats {
            name,
            on: maps.switch(switch)?,
            sessions: n,
            translated: value(translated),
            switch_off: value(off),
            alloc_fail: value(fail),
        });
    }
    Ok(out)
}

pub fn stats(instance: &Instance, json_out: bool) -> Result<()> {
    let maps = NatMaps::open_pinned(instance)?;
    let counters = maps.counters()?;
    let classes = per_class(&maps, &counters)?;
    if json_out {
        let mut m = Map::new();
        for (c, v) in &counters {
            m.insert(c.name().to_string(), json!(v));
        }
        let mut p = Map::new();
        for c in &classes {
            p.insert(
                c.name.to_string(),
                json!({"switch": if c.on { "on" } else { "off" }, "sessions": c.sessions, "translated": c.translated,
                       "dropped_switch_off": c.switch_off, "alloc_failures": c.alloc_fail}),
            );
        }
        println!(
            "{}",
            json!({"instance": instance.name, "counters": Value::Object(m), "passthrough": Value::Object(p)})
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
            println!("  {:<30} {:>14}  {}", c.name(), v, c.help());
        }
    }
    println!("passthrough:    switch  sessions    translated  dropped-off  alloc-fail");
    for c in &classes {
        println!(
            "  {:<13} {:<6} {:>9} {:>13} {:>12} {:>11}",
            c.name,
            if c.on { "on" } else { "off" },
            c.sessions,
            c.translated,
            c.switch_off,
            c.alloc_fail
        );
    }
    Ok(())
}
