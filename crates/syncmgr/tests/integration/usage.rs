//! Bad usage and bad input: exit code 2, a message on stderr that says what
//! is wrong, nothing on stdout, and nothing changed.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::util::{Cmd, Outcome, TestHome, test_handler};

/// Asserts exit 2, `needle` in stderr, and an empty stdout.
#[track_caller]
fn usage_error(out: Outcome, needle: &str) {
    out.assert_code(2).assert_stderr_contains(needle);
    if !out.stdout.is_empty() {
        out.fail("a usage error printed on stdout");
    }
}

#[test]
fn bad_names_events_and_arguments_exit_2() {
    let home = TestHome::new();
    let handler = test_handler().to_str().unwrap();

    // Nothing registered yet: a plain sync has nothing to do.
    usage_error(home.run(&["sync"]), "no handlers registered");

    usage_error(
        home.run(&["register", "Bad_Name", "--", handler]),
        "invalid handler name \"Bad_Name\"",
    );
    usage_error(
        home.run(&["register", ".dot", "--", handler]),
        "invalid handler name",
    );
    usage_error(
        home.run(&["register", &"x".repeat(65), "--", handler]),
        "invalid handler name",
    );
    usage_error(
        home.run(&["register", "nothing"]),
        "register needs a handler",
    );
    usage_error(
        home.run(&["register", "man", "--events", "manual", "--", handler]),
        "--events takes connect, pendingDisconnect and idle",
    );
    usage_error(
        home.run(&["register", "odd", "--events", "idle,bogus", "--", handler]),
        "unknown event \"bogus\"",
    );
    // A silence timeout under a second is refused, in any spelling (issue 8,
    // point 6: 0.0001 used to be stored as 0).
    for short in ["0", "0.0001", "500ms", "0.9"] {
        usage_error(
            home.run(&["register", "slowpoke", "--timeout", short, "--", handler]),
            "--timeout must be at least 1s",
        );
    }
    usage_error(
        home.run(&["register", "slowpoke", "--timeout", "soon", "--", handler]),
        "invalid duration",
    );
    usage_error(
        home.run(&["register", "ghost", "--", "/no/such/dir/handler"]),
        "/no/such/dir/handler",
    );
    // None of those registered anything.
    assert_eq!(home.json(&["handlers", "--json"]), json!([]));

    home.register("real", &[]);
    // A name 64 characters long is fine.
    home.register(&"x".repeat(64), &[]);

    usage_error(home.run(&["sync", "nosuch"]), "unknown handler \"nosuch\"");
    usage_error(
        home.run(&["sync", "real", "nosuch/a"]),
        "unknown handler \"nosuch\"",
    );
    usage_error(home.run(&["sync", "real/"]), "empty item");
    usage_error(
        home.run(&["unregister", "nosuch"]),
        "unknown handler \"nosuch\"",
    );
    usage_error(
        home.run(&["choose", "nosuch", "a", "--check"]),
        "unknown handler \"nosuch\"",
    );
    usage_error(home.run(&["items", "nosuch"]), "unknown handler \"nosuch\"");
    usage_error(
        home.run(&["choose", "real", &"i".repeat(65), "--check"]),
        "invalid item",
    );
    usage_error(
        home.run(&["sync", "--event", "bogus"]),
        "unknown event \"bogus\"",
    );
    usage_error(
        home.run(&["choose", "real", "a", "--check", "--event", "bogus"]),
        "unknown event \"bogus\"",
    );
    usage_error(
        home.run(&["items", "--event", "bogus"]),
        "unknown event \"bogus\"",
    );
    usage_error(home.run(&["sync", "--grace=-1"]), "--grace");
    usage_error(
        home.run(&["sync", "--max-concurrent", "0"]),
        "--max-concurrent",
    );
    // clap's own errors use the same exit code.
    usage_error(home.run(&["choose", "real", "a"]), "--check");
    usage_error(
        home.run(&["choose", "real", "a", "--check", "--uncheck"]),
        "cannot be used with",
    );
    usage_error(home.run(&["sync", "--no-such-flag"]), "--no-such-flag");
    usage_error(home.run(&["frobnicate"]), "frobnicate");

    // The failed commands ran no session and changed no choice.
    assert_eq!(home.history(), Vec::<serde_json::Value>::new());
    let items = home.json(&["items", "real", "--json"]);
    assert!(
        items
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row["checked"] == true),
        "{items}"
    );
}

#[test]
fn a_home_that_is_a_regular_file_is_a_usage_error() {
    let dir = TestHome::new();
    let file = dir.path().join("file");
    std::fs::write(&file, "not a directory").unwrap();

    // Through --home...
    let mut cmd = Cmd::new();
    cmd.arg("--home").arg(&file).args(["history", "--json"]);
    usage_error(cmd.run(), "is not a directory");
    // ...and through SYNCMGR_HOME.
    let mut cmd = Cmd::new();
    cmd.env("SYNCMGR_HOME", &file).args(["handlers"]);
    usage_error(cmd.run(), "is not a directory");
    // Nothing was written over it.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
}

#[test]
fn the_home_flag_and_the_environment_pick_the_same_state() {
    let home = TestHome::new();
    home.register("here", &[]);
    let mut cmd = Cmd::new();
    cmd.arg("--home")
        .arg(home.path())
        .args(["handlers", "--json"]);
    let out = cmd.run();
    out.assert_code(0);
    assert_eq!(out.json()[0]["name"], "here");
    // The home is private to the user.
    for dir in [home.path().to_path_buf(), home.path().join("run")] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", dir.display());
    }
}
