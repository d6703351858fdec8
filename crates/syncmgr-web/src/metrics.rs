//! `/metrics`: the contract's metric names in Prometheus text format
//! (prometheus-client). Counters and the duration histogram come from the
//! daemon's events as the dashboard sees them (since the daemon started);
//! registration states and backoffs are read from the daemon's status at
//! each scrape. No label carries a file path: only registration names,
//! item ids, event codes, statuses and levels.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use syncmgr_api as api;

type Labels = Vec<(String, String)>;

/// The registration states `syncmgr_registration_state` has a series for.
const STATES: [&str; 5] = ["idle", "queued", "running", "backoff", "deferred"];

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sessions: Family<Labels, Counter>,
    duration: Histogram,
    items: Family<Labels, Counter>,
    last_success: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    registration_state: Family<Labels, Gauge>,
    backoff_until: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    log_entries: Family<Labels, Counter>,
    triggers: Family<Labels, Counter>,
    subscribers: Gauge,
    /// Running sessions: their trigger and when they started.
    running: Mutex<HashMap<String, (String, Instant)>>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let sessions = Family::<Labels, Counter>::default();
        // prometheus-client adds `_total` to counters itself.
        registry.register(
            "syncmgr_sessions",
            "Sessions ended, by trigger and outcome",
            sessions.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.1, 4.0, 10));
        registry.register(
            "syncmgr_session_duration_seconds",
            "How long sessions ran",
            duration.clone(),
        );
        let items = Family::<Labels, Counter>::default();
        registry.register(
            "syncmgr_items",
            "Items that ended a session, by handler and final status",
            items.clone(),
        );
        let last_success = Family::default();
        registry.register(
            "syncmgr_item_last_success_timestamp_seconds",
            "When each item last synced successfully (Unix time)",
            last_success.clone(),
        );
        let registration_state = Family::<Labels, Gauge>::default();
        registry.register(
            "syncmgr_registration_state",
            "1 for each registration's current state",
            registration_state.clone(),
        );
        let backoff_until = Family::default();
        registry.register(
            "syncmgr_backoff_until_timestamp_seconds",
            "When a registration's backoff ends (Unix time)",
            backoff_until.clone(),
        );
        let log_entries = Family::<Labels, Counter>::default();
        registry.register(
            "syncmgr_log_entries",
            "Results-log entries recorded, by level",
            log_entries.clone(),
        );
        let triggers = Family::<Labels, Counter>::default();
        registry.register(
            "syncmgr_triggers",
            "Triggers that fired in the daemon",
            triggers.clone(),
        );
        let subscribers = Gauge::default();
        registry.register(
            "syncmgr_events_subscribers",
            "Browsers following the event stream",
            subscribers.clone(),
        );
        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&labels(&[("version", env!("CARGO_PKG_VERSION"))]))
            .set(1);
        registry.register("syncmgr_build_info", "The running version", build);
        Metrics {
            registry,
            sessions,
            duration,
            items,
            last_success,
            registration_state,
            backoff_until,
            log_entries,
            triggers,
            subscribers,
            running: Mutex::new(HashMap::new()),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts what one event of the daemon says.
    pub fn observe(&self, event: &api::Event) {
        match event {
            api::Event::SessionStarted {
                session, trigger, ..
            } => {
                self.running()
                    .insert(session.clone(), (trigger.clone(), Instant::now()));
            }
            api::Event::SessionFinished {
                session,
                outcome,
                items,
                ..
            } => {
                let started = self.running().remove(session);
                let trigger = started.as_ref().map_or("unknown", |(t, _)| t.as_str());
                self.sessions
                    .get_or_create(&labels(&[("trigger", trigger), ("outcome", outcome)]))
                    .inc();
                if let Some((_, at)) = started {
                    self.duration.observe(at.elapsed().as_secs_f64());
                }
                let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
                for item in items {
                    self.items
                        .get_or_create(&labels(&[
                            ("handler", &item.handler),
                            ("status", &item.status),
                        ]))
                        .inc();
                    if item.status == "succeeded" {
                        self.last_success
                            .get_or_create(&labels(&[
                                ("handler", &item.handler),
                                ("item", &item.item),
                            ]))
                            .set(now);
                    }
                }
            }
            api::Event::Log { level, .. } => {
                self.log_entries
                    .get_or_create(&labels(&[("level", level)]))
                    .inc();
            }
            api::Event::Trigger { trigger, .. } => {
                self.triggers
                    .get_or_create(&labels(&[("trigger", trigger)]))
                    .inc();
            }
            _ => {}
        }
    }

    /// The text of a scrape, with the gauges set from `status` first.
    pub fn render(&self, status: Option<&api::Status>, subscribers: usize) -> String {
        self.subscribers.set(subscribers as i64);
        if let Some(status) = status {
            self.registration_state.clear();
            self.backoff_until.clear();
            for reg in &status.registrations {
                for state in STATES {
                    self.registration_state
                        .get_or_create(&labels(&[("handler", &reg.name), ("state", state)]))
                        .set(i64::from(reg.state == state));
                }
                if let Some(until) = reg
                    .backoff_until
                    .as_deref()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                {
                    self.backoff_until
                        .get_or_create(&labels(&[("handler", &reg.name)]))
                        .set(until.timestamp_millis() as f64 / 1000.0);
                }
            }
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(session: &str, outcome: &str, items: &[(&str, &str, &str)]) -> api::Event {
        api::Event::SessionFinished {
            session: session.to_owned(),
            outcome: outcome.to_owned(),
            counts: api::Counts::default(),
            items: items
                .iter()
                .map(|(h, i, s)| api::ItemResult {
                    handler: (*h).to_owned(),
                    item: (*i).to_owned(),
                    status: (*s).to_owned(),
                })
                .collect(),
            failed_handlers: Vec::new(),
        }
    }

    #[test]
    fn sessions_items_logs_and_triggers_are_counted_by_their_labels() {
        let metrics = Metrics::new();
        metrics.observe(&api::Event::SessionStarted {
            session: "s1".to_owned(),
            trigger: "idle".to_owned(),
            reason: "idle".to_owned(),
        });
        metrics.observe(&finished(
            "s1",
            "failed",
            &[("mail", "inbox", "succeeded"), ("mail", "sent", "failed")],
        ));
        metrics.observe(&api::Event::Trigger {
            trigger: "scheduled".to_owned(),
            reason: "schedule x".to_owned(),
            time: "2026-12-06T00:00:00.000Z".to_owned(),
        });
        let text = metrics.render(None, 3);
        for line in [
            "syncmgr_sessions_total{trigger=\"idle\",outcome=\"failed\"} 1",
            "syncmgr_items_total{handler=\"mail\",status=\"failed\"} 1",
            "syncmgr_items_total{handler=\"mail\",status=\"succeeded\"} 1",
            "syncmgr_triggers_total{trigger=\"scheduled\"} 1",
            "syncmgr_events_subscribers 3",
            "syncmgr_session_duration_seconds_count 1",
            "syncmgr_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.contains(
            "syncmgr_item_last_success_timestamp_seconds{handler=\"mail\",item=\"inbox\"}"
        ));
        assert!(!text.contains("item=\"sent\"} "), "{text}");
    }

    fn value_of(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn the_last_success_is_the_time_the_session_ended() {
        let metrics = Metrics::new();
        let before = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        metrics.observe(&finished(
            "s",
            "succeeded",
            &[("mail", "inbox", "succeeded")],
        ));
        let after = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let text = metrics.render(None, 0);
        let at = value_of(
            &text,
            "syncmgr_item_last_success_timestamp_seconds{handler=\"mail\",item=\"inbox\"}",
        );
        assert!(before <= at && at <= after, "{before} <= {at} <= {after}");
        // A session whose start was not seen counts under `unknown`.
        assert!(
            text.contains("syncmgr_sessions_total{trigger=\"unknown\",outcome=\"succeeded\"} 1")
        );
        assert!(
            text.contains("syncmgr_session_duration_seconds_count 0"),
            "{text}"
        );
    }

    #[test]
    fn states_and_backoffs_come_from_the_status() {
        let metrics = Metrics::new();
        let registration =
            |name: &str, state: &str, backoff: Option<&str>| api::RegistrationState {
                name: name.to_owned(),
                state: state.to_owned(),
                last_session: None,
                next_run: None,
                next_reason: None,
                backoff_until: backoff.map(str::to_owned),
            };
        let status = api::Status {
            daemon: None,
            sessions: Vec::new(),
            registrations: vec![
                registration("mail", "backoff", Some("2026-12-06T12:00:00.500Z")),
                registration("docs", "running", None),
            ],
            triggers: Vec::new(),
        };
        let text = metrics.render(Some(&status), 0);
        for (series, value) in [
            (
                "syncmgr_registration_state{handler=\"mail\",state=\"backoff\"}",
                1.0,
            ),
            (
                "syncmgr_registration_state{handler=\"mail\",state=\"idle\"}",
                0.0,
            ),
            (
                "syncmgr_registration_state{handler=\"docs\",state=\"running\"}",
                1.0,
            ),
            (
                "syncmgr_registration_state{handler=\"docs\",state=\"backoff\"}",
                0.0,
            ),
        ] {
            assert_eq!(value_of(&text, series), value, "{series}");
        }
        let until = chrono::DateTime::parse_from_rfc3339("2026-12-06T12:00:00.500Z").unwrap();
        let expected = until.timestamp() as f64 + 0.5;
        let backoff = value_of(
            &text,
            "syncmgr_backoff_until_timestamp_seconds{handler=\"mail\"}",
        );
        assert_eq!(backoff, expected);
        assert!(!text.contains("syncmgr_backoff_until_timestamp_seconds{handler=\"docs\"}"));
        // The next scrape starts afresh: a registration gone is gone.
        let text = metrics.render(
            Some(&api::Status {
                registrations: Vec::new(),
                ..status
            }),
            0,
        );
        assert!(!text.contains("handler=\"mail\""), "{text}");
    }
}
