//! The manager's errors, typed so that a host decides on them (the command
//! line turns [`ManagerError::Usage`] into exit code 2, the rest into 1).

use std::io;

use syncmgr_store::StoreError;

/// What went wrong in the manager.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// Bad input: an argument, a name, a stored configuration, a home that
    /// is not private. The text says what and how to fix it.
    #[error("{0}")]
    Usage(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file, socket or lock could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A registration's handler cannot be built (a stored configuration
    /// that does not decode, a built-in kind this version lacks).
    #[error("{0}")]
    Handler(String),
    /// The request cannot be done now (the text says when it can).
    #[error("{0}")]
    NotNow(String),
    /// No daemon runs for this home (for commands that need one).
    #[error(
        "no daemon runs for this home; start one with `syncmgr daemon` (or `syncmgr daemon --install` to run it at every login)"
    )]
    NoDaemon,
    /// Another daemon runs for this home.
    #[error("a daemon already runs for this home (pid {pid})")]
    DaemonRunning {
        /// Its process id (0 when it could not be read).
        pid: u32,
    },
    /// The daemon answered something this version does not understand, or
    /// refused a request.
    #[error("the daemon: {0}")]
    Daemon(String),
}

impl ManagerError {
    /// A usage error.
    pub fn usage(text: impl Into<String>) -> Self {
        ManagerError::Usage(text.into())
    }

    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        ManagerError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The manager's result.
pub type Result<T, E = ManagerError> = std::result::Result<T, E>;
