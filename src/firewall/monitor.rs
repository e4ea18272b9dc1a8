//! Watching portknock's table: the kernel's nftables notifications (the `NFNLGRP_NFTABLES`
//! multicast group, what `nft monitor` reads), reduced to what was done to `table inet
//! portknock` in each transaction, and by which process.
//!
//! Only the header, the family and the names of each message are read, by walking its
//! attributes: the full decoders of netlink-packet-netfilter 0.4 panic on some attributes of
//! rules (capture.rs says which), and the notifications carry every table of the host,
//! iptables-nft's included. Nothing here waits: the daemon polls the socket with its others.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use netlink_packet_core::{NetlinkBuffer, NlasIterator};
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};

use super::netlink::NetlinkError;
use super::ruleset::{Family, TABLE};

/// The nftables messages a transaction's notifications are made of (`NFT_MSG_*`).
const NEW_TABLE: u8 = 0;
const DEL_TABLE: u8 = 2;
const NEW_CHAIN: u8 = 3;
const DEL_CHAIN: u8 = 5;
const NEW_RULE: u8 = 6;
const DEL_RULE: u8 = 8;
const NEW_SET: u8 = 9;
const DEL_SET: u8 = 11;
const NEW_SET_ELEM: u8 = 12;
const DEL_SET_ELEM: u8 = 14;
const NEW_GEN: u8 = 15;
/// `NFT_MSG_DESTROY*` (Linux 6.3): a delete that is no error when the object is missing.
const DESTROY_TABLE: u8 = 26;
const DESTROY_CHAIN: u8 = 27;
const DESTROY_RULE: u8 = 28;
const DESTROY_SET: u8 = 29;
const DESTROY_SET_ELEM: u8 = 30;
/// `NFPROTO_INET`, the family of an `inet` table.
const INET: u8 = 1;
/// The size of `struct nfgenmsg` before the attributes.
const NFGEN_LEN: usize = 4;
/// What the receive buffer is asked to hold, 4 MiB: a `nft flush ruleset` of a large ruleset sends a
/// message per object.
const RECV_BUFFER: usize = 4_194_304;

/// What kind of object of the table a change is about, the largest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Object {
    Table,
    Chain,
    Set,
    Rule,
    Elements,
}

/// One change made to portknock's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChange {
    /// Added, or else deleted.
    pub added: bool,
    pub object: Object,
    /// The chain of a chain or a rule, the set of a set or of elements; empty for the table.
    pub name: String,
}

impl TableChange {
    /// Whether the change alters the policy: anything but the elements of the sets that
    /// change at run time (grants and the final-knock fast path), which the daemon and
    /// `portknock open` change as a matter of course.
    pub fn alters_policy(&self) -> bool {
        let run_time = [Family::V4, Family::V6].iter().any(|f| {
            let sets = f.sets();
            [
                sets.granted,
                sets.armed,
                sets.expected,
                sets.knocked,
                sets.seen,
            ]
            .contains(&self.name.as_str())
        });
        !(self.object == Object::Elements && run_time)
    }
}

/// Says what happened, as the daemon's log puts it: "chain guard deleted".
impl fmt::Display for TableChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done = if self.added { "added" } else { "deleted" };
        match self.object {
            Object::Table => write!(f, "table inet {TABLE} {done}"),
            Object::Chain => write!(f, "chain {} {done}", self.name),
            Object::Rule => write!(f, "a rule of chain {} {done}", self.name),
            Object::Set => write!(f, "set {} {done}", self.name),
            Object::Elements => write!(f, "elements of set {} {done}", self.name),
        }
    }
}

/// What one nftables transaction did to portknock's table, and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The netlink port of the socket that committed it: what tells the daemon's own changes
    /// from others', whatever pid namespace it runs in (the pids the kernel names are the
    /// initial namespace's).
    pub portid: u32,
    /// The process that committed it, as the kernel names it.
    pub pid: u32,
    /// Its name (`nft`, `portknock`, `iptables-nft`...).
    pub process: String,
    /// Every change to portknock's table, in order; never empty.
    pub changes: Vec<TableChange>,
}

/// A subscription to the kernel's nftables notifications.
pub struct Monitor {
    socket: Socket,
    buf: Vec<u8>,
    /// Changes of the transaction whose notifications are being read, until its end.
    pending: Vec<TableChange>,
}

/// Reading notifications failed.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// Notifications were lost (the receive buffer overflowed): what changed is unknown.
    #[error("nftables notifications were lost: the receive buffer overflowed")]
    Overrun,
    #[error("reading nftables notifications failed: {0}")]
    Io(io::Error),
}

impl Monitor {
    /// Subscribes to the nftables notifications of this network namespace.
    pub fn open() -> Result<Monitor, NetlinkError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NetlinkError::Open)?;
        socket.bind_auto().map_err(NetlinkError::Open)?;
        socket
            .add_membership(libc::NFNLGRP_NFTABLES as u32)
            .map_err(NetlinkError::Open)?;
        socket.set_non_blocking(true).map_err(NetlinkError::Open)?;
        super::netlink::set_receive_buffer(socket.as_fd(), RECV_BUFFER);
        Ok(Monitor {
            socket,
            buf: vec![0; 1 << 16],
            pending: Vec::new(),
        })
    }

    /// Reads every notification queued, appending the transactions that touched portknock's
    /// table to `out`; returns when none is left.
    pub fn read(&mut self, out: &mut Vec<Transaction>) -> Result<(), MonitorError> {
        loop {
            let len = match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.pending.clear();
                    return Err(MonitorError::Overrun);
                }
                Err(e) => return Err(MonitorError::Io(e)),
            };
            parse(&self.buf[..len], &mut self.pending, out);
        }
    }
}

impl AsFd for Monitor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Parses a buffer of notifications. A transaction's changes come first and its `NEWGEN`
/// message last: `pending` carries the changes from one buffer to the next, and each `NEWGEN`
/// after changes to portknock's table completes one [`Transaction`] in `out`. Public for
/// fuzzing: no input makes it panic.
pub fn parse(mut bytes: &[u8], pending: &mut Vec<TableChange>, out: &mut Vec<Transaction>) {
    while let Ok(message) = NetlinkBuffer::new_checked(bytes) {
        let len = message.length() as usize;
        let [subsystem, kind] = message.message_type().to_be_bytes();
        let payload = message.payload();
        if u32::from(subsystem) == libc::NFNL_SUBSYS_NFTABLES as u32 && payload.len() >= NFGEN_LEN {
            let (header, attributes) = payload.split_at(NFGEN_LEN);
            if kind == NEW_GEN {
                if !pending.is_empty() {
                    let (pid, process) = generation(attributes);
                    out.push(Transaction {
                        portid: message.port_number(),
                        pid,
                        process,
                        changes: std::mem::take(pending),
                    });
                }
            } else if header[0] == INET {
                if let Some(change) = change(kind, attributes) {
                    pending.push(change);
                }
            }
        }
        // Netlink messages are 4-byte aligned within a buffer.
        let aligned = (len + 3) & !3;
        bytes = bytes.get(aligned..).unwrap_or_default();
    }
}

/// The change a message of type `kind` makes, if it is about portknock's table.
fn change(kind: u8, attributes: &[u8]) -> Option<TableChange> {
    let (added, object) = match kind {
        NEW_TABLE => (true, Object::Table),
        DEL_TABLE | DESTROY_TABLE => (false, Object::Table),
        NEW_CHAIN => (true, Object::Chain),
        DEL_CHAIN | DESTROY_CHAIN => (false, Object::Chain),
        NEW_RULE => (true, Object::Rule),
        DEL_RULE | DESTROY_RULE => (false, Object::Rule),
        NEW_SET => (true, Object::Set),
        DEL_SET | DESTROY_SET => (false, Object::Set),
        NEW_SET_ELEM => (true, Object::Elements),
        DEL_SET_ELEM | DESTROY_SET_ELEM => (false, Object::Elements),
        _ => return None,
    };
    // The name's attribute: the chain's is 3 in a chain message, the chain's of a rule and the
    // set's are 2 in theirs.
    let name_attribute = match object {
        Object::Table => None,
        Object::Chain => Some(3),
        Object::Rule | Object::Set | Object::Elements => Some(2),
    };
    // Attribute 1 is the table's name in every one of these messages.
    if string(attributes, 1)? != TABLE {
        return None;
    }
    let name = name_attribute.and_then(|n| string(attributes, n));
    Some(TableChange {
        added,
        object,
        name: name.unwrap_or_default(),
    })
}

/// The pid and the process name of a `NEWGEN` message (`NFTA_GEN_PROC_PID`, `_NAME`).
fn generation(attributes: &[u8]) -> (u32, String) {
    let pid = attribute(attributes, 2)
        .and_then(|v| v.as_slice().try_into().ok())
        .map_or(0, u32::from_be_bytes);
    (pid, string(attributes, 3).unwrap_or_default())
}

/// The value of the first attribute of type `kind`.
fn attribute(attributes: &[u8], kind: u16) -> Option<Vec<u8>> {
    NlasIterator::new(attributes)
        .map_while(Result::ok)
        .find(|nla| nla.kind() == kind)
        .map(|nla| nla.value().to_vec())
}

/// A string attribute, without its terminating NUL.
fn string(attributes: &[u8], kind: u16) -> Option<String> {
    let value = attribute(attributes, kind)?;
    let text = value.split(|&b| b == 0).next().unwrap_or_default();
    Some(String::from_utf8_lossy(text).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A notification as the kernel sends it: header, nfgenmsg, string and u32 attributes.
    fn message(kind: u8, family: u8, strings: &[(u16, &str)], words: &[(u16, u32)]) -> Vec<u8> {
        let mut attributes = Vec::new();
        let mut push = |kind: u16, value: &[u8]| {
            let len = 4 + value.len();
            attributes.extend_from_slice(&(len as u16).to_ne_bytes());
            attributes.extend_from_slice(&kind.to_ne_bytes());
            attributes.extend_from_slice(value);
            attributes.resize((attributes.len() + 3) & !3, 0);
        };
        for (kind, text) in strings {
            let mut value = text.as_bytes().to_vec();
            value.push(0);
            push(*kind, &value);
        }
        for (kind, word) in words {
            push(*kind, &word.to_be_bytes());
        }
        let len = 16 + NFGEN_LEN + attributes.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        let kind = (libc::NFNL_SUBSYS_NFTABLES as u16) << 8 | u16::from(kind);
        out.extend_from_slice(&kind.to_ne_bytes());
        // Flags and sequence number, then the port of the committing socket.
        out.extend_from_slice(&[0; 6]);
        out.extend_from_slice(&PORT.to_ne_bytes());
        out.extend_from_slice(&[family, 0, 0, 0]);
        out.extend_from_slice(&attributes);
        out
    }

    /// The netlink port of the socket that committed the test's transactions.
    const PORT: u32 = 0x8000_0042;

    fn generation_end(pid: u32, name: &str) -> Vec<u8> {
        message(NEW_GEN, 0, &[(3, name)], &[(1, 7), (2, pid)])
    }

    fn change(added: bool, object: Object, name: &str) -> TableChange {
        TableChange {
            added,
            object,
            name: name.to_string(),
        }
    }

    #[test]
    fn changes_to_portknock_s_table_make_one_transaction_with_its_process() {
        let bytes = [
            message(DEL_RULE, INET, &[(1, "portknock"), (2, "guard")], &[]),
            message(
                DEL_SET_ELEM,
                INET,
                &[(1, "portknock"), (2, "protected")],
                &[],
            ),
            message(DEL_TABLE, INET, &[(1, "portknock")], &[]),
            message(NEW_CHAIN, INET, &[(1, "portknock"), (3, "extra")], &[]),
            message(NEW_SET, INET, &[(1, "portknock"), (2, "s")], &[]),
            message(30, INET, &[(1, "portknock"), (2, "granted4")], &[]),
            generation_end(4242, "nft"),
        ]
        .concat();
        let (mut pending, mut out) = (Vec::new(), Vec::new());
        parse(&bytes, &mut pending, &mut out);
        assert_eq!(
            out,
            [Transaction {
                portid: PORT,
                pid: 4242,
                process: "nft".to_string(),
                changes: vec![
                    change(false, Object::Rule, "guard"),
                    change(false, Object::Elements, "protected"),
                    change(false, Object::Table, ""),
                    change(true, Object::Chain, "extra"),
                    change(true, Object::Set, "s"),
                    change(false, Object::Elements, "granted4"),
                ],
            }]
        );
        assert!(pending.is_empty());
    }

    #[test]
    fn other_tables_families_and_transactions_are_left_out() {
        let bytes = [
            message(DEL_TABLE, INET, &[(1, "filter")], &[]),
            message(DEL_TABLE, 2, &[(1, "portknock")], &[]),
            message(NEW_RULE, INET, &[(1, "nat"), (2, "DOCKER")], &[]),
            message(NEW_TABLE, INET, &[(2, "portknock")], &[]),
            generation_end(1, "iptables-nft"),
            message(NEW_TABLE, INET, &[(1, "portknock")], &[]),
        ]
        .concat();
        let (mut pending, mut out) = (Vec::new(), Vec::new());
        parse(&bytes, &mut pending, &mut out);
        assert_eq!(out, [], "nothing of portknock's table was done by then");
        assert_eq!(
            pending,
            [change(true, Object::Table, "")],
            "waits for its generation in the next buffer"
        );
        parse(&generation_end(9, "portknock"), &mut pending, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].pid, out[0].process.as_str()), (9, "portknock"));
    }

    #[test]
    fn only_the_run_time_sets_elements_leave_the_policy_alone() {
        for set in [
            "granted4",
            "granted6",
            "armed4",
            "armed6",
            "expected4",
            "expected6",
            "knocked4",
            "knocked6",
        ] {
            assert!(
                !change(false, Object::Elements, set).alters_policy(),
                "{set}"
            );
            assert!(
                !change(true, Object::Elements, set).alters_policy(),
                "{set}"
            );
            assert!(
                change(false, Object::Set, set).alters_policy(),
                "{set} itself"
            );
        }
        for set in [
            "protected",
            "knock_tcp",
            "knock_udp",
            "trusted4",
            "trusted6",
        ] {
            assert!(
                change(false, Object::Elements, set).alters_policy(),
                "{set}"
            );
        }
        assert!(change(true, Object::Rule, "guard").alters_policy());
        assert!(change(false, Object::Table, "").alters_policy());
    }

    #[test]
    fn changes_say_what_happened() {
        let said: Vec<String> = [
            change(false, Object::Table, ""),
            change(true, Object::Chain, "extra"),
            change(false, Object::Rule, "guard"),
            change(false, Object::Set, "protected"),
            change(false, Object::Elements, "knock_tcp"),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            said,
            [
                "table inet portknock deleted",
                "chain extra added",
                "a rule of chain guard deleted",
                "set protected deleted",
                "elements of set knock_tcp deleted",
            ]
        );
    }

    #[test]
    fn truncated_and_foreign_messages_are_skipped_without_a_panic() {
        let good = message(DEL_TABLE, INET, &[(1, "portknock")], &[]);
        let (mut pending, mut out) = (Vec::new(), Vec::new());
        for cut in 0..good.len() {
            parse(&good[..cut], &mut pending, &mut out);
        }
        let mut foreign = good.clone();
        foreign[5] = 12; // NFNL_SUBSYS_ULOG
        parse(&foreign, &mut pending, &mut out);
        assert_eq!(
            pending,
            [],
            "neither a cut message nor another subsystem's counts"
        );
        let mut bad_attribute = good;
        bad_attribute[20] = 0xff; // an attribute longer than the message
        parse(&bad_attribute, &mut pending, &mut out);
        assert_eq!(pending, []);
    }
}
