//! Where the operating system's triggers come from on Linux: logind (idle,
//! sleep, shutdown, user sessions, the delay inhibitor), NetworkManager
//! (online, metered) and UPower (battery), over the system bus named by
//! `DBUS_SYSTEM_BUS_ADDRESS` when set, so that tests run against private
//! buses. What each source sees becomes a [`Seen`] for the daemon's rules
//! (`triggers.rs`). A bus or a service that is absent makes its triggers
//! unavailable (shown by `status`), never an error.
//!
//! zbus's traps, as `triggers.md` found them: a property stream yields the
//! current value first (not an edge; the rules only act on changes);
//! NetworkManager's `StateChanged` signal clashes with the `State`
//! property's stream (the property is enough here); nothing blocks the
//! runtime.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc::UnboundedSender;
use zbus::OwnedObjectPath;

use crate::triggers::{Network, Seen};

#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
trait Login1 {
    fn inhibit(&self, what: &str, who: &str, why: &str, mode: &str) -> zbus::Result<zbus::OwnedFd>;
    #[allow(clippy::type_complexity)]
    fn list_sessions(&self) -> zbus::Result<Vec<(String, u32, String, String, OwnedObjectPath)>>;
    #[zbus(signal)]
    fn prepare_for_sleep(&self, start: bool) -> zbus::Result<()>;
    #[zbus(signal)]
    fn prepare_for_shutdown(&self, start: bool) -> zbus::Result<()>;
    #[zbus(signal)]
    fn session_new(&self, id: String, path: OwnedObjectPath) -> zbus::Result<()>;
    #[zbus(signal)]
    fn session_removed(&self, id: String, path: OwnedObjectPath) -> zbus::Result<()>;
    #[zbus(property)]
    fn idle_hint(&self) -> zbus::Result<bool>;
    /// How long a delay inhibitor may hold sleep or shutdown (logind's
    /// `InhibitDelayMaxSec`).
    #[zbus(property, name = "InhibitDelayMaxUSec")]
    fn inhibit_delay_max_usec(&self) -> zbus::Result<u64>;
}

#[zbus::proxy(
    interface = "org.gnome.Mutter.IdleMonitor",
    default_service = "org.gnome.Mutter.IdleMonitor",
    default_path = "/org/gnome/Mutter/IdleMonitor/Core"
)]
trait MutterIdleMonitor {
    /// Milliseconds since the user's last input.
    fn get_idletime(&self) -> zbus::Result<u64>;
}

#[zbus::proxy(
    interface = "org.freedesktop.NetworkManager",
    default_service = "org.freedesktop.NetworkManager",
    default_path = "/org/freedesktop/NetworkManager"
)]
trait NetworkManager {
    #[zbus(property)]
    fn state(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn connectivity(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn metered(&self) -> zbus::Result<u32>;
}

#[zbus::proxy(
    interface = "org.freedesktop.UPower",
    default_service = "org.freedesktop.UPower",
    default_path = "/org/freedesktop/UPower"
)]
trait UPower {
    #[zbus(property)]
    fn on_battery(&self) -> zbus::Result<bool>;
}

/// NetworkManager's `NM_STATE_CONNECTED_GLOBAL`.
const NM_CONNECTED_GLOBAL: u32 = 70;
/// NetworkManager's `NM_STATE_DISCONNECTING`.
const NM_DISCONNECTING: u32 = 30;
/// NetworkManager's `NM_CONNECTIVITY_FULL`.
const NM_CONNECTIVITY_FULL: u32 = 4;

/// Which sources answer, and why the others do not: the `status` of the
/// triggers.
#[derive(Debug, Clone, Default)]
pub struct Availability {
    /// By source (`logind`, `network`, `battery`): `Ok(())` or why not.
    pub sources: BTreeMap<&'static str, Result<(), String>>,
}

/// The sources' side the daemon keeps: what answers, and logind for the
/// inhibitor.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    availability: Arc<Mutex<Availability>>,
    logind: Arc<Mutex<Option<Login1Proxy<'static>>>>,
}

impl Sources {
    /// What answers now.
    pub fn availability(&self) -> Availability {
        self.availability
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, source: &'static str, state: Result<(), String>) {
        if let Err(why) = &state {
            tracing::info!(source, %why, "trigger source unavailable");
        }
        self.availability
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sources
            .insert(source, state);
    }

    /// How long logind lets a delay inhibitor hold the system, when it
    /// says.
    pub async fn delay_limit(&self) -> Option<Duration> {
        let logind = self
            .logind
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        logind
            .inhibit_delay_max_usec()
            .await
            .ok()
            .map(Duration::from_micros)
    }

    /// Takes logind's delay inhibitor for sleep and shutdown; `None` when
    /// logind does not answer. Dropping the descriptor releases it.
    pub async fn inhibit(&self) -> Option<zbus::OwnedFd> {
        let logind = self
            .logind
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        match logind
            .inhibit(
                "sleep:shutdown",
                "syncmgr",
                "finishing sync sessions before the machine goes",
                "delay",
            )
            .await
        {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(error = %e, "cannot take logind's delay inhibitor");
                None
            }
        }
    }
}

/// Connects to the system bus (and the session bus, for GNOME's idle
/// monitor) and watches every source, sending what they see to `seen`,
/// until the daemon drops the receiver. Never fails: what is absent is
/// recorded in the returned [`Sources`]. `idle_after` sets how often the
/// idle monitor is asked (it has no signal for "idle for that long").
pub async fn watch(seen: UnboundedSender<Seen>, idle_after: Duration) -> Sources {
    let sources = Sources::default();
    // GNOME's own idle time is better than logind's hint, which only some
    // desktops feed: when Mutter answers, idleness comes from it.
    let mutter = watch_mutter(&sources, seen.clone(), idle_after).await;
    let network = match zbus::Connection::system().await {
        Ok(bus) => {
            watch_logind(&bus, &sources, seen.clone(), !mutter).await;
            let network = watch_network(&bus, &sources, seen.clone()).await;
            watch_battery(&bus, &sources, seen.clone()).await;
            network
        }
        Err(e) => {
            let why = format!("no system bus ({e})");
            for source in ["logind", "network", "battery"] {
                sources.set(source, Err(why.clone()));
            }
            false
        }
    };
    if !network {
        watch_routes(&sources, seen).await;
    }
    sources
}

/// Without NetworkManager: online means a default route, watched through
/// the kernel's route notifications (nothing says metered then). A thread
/// of its own waits on the socket (a blocking read costs no wake-up until
/// a route changes); it ends with the daemon.
async fn watch_routes(sources: &Sources, seen: UnboundedSender<Seen>) {
    let fd = match syncmgr_sys::routes::route_changes() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::info!(error = %e, "routes cannot be watched");
            return;
        }
    };
    sources.set("network", Ok(()));
    sources.set("routes", Ok(()));
    let state = |online| {
        Seen::Network(Some(Network {
            online,
            metered: false,
        }))
    };
    let mut online = syncmgr_sys::routes::has_default_route();
    if seen.send(state(online)).is_err() {
        return;
    }
    let watcher = std::thread::Builder::new()
        .name("syncmgr-routes".to_owned())
        .spawn(move || {
            while syncmgr_sys::routes::wait_for_change(&fd).is_ok() {
                let now = syncmgr_sys::routes::has_default_route();
                if now != online {
                    online = now;
                    if seen.send(state(online)).is_err() {
                        return;
                    }
                }
            }
        });
    if let Err(e) = watcher {
        tracing::info!(error = %e, "cannot start the routes watcher");
    }
}

/// The name of a service that does not answer, for `status`.
fn absent(service: &str, e: &zbus::Error) -> String {
    format!("{service} does not answer ({e})")
}

/// GNOME's idle monitor on the session bus, asked every half of
/// `idle_after` (at most a minute, at least half a second): the user counts
/// as idle once no input came for one such interval. `false` when it does
/// not answer.
async fn watch_mutter(
    sources: &Sources,
    seen: UnboundedSender<Seen>,
    idle_after: Duration,
) -> bool {
    let Ok(bus) = zbus::Connection::session().await else {
        return false;
    };
    let Ok(proxy) = MutterIdleMonitorProxy::new(&bus).await else {
        return false;
    };
    if proxy.get_idletime().await.is_err() {
        return false;
    }
    sources.set("mutter", Ok(()));
    let every = (idle_after / 2).clamp(Duration::from_millis(500), Duration::from_secs(60));
    tokio::spawn(async move {
        let _bus = bus;
        let mut last = None;
        loop {
            let idle = proxy
                .get_idletime()
                .await
                .ok()
                .map(|ms| Duration::from_millis(ms) >= every);
            if idle != last {
                last = idle;
                if seen.send(Seen::Idle(idle)).is_err() {
                    return;
                }
            }
            tokio::time::sleep(every).await;
        }
    });
    true
}

async fn watch_logind(
    bus: &zbus::Connection,
    sources: &Sources,
    seen: UnboundedSender<Seen>,
    idle_from_logind: bool,
) {
    let proxy = match Login1Proxy::new(bus).await {
        Ok(proxy) => proxy,
        Err(e) => return sources.set("logind", Err(absent("logind", &e))),
    };
    // One call tells whether logind is there at all.
    let uid = rustix::process::getuid().as_raw();
    let mine = move |list: &[(String, u32, String, String, OwnedObjectPath)]| {
        list.iter().filter(|s| s.1 == uid).count()
    };
    let sessions = match proxy.list_sessions().await {
        Ok(list) => mine(&list),
        Err(e) => return sources.set("logind", Err(absent("logind", &e))),
    };
    sources.set("logind", Ok(()));
    *sources
        .logind
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(proxy.clone());
    // Subscribed before anything else happens (zbus#1294).
    let (sleep, shutdown, new, removed) = match (
        proxy.receive_prepare_for_sleep().await,
        proxy.receive_prepare_for_shutdown().await,
        proxy.receive_session_new().await,
        proxy.receive_session_removed().await,
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        _ => {
            return sources.set(
                "logind",
                Err("logind's signals cannot be watched".to_owned()),
            );
        }
    };
    if sessions > 0 {
        let _ = seen.send(Seen::Logon);
    }
    let idle = proxy.receive_idle_hint_changed().await;
    if idle_from_logind {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut idle = idle;
            while let Some(change) = idle.next().await {
                let value = change.get().await.ok();
                if seen.send(Seen::Idle(value)).is_err() {
                    return;
                }
            }
        });
    }
    tokio::spawn(async move {
        let (mut sleep, mut shutdown, mut new, mut removed) = (sleep, shutdown, new, removed);
        loop {
            let event = tokio::select! {
                Some(signal) = sleep.next() => signal.args().ok().map(|a| Seen::Sleep(a.start)),
                Some(signal) = shutdown.next() => signal.args().ok().map(|a| Seen::Shutdown(a.start)),
                Some(_) = new.next() => {
                    let count = proxy.list_sessions().await.map(|l| mine(&l)).unwrap_or(0);
                    Some(Seen::SessionNew { first: count == 1 })
                }
                Some(_) = removed.next() => {
                    let count = proxy.list_sessions().await.map(|l| mine(&l)).unwrap_or(0);
                    Some(Seen::SessionRemoved { last: count == 0 })
                }
                else => return,
            };
            if let Some(event) = event
                && seen.send(event).is_err()
            {
                return;
            }
        }
    });
}

/// NetworkManager's state; `false` when it does not answer.
async fn watch_network(
    bus: &zbus::Connection,
    sources: &Sources,
    seen: UnboundedSender<Seen>,
) -> bool {
    let proxy = match NetworkManagerProxy::new(bus).await {
        Ok(proxy) => proxy,
        Err(e) => {
            sources.set("network", Err(absent("NetworkManager", &e)));
            return false;
        }
    };
    if let Err(e) = proxy.state().await {
        sources.set("network", Err(absent("NetworkManager", &e)));
        return false;
    }
    sources.set("network", Ok(()));
    let read = |proxy: NetworkManagerProxy<'static>| async move {
        let state = proxy.state().await.unwrap_or(0);
        // A NetworkManager without connectivity checking says unknown (0):
        // a global connection then counts as online.
        let connectivity = proxy.connectivity().await.unwrap_or(0);
        let metered = proxy.metered().await.unwrap_or(0);
        Network {
            online: state >= NM_CONNECTED_GLOBAL
                && (connectivity == NM_CONNECTIVITY_FULL || connectivity == 0),
            metered: matches!(metered, 1 | 3),
        }
    };
    let (mut state, mut connectivity, mut metered) = (
        proxy.receive_state_changed().await,
        proxy.receive_connectivity_changed().await,
        proxy.receive_metered_changed().await,
    );
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(change) = state.next() => {
                    if change.get().await.ok() == Some(NM_DISCONNECTING)
                        && seen.send(Seen::NetworkGoing).is_err()
                    {
                        return;
                    }
                }
                Some(_) = connectivity.next() => {}
                Some(_) = metered.next() => {}
                else => return,
            }
            let network = read(proxy.clone()).await;
            if seen.send(Seen::Network(Some(network))).is_err() {
                return;
            }
        }
    });
    true
}

async fn watch_battery(bus: &zbus::Connection, sources: &Sources, seen: UnboundedSender<Seen>) {
    let proxy = match UPowerProxy::new(bus).await {
        Ok(proxy) => proxy,
        Err(e) => return sources.set("battery", Err(absent("UPower", &e))),
    };
    if let Err(e) = proxy.on_battery().await {
        return sources.set("battery", Err(absent("UPower", &e)));
    }
    sources.set("battery", Ok(()));
    let mut changes = proxy.receive_on_battery_changed().await;
    tokio::spawn(async move {
        while let Some(change) = changes.next().await {
            if seen.send(Seen::OnBattery(change.get().await.ok())).is_err() {
                return;
            }
        }
    });
}
