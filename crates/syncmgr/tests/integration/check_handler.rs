//! `syncmgr check-handler`: every example handler of the repository conforms
//! (Rust SDK, Python SDK, no SDK at all); each misbehaviour of the scripted
//! handler fails the rule it breaks, and the checker ends within a deadline
//! derived from `--timeout` even when the handler hangs; bad usage exits 2.
//!
//! A check runs four or five sessions of the handler, mostly waiting on it, so
//! the checks of one test run at once, as background commands, and the
//! handlers run with short steps.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::{Background, Cmd, Outcome, TestHome, sdk_example, test_handler};

/// How long the checker gives a handler to honour a cancel (`GRACE` in
/// `crates/syncmgr/src/check.rs`).
const GRACE: Duration = Duration::from_secs(2);

/// Room for a loaded two-core machine on top of what the checker may take.
const SLACK: Duration = Duration::from_secs(8);

/// The rules of a handler that lists items, in the checker's order.
const RULES: [&str; 14] = [
    "answers initialize, getHandlerInfo and enumItems in settings mode",
    "gives itself a display name",
    "lists items with valid, unique ids",
    "stays responsive within its timeout",
    "keeps running until shutdown",
    "answers every request of the manager",
    "reports a final status for every prepared item",
    "sends only valid messages and requests",
    EXITS_CLEANLY,
    CANCEL_ITEM,
    CANCEL_ALL,
    RESOLVES,
    REFUSES_UNKNOWN,
    SHOW_ERROR,
];
const RESOLVES: &str = "answers resolveConflict for a conflict it reported";
const REFUSES_UNKNOWN: &str = "refuses resolveConflict for a conflict it never reported";
const EXITS_CLEANLY: &str = "exits with status 0 after shutdown, within the grace period";
const CANCEL_ITEM: &str = "honours cancelItem (progress reply and setItemStatus)";
const CANCEL_ALL: &str = "honours cancelAll";
const SHOW_ERROR: &str = "answers showError and retries what it asks to";

/// The longest `check-handler --timeout T` may take on a handler that hangs
/// in every phase: settings mode (T), then at most four sessions, each ended
/// by the silence timeout and the grace period.
fn deadline(timeout: Duration) -> Duration {
    timeout + 4 * (timeout + GRACE) + SLACK
}

/// The repository's root.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh home whose database already exists. The tests start several
/// `syncmgr` processes at once, and the first opens of a new database race
/// each other (two processes creating it at the same moment can fail with
/// "not a syncmgr database" or "could not open the database"), so one command
/// creates it first.
fn home() -> TestHome {
    let home = TestHome::new();
    home.ok(&["handlers"]);
    home
}

/// `check-handler --timeout T -- ARGV`, to be started.
struct Check {
    cmd: Cmd,
    timeout: Duration,
}

impl Check {
    fn new(home: &TestHome, timeout_secs: u64) -> Check {
        let mut cmd = home.cmd(["check-handler", "--timeout"]);
        cmd.arg(timeout_secs.to_string()).arg("--");
        Check {
            cmd,
            timeout: Duration::from_secs(timeout_secs),
        }
    }

    /// The checker runs `python3 SCRIPT` (a path relative to the root).
    fn python(home: &TestHome, timeout_secs: u64, script: &str) -> Check {
        Check::new(home, timeout_secs)
            .arg("python3")
            .arg(root().join(script))
    }

    /// The checker runs the scripted handler with these arguments.
    fn test_handler(home: &TestHome, timeout_secs: u64, args: &[&str]) -> Check {
        Check::new(home, timeout_secs)
            .arg(test_handler())
            .args(args)
    }

    fn arg(mut self, arg: impl AsRef<OsStr>) -> Check {
        self.cmd.arg(arg);
        self
    }

    fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Check {
        self.cmd.args(args);
        self
    }

    /// An environment variable for the checker, and so for the handler.
    fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Check {
        self.cmd.env(key, value);
        self
    }

    fn start(mut self) -> Running {
        Running {
            started: Instant::now(),
            deadline: deadline(self.timeout),
            bg: self.cmd.spawn(),
        }
    }

    fn run(self) -> Checked {
        self.start().finish()
    }
}

/// A check running in the background.
struct Running {
    bg: Background,
    started: Instant,
    deadline: Duration,
}

impl Running {
    /// Waits for the checker, failing the test (and killing it) when it runs
    /// past its deadline, counted from its start.
    #[track_caller]
    fn finish(self) -> Checked {
        let left = self.deadline.saturating_sub(self.started.elapsed());
        Checked {
            out: self.bg.finish_raw(left),
        }
    }
}

/// Starts every check, then waits for each: they run at once.
#[track_caller]
fn run_all(checks: Vec<Check>) -> Vec<Checked> {
    let running: Vec<Running> = checks.into_iter().map(Check::start).collect();
    running.into_iter().map(Running::finish).collect()
}

/// What a check printed.
struct Checked {
    out: Outcome,
}

impl Checked {
    /// The verdict line of `rule`.
    #[track_caller]
    fn line(&self, rule: &str) -> &str {
        let found = self.out.stdout.lines().find(|l| {
            ["pass  ", "fail  "].iter().any(|verdict| {
                l.strip_prefix(verdict)
                    .and_then(|rest| rest.strip_prefix(rule))
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', ':']))
            })
        });
        found.unwrap_or_else(|| self.out.fail(format!("no verdict for the rule {rule:?}")))
    }

    /// Exit 0, every rule checked and passed, the summary says so.
    #[track_caller]
    fn assert_conforms(&self) -> &Checked {
        self.out.assert_code(0);
        let lines: Vec<&str> = self.out.stdout.lines().collect();
        if lines
            .last()
            .is_none_or(|l| !l.starts_with("the handler conforms"))
        {
            self.out
                .fail("the last line does not say the handler conforms");
        }
        if let Some(bad) = lines[..lines.len() - 1]
            .iter()
            .find(|l| !l.starts_with("pass  "))
        {
            self.out.fail(format!("a line that is not a pass: {bad:?}"));
        }
        for rule in RULES {
            self.line(rule);
        }
        self
    }

    /// The rule passed, and was really exercised (no "not exercised" note).
    #[track_caller]
    fn assert_exercised(&self, rule: &str) -> &Checked {
        let line = self.line(rule);
        if !line.starts_with("pass  ") || line.contains("not exercised") {
            self.out
                .fail(format!("expected {rule:?} to pass, exercised: {line:?}"));
        }
        self
    }

    /// The showError rule passed after a retry of `n` items.
    #[track_caller]
    fn assert_retried(&self, n: usize) -> &Checked {
        let line = self.assert_exercised(SHOW_ERROR).line(SHOW_ERROR);
        if !line.contains(&format!("asked to retry {n} item(s)")) {
            self.out
                .fail(format!("expected a retry of {n} item(s): {line:?}"));
        }
        self
    }

    /// Exit 1; each rule of `must` failed with a problem that contains its
    /// needle, and no other rule failed but those of `may` (with theirs);
    /// the summary counts the failures.
    #[track_caller]
    fn assert_fails(&self, must: &[(&str, &str)], may: &[(&str, &str)]) -> &Checked {
        self.out.assert_code(1);
        for &(rule, needle) in must {
            let line = self.line(rule);
            if !line.starts_with("fail  ") || !line.contains(needle) {
                self.out.fail(format!(
                    "expected {rule:?} to fail with {needle:?}, got {line:?}"
                ));
            }
        }
        let failed: Vec<&str> = self
            .out
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("fail  "))
            .collect();
        for line in &failed {
            let expected = must.iter().chain(may).any(|&(rule, needle)| {
                line.strip_prefix(rule)
                    .is_some_and(|problem| problem.starts_with(": ") && problem.contains(needle))
            });
            if !expected {
                self.out.fail(format!("an unexpected failure: {line:?}"));
            }
        }
        let summary = format!("the handler does not conform: {} of", failed.len());
        if !self
            .out
            .stdout
            .lines()
            .last()
            .is_some_and(|l| l.starts_with(&summary))
        {
            self.out
                .fail(format!("expected a last line {summary:?} ..."));
        }
        self
    }
}

// ---------------------------------------------------------------------------
// The example handlers conform

/// `crates/syncmgr-sdk/examples/minimal.rs`, plain and with a failing item
/// (which exercises showError and its retry).
#[test]
fn rust_sdk_minimal_conforms() {
    let home = home();
    let minimal = || {
        Check::new(&home, 5)
            .arg(sdk_example("minimal"))
            .args(["--steps", "3", "--step-ms", "100"])
    };
    let checks = run_all(vec![minimal(), minimal().args(["--fail", "outbox"])]);

    checks[0]
        .assert_conforms()
        .assert_exercised(CANCEL_ITEM)
        .assert_exercised(CANCEL_ALL);
    checks[1]
        .assert_conforms()
        .assert_exercised(CANCEL_ITEM)
        .assert_exercised(CANCEL_ALL)
        .assert_retried(1);
}

/// `crates/syncmgr-sdk/examples/git_mirror.rs` against a local bare
/// repository, and one that does not exist (an actionable failure, retried).
#[test]
fn rust_sdk_git_mirror_conforms() {
    if !syncmgr_testkit::require_tool("git") {
        return;
    }
    let home = home();
    let data = tempfile::tempdir().unwrap();
    let work = data.path().join("work");
    std::fs::create_dir(&work).unwrap();
    syncmgr_testkit::git(&work, &["init", "-q"]);
    std::fs::write(work.join("README"), "hello\n").unwrap();
    syncmgr_testkit::git(&work, &["add", "README"]);
    syncmgr_testkit::git(&work, &["commit", "-q", "-m", "first"]);
    syncmgr_testkit::git(
        data.path(),
        &["clone", "-q", "--bare", "work", "origin.git"],
    );

    let checked = Check::new(&home, 5)
        .arg(sdk_example("git_mirror"))
        .arg("--dir")
        .arg(data.path().join("mirrors"))
        .arg(format!(
            "file://{}",
            data.path().join("origin.git").display()
        ))
        .arg(format!(
            "gone=file://{}",
            data.path().join("missing.git").display()
        ))
        .run();
    checked.assert_conforms().assert_retried(1);
    assert!(
        data.path().join("mirrors/origin.git/HEAD").is_file(),
        "the mirror was made"
    );
}

/// The Python SDK's examples: `minimal.py` with a failing item, and
/// `fetch_files.py` over `file://` URLs (one slowed down by `--rate` so that
/// there is something to cancel, one missing: an actionable failure).
#[test]
fn python_sdk_examples_conform() {
    let home = home();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("big.bin"), vec![7u8; 512 * 1024]).unwrap();
    std::fs::write(data.path().join("small.txt"), "hello\n").unwrap();
    let url = |name: &str| format!("file://{}", data.path().join(name).display());

    let checks = run_all(vec![
        Check::python(&home, 5, "sdk/python/examples/minimal.py").args([
            "--steps",
            "3",
            "--step-ms",
            "100",
            "--fail",
            "outbox",
        ]),
        Check::python(&home, 5, "sdk/python/examples/fetch_files.py")
            .arg("--dest")
            .arg(data.path().join("downloads"))
            // 512 KiB at 1 MB/s: half a second of `updating`.
            .args(["--rate", "1000000"])
            .args([url("big.bin"), url("small.txt"), url("missing.txt")]),
    ]);

    checks[0]
        .assert_conforms()
        .assert_exercised(CANCEL_ITEM)
        .assert_exercised(CANCEL_ALL)
        .assert_retried(1);
    checks[1]
        .assert_conforms()
        .assert_exercised(CANCEL_ITEM)
        .assert_exercised(CANCEL_ALL)
        .assert_retried(1);
    assert_eq!(
        std::fs::read(data.path().join("downloads/small.txt")).unwrap(),
        b"hello\n"
    );
}

/// The tutorial's handler (`sdk/python/examples/tutorial.py`,
/// `docs/protocol.md` section 2) conforms, and does what the tutorial shows
/// under a real `syncmgr sync`: both items succeed; with `TUTORIAL_FAIL` one
/// fails with an actionable entry, and `syncmgr log show` retries it.
#[test]
fn the_tutorial_handler_conforms_and_syncs() {
    // Inline: each sync sets the handler's environment, which a daemon's
    // handlers do not inherit from the command (they run in the daemon's).
    let home = TestHome::inline();
    let script = root().join("sdk/python/examples/tutorial.py");
    let checking = Check::python(&home, 5, "sdk/python/examples/tutorial.py")
        .env("TUTORIAL_PAUSE", "0.05")
        .env("TUTORIAL_FAIL", "outbox")
        .start();

    let mut register = home.cmd(["register", "tut", "--", "python3"]);
    register.arg(&script).run().assert_code(0);
    let sync = |fail: Option<&str>| {
        let mut cmd = home.cmd(["sync", "--json"]);
        cmd.env("TUTORIAL_PAUSE", "0.02");
        if let Some(item) = fail {
            cmd.env("TUTORIAL_FAIL", item);
        }
        cmd.run_json_lines()
    };
    let run = sync(None);
    run.assert_code(0);
    assert_eq!(run.counts(), [2, 0, 0, 0]);
    run.assert_log("tut", "information", "syncing inbox");

    let run = sync(Some("outbox"));
    run.assert_code(1);
    assert_eq!(run.counts(), [1, 1, 0, 0]);
    let failure = run
        .logs_matching("tut", "error", "outbox: the server is busy")
        .into_iter()
        .next()
        .unwrap_or_else(|| run.fail("no error entry for outbox"));
    assert_eq!(failure["actionable"], true, "{failure}");
    let id = failure["id"].as_u64().unwrap().to_string();
    let retry = home.cmd(["log", "show", &id, "--json"]).run_json_lines();
    retry.assert_code(0);
    assert_eq!(
        retry.statuses().into_iter().collect::<Vec<_>>(),
        [("tut/outbox".to_owned(), "succeeded".to_owned())]
    );

    checking
        .finish()
        .assert_conforms()
        .assert_exercised(CANCEL_ITEM)
        .assert_exercised(CANCEL_ALL)
        .assert_retried(1);
}

/// The handlers `docs/protocol.md` lists in full are the files checked here,
/// as they are.
#[test]
fn the_manual_lists_the_checked_handlers_verbatim() {
    let manual = std::fs::read_to_string(root().join("docs/protocol.md")).unwrap();
    for (file, language) in [
        ("sdk/python/examples/tutorial.py", "python"),
        ("examples/handlers/minimal.py", "python"),
        ("examples/handlers/minimal.sh", "sh"),
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(
            manual.contains(&format!("```{language}\n{text}```\n")),
            "docs/protocol.md does not list {file} as it is"
        );
    }
}

/// The handlers written without an SDK (`examples/handlers/`): the raw
/// Python walk-through, the one-way folder mirror `mirror.py`, and the two
/// shell handlers. `minimal.py` and `minimal.sh` have fixed steps (0.2 s and
/// 1 s): this test takes five seconds or so.
#[test]
fn handlers_without_an_sdk_conform() {
    let home = home();
    let data = tempfile::tempdir().unwrap();
    let src = data.path().join("photos");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.jpg"), vec![1u8; 300 * 1024]).unwrap();
    std::fs::write(src.join("b.txt"), "b\n").unwrap();
    let pair = format!("{}:{}", src.display(), data.path().join("copy").display());
    let jq = syncmgr_testkit::require_tool("jq");

    let mut checks = vec![
        Check::python(&home, 5, "examples/handlers/minimal.py"),
        Check::python(&home, 5, "examples/handlers/mirror.py").arg(&pair),
        Check::new(&home, 5).arg(root().join("examples/handlers/minimal.sh")),
    ];
    if jq {
        checks.push(
            Check::new(&home, 5)
                .arg(root().join("examples/handlers/shell-handler.sh"))
                .args(["3", "0.1", "beta"]),
        );
    }
    let checks = run_all(checks);

    for raw in [&checks[0], &checks[2]] {
        raw.assert_conforms()
            .assert_exercised(CANCEL_ITEM)
            .assert_exercised(CANCEL_ALL);
    }
    // The mirror is up to date after the first sync: later ones copy
    // nothing, so there may be nothing to cancel.
    checks[1].assert_conforms();
    assert_eq!(
        std::fs::read(data.path().join("copy/b.txt")).unwrap(),
        b"b\n"
    );
    if jq {
        checks[3]
            .assert_conforms()
            .assert_exercised(CANCEL_ITEM)
            .assert_exercised(CANCEL_ALL)
            .assert_retried(1);
    }
}

// ---------------------------------------------------------------------------
// Misbehaving handlers fail the rule they break, in bounded time

/// One misbehaviour of the scripted handler and what the checker must say.
struct Misbehaviour {
    args: &'static [&'static str],
    /// The rules that fail, each with a word of its problem.
    fails: &'static [(&'static str, &'static str)],
    /// Rules that may fail as well, depending on timing.
    may_fail: &'static [(&'static str, &'static str)],
}

const MISBEHAVIOURS: [Misbehaviour; 8] = [
    // It exits right after reporting its first item `updating`: whether the
    // checker sees that in time to cancel it decides whether the cancel
    // phases find a process that exited under a cancel.
    Misbehaviour {
        args: &["--scenario", "crash"],
        fails: &[("keeps running until shutdown", "exit status 3")],
        may_fail: &[
            (CANCEL_ITEM, "process exited"),
            (CANCEL_ALL, "process exited"),
        ],
    },
    // `a` is synced in steps (so that the cancels find it running), `b`
    // only ever reported `updating`, cancelled or not.
    Misbehaviour {
        args: &[
            "--scenario",
            "never-report",
            "--steps",
            "3",
            "--step-ms",
            "100",
        ],
        fails: &[
            (
                "reports a final status for every prepared item",
                "b: item failed: the handler never reported a final status",
            ),
            (
                CANCEL_ALL,
                "b: item stopped: the handler did not confirm the cancel",
            ),
        ],
        may_fail: &[],
    },
    Misbehaviour {
        args: &["--scenario", "garbage"],
        fails: &[(
            "sends only valid messages and requests",
            "the handler sent a bad line (not JSON: key must be a string at line 1 column 2): {not json",
        )],
        may_fail: &[],
    },
    Misbehaviour {
        args: &["--scenario", "bad-requests"],
        fails: &[(
            "sends only valid messages and requests",
            "nope: refused progress: unknown item \"nope\"",
        )],
        may_fail: &[],
    },
    // Three seconds of work, reported every 0.3 s: responsive, but a cancel
    // is ignored for longer than the grace period.
    Misbehaviour {
        args: &[
            "--scenario",
            "ignore-cancel",
            "--items",
            "a",
            "--steps",
            "10",
            "--step-ms",
            "300",
        ],
        fails: &[
            (CANCEL_ITEM, "did not honour a cancel within 2s"),
            (CANCEL_ALL, "did not honour a cancel within 2s"),
        ],
        may_fail: &[],
    },
    // Issue 8, point 7: a handler that exits with an error after
    // `shutdown`, and one that does not exit at all.
    Misbehaviour {
        args: &["--exit-code", "3"],
        fails: &[(EXITS_CLEANLY, "ended with exit status 3 after shutdown")],
        may_fail: &[],
    },
    Misbehaviour {
        args: &["--linger"],
        fails: &[(EXITS_CLEANLY, "did not exit within 2s of shutdown")],
        may_fail: &[],
    },
    // Silent from `synchronize` on, in every session.
    Misbehaviour {
        args: &["--scenario", "silent", "--items", "a"],
        fails: &[(
            "stays responsive within its timeout",
            "the handler is not responding (silent for 1s); cancelling it",
        )],
        may_fail: &[],
    },
];

/// Each misbehaviour fails the rule it breaks (exit 1), and the checker ends
/// within the deadline derived from `--timeout 1` (`Running::finish`) even
/// for a handler that hangs in every session.
#[test]
fn misbehaving_handlers_fail_the_rule_they_break_in_bounded_time() {
    let home = home();
    let checks = run_all(
        MISBEHAVIOURS
            .iter()
            .map(|m| Check::test_handler(&home, 1, m.args))
            .collect(),
    );
    for (checked, m) in checks.iter().zip(&MISBEHAVIOURS) {
        checked.assert_fails(m.fails, m.may_fail);
    }
}

// ---------------------------------------------------------------------------
// Usage

#[test]
fn check_handler_usage_and_programs_that_do_not_start() {
    let home = home();

    // No program: a usage error.
    for args in [&["check-handler"][..], &["check-handler", "--"]] {
        let out = home.run(args);
        out.assert_code(2).assert_stderr_contains("PROGRAM");
        if !out.stdout.is_empty() {
            out.fail("a usage error printed on stdout");
        }
    }
    home.run(&["check-handler", "--timeout", "0", "--", "true"])
        .assert_code(2)
        .assert_stderr_contains("--timeout must be more than 0");

    // A program that does not exist: one line that says so.
    let out = home.run(&["check-handler", "--", "/no/such/handler", "--flag"]);
    out.assert_code(1);
    let lines: Vec<&str> = out.stdout.lines().collect();
    if !(lines.len() == 1
        && lines[0].starts_with("fail  starts: ")
        && lines[0].contains("/no/such/handler: No such file or directory"))
    {
        out.fail("expected one line saying the program could not start");
    }

    // A program that is not a handler at all.
    let checked = Check::new(&home, 1).arg("true").run();
    checked.out.assert_code(1).assert_stdout_contains(
        "fail  answers initialize, getHandlerInfo and enumItems in settings mode: handler process exited",
    );
}

/// A handler that reports a conflict (the Python SDK's notes example, with
/// its two copies differing) conforms, and the checker exercises the
/// conflict rules: a decision on the conflict it reported is applied, one
/// on a conflict it never reported is refused.
#[test]
fn a_handler_that_reports_conflicts_has_its_decisions_checked() {
    let home = home();
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("local.txt"), "mine").unwrap();
    fs::write(dir.path().join("remote.txt"), "theirs").unwrap();
    fs::write(dir.path().join("base.txt"), "before").unwrap();
    let checked = Check::python(&home, 5, "sdk/python/examples/notes.py")
        .arg("--dir")
        .arg(dir.path())
        .run();
    checked
        .assert_conforms()
        .assert_exercised(RESOLVES)
        .assert_exercised(REFUSES_UNKNOWN);
    let line = checked.line(RESOLVES);
    assert!(line.contains("resolved keeping version 0"), "{line}");
    // Applied for real: version 0 (local) is on both sides now.
    assert_eq!(
        fs::read_to_string(dir.path().join("remote.txt")).unwrap(),
        "mine"
    );
}
