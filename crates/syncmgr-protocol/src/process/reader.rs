//! The reader task: every line the handler writes to stdout, in order.
//!
//! Responses resolve the manager's outstanding requests. The handler's own
//! requests are answered: `progress` (the hot path), `establishConnection` and
//! `enableModeless` inline; `logError` and `deleteLogError`, which wait for the
//! journal, in a task of their own once their first step is done. Anything
//! malformed is reported through the callback, answered when it had an id, and
//! skipped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use futures::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use syncmgr_core::{HandlerCallback, HandlerError, ProgressReply};
use tokio::io::AsyncRead;
use tokio::sync::{Semaphore, watch};
use tokio_util::codec::FramedRead;

use super::framing::{Frame, InlineId, Outbox, Outgoing, Sent, StdoutLines};
use super::{Delivery, Shared};
use crate::wire::{
    self, ConflictResolvedParams, DeleteLogErrorParams, Empty, EnableModelessParams,
    EnableModelessResult, ErrorObject, EstablishConnectionParams, LogErrorParams, LogErrorResult,
    MAX_LINE, Message, ProgressParams, ProgressResult, ReportConflictParams, error_code, method,
};

/// How many `logError`/`deleteLogError` calls may wait for the journal at
/// once; past it the reader waits, which keeps a flooding handler bounded.
pub(crate) const MAX_IN_FLIGHT: usize = 64;

/// The reader task's state.
#[derive(Debug)]
pub(crate) struct Reader {
    pub(crate) shared: Arc<Shared>,
    pub(crate) out: Outbox,
    pub(crate) callbacks: watch::Receiver<Option<HandlerCallback>>,
    pub(crate) in_flight: Arc<Semaphore>,
    /// A `progress` answer waits in the stdin buffer: flush before waiting
    /// for the next line.
    pub(crate) unflushed: AtomicBool,
}

/// A future answering one request with a serialized line.
type Answer = Pin<Box<dyn Future<Output = serde_json::Result<String>> + Send>>;

impl Reader {
    /// Reads until stdout ends (or cannot be read).
    pub(crate) async fn run<R: AsyncRead + Unpin>(mut self, stdout: R) {
        let mut frames = FramedRead::new(stdout, StdoutLines::new());
        let mut callback: Option<HandlerCallback> = None;
        loop {
            // Answers pile up in the stdin buffer while lines keep coming
            // (one write for a pipelined burst); they go out once the input
            // runs dry, before waiting for more.
            let frame =
                match std::future::poll_fn(|cx| Poll::Ready(frames.poll_next_unpin(cx))).await {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        if self.unflushed.swap(false, Ordering::Relaxed) {
                            self.out.flush().await;
                        }
                        frames.next().await
                    }
                };
            let Some(frame) = frame else { break };
            // An atomic load per line; the clone happens only when the
            // callback in effect changed (prepare, synchronize, shutdown).
            if self.callbacks.has_changed().unwrap_or(false) {
                callback = self.callbacks.borrow_and_update().clone();
            }
            let cb = callback.as_ref();
            if let Some(cb) = cb {
                cb.touch();
            }
            match frame {
                Ok(Frame::Line(line)) => self.line(&line, cb).await,
                Ok(Frame::TooLong) => problem(
                    cb,
                    None,
                    format!(
                        "the handler sent a line longer than 1 MiB ({MAX_LINE} bytes); it was discarded"
                    ),
                ),
                Ok(Frame::NotUtf8) => problem(
                    cb,
                    None,
                    "the handler sent a line that is not valid UTF-8; it was ignored".to_owned(),
                ),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the handler's stdout");
                    break;
                }
            }
        }
        if self.unflushed.swap(false, Ordering::Relaxed) {
            self.out.flush().await;
        }
        tracing::debug!("the handler's stdout is closed");
    }

    async fn line(&self, line: &str, cb: Option<&HandlerCallback>) {
        match wire::decode_line(line) {
            Err(e) => {
                problem(
                    cb,
                    None,
                    format!(
                        "the handler sent a bad line ({}): {}",
                        e.message,
                        wire::excerpt(line)
                    ),
                );
                // JSON-RPC 2.0: a line whose id cannot be read is answered
                // with `id: null`.
                self.send_error(e.id.as_deref(), e.code, &e.message).await;
            }
            Ok(Message::Response { id, outcome }) => self.response(id, outcome, line, cb),
            Ok(Message::Notification {
                method: method::CONFLICT_RESOLVED,
                params,
            }) => self.conflict_resolved(params, cb).await,
            Ok(Message::Notification { method, .. }) => problem(
                cb,
                None,
                format!(
                    "the handler sent a notification {method:?}, but the only one handlers send is {:?}; it was ignored",
                    method::CONFLICT_RESOLVED
                ),
            ),
            Ok(Message::Request { id, method, params }) => {
                self.request(id, method, params, cb).await;
            }
        }
    }

    fn response(
        &self,
        id: &RawValue,
        outcome: Result<&RawValue, &RawValue>,
        line: &str,
        cb: Option<&HandlerCallback>,
    ) {
        let reply = match outcome {
            Ok(result) => Ok(result.to_owned()),
            Err(error) => Err(match serde_json::from_str::<ErrorObject>(error.get()) {
                Ok(error) => HandlerError::Failed(error.message),
                Err(e) => HandlerError::Protocol(format!(
                    "malformed error object in a response: {}",
                    serde_message(&e)
                )),
            }),
        };
        let delivery = match id.get().parse::<u64>() {
            Ok(n) => self.shared.resolve(n, reply),
            Err(_) if id.get() == "null" => {
                // The handler could not read one of our messages.
                let what = match &reply {
                    Err(e) => e.to_string(),
                    Ok(_) => "a result".to_owned(),
                };
                problem(
                    cb,
                    None,
                    format!("the handler answered a message it could not read: {what}"),
                );
                return;
            }
            Err(_) => Delivery::Unknown,
        };
        match delivery {
            Delivery::Delivered => {}
            Delivery::Late => {
                tracing::debug!(id = id.get(), "an answer to an abandoned request");
            }
            Delivery::Unknown => problem(
                cb,
                None,
                format!(
                    "the handler sent a response to no request of ours (id {}): {}",
                    id.get(),
                    wire::excerpt(line)
                ),
            ),
        }
    }

    async fn request(
        &self,
        id: &RawValue,
        method: &str,
        params: Option<&RawValue>,
        cb: Option<&HandlerCallback>,
    ) {
        let known = matches!(
            method,
            method::PROGRESS
                | method::LOG_ERROR
                | method::REPORT_CONFLICT
                | method::DELETE_LOG_ERROR
                | method::ESTABLISH_CONNECTION
                | method::ENABLE_MODELESS
        );
        if !known {
            let message = format!("unknown method {method:?}");
            problem(cb, None, format!("the handler called an {message}"));
            self.send_error(Some(id), error_code::METHOD_NOT_FOUND, &message)
                .await;
            return;
        }
        let Some(cb) = cb else {
            // Before `set_callback` nothing of the session exists yet.
            let message = format!("{method} is not allowed before the session starts");
            tracing::warn!("{message}");
            self.send_error(Some(id), error_code::OUTSIDE_WINDOW, &message)
                .await;
            return;
        };
        match method {
            method::PROGRESS => self.progress(id, params, cb).await,
            method::LOG_ERROR => {
                let Some(p) = self.params::<LogErrorParams>(id, method, params, cb).await else {
                    return;
                };
                let (cb, id) = (cb.clone(), id.to_owned());
                self.answer_later(Box::pin(async move {
                    match cb.log_error(p.into()).await {
                        Ok(error_id) => wire::encode_response(&id, &LogErrorResult { error_id }),
                        Err(e) => refusal(&id, &e),
                    }
                }))
                .await;
            }
            method::REPORT_CONFLICT => {
                let Some(p) = self
                    .params::<ReportConflictParams>(id, method, params, cb)
                    .await
                else {
                    return;
                };
                let (cb, id) = (cb.clone(), id.to_owned());
                self.answer_later(Box::pin(async move {
                    match cb.report_conflict(p.into()).await {
                        Ok(_) => wire::encode_response(&id, &Empty {}),
                        Err(e) => refusal(&id, &e),
                    }
                }))
                .await;
            }
            method::DELETE_LOG_ERROR => {
                let Some(p) = self
                    .params::<DeleteLogErrorParams>(id, method, params, cb)
                    .await
                else {
                    return;
                };
                let (cb, id) = (cb.clone(), id.to_owned());
                self.answer_later(Box::pin(async move {
                    match cb.delete_log_error(p.error_id.as_deref()).await {
                        Ok(()) => wire::encode_response(&id, &Empty {}),
                        Err(e) => refusal(&id, &e),
                    }
                }))
                .await;
            }
            method::ESTABLISH_CONNECTION => {
                let Some(p) = self
                    .params::<EstablishConnectionParams>(id, method, params, cb)
                    .await
                else {
                    return;
                };
                let line = match cb.establish_connection(p.connection.as_deref()) {
                    Ok(()) => wire::encode_response(id, &Empty {}),
                    Err(e) => refusal(id, &e),
                };
                self.send_line(line).await;
            }
            _ => {
                let Some(p) = self
                    .params::<EnableModelessParams>(id, method, params, cb)
                    .await
                else {
                    return;
                };
                let line = match cb.enable_modeless(p.enable) {
                    Ok(allowed) => wire::encode_response(id, &EnableModelessResult { allowed }),
                    Err(e) => refusal(id, &e),
                };
                self.send_line(line).await;
            }
        }
    }

    /// `conflictResolved`, a notification: nothing is answered, so a bad
    /// one is only reported. Awaited here, before the next line, so that a
    /// `synchronize` answer right behind it cannot close the window first.
    async fn conflict_resolved(&self, params: Option<&RawValue>, cb: Option<&HandlerCallback>) {
        let text = params.map_or("{}", RawValue::get);
        match serde_json::from_str::<ConflictResolvedParams>(text) {
            Ok(p) => match cb {
                // A refusal is logged by the callback itself.
                Some(cb) => {
                    let _ = cb.conflict_resolved(&p.item, &p.conflict_id).await;
                }
                None => problem(
                    None,
                    None,
                    "conflictResolved before the session started; ignored".to_owned(),
                ),
            },
            Err(e) => problem(
                cb,
                None,
                format!(
                    "invalid params for {}: {}",
                    method::CONFLICT_RESOLVED,
                    serde_message(&e)
                ),
            ),
        }
    }

    /// The hot path: decode in place, apply, answer from static parts.
    async fn progress(&self, id: &RawValue, params: Option<&RawValue>, cb: &HandlerCallback) {
        let Some(p) = self
            .params::<ProgressParams<'_>>(id, method::PROGRESS, params, cb)
            .await
        else {
            return;
        };
        // A refusal is logged by the callback itself.
        match cb.progress(&p.item, &p.update()) {
            Ok(action) => self.send_action(id, action).await,
            Err(e) => self.send_line(refusal(id, &e)).await,
        }
    }

    /// Decodes a request's params; on failure answers `-32602` and reports it.
    async fn params<'a, T: Deserialize<'a>>(
        &self,
        id: &RawValue,
        method: &str,
        params: Option<&'a RawValue>,
        cb: &HandlerCallback,
    ) -> Option<T> {
        let text = params.map_or("{}", RawValue::get);
        let decoded = if text.starts_with('{') {
            serde_json::from_str(text).map_err(|e| serde_message(&e))
        } else {
            Err("params must be an object".to_owned())
        };
        match decoded {
            Ok(p) => Some(p),
            Err(why) => {
                let message = format!("invalid params for {method}: {why}");
                problem(Some(cb), None, message.clone());
                self.send_error(Some(id), error_code::INVALID_PARAMS, &message)
                    .await;
                None
            }
        }
    }

    /// Runs `answer` up to its first wait here, in arrival order, then in a
    /// task of its own.
    ///
    /// The first step checks the call against its window and starts the
    /// journal write; doing it before the next line is read means a
    /// `synchronize` response right behind a `logError` cannot close the
    /// window first.
    async fn answer_later(&self, mut answer: Answer) {
        let first = std::future::poll_fn(|cx| Poll::Ready(answer.as_mut().poll(cx))).await;
        if let Poll::Ready(line) = first {
            self.send_line(line).await;
            return;
        }
        let Ok(permit) = Arc::clone(&self.in_flight).acquire_owned().await else {
            return;
        };
        let out = self.out.clone();
        tokio::spawn(async move {
            let line = answer.await;
            send_line(&out, line).await;
            drop(permit);
        });
    }

    async fn send_action(&self, id: &RawValue, action: ProgressReply) {
        // A closed writer means the handler is gone; the lifecycle task
        // reports that.
        let Some(inline) = InlineId::new(id.get()) else {
            match wire::encode_response(id, &ProgressResult { action }) {
                Ok(line) => {
                    self.out.send(Outgoing::Line(line.into_bytes())).await;
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a progress answer"),
            }
            return;
        };
        if self.out.send_action(inline, action).await == Sent::Buffered {
            self.unflushed.store(true, Ordering::Relaxed);
        }
    }

    async fn send_line(&self, line: serde_json::Result<String>) {
        send_line(&self.out, line).await;
    }

    async fn send_error(&self, id: Option<&RawValue>, code: i64, message: &str) {
        self.send_line(wire::encode_error(id, code, message)).await;
    }
}

async fn send_line(out: &Outbox, line: serde_json::Result<String>) {
    match line {
        Ok(line) => {
            out.send(Outgoing::Line(line.into_bytes())).await;
        }
        Err(e) => tracing::error!(error = %e, "cannot encode an answer to the handler"),
    }
}

/// The error response for a refused callback call.
fn refusal(id: &RawValue, error: &syncmgr_core::CallbackError) -> serde_json::Result<String> {
    let (code, message) = wire::callback_error_code(error);
    wire::encode_error(Some(id), code, &message)
}

/// Reports a problem with what the handler sent: to the results log through
/// the callback when there is one, to tracing always.
fn problem(cb: Option<&HandlerCallback>, item: Option<&str>, text: String) {
    match cb {
        Some(cb) => {
            tracing::debug!(handler = cb.handler_name(), "{text}");
            cb.report_problem(item, text);
        }
        None => tracing::warn!("handler protocol problem before the session started: {text}"),
    }
}

/// A serde_json message without its " at line 1 column N" (positions inside
/// a params object mean little to a handler author).
pub(crate) fn serde_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}
