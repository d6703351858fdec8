//! The syncmgr store: one SQLite database (WAL mode) holding the handler
//! registrations, the user's per-event item choices, the items seen and when
//! each last succeeded, the results log, the session history, the schedules
//! and the open conflicts.
//!
//! - [`Store`] is the database through one connection, with a synchronous
//!   method per operation; the CLI uses it directly.
//! - [`StoreWriter`] moves a [`Store`] onto a thread of its own for async code
//!   (the manager): writes are group-committed and each caller is answered
//!   only after the commit. It implements [`syncmgr_core::Journal`].
//! - The private `schema` module holds the tables and migrations; its
//!   module documentation describes the schema.
//!
//! **Architecture invariant:** bad database content never panics. A file that
//! is not SQLite, belongs to another program, was written by a newer syncmgr,
//! or holds values that do not decode gives a [`StoreError`] naming the file.
//!
//! Times are stored as integer Unix milliseconds (so sub-millisecond precision
//! is dropped) and returned as `chrono::DateTime<Utc>`.

mod error;
mod ops;
mod schema;
mod store;
mod types;
mod writer;

pub use error::StoreError;
pub use store::Store;
pub use types::{
    ConflictRecord, HandlerKind, KnownItem, LogFilter, Registration, Retention, ScheduleRecord,
    ScheduleWhen, SessionRecord,
};
pub use writer::StoreWriter;

/// The schema version this build of the store writes.
pub const SCHEMA_VERSION: usize = schema::LATEST_VERSION;
