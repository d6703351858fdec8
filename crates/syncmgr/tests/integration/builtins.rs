//! The built-in handlers through the command line: `register --folder`,
//! `register --command` / `--command-file`, their usage errors, and
//! `syncmgr demo` (the README's main job). The handlers' own behaviour (tree
//! comparisons, guards, parsers, cancel escalation) is tested in
//! `crates/syncmgr-handlers/tests/`.

use std::fs;

use crate::util::TestHome;

#[test]
fn a_folder_registration_mirrors_through_sync_and_refuses_nesting() {
    let home = TestHome::new();
    let src = home.path().join("src");
    let dst = home.path().join("dst");
    fs::create_dir_all(src.join("sub dir")).unwrap();
    fs::write(src.join("sub dir/naïve file.txt"), b"hello").unwrap();
    let (src_text, dst_text) = (src.to_str().unwrap(), dst.to_str().unwrap());

    home.ok(&[
        "register", "files", "--folder", src_text, dst_text, "--delete",
    ]);
    let handlers = home.json(&["handlers", "--json"]);
    assert_eq!(handlers[0]["kind"], "folder", "{handlers}");
    assert_eq!(handlers[0]["config"]["delete"], true, "{handlers}");

    let run = home.sync(&[]);
    assert_eq!(run.outcome(), "succeeded");
    assert_eq!(
        fs::read(dst.join("sub dir/naïve file.txt")).unwrap(),
        b"hello"
    );

    // Deleting most of the source trips the mass-delete guard: an
    // actionable entry, and the target is left alone.
    fs::write(src.join("a"), b"1").unwrap();
    fs::write(src.join("b"), b"2").unwrap();
    fs::write(src.join("c"), b"3").unwrap();
    assert_eq!(home.sync(&[]).outcome(), "succeeded");
    for f in ["a", "b", "c"] {
        fs::remove_file(src.join(f)).unwrap();
    }
    let refused = home.sync(&[]);
    assert_eq!(refused.outcome(), "failed");
    assert!(
        dst.join("a").exists(),
        "the guard must leave the target alone"
    );
    let entry = home
        .log(&["--level", "error"])
        .into_iter()
        .find(|e| {
            e["actionable"] == true
                && e["errorId"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("guard-"))
        })
        .expect("an actionable guard entry");
    // Acting on it shows the entry and what the retry deletes; with no
    // terminal to ask on, it goes ahead only with --yes (issue 8, point 3).
    let id = entry["id"].to_string();
    let asked = home.run(&["log", "show", &id]);
    asked
        .assert_code(1)
        .assert_stdout_contains("refused to mirror")
        .assert_stderr_contains("deletes 3 files of the 4")
        .assert_stderr_contains("--yes");
    assert!(dst.join("a").exists(), "not confirmed: nothing deleted");
    home.ok(&["log", "show", &id, "--yes"]);
    assert!(!dst.join("a").exists(), "the confirmed retry deletes");
    // A confirmation counts once: the entry is used up.
    home.run(&["log", "show", &id, "--yes"])
        .assert_code(2)
        .assert_stderr_contains("no log entry");

    // Nested source and target are refused at registration.
    let nested = src.join("inner");
    let out = home.run(&[
        "register",
        "loop",
        "--folder",
        src_text,
        nested.to_str().unwrap(),
    ]);
    out.assert_code(2).assert_stderr_contains("inside");
}

#[test]
fn a_command_registration_runs_each_item_and_reports_its_exit() {
    let home = TestHome::new();
    home.ok(&[
        "register",
        "tools",
        "--command",
        "count=sh -c 'for i in 25 50 75 100; do echo $i%; done'",
        "--command",
        "broken=sh -c 'echo out of disk >&2; exit 4'",
        "--parser",
        "count=percent",
    ]);
    let run = home.sync(&[]);
    let statuses = run.statuses();
    assert_eq!(statuses["tools/count"], "succeeded", "{statuses:?}");
    assert_eq!(statuses["tools/broken"], "failed", "{statuses:?}");
    let last = run
        .item_events("tools", "count")
        .last()
        .copied()
        .cloned()
        .unwrap();
    assert_eq!(
        (last["value"].as_u64(), last["max"].as_u64()),
        (Some(100), Some(100))
    );
    let log = home.log(&["--handler", "tools"]);
    assert!(
        log.iter().any(|e| e["item"] == "broken"
            && e["level"] == "error"
            && e["text"]
                .as_str()
                .is_some_and(|t| t.contains("exit status 4") && t.contains("out of disk"))),
        "{log:#?}"
    );

    // The TOML form, and its errors naming the problem.
    let file = home.path().join("tools.toml");
    fs::write(
        &file,
        "[[item]]\nid = \"echo\"\nargv = [\"echo\", \"hi\"]\n",
    )
    .unwrap();
    home.ok(&[
        "register",
        "fromfile",
        "--command-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(home.sync(&["fromfile"]).outcome(), "succeeded");
    fs::write(
        &file,
        "[[item]]\nid = \"echo\"\nargv = [\"echo\"]\ncolour = 1\n",
    )
    .unwrap();
    home.run(&["register", "bad", "--command-file", file.to_str().unwrap()])
        .assert_code(2)
        .assert_stderr_contains("colour");
    // An unquoted shell operator is refused, not run through a shell.
    home.run(&["register", "pipe", "--command", "x=ls | wc"])
        .assert_code(2);
    // One kind of handler per registration.
    home.run(&["register", "both", "--command", "x=true", "--", "/bin/true"])
        .assert_code(2)
        .assert_stderr_contains("one kind of handler");
}

#[test]
fn the_demo_runs_a_real_session_on_built_in_handlers() {
    let home = TestHome::new();
    let run = home.cmd(["demo", "--json"]).run_json_lines();
    assert_eq!(run.outcome(), "succeeded");
    let statuses = run.statuses();
    assert_eq!(statuses.len(), 5, "{statuses:?}");
    assert!(statuses.values().all(|s| s == "succeeded"), "{statuses:?}");
    // Running it again is a no-change sync that still succeeds.
    let again = home.cmd(["demo", "--json"]).run_json_lines();
    assert_eq!(again.outcome(), "succeeded");
}
