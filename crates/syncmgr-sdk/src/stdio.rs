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
    // `dup2` onto 0 and 1 through rustix: std's `Stdin`/`Stdout` use those
    // numbers without owning them, so replacing what they refer to breaks
    // no ownership that Rust tracks.
    if rustix::stdio::dup2_stdout(io::stderr().as_fd()).is_err() {
        rustix::stdio::dup2_stdout(null.as_fd())?;
    }
    rustix::stdio::dup2_stdin(null.as_fd())?;
    Ok((Box::new(File::from(input)), Box::new(File::from(output))))
}

#[cfg(not(unix))]
pub(crate) fn take() -> io::Result<Stdio> {
    Ok((Box::new(io::stdin()), Box::new(io::stdout())))
}
