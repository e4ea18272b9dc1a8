//! `portknock demo` runs its whole story green, cleans up after itself, and explains itself
//! without root.

mod common;

use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{namespaces_named, output_within, require_root, which, BIN};

#[test]
fn the_demo_tells_the_whole_story_and_cleans_up() {
    if !require_root() {
        return;
    }
    let _turn = one_at_a_time();
    assert_whole_story(Command::new(BIN));
}

/// Near the end of a minute the demo waits for the next before it captures the open password,
/// so that no new minute begins between the open and the replay (the replay once printed a
/// fresh password of the new minute, which rightly opened).
#[test]
fn near_a_minute_boundary_the_demo_waits_and_the_replay_still_fails() {
    if !require_root() {
        return;
    }
    // libfaketime shifts every process of the demo alike: it starts at second 54 of a minute,
    // and reaches the capture, about two seconds in, within the last five seconds of it.
    let _turn = one_at_a_time();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let offset = (54 + 60 - now % 60) % 60;
    let mut cmd = Command::new(which("faketime"));
    cmd.args(["-f", &format!("+{offset}s"), BIN]);
    let stdout = assert_whole_story(cmd);
    assert!(
        stdout.contains("waiting for the next"),
        "the capture came outside the last five seconds of the minute:\n{stdout}"
    );
}

/// One demo at a time: the check for left-over namespaces sees every demo's, and a demo that
/// must start at a given second cannot wait for another to end.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `portknock demo` (with `cmd` as the program and its first arguments) and checks that
/// every step behaved and nothing was left behind.
fn assert_whole_story(mut cmd: Command) -> String {
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
    stdout.into_owned()
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
    assert!(String::from_utf8_lossy(&out.stderr).contains("sudo portknock demo"));
}
