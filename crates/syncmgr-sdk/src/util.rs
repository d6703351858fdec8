//! Small helpers shared by the modules.

use std::fmt;
use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard, PoisonError};

use syncmgr_core::model::MAX_TEXT_LEN;

/// Locks a mutex, ignoring poisoning: the state behind every lock of the SDK
/// stays consistent across a panic (a handler's panic is caught and reported).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes one line to stderr, which the manager keeps as an information
/// entry of the session's log. Never stdout: that is the protocol channel.
pub(crate) fn note(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    // Nothing useful can be done when stderr is gone.
    let _ = writeln!(err, "syncmgr-sdk: {args}");
}

/// Cuts `text` to the manager's limit (4 KiB), at a character boundary,
/// marking the cut with `…`; the manager would refuse a longer text.
pub(crate) fn clip(mut text: String) -> String {
    if text.len() <= MAX_TEXT_LEN {
        return text;
    }
    const MARK: &str = "…";
    let mut cut = MAX_TEXT_LEN - MARK.len();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(MARK);
    text
}

/// The message of a caught panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_clipped_at_a_char_boundary() {
        assert_eq!(clip("short".to_owned()), "short");
        let long = "é".repeat(3000);
        let cut = clip(long);
        assert!(
            cut.len() <= MAX_TEXT_LEN && cut.ends_with('…'),
            "{}",
            cut.len()
        );
    }
}
