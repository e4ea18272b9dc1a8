//! `portknock demo`: the whole story in two throw-away network namespaces, with the real daemon
//! and the real client — refused, simple knock, connected, OTP open, connected, close, refused,
//! replay refused. Nothing on the host's own network is touched.
//!
//! The one command that prints as it goes rather than returning its output: the story is told
//! step by step while it happens, with the daemon's log lines beside it.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tempfile::TempDir;

use crate::netns::{client4, wait_until, Netns, NetnsError, Network, SERVER4};
use crate::report::Report;

const SIMPLE_DOOR: u16 = 22;
const SEQUENCE: [&str; 3] = ["7000", "9000", "8000"];
const ADVANCED_DOOR: u16 = 2222;
const OTP_PORT: &str = "2000";
/// How long one connection attempt may take before the port counts as closed.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);

/// Terminal colours, only when standard output is a terminal.
struct Style {
    on: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// One step of the story.
enum Step {
    /// Try to connect to a port; `true` when it should be open.
    Port(u16, bool, &'static str),
    /// Run the real client with these arguments.
    Client(Vec<String>, &'static str),
    /// Run the real `otp` client with these arguments, keeping the datagram it sends for the
    /// eavesdropper of [`Step::Replay`].
    CapturedOtp(Vec<String>, &'static str),
    /// Send the captured datagram again, as an eavesdropper would.
    Replay,
}

/// What `portknock demo` needs while it runs; dropping it stops the daemon and removes the
/// namespaces and the temporary directory.
struct Demo {
    style: Style,
    net: Network,
    /// The configuration, secrets, state and log, removed on drop.
    dir: TempDir,
    daemon: Child,
    log_seen: usize,
    failures: usize,
    interrupted: Arc<AtomicBool>,
    /// The open password's datagram, as an eavesdropper saw it.
    captured: Option<Vec<u8>>,
}

/// Why the demo could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "it builds two network namespaces joined by a virtual cable, runs the real portknock \
         daemon in one and the real client in the other, and loads nftables rules only inside \
         them. Creating namespaces needs root, so run:\n\n    sudo portknock demo\n\n\
         Nothing on this host's own network, firewall or interfaces is touched."
    )]
    NotRoot,
    #[error("could not set up the namespaces: {0}")]
    Netns(NetnsError),
    #[error("could not set up: {0}")]
    Io(io::Error),
    #[error("the daemon did not start; its log:\n{0}")]
    Daemon(String),
}

impl From<io::Error> for DemoError {
    fn from(error: io::Error) -> DemoError {
        DemoError::Io(error)
    }
}

/// `portknock demo`: tells the story; the report holds when every step behaved.
pub fn demo() -> Result<Report, DemoError> {
    let style = Style {
        on: std::io::stdout().is_terminal(),
    };
    if crate::firewall::require_net_admin().is_err() || !nix::unistd::geteuid().is_root() {
        return Err(DemoError::NotRoot);
    }
    let mut report = Report::new();
    report.held = Demo::start(style)?.story();
    Ok(report)
}

impl Demo {
    fn start(style: Style) -> Result<Demo, DemoError> {
        let interrupted = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&interrupted))?;
        }
        println!(
            "{}",
            style.paint(
                "1",
                "portknock demo — a server and a client in two network namespaces"
            )
        );
        let net = Network::new("pkdemo", 1).map_err(DemoError::Netns)?;
        // A new directory of a name no one can guess, private (mkdtemp): a name someone could
        // guess, in a directory anyone may write to, could be theirs already, with links
        // where the demo writes as root and files where it writes the secrets. Owned before
        // anything is written into it: a set-up that fails half-way leaves no secret behind.
        let dir = tempfile::Builder::new()
            .prefix("portknock-demo-")
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir()?;
        write_config(dir.path())?;
        for port in [SIMPLE_DOOR, ADVANCED_DOOR] {
            listen(&net.server, port)?;
        }
        let exe = std::env::current_exe()?;
        let daemon = net
            .server
            .command(&exe.to_string_lossy())
            .arg("serve")
            .env("PORTKNOCK_CONFIG_DIR", dir.path().join("etc"))
            .stdout(Stdio::null())
            .stderr(create(&dir.path().join("daemon.log"))?)
            .spawn()?;
        let mut demo = Demo {
            style,
            net,
            dir,
            daemon,
            log_seen: 0,
            failures: 0,
            captured: None,
            interrupted,
        };
        let serving = wait_until(Duration::from_secs(10), || {
            // A daemon that died at once does not start later.
            demo.log().contains("portknock serving") || !matches!(demo.daemon.try_wait(), Ok(None))
        });
        if serving.is_none() || !demo.log().contains("portknock serving") {
            return Err(DemoError::Daemon(demo.log()));
        }
        println!(
            "server {SERVER4} (namespace {}): daemon running, TCP services on ports {SIMPLE_DOOR} and {ADVANCED_DOOR}",
            demo.net.server.name
        );
        println!(
            "client {} (namespace {})\n",
            client4(0),
            demo.net.clients[0].name
        );
        demo.show_log();
        Ok(demo)
    }

    /// Tells the story; whether every step behaved as it should.
    fn story(&mut self) -> bool {
        let secret = |name: &str| {
            self.dir
                .path()
                .join("etc")
                .join(name)
                .to_string_lossy()
                .into_owned()
        };
        let mut knock = vec!["knock".to_string(), SERVER4.to_string()];
        knock.extend(SEQUENCE.map(String::from));
        let otp = |file: String| {
            ["otp", SERVER4, OTP_PORT, "--secret-file", &file]
                .map(String::from)
                .to_vec()
        };
        let steps = [
            Step::Port(SIMPLE_DOOR, false, "port 22 is closed to everyone"),
            Step::Client(
                knock,
                "simple mode: a connection attempt to 7000, 9000, 8000, in order",
            ),
            Step::Port(SIMPLE_DOOR, true, "port 22 opened for this client"),
            Step::Port(ADVANCED_DOOR, false, "port 2222 is closed"),
            Step::CapturedOtp(
                otp(secret("open.secret")),
                "advanced mode: one UDP datagram with this minute's one-time password",
            ),
            Step::Port(ADVANCED_DOOR, true, "port 2222 opened"),
            Step::Client(
                otp(secret("close.secret")),
                "the close password shuts the door again",
            ),
            Step::Port(ADVANCED_DOOR, false, "port 2222 is closed again"),
            Step::Replay,
            Step::Port(ADVANCED_DOOR, false, "the replayed password opened nothing"),
        ];
        for step in steps {
            if self.interrupted.load(Ordering::Relaxed) {
                println!("\ninterrupted: cleaning up");
                return false;
            }
            match step {
                Step::Port(port, open, what) => self.expect_port(port, open, what),
                Step::Client(args, why) => self.client(&args, why),
                Step::CapturedOtp(args, why) => {
                    self.captured = self.capture(&args);
                    self.client(&args, why);
                }
                Step::Replay => self.replay(),
            }
        }
        if self.failures == 0 {
            println!(
                "\n{}",
                self.style.paint("32;1", "every step behaved as it should")
            );
            true
        } else {
            println!(
                "\n{}",
                self.style
                    .paint("31;1", &format!("{} step(s) did not behave", self.failures))
            );
            false
        }
    }

    fn command_line(&self, line: &str, why: &str) {
        println!("{}", self.style.paint("2", &format!("# {why}")));
        println!("{} {}", self.style.paint("36;1", "client$"), line);
    }

    fn verdict(&mut self, good: bool, text: &str) {
        if good {
            println!("  {} {text}", self.style.paint("32;1", "✓"));
        } else {
            self.failures += 1;
            println!("  {} {text}", self.style.paint("31;1", "✗ unexpected:"));
        }
        self.show_log();
        println!();
    }

    /// Runs the real `portknock` client in the client namespace.
    fn client(&mut self, args: &[String], why: &str) {
        self.command_line(&format!("portknock {}", args.join(" ")), why);
        let result = std::env::current_exe().and_then(|exe| {
            self.net.clients[0]
                .command(&exe.to_string_lossy())
                .args(args)
                .output()
        });
        match result {
            Ok(out) => {
                // What went wrong, if anything, is on standard error.
                let text =
                    [&out.stdout, &out.stderr].map(|b| String::from_utf8_lossy(b).into_owned());
                for line in text.iter().flat_map(|t| t.lines()) {
                    println!("  {line}");
                }
                self.verdict(out.status.success(), "sent");
            }
            Err(e) => self.verdict(false, &format!("could not run the client: {e}")),
        }
    }

    fn expect_port(&mut self, port: u16, open: bool, what: &str) {
        self.command_line(&format!("nc -z -w1 {SERVER4} {port}"), what);
        let target = SocketAddr::new(SERVER4.parse().expect("constant address"), port);
        let connected = self.net.clients[0]
            .run(move || TcpStream::connect_timeout(&target, CONNECT_TIMEOUT).is_ok())
            .unwrap_or(false);
        let text = if connected {
            format!("connected to port {port}")
        } else {
            format!("no connection to port {port}: the firewall dropped the SYN")
        };
        self.verdict(connected == open, &text);
    }

    /// The datagram `portknock ARGS` sends: the password is the same for a whole minute, so
    /// `--print` within the minute the client sends in gives the very bytes an eavesdropper
    /// would capture. Close to the end of a minute, waits for the next one first.
    fn capture(&self, args: &[String]) -> Option<Vec<u8>> {
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() % 60);
        if second >= 55 {
            println!(
                "  (the minute ends in {}s: waiting for the next, so that the password is \
                 still the current one at the replay below)",
                60 - second
            );
            thread::sleep(Duration::from_secs(60 - second));
        }
        let exe = std::env::current_exe().ok()?;
        let out = self.net.clients[0]
            .command(&exe.to_string_lossy())
            .args(args)
            .arg("--print")
            .output()
            .ok()?;
        out.status.success().then_some(out.stdout)
    }

    /// An eavesdropper sends the open password it saw again, from the same address.
    fn replay(&mut self) {
        self.command_line(
            &format!("socat - UDP:{SERVER4}:{OTP_PORT} < the-open-datagram-captured-above"),
            "an eavesdropper replays the open password it captured",
        );
        let Some(payload) = self.captured.take() else {
            return self.verdict(false, "no datagram was captured");
        };
        let port = OTP_PORT.parse().expect("constant port");
        let target = SocketAddr::new(SERVER4.parse().expect("constant address"), port);
        let sent = self.net.clients[0]
            .run(move || crate::client::net::send_datagram(None, target, &payload))
            .and_then(std::convert::identity);
        let seen = wait_until(Duration::from_secs(3), || self.log().contains("replay"));
        let refused = sent.is_ok() && seen.is_some();
        self.verdict(refused, "the daemon recognised the replay and refused it");
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Prints the daemon's log lines that appeared since the last call.
    fn show_log(&mut self) {
        // Let the daemon's reaction to the step reach its log.
        thread::sleep(Duration::from_millis(50));
        let log = self.log();
        for line in log.get(self.log_seen..).unwrap_or_default().lines() {
            println!("  {} {line}", self.style.paint("35", "daemon │"));
        }
        self.log_seen = log.len();
    }
}

impl Drop for Demo {
    /// The daemon goes first; the fields (namespaces, then the directory) follow.
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// A new file at `path`, private (0600): fails if anything is there already, a symbolic link
/// included, so nothing is ever written through one.
fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Writes `text` to the new file `path` (see [`create`]).
fn write_new(path: &Path, text: &str) -> io::Result<()> {
    create(path)?.write_all(text.as_bytes())
}

fn write_config(dir: &Path) -> std::io::Result<()> {
    let etc = dir.join("etc");
    DirBuilder::new().mode(0o700).create(&etc)?;
    write_new(
        &etc.join("portknock.conf"),
        &format!(
            "FW_PORTKNOCK=yes\nFW_PORTKNOCK_SIMPLE=yes\nFW_PORTKNOCK_ADVANCED=yes\n\
             FW_PORTKNOCK_SIMPLE_OPEN=30\nFW_PORTKNOCK_STATE_DIR={}\n",
            dir.join("state").display()
        ),
    )?;
    write_new(
        &etc.join("simple-portknock-list"),
        &format!("{SIMPLE_DOOR}:{}\n", SEQUENCE.join(",")),
    )?;
    let open = random_secret()?;
    let close = random_secret()?;
    for (name, text) in [
        (
            "advanced-portknock-list",
            format!("{ADVANCED_DOOR},{OTP_PORT},{open},{close}\n"),
        ),
        ("open.secret", format!("{open}\n")),
        ("close.secret", format!("{close}\n")),
    ] {
        write_new(&etc.join(name), &text)?;
    }
    Ok(())
}

/// 24 random letters and digits: a fresh secret pair per run, so the demo never teaches a
/// secret anyone could reuse.
fn random_secret() -> std::io::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 24];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect())
}

/// A TCP service on `port` in the server namespace that accepts and answers with a greeting.
fn listen(server: &Netns, port: u16) -> std::io::Result<()> {
    let listener = server
        .run(move || TcpListener::bind(("0.0.0.0", port)))
        .and_then(std::convert::identity)?;
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"hello from the protected service\n");
        }
    });
    Ok(())
}
