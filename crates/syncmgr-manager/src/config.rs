//! `config.toml`: the daemon's settings (`--home DIR` → `DIR/config.toml`;
//! otherwise the XDG config directory's `syncmgr/config.toml`).
//!
//! Every key is optional. An unknown key or a bad value is an error that
//! names the key and its line (the daemon refuses to start, a running one
//! keeps its settings on a bad reload). Durations take the one syntax of
//! the command line (`90s`, `5m`, `1h30m`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{ManagerError, Result};

/// The settings, with their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[daemon] max_concurrent`: sessions running at once.
    pub max_concurrent: usize,
    /// `[backoff] initial`: the first wait after an automatic session failed.
    pub backoff_initial: Duration,
    /// `[backoff] max`: the longest wait.
    pub backoff_max: Duration,
    /// `[retention] history`: how long finished sessions are kept.
    pub keep_history: Duration,
    /// `[retention] sessions`: the most sessions kept (the newest).
    pub keep_sessions: usize,
    /// `[retention] information`: how long information entries of the
    /// results log are kept (warnings and errors stay until acted on or
    /// deleted).
    pub keep_information: Duration,
    /// `[idle] after`, `[idle] repeat`, `[idle] on_battery`,
    /// `[network] debounce`, `[network] metered`, `[disconnect] deadline`:
    /// read and checked now, used by the operating system's triggers.
    pub triggers: Triggers,
    /// `[web]`: the dashboard.
    pub web: Web,
    /// `[notifications] enabled`: failures raise desktop notifications.
    pub notifications: bool,
}

/// The dashboard's settings (`[web]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Web {
    /// `enabled`: whether the daemon serves it at all.
    pub enabled: bool,
    /// `listen`: the address (`127.0.0.1:8734`).
    pub listen: String,
    /// `allow_remote`: a non-loopback `listen` is allowed.
    pub allow_remote: bool,
    /// `hostname`: a name, besides the loopback ones, that the `Host`
    /// header may carry (a reverse proxy's).
    pub hostname: Option<String>,
    /// `metrics_without_auth`: `/metrics` is open to anyone who reaches it.
    pub metrics_without_auth: bool,
}

impl Web {
    /// The address to listen on, checked: a non-loopback one needs
    /// `allow_remote` (anyone who reaches the dashboard can run syncs).
    pub fn address(&self) -> Result<std::net::SocketAddr, String> {
        let address: std::net::SocketAddr = self.listen.parse().map_err(|_| {
            format!(
                "[web] listen must be an address and port such as {DEFAULT_WEB_LISTEN}, not {:?}",
                self.listen
            )
        })?;
        if !address.ip().is_loopback() && !self.allow_remote {
            return Err(format!(
                "[web] listen {address} is reachable from other machines: set [web] allow_remote = true to allow it"
            ));
        }
        Ok(address)
    }
}

/// Where the dashboard listens unless told otherwise.
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:8734";

/// The settings of the operating system's triggers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triggers {
    /// `[idle] after`.
    pub idle_after: Duration,
    /// `[idle] repeat`.
    pub idle_repeat: Duration,
    /// `[idle] on_battery`.
    pub idle_on_battery: bool,
    /// `[schedule] on_battery`: scheduled sessions run on battery too.
    pub schedule_on_battery: bool,
    /// `[network] debounce`.
    pub network_debounce: Duration,
    /// `[network] metered`.
    pub network_metered: bool,
    /// `[disconnect] deadline`.
    pub disconnect_deadline: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_concurrent: 4,
            backoff_initial: Duration::from_secs(30),
            backoff_max: Duration::from_secs(3600),
            keep_history: Duration::from_secs(90 * 24 * 3600),
            keep_sessions: 10_000,
            keep_information: Duration::from_secs(30 * 24 * 3600),
            triggers: Triggers {
                idle_after: Duration::from_secs(15 * 60),
                idle_repeat: Duration::from_secs(3600),
                idle_on_battery: false,
                schedule_on_battery: false,
                network_debounce: Duration::from_secs(5),
                network_metered: false,
                disconnect_deadline: Duration::from_secs(4),
            },
            web: Web {
                enabled: true,
                listen: DEFAULT_WEB_LISTEN.to_owned(),
                allow_remote: false,
                hostname: None,
                metrics_without_auth: false,
            },
            notifications: true,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    daemon: DaemonSection,
    #[serde(default)]
    backoff: BackoffSection,
    #[serde(default)]
    retention: RetentionSection,
    #[serde(default)]
    idle: IdleSection,
    #[serde(default)]
    schedule: ScheduleSection,
    #[serde(default)]
    network: NetworkSection,
    #[serde(default)]
    disconnect: DisconnectSection,
    #[serde(default)]
    web: WebSection,
    #[serde(default)]
    notifications: NotificationsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebSection {
    enabled: Option<bool>,
    listen: Option<String>,
    allow_remote: Option<bool>,
    hostname: Option<String>,
    metrics_without_auth: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotificationsSection {
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonSection {
    max_concurrent: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffSection {
    #[serde(default, deserialize_with = "duration")]
    initial: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    max: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSection {
    #[serde(default, deserialize_with = "duration")]
    history: Option<Duration>,
    sessions: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    information: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdleSection {
    #[serde(default, deserialize_with = "duration")]
    after: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    repeat: Option<Duration>,
    on_battery: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleSection {
    on_battery: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkSection {
    #[serde(default, deserialize_with = "duration")]
    debounce: Option<Duration>,
    metered: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectSection {
    #[serde(default, deserialize_with = "duration")]
    deadline: Option<Duration>,
}

/// A duration in the command line's syntax; the error names the value (the
/// TOML error around it names the key and line).
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    syncmgr_core::duration::parse(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Where the configuration of a home is.
pub fn path(explicit_home: Option<&Path>) -> Option<PathBuf> {
    match explicit_home {
        Some(home) => Some(home.join("config.toml")),
        None => directories::BaseDirs::new().map(|b| b.config_dir().join("syncmgr/config.toml")),
    }
}

impl Config {
    /// Reads `path`; a missing file is the defaults.
    pub fn load(path: &Path) -> Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text)
                .map_err(|e| ManagerError::usage(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(ManagerError::io(
                format!("cannot read {}", path.display()),
                e,
            )),
        }
    }

    /// Parses the text of a configuration file.
    pub fn parse(text: &str) -> Result<Config, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        let d = Config::default();
        let config = Config {
            max_concurrent: file.daemon.max_concurrent.unwrap_or(d.max_concurrent),
            backoff_initial: file.backoff.initial.unwrap_or(d.backoff_initial),
            backoff_max: file.backoff.max.unwrap_or(d.backoff_max),
            keep_history: file.retention.history.unwrap_or(d.keep_history),
            keep_sessions: file.retention.sessions.unwrap_or(d.keep_sessions),
            keep_information: file.retention.information.unwrap_or(d.keep_information),
            triggers: Triggers {
                idle_after: file.idle.after.unwrap_or(d.triggers.idle_after),
                idle_repeat: file.idle.repeat.unwrap_or(d.triggers.idle_repeat),
                idle_on_battery: file.idle.on_battery.unwrap_or(d.triggers.idle_on_battery),
                schedule_on_battery: file
                    .schedule
                    .on_battery
                    .unwrap_or(d.triggers.schedule_on_battery),
                network_debounce: file.network.debounce.unwrap_or(d.triggers.network_debounce),
                network_metered: file.network.metered.unwrap_or(d.triggers.network_metered),
                disconnect_deadline: file
                    .disconnect
                    .deadline
                    .unwrap_or(d.triggers.disconnect_deadline),
            },
            web: Web {
                enabled: file.web.enabled.unwrap_or(d.web.enabled),
                listen: file.web.listen.unwrap_or(d.web.listen),
                allow_remote: file.web.allow_remote.unwrap_or(d.web.allow_remote),
                hostname: file.web.hostname.or(d.web.hostname),
                metrics_without_auth: file
                    .web
                    .metrics_without_auth
                    .unwrap_or(d.web.metrics_without_auth),
            },
            notifications: file.notifications.enabled.unwrap_or(d.notifications),
        };
        config.web.address()?;
        if let Some(name) = &config.web.hostname
            && (name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-')))
        {
            return Err(format!(
                "[web] hostname must be a host name (letters, digits, '.', '-'), not {name:?}"
            ));
        }
        if config.max_concurrent == 0 {
            return Err("[daemon] max_concurrent must be at least 1".to_owned());
        }
        if config.backoff_initial.is_zero() || config.backoff_initial > config.backoff_max {
            return Err(
                "[backoff] initial must be more than 0 and at most [backoff] max".to_owned(),
            );
        }
        if config.keep_sessions < 10 {
            return Err("[retention] sessions must be at least 10".to_owned());
        }
        if config.keep_history < Duration::from_secs(3600)
            || config.keep_information < Duration::from_secs(3600)
        {
            return Err("[retention] history and information must be at least 1h".to_owned());
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn every_key_is_read() {
        let config = Config::parse(
            r#"
[daemon]
max_concurrent = 2

[idle]
after = "10m"
repeat = "2h"
on_battery = true

[schedule]
on_battery = true

[network]
debounce = "7s"
metered = true

[disconnect]
deadline = "3s"

[backoff]
initial = "1m"
max = "2h"

[retention]
history = "30d"
sessions = 500
information = "7d"
"#,
        )
        .unwrap();
        assert_eq!(config.max_concurrent, 2);
        assert_eq!(config.backoff_initial, Duration::from_secs(60));
        assert_eq!(config.backoff_max, Duration::from_secs(7200));
        assert_eq!(config.keep_history, Duration::from_secs(30 * 86400));
        assert_eq!(config.keep_sessions, 500);
        assert_eq!(config.keep_information, Duration::from_secs(7 * 86400));
        assert_eq!(
            config.triggers,
            Triggers {
                idle_after: Duration::from_secs(600),
                idle_repeat: Duration::from_secs(7200),
                idle_on_battery: true,
                schedule_on_battery: true,
                network_debounce: Duration::from_secs(7),
                network_metered: true,
                disconnect_deadline: Duration::from_secs(3),
            }
        );
    }

    #[test]
    fn bad_keys_and_values_name_the_key_and_line() {
        let error = Config::parse("[daemon]\nmax_concurent = 2\n").unwrap_err();
        assert!(error.contains("line 2"), "{error}");
        assert!(error.contains("max_concurent"), "{error}");

        let error = Config::parse("\n\n[backoff]\ninitial = \"soon\"\n").unwrap_err();
        assert!(error.contains("line 4"), "{error}");
        assert!(error.contains("soon"), "{error}");

        let error = Config::parse("[nosuch]\n").unwrap_err();
        assert!(error.contains("nosuch"), "{error}");

        let error = Config::parse("[daemon]\nmax_concurrent = 0\n").unwrap_err();
        assert!(error.contains("max_concurrent"), "{error}");
        let error = Config::parse("[backoff]\ninitial = \"2h\"\nmax = \"1h\"\n").unwrap_err();
        assert!(error.contains("[backoff] initial"), "{error}");
        let error = Config::parse("[retention]\nhistory = \"1m\"\n").unwrap_err();
        assert!(error.contains("[retention]"), "{error}");
        let error = Config::parse("[retention]\nsessions = 3\n").unwrap_err();
        assert!(error.contains("[retention] sessions"), "{error}");
    }

    #[test]
    fn the_limits_themselves_are_allowed() {
        let config = Config::parse(
            "[backoff]\ninitial = \"1h\"\nmax = \"1h\"\n\n[retention]\nhistory = \"1h\"\ninformation = \"1h\"\nsessions = 10\n",
        )
        .expect("at the limits");
        assert_eq!(config.backoff_initial, config.backoff_max);
        assert_eq!(config.keep_sessions, 10);
        assert_eq!(config.keep_information, Duration::from_secs(3600));
        let error = Config::parse("[retention]\ninformation = \"59m\"\n").unwrap_err();
        assert!(error.contains("[retention]"), "{error}");
    }

    #[test]
    fn the_file_is_in_the_home_or_the_config_dir() {
        assert_eq!(
            path(Some(Path::new("/h"))),
            Some(PathBuf::from("/h/config.toml"))
        );
        let default = path(None).expect("a config dir");
        assert!(default.ends_with("syncmgr/config.toml"), "{default:?}");
    }

    #[test]
    fn a_missing_file_is_the_defaults_and_a_bad_one_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert_eq!(Config::load(&path).unwrap(), Config::default());
        // A file that cannot be read is an error, not the defaults.
        assert!(matches!(
            Config::load(dir.path()),
            Err(ManagerError::Io { .. })
        ));
        std::fs::write(&path, "[daemon]\nmax_concurrent = \"many\"\n").unwrap();
        let error = Config::load(&path).unwrap_err().to_string();
        assert!(error.starts_with(&path.display().to_string()), "{error}");
        assert!(error.contains("line 2"), "{error}");
    }
}
