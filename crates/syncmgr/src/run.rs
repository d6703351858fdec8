//! Running a session from the command line (`sync`, `log show`): build the
//! jobs from registrations, start the engine, listen on the control socket,
//! show events, persist them, and turn the outcome into an exit code.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use syncmgr_core::{
    CancelTarget, HandlerJob, Selection, Session, SessionConfig, SessionEvent, StatusCounts,
    SyncEvent,
};
use syncmgr_protocol::exit_codes;
use syncmgr_store::{Registration, SessionRecord, Store};
use tokio::signal::unix::{SignalKind, signal};

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
    })
}

/// `syncmgr log show ID`: the plan that asks the handler about an entry and
/// retries what it asks to.
pub fn show_error_plan(
    store: &Store,
    id: i64,
    json: bool,
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
    })
}

fn seconds(value: f64, what: &str) -> anyhow::Result<Duration> {
    if (0.0..=3600.0).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(usage(format!(
            "{what} must be between 0 and 3600 seconds, not {value}"
        )))
    }
}

/// Runs the session and returns the exit code.
pub async fn run(home: &Home, store: Store, plan: Plan, out: &mut Stdout) -> anyhow::Result<i32> {
    let grace = seconds(plan.tuning.grace, "--grace")?;
    if plan.tuning.max_concurrent == 0 {
        return Err(usage("--max-concurrent must be at least 1"));
    }
    let mut display = Display::new(plan.json);
    if plan.jobs.is_empty() {
        display.note(
            &format!("no handler takes part in the {} event", plan.event),
            out,
        );
        return Ok(exit_codes::SUCCESS);
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
    let writer = store.spawn_writer()?;

    let jobs = plan
        .jobs
        .iter()
        .map(|(reg, selection)| {
            let handler = build_handler(reg).unwrap_or_else(|e| {
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
    let mut config = SessionConfig::new(id.clone(), plan.event);
    config.may_bother_user = plan.may_bother_user;
    config.cookie = plan.cookie.clone();
    config.max_concurrent_handlers = plan.tuning.max_concurrent;
    config.grace = grace;
    let (session, control, mut events) = Session::new(config, Arc::new(writer.clone()), jobs);
    let _socket = ControlSocket::bind(&home.socket(&id), control.clone())?;
    let running = tokio::spawn(session.run());

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupted = false;
    let mut finished = None;
    // The display is only a view: when stdout goes away (`sync | head -1`,
    // a full disk) the session still runs to its end and is recorded, and the
    // exit code still tells how it went.
    let mut showing = true;
    while finished.is_none() {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                if showing && let Err(e) = display.show(&event, out) {
                    showing = false;
                    if !is_broken_pipe(&e) {
                        crate::output::warn(&format!(
                            "cannot show the session any more ({e:#}); it goes on"
                        ));
                    }
                }
                match event {
                    SessionEvent::ItemsEnumerated { handler, enumeration, .. } => {
                        if let Err(e) = writer.apply_enumeration(&handler, enumeration).await {
                            tracing::warn!(error = %e, "could not store the items of {handler}");
                        }
                    }
                    SessionEvent::Finished(summary) => finished = Some(summary),
                    _ => {}
                }
            }
            _ = interrupt.recv() => {
                if !interrupted {
                    interrupted = true;
                    display.note("interrupted: cancelling everything (waiting for handlers to stop)", out);
                    control.cancel(&CancelTarget::All);
                }
            }
            _ = terminate.recv() => {
                interrupted = true;
                control.cancel(&CancelTarget::All);
            }
        }
    }
    let summary = match finished {
        Some(summary) => summary,
        None => running.await?,
    };
    writer
        .finish_session(
            &summary.session,
            summary.outcome,
            summary.counts,
            chrono::Utc::now(),
            summary.items.clone(),
        )
        .await?;
    writer.close().await?;

    if matches!(display, Display::Plain { .. }) && summary.items.is_empty() && !plan.json {
        // `log show` with no retry: say so rather than print nothing.
        if let Some((_, Selection::ShowError(_))) = plan.jobs.first() {
            display.note("the handler asked for no retry", out);
        }
    }
    Ok(if interrupted {
        exit_codes::INTERRUPTED
    } else if summary.counts.failed + summary.counts.stopped > 0
        || !summary.failed_handlers.is_empty()
    {
        exit_codes::FAILED
    } else {
        exit_codes::SUCCESS
    })
}
