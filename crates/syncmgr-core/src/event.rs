//! What a session tells its consumers (display, JSON output, store writer).

use crate::model::{
    HandlerInfo, ItemEnumeration, ItemResult, ItemStatus, LogEntry, NewConflict, SessionOutcome,
    StatusCounts, SyncEvent,
};

/// The latest state of one item, as the coalesced view sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemSnapshot {
    /// Registration name of the handler.
    pub handler: String,
    /// Item id.
    pub item: String,
    /// Item display name.
    pub name: String,
    /// Current status.
    pub status: ItemStatus,
    /// Current status text (empty = none yet).
    pub text: String,
    /// Progress value, once reported.
    pub value: Option<u64>,
    /// Progress maximum, once reported.
    pub max: Option<u64>,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// Session id.
    pub session: String,
    /// Overall outcome.
    pub outcome: SessionOutcome,
    /// Items per terminal status.
    pub counts: StatusCounts,
    /// Every prepared item with its terminal status, in preparation order.
    pub items: Vec<ItemResult>,
    /// Handlers that failed as a whole (could not start, broke down before
    /// their items were prepared).
    pub failed_handlers: Vec<String>,
}

/// One event of a session, in the order the consumers see them.
///
/// Exactly one [`SessionEvent::Started`] comes first and exactly one
/// [`SessionEvent::Finished`] last. Item changes are coalesced: a consumer sees
/// the latest state of an item, not every update, but always its terminal one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The session began.
    Started {
        /// Session id.
        session: String,
        /// What started it.
        trigger: SyncEvent,
        /// Why, for people (`schedule nightly`, `requested by CLI`).
        reason: String,
    },
    /// A handler answered `getHandlerInfo` and `enumItems`.
    ItemsEnumerated {
        /// Registration name.
        handler: String,
        /// Its info.
        info: HandlerInfo,
        /// Its items.
        enumeration: ItemEnumeration,
    },
    /// An item's state changed.
    ItemChanged(ItemSnapshot),
    /// A results-log entry was recorded.
    Log(LogEntry),
    /// A handler withdrew log entries (`deleteLogError`).
    LogDeleted {
        /// Registration name.
        handler: String,
        /// The error id, or `None` for all of this handler's in the session.
        error_id: Option<String>,
    },
    /// A handler reported a conflict and it is stored.
    Conflict {
        /// Its id in the conflict store (`syncmgr conflicts show ID`).
        id: i64,
        /// The conflict.
        conflict: NewConflict,
    },
    /// A conflict left the store: the handler resolved it by itself
    /// (`conflictResolved`), or applied the user's decision.
    ConflictResolved {
        /// Registration name.
        handler: String,
        /// The item.
        item: String,
        /// The handler's id for the conflict.
        conflict_id: String,
    },
    /// The handler could not apply the user's decision on a conflict; it
    /// stays open.
    ConflictRefused {
        /// Registration name.
        handler: String,
        /// The item.
        item: String,
        /// The handler's id for the conflict.
        conflict_id: String,
        /// Why, in the handler's words.
        reason: String,
    },
    /// The session is over; nothing follows.
    Finished(SessionSummary),
}
