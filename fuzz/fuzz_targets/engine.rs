//! The simple-mode knock engine (`engine::Engine`, SPEC §2) fed arbitrary knock streams.
//!
//! The input decodes (with `arbitrary`, see `Input`) into a few doors whose sequences are drawn from a small
//! pool of TCP and UDP ports (not validated, so empty sequences and repeated ports occur), a
//! knock timeout, `max_sources` from 1 to 64, and knocks: a source from a small pool of IPv4
//! and IPv6 addresses (one of them the IPv4-mapped form of another), a port from the pool, and
//! the time since the previous knock, in 1/64ths of the timeout so that its edge is hit exactly.
//!
//! Checks, after every knock:
//! - `tracked_sources() <= max_sources`;
//! - every outcome names a door that uses the knocked port; `Armed` names that door's final
//!   port, `Progress` a step short of it;
//! - an `Opened { door }` is justified by the source's own knocks, as this target records them:
//!   they end with the door's sequence in order, each knock within the timeout of the previous
//!   one, with nothing of the door's ports in between but repeats of the port just knocked
//!   (retransmissions);
//! - when nothing can be forgotten (no more distinct sources than `max_sources`, no more doors
//!   than `MAX_DOORS_PER_SOURCE`), the outcomes and `tracked_sources` equal those of a
//!   reference written from the rules of SPEC §2.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portknock::config::{KnockPort, SimpleDoor};
use portknock::engine::{DoorId, Engine, Outcome, MAX_DOORS_PER_SOURCE};

const PORTS: [KnockPort; 7] = [
    KnockPort::tcp(1),
    KnockPort::tcp(2),
    KnockPort::tcp(3),
    KnockPort::udp(3),
    KnockPort::tcp(4),
    KnockPort::udp(5),
    KnockPort::tcp(6),
];

fn sources() -> [IpAddr; 8] {
    let v4 = |d| Ipv4Addr::new(198, 18, 0, d);
    let v6 = |d| IpAddr::V6(Ipv6Addr::new(0xfd00, 0x5eed, 0, 0, 0, 0, 0, d));
    [
        IpAddr::V4(v4(1)),
        IpAddr::V4(v4(2)),
        IpAddr::V4(v4(3)),
        IpAddr::V6(v4(1).to_ipv6_mapped()),
        IpAddr::V4(v4(4)),
        v6(1),
        v6(2),
        v6(3),
    ]
}

/// The input, decoded with `arbitrary` front to back so that seeds are written by hand:
/// `timeout` u16 LE (ms = timeout % 5000 + 1), `max_sources` u8 (% 64 + 1), then doors and then
/// knocks, each list as items preceded by an odd byte and ended by an even one (or the end):
/// a door is a list of port bytes (index into `PORTS`), a knock is 3 bytes: source (index into
/// `sources()`), port, and gap since the previous knock in 1/64ths of the timeout.
struct Input {
    timeout: u16,
    max_sources: u8,
    doors: Vec<Vec<u8>>,
    knocks: Vec<(u8, u8, u8)>,
}

fn decode(data: &[u8]) -> arbitrary::Result<Input> {
    let mut u = Unstructured::new(data);
    let timeout = u.arbitrary()?;
    let max_sources = u.arbitrary()?;
    let mut doors = Vec::new();
    while u.arbitrary::<bool>()? {
        doors.push(
            u.arbitrary_iter::<u8>()?
                .collect::<arbitrary::Result<_>>()?,
        );
    }
    let knocks = u.arbitrary_iter()?.collect::<arbitrary::Result<_>>()?;
    Ok(Input {
        timeout,
        max_sources,
        doors,
        knocks,
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = decode(data) else {
        return;
    };
    let seqs: Vec<Vec<KnockPort>> = input
        .doors
        .iter()
        .take(12)
        .map(|d| {
            d.iter()
                .take(6)
                .map(|&p| PORTS[usize::from(p) % PORTS.len()])
                .collect()
        })
        .collect();
    let doors: Vec<SimpleDoor> = seqs
        .iter()
        .enumerate()
        .map(|(i, s)| SimpleDoor {
            protected: 1000 + i as u16,
            sequence: s.clone(),
        })
        .collect();
    let timeout_ms = u64::from(input.timeout % 5000) + 1;
    let timeout = Duration::from_millis(timeout_ms);
    let max_sources = usize::from(input.max_sources % 64) + 1;
    let pool = sources();
    let knocks: Vec<(IpAddr, KnockPort, u64)> = input
        .knocks
        .iter()
        .take(1024)
        .map(|&(s, p, gap)| {
            let source = pool[usize::from(s) % pool.len()];
            let port = PORTS[usize::from(p) % PORTS.len()];
            (source, port, u64::from(gap) * timeout_ms / 64)
        })
        .collect();

    let distinct: HashSet<IpAddr> = knocks.iter().map(|k| k.0.to_canonical()).collect();
    let exact = distinct.len() <= max_sources && doors.len() <= MAX_DOORS_PER_SOURCE;

    let mut engine = Engine::new(&doors, timeout, max_sources);
    let mut reference = Reference {
        seqs: &seqs,
        timeout,
        state: HashMap::new(),
    };
    let mut history: HashMap<IpAddr, Vec<(KnockPort, u64)>> = HashMap::new();
    let start = Instant::now();
    let mut t = 0u64;
    for (i, &(source, knock, gap)) in knocks.iter().enumerate() {
        t += gap;
        let now = start + Duration::from_millis(t);
        let got = engine.knock(source, knock, now).to_vec();
        let canonical = source.to_canonical();
        let mine = history.entry(canonical).or_default();
        mine.push((knock, t));

        assert!(engine.tracked_sources() <= max_sources);
        for outcome in &got {
            let door = door_of(outcome);
            let seq = &seqs[door];
            assert!(
                seq.contains(&knock),
                "knock {i}: {outcome:?} for a door without {knock}"
            );
            match *outcome {
                Outcome::Armed { final_knock, .. } => {
                    assert!(seq.len() >= 2);
                    assert_eq!(final_knock, seq[seq.len() - 1]);
                }
                Outcome::Progress { step, .. } => assert!(step >= 1 && step + 1 < seq.len()),
                Outcome::Opened { .. } => assert!(
                    justified(mine, seq, timeout_ms),
                    "knock {i}: unjustified open of door {door} {seq:?} by {source}: {mine:?}"
                ),
                _ => {}
            }
        }
        if exact {
            let want = reference.knock(canonical, knock, now);
            assert_eq!(got, want, "knock {i} from {source} on {knock}");
            let tracked: HashSet<IpAddr> = reference.state.keys().map(|k| k.0).collect();
            assert_eq!(engine.tracked_sources(), tracked.len());
        }
    }
});

fn door_of(outcome: &Outcome) -> DoorId {
    match *outcome {
        Outcome::Progress { door, .. }
        | Outcome::Armed { door, .. }
        | Outcome::Opened { door }
        | Outcome::Reset { door, .. }
        | Outcome::Retransmit { door }
        | Outcome::Expired { door, .. } => door,
    }
}

/// Whether the last of `history` (one source's knocks with their times in ms) completes `seq`:
/// knocks `i_0 < i_1 < ... < i_{n-1}` = the last exist with the ports of `seq` in order, each
/// within the timeout of the one before, and every knock of a port of `seq` between `i_k` and
/// `i_{k+1}` is a repeat of `seq[k]`. Independent of the engine's state machine.
fn justified(history: &[(KnockPort, u64)], seq: &[KnockPort], timeout_ms: u64) -> bool {
    let mine: Vec<(KnockPort, u64)> = history
        .iter()
        .copied()
        .filter(|(k, _)| seq.contains(k))
        .collect();
    let (n, last) = (seq.len(), mine.len() - 1);
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
                if mine[j].1 - mine[r].1 <= timeout_ms {
                    next[r] = true;
                }
            }
        }
        reach = next;
    }
    reach.contains(&true)
}

/// SPEC §2 for every (source, door), written out without the engine's data structures: no
/// bound on sources or doors, so it matches the engine only while the engine forgets nothing.
struct Reference<'a> {
    seqs: &'a [Vec<KnockPort>],
    timeout: Duration,
    /// (source, door) → knocks right so far, time of the last one that counted.
    state: HashMap<(IpAddr, DoorId), (usize, Instant)>,
}

impl Reference<'_> {
    fn knock(&mut self, source: IpAddr, knock: KnockPort, now: Instant) -> Vec<Outcome> {
        let mut out = Vec::new();
        for (door, seq) in self.seqs.iter().enumerate() {
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
        out
    }
}
