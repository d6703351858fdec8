//! Who may use the dashboard: the API key (scripts), browser sessions (a
//! cookie, with a CSRF token each) and the one-time login tokens that
//! `syncmgr dashboard` hands out.
//!
//! The key lives in the home as `api-key` (0600, 256 random bits written as
//! hex); a key file that others could read is replaced, since it may have
//! leaked. Keys and tokens are compared in constant time.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq as _;

use crate::WebError;

/// How long a login token works.
pub const LOGIN_TOKEN_LIFETIME: Duration = Duration::from_secs(120);
/// The most browser sessions kept; the oldest goes first.
const MAX_SESSIONS: usize = 64;
/// The most login tokens outstanding.
const MAX_LOGIN_TOKENS: usize = 16;

/// 256 random bits as 64 hex digits.
pub fn random_token() -> Result<String, WebError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| WebError::Setup(format!("no randomness for a token: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether two secrets are equal, in time that does not depend on where
/// they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Reads the home's API key, creating it (or replacing one others could
/// read) first.
pub fn api_key(path: &Path) -> Result<String, WebError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path)
                .map_err(|e| WebError::io(path, e))?
                .permissions()
                .mode();
            let key = text.trim();
            if mode & 0o077 == 0 && key.len() >= 32 && key.chars().all(|c| c.is_ascii_hexdigit()) {
                return Ok(key.to_owned());
            }
            tracing::warn!(
                path = %path.display(),
                "the API key file was readable by others or not a key: replacing it"
            );
            fs::remove_file(path).map_err(|e| WebError::io(path, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(WebError::io(path, e)),
    }
    let key = random_token()?;
    // Written whole, then renamed into place: a reader (`syncmgr
    // dashboard`) never sees a half-written key.
    let partial = path.with_extension("partial");
    let _ = fs::remove_file(&partial);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| WebError::io(&partial, e))?;
    writeln!(file, "{key}").map_err(|e| WebError::io(&partial, e))?;
    // `mode` is filtered by the umask; make sure.
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o600))
        .map_err(|e| WebError::io(&partial, e))?;
    file.sync_all().map_err(|e| WebError::io(&partial, e))?;
    fs::rename(&partial, path).map_err(|e| WebError::io(path, e))?;
    Ok(key)
}

/// A browser session.
#[derive(Debug, Clone)]
pub struct Session {
    /// What state-changing requests carry in `X-Syncmgr-CSRF`.
    pub csrf: String,
    created: Instant,
}

/// The login tokens and browser sessions of one server.
#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Login token → when it was made.
    logins: Vec<(String, Instant)>,
    /// Session cookie → its session.
    sessions: HashMap<String, Session>,
}

impl Sessions {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new login token, good once within [`LOGIN_TOKEN_LIFETIME`].
    pub fn login_token(&self) -> Result<String, WebError> {
        self.login_token_at(Instant::now())
    }

    /// [`login_token`](Self::login_token) at `now` (tests pass the clock).
    fn login_token_at(&self, now: Instant) -> Result<String, WebError> {
        let token = random_token()?;
        let mut inner = self.inner();
        inner
            .logins
            .retain(|(_, made)| now.duration_since(*made) < LOGIN_TOKEN_LIFETIME);
        if inner.logins.len() >= MAX_LOGIN_TOKENS {
            inner.logins.remove(0);
        }
        inner.logins.push((token.clone(), now));
        Ok(token)
    }

    /// Uses a login token up: a new session's cookie value, or `None` when
    /// the token is unknown, used or expired.
    pub fn log_in(&self, token: &str) -> Result<Option<String>, WebError> {
        self.log_in_at(token, Instant::now())
    }

    /// [`log_in`](Self::log_in) at `now`.
    fn log_in_at(&self, token: &str, now: Instant) -> Result<Option<String>, WebError> {
        let mut inner = self.inner();
        let Some(at) = inner.logins.iter().position(|(t, made)| {
            same_secret(t, token) && now.duration_since(*made) < LOGIN_TOKEN_LIFETIME
        }) else {
            return Ok(None);
        };
        inner.logins.remove(at);
        let cookie = random_token()?;
        let session = Session {
            csrf: random_token()?,
            created: now,
        };
        if inner.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = inner
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        {
            inner.sessions.remove(&oldest);
        }
        inner.sessions.insert(cookie.clone(), session);
        Ok(Some(cookie))
    }

    /// The session a cookie value belongs to.
    pub fn session(&self, cookie: &str) -> Option<Session> {
        let inner = self.inner();
        // Compared one by one in constant time: a map lookup's timing
        // would say how much of a guess was right.
        inner
            .sessions
            .iter()
            .find(|(k, _)| same_secret(k, cookie))
            .map(|(_, s)| s.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_login_token_works_once() {
        let sessions = Sessions::default();
        let token = sessions.login_token().unwrap();
        let cookie = sessions.log_in(&token).unwrap().expect("first use");
        assert!(sessions.session(&cookie).is_some());
        assert!(sessions.log_in(&token).unwrap().is_none(), "second use");
        assert!(sessions.log_in("0000").unwrap().is_none());
        assert!(sessions.session("nope").is_none());
    }

    #[test]
    fn a_login_token_expires_and_a_guess_never_works() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let token = sessions.login_token_at(start).unwrap();
        assert!(
            sessions.log_in_at("00", start).unwrap().is_none(),
            "a wrong token, while a good one waits"
        );
        let almost = start + LOGIN_TOKEN_LIFETIME - Duration::from_millis(1);
        let late = start + LOGIN_TOKEN_LIFETIME;
        assert!(
            sessions.log_in_at(&token, late).unwrap().is_none(),
            "expired"
        );
        let token = sessions.login_token_at(start).unwrap();
        assert!(
            sessions.log_in_at(&token, almost).unwrap().is_some(),
            "just in time"
        );
    }

    #[test]
    fn outstanding_login_tokens_are_bounded_and_expired_ones_dropped() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let first = sessions.login_token_at(start).unwrap();
        let mut last = String::new();
        for _ in 0..MAX_LOGIN_TOKENS {
            last = sessions.login_token_at(start).unwrap();
        }
        assert_eq!(sessions.inner().logins.len(), MAX_LOGIN_TOKENS);
        assert!(
            sessions.log_in_at(&first, start).unwrap().is_none(),
            "the oldest went"
        );
        // A token made later drops the expired ones.
        let later = start + LOGIN_TOKEN_LIFETIME;
        sessions.login_token_at(later).unwrap();
        assert_eq!(sessions.inner().logins.len(), 1);
        assert!(sessions.log_in_at(&last, later).unwrap().is_none());
    }

    #[test]
    fn sessions_have_distinct_csrf_tokens() {
        let sessions = Sessions::default();
        let a = sessions
            .log_in(&sessions.login_token().unwrap())
            .unwrap()
            .unwrap();
        let b = sessions
            .log_in(&sessions.login_token().unwrap())
            .unwrap()
            .unwrap();
        assert_ne!(a, b);
        let (a, b) = (sessions.session(&a).unwrap(), sessions.session(&b).unwrap());
        assert_ne!(a.csrf, b.csrf);
        assert_eq!(a.csrf.len(), 64);
    }

    #[test]
    fn the_number_of_sessions_is_bounded() {
        let sessions = Sessions::default();
        let first = sessions
            .log_in(&sessions.login_token().unwrap())
            .unwrap()
            .unwrap();
        for _ in 0..MAX_SESSIONS {
            sessions
                .log_in(&sessions.login_token().unwrap())
                .unwrap()
                .unwrap();
        }
        assert!(sessions.session(&first).is_none(), "the oldest went");
    }

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }

    #[test]
    fn the_api_key_file_is_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-key");
        let key = api_key(&path).unwrap();
        assert_eq!(key.len(), 64);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(api_key(&path).unwrap(), key, "kept");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let replaced = api_key(&path).unwrap();
        assert_ne!(replaced, key, "a key others could read is replaced");
    }
}
