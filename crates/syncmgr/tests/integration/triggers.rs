//! The operating system's triggers (issue 10) against real D-Bus: each test
//! starts its own `dbus-daemon` (used as the system bus) and
//! python-dbusmock's `logind`, `networkmanager` and `upower` templates on
//! it, points the daemon at it with `DBUS_SYSTEM_BUS_ADDRESS`, drives the
//! mocks with `busctl` (signals through the mock's `EmitSignal`, properties
//! through `Properties.Set`) and asserts on `history`, `status` and
//! logind's inhibitor list. Every process ends with the test.
//!
//! python-dbusmock comes from the virtual environment `scripts/test` makes
//! (`SYNCMGR_TEST_DBUSMOCK_PYTHON` names its interpreter).

use std::path::PathBuf;

use serde_json::Value;
use syncmgr_testkit::dbus::{
    Bus, LOGIND, LOGIND_MANAGER, LOGIND_PATH, MOCK, NM, NM_PATH, UPOWER, UPOWER_PATH,
};

use crate::util::{PATIENCE, TestHome, wait_until};

/// The interpreter with python-dbusmock, or `None` when the tests may be
/// skipped (`SYNCMGR_TEST_SKIP_TOOLS` lists `dbusmock`).
fn dbusmock_python() -> Option<PathBuf> {
    if let Some(python) = syncmgr_testkit::dbus::dbusmock_python() {
        return Some(python);
    }
    let skip = std::env::var(syncmgr_testkit::SKIP_TOOLS_VAR).unwrap_or_default();
    if skip
        .split(',')
        .any(|t| t.trim() == "dbusmock" || t.trim() == "all")
    {
        return None;
    }
    panic!(
        "these tests need python-dbusmock: run `scripts/test` (it makes the virtual environment), or set SYNCMGR_TEST_DBUSMOCK_PYTHON to a python with dbusmock, or set {}=dbusmock to skip them",
        syncmgr_testkit::SKIP_TOOLS_VAR
    );
}

/// A handler's arguments for an item that takes 40 s if left alone.
const HELD: &[&str] = &["--items", "a", "--steps", "1000", "--step-ms", "40"];

/// A private bus with these dbusmock templates on it (`logind`,
/// `networkmanager`, `upower`), or `None` when the tests may be skipped.
fn bus_with(templates: &[&str]) -> Option<Bus> {
    let python = dbusmock_python()?;
    let mut bus = Bus::start();
    for template in templates {
        let (service, path) = match *template {
            "logind" => (LOGIND, LOGIND_PATH),
            "networkmanager" => (NM, NM_PATH),
            "upower" => (UPOWER, UPOWER_PATH),
            other => panic!("no template {other} here"),
        };
        bus.mock(&python, template, service, path);
    }
    Some(bus)
}

/// A home whose daemon watches `bus`, with `config` as its config.toml.
fn home_on(bus: &Bus, config: &str) -> TestHome {
    let mut home = TestHome::inline();
    home.set_env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address);
    std::fs::write(home.path().join("config.toml"), config).expect("config");
    home
}

fn sessions_with(home: &TestHome, reason: &str) -> Vec<Value> {
    home.history()
        .into_iter()
        .filter(|s| {
            s["reason"]
                .as_str()
                .is_some_and(|r| r.split(", ").any(|p| p == reason))
        })
        .collect()
}

fn trigger(status: &Value, name: &str) -> Value {
    status["triggers"]
        .as_array()
        .expect("triggers")
        .iter()
        .find(|t| t["trigger"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no trigger {name} in {status:#}"))
}

#[test]
fn sleep_runs_pending_disconnect_within_the_inhibitor_and_takes_it_again() {
    let Some(bus) = bus_with(&["logind"]) else {
        return;
    };
    let mut home = home_on(&bus, "");
    home.register_with(
        "mail",
        &["--events", "pendingDisconnect"],
        &["--items", "a"],
    );
    home.start_daemon();
    // Held while a registration opts in.
    assert!(wait_until(PATIENCE, || bus.inhibitors() == 1));
    let status = home.json(&["status", "--json"]);
    assert_eq!(trigger(&status, "pendingDisconnect")["available"], true);
    // No UPower on this bus: unavailable, not an error; no
    // NetworkManager: the network is watched through the kernel's routes.
    let battery = trigger(&status, "battery");
    assert_eq!(battery["available"], false);
    assert!(
        battery["reason"]
            .as_str()
            .is_some_and(|r| r.contains("UPower does not answer")),
        "{battery}"
    );
    let connect = trigger(&status, "connect");
    assert_eq!(connect["available"], true, "{connect}");
    assert!(
        connect["reason"]
            .as_str()
            .is_some_and(|r| r.ends_with("(default route)")),
        "{connect}"
    );

    bus.emit(LOGIND, LOGIND_PATH, LOGIND_MANAGER, "PrepareForSleep", true);
    assert!(wait_until(PATIENCE, || {
        sessions_with(&home, "sleep")
            .first()
            .is_some_and(|s| s["outcome"] == "succeeded")
    }));
    let session = &sessions_with(&home, "sleep")[0];
    assert_eq!(session["trigger"], "pendingDisconnect");
    // Released once the session ended.
    assert!(wait_until(PATIENCE, || bus.inhibitors() == 0));
    // Resumed: taken again.
    bus.emit(
        LOGIND,
        LOGIND_PATH,
        LOGIND_MANAGER,
        "PrepareForSleep",
        false,
    );
    assert!(wait_until(PATIENCE, || bus.inhibitors() == 1));
    assert!(
        !trigger(&home.json(&["status", "--json"]), "pendingDisconnect")["lastFired"].is_null()
    );
}

#[test]
fn a_handler_past_the_deadline_is_cancelled_and_the_inhibitor_released_in_time() {
    let Some(bus) = bus_with(&["logind"]) else {
        return;
    };
    // logind lets a delay inhibitor hold the system 1.5 s here (the
    // template lacks the property): the configured 4 s would be too long.
    bus.add_property(
        LOGIND,
        LOGIND_PATH,
        LOGIND_MANAGER,
        "InhibitDelayMaxUSec",
        "t",
        "1500000",
    );
    let mut home = home_on(&bus, "");
    // 40 s if left alone.
    home.register_with("slow", &["--events", "pendingDisconnect"], HELD);
    home.start_daemon();
    assert!(wait_until(PATIENCE, || bus.inhibitors() == 1));
    assert!(wait_until(PATIENCE, || {
        trigger(&home.json(&["status", "--json"]), "pendingDisconnect")["reason"]
            == "logind's delay inhibitor is held (deadline 1s)"
    }));
    bus.emit(
        LOGIND,
        LOGIND_PATH,
        LOGIND_MANAGER,
        "PrepareForShutdown",
        true,
    );
    assert!(wait_until(PATIENCE, || {
        sessions_with(&home, "shutdown")
            .first()
            .is_some_and(|s| !s["outcome"].is_null())
    }));
    let session = &sessions_with(&home, "shutdown")[0];
    assert_eq!(session["outcome"], "cancelled", "{session}");
    let why = home.log(&["--session", session["id"].as_str().expect("id")]);
    assert!(
        why.iter().any(|e| e["text"] == "cancelled: deadline"),
        "{why:#?}"
    );
    // Given up at the deadline (logind notices the closed descriptor).
    assert!(wait_until(PATIENCE, || bus.inhibitors() == 0));
}

#[test]
fn network_and_idle_start_their_sessions_and_the_user_stops_idle_ones() {
    let Some(bus) = bus_with(&["logind", "networkmanager"]) else {
        return;
    };
    let mut home = home_on(
        &bus,
        "[network]\ndebounce = \"1s\"\n\n[idle]\nafter = \"1s\"\nrepeat = \"1h\"\n",
    );
    home.register_with("net", &["--events", "connect"], &["--items", "a"]);
    home.register_with("idler", &["--events", "idle"], HELD);
    // Offline at first.
    nm_state(&bus, "20");
    home.start_daemon();
    assert!(wait_until(PATIENCE, || {
        trigger(&home.json(&["status", "--json"]), "connect")["reason"] == "offline"
    }));
    // Online: after the debounce, a connect session.
    nm_state(&bus, "70");
    assert!(wait_until(PATIENCE, || {
        sessions_with(&home, "network connected")
            .first()
            .is_some_and(|s| s["outcome"] == "succeeded" && s["trigger"] == "connect")
    }));

    // Idle: after `[idle] after`, an idle session; the user comes back
    // while it runs: it is cancelled.
    bus.set(
        LOGIND,
        LOGIND_PATH,
        LOGIND_MANAGER,
        "IdleHint",
        &["b", "true"],
    );
    assert!(wait_until(PATIENCE, || {
        home.json(&["status", "--json"])["sessions"]
            .as_array()
            .is_some_and(|s| {
                s.iter()
                    .any(|s| s["trigger"] == "idle" && s["state"] == "running")
            })
    }));
    bus.set(
        LOGIND,
        LOGIND_PATH,
        LOGIND_MANAGER,
        "IdleHint",
        &["b", "false"],
    );
    assert!(wait_until(PATIENCE, || {
        sessions_with(&home, "idle for 1s")
            .first()
            .is_some_and(|s| !s["outcome"].is_null())
    }));
    let idle = &sessions_with(&home, "idle for 1s")[0];
    assert_eq!(idle["outcome"], "cancelled");
    let session = idle["id"].as_str().expect("id");
    let why = home.log(&["--session", session]);
    assert!(
        why.iter()
            .any(|e| e["text"] == "cancelled: user active" && e["cause"] == "notice"),
        "{why:#?}"
    );
}

#[test]
fn on_battery_scheduled_sessions_wait_and_run_on_mains() {
    let Some(bus) = bus_with(&["upower"]) else {
        return;
    };
    let mut home = home_on(&bus, "");
    home.register("quick", &["--items", "a"]);
    bus.set(
        UPOWER,
        UPOWER_PATH,
        "org.freedesktop.UPower",
        "OnBattery",
        &["b", "true"],
    );
    home.ok(&["schedule", "add", "often", "--every", "1s", "quick"]);
    home.start_daemon();
    assert!(wait_until(PATIENCE, || {
        let status = home.json(&["status", "--json"]);
        trigger(&status, "battery")["reason"] == "on battery"
            && status["registrations"][0]["state"] == "deferred"
            && status["registrations"][0]["nextReason"] == "schedule often, held: on battery"
    }));
    assert!(sessions_with(&home, "schedule often").is_empty());
    bus.set(
        UPOWER,
        UPOWER_PATH,
        "org.freedesktop.UPower",
        "OnBattery",
        &["b", "false"],
    );
    // The timer looks again within a minute; a reload makes it now.
    home.reload_daemon();
    assert!(wait_until(PATIENCE, || !sessions_with(
        &home,
        "schedule often"
    )
    .is_empty()));
}

#[test]
fn a_daemon_started_in_a_user_session_runs_logon() {
    let Some(bus) = bus_with(&["logind"]) else {
        return;
    };
    let uid = rustix::process::getuid().as_raw();
    bus.add_session("c1", uid);
    let mut home = home_on(&bus, "");
    home.register_with("mail", &["--events", "connect"], &["--items", "a"]);
    home.register("manual-only", &["--items", "b"]);
    home.start_daemon();
    assert!(wait_until(PATIENCE, || {
        sessions_with(&home, "logon")
            .first()
            .is_some_and(|s| s["outcome"] == "succeeded")
    }));
    let session = &sessions_with(&home, "logon")[0];
    assert_eq!(session["trigger"], "connect");
    // Only the registration that opted in took part.
    assert_eq!(session["counts"]["succeeded"], 1);

    // The last session ends: logoff, on the pendingDisconnect path.
    home.register_with(
        "mail",
        &["--events", "connect,pendingDisconnect"],
        &["--items", "a"],
    );
    let path = "/org/freedesktop/login1/session/c1";
    bus.busctl(&["call", LOGIND, LOGIND_PATH, MOCK, "RemoveObject", "s", path])
        .expect("RemoveObject");
    bus.session_signal("SessionRemoved", "c1");
    assert!(wait_until(PATIENCE, || {
        sessions_with(&home, "logoff")
            .first()
            .is_some_and(|s| s["outcome"] == "succeeded" && s["trigger"] == "pendingDisconnect")
    }));

    // A user session appears again (the mock's AddSession emits nothing:
    // the signal is sent by hand): logon.
    bus.add_session("c2", uid);
    bus.session_signal("SessionNew", "c2");
    assert!(wait_until(PATIENCE, || sessions_with(&home, "logon").len() == 2));
}

/// Switches the NetworkManager mock's global state.
fn nm_state(bus: &Bus, state: &str) {
    bus.busctl(&[
        "call",
        NM,
        NM_PATH,
        MOCK,
        "SetGlobalConnectionState",
        "u",
        state,
    ])
    .expect("SetGlobalConnectionState");
}

#[test]
fn a_metered_link_holds_scheduled_sessions_and_a_falling_network_runs_pending_disconnect() {
    let Some(bus) = bus_with(&["networkmanager"]) else {
        return;
    };
    // The template has no `Metered`: metered (NM_METERED_YES) from the start.
    bus.add_property(
        NM,
        NM_PATH,
        "org.freedesktop.NetworkManager",
        "Metered",
        "u",
        "1",
    );
    let mut home = home_on(&bus, "");
    home.register("quick", &["--items", "a"]);
    home.register_with(
        "mail",
        &["--events", "pendingDisconnect"],
        &["--items", "a"],
    );
    home.ok(&["schedule", "add", "often", "--every", "1s", "quick"]);
    home.start_daemon();
    assert!(wait_until(PATIENCE, || {
        let status = home.json(&["status", "--json"]);
        let quick = status["registrations"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "quick").cloned())
            .unwrap_or_default();
        trigger(&status, "connect")["reason"] == "online, metered"
            && quick["nextReason"] == "schedule often, held: metered connection"
    }));
    assert!(sessions_with(&home, "schedule often").is_empty());
    // Not metered any more (NM_METERED_NO): the schedule runs.
    bus.set(
        NM,
        NM_PATH,
        "org.freedesktop.NetworkManager",
        "Metered",
        &["u", "2"],
    );
    home.reload_daemon();
    assert!(wait_until(PATIENCE, || !sessions_with(
        &home,
        "schedule often"
    )
    .is_empty()));

    // The network going down: a pendingDisconnect session, best effort.
    home.ok(&["schedule", "remove", "often"]);
    nm_state(&bus, "30");
    assert!(wait_until(PATIENCE, || {
        sessions_with(&home, "network going down")
            .first()
            .is_some_and(|s| s["outcome"] == "succeeded" && s["trigger"] == "pendingDisconnect")
    }));
}

#[test]
fn a_constraint_lost_mid_session_cancels_it_and_it_runs_again_later() {
    let Some(bus) = bus_with(&["upower"]) else {
        return;
    };
    let mut home = home_on(&bus, "");
    // 40 s if left alone.
    home.register("slow", HELD);
    home.ok(&["schedule", "add", "often", "--every", "1s", "slow"]);
    home.start_daemon();
    let running = |home: &TestHome| {
        home.json(&["status", "--json"])["sessions"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["state"] == "running"))
    };
    assert!(wait_until(PATIENCE, || running(&home)));
    // One run is enough: no more firing.
    home.ok(&["schedule", "remove", "often"]);
    bus.set(
        UPOWER,
        UPOWER_PATH,
        "org.freedesktop.UPower",
        "OnBattery",
        &["b", "true"],
    );
    assert!(wait_until(PATIENCE, || {
        sessions_with(&home, "schedule often")
            .first()
            .is_some_and(|s| s["outcome"] == "cancelled")
    }));
    let first = &sessions_with(&home, "schedule often")[0];
    let why = home.log(&["--session", first["id"].as_str().expect("id")]);
    assert!(
        why.iter().any(|e| e["text"] == "cancelled: on battery"),
        "{why:#?}"
    );
    // On mains again: the same session runs again.
    bus.set(
        UPOWER,
        UPOWER_PATH,
        "org.freedesktop.UPower",
        "OnBattery",
        &["b", "false"],
    );
    assert!(wait_until(PATIENCE, || sessions_with(
        &home,
        "schedule often"
    )
    .len()
        == 2));
    assert!(wait_until(PATIENCE, || running(&home)));
    home.ok(&["cancel"]);
}

#[test]
fn gnome_s_idle_monitor_is_the_idle_source_when_it_answers() {
    let Some(python) = dbusmock_python() else {
        return;
    };
    let Some(system) = bus_with(&["logind"]) else {
        return;
    };
    // GNOME's idle monitor on a session bus of its own.
    let mut session = Bus::start();
    let (service, path, interface) = (
        "org.gnome.Mutter.IdleMonitor",
        "/org/gnome/Mutter/IdleMonitor/Core",
        "org.gnome.Mutter.IdleMonitor",
    );
    session.mock_object(&python, service, path, interface);
    session.add_property(service, path, interface, "Idletime", "t", "0");
    session
        .busctl(&[
            "call",
            service,
            path,
            MOCK,
            "AddMethod",
            "sssss",
            interface,
            "GetIdletime",
            "",
            "t",
            "ret = self.Get('org.gnome.Mutter.IdleMonitor', 'Idletime')",
        ])
        .expect("AddMethod");
    let mut home = home_on(&system, "[idle]\nafter = \"1s\"\n");
    home.set_env("DBUS_SESSION_BUS_ADDRESS", &session.address);
    home.register_with("idler", &["--events", "idle"], HELD);
    home.start_daemon();
    assert!(wait_until(PATIENCE, || {
        trigger(&home.json(&["status", "--json"]), "idle")["reason"] == "the user is active"
    }));
    // No input for a minute (logind's hint stays false: GNOME's time wins).
    session.set(service, path, interface, "Idletime", &["t", "60000"]);
    assert!(wait_until(PATIENCE, || {
        home.json(&["status", "--json"])["sessions"]
            .as_array()
            .is_some_and(|s| {
                s.iter()
                    .any(|s| s["trigger"] == "idle" && s["state"] == "running")
            })
    }));
    // Input again: the idle session is cancelled.
    session.set(service, path, interface, "Idletime", &["t", "10"]);
    assert!(wait_until(PATIENCE, || {
        sessions_with(&home, "idle for 1s")
            .first()
            .is_some_and(|s| s["outcome"] == "cancelled")
    }));
}

const NOTIFICATIONS: &str = "org.freedesktop.Notifications";
const NOTIFICATIONS_PATH: &str = "/org/freedesktop/Notifications";

/// How many `Notify` calls the mock notification server got.
fn notifications(session: &Bus) -> usize {
    session
        .calls(NOTIFICATIONS, NOTIFICATIONS_PATH)
        .matches("\"Notify\"")
        .count()
}

#[test]
fn a_failed_session_raises_one_notification_and_warnings_none() {
    let Some(python) = dbusmock_python() else {
        return;
    };
    let mut session = Bus::start();
    session.mock_session(
        &python,
        "notification_daemon",
        NOTIFICATIONS,
        NOTIFICATIONS_PATH,
    );
    let mut home = TestHome::inline();
    home.set_env("DBUS_SESSION_BUS_ADDRESS", &session.address);
    // Warnings only: `log` logs a warning and information, then succeeds.
    home.register("chatty", &["--scenario", "log", "--items", "a"]);
    home.register("broken", &["--items", "a,b,c", "--fail", "b,c"]);
    home.start_daemon();
    assert!(wait_until(PATIENCE, || {
        home.json(&["status", "--json"])["daemon"]["notifications"]["available"] == true
    }));
    assert_eq!(home.sync(&["chatty"]).outcome(), "succeeded");
    assert_eq!(home.sync(&["broken"]).outcome(), "failed");
    assert!(wait_until(PATIENCE, || notifications(&session) >= 1));
    let calls = session.calls(NOTIFICATIONS, NOTIFICATIONS_PATH);
    assert_eq!(
        notifications(&session),
        1,
        "one, for the failed session: {calls}"
    );
    assert!(calls.contains("broken: 2 items failed to sync"), "{calls}");
    assert!(
        !calls.contains("chatty"),
        "a warning never notifies: {calls}"
    );
    // Its default action opens the dashboard.
    assert!(calls.contains("\"default\""), "{calls}");
}

#[test]
fn without_a_notification_server_nothing_is_shown_and_status_says_so() {
    let session = Bus::start();
    let mut home = TestHome::inline();
    home.set_env("DBUS_SESSION_BUS_ADDRESS", &session.address);
    home.register("broken", &["--items", "a", "--fail", "a"]);
    home.start_daemon();
    assert!(wait_until(PATIENCE, || {
        let n = home.json(&["status", "--json"])["daemon"]["notifications"].clone();
        n["available"] == false
            && n["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no notification server"))
    }));
    assert_eq!(home.sync(&["broken"]).outcome(), "failed");
    // The daemon goes on: the next session runs as well.
    assert_eq!(home.sync(&["broken"]).outcome(), "failed");
    let out = home.stop_daemon();
    assert!(out.success(), "{out:?}");
}
