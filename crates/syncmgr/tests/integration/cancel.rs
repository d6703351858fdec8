//! `syncmgr cancel` from another process (the Stop/Skip buttons): it reaches
//! the running session through its control socket.
//!
//! The slow handlers take 50 steps of 40 ms per item (2 s), so a cancel sent
//! once an item is seen `updating` lands well before the item could end.

use std::time::Duration;

use crate::util::{PATIENCE, TestHome, process_running, wait_until};

const SLOW: &[&str] = &["--steps", "50", "--step-ms", "40"];

#[test]
fn cancel_one_item_stops_only_that_item() {
    let home = TestHome::new();
    home.register("slow", SLOW);
    let mut bg = home.spawn_sync(&[]);
    bg.wait_for_item("slow", "a", "updating");
    assert_eq!(home.sockets().len(), 1, "the running session listens");
    // Another command meanwhile sees the session running, not interrupted.
    let history = home.history();
    assert_eq!(history.len(), 1);
    assert_eq!(
        history[0]["outcome"],
        serde_json::Value::Null,
        "{}",
        history[0]
    );
    assert_eq!(
        history[0]["finished"],
        serde_json::Value::Null,
        "{}",
        history[0]
    );

    home.ok(&["cancel", "slow/a"])
        .assert_stdout_contains("cancel sent to 1 running session");

    let run = bg.finish(PATIENCE);
    // A stopped item is not a success.
    run.assert_code(1);
    assert_eq!(run.statuses()["slow/a"], "stopped");
    assert_eq!(run.statuses()["slow/b"], "succeeded");
    assert_eq!(run.counts(), [1, 0, 0, 1]);
    // The engine's rule: failed if any item failed, else cancelled if any
    // item stopped (or the user cancelled).
    assert_eq!(run.outcome(), "cancelled");
    // The handler was told (setItemStatus and/or the progress reply), and
    // stopped a itself: no "did not confirm" entry.
    assert!(
        !run.logs_matching("slow", "information", "setItemStatus a skipped")
            .is_empty()
            || !run
                .logs_matching("slow", "information", "cancelItem for a")
                .is_empty(),
        "the handler never heard of the cancel"
    );
    run.assert_no_log("slow", "did not confirm");
    assert!(home.sockets().is_empty(), "{:?}", home.sockets());

    let history = home.history();
    assert_eq!(history[0]["outcome"], "cancelled");
    assert_eq!(history[0]["counts"]["stopped"], 1);
    assert_eq!(history[0]["counts"]["succeeded"], 1);
}

#[test]
fn cancel_everything_stops_or_skips_every_unfinished_item() {
    let home = TestHome::new();
    let items = ["--items", "a,b,c"];
    home.register("one", &[SLOW, &items].concat());
    home.register("two", &[SLOW, &items].concat());
    let mut bg = home.spawn_sync(&[]);
    bg.wait_for_items(&[("one", "a"), ("two", "a")], "updating");

    home.ok(&["cancel"])
        .assert_stdout_contains("cancel sent to 1 running session");

    let run = bg.finish(PATIENCE);
    run.assert_code(1);
    assert_eq!(run.outcome(), "cancelled");
    let statuses = run.statuses();
    assert_eq!(statuses.len(), 6, "{statuses:?}");
    for (item, status) in &statuses {
        assert!(
            status == "stopped" || status == "skipped",
            "{item} ended {status}"
        );
    }
    // The running items stopped; the ones not started were skipped.
    for handler in ["one", "two"] {
        assert_eq!(statuses[&format!("{handler}/a")], "stopped");
        assert_eq!(statuses[&format!("{handler}/c")], "skipped");
    }
    let [succeeded, failed, skipped, stopped] = run.counts();
    assert_eq!((succeeded, failed), (0, 0));
    assert_eq!(skipped + stopped, 6);
}

#[test]
fn cancel_a_handler_leaves_the_others_running() {
    let home = TestHome::new();
    home.register("slow", SLOW);
    home.register("quick", &["--steps", "5", "--step-ms", "40"]);
    let mut bg = home.spawn_sync(&[]);
    bg.wait_for_item("slow", "a", "updating");

    // A handler that is not registered is bad input (exit 2); one that is
    // but does not run here: nothing is cancelled, exit 1.
    home.run(&["cancel", "nosuch"])
        .assert_code(2)
        .assert_stderr_contains("unknown handler \"nosuch\"");
    home.register("resting", &[]);
    home.run(&["cancel", "resting"])
        .assert_code(1)
        .assert_stderr_contains("no running session has resting");
    // An item the handler never listed is bad input too (issue 8, point 9).
    home.run(&["cancel", "slow/nope"])
        .assert_code(2)
        .assert_stderr_contains("no such item: slow/nope");

    home.ok(&["cancel", "slow"]);

    let run = bg.finish(PATIENCE);
    run.assert_code(1);
    assert_eq!(run.outcome(), "cancelled");
    let statuses = run.statuses();
    assert_eq!(statuses["slow/a"], "stopped");
    assert_eq!(statuses["slow/b"], "skipped");
    assert_eq!(statuses["quick/a"], "succeeded");
    assert_eq!(statuses["quick/b"], "succeeded");
}

#[test]
fn cancel_with_no_running_session_fails_clearly() {
    let home = TestHome::new();
    home.register("idle", &[]);
    home.run(&["cancel"])
        .assert_code(1)
        .assert_stderr_contains("no running session");
    home.run(&["cancel", "idle/a"])
        .assert_code(1)
        .assert_stderr_contains("no running session");
}

#[test]
fn a_handler_that_ignores_the_cancel_is_ended_after_the_grace_period() {
    let home = TestHome::new();
    // 4 s per item if left alone.
    home.register(
        "stubborn",
        &[
            "--scenario",
            "ignore-cancel",
            "--steps",
            "100",
            "--step-ms",
            "40",
        ],
    );
    let mut bg = home.spawn_sync(&["--grace", "0.5"]);
    bg.wait_for_item("stubborn", "a", "updating");
    let handlers = bg.handler_pids();
    assert_eq!(handlers.len(), 1, "one handler process: {handlers:?}");

    home.ok(&["cancel"]);
    let run = bg.finish(PATIENCE);

    run.assert_code(1);
    // Ended by the manager, not by finishing its 100 steps.
    assert!(
        wait_until(Duration::from_secs(5), || handlers
            .iter()
            .all(|&pid| !process_running(pid))),
        "the handler that ignored the cancel is still running: {handlers:?}"
    );
    assert_eq!(run.statuses()["stubborn/a"], "stopped");
    assert_eq!(run.statuses()["stubborn/b"], "stopped");
    assert_eq!(run.outcome(), "cancelled");
    run.assert_log("stubborn", "information", "ignoring")
        .assert_log("stubborn", "error", "did not honour a cancel within 500ms")
        .assert_log("stubborn", "warning", "did not confirm the cancel");
    assert!(
        !process_running(handlers[0]),
        "the handler process {} is still running",
        handlers[0]
    );
}

#[test]
fn cancel_reaches_every_running_session_of_the_home() {
    let home = TestHome::new();
    home.register("one", SLOW);
    home.register("two", SLOW);
    let mut first = home.spawn_sync(&["one"]);
    let mut second = home.spawn_sync(&["two"]);
    first.wait_for_item("one", "a", "updating");
    second.wait_for_item("two", "a", "updating");
    assert_eq!(home.sockets().len(), 2);

    home.ok(&["cancel"])
        .assert_stdout_contains("cancel sent to 2 running sessions");

    for (run, handler) in [
        (first.finish(PATIENCE), "one"),
        (second.finish(PATIENCE), "two"),
    ] {
        run.assert_code(1);
        assert_eq!(run.outcome(), "cancelled");
        assert_eq!(run.statuses()[&format!("{handler}/a")], "stopped");
        assert_eq!(run.statuses()[&format!("{handler}/b")], "skipped");
    }
    let history = home.history();
    assert_eq!(history.len(), 2);
    assert!(
        history.iter().all(|s| s["outcome"] == "cancelled"),
        "{history:?}"
    );
}

#[test]
fn an_item_cancelled_before_its_handler_starts_is_skipped_unprepared() {
    let home = TestHome::new();
    // Answers initialize only after 1 s; then one step of 1 s per item.
    home.register(
        "late",
        &[
            "--scenario",
            "slow-start",
            "--step-ms",
            "1000",
            "--steps",
            "1",
        ],
    );
    let mut bg = home.spawn_sync(&[]);
    bg.wait_for_event(PATIENCE, "sessionStarted", |e| {
        e["event"] == "sessionStarted"
    });
    // The socket is there from the start of the session.
    assert!(crate::util::wait_until(PATIENCE, || home.sockets().len() == 1));
    home.ok(&["cancel", "late/a"]);

    let run = bg.finish(PATIENCE);
    assert_eq!(run.statuses()["late/a"], "skipped");
    assert_eq!(run.statuses()["late/b"], "succeeded");
    // Skipped is not a failure; the session still says the user cancelled.
    run.assert_code(0);
    assert_eq!(run.outcome(), "cancelled");
    run.assert_log("late", "information", "got prepareForSync b")
        .assert_no_log("late", "prepareForSync a");
}
