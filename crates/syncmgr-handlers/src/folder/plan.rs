//! Scanning: walks a source folder and its target side by side, one
//! directory at a time with both listings sorted by name, and turns their
//! differences into the operations that make the target a mirror. Nothing is
//! changed here, so the guards can look at the whole plan first.
//!
//! Each entry costs one `stat` relative to its directory (no symbolic link is
//! ever followed below the roots), and a directory pair costs two listings.

use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;

use super::progress::{Reporter, path_text};

/// Names of the temporary files the mirror writes before renaming them.
pub(super) const TEMP_PREFIX: &str = ".syncmgr-tmp-";
/// Unit of copying and comparing: progress and cancel granularity.
pub(super) const CHUNK: usize = 1 << 20;

/// The scan was stopped by a cancel.
#[derive(Debug)]
pub(super) struct Stopped;

/// A permission-and-times pair to give an entry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stamp {
    pub(super) mode: u32,
    pub(super) atime: FileTime,
    pub(super) mtime: FileTime,
}

impl Stamp {
    fn of(meta: &Metadata) -> Self {
        Stamp {
            mode: mode(meta),
            atime: FileTime::from_last_access_time(meta),
            mtime: FileTime::from_last_modification_time(meta),
        }
    }
}

/// One step of a plan. Paths are relative to the roots.
#[derive(Debug)]
pub(super) enum Op {
    /// A temporary file an interrupted run left behind.
    RemoveStale(PathBuf),
    /// Removes an entry not in the source, or one in the way of a source
    /// entry of another type; `files` counts the non-directories going.
    Remove { rel: PathBuf, dir: bool, files: u64 },
    /// Gives an existing directory owner `rwx` while entries change in it
    /// (its own mode comes back with [`Plan::finish`]).
    OpenDir { rel: PathBuf, mode: u32 },
    /// Creates a directory (private until [`Plan::finish`] sets its mode).
    MakeDir(PathBuf),
    /// Copies a regular file through a temporary file.
    CopyFile {
        rel: PathBuf,
        size: u64,
        stamp: Stamp,
    },
    /// Creates a symbolic link through a temporary name.
    CopyLink {
        rel: PathBuf,
        link: PathBuf,
        stamp: Stamp,
    },
    /// The file's contents are equal; its mode or times are not.
    SetMeta { rel: PathBuf, stamp: Stamp },
}

/// A directory whose mode and times are set once everything in it is done.
#[derive(Debug)]
pub(super) struct DirStamp {
    pub(super) rel: PathBuf,
    pub(super) stamp: Stamp,
}

/// Something that could not be examined or mirrored; logged per entry.
#[derive(Debug)]
pub(super) struct Problem {
    pub(super) text: String,
    /// Whether the rest of the item is pointless (the target disk is full or
    /// read-only).
    pub(super) fatal: bool,
}

impl Problem {
    pub(super) fn io(what: &str, path: &Path, error: &io::Error) -> Self {
        Problem {
            text: format!("{what} {}: {error}", path_text(path)),
            fatal: matches!(
                error.kind(),
                io::ErrorKind::StorageFull
                    | io::ErrorKind::ReadOnlyFilesystem
                    | io::ErrorKind::QuotaExceeded
            ),
        }
    }

    fn text(text: String) -> Self {
        Problem { text, fatal: false }
    }
}

/// What the scan found and what it would do.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub(super) ops: Vec<Op>,
    /// Directories to stamp, deepest first, after the last rename.
    pub(super) finish: Vec<DirStamp>,
    /// Bytes of the files ([`Op::CopyFile`]) to copy.
    pub(super) copy_bytes: u64,
    /// Non-directories in the target (counted only with `delete`).
    pub(super) target_files: u64,
    /// Non-directories the plan removes from the target.
    pub(super) deletions: u64,
    /// The source root has no entries.
    pub(super) source_empty: bool,
    /// The target root has no entries (or does not exist).
    pub(super) target_empty: bool,
    /// Some folder could not be listed or some entry examined: the plan
    /// does not know every entry of the two trees.
    pub(super) walk_incomplete: bool,
    pub(super) problems: Vec<Problem>,
}

/// How to compare and what to remove.
#[derive(Debug, Clone, Copy)]
pub(super) struct Options {
    pub(super) delete: bool,
    pub(super) checksum: bool,
}

struct Entry {
    name: OsString,
    /// `None`: listed, but `stat` failed.
    meta: Option<Metadata>,
}

enum Kind {
    File,
    Dir,
    Link,
    Special(&'static str),
}

fn kind(meta: &Metadata) -> Kind {
    let t = meta.file_type();
    if t.is_file() {
        Kind::File
    } else if t.is_dir() {
        Kind::Dir
    } else if t.is_symlink() {
        Kind::Link
    } else if t.is_fifo() {
        Kind::Special("a fifo")
    } else if t.is_socket() {
        Kind::Special("a socket")
    } else {
        Kind::Special("a device")
    }
}

pub(super) fn mode(meta: &Metadata) -> u32 {
    meta.mode() & 0o7777
}

fn same_mtime(a: &Metadata, b: &Metadata) -> bool {
    a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec()
}

/// A directory pair still to visit.
struct Visit {
    rel: PathBuf,
    source: Stamp,
    /// `None`: the target directory does not exist yet.
    target: Option<Stamp>,
}

enum Task {
    Visit(Visit),
    Finish(DirStamp),
}

struct Scanner<'r, 'a> {
    source: &'r Path,
    target: &'r Path,
    options: Options,
    reporter: &'r mut Reporter<'a>,
    plan: Plan,
    /// Compare buffers for `checksum`, allocated on first use.
    buffers: Option<(Vec<u8>, Vec<u8>)>,
}

/// Scans `source` against `target` (either may be given with the metadata of
/// its root; `target_root` is `None` when it does not exist).
pub(super) fn scan(
    source: &Path,
    source_root: Metadata,
    target: &Path,
    target_root: Option<Metadata>,
    options: Options,
    reporter: &mut Reporter<'_>,
) -> Result<Plan, Stopped> {
    let mut scanner = Scanner {
        source,
        target,
        options,
        reporter,
        plan: Plan::default(),
        buffers: None,
    };
    let mut stack = vec![Task::Visit(Visit {
        rel: PathBuf::new(),
        source: Stamp::of(&source_root),
        target: target_root.as_ref().map(Stamp::of),
    })];
    while let Some(task) = stack.pop() {
        match task {
            Task::Visit(visit) => scanner.visit(visit, &mut stack)?,
            Task::Finish(stamp) => scanner.plan.finish.push(stamp),
        }
    }
    Ok(scanner.plan)
}

/// Lists a directory, sorted by name, with each entry's `lstat`.
fn list(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = match entry.metadata() {
            Ok(meta) => Some(meta),
            // Gone since it was listed: as if it had not been there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => None,
        };
        entries.push(Entry {
            name: entry.file_name(),
            meta,
        });
    }
    entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

impl Scanner<'_, '_> {
    fn visit(&mut self, visit: Visit, stack: &mut Vec<Task>) -> Result<(), Stopped> {
        if !self.reporter.scanning(&visit.rel) {
            return Err(Stopped);
        }
        let root = visit.rel.as_os_str().is_empty();
        let source_dir = self.source.join(&visit.rel);
        let sources = match list(&source_dir) {
            Ok(entries) => entries,
            Err(e) => {
                // Without the source's listing nothing in the target can be
                // judged: leave this part of the target alone.
                let problem = Problem::io("cannot read folder", &source_dir, &e);
                self.plan.problems.push(problem);
                self.plan.walk_incomplete = true;
                return Ok(());
            }
        };
        let targets = match &visit.target {
            Some(_) => {
                let target_dir = self.target.join(&visit.rel);
                match list(&target_dir) {
                    Ok(entries) => entries,
                    Err(e) => {
                        let problem = Problem::io("cannot read folder", &target_dir, &e);
                        self.plan.problems.push(problem);
                        self.plan.walk_incomplete = true;
                        return Ok(());
                    }
                }
            }
            None => Vec::new(),
        };
        if root {
            self.plan.source_empty = sources.is_empty();
            self.plan.target_empty = targets.is_empty();
        }

        let first_op = self.plan.ops.len();
        let mut subdirs = Vec::new();
        let (mut s, mut t) = (
            sources.into_iter().peekable(),
            targets.into_iter().peekable(),
        );
        loop {
            let order = match (s.peek(), t.peek()) {
                (Some(a), Some(b)) => a.name.cmp(&b.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => break,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let Some(src) = s.next() else { break };
                    self.add(&visit.rel, src, &mut subdirs);
                }
                std::cmp::Ordering::Greater => {
                    let Some(tgt) = t.next() else { break };
                    self.extra(&visit.rel, tgt);
                }
                std::cmp::Ordering::Equal => {
                    let (Some(src), Some(tgt)) = (s.next(), t.next()) else {
                        break;
                    };
                    self.both(&visit.rel, src, tgt, &mut subdirs)?;
                }
            }
        }

        let changed = self.plan.ops.len() > first_op;
        let stamp = visit.source;
        if changed
            && let Some(target) = &visit.target
            && target.mode & 0o700 != 0o700
        {
            // Not owner-writable: entries cannot change in it (unless root).
            self.plan.ops.insert(
                first_op,
                Op::OpenDir {
                    rel: visit.rel.clone(),
                    mode: target.mode | 0o700,
                },
            );
        }
        let stamp_differs = visit
            .target
            .as_ref()
            .is_none_or(|target| target.mode != stamp.mode || target.mtime != stamp.mtime);
        if changed || stamp_differs {
            // Pushed before the subdirectories so that it pops after them:
            // stamps go deepest first.
            stack.push(Task::Finish(DirStamp {
                rel: visit.rel,
                stamp,
            }));
        }
        stack.extend(subdirs.into_iter().rev().map(Task::Visit));
        Ok(())
    }

    /// An entry only in the source.
    fn add(&mut self, rel: &Path, src: Entry, subdirs: &mut Vec<Visit>) {
        let rel = rel.join(&src.name);
        match src.meta {
            Some(meta) => self.create(rel, meta, subdirs),
            None => self.cannot_examine(&rel),
        }
    }

    /// Creates what the source has at `rel`, which is free in the target.
    fn create(&mut self, rel: PathBuf, meta: Metadata, subdirs: &mut Vec<Visit>) {
        match kind(&meta) {
            Kind::File => self.copy(rel, &meta),
            Kind::Link => self.link(rel, &meta),
            Kind::Dir => {
                self.plan.ops.push(Op::MakeDir(rel.clone()));
                subdirs.push(Visit {
                    rel,
                    source: Stamp::of(&meta),
                    target: None,
                });
            }
            Kind::Special(what) => self.special(&rel, what),
        }
    }

    /// An entry on both sides.
    fn both(
        &mut self,
        rel: &Path,
        src: Entry,
        tgt: Entry,
        subdirs: &mut Vec<Visit>,
    ) -> Result<(), Stopped> {
        let rel = rel.join(&src.name);
        let Some(meta) = src.meta else {
            self.cannot_examine(&rel);
            return Ok(());
        };
        let Some(tmeta) = tgt.meta else {
            let path = self.target.join(&rel);
            self.plan.problems.push(Problem::text(format!(
                "cannot examine {}",
                path_text(&path)
            )));
            self.plan.walk_incomplete = true;
            return Ok(());
        };
        if self.options.delete && !tmeta.is_dir() {
            self.plan.target_files += 1;
        }
        match (kind(&meta), kind(&tmeta)) {
            (Kind::Special(what), _) => self.special(&rel, what),
            (Kind::Dir, Kind::Dir) => subdirs.push(Visit {
                rel,
                source: Stamp::of(&meta),
                target: Some(Stamp::of(&tmeta)),
            }),
            (Kind::Dir, _) => {
                // A file or link where the source has a directory.
                self.remove(rel.clone(), false, 1);
                self.create(rel, meta, subdirs);
            }
            (_, Kind::Dir) => {
                if self.clear_dir(&rel) {
                    self.create(rel, meta, subdirs);
                }
            }
            (Kind::File, Kind::File) => {
                if self.file_differs(&rel, &meta, &tmeta)? {
                    self.copy(rel, &meta);
                } else if mode(&meta) != mode(&tmeta) || !same_mtime(&meta, &tmeta) {
                    self.plan.ops.push(Op::SetMeta {
                        rel,
                        stamp: Stamp::of(&meta),
                    });
                }
            }
            (Kind::File, _) => self.copy(rel, &meta),
            (Kind::Link, Kind::Link) => {
                let same = same_mtime(&meta, &tmeta)
                    && matches!(
                        (fs::read_link(self.source.join(&rel)), fs::read_link(self.target.join(&rel))),
                        (Ok(a), Ok(b)) if a == b
                    );
                if !same {
                    self.link(rel, &meta);
                }
            }
            (Kind::Link, _) => self.link(rel, &meta),
        }
        Ok(())
    }

    /// An entry only in the target.
    fn extra(&mut self, rel: &Path, tgt: Entry) {
        let is_dir = tgt.meta.as_ref().is_some_and(Metadata::is_dir);
        let stale = !is_dir
            && tgt
                .name
                .as_encoded_bytes()
                .starts_with(TEMP_PREFIX.as_bytes());
        let rel = rel.join(&tgt.name);
        if stale {
            // Ours, from a run that was killed: never part of the mirror.
            self.plan.ops.push(Op::RemoveStale(rel));
            return;
        }
        if !self.options.delete {
            return;
        }
        if is_dir {
            let files = self.count_files(&rel);
            self.plan.target_files += files;
            self.remove(rel, true, files);
        } else {
            self.plan.target_files += 1;
            self.remove(rel, false, 1);
        }
    }

    /// A target directory where the source has a file or link: removed when
    /// it is empty or deleting is allowed; a problem otherwise.
    fn clear_dir(&mut self, rel: &Path) -> bool {
        let path = self.target.join(rel);
        let files = self.count_files(rel);
        let empty = fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
        if self.options.delete {
            self.plan.target_files += files;
        } else if !empty {
            self.plan.problems.push(Problem::text(format!(
                "cannot replace the folder {} with a file: it is not empty and the mirror does not delete",
                path_text(&path)
            )));
            return false;
        }
        self.remove(rel.to_path_buf(), true, files);
        true
    }

    fn remove(&mut self, rel: PathBuf, dir: bool, files: u64) {
        self.plan.deletions += files;
        self.plan.ops.push(Op::Remove { rel, dir, files });
    }

    fn copy(&mut self, rel: PathBuf, meta: &Metadata) {
        self.plan.copy_bytes += meta.len();
        self.plan.ops.push(Op::CopyFile {
            rel,
            size: meta.len(),
            stamp: Stamp::of(meta),
        });
    }

    fn link(&mut self, rel: PathBuf, meta: &Metadata) {
        let path = self.source.join(&rel);
        match fs::read_link(&path) {
            Ok(link) => self.plan.ops.push(Op::CopyLink {
                rel,
                link,
                stamp: Stamp::of(meta),
            }),
            Err(e) => self
                .plan
                .problems
                .push(Problem::io("cannot read link", &path, &e)),
        }
    }

    fn special(&mut self, rel: &Path, what: &str) {
        // Opening a fifo would block and a device may be endless: only
        // files, directories and links are mirrored. Reported, so that a
        // mirror that is not complete never looks complete.
        self.plan.problems.push(Problem::text(format!(
            "cannot mirror {}: it is {what}, not a file, folder or link",
            path_text(&self.source.join(rel))
        )));
    }

    fn cannot_examine(&mut self, rel: &Path) {
        self.plan.walk_incomplete = true;
        let path = self.source.join(rel);
        let error = fs::symlink_metadata(&path)
            .err()
            .map_or_else(|| "it changed while scanning".to_owned(), |e| e.to_string());
        self.plan.problems.push(Problem::text(format!(
            "cannot examine {}: {error}",
            path_text(&path)
        )));
    }

    /// Whether two regular files differ: by size, then by modification time
    /// or (with `checksum`) by contents.
    ///
    /// Contents are compared byte for byte rather than by hashing both
    /// sides: it is exact, it stops at the first difference, and reading is
    /// the cost either way.
    fn file_differs(
        &mut self,
        rel: &Path,
        src: &Metadata,
        tgt: &Metadata,
    ) -> Result<bool, Stopped> {
        if src.len() != tgt.len() {
            return Ok(true);
        }
        if !self.options.checksum {
            return Ok(!same_mtime(src, tgt));
        }
        let (a, b) = self
            .buffers
            .get_or_insert_with(|| (vec![0; CHUNK], vec![0; CHUNK]));
        let source = self.source.join(rel);
        let target = self.target.join(rel);
        // A side that cannot be read counts as different: copying then
        // fails the same way and reports it.
        let Ok(mut fa) = File::open(&source) else {
            return Ok(true);
        };
        let Ok(mut fb) = File::open(&target) else {
            return Ok(true);
        };
        loop {
            if !self.reporter.scanning(rel) {
                return Err(Stopped);
            }
            let (Ok(na), Ok(nb)) = (read_full(&mut fa, a), read_full(&mut fb, b)) else {
                return Ok(true);
            };
            if na != nb || a[..na] != b[..nb] {
                return Ok(true);
            }
            if na < a.len() {
                return Ok(false);
            }
        }
    }
}

/// Reads until `buf` is full or the file ends; returns how much was read.
pub(super) fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl Scanner<'_, '_> {
    /// Non-directories under the target's `rel` (links not followed), for
    /// the delete guard. An entry that cannot be read makes the walk
    /// incomplete: the count is then too low to judge a deletion by.
    fn count_files(&mut self, rel: &Path) -> u64 {
        let mut files = 0;
        for entry in walkdir::WalkDir::new(self.target.join(rel)) {
            match entry {
                Ok(entry) if entry.file_type().is_dir() => {}
                Ok(_) => files += 1,
                Err(e) => {
                    self.plan.walk_incomplete = true;
                    self.plan.problems.push(Problem::text(format!(
                        "cannot count the files to delete: {e}"
                    )));
                }
            }
        }
        files
    }
}

#[cfg(test)]
pub(super) mod testing {
    //! Fixtures of the scan's and the executor's unit tests.

    use std::fs;
    use std::path::{Path, PathBuf};

    use super::super::progress::Reporter;
    use super::{Options, Plan, scan};

    /// A temporary folder holding an empty source `s` and target `t`.
    pub(in super::super) fn pair() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, t) = (dir.path().join("s"), dir.path().join("t"));
        fs::create_dir(&s).expect("mkdir");
        fs::create_dir(&t).expect("mkdir");
        (dir, s, t)
    }

    /// Scans `source` against `target` as a run would.
    pub(in super::super) fn scan_with(
        source: &Path,
        target: &Path,
        options: Options,
        reporter: &mut Reporter<'_>,
    ) -> Plan {
        scan(
            source,
            fs::metadata(source).expect("source"),
            target,
            fs::symlink_metadata(target).ok(),
            options,
            reporter,
        )
        .expect("nothing stops this scan")
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::path::Path;
    use std::sync::atomic::AtomicBool;

    use filetime::FileTime;

    use super::super::progress::testing::Recorder;
    use super::testing::{pair, scan_with};
    use super::*;

    fn scan_of(source: &Path, target: &Path, delete: bool, checksum: bool) -> Plan {
        let sink = Recorder::default();
        let abort = AtomicBool::new(false);
        let mut reporter = Reporter::new(&sink, "item", &abort);
        scan_with(source, target, Options { delete, checksum }, &mut reporter)
    }

    /// The plan's steps in a compact form: what a test compares.
    fn steps(plan: &Plan) -> Vec<String> {
        plan.ops
            .iter()
            .map(|op| match op {
                Op::RemoveStale(rel) => format!("stale {}", rel.display()),
                Op::Remove { rel, dir, files } => {
                    format!("remove {} dir={dir} files={files}", rel.display())
                }
                Op::OpenDir { rel, mode } => format!("open '{}' {mode:o}", rel.display()),
                Op::MakeDir(rel) => format!("mkdir {}", rel.display()),
                Op::CopyFile { rel, size, .. } => format!("copy {} {size}", rel.display()),
                Op::CopyLink { rel, link, .. } => {
                    format!("link {} -> {}", rel.display(), link.display())
                }
                Op::SetMeta { rel, .. } => format!("meta {}", rel.display()),
            })
            .collect()
    }

    fn finished(plan: &Plan) -> Vec<String> {
        plan.finish
            .iter()
            .map(|d| d.rel.display().to_string())
            .collect()
    }

    fn put(root: &Path, rel: &str, data: &[u8], mtime: (i64, u32)) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, data).expect("write");
        let t = FileTime::from_unix_time(mtime.0, mtime.1);
        filetime::set_file_mtime(&path, t).expect("mtime");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    }

    fn put_link(root: &Path, rel: &str, to: &str, mtime: (i64, u32)) {
        let path = root.join(rel);
        symlink(to, &path).expect("symlink");
        let t = FileTime::from_unix_time(mtime.0, mtime.1);
        filetime::set_symlink_file_times(&path, t, t).expect("link times");
    }

    /// Gives both roots and every folder in them the same mode and time,
    /// deepest first, so that only what a test changes differs.
    fn settle(root: &Path) {
        for entry in walkdir::WalkDir::new(root).contents_first(true) {
            let entry = entry.expect("walk");
            if entry.file_type().is_dir() {
                fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o755))
                    .expect("chmod");
                filetime::set_file_mtime(entry.path(), FileTime::from_unix_time(1_000, 0))
                    .expect("mtime");
            }
        }
    }

    /// What the delete guard judges by: every non-directory of the target
    /// (only with `delete`), and every one a removal takes with it, folders'
    /// contents included. Our temporary files are removed either way and
    /// never counted; a folder with our prefix is not ours.
    #[test]
    fn a_plan_counts_the_files_it_removes() {
        let (_dir, s, t) = pair();
        put(&s, "same", b"same", (10, 0));
        put(&t, "same", b"same", (10, 0));
        put(&t, "extra", b"x", (10, 0));
        put(&t, "old/a", b"a", (10, 0));
        put(&t, "old/deeper/b", b"b", (10, 0));
        put_link(&t, "old/deeper/c", "nowhere", (10, 0));
        put(&t, ".syncmgr-tmp-1-2", b"partial", (10, 0));
        put(&t, ".syncmgr-tmp-folder/kept", b"k", (10, 0));
        settle(&s);
        settle(&t);

        let plan = scan_of(&s, &t, true, false);
        assert_eq!(
            steps(&plan),
            [
                "stale .syncmgr-tmp-1-2",
                "remove .syncmgr-tmp-folder dir=true files=1",
                "remove extra dir=false files=1",
                "remove old dir=true files=3",
            ]
        );
        assert_eq!(plan.deletions, 5);
        assert_eq!(plan.target_files, 6);
        assert!(!plan.walk_incomplete);
        assert!(!plan.source_empty && !plan.target_empty);

        let plan = scan_of(&s, &t, false, false);
        assert_eq!(steps(&plan), ["stale .syncmgr-tmp-1-2"]);
        assert_eq!((plan.deletions, plan.target_files), (0, 0));
    }

    /// A folder where the source has a file: replaced when it is empty or
    /// deleting is allowed (its files counted), a problem otherwise.
    #[test]
    fn a_folder_in_the_way_of_a_file() {
        let (_dir, s, t) = pair();
        put(&s, "full", b"file", (10, 0));
        put(&s, "empty", b"file", (10, 0));
        put(&t, "full/a", b"a", (10, 0));
        put(&t, "full/b", b"b", (10, 0));
        fs::create_dir(t.join("empty")).expect("mkdir");
        settle(&s);
        settle(&t);

        let plan = scan_of(&s, &t, true, false);
        assert_eq!(
            steps(&plan),
            [
                "remove empty dir=true files=0",
                "copy empty 4",
                "remove full dir=true files=2",
                "copy full 4",
            ]
        );
        assert_eq!((plan.deletions, plan.target_files), (2, 2));
        assert!(plan.problems.is_empty());

        let plan = scan_of(&s, &t, false, false);
        assert_eq!(
            steps(&plan),
            ["remove empty dir=true files=0", "copy empty 4"]
        );
        assert_eq!(plan.problems.len(), 1);
        assert!(plan.problems[0].text.contains("cannot replace the folder"));
    }

    /// Files and links are the same only with the same time to the
    /// nanosecond (and the same target, for links); a file that differs
    /// only in mode or time gets its metadata set, not a copy.
    #[test]
    fn entries_differ_by_size_time_mode_and_link_target() {
        let (_dir, s, t) = pair();
        put(&s, "same", b"12345", (10, 7));
        put(&t, "same", b"12345", (10, 7));
        put(&s, "nanos", b"12345", (10, 7));
        put(&t, "nanos", b"12345", (10, 8));
        put(&s, "seconds", b"12345", (10, 7));
        put(&t, "seconds", b"12345", (11, 7));
        put(&s, "mode", b"12345", (10, 7));
        put(&t, "mode", b"12345", (10, 7));
        fs::set_permissions(t.join("mode"), fs::Permissions::from_mode(0o600)).expect("chmod");
        put(&s, "size", b"1234", (10, 7));
        put(&t, "size", b"12345", (10, 7));
        put_link(&s, "link-same", "x", (10, 7));
        put_link(&t, "link-same", "x", (10, 7));
        put_link(&s, "link-time", "x", (10, 7));
        put_link(&t, "link-time", "x", (10, 8));
        put_link(&s, "link-to", "x", (10, 7));
        put_link(&t, "link-to", "y", (10, 7));
        settle(&s);
        settle(&t);

        let plan = scan_of(&s, &t, false, false);
        assert_eq!(
            steps(&plan),
            [
                "link link-time -> x",
                "link link-to -> x",
                "meta mode",
                "copy nanos 5",
                "copy seconds 5",
                "copy size 4",
            ]
        );
        assert!(finished(&plan) == [""], "the root's entries changed");

        // By contents: equal contents need at most their times set.
        let plan = scan_of(&s, &t, false, true);
        assert_eq!(
            steps(&plan),
            [
                "link link-time -> x",
                "link link-to -> x",
                "meta mode",
                "meta nanos",
                "meta seconds",
                "copy size 4",
            ]
        );
    }

    /// A folder is stamped again only when something in it changes or its
    /// own mode or time differ; a folder its owner cannot write is opened
    /// (owner `rwx` added to its mode) while entries change in it.
    #[test]
    fn folders_are_stamped_and_opened_only_when_needed() {
        let (_dir, s, t) = pair();
        for root in [&s, &t] {
            put(root, "calm/f", b"f", (10, 0));
            put(root, "locked/f", b"f", (10, 0));
            put(root, "moved/f", b"f", (10, 0));
            put(root, "open/f", b"f", (10, 0));
        }
        settle(&s);
        settle(&t);
        let plan = scan_of(&s, &t, false, false);
        assert!(plan.ops.is_empty(), "{:?}", steps(&plan));
        assert!(plan.finish.is_empty(), "{:?}", finished(&plan));

        put(&s, "locked/new", b"n", (10, 0));
        put(&s, "open/new", b"n", (10, 0));
        settle(&s);
        fs::set_permissions(t.join("locked"), fs::Permissions::from_mode(0o550)).expect("chmod");
        filetime::set_file_mtime(t.join("moved"), FileTime::from_unix_time(1_000, 1))
            .expect("mtime");
        let plan = scan_of(&s, &t, false, false);
        assert_eq!(
            steps(&plan),
            ["open 'locked' 750", "copy locked/new 1", "copy open/new 1"]
        );
        assert_eq!(finished(&plan), ["locked", "moved", "open"]);

        // A mode that differs is stamped although nothing inside changed.
        put(&t, "locked/new", b"n", (10, 0));
        put(&t, "open/new", b"n", (10, 0));
        settle(&t);
        fs::set_permissions(t.join("calm"), fs::Permissions::from_mode(0o700)).expect("chmod");
        let plan = scan_of(&s, &t, false, false);
        assert!(plan.ops.is_empty(), "{:?}", steps(&plan));
        assert_eq!(finished(&plan), ["calm"]);
    }
}
