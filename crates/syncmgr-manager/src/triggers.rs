//! The operating system's triggers as rules: what the sources saw (idle,
//! network, battery, sleep, shutdown, user sessions) in, what the daemon is
//! to do out. Pure logic over a clock passed in, so that every rule is a
//! unit test fed synthetic events (`tests` at the bottom); the D-Bus side is
//! `sources.rs`.
//!
//! The rules (`docs/cli.md`, "Triggers"):
//!
//! - **idle**: after `[idle] after` of user idleness an `idle` session runs,
//!   then again every `[idle] repeat` while the user stays idle; when the
//!   user comes back, running idle sessions are cancelled ("user active"). An
//!   unknown idle state never fires; on battery it waits unless
//!   `[idle] on_battery`.
//! - **network**: on the edge to online, held for `[network] debounce`, a
//!   `connect` session runs and every backoff is cleared.
//! - **metered**: automatic sessions (not `pendingDisconnect`, which cannot
//!   wait) are held, not failed, while the connection is metered unless
//!   `[network] metered`; **battery** holds idle and scheduled ones. A
//!   constraint lost while such a session runs cancels it, and it runs again
//!   once the constraint holds.
//! - **sleep, shutdown, logoff**: a `pendingDisconnect` session with the
//!   deadline `[disconnect] deadline`; the delay inhibitor that gave the time
//!   is released after it, and taken again after resume.
//! - **logon**: the daemon's start in a user session, or a first user
//!   session appearing, runs a `connect` session (reason "logon").

use std::time::{Duration, Instant};

use syncmgr_core::SyncEvent;

use crate::config::Triggers as Settings;

/// What a source saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The user is idle (`Some(true)`), active, or nobody knows (`None`:
    /// no session reports idleness).
    Idle(Option<bool>),
    /// The network: online and metered, or unknown.
    Network(Option<Network>),
    /// The network is going down (NetworkManager's disconnecting state):
    /// nothing waits for it, so what can be done is done at once.
    NetworkGoing,
    /// On battery, on mains, or unknown.
    OnBattery(Option<bool>),
    /// The machine is about to sleep (`true`) or has resumed (`false`).
    Sleep(bool),
    /// The machine is about to shut down (`true`), or that was cancelled.
    Shutdown(bool),
    /// A user session appeared; `first` when it is the only one.
    SessionNew {
        /// Whether no other user session was there.
        first: bool,
    },
    /// A user session ended; `last` when none is left.
    SessionRemoved {
        /// Whether it was the last one.
        last: bool,
    },
    /// The daemon started in a user session.
    Logon,
}

/// The network's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// Fully connected.
    pub online: bool,
    /// Metered (NetworkManager's yes or guess-yes).
    pub metered: bool,
}

/// What the daemon is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run an automatic session of `event` for the registrations that take
    /// part in it.
    Run {
        /// The event code.
        event: SyncEvent,
        /// Why, for people.
        reason: String,
    },
    /// A `pendingDisconnect` session that must be over within `deadline`
    /// (then cancelled), after which the inhibitor is released.
    PendingDisconnect {
        /// Why (`sleep`, `shutdown`, `logoff`, `network going down`).
        reason: String,
        /// How long it may take.
        deadline: Duration,
        /// Whether logind's inhibitor holds the system for it (and is given
        /// up after it).
        inhibited: bool,
    },
    /// Cancel running sessions of these events, with the reason; with
    /// `again`, they run again once their constraints hold.
    Cancel {
        /// The events whose sessions go.
        events: Vec<SyncEvent>,
        /// Why, for people.
        reason: String,
        /// Whether to run them again later.
        again: bool,
    },
    /// Clear every registration's backoff.
    ClearBackoffs,
    /// Take the delay inhibitor again (after a resume).
    Inhibit,
}

/// The rules' state.
#[derive(Debug)]
pub struct Rules {
    settings: Settings,
    idle: Option<bool>,
    /// When the next idle session is due, while idle.
    idle_due: Option<Instant>,
    network: Option<Network>,
    /// When the network came online, until the debounce says it stays.
    online_due: Option<Instant>,
    on_battery: Option<bool>,
    /// Runs held by a constraint (metered, battery), to run when it holds.
    held: Vec<(SyncEvent, String)>,
    /// When a trigger last fired, by kind (`idle`, `network`, `logon`,
    /// `pendingDisconnect`).
    fired: Vec<(&'static str, Instant)>,
}

impl Rules {
    /// Rules with these settings, nothing known yet.
    pub fn new(settings: Settings) -> Rules {
        Rules {
            settings,
            idle: None,
            idle_due: None,
            network: None,
            online_due: None,
            on_battery: None,
            held: Vec::new(),
            fired: Vec::new(),
        }
    }

    /// New settings (a reload): timers already armed keep their times.
    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// Why an automatic session of `event` has to wait now, if it has to.
    pub fn deferral(&self, event: SyncEvent) -> Option<&'static str> {
        if matches!(
            event,
            SyncEvent::Manual | SyncEvent::Invoke | SyncEvent::PendingDisconnect
        ) {
            return None;
        }
        if self.network.is_some_and(|n| n.metered) && !self.settings.network_metered {
            return Some("metered connection");
        }
        let battery_bound = match event {
            SyncEvent::Idle => !self.settings.idle_on_battery,
            SyncEvent::Scheduled => !self.settings.schedule_on_battery,
            _ => false,
        };
        if battery_bound && self.on_battery == Some(true) {
            return Some("on battery");
        }
        None
    }

    /// A run that [`Rules::deferral`] held back, to run once it may.
    pub fn hold(&mut self, event: SyncEvent, reason: String) {
        if !self.held.iter().any(|(e, r)| *e == event && *r == reason) {
            self.held.push((event, reason));
        }
    }

    /// What the source saw, at `now`.
    pub fn seen(&mut self, seen: Seen, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match seen {
            Seen::Idle(idle) => {
                let was = self.idle;
                self.idle = idle;
                match idle {
                    Some(true) if was != Some(true) => {
                        self.idle_due = Some(now + self.settings.idle_after);
                    }
                    Some(true) => {}
                    _ => {
                        self.idle_due = None;
                        if was == Some(true) && idle == Some(false) {
                            actions.push(Action::Cancel {
                                events: vec![SyncEvent::Idle],
                                reason: "user active".to_owned(),
                                again: false,
                            });
                        }
                        self.held.retain(|(e, _)| *e != SyncEvent::Idle);
                    }
                }
            }
            Seen::Network(network) => {
                // The first word of a source is the state it found, not an
                // edge: a daemon that starts online has seen nothing connect.
                let known = self.network.is_some();
                let was_online = self.network.is_some_and(|n| n.online);
                let was_metered = self.network.is_some_and(|n| n.metered);
                self.network = network;
                let online = network.is_some_and(|n| n.online);
                if online && !was_online && known {
                    self.online_due = Some(now + self.settings.network_debounce);
                } else if !online {
                    self.online_due = None;
                }
                let metered = network.is_some_and(|n| n.metered);
                if metered && !was_metered && !self.settings.network_metered {
                    actions.push(Action::Cancel {
                        events: vec![SyncEvent::Idle, SyncEvent::Scheduled, SyncEvent::Connect],
                        reason: "metered connection".to_owned(),
                        again: true,
                    });
                }
                actions.extend(self.release_held());
            }
            Seen::OnBattery(on_battery) => {
                let was = self.on_battery;
                self.on_battery = on_battery;
                if on_battery == Some(true) && was != Some(true) {
                    let mut events = Vec::new();
                    if !self.settings.schedule_on_battery {
                        events.push(SyncEvent::Scheduled);
                    }
                    if !self.settings.idle_on_battery {
                        events.push(SyncEvent::Idle);
                    }
                    actions.push(Action::Cancel {
                        events,
                        reason: "on battery".to_owned(),
                        again: true,
                    });
                }
                actions.extend(self.release_held());
            }
            Seen::NetworkGoing => {
                // Best effort: no inhibitor holds the network up.
                self.fired("pendingDisconnect", now);
                actions.push(Action::PendingDisconnect {
                    reason: "network going down".to_owned(),
                    deadline: self.settings.disconnect_deadline,
                    inhibited: false,
                });
            }
            Seen::Sleep(true) => actions.push(self.disconnect("sleep", now)),
            Seen::Shutdown(true) => actions.push(self.disconnect("shutdown", now)),
            // Back (or the shutdown was called off): the inhibitor again.
            Seen::Sleep(false) | Seen::Shutdown(false) => actions.push(Action::Inhibit),
            Seen::SessionNew { first: true } | Seen::Logon => {
                self.fired("logon", now);
                actions.push(Action::Inhibit);
                actions.push(Action::Run {
                    event: SyncEvent::Connect,
                    reason: "logon".to_owned(),
                });
            }
            Seen::SessionNew { first: false } => {}
            Seen::SessionRemoved { last: true } => actions.push(self.disconnect("logoff", now)),
            Seen::SessionRemoved { last: false } => {}
        }
        actions
    }

    fn disconnect(&mut self, reason: &str, now: Instant) -> Action {
        self.fired("pendingDisconnect", now);
        Action::PendingDisconnect {
            reason: reason.to_owned(),
            deadline: self.settings.disconnect_deadline,
            inhibited: true,
        }
    }

    fn fired(&mut self, kind: &'static str, now: Instant) {
        self.fired.retain(|(k, _)| *k != kind);
        self.fired.push((kind, now));
    }

    /// When a trigger of `kind` last fired.
    pub fn last_fired(&self, kind: &str) -> Option<Instant> {
        self.fired.iter().find(|(k, _)| *k == kind).map(|(_, t)| *t)
    }

    /// What is known of the sources, for `status`.
    pub fn idle(&self) -> Option<bool> {
        self.idle
    }

    /// The network as last seen.
    pub fn network(&self) -> Option<Network> {
        self.network
    }

    /// On battery, as last seen.
    pub fn on_battery(&self) -> Option<bool> {
        self.on_battery
    }

    /// Held runs that may go now.
    fn release_held(&mut self) -> Vec<Action> {
        let held = std::mem::take(&mut self.held);
        let (go, keep): (Vec<_>, Vec<_>) = held
            .into_iter()
            .partition(|(event, _)| self.deferral(*event).is_none());
        self.held = keep;
        go.into_iter()
            .map(|(event, reason)| Action::Run { event, reason })
            .collect()
    }

    /// Time passed: what is due at `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(due) = self.online_due
            && due <= now
        {
            self.online_due = None;
            if self.network.is_some_and(|n| n.online) {
                self.fired("network", now);
                actions.push(Action::ClearBackoffs);
                actions.push(Action::Run {
                    event: SyncEvent::Connect,
                    reason: "network connected".to_owned(),
                });
            }
        }
        if let Some(due) = self.idle_due
            && due <= now
        {
            self.idle_due = Some(now + self.settings.idle_repeat);
            if self.idle == Some(true) {
                self.fired("idle", now);
                actions.push(Action::Run {
                    event: SyncEvent::Idle,
                    reason: format!(
                        "idle for {}",
                        syncmgr_core::duration::format(self.settings.idle_after)
                    ),
                });
            }
        }
        actions
    }

    /// When [`Rules::tick`] has something to do next.
    pub fn next_due(&self) -> Option<Instant> {
        [self.online_due, self.idle_due].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn settings() -> Settings {
        Config::default().triggers
    }

    fn run(event: SyncEvent, reason: &str) -> Action {
        Action::Run {
            event,
            reason: reason.to_owned(),
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn idle_fires_after_the_wait_repeats_and_stops_when_the_user_returns() {
        let t0 = Instant::now();
        let mut rules = Rules::new(settings());
        assert!(rules.seen(Seen::Idle(Some(true)), t0).is_empty());
        assert_eq!(rules.next_due(), Some(t0 + 15 * MIN));
        assert!(rules.tick(t0 + 14 * MIN).is_empty());
        assert_eq!(
            rules.tick(t0 + 15 * MIN),
            [run(SyncEvent::Idle, "idle for 15m")]
        );
        assert_eq!(rules.last_fired("idle"), Some(t0 + 15 * MIN));
        // Every hour while still idle.
        assert!(rules.tick(t0 + 74 * MIN).is_empty());
        assert_eq!(rules.tick(t0 + 75 * MIN).len(), 1);
        // Back: idle sessions are cancelled, nothing more is due.
        assert_eq!(
            rules.seen(Seen::Idle(Some(false)), t0 + 80 * MIN),
            [Action::Cancel {
                events: vec![SyncEvent::Idle],
                reason: "user active".to_owned(),
                again: false
            }]
        );
        assert_eq!(rules.next_due(), None);
        assert!(rules.tick(t0 + 500 * MIN).is_empty());
        // Idle again: the wait starts over.
        rules.seen(Seen::Idle(Some(true)), t0 + 600 * MIN);
        assert_eq!(rules.next_due(), Some(t0 + 615 * MIN));
    }

    #[test]
    fn an_unknown_idle_state_never_fires() {
        let t0 = Instant::now();
        let mut rules = Rules::new(settings());
        assert!(rules.seen(Seen::Idle(None), t0).is_empty());
        assert!(rules.tick(t0 + 1000 * MIN).is_empty());
        rules.seen(Seen::Idle(Some(true)), t0);
        // The source went away while idle: no cancel, no more runs.
        assert!(rules.seen(Seen::Idle(None), t0 + MIN).is_empty());
        assert!(rules.tick(t0 + 1000 * MIN).is_empty());
    }

    #[test]
    fn the_network_fires_once_it_stays_online_and_clears_backoffs() {
        let t0 = Instant::now();
        let mut rules = Rules::new(settings());
        let online = |metered| {
            Seen::Network(Some(Network {
                online: true,
                metered,
            }))
        };
        let offline = Seen::Network(Some(Network {
            online: false,
            metered: false,
        }));
        // Online from the start: nothing connected.
        rules.seen(online(false), t0);
        assert_eq!(rules.next_due(), None);
        rules.seen(offline.clone(), t0);
        // Up, down again within the debounce: nothing.
        rules.seen(online(false), t0);
        rules.seen(offline.clone(), t0 + Duration::from_secs(2));
        assert!(rules.tick(t0 + Duration::from_secs(10)).is_empty());
        // Up and staying up.
        rules.seen(online(false), t0 + Duration::from_secs(20));
        assert!(rules.tick(t0 + Duration::from_secs(24)).is_empty());
        assert_eq!(
            rules.tick(t0 + Duration::from_secs(25)),
            [
                Action::ClearBackoffs,
                run(SyncEvent::Connect, "network connected")
            ]
        );
        // Still online: no second edge.
        rules.seen(online(false), t0 + Duration::from_secs(30));
        assert!(rules.tick(t0 + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn metered_and_battery_hold_automatic_runs_until_they_may() {
        let t0 = Instant::now();
        let mut rules = Rules::new(settings());
        let net = |metered| {
            Seen::Network(Some(Network {
                online: true,
                metered,
            }))
        };
        // Going metered cancels what runs, to run again later.
        assert_eq!(
            rules.seen(net(true), t0),
            [Action::Cancel {
                events: vec![SyncEvent::Idle, SyncEvent::Scheduled, SyncEvent::Connect],
                reason: "metered connection".to_owned(),
                again: true
            }]
        );
        assert_eq!(
            rules.deferral(SyncEvent::Scheduled),
            Some("metered connection")
        );
        assert_eq!(rules.deferral(SyncEvent::Manual), None);
        assert_eq!(rules.deferral(SyncEvent::PendingDisconnect), None);
        rules.hold(SyncEvent::Scheduled, "schedule nightly".into());
        rules.hold(SyncEvent::Scheduled, "schedule nightly".into());
        // Unmetered: the held run goes, once.
        assert_eq!(
            rules.seen(net(false), t0 + MIN),
            [run(SyncEvent::Scheduled, "schedule nightly")]
        );
        assert!(rules.seen(net(false), t0 + MIN).is_empty());

        // Battery holds scheduled and idle runs, not connect.
        let actions = rules.seen(Seen::OnBattery(Some(true)), t0 + 2 * MIN);
        assert_eq!(
            actions,
            [Action::Cancel {
                events: vec![SyncEvent::Scheduled, SyncEvent::Idle],
                reason: "on battery".to_owned(),
                again: true
            }]
        );
        assert_eq!(rules.deferral(SyncEvent::Idle), Some("on battery"));
        assert_eq!(rules.deferral(SyncEvent::Connect), None);
        rules.hold(SyncEvent::Idle, "idle for 15m".into());
        assert_eq!(
            rules.seen(Seen::OnBattery(Some(false)), t0 + 3 * MIN),
            [run(SyncEvent::Idle, "idle for 15m")]
        );

        // Allowed by the settings: nothing is held.
        let mut allowed = settings();
        allowed.network_metered = true;
        allowed.idle_on_battery = true;
        let mut rules = Rules::new(allowed);
        assert!(rules.seen(net(true), t0).is_empty());
        rules.seen(Seen::OnBattery(Some(true)), t0);
        assert_eq!(rules.deferral(SyncEvent::Idle), None);
        assert_eq!(rules.deferral(SyncEvent::Scheduled), Some("on battery"));
        let mut allowed = settings();
        allowed.schedule_on_battery = true;
        let mut rules = Rules::new(allowed);
        assert_eq!(
            rules.seen(Seen::OnBattery(Some(true)), t0),
            [Action::Cancel {
                events: vec![SyncEvent::Idle],
                reason: "on battery".to_owned(),
                again: true
            }]
        );
        assert_eq!(rules.deferral(SyncEvent::Scheduled), None);
    }

    #[test]
    fn sleep_shutdown_and_logoff_run_pending_disconnect_with_a_deadline() {
        let t0 = Instant::now();
        let mut rules = Rules::new(settings());
        let deadline = Duration::from_secs(4);
        for (seen, reason) in [
            (Seen::Sleep(true), "sleep"),
            (Seen::Shutdown(true), "shutdown"),
            (Seen::SessionRemoved { last: true }, "logoff"),
        ] {
            assert_eq!(
                rules.seen(seen, t0),
                [Action::PendingDisconnect {
                    reason: reason.to_owned(),
                    deadline,
                    inhibited: true,
                }]
            );
        }
        assert_eq!(
            rules.seen(Seen::NetworkGoing, t0),
            [Action::PendingDisconnect {
                reason: "network going down".to_owned(),
                deadline,
                inhibited: false,
            }]
        );
        assert_eq!(rules.last_fired("pendingDisconnect"), Some(t0));
        assert_eq!(rules.seen(Seen::Sleep(false), t0), [Action::Inhibit]);
        assert!(
            rules
                .seen(Seen::SessionRemoved { last: false }, t0)
                .is_empty()
        );
        assert_eq!(rules.seen(Seen::Shutdown(false), t0), [Action::Inhibit]);
    }

    #[test]
    fn logon_runs_connect() {
        let t0 = Instant::now();
        let mut rules = Rules::new(settings());
        let logon = [Action::Inhibit, run(SyncEvent::Connect, "logon")];
        assert_eq!(rules.seen(Seen::Logon, t0), logon);
        assert!(rules.seen(Seen::SessionNew { first: false }, t0).is_empty());
        assert_eq!(rules.seen(Seen::SessionNew { first: true }, t0), logon);
        assert_eq!(rules.last_fired("logon"), Some(t0));
    }
}
