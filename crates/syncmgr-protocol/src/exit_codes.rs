//! The exit codes of `syncmgr` (and of tools built on this crate): part of the
//! command line's contract, so scripts may rely on them.
//!
//! Kept here rather than in the binary so that every front end (command line,
//! daemon helpers, conformance checker) shares one spelling.

/// Everything went well: every item ended `succeeded` or `skipped`.
pub const SUCCESS: i32 = 0;

/// Something failed: an item ended `failed`, `stopped` or `deleted`, a handler
/// failed as a whole, or the command itself hit a run-time failure (database,
/// I/O, a handler that could not be started).
pub const FAILED: i32 = 1;

/// Bad usage or bad input: unknown command or option, a malformed argument,
/// a name that does not exist. Nothing was run.
pub const USAGE: i32 = 2;

/// Interrupted by the user (Ctrl-C, SIGINT): 128 + the signal number, as
/// shells report it.
pub const INTERRUPTED: i32 = 130;
