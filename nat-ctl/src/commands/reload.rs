//! `nat-ctl reload`: checks the configuration the daemon runs with, then has it apply the
//! file (SIGHUP) and waits until it has. An invalid file is reported and nothing changes.

use anyhow::{Context as _, Result, bail};
use std::time::{Duration, Instant};

use crate::{
    config::{FileConfig, Overrides},
    pins::Instance,
};

pub fn reload(instance: &Instance) -> Result<()> {
    let (Some(pid), Some(state)) = (instance.daemon_pid(), instance.run_state()) else {
        bail!(
            "no daemon runs instance '{}': start it with `nat-ctl run` (settings are read when it starts)",
            instance.name
        );
    };
    // The same check the daemon makes, so the error reaches whoever asked.
    let file = FileConfig::discover(state.config.as_deref())?;
    file.settings(&Overrides {
        lan: state.lan.clone(),
        wan: state.wan.clone(),
        wan_addr: state.wan_addr,
        log_level: state.log_level,
    })
    .context("the configuration is invalid; the running settings stay")?;
    // A pid read from the daemon's own lock file, which it holds while it runs.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .with_context(|| format!("signalling daemon pid {pid}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let now = instance.run_state().unwrap_or_default();
        if now.reload_failures > state.reload_failures {
            bail!(
                "daemon pid {pid} could not apply the configuration: {}",
                now.reload_error.as_deref().unwrap_or("see its log")
            );
        }
        if now.reloads > state.reloads {
            println!(
                "reloaded {} (daemon pid {pid})",
                state
                    .config
                    .as_ref()
                    .map_or("defaults (no config file)".into(), |p| p
                        .display()
                        .to_string())
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("daemon pid {pid} did not confirm the reload within 10 s; see its log")
}
