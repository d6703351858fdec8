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

/// Issue 8, point 14: an existing home is never chmod-ed; one that others
/// can read is refused with the reason and the fix.
#[test]
fn a_home_others_can_read_is_refused_and_left_as_it_was() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestHome::new();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Cmd::new();
    cmd.arg("--home").arg(&shared).arg("handlers");
    let out = cmd.run();
    usage_error(out, "can be read by other users (mode 0755)");
    let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "the home's permissions were changed");
    assert!(!shared.join("syncmgr.db").exists());
}

/// Issue 8, point 14: a home that cannot be written says so (exit 1, not 2),
/// in one line without colour codes. Root may write anywhere, so as root
/// the command runs as `nobody` (util-linux `setpriv`).
#[test]
fn an_unwritable_home_names_the_cause_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("smro")
        .tempdir_in("/tmp")
        .unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let root = rustix_is_root();
    if root {
        // `nobody` must reach the directory and own the home.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    }
    let syncmgr = |args: &[&str]| {
        let mut cmd = if root {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(crate::util::syncmgr_bin());
            c
        } else {
            std::process::Command::new(crate::util::syncmgr_bin())
        };
        cmd.arg("--home")
            .arg(&home)
            .args(args)
            .env_remove("SYNCMGR_LOG");
        cmd.output().expect("syncmgr runs")
    };
    assert!(syncmgr(&["handlers"]).status.success());
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o500)).unwrap();
    let out = syncmgr(&["register", "x", "--", "/bin/true"]);
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not writable"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one error, once: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes on a pipe: {stderr}"
    );
}

fn rustix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
