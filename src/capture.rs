//! Knock packets from the kernel: the `log group` rule of the knock chain copies each knock to
//! an NFLOG group, and this module reads them and turns them into [`Packet`]s.
//!
//! The kernel has already filtered: only TCP SYNs to knock ports and UDP datagrams to knock
//! ports arrive here, so unrelated traffic costs the daemon nothing.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigMode, ConfigNla, PacketNla, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};

use crate::config::KnockPort;

/// Receive buffer asked of the kernel: a burst of some 50,000 knocks waits here while the
/// daemon works, instead of being dropped.
const RECV_BUFFER: usize = 16 << 20;
/// Bytes of packet copied per knock: the IPv6 header, a UDP header and a 65-byte OTP fit.
const COPY_RANGE: u32 = 256;

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
        "cannot subscribe to NFLOG group {group}: {source} (portknock needs root or CAP_NET_ADMIN)"
    )]
    Subscribe { group: u16, source: io::Error },
    /// The kernel refused the binding to the group itself, as it does when another socket is
    /// bound to it already (or, less likely here, for a process without CAP_NET_ADMIN).
    #[error("cannot read knocks: the kernel refused NFLOG group {group} ({error}); another process already reads it in this network namespace, most likely a second portknock daemon with another state directory (see `ss -f netlink -p`, stop it first), or this process lacks CAP_NET_ADMIN")]
    GroupTaken { group: u16, error: io::Error },
    #[error("the kernel dropped knocks: the NFLOG receive buffer overflowed during a flood")]
    Overrun,
    #[error("reading knocks from the kernel failed: {0}")]
    Io(#[from] io::Error),
}

/// A subscription to the NFLOG group of the knock chain.
pub struct Capture {
    socket: Socket,
    buf: Vec<u8>,
}

impl Capture {
    /// Subscribes to `group`, asking for the first `COPY_RANGE` bytes of each packet.
    pub fn open(group: u16) -> Result<Capture, CaptureError> {
        let subscribe = |source| CaptureError::Subscribe { group, source };
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(subscribe)?;
        socket.bind_auto().map_err(subscribe)?;
        set_receive_buffer(&socket, RECV_BUFFER);
        let mut capture = Capture {
            socket,
            buf: vec![0; 1 << 16],
        };
        let request = config_request(
            NetfilterProtoFamily::Unspec,
            group,
            vec![
                ConfigCmd::Bind.into(),
                ConfigMode::new_packet(COPY_RANGE).into(),
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

    /// Blocks until knocks arrive and appends them to `out`. Messages that are not knock
    /// packets, or packets that cannot be parsed, are skipped: nothing a sender puts on the
    /// wire can make this fail or panic.
    pub fn recv(&mut self, out: &mut Vec<Packet>) -> Result<(), CaptureError> {
        let len = match self.socket.recv(&mut &mut self.buf[..], 0) {
            Ok(len) => len,
            // ENOBUFS: the receive buffer overflowed and the kernel dropped messages.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Err(CaptureError::Overrun),
            Err(e) => return Err(e.into()),
        };
        parse_messages(&self.buf[..len], out);
        Ok(())
    }

    /// Makes [`Capture::recv`] return (with a `WouldBlock` or `TimedOut` I/O error) when no
    /// knock arrives within `timeout`, so the caller can look at its signal flags.
    pub fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        socket2::SockRef::from(&self.socket).set_read_timeout(Some(timeout))
    }
}

fn set_receive_buffer(socket: &Socket, bytes: usize) {
    // SO_RCVBUFFORCE passes the rmem_max limit (212,992 bytes by default, a few hundred knocks)
    // for a process with CAP_NET_ADMIN; the plain option, capped at rmem_max, is the fallback
    // when it is refused. A smaller buffer only means overruns come sooner, and those are
    // counted and logged, so neither failure stops the daemon.
    if setsockopt(socket, sockopt::RcvBufForce, &bytes).is_err()
        && setsockopt(socket, sockopt::RcvBuf, &bytes).is_err()
    {
        tracing::warn!("could not enlarge the NFLOG receive buffer; floods may overrun it sooner");
    }
}

/// Parses a buffer of netlink messages from the NFLOG group. Public for fuzzing.
pub fn parse_messages(mut bytes: &[u8], out: &mut Vec<Packet>) {
    // Bounded by the buffer: each step consumes at least one netlink header or stops.
    while !bytes.is_empty() {
        let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(bytes) else {
            return;
        };
        let len = (msg.header.length as usize).min(bytes.len());
        if len == 0 {
            return;
        }
        if let NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
            ..
        }) = &msg.payload
        {
            let payload = nlas.iter().find_map(|nla| match nla {
                PacketNla::Payload(p) => Some(p.as_slice()),
                _ => None,
            });
            if let Some(packet) = payload.and_then(parse_ip) {
                out.push(packet);
            }
        }
        // Netlink messages are 4-byte aligned within a buffer.
        let aligned = (len + 3) & !3;
        bytes = bytes.get(aligned..).unwrap_or_default();
    }
}

/// Parses an IPv4 or IPv6 packet (possibly cut short by the copy range) into a knock.
/// Public for fuzzing.
pub fn parse_ip(data: &[u8]) -> Option<Packet> {
    let sliced = LaxSlicedPacket::from_ip(data).ok()?;
    let source = match sliced.net? {
        LaxNetSlice::Ipv4(ip) => IpAddr::V4(ip.header().source_addr()),
        LaxNetSlice::Ipv6(ip) => IpAddr::V6(ip.header().source_addr()),
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

    #[test]
    fn parses_a_tcp_syn_over_ipv6() {
        let src = "fd00:5eed::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let dst = "fd00:5eed::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let builder = PacketBuilder::ipv6(src, dst, 64)
            .tcp(40000, 7000, 1, 64000)
            .syn();
        let mut bytes = Vec::new();
        builder.write(&mut bytes, &[]).unwrap();
        let packet = parse_ip(&bytes).unwrap();
        assert_eq!(packet.source, IpAddr::V6(src.into()));
        assert_eq!(packet.knock, KnockPort::tcp(7000));
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
