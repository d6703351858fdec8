//! One item's run, on a blocking thread: examine the roots, scan, apply the
//! guards, then carry the plan out.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use syncmgr_core::HandlerCallback;

use super::exec::{self, End, Stats};
use super::plan::{self, Options, Problem};
use super::progress::Reporter;

/// Everything one item's run needs, owned, to move onto a blocking thread.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) item: String,
    pub(super) source: PathBuf,
    pub(super) target: PathBuf,
    pub(super) options: Options,
    /// The user confirmed this item's guard (`showError`): go ahead once.
    pub(super) confirmed: bool,
    pub(super) callback: HandlerCallback,
    pub(super) abort: Arc<AtomicBool>,
}

/// How an item's run ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// A guard refused the run; nothing was changed.
    Refused {
        /// What the user is told, and how to go ahead.
        text: String,
        /// Whether confirming lets the next run go ahead (a missing source
        /// cannot be confirmed away: only a retry that finds it helps).
        confirmable: bool,
    },
    /// The run happened (completely or not).
    Ran {
        stats: Stats,
        problems: Vec<Problem>,
        end: End,
        elapsed: Duration,
    },
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
    let fatal = |problem: Problem| ran(Stats::default(), vec![problem], End::Fatal);
    if !reporter.start() {
        return ran(Stats::default(), Vec::new(), End::Stopped);
    }
    let (source, target) = (&job.source, &job.target);

    // The roots themselves are followed if they are links: the user named them.
    let source_root = match fs::metadata(source) {
        Ok(meta) if meta.is_dir() => meta,
        Ok(_) => {
            return Outcome::Refused {
                text: format!(
                    "refused to mirror {}: it is not a folder; fix the registration, or act on this entry to try again",
                    source.display()
                ),
                confirmable: false,
            };
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Outcome::Refused {
                text: format!(
                    "refused to mirror {}: the source folder does not exist (is its disk mounted?); act on this entry to try again once it is there",
                    source.display()
                ),
                confirmable: false,
            };
        }
        Err(e) => return fatal(Problem::io("cannot read", source, &e)),
    };
    let target_root = match fs::metadata(target) {
        Ok(meta) if meta.is_dir() => Some(meta),
        Ok(_) => {
            return fatal(Problem {
                text: format!("the target {} exists and is not a folder", target.display()),
                fatal: true,
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return fatal(Problem::io("cannot read", target, &e)),
    };
    let target_exists = target_root.is_some();

    let plan = match plan::scan(
        source,
        source_root,
        target,
        target_root,
        job.options,
        &mut reporter,
    ) {
        Ok(plan) => plan,
        Err(plan::Stopped) => return ran(Stats::default(), Vec::new(), End::Stopped),
    };

    if !job.confirmed {
        if plan.source_empty && !plan.target_empty {
            return Outcome::Refused {
                text: format!(
                    "refused to mirror {} to {}: the source folder is empty but the target is not (is the source's disk mounted?); act on this entry to confirm and mirror it anyway",
                    source.display(),
                    target.display()
                ),
                confirmable: true,
            };
        }
        if job.options.delete && plan.deletions * 2 > plan.target_files {
            return Outcome::Refused {
                text: format!(
                    "refused to mirror {} to {}: it would delete {} of the {} files in the target, more than half; act on this entry to confirm and mirror it anyway",
                    source.display(),
                    target.display(),
                    plan.deletions,
                    plan.target_files
                ),
                confirmable: true,
            };
        }
    }

    if !target_exists && let Err(e) = fs::create_dir_all(target) {
        return fatal(Problem::io("cannot create folder", target, &e));
    }
    if !reporter.planned(plan.copy_bytes) {
        return ran(Stats::default(), plan.problems, End::Stopped);
    }
    let (stats, problems, end) = exec::execute(source, target, plan, &mut reporter);
    ran(stats, problems, end)
}
