//! The operators' read model in a database: SQLite (embedded, one file, the default) or
//! PostgreSQL (shared by several API servers), chosen by URL.
//!
//! Commits of saga events go in through [`ReadModel::apply`], one transaction per batch;
//! operators' questions come out through [`ReadModel::list`], [`ReadModel::get`],
//! [`ReadModel::incidents`] and [`ReadModel::stats`]. Both backends speak the same SQL (see
//! `schema`), through one `sqlx::Any` pool.
//!
//! **One writer per database.** Only one process applies commits to a database (the
//! projection that follows the store); it keeps the latest records in memory so a commit
//! rarely costs a read, and that cache is only right if nobody else writes. Any number of
//! processes may read.

pub mod latency;
mod schema;
mod sql;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use levensloop_proto::v1;
use lru::LruCache;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};
use uuid::Uuid;

pub use schema::SCHEMA_VERSION;
use sql::{Arg, Sql};

use crate::summary::SagaRecord;

/// The page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The largest page served; larger requests get this many.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Rows per multi-row statement: well under both backends' parameter limits.
const ROWS_PER_STATEMENT: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    #[error("unsupported database URL {0:?}: expected sqlite:… or postgres://…")]
    UnsupportedUrl(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(
        "the database holds read model schema {found:?}, this version uses {expected:?}: reset it and rebuild from the store"
    )]
    SchemaMismatch { found: String, expected: String },
    #[error("malformed page token")]
    BadPageToken,
    #[error("saga {saga_id}: stored record unreadable: {source}")]
    CorruptRecord {
        saga_id: String,
        source: serde_json::Error,
    },
    #[error("saga {saga_id}: record cannot be encoded: {source}")]
    Encode {
        saga_id: Uuid,
        source: serde_json::Error,
    },
    #[error("{0} out of range")]
    OutOfRange(&'static str),
}

pub type Result<T, E = ReadModelError> = std::result::Result<T, E>;

/// Which database a [`ReadModel`] is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a URL names.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// How to open a [`ReadModel`].
#[derive(Debug, Clone)]
pub struct ReadModelOptions {
    /// Saga records kept in memory for the writer.
    pub cache_capacity: usize,
    /// Connections in the pool (an in-memory SQLite database always has one).
    pub max_connections: u32,
}

impl Default for ReadModelOptions {
    fn default() -> Self {
        Self {
            cache_capacity: 10_000,
            max_connections: 8,
        }
    }
}

/// The advisory lock key that elects the projector on PostgreSQL ("levensloop" in ASCII,
/// truncated to 64 bits).
const PROJECTOR_LOCK_KEY: i64 = 0x6c65_7665_6e73_6c6f;

/// The right to run the projection (see [`ReadModel::projector_lock`]); released on drop.
#[derive(Debug)]
pub struct ProjectorLock(#[allow(dead_code)] Option<sqlx::AnyConnection>);

/// One commit of one saga's stream, as the store delivered it.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaCommit {
    pub saga_id: Uuid,
    /// The stream's version after the commit (opaque, ordered).
    pub version: u64,
    pub events: Vec<v1::SagaEvent>,
}

/// Which sagas to list. Empty lists and `None` do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SagaFilter {
    /// Any of these.
    pub statuses: Vec<v1::SagaStatus>,
    /// Any of these.
    pub types: Vec<v1::LifeEventType>,
    pub municipality_nis_code: Option<String>,
    /// Sagas that gave work to this handler (a step or a compensation).
    pub handler: Option<String>,
    /// Started at or after.
    pub started_after: Option<DateTime<Utc>>,
    /// Started before.
    pub started_before: Option<DateTime<Utc>>,
    pub person_insz: Option<String>,
}

impl SagaFilter {
    /// Whether a record passes the filter: what [`ReadModel::list`] selects, for records at
    /// hand (e.g. to tell watchers about a change).
    pub fn matches(&self, record: &SagaRecord) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&record.status))
            && (self.types.is_empty() || self.types.contains(&record.life_event()))
            && self
                .municipality_nis_code
                .as_ref()
                .is_none_or(|m| *m == record.municipality_nis_code)
            && self
                .handler
                .as_ref()
                .is_none_or(|h| record.handlers().contains(h.as_str()))
            && self.started_after.is_none_or(|t| record.started_at >= t)
            && self.started_before.is_none_or(|t| record.started_at < t)
            && self
                .person_insz
                .as_ref()
                .is_none_or(|p| *p == record.person_insz)
    }
}

/// One page of sagas, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub sagas: Vec<SagaRecord>,
    /// Hand it back for the next page; `None` on the last one.
    pub next_page_token: Option<String>,
}

/// An open incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub incident_id: String,
    pub saga_id: Uuid,
    pub step_id: String,
    pub reason: String,
    pub raised_at: DateTime<Utc>,
}

/// One page of open incidents, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentPage {
    pub incidents: Vec<Incident>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Non-zero counts, by type then status.
    pub by_status: Vec<StatusCount>,
    /// By handler name.
    pub step_latency: Vec<HandlerLatency>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusCount {
    pub life_event: v1::LifeEventType,
    pub status: v1::SagaStatus,
    pub count: u64,
}

/// A handler's step latency (attempt scheduled → ended), from its histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerLatency {
    pub handler: String,
    /// Attempts measured.
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// The read model; see the module documentation.
#[derive(Debug)]
pub struct ReadModel {
    pool: AnyPool,
    backend: Backend,
    /// The latest committed record of recently changed sagas.
    cache: Mutex<LruCache<Uuid, SagaRecord>>,
    /// Serialises writers within this process.
    writer: tokio::sync::Mutex<()>,
}

/// The cache's state before and after a batch, per saga.
struct Change {
    before: Option<SagaRecord>,
    after: SagaRecord,
}

impl ReadModel {
    /// Opens (creating if need be) the read model at `url`: `sqlite:///path/to/file.db`,
    /// `sqlite:relative.db`, `sqlite::memory:`, or `postgres://user@host/db`.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, ReadModelOptions::default()).await
    }

    pub async fn open_with(url: &str, options: ReadModelOptions) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend =
            Backend::of_url(url).ok_or_else(|| ReadModelError::UnsupportedUrl(url.to_owned()))?;
        let memory = backend == Backend::Sqlite && url.contains(":memory:");
        let url = if backend == Backend::Sqlite && !memory && !url.contains("mode=") {
            // Create the file if it is missing.
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        } else {
            url.to_owned()
        };
        let connect = AnyConnectOptions::from_str(&url)?;
        let mut pool = AnyPoolOptions::new().max_connections(options.max_connections.max(1));
        if memory {
            // Each connection to `:memory:` is a database of its own, gone when it closes.
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        if backend == Backend::Sqlite {
            pool = pool.after_connect(|conn, _| {
                Box::pin(async move {
                    // With WAL, NORMAL loses no committed transaction on a crash of the
                    // process (only on a power cut): the read model is rebuilt then anyway.
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    Ok(())
                })
            });
        }
        let pool = pool
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect)
            .await?;
        if backend == Backend::Sqlite && !memory {
            // Readers do not block the writer, nor it them. Stored in the file.
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        for statement in schema::STATEMENTS {
            pool.execute(*statement).await?;
        }
        let model = Self {
            pool,
            backend,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(options.cache_capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            writer: tokio::sync::Mutex::new(()),
        };
        match model.meta("schema_version").await? {
            Some(found) if found != SCHEMA_VERSION => {
                return Err(ReadModelError::SchemaMismatch {
                    found,
                    expected: SCHEMA_VERSION.to_owned(),
                });
            }
            Some(_) => {}
            None => model.set_meta("schema_version", SCHEMA_VERSION).await?,
        }
        Ok(model)
    }

    /// Waits until this process may run the projection, and holds that right for as long as
    /// the returned guard lives. On PostgreSQL, several operations instances share one
    /// database: a session-level advisory lock elects one projector, and when its process
    /// dies its connection closes and a waiting instance takes over. SQLite has one process per
    /// file, so the guard is empty.
    pub async fn projector_lock(&self) -> Result<ProjectorLock> {
        if self.backend != Backend::Postgres {
            return Ok(ProjectorLock(None));
        }
        let mut connection = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(PROJECTOR_LOCK_KEY)
            .execute(&mut *connection)
            .await?;
        // Detached from the pool: a lock that went back into the pool would be held by
        // whichever query borrowed the connection next.
        Ok(ProjectorLock(Some(connection.detach())))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for diagnostics and tests.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Applies commits in one transaction and returns the records they changed, in order of
    /// first change. A commit whose version is not newer than the saga's stored one is
    /// skipped: delivery is at least once, so duplicates are normal.
    pub async fn apply(&self, commits: &[SagaCommit]) -> Result<Vec<SagaRecord>> {
        self.apply_with_meta(commits, &[]).await
    }

    /// [`ReadModel::apply`], and sets `meta` entries in the same transaction (e.g. the
    /// projection's position, so it moves with the data).
    pub async fn apply_with_meta(
        &self,
        commits: &[SagaCommit],
        meta: &[(&str, &str)],
    ) -> Result<Vec<SagaRecord>> {
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;

        // The records as they are: from the cache, else one read for all the others.
        let mut changes: HashMap<Uuid, Change> = HashMap::new();
        let mut order: Vec<Uuid> = Vec::new();
        let mut missing: Vec<Uuid> = Vec::new();
        let mut asked: HashSet<Uuid> = HashSet::new();
        {
            let mut cache = lock(&self.cache);
            for commit in commits {
                if !asked.insert(commit.saga_id) {
                    continue;
                }
                match cache.get(&commit.saga_id) {
                    Some(record) => {
                        changes.insert(
                            commit.saga_id,
                            Change {
                                before: Some(record.clone()),
                                after: record.clone(),
                            },
                        );
                    }
                    None => missing.push(commit.saga_id),
                }
            }
        }
        let mut loaded = HashMap::new();
        for chunk in missing.chunks(ROWS_PER_STATEMENT) {
            let mut sql = Sql::new(
                self.backend,
                "SELECT saga_id, record FROM sagas WHERE saga_id IN ",
            );
            sql.list(chunk.iter().map(|id| Arg::from(id.to_string())));
            for row in sql.query().fetch_all(&mut *tx).await? {
                let record = decode_record(&row)?;
                loaded.insert(record.saga_id, record);
            }
        }
        for id in missing {
            let before = loaded.remove(&id);
            let after = before.clone().unwrap_or_else(|| SagaRecord::new(id));
            changes.insert(id, Change { before, after });
        }

        // Fold.
        let mut latency: BTreeMap<(String, i64), i64> = BTreeMap::new();
        let mut folded: BTreeSet<Uuid> = BTreeSet::new();
        for commit in commits {
            let Some(change) = changes.get_mut(&commit.saga_id) else {
                continue;
            };
            let seen = change.before.is_some() || folded.contains(&commit.saga_id);
            if seen && commit.version <= change.after.version {
                continue;
            }
            for event in &commit.events {
                if let Some(ended) = change.after.apply(event) {
                    let bucket = latency::bucket_of_micros(ended.duration_micros) as i64;
                    *latency.entry((ended.handler, bucket)).or_default() += 1;
                }
            }
            change.after.version = commit.version;
            if folded.insert(commit.saga_id) {
                order.push(commit.saga_id);
            }
        }

        // Write what changed.
        let changed: Vec<&Change> = order.iter().filter_map(|id| changes.get(id)).collect();
        write_sagas(&mut tx, self.backend, &changed).await?;
        write_steps(&mut tx, self.backend, &changed).await?;
        write_handlers(&mut tx, self.backend, &changed).await?;
        write_incidents(&mut tx, self.backend, &changed).await?;
        write_counts(&mut tx, self.backend, &changed).await?;
        write_latency(&mut tx, self.backend, &latency).await?;
        for (key, value) in meta {
            upsert_meta(&mut tx, self.backend, key, value).await?;
        }
        tx.commit().await?;

        let mut cache = lock(&self.cache);
        let mut out = Vec::with_capacity(changed.len());
        for change in changed {
            cache.put(change.after.saga_id, change.after.clone());
            out.push(change.after.clone());
        }
        Ok(out)
    }

    /// A saga's full record.
    pub async fn get(&self, saga_id: Uuid) -> Result<Option<SagaRecord>> {
        if let Some(record) = lock(&self.cache).peek(&saga_id) {
            return Ok(Some(record.clone()));
        }
        let mut sql = Sql::new(
            self.backend,
            "SELECT saga_id, record FROM sagas WHERE saga_id = ",
        );
        sql.bind(saga_id.to_string());
        match sql.query().fetch_optional(&self.pool).await? {
            Some(row) => Ok(Some(decode_record(&row)?)),
            None => Ok(None),
        }
    }

    /// The sagas that pass `filter`, newest first (by start, then saga id), one page at a
    /// time. `page_size` 0 means [`DEFAULT_PAGE_SIZE`]; it is capped at [`MAX_PAGE_SIZE`].
    pub async fn list(
        &self,
        filter: &SagaFilter,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<Page> {
        let size = page_size_of(page_size);
        let sql = list_sql(self.backend, filter, cursor_of(page_token)?, size + 1);
        let rows = sql.query().fetch_all(&self.pool).await?;
        let mut sagas = rows.iter().map(decode_record).collect::<Result<Vec<_>>>()?;
        let next_page_token = if sagas.len() > size as usize {
            sagas.truncate(size as usize);
            sagas
                .last()
                .map(|r| saga_token(micros(r.started_at), r.saga_id))
        } else {
            None
        };
        Ok(Page {
            sagas,
            next_page_token,
        })
    }

    /// How the database runs the query behind [`ReadModel::list`] for `filter`: the lines of
    /// SQLite's `EXPLAIN QUERY PLAN` or PostgreSQL's `EXPLAIN`.
    pub async fn explain_list(
        &self,
        filter: &SagaFilter,
        page_token: Option<&str>,
    ) -> Result<Vec<String>> {
        let mut sql = list_sql(
            self.backend,
            filter,
            cursor_of(page_token)?,
            DEFAULT_PAGE_SIZE + 1,
        );
        let (prefix, column) = match self.backend {
            Backend::Sqlite => ("EXPLAIN QUERY PLAN ", 3),
            Backend::Postgres => ("EXPLAIN ", 0),
        };
        sql.text.insert_str(0, prefix);
        let rows = sql.query().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<String, _>(column)?))
            .collect()
    }

    /// Refreshes the planner's statistics (after a rebuild, say).
    pub async fn analyze(&self) -> Result<()> {
        self.pool.execute("ANALYZE").await?;
        Ok(())
    }

    /// The open incidents, newest first.
    pub async fn incidents(
        &self,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<IncidentPage> {
        let size = page_size_of(page_size);
        let mut sql = Sql::new(
            self.backend,
            "SELECT incident_id, saga_id, step_id, reason, raised_at FROM incidents WHERE 1 = 1",
        );
        if let Some(token) = page_token {
            let (raised_at, incident_id) = parse_incident_token(token)?;
            sql.push(" AND raised_at <= ")
                .bind(raised_at)
                .push(" AND (raised_at < ")
                .bind(raised_at)
                .push(" OR incident_id < ")
                .bind(incident_id)
                .push(")");
        }
        sql.push(&format!(
            " ORDER BY raised_at DESC, incident_id DESC LIMIT {}",
            size + 1
        ));
        let rows = sql.query().fetch_all(&self.pool).await?;
        let mut incidents = Vec::with_capacity(rows.len());
        for row in &rows {
            let saga_id: String = row.try_get("saga_id")?;
            incidents.push(Incident {
                incident_id: row.try_get("incident_id")?,
                saga_id: Uuid::parse_str(&saga_id)
                    .map_err(|_| ReadModelError::OutOfRange("saga id"))?,
                step_id: row.try_get("step_id")?,
                reason: row.try_get("reason")?,
                raised_at: from_micros(row.try_get("raised_at")?)?,
            });
        }
        let next_page_token = if incidents.len() > size as usize {
            incidents.truncate(size as usize);
            incidents
                .last()
                .map(|i| incident_token(micros(i.raised_at), &i.incident_id))
        } else {
            None
        };
        Ok(IncidentPage {
            incidents,
            next_page_token,
        })
    }

    /// Counts by (type, status) and per-handler latency percentiles, read from the counters
    /// `apply` keeps: no saga is counted here.
    pub async fn stats(&self) -> Result<Stats> {
        let rows = sqlx::query(
            "SELECT life_event_type, status, count FROM saga_counts WHERE count <> 0 \
             ORDER BY life_event_type, status",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut by_status = Vec::with_capacity(rows.len());
        for row in rows {
            let t: i64 = row.try_get(0)?;
            let s: i64 = row.try_get(1)?;
            let count: i64 = row.try_get(2)?;
            by_status.push(StatusCount {
                life_event: i32::try_from(t)
                    .ok()
                    .and_then(|t| v1::LifeEventType::try_from(t).ok())
                    .unwrap_or(v1::LifeEventType::Unspecified),
                status: i32::try_from(s)
                    .ok()
                    .and_then(|s| v1::SagaStatus::try_from(s).ok())
                    .unwrap_or(v1::SagaStatus::Unspecified),
                count: u64::try_from(count).map_err(|_| ReadModelError::OutOfRange("count"))?,
            });
        }
        let rows =
            sqlx::query("SELECT handler, bucket, count FROM step_latency ORDER BY handler, bucket")
                .fetch_all(&self.pool)
                .await?;
        let mut histograms: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for row in rows {
            let handler: String = row.try_get(0)?;
            let bucket: i64 = row.try_get(1)?;
            let count: i64 = row.try_get(2)?;
            let bucket = usize::try_from(bucket)
                .ok()
                .filter(|b| *b < latency::BUCKETS)
                .ok_or(ReadModelError::OutOfRange("latency bucket"))?;
            histograms
                .entry(handler)
                .or_insert_with(|| vec![0; latency::BUCKETS])[bucket] =
                u64::try_from(count).map_err(|_| ReadModelError::OutOfRange("count"))?;
        }
        let step_latency = histograms
            .into_iter()
            .filter_map(|(handler, counts)| {
                Some(HandlerLatency {
                    count: counts.iter().sum(),
                    p50_ms: latency::quantile_ms(&counts, 0.50)?,
                    p95_ms: latency::quantile_ms(&counts, 0.95)?,
                    p99_ms: latency::quantile_ms(&counts, 0.99)?,
                    handler,
                })
            })
            .collect();
        Ok(Stats {
            by_status,
            step_latency,
        })
    }

    /// Empties every table (the schema version stays): a rebuild from the store starts here.
    pub async fn reset(&self) -> Result<()> {
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        for table in schema::TABLES {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *tx)
                .await?;
        }
        upsert_meta(&mut tx, self.backend, "schema_version", SCHEMA_VERSION).await?;
        tx.commit().await?;
        lock(&self.cache).clear();
        Ok(())
    }

    /// A value from the meta table (e.g. the projection's subscription and position).
    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        let mut sql = Sql::new(self.backend, "SELECT value FROM meta WHERE key = ");
        sql.bind(key);
        Ok(match sql.query().fetch_optional(&self.pool).await? {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        })
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        upsert_meta(&mut tx, self.backend, key, value).await?;
        tx.commit().await?;
        Ok(())
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The cache holds plain data: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn upsert_meta(tx: &mut Tx, backend: Backend, key: &str, value: &str) -> Result<()> {
    let mut sql = Sql::new(backend, "INSERT INTO meta (key, value) VALUES ");
    sql.values([vec![Arg::from(key), Arg::from(value)]])
        .push(" ON CONFLICT (key) DO UPDATE SET value = excluded.value");
    sql.query().execute(&mut **tx).await?;
    Ok(())
}

/// Runs `INSERT … VALUES <rows> <tail>` in statements of [`ROWS_PER_STATEMENT`] rows.
async fn insert_rows(
    tx: &mut Tx,
    backend: Backend,
    head: &str,
    rows: Vec<Vec<Arg>>,
    tail: &str,
) -> Result<()> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut sql = Sql::new(backend, head);
        sql.values(rows.by_ref().take(ROWS_PER_STATEMENT))
            .push(tail);
        sql.query().execute(&mut **tx).await?;
    }
    Ok(())
}

async fn write_sagas(tx: &mut Tx, backend: Backend, changed: &[&Change]) -> Result<()> {
    let mut rows = Vec::with_capacity(changed.len());
    for change in changed {
        let r = &change.after;
        let record = serde_json::to_string(r).map_err(|source| ReadModelError::Encode {
            saga_id: r.saga_id,
            source,
        })?;
        rows.push(vec![
            Arg::from(r.saga_id.to_string()),
            Arg::from(i64::from(r.life_event() as i32)),
            Arg::from(i64::from(r.status as i32)),
            Arg::from(r.municipality_nis_code.as_str()),
            Arg::from(r.person_insz.as_str()),
            Arg::from(micros(r.started_at)),
            Arg::from(micros(r.updated_at)),
            Arg::from(i64::try_from(r.version).map_err(|_| ReadModelError::OutOfRange("version"))?),
            Arg::from(record),
        ]);
    }
    insert_rows(
        tx,
        backend,
        "INSERT INTO sagas (saga_id, life_event_type, status, municipality, person_insz, \
         started_at, updated_at, version, record) VALUES ",
        rows,
        " ON CONFLICT (saga_id) DO UPDATE SET life_event_type = excluded.life_event_type, \
         status = excluded.status, municipality = excluded.municipality, \
         person_insz = excluded.person_insz, started_at = excluded.started_at, \
         updated_at = excluded.updated_at, version = excluded.version, record = excluded.record",
    )
    .await
}

async fn write_steps(tx: &mut Tx, backend: Backend, changed: &[&Change]) -> Result<()> {
    let mut rows = Vec::new();
    for change in changed {
        let before = change.before.as_ref();
        for step in &change.after.steps {
            if before.and_then(|b| b.step(&step.step_id)) == Some(step) {
                continue;
            }
            rows.push(vec![
                Arg::from(change.after.saga_id.to_string()),
                Arg::from(step.step_id.as_str()),
                Arg::from(step.handler.as_str()),
                Arg::from(i64::from(step.status as i32)),
                Arg::from(i64::from(step.attempts)),
                Arg::from(step.scheduled_at.map(micros)),
                Arg::from(step.finished_at.map(micros)),
            ]);
        }
    }
    insert_rows(
        tx,
        backend,
        "INSERT INTO saga_steps (saga_id, step_id, handler, status, attempts, scheduled_at, \
         finished_at) VALUES ",
        rows,
        " ON CONFLICT (saga_id, step_id) DO UPDATE SET handler = excluded.handler, \
         status = excluded.status, attempts = excluded.attempts, \
         scheduled_at = excluded.scheduled_at, finished_at = excluded.finished_at",
    )
    .await
}

async fn write_handlers(tx: &mut Tx, backend: Backend, changed: &[&Change]) -> Result<()> {
    let mut rows = Vec::new();
    for change in changed {
        let after = &change.after;
        let id = after.saga_id.to_string();
        let started = micros(after.started_at);
        let mut known = BTreeSet::new();
        if let Some(before) = &change.before {
            if before.started_at == after.started_at {
                known = before.handlers();
            } else {
                // The key holds the start time: move the saga's rows.
                for handler in before.handlers() {
                    let mut sql = Sql::new(backend, "DELETE FROM saga_handlers WHERE handler = ");
                    sql.bind(handler)
                        .push(" AND started_at = ")
                        .bind(micros(before.started_at))
                        .push(" AND saga_id = ")
                        .bind(id.as_str());
                    sql.query().execute(&mut **tx).await?;
                }
            }
        }
        for handler in after.handlers().difference(&known) {
            rows.push(vec![
                Arg::from(*handler),
                Arg::from(started),
                Arg::from(id.as_str()),
            ]);
        }
    }
    insert_rows(
        tx,
        backend,
        "INSERT INTO saga_handlers (handler, started_at, saga_id) VALUES ",
        rows,
        " ON CONFLICT DO NOTHING",
    )
    .await
}

async fn write_incidents(tx: &mut Tx, backend: Backend, changed: &[&Change]) -> Result<()> {
    let mut open = Vec::new();
    let mut closed = Vec::new();
    for change in changed {
        let was: BTreeSet<&str> = change
            .before
            .iter()
            .flat_map(|b| b.open_incidents())
            .map(|i| i.incident_id.as_str())
            .collect();
        let is: BTreeSet<&str> = change
            .after
            .open_incidents()
            .map(|i| i.incident_id.as_str())
            .collect();
        closed.extend(was.difference(&is).map(|id| Arg::from(*id)));
        for incident in change.after.open_incidents() {
            if !was.contains(incident.incident_id.as_str()) {
                open.push(vec![
                    Arg::from(incident.incident_id.as_str()),
                    Arg::from(change.after.saga_id.to_string()),
                    Arg::from(incident.step_id.as_str()),
                    Arg::from(incident.reason.as_str()),
                    Arg::from(micros(incident.raised_at)),
                ]);
            }
        }
    }
    for chunk in closed.chunks(ROWS_PER_STATEMENT) {
        let mut sql = Sql::new(backend, "DELETE FROM incidents WHERE incident_id IN ");
        sql.list(chunk.iter().cloned());
        sql.query().execute(&mut **tx).await?;
    }
    insert_rows(
        tx,
        backend,
        "INSERT INTO incidents (incident_id, saga_id, step_id, reason, raised_at) VALUES ",
        open,
        " ON CONFLICT DO NOTHING",
    )
    .await
}

async fn write_counts(tx: &mut Tx, backend: Backend, changed: &[&Change]) -> Result<()> {
    let key = |r: &SagaRecord| (i64::from(r.life_event() as i32), i64::from(r.status as i32));
    let mut deltas: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for change in changed {
        let after = key(&change.after);
        if let Some(before) = change.before.as_ref().map(key) {
            if before == after {
                continue;
            }
            *deltas.entry(before).or_default() -= 1;
        }
        *deltas.entry(after).or_default() += 1;
    }
    let rows = deltas
        .into_iter()
        .filter(|(_, d)| *d != 0)
        .map(|((t, s), d)| vec![Arg::from(t), Arg::from(s), Arg::from(d)])
        .collect();
    insert_rows(
        tx,
        backend,
        "INSERT INTO saga_counts (life_event_type, status, count) VALUES ",
        rows,
        " ON CONFLICT (life_event_type, status) DO UPDATE SET count = saga_counts.count + excluded.count",
    )
    .await
}

async fn write_latency(
    tx: &mut Tx,
    backend: Backend,
    latency: &BTreeMap<(String, i64), i64>,
) -> Result<()> {
    let rows = latency
        .iter()
        .map(|((h, b), n)| vec![Arg::from(h.as_str()), Arg::from(*b), Arg::from(*n)])
        .collect();
    insert_rows(
        tx,
        backend,
        "INSERT INTO step_latency (handler, bucket, count) VALUES ",
        rows,
        " ON CONFLICT (handler, bucket) DO UPDATE SET count = step_latency.count + excluded.count",
    )
    .await
}

fn decode_record(row: &sqlx::any::AnyRow) -> Result<SagaRecord> {
    let saga_id: String = row.try_get("saga_id")?;
    let json: String = row.try_get("record")?;
    serde_json::from_str(&json).map_err(|source| ReadModelError::CorruptRecord { saga_id, source })
}

fn page_size_of(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// The list query. Several statuses (or, failing that, several types) make one branch per
/// value, each walking its own index range in order, merged by a final sort of at most
/// `limit` rows per branch: an `IN` over an index would have to sort every match.
fn list_sql(backend: Backend, filter: &SagaFilter, after: Option<(i64, Uuid)>, limit: u32) -> Sql {
    let statuses: Vec<i64> = filter
        .statuses
        .iter()
        .map(|s| i64::from(*s as i32))
        .collect();
    let types: Vec<i64> = filter.types.iter().map(|t| i64::from(*t as i32)).collect();
    let branches: Vec<(Vec<i64>, Vec<i64>)> = if statuses.len() > 1 {
        statuses.iter().map(|s| (vec![*s], types.clone())).collect()
    } else if types.len() > 1 {
        types.iter().map(|t| (statuses.clone(), vec![*t])).collect()
    } else {
        vec![(statuses, types)]
    };
    let mut sql = Sql::new(backend, "");
    if branches.len() == 1 {
        let (statuses, types) = &branches[0];
        push_branch(&mut sql, backend, filter, statuses, types, after, limit);
        return sql;
    }
    sql.push("SELECT saga_id, started_at, record FROM (");
    for (i, (statuses, types)) in branches.iter().enumerate() {
        if i > 0 {
            sql.push(" UNION ALL ");
        }
        sql.push("SELECT * FROM (");
        push_branch(&mut sql, backend, filter, statuses, types, after, limit);
        sql.push(&format!(") b{i}"));
    }
    sql.push(&format!(
        ") u ORDER BY started_at DESC, saga_id DESC LIMIT {limit}"
    ));
    sql
}

fn push_branch(
    sql: &mut Sql,
    backend: Backend,
    filter: &SagaFilter,
    statuses: &[i64],
    types: &[i64],
    after: Option<(i64, Uuid)>,
    limit: u32,
) {
    sql.push("SELECT s.saga_id AS saga_id, s.started_at AS started_at, s.record AS record FROM ");
    // The handler filter walks the membership table's key, in order, and joins each saga;
    // CROSS JOIN keeps SQLite from turning that around.
    let o = match &filter.handler {
        Some(handler) => {
            sql.push(
                "saga_handlers h CROSS JOIN sagas s WHERE s.saga_id = h.saga_id AND h.handler = ",
            )
            .bind(handler.as_str());
            "h"
        }
        None => {
            sql.push("sagas s");
            let by_start_only = statuses.is_empty()
                && types.is_empty()
                && filter.municipality_nis_code.is_none()
                && filter.person_insz.is_none();
            if by_start_only && backend == Backend::Sqlite {
                // Told how few types there are (ANALYZE), SQLite would rather skip-scan
                // the type index over a time range and sort all of it than walk the range
                // in order and stop at the page's end.
                sql.push(" INDEXED BY sagas_by_start");
            }
            sql.push(" WHERE 1 = 1");
            "s"
        }
    };
    let any_of = |sql: &mut Sql, column: &str, values: &[i64]| match values {
        [] => {}
        [one] => {
            sql.push(&format!(" AND s.{column} = ")).bind(*one);
        }
        many => {
            sql.push(&format!(" AND s.{column} IN "))
                .list(many.iter().map(|v| Arg::from(*v)));
        }
    };
    any_of(sql, "status", statuses);
    any_of(sql, "life_event_type", types);
    if let Some(m) = &filter.municipality_nis_code {
        sql.push(" AND s.municipality = ").bind(m.as_str());
    }
    if let Some(p) = &filter.person_insz {
        sql.push(" AND s.person_insz = ").bind(p.as_str());
    }
    if let Some(t) = filter.started_after {
        sql.push(&format!(" AND {o}.started_at >= "))
            .bind(micros(t));
    }
    if let Some(t) = filter.started_before {
        sql.push(&format!(" AND {o}.started_at < ")).bind(micros(t));
    }
    if let Some((started_at, saga_id)) = after {
        // (started_at, saga_id) < cursor, written so both databases use the index range on
        // started_at and only check the saga id within one instant.
        sql.push(&format!(" AND {o}.started_at <= "))
            .bind(started_at)
            .push(&format!(" AND ({o}.started_at < "))
            .bind(started_at)
            .push(&format!(" OR {o}.saga_id < "))
            .bind(saga_id.to_string())
            .push(")");
    }
    sql.push(&format!(
        " ORDER BY {o}.started_at DESC, {o}.saga_id DESC LIMIT {limit}"
    ));
}

/// A time as stored: microseconds since the epoch.
pub fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn from_micros(us: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us).ok_or(ReadModelError::OutOfRange("time"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// A list page token: the last saga's start (8 bytes) and id (16 bytes), in hex.
fn saga_token(started_at: i64, saga_id: Uuid) -> String {
    let mut bytes = started_at.to_be_bytes().to_vec();
    bytes.extend_from_slice(saga_id.as_bytes());
    hex(&bytes)
}

fn cursor_of(token: Option<&str>) -> Result<Option<(i64, Uuid)>> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let bytes = unhex(token)
        .filter(|b| b.len() == 24)
        .ok_or(ReadModelError::BadPageToken)?;
    let (time, id) = bytes.split_at(8);
    let time = i64::from_be_bytes(time.try_into().map_err(|_| ReadModelError::BadPageToken)?);
    let id = Uuid::from_slice(id).map_err(|_| ReadModelError::BadPageToken)?;
    Ok(Some((time, id)))
}

/// An incident page token: the last incident's time (8 bytes) and id, in hex.
fn incident_token(raised_at: i64, incident_id: &str) -> String {
    let mut bytes = raised_at.to_be_bytes().to_vec();
    bytes.extend_from_slice(incident_id.as_bytes());
    hex(&bytes)
}

fn parse_incident_token(token: &str) -> Result<(i64, String)> {
    let bytes = unhex(token)
        .filter(|b| b.len() > 8)
        .ok_or(ReadModelError::BadPageToken)?;
    let (time, id) = bytes.split_at(8);
    let time = i64::from_be_bytes(time.try_into().map_err(|_| ReadModelError::BadPageToken)?);
    let id = String::from_utf8(id.to_vec()).map_err(|_| ReadModelError::BadPageToken)?;
    Ok((time, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_garbage() {
        let id = Uuid::new_v4();
        let token = saga_token(-42, id);
        assert_eq!(cursor_of(Some(&token)).unwrap(), Some((-42, id)));
        assert_eq!(cursor_of(None).unwrap(), None);
        assert_eq!(cursor_of(Some("")).unwrap(), None);
        for bad in ["zz", "abc", &token[..46], &format!("{token}00"), "é"] {
            assert!(
                matches!(cursor_of(Some(bad)), Err(ReadModelError::BadPageToken)),
                "{bad}"
            );
        }
        let token = incident_token(7, "inc-1");
        assert_eq!(
            parse_incident_token(&token).unwrap(),
            (7, "inc-1".to_owned())
        );
        assert!(parse_incident_token("0011").is_err());
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_size_of(0), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size_of(7), 7);
        assert_eq!(page_size_of(100_000), MAX_PAGE_SIZE);
    }

    #[test]
    fn several_statuses_make_one_ordered_branch_each() {
        let filter = SagaFilter {
            statuses: vec![v1::SagaStatus::Failed, v1::SagaStatus::Parked],
            types: vec![v1::LifeEventType::Birth, v1::LifeEventType::Death],
            municipality_nis_code: Some("44021".into()),
            ..Default::default()
        };
        let sql = list_sql(Backend::Postgres, &filter, None, 11);
        assert_eq!(sql.text.matches("UNION ALL").count(), 1, "{}", sql.text);
        assert_eq!(sql.text.matches("LIMIT 11").count(), 3, "{}", sql.text);
        assert_eq!(sql.args.len(), 2 * (1 + 2 + 1));
    }
}
