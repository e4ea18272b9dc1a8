//! The daemon's pid file in the state directory: its lock keeps a second daemon from starting,
//! and it tells `apply` which process to ask for a reload.
//!
//! `apply` runs as root and sends a signal, so it trusts the pid file no further than the
//! kernel vouches for it. What could be faked: the file's content (by whoever may write it),
//! a lock on it (by whoever may open it: `flock` needs no more than read access), a process's
//! name (`comm` is any program's to choose). What cannot: which process holds the lock on this
//! very file, which the kernel tells in `/proc/locks`. So `apply` signals the pid in the file
//! only when that process holds the file's exclusive lock and runs a program of the same name
//! as `apply` itself; and it names the process by a pid file descriptor taken before those
//! checks, so that a pid reused in between is never signalled. The state directory is
//! checked first ([`crate::statedir`]), and the pid file is private (mode 0600): only the
//! daemon's user can open it, let alone lock it.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use crate::statedir::{Access, DirError, StateDir};

/// Name of the pid file in the state directory.
const PID_FILE: &str = "portknock.pid";

/// What went wrong with the pid file.
#[derive(Debug, thiserror::Error)]
pub enum PidError {
    #[error(transparent)]
    Dir(DirError),
    #[error("cannot open {}: {error}", path.display())]
    Open { path: PathBuf, error: io::Error },
    #[error("another portknock daemon already runs (it holds the lock on {}); stop it first", path.display())]
    Taken { path: PathBuf },
    #[error("cannot write {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("{} holds no pid", path.display())]
    NoPid { path: PathBuf },
    #[error(
        "{} names pid {pid}, but the lock on it is held by {holders}, so pid {pid} is not the \
         daemon and was not signalled; restart the daemon (systemctl restart portknock)",
        path.display()
    )]
    NotHolder {
        path: PathBuf,
        pid: i32,
        holders: String,
    },
    #[error(
        "pid {pid}, which holds the lock on {}, runs {comm:?}, not {ours:?}, so it was not \
         signalled; restart the daemon (systemctl restart portknock)",
        path.display()
    )]
    NotPortknock {
        path: PathBuf,
        pid: i32,
        comm: String,
        ours: String,
    },
    #[error("cannot tell whether pid {pid} is the portknock daemon, so it was not signalled: reading /proc: {error}")]
    Unverified { pid: i32, error: io::Error },
    #[error("cannot signal the daemon (pid {pid}): {error}")]
    Signal { pid: i32, error: io::Error },
}

/// The pid file of the running daemon, locked for as long as this value lives.
#[derive(Debug)]
pub struct PidLock {
    _file: File,
}

/// Takes the pid file's lock in `state_dir` (created when missing, and refused unless it is
/// this user's own and closed to group and others) and writes this process's pid into it.
/// Fails when another daemon holds the lock.
pub fn lock(state_dir: &Path) -> Result<PidLock, PidError> {
    let dir = StateDir::create(state_dir).map_err(PidError::Dir)?;
    let path = dir.path().join(PID_FILE);
    let mut file = dir
        .open(PID_FILE, Access::ReadWrite)
        .map_err(|error| PidError::Open {
            path: path.clone(),
            error,
        })?;
    if file.try_lock().is_err() {
        return Err(PidError::Taken { path });
    }
    // A pid file left by an earlier version may be readable by others, who could lock it.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .and_then(|()| file.set_len(0))
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.sync_all())
        .map_err(|error| PidError::Write { path, error })?;
    Ok(PidLock { _file: file })
}

/// Sends SIGHUP to the daemon whose pid file is in `state_dir`; `Ok(None)` when none runs.
/// Signals only a process that holds the pid file's lock and runs the same program as this
/// one (see the module's documentation).
pub fn signal_reload(state_dir: &Path) -> Result<Option<i32>, PidError> {
    let Some(dir) = StateDir::existing(state_dir).map_err(PidError::Dir)? else {
        return Ok(None);
    };
    let path = dir.path().join(PID_FILE);
    let file = match dir.open(PID_FILE, Access::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(PidError::Read { path, error }),
    };
    // A pid file nobody holds locked is a leftover of a daemon that died: no one to signal.
    if file.try_lock_shared().is_ok() {
        return Ok(None);
    }
    let pid = read_pid(&file, &path)?;
    let raw = pid.as_raw_pid();
    // Taken before the checks: if the process ends after them and its pid is reused, the
    // descriptor still names the process that was checked, and the signal fails. A pid of no
    // process holds no lock, so the checks refuse it.
    let process = pidfd_open(pid, PidfdFlags::empty());
    verify(&file, &path, raw)?;
    let process = process.map_err(|errno| PidError::Signal {
        pid: raw,
        error: errno.into(),
    })?;
    match pidfd_send_signal(&process, Signal::HUP) {
        Ok(()) => Ok(Some(raw)),
        Err(rustix::io::Errno::SRCH) => Ok(None),
        Err(errno) => Err(PidError::Signal {
            pid: raw,
            error: errno.into(),
        }),
    }
}

/// The pid written in the pid `file` at `path`.
fn read_pid(file: &File, path: &Path) -> Result<Pid, PidError> {
    let mut text = String::new();
    file.take(64)
        .read_to_string(&mut text)
        .map_err(|error| PidError::Read {
            path: path.to_path_buf(),
            error,
        })?;
    text.trim()
        .parse::<i32>()
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| PidError::NoPid {
            path: path.to_path_buf(),
        })
}

/// Checks that `pid` holds the exclusive lock on the pid `file` at `path` and runs a program
/// of the same name as this process.
fn verify(file: &File, path: &Path, pid: i32) -> Result<(), PidError> {
    let unverified = |error| PidError::Unverified { pid, error };
    let locks = fs::read_to_string("/proc/locks").map_err(unverified)?;
    let holders = exclusive_holders(&locks, &file.metadata().map_err(unverified)?);
    if !holders.contains(&pid) {
        let holders = match &holders[..] {
            [] => "no process this one can see".to_string(),
            pids => {
                let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
                format!("pid {}", pids.join(", "))
            }
        };
        return Err(PidError::NotHolder {
            path: path.to_path_buf(),
            pid,
            holders,
        });
    }
    let comm = |process: &str| {
        fs::read_to_string(format!("/proc/{process}/comm")).map(|c| c.trim_end().to_string())
    };
    let theirs = comm(&pid.to_string()).map_err(unverified)?;
    let ours = comm("self").map_err(unverified)?;
    if theirs != ours {
        return Err(PidError::NotPortknock {
            path: path.to_path_buf(),
            pid,
            comm: theirs,
            ours,
        });
    }
    Ok(())
}

/// The pids that hold an exclusive `flock` lock on the file of `metadata`, from the text of
/// `/proc/locks`: lines such as `1: FLOCK  ADVISORY  WRITE 4242 08:02:131075 0 EOF`, where the
/// device's major and minor numbers are hexadecimal. Waiters (`1: -> FLOCK …`) hold nothing.
fn exclusive_holders(locks: &str, metadata: &fs::Metadata) -> Vec<i32> {
    let dev = metadata.dev();
    let file = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        metadata.ino()
    );
    locks
        .lines()
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [_, "FLOCK", _, "WRITE", pid, at, ..] if at == file => pid.parse().ok(),
                _ => None,
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A private temporary directory, whatever the umask.
    fn private() -> tempfile::TempDir {
        tempfile::Builder::new()
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir()
            .unwrap()
    }

    #[test]
    fn one_lock_at_a_time_and_no_daemon_to_signal_without_one() {
        let dir = private();
        let state = dir.path().join("state");
        assert!(
            signal_reload(&state).unwrap().is_none(),
            "no state directory"
        );
        let held = lock(&state).unwrap();
        let pid = fs::read_to_string(state.join(PID_FILE)).unwrap();
        assert_eq!(pid, format!("{}\n", std::process::id()));
        let mode = fs::metadata(state.join(PID_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "only the daemon's user may open it");
        assert!(matches!(lock(&state), Err(PidError::Taken { .. })));
        drop(held);
        assert!(
            signal_reload(&state).unwrap().is_none(),
            "a pid file nobody holds is a leftover"
        );
        fs::remove_file(state.join(PID_FILE)).unwrap();
        assert!(signal_reload(&state).unwrap().is_none(), "no pid file");
        let again = lock(&state);
        assert!(again.is_ok(), "free again once dropped");
    }

    /// A pid file that an earlier version left readable by others is made private.
    #[test]
    fn a_pid_file_left_readable_is_made_private() {
        let dir = private();
        let file = dir.path().join(PID_FILE);
        fs::write(&file, "1\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let _held = lock(dir.path()).unwrap();
        let mode = fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// `serve` truncated and wrote the target of a pid file that was a symbolic link.
    #[test]
    fn a_pid_file_that_is_a_symbolic_link_is_refused_and_its_target_untouched() {
        let dir = private();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(PID_FILE)).unwrap();
        let err = lock(dir.path()).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(matches!(
            signal_reload(dir.path()),
            Err(PidError::Read { .. })
        ));
    }

    #[test]
    fn a_state_directory_others_may_write_to_is_refused() {
        let dir = private();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            lock(dir.path()),
            Err(PidError::Dir(DirError::Writable { .. }))
        ));
        assert!(matches!(
            signal_reload(dir.path()),
            Err(PidError::Dir(DirError::Writable { .. }))
        ));
    }

    /// Kills and reaps the processes of a test however it ends.
    struct Processes(Vec<Child>);

    impl Drop for Processes {
        fn drop(&mut self) {
            for child in &mut self.0 {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// `flock FILE sleep 60`: a process that takes the exclusive lock on `file` and keeps it;
    /// returned once it holds it.
    fn hold_lock(file: &Path) -> Child {
        let holder = Command::new("flock")
            .arg(file)
            .args(["sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
            .expect("flock (util-linux)");
        let start = Instant::now();
        while File::open(file).unwrap().try_lock_shared().is_ok() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "flock took no lock"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        holder
    }

    fn sleeper() -> Child {
        Command::new("sleep").arg("60").spawn().expect("sleep")
    }

    /// A root `apply` sent SIGHUP to whatever pid the file named while anything held its
    /// lock: here a victim's pid, the lock held by another process. The victim survives.
    #[test]
    fn a_pid_that_does_not_hold_the_lock_is_not_signalled() {
        let dir = private();
        let file = dir.path().join(PID_FILE);
        let mut processes = Processes(vec![sleeper()]);
        let victim = processes.0[0].id();
        fs::write(&file, format!("{victim}\n")).unwrap();
        processes.0.push(hold_lock(&file));
        let holder = processes.0[1].id();
        let err = signal_reload(dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} names pid {victim}, but the lock on it is held by pid {holder}, so pid \
                 {victim} is not the daemon and was not signalled; restart the daemon \
                 (systemctl restart portknock)",
                file.display()
            )
        );
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            processes.0[0].try_wait().unwrap().is_none(),
            "the victim lives"
        );

        // A pid that no process has.
        fs::write(&file, "2147483647\n").unwrap();
        assert!(matches!(
            signal_reload(dir.path()),
            Err(PidError::NotHolder {
                pid: 2147483647,
                ..
            })
        ));
        fs::write(&file, "no pid\n").unwrap();
        assert!(matches!(
            signal_reload(dir.path()),
            Err(PidError::NoPid { .. })
        ));
    }

    /// The process holding the lock is named in the file, but it is not portknock.
    #[test]
    fn a_lock_holder_that_runs_another_program_is_not_signalled() {
        let dir = private();
        let file = dir.path().join(PID_FILE);
        fs::write(&file, "").unwrap();
        let mut processes = Processes(vec![hold_lock(&file)]);
        let holder = processes.0[0].id();
        fs::write(&file, format!("{holder}\n")).unwrap();
        let err = signal_reload(dir.path()).unwrap_err();
        assert!(
            matches!(&err, PidError::NotPortknock { pid, comm, .. } if *pid == holder as i32 && comm == "flock"),
            "{err}"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            processes.0[0].try_wait().unwrap().is_none(),
            "the holder lives"
        );
    }

    #[test]
    fn lock_holders_are_read_from_proc_locks() {
        let dir = private();
        let file = dir.path().join("f");
        fs::write(&file, "").unwrap();
        let metadata = fs::metadata(&file).unwrap();
        let dev = metadata.dev();
        let at = format!(
            "{:02x}:{:02x}:{}",
            libc::major(dev),
            libc::minor(dev),
            metadata.ino()
        );
        let locks = format!(
            "1: FLOCK  ADVISORY  WRITE 41 {at} 0 EOF\n\
             1: -> FLOCK  ADVISORY  WRITE 42 {at} 0 EOF\n\
             2: FLOCK  ADVISORY  READ 43 {at} 0 EOF\n\
             3: POSIX  ADVISORY  WRITE 44 {at} 0 EOF\n\
             4: FLOCK  ADVISORY  WRITE 45 {at}1 0 EOF\n\
             5: FLOCK  ADVISORY  WRITE 46 {at} 0 EOF\n"
        );
        assert_eq!(exclusive_holders(&locks, &metadata), [41, 46]);

        // And what the kernel writes for a lock this process takes.
        let held = File::open(&file).unwrap();
        held.try_lock().unwrap();
        let locks = fs::read_to_string("/proc/locks").unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(exclusive_holders(&locks, &metadata), [me]);
    }
}
