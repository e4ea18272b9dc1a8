//! `portknock open` and `portknock close`: grants made and taken back by hand, as set changes
//! like a knock's, so they expire in the kernel like any grant.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::AdminError;
use crate::config::{self, Config};
use crate::control::Request;
use crate::firewall::{self, Changes, Kernel, TABLE};
use crate::report::Report;

/// How long `open` grants when `--for` is not given, as `--for` is written.
pub const DEFAULT_MANUAL_OPEN: &str = "1h";
/// The longest manual grant: a week. Longer belongs in the host's own firewall rules.
const MAX_MANUAL_OPEN: Duration = Duration::from_secs(7 * 24 * 3600);

/// `open --for` as written: whole seconds, bare or with `s`, or whole minutes (`m`), hours
/// (`h`) or days (`d`), from one second to [`MAX_MANUAL_OPEN`].
pub fn parse_open_for(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.char_indices().last() {
        Some((at, unit @ ('s' | 'm' | 'h' | 'd'))) => (&text[..at], unit),
        _ => (text, 's'),
    };
    let seconds_per = match unit {
        'm' => 60,
        'h' => 3600,
        'd' => 24 * 3600,
        _ => 1,
    };
    let seconds = Some(number)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
        .and_then(|n| n.checked_mul(seconds_per))
        .ok_or("expected a duration such as 600, 30s, 10m, 2h or 7d")?;
    match Duration::from_secs(seconds) {
        Duration::ZERO => Err("a grant lasts at least 1s".to_string()),
        open_for if open_for > MAX_MANUAL_OPEN => Err(
            "a manual grant lasts at most 7d; longer belongs in the host's own firewall rules"
                .to_string(),
        ),
        open_for => Ok(open_for),
    }
}

/// Why `open` refuses a port: none of the configuration's doors protects it.
#[derive(Debug, thiserror::Error)]
#[error("port {port} is protected by no door, so a grant of it changes nothing; {}; add --force to grant it anyway", doors_protect(.protected))]
pub struct NotProtected {
    port: u16,
    /// The protected ports of the configuration, in ascending order.
    protected: Vec<u16>,
}

fn doors_protect(protected: &[u16]) -> String {
    if protected.is_empty() {
        return "no door protects any port (the engine is off, or the lists hold no door)"
            .to_string();
    }
    let ports: Vec<String> = protected.iter().map(u16::to_string).collect();
    format!("the doors protect {}", ports.join(", "))
}

/// `portknock open SOURCE PORT --for DURATION`, with the daemon of the configuration in `dir`:
/// the running daemon makes the grant, logs who asked, and keeps it should the table have to
/// be restored; with no daemon running, the grant is made here. With `doors`, the
/// configuration, a port none of its doors protects is refused; without (`--force`), any port
/// is granted.
pub fn open(
    dir: &Path,
    source: IpAddr,
    port: u16,
    open_for: Duration,
    doors: Option<&Config>,
) -> Result<Report, AdminError> {
    if let Some(config) = doors {
        let mut protected: Vec<u16> = (config.simple.iter().map(|d| d.protected))
            .chain(config.advanced.iter().map(|d| d.protected))
            .collect();
        protected.sort_unstable();
        if protected.binary_search(&port).is_err() {
            return Err(AdminError::NotProtected(NotProtected { port, protected }));
        }
    }
    // The kernel sees an IPv4-mapped address as IPv4.
    let source = source.to_canonical();
    let request = Request::Open {
        source,
        port,
        open_for,
    };
    let line = format!("opened port {port} to {source} for {}s", open_for.as_secs());
    by_daemon_or_here(
        dir,
        &request,
        |changes| changes.grant(source, port, open_for),
        line,
    )
}

/// `portknock close SOURCE PORT`, as [`open`] does it. Says how long the grant had left, or
/// that there was none; the revoke is sent either way, so that a grant made since the grants
/// were read is taken back too, and the daemon logs who asked.
pub fn close(dir: &Path, source: IpAddr, port: u16) -> Result<Report, AdminError> {
    let source = source.to_canonical();
    let Some(grants) = firewall::grants().map_err(AdminError::Netlink)? else {
        let mut report = Report::new();
        report.line(format!(
            "nothing to close: table inet {TABLE} is not installed, so no port is protected"
        ));
        return Ok(report);
    };
    let line = match grants.iter().find(|g| g.source == source && g.port == port) {
        Some(grant) => format!(
            "closed port {port} to {source}: its grant had {}s left (established connections \
             stay up)",
            grant.remaining.as_secs()
        ),
        None => format!("nothing to close: {source} had no grant of port {port}"),
    };
    let request = Request::Close { source, port };
    by_daemon_or_here(dir, &request, |changes| changes.revoke(source, port), line)
}

/// Asks the running daemon; with none, queues `change` and commits it. Either way, says
/// `line`.
fn by_daemon_or_here(
    dir: &Path,
    request: &Request,
    change: impl FnOnce(&mut Changes),
    line: String,
) -> Result<Report, AdminError> {
    let mut report = Report::new();
    report.line(line);
    if super::ask_daemon(&config::state_dir(dir), request)?.is_some() {
        return Ok(report);
    }
    let mut changes = Changes::new();
    change(&mut changes);
    commit(&mut changes)?;
    report.note("portknock: no daemon is running, so this is in the kernel but in no log");
    Ok(report)
}

fn commit(changes: &mut Changes) -> Result<(), AdminError> {
    Kernel::open()
        .and_then(|mut kernel| kernel.commit(changes))
        .map_err(AdminError::Netlink)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_for_takes_seconds_minutes_hours_and_days() {
        for (text, secs) in [
            ("600", 600),
            ("1", 1),
            ("30s", 30),
            ("10m", 600),
            ("2h", 7200),
            ("7d", 604_800),
            ("604800", 604_800),
            ("007m", 420),
            (DEFAULT_MANUAL_OPEN, 3600),
        ] {
            assert_eq!(
                parse_open_for(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
    }

    #[test]
    fn open_for_refuses_what_is_no_duration_or_out_of_bounds() {
        let form = "expected a duration such as 600, 30s, 10m, 2h or 7d";
        for text in [
            "",
            "m",
            "10x",
            "10 m",
            "1.5h",
            "-5",
            "+5",
            "10mm",
            "h10",
            "99999999999999999999",
            "99999999999999999d",
        ] {
            assert_eq!(parse_open_for(text), Err(form.to_string()), "{text:?}");
        }
        let most =
            "a manual grant lasts at most 7d; longer belongs in the host's own firewall rules";
        for text in ["8d", "169h", "604801"] {
            assert_eq!(parse_open_for(text), Err(most.to_string()), "{text}");
        }
        for text in ["0", "0s", "0d"] {
            assert_eq!(
                parse_open_for(text),
                Err("a grant lasts at least 1s".to_string()),
                "{text}"
            );
        }
    }

    #[test]
    fn a_port_no_door_protects_is_named_with_the_doors() {
        let error = |protected: Vec<u16>| {
            NotProtected {
                port: 80,
                protected,
            }
            .to_string()
        };
        assert_eq!(
            error(vec![22, 2222]),
            "port 80 is protected by no door, so a grant of it changes nothing; the doors protect \
             22, 2222; add --force to grant it anyway"
        );
        assert_eq!(
            error(vec![]),
            "port 80 is protected by no door, so a grant of it changes nothing; no door protects \
             any port (the engine is off, or the lists hold no door); add --force to grant it \
             anyway"
        );
    }

    #[test]
    fn open_refuses_a_port_no_door_protects_before_touching_the_kernel() {
        let dir = std::path::Path::new("/etc/portknock");
        let config = Config {
            dir: dir.to_path_buf(),
            settings: crate::config::Settings::defaults(dir),
            simple: vec![crate::config::SimpleDoor {
                protected: 2222,
                sequence: vec![crate::port::KnockPort::tcp(7000)],
            }],
            advanced: vec![crate::config::AdvancedDoor {
                protected: 22,
                knock_port: 2000,
                open_secret: crate::config::Secret::new("open"),
                close_secret: crate::config::Secret::new("close"),
            }],
        };
        let source = IpAddr::from([198, 18, 0, 2]);
        let refused = open(dir, source, 80, Duration::from_secs(600), Some(&config));
        assert!(
            matches!(&refused, Err(AdminError::NotProtected(e)) if e.protected == [22, 2222]),
            "{refused:?}"
        );
    }
}
