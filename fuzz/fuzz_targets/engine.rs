//! The simple-mode knock engine (`engine::Engine`, docs/behaviour.md §2) fed arbitrary knock streams.
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
//!   reference written from the rules of docs/behaviour.md §2.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portknock::port::KnockPort;
use portknock::engine::reference::{justified, Reference};
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
    let exact = distinct.len() <= max_sources && seqs.len() <= MAX_DOORS_PER_SOURCE;

    let mut engine = Engine::new(&seqs, timeout, max_sources);
    let mut reference = Reference::new(seqs.clone(), timeout);
    let mut history: HashMap<IpAddr, Vec<(KnockPort, Instant)>> = HashMap::new();
    let start = Instant::now();
    let mut t = 0u64;
    for (i, &(source, knock, gap)) in knocks.iter().enumerate() {
        t += gap;
        let now = start + Duration::from_millis(t);
        let got = engine.knock(source, knock, now).to_vec();
        let canonical = source.to_canonical();
        let mine = history.entry(canonical).or_default();
        mine.push((knock, now));

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
                    justified(mine, seq, timeout),
                    "knock {i}: unjustified open of door {door} {seq:?} by {source}: {mine:?}"
                ),
                _ => {}
            }
        }
        if exact {
            let want = reference.knock(canonical, knock, now);
            assert_eq!(got, want, "knock {i} from {source} on {knock}");
            assert_eq!(engine.tracked_sources(), reference.tracked_sources());
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
        | Outcome::Expired { door, .. }
        | Outcome::Scanned { door, .. } => door,
    }
}
