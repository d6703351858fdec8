//! The built-in handlers' tests, one binary (it links once):
//!
//! - [`folder`]: the folder mirror through real sessions on real trees,
//!   compared byte for byte; guards, confirmations, overlapping folders,
//!   incomplete walks, cancel inside a large file.
//! - [`command`]: the command wrapper: exit statuses, stderr entries,
//!   parsers on live output, cancel escalation with the process group gone.

mod command;
mod folder;
