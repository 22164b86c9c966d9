//! The embedded backend. One writer connection (SQLite allows one writer at
//! a time; a pool of one queues writers in the process instead of letting
//! them fail on a lock), a few read-only connections beside it (WAL lets
//! them read while the writer writes). Writes are row by row inside one
//! transaction: in-process, a statement costs microseconds.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, SqlitePool, Transaction};

use super::apply::{self, Loaded, NewVerdict, ObservationState, Plan, RawOrigin, RawStateRow};
use super::queries;
use super::records::{ApplySummary, CachedAnswer, Processed, PullBatch, PullCommit};
use super::rows::LineRow;
use super::tables::{Cell, OutcomeRow, TableRow, insert_statement, upsert_statement};
use super::{ApplyError, PullOutcome};
use crate::Error;

/// How long a statement waits for a lock another process holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Read-only connections beside the writer.
const READERS: u32 = 4;

type Tx = Transaction<'static, sqlx::Sqlite>;

/// The writer and the readers of one database file.
#[derive(Debug, Clone)]
pub(super) struct Pools {
    pub(super) writer: SqlitePool,
    pub(super) readers: SqlitePool,
}

impl Pools {
    pub(super) async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }
}

/// Opens (creating it and its directory when needed) the database file and
/// brings its schema up to date.
pub(super) async fn open(path: &Path, target: &str) -> Result<Pools, Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| Error::DatabaseDir {
                path: dir.to_owned(),
                source,
            })?;
    }
    let base = SqliteConnectOptions::new()
        .filename(path)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    let writer_options = base
        .clone()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let open_error = |source| Error::Database {
        context: format!(
            "cannot open the {target}; check that the path names an SQLite file (or a new one) \
             in a writable directory"
        ),
        source,
    };
    let writer = connect_writer(writer_options).await.map_err(open_error)?;
    migrate(&writer, target).await?;
    // The file exists and is in WAL mode now; readers only read.
    let readers = SqlitePoolOptions::new()
        .max_connections(READERS)
        .connect_with(base.pragma("query_only", "ON"))
        .await
        .map_err(open_error)?;
    Ok(Pools { writer, readers })
}

/// Connects the writer. Its first connection switches a new file to WAL,
/// which takes an exclusive lock SQLite does not wait for (the busy timeout
/// does not apply): a second process opening the same new file at that
/// moment gets "database is locked" at once. It tries again until the busy
/// timeout has passed; by then the winner has switched the file, and asking
/// for WAL on a WAL file takes no lock at all.
async fn connect_writer(options: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(10);
    loop {
        match SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
        {
            Err(err) if is_busy(&err) && tokio::time::Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            result => return result,
        }
    }
}

/// `SQLITE_BUSY` or `SQLITE_LOCKED`, whatever the extended code says about why.
fn is_busy(err: &sqlx::Error) -> bool {
    const SQLITE_BUSY: i64 = 5;
    const SQLITE_LOCKED: i64 = 6;
    err.as_database_error()
        .and_then(sqlx::error::DatabaseError::code)
        .and_then(|code| code.parse::<i64>().ok())
        .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
}

/// Brings the schema up to date. Two processes opening a new file at once
/// (the daemon starting and `status` asked right away) both find it
/// unmigrated, and sqlx takes no migration lock on SQLite: the loser's
/// migration fails on the tables the winner just created, in a transaction
/// that leaves nothing behind. It tries again, a few times: by then the
/// winner's migration is recorded and there is nothing left to do.
async fn migrate(writer: &SqlitePool, target: &str) -> Result<(), Error> {
    const ATTEMPTS: u64 = 5;
    let mut attempt = 1;
    loop {
        match sqlx::migrate!("migrations/sqlite").run(writer).await {
            Ok(()) => return Ok(()),
            Err(
                sqlx::migrate::MigrateError::Execute(_)
                | sqlx::migrate::MigrateError::ExecuteMigration(..),
            ) if attempt < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                attempt += 1;
            }
            Err(source) => {
                return Err(Error::Migrate {
                    target: target.to_owned(),
                    source,
                });
            }
        }
    }
}

async fn begin(writer: &SqlitePool) -> Result<Tx, sqlx::Error> {
    // IMMEDIATE takes the write lock up front, so another process writing
    // the same file makes us wait (busy timeout) instead of failing halfway.
    writer.begin_with("BEGIN IMMEDIATE").await
}

pub(super) async fn commit_pull(
    writer: &SqlitePool,
    batch: &PullBatch<'_>,
    next_after: i64,
) -> Result<PullOutcome, sqlx::Error> {
    let mut tx = begin(writer).await?;
    let other: Option<String> = sqlx::query_scalar(queries::NODE_TAKEN)
        .bind(batch.node_id)
        .bind(batch.collector)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(other) = other {
        tx.rollback().await?;
        return Ok(PullOutcome::NodeTaken { other });
    }
    let mut inserted: u64 = 0;
    let mut new_ids = Vec::with_capacity(batch.reports.len());
    for report in batch.reports {
        let done = sqlx::query(
            "INSERT INTO raw_reports \
             (collector, node_id, seq, report_id, received_at, body, pulled_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (node_id, seq) DO NOTHING",
        )
        .bind(batch.collector)
        .bind(batch.node_id)
        // Range checked by Store::commit_pull.
        .bind(i64::try_from(report.seq).unwrap_or(i64::MAX))
        .bind(report.report_id.as_deref())
        .bind(report.received_at_ms)
        .bind(report.body.as_slice())
        .bind(batch.pulled_at_ms)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() > 0 {
            new_ids.push(done.last_insert_rowid());
        }
        inserted += done.rows_affected();
    }
    // The new reports wait for the pipeline (one statement for the page).
    if !new_ids.is_empty() {
        sqlx::query("INSERT INTO raw_pending (raw_id) SELECT value FROM json_each($1)")
            .bind(json_list(&new_ids))
            .execute(&mut *tx)
            .await?;
    }
    let after: Option<i64> = sqlx::query_scalar(
        "INSERT INTO pull_cursors \
         (collector, node_id, after_seq, last_pull_at, last_ok_at, pulled_total) \
         VALUES ($1, $2, $3, $4, $4, $5) \
         ON CONFLICT (collector) DO UPDATE SET \
           node_id = excluded.node_id, \
           after_seq = MAX(pull_cursors.after_seq, excluded.after_seq), \
           last_pull_at = excluded.last_pull_at, \
           last_ok_at = excluded.last_ok_at, \
           last_error = NULL, \
           last_error_at = NULL, \
           pulled_total = pull_cursors.pulled_total + excluded.pulled_total \
         WHERE pull_cursors.node_id = '' OR pull_cursors.node_id = excluded.node_id \
         RETURNING after_seq",
    )
    .bind(batch.collector)
    .bind(batch.node_id)
    .bind(next_after)
    .bind(batch.pulled_at_ms)
    .bind(i64::try_from(inserted).unwrap_or(i64::MAX))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(after) = after else {
        let old_node: String = sqlx::query_scalar(queries::CURSOR_NODE)
            .bind(batch.collector)
            .fetch_one(&mut *tx)
            .await?;
        tx.rollback().await?;
        return Ok(PullOutcome::NodeChanged { old_node });
    };
    tx.commit().await?;
    let total = u64::try_from(batch.reports.len()).unwrap_or(u64::MAX);
    Ok(PullOutcome::Committed(PullCommit {
        inserted,
        duplicates: total - inserted,
        after_seq: u64::try_from(after).unwrap_or(0),
    }))
}

/// A JSON array of the items: SQLite's `json_each` turns it into a set, so
/// a whole batch of keys goes in one parameter.
fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    // Serializing integers and strings cannot fail.
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

pub(super) async fn apply(
    writer: &SqlitePool,
    batch: &[Processed],
) -> Result<ApplySummary, ApplyError> {
    let mut tx = begin(writer).await?;
    let ids: Vec<i64> = batch.iter().map(Processed::raw_id).collect();
    let found: Vec<RawStateRow> = sqlx::query_as(AssertSqlSafe(queries::raw_states(
        "SELECT value FROM json_each($1)",
    )))
    .bind(json_list(&ids))
    .fetch_all(&mut *tx)
    .await?;
    let (raws, origins) = apply::raw_rows(found)?;
    apply::check_raws_exist(batch, &raws)?;
    let eligible = apply::eligible(batch, &raws);
    let touched = apply::touched_keys(batch, &eligible);
    let loaded = Loaded {
        observations: load(&mut tx, queries::observation_states, &touched.observations).await?,
        lines: load(&mut tx, queries::line_states, &touched.lines).await?,
        counted: load(&mut tx, queries::counted_reports, &touched.reports).await?,
    };
    let mut plan = apply::plan(batch, &eligible, &raws, loaded);
    // The writer is the only one: ids above the largest are free.
    let obs_ids = allocate(
        &mut tx,
        "SELECT COALESCE(MAX(id), 0) FROM observations",
        plan.new_observations.len(),
    )
    .await?;
    let verdict_ids = allocate(
        &mut tx,
        "SELECT COALESCE(MAX(id), 0) FROM verdicts",
        plan.verdicts.len(),
    )
    .await?;
    plan.assign_ids(&obs_ids, &verdict_ids);
    write_plan(&mut tx, &plan, &origins).await?;
    tx.commit().await?;
    Ok(plan.summary)
}

/// The rows `sql` (given the list of keys to select) selects for `keys`;
/// none without keys.
async fn load<R>(
    tx: &mut Tx,
    sql: fn(&str) -> String,
    keys: &[String],
) -> Result<Vec<R>, sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(AssertSqlSafe(sql("SELECT value FROM json_each($1)")))
        .bind(json_list(keys))
        .fetch_all(&mut **tx)
        .await
}

/// `count` unused ids of a table; `max_id` selects its largest id.
async fn allocate(
    tx: &mut Tx,
    max_id: &'static str,
    count: usize,
) -> Result<Vec<i64>, sqlx::Error> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let max: i64 = sqlx::query_scalar(max_id).fetch_one(&mut **tx).await?;
    Ok((1..=i64::try_from(count).unwrap_or(i64::MAX))
        .map(|i| max + i)
        .collect())
}

async fn write_plan(
    tx: &mut Tx,
    plan: &Plan<'_>,
    origins: &HashMap<i64, RawOrigin>,
) -> Result<(), sqlx::Error> {
    insert_rows(
        tx,
        &plan.new_observations,
        &insert_statement::<ObservationState>(),
    )
    .await?;
    update_observations(tx, plan).await?;
    insert_rows(tx, &plan.verdicts, &insert_statement::<NewVerdict<'_>>()).await?;
    let upsert_line = upsert_statement::<LineRow>("line_key");
    insert_rows(tx, &plan.new_lines, &upsert_line).await?;
    insert_rows(tx, &plan.changed_lines, &upsert_line).await?;
    insert_rows(
        tx,
        &plan.history,
        &insert_statement::<apply::HistoryEntry>(),
    )
    .await?;
    write_quarantine(tx, plan).await?;
    // The report ids counted, in one statement for the batch, as pairs
    // `[report id, raw id]`.
    if !plan.counted.is_empty() {
        let pairs: Vec<(&str, i64)> = plan
            .counted
            .iter()
            .map(|c| (c.report_id, c.raw_id))
            .collect();
        sqlx::query(
            "INSERT INTO counted_reports (report_id, raw_id) \
             SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each($1)",
        )
        .bind(json_list(&pairs))
        .execute(&mut **tx)
        .await?;
    }
    // A report decided before keeps where it came from; only its outcome
    // changes.
    let outcome = format!(
        "{} ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
         observation_id = excluded.observation_id",
        insert_statement::<OutcomeRow<'_>>()
    );
    insert_rows(tx, &OutcomeRow::of(&plan.raws, origins), &outcome).await?;
    // The decided reports are pending no more.
    if !plan.raws.is_empty() {
        let ids: Vec<i64> = plan.raws.iter().map(|r| r.id).collect();
        sqlx::query("DELETE FROM raw_pending WHERE raw_id IN (SELECT value FROM json_each($1))")
            .bind(json_list(&ids))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Observations seen again: their counts, times and latest verdict.
async fn update_observations(tx: &mut Tx, plan: &Plan<'_>) -> Result<(), sqlx::Error> {
    for o in &plan.changed_observations {
        sqlx::query(
            "UPDATE observations SET count = $2, first_seen = $3, last_seen = $4, \
             first_report_id = $5, last_report_id = $6, latest_verdict_id = $7, \
             latest_verdict_key = $8 WHERE id = $1",
        )
        .bind(o.id)
        .bind(o.count)
        .bind(o.first_seen)
        .bind(o.last_seen)
        .bind(&o.first_report_id)
        .bind(&o.last_report_id)
        .bind(o.latest_verdict_id)
        .bind(o.latest_verdict_key.as_deref())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn write_quarantine(tx: &mut Tx, plan: &Plan<'_>) -> Result<(), sqlx::Error> {
    for q in &plan.quarantine {
        sqlx::query(
            "INSERT INTO quarantine (raw_id, report_id, install_id, reasons, summary, \
             quarantined_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (raw_id) DO UPDATE SET report_id = excluded.report_id, \
             install_id = excluded.install_id, reasons = excluded.reasons, \
             summary = excluded.summary, quarantined_at = excluded.quarantined_at",
        )
        .bind(q.raw_id)
        .bind(q.report_id.as_deref())
        .bind(q.install_id.as_deref())
        .bind(&q.reasons_json)
        .bind(&q.summary)
        .bind(q.at_ms)
        .execute(&mut **tx)
        .await?;
    }
    for raw_id in &plan.unquarantine {
        sqlx::query("DELETE FROM quarantine WHERE raw_id = $1")
            .bind(raw_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Inserts whole rows of a table, one `sql` statement (from `tables`) each.
async fn insert_rows<R: TableRow>(tx: &mut Tx, rows: &[R], sql: &str) -> Result<(), sqlx::Error> {
    for row in rows {
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for cell in row.cells() {
            query = match cell {
                Cell::Int8(v) => query.bind(v),
                Cell::OptInt8(v) => query.bind(v),
                Cell::OptInt2(v) => query.bind(v),
                Cell::Text(v) => query.bind(v),
                Cell::OptText(v) => query.bind(v),
                Cell::Bool(v) => query.bind(v),
            };
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

pub(super) async fn cache_put(
    writer: &SqlitePool,
    entries: &[CachedAnswer],
) -> Result<(), sqlx::Error> {
    let mut tx = begin(writer).await?;
    for e in entries {
        sqlx::query(
            "INSERT INTO resolver_cache (source, ip, facts, fetched_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source, ip) DO UPDATE SET \
             facts = excluded.facts, fetched_at = excluded.fetched_at, \
             expires_at = excluded.expires_at",
        )
        .bind(&e.source)
        .bind(&e.ip)
        .bind(e.facts_json.as_deref())
        .bind(e.fetched_at_ms)
        .bind(e.expires_at_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections of one process race for a new file's switch to WAL the
    /// same way processes do (each has its own file lock), so this finds the
    /// lock that SQLite does not wait for without spawning programs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opening_a_new_file_from_many_connections_at_once_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let path = dir.path().join(format!("race-{round}.sqlite3"));
            let opens: Vec<_> = (0..6)
                .map(|_| {
                    let path = path.clone();
                    tokio::spawn(async move { open(&path, "race database").await })
                })
                .collect();
            for open in opens {
                let pools = open.await.unwrap().unwrap_or_else(|err| {
                    panic!("round {round}: {err}");
                });
                let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                    .fetch_one(&pools.readers)
                    .await
                    .unwrap();
                assert_eq!(mode, "wal");
                pools.close().await;
            }
        }
    }
}
