//! The commands that do not run a sync session: registrations, items and
//! choices, the results log and history.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use syncmgr_api as api;
use syncmgr_core::{LogEntry, SyncEvent};
use syncmgr_handlers::folder::two_way::{self, TwoWayConfig, TwoWayPair};
use syncmgr_handlers::folder::{FolderConfig, FolderPair};
use syncmgr_manager::Home;
use syncmgr_manager::builtin;
use syncmgr_manager::views;
use syncmgr_store::{HandlerKind, Registration, Store};

use crate::cli::{ChooseArgs, ItemsArgs, RegisterArgs};
use crate::error::usage;
use crate::output::Stdout;

/// Checks a registration name against `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    Ok(views::validate_name(name, "handler")?)
}

/// Parses an event name, as a usage error when unknown.
pub fn parse_event(text: &str) -> anyhow::Result<SyncEvent> {
    Ok(views::parse_event(text)?)
}

/// `register --folder SRC DST ... [--delete] [--checksum]`, checked against
/// the folders of every other registration (`registrations`).
fn folder_kind(args: &RegisterArgs, registrations: &[Registration]) -> anyhow::Result<HandlerKind> {
    if !args.parsers.is_empty() {
        return Err(usage("--parser goes with --command"));
    }
    let pairs = args
        .folders
        .chunks(2)
        .map(|pair| FolderPair {
            source: pair[0].clone(),
            target: pair[1].clone(),
        })
        .collect();
    let mut config = FolderConfig {
        pairs,
        delete: args.delete,
        checksum: args.checksum,
    };
    let cwd = std::env::current_dir()?;
    config.make_absolute(&cwd);
    config
        .validate(&builtin::folder_neighbours(registrations, &args.name))
        .map_err(|e| usage(e.to_string()))?;
    Ok(HandlerKind::Builtin {
        kind: builtin::FOLDER.to_owned(),
        config: serde_json::to_value(&config)?,
    })
}

/// `register --two-way A B ... [--keep-trash DURATION]`, checked against
/// the folders of every other registration. The pairs' archives live in the
/// home (`two-way/NAME/`).
fn two_way_kind(
    home: &Home,
    args: &RegisterArgs,
    registrations: &[Registration],
) -> anyhow::Result<HandlerKind> {
    if !args.parsers.is_empty() || args.delete || args.checksum {
        return Err(usage(
            "--parser goes with --command, and --delete/--checksum with --folder",
        ));
    }
    let keep_trash = args.keep_trash.unwrap_or(two_way::DEFAULT_KEEP_TRASH);
    if keep_trash < Duration::from_secs(60) {
        return Err(usage("--keep-trash must be at least 1m"));
    }
    let mut config = TwoWayConfig {
        pairs: args
            .two_way
            .chunks(2)
            .map(|pair| TwoWayPair {
                a: pair[0].clone(),
                b: pair[1].clone(),
            })
            .collect(),
        archive: home.state.join("two-way").join(&args.name),
        keep_trash_secs: keep_trash.as_secs(),
    };
    config.make_absolute(&std::env::current_dir()?);
    config
        .validate(&builtin::folder_neighbours(registrations, &args.name))
        .map_err(|e| usage(e.to_string()))?;
    Ok(HandlerKind::Builtin {
        kind: builtin::TWO_WAY.to_owned(),
        config: serde_json::to_value(&config)?,
    })
}

/// `syncmgr register`.
pub fn register(
    home: &Home,
    store: &Store,
    args: RegisterArgs,
    out: &mut Stdout,
) -> anyhow::Result<()> {
    validate_name(&args.name)?;
    let events = match &args.events {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let event = parse_event(s)?;
                if !event.needs_opt_in() {
                    return Err(usage(format!(
                        "--events takes connect, pendingDisconnect and idle; {s} reaches every handler without opting in"
                    )));
                }
                Ok(event)
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    let timeout = match args.timeout {
        None => None,
        Some(t) if (Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&t) => Some(t),
        Some(t) => {
            return Err(usage(format!(
                "--timeout must be at least 1s and at most 24h, not {}",
                syncmgr_core::duration::format(t)
            )));
        }
    };
    let kind = handler_kind(home, store, &args)?;
    let registration = Registration {
        name: args.name.clone(),
        description: args.description,
        kind,
        events,
        timeout,
        registered: chrono::Utc::now(),
    };
    let created = store.register(&registration)?;
    writeln!(
        out,
        "{} handler {}",
        if created { "registered" } else { "updated" },
        args.name
    )?;
    Ok(())
}

/// What `register` registers: a program, or a built-in handler with its
/// configuration (exactly one of them).
fn handler_kind(home: &Home, store: &Store, args: &RegisterArgs) -> anyhow::Result<HandlerKind> {
    let command = !args.commands.is_empty() || args.command_file.is_some();
    let folder = !args.folders.is_empty();
    let two_way = !args.two_way.is_empty();
    let program = !args.argv.is_empty();
    match (program, command, folder, two_way) {
        (true, false, false, false) => {}
        (false, true, false, false) => return command_kind(args),
        (false, false, true, false) => {
            return folder_kind(args, &store.registrations()?);
        }
        (false, false, false, true) => {
            return two_way_kind(home, args, &store.registrations()?);
        }
        (false, false, false, false) => {
            return Err(usage(
                "register needs a handler: a program after `--` (e.g. `syncmgr register mail -- /usr/bin/mail-handler`), `--command`, `--folder` or `--two-way`",
            ));
        }
        _ => {
            return Err(usage(
                "register takes one kind of handler: a program after `--`, `--command`, `--folder` or `--two-way`",
            ));
        }
    }
    if !args.parsers.is_empty() || args.delete || args.checksum {
        return Err(usage(
            "--parser goes with --command, and --delete/--checksum with --folder",
        ));
    }
    let mut argv = args.argv.clone();
    let program = &mut argv[0];
    if program.contains('/') {
        // A relative path would be resolved against wherever `sync` runs
        // later; pin it now.
        let path = Path::new(program.as_str());
        let absolute = std::fs::canonicalize(path)
            .map_err(|e| usage(format!("handler program {program}: {e}")))?;
        *program = absolute.to_string_lossy().into_owned();
    }
    Ok(HandlerKind::Process { argv })
}

fn command_kind(args: &RegisterArgs) -> anyhow::Result<HandlerKind> {
    use syncmgr_handlers::command::CommandConfig;
    if args.delete || args.checksum {
        return Err(usage("--delete and --checksum go with --folder"));
    }
    let config = match &args.command_file {
        Some(file) => {
            if !args.parsers.is_empty() {
                return Err(usage(
                    "--parser goes with --command; in a --command-file, set `parser` per item",
                ));
            }
            let text = std::fs::read_to_string(file)
                .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
            CommandConfig::from_toml(&text)
                .map_err(|e| usage(format!("{}: {e}", file.display())))?
        }
        None => CommandConfig::from_cli(&args.commands, &args.parsers)
            .map_err(|e| usage(e.to_string()))?,
    };
    Ok(HandlerKind::Builtin {
        kind: builtin::COMMAND.to_owned(),
        config: serde_json::to_value(&config)?,
    })
}

/// `syncmgr unregister`.
pub fn unregister(store: &Store, name: &str, out: &mut Stdout) -> anyhow::Result<()> {
    if !store.unregister(name)? {
        return Err(usage(format!("unknown handler {name:?}")));
    }
    writeln!(out, "unregistered handler {name}")?;
    Ok(())
}

/// `syncmgr handlers`.
pub fn handlers(store: &Store, json: bool, out: &mut Stdout) -> anyhow::Result<()> {
    let all = store.registrations()?;
    if json {
        let list: Vec<api::Registration> = all.iter().map(views::registration).collect();
        return out.json(&list);
    }
    if all.is_empty() {
        writeln!(
            out,
            "no handlers registered (see `syncmgr register --help`)"
        )?;
    }
    for r in &all {
        let what = match &r.kind {
            HandlerKind::Process { argv } => argv.join(" "),
            HandlerKind::Builtin { kind, .. } => format!("built-in {kind}"),
        };
        let events: Vec<&str> = r.events.iter().map(|e| e.as_str()).collect();
        writeln!(
            out,
            "{}\t{}\t{}{}",
            r.name,
            what,
            if events.is_empty() {
                String::new()
            } else {
                format!("events: {}", events.join(","))
            },
            r.description
                .as_deref()
                .map(|d| format!("\t{d}"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

/// `syncmgr items`.
pub async fn items(store: &Store, args: ItemsArgs, out: &mut Stdout) -> anyhow::Result<bool> {
    let event = parse_event(&args.event)?;
    let found = views::items(store, &args.names, event, args.max_concurrent).await?;
    for name in &found.declined {
        crate::output::warn(&format!("{name}: the handler declined the {event} event"));
    }
    for (name, error) in &found.failed {
        crate::output::warn(&format!("{name}: {error}"));
    }
    let rows = found.rows;
    if args.json {
        out.json(&rows)?;
    } else {
        for row in &rows {
            if row.flags.hidden {
                continue;
            }
            writeln!(
                out,
                "[{}] {}/{}\t{}\tlast update: {}",
                if row.checked { "x" } else { " " },
                row.handler,
                crate::text::escape(&row.item),
                crate::text::escape(&row.name),
                row.last_update.as_deref().unwrap_or("never"),
            )?;
        }
    }
    Ok(found.failed.is_empty())
}

/// `syncmgr choose`.
pub async fn choose(store: &Store, args: ChooseArgs, out: &mut Stdout) -> anyhow::Result<()> {
    let event = parse_event(&args.event)?;
    views::choose(store, &args.name, event, &args.item, args.check).await?;
    writeln!(
        out,
        "{}/{}: {} for {event}",
        args.name,
        args.item,
        if args.check { "checked" } else { "unchecked" }
    )?;
    Ok(())
}

/// One log entry as a line for people.
pub fn log_entry_line(entry: &LogEntry) -> String {
    let e = &entry.entry;
    crate::display::log_line(
        entry.id,
        &syncmgr_api::time(e.time),
        e.level.as_str(),
        &e.handler,
        e.item.as_deref(),
        &e.text,
        e.actionable,
    )
}

/// `syncmgr log`.
pub fn log(
    store: &Store,
    query: &views::LogQuery,
    json: bool,
    out: &mut Stdout,
) -> anyhow::Result<()> {
    let entries = views::log(store, query)?;
    if json {
        return out.json(&entries);
    }
    for e in &entries {
        let line = crate::display::log_line(
            e.id,
            &e.time,
            &e.level,
            &e.handler,
            e.item.as_deref(),
            &e.text,
            e.actionable,
        );
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `syncmgr log delete`.
pub fn log_delete(store: &Store, id: i64, out: &mut Stdout) -> anyhow::Result<()> {
    views::delete_log(store, id)?;
    writeln!(out, "deleted log entry {id}")?;
    Ok(())
}

/// `syncmgr history`.
pub fn history(
    store: &Store,
    limit: Option<usize>,
    json: bool,
    out: &mut Stdout,
) -> anyhow::Result<()> {
    let sessions = views::history(store, limit).context("reading session history")?;
    if json {
        return out.json(&sessions);
    }
    for s in &sessions {
        writeln!(
            out,
            "{}  {}  {:<10} {:<12} {} succeeded, {} failed, {} skipped, {} stopped",
            s.id,
            history_time(&s.started),
            s.trigger,
            s.outcome.as_deref().unwrap_or("running"),
            s.counts.succeeded,
            s.counts.failed,
            s.counts.skipped,
            s.counts.stopped,
        )?;
    }
    Ok(())
}

/// `2026-12-06T10:55:11.123Z` as `2026-12-06 10:55:11`.
fn history_time(time: &str) -> String {
    time.get(..19).unwrap_or(time).replacen('T', " ", 1)
}
