//! The metrics file (`FW_PORTKNOCK_METRICS_FILE`, docs/behaviour.md §4): the daemon rewrites it
//! every few seconds and when it stops, for the node exporter's textfile collector to serve to
//! Prometheus. A file, not a listener: a firewall host opens no port for its monitoring.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use tracing::{info, warn};

use super::core::Core;
use crate::config::Config;
use crate::firewall::{self, Grant};
use crate::metrics::{self, DoorGrants, Gauges, Table, EVERY};

/// When the file is written next, and what went wrong last.
pub struct Export {
    start_time: u64,
    next: Instant,
    /// The last write's problem, logged once until it changes or goes away.
    problem: Option<String>,
}

impl Export {
    /// The metrics of a daemon that starts now; the first write is due at once.
    pub fn new(now: Instant) -> Export {
        let start_time = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Export {
            start_time,
            next: now,
            problem: None,
        }
    }

    /// When the next write is due; `None` when the configuration in force asks for no file.
    pub fn due(&self, core: &Core) -> Option<Instant> {
        core.config()
            .settings
            .metrics_file
            .as_ref()
            .map(|_| self.next)
    }

    /// Writes the file if its time has come.
    pub fn write_if_due(&mut self, core: &Core, now: Instant) {
        if self.due(core).is_some_and(|due| due <= now) {
            self.write(core, now);
        }
    }

    /// Writes the file now, if the configuration asks for one. A failure is logged, once.
    pub fn write(&mut self, core: &Core, now: Instant) {
        let Some(path) = &core.config().settings.metrics_file else {
            return;
        };
        self.next = now + EVERY;
        let mut problem = None;
        let table = match firewall::grants() {
            Ok(Some(grants)) => Table::Installed(doors(core.config(), &grants)),
            Ok(None) => Table::Missing,
            Err(e) => {
                problem = Some(format!("the metrics file goes without the grants: {e}"));
                Table::Unknown
            }
        };
        let gauges = Gauges {
            version: env!("CARGO_PKG_VERSION"),
            start_time: self.start_time,
            tracked_sources: core.tracked_sources(),
            table: &table,
        };
        let text = metrics::render(core.counters(), &gauges);
        if let Err(e) = write_atomically(path, &text) {
            problem = Some(format!(
                "cannot write the metrics file {}: {e}; trying again every {} s (under systemd, the unit needs ReadWritePaths= for its directory)",
                path.display(),
                EVERY.as_secs()
            ));
        }
        if problem != self.problem {
            match &problem {
                Some(problem) => warn!("{problem}"),
                None => info!("metrics file {} written again", path.display()),
            }
        }
        self.problem = problem;
    }
}

/// The live grants of each door of `config`, with the ports of no door (granted by hand), by
/// port. Every door is there, at 0 too, so that its series exists before its first grant.
fn doors(config: &Config, grants: &[Grant]) -> Vec<DoorGrants> {
    let simple = config.simple.iter().map(|d| (d.protected, "simple"));
    let advanced = config.advanced.iter().map(|d| (d.protected, "advanced"));
    let mut by_port: BTreeMap<u16, DoorGrants> = simple
        .chain(advanced)
        .map(|(port, mode)| {
            let door = DoorGrants {
                port,
                mode,
                grants: 0,
            };
            (port, door)
        })
        .collect();
    for grant in grants {
        let door = by_port.entry(grant.port).or_insert(DoorGrants {
            port: grant.port,
            mode: "manual",
            grants: 0,
        });
        door.grants += 1;
    }
    by_port.into_values().collect()
}

/// Replaces `path` with `text` at once: a reader sees the old file or the new, never half of
/// one. The temporary file sits beside it (a rename does not cross file systems), and is not
/// followed if something put a link there.
fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temporary)?;
    // Readable by the node exporter, which runs as a user of its own, whatever the daemon's
    // umask (the unit's is 0077); a mode set on an open file is not masked.
    file.set_permissions(Permissions::from_mode(0o644))?;
    file.write_all(text.as_bytes())?;
    drop(file);
    fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdvancedDoor, Secret, Settings, SimpleDoor};
    use crate::port::KnockPort;
    use std::time::Duration;

    #[test]
    fn every_door_has_its_grants_and_ports_of_no_door_are_manual() {
        let dir = Path::new("/etc/portknock");
        let config = Config {
            dir: dir.to_path_buf(),
            settings: Settings::defaults(dir),
            simple: vec![SimpleDoor {
                protected: 22,
                sequence: vec![KnockPort::tcp(7000)],
            }],
            advanced: vec![AdvancedDoor {
                protected: 2222,
                knock_port: 2000,
                open_secret: Secret::new("a"),
                close_secret: Secret::new("b"),
            }],
        };
        let grant = |source: &str, port| Grant {
            source: source.parse().unwrap(),
            port,
            remaining: Duration::from_secs(5),
        };
        let grants = [
            grant("198.18.0.2", 2222),
            grant("198.18.0.2", 80),
            grant("fd00:5eed::2", 2222),
        ];
        let door = |port, mode, grants| DoorGrants { port, mode, grants };
        assert_eq!(
            doors(&config, &grants),
            [
                door(22, "simple", 0),
                door(80, "manual", 1),
                door(2222, "advanced", 2)
            ]
        );
    }

    #[test]
    fn the_file_is_replaced_whole_readable_by_others_and_no_link_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portknock.prom");
        write_atomically(&path, "a 1\n").unwrap();
        write_atomically(&path, "a 2\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a 2\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no leftover");
        let victim = dir.path().join("victim");
        fs::write(&victim, "kept").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("portknock.prom.tmp")).unwrap();
        assert!(write_atomically(&path, "a 3\n").is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "kept");
    }
}
