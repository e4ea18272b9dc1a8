//! The daemon's pid file in the state directory: its lock keeps a second daemon from starting,
//! it names the daemon's process for whoever looks (`systemctl`, an administrator), and it
//! tells a command whether a process is the daemon ([`check_holder`]).
//!
//! A command runs as root and hands the daemon its requests, so it trusts nothing another user
//! could have arranged. What could be faked: the pid file's content (by whoever may write it),
//! a lock on it (by whoever may open it: `flock` needs no more than read access), a process's
//! name (`comm` is any program's to choose). What cannot: which process holds the lock on this
//! very file, which the kernel tells in `/proc/locks`, and which process is at the other end
//! of a Unix socket, which it tells through `SO_PEERCRED`. So a process is taken for the daemon
//! only when it holds the pid file's exclusive lock and runs a program of the same name as the
//! command asking. The state directory is checked first ([`crate::statedir`]), and the pid
//! file is private (mode 0600): only the daemon's user can open it, let alone lock it.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
}

/// Why a process was not taken for the daemon ([`check_holder`]).
#[derive(Debug, thiserror::Error)]
pub enum NotTheDaemon {
    #[error(
        "pid {pid} does not hold the lock on {} ({holders} does), so it is not the portknock \
         daemon and was not asked anything; restart the daemon (systemctl restart portknock)",
        path.display()
    )]
    NotHolder {
        path: PathBuf,
        pid: i32,
        holders: String,
    },
    #[error(
        "pid {pid}, which holds the lock on {}, runs {comm:?}, not {ours:?}, so it was not \
         asked anything; restart the daemon (systemctl restart portknock)",
        path.display()
    )]
    NotPortknock {
        path: PathBuf,
        pid: i32,
        comm: String,
        ours: String,
    },
    #[error(
        "cannot tell whether pid {pid} is the portknock daemon, so it was not asked anything: \
         {error}"
    )]
    Unverified { pid: i32, error: io::Error },
}

/// The pid file of the running daemon, locked for as long as this value lives.
#[derive(Debug)]
pub struct PidLock {
    _file: fs::File,
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

/// Checks that process `pid` (as the kernel names it, not as a file says) holds the exclusive
/// lock on the pid file of `dir` and runs a program of the same name as this process.
pub fn check_holder(dir: &StateDir, pid: i32) -> Result<(), NotTheDaemon> {
    let path = dir.path().join(PID_FILE);
    let unverified = |error| NotTheDaemon::Unverified { pid, error };
    let file = dir.open(PID_FILE, Access::Read).map_err(unverified)?;
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
        return Err(NotTheDaemon::NotHolder { path, pid, holders });
    }
    let comm = |process: &str| {
        fs::read_to_string(format!("/proc/{process}/comm")).map(|c| c.trim_end().to_string())
    };
    let theirs = comm(&pid.to_string()).map_err(unverified)?;
    let ours = comm("self").map_err(unverified)?;
    if theirs != ours {
        return Err(NotTheDaemon::NotPortknock {
            path,
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
    use crate::statedir::private_tempdir;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    #[test]
    fn one_lock_at_a_time() {
        let dir = private_tempdir();
        let state = dir.path().join("state");
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
        let again = lock(&state);
        assert!(again.is_ok(), "free again once dropped");
    }

    /// A pid file that an earlier version left readable by others is made private.
    #[test]
    fn a_pid_file_left_readable_is_made_private() {
        let dir = private_tempdir();
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
        let dir = private_tempdir();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(PID_FILE)).unwrap();
        let err = lock(dir.path()).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        let state = StateDir::existing(dir.path()).unwrap().unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        let err = check_holder(&state, me).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn a_state_directory_others_may_write_to_is_refused() {
        let dir = private_tempdir();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            lock(dir.path()),
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

    /// `flock --close FILE sleep 60`: a process that takes the exclusive lock on `file` and
    /// keeps it; returned once it holds it.
    fn hold_lock(file: &Path) -> Child {
        let holder = Command::new("flock")
            // The lock stays with flock, not with sleep: killing flock releases it.
            .arg("--close")
            .arg(file)
            .args(["sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
            .expect("flock (util-linux)");
        let start = Instant::now();
        while fs::File::open(file).unwrap().try_lock_shared().is_ok() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "flock took no lock"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        holder
    }

    /// The daemon itself holds the lock: this process, here.
    #[test]
    fn the_holder_of_the_lock_running_this_program_is_the_daemon() {
        let dir = private_tempdir();
        let _held = lock(dir.path()).unwrap();
        let state = StateDir::existing(dir.path()).unwrap().unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        check_holder(&state, me).unwrap();
    }

    /// Whatever the pid file says, and whoever else holds a lock on it: a process that does not
    /// hold its lock is not the daemon, nor is one that holds it but runs another program.
    #[test]
    fn a_process_that_does_not_hold_the_lock_or_runs_another_program_is_not_the_daemon() {
        let dir = private_tempdir();
        let file = dir.path().join(PID_FILE);
        let mut processes = Processes(vec![Command::new("sleep").arg("60").spawn().unwrap()]);
        let victim = processes.0[0].id();
        fs::write(&file, format!("{victim}\n")).unwrap();
        let state = StateDir::existing(dir.path()).unwrap().unwrap();
        let victim = i32::try_from(victim).unwrap();
        assert!(matches!(
            check_holder(&state, victim),
            Err(NotTheDaemon::NotHolder { holders, .. }) if holders == "no process this one can see"
        ));
        processes.0.push(hold_lock(&file));
        let holder = processes.0[1].id();
        assert_eq!(
            check_holder(&state, victim).unwrap_err().to_string(),
            format!(
                "pid {victim} does not hold the lock on {} (pid {holder} does), so it is not the \
                 portknock daemon and was not asked anything; restart the daemon (systemctl \
                 restart portknock)",
                file.display()
            )
        );
        let holder = i32::try_from(holder).unwrap();
        let err = check_holder(&state, holder).unwrap_err();
        assert!(
            matches!(&err, NotTheDaemon::NotPortknock { pid, comm, .. } if *pid == holder && comm == "flock"),
            "{err}"
        );
    }

    #[test]
    fn lock_holders_are_read_from_proc_locks() {
        let dir = private_tempdir();
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
        let held = fs::File::open(&file).unwrap();
        held.try_lock().unwrap();
        let locks = fs::read_to_string("/proc/locks").unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(exclusive_holders(&locks, &metadata), [me]);
    }
}
