//! The database schema and its migrations.
//!
//! The version is SQLite's `PRAGMA user_version` (kept by rusqlite_migration);
//! `PRAGMA application_id` is set to [`APPLICATION_ID`] ("SYNC") so that a
//! syncmgr database can be told from any other SQLite file. A migration, once
//! released, is never edited: changes go in a new one appended to
//! [`MIGRATIONS`].
//!
//! Every table is `STRICT` (SQLite checks column types) and every time is an
//! integer count of Unix milliseconds (UTC).
//!
//! | table | key | columns | notes |
//! |---|---|---|---|
//! | `registrations` | `name` | `description`?, `kind`, `argv`?, `config`?, `events`, `timeout_ms`?, `registered` | `kind` is `process` (then `argv` is a JSON array of strings) or a built-in kind such as `folder` (then `config` is its JSON); `events` is a comma list of the opt-in events (`connect`, `pendingDisconnect`, `idle`). |
//! | `choices` | `handler`, `event`, `item` | `checked` (0/1) | the user's per-event choice; the handler's `checked` is only the default. |
//! | `known_items` | `handler`, `item` | `name`, `temporary` (0/1), `last_update`? | the items the manager has seen, and when each last succeeded. |
//! | `log` | `id` (AUTOINCREMENT: never reused) | `time`, `level`, `handler`, `item`?, `text`, `actionable` (0/1), `session`, `error_id`?, `cause`? | the results log; `cause` (v2) says why the manager wrote an entry of its own. |
//! | `sessions` | `id` | `trigger`, `started`, `finished`?, `outcome`?, `succeeded`, `failed`, `skipped`, `stopped`, `pid` | `outcome` and `finished` are NULL while the session runs; `pid` is the manager running it. |
//! | `session_items` | `session`, `handler`, `item` | `seq`, `status` | every prepared item's final status; `seq` keeps the preparation order. |
//! | `schedules` (v3) | `name` | `every_ms`? or `cron` + `timezone`?, `jitter_ms`, `catch_up`, `targets`, `created`, `last_run`? | `syncmgr schedule`. |
//! | `conflicts` (v4) | `id` (AUTOINCREMENT), unique (`handler`, `item`, `conflict_id`) | `text`, `versions` (JSON array), `detected`, `session`, `reason`? | the open conflicts; `reason` is why the last decision could not be applied. |
//!
//! `choices`, `known_items` and `conflicts` reference `registrations` with
//! `ON DELETE CASCADE` (a conflict only its handler can resolve goes with it); the log and the history deliberately do not, because they outlive
//! the registration (`syncmgr unregister` keeps them).

use rusqlite_migration::{M, Migrations};

/// `PRAGMA application_id` of a syncmgr database: "SYNC" in ASCII.
pub(crate) const APPLICATION_ID: i32 = 0x5359_4E43;

/// Every migration, oldest first. The `const` slice is what
/// `Migrations::from_slice` needs to build the set at compile time.
const MIGRATION_LIST: &[M<'static>] = &[
    // v1: the initial schema.
    M::up(
        r#"
PRAGMA application_id = 1398361667;

CREATE TABLE registrations (
    name        TEXT PRIMARY KEY NOT NULL,
    description TEXT,
    kind        TEXT NOT NULL CHECK (kind <> ''),
    argv        TEXT CHECK (argv IS NULL OR json_valid(argv)),
    config      TEXT CHECK (config IS NULL OR json_valid(config)),
    events      TEXT NOT NULL DEFAULT '',
    timeout_ms  INTEGER CHECK (timeout_ms IS NULL OR timeout_ms >= 0),
    registered  INTEGER NOT NULL,
    CHECK ((kind = 'process') = (argv IS NOT NULL)),
    CHECK ((kind = 'process') = (config IS NULL))
) STRICT;

CREATE TABLE choices (
    handler TEXT NOT NULL REFERENCES registrations (name) ON DELETE CASCADE,
    event   TEXT NOT NULL,
    item    TEXT NOT NULL,
    checked INTEGER NOT NULL CHECK (checked IN (0, 1)),
    PRIMARY KEY (handler, event, item)
) STRICT, WITHOUT ROWID;

CREATE TABLE known_items (
    handler     TEXT NOT NULL REFERENCES registrations (name) ON DELETE CASCADE,
    item        TEXT NOT NULL,
    name        TEXT NOT NULL,
    temporary   INTEGER NOT NULL DEFAULT 0 CHECK (temporary IN (0, 1)),
    last_update INTEGER,
    PRIMARY KEY (handler, item)
) STRICT, WITHOUT ROWID;

CREATE TABLE log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    time       INTEGER NOT NULL,
    level      TEXT NOT NULL,
    handler    TEXT NOT NULL,
    item       TEXT,
    text       TEXT NOT NULL,
    actionable INTEGER NOT NULL CHECK (actionable IN (0, 1)),
    session    TEXT NOT NULL,
    error_id   TEXT
) STRICT;
CREATE INDEX log_by_session ON log (session, handler);
CREATE INDEX log_by_handler ON log (handler);

CREATE TABLE sessions (
    id        TEXT PRIMARY KEY NOT NULL,
    trigger   TEXT NOT NULL,
    started   INTEGER NOT NULL,
    finished  INTEGER,
    outcome   TEXT,
    succeeded INTEGER NOT NULL DEFAULT 0 CHECK (succeeded >= 0),
    failed    INTEGER NOT NULL DEFAULT 0 CHECK (failed >= 0),
    skipped   INTEGER NOT NULL DEFAULT 0 CHECK (skipped >= 0),
    stopped   INTEGER NOT NULL DEFAULT 0 CHECK (stopped >= 0),
    pid       INTEGER NOT NULL CHECK (pid >= 0),
    CHECK ((outcome IS NULL) = (finished IS NULL))
) STRICT;
CREATE INDEX sessions_by_start ON sessions (started);
-- recover_interrupted looks for these at every start
CREATE INDEX sessions_running ON sessions (pid) WHERE outcome IS NULL;

CREATE TABLE session_items (
    session TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    handler TEXT NOT NULL,
    item    TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    status  TEXT NOT NULL,
    PRIMARY KEY (session, handler, item)
) STRICT, WITHOUT ROWID;
"#,
    ),
    // v2: why the manager wrote an entry of its own (`Cause`), NULL for a
    // handler's entries and for entries written before v2.
    M::up("ALTER TABLE log ADD COLUMN cause TEXT;"),
    // v3: why a session ran (`schedule nightly`), NULL before v3; and
    // schedules (`syncmgr schedule`), each either every N ms or a cron
    // expression in a time zone (NULL: the local one), with the wall time
    // of its last run (what catch-up after downtime is computed from).
    M::up(
        r#"
ALTER TABLE sessions ADD COLUMN reason TEXT;
CREATE TABLE schedules (
    name      TEXT PRIMARY KEY NOT NULL,
    every_ms  INTEGER CHECK (every_ms > 0),
    cron      TEXT,
    timezone  TEXT,
    jitter_ms INTEGER NOT NULL DEFAULT 0 CHECK (jitter_ms >= 0),
    catch_up  INTEGER NOT NULL DEFAULT 1 CHECK (catch_up IN (0, 1)),
    targets   TEXT NOT NULL,
    created   INTEGER NOT NULL,
    last_run  INTEGER,
    CHECK ((every_ms IS NULL) != (cron IS NULL))
) STRICT;
"#,
    ),
    // v4: the conflict store (`reportConflict`, `syncmgr conflicts`). A
    // conflict reported again keeps its row (and id); `versions` is the
    // JSON array the handler reported.
    M::up(
        r#"
CREATE TABLE conflicts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    handler     TEXT NOT NULL REFERENCES registrations (name) ON DELETE CASCADE,
    item        TEXT NOT NULL,
    conflict_id TEXT NOT NULL,
    text        TEXT NOT NULL,
    versions    TEXT NOT NULL,
    detected    INTEGER NOT NULL,
    session     TEXT NOT NULL,
    reason      TEXT,
    UNIQUE (handler, item, conflict_id)
) STRICT;
"#,
    ),
];

/// The migration set.
pub(crate) const MIGRATIONS: Migrations<'static> = Migrations::from_slice(MIGRATION_LIST);

/// The schema version this build writes (the number of migrations).
pub(crate) const LATEST_VERSION: usize = MIGRATION_LIST.len();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_validate() {
        MIGRATIONS.validate().unwrap();
    }
}
