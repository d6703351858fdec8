//! Every error type of the protocol crate, in one place.
//!
//! Errors of the manager-side [`Handler`](syncmgr_core::Handler) implementation
//! are the core's [`HandlerError`](syncmgr_core::HandlerError); this module holds
//! what the protocol itself adds.

use serde_json::value::RawValue;
use thiserror::Error;

/// A line that is not a valid JSON-RPC 2.0 message.
///
/// Carries the JSON-RPC error code to answer with and, when the message had a
/// usable `id`, that id (verbatim), so the peer can be told what went wrong.
#[derive(Debug, Clone, Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct DecodeError {
    /// [`PARSE_ERROR`](crate::wire::error_code::PARSE_ERROR) or
    /// [`INVALID_REQUEST`](crate::wire::error_code::INVALID_REQUEST).
    pub code: i64,
    /// What was wrong, lowercase, without the line itself.
    pub message: String,
    /// The message's `id` when it had a valid one; an answer goes to it.
    pub id: Option<Box<RawValue>>,
}

impl DecodeError {
    pub(crate) fn new(code: i64, message: impl Into<String>, id: Option<&RawValue>) -> Self {
        DecodeError {
            code,
            message: message.into(),
            id: id.map(ToOwned::to_owned),
        }
    }
}
