//! The checks every request passes and the headers every response gets,
//! as the contract's security rules say (`docs/dashboard.md`):
//!
//! 1. the `Host` header names this machine's loopback (or the configured
//!    name): anything else is DNS rebinding, 403;
//! 2. everything but `/api/health` and `/login` needs the API key
//!    (`Authorization: Bearer`, `X-API-Key`) or a session cookie;
//!    `/metrics` too unless `[web] metrics_without_auth`;
//! 3. a browser's state-changing request carries its session's
//!    `X-Syncmgr-CSRF`, and an `Origin` other than ours is refused;
//! 4. every response says `Content-Security-Policy`, `nosniff`,
//!    `no-referrer`, and API answers are never cached.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::auth::{Session, same_secret};

/// The session cookie's name.
pub const COOKIE: &str = "syncmgr_session";
/// The header that carries a browser session's CSRF token.
pub const CSRF_HEADER: &str = "x-syncmgr-csrf";

/// Who a request comes from, once checked.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A script with the API key.
    Key,
    /// A browser with a session.
    Browser(Session),
    /// Nobody known (only open routes see this).
    Anonymous,
}

/// The host part of a `Host` header (`[::1]:8734` → `[::1]`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Rule 1: the names the `Host` header may carry.
pub fn host_allowed(host: &str, configured: Option<&str>) -> bool {
    let name = host_name(host).to_ascii_lowercase();
    let name = name.strip_suffix('.').unwrap_or(&name);
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
        || configured.is_some_and(|c| c.eq_ignore_ascii_case(name))
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn api_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
}

/// A refusal as the API writes errors: `{"error": TEXT}`.
pub fn refuse(status: StatusCode, text: &str) -> Response {
    let body = syncmgr_api::ApiError {
        error: text.to_owned(),
        confirm: None,
    };
    (status, axum::Json(body)).into_response()
}

/// Rules 1 to 3, then rule 4 on the way out.
pub async fn check(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let mut response = match admit(&state, &request) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => refusal,
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn admit(state: &AppState, request: &Request) -> Result<Caller, Response> {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !host_allowed(host, state.config.hostname.as_deref()) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "this Host is not allowed (the dashboard answers to localhost, 127.0.0.1, [::1] or [web] hostname)",
        ));
    }
    let path = request.uri().path();
    let open = path == "/api/health"
        || path == "/login"
        || path.starts_with("/assets/")
        || (path == "/metrics" && state.config.metrics_without_auth);
    if let Some(key) = api_key(headers) {
        // A wrong key is refused even on open routes: it is a mistake
        // worth saying.
        return if same_secret(key, &state.key) {
            Ok(Caller::Key)
        } else {
            Err(refuse(StatusCode::UNAUTHORIZED, "wrong API key"))
        };
    }
    let session = cookie(headers, COOKIE).and_then(|c| state.sessions.session(c));
    let Some(session) = session else {
        if open {
            return Ok(Caller::Anonymous);
        }
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "log in first: run `syncmgr dashboard` for a login link, or send the API key (the file api-key in the home)",
        ));
    };
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    if !safe {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let ours = origin
                .to_str()
                .ok()
                .and_then(|o| o.strip_prefix("http://"))
                .is_some_and(|o| o.eq_ignore_ascii_case(host));
            if !ours {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    "cross-origin request refused",
                ));
            }
        }
        let csrf = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !same_secret(csrf, &session.csrf) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "missing or wrong X-Syncmgr-CSRF header (reload the page)",
            ));
        }
    }
    Ok(Caller::Browser(session))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_are_allowed_with_or_without_a_port() {
        for host in [
            "localhost",
            "localhost:8734",
            "LOCALHOST.:1",
            "127.0.0.1:8734",
            "[::1]:8734",
            "[::1]",
        ] {
            assert!(host_allowed(host, None), "{host}");
        }
    }

    #[test]
    fn other_names_are_refused_unless_configured() {
        for host in [
            "evil.example:8734",
            "127.0.0.2:8734",
            "",
            "localhost.evil.example",
            "[::2]:1",
        ] {
            assert!(!host_allowed(host, None), "{host}");
        }
        assert!(host_allowed("sync.lan:8734", Some("sync.lan")));
        assert!(!host_allowed("other.lan:8734", Some("sync.lan")));
    }

    #[test]
    fn cookies_and_keys_are_read_from_their_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; syncmgr_session=abc; b=2"),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "c"), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k1"));
        assert_eq!(api_key(&headers), Some("k1"));
        headers.remove(header::AUTHORIZATION);
        headers.insert("x-api-key", HeaderValue::from_static("k2"));
        assert_eq!(api_key(&headers), Some("k2"));
    }
}
