//! The two-way rules, one by one, and a model-based property test of the
//! whole: random edits on both sides, syncs, cancels and crashes.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use proptest::prelude::*;
use syncmgr_core::{Keep, ProgressReply};

use super::super::plan::TEMP_PREFIX;
use super::super::progress::Reporter;
use super::super::progress::testing::Recorder;
use super::archive::{Archive, Kind, is_within, key_of, rel_of};
use super::resolve::{ResolveError, resolve};
use super::sync::{self, End, Found, Outcome, PairPaths, Ran, Refusal};

struct Pair {
    _dir: tempfile::TempDir,
    paths: PairPaths,
}

impl Pair {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::create_dir(&a).expect("mkdir");
        fs::create_dir(&b).expect("mkdir");
        let paths = PairPaths {
            roots: [a, b],
            archive: dir.path().join("state/pair.json"),
            keep_trash: Duration::from_secs(3600),
        };
        Pair { _dir: dir, paths }
    }

    fn a(&self) -> &Path {
        &self.paths.roots[0]
    }

    fn b(&self) -> &Path {
        &self.paths.roots[1]
    }

    fn sync_with(&self, sink: &Recorder, confirmed: Option<String>) -> Outcome {
        let abort = AtomicBool::new(false);
        let mut reporter = Reporter::new(sink, "item", &abort);
        let options = sync::Options {
            confirmed,
            dry_run: false,
        };
        sync::run(&self.paths, &options, &mut reporter)
    }

    /// A complete sync that went past any guard (confirmed, as a user would).
    fn sync(&self) -> Ran {
        match self.sync_with(&Recorder::default(), None) {
            Outcome::Ran(ran) => ran,
            Outcome::Refused(Refusal::Guard(guard)) => {
                match self.sync_with(&Recorder::default(), Some(guard.fingerprint)) {
                    Outcome::Ran(ran) => ran,
                    other => panic!("confirmed, still refused: {other:?}"),
                }
            }
            Outcome::Refused(other) => panic!("refused: {other:?}"),
        }
    }

    fn conflicts(&self, ran: &Ran) -> Vec<PathBuf> {
        ran.conflicts
            .iter()
            .flatten()
            .map(|c: &Found| rel_of(&c.key))
            .collect()
    }

    fn archive(&self) -> Archive {
        Archive::load(&self.paths.archive).expect("archive")
    }
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(path, text).expect("write");
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file's contents below `root`, the trash included.
fn contents(root: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .collect()
}

/// The synced entries of a side (no `.syncmgr`): relative path → what it is.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == super::STATE_DIR))
        .filter_map(Result::ok)
    {
        let rel = e.path().strip_prefix(root).expect("below").to_path_buf();
        let meta = fs::symlink_metadata(e.path()).expect("meta");
        let mode = meta.permissions().mode() & 0o777;
        let what = if meta.is_dir() {
            format!("dir {mode:o}")
        } else if meta.is_symlink() {
            format!("link {}", fs::read_link(e.path()).expect("link").display())
        } else {
            format!("file {mode:o} {}", read(e.path()))
        };
        out.insert(rel, what);
    }
    out
}

#[test]
fn a_change_on_one_side_goes_to_the_other_both_ways() {
    let pair = Pair::new();
    write(&pair.a().join("docs/a.txt"), "from a");
    write(&pair.b().join("b.txt"), "from b");
    fs::create_dir(pair.a().join("empty")).expect("mkdir");
    symlink("docs/a.txt", pair.b().join("link")).expect("symlink");
    let ran = pair.sync();
    assert_eq!(ran.end, End::Done, "{:?}", ran.problems);
    assert_eq!(tree(pair.a()), tree(pair.b()));
    assert_eq!(read(&pair.b().join("docs/a.txt")), "from a");
    assert_eq!(read(&pair.a().join("b.txt")), "from b");
    assert!(pair.b().join("empty").is_dir());
    assert_eq!(
        fs::read_link(pair.a().join("link")).expect("link"),
        Path::new("docs/a.txt")
    );
    assert_eq!(ran.stats.copied, [2, 1]);
    // Modification times come along (to the nanosecond the file system keeps).
    let mtime = |p: &Path| {
        fs::symlink_metadata(p)
            .expect("meta")
            .modified()
            .expect("mtime")
    };
    assert_eq!(
        mtime(&pair.a().join("b.txt")),
        mtime(&pair.b().join("b.txt"))
    );
    assert_eq!(
        mtime(&pair.a().join("docs/a.txt")),
        mtime(&pair.b().join("docs/a.txt"))
    );

    // A modification, a mode change, a deletion, a rename.
    write(&pair.b().join("docs/a.txt"), "edited in b");
    fs::set_permissions(pair.a().join("b.txt"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::rename(pair.a().join("empty"), pair.a().join("renamed")).expect("rename");
    fs::remove_file(pair.b().join("link")).expect("rm");
    let ran = pair.sync();
    assert!(
        pair.conflicts(&ran).is_empty(),
        "{:?}",
        pair.conflicts(&ran)
    );
    assert_eq!(tree(pair.a()), tree(pair.b()));
    assert_eq!(read(&pair.a().join("docs/a.txt")), "edited in b");
    assert_eq!(
        fs::metadata(pair.b().join("b.txt"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(pair.b().join("renamed").is_dir() && !pair.b().join("empty").exists());
    assert!(!pair.a().join("link").exists());
    // Nothing was deleted: the old versions are in the trash.
    assert!(contents(pair.a()).contains("from a"));

    // Nothing changed: nothing to do, nothing hashed into a conflict.
    let ran = pair.sync();
    assert_eq!(ran.stats, sync::Stats::default());
}

#[test]
fn non_utf8_and_control_character_names_sync_both_ways() {
    let pair = Pair::new();
    let odd = OsStr::from_bytes(b"caf\xe9\nname");
    write(&pair.a().join(odd), "odd");
    write(&pair.b().join("tab\tname"), "tab");
    let ran = pair.sync();
    assert!(ran.problems.is_empty(), "{:?}", ran.problems);
    assert_eq!(read(&pair.b().join(odd)), "odd");
    assert_eq!(read(&pair.a().join("tab\tname")), "tab");
}

#[test]
fn the_same_change_on_both_sides_is_no_conflict() {
    let pair = Pair::new();
    write(&pair.a().join("f"), "same");
    write(&pair.b().join("f"), "same");
    let ran = pair.sync();
    assert!(pair.conflicts(&ran).is_empty());
    assert_eq!(ran.stats.alike, 1);
    write(&pair.a().join("f"), "again");
    write(&pair.b().join("f"), "again");
    assert!(pair.conflicts(&pair.sync()).is_empty());
}

/// Each kind of conflict is reported, and neither version is touched.
#[test]
fn each_kind_of_conflict_keeps_both_versions() {
    let pair = Pair::new();
    for name in ["modify", "delete", "type", "inside/f"] {
        write(&pair.a().join(name), "base");
    }
    pair.sync();
    // modify/modify
    write(&pair.a().join("modify"), "a's");
    write(&pair.b().join("modify"), "b's");
    // modify/delete
    write(&pair.a().join("delete"), "a's edit");
    fs::remove_file(pair.b().join("delete")).expect("rm");
    // create/create
    write(&pair.a().join("new"), "a's new");
    write(&pair.b().join("new"), "b's new");
    // file/folder
    fs::remove_file(pair.b().join("type")).expect("rm");
    write(&pair.b().join("type/child"), "b's child");
    write(&pair.a().join("type"), "a's file");
    // a folder deleted on one side, changed inside on the other
    fs::remove_dir_all(pair.a().join("inside")).expect("rm");
    write(&pair.b().join("inside/f"), "b's edit inside");

    let ran = pair.sync();
    let mut found = pair.conflicts(&ran);
    found.sort();
    assert_eq!(
        found,
        ["delete", "inside", "modify", "new", "type"].map(PathBuf::from)
    );
    assert_eq!(read(&pair.a().join("modify")), "a's");
    assert_eq!(read(&pair.b().join("modify")), "b's");
    assert_eq!(read(&pair.a().join("delete")), "a's edit");
    assert!(!pair.b().join("delete").exists());
    assert_eq!(read(&pair.b().join("type/child")), "b's child");
    assert_eq!(read(&pair.b().join("inside/f")), "b's edit inside");
    assert!(!pair.a().join("inside").exists());
    let texts: Vec<&str> = ran
        .conflicts
        .iter()
        .flatten()
        .map(|c| c.text.as_str())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("delete: modified in") && t.contains("deleted in")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.starts_with("new: created in")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("type: ") && t.contains("became a folder")),
        "{texts:?}"
    );
    // Reported again at the next sync with the same ids; nothing resolved.
    let again = pair.sync();
    let ids = |r: &Ran| -> BTreeSet<String> {
        r.conflicts.iter().flatten().map(|c| c.id.clone()).collect()
    };
    assert_eq!(ids(&again), ids(&ran));
    assert!(again.resolved.is_empty());
    // Made equal by hand: the conflict is gone, and said so.
    write(&pair.b().join("modify"), "a's");
    let after = pair.sync();
    assert_eq!(after.resolved.len(), 1);
    assert!(!pair.conflicts(&after).contains(&PathBuf::from("modify")));
}

fn conflict_of(ran: &Ran, rel: &str) -> String {
    ran.conflicts
        .iter()
        .flatten()
        .find(|c| rel_of(&c.key) == Path::new(rel))
        .unwrap_or_else(|| panic!("no conflict at {rel}"))
        .id
        .clone()
}

#[test]
fn keeping_one_version_syncs_it_and_trashes_the_other() {
    let pair = Pair::new();
    write(&pair.a().join("f.txt"), "base");
    pair.sync();
    write(&pair.a().join("f.txt"), "a's");
    write(&pair.b().join("f.txt"), "b's");
    let ran = pair.sync();
    let id = conflict_of(&ran, "f.txt");
    settle(&pair, &id, Keep::One(1));
    assert_eq!(read(&pair.a().join("f.txt")), "b's");
    assert_eq!(read(&pair.b().join("f.txt")), "b's");
    assert!(
        contents(pair.a()).contains("a's"),
        "the loser is in the trash"
    );
    // Resolved once: a second decision finds nothing.
    let again = resolve(&pair.paths, &id, Keep::One(0)).expect_err("gone");
    assert!(matches!(again, ResolveError::Unknown(_)), "{again}");
}

#[test]
fn keeping_all_renames_the_older_aside_and_syncs_both() {
    let pair = Pair::new();
    write(&pair.a().join("f.txt"), "base");
    pair.sync();
    write(&pair.a().join("f.txt"), "a's older");
    let old = filetime::FileTime::from_unix_time(1_000_000_000, 0);
    filetime::set_file_mtime(pair.a().join("f.txt"), old).expect("mtime");
    write(&pair.b().join("f.txt"), "b's newer");
    let ran = pair.sync();
    let id = conflict_of(&ran, "f.txt");
    settle(&pair, &id, Keep::All);
    assert_eq!(tree(pair.a()), tree(pair.b()));
    let names: Vec<String> = tree(pair.a())
        .keys()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("f.sync-conflict-") && n.ends_with(".txt")),
        "{names:?}"
    );
    assert_eq!(read(&pair.a().join("f.txt")), "b's newer");
}

#[test]
fn a_conflict_that_changed_again_is_refused_as_stale() {
    let pair = Pair::new();
    write(&pair.a().join("f"), "base");
    pair.sync();
    write(&pair.a().join("f"), "a's");
    write(&pair.b().join("f"), "b's");
    let ran = pair.sync();
    let id = conflict_of(&ran, "f");
    write(&pair.b().join("f"), "b's second thoughts");
    let error = resolve(&pair.paths, &id, Keep::One(0)).expect_err("stale");
    assert!(matches!(error, ResolveError::Stale { .. }), "{error}");
    assert!(error.to_string().contains("stale"));
    // Nothing was touched.
    assert_eq!(read(&pair.a().join("f")), "a's");
    assert_eq!(read(&pair.b().join("f")), "b's second thoughts");
    let error = resolve(&pair.paths, &id, Keep::One(5)).expect_err("no version 5");
    assert!(matches!(error, ResolveError::NoVersion(5)), "{error}");
}

#[test]
fn guards_stop_an_empty_side_and_a_mass_deletion() {
    let pair = Pair::new();
    for n in 0..4 {
        write(&pair.a().join(format!("f{n}")), "x");
    }
    pair.sync();
    // B's disk "not mounted": an empty folder where files were.
    for n in 0..4 {
        fs::remove_file(pair.b().join(format!("f{n}"))).expect("rm");
    }
    match pair.sync_with(&Recorder::default(), None) {
        Outcome::Refused(Refusal::Guard(guard)) => {
            assert_eq!(guard.kind, sync::GuardKind::EmptySide);
            assert!(guard.refusal().contains("is empty"), "{}", guard.refusal());
        }
        other => panic!("not refused: {other:?}"),
    }
    assert_eq!(tree(pair.a()).len(), 4, "nothing moved");
    // Three of four deleted on B (not empty): more than half of A's.
    write(&pair.b().join("f0"), "x");
    let fingerprint = match pair.sync_with(&Recorder::default(), None) {
        Outcome::Refused(Refusal::Guard(guard)) => {
            assert_eq!(guard.kind, sync::GuardKind::MassDelete);
            assert_eq!((guard.deletions, guard.files), (3, 4));
            guard.fingerprint
        }
        other => panic!("not refused: {other:?}"),
    };
    // A confirmation of another run confirms nothing.
    assert!(matches!(
        pair.sync_with(&Recorder::default(), Some("000000000000".into())),
        Outcome::Refused(Refusal::Guard(_))
    ));
    let Outcome::Ran(ran) = pair.sync_with(&Recorder::default(), Some(fingerprint)) else {
        panic!("confirmed, refused");
    };
    assert_eq!(ran.stats.trashed, 3);
    assert_eq!(tree(pair.a()), tree(pair.b()));
    // A side gone altogether stops the item.
    fs::remove_dir_all(pair.b()).expect("rm");
    assert!(matches!(
        pair.sync_with(&Recorder::default(), None),
        Outcome::Refused(Refusal::Missing(_))
    ));
}

#[test]
fn a_cancel_stops_within_one_chunk_and_leaves_no_temporary_file() {
    let pair = Pair::new();
    let big = "y".repeat(5 << 20);
    write(&pair.a().join("big"), &big);
    // The first progress calls: start, planned, file; then one per chunk.
    let sink = Recorder::stopping_at(4, Ok(ProgressReply::CancelItem));
    let Outcome::Ran(ran) = pair.sync_with(&sink, None) else {
        panic!("refused");
    };
    assert_eq!(ran.end, End::Stopped);
    assert!(!pair.b().join("big").exists());
    let leftovers: Vec<PathBuf> = walkdir::WalkDir::new(pair.b())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
        .map(|e| e.into_path())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let bytes: Vec<u64> = sink.sent().iter().filter_map(|s| s.value).collect();
    assert!(bytes.iter().all(|b| *b <= 2 << 20), "{bytes:?}");
    // The next run finishes the job.
    let ran = pair.sync();
    assert_eq!(ran.end, End::Done);
    assert_eq!(read(&pair.b().join("big")).len(), big.len());
}

// ---------------------------------------------------------------------------
// The model-based property test
// ---------------------------------------------------------------------------

/// Names the random edits use: nested, a non-UTF-8 one, one with a newline.
fn names() -> Vec<PathBuf> {
    ["x", "y", "x/y", "x/z", "y/x"]
        .iter()
        .map(PathBuf::from)
        .chain([
            PathBuf::from(OsStr::from_bytes(b"n\xff")),
            PathBuf::from("x/n\nl"),
        ])
        .collect()
}

#[derive(Debug, Clone)]
enum Step {
    Write {
        side: usize,
        name: usize,
    },
    Delete {
        side: usize,
        name: usize,
    },
    Rename {
        side: usize,
        from: usize,
        to: usize,
    },
    MakeDir {
        side: usize,
        name: usize,
    },
    Chmod {
        side: usize,
        name: usize,
        private: bool,
    },
    Link {
        side: usize,
        name: usize,
    },
    /// A sync: complete, cancelled at progress call N, or crashed there
    /// (cancelled, and the archive as it was before the run).
    Sync {
        cancel_at: Option<(usize, bool)>,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let n = names().len();
    prop_oneof![
        4 => (0..2usize, 0..n).prop_map(|(side, name)| Step::Write { side, name }),
        2 => (0..2usize, 0..n).prop_map(|(side, name)| Step::Delete { side, name }),
        1 => (0..2usize, 0..n, 0..n).prop_map(|(side, from, to)| Step::Rename { side, from, to }),
        1 => (0..2usize, 0..n).prop_map(|(side, name)| Step::MakeDir { side, name }),
        1 => (0..2usize, 0..n, any::<bool>()).prop_map(|(side, name, private)| Step::Chmod { side, name, private }),
        1 => (0..2usize, 0..n).prop_map(|(side, name)| Step::Link { side, name }),
        3 => proptest::option::weighted(0.4, (0..12usize, any::<bool>()))
            .prop_map(|cancel_at| Step::Sync { cancel_at }),
    ]
}

/// Makes every ancestor of `path` below `root` a folder (what a user's
/// program would do to write there, files in the way deleted).
fn make_parents(root: &Path, rel: &Path) {
    let mut at = root.to_path_buf();
    let parts: Vec<_> = rel.iter().collect();
    for part in &parts[..parts.len() - 1] {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                fs::remove_file(&at).expect("rm");
                fs::create_dir(&at).expect("mkdir");
            }
            Err(_) => fs::create_dir(&at).expect("mkdir"),
        }
    }
}

fn remove(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).expect("rm -r"),
        Ok(_) => fs::remove_file(path).expect("rm"),
        Err(_) => {}
    }
}

struct Model {
    pair: Pair,
    next: u64,
    /// Versions current on some side at the start of the last sync.
    must_survive: BTreeSet<String>,
    /// Paths edited on each side since the last complete sync.
    touched: [BTreeSet<PathBuf>; 2],
    /// Conflicts open after the last complete sync.
    open: BTreeSet<PathBuf>,
}

impl Model {
    fn apply(&mut self, step: &Step) {
        let names = names();
        match step {
            Step::Write { side, name } => {
                let rel = &names[*name];
                let root = self.pair.paths.roots[*side].clone();
                make_parents(&root, rel);
                remove(&root.join(rel));
                self.next += 1;
                fs::write(root.join(rel), format!("v{}", self.next)).expect("write");
                self.touch(*side, rel);
            }
            Step::Delete { side, name } => {
                let rel = &names[*name];
                remove(&self.pair.paths.roots[*side].join(rel));
                self.touch(*side, rel);
            }
            Step::Rename { side, from, to } => {
                let (from, to) = (&names[*from], &names[*to]);
                let root = &self.pair.paths.roots[*side];
                let exists = fs::symlink_metadata(root.join(from)).is_ok();
                let free = fs::symlink_metadata(root.join(to)).is_err();
                let parent_ok = to
                    .parent()
                    .is_none_or(|p| p.as_os_str().is_empty() || root.join(p).is_dir());
                if exists && free && parent_ok && !to.starts_with(from) {
                    fs::rename(root.join(from), root.join(to)).expect("rename");
                    self.touch(*side, from);
                    self.touch(*side, to);
                }
            }
            Step::MakeDir { side, name } => {
                let rel = &names[*name];
                let root = self.pair.paths.roots[*side].clone();
                make_parents(&root, rel);
                if !root.join(rel).is_dir() {
                    remove(&root.join(rel));
                    fs::create_dir(root.join(rel)).expect("mkdir");
                    self.touch(*side, rel);
                }
            }
            Step::Chmod {
                side,
                name,
                private,
            } => {
                let path = self.pair.paths.roots[*side].join(&names[*name]);
                if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                    let mode = if *private { 0o600 } else { 0o644 };
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
                    self.touch(*side, &names[*name]);
                }
            }
            Step::Link { side, name } => {
                let rel = &names[*name];
                let root = self.pair.paths.roots[*side].clone();
                make_parents(&root, rel);
                remove(&root.join(rel));
                self.next += 1;
                symlink(format!("target-{}", self.next), root.join(rel)).expect("symlink");
                self.touch(*side, rel);
            }
            Step::Sync { cancel_at } => self.sync(*cancel_at),
        }
    }

    fn touch(&mut self, side: usize, rel: &Path) {
        self.touched[side].insert(rel.to_path_buf());
    }

    fn sync(&mut self, cancel_at: Option<(usize, bool)>) {
        // What a sync must keep is what was there when it started; the
        // user's own deletions later are theirs.
        self.must_survive.clear();
        for root in &self.pair.paths.roots {
            for (rel, what) in tree(root) {
                if let Some(text) = what.strip_prefix("file ") {
                    let content = text.split_once(' ').map_or("", |(_, c)| c);
                    let _ = rel;
                    self.must_survive.insert(content.to_owned());
                }
            }
        }
        match cancel_at {
            Some((at, crash)) => {
                let saved = fs::read(&self.pair.paths.archive).ok();
                let before = [0, 1].map(|s| tree(&self.pair.paths.roots[s]));
                let sink = Recorder::stopping_at(at, Ok(ProgressReply::CancelItem));
                // A guard may refuse: that changes nothing, which is fine.
                let _ = self.pair.sync_with(&sink, None);
                if crash {
                    // The run died before it could save the archive.
                    match saved {
                        Some(bytes) => fs::write(&self.pair.paths.archive, bytes).expect("restore"),
                        None => {
                            let _ = fs::remove_file(&self.pair.paths.archive);
                        }
                    }
                    // What the dead run wrote, the archive does not know:
                    // to the next run it is a change like the user's (a
                    // user's edit over it can then conflict).
                    for side in [0, 1] {
                        let after = tree(&self.pair.paths.roots[side]);
                        let keys: BTreeSet<&PathBuf> =
                            before[side].keys().chain(after.keys()).collect();
                        for rel in keys {
                            if before[side].get(rel) != after.get(rel) {
                                self.touched[side].insert(rel.clone());
                            }
                        }
                    }
                }
                self.check_nothing_lost();
            }
            None => {
                let ran = self.pair.sync();
                assert_eq!(ran.end, End::Done, "{:?}", ran.problems);
                assert!(ran.problems.is_empty(), "{:?}", ran.problems);
                self.check_complete(&ran);
            }
        }
    }

    fn check_nothing_lost(&self) {
        let mut on_disk = BTreeSet::new();
        for root in &self.pair.paths.roots {
            on_disk.extend(contents(root));
        }
        let lost: Vec<&String> = self.must_survive.difference(&on_disk).collect();
        assert!(lost.is_empty(), "versions lost: {lost:?}");
    }

    fn check_complete(&mut self, ran: &Ran) {
        self.check_nothing_lost();
        let conflicts: BTreeSet<PathBuf> = self.pair.conflicts(ran).into_iter().collect();
        let in_conflict = |rel: &Path| conflicts.iter().any(|c| rel.starts_with(c));
        // Both sides equal, except for open conflicts.
        let [a, b] = [0, 1].map(|s| {
            tree(&self.pair.paths.roots[s])
                .into_iter()
                .filter(|(rel, _)| !in_conflict(rel))
                .collect::<BTreeMap<_, _>>()
        });
        assert_eq!(a, b, "the sides differ outside the conflicts {conflicts:?}");
        // No conflict where only one side changed.
        let related = |x: &Path, y: &Path| x.starts_with(y) || y.starts_with(x);
        for c in &conflicts {
            let both = [0, 1].map(|s| self.touched[s].iter().any(|t| related(t, c)));
            assert!(
                // Paths in or around a conflict left open were not synced
                // since: what they hold on either side is still unsynced.
                (both[0] && both[1]) || self.open.iter().any(|o| related(o, c)),
                "a conflict at {} where only one side changed ({:?})",
                c.display(),
                self.touched
            );
        }
        // The archive matches both sides (outside the conflicts).
        let archive = self.pair.archive();
        let known: BTreeSet<PathBuf> = archive
            .entries
            .keys()
            .map(|k| rel_of(k))
            .filter(|rel| !in_conflict(rel))
            .collect();
        let present: BTreeSet<PathBuf> = a.keys().cloned().collect();
        assert_eq!(known, present, "the archive does not match the sides");
        for (key, entry) in &archive.entries {
            let rel = rel_of(key);
            if in_conflict(&rel) {
                continue;
            }
            let what = &a[&rel];
            let kind_ok = match entry.kind {
                Kind::Dir => what.starts_with("dir"),
                Kind::Link => what.starts_with("link"),
                Kind::File => what.starts_with("file"),
            };
            assert!(
                kind_ok,
                "{}: archive {:?}, disk {what}",
                rel.display(),
                entry.kind
            );
            if entry.kind == Kind::File {
                let disk = fs::read(self.pair.paths.roots[0].join(&rel)).expect("read");
                assert_eq!(blake3::hash(&disk).to_hex().as_str(), entry.content);
            }
        }
        assert!(
            archive
                .conflicts
                .iter()
                .all(|c| conflicts.iter().any(|k| key_of(k) == c.key))
        );
        let _ = is_within;
        self.open = conflicts;
        self.touched = [BTreeSet::new(), BTreeSet::new()];
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        max_shrink_iters: 2000,
        .. ProptestConfig::default()
    })]

    /// Any edits on both sides, any syncs, cancels and crashes: after every
    /// complete sync the sides are equal but for open conflicts, the archive
    /// matches them, no conflict is reported where one side alone changed,
    /// and no version current at a sync's start was ever lost.
    #[test]
    fn two_replicas_converge_and_lose_nothing(steps in proptest::collection::vec(step(), 1..40)) {
        let mut model = Model {
            pair: Pair::new(),
            next: 0,
            must_survive: BTreeSet::new(),
            touched: [BTreeSet::new(), BTreeSet::new()],
            open: BTreeSet::new(),
        };
        for step in &steps {
            model.apply(step);
        }
        model.apply(&Step::Sync { cancel_at: None });
        // A second complete sync right away changes nothing.
        let ran = model.pair.sync();
        prop_assert_eq!(ran.stats.copied, [0, 0]);
        prop_assert_eq!(ran.stats.trashed, 0);
    }
}

/// A folder swapped for a link to somewhere else after the scan: nothing
/// is written or moved through the link, and nothing outside is touched.
#[test]
fn a_folder_swapped_for_a_link_after_the_scan_is_not_written_through() {
    let pair = Pair::new();
    write(&pair.a().join("sub/f"), "base");
    quiet_the_guards(&pair);
    pair.sync();
    let outside = pair.paths.archive.parent().unwrap().join("outside");
    fs::create_dir_all(&outside).expect("mkdir");
    write(&outside.join("f"), "not yours");
    write(&pair.a().join("sub/new"), "new on a");
    fs::remove_file(pair.a().join("sub/f")).expect("rm");
    // The scan sees `b/sub` as the folder it is; then it becomes a link.
    let sink = SwapAfterScan {
        inner: Recorder::default(),
        swap: Some((pair.b().join("sub"), outside.clone())),
        done: std::sync::Mutex::new(false),
    };
    let abort = AtomicBool::new(false);
    let mut reporter = Reporter::new(&sink, "item", &abort);
    let outcome = sync::run(&pair.paths, &sync::Options::default(), &mut reporter);
    let Outcome::Ran(ran) = outcome else {
        panic!("refused: {outcome:?}");
    };
    assert!(ran.stats.skipped >= 2, "{:?}", ran.stats);
    assert_eq!(read(&outside.join("f")), "not yours");
    assert!(!outside.join("new").exists());
}

/// A sink that, at the plan's first report (`planned`), replaces a folder by
/// a link: what a race with another program looks like.
struct SwapAfterScan {
    inner: Recorder,
    swap: Option<(PathBuf, PathBuf)>,
    done: std::sync::Mutex<bool>,
}

impl super::super::progress::Sink for SwapAfterScan {
    fn progress(
        &self,
        item: &str,
        update: &syncmgr_core::ProgressUpdate<'_>,
    ) -> Result<ProgressReply, syncmgr_core::CallbackError> {
        if update.max.is_some() {
            let mut done = self.done.lock().unwrap();
            if !*done && let Some((folder, elsewhere)) = &self.swap {
                let aside = folder.with_file_name("aside");
                fs::rename(folder, &aside).expect("move the folder");
                symlink(elsewhere, folder).expect("link");
                *done = true;
            }
        }
        self.inner.progress(item, update)
    }

    fn is_cancelled(&self, item: &str) -> bool {
        self.inner.is_cancelled(item)
    }
}

/// Each run's trash is kept for the pair's retention, then emptied by a
/// later run; a younger one stays.
#[test]
fn old_trash_is_emptied_and_young_trash_kept() {
    let mut pair = Pair::new();
    write(&pair.a().join("f"), "first");
    pair.sync();
    write(&pair.a().join("f"), "second");
    pair.sync();
    let trash = pair.b().join(".syncmgr/trash");
    assert_eq!(fs::read_dir(&trash).expect("a trash").count(), 1);
    assert!(contents(pair.b()).contains("first"));
    // Kept an hour: still there after another run.
    write(&pair.a().join("g"), "more");
    pair.sync();
    assert!(contents(pair.b()).contains("first"));
    // Kept no time at all: the next run empties it.
    pair.paths.keep_trash = Duration::ZERO;
    pair.sync();
    assert!(!contents(pair.b()).contains("first"));
}

/// Three more files on A, so that one path going to a trash is never
/// more than half of a side (the mass-deletion guard stays quiet).
fn quiet_the_guards(pair: &Pair) {
    for n in 0..3 {
        write(&pair.a().join(format!("keep{n}")), "keeps the guards quiet");
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A pair synced once with `base` at `rel`, then changed on both sides by
/// `on_a` and `on_b`, and synced into a conflict: its id.
fn conflicted(pair: &Pair, rel: &str, on_a: impl Fn(&Path), on_b: impl Fn(&Path)) -> String {
    write(&pair.a().join(rel), "base");
    quiet_the_guards(pair);
    pair.sync();
    on_a(&pair.a().join(rel));
    on_b(&pair.b().join(rel));
    let ran = pair.sync();
    conflict_of(&ran, rel)
}

fn replace_with_dir(path: &Path) {
    fs::remove_file(path).expect("rm");
    write(&path.join("inside"), "in the folder");
}

/// Applies a decision and syncs: no conflict is left.
fn settle(pair: &Pair, id: &str, keep: Keep) {
    resolve(&pair.paths, id, keep).expect("resolved");
    let ran = pair.sync();
    assert!(
        pair.conflicts(&ran).is_empty(),
        "{:?}",
        pair.conflicts(&ran)
    );
}

/// The file renamed aside (`STEM.sync-conflict-...`) on a side, and what
/// it is.
fn aside(root: &Path, stem: &str) -> (PathBuf, String) {
    let prefix = format!("{stem}.sync-conflict-");
    tree(root)
        .into_iter()
        .find(|(rel, _)| rel.to_string_lossy().starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}* in {}", root.display()))
}

/// Keep all where one side deleted: the version there is kept, on both.
#[test]
fn keeping_all_of_a_modify_delete_conflict_keeps_the_one_there_is() {
    for deleted_on_a in [false, true] {
        let pair = Pair::new();
        let id = conflicted(
            &pair,
            "f",
            |p| {
                if deleted_on_a {
                    fs::remove_file(p).unwrap()
                } else {
                    write(p, "edited")
                }
            },
            |p| {
                if deleted_on_a {
                    write(p, "edited")
                } else {
                    fs::remove_file(p).unwrap()
                }
            },
        );
        settle(&pair, &id, Keep::All);
        assert_eq!(read(&pair.a().join("f")), "edited");
        assert_eq!(read(&pair.b().join("f")), "edited");
    }
}

/// Keep one, where the version kept is the deletion: the other goes to the
/// trash, on its side only.
#[test]
fn keeping_a_deletion_trashes_the_other_version() {
    let pair = Pair::new();
    let id = conflicted(
        &pair,
        "f",
        |p| fs::remove_file(p).unwrap(),
        |p| write(p, "edited"),
    );
    settle(&pair, &id, Keep::One(0));
    assert!(!pair.a().join("f").exists() && !pair.b().join("f").exists());
    let trash = pair.b().join(".syncmgr/trash");
    let runs: Vec<String> = fs::read_dir(&trash)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    // `YYYYMMDD-HHMMSS-resolved`.
    let name = &runs[0];
    assert!(
        name.ends_with("-resolved") && name.len() == "20261206-101112-resolved".len(),
        "{name}"
    );
    assert!(name[..8].chars().all(|c| c.is_ascii_digit()), "{name}");
    assert_eq!(read(&trash.join(name).join("f")), "edited");
}

/// Keep all of a file against a folder: the file makes way (renamed
/// aside), whichever side it is on; both reach both sides.
#[test]
fn keeping_all_of_a_file_and_a_folder_renames_the_file() {
    for folder_on_a in [false, true] {
        let pair = Pair::new();
        let id = conflicted(
            &pair,
            "x.txt",
            |p| {
                if folder_on_a {
                    replace_with_dir(p)
                } else {
                    write(p, "file")
                }
            },
            |p| {
                if folder_on_a {
                    write(p, "file")
                } else {
                    replace_with_dir(p)
                }
            },
        );
        settle(&pair, &id, Keep::All);
        assert_eq!(tree(pair.a()), tree(pair.b()));
        assert_eq!(read(&pair.a().join("x.txt/inside")), "in the folder");
        let aside = aside(pair.a(), "x");
        assert!(aside.1.ends_with(" file"), "{aside:?}");
    }
}

/// Keep all of two files with the same modification time: the second
/// folder's makes way (a stable rule, so both sides agree).
#[test]
fn keeping_all_with_equal_times_renames_the_second_folders_file() {
    let pair = Pair::new();
    let when = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let set = |p: &Path, text: &str| {
        write(p, text);
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(when)
            .unwrap();
    };
    let id = conflicted(&pair, "f.txt", |p| set(p, "from a"), |p| set(p, "from b!"));
    resolve(&pair.paths, &id, Keep::All).expect("resolved");
    pair.sync();
    assert_eq!(read(&pair.a().join("f.txt")), "from a");
    assert_eq!(read(&pair.b().join("f.txt")), "from a");
    let aside = aside(pair.b(), "f");
    assert!(aside.1.ends_with("from b!"), "{aside:?}");
}

/// Two folders whose modes both changed: keeping one sets the other's
/// mode; nothing inside moves.
#[test]
fn keeping_one_folder_mode_moves_nothing_inside() {
    let pair = Pair::new();
    write(&pair.a().join("d/inside"), "stays");
    quiet_the_guards(&pair);
    pair.sync();
    chmod(&pair.a().join("d"), 0o700);
    chmod(&pair.b().join("d"), 0o750);
    let ran = pair.sync();
    let id = conflict_of(&ran, "d");
    settle(&pair, &id, Keep::One(1));
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&pair.a().join("d")), 0o750);
    assert_eq!(read(&pair.a().join("d/inside")), "stays");
    assert_eq!(read(&pair.b().join("d/inside")), "stays");
    assert!(
        !pair.a().join(".syncmgr/trash").exists(),
        "nothing went to the trash"
    );
}

/// The same path resolved twice in one second: the second loser gets a
/// name of its own in the trash; both are kept.
#[test]
fn two_losers_of_one_path_are_both_kept_in_the_trash() {
    let pair = Pair::new();
    let id = conflicted(&pair, "f", |p| write(p, "a1"), |p| write(p, "b1"));
    resolve(&pair.paths, &id, Keep::One(1)).expect("resolved");
    pair.sync();
    write(&pair.a().join("f"), "a2");
    write(&pair.b().join("f"), "b2");
    let ran = pair.sync();
    let id = conflict_of(&ran, "f");
    resolve(&pair.paths, &id, Keep::One(1)).expect("resolved");
    pair.sync();
    let kept = contents(pair.a());
    assert!(kept.contains("a1") && kept.contains("a2"), "{kept:?}");
}

/// Keep one of a file and a folder: the folder wins whole, the file goes
/// to the trash; keep all of two folders (a mode conflict) is refused.
#[test]
fn keeping_a_folder_over_a_file_and_all_of_two_folders() {
    let pair = Pair::new();
    let id = conflicted(&pair, "x", replace_with_dir, |p| write(p, "file"));
    settle(&pair, &id, Keep::One(0));
    assert_eq!(read(&pair.b().join("x/inside")), "in the folder");
    assert!(
        contents(pair.b()).contains("file"),
        "the file is in the trash"
    );

    let pair = Pair::new();
    write(&pair.a().join("d/inside"), "stays");
    quiet_the_guards(&pair);
    pair.sync();
    chmod(&pair.a().join("d"), 0o700);
    chmod(&pair.b().join("d"), 0o750);
    let id = conflict_of(&pair.sync(), "d");
    let error = resolve(&pair.paths, &id, Keep::All).expect_err("two folders");
    assert!(matches!(error, ResolveError::NotBoth(_)), "{error}");
    assert_eq!(read(&pair.b().join("d/inside")), "stays");
}

/// The diff of a conflict: two small text files give `diff -u`; a folder,
/// a binary file, a large one or an unknown conflict give none.
#[test]
fn a_conflict_diff_is_for_two_small_text_files_only() {
    let pair = Pair::new();
    let id = conflicted(
        &pair,
        "t.txt",
        |p| write(p, "one\ntwo\n"),
        |p| write(p, "one\n2\n"),
    );
    let diff = super::resolve::diff(&pair.paths, &id).expect("a diff");
    assert!(
        diff.starts_with("--- ") && diff.contains("\n-two\n+2\n"),
        "{diff}"
    );
    assert!(
        diff.contains("a/t.txt") && diff.contains("b/t.txt"),
        "{diff}"
    );
    assert_eq!(super::resolve::diff(&pair.paths, "path-unknown"), None);
    for (side, data) in [(0, vec![0u8, 1, 2]), (1, vec![b'x'; (1 << 20) + 1])] {
        let pair = Pair::new();
        let id = conflicted(&pair, "f", |p| write(p, "a text"), |p| write(p, "another"));
        fs::write(pair.paths.roots[side].join("f"), &data).expect("write");
        assert_eq!(super::resolve::diff(&pair.paths, &id), None);
    }
    let pair = Pair::new();
    let id = conflicted(&pair, "x", replace_with_dir, |p| write(p, "file"));
    assert_eq!(super::resolve::diff(&pair.paths, &id), None);
}

/// What the walk cannot sync (a FIFO where a file was) is left alone on
/// both sides: never taken for a deletion of the file on the other side.
#[test]
fn an_entry_that_cannot_be_synced_is_not_a_deletion() {
    let pair = Pair::new();
    write(&pair.a().join("p"), "a file");
    quiet_the_guards(&pair);
    pair.sync();
    fs::remove_file(pair.a().join("p")).expect("rm");
    let made = std::process::Command::new("mkfifo")
        .arg(pair.a().join("p"))
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let ran = pair.sync();
    assert_eq!(ran.problems.len(), 1, "{:?}", ran.problems);
    assert!(
        ran.problems[0].contains("not a file, folder or link"),
        "{:?}",
        ran.problems
    );
    assert_eq!(read(&pair.b().join("p")), "a file");
    assert_eq!(ran.stats.trashed, 0);
}
