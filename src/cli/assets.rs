//! Shell completions and manual pages, generated from the command-line definition in
//! [`crate::cli`] so that they always match `--help` of the same binary: `portknock generate
//! DIR` writes them for packagers to install.
//!
//! The manual pages are clap_mangen's, with one convention of this project's `after_help`
//! texts turned into proper sections: a paragraph that starts with `Example:` or `Examples:`
//! becomes EXAMPLES, one that starts with `Exit status:` becomes EXIT STATUS, and any other
//! paragraph joins the DESCRIPTION.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::{Generator, Shell};
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

use super::{Cli, DEFAULT_CONFIG_DIR};
use crate::config::{Settings, ADVANCED_LIST_FILE, CONF_FILE, SIMPLE_LIST_FILE};
use crate::report::Report;

/// The command name that completions complete and manual pages are named after.
const BIN: &str = "portknock";
/// The shells completions are written for: `portknock.bash`, `_portknock`, `portknock.fish`.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];
/// Subdirectory of DIR for the completions.
const COMPLETIONS_DIR: &str = "completions";
/// Subdirectory of DIR for the manual pages.
const MAN_DIR: &str = "man";

/// Writing one of the generated files failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {error}; check that the directory can be created and written", path.display())]
pub struct WriteError {
    path: PathBuf,
    error: io::Error,
}

/// `portknock generate DIR`: writes `DIR/completions/` (bash, zsh, fish) and `DIR/man/`
/// (`portknock.1` and one `portknock-COMMAND.1` per command), creating the directories, and
/// lists the files written.
pub fn generate(dir: &Path) -> Result<Report, WriteError> {
    let mut written = Report::new();
    for shell in SHELLS {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), BIN, &mut text);
        let path = dir.join(COMPLETIONS_DIR).join(shell.file_name(BIN));
        write(&path, &text)?;
        written.line(path.display());
    }
    for (name, page) in man_pages() {
        let path = dir.join(MAN_DIR).join(name);
        write(&path, &page)?;
        written.line(path.display());
    }
    Ok(written)
}

fn write(path: &Path, contents: &[u8]) -> Result<(), WriteError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)
        .and_then(|()| fs::write(path, contents))
        .map_err(|error| WriteError {
            path: path.to_path_buf(),
            error,
        })
}

/// Every manual page as (file name, roff source): the program's first, then each command's.
fn man_pages() -> Vec<(String, Vec<u8>)> {
    // `help` is a subcommand for the shells, but not a page of its own.
    let mut top = Cli::command().disable_help_subcommand(true);
    top.build();
    let mut pages = vec![man_page(&top, true)];
    pages.extend(
        top.get_subcommands()
            .filter(|sub| !sub.is_hide_set())
            .map(|sub| man_page(sub, false)),
    );
    pages
}

fn man_page(cmd: &clap::Command, is_top: bool) -> (String, Vec<u8>) {
    let after_help = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(ToString::to_string)
        .unwrap_or_default();
    let extra = Extra::parse(&after_help);

    // clap_mangen renders after_help as an "EXTRA" section of unformatted lines; instead, its
    // prose goes into the description and the rest into the sections appended below.
    let about = cmd
        .get_long_about()
        .or_else(|| cmd.get_about())
        .map(ToString::to_string)
        .unwrap_or_default();
    let description = std::iter::once(about)
        .chain(extra.notes)
        .collect::<Vec<_>>()
        .join("\n\n");
    let cmd = cmd
        .clone()
        .long_about(description)
        .after_help(None::<&str>)
        .after_long_help(None::<&str>);
    let has_subcommands = cmd.get_subcommands().any(|sub| !sub.is_hide_set());
    // Without a source, a command's page footer would name the bare subcommand ("otp").
    let man = Man::new(cmd).source(format!("{BIN} {}", env!("CARGO_PKG_VERSION")));

    let mut tail = Roff::new();
    if let Some(status) = extra.exit_status {
        tail.control("SH", ["EXIT STATUS"]).text([roman(status)]);
    }
    if !extra.examples.is_empty() {
        tail.control("SH", ["EXAMPLES"])
            .control("RS", ["4"])
            .control("nf", []);
        for example in &extra.examples {
            tail.text([roman(example.as_str())]);
        }
        tail.control("fi", []).control("RE", []);
    }
    if is_top {
        files_section(&mut tail);
        tail.control("SH", ["SEE ALSO"])
            .text([bold("nft"), roman("(8)")]);
    } else {
        tail.control("SH", ["SEE ALSO"])
            .text([bold(BIN), roman("(1)")]);
    }

    let mut page = Vec::new();
    write_page(&man, has_subcommands, &tail, &mut page).expect("rendering into memory cannot fail");
    (man.get_filename(), page)
}

/// Writes the page section by section rather than with `Man::render`, which would put its
/// VERSION section before those of `tail`. Each part repeats roff's short preamble; harmless.
fn write_page(
    man: &Man,
    has_subcommands: bool,
    tail: &Roff,
    out: &mut dyn io::Write,
) -> io::Result<()> {
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    if has_subcommands {
        man.render_subcommands_section(out)?;
    }
    tail.to_writer(out)
}

/// The FILES section: where the configuration and the state live by default.
fn files_section(roff: &mut Roff) {
    let dir = Path::new(DEFAULT_CONFIG_DIR);
    let files = [
        (
            dir.join(CONF_FILE),
            "Switches and tunables: FW_PORTKNOCK, FW_PORTKNOCK_SIMPLE, FW_PORTKNOCK_ADVANCED, \
             the time limits, FW_PORTKNOCK_STATE_DIR.",
        ),
        (
            dir.join(SIMPLE_LIST_FILE),
            "Simple-mode doors, one PROTECTED:K1,K2,... per line; a knock port may be PORT/udp.",
        ),
        (
            dir.join(ADVANCED_LIST_FILE),
            "Advanced-mode doors, one PROTECTED,KNOCKPORT,OPENSECRET,CLOSESECRET per line. It \
             holds secrets: keep it mode 0600, owned by root.",
        ),
        (
            Settings::defaults(dir).state_dir,
            "The daemon's state: the record of used one-time passwords (so a replay is refused \
             also after a restart) and its pid file.",
        ),
    ];
    roff.control("SH", ["FILES"]);
    for (path, what) in files {
        roff.control("TP", [])
            .text([bold(path.display().to_string())])
            .text([roman(what)]);
    }
}

/// An `after_help` text split by paragraph into what goes where in a manual page.
#[derive(Debug, Default, PartialEq)]
struct Extra {
    /// Prose paragraphs, for the DESCRIPTION.
    notes: Vec<String>,
    /// The text after `Exit status:`.
    exit_status: Option<String>,
    /// One command line per entry.
    examples: Vec<String>,
}

impl Extra {
    fn parse(text: &str) -> Extra {
        let mut extra = Extra::default();
        for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
            let (first, rest) = paragraph.split_once('\n').unwrap_or((paragraph, ""));
            if first == "Example:" || first == "Examples:" {
                extra.examples.extend(
                    rest.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from),
                );
            } else if let Some(status) = paragraph.strip_prefix("Exit status:") {
                extra.exit_status = Some(status.trim().to_string());
            } else {
                extra.notes.push(paragraph.to_string());
            }
        }
        extra
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_help_paragraphs_go_to_their_sections() {
        let extra = Extra::parse(
            "Some prose.\n\nExit status: 0 fine, 2 not.\n\nExamples:\n  portknock a\n  portknock b\n",
        );
        assert_eq!(
            extra,
            Extra {
                notes: vec!["Some prose.".into()],
                exit_status: Some("0 fine, 2 not.".into()),
                examples: vec!["portknock a".into(), "portknock b".into()],
            }
        );
        assert_eq!(Extra::parse(""), Extra::default());
    }

    #[test]
    fn every_command_has_a_page_with_examples() {
        let pages = man_pages();
        assert_eq!(pages[0].0, "portknock.1");
        for (name, page) in &pages {
            let page = String::from_utf8_lossy(page);
            assert!(
                page.contains(".SH EXAMPLES"),
                "{name} has no EXAMPLES section"
            );
            assert!(
                !page.contains(".SH EXTRA"),
                "{name} kept the raw after_help"
            );
        }
    }
}
