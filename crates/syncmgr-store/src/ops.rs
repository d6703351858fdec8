//! The SQL of every operation, on a borrowed connection.
//!
//! These functions own the mapping between the model and the rows; they do not
//! open transactions. [`crate::Store`] wraps each write in its own transaction,
//! the writer thread runs many of them in one (group commit), so the same SQL
//! serves both.
//!
//! Reading never trusts the file: every value is decoded with a checked
//! conversion, and a value that does not decode becomes a conversion error that
//! [`crate::StoreError::from_sqlite`] reports as a damaged database.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::DateTime;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use syncmgr_core::{
    ConflictReport, ConflictVersion, ItemEnumeration, ItemResult, LogEntry, LogLevel, NewConflict,
    NewLogEntry, SessionOutcome, StatusCounts, SyncEvent, Timestamp,
};

use crate::error::{OpError, StoreError};
use crate::types::{
    ConflictRecord, HandlerKind, KnownItem, LogFilter, PROCESS_KIND, Registration, Retention,
    ScheduleRecord, ScheduleWhen, SessionRecord, severity,
};

pub(crate) type OpResult<T> = Result<T, OpError>;

// ---------------------------------------------------------------------------
// Encoding and decoding
// ---------------------------------------------------------------------------

/// A stored value that does not decode, with what it was.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadValue(String);

fn bad(column: usize, ty: Type, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, ty, Box::new(BadValue(what)))
}

fn conversion(
    column: usize,
    ty: Type,
    e: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, ty, Box::new(e))
}

fn millis(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

fn get_time(row: &Row<'_>, column: usize) -> rusqlite::Result<Timestamp> {
    let ms: i64 = row.get(column)?;
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| bad(column, Type::Integer, format!("time {ms} is out of range")))
}

fn get_opt_time(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<Timestamp>> {
    match row.get::<_, Option<i64>>(column)? {
        None => Ok(None),
        Some(_) => get_time(row, column).map(Some),
    }
}

/// Decodes a column holding one of the core's string enums.
fn get_enum<T>(row: &Row<'_>, column: usize) -> rusqlite::Result<T>
where
    T: std::str::FromStr<Err = syncmgr_core::ParseEnumError>,
{
    let text: String = row.get(column)?;
    text.parse().map_err(|e| conversion(column, Type::Text, e))
}

/// Decodes a nullable column holding one of the core's string enums.
fn get_opt_enum<T>(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<T>>
where
    T: std::str::FromStr<Err = syncmgr_core::ParseEnumError>,
{
    match row.get::<_, Option<String>>(column)? {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|e| conversion(column, Type::Text, e)),
    }
}

fn get_count(row: &Row<'_>, column: usize) -> rusqlite::Result<u32> {
    let n: i64 = row.get(column)?;
    u32::try_from(n).map_err(|_| bad(column, Type::Integer, format!("count {n} is out of range")))
}

fn encode_events(events: &[SyncEvent]) -> String {
    // Canonical order, no duplicates, so equal sets are stored equally.
    SyncEvent::ALL
        .iter()
        .filter(|e| events.contains(e))
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_events(text: &str, column: usize) -> rusqlite::Result<Vec<SyncEvent>> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|e| conversion(column, Type::Text, e)))
        .collect()
}

// ---------------------------------------------------------------------------
// Registrations
// ---------------------------------------------------------------------------

const REGISTRATION_COLUMNS: &str =
    "name, description, kind, argv, config, events, timeout_ms, registered";

fn check_registration(reg: &Registration) -> Result<Option<i64>, StoreError> {
    if reg.name.is_empty() {
        return Err(StoreError::Invalid("a handler name cannot be empty".into()));
    }
    match &reg.kind {
        HandlerKind::Process { argv } if argv.is_empty() => {
            return Err(StoreError::Invalid(format!(
                "handler {:?} has no program to run",
                reg.name
            )));
        }
        HandlerKind::Builtin { kind, .. } if kind.is_empty() || kind == PROCESS_KIND => {
            return Err(StoreError::Invalid(format!(
                "{kind:?} is not a built-in handler kind"
            )));
        }
        _ => {}
    }
    if let Some(e) = reg.events.iter().find(|e| !e.needs_opt_in()) {
        return Err(StoreError::Invalid(format!(
            "event {e} reaches every handler; only connect, pendingDisconnect and idle are registered"
        )));
    }
    reg.timeout
        .map(|t| {
            i64::try_from(t.as_millis())
                .map_err(|_| StoreError::Invalid(format!("timeout {t:?} is too long")))
        })
        .transpose()
}

fn registration_from_row(row: &Row<'_>) -> rusqlite::Result<Registration> {
    let name: String = row.get(0)?;
    let kind_name: String = row.get(2)?;
    let kind = if kind_name == PROCESS_KIND {
        let argv: Option<String> = row.get(3)?;
        let argv = argv.ok_or_else(|| {
            bad(
                3,
                Type::Null,
                format!("process handler {name:?} has no argv"),
            )
        })?;
        let argv: Vec<String> =
            serde_json::from_str(&argv).map_err(|e| conversion(3, Type::Text, e))?;
        HandlerKind::Process { argv }
    } else {
        let config: Option<String> = row.get(4)?;
        let config = match config {
            Some(text) => serde_json::from_str(&text).map_err(|e| conversion(4, Type::Text, e))?,
            None => serde_json::Value::Null,
        };
        HandlerKind::Builtin {
            kind: kind_name,
            config,
        }
    };
    let events: String = row.get(5)?;
    let timeout = match row.get::<_, Option<i64>>(6)? {
        None => None,
        Some(ms) => Some(Duration::from_millis(u64::try_from(ms).map_err(|_| {
            bad(6, Type::Integer, format!("timeout {ms} ms is negative"))
        })?)),
    };
    Ok(Registration {
        description: row.get(1)?,
        kind,
        events: decode_events(&events, 5)?,
        timeout,
        registered: get_time(row, 7)?,
        name,
    })
}

pub(crate) fn register(conn: &Connection, reg: &Registration) -> OpResult<bool> {
    let timeout_ms = check_registration(reg)?;
    let (argv, config) = match &reg.kind {
        HandlerKind::Process { argv } => (
            Some(serde_json::Value::from(argv.clone()).to_string()),
            None,
        ),
        HandlerKind::Builtin { config, .. } => (None, Some(config.to_string())),
    };
    let existed = is_registered(conn, &reg.name)?;
    // An upsert, not `INSERT OR REPLACE`: replacing would delete the row and
    // cascade to the user's choices and known items.
    conn.execute(
        "INSERT INTO registrations (name, description, kind, argv, config, events, timeout_ms, registered)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (name) DO UPDATE SET
             description = excluded.description, kind = excluded.kind, argv = excluded.argv,
             config = excluded.config, events = excluded.events,
             timeout_ms = excluded.timeout_ms, registered = excluded.registered",
        params![
            reg.name,
            reg.description,
            reg.kind.name(),
            argv,
            config,
            encode_events(&reg.events),
            timeout_ms,
            millis(reg.registered),
        ],
    )?;
    Ok(!existed)
}

pub(crate) fn unregister(conn: &Connection, name: &str) -> OpResult<bool> {
    // The foreign keys cascade too; deleting explicitly keeps the promise even
    // on a connection where `foreign_keys` was left off.
    conn.execute("DELETE FROM choices WHERE handler = ?1", [name])?;
    conn.execute("DELETE FROM known_items WHERE handler = ?1", [name])?;
    Ok(conn.execute("DELETE FROM registrations WHERE name = ?1", [name])? > 0)
}

fn is_registered(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM registrations WHERE name = ?1)",
        [name],
        |row| row.get(0),
    )
}

fn ensure_registered(conn: &Connection, name: &str) -> OpResult<()> {
    if is_registered(conn, name)? {
        Ok(())
    } else {
        Err(StoreError::UnknownHandler {
            name: name.to_owned(),
        }
        .into())
    }
}

pub(crate) fn registration(conn: &Connection, name: &str) -> OpResult<Option<Registration>> {
    Ok(conn
        .query_row(
            &format!("SELECT {REGISTRATION_COLUMNS} FROM registrations WHERE name = ?1"),
            [name],
            registration_from_row,
        )
        .optional()?)
}

pub(crate) fn registrations(conn: &Connection) -> OpResult<Vec<Registration>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {REGISTRATION_COLUMNS} FROM registrations ORDER BY name"
    ))?;
    let rows = stmt.query_map([], registration_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

// ---------------------------------------------------------------------------
// Choices and known items
// ---------------------------------------------------------------------------

pub(crate) fn set_choice(
    conn: &Connection,
    handler: &str,
    event: SyncEvent,
    item: &str,
    checked: bool,
) -> OpResult<()> {
    ensure_registered(conn, handler)?;
    conn.execute(
        "INSERT INTO choices (handler, event, item, checked) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (handler, event, item) DO UPDATE SET checked = excluded.checked",
        params![handler, event.as_str(), item, checked],
    )?;
    Ok(())
}

pub(crate) fn clear_choice(
    conn: &Connection,
    handler: &str,
    event: SyncEvent,
    item: &str,
) -> OpResult<bool> {
    Ok(conn.execute(
        "DELETE FROM choices WHERE handler = ?1 AND event = ?2 AND item = ?3",
        params![handler, event.as_str(), item],
    )? > 0)
}

pub(crate) fn choices(
    conn: &Connection,
    handler: &str,
    event: SyncEvent,
) -> OpResult<HashMap<String, bool>> {
    let mut stmt =
        conn.prepare("SELECT item, checked FROM choices WHERE handler = ?1 AND event = ?2")?;
    let rows = stmt.query_map(params![handler, event.as_str()], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn apply_enumeration(
    conn: &Connection,
    handler: &str,
    enumeration: &ItemEnumeration,
) -> OpResult<()> {
    ensure_registered(conn, handler)?;
    {
        let mut upsert = conn.prepare_cached(
            "INSERT INTO known_items (handler, item, name, temporary) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (handler, item) DO UPDATE SET
                 name = excluded.name, temporary = excluded.temporary",
        )?;
        for item in &enumeration.items {
            upsert.execute(params![handler, item.id, item.name, item.flags.temporary])?;
        }
    }

    // Every id the store holds something about (a known item or a choice).
    let mut held: HashMap<String, bool> = HashMap::new();
    {
        let mut stmt =
            conn.prepare("SELECT item, temporary FROM known_items WHERE handler = ?1")?;
        for row in stmt.query_map([handler], |row| Ok((row.get(0)?, row.get(1)?)))? {
            let (id, temporary) = row?;
            held.insert(id, temporary);
        }
        let mut stmt = conn.prepare("SELECT DISTINCT item FROM choices WHERE handler = ?1")?;
        for row in stmt.query_map([handler], |row| row.get::<_, String>(0))? {
            held.entry(row?).or_insert(false);
        }
    }

    // mobsync's rule: a complete enumeration is the whole truth, so whatever it
    // does not list is gone; an incomplete one (`S_SYNCMGR_MISSINGITEMS`) says
    // nothing about the ids it leaves out, so their choices stay. Temporary
    // items promise nothing, so they go as soon as they are not listed.
    let listed: HashSet<&str> = enumeration.items.iter().map(|i| i.id.as_str()).collect();
    let mut forget_choices =
        conn.prepare_cached("DELETE FROM choices WHERE handler = ?1 AND item = ?2")?;
    let mut forget_item =
        conn.prepare_cached("DELETE FROM known_items WHERE handler = ?1 AND item = ?2")?;
    for (id, temporary) in &held {
        if !listed.contains(id.as_str()) && (enumeration.complete || *temporary) {
            forget_choices.execute(params![handler, id])?;
            forget_item.execute(params![handler, id])?;
        }
    }
    Ok(())
}

pub(crate) fn known_items(conn: &Connection, handler: &str) -> OpResult<Vec<KnownItem>> {
    let mut stmt = conn.prepare(
        "SELECT item, name, temporary, last_update FROM known_items
         WHERE handler = ?1 ORDER BY item",
    )?;
    let rows = stmt.query_map([handler], |row| {
        Ok(KnownItem {
            id: row.get(0)?,
            name: row.get(1)?,
            temporary: row.get(2)?,
            last_update: get_opt_time(row, 3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Records that `item` last succeeded at `time`. An item not seen before is
/// added (named by its id until it is enumerated); for a handler that is not
/// (or no longer) registered nothing is recorded and `false` comes back, since
/// a session may outlive an `unregister`.
pub(crate) fn set_last_update(
    conn: &Connection,
    handler: &str,
    item: &str,
    time: Timestamp,
) -> OpResult<bool> {
    Ok(conn.execute(
        "INSERT INTO known_items (handler, item, name, last_update)
         SELECT ?1, ?2, ?2, ?3 WHERE EXISTS (SELECT 1 FROM registrations WHERE name = ?1)
         ON CONFLICT (handler, item) DO UPDATE SET last_update = excluded.last_update",
        params![handler, item, millis(time)],
    )? > 0)
}

// ---------------------------------------------------------------------------
// Results log
// ---------------------------------------------------------------------------

const LOG_COLUMNS: &str =
    "id, time, level, handler, item, text, actionable, session, error_id, cause";

fn log_from_row(row: &Row<'_>) -> rusqlite::Result<LogEntry> {
    Ok(LogEntry {
        id: row.get(0)?,
        entry: NewLogEntry {
            time: get_time(row, 1)?,
            level: get_enum(row, 2)?,
            handler: row.get(3)?,
            item: row.get(4)?,
            text: row.get(5)?,
            actionable: row.get(6)?,
            session: row.get(7)?,
            error_id: row.get(8)?,
            cause: get_opt_enum(row, 9)?,
        },
    })
}

pub(crate) fn append_log(conn: &Connection, e: &NewLogEntry) -> OpResult<i64> {
    conn.prepare_cached(
        "INSERT INTO log (time, level, handler, item, text, actionable, session, error_id, cause)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        millis(e.time),
        e.level.as_str(),
        e.handler,
        e.item,
        e.text,
        e.actionable,
        e.session,
        e.error_id,
        e.cause.map(|c| c.as_str()),
    ])?;
    Ok(conn.last_insert_rowid())
}

pub(crate) fn delete_log_for(
    conn: &Connection,
    session: &str,
    handler: &str,
    error_id: Option<&str>,
) -> OpResult<u64> {
    // Entries the manager wrote itself have no error id; a handler's
    // `deleteLogError` can only withdraw its own.
    let n = conn.execute(
        "DELETE FROM log WHERE session = ?1 AND handler = ?2 AND error_id IS NOT NULL
             AND (?3 IS NULL OR error_id = ?3)",
        params![session, handler, error_id],
    )?;
    Ok(n as u64)
}

pub(crate) fn delete_log(conn: &Connection, id: i64) -> OpResult<bool> {
    Ok(conn.execute("DELETE FROM log WHERE id = ?1", [id])? > 0)
}

pub(crate) fn log_entry(conn: &Connection, id: i64) -> OpResult<Option<LogEntry>> {
    Ok(conn
        .query_row(
            &format!("SELECT {LOG_COLUMNS} FROM log WHERE id = ?1"),
            [id],
            log_from_row,
        )
        .optional()?)
}

pub(crate) fn log(conn: &Connection, filter: &LogFilter) -> OpResult<Vec<LogEntry>> {
    let mut sql = format!("SELECT {LOG_COLUMNS} FROM log WHERE 1");
    let mut args: Vec<String> = Vec::new();
    if let Some(min) = filter.min_level {
        let levels: Vec<&str> = LogLevel::ALL
            .iter()
            .filter(|l| severity(**l) >= severity(min))
            .map(|l| l.as_str())
            .collect();
        let marks: Vec<String> = levels
            .iter()
            .enumerate()
            .map(|(i, _)| format!("?{}", args.len() + i + 1))
            .collect();
        sql.push_str(&format!(" AND level IN ({})", marks.join(", ")));
        args.extend(levels.into_iter().map(str::to_owned));
    }
    if let Some(handler) = &filter.handler {
        args.push(handler.clone());
        sql.push_str(&format!(" AND handler = ?{}", args.len()));
    }
    if let Some(session) = &filter.session {
        args.push(session.clone());
        sql.push_str(&format!(" AND session = ?{}", args.len()));
    }
    // Newest last by id, not by time: ids follow the order of recording, which
    // a clock step cannot reorder.
    sql.push_str(" ORDER BY id");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), log_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

const SESSION_COLUMNS: &str =
    "id, trigger, started, finished, outcome, succeeded, failed, skipped, stopped, pid, reason";

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    let pid: i64 = row.get(9)?;
    Ok(SessionRecord {
        id: row.get(0)?,
        trigger: get_enum(row, 1)?,
        started: get_time(row, 2)?,
        finished: get_opt_time(row, 3)?,
        outcome: match row.get::<_, Option<String>>(4)? {
            None => None,
            Some(_) => Some(get_enum(row, 4)?),
        },
        counts: StatusCounts {
            succeeded: get_count(row, 5)?,
            failed: get_count(row, 6)?,
            skipped: get_count(row, 7)?,
            stopped: get_count(row, 8)?,
        },
        pid: u32::try_from(pid)
            .map_err(|_| bad(9, Type::Integer, format!("pid {pid} is out of range")))?,
        reason: row.get(10)?,
    })
}

pub(crate) fn begin_session(conn: &Connection, s: &SessionRecord) -> OpResult<()> {
    conn.execute(
        &format!("INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
        params![
            s.id,
            s.trigger.as_str(),
            millis(s.started),
            s.finished.map(millis),
            s.outcome.map(SessionOutcome::as_str),
            s.counts.succeeded,
            s.counts.failed,
            s.counts.skipped,
            s.counts.stopped,
            s.pid,
            s.reason,
        ],
    )?;
    Ok(())
}

pub(crate) fn finish_session(
    conn: &Connection,
    id: &str,
    outcome: SessionOutcome,
    counts: StatusCounts,
    finished: Timestamp,
    items: &[ItemResult],
) -> OpResult<()> {
    let updated = conn.execute(
        "UPDATE sessions SET outcome = ?2, finished = ?3,
             succeeded = ?4, failed = ?5, skipped = ?6, stopped = ?7
         WHERE id = ?1",
        params![
            id,
            outcome.as_str(),
            millis(finished),
            counts.succeeded,
            counts.failed,
            counts.skipped,
            counts.stopped,
        ],
    )?;
    if updated == 0 {
        return Err(StoreError::UnknownSession { id: id.to_owned() }.into());
    }
    // Finishing twice replaces the first account rather than merging with it.
    conn.execute("DELETE FROM session_items WHERE session = ?1", [id])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO session_items (session, handler, item, seq, status) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (session, handler, item) DO UPDATE SET status = excluded.status",
    )?;
    for (seq, r) in items.iter().enumerate() {
        insert.execute(params![
            id,
            r.handler,
            r.item,
            seq as i64,
            r.status.as_str()
        ])?;
        if r.status == syncmgr_core::ItemStatus::Succeeded {
            set_last_update(conn, &r.handler, &r.item, finished)?;
        }
    }
    Ok(())
}

pub(crate) fn session(conn: &Connection, id: &str) -> OpResult<Option<SessionRecord>> {
    Ok(conn
        .query_row(
            &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
            [id],
            session_from_row,
        )
        .optional()?)
}

pub(crate) fn sessions(conn: &Connection, limit: Option<usize>) -> OpResult<Vec<SessionRecord>> {
    // Take the newest `limit`, then turn them around so the newest is last.
    // rowid breaks ties between sessions started in the same millisecond.
    let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let mut stmt = conn.prepare(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions ORDER BY started DESC, rowid DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit], session_from_row)?;
    let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    out.reverse();
    Ok(out)
}

pub(crate) fn last_sessions(conn: &Connection) -> OpResult<Vec<(String, SessionRecord)>> {
    // Each handler's newest finished session that prepared an item of it.
    let mut stmt = conn.prepare(
        "SELECT h.handler,
                (SELECT s.id FROM session_items i JOIN sessions s ON s.id = i.session
                  WHERE i.handler = h.handler AND s.finished IS NOT NULL
                  ORDER BY s.finished DESC, s.rowid DESC LIMIT 1)
           FROM (SELECT DISTINCT handler FROM session_items) h
          ORDER BY h.handler",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
    })?;
    let pairs = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for (handler, id) in pairs {
        if let Some(id) = id
            && let Some(record) = session(conn, &id)?
        {
            out.push((handler, record));
        }
    }
    Ok(out)
}

pub(crate) fn session_items(conn: &Connection, id: &str) -> OpResult<Vec<ItemResult>> {
    let mut stmt = conn.prepare(
        "SELECT handler, item, status FROM session_items WHERE session = ?1 ORDER BY seq",
    )?;
    let rows = stmt.query_map([id], |row| {
        Ok(ItemResult {
            handler: row.get(0)?,
            item: row.get(1)?,
            status: get_enum(row, 2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn recover_interrupted(
    conn: &Connection,
    is_alive: &dyn Fn(u32) -> bool,
    now: Timestamp,
) -> OpResult<Vec<String>> {
    let running: Vec<(String, i64)> = {
        let mut stmt = conn.prepare(
            "SELECT id, pid FROM sessions WHERE outcome IS NULL ORDER BY started, rowid",
        )?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut recovered = Vec::new();
    for (id, pid) in running {
        // A pid that cannot be a process id cannot be alive either.
        let alive = u32::try_from(pid).is_ok_and(is_alive);
        if !alive {
            conn.execute(
                "UPDATE sessions SET outcome = ?2, finished = ?3 WHERE id = ?1 AND outcome IS NULL",
                params![id, SessionOutcome::Interrupted.as_str(), millis(now)],
            )?;
            recovered.push(id);
        }
    }
    Ok(recovered)
}

const SCHEDULE_COLUMNS: &str =
    "name, every_ms, cron, timezone, jitter_ms, catch_up, targets, created, last_run";

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn get_duration(row: &Row<'_>, column: usize) -> rusqlite::Result<std::time::Duration> {
    let ms: i64 = row.get(column)?;
    u64::try_from(ms)
        .map(std::time::Duration::from_millis)
        .map_err(|_| bad(column, Type::Integer, format!("duration {ms} is negative")))
}

fn schedule_from_row(row: &Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    let when = match (
        row.get::<_, Option<i64>>(1)?,
        row.get::<_, Option<String>>(2)?,
    ) {
        (Some(_), None) => ScheduleWhen::Every(get_duration(row, 1)?),
        (None, Some(expr)) => ScheduleWhen::Cron {
            expr,
            timezone: row.get(3)?,
        },
        _ => {
            return Err(bad(
                1,
                Type::Integer,
                "a schedule needs exactly one of every_ms and cron".to_owned(),
            ));
        }
    };
    let targets: String = row.get(6)?;
    Ok(ScheduleRecord {
        name: row.get(0)?,
        when,
        jitter: get_duration(row, 4)?,
        catch_up: row.get::<_, i64>(5)? != 0,
        targets: serde_json::from_str(&targets).map_err(|e| conversion(6, Type::Text, e))?,
        created: get_time(row, 7)?,
        last_run: get_opt_time(row, 8)?,
    })
}

pub(crate) fn add_schedule(conn: &Connection, s: &ScheduleRecord) -> OpResult<bool> {
    let (every, cron, timezone) = match &s.when {
        ScheduleWhen::Every(d) => (Some(duration_ms(*d)), None, None),
        ScheduleWhen::Cron { expr, timezone } => (None, Some(expr.as_str()), timezone.as_deref()),
    };
    let targets = serde_json::to_string(&s.targets).unwrap_or_else(|_| "[]".to_owned());
    let added = conn.execute(
        &format!(
            "INSERT INTO schedules ({SCHEDULE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (name) DO NOTHING"
        ),
        params![
            s.name,
            every,
            cron,
            timezone,
            duration_ms(s.jitter),
            i64::from(s.catch_up),
            targets,
            millis(s.created),
            s.last_run.map(millis),
        ],
    )?;
    Ok(added == 1)
}

pub(crate) fn remove_schedule(conn: &Connection, name: &str) -> OpResult<bool> {
    Ok(conn.execute("DELETE FROM schedules WHERE name = ?1", [name])? == 1)
}

pub(crate) fn schedules(conn: &Connection) -> OpResult<Vec<ScheduleRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY name"
    ))?;
    let rows = stmt.query_map([], schedule_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn set_schedule_run(conn: &Connection, name: &str, at: Timestamp) -> OpResult<bool> {
    Ok(conn.execute(
        "UPDATE schedules SET last_run = ?2 WHERE name = ?1",
        params![name, millis(at)],
    )? == 1)
}

pub(crate) fn prune(conn: &Connection, keep: &Retention) -> OpResult<(usize, usize)> {
    // Items go with their session (ON DELETE CASCADE); sessions still
    // running are never pruned.
    let mut sessions = conn.execute(
        "DELETE FROM sessions WHERE finished IS NOT NULL AND finished < ?1",
        [millis(keep.history_before)],
    )?;
    let newest = i64::try_from(keep.sessions).unwrap_or(i64::MAX);
    sessions += conn.execute(
        "DELETE FROM sessions WHERE finished IS NOT NULL AND rowid NOT IN
           (SELECT rowid FROM sessions ORDER BY started DESC, rowid DESC LIMIT ?1)",
        [newest],
    )?;
    // Information entries past their age, or of a session that is gone.
    let entries = conn.execute(
        "DELETE FROM log WHERE level = 'information'
           AND (time < ?1 OR session NOT IN (SELECT id FROM sessions))",
        [millis(keep.information_before)],
    )?;
    Ok((sessions, entries))
}
// ---------------------------------------------------------------------------
// Conflicts
// ---------------------------------------------------------------------------

const CONFLICT_COLUMNS: &str =
    "id, handler, item, conflict_id, text, versions, detected, session, reason";

/// The versions as the JSON array stored in `conflicts.versions`.
fn encode_versions(versions: &[ConflictVersion]) -> String {
    let array: Vec<serde_json::Value> = versions
        .iter()
        .map(|v| {
            let mut object = serde_json::Map::new();
            object.insert("label".into(), v.label.clone().into());
            if let Some(size) = v.size {
                object.insert("size".into(), size.into());
            }
            if let Some(modified) = v.modified {
                object.insert("modified".into(), millis(modified).into());
            }
            if let Some(detail) = &v.detail {
                object.insert("detail".into(), detail.clone().into());
            }
            serde_json::Value::Object(object)
        })
        .collect();
    serde_json::Value::Array(array).to_string()
}

fn decode_versions(column: usize, text: &str) -> rusqlite::Result<Vec<ConflictVersion>> {
    let fail = |what: &str| bad(column, Type::Text, format!("conflict versions: {what}"));
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| fail(&e.to_string()))?;
    let array = value.as_array().ok_or_else(|| fail("not an array"))?;
    array
        .iter()
        .map(|v| {
            let label = v
                .get("label")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| fail("a version without a label"))?;
            let modified = match v.get("modified") {
                None => None,
                Some(ms) => Some(
                    ms.as_i64()
                        .and_then(DateTime::from_timestamp_millis)
                        .ok_or_else(|| fail("a modification time out of range"))?,
                ),
            };
            Ok(ConflictVersion {
                label: label.to_owned(),
                size: v.get("size").and_then(serde_json::Value::as_u64),
                modified,
                detail: v
                    .get("detail")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned),
            })
        })
        .collect()
}

fn conflict_from_row(row: &Row<'_>) -> rusqlite::Result<ConflictRecord> {
    let versions: String = row.get(5)?;
    Ok(ConflictRecord {
        id: row.get(0)?,
        handler: row.get(1)?,
        report: ConflictReport {
            item: row.get(2)?,
            conflict_id: row.get(3)?,
            text: row.get(4)?,
            versions: decode_versions(5, &versions)?,
        },
        detected: get_time(row, 6)?,
        session: row.get(7)?,
        reason: row.get(8)?,
    })
}

/// Stores a conflict; one reported again keeps its id and first detection
/// time and loses the reason of an earlier refusal.
pub(crate) fn record_conflict(conn: &Connection, c: &NewConflict) -> OpResult<i64> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO conflicts (handler, item, conflict_id, text, versions, detected, session)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (handler, item, conflict_id) DO UPDATE SET
                 text = excluded.text, versions = excluded.versions,
                 session = excluded.session, reason = NULL
             RETURNING id",
        )?
        .query_row(
            params![
                c.handler,
                c.report.item,
                c.report.conflict_id,
                c.report.text,
                encode_versions(&c.report.versions),
                millis(c.detected),
                c.session,
            ],
            |row| row.get(0),
        )?)
}

pub(crate) fn remove_conflict(
    conn: &Connection,
    handler: &str,
    item: &str,
    conflict_id: &str,
) -> OpResult<bool> {
    Ok(conn.execute(
        "DELETE FROM conflicts WHERE handler = ?1 AND item = ?2 AND conflict_id = ?3",
        params![handler, item, conflict_id],
    )? > 0)
}

pub(crate) fn refuse_conflict(
    conn: &Connection,
    handler: &str,
    item: &str,
    conflict_id: &str,
    reason: &str,
) -> OpResult<bool> {
    Ok(conn.execute(
        "UPDATE conflicts SET reason = ?4 WHERE handler = ?1 AND item = ?2 AND conflict_id = ?3",
        params![handler, item, conflict_id, reason],
    )? > 0)
}

pub(crate) fn conflict(conn: &Connection, id: i64) -> OpResult<Option<ConflictRecord>> {
    Ok(conn
        .query_row(
            &format!("SELECT {CONFLICT_COLUMNS} FROM conflicts WHERE id = ?1"),
            [id],
            conflict_from_row,
        )
        .optional()?)
}

pub(crate) fn conflicts(conn: &Connection, handler: Option<&str>) -> OpResult<Vec<ConflictRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CONFLICT_COLUMNS} FROM conflicts WHERE ?1 IS NULL OR handler = ?1 ORDER BY id"
    ))?;
    let rows = stmt.query_map([handler], conflict_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
