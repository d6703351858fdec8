//! The dashboard (issue 11): every route of the REST API against a real
//! daemon, every security rule of `docs/dashboard.md`, the page, the event
//! stream with its replay, and `/metrics`. Requests go through the bare
//! client of `syncmgr_testkit::http`, so a test sends exactly the headers
//! it means to (a wrong `Host`, a foreign `Origin`, none at all).

use std::collections::BTreeMap;
use std::fs;

use serde_json::{Value, json};
use syncmgr_testkit::http::{self, EventStream, Response};

use crate::contract::{check, schemas};
use crate::util::{PATIENCE, TestHome, wait_until};

/// The dashboard of a home's daemon, reached with its API key.
pub struct Web(pub http::Api);

impl std::ops::Deref for Web {
    type Target = http::Api;

    fn deref(&self) -> &http::Api {
        &self.0
    }
}

impl Web {
    /// Starts the home's daemon (if none runs) and finds its dashboard.
    pub fn of(home: &mut TestHome) -> Web {
        if home.daemon_pid().is_none() {
            home.start_daemon();
        }
        let status = home.json(&["status", "--json"]);
        let url = status["daemon"]["web"]["url"]
            .as_str()
            .unwrap_or_else(|| panic!("no dashboard in {status:#}"))
            .to_owned();
        let address = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let key = fs::read_to_string(home.path().join("api-key"))
            .expect("the daemon wrote the API key")
            .trim()
            .to_owned();
        Web(http::Api { address, key })
    }

    /// Logs a browser in: its cookie header and CSRF token.
    pub fn browser(&self) -> Browser {
        let login = http::log_in(&self.address, &self.key);
        Browser {
            address: self.address.clone(),
            cookie: login.cookie,
            csrf: login.csrf,
            page: login.page,
        }
    }
}

/// A folder mirror `files` (with `--delete`) of four files: its source and
/// target.
pub fn mirror_with_delete(home: &TestHome) -> (std::path::PathBuf, std::path::PathBuf) {
    let (src, dst) = (home.path().join("src"), home.path().join("dst"));
    fs::create_dir(&src).unwrap();
    for f in ["a", "b", "c", "d"] {
        fs::write(src.join(f), f).unwrap();
    }
    home.ok(&[
        "register",
        "files",
        "--folder",
        src.to_str().unwrap(),
        dst.to_str().unwrap(),
        "--delete",
    ]);
    (src, dst)
}

/// A two-way pair `pair` of two folders, `left` holding `notes.txt`
/// ("base"): its folders.
pub fn two_way_pair(home: &TestHome) -> (std::path::PathBuf, std::path::PathBuf) {
    let (left, right) = (home.path().join("left"), home.path().join("right"));
    fs::create_dir(&left).unwrap();
    fs::create_dir(&right).unwrap();
    fs::write(left.join("notes.txt"), "base\n").unwrap();
    home.ok(&[
        "register",
        "pair",
        "--two-way",
        left.to_str().unwrap(),
        right.to_str().unwrap(),
    ]);
    (left, right)
}

/// Runs a session of `targets` through the API and waits for its end.
pub fn run_to_end(web: &Web, targets: &[&str]) -> Value {
    let id = web.ok("POST", "/api/v1/sync", Some(&json!({"targets": targets})))["session"].clone();
    let mut last = Value::Null;
    assert!(wait_until(PATIENCE, || {
        last = web.ok("GET", "/api/v1/history?limit=1", None)[0].clone();
        last["id"] == id && !last["outcome"].is_null()
    }));
    last
}

/// Syncs `files` once, deletes three of its four sources and syncs again:
/// the mass-delete guard refuses (an actionable entry) and the target
/// keeps its files.
pub fn trip_the_guard(web: &Web, src: &std::path::Path, dst: &std::path::Path) {
    run_to_end(web, &["files"]);
    for f in ["a", "b", "c"] {
        fs::remove_file(src.join(f)).unwrap();
    }
    assert_eq!(run_to_end(web, &["files"])["outcome"], "failed");
    assert!(dst.join("a").exists(), "the guard held");
}

/// A logged-in browser.
pub struct Browser {
    address: String,
    cookie: String,
    csrf: String,
    page: Response,
}

impl Browser {
    fn call(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        let mut headers = vec![("Cookie", self.cookie.as_str())];
        headers.extend_from_slice(extra);
        http::request(&self.address, method, path, &headers, body)
    }
}

/// A home with a slow handler and a dashboard.
fn home_with_slow_handler() -> (TestHome, Web) {
    let mut home = TestHome::inline();
    home.register(
        "slow",
        &["--items", "a,b", "--steps", "400", "--step-ms", "25"],
    );
    let web = Web::of(&mut home);
    (home, web)
}

#[test]
fn every_security_rule_holds() {
    let (home, web) = home_with_slow_handler();
    let address = web.address.clone();
    let get =
        |path: &str, headers: &[(&str, &str)]| http::request(&address, "GET", path, headers, None);

    // Health needs nothing; every answer carries the security headers.
    let health = get("/api/health", &[]);
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), json!({"ok": true}));
    for response in [&health, &get("/api/v1/status", &[]), &get("/nowhere", &[])] {
        assert_eq!(
            response.header("content-security-policy"),
            Some("default-src 'self'; frame-ancestors 'none'")
        );
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(
            response.header("access-control-allow-origin"),
            None,
            "no CORS"
        );
    }

    // Rule 1: a Host that is not this machine's loopback is DNS rebinding.
    for host in [
        "evil.example",
        "evil.example:80",
        "127.0.0.2",
        "localhost.evil.example",
    ] {
        let refused = get("/api/health", &[("Host", host)]);
        assert_eq!(refused.status, 403, "Host {host}: {}", refused.body);
        let refused = get(
            "/api/v1/status",
            &[("Host", host), ("Authorization", &web.bearer())],
        );
        assert_eq!(refused.status, 403, "even with the key, Host {host}");
    }
    for host in ["localhost", "[::1]:1", "127.0.0.1"] {
        assert_eq!(
            get("/api/health", &[("Host", host)]).status,
            200,
            "Host {host}"
        );
    }

    // Rule 2: no auth, a wrong key, a wrong cookie: 401 everywhere but health.
    for path in [
        "/",
        "/api/v1/status",
        "/api/v1/log",
        "/api/v1/events",
        "/metrics",
        "/api/openapi.json",
    ] {
        assert_eq!(get(path, &[]).status, 401, "{path} without auth");
        assert_eq!(
            get(
                path,
                &[("Authorization", "Bearer 00112233445566778899aabbccddeeff")]
            )
            .status,
            401,
            "{path} with a wrong key"
        );
        assert_eq!(get(path, &[("X-API-Key", "nope")]).status, 401, "{path}");
        assert_eq!(
            get(path, &[("Cookie", "syncmgr_session=forged")]).status,
            401,
            "{path} with a forged cookie"
        );
    }
    assert_eq!(
        get("/api/v1/status", &[("X-API-Key", &web.key)]).status,
        200
    );
    let key_mode = {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(home.path().join("api-key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(key_mode, 0o600, "the API key file is private");
    assert!(web.key.len() >= 32, "at least 128 bits");

    // Rule 3: a browser's state change needs its CSRF token and our origin.
    let browser = web.browser();
    let sync = json!({"targets": ["slow/a"]}).to_string();
    let no_csrf = browser.call("POST", "/api/v1/sync", &[], Some(&sync));
    assert_eq!(no_csrf.status, 403, "{}", no_csrf.body);
    let wrong_csrf = browser.call(
        "POST",
        "/api/v1/sync",
        &[("X-Syncmgr-CSRF", "0000")],
        Some(&sync),
    );
    assert_eq!(wrong_csrf.status, 403);
    let origin = format!("http://{}", web.address);
    let cross = browser.call(
        "POST",
        "/api/v1/sync",
        &[
            ("X-Syncmgr-CSRF", &browser.csrf),
            ("Origin", "http://evil.example"),
        ],
        Some(&sync),
    );
    assert_eq!(cross.status, 403, "a cross-origin POST: {}", cross.body);
    let no_session: Vec<Value> = home
        .json(&["history", "--json"])
        .as_array()
        .unwrap()
        .clone();
    assert!(no_session.is_empty(), "nothing refused ran: {no_session:?}");
    // A GET never changes state.
    for path in ["/api/v1/sync", "/api/v1/cancel", "/api/v1/log/1/show"] {
        let refused = browser.call("GET", path, &[], None);
        assert_eq!(refused.status, 405, "GET {path}: {}", refused.body);
    }
    // The same request, as the page sends it, goes through.
    let accepted = browser.call(
        "POST",
        "/api/v1/sync",
        &[("X-Syncmgr-CSRF", &browser.csrf), ("Origin", &origin)],
        Some(&sync),
    );
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    let session = accepted.json()["session"].as_str().unwrap().to_owned();
    // Stop it once it runs (a queued session has no one to tell yet).
    assert!(wait_until(PATIENCE, || {
        web.call("POST", "/api/v1/cancel", Some(&json!({"targets": []})))
            .status
            == 200
    }));
    assert!(wait_until(PATIENCE, || {
        home.json(&["history", "--json"])[0]["outcome"] == "cancelled"
            && home.json(&["history", "--json"])[0]["id"] == session.as_str()
    }));

    // Rule 5: bodies are bounded, and errors say nothing of our insides.
    let big = format!("{{\"targets\": [\"{}\"]}}", "x".repeat(100_000));
    let refused = web.call(
        "POST",
        "/api/v1/sync",
        Some(&serde_json::from_str(&big).unwrap()),
    );
    assert_eq!(refused.status, 413, "{}", refused.body);
    let bad = web.call(
        "POST",
        "/api/v1/sync",
        Some(&json!({"targets": "slow", "argv": ["sh"]})),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.json()["error"].is_string());
}

#[test]
fn names_from_handlers_are_shown_as_text() {
    let mut home = TestHome::inline();
    let hostile = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>";
    home.register("evil", &["--items", "a", "--name", hostile]);
    let web = Web::of(&mut home);
    let browser = web.browser();
    let page = &browser.page.body;
    assert!(
        page.contains(
            "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"
        ),
        "the name, escaped: {page}"
    );
    assert!(!page.contains("<script>alert"), "raw script in the page");
    assert!(!page.contains("<img src=x"), "raw tag in the page");
    // There is no inline script at all: only the one file.
    assert_eq!(page.matches("<script").count(), 1, "{page}");
    assert!(page.contains("<script src=\"/assets/app.js\" defer></script>"));
    // The script builds the DOM with textContent only.
    let script = http::request(&web.address, "GET", "/assets/app.js", &[], None).body;
    assert!(script.contains("textContent"));
    assert!(
        !script.contains("innerHTML"),
        "the script must never set HTML"
    );
    assert!(!script.contains("eval("));
}

#[test]
fn every_route_answers_in_its_documented_shape() {
    let all = schemas();
    let conforms = |name: &str, value: &Value| {
        let errors = check(&all, &all[name], value, name);
        assert!(errors.is_empty(), "{}\n{value:#}", errors.join("\n"));
    };
    let (home, web) = home_with_slow_handler();
    home.register("quick", &["--items", "x,y", "--fail", "y"]);

    // The same shapes as the command line, for the same things.
    let status = web.ok("GET", "/api/v1/status", None);
    conforms("status", &status);
    assert_eq!(status["daemon"]["web"]["remote"], false);
    let handlers = web.ok("GET", "/api/v1/handlers", None);
    conforms("handlers", &handlers);
    assert_eq!(handlers, home.json(&["handlers", "--json"]));
    let items = web.ok("GET", "/api/v1/items?event=idle", None);
    conforms("items", &items);
    assert_eq!(items, home.json(&["items", "--event", "idle", "--json"]));

    // A choice made in the dashboard is the command line's choice.
    let choice = json!({"handler": "quick", "item": "x", "event": "scheduled", "checked": false});
    conforms("choice", &choice);
    conforms("choice", &web.ok("PUT", "/api/v1/choices", Some(&choice)));
    let rows = home.json(&["items", "quick", "--event", "scheduled", "--json"]);
    let x = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["item"] == "x")
        .unwrap();
    assert_eq!(x["checked"], false, "{rows:#}");
    let unknown = web.call(
        "PUT",
        "/api/v1/choices",
        Some(&json!({"handler": "quick", "item": "nope", "event": "manual", "checked": true})),
    );
    assert_eq!(unknown.status, 400);
    conforms("apiError", &unknown.json());

    // Sync: a session id, then its end in the history.
    let request = json!({"targets": ["quick"]});
    conforms("syncRequest", &request);
    let started = web.ok("POST", "/api/v1/sync", Some(&request));
    conforms("sessionRef", &started);
    let id = started["session"].as_str().unwrap().to_owned();
    assert!(wait_until(PATIENCE, || {
        let history = web.ok("GET", "/api/v1/history?limit=5", None);
        history[0]["id"] == id.as_str() && history[0]["outcome"] == "failed"
    }));
    let history = web.ok("GET", "/api/v1/history", None);
    conforms("history", &history);
    assert_eq!(history[0]["reason"], "requested in the dashboard");
    assert_eq!(history, home.json(&["history", "--json"]));
    let refused = web.call(
        "POST",
        "/api/v1/sync",
        Some(&json!({"targets": ["nobody"]})),
    );
    assert_eq!(refused.status, 400);
    assert!(refused.json()["error"].as_str().unwrap().contains("nobody"));

    // The results log and its filters.
    let log = web.ok("GET", "/api/v1/log", None);
    conforms("log", &log);
    assert_eq!(log, home.json(&["log", "--json"]));
    let errors = web.ok("GET", "/api/v1/log?level=error&handler=quick", None);
    assert!(!errors.as_array().unwrap().is_empty());
    assert!(
        errors
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["level"] == "error")
    );
    let last = log.as_array().unwrap().last().unwrap()["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        web.ok("GET", &format!("/api/v1/log?after={last}"), None),
        json!([])
    );
    assert_eq!(web.call("GET", "/api/v1/log?level=loud", None).status, 400);

    // Act on the failed item's entry: its handler retries it.
    let entry = errors
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["actionable"] == true)
        .unwrap();
    let entry_id = entry["id"].as_i64().unwrap();
    conforms("showRequest", &json!({}));
    let shown = web.ok(
        "POST",
        &format!("/api/v1/log/{entry_id}/show"),
        Some(&json!({})),
    );
    conforms("sessionRef", &shown);
    assert!(wait_until(PATIENCE, || {
        web.ok("GET", "/api/v1/history?limit=1", None)[0]["id"] == shown["session"]
            && web.ok("GET", "/api/v1/history?limit=1", None)[0]["outcome"] == "succeeded"
    }));

    // Deleting an entry.
    let first = log.as_array().unwrap()[0]["id"].as_i64().unwrap();
    let deleted = web.call("DELETE", &format!("/api/v1/log/{first}"), None);
    assert_eq!(deleted.status, 204);
    assert_eq!(
        web.call("DELETE", &format!("/api/v1/log/{first}"), None)
            .status,
        400
    );
    assert_eq!(
        web.call("DELETE", "/api/v1/log/notanumber", None).status,
        400
    );

    // Schedules: add, list (as the command line lists them), remove.
    let new = json!({"name": "hourly", "every": "1h", "targets": ["quick"]});
    conforms("newSchedule", &new);
    let added = web.call("POST", "/api/v1/schedules", Some(&new));
    assert_eq!(added.status, 201, "{}", added.body);
    let listed = web.ok("GET", "/api/v1/schedules", None);
    conforms("schedules", &listed);
    assert_eq!(listed, home.json(&["schedule", "list", "--json"]));
    assert_eq!(listed[0]["name"], "hourly");
    assert_eq!(
        web.call("POST", "/api/v1/schedules", Some(&new)).status,
        400,
        "twice"
    );
    let bad = web.call(
        "POST",
        "/api/v1/schedules",
        Some(&json!({"name": "x", "every": "1h", "cron": "* * * * *"})),
    );
    assert_eq!(bad.status, 400);
    assert_eq!(
        web.call("DELETE", "/api/v1/schedules/hourly", None).status,
        204
    );
    assert_eq!(
        web.call("DELETE", "/api/v1/schedules/hourly", None).status,
        400
    );
    assert_eq!(web.ok("GET", "/api/v1/schedules", None), json!([]));

    // Cancel with nothing running says so.
    let cancel = json!({"targets": ["quick"]});
    conforms("cancelRequest", &cancel);
    let nothing = web.call("POST", "/api/v1/cancel", Some(&cancel));
    assert_eq!(nothing.status, 409, "{}", nothing.body);

    // The OpenAPI document describes these routes with docs/cli.md's shapes.
    let openapi = web.ok("GET", "/api/openapi.json", None);
    let documented: BTreeMap<String, Value> = openapi["components"]["schemas"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (name, schema) in &all {
        let served = documented
            .get(name)
            .unwrap_or_else(|| panic!("openapi.json lacks {name}: run scripts/openapi.py"));
        let expected = schema
            .to_string()
            .replace("\"$ref\":\"", "\"$ref\":\"#/components/schemas/");
        assert_eq!(
            served.to_string(),
            expected,
            "{name}: run scripts/openapi.py"
        );
    }
    for path in [
        "/api/v1/status",
        "/api/v1/handlers",
        "/api/v1/items",
        "/api/v1/choices",
        "/api/v1/sync",
        "/api/v1/cancel",
        "/api/v1/log",
        "/api/v1/log/{id}",
        "/api/v1/log/{id}/show",
        "/api/v1/history",
        "/api/v1/schedules",
        "/api/v1/schedules/{name}",
        "/api/v1/events",
        "/metrics",
    ] {
        assert!(
            openapi["paths"][path].is_object(),
            "openapi.json lacks {path}"
        );
    }
}

#[test]
fn events_stream_live_with_rising_ids_and_replay() {
    let (home, web) = home_with_slow_handler();
    let browser = web.browser();
    let cookie = [("Cookie", browser.cookie.as_str())];
    let mut stream = EventStream::open(&web.address, "/api/v1/events", &cookie);
    assert_eq!(stream.status, 200);
    assert!(
        stream
            .headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream"))
    );
    home.register("quick", &["--items", "x"]);
    web.ok("POST", "/api/v1/sync", Some(&json!({"targets": ["quick"]})));
    let mut ids = Vec::new();
    let mut kinds = Vec::new();
    stream.wait_for(PATIENCE, |e| {
        ids.push(e.id.clone().unwrap().parse::<u64>().unwrap());
        let event: Value = serde_json::from_str(&e.data).unwrap();
        kinds.push(event["event"].as_str().unwrap().to_owned());
        event["event"] == "sessionFinished"
    });
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids rise by one: {ids:?}"
    );
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("queued"),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"sessionStarted".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"item".to_owned()), "{kinds:?}");

    // A browser that comes back with Last-Event-ID gets what it missed.
    let from = ids[1].to_string();
    let mut replay = EventStream::open(
        &web.address,
        "/api/v1/events",
        &[cookie[0], ("Last-Event-ID", &from)],
    );
    let first = replay.next(PATIENCE).expect("a replayed event");
    assert_eq!(first.id.as_deref(), Some(ids[2].to_string().as_str()));
    // One that asks for more than the server holds is told to resync.
    let mut lost = EventStream::open(&web.address, "/api/v1/events?after=999999", &cookie);
    let resync = lost.next(PATIENCE).expect("a resync event");
    assert_eq!(resync.event.as_deref(), Some("resync"));
    let bad = http::request(
        &web.address,
        "GET",
        "/api/v1/events",
        &[cookie[0], ("Last-Event-ID", "x")],
        None,
    );
    assert_eq!(bad.status, 400);
}

#[test]
fn metrics_count_sessions_items_and_logs() {
    let (home, web) = home_with_slow_handler();
    home.register("quick", &["--items", "x,y", "--fail", "y"]);
    let started = web.ok("POST", "/api/v1/sync", Some(&json!({"targets": ["quick"]})));
    assert!(wait_until(PATIENCE, || {
        web.ok("GET", "/api/v1/history?limit=1", None)[0]["id"] == started["session"]
            && !web.ok("GET", "/api/v1/history?limit=1", None)[0]["outcome"].is_null()
    }));
    let scrape = || web.call("GET", "/metrics", None);
    assert!(wait_until(PATIENCE, || scrape()
        .body
        .contains("syncmgr_sessions_total{")));
    let metrics = scrape();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    for line in [
        "syncmgr_sessions_total{trigger=\"manual\",outcome=\"failed\"} 1",
        "syncmgr_items_total{handler=\"quick\",status=\"failed\"} 1",
        "syncmgr_items_total{handler=\"quick\",status=\"succeeded\"} 1",
        "syncmgr_item_last_success_timestamp_seconds{handler=\"quick\",item=\"x\"}",
        "syncmgr_registration_state{handler=\"quick\",state=\"idle\"} 1",
        "syncmgr_registration_state{handler=\"slow\",state=\"running\"} 0",
        "syncmgr_log_entries_total{level=\"error\"}",
        "syncmgr_session_duration_seconds_count 1",
        "syncmgr_events_subscribers 0",
        "syncmgr_build_info{version=\"",
    ] {
        assert!(
            metrics.body.contains(line),
            "{line} missing:\n{}",
            metrics.body
        );
    }
    assert!(
        !metrics.body.contains(home.path().to_str().unwrap()),
        "no path in a label"
    );
    // Without auth: refused, unless the configuration opens it.
    let open = http::request(&web.address, "GET", "/metrics", &[], None);
    assert_eq!(open.status, 401);
}

#[test]
fn metrics_without_auth_and_the_web_settings() {
    let mut home = TestHome::inline();
    fs::write(
        home.path().join("config.toml"),
        "[web]\nmetrics_without_auth = true\nhostname = \"sync.lan\"\n",
    )
    .unwrap();
    let web = Web::of(&mut home);
    let open = http::request(&web.address, "GET", "/metrics", &[], None);
    assert_eq!(open.status, 200, "{}", open.body);
    let named = http::request(
        &web.address,
        "GET",
        "/api/health",
        &[("Host", "sync.lan:8734")],
        None,
    );
    assert_eq!(named.status, 200, "the configured host name");
    // The rest still needs auth.
    assert_eq!(
        http::request(&web.address, "GET", "/api/v1/status", &[], None).status,
        401
    );

    // A non-loopback address needs allow_remote.
    let refused = home.run(&["daemon", "--web", "0.0.0.0:0"]);
    refused
        .assert_code(2)
        .assert_stderr_contains("allow_remote");
}

#[test]
fn the_dashboard_command_prints_a_one_time_login_link() {
    let mut home = TestHome::inline();
    home.run(&["dashboard", "--no-open"])
        .assert_code(1)
        .assert_stderr_contains("no daemon runs");
    let web = Web::of(&mut home);
    let status = home.ok(&["status"]);
    let line = format!(
        "dashboard: http://{}/ (`syncmgr dashboard` opens it)",
        web.address
    );
    assert!(status.stdout.contains(&line), "{}", status.stdout);
    assert!(
        status.stdout.contains("notifications: off (no session bus"),
        "{}",
        status.stdout
    );
    let out = home.ok(&["dashboard", "--no-open"]);
    let link = out.stdout.trim().to_owned();
    let prefix = format!("http://{}/login?token=", web.address);
    assert!(link.starts_with(&prefix), "{link}");
    let path = &link[prefix.len() - "/login?token=".len()..];
    let login = http::request(&web.address, "GET", path, &[], None);
    assert_eq!(login.status, 303);
    assert_eq!(login.header("location"), Some("/"));
    let again = http::request(&web.address, "GET", path, &[], None);
    assert_eq!(again.status, 403, "single use");
}

/// schemathesis (PyPI, pinned by `scripts/test` in a virtual environment):
/// `SYNCMGR_TEST_SCHEMATHESIS`, or `None` when `SYNCMGR_TEST_SKIP_TOOLS`
/// lists `schemathesis`.
fn schemathesis() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("SYNCMGR_TEST_SCHEMATHESIS") {
        return Some(path.into());
    }
    let skip = std::env::var(syncmgr_testkit::SKIP_TOOLS_VAR).unwrap_or_default();
    if skip
        .split(',')
        .any(|t| t.trim() == "schemathesis" || t.trim() == "all")
    {
        return None;
    }
    panic!(
        "this test needs schemathesis: run `scripts/test` (it makes the virtual environment), or set SYNCMGR_TEST_SCHEMATHESIS to its program, or set {}=schemathesis to skip it",
        syncmgr_testkit::SKIP_TOOLS_VAR
    );
}

/// A property-based fuzz of the whole API from its OpenAPI document: no
/// 5xx, every answer in a documented status with the documented shape and
/// content type, bad input refused. Bounded (a few hundred requests) and
/// seeded, so a run is the same every time. Not checked: that every
/// schema-valid body is accepted (a valid shape can name a handler that
/// does not exist) and `ignored_auth` (auth is its own test above);
/// the event stream never ends, so it is left to its own test.
#[test]
fn the_api_holds_up_under_schemathesis() {
    let Some(program) = schemathesis() else {
        return;
    };
    let (home, web) = home_with_slow_handler();
    home.register("quick", &["--items", "x,y", "--fail", "y"]);
    let out = std::process::Command::new(program)
        .args([
            "run",
            &format!("http://{}/api/openapi.json", web.address),
            "--header",
            &format!("Authorization: {}", web.bearer()),
            "--exclude-path",
            "/api/v1/events",
            "--checks",
            "all",
            "--exclude-checks",
            "ignored_auth,positive_data_acceptance",
            "--max-examples",
            "15",
            "--seed",
            "20261206",
            "--workers",
            "1",
            "--no-color",
            "--report-dir",
            home.path().join("schemathesis").to_str().unwrap(),
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(home.path())
        .output()
        .expect("schemathesis runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Tested: 19"),
        "every operation but the stream was tested:\n{text}"
    );
    // The daemon is still there and well.
    assert_eq!(web.ok("GET", "/api/health", None), json!({"ok": true}));
}

/// Sync Center's Conflicts view: the open conflicts as `conflicts --json`
/// lists them, one with its diff, a decision through the API (the session
/// applies it and syncs, the page's list follows the events), and bad
/// decisions refused.
#[test]
fn conflicts_are_listed_and_decided_in_the_dashboard() {
    let mut home = TestHome::inline();
    let (left, right) = two_way_pair(&home);
    let web = Web::of(&mut home);
    assert_eq!(run_to_end(&web, &["pair"])["outcome"], "succeeded");
    fs::write(left.join("notes.txt"), "left\n").unwrap();
    fs::write(right.join("notes.txt"), "right\n").unwrap();
    run_to_end(&web, &["pair"]);

    let listed = web.ok("GET", "/api/v1/conflicts", None);
    assert_eq!(listed, home.json(&["conflicts", "--json"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed:#}");
    let id = listed[0]["id"].as_i64().unwrap();
    let detail = web.ok("GET", &format!("/api/v1/conflicts/{id}"), None);
    assert_eq!(
        detail,
        home.json(&["conflicts", "show", &id.to_string(), "--json"])
    );
    assert!(detail["diff"].as_str().unwrap().contains("+right"));
    // The page shows it, with a notice.
    let page = web.browser().page.body;
    assert!(page.contains("data-notice=\"conflicts\""), "{page}");
    assert!(
        page.contains(&format!("class=\"conflict\" data-id=\"{id}\"")),
        "{page}"
    );

    // Bad decisions: an unknown conflict, a version it does not have, a
    // body of the wrong shape.
    let path = format!("/api/v1/conflicts/{id}/resolve");
    assert_eq!(
        web.call(
            "POST",
            "/api/v1/conflicts/999/resolve",
            Some(&json!({"keep": 0}))
        )
        .status,
        400
    );
    assert_eq!(
        web.call("POST", &path, Some(&json!({"keep": 7}))).status,
        400
    );
    assert_eq!(
        web.call("POST", &path, Some(&json!({"keep": "all"})))
            .status,
        400
    );
    assert_eq!(web.call("GET", "/api/v1/conflicts/999", None).status, 400);

    // Keep the second version: applied, synced to both sides, gone.
    let bearer = format!("Bearer {}", web.key);
    let mut events = EventStream::open(
        &web.address,
        "/api/v1/events",
        &[("Authorization", bearer.as_str())],
    );
    let accepted = web.call("POST", &path, Some(&json!({"keep": 1})));
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    events.wait_for(PATIENCE, |e| {
        e.data.contains("\"event\":\"conflictResolved\"")
    });
    // (Between the decision and its sync, the losing version is in the
    // trash and the path empty on its side.)
    assert!(wait_until(PATIENCE, || {
        fs::read_to_string(left.join("notes.txt")).ok().as_deref() == Some("right\n")
    }));
    assert_eq!(web.ok("GET", "/api/v1/conflicts", None), json!([]));
}
