//! Running the prepared items: one process group per item, both output
//! streams read and parsed, cancels escalated from SIGINT to SIGKILL, and the
//! group never left behind.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use syncmgr_core::model::MAX_TEXT_LEN;
use syncmgr_core::{
    HandlerCallback, ItemStatus, LogLevel, LogRequest, ProgressReply, ProgressUpdate,
};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::{Instant, MissedTickBehavior};

use super::config::{CommandConfig, CommandItem, duration_text};
use super::parsers::{Line, LineSplitter, ProgressParser, clean_line};
use super::words::join_words;

/// How many lines of one run's output become results-log entries; past it,
/// one last entry says how many more there were.
pub const STDERR_LOG_BUDGET: u32 = 100;

/// How often a running item tells the engine the handler is alive and checks
/// for a cancel it was not signalled about.
const HEARTBEAT: Duration = Duration::from_millis(250);

/// Once the program exited, how long whatever it left behind may keep the
/// pipes open before the rest of its group is killed.
const DRAIN: Duration = Duration::from_millis(500);

/// Longest log entry made from one line of output, in bytes.
const LOG_LINE_MAX: usize = 1024;

/// The bytes read from a pipe at once.
const READ_CHUNK: usize = 8192;

/// The items of one `synchronize`, run one after another.
pub(super) struct Batch<'a> {
    cb: &'a HandlerCallback,
    config: &'a CommandConfig,
    /// Indices into `config.items`, in run order.
    order: &'a [usize],
    /// Per position in `order`: the item has its final status.
    ended: Vec<bool>,
    /// The position running now.
    current: Option<usize>,
    running: &'a AtomicI32,
}

impl<'a> Batch<'a> {
    pub(super) fn new(
        cb: &'a HandlerCallback,
        config: &'a CommandConfig,
        order: &'a [usize],
        running: &'a AtomicI32,
    ) -> Self {
        Batch {
            cb,
            config,
            order,
            ended: vec![false; order.len()],
            current: None,
            running,
        }
    }

    pub(super) async fn run(mut self) {
        for pos in 0..self.order.len() {
            self.skip_cancelled();
            if self.ended[pos] {
                continue;
            }
            self.current = Some(pos);
            let item = &self.config.items[self.order[pos]];
            self.run_item(item).await;
            self.ended[pos] = true;
            self.current = None;
        }
    }

    /// Ends every cancelled item that has not started: `skipped`, at once,
    /// since the engine expects a cancel honoured within its grace period.
    fn skip_cancelled(&mut self) {
        for (pos, &index) in self.order.iter().enumerate() {
            if self.ended[pos] || self.current == Some(pos) {
                continue;
            }
            let id = &self.config.items[index].id;
            if self.cb.is_cancelled(id) {
                let _ = self.cb.progress(
                    id,
                    &ProgressUpdate {
                        status: Some(ItemStatus::Skipped),
                        text: Some("cancelled before it started"),
                        ..ProgressUpdate::default()
                    },
                );
                self.ended[pos] = true;
            }
        }
    }

    async fn run_item(&mut self, item: &CommandItem) {
        let cb = self.cb;
        let mut out = Output::new(cb, item);
        let starting = excerpt(&format!("running {}", join_words(&item.argv)), MAX_TEXT_LEN);
        let _ = cb.progress(
            &item.id,
            &ProgressUpdate {
                status: Some(ItemStatus::UpdatingIndeterminate),
                text: Some(&starting),
                ..ProgressUpdate::default()
            },
        );

        let mut child = match spawn(item) {
            Ok(child) => child,
            Err(e) => {
                let text = format!("could not start {}: {e}", item.argv[0]);
                out.finish(ItemStatus::Failed, &text, Some(LogLevel::Error))
                    .await;
                return;
            }
        };
        let mut group = Group::new(child.id(), self.running);
        tracing::debug!(item = %item.id, pgid = group.pgid, "started command");

        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let (mut out_split, mut err_split) = (LineSplitter::default(), LineSplitter::default());
        let (mut out_buf, mut err_buf) = (vec![0u8; READ_CHUNK], vec![0u8; READ_CHUNK]);
        let (mut out_lines, mut err_lines) = (Vec::new(), Vec::new());
        let mut status: Option<io::Result<ExitStatus>> = None;
        let mut drain_until: Option<Instant> = None;
        let mut stop = Escalation::default();
        let time_limit = item.timeout.map(|t| Instant::now() + t);
        let mut timed_out = false;
        let mut cancels = cb.cancel_signal();
        let mut watching = true;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // A stand-in for "no deadline" in the disabled branches below.
        let never = Instant::now() + Duration::from_secs(365 * 24 * 3600);

        loop {
            if status.is_some() && stdout.is_none() && stderr.is_none() {
                break;
            }
            let mut cancel = false;
            tokio::select! {
                biased;
                changed = cancels.changed(), if watching => {
                    // The session is gone when the sender is; polling still works.
                    watching = changed.is_ok();
                    self.skip_cancelled();
                    cancel = cb.is_cancelled(&item.id);
                }
                _ = heartbeat.tick() => {
                    // A command that prints nothing for minutes is not a hung
                    // handler: its process is what the work is.
                    cb.touch();
                    self.skip_cancelled();
                    cancel = cb.is_cancelled(&item.id);
                }
                () = tokio::time::sleep_until(stop.deadline.unwrap_or(never)),
                    if stop.deadline.is_some() && status.is_none() =>
                {
                    stop.escalate(&group, &mut child, self.config);
                }
                () = tokio::time::sleep_until(time_limit.unwrap_or(never)),
                    if time_limit.is_some() && !timed_out && status.is_none() =>
                {
                    timed_out = true;
                    cancel = true;
                }
                s = child.wait(), if status.is_none() => {
                    group.reaped();
                    status = Some(s);
                    drain_until = Some(Instant::now() + DRAIN);
                }
                () = tokio::time::sleep_until(drain_until.unwrap_or(never)),
                    if drain_until.is_some() =>
                {
                    // The program is gone but something it started holds the
                    // pipes: the item is over, and so is its group.
                    group.kill_leftovers();
                    out_split.finish(&mut out_lines);
                    err_split.finish(&mut err_lines);
                    stdout = None;
                    stderr = None;
                }
                n = read_some(&mut stdout, &mut out_buf) => {
                    take(n, &mut stdout, &out_buf, &mut out_split, &mut out_lines);
                }
                n = read_some(&mut stderr, &mut err_buf) => {
                    take(n, &mut stderr, &err_buf, &mut err_split, &mut err_lines);
                }
            }
            for line in out_lines.drain(..) {
                cancel |= out.line(&line, false).await;
            }
            for line in err_lines.drain(..) {
                cancel |= out.line(&line, true).await;
            }
            if cancel && status.is_none() {
                stop.start(&group, &mut child, self.config);
            }
        }
        drop(group);

        let status = status.unwrap_or_else(|| Err(io::Error::other("never reaped")));
        let described = describe_status(&status);
        tracing::debug!(item = %item.id, status = %described, "command ended");
        let tail = out.stderr_tail();
        match stop.sent {
            Some(last) if timed_out => {
                let limit = item.timeout.map(duration_text::format).unwrap_or_default();
                let text = format!(
                    "{} timed out after {limit} and was stopped {}: {described}{tail}",
                    item.argv[0],
                    stop.how(last, self.config)
                );
                out.finish(ItemStatus::Failed, &text, Some(LogLevel::Error))
                    .await;
            }
            Some(last) => {
                let text = format!("stopped {}: {described}", stop.how(last, self.config));
                out.finish(ItemStatus::Stopped, &text, Some(LogLevel::Information))
                    .await;
            }
            None if status.as_ref().is_ok_and(ExitStatus::success) => {
                let text = out.summary().to_owned();
                out.finish(ItemStatus::Succeeded, &text, None).await;
            }
            None => {
                let text = format!("{} failed: {described}{tail}", item.argv[0]);
                out.finish(ItemStatus::Failed, &text, Some(LogLevel::Error))
                    .await;
            }
        }
    }
}

fn spawn(item: &CommandItem) -> io::Result<Child> {
    let (program, args) = item
        .argv
        .split_first()
        .ok_or_else(|| io::Error::other("empty argv"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(&item.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &item.cwd {
        command.current_dir(dir);
    }
    // Its own group: a cancel reaches whatever it started (ssh under rsync,
    // the shell's children), and a terminal's Ctrl-C reaches only the manager.
    #[cfg(unix)]
    command.process_group(0);
    command.spawn()
}

async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut Option<R>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match reader {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Feeds what a read returned to the splitter; closes the stream at its end.
fn take<R>(
    n: io::Result<usize>,
    reader: &mut Option<R>,
    buf: &[u8],
    splitter: &mut LineSplitter,
    lines: &mut Vec<String>,
) {
    match n {
        Ok(n) if n > 0 => splitter.feed(&buf[..n], lines),
        _ => {
            splitter.finish(lines);
            *reader = None;
        }
    }
}

/// One run's view of its output: the parser, the status text, the log.
struct Output<'a> {
    cb: &'a HandlerCallback,
    id: &'a str,
    parser: ProgressParser,
    /// The latest line worth showing from stdout, and from either stream
    /// (reused buffers): a success shows the tool's summary, which is on
    /// stdout when the tool has both (rsync, rclone), else its last words.
    last_stdout: String,
    last_text: String,
    /// The latest message from stderr, or problem from either stream.
    last_stderr: String,
    logged: u32,
    not_logged: u32,
}

impl<'a> Output<'a> {
    fn new(cb: &'a HandlerCallback, item: &'a CommandItem) -> Self {
        Output {
            cb,
            id: &item.id,
            parser: item.parser,
            last_stdout: String::new(),
            last_text: String::new(),
            last_stderr: String::new(),
            logged: 0,
            not_logged: 0,
        }
    }

    /// Handles one raw line; returns whether the reply asks to stop.
    async fn line(&mut self, raw: &str, from_stderr: bool) -> bool {
        let clean = clean_line(raw);
        if clean.is_empty() {
            return false;
        }
        let clean = excerpt(&clean, MAX_TEXT_LEN);
        let (update, keep) = match self.parser.classify(&clean) {
            Line::Progress { text, percent } => (
                ProgressUpdate {
                    text: Some(text),
                    status: percent.map(|_| ItemStatus::Updating),
                    value: percent.map(u64::from),
                    max: percent.map(|_| 100),
                },
                None,
            ),
            Line::Noise => return false,
            Line::Message(text) => (
                ProgressUpdate {
                    text: Some(text),
                    ..ProgressUpdate::default()
                },
                from_stderr.then(|| level_of(text)),
            ),
            Line::Problem(text) => (
                ProgressUpdate {
                    text: Some(text),
                    ..ProgressUpdate::default()
                },
                Some(LogLevel::Warning),
            ),
        };
        let text = update.text.unwrap_or_default();
        self.last_text.clear();
        self.last_text.push_str(text);
        if !from_stderr {
            self.last_stdout.clear();
            self.last_stdout.push_str(text);
        }
        let reply = self.cb.progress(self.id, &update);
        if let Some(level) = keep {
            self.last_stderr.clear();
            self.last_stderr.push_str(text);
            self.keep(level, text).await;
        }
        matches!(
            reply,
            Ok(ProgressReply::CancelItem | ProgressReply::CancelAll)
        )
    }

    /// A line for the results log, within the budget.
    async fn keep(&mut self, level: LogLevel, text: &str) {
        if self.logged >= STDERR_LOG_BUDGET {
            self.not_logged += 1;
            return;
        }
        self.logged += 1;
        self.log(level, excerpt(text, LOG_LINE_MAX)).await;
    }

    async fn log(&self, level: LogLevel, text: String) {
        // A refusal is already in the log against the handler.
        let _ = self
            .cb
            .log_error(LogRequest {
                level,
                text,
                error_id: None,
                item: Some(self.id.to_owned()),
                actionable: false,
            })
            .await;
    }

    /// What a succeeded item shows: see `last_stdout`.
    fn summary(&self) -> &str {
        [&self.last_stdout, &self.last_text]
            .into_iter()
            .find(|t| !t.is_empty())
            .map_or("done", String::as_str)
    }

    /// `"; last stderr line: ..."`, or nothing.
    fn stderr_tail(&self) -> String {
        if self.last_stderr.is_empty() {
            String::new()
        } else {
            format!(
                "; last stderr line: {}",
                excerpt(&self.last_stderr, LOG_LINE_MAX)
            )
        }
    }

    /// Reports the final status, after an entry saying why when `level` is set.
    async fn finish(&mut self, status: ItemStatus, text: &str, level: Option<LogLevel>) {
        if self.not_logged > 0 {
            let note = format!(
                "{} more lines of output were not kept (the limit is {STDERR_LOG_BUDGET} a run)",
                self.not_logged
            );
            self.log(LogLevel::Information, note).await;
        }
        let text = excerpt(text, MAX_TEXT_LEN);
        if let Some(level) = level {
            self.log(level, text.clone()).await;
        }
        let _ = self.cb.progress(
            self.id,
            &ProgressUpdate {
                status: Some(status),
                text: Some(&text),
                ..ProgressUpdate::default()
            },
        );
    }
}

/// `warning` for lines that look like a problem, `information` otherwise.
fn level_of(line: &str) -> LogLevel {
    let lower = line.to_ascii_lowercase();
    if ["error", "fatal", "warn", "fail", "denied"]
        .iter()
        .any(|w| lower.contains(w))
    {
        LogLevel::Warning
    } else {
        LogLevel::Information
    }
}

/// At most `max` bytes of `text`, cut at a character boundary, with `…` when cut.
fn excerpt(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max - '…'.len_utf8();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// The signals of a cancel, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Interrupt,
    Terminate,
    Kill,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
            Signal::Kill => "SIGKILL",
        }
    }
}

/// Where a cancel stands: the last signal sent and when the next one is due.
#[derive(Debug, Default)]
struct Escalation {
    sent: Option<Signal>,
    deadline: Option<Instant>,
}

impl Escalation {
    /// The first signal, once.
    fn start(&mut self, group: &Group<'_>, child: &mut Child, config: &CommandConfig) {
        if self.sent.is_none() {
            self.send(Signal::Interrupt, group, child, config);
        }
    }

    /// The next signal, when the last one's grace ran out.
    fn escalate(&mut self, group: &Group<'_>, child: &mut Child, config: &CommandConfig) {
        match self.sent {
            Some(Signal::Interrupt) => self.send(Signal::Terminate, group, child, config),
            Some(Signal::Terminate) => self.send(Signal::Kill, group, child, config),
            Some(Signal::Kill) | None => self.deadline = None,
        }
    }

    fn send(
        &mut self,
        signal: Signal,
        group: &Group<'_>,
        child: &mut Child,
        config: &CommandConfig,
    ) {
        tracing::debug!(
            pgid = group.pgid,
            signal = signal.name(),
            "stopping command"
        );
        group.signal(signal, child);
        self.sent = Some(signal);
        self.deadline = match signal {
            Signal::Interrupt => Some(Instant::now() + config.sigint_grace),
            Signal::Terminate => Some(Instant::now() + config.sigterm_grace),
            Signal::Kill => None,
        };
    }

    /// "after SIGINT", "with SIGKILL (it ignored SIGINT and SIGTERM for 4s)".
    fn how(&self, last: Signal, config: &CommandConfig) -> String {
        let int = duration_text::format(config.sigint_grace);
        match last {
            Signal::Interrupt => "after SIGINT".to_owned(),
            Signal::Terminate => format!("after SIGTERM (it ignored SIGINT for {int})"),
            Signal::Kill => format!(
                "with SIGKILL (it ignored SIGINT for {int} and SIGTERM for {})",
                duration_text::format(config.sigterm_grace)
            ),
        }
    }
}

/// The process group of the running command. Until the leader is reaped its
/// id cannot be reused, so signalling the group is safe; dropping this while
/// the leader lives (the engine gave up on the handler and dropped
/// `synchronize`) kills the whole group.
struct Group<'a> {
    pgid: i32,
    reaped: bool,
    running: &'a AtomicI32,
}

impl<'a> Group<'a> {
    fn new(pid: Option<u32>, running: &'a AtomicI32) -> Self {
        // 0 and 1 would address our own group and every process.
        let pgid = pid
            .and_then(|p| i32::try_from(p).ok())
            .filter(|&p| p > 1)
            .unwrap_or(0);
        running.store(pgid, Ordering::SeqCst);
        Group {
            pgid,
            reaped: false,
            running,
        }
    }

    fn signal(&self, signal: Signal, child: &mut Child) {
        if self.reaped {
            return;
        }
        #[cfg(unix)]
        {
            let _ = child;
            let number = match signal {
                Signal::Interrupt => syncmgr_sys::Signal::Interrupt,
                Signal::Terminate => syncmgr_sys::Signal::Terminate,
                Signal::Kill => syncmgr_sys::Signal::Kill,
            };
            kill_group(self.pgid, number);
        }
        #[cfg(not(unix))]
        {
            // No signals: every step of the escalation ends the program.
            let _ = signal;
            let _ = child.start_kill();
        }
    }

    /// The leader was reaped: its id may be reused from now on.
    fn reaped(&mut self) {
        self.reaped = true;
        self.running.store(0, Ordering::SeqCst);
    }

    /// Kills what is left of the group after the leader exited (processes
    /// still holding the pipes, so the group still exists and keeps its id).
    fn kill_leftovers(&self) {
        #[cfg(unix)]
        kill_group(self.pgid, syncmgr_sys::Signal::Kill);
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        if !self.reaped {
            #[cfg(unix)]
            kill_group(self.pgid, syncmgr_sys::Signal::Kill);
            self.running.store(0, Ordering::SeqCst);
        }
    }
}

/// SIGKILL to the running command's group, if there is one (the handler is
/// being ended or dropped).
pub(super) fn kill_running(running: &AtomicI32) {
    let pgid = running.swap(0, Ordering::SeqCst);
    #[cfg(unix)]
    kill_group(pgid, syncmgr_sys::Signal::Kill);
    #[cfg(not(unix))]
    let _ = pgid;
}

#[cfg(unix)]
fn kill_group(pgid: i32, signal: syncmgr_sys::Signal) {
    // 0 means "no command running"; the sys crate refuses 0 and 1 anyway.
    let Ok(pgid) = u32::try_from(pgid) else {
        return;
    };
    if pgid == 0 {
        return;
    }
    if let Err(e) = syncmgr_sys::signal_group(pgid, signal) {
        tracing::debug!(pgid, ?signal, error = %e, "kill failed");
    }
}

fn describe_status(status: &io::Result<ExitStatus>) -> String {
    let status = match status {
        Ok(s) => *s,
        Err(e) => return format!("exit status unknown ({e})"),
    };
    syncmgr_sys::describe_exit(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_cut_at_characters() {
        assert_eq!(excerpt("short", 10), "short");
        let cut = excerpt(&"é".repeat(10), 8);
        assert!(cut.len() <= 8, "{cut}");
        assert_eq!(cut, "éé…");
    }

    #[test]
    fn levels() {
        assert_eq!(
            level_of("rsync error: some files were not transferred"),
            LogLevel::Warning
        );
        assert_eq!(level_of("fatal: not a git repository"), LogLevel::Warning);
        assert_eq!(
            level_of("Permission denied (publickey)."),
            LogLevel::Warning
        );
        assert_eq!(level_of("Cloning into 'x'..."), LogLevel::Information);
    }

    #[test]
    fn escalation_is_described() {
        let config = CommandConfig {
            sigint_grace: Duration::from_millis(500),
            ..CommandConfig::default()
        };
        let e = Escalation::default();
        assert_eq!(e.how(Signal::Interrupt, &config), "after SIGINT");
        assert_eq!(
            e.how(Signal::Terminate, &config),
            "after SIGTERM (it ignored SIGINT for 500ms)"
        );
        assert_eq!(
            e.how(Signal::Kill, &config),
            "with SIGKILL (it ignored SIGINT for 500ms and SIGTERM for 2s)"
        );
    }
}
