//! Robustness of the manager side against hostile handlers, proven with real
//! child processes driven by the core's session engine:
//!
//! - a property test: arbitrary handler→manager line sequences (valid and
//!   invalid requests, notifications, stray and duplicate responses, garbage,
//!   bad UTF-8, oversized lines) interleaved with the lifecycle answers, each
//!   replayed by a small Python handler. Whatever it sends, the session ends
//!   in time, with exactly one `Finished` event, last, and every item it
//!   touched terminal. (The decoder alone is fuzzed by `fuzz/` and has its
//!   own proptests in `src/wire.rs`.)
//! - floods: a million pipelined `progress` requests, one 10 MB line, and a
//!   handler that never reads its stdin. The manager stays responsive (a
//!   cancel is honoured within the grace period) and its memory bounded.
//!
//! The tests of this binary run one at a time (`SERIAL`): the memory checks
//! read this process's resident set size, which a concurrent test would blur.
//! The floods print what they measured (see it with `--nocapture`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use crate::status_of;
use proptest::prelude::*;
use syncmgr_core::{
    CancelTarget, HandlerJob, ItemStatus, MemoryJournal, NewLogEntry, Selection, Session,
    SessionConfig, SessionEvent, SessionOutcome, SessionSummary, SyncEvent,
};
use syncmgr_protocol::ProcessHandler;

/// How long any session of this file may take, on a loaded two-core machine.
const DEADLINE: Duration = Duration::from_secs(30);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One thread, as the command line runs the manager: every allocation of
/// the session happens on the calling thread, where [`peak_bytes`] counts it.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Runs `f` and returns its result with the most memory it held at once, in
/// MiB: a counting allocator's peak of the bytes allocated and not yet freed
/// on this thread (exact, and blind to the rest of the test process).
fn peak_mib<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let mut out = None;
    let info = allocation_counter::measure(|| out = Some(f()));
    (
        out.expect("the measured code ran"),
        info.bytes_max as f64 / (1024.0 * 1024.0),
    )
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------
// Running a session and checking the engine's invariants

/// What a session left behind.
#[derive(Debug)]
struct Run {
    summary: SessionSummary,
    log: Vec<NewLogEntry>,
    /// From the cancel to the `Finished` event, when a cancel was sent.
    /// The cancel asked for was sent.
    cancelled: bool,
}

/// When to cancel an item: once it is seen `updating` with at least this
/// `value` (coalesced events may skip any particular one).
#[derive(Debug, Clone)]
struct CancelAt {
    item: &'static str,
    min_value: u64,
}

/// Runs one session of `handler` and checks the invariants that must hold
/// whatever the handler did: the session ends before [`DEADLINE`]; exactly
/// one `Finished`, and it is the last event; every item the session reported
/// on is in the summary, terminal, and its last event is terminal too.
fn run_session(
    argv: &[String],
    silence: Duration,
    grace: Duration,
    cancel: Option<CancelAt>,
) -> Run {
    runtime().block_on(async move {
        let handler = ProcessHandler::spawn(argv, None, &[]).expect("the handler starts");
        let journal = Arc::new(MemoryJournal::default());
        let job = HandlerJob {
            name: "h".to_owned(),
            handler: Box::new(handler),
            selection: Selection::Checked(HashMap::new()),
            timeout: silence,
        };
        let mut config = SessionConfig::new("robustness", SyncEvent::Manual);
        config.grace = grace;
        let (session, control, mut events) = Session::new(config, journal.clone(), vec![job]);
        let watch = async move {
            let mut seen = Vec::new();
            let mut cancelled = false;
            while let Some(event) = events.recv().await {
                if let (SessionEvent::ItemChanged(item), Some(at), None) =
                    (&event, &cancel, cancelled.then_some(()))
                    && item.item == at.item
                    && item.status == ItemStatus::Updating
                    && item.value.unwrap_or(0) >= at.min_value
                {
                    assert!(control.cancel(&CancelTarget::Item {
                        handler: "h".to_owned(),
                        item: item.item.clone(),
                    }));
                    cancelled = true;
                }
                let last = matches!(event, SessionEvent::Finished(_));
                seen.push(event);
                if last {
                    break;
                }
            }
            // Nothing follows `Finished`: whatever is still queued is a bug.
            if let Ok(extra) = events.try_recv() {
                seen.push(extra);
            }
            (seen, cancelled)
        };
        let (summary, (seen, cancelled)) =
            tokio::time::timeout(DEADLINE, async { tokio::join!(session.run(), watch) })
                .await
                .expect("the session finishes in time");
        check_invariants(&summary, &seen);
        let log = journal.entries().into_iter().map(|(_, e)| e).collect();
        Run {
            summary,
            log,
            cancelled,
        }
    })
}

fn check_invariants(summary: &SessionSummary, events: &[SessionEvent]) {
    let finished: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, SessionEvent::Finished(_)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        finished,
        [events.len() - 1],
        "one Finished, last: {events:#?}"
    );
    match events.last() {
        Some(SessionEvent::Finished(s)) => assert_eq!(s, summary),
        other => panic!("last event {other:?}"),
    }
    for r in &summary.items {
        assert!(r.status.is_terminal(), "{r:?}");
    }
    let mut last: HashMap<&str, ItemStatus> = HashMap::new();
    for e in events {
        if let SessionEvent::ItemChanged(item) = e {
            last.insert(item.item.as_str(), item.status);
        }
    }
    for (item, status) in last {
        let result = summary
            .items
            .iter()
            .find(|r| r.item == item)
            .unwrap_or_else(|| panic!("item {item} has events but no result: {summary:?}"));
        assert_eq!(status, result.status, "last event of {item} is its result");
    }
}

// ---------------------------------------------------------------------------
// The property test: a replaying handler

/// Replays a script (file argv[1], one step a line):
///
/// - `E <method>`: wait for the manager's request `<method>` (skipping
///   notifications and responses); a `shutdown` instead, or EOF, ends the
///   handler at once;
/// - `W <hex>`: write these bytes and a newline;
/// - `R <kind> <hex result>`: answer the awaited request: `ok` (the result),
///   `err` (an error response), `dup` (the result twice), `wrongid` (to an id
///   never used), `junk` (the result is `"junk"`);
/// - `X <code>`: exit now; `C`: close stdout and wait for EOF on stdin.
///
/// Then it waits for `shutdown` or EOF. A thread drains stdin all along, so
/// the manager is never blocked by this handler's not reading.
const REPLAYER: &str = r#"
import json, os, queue, sys, threading
inbox = queue.Queue()
def drain():
    for line in sys.stdin:
        inbox.put(json.loads(line))
    inbox.put(None)
threading.Thread(target=drain, daemon=True).start()
out = sys.stdout.buffer
def write(b):
    out.write(b + b"\n")
    out.flush()
def send(obj):
    write(json.dumps(obj).encode())
def expect(method):
    while True:
        m = inbox.get()
        if m is None or m.get("method") == "shutdown":
            os._exit(0)
        if m.get("method") == method and "id" in m:
            return m["id"]
rid = None
for step in open(sys.argv[1]).read().splitlines():
    op, _, rest = step.partition(" ")
    if op == "E":
        rid = expect(rest)
    elif op == "W":
        write(bytes.fromhex(rest))
    elif op == "R":
        kind, _, res = rest.partition(" ")
        result = json.loads(bytes.fromhex(res))
        if kind == "ok":
            send({"jsonrpc": "2.0", "id": rid, "result": result})
        elif kind == "err":
            send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32000, "message": "no"}})
        elif kind == "dup":
            send({"jsonrpc": "2.0", "id": rid, "result": result})
            send({"jsonrpc": "2.0", "id": rid, "result": result})
        elif kind == "wrongid":
            send({"jsonrpc": "2.0", "id": 1000000 + (rid if isinstance(rid, int) else 0), "result": result})
        elif kind == "junk":
            send({"jsonrpc": "2.0", "id": rid, "result": "junk"})
    elif op == "X":
        os._exit(int(rest))
    elif op == "C":
        sys.stdout.close()
        os.close(1)
        while inbox.get() is not None:
            pass
        os._exit(0)
expect("shutdown")
"#;

/// The lifecycle, in order, with the right answer to each call.
const LIFECYCLE: [(&str, &str); 5] = [
    ("initialize", r#"{"participate":true}"#),
    ("getHandlerInfo", r#"{"name":"Replayer"}"#),
    (
        "enumItems",
        r#"{"items":[{"id":"a","name":"A","checked":true},{"id":"b","name":"B","checked":true},{"id":"c","name":"C","checked":true}],"complete":true}"#,
    ),
    ("prepareForSync", "{}"),
    ("synchronize", "{}"),
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How the handler answers one lifecycle call.
#[derive(Debug, Clone)]
enum Answer {
    Reply(&'static str),
    Exit(u8),
    CloseStdout,
}

/// One line the handler writes, as bytes (not always UTF-8, never with a
/// newline).
fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z ]{0,12}",
        1 => any::<String>(),
        1 => (0usize..6000).prop_map(|n| "t".repeat(n)),
    ]
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u64..12).prop_map(|n| n.to_string()),
        1 => "[a-z0-9]{0,4}".prop_map(|s| format!("{s:?}")),
        1 => Just("null".to_owned()),
        1 => Just("-1.5e3".to_owned()),
        1 => Just("{}".to_owned()),
        1 => Just("[1]".to_owned()),
        1 => Just("true".to_owned()),
    ]
}

fn status() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just("updating".into()),
        Just("pending".into()),
        Just("succeeded".into()),
        Just("failed".into()),
        Just("stopped".into()),
        Just("skipped".into()),
        Just("paused".into()),
        Just("bogus".into()),
        Just(serde_json::Value::Null),
        Just(7.into()),
    ]
}

fn item() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "c"]).prop_map(Into::into),
        1 => Just("zz".into()),
        1 => Just(serde_json::Value::Null),
        1 => Just(5.into()),
    ]
}

fn number() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        4 => (0u64..10).prop_map(Into::into),
        1 => Just((-1).into()),
        1 => Just(1.5.into()),
        1 => Just(u64::MAX.into()),
        1 => Just("3".into()),
    ]
}

/// `params` for the handler's methods: mostly plausible, often wrong.
fn params() -> impl Strategy<Value = (&'static str, serde_json::Value)> {
    use serde_json::json;
    let opt = |v: serde_json::Value, keep: bool| if keep { v } else { serde_json::Value::Null };
    prop_oneof![
        6 => (item(), status(), number(), number(), json_text(), any::<[bool; 4]>()).prop_map(
            move |(item, status, value, max, text, keep)| {
                let mut p = json!({"item": item});
                for (k, v, on) in [("status", status, keep[0]), ("value", value, keep[1]),
                                   ("max", max, keep[2]), ("text", text.into(), keep[3])] {
                    if on {
                        p[k] = v;
                    }
                }
                ("progress", p)
            }
        ),
        2 => (prop::sample::select(vec!["information", "warning", "error", "fatal"]),
              json_text(), any::<bool>(), item(), any::<bool>()).prop_map(
            move |(level, text, with_id, item, actionable)| {
                ("logError", json!({"level": level, "text": text,
                    "errorId": opt("e1".into(), with_id), "item": item, "actionable": actionable}))
            }
        ),
        1 => prop::option::of("e[0-9]").prop_map(|id| ("deleteLogError", json!({"errorId": id}))),
        1 => prop_oneof![Just(json!({"enable": true})), Just(json!({"enable": false})),
                         Just(json!({"enable": "yes"})), Just(json!({}))]
            .prop_map(|p| ("enableModeless", p)),
        1 => prop_oneof![Just(json!({"connection": null})), Just(json!({"connection": "wifi"})),
                         Just(json!({"connection": 1}))]
            .prop_map(|p| ("establishConnection", p)),
        1 => Just(("frobnicate", json!({}))),
    ]
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    use serde_json::json;
    prop_oneof![
        // Requests, with ids that repeat and collide with ours.
        8 => (id(), params()).prop_map(|(id, (method, params))| {
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
                .into_bytes()
        }),
        // Notifications.
        2 => params().prop_map(|(method, params)| {
            json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string().into_bytes()
        }),
        // Responses to ids the manager may or may not have used.
        2 => (id(), any::<bool>()).prop_map(|(id, ok)| {
            let body = if ok { r#""result":{}"# } else { r#""error":{"code":1,"message":"x"}"# };
            format!(r#"{{"jsonrpc":"2.0","id":{id},{body}}}"#).into_bytes()
        }),
        // Garbage, including bad UTF-8 and JSON that is not a message.
        2 => prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..64),
        1 => prop::sample::select(vec![
            "", "{", "[]", "[1,2]", "null", "{}", r#"{"jsonrpc":"1.0","id":1,"method":"progress"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"progress","params":3}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
        ]).prop_map(|s| s.as_bytes().to_vec()),
        // Longer than the 1 MiB line limit.
        1 => (1usize << 20..3 << 20).prop_map(|n| vec![b'x'; n]),
    ]
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        30 => Just(Answer::Reply("ok")),
        1 => Just(Answer::Reply("err")),
        1 => Just(Answer::Reply("dup")),
        1 => Just(Answer::Reply("junk")),
        // Never answers: the silence timeout must end it.
        1 => Just(Answer::Reply("wrongid")),
        1 => (0u8..4).prop_map(Answer::Exit),
        1 => Just(Answer::CloseStdout),
    ]
}

/// One lifecycle call: the lines written before answering it, and the answer.
type Phase = (Vec<Vec<u8>>, Answer);

fn script_strategy() -> impl Strategy<Value = (Vec<Phase>, Vec<(usize, usize)>)> {
    let phase = || (prop::collection::vec(line(), 0..6), answer());
    (
        (phase(), phase(), phase(), phase(), phase())
            .prop_map(|(a, b, c, d, e)| vec![a, b, c, d, e]),
        // Terminal reports the handler sends during synchronize, after its
        // junk: (item 0..3, status index).
        prop::collection::vec((0usize..3, 0usize..4), 0..5),
    )
}

fn render(phases: &[Phase], finals: &[(usize, usize)]) -> String {
    let mut script = String::new();
    for (k, ((method, ok), (lines, answer))) in LIFECYCLE.iter().zip(phases).enumerate() {
        script += &format!("E {method}\n");
        for l in lines {
            script += &format!("W {}\n", hex(l));
        }
        if k == LIFECYCLE.len() - 1 {
            for (n, &(item, status)) in finals.iter().enumerate() {
                let item = ["a", "b", "c"][item];
                let status = ["succeeded", "failed", "stopped", "skipped"][status];
                let line = format!(
                    r#"{{"jsonrpc":"2.0","id":"final{n}","method":"progress","params":{{"item":"{item}","status":"{status}"}}}}"#
                );
                script += &format!("W {}\n", hex(line.as_bytes()));
            }
        }
        match answer {
            Answer::Reply(kind) => script += &format!("R {kind} {}\n", hex(ok.as_bytes())),
            Answer::Exit(code) => script += &format!("X {code}\n"),
            Answer::CloseStdout => script += "C\n",
        }
    }
    script
}

/// Silence timeout and grace period of the property test's sessions: short,
/// since a case whose handler never answers waits them out.
const FUZZ_SILENCE: Duration = Duration::from_secs(1);
const FUZZ_GRACE: Duration = Duration::from_millis(250);

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_sequence_of_handler_lines_ends_the_session_cleanly(
        (phases, finals) in script_strategy()
    ) {
        let _serial = serial();
        let dir = std::env::temp_dir();
        let path = dir.join(format!(
            "syncmgr-replay-{}-{}.txt",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, render(&phases, &finals)).expect("script written");
        let replayer = argv(&["python3", "-c", REPLAYER, path.to_str().expect("utf-8 path")]);
        let run = run_session(&replayer, FUZZ_SILENCE, FUZZ_GRACE, None);
        let _ = std::fs::remove_file(&path);
        // Junk is never fatal by itself: a handler that answered the whole
        // lifecycle right and reported each item `succeeded` first succeeds,
        // whatever else it wrote (unless its junk answered our calls for it).
        let answered = phases
            .iter()
            .all(|(lines, a)| matches!(a, Answer::Reply("ok")) && lines.iter().all(|l| !hijacks(l)));
        let first = |i: usize| finals.iter().find(|&&(item, _)| item == i).map(|&(_, s)| s);
        if answered && (0..3).all(|i| first(i) == Some(0)) {
            prop_assert_eq!(run.summary.outcome, SessionOutcome::Succeeded, "{:#?}", run.log);
        }
        // Every problem is logged with a bounded text.
        prop_assert!(run.log.iter().all(|e| e.text.len() < 8192));
    }
}

/// Whether a junk line may change the session's course: a response that
/// may resolve one of our calls, or a request that may report an item
/// terminal (or refused) before the handler's own final reports.
fn hijacks(line: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
        return false;
    };
    v.get("result").is_some()
        || v.get("error").is_some()
        || v.get("method").and_then(|m| m.as_str()) == Some("progress")
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

// ---------------------------------------------------------------------------
// Floods

/// The scripted handler, built (once per test process) into the target
/// directory and profile of this test binary.
fn test_handler() -> &'static Path {
    static HANDLER: OnceLock<PathBuf> = OnceLock::new();
    HANDLER
        .get_or_init(|| syncmgr_testkit::build_test_handler(&syncmgr_testkit::test_profile_dir()))
}

const FLOOD_GRACE: Duration = Duration::from_secs(2);

/// How many progress requests the flood sends.
const FLOOD: u64 = 1_000_000;

#[test]
fn a_million_pipelined_progress_updates_stay_bounded_and_cancellable() {
    let _serial = serial();
    let path = test_handler().to_str().expect("utf-8 path").to_owned();
    let flood = FLOOD.to_string();
    let (run, growth) = peak_mib(|| {
        run_session(
            &argv(&[
                &path,
                "--scenario",
                "flood",
                "--flood",
                &flood,
                "--items",
                "a,b",
            ]),
            Duration::from_secs(10),
            FLOOD_GRACE,
            Some(CancelAt {
                item: "a",
                min_value: FLOOD / 10,
            }),
        )
    });
    assert!(run.cancelled, "the item was cancelled mid-flood");
    // The cancel is honoured: the item never succeeds after it.
    assert_eq!(
        status_of(&run.summary, "a"),
        ItemStatus::Stopped,
        "{:#?}",
        run.log
    );
    assert_ne!(run.summary.outcome, SessionOutcome::Succeeded);
    // A million requests are ~80 MB on the wire and their replies ~40 MB:
    // keeping either (or one allocation per message) would grow the manager
    // by far more than 32 MiB. The bounded queues hold a few hundred lines.
    assert!(growth < 16.0, "the manager grew by {growth:.1} MiB");
}

#[test]
fn a_10_mb_line_is_logged_and_never_held_whole() {
    if !syncmgr_testkit::require_tool("python3") {
        return;
    }
    let _serial = serial();
    // Writes one 10 MB line before answering initialize, then behaves.
    const BIG: &str = r#"
import json, sys
def send(o):
    sys.stdout.write(json.dumps(o) + "\n"); sys.stdout.flush()
def reply(m, r):
    send({"jsonrpc": "2.0", "id": m["id"], "result": r})
for line in sys.stdin:
    m = json.loads(line)
    method = m.get("method")
    if method == "initialize":
        sys.stdout.write('{"jsonrpc":"2.0","method":"progress","params":{"text":"' + "x" * (10 << 20) + '"}}\n')
        reply(m, {"participate": True})
    elif method == "getHandlerInfo":
        reply(m, {"name": "Big"})
    elif method == "enumItems":
        reply(m, {"items": [{"id": "a", "name": "A", "checked": True}], "complete": True})
    elif method == "prepareForSync":
        reply(m, {})
    elif method == "synchronize":
        send({"jsonrpc": "2.0", "id": "p", "method": "progress", "params": {"item": "a", "status": "succeeded"}})
        reply(m, {})
    elif method == "shutdown":
        break
"#;
    let (run, growth) = peak_mib(|| {
        run_session(
            &argv(&["python3", "-c", BIG]),
            Duration::from_secs(10),
            FLOOD_GRACE,
            None,
        )
    });
    assert_eq!(
        run.summary.outcome,
        SessionOutcome::Succeeded,
        "{:#?}",
        run.log
    );
    assert!(
        run.log.iter().any(|e| e.text.contains("longer than 1 MiB")),
        "{:#?}",
        run.log
    );
    // The line is 10 MiB. Held whole even once, the growth would be at least
    // that; the decoder keeps at most its 1 MiB limit (plus the read buffer's
    // doubling) and discards the rest as it arrives.
    assert!(growth < 4.0, "the manager grew by {growth:.1} MiB");
}

#[test]
fn a_handler_that_never_reads_stdin_cannot_wedge_the_manager() {
    if !syncmgr_testkit::require_tool("python3") {
        return;
    }
    let _serial = serial();
    // Answers the lifecycle, then during synchronize sends progress requests
    // forever and never reads again: every reply the manager writes piles up
    // in the pipe until it is full and the manager's writes block.
    const DEAF: &str = r#"
import json, sys
def send(o):
    sys.stdout.write(json.dumps(o) + "\n"); sys.stdout.flush()
def reply(m, r):
    send({"jsonrpc": "2.0", "id": m["id"], "result": r})
for line in sys.stdin:
    m = json.loads(line)
    method = m.get("method")
    if method == "initialize":
        reply(m, {"participate": True})
    elif method == "getHandlerInfo":
        reply(m, {"name": "Deaf"})
    elif method == "enumItems":
        reply(m, {"items": [{"id": "a", "name": "A", "checked": True}], "complete": True})
    elif method == "prepareForSync":
        reply(m, {})
    elif method == "synchronize":
        send({"jsonrpc": "2.0", "id": 0, "method": "progress",
              "params": {"item": "a", "status": "updating", "value": 1, "max": 100}})
        pad = "p" * 4000
        n = 0
        while True:
            n += 1
            sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": n, "method": "progress",
                "params": {"item": "a", "value": 1 + n % 99, "text": pad[:n % 4000]}}) + "\n")
"#;
    let (run, growth) = peak_mib(|| {
        run_session(
            &argv(&["python3", "-c", DEAF]),
            Duration::from_secs(10),
            FLOOD_GRACE,
            Some(CancelAt {
                item: "a",
                min_value: 2,
            }),
        )
    });
    // Seen failing once under CI's load (the watcher never saw the item
    // past value 2 before the session ended): say what happened instead.
    assert!(
        run.cancelled,
        "the item was never seen past value 2, so never cancelled: {:#?}\n{:#?}",
        run.summary, run.log
    );
    assert_eq!(
        status_of(&run.summary, "a"),
        ItemStatus::Stopped,
        "{:#?}",
        run.log
    );
    // The handler writes without end; the manager's stdin queue and pipe
    // buffers are fixed-size, so what it holds does not depend on how long
    // the handler keeps writing.
    assert!(growth < 8.0, "the manager grew by {growth:.1} MiB");
}
