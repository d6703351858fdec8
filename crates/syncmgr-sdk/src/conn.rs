//! The channel: newline-delimited JSON-RPC 2.0 over a reader and a writer.
//!
//! One reader thread owns the input. It routes responses to the caller
//! waiting in [`Conn::call`] (a map id → one-shot channel, so any number of
//! requests may be outstanding and answered in any order), applies
//! `setItemStatus` and `shutdown` at once (whatever the handler is doing),
//! answers unknown methods itself, and queues the manager's other requests
//! for the main loop. Every write goes through one mutex and writes whole
//! lines, so threads never interleave.

use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use syncmgr_core::ItemStatus;
use syncmgr_protocol::wire::{self, ErrorObject, Message, error_code, method};

use crate::cancel::CancelState;
use crate::error::Error;
use crate::util::{lock, note};

/// A request from the manager that the main loop answers.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A request: answer it, echoing `id`.
    Request {
        id: Box<RawValue>,
        method: String,
        params: Option<Box<RawValue>>,
    },
    /// The channel is closed (end of input or `shutdown`); everything before
    /// it has been queued.
    Closed,
}

type Answer = Result<Box<RawValue>, ErrorObject>;

/// The manager's requests the main loop handles.
const MAIN_LOOP_METHODS: &[&str] = &[
    method::INITIALIZE,
    method::GET_HANDLER_INFO,
    method::ENUM_ITEMS,
    method::SHOW_PROPERTIES,
    method::PREPARE_FOR_SYNC,
    method::SYNCHRONIZE,
    method::SHOW_ERROR,
];

/// The handler's end of the channel, shared by every thread.
pub(crate) struct Conn {
    out: Mutex<Box<dyn Write + Send>>,
    next_id: AtomicU64,
    waiting: Mutex<HashMap<u64, SyncSender<Answer>>>,
    /// Set once the input ended or `shutdown` arrived: no answer can come.
    closed: AtomicBool,
    /// Cancellation state of the current sync round.
    pub(crate) cancel: CancelState,
    /// Set when `serve` returns, so the exit watchdog leaves the process alone.
    finished: (Mutex<bool>, std::sync::Condvar),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Starts the reader thread on `input`; returns the connection and the
    /// queue of requests for the main loop. With `exit_grace`, the process
    /// exits (status 0) that long after the channel closed unless `serve`
    /// returned first.
    pub(crate) fn start(
        input: Box<dyn BufRead + Send>,
        output: Box<dyn Write + Send>,
        exit_grace: Option<Duration>,
    ) -> io::Result<(Arc<Conn>, Receiver<Inbound>)> {
        let conn = Arc::new(Conn {
            out: Mutex::new(output),
            next_id: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            cancel: CancelState::default(),
            finished: (Mutex::new(false), std::sync::Condvar::new()),
        });
        let (tx, rx) = mpsc::channel();
        let reader = Arc::clone(&conn);
        std::thread::Builder::new()
            .name("syncmgr-sdk-reader".into())
            .spawn(move || {
                reader.read_loop(input, &tx);
                if let Some(grace) = exit_grace {
                    reader.exit_unless_finished(grace);
                }
            })?;
        Ok((conn, rx))
    }

    /// Whether the channel is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Called when `serve` returns.
    pub(crate) fn finish(&self) {
        *lock(&self.finished.0) = true;
        self.finished.1.notify_all();
    }

    /// After the channel closed: gives the main loop `grace` to wind down
    /// (answer what it had, stop the items), then ends the process.
    fn exit_unless_finished(&self, grace: Duration) {
        let guard = lock(&self.finished.0);
        let (guard, _) = self
            .finished
            .1
            .wait_timeout_while(guard, grace, |finished| !*finished)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*guard {
            note(format_args!(
                "the manager closed the channel and the handler did not stop within {grace:?}; exiting"
            ));
            std::process::exit(0);
        }
    }

    /// Writes one line (which ends with `\n`) and flushes.
    pub(crate) fn write_line(&self, line: &str) -> io::Result<()> {
        let mut out = lock(&self.out);
        out.write_all(line.as_bytes())?;
        out.flush()
    }

    /// Sends a request and waits for its answer. Many calls may be
    /// outstanding at once, from any threads.
    pub(crate) fn call<P, R>(&self, method: &'static str, params: &P) -> Result<R, Error>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(1);
        lock(&self.waiting).insert(id, tx);
        // `close` sets the flag before it drops the waiters: a request
        // registered after that sees the flag here.
        if self.is_closed() {
            lock(&self.waiting).remove(&id);
            return Err(Error::Closed);
        }
        let line = wire::encode_request(&id, method, params).map_err(|e| Error::Protocol {
            method,
            message: format!("cannot encode the request: {e}"),
        })?;
        if let Err(e) = self.write_line(&line) {
            lock(&self.waiting).remove(&id);
            return Err(if self.is_closed() {
                Error::Closed
            } else {
                Error::Io(e)
            });
        }
        match rx.recv() {
            Ok(Ok(result)) => serde_json::from_str(result.get()).map_err(|e| Error::Protocol {
                method,
                message: e.to_string(),
            }),
            Ok(Err(error)) => Err(Error::Refused {
                method,
                code: error.code,
                message: error.message,
            }),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Answers a request of the manager.
    pub(crate) fn respond<R: Serialize>(&self, id: &RawValue, result: &R) -> io::Result<()> {
        match wire::encode_response(id, result) {
            Ok(line) => self.write_line(&line),
            Err(e) => self.respond_error(
                id,
                error_code::INVALID_REQUEST,
                &format!("cannot encode the result: {e}"),
            ),
        }
    }

    /// Answers a request of the manager with an error.
    pub(crate) fn respond_error(&self, id: &RawValue, code: i64, message: &str) -> io::Result<()> {
        let line = wire::encode_error(Some(id), code, message).map_err(io::Error::other)?;
        self.write_line(&line)
    }

    fn read_loop(&self, mut input: Box<dyn BufRead + Send>, inbox: &Sender<Inbound>) {
        let mut buf = Vec::with_capacity(4096);
        loop {
            match next_line(&mut input, &mut buf) {
                Ok(Line::Eof) => return self.close(inbox),
                Ok(Line::TooLong) => {
                    note(format_args!(
                        "skipped a line from the manager longer than {} bytes",
                        wire::MAX_LINE
                    ));
                }
                Ok(Line::Complete) => {
                    if self.dispatch(&buf, inbox) == Flow::Stop {
                        return self.close(inbox);
                    }
                }
                Err(e) => {
                    note(format_args!("cannot read from the manager: {e}"));
                    return self.close(inbox);
                }
            }
        }
    }

    /// End of input or `shutdown`: fail every outstanding call, cancel the
    /// work in progress, tell the main loop.
    fn close(&self, inbox: &Sender<Inbound>) {
        self.closed.store(true, Ordering::SeqCst);
        lock(&self.waiting).clear();
        self.cancel.close();
        // The main loop may be gone already; then there is nobody to tell.
        let _ = inbox.send(Inbound::Closed);
    }

    fn dispatch(&self, line: &[u8], inbox: &Sender<Inbound>) -> Flow {
        let line = match std::str::from_utf8(line) {
            Ok(line) => line.trim_ascii(),
            Err(_) => {
                self.send_or_note(wire::encode_error(
                    None,
                    error_code::PARSE_ERROR,
                    "not valid UTF-8",
                ));
                return Flow::Continue;
            }
        };
        if line.is_empty() {
            return Flow::Continue;
        }
        let message = match wire::decode_line(line) {
            Ok(message) => message,
            Err(e) => {
                note(format_args!(
                    "bad line from the manager ({e}): {}",
                    wire::excerpt(line)
                ));
                self.send_or_note(wire::encode_error(e.id.as_deref(), e.code, &e.message));
                return Flow::Continue;
            }
        };
        match message {
            Message::Response { id, outcome } => {
                self.route_response(id, outcome);
                Flow::Continue
            }
            Message::Notification { method, params } => self.notification(method, params),
            Message::Request { id, method, params } => {
                if method == method::SHUTDOWN {
                    // A notification by contract; answered if sent as a request.
                    self.send_or_note(wire::encode_response(id, &wire::Empty {}));
                    return Flow::Stop;
                }
                if method == method::PREPARE_FOR_SYNC {
                    // A new round: done here, in arrival order, so that a
                    // `setItemStatus` sent right after it is kept.
                    self.cancel.reset();
                }
                if MAIN_LOOP_METHODS.contains(&method) {
                    let _ = inbox.send(Inbound::Request {
                        id: id.to_owned(),
                        method: method.to_owned(),
                        params: params.map(ToOwned::to_owned),
                    });
                } else {
                    self.send_or_note(wire::encode_error(
                        Some(id),
                        error_code::METHOD_NOT_FOUND,
                        &format!("method not found: {method}"),
                    ));
                }
                Flow::Continue
            }
        }
    }

    fn notification(&self, name: &str, params: Option<&RawValue>) -> Flow {
        if name == method::SHUTDOWN {
            return Flow::Stop;
        }
        if name == method::SET_ITEM_STATUS {
            let decoded =
                params.map(|p| serde_json::from_str::<wire::SetItemStatusParams<'_>>(p.get()));
            match decoded {
                Some(Ok(p)) if p.status == ItemStatus::Skipped => self.cancel.skip(&p.item),
                Some(Ok(p)) => note(format_args!(
                    "ignored setItemStatus {} for {}",
                    p.status, p.item
                )),
                Some(Err(e)) => note(format_args!("bad setItemStatus from the manager: {e}")),
                None => note(format_args!("setItemStatus without params")),
            }
        }
        // Other notifications need no answer; newer managers may send some.
        Flow::Continue
    }

    fn route_response(&self, id: &RawValue, outcome: Result<&RawValue, &RawValue>) {
        let Ok(key) = id.get().parse::<u64>() else {
            note(format_args!("response to no request of ours (id {id})"));
            return;
        };
        let Some(waiter) = lock(&self.waiting).remove(&key) else {
            note(format_args!("response to no request of ours (id {key})"));
            return;
        };
        let answer = match outcome {
            Ok(result) => Ok(result.to_owned()),
            Err(error) => Err(
                serde_json::from_str::<ErrorObject>(error.get()).unwrap_or_else(|e| ErrorObject {
                    code: error_code::INVALID_REQUEST,
                    message: format!("malformed error object: {e}"),
                    data: None,
                }),
            ),
        };
        // The caller may have given up (it never does today).
        let _ = waiter.send(answer);
    }

    fn send_or_note(&self, line: serde_json::Result<String>) {
        let result = line
            .map_err(io::Error::other)
            .and_then(|line| self.write_line(&line));
        if let Err(e) = result {
            note(format_args!("cannot answer the manager: {e}"));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// `buf` holds one line, without its newline.
    Complete,
    /// A line longer than [`wire::MAX_LINE`] was read and dropped.
    TooLong,
    /// End of input.
    Eof,
}

/// Reads one line into `buf` (without the `\n`), never holding more than
/// [`wire::MAX_LINE`] bytes of it. A last line without a newline counts.
fn next_line(input: &mut dyn BufRead, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = match input.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Line::Eof,
                (true, true) => Line::TooLong,
                (true, false) => Line::Complete,
            });
        }
        any = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        if !too_long {
            if buf.len() + chunk.len() > wire::MAX_LINE {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = newline.map_or(available.len(), |i| i + 1);
        input.consume(used);
        if newline.is_some() {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_bounded() {
        let long = "x".repeat(wire::MAX_LINE + 1);
        let text = format!("one\n\n{long}\ntwo\r\nlast");
        let mut input = io::BufReader::with_capacity(7, text.as_bytes());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match next_line(&mut input, &mut buf).unwrap() {
                Line::Eof => break,
                Line::TooLong => got.push("<too long>".to_owned()),
                Line::Complete => got.push(String::from_utf8(buf.clone()).unwrap()),
            }
        }
        assert_eq!(got, ["one", "", "<too long>", "two\r", "last"]);
    }
}
