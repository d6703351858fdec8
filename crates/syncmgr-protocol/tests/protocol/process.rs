//! End-to-end tests of `ProcessHandler`: a real child process (a small Python
//! handler, below) driven by the core's session engine with an in-memory
//! journal. Each test names the behaviour it proves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::status_of;
use syncmgr_core::{
    CancelTarget, Handler, HandlerError, HandlerJob, ItemStatus, MemoryJournal, NewLogEntry,
    Selection, Session, SessionConfig, SessionEvent, SessionOutcome, SessionSummary, SyncEvent,
};
use syncmgr_protocol::ProcessHandler;
use tokio::time::timeout;

/// A handler in the protocol's own terms, one behaviour per mode (argv[1]).
/// It asserts on the manager's answers itself; a failed assertion exits it
/// with a traceback, which fails the session.
const HANDLER: &str = r#"
import json, sys

mode = sys.argv[1]
queue = []
skipped = set()
counter = [0]

def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

def read():
    if queue:
        return queue.pop(0)
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    return json.loads(line)

def call(method, params):
    counter[0] += 1
    rid = "h%d" % counter[0]
    send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
    while True:
        line = sys.stdin.readline()
        if not line:
            sys.exit(0)
        m = json.loads(line)
        if "method" not in m and m.get("id") == rid:
            return m
        queue.append(m)

def reply(m, result):
    send({"jsonrpc": "2.0", "id": m["id"], "result": result})

def note(m):
    if m.get("method") == "setItemStatus":
        assert m["params"]["status"] == "skipped", m
        skipped.add(m["params"]["item"])
        return True
    return False

def sync(m):
    if mode == "ok":
        r = call("progress", {"item": "a", "status": "updating", "value": 1, "max": 2, "text": "working"})
        assert r["result"] == {"action": "continue"}, r
        bad = call("progress", {"item": "a", "value": -1})
        r = call("logError", {"level": "warning", "text": "bad value code %d" % bad["error"]["code"],
                              "item": "a", "errorId": "w1", "actionable": True})
        assert r["result"] == {"errorId": "w1"}, r
        over = call("progress", {"item": "b", "value": 5, "max": 2})
        r = call("logError", {"level": "information", "text": "over max code %d" % over["error"]["code"]})
        assert r["result"]["errorId"], r
        call("progress", {"item": "a", "status": "succeeded", "value": 2})
        call("progress", {"item": "b", "status": "succeeded"})
        reply(m, {})
    elif mode == "exit":
        call("progress", {"item": "a", "status": "updating"})
        sys.stderr.write("boom: giving up\n")
        sys.stderr.flush()
        sys.exit(3)
    elif mode == "garbage":
        for line in ["this is not json", '{"jsonrpc":"2.0"}', "[1,2]",
                     '{"jsonrpc":"2.0","method":"hello"}',
                     '{"jsonrpc":"2.0","id":999,"result":{}}', "x" * (2 << 20)]:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        sys.stdout.buffer.write(b"\xff\xfe\n")
        sys.stdout.buffer.flush()
        r = call("frobnicate", {})
        assert r["error"]["code"] == -32601, r
        r = call("progress", {"item": "a", "status": "bogus"})
        assert r["error"]["code"] == -32602, r
        send({"jsonrpc": "1.0", "id": "odd", "method": "progress"})
        while True:
            n = read()
            if "method" not in n and n.get("id") is None:
                continue  # the manager's answers to the unparseable lines
            if n.get("id") == "odd":
                assert n["error"]["code"] == -32600, n
                break
            queue.append(n)
        for item in ("a", "b"):
            r = call("progress", {"item": item, "status": "succeeded"})
            assert r["result"] == {"action": "continue"}, r
        reply(m, {})
    elif mode == "cancel":
        r = call("progress", {"item": "a", "status": "updating", "text": "waiting for a cancel"})
        while "a" not in skipped:
            n = read()
            if not note(n):
                raise AssertionError("unexpected %r" % n)
        call("progress", {"item": "a", "status": "stopped"})
        call("progress", {"item": "b", "status": "succeeded"})
        reply(m, {})

while True:
    m = read()
    if note(m):
        continue
    if "method" not in m:
        # An answer to none of our requests: the manager's `id: null`
        # error for a line it could not parse.
        assert m.get("id") is None and "error" in m, m
        continue
    method = m.get("method")
    if method == "initialize":
        assert m["params"]["protocolVersion"] == 1, m
        reply(m, {"participate": True})
    elif method == "getHandlerInfo":
        reply(m, {"name": "Python handler", "flags": {"hasProperties": True}})
    elif method == "enumItems":
        reply(m, {"items": [{"id": "a", "name": "A", "checked": True},
                            {"id": "b", "name": "B", "checked": True, "flags": {},
                             "lastUpdate": "2024-01-02T03:04:05Z"}],
                  "complete": True})
    elif method == "prepareForSync":
        assert m["params"]["items"] == ["a", "b"], m
        reply(m, {})
    elif method == "synchronize":
        sync(m)
    elif method == "shutdown":
        sys.exit(0)
    else:
        raise AssertionError("unexpected %r" % m)
"#;

const DEADLINE: Duration = Duration::from_secs(20);

fn python(mode: &str) -> ProcessHandler {
    let argv: Vec<String> = ["python3", "-c", HANDLER, mode]
        .into_iter()
        .map(str::to_owned)
        .collect();
    ProcessHandler::spawn(&argv, None, &[]).expect("python3 starts")
}

/// Runs one session with the handler in `mode`; cancels `cancel` once it is
/// seen updating. Returns the summary and the results log.
async fn run(mode: &str, cancel: Option<&str>) -> (SessionSummary, Vec<NewLogEntry>) {
    let journal = Arc::new(MemoryJournal::default());
    let job = HandlerJob {
        name: "py".to_owned(),
        handler: Box::new(python(mode)),
        selection: Selection::Checked(HashMap::new()),
        timeout: Duration::from_secs(10),
    };
    let config = SessionConfig::new(format!("session-{mode}"), SyncEvent::Manual);
    let (session, control, mut events) = Session::new(config, journal.clone(), vec![job]);
    let watch = async move {
        let mut cancelled = false;
        while let Some(event) = events.recv().await {
            match &event {
                SessionEvent::ItemChanged(item)
                    if Some(item.item.as_str()) == cancel
                        && item.status == ItemStatus::Updating
                        && !cancelled =>
                {
                    cancelled = true;
                    assert!(control.cancel(&CancelTarget::Item {
                        handler: "py".to_owned(),
                        item: item.item.clone(),
                    }));
                }
                SessionEvent::Finished(_) => break,
                _ => {}
            }
        }
    };
    let (summary, ()) = timeout(DEADLINE, async { tokio::join!(session.run(), watch) })
        .await
        .expect("the session finishes in time");
    let log = journal.entries().into_iter().map(|(_, e)| e).collect();
    (summary, log)
}

fn has_entry(log: &[NewLogEntry], needle: &str) -> bool {
    log.iter().any(|e| e.text.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_with_progress_refusals_and_log_entries() {
    let (summary, log) = run("ok", None).await;
    assert_eq!(
        summary.outcome,
        SessionOutcome::Succeeded,
        "{summary:?}\n{log:#?}"
    );
    assert_eq!(status_of(&summary, "a"), ItemStatus::Succeeded);
    assert_eq!(status_of(&summary, "b"), ItemStatus::Succeeded);
    // The handler's own entries carry the codes it was refused with.
    let w1 = log
        .iter()
        .find(|e| e.error_id.as_deref() == Some("w1"))
        .expect("the logError entry");
    assert_eq!(w1.text, "bad value code -32602");
    assert!(w1.actionable && w1.item.as_deref() == Some("a"));
    assert!(has_entry(&log, "over max code -32005"), "{log:#?}");
    // Both refusals are logged against the handler by the manager.
    assert!(
        has_entry(&log, "value must be a non-negative integer"),
        "{log:#?}"
    );
    assert!(has_entry(&log, "greater than max"), "{log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_exits_mid_sync_fails_its_items() {
    let (summary, log) = run("exit", None).await;
    assert_eq!(summary.outcome, SessionOutcome::Failed);
    assert_eq!(status_of(&summary, "a"), ItemStatus::Failed);
    assert_eq!(status_of(&summary, "b"), ItemStatus::Failed);
    let exit = log
        .iter()
        .find(|e| e.text.contains("handler process exited"))
        .unwrap_or_else(|| panic!("no exit entry: {log:#?}"));
    assert!(exit.text.contains("exit status 3"), "{}", exit.text);
    assert!(exit.text.contains("boom: giving up"), "{}", exit.text);
    // stderr is kept as information too.
    assert!(
        log.iter()
            .any(|e| e.text == "boom: giving up" && e.level == syncmgr_core::LogLevel::Information)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_lines_are_logged_and_skipped() {
    let (summary, log) = run("garbage", None).await;
    assert_eq!(
        summary.outcome,
        SessionOutcome::Succeeded,
        "{summary:?}\n{log:#?}"
    );
    for needle in [
        "not JSON",
        "a message needs a method or an id",
        "batches are not supported",
        "notification \"hello\"",
        "response to no request of ours (id 999)",
        "longer than 1 MiB",
        "not valid UTF-8",
        "unknown method \"frobnicate\"",
        "invalid params for progress: unknown status \"bogus\"",
        "jsonrpc must be \"2.0\"",
    ] {
        assert!(
            has_entry(&log, needle),
            "no entry with {needle:?}: {log:#?}"
        );
    }
    // The excerpt of a bad line is bounded.
    assert!(log.iter().all(|e| e.text.len() < 2000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_the_handler_as_set_item_status() {
    let (summary, log) = run("cancel", Some("a")).await;
    assert_eq!(status_of(&summary, "a"), ItemStatus::Stopped, "{log:#?}");
    assert_eq!(status_of(&summary, "b"), ItemStatus::Succeeded);
    assert_eq!(summary.outcome, SessionOutcome::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_fails_calls_at_once_and_dropped_calls_are_safe() {
    // A shell whose background child keeps the pipes open: only the group
    // kill ends both.
    let argv: Vec<String> = ["sh", "-c", "sleep 30 & wait"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut handler = ProcessHandler::spawn(&argv, None, &[]).unwrap();
    let params = syncmgr_core::InitializeParams {
        event: SyncEvent::Manual,
        may_bother_user: false,
        settings_only: true,
        cookie: None,
    };
    // The engine gives up on a silent call by dropping its future.
    assert!(
        timeout(Duration::from_millis(100), handler.initialize(&params))
            .await
            .is_err()
    );
    handler.terminate();
    let err = timeout(Duration::from_secs(5), handler.handler_info())
        .await
        .expect("a call to a killed handler fails at once")
        .unwrap_err();
    assert!(
        matches!(&err, HandlerError::Exited(why) if why.contains("SIGKILL")),
        "{err}"
    );

    let missing = ProcessHandler::spawn(&["/nonexistent/handler".to_owned()], None, &[]);
    assert!(matches!(missing, Err(HandlerError::Spawn(_))));
    assert!(matches!(
        ProcessHandler::spawn(&[], None, &[]),
        Err(HandlerError::Spawn(_))
    ));
}
