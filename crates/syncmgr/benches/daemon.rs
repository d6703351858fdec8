//! The daemon's costs, measured on the real binary (`docs/performance.md`,
//! "The daemon"):
//!
//! - `sync`: `syncmgr sync` through a running daemon against the same
//!   command inline, alternating, on a 1-item and a 10,000-item handler.
//!   Target: at most 1.2x (medians).
//! - `idle`: a daemon with five schedules, none due, over 60 s: its CPU time
//!   (target at most 50 ms) and its timer's rounds (target: at most one a
//!   minute, plus the first).
//! - `soak`: 10,000 sessions run back to back through the daemon's socket
//!   (with a one-second schedule firing alongside), `[retention] sessions =
//!   1000`: RSS, open file descriptors, threads and database size after
//!   every 1,000. Target: flat after warm-up (RSS and the database within
//!   10 % from 2,000 on, descriptors and threads within 2: a sample may
//!   catch a session's pipes or a pooled thread).
//!
//! - `triggers`: against a private bus with python-dbusmock's logind,
//!   NetworkManager and UPower: the time from logind's `PrepareForSleep` to
//!   the start of the `pendingDisconnect` session (p50, p99 of 40), and the
//!   daemon's CPU over 60 s with every source connected (target: at most
//!   50 ms). Needs `SYNCMGR_TEST_DBUSMOCK_PYTHON` (`scripts/test` makes
//!   `target/dbusmock-venv`).
//!
//! `cargo bench -p syncmgr --bench daemon [-- sync|idle|soak|triggers]`.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a report for people

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

use anyhow::{Context, Result, bail, ensure};

const SYNC_ROUNDS: usize = 7;
const IDLE_SECONDS: u64 = 60;
const SOAK_SESSIONS: usize = 10_000;
const SOAK_STEP: usize = 1_000;

fn main() -> Result<()> {
    let run = selected(&["sync", "idle", "soak", "triggers"]);
    let syncmgr = PathBuf::from(env!("CARGO_BIN_EXE_syncmgr"));
    let profile = syncmgr.parent().context("target dir")?.to_path_buf();
    let testkit = syncmgr_testkit::build_test_handler(&profile);
    let bins = Bins { syncmgr, testkit };
    println!("{}", load());
    if run("sync") {
        sync(&bins)?;
    }
    if run("idle") {
        idle(&bins)?;
    }
    if run("soak") {
        soak(&bins)?;
    }
    if run("triggers") {
        triggers(&bins)?;
    }
    println!("{}", load());
    Ok(())
}

struct Bins {
    syncmgr: PathBuf,
    testkit: PathBuf,
}

fn syncmgr(bins: &Bins, home: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new(&bins.syncmgr)
        .env("SYNCMGR_HOME", home)
        .env_remove("SYNCMGR_LOG")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()?;
    ensure!(
        status.success(),
        "syncmgr {} failed: {status}",
        args.join(" ")
    );
    Ok(())
}

/// A daemon, stopped (SIGTERM) and reaped when dropped.
struct Daemon(Child);

impl Daemon {
    fn start(bins: &Bins, home: &Path, log: Option<&str>) -> Result<Daemon> {
        Daemon::start_on(bins, home, log, None)
    }

    /// ... with `bus` as the system bus (none: one that does not exist).
    fn start_on(bins: &Bins, home: &Path, log: Option<&str>, bus: Option<&str>) -> Result<Daemon> {
        let nowhere = format!("unix:path={}/no-bus", home.display());
        let mut cmd = Command::new(&bins.syncmgr);
        cmd.env("SYNCMGR_HOME", home)
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.unwrap_or(&nowhere))
            .env("DBUS_SESSION_BUS_ADDRESS", &nowhere)
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        match log {
            Some(filter) => {
                cmd.env("SYNCMGR_LOG", filter)
                    .stderr(std::fs::File::create(home.join("daemon.log"))?);
            }
            None => {
                cmd.env_remove("SYNCMGR_LOG").stderr(Stdio::null());
            }
        }
        let daemon = Daemon(cmd.spawn()?);
        let socket = home.join("run/daemon.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&socket).is_err() {
            ensure!(Instant::now() < deadline, "the daemon did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(daemon)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn timed(bins: &Bins, home: &Path, args: &[&str]) -> Result<f64> {
    let started = Instant::now();
    syncmgr(bins, home, args)?;
    Ok(started.elapsed().as_secs_f64())
}

/// `sync` through the daemon against inline, on a 1-item and a
/// 10,000-item handler: two homes with the same registrations, one with a
/// daemon, runs alternating.
fn sync(bins: &Bins) -> Result<()> {
    let (inline, through) = (home("smd")?, home("smd")?);
    let many: Vec<String> = (0..10_000).map(|i| format!("i{i:05}")).collect();
    let many = many.join(",");
    let testkit = bins.testkit.display().to_string();
    for home in [inline.path(), through.path()] {
        syncmgr(
            bins,
            home,
            &[
                "register", "one", "--", &testkit, "--items", "a", "--steps", "1",
            ],
        )?;
        syncmgr(
            bins,
            home,
            &[
                "register", "many", "--", &testkit, "--items", &many, "--steps", "1",
            ],
        )?;
    }
    let _daemon = Daemon::start(bins, through.path(), None)?;
    println!(
        "\nsync: `syncmgr sync NAME` (plain lines to /dev/null), median of {SYNC_ROUNDS} alternating rounds"
    );
    println!("| handler | inline | through the daemon | ratio | target ≤ 1.2x |");
    println!("|---|---|---|---|---|");
    for name in ["one", "many"] {
        // Warm up both: the page cache, the database.
        timed(bins, inline.path(), &["sync", name])?;
        timed(bins, through.path(), &["sync", name])?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 1..=SYNC_ROUNDS {
            a.push(timed(bins, inline.path(), &["sync", name])?);
            b.push(timed(bins, through.path(), &["sync", name])?);
            eprintln!(
                "  {name} round {round}: inline {:.3} s, daemon {:.3} s",
                a[round - 1],
                b[round - 1]
            );
        }
        let (a, b) = (median(&mut a), median(&mut b));
        let ratio = b / a;
        println!(
            "| {name} ({} item{}) | {a:.3} s | {b:.3} s | {ratio:.2}x | {} |",
            if name == "one" { "1" } else { "10,000" },
            if name == "one" { "" } else { "s" },
            if ratio <= 1.2 { "met" } else { "NOT met" }
        );
    }
    Ok(())
}

/// A daemon with five schedules, none due, over a minute.
fn idle(bins: &Bins) -> Result<()> {
    let home = home("smd")?;
    let testkit = bins.testkit.display().to_string();
    syncmgr(
        bins,
        home.path(),
        &["register", "one", "--", &testkit, "--items", "a"],
    )?;
    for i in 0..5 {
        let name = format!("s{i}");
        syncmgr(
            bins,
            home.path(),
            &["schedule", "add", &name, "--every", "1h", "one"],
        )?;
    }
    let daemon = Daemon::start(bins, home.path(), Some("syncmgr_manager::daemon=trace"))?;
    // Past start-up (the first round, retention).
    std::thread::sleep(Duration::from_secs(2));
    let rounds_before = timer_rounds(home.path())?;
    let before = cpu_ticks(daemon.pid())?;
    std::thread::sleep(Duration::from_secs(IDLE_SECONDS));
    let after = cpu_ticks(daemon.pid())?;
    let rounds = timer_rounds(home.path())? - rounds_before;
    let ms = (after - before) as f64 * 1000.0 / ticks_per_second() as f64;
    println!("\nidle: a daemon with 5 schedules (every 1h), none due, over {IDLE_SECONDS} s");
    println!("| measure | value | target | verdict |");
    println!("|---|---|---|---|");
    println!(
        "| CPU time (user + system, {} ms ticks) | {ms:.0} ms | ≤ 50 ms | {} |",
        1000 / ticks_per_second(),
        if ms <= 50.0 { "met" } else { "NOT met" }
    );
    println!(
        "| timer rounds | {rounds} | ≤ 1 a minute | {} |",
        if rounds <= IDLE_SECONDS.div_ceil(60) {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

/// Rounds of the daemon's timer so far (its `timer round` trace lines).
fn timer_rounds(home: &Path) -> Result<u64> {
    let log = std::fs::read_to_string(home.join("daemon.log")).unwrap_or_default();
    Ok(log.lines().filter(|l| l.contains("timer round")).count() as u64)
}

struct Sample {
    sessions: usize,
    rss_kib: u64,
    fds: usize,
    threads: u64,
    db_kib: u64,
}

fn sample(pid: u32, home: &Path, sessions: usize) -> Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    let size = |name: &str| std::fs::metadata(home.join(name)).map_or(0, |m| m.len());
    Ok(Sample {
        sessions,
        rss_kib: field("VmRSS:")?,
        fds,
        threads: field("Threads:")?,
        db_kib: (size("syncmgr.db") + size("syncmgr.db-wal")) / 1024,
    })
}

/// One session through the socket, followed to its end.
fn session(socket: &Path) -> Result<()> {
    let mut stream = UnixStream::connect(socket)?;
    stream.write_all(
        br#"{"request":"sync","targets":["files"],"event":null,"cookie":null,"detach":false,"replace":false,"maxConcurrent":4,"graceMs":5000}"#,
    )?;
    stream.write_all(b"\n")?;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        if line.contains("\"sessionFinished\"") {
            return Ok(());
        }
        if line.contains("\"error\"") {
            bail!("the daemon refused: {line}");
        }
    }
    bail!("the daemon closed the connection before the session ended")
}

/// 10,000 sessions back to back, sampled every 1,000.
fn soak(bins: &Bins) -> Result<()> {
    let home = home("smd")?;
    let (src, dst) = (home.path().join("src"), home.path().join("dst"));
    std::fs::create_dir(&src)?;
    std::fs::write(src.join("file"), b"data")?;
    std::fs::write(
        home.path().join("config.toml"),
        "[retention]\nsessions = 1000\n",
    )?;
    let (src, dst) = (src.display().to_string(), dst.display().to_string());
    syncmgr(
        bins,
        home.path(),
        &["register", "files", "--folder", &src, &dst],
    )?;
    syncmgr(
        bins,
        home.path(),
        &["schedule", "add", "tick", "--every", "1s", "files"],
    )?;
    let daemon = Daemon::start(bins, home.path(), None)?;
    let socket = home.path().join("run/daemon.sock");
    let started = Instant::now();
    let mut samples = vec![sample(daemon.pid(), home.path(), 0)?];
    for n in 1..=SOAK_SESSIONS {
        session(&socket)?;
        if n % SOAK_STEP == 0 {
            samples.push(sample(daemon.pid(), home.path(), n)?);
            eprintln!("  {n} sessions, {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "\nsoak: {SOAK_SESSIONS} sessions back to back in {elapsed:.0} s ({:.1} ms each), a 1 s schedule alongside, [retention] sessions = 1000",
        elapsed * 1000.0 / SOAK_SESSIONS as f64
    );
    println!("| sessions | RSS | open fds | threads | database + WAL |");
    println!("|---|---|---|---|---|");
    for s in &samples {
        println!(
            "| {} | {} KiB | {} | {} | {} KiB |",
            s.sessions, s.rss_kib, s.fds, s.threads, s.db_kib
        );
    }
    let warm = samples
        .iter()
        .find(|s| s.sessions == 2 * SOAK_STEP)
        .context("a sample at 2,000")?;
    let last = samples.last().context("samples")?;
    let within = |a: u64, b: u64| (b as f64) <= (a as f64) * 1.1;
    // A sample may catch a session's pipes and sockets open, or a blocking
    // thread of the runtime's pool (idle ones exit after 10 s): two of
    // either is noise, growth per session would be thousands.
    let flat = within(warm.rss_kib, last.rss_kib)
        && last.fds <= warm.fds + 2
        && last.threads <= warm.threads + 2
        && within(warm.db_kib, last.db_kib);
    println!(
        "flat after warm-up (2,000 → {SOAK_SESSIONS}: RSS and database within 10 %, fds and threads within 2): {}",
        if flat { "met" } else { "NOT met" }
    );
    Ok(())
}

/// Milliseconds since the epoch of an RFC 3339 time.
fn epoch_ms(time: &str) -> Result<i64> {
    Ok(chrono::DateTime::parse_from_rfc3339(time)?.timestamp_millis())
}

/// The sessions of a home (`history --json`).
fn history(bins: &Bins, home: &Path) -> Result<Vec<serde_json::Value>> {
    let out = Command::new(&bins.syncmgr)
        .env("SYNCMGR_HOME", home)
        .args(["history", "--json"])
        .output()?;
    ensure!(out.status.success(), "history failed");
    match serde_json::from_slice(&out.stdout)? {
        serde_json::Value::Array(sessions) => Ok(sessions),
        other => bail!("history is not an array: {other}"),
    }
}

/// From a D-Bus signal to the session it starts, and the daemon's idle
/// cost with every source connected.
fn triggers(bins: &Bins) -> Result<()> {
    use syncmgr_testkit::dbus::{
        Bus, LOGIND, LOGIND_MANAGER, LOGIND_PATH, NM, NM_PATH, UPOWER, UPOWER_PATH,
    };
    let python = syncmgr_testkit::dbus::dbusmock_python().context(
        "set SYNCMGR_TEST_DBUSMOCK_PYTHON to a python with dbusmock (scripts/test makes target/dbusmock-venv)",
    )?;
    let mut bus = Bus::start();
    bus.mock(&python, "logind", LOGIND, LOGIND_PATH);
    bus.mock(&python, "networkmanager", NM, NM_PATH);
    bus.mock(&python, "upower", UPOWER, UPOWER_PATH);
    let home = home("smd")?;
    let testkit = bins.testkit.display().to_string();
    syncmgr(
        bins,
        home.path(),
        &[
            "register",
            "mail",
            "--events",
            "pendingDisconnect",
            "--",
            &testkit,
            "--items",
            "a",
        ],
    )?;
    let daemon = Daemon::start_on(bins, home.path(), None, Some(&bus.address))?;
    let wait = |what: &str, mut done: Box<dyn FnMut() -> Result<bool> + '_>| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done()? {
            ensure!(Instant::now() < deadline, "no {what} within 30 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    };
    wait("inhibitor", Box::new(|| Ok(bus.inhibitors() == 1)))?;
    let mut latencies = Vec::new();
    for round in 0..40 {
        let before = history(bins, home.path())?.len();
        let sent = chrono::Utc::now().timestamp_millis();
        bus.emit(LOGIND, LOGIND_PATH, LOGIND_MANAGER, "PrepareForSleep", true);
        let mut started = None;
        wait(
            "pendingDisconnect session",
            Box::new(|| {
                let sessions = history(bins, home.path())?;
                if sessions.len() > before {
                    let last = sessions.last().context("a session")?;
                    started = Some(epoch_ms(last["started"].as_str().context("started")?)?);
                    Ok(!last["outcome"].is_null())
                } else {
                    Ok(false)
                }
            }),
        )?;
        let started = started.context("a start")?;
        latencies.push((started - sent) as f64);
        bus.emit(
            LOGIND,
            LOGIND_PATH,
            LOGIND_MANAGER,
            "PrepareForSleep",
            false,
        );
        wait("inhibitor again", Box::new(|| Ok(bus.inhibitors() == 1)))?;
        if round % 10 == 9 {
            eprintln!("  {} sleeps", round + 1);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!("\ntriggers: logind, NetworkManager and UPower mocks on a private bus");
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| PrepareForSleep → the pendingDisconnect session's start (40 sleeps; ms clock) | p50 {:.0} ms, p99 {:.0} ms |",
        at(0.5),
        at(0.99)
    );
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_ticks(daemon.pid())?;
    std::thread::sleep(Duration::from_secs(IDLE_SECONDS));
    let after = cpu_ticks(daemon.pid())?;
    let ms = (after - before) as f64 * 1000.0 / ticks_per_second() as f64;
    println!(
        "| CPU over {IDLE_SECONDS} s, every source connected, nothing happening | {ms:.0} ms (target ≤ 50 ms: {}) |",
        if ms <= 50.0 { "met" } else { "NOT met" }
    );
    Ok(())
}
