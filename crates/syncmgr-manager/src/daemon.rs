//! The daemon: one per home, it runs the sessions that commands (and, next,
//! its own triggers) ask for, keeps them from piling up, and lets any number
//! of observers follow them.
//!
//! - **One per home**: a file lock in the runtime directory (`daemon.lock`);
//!   the kernel drops it when the process dies, so a killed daemon never
//!   blocks the next one. Its pid is written beside it for the message that
//!   refuses a second daemon.
//! - **The socket** `RUNTIME/daemon.sock` (0600 in a 0700 directory) takes
//!   one [`DaemonRequest`] per connection (`syncmgr_api`).
//! - **Queue**: a session waits while one of its registrations runs in
//!   another (the per-registration lock would leave it out otherwise) or
//!   while `max_concurrent` sessions run. A request for a registration that
//!   is already queued joins that queued session (targets merged) instead of
//!   queuing another: a storm of requests gives one running session and at
//!   most one queued behind it.
//! - **Observers** get their events through a coalescing feed each
//!   ([`EventFeed`]): one that reads slowly loses intermediate item states,
//!   never an item's latest state, a log entry or the end; the daemon never
//!   waits for one.
//! - **Shutdown** (SIGTERM, SIGINT, or the host's future): queued sessions
//!   are dropped (they never started), running ones are cancelled and
//!   awaited, so their items end `stopped` and nothing is left running.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use syncmgr_api::{self as api, DaemonRequest, SyncReply};
use syncmgr_core::{
    CancelTarget, EventFeed, FeedEvent, ItemStatus, Selection, SessionControl, SessionSummary,
    SyncEvent,
};
use syncmgr_store::{Registration, Retention, ScheduleRecord, Store};
use syncmgr_sys::FileLock;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

use crate::backoff::{Backoff, Policy};
use crate::config::Config;
use crate::error::{ManagerError, Result};
use crate::home::Home;
use crate::plan;
use crate::schedule::{Schedule, sleep_until_next};
use crate::session::{self, SessionRequest, SessionRun};
use crate::triggers::{Action, Rules, Seen};

/// Retention runs at start and then this often.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);
/// ...and after this many sessions, so that `[retention] sessions` holds
/// however busy the daemon is.
const PRUNE_AFTER_SESSIONS: usize = 100;
/// The tuning of sessions the daemon starts by itself.
const AUTOMATIC_MAX_CONCURRENT: usize = 4;
const AUTOMATIC_GRACE: Duration = Duration::from_secs(5);

/// The longest first line a client may send.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How the daemon runs.
#[derive(Debug, Clone, Default)]
pub struct DaemonConfig {
    /// The settings (`config.toml`).
    pub config: Config,
    /// Where they came from: SIGHUP reads this file again.
    pub config_path: Option<PathBuf>,
    /// `--max-concurrent`, which wins over the file's.
    pub max_concurrent: Option<usize>,
    /// Leaves the operating system's trigger sources alone (a host that
    /// runs the daemon in its own process, such as a test, and must not
    /// touch the machine's buses).
    pub without_os_triggers: bool,
}

impl DaemonConfig {
    fn effective(&self, config: &Config) -> Config {
        let mut config = config.clone();
        if let Some(n) = self.max_concurrent {
            config.max_concurrent = n;
        }
        config
    }
}

/// What an observer's feed carries: an event of one session, keyed so that
/// only a later state of the same item in the same session replaces it.
#[derive(Debug, Clone)]
enum Observed {
    Event {
        session: Arc<str>,
        /// `handler/item` for item events.
        key: Option<String>,
        event: Arc<api::Event>,
    },
    /// The session could not run at all.
    Failed { error: String },
}

impl Observed {
    fn event(session: &Arc<str>, event: api::Event) -> Observed {
        let key = match &event {
            api::Event::Item { handler, item, .. } => Some(format!("{handler}/{item}")),
            _ => None,
        };
        Observed::Event {
            session: Arc::clone(session),
            key,
            event: Arc::new(event),
        }
    }
}

impl FeedEvent for Observed {
    fn coalesce_key(&self) -> Option<(&str, &str)> {
        match self {
            Observed::Event {
                session,
                key: Some(key),
                ..
            } => Some((session, key)),
            _ => None,
        }
    }
}

type Feed = Arc<EventFeed<Observed>>;

/// A session the daemon holds, queued or running.
#[derive(Debug)]
struct Entry {
    id: Arc<str>,
    event: SyncEvent,
    reason: String,
    jobs: Vec<(Registration, Selection)>,
    cookie: Option<String>,
    max_concurrent: usize,
    grace: Duration,
    /// Whether it was started (it is queued until then).
    running: bool,
    /// The engine's control, once the session runs.
    control: Option<SessionControl>,
    /// A cancel that came while it was queued: applied as it starts.
    cancel_asked: bool,
    /// Cancels of some of its items or handlers that came while it was
    /// queued: applied as it starts.
    cancels: Vec<CancelTarget>,
    /// `log show`: the entry, and who confirms the retry (never joined).
    show_error: Option<(i64, Arc<RemoteConfirm>)>,
    /// Clients following this session.
    followers: Vec<Feed>,
    /// The latest state of each item and the start: what a late observer
    /// is shown first.
    started: Option<Arc<api::Event>>,
    items: BTreeMap<String, Arc<api::Event>>,
}

impl Entry {
    fn names(&self) -> impl Iterator<Item = &str> {
        self.jobs.iter().map(|(reg, _)| reg.name.as_str())
    }

    fn status(&self) -> api::SessionState {
        api::SessionState {
            id: self.id.to_string(),
            state: if self.running { "running" } else { "queued" }.to_owned(),
            trigger: self.event.as_str().to_owned(),
            targets: plan::targets_of(&self.jobs),
            items: self.items.values().map(|e| (**e).clone()).collect(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// The settings in force.
    config: Config,
    /// Queued and running sessions, in the order they were asked for.
    sessions: Vec<Entry>,
    /// Per registration: the wait after failed automatic sessions.
    backoff: BTreeMap<String, Backoff>,
    /// Automatic runs held back by a backoff, by registration: run when it
    /// ends.
    deferred: BTreeMap<String, Deferred>,
    /// When a schedule last fired (for `status`).
    schedule_fired: Option<DateTime<Utc>>,
    /// Sessions ended since the last pruning.
    ended_since_prune: usize,
    /// The operating system's triggers as rules.
    rules: Option<Rules>,
    /// The trigger sources, once watched.
    #[cfg(target_os = "linux")]
    sources: Option<crate::sources::Sources>,
    /// logind's delay inhibitor, while a registration opts in to
    /// `pendingDisconnect`.
    #[cfg(target_os = "linux")]
    inhibitor: Option<zbus::OwnedFd>,
    /// The machine is going (sleep, shutdown, logoff): the inhibitor was
    /// given up and is not taken again until it is back.
    going: bool,
    /// The `pendingDisconnect` deadline in force (the configured one, kept
    /// inside logind's limit), once the inhibitor was taken.
    deadline: Option<Duration>,
    /// Sessions a lost constraint cancelled, with what they synced: they
    /// run again, the same, when the rules release them.
    held_jobs: Vec<(SyncEvent, String, plan::Jobs)>,
    /// `events` clients.
    watchers: Vec<Feed>,
    /// Set at shutdown: nothing new is queued or started.
    closing: bool,
}

impl State {
    fn entry(&mut self, id: &str) -> Option<&mut Entry> {
        self.sessions.iter_mut().find(|e| &*e.id == id)
    }

    /// Sends `observed` to the session's followers and every watcher, and
    /// keeps the snapshot current.
    fn publish(&mut self, id: &str, observed: &Observed) {
        if let Some(entry) = self.sessions.iter_mut().find(|e| &*e.id == id) {
            if let Observed::Event { event, key, .. } = observed {
                match (&**event, key) {
                    (api::Event::SessionStarted { .. }, _) => {
                        entry.started = Some(Arc::clone(event));
                    }
                    (_, Some(key)) => {
                        entry.items.insert(key.clone(), Arc::clone(event));
                    }
                    _ => {}
                }
            }
            for feed in &entry.followers {
                feed.push(observed.clone());
            }
        }
        for feed in &self.watchers {
            feed.push(observed.clone());
        }
    }
}

/// An automatic run waiting for its registration's backoff to end.
#[derive(Debug, Clone)]
struct Deferred {
    event: SyncEvent,
    reason: String,
    registration: Registration,
    selection: Selection,
}

/// The daemon's shared state.
#[derive(Debug)]
struct Shared {
    home: Home,
    /// The dashboard the host serves, if any.
    web: Option<api::WebInfo>,
    /// Desktop notifications of failed sessions.
    notifier: crate::notify::Notifier,
    options: DaemonConfig,
    pid: u32,
    started: DateTime<Utc>,
    state: Mutex<State>,
    /// Wakes the shutdown path when a session ends.
    ended: Notify,
    /// Wakes the timer: schedules changed, a backoff changed, stopping.
    wake: Notify,
    /// Wakes the trigger loop when the daemon stops.
    stopping: Notify,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs the daemon for `home` until `shutdown` completes; returns once every
/// running session has ended. Fails at once when another daemon runs.
pub async fn run(
    home: Home,
    config: DaemonConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    bind(home, config)?.run(shutdown).await
}

/// A daemon that holds its home's lock and listens on its socket, not yet
/// serving: a host starts what goes with it (the dashboard) in between, so
/// that a second daemon fails on the lock before it touches anything else.
#[derive(Debug)]
pub struct Bound {
    home: Home,
    config: DaemonConfig,
    lock: FileLock,
    listener: UnixListener,
    /// SIGHUP, watched from before the socket listens: a reload asked as
    /// soon as the daemon answers must not find SIGHUP's default action
    /// (termination) still in place.
    hangup: tokio::signal::unix::Signal,
    pid: u32,
    web: Option<api::WebInfo>,
}

/// Takes the home's daemon lock (fails at once when another daemon runs)
/// and binds the socket.
pub fn bind(home: Home, config: DaemonConfig) -> Result<Bound> {
    let lock_path = home.daemon_lock();
    let Some(lock) = FileLock::try_exclusive(&lock_path)
        .map_err(|e| ManagerError::io(format!("cannot lock {}", lock_path.display()), e))?
    else {
        let pid = fs::read_to_string(home.daemon_pid())
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        return Err(ManagerError::DaemonRunning { pid });
    };
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| ManagerError::io("cannot watch for SIGHUP", e))?;
    let pid = std::process::id();
    let pid_path = home.daemon_pid();
    fs::write(&pid_path, format!("{pid}\n"))
        .map_err(|e| ManagerError::io(format!("cannot write {}", pid_path.display()), e))?;
    let socket_path = home.daemon_socket();
    // Ours to replace: the lock says no other daemon uses it.
    let _ = fs::remove_file(&socket_path);
    let listener = UnixListener::bind(&socket_path)
        .map_err(|e| ManagerError::io(format!("cannot listen on {}", socket_path.display()), e))?;
    fs::set_permissions(&socket_path, fs::Permissions::from_mode(0o600)).map_err(|e| {
        ManagerError::io(format!("cannot make {} private", socket_path.display()), e)
    })?;
    Ok(Bound {
        home,
        config,
        lock,
        listener,
        hangup,
        pid,
        web: None,
    })
}

impl Bound {
    /// Says where the host serves the dashboard (shown in `status`).
    pub fn set_web(&mut self, web: api::WebInfo) {
        self.web = Some(web);
    }

    /// Serves until `shutdown` completes; returns once every running
    /// session has ended.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Bound {
            home,
            config,
            lock: _lock,
            listener,
            hangup,
            pid,
            web,
        } = self;
        serve_bound(home, config, listener, hangup, pid, web, shutdown).await
    }
}

async fn serve_bound(
    home: Home,
    config: DaemonConfig,
    listener: UnixListener,
    mut hangup: tokio::signal::unix::Signal,
    pid: u32,
    web: Option<api::WebInfo>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let socket_path = home.daemon_socket();
    let pid_path = home.daemon_pid();
    tracing::info!(pid, socket = %socket_path.display(), "daemon started");

    let shared = Arc::new(Shared {
        notifier: crate::notify::Notifier::new(
            if !config.config.notifications {
                Err("turned off ([notifications] enabled = false)".to_owned())
            } else if config.without_os_triggers {
                Err("not used by this host (it keeps off the desktop's bus)".to_owned())
            } else {
                Ok(())
            },
            web.as_ref().map(|w| w.url.clone()),
        ),
        web,
        home,
        pid,
        started: Utc::now(),
        state: Mutex::new(State {
            rules: Some(Rules::new(config.config.triggers.clone())),
            config: config.effective(&config.config),
            ..State::default()
        }),
        options: config,
        ended: Notify::new(),
        wake: Notify::new(),
        stopping: Notify::new(),
    });
    let notifier = shared.notifier.clone();
    tokio::spawn(async move { notifier.start().await });
    let timer = tokio::spawn(timer(Arc::clone(&shared)));
    let triggers = tokio::spawn(trigger_loop(Arc::clone(&shared)));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = hangup.recv() => reload(&shared),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve(Arc::clone(&shared), stream));
                }
                Err(e) => tracing::warn!(error = %e, "daemon socket accept failed"),
            },
        }
    }
    drop(listener);
    let _ = fs::remove_file(&socket_path);
    stop(&shared).await;
    let _ = timer.await;
    let _ = triggers.await;
    let _ = fs::remove_file(&pid_path);
    tracing::info!("daemon stopped");
    Ok(())
}

/// Drops the queued sessions, cancels the running ones and waits for them.
async fn stop(shared: &Arc<Shared>) {
    {
        let mut state = shared.state();
        state.closing = true;
        let queued: Vec<Arc<str>> = state
            .sessions
            .iter()
            .filter(|e| !e.running)
            .map(|e| Arc::clone(&e.id))
            .collect();
        for id in queued {
            let failed = Observed::Failed {
                error: "the daemon stopped before the session started".to_owned(),
            };
            state.publish(&id, &failed);
            if let Some(entry) = state.entry(&id) {
                for feed in &entry.followers {
                    feed.close();
                }
            }
            state.sessions.retain(|e| e.id != id);
        }
        for entry in &state.sessions {
            if let Some(control) = &entry.control {
                control.cancel(&CancelTarget::All);
            }
        }
        for feed in &state.watchers {
            feed.close();
        }
    }
    shared.wake.notify_one();
    shared.stopping.notify_one();
    loop {
        let ended = shared.ended.notified();
        if shared.state().sessions.is_empty() {
            return;
        }
        ended.await;
    }
}

/// Starts every queued session that may run now, in order.
fn dispatch(shared: &Arc<Shared>) {
    let mut state = shared.state();
    if state.closing {
        return;
    }
    let mut busy: HashSet<String> = HashSet::new();
    let mut running = 0;
    for entry in &state.sessions {
        if entry.running {
            running += 1;
            busy.extend(entry.names().map(str::to_owned));
        }
    }
    let mut start = Vec::new();
    for entry in &state.sessions {
        if entry.running || running >= state.config.max_concurrent {
            continue;
        }
        if entry.names().any(|name| busy.contains(name)) {
            // Later sessions of the same registrations wait too (order).
            busy.extend(entry.names().map(str::to_owned));
            continue;
        }
        busy.extend(entry.names().map(str::to_owned));
        running += 1;
        start.push(Arc::clone(&entry.id));
    }
    for id in start {
        let Some(entry) = state.entry(&id) else {
            continue;
        };
        let request = SessionRequest {
            jobs: entry.jobs.clone(),
            event: entry.event,
            reason: entry.reason.clone(),
            may_bother_user: entry.event.may_bother_user_by_default() || entry.show_error.is_some(),
            cookie: entry.cookie.clone(),
            max_concurrent: entry.max_concurrent,
            grace: entry.grace,
            confirm: entry
                .show_error
                .as_ref()
                .map(|(_, c)| Arc::clone(c) as Arc<dyn syncmgr_core::Confirm>),
        };
        entry.running = true;
        tokio::spawn(run_session(Arc::clone(shared), id, request));
    }
}

/// Runs one session of the queue to its end, publishing its events.
async fn run_session(shared: Arc<Shared>, id: Arc<str>, request: SessionRequest) {
    let home = shared.home.clone();
    let session_id = id.to_string();
    let started = tokio::task::spawn_blocking(move || {
        let store = open_store(&home)?;
        SessionRun::start(&home, store, session_id, request)
    })
    .await;
    let mut run = match started {
        Ok(Ok(run)) => run,
        Ok(Err(e)) => return fail(&shared, &id, e.to_string()),
        Err(e) => return fail(&shared, &id, format!("the session could not start: {e}")),
    };
    {
        let mut state = shared.state();
        if let Some(entry) = state.entry(&id) {
            entry.control = Some(run.control().clone());
            if entry.cancel_asked {
                run.control().cancel(&CancelTarget::All);
            }
            for target in entry.cancels.drain(..) {
                run.control().cancel(&target);
            }
        }
    }
    // The end is told once the session is recorded and its control socket
    // gone: a command that exits on it finds the session in the history.
    let mut last = None;
    let mut first_error = None;
    while let Some(event) = run.next_event().await {
        if let Some(shape) = api::Event::from_session(&event) {
            if let api::Event::Log { level, text, .. } = &shape
                && level == "error"
                && first_error.is_none()
            {
                first_error = Some(text.clone());
            }
            let observed = Observed::event(&id, shape);
            if matches!(event, syncmgr_core::SessionEvent::Finished(_)) {
                last = Some(observed);
            } else {
                shared.state().publish(&id, &observed);
            }
        }
    }
    // A confirmation counts once: the entry it came from is used up.
    let used = shared.state().entry(&id).and_then(|e| match &e.show_error {
        Some((entry, confirm)) if confirm.decision() == Some(true) => Some(*entry),
        _ => None,
    });
    match run.finish(used).await {
        Ok(summary) => {
            settle_backoff(&shared, &id, &summary);
            if let Some(note) = failure_note(&summary, first_error) {
                shared.notifier.notify(note);
            }
        }
        Err(e) => {
            tracing::warn!(session = %id, error = %e, "could not store the end of the session");
        }
    }
    if let Some(last) = last {
        shared.state().publish(&id, &last);
    }
    end(&shared, &id);
}

/// The notification a session's end raises: one when an item (or a whole
/// handler) failed, none otherwise (warnings never notify).
fn failure_note(
    summary: &SessionSummary,
    first_error: Option<String>,
) -> Option<crate::notify::Note> {
    let mut handlers: Vec<String> = Vec::new();
    let mut failed = 0;
    let failed_items = summary
        .items
        .iter()
        .filter(|i| i.status == ItemStatus::Failed);
    for name in failed_items
        .map(|i| &i.handler)
        .chain(&summary.failed_handlers)
    {
        failed += 1;
        if !handlers.contains(name) {
            handlers.push(name.clone());
        }
    }
    (failed > 0).then(|| crate::notify::Note {
        session: summary.session.clone(),
        handlers,
        failed,
        first_error,
    })
}

/// After a session: an automatic one that failed for a registration puts
/// it in backoff (longer each time); a success, or any manual session,
/// ends it. Stopped items change nothing.
fn settle_backoff(shared: &Arc<Shared>, id: &str, summary: &SessionSummary) {
    let mut state = shared.state();
    let Some(entry) = state.entry(id) else {
        return;
    };
    let automatic = !matches!(entry.event, SyncEvent::Manual | SyncEvent::Invoke);
    let names: Vec<String> = entry.names().map(str::to_owned).collect();
    let policy = Policy {
        initial: state.config.backoff_initial,
        max: state.config.backoff_max,
    };
    let now = Utc::now();
    for name in names {
        let ours = || summary.items.iter().filter(|i| i.handler == name);
        let failed = summary.failed_handlers.contains(&name)
            || ours().any(|i| i.status == ItemStatus::Failed);
        let stopped = ours().any(|i| i.status == ItemStatus::Stopped);
        let backoff = state.backoff.entry(name.clone()).or_default();
        if automatic && failed {
            backoff.failed(&name, now, policy);
            tracing::info!(handler = %name, until = ?backoff.until(now), "backing off");
        } else if !automatic || !stopped {
            backoff.reset();
        }
        // A manual sync did what an automatic run held back by the backoff
        // was waiting to do.
        if !automatic {
            state.deferred.remove(&name);
        }
    }
    drop(state);
    shared.wake.notify_one();
}

/// A session that could not run: its followers are told, and it goes.
fn fail(shared: &Arc<Shared>, id: &Arc<str>, error: String) {
    tracing::warn!(session = %id, %error, "session could not run");
    let observed = Observed::Failed { error };
    shared.state().publish(id, &observed);
    end(shared, id);
}

/// Removes a finished session and starts what waited for it.
fn end(shared: &Arc<Shared>, id: &str) {
    {
        let mut state = shared.state();
        if let Some(entry) = state.entry(id) {
            for feed in &entry.followers {
                feed.close();
            }
        }
        state.sessions.retain(|e| &*e.id != id);
        state.ended_since_prune += 1;
        if state.ended_since_prune >= PRUNE_AFTER_SESSIONS {
            shared.wake.notify_one();
        }
    }
    shared.ended.notify_waiters();
    dispatch(shared);
}

fn open_store(home: &Home) -> Result<Store> {
    Ok(Store::open(&home.database())?)
}

/// One client connection: reads its request and answers it.
async fn serve(shared: Arc<Shared>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_REQUEST)).lines();
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, lines.next_line()).await {
        Ok(Ok(Some(line))) => serde_json::from_str::<DaemonRequest>(&line)
            .map_err(|e| format!("not a daemon request: {e}")),
        Ok(Ok(None)) => return,
        Ok(Err(e)) => Err(format!("cannot read the request: {e}")),
        Err(_) => Err("no request within 5 s".to_owned()),
    };
    let request = match request {
        Ok(request) => request,
        Err(error) => {
            let _ = send(&mut write, &api::Refused { error, usage: true }).await;
            return;
        }
    };
    let result = match request {
        DaemonRequest::ShowError {
            entry,
            max_concurrent,
            grace_ms,
        } => {
            let grace = Duration::from_millis(grace_ms);
            show_error(&shared, &mut write, lines, entry, max_concurrent, grace).await
        }
        DaemonRequest::Resolve {
            decisions,
            max_concurrent,
            grace_ms,
        } => {
            let grace = Duration::from_millis(grace_ms);
            resolve(&shared, &mut write, lines, decisions, max_concurrent, grace).await
        }
        DaemonRequest::Status {} => status(&shared, &mut write).await,
        DaemonRequest::Reload {} => {
            reload(&shared);
            send(&mut write, &api::Ack { ok: true }).await
        }
        DaemonRequest::Events {} => watch(&shared, &mut write, lines).await,
        DaemonRequest::Cancel { targets } => match cancel_queued(&shared, &targets) {
            Ok(reply) => send(&mut write, &reply).await,
            Err(e) => {
                let refused = api::Refused {
                    error: e.to_string(),
                    usage: true,
                };
                send(&mut write, &refused).await
            }
        },
        DaemonRequest::Sync {
            targets,
            event,
            cookie,
            detach,
            replace,
            max_concurrent,
            grace_ms,
            via,
        } => {
            let reason = match via.as_deref() {
                None => requested_by(cookie.is_some()),
                Some("dashboard") => "requested in the dashboard".to_owned(),
                Some(other) => {
                    let error = format!("unknown requester {other:?} (only \"dashboard\")");
                    let _ = send(&mut write, &api::Refused { error, usage: true }).await;
                    return;
                }
            };
            let ask = Ask {
                reason,
                show_error: None,
                targets,
                event,
                cookie,
                replace,
                max_concurrent,
                grace: Duration::from_millis(grace_ms),
            };
            sync(&shared, &mut write, lines, ask, detach).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "daemon client went away");
    }
}

async fn send(write: &mut OwnedWriteHalf, value: &impl serde::Serialize) -> std::io::Result<()> {
    let mut text = serde_json::to_string(value).map_err(std::io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

/// A sync request's content.
#[derive(Default)]
struct Ask {
    targets: Vec<String>,
    reason: String,
    event: Option<String>,
    cookie: Option<String>,
    replace: bool,
    max_concurrent: usize,
    grace: Duration,
    /// `log show`: the entry acted on, and who confirms its retry. Such a
    /// session is never joined by another request.
    show_error: Option<(i64, Arc<RemoteConfirm>)>,
}

impl std::fmt::Debug for Ask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ask")
            .field("targets", &self.targets)
            .field("reason", &self.reason)
            .field("replace", &self.replace)
            .finish_non_exhaustive()
    }
}

/// The question a session's retry asks, with where the answer goes.
type Question = (api::ConfirmQuestion, tokio::sync::oneshot::Sender<bool>);

/// Confirms a `log show` retry by asking the client that follows the
/// session (over its connection); no client, no yes.
#[derive(Debug)]
pub struct RemoteConfirm {
    asks: tokio::sync::mpsc::UnboundedSender<Question>,
    decision: Mutex<Option<bool>>,
}

impl RemoteConfirm {
    fn decision(&self) -> Option<bool> {
        *self.decision.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl syncmgr_core::Confirm for RemoteConfirm {
    async fn confirm(&self, handler: &str, text: &str) -> bool {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let question = api::ConfirmQuestion {
            handler: handler.to_owned(),
            text: text.to_owned(),
        };
        let yes = self.asks.send((question, answer)).is_ok() && answered.await.unwrap_or(false);
        *self.decision.lock().unwrap_or_else(PoisonError::into_inner) = Some(yes);
        yes
    }
}

type Lines = tokio::io::Lines<BufReader<tokio::io::Take<tokio::net::unix::OwnedReadHalf>>>;

async fn sync(
    shared: &Arc<Shared>,
    write: &mut OwnedWriteHalf,
    lines: Lines,
    ask: Ask,
    detach: bool,
) -> std::io::Result<()> {
    let home = shared.home.clone();
    let targets = ask.targets.clone();
    let (event, cookie) = (ask.event.clone(), ask.cookie.clone());
    let planned = tokio::task::spawn_blocking(move || {
        let store = open_store(&home)?;
        let event = plan::sync_event(event.as_deref(), cookie.as_deref())?;
        Ok::<_, ManagerError>((event, plan::jobs(&store, &targets, event)?))
    })
    .await
    .unwrap_or_else(|e| Err(ManagerError::Daemon(format!("planning failed: {e}"))));
    let (event, jobs) = match planned {
        Ok(planned) => planned,
        Err(e) => {
            let usage = matches!(e, ManagerError::Usage(_));
            return send(
                write,
                &SyncReply::Refused(api::Refused {
                    error: e.to_string(),
                    usage,
                }),
            )
            .await;
        }
    };
    if let Err(e) = (SessionRequest {
        jobs: Vec::new(),
        event,
        reason: String::new(),
        may_bother_user: false,
        cookie: None,
        max_concurrent: ask.max_concurrent,
        grace: ask.grace,
        confirm: None,
    })
    .validate()
    {
        let refused = api::Refused {
            error: e.to_string(),
            usage: true,
        };
        return send(write, &SyncReply::Refused(refused)).await;
    }
    let feed: Feed = Arc::new(EventFeed::new());
    let queued = queue(
        shared,
        event,
        jobs,
        &ask,
        (!detach).then(|| Arc::clone(&feed)),
    );
    let Some(id) = accept(shared, write, queued).await? else {
        return Ok(());
    };
    if detach {
        return Ok(());
    }
    follow(shared, write, lines, &id, &feed, None).await
}

/// Answers a request to run a session: refused (the reason), or queued:
/// started if it may, and its id sent. `None` when refused.
async fn accept(
    shared: &Arc<Shared>,
    write: &mut OwnedWriteHalf,
    queued: Result<Arc<str>, String>,
) -> std::io::Result<Option<Arc<str>>> {
    let id = match queued {
        Ok(id) => id,
        Err(error) => {
            let refused = api::Refused {
                error,
                usage: false,
            };
            send(write, &SyncReply::Refused(refused)).await?;
            return Ok(None);
        }
    };
    dispatch(shared);
    let accepted = api::Accepted {
        session: id.to_string(),
        queued: true,
    };
    send(write, &SyncReply::Accepted(accepted)).await?;
    Ok(Some(id))
}

/// What a client following a session may send.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum ClientLine {
    Answer(api::ConfirmAnswer),
    /// Anything else (`{"cancel": null}`) cancels the session.
    Other(serde::de::IgnoredAny),
}

/// Sends the session's events to the client until it ends; a line from
/// the client cancels it, or answers the retry's question (`log show`).
async fn follow(
    shared: &Arc<Shared>,
    write: &mut OwnedWriteHalf,
    mut lines: Lines,
    id: &str,
    feed: &Feed,
    mut asks: Option<tokio::sync::mpsc::UnboundedReceiver<Question>>,
) -> std::io::Result<()> {
    let mut pending: Option<tokio::sync::oneshot::Sender<bool>> = None;
    loop {
        tokio::select! {
            observed = feed.next() => match observed {
                Some(Observed::Event { event, .. }) => {
                    send(write, &*event).await?;
                    if matches!(*event, api::Event::SessionFinished { .. }) {
                        return Ok(());
                    }
                }
                Some(Observed::Failed { error, .. }) => {
                    let refused = api::Refused { error, usage: false };
                    return send(write, &SyncReply::Refused(refused)).await;
                }
                None => return Ok(()),
            },
            Some((question, answer)) = async {
                match asks.as_mut() {
                    Some(asks) => asks.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                send(write, &api::ConfirmAsk { confirm: question }).await?;
                pending = Some(answer);
            }
            line = lines.next_line() => match line {
                Ok(Some(line)) => match serde_json::from_str::<ClientLine>(&line) {
                    Ok(ClientLine::Answer(api::ConfirmAnswer { yes })) => {
                        if let Some(answer) = pending.take() {
                            let _ = answer.send(yes);
                        }
                    }
                    _ => cancel(shared, id),
                },
                // The client went: the session goes on without it (and a
                // question it was asked is answered no).
                Ok(None) | Err(_) => {
                    unfollow(shared, id, feed);
                    return Ok(());
                }
            },
        }
    }
}

/// `log show` in the daemon: the session asks the entry's handler and
/// retries; a retry that needs the user's yes asks this client.
async fn show_error(
    shared: &Arc<Shared>,
    write: &mut OwnedWriteHalf,
    lines: Lines,
    entry: i64,
    max_concurrent: usize,
    grace: Duration,
) -> std::io::Result<()> {
    let planned = read(shared, move |store| plan::show_error_job(store, entry)).await;
    let job = match planned {
        Ok((_, job)) => job,
        Err(e) => return refuse(write, &e).await,
    };
    let (asks_tx, asks) = tokio::sync::mpsc::unbounded_channel();
    let confirm = Arc::new(RemoteConfirm {
        asks: asks_tx,
        decision: Mutex::new(None),
    });
    let ask = Ask {
        reason: requested_by(false),
        max_concurrent,
        grace,
        show_error: Some((entry, confirm)),
        ..Ask::default()
    };
    let feed: Feed = Arc::new(EventFeed::new());
    let queued = queue(
        shared,
        SyncEvent::Manual,
        vec![job],
        &ask,
        Some(Arc::clone(&feed)),
    );
    let Some(id) = accept(shared, write, queued).await? else {
        return Ok(());
    };
    follow(shared, write, lines, &id, &feed, Some(asks)).await
}

/// Answers a request the daemon cannot plan: the error, and whether it is
/// bad input (the command's exit 2).
async fn refuse(write: &mut OwnedWriteHalf, e: &ManagerError) -> std::io::Result<()> {
    let refused = api::Refused {
        error: e.to_string(),
        usage: matches!(e, ManagerError::Usage(_)),
    };
    send(write, &SyncReply::Refused(refused)).await
}

/// `conflicts resolve`: a session that asks the handlers to apply the
/// decisions, then syncs what they resolved; followed like `sync`.
async fn resolve(
    shared: &Arc<Shared>,
    write: &mut OwnedWriteHalf,
    lines: Lines,
    decisions: Vec<api::Decision>,
    max_concurrent: usize,
    grace: Duration,
) -> std::io::Result<()> {
    let planned = read(shared, move |store| plan::resolve_jobs(store, &decisions)).await;
    let jobs = match planned {
        Ok(jobs) => jobs,
        Err(e) => return refuse(write, &e).await,
    };
    let ask = Ask {
        reason: requested_by(false),
        max_concurrent,
        grace,
        ..Ask::default()
    };
    let feed: Feed = Arc::new(EventFeed::new());
    let queued = queue(
        shared,
        SyncEvent::Manual,
        jobs,
        &ask,
        Some(Arc::clone(&feed)),
    );
    let Some(id) = accept(shared, write, queued).await? else {
        return Ok(());
    };
    follow(shared, write, lines, &id, &feed, None).await
}

/// The reason of a session a command (or, with a cookie, a program) asked
/// for.
pub fn requested_by(program: bool) -> String {
    if program {
        "requested by a program".to_owned()
    } else {
        "requested by CLI".to_owned()
    }
}

/// Queues a session, or joins a queued one with the same event that has a
/// registration in common; returns its id. With `replace`, the running
/// sessions of those registrations are cancelled first.
fn queue(
    shared: &Arc<Shared>,
    event: SyncEvent,
    jobs: Vec<(Registration, Selection)>,
    ask: &Ask,
    follower: Option<Feed>,
) -> Result<Arc<str>, String> {
    let mut state = shared.state();
    if state.closing {
        return Err("the daemon is stopping".to_owned());
    }
    let names: HashSet<&str> = jobs.iter().map(|(reg, _)| reg.name.as_str()).collect();
    if ask.replace {
        for entry in &state.sessions {
            if let Some(control) = &entry.control
                && entry.names().any(|n| names.contains(n))
            {
                control.cancel(&CancelTarget::All);
            }
        }
    }
    // A session that resolves conflicts is the user's one decision: it is
    // neither merged into another nor joined by one.
    let resolves = |jobs: &[(Registration, Selection)]| {
        jobs.iter().any(|(_, s)| matches!(s, Selection::Resolve(_)))
    };
    let alone = resolves(&jobs);
    let joined = state.sessions.iter_mut().find(|e| {
        !e.running
            && !alone
            && !resolves(&e.jobs)
            && e.show_error.is_none()
            && ask.show_error.is_none()
            && e.event == event
            && e.names().any(|n| names.contains(n))
    });
    if let Some(entry) = joined {
        plan::merge(&mut entry.jobs, jobs);
        // One session for several reasons says all of them.
        if !entry.reason.split(", ").any(|r| r == ask.reason) {
            entry.reason = format!("{}, {}", entry.reason, ask.reason);
        }
        entry.followers.extend(follower);
        return Ok(Arc::clone(&entry.id));
    }
    let id: Arc<str> = session::new_id().into();
    let entry = Entry {
        id: Arc::clone(&id),
        event,
        reason: ask.reason.clone(),
        jobs,
        cookie: ask.cookie.clone(),
        max_concurrent: ask.max_concurrent,
        grace: ask.grace,
        running: false,
        control: None,
        cancel_asked: false,
        cancels: Vec::new(),
        show_error: ask.show_error.clone(),
        followers: follower.into_iter().collect(),
        started: None,
        items: BTreeMap::new(),
    };
    let queued = Observed::event(
        &id,
        api::Event::Queued {
            session: id.to_string(),
            trigger: event.as_str().to_owned(),
            targets: plan::targets_of(&entry.jobs),
        },
    );
    state.sessions.push(entry);
    for feed in &state.watchers {
        feed.push(queued.clone());
    }
    Ok(id)
}

/// Queues a session the daemon starts by itself (a schedule, a backoff
/// that ended): registrations in backoff are held back until it ends (a
/// later automatic run of the same registration replaces the one held).
fn queue_automatic(
    shared: &Arc<Shared>,
    event: SyncEvent,
    reason: &str,
    jobs: Vec<(Registration, Selection)>,
) {
    let now = Utc::now();
    let ready: Vec<_> = {
        let mut state = shared.state();
        let (held, ready): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|(reg, _)| {
            state
                .backoff
                .get(&reg.name)
                .is_some_and(|b| b.until(now).is_some())
        });
        for (registration, selection) in held {
            tracing::info!(handler = %registration.name, %reason, "held back by its backoff");
            state.deferred.insert(
                registration.name.clone(),
                Deferred {
                    event,
                    reason: reason.to_owned(),
                    registration,
                    selection,
                },
            );
        }
        ready
    };
    if ready.is_empty() {
        return;
    }
    let ask = Ask {
        reason: reason.to_owned(),
        max_concurrent: AUTOMATIC_MAX_CONCURRENT,
        grace: AUTOMATIC_GRACE,
        ..Ask::default()
    };
    if let Err(e) = queue(shared, event, ready, &ask, None) {
        tracing::warn!(%reason, error = %e, "could not queue an automatic session");
    }
}

/// Tells the watchers that a trigger fired.
fn publish_trigger(shared: &Arc<Shared>, trigger: SyncEvent, reason: &str, at: DateTime<Utc>) {
    let observed = Observed::event(
        &Arc::from("daemon"),
        api::Event::Trigger {
            trigger: trigger.as_str().to_owned(),
            reason: reason.to_owned(),
            time: api::time(at),
        },
    );
    let state = shared.state();
    for feed in &state.watchers {
        feed.push(observed.clone());
    }
}

/// The daemon's clock: fires the schedules that are due (each once, however
/// many runs it missed), starts what a backoff held back once it ends,
/// prunes old history once a day. It sleeps until the next of these, at
/// most [`crate::schedule::MAX_SLEEP`], so a wall-clock change or a resume
/// from suspend is seen within a minute; nothing wakes it more often when
/// nothing is due.
async fn timer(shared: Arc<Shared>) {
    let mut warned: HashSet<String> = HashSet::new();
    let mut pruned: Option<Instant> = None;
    loop {
        // Registered before looking, so a wake-up during this round is kept.
        let woken = shared.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if shared.state().closing {
            return;
        }
        // Counted by the idle benchmark (benches/daemon.rs).
        tracing::trace!("timer round");
        let now = Utc::now();
        let busy = shared.state().ended_since_prune >= PRUNE_AFTER_SESSIONS;
        if busy || pruned.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            shared.state().ended_since_prune = 0;
            prune(&shared, now).await;
            pruned = Some(Instant::now());
        }
        let mut due_times = Vec::new();
        let schedules = match read(&shared, |store| Ok(store.schedules()?)).await {
            Ok(schedules) => schedules,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the schedules");
                Vec::new()
            }
        };
        for record in schedules {
            let schedule = match Schedule::from_record(&record) {
                Ok(schedule) => schedule,
                Err(e) => {
                    if warned.insert(record.name.clone()) {
                        tracing::warn!(schedule = %record.name, error = %e, "schedule left out");
                    }
                    continue;
                }
            };
            let held = shared
                .state()
                .rules
                .as_ref()
                .and_then(|r| r.deferral(SyncEvent::Scheduled));
            match schedule.due(now) {
                // Deferred, not failed: it stays due, and runs at the first
                // round after its constraint holds again.
                Some(due) if due <= now && held.is_some() => {}
                Some(due) if due <= now => fire(&shared, &record, now).await,
                Some(due) => due_times.push(due),
                None => {}
            }
        }
        // Runs a backoff held back: those whose backoff ended go now.
        let ready: Vec<Deferred> = {
            let mut state = shared.state();
            let mut ready = Vec::new();
            let names: Vec<String> = state.deferred.keys().cloned().collect();
            for name in names {
                match state.backoff.get(&name).and_then(|b| b.until(now)) {
                    Some(until) => due_times.push(until),
                    None => ready.extend(state.deferred.remove(&name)),
                }
            }
            ready
        };
        for deferred in ready {
            queue_automatic(
                &shared,
                deferred.event,
                &deferred.reason,
                vec![(deferred.registration, deferred.selection)],
            );
        }
        dispatch(&shared);
        // A registration may have opted in (or out) of pendingDisconnect.
        #[cfg(target_os = "linux")]
        ensure_inhibitor(&shared).await;
        let sleep = sleep_until_next(Utc::now(), due_times);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = woken => {}
        }
    }
}

/// Runs a schedule that is due: its session is queued (or joins a queued
/// one) and its run recorded, even when nothing could be queued (a target
/// that went away), so it is not tried again at once.
async fn fire(shared: &Arc<Shared>, record: &ScheduleRecord, now: DateTime<Utc>) {
    let reason = format!("schedule {}", record.name);
    let event = SyncEvent::Scheduled;
    publish_trigger(shared, event, &reason, now);
    let targets = record.targets.clone();
    match read(shared, move |store| plan::jobs(store, &targets, event)).await {
        Ok(jobs) => queue_automatic(shared, event, &reason, jobs),
        Err(e) => tracing::warn!(schedule = %record.name, error = %e, "schedule cannot run"),
    }
    let name = record.name.clone();
    if let Err(e) = read(shared, move |store| Ok(store.set_schedule_run(&name, now)?)).await {
        tracing::warn!(schedule = %record.name, error = %e, "cannot record the schedule's run");
    }
    shared.state().schedule_fired = Some(now);
}

/// Retention: finished sessions and information entries older than the
/// configured ages go.
async fn prune(shared: &Arc<Shared>, now: DateTime<Utc>) {
    let keep = {
        let config = &shared.state().config;
        let age =
            |d: Duration| now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        Retention {
            history_before: age(config.keep_history),
            sessions: config.keep_sessions,
            information_before: age(config.keep_information),
        }
    };
    match read(shared, move |store| Ok(store.prune(&keep)?)).await {
        Ok((0, 0)) => {}
        Ok((sessions, entries)) => {
            tracing::info!(sessions, entries, "pruned what is past its retention");
        }
        Err(e) => tracing::warn!(error = %e, "cannot prune the history"),
    }
}

/// Runs `f` on a store of the home, on a blocking thread.
async fn read<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
) -> Result<T> {
    let home = shared.home.clone();
    tokio::task::spawn_blocking(move || f(&open_store(&home)?))
        .await
        .unwrap_or_else(|e| Err(ManagerError::Daemon(format!("a store task failed: {e}"))))
}

/// The operating system's triggers: what the sources see goes through the
/// rules (`triggers.rs`), and their actions are carried out here. It wakes
/// for a source's news, and for the rules' next due time (idle repeat,
/// network debounce) only when there is one.
async fn trigger_loop(shared: Arc<Shared>) {
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<Seen>();
    // Without sources nothing is ever sent (the sender is kept, so the
    // loop waits on its timers rather than seeing the channel close).
    #[cfg(target_os = "linux")]
    let _unused = if shared.options.without_os_triggers {
        Some(tx)
    } else {
        let idle_after = shared.state().config.triggers.idle_after;
        let sources = crate::sources::watch(tx, idle_after).await;
        shared.state().sources = Some(sources);
        ensure_inhibitor(&shared).await;
        None
    };
    #[cfg(not(target_os = "linux"))]
    let _unused = Some(tx);
    let mut sources_gone = false;
    loop {
        let stopping = shared.stopping.notified();
        tokio::pin!(stopping);
        stopping.as_mut().enable();
        let due = {
            let state = shared.state();
            if state.closing {
                return;
            }
            state.rules.as_ref().and_then(Rules::next_due)
        };
        let until_due = async {
            match due {
                Some(due) => tokio::time::sleep_until(due.into()).await,
                None => std::future::pending().await,
            }
        };
        let actions = tokio::select! {
            news = seen.recv(), if !sources_gone => match news {
                Some(news) => {
                    tracing::debug!(?news, "trigger source");
                    let now = Instant::now();
                    shared.state().rules.as_mut().map(|r| r.seen(news, now)).unwrap_or_default()
                }
                None => {
                    sources_gone = true;
                    Vec::new()
                }
            },
            () = until_due => {
                let now = Instant::now();
                shared.state().rules.as_mut().map(|r| r.tick(now)).unwrap_or_default()
            }
            () = stopping => return,
        };
        for action in actions {
            execute(&shared, action).await;
        }
    }
}

/// Carries out what the trigger rules decided.
async fn execute(shared: &Arc<Shared>, action: Action) {
    match action {
        Action::Run { event, reason } => {
            let deferred = {
                let mut state = shared.state();
                let deferral = state.rules.as_ref().and_then(|r| r.deferral(event));
                if let (Some(why), Some(rules)) = (deferral, state.rules.as_mut()) {
                    tracing::info!(%event, %reason, why, "held until its constraint holds");
                    rules.hold(event, reason.clone());
                    true
                } else {
                    false
                }
            };
            if deferred {
                return;
            }
            publish_trigger(shared, event, &reason, Utc::now());
            // A session a constraint cancelled runs again as it was.
            let held = {
                let mut state = shared.state();
                let found = state
                    .held_jobs
                    .iter()
                    .position(|(e, r, _)| *e == event && *r == reason);
                found.map(|i| state.held_jobs.remove(i).2)
            };
            if let Some(jobs) = held {
                queue_automatic(shared, event, &reason, jobs);
                dispatch(shared);
                return;
            }
            // Every registration that takes part in the event (the ones that
            // opted in, for the automatic events that need it).
            match read(shared, move |store| plan::jobs(store, &[], event)).await {
                Ok(jobs) if !jobs.is_empty() => queue_automatic(shared, event, &reason, jobs),
                Ok(_) => {}
                Err(e) => tracing::debug!(%event, error = %e, "nothing to run"),
            }
            dispatch(shared);
        }
        Action::Cancel {
            events,
            reason,
            again,
        } => {
            let mut state = shared.state();
            let mut rerun = Vec::new();
            for entry in &state.sessions {
                if entry.running && events.contains(&entry.event) {
                    tracing::info!(session = %entry.id, %reason, "cancelled by a trigger");
                    if let Some(control) = &entry.control {
                        control.cancel_because(&reason);
                    }
                    if again {
                        rerun.push((entry.event, entry.reason.clone(), entry.jobs.clone()));
                    }
                }
            }
            for (event, why, jobs) in rerun {
                if let Some(rules) = state.rules.as_mut() {
                    rules.hold(event, why.clone());
                }
                state
                    .held_jobs
                    .retain(|(e, r, _)| !(*e == event && *r == why));
                state.held_jobs.push((event, why, jobs));
            }
        }
        Action::ClearBackoffs => {
            shared.state().backoff.clear();
            shared.wake.notify_one();
        }
        Action::PendingDisconnect {
            reason,
            deadline,
            inhibited,
        } => {
            pending_disconnect(shared, reason, deadline, inhibited).await;
        }
        Action::Inhibit => {
            shared.state().going = false;
            #[cfg(target_os = "linux")]
            ensure_inhibitor(shared).await;
        }
    }
}

/// Sleep, shutdown or logoff: a `pendingDisconnect` session for the
/// registrations that opted in, cancelled at the deadline; the inhibitor
/// that gave the time is released when the session ends or at the
/// deadline, whichever comes first: always in time.
async fn pending_disconnect(
    shared: &Arc<Shared>,
    reason: String,
    deadline: Duration,
    inhibited: bool,
) {
    let event = SyncEvent::PendingDisconnect;
    publish_trigger(shared, event, &reason, Utc::now());
    #[cfg(target_os = "linux")]
    let inhibitor = if inhibited {
        let mut state = shared.state();
        state.going = true;
        state.inhibitor.take()
    } else {
        None
    };
    #[cfg(not(target_os = "linux"))]
    let _ = inhibited;
    let jobs = read(shared, move |store| plan::jobs(store, &[], event))
        .await
        .unwrap_or_default();
    if jobs.is_empty() {
        return;
    }
    let deadline = effective_deadline(shared, deadline).await;
    let ask = Ask {
        reason,
        max_concurrent: AUTOMATIC_MAX_CONCURRENT,
        // Handlers that ignore the cancel are ended well before the
        // system's limit.
        grace: deadline / 4,
        ..Ask::default()
    };
    let id = match queue(shared, event, jobs, &ask, None) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "cannot queue the pendingDisconnect session");
            return;
        }
    };
    dispatch(shared);
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let ended = async {
            loop {
                let ended = shared.ended.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                if shared.state().entry(&id).is_none() {
                    return;
                }
                ended.await;
            }
        };
        if tokio::time::timeout(deadline, ended).await.is_err() {
            tracing::warn!(session = %id, "pendingDisconnect session past its deadline: cancelled");
            let control = shared.state().entry(&id).and_then(|e| e.control.clone());
            match control {
                Some(control) => {
                    control.cancel_because("deadline");
                }
                None => cancel(&shared, &id),
            }
        }
        #[cfg(target_os = "linux")]
        drop(inhibitor);
    });
}

/// `[disconnect] deadline`, kept half a second inside logind's limit on
/// delay inhibitors when logind tells it.
async fn effective_deadline(shared: &Arc<Shared>, deadline: Duration) -> Duration {
    #[cfg(target_os = "linux")]
    {
        let sources = shared.state().sources.clone();
        if let Some(sources) = sources
            && let Some(limit) = sources.delay_limit().await
        {
            let inside = limit.saturating_sub(Duration::from_millis(500));
            if !inside.is_zero() {
                return deadline.min(inside);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = shared;
    deadline
}

/// Holds logind's delay inhibitor while a registration opts in to
/// `pendingDisconnect`, and only then.
#[cfg(target_os = "linux")]
async fn ensure_inhibitor(shared: &Arc<Shared>) {
    let wanted = read(shared, |store| {
        Ok(store
            .registrations()?
            .iter()
            .any(|r| r.events.contains(&SyncEvent::PendingDisconnect)))
    })
    .await
    .unwrap_or(false);
    let (held, sources) = {
        let state = shared.state();
        if state.going {
            return;
        }
        (state.inhibitor.is_some(), state.sources.clone())
    };
    if wanted && !held {
        if let Some(fd) = match sources {
            Some(sources) => sources.inhibit().await,
            None => None,
        } {
            tracing::info!("holding logind's delay inhibitor for pendingDisconnect");
            let configured = shared.state().config.triggers.disconnect_deadline;
            let deadline = effective_deadline(shared, configured).await;
            let mut state = shared.state();
            state.inhibitor = Some(fd);
            state.deadline = Some(deadline);
        }
    } else if !wanted && held {
        shared.state().inhibitor = None;
    }
}

/// SIGHUP: reads `config.toml` again; a file with errors is reported and
/// the settings in force stay.
fn reload(shared: &Arc<Shared>) {
    let Some(path) = &shared.options.config_path else {
        shared.wake.notify_one();
        return;
    };
    match Config::load(path) {
        Ok(config) => {
            let mut state = shared.state();
            state.config = shared.options.effective(&config);
            if let Some(rules) = state.rules.as_mut() {
                rules.set_settings(config.triggers.clone());
            }
            drop(state);
            tracing::info!(path = %path.display(), "configuration reloaded");
        }
        Err(e) => tracing::error!(error = %e, "configuration not reloaded; the old one stays"),
    }
    // Schedules may have changed too.
    shared.wake.notify_one();
    dispatch(shared);
}

/// Cancels a session: now when it runs, as it starts when queued.
fn cancel(shared: &Arc<Shared>, id: &str) {
    let mut state = shared.state();
    if let Some(entry) = state.entry(id) {
        entry.cancel_asked = true;
        if let Some(control) = &entry.control {
            control.cancel(&CancelTarget::All);
        }
    }
}

/// Cancels `targets` in the queued sessions (applied as each starts).
fn cancel_queued(shared: &Arc<Shared>, targets: &[String]) -> Result<api::QueuedCancel> {
    let parsed: Vec<CancelTarget> = if targets.is_empty() {
        vec![CancelTarget::All]
    } else {
        targets
            .iter()
            .map(|t| crate::control::parse_target(t))
            .collect::<Result<_>>()?
    };
    let mut matched = vec![false; parsed.len()];
    let mut sessions = Vec::new();
    let mut state = shared.state();
    // Not yet controllable: queued, or starting (its control socket not
    // bound yet). Both apply the cancel as they get their control.
    for entry in state.sessions.iter_mut().filter(|e| e.control.is_none()) {
        let mut touched = false;
        for (target, hit) in parsed.iter().zip(matched.iter_mut()) {
            let has = match target {
                CancelTarget::All => true,
                CancelTarget::Handler(name) | CancelTarget::Item { handler: name, .. } => {
                    entry.jobs.iter().any(|(reg, _)| &reg.name == name)
                }
            };
            if has {
                *hit = true;
                touched = true;
                if matches!(target, CancelTarget::All) {
                    entry.cancel_asked = true;
                } else {
                    entry.cancels.push(target.clone());
                }
            }
        }
        if touched {
            sessions.push(entry.id.to_string());
        }
    }
    Ok(api::QueuedCancel { sessions, matched })
}

fn unfollow(shared: &Arc<Shared>, id: &str, feed: &Feed) {
    let mut state = shared.state();
    if let Some(entry) = state.entry(id) {
        entry.followers.retain(|f| !Arc::ptr_eq(f, feed));
    }
}

/// `events`: the running sessions' state first, then everything live.
async fn watch(
    shared: &Arc<Shared>,
    write: &mut OwnedWriteHalf,
    mut lines: Lines,
) -> std::io::Result<()> {
    let feed: Feed = Arc::new(EventFeed::new());
    let snapshot: Vec<Arc<api::Event>> = {
        let mut state = shared.state();
        state.watchers.push(Arc::clone(&feed));
        state
            .sessions
            .iter()
            .flat_map(|e| e.started.iter().chain(e.items.values()).cloned())
            .collect()
    };
    let result = async {
        for event in snapshot {
            send(write, &*event).await?;
        }
        loop {
            tokio::select! {
                observed = feed.next() => match observed {
                    Some(Observed::Event { event, .. }) => send(write, &*event).await?,
                    Some(Observed::Failed { .. }) => {}
                    None => return Ok(()),
                },
                line = lines.next_line() => if !matches!(line, Ok(Some(_))) {
                    return Ok(());
                },
            }
        }
    }
    .await;
    shared.state().watchers.retain(|f| !Arc::ptr_eq(f, &feed));
    result
}

/// `status`: the daemon, its sessions, every registration.
async fn status(shared: &Arc<Shared>, write: &mut OwnedWriteHalf) -> std::io::Result<()> {
    let now = Utc::now();
    let daemon = {
        let state = shared.state();
        let mut states: BTreeMap<String, &'static str> = BTreeMap::new();
        for entry in &state.sessions {
            let what = if entry.running { "running" } else { "queued" };
            for name in entry.names() {
                let slot = states.entry(name.to_owned()).or_insert(what);
                if what == "running" {
                    *slot = what;
                }
            }
        }
        let mut backoff = BTreeMap::new();
        for (name, b) in &state.backoff {
            if let Some(until) = b.until(now) {
                backoff.insert(name.clone(), until);
                states.entry(name.clone()).or_insert("backoff");
            }
        }
        Running {
            info: api::DaemonInfo {
                pid: shared.pid,
                started: api::time(shared.started),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                watchers: state.watchers.len(),
                web: shared.web.clone(),
                notifications: Some(shared.notifier.availability()),
            },
            sessions: state.sessions.iter().map(Entry::status).collect(),
            states,
            backoff,
            schedule_fired: state.schedule_fired,
            triggers: os_triggers(&state, now),
            schedules_held: state
                .rules
                .as_ref()
                .and_then(|r| r.deferral(SyncEvent::Scheduled)),
        }
    };
    let status = read(shared, move |store| status_of(store, Some(daemon), now)).await;
    match status {
        Ok(status) => send(write, &status).await,
        Err(e) => {
            let refused = api::Refused {
                error: e.to_string(),
                usage: false,
            };
            send(write, &refused).await
        }
    }
}

/// What a running daemon adds to the status the store gives.
#[derive(Debug)]
pub struct Running {
    info: api::DaemonInfo,
    sessions: Vec<api::SessionState>,
    /// Registrations that are not idle, and what they are.
    states: BTreeMap<String, &'static str>,
    backoff: BTreeMap<String, DateTime<Utc>>,
    schedule_fired: Option<DateTime<Utc>>,
    /// The operating system's triggers.
    triggers: Vec<api::TriggerState>,
    /// Why scheduled sessions wait now (a constraint), if they do.
    schedules_held: Option<&'static str>,
}

/// The operating system's triggers for `status`: each with whether it can
/// fire and why not, and when it last fired.
fn os_triggers(state: &State, now: DateTime<Utc>) -> Vec<api::TriggerState> {
    let Some(rules) = &state.rules else {
        return Vec::new();
    };
    let wall = |at: Instant| {
        let ago = chrono::Duration::from_std(at.elapsed()).unwrap_or_default();
        api::time(now - ago)
    };
    #[cfg(target_os = "linux")]
    let availability = state
        .sources
        .as_ref()
        .map(crate::sources::Sources::availability)
        .unwrap_or_default()
        .sources;
    #[cfg(not(target_os = "linux"))]
    let availability: BTreeMap<&'static str, Result<(), String>> = BTreeMap::new();
    let source = |name: &str| -> Result<(), String> {
        availability
            .get(name)
            .cloned()
            .unwrap_or_else(|| Err("not watched yet".to_owned()))
    };
    let entry = |trigger: &str, state: Result<String, String>, fired: &str| {
        let (available, reason) = match state {
            Ok(reason) => (true, reason),
            Err(reason) => (false, reason),
        };
        api::TriggerState {
            trigger: trigger.to_owned(),
            available,
            reason,
            last_fired: rules.last_fired(fired).map(wall),
        }
    };
    let idle_source = match source("mutter") {
        Ok(()) => Ok(()),
        Err(_) => source("logind"),
    };
    let idle = idle_source.and_then(|()| match rules.idle() {
        Some(true) => Ok("the user is idle".to_owned()),
        Some(false) => Ok("the user is active".to_owned()),
        None => Err("no session reports idle".to_owned()),
    });
    // Without NetworkManager, a default route is what online means.
    let routes = if source("routes").is_ok() {
        " (default route)"
    } else {
        ""
    };
    let network = source("network").map(|()| match rules.network() {
        Some(n) if n.online && n.metered => "online, metered".to_owned(),
        Some(n) if n.online => format!("online{routes}"),
        Some(_) => format!("offline{routes}"),
        None => "NetworkManager".to_owned(),
    });
    #[cfg(target_os = "linux")]
    let inhibitor = state.inhibitor.is_some();
    #[cfg(not(target_os = "linux"))]
    let inhibitor = false;
    let disconnect = source("logind").map(|()| {
        if inhibitor {
            let deadline = state
                .deadline
                .unwrap_or(state.config.triggers.disconnect_deadline);
            format!(
                "logind's delay inhibitor is held (deadline {})",
                syncmgr_core::duration::format(deadline)
            )
        } else {
            "no handler opted in (`register --events pendingDisconnect`)".to_owned()
        }
    });
    let battery = source("battery").map(|()| match rules.on_battery() {
        Some(true) => "on battery".to_owned(),
        Some(false) => "on mains".to_owned(),
        None => "UPower".to_owned(),
    });
    vec![
        entry("idle", idle, "idle"),
        entry("connect", network, "network"),
        entry(
            "logon",
            source("logind").map(|()| "logind".to_owned()),
            "logon",
        ),
        entry("pendingDisconnect", disconnect, "pendingDisconnect"),
        entry("battery", battery, "battery"),
    ]
}

/// The status shape at `now` from the store, with a running daemon's part
/// when there is one (`None`: every registration idle, no sessions).
pub fn status_of(
    store: &Store,
    daemon: Option<Running>,
    now: DateTime<Utc>,
) -> Result<api::Status> {
    let daemon = daemon.map(|d| (d.info.clone(), d));
    let last: BTreeMap<String, _> = store.last_sessions()?.into_iter().collect();
    let schedules: Vec<(Schedule, Vec<String>)> = store
        .schedules()?
        .iter()
        .filter_map(|record| {
            let schedule = Schedule::from_record(record).ok()?;
            let names = record
                .targets
                .iter()
                .map(|t| t.split('/').next().unwrap_or(t).to_owned())
                .collect();
            Some((schedule, names))
        })
        .collect();
    let registrations = store
        .registrations()?
        .into_iter()
        .map(|reg| {
            // The earliest schedule that runs this registration.
            let next = schedules
                .iter()
                .filter(|(_, names)| names.is_empty() || names.contains(&reg.name))
                .filter_map(|(s, _)| Some((s.due(now)?.max(now), s.name.clone())))
                .min();
            let (state, backoff) = daemon.as_ref().map_or(("idle", None), |(_, d)| {
                let scheduled = next.is_some() && d.schedules_held.is_some();
                let idle = if scheduled { "deferred" } else { "idle" };
                (
                    d.states.get(&reg.name).copied().unwrap_or(idle),
                    d.backoff.get(&reg.name).copied(),
                )
            });
            api::RegistrationState {
                state: state.to_owned(),
                last_session: last.get(&reg.name).and_then(|s| {
                    Some(api::LastSession {
                        id: s.id.clone(),
                        outcome: s.outcome?.as_str().to_owned(),
                        finished: api::time(s.finished?),
                    })
                }),
                next_run: next.as_ref().map(|(t, _)| api::time(*t)),
                next_reason: next.map(|(_, name)| {
                    match daemon.as_ref().and_then(|(_, d)| d.schedules_held) {
                        Some(why) => format!("schedule {name}, held: {why}"),
                        None => format!("schedule {name}"),
                    }
                }),
                backoff_until: backoff.map(api::time),
                name: reg.name,
            }
        })
        .collect();
    let running = daemon.is_some();
    let triggers = vec![
        api::TriggerState {
            trigger: "manual".to_owned(),
            available: true,
            reason: "`syncmgr sync`".to_owned(),
            last_fired: None,
        },
        api::TriggerState {
            trigger: "invoke".to_owned(),
            available: true,
            reason: "`syncmgr sync --cookie` or the daemon's socket".to_owned(),
            last_fired: None,
        },
        api::TriggerState {
            trigger: "schedule".to_owned(),
            available: running,
            reason: if running {
                format!("{} schedules", schedules.len())
            } else {
                "no daemon runs: schedules fire only in the daemon".to_owned()
            },
            last_fired: daemon
                .as_ref()
                .and_then(|(_, d)| d.schedule_fired)
                .map(api::time),
        },
    ];
    let mut triggers = triggers;
    let (info, sessions) = match daemon {
        Some((info, d)) => {
            triggers.extend(d.triggers);
            (Some(info), d.sessions)
        }
        None => {
            // The operating system's triggers fire only in the daemon.
            for trigger in ["idle", "connect", "logon", "pendingDisconnect", "battery"] {
                triggers.push(api::TriggerState {
                    trigger: trigger.to_owned(),
                    available: false,
                    reason: "no daemon runs".to_owned(),
                    last_fired: None,
                });
            }
            (None, Vec::new())
        }
    };
    Ok(api::Status {
        daemon: info,
        sessions,
        registrations,
        triggers,
    })
}
