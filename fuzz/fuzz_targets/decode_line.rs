//! Fuzzes the manager's line decoder: whatever bytes a handler writes on one
//! line, `decode_line` (and what the reader does next with a request's
//! params) returns a value or an error, never panics, never hangs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncmgr_protocol::wire::{
    self, DeleteLogErrorParams, EnableModelessParams, EstablishConnectionParams, LogErrorParams,
    Message, ProgressParams,
};

fuzz_target!(|data: &[u8]| {
    // The reader drops non-UTF-8 lines before decoding; excerpt is what it
    // quotes of a bad line.
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let _ = wire::excerpt(line);
    match wire::decode_line(line) {
        Ok(Message::Request { method, params, .. } | Message::Notification { method, params }) => {
            let params = params.map_or("{}", |p| p.get());
            match method {
                wire::method::PROGRESS => {
                    if let Ok(p) = serde_json::from_str::<ProgressParams<'_>>(params) {
                        let _ = p.update();
                    }
                }
                wire::method::LOG_ERROR => {
                    if let Ok(p) = serde_json::from_str::<LogErrorParams>(params) {
                        let _ = syncmgr_core::LogRequest::from(p);
                    }
                }
                wire::method::DELETE_LOG_ERROR => {
                    let _ = serde_json::from_str::<DeleteLogErrorParams>(params);
                }
                wire::method::ESTABLISH_CONNECTION => {
                    let _ = serde_json::from_str::<EstablishConnectionParams>(params);
                }
                wire::method::ENABLE_MODELESS => {
                    let _ = serde_json::from_str::<EnableModelessParams>(params);
                }
                _ => {}
            }
        }
        Ok(Message::Response { outcome, .. }) => {
            if let Err(error) = outcome {
                let _ = serde_json::from_str::<wire::ErrorObject>(error.get());
            }
        }
        Err(e) => {
            // Answering a bad request encodes an error with its id.
            let _ = wire::encode_error(e.id.as_deref(), e.code, &e.message);
        }
    }
});
