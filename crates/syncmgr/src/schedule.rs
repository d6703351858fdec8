//! `syncmgr schedule add|list|remove`: named schedules in the store, which
//! the daemon runs (a running daemon is told at once).

use std::io::Write as _;

use syncmgr_api as api;
use syncmgr_manager::{Home, client, views};
use syncmgr_store::Store;

use crate::cli::{ScheduleAction, ScheduleAddArgs};
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
            views::remove_schedule(store, &name)?;
            writeln!(out, "removed schedule {name}")?;
            poke(home).await
        }
    }
}

fn add(store: &Store, args: ScheduleAddArgs, out: &mut Stdout) -> anyhow::Result<()> {
    let format = syncmgr_core::duration::format;
    let new = api::NewSchedule {
        name: args.name.clone(),
        every: args.every.map(format),
        cron: args.cron,
        timezone: args.timezone,
        jitter: Some(format(args.jitter)),
        no_catch_up: args.no_catch_up,
        targets: args.targets,
    };
    let next = views::add_schedule(store, &new)?;
    writeln!(
        out,
        "added schedule {}{}",
        args.name,
        next.map_or_else(String::new, |t| format!("; next run {}", api::time(t)))
    )?;
    Ok(())
}

fn list(store: &Store, json: bool, out: &mut Stdout) -> anyhow::Result<()> {
    let rows = views::schedules(store, chrono::Utc::now())?;
    if json {
        return out.json(&rows);
    }
    if rows.is_empty() {
        writeln!(out, "no schedules (add one with `syncmgr schedule add`)")?;
    }
    for row in rows {
        let when = views::schedule_when(&row);
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
    Ok(client::reload(home).await?)
}
