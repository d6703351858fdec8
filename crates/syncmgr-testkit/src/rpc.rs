//! The handler's side of the channel: newline-delimited JSON-RPC 2.0 over
//! stdin/stdout (see `docs/protocol.md`, "Transport").
//!
//! One reader thread owns stdin. Responses to the handler's own requests go to
//! the caller waiting in [`Conn::request`] (a map id → channel), or are counted
//! when they belong to a [`Conn::flood`]; requests and notifications from the
//! manager go to the main loop through an mpsc channel. Every write to stdout
//! goes through one `Mutex<Stdout>` and writes whole lines.
//!
//! When stdin reaches EOF (the manager closed the channel or was killed) or a
//! `shutdown` notification arrives, the reader stops reading and the process
//! exits with status 0: the main thread first answers what is already queued
//! (so piping a fixed script of requests gets every answer), but exits at once
//! if it would have to wait for the manager (a request of its own, or the
//! inbox), and the reader ends the process after [`CLOSE_GRACE`] whatever the
//! main thread is doing (sleeping, `silent`, ...).

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::{self, BufRead, BufWriter, Stdout, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Writes one line to stderr (the manager keeps these as log entries).
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::rpc::note_line(format_args!($($arg)*))
    };
}
pub(crate) use note;

/// Implementation of [`note!`].
pub fn note_line(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    // Nothing useful can be done if stderr is gone.
    let _ = writeln!(err, "{args}");
}

/// A message from the manager that the main loop has to handle.
#[derive(Debug)]
pub enum Incoming {
    /// A request: must be answered with [`Conn::respond`] or [`Conn::respond_error`].
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    /// A notification (`setItemStatus`; `shutdown` never gets here).
    Notification { method: String, params: Value },
    /// The channel is closed (EOF or `shutdown`): everything before it was
    /// handled, exit now.
    Closed,
}

/// How long the main thread may take, after EOF or `shutdown`, to answer what
/// it had already received before the reader ends the process.
pub const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// A JSON-RPC error the manager answered one of our requests with.
#[derive(Debug, Clone)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

/// The manager's answer to one of our requests.
pub type Reply = Result<Value, RpcError>;

/// Replies expected for a block of pipelined `progress` requests.
#[derive(Debug)]
struct FloodWindow {
    first: u64,
    end: u64,
    replies: u64,
    done: Sender<()>,
}

/// The handler's end of the channel, shared by the main thread and the reader.
#[derive(Debug)]
pub struct Conn {
    out: Mutex<Stdout>,
    next_id: AtomicU64,
    waiting: Mutex<HashMap<u64, Sender<Reply>>>,
    flood: Mutex<Option<FloodWindow>>,
    /// Set by the reader at EOF or `shutdown`: no response can come any more.
    closed: AtomicBool,
}

/// Locks a mutex, ignoring poisoning (a panicking thread ends the process anyway).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How the process ends once the channel closes: `Some(code)` exits with
/// that status (0 unless `--exit-code`), `None` stays running (`--linger`,
/// a handler that ignores `shutdown`). Set once at start.
pub static ON_CLOSE: std::sync::OnceLock<Option<i32>> = std::sync::OnceLock::new();

/// Ends the process as [`ON_CLOSE`] says.
fn end_process() -> ! {
    match ON_CLOSE.get().copied().unwrap_or(Some(0)) {
        Some(code) => std::process::exit(code),
        None => loop {
            thread::park();
        },
    }
}

/// The manager closed the channel (or went away): nothing left to do.
fn exit_channel_closed(why: &str) -> ! {
    note!("{why}; exiting");
    end_process()
}

/// Exits because the reader saw EOF or `shutdown` (it logged why).
pub fn exit_closed() -> ! {
    end_process()
}

impl Conn {
    /// Starts the reader thread; returns the connection and the inbox of
    /// requests and notifications from the manager.
    pub fn start() -> (Arc<Conn>, Receiver<Incoming>) {
        let conn = Arc::new(Conn {
            out: Mutex::new(io::stdout()),
            next_id: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            flood: Mutex::new(None),
            closed: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel();
        let reader = Arc::clone(&conn);
        thread::Builder::new()
            .name("stdin-reader".into())
            .spawn(move || reader.read_loop(&tx))
            .unwrap_or_else(|e| {
                note!("cannot start the reader thread: {e}");
                std::process::exit(1)
            });
        (conn, rx)
    }

    /// Writes one line (a `\n` is added) and flushes.
    pub fn write_line(&self, line: &str) {
        let mut out = lock(&self.out);
        let res = out
            .write_all(line.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        if let Err(e) = res {
            drop(out);
            exit_channel_closed(&format!("stdout closed ({e})"));
        }
    }

    fn write_value(&self, msg: &Value) {
        self.write_line(&msg.to_string());
    }

    /// Sends a request and waits for the manager's response to it.
    pub fn request(&self, method: &str, params: Value) -> Reply {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        lock(&self.waiting).insert(id, tx);
        // After EOF no answer can come: the reader dropped the waiters it had
        // (so `recv` fails), and this check catches a request inserted after that.
        if self.closed.load(Ordering::SeqCst) {
            exit_closed();
        }
        self.write_value(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        rx.recv().unwrap_or_else(|_| exit_closed())
    }

    /// Answers a request of the manager.
    pub fn respond(&self, id: &Value, result: Value) {
        self.write_value(&json!({"jsonrpc": "2.0", "id": id, "result": result}));
    }

    /// Answers a request of the manager with an error.
    pub fn respond_error(&self, id: &Value, code: i64, message: &str) {
        self.write_value(&json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": code, "message": message},
        }));
    }

    /// Sends `n` `progress` requests `{item, value: 1..=n}` without waiting for
    /// any reply, then waits until all replies arrived (or none came for 30 s).
    /// Returns the number of replies (errors included).
    ///
    /// Built for throughput: ids are one block, replies are counted by the
    /// reader without a channel each, and lines are formatted into one reused
    /// `String` and written through a 64 KiB `BufWriter`.
    pub fn flood(&self, item: &str, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let first = self.next_id.fetch_add(n, Ordering::Relaxed);
        let (done_tx, done_rx) = mpsc::channel();
        *lock(&self.flood) = Some(FloodWindow {
            first,
            end: first + n,
            replies: 0,
            done: done_tx,
        });
        let item_json = Value::from(item).to_string();
        let res = {
            let mut out = lock(&self.out);
            let mut w = BufWriter::with_capacity(64 * 1024, &mut *out);
            let mut line = String::with_capacity(128);
            let mut res = Ok(());
            for k in 0..n {
                line.clear();
                // Writing to a String cannot fail.
                let _ = writeln!(
                    line,
                    r#"{{"jsonrpc":"2.0","id":{},"method":"progress","params":{{"item":{},"value":{}}}}}"#,
                    first + k,
                    item_json,
                    k + 1
                );
                res = w.write_all(line.as_bytes());
                if res.is_err() {
                    break;
                }
            }
            res.and_then(|()| w.flush())
        };
        if let Err(e) = res {
            exit_channel_closed(&format!("stdout closed ({e})"));
        }
        // Wait for every reply; give up after 30 s without a new one.
        let (mut seen, mut last_change) = (0, Instant::now());
        while let Err(mpsc::RecvTimeoutError::Timeout) =
            done_rx.recv_timeout(Duration::from_secs(1))
        {
            let got = lock(&self.flood).as_ref().map_or(0, |f| f.replies);
            if got != seen {
                (seen, last_change) = (got, Instant::now());
            } else if last_change.elapsed() >= Duration::from_secs(30) {
                note!("flood: no reply for 30 s, {got} of {n} so far");
                break;
            }
        }
        if self.closed.load(Ordering::SeqCst) {
            exit_closed();
        }
        lock(&self.flood).take().map_or(n, |f| f.replies)
    }

    fn read_loop(&self, inbox: &Sender<Incoming>) {
        let mut stdin = io::stdin().lock();
        let mut buf = Vec::with_capacity(4096);
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf) {
                Ok(0) => self.close(inbox, "stdin closed"),
                Ok(_) => {}
                Err(e) => self.close(inbox, &format!("stdin error ({e})")),
            }
            let line = buf.trim_ascii();
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Value>(line) {
                Ok(msg) => self.dispatch(msg, inbox),
                Err(e) => note!("bad line from the manager ({e})"),
            }
        }
    }

    /// EOF or `shutdown`: wake every waiter, let the main thread answer what it
    /// already has, and end the process after [`CLOSE_GRACE`] at the latest.
    fn close(&self, inbox: &Sender<Incoming>, why: &str) -> ! {
        note!("{why}; exiting");
        self.closed.store(true, Ordering::SeqCst);
        lock(&self.waiting).clear();
        lock(&self.flood).take();
        let _ = inbox.send(Incoming::Closed);
        thread::sleep(CLOSE_GRACE);
        end_process()
    }

    fn dispatch(&self, mut msg: Value, inbox: &Sender<Incoming>) {
        let Some(obj) = msg.as_object_mut() else {
            note!("unexpected message from the manager: {msg}");
            return;
        };
        if let Some(method) = obj.get("method").and_then(Value::as_str).map(str::to_owned) {
            let params = obj.remove("params").unwrap_or(Value::Null);
            let incoming = match obj.remove("id") {
                Some(id) => Incoming::Request { id, method, params },
                None => {
                    if method == "shutdown" {
                        self.close(inbox, "got shutdown");
                    }
                    if method == "setItemStatus" {
                        // Logged on arrival, whatever the main thread is doing.
                        let field = |k: &str| params.get(k).and_then(Value::as_str).unwrap_or("?");
                        note!("got setItemStatus {} {}", field("item"), field("status"));
                    }
                    Incoming::Notification { method, params }
                }
            };
            // If the main thread is gone the process is ending anyway.
            let _ = inbox.send(incoming);
            return;
        }
        let Some(id) = obj.get("id").and_then(Value::as_u64) else {
            note!("unexpected message from the manager: {msg}");
            return;
        };
        let reply = match obj.remove("error") {
            Some(err) => Err(RpcError {
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            }),
            None => Ok(obj.remove("result").unwrap_or(Value::Null)),
        };
        if let Some(waiter) = lock(&self.waiting).remove(&id) {
            let _ = waiter.send(reply);
            return;
        }
        let mut flood = lock(&self.flood);
        if let Some(f) = flood.as_mut().filter(|f| (f.first..f.end).contains(&id)) {
            f.replies += 1;
            if f.replies == f.end - f.first {
                let _ = f.done.send(());
            }
            return;
        }
        drop(flood);
        note!("response to an unknown request id {id}");
    }
}
