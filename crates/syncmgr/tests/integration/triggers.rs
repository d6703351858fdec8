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

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::util::{PATIENCE, TestHome, wait_until};

/// The interpreter with python-dbusmock, or `None` when the tests may be
/// skipped (`SYNCMGR_TEST_SKIP_TOOLS` lists `dbusmock`).
fn dbusmock_python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("SYNCMGR_TEST_DBUSMOCK_PYTHON") {
        return Some(PathBuf::from(python));
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

/// A child process killed and reaped on drop.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private bus with mock services on it.
struct Bus {
    address: String,
    // Dropped in order: the mocks, then the bus.
    mocks: Vec<Owned>,
    _daemon: Owned,
}

impl Bus {
    fn start() -> Bus {
        let mut daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("this test needs dbus-daemon (Debian's dbus-daemon package)");
        let mut line = String::new();
        BufReader::new(daemon.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the bus's address");
        Bus {
            address: line.trim().to_owned(),
            mocks: Vec::new(),
            _daemon: Owned(daemon),
        }
    }

    /// Starts a dbusmock template as a system service, and waits until it
    /// answers.
    fn mock(&mut self, python: &Path, template: &str, service: &str, path: &str) {
        let child = Command::new(python)
            .args(["-m", "dbusmock", "--system", "-t", template])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python with dbusmock");
        self.mocks.push(Owned(child));
        assert!(
            wait_until(PATIENCE, || {
                self.busctl(&["call", service, path, "org.freedesktop.DBus.Peer", "Ping"])
                    .is_some()
            }),
            "the {template} mock did not answer"
        );
    }

    /// `busctl --address=BUS ARGS`: its stdout, or `None` when it failed.
    fn busctl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("busctl")
            .arg(format!("--address={}", self.address))
            .args(args)
            .output()
            .expect("this test needs busctl (systemd)");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn emit(&self, service: &str, path: &str, interface: &str, signal: &str, arg: &str) {
        self.busctl(&[
            "call",
            service,
            path,
            "org.freedesktop.DBus.Mock",
            "EmitSignal",
            "sssav",
            interface,
            signal,
            "b",
            "1",
            "b",
            arg,
        ])
        .expect("EmitSignal");
    }

    fn set(&self, service: &str, path: &str, interface: &str, property: &str, value: &[&str]) {
        let mut args = vec!["set-property", service, path, interface, property];
        args.extend_from_slice(value);
        self.busctl(&args).expect("set-property");
    }

    /// How many inhibitors logind holds.
    fn inhibitors(&self) -> usize {
        let out = self
            .busctl(&[
                "call",
                LOGIND,
                LOGIND_PATH,
                "org.freedesktop.login1.Manager",
                "ListInhibitors",
            ])
            .expect("ListInhibitors");
        // `a(ssssuu) N ...`
        out.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot read {out}"))
    }
}

const LOGIND: &str = "org.freedesktop.login1";
const LOGIND_PATH: &str = "/org/freedesktop/login1";
const NM: &str = "org.freedesktop.NetworkManager";
const NM_PATH: &str = "/org/freedesktop/NetworkManager";
const UPOWER: &str = "org.freedesktop.UPower";
const UPOWER_PATH: &str = "/org/freedesktop/UPower";

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
    let Some(python) = dbusmock_python() else {
        return;
    };
    let mut bus = Bus::start();
    bus.mock(&python, "logind", LOGIND, LOGIND_PATH);
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
    // No NetworkManager, no UPower on this bus: unavailable, not an error.
    let connect = trigger(&status, "connect");
    assert_eq!(connect["available"], false);
    assert!(
        connect["reason"]
            .as_str()
            .is_some_and(|r| r.contains("NetworkManager does not answer")),
        "{connect}"
    );

    bus.emit(
        LOGIND,
        LOGIND_PATH,
        "org.freedesktop.login1.Manager",
        "PrepareForSleep",
        "true",
    );
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
        "org.freedesktop.login1.Manager",
        "PrepareForSleep",
        "false",
    );
    assert!(wait_until(PATIENCE, || bus.inhibitors() == 1));
    assert!(
        !trigger(&home.json(&["status", "--json"]), "pendingDisconnect")["lastFired"].is_null()
    );
}

#[test]
fn a_handler_past_the_deadline_is_cancelled_and_the_inhibitor_released_in_time() {
    let Some(python) = dbusmock_python() else {
        return;
    };
    let mut bus = Bus::start();
    bus.mock(&python, "logind", LOGIND, LOGIND_PATH);
    let mut home = home_on(&bus, "[disconnect]\ndeadline = \"1s\"\n");
    // 40 s if left alone.
    home.register_with(
        "slow",
        &["--events", "pendingDisconnect"],
        &["--items", "a", "--steps", "1000", "--step-ms", "40"],
    );
    home.start_daemon();
    assert!(wait_until(PATIENCE, || bus.inhibitors() == 1));
    bus.emit(
        LOGIND,
        LOGIND_PATH,
        "org.freedesktop.login1.Manager",
        "PrepareForShutdown",
        "true",
    );
    assert!(wait_until(PATIENCE, || {
        sessions_with(&home, "shutdown")
            .first()
            .is_some_and(|s| !s["outcome"].is_null())
    }));
    let session = &sessions_with(&home, "shutdown")[0];
    assert_eq!(session["outcome"], "cancelled", "{session}");
    // Given up at the deadline (logind notices the closed descriptor).
    assert!(wait_until(PATIENCE, || bus.inhibitors() == 0));
}

#[test]
fn network_and_idle_start_their_sessions_and_the_user_stops_idle_ones() {
    let Some(python) = dbusmock_python() else {
        return;
    };
    let mut bus = Bus::start();
    bus.mock(&python, "logind", LOGIND, LOGIND_PATH);
    bus.mock(&python, "networkmanager", NM, NM_PATH);
    let mut home = home_on(
        &bus,
        "[network]\ndebounce = \"1s\"\n\n[idle]\nafter = \"1s\"\nrepeat = \"1h\"\n",
    );
    home.register_with("net", &["--events", "connect"], &["--items", "a"]);
    home.register_with(
        "idler",
        &["--events", "idle"],
        &["--items", "a", "--steps", "1000", "--step-ms", "40"],
    );
    // Offline at first.
    bus.busctl(&[
        "call",
        NM,
        NM_PATH,
        "org.freedesktop.DBus.Mock",
        "SetGlobalConnectionState",
        "u",
        "20",
    ])
    .expect("offline");
    home.start_daemon();
    assert!(wait_until(PATIENCE, || {
        trigger(&home.json(&["status", "--json"]), "connect")["reason"] == "offline"
    }));
    // Online: after the debounce, a connect session.
    bus.busctl(&[
        "call",
        NM,
        NM_PATH,
        "org.freedesktop.DBus.Mock",
        "SetGlobalConnectionState",
        "u",
        "70",
    ])
    .expect("online");
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
        "org.freedesktop.login1.Manager",
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
        "org.freedesktop.login1.Manager",
        "IdleHint",
        &["b", "false"],
    );
    assert!(wait_until(PATIENCE, || {
        sessions_with(&home, "idle for 1s")
            .first()
            .is_some_and(|s| !s["outcome"].is_null())
    }));
    assert_eq!(
        sessions_with(&home, "idle for 1s")[0]["outcome"],
        "cancelled"
    );
}

#[test]
fn on_battery_scheduled_sessions_wait_and_run_on_mains() {
    let Some(python) = dbusmock_python() else {
        return;
    };
    let mut bus = Bus::start();
    bus.mock(&python, "upower", UPOWER, UPOWER_PATH);
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
    home.ok(&["schedule", "list"]);
    let pid = home.daemon_pid().expect("daemon").to_string();
    Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(wait_until(PATIENCE, || !sessions_with(
        &home,
        "schedule often"
    )
    .is_empty()));
}

#[test]
fn a_daemon_started_in_a_user_session_runs_logon() {
    let Some(python) = dbusmock_python() else {
        return;
    };
    let mut bus = Bus::start();
    bus.mock(&python, "logind", LOGIND, LOGIND_PATH);
    let uid = rustix::process::getuid().as_raw().to_string();
    bus.busctl(&[
        "call",
        LOGIND,
        LOGIND_PATH,
        "org.freedesktop.DBus.Mock",
        "AddSession",
        "ssusb",
        "c1",
        "seat0",
        &uid,
        "someone",
        "true",
    ])
    .expect("AddSession");
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
}
