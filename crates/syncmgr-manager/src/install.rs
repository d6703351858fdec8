//! `syncmgr daemon --install` / `--uninstall`: the service files of
//! `contrib/` (a systemd user unit on Linux, a launchd agent on macOS),
//! filled in with the program and home to run, written where the service
//! manager looks, and enabled or removed through it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{ManagerError, Result};

/// The systemd user unit, `@EXEC@` to fill in.
const SYSTEMD_UNIT: &str = include_str!("../../../contrib/systemd/syncmgr.service");
/// The launchd agent, `@ARGS@` to fill in.
const LAUNCHD_AGENT: &str = include_str!("../../../contrib/launchd/org.syncmgr.daemon.plist");
/// The unit's name.
pub const UNIT: &str = "syncmgr.service";
/// The agent's label.
pub const AGENT: &str = "org.syncmgr.daemon";

/// Which service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// systemd's user instance.
    Systemd,
    /// launchd (macOS).
    Launchd,
}

impl Platform {
    /// This machine's.
    pub fn current() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::Launchd
        } else {
            Platform::Systemd
        }
    }
}

/// The command line of the daemon: the program, and `--home` when one was
/// given.
fn argv(program: &Path, home: Option<&Path>) -> Vec<String> {
    let mut argv = vec![program.display().to_string()];
    if let Some(home) = home {
        argv.push("--home".to_owned());
        argv.push(home.display().to_string());
    }
    argv
}

/// A word of an `ExecStart=` line: quoted, with systemd's specifiers (`%`)
/// and quotes escaped.
fn systemd_word(word: &str) -> String {
    let escaped = word
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    format!("\"{escaped}\"")
}

fn xml_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The service file for `platform`, running `program` (for `home`).
pub fn service_file(platform: Platform, program: &Path, home: Option<&Path>) -> String {
    let argv = argv(program, home);
    match platform {
        Platform::Systemd => {
            let exec: Vec<String> = argv.iter().map(|w| systemd_word(w)).collect();
            SYSTEMD_UNIT.replace("ExecStart=@EXEC@", &format!("ExecStart={}", exec.join(" ")))
        }
        Platform::Launchd => {
            let args: Vec<String> = argv
                .iter()
                .map(String::as_str)
                .chain(["daemon"])
                .map(|w| format!("        <string>{}</string>", xml_text(w)))
                .collect();
            LAUNCHD_AGENT.replace("\n@ARGS@\n", &format!("\n{}\n", args.join("\n")))
        }
    }
}

/// Where the service file goes.
pub fn service_path(platform: Platform) -> Result<PathBuf> {
    let base = directories::BaseDirs::new()
        .ok_or_else(|| ManagerError::usage("cannot find the home directory"))?;
    Ok(match platform {
        Platform::Systemd => base.config_dir().join("systemd/user").join(UNIT),
        Platform::Launchd => base
            .home_dir()
            .join("Library/LaunchAgents")
            .join(format!("{AGENT}.plist")),
    })
}

/// Runs a service manager command; its failure names the command and what
/// it said.
fn run(program: &str, args: &[&str]) -> Result<()> {
    let shown = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| ManagerError::io(format!("cannot run `{shown}`"), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ManagerError::Daemon(format!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Writes the service file and enables (and starts) the service; returns
/// the file's path.
pub fn install(program: &Path, home: Option<&Path>) -> Result<PathBuf> {
    let platform = Platform::current();
    let path = service_path(platform)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| ManagerError::io(format!("cannot create {}", dir.display()), e))?;
    }
    std::fs::write(&path, service_file(platform, program, home))
        .map_err(|e| ManagerError::io(format!("cannot write {}", path.display()), e))?;
    match platform {
        Platform::Systemd => {
            run("systemctl", &["--user", "daemon-reload"])?;
            run("systemctl", &["--user", "enable", "--now", UNIT])?;
        }
        Platform::Launchd => {
            let text = path.display().to_string();
            run("launchctl", &["load", "-w", &text])?;
        }
    }
    Ok(path)
}

/// Stops and disables the service and removes its file; returns the path
/// it had (`None` when it was not installed).
pub fn uninstall() -> Result<Option<PathBuf>> {
    let platform = Platform::current();
    let path = service_path(platform)?;
    if !path.exists() {
        return Ok(None);
    }
    match platform {
        Platform::Systemd => run("systemctl", &["--user", "disable", "--now", UNIT])?,
        Platform::Launchd => {
            let text = path.display().to_string();
            run("launchctl", &["unload", "-w", &text])?;
        }
    }
    std::fs::remove_file(&path)
        .map_err(|e| ManagerError::io(format!("cannot remove {}", path.display()), e))?;
    if platform == Platform::Systemd {
        run("systemctl", &["--user", "daemon-reload"])?;
    }
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_this_program_for_this_home() {
        let unit = service_file(
            Platform::Systemd,
            Path::new("/opt/sync mgr/bin/syncmgr"),
            Some(Path::new("/home/u/100%/h")),
        );
        assert!(
            unit.contains(
                r#"ExecStart="/opt/sync mgr/bin/syncmgr" "--home" "/home/u/100%%/h" daemon"#
            ),
            "{unit}"
        );
        assert!(
            !unit.contains("=@EXEC@"),
            "the placeholder is filled: {unit}"
        );
        assert!(unit.contains("WantedBy=default.target"));

        let unit = service_file(Platform::Systemd, Path::new("/usr/bin/syncmgr"), None);
        assert!(
            unit.contains(r#"ExecStart="/usr/bin/syncmgr" daemon"#),
            "{unit}"
        );
    }

    #[test]
    fn the_agent_lists_the_arguments() {
        let agent = service_file(
            Platform::Launchd,
            Path::new("/Applications/a&b/syncmgr"),
            Some(Path::new("/Users/u/h")),
        );
        let args: Vec<&str> = agent
            .lines()
            .filter_map(|l| l.trim().strip_prefix("<string>")?.strip_suffix("</string>"))
            .collect();
        assert_eq!(
            args,
            [
                AGENT,
                "/Applications/a&amp;b/syncmgr",
                "--home",
                "/Users/u/h",
                "daemon",
                "Background"
            ]
        );
    }
}
