//! The archive of a two-way pair: what both sides held after the last sync
//! that reached them (Unison's archive), and the conflicts left open.
//!
//! One file per pair, JSON, replaced whole through a temporary file that is
//! made durable before the rename (the archive must never be half old and
//! half new). Paths are keys ([`Key`]): the relative path's bytes with the
//! separator replaced by a NUL byte, which no file name contains, so that a
//! directory's whole subtree sorts right after it; they are stored in hex
//! because names need not be UTF-8.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The archive format this build writes and reads.
const FORMAT: u32 = 1;

/// A relative path as the archive and the scans key it: the components'
/// bytes joined by NUL.
pub(super) type Key = Vec<u8>;

/// What kind of entry a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Kind {
    File,
    Dir,
    Link,
}

/// Where an entry was on one side: what the fast check compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(super) struct Stamp {
    pub(super) ino: u64,
    /// Modification time, nanoseconds since the epoch.
    pub(super) mtime: i64,
    /// Status change time, nanoseconds since the epoch.
    pub(super) ctime: i64,
}

/// One path as both sides held it after the last sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) kind: Kind,
    /// Permission bits.
    pub(super) mode: u32,
    /// Bytes (files).
    pub(super) size: u64,
    /// blake3 of a file's contents, or the bytes of a link's target, in hex;
    /// empty for a directory.
    pub(super) content: String,
    /// Modification time both sides have (nanoseconds).
    pub(super) mtime: i64,
    pub(super) a: Stamp,
    pub(super) b: Stamp,
}

/// What one side held at a conflicted path when the conflict was reported:
/// a resolution is refused as stale when the side holds anything else now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Seen {
    pub(super) kind: Kind,
    pub(super) size: u64,
    pub(super) stamp: Stamp,
}

impl Stamp {
    /// The modification time as a time (before 1970 included).
    pub(super) fn modified(&self) -> std::time::SystemTime {
        let since = std::time::Duration::from_nanos(self.mtime.unsigned_abs());
        if self.mtime >= 0 {
            std::time::SystemTime::UNIX_EPOCH + since
        } else {
            std::time::SystemTime::UNIX_EPOCH - since
        }
    }
}

/// An open conflict, as the handler knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct OpenConflict {
    /// The id reported to the manager.
    pub(super) id: String,
    #[serde(with = "hex_key")]
    pub(super) key: Key,
    pub(super) a: Option<Seen>,
    pub(super) b: Option<Seen>,
}

/// The archive of one pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Archive {
    pub(super) entries: BTreeMap<Key, Entry>,
    pub(super) conflicts: Vec<OpenConflict>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    entries: Vec<DiskEntry>,
    conflicts: Vec<OpenConflict>,
}

#[derive(Serialize, Deserialize)]
struct DiskEntry {
    #[serde(with = "hex_key")]
    path: Key,
    #[serde(flatten)]
    entry: Entry,
}

/// Why an archive could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArchiveError {
    #[error("cannot read the archive {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error(
        "the archive {path} is damaged ({why}); move it away to start over (the next sync then keeps every version that differs as a conflict)"
    )]
    Damaged { path: String, why: String },
    #[error("cannot write the archive {path}: {source}")]
    Write { path: String, source: io::Error },
}

impl Archive {
    /// Reads the archive at `path`; a missing file is an empty archive (the
    /// first sync: nothing is deleted, and differences are conflicts).
    pub(super) fn load(path: &Path) -> Result<Archive, ArchiveError> {
        let text = match fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Archive::default()),
            Err(source) => {
                return Err(ArchiveError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let damaged = |why: String| ArchiveError::Damaged {
            path: path.display().to_string(),
            why,
        };
        let disk: OnDisk = serde_json::from_slice(&text).map_err(|e| damaged(e.to_string()))?;
        if disk.format != FORMAT {
            return Err(damaged(format!(
                "format {}, this syncmgr reads {FORMAT}",
                disk.format
            )));
        }
        let mut entries = BTreeMap::new();
        for e in disk.entries {
            if e.path.is_empty() || e.path.split(|b| *b == 0).any(<[u8]>::is_empty) {
                return Err(damaged("an entry with an empty path".to_owned()));
            }
            entries.insert(e.path, e.entry);
        }
        Ok(Archive {
            entries,
            conflicts: disk.conflicts,
        })
    }

    /// Replaces the archive at `path` (its directory is created if needed):
    /// written to a temporary file, flushed, renamed, the directory flushed.
    pub(super) fn save(&self, path: &Path) -> Result<(), ArchiveError> {
        let fail = |source| ArchiveError::Write {
            path: path.display().to_string(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(fail)?;
        let disk = OnDisk {
            format: FORMAT,
            entries: self
                .entries
                .iter()
                .map(|(k, e)| DiskEntry {
                    path: k.clone(),
                    entry: e.clone(),
                })
                .collect(),
            conflicts: self.conflicts.clone(),
        };
        let bytes = serde_json::to_vec(&disk).map_err(|e| fail(io::Error::other(e)))?;
        let temp = temp_name(path);
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&temp, path)?;
            File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written.map_err(fail)
    }

    /// Drops `key` and everything below it.
    pub(super) fn forget_tree(&mut self, key: &[u8]) {
        let below: Vec<Key> = self
            .entries
            .range(key.to_vec()..)
            .map(|(k, _)| k)
            .take_while(|k| is_within(k, key))
            .cloned()
            .collect();
        for k in below {
            self.entries.remove(&k);
        }
    }
}

fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Whether `key` is `root` or lies below it.
pub(super) fn is_within(key: &[u8], root: &[u8]) -> bool {
    key.starts_with(root) && (key.len() == root.len() || key[root.len()] == 0)
}

/// Bytes as lowercase hex (paths in the archive, links' targets).
pub(super) fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        text.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    text
}

/// The key of a relative path.
#[cfg(test)]
pub(super) fn key_of(rel: &Path) -> Key {
    use std::os::unix::ffi::OsStrExt;
    let mut key = Vec::new();
    for part in rel.iter() {
        if !key.is_empty() {
            key.push(0);
        }
        key.extend_from_slice(part.as_bytes());
    }
    key
}

/// The relative path of a key.
pub(super) fn rel_of(key: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut rel = PathBuf::new();
    for part in key.split(|b| *b == 0) {
        rel.push(std::ffi::OsStr::from_bytes(part));
    }
    rel
}

/// The key of the directory holding `key`; `None` at the top.
pub(super) fn parent_of(key: &[u8]) -> Option<&[u8]> {
    key.iter().rposition(|b| *b == 0).map(|at| &key[..at])
}

mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(key: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(key))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(D::Error::custom("a path that is not hex")),
        };
        let bytes = text.as_bytes();
        if bytes.len() % 2 != 0 {
            return Err(D::Error::custom("a path of odd hex length"));
        }
        bytes
            .chunks(2)
            .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind) -> Entry {
        Entry {
            kind,
            mode: 0o644,
            size: 3,
            content: "abc".into(),
            mtime: 7,
            a: Stamp {
                ino: 1,
                mtime: 7,
                ctime: 8,
            },
            b: Stamp::default(),
        }
    }

    #[test]
    fn an_archive_survives_a_round_trip_with_any_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/pair.archive");
        assert_eq!(
            Archive::load(&path).expect("missing is empty"),
            Archive::default()
        );
        let mut archive = Archive::default();
        let odd = key_of(Path::new(std::ffi::OsStr::new("d/na\nme")));
        archive.entries.insert(odd.clone(), entry(Kind::File));
        archive.entries.insert(b"d".to_vec(), entry(Kind::Dir));
        archive.conflicts.push(OpenConflict {
            id: "c-1".into(),
            key: odd.clone(),
            a: None,
            b: Some(Seen {
                kind: Kind::File,
                size: 1,
                stamp: Stamp::default(),
            }),
        });
        archive.save(&path).expect("save");
        assert_eq!(Archive::load(&path).expect("load"), archive);
        assert_eq!(rel_of(&odd), Path::new("d/na\nme"));
    }

    #[test]
    fn a_damaged_archive_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pair.archive");
        for text in [
            "not json",
            r#"{"format":99,"entries":[],"conflicts":[]}"#,
            r#"{"format":1,"entries":[{"path":"zz","kind":"file","mode":1,"size":1,"content":"","mtime":0,"a":{"ino":0,"mtime":0,"ctime":0},"b":{"ino":0,"mtime":0,"ctime":0}}],"conflicts":[]}"#,
            r#"{"format":1,"entries":[{"path":"6100","kind":"file","mode":1,"size":1,"content":"","mtime":0,"a":{"ino":0,"mtime":0,"ctime":0},"b":{"ino":0,"mtime":0,"ctime":0}}],"conflicts":[]}"#,
        ] {
            fs::write(&path, text).expect("write");
            let error = Archive::load(&path).expect_err(text).to_string();
            assert!(
                error.contains("pair.archive") && error.contains("damaged"),
                "{error}"
            );
        }
    }

    /// Only a missing archive is an empty one: one that cannot be read is
    /// an error (an empty archive would make every difference a conflict
    /// and hide deletions).
    #[test]
    fn an_unreadable_archive_is_an_error_not_an_empty_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = Archive::load(dir.path()).expect_err("a folder is no archive");
        assert!(matches!(error, ArchiveError::Read { .. }), "{error}");
        Archive::default()
            .save(&dir.path().join("file/in/a/file"))
            .expect("its folders are made");
        fs::write(dir.path().join("plain"), b"x").expect("write");
        let error = Archive::default()
            .save(&dir.path().join("plain/pair.json"))
            .expect_err("a file in the way");
        assert!(matches!(error, ArchiveError::Write { .. }), "{error}");
    }

    /// A stamp's time, on both sides of 1970, and hex as the archive writes it.
    #[test]
    fn stamps_give_their_times_and_hex_is_lowercase() {
        use std::time::{Duration, SystemTime};
        let at = |mtime| {
            Stamp {
                ino: 0,
                mtime,
                ctime: 0,
            }
            .modified()
        };
        assert_eq!(
            at(1_500_000_000),
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_500)
        );
        assert_eq!(
            at(-2_000_000_001),
            SystemTime::UNIX_EPOCH - Duration::new(2, 1)
        );
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }

    #[test]
    fn a_subtree_is_contiguous_and_forgotten_whole() {
        let mut archive = Archive::default();
        for rel in ["p", "p.txt", "p/x", "p/y/z", "q"] {
            archive
                .entries
                .insert(key_of(Path::new(rel)), entry(Kind::File));
        }
        archive.forget_tree(b"p");
        let left: Vec<PathBuf> = archive.entries.keys().map(|k| rel_of(k)).collect();
        assert_eq!(left, [PathBuf::from("p.txt"), PathBuf::from("q")]);
        assert_eq!(parent_of(&key_of(Path::new("a/b/c"))), Some(&b"a\0b"[..]));
        assert_eq!(parent_of(b"a"), None);
        assert!(is_within(b"a\0b", b"a") && is_within(b"a", b"a") && !is_within(b"ab", b"a"));
    }
}
