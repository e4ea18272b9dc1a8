//! The Debian package that `packaging/build-deb` makes: the configuration it ships, lintian's
//! verdict, and its life on a Debian system — installed, upgraded from the previous version
//! under a running daemon, removed and purged in a throwaway Debian root booted with systemd,
//! then removed from a chroot.
//!
//! Safety (docs/behaviour.md §6): the package is never installed on this machine. The throwaway root is
//! made by mmdebstrap from Debian's packages (which needs the Debian mirror) in a directory of
//! its own. Everything that then runs in it — systemd, the daemon, dpkg and the maintainer
//! scripts, which run `portknock remove` — runs in a network namespace made for the test,
//! never the host's, and the test checks that the host's ruleset and interfaces are the same
//! afterwards. Mounts are made only in mount namespaces that end with their command.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use clap::CommandFactory;
use common::{find_on_path, output_within_for, require_root, skipped, wait_until, Netns, BIN};

/// Longest a build of the package may take (it compiles the `dist` profile when it is stale).
const BUILD_BOUND: Duration = Duration::from_secs(30 * 60);
/// Longest mmdebstrap may take to fetch and install the throwaway root.
const ROOT_BOUND: Duration = Duration::from_secs(10 * 60);
/// Longest one command in the throwaway root may take (dpkg with its maintainer scripts).
const STEP_BOUND: Duration = Duration::from_secs(120);
/// The Debian release of the throwaway root: the one .ci/run's machine runs, whose C library
/// the binary is linked against.
const SUITE: &str = "bookworm";
/// Where the units of packages go on Debian since the merge of /usr.
const UNIT: &str = "usr/lib/systemd/system/portknock.service";
/// The source unit, which the package ships with only the binary's path changed.
const SOURCE_UNIT: &str = "packaging/portknock.service";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The output of a command that must have succeeded; `what` names it in the failure.
fn succeeded(out: &Output, what: &str) -> String {
    let all = text(out);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{all}",
        out.status
    );
    all
}

/// Whether `program` is installed. Where it is not, the test is skipped loudly; on CI (`CI`
/// set, as it is for .ci/run), which installs every one of them, that is a failure instead.
fn have(program: &str, install: &str) -> bool {
    if find_on_path(program).is_some() {
        return true;
    }
    let why = format!("{program} is not installed ({install})");
    assert!(
        std::env::var_os("CI").is_none(),
        "{why}: .ci/run installs it, so CI must have it"
    );
    skipped(&why);
    false
}

fn have_cargo_deb() -> bool {
    have("cargo-deb", "cargo install --locked cargo-deb")
}

// ---------------------------------------------------------------------------------------------
// The packages: this version, and one of the version before, from the same build

struct Packages {
    current: PathBuf,
    previous: PathBuf,
}

/// A version that dpkg sorts before this one (`~` sorts before anything), for the upgrade.
fn previous_version() -> String {
    format!("{}~previous-1", env!("CARGO_PKG_VERSION"))
}

/// Both packages, built once per run of this file by `packaging/build-deb`, the one command
/// the README gives.
fn packages() -> &'static Packages {
    static PACKAGES: OnceLock<Packages> = OnceLock::new();
    PACKAGES.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deb-package");
        let _ = fs::remove_dir_all(&out);
        Packages {
            current: build_deb(&out.join("current"), &[]),
            previous: build_deb(
                &out.join("previous"),
                &["--deb-version", &previous_version()],
            ),
        }
    })
}

/// Runs `packaging/build-deb --output DIR ARGS` and returns the one package it wrote.
fn build_deb(dir: &Path, args: &[&str]) -> PathBuf {
    fs::create_dir_all(dir).expect("package directory");
    let mut cmd = Command::new(repo_file("packaging/build-deb"));
    cmd.arg("--output").arg(dir).args(args);
    succeeded(&output_within_for(cmd, BUILD_BOUND), "packaging/build-deb");
    let debs: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read the package directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package in {}: {debs:?}", dir.display());
    debs.into_iter().next().expect("one package")
}

/// The field `name` of the package `deb`.
fn field_of(deb: &Path, name: &str) -> String {
    let out = Command::new("dpkg-deb")
        .arg("--field")
        .arg(deb)
        .arg(name)
        .output()
        .expect("dpkg-deb");
    succeeded(&out, "dpkg-deb --field").trim().to_string()
}

/// The names of the packages that `deb` depends on, versions left out.
fn dependencies_of(deb: &Path) -> Vec<String> {
    field_of(deb, "Depends")
        .split(',')
        .filter_map(|dependency| dependency.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// What the package ships, checked without building it

/// The `FW_PORTKNOCK*` keys that `conf` sets, commented out or not.
fn keys(conf: &str) -> BTreeSet<String> {
    conf.lines()
        .map(|line| line.trim_start_matches('#'))
        .filter(|line| line.starts_with("FW_PORTKNOCK"))
        .filter_map(|line| line.split_once('=').map(|(key, _)| key.to_string()))
        .collect()
}

/// A configuration directory holding the files the package installs in /etc/portknock.
fn shipped_config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, mode) in [
        ("portknock.conf", 0o644),
        ("simple-portknock-list", 0o644),
        ("advanced-portknock-list", 0o600),
    ] {
        let to = dir.path().join(file);
        fs::copy(repo_file(&format!("packaging/etc/{file}")), &to).expect("copy");
        fs::set_permissions(&to, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    dir
}

fn check(dir: &Path) -> Output {
    Command::new(BIN)
        .args(["check", "--config-dir"])
        .arg(dir)
        .output()
        .expect("run portknock check")
}

#[test]
fn the_shipped_configuration_protects_nothing_and_documents_every_default() {
    let dir = shipped_config();
    let out = check(dir.path());
    let all = succeeded(&out, "portknock check of the shipped configuration");
    assert!(
        all.contains("engine:        off") && out.stderr.is_empty(),
        "the engine is off, without a warning:\n{all}"
    );

    // Every key the examples document is there, and each commented value is the default.
    let conf = fs::read_to_string(repo_file("packaging/etc/portknock.conf")).expect("read");
    let example = fs::read_to_string(repo_file("examples/portknock.conf")).expect("read");
    assert_eq!(
        keys(&conf),
        keys(&example),
        "the keys of packaging/etc/portknock.conf"
    );
    let uncommented: String = conf
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(setting) if setting.starts_with("FW_PORTKNOCK") => setting,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let etc = Path::new("/etc/portknock");
    let (settings, problems) = portknock::config::parse_settings(etc, &uncommented);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(settings, portknock::config::Settings::defaults(etc));

    // The lists hold no door: with every switch on, that is all `check` finds wrong.
    let on = conf
        .replace("FW_PORTKNOCK=\"no\"", "FW_PORTKNOCK=\"yes\"")
        .replace("#FW_PORTKNOCK_SIMPLE=\"no\"", "FW_PORTKNOCK_SIMPLE=\"yes\"")
        .replace(
            "#FW_PORTKNOCK_ADVANCED=\"no\"",
            "FW_PORTKNOCK_ADVANCED=\"yes\"",
        );
    fs::write(dir.path().join("portknock.conf"), on).expect("write");
    let out = check(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(": error:")).collect();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        errors.len() == 2 && errors.iter().all(|e| e.contains("has no door")),
        "{stderr}"
    );
}

#[test]
fn the_changelog_is_of_this_version() {
    let changelog = fs::read_to_string(repo_file("packaging/changelog")).expect("read");
    let first = changelog.lines().next().unwrap_or_default();
    let expected = format!("portknock ({}-", env!("CARGO_PKG_VERSION"));
    assert!(
        first.starts_with(&expected),
        "packaging/changelog starts with {first:?}: add an entry for this version"
    );
}

// ---------------------------------------------------------------------------------------------
// lintian

const OVERRIDES: &str = "packaging/lintian-overrides";

#[test]
fn lintian_finds_no_error_and_every_warning_is_overridden_with_its_reason() {
    // Each override comes right after the comment that gives its reason.
    let overrides = fs::read_to_string(repo_file(OVERRIDES)).expect("read the overrides");
    let mut reason = false;
    for line in overrides.lines().filter(|l| !l.trim().is_empty()) {
        let is_comment = line.starts_with('#');
        assert!(
            is_comment || reason,
            "{OVERRIDES}: no reason above {line:?}"
        );
        reason = is_comment;
    }

    if !have_cargo_deb() || !have("lintian", "apt-get install lintian") {
        return;
    }
    let mut cmd = Command::new("lintian");
    cmd.args(["--display-info", "--fail-on", "error,warning"])
        .arg(&packages().current);
    let out = output_within_for(cmd, Duration::from_secs(600));
    let report = text(&out);
    let findings: Vec<&str> = report
        .lines()
        .filter(|l| {
            l.starts_with("E: ")
                || l.starts_with("W: ")
                || l.contains("unused-override")
                || l.contains("mismatched-override")
        })
        .collect();
    assert!(
        out.status.success() && findings.is_empty(),
        "lintian ({}): fix these, or override them in {OVERRIDES} with a reason:\n{report}",
        out.status
    );
}

// ---------------------------------------------------------------------------------------------
// The throwaway Debian root

/// The directory of the throwaway root, deleted on drop unless something is still mounted
/// under it: deleting through a mounted /proc or /dev would reach into the host's.
struct Throwaway {
    dir: Option<tempfile::TempDir>,
}

impl Throwaway {
    fn root(&self) -> PathBuf {
        self.dir.as_ref().expect("not dropped").path().join("root")
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let top = dir.path().display().to_string();
        let inside = format!("{top}/");
        // What cannot be read counts as mounted.
        let mounted = fs::read_to_string("/proc/self/mountinfo").map_or(true, |mounts| {
            mounts
                .lines()
                .filter_map(|line| line.split(' ').nth(4))
                .any(|point| point == top || point.starts_with(&inside))
        });
        if mounted {
            let kept = dir.keep();
            eprintln!(
                "\n*** the throwaway root {} is left in place: something is mounted under it ***\n",
                kept.display()
            );
        }
    }
}

/// Debian `SUITE`, minimal, with systemd (to boot the root) and the packages `deb` depends on
/// (dpkg installs no dependency itself), made by mmdebstrap. Its own mount and PID namespaces
/// bound what it mounts and starts to its run, also when it is killed. It runs in the host's
/// network namespace, as it downloads; the maintainer scripts of Debian's packages start
/// nothing in a root that is not booted, and mmdebstrap also blocks service starts meanwhile.
fn make_root(deb: &Path) -> Throwaway {
    let throwaway = Throwaway {
        dir: Some(tempfile::tempdir().expect("tempdir")),
    };
    let include = format!("--include=systemd,{}", dependencies_of(deb).join(","));
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--pid", "--fork", "--kill-child", "--mount-proc"])
        .args(["mmdebstrap", "--variant=minbase", &include, SUITE])
        .arg(throwaway.root());
    let out = output_within_for(cmd, ROOT_BOUND);
    assert!(
        out.status.success(),
        "mmdebstrap could not make a throwaway Debian {SUITE} root ({}); it fetches Debian's \
         packages from the mirror, which must be reachable:\n{}",
        out.status,
        text(&out)
    );
    throwaway
}

/// The root booted by systemd-nspawn in `netns`: its own systemd as PID 1, its own mount and
/// PID namespaces, the test's network namespace. Shut down on drop.
struct Container {
    nspawn: Child,
    /// The container's PID 1 as the host sees it, for nsenter.
    init: u32,
}

impl Container {
    fn boot(root: &Path, netns: &Netns, log_path: &Path) -> Container {
        let log = fs::File::create(log_path).expect("nspawn log");
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "--quiet",
                // This machine may have no systemd of its own to register with or run under.
                "--register=no",
                "--keep-unit",
                "--link-journal=no",
                "--console=passive",
                // The daemon's only capability, which nspawn grants by itself only with a
                // network namespace of its own making.
                "--capability=CAP_NET_ADMIN",
            ])
            .arg(format!(
                "--network-namespace-path=/var/run/netns/{}",
                netns.name
            ))
            .arg("--directory")
            .arg(root)
            .arg("--boot")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("run systemd-nspawn");
        let parent = nspawn.id();
        let mut container = Container { nspawn, init: 0 };
        wait_until(Duration::from_secs(30), || {
            container.init = children(parent)
                .into_iter()
                .find(|pid| {
                    fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|comm| comm.trim() == "systemd")
                })
                .unwrap_or(0);
            container.init != 0
        })
        .expect("systemd-nspawn started no systemd within 30 s");
        // systemctl needs the manager's socket, which comes a moment after systemd starts.
        let out = container.sh(
            "timeout 60 sh -c 'until [ -S /run/systemd/private ]; do sleep 0.1; done
                               systemctl is-system-running --wait'",
        );
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            state == "running" || state == "degraded",
            "the throwaway root did not boot ({state}): {}\nsystemd-nspawn:\n{}",
            text(&out),
            fs::read_to_string(log_path).unwrap_or_default()
        );
        container
    }

    /// Runs `script` with sh as root inside the container (a clean environment, no terminal).
    fn sh(&self, script: &str) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--target", &self.init.to_string()])
            .args([
                "--mount", "--uts", "--ipc", "--net", "--pid", "--root", "--wd",
            ])
            .args([
                "--",
                "/usr/bin/env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            ])
            .args(["LANG=C.UTF-8", "HOME=/root", "/bin/sh", "-c", script])
            .stdin(Stdio::null());
        output_within_for(cmd, STEP_BOUND)
    }

    /// [`Container::sh`] that must succeed; its output.
    fn ok(&self, script: &str) -> String {
        succeeded(&self.sh(script), script)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM makes nspawn power the container off cleanly; SIGKILL if that hangs (the
        // network namespace's drop then ends whatever is left in it).
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.nspawn.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let stopped = wait_until(Duration::from_secs(30), || {
            self.nspawn.try_wait().is_ok_and(|s| s.is_some())
        });
        if stopped.is_none() {
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            // The parent is the second field after the command name, which is in parentheses.
            fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split(' ').nth(1))
                    .is_some_and(|ppid| ppid == pid.to_string())
            })
        })
        .collect()
}

/// What may show that the host was touched: its ruleset and its interfaces.
fn host_snapshot() -> String {
    let mut snapshot = String::new();
    for args in [["nft", "list", "ruleset"], ["ip", "-o", "link"]] {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .expect("snapshot");
        snapshot.push_str(&succeeded(&out, &args.join(" ")));
    }
    snapshot
}

// ---------------------------------------------------------------------------------------------
// What an installed package must look like

fn subcommands() -> Vec<String> {
    portknock::cli::Cli::command()
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect()
}

/// Every file the package installs, with its mode; all belong to root.
fn expected_files() -> Vec<(String, u32)> {
    let mut files: Vec<(String, u32)> = [
        ("usr/sbin/portknock", 0o755),
        (UNIT, 0o644),
        ("etc/portknock/portknock.conf", 0o644),
        ("etc/portknock/simple-portknock-list", 0o644),
        ("etc/portknock/advanced-portknock-list", 0o600),
        ("usr/share/bash-completion/completions/portknock", 0o644),
        ("usr/share/zsh/vendor-completions/_portknock", 0o644),
        ("usr/share/fish/vendor_completions.d/portknock.fish", 0o644),
        ("usr/share/doc/portknock/copyright", 0o644),
        ("usr/share/doc/portknock/changelog.Debian.gz", 0o644),
        ("usr/share/doc/portknock/README.md", 0o644),
        ("usr/share/lintian/overrides/portknock", 0o644),
        ("usr/share/man/man1/portknock.1.gz", 0o644),
        ("usr/share/man/man5/portknock.conf.5.gz", 0o644),
    ]
    .into_iter()
    .map(|(path, mode)| (path.to_string(), mode))
    .collect();
    // The daemon's page is with the system's daemons, in section 8.
    for sub in subcommands() {
        let section = if sub == "serve" { 8 } else { 1 };
        files.push((
            format!("usr/share/man/man{section}/portknock-{sub}.{section}.gz"),
            0o644,
        ));
    }
    files
}

/// The package's files are there with their modes, and dpkg lists no other; the unit is the
/// source's, hardening and all, with the binary's Debian path.
fn assert_installed(root: &Path, container: &Container) {
    for (path, mode) in expected_files() {
        let meta = fs::symlink_metadata(root.join(&path))
            .unwrap_or_else(|e| panic!("/{path} is not installed: {e}"));
        assert!(meta.is_file(), "/{path} is not a regular file");
        assert_eq!(meta.mode() & 0o7777, mode, "mode of /{path}");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "owner of /{path}");
    }
    let listed: BTreeSet<String> = container
        .ok("dpkg -L portknock")
        .lines()
        .filter(|path| root.join(path.trim_start_matches('/')).is_file())
        .map(|path| path.trim_start_matches('/').to_string())
        .collect();
    let expected: BTreeSet<String> = expected_files().into_iter().map(|(p, _)| p).collect();
    assert_eq!(listed, expected, "the files dpkg lists");

    let source = fs::read_to_string(repo_file(SOURCE_UNIT)).expect("read the unit");
    let installed = fs::read_to_string(root.join(UNIT)).expect("read the installed unit");
    assert_eq!(
        installed,
        source.replace("/usr/local/sbin/portknock", "/usr/sbin/portknock"),
        "the installed unit is {SOURCE_UNIT} with the binary in /usr/sbin"
    );
    let conffiles = container.ok("dpkg-query --show --showformat='${Conffiles}' portknock");
    for file in [
        "portknock.conf",
        "simple-portknock-list",
        "advanced-portknock-list",
    ] {
        assert!(
            conffiles.contains(&format!("/etc/portknock/{file} ")),
            "{file} is not a conffile:\n{conffiles}"
        );
    }
    // Only the conffiles may differ from what the package shipped (once they are edited).
    let verify = container.ok("dpkg --verify portknock");
    assert!(
        verify.lines().all(|l| l.contains(" c /etc/portknock/")),
        "dpkg --verify:\n{verify}"
    );

    // The manual pages are checked as files above: the root has no man.
    let analysis = container.ok(&format!("systemd-analyze verify --man=no /{UNIT} 2>&1"));
    let ours: Vec<&str> = analysis
        .lines()
        .filter(|l| l.contains("portknock"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify:\n{analysis}");
}

fn status_of(container: &Container) -> String {
    container.ok("dpkg-query --show --showformat='${db:Status-Abbrev}${Version}' portknock")
}

/// Whether portknock's table is in the kernel, as the root sees it (the test's namespace).
fn table_in_kernel(container: &Container) -> bool {
    container
        .ok("nft list tables")
        .contains("table inet portknock")
}

/// The (source, port) of the grants in force.
fn grants(container: &Container) -> Vec<(String, u64)> {
    let json: serde_json::Value =
        serde_json::from_str(&container.ok("portknock status --json")).expect("JSON");
    json["grants"]
        .as_array()
        .expect("grants")
        .iter()
        .map(|g| {
            (
                g["source"].as_str().expect("source").to_string(),
                g["port"].as_u64().expect("port"),
            )
        })
        .collect()
}

/// Files under `dir` whose name mentions portknock, symbolic links not followed.
fn named_portknock(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().contains("portknock") {
            found.push(path.clone());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            named_portknock(&path, found);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The package's life

/// A file of the administrator's own in /etc/portknock, which a purge removes too.
const SECRET_FILE: &str = "client-secret";

/// The address the administrator lets in by hand, from the test networks' range (docs/behaviour.md §6).
const VISITOR: &str = "198.18.0.9";

#[test]
fn the_package_installs_upgrades_removes_and_purges_cleanly() {
    if !require_root()
        || !have_cargo_deb()
        || !have("mmdebstrap", "apt-get install mmdebstrap")
        || !have("systemd-nspawn", "apt-get install systemd-container")
    {
        return;
    }
    let packages = packages();
    let version = |deb: &Path| field_of(deb, "Version");
    let (previous, current) = (version(&packages.previous), version(&packages.current));
    assert_eq!(previous, previous_version());
    let newer = Command::new("dpkg")
        .args(["--compare-versions", &current, "gt", &previous])
        .status()
        .expect("dpkg --compare-versions");
    assert!(newer.success(), "{current} is not newer than {previous}");

    let host_before = host_snapshot();
    let throwaway = make_root(&packages.current);
    let root = throwaway.root();
    for (deb, name) in [
        (&packages.previous, "previous"),
        (&packages.current, "current"),
    ] {
        fs::copy(deb, root.join(format!("root/{name}.deb"))).expect("copy the package in");
    }
    let netns = Netns::new("pkdeb", "root").expect("network namespace");
    let log = throwaway.root().with_file_name("nspawn.log");
    {
        let container = Container::boot(&root, &netns, &log);
        installed_the_daemon_runs_and_enforces_nothing(&root, &container, &previous);
        turned_on_by_the_administrator(&root, &container);
        upgraded_under_the_running_daemon(&root, &container, &current);
        removed_with_the_table(&root, &container);
        purged_to_nothing(&root, &container);
    }
    removed_from_a_chroot_leaves_the_table(&root, &netns);
    drop(netns);
    assert_eq!(
        host_before,
        host_snapshot(),
        "the host's ruleset or interfaces changed"
    );
}

fn installed_the_daemon_runs_and_enforces_nothing(root: &Path, c: &Container, version: &str) {
    c.ok("dpkg --install /root/previous.deb");
    assert_eq!(status_of(c), format!("ii {version}"));
    assert_installed(root, c);
    // Enabled and started like any Debian service, and with the engine off it enforces nothing.
    assert_eq!(
        c.ok("systemctl is-enabled portknock.service").trim(),
        "enabled"
    );
    assert_eq!(
        c.ok("systemctl is-active portknock.service").trim(),
        "active"
    );
    assert!(!table_in_kernel(c), "installing put a table in the kernel");
    let check = c.ok("portknock check");
    assert!(check.contains("engine:        off"), "{check}");
    // The package ships no state directory: the unit's StateDirectory= makes it.
    let state = fs::metadata(root.join("var/lib/portknock")).expect("/var/lib/portknock");
    assert_eq!(state.mode() & 0o7777, 0o700, "mode of /var/lib/portknock");
}

/// The conffiles as the administrator edits them: the engine and simple mode on, one door.
fn edited_conffiles(root: &Path) -> (String, String) {
    let etc = root.join("etc/portknock");
    let conf = fs::read_to_string(etc.join("portknock.conf"))
        .expect("read")
        .replace("FW_PORTKNOCK=\"no\"", "FW_PORTKNOCK=\"yes\"")
        .replace("#FW_PORTKNOCK_SIMPLE=\"no\"", "FW_PORTKNOCK_SIMPLE=\"yes\"");
    // Not the README's sequence, which check and status would warn about as published.
    let simple = fs::read_to_string(etc.join("simple-portknock-list")).expect("read")
        + "22:7100,9300,8200\n";
    (conf, simple)
}

fn turned_on_by_the_administrator(root: &Path, c: &Container) {
    let (conf, simple) = edited_conffiles(root);
    let etc = root.join("etc/portknock");
    fs::write(etc.join("portknock.conf"), conf).expect("edit portknock.conf");
    fs::write(etc.join("simple-portknock-list"), simple).expect("edit the simple list");
    // A file the package does not know, as `portknock otp --secret-file` would read.
    fs::write(etc.join(SECRET_FILE), "an-open-secret\n").expect("write a secret file");
    // apply returns once the running daemon enforces the new doors.
    let applied = c.ok("portknock apply");
    assert!(
        applied.contains("applied: 1 simple door") && applied.contains("the daemon enforces"),
        "{applied}"
    );
    c.ok(&format!("portknock open {VISITOR} 22 --for 3600"));
    assert!(table_in_kernel(c));
    assert_eq!(grants(c), vec![(VISITOR.to_string(), 22)]);
}

fn upgraded_under_the_running_daemon(root: &Path, c: &Container, version: &str) {
    let (conf, simple) = {
        let etc = root.join("etc/portknock");
        (
            fs::read_to_string(etc.join("portknock.conf")).expect("read"),
            fs::read_to_string(etc.join("simple-portknock-list")).expect("read"),
        )
    };
    // A watcher lists the tables over and over while dpkg upgrades: the table must be there
    // at every look, also between the old daemon's exit and the new one's start.
    let out = c.ok(
        "pid() { systemctl show --property=MainPID --value portknock.service; }
         before=$(pid)
         ( looks=0
           while [ ! -e /run/upgraded ]; do
               looks=$((looks + 1))
               nft list table inet portknock >/dev/null 2>&1 || echo 'table absent'
           done
           echo \"looks: $looks\" ) >/run/watch 2>&1 &
         dpkg --install /root/current.deb; status=$?
         touch /run/upgraded; wait
         after=$(pid)
         echo \"daemon: $before -> $after\"
         cat /run/watch
         exit $status",
    );
    assert!(
        !out.contains("table absent"),
        "the table left the kernel:\n{out}"
    );
    let looks: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("looks: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(looks > 0, "the watcher never looked:\n{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("daemon: "))
        .expect("pids");
    let (before, after) = line["daemon: ".len()..].split_once(" -> ").expect("pids");
    assert!(
        before != "0" && after != "0" && before != after,
        "the daemon was not restarted: {line}"
    );
    // A simple service counts as started once forked, before systemd has run the binary.
    let new_binary = wait_until(Duration::from_secs(10), || {
        c.ok(&format!("readlink /proc/{after}/exe")).trim() == "/usr/sbin/portknock"
    });
    assert!(
        new_binary.is_some(),
        "pid {after} does not run /usr/sbin/portknock"
    );

    assert_eq!(status_of(c), format!("ii {version}"));
    let etc = root.join("etc/portknock");
    assert_eq!(
        fs::read_to_string(etc.join("portknock.conf")).expect("read"),
        conf
    );
    assert_eq!(
        fs::read_to_string(etc.join("simple-portknock-list")).expect("read"),
        simple
    );
    let mut leftovers = Vec::new();
    for entry in fs::read_dir(&etc).expect("read /etc/portknock").flatten() {
        if entry.file_name().to_string_lossy().contains(".dpkg-") {
            leftovers.push(entry.path());
        }
    }
    assert!(leftovers.is_empty(), "dpkg left {leftovers:?}");
    assert!(etc.join(SECRET_FILE).exists());
    assert_installed(root, c);
    assert_eq!(
        grants(c),
        vec![(VISITOR.to_string(), 22)],
        "the grant survived"
    );
    let check = c.ok("portknock check");
    assert!(check.contains("engine:        on"), "{check}");
    let journal = c.ok("journalctl --unit=portknock.service --output=cat");
    assert!(journal.contains("the rules stay in force"), "{journal}");
}

fn removed_with_the_table(root: &Path, c: &Container) {
    let out = c.ok("dpkg --remove portknock");
    assert!(
        out.contains("table inet portknock removed") && out.contains("removed with the daemon"),
        "remove did not say that it took the table away, and why:\n{out}"
    );
    assert!(!table_in_kernel(c), "the table is still in the kernel");
    let active = c.sh("systemctl is-active portknock.service");
    assert_eq!(String::from_utf8_lossy(&active.stdout).trim(), "inactive");
    assert!(!root.join("usr/sbin/portknock").exists());
    assert!(
        root.join("etc/portknock/portknock.conf").exists(),
        "conffiles stay until purge"
    );
    assert!(status_of(c).starts_with("rc "), "{}", status_of(c));
}

fn purged_to_nothing(root: &Path, c: &Container) {
    c.ok("dpkg --purge portknock");
    let query = c.sh("dpkg-query --show portknock");
    assert_eq!(
        query.status.code(),
        Some(1),
        "dpkg still knows it:\n{}",
        text(&query)
    );
    for dir in ["etc/portknock", "var/lib/portknock"] {
        assert!(!root.join(dir).exists(), "/{dir} is left after purge");
    }
    let mut left = Vec::new();
    named_portknock(root, &mut left);
    left.retain(|path| !path.starts_with(root.join("root")));
    assert!(left.is_empty(), "left after purge: {left:?}");
}

/// Installed and removed from a chroot, the package leaves the kernel's table alone: it is the
/// running system's, not the chroot's. The chroot runs in the test's network namespace, with
/// the /proc of the host's PID namespace, as an image build would have it.
fn removed_from_a_chroot_leaves_the_table(root: &Path, netns: &Netns) {
    let mut cmd = netns.command("unshare");
    cmd.args(["--mount", "--fork", "--kill-child", "sh", "-c"])
        .arg(
            "mount -t proc proc \"$0/proc\" && exec chroot \"$0\" /usr/bin/env -i \
             PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -c '
                 dpkg --install /root/current.deb &&
                 nft add table inet portknock &&
                 dpkg --remove portknock &&
                 nft list tables &&
                 dpkg --purge portknock &&
                 nft delete table inet portknock'",
        )
        .arg(root)
        .stdin(Stdio::null());
    let out = output_within_for(cmd, STEP_BOUND);
    let all = succeeded(&out, "install and remove in a chroot");
    assert!(
        all.contains("removed from a chroot")
            && all.contains("table inet portknock")
            && !all.contains("table inet portknock removed"),
        "{all}"
    );
}
