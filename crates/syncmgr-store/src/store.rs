//! [`Store`]: one SQLite connection, opened and checked, with the whole API as
//! synchronous methods.
//!
//! This module owns how a database file is opened: telling a syncmgr database
//! from garbage or another program's file, refusing a newer schema, the
//! pragmas that make an acknowledged write durable, and the migrations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use syncmgr_core::{
    ItemEnumeration, ItemResult, LogEntry, NewConflict, NewLogEntry, SessionOutcome, StatusCounts,
    SyncEvent, Timestamp,
};

use crate::error::{OpError, StoreError};
use crate::ops::{self, OpResult};
use crate::schema::{APPLICATION_ID, LATEST_VERSION, MIGRATIONS};
use crate::types::{
    ConflictRecord, KnownItem, LogFilter, Registration, Retention, ScheduleRecord, SessionRecord,
};

/// How long a write waits for another process's lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The syncmgr database, through one connection.
///
/// Every method is synchronous and may wait on the disk (and, for up to
/// five seconds, on another process's lock): call it from a plain thread or
/// `spawn_blocking`, or hand the store to [`Store::spawn_writer`]. Each write
/// method is one transaction of its own.
#[derive(Debug)]
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
}

impl Store {
    /// Opens the database at `path`, creating it if missing (its parent
    /// directory must exist), and brings its schema up to date.
    ///
    /// Fails with [`StoreError::NotADatabase`] for a file that is not SQLite or
    /// belongs to another program, and with [`StoreError::TooNew`] for a
    /// database a newer syncmgr wrote; neither is modified.
    #[tracing::instrument(level = "trace", skip_all, fields(path = %path.display()), err(level = "debug"))]
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        Store::setup(conn, path.to_owned())
    }

    /// A private database in memory, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        Store::setup(conn, path)
    }

    /// The database file (`:memory:` for [`Store::open_in_memory`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn setup(mut conn: Connection, path: PathBuf) -> Result<Store, StoreError> {
        // Failures here are about opening, unless SQLite says the file itself
        // is wrong.
        let fail = |source: rusqlite::Error| match StoreError::from_sqlite(&path, source) {
            StoreError::Sqlite { path, source } => StoreError::Open { path, source },
            other => other,
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;

        // Look before writing anything: a foreign or newer file is left as it was.
        let version = check_identity(&conn, &path).map_err(|e| e.at(&path))?;

        // WAL lets readers (the CLI) run while the manager writes. Switching
        // needs a moment with no other connection in the file, and SQLite
        // answers BUSY at once (no busy timeout) when another process is in
        // the middle of creating it: retry for as long as the busy timeout.
        let started = std::time::Instant::now();
        let mode: String = loop {
            match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && started.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => break other.map_err(fail)?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            tracing::warn!(path = %path.display(), mode, "the database could not be put in WAL mode");
        }
        // FULL, not NORMAL: in WAL mode NORMAL skips the sync at commit, so a
        // power cut can lose the last commits. The engine answers a handler's
        // `logError` only once its entry is committed, and promises that such an
        // entry survives; group commit in the writer keeps the extra fsync cheap.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(fail)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(fail)?;
        // Every write transaction takes the write lock at BEGIN: a deferred one
        // that upgrades later can fail with SQLITE_BUSY at once, without the
        // busy timeout helping, when another process wrote in between.
        conn.set_transaction_behavior(TransactionBehavior::Immediate);

        if version < LATEST_VERSION as i64 {
            if let Err(source) = MIGRATIONS.to_latest(&mut conn) {
                // Two syncmgr processes opening a fresh file can both decide to
                // migrate; the second then fails on tables the first created.
                // If the version moved meanwhile, someone else migrated: check
                // what they left, and finish the job if anything remains.
                let now = check_identity(&conn, &path).map_err(|e| e.at(&path))?;
                if now == version {
                    return Err(StoreError::Migrate { path, source });
                }
                MIGRATIONS
                    .to_latest(&mut conn)
                    .map_err(|source| StoreError::Migrate {
                        path: path.clone(),
                        source,
                    })?;
            }
            tracing::debug!(path = %path.display(), from = version, to = LATEST_VERSION, "database migrated");
        }
        Ok(Store { conn, path })
    }

    /// Closes the connection, reporting what SQLite says (dropping the store
    /// closes it too, silently).
    pub fn close(self) -> Result<(), StoreError> {
        let path = self.path;
        self.conn
            .close()
            .map_err(|(_, source)| StoreError::from_sqlite(&path, source))
    }

    fn read<T>(&self, op: impl FnOnce(&Connection) -> OpResult<T>) -> Result<T, StoreError> {
        op(&self.conn).map_err(|e| e.at(&self.path))
    }

    fn write<T>(&self, op: impl FnOnce(&Connection) -> OpResult<T>) -> Result<T, StoreError> {
        let run = || -> OpResult<T> {
            // `new_unchecked` because the methods take `&self`; the connection
            // is not `Sync` and nothing here nests transactions.
            let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
            let value = op(&tx)?;
            tx.commit()?;
            Ok(value)
        };
        run().map_err(|e| e.at(&self.path))
    }

    // -- registrations ------------------------------------------------------

    /// Records a registration, or replaces every field of an existing one of
    /// the same name (its choices and known items stay). `true` = created.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn register(&self, registration: &Registration) -> Result<bool, StoreError> {
        self.write(|c| ops::register(c, registration))
    }

    /// Removes a registration with its choices and known items; its log
    /// entries and session history stay. `false` = there was none.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn unregister(&self, name: &str) -> Result<bool, StoreError> {
        self.write(|c| ops::unregister(c, name))
    }

    /// The registration named `name`.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn registration(&self, name: &str) -> Result<Option<Registration>, StoreError> {
        self.read(|c| ops::registration(c, name))
    }

    /// Every registration, sorted by name.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn registrations(&self) -> Result<Vec<Registration>, StoreError> {
        self.read(ops::registrations)
    }

    // -- choices and items --------------------------------------------------

    /// Stores the user's choice for `item` of `handler` in sessions started by
    /// `event`. Fails with [`StoreError::UnknownHandler`] for an unregistered handler.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn set_choice(
        &self,
        handler: &str,
        event: SyncEvent,
        item: &str,
        checked: bool,
    ) -> Result<(), StoreError> {
        self.write(|c| ops::set_choice(c, handler, event, item, checked))
    }

    /// Forgets the user's choice, so the handler's default applies again.
    /// `false` = there was none.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn clear_choice(
        &self,
        handler: &str,
        event: SyncEvent,
        item: &str,
    ) -> Result<bool, StoreError> {
        self.write(|c| ops::clear_choice(c, handler, event, item))
    }

    /// The user's choices for `handler`'s items in sessions started by `event`:
    /// item id → checked. Items without an entry take the handler's default.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn choices(
        &self,
        handler: &str,
        event: SyncEvent,
    ) -> Result<HashMap<String, bool>, StoreError> {
        self.read(|c| ops::choices(c, handler, event))
    }

    /// Records what `handler` enumerated: each listed item becomes (or stays) a
    /// known item with its current name. When the enumeration is `complete`,
    /// the choices and known items of ids it does not list are forgotten; when
    /// not (`S_SYNCMGR_MISSINGITEMS`) they are kept, except for items last
    /// flagged `temporary`. Fails with [`StoreError::UnknownHandler`] for an
    /// unregistered handler.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn apply_enumeration(
        &self,
        handler: &str,
        enumeration: &ItemEnumeration,
    ) -> Result<(), StoreError> {
        self.write(|c| ops::apply_enumeration(c, handler, enumeration))
    }

    /// The items the manager has seen `handler` enumerate, sorted by id.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn known_items(&self, handler: &str) -> Result<Vec<KnownItem>, StoreError> {
        self.read(|c| ops::known_items(c, handler))
    }

    /// Records that `item` last succeeded at `time`. `false` = not recorded,
    /// because `handler` is not registered (a session may outlive `unregister`).
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn set_last_update(
        &self,
        handler: &str,
        item: &str,
        time: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write(|c| ops::set_last_update(c, handler, item, time))
    }

    // -- results log --------------------------------------------------------

    /// Records a results-log entry; returns its id (ids are never reused).
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn append_log(&self, entry: &NewLogEntry) -> Result<i64, StoreError> {
        self.write(|c| ops::append_log(c, entry))
    }

    /// `DeleteLogError`: removes the entries `handler` logged in `session` with
    /// this error id, or all of them that have an error id when `error_id` is
    /// `None`. Returns how many went.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn delete_log_for(
        &self,
        session: &str,
        handler: &str,
        error_id: Option<&str>,
    ) -> Result<u64, StoreError> {
        self.write(|c| ops::delete_log_for(c, session, handler, error_id))
    }

    /// Removes one entry (`syncmgr log delete`). `false` = there was none.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn delete_log(&self, id: i64) -> Result<bool, StoreError> {
        self.write(|c| ops::delete_log(c, id))
    }

    /// One entry by id.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn log_entry(&self, id: i64) -> Result<Option<LogEntry>, StoreError> {
        self.read(|c| ops::log_entry(c, id))
    }

    /// The entries `filter` selects, newest last.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn log(&self, filter: &LogFilter) -> Result<Vec<LogEntry>, StoreError> {
        self.read(|c| ops::log(c, filter))
    }

    // -- conflicts ----------------------------------------------------------

    /// Stores a conflict (one reported again keeps its id); returns its id.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn record_conflict(&self, conflict: &NewConflict) -> Result<i64, StoreError> {
        self.write(|c| ops::record_conflict(c, conflict))
    }

    /// Drops a conflict. `false` = there was none.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn remove_conflict(
        &self,
        handler: &str,
        item: &str,
        conflict_id: &str,
    ) -> Result<bool, StoreError> {
        self.write(|c| ops::remove_conflict(c, handler, item, conflict_id))
    }

    /// Notes why a decision on a conflict was not applied. `false` = there
    /// is no such conflict.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn refuse_conflict(
        &self,
        handler: &str,
        item: &str,
        conflict_id: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.write(|c| ops::refuse_conflict(c, handler, item, conflict_id, reason))
    }

    /// One open conflict by id.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn conflict(&self, id: i64) -> Result<Option<ConflictRecord>, StoreError> {
        self.read(|c| ops::conflict(c, id))
    }

    /// The open conflicts (of one handler), oldest first.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn conflicts(&self, handler: Option<&str>) -> Result<Vec<ConflictRecord>, StoreError> {
        self.read(|c| ops::conflicts(c, handler))
    }

    // -- sessions -----------------------------------------------------------

    /// Records a session, normally a running one ([`SessionRecord::running`]).
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn begin_session(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.write(|c| ops::begin_session(c, record))
    }

    /// Records how a session ended, with every prepared item's final status,
    /// and sets the last update of the items that `succeeded` to `finished`.
    /// Fails with [`StoreError::UnknownSession`] if it was never begun.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn finish_session(
        &self,
        id: &str,
        outcome: SessionOutcome,
        counts: StatusCounts,
        finished: Timestamp,
        items: &[ItemResult],
    ) -> Result<(), StoreError> {
        self.write(|c| ops::finish_session(c, id, outcome, counts, finished, items))
    }

    /// One session by id.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.read(|c| ops::session(c, id))
    }

    /// The last `limit` sessions (all with `None`), newest last.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn sessions(&self, limit: Option<usize>) -> Result<Vec<SessionRecord>, StoreError> {
        self.read(|c| ops::sessions(c, limit))
    }

    /// Adds a schedule; `false` when one of that name exists (nothing
    /// changed).
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn add_schedule(&self, schedule: &ScheduleRecord) -> Result<bool, StoreError> {
        self.write(|c| ops::add_schedule(c, schedule))
    }

    /// Removes a schedule; `false` when there was none.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn remove_schedule(&self, name: &str) -> Result<bool, StoreError> {
        self.write(|c| ops::remove_schedule(c, name))
    }

    /// Every schedule, by name.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.read(ops::schedules)
    }

    /// Records that schedule `name` ran at `at`; `false` when it is gone.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn set_schedule_run(&self, name: &str, at: Timestamp) -> Result<bool, StoreError> {
        self.write(|c| ops::set_schedule_run(c, name, at))
    }

    /// Removes what `keep` leaves out (finished sessions with their items'
    /// results, information entries of the results log); returns how many
    /// sessions and entries went.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn prune(&self, keep: &Retention) -> Result<(usize, usize), StoreError> {
        self.write(|c| ops::prune(c, keep))
    }

    /// Each handler's newest finished session (one that prepared an item
    /// of it), by handler name.
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn last_sessions(&self) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        self.read(ops::last_sessions)
    }

    /// The final status of every item prepared in session `id`, in preparation
    /// order (empty while it runs).
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn session_items(&self, id: &str) -> Result<Vec<ItemResult>, StoreError> {
        self.read(|c| ops::session_items(c, id))
    }

    /// Ends, as `interrupted` and finished now, every session still running
    /// whose manager process `is_alive` says is gone; returns their ids, oldest
    /// first. Sessions of live managers are left alone. The store knows no
    /// processes, hence the callback (a pid may have been reused; the caller
    /// may check more than existence).
    #[tracing::instrument(level = "trace", skip_all, err(level = "debug"))]
    pub fn recover_interrupted(
        &self,
        is_alive: impl Fn(u32) -> bool,
    ) -> Result<Vec<String>, StoreError> {
        let now = chrono::Utc::now();
        self.write(|c| ops::recover_interrupted(c, &is_alive, now))
    }
}

/// Checks that the database is syncmgr's (or empty) and not newer than this
/// build; returns its schema version.
fn check_identity(conn: &Connection, path: &Path) -> Result<i64, OpError> {
    let not_ours = |reason: String| {
        OpError::Store(StoreError::NotADatabase {
            path: path.to_owned(),
            reason,
            source: None,
        })
    };
    // One read transaction for the three reads: another process creating the
    // database meanwhile must be seen as all done or not started, never half
    // (which would look like another program's database).
    let snapshot = conn.unchecked_transaction()?;
    // The first read of the file: SQLite says SQLITE_NOTADB here for garbage.
    let application_id: i64 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let objects: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    snapshot.finish()?;
    if application_id == i64::from(APPLICATION_ID) {
        if version > LATEST_VERSION as i64 {
            return Err(OpError::Store(StoreError::TooNew {
                path: path.to_owned(),
                found: version,
                supported: LATEST_VERSION,
            }));
        }
        if version < 0 {
            return Err(not_ours(format!("its schema version {version} is invalid")));
        }
        return Ok(version);
    }
    if application_id != 0 {
        return Err(not_ours(format!(
            "its application id is {application_id:#x}, it belongs to another program"
        )));
    }
    if version != 0 || objects != 0 {
        return Err(not_ours(
            "it is an SQLite database of another program".to_owned(),
        ));
    }
    // An empty file, or one SQLite just created: ours to fill.
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_database_is_marked_and_current() {
        let store = Store::open_in_memory().unwrap();
        let id: i64 = store
            .conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap();
        assert_eq!(id, i64::from(APPLICATION_ID));
        assert_eq!(
            check_identity(&store.conn, store.path()).unwrap(),
            LATEST_VERSION as i64
        );
    }
}
