//! Integration tests of the daemon: the real kernel firewall, the real `portknock` binary as
//! daemon and client, and other real clients, in network namespaces made by each test.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

const SIMPLE: &str = "22:7000,9000,8000\n";
const ADVANCED: &str = "2222,2000,opensecret1,closesecret1\n";
const FAST: &str = "FW_PORTKNOCK_KNOCK_TIMEOUT=2\nFW_PORTKNOCK_SIMPLE_OPEN=3\n";

fn lab(clients: usize, extra: &str) -> Option<Lab> {
    if !require_root() {
        return None;
    }
    let mut lab = Lab::new(clients);
    lab.write_config(extra, SIMPLE, ADVANCED);
    lab.listen(22);
    lab.listen(2222);
    lab.start_daemon();
    Some(lab)
}

fn connect(lab: &Lab, i: usize, addr: &str, port: u16) -> TcpStream {
    let target = SocketAddr::new(ip(addr), port);
    lab.clients[i]
        .run(move || TcpStream::connect_timeout(&target, Duration::from_millis(900)))
        .unwrap_or_else(|e| panic!("client {i} could not connect to {target}: {e}"))
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn simple_sequence_opens_for_the_knocker_only_and_expires() {
    let Some(lab) = lab(2, FAST) else { return };
    assert!(!lab.can_connect(0, SERVER4, 22), "closed before any knock");
    ok(&lab.client(0, &["knock", SERVER4, "7000", "9000", "8000"]));
    // Right after the last knock, within less than TCP's first retransmission (1 s).
    let mut established = connect(&lab, 0, SERVER4, 22);
    assert!(still_works(&mut established));
    assert!(!lab.can_connect(1, SERVER4, 22), "another source stays refused");
    wait_until(Duration::from_secs(10), || !lab.can_connect(0, SERVER4, 22))
        .expect("the grant expires after FW_PORTKNOCK_SIMPLE_OPEN");
    assert!(still_works(&mut established), "established connection survives expiry");
}

#[test]
fn advanced_otp_opens_and_closes() {
    let Some(lab) = lab(1, "") else { return };
    assert!(!lab.can_connect(0, SERVER4, 2222));
    ok(&lab.client(0, &["otp", SERVER4, "2000", "opensecret1"]));
    let mut established = connect(&lab, 0, SERVER4, 2222);
    ok(&lab.client(0, &["otp", SERVER4, "2000", "closesecret1"]));
    assert!(!lab.can_connect(0, SERVER4, 2222), "closed by the close OTP");
    assert!(still_works(&mut established), "established connection survives a close");
}
