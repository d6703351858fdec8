//! How commands talk to the daemon: connect to `RUNTIME/daemon.sock` (none
//! there means no daemon runs, and the command runs inline), send one
//! [`DaemonRequest`], read JSON lines back.

use std::io;

use serde::de::DeserializeOwned;
use syncmgr_api::DaemonRequest;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::{ManagerError, Result};
use crate::home::Home;

/// The longest line a daemon answer may be (a status of many sessions).
const MAX_LINE: usize = 64 << 20;

/// A connection to the daemon.
#[derive(Debug)]
pub struct Connection {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

/// Connects to the home's daemon; `None` when none runs (no socket, or
/// nobody listening on it).
pub async fn connect(home: &Home) -> Result<Option<Connection>> {
    let path = home.daemon_socket();
    match UnixStream::connect(&path).await {
        Ok(stream) => {
            let (read, write) = stream.into_split();
            Ok(Some(Connection {
                lines: BufReader::new(read).lines(),
                write,
            }))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(ManagerError::io(
            format!("cannot reach the daemon at {}", path.display()),
            e,
        )),
    }
}

impl Connection {
    /// Sends the request (once, first).
    pub async fn request(&mut self, request: &DaemonRequest) -> Result<()> {
        let mut text = serde_json::to_string(request)
            .map_err(|e| ManagerError::Daemon(format!("cannot write the request: {e}")))?;
        text.push('\n');
        self.write
            .write_all(text.as_bytes())
            .await
            .map_err(|e| ManagerError::io("cannot send to the daemon", e))
    }

    /// The next answer line; `None` when the daemon closed the connection.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        let line = self
            .lines
            .next_line()
            .await
            .map_err(|e| ManagerError::io("cannot read from the daemon", e))?;
        let Some(line) = line else {
            return Ok(None);
        };
        if line.len() > MAX_LINE {
            return Err(ManagerError::Daemon(
                "an answer too long to take".to_owned(),
            ));
        }
        serde_json::from_str(&line).map(Some).map_err(|e| {
            ManagerError::Daemon(format!(
                "an answer this version does not understand ({e}): {line}"
            ))
        })
    }

    /// Answers the daemon's question about a retry (`log show`).
    pub async fn answer(&mut self, yes: bool) -> Result<()> {
        let mut text = serde_json::to_string(&syncmgr_api::ConfirmAnswer { yes })
            .map_err(|e| ManagerError::Daemon(format!("cannot write the answer: {e}")))?;
        text.push('\n');
        self.write
            .write_all(text.as_bytes())
            .await
            .map_err(|e| ManagerError::io("cannot send the answer to the daemon", e))
    }

    /// Asks the daemon to cancel the session this connection follows.
    pub async fn cancel(&mut self) -> Result<()> {
        self.write
            .write_all(b"{\"cancel\":null}\n")
            .await
            .map_err(|e| ManagerError::io("cannot send the cancel to the daemon", e))
    }
}

/// A status answer, or the daemon's refusal (it could not read the store).
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum StatusLine {
    Status(Box<syncmgr_api::Status>),
    Refused(syncmgr_api::Refused),
}

/// The running daemon's status (`status --json`); `None` when no daemon
/// runs. A refusal is [`ManagerError::NotNow`] with the daemon's words.
pub async fn status(home: &Home) -> Result<Option<syncmgr_api::Status>> {
    let Some(mut connection) = connect(home).await? else {
        return Ok(None);
    };
    connection.request(&DaemonRequest::Status {}).await?;
    match connection.next::<StatusLine>().await? {
        Some(StatusLine::Status(status)) => Ok(Some(*status)),
        Some(StatusLine::Refused(refused)) => Err(ManagerError::NotNow(refused.error)),
        None => Err(ManagerError::NotNow(
            "the daemon closed the connection without an answer".to_owned(),
        )),
    }
}

/// Tells a running daemon to read its settings and schedules again (they
/// changed); nothing to do when none runs.
pub async fn reload(home: &Home) -> Result<()> {
    if let Some(mut connection) = connect(home).await? {
        connection.request(&DaemonRequest::Reload {}).await?;
        let _: Option<syncmgr_api::Ack> = connection.next().await?;
    }
    Ok(())
}
