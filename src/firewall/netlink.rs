//! Per-knock updates of the grant and armed sets over netlink: one nfnetlink batch per change,
//! no process spawned, acknowledged by the kernel before the call returns.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
    SetElementMessage, Verdict, VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};

use super::ruleset::{door_chain, Family, TABLE};
use crate::config::{KnockPort, Proto};

/// `NFNL_SUBSYS_NFTABLES`: the subsystem a batch is addressed to.
const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// What went wrong talking to the kernel's nftables over netlink.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error(
        "cannot open a netlink socket to nftables: {0} (portknock needs root or CAP_NET_ADMIN)"
    )]
    Open(#[source] io::Error),
    #[error("netlink I/O with nftables failed: {0}")]
    Io(#[from] io::Error),
    #[error("nftables refused to {what}: {error} (is the portknock table installed? run `portknock apply`)")]
    Refused {
        what: &'static str,
        error: io::Error,
    },
    #[error("nftables sent an answer portknock cannot read: {0}")]
    Decode(String),
}

/// A netlink socket that changes elements of portknock's sets.
pub struct SetUpdater {
    socket: Socket,
    seq: u32,
    rx: Vec<u8>,
}

impl SetUpdater {
    /// Opens the socket. Needs CAP_NET_ADMIN in the network namespace.
    pub fn open() -> Result<SetUpdater, NetlinkError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NetlinkError::Open)?;
        socket.bind_auto().map_err(NetlinkError::Open)?;
        Ok(SetUpdater {
            socket,
            seq: 0,
            rx: vec![0; 8192],
        })
    }

    /// Grants (source, port) for `open_for`, refreshing the timeout of an existing grant.
    pub fn grant(
        &mut self,
        source: IpAddr,
        port: u16,
        open_for: Duration,
    ) -> Result<(), NetlinkError> {
        let family = Family::of(source);
        let elem = vec![
            SetElementAttribute::Key(DataAttribute::Value(grant_key(source, port))),
            SetElementAttribute::Timeout(millis(open_for)),
        ];
        self.send(true, family.granted(), elem, "add a grant")
    }

    /// Removes the grant of (source, port); a grant that is not there is not an error.
    pub fn revoke(&mut self, source: IpAddr, port: u16) -> Result<(), NetlinkError> {
        let elem = vec![SetElementAttribute::Key(DataAttribute::Value(grant_key(
            source, port,
        )))];
        self.delete_ignoring_absent(Family::of(source).granted(), elem, "remove a grant")
    }

    /// Arms the final knock of a simple door for `source`: until `within` passes, that knock
    /// makes the kernel itself grant `protected`.
    pub fn arm(
        &mut self,
        source: IpAddr,
        final_knock: KnockPort,
        protected: u16,
        within: Duration,
    ) -> Result<(), NetlinkError> {
        let elem = vec![
            SetElementAttribute::Key(DataAttribute::Value(armed_key(source, final_knock))),
            SetElementAttribute::Data(DataAttribute::Verdict(vec![
                VerdictAttribute::Code(Verdict::Jump),
                VerdictAttribute::Chain(door_chain(protected)),
            ])),
            SetElementAttribute::Timeout(millis(within)),
        ];
        self.send(true, Family::of(source).armed(), elem, "arm a final knock")
    }

    /// Takes back an armed final knock; one that already expired is not an error.
    pub fn disarm(&mut self, source: IpAddr, final_knock: KnockPort) -> Result<(), NetlinkError> {
        let elem = vec![SetElementAttribute::Key(DataAttribute::Value(armed_key(
            source,
            final_knock,
        )))];
        self.delete_ignoring_absent(Family::of(source).armed(), elem, "disarm a final knock")
    }

    fn delete_ignoring_absent(
        &mut self,
        set: &str,
        elem: Vec<SetElementAttribute>,
        what: &'static str,
    ) -> Result<(), NetlinkError> {
        match self.send(false, set, elem, what) {
            Err(NetlinkError::Refused { error, .. })
                if error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// Sends one element change as a batch and waits for the kernel's acknowledgement.
    fn send(
        &mut self,
        add: bool,
        set: &str,
        elem: Vec<SetElementAttribute>,
        what: &'static str,
    ) -> Result<(), NetlinkError> {
        let control = |inner: ControlMessage| {
            NetlinkMessage::from(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
                inner,
            ))
        };
        let message = SetElementMessage {
            attributes: vec![
                SetElementList::Table(TABLE.to_string()),
                SetElementList::Set(set.to_string()),
                SetElementList::Elements(vec![ListAttribute::Element(elem)]),
            ],
        };
        let inner = if add {
            NfTablesMessage::NewSetElement(message)
        } else {
            NfTablesMessage::DeleteSetElement(message)
        };
        let change = NetlinkMessage::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
            inner,
        ));
        // Only the change asks for an acknowledgement: the kernel then answers with exactly one
        // message, success or the error that refused it.
        let change_flags = NLM_F_REQUEST | NLM_F_ACK | if add { NLM_F_CREATE } else { 0 };
        let batch = [
            (control(ControlMessage::BatchBegin), NLM_F_REQUEST),
            (change, change_flags),
            (control(ControlMessage::BatchEnd), NLM_F_REQUEST),
        ];
        let mut bytes = Vec::with_capacity(256);
        let mut ack_seq = 0;
        for (mut msg, flags) in batch {
            self.seq = self.seq.wrapping_add(1);
            msg.header.flags = flags;
            msg.header.sequence_number = self.seq;
            if flags & NLM_F_ACK != 0 {
                ack_seq = self.seq;
            }
            msg.finalize();
            let start = bytes.len();
            bytes.resize(start + msg.buffer_len(), 0);
            msg.serialize(&mut bytes[start..]);
        }
        self.socket.send(&bytes, 0)?;
        self.wait_ack(ack_seq, what)
    }

    fn wait_ack(&mut self, seq: u32, what: &'static str) -> Result<(), NetlinkError> {
        // Bounded: the kernel answers a batch at once; stray messages of older sequence
        // numbers (none are expected) are skipped a limited number of times.
        for _ in 0..16 {
            let len = self.socket.recv(&mut &mut self.rx[..], 0)?;
            let mut offset = 0;
            while offset < len {
                let msg = NetlinkMessage::<NetfilterMessage>::deserialize(&self.rx[offset..len])
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                let msg_len = msg.header.length as usize;
                if msg.header.sequence_number == seq {
                    if let NetlinkPayload::Error(err) = msg.payload {
                        return match err.code {
                            None => Ok(()),
                            Some(code) => Err(NetlinkError::Refused {
                                what,
                                error: io::Error::from_raw_os_error(-code.get()),
                            }),
                        };
                    }
                }
                if msg_len == 0 {
                    break;
                }
                offset += msg_len;
            }
        }
        Err(NetlinkError::Decode(format!(
            "no acknowledgement from the kernel when trying to {what}"
        )))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Key of `granted4`/`granted6`: address . port, each field padded to a 32-bit register as the
/// kernel lays out concatenations.
fn grant_key(source: IpAddr, port: u16) -> Vec<u8> {
    let mut key = addr_bytes(source);
    key.extend_from_slice(&port.to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    key
}

/// Key of `armed4`/`armed6`: address . l4 protocol . port, padded as above.
fn armed_key(source: IpAddr, knock: KnockPort) -> Vec<u8> {
    let proto = match knock.proto {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    };
    let mut key = addr_bytes(source);
    key.extend_from_slice(&[proto, 0, 0, 0]);
    key.extend_from_slice(&knock.port.to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    key
}

fn addr_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_register_padded() {
        let v4: IpAddr = "198.18.0.2".parse().unwrap();
        assert_eq!(grant_key(v4, 22), vec![198, 18, 0, 2, 0, 22, 0, 0]);
        let knock = KnockPort::udp(0x1f40);
        assert_eq!(
            armed_key(v4, knock),
            vec![198, 18, 0, 2, 17, 0, 0, 0, 0x1f, 0x40, 0, 0]
        );
        let v6: IpAddr = "fd00:5eed::2".parse().unwrap();
        assert_eq!(grant_key(v6, 22).len(), 20);
        assert_eq!(armed_key(v6, knock).len(), 24);
    }
}
