//! The daemon's events for browsers: one follower of the daemon's event
//! stream (`DaemonRequest::Events`, the `events --json` shapes) numbers
//! each event (the SSE `id:`, rising by one), keeps the latest ones in a
//! ring for `Last-Event-ID` replay and fans them out. A browser that asks
//! for more than the ring holds, or falls behind the fan-out, gets a
//! `resync` event: it reloads its state rather than miss something.
//!
//! The daemon's follower already coalesces item updates for a slow
//! reader, so a 10,000-item session reaches the browsers as a bounded
//! stream of latest states.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use syncmgr_api as api;
use tokio::sync::broadcast;

use crate::AppState;

/// Events kept for replay.
const RING: usize = 4096;
/// Events a browser may fall behind the fan-out before it must resync.
const FANOUT: usize = 4096;

/// One numbered event, its JSON written once for every browser.
#[derive(Debug)]
pub struct Numbered {
    /// The SSE id.
    pub id: u64,
    /// The `events --json` line.
    pub json: String,
}

/// The numbered events and their subscribers.
#[derive(Debug)]
pub struct Events {
    ring: Mutex<Ring>,
    fanout: broadcast::Sender<Arc<Numbered>>,
    subscribers: AtomicUsize,
}

#[derive(Debug, Default)]
struct Ring {
    next_id: u64,
    kept: VecDeque<Arc<Numbered>>,
}

impl Events {
    pub fn new() -> Events {
        Events {
            ring: Mutex::new(Ring {
                next_id: 1,
                kept: VecDeque::new(),
            }),
            fanout: broadcast::channel(FANOUT).0,
            subscribers: AtomicUsize::new(0),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Numbers `event`, keeps it and sends it to every subscriber.
    pub fn publish(&self, event: &api::Event) {
        let Ok(json) = serde_json::to_string(event) else {
            return;
        };
        let mut ring = self.ring();
        let numbered = Arc::new(Numbered {
            id: ring.next_id,
            json,
        });
        ring.next_id += 1;
        if ring.kept.len() == RING {
            ring.kept.pop_front();
        }
        ring.kept.push_back(Arc::clone(&numbered));
        // Sent under the ring's lock: a new subscriber sees each event
        // either in its replay or live, never both, never neither.
        let _ = self.fanout.send(numbered);
    }

    /// The id the next event gets (the page starts its stream there).
    pub fn next_id(&self) -> u64 {
        self.ring().next_id
    }

    /// Browsers following the events now.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Subscribes after event `after`: the kept events since then, whether
    /// some were lost (the ring no longer holds them), and the live rest.
    fn subscribe(
        &self,
        after: Option<u64>,
    ) -> (Vec<Arc<Numbered>>, bool, broadcast::Receiver<Arc<Numbered>>) {
        let ring = self.ring();
        let live = self.fanout.subscribe();
        let Some(after) = after else {
            return (Vec::new(), false, live);
        };
        let oldest = ring.kept.front().map_or(ring.next_id, |n| n.id);
        // Asking about the future (a restarted daemon) is a gap too.
        let lost = after.saturating_add(1) < oldest || after >= ring.next_id;
        let replay = if lost {
            Vec::new()
        } else {
            ring.kept.iter().filter(|n| n.id > after).cloned().collect()
        };
        (replay, lost, live)
    }
}

/// Follows the daemon's events for as long as the server runs; when the
/// daemon's stream ends (it is stopping), tries again a little later.
pub async fn pump(state: Arc<AppState>) {
    loop {
        match follow(&state).await {
            Ok(()) => tracing::debug!("the daemon's event stream ended"),
            Err(e) => tracing::info!(error = %e, "cannot follow the daemon's events"),
        }
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn follow(state: &AppState) -> Result<(), syncmgr_manager::ManagerError> {
    let Some(mut daemon) = syncmgr_manager::client::connect(&state.home).await? else {
        return Err(syncmgr_manager::ManagerError::NoDaemon);
    };
    daemon.request(&api::DaemonRequest::Events {}).await?;
    while let Some(event) = daemon.next::<api::Event>().await? {
        state.metrics.observe(&event);
        state.events.publish(&event);
    }
    Ok(())
}

/// Counts a subscriber while its stream lives.
struct Subscribed(Arc<AppState>);

impl Subscribed {
    fn new(state: Arc<AppState>) -> Subscribed {
        state.events.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscribed(state)
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.events.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

fn sse(numbered: &Numbered) -> SseEvent {
    SseEvent::default()
        .id(numbered.id.to_string())
        .data(numbered.json.as_str())
}

fn resync(next_id: u64) -> SseEvent {
    // The id lets the browser continue from here once it has reloaded.
    SseEvent::default()
        .event("resync")
        .id(next_id.saturating_sub(1).to_string())
        .data("{}")
}

/// `GET /api/v1/events`: replay after `after` (`Last-Event-ID` or
/// `?after=`), then live, until the browser goes or the server stops.
pub fn stream(
    state: Arc<AppState>,
    after: Option<u64>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let (replay, lost, live) = state.events.subscribe(after);
    let first: Vec<SseEvent> = if lost {
        vec![resync(state.events.next_id())]
    } else {
        replay.iter().map(|n| sse(n)).collect()
    };
    let guard = Subscribed::new(Arc::clone(&state));
    let live = futures::stream::unfold((live, guard), |(mut live, guard)| async move {
        let event = tokio::select! {
            () = guard.0.shutdown.cancelled() => return None,
            received = live.recv() => match received {
                Ok(numbered) => sse(&numbered),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Dropped events: start over from a fresh state.
                    live = live.resubscribe();
                    resync(guard.0.events.next_id())
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
        };
        Some((Ok(event), (live, guard)))
    });
    let stream = futures::StreamExt::chain(futures::stream::iter(first.into_iter().map(Ok)), live);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(n: u64) -> api::Event {
        api::Event::Trigger {
            trigger: "scheduled".to_owned(),
            reason: format!("schedule s{n}"),
            time: "2026-12-06T00:00:00.000Z".to_owned(),
        }
    }

    #[test]
    fn ids_rise_by_one_and_replay_starts_after_the_last_seen() {
        let events = Events::new();
        for n in 0..5 {
            events.publish(&trigger(n));
        }
        let (replay, lost, _) = events.subscribe(Some(2));
        assert!(!lost);
        let ids: Vec<u64> = replay.iter().map(|n| n.id).collect();
        assert_eq!(ids, [3, 4, 5]);
        assert!(replay[0].json.contains("schedule s2"));
        let (replay, lost, _) = events.subscribe(Some(5));
        assert!(replay.is_empty() && !lost, "up to date");
    }

    #[test]
    fn asking_for_what_the_ring_no_longer_holds_is_a_gap() {
        let events = Events::new();
        for n in 0..(RING as u64 + 10) {
            events.publish(&trigger(n));
        }
        let (replay, lost, _) = events.subscribe(Some(3));
        assert!(lost && replay.is_empty());
        let (_, lost, _) = events.subscribe(Some(10));
        assert!(!lost, "the oldest kept is 11");
        let (_, lost, _) = events.subscribe(Some(RING as u64 + 1000));
        assert!(lost, "an id from the future (a restarted daemon)");
    }

    #[test]
    fn no_last_id_means_live_only() {
        let events = Events::new();
        events.publish(&trigger(0));
        let (replay, lost, mut live) = events.subscribe(None);
        assert!(replay.is_empty() && !lost);
        events.publish(&trigger(1));
        assert_eq!(live.try_recv().unwrap().id, 2);
    }
}
