//! The store against real files: each test opens a database in a fresh
//! temporary directory. The migrations themselves are checked by a unit test
//! in `src/schema.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use syncmgr_core::{
    ConflictReport, ConflictVersion, Item, ItemEnumeration, ItemFlags, ItemResult, ItemStatus,
    Journal, LogLevel, NewConflict, NewLogEntry, SessionOutcome, StatusCounts, SyncEvent,
};
use syncmgr_store::{
    HandlerKind, LogFilter, Registration, Retention, ScheduleRecord, ScheduleWhen, SessionRecord,
    Store, StoreError,
};

/// A fresh directory and the database path inside it.
fn db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("syncmgr.db");
    (dir, path)
}

/// A time with millisecond precision, as the store keeps it.
fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
}

fn process(name: &str) -> Registration {
    Registration {
        name: name.into(),
        description: None,
        kind: HandlerKind::Process {
            argv: vec!["/bin/handler".into(), "--flag".into()],
        },
        events: vec![],
        timeout: None,
        registered: at(0),
    }
}

fn item(id: &str, temporary: bool) -> Item {
    Item {
        id: id.into(),
        name: format!("Item {id}"),
        checked: true,
        flags: ItemFlags {
            temporary,
            ..ItemFlags::default()
        },
        last_update: None,
    }
}

fn entry(session: &str, handler: &str, level: LogLevel, error_id: Option<&str>) -> NewLogEntry {
    NewLogEntry {
        time: at(5),
        level,
        handler: handler.into(),
        item: Some("inbox".into()),
        text: format!("{level} from {handler}"),
        actionable: error_id.is_some(),
        session: session.into(),
        error_id: error_id.map(str::to_owned),
        cause: None,
    }
}

#[test]
fn registrations_round_trip_and_update() {
    let (_dir, path) = db();
    let store = Store::open(&path).unwrap();
    let mut mail = process("mail");
    mail.description = Some("Mail folders".into());
    mail.events = vec![SyncEvent::Idle, SyncEvent::Connect];
    mail.timeout = Some(Duration::from_millis(2500));
    let folders = Registration {
        kind: HandlerKind::Builtin {
            kind: "folder".into(),
            config: serde_json::json!({"pairs": [["/a", "/b"]], "delete": true}),
        },
        ..process("docs")
    };
    assert!(store.register(&mail).unwrap());
    assert!(store.register(&folders).unwrap());

    // Events come back in canonical order.
    let mut expected = mail.clone();
    expected.events = vec![SyncEvent::Connect, SyncEvent::Idle];
    assert_eq!(store.registration("mail").unwrap(), Some(expected));
    let names: Vec<_> = store
        .registrations()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["docs", "mail"]);

    // An update keeps the user's choices.
    store
        .set_choice("mail", SyncEvent::Manual, "inbox", false)
        .unwrap();
    let mut updated = process("mail");
    updated.registered = at(10);
    assert!(!store.register(&updated).unwrap());
    assert_eq!(store.registration("mail").unwrap(), Some(updated));
    assert_eq!(
        store.choices("mail", SyncEvent::Manual).unwrap(),
        HashMap::from([("inbox".to_owned(), false)])
    );

    // Refused input: an event that needs no opt-in, a program with no
    // argv, a built-in kind that is empty or says "process".
    let mut manual = process("x");
    manual.events = vec![SyncEvent::Manual];
    let no_program = Registration {
        kind: HandlerKind::Process { argv: Vec::new() },
        ..process("x")
    };
    let builtin = |kind: &str| Registration {
        kind: HandlerKind::Builtin {
            kind: kind.into(),
            config: serde_json::json!({}),
        },
        ..process("x")
    };
    for bad in [manual, no_program, builtin(""), builtin("process")] {
        assert!(
            matches!(store.register(&bad), Err(StoreError::Invalid(_))),
            "{bad:?}"
        );
    }
    assert_eq!(store.registration("x").unwrap(), None);
    // A choice cleared goes back to the handler's default; clearing it
    // again finds nothing.
    store
        .set_choice("mail", SyncEvent::Idle, "outbox", true)
        .unwrap();
    assert!(
        store
            .clear_choice("mail", SyncEvent::Idle, "outbox")
            .unwrap()
    );
    assert!(
        !store
            .clear_choice("mail", SyncEvent::Idle, "outbox")
            .unwrap()
    );
    let err = store
        .set_choice("nobody", SyncEvent::Manual, "i", true)
        .unwrap_err();
    assert_eq!(err.to_string(), "no handler is registered as \"nobody\"");

    // Unregistering drops choices and items, keeps the log.
    store
        .apply_enumeration(
            "mail",
            &ItemEnumeration {
                items: vec![item("inbox", false)],
                complete: true,
            },
        )
        .unwrap();
    store
        .append_log(&entry("s1", "mail", LogLevel::Error, None))
        .unwrap();
    assert!(store.unregister("mail").unwrap());
    assert!(!store.unregister("mail").unwrap());
    assert_eq!(store.registration("mail").unwrap(), None);
    assert!(store.known_items("mail").unwrap().is_empty());
    assert!(store.choices("mail", SyncEvent::Manual).unwrap().is_empty());
    assert_eq!(store.log(&LogFilter::default()).unwrap().len(), 1);
}

#[test]
fn choices_follow_complete_and_incomplete_enumerations() {
    let store = Store::open_in_memory().unwrap();
    store.register(&process("mail")).unwrap();
    let enumerate = |items: Vec<Item>, complete| {
        store
            .apply_enumeration("mail", &ItemEnumeration { items, complete })
            .unwrap();
    };
    enumerate(
        vec![item("a", false), item("b", false), item("t", true)],
        true,
    );
    for id in ["a", "b", "t"] {
        store
            .set_choice("mail", SyncEvent::Manual, id, false)
            .unwrap();
    }
    store
        .set_choice("mail", SyncEvent::Idle, "b", true)
        .unwrap();
    let ids = |store: &Store| -> Vec<String> {
        store
            .known_items("mail")
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect()
    };
    let chosen = |event| {
        let mut v: Vec<_> = store.choices("mail", event).unwrap().into_keys().collect();
        v.sort();
        v
    };

    // Incomplete (S_SYNCMGR_MISSINGITEMS): "b" stays, temporary "t" goes.
    enumerate(vec![item("a", false)], false);
    assert_eq!(ids(&store), ["a", "b"]);
    assert_eq!(chosen(SyncEvent::Manual), ["a", "b"]);
    assert_eq!(chosen(SyncEvent::Idle), ["b"]);

    // Complete: everything not listed goes, for every event.
    enumerate(vec![item("a", false), item("c", false)], true);
    assert_eq!(ids(&store), ["a", "c"]);
    assert_eq!(chosen(SyncEvent::Manual), ["a"]);
    assert!(chosen(SyncEvent::Idle).is_empty());
    assert_eq!(store.known_items("mail").unwrap()[1].name, "Item c");

    assert!(store.set_last_update("mail", "a", at(7)).unwrap());
    assert!(!store.set_last_update("gone", "a", at(7)).unwrap());
    assert_eq!(
        store.known_items("mail").unwrap()[0].last_update,
        Some(at(7))
    );
    assert!(store.clear_choice("mail", SyncEvent::Manual, "a").unwrap());
}

#[test]
fn log_filters_and_deletes() {
    let store = Store::open_in_memory().unwrap();
    let e1 = store
        .append_log(&entry("s1", "mail", LogLevel::Information, None))
        .unwrap();
    let e2 = store
        .append_log(&entry("s1", "mail", LogLevel::Warning, Some("w1")))
        .unwrap();
    let e3 = store
        .append_log(&entry("s1", "docs", LogLevel::Error, Some("e1")))
        .unwrap();
    let e4 = store
        .append_log(&entry("s2", "mail", LogLevel::Error, Some("e1")))
        .unwrap();
    let e5 = store
        .append_log(&entry("s2", "mail", LogLevel::Error, Some("e2")))
        .unwrap();
    let ids = |filter: LogFilter| -> Vec<i64> {
        store
            .log(&filter)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect()
    };

    assert_eq!(ids(LogFilter::default()), [e1, e2, e3, e4, e5]);
    let warn = LogFilter {
        min_level: Some(LogLevel::Warning),
        ..LogFilter::default()
    };
    assert_eq!(ids(warn.clone()), [e2, e3, e4, e5]);
    let errors = LogFilter {
        min_level: Some(LogLevel::Error),
        ..LogFilter::default()
    };
    assert_eq!(ids(errors), [e3, e4, e5]);
    let mail_s1 = LogFilter {
        handler: Some("mail".into()),
        session: Some("s1".into()),
        ..warn
    };
    assert_eq!(ids(mail_s1), [e2]);

    let stored = store.log_entry(e2).unwrap().unwrap();
    assert_eq!(
        stored.entry,
        entry("s1", "mail", LogLevel::Warning, Some("w1"))
    );
    // The manager's entries keep their cause (schema v2).
    let mut own = entry("s1", "mail", LogLevel::Error, None);
    own.cause = Some(syncmgr_core::Cause::NotResponding);
    let e0 = store.append_log(&own).unwrap();
    assert_eq!(store.log_entry(e0).unwrap().unwrap().entry, own);
    assert!(store.delete_log(e0).unwrap());

    // deleteLogError: by id in one session; None = every one with an error id.
    assert_eq!(store.delete_log_for("s2", "mail", Some("e1")).unwrap(), 1);
    assert_eq!(store.delete_log_for("s1", "mail", None).unwrap(), 1); // e1 has no error id
    assert!(store.delete_log(e5).unwrap());
    assert!(!store.delete_log(e5).unwrap());
    assert_eq!(ids(LogFilter::default()), [e1, e3]);

    // Ids are never reused.
    let e6 = store
        .append_log(&entry("s3", "mail", LogLevel::Error, None))
        .unwrap();
    assert!(e6 > e5);
}

#[test]
fn sessions_history_and_recovery() {
    let (_dir, path) = db();
    let store = Store::open(&path).unwrap();
    store.register(&process("mail")).unwrap();
    let (dead, alive) = (4_000_001, 4_000_002);
    store
        .begin_session(&SessionRecord::running(
            "s1",
            SyncEvent::Manual,
            at(0),
            alive,
        ))
        .unwrap();
    store
        .begin_session(&SessionRecord::running("s2", SyncEvent::Idle, at(1), dead))
        .unwrap();
    store
        .begin_session(&SessionRecord::running(
            "s3",
            SyncEvent::Connect,
            at(2),
            alive,
        ))
        .unwrap();

    let items = vec![
        ItemResult {
            handler: "mail".into(),
            item: "inbox".into(),
            status: ItemStatus::Succeeded,
        },
        ItemResult {
            handler: "mail".into(),
            item: "sent".into(),
            status: ItemStatus::Failed,
        },
    ];
    let counts = StatusCounts::of(&items);
    store
        .finish_session("s1", SessionOutcome::Failed, counts, at(50), &items)
        .unwrap();
    assert!(matches!(
        store.finish_session("nope", SessionOutcome::Failed, counts, at(50), &[]),
        Err(StoreError::UnknownSession { .. })
    ));
    assert_eq!(store.session_items("s1").unwrap(), items);
    let known = store.known_items("mail").unwrap();
    assert_eq!(known.len(), 1, "only the succeeded item gets a last update");
    assert_eq!(
        (known[0].id.as_str(), known[0].last_update),
        ("inbox", Some(at(50)))
    );

    let recovered = store.recover_interrupted(|pid| pid == alive).unwrap();
    assert_eq!(recovered, ["s2"]);
    assert!(
        store
            .recover_interrupted(|pid| pid == alive)
            .unwrap()
            .is_empty()
    );

    let history = store.sessions(None).unwrap();
    let summary: Vec<_> = history.iter().map(|s| (s.id.as_str(), s.outcome)).collect();
    assert_eq!(
        summary,
        [
            ("s1", Some(SessionOutcome::Failed)),
            ("s2", Some(SessionOutcome::Interrupted)),
            ("s3", None),
        ]
    );
    assert_eq!(history[0].counts, counts);
    assert_eq!(history[0].finished, Some(at(50)));
    assert!(history[1].finished.is_some());
    assert_eq!(history[2].pid, alive);
    let last_two: Vec<_> = store
        .sessions(Some(2))
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(last_two, ["s2", "s3"]);

    // Each handler's newest finished session: s1 prepared mail's items (s2
    // and s3 prepared none).
    let items_b = vec![ItemResult {
        handler: "mail".into(),
        item: "inbox".into(),
        status: ItemStatus::Succeeded,
    }];
    store
        .begin_session(&SessionRecord::running(
            "s4",
            SyncEvent::Manual,
            at(60),
            alive,
        ))
        .unwrap();
    let last = store.last_sessions().unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!((last[0].0.as_str(), last[0].1.id.as_str()), ("mail", "s1"));
    store
        .finish_session(
            "s4",
            SessionOutcome::Succeeded,
            StatusCounts::of(&items_b),
            at(70),
            &items_b,
        )
        .unwrap();
    let last = store.last_sessions().unwrap();
    assert_eq!((last[0].0.as_str(), last[0].1.id.as_str()), ("mail", "s4"));
    assert_eq!(last[0].1.outcome, Some(SessionOutcome::Succeeded));

    // Pruning: finished sessions before the line go with their items;
    // running ones stay whatever their age.
    let info = entry("s1", "mail", LogLevel::Information, None);
    let error = entry("s1", "mail", LogLevel::Error, Some("e1"));
    store.append_log(&info).unwrap();
    store.append_log(&error).unwrap();
    let keep = |history_before, sessions, information_before| Retention {
        history_before,
        sessions,
        information_before,
    };
    let ids = |store: &Store| -> Vec<String> {
        store
            .sessions(None)
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect()
    };
    // Nothing is old enough yet.
    assert_eq!(store.prune(&keep(at(0), 100, at(0))).unwrap(), (0, 0));
    // (s2 was recovered, so finished, just now.) s1 goes, and its
    // information entry with it; its error stays.
    assert_eq!(store.prune(&keep(at(60), 100, at(0))).unwrap(), (1, 1));
    assert_eq!(ids(&store), ["s2", "s3", "s4"]);
    assert!(store.session_items("s1").unwrap().is_empty());
    // At most two sessions: the oldest finished one goes (s3 still runs).
    assert_eq!(store.prune(&keep(at(0), 2, at(0))).unwrap(), (1, 0));
    assert_eq!(ids(&store), ["s3", "s4"]);
    // By age: an information entry of a session that is kept.
    let young = entry("s4", "mail", LogLevel::Information, None);
    store.append_log(&young).unwrap();
    let later = young.time + chrono::Duration::milliseconds(1);
    assert_eq!(store.prune(&keep(at(0), 100, young.time)).unwrap(), (0, 0));
    assert_eq!(store.prune(&keep(at(0), 100, later)).unwrap(), (0, 1));
    let levels: Vec<_> = store
        .log(&LogFilter::default())
        .unwrap()
        .into_iter()
        .map(|e| e.entry.level)
        .collect();
    assert_eq!(levels, [LogLevel::Error]);
}

#[test]
fn a_builtin_registration_round_trips() {
    let (_dir, path) = db();
    let store = Store::open(&path).unwrap();
    let config = serde_json::json!({"item": []});
    let reg = Registration::builtin("tools", "command", config.clone());
    assert_eq!(reg.description, None);
    assert!(reg.events.is_empty() && reg.timeout.is_none());
    store.register(&reg).unwrap();
    let stored = store.registration("tools").unwrap().expect("stored");
    assert_eq!(
        stored.kind,
        HandlerKind::Builtin {
            kind: "command".into(),
            config
        }
    );
}

#[test]
fn schedules_round_trip() {
    let (_dir, path) = db();
    let store = Store::open(&path).unwrap();
    let nightly = ScheduleRecord {
        name: "nightly".into(),
        when: ScheduleWhen::Cron {
            expr: "0 3 * * *".into(),
            timezone: Some("Europe/Berlin".into()),
        },
        jitter: Duration::from_secs(600),
        catch_up: true,
        targets: vec!["mail".into(), "files/docs".into()],
        created: at(1_000),
        last_run: None,
    };
    let often = ScheduleRecord {
        name: "often".into(),
        when: ScheduleWhen::Every(Duration::from_secs(90)),
        jitter: Duration::ZERO,
        catch_up: false,
        targets: Vec::new(),
        created: at(2_000),
        last_run: Some(at(2_500)),
    };
    assert!(store.add_schedule(&often).unwrap());
    assert!(store.add_schedule(&nightly).unwrap());
    let mut other = nightly.clone();
    other.targets.clear();
    assert!(!store.add_schedule(&other).unwrap(), "the name is taken");
    assert_eq!(store.schedules().unwrap(), [nightly.clone(), often.clone()]);

    assert!(store.set_schedule_run("nightly", at(9_000)).unwrap());
    assert!(!store.set_schedule_run("gone", at(9_000)).unwrap());
    assert_eq!(store.schedules().unwrap()[0].last_run, Some(at(9_000)));

    assert!(store.remove_schedule("often").unwrap());
    assert!(!store.remove_schedule("often").unwrap());
    assert_eq!(store.schedules().unwrap().len(), 1);

    // A row that breaks the rules is an error naming it, not a panic.
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE schedules SET every_ms = 5 WHERE name = 'nightly'",
        [],
    )
    .expect_err("the table's check refuses both kinds at once");
    conn.execute(
        "UPDATE schedules SET targets = 'nope' WHERE name = 'nightly'",
        [],
    )
    .unwrap();
    drop(conn);
    let store = Store::open(&path).unwrap();
    let error = store.schedules().expect_err("targets are not JSON");
    assert!(error.to_string().contains("cannot read"), "{error}");
}

#[test]
fn foreign_and_newer_files_are_refused_by_name() {
    let (dir, path) = db();

    // Garbage.
    std::fs::write(
        &path,
        "this is not a database, just some text\n".repeat(100),
    )
    .unwrap();
    let err = Store::open(&path).unwrap_err().to_string();
    assert!(err.contains(&*path.to_string_lossy()), "{err}");
    assert!(err.contains("is not a syncmgr database"), "{err}");

    // Another program's SQLite file.
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE notes (text TEXT);")
        .unwrap();
    let err = Store::open(&other).unwrap_err().to_string();
    assert!(err.contains(&*other.to_string_lossy()), "{err}");
    assert!(err.contains("another program"), "{err}");

    // A newer syncmgr's database is left untouched.
    let newer = dir.path().join("newer.db");
    Store::open(&newer).unwrap().close().unwrap();
    rusqlite::Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = Store::open(&newer).unwrap_err().to_string();
    assert!(err.contains(&*newer.to_string_lossy()), "{err}");
    assert!(err.contains("schema version 99"), "{err}");
    assert!(err.contains("newer"), "{err}");

    // A negative schema version in our file: not ours to touch; version 0
    // (an empty file of ours) is simply migrated.
    let negative = dir.path().join("negative.db");
    Store::open(&negative).unwrap().close().unwrap();
    rusqlite::Connection::open(&negative)
        .unwrap()
        .pragma_update(None, "user_version", -1)
        .unwrap();
    let err = Store::open(&negative).unwrap_err().to_string();
    assert!(err.contains("schema version -1 is invalid"), "{err}");
    let zero = dir.path().join("zero.db");
    rusqlite::Connection::open(&zero)
        .unwrap()
        .pragma_update(None, "application_id", 0x5359_4E43)
        .unwrap();
    Store::open(&zero).unwrap().registrations().unwrap();

    // A damaged value is an error naming the file, not a panic.
    let damaged = dir.path().join("damaged.db");
    let store = Store::open(&damaged).unwrap();
    store
        .append_log(&entry("s1", "mail", LogLevel::Error, None))
        .unwrap();
    rusqlite::Connection::open(&damaged)
        .unwrap()
        .execute("UPDATE log SET level = 'catastrophic'", [])
        .unwrap();
    let err = store.log(&LogFilter::default()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&*damaged.to_string_lossy()),
        "{err}"
    );
    assert!(
        err.chain_to_string().contains("catastrophic"),
        "{}",
        err.chain_to_string()
    );

    // Reopening an existing database of ours is fine.
    drop(store);
    Store::open(&damaged).unwrap();

    // A damaged page (a disk error, a bad copy): Corrupt, naming the file.
    let broken = dir.path().join("broken.db");
    let store = Store::open(&broken).unwrap();
    for _ in 0..200 {
        store
            .append_log(&entry("s1", "mail", LogLevel::Error, Some("e")))
            .unwrap();
    }
    store.close().unwrap();
    let mut bytes = std::fs::read(&broken).unwrap();
    let page = 4096;
    assert!(bytes.len() > 4 * page, "{} bytes", bytes.len());
    // Every page after the schema's: their b-tree headers become garbage.
    for start in (page..bytes.len()).step_by(page) {
        bytes[start..start + 64].fill(0xa5);
    }
    std::fs::write(&broken, &bytes).unwrap();
    let err = match Store::open(&broken) {
        Err(e) => e,
        Ok(store) => store.log(&LogFilter::default()).unwrap_err(),
    };
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&*broken.to_string_lossy()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_commits_concurrent_appends_durably() {
    let (_dir, path) = db();
    let store = Store::open(&path).unwrap();
    store.register(&process("mail")).unwrap();
    store
        .begin_session(&SessionRecord::running("s1", SyncEvent::Manual, at(0), 1))
        .unwrap();
    let writer = store.spawn_writer().unwrap();

    let mut tasks = Vec::new();
    for t in 0..8 {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..25 {
                let mut e = entry("s1", "mail", LogLevel::Warning, None);
                e.text = format!("task {t} entry {i}");
                // Through the Journal trait, as the engine calls it.
                ids.push(Journal::append(&writer, e).await.unwrap());
            }
            ids
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    acknowledged.sort();

    // A failing write does not spoil the others of its group.
    let enumeration = ItemEnumeration {
        items: vec![item("inbox", false)],
        complete: true,
    };
    let (bad, good) = tokio::join!(
        writer.apply_enumeration("nobody", enumeration.clone()),
        writer.apply_enumeration("mail", enumeration),
    );
    assert!(
        matches!(bad, Err(StoreError::UnknownHandler { .. })),
        "{bad:?}"
    );
    good.unwrap();
    let results = vec![ItemResult {
        handler: "mail".into(),
        item: "inbox".into(),
        status: ItemStatus::Succeeded,
    }];
    writer
        .finish_session(
            "s1",
            SessionOutcome::Succeeded,
            StatusCounts::of(&results),
            at(9),
            results,
        )
        .await
        .unwrap();

    // Acknowledged means committed: a second connection sees it all while the
    // writer still runs.
    let reader = Store::open(&path).unwrap();
    let mut seen: Vec<i64> = reader
        .log(&LogFilter::default())
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    seen.sort();
    assert_eq!(seen, acknowledged);
    assert_eq!(seen.len(), 200);
    assert_eq!(
        reader.known_items("mail").unwrap()[0].last_update,
        Some(at(9))
    );

    // Every other write of the writer, each checked against the file.
    writer
        .begin_session(SessionRecord::running("s2", SyncEvent::Idle, at(20), 1))
        .await
        .unwrap();
    assert_eq!(
        reader.session("s2").unwrap().map(|s| s.trigger),
        Some(SyncEvent::Idle)
    );
    assert_eq!(reader.session("nope").unwrap(), None);
    let batch = writer
        .append_logs(vec![
            entry("s2", "mail", LogLevel::Warning, Some("w1")),
            entry("s2", "mail", LogLevel::Warning, Some("w2")),
        ])
        .await
        .unwrap();
    assert_eq!(batch.len(), 2);
    assert!(
        batch[0] > acknowledged[199] && batch[1] == batch[0] + 1,
        "{batch:?}"
    );
    let through_journal = Journal::append_batch(
        &writer,
        vec![entry("s2", "mail", LogLevel::Information, None)],
    )
    .await
    .unwrap();
    assert_eq!(through_journal, [batch[1] + 1]);
    assert_eq!(
        writer
            .delete_log_for("s2", "mail", Some("w1"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        writer
            .delete_log_for("s2", "mail", Some("w1"))
            .await
            .unwrap(),
        0
    );
    // Through the Journal trait, as the engine's deleteLogError calls it.
    let extra = writer
        .append_log(entry("s2", "mail", LogLevel::Warning, Some("w3")))
        .await
        .unwrap();
    assert_eq!(
        Journal::delete(&writer, "s2", "mail", Some("w3"))
            .await
            .unwrap(),
        1
    );
    assert!(reader.log_entry(extra).unwrap().is_none());
    assert!(writer.delete_log(batch[1]).await.unwrap());
    assert!(!writer.delete_log(batch[1]).await.unwrap());
    assert!(reader.log_entry(batch[0]).unwrap().is_none());
    assert!(
        writer
            .set_last_update("mail", "inbox", at(30))
            .await
            .unwrap()
    );
    assert!(
        !writer
            .set_last_update("nobody", "inbox", at(30))
            .await
            .unwrap()
    );
    assert_eq!(
        reader.known_items("mail").unwrap()[0].last_update,
        Some(at(30))
    );

    writer.close().await.unwrap();
    writer.close().await.unwrap();
    let after = writer
        .append_log(entry("s1", "mail", LogLevel::Error, None))
        .await;
    assert!(matches!(after, Err(StoreError::WriterClosed)), "{after:?}");
    assert_eq!(
        reader.sessions(None).unwrap()[0].outcome,
        Some(SessionOutcome::Succeeded)
    );
}

/// Several processes (here: threads with their own connections) opening a
/// database that does not exist yet, at the same moment, all get it: one
/// creates and migrates it, the others wait for its lock or find its work
/// done.
#[test]
fn first_opens_at_the_same_moment_all_succeed() {
    for round in 0..5 {
        let (_dir, path) = db();
        let start = std::sync::Arc::new(std::sync::Barrier::new(6));
        let openers: Vec<_> = (0..6)
            .map(|_| {
                let (path, start) = (path.clone(), std::sync::Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    Store::open(&path).map(|store| store.registrations().map(|r| r.len()))
                })
            })
            .collect();
        for opener in openers {
            let opened = opener.join().expect("no panic");
            assert!(matches!(opened, Ok(Ok(0))), "round {round}: {opened:?}");
        }
    }
}

/// Switching a new file to WAL needs a moment with nobody else in it;
/// SQLite answers "busy" at once (its busy timeout does not apply), so the
/// store retries for as long as its busy timeout instead of failing.
#[test]
fn an_open_waits_for_another_reader_to_let_go() {
    let (_dir, path) = db();
    // Our file, not yet in WAL mode, with another connection reading it.
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .pragma_update(None, "application_id", 0x5359_4E43)
        .unwrap();
    other
        .execute_batch("CREATE TABLE t (x); BEGIN; SELECT * FROM t;")
        .unwrap();
    let opener = std::thread::spawn({
        let path = path.clone();
        move || Store::open(&path).map(|store| store.path().to_owned())
    });
    // Let the opener meet the reader (if it comes later, it simply opens).
    std::thread::sleep(Duration::from_millis(300));
    other.execute_batch("COMMIT;").unwrap();
    drop(other);
    let opened = opener.join().expect("no panic");
    assert!(opened.is_ok(), "{opened:?}");
}

fn conflict(handler: &str, item: &str, id: &str, text: &str, session: &str) -> NewConflict {
    NewConflict {
        handler: handler.into(),
        session: session.into(),
        detected: at(10),
        report: ConflictReport {
            item: item.into(),
            conflict_id: id.into(),
            text: text.into(),
            versions: vec![
                ConflictVersion {
                    label: "laptop".into(),
                    size: Some(3),
                    modified: Some(at(1)),
                    detail: Some("modified".into()),
                },
                ConflictVersion {
                    label: "nas".into(),
                    size: None,
                    modified: None,
                    detail: None,
                },
            ],
        },
    }
}

/// The conflict store: a conflict reported again keeps its id and first
/// detection and loses an old refusal; ids are per handler and item;
/// removal and refusal reach exactly one; an unregistered handler's go.
#[tokio::test]
async fn conflicts_are_kept_once_and_go_with_their_handler() {
    let (_dir, path) = db();
    let store = Store::open(&path).unwrap();
    for name in ["docs", "mail"] {
        store.register(&process(name)).unwrap();
    }
    let first = store
        .record_conflict(&conflict("docs", "a", "c1", "first", "s1"))
        .unwrap();
    let other_item = store
        .record_conflict(&conflict("docs", "b", "c1", "b's", "s1"))
        .unwrap();
    let other_handler = store
        .record_conflict(&conflict("mail", "a", "c1", "mail's", "s1"))
        .unwrap();
    assert_eq!(
        [first, other_item, other_handler]
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        3
    );
    assert!(store.refuse_conflict("docs", "a", "c1", "stale").unwrap());
    assert!(!store.refuse_conflict("docs", "a", "nope", "stale").unwrap());
    assert_eq!(
        store.conflict(first).unwrap().unwrap().reason.as_deref(),
        Some("stale")
    );
    // Reported again: same id, first detection kept, new text, reason gone.
    let mut again = conflict("docs", "a", "c1", "second", "s2");
    again.detected = at(99);
    assert_eq!(store.record_conflict(&again).unwrap(), first);
    let record = store.conflict(first).unwrap().unwrap();
    assert_eq!(record.report.text, "second");
    assert_eq!(record.session, "s2");
    assert_eq!(record.detected, at(10));
    assert_eq!(record.reason, None);
    assert_eq!(
        record.report.versions,
        conflict("docs", "a", "c1", "", "").report.versions
    );

    let docs: Vec<i64> = store
        .conflicts(Some("docs"))
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(docs, [first, other_item]);
    assert_eq!(store.conflicts(None).unwrap().len(), 3);

    // Through the writer, as the engine does (the `Journal`).
    let writer = Store::open(&path).unwrap().spawn_writer().unwrap();
    assert!(writer.remove_conflict("docs", "b", "c1").await.unwrap());
    assert!(!writer.remove_conflict("docs", "b", "c1").await.unwrap());
    let journaled = Journal::record_conflict(&writer, conflict("docs", "z", "c9", "z", "s3"))
        .await
        .unwrap();
    writer.close().await.unwrap();
    assert!(store.conflict(journaled).unwrap().is_some());
    assert!(store.conflict(other_item).unwrap().is_none());

    store.unregister("docs").unwrap();
    let left: Vec<String> = store
        .conflicts(None)
        .unwrap()
        .into_iter()
        .map(|c| c.handler)
        .collect();
    assert_eq!(left, ["mail"]);
}

/// Versions that do not decode are a damaged database, named, not a panic.
#[test]
fn damaged_conflict_versions_are_an_error() {
    let (_dir, path) = db();
    let store = Store::open(&path).unwrap();
    store.register(&process("docs")).unwrap();
    let id = store
        .record_conflict(&conflict("docs", "a", "c1", "t", "s"))
        .unwrap();
    drop(store);
    for bad in [
        "not json",
        "{}",
        "[{\"size\": 1}]",
        "[{\"label\": \"x\", \"modified\": 1e300}]",
    ] {
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute("UPDATE conflicts SET versions = ?1", [bad])
            .unwrap();
        let store = Store::open(&path).unwrap();
        let err = store.conflict(id).unwrap_err();
        assert!(
            err.to_string().contains(&*path.to_string_lossy()),
            "{bad}: {err}"
        );
    }
}
