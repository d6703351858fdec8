//! The commands that do not run a sync session: registrations, items and
//! choices, the results log and history.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use syncmgr_api as api;
use syncmgr_core::{LogEntry, LogLevel, SyncEvent, query_handler};
use syncmgr_handlers::folder::{FolderConfig, FolderPair};
use syncmgr_manager::builtin;
use syncmgr_manager::handlers::{DEFAULT_TIMEOUT, build_handler};
use syncmgr_store::{HandlerKind, LogFilter, Registration, Store};

use crate::cli::{ChooseArgs, ItemsArgs, RegisterArgs};
use crate::error::usage;
use crate::output::Stdout;

/// Checks a registration name against `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(usage(format!(
            "invalid handler name {name:?}: use 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        )))
    }
}

/// Parses an event name, as a usage error when unknown.
pub fn parse_event(text: &str) -> anyhow::Result<SyncEvent> {
    text.parse().map_err(|e| usage(format!("{e}")))
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

/// `syncmgr register`.
pub fn register(store: &Store, args: RegisterArgs, out: &mut Stdout) -> anyhow::Result<()> {
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
    let kind = handler_kind(store, &args)?;
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
fn handler_kind(store: &Store, args: &RegisterArgs) -> anyhow::Result<HandlerKind> {
    let command = !args.commands.is_empty() || args.command_file.is_some();
    let folder = !args.folders.is_empty();
    let program = !args.argv.is_empty();
    match (program, command, folder) {
        (true, false, false) => {}
        (false, true, false) => return command_kind(args),
        (false, false, true) => {
            return folder_kind(args, &store.registrations()?);
        }
        (false, false, false) => {
            return Err(usage(
                "register needs a handler: a program after `--` (e.g. `syncmgr register mail -- /usr/bin/mail-handler`), `--command`, or `--folder`",
            ));
        }
        _ => {
            return Err(usage(
                "register takes one kind of handler: a program after `--`, `--command`, or `--folder`",
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

fn registration_json(r: &Registration) -> api::Registration {
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

/// `syncmgr handlers`.
pub fn handlers(store: &Store, json: bool, out: &mut Stdout) -> anyhow::Result<()> {
    let all = store.registrations()?;
    if json {
        let list: Vec<api::Registration> = all.iter().map(registration_json).collect();
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
    let all = store.registrations()?;
    let targets: Vec<Registration> = if args.names.is_empty() {
        // Events that need an opt-in reach only the handlers that opted in.
        all.iter()
            .filter(|&r| !event.needs_opt_in() || r.events.contains(&event))
            .cloned()
            .collect()
    } else {
        args.names
            .iter()
            .map(|n| Ok(syncmgr_manager::plan::registration(store, n)?))
            .collect::<anyhow::Result<_>>()?
    };
    if args.max_concurrent == 0 {
        return Err(usage("--max-concurrent must be at least 1"));
    }
    let mut rows = Vec::new();
    let mut all_ok = true;
    let answers =
        syncmgr_manager::items::query_all(targets, &all, event, args.max_concurrent).await;
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
                    rows.push(api::ItemRow {
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
            Ok(None) => {
                crate::output::warn(&format!(
                    "{}: the handler declined the {event} event",
                    reg.name
                ));
            }
            Err(e) => {
                crate::output::warn(&format!("{}: {e}", reg.name));
                all_ok = false;
            }
        }
    }
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
    Ok(all_ok)
}

/// `syncmgr choose`: only for an item the handler lists (asked afresh when
/// the store has not seen the item), so that a typo is an error rather than
/// a choice that never applies.
pub async fn choose(store: &Store, args: ChooseArgs, out: &mut Stdout) -> anyhow::Result<()> {
    let reg = syncmgr_manager::plan::registration(store, &args.name)?;
    let event = parse_event(&args.event)?;
    syncmgr_core::model::validate_id(&args.item)
        .map_err(|e| usage(format!("invalid item {:?}: {e}", args.item)))?;
    let listed = |store: &Store| -> anyhow::Result<Vec<String>> {
        Ok(store
            .known_items(&args.name)?
            .into_iter()
            .map(|k| k.id)
            .collect())
    };
    let mut known = listed(store)?;
    if !known.contains(&args.item) {
        let all = store.registrations()?;
        let mut handler = build_handler(&reg, &all)?;
        let timeout = reg.timeout.unwrap_or(DEFAULT_TIMEOUT);
        match query_handler(handler.as_mut(), event, timeout).await {
            Ok(Some((_, enumeration))) => store.apply_enumeration(&reg.name, &enumeration)?,
            Ok(None) => {}
            Err(e) => anyhow::bail!("cannot ask handler {} for its items: {e}", reg.name),
        }
        known = listed(store)?;
    }
    if !known.contains(&args.item) {
        return Err(usage(format!(
            "handler {} has no item {:?} (its items: {}; see `syncmgr items {}`)",
            args.name,
            args.item,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            },
            args.name
        )));
    }
    store.set_choice(&args.name, event, &args.item, args.check)?;
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
    level: Option<&str>,
    handler: Option<String>,
    session: Option<String>,
    json: bool,
    out: &mut Stdout,
) -> anyhow::Result<()> {
    let min_level = level
        .map(|l| l.parse::<LogLevel>().map_err(|e| usage(e.to_string())))
        .transpose()?;
    let entries = store.log(&LogFilter {
        min_level,
        handler,
        session,
    })?;
    if json {
        let list: Vec<api::LogEntry> = entries.iter().map(api::LogEntry::from).collect();
        return out.json(&list);
    }
    for entry in &entries {
        writeln!(out, "{}", log_entry_line(entry))?;
    }
    Ok(())
}

/// `syncmgr log delete`.
pub fn log_delete(store: &Store, id: i64, out: &mut Stdout) -> anyhow::Result<()> {
    if !store.delete_log(id)? {
        return Err(usage(format!("no log entry {id}")));
    }
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
    let sessions = store.sessions(limit).context("reading session history")?;
    if json {
        let list: Vec<api::Session> = sessions
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
            .collect();
        return out.json(&list);
    }
    for s in &sessions {
        writeln!(
            out,
            "{}  {}  {:<10} {:<12} {} succeeded, {} failed, {} skipped, {} stopped",
            s.id,
            s.started.format("%Y-%m-%d %H:%M:%S"),
            s.trigger.as_str(),
            s.outcome.map_or("running", |o| o.as_str()),
            s.counts.succeeded,
            s.counts.failed,
            s.counts.skipped,
            s.counts.stopped,
        )?;
    }
    Ok(())
}
