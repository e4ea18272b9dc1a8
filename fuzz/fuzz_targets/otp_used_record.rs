//! The used-OTP record: `otp::UsedOtps::from_bytes` on persisted bytes, then a run of
//! `check_and_record` calls (docs/behaviour.md §3: each OTP is accepted once, also after a restart).
//!
//! The first byte picks how the rest is read. With bit 0 set, the record bytes get a valid
//! checksum (and, with bit 1, the right magic and version) before loading, so the fuzzer gets
//! past SHA-256 to the contents. Checks: no panic; a record that loads writes back to exactly
//! the bytes read (the encoding is canonical, so nothing is lost or made up); then, for the
//! calls decoded from the rest (each, as in the daemon, for a minute within the skew window):
//! an accepted OTP is reported used and is refused for ever after, through restarts (write,
//! read back) too, whatever the clock and the skew do; an OTP the record remembers is never
//! accepted; the record never exceeds `MAX_ENTRIES` and always reads back.
#![no_main]

use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use portknock::config::MAX_OTP_SKEW;
use portknock::otp::{UsedOtps, MAC_LEN, MAX_ENTRIES};
use sha2::{Digest, Sha256};

const HEADER_LEN: usize = 16;
const CHECKSUM_LEN: usize = 32;

#[derive(Arbitrary, Debug)]
enum Op {
    /// A knock: one of a few MACs, each always of the same minute (a MAC names its minute).
    Record { mac: u8, now_delta: i8, skew: u8 },
    /// A daemon restart: the record is written and read back.
    Restart,
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // The record takes the first `len` bytes of the rest; the calls come from what follows.
    let (len, rest) = match rest.split_first_chunk::<2>() {
        Some((len, rest)) => (usize::from(u16::from_le_bytes(*len)), rest),
        None => (0, rest),
    };
    let (record, calls) = rest.split_at(len.min(rest.len()));
    let mut record = record.to_vec();
    if mode & 1 == 1 && record.len() >= HEADER_LEN + CHECKSUM_LEN {
        if mode & 2 == 2 {
            record[..6].copy_from_slice(b"PKUO\x01\x00");
        }
        let body = record.len() - CHECKSUM_LEN;
        let sum = Sha256::digest(&record[..body]);
        record[body..].copy_from_slice(&sum);
    }

    // The minute of each MAC of a record that loads, read from the bytes (the format is documented in
    // `UsedOtps::to_bytes`): 16-byte header, then 36-byte entries, then the checksum.
    let mut loaded: HashMap<[u8; MAC_LEN], u32> = HashMap::new();
    let mut used = match UsedOtps::from_bytes(&record) {
        Ok(used) => {
            assert!(used.len() <= MAX_ENTRIES);
            assert_eq!(
                used.to_bytes(),
                record,
                "the record did not write back as read"
            );
            for entry in record[HEADER_LEN..record.len() - CHECKSUM_LEN].chunks_exact(MAC_LEN + 4) {
                let (mac, minute) = entry.split_at(MAC_LEN);
                let minute = u32::from_le_bytes(minute.try_into().unwrap());
                loaded.insert(mac.try_into().unwrap(), minute);
            }
            assert_eq!(loaded.len(), used.len());
            used
        }
        Err(_) => UsedOtps::new(),
    };

    let mut u = Unstructured::new(calls);
    let Ok(base) = u32::arbitrary(&mut u) else {
        return;
    };
    let Ok(seeds) = <[u8; 4]>::arbitrary(&mut u) else {
        return;
    };
    // Four MACs, each tied to one minute near `base`, or to its minute in the loaded record:
    // a MAC names its minute, so it never comes with two.
    let macs: Vec<([u8; MAC_LEN], u32)> = (0u8..4)
        .map(|i| {
            let mut m = [seeds[usize::from(i)]; MAC_LEN];
            m[0] = i;
            let minute = base.wrapping_add(u32::from(seeds[usize::from(i)] % 8));
            (m, loaded.get(&m).copied().unwrap_or(minute))
        })
        .collect();
    let mut accepted: HashMap<[u8; MAC_LEN], u32> = HashMap::new();
    let mut now = base;
    // Short input reads as zeros rather than failing, so stop when the bytes run out.
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        match op {
            Op::Restart => {
                let bytes = used.to_bytes();
                used = UsedOtps::from_bytes(&bytes).expect("a written record reads back");
                assert_eq!(used.to_bytes(), bytes);
            }
            Op::Record {
                mac,
                now_delta,
                skew,
            } => {
                let (mac, minute) = macs[usize::from(mac % 4)];
                now = now.wrapping_add_signed(i32::from(now_delta));
                let skew = u32::from(skew) % (MAX_OTP_SKEW + 1);
                // The daemon records only what `verify` matched: a minute within the window.
                if !(now.saturating_sub(skew)..=now.saturating_add(skew)).contains(&minute) {
                    continue;
                }
                let was_used = used.is_used(&mac);
                let result = used.check_and_record(mac, minute, now, skew);
                if accepted.contains_key(&mac) {
                    assert!(result.is_err(), "OTP of minute {minute} accepted twice");
                }
                if was_used {
                    assert!(result.is_err(), "a remembered OTP was accepted again");
                }
                if result.is_ok() {
                    assert!(used.is_used(&mac));
                    accepted.insert(mac, minute);
                }
            }
        }
        assert!(used.len() <= MAX_ENTRIES);
    }
});
