//! What every host shows, in the shapes of `syncmgr_api`: the command
//! line's `--json` output and the web API's answers come from here, so the
//! two never differ for the same thing.

use chrono::{DateTime, Utc};
use syncmgr_api as api;
use syncmgr_core::{LogLevel, SyncEvent, query_handler};
use syncmgr_store::{HandlerKind, LogFilter, Registration, ScheduleRecord, ScheduleWhen, Store};

use crate::error::{ManagerError, Result};
use crate::handlers::{DEFAULT_TIMEOUT, build_handler};
use crate::schedule::{MIN_EVERY, Schedule, parse_cron, parse_zone};

/// Checks a registration or schedule name against
/// `[a-z0-9][a-z0-9._-]{0,63}`; `what` names it in the error.
pub fn validate_name(name: &str, what: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(ManagerError::usage(format!(
            "invalid {what} name {name:?}: use 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        )))
    }
}

/// Parses an event name, as a usage error when unknown.
pub fn parse_event(text: &str) -> Result<SyncEvent> {
    text.parse()
        .map_err(|e| ManagerError::usage(format!("{e}")))
}

/// One registration as `handlers --json` shows it.
pub fn registration(r: &Registration) -> api::Registration {
    let (kind, argv, config) = match &r.kind {
        HandlerKind::Process { argv } => ("process", Some(argv.clone()), None),
        HandlerKind::Builtin { kind, config } => (kind.as_str(), None, Some(config.clone())),
    };
    api::Registration {
        name: r.name.clone(),
        description: r.description.clone(),
        kind: kind.to_owned(),
        argv,
        config,
        events: r.events.iter().map(|e| e.as_str().to_owned()).collect(),
        timeout: r.timeout.map(|t| t.as_secs_f64()),
        registered: api::time(r.registered),
    }
}

/// Every registration.
pub fn registrations(store: &Store) -> Result<Vec<api::Registration>> {
    Ok(store.registrations()?.iter().map(registration).collect())
}

/// What asking handlers for their items gave.
#[derive(Debug, Default)]
pub struct Items {
    /// One row per item, handlers in the order asked.
    pub rows: Vec<api::ItemRow>,
    /// Handlers that declined the event.
    pub declined: Vec<String>,
    /// Handlers that could not be asked, with why.
    pub failed: Vec<(String, String)>,
}

/// Asks the handlers `names` (none: every one that takes part in `event`)
/// for their items, at most `max_concurrent` at once; each row says whether
/// the item is checked for `event` (the user's choice, else the handler's
/// default). What they list is remembered.
pub async fn items(
    store: &Store,
    names: &[String],
    event: SyncEvent,
    max_concurrent: usize,
) -> Result<Items> {
    if max_concurrent == 0 {
        return Err(ManagerError::usage("--max-concurrent must be at least 1"));
    }
    let all = store.registrations()?;
    let targets: Vec<Registration> = if names.is_empty() {
        // Events that need an opt-in reach only the handlers that opted in.
        all.iter()
            .filter(|&r| !event.needs_opt_in() || r.events.contains(&event))
            .cloned()
            .collect()
    } else {
        names
            .iter()
            .map(|n| crate::plan::registration(store, n))
            .collect::<Result<_>>()?
    };
    let mut items = Items::default();
    let answers = crate::items::query_all(targets, &all, event, max_concurrent).await;
    for (reg, answer) in answers {
        match answer {
            Ok(Some((info, enumeration))) => {
                store.apply_enumeration(&reg.name, &enumeration)?;
                let choices = store.choices(&reg.name, event)?;
                let known = store.known_items(&reg.name)?;
                for item in &enumeration.items {
                    let last_update = item.last_update.or_else(|| {
                        known
                            .iter()
                            .find(|k| k.id == item.id)
                            .and_then(|k| k.last_update)
                    });
                    items.rows.push(api::ItemRow {
                        handler: reg.name.clone(),
                        handler_name: info.name.clone(),
                        item: item.id.clone(),
                        name: item.name.clone(),
                        checked: choices.get(&item.id).copied().unwrap_or(item.checked),
                        default_checked: item.checked,
                        event: event.as_str().to_owned(),
                        flags: api::ItemFlags {
                            has_properties: item.flags.has_properties,
                            temporary: item.flags.temporary,
                            roaming_user: item.flags.roaming_user,
                            may_delete_item: item.flags.may_delete_item,
                            hidden: item.flags.hidden,
                        },
                        last_update: last_update.map(api::time),
                    });
                }
            }
            Ok(None) => items.declined.push(reg.name),
            Err(e) => items.failed.push((reg.name, e)),
        }
    }
    Ok(items)
}

/// Checks or unchecks `item` of `handler` for `event`: only an item the
/// handler lists (asked afresh when the store has not seen it), so that a
/// typo is an error rather than a choice that never applies.
pub async fn choose(
    store: &Store,
    handler: &str,
    event: SyncEvent,
    item: &str,
    checked: bool,
) -> Result<()> {
    let reg = crate::plan::registration(store, handler)?;
    syncmgr_core::model::validate_id(item)
        .map_err(|e| ManagerError::usage(format!("invalid item {item:?}: {e}")))?;
    let listed = |store: &Store| -> Result<Vec<String>> {
        Ok(store
            .known_items(handler)?
            .into_iter()
            .map(|k| k.id)
            .collect())
    };
    let mut known = listed(store)?;
    if !known.iter().any(|k| k == item) {
        let all = store.registrations()?;
        let mut built = build_handler(&reg, &all)?;
        let timeout = reg.timeout.unwrap_or(DEFAULT_TIMEOUT);
        match query_handler(built.as_mut(), event, timeout).await {
            Ok(Some((_, enumeration))) => store.apply_enumeration(&reg.name, &enumeration)?,
            Ok(None) => {}
            Err(e) => {
                return Err(ManagerError::Handler(format!(
                    "cannot ask handler {handler} for its items: {e}"
                )));
            }
        }
        known = listed(store)?;
    }
    if !known.iter().any(|k| k == item) {
        return Err(ManagerError::usage(format!(
            "handler {handler} has no item {item:?} (its items: {}; see `syncmgr items {handler}`)",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            },
        )));
    }
    store.set_choice(handler, event, item, checked)?;
    Ok(())
}

/// Which results-log entries to show.
#[derive(Debug, Default, Clone)]
pub struct LogQuery {
    /// Only this level or more severe (`info`, `warning`, `error`).
    pub level: Option<String>,
    /// Only about this handler.
    pub handler: Option<String>,
    /// Only logged in this session.
    pub session: Option<String>,
    /// Only entries with a larger id (newer).
    pub after: Option<i64>,
}

/// The results log, oldest first.
pub fn log(store: &Store, query: &LogQuery) -> Result<Vec<api::LogEntry>> {
    let min_level = query
        .level
        .as_deref()
        .map(|l| {
            l.parse::<LogLevel>()
                .map_err(|e| ManagerError::usage(e.to_string()))
        })
        .transpose()?;
    let entries = store.log(&LogFilter {
        min_level,
        handler: query.handler.clone(),
        session: query.session.clone(),
    })?;
    Ok(entries
        .iter()
        .filter(|e| query.after.is_none_or(|after| e.id > after))
        .map(api::LogEntry::from)
        .collect())
}

/// The open conflicts (of one handler), oldest first (`conflicts --json`).
pub fn conflicts(store: &Store, handler: Option<&str>) -> Result<Vec<api::Conflict>> {
    if let Some(name) = handler
        && store.registration(name)?.is_none()
    {
        return Err(ManagerError::usage(format!(
            "no handler {name} is registered"
        )));
    }
    Ok(store
        .conflicts(handler)?
        .iter()
        .map(conflict_shape)
        .collect())
}

fn conflict_shape(c: &syncmgr_store::ConflictRecord) -> api::Conflict {
    api::Conflict::new(
        c.id,
        &c.handler,
        &c.report,
        c.detected,
        &c.session,
        c.reason.as_deref(),
    )
}

/// One open conflict with, for the two-way folder handler's text files, a
/// unified diff (`conflicts show --json`); an unknown id is bad input.
pub fn conflict(store: &Store, id: i64) -> Result<api::ConflictDetail> {
    let record = store
        .conflict(id)?
        .ok_or_else(|| ManagerError::usage(format!("no open conflict {id}")))?;
    let diff = store.registration(&record.handler)?.and_then(|reg| {
        crate::builtin::conflict_diff(&reg, &record.report.item, &record.report.conflict_id)
    });
    Ok(api::ConflictDetail {
        conflict: conflict_shape(&record),
        diff,
    })
}

/// Deletes a results-log entry; an unknown id is bad input.
pub fn delete_log(store: &Store, id: i64) -> Result<()> {
    if store.delete_log(id)? {
        Ok(())
    } else {
        Err(ManagerError::usage(format!("no log entry {id}")))
    }
}

/// The sessions, newest first, at most `limit`.
pub fn history(store: &Store, limit: Option<usize>) -> Result<Vec<api::Session>> {
    Ok(store
        .sessions(limit)?
        .iter()
        .map(|s| api::Session {
            id: s.id.clone(),
            trigger: s.trigger.as_str().to_owned(),
            reason: s.reason.clone(),
            started: api::time(s.started),
            finished: s.finished.map(api::time),
            outcome: s.outcome.map(|o| o.as_str().to_owned()),
            counts: s.counts.into(),
        })
        .collect())
}

/// The schedules, each with its next run after `now`.
pub fn schedules(store: &Store, now: DateTime<Utc>) -> Result<Vec<api::ScheduleRow>> {
    Ok(store
        .schedules()?
        .into_iter()
        .map(|record| {
            let next = Schedule::from_record(&record)
                .ok()
                .and_then(|s| s.due(now))
                .map(|t| api::time(t.max(now)));
            let (every, cron, timezone) = match record.when {
                ScheduleWhen::Every(every) => {
                    (Some(syncmgr_core::duration::format(every)), None, None)
                }
                ScheduleWhen::Cron { expr, timezone } => (None, Some(expr), timezone),
            };
            api::ScheduleRow {
                name: record.name,
                every,
                cron,
                timezone,
                jitter: syncmgr_core::duration::format(record.jitter),
                catch_up: record.catch_up,
                targets: record.targets,
                last_run: record.last_run.map(api::time),
                next_run: next,
            }
        })
        .collect())
}

/// When a schedule runs, for people: `every 15m`, `cron "0 3 * * *" in UTC`.
pub fn schedule_when(row: &api::ScheduleRow) -> String {
    match (&row.every, &row.cron) {
        (Some(every), _) => format!("every {every}"),
        (_, Some(cron)) => format!(
            "cron {cron:?}{}",
            row.timezone
                .as_ref()
                .map_or_else(String::new, |tz| format!(" in {tz}"))
        ),
        _ => String::new(),
    }
}

/// Adds a schedule after checking it: a name, exactly one of `every` and
/// `cron`, targets that exist now. Returns its first run.
pub fn add_schedule(store: &Store, new: &api::NewSchedule) -> Result<Option<DateTime<Utc>>> {
    validate_name(&new.name, "schedule")?;
    let when = match (&new.every, &new.cron) {
        (Some(every), None) => {
            let every = syncmgr_core::duration::parse(every)
                .map_err(|e| ManagerError::usage(format!("every {every:?}: {e}")))?;
            if every < MIN_EVERY {
                return Err(ManagerError::usage("--every must be at least 1s"));
            }
            ScheduleWhen::Every(every)
        }
        (None, Some(expr)) => {
            parse_cron(expr)?;
            if let Some(zone) = &new.timezone {
                parse_zone(zone)?;
            }
            ScheduleWhen::Cron {
                expr: expr.clone(),
                timezone: new.timezone.clone(),
            }
        }
        _ => {
            return Err(ManagerError::usage(
                "give one of --every DURATION and --cron EXPR",
            ));
        }
    };
    let jitter = match &new.jitter {
        Some(text) => syncmgr_core::duration::parse(text)
            .map_err(|e| ManagerError::usage(format!("jitter {text:?}: {e}")))?,
        None => std::time::Duration::ZERO,
    };
    // The targets must name what exists now (as `sync` checks them).
    crate::plan::jobs(store, &new.targets, SyncEvent::Scheduled)?;
    let record = ScheduleRecord {
        name: new.name.clone(),
        when,
        jitter,
        catch_up: !new.no_catch_up,
        targets: new.targets.clone(),
        created: Utc::now(),
        last_run: None,
    };
    if !store.add_schedule(&record)? {
        return Err(ManagerError::usage(format!(
            "a schedule named {:?} exists; remove it first (`syncmgr schedule remove {}`)",
            new.name, new.name
        )));
    }
    Ok(Schedule::from_record(&record)?.due(Utc::now()))
}

/// Removes a schedule; an unknown name is bad input.
pub fn remove_schedule(store: &Store, name: &str) -> Result<()> {
    if store.remove_schedule(name)? {
        Ok(())
    } else {
        Err(ManagerError::usage(format!(
            "no schedule named {name:?} (see `syncmgr schedule list`)"
        )))
    }
}
