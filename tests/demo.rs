//! `portknock demo` runs its whole story green, cleans up after itself, and explains itself
//! without root.

mod common;

use std::process::Command;

use common::{namespaces_named, require_root, BIN};

#[test]
fn the_demo_tells_the_whole_story_and_cleans_up() {
    if !require_root() {
        return;
    }
    let out = Command::new(BIN).arg("demo").output().expect("run demo");
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
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "demo",
        ])
        .output()
        .expect("setpriv");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sudo portknock demo"));
}
