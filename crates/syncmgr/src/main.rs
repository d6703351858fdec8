//! `syncmgr`: the command line. Parses arguments, runs the command, maps the
//! outcome to the documented exit codes (`syncmgr_protocol::exit_codes`).
//! Logic lives in the library crates; this binary is glue and presentation.

mod check;
mod cli;
mod commands;
mod conflicts;
mod control;
mod daemon;
mod demo;
mod display;
mod error;
mod exit_codes;
mod output;
mod run;
mod schedule;
mod text;

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use syncmgr_store::Store;

use crate::cli::{Cli, Command, ConflictsAction, LogAction};
use crate::error::{exit_code, usage};
use crate::output::Stdout;
use syncmgr_manager::Home;

fn main() {
    let cli = Cli::parse();
    init_tracing();
    // One thread is enough: the manager waits on pipes and sockets, the
    // store writer and file work have threads of their own, and a single
    // thread saves the cross-thread wakeups that dominate its CPU per
    // message (docs/performance.md, target 2b).
    let code = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(exec(cli)))
    {
        Ok(code) => code,
        Err(e) => {
            // A closed stdout (`syncmgr log | head`) is not a failure.
            if output::is_broken_pipe(&e) {
                exit_codes::SUCCESS
            } else {
                let _ = writeln!(std::io::stderr().lock(), "syncmgr: error: {e:#}");
                exit_code(&e)
            }
        }
    };
    std::process::exit(code);
}

/// Logs go to stderr, never stdout (which carries results and JSON).
/// `SYNCMGR_LOG` takes a tracing filter, e.g. `SYNCMGR_LOG=debug`.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SYNCMGR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never in a log file or
        // a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn open_store(home: &Home) -> anyhow::Result<Store> {
    let path = home.database();
    let store = Store::open(&path).map_err(|e| store_error(home, e))?;
    // A session whose manager died (crash, SIGKILL, power loss) is recorded
    // as interrupted at the next start.
    store.recover_interrupted(syncmgr_sys::process_alive)?;
    Ok(store)
}

/// What a store that does not open means for the user: a file that is not
/// ours (or is newer) is bad input (exit 2); anything else is a failure at
/// run time (exit 1) whose cause is named, a home that cannot be written
/// first of all.
fn store_error(home: &Home, error: syncmgr_store::StoreError) -> anyhow::Error {
    use syncmgr_store::StoreError;
    match error {
        StoreError::NotADatabase { .. } | StoreError::TooNew { .. } => {
            usage(format!("{:#}", anyhow::Error::new(error)))
        }
        error => match home.unwritable() {
            Some(why) => anyhow::Error::new(error).context(why),
            None => anyhow::Error::new(error),
        },
    }
}

async fn exec(cli: Cli) -> anyhow::Result<i32> {
    // The conformance check needs no home: it keeps nothing.
    if let Command::CheckHandler { timeout, argv } = &cli.command {
        return check_handler(*timeout, argv).await;
    }
    let home = Home::resolve(cli.home.as_deref())?;
    // The daemon refuses a bad config.toml; the other commands, which do not
    // use it, say so once.
    if !matches!(cli.command, Command::Daemon { .. })
        && let Some(path) = syncmgr_manager::config::path(cli.home.as_deref())
        && let Err(e) = syncmgr_manager::config::Config::load(&path)
    {
        output::warn(&format!(
            "{e} (the daemon will not start until it is fixed)"
        ));
    }
    let store = open_store(&home)?;
    let mut out = Stdout::new();
    let ok = exit_codes::SUCCESS;
    match cli.command {
        Command::Register(args) => commands::register(&home, &store, args, &mut out).map(|()| ok),
        Command::Unregister { name } => commands::unregister(&store, &name, &mut out).map(|()| ok),
        Command::Handlers { json } => commands::handlers(&store, json, &mut out).map(|()| ok),
        Command::Items(args) => {
            let all_ok = commands::items(&store, args, &mut out).await?;
            Ok(if all_ok { ok } else { exit_codes::FAILED })
        }
        Command::Choose(args) => commands::choose(&store, args, &mut out).await.map(|()| ok),
        Command::Sync(args) => {
            let (detach, replace) = (args.detach, args.replace);
            let plan = run::sync_plan(&store, args)?;
            run::run(&home, store, plan, out, detach, replace).await
        }
        Command::Daemon { install: true, .. } => daemon::install(cli.home.as_deref(), &mut out),
        Command::Daemon {
            uninstall: true, ..
        } => daemon::uninstall(&mut out),
        Command::Daemon {
            max_concurrent,
            web,
            ..
        } => daemon::run(home, cli.home.as_deref(), max_concurrent, web.as_deref()).await,
        Command::Dashboard { no_open } => daemon::dashboard(&home, no_open, &mut out).await,
        Command::Schedule { action } => schedule::run(&home, &store, action, &mut out)
            .await
            .map(|()| ok),
        Command::Status { json } => daemon::status(&home, &store, json, &mut out).await,
        Command::Events { json } => daemon::events(&home, json, out).await,
        Command::Cancel { targets } => control::cancel(&home, &store, &targets, &mut out).await,
        Command::Log(args) => match args.action {
            Some(LogAction::Show {
                id,
                json,
                yes,
                tuning,
            }) => {
                let plan = run::show_error_plan(&store, id, json, yes, tuning)?;
                run::run(&home, store, plan, out, false, false).await
            }
            Some(LogAction::Delete { id }) => {
                commands::log_delete(&store, id, &mut out).map(|()| ok)
            }
            None => commands::log(
                &store,
                &syncmgr_manager::views::LogQuery {
                    level: args.level,
                    handler: args.handler,
                    session: args.session,
                    after: None,
                },
                args.json,
                &mut out,
            )
            .map(|()| ok),
        },
        Command::Conflicts(args) => match args.action {
            None => {
                conflicts::list(&store, args.handler.as_deref(), args.json, &mut out).map(|()| ok)
            }
            Some(ConflictsAction::Show { id, json }) => {
                conflicts::show(&store, id, json, &mut out).map(|()| ok)
            }
            Some(ConflictsAction::Resolve(args)) => {
                conflicts::resolve(&home, store, args, out).await
            }
        },
        Command::CheckHandler { .. } => unreachable!("handled before the home is opened"),
        Command::Demo { json } => {
            let args = demo::prepare(&home, &store, json, &mut out)?;
            let plan = run::sync_plan(&store, args)?;
            run::run(&home, store, plan, out, false, false).await
        }
        Command::History { json, limit } => {
            commands::history(&store, limit, json, &mut out).map(|()| ok)
        }
    }
}

async fn check_handler(timeout: std::time::Duration, argv: &[String]) -> anyhow::Result<i32> {
    if timeout.is_zero() || timeout > std::time::Duration::from_secs(3600) {
        return Err(usage(format!(
            "--timeout must be more than 0 and at most 1h, not {}",
            syncmgr_core::duration::format(timeout)
        )));
    }
    let conforms = check::check_handler(argv, timeout, &mut Stdout::new()).await?;
    Ok(if conforms {
        exit_codes::SUCCESS
    } else {
        exit_codes::FAILED
    })
}
