//! The [`Handler`] trait (`ISyncMgrSynchronize`) and the [`Journal`] trait the
//! engine records the results log through.

use async_trait::async_trait;

use crate::callback::HandlerCallback;
use crate::error::{HandlerError, JournalError};
use crate::model::{
    ConflictResolution, HandlerInfo, InitializeParams, ItemEnumeration, NewConflict, NewLogEntry,
    Participation, PropertiesOutcome, ShowErrorAnswer,
};

/// A sync handler, in process or behind a child process.
///
/// The engine calls the methods in the order of mobsync.h:
/// [`set_callback`](Handler::set_callback), [`initialize`](Handler::initialize),
/// [`handler_info`](Handler::handler_info), [`enum_items`](Handler::enum_items),
/// then either [`show_properties`](Handler::show_properties) (settings mode) or
/// [`prepare_for_sync`](Handler::prepare_for_sync) +
/// [`synchronize`](Handler::synchronize), optionally
/// [`show_error`](Handler::show_error) (with a retry round), and finally
/// [`shutdown`](Handler::shutdown). Each call is awaited before the next one, so
/// an implementation never sees two at once; progress, logging and cancellation
/// flow through the [`HandlerCallback`] while `prepare_for_sync` and
/// `synchronize` run.
///
/// mobsync's asynchronous `X` + `XCompleted` pairs are one `async fn` here: the
/// returned future completing is the `Completed` call.
///
/// Cancellation (`SetItemStatus(SKIPPED)` and the `Progress` reply) is read from
/// the callback: [`HandlerCallback::progress`] answers with the
/// [`ProgressReply`](crate::ProgressReply), and
/// [`HandlerCallback::take_skip_requests`] lists items the user stopped.
///
/// A handler that ignores cancellation past the grace period, or stays silent
/// past its timeout, has its future dropped and [`terminate`](Handler::terminate)
/// called; dropping must therefore leave nothing running.
#[async_trait]
pub trait Handler: Send {
    /// `SetProgressCallback`: hands the handler the callback it may use outside
    /// the prepare/synchronize window (for diagnostics; progress is refused there).
    /// Called once, before `initialize`.
    fn set_callback(&mut self, callback: HandlerCallback) {
        let _ = callback;
    }

    /// `Initialize`: does the handler take part in this event?
    async fn initialize(
        &mut self,
        params: &InitializeParams,
    ) -> Result<Participation, HandlerError>;

    /// `GetHandlerInfo`.
    async fn handler_info(&mut self) -> Result<HandlerInfo, HandlerError>;

    /// `EnumSyncMgrItems`.
    async fn enum_items(&mut self) -> Result<ItemEnumeration, HandlerError>;

    /// `ShowProperties`: `None` is the handler itself.
    async fn show_properties(
        &mut self,
        item: Option<&str>,
    ) -> Result<PropertiesOutcome, HandlerError> {
        let _ = item;
        Err(HandlerError::Failed(
            "this handler has no properties".into(),
        ))
    }

    /// `PrepareForSync`: the items chosen for this session. An error releases the
    /// handler without `synchronize`.
    async fn prepare_for_sync(
        &mut self,
        items: &[String],
        callback: &HandlerCallback,
    ) -> Result<(), HandlerError>;

    /// `Synchronize`: sync exactly the prepared items, reporting through
    /// `callback`. Returning is `SynchronizeCompleted`.
    async fn synchronize(&mut self, callback: &HandlerCallback) -> Result<(), HandlerError>;

    /// `ShowError`: the user activated a log entry with this (handler's) error
    /// id. A non-empty `retry` is `S_SYNCMGR_RETRYSYNC` for those items; a
    /// `confirm` text makes the retry wait for the user's yes.
    async fn show_error(
        &mut self,
        error_id: &str,
        callback: &HandlerCallback,
    ) -> Result<ShowErrorAnswer, HandlerError> {
        let _ = (error_id, callback);
        Ok(ShowErrorAnswer::default())
    }

    /// `ISyncMgrResolutionHandler`: the user decided on a conflict this
    /// handler reported. `Ok` once the decision is applied (the manager then
    /// drops the conflict and syncs the item); an error says why not (the
    /// conflict stays, with that reason). A handler that finds the versions
    /// changed since it reported them refuses rather than guess.
    async fn resolve_conflict(
        &mut self,
        resolution: &ConflictResolution,
        callback: &HandlerCallback,
    ) -> Result<(), HandlerError> {
        let _ = (resolution, callback);
        Err(HandlerError::Failed(
            "this handler does not resolve conflicts".into(),
        ))
    }

    /// `SetProgressCallback(NULL)` + release: the session is over for this
    /// handler. Should return promptly; the engine bounds it anyway.
    async fn shutdown(&mut self) {}

    /// Ends the handler at once (the process is killed). Called after its
    /// pending future was dropped because it stopped responding.
    fn terminate(&mut self) {}
}

/// Asks the user to agree to a retry that its handler says needs agreeing to
/// ([`ShowErrorAnswer::confirm`]). The host implements it: a prompt on a
/// terminal, a `--yes` flag, a dialog in the dashboard.
#[async_trait]
pub trait Confirm: Send + Sync + std::fmt::Debug {
    /// Whether to go ahead. `handler` is the registration name, `text` what
    /// the retry will do in the handler's words.
    async fn confirm(&self, handler: &str, text: &str) -> bool;
}

/// Where a session's durable records go: the results log and the conflict
/// store. The engine awaits [`Journal::append`] before it answers a
/// handler's `logError`, and [`Journal::record_conflict`] before it answers
/// `reportConflict`, so an acknowledged entry or conflict is durable.
#[async_trait]
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// Records an entry; returns the id it is known by from now on.
    async fn append(&self, entry: NewLogEntry) -> Result<i64, JournalError>;

    /// Records several entries at once (the manager's own, which pile up
    /// while a session runs); returns their ids in order. A journal on disk
    /// writes them in one transaction.
    async fn append_batch(&self, entries: Vec<NewLogEntry>) -> Result<Vec<i64>, JournalError> {
        let mut ids = Vec::with_capacity(entries.len());
        for entry in entries {
            ids.push(self.append(entry).await?);
        }
        Ok(ids)
    }

    /// `DeleteLogError`: removes the entries `handler` logged in `session` with
    /// this error id, or every one of them when `error_id` is `None`. Returns
    /// how many went.
    async fn delete(
        &self,
        session: &str,
        handler: &str,
        error_id: Option<&str>,
    ) -> Result<u64, JournalError>;

    /// Stores a conflict, replacing the open one with the same handler, item
    /// and conflict id (a handler reports a conflict again at every sync
    /// until it is resolved); returns the id it is known by.
    async fn record_conflict(&self, conflict: NewConflict) -> Result<i64, JournalError> {
        let _ = conflict;
        Err(JournalError("this journal keeps no conflicts".into()))
    }

    /// Drops a conflict (resolved by the handler itself, or by the user's
    /// decision). Returns whether there was one.
    async fn remove_conflict(
        &self,
        handler: &str,
        item: &str,
        conflict_id: &str,
    ) -> Result<bool, JournalError> {
        let _ = (handler, item, conflict_id);
        Ok(false)
    }

    /// Notes why a decision on a conflict could not be applied (the handler's
    /// reason); the conflict stays open.
    async fn refuse_conflict(
        &self,
        handler: &str,
        item: &str,
        conflict_id: &str,
        reason: &str,
    ) -> Result<(), JournalError> {
        let _ = (handler, item, conflict_id, reason);
        Ok(())
    }
}

/// A [`Journal`] that keeps entries in memory: for embedding without a store,
/// and for tests.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    entries: std::sync::Mutex<Vec<(i64, NewLogEntry)>>,
    /// Calls that wrote (an `append` or a whole `append_batch`): what a
    /// journal on disk pays a transaction for.
    writes: std::sync::atomic::AtomicU64,
    /// Open conflicts with their ids and refusal reasons.
    conflicts: std::sync::Mutex<Vec<(i64, NewConflict, Option<String>)>>,
}

impl MemoryJournal {
    /// The entries recorded so far, oldest first.
    pub fn entries(&self) -> Vec<(i64, NewLogEntry)> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The open conflicts, oldest first, each with the reason its last
    /// resolution was refused.
    pub fn conflicts(&self) -> Vec<(i64, NewConflict, Option<String>)> {
        self.conflicts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// How many writes (transactions, for a journal on disk) recorded them.
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn push(&self, batch: Vec<NewLogEntry>) -> Vec<i64> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        batch
            .into_iter()
            .map(|entry| {
                let id = entries.last().map_or(1, |(id, _)| id + 1);
                entries.push((id, entry));
                id
            })
            .collect()
    }
}

#[async_trait]
impl Journal for MemoryJournal {
    async fn append(&self, entry: NewLogEntry) -> Result<i64, JournalError> {
        Ok(self.push(vec![entry])[0])
    }

    async fn append_batch(&self, entries: Vec<NewLogEntry>) -> Result<Vec<i64>, JournalError> {
        Ok(self.push(entries))
    }

    async fn delete(
        &self,
        session: &str,
        handler: &str,
        error_id: Option<&str>,
    ) -> Result<u64, JournalError> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = entries.len();
        entries.retain(|(_, e)| {
            !(e.session == session
                && e.handler == handler
                && e.error_id.is_some()
                && error_id.is_none_or(|id| e.error_id.as_deref() == Some(id)))
        });
        Ok((before - entries.len()) as u64)
    }

    async fn record_conflict(&self, conflict: NewConflict) -> Result<i64, JournalError> {
        let mut open = self
            .conflicts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let same = |c: &NewConflict| {
            c.handler == conflict.handler
                && c.report.item == conflict.report.item
                && c.report.conflict_id == conflict.report.conflict_id
        };
        if let Some(slot) = open.iter_mut().find(|(_, c, _)| same(c)) {
            slot.1 = conflict;
            slot.2 = None;
            return Ok(slot.0);
        }
        let id = open.iter().map(|(id, _, _)| *id).max().unwrap_or(0) + 1;
        open.push((id, conflict, None));
        Ok(id)
    }

    async fn remove_conflict(
        &self,
        handler: &str,
        item: &str,
        conflict_id: &str,
    ) -> Result<bool, JournalError> {
        let mut open = self
            .conflicts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = open.len();
        open.retain(|(_, c, _)| {
            !(c.handler == handler && c.report.item == item && c.report.conflict_id == conflict_id)
        });
        Ok(open.len() < before)
    }

    async fn refuse_conflict(
        &self,
        handler: &str,
        item: &str,
        conflict_id: &str,
        reason: &str,
    ) -> Result<(), JournalError> {
        let mut open = self
            .conflicts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (_, c, why) in open.iter_mut() {
            if c.handler == handler && c.report.item == item && c.report.conflict_id == conflict_id
            {
                *why = Some(reason.to_owned());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LogLevel;

    fn entry(session: &str, handler: &str, error_id: Option<&str>) -> NewLogEntry {
        NewLogEntry {
            time: chrono::DateTime::UNIX_EPOCH,
            level: LogLevel::Warning,
            handler: handler.into(),
            item: None,
            text: "t".into(),
            actionable: false,
            session: session.into(),
            error_id: error_id.map(str::to_owned),
            cause: None,
        }
    }

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(future)
    }

    /// A journal that only has `append`, to test the trait's default batch.
    #[derive(Debug, Default)]
    struct OneByOne(MemoryJournal);

    #[async_trait]
    impl Journal for OneByOne {
        async fn append(&self, entry: NewLogEntry) -> Result<i64, JournalError> {
            self.0.append(entry).await
        }

        async fn delete(
            &self,
            session: &str,
            handler: &str,
            error_id: Option<&str>,
        ) -> Result<u64, JournalError> {
            self.0.delete(session, handler, error_id).await
        }
    }

    #[test]
    fn batches_get_consecutive_ids_in_order() {
        let journal = MemoryJournal::default();
        let ids = run(journal.append_batch(vec![
            entry("s", "h", None),
            entry("s", "h", None),
            entry("s", "h", None),
        ]))
        .unwrap();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(run(journal.append(entry("s", "h", None))).unwrap(), 4);
        assert_eq!(journal.writes(), 2, "a batch is one write");
        // The trait's own batch, for journals without one, appends in turn.
        let plain = OneByOne::default();
        let ids = run(plain.append_batch(vec![entry("s", "h", None), entry("s", "h", None)]));
        assert_eq!(ids.unwrap(), [1, 2]);
        assert_eq!(plain.0.entries().len(), 2);
    }

    #[test]
    fn delete_takes_only_this_handlers_entries_of_this_session() {
        let journal = MemoryJournal::default();
        for e in [
            entry("s", "h", Some("e1")),
            entry("s", "h", Some("e2")),
            entry("s", "h", None), // the manager's own: never deleted
            entry("s", "other", Some("e1")),
            entry("t", "h", Some("e1")),
        ] {
            run(journal.append(e)).unwrap();
        }
        assert_eq!(run(journal.delete("s", "h", Some("e1"))).unwrap(), 1);
        assert_eq!(run(journal.delete("s", "h", Some("e1"))).unwrap(), 0);
        let left: Vec<(String, String, Option<String>)> = journal
            .entries()
            .into_iter()
            .map(|(_, e)| (e.session, e.handler, e.error_id))
            .collect();
        assert_eq!(left.len(), 4);
        assert!(!left.contains(&("s".into(), "h".into(), Some("e1".into()))));
        // `None`: every entry of this handler in this session that has an id.
        assert_eq!(run(journal.delete("s", "h", None)).unwrap(), 1);
        let left: Vec<(String, String, Option<String>)> = journal
            .entries()
            .into_iter()
            .map(|(_, e)| (e.session, e.handler, e.error_id))
            .collect();
        assert_eq!(
            left,
            [
                ("s".into(), "h".into(), None),
                ("s".into(), "other".into(), Some("e1".into())),
                ("t".into(), "h".into(), Some("e1".into())),
            ]
        );
    }
}
