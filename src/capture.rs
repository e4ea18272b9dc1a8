//! Knock packets from the kernel: the `log group` rule of the knock chain copies each knock to
//! an NFLOG group, and this module reads them and turns them into [`Packet`]s.
//!
//! The kernel has already filtered: only TCP SYNs to knock ports and UDP datagrams to knock
//! ports arrive here, so unrelated traffic costs the daemon nothing.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigMode, ConfigNla, PacketNla, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};

use crate::firewall::{self, SNAPLEN};
use crate::port::KnockPort;

/// Receive buffer asked of the kernel: a burst of some 50,000 knocks waits here while the
/// daemon works, instead of being dropped.
const RECV_BUFFER: usize = 16 << 20;

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

/// Parses an IPv4 or IPv6 packet (possibly cut short by the copy range) into a knock.
///
/// An IPv4-mapped IPv6 source is no knock: no host sends from one (Linux 6.18 drops such
/// packets before netfilter, measured; other kernels may not), and the engine would count it
/// as the IPv4 address while the kernel's sets would hold it as an IPv6 one.
///
/// Public for fuzzing.
pub fn parse_ip(data: &[u8]) -> Option<Packet> {
    let sliced = LaxSlicedPacket::from_ip(data).ok()?;
    let source = match sliced.net? {
        LaxNetSlice::Ipv4(ip) => IpAddr::V4(ip.header().source_addr()),
        LaxNetSlice::Ipv6(ip) => {
            let source = ip.header().source_addr();
            if source.to_ipv4_mapped().is_some() {
                return None;
            }
            IpAddr::V6(source)
        }
        _ => return None,
    };
    match sliced.transport? {
        TransportSlice::Tcp(tcp) => Some(Packet {
            source,
            knock: KnockPort::tcp(tcp.destination_port()),
            payload: Vec::new(),
        }),
        TransportSlice::Udp(udp) => Some(Packet {
            source,
            knock: KnockPort::udp(udp.destination_port()),
            payload: udp.payload().to_vec(),
        }),
        _ => None,
    }
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

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut out = Vec::new();
            parse_messages(&bytes, &mut out);
            let _ = parse_ip(&bytes);
        }
    }
}
