//! The mobsync.h model in Rust types: handler info, items, statuses, events,
//! progress updates and replies, log entries.
//!
//! These types know nothing of JSON or SQLite. Each enumeration has a stable
//! string form (`as_str` / `FromStr`) that the protocol, the store and the command
//! line share, so the spelling lives in exactly one place.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::error::ParseEnumError;

/// A point in time as the manager records it (UTC).
pub type Timestamp = DateTime<Utc>;

/// Longest item or error id a handler may choose, in characters (Sync
/// Center's `MAX_SYNCMGR_ID`).
pub const MAX_ID_LEN: usize = 64;
/// Longest status or log text a handler may send, in bytes.
pub const MAX_TEXT_LEN: usize = 4096;

/// Declares a string-backed enum with one canonical spelling per variant.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The canonical string form used on the wire, in the store and on the
            /// command line.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text ),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(ParseEnumError::new($what, s, &[$($text),+])),
                }
            }
        }
    };
}

string_enum! {
    /// `SYNCMGRSTATUS`: where an item stands.
    pub enum ItemStatus ("status") {
        /// `SYNCMGRSTATUS_STOPPED`: the item's sync was stopped (cancelled).
        Stopped = "stopped",
        /// `SYNCMGRSTATUS_SKIPPED`: the item was skipped before it started.
        Skipped = "skipped",
        /// `SYNCMGRSTATUS_PENDING`: waiting to start.
        Pending = "pending",
        /// `SYNCMGRSTATUS_UPDATING`: in progress.
        Updating = "updating",
        /// `SYNCMGRSTATUS_UPDATING_INDETERMINATE`: in progress, amount unknown.
        UpdatingIndeterminate = "updatingIndeterminate",
        /// `SYNCMGRSTATUS_SUCCEEDED`.
        Succeeded = "succeeded",
        /// `SYNCMGRSTATUS_FAILED`.
        Failed = "failed",
        /// `SYNCMGRSTATUS_PAUSED`.
        Paused = "paused",
        /// `SYNCMGRSTATUS_RESUMING`.
        Resuming = "resuming",
        /// `SYNCMGRSTATUS_DELETED`: the item was deleted.
        Deleted = "deleted",
    }
}

impl ItemStatus {
    /// Terminal statuses end an item's part in a session. After one, only
    /// `failed` may follow (Sync Center's rule).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ItemStatus::Succeeded
                | ItemStatus::Failed
                | ItemStatus::Skipped
                | ItemStatus::Stopped
                | ItemStatus::Deleted
        )
    }

    /// Whether this final status counts as a good outcome for the exit code.
    pub fn is_success(self) -> bool {
        matches!(self, ItemStatus::Succeeded | ItemStatus::Skipped)
    }
}

string_enum! {
    /// The event code of `SYNCMGRFLAG`: what started a session.
    pub enum SyncEvent ("event") {
        /// `SYNCMGRFLAG_CONNECT`: a network connection came up (or logon).
        Connect = "connect",
        /// `SYNCMGRFLAG_PENDINGDISCONNECT`: a connection is about to go (or logoff).
        PendingDisconnect = "pendingDisconnect",
        /// `SYNCMGRFLAG_MANUAL`: the user asked.
        Manual = "manual",
        /// `SYNCMGRFLAG_IDLE`: the user is idle.
        Idle = "idle",
        /// `SYNCMGRFLAG_INVOKE`: a program asked (`UpdateItems`); carries a cookie.
        Invoke = "invoke",
        /// `SYNCMGRFLAG_SCHEDULED`: a schedule fired.
        Scheduled = "scheduled",
    }
}

impl SyncEvent {
    /// Events a handler must opt in to at registration
    /// (`SYNCMGRREGISTERFLAG_*`); the others reach every handler.
    pub fn needs_opt_in(self) -> bool {
        matches!(
            self,
            SyncEvent::Connect | SyncEvent::PendingDisconnect | SyncEvent::Idle
        )
    }

    /// Whether a session for this event is interactive by default
    /// (`SYNCMGRFLAG_MAYBOTHERUSER`).
    pub fn may_bother_user_by_default(self) -> bool {
        matches!(self, SyncEvent::Manual | SyncEvent::Invoke)
    }
}

string_enum! {
    /// `SYNCMGRLOGLEVEL`.
    pub enum LogLevel ("log level") {
        /// `SYNCMGRLOGLEVEL_INFORMATION`.
        Information = "information",
        /// `SYNCMGRLOGLEVEL_WARNING`.
        Warning = "warning",
        /// `SYNCMGRLOGLEVEL_ERROR`.
        Error = "error",
    }
}

string_enum! {
    /// The manager's answer to `Progress`.
    pub enum ProgressReply ("progress action") {
        /// `S_OK`: go on.
        Continue = "continue",
        /// `S_SYNCMGR_CANCELITEM`: stop the item named in the call.
        CancelItem = "cancelItem",
        /// `S_SYNCMGR_CANCELALL`: stop every item of this handler.
        CancelAll = "cancelAll",
    }
}

string_enum! {
    /// What a properties dialog did (`ShowPropertiesCompleted`'s result).
    pub enum PropertiesOutcome ("properties outcome") {
        /// `S_OK`.
        Ok = "ok",
        /// `S_SYNCMGR_ITEMDELETED`: the user deleted the item from the dialog.
        ItemDeleted = "itemDeleted",
        /// `S_SYNCMGR_ENUMITEMS`: the item set changed; enumerate again.
        ItemsChanged = "itemsChanged",
    }
}

string_enum! {
    /// Why the manager wrote an entry of its own. Callers that decide on an
    /// entry (the conformance checker, a dashboard's filters) match on this,
    /// never on the text, which is for people and may be reworded.
    #[non_exhaustive]
    pub enum Cause ("cause") {
        /// The handler sent nothing for longer than its silence timeout.
        NotResponding = "notResponding",
        /// The handler did not honour a cancel within the grace period.
        IgnoredCancel = "ignoredCancel",
        /// The handler's process ended (or could not start) while the
        /// manager waited on it.
        ProcessEnded = "processEnded",
        /// A request to the handler got an error instead of an answer.
        CallFailed = "callFailed",
        /// A prepared item got no final status from the handler.
        NoFinalStatus = "noFinalStatus",
        /// A cancelled item's end was never confirmed by the handler.
        CancelNotConfirmed = "cancelNotConfirmed",
        /// The handler broke a rule of the protocol: a refused call, a line
        /// that is not a valid message, an item it does not have.
        BrokenRule = "brokenRule",
        /// The handler did not exit with status 0 after `shutdown` within
        /// the grace period.
        UncleanExit = "uncleanExit",
        /// A line the handler wrote to stderr.
        HandlerOutput = "handlerOutput",
        /// The handler used more than its share of the results log.
        OverBudget = "overBudget",
        /// Something the user should know that is not a fault.
        Notice = "notice",
        /// An in-process handler panicked.
        Panicked = "panicked",
    }
}

/// A handler's answer to `showError`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShowErrorAnswer {
    /// Items to sync again (non-empty = `S_SYNCMGR_RETRYSYNC`).
    pub retry: Vec<String>,
    /// Set when the retry does something the user must agree to first (a
    /// guard that refused to delete files): what it will do, in words. The
    /// manager asks the user; without a yes, nothing is retried.
    pub confirm: Option<String>,
}

impl ShowErrorAnswer {
    /// A plain retry of `items`, nothing to confirm.
    pub fn retry(items: Vec<String>) -> Self {
        ShowErrorAnswer {
            retry: items,
            confirm: None,
        }
    }
}

string_enum! {
    /// How a session ended.
    pub enum SessionOutcome ("session outcome") {
        /// Every item ended `succeeded` or `skipped`, every handler ran, and
        /// the user cancelled nothing.
        Succeeded = "succeeded",
        /// An item ended `failed` or `deleted`, or a handler failed.
        Failed = "failed",
        /// Nothing failed, and a cancel stopped or skipped something (or an
        /// item ended `stopped`).
        Cancelled = "cancelled",
        /// The manager died before the session finished (set at the next start).
        Interrupted = "interrupted",
    }
}

/// `SYNCMGRHANDLERFLAGS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerFlags {
    /// `SYNCMGRHANDLER_HASPROPERTIES`: `showProperties` with no item works.
    pub has_properties: bool,
    /// `SYNCMGRHANDLER_MAYESTABLISHCONNECTION`: may call `establishConnection`.
    pub may_establish_connection: bool,
    /// `SYNCMGRHANDLER_ALWAYSLISTHANDLER`: list the handler even with no items shown.
    pub always_list_handler: bool,
    /// `SYNCMGRHANDLER_HIDDEN`: do not show the handler.
    pub hidden: bool,
}

/// `SYNCMGRHANDLERINFO` (the icon has no portable equivalent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandlerInfo {
    /// `wszHandlerName`: the display name.
    pub name: String,
    /// `SyncMgrHandlerFlags`.
    pub flags: HandlerFlags,
}

/// `SYNCMGRITEMFLAGS`. `SYNCMGRITEM_LASTUPDATETIME` is `Item::last_update.is_some()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItemFlags {
    /// `SYNCMGRITEM_HASPROPERTIES`.
    pub has_properties: bool,
    /// `SYNCMGRITEM_TEMPORARY`: stored choices may be dropped when it disappears.
    pub temporary: bool,
    /// `SYNCMGRITEM_ROAMINGUSER`.
    pub roaming_user: bool,
    /// `SYNCMGRITEM_MAYDELETEITEM`.
    pub may_delete_item: bool,
    /// `SYNCMGRITEM_HIDDEN`: not shown, still synced when selected.
    pub hidden: bool,
}

/// `SYNCMGRITEM`: one thing a handler can sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// `ItemID`: chosen by the handler, stable across sessions.
    pub id: String,
    /// `wszItemName`.
    pub name: String,
    /// `dwItemState`: the handler's default choice.
    pub checked: bool,
    /// `dwFlags`.
    pub flags: ItemFlags,
    /// `ftLastUpdate`, present when `SYNCMGRITEM_LASTUPDATETIME` would be set.
    pub last_update: Option<Timestamp>,
}

/// The answer to `EnumSyncMgrItems`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemEnumeration {
    /// The items, in the handler's order.
    pub items: Vec<Item>,
    /// `false` = `S_SYNCMGR_MISSINGITEMS`: keep stored choices of ids not listed.
    pub complete: bool,
}

/// The arguments of `Initialize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializeParams {
    /// The event code.
    pub event: SyncEvent,
    /// `SYNCMGRFLAG_MAYBOTHERUSER`.
    pub may_bother_user: bool,
    /// `SYNCMGRFLAG_SETTINGS`: only enumerate (and maybe show properties).
    pub settings_only: bool,
    /// The `UpdateItems` cookie, meaningful with [`SyncEvent::Invoke`].
    pub cookie: Option<String>,
}

/// `Initialize`'s answer: `S_OK` or `S_FALSE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Participation {
    /// `S_OK`.
    Participate,
    /// `S_FALSE`: the handler sits this event out.
    Decline,
}

/// `SYNCMGRPROGRESSITEM`: each field optional, as the mask says.
///
/// Borrowed so that a progress call allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressUpdate<'a> {
    /// `SYNCMGRPROGRESSITEM_STATUSTEXT`.
    pub text: Option<&'a str>,
    /// `SYNCMGRPROGRESSITEM_STATUSTYPE`.
    pub status: Option<ItemStatus>,
    /// `SYNCMGRPROGRESSITEM_PROGVALUE`.
    pub value: Option<u64>,
    /// `SYNCMGRPROGRESSITEM_MAXVALUE`.
    pub max: Option<u64>,
}

/// `LogError`'s arguments (`SYNCMGRLOGERRORINFO` folded in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRequest {
    /// `dwErrorLevel`.
    pub level: LogLevel,
    /// `pszErrorText`.
    pub text: String,
    /// `ErrorID` (`SYNCMGRLOGERROR_ERRORID`); the manager assigns one when absent.
    pub error_id: Option<String>,
    /// `ItemID` (`SYNCMGRLOGERROR_ITEMID`).
    pub item: Option<String>,
    /// `SYNCMGRERRORFLAG_ENABLEJUMPTEXT`: the user may act on it (`showError`).
    pub actionable: bool,
}

/// A results-log entry about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLogEntry {
    /// When the manager received it.
    pub time: Timestamp,
    /// Severity.
    pub level: LogLevel,
    /// The handler it concerns, by registration name.
    pub handler: String,
    /// The item it concerns, if any.
    pub item: Option<String>,
    /// What happened.
    pub text: String,
    /// Whether `showError` may be asked for it.
    pub actionable: bool,
    /// The session it was logged in.
    pub session: String,
    /// The handler's id for it (what `showError` and `deleteLogError` name).
    /// `None` for entries the manager wrote itself.
    pub error_id: Option<String>,
    /// Why the manager wrote it; `None` for the handler's own entries.
    pub cause: Option<Cause>,
}

/// Most versions one conflict may have (`reportConflict`).
pub const MAX_CONFLICT_VERSIONS: usize = 16;

/// One version of a conflicted item: what Sync Center's conflict dialog
/// shows per choice (`ISyncMgrConflictItems`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictVersion {
    /// Which version this is, for people (`laptop: notes.txt`).
    pub label: String,
    /// Its size in bytes, when it has one.
    pub size: Option<u64>,
    /// When it was last modified, when known.
    pub modified: Option<Timestamp>,
    /// More about it (`modified`, `deleted`, `folder`).
    pub detail: Option<String>,
}

/// `reportConflict`'s arguments: a handler found versions it cannot choose
/// between (`ISyncMgrConflict`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictReport {
    /// The item it belongs to.
    pub item: String,
    /// The handler's id for it: stable across sessions, unique per item.
    pub conflict_id: String,
    /// What conflicts, for people.
    pub text: String,
    /// Two or more versions, in the handler's order (what `keep` indexes).
    pub versions: Vec<ConflictVersion>,
}

/// A conflict about to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConflict {
    /// Registration name of the handler that reported it.
    pub handler: String,
    /// The session it was reported in.
    pub session: String,
    /// When the manager received it.
    pub detected: Timestamp,
    /// What the handler reported.
    pub report: ConflictReport,
}

/// What the user keeps of a conflict (`SYNCMGR_PRESENTER_CHOICE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// `KEEP_ONE`: this version (an index into the versions); the others go.
    One(usize),
    /// `KEEP_MULTIPLE`: every version stays (the handler renames as needed).
    All,
}

/// `resolveConflict`'s arguments: the user's decision on one conflict
/// (`ISyncMgrResolutionHandler`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictResolution {
    /// The item.
    pub item: String,
    /// The handler's id for the conflict.
    pub conflict_id: String,
    /// What to keep.
    pub keep: Keep,
}

/// A results-log entry as recorded, with the id the journal gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The manager's id (what `syncmgr log show ID` takes).
    pub id: i64,
    /// The entry.
    pub entry: NewLogEntry,
}

/// The final state of one prepared item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemResult {
    /// Registration name of the handler.
    pub handler: String,
    /// The item's id.
    pub item: String,
    /// Its terminal status.
    pub status: ItemStatus,
}

/// Items per terminal status, as `sessionFinished` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// `succeeded`.
    pub succeeded: u32,
    /// `failed` and `deleted`.
    pub failed: u32,
    /// `skipped`.
    pub skipped: u32,
    /// `stopped`.
    pub stopped: u32,
}

impl StatusCounts {
    /// Counts the terminal statuses of `results`.
    pub fn of(results: &[ItemResult]) -> Self {
        let mut counts = StatusCounts::default();
        for r in results {
            match r.status {
                ItemStatus::Succeeded => counts.succeeded += 1,
                ItemStatus::Skipped => counts.skipped += 1,
                ItemStatus::Stopped => counts.stopped += 1,
                _ => counts.failed += 1,
            }
        }
        counts
    }
}

/// Checks an id chosen by a handler: 1 to [`MAX_ID_LEN`] characters, no
/// control characters.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("id is empty".to_owned());
    }
    let chars = id.chars().count();
    if chars > MAX_ID_LEN {
        return Err(format!(
            "id is {chars} characters long, the limit is {MAX_ID_LEN}"
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(format!("id {id:?} contains a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_plain_retry_confirms_nothing() {
        let answer = ShowErrorAnswer::retry(vec!["a".into(), "b".into()]);
        assert_eq!(answer.retry, ["a", "b"]);
        assert_eq!(answer.confirm, None);
    }

    use super::*;

    #[test]
    fn enum_strings_round_trip() {
        for s in ItemStatus::ALL {
            assert_eq!(s.as_str().parse::<ItemStatus>().unwrap(), *s);
        }
        for e in SyncEvent::ALL {
            assert_eq!(e.as_str().parse::<SyncEvent>().unwrap(), *e);
        }
        let err = "bogus".parse::<ItemStatus>().unwrap_err().to_string();
        assert!(err.contains("unknown status \"bogus\""), "{err}");
        assert!(err.contains("succeeded"), "{err}");
    }

    #[test]
    fn terminal_statuses() {
        let terminal: Vec<_> = ItemStatus::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            terminal,
            ["stopped", "skipped", "succeeded", "failed", "deleted"]
        );
    }

    #[test]
    fn which_statuses_succeed_and_which_events_need_opting_in() {
        let good: Vec<_> = ItemStatus::ALL
            .iter()
            .filter(|s| s.is_success())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(good, ["skipped", "succeeded"]);
        let opt_in: Vec<_> = SyncEvent::ALL
            .iter()
            .filter(|e| e.needs_opt_in())
            .map(|e| e.as_str())
            .collect();
        assert_eq!(opt_in, ["connect", "pendingDisconnect", "idle"]);
        let interactive: Vec<_> = SyncEvent::ALL
            .iter()
            .filter(|e| e.may_bother_user_by_default())
            .map(|e| e.as_str())
            .collect();
        assert_eq!(interactive, ["manual", "invoke"]);
    }

    #[test]
    fn counts_count_each_final_status() {
        let result = |status| ItemResult {
            handler: "h".into(),
            item: "i".into(),
            status,
        };
        let results: Vec<ItemResult> = [
            ItemStatus::Succeeded,
            ItemStatus::Succeeded,
            ItemStatus::Skipped,
            ItemStatus::Skipped,
            ItemStatus::Skipped,
            ItemStatus::Stopped,
            ItemStatus::Stopped,
            ItemStatus::Failed,
            ItemStatus::Deleted,
        ]
        .into_iter()
        .map(result)
        .collect();
        assert_eq!(
            StatusCounts::of(&results),
            StatusCounts {
                succeeded: 2,
                failed: 2,
                skipped: 3,
                stopped: 2,
            }
        );
    }

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("inbox").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id(&"x".repeat(65)).is_err());
        // The limit counts characters, not bytes.
        assert!(validate_id(&"é".repeat(64)).is_ok());
        assert!(validate_id("a\nb").is_err());
    }
}
