//! The results log: what handlers log (and delete), what the manager logs,
//! the filters of `syncmgr log`, and acting on an entry (`log show`, the
//! retry path) or removing it (`log delete`).

use serde_json::Value;

use crate::util::{TestHome, entries_containing};

#[track_caller]
fn only<'a>(entries: &[&'a Value], what: &str) -> &'a Value {
    assert_eq!(entries.len(), 1, "expected one entry {what}: {entries:?}");
    entries[0]
}

#[test]
fn log_show_asks_the_handler_and_retries_the_item() {
    let home = TestHome::new();
    home.register("flaky", &["--fail", "a"]);

    let first = home.sync(&[]);
    first.assert_code(1);
    assert_eq!(first.statuses()["flaky/a"], "failed");
    assert_eq!(first.statuses()["flaky/b"], "succeeded");
    assert_eq!(first.outcome(), "failed");
    // The handler's entry reaches the live stream as actionable.
    let live = first.logs_matching("flaky", "error", "a failed");
    let live = only(&live, "for a in the sync stream");
    assert_eq!(live["actionable"], true);
    assert_eq!(live["item"], "a");

    // Only the item that succeeded has a last update.
    let last_update = |home: &TestHome| -> Vec<(String, bool)> {
        home.json(&["items", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["item"].as_str().unwrap().to_owned(),
                    r["lastUpdate"].is_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        last_update(&home),
        [("a".to_owned(), false), ("b".to_owned(), true)]
    );

    // ...and the stored log, with its error id and session.
    let all = home.log(&[]);
    let entry = all
        .iter()
        .find(|e| e["errorId"] == "fail-a")
        .unwrap_or_else(|| panic!("no entry fail-a in {all:?}"));
    assert_eq!(entry["actionable"], true);
    assert_eq!(entry["level"], "error");
    assert_eq!(entry["handler"], "flaky");
    assert_eq!(entry["item"], "a");
    assert_eq!(entry["text"], "a failed");
    assert_eq!(entry["session"], first.session().as_str());
    assert_eq!(entry["id"], live["id"]);
    let id = entry["id"].as_i64().expect("a numeric id").to_string();
    // Entries written by the manager itself are not actionable.
    assert!(
        all.iter()
            .filter(|e| e["errorId"].is_null())
            .all(|e| e["actionable"] == false)
    );
    // The plain log tells people how to act on it.
    home.ok(&["log"])
        .assert_stdout_contains(&format!("syncmgr log show {id}"));

    // log show: showError in a new process, which asks to retry a.
    let mut cmd = home.cmd(["log", "show", &id, "--json"]);
    let retry = cmd.run_json_lines();
    retry.assert_code(0);
    assert_eq!(retry.outcome(), "succeeded");
    assert_eq!(retry.statuses().len(), 1, "only a is retried");
    assert_eq!(retry.statuses()["flaky/a"], "succeeded");
    retry
        .assert_log("flaky", "information", "showError fail-a")
        .assert_log("flaky", "information", "got prepareForSync a");
    assert_ne!(retry.session(), first.session());
    // The handler's stderr line is in the stored log, in the retry session.
    let after = home.log(&["--session", &retry.session()]);
    only(&entries_containing(&after, "showError fail-a"), "showError");
    assert_eq!(
        last_update(&home),
        [("a".to_owned(), true), ("b".to_owned(), true)]
    );
    let history = home.history();
    assert_eq!(history.len(), 2);
    assert!(
        history
            .iter()
            .any(|s| s["id"] == retry.session().as_str() && s["outcome"] == "succeeded"),
        "{history:?}"
    );

    // Entries that cannot be acted on.
    home.run(&["log", "show", "99999"])
        .assert_code(2)
        .assert_stderr_contains("no log entry 99999");
    let manager_entry = all
        .iter()
        .find(|e| e["errorId"].is_null())
        .expect("a stderr line of the handler");
    home.run(&[
        "log",
        "show",
        &manager_entry["id"].as_i64().unwrap().to_string(),
    ])
    .assert_code(2)
    .assert_stderr_contains("nothing to ask");

    // log delete removes exactly that entry.
    let before = home.log(&[]).len();
    home.ok(&["log", "delete", &id])
        .assert_stdout_contains(&format!("deleted log entry {id}"));
    let left = home.log(&[]);
    assert_eq!(left.len(), before - 1);
    assert!(left.iter().all(|e| e["id"] != entry["id"]), "{left:?}");
    home.run(&["log", "delete", &id])
        .assert_code(2)
        .assert_stderr_contains(&format!("no log entry {id}"));
    home.run(&["log", "show", &id]).assert_code(2);
}

#[test]
fn handler_entries_assigned_ids_deletions_and_filters() {
    let home = TestHome::new();
    home.register("chatty", &["--scenario", "log"]);
    home.register("other", &["--fail", "b"]);

    let first = home.sync(&[]);
    first.assert_code(1);
    assert_eq!(first.statuses()["chatty/a"], "succeeded");
    assert_eq!(first.statuses()["chatty/b"], "succeeded");
    // The warning w1 was logged, acknowledged, then deleted by the handler.
    first.assert_log("chatty", "warning", "a warning from the handler");
    assert!(
        first.events.iter().any(|e| e["event"] == "logDeleted"
            && e["handler"] == "chatty"
            && e["errorId"] == "w1"),
        "no logDeleted event for w1"
    );
    first
        .assert_log("chatty", "information", "reply logError-w1: ok")
        .assert_log("chatty", "information", "reply deleteLogError-w1: ok");
    let second = home.sync(&["other"]);
    second.assert_code(1);

    let all = home.log(&[]);
    for e in &all {
        for field in [
            "id",
            "time",
            "level",
            "handler",
            "item",
            "text",
            "actionable",
            "session",
        ] {
            assert!(e.get(field).is_some(), "no {field} in {e}");
        }
    }
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "newest last: {ids:?}");

    // The information entry logged without an id got one from the manager,
    // the same one the handler was answered (it wrote `assigned <id>`).
    let hello = only(&entries_containing(&all, "hello from the handler"), "hello");
    assert_eq!(hello["level"], "information");
    assert_eq!(hello["handler"], "chatty");
    assert_eq!(hello["session"], first.session().as_str());
    let assigned = hello["errorId"].as_str().expect("an assigned errorId");
    assert!(!assigned.is_empty());
    only(
        &entries_containing(&all, &format!("assigned {assigned}")),
        "assigned",
    );
    // Handler stderr lines are information entries.
    for line in ["stderr line 1", "stderr line 2"] {
        let e = only(&entries_containing(&all, line), line);
        assert_eq!(e["level"], "information");
        assert_eq!(e["handler"], "chatty");
    }
    // w1 is gone from the stored log.
    assert!(
        all.iter()
            .all(|e| e["errorId"] != "w1" && e["text"] != "a warning from the handler"),
        "w1 is still in the log"
    );

    // --level: that level or more severe.
    let severity = |e: &Value| match e["level"].as_str() {
        Some("information") => 0,
        Some("warning") => 1,
        Some("error") => 2,
        other => panic!("unknown level {other:?}"),
    };
    for (level, min) in [("information", 0), ("warning", 1), ("error", 2)] {
        let got = home.log(&["--level", level]);
        let want: Vec<&Value> = all.iter().filter(|e| severity(e) >= min).collect();
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "--level {level}");
    }
    let errors = home.log(&["--level", "warning"]);
    assert!(!errors.is_empty(), "b failed is an error");
    assert!(errors.len() < all.len());
    assert!(!entries_containing(&errors, "b failed").is_empty());

    // --handler and --session, alone and together.
    let by = |handler: Option<&str>, session: Option<&str>| -> Vec<&Value> {
        all.iter()
            .filter(|e| handler.is_none_or(|h| e["handler"] == h))
            .filter(|e| session.is_none_or(|s| e["session"] == s))
            .collect()
    };
    let (s1, s2) = (first.session(), second.session());
    let cases: [(&[&str], Vec<&Value>); 4] = [
        (&["--handler", "chatty"], by(Some("chatty"), None)),
        (&["--session", &s2], by(None, Some(&s2))),
        (
            &["--handler", "other", "--session", &s1],
            by(Some("other"), Some(&s1)),
        ),
        (&["--handler", "nobody"], Vec::new()),
    ];
    for (args, want) in cases {
        let got = home.log(args);
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "log {args:?}");
    }
    assert!(!by(Some("chatty"), None).is_empty());
    assert!(by(None, Some(&s2)).iter().all(|e| e["handler"] == "other"));
    assert!(!by(Some("other"), Some(&s1)).is_empty());

    home.run(&["log", "--level", "bogus"]).assert_code(2);
}
