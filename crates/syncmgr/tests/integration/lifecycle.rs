//! The whole life of a handler through the command line, and a handler that
//! declines to take part.

use serde_json::{Value, json};

use crate::util::{PATIENCE, TestHome, test_handler};

/// `lastUpdate` and the other times are RFC 3339 in UTC (`...Z`).
fn is_utc_time(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|t| t.len() >= 20 && t.as_bytes()[10] == b'T' && t.ends_with('Z'))
}

#[test]
fn register_list_sync_history_unregister() {
    let home = TestHome::new();
    home.register_with(
        "life",
        &["--description", "the first one"],
        &[
            "--items",
            "a,b,c",
            "--name",
            "Lifecycle handler",
            "--steps",
            "2",
        ],
    );

    // handlers --json: the registration as stored.
    let handlers = home.json(&["handlers", "--json"]);
    let list = handlers.as_array().expect("an array");
    assert_eq!(list.len(), 1, "{handlers}");
    let h = &list[0];
    assert_eq!(h["name"], "life");
    assert_eq!(h["description"], "the first one");
    assert_eq!(h["kind"], "process");
    assert_eq!(h["events"], json!([]));
    assert_eq!(h["timeout"], Value::Null);
    let argv = h["argv"].as_array().expect("argv is an array");
    assert_eq!(
        argv[0].as_str().map(std::path::PathBuf::from),
        Some(std::fs::canonicalize(test_handler()).unwrap()),
        "the program is stored as an absolute path"
    );
    assert_eq!(argv[1], "--items");
    assert!(is_utc_time(&h["registered"]), "{h}");

    // items --json before any sync: effective choice = the handler's default.
    let items = home.json(&["items", "--json"]);
    let rows = items.as_array().expect("an array");
    assert_eq!(rows.len(), 3, "{items}");
    for (row, id) in rows.iter().zip(["a", "b", "c"]) {
        assert_eq!(row["handler"], "life");
        assert_eq!(row["handlerName"], "Lifecycle handler");
        assert_eq!(row["item"], id);
        assert_eq!(row["name"], format!("Item {id}"));
        assert_eq!(row["checked"], true);
        assert_eq!(row["defaultChecked"], true);
        assert_eq!(row["event"], "manual");
        assert_eq!(
            row["flags"],
            json!({"hasProperties": false, "temporary": false, "roamingUser": false,
                   "mayDeleteItem": false, "hidden": false})
        );
        assert_eq!(row["lastUpdate"], Value::Null, "never synced yet");
    }

    // sync --json: sessionStarted first, item events, sessionFinished last.
    let run = home.sync(&[]);
    run.assert_code(0);
    let session = run.session();
    assert_eq!(run.started()["trigger"], "manual");
    for id in ["a", "b", "c"] {
        let events = run.item_events("life", id);
        let last = events.last().unwrap_or_else(|| panic!("no event for {id}"));
        assert_eq!(last["status"], "succeeded");
        assert_eq!(last["name"], format!("Item {id}"));
        assert_eq!(last["text"], "done");
        assert_eq!(
            (last["value"].as_u64(), last["max"].as_u64()),
            (Some(2), Some(2))
        );
        // Once terminal, an item does not change again.
        let first_terminal = events
            .iter()
            .position(|e| e["status"] == "succeeded")
            .unwrap();
        assert_eq!(first_terminal, events.len() - 1, "{id}: {events:?}");
    }
    assert_eq!(run.outcome(), "succeeded");
    assert_eq!(run.counts(), [3, 0, 0, 0]);
    assert_eq!(
        run.finished()["items"],
        json!([
            {"handler": "life", "item": "a", "status": "succeeded"},
            {"handler": "life", "item": "b", "status": "succeeded"},
            {"handler": "life", "item": "c", "status": "succeeded"},
        ])
    );
    // The handler's stderr became information entries of the session.
    run.assert_log("life", "information", "got prepareForSync a,b,c");
    // Nothing is left listening once the session is over.
    assert!(home.sockets().is_empty(), "{:?}", home.sockets());

    // history --json: the session with its counts.
    let history = home.history();
    assert_eq!(history.len(), 1, "{history:?}");
    let s = &history[0];
    assert_eq!(s["id"], session.as_str());
    assert_eq!(s["trigger"], "manual");
    assert_eq!(s["outcome"], "succeeded");
    assert_eq!(
        s["counts"],
        json!({"succeeded": 3, "failed": 0, "skipped": 0, "stopped": 0})
    );
    assert!(
        is_utc_time(&s["started"]) && is_utc_time(&s["finished"]),
        "{s}"
    );
    assert!(s["started"].as_str() <= s["finished"].as_str(), "{s}");

    // After a success every item has a last update.
    let items = home.json(&["items", "--json"]);
    for row in items.as_array().unwrap() {
        assert!(is_utc_time(&row["lastUpdate"]), "{row}");
        assert!(row["lastUpdate"].as_str() >= s["started"].as_str(), "{row}");
    }

    // The plain (non-terminal) output is for people but still tells the
    // outcome.
    let plain = home.ok(&["sync"]);
    plain
        .assert_stdout_contains("life/a: succeeded")
        .assert_stdout_contains("succeeded: 3 succeeded, 0 failed");

    // history is newest last; --limit keeps the newest.
    let history = home.history();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["id"], session.as_str());
    let newest = history[1]["id"].as_str().unwrap();
    assert!(plain.stdout.contains(&format!("session {newest} started")));
    let limited = home.json(&["history", "--json", "--limit", "1"]);
    assert_eq!(limited.as_array().map(Vec::len), Some(1), "{limited}");
    assert_eq!(limited[0]["id"], newest);

    // register again: an update, not a second handler.
    home.cmd(["register", "life", "--timeout", "30", "--"])
        .arg(test_handler())
        .args(["--items", "a"])
        .run()
        .assert_code(0)
        .assert_stdout_contains("updated handler life");
    let handlers = home.json(&["handlers", "--json"]);
    assert_eq!(handlers.as_array().map(Vec::len), Some(1), "{handlers}");
    assert_eq!(handlers[0]["timeout"], 30.0);
    assert_eq!(handlers[0]["argv"][2], "a");

    // unregister: the handler goes, its history stays.
    home.ok(&["unregister", "life"])
        .assert_stdout_contains("unregistered handler life");
    assert_eq!(home.json(&["handlers", "--json"]), json!([]));
    assert_eq!(home.history().len(), 2);
}

#[test]
fn the_event_decides_whether_a_handler_may_bother_the_user() {
    let home = TestHome::new();
    // The modeless scenario asks enableModeless {enable: true} while preparing.
    home.register_with("ui", &["--events", "idle"], &["--scenario", "modeless"]);

    let manual = home.sync(&[]);
    manual.assert_code(0);
    manual.assert_log("ui", "information", "modeless true");
    // Without the mayEstablishConnection flag the connection is refused,
    // with an error naming the handler, and the sync goes on.
    manual
        .assert_log("ui", "error", "mayEstablishConnection")
        .assert_log("ui", "information", "connection error -32000");
    assert_eq!(manual.counts(), [2, 0, 0, 0]);

    // An automatic event may not bother the user.
    let idle = home.sync(&["--event", "idle"]);
    idle.assert_code(0);
    idle.assert_log("ui", "information", "modeless false");

    // A cookie means a program asked for the sync: the invoke event, which
    // needs no opt-in.
    let invoked = home.sync(&["--cookie", "from-a-script"]);
    invoked.assert_code(0);
    assert_eq!(invoked.started()["trigger"], "invoke");
    invoked.assert_log("ui", "information", "got initialize invoke");
}

#[test]
fn a_handler_that_declines_syncs_nothing() {
    let home = TestHome::new();
    home.register("shy", &["--scenario", "decline"]);

    let run = home.sync(&[]);
    run.assert_code(0);
    assert_eq!(run.outcome(), "succeeded");
    assert_eq!(run.counts(), [0, 0, 0, 0]);
    assert_eq!(run.finished()["items"], json!([]));
    assert!(
        run.events.iter().all(|e| e["event"] != "item"),
        "no item events for a declining handler"
    );
    // It was asked, then shut down without being prepared.
    run.assert_log("shy", "information", "got initialize manual")
        .assert_no_log("shy", "prepareForSync");

    // In settings mode it declines too: no items, not an error.
    let items = home.run(&["items", "--json"]);
    items.assert_code(0).assert_stderr_contains("declined");
    assert_eq!(items.json(), json!([]));
}

#[test]
fn a_reader_that_goes_away_does_not_abandon_the_session() {
    let home = TestHome::new();
    // About a second of item events after the first line.
    home.register("steady", &["--steps", "20", "--step-ms", "25"]);
    let mut bg = home.spawn_sync(&[]);
    let started = bg.wait_for_event(PATIENCE, "sessionStarted", |e| {
        e["event"] == "sessionStarted"
    });
    let session = started["session"].as_str().unwrap().to_owned();
    // `syncmgr sync --json | head -1`.
    bg.close_stdout();
    let out = bg.finish_raw(PATIENCE);

    // The output was only a view: the session ran to its end, was recorded,
    // and the exit code tells how it went.
    out.assert_code(0);
    let history = home.history();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["id"], session.as_str());
    assert_eq!(history[0]["outcome"], "succeeded", "{}", history[0]);
    assert_eq!(history[0]["counts"]["succeeded"], 2, "{}", history[0]);
    let items = home.json(&["items", "--json"]);
    assert!(
        items
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row["lastUpdate"].is_string()),
        "{items}"
    );
}

/// `items` asks several handlers at once: four handlers that each answer
/// `initialize` only once all four were started (`--barrier`) are listed;
/// asked one at a time, each would wait alone past its 5 s timeout.
#[test]
fn items_asks_handlers_at_once() {
    let home = TestHome::new();
    let barrier = home.path().join("barrier");
    std::fs::create_dir(&barrier).unwrap();
    let spec = format!("{}:4", barrier.display());
    for name in ["h1", "h2", "h3", "h4"] {
        home.register_with(name, &["--timeout", "5"], &["--barrier", &spec]);
    }
    let items = home.json(&["items", "--json", "--max-concurrent", "4"]);
    assert_eq!(items.as_array().map(Vec::len), Some(8), "{items:#}");
    assert_eq!(std::fs::read_dir(&barrier).unwrap().count(), 4);
}
