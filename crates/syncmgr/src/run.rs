//! Running a session from the command line (`sync`, `log show`): lock the
//! registrations, build the jobs, start the engine, listen on the control
//! socket, feed the display (on a thread of its own), persist, and turn the
//! outcome into an exit code.
//!
//! This task never waits for the display: events go into an
//! [`EventFeed`](syncmgr_core::EventFeed), which coalesces item changes when
//! the terminal does not keep up, so that handler I/O, timers and signals go
//! on whatever happens to stdout.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use syncmgr_core::{
    CancelTarget, Confirm, EventFeed, FeedEvent, HandlerJob, LogEntry, Popped, Selection, Session,
    SessionConfig, SessionEvent, StatusCounts, SyncEvent,
};
use syncmgr_store::{Registration, SessionRecord, Store};
use tokio::signal::unix::{SignalKind, signal};

use crate::exit_codes;

use crate::cli::{SessionTuning, SyncArgs};
use crate::commands::{parse_event, registration};
use crate::control::ControlSocket;
use crate::display::Display;
use crate::error::usage;
use crate::handlers::{DEFAULT_TIMEOUT, FailedHandler, build_handler};
use crate::home::Home;
use crate::output::{Stdout, is_broken_pipe};

/// What one session is to do.
#[derive(Debug)]
pub struct Plan {
    jobs: Vec<(Registration, Selection)>,
    event: SyncEvent,
    may_bother_user: bool,
    cookie: Option<String>,
    tuning: SessionTuning,
    json: bool,
    /// `log show`: the entry acted on, and whether `--yes` was given.
    entry: Option<(LogEntry, bool)>,
}

/// `syncmgr sync`: works out the plan from the targets.
pub fn sync_plan(store: &Store, args: SyncArgs) -> anyhow::Result<Plan> {
    let event = match (&args.event, &args.cookie) {
        (Some(e), _) => parse_event(e)?,
        // A cookie is what a program hands over when it asks for a sync.
        (None, Some(_)) => SyncEvent::Invoke,
        (None, None) => SyncEvent::Manual,
    };
    let takes_part = |reg: &Registration| !event.needs_opt_in() || reg.events.contains(&event);
    let mut jobs = Vec::new();
    if args.targets.is_empty() {
        let all = store.registrations()?;
        if all.is_empty() {
            return Err(usage(
                "no handlers registered: nothing to sync (see `syncmgr register --help`)",
            ));
        }
        for reg in all.into_iter().filter(|r| takes_part(r)) {
            let choices = store.choices(&reg.name, event)?;
            jobs.push((reg, Selection::Checked(choices)));
        }
    } else {
        // NAME means its checked items; NAME/ITEM adds that item. NAME wins
        // over NAME/ITEM for the same handler.
        let mut wanted: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
        for target in &args.targets {
            let (name, item) = match target.split_once('/') {
                Some((n, i)) if !i.is_empty() => (n, Some(i)),
                Some(_) => return Err(usage(format!("target {target:?} has an empty item"))),
                None => (target.as_str(), None),
            };
            let entry = wanted.entry(name.to_owned()).or_insert(Some(Vec::new()));
            match (item, entry) {
                (None, entry) => *entry = None,
                (Some(item), Some(items)) => {
                    if !items.iter().any(|i| i == item) {
                        items.push(item.to_owned());
                    }
                }
                (Some(_), None) => {}
            }
        }
        for (name, items) in wanted {
            let reg = registration(store, &name)?;
            if !takes_part(&reg) {
                return Err(usage(format!(
                    "handler {name} did not opt in to the {event} event (see `syncmgr register --events`)"
                )));
            }
            let selection = match items {
                None => Selection::Checked(store.choices(&name, event)?),
                Some(items) => Selection::Items(items),
            };
            jobs.push((reg, selection));
        }
    }
    Ok(Plan {
        jobs,
        event,
        may_bother_user: event.may_bother_user_by_default(),
        cookie: args.cookie,
        tuning: args.tuning,
        json: args.json,
        entry: None,
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
    let entry = store
        .log_entry(id)?
        .ok_or_else(|| usage(format!("no log entry {id}")))?;
    let Some(error_id) = entry.entry.error_id.clone() else {
        return Err(usage(format!(
            "log entry {id} was written by syncmgr itself, not by a handler: there is nothing to ask"
        )));
    };
    // Until the session that logged the entry has ended, its handler process
    // owns the entry (protocol rule 4): asking a second process would race it.
    if let Some(session) = store.session(&entry.entry.session)?
        && session.outcome.is_none()
    {
        anyhow::bail!(
            "the session that logged entry {id} ({}) is still running; ask again when it has finished",
            session.id
        );
    }
    let reg = registration(store, &entry.entry.handler)?;
    Ok(Plan {
        jobs: vec![(reg, Selection::ShowError(error_id))],
        event: SyncEvent::Manual,
        may_bother_user: true,
        cookie: None,
        tuning,
        json,
        entry: Some((entry, yes)),
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

/// Runs the session and returns the exit code.
pub async fn run(home: &Home, store: Store, plan: Plan, out: Stdout) -> anyhow::Result<i32> {
    let grace = plan.tuning.grace;
    if grace > Duration::from_secs(3600) {
        return Err(usage("--grace must be at most 1h"));
    }
    if plan.tuning.max_concurrent == 0 {
        return Err(usage("--max-concurrent must be at least 1"));
    }
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

    // One session at a time per registration, whoever runs it: the lock is
    // held until this function returns, and the kernel drops it if the
    // process dies, so a crash leaves nothing behind.
    let mut locks = Vec::new();
    let mut busy = Vec::new();
    for (reg, _) in &plan.jobs {
        match home.lock_registration(&reg.name)? {
            Some(lock) => locks.push(lock),
            None => busy.push(reg.name.clone()),
        }
    }

    let id = uuid::Uuid::now_v7().to_string();
    store.begin_session(&SessionRecord {
        id: id.clone(),
        trigger: plan.event,
        started: chrono::Utc::now(),
        finished: None,
        outcome: None,
        counts: StatusCounts::default(),
        pid: std::process::id(),
    })?;
    let all = store.registrations()?;
    let writer = store.spawn_writer()?;

    let jobs = plan
        .jobs
        .iter()
        .map(|(reg, selection)| {
            let handler = if busy.contains(&reg.name) {
                Err(anyhow::anyhow!(
                    "handler {} is already syncing in another session; it was left out of this one (sync it again when that session has finished)",
                    reg.name
                ))
            } else {
                build_handler(reg, &all)
            };
            let handler = handler.unwrap_or_else(|e| {
                Box::new(FailedHandler::new(format!("{e:#}"))) as Box<dyn syncmgr_core::Handler>
            });
            HandlerJob {
                name: reg.name.clone(),
                handler,
                selection: selection.clone(),
                timeout: reg.timeout.unwrap_or(DEFAULT_TIMEOUT),
            }
        })
        .collect();
    let confirm = plan.entry.as_ref().map(|(entry, yes)| {
        Arc::new(CommandLineConfirm {
            entry: entry.id,
            yes: *yes,
            decision: Mutex::new(None),
        })
    });
    let mut config = SessionConfig::new(id.clone(), plan.event);
    config.may_bother_user = plan.may_bother_user;
    config.cookie = plan.cookie.clone();
    config.max_concurrent_handlers = plan.tuning.max_concurrent;
    config.grace = grace;
    config.confirm = confirm.clone().map(|c| c as Arc<dyn Confirm>);
    let (session, control, mut events) = Session::new(config, Arc::new(writer.clone()), jobs);
    let _socket = ControlSocket::bind(&home.socket(&id), control.clone())?;
    let running = tokio::spawn(session.run());

    // The display, on its own thread: a stalled stdout stalls only it.
    let feed: Arc<EventFeed<Shown>> = Arc::new(EventFeed::new());
    let shown = {
        let feed = Arc::clone(&feed);
        std::thread::Builder::new()
            .name("syncmgr-display".to_owned())
            .spawn(move || show_events(display, &feed, out))?
    };

    let mut signals = Vec::new();
    for kind in [
        SignalKind::interrupt(),
        SignalKind::hangup(),
        SignalKind::terminate(),
    ] {
        signals.push((kind, signal(kind)?));
    }
    let mut stopped_by: Option<SignalKind> = None;
    let mut finished = None;
    let mut stored = Vec::new();
    while finished.is_none() {
        let [(_, interrupt), (_, hangup), (_, terminate)] = &mut signals[..] else {
            unreachable!("three signals were set up");
        };
        let kind = tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                match &event {
                    SessionEvent::ItemsEnumerated { handler, enumeration, .. } => {
                        // Stored on the writer's thread; awaited at the end.
                        let writer = writer.clone();
                        let (handler, enumeration) = (handler.clone(), enumeration.clone());
                        stored.push(tokio::spawn(async move {
                            if let Err(e) = writer.apply_enumeration(&handler, enumeration).await {
                                tracing::warn!(error = %e, "could not store the items of {handler}");
                            }
                        }));
                    }
                    SessionEvent::Finished(summary) => finished = Some(summary.clone()),
                    _ => {}
                }
                feed.push(Shown::Event(event));
                continue;
            }
            _ = interrupt.recv() => SignalKind::interrupt(),
            _ = hangup.recv() => SignalKind::hangup(),
            _ = terminate.recv() => SignalKind::terminate(),
        };
        if stopped_by.is_none() {
            stopped_by = Some(kind);
            if kind == SignalKind::interrupt() {
                feed_note(
                    &feed,
                    "interrupted: cancelling everything (waiting for handlers to stop)",
                );
            }
        }
        control.cancel(&CancelTarget::All);
    }
    let summary = match finished {
        Some(summary) => summary,
        None => running.await?,
    };
    for task in stored {
        let _ = task.await;
    }
    writer
        .finish_session(
            &summary.session,
            summary.outcome,
            summary.counts,
            chrono::Utc::now(),
            summary.items.clone(),
        )
        .await?;

    // A confirmation counts once: the entry it came from is used up.
    let decision = confirm.as_ref().and_then(|c| c.decision());
    if let (Some(true), Some((entry, _))) = (decision, &plan.entry) {
        writer.delete_log(entry.id).await?;
    }
    writer.close().await?;

    if summary.items.is_empty()
        && decision.is_none()
        && let Some((_, Selection::ShowError(_))) = plan.jobs.first()
    {
        // `log show` with no retry: say so rather than print nothing.
        feed_note(&feed, "the handler asked for no retry");
    }
    feed.close();
    // The session is over: waiting for the display to catch up is all that
    // is left (a stdout nobody reads any more holds the exit, as it would
    // for any command).
    let display_result = tokio::task::spawn_blocking(move || shown.join())
        .await
        .ok()
        .and_then(Result::ok);
    if let Some(Err(e)) = display_result
        && !is_broken_pipe(&e)
        && stopped_by != Some(SignalKind::hangup())
    {
        crate::output::warn(&format!("could not show the whole session ({e:#})"));
    }

    Ok(if let Some(kind) = stopped_by {
        signal_exit_code(kind)
    } else if decision == Some(false)
        || summary.counts.failed + summary.counts.stopped > 0
        || !summary.failed_handlers.is_empty()
    {
        exit_codes::FAILED
    } else {
        exit_codes::SUCCESS
    })
}

/// What the display thread shows: the session's events, and the command's
/// own notes in order with them.
#[derive(Debug)]
enum Shown {
    Event(SessionEvent),
    Note(String),
}

impl FeedEvent for Shown {
    fn coalesce_key(&self) -> Option<(&str, &str)> {
        match self {
            Shown::Event(event) => event.coalesce_key(),
            Shown::Note(_) => None,
        }
    }
}

/// A note for the person watching, in order with the events.
fn feed_note(feed: &EventFeed<Shown>, text: &str) {
    feed.push(Shown::Note(text.to_owned()));
}

/// The display thread: shows every event until the feed closes. When stdout
/// goes away (`sync | head -1`, a closed terminal) it stops showing but keeps
/// taking events, so the session is never held up; the error is returned at
/// the end.
fn show_events(
    mut display: Display,
    feed: &EventFeed<Shown>,
    mut out: Stdout,
) -> anyhow::Result<()> {
    let mut failed: Option<anyhow::Error> = None;
    loop {
        let shown = match feed.pop(display.patience()) {
            Popped::Event(Shown::Note(text)) => {
                if failed.is_none() {
                    display.note(&text, &mut out);
                }
                Ok(())
            }
            Popped::Event(Shown::Event(event)) if failed.is_none() => {
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
