use super::*;
use std::fs;

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
    // A directory where the list should be: unreadable even for root, who reads any file.
    let dir = dir_with(&[(CONF_FILE, ALL_ON), (ADVANCED_LIST_FILE, "")]);
    let list = dir.path().join(SIMPLE_LIST_FILE);
    fs::create_dir(&list).expect("directory");
    let first = &errors(dir.path())[0];
    let prefix = format!("{}: error: cannot read it: ", list.display());
    assert!(first.starts_with(&prefix), "{first}");
    // And what a permission problem, which root never meets, says.
    let denied = unreadable(&list, &io::ErrorKind::PermissionDenied.into(), "");
    assert_eq!(
        denied.to_string(),
        format!("{prefix}permission denied; run as root or make it readable")
    );
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
