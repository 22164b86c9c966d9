//! The internal database: the pulled reports exactly as pulled, the pull
//! cursors, the quarantine, the report ids counted, the de-duplicated
//! observations with their verdicts, one current row per line with its
//! history, and the cache of slow address sources.
//!
//! SQLite (embedded, the default) and PostgreSQL (production) hold the same
//! tables and follow the same rules: the rules of [`Store::apply`] are
//! worked out once in memory (`apply.rs`) and each backend only loads and
//! writes rows. PostgreSQL writes a batch's new rows by binary COPY and its
//! updates with one set-based statement (parallel arrays, `UNNEST`); SQLite,
//! in-process, writes row by row inside one transaction. The tables written
//! whole are described once (`tables.rs`) for both. Times are Unix
//! milliseconds everywhere.

/// Runs `$body` with `$pool` bound to one of the backend's pools (on
/// SQLite, the pool named `$sqlite`; PostgreSQL has one): the body is
/// written once and compiled for each backend, for the reads and writes
/// whose SQL both run as is (`queries`, `backoffice`).
macro_rules! on_pool {
    ($self:expr, $sqlite:ident, $pool:ident => $body:expr) => {
        match &$self.backend {
            Backend::Sqlite(p) => {
                let $pool = &p.$sqlite;
                $body
            }
            Backend::Postgres(p) => {
                let $pool = p;
                $body
            }
        }
    };
}

/// [`on_pool!`] on the reading pool (SQLite's read-only connections).
macro_rules! on_reader {
    ($self:expr, $pool:ident => $body:expr) => {
        on_pool!($self, readers, $pool => $body)
    };
}

/// [`on_pool!`] on the writing pool (SQLite's single writer).
macro_rules! on_writer {
    ($self:expr, $pool:ident => $body:expr) => {
        on_pool!($self, writer, $pool => $body)
    };
}

/// Runs one statement with its parameters on the writing pool and gives
/// the number of rows it changed; a failure is a database error saying
/// `$context` (a `String`, built only then).
macro_rules! execute {
    ($self:expr, $context:expr, $sql:expr $(, $param:expr)* $(,)?) => {
        on_writer!($self, pool => sqlx::query($sql)
            $(.bind($param))*
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err($self.db(|| String::from($context)))
    };
}

/// Binds built parameters to a query, on either backend.
macro_rules! bind_all {
    ($query:expr, $params:expr) => {{
        let mut query = $query;
        for param in $params {
            query = match param {
                Param::Text(text) => query.bind(text),
                Param::Int(int) => query.bind(int),
            };
        }
        query
    }};
}

mod apply;
pub(crate) mod backoffice;
mod keys;
mod period;
mod pgcopy;
mod postgres;
mod queries;
mod records;
mod rows;
mod sqlite;
mod tables;

use std::sync::Arc;

use sqlx::{AssertSqlSafe, PgPool};

use queries::Param;

use crate::{ContestChange, Error};

pub use period::{
    PeriodLine, PeriodLineGroup, PeriodProbeReports, PeriodQuarantineReason, PeriodQuery,
    PeriodReports, PeriodRows, PeriodTrendLines, PeriodWindow,
};
pub use records::{
    ApplySummary, CachedAnswer, DeclaredFills, LineFilter, ObservationFacts, ObservationRecord,
    Processed, PullBatch, PullCommit, PulledReport, QuarantineRecord, VerdictRecord, Wanted,
};
pub use rows::{
    LineHistoryRow, LineRow, ObservationRow, PullCursor, QuarantineRow, RawReport, StoreCounts,
    VerdictRow,
};

/// The internal database of `lineprobe-sync`. Cheap to clone: clones share
/// the connection pools.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// Names the database in error messages ("SQLite database /var/…").
    target: Arc<str>,
    /// Serializes this process's applies on PostgreSQL (see
    /// `postgres::apply`).
    apply_gate: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::Pools),
    Postgres(PgPool),
}

/// Where a database URL points.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

const URL_HELP: &str = "use `sqlite:PATH`, `sqlite://PATH` or a plain path ending in .db or \
                        .sqlite for the embedded database, or \
                        `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` for PostgreSQL";

impl Store {
    /// Opens (and creates, for SQLite) the database `url` names and brings
    /// its schema up to date.
    ///
    /// `sqlite:PATH`, `sqlite://PATH` or a plain path ending in `.db`,
    /// `.sqlite` or `.sqlite3` open SQLite; `postgres://` and
    /// `postgresql://` open PostgreSQL.
    pub async fn open(url: &str) -> Result<Store, Error> {
        match locate(url)? {
            Location::Sqlite(path) => {
                let target: Arc<str> = format!("SQLite database {}", path.display()).into();
                let pools = sqlite::open(&path, &target).await?;
                Ok(Store {
                    backend: Backend::Sqlite(pools),
                    target,
                    apply_gate: Arc::default(),
                })
            }
            Location::Postgres(url) => {
                let (pool, target) = postgres::open(&url).await?;
                Ok(Store {
                    backend: Backend::Postgres(pool),
                    target: target.into(),
                    apply_gate: Arc::default(),
                })
            }
        }
    }

    /// [`Store::open`] for a command that works on what is stored already
    /// (lists, reports, processing): an SQLite file that does not exist is
    /// an error ([`Error::NoDatabase`]) instead of a new, empty database.
    pub async fn open_existing(url: &str) -> Result<Store, Error> {
        if let Location::Sqlite(path) = locate(url)?
            && !path.exists()
        {
            return Err(Error::NoDatabase { path });
        }
        Self::open(url).await
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Names the database, for logs: "SQLite database PATH" or
    /// "PostgreSQL database HOST:PORT/NAME" (never a password).
    pub fn describe(&self) -> &str {
        &self.target
    }

    /// Closes the connections; waits for the ones in use to come back.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pools) => pools.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }

    /// The pull cursor of `collector`, if it ever pulled.
    pub async fn cursor(&self, collector: &str) -> Result<Option<PullCursor>, Error> {
        let context = || format!("cannot read the pull cursor of collector `{collector}`");
        on_reader!(self, pool => sqlx::query_as(queries::CURSOR)
            .bind(collector)
            .fetch_optional(pool).await)
        .map_err(self.db(context))
    }

    /// Every pull cursor, by collector name (byte order, on both backends).
    pub async fn cursors(&self) -> Result<Vec<PullCursor>, Error> {
        let context = || "cannot read the pull cursors".to_owned();
        let mut cursors: Vec<PullCursor> = on_reader!(self, pool =>
            sqlx::query_as(queries::CURSORS).fetch_all(pool).await)
        .map_err(self.db(context))?;
        // PostgreSQL sorts `collector` by the database's collation (an
        // en_US database puts `alpha` before `Zeta`, SQLite the other way
        // round); the cursors are few, so they are put in byte order here.
        cursors.sort_by(|a, b| a.collector.cmp(&b.collector));
        Ok(cursors)
    }

    /// Stores one pull in one transaction: inserts the reports (a report
    /// already stored, same node and sequence number, is counted as a
    /// duplicate and not stored again) and moves the collector's cursor
    /// forward to `next_after` (never back), recording the pull as
    /// successful. The same report pulled from another collector is stored
    /// again, as received there; [`Store::apply`] counts it once.
    ///
    /// When the collector's cursor belongs to another node, the collector
    /// was replaced and numbers its reports afresh: nothing is written and
    /// [`Error::CollectorReplaced`] says how to go on. When another
    /// collector's cursor belongs to the node, two collectors answer as one
    /// node (their reports would be taken for each other's duplicates and
    /// acknowledged unstored): nothing is written, [`Error::NodeShared`].
    pub async fn commit_pull(&self, batch: &PullBatch<'_>) -> Result<PullCommit, Error> {
        if batch.collector.is_empty() || batch.node_id.is_empty() {
            return Err(Error::StoreInput(format!(
                "cannot commit a pull without a collector name and a node id \
                 (collector `{}`, node `{}`)",
                batch.collector, batch.node_id
            )));
        }
        let next_after = seq_to_i64(batch.next_after, batch.collector, "the next cursor")?;
        for report in batch.reports {
            seq_to_i64(report.seq, batch.collector, "a report's sequence number")?;
        }
        let context = || {
            format!(
                "cannot store the pull of collector `{}` (node `{}`)",
                batch.collector, batch.node_id
            )
        };
        let outcome = match &self.backend {
            Backend::Sqlite(p) => sqlite::commit_pull(&p.writer, batch, next_after).await,
            Backend::Postgres(p) => postgres::commit_pull(p, batch, next_after).await,
        }
        .map_err(self.db(context))?;
        match outcome {
            PullOutcome::Committed(commit) => Ok(commit),
            PullOutcome::NodeChanged { old_node } => Err(Error::CollectorReplaced {
                collector: batch.collector.to_owned(),
                old_node,
                new_node: batch.node_id.to_owned(),
            }),
            PullOutcome::NodeTaken { other } => Err(Error::NodeShared {
                collector: batch.collector.to_owned(),
                node: batch.node_id.to_owned(),
                other,
            }),
        }
    }

    /// Records that `collector` was told it may drop its reports up to
    /// `acked_up_to` (the acknowledged number never moves back), and clears
    /// its recorded error: it answered.
    pub async fn record_ack(&self, collector: &str, acked_up_to: u64) -> Result<(), Error> {
        let acked = seq_to_i64(acked_up_to, collector, "the acknowledged number")?;
        let context = || format!("cannot record the acknowledgement of collector `{collector}`");
        // A confirmed ack means the collector answered: an error recorded
        // earlier (a lost ack, a collector that was down) is over.
        let updated = on_writer!(self, pool => sqlx::query(queries::RECORD_ACK)
            .bind(collector)
            .bind(acked)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(self.db(context))?;
        if updated > 0 {
            Ok(())
        } else {
            Err(Error::StoreInput(format!(
                "cannot record an acknowledgement for collector `{collector}`: it has no pull \
                 cursor; acknowledge only what a committed pull stored"
            )))
        }
    }

    /// The staging store `collector`'s pulls came from, once bound.
    pub async fn cursor_store(&self, collector: &str) -> Result<Option<String>, Error> {
        let context = || format!("cannot read the staging store of collector `{collector}`");
        let found: Option<Option<String>> = on_reader!(self, pool =>
            sqlx::query_scalar(queries::CURSOR_STORE)
                .bind(collector)
                .fetch_optional(pool)
                .await)
        .map_err(self.db(context))?;
        Ok(found.flatten())
    }

    /// Binds `collector`'s cursor to the staging store `store_id` (creating
    /// the cursor when it never pulled); a store already bound is kept.
    pub async fn bind_cursor_store(&self, collector: &str, store_id: &str) -> Result<(), Error> {
        let context = || format!("cannot record the staging store of collector `{collector}`");
        on_writer!(self, pool => sqlx::query(queries::BIND_CURSOR_STORE)
            .bind(collector)
            .bind(store_id)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(self.db(context))
    }

    /// Records that a round started at `round_started_ms` pulled
    /// `collector` to the end of its export (the time never moves back).
    pub async fn record_caught_up(
        &self,
        collector: &str,
        round_started_ms: i64,
    ) -> Result<(), Error> {
        let context = || format!("cannot record the pull round of collector `{collector}`");
        on_writer!(self, pool => sqlx::query(queries::RECORD_CAUGHT_UP)
            .bind(collector)
            .bind(round_started_ms)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(self.db(context))
    }

    /// Records a failed pull of `collector` (creating its cursor when it
    /// never pulled; its node id stays empty until a pull succeeds).
    pub async fn record_pull_error(
        &self,
        collector: &str,
        at_ms: i64,
        message: &str,
    ) -> Result<(), Error> {
        let context = || format!("cannot record the pull error of collector `{collector}`");
        on_writer!(self, pool => sqlx::query(queries::RECORD_PULL_ERROR)
            .bind(collector)
            .bind(at_ms)
            .bind(message)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(self.db(context))
    }

    /// Raw reports not applied yet with an id above `after_id`, in id order.
    pub async fn pending_raw(&self, after_id: i64, limit: u32) -> Result<Vec<RawReport>, Error> {
        let context = || "cannot list the pending raw reports".to_owned();
        on_reader!(self, pool => sqlx::query_as(queries::PENDING_RAW)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(pool).await)
        .map_err(self.db(context))
    }

    /// Raw reports applied as observations (neither pending, quarantined nor
    /// duplicates) with an id above `after_id` and, when `since_ms` is
    /// given, received (or else pulled) at or after it; in id order. For
    /// `reprocess`.
    pub async fn processed_raw(
        &self,
        since_ms: Option<i64>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<RawReport>, Error> {
        self.decided_raw("processed", since_ms, after_id, limit)
            .await
    }

    /// Raw reports in quarantine, chosen and ordered as by
    /// [`Store::processed_raw`]. For `reprocess --quarantined`.
    pub async fn quarantined_raw(
        &self,
        since_ms: Option<i64>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<RawReport>, Error> {
        self.decided_raw("quarantined", since_ms, after_id, limit)
            .await
    }

    /// The processed raw reports of `change`'s installation that arrived in
    /// its window, with an id above `after_id`, in id order (see
    /// [`crate::ContestChange`]).
    pub async fn contested_raw(
        &self,
        change: &ContestChange,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<RawReport>, Error> {
        let context = || {
            format!(
                "cannot list the reports of installation {} to judge again",
                change.install_id
            )
        };
        on_reader!(self, pool => sqlx::query_as(queries::CONTESTED_RAW)
            .bind(after_id)
            .bind(&change.install_id)
            .bind(change.from_ms)
            .bind(change.to_ms)
            .bind(i64::from(limit))
            .fetch_all(pool).await)
        .map_err(self.db(context))
    }

    /// The raw reports whose outcome is `state` (see `queries::DECIDED_RAW`).
    async fn decided_raw(
        &self,
        state: &str,
        since_ms: Option<i64>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<RawReport>, Error> {
        let context = || format!("cannot list the {state} raw reports");
        on_reader!(self, pool => sqlx::query_as(queries::DECIDED_RAW)
            .bind(after_id)
            .bind(since_ms)
            .bind(i64::from(limit))
            .bind(state)
            .fetch_all(pool).await)
        .map_err(self.db(context))
    }

    /// Applies a batch of pipeline results in one transaction.
    ///
    /// - A record whose raw report is no longer pending is skipped unless it
    ///   is marked `reprocess`, so applying a batch twice changes nothing.
    ///   A raw id the database does not hold is an error.
    /// - A quarantine record stores (or replaces) the report's quarantine
    ///   row.
    /// - A report id counts once. An observation record of a report id
    ///   already counted from another raw report (a copy pulled from another
    ///   collector: the probe retried there after a timeout) marks its raw
    ///   report a `duplicate` of the first copy's observation and changes
    ///   nothing else; both raw reports stay as received.
    /// - An observation record folds into the observation with its
    ///   `obs_key`: count, first and last seen, first and last report. A
    ///   reprocessed report leaves counts and seen times alone.
    /// - A verdict whose key differs from the observation's latest verdict
    ///   is stored; it becomes the latest when its report is the
    ///   observation's newest (by observed time; ties: the one applied
    ///   later). An older report's verdict is kept as history only. An
    ///   identical verdict is not stored again.
    /// - The line's current observation is the one seen last (ties: the one
    ///   applied later); the line follows its latest verdict, and a replaced
    ///   verdict goes to the line's history. An older observation, or an
    ///   older report of the current one, never changes the line's verdict.
    pub async fn apply(&self, batch: &[Processed]) -> Result<ApplySummary, Error> {
        if batch.is_empty() {
            return Ok(ApplySummary::default());
        }
        let context = || format!("cannot apply a batch of {} results", batch.len());
        match &self.backend {
            Backend::Sqlite(p) => sqlite::apply(&p.writer, batch).await,
            Backend::Postgres(p) => postgres::apply(p, &self.apply_gate, batch).await,
        }
        .map_err(|e| self.apply_error(e, context))
    }

    /// The current lines that pass `filter`, last seen first.
    pub async fn lines(&self, filter: &LineFilter) -> Result<Vec<LineRow>, Error> {
        let context = || "cannot list the lines".to_owned();
        let (sql, params) = queries::lines(filter);
        on_reader!(self, pool => bind_all!(sqlx::query_as(AssertSqlSafe(sql)), params)
            .fetch_all(pool)
            .await)
        .map_err(self.db(context))
    }

    /// One line, if it was ever seen.
    pub async fn line(&self, line_key: &str) -> Result<Option<LineRow>, Error> {
        let context = || format!("cannot read line `{line_key}`");
        let sql = queries::line();
        on_reader!(self, pool => sqlx::query_as(AssertSqlSafe(sql))
            .bind(line_key)
            .fetch_optional(pool).await)
        .map_err(self.db(context))
    }

    /// The observation with the dedupe key `obs_key`, if any.
    pub async fn observation(&self, obs_key: &str) -> Result<Option<ObservationRow>, Error> {
        let context = || format!("cannot read observation `{obs_key}`");
        let sql = queries::observation();
        on_reader!(self, pool => sqlx::query_as(AssertSqlSafe(sql))
            .bind(obs_key)
            .fetch_optional(pool).await)
        .map_err(self.db(context))
    }

    /// Every observation of a line, last seen first.
    pub async fn line_observations(&self, line_key: &str) -> Result<Vec<ObservationRow>, Error> {
        let context = || format!("cannot list the observations of line `{line_key}`");
        let sql = queries::line_observations();
        on_reader!(self, pool => sqlx::query_as(AssertSqlSafe(sql))
            .bind(line_key)
            .fetch_all(pool).await)
        .map_err(self.db(context))
    }

    /// Every verdict of a line, newest first.
    pub async fn line_verdicts(&self, line_key: &str) -> Result<Vec<VerdictRow>, Error> {
        let context = || format!("cannot list the verdicts of line `{line_key}`");
        on_reader!(self, pool => sqlx::query_as(queries::LINE_VERDICTS)
            .bind(line_key)
            .fetch_all(pool).await)
        .map_err(self.db(context))
    }

    /// The replaced verdicts of a line, newest first.
    pub async fn line_history(&self, line_key: &str) -> Result<Vec<LineHistoryRow>, Error> {
        let context = || format!("cannot list the history of line `{line_key}`");
        on_reader!(self, pool => sqlx::query_as(queries::LINE_HISTORY)
            .bind(line_key)
            .fetch_all(pool).await)
        .map_err(self.db(context))
    }

    /// Quarantined reports, newest first.
    pub async fn quarantined(&self, limit: u32, offset: u32) -> Result<Vec<QuarantineRow>, Error> {
        let context = || "cannot list the quarantined reports".to_owned();
        on_reader!(self, pool => sqlx::query_as(queries::QUARANTINED)
            .bind(i64::from(limit))
            .bind(i64::from(offset))
            .fetch_all(pool).await)
        .map_err(self.db(context))
    }

    /// How many rows each table holds.
    pub async fn counts(&self) -> Result<StoreCounts, Error> {
        let context = || "cannot count the rows".to_owned();
        on_reader!(self, pool => sqlx::query_as(queries::COUNTS).fetch_one(pool).await)
            .map_err(self.db(context))
    }

    /// The cached answers of `source` that have not expired at `now_ms`.
    pub async fn cache_load(&self, source: &str, now_ms: i64) -> Result<Vec<CachedAnswer>, Error> {
        let context = || format!("cannot load the cached answers of source `{source}`");
        on_reader!(self, pool => sqlx::query_as(queries::CACHE_LOAD)
            .bind(source)
            .bind(now_ms)
            .fetch_all(pool).await)
        .map_err(self.db(context))
    }

    /// Stores answers of address sources, replacing earlier ones for the
    /// same source and address. When `entries` names one source and
    /// address twice, the later entry wins.
    pub async fn cache_put(&self, entries: &[CachedAnswer]) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let context = || format!("cannot store {} cached answers", entries.len());
        match &self.backend {
            Backend::Sqlite(p) => sqlite::cache_put(&p.writer, entries).await,
            Backend::Postgres(p) => postgres::cache_put(p, entries).await,
        }
        .map_err(self.db(context))
    }

    /// Deletes the answers of address sources that expired by `now_ms`
    /// (those of every source and fingerprint: a source whose URL or
    /// mapping changed never reads its old ones again); returns how many.
    pub async fn cache_purge_expired(&self, now_ms: i64) -> Result<u64, Error> {
        let context = || "cannot delete expired cached answers".to_owned();
        on_writer!(self, pool => sqlx::query("DELETE FROM resolver_cache WHERE expires_at <= $1")
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(self.db(context))
    }

    /// Wraps a database error with what was being done and where.
    fn db<F>(&self, context: F) -> impl FnOnce(sqlx::Error) -> Error + use<F>
    where
        F: FnOnce() -> String,
    {
        let target = Arc::clone(&self.target);
        move |source| Error::Database {
            context: format!("{} in the {target}", context()),
            source,
        }
    }

    fn apply_error<F>(&self, error: ApplyError, context: F) -> Error
    where
        F: FnOnce() -> String,
    {
        match error {
            ApplyError::Sql(source) => self.db(context)(source),
            ApplyError::Store(error) => error,
        }
    }
}

/// How a pull commit ended, short of a database failure.
#[derive(Debug)]
enum PullOutcome {
    Committed(PullCommit),
    /// The collector's cursor belongs to another node; nothing was written.
    NodeChanged {
        old_node: String,
    },
    /// Another collector's cursor belongs to the node; nothing was written.
    NodeTaken {
        other: String,
    },
}

/// An apply failure: the database's, or the batch's own.
#[derive(Debug)]
enum ApplyError {
    Sql(sqlx::Error),
    Store(Error),
}

impl From<sqlx::Error> for ApplyError {
    fn from(error: sqlx::Error) -> Self {
        Self::Sql(error)
    }
}

impl From<Error> for ApplyError {
    fn from(error: Error) -> Self {
        Self::Store(error)
    }
}

/// A sequence number as the database holds it (BIGINT).
fn seq_to_i64(seq: u64, collector: &str, what: &str) -> Result<i64, Error> {
    i64::try_from(seq).map_err(|_| {
        Error::StoreInput(format!(
            "collector `{collector}` sent {what} {seq}, above the largest the database holds \
             ({}); the collector's numbering is broken: check the collector before pulling \
             again",
            i64::MAX
        ))
    })
}

/// Works out which backend a database URL names.
fn locate(url: &str) -> Result<Location, Error> {
    let bad = |reason: &str| Error::BadDatabaseUrl {
        url: redact(url),
        reason: format!("{reason}; {URL_HELP}"),
    };
    let trimmed = url.trim();
    if trimmed.is_empty() {
        return Err(bad("is empty"));
    }
    let lower = trimmed.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        return Ok(Location::Postgres(trimmed.to_owned()));
    }
    if let Some(rest) = lower.strip_prefix("sqlite:") {
        let path = &trimmed[trimmed.len() - rest.len()..];
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(bad("names no file"));
        }
        if path == ":memory:" || path.starts_with(":memory:?") || path.contains("mode=memory") {
            return Err(bad(
                "names an in-memory database, which would lose every report at exit",
            ));
        }
        return Ok(Location::Sqlite(path.into()));
    }
    if let Some((scheme, _)) = trimmed.split_once("://") {
        return Err(bad(&format!("has the unsupported scheme `{scheme}`")));
    }
    let is_sqlite_file = [".db", ".sqlite", ".sqlite3"]
        .iter()
        .any(|ext| lower.ends_with(ext));
    if is_sqlite_file {
        return Ok(Location::Sqlite(trimmed.into()));
    }
    Err(bad(
        "is neither a database URL nor a path ending in .db or .sqlite",
    ))
}

/// A URL fit for messages: the password, if any, replaced by `***`.
fn redact(url: &str) -> String {
    // The user info first: a password that is not percent-encoded may hold
    // a `?` (or `/`, `#`), which would otherwise be taken for the query's
    // start and leave the password whole.
    let url = redact_userinfo(url);
    let (url, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url.as_str(), None),
    };
    let mut out = url.to_owned();
    if let Some(query) = query {
        // libpq and sqlx also take the password as a query parameter.
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                    out.push_str(key);
                    out.push_str("=***");
                }
                _ => out.push_str(pair),
            }
        }
    }
    out
}

/// `url` with the password of its user info masked. The user info ends at
/// the last `@` of the host part; when the host part (up to the first `/`,
/// `?` or `#`) has none but the URL has an `@` further on, a password
/// holding one of those characters unencoded cut the host part short, and
/// everything up to the URL's last `@` is taken for the user info (a URL
/// that merely has an `@` in its query is then masked more than needed,
/// never less).
fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@').or_else(|| rest.rfind('@')) else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let Some((user, _password)) = userinfo.split_once(':') else {
        return url.to_owned();
    };
    format!("{scheme}://{user}:***{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(
            locate("sqlite:/var/lib/lp/sync.db").unwrap(),
            Location::Sqlite("/var/lib/lp/sync.db".into())
        );
        assert_eq!(
            locate("sqlite:///var/lib/lp/sync").unwrap(),
            Location::Sqlite("/var/lib/lp/sync".into())
        );
        assert_eq!(
            locate("sqlite://data/sync.db").unwrap(),
            Location::Sqlite("data/sync.db".into())
        );
        assert_eq!(
            locate("data/sync.sqlite").unwrap(),
            Location::Sqlite("data/sync.sqlite".into())
        );
        assert_eq!(
            locate("postgresql://u@h/db").unwrap(),
            Location::Postgres("postgresql://u@h/db".into())
        );
        for bad in [
            "",
            "mysql://h/db",
            "data/sync.txt",
            "sqlite:",
            "sqlite::memory:",
        ] {
            let error = locate(bad).unwrap_err();
            assert!(
                matches!(error, Error::BadDatabaseUrl { .. }),
                "{bad}: {error}"
            );
            assert_eq!(error.exit_code(), 2);
        }
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(redact("mysql://u:secret@h:1/db"), "mysql://u:***@h:1/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("postgres://u@h/db?password=s3cret&sslmode=bogus"),
            "postgres://u@h/db?password=***&sslmode=bogus"
        );
        assert_eq!(
            redact("postgres://u:pw@h/db?sslpassword=k&application_name=x"),
            "postgres://u:***@h/db?sslpassword=***&application_name=x"
        );
        // A password with a character that ends the host part when not
        // percent-encoded (`/`, `?`, `#`): such a URL is refused as
        // unreadable, and the message quotes it.
        for url in [
            "postgres://u:se/cret@h/db",
            "postgres://u:se?cret@h/db",
            "postgres://u:se#cret@h:5432/db?sslmode=require",
        ] {
            let shown = redact(url);
            assert!(!shown.contains("cret"), "{url} shown as {shown}");
            assert!(shown.starts_with("postgres://u:***@h"), "{shown}");
        }
        assert_eq!(
            redact("postgres://u:se?cret@h/db?password=x"),
            "postgres://u:***@h/db?password=***"
        );
        let message = locate("mysql://u:secret@h/db").unwrap_err().to_string();
        assert!(!message.contains("secret"), "{message}");
        assert!(message.contains("sqlite:PATH"), "{message}");
    }
}
