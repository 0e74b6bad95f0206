//! The tables and indexes, in SQL that SQLite and PostgreSQL both take as it is.
//!
//! Times are microseconds since the epoch (BIGINT), enums their proto numbers, ids text.
//! Every list query walks one index in (started_at, saga_id) order after an equality on its
//! first column, so a page costs the same at a thousand sagas as at a million.

/// Changes whenever the tables or the stored record change shape: a database of another
/// version is refused, and rebuilt from the store.
pub const SCHEMA_VERSION: &str = "1";

/// The statements that create everything; each is idempotent.
pub const STATEMENTS: &[&str] = &[
    // One row per saga: the columns filters use, and the whole record (JSON) for the rest.
    "CREATE TABLE IF NOT EXISTS sagas (
        saga_id TEXT NOT NULL PRIMARY KEY,
        life_event_type BIGINT NOT NULL,
        status BIGINT NOT NULL,
        municipality TEXT NOT NULL,
        person_insz TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        version BIGINT NOT NULL,
        record TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS sagas_by_start ON sagas (started_at, saga_id)",
    "CREATE INDEX IF NOT EXISTS sagas_by_status ON sagas (status, started_at, saga_id)",
    "CREATE INDEX IF NOT EXISTS sagas_by_type ON sagas (life_event_type, started_at, saga_id)",
    "CREATE INDEX IF NOT EXISTS sagas_by_municipality ON sagas (municipality, started_at, saga_id)",
    "CREATE INDEX IF NOT EXISTS sagas_by_person ON sagas (person_insz, started_at, saga_id)",
    // One row per step, for questions about steps across sagas.
    "CREATE TABLE IF NOT EXISTS saga_steps (
        saga_id TEXT NOT NULL,
        step_id TEXT NOT NULL,
        handler TEXT NOT NULL,
        status BIGINT NOT NULL,
        attempts BIGINT NOT NULL,
        scheduled_at BIGINT,
        finished_at BIGINT,
        PRIMARY KEY (saga_id, step_id)
    )",
    // Which sagas gave work to a handler (compensations included), in list order: the
    // handler filter walks this table's key and joins the saga by its id.
    "CREATE TABLE IF NOT EXISTS saga_handlers (
        handler TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        saga_id TEXT NOT NULL,
        PRIMARY KEY (handler, started_at, saga_id)
    )",
    // Open incidents only: a resolved one is deleted (its saga's record keeps it).
    "CREATE TABLE IF NOT EXISTS incidents (
        incident_id TEXT NOT NULL PRIMARY KEY,
        saga_id TEXT NOT NULL,
        step_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        raised_at BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS incidents_by_time ON incidents (raised_at, incident_id)",
    // Sagas by (type, status), kept up to date on every status change: stats never count.
    "CREATE TABLE IF NOT EXISTS saga_counts (
        life_event_type BIGINT NOT NULL,
        status BIGINT NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (life_event_type, status)
    )",
    // Ended attempts per (handler, latency bucket); see `latency`.
    "CREATE TABLE IF NOT EXISTS step_latency (
        handler TEXT NOT NULL,
        bucket BIGINT NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (handler, bucket)
    )",
    // Small facts about the projection itself: the schema version, subscription positions.
    "CREATE TABLE IF NOT EXISTS meta (
        key TEXT NOT NULL PRIMARY KEY,
        value TEXT NOT NULL
    )",
];

/// The tables that hold data (emptied by a reset), in no particular order.
pub const TABLES: &[&str] = &[
    "sagas",
    "saga_steps",
    "saga_handlers",
    "incidents",
    "saga_counts",
    "step_latency",
    "meta",
];
