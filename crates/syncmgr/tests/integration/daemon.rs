//! The daemon (issue 9): one per home, sessions run inside it and shown by
//! the command as if they ran inline, `--detach`, coalescing of requests,
//! `status`, `events`, a clean SIGTERM and a SIGKILL that blocks nothing.
//! (The rest of the suite runs through a daemon too with
//! `SYNCMGR_TEST_DAEMON=1`.)

use std::collections::BTreeMap;

use serde_json::Value;

use crate::util::{PATIENCE, TestHome, children_of, process_running, wait_until};

/// Long enough to still run while a test asks for more (each item 1000
/// steps of 40 ms); every test that uses it cancels it.
const HELD: &[&str] = &["--steps", "1000", "--step-ms", "40"];

/// What two runs of the same session must share: the start and the end,
/// every log entry (as a set: a handler's own entries and the ones the
/// manager writes for it come through different paths), and each item's
/// last state, with what differs from run to run (ids, times) taken out.
/// (Intermediate item states may be coalesced when a reader is slow,
/// wherever the session runs.)
fn comparable(events: &[Value]) -> (Vec<Value>, BTreeMap<String, Value>) {
    let mut others = Vec::new();
    let mut items = BTreeMap::new();
    for event in events {
        let mut event = event.clone();
        if let Some(fields) = event.as_object_mut() {
            for volatile in ["session", "id", "time"] {
                fields.remove(volatile);
            }
        }
        if event["event"] == "item" {
            let key = format!("{}/{}", event["handler"], event["item"]);
            items.insert(key, event);
        } else {
            others.push(event);
        }
    }
    others.sort_by_key(|event| {
        let rank = match event["event"].as_str() {
            Some("sessionStarted") => 0,
            Some("sessionFinished") => 2,
            _ => 1,
        };
        (rank, event.to_string())
    });
    (others, items)
}

fn sessions_in(status: &Value) -> Vec<(String, String)> {
    status["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().expect("id").to_owned(),
                s["state"].as_str().expect("state").to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_session_in_the_daemon_looks_like_one_run_inline() {
    let mut home = TestHome::inline();
    home.register("good", &["--items", "a,b,c", "--steps", "3"]);
    home.register("bad", &["--items", "x,y", "--fail", "y"]);
    let inline_ok = home.sync(&["good"]);
    let inline_bad = home.sync(&["bad"]);
    let inline_usage = home.run(&["sync", "nosuch"]);
    let inline_plain = home.run(&["sync", "good"]);

    home.start_daemon();
    let daemon_ok = home.sync(&["good"]);
    let daemon_bad = home.sync(&["bad"]);
    let daemon_usage = home.run(&["sync", "nosuch"]);
    let daemon_plain = home.run(&["sync", "good"]);

    daemon_ok.assert_code(0);
    daemon_bad.assert_code(1);
    assert_eq!(
        comparable(inline_ok.events()),
        comparable(daemon_ok.events())
    );
    assert_eq!(
        comparable(inline_bad.events()),
        comparable(daemon_bad.events())
    );
    daemon_usage.assert_code(2);
    assert_eq!(inline_usage.stderr, daemon_usage.stderr);
    daemon_plain.assert_code(0);
    let lines = |out: &str| -> Vec<String> {
        // Log entries (without their ids and times) and items' final
        // states, as a set (see `comparable`): the lines that carry a
        // session id, and intermediate states a slow reader may not get to
        // see, left out.
        let terminal = [": succeeded", ": failed", ": skipped", ": stopped"];
        let mut lines: Vec<String> = out
            .lines()
            .filter(|l| l.starts_with("log #") || terminal.iter().any(|t| l.contains(t)))
            .map(|l| match l.strip_prefix("log #") {
                Some(rest) => rest.splitn(4, ' ').nth(3).unwrap_or(rest).to_owned(),
                None => l.to_owned(),
            })
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(lines(&inline_plain.stdout), lines(&daemon_plain.stdout));

    // The daemon's sessions are in the history like any other.
    let history = home.history();
    assert_eq!(history.len(), 6, "{history:#?}");
    let newest = history.last().expect("sessions");
    let last = daemon_plain
        .stdout
        .split_whitespace()
        .nth(1)
        .expect("`session ID started`");
    assert_eq!(newest["id"], last);
}

#[test]
fn a_second_daemon_is_refused_naming_the_first() {
    let mut home = TestHome::inline();
    home.start_daemon();
    let pid = home.daemon_pid().expect("a daemon");
    home.run(&["daemon"])
        .assert_code(1)
        .assert_stderr_contains(&format!("a daemon already runs for this home (pid {pid})"));
    // The first one still serves.
    let status = home.json(&["status", "--json"]);
    assert_eq!(status["daemon"]["pid"], pid);
}

#[test]
fn detach_needs_a_daemon_and_returns_at_once() {
    let mut home = TestHome::inline();
    home.register("slow", HELD);
    home.run(&["sync", "--detach"])
        .assert_code(1)
        .assert_stderr_contains("no daemon runs for this home; start one with `syncmgr daemon`");

    home.start_daemon();
    let accepted = home.json(&["sync", "slow", "--detach", "--json"]);
    assert_eq!(accepted["queued"], true);
    let id = accepted["session"].as_str().expect("session id").to_owned();
    assert!(wait_until(PATIENCE, || {
        let status = home.json(&["status", "--json"]);
        status["sessions"][0]["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i["status"] == "updating"))
    }));
    let status = home.json(&["status", "--json"]);
    assert_eq!(sessions_in(&status), [(id.clone(), "running".to_owned())]);
    assert_eq!(status["registrations"][0]["name"], "slow");
    assert_eq!(status["registrations"][0]["state"], "running");

    // `cancel` reaches the daemon's session through its control socket.
    home.ok(&["cancel"]);
    assert!(wait_until(PATIENCE, || {
        sessions_in(&home.json(&["status", "--json"])).is_empty()
    }));
    let history = home.history();
    let newest = history.last().expect("sessions");
    assert_eq!(newest["id"], id.as_str());
    assert_eq!(newest["outcome"], "cancelled");
    let status = home.json(&["status", "--json"]);
    assert_eq!(status["registrations"][0]["state"], "idle");
    assert_eq!(status["registrations"][0]["lastSession"]["id"], id.as_str());
    assert_eq!(
        status["registrations"][0]["lastSession"]["outcome"],
        "cancelled"
    );
}

#[test]
fn a_storm_of_requests_gives_one_session_and_one_queued() {
    let mut home = TestHome::inline();
    home.register("slow", HELD);
    home.start_daemon();
    let first = home.json(&["sync", "slow", "--detach", "--json"]);
    // The storm: a hundred requests in a row.
    let mut queued = Vec::new();
    for _ in 0..100 {
        let accepted = home.json(&["sync", "slow/a", "--detach", "--json"]);
        queued.push(accepted["session"].as_str().expect("id").to_owned());
    }
    queued.dedup();
    assert_eq!(queued.len(), 1, "every request joined one queued session");
    assert_ne!(queued[0], first["session"].as_str().expect("id"));
    let status = home.json(&["status", "--json"]);
    let sessions = sessions_in(&status);
    assert_eq!(sessions.len(), 2, "{status:#}");
    assert_eq!(sessions[1], (queued[0].clone(), "queued".to_owned()));
    assert_eq!(
        status["sessions"][1]["targets"],
        serde_json::json!(["slow/a"])
    );

    // A whole handler asked for joins the same queued session and widens it.
    let joined = home.json(&["sync", "slow", "--detach", "--json"]);
    assert_eq!(joined["session"].as_str(), Some(queued[0].as_str()));
    let status = home.json(&["status", "--json"]);
    assert_eq!(
        status["sessions"][1]["targets"],
        serde_json::json!(["slow"])
    );

    // --replace cancels the running one; the queued one runs next.
    home.run(&["sync", "slow", "--detach", "--replace"])
        .assert_code(0);
    assert!(wait_until(PATIENCE, || {
        let status = home.json(&["status", "--json"]);
        sessions_in(&status) == [(queued[0].clone(), "running".to_owned())]
    }));
    home.ok(&["cancel"]);
    assert!(wait_until(PATIENCE, || {
        sessions_in(&home.json(&["status", "--json"])).is_empty()
    }));
    let history = home.history();
    assert_eq!(
        history.len(),
        2,
        "one session ran, one queued: {history:#?}"
    );
}

#[test]
fn events_follow_sessions_and_late_watchers_get_the_state() {
    let mut home = TestHome::inline();
    home.run(&["events"])
        .assert_code(1)
        .assert_stderr_contains("no daemon runs");
    home.register("slow", HELD);
    home.start_daemon();
    let accepted = home.json(&["sync", "slow", "--detach", "--json"]);
    let id = accepted["session"].as_str().expect("id").to_owned();
    // Started after the session: first its start and its items' states.
    let mut late = home.cmd(["events", "--json"]).spawn();
    late.wait_for_event(PATIENCE, "the session's start", |e| {
        e["event"] == "sessionStarted" && e["session"] == id.as_str()
    });
    late.wait_for_item("slow", "a", "updating");
    home.ok(&["cancel"]);
    let finished = late.wait_for_event(PATIENCE, "the end", |e| e["event"] == "sessionFinished");
    assert_eq!(finished["outcome"], "cancelled");
    assert_eq!(finished["session"], id.as_str());
}

#[test]
fn sigterm_stops_the_running_sessions_cleanly() {
    let mut home = TestHome::inline();
    home.register("slow", HELD);
    home.start_daemon();
    let daemon = home.daemon_pid().expect("a daemon");
    let mut attached = home.cmd(["sync", "--json"]).spawn();
    attached.wait_for_item("slow", "a", "updating");
    let handlers = children_of(daemon);
    assert_eq!(handlers.len(), 1, "one handler process: {handlers:?}");

    let status = home.stop_daemon();
    assert!(
        status.success(),
        "the daemon exits 0 after SIGTERM: {status}"
    );
    assert!(
        handlers.iter().all(|&pid| !process_running(pid)),
        "a handler outlived the daemon"
    );
    // The command that followed the session saw it end, cancelled.
    let run = attached.finish(PATIENCE);
    run.assert_code(1);
    assert_eq!(run.outcome(), "cancelled");
    assert_eq!(run.statuses()["slow/a"], "stopped");
    let history = home.history();
    assert_eq!(history.last().expect("sessions")["outcome"], "cancelled");
    assert!(!home.path().join("run/daemon.sock").exists());
}

#[test]
fn a_killed_daemon_leaves_an_interrupted_session_and_blocks_nothing() {
    let mut home = TestHome::inline();
    home.register("slow", HELD);
    home.start_daemon();
    home.ok(&["sync", "--detach"]);
    assert!(wait_until(PATIENCE, || {
        home.json(&["status", "--json"])["sessions"][0]["state"] == "running"
    }));
    home.kill_daemon();
    // The next command records the dead daemon's session as interrupted.
    let history = home.history();
    assert_eq!(
        history.last().expect("sessions")["outcome"],
        "interrupted",
        "{history:#?}"
    );
    // A new daemon starts at once and runs sessions.
    home.start_daemon();
    home.register("quick", &[]);
    home.sync(&["quick"]).assert_code(0);
}

/// The sessions that a schedule ran (their `reason` names it; requests
/// that joined one queued session are all named).
fn scheduled(home: &TestHome, schedule: &str) -> Vec<Value> {
    let reason = format!("schedule {schedule}");
    home.history()
        .into_iter()
        .filter(|s| {
            s["reason"]
                .as_str()
                .is_some_and(|r| r.split(", ").any(|part| part == reason))
        })
        .collect()
}

#[test]
fn a_schedule_fires_and_stops_when_removed() {
    let mut home = TestHome::inline();
    home.register("quick", &[]);
    home.register("other", &[]);
    home.ok(&["schedule", "add", "tick", "--every", "1s", "quick"]);
    home.start_daemon();
    assert!(
        wait_until(PATIENCE, || scheduled(&home, "tick").len() >= 2),
        "{:#?}",
        home.history()
    );
    let runs = scheduled(&home, "tick");
    assert_eq!(runs[0]["trigger"], "scheduled");
    assert_eq!(runs[0]["outcome"], "succeeded");

    home.ok(&["schedule", "remove", "tick"]);
    let after_removal = scheduled(&home, "tick").len();
    // Another schedule of the same rhythm firing twice shows time passed
    // in which the removed one would have fired too.
    home.ok(&["schedule", "add", "marker", "--every", "1s", "other"]);
    assert!(wait_until(PATIENCE, || scheduled(&home, "marker").len() >= 2));
    // (A run of `tick` may have started before the removal reached the
    // daemon, not after.)
    assert!(scheduled(&home, "tick").len() <= after_removal + 1);
    home.run(&["schedule", "remove", "tick"])
        .assert_code(2)
        .assert_stderr_contains("no schedule named \"tick\"");
}

#[test]
fn missed_runs_are_caught_up_once_when_the_daemon_starts() {
    let mut home = TestHome::inline();
    home.register("quick", &[]);
    home.ok(&["schedule", "add", "hourly", "--every", "1h", "quick"]);
    home.ok(&[
        "schedule",
        "add",
        "cron",
        "--cron",
        "0 * * * *",
        "--timezone",
        "UTC",
        "quick",
    ]);
    home.ok(&[
        "schedule",
        "add",
        "lazy",
        "--every",
        "1h",
        "--no-catch-up",
        "quick",
    ]);
    // The daemon was down for five hours: five runs of each missed.
    let store = syncmgr_store::Store::open(&home.path().join("syncmgr.db")).expect("store");
    let long_ago = chrono::Utc::now() - chrono::Duration::hours(5);
    for name in ["hourly", "cron", "lazy"] {
        assert!(store.set_schedule_run(name, long_ago).expect("set"));
    }
    drop(store);

    home.start_daemon();
    assert!(wait_until(PATIENCE, || {
        scheduled(&home, "hourly").len() == 1 && scheduled(&home, "cron").len() == 1
    }));
    // Once each: the next runs are in the future again.
    let list = home.json(&["schedule", "list", "--json"]);
    let now = chrono::Utc::now();
    for row in list.as_array().expect("rows") {
        let next = chrono::DateTime::parse_from_rfc3339(row["nextRun"].as_str().expect("next"))
            .expect("a time");
        assert!(next > now, "{row}");
    }
    // The one that does not catch up did not run.
    assert!(scheduled(&home, "lazy").is_empty());
    let hourly = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "hourly")
        .unwrap();
    assert!(!hourly["lastRun"].is_null());
}

#[test]
fn a_failing_automatic_session_backs_off_and_a_manual_sync_resets_it() {
    let mut home = TestHome::inline();
    std::fs::write(
        home.path().join("config.toml"),
        // Long enough that the test sees it in force after the failure.
        "[backoff]\ninitial = \"10s\"\nmax = \"20s\"\n",
    )
    .expect("config");
    home.register("flaky", &["--items", "a", "--fail", "a"]);
    home.ok(&["schedule", "add", "often", "--every", "1s", "flaky"]);
    home.start_daemon();
    assert!(wait_until(PATIENCE, || {
        scheduled(&home, "often")
            .first()
            .is_some_and(|s| s["outcome"] == "failed")
    }));
    let status = home.json(&["status", "--json"]);
    let reg = &status["registrations"][0];
    let until = reg["backoffUntil"]
        .as_str()
        .unwrap_or_else(|| panic!("{status:#}"));
    assert_eq!(reg["state"], "backoff");
    let until = chrono::DateTime::parse_from_rfc3339(until).expect("a time");
    // The next automatic run waits for the backoff to end.
    assert!(wait_until(PATIENCE * 2, || scheduled(&home, "often").len() >= 2));
    let second = &scheduled(&home, "often")[1];
    let started =
        chrono::DateTime::parse_from_rfc3339(second["started"].as_str().unwrap()).expect("a time");
    assert!(started >= until, "ran at {started}, backoff until {until}");

    // A manual sync is never held back, and ends the backoff.
    home.ok(&["schedule", "remove", "often"]);
    home.sync(&["flaky"]).assert_code(1);
    let status = home.json(&["status", "--json"]);
    assert_eq!(
        status["registrations"][0]["backoffUntil"],
        Value::Null,
        "{status:#}"
    );
}

#[test]
fn a_bad_config_keeps_the_daemon_from_starting_and_a_bad_reload_is_ignored() {
    let mut home = TestHome::inline();
    let config = home.path().join("config.toml");
    std::fs::write(&config, "[daemon]\nmax_concurent = 2\n").expect("config");
    home.run(&["daemon"])
        .assert_code(2)
        .assert_stderr_contains("line 2")
        .assert_stderr_contains("max_concurent");
    // Other commands only warn.
    home.run(&["handlers"])
        .assert_code(0)
        .assert_stderr_contains("max_concurent");

    std::fs::write(&config, "[daemon]\nmax_concurrent = 2\n").expect("config");
    home.start_daemon();
    std::fs::write(&config, "[daemon]\nmax_concurrent = \"lots\"\n").expect("config");
    let pid = home.daemon_pid().expect("daemon").to_string();
    home.reload_daemon();
    // Still serving with the old settings.
    home.register("quick", &[]);
    home.sync(&["quick"]).assert_code(0);
    assert_eq!(
        home.json(&["status", "--json"])["daemon"]["pid"].to_string(),
        pid
    );
}

#[test]
fn install_writes_the_user_unit_and_enables_it() {
    use std::os::unix::fs::PermissionsExt;
    let home = TestHome::inline();
    let config = home.path().join("xdg-config");
    let bin = home.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let calls = home.path().join("systemctl-calls");
    // A systemctl that records what it was asked.
    let fake = bin.join("systemctl");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n", calls.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let with_env = |args: &[&str]| {
        let mut cmd = home.cmd(args);
        cmd.env("XDG_CONFIG_HOME", &config).env("PATH", &path);
        cmd.run()
    };

    with_env(&["daemon", "--install"])
        .assert_code(0)
        .assert_stdout_contains("syncmgr.service");
    let unit = std::fs::read_to_string(config.join("systemd/user/syncmgr.service")).unwrap();
    let exec = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("an ExecStart line");
    assert!(
        exec.contains(&format!("\"--home\" \"{}\"", home.path().display())),
        "{exec}"
    );
    assert!(exec.ends_with(" daemon"), "{exec}");
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "--user daemon-reload\n--user enable --now syncmgr.service\n"
    );

    with_env(&["daemon", "--uninstall"])
        .assert_code(0)
        .assert_stdout_contains("removed");
    assert!(!config.join("systemd/user/syncmgr.service").exists());
    assert!(
        std::fs::read_to_string(&calls)
            .unwrap()
            .ends_with("--user disable --now syncmgr.service\n--user daemon-reload\n")
    );
    with_env(&["daemon", "--uninstall"])
        .assert_code(0)
        .assert_stdout_contains("was not installed");

    // A service manager that fails is named, with what it said.
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'Failed to connect to bus' >&2\nexit 1\n",
    )
    .unwrap();
    with_env(&["daemon", "--install"])
        .assert_code(1)
        .assert_stderr_contains("systemctl --user daemon-reload")
        .assert_stderr_contains("Failed to connect to bus");
}

#[test]
fn the_daemon_keeps_the_history_within_its_retention() {
    let mut home = TestHome::inline();
    std::fs::write(
        home.path().join("config.toml"),
        "[retention]\nsessions = 10\n",
    )
    .expect("config");
    home.register("quick", &["--items", "a"]);
    for _ in 0..12 {
        home.sync(&["quick"]).assert_code(0);
    }
    let before = home.history();
    assert_eq!(before.len(), 12);
    let infos = home.log(&["--level", "information"]).len();
    home.start_daemon();
    assert!(wait_until(PATIENCE, || home.history().len() == 10));
    // The oldest went, and their information entries with them.
    assert_eq!(home.history()[0]["id"], before[2]["id"]);
    assert!(home.log(&["--level", "information"]).len() < infos);
}

#[test]
fn bad_requests_on_the_socket_are_refused_and_the_daemon_goes_on() {
    use std::io::{BufRead, BufReader, Write};
    let mut home = TestHome::inline();
    home.start_daemon();
    let socket = home.path().join("run/daemon.sock");
    let answer = |request: &[u8]| -> String {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        stream.write_all(request).expect("write");
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).expect("read");
        line
    };
    for request in [
        &b"nonsense\n"[..],
        b"{\"request\":\"launch\"}\n",
        b"{\"request\":\"sync\"}\n",
        b"{\"request\":\"status\",\"extra\":1}\n",
        b"\xff\xfe\n",
    ] {
        let line = answer(request);
        let reply: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(reply["usage"], true, "{reply}");
        assert!(
            reply["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{reply}"
        );
    }
    // A line longer than the daemon takes: cut off, refused, no harm.
    let mut long = vec![b'x'; 200 * 1024];
    long.push(b'\n');
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    let _ = stream.write_all(&long);
    drop(stream);
    // A client that connects and says nothing is dropped after a while; the
    // others are served meanwhile.
    let _silent = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    let status = home.json(&["status", "--json"]);
    assert_eq!(status["daemon"]["pid"], home.daemon_pid().expect("daemon"));
    // A sync of a handler that does not exist: the same error as inline.
    home.run(&["sync", "--detach", "ghost"])
        .assert_code(2)
        .assert_stderr_contains("unknown handler \"ghost\"");
}
