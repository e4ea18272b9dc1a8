//! Talking to nftables over netlink, no process spawned: per-knock updates of the dynamic sets
//! (grants and the final-knock fast path), and reading the grants back.
//!
//! Changes are queued as values ([`Changes`]) and sent as one nfnetlink transaction by
//! [`Kernel::commit`]: the daemon commits once per read of knock packets, so a flood of knocks
//! costs one commit per read, not one per knock (each commit walks every chain of the ruleset
//! in the kernel).
//!
//! Reads are netlink dumps of the two grant sets rather than `nft list`: nft first builds a
//! cache of the whole ruleset, which with 10,000 doors costs more than the whole `apply`
//! (BENCHMARKS.md, scale), on every `apply`, reload and `status`.

use std::io;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;
use std::slice;
use std::time::Duration;

use netlink_packet_core::{
    ErrorMessage, NetlinkBuffer, NetlinkMessage, NetlinkPayload, NlasIterator, NLA_HEADER_SIZE,
    NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{NfTablesMessage, SetElementList, SetElementMessage};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};
use nix::sys::socket::{setsockopt, sockopt};

use super::changes::{self, Change, Changes};
use super::ruleset::{Family, Grant, MAX_ELEMENTS, TABLE};

/// Most changes in one transaction: at most three element messages of about 100 bytes each,
/// so that a batch stays far below the 208 KiB a netlink socket sends by default.
const MAX_CHANGES: usize = 256;
/// How long to wait for the kernel's answer to a transaction, which comes at once: only a
/// kernel that stops answering reaches it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// What went wrong talking to the kernel's nftables over netlink.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error(
        "cannot open a netlink socket to nftables: {0} (portknock needs root or CAP_NET_ADMIN)"
    )]
    Open(io::Error),
    #[error("netlink I/O with nftables failed: {0}")]
    Io(io::Error),
    #[error("nftables refused to {what}: {error} (is the portknock table installed? run `portknock apply`)")]
    Refused {
        what: &'static str,
        error: io::Error,
    },
    #[error("nftables sent an answer portknock cannot read: {0}")]
    Decode(String),
}

/// A netlink socket that sends set changes to the kernel.
pub struct Kernel {
    socket: Socket,
    seq: u32,
    rx: Vec<u8>,
}

/// Asks for a receive buffer of `bytes` on a netlink socket. SO_RCVBUFFORCE passes the
/// rmem_max limit (212,992 bytes by default) for a process with CAP_NET_ADMIN; the plain
/// option, capped at rmem_max, is the fallback when it is refused. A smaller buffer only means
/// overruns come sooner, and those are noticed and handled, so neither failure is fatal.
pub fn set_receive_buffer(socket: BorrowedFd<'_>, bytes: usize) {
    if setsockopt(&socket, sockopt::RcvBufForce, &bytes).is_err()
        && setsockopt(&socket, sockopt::RcvBuf, &bytes).is_err()
    {
        tracing::warn!("could not enlarge a netlink receive buffer; floods may overrun it sooner");
    }
}

/// A netlink socket to nftables whose answers come within [`ANSWER_TIMEOUT`].
fn open_socket() -> Result<Socket, NetlinkError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NetlinkError::Open)?;
    socket.bind_auto().map_err(NetlinkError::Open)?;
    socket2::SockRef::from(&socket)
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(NetlinkError::Open)?;
    Ok(socket)
}

impl Kernel {
    /// Opens the socket. Needs CAP_NET_ADMIN in the network namespace.
    pub fn open() -> Result<Kernel, NetlinkError> {
        Ok(Kernel {
            socket: open_socket()?,
            seq: 0,
            rx: vec![0; 64 * 1024],
        })
    }

    /// The socket's netlink port, which the kernel's notifications name as the maker of the
    /// changes committed here.
    pub fn portid(&self) -> Result<u32, NetlinkError> {
        let mut address = netlink_sys::SocketAddr::new(0, 0);
        (self.socket.get_address(&mut address)).map_err(NetlinkError::Io)?;
        Ok(address.port_number())
    }

    /// Sends the queued changes as one transaction and waits for the kernel's answer.
    ///
    /// One refused change aborts the whole transaction (an add to a full set, say); the changes
    /// are then sent again one by one, in order, so that each succeeds or fails alone, and the
    /// first error is returned.
    ///
    /// Many changes go as several transactions of at most 256 changes each, in order: one
    /// nfnetlink batch is one datagram, which must fit the socket's send buffer.
    pub fn commit(&mut self, changes: &mut Changes) -> Result<(), NetlinkError> {
        let changes = changes.take();
        let mut first_error = Ok(());
        for chunk in changes.chunks(MAX_CHANGES) {
            let result = match self.transact(chunk) {
                // Only a refusal: after an I/O error the changes would just meet it again.
                Err(NetlinkError::Refused { .. }) if chunk.len() > 1 => chunk
                    .iter()
                    .map(|change| self.transact(slice::from_ref(change)))
                    .fold(Ok(()), Result::and),
                result => result,
            };
            first_error = first_error.and(result);
        }
        first_error
    }

    /// Sends `changes` as one nfnetlink batch ([`changes::encode`]). Only the last message asks
    /// for an acknowledgement; the kernel reports every refused message before that, in order.
    fn transact(&mut self, changes: &[Change]) -> Result<(), NetlinkError> {
        if changes.is_empty() {
            return Ok(());
        }
        let tx = changes::encode(changes, &mut self.seq);
        self.socket.send(&tx.bytes, 0).map_err(NetlinkError::Io)?;
        self.wait_answer(tx.first_seq, tx.last_seq, changes, &tx.owners)
    }

    /// Reads the kernel's answers up to the acknowledgement of `last_seq`, returning the first
    /// refusal among the element messages numbered from `first_seq`, which belong to the
    /// changes `owners` names.
    fn wait_answer(
        &mut self,
        first_seq: u32,
        last_seq: u32,
        changes: &[Change],
        owners: &[usize],
    ) -> Result<(), NetlinkError> {
        let mut refused = None;
        // Bounded: one answer per message at most, plus a few strays of older transactions.
        for _ in 0..owners.len() + 16 {
            let len = match self.socket.recv(&mut &mut self.rx[..], 0) {
                Ok(len) => len,
                Err(e) => return Err(refused.unwrap_or(NetlinkError::Io(e))),
            };
            let mut offset = 0;
            while offset < len {
                let msg = NetlinkMessage::<NetfilterMessage>::deserialize(&self.rx[offset..len])
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                let msg_len = msg.header.length as usize;
                let seq = msg.header.sequence_number;
                let owner = owners.get(seq.wrapping_sub(first_seq) as usize);
                if let (NetlinkPayload::Error(err), Some(&owner)) = (msg.payload, owner) {
                    if let Some(code) = err.code {
                        refused.get_or_insert(NetlinkError::Refused {
                            what: changes[owner].what(),
                            error: io::Error::from_raw_os_error(-code.get()),
                        });
                    }
                    if seq == last_seq {
                        return refused.map_or(Ok(()), Err);
                    }
                }
                if msg_len == 0 {
                    break;
                }
                offset += msg_len;
            }
        }
        Err(refused.unwrap_or_else(|| {
            NetlinkError::Decode("no acknowledgement from the kernel for a set update".into())
        }))
    }
}

/// Every active grant in the kernel, sorted, or `None` when the table is not installed.
pub fn grants() -> Result<Option<Vec<Grant>>, NetlinkError> {
    let socket = open_socket()?;
    let mut grants = Vec::new();
    for family in [Family::V4, Family::V6] {
        let request = NfTablesMessage::GetSetElement(SetElementMessage {
            attributes: vec![
                SetElementList::Table(TABLE.to_string()),
                SetElementList::Set(family.sets().granted.to_string()),
            ],
        });
        let each = |message: &[u8]| grants_in(message, &mut grants);
        match ask(&socket, request, NLM_F_DUMP, "list the grants", each) {
            Ok(()) => {}
            // The table (and so the set) is not there.
            Err(NetlinkError::Refused { error, .. })
                if error.raw_os_error() == Some(libc::ENOENT) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
    }
    grants.sort();
    Ok(Some(grants))
}

/// Sends one request and hands the payload of each nftables message of the answer to `each`,
/// up to the acknowledgement (`flags` holds `NLM_F_ACK`) or the end of the dump
/// (`NLM_F_DUMP`). The payloads are not decoded here: see [`grants_in`].
fn ask(
    socket: &Socket,
    request: NfTablesMessage,
    flags: u16,
    what: &'static str,
    mut each: impl FnMut(&[u8]),
) -> Result<(), NetlinkError> {
    let mut msg = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
        request,
    ));
    msg.header.flags = NLM_F_REQUEST | flags;
    msg.header.sequence_number = 1;
    msg.finalize();
    let mut bytes = vec![0; msg.buffer_len()];
    msg.serialize(&mut bytes);
    socket.send(&bytes, 0).map_err(NetlinkError::Io)?;
    let mut rx = vec![0; 64 * 1024];
    // Bounded: a dump part holds at least one element, and a grant set at most MAX_ELEMENTS.
    for _ in 0..MAX_ELEMENTS as usize + 16 {
        let len = socket.recv(&mut &mut rx[..], 0).map_err(NetlinkError::Io)?;
        let mut offset = 0;
        while offset < len {
            let buffer = NetlinkBuffer::new_checked(&rx[offset..len])
                .map_err(|e| NetlinkError::Decode(e.to_string()))?;
            match buffer.message_type() {
                NLMSG_DONE | NLMSG_ERROR => {
                    let msg = NetlinkMessage::<NetfilterMessage>::deserialize(&rx[offset..len])
                        .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                    match msg.payload {
                        NetlinkPayload::Error(ErrorMessage {
                            code: Some(code), ..
                        }) => {
                            return Err(NetlinkError::Refused {
                                what,
                                error: io::Error::from_raw_os_error(-code.get()),
                            })
                        }
                        _ => return Ok(()),
                    }
                }
                kind if kind >> 8 == libc::NFNL_SUBSYS_NFTABLES as u16 => each(buffer.payload()),
                _ => {}
            }
            let msg_len = buffer.length() as usize;
            if msg_len == 0 {
                break;
            }
            offset += msg_len;
        }
    }
    Err(NetlinkError::Decode(format!(
        "no end to the kernel's answer when asked to {what}"
    )))
}

/// The grants in one part of a dump of a grant set. Elements of any other shape are not
/// portknock's and skipped.
/// The grants in `message`, the payload of one message of a dump of a grant set, into `out`:
/// after the nfgenmsg header, the element list, whose elements each have a key and the time
/// they have left. Read attribute by attribute here: netlink-packet-netfilter 0.4 formats the
/// whole element list into an error context for each element it parses, which made reading
/// n grants cost O(n²) — half a second of CPU for 1,000 grants (BENCHMARKS.md, "What the runs found").
fn grants_in(message: &[u8], out: &mut Vec<Grant>) {
    let Some(lists) = message.get(NFGENMSG_LEN..) else {
        return;
    };
    for (_, elements) in attributes(lists).filter(|(kind, _)| *kind == NFTA_SET_ELEM_LIST_ELEMENTS)
    {
        for (_, element) in attributes(elements).filter(|(kind, _)| *kind == NFTA_LIST_ELEM) {
            out.extend(grant_of(element));
        }
    }
}

/// The nfgenmsg header before an nftables message's attributes: family, version, resource id.
const NFGENMSG_LEN: usize = 4;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_DATA_VALUE: u16 = 1;

/// The netlink attributes in `bytes` as (type, value), up to the first malformed one.
fn attributes(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    NlasIterator::new(bytes).map_while(Result::ok).map(|nla| {
        let (kind, end) = (nla.kind(), usize::from(nla.length()));
        // A checked attribute's length covers its header and fits the buffer.
        (kind, &nla.into_inner()[NLA_HEADER_SIZE..end])
    })
}

/// A grant from the attributes of one element: its key (see [`changes::source_port_key`]) and the
/// milliseconds it has left (a big-endian u64).
fn grant_of(element: &[u8]) -> Option<Grant> {
    let mut key = None;
    let mut remaining = Duration::ZERO;
    for (kind, value) in attributes(element) {
        match kind {
            NFTA_SET_ELEM_KEY => {
                key = attributes(value).find(|(kind, _)| *kind == NFTA_DATA_VALUE);
            }
            NFTA_SET_ELEM_EXPIRATION => {
                let ms = <[u8; 8]>::try_from(value).map(u64::from_be_bytes);
                remaining = Duration::from_millis(ms.unwrap_or(0));
            }
            _ => {}
        }
    }
    let [addr @ .., p0, p1, 0, 0] = key?.1 else {
        return None;
    };
    let source = match addr.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(addr).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(addr).ok()?),
        _ => return None,
    };
    let port = u16::from_be_bytes([*p0, *p1]);
    Some(Grant {
        source,
        port,
        remaining,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use netlink_packet_netfilter::nftables::{DataAttribute, ListAttribute, SetElementAttribute};
    use proptest::prelude::*;

    /// A message of a dump of a grant set as the kernel sends it, made with
    /// netlink-packet-netfilter's encoder, and its payload read back by [`grants_in`].
    fn read_back(elements: Vec<Vec<SetElementAttribute>>) -> Vec<Grant> {
        let message = NfTablesMessage::NewSetElement(SetElementMessage {
            attributes: vec![
                SetElementList::Table(TABLE.to_string()),
                SetElementList::Set("granted4".to_string()),
                SetElementList::Elements(
                    elements.into_iter().map(ListAttribute::Element).collect(),
                ),
            ],
        });
        let mut msg = NetlinkMessage::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
            message,
        ));
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        let buffer = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
        let mut grants = Vec::new();
        grants_in(buffer.payload(), &mut grants);
        grants
    }

    fn element(source: IpAddr, port: u16, expiration_ms: u64) -> Vec<SetElementAttribute> {
        vec![
            SetElementAttribute::Key(DataAttribute::Value(changes::source_port_key(source, port))),
            SetElementAttribute::Timeout(30_000),
            SetElementAttribute::Expiration(expiration_ms),
        ]
    }

    #[test]
    fn grants_are_read_back_from_their_keys() {
        let v4: IpAddr = "198.18.0.2".parse().unwrap();
        let v6: IpAddr = "fd00:5eed::2".parse().unwrap();
        let not_a_grant = vec![SetElementAttribute::Key(DataAttribute::Value(vec![0; 12]))];
        let grants = read_back(vec![
            element(v4, 22, 12_500),
            not_a_grant,
            element(v6, 2222, 1),
        ]);
        let grant = |source, port, ms| Grant {
            source,
            port,
            remaining: Duration::from_millis(ms),
        };
        assert_eq!(grants, [grant(v4, 22, 12_500), grant(v6, 2222, 1)]);
    }

    #[test]
    fn a_full_dump_message_is_read_whole() {
        // As many elements as one attribute holds (its length is 16 bits); the kernel's dump
        // messages are smaller still.
        let elements = (0..1_000u32)
            .map(|i| element(IpAddr::from((0xc612_0000 + i).to_be_bytes()), 22, 1000))
            .collect();
        let grants = read_back(elements);
        assert_eq!(grants.len(), 1_000);
        let last: IpAddr = "198.18.3.231".parse().unwrap();
        assert_eq!(grants[999].source, last);
    }

    proptest! {
        #[test]
        fn any_bytes_read_as_grants_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut grants = Vec::new();
            grants_in(&bytes, &mut grants);
        }
    }
}
