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

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
    SetElementMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
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

/// Whether portknock's table is installed.
pub fn table_exists() -> Result<bool, NetlinkError> {
    let request = NfTablesMessage::GetTable(TableMessage {
        attributes: vec![TableAttribute::Name(TABLE.to_string())],
    });
    let answer = ask(
        &open_socket()?,
        request,
        NLM_F_ACK,
        "read the portknock table",
    );
    match answer {
        Ok(_) => Ok(true),
        Err(NetlinkError::Refused { error, .. }) if error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(e) => Err(e),
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
        let answer = ask(&socket, request, NLM_F_DUMP, "list the grants");
        let messages = match answer {
            Ok(messages) => messages,
            // The table (and so the set) is not there.
            Err(NetlinkError::Refused { error, .. })
                if error.raw_os_error() == Some(libc::ENOENT) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        grants.extend(messages.iter().flat_map(grants_in));
    }
    grants.sort();
    Ok(Some(grants))
}

/// Sends one request and collects the nftables messages of the answer, up to the
/// acknowledgement (`flags` holds `NLM_F_ACK`) or the end of the dump (`NLM_F_DUMP`).
fn ask(
    socket: &Socket,
    request: NfTablesMessage,
    flags: u16,
    what: &'static str,
) -> Result<Vec<NfTablesMessage>, NetlinkError> {
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
    let mut answer = Vec::new();
    // Bounded: a dump part holds at least one element, and a grant set at most MAX_ELEMENTS.
    for _ in 0..MAX_ELEMENTS as usize + 16 {
        let len = socket.recv(&mut &mut rx[..], 0).map_err(NetlinkError::Io)?;
        let mut offset = 0;
        while offset < len {
            let msg = NetlinkMessage::<NetfilterMessage>::deserialize(&rx[offset..len])
                .map_err(|e| NetlinkError::Decode(e.to_string()))?;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(answer),
                NetlinkPayload::Error(err) => {
                    return match err.code {
                        Some(code) => Err(NetlinkError::Refused {
                            what,
                            error: io::Error::from_raw_os_error(-code.get()),
                        }),
                        None => Ok(answer),
                    };
                }
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::NfTables(inner),
                    ..
                }) => answer.push(inner),
                _ => {}
            }
            let msg_len = msg.header.length as usize;
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
fn grants_in(message: &NfTablesMessage) -> Vec<Grant> {
    let NfTablesMessage::NewSetElement(message) = message else {
        return Vec::new();
    };
    let elements = message.attributes.iter().flat_map(|list| match list {
        SetElementList::Elements(elements) => elements.as_slice(),
        _ => &[],
    });
    elements
        .filter_map(|element| match element {
            ListAttribute::Element(attributes) => grant_of(attributes),
            _ => None,
        })
        .collect()
}

/// A grant from the attributes of one element: its key (see [`changes::source_port_key`]) and the
/// milliseconds it has left.
fn grant_of(attributes: &[SetElementAttribute]) -> Option<Grant> {
    let mut key = None;
    let mut remaining = Duration::ZERO;
    for attribute in attributes {
        match attribute {
            SetElementAttribute::Key(DataAttribute::Value(bytes)) => key = Some(bytes),
            SetElementAttribute::Expiration(ms) => remaining = Duration::from_millis(*ms),
            _ => {}
        }
    }
    let [addr @ .., p0, p1, 0, 0] = key?.as_slice() else {
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

    #[test]
    fn grants_are_read_back_from_their_keys() {
        for (source, port) in [("198.18.0.2", 22), ("fd00:5eed::2", 2222)] {
            let source: IpAddr = source.parse().unwrap();
            let attributes = [
                SetElementAttribute::Key(DataAttribute::Value(changes::source_port_key(
                    source, port,
                ))),
                SetElementAttribute::Timeout(30_000),
                SetElementAttribute::Expiration(12_500),
            ];
            let grant = grant_of(&attributes).expect("a grant key");
            assert_eq!((grant.source, grant.port), (source, port));
            assert_eq!(grant.remaining, Duration::from_millis(12_500));
        }
        let armed = [SetElementAttribute::Key(DataAttribute::Value(vec![0; 12]))];
        assert_eq!(grant_of(&armed), None);
    }
}
