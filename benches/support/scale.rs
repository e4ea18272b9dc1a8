//! Scale: apply time and knock-to-open latency of portknock with 1, 100 and 10,000 simple doors
//! (plus one advanced door), and the idle daemon's CPU use.

use std::net::IpAddr;
use std::thread;
use std::time::{Duration, Instant};

use super::probe::{otp_trial, simple_trial, Series};
use super::procfs::CpuMeter;
use super::report::{f1, kv, load_note, us, Table};
use super::systems::add_sources;
use crate::common::{ip, Lab, SERVER4};

/// The most a latency trial waits for the port before it counts as a failure.
const GIVE_UP: Duration = Duration::from_secs(3);

/// `n` simple doors: 22:7000,9000,8000 and protected 10000+i with sequences that share no
/// port with one another.
pub fn many_doors(n: usize) -> String {
    let mut list = String::from("22:7000,9000,8000\n");
    for i in 1..n {
        let base = 20000 + (i as u16) * 3;
        list.push_str(&format!(
            "{}:{},{},{}\n",
            10000 + i,
            base + 2,
            base,
            base + 1
        ));
    }
    list
}

/// Runs simple and OTP latency series from `sources` (half each) in the lab's client.
pub fn latency_pair(lab: &Lab, sources: Vec<IpAddr>) -> (Series, Series) {
    let half = sources.len() / 2;
    lab.clients[0]
        .run(move || {
            let server = ip(SERVER4);
            let (mut simple, mut otp) = (Series::default(), Series::default());
            for &source in &sources[..half] {
                if super::interrupted() {
                    break;
                }
                simple.push(simple_trial(
                    source,
                    server,
                    &[7000, 9000, 8000],
                    22,
                    GIVE_UP,
                ));
            }
            for &source in &sources[half..] {
                if super::interrupted() {
                    break;
                }
                otp.push(otp_trial(source, server, 2000, 2222, GIVE_UP));
            }
            (simple, otp)
        })
        .expect("inside the client namespace")
}

/// Times a command in the server namespace; `None` if it failed.
fn timed(lab: &Lab, program: &str, args: &[&str]) -> Option<Duration> {
    let start = Instant::now();
    let out = lab.server.command(program).args(args).output().ok()?;
    let took = start.elapsed();
    if !out.status.success() {
        eprintln!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    Some(took)
}

/// One door count's figures.
#[derive(Debug, Clone)]
pub struct Row {
    pub doors: usize,
    pub apply_ms: f64,
    pub simple_median: Option<f64>,
    pub otp_median: Option<f64>,
}

/// The scale scenario; returns its table and figures.
pub fn run(trials: usize, idle_secs: u64) -> (Table, Vec<Row>) {
    let mut rows = Vec::new();
    let mut table = Table::new(
        "scale: portknock with 1, 100, 10,000 simple doors",
        &[
            "doors",
            "apply ms",
            "json build ms",
            "nft -j -f ms",
            "nft -f (text) ms",
            "simple median µs",
            "simple p95",
            "simple fail",
            "otp median µs",
            "otp p95",
            "otp fail",
            "load",
        ],
    );
    for doors in [1usize, 100, 10_000] {
        super::check_interrupted();
        let mut lab = Lab::new(1);
        lab.write_config(
            "FW_PORTKNOCK_SIMPLE_OPEN=60\n",
            &many_doors(doors),
            "2222,2000,opensecret1,closesecret1\n",
        );
        let start = Instant::now();
        let out = lab.admin(&["apply"]);
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let apply = start.elapsed();
        kv(
            &format!("doors{doors}_apply_ms"),
            format!("{:.1}", apply.as_secs_f64() * 1e3),
        );

        // Where apply's time goes: the JSON batch alone (`apply --dry-run`, which also starts
        // the process and reads the configuration), the same batch through `nft -j -f`, and
        // the same ruleset in nft's text syntax through `nft -f`.
        let json_path = lab.dir.path().join("batch.json");
        let start = Instant::now();
        let dry = lab.admin(&["apply", "--dry-run"]);
        let dry_ms = start.elapsed().as_secs_f64() * 1e3;
        std::fs::write(&json_path, &dry.stdout).expect("write batch");
        let nft_json_ms = timed(&lab, "nft", &["-j", "-f", json_path.to_str().unwrap()])
            .map(|d| d.as_secs_f64() * 1e3);
        let text = lab
            .server
            .command("nft")
            .args(["list", "table", "inet", "portknock"])
            .output()
            .expect("list table");
        let text_path = lab.dir.path().join("table.nft");
        let mut script = b"add table inet portknock\ndelete table inet portknock\n".to_vec();
        script.extend_from_slice(&text.stdout);
        std::fs::write(&text_path, script).expect("write text ruleset");
        let nft_text_ms =
            timed(&lab, "nft", &["-f", text_path.to_str().unwrap()]).map(|d| d.as_secs_f64() * 1e3);
        kv(
            &format!("doors{doors}_dry_run_json_ms"),
            format!("{dry_ms:.1}"),
        );
        kv(&format!("doors{doors}_nft_json_load_ms"), f1(nft_json_ms));
        kv(&format!("doors{doors}_nft_text_load_ms"), f1(nft_text_ms));

        lab.listen(22);
        lab.listen(2222);
        lab.start_daemon();
        let sources = add_sources(&lab, 0, trials * 2);
        pause_for_profiler(&lab, &format!("{doors} doors"));
        let (simple, otp) = latency_pair(&lab, sources);
        for (name, s) in [("simple", &simple), ("otp", &otp)] {
            kv(&format!("doors{doors}_{name}_trials"), s.trials());
            kv(&format!("doors{doors}_{name}_failures"), s.failures);
            kv(&format!("doors{doors}_{name}_min_us"), us(s.min_us()));
            kv(&format!("doors{doors}_{name}_median_us"), us(s.median_us()));
            kv(&format!("doors{doors}_{name}_p95_us"), us(s.p95_us()));
            kv(&format!("doors{doors}_{name}_max_us"), us(s.max_us()));
        }
        let load = load_note();
        kv(&format!("doors{doors}_load"), &load);
        if doors == 1 && idle_secs > 0 {
            let pid = lab.daemon_pid().expect("daemon");
            let meter = CpuMeter::start(pid);
            thread::sleep(Duration::from_secs(idle_secs));
            kv("idle_cpu_percent", f1(meter.percent()));
        }
        table.row(vec![
            doors.to_string(),
            format!("{:.0}", apply.as_secs_f64() * 1e3),
            format!("{dry_ms:.0}"),
            f1(nft_json_ms),
            f1(nft_text_ms),
            us(simple.median_us()),
            us(simple.p95_us()),
            format!("{}/{}", simple.failures, simple.trials()),
            us(otp.median_us()),
            us(otp.p95_us()),
            format!("{}/{}", otp.failures, otp.trials()),
            load,
        ]);
        rows.push(Row {
            doors,
            apply_ms: apply.as_secs_f64() * 1e3,
            simple_median: simple.median_us(),
            otp_median: otp.median_us(),
        });
    }
    (table, rows)
}

/// Debugging aid: with `BENCH_PAUSE_SECS=N` in the environment, prints the daemon's pid and
/// waits N seconds before the trials, to attach `perf record -g -p PID` or `strace -T -p PID`.
pub fn pause_for_profiler(lab: &Lab, what: &str) {
    let secs: u64 = std::env::var("BENCH_PAUSE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if secs > 0 {
        eprintln!(
            "BENCH_PAUSE_SECS: {what}: daemon pid {:?}, server namespace {}; waiting {secs} s",
            lab.daemon_pid(),
            lab.server.name
        );
        super::sleep(Duration::from_secs(secs.min(600)));
    }
}
