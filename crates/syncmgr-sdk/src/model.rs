//! The values a handler gives the manager: its name, its items, how an item
//! ended; and the context the manager gives it.

use std::time::SystemTime;

use syncmgr_core::{HandlerFlags, ItemFlags, ItemStatus, SyncEvent};
use syncmgr_protocol::wire;

/// The handler's name and flags (`getHandlerInfo`).
///
/// ```
/// use syncmgr_sdk::{HandlerFlags, HandlerInfo};
///
/// let info = HandlerInfo::new("Git mirror")
///     .flags(HandlerFlags { has_properties: true, ..Default::default() });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerInfo {
    /// The display name.
    pub name: String,
    /// `SYNCMGRHANDLERFLAGS`; all false by default.
    pub flags: HandlerFlags,
}

impl HandlerInfo {
    /// A handler with this display name and no flags.
    pub fn new(name: impl Into<String>) -> Self {
        HandlerInfo {
            name: name.into(),
            flags: HandlerFlags::default(),
        }
    }

    /// Sets the flags.
    #[must_use]
    pub fn flags(mut self, flags: HandlerFlags) -> Self {
        self.flags = flags;
        self
    }

    pub(crate) fn to_wire(&self) -> wire::HandlerInfoResult {
        wire::HandlerInfoResult {
            name: self.name.clone(),
            flags: self.flags.into(),
        }
    }
}

/// One thing the handler can sync (`SYNCMGRITEM`): a mailbox, a folder
/// pair, a repository.
///
/// ```
/// use syncmgr_sdk::Item;
///
/// let item = Item::new("inbox", "Inbox");          // checked by default
/// let other = Item::new("archive", "Archive").unchecked();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The id: 1 to 64 characters, stable across sessions (the manager keys
    /// the user's choices and last-update times by it).
    pub id: String,
    /// The display name.
    pub name: String,
    /// Whether it is synced when the user made no choice for it.
    pub checked: bool,
    /// `SYNCMGRITEMFLAGS`; all false by default.
    pub flags: ItemFlags,
    /// When it was last brought up to date, if the handler knows.
    pub last_update: Option<SystemTime>,
}

impl Item {
    /// A checked item without flags.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Item {
            id: id.into(),
            name: name.into(),
            checked: true,
            flags: ItemFlags::default(),
            last_update: None,
        }
    }

    /// Not synced unless the user chooses it.
    #[must_use]
    pub fn unchecked(mut self) -> Self {
        self.checked = false;
        self
    }

    /// Sets the flags.
    #[must_use]
    pub fn flags(mut self, flags: ItemFlags) -> Self {
        self.flags = flags;
        self
    }

    /// Sets the last-update time.
    #[must_use]
    pub fn last_update(mut self, when: SystemTime) -> Self {
        self.last_update = Some(when);
        self
    }

    pub(crate) fn to_wire(&self) -> wire::WireItem {
        wire::WireItem {
            id: self.id.clone(),
            name: self.name.clone(),
            checked: self.checked,
            flags: self.flags.into(),
            last_update: self.last_update.map(syncmgr_core::Timestamp::from),
        }
    }
}

/// What started this process's session (`initialize`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitContext {
    /// The event (an event this SDK does not know arrives as `manual`).
    pub event: SyncEvent,
    /// Whether the handler may interact with the user.
    pub may_bother_user: bool,
    /// Settings mode: only `items` (and maybe `show_properties`) follow.
    pub settings_only: bool,
    /// The `invoke` cookie, if any.
    pub cookie: Option<String>,
}

impl Default for InitContext {
    /// A manual session (what a manager that skipped `initialize` would mean).
    fn default() -> Self {
        InitContext {
            event: SyncEvent::Manual,
            may_bother_user: true,
            settings_only: false,
            cookie: None,
        }
    }
}

/// How an item's sync ended: what [`SyncHandler::sync_item`] returns. The
/// SDK reports it as the item's final status.
///
/// [`SyncHandler::sync_item`]: crate::SyncHandler::sync_item
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemOutcome {
    status: ItemStatus,
    text: Option<String>,
}

impl ItemOutcome {
    /// The item is up to date (`succeeded`, text "done" unless set).
    pub fn succeeded() -> Self {
        ItemOutcome {
            status: ItemStatus::Succeeded,
            text: None,
        }
    }

    /// The item failed, without a log entry (return an `Err(HandlerError)` to
    /// log one). The text says why.
    pub fn failed(text: impl Into<String>) -> Self {
        ItemOutcome {
            status: ItemStatus::Failed,
            text: Some(text.into()),
        }
    }

    /// The work stopped because it was cancelled (`stopped`).
    pub fn stopped() -> Self {
        ItemOutcome {
            status: ItemStatus::Stopped,
            text: None,
        }
    }

    /// There was nothing to do, the item was left alone (`skipped`).
    pub fn skipped() -> Self {
        ItemOutcome {
            status: ItemStatus::Skipped,
            text: None,
        }
    }

    /// Sets the final status text.
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// The final status.
    pub fn status(&self) -> ItemStatus {
        self.status
    }

    /// The final text, if set.
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }

    /// The status and the text to report (a default text when none was set).
    pub(crate) fn into_report(self) -> (ItemStatus, String) {
        let text = self
            .text
            .unwrap_or_else(|| default_text(self.status).to_owned());
        (self.status, text)
    }
}

/// The final text the SDK reports when the handler set none.
pub(crate) fn default_text(status: ItemStatus) -> &'static str {
    match status {
        ItemStatus::Succeeded => "done",
        ItemStatus::Stopped => "stopped",
        ItemStatus::Skipped => "skipped",
        _ => "failed",
    }
}
