//! The administrator's commands: `check` (the configuration alone), and those that act on the
//! kernel directly: `apply`, `status`, `open`, `close`, `remove`. These read the truth from the
//! kernel rather than from the daemon, so they work the same whether or not the daemon runs.

mod check;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::cli::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::config::{self, Config, KnockPort};
use crate::daemon::signal_reload;
use crate::firewall::{self, Grant, Policy};

pub use check::check_command;

/// How long `open` grants when `--for` is not given.
pub const DEFAULT_MANUAL_OPEN: Duration = Duration::from_secs(3600);
/// The longest manual grant: a week. Longer belongs in the host's own firewall rules.
pub const MAX_MANUAL_OPEN: Duration = Duration::from_secs(7 * 24 * 3600);

/// Loads and validates the configuration, printing every problem; `None` when it has errors.
pub fn load_reporting(dir: &Path) -> Option<Config> {
    match config::load(dir) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{warning}");
            }
            Some(loaded.config)
        }
        Err(err) => {
            eprintln!("{err}");
            None
        }
    }
}

/// Why the policy could not be installed; nothing was changed either way.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot read the grants to keep: {0}")]
    Grants(#[from] firewall::NetlinkError),
    #[error(transparent)]
    Nft(#[from] firewall::NftError),
}

/// Installs the policy of `config` atomically, keeping the grants of doors that still exist.
/// With the engine off, removes the table instead.
pub fn install(config: &Config) -> Result<(), InstallError> {
    let keep = if config.settings.enabled {
        firewall::grants()?.unwrap_or_default()
    } else {
        Vec::new()
    };
    let (batch, what) = batch_for(config, &keep);
    firewall::apply(&batch, what)?;
    Ok(())
}

/// The batch that puts `config` in force, carrying over the grants in `keep`, and what it does:
/// the policy, or with the engine off the removal of the table.
fn batch_for(config: &Config, keep: &[Grant]) -> (firewall::Batch, &'static str) {
    if config.settings.enabled {
        let batch = Policy::from_config(config).install_batch(keep);
        (batch, "installing the portknock ruleset")
    } else {
        (firewall::remove_batch(), REMOVING)
    }
}

/// What the removal of the table is, for nft's error message.
const REMOVING: &str = "removing the portknock table";

/// `portknock apply [--dry-run]`.
pub fn apply(dir: &Path, dry_run: bool) -> u8 {
    let Some(config) = load_reporting(dir) else {
        eprintln!("apply: the configuration has errors; nothing was changed");
        return EXIT_USAGE;
    };
    if dry_run {
        let (batch, _) = batch_for(&config, &[]);
        return match serde_json::to_string_pretty(&batch) {
            Ok(text) => {
                println!("{text}");
                EXIT_OK
            }
            Err(e) => {
                eprintln!("apply: cannot render the ruleset: {e}");
                EXIT_FAILURE
            }
        };
    }
    if let Err(e) = install(&config) {
        eprintln!("apply: {e}");
        return EXIT_FAILURE;
    }
    if config.settings.enabled {
        println!(
            "applied: {} simple and {} advanced doors in table inet {}",
            config.simple.len(),
            config.advanced.len(),
            firewall::TABLE
        );
    } else {
        println!(
            "FW_PORTKNOCK is off: table inet {} removed, no port is protected",
            firewall::TABLE
        );
    }
    match signal_reload(&config.settings.state_dir) {
        Ok(Some(pid)) => println!("asked the running daemon (pid {pid}) to reload"),
        Ok(None) => println!(
            "no daemon is running: start it with `portknock serve` (or systemctl start portknock)"
        ),
        Err(e) => {
            eprintln!(
                "apply: the rules are in force, but the daemon could not be told to reload: {e}"
            );
            return EXIT_FAILURE;
        }
    }
    EXIT_OK
}

#[derive(Debug, Serialize)]
struct Status {
    /// False when the configuration has errors: the kernel state below is still the truth,
    /// but the switches and doors cannot be shown.
    config_valid: bool,
    engine: bool,
    simple: bool,
    advanced: bool,
    table_installed: bool,
    doors: Vec<DoorStatus>,
    grants: Vec<GrantStatus>,
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
    fn new(config: Option<&Config>, grants: Option<Vec<Grant>>) -> Status {
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
            grants: grants.unwrap_or_default(),
            doors,
        }
    }

    fn print(&self) {
        let on = |b: bool| if b { "on" } else { "off" };
        if self.config_valid {
            println!(
                "engine {}  simple {}  advanced {}",
                on(self.engine),
                on(self.simple),
                on(self.advanced)
            );
        } else {
            println!("configuration has errors (listed above): showing the kernel's state only");
        }
        if self.table_installed {
            println!("table inet {}: installed", firewall::TABLE);
        } else {
            println!(
                "table inet {}: NOT installed — nothing is protected (run `portknock apply`)",
                firewall::TABLE
            );
        }
        println!("doors: {}", self.doors.len());
        for d in &self.doors {
            println!("  {:>5}  {:<8}  {}", d.port, d.mode, d.knock);
        }
        println!("grants: {}", self.grants.len());
        for g in &self.grants {
            println!(
                "  {:<39}  port {:>5}  {:<8}  {}s left",
                g.grant.source.to_string(),
                g.grant.port,
                g.mode,
                g.grant.remaining.as_secs()
            );
        }
    }
}

/// `portknock status [--json]`. A broken configuration is reported but does not hide the
/// kernel's state: the grants shown are read from the kernel either way.
pub fn status(dir: &Path, json: bool) -> u8 {
    let config = load_reporting(dir);
    let grants = match firewall::grants() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("status: {e}");
            return EXIT_FAILURE;
        }
    };
    let status = Status::new(config.as_ref(), grants);
    if !json {
        status.print();
        return EXIT_OK;
    }
    match serde_json::to_string_pretty(&status) {
        Ok(text) => {
            println!("{text}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("status: cannot render JSON: {e}");
            EXIT_FAILURE
        }
    }
}

/// `portknock open SOURCE PORT [--for SECONDS]` and `portknock close SOURCE PORT`.
pub fn manual(source: std::net::IpAddr, port: u16, open_for: Option<Duration>) -> u8 {
    let result = firewall::SetUpdater::open().and_then(|mut nl| {
        match open_for {
            Some(d) => nl.grant(source, port, d),
            None => nl.revoke(source, port),
        }
        nl.commit()
    });
    match (result, open_for) {
        (Ok(()), Some(d)) => {
            println!("opened port {port} to {source} for {}s", d.as_secs());
            EXIT_OK
        }
        (Ok(()), None) => {
            println!("closed port {port} to {source} (established connections stay up)");
            EXIT_OK
        }
        (Err(e), _) => {
            eprintln!("{e}");
            EXIT_FAILURE
        }
    }
}

/// `portknock remove`.
pub fn remove() -> u8 {
    match firewall::apply(&firewall::remove_batch(), REMOVING) {
        Ok(()) => {
            println!(
                "table inet {} removed: no port is protected any more",
                firewall::TABLE
            );
            EXIT_OK
        }
        Err(e) => {
            eprintln!("remove: {e}");
            EXIT_FAILURE
        }
    }
}
