//! What the daemon counts, in the Prometheus text exposition format (docs/behaviour.md §4,
//! metrics). The counters are plain integers that the daemon's core increments in place: the
//! daemon is one thread, and a knock must cost an array increment, not an allocation or a
//! lock. [`render`] writes them with the gauges the daemon reads when it writes the file;
//! [`parse`] reads such a file back, for `portknock status`.
//!
//! Names follow Prometheus' conventions: `portknock_` first, `_total` for counters, base units
//! (seconds), one label per dimension, every label value written out even at 0, so that a
//! series exists from the start and `rate()` sees its first increase.

use std::collections::HashMap;
use std::fmt::{Display, Write};
use std::net::IpAddr;
use std::time::Duration;

use crate::port::Proto;

/// How often the daemon rewrites the file: well within a Prometheus scrape interval, and rare
/// enough that the daemon, which sleeps when nothing happens, wakes only for this. A file much
/// older than this means the daemon is not running.
pub const EVERY: Duration = Duration::from_secs(5);

/// A label whose values are known in advance: an enum, every value in [`Self::ALL`] in the
/// order of the counters' array, and its text in the exposition.
macro_rules! label_values {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in the order of the counters' array.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The value as the exposition writes it.
            pub const fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }
    };
}

label_values! {
    /// What a knock did to a simple door's progress (docs/behaviour.md §2): one count per door
    /// the knock touched, so one knock that two doors share counts twice.
    Simple {
        /// The door's next port: the sequence moved on.
        Progress = "progress",
        /// The port just knocked, again: ignored.
        Retransmit = "retransmit",
        /// All but the final knock: the door is armed in the kernel.
        Armed = "armed",
        /// The sequence is complete: a grant.
        Opened = "opened",
        /// A knock port of the door out of order: progress reset.
        WrongKnock = "wrong_knock",
        /// Progress dropped because the source scanned other ports.
        Scan = "scan",
        /// Progress older than the knock timeout, gone.
        Expired = "expired",
    }
}

label_values! {
    /// What a datagram to an advanced door's knock port was (docs/behaviour.md §3).
    Otp {
        /// A valid, new password of the open secret: a grant.
        Open = "open",
        /// A valid, new password of the close secret: the grant taken back.
        Close = "close",
        /// Not a 64-hex-digit password.
        Malformed = "malformed",
        /// Neither secret made it for this source within the skew window.
        NoSecretMatches = "no_secret_matches",
        /// A password made for this source with a clock minutes off. The search for a skew
        /// runs only for the lines the log budget lets through (20 a second): past it, such
        /// passwords count as matching no secret.
        ClockSkew = "clock_skew",
        /// Used before.
        Replay = "replay",
        /// Valid, but the used-password record cannot vouch for it (older than what it kept).
        RefusedByRecord = "refused_by_record",
        /// Valid, but it could not be recorded as used, so it granted nothing.
        NotRecorded = "not_recorded",
    }
}

label_values! {
    /// Who made a grant or took one back.
    By {
        /// A knock: a completed sequence, or a password.
        Knock = "knock",
        /// `portknock open` or `close`, through the daemon.
        Hand = "hand",
    }
}

label_values! {
    /// How a reload (SIGHUP, `portknock apply`) ended.
    Reload {
        Applied = "applied",
        /// The previous configuration stays in force.
        Refused = "refused",
    }
}

label_values! {
    /// How putting the policy back after a foreign change ended.
    Heal {
        Restored = "restored",
        /// Tried again.
        Failed = "failed",
    }
}

label_values! {
    /// Which budget held a log line back.
    Lines {
        /// Lines about knocks that open nothing, 20 a second.
        Knocks = "knocks",
        /// Heal warnings, 10 a minute.
        Heals = "heals",
    }
}

/// The address families, in the order of [`Counters::knock_packets`]' inner array.
const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];
/// The protocols, in the order of [`Counters::knock_packets`].
const PROTOCOLS: [Proto; 2] = [Proto::Tcp, Proto::Udp];

/// Everything the daemon counts since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets the kernel passed to the daemon, by protocol (TCP, UDP) and family (IPv4, IPv6).
    pub knock_packets: [[u64; 2]; 2],
    pub simple: [u64; Simple::ALL.len()],
    pub otp: [u64; Otp::ALL.len()],
    pub grants: [u64; By::ALL.len()],
    pub closes: [u64; By::ALL.len()],
    pub reloads: [u64; Reload::ALL.len()],
    pub heals: [u64; Heal::ALL.len()],
    pub rollbacks: u64,
    pub nflog_overruns: u64,
    pub held_back: [u64; Lines::ALL.len()],
}

impl Counters {
    /// A knock packet from `source` over `proto`.
    pub fn knock_packet(&mut self, proto: Proto, source: IpAddr) {
        let proto = match proto {
            Proto::Tcp => 0,
            Proto::Udp => 1,
        };
        self.knock_packets[proto][usize::from(source.is_ipv6())] += 1;
    }

    pub fn simple(&mut self, outcome: Simple) {
        self.simple[outcome as usize] += 1;
    }

    pub fn otp(&mut self, outcome: Otp) {
        self.otp[outcome as usize] += 1;
    }

    pub fn grant(&mut self, by: By) {
        self.grants[by as usize] += 1;
    }

    pub fn close(&mut self, by: By) {
        self.closes[by as usize] += 1;
    }

    pub fn reload(&mut self, result: Reload) {
        self.reloads[result as usize] += 1;
    }

    pub fn heal(&mut self, result: Heal) {
        self.heals[result as usize] += 1;
    }

    pub fn held_back(&mut self, budget: Lines) {
        self.held_back[budget as usize] += 1;
    }
}

/// What the daemon reads when it writes the file, beside its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gauges<'a> {
    /// The daemon's version, for `portknock_build_info`.
    pub version: &'a str,
    /// When the daemon started, in seconds since the Unix epoch.
    pub start_time: u64,
    /// Sources whose knock progress the engine keeps.
    pub tracked_sources: usize,
    pub table: &'a Table,
}

/// What the kernel holds, read when the file is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Table {
    /// The table is in force, with the live grants of each port.
    Installed(Vec<DoorGrants>),
    /// The table is not there: nothing is protected.
    Missing,
    /// The kernel could not be read: neither is written, rather than a guess.
    Unknown,
}

/// The live grants of one protected port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoorGrants {
    pub port: u16,
    /// `simple` or `advanced` for a door's port; `manual` for a port of no door.
    pub mode: &'static str,
    pub grants: usize,
}

/// The counters and gauges in the text exposition format, as the node exporter's textfile
/// collector reads it.
pub fn render(counters: &Counters, gauges: &Gauges<'_>) -> String {
    let c = counters;
    let mut out = Exposition(String::with_capacity(4096));
    out.family(
        "portknock_knock_packets_total",
        "counter",
        "Packets the kernel passed to the daemon: knocks, and other connection attempts of sources that knocked lately.",
    );
    for (proto, counts) in PROTOCOLS.iter().zip(&c.knock_packets) {
        for (family, count) in FAMILIES.iter().zip(counts) {
            let labels = [("protocol", proto.name()), ("family", family)];
            out.sample("portknock_knock_packets_total", &labels, count);
        }
    }
    out.labelled(
        "portknock_simple_outcomes_total",
        "What knocks did to the progress of simple doors, one count per door a knock touched.",
        "outcome",
        Simple::ALL
            .iter()
            .map(|o| (o.label(), c.simple[*o as usize])),
    );
    out.labelled(
        "portknock_otp_outcomes_total",
        "What datagrams to the knock ports of advanced doors were.",
        "outcome",
        Otp::ALL.iter().map(|o| (o.label(), c.otp[*o as usize])),
    );
    out.labelled(
        "portknock_grants_total",
        "Grants made, by knocks and by hand (portknock open).",
        "by",
        By::ALL.iter().map(|b| (b.label(), c.grants[*b as usize])),
    );
    out.labelled(
        "portknock_closes_total",
        "Grants taken back, by close passwords and by hand (portknock close).",
        "by",
        By::ALL.iter().map(|b| (b.label(), c.closes[*b as usize])),
    );
    out.labelled(
        "portknock_reloads_total",
        "Reloads of the configuration (SIGHUP, portknock apply), applied or refused.",
        "result",
        Reload::ALL
            .iter()
            .map(|r| (r.label(), c.reloads[*r as usize])),
    );
    out.labelled(
        "portknock_heals_total",
        "Times the policy was put back after a change portknock did not make.",
        "result",
        Heal::ALL.iter().map(|h| (h.label(), c.heals[*h as usize])),
    );
    out.single(
        "portknock_rollbacks_total",
        "counter",
        "Configurations on trial rolled back for want of a confirmation.",
        c.rollbacks,
    );
    out.single(
        "portknock_nflog_overruns_total",
        "counter",
        "Times the kernel dropped knocks because the daemon's NFLOG buffer was full.",
        c.nflog_overruns,
    );
    out.labelled(
        "portknock_log_lines_held_back_total",
        "Log lines the daemon's budgets held back.",
        "about",
        Lines::ALL
            .iter()
            .map(|l| (l.label(), c.held_back[*l as usize])),
    );
    out.single(
        "portknock_tracked_sources",
        "gauge",
        "Sources whose knock progress the daemon keeps.",
        gauges.tracked_sources,
    );
    match gauges.table {
        Table::Unknown => {}
        Table::Missing => out.single(
            "portknock_table_installed",
            "gauge",
            "Whether table inet portknock is in the kernel (0: nothing is protected).",
            0,
        ),
        Table::Installed(doors) => {
            out.single(
                "portknock_table_installed",
                "gauge",
                "Whether table inet portknock is in the kernel (0: nothing is protected).",
                1,
            );
            out.family(
                "portknock_active_grants",
                "gauge",
                "Grants the kernel holds, by protected port and the mode of its door.",
            );
            for door in doors {
                let port = door.port.to_string();
                let labels = [("port", port.as_str()), ("mode", door.mode)];
                out.sample("portknock_active_grants", &labels, door.grants);
            }
        }
    }
    out.single(
        "portknock_start_time_seconds",
        "gauge",
        "When the daemon started, in seconds since the Unix epoch.",
        gauges.start_time,
    );
    out.family(
        "portknock_build_info",
        "gauge",
        "The daemon's version, as a label; the value is always 1.",
    );
    out.sample("portknock_build_info", &[("version", gauges.version)], 1);
    out.0
}

/// The text being written.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        write_series(&mut self.0, name, labels.iter().copied());
        let _ = writeln!(self.0, " {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A counter with one label, a sample for each of its values.
    fn labelled<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: impl Iterator<Item = (&'a str, u64)>,
    ) {
        self.family(name, "counter", help);
        for (value, count) in values {
            self.sample(name, &[(label, value)], count);
        }
    }
}

/// `name{label="value",...}`, or `name` alone without labels: how a series is named in the
/// file and in `status`.
fn write_series<'a>(
    out: &mut String,
    name: &str,
    mut labels: impl Iterator<Item = (&'a str, &'a str)>,
) {
    out.push_str(name);
    if let Some(first) = labels.next() {
        out.push('{');
        for (i, (label, value)) in std::iter::once(first).chain(labels).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
}

/// A sample's labels, in the order the file gives them.
pub type Labels = Vec<(String, String)>;

/// One sample read back from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
    /// Whether a `# TYPE` line said the family is a counter, so a rate makes sense.
    pub counter: bool,
}

impl Sample {
    /// The series as the file names it: `name{label="value",...}`.
    pub fn series(&self) -> String {
        let mut out = String::new();
        let labels = self.labels.iter().map(|(l, v)| (l.as_str(), v.as_str()));
        write_series(&mut out, &self.name, labels);
        out
    }
}

/// Why a file is not in the text exposition format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct ParseError {
    pub line: usize,
    pub what: &'static str,
}

/// The samples of a file in the text exposition format: comments and `# HELP` lines are
/// skipped, `# TYPE` lines tell counters apart, and a timestamp after a value is ignored.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut counters = Vec::new();
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let error = |what| ParseError { line: i + 1, what };
        let line = line.trim();
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if let (Some("TYPE"), Some(name), Some("counter")) =
                (words.next(), words.next(), words.next())
            {
                counters.push(name.to_string());
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or(error("a sample without a value"))?;
        let (name, rest) = line.split_at(end);
        if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':')
            || !(name.chars()).all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(error("a metric name is letters, digits, _ and :"));
        }
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(rest) => parse_labels(rest).map_err(error)?,
            None => (Vec::new(), rest),
        };
        let value = rest
            .split_whitespace()
            .next()
            .ok_or(error("a sample without a value"))?;
        let value = value
            .parse::<f64>()
            .map_err(|_| error("a value that is no number"))?;
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
            counter: false,
        });
    }
    for sample in &mut samples {
        sample.counter = counters.contains(&sample.name);
    }
    Ok(samples)
}

/// The labels after `{`, up to and without the `}`, and the text after it.
fn parse_labels(mut rest: &str) -> Result<(Labels, &str), &'static str> {
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (label, after) = rest.split_once('=').ok_or("a label without =\"value\"")?;
        let mut chars = after
            .strip_prefix('"')
            .ok_or("a label value not in double quotes")?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars
                .next()
                .ok_or("a label value without its closing quote")?
            {
                (i, '"') => break i,
                (_, '\\') => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return Err("an unknown escape in a label value"),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((label.trim().to_string(), value));
        rest = after[1 + end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// For each sample of `current`, its increase per second since `previous`, taken `seconds`
/// earlier: for counters only, and for series `previous` has. A counter that went down was
/// reset (the daemon restarted), so its whole value is the increase, as Prometheus takes it.
pub fn rates(previous: &[Sample], current: &[Sample], seconds: f64) -> Vec<Option<f64>> {
    let before: HashMap<(&str, &Labels), f64> = (previous.iter())
        .map(|s| ((s.name.as_str(), &s.labels), s.value))
        .collect();
    (current.iter())
        .map(|s| {
            let then = before.get(&(s.name.as_str(), &s.labels))?;
            let increase = if s.value >= *then {
                s.value - then
            } else {
                s.value
            };
            (s.counter && seconds > 0.0).then(|| increase / seconds)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_fresh_daemon_writes_every_series_at_zero() {
        let table = Table::Installed(vec![
            DoorGrants {
                port: 22,
                mode: "simple",
                grants: 0,
            },
            DoorGrants {
                port: 2222,
                mode: "advanced",
                grants: 3,
            },
        ]);
        let gauges = Gauges {
            version: "0.1.0",
            start_time: 1_764_868_800,
            tracked_sources: 5,
            table: &table,
        };
        let mut counters = Counters::default();
        counters.knock_packet(Proto::Udp, "fd00:5eed::2".parse().unwrap());
        counters.simple(Simple::WrongKnock);
        counters.otp(Otp::Replay);
        counters.grant(By::Hand);
        counters.close(By::Knock);
        counters.reload(Reload::Refused);
        counters.heal(Heal::Failed);
        counters.held_back(Lines::Heals);
        counters.rollbacks = 2;
        counters.nflog_overruns = 7;
        assert_eq!(
            render(&counters, &gauges),
            r#"# HELP portknock_knock_packets_total Packets the kernel passed to the daemon: knocks, and other connection attempts of sources that knocked lately.
# TYPE portknock_knock_packets_total counter
portknock_knock_packets_total{protocol="tcp",family="ipv4"} 0
portknock_knock_packets_total{protocol="tcp",family="ipv6"} 0
portknock_knock_packets_total{protocol="udp",family="ipv4"} 0
portknock_knock_packets_total{protocol="udp",family="ipv6"} 1
# HELP portknock_simple_outcomes_total What knocks did to the progress of simple doors, one count per door a knock touched.
# TYPE portknock_simple_outcomes_total counter
portknock_simple_outcomes_total{outcome="progress"} 0
portknock_simple_outcomes_total{outcome="retransmit"} 0
portknock_simple_outcomes_total{outcome="armed"} 0
portknock_simple_outcomes_total{outcome="opened"} 0
portknock_simple_outcomes_total{outcome="wrong_knock"} 1
portknock_simple_outcomes_total{outcome="scan"} 0
portknock_simple_outcomes_total{outcome="expired"} 0
# HELP portknock_otp_outcomes_total What datagrams to the knock ports of advanced doors were.
# TYPE portknock_otp_outcomes_total counter
portknock_otp_outcomes_total{outcome="open"} 0
portknock_otp_outcomes_total{outcome="close"} 0
portknock_otp_outcomes_total{outcome="malformed"} 0
portknock_otp_outcomes_total{outcome="no_secret_matches"} 0
portknock_otp_outcomes_total{outcome="clock_skew"} 0
portknock_otp_outcomes_total{outcome="replay"} 1
portknock_otp_outcomes_total{outcome="refused_by_record"} 0
portknock_otp_outcomes_total{outcome="not_recorded"} 0
# HELP portknock_grants_total Grants made, by knocks and by hand (portknock open).
# TYPE portknock_grants_total counter
portknock_grants_total{by="knock"} 0
portknock_grants_total{by="hand"} 1
# HELP portknock_closes_total Grants taken back, by close passwords and by hand (portknock close).
# TYPE portknock_closes_total counter
portknock_closes_total{by="knock"} 1
portknock_closes_total{by="hand"} 0
# HELP portknock_reloads_total Reloads of the configuration (SIGHUP, portknock apply), applied or refused.
# TYPE portknock_reloads_total counter
portknock_reloads_total{result="applied"} 0
portknock_reloads_total{result="refused"} 1
# HELP portknock_heals_total Times the policy was put back after a change portknock did not make.
# TYPE portknock_heals_total counter
portknock_heals_total{result="restored"} 0
portknock_heals_total{result="failed"} 1
# HELP portknock_rollbacks_total Configurations on trial rolled back for want of a confirmation.
# TYPE portknock_rollbacks_total counter
portknock_rollbacks_total 2
# HELP portknock_nflog_overruns_total Times the kernel dropped knocks because the daemon's NFLOG buffer was full.
# TYPE portknock_nflog_overruns_total counter
portknock_nflog_overruns_total 7
# HELP portknock_log_lines_held_back_total Log lines the daemon's budgets held back.
# TYPE portknock_log_lines_held_back_total counter
portknock_log_lines_held_back_total{about="knocks"} 0
portknock_log_lines_held_back_total{about="heals"} 1
# HELP portknock_tracked_sources Sources whose knock progress the daemon keeps.
# TYPE portknock_tracked_sources gauge
portknock_tracked_sources 5
# HELP portknock_table_installed Whether table inet portknock is in the kernel (0: nothing is protected).
# TYPE portknock_table_installed gauge
portknock_table_installed 1
# HELP portknock_active_grants Grants the kernel holds, by protected port and the mode of its door.
# TYPE portknock_active_grants gauge
portknock_active_grants{port="22",mode="simple"} 0
portknock_active_grants{port="2222",mode="advanced"} 3
# HELP portknock_start_time_seconds When the daemon started, in seconds since the Unix epoch.
# TYPE portknock_start_time_seconds gauge
portknock_start_time_seconds 1764868800
# HELP portknock_build_info The daemon's version, as a label; the value is always 1.
# TYPE portknock_build_info gauge
portknock_build_info{version="0.1.0"} 1
"#
        );
    }

    #[test]
    fn without_the_table_its_grants_are_not_written_and_unknown_is_not_zero() {
        let gauges = |table| {
            let counters = Counters::default();
            render(
                &counters,
                &Gauges {
                    version: "1",
                    start_time: 0,
                    tracked_sources: 0,
                    table,
                },
            )
        };
        let missing = gauges(&Table::Missing);
        assert!(missing.contains("\nportknock_table_installed 0\n"));
        assert!(!missing.contains("portknock_active_grants"));
        let unknown = gauges(&Table::Unknown);
        assert!(!unknown.contains("portknock_table_installed"));
        assert!(!unknown.contains("portknock_active_grants"));
    }

    #[test]
    fn each_knock_counts_under_its_protocol_and_family() {
        let mut c = Counters::default();
        let v4: IpAddr = "198.18.0.2".parse().unwrap();
        let v6: IpAddr = "fd00:5eed::2".parse().unwrap();
        c.knock_packet(Proto::Tcp, v4);
        c.knock_packet(Proto::Tcp, v4);
        c.knock_packet(Proto::Tcp, v6);
        c.knock_packet(Proto::Udp, v4);
        assert_eq!(c.knock_packets, [[2, 1], [1, 0]]);
    }

    #[test]
    fn a_file_parses_with_its_types_labels_and_escapes() {
        let text =
            "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"b\\\\s\\n\"} 3\n\
                    \n# a comment\nb 2.5 1700000000000\nc{ } -1\nd{x=\"\",} +Inf\n";
        let samples = parse(text).unwrap();
        assert_eq!(
            samples[0],
            Sample {
                name: "a_total".into(),
                labels: vec![("x".into(), "1".into()), ("y".into(), "q\"b\\s\n".into())],
                value: 3.0,
                counter: true,
            }
        );
        assert_eq!(samples[0].series(), "a_total{x=\"1\",y=\"q\\\"b\\\\s\\n\"}");
        assert_eq!((samples[1].value, samples[1].counter), (2.5, false));
        assert_eq!((samples[2].series(), samples[2].value), ("c".into(), -1.0));
        assert_eq!(samples[3].labels, [("x".to_string(), String::new())]);
        assert_eq!(samples[3].value, f64::INFINITY);
    }

    #[test]
    fn what_is_not_the_format_is_refused_with_its_line() {
        let error = |text: &str| parse(text).unwrap_err();
        assert_eq!(
            error("a 1\nb\n"),
            ParseError {
                line: 2,
                what: "a sample without a value"
            }
        );
        assert_eq!(error("a x").what, "a value that is no number");
        assert_eq!(error("a{x=1} 1").what, "a label value not in double quotes");
        assert_eq!(
            error("a{x=\"1} 1").what,
            "a label value without its closing quote"
        );
        assert_eq!(error("a{x} 1").what, "a label without =\"value\"");
        assert_eq!(
            error("a{x=\"\\t\"} 1").what,
            "an unknown escape in a label value"
        );
        assert_eq!(
            error("9a 1").what,
            "a metric name is letters, digits, _ and :"
        );
    }

    #[test]
    fn rates_are_for_counters_present_before_and_take_a_decrease_as_a_restart() {
        let sample = |name: &str, value, counter| Sample {
            name: name.into(),
            labels: vec![],
            value,
            counter,
        };
        let before = [sample("a_total", 10.0, true), sample("g", 1.0, false)];
        let after = [
            sample("a_total", 30.0, true),
            sample("g", 9.0, false),
            sample("new_total", 5.0, true),
        ];
        assert_eq!(rates(&before, &after, 4.0), [Some(5.0), None, None]);
        let restarted = [sample("a_total", 2.0, true)];
        assert_eq!(rates(&before, &restarted, 2.0), [Some(1.0)]);
        assert_eq!(rates(&before, &restarted, 0.0), [None]);
    }

    fn counters() -> impl Strategy<Value = Counters> {
        let n = || any::<u64>();
        (
            any::<[[u64; 2]; 2]>(),
            prop::array::uniform7(n()),
            prop::array::uniform8(n()),
            any::<([u64; 2], [u64; 2], [u64; 2], [u64; 2], [u64; 2])>(),
            (n(), n()),
        )
            .prop_map(|(packets, simple, otp, pairs, (rollbacks, overruns))| {
                let (grants, closes, reloads, heals, held_back) = pairs;
                Counters {
                    knock_packets: packets,
                    simple,
                    otp,
                    grants,
                    closes,
                    reloads,
                    heals,
                    rollbacks,
                    nflog_overruns: overruns,
                    held_back,
                }
            })
    }

    proptest! {
        #[test]
        fn what_is_rendered_parses_back(
            counters in counters(),
            version in "\\PC{0,12}",
            doors in prop::collection::vec((any::<u16>(), 0..3usize, any::<u32>()), 0..5),
        ) {
            let modes = ["simple", "advanced", "manual"];
            let doors: Vec<DoorGrants> = (doors.iter())
                .map(|&(port, mode, grants)| DoorGrants { port, mode: modes[mode], grants: grants as usize })
                .collect();
            let table = Table::Installed(doors.clone());
            let gauges = Gauges { version: &version, start_time: 1, tracked_sources: 2, table: &table };
            let samples = parse(&render(&counters, &gauges)).unwrap();
            let value = |series: &str| {
                samples.iter().find(|s| s.series() == series).map(|s| s.value)
            };
            // Values as f64, as every Prometheus reader takes them.
            let total = |v: u64| Some(v as f64);
            prop_assert_eq!(
                value("portknock_knock_packets_total{protocol=\"udp\",family=\"ipv6\"}"),
                total(counters.knock_packets[1][1])
            );
            for o in Simple::ALL {
                let series = format!("portknock_simple_outcomes_total{{outcome=\"{}\"}}", o.label());
                prop_assert_eq!(value(&series), total(counters.simple[*o as usize]));
            }
            for o in Otp::ALL {
                let series = format!("portknock_otp_outcomes_total{{outcome=\"{}\"}}", o.label());
                prop_assert_eq!(value(&series), total(counters.otp[*o as usize]));
            }
            prop_assert_eq!(value("portknock_nflog_overruns_total"), total(counters.nflog_overruns));
            prop_assert_eq!(value("portknock_rollbacks_total"), total(counters.rollbacks));
            let info = samples.iter().find(|s| s.name == "portknock_build_info").unwrap();
            prop_assert_eq!(&info.labels, &vec![("version".to_string(), version.clone())]);
            let grants: Vec<&Sample> = samples.iter().filter(|s| s.name == "portknock_active_grants").collect();
            prop_assert_eq!(grants.len(), doors.len());
            for (sample, door) in grants.iter().zip(&doors) {
                prop_assert_eq!(sample.value, door.grants as f64);
                prop_assert_eq!(&sample.labels[0].1, &door.port.to_string());
            }
            prop_assert!(samples.iter().all(|s| s.counter == s.name.ends_with("_total")));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn exposition_like_text_never_panics(text in "([a-z_]{1,4}(\\{([a-z]{1,3}=\"[a-z\\\\\"]{0,4}\",?){0,3}\\}?)? ?[0-9.e+-]{0,5}\n){0,5}") {
            let _ = parse(&text);
        }
    }
}
