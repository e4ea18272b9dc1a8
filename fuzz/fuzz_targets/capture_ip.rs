//! `capture::parse_ip`: an IPv4 or IPv6 packet, possibly cut short by the NFLOG copy range,
//! into a knock.
//!
//! Checks: no panic; a knock's source is the address in the header of the IP version the first
//! nibble names; an IPv4 knock has the protocol byte of its transport (nothing is walked, not
//! even AH, as nftables walks nothing), its port right after the header, and is not a later
//! fragment (whose bytes are payload, not a transport header that names a port); an IPv6
//! knock whose first next header is a transport is that transport, with its port right after
//! the fixed header, and one whose first next header is AH is never a knock (netfilter stops
//! at AH); a TCP knock carries no payload and a UDP payload is empty (a header cut after the
//! port is still a knock, as `udp dport` reads the port alone) or fits in the packet after the
//! minimal headers.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use portknock::capture::parse_ip;
use portknock::port::Proto;

const TCP: u8 = 6;
const UDP: u8 = 17;
const AH: u8 = 51;

fuzz_target!(|data: &[u8]| {
    let Some(packet) = parse_ip(data) else {
        return;
    };
    let version = data[0] >> 4;
    let protocol = match packet.knock.proto {
        Proto::Tcp => TCP,
        Proto::Udp => UDP,
    };
    let port_at = |offset: usize| u16::from_be_bytes([data[offset + 2], data[offset + 3]]);
    match packet.source {
        IpAddr::V4(source) => {
            assert_eq!(version, 4);
            assert!(data.len() >= 20);
            let bytes: [u8; 4] = data[12..16].try_into().unwrap();
            assert_eq!(source, Ipv4Addr::from(bytes));
            let fragment_offset = u16::from_be_bytes([data[6], data[7]]) & 0x1fff;
            assert_eq!(fragment_offset, 0, "a later fragment taken as a knock");
            assert_eq!(data[9], protocol);
            assert_eq!(packet.knock.port, port_at(usize::from(data[0] & 0x0f) * 4));
        }
        IpAddr::V6(source) => {
            assert_eq!(version, 6);
            assert!(data.len() >= 40);
            let bytes: [u8; 16] = data[8..24].try_into().unwrap();
            assert_eq!(source, Ipv6Addr::from(bytes));
            assert_ne!(data[6], AH, "a transport behind AH taken as a knock");
            if [TCP, UDP].contains(&data[6]) {
                assert_eq!(data[6], protocol);
                assert_eq!(packet.knock.port, port_at(40));
            }
        }
    }
    match packet.knock.proto {
        Proto::Tcp => assert!(packet.payload.is_empty()),
        // `udp dport` needs only the port: a datagram cut after it is a knock without payload.
        Proto::Udp => assert!(packet.payload.is_empty() || packet.payload.len() + 28 <= data.len()),
    }
});
