//! The simple and the advanced door lists (docs/behaviour.md §1.2–§1.4): parsing each entry, and the checks
//! that need every door of both lists.

use std::collections::hash_map::{Entry as Slot, HashMap};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{AdvancedDoor, Diagnostic, Secret, SimpleDoor};
use crate::engine::armed_together;
use crate::port::{self, is_digits, parse_port, KnockPort, PortError, Proto};

/// Most knock ports in one simple sequence (docs/behaviour.md §1.4).
pub const MAX_SEQUENCE: usize = 32;

/// Sequences whose ports in a random order hit the right one less often than once in this many
/// tries draw a warning: a two-port sequence is opened by every other such scan.
pub const MIN_RANDOM_ORDERS: u64 = 6;

/// In how many random orders of its knock ports one opens the door: n! for n ports, saturating.
/// A sequence in which a port recurs is stronger than that against a scan, which tries each port
/// once; this does not count it.
pub fn random_orders(sequence: &[KnockPort]) -> u64 {
    (1..=sequence.len() as u64).fold(1, u64::saturating_mul)
}

/// Secrets shorter than this draw a warning: one captured knock lets anyone try short secrets
/// offline against it.
pub const MIN_SECRET_LEN: usize = 8;

/// Knock sequences that portknock's README, examples, docs and help print: whoever read them
/// can knock them.
const PUBLISHED_SEQUENCES: [&[KnockPort]; 5] = [
    &[
        KnockPort::tcp(7000),
        KnockPort::tcp(9000),
        KnockPort::tcp(8000),
    ],
    &[
        KnockPort::tcp(7300),
        KnockPort::udp(7100),
        KnockPort::tcp(7200),
    ],
    &[
        KnockPort::tcp(7000),
        KnockPort::udp(8000),
        KnockPort::tcp(9000),
    ],
    &[
        KnockPort::tcp(1),
        KnockPort::tcp(2),
        KnockPort::tcp(3),
        KnockPort::tcp(4),
        KnockPort::tcp(5),
    ],
    &[
        KnockPort::tcp(7),
        KnockPort::tcp(8),
        KnockPort::tcp(9),
        KnockPort::tcp(10),
        KnockPort::tcp(11),
    ],
];

/// Secrets that they print, the test vectors' among them.
const PUBLISHED_SECRETS: [&str; 7] = [
    "hipjazz",
    "superawesome",
    "hipjazzhipjazz",
    "elite-october",
    "november-rain",
    "elite",
    "october",
];

const SIMPLE_FORMAT: &str =
    "simple lines are PORT:KNOCKPORT,KNOCKPORT,... (e.g. 22:7000,9000,8000)";
const ADVANCED_FORMAT: &str = "advanced lines are PORT,KNOCKPORT,OPENSECRET,CLOSESECRET";

/// A door and the line it was read from, so that later checks can point at it.
#[derive(Debug)]
pub(super) struct Entry<T> {
    pub line: usize,
    pub door: T,
}

/// The valid doors of one list file.
#[derive(Debug)]
pub(super) struct List<T> {
    pub file: PathBuf,
    pub entries: Vec<Entry<T>>,
}

impl<T> List<T> {
    pub fn new(file: &Path) -> Self {
        List {
            file: file.to_path_buf(),
            entries: Vec::new(),
        }
    }
}

/// Reads the entries of a simple list; entries with errors are reported and left out.
pub(super) fn parse_simple(
    file: &Path,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Entry<SimpleDoor>> {
    let empty = "but simple mode is on; add a line like 22:7000,9000,8000 or set \
                 FW_PORTKNOCK_SIMPLE=no";
    // White space next to a separator is inside the entry: no field is ever empty.
    let joins =
        |entry: &str, next: &str| entry.ends_with([':', ',']) || next.starts_with([':', ',']);
    parse(file, text, diags, empty, joins, simple_door)
}

/// Reads the entries of an advanced list; entries with errors are reported and left out.
pub(super) fn parse_advanced(
    file: &Path,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Entry<AdvancedDoor>> {
    let empty = "but advanced mode is on; add a line like 22,2000,OPENSECRET,CLOSESECRET \
                 or set FW_PORTKNOCK_ADVANCED=no";
    // Words that fit one entry together are one: white space next to a comma is allowed, and
    // white space inside a field is then named where it is (a secret holding a space).
    let joins =
        |entry: &str, next: &str| entry.matches(',').count() + next.matches(',').count() < 4;
    parse(file, text, diags, empty, joins, advanced_door)
}

/// Parses every entry (the words of a line that `joins` joins) with `door`, which notes errors
/// and warnings; its problems become diagnostics at the entry's line, and only an entry
/// without errors is kept.
fn parse<T>(
    file: &Path,
    text: &str,
    diags: &mut Vec<Diagnostic>,
    empty: &str,
    joins: fn(&str, &str) -> bool,
    door: fn(&str, &mut Vec<String>, &mut Vec<String>) -> Option<T>,
) -> Vec<Entry<T>> {
    let mut entries = Vec::new();
    let mut any = false;
    for (line, entry) in entries_of(text, joins) {
        any = true;
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let parsed = door(&entry, &mut errors, &mut warnings);
        let valid = errors.is_empty();
        diags.extend(
            errors
                .into_iter()
                .map(|m| Diagnostic::error(file, Some(line), m)),
        );
        diags.extend(
            warnings
                .into_iter()
                .map(|m| Diagnostic::warning(file, Some(line), m)),
        );
        if let (true, Some(door)) = (valid, parsed) {
            entries.push(Entry { line, door });
        }
    }
    // An error, not a warning: a list emptied by accident must not quietly open its ports
    // at the next reload.
    if !any {
        diags.push(Diagnostic::error(
            file,
            None,
            format!("has no door, {empty}"),
        ));
    }
    entries
}

/// Every entry with its line: the words of a line (separated by white space, up to a word that
/// starts with `#`), a word joined to the entry before it, after one space, where
/// `joins(entry, word)`. Secrets may contain `#`, so only a word's first character can start a
/// comment.
fn entries_of(
    text: &str,
    joins: fn(&str, &str) -> bool,
) -> impl Iterator<Item = (usize, String)> + '_ {
    text.lines().enumerate().flat_map(move |(index, line)| {
        let mut entries: Vec<String> = Vec::new();
        for word in line.split_whitespace().take_while(|w| !w.starts_with('#')) {
            match entries.last_mut() {
                Some(entry) if joins(entry, word) => {
                    entry.push(' ');
                    entry.push_str(word);
                }
                _ => entries.push(word.to_string()),
            }
        }
        entries.into_iter().map(move |entry| (index + 1, entry))
    })
}

/// `PROTECTED:K1,K2,...` with `/udp` (or `/tcp`) allowed on each knock port.
fn simple_door(
    word: &str,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<SimpleDoor> {
    let (protected, sequence) = match word.split_once(':') {
        Some((protected, sequence)) if !protected.contains(',') => {
            (protected.trim(), sequence.trim())
        }
        _ => {
            // An advanced line has secrets among its comma-separated fields.
            let secrets = word.split(',').skip(2).any(|f| !is_digits(f.trim()));
            errors.push(if secrets {
                format!("this is an advanced-mode line; {SIMPLE_FORMAT}")
            } else {
                format!("missing ':' after the protected port; {SIMPLE_FORMAT}")
            });
            return None;
        }
    };
    let protected = note(port(protected, "the protected port"), errors);
    if sequence.is_empty() {
        errors.push("empty knock sequence; list the knock ports after ':'".to_string());
        return None;
    }
    let fields: Vec<Result<KnockPort, PortError>> = port::sequence(sequence).collect();
    if fields.len() > MAX_SEQUENCE {
        errors.push(format!(
            "the sequence has {} knock ports; at most {MAX_SEQUENCE} are allowed",
            fields.len()
        ));
    }
    let knocks: Vec<Option<KnockPort>> = (1..)
        .zip(fields)
        .map(|(position, field)| {
            let subject = format!("the knock port at position {position}");
            note(field.map_err(|e| e.describe(&subject)), errors)
        })
        .collect();
    for (position, pair) in (1..).zip(knocks.windows(2)) {
        if let [Some(a), Some(b)] = pair {
            if a == b {
                errors.push(format!(
                    "knock port {a} is repeated at positions {position} and {}; a repeat \
                     cannot be told from a retransmission",
                    position + 1
                ));
            }
        }
    }
    let sequence: Vec<KnockPort> = knocks.into_iter().collect::<Option<_>>()?;
    if let [only] = sequence[..] {
        warnings.push(format!(
            "a one-port sequence: any single packet to {only} (a port scan, say) opens the \
             door; use three or more knock ports"
        ));
    } else {
        // A sequence with an error (a port twice in a row) has its error to fix first.
        if errors.is_empty() && random_orders(&sequence) < MIN_RANDOM_ORDERS {
            warnings.push(format!(
                "a {}-port sequence: a scan that tries only its knock ports, in a random order, \
                 opens the door once in {}; use three or more knock ports (four: once in 24)",
                sequence.len(),
                random_orders(&sequence)
            ));
        }
        if sequence.windows(2).all(|pair| pair[0].port < pair[1].port) {
            warnings.push(
                "the sequence is strictly ascending, so a sequential port scan walks it; put \
                 the knock ports out of order"
                    .to_string(),
            );
        }
    }
    if PUBLISHED_SEQUENCES.contains(&sequence.as_slice()) {
        warnings.push(
            "this sequence is published as an example (README, examples, docs), so anyone who \
             read them can knock it; choose knock ports of your own"
                .to_string(),
        );
    }
    Some(SimpleDoor {
        protected: protected?,
        sequence,
    })
}

/// `PROTECTED,KNOCKPORT,OPENSECRET,CLOSESECRET`.
fn advanced_door(
    word: &str,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<AdvancedDoor> {
    let fields: Vec<&str> = word.split(',').map(str::trim).collect();
    // Secrets may contain ':', so only a ':' in the first field marks a simple line.
    if fields.first().is_some_and(|f| f.contains(':')) {
        errors.push(format!("this is a simple-mode line; {ADVANCED_FORMAT}"));
        return None;
    }
    let &[protected, knock, open, close] = fields.as_slice() else {
        // Secrets may contain ';': named only where it would make the four fields.
        let semicolons = if word.split(';').count() == 4 {
            "; ';' is not a separator: fields are separated by commas"
        } else {
            ""
        };
        errors.push(format!(
            "expected 4 fields, found {}{semicolons}; {ADVANCED_FORMAT}",
            fields.len()
        ));
        return None;
    };
    let protected = note(port(protected, "the protected port"), errors);
    let knock_port = note(port(knock, "the knock port"), errors);
    let open = note(secret(open, "open", warnings), errors);
    let close = note(secret(close, "close", warnings), errors);
    if open.is_some() && open == close {
        errors.push(
            "the open secret and the close secret are the same, so a close could not be told \
             from an open; choose two different secrets"
                .to_string(),
        );
    }
    Some(AdvancedDoor {
        protected: protected?,
        knock_port: knock_port?,
        open_secret: Secret::new(open?),
        close_secret: Secret::new(close?),
    })
}

/// One secret as written, without the quotes around it; its problems name it by `which`
/// only: its value never goes into a message.
fn secret<'a>(
    written: &'a str,
    which: &str,
    warnings: &mut Vec<String>,
) -> Result<&'a str, String> {
    let value = unquote(written).ok_or_else(|| {
        format!(
            "the {which} secret has a quote that is not one of a matching pair around the whole \
             secret; write the secret bare, or whole in \"...\" or '...', which are not part of it"
        )
    })?;
    if value.is_empty() {
        return Err(format!("the {which} secret is empty"));
    }
    if value.contains(char::is_whitespace) {
        return Err(format!(
            "the {which} secret holds white space; a secret is printable ASCII without white \
             space or commas, quoted or not"
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the {which} secret has a character that is not printable ASCII; use letters, \
             digits and punctuation"
        ));
    }
    if value.len() < MIN_SECRET_LEN {
        warnings.push(format!(
            "the {which} secret is shorter than {MIN_SECRET_LEN} characters; one captured \
             knock lets anyone guess a short secret offline"
        ));
    }
    if PUBLISHED_SECRETS.contains(&value) {
        warnings.push(format!(
            "the {which} secret is published as an example (README, examples, docs), so anyone \
             can make its passwords; choose a long random secret of your own"
        ));
    }
    Ok(value)
}

/// A field written bare, or whole in matching double or single quotes, which are dropped as
/// the shell and portknock.conf drop them; `None` for any other quote, which would otherwise
/// become part of the secret unseen.
fn unquote(field: &str) -> Option<&str> {
    for quote in ['"', '\''] {
        let inner = field
            .strip_prefix(quote)
            .and_then(|f| f.strip_suffix(quote));
        if let Some(inner) = inner.filter(|inner| !inner.contains(quote)) {
            return Some(inner);
        }
    }
    (!field.contains(['"', '\''])).then_some(field)
}

/// A port from 1 to 65535, `what` naming it in the message.
fn port(field: &str, what: &str) -> Result<u16, String> {
    parse_port(field).map_err(|e| e.describe(what))
}

/// The value, or `None` with its error noted.
fn note<T>(result: Result<T, String>, errors: &mut Vec<String>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}

/// What the checks between doors need of a door of either list.
struct Door<'a> {
    file: &'a Path,
    line: usize,
    mode: &'static str,
    protected: u16,
    knocks: Vec<KnockPort>,
}

impl Door<'_> {
    /// How a message about another door points at this one.
    fn describe(&self) -> String {
        format!(
            "the {} door at {}:{}",
            self.mode,
            self.file.display(),
            self.line
        )
    }
}

/// The checks between doors (docs/behaviour.md §1.4), within a list and across both. The earlier door (the
/// simple list before the advanced one, then line order) is taken as right, and the later one
/// is reported with a pointer to it.
pub(super) fn cross_check(
    simple: &List<SimpleDoor>,
    advanced: &List<AdvancedDoor>,
    diags: &mut Vec<Diagnostic>,
) {
    let simple_doors = simple.entries.iter().map(|e| Door {
        file: &simple.file,
        line: e.line,
        mode: "simple",
        protected: e.door.protected,
        knocks: e.door.sequence.clone(),
    });
    let advanced_doors = advanced.entries.iter().map(|e| Door {
        file: &advanced.file,
        line: e.line,
        mode: "advanced",
        protected: e.door.protected,
        knocks: vec![KnockPort::udp(e.door.knock_port)],
    });
    let doors: Vec<Door> = simple_doors.chain(advanced_doors).collect();

    // Allowed, but a source has one door armed in the kernel at a time (firewall::ruleset):
    // the daemon opens a door displaced so itself, a moment after its final knock.
    let sequences: Vec<Vec<KnockPort>> = simple
        .entries
        .iter()
        .map(|e| e.door.sequence.clone())
        .collect();
    for (displaced, by) in armed_together(&sequences) {
        let other = doors[by].describe();
        diags.push(Diagnostic::warning(
            &simple.file,
            Some(simple.entries[displaced].line),
            format!(
                "the knock before its last also arms {other}, and a source has one \
                 armed door at a time, so the daemon opens this one itself, a moment \
                 after its final knock: a connection made at once may wait a second \
                 for TCP to retry; make the two sequences differ earlier"
            ),
        ));
    }

    let mut error = |door: &Door, message: String| {
        diags.push(Diagnostic::error(door.file, Some(door.line), message));
    };

    let mut owners: HashMap<u16, &Door> = HashMap::new();
    for door in &doors {
        let port = door.protected;
        match owners.entry(port) {
            Slot::Occupied(owner) => {
                let owner = owner.get();
                let why = if owner.mode == door.mode {
                    "remove one of the two"
                } else {
                    "a port can be protected by one mode only"
                };
                let owner = owner.describe();
                error(
                    door,
                    format!("port {port} is already protected by {owner}; {why}"),
                );
            }
            Slot::Vacant(slot) => {
                slot.insert(door);
            }
        }
    }

    // A knock at a protected port would also be a connection attempt to it. The set reports a
    // port that recurs in a sequence once.
    for door in &doors {
        let ports: BTreeSet<u16> = door.knocks.iter().map(|k| k.port).collect();
        for port in ports {
            if port == door.protected {
                error(
                    door,
                    format!(
                        "knock port {port} is the port this door protects; choose another \
                         knock port"
                    ),
                );
            } else if let Some(owner) = owners.get(&port) {
                let owner = owner.describe();
                error(
                    door,
                    format!(
                        "knock port {port} is protected by {owner}; choose a knock port that no \
                         door protects"
                    ),
                );
            }
        }
    }

    let mut sequences: HashMap<&[KnockPort], &Door> = HashMap::new();
    for door in doors.iter().filter(|d| d.mode == "simple") {
        match sequences.entry(&door.knocks) {
            Slot::Occupied(first) => {
                let first = first.get().describe();
                error(
                    door,
                    format!("the same knock sequence as {first}; give each door its own sequence"),
                );
            }
            Slot::Vacant(slot) => {
                slot.insert(door);
            }
        }
    }

    // An OTP datagram must belong to one door. Simple doors may share a UDP knock port: each
    // keeps its own sequence state.
    let mut udp: HashMap<u16, &Door> = HashMap::new();
    for door in &doors {
        for knock in door.knocks.iter().filter(|k| k.proto == Proto::Udp) {
            match udp.entry(knock.port) {
                Slot::Occupied(owner) if door.mode == "advanced" => {
                    let owner = owner.get().describe();
                    error(
                        door,
                        format!(
                            "knock port {} is already a UDP knock port of {owner}; give this \
                             door a knock port of its own",
                            knock.port
                        ),
                    );
                }
                Slot::Occupied(_) => {}
                Slot::Vacant(slot) => {
                    slot.insert(door);
                }
            }
        }
    }

    // An OTP is the MAC of the source and the minute only (the pknock format): nothing in it
    // names a door or a role, so it is valid wherever its secret is. A door's own open and
    // close secrets are compared where the entry is parsed. The secrets are map keys only,
    // never part of a message.
    let advanced_doors = &doors[simple.entries.len()..];
    let mut secrets: HashMap<&[u8], (&Door, &str)> = HashMap::new();
    for (entry, door) in advanced.entries.iter().zip(advanced_doors) {
        let roles = [
            ("open", &entry.door.open_secret),
            ("close", &entry.door.close_secret),
        ];
        for (role, secret) in roles {
            match secrets.entry(secret.expose()) {
                Slot::Occupied(first) => {
                    let (first, first_role) = first.get();
                    let first = first.describe();
                    error(
                        door,
                        format!(
                            "the {role} secret is also the {first_role} secret of {first}; an \
                             OTP is valid for every door that shares its secret (its MAC covers \
                             only the source and the minute), so one door's OTPs would open or \
                             close the other; give each door and role a secret of its own"
                        ),
                    );
                }
                Slot::Vacant(slot) => {
                    slot.insert((door, role));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
