//! The daemon's control socket, `control.sock` in the state directory. While the daemon runs,
//! the commands that change portknock's table (`apply`, `remove`, `open`, `close`, `confirm`)
//! ask the daemon to make the change instead of making it themselves: so the daemon is the one
//! writer of its table and tells its own changes from foreign ones (docs/behaviour.md §4,
//! self-healing), a reload is in force when `apply` returns, and a manual grant is logged with
//! who asked for it.
//!
//! One request and one answer per connection, each a line of JSON. Only the daemon's own user
//! may ask: the socket is private (0600 in a 0700 directory) and the daemon checks the peer's
//! credentials too. A command, in turn, asks only the daemon: it refuses a state directory
//! another user may write to ([`crate::statedir`]), and it sends its request only once the
//! kernel says the process at the other end holds the pid file's lock and runs portknock
//! ([`crate::pidfile::check_holder`]), so that no one else's socket there can take the request
//! and answer that it was done.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt};
use serde::{Deserialize, Serialize};

use crate::pidfile::{self, NotTheDaemon};
use crate::statedir::{DirError, StateDir};

/// Name of the socket in the state directory.
const SOCKET: &str = "control.sock";
/// Longest request or answer read; a request is a few hundred bytes.
const MAX_LINE: u64 = 64 * 1024;
/// How long the daemon waits for a request once a client connected, in all: it does not sit in
/// the knock path, but a client that says nothing, or a byte now and then, must not hold it up.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a command waits for the daemon's answer: an `apply` of tens of thousands of doors
/// takes a fraction of a second.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest manual grant: a week. Longer belongs in the host's own firewall rules.
pub const MAX_OPEN_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
/// The seconds `apply --confirm-within` may give: time to log in again and confirm, and at
/// most a day, since the trial's configuration is live meanwhile.
pub const CONFIRM_WITHIN_SECS: RangeInclusive<u64> = 10..=86_400;

/// What a command asks of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Put the configuration of `dir` in force; with `confirm_within`, roll it back unless
    /// confirmed in time.
    Apply {
        dir: PathBuf,
        confirm_within: Option<Duration>,
    },
    /// Keep the configuration an `apply --confirm-within` put in force.
    Confirm,
    /// Take the table away on purpose.
    Remove,
    /// Grant (source, port) by hand.
    Open {
        source: IpAddr,
        port: u16,
        open_for: Duration,
    },
    /// Take a grant back by hand.
    Close { source: IpAddr, port: u16 },
}

impl Request {
    /// Why the daemon refuses this request before it looks any further: a duration out of the
    /// bounds the command line keeps. Another client of the socket may send any number, and the
    /// daemon must neither hold a grant for ever nor overflow its clock on one.
    pub fn out_of_bounds(&self) -> Option<String> {
        match self {
            Request::Open { open_for, .. } if open_for.is_zero() || *open_for > MAX_OPEN_FOR => {
                Some(format!(
                    "a manual grant lasts from 1 s to {} s, not {} s",
                    MAX_OPEN_FOR.as_secs(),
                    open_for.as_secs_f64()
                ))
            }
            Request::Apply {
                confirm_within: Some(within),
                ..
            } if !CONFIRM_WITHIN_SECS.contains(&within.as_secs()) || within.subsec_nanos() != 0 => {
                Some(format!(
                    "a trial lasts from {} s to {} s, not {} s",
                    CONFIRM_WITHIN_SECS.start(),
                    CONFIRM_WITHIN_SECS.end(),
                    within.as_secs_f64()
                ))
            }
            _ => None,
        }
    }
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Done; what to tell the user.
    Done(String),
    /// Not done, and why; nothing was changed.
    Refused(String),
}

/// Talking to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Dir(DirError),
    #[error(transparent)]
    NotTheDaemon(NotTheDaemon),
    #[error("cannot reach the daemon at {}: {error}", path.display())]
    Connect { path: PathBuf, error: io::Error },
    #[error("the daemon did not answer (at {}): {error}", path.display())]
    Answer { path: PathBuf, error: io::Error },
    #[error("the daemon's answer cannot be read: {0}")]
    Garbled(String),
}

/// Asks the daemon whose state directory is `state_dir`. `Ok(None)` when no daemon listens
/// there: the caller then makes the change itself.
pub fn ask(state_dir: &Path, request: &Request) -> Result<Option<Answer>, ControlError> {
    let Some(dir) = StateDir::existing(state_dir).map_err(ControlError::Dir)? else {
        return Ok(None);
    };
    let path = dir.path().join(SOCKET);
    let mut stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        // No socket, or one a daemon that is gone left behind.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(error) => return Err(ControlError::Connect { path, error }),
    };
    let answer_error = |error| ControlError::Answer {
        path: path.clone(),
        error,
    };
    // The kernel's word for who listens, not the pid file's.
    let peer = getsockopt(&stream, sockopt::PeerCredentials)
        .map_err(|errno| answer_error(errno.into()))?;
    pidfile::check_holder(&dir, peer.pid()).map_err(ControlError::NotTheDaemon)?;
    let mut line =
        serde_json::to_string(request).map_err(|e| ControlError::Garbled(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(answer_error)?;
    let text = read_line(&stream, ANSWER_TIMEOUT).map_err(answer_error)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ControlError::Garbled(e.to_string()))
}

/// One line of at most [`MAX_LINE`] bytes, read within `within` in all.
fn read_line(stream: &UnixStream, within: Duration) -> io::Result<String> {
    let mut line = String::new();
    let reader = Deadline {
        stream,
        until: Instant::now() + within,
    };
    BufReader::new(reader.take(MAX_LINE)).read_line(&mut line)?;
    Ok(line)
}

/// Reads of a stream that time out at one instant: a timeout per read alone would let a peer
/// that sends a byte now and then stretch the wait without end.
struct Deadline<'a> {
    stream: &'a UnixStream,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = (self.until.checked_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
            .ok_or(io::ErrorKind::TimedOut)?;
        self.stream.set_read_timeout(Some(left))?;
        (&mut &*self.stream).read(buf)
    }
}

/// The daemon's end: a listening socket, polled with the daemon's others.
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
}

/// Who asked: the peer's credentials, as the kernel gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
}

/// A client that connected and asked.
pub struct Call {
    stream: UnixStream,
    pub peer: Peer,
    /// The request, or why it could not be read.
    pub request: Result<Request, String>,
}

impl Listener {
    /// Listens at `state_dir/control.sock`, replacing a socket a daemon that is gone left
    /// behind: the caller holds the pid file's lock, so no other daemon uses it.
    pub fn bind(state_dir: &Path) -> io::Result<Listener> {
        let path = state_dir.join(SOCKET);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Listener { listener, path })
    }

    /// The next client waiting, with its request; `None` when none waits.
    pub fn accept(&self) -> Option<Call> {
        let (stream, _) = self.listener.accept().ok()?;
        let cred = getsockopt(&stream, sockopt::PeerCredentials).ok()?;
        let peer = Peer {
            pid: cred.pid(),
            uid: cred.uid(),
        };
        let request = stream
            .set_nonblocking(false)
            .and_then(|()| read_line(&stream, REQUEST_TIMEOUT))
            .map_err(|e| format!("cannot read the request: {e}"))
            .and_then(|line| {
                serde_json::from_str(&line).map_err(|e| format!("not a request: {e}"))
            });
        Some(Call {
            stream,
            peer,
            request,
        })
    }
}

impl Call {
    /// Sends the answer; a client that went away is no concern of the daemon's.
    pub fn answer(mut self, answer: &Answer) {
        if let Ok(mut line) = serde_json::to_string(answer) {
            line.push('\n');
            let _ = self.stream.write_all(line.as_bytes());
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statedir::private_tempdir;

    /// Accepts the next client, waiting (bounded) for one.
    fn next_call(listener: &Listener) -> Call {
        for _ in 0..2000 {
            if let Some(call) = listener.accept() {
                return call;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("no client came");
    }

    #[test]
    fn a_request_and_its_answer_cross_the_socket() {
        let dir = private_tempdir();
        assert!(
            ask(&dir.path().join("none"), &Request::Remove)
                .unwrap()
                .is_none(),
            "no state directory, no daemon"
        );
        assert!(
            ask(dir.path(), &Request::Remove).unwrap().is_none(),
            "no daemon"
        );
        // This process is the daemon: it holds the pid file's lock.
        let _pid = pidfile::lock(dir.path()).unwrap();
        let listener = Listener::bind(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(SOCKET))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(listener.accept().is_none(), "nobody waits");
        let request = Request::Open {
            source: "198.18.0.2".parse().unwrap(),
            port: 22,
            open_for: Duration::from_secs(600),
        };
        let state = dir.path().to_path_buf();
        let asked = request.clone();
        let client = std::thread::spawn(move || ask(&state, &asked));
        let call = next_call(&listener);
        assert_eq!(call.request, Ok(request));
        assert_eq!(call.peer.pid, std::process::id() as i32);
        call.answer(&Answer::Done("opened".into()));
        let answer = client.join().unwrap().unwrap();
        assert_eq!(answer, Some(Answer::Done("opened".into())));
        drop(listener);
        assert!(
            !dir.path().join(SOCKET).exists(),
            "removed with the listener"
        );
        assert!(ask(dir.path(), &Request::Confirm).unwrap().is_none());
    }

    #[test]
    fn a_socket_left_behind_means_no_daemon_and_is_replaced() {
        let dir = private_tempdir();
        let stale = UnixListener::bind(dir.path().join(SOCKET)).unwrap();
        drop(stale);
        assert!(ask(dir.path(), &Request::Remove).unwrap().is_none());
        assert!(Listener::bind(dir.path()).is_ok());
    }

    #[test]
    fn durations_out_of_the_command_lines_bounds_are_refused() {
        let open = |secs: f64| Request::Open {
            source: "198.18.0.2".parse().unwrap(),
            port: 22,
            open_for: Duration::from_secs_f64(secs),
        };
        let apply = |secs: f64| Request::Apply {
            dir: PathBuf::from("/etc/portknock"),
            confirm_within: Some(Duration::from_secs_f64(secs)),
        };
        for fine in [open(1.0), open(604_800.0), apply(10.0), apply(86_400.0)] {
            assert_eq!(fine.out_of_bounds(), None, "{fine:?}");
        }
        let no_trial = Request::Apply {
            dir: PathBuf::from("/etc/portknock"),
            confirm_within: None,
        };
        assert_eq!(no_trial.out_of_bounds(), None);
        assert_eq!(
            open(604_801.0).out_of_bounds().as_deref(),
            Some("a manual grant lasts from 1 s to 604800 s, not 604801 s")
        );
        assert!(open(0.0).out_of_bounds().is_some());
        assert!(
            open(1e19).out_of_bounds().is_some(),
            "past what Instant can add"
        );
        assert_eq!(
            apply(9.0).out_of_bounds().as_deref(),
            Some("a trial lasts from 10 s to 86400 s, not 9 s")
        );
        assert!(apply(86_401.0).out_of_bounds().is_some());
        assert!(apply(10.5).out_of_bounds().is_some(), "whole seconds");
    }

    /// A client that sends its request a byte at a time, each within the timeout of one read,
    /// is cut off once the whole request's time is spent, long before it would have finished.
    #[test]
    fn a_request_that_trickles_in_is_cut_off_at_its_deadline() {
        let dir = private_tempdir();
        let listener = Listener::bind(dir.path()).unwrap();
        let mut client = UnixStream::connect(dir.path().join(SOCKET)).unwrap();
        let request = serde_json::to_string(&Request::Confirm).unwrap() + "\n";
        let pause = REQUEST_TIMEOUT / 4;
        let trickle = std::thread::spawn(move || {
            for byte in request.bytes() {
                std::thread::sleep(pause);
                if client.write_all(&[byte]).is_err() {
                    return;
                }
            }
        });
        let call = next_call(&listener);
        let error = (call.request.as_ref()).expect_err("a request spread over 4 timeouts");
        assert!(error.starts_with("cannot read the request"), "{error}");
        drop(call);
        trickle.join().unwrap();
    }

    /// A socket in the state directory whose listener does not hold the pid file's lock is not
    /// the daemon's: the command refuses it and sends it nothing.
    #[test]
    fn a_listener_that_does_not_hold_the_pid_files_lock_is_sent_nothing() {
        let dir = private_tempdir();
        std::fs::write(dir.path().join("portknock.pid"), "1\n").unwrap();
        let listener = Listener::bind(dir.path()).unwrap();
        let err = ask(dir.path(), &Request::Remove).unwrap_err();
        assert!(
            matches!(
                err,
                ControlError::NotTheDaemon(NotTheDaemon::NotHolder { .. })
            ),
            "{err}"
        );
        let call = next_call(&listener);
        assert!(call.request.is_err(), "no request crossed");
    }

    #[test]
    fn a_state_directory_others_may_write_to_is_refused() {
        let dir = private_tempdir();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ask(dir.path(), &Request::Remove).unwrap_err();
        assert!(
            matches!(err, ControlError::Dir(DirError::Writable { .. })),
            "{err}"
        );
    }
}
