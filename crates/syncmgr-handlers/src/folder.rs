//! The built-in folder mirror: a one-way, safe copy of source folders onto
//! target folders, one item per pair.
//!
//! This module owns the registration ([`FolderConfig`], checked by
//! [`FolderConfig::validate`]), the items and their ids, and the in-process
//! [`Handler`] ([`FolderHandler`]). The work of an item runs on a blocking
//! thread (`spawn_blocking`) and reports through the callback, which may be
//! called from any thread:
//!
//! - `plan`: walk source and target side by side and decide what to do,
//!   changing nothing (so that the guards see the whole run first);
//! - `exec`: do it, every file through a temporary name, made durable in
//!   batches before it is renamed into place;
//! - `progress`: bytes, the current file, and the cancel checks.
//!
//! What a mirror keeps: contents, modification times and permission bits of
//! files, directories and links; links are copied as links and never
//! followed (below the two roots); empty directories. Not kept: owners,
//! hard links, extended attributes, access times of copied files beyond
//! what is set. FIFOs, sockets and devices are not mirrored: each is
//! reported like an unreadable file, and the item fails.
//!
//! Guards: an empty source over a non-empty target, or a run (with
//! `delete`) that would delete more than half of the target's files
//! (non-directories), is refused with an actionable log entry
//! (`guard-<item>-<fingerprint>`) and the item fails. The fingerprint is a
//! hash of exactly what the refused run would do (which guard, which
//! folders, every path it removes). [`Handler::show_error`] on that entry
//! looks again: when a retry would meet the same guard with the same
//! fingerprint, it answers with the retry and a `confirm` text saying what
//! the retry deletes, and the retry round (in the same handler instance)
//! goes past that guard once; when anything differs, the old entry confirms
//! nothing and the retry only checks again. A missing source is refused
//! under `missing-<item>`, and folders that overlap (each other, or any
//! other pair of any registration, checked again at every run) under
//! `error-<item>`; neither is ever confirmed away.

mod config;
mod exec;
mod mirror;
mod plan;
mod progress;
pub mod two_way;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use syncmgr_core::{
    Handler, HandlerCallback, HandlerError, HandlerInfo, InitializeParams, Item, ItemEnumeration,
    ItemFlags, ItemStatus, LogLevel, LogRequest, Participation, ProgressUpdate, ShowErrorAnswer,
};

pub use config::{FolderConfig, FolderError, FolderPair, Neighbour};

use exec::End;
use mirror::{Job, Outcome, Refusal};
use plan::Options;

/// Error id prefix of the entries of the guards that a user may confirm
/// (empty source, mass delete); the item id follows.
pub const GUARD_PREFIX: &str = "guard-";
/// Error id prefix of the entry saying the source folder is missing: acting
/// on it retries the item, but confirms nothing.
pub const MISSING_PREFIX: &str = "missing-";
/// Error id prefix of the other error entries of an item (unreadable files,
/// a target that cannot be written); acting on one retries the item.
pub const ERROR_PREFIX: &str = "error-";
/// At most this many per-file error entries per item and run; one more
/// entry says how many were left out.
const MAX_FILE_ENTRIES: usize = 50;

#[derive(Debug)]
struct ItemSpec {
    id: String,
    name: String,
    pair: FolderPair,
}

/// The folder mirror as an in-process [`Handler`].
#[derive(Debug)]
pub struct FolderHandler {
    options: Options,
    items: Vec<ItemSpec>,
    /// The pairs of the other registrations.
    neighbours: Vec<Neighbour>,
    prepared: Vec<usize>,
    /// Items whose guard the user confirmed through `showError`, with the
    /// guard's fingerprint; each goes past that guard once.
    confirmed: HashMap<String, String>,
    /// Tells the blocking work to stop when the future running it is
    /// dropped or the handler is terminated.
    abort: Arc<AtomicBool>,
}

impl FolderHandler {
    /// A handler for this configuration (assumed validated at registration;
    /// a pair that is not valid any more fails its item at sync time).
    pub fn new(config: FolderConfig) -> Self {
        let items = config
            .pairs
            .into_iter()
            .map(|pair| ItemSpec {
                id: pair.item_id(),
                name: pair.item_name(),
                pair,
            })
            .collect();
        FolderHandler {
            options: Options {
                delete: config.delete,
                checksum: config.checksum,
            },
            items,
            neighbours: Vec::new(),
            prepared: Vec::new(),
            confirmed: HashMap::new(),
            abort: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The folder pairs of other registrations, which this one's targets
    /// must keep clear of (checked again at every run).
    #[must_use]
    pub fn with_neighbours(mut self, neighbours: Vec<Neighbour>) -> Self {
        self.neighbours = neighbours;
        self
    }

    fn find(&self, id: &str) -> Option<usize> {
        self.items.iter().position(|item| item.id == id)
    }

    /// The work of item `index`, ready for a blocking thread.
    fn job(&self, index: usize, callback: &HandlerCallback, confirmed: Option<String>) -> Job {
        let spec = &self.items[index];
        let own = self
            .items
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, other)| Neighbour {
                owner: "another pair of this handler".to_owned(),
                pair: other.pair.clone(),
            });
        Job {
            item: spec.id.clone(),
            pair: spec.pair.clone(),
            neighbours: own.chain(self.neighbours.iter().cloned()).collect(),
            options: self.options,
            confirmed,
            callback: callback.clone(),
            abort: Arc::clone(&self.abort),
        }
    }

    /// Runs one item and reports its end.
    async fn sync_item(&mut self, index: usize, callback: &HandlerCallback) {
        let id = self.items[index].id.clone();
        let confirmed = self.confirmed.remove(&id);
        let job = self.job(index, callback, confirmed);
        let outcome = tokio::task::spawn_blocking(move || mirror::run(&job)).await;
        match outcome {
            Ok(Outcome::Refused(refusal)) => {
                let (error_id, text, status) = match refusal {
                    Refusal::Guard(guard) => (
                        format!("{GUARD_PREFIX}{id}-{}", guard.fingerprint),
                        guard.refusal(),
                        "refused: act on the log entry to confirm",
                    ),
                    Refusal::Missing(text) => (
                        format!("{MISSING_PREFIX}{id}"),
                        text,
                        "refused: the source folder is missing",
                    ),
                    Refusal::Unsafe(text) => (
                        format!("{ERROR_PREFIX}{id}"),
                        text,
                        "refused: the folders overlap or moved",
                    ),
                };
                log(callback, &id, LogLevel::Error, text, Some(error_id)).await;
                finish(callback, &id, ItemStatus::Failed, status);
            }
            Ok(Outcome::Ran {
                stats,
                problems,
                end,
                elapsed,
            }) => {
                let error_id = format!("{ERROR_PREFIX}{id}");
                let failed = !problems.is_empty() || end == End::Fatal;
                let mut logged = 0;
                for problem in problems.iter().take(MAX_FILE_ENTRIES) {
                    log(
                        callback,
                        &id,
                        LogLevel::Error,
                        problem.text.clone(),
                        Some(error_id.clone()),
                    )
                    .await;
                    logged += 1;
                }
                if problems.len() > logged {
                    let text = format!(
                        "{} more problems were not logged one by one",
                        problems.len() - logged
                    );
                    log(callback, &id, LogLevel::Error, text, Some(error_id)).await;
                }
                let mut summary = match end {
                    End::Stopped => "stopped: ".to_owned(),
                    End::Fatal => "gave up: ".to_owned(),
                    End::Done if failed => "finished with errors: ".to_owned(),
                    End::Done => String::new(),
                };
                let _ = write!(
                    summary,
                    "{} files and {} links copied ({} bytes), {} deleted, {} updated, {} folders created, in {:.3} s",
                    stats.files,
                    stats.links,
                    stats.bytes,
                    stats.deleted,
                    stats.updated,
                    stats.dirs,
                    elapsed.as_secs_f64()
                );
                let status = match end {
                    End::Stopped => ItemStatus::Stopped,
                    _ if failed => ItemStatus::Failed,
                    _ => ItemStatus::Succeeded,
                };
                finish(callback, &id, status, &summary);
                log(callback, &id, LogLevel::Information, summary, None).await;
            }
            Err(e) => {
                let text = format!("the mirror stopped unexpectedly: {e}");
                log(callback, &id, LogLevel::Error, text, None).await;
                finish(callback, &id, ItemStatus::Failed, "failed");
            }
        }
    }
}

/// Sets the abort flag when dropped: the blocking work stops with the
/// future that waits for it.
struct AbortOnDrop(Arc<AtomicBool>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The item and fingerprint of a guard's entry (`guard-ITEM-FINGERPRINT`).
fn guard_entry(error_id: &str) -> Option<(&str, &str)> {
    error_id
        .strip_prefix(GUARD_PREFIX)
        .and_then(|rest| rest.rsplit_once('-'))
}

/// `showError` on a guard's entry, once the handler looked again at what
/// the retry would do (`now`: its guard's fingerprint and consequence, if a
/// guard still refuses it): the entry confirms that run only, once; when
/// anything differs it confirms nothing, and the retry checks again.
fn confirm_if_same(
    confirmed: &mut HashMap<String, String>,
    item: &str,
    fingerprint: &str,
    now: Option<(String, String)>,
) -> ShowErrorAnswer {
    let retry = vec![item.to_owned()];
    match now {
        Some((now, consequence)) if now == fingerprint => {
            confirmed.insert(item.to_owned(), now);
            ShowErrorAnswer {
                retry,
                confirm: Some(consequence),
            }
        }
        _ => ShowErrorAnswer::retry(retry),
    }
}

/// `showError` on a folder handler's other entries (a problem, a missing
/// folder): a plain retry of the item, when the handler has it.
fn retry_entry(error_id: &str, has: impl Fn(&str) -> bool) -> ShowErrorAnswer {
    match error_id
        .strip_prefix(ERROR_PREFIX)
        .or_else(|| error_id.strip_prefix(MISSING_PREFIX))
    {
        Some(item) if has(item) => ShowErrorAnswer::retry(vec![item.to_owned()]),
        _ => ShowErrorAnswer::default(),
    }
}

/// An item of a folder handler: checked by default, no flags.
fn folder_item(id: String, name: String) -> Item {
    Item {
        id,
        name,
        checked: true,
        flags: ItemFlags::default(),
        last_update: None,
    }
}

/// The indexes of `items` in a handler's list (`find`), or the error for
/// the first it does not have.
fn prepared_indexes(
    items: &[String],
    find: impl Fn(&str) -> Option<usize>,
) -> Result<Vec<usize>, HandlerError> {
    items
        .iter()
        .map(|id| find(id).ok_or_else(|| HandlerError::Failed(format!("no folder item {id:?}"))))
        .collect()
}

/// Ends an item the user stopped before its turn came (`skipped`); `true`
/// when it was.
fn skipped_before_start(callback: &HandlerCallback, item: &str) -> bool {
    let stopped = callback.is_cancelled(item);
    if stopped {
        finish(
            callback,
            item,
            ItemStatus::Skipped,
            "skipped: stopped before it started",
        );
    }
    stopped
}

fn finish(callback: &HandlerCallback, item: &str, status: ItemStatus, text: &str) {
    // A refusal here is already logged against the handler by the manager.
    let _ = callback.progress(
        item,
        &ProgressUpdate {
            status: Some(status),
            text: Some(progress::clip(text)),
            ..ProgressUpdate::default()
        },
    );
}

async fn log(
    callback: &HandlerCallback,
    item: &str,
    level: LogLevel,
    text: String,
    error_id: Option<String>,
) {
    let actionable = error_id.is_some();
    let mut text = text;
    if text.len() > syncmgr_core::model::MAX_TEXT_LEN {
        let cut = progress::clip(&text).len();
        text.truncate(cut);
    }
    // A refused entry is logged against the handler by the manager; the
    // item's status still tells the outcome.
    let _ = callback
        .log_error(LogRequest {
            level,
            text,
            error_id,
            item: Some(item.to_owned()),
            actionable,
        })
        .await;
}

#[async_trait]
impl Handler for FolderHandler {
    async fn initialize(
        &mut self,
        _params: &InitializeParams,
    ) -> Result<Participation, HandlerError> {
        Ok(Participation::Participate)
    }

    async fn handler_info(&mut self) -> Result<HandlerInfo, HandlerError> {
        Ok(HandlerInfo {
            name: "Folder mirror".to_owned(),
            ..HandlerInfo::default()
        })
    }

    async fn enum_items(&mut self) -> Result<ItemEnumeration, HandlerError> {
        Ok(ItemEnumeration {
            items: self
                .items
                .iter()
                .map(|spec| folder_item(spec.id.clone(), spec.name.clone()))
                .collect(),
            complete: true,
        })
    }

    async fn prepare_for_sync(
        &mut self,
        items: &[String],
        _callback: &HandlerCallback,
    ) -> Result<(), HandlerError> {
        self.prepared = prepared_indexes(items, |id| self.find(id))?;
        Ok(())
    }

    async fn synchronize(&mut self, callback: &HandlerCallback) -> Result<(), HandlerError> {
        self.abort = Arc::new(AtomicBool::new(false));
        let _abort = AbortOnDrop(Arc::clone(&self.abort));
        for index in std::mem::take(&mut self.prepared) {
            if skipped_before_start(callback, &self.items[index].id) {
                continue;
            }
            self.sync_item(index, callback).await;
        }
        Ok(())
    }

    async fn show_error(
        &mut self,
        error_id: &str,
        callback: &HandlerCallback,
    ) -> Result<ShowErrorAnswer, HandlerError> {
        if let Some((item, fingerprint)) = guard_entry(error_id)
            && let Some(index) = self.find(item)
        {
            // Look again: the entry confirms only the very run it refused.
            self.abort = Arc::new(AtomicBool::new(false));
            let _abort = AbortOnDrop(Arc::clone(&self.abort));
            let job = self.job(index, callback, None);
            let now = tokio::task::spawn_blocking(move || mirror::guard_of(&job))
                .await
                .ok()
                .flatten()
                .map(|guard| (guard.fingerprint.clone(), guard.consequence()));
            return Ok(confirm_if_same(&mut self.confirmed, item, fingerprint, now));
        }
        Ok(retry_entry(error_id, |item| self.find(item).is_some()))
    }

    fn terminate(&mut self) {
        self.abort.store(true, Ordering::SeqCst);
    }
}
