//! One-time-password datagrams: `otp::parse_payload` and `otp::verify` (docs/behaviour.md §3).
//!
//! Checks: no panic; a datagram parses exactly when it is 64 lowercase hex characters with at
//! most one more byte, to the MAC those characters spell; whatever `verify` accepts is the
//! secret's MAC for that source and a minute within the skew window; a payload the client
//! would send parses back to its MAC and verifies exactly when its minute is within the window
//! (clipped, not wrapped, at the ends of the u32 range), to that minute; an IPv4-mapped IPv6
//! source verifies as its IPv4 address; one flipped bit is refused.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portknock::config::{Secret, MAX_OTP_SKEW};
use portknock::otp::{mac, parse_payload, payload, verify, MAC_LEN};

/// The input, read front to back (short input reads as zeros), so that seeds are written by
/// hand: `now_minute` u32 LE, `skew` u8, `offset` i16 LE (minute of the client's OTP relative
/// to the server's), `flip` u16 LE (bit to flip), `trailing` flag u8 and value u8, source kind u8
/// (even: IPv4 from the first 4 of the next 16 bytes; odd: IPv6), 16 address bytes, secret
/// length u8, the secret, and the rest is the datagram.
struct Input<'a> {
    now_minute: u32,
    skew: u8,
    offset: i16,
    flip: u16,
    trailing: Option<u8>,
    source: IpAddr,
    secret: &'a [u8],
    datagram: &'a [u8],
}

fn decode<'a>(data: &'a [u8]) -> arbitrary::Result<Input<'a>> {
    let mut u = Unstructured::new(data);
    let now_minute = u.arbitrary()?;
    let skew = u.arbitrary()?;
    let offset = u.arbitrary()?;
    let flip = u.arbitrary()?;
    let (has_trailing, value): (u8, u8) = (u.arbitrary()?, u.arbitrary()?);
    let kind: u8 = u.arbitrary()?;
    let addr: [u8; 16] = u.arbitrary()?;
    let source = if kind & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(addr))
    };
    let secret_len: u8 = u.arbitrary()?;
    let secret = u.bytes(usize::from(secret_len).min(u.len()))?;
    Ok(Input {
        now_minute,
        skew,
        offset,
        flip,
        trailing: (has_trailing & 1 == 1).then_some(value),
        source,
        secret,
        datagram: u.take_rest(),
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = decode(data) else {
        return;
    };
    let secret = Secret::new(input.secret);
    let source = input.source;
    let now = input.now_minute;
    let skew = u32::from(input.skew) % (MAX_OTP_SKEW + 1);
    let window = now.saturating_sub(skew)..=now.saturating_add(skew);

    // Arbitrary datagrams.
    let parsed = parse_payload(input.datagram);
    assert_eq!(parsed, reference_parse(input.datagram));
    if let Some(received) = parsed {
        if let Some(minute) = verify(&secret, source, &received, now, skew) {
            assert!(window.contains(&minute));
            assert_eq!(mac(&secret, source, minute), received);
        }
    }

    // The datagram a client sends for a minute near the server's.
    let Some(minute) = now.checked_add_signed(i32::from(input.offset)) else {
        return;
    };
    let sent = payload(&secret, source, minute);
    let want = mac(&secret, source, minute);
    let datagram = match input.trailing {
        Some(b) => [&sent[..64], &[b]].concat(),
        None => sent[..64].to_vec(),
    };
    assert_eq!(parse_payload(&sent), Some(want));
    assert_eq!(parse_payload(&datagram), Some(want));
    let expected = window.contains(&minute).then_some(minute);
    assert_eq!(verify(&secret, source, &want, now, skew), expected);
    if let IpAddr::V4(v4) = source {
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        assert_eq!(mac(&secret, mapped, minute), want);
        assert_eq!(verify(&secret, mapped, &want, now, skew), expected);
    }
    let mut flipped = want;
    let bit = usize::from(input.flip) % (8 * MAC_LEN);
    flipped[bit / 8] ^= 1 << (bit % 8);
    assert_eq!(verify(&secret, source, &flipped, now, skew), None);
});

/// docs/behaviour.md §3, written out independently: 64 lowercase hex characters, then at most one byte.
fn reference_parse(data: &[u8]) -> Option<[u8; MAC_LEN]> {
    if data.len() != 64 && data.len() != 65 {
        return None;
    }
    let hex = &data[..64];
    if !hex.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let text = std::str::from_utf8(hex).ok()?;
    let mut out = [0u8; MAC_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
