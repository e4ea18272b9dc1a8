//! `portknock demo` runs its whole story green, cleans up after itself, explains itself
//! without root, and writes nothing through what another user prepared in the temporary
//! directory.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
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

/// The demo's working directory was `$TMPDIR/portknock-demo-<pid>`, taken as it was found: a
/// user who made it first, with `etc/portknock.conf` a symbolic link to a file of root's, had
/// that file overwritten by root's demo, and a file of their own where the demo wrote its open
/// secret received the secret. Here nobody prepares a world-writable temporary directory so
/// (for pid 1: the demo runs in a pid namespace of its own, so its pid is known beforehand),
/// and root's demo tells its story in a new directory of its own, touching none of theirs.
#[test]
fn the_demo_writes_nothing_through_what_another_user_prepared() {
    if !require_root() {
        return;
    }
    let _turn = one_at_a_time();
    let lab = tempfile::tempdir().expect("tempdir");
    let tmp = lab.path().join("tmp");
    fs::create_dir(&tmp).expect("tmp");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).expect("chmod");
    let root_file = lab.path().join("root-file");
    fs::write(&root_file, "precious").expect("root's file");
    let theirs = tmp.join("portknock-demo-1");
    let prepare = format!(
        "mkdir -p {etc} && ln -s {root_file} {etc}/portknock.conf && touch {etc}/open.secret \
         && chmod 666 {etc}/open.secret",
        etc = theirs.join("etc").display(),
        root_file = root_file.display()
    );
    let mut nobody = Command::new("setpriv");
    nobody.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sh",
        "-c",
        &prepare,
    ]);
    let out = output_within(nobody);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", BIN])
        .env("TMPDIR", &tmp);
    assert_whole_story(cmd);

    assert_eq!(
        fs::read_to_string(&root_file).expect("root's file"),
        "precious"
    );
    assert_eq!(
        fs::read_to_string(theirs.join("etc/open.secret")).expect("their file"),
        "",
        "no secret in a file of theirs"
    );
    let left: Vec<String> = fs::read_dir(&tmp)
        .expect("tmp")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        ["portknock-demo-1"],
        "the demo's own directory is gone, theirs stays"
    );
    assert!(Path::new(&theirs).join("etc/portknock.conf").is_symlink());
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
