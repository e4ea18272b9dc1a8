//! How often a shuffled port scan opens a three-port simple door: millions of scans simulated
//! through portknock's own engine (docs/behaviour.md §2, scans). Run:
//! `cargo bench --bench scan` (`BENCH_SCANS=N` to change the number; default ten million).
//!
//! A scan tries every port of a range once, in a random order, as `nmap` does by default. What
//! the engine sees of it: nothing before the first knock port (a source without progress is
//! not tracked), then the knock ports in the order the scan reached them, with the other ports
//! it tried in between. So each scan is simulated by drawing where in the scan's order the
//! three knock ports fall, and feeding the engine the knocks and, between them, as many random
//! other ports as the scan tried there (at most 200: by then the scan rule has long decided).
//! Scans run at 10,000 ports a second, so a full-range scan takes 6.5 s, inside the knock
//! timeout. No network is touched.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use portknock::engine::{Engine, Outcome};
use portknock::port::KnockPort;

const DOOR: [u16; 3] = [7000, 9000, 8000];
const TIMEOUT: Duration = Duration::from_secs(10);

/// xorshift64*: a fixed, fast stream, so that every run simulates the same scans.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Of `scans` shuffled scans over `ports` ports (the door's three among them), how many open
/// the door with the engine as it is, and how many would if only the knock ports' order
/// counted (what a scan gets from the rules without the scan rule).
fn simulate(scans: u64, ports: u64) -> (u64, u64) {
    let door: Vec<KnockPort> = DOOR.iter().map(|&p| KnockPort::tcp(p)).collect();
    let mut engine = Engine::new(&[door], TIMEOUT, 1024);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let start = Instant::now();
    let (mut opened, mut in_order) = (0, 0);
    for scan in 0..scans {
        // The source changes with every scan, so no scan inherits another's state.
        let source = IpAddr::V4(Ipv4Addr::from(scan as u32));
        let mut at = [0u64; 3];
        for i in 0..3 {
            at[i] = loop {
                let p = rng.below(ports);
                if !at[..i].contains(&p) {
                    break p;
                }
            };
        }
        let mut order: Vec<(u64, u16)> = at.iter().copied().zip(DOOR).collect();
        order.sort_unstable();
        if order.iter().map(|o| o.1).eq(DOOR) {
            in_order += 1;
        }
        let mut open = false;
        let mut previous: Option<u64> = None;
        for (position, knock) in order {
            if let Some(last) = previous {
                let between = (position - last - 1).min(200);
                for k in 0..between {
                    let port = 10_000 + rng.below(55_000) as u16;
                    let now = start + Duration::from_micros(100 * (last + 1 + k));
                    engine.knock(source, KnockPort::tcp(port), now);
                }
            }
            let now = start + Duration::from_micros(100 * position);
            let out = engine.knock(source, KnockPort::tcp(knock), now);
            open |= out.iter().any(|o| matches!(o, Outcome::Opened { .. }));
            previous = Some(position);
        }
        opened += u64::from(open);
    }
    (opened, in_order)
}

fn main() {
    // Bench targets are also built by `cargo test`; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let scans: u64 = std::env::var("BENCH_SCANS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    for (what, ports) in [("every port", 65_535), ("22 and 6990-9010", 2_022)] {
        let started = Instant::now();
        let (opened, in_order) = simulate(scans, ports);
        let bound = if opened == 0 {
            format!(
                "under {:.1e} per scan (95%, three over the number of scans)",
                3.0 / scans as f64
            )
        } else {
            format!("{:.2e} per scan", opened as f64 / scans as f64)
        };
        println!(
            "scan_{ports}_ports: {opened} of {scans} shuffled scans of {what} opened the door: {bound}; \
             by the knock ports' order alone {in_order} would have ({:.3} of scans); {:.1} s",
            in_order as f64 / scans as f64,
            started.elapsed().as_secs_f64()
        );
    }
}
