//! Signals to the manager: Ctrl-C is a clean cancel of everything (exit
//! 130); SIGKILL leaves a valid home behind whose next command records the
//! session as interrupted.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use serde_json::Value;

use crate::util::{PATIENCE, TestHome, process_running, wait_until};

const SLOW: &[&str] = &["--steps", "50", "--step-ms", "40"];

#[test]
fn ctrl_c_cancels_everything_and_exits_130() {
    let home = TestHome::new();
    home.register("one", SLOW);
    home.register("two", SLOW);
    let mut bg = home.spawn_sync(&["--grace", "2"]);
    bg.wait_for_items(&[("one", "a"), ("two", "a")], "updating");
    let handlers = bg.handler_pids();
    assert_eq!(handlers.len(), 2, "two handler processes: {handlers:?}");

    bg.signal(syncmgr_sys::Signal::Interrupt);
    let run = bg.finish(PATIENCE);

    run.assert_code(130)
        .assert_stderr_contains("interrupted: cancelling everything");
    assert_eq!(run.outcome(), "cancelled");
    for (item, status) in run.statuses() {
        assert!(
            status == "stopped" || status == "skipped",
            "{item} ended {status}"
        );
    }
    assert_eq!(run.statuses()["one/a"], "stopped");
    assert_eq!(run.statuses()["two/a"], "stopped");
    // The handlers were shut down, not left behind.
    assert!(
        wait_until(Duration::from_secs(5), || handlers
            .iter()
            .all(|&pid| !process_running(pid))),
        "handler processes still running: {handlers:?}"
    );
    assert!(home.sockets().is_empty(), "{:?}", home.sockets());

    // A clean cancel: the session is recorded cancelled, not interrupted.
    let history = home.history();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["id"], run.session().as_str());
    assert_eq!(history[0]["outcome"], "cancelled");
    assert!(history[0]["finished"].is_string(), "{}", history[0]);
}

#[test]
fn sigkill_leaves_an_interrupted_session_and_a_usable_home() {
    // Inline: the process killed is the one that runs the session (the
    // daemon's case is `daemon::a_killed_daemon_leaves_an_interrupted_session`).
    let home = TestHome::inline();
    home.register("slow", SLOW);
    let mut bg = home.spawn_sync(&[]);
    let started = bg.wait_for_event(PATIENCE, "sessionStarted", |e| {
        e["event"] == "sessionStarted"
    });
    let session = started["session"].as_str().unwrap().to_owned();
    // Until a is running and at least one log entry was reported: a log
    // event is sent only once its entry is committed.
    let (mut running, mut logged) = (false, false);
    bg.wait_for_event(PATIENCE, "a updating and a log entry", |e| {
        running |= e["event"] == "item" && e["item"] == "a" && e["status"] == "updating";
        logged |= e["event"] == "log";
        running && logged
    });
    let reported: Vec<Value> = bg
        .events_so_far()
        .into_iter()
        .filter(|e| e["event"] == "log")
        .map(|e| e["id"].clone())
        .collect();
    let handlers = bg.handler_pids();
    assert_eq!(handlers.len(), 1, "one handler process: {handlers:?}");
    assert_eq!(home.sockets().len(), 1);

    bg.signal(syncmgr_sys::Signal::Kill);
    let killed = bg.finish_raw(PATIENCE);
    assert_eq!(
        killed.status.signal(),
        Some(9), // SIGKILL
        "{}",
        killed.report()
    );

    // The orphaned handler sees EOF on stdin and exits on its own.
    assert!(
        wait_until(Duration::from_secs(5), || !process_running(handlers[0])),
        "the orphaned handler {} is still running",
        handlers[0]
    );

    // The next command finds the session interrupted.
    let history = home.history();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["id"], session.as_str());
    assert_eq!(history[0]["outcome"], "interrupted");

    // The database is valid: the log reads, and every entry the killed
    // session reported is there.
    let log = home.log(&[]);
    for id in &reported {
        assert!(
            log.iter()
                .any(|e| e["id"] == *id && e["session"] == session.as_str()),
            "log entry {id} of the killed session is lost: {log:?}"
        );
    }

    // The stale socket does not fool `cancel`, which removes it.
    assert_eq!(
        home.sockets().len(),
        1,
        "the killed manager's socket is left"
    );
    home.run(&["cancel"])
        .assert_code(1)
        .assert_stderr_contains("no running session");
    assert!(home.sockets().is_empty(), "{:?}", home.sockets());

    // And the home still runs sessions.
    home.register("quick", &[]);
    let run = home.sync(&["quick"]);
    run.assert_code(0);
    assert_eq!(run.outcome(), "succeeded");
    let history = home.history();
    assert_eq!(history.len(), 2);
    assert!(
        history
            .iter()
            .any(|s| s["id"] == session.as_str() && s["outcome"] == "interrupted"),
        "the interrupted session stays interrupted: {history:?}"
    );
}
