//! `nat-ctl top`: live rates from the per-CPU counters, one line per interval.

use anyhow::Result;
use nat_common::counters::{Counter, CounterKind};
use std::time::{Duration, Instant};

use crate::{cli::TopArgs, pins::Instance, state::NatMaps};

struct Sample {
    at: Instant,
    forwarded: u64,
    dropped: u64,
    created: u64,
}

fn sample(maps: &NatMaps) -> Result<Sample> {
    let mut s = Sample {
        at: Instant::now(),
        forwarded: 0,
        dropped: 0,
        created: 0,
    };
    for (c, v) in maps.counters()? {
        match (c.kind(), c) {
            (
                CounterKind::Forwarded,
                Counter::OutRedirected
                | Counter::InRedirected
                | Counter::OutPassKernel
                | Counter::InPassKernel,
            ) => s.forwarded += v,
            (CounterKind::Drop, _) => s.dropped += v,
            (_, Counter::SessionCreated) => s.created += v,
            _ => {}
        }
    }
    Ok(s)
}

pub fn top(instance: &Instance, args: &TopArgs) -> Result<()> {
    let maps = NatMaps::open_pinned(instance)?;
    println!(
        "{:>12} {:>14} {:>14} {:>10}",
        "packets/s", "new sessions/s", "dropped/s", "sessions"
    );
    let mut last = sample(&maps)?;
    let mut n = 0;
    while args.count.is_none_or(|c| n < c) {
        std::thread::sleep(Duration::from_secs(args.interval));
        let now = sample(&maps)?;
        let secs = now.at.duration_since(last.at).as_secs_f64();
        let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs;
        println!(
            "{:>12.0} {:>14.0} {:>14.0} {:>10}",
            rate(now.forwarded, last.forwarded),
            rate(now.created, last.created),
            rate(now.dropped, last.dropped),
            maps.sessions()?.len()
        );
        last = now;
        n += 1;
    }
    Ok(())
}
