//! Walking one side of a pair: every entry below the root (links not
//! followed), keyed for the archive, without the `.syncmgr` folder at the
//! root. What cannot be listed or examined is recorded, so that nothing is
//! ever deleted on the strength of a walk that missed it.

use std::collections::BTreeMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::super::plan::{CHUNK, TEMP_PREFIX};
use super::super::progress::{Reporter, path_text};
use super::archive::{Key, Kind, Stamp, hex};

/// The folder at each root that holds the trash (and is never synced).
pub const STATE_DIR: &str = ".syncmgr";

/// One entry as the walk saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Meta {
    pub(super) kind: Kind,
    /// Permission bits.
    pub(super) mode: u32,
    pub(super) size: u64,
    pub(super) stamp: Stamp,
    /// A link's target, in hex (what the archive keeps as its content).
    pub(super) target: Option<String>,
}

impl Meta {
    pub(super) fn of(meta: &Metadata, target: Option<&Path>) -> Option<Meta> {
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Link
        } else {
            return None;
        };
        Some(Meta {
            kind,
            mode: meta.mode() & 0o7777,
            size: if kind == Kind::File { meta.size() } else { 0 },
            stamp: stamp(meta),
            target: target.map(|t| hex(t.as_os_str().as_bytes())),
        })
    }
}

/// The fast-check stamp of an entry.
pub(super) fn stamp(meta: &Metadata) -> Stamp {
    Stamp {
        ino: meta.ino(),
        mtime: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
    }
}

/// What one side holds.
#[derive(Debug, Default)]
pub(super) struct Tree {
    pub(super) entries: BTreeMap<Key, Meta>,
    /// Folders that could not be listed, and entries that could not be
    /// examined: nothing at or below them is changed on either side.
    pub(super) unknown: Vec<Key>,
    /// Temporary files of an interrupted run (to move to the trash).
    pub(super) stale: Vec<Key>,
    /// What could not be walked, in words.
    pub(super) problems: Vec<String>,
}

impl Tree {
    /// Non-directories on this side.
    pub(super) fn files(&self) -> u64 {
        self.entries
            .values()
            .filter(|m| m.kind != Kind::Dir)
            .count() as u64
    }

    /// Whether `key` is at or below something the walk could not see.
    pub(super) fn is_unknown(&self, key: &[u8]) -> bool {
        self.unknown
            .iter()
            .any(|root| super::archive::is_within(key, root))
    }
}

/// The walk was stopped by a cancel.
#[derive(Debug)]
pub(super) struct Stopped;

/// Walks `root` (which exists).
pub(super) fn scan(root: &Path, reporter: &mut Reporter<'_>) -> Result<Tree, Stopped> {
    let mut tree = Tree::default();
    let mut stack: Vec<Key> = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        let rel = super::archive::rel_of(&dir);
        if !reporter.scanning(&rel) {
            return Err(Stopped);
        }
        let path = if dir.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let listing = match fs::read_dir(&path) {
            Ok(listing) => listing,
            Err(e) => {
                tree.problems
                    .push(format!("cannot list {}: {e}", path_text(&path)));
                tree.unknown.push(dir);
                continue;
            }
        };
        for entry in listing {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    tree.problems
                        .push(format!("cannot list {}: {e}", path_text(&path)));
                    tree.unknown.push(dir.clone());
                    break;
                }
            };
            let name = entry.file_name();
            if dir.is_empty() && name == STATE_DIR {
                continue;
            }
            let mut key = dir.clone();
            if !key.is_empty() {
                key.push(0);
            }
            key.extend_from_slice(name.as_bytes());
            if name.as_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
                tree.stale.push(key);
                continue;
            }
            let full = entry.path();
            let examined = fs::symlink_metadata(&full).and_then(|meta| {
                let target = if meta.file_type().is_symlink() {
                    Some(fs::read_link(&full)?)
                } else {
                    None
                };
                Ok((meta, target))
            });
            match examined {
                Ok((meta, target)) => match Meta::of(&meta, target.as_deref()) {
                    Some(m) => {
                        if m.kind == Kind::Dir {
                            stack.push(key.clone());
                        }
                        tree.entries.insert(key, m);
                    }
                    None => {
                        tree.problems.push(format!(
                            "{} is not a file, folder or link (a FIFO, socket or device): not synced",
                            path_text(&full)
                        ));
                        tree.unknown.push(key);
                    }
                },
                Err(e) => {
                    tree.problems
                        .push(format!("cannot examine {}: {e}", path_text(&full)));
                    tree.unknown.push(key);
                }
            }
        }
    }
    Ok(tree)
}

/// The blake3 of a file's contents in hex, read a chunk at a time (a cancel
/// is seen between chunks). `Ok(None)`: stopped.
pub(super) fn hash_file(path: &Path, reporter: &mut Reporter<'_>) -> io::Result<Option<String>> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    hash_open(&mut file, reporter)
}

pub(super) fn hash_open(
    file: &mut File,
    reporter: &mut Reporter<'_>,
) -> io::Result<Option<String>> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0; CHUNK.min(1 << 16)];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if reporter.stopped() {
            return Ok(None);
        }
    }
    Ok(Some(hasher.finalize().to_hex().to_string()))
}
