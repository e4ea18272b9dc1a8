use super::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

/// A configuration directory with the given files.
fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    for (name, text) in files {
        fs::write(dir.path().join(name), text).expect("write a test file");
    }
    set_mode(&dir.path().join(ADVANCED_LIST_FILE), 0o600);
    dir
}

fn set_mode(path: &Path, mode: u32) {
    if path.exists() {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
}

fn errors(dir: &Path) -> Vec<String> {
    match load(dir) {
        Ok(loaded) => panic!("expected errors, got {loaded:?}"),
        Err(err) => err.diagnostics.iter().map(ToString::to_string).collect(),
    }
}

const ALL_ON: &str = "FW_PORTKNOCK=yes\nFW_PORTKNOCK_SIMPLE=yes\nFW_PORTKNOCK_ADVANCED=yes\n";

#[test]
fn loads_a_valid_directory() {
    let dir = dir_with(&[
        (CONF_FILE, ALL_ON),
        (SIMPLE_LIST_FILE, "22:7000,9000,8001\n"),
        (
            ADVANCED_LIST_FILE,
            "2222,2000,hipjazzhipjazz1,superawesome1\n",
        ),
    ]);
    let loaded = load(dir.path()).expect("valid");
    assert_eq!(loaded.warnings, []);
    let config = loaded.config;
    assert_eq!(config.dir, dir.path());
    assert_eq!(config.simple.len(), 1);
    assert_eq!(config.advanced[0].open_secret.expose(), b"hipjazzhipjazz1");
}

#[test]
fn missing_settings_file() {
    let dir = dir_with(&[]);
    let conf = dir.path().join(CONF_FILE);
    assert_eq!(
        errors(dir.path()),
        [format!(
            "{}: error: not found; create it (see examples/portknock.conf) or choose the \
             directory with --config-dir or PORTKNOCK_CONFIG_DIR",
            conf.display()
        )]
    );
}

#[test]
fn lists_are_read_only_when_engine_and_mode_are_on() {
    let broken = "this is not a door";
    for conf in [
        "FW_PORTKNOCK=no\nFW_PORTKNOCK_SIMPLE=yes\nFW_PORTKNOCK_ADVANCED=yes\n",
        "FW_PORTKNOCK=yes\nFW_PORTKNOCK_SIMPLE=no\nFW_PORTKNOCK_ADVANCED=no\n",
    ] {
        let dir = dir_with(&[
            (CONF_FILE, conf),
            (SIMPLE_LIST_FILE, broken),
            (ADVANCED_LIST_FILE, broken),
        ]);
        let config = load(dir.path()).expect("lists not read").config;
        assert!(config.simple.is_empty() && config.advanced.is_empty());
    }
}

#[test]
fn an_enabled_mode_needs_its_list() {
    let dir = dir_with(&[(CONF_FILE, ALL_ON)]);
    let p = dir.path();
    assert_eq!(
        errors(p),
        [
            format!(
                "{}: error: not found; simple mode is on (FW_PORTKNOCK_SIMPLE=yes); create the \
                 list or set FW_PORTKNOCK_SIMPLE=no",
                p.join(SIMPLE_LIST_FILE).display()
            ),
            format!(
                "{}: error: not found; advanced mode is on (FW_PORTKNOCK_ADVANCED=yes); create \
                 the list or set FW_PORTKNOCK_ADVANCED=no",
                p.join(ADVANCED_LIST_FILE).display()
            ),
        ]
    );
}

#[test]
fn relative_list_paths_are_relative_to_the_directory() {
    let dir = dir_with(&[(
        CONF_FILE,
        "FW_PORTKNOCK=yes\nFW_PORTKNOCK_SIMPLE=yes\nFW_PORTKNOCK_SIMPLE_LIST=doors\n",
    )]);
    fs::write(dir.path().join("doors"), "22:7,9,8\n").expect("write");
    let config = load(dir.path()).expect("valid").config;
    assert_eq!(config.settings.simple_list, dir.path().join("doors"));
    assert_eq!(config.simple.len(), 1);
}

#[test]
fn an_advanced_list_readable_by_others_is_a_warning() {
    let dir = dir_with(&[
        (CONF_FILE, "FW_PORTKNOCK=yes\nFW_PORTKNOCK_ADVANCED=yes\n"),
        (
            ADVANCED_LIST_FILE,
            "22,2000,hipjazzhipjazz1,superawesome1\n",
        ),
    ]);
    let list = dir.path().join(ADVANCED_LIST_FILE);
    for mode in [0o640, 0o604] {
        set_mode(&list, mode);
        let warnings: Vec<String> = load(dir.path())
            .expect("valid")
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect();
        let file = list.display();
        assert_eq!(
            warnings,
            [format!("{file}: warning: readable by group or others, but it holds secrets; run chmod 600 {file}")]
        );
    }
}

#[test]
fn an_unreadable_file_is_reported() {
    // What a permission problem, which root never meets, says.
    let list = Path::new("/etc/portknock").join(SIMPLE_LIST_FILE);
    let denied = unreadable(
        &list,
        &ReadError::Io(io::ErrorKind::PermissionDenied.into()),
        "",
    );
    assert_eq!(
        denied.to_string(),
        format!(
            "{}: error: cannot read it: permission denied; run as root or make it readable",
            list.display()
        )
    );
    let other = unreadable(&list, &ReadError::Io(io::ErrorKind::Other.into()), "");
    assert_eq!(
        other.to_string(),
        format!("{}: error: cannot read it: other error", list.display())
    );
}

/// `f` on another thread, with a bound on how long it may take: a read that blocks fails the
/// test instead of hanging it.
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // The receiver is gone only when the test has failed already.
        let _ = done.send(f());
    });
    result
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("blocked for 10 s")
}

/// [`load`], [`within`] a bound.
fn load_within(dir: &Path) -> Result<Loaded, ConfigError> {
    let dir = dir.to_path_buf();
    within(move || load(&dir))
}

/// The one error of a configuration whose simple list is `list`.
fn list_error(list: &Path) -> String {
    let dir = dir_with(&[(
        CONF_FILE,
        &format!(
            "FW_PORTKNOCK=yes\nFW_PORTKNOCK_SIMPLE=yes\nFW_PORTKNOCK_SIMPLE_LIST={}\n",
            list.display()
        ),
    )]);
    let err = load_within(dir.path()).expect_err("refused");
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    err.diagnostics[0].to_string()
}

fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status();
    assert!(made.expect("mkfifo").success());
}

/// A FIFO would block the read until someone writes to it, a device might never end it: only
/// regular files are read, whatever their name says, and nothing is read before the check.
#[test]
fn a_fifo_a_device_or_a_directory_is_no_configuration_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let not_a_file = |path: &Path, kind: &str| {
        format!(
            "{}: error: is {kind}, not a regular file; a FIFO can block a read and a device \
             never end it, so only regular files are read: put the configuration in one",
            path.display()
        )
    };
    assert_eq!(list_error(&fifo), not_a_file(&fifo, "a FIFO"));
    let zero = Path::new("/dev/zero");
    assert_eq!(list_error(zero), not_a_file(zero, "a character device"));
    assert_eq!(
        list_error(dir.path()),
        not_a_file(dir.path(), "a directory")
    );

    // portknock.conf alike.
    let conf_dir = tempfile::tempdir().expect("temporary directory");
    let conf = conf_dir.path().join(CONF_FILE);
    mkfifo(&conf);
    let err = load_within(conf_dir.path()).expect_err("refused");
    assert_eq!(err.to_string(), not_a_file(&conf, "a FIFO"));
}

/// The commands that ask the daemon find its state directory in `portknock.conf` alone, with
/// the default when it cannot be read, a FIFO included, without waiting on it.
#[test]
fn the_state_directory_is_read_from_the_settings_alone() {
    let dir = dir_with(&[(CONF_FILE, "FW_PORTKNOCK_STATE_DIR=/run/pk\n24:broken")]);
    assert_eq!(state_dir(dir.path()), Path::new("/run/pk"));
    let fifo = tempfile::tempdir().expect("temporary directory");
    mkfifo(&fifo.path().join(CONF_FILE));
    let default = Settings::defaults(fifo.path()).state_dir;
    let path = fifo.path().to_path_buf();
    let found = within(move || state_dir(&path));
    assert_eq!(found, default);
}

/// A symbolic link to a regular file is the file: administrators link configurations in.
#[test]
fn a_link_to_a_regular_file_is_read() {
    let dir = dir_with(&[(CONF_FILE, "FW_PORTKNOCK=yes\nFW_PORTKNOCK_SIMPLE=yes\n")]);
    let elsewhere = tempfile::tempdir().expect("temporary directory");
    let target = elsewhere.path().join("doors");
    fs::write(&target, "22:7000,9000,8000\n").expect("write");
    std::os::unix::fs::symlink(&target, dir.path().join(SIMPLE_LIST_FILE)).expect("symlink");
    assert_eq!(
        load_within(dir.path()).expect("valid").config.simple.len(),
        1
    );
}

/// Files are read up to a bound each, so that no file (a log written to the wrong path, a
/// sparse file) can exhaust the daemon's memory; a file at the bound is read whole.
#[test]
fn a_file_over_its_bound_is_refused_one_at_the_bound_read() {
    let conf_at_bound = |len: u64| {
        let dir = dir_with(&[(CONF_FILE, "FW_PORTKNOCK=no\n")]);
        let file = fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(CONF_FILE))
            .expect("open");
        // Comment lines up to `len` bytes: a valid file of that size.
        let filler = len - 16;
        let line = format!("#{}\n", "x".repeat(1023 - 1));
        let mut writer = io::BufWriter::new(file);
        use std::io::Write;
        for _ in 0..filler / 1024 {
            writer.write_all(line.as_bytes()).expect("write");
        }
        writer
            .write_all(&vec![b'#'; usize::try_from(filler % 1024).unwrap()])
            .expect("write");
        writer.flush().expect("flush");
        drop(writer);
        assert_eq!(fs::metadata(dir.path().join(CONF_FILE)).unwrap().len(), len);
        dir
    };
    assert!(load_within(conf_at_bound(MAX_CONF_BYTES).path()).is_ok());
    let over = conf_at_bound(MAX_CONF_BYTES + 1);
    let err = load_within(over.path()).expect_err("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: error: is larger than 1 MiB, more than any configuration needs; is it the \
             right file?",
            over.path().join(CONF_FILE).display()
        )
    );

    // A sparse list: 32 MiB and a byte of zeros, no disk space.
    let list_dir = tempfile::tempdir().expect("temporary directory");
    let list = list_dir.path().join("sparse");
    fs::File::create(&list)
        .and_then(|f| f.set_len(MAX_LIST_BYTES + 1))
        .expect("sparse file");
    assert_eq!(
        list_error(&list),
        format!(
            "{}: error: is larger than 32 MiB, more than any configuration needs; is it the \
             right file?",
            list.display()
        )
    );
    fs::File::options()
        .write(true)
        .open(&list)
        .and_then(|f| f.set_len(MAX_LIST_BYTES))
        .expect("truncate");
    // Read whole, and parsed: one word of zeros, which is no door.
    let parsed = format!("{}:1: error: missing ':'", list.display());
    assert!(list_error(&list).starts_with(&parsed), "{parsed}");
}

#[test]
fn every_problem_of_every_file_at_once_in_file_and_line_order() {
    let dir = dir_with(&[
        (CONF_FILE, "FW_PORTKNOCK_SIMPEL=yes\nFW_PORTKNOCK=yes\nFW_PORTKNOCK_SIMPLE=yes\nFW_PORTKNOCK_ADVANCED=yes\nFW_PORTKNOCK_OTP_SKEW=99\n"),
        (SIMPLE_LIST_FILE, "22:7000\n23:7000,7000\n"),
        (ADVANCED_LIST_FILE, "22,2000,samesame,samesame\n24:1,2,3\n22,2001,openopen,closeclose\n"),
    ]);
    let p = dir.path();
    let (c, s, a) = (
        p.join(CONF_FILE),
        p.join(SIMPLE_LIST_FILE),
        p.join(ADVANCED_LIST_FILE),
    );
    let (c, s, a) = (c.display(), s.display(), a.display());
    let err = load(p).expect_err("broken");
    assert_eq!((err.errors(), err.warnings()), (6, 1));
    assert_eq!(
        err.to_string(),
        [
            format!("{c}:1: error: unknown key FW_PORTKNOCK_SIMPEL; did you mean FW_PORTKNOCK_SIMPLE?"),
            format!("{c}:5: error: FW_PORTKNOCK_OTP_SKEW=\"99\": expected a whole number of minutes from 0 to 10"),
            format!("{s}:1: warning: a one-port sequence: any single packet to 7000/tcp (a port scan, say) opens the door; use three or more knock ports"),
            format!("{s}:2: error: knock port 7000/tcp is repeated at positions 1 and 2; a repeat cannot be told from a retransmission"),
            format!("{a}:1: error: the open secret and the close secret are the same, so a close could not be told from an open; choose two different secrets"),
            format!("{a}:2: error: this is a simple-mode line; advanced lines are PORT,KNOCKPORT,OPENSECRET,CLOSESECRET"),
            format!("{a}:3: error: port 22 is already protected by the simple door at {s}:1; a port can be protected by one mode only"),
        ]
        .join("\n")
    );
}

#[test]
fn the_text_parsers_for_fuzzing_report_what_load_reports() {
    let conf = "FW_PORTKNOCK_SIMPEL=yes\nFW_PORTKNOCK=yes\nFW_PORTKNOCK_SIMPLE=yes\n\
                FW_PORTKNOCK_ADVANCED=yes\nFW_PORTKNOCK_OTP_SKEW=99\n";
    let simple = "22:7000\n23:7000,7000\n25:7100,7300,7200\n";
    let advanced = "22,2000,samesame,samesame\n24:1,2,3\n26,2001,openopen,closeclose\n";
    let dir = dir_with(&[
        (CONF_FILE, conf),
        (SIMPLE_LIST_FILE, simple),
        (ADVANCED_LIST_FILE, advanced),
    ]);
    let p = dir.path();
    let (settings, mut diags) = parse_settings(p, conf);
    let (simple_doors, advanced_doors, list_diags) = parse_lists(p, Some(simple), Some(advanced));
    diags.extend(list_diags);
    assert_eq!(load(p).expect_err("broken").diagnostics, diags);
    assert!(settings.enabled && settings.simple && settings.advanced);
    assert_eq!(settings.otp_skew, 1, "a bad value keeps its default");
    assert_eq!(simple_doors.len(), 2);
    assert_eq!(advanced_doors.len(), 1);

    // A mode that is off: its list is not read, as `load` does not read it.
    let (_, _, diags) = parse_lists(p, Some("22:7000,9000,8001\n"), None);
    assert_eq!(diags, []);
}

#[test]
fn a_secret_never_shows_its_bytes() {
    let secret = Secret::new("hipjazzhipjazz");
    assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    assert_eq!(secret.expose(), b"hipjazzhipjazz");
}

#[test]
fn a_leading_byte_order_mark_is_not_part_of_any_file() {
    let files = [
        (CONF_FILE, ALL_ON),
        (SIMPLE_LIST_FILE, "22:7000,9000,8001\n"),
        (
            ADVANCED_LIST_FILE,
            "2222,2000,hipjazzhipjazz1,superawesome1\n",
        ),
    ];
    let expected = load(dir_with(&files).path()).expect("valid");
    // Each file alone, then all three, as a Windows editor saves them.
    for marked in [
        &[CONF_FILE][..],
        &[SIMPLE_LIST_FILE],
        &[ADVANCED_LIST_FILE],
        &[CONF_FILE, SIMPLE_LIST_FILE, ADVANCED_LIST_FILE],
    ] {
        let texts = files.map(|(name, text)| {
            let bom = if marked.contains(&name) {
                "\u{feff}"
            } else {
                ""
            };
            (name, format!("{bom}{text}"))
        });
        let dir = dir_with(&texts.each_ref().map(|(n, t)| (*n, t.as_str())));
        let loaded = load(dir.path()).unwrap_or_else(|e| panic!("{marked:?}: {e}"));
        assert_eq!(loaded.warnings, [], "{marked:?}");
        assert_eq!(
            (
                loaded.config.settings,
                loaded.config.simple,
                loaded.config.advanced
            ),
            (
                Settings {
                    simple_list: dir.path().join(SIMPLE_LIST_FILE),
                    advanced_list: dir.path().join(ADVANCED_LIST_FILE),
                    ..expected.config.settings.clone()
                },
                expected.config.simple.clone(),
                expected.config.advanced.clone()
            ),
            "{marked:?}"
        );
    }
    // Only a leading one: elsewhere it is a character like any other.
    assert_eq!(text(b"\xEF\xBB\xBFa\xEF\xBB\xBF"), "a\u{feff}");
    assert_eq!(text(b"\xEF\xBBa\xFF"), "\u{fffd}a\u{fffd}");
}

#[test]
fn engine_off_while_the_lists_of_modes_that_are_on_hold_doors_is_a_warning() {
    let modes_on = "FW_PORTKNOCK=no\nFW_PORTKNOCK_SIMPLE=yes\nFW_PORTKNOCK_ADVANCED=yes\n";
    let simple = "22:7000,9000,8001 23:7100,7300,7200\nbroken\n";
    let advanced = "2222,2000,openopen1,closeclose1\n";
    let dir = dir_with(&[
        (CONF_FILE, modes_on),
        (SIMPLE_LIST_FILE, simple),
        (ADVANCED_LIST_FILE, advanced),
    ]);
    let loaded = load(dir.path()).expect("valid: the lists are not checked");
    let conf = dir.path().join(CONF_FILE);
    assert_eq!(
        loaded
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [format!(
            "{}: warning: FW_PORTKNOCK is not \"yes\", so no port is protected, though the lists \
             of the modes that are on hold doors (simple: 2, advanced: 1); set \
             FW_PORTKNOCK=\"yes\" to enforce them",
            conf.display()
        )]
    );
    assert!(loaded.config.simple.is_empty() && loaded.config.advanced.is_empty());

    // Only the lists of modes that are on, and only doors count.
    for (conf, simple) in [
        (
            "FW_PORTKNOCK_SIMPLE=no\nFW_PORTKNOCK_ADVANCED=no\n",
            "22:7000,9000,8001\n",
        ),
        ("FW_PORTKNOCK_SIMPLE=yes\n", "# none yet\n"),
        ("FW_PORTKNOCK_ADVANCED=yes\n", "22:7000,9000,8001\n"),
    ] {
        let dir = dir_with(&[(CONF_FILE, conf), (SIMPLE_LIST_FILE, simple)]);
        assert_eq!(load(dir.path()).expect("valid").warnings, [], "{conf}");
    }
}
