//! `portknock check` through the real binary: exit status, stdout summary, stderr diagnostics.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn check(args: &[&str], env_dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portknock"));
    cmd.arg("check")
        .args(args)
        .env_remove("PORTKNOCK_CONFIG_DIR");
    if let Some(dir) = env_dir {
        cmd.env("PORTKNOCK_CONFIG_DIR", dir);
    }
    cmd.output().expect("run portknock")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A configuration directory with the given files, each private (0600) as the secrets need.
fn config_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    for (name, content) in files {
        let path = dir.path().join(name);
        fs::write(&path, content).expect("write a test file");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    dir
}

const ALL_ON: &str = "FW_PORTKNOCK=yes\nFW_PORTKNOCK_SIMPLE=yes\nFW_PORTKNOCK_ADVANCED=yes\n";

#[test]
fn the_example_configuration_is_valid_and_warned_about_as_published() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let out = check(&["--config-dir", &examples.to_string_lossy()], None);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("engine:        on\n"), "{stdout}");
    assert!(
        stdout.contains("     22  <- 7000/tcp 9000/tcp 8000/tcp (random order: 1 in 6)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("   2222  <- 2000/udp (open/close secrets set)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nOK: 2 simple doors, 2 advanced doors, "),
        "{stdout}"
    );
    // Every door's sequence or secrets are published; and git keeps no file modes, so the
    // advanced list may be readable by others.
    let stderr = text(&out.stderr);
    let simple = examples.join("simple-portknock-list");
    let advanced = examples.join("advanced-portknock-list");
    let doors = |file: &Path, what: &[&str]| -> Vec<String> {
        let list = fs::read_to_string(file).expect("read an example list");
        (1..)
            .zip(list.lines())
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .flat_map(|(line, _)| {
                what.iter().map(move |what| {
                    format!(
                        "{}:{line}: warning: {what} is published as an example",
                        file.display()
                    )
                })
            })
            .collect()
    };
    let mut published = doors(&simple, &["this sequence"]);
    published.extend(doors(&advanced, &["the open secret", "the close secret"]));
    assert_eq!(published.len(), 6);
    let (about_modes, lines): (Vec<&str>, Vec<&str>) = stderr
        .lines()
        .partition(|l| l.contains(": warning: readable by group or others"));
    assert!(about_modes.len() <= 1, "{stderr}");
    assert_eq!(lines.len(), published.len(), "{stderr}");
    for (line, expected) in lines.iter().zip(&published) {
        assert!(
            line.starts_with(expected.as_str()),
            "{line}\nexpected {expected}"
        );
    }
}

#[test]
fn broken_files_are_all_reported_with_file_and_line() {
    let dir = config_dir(&[
        (
            "portknock.conf",
            &format!("{ALL_ON}FW_PORTKNOCK_SIMPEL=no\n"),
        ),
        ("simple-portknock-list", "# doors\n22:7000,7000,8000\n"),
        (
            "advanced-portknock-list",
            "22:7000,9000,8000\n23,2000,open-door,open-door\n",
        ),
    ]);
    let out = check(&["--config-dir", &dir.path().to_string_lossy()], None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    let d = dir.path().display();
    assert_eq!(
        text(&out.stderr),
        format!(
            "{d}/portknock.conf:4: error: unknown key FW_PORTKNOCK_SIMPEL; did you mean FW_PORTKNOCK_SIMPLE?\n\
             {d}/simple-portknock-list:2: error: knock port 7000/tcp is repeated at positions 1 and 2; a repeat cannot be told from a retransmission\n\
             {d}/advanced-portknock-list:1: error: this is a simple-mode line; advanced lines are PORT,KNOCKPORT,OPENSECRET,CLOSESECRET\n\
             {d}/advanced-portknock-list:2: error: the open secret and the close secret are the same, so a close could not be told from an open; choose two different secrets\n\
             4 errors, 0 warnings: nothing was changed; fix the errors above, then run portknock check again\n"
        )
    );
}

#[test]
fn a_port_in_both_lists_points_at_the_other_file() {
    let dir = config_dir(&[
        ("portknock.conf", ALL_ON),
        ("simple-portknock-list", "22:7000,9000,8001\n"),
        (
            "advanced-portknock-list",
            "# secrets\n22,2000,jazzhip,superawesome1\n",
        ),
    ]);
    let out = check(&["--config-dir", &dir.path().to_string_lossy()], None);
    assert_eq!(out.status.code(), Some(2));
    let d = dir.path().display();
    assert_eq!(
        text(&out.stderr),
        format!(
            "{d}/advanced-portknock-list:2: warning: the open secret is shorter than 8 characters; one captured knock lets anyone guess a short secret offline\n\
             {d}/advanced-portknock-list:2: error: port 22 is already protected by the simple door at {d}/simple-portknock-list:1; a port can be protected by one mode only\n\
             1 error, 1 warning: nothing was changed; fix the errors above, then run portknock check again\n"
        )
    );
}

#[test]
fn the_environment_variable_chooses_the_directory() {
    let dir = config_dir(&[("portknock.conf", "FW_PORTKNOCK=no\n")]);
    let out = check(&[], Some(dir.path()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("configuration: {}\n", dir.path().display())),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("OK: 0 simple doors, 0 advanced doors, 0 warnings\n"),
        "{stdout}"
    );
}

#[test]
fn a_missing_directory_says_what_to_do() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let missing = dir.path().join("nope");
    let out = check(&["--config-dir", &missing.to_string_lossy()], None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "{}/portknock.conf: error: not found; create it (see examples/portknock.conf) or choose the directory with --config-dir or PORTKNOCK_CONFIG_DIR\n\
             1 error, 0 warnings: nothing was changed; fix the errors above, then run portknock check again\n",
            missing.display()
        )
    );
}

#[test]
fn warnings_alone_exit_zero() {
    let dir = config_dir(&[
        (
            "portknock.conf",
            "FW_PORTKNOCK=yes\nFW_PORTKNOCK_SIMPLE=yes\n",
        ),
        ("simple-portknock-list", "22:7000,8000,9000\n"),
    ]);
    let out = check(&["--config-dir", &dir.path().to_string_lossy()], None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stderr),
        format!(
            "{}/simple-portknock-list:1: warning: the sequence is strictly ascending, so a sequential port scan walks it; put the knock ports out of order\n",
            dir.path().display()
        )
    );
    assert!(text(&out.stdout).ends_with("OK: 1 simple door, 0 advanced doors, 1 warning\n"));
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let examples = examples.to_str().expect("utf-8 path");
    for args in [
        &["check", "--config-dir", examples][..],
        &["apply", "--dry-run", "--config-dir", examples],
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_portknock"))
            .args(args)
            .stdout(writer)
            .output()
            .expect("run portknock");
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(13),
            "{args:?} ends by SIGPIPE, as `yes | head` does"
        );
    }
}

#[test]
fn apply_dry_run_needs_no_privilege() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let examples = examples.to_str().expect("utf-8 path");
    let bin = env!("CARGO_BIN_EXE_portknock");
    // As root (as in CI), run it as nobody with no capability, as an unprivileged user would.
    let mut command = if nix::unistd::geteuid().is_root() {
        let mut setpriv = Command::new("setpriv");
        setpriv.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            bin,
        ]);
        setpriv
    } else {
        Command::new(bin)
    };
    let out = command
        .args(["apply", "--dry-run", "--config-dir", examples])
        .output()
        .expect("run portknock");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let batch: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON batch");
    assert!(
        batch["nftables"].as_array().is_some_and(|c| !c.is_empty()),
        "{batch}"
    );
}

#[test]
fn files_saved_with_a_byte_order_mark_check_as_without() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let names = [
        "portknock.conf",
        "simple-portknock-list",
        "advanced-portknock-list",
    ];
    let read = |name: &str| fs::read_to_string(examples.join(name)).expect("read an example");
    let plain = config_dir(
        &names
            .map(|n| (n, read(n)))
            .each_ref()
            .map(|(n, t)| (*n, t.as_str())),
    );
    let marked = names.map(|n| (n, format!("\u{feff}{}", read(n))));
    let marked = config_dir(&marked.each_ref().map(|(n, t)| (*n, t.as_str())));
    let run = |dir: &Path| {
        let out = check(&["--config-dir", &dir.to_string_lossy()], None);
        let shown = |bytes: &[u8]| text(bytes).replace(&*dir.to_string_lossy(), "DIR");
        (out.status.code(), shown(&out.stdout), shown(&out.stderr))
    };
    let expected = run(plain.path());
    assert_eq!(expected.0, Some(0), "{expected:?}");
    assert_eq!(run(marked.path()), expected);
}
