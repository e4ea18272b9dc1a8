//! Fault injection: the real daemon and the real kernel firewall, in network namespaces made by
//! each test, with one thing broken at a time — the state directory unwritable or full, `nft`
//! missing or failing, the NFLOG socket overrun by a flood, the configuration deleted or
//! truncated under a running daemon, two daemons at once, the clock jumping. Each test shows
//! that portknock fails closed, says why, and recovers once the fault is gone.
//!
//! Nothing here touches the host: faults live in the test's namespaces, in a private mount
//! namespace (the tiny tmpfs), in the test's own temporary directory (`chattr`, files), or in
//! the daemon's own view of the clock (libfaketime, `apt-get install faketime`).

mod common;

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use portknock::netns::{client4, client6};

/// Sizes a grant so that it stays for the whole test once made.
const LONG_OTP: &str = "FW_PORTKNOCK_ADVANCED_OPEN=600\n";

/// A lab with the configuration written and listeners on 22 and 2222, daemon not started.
fn lab(clients: usize, extra: &str) -> Option<Lab> {
    lab_with(clients, extra, SIMPLE, ADVANCED)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Waits (bounded) until the daemon's log holds one of `needles`.
fn logged_any(lab: &Lab, needles: &[&str]) -> bool {
    wait_until(Duration::from_secs(10), || {
        let log = lab.daemon_log();
        needles.iter().any(|n| log.contains(n))
    })
    .is_some()
}

/// Sends the open-secret OTP of client `i` (IPv4) for `minute` to the door 2222.
fn send_otp(lab: &Lab, i: usize, secret: &str, minute: u32) -> Vec<u8> {
    let payload = otp_payload(secret, &client4(i), minute);
    send_udp(lab, i, SERVER4, 2000, vec![payload.clone()]);
    payload
}

/// Takes back every grant of client `i` on 2222, so that the next connection attempt shows
/// whether a knock made a new one.
fn close_2222(lab: &Lab, i: usize) {
    ok(&lab.admin(&["close", &client4(i), "2222"]));
    ok(&lab.admin(&["close", &client6(i), "2222"]));
    assert!(!lab.can_connect(i, SERVER4, 2222));
}

// ---------------------------------------------------------------------------------------------
// 1. The state directory unwritable or full.

/// `chattr +i` on a path for as long as it lives: writes fail even for root (which the
/// permission bits would not stop), also through a descriptor opened before.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        let out = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .expect("run chattr (package e2fsprogs)");
        assert!(
            out.status.success(),
            "chattr +i {} failed (does this file system support it?): {}",
            path.display(),
            text(&out.stderr)
        );
        Immutable(path.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        // Also on failure: an immutable file would outlive the test's temporary directory.
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn an_otp_is_refused_while_the_used_otp_record_cannot_be_written() {
    let Some(mut lab) = lab(1, LONG_OTP) else {
        return;
    };
    lab.start_daemon();
    let log = lab.state_dir().join("used-otps.log");
    let immutable = Immutable::set(&log);

    ok(&lab.client(0, &["otp", SERVER4, "2000", "opensecret1"]));
    assert_logged(&lab, "OTP refused: cannot record it as used", 1);
    let daemon_log = lab.daemon_log();
    assert!(
        daemon_log.contains(&path_str(&log)) && daemon_log.contains("Operation not permitted"),
        "the log names the file and the cause:\n{daemon_log}"
    );
    assert!(
        !daemon_log.contains("grant: valid open OTP"),
        "no grant without the record:\n{daemon_log}"
    );
    assert!(
        !lab.can_connect(0, SERVER4, 2222),
        "refused, so still closed"
    );

    // The fault repaired, the same client knocks again (the refused OTP was not spent).
    drop(immutable);
    ok(&lab.client(0, &["otp", SERVER4, "2000", "opensecret1"]));
    assert_logged(&lab, "grant: valid open OTP", 1);
    lab.connect(0, SERVER4, 2222);
}

/// What the wrapper runs: a private mount namespace with a tiny tmpfs on the state directory,
/// then the daemon in the same process. The host's mounts never see the tmpfs, and it goes
/// away with the daemon.
const ON_TINY_TMPFS: &str =
    "mount -t tmpfs -o size=16k,mode=0700 portknock-faults \"$0\" && exec \"$1\" serve";

/// Accepted OTPs it takes to fill the first 4 KiB page (x86-64) of the log but for 16 bytes
/// (40-byte entries): the next entry then straddles the page boundary.
const ENTRIES_BEFORE_A_PAGE_BOUNDARY: usize = 102;
const ENTRY: u64 = 40;

#[test]
fn an_otp_is_refused_while_the_state_directory_is_full_and_no_later_one_is_lost() {
    let extra = format!("{LONG_OTP}FW_PORTKNOCK_OTP_SKEW=10\n");
    let Some(mut lab) = lab(2, &extra) else {
        return;
    };
    let state = lab.state_dir();
    fs::create_dir_all(&state).expect("state dir");
    let state_arg = path_str(&state);
    lab.start_daemon_via(
        "unshare",
        &[
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            ON_TINY_TMPFS,
            &state_arg,
            BIN,
        ],
        &[],
    );
    let pid = lab.daemon_pid().expect("daemon");
    let mounts = fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    assert!(
        mounts.contains(&format!(" {state_arg} ")) && mounts.contains("portknock-faults"),
        "the daemon sees the tmpfs"
    );
    let host = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!host.contains("portknock-faults"), "the host does not");
    // The daemon's view of its state directory, through its own mount namespace.
    let view = PathBuf::from(format!("/proc/{pid}/root{state_arg}"));
    let log_len = || fs::metadata(view.join("used-otps.log")).map_or(0, |m| m.len());

    // 102 distinct valid OTPs: 3 source addresses × 2 secrets × 17 minutes of the window.
    let now = minute_now();
    let sources = [
        (0, client4(0), SERVER4),
        (0, client6(0), SERVER6),
        (1, client4(1), SERVER4),
    ];
    for (i, source, server) in &sources {
        let mut payloads = Vec::new();
        for minute in now - 8..=now + 8 {
            for secret in ["opensecret1", "closesecret1"] {
                payloads.push(otp_payload(secret, source, minute));
            }
        }
        send_udp(&lab, *i, server, 2000, payloads);
    }
    let full_page = ENTRIES_BEFORE_A_PAGE_BOUNDARY as u64 * ENTRY;
    wait_until(Duration::from_secs(20), || log_len() == full_page).unwrap_or_else(|| {
        panic!(
            "{} bytes logged, not {full_page}; daemon log:\n{}",
            log_len(),
            lab.daemon_log()
        )
    });

    // Fill what is left of the file system (bounded: it is 16 KiB).
    let mut filler = fs::File::create(view.join("filler")).expect("filler");
    let full = (0..64).find_map(|_| filler.write_all(&[0xF1; 1024]).err());
    let full = full.expect("the tmpfs fills up");
    assert_eq!(full.raw_os_error(), Some(28), "ENOSPC: {full}");

    // The next OTP cannot be recorded: refused, the reason logged, no grant, and the part of
    // its entry that fitted on the page is cut off again.
    let x = otp_payload("opensecret1", &client6(1), minute_now());
    send_udp(&lab, 1, SERVER6, 2000, vec![x.clone()]);
    assert_logged(&lab, "OTP refused: cannot record it as used", 1);
    assert!(lab.daemon_log().contains("No space left on device"));
    assert!(
        !lab.can_connect(1, SERVER6, 2222),
        "no grant without the record"
    );
    assert_eq!(log_len(), full_page, "no partial entry is left in the log");

    // Space again: the same OTP is accepted now, and recorded.
    drop(filler);
    fs::remove_file(view.join("filler")).expect("remove filler");
    send_udp(&lab, 1, SERVER6, 2000, vec![x.clone()]);
    // A raw datagram has no client pacing: wait (bounded) for the daemon's grant.
    wait_until(Duration::from_secs(10), || {
        lab.can_connect(1, SERVER6, 2222)
    })
    .expect("the OTP opens once there is space again");
    assert_eq!(log_len(), full_page + ENTRY);

    // The record as the daemon left it, read by a new daemon (on the ordinary disk): the OTP
    // accepted after the fault is still known, so its replay is refused.
    for name in ["used-otps", "used-otps.log"] {
        fs::copy(view.join(name), state.join(name)).expect("copy the record out");
    }
    drop(view);
    lab.stop_daemon("-TERM");
    lab.start_daemon();
    ok(&lab.admin(&["close", &client6(1), "2222"]));
    assert!(!lab.can_connect(1, SERVER6, 2222));
    send_udp(&lab, 1, SERVER6, 2000, vec![x]);
    assert_logged(&lab, "replay", 1);
    assert!(
        !lab.can_connect(1, SERVER6, 2222),
        "the replay did not open"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. `nft` missing or failing.

/// A directory holding an `nft` that hands listings to the real nft and fails every change,
/// as a kernel or an nft that refuses the batch would: a fault injector, not a stand-in.
fn failing_nft(lab: &Lab) -> PathBuf {
    let dir = lab.dir.path().join("failing-nft");
    fs::create_dir_all(&dir).expect("dir");
    let script = format!(
        "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = list ] && exec {} \"$@\"; done\n\
         echo 'Error: Could not process rule: Cannot allocate memory (injected by tests/faults.rs)' >&2\nexit 1\n",
        path_str(&which("nft"))
    );
    let nft = dir.join("nft");
    fs::write(&nft, script).expect("write fake nft");
    fs::set_permissions(&nft, fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn assert_failed_naming(out: &Output, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit 1; stderr:\n{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} in:\n{stderr}");
    }
}

#[test]
fn without_a_working_nft_apply_and_serve_fail_clearly_and_change_nothing() {
    let Some(lab) = lab(1, FAST) else { return };
    let no_nft = lab.dir.path().join("no-nft");
    fs::create_dir_all(&no_nft).expect("dir");

    // nft not installed: nothing was there, nothing is.
    let before = lab.ruleset();
    for args in [&["apply"][..], &["serve"]] {
        let out = lab.admin_env(args, &[("PATH", &path_str(&no_nft))]);
        assert_failed_naming(&out, &["cannot run nft", "install the nftables package"]);
        assert_eq!(lab.ruleset(), before, "{args:?} changed the ruleset");
    }

    // nft failing: the rules in force stay exactly as they were.
    ok(&lab.admin(&["apply"]));
    let installed = lab.policy();
    assert!(installed.contains("table inet portknock"));
    // Many doors more: the batch is larger than a pipe holds, so an nft that fails without
    // reading it all leaves portknock writing into a closed pipe. Odd ports eight apart, so that
    // none of them load as one range with another.
    let list = lab.config_dir().join("simple-portknock-list");
    let mut doors = String::from("22:7000,9000,8000\n23:6000,6002,6001\n");
    for i in 0..4000 {
        let port = 10_001 + 8 * i;
        doors += &format!("{}:{},{},{}\n", port, port + 6, port + 2, port + 4);
    }
    fs::write(&list, doors).expect("add doors");
    let failing = failing_nft(&lab);
    for args in [&["apply"][..], &["serve"]] {
        let out = lab.admin_env(args, &[("PATH", &path_str(&failing))]);
        assert_failed_naming(
            &out,
            &[
                "nft refused",
                "Cannot allocate memory",
                "nothing was changed",
            ],
        );
        assert_eq!(lab.policy(), installed, "{args:?} half-installed something");
    }
    assert!(!lab.can_connect(0, SERVER4, 22), "still enforcing");
    ok(&lab.admin(&["apply"]));
    assert!(lab.ruleset().contains("41999"), "a working nft applies it");
}

// ---------------------------------------------------------------------------------------------
// 3. The NFLOG socket overrun by a flood.

/// The daemon's NFLOG socket as `/proc/net/netlink` of its namespace sees it: (receive queue
/// bytes, drops). Its port id is the daemon's pid: it is the first netlink socket it binds.
fn nflog_socket(lab: &Lab, pid: u32) -> Option<(u64, u64)> {
    let out = lab
        .server
        .command("cat")
        .arg("/proc/net/netlink")
        .output()
        .expect("cat");
    text(&out.stdout).lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode; Eth 12 is NETLINK_NETFILTER.
        (f.len() >= 9 && f[1] == "12" && f[2] == pid.to_string())
            .then(|| Some((f[4].parse().ok()?, f[8].parse().ok()?)))
            .flatten()
    })
}

/// The receive buffer the kernel gave the daemon's NFLOG socket (`ss`'s `rb`).
fn nflog_receive_buffer(lab: &Lab, pid: u32) -> Option<u64> {
    let out = lab
        .server
        .command("ss")
        .args(["-f", "netlink", "-a", "-m"])
        .output()
        .expect("ss (package iproute2)");
    let out = text(&out.stdout);
    let at = out.find(&format!("/{pid} "))?;
    let rest = &out[at..];
    let rb = &rest[rest.find("rb")? + 2..];
    rb[..rb.find(|c: char| !c.is_ascii_digit())?].parse().ok()
}

#[test]
fn a_flood_that_overruns_the_nflog_buffer_is_logged_and_knocks_work_afterwards() {
    let simple = "22:7000,9000,8000\n24:5000/udp,5002/udp,5001/udp\n";
    let Some(mut lab) = lab_with(2, FAST, simple, ADVANCED) else {
        return;
    };
    // The metrics file counts the overruns, and the knocks that were not lost.
    let metrics = lab.dir.path().join("portknock.prom");
    let extra = format!("{FAST}FW_PORTKNOCK_METRICS_FILE={}\n", metrics.display());
    lab.write_config(&extra, simple, ADVANCED);
    lab.start_daemon();
    let pid = lab.daemon_pid().expect("daemon");
    // The daemon asks for 16 MiB whatever net.core.rmem_max says (SO_RCVBUFFORCE).
    let rb = nflog_receive_buffer(&lab, pid).expect("the daemon's NFLOG socket in ss");
    assert!(rb >= 16 << 20, "receive buffer {rb} bytes");
    assert_eq!(
        nflog_socket(&lab, pid).map(|s| s.1),
        Some(0),
        "no drops yet"
    );

    // The daemon stopped, a flood of first knocks fills its socket until the kernel drops
    // (bounded: at most 40 bursts of 10,000 datagrams).
    lab.signal_daemon("-STOP");
    let target = SocketAddr::new(ip(SERVER4), 5000);
    let mut sent = 0;
    for _ in 0..40 {
        sent += lab.clients[0]
            .run(move || {
                let socket = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
                (0..10_000)
                    .filter(|_| socket.send_to(b"k", target).is_ok())
                    .count()
            })
            .expect("inside the client namespace");
        if nflog_socket(&lab, pid).is_some_and(|(_, drops)| drops > 0) {
            break;
        }
    }
    let (queued, drops) = nflog_socket(&lab, pid).expect("socket");
    assert!(
        drops > 0,
        "{sent} knocks sent, {queued} bytes queued, no drop"
    );
    lab.signal_daemon("-CONT");

    // The daemon says knocks were lost, drains the rest, and goes on working.
    assert_logged(&lab, "knocks were lost", 1);
    assert!(lab.daemon_log().contains("overruns="), "and counts it");
    let start = Instant::now();
    wait_until(Duration::from_secs(60), || {
        nflog_socket(&lab, pid).is_some_and(|(queued, _)| queued == 0)
    })
    .expect("the daemon drains what the kernel kept");
    eprintln!(
        "{sent} knocks sent, {queued} bytes queued, {drops} dropped, drained in {:?}",
        start.elapsed()
    );
    let counted = |series: &str| {
        let text = fs::read_to_string(&metrics).unwrap_or_default();
        let samples = portknock::metrics::parse(&text).unwrap_or_default();
        (samples.iter().find(|s| s.series() == series)).map(|s| s.value as u64)
    };
    let udp4 = "portknock_knock_packets_total{protocol=\"udp\",family=\"ipv4\"}";
    // Every knock sent was either dropped by the kernel or counted, once the daemon's next
    // write of the file comes.
    let mut seen = None;
    wait_until(Duration::from_secs(20), || {
        seen = counted(udp4).zip(counted("portknock_nflog_overruns_total"));
        seen.is_some_and(|(knocks, overruns)| knocks + drops == sent as u64 && overruns > 0)
    })
    .unwrap_or_else(|| {
        panic!("(knocks counted, overruns) {seen:?}, where {drops} of {sent} were dropped")
    });
    eprintln!("metrics: (knocks counted, overruns) {seen:?}");
    ok(&lab.client(1, &["knock", SERVER4, "7000", "9000", "8000"]));
    lab.connect(1, SERVER4, 22);
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    lab.connect(0, SERVER4, 22);
    ok(&lab.client(1, &["otp", SERVER4, "2000", "opensecret1"]));
    lab.connect(1, SERVER4, 2222);
}

// ---------------------------------------------------------------------------------------------
// 4. The configuration deleted, truncated, or replaced by what is no file under a running daemon.

#[test]
fn a_deleted_or_truncated_configuration_is_refused_on_sighup_and_restoring_it_works() {
    let Some(mut lab) = lab(1, FAST) else { return };
    lab.start_daemon();
    let installed = lab.policy();
    let dir = lab.config_dir();
    let conf = dir.join("portknock.conf");
    let simple = dir.join("simple-portknock-list");
    let advanced = dir.join("advanced-portknock-list");
    let originals: Vec<(PathBuf, Vec<u8>)> = [&conf, &simple, &advanced]
        .iter()
        .map(|p| (p.to_path_buf(), fs::read(p).expect("read")))
        .collect();
    let restore = || {
        for (path, bytes) in &originals {
            fs::write(path, bytes).expect("restore");
        }
        fs::set_permissions(&advanced, fs::Permissions::from_mode(0o600)).expect("chmod");
    };

    type Fault<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let faults: Vec<Fault> = vec![
        // An emptied portknock.conf reads as the engine off: a reload must not take the
        // rules away (only `apply` does that).
        (
            "portknock.conf truncated to nothing",
            Box::new(|| fs::write(&conf, "").expect("truncate")),
        ),
        (
            "portknock.conf deleted",
            Box::new(|| fs::remove_file(&conf).expect("delete")),
        ),
        (
            "simple list deleted",
            Box::new(|| fs::remove_file(&simple).expect("delete")),
        ),
        // An emptied list must not quietly take its doors (and their protection) away.
        (
            "simple list truncated to nothing",
            Box::new(|| fs::write(&simple, "").expect("truncate")),
        ),
        (
            "advanced list cut mid-line",
            Box::new(|| fs::write(&advanced, "2222,2000,opense").expect("cut")),
        ),
    ];
    for (n, (what, fault)) in faults.iter().enumerate() {
        fault();
        lab.signal_daemon("-HUP");
        assert_logged(&lab, "reload refused", n + 1);
        assert_eq!(lab.policy(), installed, "{what}: the rules changed");
        assert!(!lab.can_connect(0, SERVER4, 22), "{what}: still closed");
        ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
        lab.connect(0, SERVER4, 22);
        ok(&lab.admin(&["close", &client4(0), "22"]));
        restore();
    }
    assert!(
        lab.daemon_log().contains("is the file empty or truncated?"),
        "the refusal of an emptied portknock.conf says what is wrong"
    );

    // Restored (and one door more): the next SIGHUP reloads.
    fs::write(&simple, "22:7000,9000,8000\n23:6000,6002,6001\n").expect("add a door");
    lab.listen(23);
    lab.signal_daemon("-HUP");
    assert_logged(&lab, "configuration reloaded", 1);
    assert!(!lab.can_connect(0, SERVER4, 23), "23 is protected now");
    ok(&lab.client(0, &["knock", SERVER4, "6000", "6002", "6001"]));
    lab.connect(0, SERVER4, 23);
    ok(&lab.client(0, &["otp", SERVER4, "2000", "opensecret1"]));
    lab.connect(0, SERVER4, 2222);
}

#[test]
fn engine_off_with_apply_still_removes_the_rules_and_the_daemon_follows() {
    let Some(mut lab) = lab(1, FAST) else { return };
    lab.start_daemon();
    let conf = lab.config_dir().join("portknock.conf");
    let on = fs::read_to_string(&conf).expect("conf");
    fs::write(&conf, on.replace("FW_PORTKNOCK=yes", "FW_PORTKNOCK=no")).expect("engine off");
    // A bare SIGHUP does not remove protection ...
    lab.signal_daemon("-HUP");
    assert_logged(&lab, "reload refused", 1);
    assert!(lab.ruleset().contains("table inet portknock"));
    // ... `apply` does, and the daemon's reload then agrees.
    ok(&lab.admin(&["apply"]));
    assert_logged(&lab, "configuration reloaded", 1);
    assert!(!lab.ruleset().contains("portknock"));
    assert!(
        lab.can_connect(0, SERVER4, 22),
        "nothing protected with the engine off"
    );
    fs::write(&conf, on).expect("engine on");
    ok(&lab.admin(&["apply"]));
    assert_logged(&lab, "configuration reloaded", 2);
    assert!(!lab.can_connect(0, SERVER4, 22));
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    lab.connect(0, SERVER4, 22);
}

/// A FIFO as a list blocked the daemon (one thread) in `open` at the next SIGHUP: knocks went
/// unanswered and SIGTERM was ignored; `check` hung too. `/dev/zero` as a list grew the
/// daemon's memory until it ran out. Both are refused now, by `check` at once and by a reload,
/// and the daemon keeps serving and stops when told.
#[test]
fn a_fifo_or_an_endless_device_as_a_list_is_refused_and_the_daemon_keeps_serving() {
    let Some(mut lab) = lab(1, FAST) else { return };
    lab.start_daemon();
    let installed = lab.policy();
    let dir = lab.config_dir();
    let conf = dir.join("portknock.conf");
    let simple = dir.join("simple-portknock-list");
    let original_conf = fs::read_to_string(&conf).expect("conf");
    let endless = format!("{original_conf}FW_PORTKNOCK_SIMPLE_LIST=/dev/zero\n");

    type Fault<'a> = (&'a str, &'a str, Box<dyn Fn() + 'a>);
    let faults: Vec<Fault> = vec![
        (
            "a FIFO as the simple list",
            "is a FIFO, not a regular file",
            Box::new(|| {
                fs::remove_file(&simple).expect("remove the list");
                let made = Command::new("mkfifo").arg(&simple).status();
                assert!(made.expect("mkfifo").success());
            }),
        ),
        (
            "/dev/zero as the simple list",
            "is a character device, not a regular file",
            Box::new(|| fs::write(&conf, &endless).expect("write conf")),
        ),
    ];
    for (n, (what, why, fault)) in faults.iter().enumerate() {
        fault();
        let out = lab.admin(&["check"]);
        assert_eq!(out.status.code(), Some(2), "{what}: check refuses");
        assert!(
            text(&out.stderr).contains(why),
            "{what}: {}",
            text(&out.stderr)
        );
        lab.signal_daemon("-HUP");
        assert_logged(&lab, "reload refused", n + 1);
        assert_logged(&lab, why, 1);
        assert_eq!(lab.policy(), installed, "{what}: the rules changed");
        assert!(!lab.can_connect(0, SERVER4, 22), "{what}: still closed");
        ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
        lab.connect(0, SERVER4, 22);
        ok(&lab.admin(&["close", &client4(0), "22"]));
    }
    lab.stop_daemon("-TERM");
}

// ---------------------------------------------------------------------------------------------
// A state directory another user prepared.

/// `flock --close FILE sleep 60`: a process that takes the exclusive lock on `file` and keeps
/// it; returned once it holds it.
fn hold_lock(file: &Path) -> Child {
    let holder = Command::new("flock")
        // The lock stays with flock, not with sleep: killing flock releases it.
        .arg("--close")
        .arg(file)
        .args(["sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .expect("flock (util-linux)");
    wait_until(Duration::from_secs(10), || {
        fs::File::open(file)
            .expect("open")
            .try_lock_shared()
            .is_err()
    })
    .expect("flock takes the lock");
    holder
}

/// A file of root's, and a test that it is as it was.
fn victim(path: &Path) -> impl Fn() + '_ {
    fs::write(path, "precious").expect("victim");
    move || assert_eq!(fs::read_to_string(path).expect("victim"), "precious")
}

/// A stand-in for the daemon at `socket`, run by the test: it answers every request that it
/// was done, as a daemon would, and keeps what it was asked. Only the daemon may be asked.
fn impostor(socket: &Path) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixListener;
    let listener = UnixListener::bind(socket).expect("impostor");
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = std::sync::Arc::clone(&asked);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut line);
            if !line.is_empty() {
                kept.lock().expect("lock").push(line);
                let _ = stream.write_all(b"{\"done\":\"applied\"}\n");
            }
        }
    });
    asked
}

/// `FW_PORTKNOCK_STATE_DIR` as another user (nobody) prepared it: theirs, with the pid file and
/// the snapshot's temporary file symbolic links to files of root's (`serve` truncated and wrote
/// their targets), and a control socket that is not the daemon's (a command handed it its
/// request and believed its answer). Now `serve` and `apply` refuse the directory, say what
/// to fix, and touch nothing; once root owns it, links left in it are still never followed;
/// and a socket there whose process does not hold the pid file's lock is asked nothing.
#[test]
fn a_state_directory_another_user_prepared_is_refused_and_nothing_is_touched() {
    let Some(mut lab) = lab(1, FAST) else { return };
    let state = lab.state_dir();
    fs::create_dir(&state).expect("state dir");
    let pid_target = lab.dir.path().join("pid-target");
    let tmp_target = lab.dir.path().join("tmp-target");
    let pid_intact = victim(&pid_target);
    let tmp_intact = victim(&tmp_target);
    let pid_file = state.join("portknock.pid");
    std::os::unix::fs::symlink(&pid_target, &pid_file).expect("link");
    std::os::unix::fs::symlink(&tmp_target, state.join("used-otps.tmp")).expect("link");
    let asked = impostor(&state.join("control.sock"));
    let status = Command::new("chown")
        .args(["-R", "-h", "65534:65534"])
        .arg(&state)
        .status();
    assert!(status.expect("chown").success());

    let refused = format!(
        "the state directory {} belongs to uid 65534",
        state.display()
    );
    let serve = lab.admin(&["serve"]);
    assert_failed_naming(&serve, &[&refused, "run chown 0"]);
    assert!(
        !lab.ruleset().contains("portknock"),
        "serve installed nothing"
    );
    let apply = lab.admin(&["apply"]);
    assert_failed_naming(&apply, &[&refused]);
    assert!(
        !lab.ruleset().contains("portknock"),
        "apply installed nothing"
    );
    pid_intact();
    assert_eq!(*asked.lock().expect("lock"), Vec::<String>::new());

    // Root takes the directory over, but the links and the socket stay.
    let status = Command::new("chown")
        .args(["-R", "-h", "0:0"])
        .arg(&state)
        .status();
    assert!(status.expect("chown").success());
    let serve = lab.admin(&["serve"]);
    assert_failed_naming(&serve, &["portknock.pid", "symbolic link"]);
    pid_intact();
    // With the pid file's lock held by a process that is not the one at the socket.
    fs::remove_file(&pid_file).expect("remove");
    fs::write(&pid_file, "1\n").expect("pid file");
    let holder = Children(vec![hold_lock(&pid_file)]);
    let apply = lab.admin(&["apply"]);
    assert_failed_naming(
        &apply,
        &["does not hold the lock", "was not asked anything"],
    );
    assert_eq!(*asked.lock().expect("lock"), Vec::<String>::new());
    drop(holder);

    // The daemon's own directory at last: it starts, and writes its snapshot as a file of
    // its own, leaving the link's target alone.
    fs::remove_file(state.join("control.sock")).expect("remove");
    lab.start_daemon();
    assert!(
        fs::symlink_metadata(state.join("used-otps"))
            .expect("snapshot")
            .is_file(),
        "a snapshot of the daemon's own"
    );
    tmp_intact();
    ok(&lab.admin(&["apply"]));
    lab.stop_daemon("-TERM");
}

// ---------------------------------------------------------------------------------------------
// 5. Two daemons at once (one started after the other: tests/daemon.rs).

/// Processes spawned by a test, killed when it ends however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn daemons_started_at_the_same_moment_leave_exactly_one_running() {
    let Some(lab) = lab(1, FAST) else { return };
    let logs: Vec<PathBuf> = (0..3)
        .map(|i| lab.dir.path().join(format!("serve{i}.log")))
        .collect();
    let mut daemons = Children(
        logs.iter()
            .map(|log| {
                lab.server
                    .command(BIN)
                    .arg("serve")
                    .env("PORTKNOCK_CONFIG_DIR", lab.config_dir())
                    .stdout(Stdio::null())
                    .stderr(fs::File::create(log).expect("log"))
                    .spawn()
                    .expect("spawn")
            })
            .collect(),
    );
    let mut exited = Vec::new();
    wait_until(Duration::from_secs(15), || {
        for (i, child) in daemons.0.iter_mut().enumerate() {
            if !exited.iter().any(|(j, _)| *j == i) {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    exited.push((i, status));
                }
            }
        }
        exited.len() >= 2
    })
    .expect("two of the three daemons give up");
    let running: Vec<usize> = (0..3)
        .filter(|i| !exited.iter().any(|(j, _)| j == i))
        .collect();
    assert_eq!(running.len(), 1, "exactly one keeps running");
    for (i, status) in &exited {
        let stderr = fs::read_to_string(&logs[*i]).expect("log");
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("another portknock daemon already runs"),
            "{stderr}"
        );
    }
    let survivor = &logs[running[0]];
    wait_until(Duration::from_secs(10), || {
        fs::read_to_string(survivor)
            .unwrap_or_default()
            .contains("portknock serving")
    })
    .expect("the survivor serves");
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    lab.connect(0, SERVER4, 22);
}

#[test]
fn a_second_daemon_with_another_state_directory_refuses_and_changes_nothing() {
    let Some(mut lab) = lab(1, FAST) else { return };
    lab.start_daemon();
    let installed = lab.policy();
    // Same namespace, another configuration directory and state directory: the pid-file lock
    // cannot see the first daemon, the kernel's NFLOG group can.
    let other = lab.dir.path().join("other");
    fs::create_dir_all(&other).expect("dir");
    for name in ["simple-portknock-list", "advanced-portknock-list"] {
        fs::copy(lab.config_dir().join(name), other.join(name)).expect("copy");
    }
    let conf = fs::read_to_string(lab.config_dir().join("portknock.conf")).expect("conf");
    let conf = conf.replace(
        &path_str(&lab.state_dir()),
        &path_str(&lab.dir.path().join("other-state")),
    );
    fs::write(other.join("portknock.conf"), conf).expect("conf");
    let mut cmd = lab.server.command(BIN);
    cmd.arg("serve").env("PORTKNOCK_CONFIG_DIR", &other);
    let out = output_within(cmd);
    assert_failed_naming(&out, &["NFLOG group", "another process already reads it"]);
    assert_eq!(lab.policy(), installed, "the second daemon changed nothing");
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    lab.connect(0, SERVER4, 22);
}

// ---------------------------------------------------------------------------------------------
// 6. The clock jumping forwards and backwards.

/// libfaketime, which makes the daemon (and only the daemon) see the time written in a file.
fn libfaketime() -> PathBuf {
    let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime"))
        .collect();
    dirs.push(PathBuf::from("/usr/lib/faketime"));
    dirs.into_iter()
        .map(|d| d.join("libfaketime.so.1"))
        .find(|p| p.is_file())
        .expect("libfaketime not found: install it (apt-get install faketime)")
}

/// The daemon's clock: an offset such as `+15m` or `+0`, written to the file libfaketime reads
/// at every call (FAKETIME_NO_CACHE), so a running daemon sees the jump at once.
struct FakeClock {
    file: PathBuf,
    lib: String,
}

impl FakeClock {
    fn new(lab: &Lab) -> FakeClock {
        let clock = FakeClock {
            file: lab.dir.path().join("faketime"),
            lib: path_str(&libfaketime()),
        };
        clock.set("+0");
        clock
    }

    fn set(&self, offset: &str) {
        // Written whole and renamed, so the daemon never reads half an offset.
        let tmp = self.file.with_extension("tmp");
        fs::write(&tmp, format!("{offset}\n")).expect("write faketime");
        fs::rename(&tmp, &self.file).expect("rename faketime");
    }

    fn start_daemon(&self, lab: &mut Lab) {
        let file = path_str(&self.file);
        lab.start_daemon_via(
            BIN,
            &["serve"],
            &[
                ("LD_PRELOAD", &self.lib),
                ("FAKETIME_TIMESTAMP_FILE", &file),
                ("FAKETIME_NO_CACHE", "1"),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ],
        );
    }
}

/// A jump forwards so far that nothing of before is in the window any more.
const AHEAD: u32 = 15;

#[test]
fn a_clock_jump_while_running_reopens_no_replay_window() {
    let Some(mut lab) = lab(1, LONG_OTP) else {
        return;
    };
    let clock = FakeClock::new(&lab);
    clock.start_daemon(&mut lab);

    let m = minute_now();
    let p = send_otp(&lab, 0, "opensecret1", m);
    assert_logged(&lab, "grant: valid open OTP", 1);
    close_2222(&lab, 0);

    // Forwards: the daemon's minute is now m + 15 — an OTP of that minute opens, which also
    // makes the daemon forget p (it can no longer verify).
    clock.set(&format!("+{AHEAD}m"));
    send_otp(&lab, 0, "opensecret1", m + AHEAD);
    assert_logged(&lab, "grant: valid open OTP", 2);
    close_2222(&lab, 0);

    // Back to m: p verifies again, but must not open again.
    clock.set("+0");
    send_udp(&lab, 0, SERVER4, 2000, vec![p.clone()]);
    assert_logged(&lab, "OTP refused", 1);
    assert!(
        !lab.can_connect(0, SERVER4, 2222),
        "the replay did not open"
    );
    assert_eq!(lab.daemon_log().matches("grant: valid open OTP").count(), 2);

    // A fresh OTP of the present still opens.
    send_otp(&lab, 0, "opensecret1", minute_now() + 1);
    assert_logged(&lab, "grant: valid open OTP", 3);
    lab.connect(0, SERVER4, 2222);
}

#[test]
fn a_clock_jump_forwards_and_back_across_restarts_reopens_no_replay_window() {
    let Some(mut lab) = lab(1, LONG_OTP) else {
        return;
    };
    let clock = FakeClock::new(&lab);
    clock.start_daemon(&mut lab);
    let m = minute_now();
    let p = send_otp(&lab, 0, "opensecret1", m);
    assert_logged(&lab, "grant: valid open OTP", 1);
    close_2222(&lab, 0);
    lab.stop_daemon("-TERM");

    // Restarted with the clock 15 minutes ahead: p is out of the window there.
    clock.set(&format!("+{AHEAD}m"));
    clock.start_daemon(&mut lab);
    send_udp(&lab, 0, SERVER4, 2000, vec![p.clone()]);
    assert!(
        logged_any(&lab, &["bad OTP", "replay"]),
        "{}",
        lab.daemon_log()
    );
    assert!(!lab.can_connect(0, SERVER4, 2222));
    send_otp(&lab, 0, "opensecret1", m + AHEAD);
    assert_logged(&lab, "grant: valid open OTP", 1);
    close_2222(&lab, 0);
    lab.stop_daemon("-TERM");
    // Once more ahead (a restart folds the record into a new snapshot).
    clock.start_daemon(&mut lab);
    lab.stop_daemon("-TERM");

    // Restarted with the clock back at m: p verifies again, but must not open again.
    clock.set("+0");
    clock.start_daemon(&mut lab);
    send_udp(&lab, 0, SERVER4, 2000, vec![p]);
    assert!(
        logged_any(&lab, &["OTP refused", "replay"]),
        "{}",
        lab.daemon_log()
    );
    assert!(
        !lab.daemon_log().contains("grant: valid open OTP"),
        "{}",
        lab.daemon_log()
    );
    assert!(
        !lab.can_connect(0, SERVER4, 2222),
        "the replay did not open"
    );
}

/// Waits, if need be, until at least five seconds are left of this minute, so that a knock
/// and its check fall in the same minute.
fn wait_for_room_in_the_minute() {
    let second = || {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.expect("clock").as_secs() % 60
    };
    if second() >= 55 {
        wait_until(Duration::from_secs(10), || second() < 55).expect("the next minute");
    }
}

#[test]
fn a_client_clock_minutes_off_is_logged_as_clock_skew() {
    let Some(mut lab) = lab(1, "") else {
        return;
    };
    lab.start_daemon();
    let lib = path_str(&libfaketime());
    // Only the client's clock is off; its monotonic clock is left alone for its own waits.
    let knock = |offset: &str| {
        wait_for_room_in_the_minute();
        let mut cmd = lab.clients[0].command(BIN);
        cmd.args(["otp", SERVER4, "2000", "opensecret1"])
            .env_remove("PORTKNOCK_SECRET")
            .env("LD_PRELOAD", &lib)
            .env("FAKETIME", offset)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        ok(&output_within(cmd));
    };
    knock("+3m");
    assert_logged(&lab, "bad OTP: clock skew of +3 minutes", 1);
    knock("-4m");
    assert_logged(&lab, "bad OTP: clock skew of -4 minutes", 1);
    assert!(
        !lab.can_connect(0, SERVER4, 2222),
        "a skewed OTP opens nothing"
    );
    assert!(!lab.daemon_log().contains("grant:"), "{}", lab.daemon_log());
}
