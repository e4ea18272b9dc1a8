//! Configuration: `portknock.conf`, the simple and the advanced door lists, and their validation.
//!
//! [`load`] reads a configuration directory and returns either a validated [`Config`] with
//! its warnings, or every problem found, each as `FILE:LINE: severity: message`.

mod conf;
mod diagnostic;
mod lists;

use std::borrow::Cow;
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::port::KnockPort;

pub use conf::{Key, KEYS, MAX_DURATION_SECS, MAX_MAX_SOURCES, MAX_OTP_SKEW};
pub use diagnostic::{ConfigError, Diagnostic, Severity};
pub use lists::{random_orders, MAX_SEQUENCE, MIN_RANDOM_ORDERS, MIN_SECRET_LEN};

/// Name of the settings file inside the configuration directory.
pub const CONF_FILE: &str = "portknock.conf";
/// Default name of the simple list inside the configuration directory.
pub const SIMPLE_LIST_FILE: &str = "simple-portknock-list";
/// Default name of the advanced list inside the configuration directory.
pub const ADVANCED_LIST_FILE: &str = "advanced-portknock-list";

/// A simple-mode door: `PROTECTED:K1,K2,...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleDoor {
    /// The TCP port this door protects.
    pub protected: u16,
    /// The knock ports in order; never empty, at most [`MAX_SEQUENCE`].
    pub sequence: Vec<KnockPort>,
}

/// A secret of an advanced door. Its `Debug` never shows the bytes, so a secret cannot reach a
/// log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps the bytes of a secret, used whole as the HMAC key.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    /// The secret's bytes, for the HMAC key only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// An advanced-mode door: `PROTECTED,KNOCKPORT,OPENSECRET,CLOSESECRET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvancedDoor {
    /// The TCP port this door protects.
    pub protected: u16,
    /// The UDP port that receives one-time passwords.
    pub knock_port: u16,
    /// Key of the OTPs that open the door.
    pub open_secret: Secret,
    /// Key of the OTPs that close it again; never equal to the open secret.
    pub close_secret: Secret,
}

/// The switches and tunables of `portknock.conf` (docs/behaviour.md §1.1), defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `FW_PORTKNOCK`: the engine as a whole.
    pub enabled: bool,
    /// `FW_PORTKNOCK_SIMPLE`.
    pub simple: bool,
    /// `FW_PORTKNOCK_ADVANCED`.
    pub advanced: bool,
    /// `FW_PORTKNOCK_SIMPLE_LIST`, already joined to the configuration directory.
    pub simple_list: PathBuf,
    /// `FW_PORTKNOCK_ADVANCED_LIST`, already joined to the configuration directory.
    pub advanced_list: PathBuf,
    /// Most time allowed between two consecutive knocks of a sequence.
    pub knock_timeout: Duration,
    /// How long a completed simple sequence keeps the port open.
    pub simple_open: Duration,
    /// How long an OTP open lasts unless closed first.
    pub advanced_open: Duration,
    /// Minutes either side of the server's minute whose OTPs are accepted.
    pub otp_skew: u32,
    /// Accept knocks over IPv6.
    pub ipv6: bool,
    /// Most sources whose knock progress is tracked at once.
    pub max_sources: usize,
    /// Where state that must survive a restart lives.
    pub state_dir: PathBuf,
    /// `FW_PORTKNOCK_TRUSTED`: sources that pass every protected port without knocking.
    pub trusted: Vec<IpNet>,
    /// `FW_PORTKNOCK_METRICS_FILE`: where the daemon writes its metrics for Prometheus' node
    /// exporter; `None`, the default, writes none.
    pub metrics_file: Option<PathBuf>,
}

impl Settings {
    /// The defaults of docs/behaviour.md §1.1 for a configuration directory `dir`.
    pub fn defaults(dir: &Path) -> Self {
        Settings {
            enabled: false,
            simple: false,
            advanced: false,
            simple_list: dir.join(SIMPLE_LIST_FILE),
            advanced_list: dir.join(ADVANCED_LIST_FILE),
            knock_timeout: Duration::from_secs(10),
            simple_open: Duration::from_secs(30),
            advanced_open: Duration::from_secs(3600),
            otp_skew: 1,
            ipv6: true,
            max_sources: 262_144,
            state_dir: PathBuf::from("/var/lib/portknock"),
            trusted: Vec::new(),
            metrics_file: None,
        }
    }
}

/// A validated configuration: what the daemon enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The configuration directory it was read from.
    pub dir: PathBuf,
    /// The values of `portknock.conf`.
    pub settings: Settings,
    /// Simple doors in list order; empty when simple mode or the engine is off.
    pub simple: Vec<SimpleDoor>,
    /// Advanced doors in list order; empty when advanced mode or the engine is off.
    pub advanced: Vec<AdvancedDoor>,
}

/// A configuration that can be used, with the warnings found on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Problems that are reported but not fatal, in file and line order.
    pub warnings: Vec<Diagnostic>,
}

/// Reads and validates the configuration directory `dir` (docs/behaviour.md §1).
///
/// Every problem of every file is collected before this returns, so one run shows them all.
/// The lists are read only when the engine and their mode are on. Diagnostics come sorted by
/// file (settings, simple list, advanced list) and then by line.
pub fn load(dir: &Path) -> Result<Loaded, ConfigError> {
    let mut diags = Vec::new();
    let conf_path = dir.join(CONF_FILE);
    let settings = match read(&conf_path, MAX_CONF_BYTES) {
        Ok((text, _)) => conf::parse(dir, &conf_path, &text, &mut diags),
        Err(err) => {
            let hint = "create it (see examples/portknock.conf) or choose the directory with \
                        --config-dir or PORTKNOCK_CONFIG_DIR";
            diags.push(unreadable(&conf_path, &err, hint));
            return Err(ConfigError { diagnostics: diags });
        }
    };

    if !settings.enabled {
        diags.extend(idle_doors(&conf_path, &settings));
    }
    let simple_text = if settings.enabled && settings.simple {
        read_list(&settings.simple_list, "simple", "SIMPLE", &mut diags).map(|(text, _)| text)
    } else {
        None
    };
    let advanced_file = &settings.advanced_list;
    let advanced_text = if settings.enabled && settings.advanced {
        read_list(advanced_file, "advanced", "ADVANCED", &mut diags).map(|(text, mode)| {
            if mode & 0o044 != 0 {
                let file = advanced_file.display();
                diags.push(Diagnostic::warning(
                    advanced_file,
                    None,
                    format!(
                        "readable by group or others, but it holds secrets; run chmod 600 {file}"
                    ),
                ));
            }
            text
        })
    } else {
        None
    };
    let (simple, advanced) = parse_both(
        &settings.simple_list,
        simple_text.as_deref(),
        advanced_file,
        advanced_text.as_deref(),
        &mut diags,
    );

    let rank = |d: &Diagnostic| {
        [&conf_path, &simple.file, &advanced.file]
            .iter()
            .position(|f| **f == d.file)
    };
    diags.sort_by_key(|d| (rank(d), d.line));
    if diags.iter().any(Diagnostic::is_error) {
        return Err(ConfigError { diagnostics: diags });
    }
    Ok(Loaded {
        config: Config {
            dir: dir.to_path_buf(),
            settings,
            simple: simple.entries.into_iter().map(|e| e.door).collect(),
            advanced: advanced.entries.into_iter().map(|e| e.door).collect(),
        },
        warnings: diags,
    })
}

/// With the engine off, a word about the doors that the lists of the modes that are on hold:
/// they wait only for `FW_PORTKNOCK="yes"`, which may have been lost. The lists are read to
/// count their doors, not checked; one that cannot be read counts none.
fn idle_doors(conf: &Path, settings: &Settings) -> Option<Diagnostic> {
    type Count = fn(&Path, &str, &mut Vec<Diagnostic>) -> usize;
    let lists: [(&str, bool, &Path, Count); 2] = [
        (
            "simple",
            settings.simple,
            &settings.simple_list,
            |file, text, diags| lists::parse_simple(file, text, diags).len(),
        ),
        (
            "advanced",
            settings.advanced,
            &settings.advanced_list,
            |file, text, diags| lists::parse_advanced(file, text, diags).len(),
        ),
    ];
    let counts: Vec<String> = lists
        .into_iter()
        .filter(|(_, on, _, _)| *on)
        .filter_map(|(mode, _, file, count)| {
            let (text, _) = read(file, MAX_LIST_BYTES).ok()?;
            let doors = count(file, &text, &mut Vec::new());
            (doors > 0).then(|| format!("{mode}: {doors}"))
        })
        .collect();
    (!counts.is_empty()).then(|| {
        Diagnostic::warning(
            conf,
            None,
            format!(
                "FW_PORTKNOCK is not \"yes\", so no port is protected, though the lists of the \
                 modes that are on hold doors ({}); set FW_PORTKNOCK=\"yes\" to enforce them",
                counts.join(", ")
            ),
        )
    })
}

/// The state directory `portknock.conf` of `dir` names, read without the lists, so that it is
/// found even when the rest of the configuration is broken; the default when the file cannot
/// be read.
pub fn state_dir(dir: &Path) -> PathBuf {
    match read(&dir.join(CONF_FILE), MAX_CONF_BYTES) {
        Ok((text, _)) => parse_settings(dir, &text).0.state_dir,
        Err(_) => Settings::defaults(dir).state_dir,
    }
}

/// Parses the text of `portknock.conf` of the configuration directory `dir` as [`load`] does,
/// without reading a file: the settings (a bad value keeps its default) and every problem,
/// sorted as [`load`] sorts them. Public for fuzzing.
pub fn parse_settings(dir: &Path, text: &str) -> (Settings, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let settings = conf::parse(dir, &dir.join(CONF_FILE), text, &mut diags);
    diags.sort_by_key(|d| d.line);
    (settings, diags)
}

/// Checks the texts of the two door lists of the configuration directory `dir` (named by their
/// default file names) as [`load`] does, without reading a file; `None` stands for a mode that
/// is off, whose list is not read. Returns the simple doors, the advanced doors and every
/// problem, sorted as [`load`] sorts them; the doors may be used only when no problem is an
/// error. The permission check of the advanced list needs the file and is not made.
/// Public for fuzzing.
pub fn parse_lists(
    dir: &Path,
    simple_text: Option<&str>,
    advanced_text: Option<&str>,
) -> (Vec<SimpleDoor>, Vec<AdvancedDoor>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let (simple, advanced) = parse_both(
        &dir.join(SIMPLE_LIST_FILE),
        simple_text,
        &dir.join(ADVANCED_LIST_FILE),
        advanced_text,
        &mut diags,
    );
    diags.sort_by_key(|d| (d.file != simple.file, d.line));
    (
        simple.entries.into_iter().map(|e| e.door).collect(),
        advanced.entries.into_iter().map(|e| e.door).collect(),
        diags,
    )
}

/// Parses the texts of the two lists (`None`: that mode is off and its list is not read) and
/// checks their doors against each other: what [`load`] and [`parse_lists`] share.
fn parse_both(
    simple_file: &Path,
    simple_text: Option<&str>,
    advanced_file: &Path,
    advanced_text: Option<&str>,
    diags: &mut Vec<Diagnostic>,
) -> (lists::List<SimpleDoor>, lists::List<AdvancedDoor>) {
    let mut simple = lists::List::new(simple_file);
    let mut advanced = lists::List::new(advanced_file);
    if let Some(text) = simple_text {
        simple.entries = lists::parse_simple(simple_file, text, diags);
    }
    if let Some(text) = advanced_text {
        advanced.entries = lists::parse_advanced(advanced_file, text, diags);
    }
    lists::cross_check(&simple, &advanced, diags);
    (simple, advanced)
}

/// Most bytes read of `portknock.conf`. It may be part of a larger settings file, and those
/// run to tens of kilobytes.
const MAX_CONF_BYTES: u64 = 1 << 20;

/// Most bytes read of a door list. The largest list in canonical form, 65,533 simple doors of
/// 32 knock ports each written as `65534/udp`, is 21.4 MB (20.4 MiB, measured); an advanced
/// list has at most 32,767 doors, which leaves secrets of hundreds of characters.
const MAX_LIST_BYTES: u64 = 32 << 20;

/// Why a configuration file could not be read.
#[derive(Debug)]
enum ReadError {
    Io(io::Error),
    /// Not a regular file: this kind of file.
    NotAFile(&'static str),
    /// Larger than this many bytes.
    TooLarge(u64),
}

/// Reads a regular file of at most `limit` bytes as text, with its permission bits, taken
/// from the same open file so that the mode checked is the mode of the content read.
///
/// No read can block or go on for ever: the file is opened without waiting (a FIFO's open
/// waits for a writer otherwise), its type is checked on the open descriptor before anything
/// is read, and at most `limit` and one bytes are read.
fn read(path: &Path, limit: u64) -> Result<(String, u32), ReadError> {
    let (bytes, mode) = read_bytes(path, limit)?;
    Ok((text(&bytes).into_owned(), mode))
}

/// The bytes of a configuration file as [`load`] reads them, or `None` when they cannot be
/// read; with the same bounds, so that no caller can block on a FIFO or read without end.
pub fn file_bytes(path: &Path) -> Option<Vec<u8>> {
    let limit = if path.file_name() == Some(CONF_FILE.as_ref()) {
        MAX_CONF_BYTES
    } else {
        MAX_LIST_BYTES
    };
    read_bytes(path, limit).ok().map(|(bytes, _)| bytes)
}

/// [`read`], before the bytes are taken as text.
fn read_bytes(path: &Path, limit: u64) -> Result<(Vec<u8>, u32), ReadError> {
    // O_NOCTTY: a terminal named here must not become the daemon's controlling terminal.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Io)?;
    let metadata = file.metadata().map_err(ReadError::Io)?;
    if !metadata.is_file() {
        return Err(ReadError::NotAFile(describe(metadata.mode())));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok((bytes, metadata.mode()))
}

/// What a file that is not a regular file is, for a message, from its `st_mode`.
fn describe(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR => "a character device",
        // Not a regular file, and open(2) refuses a socket (ENXIO): a block device is left.
        _ => "a block device",
    }
}

/// The bytes of a configuration file as the parsers take them: without a leading byte-order
/// mark, and with invalid UTF-8 kept visible as U+FFFD, which every port and secret check
/// rejects. Public for fuzzing, which must read a file as [`load`] does.
pub fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(without_bom(bytes))
}

/// The UTF-8 byte-order mark. Windows editors write one at the start of a text file; it is no
/// part of the first line (docs/behaviour.md §1), where it would hide the first key or port.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// `bytes` without a leading [`BOM`].
pub fn without_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(BOM).unwrap_or(bytes)
}

/// Reads the list of an enabled mode; a missing or unreadable list is an error.
fn read_list(
    path: &Path,
    mode: &str,
    key: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<(String, u32)> {
    read(path, MAX_LIST_BYTES)
        .map_err(|err| {
            let hint = format!(
                "{mode} mode is on (FW_PORTKNOCK_{key}=yes); create the list or set \
                 FW_PORTKNOCK_{key}=no"
            );
            diags.push(unreadable(path, &err, &hint));
        })
        .ok()
}

/// The diagnostic for a file that could not be read, with what to do about it.
fn unreadable(path: &Path, err: &ReadError, not_found_hint: &str) -> Diagnostic {
    let message = match err {
        ReadError::Io(err) => match err.kind() {
            io::ErrorKind::NotFound => format!("not found; {not_found_hint}"),
            io::ErrorKind::PermissionDenied => {
                "cannot read it: permission denied; run as root or make it readable".to_string()
            }
            _ => format!("cannot read it: {err}"),
        },
        ReadError::NotAFile(kind) => format!(
            "is {kind}, not a regular file; a FIFO can block a read and a device never end it, \
             so only regular files are read: put the configuration in one"
        ),
        ReadError::TooLarge(limit) => format!(
            "is larger than {} MiB, more than any configuration needs; is it the right file?",
            limit >> 20
        ),
    };
    Diagnostic::error(path, None, message)
}

#[cfg(test)]
mod tests;
