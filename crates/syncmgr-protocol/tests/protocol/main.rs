//! The protocol crate's tests, one binary (it links once):
//!
//! - [`process`]: `ProcessHandler` against small script handlers, and
//!   proptests of the line decoder.
//! - [`robustness`]: arbitrary handler message sequences (proptest), floods
//!   (a million progress updates, a 10 MB line, a handler that never reads)
//!   with a working cancel and memory bounded as a counting allocator sees
//!   it.

// The robustness tests say what they measured on stderr (shown on failure).
#![allow(clippy::print_stderr)]

mod process;
mod robustness;

use syncmgr_core::{ItemStatus, SessionSummary};

/// The final status of `item` in a session's summary.
#[track_caller]
fn status_of(summary: &SessionSummary, item: &str) -> ItemStatus {
    summary
        .items
        .iter()
        .find(|r| r.item == item)
        .unwrap_or_else(|| panic!("no result for {item}: {summary:?}"))
        .status
}
