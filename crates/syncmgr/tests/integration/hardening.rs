//! What a new user's trial broke (issue 8), through the binary: overlapping
//! registrations, two sessions of one registration, a closed terminal and
//! SIGTERM, items that do not exist, a stdout nobody reads, names that hold
//! escape sequences.

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{
    PATIENCE, TestHome, entries_containing, process_running, syncmgr_bin, wait_until,
};

const SLOW: &[&str] = &["--steps", "50", "--step-ms", "40"];

fn text(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Point 2: a target may not be, contain or lie inside another
/// registration's target or source.
#[test]
fn registrations_with_overlapping_folders_are_refused() {
    let home = TestHome::new();
    let root = home.path();
    let (a, t) = (root.join("a"), root.join("t"));
    fs::create_dir_all(&a).unwrap();
    home.ok(&["register", "first", "--folder", text(&a), text(&t)]);
    // Registering it again (an update) does not clash with itself.
    home.ok(&[
        "register",
        "first",
        "--folder",
        text(&a),
        text(&t),
        "--delete",
    ]);
    fs::create_dir_all(&t).unwrap();
    std::os::unix::fs::symlink(&t, root.join("link")).unwrap();

    for (src, dst) in [
        (root.join("b"), t.join("sub")),
        (root.join("b"), t.clone()),
        // Through a link to the other's target.
        (root.join("b"), root.join("link/sub")),
        (root.join("b"), a.join("inside")),
        (t.join("in"), root.join("elsewhere")),
    ] {
        home.run(&["register", "second", "--folder", text(&src), text(&dst)])
            .assert_code(2)
            .assert_stderr_contains("handler first");
    }
    // Sharing a source is fine: it is only read.
    home.ok(&[
        "register",
        "second",
        "--folder",
        text(&a),
        text(&root.join("u")),
    ]);
    let handlers = home.json(&["handlers", "--json"]);
    assert_eq!(handlers.as_array().map(Vec::len), Some(2), "{handlers}");
}

/// Point 4: one session at a time per registration, by a lock a killed
/// manager cannot leave behind.
#[test]
fn a_registration_runs_in_one_session_at_a_time() {
    // Inline: through a daemon the second request queues instead
    // (`daemon::a_storm_of_requests_gives_one_session_and_one_queued`).
    let home = TestHome::inline();
    home.register("slow", SLOW);
    let mut bg = home.spawn_sync(&[]);
    bg.wait_for_item("slow", "a", "updating");

    let second = home.sync(&["slow"]);
    second.assert_code(1);
    assert_eq!(second.outcome(), "failed");
    second.assert_log("slow", "error", "already syncing in another session");
    assert!(second.statuses().is_empty(), "{}", second.report());

    let first = bg.finish(PATIENCE);
    first.assert_code(0);
    assert_eq!(first.outcome(), "succeeded");
    // Released with the session.
    assert_eq!(home.sync(&["slow"]).outcome(), "succeeded");

    // A manager killed mid-session leaves no lock behind.
    let mut bg = home.spawn_sync(&[]);
    bg.wait_for_item("slow", "a", "updating");
    bg.signal(syncmgr_sys::Signal::Kill);
    bg.finish_raw(PATIENCE);
    let after = home.sync(&["slow"]);
    assert_eq!(after.outcome(), "succeeded", "{}", after.report());
}

/// Point 8: a closed terminal (SIGHUP) and SIGTERM end the session as
/// cleanly as Ctrl-C, with 128 + the signal's number, and leave no process
/// behind: neither handler processes nor the commands of command items.
#[test]
fn hangup_and_terminate_cancel_everything_like_ctrl_c() {
    for (signal, code) in [
        (syncmgr_sys::Signal::Hangup, 129),
        (syncmgr_sys::Signal::Terminate, 143),
    ] {
        let home = TestHome::new();
        home.register("slow", SLOW);
        home.ok(&["register", "cmd", "--command", "nap=sleep 300"]);
        let mut bg = home.spawn_sync(&["--grace", "2s"]);
        bg.wait_for_item("cmd", "nap", "updatingIndeterminate");
        bg.wait_for_item("slow", "a", "updating");
        let children = bg.handler_pids();
        let sleepers: Vec<u32> = children
            .iter()
            .copied()
            .filter(|&pid| {
                fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
            })
            .collect();
        assert_eq!(sleepers.len(), 1, "the command item runs: {children:?}");

        bg.signal(signal);
        let run = bg.finish(PATIENCE);
        run.assert_code(code);
        assert_eq!(run.outcome(), "cancelled", "{signal:?}");
        assert_eq!(run.statuses()["slow/a"], "stopped", "{signal:?}");
        assert_eq!(run.statuses()["cmd/nap"], "stopped", "{signal:?}");
        assert!(
            wait_until(Duration::from_secs(5), || children
                .iter()
                .all(|&pid| !process_running(pid))),
            "{signal:?}: still running: {children:?}"
        );
        let history = home.history();
        assert_eq!(history[0]["outcome"], "cancelled", "{signal:?}");
    }
}

/// Point 9: items the handler never listed are errors (exit 2) for
/// `cancel` and `choose`; `cancel` does not hang on a session that does not
/// answer.
#[test]
fn unknown_items_are_errors_and_cancel_never_hangs() {
    // Inline: the test stops the process that runs the session.
    let home = TestHome::inline();
    home.register("slow", SLOW);
    // Never synced yet: `choose` asks the handler for its items.
    home.run(&["choose", "slow", "nope", "--check"])
        .assert_code(2)
        .assert_stderr_contains("has no item \"nope\" (its items: a, b");
    home.ok(&["choose", "slow", "b", "--uncheck"]);

    let mut bg = home.spawn_sync(&[]);
    bg.wait_for_item("slow", "a", "updating");
    home.run(&["cancel", "slow/nope"])
        .assert_code(2)
        .assert_stderr_contains("no such item");

    // A stopped manager accepts connections but never answers.
    let manager = bg.pid().to_string();
    let kill = |signal: &str| {
        let status = Command::new("kill")
            .args([signal, &manager])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {manager}");
    };
    kill("-STOP");
    let stuck = home.run(&["cancel", "slow/a"]);
    kill("-CONT");
    stuck
        .assert_code(1)
        .assert_stderr_contains("did not answer the cancel in time");
    // The request was delivered: the session acts on it once it runs again.
    let run = bg.finish(PATIENCE);
    assert_eq!(run.statuses()["slow/a"], "stopped");
}

/// Point 12: a stdout nobody reads (a pager left open, Ctrl-S) stalls the
/// display only. The session runs to its end meanwhile, its handler (which
/// logs an entry per item, waiting for each answer) is never found silent,
/// and once stdout is read again everything arrives and the exit code is
/// right.
#[test]
fn a_stalled_stdout_does_not_stall_the_session() {
    let home = TestHome::new();
    let items: Vec<String> = (0..1500).map(|i| format!("item{i:04}")).collect();
    let list = items.join(",");
    home.register_with(
        "chatty",
        &["--timeout", "1"],
        &["--items", &list, "--fail", &list, "--steps", "1"],
    );
    let mut child = Command::new(syncmgr_bin())
        .args(["sync"])
        .env("SYNCMGR_HOME", home.path())
        .env_remove("SYNCMGR_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("syncmgr starts");
    // Nobody reads stdout: the pipe (64 KiB) fills after a few hundred
    // lines. The session must still finish, as the store shows.
    let finished = wait_until(PATIENCE * 4, || {
        home.history()
            .first()
            .is_some_and(|s| s["outcome"].is_string())
    });
    let mut stdout = child.stdout.take().expect("piped");
    let mut shown = String::new();
    stdout.read_to_string(&mut shown).expect("read stdout");
    let status = child.wait().expect("wait");
    assert!(finished, "the session did not end while stdout was stalled");
    assert_eq!(status.code(), Some(1), "every item fails by design");
    let history = home.history();
    assert_eq!(history[0]["counts"]["failed"], 1500, "{}", history[0]);
    let entries = home.log(&["--handler", "chatty"]);
    assert!(
        entries_containing(&entries, "not responding").is_empty(),
        "the handler was declared silent"
    );
    // What was shown ends with the summary, nothing lost at the end.
    assert!(
        shown.trim_end().ends_with("0 stopped"),
        "{}",
        &shown[shown.len().saturating_sub(500)..]
    );
}

/// Point 13: file names and handler texts cannot move the cursor or forge
/// lines, and names that are not UTF-8 stay distinguishable in the log.
#[test]
fn names_from_the_file_system_are_shown_safely() {
    let home = TestHome::new();
    let (src, dst) = (home.path().join("src"), home.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    // FIFOs are never mirrored: each becomes an error entry naming it. One
    // name holds an escape sequence and a forged line; two differ only in a
    // byte that is not UTF-8.
    let forged = b"x\x1b[2J\nsession 0 succeeded: 9 succeeded, 0 failed\n".to_vec();
    for bytes in [forged, b"fifo\xff".to_vec(), b"fifo\xfe".to_vec()] {
        let name = std::ffi::OsStr::from_bytes(&bytes);
        let made = Command::new("mkfifo")
            .arg(src.join(name))
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
    }
    home.ok(&["register", "files", "--folder", text(&src), text(&dst)]);
    let out = home.run(&["sync"]);
    out.assert_code(1);
    for shown in [&out.stdout, &home.ok(&["log"]).stdout] {
        assert!(
            !shown.contains('\x1b'),
            "an escape reached the output:\n{shown}"
        );
        assert!(
            !shown.lines().any(|l| l.starts_with("session 0 succeeded")),
            "a forged line:\n{shown}"
        );
        assert!(shown.contains("x\\x1b[2J\\nsession 0"), "{shown}");
    }
    // The live view on a terminal (a pseudo-terminal from util-linux
    // `script`) escapes them too: its own cursor movements are the only
    // control sequences on the screen.
    let (code, screen) = sync_on_a_terminal(&home);
    assert_eq!(code, Some(1));
    assert!(screen.contains("overall ["), "not the live view:\n{screen}");
    assert!(
        !screen.contains("\x1b[2J"),
        "a name cleared the screen:\n{screen}"
    );
    assert!(screen.contains("x\\x1b[2J\\nsession 0"), "{screen}");
    let entries = home.log(&["--level", "error"]);
    for escaped in ["fifo\\xff:", "fifo\\xfe:"] {
        assert!(
            !entries_containing(&entries, escaped).is_empty(),
            "{escaped}: {entries:#?}"
        );
    }
    assert!(entries_containing(&entries, "\u{fffd}").is_empty());
}

/// Point 11: on a terminal the view keeps moving while handlers are quiet:
/// the elapsed time is redrawn although no event comes for three seconds.
#[test]
fn the_live_view_ticks_while_handlers_are_quiet() {
    let home = TestHome::new();
    // One step of three seconds: `updating`, then nothing until the end.
    home.register(
        "quiet",
        &["--items", "a", "--steps", "1", "--step-ms", "3000"],
    );
    let (code, screen) = sync_on_a_terminal(&home);
    assert_eq!(code, Some(0));
    for clock in ["00:00:01", "00:00:02"] {
        assert!(
            screen.contains(&format!("items  {clock}")),
            "the overall line never showed {clock}:\n{screen}"
        );
    }
}

/// `syncmgr sync` on a terminal (a pseudo-terminal from util-linux
/// `script`): its exit code and everything it drew.
fn sync_on_a_terminal(home: &TestHome) -> (Option<i32>, String) {
    let typescript = home.path().join("typescript");
    let status = Command::new("script")
        .args(["-qefc", &format!("{} sync", syncmgr_bin().display())])
        .arg(&typescript)
        .env("SYNCMGR_HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("script runs");
    let screen = String::from_utf8_lossy(&fs::read(&typescript).unwrap()).into_owned();
    (status.code(), screen)
}
