//! Where state lives: `--home DIR` / `SYNCMGR_HOME` put everything under one
//! directory; otherwise the XDG base directories are used.
//!
//! Every directory is created private to the user (0700): the database holds
//! the results log and the control sockets accept cancels.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use syncmgr_sys::FileLock;

use crate::error::usage;

/// The resolved locations of one home.
#[derive(Debug, Clone)]
pub struct Home {
    /// Directory of the database.
    pub state: PathBuf,
    /// Directory of the per-session control sockets.
    pub runtime: PathBuf,
}

impl Home {
    /// Resolves the home from the flag/environment value, or XDG defaults.
    pub fn resolve(explicit: Option<&Path>) -> anyhow::Result<Home> {
        let home = match explicit {
            Some(dir) => Home {
                state: dir.to_path_buf(),
                runtime: dir.join("run"),
            },
            None => {
                let base = directories::BaseDirs::new()
                    .ok_or_else(|| usage("cannot find the home directory; use --home DIR"))?;
                let state = base
                    .state_dir()
                    .unwrap_or_else(|| base.data_local_dir())
                    .join("syncmgr");
                let runtime = base
                    .runtime_dir()
                    .map_or_else(|| state.join("run"), |r| r.join("syncmgr"));
                Home { state, runtime }
            }
        };
        for dir in [&home.state, &home.runtime] {
            make_private_dir(dir)?;
        }
        Ok(home)
    }

    /// The database file.
    pub fn database(&self) -> PathBuf {
        self.state.join("syncmgr.db")
    }

    /// Takes the lock that lets one session at a time run registration
    /// `name`; `None` when another process holds it. The lock lives as long
    /// as the value (the kernel drops it if the process dies).
    pub fn lock_registration(&self, name: &str) -> anyhow::Result<Option<FileLock>> {
        let dir = self.runtime.join("locks");
        make_private_dir(&dir)?;
        let path = dir.join(format!("{name}.lock"));
        FileLock::try_exclusive(&path).with_context(|| format!("cannot lock {}", path.display()))
    }

    /// The control socket of one session.
    pub fn socket(&self, session: &str) -> PathBuf {
        self.runtime.join(format!("{session}.sock"))
    }
}

fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            // Tighten a directory we own but that others can read: the
            // sockets in it take cancels, the database holds the log.
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).with_context(|| {
                    format!("cannot make {} private (mode 0700)", dir.display())
                })?;
            }
            Ok(())
        }
        Ok(_) => Err(usage(format!(
            "home {} exists and is not a directory",
            dir.display()
        ))),
        Err(_) => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| usage(format!("cannot create home {}: {e}", dir.display()))),
    }
}
