//! The main loop: answers the manager's requests by calling the handler, and
//! runs `synchronize` item by item (or on several worker threads).

use std::collections::VecDeque;
use std::io::{self, BufReader, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use syncmgr_core::ItemStatus;
use syncmgr_protocol::wire::{self, error_code, method};

use crate::conn::{Conn, Inbound};
use crate::error::Error;
use crate::model::InitContext;
use crate::progress::{LogEntry, Manager, Progress};
use crate::util::{clip, lock, note, panic_message};
use crate::{SyncHandler, stdio};

/// How long the process may take to wind down after the manager closed the
/// channel before [`serve`] ends it.
pub const EXIT_GRACE: Duration = Duration::from_secs(3);

/// Serves `handler` on this process's stdin and stdout until the manager
/// sends `shutdown` or closes stdin; returns `Ok(())` then (return from
/// `main` right after).
///
/// What it does for the handler:
///
/// - **Framing**: reads and writes newline-delimited JSON-RPC 2.0; lines over
///   1 MiB are dropped; unknown methods are answered `-32601`; malformed
///   params `-32602`.
/// - **Pipelining**: reports from any number of threads are outstanding at
///   once; answers are routed to their callers in any order.
/// - **Cancellation**: `setItemStatus skipped` and the `action` of every
///   progress reply are applied at once: items not started yet are reported
///   `skipped`; the running ones see [`Progress::is_cancelled`] turn true
///   (and [`Progress::wait_cancelled`] return).
/// - **Statuses**: reports `updating` before and the final status after each
///   [`SyncHandler::sync_item`]; an `Err` or a panic becomes `failed` with an
///   error entry in the results log (`stopped` when the item was cancelled).
/// - **Shutdown**: `shutdown` or the end of stdin cancels whatever runs and
///   returns once the main loop is idle; if the handler's code does not stop
///   within [`EXIT_GRACE`] the process exits with status 0 anyway.
/// - **A clean channel**: the protocol keeps private copies of stdin and
///   stdout; descriptor 1 then writes to **stderr** and descriptor 0 reads
///   `/dev/null`. So `println!`, libraries and child processes cannot corrupt
///   the protocol; what they print becomes log lines of the session. (Do not
///   read stdin yourself.)
///
/// Errors: only when the channel cannot be set up or written while it is
/// still open.
pub fn serve<H: SyncHandler>(handler: H) -> Result<(), Error> {
    let (input, output) = stdio::take()?;
    run(handler, input, output, Some(EXIT_GRACE))
}

/// [`serve`] on any reader and writer instead of stdin and stdout (for tests,
/// or a handler reached over a socket). It does not touch the process's
/// descriptors and never exits the process.
pub fn serve_io<H, R, W>(handler: H, input: R, output: W) -> Result<(), Error>
where
    H: SyncHandler,
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    run(handler, Box::new(input), Box::new(output), None)
}

fn run<H: SyncHandler>(
    handler: H,
    input: Box<dyn Read + Send>,
    output: Box<dyn Write + Send>,
    exit_grace: Option<Duration>,
) -> Result<(), Error> {
    let conn = Conn::start(
        Box::new(BufReader::with_capacity(64 * 1024, input)),
        output,
        exit_grace,
    )?;
    let mut server = Server {
        handler,
        manager: Manager::new(Arc::clone(&conn)),
        conn: Arc::clone(&conn),
        ctx: InitContext::default(),
        prepared: Vec::new(),
    };
    let result = server.main_loop();
    conn.finish();
    result
}

struct Server<H> {
    handler: H,
    conn: Arc<Conn>,
    manager: Manager,
    ctx: InitContext,
    prepared: Vec<String>,
}

/// An answer to one request: a result, or a JSON-RPC error.
type Answer = Result<Box<RawValue>, (i64, String)>;

impl<H: SyncHandler> Server<H> {
    fn main_loop(&mut self) -> Result<(), Error> {
        while let Inbound::Request { id, method, params } = self.conn.next_request() {
            let answer = self.handle(&method, params.as_deref());
            let written = match answer {
                Ok(result) => self.conn.respond(&id, &result),
                Err((code, message)) => self.conn.respond_error(&id, code, &message),
            };
            if let Err(e) = written {
                // After the end of input nobody reads the answers any more.
                if self.conn.is_closed() || e.kind() == io::ErrorKind::BrokenPipe {
                    break;
                }
                return Err(Error::Io(e));
            }
        }
        Ok(())
    }

    fn handle(&mut self, name: &str, params: Option<&RawValue>) -> Answer {
        match name {
            method::INITIALIZE => {
                let p: wire::InitializeParams<'_> = decode(name, params)?;
                self.ctx = InitContext {
                    event: p.event,
                    may_bother_user: p.may_bother_user,
                    settings_only: p.settings_only,
                    cookie: p.cookie.map(|c| c.into_owned()),
                };
                let participate = guard(name, || self.handler.participate(&self.ctx))?;
                encode(&wire::InitializeResult { participate })
            }
            method::GET_HANDLER_INFO => {
                let info = guard(name, || self.handler.info())?;
                encode(&info.to_wire())
            }
            method::ENUM_ITEMS => {
                let items = guard(name, || self.handler.items(&self.ctx))?
                    .map_err(|e| (error_code::REFUSED, clip(e.to_string())))?;
                let complete = guard(name, || self.handler.items_complete())?;
                encode(&wire::EnumItemsResult {
                    items: items.iter().map(crate::Item::to_wire).collect(),
                    complete,
                })
            }
            method::SHOW_PROPERTIES => {
                let p: wire::ShowPropertiesParams<'_> = decode(name, params)?;
                let outcome = guard(name, || self.handler.show_properties(p.item.as_deref()))?;
                encode(&wire::ShowPropertiesResult { outcome })
            }
            method::PREPARE_FOR_SYNC => {
                let p: wire::PrepareForSyncParams<'_> = decode(name, params)?;
                self.prepared = p.items.into_owned();
                let (handler, items, manager) = (&mut self.handler, &self.prepared, &self.manager);
                guard(name, || handler.prepare(items, manager))?
                    .map_err(|e| (error_code::REFUSED, clip(e.to_string())))?;
                encode(&wire::Empty {})
            }
            method::SYNCHRONIZE => {
                let _: wire::Empty = decode(name, params)?;
                self.synchronize();
                // Every posted report answered first: its refusal is noted
                // while the round is still on.
                self.conn.wait_posted();
                encode(&wire::Empty {})
            }
            method::SHOW_ERROR => {
                let p: wire::ShowErrorParams<'_> = decode(name, params)?;
                let retry = guard(name, || self.handler.show_error(&p.error_id))?;
                encode(&wire::ShowErrorResult {
                    retry,
                    confirm: None,
                })
            }
            method::RESOLVE_CONFLICT => {
                let p: wire::ResolveConflictParams = decode(name, params)?;
                let resolution = syncmgr_core::ConflictResolution::try_from(p).map_err(|why| {
                    (
                        error_code::INVALID_PARAMS,
                        format!("invalid params for {name}: {why}"),
                    )
                })?;
                guard(name, || self.handler.resolve_conflict(&resolution))?
                    .map_err(|e| (error_code::REFUSED, clip(e.to_string())))?;
                encode(&wire::Empty {})
            }
            _ => Err((
                error_code::METHOD_NOT_FOUND,
                format!("method not found: {name}"),
            )),
        }
    }

    /// Runs every prepared item, on up to `max_parallel` threads.
    fn synchronize(&mut self) {
        let queue = Mutex::new(self.prepared.iter().cloned().collect::<VecDeque<_>>());
        let workers = self
            .handler
            .max_parallel()
            .clamp(1, self.prepared.len().max(1));
        let (handler, manager, queue) = (&self.handler, &self.manager, &queue);
        let work = move || {
            loop {
                // Not `while let`: its guard would hold the queue for the
                // whole item and serialize the workers.
                let next = lock(queue).pop_front();
                let Some(item) = next else { break };
                run_item(handler, manager, &item);
            }
        };
        thread::scope(|scope| {
            for n in 1..workers {
                let spawned = thread::Builder::new()
                    .name(format!("syncmgr-sdk-worker-{n}"))
                    .spawn_scoped(scope, work);
                if let Err(e) = spawned {
                    note(format_args!("cannot start a worker thread: {e}"));
                    break;
                }
            }
            work();
        });
    }
}

/// One item: `skipped` if cancelled before it started; otherwise `updating`,
/// the handler's work, and the final status.
fn run_item<H: SyncHandler>(handler: &H, manager: &Manager, item: &str) {
    let progress = Progress::new(item, manager.clone());
    if progress.is_cancelled() {
        progress.send_status(ItemStatus::Skipped, Some("skipped".to_owned()));
        return;
    }
    progress.send_status(ItemStatus::Updating, None);
    if progress.is_cancelled() {
        progress.send_status(ItemStatus::Stopped, Some("stopped".to_owned()));
        return;
    }
    let result = catch_unwind(AssertUnwindSafe(|| handler.sync_item(item, &progress)));
    if progress.terminal().is_some() {
        // The handler reported a final status itself.
        return;
    }
    let (status, text) = match result {
        Ok(Ok(outcome)) => outcome.into_report(),
        Ok(Err(e)) if e.is_cancelled() || progress.is_cancelled() => {
            (ItemStatus::Stopped, "stopped".to_owned())
        }
        Ok(Err(e)) => {
            let _ = progress.log_entry(LogEntry::from_error(&e, item));
            (ItemStatus::Failed, e.to_string())
        }
        Err(panic) => {
            let message = format!("the handler panicked: {}", panic_message(&*panic));
            let _ = progress.log_entry(LogEntry::error(message.clone()));
            (ItemStatus::Failed, message)
        }
    };
    progress.send_status(status, Some(text));
}

/// Decodes a request's params (absent = `{}`).
fn decode<'a, T: Deserialize<'a>>(
    name: &str,
    params: Option<&'a RawValue>,
) -> Result<T, (i64, String)> {
    serde_json::from_str(params.map_or("{}", RawValue::get)).map_err(|e| {
        (
            error_code::INVALID_PARAMS,
            format!("invalid params for {name}: {e}"),
        )
    })
}

fn encode<T: Serialize>(result: &T) -> Answer {
    serde_json::value::to_raw_value(result).map_err(|e| {
        (
            error_code::REFUSED,
            format!("cannot encode the result: {e}"),
        )
    })
}

/// Runs a handler method, turning a panic into an error answer.
fn guard<T>(name: &str, f: impl FnOnce() -> T) -> Result<T, (i64, String)> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        (
            error_code::REFUSED,
            clip(format!(
                "the handler panicked in {name}: {}",
                panic_message(&*panic)
            )),
        )
    })
}
