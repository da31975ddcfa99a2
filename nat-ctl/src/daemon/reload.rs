//! SIGHUP and `nat-ctl reload`: the configuration file again, applied where it can be.

use crate::config::FileConfig;

use super::{Daemon, configure, plan};

impl Daemon<'_> {
    pub(super) fn reload(&mut self) {
        let plan = match plan(self.args) {
            Ok(p) => p,
            Err(e) => {
                log::error!("reload rejected, the running settings stay: {e:#}");
                self.reload_failed(&e);
                return;
            }
        };
        let (old, new) = (&self.plan.settings, &plan.settings);
        if plan.lan_index != self.plan.lan_index
            || plan.wan_index != self.plan.wan_index
            || new.max_sessions != old.max_sessions
            || new.max_mappings != old.max_mappings
        {
            log::warn!(
                "reload: interfaces and table sizes only change with a restart (nat-ctl detach, then run); applying the rest"
            );
        }
        let file = FileConfig::discover(self.args.config.as_deref()).unwrap_or_default();
        let explicit = [
            file.passthrough.pptp,
            file.passthrough.l2tp,
            file.passthrough.ipsec,
        ];
        // The forwards first: all checked before any changes, so that a forward the file
        // cannot have changes nothing at all.
        let applied = crate::forwards::sync_file(&mut self.maps, &plan.settings.forwards, true)
            .and_then(|()| configure(&mut self.maps, &plan))
            .and_then(|(cfg, pool)| {
                for (switch, on) in nat_common::passthrough::Switch::ALL
                    .into_iter()
                    .zip(explicit)
                {
                    if let Some(on) = on {
                        crate::passthrough::set(&mut self.maps, switch, on)?;
                    }
                }
                Ok((cfg, pool))
            });
        match applied {
            Ok((cfg, pool)) => {
                self.pool = pool;
                // The daemon's level changes now; the data path keeps the level it was loaded
                // with until the next start.
                if std::env::var_os("RUST_LOG").is_none() {
                    log::set_max_level(plan.settings.log_level.filter());
                }
                self.cfg = cfg;
                self.plan = plan;
                self.state.reloads += 1;
                if let Err(e) = self.state.write(self.instance) {
                    log::warn!("reload applied, but recording it failed: {e:#}");
                }
                log::info!(
                    "reloaded: timeouts udp {} s, tcp {}/{} s, icmp {} s; filtering {}",
                    cfg.timeouts.udp,
                    cfg.timeouts.tcp_established,
                    cfg.timeouts.tcp_transitory,
                    cfg.timeouts.icmp,
                    self.plan.settings.filtering.name()
                );
            }
            Err(e) => {
                log::error!("reload failed while applying: {e:#}");
                self.reload_failed(&e);
            }
        }
    }

    /// Tells `nat-ctl reload`, which waits for the outcome, that this one failed.
    fn reload_failed(&mut self, e: &anyhow::Error) {
        self.state.reload_failures += 1;
        self.state.reload_error = Some(format!("{e:#}"));
        if let Err(e) = self.state.write(self.instance) {
            log::warn!("recording the failed reload failed: {e:#}");
        }
    }
}
