//! One item's run, on a blocking thread: check where the folders are now,
//! scan, apply the guards, check again, then carry the plan out.
//!
//! The registration was checked when it was stored, but folders move: a
//! target may since have become a symbolic link into its source, or a
//! folder of another registration. So every run resolves both folders again
//! (links followed) and refuses, touching nothing, when they overlap each
//! other or any other pair ([`Neighbour`]); the run then works on the
//! resolved paths, and checks them once more between the scan and the first
//! change, so that a folder swapped while it was scanned is not written.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use syncmgr_core::HandlerCallback;

use super::config::{FolderPair, Neighbour, Resolved};
use super::exec::{self, End, Stats};
use super::plan::{self, Op, Options, Plan, Problem};
use super::progress::{Reporter, path_text};

/// Everything one item's run needs, owned, to move onto a blocking thread.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) item: String,
    pub(super) pair: FolderPair,
    /// Every other pair, of this registration and of the others: the run
    /// refuses to write where one of them reads or writes.
    pub(super) neighbours: Vec<Neighbour>,
    pub(super) options: Options,
    /// The guard the user confirmed (`showError`), by its fingerprint: the
    /// run goes ahead past that guard, and that guard only, once.
    pub(super) confirmed: Option<String>,
    pub(super) callback: HandlerCallback,
    pub(super) abort: Arc<AtomicBool>,
}

/// Which guard refused a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GuardKind {
    /// The source is empty and the target is not.
    EmptySource,
    /// More than half of the target's files would go.
    MassDelete,
}

/// A guard's refusal: what it protects, and a fingerprint of exactly that
/// run, so that a confirmation given for it confirms nothing else.
#[derive(Debug, Clone)]
pub(super) struct Guard {
    pub(super) kind: GuardKind,
    pub(super) source: PathBuf,
    pub(super) target: PathBuf,
    pub(super) deletions: u64,
    pub(super) target_files: u64,
    /// 12 hex digits of a hash of the kind, both folders and every path the
    /// run would remove.
    pub(super) fingerprint: String,
}

impl Guard {
    /// The log entry's text.
    pub(super) fn refusal(&self) -> String {
        let (source, target) = (path_text(&self.source), path_text(&self.target));
        match self.kind {
            GuardKind::EmptySource => format!(
                "refused to mirror {source} to {target}: the source folder is empty but the target is not (is the source's disk mounted?); act on this entry to confirm and mirror it anyway"
            ),
            GuardKind::MassDelete => format!(
                "refused to mirror {source} to {target}: it would delete {} of the {} files in the target, more than half; act on this entry to confirm and mirror it anyway",
                self.deletions, self.target_files
            ),
        }
    }

    /// What confirming does, as the user is asked.
    pub(super) fn consequence(&self) -> String {
        let (source, target) = (path_text(&self.source), path_text(&self.target));
        let deletes = match self.deletions {
            0 => "deletes nothing".to_owned(),
            1 => "deletes 1 file".to_owned(),
            n => format!("deletes {n} files"),
        };
        match self.kind {
            GuardKind::EmptySource => format!(
                "the source {source} is empty; mirroring it to {target} {deletes} from {target}"
            ),
            GuardKind::MassDelete => format!(
                "mirroring {source} to {target} {deletes} of the {} in {target}",
                self.target_files
            ),
        }
    }
}

/// Why a run was refused before it changed anything.
#[derive(Debug)]
pub(super) enum Refusal {
    /// A guard: the user may confirm it.
    Guard(Guard),
    /// The source is missing or not a folder: a retry checks again.
    Missing(String),
    /// The folders overlap each other or another pair's, or moved while
    /// they were scanned: a retry checks again; nothing confirms it away.
    Unsafe(String),
}

/// How an item's run ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Refused; nothing was changed.
    Refused(Refusal),
    /// The run happened (completely or not).
    Ran {
        stats: Stats,
        problems: Vec<Problem>,
        end: End,
        elapsed: Duration,
    },
}

/// A run scanned and cleared by the guards, ready to be carried out.
struct Ready {
    folders: Resolved,
    roots: Roots,
    plan: Plan,
    target_exists: bool,
}

/// Device and inode of both roots when they were scanned.
#[derive(Debug, PartialEq, Eq)]
struct Roots {
    source: (u64, u64),
    target: Option<(u64, u64)>,
}

fn identity(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// Runs one item to its end.
pub(super) fn run(job: &Job) -> Outcome {
    let started = Instant::now();
    let mut reporter = Reporter::new(&job.callback, &job.item, &job.abort);
    let ran = |stats, problems, end| Outcome::Ran {
        stats,
        problems,
        end,
        elapsed: started.elapsed(),
    };
    if !reporter.start() {
        return ran(Stats::default(), Vec::new(), End::Stopped);
    }
    let ready = match prepare(job, job.confirmed.as_deref(), &mut reporter) {
        Ok(ready) => ready,
        Err(Prepared::Refused(refusal)) => return Outcome::Refused(refusal),
        Err(Prepared::Failed(problem)) => return ran(Stats::default(), vec![problem], End::Fatal),
        Err(Prepared::Stopped) => return ran(Stats::default(), Vec::new(), End::Stopped),
    };
    let Ready {
        folders,
        roots,
        plan,
        target_exists,
    } = ready;
    // The scan may have taken minutes: the folders must still be the ones
    // it looked at before anything is written or removed.
    if let Err(refusal) = recheck(&job.pair, &folders, &roots) {
        return Outcome::Refused(refusal);
    }
    let (source, target) = (&folders.source, &folders.target);
    if !target_exists && let Err(e) = fs::create_dir_all(target) {
        return ran(
            Stats::default(),
            vec![Problem::io("cannot create folder", target, &e)],
            End::Fatal,
        );
    }
    if !reporter.planned(plan.copy_bytes) {
        return ran(Stats::default(), plan.problems, End::Stopped);
    }
    let (stats, problems, end) = exec::execute(source, target, plan, &mut reporter);
    ran(stats, problems, end)
}

/// What a retry of this item would run into, looked at without changing
/// anything or reporting progress (for `showError`): the guard that would
/// refuse it, if any.
pub(super) fn guard_of(job: &Job) -> Option<Guard> {
    let mut reporter = Reporter::quiet(&job.callback, &job.item, &job.abort);
    match prepare(job, None, &mut reporter) {
        Err(Prepared::Refused(Refusal::Guard(guard))) => Some(guard),
        _ => None,
    }
}

/// Why [`prepare`] did not produce a run.
enum Prepared {
    Refused(Refusal),
    Failed(Problem),
    Stopped,
}

/// Resolves and checks the folders, scans, and applies the guards (all but
/// the one whose fingerprint is `confirmed`).
fn prepare(
    job: &Job,
    confirmed: Option<&str>,
    reporter: &mut Reporter<'_>,
) -> Result<Ready, Prepared> {
    let folders = check_folders(&job.pair, &job.neighbours).map_err(Prepared::Refused)?;
    let (source, target) = (&folders.source, &folders.target);
    let source_root = match fs::metadata(source) {
        Ok(meta) if meta.is_dir() => meta,
        Ok(_) => {
            return Err(Prepared::Refused(Refusal::Missing(format!(
                "refused to mirror {}: it is not a folder; fix the registration, or act on this entry to try again",
                path_text(&job.pair.source)
            ))));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Prepared::Refused(Refusal::Missing(format!(
                "refused to mirror {}: the source folder does not exist (is its disk mounted?); act on this entry to try again once it is there",
                path_text(&job.pair.source)
            ))));
        }
        Err(e) => return Err(Prepared::Failed(Problem::io("cannot read", source, &e))),
    };
    let target_root = match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => Some(meta),
        Ok(_) => {
            return Err(Prepared::Failed(Problem {
                text: format!(
                    "the target {} exists and is not a folder",
                    path_text(target)
                ),
                fatal: true,
            }));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Prepared::Failed(Problem::io("cannot read", target, &e))),
    };
    let roots = Roots {
        source: identity(&source_root),
        target: target_root.as_ref().map(identity),
    };
    let target_exists = target_root.is_some();

    let mut plan = plan::scan(
        source,
        source_root,
        target,
        target_root,
        job.options,
        reporter,
    )
    .map_err(|plan::Stopped| Prepared::Stopped)?;
    skip_deletions_after_incomplete_walk(&mut plan);

    let guard = if plan.source_empty && !plan.target_empty {
        Some(GuardKind::EmptySource)
    } else if job.options.delete && plan.deletions * 2 > plan.target_files {
        Some(GuardKind::MassDelete)
    } else {
        None
    };
    if let Some(kind) = guard {
        let guard = Guard {
            kind,
            source: job.pair.source.clone(),
            target: job.pair.target.clone(),
            deletions: plan.deletions,
            target_files: plan.target_files,
            fingerprint: fingerprint(kind, &folders, &plan),
        };
        if confirmed != Some(guard.fingerprint.as_str()) {
            return Err(Prepared::Refused(Refusal::Guard(guard)));
        }
    }
    Ok(Ready {
        folders,
        roots,
        plan,
        target_exists,
    })
}

/// Resolves both folders and checks them against each other and every
/// neighbour. The text of an error says what overlaps.
fn check_folders(pair: &FolderPair, neighbours: &[Neighbour]) -> Result<Resolved, Refusal> {
    let refuse = |e: &dyn std::fmt::Display| {
        Refusal::Unsafe(format!(
            "refused to mirror {} to {}: {e}; nothing was changed. Fix the folders (or the registrations), then act on this entry to try again",
            path_text(&pair.source),
            path_text(&pair.target)
        ))
    };
    let folders = pair.resolve().map_err(|e| refuse(&e))?;
    pair.check_nested(&folders).map_err(|e| refuse(&e))?;
    for neighbour in neighbours {
        let theirs = neighbour.pair.resolve_leniently();
        pair.check_apart(&folders, &neighbour.pair, &theirs, &neighbour.owner)
            .map_err(|e| refuse(&e))?;
    }
    Ok(folders)
}

/// The folders still resolve to what was scanned, and are the same folders
/// (device and inode), not others put in their place.
fn recheck(pair: &FolderPair, scanned: &Resolved, roots: &Roots) -> Result<(), Refusal> {
    let now = pair.resolve().ok();
    let source = fs::metadata(&scanned.source).ok().map(|m| identity(&m));
    let target = match fs::symlink_metadata(&scanned.target) {
        Ok(meta) if meta.is_dir() => Some(Some(identity(&meta))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(None),
        _ => None,
    };
    if now.as_ref() == Some(scanned) && source == Some(roots.source) && target == Some(roots.target)
    {
        return Ok(());
    }
    Err(Refusal::Unsafe(format!(
        "refused to mirror {} to {}: a folder was moved or replaced while it was being scanned; nothing was changed. Act on this entry to try again",
        path_text(&pair.source),
        path_text(&pair.target)
    )))
}

/// A plan made from a walk that missed entries (an unreadable folder, an
/// entry that could not be examined) does not know the whole target, so it
/// deletes nothing, as rsync does after an I/O error: the copies still
/// happen, the item fails with the problems, and the next complete walk
/// deletes what is extra.
fn skip_deletions_after_incomplete_walk(plan: &mut Plan) {
    if !plan.walk_incomplete || plan.deletions == 0 {
        return;
    }
    let skipped = plan.deletions;
    plan.ops.retain(|op| !matches!(op, Op::Remove { .. }));
    plan.deletions = 0;
    plan.problems.push(Problem {
        text: format!(
            "deleted nothing ({skipped} files would have gone): some folders or entries could not be read, so the mirror does not know the whole target; fix the errors above and sync again"
        ),
        fatal: false,
    });
}

/// A hash of what a guarded run would do: its kind, both folders and every
/// path it removes, in plan order.
fn fingerprint(kind: GuardKind, folders: &Resolved, plan: &Plan) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[kind as u8]);
    for path in [&folders.source, &folders.target] {
        hasher.update(path.as_os_str().as_encoded_bytes());
        hasher.update(&[0]);
    }
    for op in &plan.ops {
        if let Op::Remove { rel, .. } = op {
            hasher.update(rel_bytes(rel));
            hasher.update(&[0]);
        }
    }
    hasher.finalize().to_hex()[..FINGERPRINT_HEX].to_owned()
}

fn rel_bytes(rel: &Path) -> &[u8] {
    rel.as_os_str().as_encoded_bytes()
}

/// Hex digits of a guard's fingerprint (48 bits): enough that a different
/// run never passes for the confirmed one by chance, short enough that
/// `guard-<item>-<fingerprint>` fits an error id.
pub(super) const FINGERPRINT_HEX: usize = 12;

#[cfg(test)]
mod tests {
    use super::*;

    fn roots_of(folders: &Resolved) -> Roots {
        Roots {
            source: identity(&fs::metadata(&folders.source).expect("source")),
            target: fs::symlink_metadata(&folders.target)
                .ok()
                .map(|m| identity(&m)),
        }
    }

    /// Between the scan and the first change, a folder that was replaced
    /// (another directory at the same path, or a link put in its place) is
    /// noticed; an untouched pair passes.
    #[test]
    fn recheck_notices_a_folder_replaced_after_the_scan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let pair = FolderPair {
            source: root.join("s"),
            target: root.join("t"),
        };
        fs::create_dir(&pair.source).expect("mkdir");
        fs::create_dir(&pair.target).expect("mkdir");
        let scanned = pair.resolve().expect("resolve");
        let roots = roots_of(&scanned);
        assert!(recheck(&pair, &scanned, &roots).is_ok());

        // Another target directory at the same path.
        fs::rename(&pair.target, root.join("old-t")).expect("mv");
        fs::create_dir(&pair.target).expect("mkdir");
        assert!(matches!(
            recheck(&pair, &scanned, &roots),
            Err(Refusal::Unsafe(text)) if text.contains("moved or replaced")
        ));
        let scanned = pair.resolve().expect("resolve");
        let roots = roots_of(&scanned);
        assert!(recheck(&pair, &scanned, &roots).is_ok());

        // The source swapped the same way.
        fs::rename(&pair.source, root.join("old-s")).expect("mv");
        fs::create_dir(&pair.source).expect("mkdir");
        assert!(recheck(&pair, &scanned, &roots).is_err());
        let scanned = pair.resolve().expect("resolve");
        let roots = roots_of(&scanned);

        // The target turned into a link to elsewhere.
        fs::remove_dir(&pair.target).expect("rmdir");
        std::os::unix::fs::symlink(root.join("old-t"), &pair.target).expect("symlink");
        assert!(recheck(&pair, &scanned, &roots).is_err());

        // A target that did not exist, and still does not: fine; one that
        // appeared meanwhile: replaced.
        fs::remove_file(&pair.target).expect("rm link");
        let scanned = pair.resolve().expect("resolve");
        let roots = roots_of(&scanned);
        assert_eq!(roots.target, None);
        assert!(recheck(&pair, &scanned, &roots).is_ok());
        fs::create_dir(&pair.target).expect("mkdir");
        assert!(recheck(&pair, &scanned, &roots).is_err());
    }

    /// A guard's fingerprint tells apart runs that remove other paths, or
    /// the same paths under another guard or between other folders.
    #[test]
    fn fingerprints_tell_runs_apart() {
        let folders = Resolved {
            source: "/s".into(),
            target: "/t".into(),
        };
        let plan = |paths: &[&str]| Plan {
            ops: paths
                .iter()
                .map(|p| Op::Remove {
                    rel: (*p).into(),
                    dir: false,
                    files: 1,
                })
                .collect(),
            ..Plan::default()
        };
        let base = fingerprint(GuardKind::MassDelete, &folders, &plan(&["a", "b"]));
        assert_eq!(base.len(), FINGERPRINT_HEX);
        assert_eq!(
            base,
            fingerprint(GuardKind::MassDelete, &folders, &plan(&["a", "b"]))
        );
        for other in [
            fingerprint(GuardKind::MassDelete, &folders, &plan(&["a", "c"])),
            fingerprint(GuardKind::MassDelete, &folders, &plan(&["a"])),
            fingerprint(GuardKind::MassDelete, &folders, &plan(&["ab"])),
            fingerprint(GuardKind::EmptySource, &folders, &plan(&["a", "b"])),
            fingerprint(
                GuardKind::MassDelete,
                &Resolved {
                    source: "/s".into(),
                    target: "/u".into(),
                },
                &plan(&["a", "b"]),
            ),
        ] {
            assert_ne!(base, other);
        }
    }
}
