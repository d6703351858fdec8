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

/// Where a reporter's updates go: the session's callback in a run, a
/// recorder in the unit tests of the scan and the copies (a callback exists
/// only inside a session, and a session cannot stop a handler at an exact
/// step).
pub(super) trait Sink: Sync {
    /// `Progress(item, update)`: the manager's verdict.
    fn progress(
        &self,
        item: &str,
        update: &ProgressUpdate<'_>,
    ) -> Result<ProgressReply, CallbackError>;
    /// Whether the item (or everything) was cancelled.
    fn is_cancelled(&self, item: &str) -> bool;
}

impl Sink for HandlerCallback {
    fn progress(
        &self,
        item: &str,
        update: &ProgressUpdate<'_>,
    ) -> Result<ProgressReply, CallbackError> {
        HandlerCallback::progress(self, item, update)
    }

    fn is_cancelled(&self, item: &str) -> bool {
        HandlerCallback::is_cancelled(self, item)
    }
}

/// Reports one item's progress and answers "go on?".
pub(super) struct Reporter<'a> {
    cb: &'a dyn Sink,
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
    pub(super) fn new(cb: &'a dyn Sink, item: &'a str, abort: &'a AtomicBool) -> Self {
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
    pub(super) fn quiet(cb: &'a dyn Sink, item: &'a str, abort: &'a AtomicBool) -> Self {
        Reporter {
            quiet: true,
            ..Reporter::new(cb, item, abort)
        }
    }
}

impl std::fmt::Debug for Reporter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("item", &self.item)
            .field("max", &self.max)
            .field("done", &self.done)
            .field("stopped", &self.stopped)
            .field("quiet", &self.quiet)
            .finish_non_exhaustive()
    }
}

impl Reporter<'_> {
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

/// A [`Sink`] for unit tests: keeps every update and answers from a script.
#[cfg(test)]
pub(super) mod testing {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use syncmgr_core::{CallbackError, ItemStatus, ProgressReply, ProgressUpdate};

    use super::Sink;

    /// One update as it was sent.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub(crate) struct Sent {
        pub(crate) status: Option<ItemStatus>,
        pub(crate) text: Option<String>,
        pub(crate) value: Option<u64>,
        pub(crate) max: Option<u64>,
    }

    /// Records updates; answers `Continue` until `cancel_after` updates were
    /// sent, then `reply`; `is_cancelled` answers `cancelled`.
    #[derive(Debug)]
    pub(crate) struct Recorder {
        pub(crate) sent: Mutex<Vec<Sent>>,
        pub(crate) cancel_after: usize,
        pub(crate) reply: Result<ProgressReply, fn() -> CallbackError>,
        pub(crate) cancelled: AtomicBool,
    }

    impl Default for Recorder {
        fn default() -> Self {
            Recorder {
                sent: Mutex::new(Vec::new()),
                cancel_after: usize::MAX,
                reply: Ok(ProgressReply::CancelItem),
                cancelled: AtomicBool::new(false),
            }
        }
    }

    impl Recorder {
        /// Answers `reply` from the `n`-th update on (0: the first).
        pub(crate) fn stopping_at(
            n: usize,
            reply: Result<ProgressReply, fn() -> CallbackError>,
        ) -> Self {
            Recorder {
                cancel_after: n,
                reply,
                ..Recorder::default()
            }
        }

        pub(crate) fn sent(&self) -> Vec<Sent> {
            self.sent.lock().expect("lock").clone()
        }
    }

    impl Sink for Recorder {
        fn progress(
            &self,
            item: &str,
            update: &ProgressUpdate<'_>,
        ) -> Result<ProgressReply, CallbackError> {
            assert_eq!(item, "item");
            let mut sent = self.sent.lock().expect("lock");
            sent.push(Sent {
                status: update.status,
                text: update.text.map(str::to_owned),
                value: update.value,
                max: update.max,
            });
            if sent.len() > self.cancel_after {
                self.reply.map_err(|make| make())
            } else {
                Ok(ProgressReply::Continue)
            }
        }

        fn is_cancelled(&self, item: &str) -> bool {
            assert_eq!(item, "item");
            self.cancelled.load(Ordering::SeqCst)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use syncmgr_core::model::MAX_TEXT_LEN;
    use syncmgr_core::{CallbackError, ItemStatus, ProgressReply};

    use super::testing::{Recorder, Sent};
    use super::{Reporter, clip};

    fn sent(text: Option<&str>, value: Option<u64>, max: Option<u64>) -> Sent {
        Sent {
            status: None,
            text: text.map(str::to_owned),
            value,
            max,
        }
    }

    /// The updates of one item's life: updating while scanning, the plan's
    /// size, each file with the bytes done before it, the bytes of large
    /// files' chunks, and never more than the plan's size.
    #[test]
    fn a_run_reports_its_stages_and_bytes() {
        let sink = Recorder::default();
        let abort = AtomicBool::new(false);
        let mut r = Reporter::new(&sink, "item", &abort);
        assert!(r.start());
        assert!(r.planned(100));
        assert!(r.file("a".as_ref()));
        assert!(r.bytes(60, false));
        assert!(r.file("b/c".as_ref()));
        assert!(r.bytes(30, true));
        assert!(r.bytes(50, true));
        r.flush();
        assert_eq!(
            sink.sent(),
            [
                Sent {
                    status: Some(ItemStatus::Updating),
                    text: Some("scanning".into()),
                    ..Sent::default()
                },
                sent(None, Some(0), Some(100)),
                sent(Some("a"), Some(0), None),
                sent(Some("b/c"), Some(60), None),
                sent(None, Some(90), None),
                sent(None, Some(100), None),
                sent(None, Some(100), None),
            ]
        );
    }

    /// While scanning, a folder is reported only when the last report is
    /// old enough; the cancel flags are read at every call either way.
    #[test]
    fn scanning_reports_at_intervals_and_always_reads_cancels() {
        let sink = Recorder::default();
        let abort = AtomicBool::new(false);
        let mut r = Reporter::new(&sink, "item", &abort);
        // A report just happened (in an hour, as far as the interval goes).
        r.last_scan = Instant::now() + Duration::from_secs(3600);
        assert!(r.scanning("x".as_ref()));
        assert!(sink.sent().is_empty());
        // The last report is long past: this folder is shown.
        r.last_scan = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .expect("an instant a second ago");
        assert!(r.scanning("".as_ref()));
        assert_eq!(sink.sent(), [sent(Some("."), None, None)]);
        assert!(r.last_scan.elapsed() < Duration::from_secs(1));

        r.last_scan = Instant::now() + Duration::from_secs(3600);
        sink.cancelled.store(true, Ordering::SeqCst);
        assert!(!r.scanning("x".as_ref()));
        assert!(!r.bytes(1, false));
        assert_eq!(sink.sent().len(), 1);
    }

    /// Every way of being told to stop stops the reporter for good.
    #[test]
    fn each_kind_of_stop_is_kept() {
        let abort = AtomicBool::new(false);
        for reply in [
            Ok(ProgressReply::CancelItem),
            Ok(ProgressReply::CancelAll),
            Err((|| CallbackError::OutsideWindow("progress")) as fn() -> CallbackError),
        ] {
            let sink = Recorder::stopping_at(0, reply);
            let mut r = Reporter::new(&sink, "item", &abort);
            assert!(!r.start());
            assert!(r.stopped());
            assert!(!r.bytes(1, false));
        }
        // Another refusal is the manager's to log: the work goes on.
        let sink = Recorder::stopping_at(
            0,
            Err((|| CallbackError::TextTooLong(1)) as fn() -> CallbackError),
        );
        let mut r = Reporter::new(&sink, "item", &abort);
        assert!(r.start());
        assert!(r.planned(1));
        assert!(!r.stopped());

        // The abort flag, with nothing asked.
        let sink = Recorder::default();
        let mut r = Reporter::new(&sink, "item", &abort);
        assert!(!r.stopped());
        abort.store(true, Ordering::SeqCst);
        assert!(r.stopped());
        abort.store(false, Ordering::SeqCst);
        assert!(r.stopped(), "a stop is not taken back");
    }

    /// A quiet reporter sends nothing and does not ask the session (whose
    /// cancels are about another run); only the abort flag stops it.
    #[test]
    fn a_quiet_reporter_sends_nothing_and_heeds_only_the_abort() {
        let sink = Recorder::default();
        sink.cancelled.store(true, Ordering::SeqCst);
        let abort = AtomicBool::new(false);
        let mut r = Reporter::quiet(&sink, "item", &abort);
        r.last_scan = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .expect("an instant a second ago");
        assert!(r.start());
        assert!(r.scanning("x".as_ref()));
        assert!(r.planned(5));
        assert!(r.file("x".as_ref()));
        assert!(!r.stopped());
        assert!(sink.sent().is_empty());
        abort.store(true, Ordering::SeqCst);
        assert!(!r.file("y".as_ref()));
        assert!(sink.sent().is_empty());
        // What a log line about it shows.
        let shown = format!("{r:?}");
        assert!(shown.starts_with("Reporter"), "{shown}");
        assert!(
            shown.contains("\"item\"") && shown.contains("quiet: true"),
            "{shown}"
        );
    }

    #[test]
    fn clip_cuts_at_a_character_boundary() {
        let fits = "a".repeat(MAX_TEXT_LEN);
        assert_eq!(clip(&fits), fits);
        let long = format!("{}é", "a".repeat(MAX_TEXT_LEN - 1));
        assert_eq!(long.len(), MAX_TEXT_LEN + 1);
        assert_eq!(clip(&long), "a".repeat(MAX_TEXT_LEN - 1));
        let long = format!("{}€xyz", "a".repeat(MAX_TEXT_LEN - 2));
        assert_eq!(clip(&long), "a".repeat(MAX_TEXT_LEN - 2));
        assert_eq!(clip(""), "");
    }
}
