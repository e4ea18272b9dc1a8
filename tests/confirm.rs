//! `apply --confirm-within` (docs/behaviour.md §5): a configuration on trial stays only when
//! `portknock confirm` comes in time; otherwise the daemon puts the previous one back by
//! itself, with its grants, even when the apply's session is gone, and keeps it back across a
//! reload and a restart. The trials take the shortest time allowed, 10 s; the two tests run
//! side by side.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const OLD: &str = "22:7000,9000,8000\n";
/// A new sequence for 22, the change that locks out whoever does not know it yet.
const NEW: &str = "22:7100,9100,8100\n";

fn knock(lab: &Lab, i: usize, ports: [&str; 3]) {
    let mut args = vec!["knock", SERVER4];
    args.extend(ports);
    ok(&lab.client(i, &args));
}

/// The daemon's `status --json`.
fn status(lab: &Lab) -> serde_json::Value {
    let out = lab.admin(&["status", "--json"]);
    ok(&out);
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// Whether a knock of `ports` by client `i` opens 22 now.
fn opens(lab: &Lab, i: usize, ports: [&str; 3]) -> bool {
    knock(lab, i, ports);
    lab.can_connect(i, SERVER4, 22)
}

/// The knock sequence of door 22 the daemon and the kernel enforce, as `status` shows it.
fn sequence_in_force(lab: &Lab) -> String {
    status(lab)["doors"][0]["knock"]
        .as_str()
        .expect("door 22")
        .to_string()
}

const OLD_IN_FORCE: &str = "7000/tcp,9000/tcp,8000/tcp";
const NEW_IN_FORCE: &str = "7100/tcp,9100/tcp,8100/tcp";

#[test]
fn a_confirmed_configuration_stays() {
    let Some(mut lab) = lab_with(1, FAST, OLD, ADVANCED) else {
        return;
    };
    lab.start_daemon();
    lab.write_config(FAST, NEW, ADVANCED);
    let out = lab.admin(&["apply", "--confirm-within", "10"]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("portknock confirm"));
    let left = status(&lab)["pending_confirmation"]["seconds_left"].as_u64();
    assert!(matches!(left, Some(0..=10)), "{left:?}");
    ok(&lab.admin(&["confirm"]));
    assert!(status(&lab)["pending_confirmation"].is_null());
    let out = lab.admin(&["confirm"]);
    assert_eq!(out.status.code(), Some(1), "nothing left to confirm");
    std::thread::sleep(Duration::from_secs(11));
    assert!(
        opens(&lab, 0, ["7100", "9100", "8100"]),
        "the new doors stay"
    );
    assert!(!lab.daemon_log().contains("not confirmed in time"));
}

#[test]
fn an_unconfirmed_configuration_rolls_back_by_itself_with_its_grants_and_stays_rolled_back() {
    let Some(mut lab) = lab_with(3, "FW_PORTKNOCK_SIMPLE_OPEN=120\n", OLD, ADVANCED) else {
        return;
    };
    lab.start_daemon();
    // A grant made before the trial, on a door both configurations have.
    knock(&lab, 1, ["7000", "9000", "8000"]);
    lab.connect(1, SERVER4, 22);
    lab.write_config("FW_PORTKNOCK_SIMPLE_OPEN=120\n", NEW, ADVANCED);
    // The apply runs in a session of its own, which ends as soon as the trial started.
    let mut apply = Command::new("setsid");
    apply
        .args(["ip", "netns", "exec", &lab.server.name, BIN])
        .args(["apply", "--confirm-within", "10"])
        .env("PORTKNOCK_CONFIG_DIR", lab.config_dir());
    ok(&output_within(apply));
    wait_until(Duration::from_secs(10), || {
        !status(&lab)["pending_confirmation"].is_null()
    })
    .expect("the trial started");
    let deadline = status(&lab)["pending_confirmation"]["deadline"]
        .as_u64()
        .expect("deadline");
    assert!(
        opens(&lab, 0, ["7100", "9100", "8100"]),
        "on trial: the new doors"
    );
    let out = lab.admin(&["apply"]);
    assert_eq!(out.status.code(), Some(1), "a second apply waits its turn");
    assert!(String::from_utf8_lossy(&out.stderr).contains("waits for its confirmation"));

    // Unconfirmed: the old doors come back by themselves.
    let started = Instant::now();
    wait_until(Duration::from_secs(30), || {
        lab.daemon_log()
            .contains("not confirmed in time: rolled back")
    })
    .expect("rolled back");
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    eprintln!(
        "rolled back {} s after the deadline (whole seconds), {:?} after waiting began",
        unix_now.saturating_sub(deadline),
        started.elapsed()
    );
    assert!(status(&lab)["pending_confirmation"].is_null());
    assert_eq!(sequence_in_force(&lab), OLD_IN_FORCE);
    assert!(
        !opens(&lab, 2, ["7100", "9100", "8100"]),
        "the trial's doors are gone"
    );
    assert!(
        opens(&lab, 2, ["7000", "9000", "8000"]),
        "the old doors again"
    );
    lab.connect(1, SERVER4, 22);

    // The files still hold the rolled-back configuration: a reload refuses it, and a restarted
    // daemon enforces the last confirmed one.
    lab.signal_daemon("-HUP");
    assert_logged(
        &lab,
        "reload refused: the configuration files hold the configuration that was rolled back",
        1,
    );
    lab.stop_daemon("-TERM");
    lab.start_daemon();
    assert_logged(&lab, "enforcing the last confirmed one instead", 1);
    assert_eq!(sequence_in_force(&lab), OLD_IN_FORCE, "still the old doors");
    // Applied again on purpose, it is the administrator's choice.
    ok(&lab.admin(&["apply"]));
    assert_eq!(sequence_in_force(&lab), NEW_IN_FORCE);
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[test]
fn a_trial_outlives_a_restart_and_its_deadline_passing_while_no_daemon_runs_rolls_it_back() {
    let Some(mut lab) = lab_with(2, FAST, OLD, ADVANCED) else {
        return;
    };
    lab.start_daemon();
    lab.write_config(FAST, NEW, ADVANCED);
    ok(&lab.admin(&["apply", "--confirm-within", "10"]));
    let deadline = status(&lab)["pending_confirmation"]["deadline"]
        .as_u64()
        .expect("deadline");

    // A restart during the trial (a crash, a reboot) goes on with it.
    lab.stop_daemon("-TERM");
    lab.start_daemon();
    assert_logged(
        &lab,
        "the configuration files are on trial, as when the daemon stopped",
        1,
    );
    assert_eq!(
        status(&lab)["pending_confirmation"]["deadline"].as_u64(),
        Some(deadline)
    );
    assert!(
        opens(&lab, 0, ["7100", "9100", "8100"]),
        "on trial: the new doors"
    );

    // Stopped again until the deadline passed: the start rolls back at once.
    lab.stop_daemon("-TERM");
    while unix_now() <= deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.start_daemon();
    assert_logged(&lab, "the deadline passed unconfirmed", 1);
    assert!(status(&lab)["pending_confirmation"].is_null());
    assert!(
        !opens(&lab, 1, ["7100", "9100", "8100"]),
        "the trial's doors are gone"
    );
    assert!(
        opens(&lab, 1, ["7000", "9000", "8000"]),
        "the old doors again"
    );
    // And it stays rolled back, as after a rollback by a running daemon.
    lab.signal_daemon("-HUP");
    assert_logged(
        &lab,
        "reload refused: the configuration files hold the configuration that was rolled back",
        1,
    );
    // An apply with no daemon running is on purpose too: a starting daemon keeps its files.
    lab.stop_daemon("-TERM");
    let out = lab.admin(&["apply"]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("applied on purpose"));
    lab.start_daemon();
    assert!(
        opens(&lab, 0, ["7100", "9100", "8100"]),
        "the applied doors"
    );
    assert!(!lab
        .daemon_log()
        .contains("enforcing the last confirmed one"));
}
