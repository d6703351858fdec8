//! Write syncmgr sync handlers in Rust.
//!
//! A handler is a program the manager starts for each session and talks to
//! over stdin/stdout (newline-delimited JSON-RPC 2.0, `docs/protocol.md`).
//! With this crate a handler is a type implementing [`SyncHandler`] and one
//! call to [`serve`]; the SDK does the framing, the pipelining of requests
//! in both directions, the cancellation plumbing, the statuses around each
//! item, and the shutdown.
//!
//! ```no_run
//! use std::time::Duration;
//! use syncmgr_sdk::{
//!     HandlerError, HandlerInfo, InitContext, Item, ItemOutcome, Progress, SyncHandler, Update,
//! };
//!
//! struct Notes;
//!
//! impl SyncHandler for Notes {
//!     fn info(&self) -> HandlerInfo {
//!         HandlerInfo::new("Notes")
//!     }
//!
//!     fn items(&mut self, _ctx: &InitContext) -> Result<Vec<Item>, HandlerError> {
//!         Ok(vec![Item::new("work", "Work notes"), Item::new("home", "Home notes")])
//!     }
//!
//!     fn sync_item(&self, item: &str, progress: &Progress) -> Result<ItemOutcome, HandlerError> {
//!         for step in 1..=10 {
//!             // The real work goes here; waiting stands in for it and wakes on a cancel.
//!             if progress.wait_cancelled(Duration::from_millis(100)) {
//!                 return Ok(ItemOutcome::stopped());
//!             }
//!             let text = format!("{item}: {step} of 10");
//!             if progress.report(Update::progress(step, 10).text(text)).is_cancel() {
//!                 return Ok(ItemOutcome::stopped());
//!             }
//!         }
//!         Ok(ItemOutcome::succeeded())
//!     }
//! }
//!
//! fn main() -> Result<(), syncmgr_sdk::Error> {
//!     syncmgr_sdk::serve(Notes)
//! }
//! ```
//!
//! Register the built binary with `syncmgr register notes -- /path/to/notes`
//! and run `syncmgr sync`. The examples `minimal` and `git_mirror` of this
//! crate are complete handlers (`cargo run -p syncmgr-sdk --example minimal`
//! speaks the protocol on the terminal).
//!
//! # The lifecycle, in trait terms
//!
//! | manager sends | the SDK calls | notes |
//! |---|---|---|
//! | `initialize` | [`participate`](SyncHandler::participate) | default: take part |
//! | `getHandlerInfo` | [`info`](SyncHandler::info) | |
//! | `enumItems` | [`items`](SyncHandler::items), [`items_complete`](SyncHandler::items_complete) | |
//! | `showProperties` | [`show_properties`](SyncHandler::show_properties) | default: `ok` |
//! | `prepareForSync` | [`prepare`](SyncHandler::prepare) | an `Err` releases the handler |
//! | `synchronize` | [`sync_item`](SyncHandler::sync_item) per item | on up to [`max_parallel`](SyncHandler::max_parallel) threads |
//! | `setItemStatus` | nothing: applied to the [`Progress`] of the item | |
//! | `showError` | [`show_error`](SyncHandler::show_error) | returned ids are synced again |
//! | `shutdown`, end of input | nothing: `serve` returns | |
//!
//! # Cancellation
//!
//! The manager stops an item two ways: the answer to a report
//! ([`Reply::CancelItem`] or [`Reply::CancelAll`]) and a `setItemStatus`
//! notification, which can arrive while the handler is not reporting at all.
//! The SDK folds both into the item's cancel state: [`Progress::report`]
//! answers it, [`Progress::is_cancelled`] reads it without sending anything,
//! [`Progress::wait_cancelled`] blocks until it turns (use it instead of
//! `sleep`, or to watch a child process). A cancelled `sync_item` returns
//! [`ItemOutcome::stopped`], or any error: an error from a cancelled item is
//! reported `stopped`, not `failed`. Items that had not started are reported
//! `skipped` without calling `sync_item`.
//!
//! # Reporting often
//!
//! [`Progress::report`] is a round trip: it waits for the manager's answer
//! (tens of microseconds). A handler that reports per block of a copy or per
//! line of a child's output uses [`Progress::post`] instead: it sends the
//! report and returns at once with the cancel state known so far; the answer
//! is applied when it arrives, and up to [`POST_WINDOW`] reports are in
//! flight. Either call may be made from any thread; a thread waiting for an
//! answer reads it itself, so no thread switch is paid per report.
//!
//! # Output
//!
//! Never write to stdout: it is the protocol. [`serve`] makes that safe by
//! pointing descriptor 1 at stderr once it owns the channel, so `println!`
//! and child processes end up in stderr, which the manager keeps as
//! information entries of the session's log.

mod cancel;
mod conn;
mod error;
mod model;
mod progress;
mod serve;
mod stdio;
mod util;

pub use conn::POST_WINDOW;
pub use error::{Error, HandlerError};
pub use model::{HandlerInfo, InitContext, Item, ItemOutcome};
pub use progress::{LogEntry, Manager, Progress, Reply, Update};
pub use serve::{EXIT_GRACE, serve, serve_io};
/// The model's enumerations and flags, as the manager spells them.
pub use syncmgr_core::{
    ConflictReport, ConflictResolution, ConflictVersion, HandlerFlags, ItemFlags, ItemStatus, Keep,
    LogLevel, PropertiesOutcome, SyncEvent,
};

/// A sync handler: what the manager asks of it, in the order it asks.
///
/// Only [`info`](Self::info), [`items`](Self::items) and
/// [`sync_item`](Self::sync_item) are required. The `&mut self` methods run
/// on the main thread between syncs; `sync_item` takes `&self` because items
/// may run on several threads at once (see [`max_parallel`](Self::max_parallel)),
/// hence the `Sync` bound: keep state that changes during a sync behind a
/// `Mutex` or an atomic.
pub trait SyncHandler: Sync {
    /// `initialize`: whether to take part in this session (`false` =
    /// `S_FALSE`, the manager shuts the handler down). Default: `true`.
    fn participate(&mut self, ctx: &InitContext) -> bool {
        let _ = ctx;
        true
    }

    /// `getHandlerInfo`: the display name and flags.
    fn info(&self) -> HandlerInfo;

    /// `enumItems`: the items, in display order. Ids are 1 to 64 characters
    /// and must be stable across sessions. An `Err` fails the handler's part
    /// of the session (its message reaches the results log).
    fn items(&mut self, ctx: &InitContext) -> Result<Vec<Item>, HandlerError>;

    /// Whether [`items`](Self::items) listed every item. `false` =
    /// `S_SYNCMGR_MISSINGITEMS` (some could not be listed this time): the
    /// manager keeps the stored choices of the ids not listed. Default: `true`.
    fn items_complete(&self) -> bool {
        true
    }

    /// `showProperties` for an item, or the handler itself with `None`.
    /// Default: [`PropertiesOutcome::Ok`].
    fn show_properties(&mut self, item: Option<&str>) -> PropertiesOutcome {
        let _ = item;
        PropertiesOutcome::Ok
    }

    /// `prepareForSync`: the chosen items (ids from `items`) will be synced
    /// next. Open connections, check credentials here; `manager` can log,
    /// establish a connection or ask for a dialog. An `Err` releases the
    /// handler without syncing: its items fail. Default: `Ok(())`.
    fn prepare(&mut self, items: &[String], manager: &Manager) -> Result<(), HandlerError> {
        let _ = (items, manager);
        Ok(())
    }

    /// Syncs one item. The SDK has reported it `updating`; report progress
    /// through `progress` and return how it ended, which the SDK reports as
    /// its final status:
    ///
    /// - `Ok(ItemOutcome::succeeded())` (or `failed`/`stopped`/`skipped`);
    /// - `Err(e)`: `failed`, and an error entry with `e`'s message (and its
    ///   error id, actionable if [`HandlerError::actionable`]) in the results
    ///   log; but `stopped` and no entry when the item was cancelled;
    /// - a panic: `failed`, with the panic message logged.
    ///
    /// Honour cancels (see the crate docs): check [`Progress::report`]'s
    /// answer or [`Progress::is_cancelled`] between steps of work.
    fn sync_item(&self, item: &str, progress: &Progress) -> Result<ItemOutcome, HandlerError>;

    /// `showError`: the user acted on a log entry with this error id (see
    /// [`HandlerError::actionable`]). Show what is needed, fix what can be
    /// fixed, and return the items to sync again (in this same process:
    /// `prepare` and `sync_item` follow for them). Default: none.
    fn show_error(&mut self, error_id: &str) -> Vec<String> {
        let _ = error_id;
        Vec::new()
    }

    /// `resolveConflict`: the user decided on a conflict this handler
    /// reported ([`Manager::report_conflict`]). Apply it and return `Ok`
    /// (the manager drops the conflict and syncs the item next); return an
    /// error saying why not (the conflict stays, with that reason), for
    /// instance when the versions changed since they were reported.
    /// Default: refused.
    fn resolve_conflict(&mut self, resolution: &ConflictResolution) -> Result<(), HandlerError> {
        let _ = resolution;
        Err(HandlerError::new("this handler does not resolve conflicts"))
    }

    /// How many items may sync at once, each on its own thread. Default: 1
    /// (one after the other, on the main thread).
    fn max_parallel(&self) -> usize {
        1
    }
}
