//! The built-in handlers as registrations: their kind names, their stored
//! configuration, and the handler each becomes at sync time.

use syncmgr_core::Handler;
use syncmgr_handlers::command::{CommandConfig, CommandHandler};
use syncmgr_handlers::folder::{FolderConfig, FolderHandler, FolderPair, Neighbour};
use syncmgr_store::{HandlerKind, Registration};

use crate::cli::RegisterArgs;
use crate::error::usage;

/// Kind name of the command handler in the store.
pub const COMMAND: &str = "command";
/// Kind name of the folder handler in the store.
pub const FOLDER: &str = "folder";

/// `register --folder SRC DST ... [--delete] [--checksum]`, checked against
/// the folders of every other registration (`registrations`).
pub fn folder_kind(
    args: &RegisterArgs,
    registrations: &[Registration],
) -> anyhow::Result<HandlerKind> {
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
        .validate(&folder_neighbours(registrations, &args.name))
        .map_err(|e| usage(e.to_string()))?;
    Ok(HandlerKind::Builtin {
        kind: FOLDER.to_owned(),
        config: serde_json::to_value(&config)?,
    })
}

/// The folder pairs of every folder registration but `except`: what a
/// mirror's targets must keep clear of. A stored configuration that does not
/// decode is left out here (building that handler reports it).
pub fn folder_neighbours(registrations: &[Registration], except: &str) -> Vec<Neighbour> {
    registrations
        .iter()
        .filter(|reg| reg.name != except)
        .filter_map(|reg| match &reg.kind {
            HandlerKind::Builtin { kind, config } if kind == FOLDER => {
                let config = serde_json::from_value::<FolderConfig>(config.clone()).ok()?;
                Some((reg.name.clone(), config))
            }
            _ => None,
        })
        .flat_map(|(name, config)| {
            config.pairs.into_iter().map(move |pair| Neighbour {
                owner: format!("handler {name}"),
                pair,
            })
        })
        .collect()
}

/// The handler for a built-in registration; `registrations` are all of
/// them (a folder mirror checks its targets against the others' folders).
pub fn build(
    name: &str,
    kind: &str,
    config: &serde_json::Value,
    registrations: &[Registration],
) -> anyhow::Result<Box<dyn Handler>> {
    let invalid = |e: serde_json::Error| {
        anyhow::anyhow!("the stored configuration of handler {name} is not valid: {e}")
    };
    Ok(match kind {
        COMMAND => {
            let config: CommandConfig = serde_json::from_value(config.clone()).map_err(invalid)?;
            Box::new(CommandHandler::new(config))
        }
        FOLDER => {
            let config: FolderConfig = serde_json::from_value(config.clone()).map_err(invalid)?;
            Box::new(
                FolderHandler::new(config).with_neighbours(folder_neighbours(registrations, name)),
            )
        }
        other => anyhow::bail!(
            "handler {name} is of the built-in kind {other:?}, which this version does not have"
        ),
    })
}
