//! Every error of the store, in one place.
//!
//! Errors about the database file name its path, so that a message read on its
//! own (in a log, on stderr) says which file is wrong. The SQLite or migration
//! error underneath is attached as the `source`, never pasted into the message.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

/// Why the store could not do what was asked.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file could not be opened or configured (permissions, missing parent
    /// directory, locked past the busy timeout).
    #[error("could not open the database {}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is not an SQLite file, or is the database of another program.
    #[error("{} is not a syncmgr database: {reason}", path.display())]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        reason: String,
        /// What SQLite said, when it was SQLite that refused the file.
        #[source]
        source: Option<rusqlite::Error>,
    },
    /// The database was written by a newer syncmgr; this one must not touch it.
    #[error(
        "the database {} has schema version {found}, newer than version {supported} that this syncmgr knows; use a newer syncmgr",
        path.display()
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The latest version this build knows.
        supported: usize,
    },
    /// A schema migration failed; the database was left at its previous version.
    #[error("could not migrate the database {} to the current schema", path.display())]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: rusqlite_migration::Error,
    },
    /// A stored value does not decode (an unknown enumeration name, malformed
    /// JSON, an impossible time): the file was damaged or edited by hand.
    #[error("the database {} holds data syncmgr cannot read (damaged or edited by hand?)", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// Which value, and why.
        #[source]
        source: rusqlite::Error,
    },
    /// Any other SQLite failure (disk full, I/O error, lock timeout).
    #[error("database error on {}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The shared transaction of a group commit failed, so this write, although
    /// it was fine on its own, was not recorded.
    #[error("could not commit to the database {}", path.display())]
    Commit {
        /// The database file.
        path: PathBuf,
        /// What SQLite said (shared by every write of the group).
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// The operation names a handler that is not registered.
    #[error("no handler is registered as {name:?}")]
    UnknownHandler {
        /// The name asked for.
        name: String,
    },
    /// The operation names a session that was never begun.
    #[error("no session {id:?} in the store")]
    UnknownSession {
        /// The id asked for.
        id: String,
    },
    /// The caller passed something the store refuses to record.
    #[error("{0}")]
    Invalid(String),
    /// The writer thread has stopped (after [`close`](crate::StoreWriter::close)),
    /// so the write was not done.
    #[error("the store writer has stopped")]
    WriterClosed,
    /// The writer thread could not be started.
    #[error("could not start the store writer thread")]
    Spawn(#[source] std::io::Error),
}

impl StoreError {
    /// Classifies an SQLite error met while working on `path`: damage and
    /// undecodable values become [`StoreError::Corrupt`] or
    /// [`StoreError::NotADatabase`], the rest [`StoreError::Sqlite`].
    pub(crate) fn from_sqlite(path: &Path, source: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode;
        let path = path.to_owned();
        match source.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => {
                return StoreError::NotADatabase {
                    path,
                    reason: "it is not an SQLite database file".to_owned(),
                    source: Some(source),
                };
            }
            Some(ErrorCode::DatabaseCorrupt) => return StoreError::Corrupt { path, source },
            _ => {}
        }
        match source {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt { path, source },
            source => StoreError::Sqlite { path, source },
        }
    }

    /// The message with every cause after it, `: `-separated, for the places
    /// that keep only a string (a [`syncmgr_core::JournalError`]).
    pub fn chain_to_string(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            text.push_str(": ");
            text.push_str(&e.to_string());
            cause = e.source();
        }
        text
    }
}

/// What the internal operations fail with; [`StoreError`] once the path is
/// known (the operations are shared by [`crate::Store`] and the writer thread,
/// and only their callers know the file).
#[derive(Debug)]
pub(crate) enum OpError {
    Sqlite(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for OpError {
    fn from(e: rusqlite::Error) -> Self {
        OpError::Sqlite(e)
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Store(e)
    }
}

impl OpError {
    pub(crate) fn at(self, path: &Path) -> StoreError {
        match self {
            OpError::Sqlite(e) => StoreError::from_sqlite(path, e),
            OpError::Store(e) => e,
        }
    }
}
