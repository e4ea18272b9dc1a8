//! docs/behaviour.md §6: the host's own ruleset, interfaces, addresses and routes are the same after a full
//! lab scenario as before it, and no test namespace is left behind.

mod common;

use std::process::Command;

use common::*;

fn host_snapshot() -> String {
    let mut snap = String::new();
    for args in [
        vec!["nft", "list", "ruleset"],
        vec!["ip", "-o", "link", "show"],
        vec!["ip", "-o", "addr", "show"],
        vec!["ip", "route", "show", "table", "all"],
    ] {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .expect("snapshot command");
        // A failed listing would make both snapshots empty, and equal.
        assert!(out.status.success(), "{args:?} failed");
        snap.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    snap
}

fn our_namespaces() -> Vec<String> {
    namespaces_named(&format!("pkt-{}-", std::process::id()))
}

#[test]
fn the_host_is_the_same_after_a_lab_run() {
    if !require_root() {
        return;
    }
    let before = host_snapshot();
    {
        let mut lab = lab_with(1, "", SIMPLE, ADVANCED).expect("root, checked above");
        lab.start_daemon();
        let out = lab.client(
            0,
            &["knock", SERVER4, "7000", "9000", "8000", "--verify", "22"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!our_namespaces().is_empty());
    }
    assert_eq!(
        our_namespaces(),
        Vec::<String>::new(),
        "namespaces cleaned up"
    );
    assert_eq!(
        before,
        host_snapshot(),
        "the host's ruleset, links, addresses and routes are untouched"
    );
}
