//! What each system *should* grant for the flood that was actually sent: the recorded knock
//! packets replayed offline through portknock's own engine (the docs/behaviour.md §2 state machine) and
//! through the rules of the in-kernel recipe. "Chance level" for a flood is this replay: a
//! flood that hits the knock ports at random walks some sources' sequences by luck.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use portknock::engine::{Engine, Outcome};
use portknock::port::KnockPort;

use super::flood::Sent;
use super::systems::{KNOCK_TIMEOUT, SEQUENCE};

/// Sources the spec's engine opens for this stream of knocks (timestamps as sent).
pub fn engine_grants(knocks: &[Sent]) -> usize {
    let sequence = SEQUENCE.iter().map(|&p| KnockPort::tcp(p)).collect();
    let mut engine = Engine::new(&[sequence], Duration::from_secs(KNOCK_TIMEOUT), 262_144);
    let t0 = Instant::now();
    let mut opened = HashSet::new();
    for k in knocks {
        let now = t0 + Duration::from_millis(u64::from(k.at_ms));
        let source = IpAddr::V4(Ipv4Addr::from(k.source));
        let out = engine.knock(source, KnockPort::tcp(k.port), now);
        if out.iter().any(|o| matches!(o, Outcome::Opened { .. })) {
            opened.insert(k.source);
        }
    }
    opened.len()
}

/// Sources the classic in-kernel recipe opens for this stream: `add` (not `update`), so a
/// stage element lives `KNOCK_TIMEOUT` from the knock that created it; wrong knocks are ignored.
pub fn recipe_grants(knocks: &[Sent]) -> usize {
    let [k1, k2, k3] = SEQUENCE;
    let ttl = KNOCK_TIMEOUT as u32 * 1000;
    // source → (k1 expiry, k2 expiry) in ms; 0 = absent.
    let mut stages: HashMap<u32, (u32, u32)> = HashMap::new();
    let mut opened = HashSet::new();
    for k in knocks {
        let t = k.at_ms;
        let live = |exp: u32| exp > t;
        let e = stages.entry(k.source).or_insert((0, 0));
        if k.port == k1 && !live(e.0) {
            e.0 = t + ttl;
        } else if k.port == k2 && live(e.0) && !live(e.1) {
            e.1 = t + ttl;
        } else if k.port == k3 && live(e.1) {
            opened.insert(k.source);
        }
    }
    opened.len()
}

/// Distinct sources among the knocks.
pub fn distinct_sources(knocks: &[Sent]) -> usize {
    knocks
        .iter()
        .map(|k| k.source)
        .collect::<HashSet<_>>()
        .len()
}
