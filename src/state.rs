//! State that must survive a restart: the record of used one-time passwords.
//!
//! Two files in the state directory:
//! - `used-otps`, a snapshot of the whole record ([`UsedOtps::to_bytes`]), replaced atomically
//!   (temporary file, fsync, rename, directory fsync);
//! - `used-otps.log`, the OTPs accepted since that snapshot, one fixed-size entry each.
//!
//! The directory is refused unless it is the daemon user's own and closed to group and others,
//! and its files are never opened through a symbolic link ([`crate::statedir`]).
//!
//! An entry is written to the log (a `write` into the kernel's page cache) before the grant the
//! OTP earns is made, and `fdatasync`ed right after it by a thread of its own
//! ([`OtpStore::record`], then [`OtpStore::flush`]), so no grant waits for the disk. The write
//! is what makes a replay fail after the daemon restarts or is killed: the kernel keeps the
//! page whatever happens to the process, and a full or read-only disk refuses the write, so
//! the OTP is refused too. Waiting for the sync before the grant would add a disk flush to
//! every OTP's knock-to-open time (BENCHMARKS.md, latency: it once doubled it; on a busy cloud
//! disk it takes long enough for the client's first SYN to be dropped); what it would buy is
//! only a power cut within that flush. The log is folded into a
//! new snapshot at start-up and, after a grant, every 1,024 entries: that one
//! snapshot (three syncs) is written on the daemon's own thread, once per thousand OTPs. A crash
//! mid-append leaves a partial last entry, which is ignored. An append that fails part-way (a
//! full disk) is cut off again at once, before the next append: a partial entry in the middle
//! of the log would hide every entry after it at the next start.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender};
use std::thread;

use sha2::{Digest, Sha256};

use crate::otp::{Record, Recorded, UsedOtps, MAC_LEN};
use crate::statedir::{Access, DirError, StateDir};

/// File name of the snapshot inside the state directory.
const SNAPSHOT: &str = "used-otps";
/// File name of the append log inside the state directory.
const LOG: &str = "used-otps.log";
/// File name of a new snapshot while it is written.
const SNAPSHOT_TMP: &str = "used-otps.tmp";
/// One log entry: MAC, minute (u32 LE), and 4 bytes of SHA-256 over both to tell a torn or
/// damaged entry from a real one.
const ENTRY: usize = MAC_LEN + 4 + 4;
/// Fold the log into a new snapshot after this many entries.
const COMPACT_AFTER: usize = 1024;

/// What went wrong with the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Dir(DirError),
    #[error("cannot write the used-OTP record {path}: {error} (check that the state directory exists, is writable and not full)")]
    Write { path: PathBuf, error: io::Error },
    #[error("cannot read the used-OTP record {path}: {error}")]
    Read { path: PathBuf, error: io::Error },
    #[error("the used-OTP record {path} is damaged ({detail}); move it away to start a new one — OTPs of the last few minutes could then be replayed once")]
    Damaged { path: PathBuf, detail: String },
}

/// The used-OTP record, in memory and on disk.
pub struct OtpStore {
    dir: StateDir,
    used: UsedOtps,
    log: File,
    flusher: Flusher,
    logged: usize,
    /// Set when a failed append may have left a partial entry that could not be cut off yet:
    /// nothing is appended until the log is back to `logged` whole entries.
    torn: bool,
}

impl OtpStore {
    /// Opens the record in `dir` (created with mode 0700 when missing, refused unless this
    /// user's own and closed to group and others), replays the log into
    /// the snapshot as of `now_minute` with `skew`, and starts a new log. OTPs that can no
    /// longer verify are forgotten at the next [`OtpStore::record`], which raises the floor
    /// below which every OTP is refused.
    pub fn open(dir: &Path, now_minute: u32, skew: u32) -> Result<OtpStore, StoreError> {
        let dir = StateDir::create(dir).map_err(StoreError::Dir)?;
        let snapshot = dir.path().join(SNAPSHOT);
        let mut used = match read(&dir, SNAPSHOT) {
            Ok(Some(bytes)) => UsedOtps::from_bytes(&bytes).map_err(|e| StoreError::Damaged {
                path: snapshot.clone(),
                detail: e.to_string(),
            })?,
            Ok(None) => UsedOtps::default(),
            Err(error) => {
                return Err(StoreError::Read {
                    path: snapshot,
                    error,
                })
            }
        };
        let log_path = dir.path().join(LOG);
        match read(&dir, LOG) {
            Ok(Some(bytes)) => {
                for (mac, minute) in entries(&bytes) {
                    // Each entry is replayed as of the minute it was accepted (or `now_minute`
                    // if the clock has gone back since): an entry that can no longer verify now
                    // must still be recorded, so that forgetting it later raises the record's
                    // floor; dropped here, a clock set back to its minute would accept it
                    // again. Replays (entries already in the snapshot) are skipped.
                    let _ = used.check_and_record(mac, minute, minute.min(now_minute), skew);
                }
            }
            Ok(None) => {}
            Err(error) => {
                return Err(StoreError::Read {
                    path: log_path,
                    error,
                })
            }
        }
        let write_err = |error| StoreError::Write {
            path: log_path.clone(),
            error,
        };
        let log = dir.open(LOG, Access::Append).map_err(write_err)?;
        let flusher = Flusher {
            log: log.try_clone().map_err(write_err)?,
            path: log_path,
            requests: None,
        };
        let mut store = OtpStore {
            dir,
            used,
            log,
            flusher,
            logged: 0,
            torn: false,
        };
        store.compact()?;
        Ok(store)
    }

    /// Has the entries written so far flushed to the disk in the background, and folds the log
    /// into a new snapshot when it has grown long. The entries are in the log already: a
    /// snapshot that cannot be written (a full disk) only leaves the log to grow until one can.
    pub fn flush(&mut self) {
        self.flusher.request();
        if self.logged >= COMPACT_AFTER {
            if let Err(e) = self.compact() {
                tracing::warn!(
                    "{e}; the used-OTP log keeps growing until a snapshot can be written"
                );
            }
        }
    }

    /// Cuts the log back to its whole entries, dropping what a failed append left behind.
    fn cut_log(&mut self) -> io::Result<()> {
        let len = u64::try_from(self.logged * ENTRY).unwrap_or(u64::MAX);
        self.log.set_len(len)?;
        self.log.sync_data()?;
        self.torn = false;
        Ok(())
    }

    /// Writes the whole record as a new snapshot, then empties the log. A crash in between
    /// leaves log entries that the snapshot already holds; replaying them is harmless.
    fn compact(&mut self) -> Result<(), StoreError> {
        let path = self.dir.path().join(SNAPSHOT);
        let write = || -> io::Result<()> {
            // A new file, never one left behind: what a crash left is removed first (a
            // symbolic link itself, not its target).
            self.dir.remove(SNAPSHOT_TMP)?;
            let mut file = self.dir.open(SNAPSHOT_TMP, Access::New)?;
            file.write_all(&self.used.to_bytes())?;
            file.sync_all()?;
            self.dir.rename(SNAPSHOT_TMP, SNAPSHOT)?;
            self.dir.sync()
        };
        let write_err = |error| StoreError::Write {
            path: path.clone(),
            error,
        };
        write().map_err(write_err)?;
        // The snapshot holds everything now: the log may be emptied, torn tail and all.
        self.log.set_len(0).map_err(write_err)?;
        self.logged = 0;
        self.torn = false;
        self.log.sync_all().map_err(write_err)
    }
}

/// The record on disk: what makes a replay fail after a restart.
impl Record for OtpStore {
    type Error = StoreError;

    fn is_used(&self, mac: &[u8; MAC_LEN]) -> bool {
        self.used.is_used(mac)
    }

    /// [`Recorded::New`] only once the entry is written to the log, where a restarted daemon
    /// finds it; on a write error the OTP stays unrecorded in memory too, so it is refused now
    /// and may be tried again once the disk is fixed. Call [`OtpStore::flush`] once the grant
    /// is made.
    fn record(
        &mut self,
        mac: [u8; MAC_LEN],
        minute: u32,
        now_minute: u32,
        skew: u32,
    ) -> Result<Recorded, StoreError> {
        let log_path = self.dir.path().join(LOG);
        let write_err = |error| StoreError::Write {
            path: log_path.clone(),
            error,
        };
        if self.torn {
            self.cut_log().map_err(write_err)?;
        }
        if let Err(refused) = self.used.check_and_record(mac, minute, now_minute, skew) {
            return Ok(Recorded::Refused(refused));
        }
        if let Err(error) = self.log.write_all(&entry(&mac, minute)) {
            self.used.forget(&mac);
            // A disk that fills up mid-entry leaves part of it written: cut it off now, or
            // the entries appended after it would be unreadable at the next start.
            self.torn = self.cut_log().is_err();
            return Err(write_err(error));
        }
        self.logged += 1;
        Ok(Recorded::New)
    }
}

/// Flushes the log on a thread of its own, so that no grant waits for the disk.
///
/// The thread starts at the first request, not when the store opens: capabilities belong to
/// each thread, and by then the daemon has dropped all but CAP_NET_ADMIN, so the thread
/// inherits that and no more.
struct Flusher {
    log: File,
    path: PathBuf,
    requests: Option<SyncSender<()>>,
}

impl Flusher {
    /// Asks for a flush of everything written so far. When the channel is full, a request
    /// not yet taken up is waiting, and the flush it starts covers these writes too. If no
    /// thread can be started, flushes here and now.
    fn request(&mut self) {
        if self.requests.is_none() {
            match self.spawn() {
                Ok(requests) => self.requests = Some(requests),
                Err(e) => {
                    tracing::warn!("cannot start the used-OTP flush thread ({e}); flushing in line")
                }
            }
        }
        match &self.requests {
            Some(requests) => {
                let _ = requests.try_send(());
            }
            None => flush(&self.log, &self.path),
        }
    }

    /// Starts the thread; it ends when the store is dropped.
    fn spawn(&self) -> io::Result<SyncSender<()>> {
        let (requests, pending) = mpsc::sync_channel::<()>(1);
        let log = self.log.try_clone()?;
        let path = self.path.clone();
        thread::Builder::new()
            .name("otp-flush".into())
            .spawn(move || pending.iter().for_each(|()| flush(&log, &path)))?;
        Ok(requests)
    }
}

/// Flushes the log to the disk; a failure is logged, as the grants it covers are made.
fn flush(log: &File, path: &Path) {
    if let Err(error) = log.sync_data() {
        let e = StoreError::Write {
            path: path.to_path_buf(),
            error,
        };
        tracing::error!(
            "{e}; OTPs granted since the last flush could be replayed after a power cut"
        );
    }
}

/// The whole of the file `name` of `dir`; `None` when there is none.
fn read(dir: &StateDir, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut file = match dir.open(name, Access::Read) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

fn check(mac: &[u8; MAC_LEN], minute: u32) -> [u8; 4] {
    let digest = Sha256::new()
        .chain_update(mac)
        .chain_update(minute.to_le_bytes())
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn entry(mac: &[u8; MAC_LEN], minute: u32) -> [u8; ENTRY] {
    let mut out = [0u8; ENTRY];
    out[..MAC_LEN].copy_from_slice(mac);
    out[MAC_LEN..MAC_LEN + 4].copy_from_slice(&minute.to_le_bytes());
    out[MAC_LEN + 4..].copy_from_slice(&check(mac, minute));
    out
}

/// The log's entries up to the first one that is torn or damaged.
fn entries(bytes: &[u8]) -> impl Iterator<Item = ([u8; MAC_LEN], u32)> + '_ {
    bytes.chunks_exact(ENTRY).map_while(|chunk| {
        let mac: [u8; MAC_LEN] = chunk[..MAC_LEN].try_into().ok()?;
        let minute = u32::from_le_bytes(chunk[MAC_LEN..MAC_LEN + 4].try_into().ok()?);
        (chunk[MAC_LEN + 4..] == check(&mac, minute)).then_some((mac, minute))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::Refused;
    use crate::statedir::private_tempdir;
    use std::fs::{self, OpenOptions};
    use std::os::unix::fs::PermissionsExt;

    const NOW: u32 = 29_000_000;

    /// `serve` truncated and wrote the target of a `used-otps.tmp` that was a symbolic link
    /// when it wrote a snapshot. The link is replaced by the snapshot's own file now.
    #[test]
    fn a_snapshot_temporary_that_is_a_symbolic_link_is_removed_not_followed() {
        let dir = private_tempdir();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(SNAPSHOT_TMP)).unwrap();
        let mut store = OtpStore::open(dir.path(), NOW, 1).unwrap();
        store.record([1; 32], NOW, NOW, 1).unwrap();
        drop(store);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(fs::symlink_metadata(dir.path().join(SNAPSHOT))
            .unwrap()
            .is_file());
        assert!(OtpStore::open(dir.path(), NOW, 1)
            .unwrap()
            .is_used(&[1; 32]));
    }

    /// The log and the snapshot are never read or written through a symbolic link: the
    /// record is refused, with the reason, and the link's target is left as it was.
    #[test]
    fn a_log_or_snapshot_that_is_a_symbolic_link_is_refused_and_its_target_untouched() {
        for name in [LOG, SNAPSHOT] {
            let dir = private_tempdir();
            let victim = dir.path().join("victim");
            fs::write(&victim, "precious").unwrap();
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
            let err = OtpStore::open(dir.path(), NOW, 1).err().unwrap();
            assert!(err.to_string().contains("symbolic link"), "{name}: {err}");
            assert_eq!(fs::read_to_string(&victim).unwrap(), "precious", "{name}");
        }
    }

    #[test]
    fn a_state_directory_others_may_write_to_is_refused() {
        let dir = private_tempdir();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o770)).unwrap();
        let err = OtpStore::open(dir.path(), NOW, 1).err().unwrap();
        assert!(
            matches!(err, StoreError::Dir(DirError::Writable { .. })),
            "{err}"
        );
    }

    #[test]
    fn a_recorded_otp_is_refused_after_a_reopen() {
        let dir = private_tempdir();
        let mut store = OtpStore::open(dir.path(), NOW, 1).unwrap();
        assert_eq!(store.record([1; 32], NOW, NOW, 1).unwrap(), Recorded::New);
        assert_eq!(
            store.record([1; 32], NOW, NOW, 1).unwrap(),
            Recorded::Refused(Refused::Replay)
        );
        drop(store);
        let store = OtpStore::open(dir.path(), NOW, 1).unwrap();
        assert!(store.is_used(&[1; 32]));
    }

    #[test]
    fn a_torn_last_entry_is_ignored_and_earlier_entries_kept() {
        let dir = private_tempdir();
        let mut store = OtpStore::open(dir.path(), NOW, 1).unwrap();
        store.record([1; 32], NOW, NOW, 1).unwrap();
        store.record([2; 32], NOW, NOW, 1).unwrap();
        drop(store);
        let log = dir.path().join(LOG);
        let mut bytes = fs::read(&log).unwrap();
        bytes.truncate(ENTRY + 10);
        fs::write(&log, bytes).unwrap();
        let store = OtpStore::open(dir.path(), NOW, 1).unwrap();
        assert!(store.is_used(&[1; 32]));
        assert!(!store.is_used(&[2; 32]), "the torn entry is dropped");
    }

    #[test]
    fn the_log_is_folded_into_the_snapshot() {
        let dir = private_tempdir();
        let mut store = OtpStore::open(dir.path(), NOW, 1).unwrap();
        for i in 0..COMPACT_AFTER + 3 {
            let mut mac = [0u8; 32];
            mac[..8].copy_from_slice(&(i as u64).to_le_bytes());
            assert_eq!(store.record(mac, NOW, NOW, 1).unwrap(), Recorded::New);
            store.flush();
        }
        assert_eq!(
            fs::metadata(dir.path().join(LOG)).unwrap().len(),
            3 * ENTRY as u64
        );
        drop(store);
        let store = OtpStore::open(dir.path(), NOW, 1).unwrap();
        assert_eq!(fs::metadata(dir.path().join(LOG)).unwrap().len(), 0);
        assert!(store.is_used(&[0; 32]));
    }

    #[test]
    fn expired_entries_are_forgotten_and_stay_refused() {
        let dir = private_tempdir();
        let mut store = OtpStore::open(dir.path(), NOW, 1).unwrap();
        store.record([7; 32], NOW, NOW, 1).unwrap();
        drop(store);
        let mut store = OtpStore::open(dir.path(), NOW + 5, 1).unwrap();
        assert_eq!(
            store.record([8; 32], NOW + 5, NOW + 5, 1).unwrap(),
            Recorded::New
        );
        assert!(!store.is_used(&[7; 32]), "forgotten once it cannot verify");
        assert_eq!(
            store.record([7; 32], NOW, NOW, 1).unwrap(),
            Recorded::Refused(Refused::TooOld),
            "but never accepted again, even with the clock set back"
        );
    }

    /// The clock jumps forwards past an OTP's window and the daemon restarts; then it jumps
    /// back to the OTP's minute and the daemon restarts again: the OTP is still refused.
    #[test]
    fn a_clock_jump_forwards_and_back_across_restarts_reopens_no_replay() {
        let dir = private_tempdir();
        let mut store = OtpStore::open(dir.path(), NOW, 1).unwrap();
        assert_eq!(store.record([1; 32], NOW, NOW, 1).unwrap(), Recorded::New);
        drop(store);
        // Forwards with nothing accepted there, and with an OTP accepted there.
        drop(OtpStore::open(dir.path(), NOW + 15, 1).unwrap());
        let mut store = OtpStore::open(dir.path(), NOW + 15, 1).unwrap();
        assert_eq!(
            store.record([2; 32], NOW + 15, NOW + 15, 1).unwrap(),
            Recorded::New
        );
        drop(store);
        drop(OtpStore::open(dir.path(), NOW + 15, 1).unwrap());
        let mut store = OtpStore::open(dir.path(), NOW, 1).unwrap();
        assert!(matches!(
            store.record([1; 32], NOW, NOW, 1).unwrap(),
            Recorded::Refused(_)
        ));
    }

    #[test]
    fn an_otp_whose_entry_cannot_be_written_stays_unrecorded() {
        let dir = private_tempdir();
        let mut store = OtpStore::open(dir.path(), NOW, 1).unwrap();
        store.record([1; 32], NOW, NOW, 1).unwrap();
        // A read-only descriptor: every append fails.
        store.log = File::open(dir.path().join(LOG)).unwrap();
        assert!(store.record([2; 32], NOW, NOW, 1).is_err());
        assert!(!store.is_used(&[2; 32]), "refused now, may be tried again");
        assert!(store.is_used(&[1; 32]), "what was recorded before stays");
    }

    #[test]
    fn a_partial_entry_left_by_a_failed_append_is_cut_before_the_next() {
        let dir = private_tempdir();
        let mut store = OtpStore::open(dir.path(), NOW, 1).unwrap();
        store.record([1; 32], NOW, NOW, 1).unwrap();
        // What a disk that fills up mid-entry leaves behind, when cutting it off failed too.
        OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG))
            .unwrap()
            .write_all(&[0xAA; 17])
            .unwrap();
        store.torn = true;
        store.record([2; 32], NOW, NOW, 1).unwrap();
        assert_eq!(
            fs::metadata(dir.path().join(LOG)).unwrap().len(),
            2 * ENTRY as u64
        );
        drop(store);
        let store = OtpStore::open(dir.path(), NOW, 1).unwrap();
        assert!(store.is_used(&[1; 32]) && store.is_used(&[2; 32]));
    }

    #[test]
    fn a_snapshot_that_cannot_be_written_does_not_refuse_a_logged_otp() {
        let dir = private_tempdir();
        let mut store = OtpStore::open(dir.path(), NOW, 1).unwrap();
        // A directory where the new snapshot goes: creating it fails, even for root.
        let tmp = dir.path().join(SNAPSHOT_TMP);
        fs::create_dir(&tmp).unwrap();
        for i in 0..COMPACT_AFTER + 2 {
            let mut mac = [0u8; 32];
            mac[..8].copy_from_slice(&(i as u64).to_le_bytes());
            assert_eq!(store.record(mac, NOW, NOW, 1).unwrap(), Recorded::New);
            store.flush();
        }
        drop(store);
        fs::remove_dir(&tmp).unwrap();
        let store = OtpStore::open(dir.path(), NOW, 1).unwrap();
        let mut last = [0u8; 32];
        last[..8].copy_from_slice(&((COMPACT_AFTER + 1) as u64).to_le_bytes());
        assert!(store.is_used(&[0; 32]) && store.is_used(&last));
    }

    #[test]
    fn the_record_is_private_to_its_owner() {
        let dir = private_tempdir();
        let state = dir.path().join("state");
        let mut store = OtpStore::open(&state, NOW, 1).unwrap();
        store.record([1; 32], NOW, NOW, 1).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(SNAPSHOT)), 0o600);
        assert_eq!(mode(&state.join(LOG)), 0o600);
    }

    #[test]
    fn a_damaged_snapshot_is_reported_not_ignored() {
        let dir = private_tempdir();
        fs::write(dir.path().join(SNAPSHOT), b"garbage").unwrap();
        let err = OtpStore::open(dir.path(), NOW, 1).err().unwrap();
        assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
    }
}
