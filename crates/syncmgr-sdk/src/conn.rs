//! The channel: newline-delimited JSON-RPC 2.0 over a reader and a writer.
//!
//! Reading is leader/follower: **whoever waits for something reads**. A
//! caller waiting for the answer to its request, the main loop waiting for
//! the manager's next request, a [`Conn::post`] waiting for room in the
//! window: each checks under the state lock whether what it waits for has
//! arrived; if not and nobody is reading, it becomes the *leader* and reads
//! lines itself, dispatching each one (answers to their callers, requests to
//! the main loop, `setItemStatus` and `shutdown` applied at once, unknown
//! methods answered) until its own thing has arrived; then it hands the lead
//! to one of the threads still waiting, if any. A round trip thus costs the
//! caller its own `read` and no thread switch: on a virtual machine waking
//! another thread costs about as much as the rest of the round trip.
//!
//! A background thread leads only when nobody waits and no call started for
//! [`QUIET`]: then `setItemStatus`, `shutdown` and the end of input still
//! reach a handler whose code runs without calling the SDK (a long copy, a
//! `wait_cancelled`). It gives the lead up as soon as calls start again.
//!
//! Every write goes through one mutex and writes whole lines, so threads
//! never interleave.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use syncmgr_core::{ItemStatus, ProgressReply};
use syncmgr_protocol::wire::{self, ErrorObject, Message, error_code, method};

use crate::cancel::CancelState;
use crate::error::Error;
use crate::util::{lock, note};

/// How long after the last call the background thread takes the lead.
/// Short enough that a cancel reaches a quiet handler at once for a human;
/// long enough that a handler reporting at any useful rate reads its own
/// answers.
const QUIET: Duration = Duration::from_millis(10);

/// How many [`Progress::post`](crate::Progress::post)ed reports may await
/// their answers at once; a further `post` waits for the oldest.
pub const POST_WINDOW: usize = 8;

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
    /// it has been handed out.
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
    method::RESOLVE_CONFLICT,
];

/// A request of ours that awaits its answer.
enum Pending {
    /// A caller waits for it (parked, or about to be).
    Waiting(Thread),
    /// It arrived; the caller has not taken it yet.
    Answered(Answer),
    /// A posted progress report of this item: its answer is applied to the
    /// cancel state by whoever reads it, not returned.
    Posted(Arc<str>),
}

/// What the threads share, under one lock.
struct State {
    /// A leader is reading (or about to).
    reading: bool,
    pending: HashMap<u64, Pending>,
    /// Posted reports without their answer yet.
    posted: usize,
    /// The manager's requests for the main loop, in arrival order.
    requests: VecDeque<Inbound>,
    /// Threads parked while waiting for something; one of them takes the
    /// lead when it falls free.
    parked: Vec<Thread>,
    /// The main loop's thread, once it waited for a request.
    main_loop: Option<Thread>,
    /// When the last call or post started.
    last_call: Instant,
    closed: bool,
}

impl State {
    /// When nobody leads, wakes one parked thread to take the lead (it may
    /// find its own thing arrived; then it passes the lead on in turn).
    fn pass_lead(&self) {
        if !self.reading
            && let Some(next) = self.parked.first()
        {
            next.unpark();
        }
    }

    fn unregister(&mut self, me: &Thread) {
        self.parked.retain(|t| t.id() != me.id());
    }

    fn wake_all(&self) {
        for t in &self.parked {
            t.unpark();
        }
    }

    /// The answer to call `id`, once it is there; `Closed` when it never will be.
    fn take_answer(&mut self, id: u64) -> Option<Result<Answer, Error>> {
        match self.pending.entry(id) {
            Entry::Vacant(_) => Some(Err(Error::Closed)),
            Entry::Occupied(e) if matches!(e.get(), Pending::Answered(_)) => match e.remove() {
                Pending::Answered(answer) => Some(Ok(answer)),
                Pending::Waiting(_) | Pending::Posted(_) => None,
            },
            Entry::Occupied(_) => None,
        }
    }
}

/// The input; locked only by the leader.
struct Input {
    reader: Box<dyn BufRead + Send>,
    line: Vec<u8>,
}

/// The handler's end of the channel, shared by every thread.
pub(crate) struct Conn {
    out: Mutex<Box<dyn Write + Send>>,
    next_id: AtomicU64,
    state: Mutex<State>,
    input: Mutex<Input>,
    /// The background thread waits here for quiet or the end.
    idle: Condvar,
    /// Mirrors `State::closed` for lock-free checks.
    closed: AtomicBool,
    /// Cancellation state of the current sync round.
    pub(crate) cancel: CancelState,
    /// Set when `serve` returns, so the exit watchdog leaves the process alone.
    finished: (Mutex<bool>, Condvar),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Sets up the channel and starts the background reader. With
    /// `exit_grace`, the process exits (status 0) that long after the channel
    /// closed unless `serve` returned first.
    pub(crate) fn start(
        input: Box<dyn BufRead + Send>,
        output: Box<dyn Write + Send>,
        exit_grace: Option<Duration>,
    ) -> io::Result<Arc<Conn>> {
        let conn = Arc::new(Conn {
            out: Mutex::new(output),
            next_id: AtomicU64::new(1),
            state: Mutex::new(State {
                reading: false,
                pending: HashMap::new(),
                posted: 0,
                requests: VecDeque::new(),
                parked: Vec::new(),
                main_loop: None,
                last_call: Instant::now(),
                closed: false,
            }),
            input: Mutex::new(Input {
                reader: input,
                line: Vec::with_capacity(4096),
            }),
            idle: Condvar::new(),
            closed: AtomicBool::new(false),
            cancel: CancelState::default(),
            finished: (Mutex::new(false), Condvar::new()),
        });
        let background = Arc::clone(&conn);
        thread::Builder::new()
            .name("syncmgr-sdk-reader".into())
            .spawn(move || {
                background.background();
                if let Some(grace) = exit_grace {
                    background.exit_unless_finished(grace);
                }
            })?;
        Ok(conn)
    }

    /// Whether the channel is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Called when `serve` returns.
    pub(crate) fn finish(&self) {
        *lock(&self.finished.0) = true;
        self.finished.1.notify_all();
        self.idle.notify_all();
    }

    fn is_finished(&self) -> bool {
        *lock(&self.finished.0)
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
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
        let line = encode(id, method, params)?;
        {
            let mut st = self.lock_state();
            if st.closed {
                return Err(Error::Closed);
            }
            st.pending.insert(id, Pending::Waiting(thread::current()));
            st.last_call = Instant::now();
        }
        if let Err(e) = self.write_line(&line) {
            self.lock_state().pending.remove(&id);
            return Err(self.write_error(e));
        }
        match self.wait_until(|st| st.take_answer(id))? {
            Ok(result) => serde_json::from_str(result.get()).map_err(|e| Error::Protocol {
                method,
                message: e.to_string(),
            }),
            Err(error) => Err(Error::Refused {
                method,
                code: error.code,
                message: error.message,
            }),
        }
    }

    /// Sends a `progress` request of `item` without waiting for its answer,
    /// which whoever reads it applies to the cancel state. Waits while
    /// [`POST_WINDOW`] posted reports await their answers.
    pub(crate) fn post<P: Serialize>(&self, item: &Arc<str>, params: &P) -> Result<(), Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let line = encode(id, method::PROGRESS, params)?;
        self.wait_until(|st| {
            if st.closed {
                Some(Err(Error::Closed))
            } else if st.posted < POST_WINDOW {
                st.posted += 1;
                st.pending.insert(id, Pending::Posted(Arc::clone(item)));
                st.last_call = Instant::now();
                Some(Ok(()))
            } else {
                None
            }
        })?;
        if let Err(e) = self.write_line(&line) {
            let mut st = self.lock_state();
            if st.pending.remove(&id).is_some() {
                st.posted -= 1;
            }
            drop(st);
            return Err(self.write_error(e));
        }
        Ok(())
    }

    /// Waits until every posted report has its answer (or the channel closed).
    pub(crate) fn wait_posted(&self) {
        self.wait_until(|st| (st.posted == 0 || st.closed).then_some(()));
    }

    /// The manager's next request for the main loop; `Closed` once the
    /// channel is closed and every request before that was handed out.
    pub(crate) fn next_request(&self) -> Inbound {
        {
            let mut st = self.lock_state();
            if st.main_loop.is_none() {
                st.main_loop = Some(thread::current());
            }
        }
        self.wait_until(|st| {
            st.requests
                .pop_front()
                .or_else(|| st.closed.then_some(Inbound::Closed))
        })
    }

    fn write_error(&self, e: io::Error) -> Error {
        if self.is_closed() {
            Error::Closed
        } else {
            Error::Io(e)
        }
    }

    /// Waits until `ready` yields a value, leading (reading the input)
    /// whenever nobody else does. `ready` runs under the state lock and must
    /// yield once the channel is closed.
    fn wait_until<T>(&self, mut ready: impl FnMut(&mut State) -> Option<T>) -> T {
        let mut me: Option<Thread> = None;
        let mut st = self.lock_state();
        loop {
            if let Some(value) = ready(&mut st) {
                if let Some(me) = &me {
                    st.unregister(me);
                }
                st.pass_lead();
                return value;
            }
            if !st.reading {
                st.reading = true;
                if let Some(me) = &me {
                    st.unregister(me);
                }
                drop(st);
                let (guard, value) = self.lead(&mut ready);
                st = guard;
                st.reading = false;
                st.pass_lead();
                return value;
            }
            let me = me.get_or_insert_with(thread::current);
            if !st.parked.iter().any(|t| t.id() == me.id()) {
                st.parked.push(me.clone());
            }
            drop(st);
            thread::park();
            st = self.lock_state();
        }
    }

    /// Reads and dispatches lines until `ready` yields; returns with the
    /// state locked (still marked `reading`).
    fn lead<T>(
        &self,
        ready: &mut impl FnMut(&mut State) -> Option<T>,
    ) -> (MutexGuard<'_, State>, T) {
        let mut input = lock(&self.input);
        loop {
            self.read_one(&mut input);
            let mut st = self.lock_state();
            if let Some(value) = ready(&mut st) {
                return (st, value);
            }
        }
    }

    /// The background thread: leads while the handler is quiet, until the
    /// channel closes or `serve` returns.
    fn background(&self) {
        let mut st = self.lock_state();
        loop {
            if st.closed || self.is_finished() {
                return;
            }
            let quiet_for = st.last_call.elapsed();
            if !st.reading && st.parked.is_empty() && quiet_for >= QUIET {
                st.reading = true;
                drop(st);
                st = self.lead_while_quiet();
                st.reading = false;
                st.pass_lead();
                continue;
            }
            let wait = QUIET.saturating_sub(quiet_for).max(QUIET / 4);
            st = self
                .idle
                .wait_timeout(st, wait)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Reads line by line until the channel closes, somebody waits, or calls
    /// start again; returns with the state locked (still marked `reading`).
    fn lead_while_quiet(&self) -> MutexGuard<'_, State> {
        let mut input = lock(&self.input);
        loop {
            self.read_one(&mut input);
            let st = self.lock_state();
            if st.closed || !st.parked.is_empty() || st.last_call.elapsed() < QUIET {
                return st;
            }
        }
    }

    /// Reads one line and dispatches it; closes the channel at its end.
    fn read_one(&self, input: &mut Input) {
        let Input { reader, line } = input;
        match next_line(reader.as_mut(), line) {
            Ok(Line::Eof) => self.close(),
            Ok(Line::TooLong) => {
                note(format_args!(
                    "skipped a line from the manager longer than {} bytes",
                    wire::MAX_LINE
                ));
            }
            Ok(Line::Complete) => {
                if self.dispatch(line) == Flow::Stop {
                    self.close();
                }
            }
            Err(e) => {
                note(format_args!("cannot read from the manager: {e}"));
                self.close();
            }
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

    /// End of input or `shutdown`: fail every call still waiting, cancel the
    /// work in progress, tell the main loop. Answers already in stay for
    /// their callers.
    fn close(&self) {
        let mut st = self.lock_state();
        if st.closed {
            return;
        }
        st.closed = true;
        self.closed.store(true, Ordering::SeqCst);
        st.pending.retain(|_, pending| match pending {
            Pending::Waiting(thread) => {
                thread.unpark();
                false
            }
            Pending::Answered(_) => true,
            Pending::Posted(_) => false,
        });
        st.posted = 0;
        st.requests.push_back(Inbound::Closed);
        st.wake_all();
        if let Some(main_loop) = &st.main_loop {
            main_loop.unpark();
        }
        drop(st);
        self.cancel.close();
        self.idle.notify_all();
    }

    fn dispatch(&self, line: &[u8]) -> Flow {
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
                    let mut st = self.lock_state();
                    st.requests.push_back(Inbound::Request {
                        id: id.to_owned(),
                        method: method.to_owned(),
                        params: params.map(ToOwned::to_owned),
                    });
                    if let Some(main_loop) = &st.main_loop {
                        main_loop.unpark();
                    }
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
        let mut st = self.lock_state();
        let Some(pending) = st.pending.get_mut(&key) else {
            drop(st);
            note(format_args!("response to no request of ours (id {key})"));
            return;
        };
        match pending {
            Pending::Waiting(thread) => {
                thread.unpark();
                *pending = Pending::Answered(owned_answer(outcome));
            }
            Pending::Answered(_) => {
                drop(st);
                note(format_args!("a second response to request {key}"));
            }
            Pending::Posted(_) => {
                let Some(Pending::Posted(item)) = st.pending.remove(&key) else {
                    return;
                };
                // Room in a full window, or nothing left to wait for: the
                // threads that wait for either may be parked.
                if st.posted == POST_WINDOW || st.posted == 1 {
                    st.wake_all();
                }
                st.posted -= 1;
                drop(st);
                self.apply_posted(&item, outcome);
            }
        }
    }

    /// The answer to a posted report: its action goes to the cancel state; a
    /// refusal is noted, as `Progress::report` does.
    fn apply_posted(&self, item: &str, outcome: Result<&RawValue, &RawValue>) {
        let refusal = match outcome {
            Ok(result) => match serde_json::from_str::<wire::ProgressResult>(result.get()) {
                Ok(result) => {
                    match result.action {
                        ProgressReply::Continue => {}
                        ProgressReply::CancelItem => self.cancel.cancel_item(item),
                        ProgressReply::CancelAll => self.cancel.cancel_all(),
                    }
                    return;
                }
                Err(e) => format!("bad answer from the manager: {e}"),
            },
            Err(error) => match owned_answer(Err(error)) {
                Err(error) => Error::Refused {
                    method: method::PROGRESS,
                    code: error.code,
                    message: error.message,
                }
                .to_string(),
                Ok(_) => return,
            },
        };
        note(format_args!("progress of {item}: {refusal}"));
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

/// An answer as the caller takes it; a malformed error object becomes an
/// error of its own.
fn owned_answer(outcome: Result<&RawValue, &RawValue>) -> Answer {
    match outcome {
        Ok(result) => Ok(result.to_owned()),
        Err(error) => Err(
            serde_json::from_str::<ErrorObject>(error.get()).unwrap_or_else(|e| ErrorObject {
                code: error_code::INVALID_REQUEST,
                message: format!("malformed error object: {e}"),
                data: None,
            }),
        ),
    }
}

fn encode<P: Serialize + ?Sized>(
    id: u64,
    method: &'static str,
    params: &P,
) -> Result<String, Error> {
    wire::encode_request(&id, method, params).map_err(|e| Error::Protocol {
        method,
        message: format!("cannot encode the request: {e}"),
    })
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
