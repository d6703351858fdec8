//! Sync Center in the browser: the daemon's dashboard.
//!
//! - [`serve`]: the HTTP server (axum) with its routes: the page (`/`), the
//!   REST API under `/api/v1` described by `/api/openapi.json`, server-sent
//!   events, `/metrics`, the one-time login (`/login`);
//! - `security`: every request's checks (the `Host` header, auth, CSRF,
//!   origin) and the headers every response carries;
//! - `auth`: the API key, browser sessions and login tokens;
//! - `events`: one follower of the daemon's events, numbered and kept in
//!   a ring for `Last-Event-ID`, fanned out to the browsers;
//! - `metrics`: Prometheus metrics (prometheus-client) from those events
//!   and the daemon's status;
//! - `routes` and `page`: the API's answers and the page (maud, every
//!   text escaped; the script sets `textContent` only).
//!
//! It runs in the daemon's process but talks to the daemon as any client
//! does, through its socket (`syncmgr_manager::client`), and reads the
//! store through `syncmgr_manager::views`: what the page and the API show
//! is what the command line shows, in the same shapes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use syncmgr_manager::Home;
use tokio_util::sync::CancellationToken;

mod auth;
mod events;
mod metrics;
mod page;
mod routes;
mod security;

pub use auth::LOGIN_TOKEN_LIFETIME;

/// What went wrong setting the server up.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The address cannot be used (bad, taken, not allowed).
    #[error("{0}")]
    Address(String),
    /// A file of the home could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What, with the path.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Something else the server needs is missing.
    #[error("{0}")]
    Setup(String),
}

impl WebError {
    fn io(path: &Path, source: std::io::Error) -> WebError {
        WebError::Io {
            what: format!("cannot use {}", path.display()),
            source,
        }
    }
}

/// How the dashboard is served (`[web]` in `config.toml`).
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Where to listen; a non-loopback address needs `allow_remote`.
    pub listen: SocketAddr,
    /// A non-loopback `listen` is allowed.
    pub allow_remote: bool,
    /// A host name, besides the loopback ones, the `Host` header may carry.
    pub hostname: Option<String>,
    /// `/metrics` needs no auth.
    pub metrics_without_auth: bool,
}

impl WebConfig {
    /// From the daemon's settings, with `--web ADDR` winning over
    /// `[web] listen`.
    pub fn from_settings(
        web: &syncmgr_manager::config::Web,
        listen: Option<&str>,
    ) -> Result<WebConfig, WebError> {
        let mut web = web.clone();
        if let Some(listen) = listen {
            web.listen = listen.to_owned();
        }
        let listen = web.address().map_err(WebError::Address)?;
        Ok(WebConfig {
            listen,
            allow_remote: web.allow_remote,
            hostname: web.hostname,
            metrics_without_auth: web.metrics_without_auth,
        })
    }
}

/// A bound dashboard, not yet serving.
pub struct Bound {
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    config: WebConfig,
    key: String,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Bound")
            .field("address", &self.address)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Binds the dashboard's address, and makes sure the home's API key
/// exists: once `status` shows the dashboard, `syncmgr dashboard` can use
/// it.
pub async fn bind(config: WebConfig, home: &Home) -> Result<Bound, WebError> {
    let key_path = home.state.join("api-key");
    let key = tokio::task::spawn_blocking(move || auth::api_key(&key_path))
        .await
        .map_err(|e| WebError::Setup(format!("cannot read the API key: {e}")))??;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| WebError::Address(format!("cannot listen on {}: {e}", config.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|e| WebError::Address(format!("cannot listen on {}: {e}", config.listen)))?;
    Ok(Bound {
        listener,
        address,
        config,
        key,
    })
}

impl Bound {
    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its address as a URL (`http://127.0.0.1:8734/`).
    pub fn url(&self) -> String {
        format!("http://{}/", self.address)
    }

    /// What `status` says about it.
    pub fn info(&self) -> syncmgr_api::WebInfo {
        syncmgr_api::WebInfo {
            url: self.url(),
            remote: !self.address.ip().is_loopback(),
        }
    }

    /// Serves until `shutdown` is cancelled (open event streams end then).
    pub async fn serve(self, home: Home, shutdown: CancellationToken) -> Result<(), WebError> {
        if self.info().remote {
            tracing::warn!(
                address = %self.address,
                "the dashboard is reachable from other machines ([web] allow_remote)"
            );
        }
        let state = Arc::new(AppState {
            events: events::Events::new(),
            metrics: metrics::Metrics::new(),
            sessions: auth::Sessions::default(),
            key: self.key,
            address: self.address,
            config: self.config,
            home,
            shutdown: shutdown.clone(),
        });
        let pump = tokio::spawn(events::pump(Arc::clone(&state)));
        let app = routes::router(Arc::clone(&state));
        tracing::info!(url = %format!("http://{}/", self.address), "dashboard listening");
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(|e| WebError::Address(format!("the dashboard stopped: {e}")));
        pump.abort();
        result
    }
}

/// What every request handler shares.
struct AppState {
    home: Home,
    config: WebConfig,
    address: SocketAddr,
    key: String,
    sessions: auth::Sessions,
    events: events::Events,
    metrics: metrics::Metrics,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key or the sessions' secrets.
        f.debug_struct("AppState")
            .field("address", &self.address)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// `syncmgr dashboard`: asks the running dashboard for a one-time login
/// URL, with the home's API key.
pub async fn login_url(home: &Home, dashboard: &str) -> Result<String, WebError> {
    let key_path = home.state.join("api-key");
    let key = std::fs::read_to_string(&key_path)
        .map_err(|e| WebError::io(&key_path, e))?
        .trim()
        .to_owned();
    let address = dashboard
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| WebError::Setup(format!("not a dashboard address: {dashboard}")))?;
    let reply = http_post(address, "/api/v1/login-token", &key).await?;
    let url: syncmgr_api::LoginUrl = serde_json::from_str(&reply)
        .map_err(|_| WebError::Setup(format!("the dashboard did not give a login URL: {reply}")))?;
    Ok(url.url)
}

/// A bare HTTP/1.1 POST with the API key (the command line's only request,
/// so no HTTP client crate for it).
async fn http_post(address: &str, path: &str, key: &str) -> Result<String, WebError> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let fail = |e: std::io::Error| {
        WebError::Address(format!("cannot reach the dashboard at {address}: {e}"))
    };
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(fail)?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(fail)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.map_err(fail)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| WebError::Setup("the dashboard's answer was cut short".to_owned()))?;
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or_default();
        return Err(WebError::Setup(format!(
            "the dashboard refused: {status}: {body}"
        )));
    }
    Ok(body.to_owned())
}
