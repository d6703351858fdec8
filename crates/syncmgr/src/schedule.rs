//! `syncmgr schedule add|list|remove`: named schedules in the store, which
//! the daemon runs (a running daemon is told at once).

use std::io::Write as _;

use syncmgr_api as api;
use syncmgr_manager::schedule::{MIN_EVERY, Schedule, parse_cron, parse_zone};
use syncmgr_manager::{Home, client};
use syncmgr_store::{ScheduleRecord, ScheduleWhen, Store};

use crate::cli::{ScheduleAction, ScheduleAddArgs};
use crate::error::usage;
use crate::output::Stdout;

/// Runs a `schedule` subcommand.
pub async fn run(
    home: &Home,
    store: &Store,
    action: ScheduleAction,
    out: &mut Stdout,
) -> anyhow::Result<()> {
    match action {
        ScheduleAction::Add(args) => {
            add(store, args, out)?;
            poke(home).await
        }
        ScheduleAction::List { json } => list(store, json, out),
        ScheduleAction::Remove { name } => {
            if !store.remove_schedule(&name)? {
                return Err(usage(format!(
                    "no schedule named {name:?} (see `syncmgr schedule list`)"
                )));
            }
            writeln!(out, "removed schedule {name}")?;
            poke(home).await
        }
    }
}

fn add(store: &Store, args: ScheduleAddArgs, out: &mut Stdout) -> anyhow::Result<()> {
    crate::commands::validate_name(&args.name)
        .map_err(|_| usage(format!("invalid schedule name {:?}: use 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit", args.name)))?;
    let when = match (args.every, args.cron) {
        (Some(every), None) => {
            if every < MIN_EVERY {
                return Err(usage("--every must be at least 1s"));
            }
            ScheduleWhen::Every(every)
        }
        (None, Some(expr)) => {
            parse_cron(&expr)?;
            if let Some(zone) = &args.timezone {
                parse_zone(zone)?;
            }
            ScheduleWhen::Cron {
                expr,
                timezone: args.timezone,
            }
        }
        _ => return Err(usage("give one of --every DURATION and --cron EXPR")),
    };
    // The targets must name what exists now (as `sync` checks them).
    syncmgr_manager::plan::jobs(store, &args.targets, syncmgr_core::SyncEvent::Scheduled)?;
    let record = ScheduleRecord {
        name: args.name.clone(),
        when,
        jitter: args.jitter,
        catch_up: !args.no_catch_up,
        targets: args.targets,
        created: chrono::Utc::now(),
        last_run: None,
    };
    if !store.add_schedule(&record)? {
        return Err(usage(format!(
            "a schedule named {:?} exists; remove it first (`syncmgr schedule remove {}`)",
            args.name, args.name
        )));
    }
    let next = Schedule::from_record(&record)?.due(chrono::Utc::now());
    writeln!(
        out,
        "added schedule {}{}",
        args.name,
        next.map_or_else(String::new, |t| format!("; next run {}", api::time(t)))
    )?;
    Ok(())
}

/// The rows of `schedule list`.
fn rows(store: &Store) -> anyhow::Result<Vec<api::ScheduleRow>> {
    let now = chrono::Utc::now();
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

fn list(store: &Store, json: bool, out: &mut Stdout) -> anyhow::Result<()> {
    let rows = rows(store)?;
    if json {
        return out.json(&rows);
    }
    if rows.is_empty() {
        writeln!(out, "no schedules (add one with `syncmgr schedule add`)")?;
    }
    for row in rows {
        let when = match (&row.every, &row.cron) {
            (Some(every), _) => format!("every {every}"),
            (_, Some(cron)) => format!(
                "cron {cron:?}{}",
                row.timezone
                    .as_ref()
                    .map_or_else(String::new, |tz| format!(" in {tz}"))
            ),
            _ => String::new(),
        };
        let targets = if row.targets.is_empty() {
            "every handler".to_owned()
        } else {
            row.targets.join(" ")
        };
        writeln!(
            out,
            "{}: {when}, {targets}; last run {}, next run {}",
            row.name,
            row.last_run.as_deref().unwrap_or("never"),
            row.next_run.as_deref().unwrap_or("never"),
        )?;
    }
    Ok(())
}

/// Tells a running daemon that the schedules changed.
async fn poke(home: &Home) -> anyhow::Result<()> {
    if let Some(mut connection) = client::connect(home).await? {
        connection.request(&api::DaemonRequest::Reload {}).await?;
        let _: Option<api::Ack> = connection.next().await?;
    }
    Ok(())
}
