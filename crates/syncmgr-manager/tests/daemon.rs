//! The daemon in process: `daemon::run` on a fresh home, its socket spoken
//! to with `client`, registrations of the built-in command handler written
//! to the store directly. The crate's own proof of its queue, coalescing,
//! status, reload and refusals (the command line's suite drives the same
//! daemon through the binary).

use std::path::Path;
use std::time::{Duration, Instant};

use syncmgr_api::{self as api, DaemonRequest, SyncReply};
use syncmgr_manager::daemon::{self, DaemonConfig};
use syncmgr_manager::{Home, ManagerError, client};
use syncmgr_store::{Registration, Store};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A handler whose one item runs `argv`.
fn register(home: &Home, name: &str, argv: &[&str]) {
    let config = serde_json::json!({"item": [{"id": "a", "argv": argv}]});
    let store = Store::open(&home.database()).expect("store");
    store
        .register(&Registration::builtin(name, "command", config))
        .expect("register");
}

/// A running daemon: stopped (and awaited) by `stop`.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<syncmgr_manager::Result<()>>,
}

impl Running {
    async fn start(home: &Home) -> Running {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(daemon::run(home.clone(), quiet(), async move {
            let _ = stopped.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(15);
        while client::connect(home).await.ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "the daemon did not listen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Running {
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) -> syncmgr_manager::Result<()> {
        let _ = self.stop.take().expect("once").send(());
        self.task.await.expect("the daemon's task")
    }
}

/// A daemon that leaves the machine's D-Bus alone.
fn quiet() -> DaemonConfig {
    DaemonConfig {
        without_os_triggers: true,
        ..DaemonConfig::default()
    }
}

fn home(dir: &Path) -> Home {
    let home = dir.join("h");
    Home::resolve(Some(&home)).expect("home")
}

async fn ask<T: serde::de::DeserializeOwned>(home: &Home, request: DaemonRequest) -> T {
    let mut connection = client::connect(home)
        .await
        .expect("connect")
        .expect("a daemon");
    connection.request(&request).await.expect("request");
    connection
        .next::<T>()
        .await
        .expect("an answer")
        .expect("a line")
}

fn detached(targets: &[&str]) -> DaemonRequest {
    DaemonRequest::Sync {
        targets: targets.iter().map(|t| (*t).to_owned()).collect(),
        event: None,
        cookie: None,
        detach: true,
        replace: false,
        max_concurrent: 4,
        grace_ms: 1000,
        via: None,
    }
}

async fn status(home: &Home) -> api::Status {
    ask(home, DaemonRequest::Status {}).await
}

fn accepted(reply: SyncReply) -> String {
    match reply {
        SyncReply::Accepted(a) => {
            assert!(a.queued);
            a.session
        }
        SyncReply::Refused(r) => panic!("refused: {}", r.error),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queue_coalesce_and_end_with_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = home(dir.path());
    register(&home, "slow", &["sleep", "30"]);
    register(&home, "quick", &["true"]);
    let daemon = Running::start(&home).await;

    // A second daemon for the same home is refused, naming the first.
    let second = daemon::run(home.clone(), quiet(), async {}).await;
    assert!(
        matches!(second, Err(ManagerError::DaemonRunning { pid }) if pid == std::process::id()),
        "{second:?}"
    );

    let first = accepted(ask(&home, detached(&["slow"])).await);
    let deadline = Instant::now() + Duration::from_secs(15);
    while status(&home)
        .await
        .sessions
        .first()
        .map(|s| s.state.as_str())
        != Some("running")
    {
        assert!(Instant::now() < deadline, "the session did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Requests for a registration that runs: one queued session behind it,
    // which every later request joins (and widens).
    let queued = accepted(ask(&home, detached(&["slow/a"])).await);
    assert_ne!(queued, first);
    for _ in 0..5 {
        assert_eq!(accepted(ask(&home, detached(&["slow/a"])).await), queued);
    }
    assert_eq!(accepted(ask(&home, detached(&["slow"])).await), queued);
    // Another registration runs at once, in a session of its own.
    let other = accepted(ask(&home, detached(&["quick"])).await);
    assert_ne!(other, queued);

    let now = status(&home).await;
    let daemon_info = now.daemon.as_ref().expect("the daemon");
    assert_eq!(daemon_info.pid, std::process::id());
    let queued_state = now
        .sessions
        .iter()
        .find(|s| s.id == queued)
        .expect("the queued session");
    assert_eq!(queued_state.state, "queued");
    assert_eq!(queued_state.targets, ["slow"]);
    let slow = now
        .registrations
        .iter()
        .find(|r| r.name == "slow")
        .expect("slow");
    assert_eq!(slow.state, "running");

    // A cancel reaches the queued session (applied as it starts) and only
    // the targets it has; a bad target is refused.
    let cancel = |targets: &[&str]| DaemonRequest::Cancel {
        targets: targets.iter().map(|t| (*t).to_owned()).collect(),
    };
    let told: api::QueuedCancel = ask(&home, cancel(&["slow/a", "nobody"])).await;
    assert_eq!(told.sessions, std::slice::from_ref(&queued));
    assert_eq!(told.matched, [true, false]);
    let refused: api::Refused = ask(&home, cancel(&["slow/"])).await;
    assert!(
        refused.usage && refused.error.contains("empty item"),
        "{}",
        refused.error
    );

    // Stopping: the queued session is dropped, the running one cancelled
    // and recorded; nothing is left in the daemon's home but the store.
    daemon.stop().await.expect("a clean stop");
    assert!(!home.daemon_socket().exists());
    let store = Store::open(&home.database()).expect("store");
    let sessions = store.sessions(None).expect("history");
    let first_record = sessions.iter().find(|s| s.id == first).expect("recorded");
    assert_eq!(
        first_record.outcome,
        Some(syncmgr_core::SessionOutcome::Cancelled)
    );
    assert!(sessions.iter().all(|s| s.id != queued), "never started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_unknown_targets_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = home(dir.path());
    register(&home, "quick", &["true"]);
    let daemon = Running::start(&home).await;

    match ask::<SyncReply>(&home, detached(&["ghost"])).await {
        SyncReply::Refused(r) => {
            assert!(r.usage);
            assert!(r.error.contains("unknown handler \"ghost\""), "{}", r.error);
        }
        SyncReply::Accepted(a) => panic!("accepted {a:?}"),
    }
    let zero = DaemonRequest::Sync {
        targets: vec!["quick".to_owned()],
        event: None,
        cookie: None,
        detach: true,
        replace: false,
        max_concurrent: 0,
        grace_ms: 0,
        via: None,
    };
    match ask::<SyncReply>(&home, zero).await {
        SyncReply::Refused(r) => assert!(r.error.contains("--max-concurrent"), "{}", r.error),
        SyncReply::Accepted(a) => panic!("accepted {a:?}"),
    }
    let unknown_entry = DaemonRequest::ShowError {
        entry: 42,
        max_concurrent: 4,
        grace_ms: 1000,
    };
    match ask::<SyncReply>(&home, unknown_entry).await {
        SyncReply::Refused(r) => assert!(r.usage && r.error.contains("no log entry 42")),
        SyncReply::Accepted(a) => panic!("accepted {a:?}"),
    }
    let ack: api::Ack = ask(&home, DaemonRequest::Reload {}).await;
    assert!(ack.ok);
    daemon.stop().await.expect("a clean stop");
}

#[test]
fn status_without_a_daemon_comes_from_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = home(dir.path());
    register(&home, "quick", &["true"]);
    let store = Store::open(&home.database()).expect("store");
    let status = daemon::status_of(&store, None, chrono::Utc::now()).expect("status");
    assert!(status.daemon.is_none());
    assert!(status.sessions.is_empty());
    assert_eq!(status.registrations.len(), 1);
    assert_eq!(status.registrations[0].state, "idle");
    assert!(status.registrations[0].last_session.is_none());
    let idle = status
        .triggers
        .iter()
        .find(|t| t.trigger == "idle")
        .expect("idle");
    assert!(!idle.available);
    assert_eq!(idle.reason, "no daemon runs");
}

/// A session's control socket: cancels matched or not, and requests that
/// are too long or not requests refused; the socket file goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_socket_answers_each_line() {
    use syncmgr_core::{HandlerJob, MemoryJournal, Selection, Session, SessionConfig, SyncEvent};
    use syncmgr_manager::control::ControlSocket;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let dir = tempfile::tempdir().expect("tempdir");
    let home = home(dir.path());
    register(&home, "quick", &["true"]);
    let store = Store::open(&home.database()).expect("store");
    let reg = store.registration("quick").expect("read").expect("quick");
    let job = HandlerJob {
        name: "quick".into(),
        handler: syncmgr_manager::handlers::build_handler(&reg, &[]).expect("handler"),
        selection: Selection::Checked(Default::default()),
        timeout: Duration::from_secs(10),
    };
    let journal = std::sync::Arc::new(MemoryJournal::default());
    let (_session, control, _events) = Session::new(
        SessionConfig::new("s", SyncEvent::Manual),
        journal,
        vec![job],
    );
    let path = home.socket("s");
    let socket = ControlSocket::bind(&path, control).expect("bind");

    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let (read, mut write) = stream.into_split();
    let mut replies = BufReader::new(read).lines();
    let mut ask = async |line: String| -> api::ControlReply {
        write.write_all(line.as_bytes()).await.expect("write");
        write.write_all(b"\n").await.expect("write");
        let reply = replies.next_line().await.expect("read").expect("a reply");
        serde_json::from_str(&reply).expect("a control reply")
    };
    let cancel =
        |target: &syncmgr_core::CancelTarget| syncmgr_manager::control::request_line(target);
    let reply = ask(cancel(&syncmgr_core::CancelTarget::Handler("quick".into()))).await;
    assert_eq!(reply, api::ControlReply::matched(true));
    let reply = ask(cancel(&syncmgr_core::CancelTarget::Handler("other".into()))).await;
    assert_eq!(reply, api::ControlReply::matched(false));
    let reply = ask("nonsense".to_owned()).await;
    assert!(
        !reply.ok
            && reply
                .error
                .is_some_and(|e| e.contains("not a control request"))
    );
    let reply = ask(format!(
        "{{\"cancel\":null,\"pad\":\"{}\"}}",
        "x".repeat(70_000)
    ))
    .await;
    assert_eq!(reply, api::ControlReply::refused("request too long"));

    drop(socket);
    assert!(!path.exists(), "the socket file goes with the session");
}
