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
use crate::config::{Config, MAX_OTP_SKEW};
use crate::engine::{DoorId, Engine, Outcome};
use crate::firewall::Changes;
use crate::metrics::{self, By, Counters, Lines, Simple};
use crate::otp::{self, Record, Recorded, Refused, MAC_LEN};
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
    /// A bad one-time password that a secret of the door made for this source, but for a
    /// minute `minutes` away from the server's (positive: the client's clock is ahead), within
    /// [`MAX_OTP_SKEW`] yet outside the accepted window.
    ClockSkew {
        source: IpAddr,
        door: u16,
        minutes: i64,
    },
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
    keeper: Keeper,
    /// What the daemon counts, for the metrics file; the shell counts its own doings here too.
    counters: Counters,
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
            keeper: Keeper::new(pid),
            counters: Counters::default(),
        }
    }

    /// What the daemon counted so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The counters, for what the shell does itself: reloads, heals, grants by hand.
    pub fn count(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// How many sources the engine keeps knock progress of.
    pub fn tracked_sources(&self) -> usize {
        self.doors.engine.tracked_sources()
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
        (self.counters).knock_packet(packet.knock.proto, packet.source);
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
        self.counters.nflog_overruns += 1;
        let event = Event::Overrun {
            overruns: self.counters.nflog_overruns,
        };
        self.junk(now, effects, |_| event);
    }

    /// Logs the event `event` makes, a line about something that opens nothing, if the budget
    /// allows; `event` runs only then, so that what it costs is bounded by the budget as well.
    fn junk(&mut self, now: Instant, effects: &mut Effects, event: impl FnOnce(&Core) -> Event) {
        let (allowed, held) = self.lines.allow(now);
        if let Some(held) = held {
            effects.events.push(Event::HeldBack { held });
        }
        if allowed {
            effects.events.push(event(self));
        } else {
            self.counters.held_back(Lines::Knocks);
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
                    self.counters.simple(Simple::Armed);
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
                    self.counters.simple(Simple::Opened);
                    self.counters.grant(By::Knock);
                    let door = self.config.simple[door].protected;
                    // The kernel let the client through already when the door was armed in
                    // time; this is the grant that lasts, and it covers a final knock that beat
                    // the arming and the doors the kernel does not hold.
                    effects.changes.grant(source, door, open_for);
                    self.keeper.granted(source, door, now, open_for);
                    effects.events.push(Event::Opened { source, door });
                }
                Outcome::Reset { door, .. } => {
                    self.counters.simple(Simple::WrongKnock);
                    let door = self.config.simple[door].protected;
                    self.junk(now, effects, |_| Event::WrongSequence { source, door });
                }
                Outcome::Expired { door, .. } => {
                    self.counters.simple(Simple::Expired);
                    let door = self.config.simple[door].protected;
                    self.junk(now, effects, |_| Event::Expired { source, door });
                }
                Outcome::Scanned { .. } => {
                    self.counters.simple(Simple::Scan);
                    scanned = true;
                }
                Outcome::Progress { .. } => self.counters.simple(Simple::Progress),
                Outcome::Retransmit { .. } => self.counters.simple(Simple::Retransmit),
            }
        }
        if scanned {
            self.junk(now, effects, |_| Event::Scanned { source });
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

    /// An OTP datagram to the knock port of advanced door `index`. Nothing changes before the
    /// OTP is known to be new, valid, and recorded as used.
    fn otp(
        &mut self,
        packet: &Packet,
        index: usize,
        now: Instant,
        minute: u32,
        record: &mut impl Record,
        effects: &mut Effects,
    ) -> Option<Accepted> {
        let source = packet.source;
        let port = packet.knock.port;
        let Some(mac) = otp::parse_payload(&packet.payload) else {
            self.counters.otp(metrics::Otp::Malformed);
            self.junk(now, effects, |_| Event::NotAnOtp { source, port });
            return None;
        };
        // Before verifying: a copy sent from another address would just fail to verify, and
        // must be reported as the replay it is.
        if record.is_used(&mac) {
            self.counters.otp(metrics::Otp::Replay);
            self.junk(now, effects, |_| Event::Replay { source, port });
            return None;
        }
        let skew = self.config.settings.otp_skew;
        let d = &self.config.advanced[index];
        let (door, open_for) = (d.protected, self.config.settings.advanced_open);
        let (open, made) = match (
            otp::verify(&d.open_secret, source, &mac, minute, skew),
            otp::verify(&d.close_secret, source, &mac, minute, skew),
        ) {
            (Some(m), _) => (true, m),
            (None, Some(m)) => (false, m),
            (None, None) => {
                let mut skew = None;
                self.junk(now, effects, |core| {
                    skew = core.clock_skew(index, source, &mac, minute);
                    match skew {
                        Some(minutes) => Event::ClockSkew {
                            source,
                            door,
                            minutes,
                        },
                        None => Event::BadOtp { source, door },
                    }
                });
                // The search for a skew runs only for the lines the budget lets through.
                self.counters.otp(match skew {
                    Some(_) => metrics::Otp::ClockSkew,
                    None => metrics::Otp::NoSecretMatches,
                });
                return None;
            }
        };
        match record.record(mac, made, minute, skew) {
            Ok(Recorded::New) => {}
            Ok(Recorded::Refused(why)) => {
                self.counters.otp(metrics::Otp::RefusedByRecord);
                self.junk(now, effects, |_| Event::OtpRefused { source, door, why });
                return None;
            }
            Err(e) => {
                self.counters.otp(metrics::Otp::NotRecorded);
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
            self.counters.otp(metrics::Otp::Open);
            self.counters.grant(By::Knock);
            changes.grant(source, door, open_for);
            self.keeper.granted(source, door, now, open_for);
        } else {
            self.counters.otp(metrics::Otp::Close);
            self.counters.close(By::Knock);
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

    /// How many minutes the clock that made `mac` is off from the server's `minute`, if a
    /// secret of advanced door `index` made it for `source` within [`MAX_OTP_SKEW`] minutes:
    /// positive when the client is ahead. Up to `2 * (2 * MAX_OTP_SKEW + 1)` HMACs, which is
    /// why it is only asked for a line the budget allows.
    fn clock_skew(
        &self,
        index: usize,
        source: IpAddr,
        mac: &[u8; MAC_LEN],
        minute: u32,
    ) -> Option<i64> {
        let d = &self.config.advanced[index];
        [&d.open_secret, &d.close_secret]
            .into_iter()
            .find_map(|secret| otp::verify(secret, source, mac, minute, MAX_OTP_SKEW))
            .map(|made| i64::from(made) - i64::from(minute))
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
