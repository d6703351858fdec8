//! [`StoreWriter`]: the store moved onto a thread of its own, fed by a channel,
//! so that async code never waits on SQLite.
//!
//! The thread owns the [`Store`] and does group commit: it takes whatever
//! writes are queued (up to [`MAX_GROUP`]), runs them in one transaction, each
//! inside a savepoint, commits once, and only then answers each caller. A write
//! that fails on its own is rolled back to its savepoint and answered with its
//! error, without spoiling the others; if the transaction itself cannot begin
//! or commit, every write of the group gets that error. Nothing is
//! acknowledged before the commit that makes it durable.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use syncmgr_core::{
    ItemEnumeration, ItemResult, Journal, JournalError, NewConflict, NewLogEntry, SessionOutcome,
    StatusCounts, Timestamp,
};
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::ops::{self, OpResult};
use crate::store::Store;
use crate::types::SessionRecord;

/// How many writes may wait in the channel before senders wait in turn.
const QUEUE: usize = 1024;
/// The most writes one transaction takes, so a flood still gets answers in
/// bounded batches.
const MAX_GROUP: usize = 256;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A handle on the store's writer thread. Cheap to clone; every clone feeds the
/// same thread. Every method waits for the commit of its write.
///
/// The thread ends after [`close`](StoreWriter::close), or when every clone is
/// dropped (after writing what was queued).
#[derive(Debug, Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Message>,
}

enum Message {
    Write(Write),
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// A change to the conflict store.
enum ConflictOp {
    Record(NewConflict),
    Remove {
        handler: String,
        item: String,
        conflict_id: String,
    },
    Refuse {
        handler: String,
        item: String,
        conflict_id: String,
        reason: String,
    },
}

enum Write {
    Conflict {
        op: ConflictOp,
        /// The id for `Record`; 1 or 0 (changed a row or not) otherwise.
        reply: Reply<i64>,
    },
    Append {
        entry: NewLogEntry,
        reply: Reply<i64>,
    },
    AppendBatch {
        entries: Vec<NewLogEntry>,
        reply: Reply<Vec<i64>>,
    },
    DeleteLogFor {
        session: String,
        handler: String,
        error_id: Option<String>,
        reply: Reply<u64>,
    },
    DeleteLog {
        id: i64,
        reply: Reply<bool>,
    },
    ApplyEnumeration {
        handler: String,
        enumeration: ItemEnumeration,
        reply: Reply<()>,
    },
    SetLastUpdate {
        handler: String,
        item: String,
        time: Timestamp,
        reply: Reply<bool>,
    },
    BeginSession {
        record: SessionRecord,
        reply: Reply<()>,
    },
    FinishSession {
        id: String,
        outcome: SessionOutcome,
        counts: StatusCounts,
        finished: Timestamp,
        items: Vec<ItemResult>,
        reply: Reply<()>,
    },
}

impl Store {
    /// Moves the store onto a dedicated thread and returns the handle that
    /// feeds it.
    pub fn spawn_writer(self) -> Result<StoreWriter, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("syncmgr-store".into())
            .spawn(move || run(self, rx))
            .map_err(StoreError::Spawn)?;
        Ok(StoreWriter { tx })
    }
}

impl StoreWriter {
    async fn call<T>(&self, write: impl FnOnce(Reply<T>) -> Write) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Message::Write(write(reply)))
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        // A dropped reply means the thread ended without answering.
        answer.await.map_err(|_| StoreError::WriterClosed)?
    }

    /// [`Store::append_log`], committed before it returns.
    pub async fn append_log(&self, entry: NewLogEntry) -> Result<i64, StoreError> {
        self.call(|reply| Write::Append { entry, reply }).await
    }

    /// [`Store::append_log`] for several entries, in one transaction.
    pub async fn append_logs(&self, entries: Vec<NewLogEntry>) -> Result<Vec<i64>, StoreError> {
        self.call(|reply| Write::AppendBatch { entries, reply })
            .await
    }

    /// [`Store::delete_log_for`].
    pub async fn delete_log_for(
        &self,
        session: &str,
        handler: &str,
        error_id: Option<&str>,
    ) -> Result<u64, StoreError> {
        self.call(|reply| Write::DeleteLogFor {
            session: session.to_owned(),
            handler: handler.to_owned(),
            error_id: error_id.map(str::to_owned),
            reply,
        })
        .await
    }

    /// [`Store::record_conflict`].
    pub async fn record_conflict(&self, conflict: NewConflict) -> Result<i64, StoreError> {
        self.call(|reply| Write::Conflict {
            op: ConflictOp::Record(conflict),
            reply,
        })
        .await
    }

    /// [`Store::remove_conflict`].
    pub async fn remove_conflict(
        &self,
        handler: &str,
        item: &str,
        conflict_id: &str,
    ) -> Result<bool, StoreError> {
        let op = ConflictOp::Remove {
            handler: handler.to_owned(),
            item: item.to_owned(),
            conflict_id: conflict_id.to_owned(),
        };
        Ok(self.call(|reply| Write::Conflict { op, reply }).await? > 0)
    }

    /// [`Store::refuse_conflict`].
    pub async fn refuse_conflict(
        &self,
        handler: &str,
        item: &str,
        conflict_id: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let op = ConflictOp::Refuse {
            handler: handler.to_owned(),
            item: item.to_owned(),
            conflict_id: conflict_id.to_owned(),
            reason: reason.to_owned(),
        };
        Ok(self.call(|reply| Write::Conflict { op, reply }).await? > 0)
    }

    /// [`Store::delete_log`]: removes one entry by its id.
    pub async fn delete_log(&self, id: i64) -> Result<bool, StoreError> {
        self.call(|reply| Write::DeleteLog { id, reply }).await
    }

    /// [`Store::apply_enumeration`].
    pub async fn apply_enumeration(
        &self,
        handler: &str,
        enumeration: ItemEnumeration,
    ) -> Result<(), StoreError> {
        self.call(|reply| Write::ApplyEnumeration {
            handler: handler.to_owned(),
            enumeration,
            reply,
        })
        .await
    }

    /// [`Store::set_last_update`].
    pub async fn set_last_update(
        &self,
        handler: &str,
        item: &str,
        time: Timestamp,
    ) -> Result<bool, StoreError> {
        self.call(|reply| Write::SetLastUpdate {
            handler: handler.to_owned(),
            item: item.to_owned(),
            time,
            reply,
        })
        .await
    }

    /// [`Store::begin_session`].
    pub async fn begin_session(&self, record: SessionRecord) -> Result<(), StoreError> {
        self.call(|reply| Write::BeginSession { record, reply })
            .await
    }

    /// [`Store::finish_session`].
    pub async fn finish_session(
        &self,
        id: &str,
        outcome: SessionOutcome,
        counts: StatusCounts,
        finished: Timestamp,
        items: Vec<ItemResult>,
    ) -> Result<(), StoreError> {
        self.call(|reply| Write::FinishSession {
            id: id.to_owned(),
            outcome,
            counts,
            finished,
            items,
            reply,
        })
        .await
    }

    /// Waits until every write sent before this call is committed (or failed),
    /// then ends the thread and closes the database. Writes sent afterwards,
    /// through any clone, fail with [`StoreError::WriterClosed`]. Closing a
    /// closed writer does nothing.
    pub async fn close(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Message::Close(reply)).await.is_err() {
            // The thread is gone, so whatever was sent has been handled.
            return Ok(());
        }
        answer.await.map_err(|_| StoreError::WriterClosed)?
    }
}

#[async_trait]
impl Journal for StoreWriter {
    async fn append(&self, entry: NewLogEntry) -> Result<i64, JournalError> {
        self.append_log(entry)
            .await
            .map_err(|e| JournalError(e.chain_to_string()))
    }

    async fn append_batch(&self, entries: Vec<NewLogEntry>) -> Result<Vec<i64>, JournalError> {
        self.append_logs(entries)
            .await
            .map_err(|e| JournalError(e.chain_to_string()))
    }

    async fn delete(
        &self,
        session: &str,
        handler: &str,
        error_id: Option<&str>,
    ) -> Result<u64, JournalError> {
        self.delete_log_for(session, handler, error_id)
            .await
            .map_err(|e| JournalError(e.chain_to_string()))
    }

    async fn record_conflict(&self, conflict: NewConflict) -> Result<i64, JournalError> {
        StoreWriter::record_conflict(self, conflict)
            .await
            .map_err(|e| JournalError(e.chain_to_string()))
    }

    async fn remove_conflict(
        &self,
        handler: &str,
        item: &str,
        conflict_id: &str,
    ) -> Result<bool, JournalError> {
        StoreWriter::remove_conflict(self, handler, item, conflict_id)
            .await
            .map_err(|e| JournalError(e.chain_to_string()))
    }

    async fn refuse_conflict(
        &self,
        handler: &str,
        item: &str,
        conflict_id: &str,
        reason: &str,
    ) -> Result<(), JournalError> {
        StoreWriter::refuse_conflict(self, handler, item, conflict_id, reason)
            .await
            .map(drop)
            .map_err(|e| JournalError(e.chain_to_string()))
    }
}

// ---------------------------------------------------------------------------
// The thread
// ---------------------------------------------------------------------------

/// A write that has run, with its answer held back until the group's commit.
struct Done(Box<dyn FnOnce(Option<StoreError>) + Send>);

impl Done {
    fn new<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Self {
        Done(Box::new(move |commit_failure| {
            let result = match (result, commit_failure) {
                (Ok(_), Some(e)) => Err(e),
                (result, _) => result,
            };
            // The caller may have stopped waiting (its future was dropped); the
            // write stands either way.
            let _ = reply.send(result);
        }))
    }
}

impl Write {
    /// Runs the write; returns whether it succeeded and its held-back answer.
    fn execute(self, conn: &Connection, path: &Path) -> (bool, Done) {
        fn done<T: Send + 'static>(reply: Reply<T>, r: OpResult<T>, path: &Path) -> (bool, Done) {
            let r = r.map_err(|e| e.at(path));
            (r.is_ok(), Done::new(reply, r))
        }
        match self {
            Write::Conflict { op, reply } => {
                let result = match op {
                    ConflictOp::Record(conflict) => ops::record_conflict(conn, &conflict),
                    ConflictOp::Remove {
                        handler,
                        item,
                        conflict_id,
                    } => ops::remove_conflict(conn, &handler, &item, &conflict_id).map(i64::from),
                    ConflictOp::Refuse {
                        handler,
                        item,
                        conflict_id,
                        reason,
                    } => ops::refuse_conflict(conn, &handler, &item, &conflict_id, &reason)
                        .map(i64::from),
                };
                done(reply, result, path)
            }
            Write::Append { entry, reply } => done(reply, ops::append_log(conn, &entry), path),
            Write::AppendBatch { entries, reply } => {
                let ids = entries
                    .iter()
                    .map(|entry| ops::append_log(conn, entry))
                    .collect::<Result<Vec<_>, _>>();
                done(reply, ids, path)
            }
            Write::DeleteLogFor {
                session,
                handler,
                error_id,
                reply,
            } => done(
                reply,
                ops::delete_log_for(conn, &session, &handler, error_id.as_deref()),
                path,
            ),
            Write::DeleteLog { id, reply } => done(reply, ops::delete_log(conn, id), path),
            Write::ApplyEnumeration {
                handler,
                enumeration,
                reply,
            } => done(
                reply,
                ops::apply_enumeration(conn, &handler, &enumeration),
                path,
            ),
            Write::SetLastUpdate {
                handler,
                item,
                time,
                reply,
            } => done(
                reply,
                ops::set_last_update(conn, &handler, &item, time),
                path,
            ),
            Write::BeginSession { record, reply } => {
                done(reply, ops::begin_session(conn, &record), path)
            }
            Write::FinishSession {
                id,
                outcome,
                counts,
                finished,
                items,
                reply,
            } => done(
                reply,
                ops::finish_session(conn, &id, outcome, counts, finished, &items),
                path,
            ),
        }
    }

    /// Answers without running.
    fn reject(self, error: StoreError) {
        fn send<T>(reply: Reply<T>, error: StoreError) {
            let _ = reply.send(Err(error));
        }
        match self {
            Write::Append { reply, .. } | Write::Conflict { reply, .. } => send(reply, error),
            Write::AppendBatch { reply, .. } => send(reply, error),
            Write::DeleteLogFor { reply, .. } => send(reply, error),
            Write::SetLastUpdate { reply, .. } | Write::DeleteLog { reply, .. } => {
                send(reply, error);
            }
            Write::ApplyEnumeration { reply, .. }
            | Write::BeginSession { reply, .. }
            | Write::FinishSession { reply, .. } => send(reply, error),
        }
    }
}

fn run(store: Store, mut rx: mpsc::Receiver<Message>) {
    let mut closers = Vec::new();
    // `None` from the channel: every handle is gone, nothing more can come.
    while let Some(first) = rx.blocking_recv() {
        let mut group = Vec::new();
        let mut message = first;
        loop {
            match message {
                Message::Write(w) => group.push(w),
                Message::Close(reply) => {
                    closers.push(reply);
                    break;
                }
            }
            if group.len() >= MAX_GROUP {
                break;
            }
            match rx.try_recv() {
                Ok(next) => message = next,
                Err(_) => break,
            }
        }
        if !group.is_empty() {
            commit_group(&store, group);
        }
        if !closers.is_empty() {
            break;
        }
    }

    // Refuse whatever other handles sent after the close.
    rx.close();
    while let Ok(message) = rx.try_recv() {
        match message {
            Message::Write(w) => w.reject(StoreError::WriterClosed),
            Message::Close(reply) => closers.push(reply),
        }
    }
    let closed = store.close();
    let mut closers = closers.into_iter();
    match closers.next() {
        Some(first) => {
            let ok = closed.is_ok();
            let _ = first.send(closed);
            for other in closers {
                let _ = other.send(if ok {
                    Ok(())
                } else {
                    Err(StoreError::WriterClosed)
                });
            }
        }
        None => {
            if let Err(e) = closed {
                tracing::warn!(error = %e.chain_to_string(), "closing the store failed");
            }
        }
    }
}

/// Runs `group` in one transaction and answers every write after the commit.
fn commit_group(store: &Store, group: Vec<Write>) {
    let path = &store.path;
    let failure = |e: &Arc<rusqlite::Error>| StoreError::Commit {
        path: path.clone(),
        source: Arc::clone(e),
    };
    let count = group.len();
    let mut tx = match Transaction::new_unchecked(&store.conn, TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let e = Arc::new(e);
            for w in group {
                w.reject(failure(&e));
            }
            return;
        }
    };
    let mut answers = Vec::with_capacity(count);
    // Set when the transaction itself is no longer usable (SQLite rolled it
    // back after an I/O error, a savepoint could not be undone...).
    let mut broken: Option<Arc<rusqlite::Error>> = None;
    for w in group {
        if let Some(e) = &broken {
            w.reject(failure(e));
            continue;
        }
        let mut savepoint = match tx.savepoint() {
            Ok(sp) => sp,
            Err(e) => {
                let e = Arc::new(e);
                w.reject(failure(&e));
                broken = Some(e);
                continue;
            }
        };
        let (ok, answer) = w.execute(&savepoint, path);
        let ended = if ok {
            savepoint.commit()
        } else {
            // Undo only this write; the others of the group go on.
            savepoint.rollback().and_then(|()| savepoint.commit())
        };
        answers.push(answer);
        if let Err(e) = ended {
            broken = Some(Arc::new(e));
        }
    }
    let commit_failure = match broken {
        Some(e) => Some(e), // dropping `tx` rolls back
        None => tx.commit().err().map(Arc::new),
    };
    if let Some(e) = &commit_failure {
        tracing::warn!(error = %e, writes = count, "a group commit failed");
    } else {
        tracing::trace!(writes = count, "group committed");
    }
    for Done(answer) in answers {
        answer(commit_failure.as_ref().map(failure));
    }
}
