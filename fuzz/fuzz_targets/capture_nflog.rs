//! `capture::parse_messages`: a buffer of netlink messages read from the NFLOG group.
//!
//! The first byte picks the mode. Raw mode feeds the rest as it is: no panic, and no more knocks
//! than the buffer has room for (each needs a netlink header, a netfilter header and an
//! attribute header). Framed mode decodes the rest (with `arbitrary`) into NFLOG packet messages
//! whose IP packets are arbitrary, frames them as the kernel does, optionally followed by
//! arbitrary trailing bytes, and checks that exactly the knocks `capture::parse_ip` finds in those
//! packets come out, in order: the framing loses and invents nothing.
#![no_main]

use std::ffi::CString;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{PacketNla, ULogMessage};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use portknock::capture::{parse_ip, parse_messages};

/// One NFLOG packet message: its IP packet and a few attributes the kernel also sends.
#[derive(Arbitrary, Debug)]
struct Message {
    family: u8,
    group: u16,
    extras: Vec<Extra>,
    /// Where among the extras the payload attribute goes.
    payload_at: u8,
    packet: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Extra {
    Mark(u32),
    InDev(u32),
    Uid(u32),
    Gid(u32),
    HwType(u16),
    Prefix(Vec<u8>),
    HwHeader(Vec<u8>),
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut out = Vec::new();
    if mode & 1 == 0 {
        parse_messages(rest, &mut out);
        assert!(
            out.len() * 24 <= rest.len(),
            "{} knocks from {} bytes",
            out.len(),
            rest.len()
        );
        return;
    }

    let mut u = Unstructured::new(rest);
    let Ok(messages) = Vec::<Message>::arbitrary(&mut u) else {
        return;
    };
    let trailing = u.take_rest();
    let mut buffer = Vec::new();
    let mut expected = Vec::new();
    for m in &messages {
        if m.packet.len() > 4096 {
            return;
        }
        let mut nlas: Vec<PacketNla> = m
            .extras
            .iter()
            .map(|e| match e {
                Extra::Mark(v) => PacketNla::Mark(*v),
                Extra::InDev(v) => PacketNla::IfIndexInDev(*v),
                Extra::Uid(v) => PacketNla::Uid(*v),
                Extra::Gid(v) => PacketNla::Gid(*v),
                Extra::HwType(v) => PacketNla::HwType(*v),
                Extra::Prefix(p) => {
                    let p: Vec<u8> = p.iter().copied().filter(|&b| b != 0).take(64).collect();
                    PacketNla::Prefix(CString::new(p).expect("no NUL"))
                }
                Extra::HwHeader(h) => PacketNla::HwHeader(h.iter().copied().take(64).collect()),
            })
            .collect();
        let at = usize::from(m.payload_at) % (nlas.len() + 1);
        nlas.insert(at, PacketNla::Payload(m.packet.clone()));
        let mut msg = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::from(m.family), 0, m.group),
                ULogMessage::Packet(nlas),
            )),
        );
        msg.finalize();
        let start = buffer.len();
        buffer.resize(start + msg.buffer_len(), 0);
        msg.serialize(&mut buffer[start..]);
        // The kernel pads each message to 4 bytes within a buffer.
        buffer.resize(buffer.len().next_multiple_of(4), 0);
        expected.extend(parse_ip(&m.packet));
    }
    parse_messages(&buffer, &mut out);
    assert_eq!(out, expected);

    // Whatever follows the last message, the knocks before it are all there.
    buffer.extend_from_slice(trailing);
    out.clear();
    parse_messages(&buffer, &mut out);
    assert!(out.len() >= expected.len() && out[..expected.len()] == expected[..]);
});
