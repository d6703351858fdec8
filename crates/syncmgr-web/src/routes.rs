//! The routes: the page, the REST API (`/api/v1`), events, metrics, login.
//! Every answer is a `syncmgr_api` shape; every failure
//! `{"error": TEXT}` with a status that says whose fault it was (4xx: the
//! request's; 409: not now; 503: no daemon; 500: ours, with the details in
//! the daemon's log, never in the answer).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use syncmgr_api::{self as api, DaemonRequest, SyncReply};
use syncmgr_manager::views::{self, LogQuery};
use syncmgr_manager::{ManagerError, client};
use syncmgr_store::Store;

use crate::AppState;
use crate::security::{COOKIE, Caller, refuse};

/// The largest request body taken (a schedule, a choice: tiny).
const MAX_BODY: usize = 64 * 1024;
/// What sessions started from the dashboard use (`sync`'s defaults).
const MAX_CONCURRENT: usize = 4;
const GRACE: Duration = Duration::from_secs(5);
/// How many handlers are asked for their items at once.
pub(crate) const ITEMS_CONCURRENCY: usize = 4;

const OPENAPI: &str = include_str!("../assets/openapi.json");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/app.css");

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/status", get(status))
        .route("/handlers", get(handlers))
        .route("/items", get(items))
        .route("/choices", put(choose))
        .route("/sync", post(sync))
        .route("/cancel", post(cancel))
        .route("/log", get(log))
        .route("/log/{id}", delete(delete_log))
        .route("/log/{id}/show", post(show_error))
        .route("/conflicts", get(conflicts))
        .route("/conflicts/{id}", get(conflict))
        .route("/conflicts/{id}/resolve", post(resolve))
        .route("/history", get(history))
        .route("/schedules", get(schedules).post(add_schedule))
        .route("/schedules/{name}", delete(remove_schedule))
        .route("/events", get(events))
        .route("/login-token", post(login_token));
    Router::new()
        .route("/", get(crate::page::page))
        .route("/login", get(login))
        .route("/assets/app.js", get(script))
        .route("/assets/app.css", get(style))
        .route("/api/health", get(health))
        .route("/api/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            crate::security::check,
        ))
        .with_state(state)
}

/// A failed request.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    body: api::ApiError,
}

impl Failure {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Failure {
        Failure {
            status,
            body: api::ApiError {
                error: error.into(),
                confirm: None,
            },
        }
    }

    fn internal(what: &str, error: &dyn std::fmt::Display) -> Failure {
        tracing::error!(%error, "dashboard: {what}");
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what}; the daemon's log says why"),
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<ManagerError> for Failure {
    fn from(e: ManagerError) -> Failure {
        match e {
            ManagerError::Usage(text) => Failure::new(StatusCode::BAD_REQUEST, text),
            ManagerError::NotNow(text) => Failure::new(StatusCode::CONFLICT, text),
            ManagerError::NoDaemon => Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ManagerError::NoDaemon.to_string(),
            ),
            // A handler's own words about why it could not be asked.
            ManagerError::Handler(text) => Failure::new(StatusCode::BAD_GATEWAY, text),
            other => Failure::internal("the request failed", &other),
        }
    }
}

impl From<api::Refused> for Failure {
    /// The daemon refused: bad input (400), or not now (409).
    fn from(refused: api::Refused) -> Failure {
        let status = if refused.usage {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::CONFLICT
        };
        Failure::new(status, refused.error)
    }
}

impl From<JsonRejection> for Failure {
    /// A body too large is 413; any other bad body (not JSON, not the
    /// shape, no `Content-Type: application/json`) is 400, as every other
    /// bad input.
    fn from(e: JsonRejection) -> Failure {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        Failure::new(status, format!("bad request body: {}", e.body_text()))
    }
}

impl From<QueryRejection> for Failure {
    fn from(e: QueryRejection) -> Failure {
        Failure::new(
            StatusCode::BAD_REQUEST,
            format!("bad query: {}", e.body_text()),
        )
    }
}

impl From<PathRejection> for Failure {
    fn from(e: PathRejection) -> Failure {
        Failure::new(
            StatusCode::BAD_REQUEST,
            format!("bad path: {}", e.body_text()),
        )
    }
}

type Answer<T> = Result<Json<T>, Failure>;

/// Runs `f` with a store of the home on a blocking thread (the store's
/// reads and writes block). `f` may drive async work of the manager's
/// (asking handlers) on this thread.
pub async fn with_store<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Store) -> Result<T, ManagerError> + Send + 'static,
) -> Result<T, Failure> {
    let database = state.home.database();
    tokio::task::spawn_blocking(move || {
        let store = Store::open(&database).map_err(ManagerError::from)?;
        f(&store)
    })
    .await
    .map_err(|e| Failure::internal("a store task failed", &e))?
    .map_err(Failure::from)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"ok": true}))
}

async fn not_found() -> Failure {
    Failure::new(StatusCode::NOT_FOUND, "no such page or API route")
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn openapi() -> Response {
    asset("application/json", OPENAPI)
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    token: String,
}

/// `GET /login?token=`: a one-time token for a session cookie.
async fn login(
    State(state): State<Arc<AppState>>,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let Query(query) = query?;
    let cookie = state
        .sessions
        .log_in(&query.token)
        .map_err(|e| Failure::internal("cannot log in", &e))?;
    let Some(cookie) = cookie else {
        return Ok(refuse(
            StatusCode::FORBIDDEN,
            "this login link was used or has expired: run `syncmgr dashboard` for a new one",
        ));
    };
    let set = format!("{COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/");
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&set).map_err(|e| Failure::internal("cannot log in", &e))?,
    );
    Ok(response)
}

/// `POST /api/v1/login-token` (API key only): a one-time login URL.
async fn login_token(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Answer<api::LoginUrl> {
    if !matches!(caller, Caller::Key) {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            "login links are for the API key's holder (`syncmgr dashboard`)",
        ));
    }
    let token = state
        .sessions
        .login_token()
        .map_err(|e| Failure::internal("cannot make a login token", &e))?;
    // The host the caller reached us by (checked against the allowed ones).
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| state.address.to_string(), str::to_owned);
    Ok(Json(api::LoginUrl {
        url: format!("http://{host}/login?token={token}"),
    }))
}

/// The daemon's status (the `status --json` object).
pub async fn daemon_status(state: &AppState) -> Result<api::Status, Failure> {
    match client::status(&state.home).await {
        Ok(Some(status)) => Ok(status),
        Ok(None) => Err(ManagerError::NoDaemon.into()),
        Err(e) => Err(Failure::internal("the daemon's status", &e)),
    }
}

async fn status(State(state): State<Arc<AppState>>) -> Answer<api::Status> {
    daemon_status(&state).await.map(Json)
}

async fn handlers(State(state): State<Arc<AppState>>) -> Answer<Vec<api::Registration>> {
    with_store(&state, views::registrations).await.map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemsQuery {
    event: Option<String>,
    handler: Option<String>,
}

/// `GET /api/v1/items`: the `items --json` rows (handlers are asked).
async fn items(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ItemsQuery>, QueryRejection>,
) -> Answer<Vec<api::ItemRow>> {
    let Query(query) = query?;
    let handle = tokio::runtime::Handle::current();
    with_store(&state, move |store| {
        let event = views::parse_event(query.event.as_deref().unwrap_or("manual"))?;
        let names: Vec<String> = query.handler.into_iter().collect();
        let found = handle.block_on(views::items(store, &names, event, ITEMS_CONCURRENCY))?;
        Ok(found.rows)
    })
    .await
    .map(Json)
}

/// `PUT /api/v1/choices`: `syncmgr choose`.
async fn choose(
    State(state): State<Arc<AppState>>,
    body: Result<Json<api::Choice>, JsonRejection>,
) -> Answer<api::Choice> {
    let Json(choice) = body?;
    let handle = tokio::runtime::Handle::current();
    let answer = choice.clone();
    with_store(&state, move |store| {
        let event = views::parse_event(&choice.event)?;
        handle.block_on(views::choose(
            store,
            &choice.handler,
            event,
            &choice.item,
            choice.checked,
        ))
    })
    .await?;
    Ok(Json(answer))
}

/// `POST /api/v1/sync`: queues a session in the daemon; answers its id.
async fn sync(
    State(state): State<Arc<AppState>>,
    body: Result<Json<api::SyncRequest>, JsonRejection>,
) -> Answer<api::SessionRef> {
    let Json(request) = body?;
    let mut daemon = client::connect(&state.home)
        .await?
        .ok_or(ManagerError::NoDaemon)?;
    daemon
        .request(&DaemonRequest::Sync {
            targets: request.targets,
            event: request.event,
            cookie: None,
            detach: true,
            replace: false,
            max_concurrent: MAX_CONCURRENT,
            grace_ms: GRACE.as_millis() as u64,
            via: Some("dashboard".to_owned()),
        })
        .await?;
    match daemon.next::<SyncReply>().await? {
        Some(SyncReply::Accepted(accepted)) => Ok(Json(api::SessionRef {
            session: accepted.session,
        })),
        Some(SyncReply::Refused(refused)) => Err(refused.into()),
        None => Err(Failure::internal("the daemon did not answer", &"sync")),
    }
}

/// `POST /api/v1/cancel`: `syncmgr cancel`.
async fn cancel(
    State(state): State<Arc<AppState>>,
    body: Result<Json<api::CancelRequest>, JsonRejection>,
) -> Answer<api::CancelReply> {
    let Json(request) = body?;
    let home = state.home.clone();
    let handle = tokio::runtime::Handle::current();
    let sessions = with_store(&state, move |store| {
        handle.block_on(syncmgr_manager::control::cancel(
            &home,
            store,
            &request.targets,
        ))
    })
    .await?;
    Ok(Json(api::CancelReply { sessions }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogParams {
    level: Option<String>,
    handler: Option<String>,
    session: Option<String>,
    after: Option<i64>,
}

async fn log(
    State(state): State<Arc<AppState>>,
    query: Result<Query<LogParams>, QueryRejection>,
) -> Answer<Vec<api::LogEntry>> {
    let Query(p) = query?;
    let query = LogQuery {
        level: p.level.filter(|l| !l.is_empty()),
        handler: p.handler.filter(|h| !h.is_empty()),
        session: p.session.filter(|s| !s.is_empty()),
        after: p.after,
    };
    with_store(&state, move |store| views::log(store, &query))
        .await
        .map(Json)
}

async fn delete_log(
    State(state): State<Arc<AppState>>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<StatusCode, Failure> {
    let Path(id) = id?;
    with_store(&state, move |store| views::delete_log(store, id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/log/{id}/show`: the showError path. A retry that a guard
/// holds back needs `{"confirm": true}`: without it the answer is 409 with
/// the guard's question, and nothing is retried.
async fn show_error(
    State(state): State<Arc<AppState>>,
    id: Result<Path<i64>, PathRejection>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, Failure> {
    let Path(id) = id?;
    let body =
        body.map_err(|e| Failure::new(e.status(), format!("bad request body: {}", e.body_text())))?;
    // No body at all is `{}`.
    let confirm = if body.is_empty() {
        false
    } else {
        serde_json::from_slice::<api::ShowRequest>(&body)
            .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))?
            .confirm
    };
    let mut daemon = client::connect(&state.home)
        .await?
        .ok_or(ManagerError::NoDaemon)?;
    daemon
        .request(&DaemonRequest::ShowError {
            entry: id,
            max_concurrent: MAX_CONCURRENT,
            grace_ms: GRACE.as_millis() as u64,
        })
        .await?;
    let session = match daemon.next::<SyncReply>().await? {
        Some(SyncReply::Accepted(accepted)) => accepted.session,
        Some(SyncReply::Refused(refused)) => return Err(refused.into()),
        None => return Err(Failure::internal("the daemon did not answer", &"show")),
    };
    // The question, if the retry needs one, comes as the session starts
    // (before any item moves); a session queued behind another of its
    // registration starts later. A task follows it to its end either way
    // (and answers the question), and this request waits a little for
    // the question.
    let (told, question) = tokio::sync::oneshot::channel();
    tokio::spawn(follow_show(daemon, confirm, told));
    let asked = match tokio::time::timeout(SHOW_WAIT, question).await {
        Ok(Ok(asked)) => asked,
        // The follower went (the daemon closed): nothing was asked.
        Ok(Err(_)) => None,
        Err(_) => {
            let queued = (StatusCode::ACCEPTED, Json(api::SessionRef { session }));
            return Ok(queued.into_response());
        }
    };
    match asked {
        Some(question) if !confirm => Err(Failure {
            status: StatusCode::CONFLICT,
            body: api::ApiError {
                error: format!(
                    "{} needs your confirmation before it retries",
                    question.handler
                ),
                confirm: Some(question),
            },
        }),
        _ => Ok(Json(api::SessionRef { session }).into_response()),
    }
}

/// How long `log/{id}/show` waits for the session's question.
const SHOW_WAIT: Duration = Duration::from_secs(5);

/// Follows a `log show` session to its end: says whether it asked a
/// question (as soon as it is asked, or `None` once an item moves without
/// one) and answers the question with `confirm`.
async fn follow_show(
    mut daemon: client::Connection,
    confirm: bool,
    told: tokio::sync::oneshot::Sender<Option<api::ConfirmQuestion>>,
) {
    let mut told = Some(told);
    while let Ok(Some(line)) = daemon.next::<serde_json::Value>().await {
        if let Ok(ask) = serde_json::from_value::<api::ConfirmAsk>(line.clone()) {
            if daemon.answer(confirm).await.is_err() {
                return;
            }
            if let Some(told) = told.take() {
                let _ = told.send(Some(ask.confirm));
            }
            continue;
        }
        let event = line.get("event").and_then(|e| e.as_str());
        if matches!(event, Some("item" | "sessionFinished"))
            && let Some(told) = told.take()
        {
            let _ = told.send(None);
        }
        if event == Some("sessionFinished") {
            return;
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConflictsQuery {
    handler: Option<String>,
}

async fn conflicts(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ConflictsQuery>, QueryRejection>,
) -> Answer<Vec<api::Conflict>> {
    let Query(query) = query?;
    let handler = query.handler.filter(|h| !h.is_empty());
    with_store(&state, move |store| {
        views::conflicts(store, handler.as_deref())
    })
    .await
    .map(Json)
}

async fn conflict(
    State(state): State<Arc<AppState>>,
    id: Result<Path<i64>, PathRejection>,
) -> Answer<api::ConflictDetail> {
    let Path(id) = id?;
    with_store(&state, move |store| views::conflict(store, id))
        .await
        .map(Json)
}

/// `POST /api/v1/conflicts/{id}/resolve`: `conflicts resolve` in the
/// daemon. The session goes on after this answer; its outcome comes as a
/// `conflictResolved` or `conflictRefused` event.
async fn resolve(
    State(state): State<Arc<AppState>>,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<api::ResolveRequest>, JsonRejection>,
) -> Result<Response, Failure> {
    let Path(id) = id?;
    let Json(request) = body?;
    let mut daemon = client::connect(&state.home)
        .await?
        .ok_or(ManagerError::NoDaemon)?;
    daemon
        .request(&DaemonRequest::Resolve {
            decisions: vec![api::Decision {
                conflict: id,
                keep: request.keep,
            }],
            max_concurrent: MAX_CONCURRENT,
            grace_ms: GRACE.as_millis() as u64,
        })
        .await?;
    match daemon.next::<SyncReply>().await? {
        Some(SyncReply::Accepted(accepted)) => Ok((
            StatusCode::ACCEPTED,
            Json(api::SessionRef {
                session: accepted.session,
            }),
        )
            .into_response()),
        Some(SyncReply::Refused(refused)) => Err(refused.into()),
        None => Err(Failure::internal("the daemon did not answer", &"resolve")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Answer<Vec<api::Session>> {
    let Query(query) = query?;
    with_store(&state, move |store| views::history(store, query.limit))
        .await
        .map(Json)
}

async fn schedules(State(state): State<Arc<AppState>>) -> Answer<Vec<api::ScheduleRow>> {
    with_store(&state, |store| views::schedules(store, chrono::Utc::now()))
        .await
        .map(Json)
}

/// Tells the daemon the schedules changed.
async fn reload(state: &AppState) -> Result<(), Failure> {
    Ok(client::reload(&state.home).await?)
}

async fn add_schedule(
    State(state): State<Arc<AppState>>,
    body: Result<Json<api::NewSchedule>, JsonRejection>,
) -> Result<(StatusCode, Json<api::ScheduleRow>), Failure> {
    let Json(new) = body?;
    let name = new.name.clone();
    let rows = with_store(&state, move |store| {
        views::add_schedule(store, &new)?;
        views::schedules(store, chrono::Utc::now())
    })
    .await?;
    reload(&state).await?;
    let row = rows
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| Failure::internal("the schedule was not kept", &name))?;
    Ok((StatusCode::CREATED, Json(row)))
}

async fn remove_schedule(
    State(state): State<Arc<AppState>>,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Failure> {
    let Path(name) = name?;
    with_store(&state, move |store| views::remove_schedule(store, &name)).await?;
    reload(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<u64>,
}

/// `GET /api/v1/events`: server-sent events.
async fn events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let Query(query) = query?;
    let last = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Failure::new(StatusCode::BAD_REQUEST, "Last-Event-ID is not a number")
                })?,
        ),
        None => query.after,
    };
    Ok(crate::events::stream(Arc::clone(&state), last).into_response())
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let status = daemon_status(&state).await.ok();
    let text = state
        .metrics
        .render(status.as_ref(), state.events.subscribers());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}
