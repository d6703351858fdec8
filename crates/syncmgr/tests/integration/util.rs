//! The test kit: a fresh home per test, a wrapper that runs `syncmgr` and
//! reports everything about a command when an assertion fails, NDJSON parsing
//! for `sync --json`, background sessions for cancel and signal tests, and the
//! handler programs: the scripted handler (`syncmgr-test-handler`) and the
//! Rust SDK's examples, each built once per test process.
//!
//! Failure reports follow ripgrep's and nextest's test kits: every [`Outcome`]
//! (and [`Background`]) still alive while a test panics prints the command,
//! its exit status, stdout and stderr, so a failing `assert!` on parsed JSON
//! shows what the binary really did.
//!
//! Synchronisation is always a poll with a deadline ([`wait_until`], reading
//! a session's events line by line), never a bare sleep.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long anything that should happen "at once" may take on a loaded
/// two-core machine before a test gives up.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The `syncmgr` binary under test.
pub fn syncmgr_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_syncmgr"))
}

/// The scripted handler binary, built (once per test process) next to the
/// `syncmgr` binary under test, in the same profile.
pub fn test_handler() -> &'static Path {
    static HANDLER: OnceLock<PathBuf> = OnceLock::new();
    HANDLER.get_or_init(|| syncmgr_testkit::build_test_handler(profile_dir()))
}

/// The example handler `name` of the Rust SDK (`crates/syncmgr-sdk/examples/`),
/// in `target/<profile>/examples/`. All the examples are built once per test
/// process, like the test handler.
pub fn sdk_example(name: &str) -> PathBuf {
    static EXAMPLES: OnceLock<PathBuf> = OnceLock::new();
    let dir = EXAMPLES.get_or_init(|| {
        let dir = profile_dir().join("examples");
        syncmgr_testkit::cargo_build(
            profile_dir(),
            &["-p", "syncmgr-sdk", "--examples"],
            &dir.join("minimal"),
        );
        dir
    });
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "no example binary at {} (built with `cargo build -p syncmgr-sdk --examples`)",
        path.display()
    );
    path
}

/// `target/<profile>`: where the `syncmgr` binary under test lives.
fn profile_dir() -> &'static Path {
    syncmgr_bin()
        .parent()
        .expect("the syncmgr binary lives in a directory")
}

/// Polls `condition` every few milliseconds until it holds or `timeout`
/// passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A fresh, private home for one test: `/tmp/smXXXXXX`, short enough for the
/// control sockets (`<home>/run/<uuid>.sock`) to stay under the ~108-byte
/// limit of Unix socket paths. Removed when dropped.
///
/// With `SYNCMGR_TEST_DAEMON=1` in the environment, [`TestHome::new`] also
/// starts a daemon in the home, so that the same tests check that every
/// command behaves the same through it (`scripts/test` runs the suite both
/// ways); [`TestHome::inline`] is for the tests whose subject is the inline
/// command itself (its own process, its own locks and signals).
#[derive(Debug)]
pub struct TestHome {
    dir: tempfile::TempDir,
    daemon: Option<Child>,
    /// Environment of every command and the daemon: the D-Bus buses point
    /// nowhere unless a test sets its own, so no test sees the machine's.
    env: Vec<(String, String)>,
}

impl Drop for TestHome {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            stop_daemon(&mut daemon);
        }
    }
}

/// Whether this run checks the commands against a daemon.
pub fn daemon_mode() -> bool {
    std::env::var_os("SYNCMGR_TEST_DAEMON").is_some_and(|v| v == "1")
}

/// SIGTERM, then waits for the daemon to end (killed after [`PATIENCE`]).
fn stop_daemon(daemon: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    if !wait_until(PATIENCE, || matches!(daemon.try_wait(), Ok(Some(_)))) {
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
}

impl TestHome {
    /// Creates the home (with a daemon in it in daemon mode).
    pub fn new() -> TestHome {
        let mut home = TestHome::inline();
        if daemon_mode() {
            home.start_daemon();
        }
        home
    }

    /// Creates the home; commands in it run inline whatever the mode.
    pub fn inline() -> TestHome {
        let base = Path::new("/tmp");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("sm")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(base)
            .expect("cannot create a temporary home");
        let nowhere = format!("unix:path={}/no-bus", dir.path().display());
        TestHome {
            dir,
            daemon: None,
            env: vec![
                ("DBUS_SYSTEM_BUS_ADDRESS".to_owned(), nowhere.clone()),
                ("DBUS_SESSION_BUS_ADDRESS".to_owned(), nowhere),
            ],
        }
    }

    /// Sets an environment variable for every command and the daemon.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Starts `syncmgr daemon` in this home and waits until it answers;
    /// it is stopped (SIGTERM) when the home is dropped.
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "a daemon already runs in this home");
        let child = Command::new(syncmgr_bin())
            .env_remove("SYNCMGR_LOG")
            .env("SYNCMGR_HOME", self.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // A free port each: tests run side by side.
            .args(["daemon", "--web", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start syncmgr daemon");
        self.daemon = Some(child);
        let socket = self.path().join("run/daemon.sock");
        assert!(
            wait_until(PATIENCE, || std::os::unix::net::UnixStream::connect(
                &socket
            )
            .is_ok()),
            "the daemon did not listen on {} in time",
            socket.display()
        );
    }

    /// Stops the daemon (SIGTERM) and waits for it; returns how it exited.
    pub fn stop_daemon(&mut self) -> ExitStatus {
        let mut daemon = self.daemon.take().expect("no daemon runs in this home");
        stop_daemon(&mut daemon);
        daemon.wait().expect("daemon status")
    }

    /// Sends the daemon SIGHUP: it reads config.toml and the schedules
    /// again, and its timer looks at once.
    pub fn reload_daemon(&self) {
        let pid = self.daemon_pid().expect("no daemon runs in this home");
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -HUP {pid}");
    }

    /// The daemon's process id, when one was started here.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// Kills the daemon with SIGKILL and reaps it.
    pub fn kill_daemon(&mut self) {
        let mut daemon = self.daemon.take().expect("no daemon runs in this home");
        let _ = daemon.kill();
        let _ = daemon.wait();
    }

    /// The home directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `syncmgr ARGS` in this home (`SYNCMGR_HOME` set, `SYNCMGR_LOG` unset).
    pub fn cmd<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Cmd::new();
        for (key, value) in &self.env {
            cmd.inner.env(key, value);
        }
        cmd.env("SYNCMGR_HOME", self.path()).args(args);
        cmd.handlers_parent = self.daemon_pid();
        cmd
    }

    /// Runs `syncmgr ARGS` to its end.
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.cmd(args).run()
    }

    /// Runs `syncmgr ARGS` and asserts exit code 0.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Outcome {
        let out = self.run(args);
        out.assert_code(0);
        out
    }

    /// `syncmgr ARGS` whose stdout is one JSON document (exit code 0).
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        self.ok(args).json()
    }

    /// Registers the scripted handler as `name`: `register NAME FLAGS --
    /// syncmgr-test-handler HANDLER_ARGS`.
    #[track_caller]
    pub fn register_with(&self, name: &str, flags: &[&str], handler_args: &[&str]) {
        let mut cmd = self.cmd(["register", name]);
        cmd.args(flags)
            .arg("--")
            .arg(test_handler())
            .args(handler_args);
        cmd.run().assert_code(0).assert_stdout_contains(name);
    }

    /// Registers the scripted handler as `name` with these handler arguments.
    #[track_caller]
    pub fn register(&self, name: &str, handler_args: &[&str]) {
        self.register_with(name, &[], handler_args);
    }

    /// `syncmgr sync --json ARGS`, run to its end.
    pub fn sync(&self, args: &[&str]) -> SyncRun {
        let mut cmd = self.cmd(["sync", "--json"]);
        cmd.args(args);
        cmd.run_json_lines()
    }

    /// `syncmgr sync --json ARGS` in the background.
    pub fn spawn_sync(&self, args: &[&str]) -> Background {
        let mut cmd = self.cmd(["sync", "--json"]);
        cmd.args(args);
        cmd.spawn()
    }

    /// `syncmgr log --json ARGS`: the entries.
    #[track_caller]
    pub fn log(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["log", "--json"];
        all.extend_from_slice(args);
        as_array(self.json(&all))
    }

    /// `syncmgr history --json`: the sessions.
    #[track_caller]
    pub fn history(&self) -> Vec<Value> {
        as_array(self.json(&["history", "--json"]))
    }

    /// The control sockets in the runtime directory.
    pub fn sockets(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.path().join("run")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(OsStr::to_str) == Some("sock"))
            .filter(|p| p.file_stem().and_then(OsStr::to_str) != Some("daemon"))
            .collect()
    }
}

#[track_caller]
fn as_array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        other => panic!("expected a JSON array, got {other}"),
    }
}

/// A `syncmgr` command line, shown in reports as it could be typed.
#[derive(Debug)]
pub struct Cmd {
    inner: Command,
    shown: String,
    /// The process whose children the handlers are: the daemon's, when
    /// the command goes through one; the command's own otherwise.
    handlers_parent: Option<u32>,
}

impl Cmd {
    /// `syncmgr` with no arguments, no home and `SYNCMGR_LOG` unset.
    pub fn new() -> Cmd {
        let mut inner = Command::new(syncmgr_bin());
        inner.env_remove("SYNCMGR_LOG").env_remove("SYNCMGR_HOME");
        Cmd {
            inner,
            shown: syncmgr_bin().display().to_string(),
            handlers_parent: None,
        }
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Cmd {
        let arg = arg.as_ref();
        let text = arg.to_string_lossy();
        if text.is_empty() || text.contains(|c: char| c.is_whitespace() || c == '"') {
            let _ = write!(self.shown, " {text:?}");
        } else {
            let _ = write!(self.shown, " {text}");
        }
        self.inner.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for arg in args {
            self.arg(arg);
        }
        self
    }

    /// Sets an environment variable.
    pub fn env(&mut self, key: &str, value: impl AsRef<OsStr>) -> &mut Cmd {
        let value = value.as_ref();
        self.shown = format!("{key}={} {}", value.to_string_lossy(), self.shown);
        self.inner.env(key, value);
        self
    }

    /// Runs the command to its end (stdin is empty).
    pub fn run(&mut self) -> Outcome {
        let out = self
            .inner
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.shown));
        Outcome::new(
            self.shown.clone(),
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a `sync --json`-like command and parses its NDJSON stdout.
    pub fn run_json_lines(&mut self) -> SyncRun {
        SyncRun::new(self.run())
    }

    /// Starts the command in the background, stdout and stderr piped.
    pub fn spawn(&mut self) -> Background {
        let mut child = self
            .inner
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.shown));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        });
        Background {
            command: self.shown.clone(),
            child,
            lines: Some(lines),
            seen: Vec::new(),
            stderr: Some(stderr),
            pids: Vec::new(),
            handlers_parent: self.handlers_parent,
        }
    }
}

/// A finished command: what it printed and how it exited.
#[derive(Debug)]
pub struct Outcome {
    /// The command as it could be typed.
    pub command: String,
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// Whether the report was already part of a panic message.
    reported: Cell<bool>,
}

impl Outcome {
    fn new(command: String, status: ExitStatus, stdout: String, stderr: String) -> Outcome {
        Outcome {
            command,
            status,
            stdout,
            stderr,
            reported: Cell::new(false),
        }
    }

    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Everything about the command, for a failure message.
    pub fn report(&self) -> String {
        format!(
            "command: {}\nstatus: {}\nstdout:\n---\n{}---\nstderr:\n---\n{}---\n",
            self.command,
            self.status,
            with_newline(&self.stdout),
            with_newline(&self.stderr)
        )
    }

    /// Fails the test with `message` and the report.
    #[track_caller]
    pub fn fail(&self, message: impl std::fmt::Display) -> ! {
        self.reported.set(true);
        panic!("{message}\n{}", self.report())
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn assert_code(&self, expected: i32) -> &Outcome {
        if self.code() != Some(expected) {
            self.fail(format!("expected exit code {expected}"));
        }
        self
    }

    /// Asserts that stdout contains `needle`.
    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: &str) -> &Outcome {
        if !self.stdout.contains(needle) {
            self.fail(format!("expected stdout to contain {needle:?}"));
        }
        self
    }

    /// Asserts that stderr contains `needle`.
    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Outcome {
        if !self.stderr.contains(needle) {
            self.fail(format!("expected stderr to contain {needle:?}"));
        }
        self
    }

    /// stdout as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| self.fail(format!("stdout is not one JSON document: {e}")))
    }

    /// stdout as newline-delimited JSON, one value per line.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| self.fail(format!("stdout line is not JSON ({e}): {line}")))
            })
            .collect()
    }
}

impl Drop for Outcome {
    #[allow(clippy::print_stderr)] // libtest captures eprintln!, and shows it on failure
    fn drop(&mut self) {
        if thread::panicking() && !self.reported.get() {
            eprintln!("--- a command of the failing test ---\n{}", self.report());
        }
    }
}

fn with_newline(text: &str) -> String {
    if text.is_empty() || text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    }
}

/// A finished `sync --json` (or `log show --json`): the command and its
/// parsed events. Derefs to the [`Outcome`].
#[derive(Debug)]
pub struct SyncRun {
    /// The command.
    pub out: Outcome,
    /// One JSON object per stdout line.
    pub events: Vec<Value>,
}

impl Deref for SyncRun {
    type Target = Outcome;

    fn deref(&self) -> &Outcome {
        &self.out
    }
}

impl SyncRun {
    /// Parses the events and checks the stream's shape when there is one:
    /// each line an object with an `event`; `sessionStarted` first and
    /// exactly one `sessionFinished`, last, both with the same session id.
    #[track_caller]
    pub fn new(out: Outcome) -> SyncRun {
        let events = out.json_lines();
        if let Some(bad) = events
            .iter()
            .find(|e| !e.get("event").is_some_and(Value::is_string))
        {
            out.fail(format!("an NDJSON line without an \"event\" field: {bad}"));
        }
        if let (Some(first), Some(last)) = (events.first(), events.last()) {
            if first["event"] != "sessionStarted" {
                out.fail("the first event is not sessionStarted");
            }
            if last["event"] != "sessionFinished" {
                out.fail("the last event is not sessionFinished");
            }
            let finished = events
                .iter()
                .filter(|e| e["event"] == "sessionFinished")
                .count();
            if finished != 1 {
                out.fail(format!("{finished} sessionFinished events, not one"));
            }
            if first["session"] != last["session"] || !first["session"].is_string() {
                out.fail("sessionStarted and sessionFinished name different sessions");
            }
        }
        SyncRun { out, events }
    }

    /// Every event, in order.
    pub fn events(&self) -> &[Value] {
        &self.events
    }

    /// The `sessionStarted` event.
    #[track_caller]
    pub fn started(&self) -> &Value {
        match self.events.first() {
            Some(first) => first,
            None => self.fail("no events on stdout"),
        }
    }

    /// The `sessionFinished` event.
    #[track_caller]
    pub fn finished(&self) -> &Value {
        match self.events.last() {
            Some(last) => last,
            None => self.fail("no events on stdout"),
        }
    }

    /// The session id.
    #[track_caller]
    pub fn session(&self) -> String {
        self.started()["session"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The session's outcome.
    #[track_caller]
    pub fn outcome(&self) -> &str {
        self.finished()["outcome"].as_str().unwrap_or_default()
    }

    /// `[succeeded, failed, skipped, stopped]` of the summary.
    #[track_caller]
    pub fn counts(&self) -> [u64; 4] {
        let c = &self.finished()["counts"];
        ["succeeded", "failed", "skipped", "stopped"].map(|k| {
            c[k].as_u64()
                .unwrap_or_else(|| self.fail(format!("counts.{k} is not a number")))
        })
    }

    /// Final status per `handler/item`, from the summary.
    #[track_caller]
    pub fn statuses(&self) -> BTreeMap<String, String> {
        let Some(items) = self.finished()["items"].as_array() else {
            self.fail("sessionFinished has no items array");
        };
        items
            .iter()
            .map(|i| {
                (
                    format!(
                        "{}/{}",
                        i["handler"].as_str().unwrap_or("?"),
                        i["item"].as_str().unwrap_or("?")
                    ),
                    i["status"].as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect()
    }

    /// The `item` events of one item, in order.
    pub fn item_events(&self, handler: &str, item: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["event"] == "item" && e["handler"] == handler && e["item"] == item)
            .collect()
    }

    /// The `log` events.
    pub fn logs(&self) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == "log").collect()
    }

    /// The `log` events of `handler` at `level` whose text contains `needle`.
    pub fn logs_matching(&self, handler: &str, level: &str, needle: &str) -> Vec<&Value> {
        self.logs()
            .into_iter()
            .filter(|e| {
                e["handler"] == handler
                    && e["level"] == level
                    && e["text"].as_str().is_some_and(|t| t.contains(needle))
            })
            .collect()
    }

    /// Asserts that `handler` logged at least one `level` entry containing
    /// `needle` (handler stderr lines are `information` entries).
    #[track_caller]
    pub fn assert_log(&self, handler: &str, level: &str, needle: &str) -> &SyncRun {
        if self.logs_matching(handler, level, needle).is_empty() {
            self.fail(format!(
                "expected a {level} log event of {handler} containing {needle:?}"
            ));
        }
        self
    }

    /// Asserts that no log event of `handler` contains `needle`.
    #[track_caller]
    pub fn assert_no_log(&self, handler: &str, needle: &str) -> &SyncRun {
        if let Some(e) = self.logs().into_iter().find(|e| {
            e["handler"] == handler && e["text"].as_str().is_some_and(|t| t.contains(needle))
        }) {
            self.fail(format!("unexpected log event {e}"));
        }
        self
    }
}

/// `syncmgr` running in the background (`sync --json` for cancel and signal
/// tests). Dropping it kills the command and the handler processes it
/// learned about, if they are still running.
#[derive(Debug)]
pub struct Background {
    command: String,
    child: Child,
    /// stdout lines as they come; `None` once the test closed stdout.
    lines: Option<Receiver<String>>,
    /// stdout lines taken so far.
    seen: Vec<String>,
    stderr: Option<JoinHandle<String>>,
    /// Handler processes found under the command, killed on drop.
    pids: Vec<u32>,
    /// See [`Cmd`]'s field of the same name.
    handlers_parent: Option<u32>,
}

impl Background {
    /// What happened so far, for a failure message.
    pub fn report(&self) -> String {
        format!(
            "command (in the background, pid {}): {}\nstdout so far:\n---\n{}---\n",
            self.child.id(),
            self.command,
            self.seen.iter().fold(String::new(), |mut s, l| {
                s.push_str(l);
                s.push('\n');
                s
            }),
        )
    }

    #[track_caller]
    fn fail(&mut self, message: impl std::fmt::Display) -> ! {
        let report = self.report();
        self.kill();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        panic!(
            "{message}\n{report}stderr:\n---\n{}---",
            with_newline(&stderr)
        )
    }

    /// Reads events until one satisfies `wanted` (and returns it), failing
    /// the test when `timeout` passes or stdout ends first.
    #[track_caller]
    pub fn wait_for_event(
        &mut self,
        timeout: Duration,
        what: &str,
        mut wanted: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(lines) = &self.lines else {
                self.fail("the test closed stdout already")
            };
            match lines.recv_timeout(left) {
                Ok(line) => {
                    let value = serde_json::from_str::<Value>(&line);
                    self.seen.push(line);
                    match value {
                        Ok(v) if wanted(&v) => return v,
                        Ok(_) => {}
                        Err(e) => self.fail(format!("stdout line is not JSON: {e}")),
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(format!("no event {what} within {timeout:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(format!("stdout ended before an event {what}"))
                }
            }
        }
    }

    /// Waits for an `item` event of `handler/item` with `status`.
    #[track_caller]
    pub fn wait_for_item(&mut self, handler: &str, item: &str, status: &str) {
        self.wait_for_items(&[(handler, item)], status);
    }

    /// Waits until each `(handler, item)` had an `item` event with `status`
    /// (in any order).
    #[track_caller]
    pub fn wait_for_items(&mut self, items: &[(&str, &str)], status: &str) {
        let mut missing: Vec<(&str, &str)> = items.to_vec();
        let what = format!("with status {status} for each of {items:?}");
        self.wait_for_event(PATIENCE, &what, |e| {
            if e["event"] == "item" && e["status"] == status {
                missing.retain(|&(h, i)| !(e["handler"] == h && e["item"] == i));
            }
            missing.is_empty()
        });
    }

    /// The handler processes the command started (its children, read from
    /// `/proc`), remembered so that dropping `self` can kill leftovers.
    pub fn handler_pids(&mut self) -> Vec<u32> {
        let pids = children_of(self.handlers_parent.unwrap_or(self.child.id()));
        for &pid in &pids {
            if !self.pids.contains(&pid) {
                self.pids.push(pid);
            }
        }
        pids
    }

    /// The command's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the command.
    pub fn signal(&self, signal: syncmgr_sys::Signal) {
        send_signal(self.child.id(), signal);
    }

    /// Stops reading the command's stdout, as `syncmgr sync | head -1` does
    /// once it has its line: the pipe is closed when the next line comes, and
    /// the command's writes after that fail (EPIPE).
    pub fn close_stdout(&mut self) {
        self.lines = None;
    }

    /// The events read so far (by the `wait_for_*` methods).
    pub fn events_so_far(&self) -> Vec<Value> {
        self.seen
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (up to `timeout`) for the command to exit, then returns it with
    /// its whole stdout parsed as events (checked like [`SyncRun::new`]).
    #[track_caller]
    pub fn finish(self, timeout: Duration) -> SyncRun {
        SyncRun::new(self.finish_raw(timeout))
    }

    /// Waits (up to `timeout`) for the command to exit and returns what it
    /// printed, without expecting a well-formed event stream (for a command
    /// that was killed).
    #[track_caller]
    pub fn finish_raw(mut self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => self.fail(format!("still running after {timeout:?}")),
                Err(e) => self.fail(format!("cannot wait for it: {e}")),
            }
        };
        // The command is gone, so its stdout is closed: the reader ends soon.
        let drain_deadline = Instant::now() + PATIENCE;
        while let Some(lines) = &self.lines {
            let left = drain_deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.fail("stdout stayed open after the command exited")
                }
            }
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let mut stdout = String::new();
        for line in &self.seen {
            stdout.push_str(line);
            stdout.push('\n');
        }
        Outcome::new(self.command.clone(), status, stdout, stderr)
    }

    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for &pid in &self.pids {
            if process_running(pid) {
                send_signal(pid, syncmgr_sys::Signal::Kill);
            }
        }
    }
}

impl Drop for Background {
    #[allow(clippy::print_stderr)] // libtest captures eprintln!, and shows it on failure
    fn drop(&mut self) {
        if thread::panicking() && self.stderr.is_some() {
            eprintln!(
                "--- a background command of the failing test ---\n{}",
                self.report()
            );
        }
        self.kill();
    }
}

/// Sends a signal to a process (one that is gone already is fine).
pub fn send_signal(pid: u32, signal: syncmgr_sys::Signal) {
    if let Err(e) = syncmgr_sys::signal_process(pid, signal) {
        assert!(
            e.raw_os_error() == Some(3), // ESRCH
            "kill({pid}, {signal:?}) failed: {e}"
        );
    }
}

/// `(state, ppid)` from `/proc/<pid>/stat`, or `None` when there is no such
/// process.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a live process (a zombie, exited but not yet reaped by
/// whoever inherited it, counts as gone).
pub fn process_running(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

/// The live children of `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| {
            proc_stat(pid)
                .is_some_and(|(state, ppid)| ppid == parent && !matches!(state, 'Z' | 'X'))
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The `log` entries (from `log --json`) whose text contains `needle`.
pub fn entries_containing<'a>(entries: &'a [Value], needle: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .filter(|e| e["text"].as_str().is_some_and(|t| t.contains(needle)))
        .collect()
}
