//! The manager's side of the protocol: [`ProcessHandler`], a
//! [`Handler`] implemented over a child process.
//!
//! One child per handler instance, started without a shell, in a process group
//! of its own. Four tasks serve it:
//!
//! - the *writer* writes queued lines to stdin and batches them (module
//!   `framing`); only the cancel path and the reader's `progress` answers
//!   write directly, and only when nothing is queued ahead of them;
//! - the *reader* reads stdout line by line, resolves responses and answers the
//!   handler's requests (module `reader`); its `progress` answers collect in
//!   the stdin buffer while lines keep coming and are flushed before it waits;
//! - the *stderr drain* turns stderr lines into information log entries;
//! - the *lifecycle* task owns the [`Child`], notices its end (exit or a closed
//!   stdout, whichever comes first, since a grandchild may hold the pipes) and
//!   then fails every outstanding and future request at once.
//!
//! No timeouts are enforced here beyond `shutdown`'s: the engine bounds every
//! call with the silence timeout and the grace period, drops the pending
//! future and calls [`Handler::terminate`]. Dropping any future of this module
//! leaves nothing behind but a forgotten request id.

mod framing;
mod reader;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::value::RawValue;
use syncmgr_core::{
    Cause, ConflictResolution, Handler, HandlerCallback, HandlerError, HandlerInfo,
    InitializeParams, ItemEnumeration, ItemStatus, LogLevel, Participation, PropertiesOutcome,
    ShowErrorAnswer,
};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use self::framing::{Outbox, Outgoing, StderrLines};
use self::reader::{MAX_IN_FLIGHT, Reader, serde_message};
use crate::wire::{
    self, EnumItemsResult, HandlerInfoResult, InitializeResult, PrepareForSyncParams,
    SetItemStatusParams, ShowErrorParams, ShowErrorResult, ShowPropertiesParams,
    ShowPropertiesResult, method,
};

/// The `setItemStatus skipped` notification for `item`.
fn skip_line(item: &str) -> Option<String> {
    let params = SetItemStatusParams {
        item: Cow::Borrowed(item),
        status: ItemStatus::Skipped,
    };
    wire::encode_notification(method::SET_ITEM_STATUS, &params)
        .map_err(|e| tracing::error!(error = %e, "cannot encode setItemStatus"))
        .ok()
}

/// Removes the cancel hook when the forwarding call ends, however it ends.
struct Unhook<'a>(&'a HandlerCallback);

impl Drop for Unhook<'_> {
    fn drop(&mut self) {
        self.0.set_cancel_hook(None);
    }
}

/// How long `shutdown` waits for the child to exit before killing its group.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Once the child exited or closed stdout, how long the other end of its life
/// may take to show: its last lines (final answers, a traceback on stderr) are
/// still in the pipes.
const DRAIN: Duration = Duration::from_millis(200);

/// How many of the last stderr lines an exit error quotes.
const STDERR_TAIL: usize = 3;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data behind these locks; a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a response carries to the request waiting for it.
type Reply = Result<Box<RawValue>, HandlerError>;

/// State shared by the handle and its tasks.
#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    stderr_tail: Mutex<VecDeque<String>>,
    /// How the process ended, once it has (`None` inside: unknown).
    exit: Mutex<Option<Option<ExitStatus>>>,
    /// The manager killed the group (terminate, drop, a shutdown ignored):
    /// its exit status is ours, not the handler's.
    killed: std::sync::atomic::AtomicBool,
}

/// The manager's outstanding requests. `dead` lives under the same lock so a
/// request cannot register after the death sweep and then wait forever.
#[derive(Debug, Default)]
struct Pending {
    next_id: u64,
    waiting: HashMap<u64, oneshot::Sender<Reply>>,
    dead: Option<HandlerError>,
}

/// What became of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Handed to the waiting request.
    Delivered,
    /// An id we used, whose request was abandoned (its future dropped).
    Late,
    /// An id we never used.
    Unknown,
}

impl Shared {
    fn register(&self) -> Result<(u64, oneshot::Receiver<Reply>), HandlerError> {
        let mut pending = lock(&self.pending);
        if let Some(dead) = &pending.dead {
            return Err(dead.clone());
        }
        pending.next_id += 1;
        let id = pending.next_id;
        let (tx, rx) = oneshot::channel();
        pending.waiting.insert(id, tx);
        Ok((id, rx))
    }

    fn resolve(&self, id: u64, reply: Reply) -> Delivery {
        let mut pending = lock(&self.pending);
        match pending.waiting.remove(&id) {
            Some(tx) => {
                let _ = tx.send(reply);
                Delivery::Delivered
            }
            None if id >= 1 && id <= pending.next_id => Delivery::Late,
            None => Delivery::Unknown,
        }
    }

    fn forget(&self, id: u64) {
        lock(&self.pending).waiting.remove(&id);
    }

    /// Fails every outstanding request, and every later one, with `error`.
    fn die(&self, error: HandlerError) {
        let mut pending = lock(&self.pending);
        let error = pending.dead.get_or_insert(error).clone();
        for (_, tx) in pending.waiting.drain() {
            let _ = tx.send(Err(error.clone()));
        }
    }

    fn dead(&self) -> Option<HandlerError> {
        lock(&self.pending).dead.clone()
    }

    fn keep_stderr(&self, line: &str) {
        let mut tail = lock(&self.stderr_tail);
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(wire::excerpt(line).into_owned());
    }

    /// `"; last stderr: a | b"`, or nothing.
    fn stderr_suffix(&self) -> String {
        let tail = lock(&self.stderr_tail);
        if tail.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
        format!("; last stderr: {}", lines.join(" | "))
    }
}

/// A request on its way: its answer, or the handler's end. Dropping it
/// forgets the request (a late answer is then ignored).
#[derive(Debug)]
struct PendingRequest {
    id: u64,
    rx: oneshot::Receiver<Reply>,
    shared: Arc<Shared>,
}

impl PendingRequest {
    async fn wait(&mut self) -> Reply {
        match (&mut self.rx).await {
            Ok(reply) => reply,
            Err(_) => Err(self.shared.dead().unwrap_or_else(|| {
                HandlerError::Protocol("the connection to the handler was lost".to_owned())
            })),
        }
    }
}

impl Drop for PendingRequest {
    fn drop(&mut self) {
        self.shared.forget(self.id);
    }
}

/// A sync handler in a child process, speaking the protocol on its stdin and
/// stdout.
///
/// Created with [`ProcessHandler::spawn`] inside a tokio runtime. Killed
/// (with its whole process group) by [`Handler::terminate`] and on drop.
#[derive(Debug)]
pub struct ProcessHandler {
    program: String,
    /// The child's pid, which is also its process group id.
    pid: Option<u32>,
    out: Outbox,
    shared: Arc<Shared>,
    /// The callback the reader and the stderr drain report through.
    callbacks: watch::Sender<Option<HandlerCallback>>,
    /// The one from `set_callback`, in effect outside prepare/synchronize.
    base: Option<HandlerCallback>,
    /// Becomes `true` once the child has been reaped.
    exited: watch::Receiver<bool>,
    tasks: Vec<AbortHandle>,
}

impl ProcessHandler {
    /// Starts `argv[0]` with the rest of `argv` as its arguments (no shell),
    /// in `cwd` if given, with `envs` added to the inherited environment.
    ///
    /// Must be called inside a tokio runtime (the pipes are served by tasks);
    /// elsewhere it fails with [`HandlerError::Spawn`].
    pub fn spawn(
        argv: &[String],
        cwd: Option<&Path>,
        envs: &[(String, String)],
    ) -> Result<Self, HandlerError> {
        if tokio::runtime::Handle::try_current().is_err() {
            // tokio would panic; a caller's mistake is not worth a crash.
            return Err(HandlerError::Spawn(
                "a handler must be started inside a tokio runtime".to_owned(),
            ));
        }
        let Some((program, args)) = argv.split_first() else {
            return Err(HandlerError::Spawn(
                "the handler's command line is empty".to_owned(),
            ));
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = cwd {
            command.current_dir(dir);
        }
        // Its own group, so that terminating it also ends whatever it started.
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| HandlerError::Spawn(format!("{program}: {e}")))?;
        let pid = child.id();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(HandlerError::Spawn(format!("{program}: no pipes")));
        };
        tracing::debug!(program = %program, pid, "started handler");

        let shared = Arc::new(Shared::default());
        let (callbacks, callbacks_rx) = watch::channel(None);
        let (exited_tx, exited) = watch::channel(false);
        let (stdout_done_tx, stdout_done) = oneshot::channel();
        let (stderr_done_tx, stderr_done) = oneshot::channel();

        let (out, writer) = Outbox::start(stdin);
        let reader = Reader {
            shared: Arc::clone(&shared),
            out: out.clone(),
            callbacks: callbacks_rx.clone(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            unflushed: std::sync::atomic::AtomicBool::new(false),
        };
        let reader = tokio::spawn(async move {
            reader.run(stdout).await;
            let _ = stdout_done_tx.send(());
        });
        let drain = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                drain_stderr(stderr, callbacks_rx, &shared).await;
                let _ = stderr_done_tx.send(());
            }
        });
        tokio::spawn(lifecycle(
            child,
            Arc::clone(&shared),
            stdout_done,
            stderr_done,
            exited_tx,
        ));
        Ok(ProcessHandler {
            program: program.clone(),
            pid,
            out,
            shared,
            callbacks,
            base: None,
            exited,
            tasks: vec![
                writer.abort_handle(),
                reader.abort_handle(),
                drain.abort_handle(),
            ],
        })
    }

    /// The child's process id (also its process group id), while known.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Sends a request and registers for its answer.
    async fn send_request<P>(
        &self,
        method: &'static str,
        params: &P,
    ) -> Result<PendingRequest, HandlerError>
    where
        P: Serialize + Sync + ?Sized,
    {
        let (id, rx) = self.shared.register()?;
        let request = PendingRequest {
            id,
            rx,
            shared: Arc::clone(&self.shared),
        };
        let line = wire::encode_request(&id, method, params)
            .map_err(|e| HandlerError::Protocol(format!("cannot encode {method}: {e}")))?;
        tracing::trace!(method, id, "request to the handler");
        // A closed writer means the handler is ending; the lifecycle task
        // then fails the request with the reason.
        self.out.send(Outgoing::Line(line.into_bytes())).await;
        Ok(request)
    }

    async fn call<P, R>(&self, method: &'static str, params: &P) -> Result<R, HandlerError>
    where
        P: Serialize + Sync + ?Sized,
        R: DeserializeOwned,
    {
        let mut request = self.send_request(method, params).await?;
        let raw = request.wait().await?;
        decode_result(method, &raw)
    }

    /// [`call`](Self::call), forwarding cancels as `setItemStatus` while it
    /// waits (once at the start, then on every cancel signal).
    async fn call_forwarding_cancels<P, R>(
        &self,
        method: &'static str,
        params: &P,
        cb: &HandlerCallback,
    ) -> Result<R, HandlerError>
    where
        P: Serialize + Sync + ?Sized,
        R: DeserializeOwned,
    {
        let mut cancels = cb.cancel_signal();
        let mut request = self.send_request(method, params).await?;
        self.forward_skips(cb).await;
        // The fast path: write `setItemStatus` from the cancel call itself,
        // saving the wakeup of this task (the watch below stays as the
        // fallback, for cancels from outside a runtime).
        let hook_cb = cb.clone();
        let out = self.out.clone();
        cb.set_cancel_hook(Some(Arc::new(move || {
            if tokio::runtime::Handle::try_current().is_err() {
                return;
            }
            for item in hook_cb.take_skip_requests() {
                if let Some(line) = skip_line(&item) {
                    out.send_now(line.into_bytes());
                    tracing::debug!(item, "forwarded a cancel as setItemStatus skipped");
                }
            }
        })));
        let _unhook = Unhook(cb);
        let mut watching = true;
        let raw = {
            let answer = request.wait();
            tokio::pin!(answer);
            loop {
                tokio::select! {
                    biased;
                    reply = &mut answer => break reply?,
                    changed = cancels.changed(), if watching => match changed {
                        Ok(()) => self.forward_skips(cb).await,
                        // The session is gone; nothing more to forward.
                        Err(_) => watching = false,
                    },
                }
            }
        };
        decode_result(method, &raw)
    }

    /// Sends `setItemStatus skipped` for every item cancelled since last time.
    async fn forward_skips(&self, cb: &HandlerCallback) {
        for item in cb.take_skip_requests() {
            if let Some(line) = skip_line(&item) {
                self.out.send_urgent(line.into_bytes()).await;
                tracing::debug!(item, "forwarded a cancel as setItemStatus skipped");
            }
        }
    }

    fn use_callback(&self, cb: Option<&HandlerCallback>) {
        self.callbacks.send_replace(cb.cloned());
    }

    /// SIGKILL to the child's whole process group. Never blocks.
    fn kill_group(&self) {
        self.shared
            .killed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(pgid) = self.pid {
            match syncmgr_sys::signal_group(pgid, syncmgr_sys::Signal::Kill) {
                Ok(()) => {
                    tracing::debug!(program = %self.program, pgid, "killed the handler's process group");
                }
                Err(e) => tracing::debug!(program = %self.program, pgid, error = %e, "kill failed"),
            }
        }
    }
}

fn decode_result<R: DeserializeOwned>(method: &str, raw: &RawValue) -> Result<R, HandlerError> {
    serde_json::from_str(raw.get()).map_err(|e| {
        HandlerError::Protocol(format!("malformed {method} result: {}", serde_message(&e)))
    })
}

#[async_trait]
impl Handler for ProcessHandler {
    fn set_callback(&mut self, callback: HandlerCallback) {
        self.use_callback(Some(&callback));
        self.base = Some(callback);
    }

    async fn initialize(
        &mut self,
        params: &InitializeParams,
    ) -> Result<Participation, HandlerError> {
        let result: InitializeResult = self
            .call(method::INITIALIZE, &wire::InitializeParams::new(params))
            .await?;
        Ok(if result.participate {
            Participation::Participate
        } else {
            Participation::Decline
        })
    }

    async fn handler_info(&mut self) -> Result<HandlerInfo, HandlerError> {
        let result: HandlerInfoResult =
            self.call(method::GET_HANDLER_INFO, &wire::Empty {}).await?;
        Ok(result.into())
    }

    async fn enum_items(&mut self) -> Result<ItemEnumeration, HandlerError> {
        let result: EnumItemsResult = self.call(method::ENUM_ITEMS, &wire::Empty {}).await?;
        Ok(result.into())
    }

    async fn show_properties(
        &mut self,
        item: Option<&str>,
    ) -> Result<PropertiesOutcome, HandlerError> {
        let params = ShowPropertiesParams {
            item: item.map(Cow::Borrowed),
        };
        let result: ShowPropertiesResult = self.call(method::SHOW_PROPERTIES, &params).await?;
        Ok(result.outcome)
    }

    async fn prepare_for_sync(
        &mut self,
        items: &[String],
        callback: &HandlerCallback,
    ) -> Result<(), HandlerError> {
        self.use_callback(Some(callback));
        let params = PrepareForSyncParams {
            items: Cow::Borrowed(items),
        };
        let result: Result<IgnoredAny, _> = self
            .call_forwarding_cancels(method::PREPARE_FOR_SYNC, &params, callback)
            .await;
        if result.is_err() {
            self.use_callback(self.base.as_ref());
        }
        result.map(drop)
    }

    async fn synchronize(&mut self, callback: &HandlerCallback) -> Result<(), HandlerError> {
        self.use_callback(Some(callback));
        let result: Result<IgnoredAny, _> = self
            .call_forwarding_cancels(method::SYNCHRONIZE, &wire::Empty {}, callback)
            .await;
        self.use_callback(self.base.as_ref());
        result.map(drop)
    }

    async fn show_error(
        &mut self,
        error_id: &str,
        callback: &HandlerCallback,
    ) -> Result<ShowErrorAnswer, HandlerError> {
        self.use_callback(Some(callback));
        let params = ShowErrorParams {
            error_id: Cow::Borrowed(error_id),
        };
        let result: ShowErrorResult = self.call(method::SHOW_ERROR, &params).await?;
        Ok(ShowErrorAnswer {
            retry: result.retry,
            confirm: result.confirm,
        })
    }

    async fn resolve_conflict(
        &mut self,
        resolution: &ConflictResolution,
        callback: &HandlerCallback,
    ) -> Result<(), HandlerError> {
        self.use_callback(Some(callback));
        let params = wire::ResolveConflictParams::from(resolution);
        let result: Result<wire::Empty, HandlerError> =
            self.call(method::RESOLVE_CONFLICT, &params).await;
        self.use_callback(self.base.as_ref());
        result.map(drop)
    }

    async fn shutdown(&mut self) {
        let polite = async {
            if let Ok(line) = wire::encode_notification(method::SHUTDOWN, &wire::Empty {}) {
                self.out.send(Outgoing::Line(line.into_bytes())).await;
            }
            self.out.send(Outgoing::Close).await;
            let _ = self.exited.wait_for(|&exited| exited).await;
        };
        // Protocol rule: exit with status 0 within the grace period after
        // `shutdown`. A handler that does not is told about (and the
        // conformance checker fails it), then ended.
        let cb = self.callbacks.borrow().clone();
        // A process that ended before `shutdown` was reported then.
        let ended_before = lock(&self.shared.exit).is_some()
            || self.shared.killed.load(std::sync::atomic::Ordering::SeqCst);
        let unclean = if tokio::time::timeout(SHUTDOWN_WAIT, polite).await.is_err() {
            tracing::debug!(program = %self.program, "the handler did not exit after shutdown");
            self.kill_group();
            Some(format!(
                "the handler did not exit within {SHUTDOWN_WAIT:?} of shutdown and was killed"
            ))
        } else {
            match *lock(&self.shared.exit) {
                Some(Some(status)) if !status.success() => Some(format!(
                    "the handler ended with {} after shutdown (expected exit status 0)",
                    describe_status(status)
                )),
                _ => None,
            }
        };
        if let (Some(text), Some(cb), false) = (unclean, cb, ended_before) {
            cb.report(None, LogLevel::Warning, Cause::UncleanExit, text);
        }
        // Let go of the session.
        self.use_callback(None);
    }

    fn terminate(&mut self) {
        self.kill_group();
    }
}

impl Drop for ProcessHandler {
    fn drop(&mut self) {
        self.kill_group();
        // The reader and the drain hold the session's callback; a grandchild
        // that escaped the group could keep their pipes open forever.
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Turns stderr lines into information entries (and debug logs), keeping the
/// last few for an exit error.
async fn drain_stderr(
    stderr: ChildStderr,
    callbacks: watch::Receiver<Option<HandlerCallback>>,
    shared: &Shared,
) {
    let mut lines = FramedRead::new(stderr, StderrLines::default());
    while let Some(Ok(line)) = lines.next().await {
        if line.trim().is_empty() {
            continue;
        }
        tracing::debug!("handler stderr: {line}");
        shared.keep_stderr(&line);
        let cb = callbacks.borrow().clone();
        if let Some(cb) = cb {
            cb.handler_output(&line);
        }
    }
}

/// Owns the child: notices its end, fails what waits on it, reaps it.
async fn lifecycle(
    mut child: Child,
    shared: Arc<Shared>,
    mut stdout_done: oneshot::Receiver<()>,
    mut stderr_done: oneshot::Receiver<()>,
    exited: watch::Sender<bool>,
) {
    let mut status: Option<io::Result<ExitStatus>> = None;
    let mut stdout_closed = false;
    tokio::select! {
        s = child.wait() => status = Some(s),
        _ = &mut stdout_done => stdout_closed = true,
    }
    // Whichever came first, the rest usually follows at once; until then the
    // pipes may still hold the child's last answers and its last words.
    let deadline = Instant::now() + DRAIN;
    if status.is_none()
        && let Ok(s) = tokio::time::timeout_at(deadline, child.wait()).await
    {
        status = Some(s);
    }
    if !stdout_closed {
        let _ = tokio::time::timeout_at(deadline, &mut stdout_done).await;
    }
    let _ = tokio::time::timeout_at(deadline, &mut stderr_done).await;

    let tail = shared.stderr_suffix();
    let error = match &status {
        Some(Ok(s)) => HandlerError::Exited(format!("{}{tail}", describe_status(*s))),
        Some(Err(e)) => HandlerError::Exited(format!("exit status unknown: {e}{tail}")),
        None => HandlerError::Protocol(format!(
            "the handler closed its standard output but is still running{tail}"
        )),
    };
    tracing::debug!(%error, "handler ended");
    *lock(&shared.exit) = Some(status.as_ref().and_then(|s| s.as_ref().ok()).copied());
    shared.die(error);
    if status.is_none() {
        // Reap it once it goes (terminate, shutdown or drop kill it).
        let _ = child.wait().await;
    }
    exited.send_replace(true);
}

fn describe_status(status: ExitStatus) -> String {
    syncmgr_sys::describe_exit(status)
}
