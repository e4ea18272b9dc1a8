//! Where the OTP secret comes from: the command line, a file, the environment or a prompt, in
//! that order of preference. The secret itself is never printed.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{ClientError, SECRET_ENV};
use crate::config::{self, Secret};

/// Longest first line read from a secret file; a longer one means the wrong file was given.
pub const MAX_SECRET_FILE_LINE: usize = 4096;

/// Where the secret is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource<'a> {
    /// The positional SECRET argument (`knock.sh` compatibility).
    Argument,
    /// The first line of `--secret-file`.
    File(&'a Path),
    /// The `PORTKNOCK_SECRET` environment variable.
    Environment,
    /// Asked for on the terminal, without echo.
    Prompt,
}

/// Something worth telling the user about the secret, never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretWarning {
    /// The secret was given as an argument.
    OnCommandLine,
    /// The secret file can be read by group or others.
    FileReadableByOthers {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The secret holds white space or a comma, which a portknock door's secret never does.
    UnusualCharacters,
}

impl fmt::Display for SecretWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretWarning::OnCommandLine => write!(
                f,
                "a secret on the command line can be read by other local users (ps, /proc); \
                 prefer --secret-file FILE or {SECRET_ENV}"
            ),
            SecretWarning::FileReadableByOthers { path, mode } => write!(
                f,
                "the secret file {} can be read by group or others (mode {:04o}); \
                 restrict it with chmod 600",
                path.display(),
                mode & 0o7777
            ),
            SecretWarning::UnusualCharacters => write!(
                f,
                "the secret contains white space, a comma or a non-printable character; door \
                 secrets never do (docs/behaviour.md §1.3), so check for stray characters"
            ),
        }
    }
}

/// Turns the positional SECRET into a [`Secret`] at once, so that the parsed command line (whose
/// `Debug` may be logged) never holds it in the clear.
pub fn parse_secret_argument(argument: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(argument))
}

/// Chooses where the secret comes from: the argument, else the file, else the environment,
/// else a prompt, which needs standard input to be a terminal.
pub fn choose_source(
    argument_given: bool,
    file: Option<&Path>,
    env_given: bool,
    stdin_is_terminal: bool,
) -> Result<SecretSource<'_>, ClientError> {
    match (argument_given, file, env_given, stdin_is_terminal) {
        (true, _, _, _) => Ok(SecretSource::Argument),
        (false, Some(path), _, _) => Ok(SecretSource::File(path)),
        (false, None, true, _) => Ok(SecretSource::Environment),
        (false, None, false, true) => Ok(SecretSource::Prompt),
        (false, None, false, false) => Err(ClientError::NoSecret),
    }
}

/// The first line of a secret file, without its line ending (`\n` or `\r\n`).
pub fn first_line(bytes: &[u8]) -> &[u8] {
    let line = match bytes.iter().position(|&b| b == b'\n') {
        Some(end) => &bytes[..end],
        None => bytes,
    };
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether permission bits let group or others read the file.
pub fn readable_by_others(mode: u32) -> bool {
    mode & 0o044 != 0
}

/// Whether a secret has characters a door secret cannot have (docs/behaviour.md §1.3: printable ASCII
/// without white space or commas).
pub fn has_unusual_characters(secret: &[u8]) -> bool {
    secret.iter().any(|&b| !b.is_ascii_graphic() || b == b',')
}

fn read_secret_file(path: &Path) -> Result<(Vec<u8>, Option<SecretWarning>), ClientError> {
    let file_error = |error| ClientError::SecretFile {
        path: path.to_path_buf(),
        error,
    };
    let file = File::open(path).map_err(file_error)?;
    let mode = file.metadata().map_err(file_error)?.permissions().mode();
    // Room for a byte-order mark, and one byte more than the bound tells a line that is too
    // long from one that just fits.
    let bound = config::BOM.len() + MAX_SECRET_FILE_LINE + 1;
    let mut head = Vec::with_capacity(bound);
    file.take(bound as u64)
        .read_to_end(&mut head)
        .map_err(file_error)?;
    let line = first_line(config::without_bom(&head));
    if line.len() > MAX_SECRET_FILE_LINE {
        return Err(ClientError::SecretFileLineTooLong {
            path: path.to_path_buf(),
            max: MAX_SECRET_FILE_LINE,
        });
    }
    let warning = readable_by_others(mode).then(|| SecretWarning::FileReadableByOthers {
        path: path.to_path_buf(),
        mode,
    });
    Ok((line.to_vec(), warning))
}

/// Reads the secret from `source`: `argument` is the positional SECRET, `env` the value of
/// `PORTKNOCK_SECRET`, `prompt` the question asked on the terminal. Returns the secret and what
/// to warn about.
pub fn obtain(
    source: SecretSource<'_>,
    argument: Option<&Secret>,
    env: Option<&OsStr>,
    prompt: &str,
) -> Result<(Secret, Vec<SecretWarning>), ClientError> {
    let mut warnings = Vec::new();
    let (bytes, from) = match source {
        SecretSource::Argument => (
            argument
                .map(|secret| secret.expose().to_vec())
                .unwrap_or_default(),
            "the SECRET argument".to_string(),
        ),
        SecretSource::File(path) => {
            let (bytes, warning) = read_secret_file(path)?;
            warnings.extend(warning);
            (bytes, format!("the file {}", path.display()))
        }
        SecretSource::Environment => (
            env.map(|value| value.as_bytes().to_vec())
                .unwrap_or_default(),
            SECRET_ENV.to_string(),
        ),
        SecretSource::Prompt => (
            rpassword::prompt_password(prompt)
                .map_err(ClientError::Prompt)?
                .into_bytes(),
            "the prompt".to_string(),
        ),
    };
    if bytes.is_empty() {
        return Err(ClientError::EmptySecret { from });
    }
    if has_unusual_characters(&bytes) {
        warnings.push(SecretWarning::UnusualCharacters);
    }
    Ok((Secret::new(bytes), warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn source_order_is_argument_file_env_prompt() {
        let file = Path::new("/s");
        assert_eq!(
            choose_source(true, Some(file), true, true).ok(),
            Some(SecretSource::Argument)
        );
        assert_eq!(
            choose_source(false, Some(file), true, false).ok(),
            Some(SecretSource::File(file))
        );
        assert_eq!(
            choose_source(false, None, true, false).ok(),
            Some(SecretSource::Environment)
        );
        assert_eq!(
            choose_source(false, None, false, true).ok(),
            Some(SecretSource::Prompt)
        );
        assert!(matches!(
            choose_source(false, None, false, false),
            Err(ClientError::NoSecret)
        ));
    }

    #[test]
    fn first_line_strips_line_endings_only() {
        assert_eq!(first_line(b"hipjazz\n"), b"hipjazz");
        assert_eq!(first_line(b"hipjazz\r\nsecond\n"), b"hipjazz");
        assert_eq!(first_line(b"hipjazz"), b"hipjazz");
        assert_eq!(first_line(b" padded \n"), b" padded ");
        assert_eq!(first_line(b"\nsecond"), b"");
        assert_eq!(first_line(b""), b"");
    }

    #[test]
    fn readable_by_others_looks_at_read_bits() {
        assert!(!readable_by_others(0o100600));
        assert!(!readable_by_others(0o100400));
        assert!(!readable_by_others(0o100622));
        assert!(readable_by_others(0o100640));
        assert!(readable_by_others(0o100604));
        assert!(readable_by_others(0o100644));
    }

    #[test]
    fn unusual_characters() {
        assert!(!has_unusual_characters(b"hipjazz"));
        assert!(!has_unusual_characters(b"S3cr3t!#~"));
        assert!(has_unusual_characters(b"hip jazz"));
        assert!(has_unusual_characters(b"hip,jazz"));
        assert!(has_unusual_characters(b"hipjazz\t"));
        assert!(has_unusual_characters("hipjäzz".as_bytes()));
    }

    #[test]
    fn obtain_from_argument_and_env() {
        let (secret, warnings) = obtain(
            SecretSource::Argument,
            Some(&Secret::new("hipjazz")),
            None,
            "",
        )
        .expect("argument");
        assert_eq!(secret.expose(), b"hipjazz");
        assert!(warnings.is_empty());
        let (secret, _) = obtain(
            SecretSource::Environment,
            None,
            Some(OsStr::new("elite")),
            "",
        )
        .expect("env");
        assert_eq!(secret.expose(), b"elite");
    }

    #[test]
    fn empty_secrets_are_refused_naming_the_source() {
        let err = obtain(SecretSource::Environment, None, Some(OsStr::new("")), "")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("the secret from PORTKNOCK_SECRET is empty — put the door's secret there")
        );
        assert!(matches!(
            obtain(SecretSource::Argument, Some(&Secret::new("")), None, ""),
            Err(ClientError::EmptySecret { .. })
        ));
    }

    #[test]
    fn obtain_from_file_warns_when_others_can_read() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("secret");
        let mut file = File::create(&path)?;
        file.write_all(b"hipjazz\r\nignored\n")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let (secret, warnings) =
            obtain(SecretSource::File(&path), None, None, "").map_err(std::io::Error::other)?;
        assert_eq!(secret.expose(), b"hipjazz");
        assert!(warnings.is_empty());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        let (_, warnings) =
            obtain(SecretSource::File(&path), None, None, "").map_err(std::io::Error::other)?;
        assert!(matches!(
            warnings.as_slice(),
            [SecretWarning::FileReadableByOthers { mode, .. }] if mode & 0o777 == 0o644
        ));
        Ok(())
    }

    #[test]
    fn a_byte_order_mark_before_the_secret_is_not_part_of_it() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("secret");
        std::fs::write(&path, b"\xEF\xBB\xBFhipjazz\r\n")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let (secret, warnings) =
            obtain(SecretSource::File(&path), None, None, "").map_err(std::io::Error::other)?;
        assert_eq!(secret.expose(), b"hipjazz");
        assert!(warnings.is_empty());
        // The mark does not count against the bound of the line.
        for (len, whole) in [
            (MAX_SECRET_FILE_LINE, true),
            (MAX_SECRET_FILE_LINE + 1, false),
        ] {
            let mut bytes = config::BOM.to_vec();
            bytes.resize(config::BOM.len() + len, b'a');
            std::fs::write(&path, &bytes)?;
            match obtain(SecretSource::File(&path), None, None, "") {
                Ok((secret, _)) => assert!(whole && secret.expose() == &bytes[3..]),
                Err(e) => assert!(!whole && matches!(e, ClientError::SecretFileLineTooLong { .. })),
            }
        }
        Ok(())
    }

    #[test]
    fn file_errors_name_the_file_problem() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let missing = dir.path().join("missing");
        let err = obtain(SecretSource::File(&missing), None, None, "").err();
        assert!(matches!(err, Some(ClientError::SecretFile { .. })));

        let long = dir.path().join("long");
        std::fs::write(&long, vec![b'a'; MAX_SECRET_FILE_LINE + 1])?;
        let err = obtain(SecretSource::File(&long), None, None, "").err();
        assert!(matches!(
            err,
            Some(ClientError::SecretFileLineTooLong { .. })
        ));

        let exact = dir.path().join("exact");
        std::fs::write(&exact, vec![b'a'; MAX_SECRET_FILE_LINE])?;
        assert!(obtain(SecretSource::File(&exact), None, None, "").is_ok());
        Ok(())
    }

    #[test]
    fn warnings_say_how_the_secret_is_exposed() {
        let text = SecretWarning::OnCommandLine.to_string();
        assert!(text.contains("ps, /proc"), "{text}");
        let text = SecretWarning::FileReadableByOthers {
            path: PathBuf::from("/home/u/.secret"),
            mode: 0o100644,
        }
        .to_string();
        assert!(text.contains("mode 0644"), "{text}");
    }
}
