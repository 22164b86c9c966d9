//! The signing keys seen for each installation (`install_keys`): when each
//! key of an installation first and last signed a report, on any receiver
//! node. See [`crate::key_contest`] for what the pipeline makes of them.
//! With them, the queue of reports to judge again where sightings pulled
//! later changed a contest (`contest_rejudge`, see
//! [`crate::contest_changes`]).

use sqlx::{PgPool, SqlitePool};

use super::{Backend, Store};
use crate::{ContestChange, Error, KeySpan};

impl Store {
    /// Every key seen for these installations.
    pub async fn install_keys_seen(&self, installs: &[&str]) -> Result<Vec<KeySpan>, Error> {
        if installs.is_empty() {
            return Ok(Vec::new());
        }
        let context = || {
            format!(
                "cannot read the signing keys of {} installations",
                installs.len()
            )
        };
        match &self.backend {
            Backend::Sqlite(p) => sqlite_seen(&p.readers, installs).await,
            Backend::Postgres(p) => postgres_seen(p, installs).await,
        }
        .map_err(self.db(context))
    }

    /// Widens the stored span of each installation's key to take in
    /// `spans` (a key not seen before is added): the earliest first
    /// sighting with its node, the latest last sighting. Idempotent, and
    /// in any order the same. In the same transaction, queues `rejudge`:
    /// where the new sightings change key contests of reports judged
    /// before (see [`Store::queued_rejudges`]).
    pub async fn record_install_keys(
        &self,
        spans: &[KeySpan],
        rejudge: &[ContestChange],
    ) -> Result<(), Error> {
        if spans.is_empty() && rejudge.is_empty() {
            return Ok(());
        }
        let context = || {
            format!(
                "cannot record {} signing keys of installations",
                spans.len()
            )
        };
        match &self.backend {
            Backend::Sqlite(p) => sqlite_record(&p.writer, spans, rejudge).await,
            Backend::Postgres(p) => postgres_record(p, spans, rejudge).await,
        }
        .map_err(self.db(context))
    }

    /// The queued changes of key contests whose reports are still to be
    /// judged again, with their ids, oldest first.
    pub async fn queued_rejudges(&self) -> Result<Vec<(i64, ContestChange)>, Error> {
        let context = || "cannot read the reports queued to be judged again".to_owned();
        let rows: Vec<(i64, String, i64, i64)> = on_reader!(self, pool => sqlx::query_as(
            "SELECT id, install_id, from_ms, to_ms FROM contest_rejudge ORDER BY id",
        )
        .fetch_all(pool)
        .await)
        .map_err(self.db(context))?;
        Ok(rows
            .into_iter()
            .map(|(id, install_id, from_ms, to_ms)| {
                (
                    id,
                    ContestChange {
                        install_id,
                        from_ms,
                        to_ms,
                    },
                )
            })
            .collect())
    }

    /// Takes the queued change `id` off the queue: its reports were judged
    /// again.
    pub async fn rejudged(&self, id: i64) -> Result<(), Error> {
        execute!(
            self,
            format!("cannot take change {id} off the queue of reports to judge again"),
            "DELETE FROM contest_rejudge WHERE id = $1",
            id,
        )?;
        Ok(())
    }
}

const COLUMNS: &str = "install_id, key_id, first_seen_ms, last_seen_ms, first_node";

/// What an upsert of one span does to a stored one: the same statement
/// on both backends (`excluded` and the table name are read by both).
const WIDEN: &str = "ON CONFLICT (install_id, key_id) DO UPDATE SET \
     first_node = CASE WHEN excluded.first_seen_ms < install_keys.first_seen_ms \
         THEN excluded.first_node ELSE install_keys.first_node END, \
     first_seen_ms = CASE WHEN excluded.first_seen_ms < install_keys.first_seen_ms \
         THEN excluded.first_seen_ms ELSE install_keys.first_seen_ms END, \
     last_seen_ms = CASE WHEN excluded.last_seen_ms > install_keys.last_seen_ms \
         THEN excluded.last_seen_ms ELSE install_keys.last_seen_ms END";

async fn postgres_seen(pool: &PgPool, installs: &[&str]) -> Result<Vec<KeySpan>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM install_keys WHERE install_id = ANY($1) \
         ORDER BY install_id, key_id"
    )))
    .bind(installs)
    .fetch_all(pool)
    .await
}

async fn sqlite_seen(pool: &SqlitePool, installs: &[&str]) -> Result<Vec<KeySpan>, sqlx::Error> {
    // One parameter however many installations: SQLite has no arrays, and
    // a statement's parameters are limited.
    let list = serde_json::to_string(installs).unwrap_or_else(|_| "[]".to_owned());
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM install_keys \
         WHERE install_id IN (SELECT value FROM json_each($1)) ORDER BY install_id, key_id"
    )))
    .bind(list)
    .fetch_all(pool)
    .await
}

async fn postgres_record(
    pool: &PgPool,
    spans: &[KeySpan],
    rejudge: &[ContestChange],
) -> Result<(), sqlx::Error> {
    let spans = one_per_key(spans);
    let column = |f: fn(&KeySpan) -> &str| spans.iter().map(f).collect::<Vec<&str>>();
    let times = |f: fn(&KeySpan) -> i64| spans.iter().map(f).collect::<Vec<i64>>();
    let mut tx = pool.begin().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO install_keys ({COLUMNS}) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[]) \
         {WIDEN}"
    )))
    .bind(column(|s| &s.install_id))
    .bind(column(|s| &s.key_id))
    .bind(times(|s| s.first_seen_ms))
    .bind(times(|s| s.last_seen_ms))
    .bind(column(|s| &s.first_node))
    .execute(&mut *tx)
    .await?;
    if !rejudge.is_empty() {
        sqlx::query(
            "INSERT INTO contest_rejudge (install_id, from_ms, to_ms) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[])",
        )
        .bind(
            rejudge
                .iter()
                .map(|c| c.install_id.as_str())
                .collect::<Vec<&str>>(),
        )
        .bind(rejudge.iter().map(|c| c.from_ms).collect::<Vec<i64>>())
        .bind(rejudge.iter().map(|c| c.to_ms).collect::<Vec<i64>>())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

async fn sqlite_record(
    pool: &SqlitePool,
    spans: &[KeySpan],
    rejudge: &[ContestChange],
) -> Result<(), sqlx::Error> {
    let spans = one_per_key(spans);
    let rows: Vec<serde_json::Value> = spans
        .iter()
        .map(|s| {
            serde_json::json!([
                s.install_id,
                s.key_id,
                s.first_seen_ms,
                s.last_seen_ms,
                s.first_node
            ])
        })
        .collect();
    let rows = serde_json::Value::Array(rows).to_string();
    let mut tx = pool.begin().await?;
    // The `WHERE true` keeps SQLite from reading `ON CONFLICT` as a join's.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO install_keys ({COLUMNS}) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 \
         FROM json_each($1) WHERE true {WIDEN}"
    )))
    .bind(rows)
    .execute(&mut *tx)
    .await?;
    if !rejudge.is_empty() {
        let rows: Vec<serde_json::Value> = rejudge
            .iter()
            .map(|c| serde_json::json!([c.install_id, c.from_ms, c.to_ms]))
            .collect();
        sqlx::query(
            "INSERT INTO contest_rejudge (install_id, from_ms, to_ms) \
             SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each($1)",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// The spans with one per installation and key (merged as the upsert
/// would), in one order: one statement may not update a row twice, and
/// concurrent writers that take rows in one order cannot deadlock.
fn one_per_key(spans: &[KeySpan]) -> Vec<KeySpan> {
    let mut sorted: Vec<&KeySpan> = spans.iter().collect();
    sorted.sort_by(|a, b| (&a.install_id, &a.key_id).cmp(&(&b.install_id, &b.key_id)));
    let mut out: Vec<KeySpan> = Vec::with_capacity(sorted.len());
    for span in sorted {
        match out.last_mut() {
            Some(last) if last.install_id == span.install_id && last.key_id == span.key_id => {
                if span.first_seen_ms < last.first_seen_ms {
                    last.first_seen_ms = span.first_seen_ms;
                    last.first_node.clone_from(&span.first_node);
                }
                last.last_seen_ms = last.last_seen_ms.max(span.last_seen_ms);
            }
            _ => out.push(span.clone()),
        }
    }
    out
}
