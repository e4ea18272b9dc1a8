//! Shell completions and manual pages, generated from the command-line definition in
//! [`crate::cli`] so that they always match `--help` of the same binary: `portknock generate
//! DIR` writes them for packagers to install.
//!
//! The commands' manual pages are clap_mangen's, with one convention of this project's
//! `after_help` texts turned into proper sections: a paragraph that starts with `Example:` or
//! `Examples:` becomes EXAMPLES, one that starts with `Exit status:` becomes EXIT STATUS, and
//! any other paragraph joins the DESCRIPTION. The daemon's page is in section 8, with the
//! system's daemons. The files' page, portknock.conf(5), is written from the table of keys of
//! [`crate::config::KEYS`], the one description of each key.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::{Generator, Shell};
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

use super::{Cli, DEFAULT_CONFIG_DIR};
use crate::config::{Settings, ADVANCED_LIST_FILE, CONF_FILE, KEYS, SIMPLE_LIST_FILE};
use crate::report::Report;

/// The command name that completions complete and manual pages are named after.
const BIN: &str = "portknock";
/// The daemon's command, whose manual page goes in section 8.
const DAEMON: &str = "serve";
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
/// (`portknock.1`, one `portknock-COMMAND.1` per command but `portknock-serve.8`, and
/// `portknock.conf.5`), creating the directories, and lists the files written.
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

/// Every manual page as (file name, roff source): the program's first, then each command's,
/// then the files'.
fn man_pages() -> Vec<(String, Vec<u8>)> {
    // `help` is a subcommand for the shells, but not a page of its own.
    let mut top = Cli::command().disable_help_subcommand(true);
    top.build();
    let mut pages = vec![man_page(&top, true)];
    pages.extend(commands(&top).map(|sub| man_page(sub, false)));
    pages.push(conf_page());
    pages
}

/// The commands that have a page, in the order of the program's page (clap_mangen's).
fn commands(top: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    let mut commands: Vec<&clap::Command> = top
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .collect();
    commands.sort_by_key(|sub| (sub.get_display_order(), sub.get_name()));
    commands.into_iter()
}

/// The manual section of command `name`'s page: the daemon's is with the system's daemons.
fn section(name: &str) -> &'static str {
    if name == DAEMON {
        "8"
    } else {
        "1"
    }
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
    let page_section = if is_top { "1" } else { section(cmd.get_name()) };
    // Written here, with each command's own section, rather than by clap_mangen, which gives
    // every command the section of this page.
    let mut commands_section = Roff::new();
    if commands(&cmd).next().is_some() {
        commands_section.control("SH", ["SUBCOMMANDS"]);
        for sub in commands(&cmd) {
            let name = sub.get_name();
            commands_section
                .control("TP", [])
                .text([roman(format!("{BIN}-{name}({})", section(name)))]);
            if let Some(about) = sub.get_about() {
                commands_section.text([roman(about.to_string())]);
            }
        }
    }
    let see_also = if is_top {
        vec![("nft", "8"), ("portknock.conf", "5")]
    } else {
        vec![(BIN, "1"), ("portknock.conf", "5")]
    };
    // Without a source, a command's page footer would name the bare subcommand ("otp").
    let man = Man::new(cmd)
        .section(page_section)
        .source(format!("{BIN} {}", env!("CARGO_PKG_VERSION")));

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
    }
    see_also_section(&mut tail, &see_also);

    let mut page = Vec::new();
    write_page(&man, &commands_section, &tail, &mut page)
        .expect("rendering into memory cannot fail");
    (man.get_filename(), page)
}

/// Writes the page section by section rather than with `Man::render`, which would put its
/// VERSION section before those of `tail`. Each part repeats roff's short preamble; harmless.
fn write_page(
    man: &Man,
    commands_section: &Roff,
    tail: &Roff,
    out: &mut dyn io::Write,
) -> io::Result<()> {
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    commands_section.to_writer(out)?;
    tail.to_writer(out)
}

/// The SEE ALSO section: each page as `name(section)`.
fn see_also_section(roff: &mut Roff, pages: &[(&str, &str)]) {
    roff.control("SH", ["SEE ALSO"]);
    for (i, (name, section)) in pages.iter().enumerate() {
        let comma = if i + 1 < pages.len() { ", " } else { "" };
        roff.text([bold(*name), roman(format!("({section}){comma}"))]);
    }
}

/// portknock.conf(5): the keys of `portknock.conf`, from [`KEYS`], and the two door lists.
fn conf_page() -> (String, Vec<u8>) {
    let name = CONF_FILE;
    let mut roff = Roff::new();
    roff.control(
        "TH",
        [
            name,
            "5",
            "",
            &format!("{BIN} {}", env!("CARGO_PKG_VERSION")),
        ],
    );
    roff.control("SH", ["NAME"]).text([roman(format!(
        "{name} - switches and tunables of portknock, and its two door lists"
    ))]);
    roff.control("SH", ["SYNOPSIS"]);
    for file in [CONF_FILE, SIMPLE_LIST_FILE, ADVANCED_LIST_FILE] {
        roff.text([bold(format!("DIR/{file}"))]).control("br", []);
    }
    let paragraphs = [
        format!(
            "DIR is the configuration directory: {DEFAULT_CONFIG_DIR}, unless --config-dir DIR or \
             the environment variable PORTKNOCK_CONFIG_DIR names another. portknock check reads \
             the three files and reports every problem at once, as FILE:LINE: error or warning."
        ),
        format!(
            "{name} holds lines KEY=value or KEY=\"value\", read the way a POSIX shell that \
             sources the file would read them: single and double quotes, backslash escapes in \
             double quotes, # comments, blank lines, an optional export. Keys that do not begin \
             with FW_PORTKNOCK belong to other programs and are ignored, so the file may be part \
             of a larger settings file; one that looks like a key below in another case or with \
             a mistyped prefix draws a warning. A key that begins with FW_PORTKNOCK but is none of \
             those below is an error. A key given twice is a warning; the last value counts. An \
             empty value means the default. Booleans are yes/no, true/false or 1/0, in any case."
        ),
        "Every file may begin with a UTF-8 byte-order mark, which is ignored, and its lines may \
         end in CRLF."
            .to_string(),
    ];
    roff.control("SH", ["DESCRIPTION"]);
    for (i, paragraph) in paragraphs.iter().enumerate() {
        if i > 0 {
            roff.control("PP", []);
        }
        roff.text([roman(paragraph.as_str())]);
    }
    roff.control("SH", ["KEYS"]);
    for key in &KEYS {
        let mut doc = key.doc.chars();
        let doc: String = doc
            .next()
            .map(|first| first.to_uppercase().chain(doc).collect())
            .unwrap_or_default();
        roff.control("TP", [])
            .text([bold(key.name)])
            .text([roman(format!("{doc}. Default: {}.", key.default))]);
    }
    let lists = [
        (
            SIMPLE_LIST_FILE,
            "One door per entry, PROTECTED:K1,K2,...,Kn, such as 22:7000,9000,8000: the port it \
             protects, then its knock ports, whose order is the combination (at most 32). Knock \
             ports are TCP unless written PORT/udp. Entries are separated by line ends or white \
             space; white space next to : or , is inside the entry. A word that begins with # \
             starts a comment to the end of its line. A one-port or ascending sequence, and one \
             that portknock's documents publish, draw a warning.",
        ),
        (
            ADVANCED_LIST_FILE,
            "One door per entry, PROTECTED,KNOCKPORT,OPENSECRET,CLOSESECRET, such as \
             2222,2000,OPENSECRET,CLOSESECRET: the port it protects, the UDP port that receives \
             one-time passwords, and the two secrets, printable ASCII without white space or \
             commas, used whole as HMAC keys. A secret may be written in matching double or single \
             quotes, which are not part of it; any other quote is an error. The file holds \
             secrets: keep it mode 0600, owned by root.",
        ),
    ];
    for (file, format) in lists {
        roff.control("SH", [file.to_uppercase().as_str()])
            .text([roman(format)]);
    }
    see_also_section(
        &mut roff,
        &[
            (BIN, "1"),
            ("portknock-check", "1"),
            ("portknock-serve", "8"),
        ],
    );
    let mut page = Vec::new();
    roff.to_writer(&mut page)
        .expect("rendering into memory cannot fail");
    (format!("{name}.5"), page)
}

/// The FILES section: where the configuration and the state live by default.
fn files_section(roff: &mut Roff) {
    let dir = Path::new(DEFAULT_CONFIG_DIR);
    let files = [
        (
            dir.join(CONF_FILE),
            "Switches and tunables: FW_PORTKNOCK, FW_PORTKNOCK_SIMPLE, FW_PORTKNOCK_ADVANCED, \
             the time limits, FW_PORTKNOCK_STATE_DIR; see portknock.conf(5).",
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
        let commands = pages.iter().filter(|(name, _)| name != "portknock.conf.5");
        for (name, page) in commands {
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
