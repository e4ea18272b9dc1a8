//! Readings from /proc: CPU time and memory of a process, and the machine's load.

use std::time::{Duration, Instant};

/// Clock ticks per second of the `utime`/`stime` fields of /proc/PID/stat.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant of the C library.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU time the process has used: its own (user + system) and that of children it has waited
/// for (knockd's `start_command` processes), in clock ticks. `None` once the process is gone.
pub fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(')')?;
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // After the command: state(0) ppid pgrp session tty tpgid flags minflt cminflt majflt
    // cmajflt utime(11) stime(12) cutime(13) cstime(14).
    Some((f.get(11)? + f.get(12)?, f.get(13)? + f.get(14)?))
}

/// Whether the process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, a)| a.trim_start().to_string()))
        .is_some_and(|a| !a.starts_with('Z') && !a.starts_with('X'))
}

/// A `VmXXX:` line of /proc/PID/status, in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Peak resident set size (VmHWM) in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmHWM").map(|k| k as f64 / 1024.0)
}

/// Current resident set size (VmRSS) in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmRSS").map(|k| k as f64 / 1024.0)
}

/// The 1-, 5- and 15-minute load averages.
pub fn load() -> (f64, f64, f64) {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = s
        .split_whitespace()
        .take(3)
        .map(|x| x.parse().unwrap_or(f64::NAN))
        .collect();
    (
        v.first().copied().unwrap_or(f64::NAN),
        v.get(1).copied().unwrap_or(f64::NAN),
        v.get(2).copied().unwrap_or(f64::NAN),
    )
}

/// Processes whose command line mentions a fuzzer (cargo fuzz / libFuzzer), as a hint of what
/// else loads the machine.
pub fn fuzzers_running() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| {
            let c = String::from_utf8_lossy(c);
            c.contains("fuzz") && !c.contains("cargo bench")
        })
        .count()
}

/// CPU use of a process over an interval, as a share of one core.
pub struct CpuMeter {
    pid: u32,
    start: Instant,
    ticks: (u64, u64),
}

impl CpuMeter {
    pub fn start(pid: u32) -> CpuMeter {
        CpuMeter {
            pid,
            start: Instant::now(),
            ticks: cpu_ticks(pid).unwrap_or((0, 0)),
        }
    }

    /// Percent of one core since `start` (own time plus waited-for children), or `None` if the
    /// process died.
    pub fn percent(&self) -> Option<f64> {
        let (own, children) = cpu_ticks(self.pid)?;
        let used = (own + children).saturating_sub(self.ticks.0 + self.ticks.1);
        let wall = self.start.elapsed().max(Duration::from_millis(1));
        Some(used as f64 / clock_ticks() / wall.as_secs_f64() * 100.0)
    }
}
