//! One-time passwords of advanced mode (docs/behaviour.md §3).
//!
//! An OTP is `HMAC-SHA256(key = secret, msg = source address || epoch_min)`: the source address
//! as the server sees it in network byte order (4 bytes for IPv4, 16 for IPv6) followed by the
//! minute since the Unix epoch as a little-endian `u32`. On the wire it is 64 lowercase hex
//! characters plus one trailing byte (clients send `\n`), which keeps portknock compatible with
//! the netfilter pknock match and its `gen_hmac.py` / `knock.sh` clients.
//!
//! IPv4-mapped IPv6 sources (`::ffff:a.b.c.d`) are treated as the IPv4 address `a.b.c.d`
//! everywhere in this module: a dual-stack socket reports IPv4 peers in that form, and the
//! client computes its OTP over the 4-byte address it knows, so both sides must agree on it.
//!
//! The daemon's flow for one datagram is: [`parse_payload`]; if [`UsedOtps::is_used`], log a
//! replay (this catches copies from any address, which would otherwise just fail to verify);
//! else [`verify`] with the open and the close secret; on a match
//! [`UsedOtps::check_and_record`] and write it to disk (`state::OtpStore::record`), and only
//! then grant.

use std::collections::HashMap;
use std::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Length in bytes of a raw OTP (an HMAC-SHA256 output).
pub const MAC_LEN: usize = 32;

/// Length in bytes of the payload clients send: the hex OTP and one trailing byte.
pub const PAYLOAD_LEN: usize = 2 * MAC_LEN + 1;

/// The minute since the Unix epoch for `unix_secs`, as the 32-bit value that goes into the MAC.
///
/// The wire format fixes the width at 32 bits; the value wraps in the year 10136, which is the
/// wrap every client will also make.
pub fn epoch_minute(unix_secs: u64) -> u32 {
    (unix_secs / 60) as u32
}

/// The current minute by the system clock, or `None` when the clock is before 1970.
pub fn current_minute() -> Option<u32> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(epoch_minute(now.as_secs()))
}

/// The OTP of `secret` for a knock from `source` during `minute`.
pub fn mac(secret: &Secret, source: IpAddr, minute: u32) -> [u8; MAC_LEN] {
    let mut h = keyed(secret);
    h.update(&message(source, minute));
    h.finalize().into_bytes().into()
}

/// The datagram a client sends: the OTP as 64 lowercase hex characters and `\n`.
pub fn payload(secret: &Secret, source: IpAddr, minute: u32) -> [u8; PAYLOAD_LEN] {
    let mut out = [b'\n'; PAYLOAD_LEN];
    hex::encode_to_slice(mac(secret, source, minute), &mut out[..2 * MAC_LEN])
        .expect("a 32-byte MAC is 64 hex digits");
    out
}

/// The OTP carried by a datagram, or `None` when the datagram is not a knock.
///
/// A knock is exactly 64 lowercase hex characters, optionally followed by one byte of any value
/// (clients send `\n`, and the pknock match never looked at it). Uppercase hex is refused
/// because no client produces it and pknock does not accept it either.
pub fn parse_payload(data: &[u8]) -> Option<[u8; MAC_LEN]> {
    let hex = match data.len() {
        64 | 65 => &data[..2 * MAC_LEN],
        _ => return None,
    };
    let mut out = [0u8; MAC_LEN];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// The minute whose OTP `received` is, if it is `secret`'s OTP for `source` for a minute within
/// `skew` minutes of `now_minute` (both ends included); `None` otherwise.
///
/// Every minute of the window is computed and compared in constant time, and the loop never
/// stops early, so the time taken depends on `skew` and on where the window is clipped at the
/// ends of the `u32` range, not on how many bytes of the received MAC are right nor on which
/// minute matched (only on whether one did, which the grant reveals anyway). The cost is
/// `2 * skew + 1` HMACs (BENCHMARKS.md, micro), so the configuration must keep the skew small.
pub fn verify(
    secret: &Secret,
    source: IpAddr,
    received: &[u8; MAC_LEN],
    now_minute: u32,
    skew: u32,
) -> Option<u32> {
    let key = keyed(secret);
    let mut matched = None;
    for minute in now_minute.saturating_sub(skew)..=now_minute.saturating_add(skew) {
        let mut h = key.clone();
        h.update(&message(source, minute));
        if h.verify_slice(received).is_ok() && matched.is_none() {
            matched = Some(minute);
        }
    }
    matched
}

/// An HMAC state already keyed with `secret`, so the key schedule runs once per verification.
fn keyed(secret: &Secret) -> HmacSha256 {
    // HMAC hashes long keys and pads short ones, so no key length is invalid.
    HmacSha256::new_from_slice(secret.expose()).expect("HMAC accepts keys of any length")
}

/// `source || minute`: 8 bytes for IPv4, 20 for IPv6, on the stack because it is built for
/// every minute of every verification.
struct Message {
    buf: [u8; 20],
    len: usize,
}

impl std::ops::Deref for Message {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn message(source: IpAddr, minute: u32) -> Message {
    let mut buf = [0u8; 20];
    let addr_len = match source.to_canonical() {
        IpAddr::V4(a) => {
            buf[..4].copy_from_slice(&a.octets());
            4
        }
        IpAddr::V6(a) => {
            buf[..16].copy_from_slice(&a.octets());
            16
        }
    };
    buf[addr_len..addr_len + 4].copy_from_slice(&minute.to_le_bytes());
    Message {
        buf,
        len: addr_len + 4,
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Most OTPs a [`UsedOtps`] remembers at once.
///
/// An entry lives at most `2 * skew + 1` minutes, so with the default skew of 1 this allows a
/// sustained ~360 accepted knocks per second, far beyond any real use, while keeping the record
/// under 3 MiB in memory and 2.4 MB on disk.
pub const MAX_ENTRIES: usize = 65_536;

/// What recording an OTP as used found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// First use: recorded, the grant may go ahead.
    New,
    /// Refused: a replay, or an OTP the record cannot vouch for.
    Refused(Refused),
}

/// Where accepted OTPs are kept so that each is accepted once: the daemon's record on disk
/// (`state::OtpStore`), which a restarted daemon reads back.
pub trait Record {
    /// Why an OTP could not be recorded (a disk that is full, say).
    type Error: std::fmt::Display;

    /// Whether `mac` was accepted before and could still verify: a replay from any address.
    fn is_used(&self, mac: &[u8; MAC_LEN]) -> bool;

    /// Records `mac`, whose minute is `minute`, as used. [`Recorded::New`] only once it is
    /// recorded where a restarted daemon finds it; on an error it stays unrecorded, and the
    /// OTP must grant nothing.
    fn record(
        &mut self,
        mac: [u8; MAC_LEN],
        minute: u32,
        now_minute: u32,
        skew: u32,
    ) -> Result<Recorded, Self::Error>;
}

/// Why [`UsedOtps::check_and_record`] refused an OTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// This OTP was accepted before.
    #[error("one-time password already used (replay)")]
    Replay,
    /// The OTP's minute is no later than that of an OTP the record has already forgotten, so it
    /// cannot be told from a replay (this only happens after the skew was raised, or the clock
    /// went back).
    #[error("one-time password older than the replay record reaches back")]
    TooOld,
    /// The record holds [`MAX_ENTRIES`] live OTPs; refusing keeps replay protection intact.
    #[error("too many one-time passwords accepted recently ({MAX_ENTRIES})")]
    Full,
}

/// Why [`UsedOtps::from_bytes`] refused a persisted record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The data does not start with the record's magic bytes.
    #[error("not a portknock used-OTP record (bad magic)")]
    BadMagic,
    /// Written by a different version of the format.
    #[error("unsupported used-OTP record version {0}")]
    UnsupportedVersion(u16),
    /// The length does not match the header, or the data is shorter than a header.
    #[error("truncated or oversized used-OTP record")]
    BadLength,
    /// The checksum does not match the contents.
    #[error("used-OTP record checksum mismatch (corrupted)")]
    BadChecksum,
    /// The contents are not a record this module writes (unsorted or duplicate entries, more
    /// than [`MAX_ENTRIES`], nonzero reserved bits).
    #[error("malformed used-OTP record")]
    Malformed,
}

/// The record of accepted OTPs, so that each OTP is accepted once (docs/behaviour.md §3).
///
/// Each accepted MAC is kept with its minute for as long as it could still verify, that is until
/// the server's minute passes `minute + skew`; a copy of it is then refused from any address.
/// Forgetting a MAC also raises a floor: OTPs of a minute at or before a forgotten one are
/// refused as [`Refused::TooOld`], so raising the skew later cannot make a forgotten OTP valid
/// again.
///
/// Memory is bounded: an entry (32-byte MAC + 4-byte minute, ~45 bytes in the table) is only
/// added for an OTP that verified, which takes the secret, so an attacker without it cannot grow
/// the record; entries expire after `2 * skew + 1` minutes at most; and [`MAX_ENTRIES`] caps
/// even a secret holder knocking from a whole IPv6 prefix.
#[derive(Debug, Clone)]
pub struct UsedOtps {
    /// Accepted MAC → its minute.
    used: HashMap<[u8; MAC_LEN], u32>,
    /// OTPs of a minute below this are refused: the record may have forgotten them.
    floor: u32,
    /// At most the smallest minute in `used` (`u32::MAX` when empty), so that pruning, a full
    /// scan, only runs when something may have expired.
    oldest: u32,
}

impl Default for UsedOtps {
    fn default() -> Self {
        Self::new()
    }
}

/// `PKUO` magic, version, reserved, floor, count: 16 bytes.
const MAGIC: [u8; 4] = *b"PKUO";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 16;
const ENTRY_LEN: usize = MAC_LEN + 4;
const CHECKSUM_LEN: usize = 32;

impl UsedOtps {
    /// An empty record.
    pub fn new() -> Self {
        Self {
            used: HashMap::new(),
            floor: 0,
            oldest: u32::MAX,
        }
    }

    /// Whether `mac` was accepted and is still remembered. Meant to run before [`verify`], so a
    /// copy from another address is reported as a replay rather than as a wrong password. The
    /// lookup is not constant-time, which is fine: what it could reveal are OTPs that were
    /// already sent in clear and can never be accepted again.
    pub fn is_used(&self, mac: &[u8; MAC_LEN]) -> bool {
        self.used.contains_key(mac)
    }

    /// Records `mac`, an OTP that [`verify`] matched to `minute`, unless it was accepted before.
    /// Entries that can no longer verify (`now_minute > minute + skew`) are forgotten first.
    pub fn check_and_record(
        &mut self,
        mac: [u8; MAC_LEN],
        minute: u32,
        now_minute: u32,
        skew: u32,
    ) -> Result<(), Refused> {
        self.prune(now_minute, skew);
        if self.used.contains_key(&mac) {
            return Err(Refused::Replay);
        }
        // An entry that could not verify now (as when a log is replayed after a long stop) is
        // not worth remembering: nothing can be accepted for it any more.
        if minute < self.floor || minute.saturating_add(skew) < now_minute {
            return Err(Refused::TooOld);
        }
        if self.used.len() >= MAX_ENTRIES {
            return Err(Refused::Full);
        }
        self.used.insert(mac, minute);
        self.oldest = self.oldest.min(minute);
        Ok(())
    }

    /// Takes back `mac`, recorded by [`UsedOtps::check_and_record`] but never granted (its
    /// record could not be written), so that it may be tried again.
    pub fn forget(&mut self, mac: &[u8; MAC_LEN]) {
        self.used.remove(mac);
    }

    /// How many OTPs are remembered.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// Whether no OTP is remembered.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    fn prune(&mut self, now_minute: u32, skew: u32) {
        let now = u64::from(now_minute);
        let skew = u64::from(skew);
        if self.used.is_empty() || now <= u64::from(self.oldest) + skew {
            return;
        }
        let (mut floor, mut oldest) = (self.floor, u32::MAX);
        self.used.retain(|_, &mut minute| {
            let live = now <= u64::from(minute) + skew;
            if live {
                oldest = oldest.min(minute);
            } else {
                // `minute < now_minute`, so adding one cannot overflow.
                floor = floor.max(minute + 1);
            }
            live
        });
        self.floor = floor;
        self.oldest = oldest;
    }

    /// The record in its on-disk form: a 16-byte header (`PKUO`, version `u16`, reserved `u16`,
    /// floor `u32`, count `u32`, all little-endian), the entries sorted by MAC (32-byte MAC,
    /// minute `u32` LE), and a SHA-256 of everything before it, so a torn or corrupted file is
    /// detected instead of silently forgetting used OTPs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut entries: Vec<_> = self.used.iter().collect();
        entries.sort_unstable();
        let count = u32::try_from(entries.len()).expect("at most MAX_ENTRIES entries");
        let mut out = Vec::with_capacity(HEADER_LEN + entries.len() * ENTRY_LEN + CHECKSUM_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.floor.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        for (mac, minute) in entries {
            out.extend_from_slice(mac);
            out.extend_from_slice(&minute.to_le_bytes());
        }
        let checksum = Sha256::digest(&out);
        out.extend_from_slice(&checksum);
        out
    }

    /// Reads a record written by [`UsedOtps::to_bytes`]. Any other input is an error, never a
    /// panic; the caller must then decide how to fail closed (the record is what stops replays).
    pub fn from_bytes(data: &[u8]) -> Result<Self, DecodeError> {
        if data.len() < MAGIC.len() || data[..MAGIC.len()] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if data.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(DecodeError::BadLength);
        }
        let u16_at = |i: usize| u16::from_le_bytes([data[i], data[i + 1]]);
        let u32_at =
            |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        let version = u16_at(4);
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let (body, checksum) = data.split_at(data.len() - CHECKSUM_LEN);
        if Sha256::digest(body).as_slice() != checksum {
            return Err(DecodeError::BadChecksum);
        }
        if u16_at(6) != 0 {
            return Err(DecodeError::Malformed);
        }
        let floor = u32_at(8);
        let count = usize::try_from(u32_at(12)).map_err(|_| DecodeError::Malformed)?;
        if count > MAX_ENTRIES {
            return Err(DecodeError::Malformed);
        }
        let entries = &body[HEADER_LEN..];
        if entries.len() != count * ENTRY_LEN {
            return Err(DecodeError::BadLength);
        }
        let mut used = HashMap::with_capacity(count);
        let mut previous: Option<&[u8]> = None;
        for entry in entries.chunks_exact(ENTRY_LEN) {
            let (mac, minute) = entry.split_at(MAC_LEN);
            if previous.is_some_and(|p| p >= mac) {
                return Err(DecodeError::Malformed);
            }
            previous = Some(mac);
            let mac: [u8; MAC_LEN] = mac.try_into().map_err(|_| DecodeError::Malformed)?;
            let minute = u32::from_le_bytes(minute.try_into().map_err(|_| DecodeError::Malformed)?);
            used.insert(mac, minute);
        }
        let oldest = used.values().copied().min().unwrap_or(u32::MAX);
        Ok(Self {
            used,
            floor,
            oldest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5));
    const MINUTE: u32 = 29_000_000;

    fn hex32(s: &str) -> [u8; 32] {
        hex::decode(s)
            .expect("test hex")
            .try_into()
            .expect("32 bytes")
    }

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes())
    }

    #[test]
    fn the_current_minute_is_the_system_clock_s() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let minute = current_minute().expect("a clock after 1970");
        let after = before + 61;
        assert!((epoch_minute(before)..=epoch_minute(after)).contains(&minute));
        assert!(minute > 29_000_000, "after 2025");
    }

    #[test]
    fn message_matches_spec() {
        assert_eq!(hex::encode(&*message(SOURCE, MINUTE)), "cb0071054081ba01");
    }

    #[test]
    fn spec_vector_hipjazz() {
        let want = "83124b64b7951a5b4237bda81fa915f2ad6ac50857962f7d36636510942198cb";
        assert_eq!(hex::encode(mac(&secret("hipjazz"), SOURCE, MINUTE)), want);
        assert_eq!(
            verify(&secret("hipjazz"), SOURCE, &hex32(want), MINUTE, 0),
            Some(MINUTE)
        );
    }

    #[test]
    fn spec_vector_superawesome() {
        let want = "0fe38b1ef366a485eeb2c063c8563311584edcd684ee9673eeb3bdbc608f8116";
        assert_eq!(
            hex::encode(mac(&secret("superawesome"), SOURCE, MINUTE)),
            want
        );
        let mut p = want.as_bytes().to_vec();
        p.push(b'\n');
        assert_eq!(payload(&secret("superawesome"), SOURCE, MINUTE).to_vec(), p);
    }

    #[test]
    fn epoch_minute_floors() {
        assert_eq!(epoch_minute(0), 0);
        assert_eq!(epoch_minute(59), 0);
        assert_eq!(epoch_minute(60), 1);
        assert_eq!(epoch_minute(u64::from(MINUTE) * 60 + 59), MINUTE);
    }

    #[test]
    fn ipv6_uses_sixteen_bytes() {
        let v6: IpAddr = "fd00:5eed::2".parse().expect("addr");
        let msg = message(v6, MINUTE);
        assert_eq!(msg.len(), 20);
        assert_eq!(&msg[16..], &MINUTE.to_le_bytes());
        let s = secret("hipjazz");
        let m = mac(&s, v6, MINUTE);
        assert_ne!(m, mac(&s, SOURCE, MINUTE));
        assert_eq!(verify(&s, v6, &m, MINUTE, 1), Some(MINUTE));
        assert_eq!(verify(&s, SOURCE, &m, MINUTE, 1), None);
    }

    #[test]
    fn ipv4_mapped_is_the_ipv4_address() {
        let mapped = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 5).to_ipv6_mapped());
        let s = secret("hipjazz");
        assert_eq!(mac(&s, mapped, MINUTE), mac(&s, SOURCE, MINUTE));
        assert_eq!(
            verify(&s, mapped, &mac(&s, SOURCE, MINUTE), MINUTE, 0),
            Some(MINUTE)
        );
        // The deprecated IPv4-compatible form is a plain IPv6 address.
        let compatible = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 5).to_ipv6_compatible());
        assert_ne!(mac(&s, compatible, MINUTE), mac(&s, SOURCE, MINUTE));
    }

    #[test]
    fn skew_window_edges() {
        let s = secret("hipjazz");
        for skew in [0u32, 1, 2, 5] {
            for offset in -(i64::from(skew) + 2)..=(i64::from(skew) + 2) {
                let minute = u32::try_from(i64::from(MINUTE) + offset).expect("in range");
                let m = mac(&s, SOURCE, minute);
                let want = (offset.unsigned_abs() <= u64::from(skew)).then_some(minute);
                assert_eq!(
                    verify(&s, SOURCE, &m, MINUTE, skew),
                    want,
                    "skew {skew} offset {offset}"
                );
            }
        }
    }

    #[test]
    fn skew_at_the_ends_of_u32_does_not_wrap() {
        let s = secret("hipjazz");
        assert_eq!(verify(&s, SOURCE, &mac(&s, SOURCE, 0), 0, 1), Some(0));
        assert_eq!(verify(&s, SOURCE, &mac(&s, SOURCE, 1), 0, 1), Some(1));
        assert_eq!(verify(&s, SOURCE, &mac(&s, SOURCE, u32::MAX), 0, 1), None);
        let max = u32::MAX;
        assert_eq!(verify(&s, SOURCE, &mac(&s, SOURCE, max), max, 1), Some(max));
        assert_eq!(verify(&s, SOURCE, &mac(&s, SOURCE, 0), max, 1), None);
        assert_eq!(
            verify(&s, SOURCE, &mac(&s, SOURCE, max - 1), max, 1),
            Some(max - 1)
        );
        assert_eq!(
            verify(&s, SOURCE, &mac(&s, SOURCE, 3), max, 5),
            None,
            "a window past u32::MAX is clipped, it does not wrap to 0"
        );
    }

    #[test]
    fn wrong_secret_address_or_minute_is_refused() {
        let s = secret("hipjazz");
        let m = mac(&s, SOURCE, MINUTE);
        assert_eq!(verify(&secret("hipjaz"), SOURCE, &m, MINUTE, 1), None);
        assert_eq!(verify(&secret("hipjazz "), SOURCE, &m, MINUTE, 1), None);
        let other: IpAddr = Ipv4Addr::new(203, 0, 113, 6).into();
        assert_eq!(verify(&s, other, &m, MINUTE, 1), None);
        assert_eq!(verify(&s, SOURCE, &m, MINUTE + 2, 1), None);
        let mut flipped = m;
        flipped[31] ^= 1;
        assert_eq!(verify(&s, SOURCE, &flipped, MINUTE, 1), None);
    }

    #[test]
    fn long_and_empty_secrets_work() {
        // HMAC hashes keys longer than a block; none may panic.
        for key in [&[][..], &[b'x'; 64][..], &[b'y'; 200][..]] {
            let s = Secret::new(key);
            let m = mac(&s, SOURCE, MINUTE);
            assert_eq!(verify(&s, SOURCE, &m, MINUTE, 1), Some(MINUTE));
        }
    }

    #[test]
    fn payload_lengths() {
        let p = payload(&secret("hipjazz"), SOURCE, MINUTE);
        let want = mac(&secret("hipjazz"), SOURCE, MINUTE);
        assert_eq!(parse_payload(&p), Some(want));
        assert_eq!(parse_payload(&p[..64]), Some(want));
        let mut other_trailer = p;
        other_trailer[64] = 0;
        assert_eq!(parse_payload(&other_trailer), Some(want));
        for len in [0, 1, 32, 63, 66, 128, 129] {
            let data = vec![b'a'; len];
            assert_eq!(parse_payload(&data), None, "length {len}");
        }
        let mut long = p.to_vec();
        long.push(b'\n');
        assert_eq!(parse_payload(&long), None);
    }

    #[test]
    fn payload_must_be_lowercase_hex() {
        let p = payload(&secret("hipjazz"), SOURCE, MINUTE);
        let upper: Vec<u8> = p.iter().map(u8::to_ascii_uppercase).collect();
        assert_eq!(parse_payload(&upper), None);
        for bad in [b'g', b'G', b' ', b'\n', 0, 0xff, b'-', b'+'] {
            for pos in [0, 17, 63] {
                let mut q = p;
                q[pos] = bad;
                assert_eq!(parse_payload(&q), None, "byte {bad:#x} at {pos}");
            }
        }
    }

    #[test]
    fn replay_is_refused_for_good() {
        let s = secret("hipjazz");
        let m = mac(&s, SOURCE, MINUTE);
        let mut used = UsedOtps::new();
        assert!(!used.is_used(&m));
        assert_eq!(used.check_and_record(m, MINUTE, MINUTE, 1), Ok(()));
        assert!(used.is_used(&m));
        for now in [MINUTE, MINUTE + 1] {
            assert_eq!(
                used.check_and_record(m, MINUTE, now, 1),
                Err(Refused::Replay)
            );
        }
        // Once it could no longer verify it is forgotten, and the floor still refuses it.
        assert_eq!(
            used.check_and_record(mac(&s, SOURCE, MINUTE + 2), MINUTE + 2, MINUTE + 2, 1),
            Ok(())
        );
        assert!(!used.is_used(&m));
        assert_eq!(used.len(), 1);
        assert!(!used.is_empty());
        assert_eq!(
            used.check_and_record(m, MINUTE, MINUTE + 2, 5),
            Err(Refused::TooOld),
            "raising the skew must not revive a forgotten OTP"
        );
    }

    #[test]
    fn entries_live_exactly_while_they_can_verify() {
        let mut used = UsedOtps::new();
        let a = [1u8; 32];
        assert_eq!(used.check_and_record(a, MINUTE - 1, MINUTE, 2), Ok(()));
        // minute + skew = MINUTE + 1: still live at MINUTE + 1, gone at MINUTE + 2.
        used.prune(MINUTE + 1, 2);
        assert!(used.is_used(&a));
        used.prune(MINUTE + 2, 2);
        assert!(used.is_empty());
        assert_eq!(used.floor, MINUTE);
        // An OTP of a later minute is unaffected by the floor.
        assert_eq!(
            used.check_and_record([2u8; 32], MINUTE, MINUTE + 2, 2),
            Ok(())
        );
    }

    #[test]
    fn pruning_at_u32_max_does_not_overflow() {
        let mut used = UsedOtps::new();
        assert_eq!(
            used.check_and_record([3u8; 32], u32::MAX, u32::MAX, u32::MAX),
            Ok(())
        );
        assert_eq!(
            used.check_and_record([4u8; 32], u32::MAX - 1, u32::MAX, 1),
            Ok(())
        );
        used.prune(u32::MAX, 0);
        assert_eq!(used.len(), 1);
        assert_eq!(used.floor, u32::MAX);
        assert!(
            used.is_used(&[3u8; 32]),
            "the newest minute can never expire past u32::MAX"
        );
    }

    #[test]
    fn an_entry_that_could_not_verify_now_is_not_recorded() {
        let mut used = UsedOtps::new();
        assert_eq!(
            used.check_and_record([5u8; 32], MINUTE, MINUTE + 2, 1),
            Err(Refused::TooOld)
        );
        assert!(used.is_empty());
        assert_eq!(
            used.check_and_record([5u8; 32], MINUTE, MINUTE + 1, 1),
            Ok(())
        );
    }

    #[test]
    fn a_forgotten_minute_and_every_earlier_one_stay_refused() {
        let mut used = UsedOtps::new();
        assert_eq!(used.check_and_record([1; 32], MINUTE, MINUTE, 0), Ok(()));
        // At the next minute, MINUTE's OTP is forgotten: MINUTE and before are refused, even
        // for an OTP never seen, and even with a wider skew.
        assert_eq!(
            used.check_and_record([2; 32], MINUTE + 1, MINUTE + 1, 0),
            Ok(())
        );
        assert_eq!(
            used.check_and_record([3; 32], MINUTE, MINUTE + 1, 1),
            Err(Refused::TooOld)
        );
        assert_eq!(
            used.check_and_record([4; 32], MINUTE - 1, MINUTE + 1, 5),
            Err(Refused::TooOld)
        );
        assert_eq!(
            used.check_and_record([5; 32], MINUTE + 1, MINUTE + 1, 1),
            Ok(())
        );
    }

    #[test]
    fn a_full_record_refuses() {
        let mut used = UsedOtps::new();
        for i in 0..MAX_ENTRIES {
            let mut m = [0u8; 32];
            m[..8].copy_from_slice(&(i as u64).to_le_bytes());
            assert_eq!(used.check_and_record(m, MINUTE, MINUTE, 1), Ok(()));
        }
        assert_eq!(
            used.check_and_record([0xee; 32], MINUTE, MINUTE, 1),
            Err(Refused::Full)
        );
        assert_eq!(round_trip(&used), used.to_bytes(), "a full record loads");
        // Room again once they expire.
        assert_eq!(
            used.check_and_record([0xee; 32], MINUTE + 2, MINUTE + 2, 1),
            Ok(())
        );
        assert_eq!(used.len(), 1);
        assert_eq!(round_trip(&used), used.to_bytes());
    }

    /// The record read back from its bytes, as bytes again: the encoding is deterministic, so
    /// this compares the records.
    fn round_trip(used: &UsedOtps) -> Vec<u8> {
        UsedOtps::from_bytes(&used.to_bytes())
            .expect("round trip")
            .to_bytes()
    }

    #[test]
    fn persistence_round_trip() {
        let mut used = UsedOtps::new();
        assert_eq!(round_trip(&used), used.to_bytes());
        for i in 0..10u8 {
            let m = mac(&secret("hipjazz"), SOURCE, MINUTE + u32::from(i));
            assert_eq!(
                used.check_and_record(m, MINUTE + u32::from(i), MINUTE + u32::from(i), 1),
                Ok(())
            );
        }
        let bytes = used.to_bytes();
        assert_eq!(&bytes[..4], b"PKUO");
        assert_eq!(
            bytes.len(),
            HEADER_LEN + used.len() * ENTRY_LEN + CHECKSUM_LEN
        );
        let back = UsedOtps::from_bytes(&bytes).expect("round trip");
        assert_eq!(back.used, used.used);
        assert_eq!(back.floor, MINUTE + 8);
        assert_eq!(back.oldest, MINUTE + 8);
        assert_eq!(back.to_bytes(), bytes, "the encoding is deterministic");
        // The record read back refuses what the original refuses.
        let mut back = back;
        let last = mac(&secret("hipjazz"), SOURCE, MINUTE + 9);
        assert_eq!(
            back.check_and_record(last, MINUTE + 9, MINUTE + 9, 1),
            Err(Refused::Replay)
        );
    }

    #[test]
    fn persisted_garbage_is_an_error() {
        let mut used = UsedOtps::new();
        used.check_and_record([5u8; 32], MINUTE, MINUTE, 1)
            .expect("fresh");
        used.check_and_record([6u8; 32], MINUTE, MINUTE, 1)
            .expect("fresh");
        let good = used.to_bytes();
        assert_eq!(load_error(&[]), Some(DecodeError::BadMagic));
        assert_eq!(load_error(b"PKU"), Some(DecodeError::BadMagic));
        assert_eq!(load_error(b"PKUO"), Some(DecodeError::BadLength));
        for cut in 1..good.len() - 4 {
            assert!(UsedOtps::from_bytes(&good[..good.len() - cut]).is_err());
        }
        let mut v2 = good.clone();
        v2[4] = 2;
        assert_eq!(load_error(&v2), Some(DecodeError::UnsupportedVersion(2)));
        for i in 6..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert_eq!(load_error(&bad), Some(DecodeError::BadChecksum), "byte {i}");
        }
    }

    fn load_error(data: &[u8]) -> Option<DecodeError> {
        UsedOtps::from_bytes(data).err()
    }

    /// Re-signs a hand-made body, to reach the checks behind the checksum.
    fn sealed(mut body: Vec<u8>) -> Vec<u8> {
        let sum = Sha256::digest(&body);
        body.extend_from_slice(&sum);
        body
    }

    fn header(count: u32) -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&count.to_le_bytes());
        h
    }

    #[test]
    fn persisted_inconsistencies_are_errors() {
        let entry = |b: u8| {
            let mut e = vec![b; 32];
            e.extend_from_slice(&MINUTE.to_le_bytes());
            e
        };
        let mut dup = header(2);
        dup.extend(entry(1));
        dup.extend(entry(1));
        assert_eq!(load_error(&sealed(dup)), Some(DecodeError::Malformed));
        let mut unsorted = header(2);
        unsorted.extend(entry(2));
        unsorted.extend(entry(1));
        assert_eq!(load_error(&sealed(unsorted)), Some(DecodeError::Malformed));
        let mut short = header(3);
        short.extend(entry(1));
        assert_eq!(load_error(&sealed(short)), Some(DecodeError::BadLength));
        assert_eq!(
            load_error(&sealed(header(u32::MAX))),
            Some(DecodeError::Malformed)
        );
        let mut reserved = header(0);
        reserved[6] = 1;
        assert_eq!(load_error(&sealed(reserved)), Some(DecodeError::Malformed));
    }

    proptest! {
        #[test]
        fn payload_parse_round_trip(key in proptest::collection::vec(any::<u8>(), 0..80),
                                    v4 in any::<[u8; 4]>(), v6 in any::<[u8; 16]>(),
                                    minute in any::<u32>()) {
            let s = Secret::new(key);
            for source in [IpAddr::from(v4), IpAddr::from(v6)] {
                let p = payload(&s, source, minute);
                prop_assert_eq!(parse_payload(&p), Some(mac(&s, source, minute)));
                prop_assert!(p[..64].iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)));
            }
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(m) = parse_payload(&data) {
                prop_assert!(data.len() == 64 || data.len() == 65);
                let text = hex::encode(m);
                prop_assert_eq!(text.as_bytes(), &data[..64]);
            }
        }

        #[test]
        fn verify_accepts_its_own_window(key in proptest::collection::vec(any::<u8>(), 1..40),
                                         v4 in any::<[u8; 4]>(), now in any::<u32>(),
                                         skew in 0u32..4, offset in -6i64..=6) {
            let s = Secret::new(key);
            let source = IpAddr::from(v4);
            let minute = i64::from(now) + offset;
            prop_assume!((0..=i64::from(u32::MAX)).contains(&minute));
            let minute = u32::try_from(minute).expect("checked");
            let got = verify(&s, source, &mac(&s, source, minute), now, skew);
            let inside = offset.unsigned_abs() <= u64::from(skew);
            prop_assert_eq!(got, inside.then_some(minute));
        }

        #[test]
        fn from_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = UsedOtps::from_bytes(&data);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&data);
            let _ = UsedOtps::from_bytes(&with_magic);
            // Past the checksum too: every header/body combination must be handled.
            let _ = UsedOtps::from_bytes(&sealed(with_magic));
        }

        #[test]
        fn record_round_trips(entries in proptest::collection::vec((any::<[u8; 32]>(), 0u32..20), 0..50),
                              floor in 0u32..10) {
            let used: HashMap<_, _> = entries.into_iter().collect();
            let oldest = used.values().copied().min().unwrap_or(u32::MAX);
            let record = UsedOtps { used, floor, oldest };
            let back = UsedOtps::from_bytes(&record.to_bytes());
            prop_assert!(back.is_ok());
            let back = back.expect("checked");
            prop_assert_eq!(&back.used, &record.used);
            prop_assert_eq!((back.floor, back.oldest), (record.floor, record.oldest));
        }
    }
}
