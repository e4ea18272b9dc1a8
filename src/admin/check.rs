//! `portknock check`: every warning, and a summary of what would be enforced. A configuration
//! with errors never gets here: `cli` reports it, as it does for every command.

use std::path::Path;

use crate::config::{random_orders, Loaded};
use crate::metrics;
use crate::port::KnockPort;
use crate::report::{count, Report};

/// The warnings of a valid configuration, and the summary of its doors.
pub fn check(loaded: &Loaded) -> Report {
    let mut report = Report::new();
    loaded.warnings.iter().for_each(|w| report.note(w));
    report.out = summary(loaded).into_bytes();
    report
}

/// What the configuration enforces, one screen, ending with the `OK: ...` line.
fn summary(loaded: &Loaded) -> String {
    let config = &loaded.config;
    let s = &config.settings;
    let on = |b: bool| if b { "on" } else { "off" };
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("configuration: {}", config.dir.display()));
    if s.enabled {
        line("engine:        on".to_string());
    } else {
        line(
            "engine:        off (FW_PORTKNOCK=no): no port is protected, no door is checked"
                .to_string(),
        );
    }
    let door_line = |protected: u16, knocks: &[KnockPort], note: &str| {
        let knocks: String = knocks.iter().map(|k| format!(" {k}")).collect();
        format!("  {protected:>5}  <-{knocks}{note}")
    };
    let simple_doors = config
        .simple
        .iter()
        .map(|door| {
            let odds = format!(" (random order: 1 in {})", random_orders(&door.sequence));
            door_line(door.protected, &door.sequence, &odds)
        })
        .collect();
    let advanced_doors = config
        .advanced
        .iter()
        .map(|door| {
            let knock = KnockPort::udp(door.knock_port);
            door_line(door.protected, &[knock], " (open/close secrets set)")
        })
        .collect();
    let modes: [(&str, bool, &Path, Vec<String>); 2] = [
        ("simple mode:  ", s.simple, &s.simple_list, simple_doors),
        (
            "advanced mode:",
            s.advanced,
            &s.advanced_list,
            advanced_doors,
        ),
    ];
    for (label, mode_on, list, doors) in modes {
        if s.enabled && mode_on {
            let n = count(doors.len(), "door");
            line(format!("{label} on, {n} in {}", list.display()));
            doors.into_iter().for_each(&mut line);
        } else {
            line(format!("{label} {}", on(mode_on)));
        }
    }
    line(format!(
        "timeouts:      knock {} s, simple open {} s, advanced open {} s, OTP skew {} min \
         either side",
        s.knock_timeout.as_secs(),
        s.simple_open.as_secs(),
        s.advanced_open.as_secs(),
        s.otp_skew,
    ));
    if !s.trusted.is_empty() {
        let trusted: Vec<String> = s.trusted.iter().map(ToString::to_string).collect();
        line(format!(
            "trusted:       {} (pass every door without knocking)",
            trusted.join(" ")
        ));
    }
    line(format!(
        "IPv6 knocks:   {}; at most {} sources tracked; state in {}",
        on(s.ipv6),
        s.max_sources,
        s.state_dir.display(),
    ));
    if let Some(file) = &s.metrics_file {
        line(format!(
            "metrics:       {} (rewritten every {} s by the daemon)",
            file.display(),
            metrics::EVERY.as_secs()
        ));
    }
    line(format!(
        "OK: {}, {}, {}",
        count(config.simple.len(), "simple door"),
        count(config.advanced.len(), "advanced door"),
        count(loaded.warnings.len(), "warning"),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdvancedDoor, Config, Diagnostic, Secret, Settings, SimpleDoor};

    #[test]
    fn summary_of_a_configuration() {
        let dir = Path::new("/etc/portknock");
        let settings = Settings {
            enabled: true,
            simple: true,
            advanced: true,
            trusted: vec![
                "198.51.100.0/24".parse().unwrap(),
                "2001:db8::/48".parse().unwrap(),
            ],
            metrics_file: Some("/var/lib/prometheus/node-exporter/portknock.prom".into()),
            ..Settings::defaults(dir)
        };
        let loaded = Loaded {
            config: Config {
                dir: dir.to_path_buf(),
                settings,
                simple: vec![SimpleDoor {
                    protected: 22,
                    sequence: vec![
                        KnockPort::tcp(7000),
                        KnockPort::udp(8000),
                        KnockPort::tcp(6000),
                    ],
                }],
                advanced: vec![AdvancedDoor {
                    protected: 2222,
                    knock_port: 2000,
                    open_secret: Secret::new("hipjazzhipjazz"),
                    close_secret: Secret::new("superawesome"),
                }],
            },
            warnings: vec![Diagnostic::warning(dir, None, "w")],
        };
        assert_eq!(
            summary(&loaded),
            "configuration: /etc/portknock\n\
             engine:        on\n\
             simple mode:   on, 1 door in /etc/portknock/simple-portknock-list\n\
             \x20    22  <- 7000/tcp 8000/udp 6000/tcp (random order: 1 in 6)\n\
             advanced mode: on, 1 door in /etc/portknock/advanced-portknock-list\n\
             \x20  2222  <- 2000/udp (open/close secrets set)\n\
             timeouts:      knock 10 s, simple open 30 s, advanced open 3600 s, OTP skew 1 min either side\n\
             trusted:       198.51.100.0/24 2001:db8::/48 (pass every door without knocking)\n\
             IPv6 knocks:   on; at most 262144 sources tracked; state in /var/lib/portknock\n\
             metrics:       /var/lib/prometheus/node-exporter/portknock.prom (rewritten every 5 s by the daemon)\n\
             OK: 1 simple door, 1 advanced door, 1 warning\n"
        );
    }

    #[test]
    fn engine_off_says_nothing_is_protected() {
        let dir = Path::new("d");
        let loaded = Loaded {
            config: Config {
                dir: dir.to_path_buf(),
                settings: Settings::defaults(dir),
                simple: vec![],
                advanced: vec![],
            },
            warnings: vec![],
        };
        let text = summary(&loaded);
        assert!(
            text.contains(
                "engine:        off (FW_PORTKNOCK=no): no port is protected, no door is checked\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("OK: 0 simple doors, 0 advanced doors, 0 warnings\n"),
            "{text}"
        );
    }
}
