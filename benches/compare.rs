//! portknock against knockd and the classic in-kernel nftables recipe, in one run, on the same
//! namespace topology (docs/behaviour.md §6 addresses only). Needs root. Run: `cargo bench --bench compare`
//! (all scenarios), or name some: `cargo bench --bench compare -- latency flood spoof scale
//! micro`; `quick` shortens everything for a smoke test. See BENCHMARKS.md.
//!
//! Scenarios:
//! 1. latency — last knock sent → first successful connection, 50 trials per system and mode;
//! 2. flood — spoofed SYN floods at the knock ports (20k pps, 100k pps, flat out) and a flood of
//!    wrong OTPs, while a legitimate client knocks 10 times per mode;
//! 3. spoof — first knocks from 200,000 distinct spoofed sources, then a legitimate knock;
//! 4. scale — apply time and latency with 1, 100 and 10,000 doors;
//! 5. micro — `cargo bench --bench core` (criterion), its figures collected here.
//!
//! Prints `name=value` lines as figures come in, then Markdown tables and the targets.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::{ip, SERVER4};
use support::flood::{Flooder, Kind, Outcome as FloodOutcome, Plan};
use support::probe::{otp_trial, simple_trial, Series};
use support::procfs::{self, CpuMeter};
use support::report::{f1, kv, load_note, us, Table};
use support::systems::{
    add_sources, is_legitimate, Running, System, OTP_PORT, OTP_PROTECTED, PROTECTED, SEQUENCE,
};
use support::{check_interrupted, sim};

/// Knobs of one run (`quick` shrinks them).
#[derive(Debug, Clone)]
struct Knobs {
    trials: usize,
    flood_secs: u64,
    rates: Vec<Option<u64>>,
    spoofed: u64,
    legit_per_mode: usize,
    idle_secs: u64,
    systems: Vec<System>,
}

impl Knobs {
    fn full() -> Knobs {
        Knobs {
            trials: 50,
            flood_secs: 15,
            rates: vec![Some(20_000), Some(100_000), None],
            spoofed: 200_000,
            legit_per_mode: 10,
            idle_secs: 5,
            systems: System::ALL.to_vec(),
        }
    }
    fn quick() -> Knobs {
        Knobs {
            trials: 10,
            flood_secs: 6,
            rates: vec![Some(20_000), None],
            spoofed: 20_000,
            legit_per_mode: 4,
            idle_secs: 1,
            systems: System::ALL.to_vec(),
        }
    }
}

/// Everything measured, for the target check at the end.
#[derive(Default)]
struct Results {
    latency: BTreeMap<String, Series>,
    floods: Vec<FloodResult>,
    spoof: Vec<SpoofResult>,
    scale: Vec<support::scale::Row>,
    micro: Vec<(String, f64)>,
    tables: Vec<Table>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --benches` runs bench targets without `--bench`: this one only runs under
        // `cargo bench`, as it floods namespaces for minutes.
        eprintln!("compare: run it with `cargo bench --bench compare` (as root); nothing done");
        return;
    }
    support::require_root_or_exit("compare");
    support::catch_interrupts();
    let quick = args.iter().any(|a| a == "quick");
    let mut knobs = if quick { Knobs::quick() } else { Knobs::full() };
    // Debugging aids: BENCH_RATES=20000,max and BENCH_SYSTEMS=portknock,nft narrow a run.
    if let Ok(rates) = std::env::var("BENCH_RATES") {
        knobs.rates = rates.split(',').map(|r| r.trim().parse().ok()).collect();
    }
    if let Ok(systems) = std::env::var("BENCH_SYSTEMS") {
        knobs.systems = System::ALL
            .into_iter()
            .filter(|s| systems.split(',').any(|x| x.trim() == s.name()))
            .collect();
    }
    let all = ["latency", "flood", "spoof", "scale", "micro"];
    let mut chosen: Vec<&str> = all
        .iter()
        .copied()
        .filter(|s| args.iter().any(|a| a == s))
        .collect();
    if chosen.is_empty() {
        chosen = all.to_vec();
    }
    machine();
    let mut res = Results::default();
    let started = SystemTime::now();
    for scenario in &chosen {
        check_interrupted();
        println!("\n## scenario {scenario} (load {})", load_note());
        match *scenario {
            "latency" => latency(&knobs, &mut res),
            "flood" => flood(&knobs, &mut res),
            "spoof" => spoof(&knobs, &mut res),
            "scale" => {
                let (table, rows) = support::scale::run(knobs.trials, knobs.idle_secs);
                res.tables.push(table);
                res.scale = rows;
            }
            "micro" => micro(&mut res, started),
            _ => unreachable!(),
        }
    }
    println!("\n# Results (load 1/5 min at the end: {})", load_note());
    for t in &res.tables {
        print!("{}", t.render());
    }
    print!("{}", targets(&res).render());
}

/// The machine, for the record.
fn machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let run = |p: &str, a: &[&str]| {
        Command::new(p)
            .args(a)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    kv(
        "machine_nproc",
        thread::available_parallelism().map_or(0, |n| n.get()),
    );
    kv("machine_cpu", cpu);
    kv("machine_kernel", run("uname", &["-r"]));
    kv("machine_nft", run("nft", &["--version"]));
    kv(
        "machine_knockd",
        run("dpkg-query", &["-W", "-f", "${Version}", "knockd"]),
    );
    kv("machine_load_1_5_15", {
        let (a, b, c) = procfs::load();
        format!("{a:.2}/{b:.2}/{c:.2}")
    });
    kv("machine_fuzzer_processes", procfs::fuzzers_running());
}

// ---------------------------------------------------------------------------------------------
// 1. latency

fn latency(k: &Knobs, res: &mut Results) {
    let mut table = Table::new(
        "latency: last knock sent → first successful connection (µs)",
        &[
            "system", "mode", "trials", "fail", "min", "median", "p95", "max", "load",
        ],
    );
    for &system in &k.systems {
        let r = Running::start(system, "");
        let with_otp = system == System::Portknock;
        let sources = add_sources(&r.lab, 0, k.trials * if with_otp { 2 } else { 1 });
        let trials = k.trials;
        let give_up = Duration::from_secs(if system == System::Knockd { 5 } else { 3 });
        let (simple, otp) = r.lab.clients[0]
            .run(move || {
                let server = ip(SERVER4);
                let (mut simple, mut otp) = (Series::default(), Series::default());
                for &s in &sources[..trials] {
                    if support::interrupted() {
                        break;
                    }
                    simple.push(simple_trial(s, server, &SEQUENCE, PROTECTED, give_up));
                }
                for &s in &sources[trials..] {
                    if support::interrupted() {
                        break;
                    }
                    otp.push(otp_trial(s, server, OTP_PORT, OTP_PROTECTED, give_up));
                }
                (simple, otp)
            })
            .expect("inside the client namespace");
        let load = load_note();
        let mut modes = vec![("simple", simple)];
        if with_otp {
            modes.push(("otp", otp));
        }
        for (mode, s) in modes {
            let key = format!("latency_{}_{mode}", system.name());
            kv(&format!("{key}_trials"), s.trials());
            kv(&format!("{key}_failures"), s.failures);
            kv(&format!("{key}_min_us"), us(s.min_us()));
            kv(&format!("{key}_median_us"), us(s.median_us()));
            kv(&format!("{key}_p95_us"), us(s.p95_us()));
            kv(&format!("{key}_max_us"), us(s.max_us()));
            kv(&format!("{key}_load"), &load);
            table.row(vec![
                system.name().into(),
                mode.into(),
                s.trials().to_string(),
                s.failures.to_string(),
                us(s.min_us()),
                us(s.median_us()),
                us(s.p95_us()),
                us(s.max_us()),
                load.clone(),
            ]);
            res.latency.insert(format!("{}/{mode}", system.name()), s);
        }
    }
    res.tables.push(table);
}

// ---------------------------------------------------------------------------------------------
// 2. flood

struct FloodResult {
    system: System,
    flood: &'static str,
    rate: Option<u64>,
    out: FloodOutcome,
    delivered_pps: f64,
    simple: Series,
    otp: Option<Series>,
    cpu: Option<f64>,
    peak_rss: Option<f64>,
    spoofed_grants: usize,
    spoofed_otp_grants: usize,
    expected_engine: Option<usize>,
    expected_recipe: Option<usize>,
    distinct_knockers: Option<usize>,
    alive: bool,
    after: Option<Duration>,
    recovered: Option<Duration>,
    load: String,
}

/// How long after a flood the system may take to answer a legitimate knock again.
const RECOVERY: Duration = Duration::from_secs(30);
/// Knocks tried after a flood, at most (each gives up after 3 s).
const RECOVERY_TRIES: usize = 12;

fn rate_name(rate: Option<u64>) -> String {
    rate.map_or_else(|| "max".into(), |r| format!("{}k", r / 1000))
}

/// Packets the server's bridge passed up to its IP stack so far.
fn rx_packets(r: &Running) -> u64 {
    let out = r
        .lab
        .server
        .command("ip")
        .args(["-j", "-s", "link", "show", "br0"])
        .output();
    out.ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|j| j[0]["stats64"]["rx"]["packets"].as_u64())
        .unwrap_or(0)
}

fn flood(k: &Knobs, res: &mut Results) {
    let mut table = Table::new(
        "flood: spoofed packets while a legitimate client knocks",
        &[
            "system",
            "flood",
            "rate",
            "sent pps",
            "rx pps",
            "simple ok",
            "simple med µs",
            "otp ok",
            "otp med µs",
            "CPU %",
            "peak RSS MiB",
            "spoofed grants",
            "replay: spec / recipe",
            "knocking srcs",
            "alive, next knock",
            "load",
        ],
    );
    for (i, &rate) in k.rates.iter().enumerate() {
        for &system in &k.systems {
            let kind = Kind::Syn {
                knock_ports: SEQUENCE.to_vec(),
                knock_share: 0.5,
            };
            let r = run_flood(system, kind, "syn", rate, 1000 + i as u64, k);
            table.row(flood_row(&r));
            res.floods.push(r);
        }
    }
    for (i, &rate) in k.rates.iter().enumerate() {
        if !k.systems.contains(&System::Portknock) {
            break;
        }
        let kind = Kind::OtpJunk { port: OTP_PORT };
        let r = run_flood(
            System::Portknock,
            kind,
            "otp-junk",
            rate,
            2000 + i as u64,
            k,
        );
        table.row(flood_row(&r));
        res.floods.push(r);
    }
    res.tables.push(table);
}

fn ok_of(s: &Series) -> String {
    format!("{}/{}", s.samples.len(), s.trials())
}

fn flood_row(r: &FloodResult) -> Vec<String> {
    vec![
        r.system.name().into(),
        r.flood.into(),
        rate_name(r.rate),
        format!("{:.0}", r.out.pps()),
        format!("{:.0}", r.delivered_pps),
        ok_of(&r.simple),
        us(r.simple.median_us()),
        r.otp.as_ref().map_or("-".into(), ok_of),
        r.otp.as_ref().map_or("-".into(), |s| us(s.median_us())),
        if r.system == System::Nft {
            "kernel".into()
        } else {
            f1(r.cpu)
        },
        f1(r.peak_rss),
        if r.flood == "otp-junk" {
            format!("{} (port {OTP_PROTECTED})", r.spoofed_otp_grants)
        } else {
            r.spoofed_grants.to_string()
        },
        match (r.expected_engine, r.expected_recipe) {
            (Some(e), Some(n)) => format!("{e} / {n}"),
            _ => "-".into(),
        },
        r.distinct_knockers.map_or("-".into(), |d| d.to_string()),
        format!(
            "{}, {}",
            if r.alive { "yes" } else { "DIED" },
            after_note(r.after, r.recovered)
        ),
        r.load.clone(),
    ]
}

/// The first legitimate knock after a flood: its latency, and when it came if not at once.
fn after_note(after: Option<Duration>, recovered: Option<Duration>) -> String {
    match (after, recovered) {
        (Some(a), Some(r)) if r > Duration::from_secs(3) => format!(
            "{:.0} µs after {:.0} s stalled",
            a.as_secs_f64() * 1e6,
            r.as_secs_f64() - a.as_secs_f64()
        ),
        (Some(a), _) => format!("{:.0} µs", a.as_secs_f64() * 1e6),
        _ => format!("none within {} s", RECOVERY.as_secs()),
    }
}

fn run_flood(
    system: System,
    kind: Kind,
    flood: &'static str,
    rate: Option<u64>,
    seed: u64,
    k: &Knobs,
) -> FloodResult {
    let r = Running::start(system, "");
    let n = k.legit_per_mode;
    let with_otp = system == System::Portknock;
    // Sources: n simple, n OTP, then pairs (simple, OTP) for the knocks after the flood.
    let legit = add_sources(&r.lab, 0, 2 * n + 2 * RECOVERY_TRIES);
    let record = matches!(kind, Kind::Syn { .. });
    let pid = r.pid();
    let rx0 = rx_packets(&r);
    let meter = pid.map(CpuMeter::start);
    let flood_len = Duration::from_secs(k.flood_secs);
    let flooder = Flooder::start(
        &r.lab.clients[0],
        Plan {
            kind,
            rate,
            // The flood is stopped below once the legitimate client is done; this is the bound.
            max: flood_len + Duration::from_secs(30),
            seed,
            record,
        },
    );
    let t0 = Instant::now();
    if let Some(pid) = pid {
        // For `perf record -g -p PID` while the flood runs.
        eprintln!(
            "flood {flood} {} on {}: pid {pid}",
            rate_name(rate),
            system.name()
        );
    }
    // The legitimate client: n simple knocks (and n OTP knocks on portknock), spread over the
    // flood after a 2 s ramp-up.
    let attempts = if with_otp { 2 * n } else { n };
    let window = flood_len.saturating_sub(Duration::from_secs(3));
    let spacing = window / attempts as u32;
    let give_up = Duration::from_secs(2);
    let sources = legit.clone();
    let (simple, otp) = r.lab.clients[0]
        .run(move || {
            let server = ip(SERVER4);
            let (mut simple, mut otp) = (Series::default(), Series::default());
            for a in 0..attempts {
                if support::interrupted() {
                    break;
                }
                let due = Duration::from_secs(2) + spacing * a as u32;
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    thread::sleep(wait);
                }
                // Alternate the modes so both see the whole flood.
                let (mode_otp, idx) = if with_otp {
                    (a % 2 == 1, a / 2)
                } else {
                    (false, a)
                };
                if mode_otp {
                    otp.push(otp_trial(
                        sources[n + idx],
                        server,
                        OTP_PORT,
                        OTP_PROTECTED,
                        give_up,
                    ));
                } else {
                    simple.push(simple_trial(
                        sources[idx],
                        server,
                        &SEQUENCE,
                        PROTECTED,
                        give_up,
                    ));
                }
            }
            (simple, otp)
        })
        .expect("inside the client namespace");
    if let Some(rest) = flood_len.checked_sub(t0.elapsed()) {
        support::sleep(rest);
    }
    let out = flooder.finish();
    let cpu = meter.as_ref().and_then(CpuMeter::percent);
    let rx = rx_packets(&r).saturating_sub(rx0);
    let delivered_pps = rx as f64 / out.elapsed.as_secs_f64().max(1e-9);
    if let Some(e) = &out.failed {
        eprintln!("flood {flood} on {}: {e}", system.name());
    }
    let peak_rss = pid.and_then(procfs::peak_rss_mib);
    let alive = r.alive();
    let conntrack = r.conntrack_count();
    // Let the system drain what is queued, then count grants held by spoofed sources.
    thread::sleep(Duration::from_millis(500));
    let spoofed_grants = r.granted().iter().filter(|a| !is_legitimate(a)).count();
    let spoofed_otp_grants = if with_otp {
        r.granted_port(OTP_PROTECTED)
            .iter()
            .filter(|a| !is_legitimate(a))
            .count()
    } else {
        0
    };
    hold_for_inspection(&r, &format!("after flood {flood} {}", rate_name(rate)));
    // Does the system answer again once the flood is over, and when? Knocks from fresh
    // sources every few seconds, bounded by RECOVERY: `after` is the latency of the first one
    // that opened (both modes for portknock), `recovered` how long after the flood it came.
    let spare: Vec<IpAddr> = legit[2 * n..].to_vec();
    let flood_end = Instant::now();
    let (after, recovered) = r.lab.clients[0]
        .run(move || {
            let server = ip(SERVER4);
            for pair in spare.chunks_exact(2) {
                if support::interrupted() || flood_end.elapsed() > RECOVERY {
                    break;
                }
                let give_up = Duration::from_secs(3);
                let s = simple_trial(pair[0], server, &SEQUENCE, PROTECTED, give_up);
                let both = if with_otp {
                    let o = otp_trial(pair[1], server, OTP_PORT, OTP_PROTECTED, give_up);
                    s.zip(o).map(|(a, b)| a.max(b))
                } else {
                    s
                };
                if let Some(d) = both {
                    return (Some(d), Some(flood_end.elapsed()));
                }
            }
            (None, None)
        })
        .expect("inside the client namespace");
    let log = r.log();
    let overruns = log.matches("knocks were lost").count();
    let (expected_engine, expected_recipe, distinct_knockers) = if record {
        (
            Some(sim::engine_grants(&out.knocks)),
            Some(sim::recipe_grants(&out.knocks)),
            Some(sim::distinct_sources(&out.knocks)),
        )
    } else {
        (None, None, None)
    };
    let load = load_note();
    let key = format!("flood_{flood}_{}_{}", rate_name(rate), system.name());
    kv(&format!("{key}_sent_pps"), format!("{:.0}", out.pps()));
    kv(&format!("{key}_rx_pps"), format!("{delivered_pps:.0}"));
    kv(&format!("{key}_sent"), out.sent);
    kv(&format!("{key}_send_errors"), out.send_errors);
    kv(
        &format!("{key}_seconds"),
        format!("{:.1}", out.elapsed.as_secs_f64()),
    );
    kv(&format!("{key}_simple_ok"), ok_of(&simple));
    kv(&format!("{key}_simple_median_us"), us(simple.median_us()));
    if with_otp {
        kv(&format!("{key}_otp_ok"), ok_of(&otp));
        kv(&format!("{key}_otp_median_us"), us(otp.median_us()));
    }
    kv(&format!("{key}_cpu_percent"), f1(cpu));
    kv(&format!("{key}_peak_rss_mib"), f1(peak_rss));
    kv(&format!("{key}_spoofed_grants"), spoofed_grants);
    kv(&format!("{key}_spoofed_otp_grants"), spoofed_otp_grants);
    if let (Some(e), Some(n), Some(d)) = (expected_engine, expected_recipe, distinct_knockers) {
        kv(&format!("{key}_replay_spec_engine_grants"), e);
        kv(&format!("{key}_replay_recipe_grants"), n);
        kv(&format!("{key}_knocking_sources"), d);
    }
    kv(&format!("{key}_alive"), alive);
    kv(
        &format!("{key}_after_flood_us"),
        after.map_or("FAILED".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e6)),
    );
    kv(
        &format!("{key}_after_flood_recovered_s"),
        recovered.map_or("never".into(), |d| format!("{:.1}", d.as_secs_f64())),
    );
    kv(&format!("{key}_overrun_warnings"), overruns);
    kv(
        &format!("{key}_conntrack_entries"),
        conntrack.map_or("-".into(), |c| c.to_string()),
    );
    kv(&format!("{key}_load"), &load);
    FloodResult {
        system,
        flood,
        rate,
        out: FloodOutcome {
            knocks: Vec::new(),
            ..out
        },
        delivered_pps,
        simple,
        otp: with_otp.then_some(otp),
        cpu,
        peak_rss,
        spoofed_grants,
        spoofed_otp_grants,
        expected_engine,
        expected_recipe,
        distinct_knockers,
        alive,
        after,
        recovered,
        load,
    }
}

// ---------------------------------------------------------------------------------------------
// 3. spoofed state

struct SpoofResult {
    system: System,
    sent: u64,
    rss_before: Option<f64>,
    peak_after: Option<f64>,
    legit4: Option<Duration>,
    legit6: Option<Duration>,
    alive: bool,
}

fn spoof(k: &Knobs, res: &mut Results) {
    let mut table = Table::new(
        &format!(
            "spoofed state: first knocks from {} distinct spoofed IPv6 sources, then legitimate knocks",
            k.spoofed
        ),
        &[
            "system",
            "sent",
            "RSS before MiB",
            "RSS after MiB",
            "peak MiB",
            "growth MiB",
            "state held",
            "legit IPv4 µs",
            "legit IPv6 µs",
            "alive",
            "load",
        ],
    );
    // The three systems, and the in-kernel recipe once more as commonly written: without a
    // size, so nft caps its stage sets at 65,535 elements.
    let mut runs: Vec<(System, Option<u32>, String)> = k
        .systems
        .iter()
        .map(|&s| (s, Some(support::systems::SET_SIZE), s.name().to_string()))
        .collect();
    if k.systems.contains(&System::Nft) {
        runs.push((System::Nft, None, "nft (no size)".into()));
    }
    for (system, size, label) in runs {
        let r = Running::start_with(system, "", size);
        let legit = add_sources(&r.lab, 0, 1);
        let pid = r.pid();
        let rss_before = pid.and_then(procfs::rss_mib);
        let out = Flooder::start(
            &r.lab.clients[0],
            Plan {
                kind: Kind::FirstKnocks6 {
                    port: SEQUENCE[0],
                    count: k.spoofed,
                },
                // Fast, but within what the NFLOG buffer absorbs: every first knock should
                // reach the daemon, so that its memory holds all of them.
                rate: Some(50_000),
                max: Duration::from_secs(30),
                seed: 3000,
                record: false,
            },
        )
        .wait();
        // Give the userspace side time to take in what is queued.
        thread::sleep(Duration::from_secs(2));
        let rss_after = pid.and_then(procfs::rss_mib);
        let peak_after = pid.and_then(procfs::peak_rss_mib);
        let tracked = match system {
            System::Nft => Some(r.set_len("knocknft", "k1_6")),
            System::Knockd => Some(r.log().matches("Stage 1").count()),
            System::Portknock => None,
        };
        let give_up = Duration::from_secs(if system == System::Knockd { 10 } else { 5 });
        let src4 = legit[0];
        let src6: IpAddr = portknock::netns::client6(0).parse().expect("client6");
        let (legit4, legit6) = r.lab.clients[0]
            .run(move || {
                let a = simple_trial(src4, ip(SERVER4), &SEQUENCE, PROTECTED, give_up);
                let b = simple_trial(src6, ip(common::SERVER6), &SEQUENCE, PROTECTED, give_up);
                (a, b)
            })
            .expect("inside the client namespace");
        let alive = r.alive();
        let load = load_note();
        let key = format!("spoof_{}", label.replace(' ', "_").replace(['(', ')'], ""));
        kv(&format!("{key}_sent"), out.sent);
        kv(
            &format!("{key}_seconds"),
            format!("{:.1}", out.elapsed.as_secs_f64()),
        );
        kv(&format!("{key}_rss_before_mib"), f1(rss_before));
        kv(&format!("{key}_rss_after_mib"), f1(rss_after));
        kv(&format!("{key}_peak_rss_mib"), f1(peak_after));
        kv(
            &format!("{key}_state_held"),
            tracked.map_or("-".into(), |t| t.to_string()),
        );
        let fmt = |d: Option<Duration>| {
            d.map_or("FAILED".to_string(), |d| {
                format!("{:.0}", d.as_secs_f64() * 1e6)
            })
        };
        kv(&format!("{key}_legit_ipv4_us"), fmt(legit4));
        kv(&format!("{key}_legit_ipv6_us"), fmt(legit6));
        kv(&format!("{key}_alive"), alive);
        kv(&format!("{key}_load"), &load);
        table.row(vec![
            label.clone(),
            out.sent.to_string(),
            f1(rss_before),
            f1(rss_after),
            f1(peak_after),
            f1(rss_before.zip(peak_after).map(|(a, b)| b - a)),
            tracked.map_or("-".into(), |t| t.to_string()),
            fmt(legit4),
            fmt(legit6),
            alive.to_string(),
            load.clone(),
        ]);
        res.spoof.push(SpoofResult {
            system,
            sent: out.sent,
            rss_before,
            peak_after,
            legit4,
            legit6,
            alive,
        });
    }
    res.tables.push(table);
}

// ---------------------------------------------------------------------------------------------
// 5. micro

/// Runs `cargo bench --bench core` (bounded) and collects criterion's medians of this run.
fn micro(res: &mut Results, since: SystemTime) {
    let manifest = env!("CARGO_MANIFEST_DIR");
    println!("running `cargo bench --bench core` (criterion; a few minutes)");
    let child = Command::new(env!("CARGO"))
        .args(["bench", "--bench", "core", "--", "--noplot"])
        .current_dir(manifest)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match child {
        Ok(c) => support::systems::ChildGuard(c),
        Err(e) => {
            eprintln!("micro: cannot run cargo: {e}");
            return;
        }
    };
    let start = Instant::now();
    loop {
        match child.0.try_wait() {
            Ok(Some(_)) => break,
            Ok(None)
                if start.elapsed() < Duration::from_secs(20 * 60) && !support::interrupted() =>
            {
                thread::sleep(Duration::from_millis(200))
            }
            _ => {
                eprintln!("micro: `cargo bench --bench core` took too long; stopped");
                break;
            }
        }
    }
    drop(child);
    let target = std::env::current_exe()
        .ok()
        .and_then(|p| p.ancestors().nth(3).map(|p| p.to_path_buf()))
        .unwrap_or_else(|| std::path::PathBuf::from(manifest).join("target"));
    let mut found = Vec::new();
    collect_criterion(&target.join("criterion"), since, &mut found);
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut table = Table::new(
        "micro: criterion medians of `cargo bench --bench core`",
        &["benchmark", "median ns", "per second per core", "load"],
    );
    let load = load_note();
    for (id, ns) in &found {
        kv(
            &format!("micro_{}_ns", id.replace('/', "_")),
            format!("{ns:.1}"),
        );
        table.row(vec![
            id.clone(),
            format!("{ns:.1}"),
            format!("{:.0}", 1e9 / ns),
            load.clone(),
        ]);
    }
    res.micro = found;
    res.tables.push(table);
}

fn collect_criterion(dir: &std::path::Path, since: SystemTime, out: &mut Vec<(String, f64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "new") {
            let est = p.join("estimates.json");
            let fresh = std::fs::metadata(&est)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m >= since);
            let read = |f: &str| {
                std::fs::read(p.join(f))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            };
            if let (true, Some(bench), Some(est)) =
                (fresh, read("benchmark.json"), read("estimates.json"))
            {
                if let (Some(id), Some(ns)) = (
                    bench["full_id"].as_str(),
                    est["median"]["point_estimate"].as_f64(),
                ) {
                    out.push((id.to_string(), ns));
                }
            }
        } else if p.is_dir() {
            collect_criterion(&p, since, out);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// targets

fn targets(res: &Results) -> Table {
    let mut t = Table::new("targets", &["target", "measured", "met"]);
    let mut row = |target: &str, measured: String, met: Option<bool>| {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "not measured",
        };
        t.row(vec![target.into(), measured, met.into()]);
    };
    let med = |k: &str| res.latency.get(k).and_then(Series::median_us);
    let (pk, nft, kd, otp) = (
        med("portknock/simple"),
        med("nft/simple"),
        med("knockd/simple"),
        med("portknock/otp"),
    );
    match (pk, nft) {
        (Some(p), Some(n)) => row(
            "simple median ≤ 1.5× in-kernel recipe",
            format!("{p:.0} µs vs {n:.0} µs ({:.2}×)", p / n),
            Some(p <= 1.5 * n),
        ),
        _ => row("simple median ≤ 1.5× in-kernel recipe", "-".into(), None),
    }
    match (pk, kd) {
        (Some(p), Some(k)) => row(
            "simple ≥ 20× faster than knockd",
            format!("{k:.0} µs vs {p:.0} µs ({:.0}×)", k / p),
            Some(k >= 20.0 * p),
        ),
        _ => row("simple ≥ 20× faster than knockd", "-".into(), None),
    }
    row(
        "advanced (OTP) median < 300 µs",
        otp.map_or("-".into(), |o| format!("{o:.0} µs")),
        otp.map(|o| o < 300.0),
    );
    let junk: Vec<&FloodResult> = res
        .floods
        .iter()
        .filter(|f| f.flood == "otp-junk")
        .collect();
    row(
        "junk never opens an advanced door",
        junk.iter()
            .map(|f| format!("{}: {}", rate_name(f.rate), f.spoofed_otp_grants))
            .collect::<Vec<_>>()
            .join(", "),
        (!junk.is_empty()).then(|| junk.iter().all(|f| f.spoofed_otp_grants == 0)),
    );
    let mut chance = Vec::new();
    let mut chance_met = None;
    for f in res
        .floods
        .iter()
        .filter(|f| f.flood == "syn" && f.system == System::Portknock)
    {
        if let Some(n) = res
            .floods
            .iter()
            .find(|g| g.flood == "syn" && g.system == System::Nft && g.rate == f.rate)
        {
            let ratio = f.spoofed_grants as f64 / n.spoofed_grants.max(1) as f64;
            chance.push(format!(
                "{}: {} vs {} ({:.0}%; spec replay {})",
                rate_name(f.rate),
                f.spoofed_grants,
                n.spoofed_grants,
                ratio * 100.0,
                f.expected_engine.unwrap_or(0)
            ));
            chance_met = Some(chance_met.unwrap_or(true) && ratio < 0.01);
        }
    }
    row(
        "flood at knock ports: portknock grants < 1% of the recipe's",
        chance.join("; "),
        chance_met,
    );
    let top: Vec<&FloodResult> = res
        .floods
        .iter()
        .filter(|f| f.rate.is_none() && f.system == System::Portknock)
        .collect();
    let legit_ok = top.iter().all(|f| {
        f.simple.failures == 0
            && f.simple.trials() > 0
            && f.otp
                .as_ref()
                .is_none_or(|o| o.failures == 0 && o.trials() > 0)
    });
    row(
        "top rate: 10/10 legitimate knocks, both modes",
        top.iter()
            .map(|f| {
                format!(
                    "{}: simple {} otp {}",
                    f.flood,
                    ok_of(&f.simple),
                    f.otp.as_ref().map_or("-".into(), ok_of)
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        (!top.is_empty()).then_some(legit_ok),
    );
    row(
        "top rate: daemon < 50% of one core",
        top.iter()
            .map(|f| format!("{}: {}%", f.flood, f1(f.cpu)))
            .collect::<Vec<_>>()
            .join("; "),
        (!top.is_empty()).then(|| top.iter().all(|f| f.cpu.is_some_and(|c| c < 50.0))),
    );
    row(
        "top rate: nothing crashes or stalls",
        top.iter()
            .map(|f| {
                format!(
                    "{}: alive {}, next knock {}",
                    f.flood,
                    f.alive,
                    f.after.map_or("FAILED".into(), |d| format!(
                        "{:.0} µs",
                        d.as_secs_f64() * 1e6
                    ))
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        (!top.is_empty()).then(|| {
            top.iter().all(|f| {
                f.alive
                    && f.after.is_some()
                    && f.recovered.is_some_and(|r| r < Duration::from_secs(4))
            })
        }),
    );
    match res.spoof.iter().find(|s| s.system == System::Portknock) {
        Some(s) => {
            let growth = s.rss_before.zip(s.peak_after).map(|(a, b)| b - a);
            row(
                "spoofed sources: RSS growth < 64 MiB, legitimate knock opens",
                format!(
                    "{} sources: +{} MiB; IPv4 {}, IPv6 {}",
                    s.sent,
                    f1(growth),
                    if s.legit4.is_some() { "opens" } else { "FAILS" },
                    if s.legit6.is_some() { "opens" } else { "FAILS" }
                ),
                Some(
                    growth.is_some_and(|g| g < 64.0)
                        && s.legit4.is_some()
                        && s.legit6.is_some()
                        && s.alive,
                ),
            );
        }
        None => row(
            "spoofed sources: RSS growth < 64 MiB, legitimate knock opens",
            "-".into(),
            None,
        ),
    }
    let verify = res
        .micro
        .iter()
        .find(|(id, _)| id == "otp/verify_skew1_valid");
    row(
        "≥ 1,000,000 OTP verifications/s/core",
        verify.map_or("-".into(), |(_, ns)| {
            format!("{:.0}/s ({ns:.0} ns)", 1e9 / ns)
        }),
        verify.map(|(_, ns)| 1e9 / ns >= 1e6),
    );
    // The slowest of the 10,000-door applies, fresh or over the installed table.
    let apply = res
        .scale
        .iter()
        .filter(|r| r.doors == 10_000)
        .map(|r| r.apply_ms.max(r.reapply_ms))
        .reduce(f64::max);
    row(
        "apply of 10,000 doors < 1 s",
        apply.map_or("-".into(), |ms| format!("{ms:.0} ms at most")),
        apply.map(|ms| ms < 1000.0),
    );
    let last = res.scale.iter().rfind(|r| r.doors == 10_000);
    let one = res.scale.iter().find(|r| r.doors == 1);
    let flat = one.zip(last).and_then(|(a, b)| {
        let s = a.simple_median.zip(b.simple_median)?;
        let o = a.otp_median.zip(b.otp_median)?;
        Some((s, o))
    });
    row(
        "latency flat 1 → 10,000 doors (median within 1.5×)",
        flat.map_or("-".into(), |((s1, s2), (o1, o2))| {
            format!("simple {s1:.0} → {s2:.0} µs, otp {o1:.0} → {o2:.0} µs")
        }),
        flat.map(|((s1, s2), (o1, o2))| s2 <= 1.5 * s1 && o2 <= 1.5 * o1),
    );
    t
}

/// Debugging aid: with `BENCH_HOLD_SECS=N`, keeps the lab of a flood run up for N seconds
/// after the flood (before the post-flood knock), printing its namespaces, for inspection.
fn hold_for_inspection(r: &Running, what: &str) {
    support::debug_wait("BENCH_HOLD_SECS", || {
        format!(
            "{what} on {}: server {} client {} pid {:?}",
            r.system.name(),
            r.lab.server.name,
            r.lab.clients[0].name,
            r.pid()
        )
    });
}
