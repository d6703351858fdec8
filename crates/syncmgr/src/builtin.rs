//! The built-in handlers as registrations: their kind names, their stored
//! configuration, and the handler each becomes at sync time.

use syncmgr_core::Handler;
use syncmgr_handlers::command::{CommandConfig, CommandHandler};
use syncmgr_handlers::folder::{FolderConfig, FolderHandler, FolderPair};
use syncmgr_store::HandlerKind;

use crate::cli::RegisterArgs;
use crate::error::usage;

/// Kind name of the command handler in the store.
pub const COMMAND: &str = "command";
/// Kind name of the folder handler in the store.
pub const FOLDER: &str = "folder";

/// `register --folder SRC DST ... [--delete] [--checksum]`.
pub fn folder_kind(args: &RegisterArgs) -> anyhow::Result<HandlerKind> {
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
    config.validate().map_err(|e| usage(e.to_string()))?;
    Ok(HandlerKind::Builtin {
        kind: FOLDER.to_owned(),
        config: serde_json::to_value(&config)?,
    })
}

/// The handler for a built-in registration.
pub fn build(
    name: &str,
    kind: &str,
    config: &serde_json::Value,
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
            Box::new(FolderHandler::new(config))
        }
        other => anyhow::bail!(
            "handler {name} is of the built-in kind {other:?}, which this version does not have"
        ),
    })
}
