//! `syncmgr daemon`, `status` and `events`: the daemon in the foreground,
//! and the commands that look at it.

use std::io::Write as _;

use syncmgr_api as api;
use syncmgr_manager::config::Config;
use syncmgr_manager::daemon::{DaemonConfig, status_of};
use syncmgr_manager::{Home, ManagerError, client};
use syncmgr_store::Store;
use tokio::signal::unix::{SignalKind, signal};

use crate::display::Display;
use crate::error::usage;
use crate::exit_codes;
use crate::output::Stdout;

/// `syncmgr daemon`: runs until SIGTERM or SIGINT, then ends the running
/// sessions cleanly. A `config.toml` with errors keeps it from starting.
pub async fn run(
    home: Home,
    explicit_home: Option<&std::path::Path>,
    max_concurrent: Option<usize>,
    web: Option<&str>,
) -> anyhow::Result<i32> {
    if max_concurrent == Some(0) {
        return Err(usage("--max-concurrent must be at least 1"));
    }
    let config_path = syncmgr_manager::config::path(explicit_home);
    let config = match &config_path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let web_config = if web.is_some() || config.web.enabled {
        Some(
            syncmgr_web::WebConfig::from_settings(&config.web, web)
                .map_err(|e| usage(e.to_string()))?,
        )
    } else {
        None
    };
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    let options = DaemonConfig {
        config,
        config_path,
        max_concurrent,
        without_os_triggers: false,
    };
    // The lock first: a second daemon fails on it, not on the port.
    let mut daemon = syncmgr_manager::daemon::bind(home.clone(), options)?;
    let dashboard = match web_config {
        Some(config) => match syncmgr_web::bind(config, &home).await {
            Ok(bound) => {
                daemon.set_web(bound.info());
                Some(bound)
            }
            // Asked for on the command line: that is an error.
            Err(e) if web.is_some() => return Err(e.into()),
            // The configured address is taken (another home's daemon):
            // the daemon runs without its dashboard, and says so.
            Err(e) => {
                tracing::warn!(error = %e, "the dashboard is not served");
                None
            }
        },
        None => None,
    };
    let stop_web = tokio_util::sync::CancellationToken::new();
    let web_task = dashboard.map(|bound| {
        let (home, stop) = (home.clone(), stop_web.clone());
        tokio::spawn(async move {
            if let Err(e) = bound.serve(home, stop).await {
                tracing::error!(error = %e, "the dashboard stopped");
            }
        })
    });
    let result = daemon.run(shutdown).await;
    stop_web.cancel();
    if let Some(task) = web_task {
        let _ = task.await;
    }
    result?;
    Ok(exit_codes::SUCCESS)
}

/// `syncmgr daemon --install`: the service runs this program (for this
/// `--home`, when one was given).
pub fn install(home: Option<&std::path::Path>, out: &mut Stdout) -> anyhow::Result<i32> {
    let program = std::env::current_exe()?;
    // The service runs later, from elsewhere: the home must be absolute.
    let home = home.map(std::path::absolute).transpose()?;
    let path = syncmgr_manager::install::install(&program, home.as_deref())?;
    writeln!(
        out,
        "installed {} and started the daemon (stop and remove it with `syncmgr daemon --uninstall`)",
        path.display()
    )?;
    Ok(exit_codes::SUCCESS)
}

/// `syncmgr daemon --uninstall`.
pub fn uninstall(out: &mut Stdout) -> anyhow::Result<i32> {
    match syncmgr_manager::install::uninstall()? {
        Some(path) => writeln!(out, "stopped the daemon and removed {}", path.display())?,
        None => writeln!(out, "the daemon was not installed as a service")?,
    }
    Ok(exit_codes::SUCCESS)
}

/// `syncmgr status`: from the daemon when one runs, from the store
/// otherwise (`daemon` is then `null`).
pub async fn status(
    home: &Home,
    store: &Store,
    json: bool,
    out: &mut Stdout,
) -> anyhow::Result<i32> {
    let status = match client::status(home).await? {
        Some(status) => status,
        None => status_of(store, None, chrono::Utc::now())?,
    };
    if json {
        out.json(&status)?;
        return Ok(exit_codes::SUCCESS);
    }
    match &status.daemon {
        Some(d) => {
            writeln!(
                out,
                "daemon: running (pid {}, since {}, version {})",
                d.pid, d.started, d.version
            )?;
            match &d.web {
                Some(web) => writeln!(
                    out,
                    "dashboard: {}{} (`syncmgr dashboard` opens it)",
                    web.url,
                    if web.remote {
                        ", reachable from other machines"
                    } else {
                        ""
                    }
                )?,
                None => writeln!(out, "dashboard: not served")?,
            }
            if let Some(n) = &d.notifications {
                let state = if n.available { "on" } else { "off" };
                writeln!(out, "notifications: {state} ({})", n.reason)?;
            }
        }
        None => writeln!(out, "daemon: not running")?,
    }
    for session in &status.sessions {
        writeln!(
            out,
            "session {} {} ({}): {}",
            session.id,
            session.state,
            session.trigger,
            session.targets.join(" ")
        )?;
    }
    for reg in &status.registrations {
        let last = reg.last_session.as_ref().map_or_else(
            || "never synced".to_owned(),
            |s| format!("last session {} {} at {}", s.id, s.outcome, s.finished),
        );
        let mut line = format!("{}: {}; {last}", reg.name, reg.state);
        if let Some(until) = &reg.backoff_until {
            line.push_str(&format!("; backing off until {until}"));
        }
        if let (Some(next), Some(why)) = (&reg.next_run, &reg.next_reason) {
            line.push_str(&format!("; next run {next} ({why})"));
        }
        writeln!(out, "{line}")?;
    }
    for trigger in &status.triggers {
        writeln!(
            out,
            "trigger {}: {} ({})",
            trigger.trigger,
            if trigger.available {
                "available"
            } else {
                "unavailable"
            },
            trigger.reason
        )?;
    }
    Ok(exit_codes::SUCCESS)
}

/// `syncmgr events`: follows the daemon until it stops or the user
/// interrupts.
pub async fn events(home: &Home, json: bool, out: Stdout) -> anyhow::Result<i32> {
    let Some(mut connection) = client::connect(home).await? else {
        return Err(ManagerError::NoDaemon.into());
    };
    connection.request(&api::DaemonRequest::Events {}).await?;
    let mut display = if json {
        Display::Json
    } else {
        Display::plain()
    };
    let mut out = out;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            event = connection.next::<api::Event>() => match event? {
                Some(event) => {
                    if let api::Event::Queued { session, trigger, targets } = &event
                        && !json
                    {
                        writeln!(out, "session {session} queued ({trigger}): {}", targets.join(" "))?;
                    } else {
                        display.show(&event, &mut out)?;
                    }
                }
                None => return Ok(exit_codes::SUCCESS),
            },
            _ = interrupt.recv() => return Ok(exit_codes::SUCCESS),
            _ = terminate.recv() => return Ok(exit_codes::SUCCESS),
        }
    }
}

/// `syncmgr dashboard`: a one-time login link to the running daemon's
/// dashboard, printed and (unless `--no-open`, or with no desktop) opened.
pub async fn dashboard(home: &Home, no_open: bool, out: &mut Stdout) -> anyhow::Result<i32> {
    let Some(status) = client::status(home).await? else {
        return Err(ManagerError::NoDaemon.into());
    };
    let Some(web) = status.daemon.and_then(|d| d.web) else {
        anyhow::bail!(
            "the daemon serves no dashboard: set [web] enabled = true (and [web] listen) in config.toml, or start it with `syncmgr daemon --web 127.0.0.1:8734`"
        );
    };
    let url = syncmgr_web::login_url(home, &web.url).await?;
    writeln!(out, "{url}")?;
    let desktop = std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some()
        || cfg!(target_os = "macos");
    if !no_open && desktop {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        // The link is printed whether or not the opener works.
        if let Err(e) = std::process::Command::new(opener)
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
        {
            crate::output::warn(&format!("cannot open a browser ({opener}: {e})"));
        }
    }
    Ok(exit_codes::SUCCESS)
}
