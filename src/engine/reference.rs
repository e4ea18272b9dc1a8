//! The rules of docs/behaviour.md §2 written as plainly as possible, to check [`Engine`](super::Engine)
//! against: every door checked on every knock, one map entry per (source, door), no bounds.
//! So it matches the engine only while the engine forgets nothing. Built for the engine's tests
//! and, with the `reference-model` feature, for the engine's fuzz target.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{DoorId, Outcome, SCAN_PORTS};
use crate::port::KnockPort;

/// The reference engine.
pub struct Reference {
    doors: Vec<Vec<KnockPort>>,
    timeout: Duration,
    /// (source, door) → knocks right so far, time of the last one that counted.
    state: HashMap<(IpAddr, DoorId), (usize, Instant)>,
    /// Source → the ports outside every door it knocked on while it had progress, one bit per
    /// port modulo 64.
    other_ports: HashMap<IpAddr, u64>,
}

impl Reference {
    /// A reference for doors with these sequences and knock timeout.
    pub fn new(doors: Vec<Vec<KnockPort>>, timeout: Duration) -> Reference {
        Reference {
            doors,
            timeout,
            state: HashMap::new(),
            other_ports: HashMap::new(),
        }
    }

    /// The outcomes of `knock` from `source` at `now`, in door order.
    pub fn knock(&mut self, source: IpAddr, knock: KnockPort, now: Instant) -> Vec<Outcome> {
        let mut out = Vec::new();
        let with_progress: Vec<DoorId> = (0..self.doors.len())
            .filter(|&door| self.state.contains_key(&(source, door)))
            .collect();
        // Ports outside the doors count only during an attempt: with no progress within the
        // timeout, what was counted is forgotten.
        let live = with_progress.iter().any(|&door| {
            let (_, last) = self.state[&(source, door)];
            now.duration_since(last) <= self.timeout
        });
        if !live {
            self.other_ports.remove(&source);
        }
        if !self.doors.iter().any(|seq| seq.contains(&knock)) {
            // A port outside every door, from a source with progress: towards a scan.
            if !live {
                return out;
            }
            let seen = self.other_ports.entry(source).or_default();
            *seen |= 1 << (knock.port % 64);
            if seen.count_ones() >= SCAN_PORTS {
                for door in with_progress {
                    let (s, _) = self.state.remove(&(source, door)).expect("with progress");
                    let n = self.doors[door].len();
                    out.push(Outcome::Scanned {
                        door,
                        was_armed: n >= 2 && s == n - 1,
                    });
                }
                self.other_ports.remove(&source);
            }
            return out;
        }
        for (door, seq) in self.doors.iter().enumerate() {
            if !seq.contains(&knock) {
                continue;
            }
            let n = seq.len();
            let armed = |s: usize| n >= 2 && s == n - 1;
            let key = (source, door);
            let mut current = self.state.get(&key).copied();
            if let Some((s, last)) = current {
                if now.duration_since(last) > self.timeout {
                    out.push(Outcome::Expired {
                        door,
                        was_armed: armed(s),
                    });
                    self.state.remove(&key);
                    current = None;
                }
            }
            let next = match current {
                // The expected next port advances.
                Some((s, _)) if seq[s] == knock => s + 1,
                // A repeat of the port just knocked is a retransmission.
                Some((s, _)) if seq[s - 1] == knock => {
                    out.push(Outcome::Retransmit { door });
                    continue;
                }
                // Another port of the door resets; the first port starts over.
                Some((s, _)) => {
                    self.state.remove(&key);
                    out.push(Outcome::Reset {
                        door,
                        was_armed: armed(s),
                    });
                    if seq[0] != knock {
                        continue;
                    }
                    1
                }
                None if seq[0] == knock => 1,
                None => continue,
            };
            if next == n {
                self.state.remove(&key);
                out.push(Outcome::Opened { door });
            } else {
                self.state.insert(key, (next, now));
                out.push(if armed(next) {
                    Outcome::Armed {
                        door,
                        final_knock: seq[n - 1],
                    }
                } else {
                    Outcome::Progress { door, step: next }
                });
            }
        }
        // What a source knocked outside every door counts only while it has progress.
        if !self.state.keys().any(|k| k.0 == source) {
            self.other_ports.remove(&source);
        }
        out
    }

    /// How many sources have progress on some door.
    pub fn tracked_sources(&self) -> usize {
        let sources: HashSet<IpAddr> = self.state.keys().map(|k| k.0).collect();
        sources.len()
    }
}

/// Whether the last of `history` (one source's knocks with their times) completes `seq`:
/// knocks `i_0 < i_1 < ... < i_{n-1}` = the last exist with the ports of `seq` in order, each
/// within `timeout` of the one before, and every knock of a port of `seq` between `i_k` and
/// `i_{k+1}` is a repeat of `seq[k]`. Independent of the engine's state machine.
pub fn justified(history: &[(KnockPort, Instant)], seq: &[KnockPort], timeout: Duration) -> bool {
    let mine: Vec<(KnockPort, Instant)> = history
        .iter()
        .copied()
        .filter(|(k, _)| seq.contains(k))
        .collect();
    let (n, Some(last)) = (seq.len(), mine.len().checked_sub(1)) else {
        return false;
    };
    if n == 0 || mine[last].0 != seq[n - 1] {
        return false;
    }
    // `reach[i]`: knock `i` can be `i_k` for the current `k`.
    let mut reach = vec![false; mine.len()];
    reach[last] = true;
    for k in (0..n - 1).rev() {
        let mut next = vec![false; mine.len()];
        for j in (0..mine.len()).filter(|&j| reach[j]) {
            let mut r = j;
            while r > 0 && mine[r - 1].0 == seq[k] {
                r -= 1;
                if mine[j].1.duration_since(mine[r].1) <= timeout {
                    next[r] = true;
                }
            }
        }
        reach = next;
    }
    reach.contains(&true)
}
