//! The state directory (`FW_PORTKNOCK_STATE_DIR`): where the daemon keeps what must outlive
//! it, the used-OTP record and its pid file.
//!
//! Whoever may write into that directory could put a symbolic link where the daemon writes as
//! root (and have it truncate the link's target), or a pid of their choosing where `apply`
//! looks for the daemon to signal. So the directory is refused unless it belongs to the user
//! portknock runs as and neither group nor others may write to it, and every file in it is
//! opened relative to the directory that was checked (a rename of the path afterwards changes
//! nothing) and never through a symbolic link.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

/// Why the state directory was refused.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot create the state directory {}: {error}", path.display())]
    Create { path: PathBuf, error: io::Error },
    #[error("cannot open the state directory {}: {error}", path.display())]
    Open { path: PathBuf, error: io::Error },
    #[error(
        "the state directory {} belongs to uid {owner}, not to uid {uid} that portknock runs \
         as, so that user could plant files where portknock writes; run chown {uid} {} (or \
         set FW_PORTKNOCK_STATE_DIR to a directory of this user's own)",
        path.display(),
        path.display()
    )]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "the state directory {} may be written to by group or others (mode {mode:o}), so \
         they could plant files where portknock writes; run chmod go-w {}",
        path.display(),
        path.display()
    )]
    Writable { path: PathBuf, mode: u32 },
}

/// How a file of the state directory is opened; never through a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// For reading.
    Read,
    /// For reading and writing, created (mode 0600) when missing.
    ReadWrite,
    /// For appending, created (mode 0600) when missing.
    Append,
    /// For writing, a new file (mode 0600): an existing name fails.
    New,
}

/// A state directory that was opened and passed the checks.
#[derive(Debug)]
pub struct StateDir {
    dir: File,
    path: PathBuf,
}

impl StateDir {
    /// Opens the state directory `path`, created with mode 0700 (its missing parents too)
    /// when missing, and checks it.
    pub fn create(path: &Path) -> Result<StateDir, DirError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|error| DirError::Create {
                path: path.to_path_buf(),
                error,
            })?;
        Self::open_checked(path)
    }

    /// Opens the state directory `path` and checks it; `None` when there is none.
    pub fn existing(path: &Path) -> Result<Option<StateDir>, DirError> {
        match Self::open_checked(path) {
            Err(DirError::Open { error, .. }) if error.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    /// Opens `path` as a directory and checks the directory opened, not the path, which
    /// could be renamed in between.
    fn open_checked(path: &Path) -> Result<StateDir, DirError> {
        let open_error = |error| DirError::Open {
            path: path.to_path_buf(),
            error,
        };
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(path)
            .map_err(open_error)?;
        let metadata = dir.metadata().map_err(open_error)?;
        check(
            path,
            metadata.uid(),
            metadata.mode(),
            rustix::process::geteuid().as_raw(),
        )?;
        Ok(StateDir {
            dir,
            path: path.to_path_buf(),
        })
    }

    /// The directory's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file `name` of the directory. A symbolic link is refused, with an error
    /// that says so.
    pub fn open(&self, name: &str, access: Access) -> io::Result<File> {
        let flags = match access {
            Access::Read => OFlags::RDONLY,
            Access::ReadWrite => OFlags::RDWR | OFlags::CREATE,
            Access::Append => OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE,
            Access::New => OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
        };
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
        match rustix::fs::openat(&self.dir, name, flags, Mode::RUSR | Mode::WUSR) {
            Ok(fd) => Ok(File::from(fd)),
            Err(rustix::io::Errno::LOOP) => Err(io::Error::other(
                "it is a symbolic link, which portknock never follows in its state directory; \
                 remove it",
            )),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Removes the file `name`, if there is one; a symbolic link is removed, not its target.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.dir, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Renames `from` to `to` within the directory, replacing `to` atomically.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.dir, from, &self.dir, to)?)
    }

    /// Flushes the directory's entries (a rename, a new file) to the disk.
    pub fn sync(&self) -> io::Result<()> {
        self.dir.sync_all()
    }
}

/// The checks of a state directory at `path` owned by `owner` with `st_mode` `mode`, for a
/// process of effective uid `uid`.
fn check(path: &Path, owner: u32, mode: u32, uid: u32) -> Result<(), DirError> {
    if owner != uid {
        return Err(DirError::NotOwned {
            path: path.to_path_buf(),
            owner,
            uid,
        });
    }
    if mode & 0o022 != 0 {
        return Err(DirError::Writable {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// A private temporary directory (0700, whatever the umask), for the tests of what keeps
/// files in a state directory.
#[cfg(test)]
pub(crate) fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .expect("a private temporary directory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_directory_of_this_user_closed_to_group_and_others_is_accepted() {
        let p = Path::new("/var/lib/portknock");
        assert!(check(p, 0, 0o40700, 0).is_ok());
        assert!(check(p, 0, 0o40755, 0).is_ok(), "others may look");
        assert!(check(p, 1000, 0o40700, 1000).is_ok());
        assert_eq!(
            check(p, 65534, 0o40700, 0).unwrap_err().to_string(),
            "the state directory /var/lib/portknock belongs to uid 65534, not to uid 0 that \
             portknock runs as, so that user could plant files where portknock writes; run \
             chown 0 /var/lib/portknock (or set FW_PORTKNOCK_STATE_DIR to a directory of this \
             user's own)"
        );
        for mode in [0o40720, 0o40702, 0o41777] {
            assert!(matches!(
                check(p, 0, mode, 0),
                Err(DirError::Writable { .. })
            ));
        }
        assert_eq!(
            check(p, 0, 0o41777, 0).unwrap_err().to_string(),
            "the state directory /var/lib/portknock may be written to by group or others \
             (mode 1777), so they could plant files where portknock writes; run chmod go-w \
             /var/lib/portknock"
        );
    }

    #[test]
    fn a_missing_directory_is_created_private_and_an_existing_one_checked() {
        let parent = private_tempdir();
        let path = parent.path().join("a/state");
        assert!(StateDir::existing(&path).unwrap().is_none());
        let dir = StateDir::create(&path).unwrap();
        assert_eq!(dir.path(), path);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            (mode(&path), mode(&parent.path().join("a"))),
            (0o700, 0o700)
        );
        assert!(StateDir::existing(&path).unwrap().is_some());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            StateDir::create(&path),
            Err(DirError::Writable { .. })
        ));
        assert!(matches!(
            StateDir::existing(&path),
            Err(DirError::Writable { .. })
        ));
        let file = parent.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(matches!(
            StateDir::existing(&file),
            Err(DirError::Open { .. })
        ));
        assert!(matches!(
            StateDir::create(&file),
            Err(DirError::Create { .. })
        ));
    }

    #[test]
    fn files_are_never_opened_through_a_symbolic_link() {
        let dir = private_tempdir();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("link")).unwrap();
        let state = StateDir::create(dir.path()).unwrap();
        for access in [Access::Read, Access::ReadWrite, Access::Append] {
            let err = state.open("link", access).unwrap_err();
            assert!(
                err.to_string().contains("symbolic link"),
                "{access:?}: {err}"
            );
        }
        assert_eq!(
            state.open("link", Access::New).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        state.remove("link").unwrap();
        state.remove("link").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn new_files_are_private_and_a_rename_replaces() {
        use std::io::{Read, Write};
        let dir = private_tempdir();
        let state = StateDir::create(dir.path()).unwrap();
        state
            .open("a", Access::New)
            .unwrap()
            .write_all(b"1")
            .unwrap();
        state
            .open("b", Access::Append)
            .unwrap()
            .write_all(b"2")
            .unwrap();
        state
            .open("b", Access::Append)
            .unwrap()
            .write_all(b"3")
            .unwrap();
        state
            .open("c", Access::ReadWrite)
            .unwrap()
            .write_all(b"4")
            .unwrap();
        for name in ["a", "b", "c"] {
            let mode = fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        state.rename("a", "b").unwrap();
        state.sync().unwrap();
        let mut text = String::new();
        state
            .open("b", Access::Read)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "1");
        assert!(state.open("a", Access::Read).is_err());
        assert!(state
            .open("c", Access::Read)
            .unwrap()
            .write_all(b"5")
            .is_err());
    }
}
