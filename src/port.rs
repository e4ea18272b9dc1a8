//! Ports and knock ports: the one parser of `7000`, `7000/tcp` and `8000/udp`, used by the door
//! lists and by the command line alike, and how a knock port is shown.

use std::fmt;
use std::str::FromStr;

/// Transport protocol of a knock port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// A knock is a TCP SYN.
    Tcp,
    /// A knock is a UDP datagram.
    Udp,
}

impl Proto {
    /// The protocol's name as nft and the lists write it: `tcp` or `udp`.
    pub const fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One port of a simple-mode sequence, or the UDP port of an advanced door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KnockPort {
    /// How the knock arrives.
    pub proto: Proto,
    /// The port number, 1 to 65535.
    pub port: u16,
}

impl KnockPort {
    /// A TCP knock port: a connection attempt to `port` is the knock.
    pub const fn tcp(port: u16) -> KnockPort {
        KnockPort {
            proto: Proto::Tcp,
            port,
        }
    }

    /// A UDP knock port: a datagram to `port` is the knock.
    pub const fn udp(port: u16) -> KnockPort {
        KnockPort {
            proto: Proto::Udp,
            port,
        }
    }
}

/// Shown as the lists write it, `7000/tcp` or `8000/udp`.
impl fmt::Display for KnockPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.proto)
    }
}

/// Parses one knock port as the simple list and `portknock knock` write it: `7000` or
/// `7000/tcp` for TCP, `8000/udp` for UDP, the protocol in any case. A field that is right but
/// for its separators (knockd's `8000:udp`, ports joined by `;`) is refused with the right form.
impl FromStr for KnockPort {
    type Err = PortError;

    fn from_str(spec: &str) -> Result<Self, PortError> {
        knock_port(spec).map_err(|error| misseparated(spec).unwrap_or(error))
    }
}

fn knock_port(spec: &str) -> Result<KnockPort, PortError> {
    let (number, proto) = match spec.split_once('/') {
        None => (spec, Proto::Tcp),
        Some((number, p)) if p.eq_ignore_ascii_case("tcp") => (number, Proto::Tcp),
        Some((number, p)) if p.eq_ignore_ascii_case("udp") => (number, Proto::Udp),
        Some(_) => return Err(PortError::UnknownProto),
    };
    Ok(KnockPort {
        proto,
        port: parse_port(number)?,
    })
}

/// Characters that people (and other knock tools) put between knock ports instead of a comma.
const NOT_SEPARATORS: [char; 3] = [';', ':', '.'];

/// The error for a refused `spec` that is knockd's `PORT:PROTOCOL`, or knock ports joined by
/// one of [`NOT_SEPARATORS`]; `None` for anything else.
fn misseparated(spec: &str) -> Option<PortError> {
    let knockd = spec
        .split_once(':')
        .and_then(|(number, proto)| knock_port(&format!("{number}/{proto}")).ok());
    if let Some(knock) = knockd {
        return Some(PortError::Knockd(knock.to_string()));
    }
    let ports: Vec<&str> = spec.split(NOT_SEPARATORS).collect();
    if ports.len() < 2 || !ports.iter().all(|port| knock_port(port).is_ok()) {
        return None;
    }
    Some(PortError::Separator {
        separator: spec.chars().find(|c| NOT_SEPARATORS.contains(c))?,
        fixed: ports.join(","),
    })
}

/// The knock ports of a sequence as the simple list writes it, `7000,8000/udp,9000`, each
/// parsed as [`KnockPort`] parses it; white space around a comma is allowed.
pub fn sequence(text: &str) -> impl Iterator<Item = Result<KnockPort, PortError>> + '_ {
    text.split(',').map(|field| field.trim().parse())
}

/// Parses a TCP or UDP port number: digits only, 1 to 65535.
pub fn parse_port(number: &str) -> Result<u16, PortError> {
    if number.is_empty() {
        return Err(PortError::Empty);
    }
    if !is_digits(number) {
        return Err(PortError::NotANumber);
    }
    match number.parse() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(PortError::OutOfRange(number.to_string())),
    }
}

/// Whether `field` is one or more ASCII digits.
pub(crate) fn is_digits(field: &str) -> bool {
    !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit())
}

/// Why a port or a knock port was refused.
///
/// Only digits, and knock ports in the form they should have been written, are kept for the
/// message: a misplaced field of a door list may be a secret, so nothing else of the input may
/// reach a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortError {
    /// Nothing where the number should be.
    Empty,
    /// The number part is not all digits.
    NotANumber,
    /// All digits, but 0 or above 65535; the digits as written.
    OutOfRange(String),
    /// The part after `/` is neither `tcp` nor `udp`.
    UnknownProto,
    /// Knock ports joined by `separator` rather than a comma; `fixed` is them joined by commas.
    Separator { separator: char, fixed: String },
    /// knockd's `8000:udp`; the knock port as portknock writes it, `8000/udp`.
    Knockd(String),
}

impl PortError {
    /// The message, with `subject` (such as "the knock port at position 2") naming the field.
    pub fn describe(&self, subject: &str) -> String {
        match self {
            PortError::Empty => format!("{subject} is empty"),
            PortError::NotANumber => {
                format!("{subject} is not a number; ports are written as digits, 1 to 65535")
            }
            PortError::OutOfRange(digits) => {
                format!("{subject} ({digits}) is out of range; ports are 1 to 65535")
            }
            PortError::UnknownProto => format!(
                "{subject} has an unknown protocol; write PORT or PORT/tcp for TCP, PORT/udp for \
                 UDP"
            ),
            PortError::Separator { separator, fixed } => format!(
                "{subject} holds '{separator}', which is not a separator; knock ports are \
                 separated by commas: write {fixed}"
            ),
            PortError::Knockd(fixed) => {
                format!("{subject} is knockd's PORT:PROTOCOL; write {fixed}")
            }
        }
    }
}

/// The message about a port given alone, as on the command line (which shows the value itself).
impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe("the port"))
    }
}

impl std::error::Error for PortError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knock_ports_parse() {
        for (spec, knock) in [
            ("22", KnockPort::tcp(22)),
            ("7000/tcp", KnockPort::tcp(7000)),
            ("7000/TCP", KnockPort::tcp(7000)),
            ("8000/udp", KnockPort::udp(8000)),
            ("8000/UdP", KnockPort::udp(8000)),
            ("1", KnockPort::tcp(1)),
            ("65535/udp", KnockPort::udp(65535)),
        ] {
            assert_eq!(spec.parse(), Ok(knock), "{spec}");
        }
    }

    #[test]
    fn bad_knock_ports_say_why() {
        let out_of_range = |s: &str| Err(PortError::OutOfRange(s.to_string()));
        for (spec, error) in [
            ("70000", out_of_range("70000")),
            ("0", out_of_range("0")),
            ("0/udp", out_of_range("0")),
            ("99999999999999999999", out_of_range("99999999999999999999")),
            ("22/sctp", Err(PortError::UnknownProto)),
            ("22/", Err(PortError::UnknownProto)),
            ("22/udp/udp", Err(PortError::UnknownProto)),
            ("ssh", Err(PortError::NotANumber)),
            ("+22", Err(PortError::NotANumber)),
            ("-1", Err(PortError::NotANumber)),
            (" 22", Err(PortError::NotANumber)),
            ("２２", Err(PortError::NotANumber)),
            ("", Err(PortError::Empty)),
            ("/udp", Err(PortError::Empty)),
        ] {
            assert_eq!(spec.parse::<KnockPort>(), error, "{spec}");
        }
        assert_eq!(parse_port("22/udp"), Err(PortError::NotANumber));
        assert_eq!(parse_port("65535"), Ok(65535));
    }

    #[test]
    fn wrong_separators_and_knockd_protocols_show_the_right_form() {
        let separator = |separator, fixed: &str| {
            Err(PortError::Separator {
                separator,
                fixed: fixed.to_string(),
            })
        };
        for (spec, error) in [
            ("41873;17219", separator(';', "41873,17219")),
            ("7000:9000:8000/udp", separator(':', "7000,9000,8000/udp")),
            ("7000|9000", Err(PortError::NotANumber)),
            ("7000.9000;8000", separator('.', "7000,9000,8000")),
            ("33391:udp", Err(PortError::Knockd("33391/udp".to_string()))),
            ("33391:TCP", Err(PortError::Knockd("33391/tcp".to_string()))),
            // Not two ports: no form to show.
            ("7000;ssh", Err(PortError::NotANumber)),
            ("7000;", Err(PortError::NotANumber)),
            ("70000:udp", Err(PortError::NotANumber)),
        ] {
            assert_eq!(spec.parse::<KnockPort>(), error, "{spec}");
        }
        assert_eq!(
            PortError::Separator {
                separator: ';',
                fixed: "41873,17219".into()
            }
            .to_string(),
            "the port holds ';', which is not a separator; knock ports are separated by \
             commas: write 41873,17219"
        );
        assert_eq!(
            PortError::Knockd("33391/udp".into()).to_string(),
            "the port is knockd's PORT:PROTOCOL; write 33391/udp"
        );
    }

    #[test]
    fn a_sequence_is_knock_ports_separated_by_commas() {
        assert_eq!(
            sequence(" 7000, 8000/udp ,9000").collect::<Vec<_>>(),
            [
                Ok(KnockPort::tcp(7000)),
                Ok(KnockPort::udp(8000)),
                Ok(KnockPort::tcp(9000))
            ]
        );
        assert_eq!(
            sequence("7000,,x").collect::<Vec<_>>(),
            [
                Ok(KnockPort::tcp(7000)),
                Err(PortError::Empty),
                Err(PortError::NotANumber)
            ]
        );
    }

    #[test]
    fn messages_name_the_field_and_echo_only_digits() {
        let cases = [
            (PortError::Empty, "the port is empty"),
            (
                PortError::NotANumber,
                "the port is not a number; ports are written as digits, 1 to 65535",
            ),
            (
                PortError::OutOfRange("70000".into()),
                "the port (70000) is out of range; ports are 1 to 65535",
            ),
            (
                PortError::UnknownProto,
                "the port has an unknown protocol; write PORT or PORT/tcp for TCP, PORT/udp for \
                 UDP",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
        assert_eq!(
            PortError::Empty.describe("the knock port at position 2"),
            "the knock port at position 2 is empty"
        );
    }

    #[test]
    fn shown_as_written_and_parsed_back() {
        for knock in [
            KnockPort::tcp(1),
            KnockPort::tcp(7000),
            KnockPort::udp(8000),
            KnockPort::udp(65535),
        ] {
            assert_eq!(knock.to_string().parse(), Ok(knock));
        }
        assert_eq!(KnockPort::tcp(7000).to_string(), "7000/tcp");
        assert_eq!(KnockPort::udp(8000).to_string(), "8000/udp");
    }
}
