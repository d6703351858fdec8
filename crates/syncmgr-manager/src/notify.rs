//! Desktop notifications of failed sessions, through
//! `org.freedesktop.Notifications` on the session bus (the bus named by
//! `DBUS_SESSION_BUS_ADDRESS`, so tests use a private one).
//!
//! At most one notification per session, never for warnings; a
//! notification's default action opens the dashboard at that session. No
//! session bus or no notification server: nothing is shown, `status` says
//! why, and nothing fails. Every call is async (zbus on the runtime) and
//! runs in its own task, so a slow server never holds a session up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use syncmgr_api::Availability;

/// What one notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The session it is about.
    pub session: String,
    /// Handlers with failed items, in order.
    pub handlers: Vec<String>,
    /// Items that failed (or handlers that failed as a whole).
    pub failed: u32,
    /// The first error logged in the session, if any.
    pub first_error: Option<String>,
}

impl Note {
    /// The summary line: which handler, how many items failed.
    pub fn summary(&self) -> String {
        let who = match self.handlers.as_slice() {
            [] => "syncmgr".to_owned(),
            [one] => one.clone(),
            [first, rest @ ..] => format!("{first} and {} more", rest.len()),
        };
        let items = if self.failed == 1 { "item" } else { "items" };
        format!("{who}: {} {items} failed to sync", self.failed)
    }

    /// The body: the first error.
    pub fn body(&self) -> String {
        self.first_error
            .clone()
            .unwrap_or_else(|| "see the results log (`syncmgr log`)".to_owned())
    }
}

/// Sends the daemon's notifications.
#[derive(Debug, Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    enabled: bool,
    /// The dashboard, opened by a notification's default action.
    dashboard: Option<String>,
    availability: Mutex<Availability>,
    /// Notification ids to the session they are about.
    #[cfg(target_os = "linux")]
    shown: Mutex<HashMap<u32, String>>,
    #[cfg(target_os = "linux")]
    bus: tokio::sync::OnceCell<Option<zbus::Connection>>,
}

#[cfg(target_os = "linux")]
#[zbus::proxy(
    interface = "org.freedesktop.Notifications",
    default_service = "org.freedesktop.Notifications",
    default_path = "/org/freedesktop/Notifications"
)]
trait Notifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: &str,
        replaces_id: u32,
        app_icon: &str,
        summary: &str,
        body: &str,
        actions: &[&str],
        hints: HashMap<&str, zbus::Variant<'_>>,
        expire_timeout: i32,
    ) -> zbus::Result<u32>;
    fn get_server_information(&self) -> zbus::Result<(String, String, String, String)>;
    #[zbus(signal)]
    fn action_invoked(&self, id: u32, action_key: String) -> zbus::Result<()>;
}

impl Notifier {
    /// A notifier; `Err(why)` for one that never shows anything (turned
    /// off in `config.toml`, or a host that keeps off the desktop's bus).
    pub fn new(enabled: Result<(), String>, dashboard: Option<String>) -> Notifier {
        let (enabled, reason) = match enabled {
            Ok(()) => (true, "not tried yet".to_owned()),
            Err(why) => (false, why),
        };
        Notifier {
            inner: Arc::new(Inner {
                enabled,
                dashboard,
                availability: Mutex::new(Availability {
                    available: false,
                    reason,
                }),
                #[cfg(target_os = "linux")]
                shown: Mutex::new(HashMap::new()),
                #[cfg(target_os = "linux")]
                bus: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// Whether notifications can be shown, and why not.
    pub fn availability(&self) -> Availability {
        self.inner
            .availability
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, available: bool, reason: String) {
        *self
            .inner
            .availability
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Availability { available, reason };
    }

    /// Finds the notification server (and, with a dashboard, listens for
    /// its default actions). Called once as the daemon starts.
    pub async fn start(&self) {
        #[cfg(target_os = "linux")]
        if self.inner.enabled
            && let Some(proxy) = self.proxy().await
        {
            match proxy.get_server_information().await {
                Ok((name, vendor, version, _)) => {
                    self.set(true, format!("{name} {version} ({vendor})"));
                    if self.inner.dashboard.is_some() {
                        tokio::spawn(self.clone().follow_actions(proxy));
                    }
                }
                Err(e) => self.set(false, format!("no notification server: {e}")),
            }
        }
    }

    #[cfg(target_os = "linux")]
    async fn proxy(&self) -> Option<NotificationsProxy<'static>> {
        let bus = self
            .inner
            .bus
            .get_or_init(|| async {
                match zbus::Connection::session().await {
                    Ok(bus) => Some(bus),
                    Err(e) => {
                        self.set(false, format!("no session bus: {e}"));
                        None
                    }
                }
            })
            .await
            .clone()?;
        match NotificationsProxy::new(&bus).await {
            Ok(proxy) => Some(proxy),
            Err(e) => {
                self.set(false, format!("no notification server: {e}"));
                None
            }
        }
    }

    /// Opens the dashboard at the session a notification's default action
    /// was taken on.
    #[cfg(target_os = "linux")]
    async fn follow_actions(self, proxy: NotificationsProxy<'static>) {
        use futures::StreamExt;
        let Ok(mut actions) = proxy.receive_action_invoked().await else {
            return;
        };
        while let Some(signal) = actions.next().await {
            let Ok(args) = signal.args() else { continue };
            if args.action_key != "default" {
                continue;
            }
            let session = self
                .inner
                .shown
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&args.id);
            if let (Some(session), Some(dashboard)) = (session, &self.inner.dashboard) {
                let url = format!("{dashboard}#session={session}");
                // The desktop's opener; none there, nothing to open.
                match tokio::process::Command::new("xdg-open").arg(&url).spawn() {
                    Ok(mut child) => {
                        tokio::spawn(async move { child.wait().await });
                    }
                    Err(e) => tracing::info!(error = %e, %url, "cannot open the dashboard"),
                }
            }
        }
    }

    /// Shows `note` (in its own task; failures are logged, never raised).
    pub fn notify(&self, note: Note) {
        if !self.inner.enabled {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            let this = self.clone();
            tokio::spawn(async move { this.send(note).await });
        }
        #[cfg(not(target_os = "linux"))]
        let _ = note;
    }

    #[cfg(target_os = "linux")]
    async fn send(&self, note: Note) {
        let Some(proxy) = self.proxy().await else {
            return;
        };
        let actions: &[&str] = if self.inner.dashboard.is_some() {
            &["default", "Open the dashboard"]
        } else {
            &[]
        };
        let mut hints = HashMap::new();
        hints.insert("urgency", zbus::Variant::U8(1));
        let sent = proxy
            .notify(
                "syncmgr",
                0,
                "dialog-error",
                &note.summary(),
                &note.body(),
                actions,
                hints,
                -1,
            )
            .await;
        match sent {
            Ok(id) => {
                self.inner
                    .shown
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id, note.session);
                if !self.availability().available {
                    self.set(true, "org.freedesktop.Notifications".to_owned());
                }
            }
            Err(e) => {
                tracing::info!(error = %e, "no desktop notification");
                self.set(false, format!("no notification server: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(handlers: &[&str], failed: u32, first_error: Option<&str>) -> Note {
        Note {
            session: "s".to_owned(),
            handlers: handlers.iter().map(|h| (*h).to_owned()).collect(),
            failed,
            first_error: first_error.map(str::to_owned),
        }
    }

    #[test]
    fn the_summary_names_the_handler_and_counts_items() {
        assert_eq!(
            note(&["mail"], 1, None).summary(),
            "mail: 1 item failed to sync"
        );
        assert_eq!(
            note(&["mail", "docs", "git"], 3, None).summary(),
            "mail and 2 more: 3 items failed to sync"
        );
    }

    #[test]
    fn the_body_is_the_first_error() {
        assert_eq!(note(&["m"], 1, Some("disk full")).body(), "disk full");
        assert!(note(&["m"], 1, None).body().contains("syncmgr log"));
    }

    #[test]
    fn a_disabled_notifier_says_so() {
        let off = Notifier::new(
            Err("turned off ([notifications] enabled = false)".to_owned()),
            None,
        );
        assert!(!off.availability().available);
        assert!(off.availability().reason.contains("enabled = false"));
    }
}
