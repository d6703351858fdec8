//! Taking the process's stdin and stdout for the protocol.
//!
//! The channel gets private (close-on-exec) copies of descriptors 0 and 1;
//! then descriptor 1 is pointed at stderr and descriptor 0 at `/dev/null`.
//! So `println!` in the handler or a library, and any child process it
//! starts (`git`, `rsync`, ...), write to stderr (which the manager keeps as
//! log lines) instead of corrupting the protocol, and no child can read the
//! manager's messages.

#[cfg(unix)]
use std::fs::File;
use std::io::{self, Read, Write};

/// The channel's input and output.
pub(crate) type Stdio = (Box<dyn Read + Send>, Box<dyn Write + Send>);

#[cfg(unix)]
pub(crate) fn take() -> io::Result<Stdio> {
    use std::os::fd::AsFd;

    io::stdout().lock().flush()?;
    let input = io::stdin().as_fd().try_clone_to_owned()?;
    let output = io::stdout().as_fd().try_clone_to_owned()?;
    let null = File::options().read(true).write(true).open("/dev/null")?;
    // stderr may be closed; then stray output is dropped instead.
    if redirect(io::stderr().as_fd(), 1).is_err() {
        redirect(null.as_fd(), 1)?;
    }
    redirect(null.as_fd(), 0)?;
    Ok((Box::new(File::from(input)), Box::new(File::from(output))))
}

#[cfg(not(unix))]
pub(crate) fn take() -> io::Result<Stdio> {
    Ok((Box::new(io::stdin()), Box::new(io::stdout())))
}

/// Points descriptor `target` (0 or 1) at the file `from` refers to.
#[cfg(unix)]
#[allow(unsafe_code)]
fn redirect(from: std::os::fd::BorrowedFd<'_>, target: std::os::fd::RawFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    // SAFETY: `dup2` touches no memory. `from` is an open descriptor (borrowed
    // for the call); `target` is 0 or 1, which no `OwnedFd` of this process
    // owns (std's `Stdin`/`Stdout` use them by number), so replacing it
    // invalidates nothing that Rust's ownership rules track.
    if unsafe { libc::dup2(from.as_raw_fd(), target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
