//! The manager: everything about running sessions that a host (the inline
//! `syncmgr sync`, the daemon, later the web server) shares.
//!
//! - [`home`]: where state lives, and the locks (one session per
//!   registration, one daemon per home);
//! - [`handlers`] and [`builtin`]: a stored registration turned into a
//!   running handler;
//! - [`install`]: the daemon as a systemd user service or launchd agent;
//! - [`items`]: handlers asked for their items, several at once;
//! - [`plan`]: `sync`'s targets turned into what a session syncs;
//! - [`schedule`]: when each schedule is due (pure functions of the clock);
//! - `sources` (Linux): logind, NetworkManager and UPower over D-Bus;
//! - [`triggers`]: the operating system's triggers as rules (pure);
//! - [`session`]: one session from plan to stored outcome, its events for
//!   any number of observers;
//! - [`control`]: the per-session control socket (cancels from other
//!   processes);
//! - [`daemon`] and [`client`]: the daemon, its socket, and how commands
//!   talk to it;
//! - [`notify`]: desktop notifications of failed sessions;
//! - [`views`]: what every host shows, in the shapes of `syncmgr_api`.
//!
//! It knows nothing of terminals or HTTP: hosts show what it reports.

pub mod backoff;
pub mod builtin;
pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
pub mod error;
pub mod handlers;
pub mod home;
pub mod install;
pub mod items;
pub mod notify;
pub mod plan;
pub mod schedule;
pub mod session;
#[cfg(target_os = "linux")]
pub mod sources;
pub mod triggers;
pub mod views;

pub use error::{ManagerError, Result};
pub use home::Home;
