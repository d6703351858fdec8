//! The page: Sync Center's window, rendered on the server (maud escapes
//! every text it is given) and kept live by `assets/app.js` from the event
//! stream. State the script and the browser tests look for is in `data-*`
//! attributes (`data-handler`, `data-item`, `data-state`, `data-pct`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use syncmgr_api as api;
use syncmgr_core::SyncEvent;
use syncmgr_manager::views::{self, LogQuery};

use crate::AppState;
use crate::routes::{Failure, daemon_status, with_store};
use crate::security::Caller;

/// The events a per-item check box exists for, as SyncMgr's settings tabs.
const EVENTS: [SyncEvent; 5] = [
    SyncEvent::Manual,
    SyncEvent::Scheduled,
    SyncEvent::Idle,
    SyncEvent::Connect,
    SyncEvent::PendingDisconnect,
];

/// How many history rows and log entries the page shows.
const HISTORY_ROWS: usize = 20;
const LOG_ROWS: usize = 200;

/// What the page is made of.
struct Model {
    status: Option<api::Status>,
    registrations: Vec<api::Registration>,
    items: Vec<api::ItemRow>,
    /// `handler` → `item` → event → checked, for the events other than
    /// `manual` (whose rows say it).
    choices: HashMap<String, HashMap<String, HashMap<SyncEvent, bool>>>,
    problems: Vec<String>,
    log: Vec<api::LogEntry>,
    history: Vec<api::Session>,
    schedules: Vec<api::ScheduleRow>,
    conflicts: Vec<api::Conflict>,
}

async fn model(state: &AppState) -> Result<Model, Failure> {
    let status = daemon_status(state).await.ok();
    let handle = tokio::runtime::Handle::current();
    let mut model = with_store(state, move |store| {
        let registrations = views::registrations(store)?;
        let names: Vec<String> = registrations.iter().map(|r| r.name.clone()).collect();
        let found = handle.block_on(views::items(
            store,
            &names,
            SyncEvent::Manual,
            crate::routes::ITEMS_CONCURRENCY,
        ))?;
        let mut choices: HashMap<String, HashMap<String, HashMap<SyncEvent, bool>>> =
            HashMap::new();
        for reg in &names {
            for event in EVENTS.iter().skip(1) {
                for (item, checked) in store.choices(reg, *event)? {
                    choices
                        .entry(reg.clone())
                        .or_default()
                        .entry(item)
                        .or_default()
                        .insert(*event, checked);
                }
            }
        }
        let mut problems: Vec<String> = found
            .failed
            .iter()
            .map(|(name, e)| format!("{name}: its items could not be listed: {e}"))
            .collect();
        problems.extend(
            found
                .declined
                .iter()
                .map(|name| format!("{name} declined to list its items")),
        );
        let mut log = views::log(store, &LogQuery::default())?;
        log.reverse();
        log.truncate(LOG_ROWS);
        Ok(Model {
            status: None,
            registrations,
            items: found.rows,
            choices,
            problems,
            log,
            history: views::history(store, Some(HISTORY_ROWS))?,
            schedules: views::schedules(store, chrono::Utc::now())?,
            conflicts: views::conflicts(store, None)?,
        })
    })
    .await?;
    model.status = status;
    Ok(model)
}

/// `GET /`.
pub async fn page(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Failure> {
    let csrf = match &caller {
        Caller::Browser(session) => session.csrf.clone(),
        _ => String::new(),
    };
    // Taken before the page's data is read: the stream starts from here, so
    // nothing that happens while the page is built is missed.
    let after = state.events.next_id().saturating_sub(1);
    let model = model(&state).await?;
    Ok(axum::response::Html(render(&model, &csrf, after, &state).into_string()).into_response())
}

fn render(model: &Model, csrf: &str, after: u64, state: &AppState) -> Markup {
    let registration_state: BTreeMap<&str, &api::RegistrationState> = model
        .status
        .iter()
        .flat_map(|s| &s.registrations)
        .map(|r| (r.name.as_str(), r))
        .collect();
    let running_items: HashMap<(String, String), &api::Event> = model
        .status
        .iter()
        .flat_map(|s| &s.sessions)
        .flat_map(|s| &s.items)
        .filter_map(|e| match e {
            api::Event::Item { handler, item, .. } => Some(((handler.clone(), item.clone()), e)),
            _ => None,
        })
        .collect();
    // What `status` reports as `web.remote`, from the same address.
    let remote = !state.address.ip().is_loopback();
    let unavailable: Vec<&str> = model
        .status
        .iter()
        .flat_map(|s| &s.triggers)
        .filter(|t| !t.available)
        .map(|t| t.trigger.as_str())
        .collect();
    let actionable = model
        .log
        .iter()
        .filter(|e| e.actionable && e.level == "error")
        .count();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                meta name="csrf" content=(csrf);
                meta name="events-after" content=(after);
                title { "Sync Center — syncmgr" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header {
                    h1 { "Sync Center" }
                    div.actions {
                        button type="button" data-action="sync-all" { "Sync all" }
                        button type="button" data-action="stop-all" { "Stop all" }
                    }
                    span #connection data-state="connecting" { "connecting…" }
                }
                section #notices aria-live="polite" {
                    @if model.status.is_none() {
                        p.notice.error { "No daemon answers: nothing runs by itself until it is back." }
                    }
                    @if remote {
                        p.notice.warning { "This dashboard is reachable from other machines ([web] allow_remote)." }
                    }
                    @for problem in &model.problems {
                        p.notice.warning { (problem) }
                    }
                    @if actionable > 0 {
                        p.notice.warning data-notice="actionable" {
                            (actionable) (if actionable == 1 { " result needs" } else { " results need" })
                            " your attention (a guard that refused, a failure to retry): see " a href="#log" { "Results" } "."
                        }
                    }
                    @if !model.conflicts.is_empty() {
                        p.notice.warning data-notice="conflicts" {
                            (model.conflicts.len()) (if model.conflicts.len() == 1 { " conflict waits" } else { " conflicts wait" })
                            " for your decision: see " a href="#conflicts" { "Conflicts" } "."
                        }
                    }
                    @if !unavailable.is_empty() {
                        p.notice.info data-notice="triggers" {
                            "Unavailable triggers: " (unavailable.join(", ")) " (see " a href="#triggers" { "Triggers" } " for why)."
                        }
                    }
                    @if let Some(n) = model.status.as_ref().and_then(|s| s.daemon.as_ref()).and_then(|d| d.notifications.as_ref()).filter(|n| !n.available) {
                        p.notice.info { "Desktop notifications off: " (n.reason) }
                    }
                }
                main {
                    section #handlers {
                        h2 { "Handlers and items" }
                        @if model.registrations.is_empty() {
                            p { "No handlers registered (see " code { "syncmgr register --help" } ")." }
                        }
                        @for reg in &model.registrations {
                            (handler_section(reg, registration_state.get(reg.name.as_str()).copied(), model, &running_items))
                        }
                    }
                    section #conflicts {
                        h2 { "Conflicts" }
                        p #conflicts-none hidden[!model.conflicts.is_empty()] { "No conflicts." }
                        ol #conflict-list {
                            @for c in &model.conflicts { (conflict_row(c)) }
                        }
                    }
                    section #log {
                        h2 { "Results" }
                        label {
                            "Show "
                            select #log-level {
                                option value="" { "everything" }
                                option value="warning" { "warnings and errors" }
                                option value="error" { "errors" }
                            }
                        }
                        ol #log-entries {
                            @for entry in &model.log { (log_entry(entry)) }
                        }
                    }
                    section #history {
                        h2 { "History" }
                        table {
                            thead { tr { th { "Started" } th { "Trigger" } th { "Reason" } th { "Outcome" } th { "Items" } } }
                            tbody #history-rows {
                                @for s in &model.history { (history_row(s)) }
                            }
                        }
                    }
                    section #schedules {
                        h2 { "Schedules" }
                        ul #schedule-list {
                            @for s in &model.schedules { (schedule_row(s)) }
                        }
                        form #schedule-add {
                            input name="name" placeholder="name" required;
                            input name="every" placeholder="every (15m)";
                            input name="cron" placeholder="or cron (0 3 * * *)";
                            input name="targets" placeholder="targets (empty: all)";
                            button type="submit" { "Add schedule" }
                        }
                    }
                    section #triggers {
                        h2 { "Triggers" }
                        ul {
                            @for t in model.status.iter().flat_map(|s| &s.triggers) {
                                li data-trigger=(t.trigger) data-available=(t.available) {
                                    strong { (t.trigger) } " — " (t.reason)
                                    @if let Some(at) = &t.last_fired { " (last fired " time datetime=(at) { (at) } ")" }
                                }
                            }
                        }
                    }
                }
                dialog #confirm {
                    form method="dialog" {
                        p #confirm-text {}
                        button value="no" data-action="confirm-no" { "Cancel" }
                        button value="yes" data-action="confirm-yes" { "Go ahead" }
                    }
                }
            }
        }
    }
}

fn handler_section(
    reg: &api::Registration,
    state: Option<&api::RegistrationState>,
    model: &Model,
    running: &HashMap<(String, String), &api::Event>,
) -> Markup {
    let items = model
        .items
        .iter()
        .filter(|r| r.handler == reg.name && !r.flags.hidden);
    let choices = model.choices.get(&reg.name);
    // The handler's own name for itself (`handlerInfo`), when it listed items.
    let display = model
        .items
        .iter()
        .find(|r| r.handler == reg.name)
        .map(|r| r.handler_name.as_str());
    html! {
        article.handler data-handler=(reg.name) data-state=(state.map_or("idle", |s| s.state.as_str())) {
            div.handler-head {
                h3 { (reg.name) }
                @if let Some(display) = display { span.display-name { (display) } }
                @if let Some(d) = &reg.description { span.description { (d) } }
                span.reg-state { (state.map_or("idle", |s| s.state.as_str())) }
                @if let Some(s) = state {
                    @if let Some(next) = &s.next_run {
                        span.next { "next: " time datetime=(next) { (next) } @if let Some(r) = &s.next_reason { " (" (r) ")" } }
                    }
                    @if let Some(until) = &s.backoff_until {
                        span.backoff { "backing off until " time datetime=(until) { (until) } }
                    }
                }
                button type="button" data-action="sync" { "Sync" }
                button type="button" data-action="stop" { "Stop" }
            }
            table.items {
                thead {
                    tr {
                        th { "Item" } th { "Status" } th { "Progress" }
                        @for e in EVENTS {
                            @let opted = !e.needs_opt_in() || reg.events.iter().any(|x| x == e.as_str());
                            th.event title=(if opted { format!("sync on the {} event", e.as_str()) } else { format!("{} did not opt in to {} (register --events {})", reg.name, e.as_str(), e.as_str()) }) { (event_label(e)) }
                        }
                        th {}
                    }
                }
                tbody {
                    @for row in items {
                        @let live = running.get(&(row.handler.clone(), row.item.clone()));
                        @let (status, text, value, max) = match live {
                            Some(api::Event::Item { status, text, value, max, .. }) => (status.as_str(), text.as_deref(), *value, *max),
                            _ => ("idle", None, None, None),
                        };
                        @let pct = match (value, max) { (Some(v), Some(m)) if m > 0 => (v.min(m) * 100 / m).to_string(), _ => "0".to_owned() };
                        tr.item data-handler=(row.handler) data-item=(row.item) data-state=(status) data-pct=(pct) {
                            td.name { (row.name) div.last { "last update: " (row.last_update.as_deref().unwrap_or("never")) } }
                            td.status { span.state { (status) } " " span.text { (text.unwrap_or("")) } }
                            td.progress { progress max="100" value=(pct) {} }
                            @for event in EVENTS {
                                @let checked = if event == SyncEvent::Manual { row.checked } else {
                                    choices.and_then(|c| c.get(&row.item)).and_then(|c| c.get(&event)).copied().unwrap_or(row.default_checked)
                                };
                                @let opted = !event.needs_opt_in() || reg.events.iter().any(|e| e == event.as_str());
                                td.event {
                                    input type="checkbox" data-event=(event.as_str()) checked[checked] disabled[!opted] aria-label=(event_label(event));
                                }
                            }
                            td.buttons {
                                button type="button" data-action="sync" { "Sync" }
                                button type="button" data-action="stop" { "Stop" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A check box column's heading, as SyncMgr's settings tabs name them.
fn event_label(event: SyncEvent) -> &'static str {
    match event {
        SyncEvent::Manual => "Manual",
        SyncEvent::Scheduled => "Schedule",
        SyncEvent::Idle => "Idle",
        SyncEvent::Connect => "Logon/network",
        SyncEvent::PendingDisconnect => "Logoff",
        SyncEvent::Invoke => "Program",
    }
}

fn log_entry(e: &api::LogEntry) -> Markup {
    html! {
        li.entry data-id=(e.id) data-level=(e.level) {
            details {
                summary {
                    time datetime=(e.time) { (e.time) } " "
                    span.level { (e.level) } " "
                    span.who { (e.handler) @if let Some(item) = &e.item { "/" (item) } } " "
                    span.text { (e.text) }
                }
                p { "session " code { (e.session) } }
                @if e.actionable {
                    button type="button" data-action="show" { "Act on it" }
                }
                button type="button" data-action="delete" { "Delete" }
            }
        }
    }
}

/// One open conflict: its text, each version with a button that keeps it,
/// and "Keep all". The same markup as `conflictRow` in `app.js`.
fn conflict_row(c: &api::Conflict) -> Markup {
    html! {
        li.conflict data-id=(c.id) {
            p {
                span.who { (c.handler) "/" (c.item) } " "
                span.text { (c.text) }
            }
            @if let Some(reason) = &c.reason {
                p.reason { "Not applied: " (reason) }
            }
            ol.versions start="0" {
                @for (n, v) in c.versions.iter().enumerate() {
                    li {
                        span.label { (v.label) }
                        @if let Some(detail) = &v.detail { " (" (detail) ")" }
                        @if let Some(size) = v.size { ", " (size) " bytes" }
                        @if let Some(at) = &v.modified { ", modified " time datetime=(at) { (at) } }
                        " "
                        button type="button" data-action="keep" data-version=(n) { "Keep this" }
                    }
                }
            }
            button type="button" data-action="keep-all" { "Keep all" }
        }
    }
}

fn history_row(s: &api::Session) -> Markup {
    html! {
        tr data-session=(s.id) data-outcome=(s.outcome.as_deref().unwrap_or("running")) {
            td { time datetime=(s.started) { (s.started) } }
            td { (s.trigger) }
            td { (s.reason.as_deref().unwrap_or("")) }
            td.outcome { (s.outcome.as_deref().unwrap_or("running")) }
            td { (s.counts.succeeded) " ok, " (s.counts.failed) " failed, " (s.counts.stopped) " stopped" }
        }
    }
}

fn schedule_row(s: &api::ScheduleRow) -> Markup {
    let when = views::schedule_when(s);
    html! {
        li data-schedule=(s.name) {
            strong { (s.name) } " " (when) " — "
            (if s.targets.is_empty() { "every handler".to_owned() } else { s.targets.join(" ") })
            "; next " (s.next_run.as_deref().unwrap_or("never"))
            " "
            button type="button" data-action="remove-schedule" { "Remove" }
        }
    }
}
