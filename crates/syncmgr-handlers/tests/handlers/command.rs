//! The command handler driven through a real session: exit statuses, stderr
//! in the results log, progress from both streams, and cancels escalating
//! from SIGINT to SIGKILL with the process group gone afterwards.
//!
//! The commands are `sh -c` and `python3 -c` one-liners. A command that must
//! be cancelled writes its pid to a file once its signal handlers are set, and
//! the test waits for that file (polling with a deadline) before cancelling.
//! Grace periods are 200 ms, so each cancel test takes well under a second.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use syncmgr_core::{
    CancelTarget, HandlerJob, ItemSnapshot, ItemStatus, LogLevel, MemoryJournal, NewLogEntry,
    Selection, Session, SessionConfig, SessionControl, SessionEvent, SessionOutcome,
    SessionSummary, SyncEvent,
};
use syncmgr_handlers::command::{CommandConfig, CommandHandler, CommandItem, ProgressParser};
use tokio::sync::mpsc;

/// Far longer than any test should take; only a hang reaches it.
const DEADLINE: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_millis(200);

fn item(id: &str, argv: &[&str], parser: ProgressParser) -> CommandItem {
    CommandItem {
        parser,
        ..CommandItem::new(id, argv.iter().map(|s| (*s).to_owned()).collect())
    }
}

fn sh(id: &str, script: &str) -> CommandItem {
    item(id, &["sh", "-c", script], ProgressParser::Percent)
}

fn config(items: Vec<CommandItem>) -> CommandConfig {
    CommandConfig {
        items,
        sigint_grace: GRACE,
        sigterm_grace: GRACE,
    }
}

/// What a finished session left behind.
#[derive(Debug)]
struct Outcome {
    summary: SessionSummary,
    /// The last snapshot of each item.
    items: HashMap<String, ItemSnapshot>,
    log: Vec<NewLogEntry>,
}

impl Outcome {
    fn status(&self, item: &str) -> ItemStatus {
        self.items[item].status
    }

    /// The entries about `item`, as (level, text).
    fn entries(&self, item: &str) -> Vec<(LogLevel, &str)> {
        self.log
            .iter()
            .filter(|e| e.item.as_deref() == Some(item))
            .map(|e| (e.level, e.text.as_str()))
            .collect()
    }
}

/// A running session of one command handler named "cmd".
struct Running {
    control: SessionControl,
    journal: Arc<MemoryJournal>,
    session: tokio::task::JoinHandle<SessionSummary>,
    events: tokio::task::JoinHandle<Vec<SessionEvent>>,
}

fn start(config: CommandConfig) -> Running {
    let job = HandlerJob {
        name: "cmd".into(),
        handler: Box::new(CommandHandler::new(config)),
        selection: Selection::Checked(HashMap::new()),
        timeout: Duration::from_secs(10),
    };
    let journal = Arc::new(MemoryJournal::default());
    let (session, control, rx) = Session::new(
        SessionConfig::new("s1", SyncEvent::Manual),
        journal.clone(),
        vec![job],
    );
    Running {
        control,
        journal,
        session: tokio::spawn(session.run()),
        events: tokio::spawn(read_events(rx)),
    }
}

async fn read_events(mut rx: mpsc::Receiver<SessionEvent>) -> Vec<SessionEvent> {
    let mut events = Vec::new();
    while let Some(event) = rx.recv().await {
        let last = matches!(event, SessionEvent::Finished(_));
        events.push(event);
        if last {
            break;
        }
    }
    events
}

impl Running {
    async fn finish(self) -> Outcome {
        let events = tokio::time::timeout(DEADLINE, self.events)
            .await
            .expect("the session finishes")
            .expect("the event reader");
        let summary = self.session.await.expect("the session task");
        assert!(
            matches!(events.last(), Some(SessionEvent::Finished(s)) if *s == summary),
            "Finished is the last event"
        );
        let mut items = HashMap::new();
        for event in &events {
            if let SessionEvent::ItemChanged(s) = event {
                items.insert(s.item.clone(), s.clone());
            }
        }
        Outcome {
            summary,
            items,
            log: self.journal.entries().into_iter().map(|(_, e)| e).collect(),
        }
    }
}

async fn run(config: CommandConfig) -> Outcome {
    start(config).finish().await
}

/// Waits for a command to write its pid to `path`.
async fn wait_for_pid(path: &Path) -> i32 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pid in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a process (positive) or process group (negative) exists.
fn exists(pid: i32) -> bool {
    if pid < 0 {
        syncmgr_sys::group_alive(pid.unsigned_abs())
    } else {
        syncmgr_sys::process_alive(pid.unsigned_abs())
    }
}

/// Asserts the command and its group are gone (polling: the kernel tears a
/// group down asynchronously).
async fn assert_gone(pid: i32) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while exists(pid) || exists(-pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} or its group is still there"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A Python command that writes its pid to `pidfile` (atomically) after
/// setting `signals` to be ignored, then sleeps for a minute.
fn stubborn(id: &str, pidfile: &Path, signals: &[&str]) -> CommandItem {
    let ignore: String = signals
        .iter()
        .map(|s| format!("signal.signal(signal.{s}, signal.SIG_IGN)\n"))
        .collect();
    let script = format!(
        "import os, signal, sys, time\n\
         {ignore}\
         path = sys.argv[1]\n\
         with open(path + '.tmp', 'w') as f: f.write(str(os.getpid()))\n\
         os.rename(path + '.tmp', path)\n\
         print('working', flush=True)\n\
         for _ in range(1200): time.sleep(0.05)\n"
    );
    item(
        id,
        &["python3", "-c", &script, pidfile.to_str().unwrap()],
        ProgressParser::Percent,
    )
}

fn pidfile(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("pid")
}

#[tokio::test]
async fn exit_status_decides_and_stderr_is_logged() {
    let out = run(config(vec![
        sh(
            "ok",
            "echo 'copying a'; echo 'note: cache is cold' >&2; echo 'all done'",
        ),
        sh(
            "bad",
            "echo starting; echo 'rsync error: disk full (code 11)' >&2; exit 3",
        ),
        item(
            "missing",
            &["/nonexistent/program", "-v"],
            ProgressParser::Percent,
        ),
        sh("killed", "kill -TERM $$"),
    ]))
    .await;

    assert_eq!(out.summary.outcome, SessionOutcome::Failed);
    assert_eq!(out.status("ok"), ItemStatus::Succeeded);
    assert_eq!(out.items["ok"].text, "all done");
    assert_eq!(
        out.entries("ok"),
        [(LogLevel::Information, "note: cache is cold")]
    );

    assert_eq!(out.status("bad"), ItemStatus::Failed);
    assert_eq!(
        out.entries("bad"),
        [
            (LogLevel::Warning, "rsync error: disk full (code 11)"),
            (
                LogLevel::Error,
                "sh failed: exit status 3; last stderr line: rsync error: disk full (code 11)"
            ),
        ]
    );

    assert_eq!(out.status("missing"), ItemStatus::Failed);
    let missing = out.entries("missing");
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(missing[0].0, LogLevel::Error);
    assert!(
        missing[0]
            .1
            .starts_with("could not start /nonexistent/program: "),
        "{missing:?}"
    );

    assert_eq!(out.status("killed"), ItemStatus::Failed);
    assert_eq!(
        out.entries("killed"),
        [(LogLevel::Error, "sh failed: killed by signal 15 (SIGTERM)")]
    );
}

#[tokio::test]
async fn progress_is_parsed_from_both_streams() {
    let out = run(config(vec![
        sh(
            "percent",
            "for p in 10 20 30 40 50 60 70 80 90 100; do printf 'copying %s%%\\r' \"$p\"; done",
        ),
        item(
            "git",
            &[
                "sh",
                "-c",
                "printf \"Cloning into 'x'...\\n\" >&2; \
                 printf 'Receiving objects:  50%% (5/10)\\rReceiving objects: 100%% (10/10), done.\\n' >&2; \
                 printf 'Resolving deltas:  40%% (2/5)\\r' >&2",
            ],
            ProgressParser::Git,
        ),
        item(
            "plain",
            &["sh", "-c", "echo 'at 50%'"],
            ProgressParser::None,
        ),
    ]))
    .await;

    assert_eq!(out.summary.outcome, SessionOutcome::Succeeded);
    let percent = &out.items["percent"];
    assert_eq!(percent.status, ItemStatus::Succeeded);
    assert_eq!((percent.value, percent.max), (Some(100), Some(100)));
    assert_eq!(percent.text, "copying 100%");

    // git's phases come on stderr: progress, not log entries; the phase
    // percent is the amount.
    let git = &out.items["git"];
    assert_eq!(git.status, ItemStatus::Succeeded);
    assert_eq!((git.value, git.max), (Some(40), Some(100)));
    assert_eq!(git.text, "Resolving deltas:  40% (2/5)");
    assert_eq!(
        out.entries("git"),
        [(LogLevel::Information, "Cloning into 'x'...")]
    );

    let plain = &out.items["plain"];
    assert_eq!((plain.value, plain.max), (None, None));
    assert_eq!(plain.text, "at 50%");
}

#[tokio::test]
async fn cancel_all_stops_the_running_item_and_skips_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = pidfile(&dir);
    let running = start(config(vec![
        stubborn("long", &pidfile, &[]),
        sh("later", "echo never"),
    ]));
    let pid = wait_for_pid(&pidfile).await;
    assert!(running.control.cancel(&CancelTarget::All));
    let out = running.finish().await;

    assert_eq!(out.summary.outcome, SessionOutcome::Cancelled);
    assert_eq!(out.status("long"), ItemStatus::Stopped);
    assert_eq!(out.status("later"), ItemStatus::Skipped);
    // Python's KeyboardInterrupt traceback comes first, on stderr.
    let entries = out.entries("long");
    assert_eq!(
        entries.last(),
        Some(&(
            LogLevel::Information,
            "stopped after SIGINT: killed by signal 2 (SIGINT)"
        )),
        "{entries:?}"
    );
    assert!(
        entries.iter().any(|(_, t)| *t == "KeyboardInterrupt"),
        "{entries:?}"
    );
    assert!(out.entries("later").is_empty());
    assert_gone(pid).await;
}

#[tokio::test]
async fn an_ignored_sigint_is_followed_by_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = pidfile(&dir);
    let running = start(config(vec![stubborn("stubborn", &pidfile, &["SIGINT"])]));
    let pid = wait_for_pid(&pidfile).await;
    assert!(running.control.cancel(&CancelTarget::Item {
        handler: "cmd".into(),
        item: "stubborn".into(),
    }));
    let out = running.finish().await;

    assert_eq!(out.status("stubborn"), ItemStatus::Stopped);
    assert_eq!(
        out.entries("stubborn"),
        [(
            LogLevel::Information,
            "stopped after SIGTERM (it ignored SIGINT for 200ms): killed by signal 15 (SIGTERM)"
        )]
    );
    assert_gone(pid).await;
}

#[tokio::test]
async fn ignoring_sigint_and_sigterm_ends_in_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = pidfile(&dir);
    let running = start(config(vec![stubborn(
        "deaf",
        &pidfile,
        &["SIGINT", "SIGTERM"],
    )]));
    let pid = wait_for_pid(&pidfile).await;
    assert!(running.control.cancel(&CancelTarget::Handler("cmd".into())));
    let out = running.finish().await;

    assert_eq!(out.status("deaf"), ItemStatus::Stopped);
    assert_eq!(
        out.entries("deaf"),
        [(
            LogLevel::Information,
            "stopped with SIGKILL (it ignored SIGINT for 200ms and SIGTERM for 200ms): \
             killed by signal 9 (SIGKILL)"
        )]
    );
    assert_gone(pid).await;
}

#[tokio::test]
async fn a_timeout_stops_the_command_and_fails_the_item() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = pidfile(&dir);
    // The shell ignores SIGINT at once, before any timeout can fire, and
    // `exec` keeps both its pid and the ignored signal.
    let mut slow = item(
        "slow",
        &[
            "sh",
            "-c",
            "trap '' INT; echo $$ > \"$1\"; exec sleep 60",
            "sh",
            pidfile.to_str().unwrap(),
        ],
        ProgressParser::Percent,
    );
    slow.timeout = Some(Duration::from_millis(300));
    let out = run(config(vec![slow])).await;

    assert_eq!(out.status("slow"), ItemStatus::Failed);
    assert_eq!(
        out.entries("slow"),
        [(
            LogLevel::Error,
            "sh timed out after 300ms and was stopped after SIGTERM \
             (it ignored SIGINT for 200ms): killed by signal 15 (SIGTERM)"
        )]
    );
    assert_gone(wait_for_pid(&pidfile).await).await;
}
