//! The dashboard in process: a daemon (`daemon::bind`, no OS triggers) and
//! the web server on a free port in a fresh home, on a runtime thread of
//! their own; the test speaks HTTP to it with the bare client of
//! `syncmgr_testkit::http` (exactly the headers it means to send).
//! Registrations are the built-in command handler, written to the store.
//! The crate's own proof of its security rules, routes, event stream and
//! metrics (the command line's suite drives the same server through the
//! binary and a browser).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use syncmgr_manager::Home;
use syncmgr_manager::daemon::{self, DaemonConfig};
use syncmgr_store::{Registration, Store};
use syncmgr_testkit::http::{self, EventStream, Response};
use syncmgr_web::WebConfig;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(15);

fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A handler whose items run these commands (`true` succeeds, `false`
/// fails, `sleep 30` runs until stopped).
fn register(home: &Home, name: &str, items: &[(&str, &[&str])]) {
    let items: Vec<Value> = items
        .iter()
        .map(|(id, argv)| json!({"id": id, "argv": argv}))
        .collect();
    let store = Store::open(&home.database()).expect("store");
    store
        .register(&Registration::builtin(
            name,
            "command",
            json!({"item": items}),
        ))
        .expect("register");
}

/// The daemon and its dashboard, stopped on drop.
struct Server {
    address: String,
    key: String,
    home: Home,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Settings = syncmgr_manager::config::Web;

impl Server {
    fn start(config: impl FnOnce(&mut Settings), setup: impl FnOnce(&Home)) -> Server {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let home = Home::resolve(Some(&dir.path().join("h"))).expect("home");
        setup(&home);
        let mut settings = syncmgr_manager::config::Config::default();
        settings.web.listen = "127.0.0.1:0".to_owned();
        config(&mut settings.web);
        let web = WebConfig::from_settings(&settings.web, None).expect("web settings");
        let stop = CancellationToken::new();
        let (ready, address) = std::sync::mpsc::channel();
        let thread = {
            let (home, stop) = (home.clone(), stop.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Runtime::new().expect("a runtime");
                runtime.block_on(async move {
                    let options = DaemonConfig {
                        config: settings,
                        without_os_triggers: true,
                        ..DaemonConfig::default()
                    };
                    let mut bound = daemon::bind(home.clone(), options).expect("the daemon binds");
                    let dashboard = syncmgr_web::bind(web, &home)
                        .await
                        .expect("the dashboard binds");
                    bound.set_web(dashboard.info());
                    ready.send(dashboard.address().to_string()).expect("ready");
                    let serving = tokio::spawn(dashboard.serve(home, stop.clone()));
                    bound
                        .run(stop.cancelled_owned())
                        .await
                        .expect("the daemon ran");
                    serving.await.expect("joined").expect("the dashboard ran");
                });
            })
        };
        let address = address.recv().expect("the server's address");
        let key_path = home.state.join("api-key");
        assert!(wait_until(|| key_path.exists()), "no API key file");
        let key = std::fs::read_to_string(&key_path)
            .unwrap()
            .trim()
            .to_owned();
        let server = Server {
            address,
            key,
            home,
            stop,
            thread: Some(thread),
            _dir: dir,
        };
        let loopback = [("Host", "127.0.0.1")];
        assert!(wait_until(|| {
            server.request("GET", "/api/health", &loopback, None).status == 200
        }));
        server
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        http::request(&self.address, method, path, headers, body)
    }

    fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], None)
    }

    fn api(&self) -> http::Api {
        http::Api {
            address: self.address.clone(),
            key: self.key.clone(),
        }
    }

    fn bearer(&self) -> String {
        self.api().bearer()
    }

    /// With the API key.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        self.api().call(method, path, body.as_ref())
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.api().ok(method, path, body.as_ref())
    }

    /// Logs a browser in: its `Cookie` header and CSRF token.
    fn log_in(&self) -> (String, String) {
        let login = http::log_in(&self.address, &self.key);
        (login.cookie, login.csrf)
    }

    /// Waits for the session to be the newest and ended; its history row.
    fn finished(&self, session: &Value) -> Value {
        let mut last = Value::Null;
        assert!(
            wait_until(|| {
                last = self.ok("GET", "/api/v1/history?limit=1", None)[0].clone();
                &last["id"] == session && !last["outcome"].is_null()
            }),
            "the session did not end: {last}"
        );
        last
    }
}

/// A finished session's history row says its one item did not run to the
/// end: stopped, or skipped before it started.
fn did_not_run(row: &Value) -> bool {
    let counts = &row["counts"];
    counts["succeeded"] == 0
        && counts["stopped"].as_u64().unwrap_or(0) + counts["skipped"].as_u64().unwrap_or(0) == 1
}

fn no_setup(_: &Home) {}
fn defaults(_: &mut Settings) {}

#[test]
fn requests_from_elsewhere_or_without_credentials_are_refused() {
    let server = Server::start(defaults, no_setup);
    // Every answer carries the security headers, refusals too.
    for response in [
        server.get("/api/health"),
        server.get("/api/v1/status"),
        server.get("/nope"),
    ] {
        assert_eq!(
            response.header("content-security-policy"),
            Some("default-src 'self'; frame-ancestors 'none'")
        );
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(response.header("x-frame-options"), Some("DENY"));
        assert_eq!(response.header("cache-control"), Some("no-store"));
    }
    let health = server.get("/api/health");
    assert_eq!((health.status, health.json()), (200, json!({"ok": true})));
    // DNS rebinding: a foreign Host, even with the key.
    for host in [
        "evil.example",
        "evil.example:8734",
        "localhost.evil.example",
        "127.0.0.2",
    ] {
        let refused = server.request("GET", "/api/health", &[("Host", host)], None);
        assert_eq!(refused.status, 403, "{host}");
        let bearer = server.bearer();
        let with_key = [("Host", host), ("Authorization", bearer.as_str())];
        assert_eq!(
            server
                .request("GET", "/api/v1/status", &with_key, None)
                .status,
            403
        );
    }
    for host in ["localhost", "localhost:1", "[::1]:8734", "127.0.0.1"] {
        let allowed = server.request("GET", "/api/health", &[("Host", host)], None);
        assert_eq!(allowed.status, 200, "{host}");
    }
    // No credentials, wrong ones.
    for path in [
        "/",
        "/api/v1/status",
        "/api/v1/events",
        "/metrics",
        "/api/openapi.json",
    ] {
        let refused = server.get(path);
        assert_eq!(refused.status, 401, "{path}");
        assert!(
            refused.json()["error"]
                .as_str()
                .unwrap()
                .contains("syncmgr dashboard")
        );
        for wrong in [
            ("X-API-Key", "0123"),
            ("Authorization", "Bearer 0123"),
            ("Cookie", "syncmgr_session=0123"),
        ] {
            let refused = server.request("GET", path, &[wrong], None);
            assert_eq!(refused.status, 401, "{path} {wrong:?}");
        }
    }
    // A wrong key is refused even where none is needed.
    let wrong = server.request("GET", "/api/health", &[("X-API-Key", "0123")], None);
    assert_eq!(wrong.status, 401);
    // The right key, either way.
    let key = server.request("GET", "/api/v1/status", &[("X-API-Key", &server.key)], None);
    assert_eq!(key.status, 200);
    assert_eq!(server.call("GET", "/api/v1/status", None).status, 200);
    // The assets are open: they hold nothing of the user's.
    let script = server.get("/assets/app.js");
    assert_eq!(script.status, 200);
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        server.get("/assets/app.css").header("content-type"),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(
        server.call("GET", "/api/openapi.json", None).json()["openapi"],
        "3.1.0"
    );
    // Unknown routes and methods.
    assert_eq!(server.call("GET", "/api/v1/nope", None).status, 404);
    assert_eq!(server.call("GET", "/api/v1/sync", None).status, 405);
    assert_eq!(server.call("DELETE", "/api/v1/status", None).status, 405);
}

#[test]
fn a_browser_needs_its_csrf_token_and_our_origin_to_change_anything() {
    let server = Server::start(defaults, |home| {
        register(home, "quick", &[("a", &["true"])]);
    });
    let (cookie, csrf) = server.log_in();
    let body = json!({"targets": ["quick"]}).to_string();
    let post = |headers: &[(&str, &str)]| {
        let mut all = vec![("Cookie", cookie.as_str())];
        all.extend_from_slice(headers);
        server.request("POST", "/api/v1/sync", &all, Some(&body))
    };
    assert_eq!(post(&[]).status, 403, "no CSRF token");
    assert_eq!(
        post(&[("X-Syncmgr-CSRF", "0123")]).status,
        403,
        "a wrong one"
    );
    let origin = format!("http://{}", server.address);
    let evil = [
        ("X-Syncmgr-CSRF", csrf.as_str()),
        ("Origin", "http://evil.example"),
    ];
    assert_eq!(post(&evil).status, 403);
    let null = [("X-Syncmgr-CSRF", csrf.as_str()), ("Origin", "null")];
    assert_eq!(post(&null).status, 403);
    assert_eq!(
        server.ok("GET", "/api/v1/history", None),
        json!([]),
        "nothing refused ran"
    );
    let accepted = post(&[("X-Syncmgr-CSRF", &csrf), ("Origin", &origin)]);
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    server.finished(&accepted.json()["session"]);
    // Without an Origin header (not every request has one) the token is
    // enough.
    let session = post(&[("X-Syncmgr-CSRF", &csrf)]);
    assert_eq!(session.status, 200);
    server.finished(&session.json()["session"]);
    // A browser reads with its cookie alone.
    let read = server.request("GET", "/api/v1/status", &[("Cookie", &cookie)], None);
    assert_eq!(read.status, 200);
    // Login links are for the key's holder.
    let asked = server.request(
        "POST",
        "/api/v1/login-token",
        &[("Cookie", &cookie), ("X-Syncmgr-CSRF", &csrf)],
        None,
    );
    assert_eq!(asked.status, 403);
    assert_eq!(server.get("/login?token=0123").status, 403);
    assert_eq!(server.get("/login").status, 400, "no token");
}

#[test]
fn the_api_runs_sessions_and_reads_the_store() {
    let server = Server::start(defaults, |home| {
        register(home, "quick", &[("good", &["true"]), ("bad", &["false"])]);
        register(home, "slow", &[("nap", &["sleep", "30"])]);
    });
    let handlers = server.ok("GET", "/api/v1/handlers", None);
    let names: Vec<&str> = handlers
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["quick", "slow"]);
    let items = server.ok("GET", "/api/v1/items?handler=quick", None);
    assert_eq!(items.as_array().unwrap().len(), 2, "{items}");
    assert_eq!(
        server.call("GET", "/api/v1/items?event=never", None).status,
        400
    );
    assert_eq!(
        server
            .call("GET", "/api/v1/items?handler=nobody", None)
            .status,
        400
    );
    assert_eq!(
        server.call("GET", "/api/v1/items?extra=1", None).status,
        400
    );

    // Sync: a failed item, its log entry, the history.
    let request = json!({"targets": ["quick"]});
    let session = server.ok("POST", "/api/v1/sync", Some(request))["session"].clone();
    let row = server.finished(&session);
    assert_eq!(row["outcome"], "failed");
    assert_eq!(row["reason"], "requested in the dashboard");
    assert_eq!(row["counts"]["failed"], 1);
    let errors = server.ok("GET", "/api/v1/log?level=error", None);
    let errors = errors.as_array().unwrap();
    assert!(!errors.is_empty());
    assert!(errors.iter().all(|e| e["level"] == "error"));
    let all = server.ok("GET", "/api/v1/log", None);
    let count = all.as_array().unwrap().len();
    let first = all[0]["id"].as_i64().unwrap();
    let later = server.ok("GET", &format!("/api/v1/log?after={first}"), None);
    assert_eq!(later.as_array().unwrap().len(), count - 1);
    let of_session = format!("/api/v1/log?session={}", session.as_str().unwrap());
    assert_eq!(server.ok("GET", &of_session, None), all);
    assert_eq!(
        server.ok("GET", "/api/v1/log?handler=slow", None),
        json!([])
    );
    assert_eq!(
        server.ok("GET", "/api/v1/log?level=&handler=&session=", None),
        all,
        "empty filters are none"
    );
    assert_eq!(
        server.call("GET", "/api/v1/log?level=loud", None).status,
        400
    );
    assert_eq!(server.call("GET", "/api/v1/log?after=x", None).status, 400);
    let entry = format!("/api/v1/log/{first}");
    assert_eq!(server.call("DELETE", &entry, None).status, 204);
    assert_eq!(server.call("DELETE", &entry, None).status, 400);
    let unknown = server.call("POST", "/api/v1/log/999999/show", Some(json!({})));
    assert_eq!(unknown.status, 400);
    let bad = server.call(
        "POST",
        "/api/v1/log/1/show",
        Some(json!({"confirm": "yes"})),
    );
    assert_eq!(bad.status, 400);

    // A choice is stored and shown.
    let choice = json!({"handler": "quick", "item": "bad", "event": "manual", "checked": false});
    assert_eq!(
        server.ok("PUT", "/api/v1/choices", Some(choice.clone())),
        choice
    );
    let items = server.ok("GET", "/api/v1/items?handler=quick", None);
    let bad = items
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["item"] == "bad")
        .unwrap();
    assert_eq!(bad["checked"], false);
    let unknown = json!({"handler": "quick", "item": "x", "event": "manual", "checked": true});
    let refused = server.call("PUT", "/api/v1/choices", Some(unknown));
    assert_eq!(refused.status, 400);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("no item")
    );
    // Now every checked item succeeds.
    let quick = json!({"targets": ["quick"]});
    let session = server.ok("POST", "/api/v1/sync", Some(quick))["session"].clone();
    assert_eq!(server.finished(&session)["outcome"], "succeeded");

    // Stop: nothing running is 409; a running item is stopped.
    let slow = json!({"targets": ["slow"]});
    assert_eq!(
        server
            .call("POST", "/api/v1/cancel", Some(slow.clone()))
            .status,
        409
    );
    let nobody = json!({"targets": ["nobody"]});
    assert_eq!(
        server.call("POST", "/api/v1/cancel", Some(nobody)).status,
        400
    );
    // A session queued (nothing runs yet, or behind another of the same
    // registration) is stopped as it starts.
    let first = server.ok("POST", "/api/v1/sync", Some(slow.clone()))["session"].clone();
    let item = json!({"targets": ["slow/nap"]});
    let stopped = server.ok("POST", "/api/v1/cancel", Some(item.clone()));
    assert_eq!(stopped, json!({"sessions": 1}));
    // Its item never ran to the end: `stopped` if the cancel found it
    // running, `skipped` if it came before the handler listed it.
    let row = server.finished(&first);
    assert!(did_not_run(&row), "{row}");
    // One running and one queued behind it: both are told.
    let running = server.ok("POST", "/api/v1/sync", Some(slow.clone()))["session"].clone();
    assert!(wait_until(|| {
        let status = server.ok("GET", "/api/v1/status", None);
        status["sessions"][0]["state"] == "running" && status["sessions"][0]["id"] == running
    }));
    let queued = server.ok("POST", "/api/v1/sync", Some(slow))["session"].clone();
    assert_ne!(queued, running);
    let told = server.ok("POST", "/api/v1/cancel", Some(item));
    assert_eq!(told, json!({"sessions": 2}));
    let mut history = Value::Null;
    assert!(
        wait_until(|| {
            history = server.ok("GET", "/api/v1/history?limit=2", None);
            history
                .as_array()
                .unwrap()
                .iter()
                .all(|s| !s["outcome"].is_null() && did_not_run(s))
        }),
        "{history:#}\n{:#}",
        server.ok("GET", "/api/v1/log", None)
    );
    let history = server.ok("GET", "/api/v1/history?limit=2", None);
    assert_eq!(history.as_array().unwrap().len(), 2);
    assert_eq!(
        server.call("GET", "/api/v1/history?limit=-1", None).status,
        400
    );
}

#[test]
fn bad_bodies_are_refused_with_what_was_wrong() {
    let server = Server::start(defaults, |home| {
        register(home, "quick", &[("a", &["true"])]);
    });
    let bearer = server.bearer();
    for (method, path) in [
        ("POST", "/api/v1/sync"),
        ("POST", "/api/v1/cancel"),
        ("PUT", "/api/v1/choices"),
        ("POST", "/api/v1/schedules"),
    ] {
        let headers = [
            ("Authorization", bearer.as_str()),
            ("Content-Type", "application/json"),
        ];
        let not_json = server.request(method, path, &headers, Some("{"));
        assert_eq!(not_json.status, 400, "{method} {path}");
        assert!(
            not_json.json()["error"]
                .as_str()
                .unwrap()
                .starts_with("bad request body")
        );
        let no_type = server.request(method, path, &headers[..1], None);
        assert_eq!(no_type.status, 400, "{method} {path}: no body");
        let extra = server.call(method, path, Some(json!({"targets": [], "argv": ["sh"]})));
        assert_eq!(extra.status, 400, "{method} {path}: {}", extra.body);
        let huge = server.call(method, path, Some(json!({"targets": ["x".repeat(70_000)]})));
        assert_eq!(huge.status, 413, "{method} {path}");
    }
    let huge = json!({"pad": "x".repeat(70_000)});
    assert_eq!(
        server.call("POST", "/api/v1/log/1/show", Some(huge)).status,
        413
    );
    let nobody = json!({"targets": ["nobody"]});
    let refused = server.call("POST", "/api/v1/sync", Some(nobody));
    assert_eq!(refused.status, 400);
    assert!(refused.json()["error"].as_str().unwrap().contains("nobody"));
    let bad_event = json!({"targets": ["quick"], "event": "whenever"});
    assert_eq!(
        server.call("POST", "/api/v1/sync", Some(bad_event)).status,
        400
    );
}

#[test]
fn schedules_are_added_listed_and_removed() {
    let server = Server::start(defaults, |home| {
        register(home, "quick", &[("a", &["true"])]);
    });
    let hourly = json!({"name": "hourly", "every": "1h", "jitter": "1m", "targets": ["quick"]});
    let added = server.call("POST", "/api/v1/schedules", Some(hourly));
    assert_eq!(added.status, 201, "{}", added.body);
    let row = added.json();
    assert_eq!(row["name"], "hourly");
    assert_eq!(row["every"], "1h");
    assert_eq!(row["jitter"], "1m");
    assert_eq!(row["catchUp"], true);
    assert!(row["nextRun"].is_string());
    let nightly =
        json!({"name": "nightly", "cron": "0 3 * * *", "timezone": "UTC", "noCatchUp": true});
    let cron = server.call("POST", "/api/v1/schedules", Some(nightly));
    assert_eq!(cron.status, 201, "{}", cron.body);
    assert_eq!(cron.json()["catchUp"], false);
    assert_eq!(cron.json()["timezone"], "UTC");
    let list = server.ok("GET", "/api/v1/schedules", None);
    assert_eq!(list.as_array().unwrap().len(), 2);
    for bad in [
        json!({"name": "hourly", "every": "1h"}),
        json!({"name": "Bad Name", "every": "1h"}),
        json!({"name": "x", "every": "1h", "cron": "* * * * *"}),
        json!({"name": "x"}),
        json!({"name": "x", "every": "soon"}),
        json!({"name": "x", "every": "0s"}),
        json!({"name": "x", "cron": "not cron"}),
        json!({"name": "x", "cron": "0 3 * * *", "timezone": "Mars/Olympus"}),
        json!({"name": "x", "every": "1h", "jitter": "lots"}),
        json!({"name": "x", "every": "1h", "targets": ["nobody"]}),
    ] {
        let refused = server.call("POST", "/api/v1/schedules", Some(bad.clone()));
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
    }
    // The daemon is told at once: a schedule added here fires within its
    // period (its timer would otherwise look again only within a minute).
    let tick = json!({"name": "tick", "every": "1s", "targets": ["quick"]});
    let added = server.call("POST", "/api/v1/schedules", Some(tick));
    assert_eq!(added.status, 201);
    assert!(wait_until(|| {
        let history = server.ok("GET", "/api/v1/history", None);
        let history = history.as_array().unwrap();
        history.iter().any(|s| s["reason"] == "schedule tick")
    }));
    let removed = server.call("DELETE", "/api/v1/schedules/tick", None);
    assert_eq!(removed.status, 204);
    assert_eq!(
        server
            .call("DELETE", "/api/v1/schedules/hourly", None)
            .status,
        204
    );
    assert_eq!(
        server
            .call("DELETE", "/api/v1/schedules/hourly", None)
            .status,
        400
    );
    let list = server.ok("GET", "/api/v1/schedules", None);
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[test]
fn the_event_stream_numbers_replays_and_resyncs() {
    let server = Server::start(defaults, |home| {
        register(home, "quick", &[("a", &["true"])]);
    });
    let bearer = server.bearer();
    let auth = ("Authorization", bearer.as_str());
    let mut stream = EventStream::open(&server.address, "/api/v1/events", &[auth]);
    assert_eq!(stream.status, 200);
    let subscribers = |n: usize| {
        let line = format!("syncmgr_events_subscribers {n}\n");
        wait_until(|| server.call("GET", "/metrics", None).body.contains(&line))
    };
    assert!(subscribers(1), "the metrics count the subscriber");
    server.ok("POST", "/api/v1/sync", Some(json!({"targets": ["quick"]})));
    let mut seen = Vec::new();
    stream.wait_for(PATIENCE, |e| {
        let id: u64 = e.id.clone().unwrap().parse().unwrap();
        seen.push((id, e.data.clone()));
        e.data.contains("\"sessionFinished\"")
    });
    let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    let expected: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(ids, expected, "from 1, rising by one");
    assert!(seen[0].1.contains("\"queued\""), "{seen:?}");
    drop(stream);
    assert!(subscribers(0), "a browser that went is not counted");

    // Replay after an id, by header or query.
    let mut replay = EventStream::open(
        &server.address,
        "/api/v1/events",
        &[auth, ("Last-Event-ID", "2")],
    );
    assert_eq!(replay.next(PATIENCE).unwrap().id.as_deref(), Some("3"));
    let mut replay = EventStream::open(&server.address, "/api/v1/events?after=3", &[auth]);
    let next = replay.next(PATIENCE).unwrap();
    assert_eq!(next.id.as_deref(), Some("4"));
    assert_eq!(next.data, seen[3].1);
    // An id past the last one (a restarted daemon's) is a gap.
    let mut lost = EventStream::open(&server.address, "/api/v1/events?after=999999", &[auth]);
    let resync = lost.next(PATIENCE).unwrap();
    assert_eq!(resync.event.as_deref(), Some("resync"));
    let last = ids.len().to_string();
    assert_eq!(
        resync.id.as_deref(),
        Some(last.as_str()),
        "the last id there is"
    );
    let bad = [auth, ("Last-Event-ID", "x")];
    assert_eq!(
        server.request("GET", "/api/v1/events", &bad, None).status,
        400
    );
    assert_eq!(
        server.call("GET", "/api/v1/events?after=x", None).status,
        400
    );
}

#[test]
fn metrics_count_what_happened_and_the_page_shows_it() {
    let server = Server::start(
        |web| web.metrics_without_auth = true,
        |home| register(home, "quick", &[("good", &["true"]), ("bad", &["false"])]),
    );
    let request = json!({"targets": ["quick"]});
    let session = server.ok("POST", "/api/v1/sync", Some(request))["session"].clone();
    server.finished(&session);
    // The dashboard counts from the events it follows: wait for the end.
    assert!(wait_until(|| server
        .get("/metrics")
        .body
        .contains("syncmgr_sessions_total{")));
    let metrics = server.get("/metrics");
    assert_eq!(metrics.status, 200, "open with metrics_without_auth");
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for line in [
        "syncmgr_sessions_total{trigger=\"manual\",outcome=\"failed\"} 1\n",
        "syncmgr_items_total{handler=\"quick\",status=\"failed\"} 1\n",
        "syncmgr_items_total{handler=\"quick\",status=\"succeeded\"} 1\n",
        "syncmgr_item_last_success_timestamp_seconds{handler=\"quick\",item=\"good\"} ",
        "syncmgr_registration_state{handler=\"quick\",state=\"idle\"} 1\n",
        "syncmgr_registration_state{handler=\"quick\",state=\"running\"} 0\n",
        "syncmgr_log_entries_total{level=\"error\"} ",
        "syncmgr_session_duration_seconds_count 1\n",
        "syncmgr_build_info{version=\"",
    ] {
        assert!(
            metrics.body.contains(line),
            "{line:?} missing from\n{}",
            metrics.body
        );
    }
    assert!(
        !metrics.body.contains("item=\"bad\""),
        "no success for the failed item"
    );
    // Everything else still needs auth.
    assert_eq!(server.get("/api/v1/status").status, 401);

    // The page: the items, the history, the log, the CSRF token.
    let (cookie, _) = server.log_in();
    let page = server.request("GET", "/", &[("Cookie", &cookie)], None);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let body = &page.body;
    for needle in [
        "data-handler=\"quick\"",
        "data-item=\"good\"",
        "name=\"events-after\"",
        "data-outcome=\"failed\"",
        "data-level=\"error\"",
        "<script src=\"/assets/app.js\" defer></script>",
    ] {
        assert!(body.contains(needle), "{needle} missing from the page");
    }
    assert_eq!(body.matches("<script").count(), 1, "no inline script");
    // The command handler's failures are not actionable: no notice.
    assert!(!body.contains("data-notice=\"actionable\""));
}

#[test]
fn a_configured_host_name_is_allowed_and_remote_addresses_need_allow_remote() {
    let server = Server::start(|web| web.hostname = Some("sync.lan".to_owned()), no_setup);
    for (host, status) in [
        ("sync.lan:8734", 200),
        ("SYNC.LAN", 200),
        ("other.lan", 403),
    ] {
        let answer = server.request("GET", "/api/health", &[("Host", host)], None);
        assert_eq!(answer.status, status, "{host}");
    }
    let status = server.ok("GET", "/api/v1/status", None);
    assert_eq!(status["daemon"]["web"]["remote"], false);
    let url = status["daemon"]["web"]["url"].as_str().unwrap();
    assert_eq!(url, format!("http://{}/", server.address));

    let mut remote = syncmgr_manager::config::Config::default().web;
    remote.listen = "0.0.0.0:0".to_owned();
    let refused = WebConfig::from_settings(&remote, None).unwrap_err();
    assert!(refused.to_string().contains("allow_remote"), "{refused}");
    remote.allow_remote = true;
    assert!(WebConfig::from_settings(&remote, None).is_ok());
    let local = WebConfig::from_settings(&remote, Some("127.0.0.1:9")).unwrap();
    assert_eq!(local.listen.to_string(), "127.0.0.1:9", "--web wins");
    assert!(WebConfig::from_settings(&remote, Some("nowhere")).is_err());
}

#[test]
fn the_command_line_gets_a_login_link_with_the_key() {
    let server = Server::start(defaults, no_setup);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dashboard = format!("http://{}/", server.address);
    let link = runtime
        .block_on(syncmgr_web::login_url(&server.home, &dashboard))
        .expect("a login link");
    let prefix = format!("http://{}/login?token=", server.address);
    assert!(link.starts_with(&prefix), "{link}");
    let login = server.get(&link[link.find("/login").unwrap()..]);
    assert_eq!(login.status, 303, "the link logs in");
    // Not a dashboard's address, nothing listening, a wrong key file.
    let bad = runtime.block_on(syncmgr_web::login_url(&server.home, "ftp://x/"));
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("not a dashboard address")
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nobody = format!("http://127.0.0.1:{port}/");
    let gone = runtime.block_on(syncmgr_web::login_url(&server.home, &nobody));
    assert!(
        gone.unwrap_err()
            .to_string()
            .contains("cannot reach the dashboard")
    );
    std::fs::write(
        server.home.state.join("api-key"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let refused = runtime.block_on(syncmgr_web::login_url(&server.home, &dashboard));
    let refused = refused.unwrap_err().to_string();
    assert!(
        refused.contains("the dashboard refused") && refused.contains("401"),
        "{refused}"
    );
}

/// A folder mirror of four files, with `--delete`: its source and target.
fn mirror(home: &Home, dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (src, dst) = (dir.join("src"), dir.join("dst"));
    std::fs::create_dir(&src).unwrap();
    for f in ["a", "b", "c", "d"] {
        std::fs::write(src.join(f), f).unwrap();
    }
    let config = json!({"pairs": [{"source": src, "target": dst}], "delete": true});
    let store = Store::open(&home.database()).expect("store");
    store
        .register(&Registration::builtin("files", "folder", config))
        .expect("register");
    (src, dst)
}

#[test]
fn a_guarded_retry_asks_and_goes_ahead_only_when_confirmed() {
    let outside = tempfile::tempdir().unwrap();
    let mut folders = None;
    let server = Server::start(defaults, |home| {
        folders = Some(mirror(home, outside.path()))
    });
    let (src, dst) = folders.unwrap();
    let files = json!({"targets": ["files"]});
    let first = server.ok("POST", "/api/v1/sync", Some(files.clone()))["session"].clone();
    assert_eq!(server.finished(&first)["outcome"], "succeeded");
    for f in ["a", "b", "c"] {
        std::fs::remove_file(src.join(f)).unwrap();
    }
    let refused = server.ok("POST", "/api/v1/sync", Some(files))["session"].clone();
    assert_eq!(server.finished(&refused)["outcome"], "failed");
    assert!(dst.join("a").exists(), "the guard held");
    let log = server.ok("GET", "/api/v1/log?level=error", None);
    let entry = log
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["actionable"] == true)
        .unwrap_or_else(|| panic!("an actionable entry in {log}"));
    let show = format!("/api/v1/log/{}/show", entry["id"]);

    // The page says a result needs the user.
    let (cookie, _) = server.log_in();
    let page = server
        .request("GET", "/", &[("Cookie", &cookie)], None)
        .body;
    assert!(page.contains("data-notice=\"actionable\""), "{page}");
    assert!(page.contains("1 result needs your attention"), "{page}");

    // Asked without a confirmation: the guard's question, nothing done.
    let asked = server.call("POST", &show, Some(json!({})));
    assert_eq!(asked.status, 409, "{}", asked.body);
    let question = asked.json();
    assert_eq!(question["confirm"]["handler"], "files");
    assert!(
        question["confirm"]["text"]
            .as_str()
            .unwrap()
            .contains("deletes 3 files of the 4"),
        "{question}"
    );
    let declined = server.ok("GET", "/api/v1/history?limit=1", None)[0]["id"].clone();
    server.finished(&declined);
    assert!(dst.join("a").exists(), "not confirmed: nothing deleted");
    // Confirmed: the retry deletes, and the entry is used up.
    let retry = server.ok("POST", &show, Some(json!({"confirm": true})));
    assert!(retry["session"].is_string(), "{retry}");
    assert!(
        wait_until(|| !dst.join("a").exists()),
        "the confirmed retry deletes"
    );
    assert!(wait_until(|| server
        .call("POST", &show, Some(json!({})))
        .status
        == 400));
    // No body at all is no confirmation.
    assert_eq!(server.call("POST", &show, None).status, 400);
}

#[test]
fn the_page_shows_each_part_of_the_home() {
    let outside = tempfile::tempdir().unwrap();
    let server = Server::start(defaults, |home| {
        register(home, "slow", &[("nap", &["sleep", "30"])]);
        mirror(home, outside.path());
    });
    let hourly = json!({"name": "hourly", "every": "1h", "targets": ["slow"]});
    assert_eq!(
        server
            .call("POST", "/api/v1/schedules", Some(hourly))
            .status,
        201
    );
    let nightly = json!({"name": "nightly", "cron": "0 3 * * *", "timezone": "UTC"});
    assert_eq!(
        server
            .call("POST", "/api/v1/schedules", Some(nightly))
            .status,
        201
    );
    // A body well inside the limit is read (and refused for what it says).
    let many: Vec<String> = (0..2000).map(|i| format!("h{i}")).collect();
    let big = server.call("POST", "/api/v1/sync", Some(json!({"targets": many})));
    assert_eq!(big.status, 400, "{}", big.body);
    // A running item is shown as it is.
    server.ok("POST", "/api/v1/sync", Some(json!({"targets": ["slow"]})));
    let mut status = Value::Null;
    assert!(
        wait_until(|| {
            status = server.ok("GET", "/api/v1/status", None);
            status["sessions"][0]["items"][0]["status"] == "updatingIndeterminate"
        }),
        "{status:#}"
    );
    let (cookie, _) = server.log_in();
    let page = server
        .request("GET", "/", &[("Cookie", &cookie)], None)
        .body;
    // One article per handler, each with its own items and display name.
    let articles: Vec<&str> = page.split("<article class=\"handler\"").skip(1).collect();
    assert_eq!(articles.len(), 2, "{page}");
    let (files, slow) = (articles[0], articles[1]);
    assert!(files.starts_with(" data-handler=\"files\""), "{files}");
    assert!(slow.starts_with(" data-handler=\"slow\""), "{slow}");
    assert!(
        slow.contains("data-item=\"nap\" data-state=\"updatingIndeterminate\""),
        "{slow}"
    );
    assert!(!files.contains("data-item=\"nap\""), "{files}");
    assert!(
        files.contains("<span class=\"display-name\">Folder mirror</span>"),
        "{files}"
    );
    assert!(!slow.contains("Folder mirror"), "{slow}");
    for label in ["Manual", "Schedule", "Idle", "Logon/network", "Logoff"] {
        assert!(page.contains(&format!(">{label}</th>")), "{label}");
    }
    // The schedules, both kinds.
    assert!(page.contains("data-schedule=\"hourly\""));
    assert!(page.contains("every 1h"), "{page}");
    assert!(page.contains("cron &quot;0 3 * * *&quot; in UTC"), "{page}");
    // No OS triggers in this daemon: they are unavailable, manual is not.
    let notice = page
        .split("data-notice=\"triggers\"")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .expect("the triggers notice");
    assert!(
        notice.contains("idle") && notice.contains("logon"),
        "{notice}"
    );
    assert!(
        !notice.contains("manual") && !notice.contains("schedule"),
        "{notice}"
    );
    assert!(!page.contains("reachable from other machines"), "loopback");
    assert!(!page.contains("data-notice=\"actionable\""));
}

#[test]
fn a_dashboard_others_can_reach_says_so() {
    let server = Server::start(
        |web| {
            web.listen = "0.0.0.0:0".to_owned();
            web.allow_remote = true;
        },
        no_setup,
    );
    let host = [("Host", "127.0.0.1")];
    let status = server.request(
        "GET",
        "/api/v1/status",
        &[host[0], ("X-API-Key", &server.key)],
        None,
    );
    assert_eq!(status.json()["daemon"]["web"]["remote"], true);
    let bearer = server.bearer();
    let asked = server.request(
        "POST",
        "/api/v1/login-token",
        &[host[0], ("Authorization", &bearer)],
        None,
    );
    let url = asked.json()["url"].as_str().unwrap().to_owned();
    let path = &url[url.find("/login").unwrap()..];
    let login = server.request("GET", path, &host, None);
    let cookie = login
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = server
        .request("GET", "/", &[host[0], ("Cookie", &cookie)], None)
        .body;
    assert!(page.contains("reachable from other machines"), "{page}");
}
