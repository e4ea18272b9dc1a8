//! `portknock demo` runs its whole story green, cleans up after itself, and explains itself
//! without root.

mod common;

use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{namespaces_named, output_within, require_root, which, BIN};

#[test]
fn the_demo_tells_the_whole_story_and_cleans_up() {
    if !require_root() {
        return;
    }
    assert_whole_story(Command::new(BIN));
}

/// The replay step sends the very datagram of the open step, also when a new minute begins in
/// between (it once printed a fresh password of the new minute, which rightly opened).
#[test]
fn the_replay_is_the_captured_datagram_across_a_minute_boundary() {
    if !require_root() {
        return;
    }
    // libfaketime shifts every process of the demo alike: it starts at second 57 of a minute.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let offset = (57 + 60 - now % 60) % 60;
    let mut cmd = Command::new(which("faketime"));
    cmd.args(["-f", &format!("+{offset}s"), BIN]);
    assert_whole_story(cmd);
}

/// Runs `portknock demo` (with `cmd` as the program and its first arguments) and checks that
/// every step behaved and nothing was left behind.
fn assert_whole_story(mut cmd: Command) {
    // One demo at a time: the check for left-over namespaces sees every demo's.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    cmd.arg("demo");
    let out = output_within(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches('✓').count(), 10, "{stdout}");
    assert!(!stdout.contains('✗'), "{stdout}");
    for step in [
        "portknock knock 198.18.0.1 7000 9000 8000",
        "portknock otp 198.18.0.1 2000",
        "replay",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in\n{stdout}");
    }
    assert!(
        !stdout.contains('\x1b'),
        "no colours when stdout is not a terminal"
    );
    assert_eq!(
        namespaces_named("pkdemo-"),
        Vec::<String>::new(),
        "namespaces removed"
    );
}

#[test]
fn without_root_the_demo_explains_itself() {
    if !require_root() {
        return; // setpriv needs root to drop to nobody
    }
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        BIN,
        "demo",
    ]);
    let out = output_within(cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sudo portknock demo"));
}
