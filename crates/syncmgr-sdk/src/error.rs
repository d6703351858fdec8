//! The SDK's two error types: [`Error`], what can go wrong talking to the
//! manager, and [`HandlerError`], what a handler's own code returns.

use std::fmt;

use thiserror::Error;

/// What went wrong talking to the manager: the result of [`serve`](crate::serve)
/// and of the calls a handler makes to the manager
/// ([`Progress::try_report`](crate::Progress::try_report),
/// [`Manager::log_entry`](crate::Manager::log_entry), ...).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the channel failed.
    #[error("i/o error on the protocol channel: {0}")]
    Io(#[from] std::io::Error),
    /// The manager closed the channel (`shutdown` or end of input): no answer
    /// can come any more. The work in progress should stop.
    #[error("the manager closed the channel")]
    Closed,
    /// The manager refused the request with a JSON-RPC error (see the error
    /// codes in `syncmgr_protocol::wire::error_code`, e.g. `-32005` for a
    /// `value` greater than `max`).
    #[error("the manager refused {method}: {message} (code {code})")]
    Refused {
        /// The method that was refused.
        method: &'static str,
        /// The JSON-RPC error code.
        code: i64,
        /// The manager's message.
        message: String,
    },
    /// The manager's answer could not be understood.
    #[error("unexpected answer to {method}: {message}")]
    Protocol {
        /// The method that was answered.
        method: &'static str,
        /// What was wrong with the answer.
        message: String,
    },
}

/// What a handler's code returns when something fails: a message for the
/// results log, optionally with an error id and the *actionable* flag (the
/// user can act on the entry with `syncmgr log show`, which reaches
/// [`SyncHandler::show_error`](crate::SyncHandler::show_error) with that id).
///
/// Any `std::error::Error` converts into it, so `?` works on I/O errors and
/// the like:
///
/// ```
/// use syncmgr_sdk::HandlerError;
///
/// fn read_config(path: &str) -> Result<String, HandlerError> {
///     let text = std::fs::read_to_string(path)?; // io::Error -> HandlerError
///     if text.is_empty() {
///         return Err(HandlerError::new("the configuration is empty")
///             .actionable(format!("config-{path}")));
///     }
///     Ok(text)
/// }
/// # assert!(read_config("/nonexistent").is_err());
/// ```
///
/// Returned from [`SyncHandler::sync_item`](crate::SyncHandler::sync_item)
/// it ends the item `failed` and logs an error entry with this message, id
/// and flag; but when the item was cancelled (or the error is
/// [`HandlerError::cancelled`]) it ends `stopped` and nothing is logged: an
/// error caused by stopping the work is not a failure.
///
/// It deliberately does not implement `std::error::Error` itself (that is what
/// lets every error type convert into it).
pub struct HandlerError {
    message: String,
    error_id: Option<String>,
    actionable: bool,
    cancelled: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl HandlerError {
    /// An error with this message (at most 4 KiB reach the manager).
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            error_id: None,
            actionable: false,
            cancelled: false,
            source: None,
        }
    }

    /// The error of work that stopped because it was cancelled: the item ends
    /// `stopped`, nothing is logged. [`Progress::check`](crate::Progress::check)
    /// returns it.
    pub fn cancelled() -> Self {
        HandlerError {
            cancelled: true,
            ..HandlerError::new("stopped")
        }
    }

    /// Gives the log entry this error id (1 to 64 characters, stable across
    /// sessions, e.g. `fetch-<item>`) without making it actionable.
    #[must_use]
    pub fn with_id(mut self, error_id: impl Into<String>) -> Self {
        self.error_id = Some(error_id.into());
        self
    }

    /// Makes the log entry actionable under this error id: `syncmgr log show`
    /// on it calls [`SyncHandler::show_error`](crate::SyncHandler::show_error)
    /// with `error_id`, which may ask for a retry.
    #[must_use]
    pub fn actionable(mut self, error_id: impl Into<String>) -> Self {
        self.error_id = Some(error_id.into());
        self.actionable = true;
        self
    }

    /// Prefixes the message with some context (`"{context}: {message}"`).
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error id of the log entry, if one was given.
    pub fn error_id(&self) -> Option<&str> {
        self.error_id.as_deref()
    }

    /// Whether the log entry is actionable.
    pub fn is_actionable(&self) -> bool {
        self.actionable
    }

    /// Whether this is the error of a cancelled piece of work.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// The error this one was converted from, if any.
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError {
            message: error.to_string(),
            error_id: None,
            actionable: false,
            cancelled: false,
            source: Some(Box::new(error)),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("message", &self.message)
            .field("error_id", &self.error_id)
            .field("actionable", &self.actionable)
            .field("cancelled", &self.cancelled)
            .field("source", &self.source)
            .finish()
    }
}
