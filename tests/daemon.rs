//! Integration tests of the daemon: the real kernel firewall, the real `portknock` binary as
//! daemon and client, and other real clients, in network namespaces made by each test.

mod common;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use portknock::firewall::{Changes, Kernel};

/// The usual lab, daemon started.
fn lab(clients: usize, extra: &str) -> Option<Lab> {
    let mut lab = lab_with(clients, extra, SIMPLE, ADVANCED)?;
    lab.start_daemon();
    Some(lab)
}

#[test]
fn simple_sequence_opens_for_the_knocker_only_and_expires() {
    let Some(lab) = lab(2, FAST) else { return };
    assert!(!lab.can_connect(0, SERVER4, 22), "closed before any knock");
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    // Right after the last knock, within less than TCP's first retransmission (1 s).
    let mut established = lab.connect(0, SERVER4, 22);
    assert!(still_works(&mut established));
    assert!(
        !lab.can_connect(1, SERVER4, 22),
        "another source stays refused"
    );
    wait_until(Duration::from_secs(10), || !lab.can_connect(0, SERVER4, 22))
        .expect("the grant expires after FW_PORTKNOCK_SIMPLE_OPEN");
    assert!(
        still_works(&mut established),
        "established connection survives expiry"
    );
}

#[test]
fn knocking_again_refreshes_the_grant() {
    let Some(lab) = lab(1, "FW_PORTKNOCK_SIMPLE_OPEN=30\n") else {
        return;
    };
    // Seconds left of the client's one grant, as `status` reads them from the kernel.
    let left = || {
        let grants = status_json_grants(&lab);
        assert_eq!(grants.len(), 1, "{grants:?}");
        grants[0]["remaining"].as_u64().expect("remaining")
    };
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    lab.connect(0, SERVER4, 22);
    wait_until(Duration::from_secs(10), || left() <= 27).expect("the grant runs down");
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    wait_until(Duration::from_secs(5), || left() >= 28)
        .expect("the second knock gives the grant its full time again");
}

#[test]
fn status_text_names_the_modes_the_doors_and_the_grants() {
    let Some(lab) = lab(1, "") else { return };
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    lab.connect(0, SERVER4, 22);
    let out = lab.admin(&["status"]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "engine on  simple on  advanced on",
        "table inet portknock: installed",
        "doors: 2",
        "     22  simple    7000/tcp,9000/tcp,8000/tcp",
        "   2222  advanced  2000/udp (OTP)",
        "grants: 1",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    let grant = format!(
        "  {:<39}  port    22  simple    ",
        portknock::netns::client4(0)
    );
    assert!(text.contains(&grant), "{grant:?} missing from:\n{text}");
}

#[test]
fn only_syns_count_as_knocks() {
    let Some(lab) = lab(1, FAST) else { return };
    let me: IpAddr = portknock::netns::client4(0)
        .parse()
        .expect("client address");
    // Each of these, in the door's order, would open 22 if it counted.
    for segment in [Segment::Ack, Segment::SynAck, Segment::Rst, Segment::Fin] {
        for port in [7000, 9000, 8000] {
            lab.raw_tcp(0, me, port, segment);
        }
    }
    // A wrong sequence of SYNs: once the daemon reports it, it has handled all of the above.
    lab.raw_tcp(0, me, 7000, Segment::Syn);
    lab.raw_tcp(0, me, 8000, Segment::Syn);
    assert_logged(&lab, "wrong sequence", 1);
    assert_eq!(status_grants(&lab), [], "segments other than SYNs knocked");
    for port in [7000, 9000, 8000] {
        lab.raw_tcp(0, me, port, Segment::Syn);
    }
    wait_until(Duration::from_secs(5), || lab.can_connect(0, SERVER4, 22)).expect("SYNs knock");
}

#[test]
fn the_daemon_tracks_at_most_max_sources_forgetting_the_least_recent() {
    let Some(lab) = lab(1, "FW_PORTKNOCK_MAX_SOURCES=8\n") else {
        return;
    };
    let spoofed = |n: u8| IpAddr::from([198, 18, 7, n]);
    lab.raw_tcp(0, spoofed(1), 7000, Segment::Syn);
    lab.raw_tcp(0, spoofed(1), 9000, Segment::Syn);
    // Sixteen more sources start a sequence: the first one's progress is forgotten.
    for n in 10..26 {
        lab.raw_tcp(0, spoofed(n), 7000, Segment::Syn);
    }
    lab.raw_tcp(0, spoofed(1), 8000, Segment::Syn);
    // A source that knocks now, after them all, is not locked out.
    for port in [7000, 9000, 8000] {
        lab.raw_tcp(0, spoofed(2), port, Segment::Syn);
    }
    let granted = || -> Vec<String> {
        status_grants(&lab)
            .into_iter()
            .map(|(source, ..)| source)
            .collect()
    };
    // The knocks are handled in order, so once the last source is granted the first one's
    // final knock has been handled too.
    wait_until(Duration::from_secs(5), || !granted().is_empty()).expect("a grant");
    assert_eq!(granted(), ["198.18.7.2"]);
}

#[test]
fn progress_the_engine_lets_go_is_disarmed_in_the_kernel_too() {
    // Eight more doors, each with a first knock of its own: a source that starts all eight
    // after 22's 7000, 9000 has 22's progress forgotten (the engine keeps eight per source).
    let mut simple = String::from("22:7000,9000,8000\n");
    for i in 0..8 {
        simple += &format!("{}:{},{},{}\n", 23 + i, 6001 + i, 5001 + i, 4001 + i);
    }
    let Some(mut lab) = lab_with(1, "", &simple, ADVANCED) else {
        return;
    };
    lab.start_daemon();
    let mut knocks = vec!["knock".to_string(), SERVER4.to_string()];
    knocks.extend(["7000", "9000"].map(String::from));
    knocks.extend((0..8).map(|i| (6001 + i).to_string()));
    // By docs/behaviour.md §2 this is a fresh 7000 and then a wrong knock.
    knocks.extend(["7000", "8000"].map(String::from));
    let args: Vec<&str> = knocks.iter().map(String::as_str).collect();
    ok(&lab.client(0, &args));
    assert_logged(&lab, "wrong sequence", 1);
    assert!(
        !lab.can_connect(0, SERVER4, 22),
        "the arming of 22 outlived its progress"
    );
}

#[test]
fn advanced_otp_opens_and_closes() {
    let Some(lab) = lab(1, "") else { return };
    assert!(!lab.can_connect(0, SERVER4, 2222));
    ok(&lab.client(0, &["otp", SERVER4, "2000", "opensecret1"]));
    let mut established = lab.connect(0, SERVER4, 2222);
    ok(&lab.client(0, &["otp", SERVER4, "2000", "closesecret1"]));
    assert!(
        !lab.can_connect(0, SERVER4, 2222),
        "closed by the close OTP"
    );
    assert!(
        still_works(&mut established),
        "established connection survives a close"
    );
}

/// Runs a shell command line inside client namespace `i` (for third-party clients).
fn sh(lab: &Lab, i: usize, script: &str) -> std::process::Output {
    let mut cmd = lab.clients[i].command("bash");
    cmd.args(["-c", script]);
    output_within(cmd)
}

/// `timeout SECONDS` for a shell connection that must beat TCP's first retransmission.
fn within_retransmit() -> String {
    format!("timeout {}", BEFORE_SYN_RETRANSMIT.as_secs_f64())
}

#[test]
fn wrong_order_does_not_open_but_retransmissions_do() {
    let Some(lab) = lab(1, FAST) else { return };
    // 7000,8000,9000 is not 7000,9000,8000: the 8000 knock resets the sequence.
    ok(&lab.client(0, &["knock", SERVER4, "7000", "8000", "9000", "8000"]));
    assert!(
        !lab.can_connect(0, SERVER4, 22),
        "a wrong order must not open"
    );
    // Every knock doubled, as SYN retransmissions or a double click would be.
    ok(&lab.client(
        0,
        &[
            "knock", SERVER4, "7000", "7000", "9000", "9000", "8000", "8000",
        ],
    ));
    lab.connect(0, SERVER4, 22);
}

#[test]
fn a_final_knock_opens_only_the_door_it_finishes_even_when_it_arms_another() {
    // 8000 finishes 22 and is the first of 23's two knocks: it arms 23. The kernel must not
    // take that same knock as 23's final one.
    let simple = "22:7000,9000,8000\n23:8000,6000\n";
    let Some(mut lab) = lab_with(1, FAST, simple, ADVANCED) else {
        return;
    };
    lab.listen(23);
    lab.start_daemon();
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    lab.connect(0, SERVER4, 22);
    // The grant of 22 and the arming of 23 are one transaction: once the grant is there, so
    // is the arming.
    wait_until(Duration::from_secs(5), || !status_grants(&lab).is_empty())
        .expect("the daemon grants 22");
    assert!(
        !lab.can_connect(0, SERVER4, 23),
        "23 is armed, but its final knock has not come"
    );
    ok(&lab.client(0, &["knock", SERVER4, "6000"]));
    lab.connect(0, SERVER4, 23);
}

#[test]
fn doors_sharing_a_final_knock_open_only_their_own_door_at_once() {
    // 22 and 23 both end on 8000; 24 opens on one knock, which the daemon grants.
    let simple = "22:7000,9000,8000\n23:6000,8000\n24:5000\n";
    let Some(mut lab) = lab_with(2, FAST, simple, ADVANCED) else {
        return;
    };
    lab.listen(23);
    lab.listen(24);
    lab.start_daemon();

    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    lab.connect(0, SERVER4, 22);
    assert_logged(&lab, "grant: simple sequence complete", 1);
    assert!(!lab.can_connect(0, SERVER4, 23), "23 was not knocked");
    ok(&lab.client(1, &["knock", SERVER4, "6000", "8000"]));
    lab.connect(1, SERVER4, 23);
    assert_logged(&lab, "grant: simple sequence complete", 2);
    assert!(!lab.can_connect(1, SERVER4, 22), "22 was not knocked");
    // 22's first knock and then the shared final knock opens neither door.
    ok(&lab.client(1, &["knock", SERVER4, "7000", "8000"]));
    assert_logged(&lab, "wrong sequence", 1);
    assert!(!lab.can_connect(1, SERVER4, 22));
    ok(&lab.client(0, &["knock", SERVER4, "5000"]));
    wait_until(Duration::from_secs(5), || lab.can_connect(0, SERVER4, 24))
        .expect("the daemon opens 24");
    assert!(
        !lab.can_connect(1, SERVER4, 24),
        "only for the source that knocked"
    );
}

#[test]
fn of_two_doors_one_knock_arms_the_kernel_holds_the_later_and_the_daemon_opens_the_other() {
    // 7000, 9000 arms both doors; a source has one armed door in the kernel: 23.
    let simple = "22:7000,9000,8000\n23:7000,9000,6000\n";
    let Some(mut lab) = lab_with(2, FAST, simple, ADVANCED) else {
        return;
    };
    lab.listen(23);
    lab.start_daemon();
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "6000"]));
    lab.connect(0, SERVER4, 23);
    assert_logged(&lab, "grant: simple sequence complete", 1);
    assert!(!lab.can_connect(0, SERVER4, 22), "22 was not finished");
    ok(&lab.client(1, &["knock", SERVER4, "7000", "9000", "8000"]));
    wait_until(Duration::from_secs(5), || lab.can_connect(1, SERVER4, 22))
        .expect("the daemon opens 22");
    assert_logged(&lab, "grant: simple sequence complete", 2);
    assert!(!lab.can_connect(1, SERVER4, 23), "23 was not finished");
}

#[test]
fn verify_tells_a_shut_door_from_an_open_one() {
    let Some(lab) = lab(1, FAST) else { return };
    let out = lab.client(
        0,
        &[
            "knock",
            SERVER4,
            "7000",
            "8000",
            "9000",
            "--verify",
            "22",
            "--verify-timeout",
            "500",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("port 22 on 198.18.0.1 did not open")
            && stdout.contains("check the sequence"),
        "{stdout}"
    );
    let out = lab.client(
        0,
        &["knock", SERVER4, "7000", "9000", "8000", "--verify", "22"],
    );
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("port 22 on 198.18.0.1 is open"));
    let out = lab.client(
        0,
        &[
            "otp",
            SERVER4,
            "2000",
            "wrongsecret",
            "--verify",
            "2222",
            "--verify-timeout",
            "500",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("check the secret, the clock"));
}

#[test]
fn verify_says_when_the_port_was_already_open_before_the_knock() {
    let Some(lab) = lab(1, "FW_PORTKNOCK_SIMPLE_OPEN=60\n") else {
        return;
    };
    let stdout = |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let already = "was already open before the knock (an earlier grant?)";
    let out = lab.client(0, &["knock", SERVER4, "7000,9000,8000", "--verify", "22"]);
    ok(&out);
    assert!(
        stdout(&out).contains("port 22 on 198.18.0.1 is open (answered after")
            && !stdout(&out).contains(already),
        "{}",
        stdout(&out)
    );
    // A wrong sequence while that grant lives: the port is open, but not thanks to this knock.
    let out = lab.client(
        0,
        &["knock", SERVER4, "7000", "8000", "9000", "--verify", "22"],
    );
    ok(&out);
    assert!(
        stdout(&out).contains(&format!("port 22 on 198.18.0.1 is open, but it {already}")),
        "{}",
        stdout(&out)
    );
    // The same for a one-time password: a wrong secret with an earlier grant live.
    let out = lab.client(
        0,
        &["otp", SERVER4, "2000", "opensecret1", "--verify", "2222"],
    );
    ok(&out);
    assert!(!stdout(&out).contains(already), "{}", stdout(&out));
    let out = lab.client(
        0,
        &["otp", SERVER4, "2000", "wrongsecret", "--verify", "2222"],
    );
    ok(&out);
    assert!(
        stdout(&out).contains(&format!(
            "port 2222 on 198.18.0.1 is open, but it {already}"
        )),
        "{}",
        stdout(&out)
    );
    assert_logged(&lab, "bad OTP", 1);
}

#[test]
fn strict_reset_on_an_interleaved_wrong_knock() {
    // docs/behaviour.md §2: 1,2,5,3,4 does not open 22:1,2,3,4,5.
    let Some(mut lab) = lab_with(1, FAST, "22:1,2,3,4,5\n", ADVANCED) else {
        return;
    };
    lab.start_daemon();
    ok(&lab.client(0, &["knock", SERVER4, "1", "2", "5", "3", "4"]));
    assert_logged(&lab, "wrong sequence", 1);
    assert!(!lab.can_connect(0, SERVER4, 22));
    ok(&lab.client(0, &["knock", SERVER4, "1", "2", "3", "4", "5"]));
    lab.connect(0, SERVER4, 22);
}

#[test]
fn a_sequence_slower_than_the_knock_timeout_does_not_open() {
    let Some(lab) = lab(1, FAST) else { return };
    ok(&lab.client(
        0,
        &["knock", SERVER4, "7000", "9000", "8000", "--delay", "2600"],
    ));
    assert_logged(&lab, "expired", 1);
    assert!(!lab.can_connect(0, SERVER4, 22));
}

#[test]
fn third_party_clients_knock_too() {
    let Some(lab) = lab(1, FAST) else { return };
    // bash's /dev/tcp: a plain connection attempt per port.
    let out = sh(
        &lab,
        0,
        "for p in 7000 9000 8000; do (exec 3<>/dev/tcp/198.18.0.1/$p) 2>/dev/null; done; timeout 5 bash -c 'exec 3<>/dev/tcp/198.18.0.1/22' && echo open",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "open",
        "bash /dev/tcp knock then connect"
    );
    // knockd's `knock` client followed at once by a connection: the first SYN must not be lost.
    wait_until(Duration::from_secs(10), || !lab.can_connect(0, SERVER4, 22))
        .expect("grant expired");
    let script = format!(
        "knock 198.18.0.1 7000 9000 8000 && {} bash -c 'exec 3<>/dev/tcp/198.18.0.1/22' && echo open",
        within_retransmit()
    );
    let out = sh(&lab, 0, &script);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "open",
        "knock && connect before TCP's retransmission"
    );
    // netcat's zero-I/O scan mode.
    wait_until(Duration::from_secs(10), || !lab.can_connect(0, SERVER4, 22))
        .expect("grant expired");
    let out = sh(&lab, 0, "for p in 7000 9000 8000; do nc -z -w1 198.18.0.1 $p; done; nc -z -w1 198.18.0.1 22 && echo open");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "open",
        "nc -z knock"
    );
}

#[test]
fn immediate_connect_after_the_last_knock_over_ipv4_and_ipv6() {
    let Some(lab) = lab(1, FAST) else { return };
    for (flag, server) in [("-4", SERVER4), ("-6", SERVER6)] {
        let script = format!(
            "{BIN} knock {flag} {server} 7000 9000 8000 >/dev/null && {} bash -c 'exec 3<>/dev/tcp/{server}/22' && echo open",
            within_retransmit()
        );
        let out = sh(&lab, 0, &script);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "open",
            "{flag}: connect before TCP's retransmission after the last knock"
        );
        let script = format!(
            "{BIN} otp {flag} {server} 2000 opensecret1 >/dev/null 2>&1 && {} bash -c 'exec 3<>/dev/tcp/{server}/2222' && echo open",
            within_retransmit()
        );
        let out = sh(&lab, 0, &script);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "open",
            "{flag}: connect before TCP's retransmission after the OTP"
        );
    }
}

#[test]
fn otp_replays_are_refused_from_anywhere_and_after_a_restart() {
    let Some(mut lab) = lab(2, "") else { return };
    let payload = otp_payload("opensecret1", "198.18.0.2", minute_now());
    send_udp(&lab, 0, SERVER4, 2000, vec![payload.clone()]);
    assert_logged(&lab, "grant: valid open OTP", 1);
    ok(&lab.admin(&["close", "198.18.0.2", "2222"]));
    assert!(!lab.can_connect(0, SERVER4, 2222));

    send_udp(&lab, 0, SERVER4, 2000, vec![payload.clone()]);
    send_udp(&lab, 1, SERVER4, 2000, vec![payload.clone()]);
    assert_logged(&lab, "replay", 2);
    assert!(
        !lab.can_connect(0, SERVER4, 2222),
        "a replay from the same source does not open"
    );
    assert!(
        !lab.can_connect(1, SERVER4, 2222),
        "a replay from another source does not open"
    );

    lab.stop_daemon("-TERM");
    lab.start_daemon();
    send_udp(&lab, 0, SERVER4, 2000, vec![payload]);
    assert_logged(&lab, "replay", 1);
    assert!(!lab.can_connect(0, SERVER4, 2222));

    // Killed the moment after a grant: the entry was written before the grant was made.
    let close = otp_payload("closesecret1", "198.18.0.2", minute_now());
    send_udp(&lab, 0, SERVER4, 2000, vec![close.clone()]);
    assert_logged(&lab, "close: valid close OTP", 1);
    lab.stop_daemon("-KILL");
    lab.start_daemon();
    send_udp(&lab, 0, SERVER4, 2000, vec![close]);
    // Refused after SIGKILL too.
    assert_logged(&lab, "replay", 1);
}

#[test]
fn everything_else_is_left_alone_knock_ports_answer_as_closed_and_otp_grants_expire() {
    let Some(lab) = lab(1, "FW_PORTKNOCK_ADVANCED_OPEN=2\n") else {
        return;
    };
    lab.listen(80);
    let nft = |args: &[&str]| {
        let out = lab.server.command("nft").args(args).output().expect("nft");
        ok(&out);
    };
    // A table of the host's own, in the server namespace.
    nft(&["add", "table", "inet", "host_own"]);
    nft(&[
        "add",
        "chain",
        "inet",
        "host_own",
        "c",
        "{ type filter hook input priority 0 ; policy accept ; }",
    ]);
    ok(&lab.admin(&["apply"]));
    assert_logged(&lab, "configuration reloaded", 1);
    assert!(
        lab.ruleset().contains("table inet host_own"),
        "apply and reload keep it"
    );

    // docs/behaviour.md §4: only protected ports are filtered; a knock port answers as a closed port does.
    assert!(
        lab.can_connect(0, SERVER4, 80),
        "an unprotected port is open to all"
    );
    let knock = SocketAddr::new(ip(SERVER4), 7000);
    let answer = lab.clients[0]
        .run(move || TcpStream::connect_timeout(&knock, Duration::from_secs(2)))
        .expect("inside the client namespace");
    assert_eq!(
        answer.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "a knock is observed, not dropped: the kernel resets it"
    );

    // An OTP grant runs out after FW_PORTKNOCK_ADVANCED_OPEN.
    ok(&lab.client(0, &["otp", SERVER4, "2000", "opensecret1"]));
    let mut established = lab.connect(0, SERVER4, 2222);
    wait_until(Duration::from_secs(10), || {
        !lab.can_connect(0, SERVER4, 2222)
    })
    .expect("the OTP grant expires");
    assert!(
        still_works(&mut established),
        "established connections stay"
    );

    ok(&lab.admin(&["remove"]));
    assert!(
        lab.ruleset().contains("table inet host_own"),
        "remove keeps it"
    );
}

#[test]
fn otp_outside_the_skew_window_is_refused() {
    let Some(lab) = lab(1, "FW_PORTKNOCK_OTP_SKEW=1\n") else {
        return;
    };
    send_udp(
        &lab,
        0,
        SERVER4,
        2000,
        vec![otp_payload("opensecret1", "198.18.0.2", minute_now() - 3)],
    );
    send_udp(
        &lab,
        0,
        SERVER4,
        2000,
        vec![otp_payload("opensecret1", "198.18.0.2", minute_now() + 3)],
    );
    assert_logged(&lab, "bad OTP", 2);
    assert!(!lab.can_connect(0, SERVER4, 2222));
    // A wrong source address in the MAC (as from a client that forgot --source behind NAT).
    send_udp(
        &lab,
        0,
        SERVER4,
        2000,
        vec![otp_payload("opensecret1", "203.0.113.5", minute_now())],
    );
    assert_logged(&lab, "bad OTP", 3);
    assert!(!lab.can_connect(0, SERVER4, 2222));
}

#[test]
fn a_payload_made_outside_portknock_opens() {
    let Some(lab) = lab(1, "") else { return };
    // Python's hmac, sent by socat: the classic gen_hmac.py + knock.sh pipeline.
    let script = r#"python3 -c '
import hmac, hashlib, socket, struct, time, sys
msg = socket.inet_aton("198.18.0.2") + struct.pack("<I", int(time.time() // 60))
sys.stdout.write(hmac.new(b"opensecret1", msg, hashlib.sha256).hexdigest() + "\n")
' | socat -u - UDP-SENDTO:198.18.0.1:2000"#;
    let out = sh(&lab, 0, script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_logged(&lab, "grant: valid open OTP", 1);
    lab.connect(0, SERVER4, 2222);
}

#[test]
fn both_modes_work_over_ipv6() {
    let Some(lab) = lab(2, FAST) else { return };
    assert!(!lab.can_connect(0, SERVER6, 22));
    assert!(!lab.can_connect(0, SERVER6, 2222));
    ok(&lab.client(0, &["knock", "-6", SERVER6, "7000", "9000", "8000"]));
    lab.connect(0, SERVER6, 22);
    ok(&lab.client(0, &["otp", "-6", SERVER6, "2000", "opensecret1"]));
    lab.connect(0, SERVER6, 2222);
    assert!(!lab.can_connect(1, SERVER6, 22));
    assert!(!lab.can_connect(1, SERVER6, 2222));
}

#[test]
fn ipv6_knocks_are_ignored_when_off_but_ports_stay_closed() {
    let Some(lab) = lab(1, "FW_PORTKNOCK_IPV6=no\n") else {
        return;
    };
    ok(&lab.client(0, &["knock", "-6", SERVER6, "7000", "9000", "8000"]));
    ok(&lab.client(0, &["knock", "-4", SERVER4, "7000", "9000", "8000"]));
    lab.connect(0, SERVER4, 22);
    // The daemon handled the IPv4 knocks, so it has handled the IPv6 ones before them.
    assert_logged(&lab, "grant: simple sequence complete", 1);
    assert!(
        !lab.can_connect(0, SERVER6, 22),
        "no IPv6 knock, and no IPv6 bypass"
    );
}

/// The grants `status --json` lists, as JSON objects.
fn status_json_grants(lab: &Lab) -> Vec<serde_json::Value> {
    let out = lab.admin(&["status", "--json"]);
    ok(&out);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    json["grants"].as_array().expect("grants array").clone()
}

/// The grants `status --json` lists: (source, port, mode), sorted.
fn status_grants(lab: &Lab) -> Vec<(String, u64, String)> {
    let mut grants: Vec<(String, u64, String)> = status_json_grants(lab)
        .iter()
        .map(|g| {
            (
                g["source"].as_str().expect("source").to_string(),
                g["port"].as_u64().expect("port"),
                g["mode"].as_str().expect("mode").to_string(),
            )
        })
        .collect();
    grants.sort();
    grants
}

fn nft_list(lab: &Lab, what: &[&str]) -> String {
    let out = lab
        .server
        .command("nft")
        .arg("list")
        .args(what)
        .output()
        .expect("nft");
    assert!(out.status.success(), "nft list {what:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn removing_what_is_not_there_is_no_error_and_a_refused_change_fails_alone() {
    let Some(lab) = lab_with(1, FAST, SIMPLE, ADVANCED) else {
        return;
    };
    ok(&lab.admin(&["apply"]));
    let open_for = Duration::from_secs(60);
    let first = lab
        .server
        .run(move || {
            let mut changes = Changes::new();
            changes.grant(ip("198.18.0.7"), 22, open_for);
            changes.revoke(ip("198.18.0.8"), 22);
            changes.disarm(ip("198.18.0.8"), portknock::port::KnockPort::tcp(8000), 22);
            changes.grant(ip("fd00:5eed::7"), 2222, open_for);
            Kernel::open()?.commit(&mut changes)
        })
        .expect("inside the server namespace");
    assert!(first.is_ok(), "nothing to remove is no error: {first:?}");
    // A timeout beyond what the kernel can count makes it refuse that change, and with it the
    // whole transaction; the grants around it must still be made.
    let second = lab
        .server
        .run(move || {
            let mut changes = Changes::new();
            changes.grant(ip("198.18.0.9"), 22, open_for);
            changes.grant(ip("198.18.0.10"), 22, Duration::MAX);
            changes.grant(ip("198.18.0.11"), 22, open_for);
            Kernel::open()?.commit(&mut changes)
        })
        .expect("inside the server namespace");
    let error = second
        .expect_err("the kernel refuses the endless grant")
        .to_string();
    assert!(error.contains("add a grant"), "{error}");
    let grants: Vec<String> = status_grants(&lab).into_iter().map(|g| g.0).collect();
    assert_eq!(
        grants,
        ["198.18.0.11", "198.18.0.7", "198.18.0.9", "fd00:5eed::7"]
    );
}

#[test]
fn status_json_lists_exactly_the_grants_and_open_close_work() {
    let Some(lab) = lab(2, "FW_PORTKNOCK_SIMPLE_OPEN=60\n") else {
        return;
    };
    assert_eq!(status_grants(&lab), vec![]);
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    ok(&lab.admin(&["open", "198.18.0.3", "2222", "--for", "100"]));
    assert_eq!(
        status_grants(&lab),
        vec![
            ("198.18.0.2".to_string(), 22, "simple".to_string()),
            ("198.18.0.3".to_string(), 2222, "advanced".to_string()),
        ]
    );
    lab.connect(1, SERVER4, 2222);
    ok(&lab.admin(&["close", "198.18.0.3", "2222"]));
    assert!(!lab.can_connect(1, SERVER4, 2222));
    assert_eq!(
        status_grants(&lab),
        vec![("198.18.0.2".to_string(), 22, "simple".to_string())]
    );
    let text = lab.admin(&["status"]);
    ok(&text);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("198.18.0.2") && text.contains("left"),
        "{text}"
    );
}

/// The seconds left of the grant of `source` on `port`, as `status --json` reads them.
fn remaining(lab: &Lab, source: &str, port: u64) -> u64 {
    let grants = status_json_grants(lab);
    let grant = grants
        .iter()
        .find(|g| g["source"] == source && g["port"] == port)
        .unwrap_or_else(|| panic!("no grant of {port} to {source}: {grants:?}"));
    grant["remaining"].as_u64().expect("remaining")
}

#[test]
fn open_refuses_a_port_no_door_protects_unless_forced_and_takes_durations() {
    let Some(lab) = lab(1, "") else { return };
    let out = lab.admin(&["open", "198.18.0.7", "80"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "portknock open: port 80 is protected by no door, so a grant of it changes nothing; the \
         doors protect 22, 2222; add --force to grant it anyway\n"
    );
    assert_eq!(status_grants(&lab), vec![]);

    ok(&lab.admin(&["open", "198.18.0.7", "80", "--force"]));
    ok(&lab.admin(&["open", "198.18.0.8", "22", "--for", "10m"]));
    ok(&lab.admin(&["open", "198.18.0.9", "2222", "--for", "2h"]));
    ok(&lab.admin(&["open", "198.18.0.10", "2222", "--for", "7d"]));
    ok(&lab.admin(&["open", "198.18.0.11", "22", "--for", "90"]));
    assert_eq!(
        status_grants(&lab),
        vec![
            ("198.18.0.10".to_string(), 2222, "advanced".to_string()),
            ("198.18.0.11".to_string(), 22, "simple".to_string()),
            ("198.18.0.7".to_string(), 80, "manual".to_string()),
            ("198.18.0.8".to_string(), 22, "simple".to_string()),
            ("198.18.0.9".to_string(), 2222, "advanced".to_string()),
        ]
    );
    for (source, port, secs) in [
        ("198.18.0.8", 22, 600),
        ("198.18.0.9", 2222, 7200),
        ("198.18.0.10", 2222, 604_800),
        ("198.18.0.11", 22, 90),
    ] {
        let left = remaining(&lab, source, port);
        assert!(
            (secs - 10..=secs).contains(&left),
            "{source}: {left}s left of {secs}s"
        );
    }
    let out = lab.admin(&["open", "198.18.0.8", "22", "--for", "10x"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("expected a duration such as 600, 30s, 10m, 2h or 7d"),
        "{stderr}"
    );
}

#[test]
fn close_says_whether_there_was_a_grant_to_close() {
    let Some(lab) = lab(1, "") else { return };
    ok(&lab.admin(&["open", "198.18.0.8", "22", "--for", "10m"]));
    let out = lab.admin(&["close", "198.18.0.8", "22"]);
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("closed port 22 to 198.18.0.8: its grant had ")
            && stdout.ends_with("s left (established connections stay up)\n"),
        "{stdout}"
    );
    assert_eq!(status_grants(&lab), vec![]);
    // Nothing left to close: the state asked for holds, so it is no failure, but it is said.
    let out = lab.admin(&["close", "198.18.0.8", "22"]);
    ok(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "nothing to close: 198.18.0.8 had no grant of port 22\n"
    );
}

#[test]
fn status_without_the_configuration_directory_shows_what_the_kernel_holds() {
    let Some(lab) = lab(1, "FW_PORTKNOCK_SIMPLE_OPEN=60\n") else {
        return;
    };
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    wait_until(Duration::from_secs(10), || status_grants(&lab).len() == 1)
        .expect("the knock is granted");
    let missing = lab.dir.path().join("no-such-directory");
    let missing = missing.to_str().expect("utf-8 path");
    let out = lab.admin(&["status", "--config-dir", missing]);
    ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = format!(
        "configuration in {missing} cannot be used (1 error, listed by portknock check): showing \
         only what the kernel holds\ntable inet portknock: installed\n"
    );
    assert!(stdout.starts_with(&first), "{stdout}");
    let grant = format!(
        "\ngrants: 1\n  {:<39}  port    22  ",
        portknock::netns::client4(0)
    );
    assert!(stdout.contains(&grant), "{stdout}");
    assert!(!stdout.contains("doors:"), "no doors are made up: {stdout}");
    assert!(!stdout.contains("unknown"), "{stdout}");
    let out = lab.admin(&["status", "--json", "--config-dir", missing]);
    ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["config_valid"], false);
    assert_eq!(json["table_installed"], true);
    assert_eq!(json.get("engine"), None);
    let grant = &json["grants"][0];
    assert_eq!(grant["port"], 22);
    assert_eq!(grant.get("mode"), None, "no mode is made up");
}

#[test]
fn apply_changes_doors_keeps_grants_and_refuses_broken_edits() {
    let Some(lab) = lab(2, "FW_PORTKNOCK_SIMPLE_OPEN=120\n") else {
        return;
    };
    lab.listen(23);
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    lab.connect(0, SERVER4, 22);

    // Add a door: the grant of the unchanged door survives, the new door works at once.
    let list = lab.config_dir().join("simple-portknock-list");
    std::fs::write(&list, "22:7000,9000,8000\n23:6000,6002,6001\n").expect("edit list");
    let out = lab.admin(&["apply"]);
    ok(&out);
    assert_logged(&lab, "configuration reloaded", 1);
    assert_eq!(
        status_grants(&lab),
        vec![("198.18.0.2".to_string(), 22, "simple".to_string())]
    );
    lab.connect(0, SERVER4, 22);
    assert!(!lab.can_connect(1, SERVER4, 23));
    ok(&lab.client(1, &["knock", SERVER4, "6000", "6002", "6001"]));
    lab.connect(1, SERVER4, 23);

    // A broken edit changes nothing, for apply and for a SIGHUP alike.
    let before = nft_list(&lab, &["chain", "inet", "portknock", "prerouting"])
        + &nft_list(&lab, &["set", "inet", "portknock", "protected"]);
    std::fs::write(&list, "22:7000,9000,8000\n24:70000\n").expect("break list");
    let out = lab.admin(&["apply"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("simple-portknock-list:2:"), "{stderr}");
    let pid = lab.daemon_pid().expect("daemon runs").to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill")
        .success());
    assert_logged(&lab, "reload refused", 1);
    let after = nft_list(&lab, &["chain", "inet", "portknock", "prerouting"])
        + &nft_list(&lab, &["set", "inet", "portknock", "protected"]);
    assert_eq!(before, after);
    // The broken configuration shows no modes, but the grants are all there.
    assert_eq!(status_json_grants(&lab).len(), 2);
    assert!(
        !lab.can_connect(1, SERVER4, 22),
        "still enforcing the previous configuration"
    );

    // FW_PORTKNOCK=no + apply takes the table away; apply again brings it back; so does remove.
    std::fs::write(&list, "22:7000,9000,8000\n").expect("fix list");
    let conf = lab.config_dir().join("portknock.conf");
    let text = std::fs::read_to_string(&conf).expect("conf");
    std::fs::write(&conf, text.replace("FW_PORTKNOCK=yes", "FW_PORTKNOCK=no")).expect("engine off");
    ok(&lab.admin(&["apply"]));
    assert!(!nft_list(&lab, &["tables"]).contains("portknock"));
    assert!(
        lab.can_connect(1, SERVER4, 22),
        "nothing is protected with the engine off"
    );
    std::fs::write(&conf, text).expect("engine on");
    ok(&lab.admin(&["apply"]));
    assert!(nft_list(&lab, &["tables"]).contains("portknock"));
    assert!(!lab.can_connect(1, SERVER4, 22));
    ok(&lab.admin(&["remove"]));
    assert!(!nft_list(&lab, &["tables"]).contains("portknock"));
}

#[test]
fn a_killed_daemon_fails_closed_and_a_restart_picks_up() {
    let Some(mut lab) = lab(2, FAST) else { return };
    ok(&lab.admin(&["open", "198.18.0.3", "22", "--for", "60"]));
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    lab.stop_daemon("-KILL");
    assert!(
        !lab.can_connect(0, SERVER4, 2222),
        "protected ports stay closed without the daemon"
    );
    lab.connect(0, SERVER4, 22);
    wait_until(Duration::from_secs(10), || !lab.can_connect(0, SERVER4, 22))
        .expect("the grant expires on time with the daemon dead");
    lab.start_daemon();
    assert_eq!(
        status_grants(&lab),
        vec![("198.18.0.3".to_string(), 22, "simple".to_string())],
        "grants survive a restart"
    );
    lab.connect(1, SERVER4, 22);
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    lab.connect(0, SERVER4, 22);
}

#[test]
fn a_second_daemon_refuses_to_start() {
    let Some(lab) = lab(0, "") else { return };
    let out = lab.admin(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another portknock daemon already runs"));
}

#[test]
fn serve_refuses_a_broken_configuration_and_a_missing_privilege() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(0);
    lab.write_config(
        "",
        "22:7000,9000,8000\n",
        "22,2000,opensecret1,closesecret1\n",
    );
    let out = lab.admin(&["serve"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("advanced-portknock-list:1: error:"),
        "{stderr}"
    );
    assert!(
        !nft_list(&lab, &["tables"]).contains("portknock"),
        "nothing installed"
    );

    let mut setpriv = lab.server.command("setpriv");
    setpriv
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "serve",
        ])
        .env("PORTKNOCK_CONFIG_DIR", lab.config_dir());
    let out = output_within(setpriv);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs CAP_NET_ADMIN"));
}

#[test]
fn sigterm_leaves_enforcement_in_place_and_secrets_never_reach_the_log() {
    let Some(mut lab) = lab(1, "") else { return };
    ok(&lab.client(0, &["otp", SERVER4, "2000", "opensecret1"]));
    lab.connect(0, SERVER4, 2222);
    ok(&lab.client(0, &["otp", SERVER4, "2000", "closesecret1"]));
    ok(&lab.client(0, &["otp", SERVER4, "2000", "wrongsecret"]));
    assert_logged(&lab, "bad OTP", 1);
    lab.stop_daemon("-TERM");
    assert!(lab.daemon_log().contains("rules stay in force"));
    assert!(nft_list(&lab, &["tables"]).contains("portknock"));
    assert!(
        !lab.can_connect(0, SERVER4, 2222),
        "still closed with the daemon stopped"
    );
    let log = lab.daemon_log();
    for secret in ["opensecret1", "closesecret1", "wrongsecret"] {
        assert!(!log.contains(secret), "secret in the log:\n{log}");
    }
}

#[test]
fn the_daemon_runs_with_cap_net_admin_alone() {
    let Some(mut lab) = lab_with(1, FAST, SIMPLE, ADVANCED) else {
        return;
    };
    // As under the systemd unit: CAP_NET_ADMIN is the only capability it can ever have.
    lab.start_daemon_via(
        "setpriv",
        &[
            "--bounding-set=-all,+net_admin",
            "--inh-caps=-all",
            BIN,
            "serve",
        ],
        &[],
    );
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    lab.connect(0, SERVER4, 22);
    assert_only_net_admin(&lab);
}

/// The effective, permitted and bounding capability sets of each of the daemon's threads
/// (capabilities belong to threads) hold CAP_NET_ADMIN alone.
fn assert_only_net_admin(lab: &Lab) {
    let pid = lab.daemon_pid().expect("daemon runs");
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads");
    for task in tasks {
        let path = task.expect("thread").path().join("status");
        let status = std::fs::read_to_string(&path).expect("status");
        for key in ["CapEff:", "CapPrm:", "CapBnd:"] {
            let value = status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .expect("capability line")
                .trim();
            assert_eq!(
                value,
                "0000000000001000",
                "{key} of {} holds CAP_NET_ADMIN alone",
                path.display()
            );
        }
    }
}

#[test]
fn the_daemon_drops_every_capability_but_cap_net_admin_after_set_up() {
    let Some(lab) = lab(1, FAST) else { return };
    assert_only_net_admin(&lab);
    // Still able to do its job: a reload (which runs nft), a grant, and an OTP grant, which
    // starts the thread that flushes the used-OTP record.
    ok(&lab.admin(&["apply"]));
    assert_logged(&lab, "configuration reloaded", 1);
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    lab.connect(0, SERVER4, 22);
    ok(&lab.client(0, &["otp", SERVER4, "2000", "opensecret1"]));
    lab.connect(0, SERVER4, 2222);
    let pid = lab.daemon_pid().expect("daemon runs");
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the daemon's threads")
        .count();
    assert!(threads >= 2, "the flush thread runs ({threads} threads)");
    assert_only_net_admin(&lab);
}
