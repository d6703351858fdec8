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
//! (`guard-<item>`) and the
//! item fails. [`Handler::show_error`] on that entry offers the retry and
//! confirms the run, which then goes ahead once (in the retry round the
//! engine runs next in the same handler instance). A missing source is
//! refused the same way but under `missing-<item>`, and is never confirmed
//! away: the retry only checks again (a source that came back empty then
//! meets the empty-source guard).

mod config;
mod exec;
mod mirror;
mod plan;
mod progress;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use syncmgr_core::{
    Handler, HandlerCallback, HandlerError, HandlerInfo, InitializeParams, Item, ItemEnumeration,
    ItemFlags, ItemStatus, LogLevel, LogRequest, Participation, ProgressUpdate,
};

pub use config::{FolderConfig, FolderError, FolderPair};

use exec::End;
use mirror::{Job, Outcome};
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
    prepared: Vec<usize>,
    /// Items whose guard the user confirmed through `showError`; each goes
    /// ahead once.
    confirmed: HashSet<String>,
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
            prepared: Vec::new(),
            confirmed: HashSet::new(),
            abort: Arc::new(AtomicBool::new(false)),
        }
    }

    fn find(&self, id: &str) -> Option<usize> {
        self.items.iter().position(|item| item.id == id)
    }

    /// Runs one item and reports its end.
    async fn sync_item(&mut self, index: usize, callback: &HandlerCallback) {
        let spec = &self.items[index];
        let id = spec.id.clone();
        let confirmed = self.confirmed.remove(&id);
        let job = Job {
            item: id.clone(),
            source: spec.pair.source.clone(),
            target: spec.pair.target.clone(),
            options: self.options,
            confirmed,
            callback: callback.clone(),
            abort: Arc::clone(&self.abort),
        };
        let outcome = tokio::task::spawn_blocking(move || mirror::run(&job)).await;
        match outcome {
            Ok(Outcome::Refused { text, confirmable }) => {
                let (prefix, status) = if confirmable {
                    (GUARD_PREFIX, "refused: act on the log entry to confirm")
                } else {
                    (MISSING_PREFIX, "refused: the source folder is missing")
                };
                let error_id = Some(format!("{prefix}{id}"));
                log(callback, &id, LogLevel::Error, text, error_id).await;
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
                .map(|spec| Item {
                    id: spec.id.clone(),
                    name: spec.name.clone(),
                    checked: true,
                    flags: ItemFlags::default(),
                    last_update: None,
                })
                .collect(),
            complete: true,
        })
    }

    async fn prepare_for_sync(
        &mut self,
        items: &[String],
        _callback: &HandlerCallback,
    ) -> Result<(), HandlerError> {
        self.prepared = items
            .iter()
            .map(|id| {
                self.find(id)
                    .ok_or_else(|| HandlerError::Failed(format!("no folder item {id:?}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    async fn synchronize(&mut self, callback: &HandlerCallback) -> Result<(), HandlerError> {
        self.abort = Arc::new(AtomicBool::new(false));
        let _abort = AbortOnDrop(Arc::clone(&self.abort));
        for index in std::mem::take(&mut self.prepared) {
            let id = &self.items[index].id;
            if callback.is_cancelled(id) {
                let id = id.clone();
                finish(
                    callback,
                    &id,
                    ItemStatus::Skipped,
                    "skipped: stopped before it started",
                );
                continue;
            }
            self.sync_item(index, callback).await;
        }
        Ok(())
    }

    async fn show_error(
        &mut self,
        error_id: &str,
        _callback: &HandlerCallback,
    ) -> Result<Vec<String>, HandlerError> {
        if let Some(item) = error_id.strip_prefix(GUARD_PREFIX)
            && self.find(item).is_some()
        {
            // The guard's entry said what confirming means; the retry round
            // that follows goes ahead once.
            self.confirmed.insert(item.to_owned());
            return Ok(vec![item.to_owned()]);
        }
        if let Some(item) = error_id
            .strip_prefix(ERROR_PREFIX)
            .or_else(|| error_id.strip_prefix(MISSING_PREFIX))
            && self.find(item).is_some()
        {
            return Ok(vec![item.to_owned()]);
        }
        Ok(Vec::new())
    }

    fn terminate(&mut self) {
        self.abort.store(true, Ordering::SeqCst);
    }
}
