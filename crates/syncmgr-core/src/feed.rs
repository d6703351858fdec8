//! [`EventFeed`]: the queue between a session and one observer that may be
//! slow (a terminal someone pressed Ctrl-S on, a pager left unread, later a
//! browser on a bad link).
//!
//! The session side must never wait for an observer: a host that awaited a
//! stalled display would stop answering handlers, and they would be found
//! "not responding". So [`EventFeed::push`] never blocks, and the queue stays
//! bounded by what matters: an item change that has not been taken yet is
//! replaced in place by the item's next change (the observer sees the latest
//! state of each item, its final one always), while every other event (log
//! entries, the start, the end) is kept, in order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::event::SessionEvent;

/// What an [`EventFeed`] carries: events, some of which replace an earlier
/// one with the same key that was not taken yet.
pub trait FeedEvent {
    /// The key of an event that supersedes the queued one with the same key
    /// (an item's latest state); `None` for events that are all kept.
    fn coalesce_key(&self) -> Option<(&str, &str)>;
}

impl FeedEvent for SessionEvent {
    fn coalesce_key(&self) -> Option<(&str, &str)> {
        match self {
            SessionEvent::ItemChanged(s) => Some((&s.handler, &s.item)),
            _ => None,
        }
    }
}

/// A coalescing, never-blocking queue of session events for one observer.
#[derive(Debug)]
pub struct EventFeed<E = SessionEvent> {
    inner: Mutex<Inner<E>>,
    ready: Condvar,
    /// Wakes an async observer ([`EventFeed::next`]); keeps one permit, so a
    /// push between its look and its wait is not lost.
    ready_async: tokio::sync::Notify,
}

impl<E> Default for EventFeed<E> {
    fn default() -> Self {
        EventFeed {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                next: 0,
                items: HashMap::new(),
                coalesced: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            ready_async: tokio::sync::Notify::new(),
        }
    }
}

#[derive(Debug)]
struct Inner<E> {
    /// Events not taken yet, each with its sequence number; the numbers are
    /// consecutive, so an event's place is its number minus the front's.
    queue: VecDeque<(u64, E)>,
    next: u64,
    /// The queued change of each item, by sequence number.
    items: HashMap<(String, String), u64>,
    /// Item changes replaced before they were taken.
    coalesced: u64,
    closed: bool,
}

/// What [`EventFeed::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Popped<E = SessionEvent> {
    /// The next event.
    Event(E),
    /// Nothing came within the timeout (time for a view to tick).
    Idle,
    /// The feed was closed and everything in it taken.
    Closed,
}

impl<E: FeedEvent> EventFeed<E> {
    /// An empty, open feed.
    pub fn new() -> Self {
        EventFeed::default()
    }

    /// Adds an event; never blocks. Pushing after [`close`](Self::close)
    /// does nothing.
    pub fn push(&self, event: E) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.closed {
            return;
        }
        if let Some((a, b)) = event.coalesce_key() {
            let key = (a.to_owned(), b.to_owned());
            let front = inner.queue.front().map_or(inner.next, |(seq, _)| *seq);
            if let Some(&seq) = inner.items.get(&key)
                && let Some(slot) = usize::try_from(seq - front)
                    .ok()
                    .and_then(|i| inner.queue.get_mut(i))
            {
                slot.1 = event;
                inner.coalesced += 1;
                return;
            }
            let seq = inner.next;
            inner.items.insert(key, seq);
        }
        let seq = inner.next;
        inner.next += 1;
        inner.queue.push_back((seq, event));
        drop(inner);
        self.ready.notify_one();
        self.ready_async.notify_one();
    }

    /// Takes the next event, waiting at most `timeout` for one.
    pub fn pop(&self, timeout: Duration) -> Popped<E> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (inner, _) = self
            .ready
            .wait_timeout_while(inner, timeout, |i| i.queue.is_empty() && !i.closed)
            .unwrap_or_else(PoisonError::into_inner);
        Self::take(inner)
    }

    /// Takes the next event on an async task (one consumer per feed);
    /// `None` once the feed is closed and empty.
    pub async fn next(&self) -> Option<E> {
        loop {
            let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            match Self::take(inner) {
                Popped::Event(event) => return Some(event),
                Popped::Closed => return None,
                Popped::Idle => self.ready_async.notified().await,
            }
        }
    }

    fn take(mut inner: std::sync::MutexGuard<'_, Inner<E>>) -> Popped<E> {
        match inner.queue.pop_front() {
            Some((seq, event)) => {
                if let Some((a, b)) = event.coalesce_key() {
                    let key = (a.to_owned(), b.to_owned());
                    if inner.items.get(&key) == Some(&seq) {
                        inner.items.remove(&key);
                    }
                }
                Popped::Event(event)
            }
            None if inner.closed => Popped::Closed,
            None => Popped::Idle,
        }
    }

    /// No more events come; [`pop`](Self::pop) returns what is queued, then
    /// [`Popped::Closed`].
    pub fn close(&self) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.ready.notify_all();
        self.ready_async.notify_one();
    }

    /// Events waiting to be taken.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .queue
            .len()
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many item changes were replaced by a later one before the
    /// observer took them.
    pub fn coalesced(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .coalesced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ItemSnapshot;
    use crate::model::{ItemStatus, LogEntry, LogLevel, NewLogEntry, SyncEvent};

    fn item(name: &str, status: ItemStatus, value: u64) -> SessionEvent {
        SessionEvent::ItemChanged(ItemSnapshot {
            handler: "h".into(),
            item: name.into(),
            name: name.into(),
            status,
            text: String::new(),
            value: Some(value),
            max: Some(100),
        })
    }

    fn log(id: i64) -> SessionEvent {
        SessionEvent::Log(LogEntry {
            id,
            entry: NewLogEntry {
                time: chrono::DateTime::UNIX_EPOCH,
                level: LogLevel::Information,
                handler: "h".into(),
                item: None,
                text: format!("entry {id}"),
                actionable: false,
                session: "s".into(),
                error_id: None,
                cause: None,
            },
        })
    }

    fn drain(feed: &EventFeed) -> Vec<SessionEvent> {
        let mut out = Vec::new();
        while let Popped::Event(e) = feed.pop(Duration::ZERO) {
            out.push(e);
        }
        out
    }

    #[test]
    fn item_changes_coalesce_in_place_and_the_rest_is_kept_in_order() {
        let feed: EventFeed = EventFeed::new();
        feed.push(SessionEvent::Started {
            session: "s".into(),
            trigger: SyncEvent::Manual,
            reason: String::new(),
        });
        feed.push(item("a", ItemStatus::Updating, 1));
        feed.push(log(1));
        feed.push(item("b", ItemStatus::Updating, 1));
        for v in 2..=50 {
            feed.push(item("a", ItemStatus::Updating, v));
        }
        feed.push(item("a", ItemStatus::Succeeded, 100));
        feed.push(log(2));
        assert_eq!(feed.len(), 5);
        assert!(!feed.is_empty());
        assert_eq!(feed.coalesced(), 50);
        let got = drain(&feed);
        assert!(matches!(got[0], SessionEvent::Started { .. }));
        assert_eq!(got[1], item("a", ItemStatus::Succeeded, 100));
        assert_eq!(got[2], log(1));
        assert_eq!(got[3], item("b", ItemStatus::Updating, 1));
        assert_eq!(got[4], log(2));
        // Taken: the next change queues anew, behind what came before it.
        feed.push(log(3));
        feed.push(item("b", ItemStatus::Succeeded, 100));
        // With events taken before (the queue's front is no longer the
        // first event ever), a change still replaces its item's queued one.
        feed.push(item("c", ItemStatus::Updating, 1));
        feed.push(item("c", ItemStatus::Updating, 2));
        assert_eq!(feed.len(), 3);
        assert_eq!(
            drain(&feed),
            vec![
                log(3),
                item("b", ItemStatus::Succeeded, 100),
                item("c", ItemStatus::Updating, 2)
            ]
        );
    }

    #[test]
    fn a_stalled_observer_holds_one_change_per_item_and_every_log_entry() {
        let feed: EventFeed = EventFeed::new();
        for round in 0..10_000u64 {
            for name in ["a", "b", "c"] {
                feed.push(item(name, ItemStatus::Updating, round));
            }
            if round % 1000 == 0 {
                feed.push(log(i64::try_from(round).unwrap_or(0)));
            }
        }
        assert_eq!(feed.len(), 3 + 10);
        let logs = drain(&feed)
            .into_iter()
            .filter(|e| matches!(e, SessionEvent::Log(_)))
            .count();
        assert_eq!(logs, 10);
    }

    #[test]
    fn pop_waits_then_idles_and_ends_after_close() {
        let feed: std::sync::Arc<EventFeed> = std::sync::Arc::new(EventFeed::new());
        assert_eq!(feed.pop(Duration::from_millis(1)), Popped::Idle);
        let pusher = {
            let feed = std::sync::Arc::clone(&feed);
            std::thread::spawn(move || feed.push(log(7)))
        };
        assert_eq!(feed.pop(Duration::from_secs(10)), Popped::Event(log(7)));
        pusher.join().expect("pusher");
        // Something queued is taken at once, however long pop may wait.
        feed.push(log(8));
        assert_eq!(feed.pop(Duration::from_secs(3600)), Popped::Event(log(8)));
        feed.push(log(8));
        feed.close();
        feed.push(log(9));
        assert_eq!(feed.pop(Duration::ZERO), Popped::Event(log(8)));
        assert_eq!(feed.pop(Duration::from_secs(10)), Popped::Closed);
        assert!(feed.is_empty());
    }

    /// An async observer gets what was queued, is woken by a later push,
    /// and sees the end after a close.
    #[tokio::test]
    async fn an_async_observer_is_woken_and_sees_the_end() {
        let feed = std::sync::Arc::new(EventFeed::new());
        feed.push(log(1));
        assert_eq!(feed.next().await, Some(log(1)));
        let pusher = {
            let feed = std::sync::Arc::clone(&feed);
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                feed.push(log(2));
                feed.close();
            })
        };
        assert_eq!(feed.next().await, Some(log(2)));
        assert_eq!(feed.next().await, None);
        pusher.await.expect("pusher");
    }
}
