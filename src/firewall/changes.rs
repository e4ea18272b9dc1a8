//! Changes of the elements of portknock's dynamic sets, queued as plain values and encoded as
//! the nfnetlink messages of one transaction. Pure: [`super::netlink::Kernel::commit`] sends
//! what this builds, so what a change does to the kernel is decided, and tested, here.

use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
    SetElementMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use super::ruleset::{Family, TABLE};
use crate::port::{KnockPort, Proto};

/// What a queued change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
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

    /// What the change does, for the error message when the kernel refuses it.
    pub fn what(&self) -> &'static str {
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

/// Set changes waiting to be committed, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pending: Vec<Change>,
}

impl Changes {
    /// No changes.
    pub fn new() -> Changes {
        Changes::default()
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

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes every queued change, leaving none.
    pub(super) fn take(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.pending)
    }

    fn queue(&mut self, op: Op, source: IpAddr, key: Vec<u8>, timeout: Option<Duration>) {
        self.pending.push(Change {
            op,
            family: Family::of(source),
            key,
            timeout,
        });
    }
}

/// One transaction as bytes, and which change each of its element messages belongs to.
#[derive(Debug)]
pub(super) struct Transaction {
    /// The whole nfnetlink batch, ready to send.
    pub bytes: Vec<u8>,
    /// Sequence number of the first element message; the next ones follow on.
    pub first_seq: u32,
    /// Sequence number of the last element message, the only one that asks for an
    /// acknowledgement.
    pub last_seq: u32,
    /// For each element message in order, the index of its change.
    pub owners: Vec<usize>,
}

/// Encodes `changes` (at least one) as one nfnetlink batch, numbering its messages on from
/// `seq`, which is left at the last number used.
///
/// Every change first removes its element, as an add and a delete: the kernel refuses the
/// delete of a missing element, and with it the whole transaction, while an add of an element
/// that is there already does nothing. So an element that has just expired, or was never made,
/// is no error, on every kernel (`NFT_MSG_DESTROYSETELEM` needs Linux 6.3). An addition then
/// adds the element anew, with its full timeout: re-adding an element that is there leaves its
/// old expiry on most kernels, and a knock must refresh its grant (docs/behaviour.md §2). In
/// between, the packet path sees the old element or the new one.
pub(super) fn encode(changes: &[Change], seq: &mut u32) -> Transaction {
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
    let last = elements.len().saturating_sub(1);
    let mut messages = Vec::with_capacity(elements.len() + 2);
    messages.push((control(ControlMessage::BatchBegin), NLM_F_REQUEST));
    for (n, (_, msg, flags)) in elements.into_iter().enumerate() {
        let ack = if n == last { NLM_F_ACK } else { 0 };
        messages.push((msg, NLM_F_REQUEST | ack | flags));
    }
    messages.push((control(ControlMessage::BatchEnd), NLM_F_REQUEST));
    let first_seq = seq.wrapping_add(2);
    let mut bytes = Vec::with_capacity(128 * messages.len());
    for (mut msg, flags) in messages {
        *seq = seq.wrapping_add(1);
        msg.header.flags = flags;
        msg.header.sequence_number = *seq;
        msg.finalize();
        let start = bytes.len();
        bytes.resize(start + msg.buffer_len(), 0);
        msg.serialize(&mut bytes[start..]);
    }
    Transaction {
        bytes,
        first_seq,
        last_seq: seq.wrapping_sub(1),
        owners,
    }
}

/// A batch begin or end message of the nftables subsystem.
fn control(inner: ControlMessage) -> NetlinkMessage<NetfilterMessage> {
    NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(
            NetfilterProtoFamily::Unspec,
            0,
            libc::NFNL_SUBSYS_NFTABLES as u16,
        ),
        inner,
    ))
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

/// Key of `granted4`/`granted6` and `expected4`/`expected6`: address . port, each field padded
/// to a 32-bit register as the kernel lays out concatenations.
pub(super) fn source_port_key(source: IpAddr, port: u16) -> Vec<u8> {
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
    use netlink_packet_core::NetlinkPayload;
    use netlink_packet_netfilter::NetfilterMessageInner;

    fn v4() -> IpAddr {
        "198.18.0.2".parse().unwrap()
    }

    fn v6() -> IpAddr {
        "fd00:5eed::2".parse().unwrap()
    }

    #[test]
    fn keys_are_register_padded() {
        assert_eq!(source_port_key(v4(), 22), vec![198, 18, 0, 2, 0, 22, 0, 0]);
        let knock = KnockPort::udp(0x1f40);
        assert_eq!(
            armed_key(v4(), knock),
            vec![198, 18, 0, 2, 17, 0, 0, 0, 0x1f, 0x40, 0, 0]
        );
        assert_eq!(armed_key(v4(), KnockPort::tcp(1))[4], 6);
        let mut v6_key = addr_bytes(v6());
        v6_key.extend([0, 22, 0, 0]);
        assert_eq!(source_port_key(v6(), 22), v6_key);
        assert_eq!(armed_key(v6(), knock).len(), 24);
    }

    /// One element message of a transaction, read back.
    #[derive(Debug, PartialEq, Eq)]
    struct Element {
        add: bool,
        flags: u16,
        seq: u32,
        table: String,
        set: String,
        key: Vec<u8>,
        timeout_ms: Option<u64>,
    }

    /// Decodes the bytes of a transaction: the batch begin and end messages, and the element
    /// messages between them.
    fn decode(bytes: &[u8]) -> Vec<Element> {
        let mut elements = Vec::new();
        let mut offset = 0;
        let mut controls = 0;
        while offset < bytes.len() {
            let msg = NetlinkMessage::<NetfilterMessage>::deserialize(&bytes[offset..])
                .expect("a netlink message");
            let header = msg.header;
            offset += header.length as usize;
            let NetlinkPayload::InnerMessage(inner) = msg.payload else {
                panic!("not an inner message");
            };
            match inner.inner {
                NetfilterMessageInner::NfTables(m) => {
                    let (add, m) = match m {
                        NfTablesMessage::NewSetElement(m) => (true, m),
                        NfTablesMessage::DeleteSetElement(m) => (false, m),
                        other => panic!("unexpected {other:?}"),
                    };
                    let mut e = Element {
                        add,
                        flags: header.flags,
                        seq: header.sequence_number,
                        table: String::new(),
                        set: String::new(),
                        key: Vec::new(),
                        timeout_ms: None,
                    };
                    for attribute in m.attributes {
                        match attribute {
                            SetElementList::Table(t) => e.table = t,
                            SetElementList::Set(s) => e.set = s,
                            SetElementList::Elements(list) => {
                                for element in list {
                                    let ListAttribute::Element(attrs) = element else {
                                        panic!("not an element: {element:?}");
                                    };
                                    for a in attrs {
                                        match a {
                                            SetElementAttribute::Key(DataAttribute::Value(k)) => {
                                                e.key = k
                                            }
                                            SetElementAttribute::Timeout(t) => {
                                                e.timeout_ms = Some(t)
                                            }
                                            other => panic!("unexpected {other:?}"),
                                        }
                                    }
                                }
                            }
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    elements.push(e);
                }
                _ => {
                    assert_eq!(header.flags, NLM_F_REQUEST, "batch begin and end");
                    controls += 1;
                }
            }
        }
        assert_eq!(controls, 2, "one batch begin, one batch end");
        elements
    }

    #[test]
    fn a_grant_is_removed_then_added_anew_with_its_full_timeout() {
        let mut changes = Changes::new();
        changes.grant(v4(), 22, Duration::from_secs(30));
        let mut seq = 10;
        let tx = encode(&changes.take(), &mut seq);
        let key = source_port_key(v4(), 22);
        let element = |add, flags, seq, timeout_ms| Element {
            add,
            flags,
            seq,
            table: TABLE.to_string(),
            set: "granted4".to_string(),
            key: key.clone(),
            timeout_ms,
        };
        let create = NLM_F_REQUEST | NLM_F_CREATE;
        assert_eq!(
            decode(&tx.bytes),
            [
                element(true, create, 12, None),
                element(false, NLM_F_REQUEST, 13, None),
                element(true, create | NLM_F_ACK, 14, Some(30_000)),
            ]
        );
        assert_eq!((tx.first_seq, tx.last_seq, seq), (12, 14, 15));
        assert_eq!(tx.owners, [0, 0, 0]);
        assert!(changes.is_empty(), "taken");
    }

    #[test]
    fn a_removal_is_an_add_and_a_delete_so_a_missing_element_is_no_error() {
        let mut changes = Changes::new();
        changes.revoke(v6(), 2222);
        let mut seq = u32::MAX;
        let tx = encode(&changes.take(), &mut seq);
        let got = decode(&tx.bytes);
        assert_eq!(got.len(), 2);
        assert!(got[0].add && !got[1].add);
        assert_eq!(
            got[1].flags,
            NLM_F_REQUEST | NLM_F_ACK,
            "the last asks for the answer"
        );
        assert!(got
            .iter()
            .all(|e| e.set == "granted6" && e.timeout_ms.is_none()));
        assert_eq!((tx.first_seq, tx.last_seq), (1, 2), "numbers wrap");
    }

    #[test]
    fn arming_clears_the_source_first_and_disarming_leaves_nothing_behind() {
        let within = Duration::from_millis(2500);
        let final_knock = KnockPort::tcp(8000);
        let mut changes = Changes::new();
        changes.arm(v4(), final_knock, 22, within);
        changes.disarm(v4(), final_knock, 22);
        let taken = changes.take();
        let sets: Vec<(&str, &str)> = taken.iter().map(|c| (c.what(), c.set())).collect();
        assert_eq!(
            sets,
            [
                ("clear a source's final knock", "knocked4"),
                ("arm a final knock", "armed4"),
                ("expect a port to open", "expected4"),
                ("disarm a final knock", "armed4"),
                ("take back an expected port", "expected4"),
                ("clear a source's final knock", "knocked4"),
            ]
        );
        let mut seq = 0;
        let tx = encode(&taken, &mut seq);
        let elements = decode(&tx.bytes);
        // Additions are three messages, removals two.
        assert_eq!(elements.len(), 2 + 3 + 3 + 2 + 2 + 2);
        assert_eq!(tx.owners, [0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 5]);
        assert_eq!(elements[4].timeout_ms, Some(2500));
        assert_eq!(elements[4].key, armed_key(v4(), final_knock));
        assert_eq!(elements[0].key, addr_bytes(v4()));
        assert_eq!(
            elements.iter().filter(|e| e.flags & NLM_F_ACK != 0).count(),
            1
        );
    }

    #[test]
    fn what_names_every_change() {
        let mut changes = Changes::new();
        changes.revoke(v4(), 1);
        let what: Vec<&str> = changes.take().iter().map(Change::what).collect();
        assert_eq!(what, ["remove a grant"]);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
