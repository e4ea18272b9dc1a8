//! Hot paths of the daemon: OTP verification and parsing, and one knock through the engine.
//!
//! The engine is measured with 1, 100 and 10,000 doors to show that the cost of a knock does
//! not depend on how many doors there are.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use portknock::config::Secret;
use portknock::engine::Engine;
use portknock::otp;
use portknock::port::KnockPort;

const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
const MINUTE: u32 = 29_000_000;

fn otp_benches(c: &mut Criterion) {
    let secret = Secret::new(*b"correct horse battery staple");
    let mut g = c.benchmark_group("otp");
    g.throughput(Throughput::Elements(1));

    let valid = otp::mac(&secret, SOURCE, MINUTE);
    g.bench_function("verify_skew1_valid", |b| {
        b.iter(|| otp::verify(&secret, black_box(SOURCE), black_box(&valid), MINUTE, 1))
    });
    // A forged OTP costs the same three MACs: the daemon's cost under a flood of garbage.
    let forged = [0x5a; otp::MAC_LEN];
    g.bench_function("verify_skew1_forged", |b| {
        b.iter(|| otp::verify(&secret, black_box(SOURCE), black_box(&forged), MINUTE, 1))
    });
    let payload = otp::payload(&secret, SOURCE, MINUTE);
    g.bench_function("parse_payload", |b| {
        b.iter(|| otp::parse_payload(black_box(&payload)))
    });
    g.finish();
}

/// The sequences of `n` doors of three ports each, all distinct.
fn doors(n: u16) -> Vec<Vec<KnockPort>> {
    (0..n)
        .map(|i| (0..3).map(|k| KnockPort::tcp(20_000 + 3 * i + k)).collect())
        .collect()
}

fn engine_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine_knock");
    g.throughput(Throughput::Elements(1));
    for n in [1u16, 100, 10_000] {
        let doors = doors(n);
        let mut engine = Engine::new(&doors, Duration::from_secs(10), 262_144);
        let now = Instant::now();
        // 4,096 sources take turns knocking whole sequences on doors spread over the list, so
        // every knock is a progress, an arming or an open, and all three are measured.
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::new("doors", n), &n, |b, _| {
            b.iter(|| {
                let round = k / 3;
                let source = IpAddr::V6(Ipv6Addr::new(
                    0xfd00,
                    0x5eed,
                    0,
                    0,
                    0,
                    0,
                    0,
                    (round % 4096) as u16,
                ));
                let door = &doors[round % doors.len()];
                let out = engine.knock(source, door[k % 3], now);
                k += 1;
                black_box(out)
            })
        });
    }
    // Spoofed first knocks from ever new sources at full capacity: each one evicts.
    let doors = doors(100);
    let mut engine = Engine::new(&doors, Duration::from_secs(10), 65_536);
    let now = Instant::now();
    let mut i = 0u128;
    let base = u128::from(Ipv6Addr::new(0xfd00, 0x5eed, 0, 0, 0, 0, 0, 0));
    g.bench_function("flood_first_knock_evicting", |b| {
        b.iter(|| {
            i += 1;
            black_box(engine.knock(
                IpAddr::V6(Ipv6Addr::from(base + i)),
                KnockPort::tcp(20_000),
                now,
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, otp_benches, engine_benches);
criterion_main!(benches);
