//! A configuration on trial (`apply --confirm-within`): what the daemon keeps in its state
//! directory so that `status` can show the trial, and so that a configuration rolled back for
//! want of confirmation stays rolled back across a reload or a restart:
//!
//! - `pending-confirmation`: the deadline of the trial under way and the fingerprint of its
//!   files, so that a daemon restarted during the trial takes it over (or rolls back at once,
//!   when the deadline passed while it was stopped);
//! - `confirmed/`: a copy of the configuration in force for good before the trial, written when
//!   the trial starts, as a configuration directory `config::load` reads (the daemon holds
//!   its files' text in memory until then, so that nothing is written outside a trial);
//! - `rejected`: the fingerprint of the files of a configuration that was rolled back for want
//!   of confirmation. While the files are unchanged, a reload refuses them and a starting
//!   daemon runs on `confirmed/` instead; an explicit `apply` of them clears it.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{self, Config, ConfigError, ADVANCED_LIST_FILE, CONF_FILE, SIMPLE_LIST_FILE};

/// Name of the file in the state directory that says a confirmation is awaited.
const PENDING: &str = "pending-confirmation";

/// A confirmation the daemon waits for, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// When the daemon rolls back unless confirmed, in seconds since the Unix epoch.
    pub deadline: u64,
    /// The fingerprint of the files on trial ([`Texts::fingerprint`]).
    pub fingerprint: String,
}

/// The confirmation the daemon of `state_dir` waits for, if any.
pub fn pending(state_dir: &Path) -> Option<Pending> {
    let text = fs::read_to_string(state_dir.join(PENDING)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Says that the daemon waits for a confirmation, or (`None`) no longer does.
pub fn set_pending(state_dir: &Path, pending: Option<Pending>) -> io::Result<()> {
    let path = state_dir.join(PENDING);
    match pending {
        Some(p) => fs::write(path, serde_json::to_string(&p).map_err(io::Error::other)?),
        None => gone(fs::remove_file(path)),
    }
}

/// The result of removing something that should no longer exist: already missing is as good.
fn gone(removal: io::Result<()>) -> io::Result<()> {
    match removal {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

const CONFIRMED: &str = "confirmed";
const REJECTED: &str = "rejected";

/// What the files of a configuration hold: `portknock.conf` and the two lists, a missing
/// file as empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Texts([Vec<u8>; 3]);

/// The texts of the files `config` is read from, as they are now; empty when unreadable, and
/// read within the configuration's bounds (a FIFO put in a list's place cannot block).
pub fn texts(config: &Config) -> Texts {
    Texts(sources(config).map(|path| config::file_bytes(&path).unwrap_or_default()))
}

impl Texts {
    /// A fingerprint of the three texts.
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        for text in &self.0 {
            hash.update((text.len() as u64).to_le_bytes());
            hash.update(text);
        }
        hex::encode(hash.finalize())
    }
}

/// The files a configuration is read from.
fn sources(config: &Config) -> [PathBuf; 3] {
    [
        config.dir.join(CONF_FILE),
        config.settings.simple_list.clone(),
        config.settings.advanced_list.clone(),
    ]
}

/// Writes `texts` into `state_dir/confirmed/`, replacing the copy there; the lists go under
/// their default names, which the copied `portknock.conf` is made to name, so that the copy
/// reads the same wherever the lists were.
pub fn keep_confirmed(state_dir: &Path, texts: &Texts) -> io::Result<()> {
    let fresh = state_dir.join(format!("{CONFIRMED}.new"));
    let _ = fs::remove_dir_all(&fresh);
    fs::create_dir(&fresh)?;
    fs::set_permissions(&fresh, fs::Permissions::from_mode(0o700))?;
    let [conf, simple, advanced] = &texts.0;
    let mut conf = conf.clone();
    conf.extend_from_slice(
        format!(
            "\n# Added by portknock: this copy's lists are beside it.\n\
             FW_PORTKNOCK_SIMPLE_LIST=\"{SIMPLE_LIST_FILE}\"\n\
             FW_PORTKNOCK_ADVANCED_LIST=\"{ADVANCED_LIST_FILE}\"\n"
        )
        .as_bytes(),
    );
    fs::write(fresh.join(CONF_FILE), conf)?;
    for (text, name) in [(simple, SIMPLE_LIST_FILE), (advanced, ADVANCED_LIST_FILE)] {
        let to = fresh.join(name);
        fs::write(&to, text)?;
        fs::set_permissions(&to, fs::Permissions::from_mode(0o600))?;
    }
    forget_confirmed(state_dir)?;
    fs::rename(&fresh, state_dir.join(CONFIRMED))
}

/// Removes the confirmed copy: no trial needs it any more.
pub fn forget_confirmed(state_dir: &Path) -> io::Result<()> {
    gone(fs::remove_dir_all(state_dir.join(CONFIRMED)))
}

/// The configuration directory of the last confirmed configuration.
fn confirmed_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(CONFIRMED)
}

/// Which configuration a daemon starting on `config`'s files enforces.
#[derive(Debug)]
pub enum InForce {
    /// The files' own.
    Files(Config),
    /// The files hold the configuration that was rolled back: the last confirmed one.
    Confirmed(Config),
    /// The files hold the configuration that was rolled back, or whose trial ran out while no
    /// daemon ran, but the last confirmed one cannot be read: the files', and why.
    Unreadable(Config, ConfigError),
    /// The files are on trial (a daemon stopped during it), `left` seconds before the deadline:
    /// the files' configuration, on trial again, and the one that comes back.
    OnTrial {
        files: Config,
        previous: Box<Config>,
        left: u64,
    },
    /// The files were on trial, and the deadline passed while no daemon ran: the last
    /// confirmed one, and the fingerprint of the files to refuse from now on.
    RanOut {
        confirmed: Config,
        fingerprint: String,
    },
}

/// What a daemon starting on `config`'s files at `now` (seconds since the Unix epoch)
/// enforces: not a configuration that was rolled back for want of confirmation, while the
/// files hold it unchanged, and not one whose trial ran out while no daemon ran.
pub fn in_force(config: Config, now: u64) -> InForce {
    let state_dir = &config.settings.state_dir;
    let fingerprint = texts(&config).fingerprint();
    let trial = pending(state_dir).filter(|p| p.fingerprint == fingerprint);
    if trial.is_none() && rejected(state_dir).as_deref() != Some(&fingerprint) {
        return InForce::Files(config);
    }
    let confirmed = match config::load(&confirmed_dir(state_dir)) {
        Ok(confirmed) => confirmed.config,
        Err(e) => return InForce::Unreadable(config, e),
    };
    match trial {
        Some(p) if p.deadline > now => InForce::OnTrial {
            files: config,
            previous: Box::new(confirmed),
            left: p.deadline - now,
        },
        Some(_) => InForce::RanOut {
            confirmed,
            fingerprint,
        },
        None => InForce::Confirmed(confirmed),
    }
}

/// The fingerprint of the configuration rolled back, if one was and is still refused.
pub fn rejected(state_dir: &Path) -> Option<String> {
    fs::read_to_string(state_dir.join(REJECTED))
        .ok()
        .map(|t| t.trim().to_string())
}

/// Remembers that the configuration of `fingerprint` was rolled back.
pub fn reject(state_dir: &Path, fingerprint: &str) -> io::Result<()> {
    fs::write(state_dir.join(REJECTED), format!("{fingerprint}\n"))
}

/// Forgets the rolled-back configuration: an explicit `apply` of it.
pub fn clear_rejected(state_dir: &Path) -> io::Result<()> {
    gone(fs::remove_file(state_dir.join(REJECTED)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confirmed_copy_reads_as_the_configuration_and_fingerprints_tell_files_apart() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        let elsewhere = dir.path().join("lists");
        fs::create_dir_all(&etc).unwrap();
        fs::create_dir_all(&elsewhere).unwrap();
        let simple = elsewhere.join("simple");
        fs::write(
            etc.join(CONF_FILE),
            format!(
                "FW_PORTKNOCK=yes\nFW_PORTKNOCK_SIMPLE=yes\nFW_PORTKNOCK_SIMPLE_LIST={}\n",
                simple.display()
            ),
        )
        .unwrap();
        fs::write(&simple, "22:7000,9000,8000\n").unwrap();
        let loaded = config::load(&etc).unwrap();
        let state = dir.path().join("state");
        fs::create_dir_all(&state).unwrap();
        let before = texts(&loaded.config);
        keep_confirmed(&state, &before).unwrap();
        let copy = config::load(&confirmed_dir(&state)).unwrap();
        assert_eq!(copy.config.simple, loaded.config.simple);
        let copied_list = confirmed_dir(&state).join(SIMPLE_LIST_FILE);
        assert_eq!(copy.config.settings.simple_list, copied_list);
        // Changed files are told apart, and a newer copy replaces the old.
        fs::write(&simple, "22:7000,9000,6000\n").unwrap();
        let changed = config::load(&etc).unwrap();
        let after = texts(&changed.config);
        assert_ne!(before.fingerprint(), after.fingerprint());
        assert_eq!(before.fingerprint(), before.clone().fingerprint());
        keep_confirmed(&state, &after).unwrap();
        let copy = config::load(&confirmed_dir(&state)).unwrap();
        assert_eq!(copy.config.simple, changed.config.simple);
        forget_confirmed(&state).unwrap();
        forget_confirmed(&state).unwrap();
        assert!(!confirmed_dir(&state).exists());

        assert_eq!(rejected(&state), None);
        reject(&state, &after.fingerprint()).unwrap();
        assert_eq!(rejected(&state), Some(after.fingerprint()));
        clear_rejected(&state).unwrap();
        clear_rejected(&state).unwrap();
        assert_eq!(rejected(&state), None);
    }

    /// Forgetting what is not there succeeds; any other failure to forget is reported, since
    /// a trial or a rejection left behind would decide the next start.
    #[test]
    fn forgetting_what_is_missing_succeeds_and_other_failures_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        set_pending(dir.path(), None).unwrap();
        forget_confirmed(dir.path()).unwrap();
        clear_rejected(dir.path()).unwrap();
        let not_a_dir = dir.path().join("file");
        fs::write(&not_a_dir, "").unwrap();
        assert!(set_pending(&not_a_dir, None).is_err());
        assert!(forget_confirmed(&not_a_dir).is_err());
        assert!(clear_rejected(&not_a_dir).is_err());
    }

    /// The daemon reads the texts after loading the configuration: a FIFO put in a list's place
    /// meanwhile reads as nothing, without blocking it.
    #[test]
    fn a_fifo_in_a_files_place_reads_as_empty_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(CONF_FILE),
            "FW_PORTKNOCK=yes\nFW_PORTKNOCK_SIMPLE=yes\n",
        )
        .unwrap();
        let list = dir.path().join(SIMPLE_LIST_FILE);
        fs::write(&list, "22:41873,17219,29002\n").unwrap();
        let loaded = config::load(dir.path()).unwrap();
        fs::remove_file(&list).unwrap();
        let made = std::process::Command::new("mkfifo").arg(&list).status();
        assert!(made.expect("mkfifo").success());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(texts(&loaded.config)));
        let read = (rx.recv_timeout(std::time::Duration::from_secs(10))).expect("blocked for 10 s");
        assert!(read.0[1].is_empty(), "the FIFO");
        assert!(!read.0[0].is_empty(), "portknock.conf");
    }

    #[test]
    fn a_start_takes_over_a_trial_of_the_same_files_or_rolls_it_back_when_it_ran_out() {
        let dir = tempfile::tempdir().unwrap();
        let (etc, state) = (dir.path().join("etc"), dir.path().join("state"));
        fs::create_dir_all(&etc).unwrap();
        fs::create_dir_all(&state).unwrap();
        let write = |sequence: &str| {
            fs::write(
                etc.join(CONF_FILE),
                format!(
                    "FW_PORTKNOCK=yes\nFW_PORTKNOCK_SIMPLE=yes\nFW_PORTKNOCK_STATE_DIR={}\n",
                    state.display()
                ),
            )
            .unwrap();
            fs::write(etc.join(SIMPLE_LIST_FILE), format!("22:{sequence}\n")).unwrap();
            config::load(&etc).unwrap().config
        };
        let old = write("7000,9000,8000");
        keep_confirmed(&state, &texts(&old)).unwrap();
        let new = write("7000,9000,6000");
        let sequence = |c: &Config| c.simple[0].sequence.clone();
        let on_trial = |deadline| {
            let fingerprint = texts(&new).fingerprint();
            set_pending(
                &state,
                Some(Pending {
                    deadline,
                    fingerprint,
                }),
            )
            .unwrap();
        };

        assert!(matches!(in_force(new.clone(), 100), InForce::Files(c) if c == new));
        on_trial(130);
        let InForce::OnTrial {
            files,
            previous,
            left,
        } = in_force(new.clone(), 100)
        else {
            panic!("a trial of these files is taken over");
        };
        assert_eq!(
            (files, sequence(&previous), left),
            (new.clone(), sequence(&old), 30)
        );
        let InForce::RanOut {
            confirmed,
            fingerprint,
        } = in_force(new.clone(), 130)
        else {
            panic!("a trial whose deadline passed is rolled back");
        };
        assert_eq!(
            (sequence(&confirmed), fingerprint),
            (sequence(&old), texts(&new).fingerprint())
        );
        // Files changed since the trial began are not the ones on trial.
        let newer = write("7000,9000,5000");
        assert!(matches!(in_force(newer.clone(), 100), InForce::Files(c) if c == newer));
        // Without the copy of the last confirmed configuration, the files are all there is.
        let new = write("7000,9000,6000");
        forget_confirmed(&state).unwrap();
        assert!(matches!(in_force(new.clone(), 100), InForce::Unreadable(c, _) if c == new));
        set_pending(&state, None).unwrap();
        assert!(matches!(in_force(new.clone(), 100), InForce::Files(_)));
    }
}
