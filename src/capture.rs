//! Knock packets from the kernel: the `log group` rule of the knock chain copies each knock to
//! an NFLOG group, and this module reads them and turns them into [`Packet`]s.
//!
//! The kernel has already filtered: only TCP SYNs to knock ports and UDP datagrams to knock
//! ports arrive here, so unrelated traffic costs the daemon nothing.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, BorrowedFd};

use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigMode, ConfigNla, PacketNla, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};

use crate::firewall::{self, SNAPLEN};
use crate::port::KnockPort;

/// Receive buffer asked of the kernel, 16 MiB: a burst of some 50,000 knocks waits here while the
/// daemon works, instead of being dropped.
const RECV_BUFFER: usize = 16_777_216;

/// Most datagrams one [`Capture::recv`] takes: enough for one kernel update to cover many
/// knocks under a flood, few enough that the first of them is not kept waiting.
const DRAIN: usize = 64;

/// One knock as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub source: IpAddr,
    pub knock: KnockPort,
    /// The UDP payload (empty for TCP), as much as was copied.
    pub payload: Vec<u8>,
}

/// What went wrong reading knocks.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "cannot subscribe to NFLOG group {group}: {error} (portknock needs root or CAP_NET_ADMIN)"
    )]
    Subscribe { group: u16, error: io::Error },
    /// The kernel refused the binding to the group itself, as it does when another socket is
    /// bound to it already (or, less likely here, for a process without CAP_NET_ADMIN).
    #[error("cannot read knocks: the kernel refused NFLOG group {group} ({error}); another process already reads it in this network namespace, most likely a second portknock daemon with another state directory (see `ss -f netlink -p`, stop it first), or this process lacks CAP_NET_ADMIN")]
    GroupTaken { group: u16, error: io::Error },
    #[error("the kernel dropped knocks: the NFLOG receive buffer overflowed during a flood")]
    Overrun,
    #[error("reading knocks from the kernel failed: {0}")]
    Io(io::Error),
}

/// A subscription to the NFLOG group of the knock chain.
pub struct Capture {
    socket: Socket,
    buf: Vec<u8>,
}

impl Capture {
    /// Subscribes to `group`, asking for the first [`SNAPLEN`] bytes of each packet.
    pub fn open(group: u16) -> Result<Capture, CaptureError> {
        let subscribe = |error| CaptureError::Subscribe { group, error };
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(subscribe)?;
        socket.bind_auto().map_err(subscribe)?;
        firewall::set_receive_buffer(socket.as_fd(), RECV_BUFFER);
        let mut capture = Capture {
            socket,
            buf: vec![0; 1 << 16],
        };
        let request = config_request(
            NetfilterProtoFamily::Unspec,
            group,
            vec![
                ConfigCmd::Bind.into(),
                ConfigMode::new_packet(SNAPLEN).into(),
                // The kernel's default batches 100 packets or waits a second before it sends:
                // a knock must reach the daemon at once.
                ConfigNla::QThresh(1),
            ],
        );
        capture.request(request).map_err(|error| {
            // nfnetlink_log answers EPERM to a bind to a group that another socket holds.
            if error.raw_os_error() == Some(libc::EPERM) {
                CaptureError::GroupTaken { group, error }
            } else {
                subscribe(error)
            }
        })?;
        // From here on the daemon's loop polls the socket and reads what is there.
        capture.socket.set_non_blocking(true).map_err(subscribe)?;
        Ok(capture)
    }

    fn request(&mut self, request: NetlinkMessage<NetfilterMessage>) -> io::Result<()> {
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        let len = self.socket.recv(&mut &mut self.buf[..], 0)?;
        match NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[..len]) {
            Ok(NetlinkMessage {
                payload: NetlinkPayload::Error(err),
                ..
            }) => match err.code {
                None => Ok(()),
                Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
            },
            Ok(_) => Ok(()),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
    }

    /// Takes the knocks queued (at most 64 datagrams' worth), without waiting, and appends
    /// them to `out`; the caller then handles them together and updates the kernel once.
    /// Messages that are not knock packets, or packets that cannot be parsed, are skipped:
    /// nothing a sender puts on the wire can make this fail or panic. On an overrun, `out`
    /// keeps the knocks read before it.
    pub fn recv(&mut self, out: &mut Vec<Packet>) -> Result<(), CaptureError> {
        for _ in 0..DRAIN {
            let len = match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ENOBUFS: the receive buffer overflowed and the kernel dropped messages.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(CaptureError::Overrun)
                }
                Err(e) => return Err(CaptureError::Io(e)),
            };
            parse_messages(&self.buf[..len], out);
        }
        Ok(())
    }
}

impl AsFd for Capture {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// The netlink type of an NFLOG packet message: `NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET`.
const NFLOG_PACKET: u16 = ((libc::NFNL_SUBSYS_ULOG as u16) << 8) | libc::NFULNL_MSG_PACKET as u16;

/// Parses a buffer of netlink messages from the NFLOG group. Public for fuzzing.
///
/// Only NFLOG packet messages are decoded; others are skipped by their header's length. The
/// decoders of the other netfilter subsystems (nf_tables, conntrack) in netlink-packet-netfilter
/// 0.4 panic on some malformed attributes, and nothing but a packet message carries a knock.
pub fn parse_messages(mut bytes: &[u8], out: &mut Vec<Packet>) {
    // Bounded by the buffer: each step consumes at least one netlink header or stops.
    while !bytes.is_empty() {
        // Checked: the length field is at least a header and at most the buffer.
        let Ok(header) = NetlinkBuffer::new_checked(bytes) else {
            return;
        };
        let len = header.length() as usize;
        if header.message_type() == NFLOG_PACKET {
            if let Ok(NetlinkMessage {
                payload:
                    NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                        ..
                    }),
                ..
            }) = NetlinkMessage::<NetfilterMessage>::deserialize(&bytes[..len])
            {
                let payload = nlas.iter().find_map(|nla| match nla {
                    PacketNla::Payload(p) => Some(p.as_slice()),
                    _ => None,
                });
                if let Some(packet) = payload.and_then(parse_ip) {
                    out.push(packet);
                }
            }
        }
        // Netlink messages are 4-byte aligned within a buffer.
        let aligned = (len + 3) & !3;
        bytes = bytes.get(aligned..).unwrap_or_default();
    }
}

/// IP protocol numbers (IANA) that decide what a packet is.
const TCP: u8 = 6;
const UDP: u8 = 17;
/// IPv6 extension headers the kernel walks to the transport (`ipv6_ext_hdr`): hop-by-hop
/// options, routing, fragment and destination options. AH (51) is one too, but netfilter
/// stops there (below).
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DESTINATION: u8 = 60;

/// Parses an IPv4 or IPv6 packet (possibly cut short by the copy range) into a knock.
///
/// What a knock is, is the kernel's to say: the knock chain matches `tcp dport`, `udp dport`
/// and `meta l4proto . th dport`, and this reads the same fields the way nftables does
/// (`nft_set_pktinfo_ipv4`, `nft_set_pktinfo_ipv6`), so that the daemon and the kernel never
/// disagree on a packet's protocol and port:
/// - IPv4: the protocol byte is the transport, which starts right after the header (IHL);
///   nothing is walked, not even AH. A fragment with a non-zero offset has no transport.
/// - IPv6: the hop-by-hop, routing, fragment and destination options headers are walked
///   (`ipv6_find_hdr`), but not AH: netfilter asks it to stop there (`IP6_FH_F_AUTH`), so
///   the protocol of a packet with AH is AH, whatever follows. A fragment with a non-zero
///   offset, or a header cut short, has no transport.
///
/// The kernel's own predicates (the knock port sets, only SYNs for TCP) are its business:
/// they decided that the packet was logged. An IPv4-mapped IPv6 source is no knock: no host
/// sends from one (Linux 6.18 drops such packets before netfilter, measured; other kernels
/// may not), and the engine would count it as the IPv4 address while the kernel's sets would
/// hold it as an IPv6 one.
///
/// Public for fuzzing.
pub fn parse_ip(data: &[u8]) -> Option<Packet> {
    let (source, protocol, transport) = match data.first()? >> 4 {
        4 => ipv4(data)?,
        6 => ipv6(data)?,
        _ => return None,
    };
    let port = u16::from_be_bytes([*transport.get(2)?, *transport.get(3)?]);
    match protocol {
        TCP => Some(Packet {
            source,
            knock: KnockPort::tcp(port),
            payload: Vec::new(),
        }),
        UDP => {
            // The datagram's own length where it is plausible; else as much as was copied.
            let end = transport
                .get(4..6)
                .map(|len| usize::from(u16::from_be_bytes([len[0], len[1]])))
                .filter(|len| (8..=transport.len()).contains(len))
                .unwrap_or(transport.len());
            Some(Packet {
                source,
                knock: KnockPort::udp(port),
                payload: transport.get(8..end).unwrap_or_default().to_vec(),
            })
        }
        _ => None,
    }
}

/// The source, the protocol byte and the bytes from the transport header to the end of the
/// packet (as far as copied) of an IPv4 packet; `None` when it has no transport header.
fn ipv4(data: &[u8]) -> Option<(IpAddr, u8, &[u8])> {
    let header = data.get(..20)?;
    let header_len = usize::from(header[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let fragment_offset = u16::from_be_bytes([header[6], header[7]]) & 0x1fff;
    if header_len < 20 || fragment_offset != 0 {
        return None;
    }
    let source = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    // None, too, when the total length is shorter than the header.
    let transport = data.get(header_len..total_len.min(data.len()))?;
    Some((IpAddr::V4(source), header[9], transport))
}

/// As [`ipv4`], for IPv6: the protocol is the next header after the extension headers that
/// netfilter walks.
fn ipv6(data: &[u8]) -> Option<(IpAddr, u8, &[u8])> {
    let header = data.get(..40)?;
    let octets: [u8; 16] = header[8..24].try_into().ok()?;
    let source = Ipv6Addr::from(octets);
    if source.to_ipv4_mapped().is_some() {
        return None;
    }
    // A payload length of 0 is a jumbogram's: the packet is as long as the copy.
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let packet = match payload_len {
        0 => data,
        len => &data[..(40 + len).min(data.len())],
    };
    let mut next = header[6];
    let mut start = 40;
    // Bounded by the packet: every header moves `start` on by at least 8 bytes.
    loop {
        match next {
            HOP_BY_HOP | DESTINATION | ROUTING => {
                // The kernel reads 4 bytes of a routing header, but a header cut before them
                // is cut before its 8th byte too, where the next one would begin.
                let ext = packet.get(start..start + 2)?;
                next = ext[0];
                start += (usize::from(ext[1]) + 1) * 8;
            }
            FRAGMENT => {
                let ext = packet.get(start..start + 4)?;
                if u16::from_be_bytes([ext[2], ext[3]]) & !7 != 0 {
                    return None;
                }
                next = ext[0];
                start += 8;
            }
            _ => break,
        }
    }
    Some((IpAddr::V6(source), next, packet.get(start..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    #[test]
    fn parses_a_udp_otp_knock_over_ipv4() {
        let builder = PacketBuilder::ipv4([198, 18, 0, 2], [198, 18, 0, 1], 64).udp(40000, 2000);
        let payload = [b'a'; 65];
        let mut bytes = Vec::new();
        builder.write(&mut bytes, &payload).unwrap();
        let packet = parse_ip(&bytes).unwrap();
        assert_eq!(packet.source, "198.18.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(packet.knock, KnockPort::udp(2000));
        assert_eq!(packet.payload, payload);
    }

    /// A TCP SYN to fd00:5eed::1 port 7000 from `source`.
    fn syn_over_ipv6(source: &str) -> Vec<u8> {
        let src: std::net::Ipv6Addr = source.parse().unwrap();
        let dst: std::net::Ipv6Addr = "fd00:5eed::1".parse().unwrap();
        let builder = PacketBuilder::ipv6(src.octets(), dst.octets(), 64)
            .tcp(40000, 7000, 1, 64000)
            .syn();
        let mut bytes = Vec::new();
        builder.write(&mut bytes, &[]).unwrap();
        bytes
    }

    #[test]
    fn parses_a_tcp_syn_over_ipv6() {
        let packet = parse_ip(&syn_over_ipv6("fd00:5eed::2")).unwrap();
        assert_eq!(packet.source, "fd00:5eed::2".parse::<IpAddr>().unwrap());
        assert_eq!(packet.knock, KnockPort::tcp(7000));
    }

    #[test]
    fn an_ipv4_mapped_ipv6_source_is_no_knock() {
        assert!(parse_ip(&syn_over_ipv6("::ffff:198.18.7.3")).is_none());
    }

    /// An NFLOG packet message carrying `packet`, as the kernel frames it (header, netfilter
    /// header, the payload attribute), padded to 4 bytes.
    fn nflog_message(packet: &[u8]) -> Vec<u8> {
        let nla_len = 4 + packet.len();
        let len = 16 + 4 + nla_len;
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&NFLOG_PACKET.to_ne_bytes());
        out.extend_from_slice(&[0; 10]); // flags, sequence, port id
        out.extend_from_slice(&[2, 0, 0xa5, 0xb4]); // AF_INET, version 0, group 42420
        out.extend_from_slice(&(nla_len as u16).to_ne_bytes());
        out.extend_from_slice(&9u16.to_ne_bytes()); // NFULA_PAYLOAD
        out.extend_from_slice(packet);
        out.resize(len.next_multiple_of(4), 0);
        out
    }

    fn syn4() -> Vec<u8> {
        let builder = PacketBuilder::ipv4([198, 18, 0, 2], [198, 18, 0, 1], 64)
            .tcp(40000, 7000, 1, 64000)
            .syn();
        let mut bytes = Vec::new();
        builder.write(&mut bytes, &[]).unwrap();
        bytes
    }

    /// Found by fuzz/fuzz_targets/capture_nflog.rs: an nf_tables message whose nested attribute
    /// is shorter than an attribute header made netlink-packet-netfilter panic (slice index out
    /// of range) when the buffer was decoded whatever its subsystem.
    const NFTABLES_MESSAGE_THAT_PANICKED: [u8; 27] = [
        0x1b, 0x00, 0x00, 0x00, 0x0a, 0x0a, 0x00, 0xba, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x06, 0x00, 0x11, 0x00, 0xcf, 0x01, 0x00,
    ];

    #[test]
    fn messages_of_other_subsystems_are_skipped_not_decoded() {
        let mut out = Vec::new();
        parse_messages(&NFTABLES_MESSAGE_THAT_PANICKED, &mut out);
        assert!(out.is_empty());

        // A knock after such a message, or after a packet message that does not decode, is
        // still read.
        let mut buffer = NFTABLES_MESSAGE_THAT_PANICKED.to_vec();
        buffer.push(0); // 4-byte alignment
        let mut broken = nflog_message(&syn4());
        broken[20..22].copy_from_slice(&3u16.to_ne_bytes()); // attribute shorter than its header
        buffer.extend_from_slice(&broken);
        buffer.extend_from_slice(&nflog_message(&syn4()));
        parse_messages(&buffer, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].knock, KnockPort::tcp(7000));
        assert_eq!(out[0].source, "198.18.0.2".parse::<IpAddr>().unwrap());
    }

    /// A UDP header and `payload`, the length field saying `length`.
    fn udp(port: u16, length: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = [40000u16, port, length, 0]
            .iter()
            .flat_map(|field| field.to_be_bytes())
            .collect::<Vec<u8>>();
        out.extend_from_slice(payload);
        out
    }

    /// A TCP SYN header to `port`.
    fn syn(port: u16) -> Vec<u8> {
        let mut out = udp(port, 0, &[0; 12]);
        out[12] = 5 << 4;
        out[13] = 0x02;
        out
    }

    /// An IPv4 packet from 198.18.0.2 with `protocol`, IP `options`, the fragment field
    /// `fragment` (flags and offset) and `transport` after the header.
    fn ipv4(protocol: u8, options: &[u8], fragment: u16, transport: &[u8]) -> Vec<u8> {
        let header_len = 20 + options.len();
        let total = u16::try_from(header_len + transport.len()).unwrap();
        let mut out = vec![0x40 | u8::try_from(header_len / 4).unwrap(), 0];
        out.extend(total.to_be_bytes());
        out.extend([0, 0]);
        out.extend(fragment.to_be_bytes());
        out.extend([64, protocol, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1]);
        out.extend_from_slice(options);
        out.extend_from_slice(transport);
        out
    }

    /// An IPv6 packet from fd00:5eed::2 whose first next header is `next`, followed by the
    /// extension headers `extensions` and `transport`.
    fn ipv6(next: u8, extensions: &[u8], transport: &[u8]) -> Vec<u8> {
        let payload = u16::try_from(extensions.len() + transport.len()).unwrap();
        let mut out = vec![0x60, 0, 0, 0];
        out.extend(payload.to_be_bytes());
        out.extend([next, 64]);
        for host in [2u8, 1] {
            out.extend([0xfd, 0, 0x5e, 0xed]);
            out.extend([0; 11]);
            out.push(host);
        }
        out.extend_from_slice(extensions);
        out.extend_from_slice(transport);
        out
    }

    /// An IPv6 options or routing header of `units` 8-byte units, then `next`.
    fn extension(next: u8, units: u8) -> Vec<u8> {
        let mut out = vec![0; usize::from(units) * 8];
        out[0] = next;
        out[1] = units - 1;
        out
    }

    /// An IPv6 fragment header with `offset` (in 8-byte units) and the more-fragments flag.
    fn fragment(next: u8, offset: u16, more: bool) -> Vec<u8> {
        let mut out = vec![next, 0];
        out.extend((offset << 3 | u16::from(more)).to_be_bytes());
        out.extend([0, 0, 0, 1]);
        out
    }

    fn source4() -> IpAddr {
        "198.18.0.2".parse().unwrap()
    }

    fn source6() -> IpAddr {
        "fd00:5eed::2".parse().unwrap()
    }

    #[test]
    fn an_ipv4_knock_is_read_after_the_header_and_its_options() {
        let knock = parse_ip(&ipv4(6, &[1, 1, 1, 0], 0, &syn(7000))).unwrap();
        assert_eq!(
            (knock.source, knock.knock),
            (source4(), KnockPort::tcp(7000))
        );
        assert!(knock.payload.is_empty());
        let knock = parse_ip(&ipv4(17, &[], 0, &udp(2000, 11, b"abc"))).unwrap();
        assert_eq!(
            (knock.source, knock.knock),
            (source4(), KnockPort::udp(2000))
        );
        assert_eq!(knock.payload, b"abc");
    }

    /// nftables matches a transport header in a fragment whose offset is 0 (the first, or an
    /// atomic one), never in a later fragment, whose bytes are payload.
    #[test]
    fn only_a_fragment_at_offset_zero_has_a_transport_header() {
        let more_fragments = 0x2000;
        assert!(parse_ip(&ipv4(17, &[], more_fragments, &udp(2000, 8, b""))).is_some());
        assert_eq!(parse_ip(&ipv4(17, &[], 1, &udp(2000, 8, b""))), None);
        assert_eq!(parse_ip(&ipv4(17, &[], 0x1000, &udp(2000, 8, b""))), None);
        let first = fragment(17, 0, true);
        assert!(parse_ip(&ipv6(44, &first, &udp(2000, 8, b""))).is_some());
        for later in [fragment(17, 1, true), fragment(17, 0x1000, false)] {
            assert_eq!(parse_ip(&ipv6(44, &later, &udp(2000, 8, b""))), None);
        }
    }

    /// The header chain that `ipv6_find_hdr` walks for nftables, in any order and repeated:
    /// hop-by-hop, destination options, routing, fragment.
    #[test]
    fn ipv6_extension_headers_are_walked_to_the_transport() {
        let mut chain = extension(60, 1);
        chain.extend(extension(43, 2));
        chain.extend(extension(44, 1));
        chain.extend(fragment(60, 0, false));
        chain.extend(extension(17, 1));
        let knock = parse_ip(&ipv6(0, &chain, &udp(2000, 12, b"otp!"))).unwrap();
        assert_eq!(
            (knock.source, knock.knock),
            (source6(), KnockPort::udp(2000))
        );
        assert_eq!(knock.payload, b"otp!");
        let knock = parse_ip(&ipv6(60, &extension(6, 3), &syn(7000))).unwrap();
        assert_eq!(knock.knock, KnockPort::tcp(7000));
    }

    /// Netfilter stops at AH (`IP6_FH_F_AUTH`): the packet's protocol is AH, and `udp dport`
    /// does not match it, whatever follows.
    #[test]
    fn ipv6_with_ah_before_the_transport_is_no_knock() {
        // AH's length counts 4-byte units, less 2: 12 bytes with an empty ICV.
        let ah = [17, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1];
        assert_eq!(parse_ip(&ipv6(51, &ah, &udp(2000, 8, b""))), None);
        let mut behind_options = extension(51, 1);
        behind_options.extend(ah);
        assert_eq!(
            parse_ip(&ipv6(0, &behind_options, &udp(2000, 8, b""))),
            None
        );
    }

    #[test]
    fn headers_cut_short_or_malformed_are_no_knock() {
        let whole = ipv4(6, &[], 0, &syn(7000));
        assert_eq!(parse_ip(&whole[..23]), None, "no destination port");
        assert!(
            parse_ip(&whole[..24]).is_some(),
            "the port is all nftables reads"
        );
        let mut short_ihl = whole.clone();
        short_ihl[0] = 0x44;
        assert_eq!(parse_ip(&short_ihl), None);
        let mut short_total = whole.clone();
        short_total[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(parse_ip(&short_total), None);
        let mut no_version = whole;
        no_version[0] = 0x55;
        assert_eq!(parse_ip(&no_version), None);
        assert_eq!(parse_ip(&ipv4(1, &[], 0, &syn(7000))), None, "ICMP");

        let chain = extension(17, 2);
        let packet = ipv6(0, &chain, &udp(2000, 8, b""));
        assert_eq!(
            parse_ip(&packet[..41]),
            None,
            "an extension header cut short"
        );
        assert_eq!(
            parse_ip(&packet[..40 + 16 + 3]),
            None,
            "no destination port"
        );
        let fragmented = ipv6(44, &fragment(17, 0, false), &udp(2000, 8, b""));
        assert_eq!(
            parse_ip(&fragmented[..43]),
            None,
            "a fragment header needs 4 bytes"
        );
        assert_eq!(
            parse_ip(&ipv6(59, &[], &udp(2000, 8, b""))),
            None,
            "no next header"
        );
    }

    /// The IP length fields end the packet: what follows is not the datagram's.
    #[test]
    fn the_ip_and_udp_lengths_end_the_payload() {
        let mut padded = ipv4(17, &[], 0, &udp(2000, 12, b"otp!"));
        padded.extend(b"junk");
        assert_eq!(parse_ip(&padded).unwrap().payload, b"otp!");
        let mut beyond_ip = ipv4(17, &[], 0, &udp(2000, 0, b"otp!"));
        beyond_ip.extend(b"junk");
        assert_eq!(parse_ip(&beyond_ip).unwrap().payload, b"otp!");
        let mut beyond_ip6 = ipv6(17, &[], &udp(2000, 0, b"otp!"));
        beyond_ip6.extend(b"junk");
        assert_eq!(parse_ip(&beyond_ip6).unwrap().payload, b"otp!");
        // A UDP length past the copy (the copy range cut it) or below a header: as copied.
        for length in [200, 7] {
            let cut = ipv4(17, &[], 0, &udp(2000, length, b"otp!"));
            assert_eq!(parse_ip(&cut).unwrap().payload, b"otp!");
        }
        // A jumbogram's payload length is 0: the packet is as long as the copy.
        let mut jumbo = ipv6(17, &[], &udp(2000, 0, b"otp!"));
        jumbo[4..6].copy_from_slice(&[0, 0]);
        assert_eq!(parse_ip(&jumbo).unwrap().payload, b"otp!");
        // Four bytes of UDP header are all `udp dport` needs: a knock with no payload.
        let bare = ipv4(17, &[], 0, &udp(2000, 8, b"")[..4]);
        assert_eq!(parse_ip(&bare).unwrap().payload, b"");
    }

    /// Found by fuzz/fuzz_targets/capture_ip.rs: an IPv4 packet whose protocol byte is 51
    /// (AH). The kernel's `udp dport` matches on the protocol byte, so this is no knock; the
    /// parser once walked the AH header and took what followed as a UDP knock.
    #[test]
    fn an_ipv4_packet_whose_protocol_is_ah_is_no_knock() {
        let mut packet = hex::decode("450001005d9c000021334c1100b0343b").unwrap();
        packet.extend([0x11; 92]);
        packet.extend(hex::decode("33b8375e39").unwrap());
        assert_eq!(parse_ip(&packet), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut out = Vec::new();
            parse_messages(&bytes, &mut out);
            let _ = parse_ip(&bytes);
        }
    }
}
