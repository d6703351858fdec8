//! `syncmgr cancel`: the client side of the per-session control sockets
//! (`syncmgr_manager::control` has the protocol and the sessions' side).

use std::io::{self, Write as _};
use std::path::Path;

use std::time::Duration;

use anyhow::Context;
use syncmgr_api as api;
use syncmgr_core::CancelTarget;
use syncmgr_manager::Home;
use syncmgr_store::Store;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::error::usage;
use crate::exit_codes;
use crate::output::Stdout;

/// Parses `NAME` / `NAME/ITEM` into a target.
pub fn parse_target(text: &str) -> anyhow::Result<CancelTarget> {
    Ok(match text.split_once('/') {
        Some((_, "")) => return Err(usage(format!("target {text:?} has an empty item"))),
        Some((handler, item)) => CancelTarget::Item {
            handler: handler.to_owned(),
            item: item.to_owned(),
        },
        None => CancelTarget::Handler(text.to_owned()),
    })
}

/// How long `syncmgr cancel` waits for a session to accept the connection,
/// and then for each answer: a session that is stopped (SIGSTOP) or wedged
/// must not hang the command. A live session answers in microseconds.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What `syncmgr cancel` achieved.
#[derive(Debug, Default)]
pub struct CancelReport {
    /// Running sessions reached.
    pub sessions: usize,
    /// Targets that matched something in at least one session.
    pub matched: Vec<bool>,
    /// Sockets of sessions that did not answer in time.
    pub unanswered: Vec<String>,
}

/// The session id a control socket is named after.
fn session_of(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// Sends every target to one session; returns which it matched.
async fn ask(stream: UnixStream, targets: &[CancelTarget]) -> anyhow::Result<Vec<bool>> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut matched = Vec::with_capacity(targets.len());
    for target in targets {
        let mut text = syncmgr_manager::control::request_line(target);
        text.push('\n');
        write.write_all(text.as_bytes()).await?;
        let reply = lines
            .next_line()
            .await?
            .context("the session closed the control socket")?;
        let reply: api::ControlReply = serde_json::from_str(&reply)?;
        if !reply.ok {
            anyhow::bail!(
                "session refused the cancel: {}",
                reply.error.as_deref().unwrap_or("unknown error")
            );
        }
        matched.push(reply.matched == Some(true));
    }
    Ok(matched)
}

/// Sends the cancels to every running session under `runtime_dir`. Sockets
/// nobody listens on any more (a crashed manager's) are removed.
pub async fn send_cancels(
    runtime_dir: &Path,
    targets: &[CancelTarget],
) -> anyhow::Result<CancelReport> {
    let mut report = CancelReport {
        sessions: 0,
        matched: vec![false; targets.len()],
        unanswered: Vec::new(),
    };
    let entries = std::fs::read_dir(runtime_dir)
        .with_context(|| format!("cannot read {}", runtime_dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        // Sessions' sockets only: the daemon's is not a session's.
        if path.extension().and_then(|e| e.to_str()) != Some("sock")
            || path.file_stem().and_then(|s| s.to_str()) == Some("daemon")
        {
            continue;
        }
        let stream = match tokio::time::timeout(ANSWER_TIMEOUT, UnixStream::connect(&path)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                ) =>
            {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            Ok(Err(e)) => {
                crate::output::warn(&format!("cannot reach {}: {e}", path.display()));
                continue;
            }
            Err(_) => {
                report.unanswered.push(session_of(&path));
                continue;
            }
        };
        match tokio::time::timeout(ANSWER_TIMEOUT, ask(stream, targets)).await {
            Ok(Ok(matched)) => {
                report.sessions += 1;
                for (all, one) in report.matched.iter_mut().zip(matched) {
                    *all |= one;
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => report.unanswered.push(session_of(&path)),
        }
    }
    Ok(report)
}

/// `syncmgr cancel`: sends the cancels to every running session of the home
/// and says what they matched; names the handler never had are bad input.
pub async fn cancel(
    home: &Home,
    store: &Store,
    targets: &[String],
    out: &mut Stdout,
) -> anyhow::Result<i32> {
    let parsed: Vec<_> = if targets.is_empty() {
        vec![syncmgr_core::CancelTarget::All]
    } else {
        targets
            .iter()
            .map(|t| parse_target(t))
            .collect::<anyhow::Result<_>>()?
    };
    // Names that do not exist are bad input, whatever is running.
    for target in &parsed {
        if let syncmgr_core::CancelTarget::Handler(name)
        | syncmgr_core::CancelTarget::Item { handler: name, .. } = target
        {
            syncmgr_manager::plan::registration(store, name)?;
        }
    }
    let report = send_cancels(&home.runtime, &parsed).await?;
    let mut never_listed = Vec::new();
    let mut not_running = Vec::new();
    for (target, matched) in parsed.iter().zip(&report.matched) {
        if *matched {
            continue;
        }
        match target {
            syncmgr_core::CancelTarget::Item { handler, item }
                if !store.known_items(handler)?.iter().any(|k| &k.id == item) =>
            {
                never_listed.push(format!("{handler}/{item}"));
            }
            syncmgr_core::CancelTarget::Item { handler, item } => {
                not_running.push(format!("{handler}/{item}"));
            }
            syncmgr_core::CancelTarget::Handler(handler) => not_running.push(handler.clone()),
            syncmgr_core::CancelTarget::All => {}
        }
    }
    if report.sessions == 0 && report.unanswered.is_empty() {
        anyhow::bail!("no running session in this home");
    }
    if !never_listed.is_empty() {
        return Err(usage(format!(
            "no such item: {} (the handler never listed it; see `syncmgr items`)",
            never_listed.join(", ")
        )));
    }
    if !report.unanswered.is_empty() {
        anyhow::bail!(
            "{} running session{} did not answer the cancel in time (it may still act on it when it runs again): {}",
            report.unanswered.len(),
            if report.unanswered.len() == 1 {
                ""
            } else {
                "s"
            },
            report.unanswered.join(", ")
        );
    }
    if !not_running.is_empty() {
        anyhow::bail!("no running session has {}", not_running.join(", "));
    }
    writeln!(
        out,
        "cancel sent to {} running session{}",
        report.sessions,
        if report.sessions == 1 { "" } else { "s" }
    )?;
    Ok(exit_codes::SUCCESS)
}
