//! How failures become exit codes.
//!
//! Any `anyhow::Error` is a run-time failure (exit 1) unless it carries a
//! [`UsageError`] or a [`syncmgr_manager::ManagerError::Usage`] (exit 2): bad
//! arguments, unknown names, an unusable home.

use std::fmt;

use crate::exit_codes;

/// Bad usage or bad input: exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Builds a usage error.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// The exit code for an error that ended a command.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    let usage = error.chain().any(|e| {
        e.is::<UsageError>()
            || matches!(
                e.downcast_ref::<syncmgr_manager::ManagerError>(),
                Some(syncmgr_manager::ManagerError::Usage(_))
            )
    });
    if usage {
        exit_codes::USAGE
    } else {
        exit_codes::FAILED
    }
}
