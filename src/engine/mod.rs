//! The simple-mode knock engine (docs/behaviour.md §2): which door a knock moves forward, resets or opens.
//!
//! Pure logic: the daemon feeds it every observed knock with the time it saw it and turns the
//! [`Outcome`]s into nftables changes. Nothing here reads a clock or touches the network.
//!
//! Cost: a knock costs one hash lookup of its port, one of its source, and a scan of at most
//! [`MAX_DOORS_PER_SOURCE`] progress entries for each door that uses that port; it does not grow
//! with the number of doors. Ports that are no door's knock port return at once.
//!
//! Memory: only sources with progress on some door are kept, at most `max_sources` of them; past
//! that the least recently active source is forgotten. A source with progress on one door costs
//! about 100-120 bytes: an 80-byte LRU node (address, the 24-byte progress entry inline, list
//! links, allocator overhead) and 20-40 bytes of hash table, which grows with use rather than
//! being reserved for `max_sources` up front. That is ~30 MB for the default 262,144 sources.
//! Progress on more doors moves to a heap array of up to [`MAX_DOORS_PER_SOURCE`] 24-byte
//! entries: the worst case, every source holding progress on 8 doors (which needs 8 doors
//! with distinct first ports), is ~330 bytes a source, ~86 MB at the default. The source table
//! hashes with std's randomly keyed SipHash, because its keys are chosen by whoever sends
//! (spoofed) packets.
//!
//! Forgotten progress (eviction, timeouts) is not reported when it happens: the daemon asks
//! [`Engine::is_armed`] after a source's knock, and gives every armed kernel element a timeout
//! equal to the knock timeout, so that an arming of a source evicted by others' knocks ends by
//! itself.
//!
//! Reload: build a new engine with [`Engine::new`]. Progress of knocks in flight is lost, which
//! costs a client at most one retry; grants live in the kernel and are not affected.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;
use smallvec::SmallVec;

use crate::port::KnockPort;

/// A door: the index of its sequence in the slice given to [`Engine::new`].
pub type DoorId = usize;

/// What one knock did to one door, for the daemon to act on. `door` is always the door's
/// [`DoorId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The knock was the door's next port.
    Progress {
        /// The door.
        door: DoorId,
        /// How many knocks of the sequence are now right (1 after the first port).
        step: usize,
    },
    /// The knocks so far are right and only `final_knock` remains: arm the door in the kernel,
    /// with the knock timeout, so that the kernel lets the source through on the final knock.
    /// A two-port sequence is armed by its first knock.
    Armed {
        /// The door.
        door: DoorId,
        /// The last port of the sequence, the one the kernel should now watch for.
        final_knock: KnockPort,
    },
    /// The sequence is complete: grant (source, protected port), or refresh the grant. Progress
    /// starts over, so the door is no longer armed.
    Opened {
        /// The door.
        door: DoorId,
    },
    /// A knock port of the door out of order discarded the progress.
    /// A restart (the first port knocked again mid-sequence) is a `Reset` followed by the
    /// outcome of the fresh first knock.
    Reset {
        /// The door.
        door: DoorId,
        /// Only the final knock was missing.
        was_armed: bool,
    },
    /// A repeat of the port just knocked, within the knock timeout: ignored, as SYN
    /// retransmissions and double clicks must not break a knock. The timer is not restarted.
    Retransmit {
        /// The door.
        door: DoorId,
    },
    /// The progress had outlived the knock timeout when this knock came; it is gone and this
    /// knock was taken as a fresh start (whose outcome, if any, follows).
    Expired {
        /// The door.
        door: DoorId,
        /// Only the final knock was missing.
        was_armed: bool,
    },
    /// The source knocked on [`SCAN_PORTS`] ports that are no door's knock ports while it had
    /// progress: a port scan, which walks knock ports in a random order and must not open a
    /// door by chance. Its progress on every door is gone.
    Scanned {
        /// The door.
        door: DoorId,
        /// Only the final knock was missing.
        was_armed: bool,
    },
}

/// How many ports that are no knock port a source with progress may knock on before its
/// progress is taken for a scan's and dropped. A client's own traffic to the server while it
/// knocks (a web page, a mail client) touches a port or two; a scan touches thousands. Ports
/// count as distinct by their number modulo 64.
pub const SCAN_PORTS: u32 = 8;

/// The outcomes of one knock, in door order; one or two per door that uses the knocked port.
pub type Outcomes = SmallVec<[Outcome; 4]>;

/// Most doors one source can have progress on at once; past it the progress that moved least
/// recently is forgotten. It bounds per-source memory and cost when doors are many (a source
/// knocking the first port of every door), and is only reached by a source that starts that
/// many sequences within one knock timeout, or a configuration with more doors than this
/// sharing a first port.
pub const MAX_DOORS_PER_SOURCE: usize = 8;

/// Progress of one source on one door. 24 bytes.
#[derive(Debug, Clone, Copy)]
struct DoorState {
    /// When the last knock that counted came.
    last: Instant,
    door: u32,
    /// How many knocks of the sequence are right; between 1 and the length minus 1.
    step: u32,
}

/// Progress on the doors of one source; one door inline, as is usual.
type Doors = SmallVec<[DoorState; 1]>;

/// What the engine keeps of one source with progress. 40 bytes.
#[derive(Debug, Clone, Default)]
struct SourceProgress {
    doors: Doors,
    /// The ports outside every door it knocked on meanwhile, one bit per port modulo 64.
    other_ports: u64,
}

/// The knock state of every source (docs/behaviour.md §2).
#[derive(Debug)]
pub struct Engine {
    sequences: Vec<Vec<KnockPort>>,
    /// Knock port → the doors using it, ascending, each once.
    by_port: HashMap<KnockPort, SmallVec<[u32; 2]>>,
    timeout: Duration,
    /// Sources with progress only, least recently active first out.
    sources: LruCache<IpAddr, SourceProgress>,
}

impl Engine {
    /// An engine for doors with these knock `sequences`, allowing `knock_timeout` between two
    /// knocks of a sequence and tracking at most `max_sources` sources (0 is taken as 1). A
    /// door with an empty sequence never opens.
    ///
    /// # Panics
    /// If there are more than `u32::MAX` doors or a sequence is longer than that (a validated
    /// configuration has at most 65,535 doors of at most 32 ports).
    pub fn new(sequences: &[Vec<KnockPort>], knock_timeout: Duration, max_sources: usize) -> Self {
        let mut by_port: HashMap<KnockPort, SmallVec<[u32; 2]>> = HashMap::new();
        for (id, sequence) in sequences.iter().enumerate() {
            let id = u32::try_from(id).expect("at most u32::MAX doors");
            assert!(u32::try_from(sequence.len()).is_ok(), "sequence too long");
            for knock in sequence {
                let users = by_port.entry(*knock).or_default();
                // Ids ascend, so a repeated port of this door can only be the last entry.
                if users.last() != Some(&id) {
                    users.push(id);
                }
            }
        }
        let capacity = NonZeroUsize::new(max_sources).unwrap_or(NonZeroUsize::MIN);
        Self {
            sequences: sequences.to_vec(),
            by_port,
            timeout: knock_timeout,
            sources: LruCache::sparse(capacity),
        }
    }

    /// Applies a knock from `source` on `knock` seen at `now`, and says what it did to each door
    /// that uses that port. IPv4-mapped IPv6 sources count as their IPv4 address.
    ///
    /// A port that is no door's knock port touches no door, but counts, for a source with
    /// progress, towards [`SCAN_PORTS`].
    pub fn knock(&mut self, source: IpAddr, knock: KnockPort, now: Instant) -> Outcomes {
        let mut out = Outcomes::new();
        let source = source.to_canonical();
        let Some(doors) = self.by_port.get(&knock) else {
            self.other_port(source, knock.port, now, &mut out);
            return out;
        };
        let step = Step {
            sequences: &self.sequences,
            timeout: self.timeout,
            knock,
            now,
        };
        if let Some(progress) = self.sources.get_mut(&source) {
            // Ports outside the doors count towards a scan only during an attempt: a client
            // that comes back after its progress expired starts with a clean slate.
            if !progress.doors.iter().any(|p| step.live(p)) {
                progress.other_ports = 0;
            }
            for &door in doors {
                step.apply(door, &mut progress.doors, &mut out);
            }
            if progress.doors.is_empty() {
                self.sources.pop(&source);
            }
        } else {
            // A source is only stored once it has progress, so knocks that start nothing (the
            // bulk of a scan or a flood) cannot push out sources that are mid-sequence.
            let mut progress = SourceProgress::default();
            for &door in doors {
                step.apply(door, &mut progress.doors, &mut out);
            }
            if !progress.doors.is_empty() {
                self.sources.push(source, progress);
            }
        }
        out
    }

    /// A knock of `source` on `port`, no door's knock port. Sources without progress are not
    /// looked at further, and their traffic keeps no one in the table.
    fn other_port(&mut self, source: IpAddr, port: u16, now: Instant, out: &mut Outcomes) {
        let Some(progress) = self.sources.peek_mut(&source) else {
            return;
        };
        let timeout = self.timeout;
        if !(progress.doors.iter()).any(|p| now.saturating_duration_since(p.last) <= timeout) {
            progress.other_ports = 0;
            return;
        }
        progress.other_ports |= 1 << (port % 64);
        if progress.other_ports.count_ones() < SCAN_PORTS {
            return;
        }
        let mut scanned: Outcomes = (progress.doors.iter())
            .map(|p| {
                let n = self.sequences[p.door as usize].len();
                Outcome::Scanned {
                    door: p.door as DoorId,
                    was_armed: n >= 2 && p.step as usize == n - 1,
                }
            })
            .collect();
        scanned.sort_unstable_by_key(|o| match o {
            Outcome::Scanned { door, .. } => *door,
            _ => DoorId::MAX,
        });
        out.extend(scanned);
        self.sources.pop(&source);
    }

    /// Whether `source` has knocked all of `door`'s sequence but the final knock, within the
    /// knock timeout at `now`: what the kernel should hold armed. False once that progress is
    /// gone, whether the door opened, reset, expired or was forgotten for the bounds.
    pub fn is_armed(&self, source: IpAddr, door: DoorId, now: Instant) -> bool {
        let n = self.sequences.get(door).map_or(0, Vec::len);
        let Some(progress) = self.sources.peek(&source.to_canonical()) else {
            return false;
        };
        progress.doors.iter().any(|p| {
            p.door as usize == door
                && n >= 2
                && p.step as usize == n - 1
                && now.saturating_duration_since(p.last) <= self.timeout
        })
    }

    /// How many sources have progress on some door (stale progress included until the source
    /// knocks again or is evicted).
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }
}

/// The doors that one knock arms together with a later door, as pairs (displaced, by): the
/// knock before a door's last, from a source that knocked that door's sequence, also arms
/// `by`, which the daemon keeps armed in the kernel (it acts on outcomes in door order), so it
/// opens `displaced` itself. Doors with the same whole sequence are left out: that is an error
/// of its own.
///
/// Each door's sequence is knocked from a source of its own, a millisecond apart, so the
/// engine's bounds act as they do on real knocks.
pub fn armed_together(sequences: &[Vec<KnockPort>]) -> Vec<(DoorId, DoorId)> {
    let mut engine = Engine::new(sequences, Duration::from_secs(3600), sequences.len());
    let mut now = Instant::now();
    let mut pairs = Vec::new();
    for (i, sequence) in sequences.iter().enumerate() {
        let source = IpAddr::from(Ipv6Addr::from(i as u128));
        let mut armed = Vec::new();
        for knock in &sequence[..sequence.len().saturating_sub(1)] {
            now += Duration::from_millis(1);
            armed = engine
                .knock(source, *knock, now)
                .into_iter()
                .filter_map(|o| match o {
                    Outcome::Armed { door, .. } => Some(door),
                    _ => None,
                })
                .collect();
        }
        if let (true, Some(&later)) = (armed.contains(&i), armed.last()) {
            if later != i && sequences[later] != *sequence {
                pairs.push((i, later));
            }
        }
    }
    pairs
}

/// One knock, applied door by door.
struct Step<'a> {
    sequences: &'a [Vec<KnockPort>],
    timeout: Duration,
    knock: KnockPort,
    now: Instant,
}

impl Step<'_> {
    /// Whether progress `p` is still within the knock timeout. A clock that went backwards
    /// counts as no time passed.
    fn live(&self, p: &DoorState) -> bool {
        self.now.saturating_duration_since(p.last) <= self.timeout
    }

    fn apply(&self, door: u32, progress: &mut Doors, out: &mut Outcomes) {
        let id = door as DoorId;
        let seq = &self.sequences[id];
        let n = seq.len();
        let armed = |done: usize| n >= 2 && done == n - 1;

        let mut slot = progress.iter().position(|p| p.door == door);
        if let Some(i) = slot {
            let p = progress[i];
            if !self.live(&p) {
                progress.swap_remove(i);
                slot = None;
                out.push(Outcome::Expired {
                    door: id,
                    was_armed: armed(p.step as usize),
                });
            }
        }

        let done = match slot {
            Some(i) => {
                let done = progress[i].step as usize;
                if seq[done] == self.knock {
                    done + 1
                } else if seq[done - 1] == self.knock {
                    out.push(Outcome::Retransmit { door: id });
                    return;
                } else {
                    progress.swap_remove(i);
                    slot = None;
                    out.push(Outcome::Reset {
                        door: id,
                        was_armed: armed(done),
                    });
                    if seq[0] != self.knock {
                        return;
                    }
                    1
                }
            }
            None if seq[0] == self.knock => 1,
            None => return,
        };

        if done == n {
            if let Some(i) = slot {
                progress.swap_remove(i);
            }
            out.push(Outcome::Opened { door: id });
            return;
        }
        let entry = DoorState {
            last: self.now,
            door,
            step: done as u32,
        };
        match slot {
            Some(i) => progress[i] = entry,
            None => {
                if progress.len() >= MAX_DOORS_PER_SOURCE {
                    let Some((oldest, at)) = progress
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, p)| p.last)
                        .map(|(i, p)| (i, p.last))
                    else {
                        return;
                    };
                    if at >= self.now {
                        // Everything was started by this very knock: keep the earlier doors
                        // rather than report an arming that is forgotten at once.
                        return;
                    }
                    progress.swap_remove(oldest);
                }
                progress.push(entry);
            }
        }
        out.push(if armed(done) {
            Outcome::Armed {
                door: id,
                final_knock: seq[n - 1],
            }
        } else {
            Outcome::Progress {
                door: id,
                step: done,
            }
        });
    }
}

#[cfg(any(test, feature = "reference-model"))]
pub mod reference;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use Outcome::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A sequence of TCP knock ports.
    fn tcp(ports: &[u16]) -> Vec<KnockPort> {
        ports.iter().copied().map(KnockPort::tcp).collect()
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    /// Drives an engine with knocks at given offsets from a fixed start.
    struct Clock {
        engine: Engine,
        start: Instant,
    }

    impl Clock {
        fn new(sequences: &[Vec<KnockPort>]) -> Self {
            Self {
                engine: Engine::new(sequences, TIMEOUT, 1000),
                start: Instant::now(),
            }
        }

        fn at(&mut self, ms: u64, source: IpAddr, knock: KnockPort) -> Vec<Outcome> {
            let now = self.start + Duration::from_millis(ms);
            self.engine.knock(source, knock, now).to_vec()
        }

        /// Knocks tcp `ports` one second apart from `from_ms` and returns every outcome.
        fn seq(&mut self, from_ms: u64, source: IpAddr, ports: &[u16]) -> Vec<Outcome> {
            let mut all = Vec::new();
            for (i, &p) in ports.iter().enumerate() {
                all.extend(self.at(from_ms + 1000 * i as u64, source, KnockPort::tcp(p)));
            }
            all
        }
    }

    fn opened(outcomes: &[Outcome]) -> Vec<DoorId> {
        outcomes
            .iter()
            .filter_map(|o| match o {
                Opened { door } => Some(*door),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_right_sequence_opens() {
        let mut c = Clock::new(&[tcp(&[1, 2, 3, 4, 5])]);
        let a = ip(1);
        assert_eq!(
            c.at(0, a, KnockPort::tcp(1)),
            [Progress { door: 0, step: 1 }]
        );
        assert_eq!(
            c.at(1, a, KnockPort::tcp(2)),
            [Progress { door: 0, step: 2 }]
        );
        assert_eq!(
            c.at(2, a, KnockPort::tcp(3)),
            [Progress { door: 0, step: 3 }]
        );
        assert_eq!(
            c.at(3, a, KnockPort::tcp(4)),
            [Armed {
                door: 0,
                final_knock: KnockPort::tcp(5)
            }]
        );
        assert_eq!(c.at(4, a, KnockPort::tcp(5)), [Opened { door: 0 }]);
        assert_eq!(
            c.engine.tracked_sources(),
            0,
            "progress resets after opening"
        );
        // Knocking again opens again (the daemon refreshes the grant).
        assert_eq!(opened(&c.seq(5, a, &[1, 2, 3, 4, 5])), [0]);
    }

    #[test]
    fn out_of_order_does_not_open() {
        let mut c = Clock::new(&[tcp(&[1, 2, 3, 4, 5])]);
        let a = ip(1);
        let all = c.seq(0, a, &[1, 2, 5, 3, 4]);
        assert_eq!(
            all,
            [
                Progress { door: 0, step: 1 },
                Progress { door: 0, step: 2 },
                Reset {
                    door: 0,
                    was_armed: false
                },
            ]
        );
        assert!(opened(&c.seq(10_000, a, &[5, 4, 3, 2, 1])).is_empty());
        assert!(opened(&c.seq(20_000, a, &[1, 2, 3, 5, 4])).is_empty());
        assert!(opened(&c.seq(30_000, a, &[2, 3, 4, 5])).is_empty());
    }

    #[test]
    fn duplicates_are_tolerated() {
        let mut c = Clock::new(&[tcp(&[1, 2, 3])]);
        let a = ip(1);
        assert_eq!(
            c.at(0, a, KnockPort::tcp(1)),
            [Progress { door: 0, step: 1 }]
        );
        assert_eq!(c.at(1, a, KnockPort::tcp(1)), [Retransmit { door: 0 }]);
        assert_eq!(
            c.at(2, a, KnockPort::tcp(2)),
            [Armed {
                door: 0,
                final_knock: KnockPort::tcp(3)
            }]
        );
        assert_eq!(c.at(3, a, KnockPort::tcp(2)), [Retransmit { door: 0 }]);
        assert_eq!(c.at(4, a, KnockPort::tcp(2)), [Retransmit { door: 0 }]);
        assert_eq!(c.at(5, a, KnockPort::tcp(3)), [Opened { door: 0 }]);
    }

    #[test]
    fn a_retransmission_does_not_extend_the_timeout() {
        let mut c = Clock::new(&[tcp(&[1, 2, 3])]);
        let a = ip(1);
        c.at(0, a, KnockPort::tcp(1));
        assert_eq!(c.at(9_000, a, KnockPort::tcp(1)), [Retransmit { door: 0 }]);
        assert_eq!(
            c.at(10_001, a, KnockPort::tcp(2)),
            [Expired {
                door: 0,
                was_armed: false
            }]
        );
    }

    #[test]
    fn the_first_port_restarts() {
        let mut c = Clock::new(&[tcp(&[1, 2, 3, 4])]);
        let a = ip(1);
        c.seq(0, a, &[1, 2, 3]);
        assert_eq!(
            c.at(3_000, a, KnockPort::tcp(1)),
            [
                Reset {
                    door: 0,
                    was_armed: true
                },
                Progress { door: 0, step: 1 }
            ]
        );
        assert_eq!(opened(&c.seq(4_000, a, &[2, 3, 4])), [0]);
        // Restart from the middle of a failed attempt.
        assert_eq!(opened(&c.seq(10_000, a, &[1, 2, 1, 2, 3, 4])), [0]);
    }

    #[test]
    fn a_wrong_knock_port_resets_and_disarms() {
        let mut c = Clock::new(&[tcp(&[1, 2, 3])]);
        let a = ip(1);
        c.seq(0, a, &[1, 2]);
        assert_eq!(
            c.at(2_000, a, KnockPort::tcp(1)),
            [
                Reset {
                    door: 0,
                    was_armed: true
                },
                Progress { door: 0, step: 1 }
            ]
        );
        c.at(3_000, a, KnockPort::tcp(2));
        assert_eq!(
            c.at(4_000, a, KnockPort::tcp(2)),
            [Retransmit { door: 0 }],
            "a repeat of the last port is not wrong"
        );
        c.at(5_000, a, KnockPort::tcp(3));
        c.seq(6_000, a, &[1]);
        assert_eq!(
            c.at(7_000, a, KnockPort::tcp(3)),
            [Reset {
                door: 0,
                was_armed: false
            }]
        );
        assert_eq!(c.engine.tracked_sources(), 0);
        assert!(
            c.at(8_000, a, KnockPort::tcp(3)).is_empty(),
            "no progress: nothing to reset"
        );
    }

    #[test]
    fn other_ports_do_not_count() {
        let mut c = Clock::new(&[tcp(&[1, 2, 3])]);
        let a = ip(1);
        c.at(0, a, KnockPort::tcp(1));
        assert!(c.at(1, a, KnockPort::tcp(80)).is_empty());
        assert!(c.at(2, a, KnockPort::tcp(22)).is_empty());
        assert!(c.at(3, a, KnockPort::udp(2)).is_empty());
        c.at(4, a, KnockPort::tcp(2));
        assert_eq!(c.at(5, a, KnockPort::tcp(3)), [Opened { door: 0 }]);
    }

    #[test]
    fn udp_ports_are_not_tcp_ports() {
        let mut c = Clock::new(&[vec![
            KnockPort::tcp(7000),
            KnockPort::udp(8000),
            KnockPort::tcp(9000),
        ]]);
        let a = ip(1);
        c.at(0, a, KnockPort::tcp(7000));
        assert!(c.at(1, a, KnockPort::tcp(8000)).is_empty());
        assert_eq!(
            c.at(2, a, KnockPort::udp(8000)),
            [Armed {
                door: 0,
                final_knock: KnockPort::tcp(9000)
            }]
        );
        assert!(c.at(3, a, KnockPort::udp(9000)).is_empty());
        assert_eq!(c.at(4, a, KnockPort::tcp(9000)), [Opened { door: 0 }]);
    }

    #[test]
    fn timeout_between_knocks() {
        let mut c = Clock::new(&[tcp(&[1, 2, 3])]);
        let a = ip(1);
        // Exactly the timeout is in time, a millisecond more is not.
        c.at(0, a, KnockPort::tcp(1));
        c.at(10_000, a, KnockPort::tcp(2));
        assert_eq!(c.at(20_000, a, KnockPort::tcp(3)), [Opened { door: 0 }]);
        c.at(30_000, a, KnockPort::tcp(1));
        c.at(39_999, a, KnockPort::tcp(2));
        assert_eq!(
            c.at(50_000, a, KnockPort::tcp(3)),
            [Expired {
                door: 0,
                was_armed: true
            }]
        );
        // A late first port starts afresh.
        c.at(60_000, a, KnockPort::tcp(1));
        assert_eq!(
            c.at(70_001, a, KnockPort::tcp(1)),
            [
                Expired {
                    door: 0,
                    was_armed: false
                },
                Progress { door: 0, step: 1 }
            ]
        );
        c.at(71_000, a, KnockPort::tcp(2));
        assert_eq!(c.at(72_000, a, KnockPort::tcp(3)), [Opened { door: 0 }]);
    }

    #[test]
    fn a_clock_going_back_is_no_time() {
        let mut c = Clock::new(&[tcp(&[1, 2, 3])]);
        let a = ip(1);
        c.at(5_000, a, KnockPort::tcp(1));
        c.at(4_000, a, KnockPort::tcp(2));
        assert_eq!(c.at(3_000, a, KnockPort::tcp(3)), [Opened { door: 0 }]);
    }

    #[test]
    fn short_sequences() {
        let mut c = Clock::new(&[tcp(&[1]), tcp(&[2, 3])]);
        let a = ip(1);
        assert_eq!(c.at(0, a, KnockPort::tcp(1)), [Opened { door: 0 }]);
        assert_eq!(c.at(1, a, KnockPort::tcp(1)), [Opened { door: 0 }]);
        assert_eq!(c.engine.tracked_sources(), 0);
        assert_eq!(
            c.at(2, a, KnockPort::tcp(2)),
            [Armed {
                door: 1,
                final_knock: KnockPort::tcp(3)
            }]
        );
        assert_eq!(c.at(3, a, KnockPort::tcp(2)), [Retransmit { door: 1 }]);
        assert_eq!(c.at(4, a, KnockPort::tcp(3)), [Opened { door: 1 }]);
    }

    #[test]
    fn an_empty_sequence_never_opens() {
        let mut c = Clock::new(&[vec![], tcp(&[1])]);
        assert_eq!(c.at(0, ip(1), KnockPort::tcp(1)), [Opened { door: 1 }]);
    }

    #[test]
    fn shared_knock_ports() {
        let mut c = Clock::new(&[tcp(&[1, 2, 3]), tcp(&[1, 2, 4])]);
        let a = ip(1);
        assert_eq!(
            c.at(0, a, KnockPort::tcp(1)),
            [Progress { door: 0, step: 1 }, Progress { door: 1, step: 1 }]
        );
        assert_eq!(
            c.at(1, a, KnockPort::tcp(2)),
            [
                Armed {
                    door: 0,
                    final_knock: KnockPort::tcp(3)
                },
                Armed {
                    door: 1,
                    final_knock: KnockPort::tcp(4)
                }
            ]
        );
        // 4 is no port of door 0, so door 0 stays armed.
        assert_eq!(c.at(2, a, KnockPort::tcp(4)), [Opened { door: 1 }]);
        assert_eq!(c.at(3, a, KnockPort::tcp(3)), [Opened { door: 0 }]);
    }

    #[test]
    fn a_port_twice_in_a_sequence() {
        let mut c = Clock::new(&[tcp(&[1, 2, 1, 3])]);
        let a = ip(1);
        assert_eq!(opened(&c.seq(0, a, &[1, 2, 1, 3])), [0]);
        assert_eq!(opened(&c.seq(10_000, a, &[1, 2, 1, 1, 3])), [0]);
        assert!(opened(&c.seq(20_000, a, &[1, 2, 3])).is_empty());
    }

    #[test]
    fn sources_are_independent() {
        let mut c = Clock::new(&[tcp(&[1, 2, 3])]);
        let (a, b) = (ip(1), ip(2));
        c.at(0, a, KnockPort::tcp(1));
        c.at(1, b, KnockPort::tcp(1));
        c.at(2, b, KnockPort::tcp(3));
        c.at(3, a, KnockPort::tcp(2));
        assert!(
            c.at(4, b, KnockPort::tcp(2)).is_empty(),
            "b was reset by its own 3"
        );
        assert_eq!(c.at(5, a, KnockPort::tcp(3)), [Opened { door: 0 }]);
        let v6: IpAddr = "fd00:5eed::1".parse().expect("addr");
        assert_eq!(opened(&c.seq(10_000, v6, &[1, 2, 3])), [0]);
    }

    #[test]
    fn ipv4_mapped_sources_are_ipv4() {
        let mut c = Clock::new(&[tcp(&[1, 2, 3])]);
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 18, 0, 1).to_ipv6_mapped());
        c.at(0, ip(1), KnockPort::tcp(1));
        c.at(1, mapped, KnockPort::tcp(2));
        assert_eq!(c.at(2, ip(1), KnockPort::tcp(3)), [Opened { door: 0 }]);
    }

    #[test]
    fn progress_per_source_is_bounded() {
        let doors: Vec<_> = (0..40u16).map(|d| tcp(&[1000 + d, 2000])).collect();
        let mut c = Clock::new(&doors);
        let a = ip(1);
        for d in 0..40u16 {
            c.at(u64::from(d), a, KnockPort::tcp(1000 + d));
        }
        let kept = c.engine.sources.peek(&a).map(|p| p.doors.len());
        assert_eq!(kept, Some(MAX_DOORS_PER_SOURCE));
        // The most recent doors survive.
        assert_eq!(
            opened(&c.at(100, a, KnockPort::tcp(2000))),
            (40 - MAX_DOORS_PER_SOURCE..40).collect::<Vec<_>>()
        );

        // More doors than the bound sharing a first port: the earliest doors win, and every
        // arming reported is one the engine keeps.
        let shared: Vec<_> = (0..20u16).map(|d| tcp(&[1, 2000 + d])).collect();
        let mut c = Clock::new(&shared);
        let out = c.at(0, a, KnockPort::tcp(1));
        assert_eq!(out.len(), MAX_DOORS_PER_SOURCE);
        assert_eq!(c.at(1, a, KnockPort::tcp(2000)), [Opened { door: 0 }]);
        assert!(c.at(2, a, KnockPort::tcp(2019)).is_empty());
    }

    #[test]
    fn memory_layout_matches_the_documented_cost() {
        assert_eq!(std::mem::size_of::<DoorState>(), 24);
        assert_eq!(std::mem::size_of::<SourceProgress>(), 40);
    }

    #[test]
    fn a_flood_of_spoofed_first_knocks_cannot_lock_out() {
        const BOUND: usize = 1000;
        let doors = [tcp(&[1, 2, 3])];
        let mut engine = Engine::new(&doors, TIMEOUT, BOUND);
        let start = Instant::now();
        let legit = ip(7);
        // The legitimate client has started before the flood and is forgotten by it...
        engine.knock(legit, KnockPort::tcp(1), start);
        // A million in release; a quarter of that keeps a debug test run short.
        let flood: u128 = if cfg!(debug_assertions) {
            250_000
        } else {
            1_000_000
        };
        let base = u128::from(Ipv6Addr::new(0xfd00, 0x5eed, 0, 0, 0, 0, 0, 0));
        for i in 0..flood {
            let spoofed = IpAddr::V6(Ipv6Addr::from(base + i));
            engine.knock(spoofed, KnockPort::tcp(1), start);
            if i % 4096 == 0 {
                assert!(engine.tracked_sources() <= BOUND);
            }
        }
        assert_eq!(engine.tracked_sources(), BOUND);
        // ...yet, knocking now, it opens.
        let now = start + Duration::from_secs(1);
        assert!(engine.knock(legit, KnockPort::tcp(2), now).is_empty());
        let mut all = engine.knock(legit, KnockPort::tcp(1), now).to_vec();
        all.extend(engine.knock(legit, KnockPort::tcp(2), now));
        all.extend(engine.knock(legit, KnockPort::tcp(3), now));
        assert_eq!(opened(&all), [0]);
        assert!(engine.tracked_sources() <= BOUND);
    }

    #[test]
    fn knocks_that_start_nothing_are_not_tracked() {
        let mut c = Clock::new(&[tcp(&[1, 2, 3])]);
        for i in 0..=255 {
            c.at(0, ip(i), KnockPort::tcp(2));
            c.at(0, ip(i), KnockPort::tcp(9));
        }
        assert_eq!(c.engine.tracked_sources(), 0);
    }

    #[test]
    fn zero_max_sources_tracks_one() {
        let mut engine = Engine::new(&[tcp(&[1, 2])], TIMEOUT, 0);
        let now = Instant::now();
        engine.knock(ip(1), KnockPort::tcp(1), now);
        engine.knock(ip(2), KnockPort::tcp(1), now);
        assert_eq!(engine.tracked_sources(), 1);
        assert_eq!(
            engine.knock(ip(2), KnockPort::tcp(2), now).to_vec(),
            [Opened { door: 0 }]
        );
    }

    type Event = (IpAddr, KnockPort, Instant);

    /// Whether `events[i]` completes `seq` for its source (see [`reference::justified`]).
    fn justified(events: &[Event], i: usize, seq: &[KnockPort]) -> bool {
        let source = events[i].0;
        let history: Vec<(KnockPort, Instant)> = events[..=i]
            .iter()
            .filter(|e| e.0 == source)
            .map(|e| (e.1, e.2))
            .collect();
        reference::justified(&history, seq, TIMEOUT)
    }

    const POOL: [KnockPort; 5] = [
        KnockPort::tcp(1),
        KnockPort::tcp(2),
        KnockPort::tcp(3),
        KnockPort::udp(3),
        KnockPort::tcp(4),
    ];

    fn sequence() -> impl Strategy<Value = Vec<KnockPort>> {
        proptest::collection::vec(0..POOL.len(), 1..5).prop_map(|mut idx| {
            idx.dedup(); // configuration validation forbids a port twice in a row
            idx.into_iter().map(|i| POOL[i]).collect()
        })
    }

    /// A stretch of knocks from one source; gaps are milliseconds since the previous knock.
    #[derive(Debug, Clone)]
    enum Chunk {
        /// Ports of [`POOL`].
        Random(u8, Vec<(usize, u64)>),
        /// Ports outside every door (100 to 163: distinct modulo 64), as a scan sends them.
        Scan(u8, Vec<(u16, u64)>),
        /// A door's whole sequence, so that opens are frequent rather than luck.
        Door(u8, DoorId, u64),
    }

    fn chunks(doors: usize) -> impl Strategy<Value = Vec<Chunk>> {
        // Gaps cluster around the timeout to probe its edge.
        let gap = prop_oneof![0..2_000u64, 9_990..10_010u64];
        let random = (
            0u8..3,
            proptest::collection::vec((0..POOL.len(), gap), 1..4),
        )
            .prop_map(|(s, k)| Chunk::Random(s, k));
        let door = (0u8..3, 0..doors, 0..1_500u64).prop_map(|(s, d, g)| Chunk::Door(s, d, g));
        let scan = (
            0u8..3,
            proptest::collection::vec((100u16..164, 0..500u64), 1..12),
        )
            .prop_map(|(s, k)| Chunk::Scan(s, k));
        proptest::collection::vec(prop_oneof![random, door, scan], 1..40)
    }

    fn expand(doors: &[Vec<KnockPort>], chunks: &[Chunk]) -> Vec<Event> {
        let start = Instant::now();
        let mut t = 0u64;
        let mut out = Vec::new();
        let mut push = |s: u8, port: KnockPort, gap: u64| {
            t += gap;
            out.push((ip(s), port, start + Duration::from_millis(t)));
        };
        for chunk in chunks {
            match chunk {
                Chunk::Random(s, knocks) => {
                    for &(k, gap) in knocks {
                        push(*s, POOL[k], gap);
                    }
                }
                Chunk::Scan(s, knocks) => {
                    for &(port, gap) in knocks {
                        push(*s, KnockPort::tcp(port), gap);
                    }
                }
                Chunk::Door(s, d, gap) => {
                    for &port in &doors[*d] {
                        push(*s, port, *gap);
                    }
                }
            }
        }
        out
    }

    fn doors_and_chunks() -> impl Strategy<Value = (Vec<Vec<KnockPort>>, Vec<Chunk>)> {
        proptest::collection::vec(sequence(), 1..4)
            .prop_flat_map(|doors| (Just(doors.clone()), chunks(doors.len())))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn engine_matches_the_reference((seqs, chunks) in doors_and_chunks()) {
            let events = expand(&seqs, &chunks);
            let mut engine = Engine::new(&seqs, TIMEOUT, 1000);
            let mut reference = reference::Reference::new(seqs.clone(), TIMEOUT);
            for (i, &(source, knock, now)) in events.iter().enumerate() {
                let got = engine.knock(source, knock, now).to_vec();
                prop_assert_eq!(&got, &reference.knock(source, knock, now), "event {}", i);
                for door in opened(&got) {
                    prop_assert!(justified(&events, i, &seqs[door]), "unjustified open at {}", i);
                }
            }
        }

        #[test]
        fn tracked_sources_stay_bounded((seqs, chunks) in doors_and_chunks(), bound in 1usize..4) {
            let events = expand(&seqs, &chunks);
            let mut engine = Engine::new(&seqs, TIMEOUT, bound);
            for (i, &(source, knock, now)) in events.iter().enumerate() {
                let got = engine.knock(source, knock, now);
                prop_assert!(engine.tracked_sources() <= bound);
                let progressed = got.iter().any(|o| matches!(o, Progress { .. } | Armed { .. }));
                if progressed {
                    prop_assert!(engine.sources.contains(&source), "the active source is kept");
                }
                // Forgetting progress may lose an open, never make one up.
                for door in opened(&got) {
                    prop_assert!(justified(&events, i, &seqs[door]), "unjustified open at {}", i);
                }
            }
        }
    }

    #[test]
    fn knocks_on_many_ports_outside_every_door_are_a_scan_and_reset_every_door() {
        let mut c = Clock::new(&[tcp(&[1, 2, 3]), tcp(&[1, 5, 6])]);
        let (a, b) = (ip(1), ip(2));
        c.at(0, a, KnockPort::tcp(1));
        c.at(1, a, KnockPort::tcp(2));
        // A client's own traffic while it knocks: a few ports, often. 443 and 507 are one
        // port modulo 64.
        for (i, port) in (2..).zip([443, 993, 443, 507, 993, 443]) {
            assert!(c.at(i, a, KnockPort::tcp(port)).is_empty());
        }
        // Up to SCAN_PORTS distinct ports: the last of them makes it a scan.
        let others = (SCAN_PORTS - 2) as u16;
        for port in 1000..1000 + others - 1 {
            assert!(c.at(20, a, KnockPort::udp(port)).is_empty(), "{port}");
        }
        assert_eq!(
            c.at(21, a, KnockPort::tcp(1000 + others - 1)),
            [
                Scanned {
                    door: 0,
                    was_armed: true
                },
                Scanned {
                    door: 1,
                    was_armed: false
                },
            ]
        );
        assert_eq!(
            c.engine.tracked_sources(),
            0,
            "the scanner's progress is gone"
        );
        assert!(
            c.at(22, a, KnockPort::tcp(3)).is_empty(),
            "its final knock opens nothing"
        );
        // A source without progress is not even looked at.
        for port in 2000..2100 {
            assert!(c.at(30, b, KnockPort::tcp(port)).is_empty());
        }
        assert_eq!(c.engine.tracked_sources(), 0);
        // Progress started afresh counts afresh.
        c.seq(40, b, &[1, 2]);
        for port in 2000..2000 + others + 1 {
            c.at(50, b, KnockPort::tcp(port));
        }
        assert_eq!(
            opened(&c.at(60, b, KnockPort::tcp(3))),
            [0],
            "fewer than SCAN_PORTS"
        );
    }

    #[test]
    fn what_an_expired_attempt_tried_elsewhere_does_not_count_for_the_next() {
        let mut c = Clock::new(&[tcp(&[1, 2, 3])]);
        let a = ip(1);
        c.at(0, a, KnockPort::tcp(1));
        let others = (SCAN_PORTS - 1) as u16;
        for port in 1000..1000 + others {
            assert!(c.at(10, a, KnockPort::tcp(port)).is_empty());
        }
        // The attempt is abandoned; a minute later the client knocks again, and tries its web
        // port in between.
        let t = 60_000;
        c.at(t, a, KnockPort::tcp(1));
        assert!(
            c.at(t + 1, a, KnockPort::tcp(443)).is_empty(),
            "a clean slate"
        );
        c.at(t + 2, a, KnockPort::tcp(2));
        assert_eq!(opened(&c.at(t + 3, a, KnockPort::tcp(3))), [0]);
        // Nor does a port tried once the progress expired.
        c.at(t + 10, a, KnockPort::tcp(1));
        let late = t + 10 + TIMEOUT.as_millis() as u64 + 1;
        for port in 2000..2000 + SCAN_PORTS as u16 {
            assert!(c.at(late, a, KnockPort::tcp(port)).is_empty(), "{port}");
        }
    }

    #[test]
    fn a_scan_that_walks_the_knock_ports_in_order_opens_nothing() {
        // The worst order for a shuffled scan: the door's ports in order, four others between.
        let mut c = Clock::new(&[tcp(&[7000, 9000, 8000])]);
        let a = ip(1);
        let mut t = 0;
        let mut all = Vec::new();
        for (i, &knock) in [7000u16, 9000, 8000].iter().enumerate() {
            for k in 0..4u16 {
                t += 1;
                all.extend(c.at(t, a, KnockPort::tcp(100 + 10 * i as u16 + k)));
            }
            t += 1;
            all.extend(c.at(t, a, KnockPort::tcp(knock)));
        }
        assert!(opened(&all).is_empty(), "{all:?}");
        assert!(all.contains(&Scanned {
            door: 0,
            was_armed: true
        }));
    }

    #[test]
    fn armed_is_exactly_the_final_knock_missing_within_the_timeout() {
        let doors = [tcp(&[1, 2, 3]), tcp(&[5, 6])];
        let mut engine = Engine::new(&doors, TIMEOUT, 16);
        let src: IpAddr = Ipv4Addr::new(198, 18, 0, 2).into();
        let t0 = Instant::now();
        engine.knock(src, KnockPort::tcp(1), t0);
        assert!(!engine.is_armed(src, 0, t0), "two knocks are missing");
        engine.knock(src, KnockPort::tcp(2), t0);
        assert!(engine.is_armed(src, 0, t0));
        assert!(!engine.is_armed(src, 1, t0), "another door");
        assert!(!engine.is_armed(src, 0, t0 + TIMEOUT + Duration::from_millis(1)));
        engine.knock(src, KnockPort::tcp(3), t0);
        assert!(!engine.is_armed(src, 0, t0), "opened, so over");
        engine.knock(src, KnockPort::tcp(5), t0);
        assert!(engine.is_armed(src, 1, t0));
        engine.knock(src, KnockPort::tcp(1), t0);
        assert!(
            engine.is_armed(src, 1, t0),
            "another door's knock changes nothing"
        );
        engine.knock(src, KnockPort::tcp(6), t0);
        assert!(!engine.is_armed(src, 1, t0));
    }

    #[test]
    fn doors_one_knock_arms_together_are_paired_with_the_one_kept() {
        let doors = [
            tcp(&[1, 2, 3]),
            tcp(&[1, 2, 4]),
            tcp(&[5, 6]),
            tcp(&[7, 2, 3]),
            tcp(&[7, 2, 3]),
        ];
        assert_eq!(
            armed_together(&doors),
            [(0, 1)],
            "23 is kept for 22's knocks; 24 shares nothing; 25 and 26 are one sequence twice"
        );
    }
}
