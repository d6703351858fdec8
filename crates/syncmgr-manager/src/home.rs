//! Where state lives (the home): `--home DIR` / `SYNCMGR_HOME` put everything under one
//! directory; otherwise the XDG base directories are used.
//!
//! Every directory is created private to the user (0700): the database holds
//! the results log and the control sockets accept cancels.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use syncmgr_sys::FileLock;

use crate::error::{ManagerError, Result};

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
    pub fn resolve(explicit: Option<&Path>) -> Result<Home> {
        let home = match explicit {
            Some(dir) => Home {
                state: dir.to_path_buf(),
                runtime: dir.join("run"),
            },
            None => {
                let base = directories::BaseDirs::new().ok_or_else(|| {
                    ManagerError::usage("cannot find the home directory; use --home DIR")
                })?;
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
    pub fn lock_registration(&self, name: &str) -> Result<Option<FileLock>> {
        let dir = self.runtime.join("locks");
        make_private_dir(&dir)?;
        let path = dir.join(format!("{name}.lock"));
        FileLock::try_exclusive(&path)
            .map_err(|e| ManagerError::io(format!("cannot lock {}", path.display()), e))
    }

    /// The daemon's lock: one daemon per home.
    pub fn daemon_lock(&self) -> PathBuf {
        self.runtime.join("daemon.lock")
    }

    /// The daemon's process id, written next to its lock for the message
    /// that refuses a second daemon.
    pub fn daemon_pid(&self) -> PathBuf {
        self.runtime.join("daemon.pid")
    }

    /// The daemon's socket.
    pub fn daemon_socket(&self) -> PathBuf {
        self.runtime.join("daemon.sock")
    }

    /// Why the state directory cannot be written, if it cannot (checked for
    /// the user, as the kernel would: permissions, a read-only mount).
    pub fn unwritable(&self) -> Option<String> {
        use rustix::fs::{Access, access};
        match access(&self.state, Access::WRITE_OK | Access::EXEC_OK) {
            Ok(()) => None,
            Err(rustix::io::Errno::ROFS) => Some(format!(
                "the home {} is on a read-only file system",
                self.state.display()
            )),
            Err(e) => Some(format!(
                "the home {} is not writable ({})",
                self.state.display(),
                std::io::Error::from(e)
            )),
        }
    }

    /// The control socket of one session.
    pub fn socket(&self, session: &str) -> PathBuf {
        self.runtime.join(format!("{session}.sock"))
    }
}

/// Makes sure `dir` is a directory only the user can enter, creating it
/// (0700) when missing. An existing directory is never changed: one that
/// others may read or enter is refused, since the database in it holds the
/// results log and the sockets in it accept cancels.
fn make_private_dir(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(ManagerError::usage(format!(
                    "home {} can be read by other users (mode {mode:04o}); syncmgr keeps its results log and control sockets there, so it must be private: run `chmod 700 {}` or choose another directory",
                    dir.display(),
                    dir.display()
                )));
            }
            Ok(())
        }
        Ok(_) => Err(ManagerError::usage(format!(
            "home {} exists and is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| ManagerError::usage(format!("cannot create home {}: {e}", dir.display()))),
        Err(e) => Err(ManagerError::usage(format!(
            "cannot examine home {}: {e}",
            dir.display()
        ))),
    }
}
