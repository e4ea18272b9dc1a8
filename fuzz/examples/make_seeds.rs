//! Writes the binary seed inputs of fuzz/seeds/ (the text seeds are plain files there).
//!
//! Run from the repository root: `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`.
//! The output is deterministic, so rerunning it changes nothing unless this file changed.

use std::fs;
use std::path::Path;

use etherparse::PacketBuilder;
use sha2::{Digest, Sha256};

const SRC4: [u8; 4] = [198, 18, 0, 2];
const DST4: [u8; 4] = [198, 18, 0, 1];
const SRC6: [u8; 16] = [0xfd, 0, 0x5e, 0xed, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const DST6: [u8; 16] = [0xfd, 0, 0x5e, 0xed, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// The OTP of docs/behaviour.md §3's first test vector, as a client sends it.
const OTP: &[u8; 65] = b"83124b64b7951a5b4237bda81fa915f2ad6ac50857962f7d36636510942198cb\n";

fn main() {
    let seeds = Path::new("fuzz/seeds");
    assert!(seeds.is_dir(), "run from the repository root");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = seeds.join(target);
        fs::create_dir_all(&dir).expect("seed directory");
        fs::write(dir.join(name), bytes).expect("write a seed");
    };

    macro_rules! ip {
        ($builder:expr, $payload:expr) => {{
            let mut bytes = Vec::new();
            $builder
                .write(&mut bytes, $payload)
                .expect("build a packet");
            bytes
        }};
    }
    let udp4 = ip!(PacketBuilder::ipv4(SRC4, DST4, 64).udp(40000, 2000), OTP);
    let syn6 = ip!(
        PacketBuilder::ipv6(SRC6, DST6, 64)
            .tcp(40000, 7000, 1, 64240)
            .syn(),
        &[]
    );
    let syn4 = ip!(
        PacketBuilder::ipv4(SRC4, DST4, 64)
            .tcp(40001, 9000, 7, 64240)
            .syn(),
        &[]
    );
    write("capture_ip", "ipv4-udp-otp", &udp4);
    write("capture_ip", "ipv6-tcp-syn", &syn6);
    write("capture_ip", "ipv4-tcp-syn", &syn4);

    // Mode byte 0 (raw), then what the kernel sends.
    let raw = |messages: &[Vec<u8>]| [vec![0u8], messages.concat()].concat();
    write("capture_nflog", "udp-otp-ipv4", &raw(&[nflog(2, &udp4)]));
    write("capture_nflog", "tcp-syn-ipv6", &raw(&[nflog(10, &syn6)]));
    write(
        "capture_nflog",
        "two-knocks",
        &raw(&[nflog(2, &syn4), nflog(2, &udp4)]),
    );

    // docs/behaviour.md §3 test vectors: source 203.0.113.5, minute 29000000.
    let otp = |skew: u8, offset: i16, secret: &[u8], datagram: &[u8]| {
        let mut out = Vec::new();
        out.extend_from_slice(&29_000_000u32.to_le_bytes());
        out.push(skew);
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&77u16.to_le_bytes()); // bit to flip
        out.extend_from_slice(&[1, b'\n']); // trailing byte
        out.push(0); // IPv4
        out.extend_from_slice(&[203, 0, 113, 5]);
        out.extend_from_slice(&[0; 12]);
        out.push(secret.len() as u8);
        out.extend_from_slice(secret);
        out.extend_from_slice(datagram);
        out
    };
    write("otp_payload", "spec-hipjazz", &otp(0, 0, b"hipjazz", OTP));
    let superawesome = b"0fe38b1ef366a485eeb2c063c8563311584edcd684ee9673eeb3bdbc608f8116";
    write(
        "otp_payload",
        "spec-superawesome-skew",
        &otp(1, -1, b"superawesome", superawesome),
    );

    // A record of two OTPs with floor 28999999, then knocks and restarts.
    let mut record = Vec::new();
    record.extend_from_slice(b"PKUO");
    record.extend_from_slice(&1u16.to_le_bytes());
    record.extend_from_slice(&0u16.to_le_bytes());
    record.extend_from_slice(&28_999_999u32.to_le_bytes());
    record.extend_from_slice(&2u32.to_le_bytes());
    for (mac, minute) in [([0x11u8; 32], 29_000_000u32), ([0x22; 32], 29_000_001)] {
        record.extend_from_slice(&mac);
        record.extend_from_slice(&minute.to_le_bytes());
    }
    let sum = Sha256::digest(&record);
    record.extend_from_slice(&sum);
    let mut used = vec![0u8]; // mode: as read
    used.extend_from_slice(&(record.len() as u16).to_le_bytes());
    used.extend_from_slice(&record);
    used.extend_from_slice(&29_000_000u32.to_le_bytes()); // base minute
    used.extend_from_slice(&[0, 1, 2, 3]); // MAC seeds: minutes base+0..3
                                           // Op::Record is variant 0, Op::Restart variant 1 (arbitrary reads a u32 to choose).
    let record_op = |mac: u8, delta: i8, skew: u8| {
        let mut op = 0u32.to_le_bytes().to_vec();
        op.extend_from_slice(&[mac, delta as u8, skew]);
        op
    };
    let restart = 1u32.to_le_bytes().to_vec();
    for op in [
        record_op(0, 0, 1),
        record_op(0, 0, 1),
        record_op(1, 1, 1),
        restart.clone(),
        record_op(1, 0, 1),
        record_op(2, 5, 1),
        record_op(0, 0, 10),
        restart,
    ] {
        used.extend_from_slice(&op);
    }
    write("otp_used_record", "two-entries-then-knocks", &used);

    // Engine: see `Input` in fuzz_targets/engine.rs. Port indexes: 0 1/tcp, 1 2/tcp, 2 3/tcp,
    // 3 3/udp, 4 4/tcp, 5 5/udp, 6 6/tcp. Sources: 0-2 198.18.0.1-3, 3 ::ffff:198.18.0.1,
    // 4 198.18.0.4, 5-7 fd00:5eed::1-3.
    let engine = |timeout: u16, max_sources: u8, doors: &[&[u8]], knocks: &[(u8, u8, u8)]| {
        let mut out = timeout.to_le_bytes().to_vec();
        out.push(max_sources);
        for door in doors {
            out.push(1);
            for &port in *door {
                out.extend_from_slice(&[1, port]);
            }
            out.push(0);
        }
        out.push(0);
        for &(source, port, gap) in knocks {
            out.extend_from_slice(&[1, source, port, gap]);
        }
        out
    };
    // 5 s timeout, 64 sources; 22:1,2,3,4,6 and 23:4,3/udp,1. In order (opens), from the
    // IPv4-mapped form of the same source (opens), with retransmissions (opens), out of order.
    let a: &[u8] = &[0, 1, 2, 4, 6];
    let b: &[u8] = &[4, 3, 0];
    let mut knocks = Vec::new();
    knocks.extend(a.iter().map(|&p| (0, p, 8)));
    knocks.extend(b.iter().map(|&p| (3, p, 8)));
    knocks.extend([0, 0, 1, 2, 2, 4, 6].map(|p| (5, p, 8)));
    knocks.extend([0, 1, 6, 2, 4].map(|p| (1, p, 8)));
    write(
        "engine",
        "open-retransmit-reset",
        &engine(4999, 63, &[a, b], &knocks),
    );
    // 1 s timeout, one source tracked; 22:1,2,3 and 23:3,2. Eviction by another source, the
    // timeout edge exactly (64/64) and just past it (65/64).
    let knocks = [
        (0, 0, 0),
        (1, 0, 10),
        (0, 1, 10),
        (0, 0, 10),
        (0, 1, 64),
        (0, 2, 65),
    ];
    write(
        "engine",
        "evict-and-timeout-edge",
        &engine(999, 0, &[&[0, 1, 2], &[2, 1]], &knocks),
    );
}

/// One NFLOG packet message as the kernel builds it for a packet received on an Ethernet
/// interface (`nfulnl_log_packet`): header, attributes in the kernel's order, the packet last.
fn nflog(family: u8, packet: &[u8]) -> Vec<u8> {
    fn nla(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    let ethertype: u16 = if family == 10 { 0x86dd } else { 0x0800 };
    let mut body = vec![family, 0];
    body.extend_from_slice(&42420u16.to_be_bytes()); // the log group, big-endian
    let [hi, lo] = ethertype.to_be_bytes();
    nla(&mut body, 1, &[hi, lo, 1, 0]); // NFULA_PACKET_HDR: hw_protocol, hook LOCAL_IN
    nla(&mut body, 4, &2u32.to_be_bytes()); // NFULA_IFINDEX_INDEV
    let mac = [0x02, 0x00, 0x5e, 0xed, 0x00, 0x02];
    let mut hwaddr = 6u16.to_be_bytes().to_vec();
    hwaddr.extend_from_slice(&[0, 0]);
    hwaddr.extend_from_slice(&mac);
    hwaddr.extend_from_slice(&[0, 0]);
    nla(&mut body, 8, &hwaddr); // NFULA_HWADDR
    nla(&mut body, 15, &1u16.to_be_bytes()); // NFULA_HWTYPE: Ethernet
    nla(&mut body, 17, &14u16.to_be_bytes()); // NFULA_HWLEN
    let mut hwheader = vec![0x02, 0x00, 0x5e, 0xed, 0x00, 0x01];
    hwheader.extend_from_slice(&mac);
    hwheader.extend_from_slice(&ethertype.to_be_bytes());
    nla(&mut body, 16, &hwheader); // NFULA_HWHEADER
    let mut stamp = 1_740_000_000u64.to_be_bytes().to_vec();
    stamp.extend_from_slice(&123_456u64.to_be_bytes());
    nla(&mut body, 3, &stamp); // NFULA_TIMESTAMP
    nla(&mut body, 9, packet); // NFULA_PAYLOAD
    let mut out = Vec::new();
    out.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&0x0400u16.to_ne_bytes()); // NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET
    out.extend_from_slice(&0u16.to_ne_bytes()); // flags
    out.extend_from_slice(&0u32.to_ne_bytes()); // sequence
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id
    out.extend_from_slice(&body);
    out
}
