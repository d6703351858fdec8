//! Asking handlers for their items outside a session (settings mode:
//! `syncmgr items`, `choose`), several at once: a hundred registered
//! handlers asked one after the other take as long as all of their start-ups
//! together.

use futures::StreamExt;
use syncmgr_core::{HandlerInfo, ItemEnumeration, SyncEvent, query_handler};
use syncmgr_store::Registration;

use crate::handlers::{DEFAULT_TIMEOUT, build_handler};

/// What one handler answered: its info and items, `None` when it declined
/// the event, or why it could not be asked.
pub type Answer = Result<Option<(HandlerInfo, ItemEnumeration)>, String>;

/// Asks each of `targets` (in settings mode, for `event`) with at most
/// `concurrency` at once; the answers come in the order of `targets`. `all`
/// are every registration (a built-in may check itself against the others).
pub async fn query_all(
    targets: Vec<Registration>,
    all: &[Registration],
    event: SyncEvent,
    concurrency: usize,
) -> Vec<(Registration, Answer)> {
    futures::stream::iter(targets)
        .map(|reg| async move {
            let answer = match build_handler(&reg, all) {
                Ok(mut handler) => {
                    let timeout = reg.timeout.unwrap_or(DEFAULT_TIMEOUT);
                    query_handler(handler.as_mut(), event, timeout)
                        .await
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            (reg, answer)
        })
        .buffered(concurrency.max(1))
        .collect()
        .await
}
