//! The table heals itself (docs/behaviour.md §4, self-healing): while the daemon runs, what
//! other tools do to `table inet portknock` — a flushed ruleset, a deleted table, a Debian
//! `nft -f /etc/nftables.conf` that starts with `flush ruleset`, a deleted rule — is undone at
//! once, with the grants that were running; `portknock remove` and `apply` with the engine off
//! still take the table away for good; a loop of flushes costs bounded log lines.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Runs `nft ARGS` in the server namespace.
fn nft(lab: &Lab, args: &[&str]) {
    let mut cmd = lab.server.command("nft");
    cmd.args(args);
    ok(&output_within(cmd));
}

/// A Debian-style /etc/nftables.conf: it flushes the whole ruleset, then loads the host's own
/// table.
const NFTABLES_CONF: &str = "#!/usr/sbin/nft -f\n\
flush ruleset\n\
\n\
table inet filter {\n\
\tchain input {\n\
\t\ttype filter hook input priority filter; policy accept;\n\
\t\ttcp dport 9999 counter\n\
\t}\n\
}\n";

/// Probes `SERVER4:22` from client `i`, which has no grant, every few milliseconds while
/// `act` runs and until the port has been shut for a while again; returns how long the port
/// was open (from the first connection that got in to the last; zero if none did) and when,
/// after the start of `act`, the last got in.
fn open_window(lab: &Lab, i: usize, act: impl FnOnce()) -> (Duration, Duration) {
    let target = SocketAddr::new(ip(SERVER4), 22);
    thread::scope(|scope| {
        let probe = scope.spawn(|| {
            lab.clients[i]
                .run(move || opened_at(target))
                .expect("inside the client namespace")
        });
        // The probe sees the port shut before anything happens.
        thread::sleep(Duration::from_millis(100));
        let acted = Instant::now();
        act();
        let opened = probe.join().expect("the probe");
        match (opened.first(), opened.last()) {
            (Some(first), Some(last)) => (*last - *first, last.saturating_duration_since(acted)),
            _ => (Duration::ZERO, Duration::ZERO),
        }
    })
}

/// When connections to `target` got in. Bounded: at most 10 s; done after 20 refusals in a
/// row once one got in, or after 3 s when none did.
fn opened_at(target: SocketAddr) -> Vec<Instant> {
    let start = Instant::now();
    let mut opened = Vec::new();
    let mut refused = 0;
    while start.elapsed() < Duration::from_secs(10) {
        let attempt = Instant::now();
        if TcpStream::connect_timeout(&target, Duration::from_millis(30)).is_ok() {
            opened.push(attempt);
            refused = 0;
        } else {
            refused += 1;
        }
        let done = if opened.is_empty() {
            start.elapsed() > Duration::from_secs(3)
        } else {
            refused >= 20
        };
        if done {
            break;
        }
    }
    opened
}

#[test]
fn what_other_tools_do_to_the_table_is_undone_with_the_grants_still_running() {
    let Some(mut lab) = lab_with(3, "FW_PORTKNOCK_SIMPLE_OPEN=120\n", SIMPLE, ADVANCED) else {
        return;
    };
    // A grant made by hand before the daemon starts must be put back by a heal as well.
    ok(&lab.admin(&["apply"]));
    let before_start = portknock::netns::client4(2);
    ok(&lab.admin(&["open", &before_start, "22", "--for", "10m"]));
    lab.start_daemon();
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    lab.connect(0, SERVER4, 22);
    lab.connect(2, SERVER4, 22);
    let conf = lab.dir.path().join("nftables.conf");
    std::fs::write(&conf, NFTABLES_CONF).expect("write nftables.conf");
    let conf = path_str(&conf);
    let acts: [(&str, Act); 4] = [
        (
            "nft flush ruleset",
            Box::new(|lab| nft(lab, &["flush", "ruleset"])),
        ),
        (
            "nft delete table",
            Box::new(|lab| nft(lab, &["delete", "table", "inet", "portknock"])),
        ),
        (
            "nft -f nftables.conf",
            Box::new(move |lab| nft(lab, &["-f", &conf])),
        ),
        ("a deleted guard rule", Box::new(delete_the_drop_rule)),
    ];
    for (n, (what, act)) in acts.iter().enumerate() {
        let (open, until) = open_window(&lab, 1, || act(&lab));
        eprintln!(
            "{what}: a source with no grant could connect for {open:?}, until {until:?} after the command started"
        );
        assert!(!lab.can_connect(1, SERVER4, 22), "{what}: shut again");
        lab.connect(0, SERVER4, 22);
        lab.connect(2, SERVER4, 22);
        assert_logged(&lab, "table inet portknock restored", n + 1);
    }
    assert!(
        lab.ruleset().contains("tcp dport 9999"),
        "the table nft -f loaded is untouched"
    );
    for line in lab.daemon_log().lines().filter(|l| l.contains("restored")) {
        eprintln!("{line}");
    }
}

/// Something another tool does to the ruleset.
type Act = Box<dyn Fn(&Lab)>;

/// Deletes the guard chain's last rule, the drop, by its handle.
fn delete_the_drop_rule(lab: &Lab) {
    let out = output_within({
        let mut cmd = lab.server.command("nft");
        cmd.args(["-a", "list", "chain", "inet", "portknock", "guard"]);
        cmd
    });
    ok(&out);
    let listing = String::from_utf8_lossy(&out.stdout);
    let handle = listing
        .lines()
        .find(|l| l.trim_start().starts_with("drop"))
        .and_then(|l| l.rsplit("handle ").next())
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| panic!("no drop rule in:\n{listing}"));
    nft(
        lab,
        &[
            "delete",
            "rule",
            "inet",
            "portknock",
            "guard",
            "handle",
            &handle,
        ],
    );
}

#[test]
fn remove_and_apply_with_the_engine_off_take_the_table_away_for_good() {
    let Some(mut lab) = lab_with(1, FAST, SIMPLE, ADVANCED) else {
        return;
    };
    lab.start_daemon();
    let out = lab.admin(&["remove"]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("the daemon keeps running"));
    let gone = || !lab.ruleset().contains("table inet portknock");
    assert!(gone(), "removed");
    // Given the time a heal takes many times over, it stays removed.
    thread::sleep(Duration::from_millis(500));
    assert!(gone(), "the daemon did not put it back");
    assert!(lab.can_connect(0, SERVER4, 22), "nothing protected");
    ok(&lab.admin(&["apply"]));
    assert!(!gone(), "apply puts it back");
    assert!(!lab.can_connect(0, SERVER4, 22));
    // Kept again: a flush is undone once more.
    nft(&lab, &["flush", "ruleset"]);
    wait_until(Duration::from_secs(5), || !gone()).expect("healed after the apply");

    let conf = lab.config_dir().join("portknock.conf");
    let on = std::fs::read_to_string(&conf).expect("conf");
    std::fs::write(&conf, on.replace("FW_PORTKNOCK=yes", "FW_PORTKNOCK=no")).expect("off");
    ok(&lab.admin(&["apply"]));
    assert!(gone(), "the engine off removes the table");
    thread::sleep(Duration::from_millis(500));
    assert!(gone(), "and the daemon leaves it so");
    assert_logged(&lab, "table inet portknock restored", 1);
}

#[test]
fn a_loop_of_flushes_leaves_the_daemon_alive_the_table_in_place_and_the_log_bounded() {
    let Some(mut lab) = lab_with(1, FAST, SIMPLE, ADVANCED) else {
        return;
    };
    lab.start_daemon();
    let mut cmd = lab.server.command("sh");
    cmd.args([
        "-c",
        "i=0; while [ $i -lt 100 ]; do nft flush ruleset; i=$((i+1)); done",
    ]);
    ok(&output_within(cmd));
    wait_until(Duration::from_secs(5), || {
        lab.ruleset().contains("table inet portknock")
    })
    .expect("the table is back after the last flush");
    assert!(!lab.can_connect(0, SERVER4, 22));
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    lab.connect(0, SERVER4, 22);
    let pid = lab.daemon_pid().expect("started");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the daemon is alive"
    );
    let log = lab.daemon_log();
    let restored = log.matches("table inet portknock restored").count();
    assert!(
        (1..=10).contains(&restored),
        "{restored} heal lines for 100 flushes:\n{log}"
    );
    assert!(log.lines().count() < 40, "the log is bounded:\n{log}");
}
