//! Two-way folder sync against Unison (target 13 of `docs/performance.md`).
//!
//! The same trees, the same run, the real programs: `syncmgr sync NAME`
//! (the binary, inline, a registered `--two-way` pair) and `unison A B
//! -batch -times` (Debian's `unison`, 2.52; not installed by `.ci/run`:
//! `apt-get install unison`). Each tool gets its own copy of the trees.
//!
//! Trees: 10,000 small files (1 to 4 KiB, 100 folders of 100) and 3 large
//! ones (32 MiB each). Cases, timed by wall clock, each tool in turn, the
//! order alternating from round to round; the median of `ROUNDS` rounds:
//!
//! - `first`: the first sync, everything on A, B empty;
//! - `nochange`: a sync with nothing changed;
//! - `changed`: a sync after 1 % of the files changed on each side (100
//!   rewritten on A, 100 others on B, one large file appended to on A).
//!
//! Target: syncmgr's wall time at or below Unison's in each case.
//!
//! `cargo bench -p syncmgr --bench two_way`

#![allow(clippy::print_stdout, clippy::print_stderr)] // a report for people

mod common;

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

const SMALL: usize = 10_000;
const LARGE: usize = 3;
const LARGE_BYTES: usize = 32 << 20;
const ROUNDS: usize = 3;

/// A deterministic byte stream (xorshift), so the trees are the same for
/// both tools and every run.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

fn small_path(root: &Path, n: usize) -> PathBuf {
    root.join(format!("d{:03}", n / 100))
        .join(format!("f{:05}.txt", n))
}

fn populate(root: &Path) -> Result<()> {
    let mut bytes = Bytes(0x9e37_79b9_7f4a_7c15);
    for n in 0..SMALL {
        let path = small_path(root, n);
        if n % 100 == 0 {
            fs::create_dir_all(path.parent().unwrap())?;
        }
        let size = 1024 + (bytes.next() % 3072) as usize;
        fs::write(path, bytes.fill(size))?;
    }
    fs::create_dir_all(root.join("large"))?;
    for n in 0..LARGE {
        fs::write(
            root.join(format!("large/blob{n}.bin")),
            bytes.fill(LARGE_BYTES),
        )?;
    }
    Ok(())
}

/// 1 % of the files changed on each side: different files on each.
fn change(a: &Path, b: &Path, round: usize) -> Result<()> {
    let mut bytes = Bytes(0x1234_5678 + round as u64);
    for k in 0..SMALL / 100 {
        let (on_a, on_b) = (k * 100, k * 100 + 50);
        fs::write(small_path(a, on_a), bytes.fill(2048))?;
        fs::write(small_path(b, on_b), bytes.fill(2048))?;
    }
    let mut large = fs::OpenOptions::new()
        .append(true)
        .open(a.join("large/blob0.bin"))?;
    large.write_all(&bytes.fill(1 << 20))?;
    Ok(())
}

struct Tool {
    name: &'static str,
    a: PathBuf,
    b: PathBuf,
    run: Box<dyn Fn() -> Result<()>>,
}

fn timed(tool: &Tool) -> Result<f64> {
    let started = Instant::now();
    (tool.run)()?;
    Ok(started.elapsed().as_secs_f64())
}

fn check(status: std::process::Output, what: &str) -> Result<()> {
    if !status.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            status.status,
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    if Command::new("unison").arg("-version").output().is_err() {
        bail!("this benchmark compares with Unison: install it first (`apt-get install unison`)");
    }
    let syncmgr = PathBuf::from(env!("CARGO_BIN_EXE_syncmgr"));
    let work = common::home("syncmgr-bench-2way-")?;
    let root = work.path();
    println!(
        "two-way sync vs Unison: {SMALL} small files + {LARGE} x {} MiB, median of {ROUNDS}",
        LARGE_BYTES >> 20
    );
    println!("{}", common::load());

    let mut results: Vec<(&str, &str, Vec<f64>)> = Vec::new();
    for round in 0..ROUNDS {
        // Fresh trees and state for each round (the first sync is a case).
        let mut tools = Vec::new();
        for name in ["syncmgr", "unison"] {
            let dir = root.join(format!("r{round}-{name}"));
            let (a, b) = (dir.join("a"), dir.join("b"));
            fs::create_dir_all(&a)?;
            fs::create_dir_all(&b)?;
            populate(&a)?;
            let state = dir.join("state");
            fs::create_dir_all(&state)?;
            fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
            let run: Box<dyn Fn() -> Result<()>> = if name == "syncmgr" {
                let home = state.clone();
                let out = Command::new(&syncmgr)
                    .arg("--home")
                    .arg(&home)
                    .args(["register", "bench", "--two-way"])
                    .arg(&a)
                    .arg(&b)
                    .output()
                    .context("register")?;
                check(out, "syncmgr register")?;
                let syncmgr = syncmgr.clone();
                Box::new(move || {
                    let out = Command::new(&syncmgr)
                        .arg("--home")
                        .arg(&home)
                        .args(["sync", "bench"])
                        .stdin(Stdio::null())
                        .output()?;
                    check(out, "syncmgr sync")
                })
            } else {
                let (a, b) = (a.clone(), b.clone());
                Box::new(move || {
                    let out = Command::new("unison")
                        .arg(&a)
                        .arg(&b)
                        .args(["-batch", "-times", "-silent", "-confirmbigdel=false"])
                        .env("UNISON", &state)
                        .stdin(Stdio::null())
                        .output()?;
                    check(out, "unison")
                })
            };
            tools.push(Tool { name, a, b, run });
        }
        if round % 2 == 1 {
            tools.reverse();
        }
        for case in ["first", "nochange", "changed"] {
            for tool in &tools {
                if case == "changed" {
                    change(&tool.a, &tool.b, round)?;
                }
                let seconds = timed(tool)?;
                match results
                    .iter_mut()
                    .find(|(c, t, _)| *c == case && *t == tool.name)
                {
                    Some((_, _, times)) => times.push(seconds),
                    None => results.push((case, tool.name, vec![seconds])),
                }
            }
        }
        // The trees must be equal after both tools' last sync.
        for tool in &tools {
            let equal = Command::new("diff")
                .args(["-r", "-q", "-x", ".syncmgr"])
                .arg(&tool.a)
                .arg(&tool.b)
                .output()?;
            check(equal, &format!("the trees {} synced", tool.name))?;
        }
        fs::remove_dir_all(root.join(format!("r{round}-syncmgr")))?;
        fs::remove_dir_all(root.join(format!("r{round}-unison")))?;
    }
    println!(
        "{:<10} {:>12} {:>12} {:>8}  all runs (s)",
        "case", "syncmgr s", "unison s", "ratio"
    );
    for case in ["first", "nochange", "changed"] {
        let mut mine = results
            .iter()
            .find(|(c, t, _)| *c == case && *t == "syncmgr")
            .map(|(_, _, v)| v.clone())
            .unwrap_or_default();
        let mut theirs = results
            .iter()
            .find(|(c, t, _)| *c == case && *t == "unison")
            .map(|(_, _, v)| v.clone())
            .unwrap_or_default();
        let runs = format!("syncmgr {mine:.3?} unison {theirs:.3?}");
        let (m, t) = (common::median(&mut mine), common::median(&mut theirs));
        println!(
            "{case:<10} {m:>12.3} {t:>12.3} {:>7.2}x  {runs}  {}",
            m / t,
            if m <= t { "met" } else { "NOT MET" }
        );
    }
    Ok(())
}
