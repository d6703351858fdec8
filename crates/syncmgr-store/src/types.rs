//! The records the store keeps that the core model has no type for:
//! registrations, known items, session records, and the log query.

use std::time::Duration;

use syncmgr_core::{ConflictReport, LogLevel, SessionOutcome, StatusCounts, SyncEvent, Timestamp};

/// A registered handler (`RegisterSyncMgrHandler`).
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// The registration name (`[a-z0-9][a-z0-9._-]{0,63}`, checked by the caller).
    pub name: String,
    /// What the user wrote about it.
    pub description: Option<String>,
    /// How the manager runs it.
    pub kind: HandlerKind,
    /// The opt-in events it takes part in (`connect`, `pendingDisconnect`,
    /// `idle`); the other events reach every handler.
    pub events: Vec<SyncEvent>,
    /// How long it may stay silent before it is stopped; `None` = the default.
    pub timeout: Option<Duration>,
    /// When it was (last) registered. Stored to the millisecond.
    pub registered: Timestamp,
}

/// How a registered handler runs.
#[derive(Debug, Clone, PartialEq)]
pub enum HandlerKind {
    /// An out-of-process handler: this program, speaking the protocol on stdio.
    Process {
        /// The program and its arguments (not empty).
        argv: Vec<String>,
    },
    /// A handler built into syncmgr, configured by JSON only it understands.
    Builtin {
        /// Its kind, such as `folder` or `command` (never `process`).
        kind: String,
        /// Its configuration.
        config: serde_json::Value,
    },
}

impl HandlerKind {
    /// The name stored in the `kind` column.
    pub fn name(&self) -> &str {
        match self {
            HandlerKind::Process { .. } => PROCESS_KIND,
            HandlerKind::Builtin { kind, .. } => kind,
        }
    }
}

/// The `kind` of an out-of-process handler.
pub(crate) const PROCESS_KIND: &str = "process";

/// An item the manager has seen a handler enumerate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownItem {
    /// The handler's id for it.
    pub id: String,
    /// Its display name, as last enumerated.
    pub name: String,
    /// Whether it was flagged `temporary` when last enumerated (its choices go
    /// as soon as it is no longer listed).
    pub temporary: bool,
    /// When a session last ended with it `succeeded`.
    pub last_update: Option<Timestamp>,
}

/// Which results-log entries [`Store::log`](crate::Store::log) returns. The
/// default returns them all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only entries of this level or more severe.
    pub min_level: Option<LogLevel>,
    /// Only entries about this handler.
    pub handler: Option<String>,
    /// Only entries logged in this session.
    pub session: Option<String>,
}

/// An open conflict in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictRecord {
    /// The store's id (`syncmgr conflicts show ID`).
    pub id: i64,
    /// When it was first reported.
    pub detected: Timestamp,
    /// The session that reported it last.
    pub session: String,
    /// Registration name of its handler.
    pub handler: String,
    /// What the handler reported (last).
    pub report: ConflictReport,
    /// Why the last decision on it could not be applied, in the handler's
    /// words.
    pub reason: Option<String>,
}

/// One sync session in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id.
    pub id: String,
    /// What started it.
    pub trigger: SyncEvent,
    /// When it started.
    pub started: Timestamp,
    /// When it ended; `None` while it runs.
    pub finished: Option<Timestamp>,
    /// How it ended; `None` while it runs.
    pub outcome: Option<SessionOutcome>,
    /// Items per terminal status (zero while it runs).
    pub counts: StatusCounts,
    /// Process id of the manager running it, so that a later start can tell a
    /// session still running from one whose manager died.
    pub pid: u32,
    /// Why it ran, for people (`schedule nightly`); `None` for sessions
    /// recorded before reasons were kept.
    pub reason: Option<String>,
}

impl Registration {
    /// A built-in handler of `kind` with its configuration, registered now,
    /// opted in to no automatic event, with the default timeout.
    pub fn builtin(
        name: impl Into<String>,
        kind: impl Into<String>,
        config: serde_json::Value,
    ) -> Self {
        Registration {
            name: name.into(),
            description: None,
            kind: HandlerKind::Builtin {
                kind: kind.into(),
                config,
            },
            events: Vec::new(),
            timeout: None,
            registered: chrono::Utc::now(),
        }
    }
}

impl SessionRecord {
    /// A session that has just begun in the manager process `pid`.
    pub fn running(
        id: impl Into<String>,
        trigger: SyncEvent,
        started: Timestamp,
        pid: u32,
    ) -> Self {
        SessionRecord {
            id: id.into(),
            trigger,
            started,
            finished: None,
            outcome: None,
            counts: StatusCounts::default(),
            pid,
            reason: None,
        }
    }
}

/// How severe a level is, least first (`SYNCMGRLOGLEVEL` order).
pub(crate) fn severity(level: LogLevel) -> u8 {
    match level {
        LogLevel::Information => 0,
        LogLevel::Warning => 1,
        LogLevel::Error => 2,
    }
}

/// A named schedule (`syncmgr schedule add`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRecord {
    /// Its name.
    pub name: String,
    /// When it runs.
    pub when: ScheduleWhen,
    /// The most a run is put off, as a stable offset per schedule.
    pub jitter: Duration,
    /// Whether a run missed while the manager was down (or the machine
    /// asleep) is made up once.
    pub catch_up: bool,
    /// `NAME` or `NAME/ITEM`; none: every handler.
    pub targets: Vec<String>,
    /// When it was added.
    pub created: Timestamp,
    /// When it last ran (wall clock).
    pub last_run: Option<Timestamp>,
}

/// When a schedule runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleWhen {
    /// This long after its previous run started.
    Every(Duration),
    /// At the instants of a cron expression, in a time zone (an IANA name;
    /// `None`: the local zone).
    Cron {
        /// The expression (5 or 6 fields).
        expr: String,
        /// The zone.
        timezone: Option<String>,
    },
}

/// What [`crate::Store::prune`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished sessions that finished before this go (with their items).
    pub history_before: Timestamp,
    /// At most this many sessions are kept (the newest).
    pub sessions: usize,
    /// Information entries written before this go, and those of sessions
    /// that are gone; warnings and errors stay until acted on or deleted.
    pub information_before: Timestamp,
}
