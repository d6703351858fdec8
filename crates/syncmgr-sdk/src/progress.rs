//! What a handler calls during a sync: [`Progress`] for one item, [`Manager`]
//! for the rest (log entries, connections, dialogs).

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use syncmgr_core::{ConflictReport, ItemStatus, LogLevel, ProgressReply};
use syncmgr_protocol::wire::{self, method};

use crate::conn::Conn;
use crate::error::{Error, HandlerError};
use crate::util::{clip, lock, note};

/// The manager's answer to a progress report: go on, or stop.
///
/// Cancels are sticky: once an item was cancelled, every later report of it
/// answers the cancel again, whatever the manager says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reply {
    /// Go on (`S_OK`).
    Continue,
    /// Stop this item (`S_SYNCMGR_CANCELITEM`): end it as soon as possible;
    /// return [`ItemOutcome::stopped`](crate::ItemOutcome::stopped) (or any
    /// error, which the SDK then reports as `stopped`).
    CancelItem,
    /// Stop every item of this handler (`S_SYNCMGR_CANCELALL`): this one as
    /// with `CancelItem`; the SDK skips the items that did not start.
    CancelAll,
}

impl Reply {
    /// `true` for [`Reply::Continue`].
    pub fn is_continue(self) -> bool {
        self == Reply::Continue
    }

    /// `true` for [`Reply::CancelItem`] and [`Reply::CancelAll`].
    pub fn is_cancel(self) -> bool {
        self != Reply::Continue
    }
}

impl From<ProgressReply> for Reply {
    fn from(r: ProgressReply) -> Self {
        match r {
            ProgressReply::Continue => Reply::Continue,
            ProgressReply::CancelItem => Reply::CancelItem,
            ProgressReply::CancelAll => Reply::CancelAll,
        }
    }
}

/// One progress report (`SYNCMGRPROGRESSITEM`): every field optional, absent
/// = unchanged. Build it with the chained setters:
///
/// ```
/// use syncmgr_sdk::Update;
///
/// let u = Update::progress(3, 10).text("copying photos");
/// assert_eq!((u.value, u.max, u.text.as_deref()), (Some(3), Some(10), Some("copying photos")));
/// let u: Update = "connecting".into(); // text only
/// assert_eq!(u.text.as_deref(), Some("connecting"));
/// ```
///
/// `value` may not exceed `max` (the manager refuses it); a text longer than
/// 4 KiB is cut. Setting a terminal `status` here is allowed but rarely
/// needed: the SDK reports the final status from what
/// [`SyncHandler::sync_item`](crate::SyncHandler::sync_item) returns (and
/// reports nothing more when the item already has one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// Status text shown next to the item.
    pub text: Option<String>,
    /// The item's status; the SDK has set `updating` before `sync_item`.
    pub status: Option<ItemStatus>,
    /// Progress so far, in the unit of `max`.
    pub value: Option<u64>,
    /// The total, in any unit (bytes, files, steps).
    pub max: Option<u64>,
}

impl Update {
    /// An empty update: sends nothing new, only asks whether to go on.
    pub fn new() -> Self {
        Update::default()
    }

    /// `value` of `max` done.
    pub fn progress(value: u64, max: u64) -> Self {
        Update {
            value: Some(value),
            max: Some(max),
            ..Update::default()
        }
    }

    /// Sets the status text.
    #[must_use]
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Sets the status (e.g. `updatingIndeterminate` while the total is unknown).
    #[must_use]
    pub fn status(mut self, status: ItemStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the value.
    #[must_use]
    pub fn value(mut self, value: u64) -> Self {
        self.value = Some(value);
        self
    }

    /// Sets the maximum.
    #[must_use]
    pub fn max(mut self, max: u64) -> Self {
        self.max = Some(max);
        self
    }
}

impl From<&str> for Update {
    fn from(text: &str) -> Self {
        Update::new().text(text)
    }
}

impl From<String> for Update {
    fn from(text: String) -> Self {
        Update::new().text(text)
    }
}

/// A results-log entry (`LogError`), built with chained setters:
///
/// ```
/// use syncmgr_sdk::LogEntry;
///
/// let entry = LogEntry::warning("3 files were skipped").actionable("skipped-files");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    level: LogLevel,
    text: String,
    error_id: Option<String>,
    item: Option<String>,
    actionable: bool,
}

impl LogEntry {
    /// An entry of this level.
    pub fn new(level: LogLevel, text: impl Into<String>) -> Self {
        LogEntry {
            level,
            text: text.into(),
            error_id: None,
            item: None,
            actionable: false,
        }
    }

    /// An information entry.
    pub fn information(text: impl Into<String>) -> Self {
        LogEntry::new(LogLevel::Information, text)
    }

    /// A warning.
    pub fn warning(text: impl Into<String>) -> Self {
        LogEntry::new(LogLevel::Warning, text)
    }

    /// An error.
    pub fn error(text: impl Into<String>) -> Self {
        LogEntry::new(LogLevel::Error, text)
    }

    /// The handler's own id for the entry (1 to 64 characters); the manager
    /// assigns one when none is given.
    #[must_use]
    pub fn with_id(mut self, error_id: impl Into<String>) -> Self {
        self.error_id = Some(error_id.into());
        self
    }

    /// Makes the entry actionable under this id (`syncmgr log show` reaches
    /// [`SyncHandler::show_error`](crate::SyncHandler::show_error) with it).
    #[must_use]
    pub fn actionable(mut self, error_id: impl Into<String>) -> Self {
        self.error_id = Some(error_id.into());
        self.actionable = true;
        self
    }

    /// The item the entry is about ([`Progress::log_entry`] sets its own item
    /// when none is given).
    #[must_use]
    pub fn item(mut self, item: impl Into<String>) -> Self {
        self.item = Some(item.into());
        self
    }

    pub(crate) fn from_error(error: &HandlerError, item: &str) -> Self {
        LogEntry {
            level: LogLevel::Error,
            text: error.message().to_owned(),
            error_id: error.error_id().map(str::to_owned),
            item: Some(item.to_owned()),
            actionable: error.is_actionable(),
        }
    }
}

/// The manager, as the handler sees it between `prepareForSync` and the end
/// of `synchronize`: log entries, connections, dialogs. Cheap to clone; usable
/// from any thread. Calls outside that window are refused by the manager.
#[derive(Clone)]
pub struct Manager {
    conn: Arc<Conn>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("closed", &self.conn.is_closed())
            .finish()
    }
}

impl Manager {
    pub(crate) fn new(conn: Arc<Conn>) -> Self {
        Manager { conn }
    }

    /// Records a results-log entry (`logError`); returns its error id (the
    /// handler's own, or the one the manager assigned). Returns once the
    /// entry is durable.
    pub fn log_entry(&self, entry: LogEntry) -> Result<String, Error> {
        let params = wire::LogErrorParams {
            level: entry.level,
            text: clip(entry.text),
            error_id: entry.error_id,
            item: entry.item,
            actionable: entry.actionable,
        };
        let result: wire::LogErrorResult = self.conn.call(method::LOG_ERROR, &params)?;
        Ok(result.error_id)
    }

    /// Records a plain entry not tied to an item; returns its error id, or
    /// `None` when the manager refused it (the refusal is written to stderr,
    /// which the manager keeps too) or is gone.
    pub fn log(&self, level: LogLevel, text: impl Into<String>) -> Option<String> {
        noted(self.log_entry(LogEntry::new(level, text)))
    }

    /// Removes an entry this handler logged in this session (`deleteLogError`),
    /// or every one of them with `None`.
    pub fn delete_log(&self, error_id: Option<&str>) -> Result<(), Error> {
        let params = wire::DeleteLogErrorParams {
            error_id: error_id.map(str::to_owned),
        };
        let _: wire::Empty = self.conn.call(method::DELETE_LOG_ERROR, &params)?;
        Ok(())
    }

    /// Asks the manager for a network connection (`establishConnection`; the
    /// handler must declare `may_establish_connection`). `None` = the default.
    pub fn establish_connection(&self, connection: Option<&str>) -> Result<(), Error> {
        let params = wire::EstablishConnectionParams {
            connection: connection.map(str::to_owned),
        };
        let _: wire::Empty = self.conn.call(method::ESTABLISH_CONNECTION, &params)?;
        Ok(())
    }

    /// `enableModeless`: with `true`, asks whether the handler may show a
    /// dialog now (the answer); with `false`, says the dialog is closed.
    pub fn enable_modeless(&self, enable: bool) -> Result<bool, Error> {
        let result: wire::EnableModelessResult = self.conn.call(
            method::ENABLE_MODELESS,
            &wire::EnableModelessParams { enable },
        )?;
        Ok(result.allowed)
    }

    /// Reports versions of an item the handler cannot choose between
    /// (`reportConflict`); returns once the manager stored it. The conflict
    /// id is the handler's own, stable across syncs (reporting it again
    /// replaces it); [`SyncHandler::resolve_conflict`](crate::SyncHandler::resolve_conflict)
    /// gets the user's decision, naming a version by its index.
    pub fn report_conflict(&self, report: &ConflictReport) -> Result<(), Error> {
        let mut params = wire::ReportConflictParams::from(report);
        params.text = clip(params.text);
        let _: wire::Empty = self.conn.call(method::REPORT_CONFLICT, &params)?;
        Ok(())
    }

    /// Tells the manager a conflict went away by itself
    /// (`conflictResolved`, a notification): it leaves the conflict store.
    pub fn conflict_resolved(&self, item: &str, conflict_id: &str) -> Result<(), Error> {
        let line = wire::encode_notification(
            method::CONFLICT_RESOLVED,
            &wire::ConflictResolvedParams {
                item: item.to_owned(),
                conflict_id: conflict_id.to_owned(),
            },
        )
        .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        self.conn.write_line(&line).map_err(|e| {
            if self.conn.is_closed() {
                Error::Closed
            } else {
                Error::Io(e)
            }
        })
    }

    /// Whether the manager closed the channel (`shutdown` or end of input).
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }
}

/// The progress handle of one item during [`SyncHandler::sync_item`]:
/// reports, cancellation, log entries.
///
/// Cheap to clone, `Send` and `Sync`: report from any thread (a thread that
/// parses a child's output, a pool of workers); reports of many threads are
/// pipelined on the one channel.
///
/// [`SyncHandler::sync_item`]: crate::SyncHandler::sync_item
#[derive(Clone)]
pub struct Progress {
    item: Arc<str>,
    manager: Manager,
    /// The terminal status already reported through this handle, if any.
    terminal: Arc<Mutex<Option<ItemStatus>>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("item", &self.item)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Progress {
    pub(crate) fn new(item: &str, manager: Manager) -> Self {
        Progress {
            item: item.into(),
            manager,
            terminal: Arc::new(Mutex::new(None)),
        }
    }

    /// The item's id.
    pub fn item(&self) -> &str {
        &self.item
    }

    /// The manager, for calls not about this item.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// Reports progress and returns the manager's answer. Never fails: a
    /// report the manager refuses (e.g. `value > max`) is written to stderr
    /// and answers the current cancel state; when the manager is gone it
    /// answers [`Reply::CancelAll`]. Use [`Progress::try_report`] to see
    /// refusals.
    ///
    /// ```no_run
    /// # use syncmgr_sdk::{Progress, Update, ItemOutcome};
    /// # fn f(progress: &Progress) -> ItemOutcome {
    /// for step in 1..=10 {
    ///     if progress.report(Update::progress(step, 10)).is_cancel() {
    ///         return ItemOutcome::stopped();
    ///     }
    /// }
    /// # ItemOutcome::succeeded() }
    /// ```
    pub fn report(&self, update: impl Into<Update>) -> Reply {
        match self.try_report(update.into()) {
            Ok(reply) => reply,
            Err(Error::Closed) => Reply::CancelAll,
            Err(e) => {
                note(format_args!("progress of {}: {e}", self.item));
                self.state()
            }
        }
    }

    /// Reports progress; an error when the manager refused the report or is gone.
    pub fn try_report(&self, update: Update) -> Result<Reply, Error> {
        let status = update.status;
        let params = self.params(update);
        let result: wire::ProgressResult = self.manager.conn.call(method::PROGRESS, &params)?;
        if let Some(status) = status.filter(|s| s.is_terminal()) {
            *lock(&self.terminal) = Some(status);
        }
        match Reply::from(result.action) {
            Reply::Continue => {}
            Reply::CancelItem => self.manager.conn.cancel.cancel_item(&self.item),
            Reply::CancelAll => self.manager.conn.cancel.cancel_all(),
        }
        Ok(self.state())
    }

    /// Reports progress without waiting for the manager's answer, for a
    /// handler that reports often (every block of a copy): a round trip per
    /// report would cost more than the work between two. Returns the cancel
    /// state known so far, like [`Progress::state`].
    ///
    /// The answer is applied when it arrives: a `cancelItem` or `cancelAll`
    /// turns [`Progress::is_cancelled`] true (so check the returned state or
    /// `is_cancelled` as with [`Progress::report`], one or a few reports
    /// later); a refusal is written to stderr. At most
    /// [`POST_WINDOW`](crate::POST_WINDOW) posted reports await their answers
    /// at once; a further `post` waits for the oldest. The SDK waits for every
    /// answer before it ends the round; [`Progress::flush`] waits for them
    /// earlier. After the manager is gone it answers [`Reply::CancelAll`].
    ///
    /// ```no_run
    /// # use syncmgr_sdk::{Progress, Update, ItemOutcome};
    /// # fn f(progress: &Progress, blocks: u64) -> ItemOutcome {
    /// for block in 1..=blocks {
    ///     // ... copy one block ...
    ///     if progress.post(Update::progress(block, blocks)).is_cancel() {
    ///         return ItemOutcome::stopped();
    ///     }
    /// }
    /// # ItemOutcome::succeeded() }
    /// ```
    pub fn post(&self, update: impl Into<Update>) -> Reply {
        let update = update.into();
        let status = update.status;
        let params = self.params(update);
        match self.manager.conn.post(&self.item, &params) {
            Ok(()) => {
                if let Some(status) = status.filter(|s| s.is_terminal()) {
                    *lock(&self.terminal) = Some(status);
                }
                self.state()
            }
            Err(Error::Closed) => Reply::CancelAll,
            Err(e) => {
                note(format_args!("progress of {}: {e}", self.item));
                self.state()
            }
        }
    }

    /// The `progress` params of `update` for this item (texts clipped).
    fn params(&self, update: Update) -> wire::ProgressParams<'_> {
        wire::ProgressParams {
            item: Cow::Borrowed(&self.item),
            text: update.text.map(|t| Cow::Owned(clip(t))),
            status: update.status,
            value: update.value,
            max: update.max,
        }
    }

    /// Waits until the manager answered every [`Progress::post`]ed report
    /// (of every item), so that their cancels are in [`Progress::state`].
    pub fn flush(&self) {
        self.manager.conn.wait_posted();
    }

    /// Whether the manager asked to stop this item (a `cancelItem` or
    /// `cancelAll` reply, a `setItemStatus skipped`, or the channel closed).
    /// Cheap: no message is sent.
    pub fn is_cancelled(&self) -> bool {
        self.state().is_cancel()
    }

    /// The cancel state of this item without sending anything: what the next
    /// report would answer at least.
    pub fn state(&self) -> Reply {
        self.manager.conn.cancel.state(&self.item)
    }

    /// `Err(HandlerError::cancelled())` when the item was cancelled, for `?`
    /// between steps of work.
    pub fn check(&self) -> Result<(), HandlerError> {
        if self.is_cancelled() {
            Err(HandlerError::cancelled())
        } else {
            Ok(())
        }
    }

    /// Waits up to `timeout` for a cancel of this item; returns `true` as soon
    /// as it is cancelled, `false` when the time ran out. Use it instead of
    /// `sleep` (a back-off, a rate limit) or to watch a child process.
    pub fn wait_cancelled(&self, timeout: Duration) -> bool {
        self.manager
            .conn
            .cancel
            .wait(&self.item, timeout)
            .is_cancel()
    }

    /// Records a results-log entry about this item; returns its error id, or
    /// `None` when the manager refused it or is gone.
    pub fn log(&self, level: LogLevel, text: impl Into<String>) -> Option<String> {
        noted(self.log_entry(LogEntry::new(level, text)))
    }

    /// Records a results-log entry (about this item unless the entry names
    /// another); returns its error id.
    pub fn log_entry(&self, mut entry: LogEntry) -> Result<String, Error> {
        if entry.item.is_none() {
            entry.item = Some(self.item.to_string());
        }
        self.manager.log_entry(entry)
    }

    /// The terminal status reported through this handle, if any.
    pub(crate) fn terminal(&self) -> Option<ItemStatus> {
        *lock(&self.terminal)
    }

    /// Reports a status from the SDK itself (refusals are noted).
    pub(crate) fn send_status(&self, status: ItemStatus, text: Option<String>) {
        let update = Update {
            text,
            status: Some(status),
            ..Update::default()
        };
        match self.try_report(update) {
            Ok(_) | Err(Error::Closed) => {}
            Err(e) => note(format_args!("reporting {status} for {}: {e}", self.item)),
        }
    }
}

fn noted(result: Result<String, Error>) -> Option<String> {
    match result {
        Ok(id) => Some(id),
        Err(Error::Closed) => None,
        Err(e) => {
            note(format_args!("{e}"));
            None
        }
    }
}
