//! State that must survive a restart: the record of used one-time passwords.
//!
//! An OTP is recorded on disk — written to a temporary file, fsynced, renamed over the record,
//! directory fsynced — before the grant it earns is made, so a replay is refused after a crash
//! or restart too. The record only holds OTPs that could still be valid (a few minutes' worth),
//! so rewriting it whole stays cheap.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::otp::{Refused, UsedOtps, MAC_LEN};

/// File name of the used-OTP record inside the state directory.
const RECORD: &str = "used-otps";

/// What recording an OTP found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// First use: recorded on disk, the grant may go ahead.
    New,
    /// Refused: a replay, or an OTP the record cannot vouch for.
    Refused(Refused),
}

/// What went wrong with the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write the used-OTP record {path}: {source} (check that the state directory exists, is writable and not full)")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read the used-OTP record {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("the used-OTP record {path} is damaged ({detail}); move it away to start a new one — OTPs of the last few minutes could then be replayed once")]
    Damaged { path: PathBuf, detail: String },
}

/// The used-OTP record, in memory and on disk.
pub struct OtpStore {
    dir: PathBuf,
    used: UsedOtps,
}

impl OtpStore {
    /// Opens the record in `dir`, creating the directory (mode 0700) when it does not exist.
    pub fn open(dir: &Path) -> Result<OtpStore, StateError> {
        let path = dir.join(RECORD);
        fs::create_dir_all(dir).map_err(|source| StateError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let used = match fs::read(&path) {
            Ok(bytes) => UsedOtps::from_bytes(&bytes).map_err(|e| StateError::Damaged {
                path: path.clone(),
                detail: e.to_string(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => UsedOtps::default(),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        Ok(OtpStore {
            dir: dir.to_path_buf(),
            used,
        })
    }

    /// Whether `mac` was accepted before (and could still verify): a replay from any address.
    pub fn is_used(&self, mac: &[u8; MAC_LEN]) -> bool {
        self.used.is_used(mac)
    }

    /// Records `mac` of `minute` as used. Returns [`Recorded::New`] only once the record is
    /// safely on disk; on a write error the OTP stays unrecorded in memory too, so it is
    /// refused now and may be tried again once the disk is fixed.
    pub fn record(
        &mut self,
        mac: [u8; MAC_LEN],
        minute: u32,
        now_minute: u32,
        skew: u32,
    ) -> Result<Recorded, StateError> {
        let before = self.used.clone();
        if let Err(refused) = self.used.check_and_record(mac, minute, now_minute, skew) {
            return Ok(Recorded::Refused(refused));
        }
        if let Err(e) = self.persist() {
            self.used = before;
            return Err(e);
        }
        Ok(Recorded::New)
    }

    fn persist(&self) -> Result<(), StateError> {
        let path = self.dir.join(RECORD);
        let tmp = self.dir.join(format!("{RECORD}.tmp"));
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&self.used.to_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| StateError::Write { path, source })
    }
}
