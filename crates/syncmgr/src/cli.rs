//! The command line's shape (clap derive). Names follow `docs/cli.md`, the
//! contract scripts rely on: extend, never rename.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// A synchronization manager: register sync handlers, run sessions with live
/// progress, stop items, and act on the results log.
#[derive(Debug, Parser)]
#[command(name = "syncmgr", version, propagate_version = true)]
pub struct Cli {
    /// Keep everything (database, sockets) under DIR instead of the XDG
    /// directories.
    #[arg(long, global = true, env = "SYNCMGR_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register (or update) a handler: a program, `--folder` pairs or
    /// `--command` items.
    Register(RegisterArgs),
    /// Remove a handler's registration (its log and history stay).
    Unregister {
        /// Registration name.
        name: String,
    },
    /// List registered handlers.
    Handlers {
        /// One JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Ask handlers for their items and show each with its effective choice.
    Items(ItemsArgs),
    /// Store the user's choice for an item and event.
    Choose(ChooseArgs),
    /// Run one sync session with live progress.
    Sync(SyncArgs),
    /// Cancel items in the running sessions of this home.
    Cancel {
        /// `NAME` (all that handler's items) or `NAME/ITEM`; none = everything.
        targets: Vec<String>,
    },
    /// The results log, or an action on one entry.
    Log(LogArgs),
    /// The open conflicts, one of them, or a decision on them.
    Conflicts(ConflictsArgs),
    /// Run a handler program through the whole protocol and check every rule;
    /// exit 0 only when it conforms.
    CheckHandler {
        /// Silence timeout per phase: seconds, or a duration such as `10s`.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration_arg)]
        timeout: Duration,
        /// The handler program and its arguments (after `--`).
        #[arg(last = true, required = true, value_name = "PROGRAM [ARG]...")]
        argv: Vec<String>,
    },
    /// Run a real session on sample data: registers a built-in folder mirror
    /// and command handler and syncs them with live progress.
    Demo {
        /// Newline-delimited JSON events on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run the manager in the background of this home until SIGTERM: it
    /// runs the sessions that `sync` (and other programs) ask for; one per
    /// home.
    Daemon {
        /// Sessions running at once (default: `[daemon] max_concurrent` of
        /// config.toml, else 4).
        #[arg(long, value_name = "N")]
        max_concurrent: Option<usize>,
        /// Instead of running: install it as a service that starts at
        /// login (a systemd user unit; a launchd agent on macOS) and start it.
        #[arg(long, conflicts_with = "uninstall")]
        install: bool,
        /// Instead of running: stop it and remove the installed service.
        #[arg(long)]
        uninstall: bool,
        /// Serve the dashboard on ADDR (`127.0.0.1:8734`; port 0 picks a
        /// free one) instead of `[web] listen`.
        #[arg(long, value_name = "ADDR")]
        web: Option<String>,
    },
    /// Open Sync Center in the browser, logged in: prints a one-time
    /// login link (valid for 2 minutes) to the running daemon's dashboard
    /// and opens it on a desktop.
    Dashboard {
        /// Only print the link.
        #[arg(long)]
        no_open: bool,
    },
    /// Named schedules that the daemon runs: add, list, remove.
    Schedule {
        #[command(subcommand)]
        action: ScheduleAction,
    },
    /// The daemon, its sessions, and every registration's state (from the
    /// store when no daemon runs).
    Status {
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Follow the daemon's live events (every session's) until interrupted.
    Events {
        /// Newline-delimited JSON events on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Past sessions.
    History {
        /// One JSON array on stdout.
        #[arg(long)]
        json: bool,
        /// Only the last N sessions.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
}

/// `syncmgr register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Registration name: `[a-z0-9][a-z0-9._-]{0,63}`.
    pub name: String,
    /// Free text shown in `handlers`.
    #[arg(long)]
    pub description: Option<String>,
    /// Automatic events the handler opts in to: a comma list of `connect`,
    /// `pendingDisconnect`, `idle`.
    #[arg(long, value_name = "LIST")]
    pub events: Option<String>,
    /// Silence timeout (seconds, or a duration such as `90s` or `2m`, at
    /// least 1 s): a handler that sends nothing for this long while the
    /// manager waits on it is ended.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub timeout: Option<Duration>,
    /// The handler program and its arguments (after `--`); run without a shell.
    #[arg(last = true, value_name = "PROGRAM [ARG]...")]
    pub argv: Vec<String>,
    /// Built-in command handler: an item that runs a program, as
    /// 'ITEM=PROGRAM [ARG...]' (split like a shell would, never run by one).
    /// Repeat for more items.
    #[arg(
        long = "command",
        value_name = "ITEM=PROGRAM [ARG...]",
        conflicts_with = "command_file"
    )]
    pub commands: Vec<String>,
    /// How to read a command item's progress: ITEM=none|percent|rsync|rclone|git
    /// (default percent).
    #[arg(long = "parser", value_name = "ITEM=KIND")]
    pub parsers: Vec<String>,
    /// Built-in command handler from a TOML file (see docs/handlers.md).
    #[arg(long, value_name = "FILE")]
    pub command_file: Option<PathBuf>,
    /// Built-in folder handler: mirror SRC into DST, one item per pair.
    /// Repeat for more pairs.
    #[arg(long = "folder", num_args = 2, value_names = ["SRC", "DST"])]
    pub folders: Vec<PathBuf>,
    /// Folder handler: remove from DST what is not in SRC.
    #[arg(long)]
    pub delete: bool,
    /// Folder handler: compare file contents, not size and modification time.
    #[arg(long)]
    pub checksum: bool,
    /// Built-in two-way folder sync: keep A and B equal both ways, one item
    /// per pair; conflicts go to `syncmgr conflicts`. Repeat for more pairs.
    #[arg(long = "two-way", num_args = 2, value_names = ["A", "B"])]
    pub two_way: Vec<PathBuf>,
    /// Two-way sync: how long what a sync replaced or deleted stays in each
    /// folder's `.syncmgr/trash` (default 30 days).
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, requires = "two_way")]
    pub keep_trash: Option<Duration>,
}

/// `syncmgr items`.
#[derive(Debug, Args)]
pub struct ItemsArgs {
    /// Handlers to ask; none = all.
    pub names: Vec<String>,
    /// One JSON array on stdout.
    #[arg(long)]
    pub json: bool,
    /// Show the choices for this event.
    #[arg(long, default_value = "manual")]
    pub event: String,
    /// How many handlers are asked at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_concurrent: usize,
}

/// `syncmgr choose`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("choice").required(true).args(["check", "uncheck"])))]
pub struct ChooseArgs {
    /// Registration name.
    pub name: String,
    /// Item id.
    pub item: String,
    /// Include the item in sessions for the event.
    #[arg(long)]
    pub check: bool,
    /// Leave the item out of sessions for the event.
    #[arg(long)]
    pub uncheck: bool,
    /// The event the choice is for.
    #[arg(long, default_value = "manual")]
    pub event: String,
}

/// `syncmgr schedule ...`.
#[derive(Debug, Subcommand)]
pub enum ScheduleAction {
    /// Adds a schedule: every DURATION after its previous run started, or at
    /// the instants of a cron expression.
    Add(ScheduleAddArgs),
    /// The schedules, with their last and next runs.
    List {
        /// One JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Removes a schedule.
    Remove {
        /// Its name.
        name: String,
    },
}

/// `syncmgr schedule add`.
#[derive(Debug, Args)]
pub struct ScheduleAddArgs {
    /// Its name: `[a-z0-9][a-z0-9._-]{0,63}`.
    pub name: String,
    /// Runs this long after its previous run started (`90s`, `15m`,
    /// `1h30m`; the first time, this long after it was added).
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, conflicts_with = "cron", required_unless_present = "cron")]
    pub every: Option<Duration>,
    /// Runs at the instants of a cron expression: 5 fields (minute hour
    /// day month weekday) or 6 (seconds first).
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// Puts each run off by a stable offset of up to this long (the same for
    /// this schedule after every restart).
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, default_value = "0s")]
    pub jitter: Duration,
    /// Does not make up runs missed while the daemon was down or the
    /// machine asleep.
    #[arg(long)]
    pub no_catch_up: bool,
    /// The cron expression's time zone (an IANA name such as
    /// `Europe/Berlin`; default: the local zone).
    #[arg(long, value_name = "TZ", requires = "cron")]
    pub timezone: Option<String>,
    /// `NAME` or `NAME/ITEM`; none = every handler with its items chosen
    /// for `scheduled`.
    pub targets: Vec<String>,
}

/// `syncmgr sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// `NAME` or `NAME/ITEM`; none = every registered handler with its checked
    /// items for the event.
    pub targets: Vec<String>,
    /// What triggers the session.
    #[arg(long, value_name = "EVENT")]
    pub event: Option<String>,
    /// Opaque text handed to the handlers' `initialize` (the `invoke` cookie).
    #[arg(long, value_name = "TEXT")]
    pub cookie: Option<String>,
    /// Newline-delimited JSON events on stdout.
    #[arg(long)]
    pub json: bool,
    /// Queue the session in the daemon, print its id and return at once.
    #[arg(long)]
    pub detach: bool,
    /// Cancel the daemon's running session of these handlers and start anew.
    #[arg(long)]
    pub replace: bool,
    #[command(flatten)]
    pub tuning: SessionTuning,
}

/// Session knobs shared by `sync` and `log show`.
#[derive(Debug, Args, Clone)]
pub struct SessionTuning {
    /// How many handlers run at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_concurrent: usize,
    /// How long a handler gets to honour a cancel before it is ended
    /// (seconds, or a duration such as `5s`; at most 1 h).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration_arg)]
    pub grace: Duration,
}

/// `syncmgr log`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LogArgs {
    /// An action on one entry.
    #[command(subcommand)]
    pub action: Option<LogAction>,
    /// One JSON array on stdout.
    #[arg(long)]
    pub json: bool,
    /// Only entries of this level or more severe.
    #[arg(long, value_name = "LEVEL")]
    pub level: Option<String>,
    /// Only entries of this handler.
    #[arg(long, value_name = "NAME")]
    pub handler: Option<String>,
    /// Only entries of this session.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
}

/// `syncmgr log show|delete`.
#[derive(Debug, Subcommand)]
pub enum LogAction {
    /// Ask the handler about an entry (`showError`); retry what it asks to.
    Show {
        /// Log entry id.
        id: i64,
        /// Newline-delimited JSON events on stdout.
        #[arg(long)]
        json: bool,
        /// Go ahead with a retry that needs confirming (one a guard refused
        /// because it deletes files) without asking; without a terminal to
        /// ask on, such a retry needs this.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        tuning: SessionTuning,
    },
    /// Remove an entry.
    Delete {
        /// Log entry id.
        id: i64,
    },
}

/// `syncmgr conflicts`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConflictsArgs {
    /// An action on conflicts.
    #[command(subcommand)]
    pub action: Option<ConflictsAction>,
    /// One JSON array on stdout.
    #[arg(long)]
    pub json: bool,
    /// Only this handler's conflicts.
    #[arg(long, value_name = "NAME")]
    pub handler: Option<String>,
}

/// `syncmgr conflicts show|resolve`.
#[derive(Debug, Subcommand)]
pub enum ConflictsAction {
    /// One conflict with its versions (and a diff of two text files).
    Show {
        /// Conflict id.
        id: i64,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Ask the handler to apply a decision, then sync the item.
    Resolve(ResolveArgs),
}

/// `syncmgr conflicts resolve`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
#[command(group(clap::ArgGroup::new("decision").required(true).args(["keep", "keep_all", "keep_newer"])))]
pub struct ResolveArgs {
    /// Conflict id.
    pub id: Option<i64>,
    /// Every open conflict (of `--handler`).
    #[arg(long)]
    pub all: bool,
    /// Only this handler's conflicts (with `--all`).
    #[arg(long, value_name = "NAME", requires = "all")]
    pub handler: Option<String>,
    /// Keep version N (as `conflicts show` numbers them); the others go.
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub keep: Option<usize>,
    /// Keep every version (the handler renames as needed).
    #[arg(long)]
    pub keep_all: bool,
    /// Keep the most recently modified version of each (with `--all`).
    #[arg(long, requires = "all")]
    pub keep_newer: bool,
    /// Go ahead without asking (needed without a terminal to ask on).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Newline-delimited JSON events on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tuning: SessionTuning,
}

/// A duration argument in the project's one syntax (`90s`, `1h30m`), or a
/// plain number of seconds.
fn duration_arg(text: &str) -> Result<Duration, String> {
    syncmgr_core::duration::parse_seconds_or_duration(text)
}
