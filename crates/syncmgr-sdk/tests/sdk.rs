//! The handler SDKs, end to end: the example handlers of the Rust SDK
//! (`examples/minimal.rs`, `examples/git_mirror.rs`), of the Python SDK
//! (`sdk/python/examples/`) and the shell example
//! (`examples/handlers/shell-handler.sh`) run as real child processes,
//! driven by the core's session engine through `ProcessHandler` with an
//! in-memory journal: the lifecycle, a cancelled item, a cancelled handler,
//! and the retry path of an actionable log entry (`showError`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use syncmgr_core::{
    CancelTarget, HandlerJob, ItemSnapshot, ItemStatus, LogLevel, MemoryJournal, NewLogEntry,
    Selection, Session, SessionConfig, SessionEvent, SessionOutcome, SessionSummary, SyncEvent,
};
use syncmgr_protocol::ProcessHandler;
use tokio::time::timeout;

/// The longest a session may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The built example `name` of this crate, next to this test binary
/// (`target/<profile>/examples/`).
///
/// `cargo test` builds the examples, but not when given a test name filter,
/// so a filtered run could test a stale or missing binary: the examples are
/// brought up to date once per run (a no-op when they are fresh; cargo does
/// not hold its lock while tests run).
fn example(name: &str) -> String {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let profile_dir = syncmgr_testkit::test_profile_dir();
        let dir = profile_dir.join("examples");
        syncmgr_testkit::cargo_build(
            &profile_dir,
            &["-p", "syncmgr-sdk", "--examples"],
            &dir.join("minimal"),
        );
        dir
    });
    let path = dir.join(name);
    assert!(path.exists(), "no example binary at {}", path.display());
    path.to_string_lossy().into_owned()
}

/// When to cancel what: once `item` is seen `updating`.
struct CancelWhen {
    item: &'static str,
    target: CancelTarget,
}

/// One finished session.
struct Run {
    summary: SessionSummary,
    log: Vec<NewLogEntry>,
    /// Every item snapshot seen, in order.
    snapshots: Vec<ItemSnapshot>,
}

impl Run {
    fn status(&self, item: &str) -> ItemStatus {
        self.summary
            .items
            .iter()
            .find(|r| r.item == item)
            .unwrap_or_else(|| panic!("no result for {item}: {}", self.describe()))
            .status
    }

    /// The last snapshot of `item`.
    fn last(&self, item: &str) -> &ItemSnapshot {
        self.snapshots
            .iter()
            .rev()
            .find(|s| s.item == item)
            .unwrap_or_else(|| panic!("no snapshot of {item}: {}", self.describe()))
    }

    /// Log entries at warning level or above (the examples write none unless
    /// something fails).
    fn problems(&self) -> Vec<&NewLogEntry> {
        self.log
            .iter()
            .filter(|e| e.level != LogLevel::Information)
            .collect()
    }

    fn describe(&self) -> String {
        format!("{:?}\n{:#?}", self.summary, self.log)
    }
}

/// Runs one session of the handler `argv` (registered as "h").
async fn session(argv: Vec<String>, selection: Selection, cancel: Option<CancelWhen>) -> Run {
    let journal = Arc::new(MemoryJournal::default());
    // No `__pycache__` in the checkout from the Python examples.
    let env = [("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned())];
    let handler = ProcessHandler::spawn(&argv, None, &env)
        .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"));
    let job = HandlerJob {
        name: "h".to_owned(),
        handler: Box::new(handler),
        selection,
        timeout: Duration::from_secs(10),
    };
    let config = SessionConfig::new("sdk-test", SyncEvent::Manual);
    let (session, control, mut events) = Session::new(config, journal.clone(), vec![job]);
    let watch = async move {
        let mut snapshots = Vec::new();
        let mut cancel = cancel;
        while let Some(event) = events.recv().await {
            match event {
                SessionEvent::ItemChanged(item) => {
                    if let Some(when) = cancel
                        .take_if(|c| c.item == item.item && item.status == ItemStatus::Updating)
                    {
                        assert!(control.cancel(&when.target));
                    }
                    snapshots.push(item);
                }
                SessionEvent::Finished(_) => break,
                _ => {}
            }
        }
        snapshots
    };
    let (summary, snapshots) = timeout(DEADLINE, async { tokio::join!(session.run(), watch) })
        .await
        .unwrap_or_else(|_| panic!("the session of {argv:?} did not finish in {DEADLINE:?}"));
    let log = journal.entries().into_iter().map(|(_, e)| e).collect();
    Run {
        summary,
        log,
        snapshots,
    }
}

fn checked() -> Selection {
    Selection::Checked(HashMap::new())
}

fn cancel_item(item: &'static str) -> Option<CancelWhen> {
    Some(CancelWhen {
        item,
        target: CancelTarget::Item {
            handler: "h".to_owned(),
            item: item.to_owned(),
        },
    })
}

fn cancel_handler(when: &'static str) -> Option<CancelWhen> {
    Some(CancelWhen {
        item: when,
        target: CancelTarget::Handler("h".to_owned()),
    })
}

// ---------------------------------------------------------------------------
// The same four checks for the three "counting" examples (the Rust and Python
// `minimal` and the shell example): two items counting to a number of steps,
// an item that fails once with the actionable entry `retry-ITEM`.

/// A counting example.
struct Counter {
    /// Its command line for: steps, milliseconds per step, an item to fail.
    argv: fn(u64, u64, Option<&str>) -> Option<Vec<String>>,
    /// Its two items, in order.
    items: [&'static str; 2],
}

impl Counter {
    /// The command line, or `None` when the example cannot run here (the
    /// reason was printed).
    fn argv(&self, steps: u64, step_ms: u64, fail: Option<&str>) -> Option<Vec<String>> {
        (self.argv)(steps, step_ms, fail)
    }
}

/// `--steps N --step-ms MS [--fail ITEM]` after `cmd`.
fn with_flags(mut cmd: Vec<String>, steps: u64, step_ms: u64, fail: Option<&str>) -> Vec<String> {
    cmd.extend(["--steps".to_owned(), steps.to_string()]);
    cmd.extend(["--step-ms".to_owned(), step_ms.to_string()]);
    if let Some(item) = fail {
        cmd.extend(["--fail".to_owned(), item.to_owned()]);
    }
    cmd
}

const RUST: Counter = Counter {
    argv: |steps, ms, fail| Some(with_flags(vec![example("minimal")], steps, ms, fail)),
    items: ["inbox", "outbox"],
};

const PYTHON: Counter = Counter {
    argv: |steps, ms, fail| {
        let script = root().join("sdk/python/examples/minimal.py");
        let cmd = vec!["python3".to_owned(), script.to_string_lossy().into_owned()];
        Some(with_flags(cmd, steps, ms, fail))
    },
    items: ["inbox", "outbox"],
};

/// `sh examples/handlers/shell-handler.sh STEPS SECONDS [FAIL]`; it needs
/// `jq` (a missing one fails the test, unless explicitly allowed: then
/// `None`).
const SHELL: Counter = Counter {
    argv: |steps, ms, fail| {
        if !syncmgr_testkit::require_tool("jq") {
            return None;
        }
        let script = root().join("examples/handlers/shell-handler.sh");
        Some(vec![
            "sh".to_owned(),
            script.to_string_lossy().into_owned(),
            steps.to_string(),
            format!("{}.{:03}", ms / 1000, ms % 1000),
            fail.unwrap_or_default().to_owned(),
        ])
    },
    items: ["alpha", "beta"],
};

/// Both items succeed, with their progress.
async fn check_lifecycle(counter: &Counter) {
    let Some(argv) = counter.argv(3, 0, None) else {
        return;
    };
    let run = session(argv, checked(), None).await;
    assert_eq!(
        run.summary.outcome,
        SessionOutcome::Succeeded,
        "{}",
        run.describe()
    );
    for item in counter.items {
        assert_eq!(run.status(item), ItemStatus::Succeeded);
        let last = run.last(item);
        assert_eq!((last.value, last.max), (Some(3), Some(3)), "{last:?}");
        assert_eq!(last.text, "done");
    }
    assert!(run.problems().is_empty(), "{}", run.describe());
}

/// A cancelled item stops at once; the other one still runs.
async fn check_cancel_item(counter: &Counter) {
    let [first, second] = counter.items;
    let Some(argv) = counter.argv(4, 300, None) else {
        return;
    };
    let run = session(argv, checked(), cancel_item(first)).await;
    assert_eq!(run.status(first), ItemStatus::Stopped, "{}", run.describe());
    assert_eq!(run.status(second), ItemStatus::Succeeded);
    assert_eq!(run.summary.outcome, SessionOutcome::Cancelled);
    // The handler stopped the item itself (the manager did not have to).
    assert!(run.problems().is_empty(), "{}", run.describe());
}

/// Cancelling the handler stops the running item and skips the other.
async fn check_cancel_all(counter: &Counter) {
    let [first, second] = counter.items;
    let Some(argv) = counter.argv(4, 300, None) else {
        return;
    };
    let run = session(argv, checked(), cancel_handler(first)).await;
    assert_eq!(run.status(first), ItemStatus::Stopped, "{}", run.describe());
    assert_eq!(
        run.status(second),
        ItemStatus::Skipped,
        "{}",
        run.describe()
    );
    assert!(run.problems().is_empty(), "{}", run.describe());
}

/// A failure is an actionable entry; `showError` on it retries the item in
/// a new process, where it succeeds.
async fn check_retry(counter: &Counter) {
    let [first, second] = counter.items;
    let Some(argv) = counter.argv(1, 0, Some(second)) else {
        return;
    };
    let run = session(argv.clone(), checked(), None).await;
    assert_eq!(
        run.status(first),
        ItemStatus::Succeeded,
        "{}",
        run.describe()
    );
    assert_eq!(run.status(second), ItemStatus::Failed);
    let error_id = format!("retry-{second}");
    let entry = run
        .log
        .iter()
        .find(|e| e.error_id.as_deref() == Some(error_id.as_str()))
        .unwrap_or_else(|| panic!("no {error_id} entry: {}", run.describe()));
    assert!(
        entry.actionable && entry.level == LogLevel::Error,
        "{entry:?}"
    );
    assert_eq!(entry.item.as_deref(), Some(second));

    let retry = session(argv, Selection::ShowError(error_id), None).await;
    assert_eq!(
        retry.summary.outcome,
        SessionOutcome::Succeeded,
        "{}",
        retry.describe()
    );
    assert_eq!(retry.summary.items.len(), 1, "{}", retry.describe());
    assert_eq!(retry.status(second), ItemStatus::Succeeded);
}

// ---------------------------------------------------------------------------
// Rust SDK

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_lifecycle() {
    check_lifecycle(&RUST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_cancel_item() {
    check_cancel_item(&RUST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_cancel_all() {
    check_cancel_all(&RUST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_retry() {
    check_retry(&RUST).await;
}

/// `git_mirror`: mirrors, fails a missing repository with an actionable
/// entry, retries it once it exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_git_mirror() {
    if !syncmgr_testkit::require_tool("git") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    syncmgr_testkit::git(&src, &["init", "-q"]);
    std::fs::write(src.join("README"), "hello\n").unwrap();
    syncmgr_testkit::git(&src, &["add", "README"]);
    syncmgr_testkit::git(&src, &["commit", "-q", "-m", "first"]);
    syncmgr_testkit::git(&src, &["tag", "v1"]);
    let later = tmp.path().join("later");
    let mirrors = tmp.path().join("mirrors");
    let argv = vec![
        example("git_mirror"),
        "--dir".to_owned(),
        mirrors.to_string_lossy().into_owned(),
        src.to_string_lossy().into_owned(),
        format!("later=file://{}", later.display()),
    ];

    let run = session(argv.clone(), checked(), None).await;
    assert_eq!(
        run.status("src"),
        ItemStatus::Succeeded,
        "{}",
        run.describe()
    );
    let done = run.last("src");
    assert_eq!((done.value, done.max), (Some(1000), Some(1000)), "{done:?}");
    assert!(done.text.contains("updated"), "{done:?}");
    // The mirror has the source's refs.
    let mirror = mirrors.join("src.git");
    assert_eq!(
        syncmgr_testkit::git(
            &src,
            &[
                "--git-dir",
                &mirror.to_string_lossy(),
                "rev-parse",
                "v1",
                "main"
            ]
        ),
        syncmgr_testkit::git(&src, &["rev-parse", "v1", "main"])
    );
    assert_eq!(run.status("later"), ItemStatus::Failed);
    let entry = run
        .log
        .iter()
        .find(|e| e.error_id.as_deref() == Some("fetch-later"))
        .unwrap_or_else(|| panic!("no fetch-later entry: {}", run.describe()));
    assert!(
        entry.actionable && entry.text.contains("git fetch"),
        "{entry:?}"
    );
    // A failed first fetch leaves nothing behind.
    let left: Vec<_> = std::fs::read_dir(&mirrors)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["src.git"], "{left:?}");

    std::fs::create_dir(&later).unwrap();
    syncmgr_testkit::git(&later, &["init", "-q"]);
    syncmgr_testkit::git(&later, &["commit", "-q", "--allow-empty", "-m", "x"]);
    let retry = session(argv, Selection::ShowError("fetch-later".to_owned()), None).await;
    assert_eq!(
        retry.status("later"),
        ItemStatus::Succeeded,
        "{}",
        retry.describe()
    );
    let mirror = mirrors.join("later.git");
    assert_eq!(
        syncmgr_testkit::git(
            &later,
            &["--git-dir", &mirror.to_string_lossy(), "rev-parse", "main"]
        ),
        syncmgr_testkit::git(&later, &["rev-parse", "main"])
    );
}

// ---------------------------------------------------------------------------
// Python SDK

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_lifecycle() {
    check_lifecycle(&PYTHON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_cancel_item() {
    check_cancel_item(&PYTHON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_cancel_all() {
    check_cancel_all(&PYTHON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_retry() {
    check_retry(&PYTHON).await;
}

/// `fetch_files.py`: byte progress, the file renamed into place, a missing
/// file retried once it exists, a cancel that leaves no partial file.
/// The Python SDK's own unit tests (`sdk/python/test_syncmgr_handler.py`:
/// the channel against a fake manager), so that `cargo test` runs them too.
#[test]
fn python_sdk_unit_tests() {
    let out = Command::new("python3")
        .args([
            "-m",
            "unittest",
            "discover",
            "-s",
            "sdk/python",
            "-p",
            "test_*.py",
        ])
        .current_dir(root())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the Python SDK's unit tests failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_fetch_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dest) = (tmp.path().join("src"), tmp.path().join("dest"));
    std::fs::create_dir(&src).unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.join("big.bin"), &data).unwrap();
    let url = |name: &str| format!("file://{}", src.join(name).display());
    let script = root().join("sdk/python/examples/fetch_files.py");
    let base = vec![
        "python3".to_owned(),
        script.to_string_lossy().into_owned(),
        "--dest".to_owned(),
        dest.to_string_lossy().into_owned(),
    ];
    let mut argv = base.clone();
    argv.extend([url("big.bin"), url("late.txt")]);

    let run = session(argv.clone(), checked(), None).await;
    assert_eq!(
        run.status("big.bin"),
        ItemStatus::Succeeded,
        "{}",
        run.describe()
    );
    let done = run.last("big.bin");
    assert_eq!((done.value, done.max), (Some(200_000), Some(200_000)));
    assert_eq!(std::fs::read(dest.join("big.bin")).unwrap(), data);
    assert_eq!(run.status("late.txt"), ItemStatus::Failed);
    let entry = run
        .log
        .iter()
        .find(|e| e.error_id.as_deref() == Some("fetch-late.txt"))
        .unwrap_or_else(|| panic!("no fetch-late.txt entry: {}", run.describe()));
    assert!(entry.actionable, "{entry:?}");

    std::fs::write(src.join("late.txt"), "now here\n").unwrap();
    let retry = session(
        argv,
        Selection::ShowError("fetch-late.txt".to_owned()),
        None,
    )
    .await;
    assert_eq!(
        retry.status("late.txt"),
        ItemStatus::Succeeded,
        "{}",
        retry.describe()
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("late.txt")).unwrap(),
        "now here\n"
    );

    // Throttled to 100 KB/s the 200 KB file takes 2 s: cancelled as it starts.
    std::fs::remove_file(dest.join("big.bin")).unwrap();
    let mut argv = base;
    argv.extend(["--rate".to_owned(), "100000".to_owned(), url("big.bin")]);
    let run = session(argv, checked(), cancel_item("big.bin")).await;
    assert_eq!(
        run.status("big.bin"),
        ItemStatus::Stopped,
        "{}",
        run.describe()
    );
    let left: Vec<_> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["late.txt"], "no partial file may stay: {left:?}");
}

// ---------------------------------------------------------------------------
// The shell example

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_lifecycle() {
    check_lifecycle(&SHELL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_cancel_item() {
    check_cancel_item(&SHELL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_cancel_all() {
    check_cancel_all(&SHELL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_retry() {
    check_retry(&SHELL).await;
}

// ---------------------------------------------------------------------------
// The Rust SDK without a manager: `serve_io` over pipes, the test playing the
// manager line by line.

fn request(id: serde_json::Value, method: &str, params: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn answer(id: &serde_json::Value, action: &str) -> serde_json::Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {"action": action}})
}

/// The manager's side of `serve_io(handler)` over pipes: `script` gets a
/// line reader (with a deadline per line) and a line writer, and runs on its
/// own thread; the test fails when the whole exchange takes over
/// [`DEADLINE`].
fn converse<H: syncmgr_sdk::SyncHandler + Send + 'static>(
    handler: H,
    script: impl FnOnce(
        &mut dyn FnMut() -> Option<serde_json::Value>,
        &mut dyn FnMut(serde_json::Value),
    ) + Send
    + 'static,
) {
    use std::io::{BufRead, BufReader, Write};

    let (input, mut to_handler) = std::io::pipe().unwrap();
    let (from_handler, output) = std::io::pipe().unwrap();
    let server = std::thread::spawn(move || syncmgr_sdk::serve_io(handler, input, output));
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from_handler).lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // `None`: nothing within 100 ms (for "nothing more comes" checks).
        let mut next = || -> Option<serde_json::Value> {
            let line = line_rx.recv_timeout(Duration::from_millis(100)).ok()?;
            Some(serde_json::from_str(&line).unwrap())
        };
        let mut send = |line: serde_json::Value| writeln!(to_handler, "{line}").unwrap();
        script(&mut next, &mut send);
        drop(to_handler);
        server.join().unwrap().unwrap();
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(DEADLINE)
        .expect("the exchange finishes in time (a failed assertion shows above)");
}

/// Waits (up to [`DEADLINE`]) for the next line, skipping none.
fn expect_line(next: &mut dyn FnMut() -> Option<serde_json::Value>) -> serde_json::Value {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        if let Some(line) = next() {
            return line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no line from the handler"
        );
    }
}

/// A handler of one item, `a`, whose `sync_item` is the closure: what ends
/// it (`true`: stopped, `false`: succeeded).
struct OneItem<F>(F);

impl<F: Fn(&syncmgr_sdk::Progress) -> bool + Sync> syncmgr_sdk::SyncHandler for OneItem<F> {
    fn info(&self) -> syncmgr_sdk::HandlerInfo {
        syncmgr_sdk::HandlerInfo::new("one item")
    }
    fn items(
        &mut self,
        _: &syncmgr_sdk::InitContext,
    ) -> Result<Vec<syncmgr_sdk::Item>, syncmgr_sdk::HandlerError> {
        Ok(vec![syncmgr_sdk::Item::new("a", "A")])
    }
    fn sync_item(
        &self,
        _: &str,
        progress: &syncmgr_sdk::Progress,
    ) -> Result<syncmgr_sdk::ItemOutcome, syncmgr_sdk::HandlerError> {
        Ok(if (self.0)(progress) {
            syncmgr_sdk::ItemOutcome::stopped()
        } else {
            syncmgr_sdk::ItemOutcome::succeeded()
        })
    }
}

/// Posts 50 reports, stops at the first cancel it sees, and flushes before
/// it returns.
fn post_fifty(progress: &syncmgr_sdk::Progress) -> bool {
    for i in 1..=50 {
        if progress
            .post(syncmgr_sdk::Update::progress(i, 50))
            .is_cancel()
        {
            break;
        }
    }
    progress.flush();
    progress.is_cancelled()
}

/// Posted reports: never more than `POST_WINDOW` unanswered (the manager
/// holds its answers and sees nothing more come), answers in any order, and
/// a `cancelItem` answer reaches the item, which ends `stopped`.
#[test]
fn posted_reports_keep_their_window_and_apply_cancels() {
    use serde_json::json;

    converse(OneItem(post_fifty), |next, send| {
        send(request(json!(1), "prepareForSync", json!({"items": ["a"]})));
        assert_eq!(expect_line(next)["result"], json!({}));
        send(request(json!(2), "synchronize", json!({})));
        let updating = expect_line(next);
        assert_eq!(updating["params"]["status"], "updating", "{updating}");
        send(answer(&updating["id"], "continue"));
        let mut held = Vec::new();
        while held.len() < syncmgr_sdk::POST_WINDOW {
            let msg = expect_line(next);
            assert_eq!(msg["params"]["value"], json!(held.len() + 1), "{msg}");
            held.push(msg["id"].clone());
        }
        assert_eq!(next(), None, "a report beyond the window");
        // Answer the window in reverse, the third report cancelled.
        for (n, id) in held.iter().enumerate().rev() {
            send(answer(id, if n == 2 { "cancelItem" } else { "continue" }));
        }
        // The item sees the cancel within a few more posts, then flushes:
        // every further report is answered; its final status is `stopped`.
        loop {
            let msg = expect_line(next);
            if msg.get("method").is_none() {
                assert_eq!(msg["id"], json!(2), "{msg}");
                break;
            }
            let status = msg["params"]["status"].as_str().map(str::to_owned);
            send(answer(&msg["id"], "continue"));
            if let Some(status) = status {
                assert_eq!(status, "stopped", "{msg}");
            } else {
                assert!(
                    msg["params"]["value"].as_u64().unwrap() <= 2 * syncmgr_sdk::POST_WINDOW as u64,
                    "{msg}"
                );
            }
        }
    });
}

/// An item that waits for a cancel without reporting: the background
/// reader delivers `setItemStatus skipped` while nobody calls the SDK.
#[test]
fn set_item_status_reaches_a_quiet_item() {
    use serde_json::json;

    let quiet = OneItem(|progress: &syncmgr_sdk::Progress| progress.wait_cancelled(DEADLINE));
    converse(quiet, |next, send| {
        send(request(json!(1), "prepareForSync", json!({"items": ["a"]})));
        assert_eq!(expect_line(next)["result"], json!({}));
        send(request(json!(2), "synchronize", json!({})));
        let updating = expect_line(next);
        send(answer(&updating["id"], "continue"));
        send(json!({"jsonrpc": "2.0", "method": "setItemStatus",
                    "params": {"item": "a", "status": "skipped"}}));
        let last = expect_line(next);
        assert_eq!(last["params"]["status"], "stopped", "{last}");
        send(answer(&last["id"], "continue"));
        assert_eq!(expect_line(next)["id"], json!(2));
    });
}

/// Two items syncing at once each have a report outstanding; the answers,
/// sent in the opposite order, reach the right callers. Unknown methods are
/// answered -32601; the end of input ends `serve_io` cleanly.
#[test]
fn pipelined_reports_get_their_own_answers() {
    use std::io::{BufRead, BufReader, Write};

    use serde_json::{Value, json};
    use syncmgr_sdk::{
        HandlerError, HandlerInfo, InitContext, Item, ItemOutcome, Progress, SyncHandler, Update,
    };

    struct Pair;
    impl SyncHandler for Pair {
        fn info(&self) -> HandlerInfo {
            HandlerInfo::new("pair")
        }
        fn items(&mut self, _: &InitContext) -> Result<Vec<Item>, HandlerError> {
            Ok(vec![Item::new("a", "A"), Item::new("b", "B")])
        }
        fn sync_item(&self, _: &str, progress: &Progress) -> Result<ItemOutcome, HandlerError> {
            Ok(if progress.report(Update::progress(1, 2)).is_cancel() {
                ItemOutcome::stopped()
            } else {
                ItemOutcome::succeeded()
            })
        }
        fn max_parallel(&self) -> usize {
            2
        }
    }

    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (input, mut to_handler) = std::io::pipe().unwrap();
        let (from_handler, output) = std::io::pipe().unwrap();
        let server = std::thread::spawn(move || syncmgr_sdk::serve_io(Pair, input, output));
        let mut lines = BufReader::new(from_handler).lines();
        let mut next =
            || -> Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
        let mut send = |line: Value| writeln!(to_handler, "{line}").unwrap();

        send(request(
            json!(1),
            "prepareForSync",
            json!({"items": ["a", "b"]}),
        ));
        assert_eq!(next()["result"], json!({}));
        send(request(json!(2), "synchronize", json!({})));
        let (mut outstanding, mut finals) = (Vec::new(), HashMap::new());
        loop {
            let msg = next();
            if msg.get("method").is_none() {
                // Our synchronize, answered once both items are done.
                assert_eq!(
                    (&msg["id"], &msg["result"]),
                    (&json!(2), &json!({})),
                    "{msg}"
                );
                break;
            }
            assert_eq!(msg["method"], "progress", "{msg}");
            let params = &msg["params"];
            let item = params["item"].as_str().unwrap().to_owned();
            match params["status"].as_str() {
                Some("updating") => send(answer(&msg["id"], "continue")),
                Some(status) => {
                    finals.insert(item, status.to_owned());
                    send(answer(&msg["id"], "continue"));
                }
                None => {
                    outstanding.push((msg["id"].clone(), item));
                    if outstanding.len() == 2 {
                        // Both reports wait at once; answer the later first.
                        for (id, item) in outstanding.drain(..).rev() {
                            let action = if item == "a" {
                                "cancelItem"
                            } else {
                                "continue"
                            };
                            send(answer(&id, action));
                        }
                    }
                }
            }
        }
        assert_eq!(finals["a"], "stopped");
        assert_eq!(finals["b"], "succeeded");

        send(request(json!("x"), "frobnicate", json!({})));
        let msg = next();
        assert_eq!(
            (&msg["id"], &msg["error"]["code"]),
            (&json!("x"), &json!(-32601))
        );
        // The end of input: `serve_io` returns.
        drop(to_handler);
        server.join().unwrap().unwrap();
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(DEADLINE)
        .expect("the exchange finishes in time (a failed assertion shows above)");
}

/// A handler that reports a conflict while it syncs, withdraws another, and
/// applies decisions on `c1` only.
struct Conflicting(std::sync::Arc<std::sync::Mutex<Vec<syncmgr_sdk::ConflictResolution>>>);

impl syncmgr_sdk::SyncHandler for Conflicting {
    fn info(&self) -> syncmgr_sdk::HandlerInfo {
        syncmgr_sdk::HandlerInfo::new("conflicting")
    }
    fn items(
        &mut self,
        _: &syncmgr_sdk::InitContext,
    ) -> Result<Vec<syncmgr_sdk::Item>, syncmgr_sdk::HandlerError> {
        Ok(vec![syncmgr_sdk::Item::new("a", "A")])
    }
    fn sync_item(
        &self,
        item: &str,
        progress: &syncmgr_sdk::Progress,
    ) -> Result<syncmgr_sdk::ItemOutcome, syncmgr_sdk::HandlerError> {
        let version = |label: &str| syncmgr_sdk::ConflictVersion {
            label: label.into(),
            size: Some(2),
            modified: None,
            detail: Some("changed".into()),
        };
        let report = syncmgr_sdk::ConflictReport {
            item: item.into(),
            conflict_id: "c1".into(),
            text: "both changed".into(),
            versions: vec![version("here"), version("there")],
        };
        progress
            .manager()
            .report_conflict(&report)
            .map_err(|e| syncmgr_sdk::HandlerError::new(e.to_string()))?;
        progress
            .manager()
            .conflict_resolved(item, "old")
            .map_err(|e| syncmgr_sdk::HandlerError::new(e.to_string()))?;
        Ok(syncmgr_sdk::ItemOutcome::succeeded())
    }
    fn resolve_conflict(
        &mut self,
        resolution: &syncmgr_sdk::ConflictResolution,
    ) -> Result<(), syncmgr_sdk::HandlerError> {
        if resolution.conflict_id != "c1" {
            return Err(syncmgr_sdk::HandlerError::new("no such conflict"));
        }
        self.0.lock().unwrap().push(resolution.clone());
        Ok(())
    }
}

/// The Rust SDK's conflict calls on the wire: `reportConflict` (a request,
/// answered), `conflictResolved` (a notification), and `resolveConflict`
/// reaching the handler (applied, refused with its reason, bad params
/// answered -32602).
#[test]
fn conflicts_go_over_the_wire_both_ways() {
    use serde_json::json;

    let decided = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&decided);
    converse(Conflicting(decided), move |next, send| {
        send(request(json!(1), "prepareForSync", json!({"items": ["a"]})));
        assert_eq!(expect_line(next)["result"], json!({}));
        send(request(json!(2), "synchronize", json!({})));
        let mut reported = None;
        let mut withdrawn = None;
        loop {
            let line = expect_line(next);
            match line["method"].as_str() {
                Some("progress") => send(answer(&line["id"], "continue")),
                Some("reportConflict") => {
                    reported = Some(line["params"].clone());
                    send(json!({"jsonrpc": "2.0", "id": line["id"], "result": {}}));
                }
                Some("conflictResolved") => {
                    assert!(line.get("id").is_none(), "a notification: {line}");
                    withdrawn = Some(line["params"].clone());
                }
                _ if line["id"] == json!(2) => break,
                _ => panic!("unexpected {line}"),
            }
        }
        assert_eq!(
            reported.expect("reported"),
            json!({"item": "a", "conflictId": "c1", "text": "both changed", "versions": [
                {"label": "here", "size": 2, "detail": "changed"},
                {"label": "there", "size": 2, "detail": "changed"}]})
        );
        assert_eq!(
            withdrawn.expect("withdrawn"),
            json!({"item": "a", "conflictId": "old"})
        );

        let decide = |id: i64, conflict: &str, keep: serde_json::Value| {
            let mut params = json!({"item": "a", "conflictId": conflict});
            params
                .as_object_mut()
                .unwrap()
                .extend(keep.as_object().unwrap().clone());
            request(json!(id), "resolveConflict", params)
        };
        send(decide(3, "c1", json!({"keep": "one", "version": 1})));
        assert_eq!(expect_line(next)["result"], json!({}));
        send(decide(4, "c2", json!({"keep": "all"})));
        let refused = expect_line(next);
        assert_eq!(refused["error"]["code"], -32000, "{refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no such conflict")
        );
        send(decide(5, "c1", json!({"keep": "one"})));
        assert_eq!(expect_line(next)["error"]["code"], -32602);
        send(decide(6, "c1", json!({"keep": "some"})));
        assert_eq!(expect_line(next)["error"]["code"], -32602);
    });
    let decided = seen.lock().unwrap();
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0].keep, syncmgr_sdk::Keep::One(1));
}
