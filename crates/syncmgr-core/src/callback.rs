//! [`HandlerCallback`] (`ISyncMgrSynchronizeCallback`): what a handler calls
//! while it syncs, and the shared state behind it.
//!
//! `progress` is the hot path: it costs one hash lookup, one uncontended lock,
//! a few stores and an atomic or two; it allocates nothing (unless a status text
//! outgrows its buffer) and never writes to disk or a terminal. Consumers read a
//! coalesced view (the latest state of each item) through the session's pump.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, mpsc, watch};

use crate::error::CallbackError;
use crate::event::SessionEvent;
use crate::handler::Journal;
use crate::model::{
    Cause, ConflictReport, HandlerFlags, ItemStatus, LogEntry, LogLevel, LogRequest,
    MAX_CONFLICT_VERSIONS, MAX_TEXT_LEN, NewConflict, NewLogEntry, ProgressReply, ProgressUpdate,
    validate_id,
};
use crate::state;

/// How many problem entries (rule violations, stderr lines) one handler may add
/// to the log in one session; past it one last entry says more were dropped.
/// Keeps a misbehaving handler from flooding the results log.
pub(crate) const PROBLEM_BUDGET: u32 = 100;
const OUTPUT_BUDGET: u32 = 200;
/// How many entries one handler may log (`logError`) in one session; past
/// it `logError` is refused (one entry says so). The results log lives on
/// disk, and a handler looping on `logError` must not fill it.
pub const LOG_BUDGET: u32 = 1000;
const OUTPUT_LINE_MAX: usize = 1024;
/// How many conflicts one handler may report in one session; past it
/// `reportConflict` is refused (one entry says so). A folder with thousands
/// of conflicts is a folder pair set up wrongly, not a user's decision list.
pub const CONFLICT_BUDGET: u32 = 10_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; the
    // engine's invariants are re-established by finalization, so go on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by the whole session.
#[derive(Debug)]
pub(crate) struct SessionShared {
    pub(crate) id: String,
    pub(crate) may_bother_user: bool,
    pub(crate) journal: Arc<dyn Journal>,
    pub(crate) events: mpsc::Sender<SessionEvent>,
    /// Wakes the pump: an item changed or a manager log entry is queued.
    pub(crate) wake: Notify,
    /// Manager-written log entries waiting to be journaled by the pump.
    pub(crate) pending_log: Mutex<VecDeque<NewLogEntry>>,
    /// Every prepared set of the session, for the pump to scan.
    pub(crate) sets: Mutex<Vec<Arc<PreparedSet>>>,
    /// The handler holding the UI lease (`EnableModeless`), by index.
    pub(crate) modeless: Mutex<Option<usize>>,
    /// A cancel stopped or skipped something (the session is `cancelled`
    /// unless something failed).
    pub(crate) cancel_took_effect: AtomicBool,
    next_error_id: AtomicU64,
}

impl SessionShared {
    pub(crate) fn new(
        id: String,
        may_bother_user: bool,
        journal: Arc<dyn Journal>,
        events: mpsc::Sender<SessionEvent>,
    ) -> Self {
        SessionShared {
            id,
            may_bother_user,
            journal,
            events,
            wake: Notify::new(),
            pending_log: Mutex::new(VecDeque::new()),
            sets: Mutex::new(Vec::new()),
            modeless: Mutex::new(None),
            cancel_took_effect: AtomicBool::new(false),
            next_error_id: AtomicU64::new(1),
        }
    }

    /// Queues an entry written by the manager itself (not acknowledged to a
    /// handler, so the pump journals it off the hot path).
    pub(crate) fn manager_log(
        &self,
        handler: &str,
        item: Option<&str>,
        level: LogLevel,
        cause: Cause,
        text: String,
    ) {
        let entry = NewLogEntry {
            time: chrono::Utc::now(),
            level,
            handler: handler.to_owned(),
            item: item.map(str::to_owned),
            text,
            actionable: false,
            session: self.id.clone(),
            error_id: None,
            cause: Some(cause),
        };
        lock(&self.pending_log).push_back(entry);
        self.wake.notify_one();
    }
}

/// State of one handler in the session, shared by its unit, its callbacks and
/// the session control.
#[derive(Debug)]
pub(crate) struct HandlerShared {
    pub(crate) index: usize,
    pub(crate) name: String,
    /// What `progress` replies: set by the user's cancel-all and by the
    /// not-responding path.
    pub(crate) cancel_all: AtomicBool,
    /// The user asked to stop everything of this handler.
    pub(crate) user_cancel_all: AtomicBool,
    /// Item cancels that came before the items were prepared.
    pub(crate) early_cancels: Mutex<HashSet<String>>,
    /// The item ids the handler listed, once it has (`enumItems`): a cancel
    /// of any other item matches nothing.
    pub(crate) enumerated: Mutex<Option<HashSet<String>>>,
    /// Bumped on every cancel that concerns this handler.
    pub(crate) cancel_gen: watch::Sender<u64>,
    /// Bumped on every message from the handler (silence detection).
    pub(crate) activity: AtomicU64,
    pub(crate) flags: Mutex<HandlerFlags>,
    pub(crate) current: Mutex<Option<Arc<PreparedSet>>>,
    /// `showError` is running (a window for `enableModeless`).
    pub(crate) showing_error: AtomicBool,
    /// Called on every cancel, synchronously, by whoever cancels.
    cancel_hook: HookSlot,
    problems: AtomicU32,
    output_lines: AtomicU32,
    /// `logError` calls this session (the budget).
    log_entries: AtomicU32,
    /// `reportConflict` calls this session (the budget).
    conflicts: AtomicU32,
    /// `establishConnection` was told to the user already.
    connection_noted: AtomicBool,
}

impl HandlerShared {
    pub(crate) fn new(index: usize, name: String) -> Self {
        HandlerShared {
            index,
            name,
            cancel_all: AtomicBool::new(false),
            user_cancel_all: AtomicBool::new(false),
            early_cancels: Mutex::new(HashSet::new()),
            enumerated: Mutex::new(None),
            cancel_gen: watch::Sender::new(0),
            activity: AtomicU64::new(0),
            flags: Mutex::new(HandlerFlags::default()),
            current: Mutex::new(None),
            showing_error: AtomicBool::new(false),
            cancel_hook: HookSlot::default(),
            problems: AtomicU32::new(0),
            output_lines: AtomicU32::new(0),
            log_entries: AtomicU32::new(0),
            conflicts: AtomicU32::new(0),
            connection_noted: AtomicBool::new(false),
        }
    }

    pub(crate) fn signal_cancel(&self) {
        self.cancel_gen.send_modify(|g| *g += 1);
        // Cloned out of the lock: the hook takes other locks of this handler.
        let hook = lock(&self.cancel_hook.0).clone();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// Asks the handler to stop everything; `by_user` separates the user's
    /// cancel (items end `stopped`) from the manager's own (they end `failed`).
    pub(crate) fn cancel_everything(&self, by_user: bool) {
        if by_user {
            self.user_cancel_all.store(true, Ordering::SeqCst);
        }
        self.cancel_all.store(true, Ordering::SeqCst);
        self.signal_cancel();
    }

    /// Cancels one item. Returns `false` when the handler's items are
    /// prepared and this is not one of them; before preparation the cancel
    /// is kept for when they are.
    pub(crate) fn cancel_item(&self, item: &str) -> bool {
        let current = lock(&self.current).clone();
        let known = match current {
            Some(set) => {
                let known = set.ids.contains_key(item);
                if known {
                    set.cancel(item);
                }
                known
            }
            None => {
                let listed = lock(&self.enumerated)
                    .as_ref()
                    .is_none_or(|ids| ids.contains(item));
                if listed {
                    lock(&self.early_cancels).insert(item.to_owned());
                }
                listed
            }
        };
        self.signal_cancel();
        known
    }
}

/// A function run synchronously on every cancel that concerns a handler
/// (see [`HandlerCallback::set_cancel_hook`]).
pub type CancelHook = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct HookSlot(Mutex<Option<CancelHook>>);

impl std::fmt::Debug for HookSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = lock(&self.0).is_some();
        f.write_str(if set {
            "HookSlot(set)"
        } else {
            "HookSlot(none)"
        })
    }
}

/// One per-item row: what the display shows and the item state machine holds.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) status: ItemStatus,
    pub(crate) text: String,
    pub(crate) value: Option<u64>,
    pub(crate) max: Option<u64>,
    pub(crate) cancelled: bool,
    pub(crate) skip_sent: bool,
    pub(crate) changed: bool,
}

/// The items prepared in one `prepareForSync` round of one handler.
#[derive(Debug)]
pub(crate) struct PreparedSet {
    pub(crate) handler: Arc<HandlerShared>,
    pub(crate) ids: HashMap<String, usize>,
    /// Every enumerated id, to tell "unknown" from "not prepared".
    pub(crate) enumerated: HashSet<String>,
    pub(crate) slots: Mutex<Vec<Slot>>,
    /// Open from `prepareForSync` until the `synchronize` response.
    pub(crate) open: AtomicBool,
    /// Some slot changed since the pump last looked.
    pub(crate) dirty: AtomicBool,
    /// Slots cancelled one by one since the skip requests were last taken:
    /// a cancel looks at these instead of scanning every slot (a scan of a
    /// thousand cold slots costs more than the rest of the cancel path).
    skip_candidates: Mutex<Vec<usize>>,
}

impl PreparedSet {
    pub(crate) fn new(
        handler: Arc<HandlerShared>,
        items: &[(String, String)],
        enumerated: HashSet<String>,
    ) -> Self {
        let ids = items
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.clone(), i))
            .collect();
        let slots = items
            .iter()
            .map(|(id, name)| Slot {
                id: id.clone(),
                name: name.clone(),
                status: ItemStatus::Pending,
                text: String::new(),
                value: None,
                max: None,
                cancelled: false,
                skip_sent: false,
                changed: true,
            })
            .collect();
        PreparedSet {
            handler,
            ids,
            enumerated,
            slots: Mutex::new(slots),
            open: AtomicBool::new(true),
            dirty: AtomicBool::new(true),
            skip_candidates: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn cancel(&self, item: &str) {
        if let Some(&i) = self.ids.get(item) {
            let mut slots = lock(&self.slots);
            if !slots[i].status.is_terminal() {
                slots[i].cancelled = true;
                lock(&self.skip_candidates).push(i);
            }
        }
    }

    /// Whether every cancel asked of this set has been honoured.
    pub(crate) fn cancels_settled(&self) -> bool {
        let all = self.handler.cancel_all.load(Ordering::SeqCst);
        lock(&self.slots)
            .iter()
            .all(|s| s.status.is_terminal() || !(all || s.cancelled))
    }

    pub(crate) fn mark_dirty(&self, session: &SessionShared) {
        self.dirty.store(true, Ordering::Release);
        session.wake.notify_one();
    }
}

/// The manager's side of a handler's calls: progress, log entries, connection
/// and modeless-UI requests, and the cancel requests going the other way.
///
/// Cheap to clone; may be used from any task or thread, as mobsync allows.
///
/// Every refusal (an `Err` from a method) has already been written to the
/// results log against the handler; callers only pass the error on. The
/// window check of the async methods happens when they are first polled.
#[derive(Debug, Clone)]
pub struct HandlerCallback {
    pub(crate) session: Arc<SessionShared>,
    pub(crate) handler: Arc<HandlerShared>,
    pub(crate) set: Option<Arc<PreparedSet>>,
}

impl HandlerCallback {
    /// `Progress`: records the update and tells the handler whether to go on.
    ///
    /// Every field of `update` is optional; an empty update only polls for a
    /// cancel. A refused update is logged against the handler and changes
    /// nothing.
    pub fn progress(
        &self,
        item: &str,
        update: &ProgressUpdate<'_>,
    ) -> Result<ProgressReply, CallbackError> {
        self.touch();
        let result = self.apply_progress(item, update);
        if let Err(e) = &result {
            self.report_problem(Some(item), format!("refused progress: {e}"));
        }
        result
    }

    fn apply_progress(
        &self,
        item: &str,
        update: &ProgressUpdate<'_>,
    ) -> Result<ProgressReply, CallbackError> {
        let set = self.open_set("progress")?;
        let Some(&index) = set.ids.get(item) else {
            return Err(self.unprepared(set, item));
        };
        if let Some(text) = update.text
            && text.len() > MAX_TEXT_LEN
        {
            return Err(CallbackError::TextTooLong(text.len()));
        }
        let cancelled = {
            let mut slots = lock(&set.slots);
            let slot = &mut slots[index];
            match update.status {
                Some(to) => {
                    state::check_transition(slot.status, to).map_err(|from| {
                        CallbackError::AfterTerminal {
                            item: item.to_owned(),
                            from,
                            to: Some(to),
                        }
                    })?;
                }
                // A terminal item is final: its text and amounts too. An
                // empty update (a poll for cancels) changes nothing and passes.
                None if slot.status.is_terminal()
                    && (update.text.is_some()
                        || update.value.is_some()
                        || update.max.is_some()) =>
                {
                    return Err(CallbackError::AfterTerminal {
                        item: item.to_owned(),
                        from: slot.status,
                        to: None,
                    });
                }
                None => {}
            }
            let value = update.value.or(slot.value);
            let max = update.max.or(slot.max);
            if let (Some(value), Some(max)) = (value, max)
                && value > max
            {
                return Err(CallbackError::ValueOverMax {
                    item: item.to_owned(),
                    value,
                    max,
                });
            }
            if let Some(status) = update.status {
                slot.status = status;
            }
            if let Some(text) = update.text {
                slot.text.clear();
                slot.text.push_str(text);
            }
            slot.value = value;
            slot.max = max;
            slot.changed = true;
            slot.cancelled
        };
        set.mark_dirty(&self.session);
        Ok(if self.handler.cancel_all.load(Ordering::Relaxed) {
            ProgressReply::CancelAll
        } else if cancelled {
            ProgressReply::CancelItem
        } else {
            ProgressReply::Continue
        })
    }

    /// `LogError`: records an entry in the results log and returns its error
    /// id (the handler's own, or one the manager assigns). Returns only once
    /// the entry is durable.
    pub async fn log_error(&self, request: LogRequest) -> Result<String, CallbackError> {
        self.touch();
        let result = self.record_log(request).await;
        if let Err(e) = &result {
            self.report_problem(None, format!("refused logError: {e}"));
        }
        result
    }

    async fn record_log(&self, request: LogRequest) -> Result<String, CallbackError> {
        let set = self.open_set("logError")?;
        // The results log is on disk: a handler gets a bounded share of it
        // per session, like its stderr lines and its problems.
        self.spend(&self.handler.log_entries, LOG_BUDGET, "log entries")?;
        if request.text.len() > MAX_TEXT_LEN {
            return Err(CallbackError::TextTooLong(request.text.len()));
        }
        if let Some(item) = &request.item
            && !set.enumerated.contains(item)
        {
            return Err(CallbackError::UnknownItem(item.clone()));
        }
        let error_id = match request.error_id {
            Some(id) => {
                validate_id(&id).map_err(|e| CallbackError::Invalid(format!("errorId: {e}")))?;
                id
            }
            None => {
                let n = self.session.next_error_id.fetch_add(1, Ordering::Relaxed);
                format!("syncmgr-{n}")
            }
        };
        let entry = NewLogEntry {
            time: chrono::Utc::now(),
            level: request.level,
            handler: self.handler.name.clone(),
            item: request.item,
            text: request.text,
            actionable: request.actionable,
            session: self.session.id.clone(),
            error_id: Some(error_id.clone()),
            cause: None,
        };
        let id = self
            .session
            .journal
            .append(entry.clone())
            .await
            .map_err(|e| CallbackError::Journal(e.to_string()))?;
        // The receiver may be gone once the embedder stopped listening; the
        // entry is already durable, which is what the handler is promised.
        let _ = self
            .session
            .events
            .send(SessionEvent::Log(LogEntry { id, entry }))
            .await;
        Ok(error_id)
    }

    /// `DeleteLogError`: removes this handler's entries of this session with
    /// `error_id`, or all of them with `None`.
    pub async fn delete_log_error(&self, error_id: Option<&str>) -> Result<(), CallbackError> {
        self.touch();
        let result = async {
            self.open_set("deleteLogError")?;
            self.session
                .journal
                .delete(&self.session.id, &self.handler.name, error_id)
                .await
                .map_err(|e| CallbackError::Journal(e.to_string()))?;
            let _ = self
                .session
                .events
                .send(SessionEvent::LogDeleted {
                    handler: self.handler.name.clone(),
                    error_id: error_id.map(str::to_owned),
                })
                .await;
            Ok(())
        }
        .await;
        if let Err(e) = &result {
            self.report_problem(None, format!("refused deleteLogError: {e}"));
        }
        result
    }

    /// `reportConflict` (`ISyncMgrConflictStore`): stores the conflict and
    /// returns its id in the store once it is durable. Allowed while the
    /// handler synchronizes, for a prepared item.
    pub async fn report_conflict(&self, report: ConflictReport) -> Result<i64, CallbackError> {
        self.touch();
        let result = self.record_conflict(report).await;
        if let Err(e) = &result {
            self.report_problem(None, format!("refused reportConflict: {e}"));
        }
        result
    }

    async fn record_conflict(&self, report: ConflictReport) -> Result<i64, CallbackError> {
        let set = self.open_set("reportConflict")?;
        if !set.ids.contains_key(&report.item) {
            return Err(self.unprepared(set, &report.item));
        }
        validate_id(&report.conflict_id)
            .map_err(|e| CallbackError::Invalid(format!("conflictId: {e}")))?;
        if report.text.len() > MAX_TEXT_LEN {
            return Err(CallbackError::TextTooLong(report.text.len()));
        }
        let n = report.versions.len();
        if !(2..=MAX_CONFLICT_VERSIONS).contains(&n) {
            return Err(CallbackError::Invalid(format!(
                "a conflict has 2 to {MAX_CONFLICT_VERSIONS} versions, not {n}"
            )));
        }
        for (i, version) in report.versions.iter().enumerate() {
            if version.label.trim().is_empty() {
                return Err(CallbackError::Invalid(format!("version {i} has no label")));
            }
            let longest = version
                .label
                .len()
                .max(version.detail.as_ref().map_or(0, String::len));
            if longest > MAX_TEXT_LEN {
                return Err(CallbackError::TextTooLong(longest));
            }
        }
        self.spend(&self.handler.conflicts, CONFLICT_BUDGET, "conflicts")?;
        let conflict = NewConflict {
            handler: self.handler.name.clone(),
            session: self.session.id.clone(),
            detected: chrono::Utc::now(),
            report,
        };
        let id = self
            .session
            .journal
            .record_conflict(conflict.clone())
            .await
            .map_err(|e| CallbackError::Journal(e.to_string()))?;
        let _ = self
            .session
            .events
            .send(SessionEvent::Conflict { id, conflict })
            .await;
        Ok(id)
    }

    /// Counts one more against a handler's share of something the manager
    /// keeps on disk this session (`what`); past `budget` it is refused, and
    /// one entry says so.
    fn spend(&self, counter: &AtomicU32, budget: u32, what: &str) -> Result<(), CallbackError> {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        if n < budget {
            return Ok(());
        }
        if n == budget {
            self.session.manager_log(
                &self.handler.name,
                None,
                LogLevel::Error,
                Cause::OverBudget,
                format!("more than {budget} {what} in one session; the rest are refused"),
            );
        }
        Err(CallbackError::OverBudget(budget))
    }

    /// `conflictResolved`: the handler settled a conflict by itself (the
    /// versions became equal, or one of them went); it leaves the store.
    pub async fn conflict_resolved(
        &self,
        item: &str,
        conflict_id: &str,
    ) -> Result<(), CallbackError> {
        self.touch();
        let result = async {
            let set = self.open_set("conflictResolved")?;
            if !set.enumerated.contains(item) {
                return Err(CallbackError::UnknownItem(item.to_owned()));
            }
            let removed = self
                .session
                .journal
                .remove_conflict(&self.handler.name, item, conflict_id)
                .await
                .map_err(|e| CallbackError::Journal(e.to_string()))?;
            if removed {
                let _ = self
                    .session
                    .events
                    .send(SessionEvent::ConflictResolved {
                        handler: self.handler.name.clone(),
                        item: item.to_owned(),
                        conflict_id: conflict_id.to_owned(),
                    })
                    .await;
            }
            Ok(())
        }
        .await;
        if let Err(e) = &result {
            self.report_problem(None, format!("refused conflictResolved: {e}"));
        }
        result
    }

    /// `EstablishConnection`: the handler needs a network connection. There is
    /// no dialling on a modern system; the request is granted to handlers that
    /// declared `mayEstablishConnection` and logged for the user.
    pub fn establish_connection(&self, connection: Option<&str>) -> Result<(), CallbackError> {
        self.touch();
        let result = (|| {
            self.open_set("establishConnection")?;
            if !lock(&self.handler.flags).may_establish_connection {
                return Err(CallbackError::Invalid(
                    "establishConnection needs the handler flag mayEstablishConnection".into(),
                ));
            }
            Ok(())
        })();
        match &result {
            // Told to the user once per session: a handler that asks again
            // and again does not fill the log.
            Ok(()) if !self.handler.connection_noted.swap(true, Ordering::Relaxed) => {
                self.session.manager_log(
                    &self.handler.name,
                    None,
                    LogLevel::Information,
                    Cause::Notice,
                    format!(
                        "handler asked for the network connection {}",
                        connection.unwrap_or("(default)")
                    ),
                );
            }
            Ok(()) => {}
            Err(e) => self.report_problem(None, format!("refused establishConnection: {e}")),
        }
        result
    }

    /// `EnableModeless`: `true` asks "may I show a dialog now?"; `false` says
    /// the dialog is closed. Only one handler holds the UI at a time, and none
    /// when the session may not bother the user.
    pub fn enable_modeless(&self, enable: bool) -> Result<bool, CallbackError> {
        self.touch();
        // Dialogs belong to prepareForSync, synchronize and showError.
        let in_window = self
            .set
            .as_ref()
            .is_some_and(|s| s.open.load(Ordering::Acquire))
            || self.handler.showing_error.load(Ordering::Acquire);
        if !in_window {
            let e = CallbackError::OutsideWindow("enableModeless");
            self.report_problem(None, format!("refused enableModeless: {e}"));
            return Err(e);
        }
        let mut lease = lock(&self.session.modeless);
        let me = self.handler.index;
        Ok(if enable {
            if self.session.may_bother_user && lease.is_none_or(|holder| holder == me) {
                *lease = Some(me);
                true
            } else {
                false
            }
        } else {
            if *lease == Some(me) {
                *lease = None;
            }
            true
        })
    }

    /// Whether the user (or the manager) asked this item, or all items of this
    /// handler, to stop. For in-process handlers that poll between steps.
    pub fn is_cancelled(&self, item: &str) -> bool {
        if self.handler.cancel_all.load(Ordering::Relaxed) {
            return true;
        }
        let Some(set) = &self.set else { return false };
        set.ids
            .get(item)
            .is_some_and(|&i| lock(&set.slots)[i].cancelled)
    }

    /// The `SetItemStatus(item, skipped)` notifications due: items cancelled
    /// since the last call that have not ended yet. Each is returned once.
    pub fn take_skip_requests(&self) -> Vec<String> {
        let Some(set) = &self.set else {
            return Vec::new();
        };
        let all = self.handler.cancel_all.load(Ordering::SeqCst);
        let mut due = Vec::new();
        let mut slots = lock(&set.slots);
        let candidates = std::mem::take(&mut *lock(&set.skip_candidates));
        let mut take = |slot: &mut Slot| {
            if (all || slot.cancelled) && !slot.skip_sent && !slot.status.is_terminal() {
                slot.skip_sent = true;
                due.push(slot.id.clone());
            }
        };
        if all {
            slots.iter_mut().for_each(take);
        } else {
            for i in candidates {
                take(&mut slots[i]);
            }
        }
        drop(slots);
        due
    }

    /// A receiver that changes whenever a cancel concerning this handler
    /// arrives; wait on it, then call [`take_skip_requests`](Self::take_skip_requests).
    pub fn cancel_signal(&self) -> watch::Receiver<u64> {
        self.handler.cancel_gen.subscribe()
    }

    /// Installs (or with `None` removes) a function that runs synchronously,
    /// on the canceller's thread, on every cancel that concerns this handler.
    ///
    /// [`cancel_signal`](Self::cancel_signal) wakes a task; a hook saves that
    /// wakeup, so a process handler can write `setItemStatus` to the pipe
    /// straight from the cancel. It must be quick and must not block.
    pub fn set_cancel_hook(&self, hook: Option<CancelHook>) {
        *lock(&self.handler.cancel_hook.0) = hook;
    }

    /// Notes that the handler is alive (any message counts), for the silence
    /// timeout.
    pub fn touch(&self) {
        self.handler.activity.fetch_add(1, Ordering::Relaxed);
    }

    /// Logs a problem with what the handler sent (a broken rule, a bad line),
    /// naming the handler. Bounded per handler and session.
    pub fn report_problem(&self, item: Option<&str>, text: String) {
        self.report(item, LogLevel::Error, Cause::BrokenRule, text);
    }

    /// Logs something the manager found about the handler, with its cause
    /// (for a host that runs the handler: how its process ended). Shares the
    /// per-handler budget of [`report_problem`](Self::report_problem).
    pub fn report(&self, item: Option<&str>, level: LogLevel, cause: Cause, text: String) {
        let n = self.handler.problems.fetch_add(1, Ordering::Relaxed);
        if n < PROBLEM_BUDGET {
            self.session
                .manager_log(&self.handler.name, item, level, cause, text);
        } else if n == PROBLEM_BUDGET {
            self.session.manager_log(
                &self.handler.name,
                None,
                LogLevel::Error,
                Cause::OverBudget,
                format!("more than {PROBLEM_BUDGET} problems; the rest are not logged"),
            );
        }
    }

    /// Keeps a line the handler wrote to stderr as an information entry.
    /// Bounded in line length and count per handler and session.
    pub fn handler_output(&self, line: &str) {
        let n = self.handler.output_lines.fetch_add(1, Ordering::Relaxed);
        if n < OUTPUT_BUDGET {
            let mut text = line.to_owned();
            if text.len() > OUTPUT_LINE_MAX {
                let mut cut = OUTPUT_LINE_MAX;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push('…');
            }
            self.session.manager_log(
                &self.handler.name,
                None,
                LogLevel::Information,
                Cause::HandlerOutput,
                text,
            );
        } else if n == OUTPUT_BUDGET {
            self.session.manager_log(
                &self.handler.name,
                None,
                LogLevel::Information,
                Cause::OverBudget,
                format!("more than {OUTPUT_BUDGET} lines of handler output; the rest are not kept"),
            );
        }
    }

    /// The registration name of the handler this callback serves.
    pub fn handler_name(&self) -> &str {
        &self.handler.name
    }

    /// The ids prepared in this round, in order (empty outside the window).
    pub fn prepared_items(&self) -> Vec<String> {
        self.set
            .as_ref()
            .map(|set| lock(&set.slots).iter().map(|s| s.id.clone()).collect())
            .unwrap_or_default()
    }

    fn open_set(&self, what: &'static str) -> Result<&Arc<PreparedSet>, CallbackError> {
        match &self.set {
            Some(set) if set.open.load(Ordering::Acquire) => Ok(set),
            _ => Err(CallbackError::OutsideWindow(what)),
        }
    }

    fn unprepared(&self, set: &PreparedSet, item: &str) -> CallbackError {
        if set.enumerated.contains(item) {
            CallbackError::ItemNotPrepared(item.to_owned())
        } else {
            CallbackError::UnknownItem(item.to_owned())
        }
    }
}
