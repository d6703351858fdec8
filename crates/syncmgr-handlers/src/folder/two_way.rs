//! The built-in two-way folder sync: keeps pairs of folders in step in both
//! directions, one item per pair, and reports what it cannot decide to the
//! manager's conflict store.
//!
//! This module owns the registration ([`TwoWayConfig`]) and the in-process
//! [`Handler`] ([`TwoWayHandler`]); the work of an item runs on a blocking
//! thread:
//!
//! - `archive`: the last synced state of each pair, kept durably by the
//!   handler (one file per pair under the registration's archive folder);
//! - `scan`: one side's entries and the fast check's stamps;
//! - `sync`: deciding and applying (the rules are in its documentation);
//! - `resolve`: the user's decision on a conflict, and its text diff.
//!
//! Guards, as the mirror's, in both directions: a side that is missing (once
//! the pair has synced), or empty while the archive is not, stops the item;
//! a run that would move more than half of a side's files to the trash is
//! refused with an actionable entry (`guard-ITEM-FINGERPRINT`) that the
//! user may confirm (`showError`), for that exact run only.

mod archive;
mod resolve;
mod scan;
mod sync;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use syncmgr_core::{
    ConflictReport, ConflictResolution, ConflictVersion, Handler, HandlerCallback, HandlerError,
    HandlerInfo, InitializeParams, ItemEnumeration, ItemStatus, LogLevel, Participation,
    ShowErrorAnswer,
};

use super::config::{FolderError, FolderPair, Neighbour};
use super::progress::{Reporter, path_text};
use super::{
    AbortOnDrop, ERROR_PREFIX, GUARD_PREFIX, MAX_FILE_ENTRIES, MISSING_PREFIX, finish, log,
};

pub use scan::STATE_DIR;

/// How long a run's trash is kept unless the registration says otherwise.
pub const DEFAULT_KEEP_TRASH: Duration = Duration::from_secs(30 * 24 * 3600);

/// What `syncmgr register NAME --two-way A B ...` stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoWayConfig {
    /// The folder pairs, one item each.
    pub pairs: Vec<TwoWayPair>,
    /// Where the pairs' archives live (one file per pair): a folder of the
    /// manager's home, chosen at registration.
    pub archive: PathBuf,
    /// How long each run's trash is kept, in seconds.
    #[serde(default = "default_keep_trash")]
    pub keep_trash_secs: u64,
}

fn default_keep_trash() -> u64 {
    DEFAULT_KEEP_TRASH.as_secs()
}

/// Two folders kept equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoWayPair {
    /// The first folder (version 0 of a conflict).
    pub a: PathBuf,
    /// The second folder (version 1 of a conflict).
    pub b: PathBuf,
}

impl TwoWayPair {
    /// As a mirror pair, for the overlap checks (either side is written,
    /// so both directions are checked).
    fn as_pairs(&self) -> [FolderPair; 2] {
        [
            FolderPair {
                source: self.a.clone(),
                target: self.b.clone(),
            },
            FolderPair {
                source: self.b.clone(),
                target: self.a.clone(),
            },
        ]
    }

    /// The item's stable id (from both folders as registered).
    pub fn item_id(&self) -> String {
        self.as_pairs()[0].item_id()
    }

    /// The item's display name, `A ⇄ B`.
    pub fn item_name(&self) -> String {
        format!("{} ⇄ {}", path_text(&self.a), path_text(&self.b))
    }
}

impl TwoWayConfig {
    /// Makes relative folders absolute against `base`.
    pub fn make_absolute(&mut self, base: &Path) {
        for pair in &mut self.pairs {
            for path in [&mut pair.a, &mut pair.b] {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        }
    }

    /// The pairs as mirror pairs in both directions: what the other
    /// registrations must keep clear of.
    pub fn neighbours(&self, owner: &str) -> Vec<Neighbour> {
        self.pairs
            .iter()
            .flat_map(TwoWayPair::as_pairs)
            .map(|pair| Neighbour {
                owner: owner.to_owned(),
                pair,
            })
            .collect()
    }

    /// Checks the configuration before it is stored, as a mirror's (see
    /// [`super::FolderConfig::validate`]) with both folders of each pair as
    /// targets.
    pub fn validate(&self, neighbours: &[Neighbour]) -> Result<(), FolderError> {
        let config = super::FolderConfig {
            pairs: self.pairs.iter().flat_map(TwoWayPair::as_pairs).collect(),
            delete: false,
            checksum: false,
        };
        if config.pairs.is_empty() {
            return Err(FolderError::NoPairs);
        }
        // A pair and its own reverse are the same two folders: checked
        // against each other only for nesting.
        for (i, pair) in self.pairs.iter().enumerate() {
            let [forward, _] = pair.as_pairs();
            let mine = forward.resolve()?;
            forward.check_nested(&mine)?;
            let others = self
                .pairs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, other)| other.as_pairs())
                .map(|pair| Neighbour {
                    owner: "another pair of this handler".to_owned(),
                    pair,
                });
            for neighbour in others.chain(neighbours.iter().cloned()) {
                let theirs = neighbour.pair.resolve_leniently();
                for own in pair.as_pairs() {
                    let mine = own.resolve()?;
                    own.check_apart(&mine, &neighbour.pair, &theirs, &neighbour.owner)?;
                }
            }
        }
        Ok(())
    }

    fn paths(&self, index: usize) -> sync::PairPaths {
        let pair = &self.pairs[index];
        sync::PairPaths {
            roots: [pair.a.clone(), pair.b.clone()],
            archive: self.archive.join(format!("{}.json", pair.item_id())),
            keep_trash: Duration::from_secs(self.keep_trash_secs),
        }
    }

    /// The unified diff of conflict `conflict_id` of `item` when both
    /// versions are small text files (`syncmgr conflicts show`).
    pub fn diff(&self, item: &str, conflict_id: &str) -> Option<String> {
        let index = self.pairs.iter().position(|p| p.item_id() == item)?;
        resolve::diff(&self.paths(index), conflict_id)
    }
}

/// The two-way folder sync as an in-process [`Handler`].
#[derive(Debug)]
pub struct TwoWayHandler {
    config: TwoWayConfig,
    neighbours: Vec<Neighbour>,
    prepared: Vec<usize>,
    /// Items whose guard the user confirmed, with the guard's fingerprint.
    confirmed: HashMap<String, String>,
    abort: Arc<AtomicBool>,
}

impl TwoWayHandler {
    /// A handler for this configuration.
    pub fn new(config: TwoWayConfig) -> Self {
        TwoWayHandler {
            config,
            neighbours: Vec::new(),
            prepared: Vec::new(),
            confirmed: HashMap::new(),
            abort: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The folder pairs of other registrations, checked again at every run.
    #[must_use]
    pub fn with_neighbours(mut self, neighbours: Vec<Neighbour>) -> Self {
        self.neighbours = neighbours;
        self
    }

    fn find(&self, id: &str) -> Option<usize> {
        self.config.pairs.iter().position(|p| p.item_id() == id)
    }

    /// The folders still apart from each other and every neighbour.
    fn check(&self, index: usize) -> Result<(), String> {
        let config = TwoWayConfig {
            pairs: vec![self.config.pairs[index].clone()],
            ..self.config.clone()
        };
        let others: Vec<Neighbour> = self
            .config
            .pairs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != index)
            .flat_map(|(_, p)| p.as_pairs())
            .map(|pair| Neighbour {
                owner: "another pair of this handler".to_owned(),
                pair,
            })
            .chain(self.neighbours.iter().cloned())
            .collect();
        config.validate(&others).map_err(|e| {
            format!("refused to sync: {e}; nothing was changed. Fix the folders (or the registrations), then act on this entry to try again")
        })
    }

    async fn sync_item(&mut self, index: usize, callback: &HandlerCallback) {
        let id = self.config.pairs[index].item_id();
        if let Err(text) = self.check(index) {
            log(
                callback,
                &id,
                LogLevel::Error,
                text,
                Some(format!("{ERROR_PREFIX}{id}")),
            )
            .await;
            finish(
                callback,
                &id,
                ItemStatus::Failed,
                "refused: the folders overlap",
            );
            return;
        }
        let options = sync::Options {
            confirmed: self.confirmed.remove(&id),
            dry_run: false,
        };
        let paths = self.config.paths(index);
        let cb = callback.clone();
        let abort = Arc::clone(&self.abort);
        let item = id.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut reporter = Reporter::new(&cb, &item, &abort);
            sync::run(&paths, &options, &mut reporter)
        })
        .await;
        match outcome {
            Ok(sync::Outcome::Refused(refusal)) => {
                let (error_id, text, status) = match refusal {
                    sync::Refusal::Guard(guard) => (
                        format!("{GUARD_PREFIX}{id}-{}", guard.fingerprint),
                        guard.refusal(),
                        "refused: act on the log entry to confirm",
                    ),
                    sync::Refusal::Missing(text) => (
                        format!("{MISSING_PREFIX}{id}"),
                        text,
                        "refused: a folder is missing",
                    ),
                    sync::Refusal::Broken(text) => {
                        (format!("{ERROR_PREFIX}{id}"), text, "refused: see the log")
                    }
                };
                log(callback, &id, LogLevel::Error, text, Some(error_id)).await;
                finish(callback, &id, ItemStatus::Failed, status);
            }
            Ok(sync::Outcome::Ran(ran)) => self.report(callback, &id, index, ran).await,
            Err(e) => {
                let text = format!("the two-way sync stopped unexpectedly: {e}");
                log(callback, &id, LogLevel::Error, text, None).await;
                finish(callback, &id, ItemStatus::Failed, "failed");
            }
        }
    }

    async fn report(&self, callback: &HandlerCallback, id: &str, index: usize, ran: sync::Ran) {
        let error_id = format!("{ERROR_PREFIX}{id}");
        let mut logged = 0;
        for problem in ran.problems.iter().take(MAX_FILE_ENTRIES) {
            log(
                callback,
                id,
                LogLevel::Error,
                problem.clone(),
                Some(error_id.clone()),
            )
            .await;
            logged += 1;
        }
        if ran.problems.len() > logged {
            let text = format!(
                "{} more problems were not logged one by one",
                ran.problems.len() - logged
            );
            log(callback, id, LogLevel::Error, text, Some(error_id)).await;
        }
        let pair = &self.config.pairs[index];
        let open = ran.conflicts.as_ref().map_or(0, Vec::len);
        for found in ran.conflicts.iter().flatten() {
            let report = ConflictReport {
                item: id.to_owned(),
                conflict_id: found.id.clone(),
                text: super::progress::clip(&found.text).to_owned(),
                versions: found
                    .sides
                    .iter()
                    .map(|side| ConflictVersion {
                        label: super::progress::clip(&path_text(&side.path)).to_owned(),
                        size: side.size,
                        modified: side.modified.map(chrono::DateTime::<chrono::Utc>::from),
                        detail: Some(side.what.to_owned()),
                    })
                    .collect(),
            };
            // A refusal is logged against the handler by the manager; the
            // conflict stays in the archive and is reported again.
            let _ = callback.report_conflict(report).await;
        }
        for gone in &ran.resolved {
            let _ = callback.conflict_resolved(id, gone).await;
        }
        let stats = ran.stats;
        let failed = !ran.problems.is_empty() || ran.end == sync::End::Fatal;
        let mut summary = match ran.end {
            sync::End::Stopped => "stopped: ".to_owned(),
            sync::End::Fatal => "gave up: ".to_owned(),
            sync::End::Done if failed => "finished with errors: ".to_owned(),
            sync::End::Done => String::new(),
        };
        let _ = write!(
            summary,
            "{} copied to {}, {} copied to {} ({} bytes), {} moved to the trash, {} folders created, {} modes set, {} conflicts open, in {:.3} s",
            stats.copied[sync::B],
            path_text(&pair.b),
            stats.copied[sync::A],
            path_text(&pair.a),
            stats.bytes,
            stats.trashed,
            stats.dirs,
            stats.modes,
            open,
            ran.elapsed.as_secs_f64()
        );
        if stats.skipped > 0 {
            let _ = write!(
                summary,
                "; {} changed while syncing, left for the next sync",
                stats.skipped
            );
        }
        let status = match ran.end {
            sync::End::Stopped => ItemStatus::Stopped,
            _ if failed => ItemStatus::Failed,
            _ => ItemStatus::Succeeded,
        };
        finish(callback, id, status, &summary);
        let level = if open > 0 {
            LogLevel::Warning
        } else {
            LogLevel::Information
        };
        log(callback, id, level, summary, None).await;
    }
}

#[async_trait]
impl Handler for TwoWayHandler {
    async fn initialize(
        &mut self,
        _params: &InitializeParams,
    ) -> Result<Participation, HandlerError> {
        Ok(Participation::Participate)
    }

    async fn handler_info(&mut self) -> Result<HandlerInfo, HandlerError> {
        Ok(HandlerInfo {
            name: "Two-way folder sync".to_owned(),
            ..HandlerInfo::default()
        })
    }

    async fn enum_items(&mut self) -> Result<ItemEnumeration, HandlerError> {
        Ok(ItemEnumeration {
            items: self
                .config
                .pairs
                .iter()
                .map(|pair| super::folder_item(pair.item_id(), pair.item_name()))
                .collect(),
            complete: true,
        })
    }

    async fn prepare_for_sync(
        &mut self,
        items: &[String],
        _callback: &HandlerCallback,
    ) -> Result<(), HandlerError> {
        self.prepared = super::prepared_indexes(items, |id| self.find(id))?;
        Ok(())
    }

    async fn synchronize(&mut self, callback: &HandlerCallback) -> Result<(), HandlerError> {
        self.abort = Arc::new(AtomicBool::new(false));
        let _abort = AbortOnDrop(Arc::clone(&self.abort));
        for index in std::mem::take(&mut self.prepared) {
            if super::skipped_before_start(callback, &self.config.pairs[index].item_id()) {
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
        if let Some((item, fingerprint)) = super::guard_entry(error_id)
            && let Some(index) = self.find(item)
        {
            // Look again: the entry confirms only the very run it refused.
            self.abort = Arc::new(AtomicBool::new(false));
            let _abort = AbortOnDrop(Arc::clone(&self.abort));
            let paths = self.config.paths(index);
            let (cb, abort, id) = (callback.clone(), Arc::clone(&self.abort), item.to_owned());
            let looked = tokio::task::spawn_blocking(move || {
                let mut reporter = Reporter::quiet(&cb, &id, &abort);
                let options = sync::Options {
                    confirmed: None,
                    dry_run: true,
                };
                sync::run(&paths, &options, &mut reporter)
            })
            .await;
            let now = match looked {
                Ok(sync::Outcome::Refused(sync::Refusal::Guard(guard))) => {
                    Some((guard.fingerprint.clone(), guard.consequence()))
                }
                _ => None,
            };
            return Ok(super::confirm_if_same(
                &mut self.confirmed,
                item,
                fingerprint,
                now,
            ));
        }
        Ok(super::retry_entry(error_id, |item| {
            self.find(item).is_some()
        }))
    }

    async fn resolve_conflict(
        &mut self,
        resolution: &ConflictResolution,
        _callback: &HandlerCallback,
    ) -> Result<(), HandlerError> {
        let Some(index) = self.find(&resolution.item) else {
            return Err(HandlerError::Failed(format!(
                "no folder pair {:?}",
                resolution.item
            )));
        };
        self.check(index).map_err(HandlerError::Failed)?;
        let paths = self.config.paths(index);
        let (id, keep) = (resolution.conflict_id.clone(), resolution.keep);
        tokio::task::spawn_blocking(move || resolve::resolve(&paths, &id, keep))
            .await
            .map_err(|e| HandlerError::Failed(format!("resolving stopped unexpectedly: {e}")))?
            .map_err(|e| HandlerError::Failed(e.to_string()))
    }

    fn terminate(&mut self) {
        self.abort.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests;
