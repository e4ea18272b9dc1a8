//! `portknock.conf` (docs/behaviour.md §1.1) through `config::parse_settings`.
//!
//! Checks: no panic; every diagnostic names the file and a line that exists; whatever the text,
//! the settings stay within the documented bounds that the firewall and OTP code rely on; and a
//! configuration without errors, written back out in canonical form, reads back to the same
//! settings without errors.
#![no_main]

use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use portknock::config::{
    parse_settings, Settings, CONF_FILE, MAX_DURATION_SECS, MAX_MAX_SOURCES, MAX_OTP_SKEW,
};

const DIR: &str = "/etc/portknock";

fuzz_target!(|data: &[u8]| {
    // As `load` reads a file: no byte-order mark, invalid UTF-8 as U+FFFD.
    let text = portknock::config::text(data);
    let dir = Path::new(DIR);
    let (settings, diags) = parse_settings(dir, &text);

    let lines = text.lines().count();
    for d in &diags {
        assert_eq!(d.file, dir.join(CONF_FILE), "{d}");
        assert!(d.line.is_none_or(|l| (1..=lines).contains(&l)), "{d}");
        assert!(!d.message.is_empty());
        let _ = d.to_string();
    }
    check_bounds(&settings);

    if !diags.iter().any(|d| d.is_error()) {
        let again = render(&settings);
        let (reread, diags) = parse_settings(dir, &again);
        assert!(
            !diags.iter().any(|d| d.is_error()),
            "canonical form {again:?} has errors: {diags:?}"
        );
        assert_eq!(reread, settings, "canonical form {again:?}");
    }
});

fn check_bounds(s: &Settings) {
    let max = Duration::from_secs(MAX_DURATION_SECS);
    for t in [s.knock_timeout, s.simple_open, s.advanced_open] {
        assert!(t >= Duration::from_secs(1) && t <= max, "{t:?}");
        assert_eq!(t.subsec_nanos(), 0);
    }
    assert!(s.otp_skew <= MAX_OTP_SKEW);
    assert!((1..=MAX_MAX_SOURCES).contains(&s.max_sources));
    assert!(s.state_dir.is_absolute(), "{:?}", s.state_dir);
    assert!(s.simple_list.is_absolute(), "{:?}", s.simple_list);
    assert!(s.advanced_list.is_absolute(), "{:?}", s.advanced_list);
}

/// The settings as a shell would write them: every key, double-quoted.
fn render(s: &Settings) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let path = |p: &Path| quote(p.to_str().expect("paths come from UTF-8 text"));
    format!(
        "FW_PORTKNOCK=\"{}\"\nFW_PORTKNOCK_SIMPLE=\"{}\"\nFW_PORTKNOCK_ADVANCED=\"{}\"\n\
         FW_PORTKNOCK_SIMPLE_LIST={}\nFW_PORTKNOCK_ADVANCED_LIST={}\n\
         FW_PORTKNOCK_KNOCK_TIMEOUT=\"{}\"\nFW_PORTKNOCK_SIMPLE_OPEN=\"{}\"\n\
         FW_PORTKNOCK_ADVANCED_OPEN=\"{}\"\nFW_PORTKNOCK_OTP_SKEW=\"{}\"\n\
         FW_PORTKNOCK_IPV6=\"{}\"\nFW_PORTKNOCK_MAX_SOURCES=\"{}\"\nFW_PORTKNOCK_STATE_DIR={}\n",
        yes(s.enabled),
        yes(s.simple),
        yes(s.advanced),
        path(&s.simple_list),
        path(&s.advanced_list),
        s.knock_timeout.as_secs(),
        s.simple_open.as_secs(),
        s.advanced_open.as_secs(),
        s.otp_skew,
        yes(s.ipv6),
        s.max_sources,
        path(&s.state_dir),
    )
}

/// Double quotes, escaping the four characters a shell unescapes inside them.
fn quote(v: &str) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}
