//! The handler SDKs' own cost: pipelined `progress` throughput and sequential
//! round-trip latency of a handler written with the Rust SDK
//! (`Progress::report`) and with the Python SDK
//! (`sdk/python/syncmgr_handler.py`), each against a hand-written handler in
//! the same language that speaks raw NDJSON (see `docs/performance.md`).
//!
//! `cargo bench -p syncmgr-sdk --bench sdk [-- rust|python]`
//!
//! This process plays a minimal manager, no engine: it sends `initialize`,
//! `getHandlerInfo`, `enumItems`, `prepareForSync ["a"]`, `synchronize` to a
//! child over its stdin/stdout and answers every `progress` request with
//! `{"action":"continue"}`. During `synchronize` the child reports on item
//! `a` as fast as it can and times itself; its last stderr line is
//! `BENCH n=<N> elapsed_us=<T> p50_us=<..> p99_us=<..>`.
//!
//! - `flood` (pipelined): N reports from one thread with `W` in flight. The
//!   SDK children call `post` (the SDK keeps `POST_WINDOW` = `W` in flight
//!   and reads answers when the window is full); the raw children write while
//!   fewer than `W` are in flight and otherwise read one reply. One write per
//!   request on both sides.
//! - `threads`: N reports from `W` threads, each waiting for its answer
//!   (`report`); the raw children run a writer thread that keeps `W` in
//!   flight and read the replies on the main thread.
//! - `rtt`: N reports one after the other, each timed from before the write
//!   to after the reply is parsed.
//!
//! Target: the SDK adds at most 25 % to the raw cost (1/throughput, and
//! latency p50/p99) of the same language. The binary is also the Rust
//! children: `sdk --child raw|sdk flood|threads|rtt N W`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use serde_json::value::RawValue;
use syncmgr_sdk::{
    HandlerError, HandlerInfo, InitContext, Item, ItemOutcome, Progress, SyncHandler, Update,
};
use syncmgr_testkit::RawPeer;

/// Reports per Rust flood run, per Python flood run, round trips per rtt run.
const RUST_FLOOD_N: u64 = 200_000;
const PY_FLOOD_N: u64 = 20_000;
const RTT_N: u64 = 5_000;
/// Requests in flight during a flood (= reporting threads of the SDK child).
const WINDOW: u64 = 8;
/// Runs per child (alternating); medians are reported.
/// This VM flips between a fast and a slow state (a round trip of 6 or
/// 35-50 µs) from one child to the next, so a median needs more than a
/// handful of pairs to be stable.
const ROUNDS: usize = 9;
/// The most the SDK may add to the raw cost.
const TARGET: f64 = 1.25;

/// Builds a child's argv from side, mode and N.
type Argv<'a> = &'a dyn Fn(&str, &str, u64) -> Vec<String>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        return child(&args[pos + 1..]);
    }
    let exe = std::env::current_exe()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let py_child = root.join("benches/sdk_child.py");
    let py_path = root.join("../../sdk/python").canonicalize()?;
    let rust = |side: &str, mode: &str, n: u64| -> Vec<String> {
        vec![
            exe.display().to_string(),
            "--child".into(),
            side.into(),
            mode.into(),
            n.to_string(),
            WINDOW.to_string(),
        ]
    };
    let python = |side: &str, mode: &str, n: u64| -> Vec<String> {
        vec![
            "python3".into(),
            py_child.display().to_string(),
            side.into(),
            mode.into(),
            n.to_string(),
            WINDOW.to_string(),
        ]
    };
    let env = [("PYTHONPATH", py_path)];
    // `-- once rust|python raw|sdk MODE N`: one child, for profiling.
    if let [_, once, lang, side, mode, n] = &args[..]
        && once == "once"
    {
        let argv = if lang == "rust" {
            rust(side, mode, n.parse()?)
        } else {
            python(side, mode, n.parse()?)
        };
        let f = run(&argv, &env)?;
        println!("{:.0}/s p50 {:.1} µs p99 {:.1} µs", f.rate(), f.p50, f.p99);
        return Ok(());
    }
    eprintln!("{}", machine());
    eprintln!(
        "{ROUNDS} rounds; flood: Rust {RUST_FLOOD_N}, Python {PY_FLOOD_N} reports, {WINDOW} in flight; rtt: {RTT_N} sequential round trips"
    );
    // `cargo bench --bench sdk -- rust` (or `python`) runs one language.
    let only: Vec<String> = args[1..]
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(|a| a.to_lowercase())
        .collect();
    let mut table = Table::default();
    for lang in ["Rust", "Python"] {
        if !only.is_empty() && !only.contains(&lang.to_lowercase()) {
            continue;
        }
        let (argv, flood_n): (Argv<'_>, u64) = if lang == "Rust" {
            (&rust, RUST_FLOOD_N)
        } else {
            (&python, PY_FLOOD_N)
        };
        // Warm-up: page cache, first spawn, Python's bytecode cache.
        for side in ["raw", "sdk"] {
            run(&argv(side, "flood", flood_n / 10), &env)?;
            run(&argv(side, "rtt", RTT_N / 10), &env)?;
        }
        let mut runs = Runs::default();
        for round in 1..=ROUNDS {
            let r = run(&argv("raw", "flood", flood_n), &env)?;
            let s = run(&argv("sdk", "flood", flood_n), &env)?;
            let rt = run(&argv("raw", "threads", flood_n), &env)?;
            let st = run(&argv("sdk", "threads", flood_n), &env)?;
            let rl = run(&argv("raw", "rtt", RTT_N), &env)?;
            let sl = run(&argv("sdk", "rtt", RTT_N), &env)?;
            eprintln!(
                "  {lang} round {round}: flood raw {:>7.0}/s sdk {:>7.0}/s   threads raw {:>7.0}/s sdk {:>7.0}/s   rtt p50/p99 raw {:.1}/{:.1} µs sdk {:.1}/{:.1} µs",
                r.rate(),
                s.rate(),
                rt.rate(),
                st.rate(),
                rl.p50,
                rl.p99,
                sl.p50,
                sl.p99
            );
            runs.flood.push((r, s));
            runs.threads.push((rt, st));
            runs.rtt.push((rl, sl));
        }
        // Ratios are paired per round (the runs of a round are adjacent, so
        // they share the machine's load), then the median is taken.
        let rate_row = |table: &mut Table, what: String, pairs: &[(Figures, Figures)]| {
            table.row(
                &what,
                format!("{:.0}/s", median(pairs.iter().map(|(_, s)| s.rate()))),
                format!("{:.0}/s", median(pairs.iter().map(|(r, _)| r.rate()))),
                median(pairs.iter().map(|(r, s)| r.rate() / s.rate())),
            );
        };
        rate_row(
            &mut table,
            format!("{lang}: pipelined reports/s (one thread, {WINDOW} in flight)"),
            &runs.flood,
        );
        for (what, pick) in [
            ("p50", (|f: &Figures| f.p50) as fn(&Figures) -> f64),
            ("p99", |f: &Figures| f.p99),
        ] {
            table.row(
                &format!("{lang}: round trip {what}"),
                format!("{:.1} µs", median(runs.rtt.iter().map(|(_, s)| pick(s)))),
                format!("{:.1} µs", median(runs.rtt.iter().map(|(r, _)| pick(r)))),
                median(runs.rtt.iter().map(|(r, s)| pick(s) / pick(r))),
            );
        }
        rate_row(
            &mut table,
            format!("{lang}: reports/s from {WINDOW} threads, each waiting"),
            &runs.threads,
        );
        table.runs.push((lang, runs));
    }
    table.print();
    Ok(())
}

// ---------------------------------------------------------------------------
// The parent: a minimal manager.

/// What a child measured.
#[derive(Debug, Clone, Copy)]
struct Figures {
    n: u64,
    elapsed_us: f64,
    p50: f64,
    p99: f64,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.n as f64 * 1e6 / self.elapsed_us
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn machine() -> String {
    let cpus = thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    format!("machine: {cpus} CPUs, {model}")
}

/// Runs one child to the end as its manager; returns its figures.
fn run(argv: &[String], env: &[(&str, PathBuf)]) -> Result<Figures> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {argv:?}"))?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let notes = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let served = RawPeer::serve(&mut child);
    let notes = notes.join().map_err(|_| anyhow::anyhow!("stderr thread"))?;
    let (answered, status) = served.with_context(|| format!("{argv:?}: {notes}"))?;
    ensure!(status.success(), "{argv:?} exited with {status}: {notes}");
    let line = notes
        .lines()
        .rev()
        .find(|l| l.starts_with("BENCH "))
        .with_context(|| format!("no BENCH line from {argv:?}: {notes}"))?;
    let field = |name: &str| -> Result<f64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .with_context(|| format!("no {name} in {line:?}"))
    };
    let figures = Figures {
        n: field("n")? as u64,
        elapsed_us: field("elapsed_us")?,
        p50: field("p50_us")?,
        p99: field("p99_us")?,
    };
    // The SDK children also report `updating` and `succeeded`.
    ensure!(
        answered >= figures.n && answered <= figures.n + 2,
        "{argv:?}: answered {answered} reports for n={}",
        figures.n
    );
    Ok(figures)
}

/// The (raw, SDK) figures of every round, per workload.
#[derive(Default)]
struct Runs {
    flood: Vec<(Figures, Figures)>,
    threads: Vec<(Figures, Figures)>,
    rtt: Vec<(Figures, Figures)>,
}

#[derive(Default)]
struct Table {
    rows: Vec<[String; 5]>,
    runs: Vec<(&'static str, Runs)>,
}

impl Table {
    /// `cost` = SDK cost / raw cost (1/throughput, or latency).
    fn row(&mut self, what: &str, sdk: String, raw: String, cost: f64) {
        let verdict = if cost <= TARGET { "met" } else { "NOT met" };
        self.rows.push([
            what.to_owned(),
            sdk,
            raw,
            format!("{:+.0} %", (cost - 1.0) * 100.0),
            verdict.to_owned(),
        ]);
    }

    fn print(&self) {
        let heads = [
            "benchmark (medians of 9 rounds)",
            "SDK",
            "raw",
            "SDK adds (paired)",
            "verdict (≤ +25 %)",
        ];
        let widths: Vec<usize> = (0..5)
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([heads[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[&str]| {
            let mut s = String::new();
            for (c, w) in cells.iter().zip(&widths) {
                let pad = w.saturating_sub(c.chars().count());
                let _ = write!(s, "{c}{}  ", " ".repeat(pad));
            }
            s.trim_end().to_owned()
        };
        println!();
        println!("{}", line(&heads));
        println!("{}", "-".repeat(widths.iter().sum::<usize>() + 8));
        for r in &self.rows {
            println!(
                "{}",
                line(&r.iter().map(String::as_str).collect::<Vec<_>>())
            );
        }
        // Python against Rust, for scale (not the target).
        if let [(_, rust), (_, python)] = &self.runs[..] {
            let rate = |v: &[(Figures, Figures)], sdk: bool| {
                median(v.iter().map(|(r, s)| if sdk { s.rate() } else { r.rate() }))
            };
            let p50 = |v: &[(Figures, Figures)], sdk: bool| {
                median(v.iter().map(|(r, s)| if sdk { s.p50 } else { r.p50 }))
            };
            println!(
                "  * Python vs Rust raw (scale only): pipelined raw {:.0} %, SDK {:.0} % of Rust raw; \
                 rtt p50 raw {:.1}x, SDK {:.1}x Rust raw",
                rate(&python.flood, false) / rate(&rust.flood, false) * 100.0,
                rate(&python.flood, true) / rate(&rust.flood, false) * 100.0,
                p50(&python.rtt, false) / p50(&rust.rtt, false),
                p50(&python.rtt, true) / p50(&rust.rtt, false),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The Rust children.

fn child(args: &[String]) -> Result<()> {
    let [side, mode, n, window] = args else {
        bail!("usage: sdk --child raw|sdk flood|threads|rtt N W");
    };
    let n: u64 = n.parse()?;
    let window: u64 = window.parse()?;
    let mode = match mode.as_str() {
        "flood" => Mode::Flood,
        "threads" => Mode::Threads,
        "rtt" => Mode::Rtt,
        other => bail!("unknown mode {other}"),
    };
    match side.as_str() {
        "raw" => raw_child(mode, n, window),
        "sdk" => {
            ensure!(
                mode != Mode::Flood || window == syncmgr_sdk::POST_WINDOW as u64,
                "the SDK's flood keeps POST_WINDOW reports in flight, not {window}"
            );
            syncmgr_sdk::serve(Bench { mode, n, window })?;
            Ok(())
        }
        other => bail!("unknown side {other}"),
    }
}

/// What a child does during `synchronize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// N reports from one thread, W in flight (`Progress::post`).
    Flood,
    /// N reports from W threads, each waiting for its answer (`report`).
    Threads,
    /// N reports one after the other, each timed.
    Rtt,
}

/// Prints the figures line; `samples` are round trips in µs (may be empty).
fn bench_line(n: u64, elapsed: f64, samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
    let q = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    };
    eprintln!(
        "BENCH n={n} elapsed_us={elapsed:.0} p50_us={:.2} p99_us={:.2}",
        q(0.5),
        q(0.99)
    );
}

/// The Rust SDK child: one item, `sync_item` reports `n` times.
struct Bench {
    mode: Mode,
    n: u64,
    window: u64,
}

impl SyncHandler for Bench {
    fn info(&self) -> HandlerInfo {
        HandlerInfo::new("SDK bench")
    }

    fn items(&mut self, _ctx: &InitContext) -> Result<Vec<Item>, HandlerError> {
        Ok(vec![Item::new("a", "A")])
    }

    fn sync_item(&self, _item: &str, progress: &Progress) -> Result<ItemOutcome, HandlerError> {
        let n = self.n;
        match self.mode {
            Mode::Flood => {
                let start = Instant::now();
                for i in 1..=n {
                    let _ = progress.post(Update::progress(i, n));
                }
                progress.flush();
                bench_line(n, start.elapsed().as_secs_f64() * 1e6, &mut []);
            }
            Mode::Threads => {
                let start = Instant::now();
                thread::scope(|s| {
                    for t in 0..self.window {
                        s.spawn(move || {
                            for i in (t..n).step_by(self.window as usize) {
                                let _ = progress.report(Update::progress(i + 1, n));
                            }
                        });
                    }
                });
                bench_line(n, start.elapsed().as_secs_f64() * 1e6, &mut []);
            }
            Mode::Rtt => {
                let mut samples = Vec::with_capacity(n as usize);
                let start = Instant::now();
                for i in 1..=n {
                    let t = Instant::now();
                    let _ = progress.report(Update::progress(i, n));
                    samples.push(t.elapsed().as_secs_f64() * 1e6);
                }
                bench_line(n, start.elapsed().as_secs_f64() * 1e6, &mut samples);
            }
        }
        Ok(ItemOutcome::succeeded())
    }
}

/// A request of the manager or a reply to ours: what the raw child reads.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<&'a str>,
    #[serde(borrow)]
    result: Option<ActionResult<'a>>,
}

#[derive(Deserialize)]
struct ActionResult<'a> {
    #[serde(borrow)]
    action: Option<&'a str>,
}

fn request(id: u64, i: u64, n: u64) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"progress\",\"params\":{{\"item\":\"a\",\"value\":{i},\"max\":{n}}}}}\n"
    )
}

/// The raw Rust child: the lifecycle answered by hand, then the workload
/// during `synchronize`. One `write` per request, like the SDK.
fn raw_child(mode: Mode, n: u64, window: u64) -> Result<()> {
    let mut input = BufReader::new(std::io::stdin().lock());
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let send = |line: &str| -> Result<()> {
        let out = out.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let mut out = out.lock();
        out.write_all(line.as_bytes())?;
        out.flush()?;
        Ok(())
    };
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let msg: Incoming<'_> = serde_json::from_str(&line)?;
        let (Some(method), Some(id)) = (msg.method, msg.id) else {
            if msg.method == Some("shutdown") {
                return Ok(());
            }
            continue;
        };
        let result = match method {
            "initialize" => r#"{"participate":true}"#,
            "getHandlerInfo" => r#"{"name":"raw bench","flags":{}}"#,
            "enumItems" => r#"{"items":[{"id":"a","name":"A"}],"complete":true}"#,
            "synchronize" => {
                match mode {
                    Mode::Flood => raw_flood(&mut input, &send, n, window)?,
                    Mode::Threads => raw_threads(&mut input, &out, n, window)?,
                    Mode::Rtt => raw_rtt(&mut input, &send, n)?,
                }
                "{}"
            }
            _ => "{}",
        };
        send(&format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{result}}}\n",
            id.get()
        ))?;
    }
}

/// Reads one reply and checks it says `continue`.
fn read_reply(input: &mut impl BufRead, line: &mut String) -> Result<()> {
    line.clear();
    ensure!(input.read_line(line)? > 0, "end of input during the run");
    let msg: Incoming<'_> = serde_json::from_str(line)?;
    let action = msg.result.and_then(|r| r.action);
    ensure!(
        msg.id.is_some() && action == Some("continue"),
        "unexpected reply {line}"
    );
    Ok(())
}

fn raw_rtt(input: &mut impl BufRead, send: &dyn Fn(&str) -> Result<()>, n: u64) -> Result<()> {
    let mut line = String::new();
    let mut samples = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for i in 1..=n {
        let t = Instant::now();
        send(&request(1_000_000 + i, i, n))?;
        read_reply(input, &mut line)?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    bench_line(n, start.elapsed().as_secs_f64() * 1e6, &mut samples);
    Ok(())
}

/// One thread keeps `window` requests in flight: it writes while there is
/// room, otherwise reads one reply.
fn raw_flood(
    input: &mut impl BufRead,
    send: &dyn Fn(&str) -> Result<()>,
    n: u64,
    window: u64,
) -> Result<()> {
    let mut line = String::new();
    let (mut sent, mut in_flight) = (0, 0);
    let start = Instant::now();
    while sent < n || in_flight > 0 {
        if sent < n && in_flight < window {
            sent += 1;
            send(&request(1_000_000 + sent, sent, n))?;
            in_flight += 1;
        } else {
            read_reply(input, &mut line)?;
            in_flight -= 1;
        }
    }
    bench_line(n, start.elapsed().as_secs_f64() * 1e6, &mut []);
    Ok(())
}

/// A writer thread keeps `window` requests in flight; this thread reads.
fn raw_threads(
    input: &mut impl BufRead,
    out: &Arc<Mutex<std::io::Stdout>>,
    n: u64,
    window: u64,
) -> Result<()> {
    let credit = Arc::new((Mutex::new(window), Condvar::new()));
    let start = Instant::now();
    thread::scope(|s| -> Result<()> {
        let writer = {
            let credit = Arc::clone(&credit);
            s.spawn(move || -> Result<()> {
                for i in 1..=n {
                    {
                        let (lock, cv) = &*credit;
                        let mut free = lock.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                        while *free == 0 {
                            free = cv.wait(free).map_err(|_| anyhow::anyhow!("poisoned"))?;
                        }
                        *free -= 1;
                    }
                    let out = out.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    let mut out = out.lock();
                    out.write_all(request(1_000_000 + i, i, n).as_bytes())?;
                    out.flush()?;
                }
                Ok(())
            })
        };
        let mut line = String::new();
        for _ in 0..n {
            read_reply(input, &mut line)?;
            let (lock, cv) = &*credit;
            *lock.lock().map_err(|_| anyhow::anyhow!("poisoned"))? += 1;
            cv.notify_one();
        }
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))?
    })?;
    bench_line(n, start.elapsed().as_secs_f64() * 1e6, &mut []);
    Ok(())
}
