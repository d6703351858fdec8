//! The syncmgr model and session engine.
//!
//! This crate is the portable form of mobsync.h: the types of the model
//! ([`model`]), the [`Handler`] trait a sync handler implements, the
//! [`HandlerCallback`] it reports through, and the [`Session`] engine that runs
//! many handlers at once and turns everything they do (or fail to do) into item
//! statuses, results-log entries and one stream of [`SessionEvent`]s.
//!
//! **Architecture invariant:** no I/O here. The crate does not know processes,
//! JSON, SQLite or terminals; the results log is written through the
//! [`Journal`] trait and everything else leaves as events.

mod callback;
pub mod duration;
mod error;
mod event;
mod feed;
mod handler;
pub mod model;
mod session;
pub mod state;
pub mod text;

pub use callback::{CancelHook, HandlerCallback};
pub use error::{CallbackError, HandlerError, JournalError, ParseEnumError};
pub use event::{ItemSnapshot, SessionEvent, SessionSummary};
pub use feed::{EventFeed, FeedEvent, Popped};
pub use handler::{Confirm, Handler, Journal, MemoryJournal};
pub use model::{
    Cause, ConflictReport, ConflictResolution, ConflictVersion, HandlerFlags, HandlerInfo,
    InitializeParams, Item, ItemEnumeration, ItemFlags, ItemResult, ItemStatus, Keep, LogEntry,
    LogLevel, LogRequest, MAX_CONFLICT_VERSIONS, NewConflict, NewLogEntry, Participation,
    ProgressReply, ProgressUpdate, PropertiesOutcome, SessionOutcome, ShowErrorAnswer,
    StatusCounts, SyncEvent, Timestamp,
};
pub use session::{
    CancelTarget, HandlerJob, Selection, Session, SessionConfig, SessionControl, query_handler,
};
