//! Talking to nftables over netlink, no process spawned: per-knock updates of the dynamic sets
//! (grants and the final-knock fast path), and reading the grants back.
//!
//! Changes are queued and sent as one nfnetlink transaction by [`SetUpdater::commit`]: the
//! daemon commits once per read of knock packets, so a flood of knocks costs one commit per
//! read, not one per knock (each commit walks every chain of the ruleset in the kernel).
//!
//! Reads are netlink dumps of the two grant sets rather than `nft list`: nft first builds a
//! cache of the whole ruleset, which takes half a second with 10,000 doors, on every `apply`,
//! reload and `status`.

use std::io;
use std::mem;
use std::net::IpAddr;
use std::slice;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
    SetElementMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};

use super::ruleset::{Family, Grant, MAX_ELEMENTS, TABLE};
use crate::config::{KnockPort, Proto};

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

/// What a queued change does.
#[derive(Debug, Clone, Copy)]
enum Op {
    Grant,
    Revoke,
    Arm,
    Disarm,
    Expect,
    Unexpect,
    Unknock,
}

/// One queued change of a set element.
#[derive(Debug)]
struct Change {
    op: Op,
    family: Family,
    key: Vec<u8>,
    timeout: Option<Duration>,
}

impl Change {
    /// Adds the element, or makes it new with its full timeout; otherwise makes sure it is not
    /// there.
    fn adds(&self) -> bool {
        matches!(self.op, Op::Grant | Op::Arm | Op::Expect)
    }

    fn set(&self) -> &'static str {
        let sets = self.family.sets();
        match self.op {
            Op::Grant | Op::Revoke => sets.granted,
            Op::Arm | Op::Disarm => sets.armed,
            Op::Expect | Op::Unexpect => sets.expected,
            Op::Unknock => sets.knocked,
        }
    }

    /// What the change does, for the error message.
    fn what(&self) -> &'static str {
        match self.op {
            Op::Grant => "add a grant",
            Op::Revoke => "remove a grant",
            Op::Arm => "arm a final knock",
            Op::Disarm => "disarm a final knock",
            Op::Expect => "expect a port to open",
            Op::Unexpect => "take back an expected port",
            Op::Unknock => "clear a source's final knock",
        }
    }
}

/// A netlink socket that changes elements of portknock's sets.
pub struct SetUpdater {
    socket: Socket,
    seq: u32,
    rx: Vec<u8>,
    pending: Vec<Change>,
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

impl SetUpdater {
    /// Opens the socket. Needs CAP_NET_ADMIN in the network namespace.
    pub fn open() -> Result<SetUpdater, NetlinkError> {
        Ok(SetUpdater {
            socket: open_socket()?,
            seq: 0,
            rx: vec![0; 64 * 1024],
            pending: Vec::new(),
        })
    }

    /// Queues a grant of (source, port) for `open_for`, refreshing the timeout of an existing
    /// grant.
    pub fn grant(&mut self, source: IpAddr, port: u16, open_for: Duration) {
        let key = source_port_key(source, port);
        self.queue(Op::Grant, source, key, Some(open_for));
    }

    /// Queues the removal of the grant of (source, port), if there is one.
    pub fn revoke(&mut self, source: IpAddr, port: u16) {
        self.queue(Op::Revoke, source, source_port_key(source, port), None);
    }

    /// Queues arming a door for `source`: until `within` passes, its `final_knock` lets the
    /// source through to `protected` at once, in the kernel. The source's earlier final knock,
    /// if any, is cleared first, so that it cannot open this door: disarm any other door of
    /// the source before this.
    pub fn arm(
        &mut self,
        source: IpAddr,
        final_knock: KnockPort,
        protected: u16,
        within: Duration,
    ) {
        self.queue(Op::Unknock, source, addr_bytes(source), None);
        let armed = armed_key(source, final_knock);
        self.queue(Op::Arm, source, armed, Some(within));
        let expected = source_port_key(source, protected);
        self.queue(Op::Expect, source, expected, Some(within));
    }

    /// Queues taking back the arming of a door for `source`, whether or not it has expired,
    /// and the final knock it let through, if any: nothing of the fast path is left behind.
    pub fn disarm(&mut self, source: IpAddr, final_knock: KnockPort, protected: u16) {
        self.queue(Op::Disarm, source, armed_key(source, final_knock), None);
        let expected = source_port_key(source, protected);
        self.queue(Op::Unexpect, source, expected, None);
        self.queue(Op::Unknock, source, addr_bytes(source), None);
    }

    fn queue(&mut self, op: Op, source: IpAddr, key: Vec<u8>, timeout: Option<Duration>) {
        self.pending.push(Change {
            op,
            family: Family::of(source),
            key,
            timeout,
        });
    }

    /// Sends the queued changes as one transaction and waits for the kernel's answer.
    ///
    /// One refused change aborts the whole transaction (an add to a full set, say); the changes
    /// are then sent again one by one, in order, so that each succeeds or fails alone, and the
    /// first error is returned.
    ///
    /// Many changes go as several transactions of at most 256 changes each, in order: one
    /// nfnetlink batch is one datagram, which must fit the socket's send buffer.
    pub fn commit(&mut self) -> Result<(), NetlinkError> {
        let changes = mem::take(&mut self.pending);
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

    /// Sends `changes` as one nfnetlink batch. Only the last message asks for an
    /// acknowledgement; the kernel reports every refused message before that, in order.
    ///
    /// Every change first removes the element, as an add and a delete: the kernel refuses the
    /// delete of a missing element, and with it the whole transaction, while an add of an
    /// element that is there already does nothing. So an element that has just expired, or
    /// that was never made, is no error, on every kernel (`NFT_MSG_DESTROYSETELEM` needs Linux
    /// 6.3). An addition then adds the element anew, with its full timeout: re-adding an
    /// element that is there leaves its old expiry on most kernels, and a knock must refresh
    /// its grant (docs/behaviour.md §2). In between, the packet path sees the old element or the new one.
    fn transact(&mut self, changes: &[Change]) -> Result<(), NetlinkError> {
        if changes.is_empty() {
            return Ok(());
        }
        let control = |inner: ControlMessage| {
            NetlinkMessage::from(NetfilterMessage::new(
                NetfilterHeader::new(
                    NetfilterProtoFamily::Unspec,
                    0,
                    libc::NFNL_SUBSYS_NFTABLES as u16,
                ),
                inner,
            ))
        };
        // Each element message with the change it belongs to.
        let mut elements = Vec::with_capacity(changes.len() * 3);
        for (i, change) in changes.iter().enumerate() {
            elements.push((i, element_message(change, true, None), NLM_F_CREATE));
            elements.push((i, element_message(change, false, None), 0));
            if change.adds() {
                let add = element_message(change, true, change.timeout);
                elements.push((i, add, NLM_F_CREATE));
            }
        }
        let owners: Vec<usize> = elements.iter().map(|(i, ..)| *i).collect();
        let last = elements.len() - 1;
        let mut messages = Vec::with_capacity(elements.len() + 2);
        messages.push((control(ControlMessage::BatchBegin), NLM_F_REQUEST));
        for (n, (_, msg, flags)) in elements.into_iter().enumerate() {
            let ack = if n == last { NLM_F_ACK } else { 0 };
            messages.push((msg, NLM_F_REQUEST | ack | flags));
        }
        messages.push((control(ControlMessage::BatchEnd), NLM_F_REQUEST));
        let first_seq = self.seq.wrapping_add(2);
        let mut bytes = Vec::with_capacity(128 * messages.len());
        for (mut msg, flags) in messages {
            self.seq = self.seq.wrapping_add(1);
            msg.header.flags = flags;
            msg.header.sequence_number = self.seq;
            msg.finalize();
            let start = bytes.len();
            bytes.resize(start + msg.buffer_len(), 0);
            msg.serialize(&mut bytes[start..]);
        }
        let last_seq = self.seq.wrapping_sub(1);
        self.socket.send(&bytes, 0)?;
        self.wait_answer(first_seq, last_seq, changes, &owners)
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
    socket.send(&bytes, 0)?;
    let mut rx = vec![0; 64 * 1024];
    let mut answer = Vec::new();
    // Bounded: a dump part holds at least one element, and a grant set at most MAX_ELEMENTS.
    for _ in 0..MAX_ELEMENTS as usize + 16 {
        let len = socket.recv(&mut &mut rx[..], 0)?;
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

/// A grant from the attributes of one element: its key (see [`source_port_key`]) and the
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

/// The nfnetlink message that adds (`add`, with `timeout`) or deletes the element of a change.
fn element_message(
    change: &Change,
    add: bool,
    timeout: Option<Duration>,
) -> NetlinkMessage<NetfilterMessage> {
    let mut elem = vec![SetElementAttribute::Key(DataAttribute::Value(
        change.key.clone(),
    ))];
    if let Some(timeout) = timeout {
        elem.push(SetElementAttribute::Timeout(millis(timeout)));
    }
    let message = SetElementMessage {
        attributes: vec![
            SetElementList::Table(TABLE.to_string()),
            SetElementList::Set(change.set().to_string()),
            SetElementList::Elements(vec![ListAttribute::Element(elem)]),
        ],
    };
    let inner = if add {
        NfTablesMessage::NewSetElement(message)
    } else {
        NfTablesMessage::DeleteSetElement(message)
    };
    NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
        inner,
    ))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Key of `granted4`/`granted6`: address . port, each field padded to a 32-bit register as the
/// kernel lays out concatenations.
fn source_port_key(source: IpAddr, port: u16) -> Vec<u8> {
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
        assert_eq!(source_port_key(v4, 22), vec![198, 18, 0, 2, 0, 22, 0, 0]);
        let knock = KnockPort::udp(0x1f40);
        assert_eq!(
            armed_key(v4, knock),
            vec![198, 18, 0, 2, 17, 0, 0, 0, 0x1f, 0x40, 0, 0]
        );
        let v6: IpAddr = "fd00:5eed::2".parse().unwrap();
        assert_eq!(source_port_key(v6, 22).len(), 20);
        assert_eq!(armed_key(v6, knock).len(), 24);
    }

    #[test]
    fn grants_are_read_back_from_their_keys() {
        for (source, port) in [("198.18.0.2", 22), ("fd00:5eed::2", 2222)] {
            let source: IpAddr = source.parse().unwrap();
            let attributes = [
                SetElementAttribute::Key(DataAttribute::Value(source_port_key(source, port))),
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
