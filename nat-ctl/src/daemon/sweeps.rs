//! The sweeper's thread: sweeps run beside the event loop, never in it, so that a long one (a
//! million sessions take a quarter of a second to walk) never holds up signals, reloads,
//! netlink events or port mapping requests. The thread has its own handle on the pinned maps, reads the
//! timeouts from CONFIG at each sweep (a reload changes them), and reports each sweep that
//! changed something to the loop, which owns the port pool and writes its bitmap.

use anyhow::Result;
use std::{
    sync::mpsc::{self, RecvTimeoutError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{monotonic_ns, pins::Instance, state::NatMaps, sweeper};

/// The running sweeper thread; dropping it stops the thread, after the sweep under way. If
/// the thread ends by itself (it cannot open the maps, it panicked), its report channel
/// closes and the daemon stops with an error rather than run on with nothing expiring.
pub(crate) struct Sweeps {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sweeps {
    /// Starts sweeping `instance`'s maps every `interval` (sweeper::Schedule; longer when
    /// sweeps would take more than their share of a CPU: sweeper::next_sweep_in), with the
    /// daemon's walk of the session table (`state::walk_fd`); sweeps that changed something
    /// are sent to `done`.
    pub(crate) fn start(
        instance: &Instance,
        interval: Duration,
        done: tokio::sync::mpsc::UnboundedSender<sweeper::SweepReport>,
        walk: std::os::fd::OwnedFd,
    ) -> Result<Sweeps> {
        let (stop, stopped) = mpsc::channel();
        let instance = instance.clone();
        // The maps are opened here, so that a daemon whose pins cannot be opened says so at
        // start; NatMaps is not Send, so the thread opens its own from the same pins.
        drop(NatMaps::open_pinned(&instance)?);
        let thread = std::thread::Builder::new()
            .name("sweeper".into())
            .spawn(move || {
                let mut maps = match NatMaps::open_pinned(&instance) {
                    Ok(m) => m,
                    Err(e) => {
                        log::error!("the sweeper cannot open the maps: {e:#}; nothing expires");
                        return;
                    }
                };
                maps.set_walk(walk);
                run(&mut maps, interval, &stopped, &done);
            })?;
        Ok(Sweeps {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Sweeps {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sweeps until `stopped` says so (or its sender is gone).
fn run(
    maps: &mut NatMaps,
    interval: Duration,
    stopped: &mpsc::Receiver<()>,
    done: &tokio::sync::mpsc::UnboundedSender<sweeper::SweepReport>,
) {
    // The first sweep at once (a walk): adopted tables may have gone unswept while no daemon
    // ran.
    let mut wait = Duration::ZERO;
    let mut told = false;
    let mut schedule = sweeper::Schedule::new(interval);
    loop {
        match stopped.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let start = Instant::now();
        let now = monotonic_ns();
        let swept = maps
            .read_config()
            .and_then(|cfg| schedule.sweep(maps, &cfg, now));
        // A sweep rewrites the taken ports itself; one that failed may have freed ports first,
        // which must not stay skipped by the draws.
        if swept.is_err() {
            if let Err(e) = sweeper::rewrite_ports_taken(maps) {
                log::warn!("cannot update the taken ports' bitmap: {e:#}");
            }
        }
        match swept {
            Ok(r) if r != Default::default() => {
                if done.send(r).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => log::warn!("sweep failed: {e:#}"),
        }
        let took = start.elapsed();
        let period = schedule.next_in(now, took);
        // Once: the walks that take in the filter entries take longer than the others, so the
        // interval may stretch for one and not the next.
        if period > interval && !told {
            log::info!(
                "a sweep took {took:.1?}: sweeping every {period:.0?} or so, not every {interval:?}, to stay under 1/{} of a CPU",
                sweeper::SWEEP_DUTY
            );
            told = true;
        }
        wait = period.saturating_sub(took);
    }
}
