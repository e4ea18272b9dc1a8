//! Every path a connection to a protected port can take into the host (docs/behaviour.md §4,
//! "Which connections are guarded" and "Who always passes"), with the real neighbours: a port
//! published the way Docker publishes it (iptables-nft rules as Docker writes them), a plain
//! nft `dnat` and `redirect`, a router forwarding to a machine behind it, the host talking to
//! itself, and trusted sources.
//!
//! The "container" and the machine behind the router are namespaces behind the server
//! namespace (`Netns::behind`), at 198.19.n.2 and fd00:5eed::b0:n:2.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

/// A simple door and an advanced door on ports that DNAT sends on, and the usual doors.
const SIMPLE_PUBLISHED: &str =
    "22:7000,9000,8000\n8022:7100,7300,7200\n9022:6100,6300,6200\n8080:6400,6600,6500\n";
const ADVANCED_PUBLISHED: &str =
    "2222,2000,opensecret1,closesecret1\n8023,2001,opensecret2,closesecret2\n";

/// Runs `program ARGS` in namespace `ns`, failing the test with its output when it fails.
fn run_in(ns: &Netns, program: &str, args: &[&str]) {
    let mut cmd = ns.command(program);
    cmd.args(args);
    ok(&output_within(cmd));
}

/// Whether a TCP connection from `ns` to `addr:port` opens (one bounded attempt).
fn can_connect_from(ns: &Netns, addr: &str, port: u16) -> bool {
    let target = SocketAddr::new(ip(addr), port);
    ns.run(move || TcpStream::connect_timeout(&target, Duration::from_millis(700)).is_ok())
        .expect("inside the namespace")
}

/// Publishes the container's port 22 as the host's 8022 and 8023, over IPv4 and IPv6, with the
/// rules Docker writes through iptables-nft (`iptables-save` of a Docker host, the container's
/// bridge being `vb0`): a nat DOCKER chain reached for local destinations, DNAT there, and the
/// filter FORWARD chain with Docker's DROP policy and its accept of the published port.
fn publish_like_docker(lab: &Lab) {
    for (iptables, container) in [("iptables", behind4(0)), ("ip6tables", behind6(0))] {
        let to = |port: &str| {
            if iptables == "iptables" {
                format!("{container}:{port}")
            } else {
                format!("[{container}]:{port}")
            }
        };
        let script = [
            "-t nat -N DOCKER".to_string(),
            "-t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER".to_string(),
            "-t nat -A DOCKER -i vb0 -j RETURN".to_string(),
            format!(
                "-t nat -A DOCKER ! -i vb0 -p tcp -m tcp --dport 8022 -j DNAT --to-destination {}",
                to("22")
            ),
            format!(
                "-t nat -A DOCKER ! -i vb0 -p tcp -m tcp --dport 8023 -j DNAT --to-destination {}",
                to("22")
            ),
            "-t filter -P FORWARD DROP".to_string(),
            "-t filter -N DOCKER".to_string(),
            "-t filter -N DOCKER-USER".to_string(),
            "-t filter -A DOCKER-USER -j RETURN".to_string(),
            "-t filter -A FORWARD -j DOCKER-USER".to_string(),
            "-t filter -A FORWARD -o vb0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
                .to_string(),
            "-t filter -A FORWARD -o vb0 -j DOCKER".to_string(),
            "-t filter -A FORWARD -i vb0 ! -o vb0 -j ACCEPT".to_string(),
            format!("-t filter -A DOCKER -d {container} ! -i vb0 -o vb0 -p tcp -m tcp --dport 22 -j ACCEPT"),
        ];
        for line in script {
            let args: Vec<&str> = line.split_whitespace().collect();
            run_in(&lab.server, iptables, &args);
        }
    }
}

/// A lab with a container behind the server listening on 22, published by `publish`, and the
/// daemon running with the published doors.
fn published_lab(clients: usize, publish: fn(&Lab)) -> Option<(Lab, Netns)> {
    let mut lab = lab_with(clients, FAST, SIMPLE_PUBLISHED, ADVANCED_PUBLISHED)?;
    let container = lab
        .server
        .behind(&lab.clients, 0)
        .expect("container namespace");
    listen_in(&container, 22);
    lab.listen(80);
    publish(&lab);
    lab.start_daemon();
    Some((lab, container))
}

#[test]
fn a_port_published_as_docker_publishes_it_is_guarded_in_both_modes_over_ipv4_and_ipv6() {
    let Some((lab, _container)) = published_lab(2, publish_like_docker) else {
        return;
    };
    for server in [SERVER4, SERVER6] {
        for port in [8022, 8023] {
            assert!(
                !lab.can_connect(0, server, port),
                "{server} {port}: closed before a knock"
            );
        }
        // Simple mode: a connection right after the final knock is let in at once, through
        // the DNAT, and reaches the container.
        ok(&lab.client(0, &["knock", server, "7100", "7300", "7200"]));
        let mut stream = lab.connect(0, server, 8022);
        assert!(still_works(&mut stream), "{server}: the container answers");
        assert!(
            !lab.can_connect(1, server, 8022),
            "{server}: another source stays out"
        );
        // Advanced mode.
        ok(&lab.client(
            0,
            &["otp", server, "2001", "opensecret2", "--verify", "8023"],
        ));
        assert!(!lab.can_connect(1, server, 8023));
    }
    // Grants run out after FW_PORTKNOCK_SIMPLE_OPEN (FAST: 3 s), on the DNAT path too.
    wait_until(Duration::from_secs(10), || {
        !lab.can_connect(0, SERVER4, 8022) && !lab.can_connect(0, SERVER6, 8022)
    })
    .expect("closed again once the grants ran out");
}

/// The same container published with a plain nft `dnat` on 9022, and the host's own port 80
/// redirected from 8080, over IPv4 and IPv6.
fn publish_with_nft(lab: &Lab) {
    let ruleset = format!(
        "table inet hostnat {{\n\
           chain prerouting {{\n\
             type nat hook prerouting priority dstnat; policy accept;\n\
             ip daddr {SERVER4} tcp dport 9022 dnat ip to {}:22\n\
             ip6 daddr {SERVER6} tcp dport 9022 dnat ip6 to [{}]:22\n\
             tcp dport 8080 redirect to :80\n\
           }}\n\
         }}\n",
        behind4(0),
        behind6(0)
    );
    let path = lab.dir.path().join("hostnat.nft");
    std::fs::write(&path, ruleset).expect("write the host's nat rules");
    run_in(&lab.server, "nft", &["-f", &path_str(&path)]);
}

#[test]
fn a_plain_nft_dnat_and_a_local_redirect_are_guarded() {
    let Some((lab, _container)) = published_lab(2, publish_with_nft) else {
        return;
    };
    for server in [SERVER4, SERVER6] {
        for port in [9022, 8080] {
            assert!(
                !lab.can_connect(0, server, port),
                "{server} {port}: closed before a knock"
            );
        }
        ok(&lab.client(0, &["knock", server, "6100", "6300", "6200"]));
        assert!(still_works(&mut lab.connect(0, server, 9022)));
        ok(&lab.client(0, &["knock", server, "6400", "6600", "6500"]));
        assert!(still_works(&mut lab.connect(0, server, 8080)));
        assert!(!lab.can_connect(1, server, 9022));
        assert!(!lab.can_connect(1, server, 8080));
    }
    // The door is the port the client connects to: the host's own port 80 is no door, and
    // what the redirect sends to it is guarded only as 8080.
    assert!(lab.can_connect(1, SERVER4, 80));
}

#[test]
fn a_router_leaves_what_it_forwards_to_machines_behind_it_alone() {
    let Some(mut lab) = lab_with(1, FAST, SIMPLE, ADVANCED) else {
        return;
    };
    let behind = lab
        .server
        .behind(&lab.clients, 1)
        .expect("a machine behind");
    listen_in(&behind, 22);
    lab.start_daemon();
    assert!(
        !lab.can_connect(0, SERVER4, 22),
        "the host's own 22 is a door"
    );
    assert!(
        lab.can_connect(0, &behind4(1), 22),
        "port 22 of a machine behind the router is not the host's"
    );
    assert!(lab.can_connect(0, &behind6(1), 22));
    // Nor is a knock on its ports a knock on the host's doors.
    for port in ["7000", "9000", "8000"] {
        let mut cmd = lab.clients[0].command(BIN);
        cmd.args(["knock", &behind4(1), port]);
        output_within(cmd);
    }
    assert!(
        !lab.can_connect(0, SERVER4, 22),
        "knocks routed past the host"
    );
}

#[test]
fn the_host_itself_passes_over_loopback_and_its_own_addresses() {
    let Some(mut lab) = lab_with(1, FAST, SIMPLE, ADVANCED) else {
        return;
    };
    lab.start_daemon();
    assert!(
        !lab.can_connect(0, SERVER4, 22),
        "the door is shut to others"
    );
    for addr in ["127.0.0.1", "::1", SERVER4, SERVER6] {
        assert!(
            can_connect_from(&lab.server, addr, 22),
            "the host reaches its own {addr}:22 without knocking"
        );
    }
}

#[test]
fn trusted_sources_pass_without_knocking_until_apply_takes_them_away() {
    let trusted = "FW_PORTKNOCK_TRUSTED=\"198.18.0.4/30 fd00:5eed::4/126\"\n";
    let Some(mut lab) = lab_with(3, trusted, SIMPLE, ADVANCED) else {
        return;
    };
    lab.start_daemon();
    // Client 2 is 198.18.0.4 and fd00:5eed::4, inside; client 1 is .3 and ::3, just outside.
    let mut established = lab.connect(2, SERVER4, 22);
    for server in [SERVER4, SERVER6] {
        for port in [22, 2222] {
            assert!(lab.can_connect(2, server, port), "{server} {port}: trusted");
            assert!(
                !lab.can_connect(1, server, port),
                "{server} {port}: outside"
            );
        }
    }
    let status = lab.admin(&["status", "--json"]);
    ok(&status);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(
        status["trusted"],
        serde_json::json!(["198.18.0.4/30", "fd00:5eed::4/126"])
    );
    lab.write_config("", SIMPLE, ADVANCED);
    ok(&lab.admin(&["apply"]));
    for server in [SERVER4, SERVER6] {
        assert!(
            !lab.can_connect(2, server, 22),
            "{server}: no longer trusted"
        );
    }
    assert!(
        still_works(&mut established),
        "established connections stay"
    );
}
