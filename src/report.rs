//! What a command that ran to its end has to say: the output for standard output, the notes
//! for standard error, and whether what it checked held. Commands build a [`Report`]; only
//! `cli` prints it and turns it into an exit status, so every command says things the same way.

use std::fmt::Display;

/// The output of a command that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// For standard output, as it is to be written (text, or the bytes of `otp --print`).
    pub out: Vec<u8>,
    /// Warnings and notes, one per line, for standard error; printed before the output.
    pub notes: Vec<String>,
    /// False when the command ran but what it checked did not hold, such as `--verify` finding
    /// the port still closed: exit status 1 with the output, and no error message.
    pub held: bool,
}

impl Default for Report {
    fn default() -> Self {
        Report {
            out: Vec::new(),
            notes: Vec::new(),
            held: true,
        }
    }
}

impl Report {
    /// An empty report of a command that held.
    pub fn new() -> Report {
        Report::default()
    }

    /// Adds one line of output.
    pub fn line(&mut self, text: impl Display) {
        self.out.extend_from_slice(text.to_string().as_bytes());
        self.out.push(b'\n');
    }

    /// Adds one note for standard error.
    pub fn note(&mut self, text: impl Display) {
        self.notes.push(text.to_string());
    }

    /// Adds the lines and notes of `other` after this report's, and holds only if both do.
    pub fn append(&mut self, other: Report) {
        self.out.extend(other.out);
        self.notes.extend(other.notes);
        self.held &= other.held;
    }
}

/// `n` and the noun, made plural unless `n` is one: `1 error`, `2 errors`.
pub fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_plural_but_for_one() {
        assert_eq!(count(0, "door"), "0 doors");
        assert_eq!(count(1, "door"), "1 door");
        assert_eq!(count(2, "simple door"), "2 simple doors");
    }

    #[test]
    fn lines_end_in_a_newline_and_notes_stay_apart() {
        let mut report = Report::new();
        report.line("one");
        report.line(2);
        report.note("careful");
        assert_eq!(report.out, b"one\n2\n");
        assert_eq!(report.notes, ["careful"]);
        assert!(report.held);
    }

    #[test]
    fn an_appended_report_that_did_not_hold_makes_the_whole_not_hold() {
        let mut first = Report::new();
        first.line("knocked");
        let mut second = Report::new();
        second.line("closed");
        second.note("n");
        second.held = false;
        first.append(second);
        assert_eq!(first.out, b"knocked\nclosed\n");
        assert_eq!(first.notes, ["n"]);
        assert!(!first.held);
        first.append(Report::new());
        assert!(!first.held, "a later report that holds does not undo it");
    }
}
