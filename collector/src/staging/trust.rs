//! The `trust_scores` table: the traffic monitor's trust scores, and the
//! bands of their units (schema version 6), kept across restarts; and the
//! `path_bands` table (schema version 7): the bands of path units, which
//! have no score.

use rusqlite::{Connection, params};

use super::schema::sql_error;
use super::writer::to_sql_int;
use crate::Error;
use crate::traffic::{
    BAND_MEMORY_MINUTES, BandMemory, PathBand, TrustRetention, TrustRow, UnitKey, UnitKind,
};

/// Upserts `rows` (a row without a band keeps the band stored before: its
/// unit may have been forgotten by the traffic monitor, not its traffic),
/// then keeps only the `retention.max_units` rows kept
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
                 last_seen_minute, last_reject_minute, keep_until, band_median, band_scale, \
                 band_minutes, band_learned_minute) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
                 ON CONFLICT (kind, unit) DO UPDATE SET score = excluded.score, \
                 accepted = excluded.accepted, rejects = excluded.rejects, \
                 anomalies = excluded.anomalies, last_seen_minute = excluded.last_seen_minute, \
                 last_reject_minute = excluded.last_reject_minute, \
                 keep_until = excluded.keep_until, \
                 band_median = coalesce(excluded.band_median, band_median), \
                 band_scale = CASE WHEN excluded.band_median IS NULL THEN band_scale \
                     ELSE excluded.band_scale END, \
                 band_minutes = CASE WHEN excluded.band_median IS NULL THEN band_minutes \
                     ELSE excluded.band_minutes END, \
                 band_learned_minute = CASE WHEN excluded.band_median IS NULL \
                     THEN band_learned_minute ELSE excluded.band_learned_minute END",
            )
            .map_err(|e| sql_error("preparing the trust upsert", &e))?;
        for row in rows {
            let kind = row.unit.kind();
            if kind == UnitKind::Path {
                continue;
            }
            let e = &row.entry;
            let band = row.band.as_ref();
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
                    band.map(|b| b.median),
                    band.map(|b| b.scale),
                    band.map(|b| b.minutes),
                    band.map(|b| to_sql_int(b.learned_minute)),
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
             last_reject_minute, band_median, band_scale, band_minutes, band_learned_minute \
             FROM trust_scores ORDER BY keep_until DESC LIMIT ?1",
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
                (
                    r.get::<_, Option<f64>>(8)?,
                    r.get::<_, Option<f64>>(9)?,
                    r.get::<_, Option<i64>>(10)?,
                    r.get::<_, Option<i64>>(11)?,
                ),
            ))
        })
        .map_err(|e| sql_error("reading trust scores", &e))?;
    let mut out = Vec::new();
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    for row in rows {
        let (kind, unit, score, accepted, rejects, anomalies, seen, reject, band) =
            row.map_err(|e| sql_error("reading trust scores", &e))?;
        // A row this collector cannot read (edited by hand) is skipped with
        // a warning rather than stopping the start.
        let Some(key) = UnitKind::parse(&kind).and_then(|k| UnitKey::from_parts(k, &unit)) else {
            tracing::warn!(%kind, %unit, "skipping an unreadable trust score row");
            continue;
        };
        let mut row = TrustRow::new(
            key,
            score,
            n(accepted),
            n(rejects),
            n(anomalies),
            n(seen),
            reject.map(n),
        );
        // A band this collector cannot read (edited by hand) is ignored:
        // the unit is then judged as a new one until it has history again.
        let stored = match band {
            (None, None, None, None) => None,
            (Some(median), Some(scale), Some(minutes), Some(learned)) => Some(
                u32::try_from(minutes)
                    .ok()
                    .zip(u64::try_from(learned).ok())
                    .and_then(|(minutes, learned)| {
                        BandMemory::new(median, scale, minutes, learned)
                    }),
            ),
            _ => Some(None),
        };
        match stored {
            Some(Some(band)) => row = row.with_band(band),
            Some(None) => tracing::warn!(%kind, %unit, "ignoring an unreadable stored band"),
            None => {}
        }
        out.push(row);
    }
    Ok(out)
}

/// Upserts path units' bands, then deletes those learned more than a day
/// before the newest: too old to be used, they were left by patterns no
/// longer configured (or no longer busy), so the table holds about the
/// patterns of the last day.
pub(super) fn save_path_bands(
    tx: &rusqlite::Transaction<'_>,
    bands: &[PathBand],
) -> Result<(), Error> {
    if bands.is_empty() {
        return Ok(());
    }
    {
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO path_bands (pattern, band_median, band_scale, band_minutes, \
                 band_learned_minute) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (pattern) DO UPDATE SET band_median = excluded.band_median, \
                 band_scale = excluded.band_scale, band_minutes = excluded.band_minutes, \
                 band_learned_minute = excluded.band_learned_minute",
            )
            .map_err(|e| sql_error("preparing the path band upsert", &e))?;
        for PathBand { pattern, band } in bands {
            upsert
                .execute(params![
                    pattern,
                    band.median,
                    band.scale,
                    band.minutes,
                    to_sql_int(band.learned_minute),
                ])
                .map_err(|e| sql_error("storing path bands", &e))?;
        }
    }
    tx.execute(
        "DELETE FROM path_bands WHERE band_learned_minute < \
         (SELECT max(band_learned_minute) FROM path_bands) - ?1",
        [to_sql_int(BAND_MEMORY_MINUTES)],
    )
    .map_err(|e| sql_error("forgetting old path bands", &e))?;
    Ok(())
}

/// The stored bands of path units; a row this collector cannot read
/// (edited by hand) is skipped with a warning.
pub(super) fn load_path_bands(conn: &Connection) -> Result<Vec<PathBand>, Error> {
    let mut stmt = conn
        .prepare(
            "SELECT pattern, band_median, band_scale, band_minutes, band_learned_minute \
             FROM path_bands ORDER BY pattern",
        )
        .map_err(|e| sql_error("reading path bands", &e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, f64>(1)?,
                r.get::<_, f64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .map_err(|e| sql_error("reading path bands", &e))?;
    let mut out = Vec::new();
    for row in rows {
        let (pattern, median, scale, minutes, learned) =
            row.map_err(|e| sql_error("reading path bands", &e))?;
        let band = u32::try_from(minutes)
            .ok()
            .zip(u64::try_from(learned).ok())
            .and_then(|(minutes, learned)| BandMemory::new(median, scale, minutes, learned));
        if let Some(band) = band {
            out.push(PathBand { pattern, band });
        } else {
            tracing::warn!(%pattern, "ignoring an unreadable stored path band");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.sqlite3");
        let mut conn = Connection::open(&path).expect("open");
        super::super::schema::migrate(&mut conn, "edge-1", &path).expect("schema");
        (dir, conn)
    }

    const RETENTION: TrustRetention = TrustRetention {
        max_units: 10,
        initial: 50,
    };

    fn save_one(conn: &mut Connection, row: TrustRow) {
        let tx = conn.transaction().expect("tx");
        save(&tx, &[row], RETENTION).expect("save");
        tx.commit().expect("commit");
    }

    fn row(band: Option<BandMemory>) -> TrustRow {
        let row = TrustRow::new(UnitKey::Install("tid-1".to_owned()), 70.0, 5, 0, 0, 9, None);
        match band {
            Some(band) => row.with_band(band),
            None => row,
        }
    }

    /// A unit the traffic monitor forgot (its table was full) still has
    /// its score written: without a band then, which must not erase the
    /// one its traffic taught before.
    #[test]
    fn a_row_without_a_band_keeps_the_stored_one_and_a_new_band_replaces_it() {
        let (_dir, mut conn) = store();
        let first = BandMemory::new(300.0, 30.0, 60, 5).expect("band");
        save_one(&mut conn, row(Some(first)));
        save_one(&mut conn, row(None));
        let rows = load(&conn, RETENTION).expect("load");
        assert_eq!(rows[0].band, Some(first));
        let second = BandMemory::new(400.0, 40.0, 45, 9).expect("band");
        save_one(&mut conn, row(Some(second)));
        let rows = load(&conn, RETENTION).expect("load");
        assert_eq!(rows[0].band, Some(second));
        assert_eq!(rows[0].entry.accepted, 5);
    }

    fn save_paths(conn: &mut Connection, bands: &[PathBand]) {
        let tx = conn.transaction().expect("tx");
        save_path_bands(&tx, bands).expect("save");
        tx.commit().expect("commit");
    }

    fn path(pattern: &str, median: f64, learned_minute: u64) -> PathBand {
        PathBand {
            pattern: pattern.to_owned(),
            band: BandMemory::new(median, median / 10.0 + 1.0, 60, learned_minute).expect("band"),
        }
    }

    /// Path bands are replaced by newer ones, kept beside the trust
    /// scores, and forgotten once a day older than the newest.
    #[test]
    fn path_bands_round_trip_and_old_ones_are_forgotten() {
        let (_dir, mut conn) = store();
        save_one(&mut conn, row(None));
        save_paths(&mut conn, &[path("/a", 600.0, 100), path("/b", 50.0, 100)]);
        save_paths(&mut conn, &[path("/a", 700.0, 200)]);
        let bands = load_path_bands(&conn).expect("load");
        assert_eq!(bands, vec![path("/a", 700.0, 200), path("/b", 50.0, 100)]);
        // `/b` is no longer configured: a day after `/a`'s latest band it
        // is gone, `/a` kept.
        let later = 100 + BAND_MEMORY_MINUTES + 1;
        save_paths(&mut conn, &[path("/a", 710.0, later)]);
        assert_eq!(
            load_path_bands(&conn).expect("load"),
            vec![path("/a", 710.0, later)]
        );
        // Path units have no trust rows, and scores keep theirs.
        assert_eq!(load(&conn, RETENTION).expect("load").len(), 1);
        // A row edited out of shape is skipped, the others read.
        conn.execute_batch("INSERT INTO path_bands VALUES ('/c', 5.0, 2.0, 5000000000, 3)")
            .expect("edited");
        assert_eq!(load_path_bands(&conn).expect("load").len(), 1);
    }

    #[test]
    fn a_band_edited_out_of_shape_is_dropped_and_the_score_kept() {
        let (_dir, mut conn) = store();
        save_one(&mut conn, row(None));
        for edit in [
            "UPDATE trust_scores SET band_median = 10.0",
            "UPDATE trust_scores SET band_scale = 2.0, band_minutes = 5000000000, \
             band_learned_minute = 3",
        ] {
            conn.execute_batch(edit).expect("edited");
            let rows = load(&conn, RETENTION).expect("load");
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].band, None);
            assert!((rows[0].entry.score - 70.0).abs() < 1e-9);
        }
        // The schema refuses what no monitor could have learned.
        assert!(
            conn.execute_batch("UPDATE trust_scores SET band_scale = 0.5")
                .is_err()
        );
    }
}
