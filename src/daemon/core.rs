//! The daemon's decisions, without I/O: what one knock packet does to the kernel's sets and to
//! the log. The shell (`daemon::serve`) reads packets, hands each to [`Core::knock`] with the
//! time and the minute, records OTPs through [`Record`], commits the [`Changes`] and logs the
//! [`Event`]s. Everything the daemon promises about knocks is decided here, and each promise
//! has a unit test below.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

use super::keeper::Keeper;
use crate::capture::Packet;
use crate::config::Config;
use crate::engine::{DoorId, Engine, Outcome};
use crate::firewall::Changes;
use crate::otp::{self, Record, Recorded, Refused};
use crate::port::Proto;

/// Most lines per second about knocks that open nothing (wrong sequences, bad OTPs, replays,
/// NFLOG overruns). Grants and closes are always logged.
pub const JUNK_LINES_PER_SECOND: u32 = 20;

/// What the daemon logs. No event carries a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A simple sequence was completed: the door is granted to the source.
    Opened { source: IpAddr, door: u16 },
    /// A knock port of the door out of order threw the source's progress away.
    WrongSequence { source: IpAddr, door: u16 },
    /// The source's progress outlived the knock timeout.
    Expired { source: IpAddr, door: u16 },
    /// The source knocked on many ports outside every door while it had progress: a scan.
    Scanned { source: IpAddr },
    /// A datagram to an OTP knock port that is no one-time password.
    NotAnOtp { source: IpAddr, port: u16 },
    /// A one-time password that was used before.
    Replay { source: IpAddr, port: u16 },
    /// A one-time password that neither secret of the door made for this source and minute.
    BadOtp { source: IpAddr, door: u16 },
    /// A valid one-time password the used-OTP record cannot vouch for.
    OtpRefused {
        source: IpAddr,
        door: u16,
        why: Refused,
    },
    /// A valid one-time password that could not be recorded as used, so it granted nothing.
    NotRecorded {
        source: IpAddr,
        door: u16,
        error: String,
    },
    /// The kernel dropped knocks: the NFLOG buffer overflowed, `overruns` times so far.
    Overrun { overruns: u64 },
    /// Lines about junk held back by the budget in the second that just ended.
    HeldBack { held: u64 },
}

/// A valid one-time password, recorded as used: its change goes to the kernel at once, in a
/// transaction of its own, so that what the kernel answers is its own; then it is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub source: IpAddr,
    /// The protected port.
    pub door: u16,
    /// An open (grant), or else a close (revoke).
    pub open: bool,
    /// The grant or the revoke.
    pub changes: Changes,
}

/// What the knocks of one read decided, for the shell to carry out.
#[derive(Debug, Default)]
pub struct Effects {
    /// Set changes to commit once the read is handled.
    pub changes: Changes,
    /// Lines to log, in order.
    pub events: Vec<Event>,
}

/// The daemon's knock handling: the configuration in force and what derives from its doors.
pub struct Core {
    config: Config,
    doors: Doors,
    lines: LineBudget,
    overruns: u64,
    keeper: Keeper,
}

/// What the core derives from the doors of the configuration in force.
struct Doors {
    /// The knock state of simple doors.
    engine: Engine,
    /// The door armed in the kernel for each source, at most as many as the engine tracks;
    /// sparse, like the engine's table, so that memory grows with use.
    kernel_armed: LruCache<IpAddr, DoorId>,
    /// Advanced doors by knock port (the configuration allows one door per port).
    by_otp_port: HashMap<u16, usize>,
}

impl Doors {
    fn new(config: &Config) -> Doors {
        let sequences: Vec<_> = config.simple.iter().map(|d| d.sequence.clone()).collect();
        let max_sources = config.settings.max_sources;
        Doors {
            engine: Engine::new(&sequences, config.settings.knock_timeout, max_sources),
            kernel_armed: LruCache::sparse(
                NonZeroUsize::new(max_sources).unwrap_or(NonZeroUsize::MIN),
            ),
            by_otp_port: (config.advanced.iter().enumerate())
                .map(|(i, d)| (d.knock_port, i))
                .collect(),
        }
    }
}

impl Core {
    /// The core for `config`, at `now`, of the daemon whose process is `pid`.
    pub fn new(config: Config, now: Instant, pid: u32) -> Core {
        Core {
            doors: Doors::new(&config),
            config,
            lines: LineBudget::new(JUNK_LINES_PER_SECOND, now),
            overruns: 0,
            keeper: Keeper::new(pid),
        }
    }

    /// What keeps the table in force, and knows the grants to put back.
    pub fn keeper(&mut self) -> &mut Keeper {
        &mut self.keeper
    }

    /// Takes `config` in force. Knock progress starts over, which costs a client in the middle
    /// of a sequence one more try; grants live in the kernel and stay.
    pub fn reload(&mut self, config: Config) {
        self.doors = Doors::new(&config);
        self.config = config;
    }

    /// Forgets which doors are armed in the kernel, when a failed commit leaves it unknown;
    /// the next installation of the policy empties the kernel's fast path to agree.
    pub fn forget_armed(&mut self) {
        self.doors.kernel_armed.clear();
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Decides what `packet`, read at `now` during the Unix minute `minute`, does. Set changes
    /// and log lines go into `effects`; a valid one-time password, recorded as used in
    /// `record` first, is returned for the shell to put in force at once.
    pub fn knock(
        &mut self,
        packet: &Packet,
        now: Instant,
        minute: u32,
        record: &mut impl Record,
        effects: &mut Effects,
    ) -> Option<Accepted> {
        if packet.source.is_ipv6() && !self.config.settings.ipv6 {
            return None;
        }
        let otp_door = match packet.knock.proto {
            Proto::Udp => self.doors.by_otp_port.get(&packet.knock.port).copied(),
            Proto::Tcp => None,
        };
        match otp_door {
            Some(door) => self.otp(packet, door, now, minute, record, effects),
            None => {
                self.simple(packet, now, effects);
                None
            }
        }
    }

    /// The kernel dropped knocks (an NFLOG overrun) at `now`.
    pub fn overrun(&mut self, now: Instant, effects: &mut Effects) {
        self.overruns += 1;
        let event = Event::Overrun {
            overruns: self.overruns,
        };
        self.junk(event, now, effects);
    }

    /// Logs `event`, a line about something that opens nothing, if the budget allows.
    fn junk(&mut self, event: Event, now: Instant, effects: &mut Effects) {
        let (allowed, held) = self.lines.allow(now);
        if let Some(held) = held {
            effects.events.push(Event::HeldBack { held });
        }
        if allowed {
            effects.events.push(event);
        }
    }

    fn simple(&mut self, packet: &Packet, now: Instant, effects: &mut Effects) {
        let source = packet.source;
        let settings = &self.config.settings;
        let (timeout, open_for) = (settings.knock_timeout, settings.simple_open);
        let mut scanned = false;
        for outcome in self.doors.engine.knock(source, packet.knock, now) {
            match outcome {
                Outcome::Armed { door, final_knock } => {
                    // One armed door per source in the kernel (see firewall::ruleset): the
                    // latest. An earlier one, or one pushed out of the bounded table, is
                    // disarmed, and the daemon alone grants it if its final knock comes.
                    if let Some((other, old)) = self.doors.kernel_armed.push(source, door) {
                        if other != source || old != door {
                            self.disarm(other, old, effects);
                        }
                    }
                    let protected = self.config.simple[door].protected;
                    effects.changes.arm(source, final_knock, protected, timeout);
                }
                Outcome::Opened { door } => {
                    let door = self.config.simple[door].protected;
                    // The kernel let the client through already when the door was armed in
                    // time; this is the grant that lasts, and it covers a final knock that beat
                    // the arming and the doors the kernel does not hold.
                    effects.changes.grant(source, door, open_for);
                    self.keeper.granted(source, door, now, open_for);
                    effects.events.push(Event::Opened { source, door });
                }
                Outcome::Reset { door, .. } => {
                    let door = self.config.simple[door].protected;
                    self.junk(Event::WrongSequence { source, door }, now, effects);
                }
                Outcome::Expired { door, .. } => {
                    let door = self.config.simple[door].protected;
                    self.junk(Event::Expired { source, door }, now, effects);
                }
                Outcome::Scanned { .. } => scanned = true,
                Outcome::Progress { .. } | Outcome::Retransmit { .. } => {}
            }
        }
        if scanned {
            self.junk(Event::Scanned { source }, now, effects);
        }
        // Whatever ended the armed door's progress (it opened, reset or expired, or the engine
        // let it go for its bounds), the kernel's arming ends with it.
        if let Some(&door) = self.doors.kernel_armed.peek(&source) {
            if !self.doors.engine.is_armed(source, door, now) {
                self.doors.kernel_armed.pop(&source);
                self.disarm(source, door, effects);
            }
        }
    }

    fn disarm(&self, source: IpAddr, door: DoorId, effects: &mut Effects) {
        let d = &self.config.simple[door];
        if let Some(&final_knock) = d.sequence.last() {
            effects.changes.disarm(source, final_knock, d.protected);
        }
    }

    /// An OTP datagram to the knock port of advanced door `door`. Nothing changes before the
    /// OTP is known to be new, valid, and recorded as used.
    fn otp(
        &mut self,
        packet: &Packet,
        door: usize,
        now: Instant,
        minute: u32,
        record: &mut impl Record,
        effects: &mut Effects,
    ) -> Option<Accepted> {
        let source = packet.source;
        let port = packet.knock.port;
        let Some(mac) = otp::parse_payload(&packet.payload) else {
            self.junk(Event::NotAnOtp { source, port }, now, effects);
            return None;
        };
        // Before verifying: a copy sent from another address would just fail to verify, and
        // must be reported as the replay it is.
        if record.is_used(&mac) {
            self.junk(Event::Replay { source, port }, now, effects);
            return None;
        }
        let skew = self.config.settings.otp_skew;
        let d = &self.config.advanced[door];
        let (door, open_for) = (d.protected, self.config.settings.advanced_open);
        let (open, made) = match (
            otp::verify(&d.open_secret, source, &mac, minute, skew),
            otp::verify(&d.close_secret, source, &mac, minute, skew),
        ) {
            (Some(m), _) => (true, m),
            (None, Some(m)) => (false, m),
            (None, None) => {
                self.junk(Event::BadOtp { source, door }, now, effects);
                return None;
            }
        };
        match record.record(mac, made, minute, skew) {
            Ok(Recorded::New) => {}
            Ok(Recorded::Refused(why)) => {
                self.junk(Event::OtpRefused { source, door, why }, now, effects);
                return None;
            }
            Err(e) => {
                let error = e.to_string();
                let event = Event::NotRecorded {
                    source,
                    door,
                    error,
                };
                effects.events.push(event);
                return None;
            }
        }
        let mut changes = Changes::new();
        if open {
            changes.grant(source, door, open_for);
            self.keeper.granted(source, door, now, open_for);
        } else {
            changes.revoke(source, door);
            self.keeper.revoked(source, door);
        }
        Some(Accepted {
            source,
            door,
            open,
            changes,
        })
    }
}

/// A per-second budget of log lines: junk costs an attacker nothing to send, and one line per
/// junk packet would flood the journal and cost the daemon more than the packet itself.
#[derive(Debug)]
struct LineBudget {
    per_second: u32,
    window: Instant,
    used: u32,
    held: u64,
}

impl LineBudget {
    fn new(per_second: u32, now: Instant) -> LineBudget {
        LineBudget {
            per_second,
            window: now,
            used: 0,
            held: 0,
        }
    }

    /// Whether one more line may be written at `now`, and, at the first call in a new second,
    /// how many lines the last one held back, if any.
    fn allow(&mut self, now: Instant) -> (bool, Option<u64>) {
        let mut held = None;
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            held = Some(self.held).filter(|&n| n > 0);
            *self = LineBudget::new(self.per_second, now);
        }
        let allowed = self.used < self.per_second;
        if allowed {
            self.used += 1;
        } else {
            self.held += 1;
        }
        (allowed, held)
    }
}

#[cfg(test)]
mod tests;
