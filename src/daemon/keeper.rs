//! Keeping the table in force while the daemon runs (docs/behaviour.md §4, self-healing):
//! which changes to portknock's table are foreign and must be undone, when, and with which
//! grants. Pure: the shell reads the kernel's notifications (`firewall::Monitor`), tells the
//! keeper, and reinstalls the policy when [`Keeper::take_heal`] says so.
//!
//! Own changes are those committed through the daemon's own netlink socket and by the `nft`
//! processes it ran (told apart by the committing socket's netlink port, which is the
//! process's pid in its own pid namespace for nft, and known for the daemon's socket); every
//! other change to the policy is foreign, since while the daemon runs portknock's commands
//! (`apply`, `remove`, `open`, `close`) ask the daemon to make their changes. A heal runs at
//! once; heals that follow each other within a second back off, doubling from 10 ms to a
//! second, so that a loop of flushes costs bounded CPU and log lines, and the last flush of
//! a storm is still undone.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::firewall::{Grant, Transaction};

/// How many `nft` processes run by the daemon are remembered as its own.
const OWN_NFT: usize = 8;
/// The first back-off after a heal that followed another within [`STORM`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Heals closer together than this, beyond the back-off, are a storm.
const STORM: Duration = Duration::from_secs(1);
/// Most heal warnings a minute; past it they are counted and summed up.
const HEAL_LINES_PER_MINUTE: u32 = 10;
/// The ledger is cleared of ended grants every so many additions.
const PRUNE_EVERY: usize = 4096;

/// A heal to make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heal {
    /// What happened, for the log: the first foreign change since the last heal (the largest
    /// of its transaction).
    pub reason: String,
    /// Grants still running that the daemon knows of, to put back if the kernel lost them.
    pub grants: Vec<Grant>,
    /// Whether this heal gets its own warning (the budget allows it).
    pub log: bool,
    /// How many heal warnings were held back since the last one written.
    pub held: u64,
}

/// What the keeper knows.
#[derive(Debug)]
pub struct Keeper {
    /// The netlink port of the daemon's socket for set changes.
    daemon: u32,
    own_nft: VecDeque<u32>,
    /// Grants made through the daemon, with when they end.
    ledger: HashMap<(IpAddr, u16), Instant>,
    added: usize,
    /// The table was taken away on purpose: nothing to keep until it is installed again.
    off: bool,
    /// A heal waiting to run, and why.
    pending: Option<String>,
    /// When the next heal may run.
    next: Option<Instant>,
    backoff: Duration,
    last_heal: Option<Instant>,
    /// The minute of heal warnings, how many were written in it, how many held back.
    lines_since: Option<Instant>,
    lines: u32,
    held: u64,
}

impl Keeper {
    /// A keeper for the daemon whose socket for set changes has netlink port `daemon`, the
    /// table in force.
    pub fn new(daemon: u32) -> Keeper {
        Keeper {
            daemon,
            own_nft: VecDeque::with_capacity(OWN_NFT),
            ledger: HashMap::new(),
            added: 0,
            off: false,
            pending: None,
            next: None,
            backoff: Duration::ZERO,
            last_heal: None,
            lines_since: None,
            lines: 0,
            held: 0,
        }
    }

    /// The daemon ran `nft` as process `pid`, whose socket has that netlink port: its
    /// transaction is the daemon's own.
    pub fn installed_by(&mut self, pid: u32) {
        if self.own_nft.len() == OWN_NFT {
            self.own_nft.pop_front();
        }
        self.own_nft.push_back(pid);
    }

    /// The daemon installed the policy: it keeps it from now on.
    pub fn turned_on(&mut self) {
        self.off = false;
    }

    /// The table was removed on purpose (`remove`, or `apply` with the engine off): nothing
    /// is kept, and a heal that was waiting is dropped.
    pub fn turned_off(&mut self) {
        self.off = true;
        self.pending = None;
    }

    /// Whether the table was removed on purpose.
    pub fn is_off(&self) -> bool {
        self.off
    }

    /// A grant of (source, port) made through the daemon at `now`, for `open_for`.
    pub fn granted(&mut self, source: IpAddr, port: u16, now: Instant, open_for: Duration) {
        self.ledger
            .insert((source.to_canonical(), port), now + open_for);
        self.added += 1;
        if self.added.is_multiple_of(PRUNE_EVERY) {
            self.ledger.retain(|_, end| *end > now);
        }
    }

    /// A grant of (source, port) taken back through the daemon.
    pub fn revoked(&mut self, source: IpAddr, port: u16) {
        self.ledger.remove(&(source.to_canonical(), port));
    }

    /// A transaction that changed portknock's table. A foreign change to the policy makes a
    /// heal wait; the daemon's own changes, and run-time elements, do not.
    pub fn observe(&mut self, transaction: &Transaction, now: Instant) {
        let portid = transaction.portid;
        // An nft run commits once: its port is forgotten then, so that a later process that
        // gets the same pid is no one's.
        let nft = self.own_nft.iter().position(|&p| p == portid);
        if let Some(i) = nft {
            self.own_nft.remove(i);
        }
        if portid == self.daemon || nft.is_some() || self.off {
            return;
        }
        // The largest change names it: a flushed ruleset deletes rules and chains before the
        // table, and it is the table that was deleted.
        let policy = transaction.changes.iter().filter(|c| c.alters_policy());
        if let Some(change) = policy.min_by_key(|c| c.object) {
            let by = format!("{} (pid {})", transaction.process, transaction.pid);
            self.wait(format!("{change} by {by}"), now);
        }
    }

    /// What the kernel holds is not known any more (notifications were lost, a commit failed
    /// half-way for all the daemon can tell): the policy is put back, to agree with it again.
    pub fn lost_track(&mut self, why: &str, now: Instant) {
        if !self.off {
            self.wait(why.to_string(), now);
        }
    }

    fn wait(&mut self, reason: String, now: Instant) {
        self.pending.get_or_insert(reason);
        self.next.get_or_insert(now);
    }

    /// When the heal that waits may run; `None` when none waits.
    pub fn due(&self) -> Option<Instant> {
        self.pending.as_ref().and(self.next)
    }

    /// The heal to make at `now`, if one waits and its time has come.
    pub fn take_heal(&mut self, now: Instant) -> Option<Heal> {
        if self.due().is_none_or(|due| due > now) {
            return None;
        }
        let reason = self.pending.take()?;
        // A heal that comes as soon as the back-off lets it carries the storm on.
        self.backoff = match self.last_heal {
            Some(last) if now.saturating_duration_since(last) < self.backoff + STORM => {
                (self.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF)
            }
            _ => Duration::ZERO,
        };
        self.last_heal = Some(now);
        self.next = Some(now + self.backoff);
        let grants = self.grants(now);
        let (log, held) = self.line(now);
        Some(Heal {
            reason,
            grants,
            log,
            held,
        })
    }

    /// The grants made through the daemon that still run at `now`, with the time they have
    /// left: what a new installation keeps when the kernel lost them.
    pub fn grants(&mut self, now: Instant) -> Vec<Grant> {
        self.ledger.retain(|_, end| *end > now);
        (self.ledger.iter())
            .map(|(&(source, port), &end)| Grant {
                source,
                port,
                remaining: end - now,
            })
            .collect()
    }

    /// Whether a heal warning may be written at `now`, and how many were held back before it.
    fn line(&mut self, now: Instant) -> (bool, u64) {
        if self
            .lines_since
            .is_none_or(|since| now.saturating_duration_since(since) >= Duration::from_secs(60))
        {
            self.lines_since = Some(now);
            self.lines = 0;
        }
        if self.lines < HEAL_LINES_PER_MINUTE {
            self.lines += 1;
            (true, std::mem::take(&mut self.held))
        } else {
            self.held += 1;
            (false, 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::{Object, TableChange};

    const DAEMON: u32 = 100;

    fn transaction(pid: u32, changes: Vec<TableChange>) -> Transaction {
        Transaction {
            portid: pid,
            pid,
            process: "nft".to_string(),
            changes,
        }
    }

    fn change(added: bool, object: Object, name: &str) -> TableChange {
        TableChange {
            added,
            object,
            name: name.to_string(),
        }
    }

    fn deleted_table() -> Vec<TableChange> {
        vec![change(false, Object::Table, "")]
    }

    #[test]
    fn a_foreign_change_to_the_policy_is_healed_at_once_with_the_grants_still_running() {
        let t0 = Instant::now();
        let mut keeper = Keeper::new(DAEMON);
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        let b: IpAddr = "fd00:5eed::2".parse().unwrap();
        keeper.granted(a, 22, t0, Duration::from_secs(30));
        keeper.granted(b, 2222, t0, Duration::from_secs(5));
        keeper.granted(a, 80, t0, Duration::from_secs(60));
        keeper.revoked(a, 80);
        assert_eq!(keeper.due(), None);
        let later = t0 + Duration::from_secs(10);
        keeper.observe(&transaction(7, deleted_table()), later);
        assert_eq!(keeper.due(), Some(later), "at once");
        let heal = keeper.take_heal(later).expect("a heal");
        assert_eq!(heal.reason, "table inet portknock deleted by nft (pid 7)");
        assert_eq!(
            heal.grants,
            [Grant {
                source: a,
                port: 22,
                remaining: Duration::from_secs(20)
            }],
            "the ended and the revoked grants are not put back"
        );
        assert!(heal.log);
        assert_eq!(keeper.take_heal(later), None, "one heal per change");
    }

    #[test]
    fn own_changes_and_run_time_elements_are_left_alone() {
        let now = Instant::now();
        let mut keeper = Keeper::new(DAEMON);
        keeper.installed_by(555);
        keeper.observe(&transaction(DAEMON, deleted_table()), now);
        keeper.observe(&transaction(555, deleted_table()), now);
        let grants = vec![change(true, Object::Elements, "granted4")];
        keeper.observe(&transaction(7, grants), now);
        assert_eq!(keeper.due(), None);
        // An nft run commits once: a second transaction from its port is another's.
        keeper.observe(&transaction(555, deleted_table()), now);
        assert_eq!(keeper.due(), Some(now));
        keeper.take_heal(now);
        // Only the last few nft processes are the daemon's.
        keeper.installed_by(556);
        for pid in 1000..1000 + OWN_NFT as u32 {
            keeper.installed_by(pid);
        }
        let later = now + MAX_BACKOFF + STORM;
        keeper.observe(&transaction(556, deleted_table()), later);
        assert!(keeper.take_heal(later).is_some());
    }

    #[test]
    fn the_largest_change_of_the_first_foreign_transaction_names_the_heal_and_a_removal_on_purpose_stops_it(
    ) {
        let now = Instant::now();
        let mut keeper = Keeper::new(DAEMON);
        let changes = vec![
            change(true, Object::Elements, "granted4"),
            change(false, Object::Rule, "guard"),
            change(false, Object::Table, ""),
        ];
        keeper.observe(&transaction(7, changes), now);
        keeper.observe(&transaction(8, deleted_table()), now);
        assert_eq!(
            keeper.take_heal(now).map(|h| h.reason).as_deref(),
            Some("table inet portknock deleted by nft (pid 7)"),
            "the largest change of the first foreign transaction"
        );
        keeper.observe(&transaction(8, deleted_table()), now);
        keeper.turned_off();
        assert!(keeper.is_off());
        assert_eq!(keeper.due(), None, "the waiting heal is dropped");
        keeper.observe(&transaction(8, deleted_table()), now);
        keeper.lost_track("notifications were lost", now);
        assert_eq!(keeper.due(), None, "nothing is kept while off");
        keeper.turned_on();
        keeper.lost_track("notifications were lost", now);
        let heal = keeper.take_heal(now).expect("kept again");
        assert_eq!(heal.reason, "notifications were lost");
    }

    #[test]
    fn a_storm_of_changes_backs_off_and_its_lines_are_bounded() {
        let t0 = Instant::now();
        let mut keeper = Keeper::new(DAEMON);
        let mut now = t0;
        let mut heals = Vec::new();
        let mut logged = 0;
        // A flush every millisecond for three seconds.
        for _ in 0..3000 {
            now += Duration::from_millis(1);
            keeper.observe(&transaction(7, deleted_table()), now);
            if let Some(heal) = keeper.take_heal(now) {
                heals.push(now - t0);
                logged += usize::from(heal.log);
            }
        }
        assert_eq!(
            heals[0],
            Duration::from_millis(1),
            "the first heal is at once"
        );
        let gaps: Vec<Duration> = heals.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.windows(2).all(|g| g[1] >= g[0]),
            "backing off: {gaps:?}"
        );
        assert_eq!(gaps.last(), Some(&MAX_BACKOFF));
        assert!(heals.len() < 12, "bounded: {} heals", heals.len());
        assert!(logged <= HEAL_LINES_PER_MINUTE as usize);
        // The storm is over; its last flush is still healed, when the back-off allows.
        let due = keeper.due().expect("the last flush waits");
        assert!(due > now);
        assert!(keeper.take_heal(due).is_some());
        // After a quiet spell, a change is healed at once again.
        let calm = due + MAX_BACKOFF + STORM;
        keeper.observe(&transaction(7, deleted_table()), calm);
        assert!(keeper.take_heal(calm).is_some());
    }

    #[test]
    fn heal_warnings_past_the_budget_are_counted_and_reported_with_the_next() {
        let t0 = Instant::now();
        let mut keeper = Keeper::new(DAEMON);
        let mut logged = Vec::new();
        for i in 0..HEAL_LINES_PER_MINUTE + 3 {
            // Far enough apart that no back-off applies.
            let now = t0 + STORM * (i + 1) * 2;
            keeper.observe(&transaction(7, deleted_table()), now);
            let heal = keeper.take_heal(now).expect("a heal");
            logged.push((heal.log, heal.held));
        }
        assert!(logged[..HEAL_LINES_PER_MINUTE as usize]
            .iter()
            .all(|&(log, held)| log && held == 0));
        assert!(logged[HEAL_LINES_PER_MINUTE as usize..]
            .iter()
            .all(|&(log, _)| !log));
        let next_minute = t0 + Duration::from_secs(120);
        keeper.observe(&transaction(7, deleted_table()), next_minute);
        let heal = keeper.take_heal(next_minute).expect("a heal");
        assert_eq!((heal.log, heal.held), (true, 3));
    }
}
