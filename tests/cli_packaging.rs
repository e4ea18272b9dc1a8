//! What ships around the binary: the systemd unit, `contrib/knock.sh`, the generated shell
//! completions and manual pages, and the help texts they are generated from. No root needed;
//! the only network use is a UDP socket on loopback.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, ErrorKind, Write};
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::CommandFactory;

const BIN: &str = env!("CARGO_BIN_EXE_portknock");
/// Longest a test waits for the knock datagram.
const ARRIVAL_BOUND: Duration = Duration::from_secs(10);

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every subcommand of the command-line definition, `help` aside.
fn subcommands() -> Vec<String> {
    portknock::cli::Cli::command()
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect()
}

/// Runs `program` with `args` and `env`, no terminal on standard input and no secret inherited
/// from the environment of the test run.
fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(program)
        .args(args)
        .env_remove("PORTKNOCK_SECRET")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `program` can be run at all (it is installed).
fn installed(program: &str) -> bool {
    match Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

/// Says loudly that a check did not run. Written to the process's standard error directly, as
/// the test harness would otherwise keep the message of a passing test to itself.
fn not_run(what: &str, why: &str) {
    let _ = writeln!(io::stderr(), "\n*** NOT RUN: {what} — {why} ***\n");
}

// ---------------------------------------------------------------------------------------------
// The systemd unit

const UNIT: &str = "packaging/portknock.service";
const INSTALLED_BIN: &str = "/usr/local/sbin/portknock";

/// The settings of section `wanted` (`[Service]`) of the unit as (key, value), in order,
/// comments left out.
fn settings_of(unit: &str, wanted: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
        } else if section == wanted {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{UNIT}: not KEY=VALUE: {line}"));
            settings.push((key.to_string(), value.to_string()));
        }
    }
    settings
}

#[test]
fn systemd_unit_is_hardened_and_reloads_with_sighup() {
    let unit = fs::read_to_string(repo_file(UNIT)).expect("read the unit");
    let settings = settings_of(&unit, "[Service]");
    let has = |key: &str, value: &str| settings.iter().any(|(k, v)| k == key && v == value);
    for (key, value) in [
        ("Type", "notify"),
        ("ExecStart", "/usr/local/sbin/portknock serve"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("CapabilityBoundingSet", "CAP_NET_ADMIN"),
        ("AmbientCapabilities", "CAP_NET_ADMIN"),
        ("NoNewPrivileges", "yes"),
        ("StateDirectory", "portknock"),
        ("StateDirectoryMode", "0700"),
        ("UMask", "0077"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_NETLINK AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("SystemCallFilter", "@system-service"),
    ] {
        assert!(has(key, value), "{UNIT} lacks {key}={value}");
    }
    // A stop or restart of nftables.service must not stop portknock: the daemon heals its
    // table after the flush instead.
    for (key, value) in &settings_of(&unit, "[Unit]") {
        assert!(
            !(key == "PartOf" || key == "BindsTo" || key == "Requires")
                || !value.contains("nftables"),
            "{UNIT}: {key}={value} would stop portknock with nftables.service"
        );
    }
    // No other capability may creep in, on any line.
    for (key, value) in &settings {
        if key.contains("Capabilit") {
            assert_eq!(value, "CAP_NET_ADMIN", "{UNIT}: {key}={value}");
        }
    }
    // The state directory systemd creates must be the daemon's default one.
    let defaults = portknock::config::Settings::defaults(Path::new("/etc/portknock"));
    assert_eq!(defaults.state_dir, Path::new("/var/lib/portknock"));
}

/// The unit with the test binary in place of the installed one, in `dir`, for systemd-analyze
/// (which refuses a unit whose executable does not exist).
fn unit_for_analysis(dir: &Path) -> PathBuf {
    let unit = fs::read_to_string(repo_file(UNIT)).expect("read the unit");
    assert!(unit.contains(INSTALLED_BIN));
    let path = dir.join("portknock.service");
    fs::write(&path, unit.replace(INSTALLED_BIN, BIN)).expect("write the unit copy");
    path
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if !installed("systemd-analyze") {
        not_run(
            "systemd-analyze verify of packaging/portknock.service",
            "systemd-analyze is not installed (apt-get install systemd)",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_for_analysis(dir.path());
    // The manual pages are installed separately, so Documentation= is not checked here.
    let out = run(
        Path::new("systemd-analyze"),
        &["verify", "--man=no", unit.to_str().expect("utf-8 path")],
        &[],
    );
    // Warnings (an unknown key, a bad value) come with exit status 0; only lines about other
    // units of this machine are not this unit's business.
    let stderr = text(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("portknock")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify refused the unit ({}):\n{stderr}",
        out.status
    );
}

#[test]
fn systemd_analyze_rates_the_unit_exposure_low() {
    if !installed("systemd-analyze") {
        not_run(
            "systemd-analyze security of packaging/portknock.service",
            "systemd-analyze is not installed (apt-get install systemd)",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_for_analysis(dir.path());
    // 1.6 with systemd 252; the margin absorbs other versions' weights, not a weakened unit.
    // The threshold is on systemd's internal scale of 0 to 100, ten times the one it prints.
    let out = run(
        Path::new("systemd-analyze"),
        &[
            "security",
            "--offline=yes",
            "--threshold=25",
            "--no-pager",
            unit.to_str().expect("utf-8 path"),
        ],
        &[],
    );
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    if report.contains("--offline") && report.contains("nrecognized option") {
        not_run(
            "systemd-analyze security --offline",
            "this systemd is older than 250 and cannot rate a unit file offline",
        );
        return;
    }
    assert!(
        out.status.success(),
        "the unit's exposure is above 2.5 ({}):\n{report}",
        out.status
    );
}

// ---------------------------------------------------------------------------------------------
// contrib/knock.sh

const KNOCK_SH: &str = "contrib/knock.sh";

fn epoch_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        / 60
}

#[test]
fn knock_sh_sends_the_payload_portknock_otp_prints() {
    let script = repo_file(KNOCK_SH);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind UDP on loopback");
    socket
        .set_read_timeout(Some(ARRIVAL_BOUND))
        .expect("read timeout");
    let port = socket
        .local_addr()
        .expect("local address")
        .port()
        .to_string();

    // The OTP changes with the minute: when it rolls over between the knock and the print,
    // the two differ for that reason alone, and the comparison is made again.
    for _attempt in 0..3 {
        let minute = epoch_minute();
        let knock = run(
            &script,
            &["127.0.0.1", &port, "hipjazz"],
            &[("PORTKNOCK", BIN)],
        );
        assert!(
            knock.status.success(),
            "knock.sh failed ({}): {}",
            knock.status,
            text(&knock.stderr)
        );
        let mut buf = [0u8; 512];
        let (len, from) = socket
            .recv_from(&mut buf)
            .expect("the knock datagram arrives");
        assert!(from.ip().is_loopback());
        let datagram = &buf[..len];

        let print = run(
            Path::new(BIN),
            &["otp", "127.0.0.1", &port, "--print"],
            &[("PORTKNOCK_SECRET", "hipjazz")],
        );
        assert!(print.status.success(), "{}", text(&print.stderr));
        if epoch_minute() != minute {
            continue;
        }

        assert_eq!(len, 65, "the knock is 64 hex characters and a newline");
        assert_eq!(datagram[64], b'\n');
        assert!(datagram[..64]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)));
        assert_eq!(
            datagram,
            &print.stdout[..],
            "knock.sh and otp --print differ"
        );
        return;
    }
    panic!("the minute rolled over during each of three attempts");
}

/// A stand-in for portknock that records its arguments and PORTKNOCK_SECRET, one per line.
fn recorder(dir: &Path) -> (PathBuf, PathBuf) {
    let record = dir.join("record");
    let fake = dir.join("fake-portknock");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" \"secret=$PORTKNOCK_SECRET\" > '{}'\n",
            record.display()
        ),
    )
    .expect("write the fake portknock");
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).expect("chmod");
    (fake, record)
}

#[test]
fn knock_sh_passes_the_secret_in_the_environment_only() {
    let script = repo_file(KNOCK_SH);
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, record) = recorder(dir.path());
    let fake = fake.to_str().expect("utf-8 path");

    let out = run(
        &script,
        &["198.18.0.1", "2000", "hipjazz"],
        &[("PORTKNOCK", fake)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        fs::read_to_string(&record).expect("the fake ran"),
        "otp\n198.18.0.1\n2000\nsecret=hipjazz\n"
    );

    // pknock's four-argument form names the source address first.
    let out = run(
        &script,
        &["203.0.113.5", "198.18.0.1", "2000", "hipjazz"],
        &[("PORTKNOCK", fake)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        fs::read_to_string(&record).expect("the fake ran"),
        "otp\n198.18.0.1\n2000\n--source\n203.0.113.5\nsecret=hipjazz\n"
    );
}

#[test]
fn knock_sh_refuses_wrong_arguments_with_exit_2() {
    let script = repo_file(KNOCK_SH);
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, record) = recorder(dir.path());
    let fake = fake.to_str().expect("utf-8 path");
    for args in [
        &[][..],
        &["198.18.0.1"][..],
        &["198.18.0.1", "2000"][..],
        &["a", "b", "c", "d", "e"][..],
    ] {
        let out = run(&script, args, &[("PORTKNOCK", fake)]);
        assert_eq!(out.status.code(), Some(2), "knock.sh {args:?}");
        assert!(text(&out.stderr).contains("usage:"), "knock.sh {args:?}");
        assert!(!record.exists(), "knock.sh {args:?} ran portknock");
    }
}

#[test]
fn knock_sh_says_where_portknock_was_looked_for() {
    let out = run(
        &repo_file(KNOCK_SH),
        &["198.18.0.1", "2000", "hipjazz"],
        &[("PORTKNOCK", "/nonexistent/portknock")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/portknock") && stderr.contains("PORTKNOCK"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// portknock generate

#[test]
fn generate_writes_completions_and_a_man_page_per_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        Path::new(BIN),
        &["generate", dir.path().to_str().expect("utf-8 path")],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut expected: BTreeSet<PathBuf> = ["portknock.bash", "_portknock", "portknock.fish"]
        .iter()
        .map(|f| dir.path().join("completions").join(f))
        .collect();
    expected.insert(dir.path().join("man/portknock.1"));
    expected.insert(dir.path().join("man/portknock.conf.5"));
    // The daemon's page is in section 8, the system's daemons; the commands' in section 1.
    let section = |sub: &str| if sub == "serve" { 8 } else { 1 };
    for sub in subcommands() {
        expected.insert(
            dir.path()
                .join(format!("man/portknock-{sub}.{}", section(&sub))),
        );
    }
    let listed: BTreeSet<PathBuf> = text(&out.stdout).lines().map(PathBuf::from).collect();
    assert_eq!(listed, expected, "the files generate reports");
    for file in &expected {
        let len = fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{} is missing or empty", file.display());
    }

    // roff escapes the hyphen of portknock-check(1).
    let man = fs::read_to_string(dir.path().join("man/portknock.1")).expect("read portknock.1");
    for sub in subcommands() {
        assert!(
            man.contains(&format!("portknock\\-{sub}({})", section(&sub))),
            "portknock.1 does not mention {sub}"
        );
    }
    let serve = fs::read_to_string(dir.path().join("man/portknock-serve.8")).expect("read");
    assert!(
        serve.contains(".TH portknock-serve 8")
            && serve.contains(".SH EXAMPLES")
            && serve.contains("SIGHUP"),
        "{serve}"
    );
    assert!(
        serve.contains("portknock.conf"),
        "serve(8) points at portknock.conf(5)"
    );
    // portknock.conf(5) describes every key, as config::KEYS does.
    let conf = fs::read_to_string(dir.path().join("man/portknock.conf.5")).expect("read");
    assert!(conf.contains("\n.TH portknock.conf 5 "), "{conf}");
    for key in portknock::config::KEYS {
        let entry = format!(".TP\n\\fB{}\\fR\n", key.name);
        assert!(
            conf.contains(&entry),
            "portknock.conf.5 lacks {}:\n{conf}",
            key.name
        );
    }
    assert_eq!(
        conf.matches("Default: ").count(),
        portknock::config::KEYS.len()
    );

    let completions = dir.path().join("completions");
    let bash = completions.join("portknock.bash");
    let out = run(
        Path::new("bash"),
        &["-n", bash.to_str().expect("utf-8")],
        &[],
    );
    assert!(out.status.success(), "bash -n: {}", text(&out.stderr));
    for (shell, flag, file) in [
        ("zsh", "-n", "_portknock"),
        ("fish", "--no-execute", "portknock.fish"),
    ] {
        if !installed(shell) {
            not_run(&format!("{shell} syntax check of {file}"), "not installed");
            continue;
        }
        let path = completions.join(file);
        let out = run(
            Path::new(shell),
            &[flag, path.to_str().expect("utf-8")],
            &[],
        );
        assert!(
            out.status.success(),
            "{shell} {flag}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn generate_names_the_file_it_cannot_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("not-a-directory");
    fs::write(&blocker, "").expect("write");
    let target = blocker.join("assets");
    let out = run(
        Path::new(BIN),
        &["generate", target.to_str().expect("utf-8 path")],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot write") && stderr.contains(&target.display().to_string()),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Help texts

#[test]
fn every_command_help_shows_an_example() {
    for sub in subcommands() {
        let out = run(Path::new(BIN), &[&sub, "--help"], &[]);
        assert!(out.status.success(), "portknock {sub} --help");
        let help = text(&out.stdout);
        let (_, examples) = help
            .split_once("Example")
            .unwrap_or_else(|| panic!("portknock {sub} --help has no example:\n{help}"));
        assert!(
            examples.contains(&format!("portknock {sub}")),
            "the examples of portknock {sub} --help do not run it:\n{help}"
        );
    }
}

#[test]
fn top_level_help_explains_the_modes_and_points_to_the_demo() {
    let out = run(Path::new(BIN), &["--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for needle in [
        "simple",
        "advanced",
        "one-time password",
        "portknock demo",
        "Example",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    // The short form keeps the pointer to the demo, in its examples.
    let short = text(&run(Path::new(BIN), &["-h"], &[]).stdout);
    assert!(short.contains("portknock demo"), "-h:\n{short}");
}

// ---------------------------------------------------------------------------------------------
// The keys of portknock.conf: one description each, config::KEYS, which the documents copy

/// `doc` as a sentence: upper case first.
fn sentence(doc: &str) -> String {
    let mut chars = doc.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[test]
fn every_key_is_described_once_and_the_documents_copy_it() {
    use portknock::config::KEYS;
    let mut table = "| key | default | what it does |\n|---|---|---|\n".to_string();
    for key in &KEYS {
        table += &format!("| `{}` | `{}` | {} |\n", key.name, key.default, key.doc);
    }
    for doc in ["README.md", "docs/behaviour.md"] {
        let text = fs::read_to_string(repo_file(doc)).expect("read");
        assert!(
            text.contains(&table),
            "{doc} lacks the table of keys:\n{table}"
        );
    }

    // The example sets every key, in the same order, under its description.
    let example = fs::read_to_string(repo_file("examples/portknock.conf")).expect("read");
    let lines: Vec<&str> = example.lines().collect();
    let set: Vec<(usize, &str)> = (0..)
        .zip(&lines)
        .filter_map(|(at, line)| Some((at, line.split_once('=')?.0)))
        .filter(|(_, key)| key.starts_with("FW_PORTKNOCK"))
        .collect();
    assert_eq!(
        set.iter().map(|(_, key)| *key).collect::<Vec<_>>(),
        KEYS.map(|k| k.name),
        "the keys of examples/portknock.conf"
    );
    for ((at, _), key) in set.iter().zip(&KEYS) {
        let mut comment: Vec<&str> = lines[..*at]
            .iter()
            .rev()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches('#').trim())
            .collect();
        comment.reverse();
        assert_eq!(
            comment.join(" "),
            format!("{}. Default: {}.", sentence(key.doc), key.default),
            "the comment above {} in examples/portknock.conf",
            key.name
        );
    }
}
