//! Handlers that misbehave. Whatever a handler sends or fails to send, the
//! manager answers, logs it against that handler, ends its unfinished items
//! and leaves the other handlers of the session alone (protocol rules 6-8).

use std::collections::BTreeMap;

use crate::util::TestHome;

fn statuses(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn a_silent_handler_is_not_responding_and_fails_alone() {
    let home = TestHome::new();
    home.register_with("mute", &["--timeout", "1"], &["--scenario", "silent"]);
    home.register("fine", &["--steps", "3", "--step-ms", "20"]);
    let run = home.sync(&["--grace", "0.3"]);

    run.assert_code(1);
    assert_eq!(
        run.statuses(),
        statuses(&[
            ("fine/a", "succeeded"),
            ("fine/b", "succeeded"),
            ("mute/a", "failed"),
            ("mute/b", "failed"),
        ])
    );
    assert_eq!(run.outcome(), "failed");
    run.assert_log("mute", "error", "not responding");
    for item in ["a", "b"] {
        let entries: Vec<_> = run
            .logs_matching("mute", "error", "item failed")
            .into_iter()
            .filter(|e| e["item"] == item)
            .collect();
        assert_eq!(entries.len(), 1, "one entry saying why {item} failed");
        assert!(
            entries[0]["text"]
                .as_str()
                .unwrap()
                .contains("not responding"),
            "{}",
            entries[0]
        );
    }
    run.assert_no_log("fine", "not responding");
    // Its own timeout, not the 60 s default.
    run.assert_log("mute", "error", "silent for 1s");
}

#[test]
fn a_crash_fails_its_items_and_not_the_other_handler() {
    let home = TestHome::new();
    home.register("boom", &["--scenario", "crash"]);
    home.register("fine", &[]);
    let run = home.sync(&[]);

    run.assert_code(1);
    assert_eq!(
        run.statuses(),
        statuses(&[
            ("boom/a", "failed"),
            ("boom/b", "failed"),
            ("fine/a", "succeeded"),
            ("fine/b", "succeeded"),
        ])
    );
    assert_eq!(run.outcome(), "failed");
    assert_eq!(run.counts(), [2, 2, 0, 0]);
    // The entry says how the process ended, and quotes its last words.
    run.assert_log("boom", "error", "exit status 3")
        .assert_log("boom", "error", "crashing");
    let per_item = run.logs_matching("boom", "error", "item failed");
    assert_eq!(per_item.len(), 2, "{per_item:?}");
    assert!(
        run.logs()
            .iter()
            .filter(|e| e["handler"] == "fine")
            .all(|e| e["level"] == "information"),
        "the crash was logged against the other handler"
    );
}

#[test]
fn garbage_on_stdout_is_logged_and_the_sync_goes_on() {
    let home = TestHome::new();
    home.register("dirty", &["--scenario", "garbage"]);
    let run = home.sync(&[]);

    run.assert_code(0);
    assert_eq!(run.outcome(), "succeeded");
    assert_eq!(
        run.statuses(),
        statuses(&[("dirty/a", "succeeded"), ("dirty/b", "succeeded")])
    );
    // One error entry per bad line, naming the handler and quoting the line.
    for line in ["hello", "{not json", "[]", r#"{"jsonrpc":"2.0"}"#] {
        let entries = run.logs_matching("dirty", "error", line);
        assert_eq!(entries.len(), 1, "entries quoting {line:?}: {entries:?}");
        assert!(
            entries[0]["text"].as_str().unwrap().contains("bad line"),
            "{}",
            entries[0]
        );
    }
    // They are in the stored log too.
    let stored = home.log(&["--level", "error", "--handler", "dirty"]);
    assert_eq!(stored.len(), 4, "{stored:?}");
}

#[test]
fn bad_requests_get_json_rpc_errors_and_log_entries() {
    let home = TestHome::new();
    home.register("rude", &["--scenario", "bad-requests"]);
    let run = home.sync(&[]);

    run.assert_code(0);
    assert_eq!(
        run.statuses(),
        statuses(&[("rude/a", "succeeded"), ("rude/b", "succeeded")])
    );
    // The handler writes `reply <label>: <code>` for each answer it got.
    let expected = [
        ("outside-window", "-32003"),
        ("unknown-item", "-32001"),
        ("value-over-max", "-32005"),
        ("bad-status", "-32602"),
        ("long-text", "-32006"),
        ("negative-value", "-32602"),
    ];
    for (label, code) in expected {
        let line = format!("reply {label}: {code}");
        let got = run.logs_matching("rude", "information", &format!("reply {label}:"));
        assert_eq!(got.len(), 1, "{label}: {got:?}");
        assert_eq!(got[0]["text"], line.as_str());
    }
    // And the manager logged an error naming the handler for each.
    for needle in [
        "only allowed between prepareForSync and the synchronize response",
        "unknown item \"nope\"",
        "greater than max",
        "unknown status \"bogus\"",
        "over the 4096 byte limit",
        "non-negative",
    ] {
        let got = run.logs_matching("rude", "error", needle);
        assert_eq!(got.len(), 1, "an error entry with {needle:?}: {got:?}");
    }
    assert_eq!(
        run.logs().iter().filter(|e| e["level"] == "error").count(),
        6
    );
}

#[test]
fn items_never_reported_end_failed_with_a_reason() {
    let home = TestHome::new();
    home.register("lazy", &["--scenario", "never-report", "--items", "a,b,c"]);
    let run = home.sync(&[]);

    run.assert_code(1);
    assert_eq!(run.outcome(), "failed");
    assert_eq!(
        run.statuses(),
        statuses(&[
            ("lazy/a", "succeeded"),
            ("lazy/b", "failed"),
            ("lazy/c", "failed"),
        ])
    );
    for item in ["b", "c"] {
        let got: Vec<_> = run
            .logs_matching("lazy", "error", "never reported a final status")
            .into_iter()
            .filter(|e| e["item"] == item)
            .collect();
        assert_eq!(got.len(), 1, "{item}: {got:?}");
    }
    assert!(
        run.logs_matching("lazy", "error", "never reported")
            .iter()
            .all(|e| e["item"] != "a")
    );
}

#[test]
fn a_failing_prepare_releases_the_handler_without_synchronize() {
    let home = TestHome::new();
    home.register("noprep", &["--scenario", "fail-prepare"]);
    home.register("fine", &[]);
    let run = home.sync(&[]);

    run.assert_code(1);
    assert_eq!(run.outcome(), "failed");
    let s = run.statuses();
    assert_eq!(
        (s["noprep/a"].as_str(), s["noprep/b"].as_str()),
        ("failed", "failed")
    );
    assert_eq!(
        (s["fine/a"].as_str(), s["fine/b"].as_str()),
        ("succeeded", "succeeded")
    );
    run.assert_log("noprep", "error", "prepareForSync failed: cannot prepare")
        .assert_log("noprep", "information", "got prepareForSync")
        .assert_no_log("noprep", "got synchronize");
}

#[test]
fn a_failing_synchronize_fails_the_unfinished_items() {
    let home = TestHome::new();
    home.register("nosync", &["--scenario", "fail-sync"]);
    let run = home.sync(&[]);

    run.assert_code(1);
    assert_eq!(run.outcome(), "failed");
    assert_eq!(
        run.statuses(),
        statuses(&[("nosync/a", "failed"), ("nosync/b", "failed")])
    );
    run.assert_log("nosync", "error", "synchronize failed: sync failed");
    assert_eq!(run.logs_matching("nosync", "error", "item failed").len(), 2);
}

#[test]
fn a_missing_program_fails_the_session_with_the_spawn_error() {
    let home = TestHome::new();
    let program = home.path().join("handler");
    std::fs::copy(crate::util::test_handler(), &program).unwrap();
    home.ok(&["register", "gone", "--", program.to_str().unwrap()]);
    std::fs::remove_file(&program).unwrap();

    let run = home.sync(&[]);
    run.assert_code(1);
    assert_eq!(run.outcome(), "failed");
    assert_eq!(
        run.finished()["failedHandlers"],
        serde_json::json!(["gone"])
    );
    run.assert_log("gone", "error", "No such file or directory")
        .assert_log("gone", "error", program.to_str().unwrap());
    assert_eq!(home.history()[0]["outcome"], "failed");

    // In settings mode too: a warning naming it, exit 1.
    home.run(&["items"])
        .assert_code(1)
        .assert_stderr_contains("No such file or directory");
}

#[test]
fn a_handler_that_never_answers_initialize_is_ended() {
    let home = TestHome::new();
    // Answers initialize only after 5 s: far beyond its 0.3 s timeout.
    home.register_with(
        "late",
        &["--timeout", "1"],
        &["--scenario", "slow-start", "--step-ms", "5000"],
    );
    home.register("fine", &[]);
    let run = home.sync(&["--grace", "0.2"]);

    run.assert_code(1);
    assert_eq!(run.outcome(), "failed");
    assert_eq!(
        run.finished()["failedHandlers"],
        serde_json::json!(["late"])
    );
    assert_eq!(
        run.statuses(),
        statuses(&[("fine/a", "succeeded"), ("fine/b", "succeeded")])
    );
    run.assert_log(
        "late",
        "error",
        "not responding during initialize (silent for 1s)",
    );

    // Settings mode has the same bound.
    home.run(&["items", "late"])
        .assert_code(1)
        .assert_stderr_contains("no answer to initialize");
}

#[test]
fn a_handler_that_exits_at_once_fails_with_its_exit_status_and_last_words() {
    let home = TestHome::new();
    // The test handler refuses an unknown scenario: usage on stderr, exit 2.
    home.register("broken", &["--scenario", "no-such-scenario"]);
    let run = home.sync(&[]);

    run.assert_code(1);
    assert_eq!(run.outcome(), "failed");
    assert_eq!(
        run.finished()["failedHandlers"],
        serde_json::json!(["broken"])
    );
    run.assert_log("broken", "error", "exit status 2")
        .assert_log("broken", "error", "unknown scenario no-such-scenario");
}
