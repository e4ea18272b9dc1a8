//! Configuration: `portknock.conf`, the simple and the advanced door lists, and their validation.
//!
//! [`load`] reads a configuration directory and returns either a validated [`Config`] with
//! its warnings, or every problem found, each as `FILE:LINE: severity: message`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Transport protocol of a knock port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One port of a simple-mode sequence, or the UDP port of an advanced door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KnockPort {
    pub proto: Proto,
    pub port: u16,
}

/// A simple-mode door: `PROTECTED:K1,K2,...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleDoor {
    /// The TCP port this door protects.
    pub protected: u16,
    /// The knock ports in order; never empty, at most 32.
    pub sequence: Vec<KnockPort>,
}

/// A secret of an advanced door. Its `Debug` never shows the bytes, so a secret cannot reach a
/// log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
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
    pub open_secret: Secret,
    pub close_secret: Secret,
}

/// The switches and tunables of `portknock.conf` (SPEC §1.1), defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `FW_PORTKNOCK`: the engine as a whole.
    pub enabled: bool,
    /// `FW_PORTKNOCK_SIMPLE`.
    pub simple: bool,
    /// `FW_PORTKNOCK_ADVANCED`.
    pub advanced: bool,
    pub simple_list: PathBuf,
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
}

/// A validated configuration: what the daemon enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The configuration directory it was read from.
    pub dir: PathBuf,
    pub settings: Settings,
    /// Simple doors; empty when simple mode or the engine is off.
    pub simple: Vec<SimpleDoor>,
    /// Advanced doors; empty when advanced mode or the engine is off.
    pub advanced: Vec<AdvancedDoor>,
}
