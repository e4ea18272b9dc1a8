//! `portknock status`: the engine and modes, the doors, and the grants the kernel holds.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::AdminError;
use crate::config::{self, Config, ConfigError, Loaded};
use crate::firewall::{self, Grant, TABLE};
use crate::port::KnockPort;
use crate::report::Report;
use crate::trial;

#[derive(Debug, Serialize)]
struct Status {
    /// False when the configuration has errors: the kernel state below is still the truth,
    /// but the switches and doors cannot be shown.
    config_valid: bool,
    engine: bool,
    simple: bool,
    advanced: bool,
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
    mode: &'static str,
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
        let unlisted = if config.is_some() {
            "manual"
        } else {
            "unknown"
        };
        let mode_of = |port: u16| modes.get(&port).copied().unwrap_or(unlisted);
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
            engine: settings.is_some_and(|s| s.enabled),
            simple: settings.is_some_and(|s| s.simple),
            advanced: settings.is_some_and(|s| s.advanced),
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

    fn text(&self, report: &mut Report) {
        let on = |b: bool| if b { "on" } else { "off" };
        if self.config_valid {
            report.line(format!(
                "engine {}  simple {}  advanced {}",
                on(self.engine),
                on(self.simple),
                on(self.advanced)
            ));
        } else {
            report.line("configuration has errors (listed above): showing the kernel's state only");
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
        report.line(format!("doors: {}", self.doors.len()));
        for d in &self.doors {
            report.line(format!("  {:>5}  {:<8}  {}", d.port, d.mode, d.knock));
        }
        report.line(format!("grants: {}", self.grants.len()));
        for g in &self.grants {
            report.line(format!(
                "  {:<39}  port {:>5}  {:<8}  {}s left",
                g.grant.source.to_string(),
                g.grant.port,
                g.mode,
                g.grant.remaining.as_secs()
            ));
        }
    }
}

/// `portknock status [--json]`. A broken configuration is reported but does not hide the
/// kernel's state: the grants shown are read from the kernel either way.
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
    let config = match loaded {
        Ok(loaded) => {
            loaded.warnings.iter().for_each(|w| report.note(w));
            Some(match trial::in_force(loaded.config) {
                trial::InForce::Files(config) | trial::InForce::Unreadable(config, _) => config,
                trial::InForce::Confirmed(confirmed) => {
                    report.note("the configuration files hold the configuration that was rolled back for want of a confirmation: shown is the last confirmed one, which the daemon enforces");
                    confirmed
                }
            })
        }
        Err(e) => {
            e.diagnostics.iter().for_each(|d| report.note(d));
            None
        }
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
        status.text(&mut report);
    }
    Ok(report)
}
