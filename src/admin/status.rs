//! `portknock status`: the engine and modes, the doors, and the grants the kernel holds, and
//! what the daemon counted when it writes a metrics file; `status --watch`, those counters
//! again every second with their rates.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use super::AdminError;
use crate::config::{self, Config, ConfigError, Loaded, CONF_FILE};
use crate::firewall::{self, Grant, TABLE};
use crate::metrics::{self, Sample};
use crate::port::KnockPort;
use crate::report::{count, Report};
use crate::trial;

#[derive(Debug, Serialize)]
struct Status {
    /// False when the configuration cannot be read or has errors: the kernel state below is
    /// still the truth, but the switches, doors and modes of grants are not known, and left
    /// out.
    config_valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    engine: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    simple: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advanced: Option<bool>,
    table_installed: bool,
    /// What the doors guard, in words.
    guarded: &'static str,
    /// Sources that pass every door without knocking, as prefixes.
    trusted: Vec<String>,
    /// An `apply --confirm-within` the daemon waits to see confirmed.
    pending_confirmation: Option<PendingStatus>,
    doors: Vec<DoorStatus>,
    grants: Vec<GrantStatus>,
    /// What the daemon counted, from its metrics file; absent when it writes none.
    metrics: Option<MetricsStatus>,
}

/// What a door guards and who passes it anyway (docs/behaviour.md §4).
const GUARDED: &str = "new TCP connections to the host's own addresses on a \
protected port, whether they go to a socket of the host or DNAT sends them on to a container, \
a VM or another machine; the host itself (loopback and its own addresses) and the trusted \
sources pass, and what the host routes to other machines is left alone";

#[derive(Debug, Serialize)]
struct PendingStatus {
    /// When the daemon rolls back unless confirmed, in seconds since the Unix epoch.
    deadline: u64,
    seconds_left: u64,
}

#[derive(Debug, Serialize)]
struct DoorStatus {
    port: u16,
    mode: &'static str,
    knock: String,
}

#[derive(Debug, Serialize)]
struct MetricsStatus {
    file: PathBuf,
    /// When the daemon wrote it, in seconds since the Unix epoch.
    written: u64,
    samples: Vec<SampleStatus>,
}

#[derive(Debug, Serialize)]
struct SampleStatus {
    /// As a Prometheus query names it: `name{label="value",...}`.
    series: String,
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl MetricsStatus {
    fn new(snapshot: &Snapshot) -> MetricsStatus {
        MetricsStatus {
            file: snapshot.file.clone(),
            written: unix_seconds(snapshot.written),
            samples: (snapshot.samples.iter())
                .map(|s| SampleStatus {
                    series: s.series(),
                    name: s.name.clone(),
                    labels: s.labels.iter().cloned().collect(),
                    value: s.value,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
struct GrantStatus {
    #[serde(flatten)]
    grant: Grant,
    /// The mode of the door of the grant's port, or "manual" for a port no door protects;
    /// left out when the configuration is not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'static str>,
}

impl Status {
    fn new(
        config: Option<&Config>,
        grants: Option<Vec<Grant>>,
        pending: Option<trial::Pending>,
        now: u64,
        metrics: Option<&Snapshot>,
    ) -> Status {
        let mut doors: Vec<DoorStatus> = Vec::new();
        if let Some(config) = config {
            doors.extend(config.simple.iter().map(|d| {
                DoorStatus {
                    port: d.protected,
                    mode: "simple",
                    knock: d
                        .sequence
                        .iter()
                        .map(|k| k.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                }
            }));
            doors.extend(config.advanced.iter().map(|d| DoorStatus {
                port: d.protected,
                mode: "advanced",
                knock: format!("{} (OTP)", KnockPort::udp(d.knock_port)),
            }));
        }
        // Up to a million grants against up to 65,535 doors: looked up, not searched.
        let modes: HashMap<u16, &'static str> = doors.iter().map(|d| (d.port, d.mode)).collect();
        let mode_of = |port: u16| config.map(|_| modes.get(&port).copied().unwrap_or("manual"));
        let grants = grants.as_ref().map(|g| {
            g.iter()
                .map(|&grant| GrantStatus {
                    grant,
                    mode: mode_of(grant.port),
                })
                .collect()
        });
        let settings = config.map(|c| &c.settings);
        Status {
            config_valid: config.is_some(),
            engine: settings.map(|s| s.enabled),
            simple: settings.map(|s| s.simple),
            advanced: settings.map(|s| s.advanced),
            table_installed: grants.is_some(),
            guarded: GUARDED,
            pending_confirmation: pending.map(|p| PendingStatus {
                deadline: p.deadline,
                seconds_left: p.deadline.saturating_sub(now),
            }),
            trusted: (settings.iter())
                .flat_map(|s| &s.trusted)
                .map(ToString::to_string)
                .collect(),
            grants: grants.unwrap_or_default(),
            doors,
            metrics: metrics.map(MetricsStatus::new),
        }
    }

    /// The text of `status`; `unusable` is what to say instead of the switches when the
    /// configuration cannot be used.
    fn text(
        &self,
        unusable: Option<&str>,
        report: &mut Report,
        metrics: Option<&Snapshot>,
        now: SystemTime,
    ) {
        let on = |b: Option<bool>| if b == Some(true) { "on" } else { "off" };
        match unusable {
            None => report.line(format!(
                "engine {}  simple {}  advanced {}",
                on(self.engine),
                on(self.simple),
                on(self.advanced)
            )),
            Some(why) => report.line(why),
        }
        if self.table_installed {
            report.line(format!("table inet {TABLE}: installed"));
        } else {
            report.line(format!(
                "table inet {TABLE}: NOT installed — nothing is protected (run `portknock apply`)"
            ));
        }
        if let Some(p) = &self.pending_confirmation {
            report.line(format!(
                "PENDING: the configuration in force is on trial: `portknock confirm` within {} s keeps it, else the previous one comes back",
                p.seconds_left
            ));
        }
        report.line(format!("guarded: {}", self.guarded));
        if !self.trusted.is_empty() {
            report.line(format!("trusted: {}", self.trusted.join(" ")));
        }
        if self.config_valid {
            report.line(format!("doors: {}", self.doors.len()));
            for d in &self.doors {
                report.line(format!("  {:>5}  {:<8}  {}", d.port, d.mode, d.knock));
            }
        }
        report.line(format!("grants: {}", self.grants.len()));
        for g in &self.grants {
            let mode = g
                .mode
                .map(|mode| format!("{mode:<8}  "))
                .unwrap_or_default();
            report.line(format!(
                "  {:<39}  port {:>5}  {mode}{}s left",
                g.grant.source.to_string(),
                g.grant.port,
                g.grant.remaining.as_secs()
            ));
        }
        if let Some(snapshot) = metrics {
            counters(report, snapshot, None, now);
        }
    }
}

/// A metrics file as read at one moment.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    file: PathBuf,
    /// Its modification time: when the daemon wrote it.
    written: SystemTime,
    samples: Vec<Sample>,
}

/// Why the metrics file could not be shown.
#[derive(Debug, thiserror::Error)]
enum MetricsFileError {
    #[error("cannot read the metrics file {file}: {error} (the daemon writes it every {} s while it runs)", metrics::EVERY.as_secs())]
    Read { file: PathBuf, error: io::Error },
    #[error("the metrics file {file} is not in Prometheus' text format: {error}")]
    Format {
        file: PathBuf,
        error: metrics::ParseError,
    },
}

/// Reads the metrics file `file`, and the time it was written, from one open file: the daemon
/// replaces it whole, so the two agree.
fn read_metrics(file: &Path) -> Result<Snapshot, MetricsFileError> {
    let read = |error| MetricsFileError::Read {
        file: file.to_path_buf(),
        error,
    };
    let mut open = std::fs::File::open(file).map_err(read)?;
    let written = open.metadata().and_then(|m| m.modified()).map_err(read)?;
    let mut text = String::new();
    open.read_to_string(&mut text).map_err(read)?;
    let samples = metrics::parse(&text).map_err(|error| MetricsFileError::Format {
        file: file.to_path_buf(),
        error,
    })?;
    Ok(Snapshot {
        file: file.to_path_buf(),
        written,
        samples,
    })
}

/// The counters of `snapshot`, one series a line, with their `rates` per second when known.
fn counters(
    report: &mut Report,
    snapshot: &Snapshot,
    rates: Option<&[Option<f64>]>,
    now: SystemTime,
) {
    let age = now.duration_since(snapshot.written).unwrap_or_default();
    let stale = if age > 3 * metrics::EVERY {
        format!(
            " — the daemon writes it every {} s: is it running?",
            metrics::EVERY.as_secs()
        )
    } else {
        String::new()
    };
    report.line(format!(
        "metrics: {}, written {} s ago{stale}",
        snapshot.file.display(),
        age.as_secs()
    ));
    let series: Vec<String> = snapshot.samples.iter().map(Sample::series).collect();
    let width = series.iter().map(String::len).max().unwrap_or(0);
    for (i, (sample, series)) in snapshot.samples.iter().zip(&series).enumerate() {
        let rate = match rates.map(|r| r.get(i).copied().flatten()) {
            None => String::new(),
            Some(None) if sample.counter => format!("  {:>10}", "–"),
            Some(None) => String::new(),
            Some(Some(rate)) => format!("  {rate:>8.1}/s"),
        };
        report.line(format!("  {series:<width$}  {:>14}{rate}", sample.value));
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `portknock status --watch`: the metrics file read again at each refresh, each counter with
/// its rate per second between the daemon's last two writes of the file.
pub struct Watch {
    file: PathBuf,
    shown: Option<Snapshot>,
    rates: Vec<Option<f64>>,
}

impl Watch {
    /// A view of the metrics file of `config`; an error when it names none.
    pub fn new(config: &Config) -> Result<Watch, AdminError> {
        let file = config
            .settings
            .metrics_file
            .clone()
            .ok_or_else(|| AdminError::NoMetrics {
                conf: config.dir.join(CONF_FILE),
            })?;
        Ok(Watch {
            file,
            shown: None,
            rates: Vec::new(),
        })
    }

    /// Reads the file again and shows it as of `now`. The file changes every few seconds only:
    /// the rates stay those of its last change until the next.
    pub fn refresh(&mut self, now: SystemTime) -> Report {
        let mut report = Report::new();
        let snapshot = match read_metrics(&self.file) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                report.line(e);
                return report;
            }
        };
        match &self.shown {
            Some(shown) if shown.written == snapshot.written => {}
            Some(shown) => {
                let seconds = (snapshot.written.duration_since(shown.written))
                    .map_or(0.0, |d| d.as_secs_f64());
                self.rates = metrics::rates(&shown.samples, &snapshot.samples, seconds);
            }
            None => self.rates = vec![None; snapshot.samples.len()],
        }
        let snapshot = self.shown.insert(snapshot);
        counters(&mut report, snapshot, Some(&self.rates), now);
        report.line("rates per second over the daemon's last two writes of the file; Ctrl-C ends");
        report
    }
}

/// `portknock status [--json]` with the configuration of `dir`, as it loaded. A configuration
/// that cannot be used (a missing directory, say) does not hide the kernel's state: the grants
/// shown are read from the kernel either way, and one line says why the rest is missing.
pub fn status(
    dir: &Path,
    loaded: Result<Loaded, ConfigError>,
    json: bool,
) -> Result<Report, AdminError> {
    let mut report = Report::new();
    let state_dir = match &loaded {
        Ok(loaded) => loaded.config.settings.state_dir.clone(),
        Err(_) => config::state_dir(dir),
    };
    let (config, unusable) = match loaded {
        Ok(loaded) => {
            loaded.warnings.iter().for_each(|w| report.note(w));
            let config = match trial::in_force(loaded.config, unix_seconds(SystemTime::now())) {
                trial::InForce::Files(config)
                | trial::InForce::Unreadable(config, _)
                | trial::InForce::OnTrial { files: config, .. } => config,
                trial::InForce::Confirmed(confirmed) => {
                    report.note("the configuration files hold the configuration that was rolled back for want of a confirmation: shown is the last confirmed one, which the daemon enforces");
                    confirmed
                }
                trial::InForce::RanOut { confirmed, .. } => {
                    report.note("the configuration files were on trial when the daemon stopped, and the deadline passed unconfirmed: shown is the last confirmed one, which the daemon enforces when it starts");
                    confirmed
                }
            };
            (Some(config), None)
        }
        Err(e) => (
            None,
            Some(format!(
                "configuration in {} cannot be used ({}, listed by portknock check): showing \
                 only what the kernel holds",
                dir.display(),
                count(e.errors(), "error")
            )),
        ),
    };
    let grants = firewall::grants().map_err(AdminError::Netlink)?;
    let now = SystemTime::now();
    let pending = trial::pending(&state_dir);
    let file = config
        .as_ref()
        .and_then(|c| c.settings.metrics_file.as_ref());
    let metrics = file.and_then(|file| {
        read_metrics(file)
            .map_err(|e| report.note(format!("{e}: showing no counters")))
            .ok()
    });
    let status = Status::new(
        config.as_ref(),
        grants,
        pending,
        unix_seconds(now),
        metrics.as_ref(),
    );
    if json {
        let text = serde_json::to_string_pretty(&status).map_err(|error| AdminError::Json {
            what: "the status",
            error,
        })?;
        report.line(text);
    } else {
        status.text(unusable.as_deref(), &mut report, metrics.as_ref(), now);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::time::Duration;

    use crate::config::{Settings, SimpleDoor};

    fn grants() -> Option<Vec<Grant>> {
        let grant = |source: [u8; 4], port| Grant {
            source: IpAddr::from(source),
            port,
            remaining: Duration::from_secs(42),
        };
        Some(vec![grant([198, 18, 0, 2], 22), grant([198, 18, 0, 3], 80)])
    }

    fn shown(status: &Status, unusable: Option<&str>) -> String {
        let mut report = Report::new();
        status.text(unusable, &mut report, None, SystemTime::UNIX_EPOCH);
        text(&report)
    }

    #[test]
    fn grants_are_shown_with_the_mode_of_their_door() {
        let dir = Path::new("/etc/portknock");
        let config = Config {
            dir: dir.to_path_buf(),
            settings: Settings {
                enabled: true,
                simple: true,
                ..Settings::defaults(dir)
            },
            simple: vec![SimpleDoor {
                protected: 22,
                sequence: vec![KnockPort::tcp(7000), KnockPort::udp(8000)],
            }],
            advanced: vec![],
        };
        let status = Status::new(Some(&config), grants(), None, 0, None);
        assert_eq!(
            shown(&status, None),
            format!(
                "engine on  simple on  advanced off\n\
             table inet portknock: installed\n\
             guarded: {GUARDED}\n\
             doors: 1\n\
             \x20    22  simple    7000/tcp,8000/udp\n\
             grants: 2\n\
             \x20 198.18.0.2                               port    22  simple    42s left\n\
             \x20 198.18.0.3                               port    80  manual    42s left\n"
            )
        );
    }

    fn config_with(metrics_file: Option<PathBuf>) -> Config {
        let dir = Path::new("/etc/portknock");
        Config {
            dir: dir.to_path_buf(),
            settings: Settings {
                metrics_file,
                ..Settings::defaults(dir)
            },
            simple: Vec::new(),
            advanced: Vec::new(),
        }
    }

    /// Writes `text` to `file` as written at `written`.
    fn write(file: &Path, text: &str, written: SystemTime) {
        std::fs::write(file, text).unwrap();
        let open = std::fs::File::options().write(true).open(file).unwrap();
        open.set_modified(written).unwrap();
    }

    fn text(report: &Report) -> String {
        String::from_utf8(report.out.clone()).unwrap()
    }

    #[test]
    fn the_watch_shows_each_counter_with_its_rate_between_the_last_two_writes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("portknock.prom");
        let mut watch = Watch::new(&config_with(Some(file.clone()))).unwrap();
        let shown = |watch: &mut Watch, now| text(&watch.refresh(now));

        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let head = "# TYPE a_total counter\n# TYPE g gauge\n";
        write(&file, &format!("{head}a_total{{x=\"1\"}} 10\ng 3\n"), t0);
        let first = shown(&mut watch, t0 + Duration::from_secs(1));
        let first: Vec<&str> = first.lines().collect();
        assert_eq!(
            first[0],
            format!("metrics: {}, written 1 s ago", file.display())
        );
        assert_eq!(
            first[1],
            format!("  a_total{{x=\"1\"}}  {:>14}  {:>10}", 10, "–")
        );
        assert_eq!(
            first[2],
            format!("  {:<14}  {:>14}", "g", 3),
            "no rate for a gauge"
        );

        write(
            &file,
            &format!("{head}a_total{{x=\"1\"}} 30\ng 1\n"),
            t0 + Duration::from_secs(4),
        );
        let second = shown(&mut watch, t0 + Duration::from_secs(5));
        assert!(
            second.contains(&format!("{:>14}  {:>8}/s", 30, "5.0")),
            "20 more in 4 s:\n{second}"
        );
        let third = shown(&mut watch, t0 + Duration::from_secs(6));
        assert!(
            third.contains("5.0/s") && third.contains("written 2 s ago"),
            "the file did not change: the rate of its last change stays\n{third}"
        );
        let stale = shown(&mut watch, t0 + Duration::from_secs(40));
        assert!(stale.contains("written 36 s ago — the daemon writes it every 5 s: is it running?"));

        std::fs::remove_file(&file).unwrap();
        let gone = shown(&mut watch, t0 + Duration::from_secs(41));
        assert!(
            gone.starts_with(&format!("cannot read the metrics file {}", file.display())),
            "{gone}"
        );
    }

    #[test]
    fn without_a_configuration_only_the_kernel_is_shown() {
        let status = Status::new(None, grants(), None, 0, None);
        assert_eq!(
            shown(&status, Some("configuration in d cannot be used")),
            format!(
                "configuration in d cannot be used\n\
             table inet portknock: installed\n\
             guarded: {GUARDED}\n\
             grants: 2\n\
             \x20 198.18.0.2                               port    22  42s left\n\
             \x20 198.18.0.3                               port    80  42s left\n"
            )
        );
        let json = serde_json::to_value(&status).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "config_valid": false,
                "table_installed": true,
                "guarded": GUARDED,
                "trusted": [],
                "pending_confirmation": null,
                "doors": [],
                "metrics": null,
                "grants": [
                    {"source": "198.18.0.2", "port": 22, "remaining": 42},
                    {"source": "198.18.0.3", "port": 80, "remaining": 42},
                ],
            })
        );
        let gone = Status::new(None, None, None, 0, None);
        assert!(shown(&gone, Some("c")).contains("NOT installed"));
    }

    #[test]
    fn a_watch_needs_a_metrics_file() {
        let Err(e) = Watch::new(&config_with(None)) else {
            panic!("a watch without a file");
        };
        assert_eq!(
            e.to_string(),
            "/etc/portknock/portknock.conf sets no FW_PORTKNOCK_METRICS_FILE, so the daemon \
             writes no counters to watch: set it, then run portknock apply"
        );
    }

    #[test]
    fn status_shows_the_counters_and_json_names_each_series() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("portknock.prom");
        let written = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        write(
            &file,
            "# TYPE a_total counter\na_total{x=\"1\"} 7\n",
            written,
        );
        let snapshot = read_metrics(&file).unwrap();
        let config = config_with(Some(file.clone()));
        let status = Status::new(Some(&config), None, None, 0, Some(&snapshot));
        let mut report = Report::new();
        status.text(None, &mut report, Some(&snapshot), written);
        let text = text(&report);
        assert!(
            text.ends_with(&format!(
                "metrics: {}, written 0 s ago\n  a_total{{x=\"1\"}}  {:>14}\n",
                file.display(),
                7
            )),
            "{text}"
        );
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json["metrics"],
            serde_json::json!({
                "file": file,
                "written": 1_800_000_000,
                "samples": [{"series": "a_total{x=\"1\"}", "name": "a_total", "labels": {"x": "1"}, "value": 7.0}],
            })
        );
        write(&file, "a_total{x=1} 7\n", written);
        assert_eq!(
            read_metrics(&file).unwrap_err().to_string(),
            format!(
                "the metrics file {} is not in Prometheus' text format: line 1: a label value \
                 not in double quotes",
                file.display()
            )
        );
    }
}
