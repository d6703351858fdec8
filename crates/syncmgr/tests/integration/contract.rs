//! `docs/cli.md` is kept true: every JSON shape it documents (a JSON Schema
//! after a `<!-- schema: NAME -->` marker) is checked against real output of
//! the binary, and every schema there must be met by some output here, so a
//! shape that changes, or a schema nobody prints any more, fails.
//!
//! The validator is a small one for the part of JSON Schema the document
//! uses (`type`, `const`, `enum`, `required`, `properties`,
//! `additionalProperties: false`, `items`, `$ref` to another named schema,
//! `format: date-time`): a full validator crate would add more to the build
//! than the whole check is worth.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::dashboard::two_way_pair;
use crate::util::{PATIENCE, TestHome, wait_until};

/// The schemas of `docs/cli.md`, by name.
pub fn schemas() -> BTreeMap<String, Value> {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md");
    let text = fs::read_to_string(&doc).expect("docs/cli.md");
    let mut out = BTreeMap::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("<!-- schema: ") {
        rest = &rest[at + "<!-- schema: ".len()..];
        let name = rest[..rest.find(" -->").expect("marker end")].to_owned();
        let start = rest
            .find("```json\n")
            .expect("a json block after the marker")
            + 8;
        let end = start + rest[start..].find("```").expect("block end");
        let schema: Value = serde_json::from_str(&rest[start..end])
            .unwrap_or_else(|e| panic!("schema {name} in docs/cli.md is not JSON: {e}"));
        assert!(out.insert(name.clone(), schema).is_none(), "{name} twice");
        rest = &rest[end..];
    }
    assert!(!out.is_empty(), "no schemas found in docs/cli.md");
    out
}

/// Checks `value` against `schema`; returns what does not match, with the
/// path to it.
pub fn check(
    all: &BTreeMap<String, Value>,
    schema: &Value,
    value: &Value,
    at: &str,
) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(name) = schema.get("$ref").and_then(Value::as_str) {
        let target = all
            .get(name)
            .unwrap_or_else(|| panic!("$ref to unknown schema {name}"));
        return check(all, target, value, at);
    }
    if let Some(expected) = schema.get("const")
        && value != expected
    {
        errors.push(format!("{at}: {value} is not {expected}"));
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {options:?}"));
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            other => panic!("bad type {other}"),
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let fits = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
        if !fits {
            errors.push(format!("{at}: {value} is a {actual}, not {types:?}"));
            return errors;
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time")
        && let Some(text) = value.as_str()
        && chrono::DateTime::parse_from_rfc3339(text).is_err()
    {
        errors.push(format!("{at}: {text:?} is not an RFC 3339 time"));
    }
    if let Value::Object(fields) = value {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !fields.contains_key(name) {
                errors.push(format!("{at}: no field {name:?}"));
            }
        }
        for (name, field) in fields {
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => errors.extend(check(all, sub, field, &format!("{at}.{name}"))),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{at}: field {name:?} is not documented"));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(elements), Some(item)) = (value, schema.get("items")) {
        for (i, element) in elements.iter().enumerate() {
            errors.extend(check(all, item, element, &format!("{at}[{i}]")));
        }
    }
    errors
}

/// Checks `value` against the schema `name`, and notes that it was used.
#[track_caller]
fn conforms(all: &BTreeMap<String, Value>, used: &mut BTreeSet<String>, name: &str, value: &Value) {
    let schema = all
        .get(name)
        .unwrap_or_else(|| panic!("docs/cli.md documents no shape {name:?} (printed: {value})"));
    let errors = check(all, schema, value, name);
    assert!(
        errors.is_empty(),
        "output does not match docs/cli.md:\n{}\nvalue: {value:#}",
        errors.join("\n")
    );
    used.insert(name.to_owned());
    // What a schema refers to is used through it.
    let text = schema.to_string();
    for other in all.keys() {
        if text.contains(&format!("\"$ref\":\"{other}\"")) {
            used.insert(other.clone());
        }
    }
}

#[test]
fn every_documented_json_shape_matches_real_output() {
    let all = schemas();
    let mut used = BTreeSet::new();
    // Inline first (status without a daemon), then with one.
    let mut home = TestHome::inline();
    // Log entries of every kind: the handler's own (`log` scenario: one
    // withdrawn with deleteLogError), an actionable failure (`--fail a`), and
    // the manager's (stderr lines, with a cause).
    home.register("chatty", &["--scenario", "log", "--fail", "a"]);
    let src = home.path().join("src");
    fs::create_dir(&src).unwrap();
    home.ok(&[
        "register",
        "files",
        "--folder",
        src.to_str().unwrap(),
        home.path().join("dst").to_str().unwrap(),
    ]);

    let run = home.sync(&[]);
    let events = run.events();
    for event in events {
        let kind = event["event"].as_str().expect("an event field");
        conforms(&all, &mut used, &format!("event.{kind}"), event);
    }
    for kind in [
        "sessionStarted",
        "item",
        "log",
        "logDeleted",
        "sessionFinished",
    ] {
        assert!(
            used.contains(&format!("event.{kind}")),
            "no {kind} event in {}",
            run.report()
        );
    }

    let log = home.json(&["log", "--json"]);
    conforms(&all, &mut used, "log", &log);
    let causes: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["cause"])
        .collect();
    assert!(causes.iter().any(|c| c.is_null()), "{log:#}");
    assert!(causes.iter().any(|c| c == &"handlerOutput"), "{log:#}");

    conforms(
        &all,
        &mut used,
        "history",
        &home.json(&["history", "--json"]),
    );
    let handlers = home.json(&["handlers", "--json"]);
    conforms(&all, &mut used, "handlers", &handlers);
    assert_eq!(handlers.as_array().map(Vec::len), Some(2));
    conforms(&all, &mut used, "items", &home.json(&["items", "--json"]));

    // Conflicts: a two-way pair changed on both sides; a stale decision,
    // refused; a decision applied.
    let (left, right) = two_way_pair(&home);
    home.sync(&["pair"]).assert_code(0);
    fs::write(left.join("notes.txt"), "left\n").unwrap();
    fs::write(right.join("notes.txt"), "right\n").unwrap();
    let mut conflict_events = home.sync(&["pair"]).events().to_vec();
    let conflicts = home.json(&["conflicts", "--json"]);
    conforms(&all, &mut used, "conflicts", &conflicts);
    let id = conflicts[0]["id"].as_i64().expect("an id").to_string();
    let detail = home.json(&["conflicts", "show", &id, "--json"]);
    conforms(&all, &mut used, "conflictDetail", &detail);
    let diff = detail["diff"].as_str().expect("a diff of two text files");
    assert!(diff.contains("-left\n+right"), "{diff}");
    fs::write(right.join("notes.txt"), "right, again\n").unwrap();
    let stale = home
        .cmd([
            "conflicts",
            "resolve",
            &id,
            "--keep",
            "0",
            "--yes",
            "--json",
        ])
        .run_json_lines();
    stale.assert_code(1);
    conflict_events.extend(stale.events().iter().cloned());
    home.sync(&["pair"]).assert_code(0);
    let applied = home
        .cmd([
            "conflicts",
            "resolve",
            &id,
            "--keep",
            "1",
            "--yes",
            "--json",
        ])
        .run_json_lines();
    applied.assert_code(0);
    conflict_events.extend(applied.events().iter().cloned());
    for event in &conflict_events {
        let kind = event["event"].as_str().expect("an event field");
        conforms(&all, &mut used, &format!("event.{kind}"), event);
    }
    for kind in ["conflict", "conflictRefused", "conflictResolved"] {
        assert!(
            used.contains(&format!("event.{kind}")),
            "no {kind} event: {conflict_events:#?}"
        );
    }

    // The daemon's shapes: status without and with it, a detached sync, and
    // the events a watcher sees.
    let status = home.json(&["status", "--json"]);
    conforms(&all, &mut used, "status", &status);
    assert_eq!(status["daemon"], Value::Null, "{status:#}");
    home.start_daemon();
    // The dashboard follows the events too: one watcher of its own.
    let watchers = || home.json(&["status", "--json"])["daemon"]["watchers"].clone();
    assert!(wait_until(PATIENCE, || watchers() == 1));
    let mut watcher = home.cmd(["events", "--json"]).spawn();
    // Its first event must be the `queued` below: wait until it follows.
    assert!(wait_until(PATIENCE, || watchers() == 2));
    let accepted = home.json(&["sync", "chatty", "--detach", "--json"]);
    conforms(&all, &mut used, "accepted", &accepted);
    let status = home.json(&["status", "--json"]);
    conforms(&all, &mut used, "status", &status);
    assert!(status["daemon"]["pid"].is_u64(), "{status:#}");
    let mut seen = Vec::new();
    watcher.wait_for_event(PATIENCE, "sessionFinished", |event| {
        seen.push(event.clone());
        event["event"] == "sessionFinished"
    });
    // A schedule: its list, and the trigger it fires.
    home.ok(&["schedule", "add", "soon", "--every", "1s", "files"]);
    home.ok(&[
        "schedule",
        "add",
        "nightly",
        "--cron",
        "0 3 * * *",
        "--timezone",
        "UTC",
        "--jitter",
        "5m",
        "chatty",
    ]);
    let schedules = home.json(&["schedule", "list", "--json"]);
    conforms(&all, &mut used, "schedules", &schedules);
    watcher.wait_for_event(PATIENCE, "a trigger", |event| {
        seen.push(event.clone());
        event["event"] == "trigger"
    });
    conforms(&all, &mut used, "status", &home.json(&["status", "--json"]));
    for event in &seen {
        let kind = event["event"].as_str().expect("an event field");
        conforms(&all, &mut used, &format!("event.{kind}"), event);
    }
    assert!(used.contains("event.queued"), "{seen:#?}");

    // The web API's own shapes: answers, and the bodies it takes.
    let web = crate::dashboard::Web::of(&mut home);
    let health = syncmgr_testkit::http::request(&web.address, "GET", "/api/health", &[], None);
    conforms(&all, &mut used, "health", &health.json());
    conforms(
        &all,
        &mut used,
        "loginUrl",
        &web.ok("POST", "/api/v1/login-token", None),
    );
    home.register(
        "slow",
        &["--items", "a", "--steps", "400", "--step-ms", "25"],
    );
    let sync = serde_json::json!({"targets": ["slow"], "event": null});
    conforms(&all, &mut used, "syncRequest", &sync);
    conforms(
        &all,
        &mut used,
        "sessionRef",
        &web.ok("POST", "/api/v1/sync", Some(&sync)),
    );
    let cancel = serde_json::json!({"targets": ["slow"]});
    conforms(&all, &mut used, "cancelRequest", &cancel);
    let mut cancelled = None;
    assert!(wait_until(PATIENCE, || {
        let reply = web.call("POST", "/api/v1/cancel", Some(&cancel));
        cancelled = (reply.status == 200).then(|| reply.json());
        cancelled.is_some()
    }));
    conforms(&all, &mut used, "cancelReply", &cancelled.unwrap());
    let refused = web.call("GET", "/api/v1/log?level=loud", None);
    conforms(&all, &mut used, "apiError", &refused.json());
    let choice =
        serde_json::json!({"handler": "slow", "item": "a", "event": "idle", "checked": true});
    conforms(
        &all,
        &mut used,
        "choice",
        &web.ok("PUT", "/api/v1/choices", Some(&choice)),
    );
    let show = serde_json::json!({"confirm": false});
    conforms(&all, &mut used, "showRequest", &show);
    let resolve = serde_json::json!({"keep": null});
    conforms(&all, &mut used, "resolveRequest", &resolve);
    let unknown = web.call("POST", "/api/v1/conflicts/999/resolve", Some(&resolve));
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    conforms(&all, &mut used, "apiError", &unknown.json());
    let schedule = serde_json::json!({
        "name": "web", "every": "1h", "cron": null, "timezone": null, "jitter": "1m",
        "noCatchUp": true, "targets": ["slow"]
    });
    conforms(&all, &mut used, "newSchedule", &schedule);
    let added = web.call("POST", "/api/v1/schedules", Some(&schedule));
    assert_eq!(added.status, 201, "{}", added.body);

    let documented: BTreeSet<String> = all.keys().cloned().collect();
    let unused: Vec<&String> = documented.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "docs/cli.md documents shapes no command printed here: {unused:?}"
    );
}
