//! `nat-ctl passthrough [enable|disable NAME] [--json]`.

use anyhow::Result;
use serde_json::{Map, Value, json};

use crate::{cli::PassthroughAction, passthrough, pins::Instance, state::NatMaps};

pub fn passthrough(
    instance: &Instance,
    action: Option<&PassthroughAction>,
    json_out: bool,
) -> Result<()> {
    let mut maps = NatMaps::open_pinned(instance)?;
    if let Some(action) = action {
        let (switch, on) = match action {
            PassthroughAction::Enable { name } => (*name, true),
            PassthroughAction::Disable { name } => (*name, false),
        };
        let was = maps.switch(switch)?;
        let removed = passthrough::set(&mut maps, switch, on)?;
        if !json_out {
            let state = if on { "on" } else { "off" };
            let change = if was == on { "already " } else { "" };
            println!(
                "{} passthrough {change}{state}{}",
                switch.name(),
                if removed > 0 {
                    format!(" ({removed} sessions removed)")
                } else {
                    String::new()
                }
            );
            return Ok(());
        }
    }
    let list = passthrough::list(&maps)?;
    if json_out {
        let mut m = Map::new();
        for (name, on) in list {
            m.insert(name.to_string(), json!(if on { "on" } else { "off" }));
        }
        println!("{}", Value::Object(m));
    } else {
        for (name, on) in list {
            println!("{name:<6} {}", if on { "on" } else { "off" });
        }
    }
    Ok(())
}
