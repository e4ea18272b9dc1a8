//! Scale: apply time and knock-to-open latency of portknock with 1, 100 and 10,000 simple doors
//! (plus one advanced door), and the idle daemon's CPU use.

use std::net::IpAddr;
use std::thread;
use std::time::{Duration, Instant};

use super::probe::{otp_trial, simple_trial, Series, OPEN_SECRET};
use super::procfs::CpuMeter;
use super::report::{f1, kv, load_note, us, Table};
use super::systems::add_sources;
use crate::common::{ip, Lab, SERVER4};

/// The most a latency trial waits for the port before it counts as a failure.
const GIVE_UP: Duration = Duration::from_secs(3);

/// `n` simple doors: 22:7000,9000,8000 and protected 10000+i with sequences that share no
/// port with one another. Their ports are neighbours, so each port set loads as a few ranges.
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

/// Like [`many_doors`], but every door's four ports are taken from a permutation of 1024-65535
/// (a stride coprime to its length), so neighbouring ports are as rare as in a random choice
/// and the sets load element by element: the worst case for `apply`.
pub fn scattered_doors(n: usize) -> String {
    const FIRST: u32 = 1024;
    const COUNT: u32 = 65536 - FIRST;
    const STRIDE: u32 = 40507;
    let taken = [22, 2000, 2222, 7000, 8000, 9000];
    let mut ports = (0..COUNT)
        .map(|k| FIRST + k * STRIDE % COUNT)
        .filter(|p| !taken.contains(p));
    let mut list = String::from("22:7000,9000,8000\n");
    for _ in 1..n {
        let mut next = || ports.next().expect("enough ports for 16,000 doors");
        let (protected, k1, k2, k3) = (next(), next(), next(), next());
        list.push_str(&format!("{protected}:{k1},{k2},{k3}\n"));
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

/// One configuration's figures.
#[derive(Debug, Clone)]
pub struct Row {
    pub doors: usize,
    /// `apply` on a namespace without the table.
    pub apply_ms: f64,
    /// `apply` again, with the daemon running and the grants of the trials to carry over.
    pub reapply_ms: f64,
    pub simple_median: Option<f64>,
    pub otp_median: Option<f64>,
}

/// Writes the simple list of so many doors.
type DoorList = fn(usize) -> String;

/// Times `portknock apply` in the lab.
fn timed_apply(lab: &Lab) -> Duration {
    let start = Instant::now();
    let out = lab.admin(&["apply"]);
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// The scale scenario; returns its table and figures.
pub fn run(trials: usize, idle_secs: u64) -> (Table, Vec<Row>) {
    let mut rows = Vec::new();
    let mut table = Table::new(
        "scale: portknock with 1, 100, 10,000 simple doors",
        &[
            "doors",
            "ports",
            "apply ms",
            "re-apply ms",
            "simple median µs",
            "simple p95",
            "simple fail",
            "otp median µs",
            "otp p95",
            "otp fail",
            "load",
        ],
    );
    let configs: [(usize, &str, DoorList); 4] = [
        (1, "neighbours", many_doors),
        (100, "neighbours", many_doors),
        (10_000, "neighbours", many_doors),
        (10_000, "scattered", scattered_doors),
    ];
    for (doors, layout, list) in configs {
        super::check_interrupted();
        let name = format!("doors{doors}_{layout}");
        let mut lab = Lab::new(1);
        lab.write_config(
            "FW_PORTKNOCK_SIMPLE_OPEN=60\n",
            &list(doors),
            &format!("2222,2000,{OPEN_SECRET},closesecret1\n"),
        );
        let apply = timed_apply(&lab);
        kv(
            &format!("{name}_apply_ms"),
            format!("{:.1}", apply.as_secs_f64() * 1e3),
        );

        lab.listen(22);
        lab.listen(2222);
        lab.start_daemon();
        let sources = add_sources(&lab, 0, trials * 2);
        pause_for_profiler(&lab, &format!("{doors} doors"));
        let (simple, otp) = latency_pair(&lab, sources);
        for (mode, s) in [("simple", &simple), ("otp", &otp)] {
            kv(&format!("{name}_{mode}_trials"), s.trials());
            kv(&format!("{name}_{mode}_failures"), s.failures);
            kv(&format!("{name}_{mode}_min_us"), us(s.min_us()));
            kv(&format!("{name}_{mode}_median_us"), us(s.median_us()));
            kv(&format!("{name}_{mode}_p95_us"), us(s.p95_us()));
            kv(&format!("{name}_{mode}_max_us"), us(s.max_us()));
        }
        let reapply = timed_apply(&lab);
        kv(
            &format!("{name}_reapply_ms"),
            format!("{:.1}", reapply.as_secs_f64() * 1e3),
        );
        let load = load_note();
        kv(&format!("{name}_load"), &load);
        if doors == 1 && idle_secs > 0 {
            let pid = lab.daemon_pid().expect("daemon");
            let meter = CpuMeter::start(pid);
            thread::sleep(Duration::from_secs(idle_secs));
            kv("idle_cpu_percent", f1(meter.percent()));
        }
        table.row(vec![
            doors.to_string(),
            layout.to_string(),
            format!("{:.0}", apply.as_secs_f64() * 1e3),
            format!("{:.0}", reapply.as_secs_f64() * 1e3),
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
            reapply_ms: reapply.as_secs_f64() * 1e3,
            simple_median: simple.median_us(),
            otp_median: otp.median_us(),
        });
    }
    (table, rows)
}

/// Debugging aid: with `BENCH_PAUSE_SECS=N` in the environment, prints the daemon's pid and
/// waits N seconds before the trials, to attach `perf record -g -p PID` or `strace -T -p PID`.
pub fn pause_for_profiler(lab: &Lab, what: &str) {
    super::debug_wait("BENCH_PAUSE_SECS", || {
        format!(
            "{what}: daemon pid {:?}, server namespace {}",
            lab.daemon_pid(),
            lab.server.name
        )
    });
}
