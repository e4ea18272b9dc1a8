//! The metrics file (`FW_PORTKNOCK_METRICS_FILE`, docs/behaviour.md §4): the daemon rewrites it
//! every few seconds and when it stops, for the node exporter's textfile collector to serve to
//! Prometheus. A file, not a listener: a firewall host opens no port for its monitoring.
//!
//! The daemon's loop only copies its counters; a thread of its own reads the grants from the
//! kernel, up to a million of them, and writes the file, which may wait on the disk: neither
//! holds up knocks.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::{Instant, SystemTime};

use tracing::{info, warn};

use super::core::Core;
use crate::firewall::{self, Grant};
use crate::metrics::{self, Counters, DoorGrants, Gauges, Table, EVERY};

/// What the loop hands the writer: its counters and what the file's gauges need of the
/// configuration in force, as of one moment.
struct Snapshot {
    file: PathBuf,
    counters: Counters,
    tracked_sources: usize,
    /// The protected port and the mode of each door.
    doors: Vec<(u16, &'static str)>,
}

/// When the file is written next, and the thread that writes it.
pub struct Export {
    start_time: u64,
    next: Instant,
    writer: Option<(SyncSender<Snapshot>, JoinHandle<()>)>,
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
            writer: None,
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

    /// Hands the writer the counters if the file's time has come. A writer still busy with the
    /// last ones (a slow kernel or disk) misses these: the next carry the counters on.
    pub fn write_if_due(&mut self, core: &Core, now: Instant) {
        if self.due(core).is_none_or(|due| due > now) {
            return;
        }
        self.next = now + EVERY;
        let Some(snapshot) = snapshot(core) else {
            return;
        };
        let start_time = self.start_time;
        let (sender, _) = self.writer.get_or_insert_with(|| {
            let (sender, receiver) = mpsc::sync_channel(1);
            let thread = thread::spawn(move || write_each(&receiver, start_time));
            (sender, thread)
        });
        match sender.try_send(snapshot) {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => self.writer = None,
        }
    }

    /// Writes the file a last time, with what was counted last, as the daemon stops.
    pub fn finish(self, core: &Core) {
        let Some((sender, thread)) = self.writer else {
            return;
        };
        if let Some(snapshot) = snapshot(core) {
            let _ = sender.send(snapshot);
        }
        drop(sender);
        let _ = thread.join();
    }
}

fn snapshot(core: &Core) -> Option<Snapshot> {
    let config = core.config();
    let file = config.settings.metrics_file.clone()?;
    let simple = config.simple.iter().map(|d| (d.protected, "simple"));
    let advanced = config.advanced.iter().map(|d| (d.protected, "advanced"));
    Some(Snapshot {
        file,
        counters: core.counters().clone(),
        tracked_sources: core.tracked_sources(),
        doors: simple.chain(advanced).collect(),
    })
}

/// The writer thread: each snapshot received, with the grants the kernel holds then, into its
/// file. A problem is logged once, until it changes or goes away.
fn write_each(snapshots: &Receiver<Snapshot>, start_time: u64) {
    let mut last_problem = None;
    for snapshot in snapshots {
        let mut problem = None;
        let table = match firewall::grants() {
            Ok(Some(grants)) => Table::Installed(doors(&snapshot.doors, &grants)),
            Ok(None) => Table::Missing,
            Err(e) => {
                problem = Some(format!("the metrics file goes without the grants: {e}"));
                Table::Unknown
            }
        };
        let gauges = Gauges {
            version: env!("CARGO_PKG_VERSION"),
            start_time,
            tracked_sources: snapshot.tracked_sources,
            table: &table,
        };
        let text = metrics::render(&snapshot.counters, &gauges);
        let file = &snapshot.file;
        if let Err(e) = write_atomically(file, &text) {
            problem = Some(format!(
                "cannot write the metrics file {}: {e}; trying again every {} s (under systemd, the unit needs ReadWritePaths= for its directory)",
                file.display(),
                EVERY.as_secs()
            ));
        }
        if problem != last_problem {
            match &problem {
                Some(problem) => warn!("{problem}"),
                None => info!("metrics file {} written again", file.display()),
            }
        }
        last_problem = problem;
    }
}

/// The live grants of each door, given as (protected port, mode), with the ports of no door
/// (granted by hand), by port. Every door is there, at 0 too, so that its series exists
/// before its first grant.
fn doors(doors: &[(u16, &'static str)], grants: &[Grant]) -> Vec<DoorGrants> {
    let mut by_port: BTreeMap<u16, DoorGrants> = (doors.iter())
        .map(|&(port, mode)| {
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
    use std::time::Duration;

    #[test]
    fn every_door_has_its_grants_and_ports_of_no_door_are_manual() {
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
            doors(&[(22, "simple"), (2222, "advanced")], &grants),
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
