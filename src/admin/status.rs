//! `portknock status`: the engine and modes, the doors, and the grants the kernel holds.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::AdminError;
use crate::config::{self, Config, ConfigError, Loaded};
use crate::firewall::{self, Grant, TABLE};
use crate::port::KnockPort;
use crate::report::{count, Report};
use crate::trial;

#[derive(Debug, Serialize)]
struct Status {
    /// False when the configuration cannot be read or has errors: the kernel state below is
    /// still the truth, but the switches, doors and modes of grants are not known, and left
    /// out.
    config_valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    engine: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    simple: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advanced: Option<bool>,
    table_installed: bool,
    /// What the doors guard, in words.
    guarded: &'static str,
    /// Sources that pass every door without knocking, as prefixes.
    trusted: Vec<String>,
    /// An `apply --confirm-within` the daemon waits to see confirmed.
    pending_confirmation: Option<PendingStatus>,
    doors: Vec<DoorStatus>,
    grants: Vec<GrantStatus>,
}

/// What a door guards and who passes it anyway (docs/behaviour.md §4).
const GUARDED: &str = "new TCP connections to the host's own addresses on a \
protected port, whether they go to a socket of the host or DNAT sends them on to a container, \
a VM or another machine; the host itself (loopback and its own addresses) and the trusted \
sources pass, and what the host routes to other machines is left alone";

#[derive(Debug, Serialize)]
struct PendingStatus {
    /// When the daemon rolls back unless confirmed, in seconds since the Unix epoch.
    deadline: u64,
    seconds_left: u64,
}

#[derive(Debug, Serialize)]
struct DoorStatus {
    port: u16,
    mode: &'static str,
    knock: String,
}

#[derive(Debug, Serialize)]
struct GrantStatus {
    #[serde(flatten)]
    grant: Grant,
    /// The mode of the door of the grant's port, or "manual" for a port no door protects;
    /// left out when the configuration is not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'static str>,
}

impl Status {
    fn new(
        config: Option<&Config>,
        grants: Option<Vec<Grant>>,
        pending: Option<trial::Pending>,
        now: u64,
    ) -> Status {
        let mut doors: Vec<DoorStatus> = Vec::new();
        if let Some(config) = config {
            doors.extend(config.simple.iter().map(|d| {
                DoorStatus {
                    port: d.protected,
                    mode: "simple",
                    knock: d
                        .sequence
                        .iter()
                        .map(|k| k.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                }
            }));
            doors.extend(config.advanced.iter().map(|d| DoorStatus {
                port: d.protected,
                mode: "advanced",
                knock: format!("{} (OTP)", KnockPort::udp(d.knock_port)),
            }));
        }
        // Up to a million grants against up to 65,535 doors: looked up, not searched.
        let modes: HashMap<u16, &'static str> = doors.iter().map(|d| (d.port, d.mode)).collect();
        let mode_of = |port: u16| config.map(|_| modes.get(&port).copied().unwrap_or("manual"));
        let grants = grants.as_ref().map(|g| {
            g.iter()
                .map(|&grant| GrantStatus {
                    grant,
                    mode: mode_of(grant.port),
                })
                .collect()
        });
        let settings = config.map(|c| &c.settings);
        Status {
            config_valid: config.is_some(),
            engine: settings.map(|s| s.enabled),
            simple: settings.map(|s| s.simple),
            advanced: settings.map(|s| s.advanced),
            table_installed: grants.is_some(),
            guarded: GUARDED,
            pending_confirmation: pending.map(|p| PendingStatus {
                deadline: p.deadline,
                seconds_left: p.deadline.saturating_sub(now),
            }),
            trusted: (settings.iter())
                .flat_map(|s| &s.trusted)
                .map(ToString::to_string)
                .collect(),
            grants: grants.unwrap_or_default(),
            doors,
        }
    }

    /// The text of `status`; `unusable` is what to say instead of the switches when the
    /// configuration cannot be used.
    fn text(&self, unusable: Option<&str>, report: &mut Report) {
        let on = |b: Option<bool>| if b == Some(true) { "on" } else { "off" };
        match unusable {
            None => report.line(format!(
                "engine {}  simple {}  advanced {}",
                on(self.engine),
                on(self.simple),
                on(self.advanced)
            )),
            Some(why) => report.line(why),
        }
        if self.table_installed {
            report.line(format!("table inet {TABLE}: installed"));
        } else {
            report.line(format!(
                "table inet {TABLE}: NOT installed — nothing is protected (run `portknock apply`)"
            ));
        }
        if let Some(p) = &self.pending_confirmation {
            report.line(format!(
                "PENDING: the configuration in force is on trial: `portknock confirm` within {} s keeps it, else the previous one comes back",
                p.seconds_left
            ));
        }
        report.line(format!("guarded: {}", self.guarded));
        if !self.trusted.is_empty() {
            report.line(format!("trusted: {}", self.trusted.join(" ")));
        }
        if self.config_valid {
            report.line(format!("doors: {}", self.doors.len()));
            for d in &self.doors {
                report.line(format!("  {:>5}  {:<8}  {}", d.port, d.mode, d.knock));
            }
        }
        report.line(format!("grants: {}", self.grants.len()));
        for g in &self.grants {
            let mode = g
                .mode
                .map(|mode| format!("{mode:<8}  "))
                .unwrap_or_default();
            report.line(format!(
                "  {:<39}  port {:>5}  {mode}{}s left",
                g.grant.source.to_string(),
                g.grant.port,
                g.grant.remaining.as_secs()
            ));
        }
    }
}

/// `portknock status [--json]` with the configuration of `dir`, as it loaded. A configuration
/// that cannot be used (a missing directory, say) does not hide the kernel's state: the grants
/// shown are read from the kernel either way, and one line says why the rest is missing.
pub fn status(
    dir: &Path,
    loaded: Result<Loaded, ConfigError>,
    json: bool,
) -> Result<Report, AdminError> {
    let mut report = Report::new();
    let state_dir = match &loaded {
        Ok(loaded) => loaded.config.settings.state_dir.clone(),
        Err(_) => config::state_dir(dir),
    };
    let (config, unusable) = match loaded {
        Ok(loaded) => {
            loaded.warnings.iter().for_each(|w| report.note(w));
            let config = match trial::in_force(loaded.config) {
                trial::InForce::Files(config) | trial::InForce::Unreadable(config, _) => config,
                trial::InForce::Confirmed(confirmed) => {
                    report.note("the configuration files hold the configuration that was rolled back for want of a confirmation: shown is the last confirmed one, which the daemon enforces");
                    confirmed
                }
            };
            (Some(config), None)
        }
        Err(e) => (
            None,
            Some(format!(
                "configuration in {} cannot be used ({}, listed by portknock check): showing \
                 only what the kernel holds",
                dir.display(),
                count(e.errors(), "error")
            )),
        ),
    };
    let grants = firewall::grants().map_err(AdminError::Netlink)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let pending = trial::pending(&state_dir);
    let status = Status::new(config.as_ref(), grants, pending, now);
    if json {
        let text = serde_json::to_string_pretty(&status).map_err(|error| AdminError::Json {
            what: "the status",
            error,
        })?;
        report.line(text);
    } else {
        status.text(unusable.as_deref(), &mut report);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::time::Duration;

    use crate::config::{Settings, SimpleDoor};

    fn grants() -> Option<Vec<Grant>> {
        let grant = |source: [u8; 4], port| Grant {
            source: IpAddr::from(source),
            port,
            remaining: Duration::from_secs(42),
        };
        Some(vec![grant([198, 18, 0, 2], 22), grant([198, 18, 0, 3], 80)])
    }

    fn text(status: &Status, unusable: Option<&str>) -> String {
        let mut report = Report::new();
        status.text(unusable, &mut report);
        String::from_utf8(report.out).expect("text")
    }

    #[test]
    fn grants_are_shown_with_the_mode_of_their_door() {
        let dir = Path::new("/etc/portknock");
        let config = Config {
            dir: dir.to_path_buf(),
            settings: Settings {
                enabled: true,
                simple: true,
                ..Settings::defaults(dir)
            },
            simple: vec![SimpleDoor {
                protected: 22,
                sequence: vec![KnockPort::tcp(7000), KnockPort::udp(8000)],
            }],
            advanced: vec![],
        };
        let status = Status::new(Some(&config), grants(), None, 0);
        assert_eq!(
            text(&status, None),
            format!(
                "engine on  simple on  advanced off\n\
             table inet portknock: installed\n\
             guarded: {GUARDED}\n\
             doors: 1\n\
             \x20    22  simple    7000/tcp,8000/udp\n\
             grants: 2\n\
             \x20 198.18.0.2                               port    22  simple    42s left\n\
             \x20 198.18.0.3                               port    80  manual    42s left\n"
            )
        );
    }

    #[test]
    fn without_a_configuration_only_the_kernel_is_shown() {
        let status = Status::new(None, grants(), None, 0);
        assert_eq!(
            text(&status, Some("configuration in d cannot be used")),
            format!(
                "configuration in d cannot be used\n\
             table inet portknock: installed\n\
             guarded: {GUARDED}\n\
             grants: 2\n\
             \x20 198.18.0.2                               port    22  42s left\n\
             \x20 198.18.0.3                               port    80  42s left\n"
            )
        );
        let json = serde_json::to_value(&status).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "config_valid": false,
                "table_installed": true,
                "guarded": GUARDED,
                "trusted": [],
                "pending_confirmation": null,
                "doors": [],
                "grants": [
                    {"source": "198.18.0.2", "port": 22, "remaining": 42},
                    {"source": "198.18.0.3", "port": 80, "remaining": 42},
                ],
            })
        );
        let gone = Status::new(None, None, None, 0);
        assert!(text(&gone, Some("c")).contains("NOT installed"));
    }
}
