//! The daemon's metrics (docs/behaviour.md §4, metrics), end to end: the real daemon in network
//! namespaces made by each test writes its metrics file while real clients knock, right and
//! wrong; Prometheus' own tools judge the file (`promtool`, package `prometheus`) and the real
//! node exporter (`prometheus-node-exporter`) serves it on the namespace's loopback; `status
//! --watch` runs in tmux. The alert rules of contrib/ pass `promtool check rules` and their unit
//! tests. `.ci/run` installs the three tools; a test that misses one fails, saying which (a
//! root test that `PORTKNOCK_SKIP_ROOT_TESTS=1` skips looks for none).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use portknock::metrics::{parse, Sample};
use portknock::netns::{client4, client6};

/// Fails the test, saying what to install, when `program` is missing.
fn tool(program: &str, package: &str) -> PathBuf {
    find_on_path(program).unwrap_or_else(|| {
        panic!("{program} is not installed: apt-get install {package} (.ci/run does)")
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A lab whose daemon writes its metrics to `textfile/portknock.prom` in the lab's directory,
/// grants that last, the daemon not started.
fn lab(clients: usize) -> Option<(Lab, PathBuf)> {
    // The lab's directory is made with it: the file's path is known once it exists.
    let lab = lab_with(clients, "", SIMPLE, ADVANCED)?;
    let dir = lab.dir.path().join("textfile");
    std::fs::create_dir(&dir).expect("textfile directory");
    let file = dir.join("portknock.prom");
    let extra = format!(
        "FW_PORTKNOCK_SIMPLE_OPEN=600\nFW_PORTKNOCK_ADVANCED_OPEN=600\nFW_PORTKNOCK_METRICS_FILE={}\n",
        file.display()
    );
    lab.write_config(&extra, SIMPLE, ADVANCED);
    Some((lab, file))
}

/// The file's samples, once it is there and parses.
fn samples(file: &Path) -> Option<Vec<Sample>> {
    parse(&std::fs::read_to_string(file).ok()?).ok()
}

/// The value of `series` (as the file writes it) in `samples`.
fn value(samples: &[Sample], series: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.series() == series)
        .map(|s| s.value)
}

/// Waits (bounded: a few of the daemon's writes) until the file holds every `expected` value,
/// and returns what it holds then; a mismatch left at the end fails the test, naming each.
fn wait_for_values(lab: &Lab, file: &Path, expected: &[(String, f64)]) -> Vec<Sample> {
    let mut last = Vec::new();
    let matched = wait_until(Duration::from_secs(20), || {
        last = samples(file).unwrap_or_default();
        expected
            .iter()
            .all(|(series, want)| value(&last, series) == Some(*want))
    });
    if matched.is_none() {
        let wrong: Vec<String> = (expected.iter())
            .filter(|(series, want)| value(&last, series) != Some(*want))
            .map(|(series, want)| format!("{series}: {:?}, expected {want}", value(&last, series)))
            .collect();
        panic!(
            "the metrics file does not count what was sent:\n{}\n--- file ---\n{}\n--- log ---\n{}",
            wrong.join("\n"),
            std::fs::read_to_string(file).unwrap_or_default(),
            lab.daemon_log()
        );
    }
    last
}

fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: Vec<String> = labels.iter().map(|(l, v)| format!("{l}=\"{v}\"")).collect();
    if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", labels.join(","))
    }
}

fn counts(name: &str, label: &str, values: &[(&str, u32)]) -> Vec<(String, f64)> {
    (values.iter())
        .map(|(v, n)| (series(name, &[(label, v)]), f64::from(*n)))
        .collect()
}

#[test]
fn the_metrics_file_counts_what_was_sent_and_promtool_accepts_it() {
    let Some((mut lab, file)) = lab(2) else {
        return;
    };
    let promtool = tool("promtool", "prometheus");
    let started = SystemTime::now();
    lab.start_daemon();
    wait_until(Duration::from_secs(10), || file.exists()).expect("the file is written at once");
    let minute = minute_now();

    // Simple doors: two right sequences (IPv4, IPv6) and one wrong (7000 then 8000).
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    ok(&lab.client(1, &["knock", SERVER6, "7000", "9000", "8000"]));
    ok(&lab.client(1, &["knock", SERVER4, "7000", "8000"]));
    // OTPs: an open and its replay, a password of no secret, a datagram that is none, a
    // close, and an open over IPv6.
    let open = otp_payload("opensecret1", &client4(0), minute);
    let payloads = vec![
        open.clone(),
        open,
        otp_payload("not-the-secret", &client4(0), minute),
        b"hello\n".to_vec(),
        otp_payload("closesecret1", &client4(0), minute),
    ];
    send_udp(&lab, 0, SERVER4, 2000, payloads);
    send_udp(
        &lab,
        1,
        SERVER6,
        2000,
        vec![otp_payload("opensecret1", &client6(1), minute)],
    );
    // A reload applied and one refused; by hand, two grants and one close.
    ok(&lab.admin(&["apply"]));
    let list = lab.config_dir().join("simple-portknock-list");
    std::fs::write(&list, "22:7000,7000\n").expect("break the list");
    lab.signal_daemon("-HUP");
    assert_logged(&lab, "reload refused", 1);
    std::fs::write(&list, SIMPLE).expect("mend the list");
    ok(&lab.admin(&["open", "198.18.9.9", "2222", "--for", "600"]));
    ok(&lab.admin(&["open", "198.18.9.10", "22", "--for", "600"]));
    ok(&lab.admin(&["close", "198.18.9.10", "22"]));
    // A flushed ruleset, which the daemon puts back with the grants it made.
    let flush = lab
        .server
        .command("nft")
        .args(["flush", "ruleset"])
        .status();
    assert!(flush.is_ok_and(|s| s.success()), "nft flush ruleset");
    assert_logged(&lab, "restored in", 1);

    let knocks = "portknock_knock_packets_total";
    let mut expected: Vec<(String, f64)> = [
        (("tcp", "ipv4"), 5.0),
        (("tcp", "ipv6"), 3.0),
        (("udp", "ipv4"), 5.0),
        (("udp", "ipv6"), 1.0),
    ]
    .iter()
    .map(|((p, f), n)| (series(knocks, &[("protocol", p), ("family", f)]), *n))
    .collect();
    expected.extend(counts(
        "portknock_simple_outcomes_total",
        "outcome",
        &[
            ("progress", 3),
            ("retransmit", 0),
            ("armed", 2),
            ("opened", 2),
            ("wrong_knock", 1),
            ("scan", 0),
            ("expired", 0),
        ],
    ));
    expected.extend(counts(
        "portknock_otp_outcomes_total",
        "outcome",
        &[
            ("open", 2),
            ("close", 1),
            ("malformed", 1),
            ("no_secret_matches", 1),
            ("clock_skew", 0),
            ("replay", 1),
            ("refused_by_record", 0),
            ("not_recorded", 0),
        ],
    ));
    let grants = &[("knock", 4), ("hand", 2)];
    expected.extend(counts("portknock_grants_total", "by", grants));
    let closes = &[("knock", 1), ("hand", 1)];
    expected.extend(counts("portknock_closes_total", "by", closes));
    let reloads = &[("applied", 1), ("refused", 1)];
    expected.extend(counts("portknock_reloads_total", "result", reloads));
    let heals = &[("restored", 1), ("failed", 0)];
    expected.extend(counts("portknock_heals_total", "result", heals));
    let held = &[("knocks", 0), ("heals", 0)];
    expected.extend(counts("portknock_log_lines_held_back_total", "about", held));
    for (name, n) in [
        ("portknock_rollbacks_total", 0.0),
        ("portknock_nflog_overruns_total", 0.0),
        ("portknock_tracked_sources", 0.0),
        ("portknock_table_installed", 1.0),
    ] {
        expected.push((name.to_string(), n));
    }
    // Live grants, read from the kernel: 22 for both clients' right sequences, 2222 for the
    // IPv6 open (the IPv4 one was closed) and by hand.
    for (port, mode, n) in [("22", "simple", 2.0), ("2222", "advanced", 2.0)] {
        let labels = [("port", port), ("mode", mode)];
        expected.push((series("portknock_active_grants", &labels), n));
    }
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    expected.push((format!("portknock_build_info{{{version}}}"), 1.0));
    let written = wait_for_values(&lab, &file, &expected);
    let start = value(&written, "portknock_start_time_seconds").expect("start time");
    let since = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert!(
        (since(started) as f64..=since(SystemTime::now()) as f64).contains(&start),
        "started at {start}"
    );
    assert_eq!(
        written.len(),
        expected.len() + 1,
        "nothing else is written:\n{written:?}"
    );

    // Prometheus' own checker, on the file as written.
    let mut check = Command::new(&promtool);
    check
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("open the file"));
    let out = output_within(check);
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // status shows them, in text and in JSON.
    let out = lab.admin(&["status"]);
    ok(&out);
    let status = text(&out.stdout);
    assert!(
        status.contains(&format!("metrics: {}, written ", file.display()))
            && status.contains("portknock_otp_outcomes_total{outcome=\"replay\"}"),
        "{status}"
    );
    let out = lab.admin(&["status", "--json"]);
    ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let replays = json["metrics"]["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .find(|s| s["name"] == "portknock_otp_outcomes_total" && s["labels"]["outcome"] == "replay")
        .expect("the replays");
    assert_eq!(replays["value"], 1.0);

    // The daemon writes the file once more as it stops, with what it counted last.
    ok(&lab.admin(&["open", "198.18.9.11", "2222", "--for", "600"]));
    lab.stop_daemon("-TERM");
    let last = samples(&file).expect("the file");
    assert_eq!(
        value(&last, "portknock_grants_total{by=\"hand\"}"),
        Some(3.0)
    );
}

/// A process that is killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /metrics` from `127.0.0.1:port` of the lab's server namespace, once it answers.
fn scrape(lab: &Lab, port: u16) -> Option<String> {
    lab.server
        .run(move || -> std::io::Result<String> {
            let mut stream = TcpStream::connect(("127.0.0.1", port))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        })
        .ok()?
        .ok()
}

#[test]
fn the_node_exporter_serves_the_file_inside_the_namespace() {
    let Some((mut lab, file)) = lab(1) else {
        return;
    };
    let exporter = tool("prometheus-node-exporter", "prometheus-node-exporter");
    lab.start_daemon();
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    let tcp4 = "portknock_knock_packets_total{protocol=\"tcp\",family=\"ipv4\"}";
    wait_for_values(&lab, &file, &[(tcp4.to_string(), 3.0)]);

    // On the loopback of the lab's server namespace only, with the textfile collector alone.
    const PORT: u16 = 9100;
    let textfile = file.parent().expect("directory").display().to_string();
    let _exporter = Killed(
        lab.server
            .command(&exporter.display().to_string())
            .args([
                &format!("--web.listen-address=127.0.0.1:{PORT}"),
                "--collector.disable-defaults",
                "--collector.textfile",
                &format!("--collector.textfile.directory={textfile}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the node exporter"),
    );
    let mut page = String::new();
    wait_until(Duration::from_secs(10), || {
        page = scrape(&lab, PORT).unwrap_or_default();
        page.contains("portknock_build_info")
    })
    .unwrap_or_else(|| panic!("the node exporter does not serve portknock's series:\n{page}"));
    assert!(
        page.starts_with("HTTP/1.0 200") || page.starts_with("HTTP/1.1 200"),
        "{page}"
    );
    // The exporter sorts labels by name.
    for line in [
        format!(
            "portknock_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "portknock_knock_packets_total{family=\"ipv4\",protocol=\"tcp\"} 3".to_string(),
        "portknock_grants_total{by=\"knock\"} 1".to_string(),
        "portknock_active_grants{mode=\"simple\",port=\"22\"} 1".to_string(),
        "node_textfile_scrape_error 0".to_string(),
    ] {
        assert!(page.contains(&line), "{line} is not served:\n{page}");
    }
    let mtime = (page.lines())
        .find(|l| l.starts_with("node_textfile_mtime_seconds{") && l.contains("portknock.prom"))
        .unwrap_or_else(|| panic!("no mtime of the file (PortknockDown needs it):\n{page}"));
    let mtime: f64 = mtime
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("mtime");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(now - mtime < 10.0, "the file is fresh: {mtime} at {now}");
}

/// A tmux server of the test's own (its own socket), killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        tool("tmux", "tmux");
        Tmux {
            socket: format!("portknock-test-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &self.socket]).args(args);
        output_within(cmd)
    }

    /// What the window shows now.
    fn screen(&self) -> String {
        text(&self.run(&["capture-pane", "-p", "-t", "watch"]).stdout)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn status_watch_refreshes_every_second_with_rates_and_ends_on_ctrl_c() {
    let Some((mut lab, file)) = lab(1) else {
        return;
    };
    let tmux = Tmux::new();
    lab.start_daemon();
    wait_until(Duration::from_secs(10), || file.exists()).expect("the file");
    let command = format!(
        "{} netns exec {} {BIN} status --watch --count 120 --config-dir {}",
        which("ip").display(),
        lab.server.name,
        lab.config_dir().display()
    );
    ok(&tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "watch",
        "-x",
        "200",
        "-y",
        "60",
        &command,
    ]));

    // Frames come every second: the file's age counts up on screen.
    let mut frames = Vec::new();
    let start = Instant::now();
    while frames.len() < 4 && start.elapsed() < Duration::from_secs(15) {
        let screen = tmux.screen();
        if screen.contains("metrics: ") && frames.last() != Some(&screen) {
            frames.push(screen);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        frames.len() >= 4,
        "fewer than 4 different frames in 15 s:\n{}",
        frames.join("\n---\n")
    );
    assert!(
        frames[0].contains("portknock_knock_packets_total{protocol=\"tcp\",family=\"ipv4\"}")
            && frames[0].contains("Ctrl-C ends"),
        "{}",
        frames[0]
    );

    // Knocks while it watches: the rate of TCP knocks over IPv4 shows on screen.
    for _ in 0..3 {
        ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    }
    let rated = |screen: &str| {
        screen.lines().any(|l| {
            l.contains("portknock_knock_packets_total{protocol=\"tcp\",family=\"ipv4\"}")
                && l.trim_end().ends_with("/s")
                && !l.trim_end().ends_with(" 0.0/s")
        })
    };
    let mut screen = String::new();
    wait_until(Duration::from_secs(15), || {
        screen = tmux.screen();
        rated(&screen)
    })
    .unwrap_or_else(|| panic!("no rate of the knocks on screen:\n{screen}"));
    assert!(
        screen.contains("portknock_knock_packets_total{protocol=\"tcp\",family=\"ipv4\"}")
            && screen
                .lines()
                .any(|l| l.contains("family=\"ipv4\"}") && l.contains(" 9 ")),
        "9 knocks counted:\n{screen}"
    );

    // Ctrl-C ends it, and with it the tmux session.
    ok(&tmux.run(&["send-keys", "-t", "watch", "C-c"]));
    wait_until(Duration::from_secs(10), || {
        !tmux.run(&["has-session", "-t", "watch"]).status.success()
    })
    .unwrap_or_else(|| panic!("still watching after Ctrl-C:\n{}", tmux.screen()));
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let promtool = tool("promtool", "prometheus");
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    for args in [
        ["check", "rules", "portknock.rules.yml"],
        ["test", "rules", "portknock.rules.test.yml"],
    ] {
        let mut cmd = Command::new(&promtool);
        cmd.args(args).current_dir(&contrib);
        let out = output_within(cmd);
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}
