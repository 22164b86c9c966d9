//! SQL both backends run as is. SQLite reads `$1` as the first parameter
//! just as PostgreSQL does, so reads need only one text.

use std::fmt::Write as _;

use super::records::LineFilter;

pub(super) const CURSOR: &str = "SELECT collector, node_id, after_seq, acked_seq, \
     last_pull_at AS last_pull_at_ms, last_ok_at AS last_ok_at_ms, last_error, \
     last_error_at AS last_error_at_ms, pulled_total, caught_up_at AS caught_up_at_ms \
     FROM pull_cursors WHERE collector = $1";

pub(super) const CURSORS: &str = "SELECT collector, node_id, after_seq, acked_seq, \
     last_pull_at AS last_pull_at_ms, last_ok_at AS last_ok_at_ms, last_error, \
     last_error_at AS last_error_at_ms, pulled_total, caught_up_at AS caught_up_at_ms \
     FROM pull_cursors ORDER BY collector";

pub(super) const CURSOR_NODE: &str = "SELECT node_id FROM pull_cursors WHERE collector = $1";

/// Another collector whose cursor belongs to node `$1` (`$2` the one
/// pulling): one node's sequence numbers can only be one collector's.
pub(super) const NODE_TAKEN: &str = "SELECT collector FROM pull_cursors \
     WHERE node_id = $1 AND collector <> $2 ORDER BY collector LIMIT 1";

/// Moves the acknowledged number forward only and clears the recorded
/// error (a CASE, as SQLite has no `GREATEST` and PostgreSQL no two-argument
/// `MAX`).
pub(super) const RECORD_ACK: &str = "UPDATE pull_cursors SET \
     acked_seq = CASE WHEN $2 > acked_seq THEN $2 ELSE acked_seq END, \
     last_error = NULL, last_error_at = NULL WHERE collector = $1";

/// The staging store a collector's pulls came from.
pub(super) const CURSOR_STORE: &str = "SELECT store_id FROM pull_cursors WHERE collector = $1";

/// Binds a collector's cursor to a staging store, creating the cursor when
/// the collector never pulled; a store already bound stays.
pub(super) const BIND_CURSOR_STORE: &str = "INSERT INTO pull_cursors (collector, store_id) \
     VALUES ($1, $2) ON CONFLICT (collector) DO UPDATE \
     SET store_id = COALESCE(pull_cursors.store_id, excluded.store_id)";

/// Records that a round pulled the collector to the end of its export, the
/// round having started at `$2` (never moving the time back), creating the
/// cursor when the collector never had a report to pull.
pub(super) const RECORD_CAUGHT_UP: &str = "INSERT INTO pull_cursors (collector, caught_up_at) \
     VALUES ($1, $2) ON CONFLICT (collector) DO UPDATE SET caught_up_at = CASE \
     WHEN pull_cursors.caught_up_at IS NULL OR pull_cursors.caught_up_at < excluded.caught_up_at \
     THEN excluded.caught_up_at ELSE pull_cursors.caught_up_at END";

/// Records a failed pull, creating the cursor when the collector never
/// pulled (its node id stays empty until a pull succeeds).
pub(super) const RECORD_PULL_ERROR: &str = "INSERT INTO pull_cursors \
     (collector, last_pull_at, last_error, last_error_at) VALUES ($1, $2, $3, $2) \
     ON CONFLICT (collector) DO UPDATE SET last_pull_at = excluded.last_pull_at, \
     last_error = excluded.last_error, last_error_at = excluded.last_error_at";

/// The pending reports are those `raw_pending` lists (see migration 0006).
pub(super) const PENDING_RAW: &str = "SELECT r.id, r.collector, r.node_id, r.seq, r.body, \
     r.pulled_at AS pulled_at_ms, CAST(NULL AS TEXT) AS obs_key FROM raw_pending p \
     JOIN raw_reports r ON r.id = p.raw_id WHERE p.raw_id > $1 ORDER BY p.raw_id LIMIT $2";

/// The raw reports whose outcome is in state `$4` (`processed` for
/// `reprocess`, `quarantined` for `reprocess --quarantined`), each with the
/// key of the observation it counted in (none for a quarantined one), which
/// re-deciding keeps. Of a report's copies only the one that counted is
/// `processed`; a duplicate is never listed.
pub(super) const DECIDED_RAW: &str = "SELECT r.id, r.collector, r.node_id, r.seq, r.body, \
     r.pulled_at AS pulled_at_ms, b.obs_key FROM raw_outcomes o JOIN raw_reports r ON r.id = o.id \
     LEFT JOIN observations b ON b.id = o.observation_id \
     WHERE o.state = $4 AND o.id > $1 \
     AND (CAST($2 AS BIGINT) IS NULL OR COALESCE(o.received_at, o.pulled_at) >= $2) \
     ORDER BY o.id LIMIT $3";

/// The processed raw reports of installation `$2` that arrived (were
/// received, or else pulled) in `[$3, $4)`, with the key of the observation
/// each counted in, in id order after `$1`: those a change of the
/// installation's key contest concerns. Found through the arrival-time
/// index, then their observations' installation.
pub(super) const CONTESTED_RAW: &str = "SELECT r.id, r.collector, r.node_id, r.seq, r.body, \
     r.pulled_at AS pulled_at_ms, b.obs_key FROM raw_outcomes o \
     JOIN observations b ON b.id = o.observation_id JOIN raw_reports r ON r.id = o.id \
     WHERE COALESCE(o.received_at, o.pulled_at) >= $3 AND COALESCE(o.received_at, o.pulled_at) < $4 \
     AND o.state = 'processed' AND b.install_id = $2 AND o.id > $1 \
     ORDER BY o.id LIMIT $5";

/// The raw reports of an apply with their state (pending when they have no
/// outcome yet) and what their outcome row copies; `{ids}` is replaced by
/// each backend's list of ids.
pub(super) fn raw_states(ids: &str) -> String {
    format!(
        "SELECT r.id, COALESCE(o.state, 'pending') AS state, r.collector, r.received_at, \
         r.pulled_at FROM raw_reports r LEFT JOIN raw_outcomes o ON o.id = r.id \
         WHERE r.id IN ({ids})"
    )
}

/// The report ids of an apply that were counted, with the raw report whose
/// copy counted and what that copy is now decided as; `{ids}` is replaced
/// by each backend's list of report ids.
pub(super) fn counted_reports(ids: &str) -> String {
    format!(
        "SELECT c.report_id, c.raw_id AS first_copy, o.observation_id AS counted_in \
         FROM counted_reports c LEFT JOIN raw_outcomes o ON o.id = c.raw_id \
         WHERE c.report_id IN ({ids})"
    )
}

/// The columns of a [`LineRow`](super::LineRow), from `lines l`.
pub(super) const LINE_COLUMNS: &str = "l.line_key, l.account, l.install_id, l.declared_province, \
     l.declared_city, l.declared_carrier, l.actual_carrier, l.actual_province, l.actual_city, \
     l.egress_ip, l.first_hop_ip, l.verdict, l.verdict_id, l.low_trust, l.observation_id, \
     l.reports, \
     l.first_seen AS first_seen_ms, l.last_seen AS last_seen_ms, \
     l.current_from AS current_from_ms, l.updated_at AS updated_at_ms";

/// The lines an apply touches, with their current observation's last seen
/// time; `{keys}` is replaced by each backend's list of keys.
///
/// That time is the line's own `last_seen`: the apply counts a report into
/// its observation's and its line's seen times alike, and an observation
/// becomes current exactly when its last seen time reaches the current
/// one's, so the current observation is always one seen last (see
/// `apply::tests::the_current_observation_is_always_one_seen_last`).
/// Reading it from the line spares a lookup of the observation, often a
/// page no longer cached, for every line a batch touches.
pub(super) fn line_states(keys: &str) -> String {
    format!(
        "SELECT {LINE_COLUMNS}, l.last_seen AS current_seen FROM lines l \
         WHERE l.line_key IN ({keys})"
    )
}

/// The observations an apply touches; `{keys}` as for [`line_states`].
pub(super) fn observation_states(keys: &str) -> String {
    format!(
        "SELECT id, obs_key, line_key, install_id, account, declared_province, declared_city, \
         declared_carrier, egress_ip, first_hop_ip, path AS path_json, engine, agent_version, os, \
         count, first_seen, last_seen, first_report_id, last_report_id, latest_verdict_id, \
         latest_verdict_key FROM observations WHERE obs_key IN ({keys})"
    )
}

const OBSERVATION_COLUMNS: &str = "SELECT id, obs_key, line_key, install_id, account, \
     declared_province, declared_city, declared_carrier, egress_ip, first_hop_ip, \
     path AS path_json, engine, agent_version, os, count, first_seen AS first_seen_ms, \
     last_seen AS last_seen_ms, first_report_id, last_report_id, latest_verdict_id, \
     latest_verdict_key FROM observations";

pub(super) fn observation() -> String {
    format!("{OBSERVATION_COLUMNS} WHERE obs_key = $1")
}

pub(super) fn line_observations() -> String {
    format!("{OBSERVATION_COLUMNS} WHERE line_key = $1 ORDER BY last_seen DESC, id DESC")
}

pub(super) fn line() -> String {
    format!("SELECT {LINE_COLUMNS} FROM lines l WHERE l.line_key = $1")
}

pub(super) const LINE_VERDICTS: &str = "SELECT id, line_key, observation_id, report_id, verdict, \
     verdict_key, reasons AS reasons_json, evidence AS evidence_json, actual_carrier, \
     actual_province, actual_city, egress_carrier, first_hop_carrier, filled AS filled_json, \
     data_versions AS data_versions_json, observed_at AS observed_at_ms, \
     decided_at AS decided_at_ms, trust_score, low_trust FROM verdicts WHERE line_key = $1 ORDER BY id DESC";

pub(super) const LINE_HISTORY: &str = "SELECT id, line_key, verdict_id, verdict, actual_carrier, \
     actual_province, actual_city, current_from AS current_from_ms, \
     replaced_at AS replaced_at_ms FROM line_history WHERE line_key = $1 ORDER BY id DESC";

pub(super) const QUARANTINED: &str = "SELECT q.id, q.raw_id, r.collector, r.node_id, r.seq, \
     q.report_id, q.install_id, q.reasons AS reasons_json, q.summary, \
     q.quarantined_at AS quarantined_at_ms FROM quarantine q \
     JOIN raw_reports r ON r.id = q.raw_id ORDER BY q.id DESC LIMIT $1 OFFSET $2";

pub(super) const COUNTS: &str = "SELECT \
     (SELECT COUNT(*) FROM raw_reports) AS raw, \
     (SELECT COUNT(*) FROM raw_pending) AS pending, \
     (SELECT COUNT(*) FROM raw_outcomes WHERE state = 'processed') AS processed, \
     (SELECT COUNT(*) FROM raw_outcomes WHERE state = 'quarantined') AS quarantined, \
     (SELECT COUNT(*) FROM raw_outcomes WHERE state = 'duplicate') AS duplicates, \
     (SELECT COUNT(*) FROM observations) AS observations, \
     (SELECT COUNT(*) FROM verdicts) AS verdicts, \
     (SELECT COUNT(*) FROM lines) AS lines, \
     (SELECT COUNT(*) FROM line_history) AS line_history";

pub(super) const CACHE_LOAD: &str = "SELECT source, ip, facts AS facts_json, \
     fetched_at AS fetched_at_ms, expires_at AS expires_at_ms FROM resolver_cache \
     WHERE source = $1 AND expires_at > $2 ORDER BY ip";

/// A parameter of a built query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Param<'a> {
    Text(&'a str),
    Int(i64),
}

/// The query of [`Store::lines`](super::Store::lines): only the conditions
/// the filter sets, so every one of them can use its index.
pub(super) fn lines(filter: &LineFilter) -> (String, Vec<Param<'_>>) {
    let mut sql = format!("SELECT {LINE_COLUMNS} FROM lines l WHERE TRUE");
    let mut params = Vec::new();
    super::backoffice::line_conditions(filter, None, false, &mut sql, &mut params);
    params.push(Param::Int(i64::from(filter.limit)));
    params.push(Param::Int(i64::from(filter.offset)));
    let _ = write!(
        sql,
        " ORDER BY l.last_seen DESC, l.line_key LIMIT ${} OFFSET ${}",
        params.len() - 1,
        params.len()
    );
    (sql, params)
}
