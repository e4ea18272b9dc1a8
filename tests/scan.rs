//! Port scans do not open doors (docs/behaviour.md §2): a shuffled scan that happens to walk a
//! door's knock ports in order is taken for the scan it is, by the ports outside the door it
//! tries in between; a client that, while it knocks, also talks to the server's other services
//! still gets in.

mod common;

use std::net::IpAddr;

use common::*;

/// The door: its knock ports inside the range the scan covers.
const DOOR: &str = "22:2300,3100,1700\n";
const KNOCKS: [u16; 3] = [2300, 3100, 1700];
/// The ports the scan tries.
const RANGE: std::ops::RangeInclusive<u16> = 1..=4000;

/// The ports of [`RANGE`] in a shuffled order (a fixed seed, so every run is the same scan),
/// but with the knock ports in the door's order: the one order in six in which a shuffled scan
/// that sees only knock ports opens the door, and the one this test must survive.
fn unlucky_shuffle() -> Vec<u16> {
    let mut ports: Vec<u16> = RANGE.collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..ports.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ports.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    let mut at: Vec<usize> = KNOCKS
        .iter()
        .map(|k| ports.iter().position(|p| p == k).expect("in range"))
        .collect();
    at.sort_unstable();
    for (i, k) in at.into_iter().zip(KNOCKS) {
        ports[i] = k;
    }
    ports
}

#[test]
fn a_shuffled_scan_that_walks_the_knock_ports_in_order_opens_nothing() {
    let Some(mut lab) = lab_with(2, "", DOOR, ADVANCED) else {
        return;
    };
    lab.start_daemon();
    let scanner: IpAddr = ip("198.18.0.2");
    // A SYN to each port, as `nmap -sS` sends them: one raw segment each, bounded in number.
    for port in unlucky_shuffle() {
        lab.raw_tcp(0, scanner, port, Segment::Syn);
    }
    assert_logged(&lab, "scan: knocks on many ports outside every door", 1);
    assert!(!lab.daemon_log().contains("grant"), "{}", lab.daemon_log());
    assert!(
        !lab.can_connect(0, SERVER4, 22),
        "the scanner is not let in"
    );

    // A client that, between its knocks, also tries the server's web and mail ports.
    let client: IpAddr = ip("198.18.0.3");
    for port in [2300, 80, 443, 3100, 993, 443, 1700] {
        lab.raw_tcp(1, client, port, Segment::Syn);
    }
    assert_logged(&lab, "grant: simple sequence complete", 1);
    assert!(lab.can_connect(1, SERVER4, 22));
}
