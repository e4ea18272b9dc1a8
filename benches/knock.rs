//! Knock-to-open latency, scale and idle cost of the real daemon, over veth between network
//! namespaces (docs/behaviour.md §6 addresses only). Needs root. Run: `cargo bench --bench knock`.
//!
//! The same scenario is part of `cargo bench --bench compare` (scale), which also measures
//! knockd and the in-kernel recipe; this bench is the quick portknock-only subset. Prints
//! `name=value` lines, then a table. Each trial knocks from its own source address, so trials
//! are independent (an OTP is accepted once per source and minute) and need no clean-up.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

const TRIALS: usize = 50;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs bench targets without `--bench`: this one only runs under
        // `cargo bench`.
        return;
    }
    support::require_root_or_exit("knock");
    support::catch_interrupts();
    let (table, _) = support::scale::run(TRIALS, 5);
    print!("{}", table.render());
}
