//! The tables an apply writes whole rows into, each described once: its
//! columns in order with their types, and each row's values in that order.
//! PostgreSQL sends new rows by binary COPY and replaces changed ones from
//! typed arrays; SQLite inserts or upserts them one statement each; both
//! take the column list and the values from here, so the two backends
//! cannot write a column under another's name.

use std::collections::HashMap;

use super::apply::{HistoryEntry, NewCount, NewVerdict, ObservationState, RawOrigin, RawWrite};
use super::rows::LineRow;

/// One value of a row, typed as its column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Cell<'a> {
    Int8(i64),
    OptInt8(Option<i64>),
    OptInt2(Option<i16>),
    Text(&'a str),
    OptText(Option<&'a str>),
    Bool(bool),
}

/// A column's SQL type, which PostgreSQL's typed arrays name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SqlType {
    Int8,
    Int2,
    Text,
    Bool,
}

impl SqlType {
    /// The PostgreSQL name of the type.
    pub(super) fn pg_name(self) -> &'static str {
        match self {
            Self::Int8 => "bigint",
            Self::Int2 => "smallint",
            Self::Text => "text",
            Self::Bool => "boolean",
        }
    }
}

use SqlType::{Bool, Int2, Int8, Text};

/// A row of one of the tables an apply writes.
pub(super) trait TableRow {
    /// The table.
    const TABLE: &'static str;
    /// Its columns with their types, in the order of [`TableRow::cells`].
    const COLUMNS: &'static [(&'static str, SqlType)];
    /// The row's values, one per column.
    fn cells(&self) -> Vec<Cell<'_>>;
}

/// The column names of `R`, comma-separated.
pub(super) fn column_list<R: TableRow>() -> String {
    names::<R>().collect::<Vec<_>>().join(", ")
}

/// `c = from.c, …` for every column of `R` but `key`: the SET list that
/// replaces a row's columns with those of `from`.
pub(super) fn assignments<R: TableRow>(key: &str, from: &str) -> String {
    names::<R>()
        .filter(|c| *c != key)
        .map(|c| format!("{c} = {from}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The column names of `R`, in order.
fn names<R: TableRow>() -> impl Iterator<Item = &'static str> {
    R::COLUMNS.iter().map(|(name, _)| *name)
}

/// One column of many rows, as PostgreSQL takes a typed array parameter.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ColumnValues<'a> {
    Int8(Vec<Option<i64>>),
    Int2(Vec<Option<i16>>),
    Text(Vec<Option<&'a str>>),
    Bool(Vec<bool>),
}

/// `rows` turned column-wise: one array of values per column of `R`.
pub(super) fn columns<R: TableRow>(rows: &[R]) -> Vec<ColumnValues<'_>> {
    let mut out: Vec<ColumnValues<'_>> = R::COLUMNS
        .iter()
        .map(|(_, ty)| match ty {
            Int8 => ColumnValues::Int8(Vec::with_capacity(rows.len())),
            Int2 => ColumnValues::Int2(Vec::with_capacity(rows.len())),
            Text => ColumnValues::Text(Vec::with_capacity(rows.len())),
            Bool => ColumnValues::Bool(Vec::with_capacity(rows.len())),
        })
        .collect();
    for row in rows {
        for (column, cell) in out.iter_mut().zip(row.cells()) {
            match (column, cell) {
                (ColumnValues::Int8(v), Cell::Int8(x)) => v.push(Some(x)),
                (ColumnValues::Int8(v), Cell::OptInt8(x)) => v.push(x),
                (ColumnValues::Int2(v), Cell::OptInt2(x)) => v.push(x),
                (ColumnValues::Text(v), Cell::Text(x)) => v.push(Some(x)),
                (ColumnValues::Text(v), Cell::OptText(x)) => v.push(x),
                (ColumnValues::Bool(v), Cell::Bool(x)) => v.push(x),
                (column, cell) => unreachable!(
                    "{}: a {cell:?} in a column declared {column:?}; COLUMNS and cells() disagree",
                    R::TABLE
                ),
            }
        }
    }
    out
}

/// `COPY table (columns) FROM STDIN (FORMAT binary)`.
pub(super) fn copy_statement<R: TableRow>() -> String {
    format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        R::TABLE,
        column_list::<R>()
    )
}

/// `INSERT INTO table (columns) VALUES ($1, …)`.
pub(super) fn insert_statement<R: TableRow>() -> String {
    let params: Vec<String> = (1..=R::COLUMNS.len()).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        R::TABLE,
        column_list::<R>(),
        params.join(", ")
    )
}

/// An insert that replaces every other column of the row with the same
/// `key`.
pub(super) fn upsert_statement<R: TableRow>(key: &str) -> String {
    format!(
        "{} ON CONFLICT ({key}) DO UPDATE SET {}",
        insert_statement::<R>(),
        assignments::<R>(key, "excluded")
    )
}

impl TableRow for ObservationState {
    const TABLE: &'static str = "observations";
    const COLUMNS: &'static [(&'static str, SqlType)] = &[
        ("id", Int8),
        ("obs_key", Text),
        ("line_key", Text),
        ("install_id", Text),
        ("account", Text),
        ("declared_province", Text),
        ("declared_city", Text),
        ("declared_carrier", Text),
        ("egress_ip", Text),
        ("first_hop_ip", Text),
        ("path", Text),
        ("engine", Text),
        ("agent_version", Text),
        ("os", Text),
        ("count", Int8),
        ("first_seen", Int8),
        ("last_seen", Int8),
        ("first_report_id", Text),
        ("last_report_id", Text),
        ("latest_verdict_id", Int8),
        ("latest_verdict_key", Text),
    ];

    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            Cell::Int8(self.id),
            Cell::Text(&self.facts.obs_key),
            Cell::Text(&self.facts.line_key),
            Cell::Text(&self.facts.install_id),
            Cell::Text(&self.facts.account),
            Cell::OptText(self.facts.declared_province.as_deref()),
            Cell::OptText(self.facts.declared_city.as_deref()),
            Cell::OptText(self.facts.declared_carrier.as_deref()),
            Cell::Text(&self.facts.egress_ip),
            Cell::OptText(self.facts.first_hop_ip.as_deref()),
            Cell::Text(&self.facts.path_json),
            Cell::Text(&self.facts.engine),
            Cell::Text(&self.facts.agent_version),
            Cell::Text(&self.facts.os),
            Cell::Int8(self.count),
            Cell::Int8(self.first_seen),
            Cell::Int8(self.last_seen),
            Cell::Text(&self.first_report_id),
            Cell::Text(&self.last_report_id),
            Cell::OptInt8(self.latest_verdict_id),
            Cell::OptText(self.latest_verdict_key.as_deref()),
        ]
    }
}

impl TableRow for NewVerdict<'_> {
    const TABLE: &'static str = "verdicts";
    const COLUMNS: &'static [(&'static str, SqlType)] = &[
        ("id", Int8),
        ("line_key", Text),
        ("observation_id", Int8),
        ("report_id", Text),
        ("verdict", Text),
        ("verdict_key", Text),
        ("reasons", Text),
        ("evidence", Text),
        ("actual_carrier", Text),
        ("actual_province", Text),
        ("actual_city", Text),
        ("egress_carrier", Text),
        ("first_hop_carrier", Text),
        ("filled", Text),
        ("data_versions", Text),
        ("observed_at", Int8),
        ("decided_at", Int8),
        ("trust_score", Int2),
        ("low_trust", Bool),
    ];

    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            Cell::Int8(self.id),
            Cell::Text(self.line_key),
            Cell::Int8(self.observation_id),
            Cell::Text(self.report_id),
            Cell::Text(&self.record.verdict),
            Cell::Text(&self.record.verdict_key),
            Cell::Text(&self.record.reasons_json),
            Cell::Text(&self.record.evidence_json),
            Cell::OptText(self.record.actual_carrier.as_deref()),
            Cell::OptText(self.record.actual_province.as_deref()),
            Cell::OptText(self.record.actual_city.as_deref()),
            Cell::OptText(self.record.egress_carrier.as_deref()),
            Cell::OptText(self.record.first_hop_carrier.as_deref()),
            Cell::Text(&self.record.filled_json),
            Cell::Text(&self.record.data_versions_json),
            Cell::Int8(self.observed_at_ms),
            Cell::Int8(self.record.decided_at_ms),
            Cell::OptInt2(self.record.trust_score),
            Cell::Bool(self.record.low_trust),
        ]
    }
}

impl TableRow for LineRow {
    const TABLE: &'static str = "lines";
    const COLUMNS: &'static [(&'static str, SqlType)] = &[
        ("line_key", Text),
        ("account", Text),
        ("install_id", Text),
        ("declared_province", Text),
        ("declared_city", Text),
        ("declared_carrier", Text),
        ("actual_carrier", Text),
        ("actual_province", Text),
        ("actual_city", Text),
        ("egress_ip", Text),
        ("first_hop_ip", Text),
        ("verdict", Text),
        ("verdict_id", Int8),
        ("observation_id", Int8),
        ("reports", Int8),
        ("first_seen", Int8),
        ("last_seen", Int8),
        ("current_from", Int8),
        ("updated_at", Int8),
        ("low_trust", Bool),
    ];

    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            Cell::Text(&self.line_key),
            Cell::Text(&self.account),
            Cell::Text(&self.install_id),
            Cell::OptText(self.declared_province.as_deref()),
            Cell::OptText(self.declared_city.as_deref()),
            Cell::OptText(self.declared_carrier.as_deref()),
            Cell::OptText(self.actual_carrier.as_deref()),
            Cell::OptText(self.actual_province.as_deref()),
            Cell::OptText(self.actual_city.as_deref()),
            Cell::Text(&self.egress_ip),
            Cell::OptText(self.first_hop_ip.as_deref()),
            Cell::Text(&self.verdict),
            Cell::Int8(self.verdict_id),
            Cell::Int8(self.observation_id),
            Cell::Int8(i64::try_from(self.reports).unwrap_or(i64::MAX)),
            Cell::Int8(self.first_seen_ms),
            Cell::Int8(self.last_seen_ms),
            Cell::Int8(self.current_from_ms),
            Cell::Int8(self.updated_at_ms),
            Cell::Bool(self.low_trust),
        ]
    }
}

/// The id column is left to its sequence: rows go in the order given, so a
/// line's history keeps the order in which its verdicts were replaced.
impl TableRow for HistoryEntry {
    const TABLE: &'static str = "line_history";
    const COLUMNS: &'static [(&'static str, SqlType)] = &[
        ("line_key", Text),
        ("verdict_id", Int8),
        ("verdict", Text),
        ("actual_carrier", Text),
        ("actual_province", Text),
        ("actual_city", Text),
        ("current_from", Int8),
        ("replaced_at", Int8),
    ];

    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            Cell::Text(&self.line_key),
            Cell::Int8(self.verdict_id),
            Cell::Text(&self.verdict),
            Cell::OptText(self.actual_carrier.as_deref()),
            Cell::OptText(self.actual_province.as_deref()),
            Cell::OptText(self.actual_city.as_deref()),
            Cell::Int8(self.current_from),
            Cell::Int8(self.replaced_at),
        ]
    }
}

impl TableRow for NewCount<'_> {
    const TABLE: &'static str = "counted_reports";
    const COLUMNS: &'static [(&'static str, SqlType)] = &[("report_id", Text), ("raw_id", Int8)];

    fn cells(&self) -> Vec<Cell<'_>> {
        vec![Cell::Text(self.report_id), Cell::Int8(self.raw_id)]
    }
}

/// The outcome of a raw report the batch decided, with where it came from
/// (absent when its origin was not loaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OutcomeRow<'a> {
    pub(super) id: i64,
    pub(super) state: &'static str,
    pub(super) observation_id: Option<i64>,
    pub(super) origin: Option<&'a RawOrigin>,
}

impl<'a> OutcomeRow<'a> {
    /// The outcome rows of `raws`, each with its origin from `origins`.
    pub(super) fn of<'r>(
        raws: impl IntoIterator<Item = &'r RawWrite>,
        origins: &'a HashMap<i64, RawOrigin>,
    ) -> Vec<Self> {
        raws.into_iter()
            .map(|r| Self {
                id: r.id,
                state: r.state.as_str(),
                observation_id: r.observation_id,
                origin: origins.get(&r.id),
            })
            .collect()
    }
}

impl TableRow for OutcomeRow<'_> {
    const TABLE: &'static str = "raw_outcomes";
    const COLUMNS: &'static [(&'static str, SqlType)] = &[
        ("id", Int8),
        ("state", Text),
        ("observation_id", Int8),
        ("collector", Text),
        ("received_at", Int8),
        ("pulled_at", Int8),
    ];

    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            Cell::Int8(self.id),
            Cell::Text(self.state),
            Cell::OptInt8(self.observation_id),
            Cell::OptText(self.origin.map(|o| o.collector.as_str())),
            Cell::OptInt8(self.origin.and_then(|o| o.received_at)),
            Cell::OptInt8(self.origin.map(|o| o.pulled_at)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> HistoryEntry {
        HistoryEntry {
            line_key: "acct:1".to_owned(),
            verdict_id: 7,
            verdict: "compliant".to_owned(),
            actual_carrier: Some("china_mobile".to_owned()),
            actual_province: None,
            actual_city: None,
            current_from: 10,
            replaced_at: 20,
        }
    }

    #[test]
    fn statements_name_every_column_once_in_order() {
        assert_eq!(
            copy_statement::<HistoryEntry>(),
            "COPY line_history (line_key, verdict_id, verdict, actual_carrier, \
             actual_province, actual_city, current_from, replaced_at) FROM STDIN (FORMAT binary)"
        );
        assert_eq!(
            insert_statement::<HistoryEntry>(),
            "INSERT INTO line_history (line_key, verdict_id, verdict, actual_carrier, \
             actual_province, actual_city, current_from, replaced_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        );
        let upsert = upsert_statement::<LineRow>("line_key");
        assert!(
            upsert.ends_with(
                "ON CONFLICT (line_key) DO UPDATE SET account = excluded.account, \
                 install_id = excluded.install_id, declared_province = excluded.declared_province, \
                 declared_city = excluded.declared_city, declared_carrier = excluded.declared_carrier, \
                 actual_carrier = excluded.actual_carrier, actual_province = excluded.actual_province, \
                 actual_city = excluded.actual_city, egress_ip = excluded.egress_ip, \
                 first_hop_ip = excluded.first_hop_ip, verdict = excluded.verdict, \
                 verdict_id = excluded.verdict_id, observation_id = excluded.observation_id, \
                 reports = excluded.reports, first_seen = excluded.first_seen, \
                 last_seen = excluded.last_seen, current_from = excluded.current_from, \
                 updated_at = excluded.updated_at, low_trust = excluded.low_trust"
            ),
            "{upsert}"
        );
        assert!(upsert.contains("$20)"), "{upsert}");
    }

    #[test]
    fn rows_have_one_cell_per_column() {
        let h = history();
        assert_eq!(h.cells().len(), HistoryEntry::COLUMNS.len());
        assert_eq!(h.cells()[3], Cell::OptText(Some("china_mobile")));
        let line = LineRow {
            line_key: "acct:1".to_owned(),
            account: "1".to_owned(),
            install_id: "I".to_owned(),
            declared_province: None,
            declared_city: None,
            declared_carrier: None,
            actual_carrier: None,
            actual_province: None,
            actual_city: None,
            egress_ip: "192.0.2.1".to_owned(),
            first_hop_ip: None,
            verdict: "compliant".to_owned(),
            verdict_id: 1,
            low_trust: false,
            observation_id: 2,
            reports: u64::MAX,
            first_seen_ms: 3,
            last_seen_ms: 4,
            current_from_ms: 5,
            updated_at_ms: 6,
        };
        assert_eq!(line.cells().len(), LineRow::COLUMNS.len());
        // A count past what the column holds is written as its largest value.
        assert_eq!(line.cells()[14], Cell::Int8(i64::MAX));
        // Column-wise, each cell lands in an array of its declared type
        // (`columns` refuses a cell of another type).
        let by_column = columns(std::slice::from_ref(&line));
        assert_eq!(by_column.len(), LineRow::COLUMNS.len());
        assert_eq!(by_column[14], ColumnValues::Int8(vec![Some(i64::MAX)]));
        assert_eq!(by_column[19], ColumnValues::Bool(vec![false]));
        assert_eq!(columns(&[h, history()])[3], {
            ColumnValues::Text(vec![Some("china_mobile"), Some("china_mobile")])
        });
        assert_eq!(columns::<LineRow>(&[])[0], ColumnValues::Text(Vec::new()));
    }

    #[test]
    fn every_table_declares_the_types_of_its_cells() {
        let text = || "x".to_owned();
        let observation = ObservationState {
            id: 1,
            facts: crate::ObservationFacts {
                obs_key: text(),
                line_key: text(),
                install_id: text(),
                account: text(),
                declared_province: None,
                declared_city: Some(text()),
                declared_carrier: None,
                egress_ip: text(),
                first_hop_ip: None,
                path_json: text(),
                engine: text(),
                agent_version: text(),
                os: text(),
            },
            count: 2,
            first_seen: 3,
            last_seen: 4,
            first_report_id: text(),
            last_report_id: text(),
            latest_verdict_id: None,
            latest_verdict_key: Some(text()),
        };
        let (line_key, report_id) = (text(), text());
        let verdict = NewVerdict {
            id: 1,
            line_key: &line_key,
            observation_id: 2,
            report_id: &report_id,
            observed_at_ms: 3,
            record: &crate::VerdictRecord {
                verdict: text(),
                verdict_key: text(),
                reasons_json: text(),
                evidence_json: text(),
                actual_carrier: None,
                actual_province: Some(text()),
                actual_city: None,
                egress_carrier: None,
                first_hop_carrier: None,
                filled_json: text(),
                fills: crate::DeclaredFills::default(),
                data_versions_json: text(),
                trust_score: Some(90),
                low_trust: true,
                decided_at_ms: 4,
            },
        };
        assert_eq!(
            columns(std::slice::from_ref(&observation)).len(),
            ObservationState::COLUMNS.len()
        );
        let by_column = columns(std::slice::from_ref(&verdict));
        assert_eq!(by_column.len(), NewVerdict::COLUMNS.len());
        assert_eq!(by_column[17], ColumnValues::Int2(vec![Some(90)]));
        assert_eq!(columns(&[history()]).len(), HistoryEntry::COLUMNS.len());
    }

    #[test]
    fn outcomes_carry_their_origin_when_it_was_loaded() {
        use super::super::apply::RawState;
        let raws = [
            RawWrite {
                id: 1,
                state: RawState::Processed,
                observation_id: Some(9),
                was_pending: true,
            },
            RawWrite {
                id: 2,
                state: RawState::Quarantined,
                observation_id: None,
                was_pending: false,
            },
        ];
        let origins = HashMap::from([(
            1,
            RawOrigin {
                collector: "dmz-1".to_owned(),
                received_at: None,
                pulled_at: 5,
            },
        )]);
        let outcomes = OutcomeRow::of(&raws, &origins);
        let by_column = columns(&outcomes);
        assert_eq!(by_column.len(), OutcomeRow::COLUMNS.len());
        assert_eq!(
            by_column[1],
            ColumnValues::Text(vec![Some("processed"), Some("quarantined")])
        );
        assert_eq!(by_column[3], ColumnValues::Text(vec![Some("dmz-1"), None]));
        assert_eq!(by_column[5], ColumnValues::Int8(vec![Some(5), None]));
    }
}
