//! `nat-ctl detach`: remove the pinned links (detaching the programs) and maps.

use anyhow::{Result, bail};

use crate::pins::Instance;

pub fn detach(instance: &Instance) -> Result<()> {
    if let Some(pid) = instance.daemon_pid() {
        bail!(
            "instance '{}' is run by pid {pid}: stop it first (kill {pid}), or run it with --detach-on-exit",
            instance.name
        );
    }
    if !instance.dir().exists() {
        bail!(
            "no xdp-nat instance '{}' to detach (nothing under {})",
            instance.name,
            instance.dir().display()
        );
    }
    instance.remove_pins()?;
    // The pid file of a daemon that was killed (no daemon holds it: checked above).
    let _ = std::fs::remove_file(instance.lock_path());
    println!(
        "instance '{}' detached; its sessions are gone",
        instance.name
    );
    Ok(())
}
