//! Carrying a plan out, so that no file is ever partial under its final name.
//!
//! Every file (and link) is written to a temporary name in its target
//! directory ([`TEMP_PREFIX`]), then renamed over the final name. Renames
//! wait in a batch until the batch's data is durable: on Linux one `syncfs`
//! per batch instead of one `fsync` per file, because a journal commit per
//! small file costs more than copying it (see `docs/performance.md`). A
//! *committer* thread makes each batch durable and renames it while the next
//! one is being copied, so that the flush overlaps the copying.
//!
//! A cancel, a crash or a full disk therefore leaves at worst temporary
//! files, which a cancel or an error removes at once and the next scan
//! removes otherwise.

use std::fs::{self, DirBuilder, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use super::plan::{CHUNK, DirStamp, Op, Plan, Problem, Stamp, TEMP_PREFIX};
use super::progress::{Reporter, path_text};

/// A batch goes to the committer once it holds this many entries...
const BATCH_ENTRIES: usize = 512;
/// ...or this many bytes.
const BATCH_BYTES: u64 = 64 << 20;

/// What a run did.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Stats {
    /// Regular files renamed into place.
    pub(super) files: u64,
    /// Links renamed into place.
    pub(super) links: u64,
    /// Bytes of the files renamed into place.
    pub(super) bytes: u64,
    /// Non-directories removed from the target (directories count as one
    /// when they held none).
    pub(super) deleted: u64,
    /// Files whose mode or times alone were brought in line.
    pub(super) updated: u64,
    /// Directories created.
    pub(super) dirs: u64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Every operation was tried.
    Done,
    /// A cancel stopped it.
    Stopped,
    /// A problem made the rest pointless.
    Fatal,
}

/// Whether to go on after one operation.
enum Flow {
    Next,
    Stop,
    Fatal,
}

/// A complete temporary file (or link) waiting for its rename.
struct Pending {
    temp: PathBuf,
    path: PathBuf,
    bytes: u64,
    link: bool,
}

struct Executor<'r, 'a> {
    source: &'r Path,
    target: &'r Path,
    reporter: &'r mut Reporter<'a>,
    root_dev: u64,
    /// The batch being filled.
    batch: Vec<Pending>,
    batch_bytes: u64,
    /// Where full batches go; `None` once closed.
    committer: Option<mpsc::SyncSender<Vec<Pending>>>,
    /// Set by the committer when it cannot go on.
    commit_failed: &'r AtomicBool,
    stats: Stats,
    problems: Vec<Problem>,
    /// Directories that could not be created: nothing below them is tried.
    failed_dirs: Vec<PathBuf>,
}

/// What the committer did.
#[derive(Default)]
struct Committed {
    files: u64,
    links: u64,
    bytes: u64,
    problems: Vec<Problem>,
}

/// Carries `plan` out from `source` into `target` (which exists). Returns
/// what was done and every problem met, the plan's own included.
pub(super) fn execute(
    source: &Path,
    target: &Path,
    plan: Plan,
    reporter: &mut Reporter<'_>,
) -> (Stats, Vec<Problem>, End) {
    let Plan {
        ops,
        finish,
        mut problems,
        ..
    } = plan;
    let root = match File::open(target) {
        Ok(root) => root,
        Err(e) => {
            problems.push(Problem::io("cannot open", target, &e));
            return (Stats::default(), problems, End::Fatal);
        }
    };
    let root_dev = root.metadata().map(|m| m.dev()).unwrap_or(0);
    let discard = AtomicBool::new(false);
    let commit_failed = AtomicBool::new(false);
    thread::scope(|scope| {
        // One batch queued while another is committed: the copying runs at
        // most two batches ahead of the renames.
        let (tx, rx) = mpsc::sync_channel(1);
        let committer = thread::Builder::new()
            .name("syncmgr-mirror-commit".to_owned())
            .spawn_scoped(scope, || {
                commit_loop(rx, &root, target, &discard, &commit_failed)
            });
        let committer = match committer {
            Ok(handle) => handle,
            Err(e) => {
                problems.push(Problem::io("cannot start a thread for", target, &e));
                return (Stats::default(), problems, End::Fatal);
            }
        };
        let mut executor = Executor {
            source,
            target,
            reporter,
            root_dev,
            batch: Vec::new(),
            batch_bytes: 0,
            committer: Some(tx),
            commit_failed: &commit_failed,
            stats: Stats::default(),
            problems,
            failed_dirs: Vec::new(),
        };
        let mut end = executor.run(ops);
        if end == End::Done {
            executor.hand_over();
        } else {
            // Whatever was copied and not renamed yet never gets its name.
            discard.store(true, Ordering::SeqCst);
            executor.discard();
        }
        executor.committer = None;
        match committer.join() {
            Ok(done) => {
                executor.stats.files += done.files;
                executor.stats.links += done.links;
                executor.stats.bytes += done.bytes;
                executor.problems.extend(done.problems);
            }
            Err(_) => executor.problems.push(Problem {
                text: "the thread renaming the copies into place panicked".to_owned(),
                fatal: true,
            }),
        }
        if end == End::Done && commit_failed.load(Ordering::SeqCst) {
            end = End::Fatal;
        }
        if end == End::Done {
            executor.reporter.flush();
            executor.finish_dirs(&finish);
        }
        (executor.stats, executor.problems, end)
    })
}

/// The committer: makes each batch durable, then renames it into place;
/// removes it instead once the run is stopped or a flush failed.
fn commit_loop(
    batches: mpsc::Receiver<Vec<Pending>>,
    root: &File,
    target: &Path,
    discard: &AtomicBool,
    failed: &AtomicBool,
) -> Committed {
    let mut done = Committed::default();
    for batch in batches {
        if !discard.load(Ordering::SeqCst)
            && let Err(e) = durable(root)
        {
            done.problems.push(Problem {
                text: format!("cannot flush the copies to {}: {e}", path_text(target)),
                fatal: true,
            });
            failed.store(true, Ordering::SeqCst);
            discard.store(true, Ordering::SeqCst);
        }
        for pending in batch {
            if discard.load(Ordering::SeqCst) {
                let _ = fs::remove_file(&pending.temp);
                continue;
            }
            match fs::rename(&pending.temp, &pending.path) {
                Ok(()) if pending.link => done.links += 1,
                Ok(()) => {
                    done.files += 1;
                    done.bytes += pending.bytes;
                }
                Err(e) => {
                    let _ = fs::remove_file(&pending.temp);
                    let problem = Problem::io("cannot replace", &pending.path, &e);
                    if problem.fatal {
                        failed.store(true, Ordering::SeqCst);
                        discard.store(true, Ordering::SeqCst);
                    }
                    done.problems.push(problem);
                }
            }
        }
    }
    done
}

impl Executor<'_, '_> {
    fn run(&mut self, ops: Vec<Op>) -> End {
        for op in ops {
            let flow = if self.commit_failed.load(Ordering::Relaxed) {
                Flow::Fatal
            } else if self.reporter.stopped() {
                Flow::Stop
            } else {
                self.apply(op)
            };
            match flow {
                Flow::Next => {}
                Flow::Stop => return End::Stopped,
                Flow::Fatal => return End::Fatal,
            }
        }
        End::Done
    }

    /// Gives each directory its mode and times, deepest first, once every
    /// rename is done (a rename into a directory changes its time).
    fn finish_dirs(&mut self, finish: &[DirStamp]) {
        for dir in finish {
            if !self.skipped(&dir.rel) {
                let path = self.target.join(&dir.rel);
                if let Err(e) = stamp_path(&path, &dir.stamp) {
                    self.problems
                        .push(Problem::io("cannot set the mode or times of", &path, &e));
                }
            }
        }
    }

    fn skipped(&self, rel: &Path) -> bool {
        self.failed_dirs.iter().any(|d| rel.starts_with(d))
    }

    fn apply(&mut self, op: Op) -> Flow {
        match op {
            Op::RemoveStale(rel) => {
                let path = self.target.join(&rel);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return self.problem(Problem::io("cannot remove", &path, &e)),
                }
            }
            Op::Remove { rel, dir, files } => {
                if self.skipped(&rel) {
                    return Flow::Next;
                }
                let path = self.target.join(&rel);
                let removed = if dir {
                    // Does not follow links: a link in the target never
                    // leads a deletion out of it.
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                match removed {
                    Ok(()) => self.stats.deleted += files.max(1),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return self.problem(Problem::io("cannot remove", &path, &e)),
                }
            }
            Op::OpenDir { rel, mode } => {
                let path = self.target.join(&rel);
                if let Err(e) = fs::set_permissions(&path, Permissions::from_mode(mode)) {
                    return self.problem(Problem::io("cannot make writable", &path, &e));
                }
            }
            Op::MakeDir(rel) => {
                if self.skipped(&rel) {
                    return Flow::Next;
                }
                let path = self.target.join(&rel);
                // Private until its contents are in and its mode is set.
                match DirBuilder::new().mode(0o700).create(&path) {
                    Ok(()) => self.stats.dirs += 1,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
                    Err(e) => {
                        self.failed_dirs.push(rel);
                        return self.problem(Problem::io("cannot create folder", &path, &e));
                    }
                }
            }
            Op::CopyFile { rel, size, stamp } => {
                if !self.skipped(&rel) {
                    return self.copy_file(&rel, size, &stamp);
                }
            }
            Op::CopyLink { rel, link, stamp } => {
                if !self.skipped(&rel) {
                    return self.copy_link(&rel, &link, &stamp);
                }
            }
            Op::SetMeta { rel, stamp } => {
                let path = self.target.join(&rel);
                match stamp_path(&path, &stamp) {
                    Ok(()) => self.stats.updated += 1,
                    Err(e) => {
                        return self.problem(Problem::io(
                            "cannot set the mode or times of",
                            &path,
                            &e,
                        ));
                    }
                }
            }
        }
        Flow::Next
    }

    fn problem(&mut self, problem: Problem) -> Flow {
        let fatal = problem.fatal;
        self.problems.push(problem);
        if fatal { Flow::Fatal } else { Flow::Next }
    }

    fn copy_file(&mut self, rel: &Path, size: u64, stamp: &Stamp) -> Flow {
        if !self.reporter.file(rel) {
            return Flow::Stop;
        }
        let from = self.source.join(rel);
        let to = self.target.join(rel);
        let input = match File::open(&from) {
            Ok(input) => input,
            Err(e) => return self.problem(Problem::io("cannot read", &from, &e)),
        };
        let (mut output, temp) = match create_temp(&to) {
            Ok(created) => created,
            Err(e) => return self.problem(Problem::io("cannot write", &to, &e)),
        };
        match self.fill(&input, &mut output, size, stamp) {
            Ok(Some(bytes)) => {
                drop(output);
                self.push(Pending {
                    temp,
                    path: to,
                    bytes,
                    link: false,
                })
            }
            Ok(None) => {
                drop(output);
                let _ = fs::remove_file(&temp);
                Flow::Stop
            }
            Err(e) => {
                drop(output);
                let _ = fs::remove_file(&temp);
                self.problem(Problem::io("cannot copy", &from, &e))
            }
        }
    }

    /// Copies `input` into the temporary `output` a chunk at a time and gives
    /// it its mode and times. `None`: stopped by a cancel.
    fn fill(
        &mut self,
        input: &File,
        output: &mut File,
        size: u64,
        stamp: &Stamp,
    ) -> io::Result<Option<u64>> {
        let large = size > CHUNK as u64;
        let mut copied = 0;
        loop {
            // `io::copy` between two files uses copy_file_range on Linux (no
            // copy through user space); `take` bounds it to one chunk so
            // that a cancel is seen between chunks.
            let n = io::copy(&mut input.take(CHUNK as u64), output)?;
            copied += n;
            if n > 0 && !self.reporter.bytes(n, large) {
                return Ok(None);
            }
            if n < CHUNK as u64 {
                break;
            }
        }
        output.set_permissions(Permissions::from_mode(stamp.mode))?;
        output.set_times(
            FileTimes::new()
                .set_accessed(stamp.atime.into())
                .set_modified(stamp.mtime.into()),
        )?;
        if !cfg!(target_os = "linux") || output.metadata()?.dev() != self.root_dev {
            // The batch's one `syncfs` reaches only the target root's file
            // system (and exists only on Linux): flush this one now.
            output.sync_all()?;
        }
        Ok(Some(copied))
    }

    fn copy_link(&mut self, rel: &Path, link: &Path, stamp: &Stamp) -> Flow {
        if !self.reporter.file(rel) {
            return Flow::Stop;
        }
        let to = self.target.join(rel);
        let temp = match create_new(
            || temp_path(&to),
            |temp| std::os::unix::fs::symlink(link, temp),
        ) {
            Ok(((), temp)) => temp,
            Err(e) => return self.problem(Problem::io("cannot create link", &to, &e)),
        };
        if let Err(e) = filetime::set_symlink_file_times(&temp, stamp.atime, stamp.mtime) {
            let _ = fs::remove_file(&temp);
            return self.problem(Problem::io("cannot set the times of", &to, &e));
        }
        self.push(Pending {
            temp,
            path: to,
            bytes: 0,
            link: true,
        })
    }

    fn push(&mut self, pending: Pending) -> Flow {
        self.batch_bytes += pending.bytes;
        self.batch.push(pending);
        if self.batch.len() >= BATCH_ENTRIES || self.batch_bytes >= BATCH_BYTES {
            self.hand_over();
        }
        Flow::Next
    }

    /// Sends the batch to the committer (waiting while it is a batch behind).
    fn hand_over(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if let Some(committer) = &self.committer
            && let Err(mpsc::SendError(batch)) = committer.send(batch)
        {
            // The committer is gone (it panicked): these never get their names.
            for pending in batch {
                let _ = fs::remove_file(&pending.temp);
            }
        }
    }

    /// Removes the batch's temporary files: they never get their names.
    fn discard(&mut self) {
        for pending in self.batch.drain(..) {
            let _ = fs::remove_file(&pending.temp);
        }
        self.batch_bytes = 0;
    }
}

/// Sets the mode, then the times, of a directory or file by path.
fn stamp_path(path: &Path, stamp: &Stamp) -> io::Result<()> {
    fs::set_permissions(path, Permissions::from_mode(stamp.mode))?;
    filetime::set_file_times(path, stamp.atime, stamp.mtime)
}

/// A fresh temporary name next to `path`.
pub(super) fn temp_path(path: &Path) -> PathBuf {
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Unique within the process by the counter; the seed (time and pid)
    // makes a clash with a stale file of an earlier process unlikely, and
    // `create_new` makes one harmless.
    let seed = *SEED.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ (u64::from(std::process::id()) << 40)
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{TEMP_PREFIX}{:016x}", seed.wrapping_add(n));
    path.with_file_name(name)
}

/// Creates a temporary file next to `path`, readable by its owner only
/// until it is complete.
fn create_temp(path: &Path) -> io::Result<(File, PathBuf)> {
    create_new(
        || temp_path(path),
        |temp| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(temp)
        },
    )
}

/// Creates something at the first name of `names` that is free: a name
/// already taken (a stale file of an earlier process) is passed over.
fn create_new<T>(
    mut names: impl FnMut() -> PathBuf,
    mut create: impl FnMut(&Path) -> io::Result<T>,
) -> io::Result<(T, PathBuf)> {
    loop {
        let name = names();
        match create(&name) {
            Ok(made) => return Ok((made, name)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
}

/// Makes everything written on the target's file system durable (one
/// `syncfs`; where there is none, each file was `fsync`ed when written).
fn durable(root: &File) -> io::Result<()> {
    syncmgr_sys::sync_file_system(root)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::Path;
    use std::sync::atomic::AtomicBool;

    use syncmgr_core::ProgressReply;

    use super::super::plan::Options;
    use super::super::plan::testing::{pair, scan_with};
    use super::super::progress::testing::Recorder;
    use super::*;

    /// The plan of a mirror that deletes.
    fn plan_of(source: &Path, target: &Path, reporter: &mut Reporter<'_>) -> Plan {
        let options = Options {
            delete: true,
            checksum: false,
        };
        scan_with(source, target, options, reporter)
    }

    fn temporaries(root: &Path) -> Vec<PathBuf> {
        walkdir::WalkDir::new(root)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
            .map(walkdir::DirEntry::into_path)
            .collect()
    }

    fn texts(problems: &[Problem]) -> Vec<String> {
        problems.iter().map(|p| p.text.clone()).collect()
    }

    /// The stats count what the run did, the committer's renames included.
    #[test]
    fn a_run_counts_what_it_did() {
        let (_dir, s, t) = pair();
        fs::write(s.join("three"), b"abc").expect("write");
        fs::create_dir(s.join("sub")).expect("mkdir");
        fs::write(s.join("sub/five"), b"abcde").expect("write");
        symlink("three", s.join("link")).expect("symlink");
        fs::write(t.join("extra"), b"x").expect("write");
        fs::create_dir(t.join("gone")).expect("mkdir");
        fs::write(t.join("gone/a"), b"a").expect("write");
        fs::write(t.join("gone/b"), b"b").expect("write");

        let sink = Recorder::default();
        let abort = AtomicBool::new(false);
        let mut reporter = Reporter::new(&sink, "item", &abort);
        let plan = plan_of(&s, &t, &mut reporter);
        let (stats, problems, end) = execute(&s, &t, plan, &mut reporter);
        assert_eq!(end, End::Done);
        assert!(problems.is_empty(), "{:?}", texts(&problems));
        assert_eq!(
            (
                stats.files,
                stats.links,
                stats.bytes,
                stats.deleted,
                stats.dirs,
                stats.updated
            ),
            (2, 1, 8, 3, 1, 0)
        );
        assert_eq!(fs::read(t.join("sub/five")).expect("read"), b"abcde");
        assert!(temporaries(&t).is_empty());

        // Only a mode differs: set, not copied.
        fs::set_permissions(t.join("three"), Permissions::from_mode(0o600)).expect("chmod");
        let plan = plan_of(&s, &t, &mut reporter);
        let (stats, problems, _) = execute(&s, &t, plan, &mut reporter);
        assert!(problems.is_empty(), "{:?}", texts(&problems));
        assert_eq!((stats.files, stats.updated), (0, 1));
    }

    /// What the scan saw may be gone or different when the plan runs: an
    /// entry already removed, or a folder already made, is what the plan
    /// wanted; an entry of another type now is a problem, never ignored.
    #[test]
    fn entries_changed_since_the_scan() {
        let (_dir, s, t) = pair();
        let stale = format!("{TEMP_PREFIX}0000000000000001");
        fs::create_dir(s.join("d")).expect("mkdir");
        fs::write(t.join(&stale), b"partial").expect("write");
        fs::write(t.join("extra"), b"x").expect("write");
        let sink = Recorder::default();
        let abort = AtomicBool::new(false);
        let mut reporter = Reporter::new(&sink, "item", &abort);

        let plan = plan_of(&s, &t, &mut reporter);
        fs::remove_file(t.join(&stale)).expect("rm");
        fs::remove_file(t.join("extra")).expect("rm");
        fs::create_dir(t.join("d")).expect("mkdir");
        let (stats, problems, end) = execute(&s, &t, plan, &mut reporter);
        assert!(problems.is_empty(), "{:?}", texts(&problems));
        assert_eq!((stats.deleted, stats.dirs, end), (0, 0, End::Done));

        fs::remove_dir(t.join("d")).expect("rmdir");
        fs::write(t.join(&stale), b"partial").expect("write");
        fs::write(t.join("extra"), b"x").expect("write");
        let plan = plan_of(&s, &t, &mut reporter);
        for name in [stale.as_str(), "extra"] {
            fs::remove_file(t.join(name)).expect("rm");
            fs::create_dir(t.join(name)).expect("mkdir");
        }
        fs::write(t.join("d"), b"a file").expect("write");
        let (stats, problems, _) = execute(&s, &t, plan, &mut reporter);
        let texts = texts(&problems);
        assert_eq!(texts.len(), 3, "{texts:?}");
        assert!(texts[0].starts_with("cannot remove") && texts[0].contains(&stale));
        assert!(texts[1].starts_with("cannot create folder") && texts[1].contains("/d"));
        assert!(texts[2].starts_with("cannot remove") && texts[2].contains("extra"));
        assert_eq!((stats.deleted, stats.dirs), (0, 0));
    }

    /// A stop between files leaves neither the copies still waiting for
    /// their rename nor their temporary files.
    #[test]
    fn a_stop_between_files_leaves_nothing_half_done() {
        let (_dir, s, t) = pair();
        for name in ["a", "b", "c", "d"] {
            fs::write(s.join(name), name).expect("write");
        }
        // The third file's report is answered "cancel this item".
        let sink = Recorder::stopping_at(2, Ok(ProgressReply::CancelItem));
        let abort = AtomicBool::new(false);
        let mut reporter = Reporter::new(&sink, "item", &abort);
        let plan = plan_of(&s, &t, &mut reporter);
        let (stats, problems, end) = execute(&s, &t, plan, &mut reporter);
        assert_eq!(end, End::Stopped);
        assert!(problems.is_empty(), "{:?}", texts(&problems));
        assert_eq!(stats.files, 0);
        assert_eq!(
            fs::read_dir(&t).expect("list").count(),
            0,
            "{:?}",
            temporaries(&t)
        );
    }

    /// A taken name is passed over; any other error is returned at once.
    #[test]
    fn create_new_passes_over_taken_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let taken = dir.path().join("taken");
        fs::write(&taken, b"someone's").expect("write");
        let mut names = vec![dir.path().join("free"), taken.clone()];
        let (_, name) = create_new(
            || names.pop().expect("a name left"),
            |p| OpenOptions::new().write(true).create_new(true).open(p),
        )
        .expect("created");
        assert_eq!(name, dir.path().join("free"));
        assert!(names.is_empty());
        assert_eq!(fs::read(&taken).expect("read"), b"someone's");

        let mut names = vec![dir.path().join("no/such/folder")];
        let error = create_new(
            || names.pop().expect("asked for one name only"),
            |p| symlink("x", p),
        )
        .expect_err("no folder");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn temporary_names_are_fresh_and_ours() {
        let a = temp_path(Path::new("/t/sub/file"));
        let b = temp_path(Path::new("/t/sub/file"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/t/sub")));
        assert!(
            a.file_name()
                .expect("name")
                .to_string_lossy()
                .starts_with(TEMP_PREFIX)
        );
    }
}
