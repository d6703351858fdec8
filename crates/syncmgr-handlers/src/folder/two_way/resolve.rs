//! Applying the user's decision on a conflict, and showing one: the
//! versions are checked against what they were when the conflict was
//! reported (a stale conflict is refused, never resolved blindly); then the
//! losing version goes to the trash (keep one) or is renamed aside (keep
//! all), and the path is dropped from the archive, so that the sync the
//! manager runs next carries the result to the other side.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use syncmgr_core::Keep;

use super::super::progress::path_text;
use super::archive::{Archive, Kind, OpenConflict, Seen, rel_of};
use super::scan::{Meta, STATE_DIR};
use super::sync::{A, B, PairPaths, move_without_replacing};

/// Why a decision was not applied (the conflict stays).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    #[error("{0}")]
    Archive(String),
    #[error(
        "there is no open conflict {0} in this folder pair; sync it to see its conflicts again"
    )]
    Unknown(String),
    #[error(
        "the conflict is stale: {path} changed since the conflict was reported; sync again to see it as it is now, then decide"
    )]
    Stale { path: String },
    #[error("there is no version {0}: keep 0 (the first folder's) or 1 (the second's)")]
    NoVersion(usize),
    #[error(
        "keeping all needs two versions of which one is a file (here: {0}); keep one of them instead"
    )]
    NotBoth(String),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: io::Error,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ResolveError {
    let path = path_text(path).into_owned();
    move |source| ResolveError::Io { what, path, source }
}

/// What a side holds at `path` now, as a conflict recorded it.
fn seen_now(path: &Path) -> Result<Option<Seen>, ResolveError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Meta::of(&meta, None).map(|m| Seen {
            kind: m.kind,
            size: m.size,
            stamp: m.stamp,
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("examine", path)(e)),
    }
}

/// Applies `keep` to the conflict `id` of the pair.
pub(crate) fn resolve(paths: &PairPaths, id: &str, keep: Keep) -> Result<(), ResolveError> {
    if let Keep::One(n) = keep
        && n > B
    {
        return Err(ResolveError::NoVersion(n));
    }
    let mut archive =
        Archive::load(&paths.archive).map_err(|e| ResolveError::Archive(e.to_string()))?;
    let Some(at) = archive.conflicts.iter().position(|c| c.id == id) else {
        return Err(ResolveError::Unknown(id.to_owned()));
    };
    let conflict = archive.conflicts[at].clone();
    let rel = rel_of(&conflict.key);
    let sides = [A, B].map(|side| paths.roots[side].join(&rel));
    for (side, recorded) in [(A, conflict.a), (B, conflict.b)] {
        if seen_now(&sides[side])? != recorded {
            return Err(ResolveError::Stale {
                path: path_text(&sides[side]).into_owned(),
            });
        }
    }
    match keep {
        Keep::One(winner) => {
            let loser = 1 - winner;
            match (seen_of(&conflict, winner), seen_of(&conflict, loser)) {
                // Two folders differ only in their modes: the loser takes
                // the winner's, and everything in them stays.
                (Some(w), Some(l)) if w.kind == Kind::Dir && l.kind == Kind::Dir => {
                    let mode = fs::symlink_metadata(&sides[winner])
                        .map_err(io_error("examine", &sides[winner]))?
                        .permissions();
                    fs::set_permissions(&sides[loser], mode)
                        .map_err(io_error("set the mode of", &sides[loser]))?;
                    archive.conflicts.remove(at);
                    return archive
                        .save(&paths.archive)
                        .map_err(|e| ResolveError::Archive(e.to_string()));
                }
                (_, Some(_)) => trash(&paths.roots[loser], &rel)?,
                (_, None) => {}
            }
        }
        Keep::All => {
            let (a, b) = (conflict.a, conflict.b);
            match (a, b) {
                (Some(a), Some(b)) if a.kind == Kind::File || b.kind == Kind::File => {
                    // The older file makes way (a file makes way for a
                    // folder); it keeps its contents under a new name on
                    // its side, and the next sync copies both.
                    let loser = match (a.kind, b.kind) {
                        (Kind::File, Kind::File) if a.stamp.mtime < b.stamp.mtime => A,
                        (Kind::File, Kind::File) => B,
                        (Kind::File, _) => A,
                        _ => B,
                    };
                    rename_aside(&sides[loser])?;
                }
                // One side has nothing (checked above): keeping all is
                // keeping the one there is, which the next sync copies.
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(ResolveError::NotBoth(
                        "two folders, or nothing on either side".to_owned(),
                    ));
                }
            }
        }
    }
    archive.forget_tree(&conflict.key);
    archive.conflicts.remove(at);
    archive
        .save(&paths.archive)
        .map_err(|e| ResolveError::Archive(e.to_string()))
}

fn seen_of(conflict: &OpenConflict, side: usize) -> Option<Seen> {
    if side == A { conflict.a } else { conflict.b }
}

/// Moves `root/rel` to the root's trash, under a folder of its own.
fn trash(root: &Path, rel: &Path) -> Result<(), ResolveError> {
    trash_as(root, rel, &format!("{}-resolved", stamp_now()))
}

/// [`trash`] into the trash folder `run`; a name already taken there (the
/// same path resolved twice in one second) gets `.1`, `.2`...
fn trash_as(root: &Path, rel: &Path, run: &str) -> Result<(), ResolveError> {
    let from = root.join(rel);
    let dir = root.join(STATE_DIR).join("trash").join(run);
    let to = dir.join(rel);
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(io_error("make the trash folder", parent))?;
    }
    // A conflict's version that is gone now was stale: the check before
    // said otherwise, so say so rather than call it done.
    if fs::symlink_metadata(&from).is_err() {
        return Err(ResolveError::Stale {
            path: path_text(&from).into_owned(),
        });
    }
    move_without_replacing(&from, to).map_err(io_error("move to the trash", &from))
}

fn stamp_now() -> String {
    chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string()
}

/// The name a kept-aside version gets: `NAME.sync-conflict-YYYYMMDD-HHMMSS.EXT`
/// (`.EXT` only when the name has one).
pub(crate) fn conflict_name(path: &Path, stamp: &str) -> PathBuf {
    let name = path.file_name().unwrap_or_default();
    let as_path = Path::new(name);
    let new = match (as_path.file_stem(), as_path.extension()) {
        (Some(stem), Some(ext)) => {
            let mut n = stem.to_os_string();
            n.push(format!(".sync-conflict-{stamp}."));
            n.push(ext);
            n
        }
        _ => {
            let mut n = name.to_os_string();
            n.push(format!(".sync-conflict-{stamp}"));
            n
        }
    };
    path.with_file_name(new)
}

/// Renames `path` to its conflict name (never over anything).
fn rename_aside(path: &Path) -> Result<(), ResolveError> {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    let mut to = conflict_name(path, &stamp);
    let mut n = 1;
    loop {
        match syncmgr_sys::rename_new(path, &to) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                to = conflict_name(path, &format!("{stamp}-{n}"));
                n += 1;
            }
            Err(e) if syncmgr_sys::rename_unsupported(&e) && !to.exists() => {
                return fs::rename(path, &to).map_err(io_error("rename", path));
            }
            Err(e) => return Err(io_error("rename", path)(e)),
        }
    }
}

/// The most of a file a diff reads.
const DIFF_MAX: u64 = 1 << 20;

/// `diff -u` of the two versions of conflict `id` when both are small UTF-8
/// text files; `None` otherwise.
pub(crate) fn diff(paths: &PairPaths, id: &str) -> Option<String> {
    let archive = Archive::load(&paths.archive).ok()?;
    let conflict = archive.conflicts.iter().find(|c| c.id == id)?;
    let rel = rel_of(&conflict.key);
    let read = |side: usize| -> Option<(PathBuf, String)> {
        let path = paths.roots[side].join(&rel);
        let meta = fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > DIFF_MAX {
            return None;
        }
        let text = String::from_utf8(fs::read(&path).ok()?).ok()?;
        if text.contains('\0') {
            return None;
        }
        Some((path, text))
    };
    let (pa, ta) = read(A)?;
    let (pb, tb) = read(B)?;
    let diff = similar::TextDiff::from_lines(&ta, &tb);
    Some(
        diff.unified_diff()
            .context_radius(3)
            .header(&path_text(&pa), &path_text(&pb))
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_keep_the_extension() {
        let stamp = "20261206-101112";
        assert_eq!(
            conflict_name(Path::new("/a/notes.txt"), stamp),
            Path::new("/a/notes.sync-conflict-20261206-101112.txt")
        );
        assert_eq!(
            conflict_name(Path::new("/a/Makefile"), stamp),
            Path::new("/a/Makefile.sync-conflict-20261206-101112")
        );
        assert_eq!(
            conflict_name(Path::new("/a/.bashrc"), stamp),
            Path::new("/a/.bashrc.sync-conflict-20261206-101112")
        );
        assert_eq!(
            conflict_name(Path::new("/a/archive.tar.gz"), stamp),
            Path::new("/a/archive.tar.sync-conflict-20261206-101112.gz")
        );
    }

    /// A name taken in the trash is passed over, never replaced; a rename
    /// taken aside likewise.
    #[test]
    fn taken_names_are_passed_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for text in ["first", "second", "third"] {
            fs::write(root.join("f"), text).expect("write");
            trash_as(root, Path::new("f"), "run").expect("trashed");
        }
        let trash = root.join(STATE_DIR).join("trash/run");
        let kept: Vec<String> = ["f", "f.1", "f.2"]
            .iter()
            .map(|n| fs::read_to_string(trash.join(n)).expect("kept"))
            .collect();
        assert_eq!(kept, ["first", "second", "third"]);
        // Nothing there: an error naming the path.
        let error = trash_as(root, Path::new("none"), "run").expect_err("nothing to move");
        assert!(error.to_string().contains("none"), "{error}");

        for text in ["one", "two"] {
            fs::write(root.join("g.txt"), text).expect("write");
            rename_aside(&root.join("g.txt")).expect("renamed");
        }
        let aside: Vec<String> = fs::read_dir(root)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("g.sync-conflict-"))
            .collect();
        assert_eq!(aside.len(), 2, "{aside:?}");
        assert!(aside.iter().all(|n| n.ends_with(".txt")), "{aside:?}");
    }

    #[test]
    fn a_scan_meta_is_what_a_conflict_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        fs::write(&file, b"x").expect("write");
        let seen = seen_now(&file).expect("seen").expect("there");
        assert_eq!((seen.kind, seen.size), (Kind::File, 1));
        assert_eq!(seen_now(&dir.path().join("none")).expect("seen"), None);
    }
}
