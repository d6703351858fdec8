//! A bare HTTP/1.1 client for tests of the dashboard: it sends exactly the
//! headers a test gives (a wrong `Host`, a foreign `Origin`, no auth),
//! which an HTTP client crate would "fix", and reads server-sent events
//! from a chunked stream. One request per connection (`Connection: close`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// How long a request may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(60);

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, decoded from chunks when chunked.
    pub body: String,
}

impl Response {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the response when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// A request; `Host` defaults to the address, unless `headers` set one.
pub fn request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let mut stream = open(address, method, path, headers, body);
    let mut reader = BufReader::new(&mut stream);
    let (status, headers) = head(&mut reader);
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let mut raw = Vec::new();
    if chunked {
        while let Some(chunk) = next_chunk(&mut reader) {
            raw.extend(chunk);
        }
    } else {
        reader.read_to_end(&mut raw).expect("read the body");
    }
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&raw).into_owned(),
    }
}

fn open(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> TcpStream {
    let mut stream =
        TcpStream::connect(address).unwrap_or_else(|e| panic!("connect to {address}: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut text = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        text.push_str(&format!("Host: {address}\r\n"));
    }
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        text.push_str("Content-Type: application/json\r\n");
    }
    text.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(text.as_bytes()).expect("send the request");
    stream
}

fn head(reader: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((k, v)) = trimmed.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    (status, headers)
}

/// The next chunk of a chunked body; `None` at its end (or the stream's).
fn next_chunk(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk).ok()?;
    chunk.truncate(size);
    (size > 0).then_some(chunk)
}

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:`.
    pub id: Option<String>,
    /// `event:` (`None` for the default, `message`).
    pub event: Option<String>,
    /// `data:` lines joined.
    pub data: String,
}

/// A server-sent event stream being read.
#[derive(Debug)]
pub struct EventStream {
    /// The response's status and headers.
    pub status: u16,
    /// The response's headers.
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    buffer: String,
}

impl EventStream {
    /// Opens `GET path` as an event stream.
    pub fn open(address: &str, path: &str, headers: &[(&str, &str)]) -> EventStream {
        let stream = open(address, "GET", path, headers, None);
        let mut reader = BufReader::new(stream);
        let (status, headers) = head(&mut reader);
        EventStream {
            status,
            headers,
            reader,
            buffer: String::new(),
        }
    }

    /// The next event (comments and keep-alives skipped), or `None` when
    /// the stream ends or `within` passes.
    pub fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..at + 2).collect();
                let mut event = SseEvent::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if data.is_empty() && event.id.is_none() && event.event.is_none() {
                    continue; // a comment (keep-alive)
                }
                event.data = data.join("\n");
                return Some(event);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let _ = self
                .reader
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let chunk = next_chunk(&mut self.reader)?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads events until one satisfies `wanted`; panics, with what it saw,
    /// when none does within `within`.
    pub fn wait_for(
        &mut self,
        within: Duration,
        mut wanted: impl FnMut(&SseEvent) -> bool,
    ) -> SseEvent {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(event) if wanted(&event) => return event,
                Some(event) => seen.push(event),
                None => break,
            }
        }
        panic!("no such event within {within:?}; saw {seen:#?}");
    }
}

/// A logged-in browser: its `Cookie` header, its CSRF token and the page
/// it was shown.
#[derive(Debug, Clone)]
pub struct Login {
    /// `syncmgr_session=...`.
    pub cookie: String,
    /// The page's `<meta name="csrf">`.
    pub csrf: String,
    /// The page (`GET /`) right after logging in.
    pub page: Response,
}

/// Logs in as `syncmgr dashboard` lets a browser: a login link asked for
/// with the API key, followed once (a second use must be refused), the
/// session cookie (`HttpOnly; SameSite=Strict`) then loading the page.
/// Panics, saying which, when a step does not hold.
pub fn log_in(address: &str, key: &str) -> Login {
    let bearer = format!("Bearer {key}");
    let asked = request(
        address,
        "POST",
        "/api/v1/login-token",
        &[("Authorization", &bearer)],
        None,
    );
    assert_eq!(asked.status, 200, "a login link: {}", asked.body);
    let url = asked.json()["url"]
        .as_str()
        .expect("a login URL")
        .to_owned();
    let prefix = format!("http://{address}");
    let path = url
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{url} is not on {address}"))
        .to_owned();
    assert!(path.starts_with("/login?token="), "{url}");
    let login = request(address, "GET", &path, &[], None);
    assert_eq!(login.status, 303, "{}", login.body);
    assert_eq!(login.header("location"), Some("/"));
    let set = login.header("set-cookie").expect("a session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap_or_default().to_owned();
    let again = request(address, "GET", &path, &[], None);
    assert_eq!(again.status, 403, "a login link works once: {}", again.body);
    let page = request(address, "GET", "/", &[("Cookie", &cookie)], None);
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = page
        .body
        .split("name=\"csrf\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries its CSRF token")
        .to_owned();
    assert_eq!(csrf.len(), 64, "{csrf}");
    Login { cookie, csrf, page }
}

/// The dashboard's API, reached with the home's API key.
#[derive(Debug, Clone)]
pub struct Api {
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// The key (the file `api-key` in the home).
    pub key: String,
}

impl Api {
    /// `Bearer KEY`.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.key)
    }

    /// A request with the API key.
    pub fn call(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> Response {
        let body = body.map(serde_json::Value::to_string);
        request(
            &self.address,
            method,
            path,
            &[("Authorization", &self.bearer())],
            body.as_deref(),
        )
    }

    /// A request that must succeed (2xx); its JSON (`null` for no body).
    pub fn ok(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> serde_json::Value {
        let response = self.call(method, path, body);
        assert!(
            (200..300).contains(&response.status),
            "{method} {path}: {} {}",
            response.status,
            response.body
        );
        if response.body.is_empty() {
            serde_json::Value::Null
        } else {
            response.json()
        }
    }
}
