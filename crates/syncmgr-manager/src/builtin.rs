//! The built-in handlers as registrations: their kind names, their stored
//! configuration, and the handler each becomes at sync time.

use syncmgr_core::Handler;
use syncmgr_handlers::command::{CommandConfig, CommandHandler};
use syncmgr_handlers::folder::two_way::{TwoWayConfig, TwoWayHandler};
use syncmgr_handlers::folder::{FolderConfig, FolderHandler, Neighbour};
use syncmgr_store::{HandlerKind, Registration};

use crate::error::ManagerError;

/// Kind name of the command handler in the store.
pub const COMMAND: &str = "command";
/// Kind name of the folder handler in the store.
pub const FOLDER: &str = "folder";
/// Kind name of the two-way folder handler in the store.
pub const TWO_WAY: &str = "two-way";

/// The folder pairs of every folder registration (mirror or two-way) but
/// `except`: what a folder handler's written folders must keep clear of (a
/// two-way pair counts in both directions: both its folders are written).
/// A stored configuration that does not decode is left out here (building
/// that handler reports it).
pub fn folder_neighbours(registrations: &[Registration], except: &str) -> Vec<Neighbour> {
    registrations
        .iter()
        .filter(|reg| reg.name != except)
        .flat_map(|reg| {
            let owner = format!("handler {}", reg.name);
            match &reg.kind {
                HandlerKind::Builtin { kind, config } if kind == FOLDER => {
                    serde_json::from_value::<FolderConfig>(config.clone())
                        .map(|config| {
                            config
                                .pairs
                                .into_iter()
                                .map(|pair| Neighbour {
                                    owner: owner.clone(),
                                    pair,
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                }
                HandlerKind::Builtin { kind, config } if kind == TWO_WAY => {
                    serde_json::from_value::<TwoWayConfig>(config.clone())
                        .map(|config| config.neighbours(&owner))
                        .unwrap_or_default()
                }
                _ => Vec::new(),
            }
        })
        .collect()
}

/// For `conflicts show`: the diff of a two-way handler's conflict, when
/// both versions are small text files.
pub fn conflict_diff(reg: &Registration, item: &str, conflict_id: &str) -> Option<String> {
    match &reg.kind {
        HandlerKind::Builtin { kind, config } if kind == TWO_WAY => {
            serde_json::from_value::<TwoWayConfig>(config.clone())
                .ok()?
                .diff(item, conflict_id)
        }
        _ => None,
    }
}

/// The handler for a built-in registration; `registrations` are all of
/// them (a folder mirror checks its targets against the others' folders).
pub fn build(
    name: &str,
    kind: &str,
    config: &serde_json::Value,
    registrations: &[Registration],
) -> Result<Box<dyn Handler>, ManagerError> {
    let invalid = |e: serde_json::Error| {
        ManagerError::Handler(format!(
            "the stored configuration of handler {name} is not valid: {e}"
        ))
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
        TWO_WAY => {
            let config: TwoWayConfig = serde_json::from_value(config.clone()).map_err(invalid)?;
            Box::new(
                TwoWayHandler::new(config).with_neighbours(folder_neighbours(registrations, name)),
            )
        }
        other => {
            return Err(ManagerError::Handler(format!(
                "handler {name} is of the built-in kind {other:?}, which this version does not have"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str, kind: &str, config: serde_json::Value) -> Registration {
        Registration::builtin(name, kind, config)
    }

    /// The folders a mirror keeps clear of: every other folder
    /// registration's pairs, named by their owner; not its own, not another
    /// kind's, not a configuration that does not decode.
    #[test]
    fn neighbours_are_the_other_folder_registrations_pairs() {
        let pair = |s: &str, t: &str| serde_json::json!({"source": s, "target": t});
        let regs = [
            reg(
                "photos",
                FOLDER,
                serde_json::json!({"pairs": [pair("/a", "/b"), pair("/c", "/d")], "delete": false, "checksum": false}),
            ),
            reg(
                "docs",
                FOLDER,
                serde_json::json!({"pairs": [pair("/e", "/f")], "delete": false, "checksum": false}),
            ),
            reg("tools", COMMAND, serde_json::json!({"item": []})),
            reg("broken", FOLDER, serde_json::json!({"nonsense": 1})),
        ];
        let neighbours = folder_neighbours(&regs, "docs");
        let seen: Vec<(String, String)> = neighbours
            .iter()
            .map(|n| (n.owner.clone(), n.pair.source.display().to_string()))
            .collect();
        assert_eq!(
            seen,
            [
                ("handler photos".to_owned(), "/a".to_owned()),
                ("handler photos".to_owned(), "/c".to_owned()),
            ]
        );
        assert_eq!(folder_neighbours(&regs, "photos").len(), 1);
    }
}
