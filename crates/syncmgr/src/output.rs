//! Writing to stdout (results, JSON) and stderr (messages for people).
//!
//! stdout carries only what a command produces, so `--json` output can be
//! piped; diagnostics and tracing go to stderr.

use std::io::{self, Write};

/// The command's output stream.
#[derive(Debug)]
pub struct Stdout {
    inner: io::Stdout,
}

impl Stdout {
    /// Wraps the process's stdout.
    pub fn new() -> Self {
        Stdout {
            inner: io::stdout(),
        }
    }

    /// Writes one JSON document on a line of its own.
    pub fn json<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> anyhow::Result<()> {
        let mut lock = self.inner.lock();
        serde_json::to_writer(&mut lock, value)?;
        lock.write_all(b"\n")?;
        lock.flush()?;
        Ok(())
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether `error` comes from writing to a closed pipe (`syncmgr log | head`).
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// A message for the person at the terminal, on stderr.
pub fn warn(message: &str) {
    let _ = writeln!(io::stderr().lock(), "syncmgr: {message}");
}

/// A question for the person at the terminal, on stderr, without a newline.
pub fn prompt(question: &str) {
    let mut err = io::stderr().lock();
    let _ = write!(err, "syncmgr: {question}");
    let _ = err.flush();
}
