//! The exit codes of `syncmgr`: part of the command line's contract
//! (`docs/cli.md`), so scripts may rely on them. A signal that ends a session
//! gives 128 + its number, as shells report it, after everything running was
//! cancelled cleanly.

/// Everything went well: every item ended `succeeded` or `skipped`.
pub const SUCCESS: i32 = 0;

/// Something failed: an item ended `failed`, `stopped` or `deleted`, a handler
/// failed as a whole, or the command itself hit a run-time failure (database,
/// I/O, a handler that could not be started).
pub const FAILED: i32 = 1;

/// Bad usage or bad input: unknown command or option, a malformed argument,
/// a name that does not exist, an unusable home. Nothing was run.
pub const USAGE: i32 = 2;

/// The terminal closed (SIGHUP): 128 + 1.
pub const HANGUP: i32 = 129;

/// Interrupted by the user (Ctrl-C, SIGINT): 128 + 2.
pub const INTERRUPTED: i32 = 130;

/// Asked to stop (SIGTERM, as `kill` and service managers send): 128 + 15.
pub const TERMINATED: i32 = 143;
