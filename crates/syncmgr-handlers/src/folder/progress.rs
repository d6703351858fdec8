//! The mirror's side of the callback while it works on a blocking thread:
//! progress in bytes, the current file as text, and the one place that
//! decides whether to stop.

use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use syncmgr_core::model::MAX_TEXT_LEN;
use syncmgr_core::{CallbackError, HandlerCallback, ItemStatus, ProgressReply, ProgressUpdate};

/// While scanning, at most one progress call per this interval: enough to
/// show life and to notice a cancel, without a call per directory.
const SCAN_INTERVAL: Duration = Duration::from_millis(100);

/// Reports one item's progress and answers "go on?".
#[derive(Debug)]
pub(super) struct Reporter<'a> {
    cb: &'a HandlerCallback,
    item: &'a str,
    /// Set when the handler's future was dropped or it was terminated: the
    /// work must stop although nobody asks through the callback any more.
    abort: &'a AtomicBool,
    max: u64,
    done: u64,
    last_scan: Instant,
    stopped: bool,
    /// Reports nothing (outside the progress window: `showError` looking at
    /// what a retry would do); only the abort flag stops it.
    quiet: bool,
}

impl<'a> Reporter<'a> {
    pub(super) fn new(cb: &'a HandlerCallback, item: &'a str, abort: &'a AtomicBool) -> Self {
        Reporter {
            cb,
            item,
            abort,
            max: 0,
            done: 0,
            last_scan: Instant::now(),
            stopped: false,
            quiet: false,
        }
    }

    /// A reporter that reports nothing, for a scan outside `synchronize`.
    pub(super) fn quiet(cb: &'a HandlerCallback, item: &'a str, abort: &'a AtomicBool) -> Self {
        Reporter {
            quiet: true,
            ..Reporter::new(cb, item, abort)
        }
    }

    /// Sends `update` and reads the reply's verdict.
    fn report(&mut self, update: &ProgressUpdate<'_>) -> bool {
        if self.quiet {
            return !self.stopped();
        }
        let reply = self.cb.progress(self.item, update);
        self.go_on(reply)
    }

    /// Whether a cancel (of the item or of everything) or an abort was seen.
    pub(super) fn stopped(&mut self) -> bool {
        if !self.stopped
            && (self.abort.load(Ordering::Relaxed)
                || (!self.quiet && self.cb.is_cancelled(self.item)))
        {
            self.stopped = true;
        }
        self.stopped
    }

    /// Start of the item: it is updating, nothing known yet.
    pub(super) fn start(&mut self) -> bool {
        self.report(&ProgressUpdate {
            status: Some(ItemStatus::Updating),
            text: Some("scanning"),
            ..ProgressUpdate::default()
        })
    }

    /// Scanning `rel`: reported at most every [`SCAN_INTERVAL`]; the cancel
    /// flags are read every time.
    pub(super) fn scanning(&mut self, rel: &Path) -> bool {
        if self.last_scan.elapsed() >= SCAN_INTERVAL {
            self.last_scan = Instant::now();
            let text = text_of(rel);
            return self.report(&ProgressUpdate {
                text: Some(clip(&text)),
                ..ProgressUpdate::default()
            });
        }
        !self.stopped()
    }

    /// The plan is known: `max` bytes to copy.
    pub(super) fn planned(&mut self, max: u64) -> bool {
        self.max = max;
        self.report(&ProgressUpdate {
            value: Some(0),
            max: Some(max),
            ..ProgressUpdate::default()
        })
    }

    /// A file (or link) starts: its path becomes the text.
    pub(super) fn file(&mut self, rel: &Path) -> bool {
        let text = text_of(rel);
        self.report(&ProgressUpdate {
            text: Some(clip(&text)),
            value: Some(self.done.min(self.max)),
            ..ProgressUpdate::default()
        })
    }

    /// `n` more bytes are done; reported when `report` (once per chunk of a
    /// large file), the cancel flags read every time.
    pub(super) fn bytes(&mut self, n: u64, report: bool) -> bool {
        self.done += n;
        if report {
            return self.report(&ProgressUpdate {
                value: Some(self.done.min(self.max)),
                ..ProgressUpdate::default()
            });
        }
        !self.stopped()
    }

    /// Reports the bytes done so far (at the end of the copies).
    pub(super) fn flush(&mut self) {
        let _ = self.bytes(0, true);
    }

    fn go_on(&mut self, reply: Result<ProgressReply, CallbackError>) -> bool {
        match reply {
            Ok(ProgressReply::Continue) => {}
            Ok(ProgressReply::CancelItem | ProgressReply::CancelAll) => self.stopped = true,
            // The window closed: synchronize is over for the manager.
            Err(CallbackError::OutsideWindow(_)) => self.stopped = true,
            // Anything else was logged against the handler by the manager;
            // the copy itself is still good.
            Err(_) => {}
        }
        !self.stopped()
    }
}

/// The text shown for a path relative to the source (`.` for the root).
fn text_of(rel: &Path) -> Cow<'_, str> {
    if rel.as_os_str().is_empty() {
        Cow::Borrowed(".")
    } else {
        path_text(rel)
    }
}

/// A path as text for people and the results log: bytes that are not UTF-8
/// are written `\xNN` (`syncmgr_core::text::escape_bytes`).
pub(crate) fn path_text(path: &Path) -> Cow<'_, str> {
    syncmgr_core::text::escape_bytes(path.as_os_str().as_encoded_bytes())
}

/// `text` cut to the longest status text the manager takes.
pub(super) fn clip(text: &str) -> &str {
    if text.len() <= MAX_TEXT_LEN {
        return text;
    }
    let mut cut = MAX_TEXT_LEN;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}
