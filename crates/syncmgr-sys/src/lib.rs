//! The operating-system calls syncmgr makes beyond the standard library, in
//! one place (as nextest keeps its in `runner/unix.rs`) and through `rustix`,
//! so that `unsafe_code = "deny"` holds in every crate without exception.
//!
//! - process groups: [`signal_group`] (a handler or a command item runs in a
//!   group of its own, so that ending it ends everything it started);
//! - liveness: [`process_alive`];
//! - names of signals in exit statuses: [`describe_exit`];
//! - [`FileLock`]: an exclusive lock held for as long as a value lives, which
//!   the kernel drops when the process dies however it dies (so a crashed
//!   manager leaves nothing behind, unlike a PID file: PIDs are reused);
//! - [`routes`] (Linux): whether there is a default route, and when routes
//!   change.

#[cfg(target_os = "linux")]
pub mod routes;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use rustix::fs::{FlockOperation, flock};
use rustix::process::{Pid, Signal as RawSignal, kill_process_group, test_kill_process};

/// The signals syncmgr sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: the terminal closed.
    Hangup,
    /// SIGINT: what Ctrl-C sends; the polite first step of a cancel.
    Interrupt,
    /// SIGTERM.
    Terminate,
    /// SIGKILL.
    Kill,
}

impl Signal {
    fn raw(self) -> RawSignal {
        match self {
            Signal::Hangup => RawSignal::HUP,
            Signal::Interrupt => RawSignal::INT,
            Signal::Terminate => RawSignal::TERM,
            Signal::Kill => RawSignal::KILL,
        }
    }
}

/// Sends `signal` to every process of the group `pgid` leads. A group that
/// is gone already is not an error. Ids 0 and 1 are refused (they would
/// address our own group, or every process).
pub fn signal_group(pgid: u32, signal: Signal) -> io::Result<()> {
    let pid = i32::try_from(pgid)
        .ok()
        .filter(|&p| p > 1)
        .and_then(Pid::from_raw)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{pgid} is not a process group syncmgr may signal"),
            )
        })?;
    match kill_process_group(pid, signal.raw()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sends `signal` to one process.
pub fn signal_process(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad pid {pid}")))?;
    rustix::process::kill_process(pid, signal.raw()).map_err(Into::into)
}

/// Whether a process with this id exists (it may belong to another user).
pub fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    match test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

/// Whether a process group with this id exists.
pub fn group_alive(pgid: u32) -> bool {
    let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    match rustix::process::test_kill_process_group(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

/// How a process ended, in words: `exit status 3`, `killed by signal 9
/// (SIGKILL)`.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(number) = status.signal() {
        return match signal_name(number) {
            Some(name) => format!("killed by signal {number} ({name})"),
            None => format!("killed by signal {number}"),
        };
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    }
}

/// The name of a signal number, for the ones worth naming.
pub fn signal_name(number: i32) -> Option<&'static str> {
    [
        (RawSignal::HUP, "SIGHUP"),
        (RawSignal::INT, "SIGINT"),
        (RawSignal::TERM, "SIGTERM"),
        (RawSignal::KILL, "SIGKILL"),
        (RawSignal::SEGV, "SIGSEGV"),
        (RawSignal::ABORT, "SIGABRT"),
        (RawSignal::PIPE, "SIGPIPE"),
    ]
    .into_iter()
    .find(|(signal, _)| signal.as_raw() == number)
    .map(|(_, name)| name)
}

/// An exclusive advisory lock on a file (`flock`), held until the value is
/// dropped or the process ends.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
    path: PathBuf,
}

impl FileLock {
    /// Takes the lock on `path` (created 0600 if missing) without waiting:
    /// `Ok(None)` when another open file description holds it.
    pub fn try_exclusive(path: &Path) -> io::Result<Option<FileLock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(FileLock {
                _file: file,
                path: path.to_path_buf(),
            })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The locked file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Makes everything written to the file system that `file` is on durable
/// (`syncfs`), where the system has it; elsewhere callers `fsync` each file.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn sync_file_system(file: &File) -> io::Result<()> {
    rustix::fs::syncfs(file).map_err(Into::into)
}

/// See the Linux version: here each file was `fsync`ed when written.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn sync_file_system(_file: &File) -> io::Result<()> {
    Ok(())
}

/// How [`rename_swap`] and [`rename_new`] ended when the system cannot do
/// the atomic kind of rename (no `renameat2`, or a file system without
/// it): the caller falls back to a plain way.
pub fn rename_unsupported(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(code) if code == rustix::io::Errno::INVAL.raw_os_error()
        || code == rustix::io::Errno::NOSYS.raw_os_error()
        || code == rustix::io::Errno::OPNOTSUPP.raw_os_error())
}

/// Swaps two existing entries atomically (`renameat2(RENAME_EXCHANGE)`):
/// at no moment is either name missing. Either may be a directory.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn rename_swap(a: &Path, b: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(Into::into)
}

/// See the Linux version; elsewhere always "unsupported".
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn rename_swap(_a: &Path, _b: &Path) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(
        rustix::io::Errno::NOSYS.raw_os_error(),
    ))
}

/// Renames `from` to `to` only if `to` does not exist
/// (`renameat2(RENAME_NOREPLACE)`): `AlreadyExists` otherwise, with nothing
/// replaced.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE).map_err(Into::into)
}

/// See the Linux version: here a hard link then an unlink, which also never
/// replaces (directories cannot be moved this way).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    #[test]
    fn a_lock_excludes_others_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let first = FileLock::try_exclusive(&path).unwrap().expect("free");
        assert_eq!(first.path(), path);
        assert!(FileLock::try_exclusive(&path).unwrap().is_none());
        drop(first);
        // A child another test forks at this moment holds a copy of the
        // descriptor until its `exec` closes it (close-on-exec): the lock is
        // free again within that window, so poll with a deadline.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while FileLock::try_exclusive(&path).unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the lock stayed taken"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn groups_are_signalled_and_reserved_ids_refused() {
        for reserved in [0, 1] {
            assert!(signal_group(reserved, Signal::Kill).is_err());
        }
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        assert!(process_alive(child.id()));
        signal_group(child.id(), Signal::Terminate).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(describe_exit(status), "killed by signal 15 (SIGTERM)");
        // Gone (and reaped): not an error, and not alive.
        signal_group(child.id(), Signal::Kill).unwrap();
        assert!(!process_alive(child.id()));
        let status = Command::new("sh").args(["-c", "exit 3"]).status().unwrap();
        assert_eq!(describe_exit(status), "exit status 3");
        assert_eq!(signal_name(9), Some("SIGKILL"));
        assert_eq!(signal_name(1), Some("SIGHUP"));
        assert_eq!(signal_name(10_000), None);
    }
}
