//! The daemon's pid file in the state directory: its lock keeps a second daemon from starting,
//! and it names the daemon's process for whoever looks (`systemctl`, an administrator).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Name of the pid file in the state directory.
const PID_FILE: &str = "portknock.pid";

/// What went wrong with the pid file.
#[derive(Debug, thiserror::Error)]
pub enum PidError {
    #[error("cannot create the state directory {}: {error}", dir.display())]
    CreateDir { dir: PathBuf, error: io::Error },
    #[error("cannot open {}: {error}", path.display())]
    Open { path: PathBuf, error: io::Error },
    #[error("another portknock daemon already runs (it holds the lock on {}); stop it first", path.display())]
    Taken { path: PathBuf },
    #[error("cannot write {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
}

/// The pid file of the running daemon, locked for as long as this value lives.
#[derive(Debug)]
pub struct PidLock {
    _file: File,
}

/// Takes the pid file's lock in `state_dir` (created when missing) and writes this process's
/// pid into it. Fails when another daemon holds the lock.
pub fn lock(state_dir: &Path) -> Result<PidLock, PidError> {
    fs::create_dir_all(state_dir).map_err(|error| PidError::CreateDir {
        dir: state_dir.to_path_buf(),
        error,
    })?;
    let path = state_dir.join(PID_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|error| PidError::Open {
            path: path.clone(),
            error,
        })?;
    if file.try_lock().is_err() {
        return Err(PidError::Taken { path });
    }
    file.set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.sync_all())
        .map_err(|error| PidError::Write { path, error })?;
    Ok(PidLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let held = lock(&state).unwrap();
        let pid = fs::read_to_string(state.join(PID_FILE)).unwrap();
        assert_eq!(pid, format!("{}\n", std::process::id()));
        assert!(matches!(lock(&state), Err(PidError::Taken { .. })));
        drop(held);
        let again = lock(&state);
        assert!(again.is_ok(), "free again once dropped");
    }
}
