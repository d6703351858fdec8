//! `syncmgr-test-handler`: a scripted out-of-process sync handler that
//! syncmgr's own integration tests and benchmarks start as a real child process.
//!
//! It speaks the handler protocol (newline-delimited JSON-RPC 2.0 over
//! stdin/stdout, see `docs/protocol.md`) and writes what tests may want to check
//! to stderr as plain lines (the manager keeps them as log entries), e.g.
//! `got setItemStatus b skipped`, `got cancelItem for a`, `showError fail-a`.
//! It exits with status 0 on `shutdown` or when stdin reaches EOF (answering
//! what it already received first, within half a second), so it never outlives
//! a killed manager.
//!
//! ```text
//! syncmgr-test-handler [--scenario NAME] [--items a,b,c] [--unchecked x,y]
//!     [--steps N] [--step-ms MS] [--fail ITEM[,ITEM]] [--name TEXT]
//!     [--flood N] [--no-complete] [--exit-code N] [--linger]
//!     [--barrier DIR:N]
//! ```
//!
//! `--barrier DIR:N` makes `initialize` leave a file in DIR and answer only
//! when DIR holds N files (or after 10 s): N handlers asked at once meet
//! there, handlers asked one at a time do not.
//! `--exit-code N` exits with status N (not 0) after `shutdown` or EOF;
//! `--linger` does not exit then at all (a handler that ignores `shutdown`).
//!
//! Defaults: scenario `ok`, items `a,b`, 4 steps, 0 ms per step, flood 1000.
//! Items are enumerated as `{id, name: "Item <id>", checked, flags: {},
//! lastUpdate: null}` (`checked` unless in `--unchecked`), `complete: true`
//! unless `--no-complete`. The handler is named `--name` or "Test handler" and
//! says it has properties (`showProperties` answers `{outcome: "ok"}`).
//!
//! # The default behaviour (scenario `ok`)
//!
//! `prepareForSync` remembers the items. `synchronize` works through them in
//! order, sending one `progress` at a time and waiting for each reply:
//! an item skipped by `setItemStatus` before it started reports `skipped`;
//! otherwise `updating` (`text: "working on <id>"`, `value: 0`, `max: steps`),
//! then `value: k` for each step (sleeping `--step-ms` before each, while
//! watching for `setItemStatus`), then `succeeded` (`text: "done"`), or, for an
//! item in `--fail`, a `logError` (`errorId: "fail-<id>"`, actionable) and
//! `failed`. A `cancelItem` reply, or `setItemStatus skipped` for the running
//! item, stops it (`stopped`) and moves on; `cancelAll` stops it and skips every
//! remaining item. Then `synchronize` is answered `{}`.
//! `showError {errorId}` logs `showError <errorId>`; for `fail-<item>` it answers
//! `{retry: [<item>]}` and that item succeeds when synced again in this process
//! (the retry path), otherwise `{retry: []}`.
//!
//! # Scenarios
//!
//! - `ok`: the default behaviour above; the well-behaved handler.
//! - `decline`: `initialize` → `{participate: false}`; the manager must leave
//!   the handler out (and shut it down).
//! - `ignore-cancel`: like `ok` but ignores cancel replies and `setItemStatus`;
//!   with a long `--step-ms` it proves the manager's grace-period kill.
//! - `silent`: answers normally until `synchronize`, then never answers or sends
//!   anything again (still exits on EOF); proves the not-responding timeout.
//! - `crash`: exits with status 3 right after the first `progress` of the first
//!   item; proves early exit is handled (unfinished items end `failed`).
//! - `garbage`: writes non-JSON and invalid messages (`hello`, `{not json`, `[]`,
//!   `{"jsonrpc":"2.0"}`) before answering `initialize`, then acts like `ok`;
//!   proves the manager survives a dirty stdout.
//! - `bad-requests`: sends invalid requests and logs `reply <label>: <code|ok>`
//!   for each: `outside-window` (a `progress` while `initialize` is pending), and
//!   during `synchronize` `unknown-item` (item `nope`), `value-over-max`
//!   (value 10, max 5), `bad-status` (`bogus`), `long-text` (5000 bytes),
//!   `negative-value` (-1); then acts like `ok`, so the items must still succeed.
//!   Proves rule 7: error responses, and the session keeps going.
//! - `never-report`: item `a` goes to `succeeded`, every other item only gets an
//!   `updating`; then `synchronize` is answered. Proves unreported items end
//!   `failed` with a log entry.
//! - `fail-prepare`: `prepareForSync` gets an error response (`-32000 cannot
//!   prepare`); the manager must release the handler without `synchronize`.
//! - `fail-sync`: reports every item `updating`, then answers `synchronize` with
//!   an error (`-32000 sync failed`).
//! - `log`: during `synchronize` writes `stderr line 1`/`stderr line 2`, logs an
//!   information entry without an errorId (logs `assigned <id>` with the id the
//!   manager returns), a warning `w1`, deletes `w1` with `deleteLogError`, then
//!   acts like `ok`.
//! - `modeless`: in `prepareForSync` calls `enableModeless {enable: true}` (logs
//!   `modeless <allowed>`), `enableModeless {enable: false}` and
//!   `establishConnection {connection: null}` (logs `connection ok` or
//!   `connection error <code>`), then acts like `ok`.
//! - `flood`: during `synchronize` reports the first item `updating` (`max: N`),
//!   then sends `--flood N` `progress {value}` requests for it pipelined, without
//!   waiting, counts the replies (logs `flood replies <n>`, then
//!   `flood elapsed_us <us>`: microseconds from writing the first of the `N`
//!   requests to reading the last reply), then reports every item `succeeded`.
//!   For the throughput benchmark (`crates/syncmgr/benches/handlers.rs`).
//! - `slow-start`: sleeps `--step-ms` before answering `initialize`, for cancel
//!   before start.

mod rpc;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::rpc::{Conn, Incoming, Reply, note};

const USAGE: &str = "usage: syncmgr-test-handler [--scenario NAME] [--items a,b,c] \
[--unchecked x,y] [--steps N] [--step-ms MS] [--fail ITEM[,ITEM]] [--name TEXT] \
[--flood N] [--no-complete]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Ok,
    Decline,
    IgnoreCancel,
    Silent,
    Crash,
    Garbage,
    BadRequests,
    NeverReport,
    FailPrepare,
    FailSync,
    Log,
    Modeless,
    Flood,
    SlowStart,
}

impl Scenario {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "ok" => Self::Ok,
            "decline" => Self::Decline,
            "ignore-cancel" => Self::IgnoreCancel,
            "silent" => Self::Silent,
            "crash" => Self::Crash,
            "garbage" => Self::Garbage,
            "bad-requests" => Self::BadRequests,
            "never-report" => Self::NeverReport,
            "fail-prepare" => Self::FailPrepare,
            "fail-sync" => Self::FailSync,
            "log" => Self::Log,
            "modeless" => Self::Modeless,
            "flood" => Self::Flood,
            "slow-start" => Self::SlowStart,
            _ => return None,
        })
    }
}

#[derive(Debug)]
struct Args {
    scenario: Scenario,
    items: Vec<String>,
    unchecked: Vec<String>,
    steps: u64,
    step: Duration,
    fail: Vec<String>,
    name: String,
    flood: u64,
    complete: bool,
    /// `--barrier DIR:N`: `initialize` marks DIR and answers only once N
    /// handlers have marked it (or after 10 s): handlers asked one at a
    /// time never get there together.
    barrier: Option<(std::path::PathBuf, usize)>,
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        scenario: Scenario::Ok,
        items: list("a,b"),
        unchecked: Vec::new(),
        steps: 4,
        step: Duration::ZERO,
        fail: Vec::new(),
        name: "Test handler".to_owned(),
        flood: 1000,
        complete: true,
        barrier: None,
    };
    while let Some(arg) = argv.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        if flag == "--no-complete" {
            args.complete = false;
            continue;
        }
        if flag == "--linger" {
            let _ = rpc::ON_CLOSE.set(None);
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err("help".to_owned());
        }
        let value = inline
            .or_else(|| argv.next())
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--scenario" => {
                args.scenario =
                    Scenario::parse(&value).ok_or_else(|| format!("unknown scenario {value}"))?;
            }
            "--items" => args.items = list(&value),
            "--unchecked" => args.unchecked = list(&value),
            "--steps" => args.steps = number(&value)?,
            "--step-ms" => args.step = Duration::from_millis(number(&value)?),
            "--fail" => args.fail = list(&value),
            "--name" => args.name = value,
            "--flood" => args.flood = number(&value)?,
            "--barrier" => {
                let (dir, n) = value
                    .rsplit_once(':')
                    .ok_or_else(|| format!("{flag}: DIR:N, not {value}"))?;
                let n = usize::try_from(number(n)?).map_err(|e| e.to_string())?;
                args.barrier = Some((dir.into(), n));
            }
            "--exit-code" => {
                let code = value
                    .parse::<i32>()
                    .map_err(|_| format!("{flag}: not a number: {value}"))?;
                let _ = rpc::ON_CLOSE.set(Some(code));
            }
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(args)
}

/// The manager's answer to a `progress` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Continue,
    CancelItem,
    CancelAll,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Continue => "continue",
            Self::CancelItem => "cancelItem",
            Self::CancelAll => "cancelAll",
        }
    }
}

/// How the work on one item ended, for the items after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Continue,
    CancelAll,
}

/// Writes `reply <label>: <code|ok>`.
fn report(label: &str, reply: &Reply) {
    match reply {
        Ok(_) => note!("reply {label}: ok"),
        Err(e) => note!("reply {label}: {}", e.code),
    }
}

#[derive(Debug)]
struct Handler {
    args: Args,
    conn: Arc<Conn>,
    inbox: Receiver<Incoming>,
    /// Messages from the manager taken off the inbox while busy, handled later.
    deferred: VecDeque<Incoming>,
    prepared: Vec<String>,
    /// Items the manager skipped with `setItemStatus` in this round.
    skip_requested: HashSet<String>,
    /// Items `showError` asked to retry: they succeed from now on.
    must_succeed: HashSet<String>,
}

impl Handler {
    fn run(&mut self) -> ! {
        loop {
            let msg = match self.deferred.pop_front() {
                Some(msg) => msg,
                None => match self.inbox.recv() {
                    Ok(msg) => msg,
                    Err(_) => rpc::exit_closed(),
                },
            };
            match msg {
                Incoming::Request { id, method, params } => {
                    self.handle_request(&id, &method, &params);
                }
                Incoming::Notification { method, params } => self.notification(&method, &params),
                Incoming::Closed => rpc::exit_closed(),
            }
        }
    }

    fn notification(&mut self, method: &str, params: &Value) {
        if method == "setItemStatus" {
            // Already logged by the reader when it arrived.
            if params.get("status").and_then(Value::as_str) == Some("skipped")
                && let Some(item) = params.get("item").and_then(Value::as_str)
            {
                self.skip_requested.insert(item.to_owned());
            }
        } else {
            note!("ignored notification {method}");
        }
    }

    fn handle_request(&mut self, id: &Value, method: &str, params: &Value) {
        match method {
            "initialize" => self.initialize(id, params),
            "getHandlerInfo" => self.conn.respond(
                id,
                json!({"name": self.args.name, "flags": {"hasProperties": true}}),
            ),
            "enumItems" => self.enum_items(id),
            "showProperties" => {
                let item = params.get("item").and_then(Value::as_str).unwrap_or("null");
                note!("showProperties {item}");
                self.conn.respond(id, json!({"outcome": "ok"}));
            }
            "prepareForSync" => self.prepare(id, params),
            "synchronize" => self.synchronize(id),
            "showError" => self.show_error(id, params),
            _ => {
                note!("unknown method {method}");
                self.conn.respond_error(id, -32601, "method not found");
            }
        }
    }

    // ---- manager requests -------------------------------------------------

    /// Marks the barrier's folder and waits (10 s at most) for the others.
    fn barrier(&self) {
        let Some((dir, n)) = &self.args.barrier else {
            return;
        };
        let _ = std::fs::write(dir.join(std::process::id().to_string()), b"");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if std::fs::read_dir(dir).map(Iterator::count).unwrap_or(0) >= *n {
                note!("all {n} at the barrier");
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        note!("alone at the barrier");
    }

    fn initialize(&mut self, id: &Value, params: &Value) {
        let event = params.get("event").and_then(Value::as_str).unwrap_or("?");
        note!("got initialize {event}");
        match self.args.scenario {
            Scenario::Garbage => {
                for line in ["hello", "{not json", "[]", r#"{"jsonrpc":"2.0"}"#] {
                    self.conn.write_line(line);
                }
            }
            Scenario::SlowStart => thread::sleep(self.args.step),
            _ if self.args.barrier.is_some() => self.barrier(),
            Scenario::BadRequests => {
                let item = self.args.items.first().map_or("a", String::as_str);
                let reply = self
                    .conn
                    .request("progress", json!({"item": item, "status": "updating"}));
                report("outside-window", &reply);
            }
            _ => {}
        }
        let participate = self.args.scenario != Scenario::Decline;
        self.conn.respond(id, json!({"participate": participate}));
    }

    fn enum_items(&self, id: &Value) {
        let items: Vec<Value> = self
            .args
            .items
            .iter()
            .map(|item| {
                json!({
                    "id": item,
                    "name": format!("Item {item}"),
                    "checked": !self.args.unchecked.contains(item),
                    "flags": {},
                    "lastUpdate": null,
                })
            })
            .collect();
        self.conn
            .respond(id, json!({"items": items, "complete": self.args.complete}));
    }

    fn prepare(&mut self, id: &Value, params: &Value) {
        self.prepared = params
            .get("items")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        self.skip_requested.clear();
        note!("got prepareForSync {}", self.prepared.join(","));
        match self.args.scenario {
            Scenario::FailPrepare => {
                self.conn.respond_error(id, -32000, "cannot prepare");
                return;
            }
            Scenario::Modeless => self.modeless(),
            _ => {}
        }
        self.conn.respond(id, json!({}));
    }

    fn synchronize(&mut self, id: &Value) {
        note!("got synchronize");
        match self.args.scenario {
            Scenario::Silent => silent(),
            Scenario::Crash => self.crash(),
            Scenario::FailSync => {
                self.fail_sync();
                self.conn.respond_error(id, -32000, "sync failed");
                return;
            }
            Scenario::NeverReport => self.never_report(),
            Scenario::Flood => self.flood(),
            Scenario::BadRequests => {
                self.bad_requests();
                self.sync_all(false);
            }
            Scenario::Log => {
                self.log_entries();
                self.sync_all(false);
            }
            Scenario::IgnoreCancel => self.sync_all(true),
            _ => self.sync_all(false),
        }
        self.conn.respond(id, json!({}));
    }

    fn show_error(&mut self, id: &Value, params: &Value) {
        let error_id = params.get("errorId").and_then(Value::as_str).unwrap_or("");
        note!("showError {error_id}");
        let retry: Vec<&str> = match error_id.strip_prefix("fail-") {
            Some(item) if !item.is_empty() => {
                self.must_succeed.insert(item.to_owned());
                vec![item]
            }
            _ => Vec::new(),
        };
        self.conn.respond(id, json!({"retry": retry}));
    }

    // ---- the default sync -------------------------------------------------

    /// Syncs every prepared item in order; `ignore_cancel` is `ignore-cancel`.
    fn sync_all(&mut self, ignore_cancel: bool) {
        let items = self.prepared.clone();
        let mut next = Next::Continue;
        for item in &items {
            if next == Next::CancelAll {
                self.progress(item, json!({"status": "skipped"}));
            } else {
                next = self.sync_item(item, ignore_cancel);
            }
        }
    }

    fn sync_item(&mut self, item: &str, ignore_cancel: bool) -> Next {
        self.take_notifications(None, Duration::ZERO);
        if !ignore_cancel && self.skip_requested.contains(item) {
            return match self.progress(item, json!({"status": "skipped"})) {
                Action::CancelAll => Next::CancelAll,
                _ => Next::Continue,
            };
        }
        let steps = self.args.steps;
        let mut action = self.progress(
            item,
            json!({"status": "updating", "text": format!("working on {item}"), "value": 0, "max": steps}),
        );
        for k in 1..=steps {
            if let Some(next) = self.check_cancel(item, action, ignore_cancel) {
                return next;
            }
            let watch = (!ignore_cancel).then_some(item);
            self.take_notifications(watch, self.args.step);
            if let Some(next) = self.check_cancel(item, Action::Continue, ignore_cancel) {
                return next;
            }
            action = self.progress(item, json!({"value": k}));
        }
        if let Some(next) = self.check_cancel(item, action, ignore_cancel) {
            return next;
        }
        self.finish(item, ignore_cancel)
    }

    /// Stops `item` if the manager asked to (through `action` or `setItemStatus`).
    fn check_cancel(&mut self, item: &str, action: Action, ignore_cancel: bool) -> Option<Next> {
        if ignore_cancel {
            if action != Action::Continue {
                note!("ignoring {} for {item}", action.as_str());
            }
            return None;
        }
        let next = match action {
            Action::CancelAll => {
                note!("got cancelAll for {item}");
                Next::CancelAll
            }
            Action::CancelItem => {
                note!("got cancelItem for {item}");
                Next::Continue
            }
            Action::Continue if self.skip_requested.contains(item) => {
                note!("stopping {item} (skipped while running)");
                Next::Continue
            }
            Action::Continue => return None,
        };
        self.progress(item, json!({"status": "stopped"}));
        Some(next)
    }

    /// Reports the final status of an item that ran all its steps.
    fn finish(&mut self, item: &str, ignore_cancel: bool) -> Next {
        let fails = self.args.fail.iter().any(|f| f == item) && !self.must_succeed.contains(item);
        let action = if fails {
            let reply = self.conn.request(
                "logError",
                json!({
                    "level": "error",
                    "text": format!("{item} failed"),
                    "item": item,
                    "errorId": format!("fail-{item}"),
                    "actionable": true,
                }),
            );
            if let Err(e) = reply {
                note!("logError for {item}: error {e}");
            }
            self.progress(item, json!({"status": "failed"}))
        } else {
            self.progress(item, json!({"status": "succeeded", "text": "done"}))
        };
        if action == Action::CancelAll && !ignore_cancel {
            note!("got cancelAll for {item}");
            return Next::CancelAll;
        }
        Next::Continue
    }

    /// Sends `progress {item, ..fields}` and waits for the manager's action.
    fn progress(&mut self, item: &str, mut fields: Value) -> Action {
        fields["item"] = Value::from(item);
        match self.conn.request("progress", fields) {
            Ok(res) => match res.get("action").and_then(Value::as_str) {
                Some("cancelItem") => Action::CancelItem,
                Some("cancelAll") => Action::CancelAll,
                _ => Action::Continue,
            },
            Err(e) => {
                note!("progress for {item}: error {e}");
                Action::Continue
            }
        }
    }

    /// Takes messages off the inbox for up to `wait` (at least once, without
    /// blocking): `setItemStatus` is applied, everything else is kept for
    /// later. Returns early when `watch` is set and that item gets skipped.
    fn take_notifications(&mut self, watch: Option<&str>, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            if watch.is_some_and(|item| self.skip_requested.contains(item)) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(left) {
                Ok(Incoming::Notification { method, params }) if method == "setItemStatus" => {
                    self.notification(&method, &params);
                }
                Ok(Incoming::Closed) | Err(RecvTimeoutError::Disconnected) => rpc::exit_closed(),
                Ok(other) => self.deferred.push_back(other),
                Err(RecvTimeoutError::Timeout) => return,
            }
        }
    }

    // ---- scenarios ----------------------------------------------------------

    /// `crash`: exit with status 3 after the first progress of the first item.
    fn crash(&mut self) -> ! {
        if let Some(item) = self.prepared.first().cloned() {
            self.progress(
                &item,
                json!({"status": "updating", "value": 0, "max": self.args.steps}),
            );
        }
        note!("crashing");
        std::process::exit(3)
    }

    /// `fail-sync`: every item `updating`, then (by the caller) an error response.
    fn fail_sync(&mut self) {
        for item in self.prepared.clone() {
            self.progress(&item, json!({"status": "updating"}));
        }
    }

    /// `never-report`: `a` runs normally, the others never get a final status.
    fn never_report(&mut self) {
        for item in self.prepared.clone() {
            if item == "a" {
                self.sync_item(&item, false);
            } else {
                self.progress(&item, json!({"status": "updating"}));
            }
        }
    }

    /// `flood`: many pipelined progress requests for the first item.
    fn flood(&mut self) {
        let items = self.prepared.clone();
        let n = self.args.flood;
        let mut elapsed = Duration::ZERO;
        let replies = match items.first() {
            Some(first) => {
                self.progress(
                    first,
                    json!({"status": "updating", "text": "flooding", "value": 0, "max": n}),
                );
                let start = Instant::now();
                let replies = self.conn.flood(first, n);
                elapsed = start.elapsed();
                replies
            }
            None => 0,
        };
        note!("flood replies {replies}");
        note!("flood elapsed_us {}", elapsed.as_micros());
        for item in &items {
            self.progress(item, json!({"status": "succeeded", "text": "done"}));
        }
    }

    /// `bad-requests`: invalid progress requests, each reply logged.
    fn bad_requests(&mut self) {
        let item = self.prepared.first().map_or("a", String::as_str).to_owned();
        let cases = [
            (
                "unknown-item",
                json!({"item": "nope", "status": "updating"}),
            ),
            (
                "value-over-max",
                json!({"item": item, "value": 10, "max": 5}),
            ),
            ("bad-status", json!({"item": item, "status": "bogus"})),
            ("long-text", json!({"item": item, "text": "x".repeat(5000)})),
            ("negative-value", json!({"item": item, "value": -1})),
        ];
        for (label, params) in cases {
            let reply = self.conn.request("progress", params);
            report(label, &reply);
        }
    }

    /// `log`: stderr lines and log entries before the normal work.
    fn log_entries(&mut self) {
        note!("stderr line 1");
        note!("stderr line 2");
        let reply = self.conn.request(
            "logError",
            json!({"level": "information", "text": "hello from the handler"}),
        );
        match reply {
            Ok(res) => {
                let id = res.get("errorId").and_then(Value::as_str).unwrap_or("?");
                note!("assigned {id}");
            }
            Err(e) => note!("assigned error {}", e.code),
        }
        let reply = self.conn.request(
            "logError",
            json!({"level": "warning", "text": "a warning from the handler", "errorId": "w1"}),
        );
        report("logError-w1", &reply);
        let reply = self
            .conn
            .request("deleteLogError", json!({"errorId": "w1"}));
        report("deleteLogError-w1", &reply);
    }

    /// `modeless`: enableModeless on/off and establishConnection in prepareForSync.
    fn modeless(&mut self) {
        match self.conn.request("enableModeless", json!({"enable": true})) {
            Ok(res) => {
                let allowed = res.get("allowed").and_then(Value::as_bool).unwrap_or(false);
                note!("modeless {allowed}");
            }
            Err(e) => note!("modeless error {}", e.code),
        }
        let reply = self
            .conn
            .request("enableModeless", json!({"enable": false}));
        report("enableModeless-off", &reply);
        match self
            .conn
            .request("establishConnection", json!({"connection": null}))
        {
            Ok(_) => note!("connection ok"),
            Err(e) => note!("connection error {}", e.code),
        }
    }
}

/// `silent`: never answer or send anything again; the reader thread still
/// ends the process on EOF or `shutdown` (after `CLOSE_GRACE`).
fn silent() -> ! {
    loop {
        thread::park();
    }
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            note!("syncmgr-test-handler: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let (conn, inbox) = Conn::start();
    Handler {
        args,
        conn,
        inbox,
        deferred: VecDeque::new(),
        prepared: Vec::new(),
        skip_requested: HashSet::new(),
        must_succeed: HashSet::new(),
    }
    .run()
}
