//! One run of a two-way pair, on a blocking thread: scan both sides,
//! compare each path with the archive, decide, check the guards, apply,
//! and record in the archive exactly what was applied.
//!
//! The rules (Unison's, with rclone bisync's safety checks):
//!
//! - a path changed on one side only is propagated to the other (a create,
//!   a modification, a deletion, a mode change; a rename is a deletion plus
//!   a creation);
//! - a path changed on both sides to the same thing is only recorded;
//! - otherwise, and when a path changed on one side while it or anything
//!   below it changed on the other, it is a conflict: nothing is done to it
//!   or below it, and it is reported (the user decides);
//! - nothing is ever deleted or overwritten in place: the old version is
//!   moved to `.syncmgr/trash/RUN/` on its side; every copy is written to a
//!   temporary name, flushed, and swapped in only if the path still holds
//!   what the scan saw.
//!
//! The archive is updated path by path as changes land, and saved at the
//! end (and every few seconds), so a crash leaves it older than the disk at
//! worst: the next run then sees both sides changed to the same thing and
//! only records it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, DirBuilder, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::super::exec::temp_path;
use super::super::plan::{CHUNK, Problem, read_full};
use super::super::progress::{Reporter, path_text};
use super::archive::{
    Archive, Entry, Key, Kind, OpenConflict, Seen, Stamp, hex, is_within, parent_of, rel_of,
};
use super::scan::{self, Meta, STATE_DIR, Tree};

/// Sides, as indexes into the per-side arrays.
pub(super) const A: usize = 0;
pub(super) const B: usize = 1;

/// How often the archive is saved while changes are applied.
const SAVE_EVERY: Duration = Duration::from_secs(5);

/// Where a run works.
#[derive(Debug, Clone)]
pub(crate) struct PairPaths {
    pub(crate) roots: [PathBuf; 2],
    pub(crate) archive: PathBuf,
    /// How long a run's trash is kept.
    pub(crate) keep_trash: Duration,
}

/// Which guard refused a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuardKind {
    /// A side is empty but the archive says it held files.
    EmptySide,
    /// More than half of a side's files would go to the trash.
    MassDelete,
}

/// A guard's refusal, with a fingerprint of exactly that run.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    pub(crate) kind: GuardKind,
    /// The side that would lose files.
    pub(crate) side: PathBuf,
    /// The other side.
    pub(crate) other: PathBuf,
    pub(crate) deletions: u64,
    pub(crate) files: u64,
    pub(crate) fingerprint: String,
}

impl Guard {
    pub(crate) fn refusal(&self) -> String {
        let (side, other) = (path_text(&self.side), path_text(&self.other));
        match self.kind {
            GuardKind::EmptySide => format!(
                "refused to sync {side} with {other}: {side} is empty but held files at the last sync (is its disk mounted?); syncing would move the {} files of {other} to its trash. Act on this entry to confirm",
                self.deletions
            ),
            GuardKind::MassDelete => format!(
                "refused to sync {side} with {other}: it would move {} of the {} files in {side} to its trash, more than half. Act on this entry to confirm",
                self.deletions, self.files
            ),
        }
    }

    pub(crate) fn consequence(&self) -> String {
        format!(
            "moves {} of the {} files in {} to its trash ({}/{STATE_DIR}/trash)",
            self.deletions,
            self.files,
            path_text(&self.side),
            path_text(&self.side)
        )
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Files and links copied to each side (`[to A, to B]`).
    pub(crate) copied: [u64; 2],
    /// Bytes copied.
    pub(crate) bytes: u64,
    /// Entries moved to a trash (a folder counts once).
    pub(crate) trashed: u64,
    /// Folders created.
    pub(crate) dirs: u64,
    /// Modes brought in line.
    pub(crate) modes: u64,
    /// Paths both sides changed alike (recorded only).
    pub(crate) alike: u64,
    /// Paths skipped because they changed after the scan.
    pub(crate) skipped: u64,
}

/// One conflict as reported to the manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) id: String,
    pub(crate) key: Key,
    pub(crate) text: String,
    /// Per side: its description, size and modification time (`None`: the
    /// side has nothing there).
    pub(crate) sides: [SideVersion; 2],
}

/// One side's version of a conflicted path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SideVersion {
    pub(crate) path: PathBuf,
    pub(crate) what: &'static str,
    pub(crate) size: Option<u64>,
    pub(crate) modified: Option<SystemTime>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Done,
    Stopped,
    Fatal,
}

/// Why a run did nothing.
#[derive(Debug)]
pub(crate) enum Refusal {
    Guard(Guard),
    /// A side is missing: a retry checks again.
    Missing(String),
    /// The archive could not be read, or the folders overlap.
    Broken(String),
}

/// The result of a run.
#[derive(Debug)]
pub(crate) enum Outcome {
    Refused(Refusal),
    Ran(Ran),
}

#[derive(Debug)]
pub(crate) struct Ran {
    pub(crate) stats: Stats,
    pub(crate) problems: Vec<String>,
    pub(crate) end: End,
    /// The conflicts open now (when the run got as far as deciding).
    pub(crate) conflicts: Option<Vec<Found>>,
    /// Ids of conflicts open before that are gone now.
    pub(crate) resolved: Vec<String>,
    pub(crate) elapsed: Duration,
}

/// A run's options.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    /// The fingerprint of the guard the user confirmed: the run goes past
    /// that guard (and only that one) once.
    pub(crate) confirmed: Option<String>,
    /// Only look: scan and decide, change nothing, and stop at the guards
    /// (what `showError` does to check a guard's entry is still current).
    pub(crate) dry_run: bool,
}

/// One step of a run.
#[derive(Debug)]
enum Op {
    /// Copies a file or link from side `from` to the other.
    Copy { key: Key, from: usize },
    /// Creates a folder on side `on`, like the other side's.
    MakeDir { key: Key, on: usize },
    /// Gives the entry on side `on` the other side's mode.
    SetMode { key: Key, on: usize },
    /// Moves the entry (and all below it) on side `on` to the trash.
    Trash { key: Key, on: usize },
    /// Both sides hold the same thing now (or nothing): record it.
    Record { key: Key },
}

/// What a run decided before changing anything.
struct Plan {
    ops: Vec<Op>,
    conflicts: Vec<Found>,
    /// Bytes the copies will move.
    bytes: u64,
    /// Files each side would lose to the trash.
    trashed_files: [u64; 2],
    /// Every path going to a trash (for the guard's fingerprint).
    trashed_keys: Vec<(usize, Key)>,
    /// Archive entries refreshed without a change (a touch).
    refresh: Vec<(Key, usize, Stamp)>,
}

/// Everything a run knows.
struct Run<'r, 'a> {
    paths: &'r PairPaths,
    trees: [Tree; 2],
    archive: Archive,
    reporter: &'r mut Reporter<'a>,
    /// Content (hash) of each side's files, as far as computed.
    hashes: [HashMap<Key, String>; 2],
    problems: Vec<String>,
    stats: Stats,
    /// The trash folder of this run, per side, once made.
    trash: [Option<PathBuf>; 2],
    run_name: String,
    /// Folders created, to give their final mode and time at the end.
    made_dirs: Vec<(usize, Key)>,
    /// Folders that could not be created: nothing below them is tried.
    failed_dirs: Vec<(usize, Key)>,
    last_save: Instant,
    /// Copies waiting for their batch's flush and rename.
    pending: Vec<Pending>,
    pending_bytes: u64,
    /// The device of each root (a copy elsewhere is flushed by itself).
    root_dev: [u64; 2],
    /// Each root with its links resolved, as the scan saw it.
    real_roots: [Option<PathBuf>; 2],
}

/// Runs one pair.
pub(crate) fn run(paths: &PairPaths, options: &Options, reporter: &mut Reporter<'_>) -> Outcome {
    let started = Instant::now();
    let archive = match Archive::load(&paths.archive) {
        Ok(archive) => archive,
        Err(e) => return Outcome::Refused(Refusal::Broken(e.to_string())),
    };
    for side in [A, B] {
        let root = &paths.roots[side];
        match fs::metadata(root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Outcome::Refused(Refusal::Missing(format!(
                    "refused to sync: {} is not a folder; nothing was changed",
                    path_text(root)
                )));
            }
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    && archive.entries.is_empty()
                    && !options.dry_run =>
            {
                // The first sync makes a side that does not exist yet, as
                // long as its parent does (a typo stays an error).
                if let Err(e) = fs::create_dir(root) {
                    return Outcome::Refused(Refusal::Missing(format!(
                        "refused to sync: {} does not exist and cannot be created: {e}",
                        path_text(root)
                    )));
                }
            }
            Err(e) => {
                return Outcome::Refused(Refusal::Missing(format!(
                    "refused to sync: {} is missing ({e}) although it held files at the last sync (is its disk mounted?); nothing was changed. Act on this entry to try again",
                    path_text(root)
                )));
            }
        }
    }
    let run_name = run_name();
    let mut run = Run {
        paths,
        trees: [Tree::default(), Tree::default()],
        archive,
        reporter,
        hashes: [HashMap::new(), HashMap::new()],
        problems: Vec::new(),
        stats: Stats::default(),
        trash: [None, None],
        run_name,
        made_dirs: Vec::new(),
        failed_dirs: Vec::new(),
        last_save: Instant::now(),
        pending: Vec::new(),
        pending_bytes: 0,
        real_roots: [A, B].map(|side| fs::canonicalize(&paths.roots[side]).ok()),
        root_dev: [A, B].map(|side| fs::metadata(&paths.roots[side]).map_or(0, |m| m.dev())),
    };
    if !options.dry_run {
        run.purge_trash();
    }
    if !run.reporter.start() {
        return run.stopped(started);
    }
    for side in [A, B] {
        match scan::scan(&paths.roots[side], run.reporter) {
            Ok(tree) => run.trees[side] = tree,
            Err(scan::Stopped) => return run.stopped(started),
        }
    }
    for side in [A, B] {
        let problems = std::mem::take(&mut run.trees[side].problems);
        run.problems.extend(problems);
    }
    if !options.dry_run {
        run.clear_stale();
    }
    let plan = match run.plan() {
        Ok(plan) => plan,
        Err(scan::Stopped) => return run.stopped(started),
    };
    let guard = run.guard(&plan);
    if let Some(guard) = guard.clone()
        && (options.dry_run || options.confirmed.as_deref() != Some(guard.fingerprint.as_str()))
    {
        return Outcome::Refused(Refusal::Guard(guard));
    }
    if options.dry_run {
        return run.stopped(started);
    }
    let Plan {
        ops,
        conflicts,
        bytes,
        refresh,
        ..
    } = plan;
    for (key, side, stamp) in refresh {
        if let Some(entry) = run.archive.entries.get_mut(&key) {
            *side_stamp(entry, side) = stamp;
        }
    }
    let before: BTreeSet<String> = run.archive.conflicts.iter().map(|c| c.id.clone()).collect();
    run.archive.conflicts = conflicts
        .iter()
        .map(|c| OpenConflict {
            id: c.id.clone(),
            key: c.key.clone(),
            a: run.seen(A, &c.key),
            b: run.seen(B, &c.key),
        })
        .collect();
    let now: BTreeSet<&str> = conflicts.iter().map(|c| c.id.as_str()).collect();
    let resolved = before
        .into_iter()
        .filter(|id| !now.contains(id.as_str()))
        .collect();
    let mut end = End::Done;
    if run.reporter.planned(bytes) {
        for op in ops {
            if run.reporter.stopped() {
                end = End::Stopped;
                break;
            }
            if let Err(e) = run.apply(op) {
                match e {
                    Failure::Stopped => {
                        end = End::Stopped;
                        break;
                    }
                    Failure::Fatal(text) => {
                        run.problems.push(text);
                        end = End::Fatal;
                        break;
                    }
                    Failure::Skip(problem) => {
                        if let Err(Failure::Fatal(text)) = run.problem(problem) {
                            run.problems.push(text);
                            end = End::Fatal;
                            break;
                        }
                    }
                }
            }
            run.save_now_and_then();
        }
    } else {
        end = End::Stopped;
    }
    if end == End::Done {
        if let Err(failure) = run.install_pending() {
            match failure {
                Failure::Stopped => end = End::Stopped,
                Failure::Fatal(text) | Failure::Skip(Problem { text, .. }) => {
                    run.problems.push(text);
                    end = End::Fatal;
                }
            }
        }
    } else {
        run.discard_pending();
    }
    run.reporter.flush();
    run.finish_dirs();
    if let Err(e) = run.archive.save(&paths.archive) {
        run.problems.push(e.to_string());
        end = End::Fatal;
    }
    Outcome::Ran(Ran {
        stats: run.stats,
        problems: run.problems,
        end,
        conflicts: Some(conflicts),
        resolved,
        elapsed: started.elapsed(),
    })
}

/// A copy complete under its temporary name, waiting for its batch to be
/// made durable before it is renamed into place.
struct Pending {
    key: Key,
    to: usize,
    temp: PathBuf,
    bytes: u64,
    kind: Kind,
}

/// A batch of copies is made durable and renamed once it holds this many...
const BATCH_ENTRIES: usize = 512;
/// ...or this many bytes.
const BATCH_BYTES: u64 = 64 << 20;

/// A step that could not go on.
enum Failure {
    Stopped,
    /// This step failed; the others may still work (unless the problem
    /// says the disk is full or read-only).
    Skip(Problem),
    /// The rest is pointless (a full or read-only disk).
    Fatal(String),
}

fn side_stamp(entry: &mut Entry, side: usize) -> &mut Stamp {
    if side == A {
        &mut entry.a
    } else {
        &mut entry.b
    }
}

fn run_name() -> String {
    let now = chrono::Utc::now();
    now.format("%Y%m%d-%H%M%S-%3f").to_string()
}

/// The conflict id of a path: stable, and unique per item.
pub(crate) fn conflict_id(key: &[u8]) -> String {
    let hash = blake3::hash(key).to_hex();
    format!("path-{}", &hash.as_str()[..16])
}

impl Run<'_, '_> {
    fn stopped(&mut self, started: Instant) -> Outcome {
        Outcome::Ran(Ran {
            stats: self.stats,
            problems: std::mem::take(&mut self.problems),
            end: End::Stopped,
            conflicts: None,
            resolved: Vec::new(),
            elapsed: started.elapsed(),
        })
    }

    fn root(&self, side: usize) -> &Path {
        &self.paths.roots[side]
    }

    fn path(&self, side: usize, key: &[u8]) -> PathBuf {
        self.root(side).join(rel_of(key))
    }

    fn meta(&self, side: usize, key: &[u8]) -> Option<&Meta> {
        self.trees[side].entries.get(key)
    }

    fn seen(&self, side: usize, key: &[u8]) -> Option<Seen> {
        self.meta(side, key).map(|m| Seen {
            kind: m.kind,
            size: m.size,
            stamp: m.stamp,
        })
    }

    /// Removes the trash of runs older than the retention.
    fn purge_trash(&mut self) {
        let keep = self.paths.keep_trash;
        for side in [A, B] {
            let dir = self.root(side).join(STATE_DIR).join("trash");
            let Ok(listing) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in listing.flatten() {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > keep);
                if old && let Err(e) = fs::remove_dir_all(entry.path()) {
                    self.problems.push(format!(
                        "cannot empty the old trash {}: {e}",
                        path_text(&entry.path())
                    ));
                }
            }
        }
    }

    /// Temporary files of an interrupted run go to the trash (one may be
    /// an old version swapped out just before a crash).
    fn clear_stale(&mut self) {
        for side in [A, B] {
            for key in std::mem::take(&mut self.trees[side].stale) {
                if let Err(problem) = self.trash_entry(side, &key) {
                    self.problems.push(problem.text);
                }
            }
        }
    }

    /// The content of side's file at `key`, hashing it if not yet known.
    fn hash(&mut self, side: usize, key: &[u8]) -> Result<Option<String>, scan::Stopped> {
        if let Some(h) = self.hashes[side].get(key) {
            return Ok(Some(h.clone()));
        }
        let path = self.path(side, key);
        match scan::hash_file(&path, self.reporter) {
            Ok(Some(h)) => {
                self.hashes[side].insert(key.to_vec(), h.clone());
                Ok(Some(h))
            }
            Ok(None) => Err(scan::Stopped),
            Err(e) => {
                self.problems
                    .push(format!("cannot read {}: {e}", path_text(&path)));
                Ok(None)
            }
        }
    }

    /// Whether side's `key` differs from the archive. `None`: it could not
    /// be told (unreadable), so the path is left alone.
    fn changed(&mut self, side: usize, key: &[u8]) -> Result<Option<bool>, scan::Stopped> {
        let entry = self.archive.entries.get(key);
        let meta = self.meta(side, key);
        Ok(Some(match (entry, meta) {
            (None, None) => false,
            (Some(_), None) | (None, Some(_)) => true,
            (Some(e), Some(m)) if e.kind != m.kind => true,
            (Some(e), Some(m)) => match m.kind {
                Kind::Dir => e.mode != m.mode,
                Kind::Link => m.target.as_deref() != Some(e.content.as_str()),
                Kind::File => {
                    let stamp = if side == A { e.a } else { e.b };
                    if m.size == e.size && m.stamp == stamp {
                        false
                    } else if m.size != e.size {
                        true
                    } else {
                        // Same size, another stamp: a touch, a mode change,
                        // or new contents; only the hash tells.
                        let (content, mode) = (e.content.clone(), e.mode);
                        let mode_now = m.mode;
                        match self.hash(side, key)? {
                            Some(h) => h != content || mode_now != mode,
                            None => return Ok(None),
                        }
                    }
                }
            },
        }))
    }

    /// Whether both sides hold the same thing at `key` now.
    fn alike(&mut self, key: &[u8]) -> Result<Option<bool>, scan::Stopped> {
        let (a, b) = (self.meta(A, key).cloned(), self.meta(B, key).cloned());
        Ok(Some(match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) if a.kind == b.kind => match a.kind {
                Kind::Dir => a.mode == b.mode,
                Kind::Link => a.target == b.target,
                Kind::File => {
                    if a.size != b.size || a.mode != b.mode {
                        false
                    } else {
                        let Some(ha) = self.hash(A, key)? else {
                            return Ok(None);
                        };
                        let Some(hb) = self.hash(B, key)? else {
                            return Ok(None);
                        };
                        ha == hb
                    }
                }
            },
            _ => false,
        }))
    }

    /// Decides every path.
    fn plan(&mut self) -> Result<Plan, scan::Stopped> {
        let keys: BTreeSet<Key> = self
            .archive
            .entries
            .keys()
            .cloned()
            .chain(self.trees[A].entries.keys().cloned())
            .chain(self.trees[B].entries.keys().cloned())
            .collect();
        // Pass 1: what changed on each side.
        let mut changed: BTreeMap<Key, [bool; 2]> = BTreeMap::new();
        let mut unknown: Vec<Key> = Vec::new();
        for key in &keys {
            if self.trees[A].is_unknown(key) || self.trees[B].is_unknown(key) {
                continue;
            }
            let (ca, cb) = (self.changed(A, key)?, self.changed(B, key)?);
            match (ca, cb) {
                (Some(ca), Some(cb)) => {
                    changed.insert(key.clone(), [ca, cb]);
                }
                _ => unknown.push(key.clone()),
            }
        }
        // What changed below each folder, per side (Unison: a change on one
        // side conflicts with a change at or below the same path on the
        // other).
        let mut below: [BTreeSet<Key>; 2] = [BTreeSet::new(), BTreeSet::new()];
        for (key, c) in &changed {
            for side in [A, B] {
                if c[side] {
                    let mut at: &[u8] = key;
                    while let Some(parent) = parent_of(at) {
                        if !below[side].insert(parent.to_vec()) {
                            break;
                        }
                        at = parent;
                    }
                }
            }
        }
        for side in [A, B] {
            // Something unseen below a folder is a change we cannot rule out.
            for key in self.trees[side].unknown.iter().chain(&unknown) {
                let mut at: &[u8] = key;
                while let Some(parent) = parent_of(at) {
                    below[side].insert(parent.to_vec());
                    at = parent;
                }
            }
        }
        let mut plan = Plan {
            ops: Vec::new(),
            conflicts: Vec::new(),
            bytes: 0,
            trashed_files: [0, 0],
            trashed_keys: Vec::new(),
            refresh: Vec::new(),
        };
        let mut skip: Option<Key> = None;
        for (key, [ca, cb]) in changed {
            if skip.as_deref().is_some_and(|root| is_within(&key, root)) {
                continue;
            }
            skip = None;
            if !self.reporter.scanning(&rel_of(&key)) {
                return Err(scan::Stopped);
            }
            match (ca, cb) {
                (false, false) => {
                    for side in [A, B] {
                        if let (Some(m), Some(e)) =
                            (self.meta(side, &key), self.archive.entries.get(&key))
                        {
                            let stamp = if side == A { e.a } else { e.b };
                            if m.stamp != stamp {
                                plan.refresh.push((key.clone(), side, m.stamp));
                            }
                        }
                    }
                }
                (true, false) | (false, true) => {
                    let from = if ca { A } else { B };
                    let to = 1 - from;
                    let both_dirs = self.meta(from, &key).map(|m| m.kind) == Some(Kind::Dir)
                        && self.meta(to, &key).map(|m| m.kind) == Some(Kind::Dir);
                    if !both_dirs && below[to].contains(&key) {
                        plan.conflicts.push(self.found(&key, [ca, cb], true));
                        skip = Some(key);
                        continue;
                    }
                    if self.propagate(&key, from, &mut plan) {
                        skip = Some(key);
                    }
                }
                (true, true) => match self.alike(&key)? {
                    None => {}
                    Some(true) => plan.ops.push(Op::Record { key }),
                    Some(false) => {
                        let both_dirs = self.meta(A, &key).map(|m| m.kind) == Some(Kind::Dir)
                            && self.meta(B, &key).map(|m| m.kind) == Some(Kind::Dir);
                        plan.conflicts.push(self.found(&key, [ca, cb], false));
                        if !both_dirs {
                            skip = Some(key);
                        }
                    }
                },
            }
        }
        Ok(plan)
    }

    /// Plans carrying side `from`'s `key` to the other side; `true` when
    /// everything below `key` is dealt with too.
    fn propagate(&mut self, key: &[u8], from: usize, plan: &mut Plan) -> bool {
        let to = 1 - from;
        let source = self.meta(from, key).cloned();
        let target = self.meta(to, key).cloned();
        match (source, target) {
            (None, None) => {
                plan.ops.push(Op::Record { key: key.to_vec() });
                true
            }
            (None, Some(_)) => {
                self.plan_trash(to, key, plan);
                plan.ops.push(Op::Trash {
                    key: key.to_vec(),
                    on: to,
                });
                true
            }
            (Some(s), target) => match s.kind {
                Kind::Dir => {
                    match target.map(|t| t.kind) {
                        Some(Kind::Dir) => plan.ops.push(Op::SetMode {
                            key: key.to_vec(),
                            on: to,
                        }),
                        Some(_) => {
                            self.plan_trash(to, key, plan);
                            plan.ops.push(Op::Trash {
                                key: key.to_vec(),
                                on: to,
                            });
                            plan.ops.push(Op::MakeDir {
                                key: key.to_vec(),
                                on: to,
                            });
                        }
                        None => plan.ops.push(Op::MakeDir {
                            key: key.to_vec(),
                            on: to,
                        }),
                    }
                    false
                }
                Kind::File | Kind::Link => {
                    // The contents are the archive's (hashed and equal) and
                    // the other side still holds the archive's: only the
                    // mode moves.
                    let mode_only = s.kind == Kind::File
                        && target.as_ref().is_some_and(|t| t.kind == Kind::File)
                        && self.archive.entries.get(key).is_some_and(|e| {
                            e.kind == Kind::File && self.hashes[from].get(key) == Some(&e.content)
                        });
                    if mode_only {
                        plan.ops.push(Op::SetMode {
                            key: key.to_vec(),
                            on: to,
                        });
                    } else {
                        if let Some(t) = &target {
                            // Replaced: the old version (a whole folder, if
                            // it was one) goes to the trash.
                            if t.kind == Kind::Dir {
                                self.plan_trash(to, key, plan);
                            } else {
                                plan.trashed_keys.push((to, key.to_vec()));
                            }
                        }
                        plan.bytes += s.size;
                        plan.ops.push(Op::Copy {
                            key: key.to_vec(),
                            from,
                        });
                    }
                    true
                }
            },
        }
    }

    /// Counts what going to side's trash at `key` takes with it.
    fn plan_trash(&self, side: usize, key: &[u8], plan: &mut Plan) {
        let files = self.trees[side]
            .entries
            .range(key.to_vec()..)
            .take_while(|(k, _)| is_within(k, key))
            .filter(|(_, m)| m.kind != Kind::Dir)
            .count() as u64;
        plan.trashed_files[side] += files;
        plan.trashed_keys.push((side, key.to_vec()));
    }

    fn found(&self, key: &[u8], changed: [bool; 2], below: bool) -> Found {
        let describe = |side: usize| -> &'static str {
            let meta = self.meta(side, key);
            let entry = self.archive.entries.get(key);
            match (entry, meta) {
                _ if !changed[side] && below => "changed inside",
                _ if !changed[side] => "unchanged",
                (_, None) => "deleted",
                (None, Some(m)) => match m.kind {
                    Kind::Dir => "created (folder)",
                    Kind::Link => "created (link)",
                    Kind::File => "created",
                },
                (Some(e), Some(m)) if e.kind != m.kind => match m.kind {
                    Kind::Dir => "became a folder",
                    Kind::Link => "became a link",
                    Kind::File => "became a file",
                },
                (Some(e), Some(m))
                    if m.kind == Kind::File && e.mode != m.mode && e.size == m.size =>
                {
                    "modified (or mode changed)"
                }
                (Some(_), Some(m)) if m.kind == Kind::Dir => "mode changed",
                _ => "modified",
            }
        };
        let sides = [A, B].map(|side| {
            let meta = self.meta(side, key);
            SideVersion {
                path: self.path(side, key),
                what: describe(side),
                size: meta.filter(|m| m.kind == Kind::File).map(|m| m.size),
                modified: meta.map(|m| m.stamp.modified()),
            }
        });
        let rel = rel_of(key);
        let text = format!(
            "{}: {} in {}, {} in {}",
            path_text(&rel),
            sides[A].what,
            path_text(self.root(A)),
            sides[B].what,
            path_text(self.root(B))
        );
        Found {
            id: conflict_id(key),
            key: key.to_vec(),
            text,
            sides,
        }
    }

    fn guard(&self, plan: &Plan) -> Option<Guard> {
        let make = |kind, side: usize, deletions: u64, files: u64| {
            let mut hasher = blake3::Hasher::new();
            hasher.update(&[kind as u8, side as u8]);
            for root in &self.paths.roots {
                hasher.update(root.as_os_str().as_encoded_bytes());
                hasher.update(&[0]);
            }
            for (s, key) in &plan.trashed_keys {
                hasher.update(&[*s as u8]);
                hasher.update(key);
                hasher.update(&[1]);
            }
            Guard {
                kind,
                side: self.root(side).to_path_buf(),
                other: self.root(1 - side).to_path_buf(),
                deletions,
                files,
                fingerprint: hasher.finalize().to_hex()[..12].to_owned(),
            }
        };
        for side in [A, B] {
            if self.trees[side].entries.is_empty()
                && self.trees[side].unknown.is_empty()
                && !self.archive.entries.is_empty()
                && plan.trashed_files[1 - side] > 0
            {
                let other = 1 - side;
                return Some(make(
                    GuardKind::EmptySide,
                    side,
                    plan.trashed_files[other],
                    self.trees[other].files(),
                ));
            }
        }
        for side in [A, B] {
            let files = self.trees[side].files();
            let going = plan.trashed_files[side];
            if going > 0 && going * 2 > files {
                return Some(make(GuardKind::MassDelete, side, going, files));
            }
        }
        None
    }

    fn save_now_and_then(&mut self) {
        if self.last_save.elapsed() >= SAVE_EVERY {
            self.last_save = Instant::now();
            if let Err(e) = self.archive.save(&self.paths.archive) {
                self.problems.push(e.to_string());
            }
        }
    }

    fn blocked(&self, side: usize, key: &[u8]) -> bool {
        self.failed_dirs
            .iter()
            .any(|(s, root)| *s == side && is_within(key, root))
    }

    fn apply(&mut self, op: Op) -> Result<(), Failure> {
        match op {
            Op::Record { key } => {
                self.record(&key);
                self.stats.alike += 1;
                Ok(())
            }
            Op::Trash { key, on } => {
                if !self.unchanged_since_scan(on, &key) {
                    self.stats.skipped += 1;
                    return Ok(());
                }
                match self.trash_entry(on, &key) {
                    Ok(()) => {
                        self.stats.trashed += 1;
                        self.archive.forget_tree(&key);
                        Ok(())
                    }
                    Err(p) => self.problem(p),
                }
            }
            Op::MakeDir { key, on } => {
                if self.blocked(on, &key) {
                    return Ok(());
                }
                if !self.parent_intact(on, &key) {
                    self.stats.skipped += 1;
                    self.failed_dirs.push((on, key));
                    return Ok(());
                }
                let path = self.path(on, &key);
                // Private until its contents are in; its mode comes at the end.
                match DirBuilder::new().mode(0o700).create(&path) {
                    Ok(()) => {
                        self.stats.dirs += 1;
                        self.made_dirs.push((on, key));
                        Ok(())
                    }
                    Err(e) => {
                        self.failed_dirs.push((on, key));
                        self.problem(Problem::io("cannot create folder", &path, &e))
                    }
                }
            }
            Op::SetMode { key, on } => {
                let Some(mode) = self.meta(1 - on, &key).map(|m| m.mode) else {
                    return Ok(());
                };
                if !self.unchanged_since_scan(on, &key) {
                    self.stats.skipped += 1;
                    return Ok(());
                }
                let path = self.path(on, &key);
                match fs::set_permissions(&path, Permissions::from_mode(mode)) {
                    Ok(()) => {
                        self.stats.modes += 1;
                        let now = fs::symlink_metadata(&path).ok();
                        self.record_with(&key, on, now.as_ref());
                        Ok(())
                    }
                    Err(e) => self.problem(Problem::io("cannot set the mode of", &path, &e)),
                }
            }
            Op::Copy { key, from } => {
                if self.blocked(1 - from, &key) {
                    return Ok(());
                }
                self.copy(&key, from)
            }
        }
    }

    /// Notes a problem; one that makes the rest pointless (a full or
    /// read-only disk) ends the run.
    fn problem(&mut self, problem: Problem) -> Result<(), Failure> {
        if problem.fatal {
            Err(Failure::Fatal(problem.text))
        } else {
            self.problems.push(problem.text);
            Ok(())
        }
    }

    /// The entry on `side` at `key` is still what the scan saw (absent
    /// included). For a folder: the same folder, with the same entries
    /// directly in it (its modification time).
    fn unchanged_since_scan(&self, side: usize, key: &[u8]) -> bool {
        if !self.parent_intact(side, key) {
            return false;
        }
        let now = fs::symlink_metadata(self.path(side, key)).ok();
        match (self.meta(side, key), now) {
            (None, None) => true,
            (Some(m), Some(now)) => {
                let stamp = scan::stamp(&now);
                let kind = scan::Meta::of(&now, None).map(|n| n.kind);
                if kind != Some(m.kind) || stamp.ino != m.stamp.ino {
                    return false;
                }
                match m.kind {
                    Kind::Dir => stamp.mtime == m.stamp.mtime,
                    Kind::Link => stamp.ctime == m.stamp.ctime,
                    Kind::File => {
                        stamp.mtime == m.stamp.mtime
                            && stamp.ctime == m.stamp.ctime
                            && now.size() == m.size
                    }
                }
            }
            _ => false,
        }
    }

    /// The folders leading to `key` on `side` are still real folders of the
    /// root (none was replaced by a link since the scan): a write or a move
    /// through them stays in the tree.
    fn parent_intact(&self, side: usize, key: &[u8]) -> bool {
        let Some(real) = &self.real_roots[side] else {
            return false;
        };
        let rel = rel_of(key);
        match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            None => fs::canonicalize(self.root(side)).ok().as_ref() == Some(real),
            Some(parent) => {
                fs::canonicalize(self.root(side).join(parent)).ok() == Some(real.join(parent))
            }
        }
    }

    /// This run's trash folder on `side`.
    fn trash_dir(&mut self, side: usize) -> Result<PathBuf, Problem> {
        if let Some(dir) = &self.trash[side] {
            return Ok(dir.clone());
        }
        let dir = self
            .root(side)
            .join(STATE_DIR)
            .join("trash")
            .join(&self.run_name);
        fs::create_dir_all(&dir)
            .map_err(|e| Problem::io("cannot make the trash folder", &dir, &e))?;
        self.trash[side] = Some(dir.clone());
        Ok(dir)
    }

    /// Moves side's `key` (a whole folder, if it is one) into the trash,
    /// under the same relative path.
    fn trash_entry(&mut self, side: usize, key: &[u8]) -> Result<(), Problem> {
        let from = self.path(side, key);
        self.move_to_trash(side, &from, &rel_of(key))
    }

    fn move_to_trash(&mut self, side: usize, from: &Path, rel: &Path) -> Result<(), Problem> {
        let trash = self.trash_dir(side)?;
        let to = trash.join(rel);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| Problem::io("cannot make the trash folder", parent, &e))?;
        }
        move_without_replacing(from, to)
            .map_err(|e| Problem::io("cannot move to the trash:", from, &e))
    }

    /// Records that both sides hold what they hold now at `key`.
    fn record(&mut self, key: &[u8]) {
        let now = [A, B].map(|side| fs::symlink_metadata(self.path(side, key)).ok());
        match (&now[A], &now[B]) {
            (None, None) => {
                self.archive.forget_tree(key);
            }
            (Some(a), Some(b)) => {
                let Some(meta) = Meta::of(a, None) else {
                    return;
                };
                let content = match meta.kind {
                    Kind::Dir => String::new(),
                    Kind::Link => match self.meta(A, key).and_then(|m| m.target.clone()) {
                        Some(t) => t,
                        None => return,
                    },
                    Kind::File => match self.hashes[A].get(key) {
                        Some(h) => h.clone(),
                        None => return,
                    },
                };
                let (sa, sb) = (scan::stamp(a), scan::stamp(b));
                // Only what the scan saw is recorded: a side that changed
                // since is looked at again next time.
                let as_scanned = |side: usize, s: Stamp| {
                    self.meta(side, key)
                        .is_some_and(|m| m.stamp.ino == s.ino && m.stamp.mtime == s.mtime)
                };
                if !(as_scanned(A, sa) && as_scanned(B, sb)) {
                    return;
                }
                self.archive.entries.insert(
                    key.to_vec(),
                    Entry {
                        kind: meta.kind,
                        mode: meta.mode,
                        size: meta.size,
                        content,
                        mtime: sa.mtime,
                        a: sa,
                        b: sb,
                    },
                );
            }
            _ => {}
        }
    }

    /// After side `changed_on` was brought in line with the other: the
    /// archive takes the other side's entry and `changed_on`'s new stamp.
    fn record_with(&mut self, key: &[u8], changed_on: usize, now: Option<&fs::Metadata>) {
        let other = 1 - changed_on;
        let Some(src) = self.meta(other, key).cloned() else {
            return;
        };
        let Some(now) = now else {
            return;
        };
        let content = match src.kind {
            Kind::Dir => String::new(),
            Kind::Link => src.target.clone().unwrap_or_default(),
            Kind::File => match self.hashes[other]
                .get(key)
                .cloned()
                .or_else(|| self.archive.entries.get(key).map(|e| e.content.clone()))
            {
                Some(h) => h,
                None => return,
            },
        };
        let mut stamps = [Stamp::default(); 2];
        stamps[other] = src.stamp;
        stamps[changed_on] = scan::stamp(now);
        self.archive.entries.insert(
            key.to_vec(),
            Entry {
                kind: src.kind,
                mode: src.mode,
                size: src.size,
                content,
                mtime: src.stamp.mtime,
                a: stamps[A],
                b: stamps[B],
            },
        );
    }

    fn copy(&mut self, key: &[u8], from: usize) -> Result<(), Failure> {
        let to = 1 - from;
        let Some(src) = self.meta(from, key).cloned() else {
            return Ok(());
        };
        let rel = rel_of(key);
        if !self.reporter.file(&rel) {
            return Err(Failure::Stopped);
        }
        if !self.parent_intact(from, key) || !self.parent_intact(to, key) {
            // A folder on the way was replaced since the scan: next time.
            self.stats.skipped += 1;
            return Ok(());
        }
        let source = self.path(from, key);
        let dest = self.path(to, key);
        let made = match src.kind {
            Kind::Link => self.make_link(&source, &dest, &src),
            _ => self.make_file(key, from, &source, &dest, &src),
        };
        let (temp, hash) = match made {
            Ok(Some(made)) => made,
            Ok(None) => {
                // Changed since the scan: next time.
                self.stats.skipped += 1;
                return Ok(());
            }
            Err(Failure::Stopped) => return Err(Failure::Stopped),
            Err(Failure::Fatal(text)) => return Err(Failure::Fatal(text)),
            Err(Failure::Skip(problem)) => return self.problem(problem),
        };
        if let Some(h) = hash {
            self.hashes[from].insert(key.to_vec(), h);
        }
        self.pending_bytes += src.size;
        self.pending.push(Pending {
            key: key.to_vec(),
            to,
            temp,
            bytes: src.size,
            kind: src.kind,
        });
        if self.pending.len() >= BATCH_ENTRIES || self.pending_bytes >= BATCH_BYTES {
            self.install_pending()?;
        }
        Ok(())
    }

    /// Makes the copies waiting for their rename durable (one `syncfs` per
    /// side instead of one `fsync` per file), then puts each in place if
    /// its destination still holds what the scan saw.
    fn install_pending(&mut self) -> Result<(), Failure> {
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        for side in [A, B] {
            if !pending.iter().any(|p| p.to == side) {
                continue;
            }
            let flushed =
                File::open(self.root(side)).and_then(|root| syncmgr_sys::sync_file_system(&root));
            if let Err(e) = flushed {
                for p in &pending {
                    let _ = remove_any(&p.temp);
                }
                let problem = Problem::io("cannot flush the copies to", self.root(side), &e);
                return Err(Failure::Fatal(problem.text));
            }
        }
        let mut failure = None;
        for p in pending {
            if failure.is_some() {
                let _ = remove_any(&p.temp);
                continue;
            }
            if let Err(f) = self.install(p) {
                failure = Some(f);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Removes the copies still waiting: a stop, they never get their names.
    fn discard_pending(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            let _ = remove_any(&p.temp);
        }
        self.pending_bytes = 0;
    }

    fn install(&mut self, p: Pending) -> Result<(), Failure> {
        let Pending {
            key,
            to,
            temp,
            bytes,
            kind,
        } = p;
        let dest = self.path(to, &key);
        // The re-check: the destination still holds what the scan saw.
        if !self.unchanged_since_scan(to, &key) {
            let _ = remove_any(&temp);
            self.stats.skipped += 1;
            return Ok(());
        }
        let installed = if self.meta(to, &key).is_none() {
            match syncmgr_sys::rename_new(&temp, &dest) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let _ = remove_any(&temp);
                    self.stats.skipped += 1;
                    return Ok(());
                }
                Err(e) if syncmgr_sys::rename_unsupported(&e) => {
                    fs::rename(&temp, &dest).map_err(|e| Problem::io("cannot create", &dest, &e))
                }
                Err(e) => Err(Problem::io("cannot create", &dest, &e)),
            }
        } else {
            self.swap_in(to, &key, &temp, &dest)
        };
        if let Err(problem) = installed {
            let _ = remove_any(&temp);
            return self.problem(problem);
        }
        self.stats.copied[to] += 1;
        if kind == Kind::File {
            self.stats.bytes += bytes;
        }
        // A folder replaced by a file went to the trash whole.
        self.archive.forget_tree(&key);
        let now = fs::symlink_metadata(&dest).ok();
        self.record_with(&key, to, now.as_ref());
        Ok(())
    }

    /// Puts `temp` at `dest`, whose old version goes to the trash; at no
    /// moment is `dest` missing where the system can swap atomically.
    fn swap_in(
        &mut self,
        side: usize,
        key: &[u8],
        temp: &Path,
        dest: &Path,
    ) -> Result<(), Problem> {
        match syncmgr_sys::rename_swap(temp, dest) {
            Ok(()) => {
                // `temp` now holds the old version.
                self.move_to_trash(side, temp, &rel_of(key))
            }
            Err(e) if syncmgr_sys::rename_unsupported(&e) => {
                self.trash_entry(side, key)?;
                fs::rename(temp, dest).map_err(|e| Problem::io("cannot replace", dest, &e))
            }
            Err(e) => Err(Problem::io("cannot replace", dest, &e)),
        }
    }

    fn make_link(
        &mut self,
        source: &Path,
        dest: &Path,
        src: &Meta,
    ) -> Result<Option<(PathBuf, Option<String>)>, Failure> {
        let target = match fs::read_link(source) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Failure::Skip(Problem::io(
                    "cannot read the link",
                    source,
                    &e,
                )));
            }
        };
        if Some(hex(target.as_os_str().as_encoded_bytes())) != src.target {
            return Ok(None);
        }
        let temp = temp_path(dest);
        std::os::unix::fs::symlink(&target, &temp)
            .map_err(|e| Failure::Skip(Problem::io("cannot create the link", dest, &e)))?;
        let mtime = filetime::FileTime::from_system_time(src.stamp.modified());
        let _ = filetime::set_symlink_file_times(&temp, mtime, mtime);
        Ok(Some((temp, None)))
    }

    /// Copies side `from`'s file into a temporary file next to `dest`,
    /// hashing it; `None` when the source changed since the scan.
    fn make_file(
        &mut self,
        key: &[u8],
        from: usize,
        source: &Path,
        dest: &Path,
        src: &Meta,
    ) -> Result<Option<(PathBuf, Option<String>)>, Failure> {
        let mut input = match OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(source)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Failure::Skip(Problem::io("cannot read", source, &e)));
            }
        };
        let same = |meta: &fs::Metadata| {
            let s = scan::stamp(meta);
            meta.is_file() && s == src.stamp && meta.size() == src.size
        };
        match input.metadata() {
            Ok(meta) if same(&meta) => {}
            _ => return Ok(None),
        }
        let temp = temp_path(dest);
        let mut output = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
        {
            Ok(f) => f,
            Err(e) => {
                return Err(Failure::Skip(Problem::io("cannot write", dest, &e)));
            }
        };
        let root_dev = self.root_dev[1 - from];
        let filled = fill(&mut input, &mut output, src, root_dev, self.reporter);
        let hash = match filled {
            Ok(Some(hash)) => hash,
            Ok(None) => {
                drop(output);
                let _ = fs::remove_file(&temp);
                return Err(Failure::Stopped);
            }
            Err(e) => {
                drop(output);
                let _ = fs::remove_file(&temp);
                return Err(Failure::Skip(Problem::io("cannot copy", source, &e)));
            }
        };
        // The source was not changed while it was read, and is what was
        // compared (when it was hashed before).
        let unchanged = input.metadata().is_ok_and(|m| same(&m))
            && self.hashes[from].get(key).is_none_or(|h| *h == hash);
        if !unchanged {
            drop(output);
            let _ = fs::remove_file(&temp);
            return Ok(None);
        }
        Ok(Some((temp, Some(hash))))
    }

    /// Gives the folders this run created their mode and time, deepest
    /// first (entries created in a folder change its time).
    fn finish_dirs(&mut self) {
        for (side, key) in std::mem::take(&mut self.made_dirs).into_iter().rev() {
            let other = 1 - side;
            let Some(src) = self.meta(other, &key).cloned() else {
                continue;
            };
            let path = self.path(side, &key);
            let mtime = filetime::FileTime::from_system_time(src.stamp.modified());
            let done = fs::set_permissions(&path, Permissions::from_mode(src.mode))
                .and_then(|()| filetime::set_file_mtime(&path, mtime));
            match done {
                Ok(()) => {
                    let now = fs::symlink_metadata(&path).ok();
                    self.record_with(&key, side, now.as_ref());
                }
                Err(e) => self.problems.push(format!(
                    "cannot set the mode or time of {}: {e}",
                    path_text(&path)
                )),
            }
        }
    }
}

/// Copies a chunk at a time (a cancel is seen between chunks), hashing,
/// then gives the copy its mode and time and flushes it. `None`: stopped.
fn fill(
    input: &mut File,
    output: &mut File,
    src: &Meta,
    root_dev: u64,
    reporter: &mut Reporter<'_>,
) -> io::Result<Option<String>> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0; CHUNK];
    let large = src.size > CHUNK as u64;
    loop {
        let n = read_full(input, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n])?;
        if !reporter.bytes(n as u64, large) {
            return Ok(None);
        }
        if n < buf.len() {
            break;
        }
    }
    output.set_permissions(Permissions::from_mode(src.mode))?;
    output.set_times(FileTimes::new().set_modified(src.stamp.modified()))?;
    if !cfg!(target_os = "linux") || output.metadata()?.dev() != root_dev {
        // The batch's one `syncfs` reaches only the root's file system (and
        // exists only on Linux): flush this one now.
        output.sync_all()?;
    }
    Ok(Some(hasher.finalize().to_hex().to_string()))
}

/// Renames `from` to `to`, or to `to.1`, `to.2`... when the name is taken:
/// never over anything (the trash may already hold a version of the same
/// path). A `from` already gone is done.
pub(super) fn move_without_replacing(from: &Path, mut to: PathBuf) -> io::Result<()> {
    let name = to.file_name().unwrap_or_default().to_os_string();
    let mut n = 1;
    loop {
        match syncmgr_sys::rename_new(from, &to) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let mut next = name.clone();
                next.push(format!(".{n}"));
                to.set_file_name(next);
                n += 1;
            }
            // No `renameat2` here: a plain rename, once the name is free.
            Err(e) if syncmgr_sys::rename_unsupported(&e) && !to.exists() => {
                return fs::rename(from, &to);
            }
            Err(e)
                if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(from).is_err() =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

/// Removes a temporary entry of ours (a file, a link, or an old folder
/// swapped out; never a user's entry).
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    }
}
