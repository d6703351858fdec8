//! Integration tests of the `syncmgr` binary: every test runs the real
//! command line in a fresh home, with the scripted handler
//! (`syncmgr-test-handler`, package `syncmgr-testkit`) as real child
//! processes, and checks what the contracts (`docs/cli.md`,
//! `docs/protocol.md`) promise: exit codes, JSON shapes, item statuses, log
//! entries, history.
//!
//! One test binary (as cargo's and ripgrep's own suites do) so that it links
//! once; the modules group the tests by what they prove:
//!
//! - [`util`]: the test kit. `TestHome` (a fresh short home under /tmp),
//!   `Cmd`/`Outcome` (run `syncmgr`, report command, status, stdout and stderr
//!   on any failure), `SyncRun` (parsed `sync --json` events), `Background`
//!   (a running session, read event by event, killed on drop), `wait_until`
//!   (poll with a deadline), and the handler programs built once per
//!   process: the test handler and the Rust SDK's examples.
//! - [`lifecycle`]: register → handlers → items → sync → history → unregister;
//!   a handler that declines.
//! - [`choices`]: per-event item choices, handler defaults, `NAME/ITEM`
//!   targets, opt-in events.
//! - [`cancel`]: `syncmgr cancel` from another process: one item, one handler,
//!   everything, nothing running; the grace-period kill of a handler that
//!   ignores cancels.
//! - [`contract`]: every JSON shape of `docs/cli.md` against real output.
//! - [`daemon`]: the daemon: sessions in it look like inline ones, one
//!   daemon per home, `--detach`, coalescing and `--replace`, `status`,
//!   `events`, SIGTERM and SIGKILL. With `SYNCMGR_TEST_DAEMON=1` every
//!   other test's home has a daemon too (except those about the inline
//!   process itself).
//! - [`dashboard`]: the web dashboard: every API route in its documented
//!   shape, every security rule, the event stream and its replay, metrics,
//!   the login link.
//! - [`faults`]: handlers that misbehave (silent, crash, garbage, bad
//!   requests, never report, failing prepare/synchronize, a missing program)
//!   fail only their own items, with log entries saying why.
//! - [`results_log`]: the results log: handler entries, assigned error ids,
//!   `deleteLogError`, filters, `log show` (the retry path) and `log delete`.
//! - [`signals`]: Ctrl-C (exit 130, clean cancel) and SIGKILL of the manager
//!   (interrupted session, valid database, stale socket, orphaned handler).
//! - [`hardening`]: what a new user's trial broke (issue 8): overlapping
//!   registrations, one session per registration, SIGHUP and SIGTERM,
//!   unknown items, a stalled stdout, names with escape sequences.
//! - [`triggers`]: the operating system's triggers against private D-Bus
//!   buses with python-dbusmock's logind, NetworkManager and UPower.
//! - [`usage`]: bad usage and bad input exit 2 with a clear message.
//! - [`browser`]: the dashboard in headless Chromium over WebDriver:
//!   live progress, Stop, a per-trigger box, a confirmed guard; screenshots.
//! - [`builtins`]: the built-in folder and command handlers through
//!   `register`, and `syncmgr demo`.
//! - [`check_handler`]: `syncmgr check-handler` passes every example handler
//!   (Rust SDK, Python SDK, none), fails each misbehaviour of the test
//!   handler on the rule it breaks, in bounded time.

mod browser;
mod builtins;
mod cancel;
mod check_handler;
mod choices;
mod conflicts;
mod contract;
mod daemon;
mod dashboard;
mod faults;
mod hardening;
mod lifecycle;
mod results_log;
mod signals;
mod triggers;
mod usage;
mod util;
