//! Private D-Bus buses with python-dbusmock services on them, for the
//! trigger tests and the daemon's benchmark: a `dbus-daemon` used as the
//! system bus, mocks of logind, NetworkManager and UPower, driven with
//! `busctl`. Every process is killed and reaped on drop. Panics on failure,
//! as test code does.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// logind's bus name and object.
pub const LOGIND: &str = "org.freedesktop.login1";
/// logind's manager object.
pub const LOGIND_PATH: &str = "/org/freedesktop/login1";
/// logind's manager interface.
pub const LOGIND_MANAGER: &str = "org.freedesktop.login1.Manager";
/// NetworkManager's bus name.
pub const NM: &str = "org.freedesktop.NetworkManager";
/// NetworkManager's object.
pub const NM_PATH: &str = "/org/freedesktop/NetworkManager";
/// UPower's bus name.
pub const UPOWER: &str = "org.freedesktop.UPower";
/// UPower's object.
pub const UPOWER_PATH: &str = "/org/freedesktop/UPower";
/// The control interface of every dbusmock object.
pub const MOCK: &str = "org.freedesktop.DBus.Mock";

/// The interpreter with python-dbusmock: `SYNCMGR_TEST_DBUSMOCK_PYTHON`
/// (set by `scripts/test`), or `None` when it is not set.
pub fn dbusmock_python() -> Option<PathBuf> {
    std::env::var_os("SYNCMGR_TEST_DBUSMOCK_PYTHON").map(PathBuf::from)
}

/// A child process killed and reaped on drop.
#[derive(Debug)]
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private bus with mock services on it.
#[derive(Debug)]
pub struct Bus {
    /// Its address, for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub address: String,
    // Dropped in order: the mocks, then the bus.
    mocks: Vec<Owned>,
    _daemon: Owned,
}

impl Bus {
    /// Starts `dbus-daemon` (a session-type bus, which serves as a system
    /// bus for whoever is pointed at it).
    pub fn start() -> Bus {
        let mut daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("needs dbus-daemon (Debian's dbus-daemon package)");
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

    /// Starts a dbusmock template as a system service and waits (15 s at
    /// most) until it answers.
    pub fn mock(&mut self, python: &Path, template: &str, service: &str, path: &str) {
        self.spawn_mock(
            python,
            &["--system", "-t", template],
            "DBUS_SYSTEM_BUS_ADDRESS",
            service,
            path,
        );
    }

    /// Starts a dbusmock template as a session service (such as
    /// `notification_daemon`) and waits until it answers.
    pub fn mock_session(&mut self, python: &Path, template: &str, service: &str, path: &str) {
        self.spawn_mock(
            python,
            &["--session", "-t", template],
            "DBUS_SESSION_BUS_ADDRESS",
            service,
            path,
        );
    }

    /// The methods a mock object was called with, as `busctl` prints
    /// dbusmock's `GetCalls` (one text; tests look for names in it).
    pub fn calls(&self, service: &str, path: &str) -> String {
        self.busctl(&["call", service, path, MOCK, "GetCalls"])
            .unwrap_or_default()
    }

    /// Starts a bare dbusmock object (`service` at `path` with
    /// `interface`, methods and properties to add through [`MOCK`]) as a
    /// session service, and waits until it answers.
    pub fn mock_object(&mut self, python: &Path, service: &str, path: &str, interface: &str) {
        self.spawn_mock(
            python,
            &["--session", service, path, interface],
            "DBUS_SESSION_BUS_ADDRESS",
            service,
            path,
        );
    }

    fn spawn_mock(
        &mut self,
        python: &Path,
        args: &[&str],
        bus_var: &str,
        service: &str,
        path: &str,
    ) {
        let child = Command::new(python)
            .args(["-m", "dbusmock"])
            .args(args)
            .env(bus_var, &self.address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python with dbusmock");
        self.mocks.push(Owned(child));
        let template = args.last().copied().unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self
            .busctl(&["call", service, path, "org.freedesktop.DBus.Peer", "Ping"])
            .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "the {template} mock did not answer"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `busctl --address=BUS ARGS`: its stdout, or `None` when it failed.
    pub fn busctl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("busctl")
            .arg(format!("--address={}", self.address))
            .args(args)
            .output()
            .expect("needs busctl (systemd)");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Emits a mock's signal with one boolean argument.
    pub fn emit(&self, service: &str, path: &str, interface: &str, signal: &str, arg: bool) {
        let arg = if arg { "true" } else { "false" };
        self.busctl(&[
            "call",
            service,
            path,
            MOCK,
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

    /// Sets a mock's property (`value`: busctl's signature and value).
    pub fn set(&self, service: &str, path: &str, interface: &str, property: &str, value: &[&str]) {
        let mut args = vec!["set-property", service, path, interface, property];
        args.extend_from_slice(value);
        self.busctl(&args).expect("set-property");
    }

    /// Adds a property the template lacks (`signature` and `value` as
    /// busctl writes them).
    pub fn add_property(
        &self,
        service: &str,
        path: &str,
        interface: &str,
        name: &str,
        signature: &str,
        value: &str,
    ) {
        self.busctl(&[
            "call",
            service,
            path,
            MOCK,
            "AddProperty",
            "ssv",
            interface,
            name,
            signature,
            value,
        ])
        .expect("AddProperty");
    }

    /// Adds a user session to the logind mock (it emits nothing).
    pub fn add_session(&self, id: &str, uid: u32) {
        let uid = uid.to_string();
        self.busctl(&[
            "call",
            LOGIND,
            LOGIND_PATH,
            MOCK,
            "AddSession",
            "ssusb",
            id,
            "seat0",
            &uid,
            "someone",
            "true",
        ])
        .expect("AddSession");
    }

    /// Emits logind's `SessionNew` or `SessionRemoved` for session `id`.
    pub fn session_signal(&self, signal: &str, id: &str) {
        let path = format!("{LOGIND_PATH}/session/{id}");
        self.busctl(&[
            "call",
            LOGIND,
            LOGIND_PATH,
            MOCK,
            "EmitSignal",
            "sssav",
            LOGIND_MANAGER,
            signal,
            "so",
            "2",
            "s",
            id,
            "o",
            &path,
        ])
        .expect("EmitSignal");
    }

    /// How many inhibitors the logind mock holds.
    pub fn inhibitors(&self) -> usize {
        let out = self
            .busctl(&[
                "call",
                LOGIND,
                LOGIND_PATH,
                LOGIND_MANAGER,
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
