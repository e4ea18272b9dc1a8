//! Every promise the daemon makes about a knock, checked on the core alone: no root, no kernel,
//! a clock and a minute chosen by the test.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use super::*;
use crate::config::{AdvancedDoor, Secret, Settings, SimpleDoor};
use crate::otp::{UsedOtps, MAC_LEN};
use crate::port::KnockPort;

const MINUTE: u32 = 29_000_000;
const KNOCK_TIMEOUT: Duration = Duration::from_secs(10);
const SIMPLE_OPEN: Duration = Duration::from_secs(30);
const ADVANCED_OPEN: Duration = Duration::from_secs(3600);

fn a() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2))
}

fn b() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3))
}

fn tcp(ports: &[u16]) -> Vec<KnockPort> {
    ports.iter().copied().map(KnockPort::tcp).collect()
}

/// Doors 22 (7000, 9000, 8000), 23 (7000, 9000, 6000) and 24 (5000, 5001), and the advanced
/// door 2222 with its knock port 2000; `max_sources` bounds the engine.
fn config(max_sources: usize, ipv6: bool) -> Config {
    let dir = Path::new("/etc/portknock");
    Config {
        dir: dir.to_path_buf(),
        settings: Settings {
            enabled: true,
            simple: true,
            advanced: true,
            knock_timeout: KNOCK_TIMEOUT,
            simple_open: SIMPLE_OPEN,
            advanced_open: ADVANCED_OPEN,
            max_sources,
            ipv6,
            ..Settings::defaults(dir)
        },
        simple: vec![
            SimpleDoor {
                protected: 22,
                sequence: tcp(&[7000, 9000, 8000]),
            },
            SimpleDoor {
                protected: 23,
                sequence: tcp(&[7000, 9000, 6000]),
            },
            SimpleDoor {
                protected: 24,
                sequence: tcp(&[5000, 5001]),
            },
        ],
        advanced: vec![AdvancedDoor {
            protected: 2222,
            knock_port: 2000,
            open_secret: Secret::new("opensecret1"),
            close_secret: Secret::new("closesecret1"),
        }],
    }
}

/// The used-OTP record in memory, which can be told to fail as a full disk would.
#[derive(Default)]
struct Memory {
    used: UsedOtps,
    broken: bool,
    recorded: usize,
}

impl Record for Memory {
    type Error = &'static str;

    fn is_used(&self, mac: &[u8; MAC_LEN]) -> bool {
        self.used.is_used(mac)
    }

    fn record(
        &mut self,
        mac: [u8; MAC_LEN],
        minute: u32,
        now_minute: u32,
        skew: u32,
    ) -> Result<Recorded, &'static str> {
        if self.broken {
            return Err("no space left on device");
        }
        self.recorded += 1;
        Ok(
            match self.used.check_and_record(mac, minute, now_minute, skew) {
                Ok(()) => Recorded::New,
                Err(why) => Recorded::Refused(why),
            },
        )
    }
}

/// A core at a fixed start, fed packets at offsets from it.
struct Daemon {
    core: Core,
    start: Instant,
    record: Memory,
}

impl Daemon {
    fn new(config: Config) -> Daemon {
        let start = Instant::now();
        Daemon {
            core: Core::new(config, start, 1),
            start,
            record: Memory::default(),
        }
    }

    fn at(&mut self, ms: u64, packet: &Packet) -> (Effects, Option<Accepted>) {
        let now = self.start + Duration::from_millis(ms);
        let mut effects = Effects::default();
        let accepted = self
            .core
            .knock(packet, now, MINUTE, &mut self.record, &mut effects);
        (effects, accepted)
    }

    /// TCP knocks from `source` on `ports`, one a millisecond from `ms`; everything they did.
    fn knocks(&mut self, ms: u64, source: IpAddr, ports: &[u16]) -> Effects {
        let mut effects = Effects::default();
        for (i, &port) in (0..).zip(ports) {
            let now = self.start + Duration::from_millis(ms + i);
            let packet = syn(source, port);
            let accepted = (self.core).knock(&packet, now, MINUTE, &mut self.record, &mut effects);
            assert_eq!(accepted, None, "a TCP knock is no OTP");
        }
        effects
    }
}

/// The changes `queue` makes, to compare with what the core decided.
fn expect(queue: impl FnOnce(&mut Changes)) -> Changes {
    let mut changes = Changes::new();
    queue(&mut changes);
    changes
}

fn arm(c: &mut Changes, source: IpAddr, final_knock: u16, protected: u16) {
    c.arm(
        source,
        KnockPort::tcp(final_knock),
        protected,
        KNOCK_TIMEOUT,
    );
}

fn disarm(c: &mut Changes, source: IpAddr, final_knock: u16, protected: u16) {
    c.disarm(source, KnockPort::tcp(final_knock), protected);
}

fn syn(source: IpAddr, port: u16) -> Packet {
    Packet {
        source,
        knock: KnockPort::tcp(port),
        payload: Vec::new(),
    }
}

fn datagram(source: IpAddr, port: u16, payload: &[u8]) -> Packet {
    Packet {
        source,
        knock: KnockPort::udp(port),
        payload: payload.to_vec(),
    }
}

fn otp_packet(source: IpAddr, secret: &str) -> Packet {
    let payload = otp::payload(&Secret::new(secret), source, MINUTE);
    datagram(source, 2000, &payload)
}

#[test]
fn a_sequence_arms_its_final_knock_then_grants_and_disarms() {
    let mut d = Daemon::new(config(16, true));
    let before_last = d.knocks(0, a(), &[5000]);
    assert_eq!(before_last.changes, expect(|c| arm(c, a(), 5001, 24)));
    assert_eq!(before_last.events, []);
    let last = d.knocks(10, a(), &[5001]);
    let expected = expect(|c| {
        c.grant(a(), 24, SIMPLE_OPEN);
        disarm(c, a(), 5001, 24);
    });
    assert_eq!(last.changes, expected);
    assert_eq!(
        last.events,
        [Event::Opened {
            source: a(),
            door: 24
        }]
    );
}

#[test]
fn a_source_has_one_armed_door_the_latest() {
    let mut d = Daemon::new(config(16, true));
    let both = d.knocks(0, a(), &[7000, 9000]);
    // 7000, 9000 arm 22 and 23 together: 23, the later, stays armed in the kernel.
    let expected = expect(|c| {
        arm(c, a(), 8000, 22);
        disarm(c, a(), 8000, 22);
        arm(c, a(), 6000, 23);
    });
    assert_eq!(both.changes, expected);
    // The final knock of the displaced door still opens it, by the daemon.
    let open = d.knocks(10, a(), &[8000]);
    assert_eq!(
        open.events,
        [Event::Opened {
            source: a(),
            door: 22
        }]
    );
    assert_eq!(
        open.changes,
        expect(|c| c.grant(a(), 22, SIMPLE_OPEN)),
        "8000 is no knock port of 23, which stays armed"
    );
}

#[test]
fn progress_the_engine_lets_go_is_disarmed() {
    let mut d = Daemon::new(config(16, true));
    d.knocks(0, a(), &[5000]);
    let kept = d.knocks(5, a(), &[5000, 7000]);
    assert_eq!(
        kept.changes,
        Changes::new(),
        "a retransmission and another door's knock leave the arming alone"
    );
    // Too late: the progress expired, and the late knock's own door is disarmed with it.
    let late = KNOCK_TIMEOUT.as_millis() as u64 + 1;
    let expired = d.knocks(late, a(), &[7000]);
    assert_eq!(expired.changes, expect(|c| disarm(c, a(), 5001, 24)));
    assert_eq!(expired.events, []);
}

#[test]
fn a_wrong_knock_resets_and_says_so() {
    let mut d = Daemon::new(config(16, true));
    d.knocks(0, a(), &[7000, 9000]);
    let reset = d.knocks(10, a(), &[5001]);
    assert_eq!(
        reset.changes,
        Changes::new(),
        "5001 is not a door of 22 or 23"
    );
    let reset = d.knocks(20, a(), &[7000]);
    assert_eq!(
        reset.events,
        [
            Event::WrongSequence {
                source: a(),
                door: 22
            },
            Event::WrongSequence {
                source: a(),
                door: 23
            }
        ],
        "7000 restarts both"
    );
    assert_eq!(reset.changes, expect(|c| disarm(c, a(), 6000, 23)));
}

#[test]
fn an_expired_sequence_says_so_and_starts_over() {
    let mut d = Daemon::new(config(16, true));
    d.knocks(0, a(), &[7000]);
    let late = KNOCK_TIMEOUT.as_millis() as u64 + 1;
    let expired = d.knocks(late, a(), &[7000]);
    assert_eq!(
        expired.events,
        [
            Event::Expired {
                source: a(),
                door: 22
            },
            Event::Expired {
                source: a(),
                door: 23
            }
        ]
    );
}

#[test]
fn arming_one_source_past_the_bound_disarms_the_least_recent() {
    let mut d = Daemon::new(config(1, true));
    assert_eq!(
        d.knocks(0, a(), &[5000]).changes,
        expect(|c| arm(c, a(), 5001, 24))
    );
    let b_arms = d.knocks(1, b(), &[5000]);
    assert_eq!(
        b_arms.changes,
        expect(|c| {
            disarm(c, a(), 5001, 24);
            arm(c, b(), 5001, 24);
        })
    );
}

#[test]
fn an_open_otp_is_recorded_then_granted_in_a_transaction_of_its_own() {
    let mut d = Daemon::new(config(16, true));
    let (effects, accepted) = d.at(0, &otp_packet(a(), "opensecret1"));
    assert_eq!(
        effects.changes,
        Changes::new(),
        "nothing in the shared batch"
    );
    assert_eq!(effects.events, []);
    assert_eq!(
        accepted,
        Some(Accepted {
            source: a(),
            door: 2222,
            open: true,
            changes: expect(|c| c.grant(a(), 2222, ADVANCED_OPEN)),
        })
    );
    assert_eq!(d.record.recorded, 1);
}

#[test]
fn a_close_otp_revokes() {
    let mut d = Daemon::new(config(16, true));
    let (_, accepted) = d.at(0, &otp_packet(a(), "closesecret1"));
    let accepted = accepted.expect("accepted");
    assert!(!accepted.open);
    assert_eq!(accepted.changes, expect(|c| c.revoke(a(), 2222)));
}

#[test]
fn a_replay_is_refused_before_anything_changes_from_any_address() {
    let mut d = Daemon::new(config(16, true));
    let packet = otp_packet(a(), "opensecret1");
    assert!(d.at(0, &packet).1.is_some());
    let copy = Packet {
        source: b(),
        ..packet.clone()
    };
    for replay in [packet, copy] {
        let (effects, accepted) = d.at(1, &replay);
        assert_eq!(accepted, None);
        assert_eq!(effects.changes, Changes::new());
        assert_eq!(
            effects.events,
            [Event::Replay {
                source: replay.source,
                port: 2000
            }]
        );
    }
    assert_eq!(d.record.recorded, 1, "a replay is not even recorded again");
}

#[test]
fn an_otp_that_cannot_be_recorded_grants_nothing() {
    let mut d = Daemon::new(config(16, true));
    d.record.broken = true;
    let (effects, accepted) = d.at(0, &otp_packet(a(), "opensecret1"));
    assert_eq!(accepted, None);
    assert_eq!(effects.changes, Changes::new());
    assert_eq!(
        effects.events,
        [Event::NotRecorded {
            source: a(),
            door: 2222,
            error: "no space left on device".to_string()
        }]
    );
    // The disk is back: the same OTP was never used, so it works now.
    d.record.broken = false;
    assert!(d.at(1, &otp_packet(a(), "opensecret1")).1.is_some());
}

#[test]
fn otps_that_verify_nothing_are_not_recorded() {
    let mut d = Daemon::new(config(16, true));
    let wrong_secret = otp_packet(a(), "not-the-secret");
    let (effects, accepted) = d.at(0, &wrong_secret);
    assert_eq!(accepted, None);
    assert_eq!(
        effects.events,
        [Event::BadOtp {
            source: a(),
            door: 2222
        }]
    );
    let (effects, _) = d.at(1, &datagram(a(), 2000, b"hello"));
    assert_eq!(
        effects.events,
        [Event::NotAnOtp {
            source: a(),
            port: 2000
        }]
    );
    // Another source's password: valid for the secret, not for this source.
    let theirs = Packet {
        source: b(),
        ..otp_packet(a(), "opensecret1")
    };
    assert_eq!(d.at(2, &theirs).1, None);
    assert_eq!(d.record.recorded, 0);
}

/// The OTP of `secret` for `source` and `minute`, to the door 2000.
fn otp_of_minute(source: IpAddr, secret: &str, minute: u32) -> Packet {
    let payload = otp::payload(&Secret::new(secret), source, minute);
    datagram(source, 2000, &payload)
}

#[test]
fn a_bad_otp_from_a_skewed_clock_says_by_how_much() {
    let mut d = Daemon::new(config(16, true));
    let cases = [
        ("opensecret1", MINUTE + 3, Some(3)),
        ("closesecret1", MINUTE - 5, Some(-5)),
        ("opensecret1", MINUTE + 2, Some(2)),
        ("opensecret1", MINUTE - 10, Some(-10)),
        // Past the widest window the configuration allows: nothing to say about the clock.
        ("opensecret1", MINUTE + 11, None),
        ("not-the-secret", MINUTE + 3, None),
    ];
    for (ms, (secret, minute, skew)) in (0..).zip(cases) {
        let (effects, accepted) = d.at(ms, &otp_of_minute(a(), secret, minute));
        assert_eq!(accepted, None);
        assert_eq!(effects.changes, Changes::new());
        let expected = match skew {
            Some(minutes) => Event::ClockSkew {
                source: a(),
                door: 2222,
                minutes,
            },
            None => Event::BadOtp {
                source: a(),
                door: 2222,
            },
        };
        assert_eq!(effects.events, [expected], "{secret} {minute}");
    }
    assert_eq!(d.record.recorded, 0, "nothing is recorded");
    let otp = d.core.counters().otp;
    let count = |o: metrics::Otp| otp[o as usize];
    assert_eq!(
        (
            count(metrics::Otp::ClockSkew),
            count(metrics::Otp::NoSecretMatches)
        ),
        (4, 2)
    );
}

#[test]
fn the_clock_skew_is_looked_for_only_when_the_line_budget_allows_the_line() {
    let mut d = Daemon::new(config(16, true));
    let skewed = otp_of_minute(a(), "opensecret1", MINUTE + 3);
    let mut said = 0;
    for ms in 0..25 {
        said += d.at(ms, &skewed).0.events.len();
    }
    assert_eq!(said, JUNK_LINES_PER_SECOND as usize);
    // What was not looked at counts as what it seems: a password no secret made.
    let otp = d.core.counters().otp;
    let count = |o: metrics::Otp| otp[o as usize];
    assert_eq!(
        (
            count(metrics::Otp::ClockSkew),
            count(metrics::Otp::NoSecretMatches)
        ),
        (20, 5)
    );
    // Past the budget the event is not even worded: what wording it costs is bounded too.
    let mut effects = Effects::default();
    d.core.junk(d.start, &mut effects, |_| {
        unreachable!("the budget of this second is spent")
    });
    assert_eq!(effects.events, []);
}

#[test]
fn an_otp_the_record_cannot_vouch_for_is_refused() {
    let mut d = Daemon::new(config(16, true));
    // The record has forgotten an OTP of a later minute, so it cannot tell this one from a
    // replay.
    d.record
        .used
        .check_and_record([9; MAC_LEN], MINUTE, MINUTE, 0)
        .expect("recorded");
    d.record
        .used
        .check_and_record([8; MAC_LEN], MINUTE + 5, MINUTE + 5, 0)
        .expect("recorded, and the older one forgotten");
    let (effects, accepted) = d.at(0, &otp_packet(a(), "opensecret1"));
    assert_eq!(accepted, None);
    assert_eq!(
        effects.events,
        [Event::OtpRefused {
            source: a(),
            door: 2222,
            why: Refused::TooOld
        }]
    );
}

#[test]
fn a_udp_datagram_to_a_port_of_no_advanced_door_is_a_simple_knock() {
    let mut d = Daemon::new(config(16, true));
    let (effects, accepted) = d.at(0, &datagram(a(), 2001, b"x"));
    assert_eq!(
        (effects.changes, effects.events, accepted),
        (Changes::new(), vec![], None)
    );
    let (effects, _) = d.at(0, &syn(a(), 2000));
    assert_eq!(effects.events, [], "a SYN to an OTP port is no OTP");
}

#[test]
fn ipv6_knocks_are_ignored_when_off() {
    let v6: IpAddr = "fd00:5eed::2".parse().unwrap();
    let mut d = Daemon::new(config(16, false));
    assert_eq!(d.knocks(0, v6, &[5000, 5001]).events, []);
    assert_eq!(d.at(2, &otp_packet(v6, "opensecret1")).1, None);
    let mut d = Daemon::new(config(16, true));
    assert_eq!(
        d.knocks(0, v6, &[5000, 5001]).events,
        [Event::Opened {
            source: v6,
            door: 24
        }]
    );
}

#[test]
fn lines_about_junk_are_budgeted_per_second_and_what_was_held_is_counted() {
    let mut d = Daemon::new(config(16, true));
    let junk = datagram(a(), 2000, b"junk");
    let mut logged = 0;
    for i in 0..25 {
        logged += d.at(i, &junk).0.events.len();
    }
    assert_eq!(logged, JUNK_LINES_PER_SECOND as usize);
    // Grants are always logged.
    assert_eq!(
        d.knocks(30, a(), &[5000, 5001]).events,
        [Event::Opened {
            source: a(),
            door: 24
        }]
    );
    let (effects, _) = d.at(999, &junk);
    assert_eq!(effects.events, [], "still the same second");
    let (effects, _) = d.at(1000, &junk);
    assert_eq!(
        effects.events,
        [
            Event::HeldBack { held: 6 },
            Event::NotAnOtp {
                source: a(),
                port: 2000
            }
        ]
    );
    let (effects, _) = d.at(2000, &junk);
    assert_eq!(
        effects.events,
        [Event::NotAnOtp {
            source: a(),
            port: 2000
        }],
        "nothing held in the last second, nothing said about it"
    );
}

#[test]
fn overruns_are_counted_and_budgeted_like_junk() {
    let mut d = Daemon::new(config(16, true));
    let now = d.start;
    let mut effects = Effects::default();
    for _ in 0..3 {
        d.core.overrun(now, &mut effects);
    }
    assert_eq!(
        effects.events,
        [1, 2, 3].map(|overruns| Event::Overrun { overruns })
    );
}

#[test]
fn a_reload_starts_knock_progress_over_with_the_new_doors() {
    let mut d = Daemon::new(config(16, true));
    d.knocks(0, a(), &[5000]);
    let mut smaller = config(16, true);
    smaller.simple.truncate(1);
    d.core.reload(smaller);
    assert_eq!(d.core.config().simple.len(), 1);
    assert_eq!(d.knocks(1, a(), &[5001]).events, [], "door 24 is gone");
    assert_eq!(
        d.knocks(2, a(), &[7000, 9000, 8000]).events,
        [Event::Opened {
            source: a(),
            door: 22
        }]
    );
}

#[test]
fn armings_forgotten_after_a_failed_commit_are_not_disarmed_again() {
    let mut d = Daemon::new(config(16, true));
    d.knocks(0, a(), &[5000]);
    d.core.forget_armed();
    let late = KNOCK_TIMEOUT.as_millis() as u64 + 1;
    assert_eq!(
        d.knocks(late, a(), &[7000]).changes,
        Changes::new(),
        "the reinstalled policy emptied the fast path: nothing is left to disarm"
    );
}

#[test]
fn a_scan_loses_its_progress_and_its_arming_and_says_so_once() {
    let mut d = Daemon::new(config(16, true));
    d.knocks(0, a(), &[5000]);
    let others: Vec<u16> = (40_000..40_000 + crate::engine::SCAN_PORTS as u16).collect();
    let scan = d.knocks(1, a(), &others);
    assert_eq!(scan.events, [Event::Scanned { source: a() }]);
    assert_eq!(scan.changes, expect(|c| disarm(c, a(), 5001, 24)));
    assert_eq!(
        d.knocks(20, a(), &[5001]).events,
        [],
        "the final knock opens nothing"
    );
}

#[test]
fn every_knock_is_counted_by_protocol_and_family_and_by_what_it_did_to_each_door() {
    let mut d = Daemon::new(config(16, true));
    let v6: IpAddr = "fd00:5eed::2".parse().unwrap();
    d.knocks(0, a(), &[5000, 5000, 5001]); // armed, retransmit, opened
    d.knocks(10, a(), &[7000]); // progress on 22 and on 23
    d.knocks(20, a(), &[6000]); // out of order for 23
    let late = 10 + KNOCK_TIMEOUT.as_millis() as u64 + 1;
    d.knocks(late, a(), &[7000]); // 22 expired, then progress on both again
    d.knocks(late, v6, &[5000]); // armed
    d.at(late, &datagram(a(), 2001, b"x")); // no door's port: nothing but the packet
    let scan: Vec<u16> = (40_000..40_000 + crate::engine::SCAN_PORTS as u16).collect();
    d.knocks(late, b(), &[5000]); // armed
    d.knocks(late + 1, b(), &scan); // progress on 24 dropped
    let c = d.core.counters();
    assert_eq!(c.knock_packets, [[6 + 1 + 8, 1], [1, 0]]);
    let simple: Vec<u64> = (metrics::Simple::ALL.iter())
        .map(|&o| c.simple[o as usize])
        .collect();
    assert_eq!(
        simple,
        [4, 1, 3, 1, 1, 1, 1],
        "progress, retransmit, armed, opened, wrong knock, scan, expired"
    );
    assert_eq!(c.grants, [1, 0], "one grant, by a knock");
    assert_eq!(
        d.core.tracked_sources(),
        2,
        "a and v6 have progress, b no more"
    );
}

#[test]
fn every_otp_datagram_is_counted_by_what_it_was() {
    let mut d = Daemon::new(config(16, true));
    let open = otp_packet(a(), "opensecret1");
    d.at(0, &open);
    d.at(1, &open);
    d.at(2, &otp_packet(a(), "closesecret1"));
    d.at(3, &otp_packet(a(), "not-the-secret"));
    d.at(4, &datagram(a(), 2000, b"hello"));
    d.record.broken = true;
    d.at(5, &otp_packet(b(), "opensecret1"));
    d.record.broken = false;
    d.record
        .used
        .check_and_record([8; MAC_LEN], MINUTE + 5, MINUTE + 5, 0)
        .expect("a later minute recorded: older passwords cannot be vouched for");
    d.at(6, &otp_packet(b(), "opensecret1"));
    let c = d.core.counters();
    let otp: Vec<u64> = (metrics::Otp::ALL.iter())
        .map(|&o| c.otp[o as usize])
        .collect();
    assert_eq!(
        otp,
        [1, 1, 1, 1, 0, 1, 1, 1],
        "open, close, malformed, no secret matches, clock skew, replay, refused by record, \
         not recorded"
    );
    assert_eq!((c.grants, c.closes), ([1, 0], [1, 0]), "by knocks");
    assert_eq!(c.knock_packets, [[0, 0], [7, 0]]);
}

#[test]
fn lines_held_back_and_overruns_are_counted_as_they_happen() {
    let mut d = Daemon::new(config(16, true));
    let junk = datagram(a(), 2000, b"junk");
    for i in 0..25 {
        d.at(i, &junk);
    }
    let held = metrics::Lines::Knocks as usize;
    assert_eq!(
        d.core.counters().held_back[held],
        5,
        "counted at once, not when the next second says so"
    );
    let mut effects = Effects::default();
    d.core.overrun(d.start, &mut effects);
    d.core.overrun(d.start, &mut effects);
    assert_eq!(d.core.counters().nflog_overruns, 2);
    assert_eq!(d.core.counters().held_back[held], 7, "their lines too");
}
