//! `portknock check`: every problem to stderr, a summary of what would be enforced to stdout.

use std::path::Path;

use super::{load, Loaded};
use crate::cli::{EXIT_OK, EXIT_USAGE};

/// Validates the configuration in `dir`, prints every diagnostic to stderr and, when it is
/// usable, a summary to stdout. Returns the exit status: 0 when valid (warnings may remain),
/// 2 on errors.
pub fn check_command(dir: &Path) -> u8 {
    match load(dir) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{warning}");
            }
            print!("{}", summary(&loaded));
            EXIT_OK
        }
        Err(err) => {
            eprintln!("{err}");
            eprintln!(
                "{}, {}: nothing was changed; fix the errors above, then run portknock check again",
                count(err.errors(), "error"),
                count(err.warnings(), "warning"),
            );
            EXIT_USAGE
        }
    }
}

/// What the configuration enforces, one screen, ending with the `OK: ...` line.
fn summary(loaded: &Loaded) -> String {
    let config = &loaded.config;
    let s = &config.settings;
    let on = |b: bool| if b { "on" } else { "off" };
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("configuration: {}", config.dir.display()));
    if s.enabled {
        line("engine:        on".to_string());
    } else {
        line("engine:        off (FW_PORTKNOCK=no): no port is protected, the lists were not read".to_string());
    }
    line(format!("simple mode:   {}", on(s.simple)));
    if s.enabled && s.simple {
        line(format!("  {} from {}", count(config.simple.len(), "door"), s.simple_list.display()));
        for door in &config.simple {
            let knocks: String = door.sequence.iter().map(|k| format!(" {k}")).collect();
            line(format!("  {:>5}  <-{knocks}", door.protected));
        }
    }
    line(format!("advanced mode: {}", on(s.advanced)));
    if s.enabled && s.advanced {
        line(format!("  {} from {}", count(config.advanced.len(), "door"), s.advanced_list.display()));
        for door in &config.advanced {
            line(format!("  {:>5}  <- udp/{} (open/close secrets set)", door.protected, door.knock_port));
        }
    }
    line(format!(
        "timeouts:      knock {} s, simple open {} s, advanced open {} s, OTP skew {} min",
        s.knock_timeout.as_secs(),
        s.simple_open.as_secs(),
        s.advanced_open.as_secs(),
        s.otp_skew,
    ));
    line(format!(
        "IPv6 knocks:   {}; at most {} sources tracked; state in {}",
        on(s.ipv6),
        s.max_sources,
        s.state_dir.display(),
    ));
    line(format!(
        "OK: {}, {}, {}",
        count(config.simple.len(), "simple door"),
        count(config.advanced.len(), "advanced door"),
        count(loaded.warnings.len(), "warning"),
    ));
    out
}

/// `1 error`, `2 errors`.
fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}
