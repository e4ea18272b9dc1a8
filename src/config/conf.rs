//! `portknock.conf` (docs/behaviour.md §1.1): shell-style `KEY=value` lines, read the way a shell that
//! sources the file would read them, so that one file can serve both.

use std::collections::hash_map::{Entry, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::{Diagnostic, Settings};

/// Longest accepted knock timeout or open time, in seconds (30 days). A longer one is almost
/// surely a typo that would leave a door open for good; 30 days in milliseconds also still
/// fits in 32 bits, whatever the firewall code converts it to.
pub const MAX_DURATION_SECS: u64 = 30 * 24 * 3600;

/// Largest `FW_PORTKNOCK_OTP_SKEW`, in minutes. Ten covers a client without NTP; a wider
/// window only lengthens the life of an intercepted, undelivered OTP and the used-OTP record
/// the daemon has to keep.
pub const MAX_OTP_SKEW: u32 = 10;

/// Largest `FW_PORTKNOCK_MAX_SOURCES` (2^24): the point of the limit is bounded memory.
pub const MAX_MAX_SOURCES: usize = 1 << 24;

/// One key of `portknock.conf`: the one description of it, which docs/behaviour.md §1.1 and
/// README show as a table row, the example file as its comment, and the manual page
/// portknock.conf(5) as an entry (tests/cli_packaging.rs checks the copies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The key, `FW_PORTKNOCK_...`.
    pub name: &'static str,
    /// Its default as the documents write it; `DIR` is the configuration directory.
    pub default: &'static str,
    /// What it does: plain text (no markup), a phrase that starts in lower case.
    pub doc: &'static str,
}

/// Every key of `portknock.conf`, in the order the documents list them.
pub const KEYS: [Key; 14] = [
    Key {
        name: "FW_PORTKNOCK",
        default: "no",
        doc:
            "the engine as a whole; \"no\" protects nothing, and portknock apply removes the table",
    },
    Key {
        name: "FW_PORTKNOCK_SIMPLE",
        default: "no",
        doc: "simple mode: doors that open after knocks on a sequence of ports, in order",
    },
    Key {
        name: "FW_PORTKNOCK_ADVANCED",
        default: "no",
        doc: "advanced mode: doors that open on a one-time password sent in one UDP datagram",
    },
    Key {
        name: "FW_PORTKNOCK_SIMPLE_LIST",
        default: "DIR/simple-portknock-list",
        doc: "the simple list; a relative path is taken from the configuration directory DIR",
    },
    Key {
        name: "FW_PORTKNOCK_ADVANCED_LIST",
        default: "DIR/advanced-portknock-list",
        doc: "the advanced list; a relative path is taken from DIR",
    },
    Key {
        name: "FW_PORTKNOCK_KNOCK_TIMEOUT",
        default: "10",
        doc: "seconds allowed from one knock of a sequence to the next (1 to 2592000)",
    },
    Key {
        name: "FW_PORTKNOCK_SIMPLE_OPEN",
        default: "30",
        doc: "seconds a completed sequence keeps the port open to new connections from its \
              source (1 to 2592000); established connections are never cut",
    },
    Key {
        name: "FW_PORTKNOCK_ADVANCED_OPEN",
        default: "3600",
        doc: "seconds an open password keeps the port open, unless the close password comes \
              first (1 to 2592000)",
    },
    Key {
        name: "FW_PORTKNOCK_OTP_SKEW",
        default: "1",
        doc: "minutes either side of the server's minute whose passwords are accepted (0 to \
              10); 0 accepts the current minute only",
    },
    Key {
        name: "FW_PORTKNOCK_IPV6",
        default: "yes",
        doc: "observe knocks that arrive over IPv6; with \"no\" they are ignored, and \
              protected ports still stay closed over IPv6",
    },
    Key {
        name: "FW_PORTKNOCK_MAX_SOURCES",
        default: "262144",
        doc: "most source addresses whose knock progress is kept at once (1 to 16777216); \
              past it the least recently active is forgotten first, which bounds memory under \
              a flood",
    },
    Key {
        name: "FW_PORTKNOCK_STATE_DIR",
        default: "/var/lib/portknock",
        doc: "where the daemon keeps what must outlive it: the record of used passwords, so \
              that a replay stays refused after a restart, its pid file, its control socket \
              and a configuration on trial; an absolute path, created 0700 when missing, and \
              refused unless the user portknock runs as owns it and neither group nor others \
              may write to it",
    },
    Key {
        name: "FW_PORTKNOCK_TRUSTED",
        default: "empty",
        doc: "IPv4 and IPv6 addresses and prefixes, separated by spaces, that pass every \
              protected port without knocking: the office, the VPN, the bastion; a prefix is \
              written as its network (198.51.100.0/24, not 198.51.100.7/24), 0.0.0.0/0 and ::/0 \
              are refused (they would turn portknock off for everyone), and the host itself \
              always passes",
    },
    Key {
        name: "FW_PORTKNOCK_METRICS_FILE",
        default: "empty",
        doc: "a file, as an absolute path, where the daemon writes its counters for Prometheus \
              every 5 seconds and when it stops (knocks, what they did, grants, reloads, \
              heals, NFLOG overruns, the live grants by door); name it NAME.prom in the node \
              exporter's textfile directory (Debian: /var/lib/prometheus/node-exporter), and \
              give portknock.service a drop-in with ReadWritePaths= for that directory \
              (systemctl edit portknock); empty writes none",
    },
];

/// Reads the settings in `text` (the content of `file`), reporting problems into `diags`.
/// A key whose value is bad keeps its default, so the rest of the configuration can still be
/// checked.
pub(super) fn parse(dir: &Path, file: &Path, text: &str, diags: &mut Vec<Diagnostic>) -> Settings {
    let defaults = Settings::defaults(dir);
    let mut settings = defaults.clone();
    let mut first_line = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = Some(index + 1);
        let (key, value) = match assignment(raw) {
            None => {
                if let Some(message) = lookalike(raw) {
                    diags.push(Diagnostic::warning(file, line, message));
                }
                continue;
            }
            Some(Ok(assignment)) => assignment,
            Some(Err(message)) => {
                diags.push(Diagnostic::error(file, line, message));
                continue;
            }
        };
        let Some(result) = apply(&mut settings, &defaults, dir, key, &value) else {
            let message = format!("unknown key {key}; did you mean {}?", closest(key));
            diags.push(Diagnostic::error(file, line, message));
            continue;
        };
        match first_line.entry(key) {
            Entry::Occupied(first) => diags.push(Diagnostic::warning(
                file,
                line,
                format!(
                    "{key} is set again (first on line {}); the last value counts",
                    first.get()
                ),
            )),
            Entry::Vacant(slot) => {
                slot.insert(index + 1);
            }
        }
        if let Err(expected) = result {
            let message = format!("{key}={value:?}: expected {expected}");
            diags.push(Diagnostic::error(file, line, message));
        }
    }
    if settings.enabled && !settings.simple && !settings.advanced {
        diags.push(Diagnostic::warning(
            file,
            None,
            "FW_PORTKNOCK is yes but FW_PORTKNOCK_SIMPLE and FW_PORTKNOCK_ADVANCED are not, so no \
             port is protected; turn on a mode",
        ));
    }
    settings
}

/// Splits a line into key and value; `None` for lines that are not about portknock (other
/// settings, comments, blank lines).
fn assignment(raw: &str) -> Option<Result<(&str, String), String>> {
    let line = without_export(raw);
    if !line.starts_with("FW_PORTKNOCK") {
        return None;
    }
    match line.split_once('=') {
        Some((key, rest)) if is_key(key) && !rest.starts_with(char::is_whitespace) => {
            Some(value(rest).map(|value| (key, value)))
        }
        _ => Some(Err(
            "expected KEY=\"value\" with no spaces around '='".to_string()
        )),
    }
}

/// The line without its indentation and an `export` before the key.
fn without_export(raw: &str) -> &str {
    let line = raw.trim_start();
    match line.strip_prefix("export") {
        Some(rest) if rest.starts_with(char::is_whitespace) => rest.trim_start(),
        _ => line,
    }
}

/// The warning for an assignment that is not portknock's but looks meant to be: its key in
/// another case (`fw_portknock_simple`) or with a mistyped prefix (`FW_PORTKNOK_SIMPLE`), whose
/// value would otherwise be ignored without a word.
fn lookalike(raw: &str) -> Option<String> {
    let (key, _) = without_export(raw).split_once('=')?;
    let key = key.trim_end();
    if !is_key(key) {
        return None;
    }
    let upper = key.to_ascii_uppercase();
    let known = closest(&upper);
    let why = if upper.starts_with("FW_PORTKNOCK") {
        "keys are upper case"
    } else if strsim::damerau_levenshtein(&upper, known) <= 2 {
        "portknock's keys begin with FW_PORTKNOCK"
    } else {
        return None;
    };
    Some(format!("{key} is ignored: {why}; did you mean {known}?"))
}

/// Whether `key` can be a shell variable's name.
fn is_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The value after `KEY=`: quoted with `"` or `'`, or one word, then at most a comment.
fn value(rest: &str) -> Result<String, String> {
    let (value, after) = match rest.chars().next() {
        Some(quote @ ('"' | '\'')) => quoted(&rest[1..], quote)?,
        _ => {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            (rest[..end].to_string(), &rest[end..])
        }
    };
    let after = after.trim_start();
    if after.is_empty() || after.starts_with('#') {
        Ok(value)
    } else {
        Err("unexpected text after the value; quote a value that contains spaces".to_string())
    }
}

/// A quoted value up to its closing `quote`, and the text after it.
fn quoted(body: &str, quote: char) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            _ if c == quote => return Ok((value, &body[i + 1..])),
            // Inside double quotes a shell drops the backslash before these four only.
            '\\' if quote == '"' => match chars.next() {
                Some((_, next @ ('"' | '\\' | '$' | '`'))) => value.push(next),
                Some((_, next)) => value.extend(['\\', next]),
                None => break,
            },
            _ => value.push(c),
        }
    }
    Err(format!("missing closing {quote} quote"))
}

/// Stores the value of a known key, or says what was expected; `None` for an unknown key.
/// An empty value (`KEY=""`) means the default, as in the established sysconfig files.
fn apply(
    s: &mut Settings,
    d: &Settings,
    dir: &Path,
    key: &str,
    v: &str,
) -> Option<Result<(), String>> {
    let secs = |default| seconds(v, default);
    Some(match key {
        "FW_PORTKNOCK" => boolean(v, d.enabled).map(|b| s.enabled = b),
        "FW_PORTKNOCK_SIMPLE" => boolean(v, d.simple).map(|b| s.simple = b),
        "FW_PORTKNOCK_ADVANCED" => boolean(v, d.advanced).map(|b| s.advanced = b),
        "FW_PORTKNOCK_SIMPLE_LIST" => {
            s.simple_list = list_path(dir, v, &d.simple_list);
            Ok(())
        }
        "FW_PORTKNOCK_ADVANCED_LIST" => {
            s.advanced_list = list_path(dir, v, &d.advanced_list);
            Ok(())
        }
        "FW_PORTKNOCK_KNOCK_TIMEOUT" => secs(d.knock_timeout).map(|t| s.knock_timeout = t),
        "FW_PORTKNOCK_SIMPLE_OPEN" => secs(d.simple_open).map(|t| s.simple_open = t),
        "FW_PORTKNOCK_ADVANCED_OPEN" => secs(d.advanced_open).map(|t| s.advanced_open = t),
        "FW_PORTKNOCK_OTP_SKEW" => {
            whole(v, 0, MAX_OTP_SKEW.into(), " of minutes", d.otp_skew.into())
                .map(|n| s.otp_skew = n as u32)
        }
        "FW_PORTKNOCK_IPV6" => boolean(v, d.ipv6).map(|b| s.ipv6 = b),
        "FW_PORTKNOCK_MAX_SOURCES" => whole(v, 1, MAX_MAX_SOURCES as u64, "", d.max_sources as u64)
            .map(|n| s.max_sources = n as usize),
        "FW_PORTKNOCK_STATE_DIR" => state_dir(v, &d.state_dir).map(|p| s.state_dir = p),
        "FW_PORTKNOCK_TRUSTED" => trusted(v).map(|t| s.trusted = t),
        "FW_PORTKNOCK_METRICS_FILE" => metrics_file(v).map(|p| s.metrics_file = p),
        _ => return None,
    })
}

fn boolean(v: &str, default: bool) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "" => Ok(default),
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        _ => Err("yes or no".to_string()),
    }
}

fn seconds(v: &str, default: Duration) -> Result<Duration, String> {
    whole(v, 1, MAX_DURATION_SECS, " of seconds", default.as_secs()).map(Duration::from_secs)
}

/// The daemon's working directory is no place for the used-OTP record, so relative is refused.
fn state_dir(v: &str, default: &Path) -> Result<PathBuf, String> {
    match Path::new(v) {
        _ if v.is_empty() => Ok(default.to_path_buf()),
        path if path.is_absolute() => Ok(path.to_path_buf()),
        _ => Err("an absolute path".to_string()),
    }
}

/// A relative path would depend on the daemon's working directory, and a directory is no
/// file to rename a new version onto: an absolute path that ends in a file name, or empty.
fn metrics_file(v: &str) -> Result<Option<PathBuf>, String> {
    let path = Path::new(v);
    let named = (path.file_name().and_then(|n| n.to_str())).is_some_and(|n| v.ends_with(n));
    match v {
        "" => Ok(None),
        _ if path.is_absolute() && named => Ok(Some(path.to_path_buf())),
        _ => Err(
            "an absolute path to a file, such as /var/lib/prometheus/node-exporter/portknock.prom"
                .to_string(),
        ),
    }
}

/// Space-separated IPv4 and IPv6 addresses and prefixes, each taken as a network. A prefix
/// with host bits set is refused rather than guessed at (`10.1.2.3/8`: the network, or the
/// address?), and so is a prefix of length 0, which would let everyone in, or prefixes that
/// together make one (`0.0.0.0/1 128.0.0.0/1`).
fn trusted(v: &str) -> Result<Vec<IpNet>, String> {
    let nets = v
        .split_whitespace()
        .map(|word| {
            let net = match word.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => match word.parse::<IpAddr>() {
                    Ok(addr) => IpNet::from(addr),
                    Err(_) => {
                        return Err(format!(
                            "IPv4 and IPv6 addresses and prefixes separated by spaces, such as \
                             198.51.100.0/24 2001:db8::/48 203.0.113.7; {word:?} is neither"
                        ))
                    }
                },
            };
            if net.prefix_len() == 0 {
                return Err(format!(
                    "prefixes narrower than {word}, which lets every address in and so turns \
                     portknock off for the whole world; to turn it off, set FW_PORTKNOCK=no"
                ));
            }
            if net.trunc() != net {
                return Err(format!(
                    "{word} to have no bits set past its prefix length: write {} for the \
                     network, or {} for the one address",
                    net.trunc(),
                    net.addr()
                ));
            }
            if let IpNet::V6(v6) = net {
                if v6.addr().to_ipv4_mapped().is_some() {
                    return Err(format!(
                        "IPv4 addresses written as such; {word} is an IPv4-mapped IPv6 address"
                    ));
                }
            }
            Ok(net)
        })
        .collect::<Result<Vec<_>, _>>()?;
    match IpNet::aggregate(&nets).iter().find(|n| n.prefix_len() == 0) {
        Some(everyone) => Err(format!(
            "prefixes that leave some addresses out; together these make {everyone}, which \
             lets every address in and so turns portknock off for the whole world; to turn it \
             off, set FW_PORTKNOCK=no"
        )),
        None => Ok(nets),
    }
}

/// A decimal number in `lo..=hi`; `unit` completes "a whole number{unit}".
fn whole(v: &str, lo: u64, hi: u64, unit: &str, default: u64) -> Result<u64, String> {
    if v.is_empty() {
        return Ok(default);
    }
    v.parse()
        .ok()
        .filter(|n| v.bytes().all(|b| b.is_ascii_digit()) && (lo..=hi).contains(n))
        .ok_or_else(|| format!("a whole number{unit} from {lo} to {hi}"))
}

/// Relative list paths are relative to the configuration directory, not to wherever the
/// command happens to run.
fn list_path(dir: &Path, v: &str, default: &Path) -> PathBuf {
    if v.is_empty() {
        default.to_path_buf()
    } else {
        dir.join(v)
    }
}

/// The known key nearest to an unknown one; transpositions count as one edit, so that
/// `SIMPEL` finds `SIMPLE`.
fn closest(key: &str) -> &'static str {
    KEYS.iter()
        .map(|known| known.name)
        .min_by_key(|known| strsim::damerau_levenshtein(key, known))
        .unwrap_or(KEYS[0].name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FILE: &str = "/c/portknock.conf";

    fn run(text: &str) -> (Settings, Vec<String>) {
        let mut diags = Vec::new();
        let settings = parse(Path::new("/c"), Path::new(FILE), text, &mut diags);
        (settings, diags.iter().map(ToString::to_string).collect())
    }

    fn messages(text: &str) -> Vec<String> {
        run(text).1
    }

    #[test]
    fn empty_file_and_foreign_lines_give_the_defaults() {
        let text = "# comment\n\nFW_SERVICES_EXT_TCP=\"ssh\"\nif true; then :; fi\nPORTKNOCK=x\n";
        assert_eq!(run(text), (Settings::defaults(Path::new("/c")), vec![]));
    }

    #[test]
    fn every_key_in_every_shell_form() {
        let text = r#"
FW_PORTKNOCK="yes"
export FW_PORTKNOCK_SIMPLE=True   # trailing comment
  FW_PORTKNOCK_ADVANCED='1'
FW_PORTKNOCK_SIMPLE_LIST="lists/simple"
FW_PORTKNOCK_ADVANCED_LIST=/etc/other/advanced
FW_PORTKNOCK_KNOCK_TIMEOUT=5
FW_PORTKNOCK_SIMPLE_OPEN="45" # comment
FW_PORTKNOCK_ADVANCED_OPEN='600'
FW_PORTKNOCK_OTP_SKEW=0
FW_PORTKNOCK_IPV6=NO
FW_PORTKNOCK_MAX_SOURCES=16777216
FW_PORTKNOCK_STATE_DIR="/var/lib/pk state"
FW_PORTKNOCK_TRUSTED="198.51.100.0/24  2001:db8::/48 203.0.113.7 fd00::1"
FW_PORTKNOCK_METRICS_FILE=/var/lib/prometheus/node-exporter/portknock.prom
"#;
        let expected = Settings {
            enabled: true,
            simple: true,
            advanced: true,
            simple_list: PathBuf::from("/c/lists/simple"),
            advanced_list: PathBuf::from("/etc/other/advanced"),
            knock_timeout: Duration::from_secs(5),
            simple_open: Duration::from_secs(45),
            advanced_open: Duration::from_secs(600),
            otp_skew: 0,
            ipv6: false,
            max_sources: 16_777_216,
            state_dir: PathBuf::from("/var/lib/pk state"),
            trusted: [
                "198.51.100.0/24",
                "2001:db8::/48",
                "203.0.113.7/32",
                "fd00::1/128",
            ]
            .map(|n| n.parse().unwrap())
            .to_vec(),
            metrics_file: Some(PathBuf::from(
                "/var/lib/prometheus/node-exporter/portknock.prom",
            )),
        };
        assert_eq!(run(text), (expected, vec![]));
    }

    #[test]
    fn every_known_key_is_applied() {
        let mut s = Settings::defaults(Path::new("/c"));
        let d = s.clone();
        for key in KEYS.map(|k| k.name) {
            assert_eq!(
                apply(&mut s, &d, Path::new("/c"), key, ""),
                Some(Ok(())),
                "{key}"
            );
        }
        assert_eq!(
            apply(&mut s, &d, Path::new("/c"), "FW_PORTKNOCK_X", "1"),
            None
        );
    }

    #[test]
    fn every_documented_default_is_the_default() {
        let text: String = KEYS
            .iter()
            // Relative list paths are taken from DIR; the documents write "" as "empty".
            .map(|k| {
                format!(
                    "{}=\"{}\"\n",
                    k.name,
                    k.default.replace("DIR/", "").replace("empty", "")
                )
            })
            .collect();
        assert_eq!(run(&text), (Settings::defaults(Path::new("/c")), vec![]));
    }

    #[test]
    fn quoting_follows_the_shell() {
        let dir = |text: &str| run(text).0.state_dir;
        assert_eq!(
            dir(r#"FW_PORTKNOCK_STATE_DIR="/a\"b\\c\d""#),
            PathBuf::from(r#"/a"b\c\d"#)
        );
        assert_eq!(
            dir(r"FW_PORTKNOCK_STATE_DIR='/a\b#c'"),
            PathBuf::from(r"/a\b#c")
        );
        assert_eq!(dir("FW_PORTKNOCK_STATE_DIR=/a#b"), PathBuf::from("/a#b"));
        // In single quotes a backslash is a character like any other, even before the quote.
        assert_eq!(
            dir(r"FW_PORTKNOCK_STATE_DIR='/a\\b\'"),
            PathBuf::from(r"/a\\b\")
        );
    }

    #[test]
    fn export_is_a_word_of_its_own() {
        assert_eq!(
            run("exportFW_PORTKNOCK=yes\nexport\tFW_PORTKNOCK_SIMPLE=yes\n"),
            (
                Settings {
                    simple: true,
                    ..Settings::defaults(Path::new("/c"))
                },
                vec![]
            )
        );
    }

    #[test]
    fn an_empty_value_means_the_default() {
        let (s, diags) = run("FW_PORTKNOCK_KNOCK_TIMEOUT=3\nFW_PORTKNOCK_KNOCK_TIMEOUT=\"\"\n");
        assert_eq!(s.knock_timeout, Duration::from_secs(10));
        assert_eq!(
            diags,
            [format!(
                "{FILE}:2: warning: FW_PORTKNOCK_KNOCK_TIMEOUT is set again (first on line 1); \
                 the last value counts"
            )]
        );
    }

    #[test]
    fn unknown_key_names_the_closest() {
        assert_eq!(
            messages("FW_PORTKNOCK_SIMPEL=yes\nFW_PORTKNOCK_ADVANCED_OPEN_TIME=5\n"),
            [
                format!("{FILE}:1: error: unknown key FW_PORTKNOCK_SIMPEL; did you mean FW_PORTKNOCK_SIMPLE?"),
                format!("{FILE}:2: error: unknown key FW_PORTKNOCK_ADVANCED_OPEN_TIME; did you mean FW_PORTKNOCK_ADVANCED_OPEN?"),
            ]
        );
    }

    #[test]
    fn keys_in_another_case_or_with_a_mistyped_prefix_are_warned_about() {
        let text = "fw_portknock_advanced_open=600\nexport Fw_PortKnock=yes\n\
                    FW_PORTKNOK_KNOCK_TIMEOUT=5\nFW_PROTKNOCK_SIMPLE = yes\n\
                    FW_SERVICES_EXT_TCP=ssh\nFW_PORTKNOCKING=1 # x\nPORTKNOCK=yes\n";
        let (settings, diags) = run(text);
        assert_eq!(settings, Settings::defaults(Path::new("/c")), "all ignored");
        assert_eq!(
            diags,
            [
                format!("{FILE}:1: warning: fw_portknock_advanced_open is ignored: keys are upper case; did you mean FW_PORTKNOCK_ADVANCED_OPEN?"),
                format!("{FILE}:2: warning: Fw_PortKnock is ignored: keys are upper case; did you mean FW_PORTKNOCK?"),
                format!("{FILE}:3: warning: FW_PORTKNOK_KNOCK_TIMEOUT is ignored: portknock's keys begin with FW_PORTKNOCK; did you mean FW_PORTKNOCK_KNOCK_TIMEOUT?"),
                format!("{FILE}:4: warning: FW_PROTKNOCK_SIMPLE is ignored: portknock's keys begin with FW_PORTKNOCK; did you mean FW_PORTKNOCK_SIMPLE?"),
                format!("{FILE}:6: error: unknown key FW_PORTKNOCKING; did you mean FW_PORTKNOCK?"),
            ]
        );
    }

    #[test]
    fn syntax_errors() {
        let spaces = "error: expected KEY=\"value\" with no spaces around '='";
        assert_eq!(
            messages(
                "FW_PORTKNOCK yes\nFW_PORTKNOCK =yes\nFW_PORTKNOCK= yes\nFW_PORTKNOCK=\"yes\n\
                 FW_PORTKNOCK='yes\nFW_PORTKNOCK=yes no\nFW_PORTKNOCK=\"yes\"no\n"
            ),
            [
                format!("{FILE}:1: {spaces}"),
                format!("{FILE}:2: {spaces}"),
                format!("{FILE}:3: {spaces}"),
                format!("{FILE}:4: error: missing closing \" quote"),
                format!("{FILE}:5: error: missing closing ' quote"),
                format!("{FILE}:6: error: unexpected text after the value; quote a value that contains spaces"),
                format!("{FILE}:7: error: unexpected text after the value; quote a value that contains spaces"),
            ]
        );
    }

    #[test]
    fn value_errors_keep_the_default() {
        let text = "FW_PORTKNOCK_SIMPLE=maybe\nFW_PORTKNOCK_KNOCK_TIMEOUT=0\n\
                    FW_PORTKNOCK_SIMPLE_OPEN=30s\nFW_PORTKNOCK_ADVANCED_OPEN=2592001\n\
                    FW_PORTKNOCK_OTP_SKEW=11\nFW_PORTKNOCK_MAX_SOURCES=0\n\
                    FW_PORTKNOCK_MAX_SOURCES=16777217\nFW_PORTKNOCK_MAX_SOURCES=+5\n\
                    FW_PORTKNOCK_STATE_DIR=state\n";
        let (settings, diags) = run(text);
        assert_eq!(settings, Settings::defaults(Path::new("/c")));
        let again = |line, first| {
            format!("{FILE}:{line}: warning: FW_PORTKNOCK_MAX_SOURCES is set again (first on line {first}); the last value counts")
        };
        let sources = "expected a whole number from 1 to 16777216";
        assert_eq!(
            diags,
            [
                format!("{FILE}:1: error: FW_PORTKNOCK_SIMPLE=\"maybe\": expected yes or no"),
                format!("{FILE}:2: error: FW_PORTKNOCK_KNOCK_TIMEOUT=\"0\": expected a whole number of seconds from 1 to 2592000"),
                format!("{FILE}:3: error: FW_PORTKNOCK_SIMPLE_OPEN=\"30s\": expected a whole number of seconds from 1 to 2592000"),
                format!("{FILE}:4: error: FW_PORTKNOCK_ADVANCED_OPEN=\"2592001\": expected a whole number of seconds from 1 to 2592000"),
                format!("{FILE}:5: error: FW_PORTKNOCK_OTP_SKEW=\"11\": expected a whole number of minutes from 0 to 10"),
                format!("{FILE}:6: error: FW_PORTKNOCK_MAX_SOURCES=\"0\": {sources}"),
                again(7, 6),
                format!("{FILE}:7: error: FW_PORTKNOCK_MAX_SOURCES=\"16777217\": {sources}"),
                again(8, 6),
                format!("{FILE}:8: error: FW_PORTKNOCK_MAX_SOURCES=\"+5\": {sources}"),
                format!("{FILE}:9: error: FW_PORTKNOCK_STATE_DIR=\"state\": expected an absolute path"),
            ]
        );
    }

    #[test]
    fn trusted_sources_are_networks_and_never_everyone() {
        let bad = |value: &str| {
            let (settings, diags) = run(&format!("FW_PORTKNOCK_TRUSTED=\"{value}\"\n"));
            assert_eq!(settings.trusted, [], "{value}: the default stays");
            assert_eq!(diags.len(), 1, "{diags:?}");
            diags[0].clone()
        };
        let prefix = format!("{FILE}:1: error: FW_PORTKNOCK_TRUSTED=");
        assert_eq!(
            bad("10.0.0.0/8 0.0.0.0/0"),
            format!(
                "{prefix}\"10.0.0.0/8 0.0.0.0/0\": expected prefixes narrower than 0.0.0.0/0, \
                 which lets every address in and so turns portknock off for the whole world; \
                 to turn it off, set FW_PORTKNOCK=no"
            )
        );
        assert!(bad("::/0").contains("narrower than ::/0"));
        assert_eq!(
            bad("0.0.0.0/1 2001:db8::/32 128.0.0.0/2 192.0.0.0/2"),
            format!(
                "{prefix}\"0.0.0.0/1 2001:db8::/32 128.0.0.0/2 192.0.0.0/2\": expected \
                 prefixes that leave some addresses out; together these make 0.0.0.0/0, which \
                 lets every address in and so turns portknock off for the whole world; to turn \
                 it off, set FW_PORTKNOCK=no"
            )
        );
        assert!(bad("::/1 8000::/1").contains("together these make ::/0"));
        let (settings, diags) = run("FW_PORTKNOCK_TRUSTED=\"0.0.0.0/1 128.0.0.0/2\"\n");
        assert_eq!(
            (settings.trusted.len(), diags),
            (2, vec![]),
            "a half and a quarter"
        );
        assert_eq!(
            bad("10.1.2.3/8"),
            format!(
                "{prefix}\"10.1.2.3/8\": expected 10.1.2.3/8 to have no bits set past its prefix \
                 length: write 10.0.0.0/8 for the network, or 10.1.2.3 for the one address"
            )
        );
        assert!(bad("198.51.100.300").ends_with("\"198.51.100.300\" is neither"));
        assert!(bad("10.0.0.0/33").contains("\"10.0.0.0/33\" is neither"));
        assert!(bad("::ffff:198.51.100.7").contains("IPv4-mapped"));
        assert!(bad("example.com").contains("such as 198.51.100.0/24 2001:db8::/48"));
    }

    #[test]
    fn the_metrics_file_is_an_absolute_path_to_a_file() {
        let file = |value: &str| run(&format!("FW_PORTKNOCK_METRICS_FILE=\"{value}\"\n"));
        assert_eq!(file("").0.metrics_file, None);
        assert_eq!(
            file("/run/pk.prom").0.metrics_file,
            Some(PathBuf::from("/run/pk.prom"))
        );
        for bad in ["pk.prom", "/run/", "/", "/run/.", "/run/.."] {
            let (settings, diags) = file(bad);
            assert_eq!(settings.metrics_file, None, "{bad}");
            assert_eq!(
                diags,
                [format!(
                    "{FILE}:1: error: FW_PORTKNOCK_METRICS_FILE={bad:?}: expected an absolute \
                     path to a file, such as /var/lib/prometheus/node-exporter/portknock.prom"
                )]
            );
        }
    }

    #[test]
    fn engine_without_a_mode_is_a_warning() {
        assert_eq!(
            messages("FW_PORTKNOCK=yes\n"),
            [format!(
                "{FILE}: warning: FW_PORTKNOCK is yes but FW_PORTKNOCK_SIMPLE and \
                 FW_PORTKNOCK_ADVANCED are not, so no port is protected; turn on a mode"
            )]
        );
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            run(&text);
        }

        #[test]
        fn shell_like_text_never_panics(text in "(export )?(FW_PORTKNOCK[A-Z_]{0,12}| )[= \"'#\\\\a-z0-9/]{0,30}\n?") {
            run(&text);
        }

        #[test]
        fn rendered_settings_parse_back(
            enabled: bool, simple: bool, advanced: bool, ipv6: bool,
            knock in 1..=MAX_DURATION_SECS, open in 1..=MAX_DURATION_SECS,
            skew in 0..=MAX_OTP_SKEW, sources in 1..=MAX_MAX_SOURCES,
            list in "[a-z][a-z/._-]{0,20}", state in "/[a-zA-Z0-9 /._-]{0,20}",
        ) {
            let yes = |b: bool| if b { "yes" } else { "no" };
            let text = format!(
                "FW_PORTKNOCK={}\nFW_PORTKNOCK_SIMPLE='{}'\nFW_PORTKNOCK_ADVANCED=\"{}\"\n\
                 FW_PORTKNOCK_IPV6={}\nFW_PORTKNOCK_KNOCK_TIMEOUT={knock}\n\
                 FW_PORTKNOCK_SIMPLE_OPEN={open}\nFW_PORTKNOCK_ADVANCED_OPEN={open} # x\n\
                 FW_PORTKNOCK_OTP_SKEW={skew}\nFW_PORTKNOCK_MAX_SOURCES={sources}\n\
                 FW_PORTKNOCK_SIMPLE_LIST={list}\nFW_PORTKNOCK_ADVANCED_LIST=\"{list}\"\n\
                 FW_PORTKNOCK_STATE_DIR=\"{state}\"\n",
                yes(enabled), yes(simple), yes(advanced), yes(ipv6),
            );
            let expected = Settings {
                enabled, simple, advanced, ipv6,
                simple_list: Path::new("/c").join(&list),
                advanced_list: Path::new("/c").join(&list),
                knock_timeout: Duration::from_secs(knock),
                simple_open: Duration::from_secs(open),
                advanced_open: Duration::from_secs(open),
                otp_skew: skew,
                max_sources: sources,
                state_dir: PathBuf::from(state),
                trusted: Vec::new(),
                metrics_file: None,
            };
            let (settings, diags) = run(&text);
            prop_assert_eq!(settings, expected);
            prop_assert!(diags.iter().all(|d| d.contains("warning: FW_PORTKNOCK is yes")), "{:?}", diags);
        }
    }
}
