//! The session engine: runs many handlers through the mobsync lifecycle at
//! once, each isolated from the others, and guarantees the session's
//! invariants whatever the handlers do.
//!
//! Shape (after nextest's runner loop): [`Session::run`] is the dispatcher; each
//! handler runs as a *unit* (its own task) that walks initialize → info →
//! enumerate → prepare → synchronize → shutdown under a *guard* that watches for
//! silence and for cancels that are not honoured. A *pump* task turns the
//! shared, coalesced item state and queued manager log entries into
//! [`SessionEvent`]s, and emits the single final event.
//!
//! Invariants:
//! - every prepared item ends in exactly one terminal status: what the handler
//!   reported, or `stopped`/`failed` forced by *finalization* with a log entry;
//! - exactly one [`SessionEvent::Finished`], last, also when a unit panics;
//! - a unit's failure (error, crash, silence, ignored cancel) touches only its
//!   own items.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::callback::{HandlerCallback, HandlerShared, PreparedSet, SessionShared};
use crate::error::HandlerError;
use crate::event::{ItemSnapshot, SessionEvent, SessionSummary};
use crate::handler::{Confirm, Handler, Journal, MemoryJournal};
use crate::model::{
    Cause, ConflictResolution, HandlerInfo, InitializeParams, ItemEnumeration, ItemResult,
    ItemStatus, LogEntry, LogLevel, Participation, SessionOutcome, StatusCounts, SyncEvent,
    validate_id,
};
use crate::state;

/// Events buffered between the pump and a slow consumer. Item changes are
/// coalesced before this point, so a full buffer slows only the pump.
const EVENT_BUFFER: usize = 1024;

/// How a session runs.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The session's id (unique; the embedder chooses it).
    pub id: String,
    /// What started it.
    pub event: SyncEvent,
    /// Why, for people (`schedule nightly`, `requested by CLI`); carried by
    /// [`SessionEvent::Started`].
    pub reason: String,
    /// `SYNCMGRFLAG_MAYBOTHERUSER`.
    pub may_bother_user: bool,
    /// The `UpdateItems` cookie passed to `initialize`.
    pub cookie: Option<String>,
    /// How many handlers run at once.
    pub max_concurrent_handlers: usize,
    /// How long a handler gets to honour a cancel, or to finish after it was
    /// found not responding, before it is ended.
    pub grace: Duration,
    /// Smallest interval between two rounds of coalesced item events.
    pub coalesce: Duration,
    /// Who agrees to retries that a handler says need agreeing to; without
    /// one, such a retry does not happen.
    pub confirm: Option<Arc<dyn Confirm>>,
}

impl SessionConfig {
    /// The defaults for a session with this id and event.
    pub fn new(id: impl Into<String>, event: SyncEvent) -> Self {
        SessionConfig {
            id: id.into(),
            event,
            reason: String::new(),
            may_bother_user: event.may_bother_user_by_default(),
            cookie: None,
            max_concurrent_handlers: 4,
            grace: Duration::from_secs(5),
            coalesce: Duration::from_millis(25),
            confirm: None,
        }
    }
}

/// Which of a handler's items a session syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The items checked for the session's event: the user's stored choices
    /// (by item id) where there are any, the handler's `checked` otherwise.
    Checked(HashMap<String, bool>),
    /// Exactly these items (an id the handler does not enumerate is an error).
    Items(Vec<String>),
    /// `showError` for this (handler's) error id, then a retry round for the
    /// items the handler asks for.
    ShowError(String),
    /// `resolveConflict` for each of these decisions, in order, then a sync
    /// round of the items whose conflicts were resolved (so that the kept
    /// version reaches every side in the same step).
    Resolve(Vec<ConflictResolution>),
}

/// One handler's part in a session.
pub struct HandlerJob {
    /// Registration name.
    pub name: String,
    /// The handler.
    pub handler: Box<dyn Handler>,
    /// Its items for this session.
    pub selection: Selection,
    /// Silence timeout: a handler that sends nothing for this long while the
    /// manager waits on it is not responding.
    pub timeout: Duration,
}

impl std::fmt::Debug for HandlerJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerJob")
            .field("name", &self.name)
            .field("selection", &self.selection)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What to cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelTarget {
    /// Everything in the session.
    All,
    /// Every item of one handler.
    Handler(String),
    /// One item.
    Item {
        /// Registration name.
        handler: String,
        /// Item id.
        item: String,
    },
}

/// The handle that stops items of a running session (the Stop/Skip buttons).
#[derive(Debug, Clone)]
pub struct SessionControl {
    shared: Arc<SessionShared>,
    handlers: Arc<[Arc<HandlerShared>]>,
}

impl SessionControl {
    /// Asks for a cancel. Returns `false` when the target names no handler of
    /// this session, or an item its handler did not prepare.
    pub fn cancel(&self, target: &CancelTarget) -> bool {
        let find = |name: &str| self.handlers.iter().find(|h| h.name == name);
        match target {
            CancelTarget::All => {
                for h in self.handlers.iter() {
                    h.cancel_everything(true);
                }
                !self.handlers.is_empty()
            }
            CancelTarget::Handler(name) => find(name).map(|h| h.cancel_everything(true)).is_some(),
            CancelTarget::Item { handler, item } => {
                find(handler).is_some_and(|h| h.cancel_item(item))
            }
        }
    }

    /// Cancels everything and says why in the results log (an information
    /// entry per handler, cause `notice`: "cancelled: REASON"), for cancels
    /// that no person asked for (the user came back, a deadline passed).
    pub fn cancel_because(&self, reason: &str) -> bool {
        for h in self.handlers.iter() {
            self.shared.manager_log(
                &h.name,
                None,
                LogLevel::Information,
                Cause::Notice,
                format!("cancelled: {reason}"),
            );
        }
        self.cancel(&CancelTarget::All)
    }

    /// The session's id.
    pub fn session_id(&self) -> &str {
        &self.shared.id
    }
}

/// One sync session.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    shared: Arc<SessionShared>,
    handlers: Arc<[Arc<HandlerShared>]>,
    jobs: Vec<HandlerJob>,
}

impl Session {
    /// Sets a session up. Events arrive on the receiver once [`Session::run`]
    /// is polled; the control may be used from then on, from anywhere.
    ///
    /// [`SessionEvent::Finished`] is the last event: stop reading there. (The
    /// channel itself stays open while a [`SessionControl`] is alive.)
    pub fn new(
        config: SessionConfig,
        journal: Arc<dyn Journal>,
        jobs: Vec<HandlerJob>,
    ) -> (Session, SessionControl, mpsc::Receiver<SessionEvent>) {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let shared = Arc::new(SessionShared::new(
            config.id.clone(),
            config.may_bother_user,
            journal,
            tx,
        ));
        let handlers: Arc<[Arc<HandlerShared>]> = jobs
            .iter()
            .enumerate()
            .map(|(i, job)| Arc::new(HandlerShared::new(i, job.name.clone())))
            .collect();
        let control = SessionControl {
            shared: Arc::clone(&shared),
            handlers: Arc::clone(&handlers),
        };
        let session = Session {
            config,
            shared,
            handlers,
            jobs,
        };
        (session, control, rx)
    }

    /// Runs the session to its end and returns its summary (also sent as the
    /// last event).
    pub async fn run(self) -> SessionSummary {
        let Session {
            config,
            shared,
            handlers,
            jobs,
        } = self;
        let _ = shared
            .events
            .send(SessionEvent::Started {
                session: config.id.clone(),
                trigger: config.event,
                reason: config.reason.clone(),
            })
            .await;

        let (finish_tx, finish_rx) = oneshot::channel();
        let pump = tokio::spawn(pump(Arc::clone(&shared), finish_rx, config.coalesce));

        let params = InitializeParams {
            event: config.event,
            may_bother_user: config.may_bother_user,
            settings_only: false,
            cookie: config.cookie.clone(),
        };
        let permits = Arc::new(Semaphore::new(config.max_concurrent_handlers.max(1)));
        let mut units = JoinSet::new();
        let mut task_owner = HashMap::new();
        let mut outcomes: Vec<UnitOutcome> = vec![UnitOutcome::default(); jobs.len()];
        for (job, hs) in jobs.into_iter().zip(handlers.iter()) {
            let unit = Unit {
                ctx: UnitCtx {
                    hs: Arc::clone(hs),
                    session: Arc::clone(&shared),
                    timeout: job.timeout,
                    grace: config.grace,
                    not_responding: AtomicBool::new(false),
                    confirm: config.confirm.clone(),
                },
                handler: job.handler,
            };
            let params = params.clone();
            let permits = Arc::clone(&permits);
            let selection = job.selection;
            let handle = units.spawn(async move {
                let _permit = permits.acquire_owned().await;
                unit.run(&params, selection).await
            });
            task_owner.insert(handle.id(), hs.index);
        }
        while let Some(joined) = units.join_next_with_id().await {
            match joined {
                Ok((id, outcome)) => outcomes[task_owner[&id]] = outcome,
                Err(e) => {
                    // A panicking in-process handler: its unit is gone, but its
                    // items must still end, and the others go on.
                    let index = task_owner[&e.id()];
                    let hs = &handlers[index];
                    shared.manager_log(
                        &hs.name,
                        None,
                        LogLevel::Error,
                        Cause::Panicked,
                        "the handler panicked; its unfinished items failed".to_owned(),
                    );
                    let set = hs
                        .current
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    let mut outcome = UnitOutcome {
                        failed: true,
                        ..UnitOutcome::default()
                    };
                    if let Some(set) = set {
                        outcome.results.extend(finalize(
                            &shared,
                            &set,
                            Cause::Panicked,
                            "the handler panicked",
                        ));
                    }
                    outcomes[index] = outcome;
                }
            }
        }

        let mut items = Vec::new();
        let mut failed_handlers = Vec::new();
        for (outcome, hs) in outcomes.into_iter().zip(handlers.iter()) {
            items.extend(outcome.results);
            if outcome.failed {
                failed_handlers.push(hs.name.clone());
            }
        }
        let counts = StatusCounts::of(&items);
        let outcome = if counts.failed > 0 || !failed_handlers.is_empty() {
            SessionOutcome::Failed
        } else if counts.stopped > 0 || shared.cancel_took_effect.load(Ordering::SeqCst) {
            SessionOutcome::Cancelled
        } else {
            SessionOutcome::Succeeded
        };
        let summary = SessionSummary {
            session: config.id.clone(),
            outcome,
            counts,
            items,
            failed_handlers,
        };
        let _ = finish_tx.send(summary.clone());
        let _ = pump.await;
        // A handler's current set points back at the handler: break the
        // cycle, or every session would leave both behind (a daemon runs
        // thousands).
        for hs in handlers.iter() {
            *hs.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        summary
    }
}

/// Settings mode (`SYNCMGRFLAG_SETTINGS`): initialize, info, enumerate, shut
/// down. `Ok(None)` when the handler declines the event.
pub async fn query_handler(
    handler: &mut dyn Handler,
    event: SyncEvent,
    timeout: Duration,
) -> Result<Option<(HandlerInfo, ItemEnumeration)>, HandlerError> {
    // The handler may still want a callback for its diagnostics; give it one
    // that records nowhere.
    let (tx, _rx) = mpsc::channel(1);
    let session = Arc::new(SessionShared::new(
        String::new(),
        false,
        Arc::new(MemoryJournal::default()),
        tx,
    ));
    handler.set_callback(HandlerCallback {
        session,
        handler: Arc::new(HandlerShared::new(0, String::new())),
        set: None,
    });
    let params = InitializeParams {
        event,
        may_bother_user: false,
        settings_only: true,
        cookie: None,
    };
    let within = |what: &'static str| {
        move |_| HandlerError::Failed(format!("no answer to {what} within {timeout:?}"))
    };
    let result = async {
        let participation = tokio::time::timeout(timeout, handler.initialize(&params))
            .await
            .map_err(within("initialize"))??;
        if participation == Participation::Decline {
            return Ok(None);
        }
        let info = tokio::time::timeout(timeout, handler.handler_info())
            .await
            .map_err(within("getHandlerInfo"))??;
        let items = tokio::time::timeout(timeout, handler.enum_items())
            .await
            .map_err(within("enumItems"))??;
        Ok(Some((info, items)))
    }
    .await;
    match &result {
        Ok(_) => {
            if tokio::time::timeout(timeout, handler.shutdown())
                .await
                .is_err()
            {
                handler.terminate();
            }
        }
        Err(_) => handler.terminate(),
    }
    result
}

#[derive(Debug, Default, Clone)]
struct UnitOutcome {
    results: Vec<ItemResult>,
    /// The handler failed as a whole (it could not even get its items going).
    failed: bool,
}

/// Why a guarded call ended without the handler's answer.
#[derive(Debug)]
enum Stop {
    Handler(HandlerError),
    NotResponding,
    IgnoredCancel,
}

impl Stop {
    fn describe(&self, what: &str, ctx: &UnitCtx) -> String {
        match self {
            Stop::Handler(e) => format!("{what} failed: {e}"),
            Stop::NotResponding => format!(
                "the handler was not responding during {what} (silent for {:?}) and was ended",
                ctx.timeout
            ),
            Stop::IgnoredCancel => format!(
                "the handler did not honour a cancel within {:?} during {what} and was ended",
                ctx.grace
            ),
        }
    }

    /// What kind of failure it is.
    fn cause(&self) -> Cause {
        match self {
            Stop::Handler(HandlerError::Exited(_) | HandlerError::Spawn(_)) => Cause::ProcessEnded,
            Stop::Handler(_) => Cause::CallFailed,
            Stop::NotResponding => Cause::NotResponding,
            Stop::IgnoredCancel => Cause::IgnoredCancel,
        }
    }

    /// Whether the handler must be ended rather than asked to shut down.
    fn needs_kill(&self) -> bool {
        !matches!(self, Stop::Handler(HandlerError::Failed(_)))
    }
}

#[derive(Debug)]
struct UnitCtx {
    hs: Arc<HandlerShared>,
    session: Arc<SessionShared>,
    timeout: Duration,
    grace: Duration,
    not_responding: AtomicBool,
    confirm: Option<Arc<dyn Confirm>>,
}

impl UnitCtx {
    fn log(&self, item: Option<&str>, level: LogLevel, cause: Cause, text: String) {
        self.session
            .manager_log(&self.hs.name, item, level, cause, text);
    }

    /// Logs why a call ended without the handler's answer.
    fn log_stop(&self, what: &str, stop: &Stop) -> String {
        let text = stop.describe(what, self);
        self.log(None, LogLevel::Error, stop.cause(), text.clone());
        text
    }

    /// Runs one handler call, ending it early when the handler goes silent for
    /// longer than its timeout, or ignores a cancel for longer than the grace
    /// period.
    async fn guarded<T>(
        &self,
        set: Option<&PreparedSet>,
        call: impl Future<Output = Result<T, HandlerError>>,
    ) -> Result<T, Stop> {
        self.guarded_with(set, false, call).await
    }

    /// [`guarded`](Self::guarded), where `late_answer_counts` says whether an
    /// answer that arrives after the handler was found not responding (in
    /// the grace period) is taken.
    async fn guarded_with<T>(
        &self,
        set: Option<&PreparedSet>,
        late_answer_counts: bool,
        call: impl Future<Output = Result<T, HandlerError>>,
    ) -> Result<T, Stop> {
        let call = std::pin::pin!(call);
        let mut call = call;
        let mut cancels = self.hs.cancel_gen.subscribe();
        let settled = |set: Option<&PreparedSet>| match set {
            Some(set) => set.cancels_settled(),
            None => !self.hs.cancel_all.load(Ordering::SeqCst),
        };
        let mut cancel_deadline = (!settled(set)).then(|| Instant::now() + self.grace);
        let mut silence_deadline: Option<Instant> = None;
        let tick = (self.timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seen = self.hs.activity.load(Ordering::Relaxed);
        let mut seen_at = Instant::now();
        loop {
            tokio::select! {
                biased;
                answer = &mut call => {
                    // A handler found not responding is ended, whatever it
                    // answers in the grace period; only `synchronize` may
                    // still finish its items there (section 3.9).
                    if silence_deadline.is_some() && !late_answer_counts {
                        return Err(Stop::NotResponding);
                    }
                    return answer.map_err(Stop::Handler);
                }
                Ok(()) = cancels.changed() => {
                    if cancel_deadline.is_none() && !settled(set) {
                        cancel_deadline = Some(Instant::now() + self.grace);
                    }
                }
                now = ticker.tick() => {
                    let activity = self.hs.activity.load(Ordering::Relaxed);
                    if activity != seen {
                        seen = activity;
                        seen_at = now;
                    } else if silence_deadline.is_none() && now - seen_at >= self.timeout {
                        self.not_responding.store(true, Ordering::SeqCst);
                        self.log(None, LogLevel::Error, Cause::NotResponding, format!(
                            "the handler is not responding (silent for {:?}); cancelling it",
                            self.timeout
                        ));
                        self.hs.cancel_everything(false);
                        silence_deadline = Some(now + self.grace);
                    }
                    if silence_deadline.is_some_and(|d| now >= d) {
                        return Err(Stop::NotResponding);
                    }
                    if let Some(d) = cancel_deadline && now >= d {
                        if settled(set) {
                            cancel_deadline = None;
                        } else {
                            return Err(Stop::IgnoredCancel);
                        }
                    }
                }
            }
        }
    }
}

struct Unit {
    ctx: UnitCtx,
    handler: Box<dyn Handler>,
}

impl Unit {
    async fn run(mut self, params: &InitializeParams, selection: Selection) -> UnitOutcome {
        // A handler that ends (however) gives the UI back if it held it.
        let _modeless = ModelessRelease {
            session: Arc::clone(&self.ctx.session),
            index: self.ctx.hs.index,
        };
        let ctx = &self.ctx;
        let mut outcome = UnitOutcome::default();
        if ctx.hs.user_cancel_all.load(Ordering::SeqCst) {
            // Cancelled while waiting for its turn: it never starts.
            ctx.session.cancel_took_effect.store(true, Ordering::SeqCst);
            return outcome;
        }
        let base = HandlerCallback {
            session: Arc::clone(&ctx.session),
            handler: Arc::clone(&ctx.hs),
            set: None,
        };
        self.handler.set_callback(base.clone());

        let enumerated = match self.start(params).await {
            Ok(Some(e)) => e,
            Ok(None) => {
                self.shutdown().await;
                return outcome;
            }
            Err((what, stop)) => {
                self.ctx.log_stop(what, &stop);
                self.end(&stop).await;
                outcome.failed = true;
                return outcome;
            }
        };

        let wanted = match selection {
            Selection::Checked(choices) => enumerated
                .items
                .iter()
                .filter(|i| choices.get(&i.id).copied().unwrap_or(i.checked))
                .map(|i| i.id.clone())
                .collect(),
            Selection::Items(ids) => ids,
            Selection::Resolve(resolutions) => match self.resolve(&resolutions, &base).await {
                Ok((items, refused)) => {
                    outcome.failed |= refused;
                    items
                }
                Err(stop) => {
                    self.ctx.log_stop("resolveConflict", &stop);
                    self.end(&stop).await;
                    outcome.failed = true;
                    return outcome;
                }
            },
            Selection::ShowError(error_id) => {
                self.ctx.hs.showing_error.store(true, Ordering::Release);
                let answer = self
                    .ctx
                    .guarded(None, self.handler.show_error(&error_id, &base))
                    .await;
                self.ctx.hs.showing_error.store(false, Ordering::Release);
                match answer {
                    Ok(answer) => match &answer.confirm {
                        Some(text) if !answer.retry.is_empty() => {
                            let agreed = match &self.ctx.confirm {
                                Some(confirm) => confirm.confirm(&self.ctx.hs.name, text).await,
                                None => false,
                            };
                            if agreed {
                                answer.retry
                            } else {
                                self.ctx.log(
                                    None,
                                    LogLevel::Information,
                                    Cause::Notice,
                                    format!(
                                        "the retry was not confirmed, nothing was done: {text}"
                                    ),
                                );
                                Vec::new()
                            }
                        }
                        _ => answer.retry,
                    },
                    Err(stop) => {
                        self.ctx.log_stop("showError", &stop);
                        self.end(&stop).await;
                        outcome.failed = true;
                        return outcome;
                    }
                }
            }
        };

        let mut chosen: Vec<(String, String)> = Vec::new();
        for id in wanted {
            match enumerated.items.iter().find(|i| i.id == id) {
                Some(item) if !chosen.iter().any(|(c, _)| *c == id) => {
                    chosen.push((item.id.clone(), item.name.clone()));
                }
                Some(_) => {}
                None => {
                    self.ctx.log(
                        Some(&id),
                        LogLevel::Error,
                        Cause::BrokenRule,
                        format!("the handler has no item {id:?}"),
                    );
                    outcome.failed = true;
                }
            }
        }
        if !chosen.is_empty() {
            outcome.results = self.sync_round(&chosen, &enumerated).await;
        }
        self.shutdown().await;
        outcome
    }

    /// `resolveConflict` for each decision. Returns the items of the
    /// conflicts resolved (each once, to sync next) and whether the handler
    /// refused any; `Err` when the handler stopped answering.
    async fn resolve(
        &mut self,
        resolutions: &[ConflictResolution],
        base: &HandlerCallback,
    ) -> Result<(Vec<String>, bool), Stop> {
        let mut items: Vec<String> = Vec::new();
        let mut refused = false;
        for resolution in resolutions {
            let ctx = &self.ctx;
            let handler = ctx.hs.name.clone();
            let (item, conflict_id) = (&resolution.item, &resolution.conflict_id);
            match ctx
                .guarded(None, self.handler.resolve_conflict(resolution, base))
                .await
            {
                Ok(()) => {
                    if let Err(e) = ctx
                        .session
                        .journal
                        .remove_conflict(&handler, item, conflict_id)
                        .await
                    {
                        ctx.log(
                            Some(item),
                            LogLevel::Error,
                            Cause::Notice,
                            format!("conflict {conflict_id} was resolved but stays listed: {e}"),
                        );
                    }
                    ctx.log(
                        Some(item),
                        LogLevel::Information,
                        Cause::Notice,
                        format!("conflict {conflict_id} resolved"),
                    );
                    let _ = ctx
                        .session
                        .events
                        .send(SessionEvent::ConflictResolved {
                            handler,
                            item: item.clone(),
                            conflict_id: conflict_id.clone(),
                        })
                        .await;
                    if !items.contains(item) {
                        items.push(item.clone());
                    }
                }
                Err(Stop::Handler(e)) => {
                    refused = true;
                    let reason = e.to_string();
                    // The reason is the handler's; a journal that cannot keep
                    // it still has the conflict open, which is what matters.
                    let _ = ctx
                        .session
                        .journal
                        .refuse_conflict(&handler, item, conflict_id, &reason)
                        .await;
                    // The handler answered: a refusal is not a broken call
                    // (`Notice`), though the user's decision was not applied.
                    ctx.log(
                        Some(item),
                        LogLevel::Error,
                        Cause::Notice,
                        format!("conflict {conflict_id} was not resolved: {reason}"),
                    );
                    let _ = ctx
                        .session
                        .events
                        .send(SessionEvent::ConflictRefused {
                            handler,
                            item: item.clone(),
                            conflict_id: conflict_id.clone(),
                            reason,
                        })
                        .await;
                }
                Err(stop) => return Err(stop),
            }
        }
        Ok((items, refused))
    }

    /// initialize, getHandlerInfo, enumItems. `Ok(None)`: the handler declined.
    async fn start(
        &mut self,
        params: &InitializeParams,
    ) -> Result<Option<ItemEnumeration>, (&'static str, Stop)> {
        let ctx = &self.ctx;
        let participation = ctx
            .guarded(None, self.handler.initialize(params))
            .await
            .map_err(|s| ("initialize", s))?;
        if participation == Participation::Decline {
            return Ok(None);
        }
        let info = ctx
            .guarded(None, self.handler.handler_info())
            .await
            .map_err(|s| ("getHandlerInfo", s))?;
        *ctx.hs.flags.lock().unwrap_or_else(PoisonError::into_inner) = info.flags;
        let mut enumeration = ctx
            .guarded(None, self.handler.enum_items())
            .await
            .map_err(|s| ("enumItems", s))?;
        let mut seen = HashSet::new();
        enumeration.items.retain(|item| {
            let problem = match validate_id(&item.id) {
                Err(e) => Some(e),
                Ok(()) if !seen.insert(item.id.clone()) => {
                    Some(format!("item id {:?} is listed twice", item.id))
                }
                Ok(()) => None,
            };
            if let Some(problem) = &problem {
                ctx.log(
                    None,
                    LogLevel::Error,
                    Cause::BrokenRule,
                    format!("enumItems: item ignored: {problem}"),
                );
            }
            problem.is_none()
        });
        *ctx.hs
            .enumerated
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            Some(enumeration.items.iter().map(|i| i.id.clone()).collect());
        let _ = ctx
            .session
            .events
            .send(SessionEvent::ItemsEnumerated {
                handler: ctx.hs.name.clone(),
                info,
                enumeration: enumeration.clone(),
            })
            .await;
        if ctx.hs.user_cancel_all.load(Ordering::SeqCst) {
            ctx.session.cancel_took_effect.store(true, Ordering::SeqCst);
            return Ok(None);
        }
        Ok(Some(enumeration))
    }

    /// prepareForSync + synchronize for `chosen`, then finalization.
    async fn sync_round(
        &mut self,
        chosen: &[(String, String)],
        enumerated: &ItemEnumeration,
    ) -> Vec<ItemResult> {
        let ctx = &self.ctx;
        let hs = &ctx.hs;
        let set = Arc::new(PreparedSet::new(
            Arc::clone(hs),
            chosen,
            enumerated.items.iter().map(|i| i.id.clone()).collect(),
        ));
        // Items the user stopped before they were handed over are skipped
        // without bothering the handler.
        let early: HashSet<String> = std::mem::take(
            &mut *hs
                .early_cancels
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let all = hs.user_cancel_all.load(Ordering::SeqCst);
        let to_prepare: Vec<String> = {
            let mut slots = set.slots.lock().unwrap_or_else(PoisonError::into_inner);
            for slot in slots.iter_mut() {
                if all || early.contains(&slot.id) {
                    slot.status = ItemStatus::Skipped;
                    slot.cancelled = true;
                }
            }
            slots
                .iter()
                .filter(|s| !s.status.is_terminal())
                .map(|s| s.id.clone())
                .collect()
        };
        ctx.session
            .sets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&set));
        *hs.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&set));
        set.mark_dirty(&ctx.session);
        if to_prepare.is_empty() {
            return finalize(&ctx.session, &set, Cause::NoFinalStatus, "not reached");
        }

        let callback = HandlerCallback {
            session: Arc::clone(&ctx.session),
            handler: Arc::clone(hs),
            set: Some(Arc::clone(&set)),
        };
        let prepared = ctx
            .guarded(
                Some(&set),
                self.handler.prepare_for_sync(&to_prepare, &callback),
            )
            .await;
        let synced = match prepared {
            Ok(()) => ctx
                .guarded_with(Some(&set), true, self.handler.synchronize(&callback))
                .await
                .map_err(|s| ("synchronize", s)),
            Err(stop) => Err(("prepareForSync", stop)),
        };
        set.open.store(false, Ordering::Release);
        let (cause, reason) = match &synced {
            Ok(()) if ctx.not_responding.load(Ordering::SeqCst) => (
                Cause::NotResponding,
                "the handler was not responding".to_owned(),
            ),
            Ok(()) => (
                Cause::NoFinalStatus,
                "the handler never reported a final status".to_owned(),
            ),
            Err((what, stop)) => (stop.cause(), ctx.log_stop(what, stop)),
        };
        let results = finalize(&ctx.session, &set, cause, &reason);
        if let Err((_, stop)) = &synced {
            self.end(stop).await;
        }
        results
    }

    /// Ends a handler after a failed call: killed when it may be wedged.
    async fn end(&mut self, stop: &Stop) {
        if stop.needs_kill() {
            self.handler.terminate();
        } else {
            self.shutdown().await;
        }
    }

    async fn shutdown(&mut self) {
        if tokio::time::timeout(self.ctx.grace, self.handler.shutdown())
            .await
            .is_err()
        {
            self.handler.terminate();
        }
    }
}

/// Releases the modeless-UI lease (`enableModeless`) a handler still holds
/// when its unit ends, so that it cannot keep the UI from the others for
/// the rest of the session.
struct ModelessRelease {
    session: Arc<SessionShared>,
    index: usize,
}

impl Drop for ModelessRelease {
    fn drop(&mut self) {
        let mut lease = self
            .session
            .modeless
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *lease == Some(self.index) {
            *lease = None;
        }
    }
}

/// Ends every item of `set` the handler left open: `stopped` when a cancel
/// was asked for it, `failed` otherwise, each with a log entry. Returns the
/// final status of every item of the set. Idempotent.
fn finalize(
    session: &SessionShared,
    set: &PreparedSet,
    cause: Cause,
    reason: &str,
) -> Vec<ItemResult> {
    set.open.store(false, Ordering::Release);
    let user_all = set.handler.user_cancel_all.load(Ordering::SeqCst);
    let mut entries = Vec::new();
    let results = {
        let mut slots = set.slots.lock().unwrap_or_else(PoisonError::into_inner);
        for slot in slots.iter_mut().filter(|s| !s.status.is_terminal()) {
            let cancelled = slot.cancelled || user_all;
            slot.status = state::forced_end(cancelled);
            slot.changed = true;
            let text = if cancelled {
                "item stopped: the handler did not confirm the cancel".to_owned()
            } else {
                format!("item failed: {reason}")
            };
            let (level, cause) = if cancelled {
                (LogLevel::Warning, Cause::CancelNotConfirmed)
            } else {
                (LogLevel::Error, cause)
            };
            entries.push((slot.id.clone(), level, cause, text));
        }
        if slots.iter().any(|s| {
            (s.cancelled || user_all)
                && matches!(s.status, ItemStatus::Stopped | ItemStatus::Skipped)
        }) {
            session.cancel_took_effect.store(true, Ordering::SeqCst);
        }
        slots
            .iter()
            .map(|s| ItemResult {
                handler: set.handler.name.clone(),
                item: s.id.clone(),
                status: s.status,
            })
            .collect()
    };
    for (item, level, cause, text) in entries {
        session.manager_log(&set.handler.name, Some(&item), level, cause, text);
    }
    set.mark_dirty(session);
    results
}

/// Turns the coalesced state into events until the session finishes, then
/// flushes and sends the one final event.
async fn pump(
    shared: Arc<SessionShared>,
    mut finish: oneshot::Receiver<SessionSummary>,
    coalesce: Duration,
) {
    let summary = loop {
        tokio::select! {
            () = shared.wake.notified() => {
                flush(&shared).await;
                // At most one round of events per interval, so that a
                // handler reporting very often costs the consumers little;
                // but the end of the session does not wait for it.
                tokio::select! {
                    () = tokio::time::sleep(coalesce) => {}
                    summary = &mut finish => break summary,
                }
            }
            summary = &mut finish => break summary,
        }
    };
    flush(&shared).await;
    if let Ok(summary) = summary {
        let _ = shared.events.send(SessionEvent::Finished(summary)).await;
    }
}

async fn flush(shared: &SessionShared) {
    let sets: Vec<Arc<PreparedSet>> = shared
        .sets
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for set in sets {
        if !set.dirty.swap(false, Ordering::AcqRel) {
            continue;
        }
        let changed: Vec<ItemSnapshot> = {
            let mut slots = set.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots
                .iter_mut()
                .filter(|s| s.changed)
                .map(|s| {
                    s.changed = false;
                    ItemSnapshot {
                        handler: set.handler.name.clone(),
                        item: s.id.clone(),
                        name: s.name.clone(),
                        status: s.status,
                        text: s.text.clone(),
                        value: s.value,
                        max: s.max,
                    }
                })
                .collect()
        };
        for snapshot in changed {
            let _ = shared
                .events
                .send(SessionEvent::ItemChanged(snapshot))
                .await;
        }
    }
    let pending: Vec<_> = shared
        .pending_log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain(..)
        .collect();
    if pending.is_empty() {
        return;
    }
    match shared.journal.append_batch(pending.clone()).await {
        Ok(ids) => {
            for (id, entry) in ids.into_iter().zip(pending) {
                let _ = shared
                    .events
                    .send(SessionEvent::Log(LogEntry { id, entry }))
                    .await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not record {} log entries", pending.len()),
    }
}
