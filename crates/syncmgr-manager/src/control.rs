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

use syncmgr_api as api;
use syncmgr_core::{CancelTarget, SessionControl};
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
