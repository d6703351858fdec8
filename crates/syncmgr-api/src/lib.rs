//! The JSON shapes of syncmgr: what `--json` prints (and, with the daemon
//! and the dashboard, what their socket and REST API carry). One serde type
//! per shape, so that every front end prints the same thing and
//! `docs/cli.md` describes one set of types.
//!
//! **Stability:** these shapes are a contract (`docs/cli.md`). Fields may be
//! added; none is renamed or removed, and no meaning changes.
//!
//! The core's enumerations are written by their canonical names
//! (`ItemStatus::as_str` and friends); times are RFC 3339 in UTC with
//! milliseconds. The types know nothing of processes, SQLite or HTTP.

use serde::{Deserialize, Serialize};
use syncmgr_core::{
    ConflictReport, ConflictVersion as CoreConflictVersion, ItemResult as CoreItemResult,
    ItemSnapshot, LogEntry as CoreLogEntry, SessionEvent, SessionSummary, StatusCounts, Timestamp,
};

/// A time as every shape writes it: RFC 3339, UTC, milliseconds.
pub fn time(t: Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Items per terminal status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Items that ended `succeeded`.
    pub succeeded: u32,
    /// Items that ended `failed`.
    pub failed: u32,
    /// Items that ended `skipped`.
    pub skipped: u32,
    /// Items that ended `stopped`.
    pub stopped: u32,
}

impl From<StatusCounts> for Counts {
    fn from(c: StatusCounts) -> Self {
        Counts {
            succeeded: c.succeeded,
            failed: c.failed,
            skipped: c.skipped,
            stopped: c.stopped,
        }
    }
}

/// One prepared item and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemResult {
    /// Registration name.
    pub handler: String,
    /// Item id.
    pub item: String,
    /// Its final status.
    pub status: String,
}

impl From<&CoreItemResult> for ItemResult {
    fn from(r: &CoreItemResult) -> Self {
        ItemResult {
            handler: r.handler.clone(),
            item: r.item.clone(),
            status: r.status.as_str().to_owned(),
        }
    }
}

/// One line of `sync --json` (newline-delimited JSON events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Event {
    /// The first line.
    #[serde(rename_all = "camelCase")]
    SessionStarted {
        /// Session id.
        session: String,
        /// The event code the handlers see (`manual`, `invoke`, ...).
        trigger: String,
        /// Why it runs, for people (`requested by CLI`, `schedule nightly`).
        reason: String,
    },
    /// An item changed (coalesced: the latest state, always the final one).
    #[serde(rename_all = "camelCase")]
    Item {
        /// Registration name.
        handler: String,
        /// Item id.
        item: String,
        /// Display name.
        name: String,
        /// Status.
        status: String,
        /// Status text, once there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Progress value, once reported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<u64>,
        /// Progress maximum, once reported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u64>,
    },
    /// A results-log entry was recorded.
    #[serde(rename_all = "camelCase")]
    Log {
        /// Its id (`syncmgr log show ID`).
        id: i64,
        /// When it was recorded.
        time: String,
        /// `information`, `warning` or `error`.
        level: String,
        /// Registration name.
        handler: String,
        /// The item it concerns.
        item: Option<String>,
        /// What happened.
        text: String,
        /// Whether `syncmgr log show` can act on it.
        actionable: bool,
    },
    /// A handler withdrew entries (`deleteLogError`).
    #[serde(rename_all = "camelCase")]
    LogDeleted {
        /// Registration name.
        handler: String,
        /// The handler's error id, or `null` for all of its entries of the
        /// session.
        error_id: Option<String>,
    },
    /// A handler reported a conflict; it is in the store.
    #[serde(rename_all = "camelCase")]
    Conflict {
        /// Its id (`syncmgr conflicts show ID`).
        id: i64,
        /// Registration name.
        handler: String,
        /// The item.
        item: String,
        /// The handler's id for it.
        conflict_id: String,
        /// What conflicts.
        text: String,
        /// The versions to choose from.
        versions: Vec<ConflictVersion>,
    },
    /// A conflict left the store: resolved by the handler, or the user's
    /// decision was applied.
    #[serde(rename_all = "camelCase")]
    ConflictResolved {
        /// Registration name.
        handler: String,
        /// The item.
        item: String,
        /// The handler's id for it.
        conflict_id: String,
    },
    /// The handler could not apply the user's decision; the conflict stays.
    #[serde(rename_all = "camelCase")]
    ConflictRefused {
        /// Registration name.
        handler: String,
        /// The item.
        item: String,
        /// The handler's id for it.
        conflict_id: String,
        /// Why, in the handler's words.
        reason: String,
    },
    /// The last line.
    #[serde(rename_all = "camelCase")]
    SessionFinished {
        /// Session id.
        session: String,
        /// `succeeded`, `failed` or `cancelled`.
        outcome: String,
        /// Items per terminal status.
        counts: Counts,
        /// Every prepared item with its final status.
        items: Vec<ItemResult>,
        /// Handlers that failed as a whole.
        failed_handlers: Vec<String>,
    },
    /// A trigger fired in the daemon (`syncmgr events` only).
    #[serde(rename_all = "camelCase")]
    Trigger {
        /// The event code of the sessions it starts (`scheduled`, ...).
        trigger: String,
        /// What fired, for people (`schedule nightly`).
        reason: String,
        /// When.
        time: String,
    },
    /// The daemon queued a session (`syncmgr events` only).
    #[serde(rename_all = "camelCase")]
    Queued {
        /// Session id.
        session: String,
        /// The event code it will run for.
        trigger: String,
        /// What it will sync (`NAME` or `NAME/ITEM`).
        targets: Vec<String>,
    },
}

impl Event {
    /// The shape of a session event, or `None` for the engine's internal
    /// ones.
    pub fn from_session(event: &SessionEvent) -> Option<Event> {
        Some(match event {
            SessionEvent::Started {
                session,
                trigger,
                reason,
            } => Event::SessionStarted {
                session: session.clone(),
                trigger: trigger.as_str().to_owned(),
                reason: reason.clone(),
            },
            SessionEvent::ItemChanged(s) => Event::item(s),
            SessionEvent::Log(entry) => {
                let e = &entry.entry;
                Event::Log {
                    id: entry.id,
                    time: time(e.time),
                    level: e.level.as_str().to_owned(),
                    handler: e.handler.clone(),
                    item: e.item.clone(),
                    text: e.text.clone(),
                    actionable: e.actionable,
                }
            }
            SessionEvent::LogDeleted { handler, error_id } => Event::LogDeleted {
                handler: handler.clone(),
                error_id: error_id.clone(),
            },
            SessionEvent::Conflict { id, conflict } => Event::Conflict {
                id: *id,
                handler: conflict.handler.clone(),
                item: conflict.report.item.clone(),
                conflict_id: conflict.report.conflict_id.clone(),
                text: conflict.report.text.clone(),
                versions: versions(&conflict.report.versions),
            },
            SessionEvent::ConflictResolved {
                handler,
                item,
                conflict_id,
            } => Event::ConflictResolved {
                handler: handler.clone(),
                item: item.clone(),
                conflict_id: conflict_id.clone(),
            },
            SessionEvent::ConflictRefused {
                handler,
                item,
                conflict_id,
                reason,
            } => Event::ConflictRefused {
                handler: handler.clone(),
                item: item.clone(),
                conflict_id: conflict_id.clone(),
                reason: reason.clone(),
            },
            SessionEvent::Finished(summary) => Event::finished(summary),
            _ => return None,
        })
    }

    fn item(s: &ItemSnapshot) -> Event {
        Event::Item {
            handler: s.handler.clone(),
            item: s.item.clone(),
            name: s.name.clone(),
            status: s.status.as_str().to_owned(),
            text: (!s.text.is_empty()).then(|| s.text.clone()),
            value: s.value,
            max: s.max,
        }
    }

    fn finished(summary: &SessionSummary) -> Event {
        Event::SessionFinished {
            session: summary.session.clone(),
            outcome: summary.outcome.as_str().to_owned(),
            counts: summary.counts.into(),
            items: summary.items.iter().map(ItemResult::from).collect(),
            failed_handlers: summary.failed_handlers.clone(),
        }
    }
}

/// One version of a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictVersion {
    /// Which version, for people.
    pub label: String,
    /// Its size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// When it was last modified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
    /// More about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn versions(versions: &[CoreConflictVersion]) -> Vec<ConflictVersion> {
    versions
        .iter()
        .map(|v| ConflictVersion {
            label: v.label.clone(),
            size: v.size,
            modified: v.modified.map(time),
            detail: v.detail.clone(),
        })
        .collect()
}

/// An open conflict: an element of `conflicts --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    /// The store's id (`conflicts show ID`, `conflicts resolve ID`).
    pub id: i64,
    /// Registration name.
    pub handler: String,
    /// The item.
    pub item: String,
    /// The handler's id for it.
    pub conflict_id: String,
    /// What conflicts.
    pub text: String,
    /// The versions, in the handler's order (`--keep N` counts from 0).
    pub versions: Vec<ConflictVersion>,
    /// When it was first reported.
    pub detected: String,
    /// The session that reported it last.
    pub session: String,
    /// Why the last decision on it was not applied; `null` when none was
    /// refused.
    pub reason: Option<String>,
}

impl Conflict {
    /// The shape of a stored conflict: its id, handler and report, when
    /// it was first reported, the session that reported it last, and why
    /// the last decision on it was refused.
    pub fn new(
        id: i64,
        handler: &str,
        report: &ConflictReport,
        detected: Timestamp,
        session: &str,
        reason: Option<&str>,
    ) -> Self {
        Conflict {
            id,
            handler: handler.to_owned(),
            item: report.item.clone(),
            conflict_id: report.conflict_id.clone(),
            text: report.text.clone(),
            versions: versions(&report.versions),
            detected: time(detected),
            session: session.to_owned(),
            reason: reason.map(str::to_owned),
        }
    }
}

/// `conflicts show --json`: one conflict, and for text files of the
/// two-way folder handler, a unified diff of the two versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflictDetail {
    /// The conflict.
    #[serde(flatten)]
    pub conflict: Conflict,
    /// `diff -u` of the first version against the second; `null` when
    /// the versions are not both small text files.
    pub diff: Option<String>,
}

/// The user's decision on one stored conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The conflict's id in the store.
    pub conflict: i64,
    /// Which version to keep (an index); `null` keeps them all.
    pub keep: Option<usize>,
}

/// An entry of `log --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    /// Its id.
    pub id: i64,
    /// When it was recorded.
    pub time: String,
    /// `information`, `warning` or `error`.
    pub level: String,
    /// Registration name.
    pub handler: String,
    /// The item it concerns.
    pub item: Option<String>,
    /// What happened.
    pub text: String,
    /// Whether `syncmgr log show` can act on it.
    pub actionable: bool,
    /// The session it was logged in.
    pub session: String,
    /// The handler's id for it; `null` for the manager's own entries.
    pub error_id: Option<String>,
    /// Why the manager wrote it (`notResponding`, `brokenRule`, ...);
    /// `null` for a handler's own entries.
    pub cause: Option<String>,
}

impl From<&CoreLogEntry> for LogEntry {
    fn from(entry: &CoreLogEntry) -> Self {
        let e = &entry.entry;
        LogEntry {
            id: entry.id,
            time: time(e.time),
            level: e.level.as_str().to_owned(),
            handler: e.handler.clone(),
            item: e.item.clone(),
            text: e.text.clone(),
            actionable: e.actionable,
            session: e.session.clone(),
            error_id: e.error_id.clone(),
            cause: e.cause.map(|c| c.as_str().to_owned()),
        }
    }
}

/// A session of `history --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// Session id.
    pub id: String,
    /// The event code it ran for.
    pub trigger: String,
    /// Why it ran, for people; `null` for sessions recorded before reasons
    /// were kept.
    pub reason: Option<String>,
    /// When it started.
    pub started: String,
    /// When it finished; `null` while it runs.
    pub finished: Option<String>,
    /// `succeeded`, `failed`, `cancelled` or `interrupted`; `null` while it
    /// runs.
    pub outcome: Option<String>,
    /// Items per terminal status.
    pub counts: Counts,
}

/// A registration of `handlers --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// Registration name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// `process`, or a built-in kind (`folder`, `command`).
    pub kind: String,
    /// A process handler's program and arguments; `null` for a built-in.
    pub argv: Option<Vec<String>>,
    /// A built-in's configuration; `null` for a process handler.
    pub config: Option<serde_json::Value>,
    /// The automatic events it opted in to.
    pub events: Vec<String>,
    /// Its silence timeout in seconds; `null` for the default.
    pub timeout: Option<f64>,
    /// When it was registered.
    pub registered: String,
}

/// An item's flags in `items --json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemFlags {
    /// The handler can show properties for it.
    pub has_properties: bool,
    /// Its choices are dropped as soon as it is no longer listed.
    pub temporary: bool,
    /// `SYNCMGRITEM_ROAMINGUSER`.
    pub roaming_user: bool,
    /// The user may delete it.
    pub may_delete_item: bool,
    /// Not shown in lists for people.
    pub hidden: bool,
}

/// An item of `items --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemRow {
    /// Registration name.
    pub handler: String,
    /// The handler's display name.
    pub handler_name: String,
    /// Item id.
    pub item: String,
    /// Display name.
    pub name: String,
    /// Whether it takes part in sessions for `event` (the user's choice, or
    /// the handler's default).
    pub checked: bool,
    /// The handler's default.
    pub default_checked: bool,
    /// The event the choice is for.
    pub event: String,
    /// Its flags.
    pub flags: ItemFlags,
    /// When a session last ended with it `succeeded`.
    pub last_update: Option<String>,
}

/// A request on a session's control socket (`syncmgr cancel`): one JSON
/// object per line, `{"cancel": null}` (everything) or
/// `{"cancel": {"handler": NAME, "item": ID?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlRequest {
    /// What to cancel; `null` is everything.
    pub cancel: Option<CancelTarget>,
}

/// What a control request cancels: one handler's items, or one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelTarget {
    /// Registration name.
    pub handler: String,
    /// One item of it; absent or `null` for all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
}

/// The answer to a [`ControlRequest`]: `{"ok": true, "matched": BOOL}` or
/// `{"ok": false, "error": TEXT}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    /// Whether the request was understood.
    pub ok: bool,
    /// Whether it matched something in the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<bool>,
    /// Why it was not understood.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ControlReply {
    /// A request that was carried out.
    pub fn matched(matched: bool) -> Self {
        ControlReply {
            ok: true,
            matched: Some(matched),
            error: None,
        }
    }

    /// A request that was refused.
    pub fn refused(error: impl Into<String>) -> Self {
        ControlReply {
            ok: false,
            matched: None,
            error: Some(error.into()),
        }
    }
}

/// A request on the daemon's socket (`RUNTIME/daemon.sock`): one JSON
/// object on the first line of a connection, `{"request": KIND, ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "camelCase", deny_unknown_fields)]
pub enum DaemonRequest {
    /// Run a session, as `syncmgr sync` does. Answered by a [`SyncReply`];
    /// unless `detach`, the session's events follow, one per line, until
    /// `sessionFinished`. A line `{"cancel": null}` from the client then
    /// cancels the session.
    #[serde(rename_all = "camelCase")]
    Sync {
        /// `NAME` or `NAME/ITEM`; none is every handler.
        targets: Vec<String>,
        /// The event code; `null` for `manual` (or `invoke` with a cookie).
        event: Option<String>,
        /// The program's cookie.
        cookie: Option<String>,
        /// Answer once queued; send no events.
        detach: bool,
        /// Cancel a running session of the same registrations first.
        replace: bool,
        /// Handlers run at once in the session.
        max_concurrent: usize,
        /// A cancelled handler's grace, in milliseconds.
        grace_ms: u64,
        /// Who asks, when not the command line: `dashboard` (the
        /// session's reason then says so).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    /// `log show`: ask the handler about a results-log entry and retry
    /// what it asks to. Answered as `sync` is; when the retry needs the
    /// user's yes, the daemon sends a [`ConfirmAsk`] line and waits for a
    /// [`ConfirmAnswer`] line.
    #[serde(rename_all = "camelCase")]
    ShowError {
        /// The entry's id.
        entry: i64,
        /// Handlers run at once in the session.
        max_concurrent: usize,
        /// A cancelled handler's grace, in milliseconds.
        grace_ms: u64,
    },
    /// `conflicts resolve`: asks the handlers to apply the user's
    /// decisions, then syncs the items resolved. Answered as `sync` is.
    #[serde(rename_all = "camelCase")]
    Resolve {
        /// The decisions, each on one conflict of the store.
        decisions: Vec<Decision>,
        /// Handlers run at once in the session.
        max_concurrent: usize,
        /// A cancelled handler's grace, in milliseconds.
        grace_ms: u64,
    },
    /// The daemon's state: one [`Status`] line.
    Status {},
    /// Every session's events and the daemon's own, until the client goes.
    Events {},
    /// Read `config.toml` and the schedules again (as SIGHUP does);
    /// answered by an [`Ack`].
    Reload {},
    /// Cancel `targets` (`NAME`, `NAME/ITEM`; none for everything) in the
    /// sessions still queued: each is applied as the session starts (its
    /// items end `stopped`). Running sessions are reached through their
    /// control sockets. Answered by a [`QueuedCancel`].
    Cancel {
        /// `NAME` or `NAME/ITEM`.
        targets: Vec<String>,
    },
}

/// What a [`DaemonRequest::Cancel`] reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedCancel {
    /// The queued sessions that will apply a cancel, by id.
    pub sessions: Vec<String>,
    /// Per target: whether a queued session has it.
    pub matched: Vec<bool>,
}

/// A request done: `{"ok": true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// Always `true`.
    pub ok: bool,
}

/// The first answer to a sync request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SyncReply {
    /// Queued (or joined to a queued session): its id.
    Accepted(Accepted),
    /// Refused, with the reason.
    Refused(Refused),
}

/// `sync --detach --json` prints this: `{"session": ID, "queued": true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    /// Session id.
    pub session: String,
    /// Always `true`: the session is queued or running in the daemon.
    pub queued: bool,
}

/// A request the daemon refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refused {
    /// What was wrong, for people.
    pub error: String,
    /// Whether it was bad input (the command exits 2) rather than a failure
    /// (exit 1).
    pub usage: bool,
}

/// `status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The running daemon; `null` when none runs.
    pub daemon: Option<DaemonInfo>,
    /// Sessions running or queued in the daemon.
    pub sessions: Vec<SessionState>,
    /// Every registration.
    pub registrations: Vec<RegistrationState>,
    /// Every trigger, and whether it can fire.
    pub triggers: Vec<TriggerState>,
}

/// The running daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonInfo {
    /// Its process id.
    pub pid: u32,
    /// When it started.
    pub started: String,
    /// Its version.
    pub version: String,
    /// Clients following its events (`syncmgr events`, the dashboard).
    pub watchers: usize,
    /// The dashboard it serves; `null` when it serves none.
    #[serde(default)]
    pub web: Option<WebInfo>,
    /// Whether failures raise desktop notifications, and why not.
    #[serde(default)]
    pub notifications: Option<Availability>,
}

/// Where the daemon serves the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebInfo {
    /// Its address (`http://127.0.0.1:8734/`).
    pub url: String,
    /// Whether it listens beyond this machine (`[web] allow_remote`).
    pub remote: bool,
}

/// Whether a service can be used, and why (not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Availability {
    /// Whether it can be used.
    pub available: bool,
    /// What it uses, or why it cannot be used.
    pub reason: String,
}

/// A session the daemon holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionState {
    /// Session id.
    pub id: String,
    /// `queued` or `running`.
    pub state: String,
    /// The event code it runs for.
    pub trigger: String,
    /// What it syncs (`NAME` or `NAME/ITEM`).
    pub targets: Vec<String>,
    /// Its items' latest states (the `item` event shape).
    pub items: Vec<Event>,
}

/// A registration in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationState {
    /// Registration name.
    pub name: String,
    /// `idle`, `queued`, `running`, `backoff` or `deferred`.
    pub state: String,
    /// Its last finished session; `null` when it never ran.
    pub last_session: Option<LastSession>,
    /// The next automatic run; `null` when none is planned.
    pub next_run: Option<String>,
    /// Why it runs next (`schedule nightly`); `null` with no next run.
    pub next_reason: Option<String>,
    /// When its backoff ends; `null` when not backing off.
    pub backoff_until: Option<String>,
}

/// A registration's last session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastSession {
    /// Session id.
    pub id: String,
    /// `succeeded`, `failed`, `cancelled` or `interrupted`.
    pub outcome: String,
    /// When it finished.
    pub finished: String,
}

/// A trigger in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerState {
    /// `manual`, `schedule`, `idle`, `network`, `logon`,
    /// `pendingDisconnect`.
    pub trigger: String,
    /// Whether it can fire.
    pub available: bool,
    /// Why not, or what it watches.
    pub reason: String,
    /// When it last fired; `null` when it has not.
    pub last_fired: Option<String>,
}

/// A schedule of `schedule list --json`: `every` or `cron` (with its
/// `timezone` when one was given), never both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRow {
    /// Its name.
    pub name: String,
    /// Runs this long after its previous run started (`15m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// Runs at this cron expression's instants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The cron expression's time zone; absent for the local one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The most a run is put off (`0s` for none).
    pub jitter: String,
    /// Whether runs missed while the daemon was down are made up (once).
    pub catch_up: bool,
    /// `NAME` or `NAME/ITEM`; empty for every handler.
    pub targets: Vec<String>,
    /// When it last ran; `null` before its first run.
    pub last_run: Option<String>,
    /// When it runs next (if a daemon runs then); `null` when never again.
    pub next_run: Option<String>,
}

/// The daemon asks the client whether a retry may go ahead:
/// `{"confirm": {"handler": NAME, "text": TEXT}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmAsk {
    /// The question.
    pub confirm: ConfirmQuestion,
}

/// What a retry will do, in its handler's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmQuestion {
    /// Registration name.
    pub handler: String,
    /// What the retry does.
    pub text: String,
}

/// The client's answer to a [`ConfirmAsk`]: `{"yes": BOOL}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmAnswer {
    /// Whether to go ahead.
    pub yes: bool,
}

/// A schedule to add (`POST /api/v1/schedules`; `schedule add`): `every`
/// or `cron`, never both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSchedule {
    /// Its name.
    pub name: String,
    /// Runs this long after its previous run started (`15m`).
    #[serde(default)]
    pub every: Option<String>,
    /// Runs at this cron expression's instants (5 or 6 fields).
    #[serde(default)]
    pub cron: Option<String>,
    /// The cron expression's time zone (IANA name); the local one if absent.
    #[serde(default)]
    pub timezone: Option<String>,
    /// The most a run is put off (`5m`); none if absent.
    #[serde(default)]
    pub jitter: Option<String>,
    /// Runs missed while no daemon ran are not made up.
    #[serde(default)]
    pub no_catch_up: bool,
    /// `NAME` or `NAME/ITEM`; empty for every handler.
    #[serde(default)]
    pub targets: Vec<String>,
}

/// `PUT /api/v1/choices`: checks or unchecks an item for an event
/// (`syncmgr choose`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    /// Registration name.
    pub handler: String,
    /// Item id.
    pub item: String,
    /// The event code (`manual`, `idle`, ...).
    pub event: String,
    /// Whether the item takes part in that event.
    pub checked: bool,
}

/// `POST /api/v1/sync`: what to sync (`NAME` or `NAME/ITEM`; none for
/// everything), for which event (`manual` if absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// `NAME` or `NAME/ITEM`.
    #[serde(default)]
    pub targets: Vec<String>,
    /// The event code.
    #[serde(default)]
    pub event: Option<String>,
}

/// `POST /api/v1/cancel`: what to stop (`NAME` or `NAME/ITEM`; none for
/// everything running).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// `NAME` or `NAME/ITEM`.
    #[serde(default)]
    pub targets: Vec<String>,
}

/// What a cancel reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReply {
    /// Running sessions that were told.
    pub sessions: usize,
}

/// `POST /api/v1/log/{id}/show`: acts on an entry; a retry a guard holds
/// back goes ahead only with `confirm`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowRequest {
    /// The user confirmed what the guard asked.
    #[serde(default)]
    pub confirm: bool,
}

/// `POST /api/v1/conflicts/{id}/resolve`: the user's decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// Which version to keep (an index); `null` keeps every version.
    pub keep: Option<usize>,
}

/// A session the web API started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRef {
    /// Session id.
    pub session: String,
}

/// A refused or failed web API request: what was wrong, and, when a guard
/// asked for a confirmation, its question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What was wrong.
    pub error: String,
    /// The confirmation a retry needs (`log/{id}/show` without `confirm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<ConfirmQuestion>,
}

/// `POST /api/v1/login-token` (API key only): a one-time login URL for
/// `syncmgr dashboard`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginUrl {
    /// Opens the dashboard logged in, once, within two minutes.
    pub url: String,
}
