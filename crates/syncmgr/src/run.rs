//! Running a session from the command line (`sync`, `log show`): lock the
//! registrations, build the jobs, start the engine, listen on the control
//! socket, feed the display (on a thread of its own), persist, and turn the
//! outcome into an exit code.
//!
//! This task never waits for the display: events go into an
//! [`EventFeed`](syncmgr_core::EventFeed), which coalesces item changes when
//! the terminal does not keep up, so that handler I/O, timers and signals go
//! on whatever happens to stdout.

use std::io::{BufRead, IsTerminal};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use syncmgr_api as api;
use syncmgr_core::{
    CancelTarget, Confirm, EventFeed, FeedEvent, LogEntry, Popped, Selection, SyncEvent,
};
use syncmgr_manager::session::{self, SessionRequest, SessionRun};
use syncmgr_manager::{Home, client};
use syncmgr_store::{Registration, Store};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::exit_codes;

use crate::cli::{SessionTuning, SyncArgs};
use crate::display::Display;
use crate::error::usage;
use crate::output::{Stdout, is_broken_pipe};

/// What one session is to do.
#[derive(Debug)]
pub struct Plan {
    /// What was asked for (`sync`'s targets), for the daemon.
    targets: Vec<String>,
    jobs: Vec<(Registration, Selection)>,
    event: SyncEvent,
    may_bother_user: bool,
    cookie: Option<String>,
    tuning: SessionTuning,
    json: bool,
    /// `log show`: the entry acted on, and whether `--yes` was given.
    entry: Option<(LogEntry, bool)>,
    /// `conflicts resolve`: the decisions (the daemon plans them itself).
    decisions: Option<Vec<api::Decision>>,
}

/// `syncmgr sync`: works out the plan from the targets.
pub fn sync_plan(store: &Store, args: SyncArgs) -> anyhow::Result<Plan> {
    let event = syncmgr_manager::plan::sync_event(args.event.as_deref(), args.cookie.as_deref())?;
    let jobs = syncmgr_manager::plan::jobs(store, &args.targets, event)?;
    Ok(Plan {
        targets: args.targets,
        jobs,
        event,
        may_bother_user: event.may_bother_user_by_default(),
        cookie: args.cookie,
        tuning: args.tuning,
        json: args.json,
        entry: None,
        decisions: None,
    })
}

/// `syncmgr conflicts resolve`: the session that applies the decisions and
/// syncs what they resolve.
pub fn resolve_plan(
    store: &Store,
    decisions: Vec<api::Decision>,
    json: bool,
    tuning: SessionTuning,
) -> anyhow::Result<Plan> {
    let jobs = syncmgr_manager::plan::resolve_jobs(store, &decisions)?;
    Ok(Plan {
        targets: Vec::new(),
        jobs,
        event: SyncEvent::Manual,
        may_bother_user: true,
        cookie: None,
        tuning,
        json,
        entry: None,
        decisions: Some(decisions),
    })
}

/// `syncmgr log show ID`: the plan that asks the handler about an entry and
/// retries what it asks to.
pub fn show_error_plan(
    store: &Store,
    id: i64,
    json: bool,
    yes: bool,
    tuning: SessionTuning,
) -> anyhow::Result<Plan> {
    let (entry, job) = syncmgr_manager::plan::show_error_job(store, id)?;
    Ok(Plan {
        targets: Vec::new(),
        jobs: vec![job],
        event: SyncEvent::Manual,
        may_bother_user: true,
        cookie: None,
        tuning,
        json,
        entry: Some((entry, yes)),
        decisions: None,
    })
}

/// How the command answers a retry that its handler says needs the user's
/// yes (a guard that protected files): `--yes` agrees; on a terminal the
/// user is asked; otherwise nothing is retried and the command says how to
/// go ahead.
#[derive(Debug)]
struct CommandLineConfirm {
    entry: i64,
    yes: bool,
    /// What was decided, once asked.
    decision: Mutex<Option<bool>>,
}

impl CommandLineConfirm {
    fn decision(&self) -> Option<bool> {
        *self.decision.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Confirm for CommandLineConfirm {
    async fn confirm(&self, handler: &str, text: &str) -> bool {
        let text = crate::text::escape(text).into_owned();
        crate::output::warn(&format!("handler {handler}: the retry {text}"));
        let agreed = if self.yes {
            true
        } else if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            // Reading a line blocks: off the runtime thread, so that the
            // session (and its timers and signals) goes on meanwhile.
            tokio::task::spawn_blocking(|| {
                crate::output::prompt("go ahead? [y/N] ");
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer).is_ok()
                    && matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES")
            })
            .await
            .unwrap_or(false)
        } else {
            crate::output::warn(&format!(
                "not confirmed: there is no terminal to ask on; run `syncmgr log show {} --yes` to go ahead",
                self.entry
            ));
            false
        };
        *self.decision.lock().unwrap_or_else(PoisonError::into_inner) = Some(agreed);
        agreed
    }
}

/// Which signal asked the session to end first, as its exit code.
fn signal_exit_code(kind: SignalKind) -> i32 {
    if kind == SignalKind::hangup() {
        exit_codes::HANGUP
    } else if kind == SignalKind::terminate() {
        exit_codes::TERMINATED
    } else {
        exit_codes::INTERRUPTED
    }
}

/// The signals that end a session from the command line, in the order
/// [`Signals::next`] reports them.
struct Signals([(SignalKind, Signal); 3]);

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals([
            (SignalKind::interrupt(), signal(SignalKind::interrupt())?),
            (SignalKind::hangup(), signal(SignalKind::hangup())?),
            (SignalKind::terminate(), signal(SignalKind::terminate())?),
        ]))
    }

    /// The next signal to arrive.
    async fn next(&mut self) -> SignalKind {
        let [(_, interrupt), (_, hangup), (_, terminate)] = &mut self.0;
        tokio::select! {
            _ = interrupt.recv() => SignalKind::interrupt(),
            _ = hangup.recv() => SignalKind::hangup(),
            _ = terminate.recv() => SignalKind::terminate(),
        }
    }
}

/// The display on its own thread: a stalled stdout stalls only it.
struct Shown {
    feed: Arc<EventFeed<ShownEvent>>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Shown {
    fn start(display: Display, out: Stdout) -> anyhow::Result<Shown> {
        let feed: Arc<EventFeed<ShownEvent>> = Arc::new(EventFeed::new());
        let thread = {
            let feed = Arc::clone(&feed);
            std::thread::Builder::new()
                .name("syncmgr-display".to_owned())
                .spawn(move || show_events(display, &feed, out))?
        };
        Ok(Shown { feed, thread })
    }

    fn event(&self, event: api::Event) {
        self.feed.push(ShownEvent::Event(event));
    }

    /// A note for the person watching, in order with the events.
    fn note(&self, text: &str) {
        self.feed.push(ShownEvent::Note(text.to_owned()));
    }

    /// Waits for the display to show everything (a stdout nobody reads any
    /// more holds the exit, as it would for any command) and reports a
    /// failure to show, unless stdout went away or the terminal hung up.
    async fn close(self, hung_up: bool) {
        self.feed.close();
        let thread = self.thread;
        let result = tokio::task::spawn_blocking(move || thread.join())
            .await
            .ok()
            .and_then(Result::ok);
        if let Some(Err(e)) = result
            && !is_broken_pipe(&e)
            && !hung_up
        {
            crate::output::warn(&format!("could not show the whole session ({e:#})"));
        }
    }
}

/// Runs the session (in the daemon when one runs for the home, inline
/// otherwise) and returns the exit code.
pub async fn run(
    home: &Home,
    store: Store,
    plan: Plan,
    out: Stdout,
    detach: bool,
    replace: bool,
) -> anyhow::Result<i32> {
    let request = SessionRequest {
        jobs: plan.jobs.clone(),
        event: plan.event,
        reason: syncmgr_manager::daemon::requested_by(plan.cookie.is_some()),
        may_bother_user: plan.may_bother_user,
        cookie: plan.cookie.clone(),
        max_concurrent: plan.tuning.max_concurrent,
        grace: plan.tuning.grace,
        confirm: None,
    };
    request.validate()?;
    let mut display = Display::new(plan.json);
    let mut out = out;
    if plan.jobs.is_empty() {
        display.note(
            &format!("no handler takes part in the {} event", plan.event),
            &mut out,
        );
        return Ok(exit_codes::SUCCESS);
    }
    if let Some((entry, _)) = &plan.entry
        && !plan.json
    {
        display.note(
            &format!("log {}", crate::commands::log_entry_line(entry)),
            &mut out,
        );
    }
    if let Some(connection) = client::connect(home).await? {
        return run_in_daemon(connection, plan, display, out, detach, replace).await;
    }
    if detach {
        return Err(syncmgr_manager::ManagerError::NoDaemon.into());
    }
    run_inline(home, store, plan, request, display, out).await
}

/// The confirmation of `log show`'s plan: `--yes`, or asking on this
/// terminal.
fn confirm_of(plan: &Plan) -> Option<Arc<CommandLineConfirm>> {
    plan.entry.as_ref().map(|(entry, yes)| {
        Arc::new(CommandLineConfirm {
            entry: entry.id,
            yes: *yes,
            decision: Mutex::new(None),
        })
    })
}

async fn run_inline(
    home: &Home,
    store: Store,
    plan: Plan,
    mut request: SessionRequest,
    display: Display,
    out: Stdout,
) -> anyhow::Result<i32> {
    let confirm = confirm_of(&plan);
    request.confirm = confirm.clone().map(|c| c as Arc<dyn Confirm>);
    // Starting reads and writes the store: on a blocking thread, as the
    // daemon does, never on the runtime's.
    let home_for_start = home.clone();
    let mut run = tokio::task::spawn_blocking(move || {
        SessionRun::start(&home_for_start, store, session::new_id(), request)
    })
    .await??;
    let shown = Shown::start(display, out)?;
    let mut signals = Signals::new()?;
    let mut stopped_by: Option<SignalKind> = None;
    loop {
        tokio::select! {
            event = run.next_event() => {
                let Some(event) = event else { break };
                if let Some(event) = api::Event::from_session(&event) {
                    shown.event(event);
                }
            }
            kind = signals.next() => {
                if stopped_by.is_none() {
                    stopped_by = Some(kind);
                    if kind == SignalKind::interrupt() {
                        shown.note("interrupted: cancelling everything (waiting for handlers to stop)");
                    }
                }
                run.control().cancel(&CancelTarget::All);
            }
        }
    }
    // A confirmation counts once: the entry it came from is used up.
    let decision = confirm.as_ref().and_then(|c| c.decision());
    let used = match (decision, &plan.entry) {
        (Some(true), Some((entry, _))) => Some(entry.id),
        _ => None,
    };
    let summary = run.finish(used).await?;
    if summary.items.is_empty()
        && decision.is_none()
        && let Some((_, Selection::ShowError(_))) = plan.jobs.first()
    {
        // `log show` with no retry: say so rather than print nothing.
        shown.note("the handler asked for no retry");
    }
    shown.close(stopped_by == Some(SignalKind::hangup())).await;
    Ok(if let Some(kind) = stopped_by {
        signal_exit_code(kind)
    } else if decision == Some(false) || session::failed(&summary) {
        exit_codes::FAILED
    } else {
        exit_codes::SUCCESS
    })
}

/// The session runs in the daemon; this command shows it as if it ran
/// here (the same events, lines and exit code), and a signal cancels it.
async fn run_in_daemon(
    mut connection: client::Connection,
    plan: Plan,
    display: Display,
    mut out: Stdout,
    detach: bool,
    replace: bool,
) -> anyhow::Result<i32> {
    let grace_ms = u64::try_from(plan.tuning.grace.as_millis()).unwrap_or(u64::MAX);
    let request = match (&plan.entry, &plan.decisions) {
        (Some((entry, _)), _) => api::DaemonRequest::ShowError {
            entry: entry.id,
            max_concurrent: plan.tuning.max_concurrent,
            grace_ms,
        },
        (None, Some(decisions)) => api::DaemonRequest::Resolve {
            decisions: decisions.clone(),
            max_concurrent: plan.tuning.max_concurrent,
            grace_ms,
        },
        (None, None) => api::DaemonRequest::Sync {
            targets: plan.targets.clone(),
            event: Some(plan.event.as_str().to_owned()),
            cookie: plan.cookie.clone(),
            detach,
            replace,
            max_concurrent: plan.tuning.max_concurrent,
            grace_ms,
            via: None,
        },
    };
    connection.request(&request).await?;
    let confirm = confirm_of(&plan);
    let accepted = match connection.next::<api::SyncReply>().await? {
        Some(api::SyncReply::Accepted(accepted)) => accepted,
        Some(api::SyncReply::Refused(refused)) => return Err(refused_error(refused)),
        None => anyhow::bail!("the daemon closed the connection without an answer"),
    };
    if detach {
        if plan.json {
            out.json(&accepted)?;
        } else {
            use std::io::Write as _;
            writeln!(
                out,
                "session {} queued (follow it with `syncmgr events`)",
                accepted.session
            )?;
        }
        return Ok(exit_codes::SUCCESS);
    }
    let shown = Shown::start(display, out)?;
    let mut signals = Signals::new()?;
    let mut stopped_by: Option<SignalKind> = None;
    let mut failed = None;
    let mut refused = None;
    let mut no_items = false;
    loop {
        tokio::select! {
            line = connection.next::<DaemonLine>() => match line? {
                Some(DaemonLine::Event(event)) => {
                    let end = match &event {
                        api::Event::SessionFinished { counts, failed_handlers, items, .. } => {
                            no_items = items.is_empty();
                            Some(counts.failed + counts.stopped > 0 || !failed_handlers.is_empty())
                        }
                        _ => None,
                    };
                    shown.event(event);
                    if end.is_some() {
                        failed = end;
                        break;
                    }
                }
                Some(DaemonLine::Confirm(api::ConfirmAsk { confirm: question })) => {
                    let yes = match &confirm {
                        Some(confirm) => confirm.confirm(&question.handler, &question.text).await,
                        None => false,
                    };
                    connection.answer(yes).await?;
                }
                Some(DaemonLine::Refused(r)) => {
                    refused = Some(r);
                    break;
                }
                None => break,
            },
            kind = signals.next() => {
                if stopped_by.is_none() {
                    stopped_by = Some(kind);
                    if kind == SignalKind::interrupt() {
                        shown.note("interrupted: cancelling everything (waiting for handlers to stop)");
                    }
                }
                connection.cancel().await?;
            }
        }
    }
    let decision = confirm.as_ref().and_then(|c| c.decision());
    if plan.entry.is_some() && no_items && decision.is_none() {
        // `log show` with no retry: say so rather than print nothing.
        shown.note("the handler asked for no retry");
    }
    shown.close(stopped_by == Some(SignalKind::hangup())).await;
    if let Some(refused) = refused {
        return Err(refused_error(refused));
    }
    let Some(failed) = failed else {
        anyhow::bail!(
            "the daemon stopped before session {} finished (see `syncmgr history`)",
            accepted.session
        );
    };
    Ok(if let Some(kind) = stopped_by {
        signal_exit_code(kind)
    } else if failed || decision == Some(false) {
        exit_codes::FAILED
    } else {
        exit_codes::SUCCESS
    })
}

/// A line the daemon sends while a session runs: an event, a question about
/// a retry (`log show`), or why the session could not run.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum DaemonLine {
    Event(api::Event),
    Confirm(api::ConfirmAsk),
    Refused(api::Refused),
}

/// A refusal from the daemon as the error the command ends with.
fn refused_error(refused: api::Refused) -> anyhow::Error {
    if refused.usage {
        usage(refused.error)
    } else {
        anyhow::anyhow!("{}", refused.error)
    }
}

/// What the display thread shows: the session's events, and the command's
/// own notes in order with them.
#[derive(Debug)]
enum ShownEvent {
    Event(api::Event),
    Note(String),
}

impl FeedEvent for ShownEvent {
    fn coalesce_key(&self) -> Option<(&str, &str)> {
        match self {
            ShownEvent::Event(api::Event::Item { handler, item, .. }) => Some((handler, item)),
            _ => None,
        }
    }
}

/// The display thread: shows every event until the feed closes. When stdout
/// goes away (`sync | head -1`, a closed terminal) it stops showing but keeps
/// taking events, so the session is never held up; the error is returned at
/// the end.
fn show_events(
    mut display: Display,
    feed: &EventFeed<ShownEvent>,
    mut out: Stdout,
) -> anyhow::Result<()> {
    let mut failed: Option<anyhow::Error> = None;
    loop {
        let shown = match feed.pop(display.patience()) {
            Popped::Event(ShownEvent::Note(text)) => {
                if failed.is_none() {
                    display.note(&text, &mut out);
                }
                Ok(())
            }
            Popped::Event(ShownEvent::Event(event)) if failed.is_none() => {
                display.show(&event, &mut out)
            }
            Popped::Event(_) => Ok(()),
            Popped::Idle if failed.is_none() => display.tick(&mut out),
            Popped::Idle => Ok(()),
            Popped::Closed => break,
        };
        if let Err(e) = shown {
            failed = Some(e);
        }
    }
    failed.map_or(Ok(()), Err)
}
