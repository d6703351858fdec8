//! What the process-level benchmarks share: medians, the load average, a
//! process's CPU time from `/proc`, private homes. (`benches/common/` is
//! not a bench target of its own: cargo only finds `benches/*.rs`.)

#![allow(dead_code)] // each bench uses what it needs

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use anyhow::{Context, Result};

/// The median (the upper one of an even count); sorts `values`.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The load average (1, 5, 15 minutes), to judge how quiet the machine was.
pub fn load() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let avg: Vec<&str> = avg.split_whitespace().take(3).collect();
    format!("load average (1, 5, 15 min): {}", avg.join(" "))
}

/// A process's CPU time so far (user + system), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

/// Clock ticks per second.
pub fn ticks_per_second() -> u64 {
    // sysconf(_SC_CLK_TCK) without unsafe: `getconf`, else Linux's 100.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// A private home (0700, short, under /tmp), removed at the end.
pub fn home(prefix: &str) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in("/tmp")?)
}

/// Which of a bench's `sections` to run: those named on its command line,
/// or all when none is.
pub fn selected(sections: &[&'static str]) -> impl Fn(&str) -> bool {
    let args: Vec<String> = std::env::args().collect();
    let wanted: Vec<&'static str> = sections
        .iter()
        .copied()
        .filter(|s| args.iter().any(|a| a == s))
        .collect();
    move |s: &str| wanted.is_empty() || wanted.contains(&s)
}
