//! The folder mirror's registration: its pairs and options, the checks run
//! when it is registered, and the stable item id of each pair.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::progress::path_text;
use thiserror::Error;

/// Longest readable prefix of an item id (from the source's base name).
const ID_PREFIX_MAX: usize = 24;
/// Hex digits of the hash part of an item id (64 bits).
const ID_HASH_HEX: usize = 16;

/// What `syncmgr register NAME --folder SRC DST ... [--delete] [--checksum]`
/// stores for a folder mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderConfig {
    /// The folders to mirror, one item each.
    pub pairs: Vec<FolderPair>,
    /// Remove from each target what is not in its source.
    #[serde(default)]
    pub delete: bool,
    /// Compare file contents instead of size and modification time.
    #[serde(default)]
    pub checksum: bool,
}

/// One source folder and the folder it is mirrored to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderPair {
    /// The folder read from (never written).
    pub source: PathBuf,
    /// The folder made equal to the source.
    pub target: PathBuf,
}

/// Why a folder mirror cannot be registered.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FolderError {
    /// No `--folder` pair was given.
    #[error("a folder mirror needs at least one source and target pair")]
    NoPairs,
    /// A path is empty.
    #[error("a folder path is empty")]
    EmptyPath,
    /// A path is relative. The registration outlives the working directory it
    /// was typed in, so only absolute paths are stored; see
    /// [`FolderConfig::make_absolute`].
    #[error("folder path {0:?} is relative; give an absolute path")]
    Relative(PathBuf),
    /// Source and target are the same folder, or one is inside the other.
    #[error(
        "source {source_folder:?} and target {target_folder:?} {relation}; mirroring would copy a folder into itself"
    )]
    Nested {
        /// The source folder.
        source_folder: PathBuf,
        /// The target folder.
        target_folder: PathBuf,
        /// How they overlap, in words.
        relation: &'static str,
    },
    /// A target is, contains or lies inside a folder another pair (of this
    /// registration or another one) reads or writes.
    #[error(
        "the target {target:?} of {target_owner} overlaps {role} {other:?} of {owner}; one mirror would overwrite or delete the other's files"
    )]
    Overlap {
        /// The target folder.
        target: PathBuf,
        /// Whose target it is, in words.
        target_owner: String,
        /// The folder it overlaps.
        other: PathBuf,
        /// What `other` is to its pair: `the source` or `the target`.
        role: &'static str,
        /// Whose pair `other` belongs to, in words.
        owner: String,
    },
    /// A path could not be examined.
    #[error("cannot examine {path:?}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

/// A folder pair of another registration (or of another item), which a
/// mirror must keep clear of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// Whose pair it is, in words (`handler photos`).
    pub owner: String,
    /// The pair as registered.
    pub pair: FolderPair,
}

/// A pair with both folders resolved as they are on disk now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) source: PathBuf,
    pub(crate) target: PathBuf,
}

impl FolderConfig {
    /// Checks the configuration before it is stored: at least one pair, only
    /// absolute paths, and every pair apart from itself and from every other
    /// pair (see [`FolderPair::check_apart`]), its own and `neighbours'`.
    ///
    /// Folders that do not exist yet are fine: a missing source is reported
    /// when a session runs, and a missing target is created.
    pub fn validate(&self, neighbours: &[Neighbour]) -> Result<(), FolderError> {
        if self.pairs.is_empty() {
            return Err(FolderError::NoPairs);
        }
        let resolved = self
            .pairs
            .iter()
            .map(FolderPair::resolve)
            .collect::<Result<Vec<_>, _>>()?;
        for (i, (pair, mine)) in self.pairs.iter().zip(&resolved).enumerate() {
            pair.check_nested(mine)?;
            for (other, theirs) in self.pairs.iter().zip(&resolved).skip(i + 1) {
                pair.check_apart(mine, other, theirs, "another pair of this handler")?;
            }
        }
        for neighbour in neighbours {
            let theirs = neighbour.pair.resolve_leniently();
            for (pair, mine) in self.pairs.iter().zip(&resolved) {
                pair.check_apart(mine, &neighbour.pair, &theirs, &neighbour.owner)?;
            }
        }
        Ok(())
    }

    /// Resolves relative paths against `base` (the command line passes its
    /// working directory), lexically: nothing needs to exist.
    pub fn make_absolute(&mut self, base: &Path) {
        for pair in &mut self.pairs {
            for path in [&mut pair.source, &mut pair.target] {
                if path.is_relative() {
                    *path = normalize(&base.join(&*path));
                }
            }
        }
    }
}

impl FolderPair {
    /// The item id of this pair: a readable prefix from the source's base name
    /// (characters outside `[A-Za-z0-9._-]` become `_`), a dash, and 16 hex
    /// digits of the blake3 hash of the lexically normalized source and
    /// target. At most 41 bytes, so that ids derived from it (`guard-<id>`)
    /// stay under the 64-byte limit.
    ///
    /// The hash is of the paths as registered, not of what they resolve to
    /// on disk today: an id must not change when a folder is created or a
    /// symbolic link moves, or the user's per-item choices would be lost.
    pub fn item_id(&self) -> String {
        let source = normalize(&self.source);
        let target = normalize(&self.target);
        let mut hasher = blake3::Hasher::new();
        hasher.update(source.as_os_str().as_encoded_bytes());
        hasher.update(&[0]);
        hasher.update(target.as_os_str().as_encoded_bytes());
        let hash = hasher.finalize().to_hex();
        let base = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut prefix: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .take(ID_PREFIX_MAX)
            .collect();
        if prefix.is_empty() {
            prefix.push_str("folder");
        }
        format!("{prefix}-{}", &hash.as_str()[..ID_HASH_HEX])
    }

    /// Both folders as they resolve on disk now (symbolic links followed in
    /// the parts that exist).
    pub(crate) fn resolve(&self) -> Result<Resolved, FolderError> {
        Ok(Resolved {
            source: resolve(&self.source)?,
            target: resolve(&self.target)?,
        })
    }

    /// [`resolve`](Self::resolve), falling back to the lexical form of a path
    /// that cannot be examined: for another registration's folders, which
    /// must not make this one fail.
    pub(crate) fn resolve_leniently(&self) -> Resolved {
        Resolved {
            source: resolve(&self.source).unwrap_or_else(|_| normalize(&self.source)),
            target: resolve(&self.target).unwrap_or_else(|_| normalize(&self.target)),
        }
    }

    /// Source and target are apart: neither is, or is inside, the other.
    pub(crate) fn check_nested(&self, resolved: &Resolved) -> Result<(), FolderError> {
        let (source, target) = (&resolved.source, &resolved.target);
        let relation = if source == target {
            "are the same folder"
        } else if target.starts_with(source) {
            "overlap: the target is inside the source"
        } else if source.starts_with(target) {
            "overlap: the source is inside the target"
        } else {
            return Ok(());
        };
        Err(FolderError::Nested {
            source_folder: self.source.clone(),
            target_folder: self.target.clone(),
            relation,
        })
    }

    /// This pair and `other` cannot write over each other: neither target
    /// is, contains or lies inside the other's target or source (comparing
    /// whole components of the resolved paths). Two sources may overlap:
    /// both are only read.
    pub(crate) fn check_apart(
        &self,
        mine: &Resolved,
        other: &FolderPair,
        theirs: &Resolved,
        owner: &str,
    ) -> Result<(), FolderError> {
        let overlap = |a: &Path, b: &Path| a.starts_with(b) || b.starts_with(a);
        const MINE: &str = "this pair";
        let clash = if overlap(&mine.target, &theirs.target) {
            Some((&self.target, MINE, "the target", &other.target, owner))
        } else if overlap(&mine.target, &theirs.source) {
            Some((&self.target, MINE, "the source", &other.source, owner))
        } else if overlap(&theirs.target, &mine.source) {
            Some((&other.target, owner, "the source", &self.source, MINE))
        } else {
            None
        };
        match clash {
            Some((target, target_owner, role, folder, owner)) => Err(FolderError::Overlap {
                target: target.clone(),
                target_owner: target_owner.to_owned(),
                other: folder.clone(),
                role,
                owner: owner.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// The item's display name, `SRC → DST`.
    pub fn item_name(&self) -> String {
        format!("{} → {}", path_text(&self.source), path_text(&self.target))
    }
}

/// Removes `.` and resolves `..` lexically (`/a/b/../c` is `/a/c`).
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(component);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The absolute path `path` stands for: its longest existing ancestor with
/// symbolic links resolved, then the rest, normalized lexically.
fn resolve(path: &Path) -> Result<PathBuf, FolderError> {
    if path.as_os_str().is_empty() {
        return Err(FolderError::EmptyPath);
    }
    if path.is_relative() {
        return Err(FolderError::Relative(path.to_path_buf()));
    }
    let path = normalize(path);
    let mut rest: Vec<OsString> = Vec::new();
    let mut existing = path.as_path();
    loop {
        match existing.canonicalize() {
            Ok(mut resolved) => {
                resolved.extend(rest.iter().rev());
                return Ok(resolved);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match existing.parent() {
                Some(parent) => {
                    if let Some(name) = existing.file_name() {
                        rest.push(name.to_os_string());
                    }
                    existing = parent;
                }
                None => return Ok(path),
            },
            Err(source) => {
                return Err(FolderError::Io {
                    path: existing.to_path_buf(),
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(source: &str, target: &str) -> FolderPair {
        FolderPair {
            source: source.into(),
            target: target.into(),
        }
    }

    fn config(pairs: Vec<FolderPair>) -> FolderConfig {
        FolderConfig {
            pairs,
            delete: false,
            checksum: false,
        }
    }

    #[test]
    fn item_ids_are_short_stable_and_readable() {
        let p = pair("/home/me/Mes Données ünd so/", "/mnt/backup");
        let id = p.item_id();
        assert_eq!(
            id,
            pair("/home/me/./Mes Données ünd so", "/mnt/x/../backup").item_id()
        );
        assert!(id.starts_with("Mes_Donn_es__nd_so-"), "{id}");
        assert!(id.len() <= 41 && syncmgr_core::model::validate_id(&id).is_ok());
        assert_ne!(
            id,
            pair("/home/me/Mes Données ünd so", "/mnt/other").item_id()
        );
        assert!(pair("/", "/mnt").item_id().starts_with("folder-"));
        let long = format!("/{}", "x".repeat(300));
        assert!(pair(&long, "/t").item_id().len() <= 41);
    }

    #[test]
    fn nesting_is_by_component_not_by_prefix() {
        assert!(
            config(vec![pair("/data/a", "/data/ab")])
                .validate(&[])
                .is_ok()
        );
        for (s, t) in [
            ("/data/a", "/data/a/b"),
            ("/data/a/b", "/data/a"),
            ("/data/a", "/data/a/"),
            ("/data/a", "/data/x/../a/c"),
        ] {
            let err = config(vec![pair(s, t)]).validate(&[]).unwrap_err();
            assert!(matches!(err, FolderError::Nested { .. }), "{s} {t}: {err}");
        }
        let err = config(vec![pair("rel", "/t")]).validate(&[]).unwrap_err();
        assert!(matches!(err, FolderError::Relative(_)), "{err}");
        let err = config(vec![pair("/a", "/t"), pair("/b", "/t/sub")])
            .validate(&[])
            .unwrap_err();
        assert!(matches!(err, FolderError::Overlap { .. }), "{err}");
        assert!(matches!(
            config(Vec::new()).validate(&[]),
            Err(FolderError::NoPairs)
        ));
    }

    #[test]
    fn targets_stay_clear_of_every_other_registrations_folders() {
        let other = |s: &str, t: &str| Neighbour {
            owner: "handler other".to_owned(),
            pair: pair(s, t),
        };
        // Issue 8: targets `t` and `t/sub` of two registrations.
        for (mine, theirs) in [
            (pair("/a", "/t"), other("/b", "/t/sub")),
            (pair("/a", "/t/sub"), other("/b", "/t")),
            (pair("/a", "/t"), other("/b", "/t")),
            (pair("/a", "/t"), other("/t/in", "/elsewhere")),
            (pair("/a/in", "/t"), other("/b", "/a")),
        ] {
            let err = config(vec![mine.clone()])
                .validate(std::slice::from_ref(&theirs))
                .unwrap_err();
            assert!(
                matches!(&err, FolderError::Overlap { owner, .. } if !owner.is_empty()),
                "{mine:?} {theirs:?}: {err}"
            );
        }
        // Sources may be shared, and a name prefix is not a folder.
        for theirs in [other("/a", "/u"), other("/b", "/tt"), other("/ab", "/x")] {
            assert!(
                config(vec![pair("/a", "/t")])
                    .validate(std::slice::from_ref(&theirs))
                    .is_ok(),
                "{theirs:?}"
            );
        }
    }

    #[test]
    fn a_path_that_cannot_be_examined_is_an_error_not_a_missing_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let looped = dir.path().join("loop");
        std::os::unix::fs::symlink(&looped, &looped).expect("symlink");
        let err = config(vec![pair(
            dir.path().join("s").to_str().expect("utf-8"),
            looped.join("t").to_str().expect("utf-8"),
        )])
        .validate(&[])
        .unwrap_err();
        assert!(matches!(err, FolderError::Io { .. }), "{err}");
        // A folder that does not exist yet is fine: it will be created.
        let fresh = dir.path().join("new/deeper");
        assert!(
            config(vec![pair(
                dir.path().join("s").to_str().expect("utf-8"),
                fresh.to_str().expect("utf-8"),
            )])
            .validate(&[])
            .is_ok()
        );
    }

    #[test]
    fn relative_paths_are_resolved_against_a_base() {
        let mut c = config(vec![pair("src/../in", "/abs")]);
        c.make_absolute(Path::new("/base"));
        assert_eq!(c.pairs[0].source, Path::new("/base/in"));
        assert_eq!(c.pairs[0].target, Path::new("/abs"));
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = FolderConfig {
            pairs: vec![pair("/s", "/t")],
            delete: true,
            checksum: false,
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<FolderConfig>(&json).unwrap(), c);
        let minimal: FolderConfig =
            serde_json::from_str(r#"{"pairs":[{"source":"/s","target":"/t"}]}"#).unwrap();
        assert!(!minimal.delete && !minimal.checksum);
    }
}
