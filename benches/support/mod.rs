//! Shared code of the namespace benchmarks (`compare`, `knock`): knocking and polling, the
//! reference systems, the raw-socket flooder, /proc readings and the report.
//!
//! Safety (docs/behaviour.md §6): every packet is sent inside network namespaces a [`crate::common::Lab`]
//! creates, with addresses from 198.18.0.0/15 and fd00:5eed::/64; every loop is bounded in
//! count and time, and every namespace, process and thread is cleaned up on drop (also when a
//! panic unwinds). Spoofed sources never include the server, the client or the legitimate
//! knock sources: see [`flood::SPOOF4_FIRST`].

#![allow(dead_code)] // each bench uses a part

pub mod flood;
pub mod probe;
pub mod procfs;
pub mod report;
pub mod scale;
pub mod sim;
pub mod systems;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Exits with a clear message (status 2) unless running as root: the benchmarks build network
/// namespaces and load nftables rules in them.
pub fn require_root_or_exit(bench: &str) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "{bench}: needs root (it builds network namespaces and loads nftables rules inside \
             them; the host's own namespace is never touched). Run: sudo cargo bench --bench {bench}"
        );
        std::process::exit(2);
    }
}

/// Makes SIGINT/SIGTERM set a flag that every loop of the benchmark checks, so that an
/// interrupted run unwinds and removes its namespaces instead of leaving them behind.
pub fn catch_interrupts() {
    let flag = STOP.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, Arc::clone(flag));
    }
}

/// Whether the run was interrupted (SIGINT/SIGTERM).
pub fn interrupted() -> bool {
    STOP.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// Panics (and so unwinds through every clean-up guard) when the run was interrupted.
pub fn check_interrupted() {
    if interrupted() {
        panic!("interrupted: cleaning up the namespaces and processes of this run");
    }
}

/// Debugging aid: when the environment variable `var` holds a number of seconds N, prints
/// `what` and waits N seconds (at most 600), so that a profiler or a person can look in.
pub fn debug_wait(var: &str, what: impl FnOnce() -> String) {
    let secs: u64 = std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if secs > 0 {
        eprintln!("{var}: {}; waiting {secs} s", what());
        sleep(std::time::Duration::from_secs(secs.min(600)));
    }
}

/// Sleeps `d`, waking early (within 100 ms) when the run is interrupted.
pub fn sleep(d: std::time::Duration) {
    let end = std::time::Instant::now() + d;
    while !interrupted() {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(std::time::Duration::from_millis(100)));
    }
}
