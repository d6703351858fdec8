//! The conflict store from the command line: a handler written in Python
//! with the SDK reports, withdraws and resolves conflicts; the two-way
//! folder handler's conflicts are decided one by one and all at once; bad
//! decisions are refused with the right exit code.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use std::time::{Duration, SystemTime};

use crate::check_handler::root;
use crate::util::TestHome;

/// A home with the Python notes handler registered on `dir`.
fn notes_home(dir: &Path) -> TestHome {
    let home = TestHome::new();
    let script = root().join("sdk/python/examples/notes.py");
    let mut register = home.cmd(["register", "notes", "--", "python3"]);
    register.arg(script).arg("--dir").arg(dir);
    register.run().assert_code(0);
    home
}

fn conflicts(home: &TestHome) -> Vec<Value> {
    home.json(&["conflicts", "--json"])
        .as_array()
        .expect("an array")
        .clone()
}

#[test]
fn a_python_handler_reports_withdraws_and_resolves_conflicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notes = dir.path().join("notes");
    let home = notes_home(&notes);
    fs::create_dir_all(&notes).unwrap();
    fs::write(notes.join("local.txt"), "base").unwrap();
    home.sync(&["notes"]).assert_code(0);
    assert_eq!(
        fs::read_to_string(notes.join("remote.txt")).unwrap(),
        "base"
    );

    // Both sides change: reported (durably, before the handler went on).
    fs::write(notes.join("local.txt"), "mine").unwrap();
    fs::write(notes.join("remote.txt"), "theirs").unwrap();
    let run = home.sync(&["notes"]);
    run.assert_code(0);
    let reported: Vec<&Value> = run
        .events()
        .iter()
        .filter(|e| e["event"] == "conflict")
        .collect();
    assert_eq!(reported.len(), 1, "{}", run.report());
    let open = conflicts(&home);
    assert_eq!(open.len(), 1);
    let id = open[0]["id"].as_i64().unwrap();
    assert_eq!(reported[0]["id"], id);
    assert_eq!(open[0]["conflictId"], "notes-text");
    assert_eq!(open[0]["versions"][1]["size"], 6);
    assert_eq!(open[0]["reason"], Value::Null);

    // Reported again at the next sync: the same conflict, the same id.
    home.sync(&["notes"]).assert_code(0);
    assert_eq!(conflicts(&home).len(), 1);
    assert_eq!(conflicts(&home)[0]["id"], id);

    // A stale decision is refused with the handler's reason; it stays.
    fs::write(notes.join("remote.txt"), "theirs, edited").unwrap();
    let id_text = id.to_string();
    let refused = home.run(&["conflicts", "resolve", &id_text, "--keep", "1", "--yes"]);
    refused.assert_code(1).assert_stdout_contains("stale");
    let open = conflicts(&home);
    assert_eq!(open.len(), 1);
    assert!(
        open[0]["reason"].as_str().unwrap().starts_with("stale"),
        "{open:?}"
    );
    assert_eq!(fs::read_to_string(notes.join("local.txt")).unwrap(), "mine");

    // Synced again (the conflict is current), then decided: version 1 wins
    // on both sides, and the conflict is gone.
    home.sync(&["notes"]).assert_code(0);
    assert_eq!(conflicts(&home)[0]["reason"], Value::Null);
    let applied = home
        .cmd([
            "conflicts",
            "resolve",
            &id_text,
            "--keep",
            "1",
            "--yes",
            "--json",
        ])
        .run_json_lines();
    applied.assert_code(0);
    assert!(
        applied
            .events()
            .iter()
            .any(|e| e["event"] == "conflictResolved")
    );
    assert!(conflicts(&home).is_empty());
    for side in ["local.txt", "remote.txt"] {
        assert_eq!(
            fs::read_to_string(notes.join(side)).unwrap(),
            "theirs, edited"
        );
    }

    // A conflict that the user settles by hand is withdrawn by the handler
    // (`conflictResolved`) at the next sync.
    fs::write(notes.join("local.txt"), "a").unwrap();
    fs::write(notes.join("remote.txt"), "b").unwrap();
    home.sync(&["notes"]).assert_code(0);
    assert_eq!(conflicts(&home).len(), 1);
    fs::write(notes.join("remote.txt"), "a").unwrap();
    let run = home.sync(&["notes"]);
    assert!(
        run.events()
            .iter()
            .any(|e| e["event"] == "conflictResolved"),
        "{}",
        run.report()
    );
    assert!(conflicts(&home).is_empty());
}

#[test]
fn bad_decisions_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notes = dir.path().join("notes");
    let home = notes_home(&notes);
    fs::create_dir_all(&notes).unwrap();
    fs::write(notes.join("local.txt"), "x").unwrap();
    fs::write(notes.join("remote.txt"), "y").unwrap();
    fs::write(notes.join("base.txt"), "z").unwrap();
    home.sync(&["notes"]).assert_code(0);
    let id = conflicts(&home)[0]["id"].as_i64().unwrap().to_string();
    home.run(&["conflicts", "show", "999"]).assert_code(2);
    home.run(&["conflicts", "--handler", "nobody"])
        .assert_code(2);
    home.run(&["conflicts", "resolve", &id, "--keep", "2", "--yes"])
        .assert_code(2)
        .assert_stderr_contains("versions 0 to 1");
    home.run(&["conflicts", "resolve", "999", "--keep", "0", "--yes"])
        .assert_code(2);
    home.run(&["conflicts", "resolve", &id, "--keep", "0", "--keep-all"])
        .assert_code(2);
    // No terminal, no --yes: nothing is decided.
    home.run(&["conflicts", "resolve", &id, "--keep", "0"])
        .assert_code(1)
        .assert_stderr_contains("--yes");
    assert_eq!(conflicts(&home).len(), 1);
    assert_eq!(fs::read_to_string(notes.join("local.txt")).unwrap(), "x");
    // Unregistering the handler takes its conflicts along (nobody else can
    // resolve them).
    home.ok(&["unregister", "notes"]);
    assert!(conflicts(&home).is_empty());
}

fn two_way_home(dir: &Path) -> (TestHome, PathBuf, PathBuf) {
    let home = TestHome::new();
    let (a, b) = (dir.join("laptop"), dir.join("nas"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    home.ok(&[
        "register",
        "docs",
        "--two-way",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    (home, a, b)
}

#[test]
fn two_way_conflicts_resolved_all_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (home, a, b) = two_way_home(dir.path());
    for name in ["one.txt", "two.txt", "three.txt"] {
        fs::write(a.join(name), "base").unwrap();
    }
    home.sync(&["docs"]).assert_code(0);
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    let new = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let set_mtime = |path: PathBuf, when: SystemTime| {
        fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(when))
            .unwrap();
    };
    for (name, newer) in [("one.txt", &b), ("two.txt", &a)] {
        fs::write(a.join(name), format!("{name} on the laptop")).unwrap();
        fs::write(b.join(name), format!("{name} on the nas")).unwrap();
        let older = if newer == &a { &b } else { &a };
        set_mtime(newer.join(name), new);
        set_mtime(older.join(name), old);
    }
    fs::write(a.join("three.txt"), "three on the laptop").unwrap();
    fs::write(b.join("three.txt"), "three on the nas!").unwrap();
    set_mtime(a.join("three.txt"), new);
    set_mtime(b.join("three.txt"), new);
    home.sync(&["docs"]).assert_code(0);
    assert_eq!(conflicts(&home).len(), 3);

    // The newer of each, where there is one; the tie stays open (exit 1).
    let run = home.run(&["conflicts", "resolve", "--all", "--keep-newer", "--yes"]);
    run.assert_code(1).assert_stderr_contains("left open");
    assert_eq!(
        fs::read_to_string(a.join("one.txt")).unwrap(),
        "one.txt on the nas"
    );
    assert_eq!(
        fs::read_to_string(b.join("two.txt")).unwrap(),
        "two.txt on the laptop"
    );
    let left = conflicts(&home);
    assert_eq!(left.len(), 1);
    assert!(left[0]["text"].as_str().unwrap().starts_with("three.txt"));

    // Keep all: the older name makes way, both reach both sides.
    home.run(&["conflicts", "resolve", "--all", "--keep-all", "--yes"])
        .assert_code(0);
    assert!(conflicts(&home).is_empty());
    let names = |root: &Path| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".syncmgr")
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&a), names(&b));
    assert!(
        names(&a)
            .iter()
            .any(|n| n.starts_with("three.sync-conflict-") && n.ends_with(".txt")),
        "{:?}",
        names(&a)
    );
    // Nothing was lost: every version is in place, aside or in a trash.
    let everything = |root: &Path| -> Vec<String> {
        walk(root)
            .iter()
            .filter_map(|p| fs::read_to_string(p).ok())
            .collect()
    };
    let all: Vec<String> = everything(&a).into_iter().chain(everything(&b)).collect();
    for version in [
        "one.txt on the laptop",
        "one.txt on the nas",
        "two.txt on the laptop",
        "two.txt on the nas",
        "three on the laptop",
        "three on the nas!",
    ] {
        assert!(all.iter().any(|c| c == version), "{version} lost");
    }
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn two_way_guards_and_overlaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (home, a, b) = two_way_home(dir.path());
    for n in 0..4 {
        fs::write(a.join(format!("f{n}")), "x").unwrap();
    }
    home.sync(&["docs"]).assert_code(0);
    for n in 1..4 {
        fs::remove_file(b.join(format!("f{n}"))).unwrap();
    }
    // More than half of the laptop's files would go: refused, actionable.
    let run = home.sync(&["docs"]);
    run.assert_code(1);
    let entry = run
        .logs_matching("docs", "error", "more than half")
        .into_iter()
        .next()
        .unwrap_or_else(|| run.fail("no guard entry"));
    assert_eq!(entry["actionable"], true);
    assert_eq!(walk(&a).len(), 4, "nothing moved");
    // Confirmed through the log entry: moved to the laptop's trash.
    let id = entry["id"].as_u64().unwrap().to_string();
    home.run(&["log", "show", &id, "--yes"]).assert_code(0);
    let kept: Vec<PathBuf> = walk(&a);
    assert_eq!(kept.len(), 4, "in place or in the trash: {kept:?}");
    assert!(a.join("f0").exists() && !a.join("f1").exists());
    assert!(kept.iter().any(|p| p.starts_with(a.join(".syncmgr/trash"))));

    // A pair that overlaps another registration's folder is refused.
    let inside = a.join("sub");
    fs::create_dir(&inside).unwrap();
    home.run(&[
        "register",
        "other",
        "--two-way",
        inside.to_str().unwrap(),
        dir.path().join("elsewhere").to_str().unwrap(),
    ])
    .assert_code(2)
    .assert_stderr_contains("overlaps");
    home.run(&[
        "register",
        "mirror",
        "--folder",
        dir.path().join("src").to_str().unwrap(),
        b.to_str().unwrap(),
    ])
    .assert_code(2);
}
