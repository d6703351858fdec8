//! The syncmgr handler protocol: an out-of-process sync handler talks to the
//! manager over its stdin and stdout in newline-delimited JSON-RPC 2.0 (the
//! contract is `docs/protocol.md`).
//!
//! - [`wire`]: the envelope, every method's params and results, error codes,
//!   line encoders and the line decoder;
//! - [`process`]: [`ProcessHandler`], the manager's side: a
//!   [`syncmgr_core::Handler`] implemented over a child process;
//! - [`errors`]: the errors this crate adds to the core's.
//!
//! **Architecture invariant:** nothing a handler sends, or fails to send, can
//! panic, hang or grow the manager without bound. Bad lines are reported
//! through the callback and skipped; a dead or wedged handler fails its calls
//! (the engine's timeouts bound the rest). This crate never prints to stdout.

pub mod errors;
pub mod process;
pub mod wire;

pub use errors::DecodeError;
pub use process::ProcessHandler;
pub use wire::{MAX_LINE, PROTOCOL_VERSION};
