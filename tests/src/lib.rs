//! Shared by the root-only tests and the demo: network namespaces, the three-namespace lab,
//! a nat-ctl daemon under test, traffic helpers, and the BPF_PROG_TEST_RUN fixture.

pub mod daemon;
pub mod fixture;
pub mod lab;
pub mod model;
pub mod netns;
pub mod packets;
pub mod strongswan;
pub mod traffic;
pub mod tripwire;
pub mod vpn_peers;

use std::time::{Duration, Instant};

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A name unique to this process and call, for namespaces and instances.
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "xn{}{}{}",
        tag,
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}
