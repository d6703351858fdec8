//! Which items a session syncs: stored choices per event over the handler's
//! defaults, explicit `NAME/ITEM` targets, and events handlers opt in to.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::util::TestHome;

/// `item -> checked` of one handler, from `items --json [--event EVENT]`.
fn checked(home: &TestHome, handler: &str, event: &str) -> BTreeMap<String, bool> {
    let items = home.json(&["items", handler, "--json", "--event", event]);
    items
        .as_array()
        .expect("an array")
        .iter()
        .map(|row| {
            assert_eq!(row["event"], event, "{row}");
            (
                row["item"].as_str().unwrap().to_owned(),
                row["checked"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn map(pairs: &[(&str, bool)]) -> BTreeMap<String, bool> {
    pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
}

fn statuses(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn choices_are_per_event_and_override_the_handler_default() {
    let home = TestHome::new();
    // c is unchecked by the handler's default.
    home.register("ch", &["--items", "a,b,c", "--unchecked", "c"]);
    // idler opts in to idle (and, like every handler, takes part in manual).
    home.register_with("idler", &["--events", "idle"], &[]);

    assert_eq!(
        checked(&home, "ch", "manual"),
        map(&[("a", true), ("b", true), ("c", false)])
    );

    home.ok(&["choose", "ch", "b", "--uncheck"])
        .assert_stdout_contains("ch/b: unchecked for manual");
    home.ok(&["choose", "ch", "c", "--check"])
        .assert_stdout_contains("ch/c: checked for manual");
    home.ok(&["choose", "idler", "a", "--uncheck", "--event", "idle"])
        .assert_stdout_contains("idler/a: unchecked for idle");

    // The stored choice wins over the default; the default stays visible.
    assert_eq!(
        checked(&home, "ch", "manual"),
        map(&[("a", true), ("b", false), ("c", true)])
    );
    let rows = home.json(&["items", "ch", "--json"]);
    let c = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["item"] == "c")
        .unwrap();
    assert_eq!(c["defaultChecked"], false, "{c}");
    // A choice for idle leaves manual alone, and the other way round.
    assert_eq!(
        checked(&home, "idler", "manual"),
        map(&[("a", true), ("b", true)])
    );
    assert_eq!(
        checked(&home, "idler", "idle"),
        map(&[("a", false), ("b", true)])
    );
    assert_eq!(
        checked(&home, "ch", "idle"),
        map(&[("a", true), ("b", true), ("c", false)])
    );

    // manual: ch syncs a and c (b is not even prepared); idler both.
    let run = home.sync(&[]);
    run.assert_code(0);
    assert_eq!(
        run.statuses(),
        statuses(&[
            ("ch/a", "succeeded"),
            ("ch/c", "succeeded"),
            ("idler/a", "succeeded"),
            ("idler/b", "succeeded"),
        ])
    );
    assert!(run.item_events("ch", "b").is_empty(), "b was left out");
    run.assert_log("ch", "information", "got prepareForSync a,c")
        .assert_log("idler", "information", "got prepareForSync a,b");

    // idle: only the handler that opted in, with its idle choices.
    let run = home.sync(&["--event", "idle"]);
    run.assert_code(0);
    assert_eq!(run.started()["trigger"], "idle");
    assert_eq!(run.statuses(), statuses(&[("idler/b", "succeeded")]));
    run.assert_log("idler", "information", "got initialize idle")
        .assert_log("idler", "information", "got prepareForSync b");
    assert!(
        run.logs().iter().all(|e| e["handler"] != "ch"),
        "ch did not opt in to idle, it must not even be started"
    );
    // Naming a handler that did not opt in is a usage error.
    home.run(&["sync", "--event", "idle", "ch"])
        .assert_code(2)
        .assert_stderr_contains("did not opt in");

    // NAME/ITEM syncs exactly that item, even an unchecked one.
    let run = home.sync(&["ch/b"]);
    run.assert_code(0);
    assert_eq!(run.statuses(), statuses(&[("ch/b", "succeeded")]));
    run.assert_log("ch", "information", "got prepareForSync b");
    // NAME syncs that handler's checked items only.
    let run = home.sync(&["ch"]);
    run.assert_code(0);
    assert_eq!(
        run.statuses(),
        statuses(&[("ch/a", "succeeded"), ("ch/c", "succeeded")])
    );

    // The history knows which event started each session (newest last).
    let triggers: Vec<Value> = home
        .history()
        .iter()
        .map(|s| s["trigger"].clone())
        .collect();
    assert_eq!(triggers, ["manual", "idle", "manual", "manual"]);
}

#[test]
fn an_item_the_handler_does_not_have_fails_that_handler() {
    let home = TestHome::new();
    home.register("ch", &[]);
    let run = home.sync(&["ch/a", "ch/zz"]);
    run.assert_code(1);
    assert_eq!(run.statuses(), statuses(&[("ch/a", "succeeded")]));
    assert_eq!(run.outcome(), "failed");
    run.assert_log("ch", "error", "no item \"zz\"");
}

#[test]
fn a_complete_enumeration_forgets_choices_of_items_that_are_gone() {
    let home = TestHome::new();
    home.register("ch", &["--items", "a,b,c"]);
    home.ok(&["choose", "ch", "c", "--uncheck"]);

    // complete: false (S_SYNCMGR_MISSINGITEMS): c is only missing for now,
    // its choice stays.
    home.register("ch", &["--items", "a,b", "--no-complete"]);
    home.sync(&[]).assert_code(0);
    home.register("ch", &["--items", "a,b,c"]);
    assert_eq!(
        checked(&home, "ch", "manual"),
        map(&[("a", true), ("b", true), ("c", false)])
    );

    // complete: true: c is gone, and so is its choice.
    home.register("ch", &["--items", "a,b"]);
    home.sync(&[]).assert_code(0);
    home.register("ch", &["--items", "a,b,c"]);
    assert_eq!(
        checked(&home, "ch", "manual"),
        map(&[("a", true), ("b", true), ("c", true)])
    );
}
