//! The dashboard's costs, measured on the real binary and a real browser
//! (`docs/performance.md`, "The dashboard"):
//!
//! - `sse`: one 10,000-item session (4 progress steps an item) run through
//!   the daemon with 10 event-stream subscribers against the same session
//!   with none, alternating, 5 rounds each: the daemon's CPU time per
//!   session (medians). Target: at most 1.3x.
//! - `latency`: a Python handler (the SDK) reports progress every 20 ms,
//!   each with its wall-clock time in the text; headless Chromium's page
//!   records, for each text it shows, the time from that report to the
//!   DOM update (a `MutationObserver`). p50 and p99 of 300. Target: p99 at
//!   most 250 ms.
//! - `page`: a handler with 1,000 items: the page's weight (HTML, script,
//!   style) and its time to first contentful paint in Chromium (median of
//!   5 loads). Target: at most 1 MB and 1 s.
//!
//! `cargo bench -p syncmgr --bench dashboard [-- sse|latency|page]`. The
//! browser sections need `chromium` and `chromedriver` (`scripts/test`
//! installs them).

#![allow(clippy::print_stdout, clippy::print_stderr)] // a report for people

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use syncmgr_testkit::http::{self, EventStream};

const SSE_ROUNDS: usize = 5;
const SUBSCRIBERS: usize = 10;
const ITEMS: usize = 10_000;
const LATENCY_SAMPLES: usize = 300;
const PAGE_ITEMS: usize = 1_000;
const PAGE_LOADS: usize = 5;

fn main() -> Result<()> {
    let run = selected(&["sse", "latency", "page"]);
    let syncmgr = PathBuf::from(env!("CARGO_BIN_EXE_syncmgr"));
    let profile = syncmgr.parent().context("target dir")?.to_path_buf();
    let testkit = syncmgr_testkit::build_test_handler(&profile);
    let bins = Bins { syncmgr, testkit };
    println!("{}", load());
    if run("sse") {
        sse(&bins)?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    if run("latency") {
        runtime.block_on(latency(&bins))?;
    }
    if run("page") {
        runtime.block_on(page(&bins))?;
    }
    Ok(())
}

struct Bins {
    syncmgr: PathBuf,
    testkit: PathBuf,
}

fn syncmgr(bins: &Bins, home: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(&bins.syncmgr)
        .env("SYNCMGR_HOME", home)
        .env_remove("SYNCMGR_LOG")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    ensure!(
        out.status.success(),
        "syncmgr {} failed: {}",
        args.join(" "),
        out.status
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// A daemon with its dashboard on a free port; stopped when dropped.
struct Daemon {
    child: Child,
    address: String,
    key: String,
}

impl Daemon {
    fn start(bins: &Bins, home: &Path) -> Result<Daemon> {
        let nowhere = format!("unix:path={}/no-bus", home.display());
        let child = Command::new(&bins.syncmgr)
            .env("SYNCMGR_HOME", home)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &nowhere)
            .env("DBUS_SESSION_BUS_ADDRESS", &nowhere)
            .env_remove("SYNCMGR_LOG")
            .args(["daemon", "--web", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let socket = home.join("run/daemon.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&socket).is_err() {
            ensure!(Instant::now() < deadline, "the daemon did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        let status: Value = serde_json::from_str(&syncmgr(bins, home, &["status", "--json"])?)?;
        let url = status["daemon"]["web"]["url"]
            .as_str()
            .context("no dashboard")?;
        let address = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let key = std::fs::read_to_string(home.join("api-key"))?
            .trim()
            .to_owned();
        Ok(Daemon {
            child,
            address,
            key,
        })
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.key)
    }

    fn get(&self, path: &str) -> http::Response {
        http::request(
            &self.address,
            "GET",
            path,
            &[("Authorization", &self.bearer())],
            None,
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let at = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[at]
}

/// Subscribers that read the event stream until the session's end.
fn subscribe(daemon: &Daemon, n: usize) -> Result<Vec<std::thread::JoinHandle<usize>>> {
    let mut readers = Vec::new();
    for _ in 0..n {
        let (address, bearer) = (daemon.address.clone(), daemon.bearer());
        readers.push(std::thread::spawn(move || {
            let mut stream =
                EventStream::open(&address, "/api/v1/events", &[("Authorization", &bearer)]);
            let mut events = 0;
            while let Some(event) = stream.next(Duration::from_secs(300)) {
                events += 1;
                if event.data.contains("\"sessionFinished\"") {
                    break;
                }
            }
            events
        }));
    }
    // Every one follows before the session starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = format!("syncmgr_events_subscribers {n}\n");
    while !daemon.get("/metrics").body.contains(&line) {
        ensure!(Instant::now() < deadline, "the subscribers did not connect");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(readers)
}

fn sse(bins: &Bins) -> Result<()> {
    println!("\n## sse: a {ITEMS}-item session, {SUBSCRIBERS} event-stream subscribers vs none");
    let home = home("smw")?;
    let items: Vec<String> = (0..ITEMS).map(|i| format!("i{i}")).collect();
    let items = items.join(",");
    let handler = bins.testkit.to_str().context("path")?;
    syncmgr(
        bins,
        home.path(),
        &["register", "many", "--", handler, "--items", &items],
    )?;
    let daemon = Daemon::start(bins, home.path())?;
    let pid = daemon.child.id();
    let tick = 1000.0 / ticks_per_second() as f64;
    let (mut none, mut some) = (Vec::new(), Vec::new());
    // A first session warms the store and the page cache.
    syncmgr(bins, home.path(), &["sync", "many"])?;
    for round in 0..SSE_ROUNDS * 2 {
        let with = round % 2 == 1;
        let readers = if with {
            subscribe(&daemon, SUBSCRIBERS)?
        } else {
            Vec::new()
        };
        let before = cpu_ticks(pid)?;
        let started = Instant::now();
        syncmgr(bins, home.path(), &["sync", "many"])?;
        let wall = started.elapsed().as_secs_f64();
        let mut received = Vec::new();
        for reader in readers {
            received.push(
                reader
                    .join()
                    .map_err(|_| anyhow::anyhow!("a reader panicked"))?,
            );
        }
        let cpu = (cpu_ticks(pid)? - before) as f64 * tick;
        println!(
            "round {round}: {} subscribers: daemon CPU {cpu:.0} ms, wall {wall:.2} s{}",
            if with { SUBSCRIBERS } else { 0 },
            if with {
                format!(", events per subscriber {received:?}")
            } else {
                String::new()
            }
        );
        if with { some.push(cpu) } else { none.push(cpu) }
    }
    let (a, b) = (median(&mut none), median(&mut some));
    println!(
        "median daemon CPU: none {a:.0} ms, {SUBSCRIBERS} subscribers {b:.0} ms: {:.2}x (target <= 1.3x)",
        b / a
    );
    Ok(())
}

/// chromedriver and a headless Chromium session.
struct Browser {
    driver: Child,
    client: fantoccini::Client,
    _profile: tempfile::TempDir,
}

async fn browser() -> Result<Browser> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("chromedriver (Debian's chromium-driver)")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let profile = tempfile::tempdir()?;
    let Value::Object(capabilities) = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }
    }) else {
        bail!("capabilities")
    };
    let client =
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await?;
    Ok(Browser {
        driver,
        client,
        _profile: profile,
    })
}

impl Browser {
    async fn close(mut self) -> Result<()> {
        self.client.clone().close().await?;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        Ok(())
    }
}

async fn log_in(bins: &Bins, home: &Path, browser: &Browser) -> Result<()> {
    let link = syncmgr(bins, home, &["dashboard", "--no-open"])?;
    browser.client.goto(link.trim()).await?;
    live(browser).await
}

/// Waits until the page follows the event stream.
async fn live(browser: &Browser) -> Result<()> {
    browser
        .client
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(fantoccini::Locator::Css("#connection[data-state=\"live\"]"))
        .await?;
    Ok(())
}

const LATENCY_HANDLER: &str = r#"
import os, sys, time
sys.path.insert(0, sys.argv[1])
from syncmgr_handler import STOPPED, Handler, Item, serve

class Clock(Handler):
    name = "Clock"
    def items(self):
        return [Item("tick", "Tick")]
    def sync_item(self, item, progress):
        n = int(sys.argv[2])
        for step in range(1, n + 1):
            if progress.wait_cancelled(0.02):
                return STOPPED
            # The report's wall-clock time, in microseconds.
            if progress.report(value=step, max=n, text=str(time.time_ns() // 1000)) != "continue":
                return STOPPED
        return None

serve(Clock())
"#;

async fn latency(bins: &Bins) -> Result<()> {
    println!("\n## latency: a handler's progress to the browser's DOM");
    let home = home("smw")?;
    let script = home.path().join("clock.py");
    std::fs::write(&script, LATENCY_HANDLER)?;
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/python");
    let samples = (LATENCY_SAMPLES + 20).to_string();
    syncmgr(
        bins,
        home.path(),
        &[
            "register",
            "clock",
            "--",
            "python3",
            script.to_str().context("path")?,
            sdk.to_str().context("path")?,
            &samples,
        ],
    )?;
    let _daemon = Daemon::start(bins, home.path())?;
    let browser = browser().await?;
    log_in(bins, home.path(), &browser).await?;
    // Each text the row shows: now minus the time it carries.
    browser
        .client
        .execute(
            r#"
            window.latencies = [];
            const text = document.querySelector('tr.item[data-handler="clock"] .text');
            new MutationObserver(() => {
                const sent = parseInt(text.textContent, 10);
                if (!isNaN(sent)) {
                    window.latencies.push((performance.timeOrigin + performance.now()) * 1000 - sent);
                }
            }).observe(text, { childList: true, characterData: true, subtree: true });
            "#,
            vec![],
        )
        .await?;
    browser
        .client
        .find(fantoccini::Locator::Css(
            "tr.item[data-handler=\"clock\"] button[data-action=\"sync\"]",
        ))
        .await?
        .click()
        .await?;
    browser
        .client
        .wait()
        .at_most(Duration::from_secs(120))
        .for_element(fantoccini::Locator::Css(
            "tr.item[data-handler=\"clock\"][data-state=\"succeeded\"]",
        ))
        .await?;
    let values = browser
        .client
        .execute("return window.latencies;", vec![])
        .await?;
    let mut ms: Vec<f64> = values
        .as_array()
        .context("latencies")?
        .iter()
        .filter_map(Value::as_f64)
        .map(|us| us / 1000.0)
        .collect();
    browser.close().await?;
    ensure!(ms.len() >= LATENCY_SAMPLES / 2, "only {} samples", ms.len());
    let shown = ms.len();
    let (p50, p99) = (percentile(&mut ms, 0.5), percentile(&mut ms, 0.99));
    println!(
        "{shown} of {} reports shown (the rest coalesced): p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms (target p99 <= 250 ms)",
        LATENCY_SAMPLES + 20,
        ms.last().copied().unwrap_or_default()
    );
    Ok(())
}

async fn page(bins: &Bins) -> Result<()> {
    println!("\n## page: {PAGE_ITEMS} items");
    let home = home("smw")?;
    let items: Vec<String> = (0..PAGE_ITEMS).map(|i| format!("i{i}")).collect();
    let handler = bins.testkit.to_str().context("path")?;
    syncmgr(
        bins,
        home.path(),
        &[
            "register",
            "many",
            "--",
            handler,
            "--items",
            &items.join(","),
        ],
    )?;
    syncmgr(bins, home.path(), &["sync", "many"])?;
    let daemon = Daemon::start(bins, home.path())?;
    let html = daemon.get("/").body.len();
    let script = daemon.get("/assets/app.js").body.len();
    let style = daemon.get("/assets/app.css").body.len();
    let total = html + script + style;
    println!(
        "weight: HTML {:.0} KB, script {:.1} KB, style {:.1} KB: {:.0} KB in all (target <= 1 MB)",
        html as f64 / 1024.0,
        script as f64 / 1024.0,
        style as f64 / 1024.0,
        total as f64 / 1024.0
    );
    let browser = browser().await?;
    log_in(bins, home.path(), &browser).await?;
    let mut paints = Vec::new();
    let mut served = Vec::new();
    for _ in 0..PAGE_LOADS {
        browser.client.refresh().await?;
        live(&browser).await?;
        let timing = browser
            .client
            .execute(
                r#"
                const paint = performance.getEntriesByName('first-contentful-paint')[0];
                const nav = performance.getEntriesByType('navigation')[0];
                return [paint ? paint.startTime : -1, nav.responseEnd - nav.requestStart];
                "#,
                vec![],
            )
            .await?;
        let paint = timing[0].as_f64().context("paint")?;
        ensure!(paint >= 0.0, "no first-contentful-paint entry");
        paints.push(paint);
        served.push(timing[1].as_f64().context("nav")?);
    }
    browser.close().await?;
    println!(
        "first contentful paint: median {:.0} ms of {PAGE_LOADS} loads ({paints:.0?}); the server's answer {:.0} ms (target <= 1 s)",
        median(&mut paints.clone()),
        median(&mut served)
    );
    Ok(())
}
