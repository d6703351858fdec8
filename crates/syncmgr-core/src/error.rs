//! Every error type of the core, in one place.

use thiserror::Error;

/// A string did not name a value of one of the model's enumerations.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("unknown {what} {value:?} (expected one of: {expected})")]
pub struct ParseEnumError {
    what: &'static str,
    value: String,
    expected: String,
}

impl ParseEnumError {
    pub(crate) fn new(what: &'static str, value: &str, expected: &[&str]) -> Self {
        ParseEnumError {
            what,
            value: value.to_owned(),
            expected: expected.join(", "),
        }
    }
}

/// Why a handler could not do what the manager asked.
///
/// Implementations of [`crate::Handler`] return it; the engine turns it into
/// item statuses and log entries.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandlerError {
    /// The handler answered with an error (a JSON-RPC error response, or an
    /// in-process handler's own failure).
    #[error("{0}")]
    Failed(String),
    /// The handler's process ended before it answered.
    #[error("handler process exited ({0})")]
    Exited(String),
    /// The handler broke the protocol badly enough that it cannot go on.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The handler could not be started.
    #[error("could not start handler: {0}")]
    Spawn(String),
}

/// Why the manager refused a call a handler made on its callback.
///
/// Each refusal is also written to the results log, naming the handler.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallbackError {
    /// The item is not one of the handler's enumerated items.
    #[error("unknown item {0:?}")]
    UnknownItem(String),
    /// The item was enumerated but not prepared in this session.
    #[error("item {0:?} is not prepared in this session")]
    ItemNotPrepared(String),
    /// `value` is greater than `max`.
    #[error("progress value {value} is greater than max {max} for item {item:?}")]
    ValueOverMax {
        /// The item.
        item: String,
        /// The value after the update.
        value: u64,
        /// The max after the update.
        max: u64,
    },
    /// A text was longer than [`crate::model::MAX_TEXT_LEN`].
    #[error("text of {0} bytes is over the {limit} byte limit", limit = crate::model::MAX_TEXT_LEN)]
    TextTooLong(usize),
    /// A change after a terminal status (only a change to `failed` may follow).
    #[error("item {item:?} is already {from}; {}", match to {
        Some(to) => format!("it cannot become {to}"),
        None => "only a change to failed is allowed".to_owned(),
    })]
    AfterTerminal {
        /// The item.
        item: String,
        /// Its terminal status.
        from: crate::ItemStatus,
        /// The refused status, or `None` for a change of text or amounts.
        to: Option<crate::ItemStatus>,
    },
    /// The call came outside the window where it is allowed (from
    /// `prepareForSync` until the `synchronize` response).
    #[error("{0} is only allowed between prepareForSync and the synchronize response")]
    OutsideWindow(&'static str),
    /// A bad argument not covered above (an id too long, a connection the
    /// handler did not declare).
    #[error("{0}")]
    Invalid(String),
    /// The journal could not record a log entry.
    #[error("could not record the log entry: {0}")]
    Journal(String),
    /// The handler used up its share of the results log for this session.
    #[error("the handler logged more than {0} entries in this session")]
    OverBudget(u32),
}

/// The journal (the results log's storage) failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("journal: {0}")]
pub struct JournalError(pub String);
