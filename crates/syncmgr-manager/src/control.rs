//! The per-session control socket: how another process (`syncmgr cancel`)
//! reaches a running session.
//!
//! Each session listens on `<runtime dir>/<session id>.sock` (the directory is
//! 0700, so only the user can connect). The protocol is one JSON object per
//! line each way (`syncmgr_api::ControlRequest` and `ControlReply`): a
//! request `{"cancel": null}` (everything) or
//! `{"cancel": {"handler": NAME, "item": ID?}}`, answered by
//! `{"ok": true, "matched": BOOL}` or `{"ok": false, "error": TEXT}`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use syncmgr_api as api;
use syncmgr_core::{CancelTarget, SessionControl};
use syncmgr_store::Store;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::error::{ManagerError, Result};

/// Requests longer than this are refused (and the connection closed).
const MAX_REQUEST: usize = 64 * 1024;

/// Removes the socket file when the session ends.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlSocket {
    /// Listens at `path` and applies cancels to `control`.
    pub fn bind(path: &Path, control: SessionControl) -> Result<ControlSocket> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|e| {
            ManagerError::io(
                format!("cannot listen on control socket {}", path.display()),
                e,
            )
        })?;
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, control.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        return;
                    }
                }
            }
        });
        Ok(ControlSocket {
            path: path.to_path_buf(),
            task,
        })
    }
}

/// The request line (without its newline) that cancels `target`.
pub fn request_line(target: &CancelTarget) -> String {
    let cancel = match target {
        CancelTarget::All => None,
        CancelTarget::Handler(handler) => Some(api::CancelTarget {
            handler: handler.clone(),
            item: None,
        }),
        CancelTarget::Item { handler, item } => Some(api::CancelTarget {
            handler: handler.clone(),
            item: Some(item.clone()),
        }),
    };
    // Serializing plain strings and options cannot fail.
    serde_json::to_string(&api::ControlRequest { cancel }).unwrap_or_default()
}

/// Reads a request line.
pub fn parse_request(line: &str) -> Result<CancelTarget, String> {
    let request: api::ControlRequest =
        serde_json::from_str(line).map_err(|e| format!("not a control request: {e}"))?;
    Ok(match request.cancel {
        None => CancelTarget::All,
        Some(api::CancelTarget {
            handler,
            item: None,
        }) => CancelTarget::Handler(handler),
        Some(api::CancelTarget {
            handler,
            item: Some(item),
        }) => CancelTarget::Item { handler, item },
    })
}

async fn serve(stream: UnixStream, control: SessionControl) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_REQUEST as u64 * 16)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        // With `debug` on syncmgr_protocol::process, the pipe write is traced
        // too: the cancel benchmark pairs the two (docs/performance.md).
        tracing::trace!(request = %line, "control request received");
        let reply = if line.len() > MAX_REQUEST {
            api::ControlReply::refused("request too long")
        } else {
            match parse_request(&line) {
                Ok(target) => api::ControlReply::matched(control.cancel(&target)),
                Err(e) => api::ControlReply::refused(e),
            }
        };
        let mut text = serde_json::to_string(&reply).unwrap_or_default();
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
}

// -- the client side: `syncmgr cancel`, the dashboard's Stop -------------

/// Parses `NAME` / `NAME/ITEM` into a target.
pub fn parse_target(text: &str) -> Result<CancelTarget> {
    Ok(match text.split_once('/') {
        Some((_, "")) => {
            return Err(ManagerError::usage(format!(
                "target {text:?} has an empty item"
            )));
        }
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
    /// The sessions reached, by id.
    pub sessions: std::collections::BTreeSet<String>,
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
async fn ask(stream: UnixStream, targets: &[CancelTarget]) -> Result<Vec<bool>> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut matched = Vec::with_capacity(targets.len());
    for target in targets {
        let mut text = request_line(target);
        text.push('\n');
        let gone = |e| ManagerError::io("cannot talk to a session's control socket", e);
        write.write_all(text.as_bytes()).await.map_err(gone)?;
        let reply = lines.next_line().await.map_err(gone)?.ok_or_else(|| {
            ManagerError::Daemon("a session closed its control socket".to_owned())
        })?;
        let reply: api::ControlReply = serde_json::from_str(&reply).map_err(|e| {
            ManagerError::Daemon(format!("a session answered the cancel with {reply:?}: {e}"))
        })?;
        if !reply.ok {
            return Err(ManagerError::Daemon(format!(
                "a session refused the cancel: {}",
                reply.error.as_deref().unwrap_or("unknown error")
            )));
        }
        matched.push(reply.matched == Some(true));
    }
    Ok(matched)
}

/// Sends the cancels to every running session under `runtime_dir`. Sockets
/// nobody listens on any more (a crashed manager's) are removed.
pub async fn send_cancels(runtime_dir: &Path, targets: &[CancelTarget]) -> Result<CancelReport> {
    let mut report = CancelReport {
        sessions: std::collections::BTreeSet::new(),
        matched: vec![false; targets.len()],
        unanswered: Vec::new(),
    };
    let entries = std::fs::read_dir(runtime_dir)
        .map_err(|e| ManagerError::io(format!("cannot read {}", runtime_dir.display()), e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| ManagerError::io(format!("cannot read {}", runtime_dir.display()), e))?
            .path();
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
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) =>
            {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot reach a session");
                continue;
            }
            Err(_) => {
                report.unanswered.push(session_of(&path));
                continue;
            }
        };
        match tokio::time::timeout(ANSWER_TIMEOUT, ask(stream, targets)).await {
            Ok(Ok(matched)) => {
                report.sessions.insert(session_of(&path));
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

/// Cancels `targets` (`NAME`, `NAME/ITEM`; none for everything) in every
/// running session of the home; returns how many sessions were told. Names
/// the handler never had are bad input ([`ManagerError::Usage`]); nothing
/// running to cancel, or a session that did not answer, is
/// [`ManagerError::NotNow`].
pub async fn cancel(home: &crate::Home, store: &Store, targets: &[String]) -> Result<usize> {
    let parsed: Vec<_> = if targets.is_empty() {
        vec![CancelTarget::All]
    } else {
        targets
            .iter()
            .map(|t| parse_target(t))
            .collect::<Result<_>>()?
    };
    // Names that do not exist are bad input, whatever is running.
    for target in &parsed {
        if let CancelTarget::Handler(name) | CancelTarget::Item { handler: name, .. } = target {
            crate::plan::registration(store, name)?;
        }
    }
    // Sessions still queued in the daemon have no control socket yet: the
    // daemon applies the cancel as they start.
    let queued = match crate::client::connect(home).await? {
        Some(mut daemon) => {
            daemon
                .request(&api::DaemonRequest::Cancel {
                    targets: targets.to_vec(),
                })
                .await?;
            daemon.next::<api::QueuedCancel>().await?
        }
        None => None,
    };
    let mut report = send_cancels(&home.runtime, &parsed).await?;
    if let Some(queued) = queued {
        // A session that started in between may count both ways: once.
        report.sessions.extend(queued.sessions);
        for (all, one) in report.matched.iter_mut().zip(queued.matched) {
            *all |= one;
        }
    }
    let mut never_listed = Vec::new();
    let mut not_running = Vec::new();
    for (target, matched) in parsed.iter().zip(&report.matched) {
        if *matched {
            continue;
        }
        match target {
            CancelTarget::Item { handler, item }
                if !store.known_items(handler)?.iter().any(|k| &k.id == item) =>
            {
                never_listed.push(format!("{handler}/{item}"));
            }
            CancelTarget::Item { handler, item } => {
                not_running.push(format!("{handler}/{item}"));
            }
            CancelTarget::Handler(handler) => not_running.push(handler.clone()),
            CancelTarget::All => {}
        }
    }
    if report.sessions.is_empty() && report.unanswered.is_empty() {
        return Err(ManagerError::NotNow(
            "no running session in this home".to_owned(),
        ));
    }
    if !never_listed.is_empty() {
        return Err(ManagerError::usage(format!(
            "no such item: {} (the handler never listed it; see `syncmgr items`)",
            never_listed.join(", ")
        )));
    }
    if !report.unanswered.is_empty() {
        return Err(ManagerError::NotNow(format!(
            "{} running session{} did not answer the cancel in time (it may still act on it when it runs again): {}",
            report.unanswered.len(),
            if report.unanswered.len() == 1 {
                ""
            } else {
                "s"
            },
            report.unanswered.join(", ")
        )));
    }
    if !not_running.is_empty() {
        return Err(ManagerError::NotNow(format!(
            "no running session has {}",
            not_running.join(", ")
        )));
    }
    Ok(report.sessions.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for target in [
            CancelTarget::All,
            CancelTarget::Handler("mail".into()),
            CancelTarget::Item {
                handler: "mail".into(),
                item: "inbox".into(),
            },
        ] {
            let line = request_line(&target);
            assert_eq!(parse_request(&line).unwrap(), target);
        }
        assert_eq!(request_line(&CancelTarget::All), r#"{"cancel":null}"#);
        assert!(
            parse_request("nonsense")
                .unwrap_err()
                .contains("not a control request")
        );
        assert!(parse_request("{\"cancel\":{}}").is_err());
    }
}
