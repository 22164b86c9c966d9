//! The `trust_scores` table: the traffic monitor's trust scores, kept
//! across restarts.

use rusqlite::{Connection, params};

use super::schema::sql_error;
use super::writer::to_sql_int;
use crate::Error;
use crate::traffic::{TrustRetention, TrustRow, UnitKey, UnitKind};

/// Upserts `rows`, then keeps only the `retention.max_units` rows kept
/// longest (the order the traffic monitor forgets units in).
pub(super) fn save(
    tx: &rusqlite::Transaction<'_>,
    rows: &[TrustRow],
    retention: TrustRetention,
) -> Result<(), Error> {
    {
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO trust_scores (kind, unit, score, accepted, rejects, anomalies, \
                 last_seen_minute, last_reject_minute, keep_until) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (kind, unit) DO UPDATE SET score = excluded.score, \
                 accepted = excluded.accepted, rejects = excluded.rejects, \
                 anomalies = excluded.anomalies, last_seen_minute = excluded.last_seen_minute, \
                 last_reject_minute = excluded.last_reject_minute, \
                 keep_until = excluded.keep_until",
            )
            .map_err(|e| sql_error("preparing the trust upsert", &e))?;
        for row in rows {
            let kind = row.unit.kind();
            if kind == UnitKind::Path {
                continue;
            }
            let e = &row.entry;
            upsert
                .execute(params![
                    kind.as_str(),
                    row.unit.name(),
                    e.score.clamp(0.0, 100.0),
                    to_sql_int(e.accepted),
                    to_sql_int(e.rejects),
                    to_sql_int(e.anomalies),
                    to_sql_int(e.last_seen_minute),
                    e.last_reject_minute.map(to_sql_int),
                    to_sql_int(retention.keep_until(e.last_seen_minute, e.score)),
                ])
                .map_err(|e| sql_error("storing trust scores", &e))?;
        }
    }
    let count: i64 = tx
        .query_row("SELECT count(*) FROM trust_scores", [], |r| r.get(0))
        .map_err(|e| sql_error("counting trust scores", &e))?;
    let excess = count - i64::try_from(retention.max_units).unwrap_or(i64::MAX);
    if excess > 0 {
        tx.execute(
            "DELETE FROM trust_scores WHERE (kind, unit) IN (SELECT kind, unit FROM trust_scores \
             ORDER BY keep_until LIMIT ?1)",
            [excess],
        )
        .map_err(|e| sql_error("pruning trust scores", &e))?;
    }
    Ok(())
}

/// The `retention.max_units` scores kept longest, those first.
pub(super) fn load(conn: &Connection, retention: TrustRetention) -> Result<Vec<TrustRow>, Error> {
    let mut stmt = conn
        .prepare(
            "SELECT kind, unit, score, accepted, rejects, anomalies, last_seen_minute, \
             last_reject_minute FROM trust_scores ORDER BY keep_until DESC LIMIT ?1",
        )
        .map_err(|e| sql_error("reading trust scores", &e))?;
    let limit = i64::try_from(retention.max_units).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map([limit], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, f64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, Option<i64>>(7)?,
            ))
        })
        .map_err(|e| sql_error("reading trust scores", &e))?;
    let mut out = Vec::new();
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    for row in rows {
        let (kind, unit, score, accepted, rejects, anomalies, seen, reject) =
            row.map_err(|e| sql_error("reading trust scores", &e))?;
        // A row this collector cannot read (edited by hand) is skipped with
        // a warning rather than stopping the start.
        let Some(key) = UnitKind::parse(&kind).and_then(|k| UnitKey::from_parts(k, &unit)) else {
            tracing::warn!(%kind, %unit, "skipping an unreadable trust score row");
            continue;
        };
        out.push(TrustRow::new(
            key,
            score,
            n(accepted),
            n(rejects),
            n(anomalies),
            n(seen),
            reject.map(n),
        ));
    }
    Ok(out)
}
