//! Cancellation state of a sync round, shared by the reader thread (which
//! applies `setItemStatus` and the end of the channel), every [`Progress`]
//! (which applies the `action` of `progress` replies) and the workers.
//!
//! [`Progress`]: crate::Progress

use std::collections::HashSet;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::progress::Reply;
use crate::util::lock;

#[derive(Debug, Default)]
struct Inner {
    /// `cancelAll`: every item of the handler stops; the rest are skipped.
    all: bool,
    /// The channel is closed: everything stops, for good.
    closed: bool,
    /// Items the manager asked to stop (`setItemStatus skipped`, `cancelItem`).
    items: HashSet<String>,
}

/// Who is cancelled, with a condition variable to wait on.
#[derive(Debug, Default)]
pub(crate) struct CancelState {
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl CancelState {
    /// A new sync round (`prepareForSync`): forget the last round's cancels.
    pub(crate) fn reset(&self) {
        let mut inner = lock(&self.inner);
        inner.all = false;
        inner.items.clear();
    }

    /// `setItemStatus skipped`, or a `cancelItem` reply.
    pub(crate) fn cancel_item(&self, item: &str) {
        lock(&self.inner).items.insert(item.to_owned());
        self.changed.notify_all();
    }

    /// `setItemStatus skipped` (the same as `cancelItem`: a running item
    /// stops, one not started yet is skipped).
    pub(crate) fn skip(&self, item: &str) {
        self.cancel_item(item);
    }

    /// A `cancelAll` reply.
    pub(crate) fn cancel_all(&self) {
        lock(&self.inner).all = true;
        self.changed.notify_all();
    }

    /// The channel closed.
    pub(crate) fn close(&self) {
        lock(&self.inner).closed = true;
        self.changed.notify_all();
    }

    /// What the manager asked for `item`: `Continue` when nothing.
    pub(crate) fn state(&self, item: &str) -> Reply {
        Self::of(&lock(&self.inner), item)
    }

    fn of(inner: &Inner, item: &str) -> Reply {
        if inner.all || inner.closed {
            Reply::CancelAll
        } else if inner.items.contains(item) {
            Reply::CancelItem
        } else {
            Reply::Continue
        }
    }

    /// Waits up to `timeout` for `item` to be cancelled; returns its state.
    pub(crate) fn wait(&self, item: &str, timeout: Duration) -> Reply {
        let deadline = Instant::now().checked_add(timeout);
        let mut inner = lock(&self.inner);
        loop {
            let state = Self::of(&inner, item);
            if state != Reply::Continue {
                return state;
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                // Too far to represent: wait in long slices, forever.
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return Reply::Continue;
            }
            inner = self
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn cancels_are_per_item_per_round_and_wake_waiters() {
        let state = Arc::new(CancelState::default());
        assert_eq!(state.wait("a", Duration::ZERO), Reply::Continue);
        state.cancel_item("a");
        assert_eq!(state.state("a"), Reply::CancelItem);
        assert_eq!(state.state("b"), Reply::Continue);
        state.reset();
        assert_eq!(state.state("a"), Reply::Continue);

        let waiter = {
            let state = Arc::clone(&state);
            std::thread::spawn(move || state.wait("b", Duration::from_secs(60)))
        };
        state.cancel_all();
        assert_eq!(waiter.join().unwrap(), Reply::CancelAll);
        state.reset();
        state.close();
        state.reset();
        assert_eq!(state.state("a"), Reply::CancelAll, "closed is for good");
    }
}
