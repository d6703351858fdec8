//! The command handler: each item is a program (rsync, rclone, git, mbsync,
//! vdirsyncer, restic, a script) run without a shell; its exit status is the
//! item's result, its standard error goes to the results log, its progress is
//! read from its output, and a cancel stops it with SIGINT, then SIGTERM, then
//! SIGKILL.
//!
//! This module owns the configuration ([`CommandConfig`], its TOML and
//! command-line forms), the word splitter for the command-line form
//! ([`split_words`]), the progress parsers ([`parsers`]) and the
//! [`CommandHandler`] that runs the items. Wiring it into `syncmgr register`
//! and the store is the binary's job.
//!
//! # Configuration
//!
//! ## Command line
//!
//! ```text
//! syncmgr register NAME --command 'ITEM=PROGRAM [ARG...]' [--command ...]
//!                       [--parser ITEM=KIND ...]
//! syncmgr register NAME --command-file FILE.toml
//! ```
//!
//! Each `--command` value is one item: its id, `=`, then the program and its
//! arguments, split into words like a POSIX shell would ([`split_words`]):
//! blanks separate words, single quotes keep everything literally, double
//! quotes keep everything but the escapes `\\`, `\"`, `\$` and ``\` ``, and
//! a backslash outside quotes escapes one character. There is **no**
//! expansion and no shell ever runs the command: the unquoted characters
//! `|`, `&`, `;`, `<`, `>`, `(`, `)`, `$`, `` ` ``, `*`, `?`, `[`, and `#` or
//! `~` at the start of a word, are refused with an error (quote them to pass
//! them literally, or make the program `sh -c '...'` when a shell is really
//! wanted). The id is everything before
//! the first `=`, with no blanks or quotes in it (ids with spaces need the
//! TOML form). `--parser ITEM=KIND` picks the progress parser of an item
//! (`none`, `percent`, `rsync`, `rclone`, `git`; `percent` by default). The
//! two forms do not mix: `--command-file` conflicts with `--command` and
//! `--parser`. Build the configuration with [`CommandConfig::from_cli`] and
//! [`CommandConfig::from_toml`].
//!
//! ```text
//! syncmgr register backup \
//!     --command 'mail=mbsync -a' \
//!     --command 'photos=rclone copy --progress "/home/me/My Pictures" gdrive:Pictures' \
//!     --command 'docs=rsync -a --info=progress2 /home/me/Documents/ nas:/backup/docs/' \
//!     --parser photos=rclone --parser docs=rsync --parser mail=none
//! ```
//!
//! ## TOML file
//!
//! ```toml
//! # Optional, before the first [[item]]: how long a cancelled command gets
//! # after SIGINT before SIGTERM, and after SIGTERM before SIGKILL
//! # (ms, s, m or h; 2s each by default).
//! sigint_grace = "2s"
//! sigterm_grace = "2s"
//!
//! [[item]]
//! id = "mail"                    # required; stable: choices and the log use it
//! name = "Mail (mbsync)"         # optional display name (default: the id)
//! argv = ["mbsync", "-a"]        # required: the program and its arguments
//! parser = "none"                # none | percent (default) | rsync | rclone | git
//!
//! [[item]]
//! id = "notes"
//! argv = ["git", "pull", "--progress"]
//! parser = "git"
//! cwd = "/home/me/notes"         # optional, absolute
//! env = { GIT_TERMINAL_PROMPT = "0" }   # optional, added to the environment
//! checked = false                # optional: synced only when chosen (default true)
//! timeout = "30m"                # optional wall-clock limit; past it the item fails
//! ```
//!
//! Unknown keys are errors naming the key, with toml's line and column. The
//! same document, as JSON (`serde_json::to_value(&config)`), is what the
//! registration stores.
//!
//! # Running
//!
//! Items run **one after another**, in the prepared order. Sync tools compete
//! for the same link and disk, several of them lock their repository or
//! mailbox (restic, mbsync, git), and users list them in an order that often
//! matters (pull, then back up); the engine already runs different handlers at
//! once, so a user who wants two commands side by side registers two command
//! handlers.
//!
//! Each run: the argv is spawned directly (no shell) in a process group of
//! its own, with standard input from `/dev/null` and both output streams piped
//! and read concurrently. Both streams go through the item's parser (git
//! reports on stderr, rsync and rclone on stdout); lines end at `\n` *or*
//! `\r`, terminal escape codes are stripped. A progress line sets the status
//! text and the amount (percent of 100, see [`parsers`]); the item stays
//! `updatingIndeterminate` until the first amount, then `updating`. Other
//! lines update the status text; those from stderr (and problem lines from
//! either stream) also become results-log entries for the item, at
//! `warning` when they look like an error or warning and `information`
//! otherwise, at most [`STDERR_LOG_BUDGET`] per run. Exit status 0 ends the
//! item `succeeded`; anything else (a code or a signal), or a failure to
//! start, ends it `failed` with an error entry naming the status and the last
//! line of stderr.
//!
//! While a command runs, the handler tells the engine it is alive, so a
//! command that prints nothing for minutes is not taken for a hung handler
//! (use the item's `timeout` to bound a run instead).
//!
//! # Cancelling
//!
//! A cancel is noticed from the progress reply, from the callback's cancel
//! signal, and by polling `is_cancelled` on a short heartbeat, so a silent
//! command is stopped too. The group gets SIGINT; if it is still there after
//! `sigint_grace`, SIGTERM; after `sigterm_grace`, SIGKILL. The item ends
//! `stopped`, with an entry saying which signal ended it. Items cancelled
//! before their turn end `skipped` at once (not at their turn: the engine
//! wants every cancel honoured within its grace period). Keep the two grace
//! periods below the session's grace (5 s by default), or the engine ends the
//! handler first; that, and dropping the handler, kill the running group with
//! SIGKILL.
//!
//! When the program exits but something it started keeps the pipes open,
//! the rest of the group is killed after a short drain period so the item
//! can end.

pub mod parsers;

mod config;
mod run;
mod words;

use std::sync::Arc;
use std::sync::atomic::AtomicI32;

use async_trait::async_trait;
use syncmgr_core::{
    Handler, HandlerCallback, HandlerError, HandlerInfo, InitializeParams, Item, ItemEnumeration,
    Participation,
};
use thiserror::Error;

pub use self::config::{
    CommandConfig, CommandItem, DEFAULT_SIGNAL_GRACE, parse_command_arg, parse_parser_arg,
};
pub use self::parsers::ProgressParser;
pub use self::run::STDERR_LOG_BUDGET;
pub use self::words::split_words;

/// What is wrong with a command configuration or a command line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The TOML file could not be read (syntax, unknown key, wrong type); the
    /// message has toml's line and column.
    #[error("invalid command file: {0}")]
    Toml(String),
    /// The configuration has no items.
    #[error("no items: a command handler needs at least one")]
    NoItems,
    /// One item is invalid.
    #[error("item {id:?}: {reason}")]
    Item {
        /// The item's id as written.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// Two items have the same id.
    #[error("item id {0:?} is used by more than one item")]
    DuplicateId(String),
    /// A `--command` or `--parser` value is malformed.
    #[error("{flag} {arg:?}: {reason}")]
    Argument {
        /// The flag.
        flag: &'static str,
        /// Its value.
        arg: String,
        /// What is wrong.
        reason: String,
    },
    /// Not the name of a parser.
    #[error("unknown parser {0:?} (expected one of: none, percent, rsync, rclone, git)")]
    UnknownParser(String),
    /// A quote is not closed.
    #[error("unterminated {quote} quote (opened at character {at})")]
    UnterminatedQuote {
        /// `'` or `"`.
        quote: char,
        /// Its position, counting characters from 1.
        at: usize,
    },
    /// The text ends in a backslash.
    #[error("backslash at the end of the command")]
    TrailingBackslash,
    /// An unquoted character that means something to a shell.
    #[error(
        "unquoted {ch:?} at character {at}: commands are not run through a shell; \
         quote it to pass it literally, or run `sh -c '...'` as the program"
    )]
    ShellSyntax {
        /// The character.
        ch: char,
        /// Its position, counting characters from 1.
        at: usize,
    },
}

/// The built-in command handler: one item per configured command.
#[derive(Debug)]
pub struct CommandHandler {
    config: CommandConfig,
    /// Indices into `config.items` of the prepared items, in order.
    prepared: Vec<usize>,
    /// The process group of the running command (0: none), for `terminate`.
    running: Arc<AtomicI32>,
}

impl CommandHandler {
    /// A handler for these items. The configuration is validated by
    /// `initialize`, which fails on an invalid one.
    pub fn new(config: CommandConfig) -> Self {
        CommandHandler {
            config,
            prepared: Vec::new(),
            running: Arc::new(AtomicI32::new(0)),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CommandConfig {
        &self.config
    }
}

#[async_trait]
impl Handler for CommandHandler {
    async fn initialize(&mut self, _: &InitializeParams) -> Result<Participation, HandlerError> {
        self.config
            .validate()
            .map_err(|e| HandlerError::Failed(format!("invalid command configuration: {e}")))?;
        Ok(Participation::Participate)
    }

    async fn handler_info(&mut self) -> Result<HandlerInfo, HandlerError> {
        Ok(HandlerInfo {
            name: "Commands".to_owned(),
            ..HandlerInfo::default()
        })
    }

    async fn enum_items(&mut self) -> Result<ItemEnumeration, HandlerError> {
        Ok(ItemEnumeration {
            items: self
                .config
                .items
                .iter()
                .map(|item| Item {
                    id: item.id.clone(),
                    name: item.display_name().to_owned(),
                    checked: item.checked,
                    flags: Default::default(),
                    last_update: None,
                })
                .collect(),
            complete: true,
        })
    }

    async fn prepare_for_sync(
        &mut self,
        items: &[String],
        _: &HandlerCallback,
    ) -> Result<(), HandlerError> {
        self.prepared = items
            .iter()
            .map(|id| {
                self.config
                    .items
                    .iter()
                    .position(|item| item.id == *id)
                    .ok_or_else(|| HandlerError::Failed(format!("no command item {id:?}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    async fn synchronize(&mut self, callback: &HandlerCallback) -> Result<(), HandlerError> {
        let prepared = std::mem::take(&mut self.prepared);
        run::Batch::new(callback, &self.config, &prepared, &self.running)
            .run()
            .await;
        Ok(())
    }

    fn terminate(&mut self) {
        run::kill_running(&self.running);
    }
}

impl Drop for CommandHandler {
    fn drop(&mut self) {
        run::kill_running(&self.running);
    }
}
