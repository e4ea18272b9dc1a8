//! Checks shared by the two door-list targets.
// Each target uses one of the two example lists.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::Path;

use portknock::config::{
    parse_lists, AdvancedDoor, Diagnostic, SimpleDoor, ADVANCED_LIST_FILE, MAX_SEQUENCE,
    SIMPLE_LIST_FILE,
};
use portknock::port::Proto;

pub const DIR: &str = "/etc/portknock";

/// The example simple list, the fixed other list of the advanced target.
pub const EXAMPLE_SIMPLE: &str = "22:7000,9000,8000\n8443:7300,7100/udp,7200\n";
/// The example advanced list, the fixed other list of the simple target.
pub const EXAMPLE_ADVANCED: &str =
    "2222,2000,hipjazzhipjazz,superawesome\n3389,2001,elite-october,november-rain\n";

/// Characters that no diagnostic template contains: a field of the input that holds one of
/// them and shows up in a message was copied from the input, which for a secret is a leak.
const MARKERS: &[char] = &[
    '!', '@', '$', '%', '^', '&', '*', '~', '|', '{', '}', '<', '>', '?',
];

/// Parses both lists and checks everything that must hold whatever the input.
pub fn check(simple: &str, advanced: &str) {
    let dir = Path::new(DIR);
    let (simple_doors, advanced_doors, diags) = parse_lists(dir, Some(simple), Some(advanced));

    let simple_file = dir.join(SIMPLE_LIST_FILE);
    let advanced_file = dir.join(ADVANCED_LIST_FILE);
    let fields = marked_fields(simple)
        .into_iter()
        .chain(marked_fields(advanced))
        .collect::<Vec<_>>();
    for d in &diags {
        let text = if d.file == simple_file {
            simple
        } else {
            assert_eq!(d.file, advanced_file, "{d}");
            advanced
        };
        let lines = text.lines().count();
        assert!(d.line.is_none_or(|l| (1..=lines).contains(&l)), "{d}");
        assert!(!d.message.is_empty());
        for field in &fields {
            assert!(
                !d.message.contains(field.as_str()),
                "a field of the input reached a message: {field:?} in {d}"
            );
        }
    }
    // Sorted as `load` sorts them: simple list first, then by line.
    let key = |d: &Diagnostic| (d.file != simple_file, d.line);
    assert!(diags.windows(2).all(|w| key(&w[0]) <= key(&w[1])));

    if diags.iter().any(Diagnostic::is_error) {
        return;
    }
    check_valid(&simple_doors, &advanced_doors);

    // A valid configuration written back in canonical form reads back the same.
    let (s2, a2, diags2) = parse_lists(
        dir,
        Some(&render_simple(&simple_doors)),
        Some(&render_advanced(&advanced_doors)),
    );
    assert!(!diags2.iter().any(Diagnostic::is_error), "{diags2:?}");
    assert_eq!(s2, simple_doors);
    assert_eq!(a2, advanced_doors);
}

/// Every rule of docs/behaviour.md §1.4 that a configuration without errors must satisfy.
fn check_valid(simple: &[SimpleDoor], advanced: &[AdvancedDoor]) {
    let mut protected = HashSet::new();
    for p in simple
        .iter()
        .map(|d| d.protected)
        .chain(advanced.iter().map(|d| d.protected))
    {
        assert_ne!(p, 0);
        assert!(protected.insert(p), "port {p} protected twice");
    }
    let mut sequences = HashSet::new();
    let mut simple_udp = HashSet::new();
    for door in simple {
        let seq = &door.sequence;
        assert!(!seq.is_empty() && seq.len() <= MAX_SEQUENCE, "{door:?}");
        assert!(seq.windows(2).all(|w| w[0] != w[1]), "{door:?}");
        for k in seq {
            assert_ne!(k.port, 0);
            assert!(!protected.contains(&k.port), "knock port {k} is protected");
            if k.proto == Proto::Udp {
                simple_udp.insert(k.port);
            }
        }
        assert!(sequences.insert(seq.clone()), "sequence twice: {door:?}");
    }
    let mut otp_ports = HashSet::new();
    let mut secrets = HashSet::new();
    for door in advanced {
        assert_ne!(door.knock_port, 0);
        assert!(!protected.contains(&door.knock_port));
        assert!(!simple_udp.contains(&door.knock_port));
        assert!(otp_ports.insert(door.knock_port));
        for s in [&door.open_secret, &door.close_secret] {
            let s = s.expose();
            assert!(!s.is_empty() && s.iter().all(u8::is_ascii_graphic));
            assert!(!s.contains(&b','));
            assert!(secrets.insert(s), "a secret of two doors or roles");
        }
        assert_eq!(format!("{:?}", door.open_secret), "Secret(<redacted>)");
    }
}

fn render_simple(doors: &[SimpleDoor]) -> String {
    let mut out = String::new();
    for d in doors {
        let seq: Vec<String> = d
            .sequence
            .iter()
            .map(|k| k.to_string())
            .collect();
        out += &format!("{}:{}\n", d.protected, seq.join(","));
    }
    out
}

fn render_advanced(doors: &[AdvancedDoor]) -> String {
    let mut out = String::new();
    for d in doors {
        // Bare, or in the kind of quote the secret does not hold: a valid list holds no
        // secret with both kinds.
        let text = |s: &portknock::config::Secret| {
            let s = String::from_utf8(s.expose().to_vec()).expect("secrets are ASCII");
            match (s.contains('"'), s.contains('\'')) {
                (false, false) => s,
                (true, false) => format!("'{s}'"),
                (false, true) => format!("\"{s}\""),
                (true, true) => panic!("a secret with both kinds of quote was accepted"),
            }
        };
        out += &format!(
            "{},{},{},{}\n",
            d.protected,
            d.knock_port,
            text(&d.open_secret),
            text(&d.close_secret)
        );
    }
    out
}

/// The comma- and colon-separated fields of the input's words that hold a marker character.
fn marked_fields(text: &str) -> Vec<String> {
    text.split_whitespace()
        .flat_map(|w| w.split([',', ':']))
        .filter(|f| f.contains(MARKERS))
        .map(str::to_string)
        .collect()
}
