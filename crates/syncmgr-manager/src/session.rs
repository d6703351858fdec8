//! One session from its plan to its stored outcome, for any host.
//!
//! [`SessionRun::start`] takes the registrations' locks (a busy one is left
//! out with an error entry, never run twice), records the session, builds
//! the handlers, starts the engine and its control socket. The host then
//! takes the events ([`SessionRun::next_event`]: the enumerations are stored
//! as they pass) and may cancel through [`SessionRun::control`];
//! [`SessionRun::finish`] stores the outcome. What a host does with the
//! events (a terminal, JSON lines, the daemon's observers) is its own
//! business: nothing here waits for a display.

use std::sync::Arc;
use std::time::Duration;

use syncmgr_core::{
    Confirm, HandlerJob, Selection, Session, SessionConfig, SessionControl, SessionEvent,
    SessionSummary, StatusCounts, SyncEvent,
};
use syncmgr_store::{Registration, SessionRecord, Store, StoreWriter};
use syncmgr_sys::FileLock;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::control::ControlSocket;
use crate::error::{ManagerError, Result};
use crate::handlers::{DEFAULT_TIMEOUT, FailedHandler, build_handler};
use crate::home::Home;

/// The most a `--grace` may be.
pub const MAX_GRACE: Duration = Duration::from_secs(3600);

/// What one session is to do.
#[derive(Clone)]
pub struct SessionRequest {
    /// Each registration with the items it is to sync.
    pub jobs: Vec<(Registration, Selection)>,
    /// The event the handlers see.
    pub event: SyncEvent,
    /// Why it runs, for people (`requested by CLI`, `schedule nightly`).
    pub reason: String,
    /// Whether handlers may show UI (`--quiet` off, manual syncs).
    pub may_bother_user: bool,
    /// The program's cookie (`invoke`).
    pub cookie: Option<String>,
    /// Handlers run at once.
    pub max_concurrent: usize,
    /// How long a cancelled handler has to stop.
    pub grace: Duration,
    /// Who answers a retry that needs the user's yes.
    pub confirm: Option<Arc<dyn Confirm>>,
}

impl std::fmt::Debug for SessionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRequest")
            .field(
                "jobs",
                &self
                    .jobs
                    .iter()
                    .map(|(reg, selection)| (&reg.name, selection))
                    .collect::<Vec<_>>(),
            )
            .field("event", &self.event)
            .field("max_concurrent", &self.max_concurrent)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl SessionRequest {
    /// Checks the tuning a user gave.
    pub fn validate(&self) -> Result<()> {
        if self.grace > MAX_GRACE {
            return Err(ManagerError::usage("--grace must be at most 1h"));
        }
        if self.max_concurrent == 0 {
            return Err(ManagerError::usage("--max-concurrent must be at least 1"));
        }
        Ok(())
    }

    /// The registrations' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.jobs.iter().map(|(reg, _)| reg.name.clone()).collect()
    }
}

/// A running session.
#[derive(Debug)]
pub struct SessionRun {
    id: String,
    control: SessionControl,
    events: mpsc::Receiver<SessionEvent>,
    running: JoinHandle<SessionSummary>,
    writer: StoreWriter,
    /// Enumerations being stored; awaited before the outcome is.
    stored: Vec<JoinHandle<()>>,
    finished: Option<SessionSummary>,
    _locks: Vec<FileLock>,
    _socket: ControlSocket,
}

impl SessionRun {
    /// Starts session `id` ([`new_id`]): `store` is the host's connection (used for the
    /// reads and the session's record), `home` gives the locks and the
    /// control socket's place. Blocks briefly on the store: a host on an
    /// async thread calls it from a blocking task or accepts that.
    pub fn start(
        home: &Home,
        store: Store,
        id: String,
        request: SessionRequest,
    ) -> Result<SessionRun> {
        request.validate()?;
        // One session at a time per registration, whoever runs it: the lock
        // is held as long as this value, and the kernel drops it if the
        // process dies, so a crash leaves nothing behind.
        let mut locks = Vec::new();
        let mut busy = Vec::new();
        for (reg, _) in &request.jobs {
            match home.lock_registration(&reg.name)? {
                Some(lock) => locks.push(lock),
                None => busy.push(reg.name.clone()),
            }
        }

        store.begin_session(&SessionRecord {
            id: id.clone(),
            trigger: request.event,
            started: chrono::Utc::now(),
            finished: None,
            outcome: None,
            counts: StatusCounts::default(),
            pid: std::process::id(),
            reason: Some(request.reason.clone()),
        })?;
        let all = store.registrations()?;
        let writer = store.spawn_writer()?;

        let jobs = request
            .jobs
            .iter()
            .map(|(reg, selection)| {
                let handler = if busy.contains(&reg.name) {
                    Err(ManagerError::Handler(format!(
                        "handler {} is already syncing in another session; it was left out of this one (sync it again when that session has finished)",
                        reg.name
                    )))
                } else {
                    build_handler(reg, &all)
                };
                let handler = handler.unwrap_or_else(|e| {
                    Box::new(FailedHandler::new(e.to_string())) as Box<dyn syncmgr_core::Handler>
                });
                HandlerJob {
                    name: reg.name.clone(),
                    handler,
                    selection: selection.clone(),
                    timeout: reg.timeout.unwrap_or(DEFAULT_TIMEOUT),
                }
            })
            .collect();
        let mut config = SessionConfig::new(id.clone(), request.event);
        config.reason = request.reason.clone();
        config.may_bother_user = request.may_bother_user;
        config.cookie = request.cookie.clone();
        config.max_concurrent_handlers = request.max_concurrent;
        config.grace = request.grace;
        config.confirm = request.confirm.clone();
        let (session, control, events) = Session::new(config, Arc::new(writer.clone()), jobs);
        let socket = ControlSocket::bind(&home.socket(&id), control.clone())?;
        let running = tokio::spawn(session.run());
        Ok(SessionRun {
            id,
            control,
            events,
            running,
            writer,
            stored: Vec::new(),
            finished: None,
            _locks: locks,
            _socket: socket,
        })
    }

    /// The session's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Cancels items, handlers or everything.
    pub fn control(&self) -> &SessionControl {
        &self.control
    }

    /// The next event, `None` after the last (`Finished`). Handlers' item
    /// lists are stored as they pass (on the writer's thread).
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        if self.finished.is_some() {
            return None;
        }
        let event = self.events.recv().await?;
        match &event {
            SessionEvent::ItemsEnumerated {
                handler,
                enumeration,
                ..
            } => {
                let writer = self.writer.clone();
                let (handler, enumeration) = (handler.clone(), enumeration.clone());
                self.stored.push(tokio::spawn(async move {
                    if let Err(e) = writer.apply_enumeration(&handler, enumeration).await {
                        tracing::warn!(error = %e, "could not store the items of {handler}");
                    }
                }));
            }
            SessionEvent::Finished(summary) => self.finished = Some(summary.clone()),
            _ => {}
        }
        Some(event)
    }

    /// Waits for the end (taking the events nobody took), stores the
    /// outcome and, when `used_entry` is given, deletes that log entry (a
    /// confirmation counts once). Returns the summary.
    pub async fn finish(mut self, used_entry: Option<i64>) -> Result<SessionSummary> {
        while self.next_event().await.is_some() {}
        let summary = match self.finished.take() {
            Some(summary) => summary,
            None => (&mut self.running).await.map_err(|e| {
                ManagerError::Daemon(format!("the session's task ended abnormally: {e}"))
            })?,
        };
        for task in self.stored.drain(..) {
            let _ = task.await;
        }
        self.writer
            .finish_session(
                &summary.session,
                summary.outcome,
                summary.counts,
                chrono::Utc::now(),
                summary.items.clone(),
            )
            .await?;
        if let Some(entry) = used_entry {
            self.writer.delete_log(entry).await?;
        }
        self.writer.close().await?;
        Ok(summary)
    }
}

/// A fresh session id (time-ordered).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Whether a session's outcome makes its command fail: an item that failed
/// or was stopped, or a handler that failed as a whole.
pub fn failed(summary: &SessionSummary) -> bool {
    summary.counts.failed + summary.counts.stopped > 0 || !summary.failed_handlers.is_empty()
}
