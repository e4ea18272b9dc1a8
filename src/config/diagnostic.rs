//! Problems found in the configuration, each tied to a file and, where there is one, a line.

use std::fmt;
use std::path::{Path, PathBuf};

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The configuration cannot be used.
    Error,
    /// Reported, not fatal.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem, shown as `FILE:LINE: error: message` (or `FILE: error: message` for a problem
/// of the file as a whole). Messages never contain a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the configuration names it (directory joined with the file name).
    pub file: PathBuf,
    /// 1-based line number.
    pub line: Option<usize>,
    /// Whether the problem is fatal.
    pub severity: Severity,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl Diagnostic {
    /// An error at `file`, `line`.
    pub fn error(file: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        Self::new(file, line, Severity::Error, message.into())
    }

    /// A warning at `file`, `line`.
    pub fn warning(file: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        Self::new(file, line, Severity::Warning, message.into())
    }

    fn new(file: &Path, line: Option<usize>, severity: Severity, message: String) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line,
            severity,
            message,
        }
    }

    /// Whether this is an error rather than a warning.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}: {}", self.severity, self.message)
    }
}

/// The configuration cannot be used: at least one error. Holds every problem found, warnings
/// included, so that one run shows them all; unreadable files are diagnostics too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Lines(.diagnostics))]
pub struct ConfigError {
    /// All problems, in file and line order.
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    /// How many of the diagnostics are errors.
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// How many of the diagnostics are warnings.
    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }
}

/// One diagnostic per line, no trailing newline.
struct Lines<'a>(&'a [Diagnostic]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_line() {
        let f = Path::new("/etc/portknock/simple-portknock-list");
        assert_eq!(
            Diagnostic::error(f, Some(3), "bad").to_string(),
            "/etc/portknock/simple-portknock-list:3: error: bad"
        );
        assert_eq!(
            Diagnostic::warning(f, None, "meh").to_string(),
            "/etc/portknock/simple-portknock-list: warning: meh"
        );
    }

    #[test]
    fn error_lists_every_diagnostic_on_its_own_line() {
        let f = Path::new("c");
        let err = ConfigError {
            diagnostics: vec![
                Diagnostic::error(f, Some(1), "one"),
                Diagnostic::warning(f, Some(2), "two"),
                Diagnostic::error(f, None, "three"),
            ],
        };
        assert_eq!(
            err.to_string(),
            "c:1: error: one\nc:2: warning: two\nc: error: three"
        );
        assert_eq!((err.errors(), err.warnings()), (2, 1));
    }
}
