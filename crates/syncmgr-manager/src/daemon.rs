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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use syncmgr_api::{self as api, DaemonRequest, SyncReply};
use syncmgr_core::{CancelTarget, EventFeed, FeedEvent, Selection, SessionControl, SyncEvent};
use syncmgr_store::{Registration, Store};
use syncmgr_sys::FileLock;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

use crate::error::{ManagerError, Result};
use crate::home::Home;
use crate::plan;
use crate::session::{self, SessionRequest, SessionRun};

/// Sessions running at once unless configured otherwise.
pub const DEFAULT_MAX_CONCURRENT: usize = 4;
/// The longest first line a client may send.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Sessions running at once.
    pub max_concurrent: usize,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
        }
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
    /// Queued and running sessions, in the order they were asked for.
    sessions: Vec<Entry>,
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

/// The daemon's shared state.
#[derive(Debug)]
struct Shared {
    home: Home,
    config: DaemonConfig,
    pid: u32,
    started: chrono::DateTime<chrono::Utc>,
    state: Mutex<State>,
    /// Wakes the shutdown path when a session ends.
    ended: Notify,
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
    let lock_path = home.daemon_lock();
    let Some(_lock) = FileLock::try_exclusive(&lock_path)
        .map_err(|e| ManagerError::io(format!("cannot lock {}", lock_path.display()), e))?
    else {
        let pid = fs::read_to_string(home.daemon_pid())
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        return Err(ManagerError::DaemonRunning { pid });
    };
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
    tracing::info!(pid, socket = %socket_path.display(), "daemon started");

    let shared = Arc::new(Shared {
        home,
        config,
        pid,
        started: chrono::Utc::now(),
        state: Mutex::new(State::default()),
        ended: Notify::new(),
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
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
        if entry.running || running >= shared.config.max_concurrent {
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
            may_bother_user: entry.event.may_bother_user_by_default(),
            cookie: entry.cookie.clone(),
            max_concurrent: entry.max_concurrent,
            grace: entry.grace,
            confirm: None,
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
        }
    }
    while let Some(event) = run.next_event().await {
        if let Some(event) = api::Event::from_session(&event) {
            let observed = Observed::event(&id, event);
            shared.state().publish(&id, &observed);
        }
    }
    if let Err(e) = run.finish(None).await {
        tracing::warn!(session = %id, error = %e, "could not store the end of the session");
    }
    end(&shared, &id);
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
        DaemonRequest::Status => status(&shared, &mut write).await,
        DaemonRequest::Events => watch(&shared, &mut write, lines).await,
        DaemonRequest::Sync {
            targets,
            event,
            cookie,
            detach,
            replace,
            max_concurrent,
            grace_ms,
        } => {
            let ask = Ask {
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
#[derive(Debug)]
struct Ask {
    targets: Vec<String>,
    event: Option<String>,
    cookie: Option<String>,
    replace: bool,
    max_concurrent: usize,
    grace: Duration,
}

type Lines = tokio::io::Lines<BufReader<tokio::io::Take<tokio::net::unix::OwnedReadHalf>>>;

async fn sync(
    shared: &Arc<Shared>,
    write: &mut OwnedWriteHalf,
    mut lines: Lines,
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
    let id = match queued {
        Ok(id) => id,
        Err(error) => {
            let refused = api::Refused {
                error,
                usage: false,
            };
            return send(write, &SyncReply::Refused(refused)).await;
        }
    };
    dispatch(shared);
    send(
        write,
        &SyncReply::Accepted(api::Accepted {
            session: id.to_string(),
            queued: true,
        }),
    )
    .await?;
    if detach {
        return Ok(());
    }
    // Follow the session; a line from the client cancels it.
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
            line = lines.next_line() => match line {
                Ok(Some(_)) => cancel(shared, &id),
                // The client went: the session goes on without it.
                Ok(None) | Err(_) => {
                    unfollow(shared, &id, &feed);
                    return Ok(());
                }
            },
        }
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
    let joined = state
        .sessions
        .iter_mut()
        .find(|e| !e.running && e.event == event && e.names().any(|n| names.contains(n)));
    if let Some(entry) = joined {
        plan::merge(&mut entry.jobs, jobs);
        entry.followers.extend(follower);
        return Ok(Arc::clone(&entry.id));
    }
    let id: Arc<str> = session::new_id().into();
    let entry = Entry {
        id: Arc::clone(&id),
        event,
        jobs,
        cookie: ask.cookie.clone(),
        max_concurrent: ask.max_concurrent,
        grace: ask.grace,
        running: false,
        control: None,
        cancel_asked: false,
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
    let (sessions, running, queued) = {
        let state = shared.state();
        let mut running = HashSet::new();
        let mut queued = HashSet::new();
        for entry in &state.sessions {
            let set = if entry.running {
                &mut running
            } else {
                &mut queued
            };
            set.extend(entry.names().map(str::to_owned));
        }
        (
            state.sessions.iter().map(Entry::status).collect::<Vec<_>>(),
            running,
            queued,
        )
    };
    let daemon = api::DaemonInfo {
        pid: shared.pid,
        started: api::time(shared.started),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let home = shared.home.clone();
    let status = tokio::task::spawn_blocking(move || {
        let store = open_store(&home)?;
        status_of(&store, Some(daemon), sessions, |name| {
            if running.contains(name) {
                "running"
            } else if queued.contains(name) {
                "queued"
            } else {
                "idle"
            }
        })
    })
    .await
    .unwrap_or_else(|e| Err(ManagerError::Daemon(format!("status failed: {e}"))));
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

/// The status shape from the store, the daemon's part given.
pub fn status_of(
    store: &Store,
    daemon: Option<api::DaemonInfo>,
    sessions: Vec<api::SessionState>,
    state_of: impl Fn(&str) -> &'static str,
) -> Result<api::Status> {
    let last: BTreeMap<String, _> = store.last_sessions()?.into_iter().collect();
    let registrations = store
        .registrations()?
        .into_iter()
        .map(|reg| api::RegistrationState {
            state: state_of(&reg.name).to_owned(),
            last_session: last.get(&reg.name).and_then(|s| {
                Some(api::LastSession {
                    id: s.id.clone(),
                    outcome: s.outcome?.as_str().to_owned(),
                    finished: api::time(s.finished?),
                })
            }),
            next_run: None,
            next_reason: None,
            backoff_until: None,
            name: reg.name,
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
            available: false,
            reason: if running {
                "schedules are not in this version yet"
            } else {
                "no daemon runs"
            }
            .to_owned(),
            last_fired: None,
        },
    ];
    Ok(api::Status {
        daemon,
        sessions,
        registrations,
        triggers,
    })
}
