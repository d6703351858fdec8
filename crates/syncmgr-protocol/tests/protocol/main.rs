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
