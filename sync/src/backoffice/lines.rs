//! The lines: current verdicts with filters (province, city, declared and
//! actual carrier, verdict, dates), keyset pages and CSV export.

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use lineprobe_shared::Catalog;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::auth::Viewer;
use super::layout::{
    self, Notice, VERDICTS, carrier_name, city_name, low_trust_badge, or_dash, province_name,
    verdict_badge, verdict_style,
};
use super::lineref::LineRefs;
use super::query::{PageQuery, QueryParams};
use super::{BackofficeState, LineCursor, NOT_DECLARED, header_value, storable};
use crate::spreadsheet::Cell;
use crate::{Error, Filled, LineFilter, LineRow};

/// Lines read per database round trip while exporting.
pub(super) const EXPORT_BATCH: u32 = 2000;

/// The lines page's query string: the filters as the form sends them.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(super) struct LinesQuery {
    #[serde(default, skip_serializing_if = "blank")]
    province: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    city: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    carrier: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    actual: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    verdict: Option<String>,
    /// `low` or `normal`: the trust of the current verdict's source.
    #[serde(default, skip_serializing_if = "blank")]
    trust: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    from: Option<String>,
    #[serde(default, skip_serializing_if = "blank")]
    to: Option<String>,
    /// The keyset cursor: `<last_seen ms>.<line key>` of the line before
    /// the page.
    #[serde(default, skip_serializing_if = "blank")]
    after: Option<String>,
    /// How many lines came before the page (for "lines 51–100").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<u64>,
}

impl QueryParams for LinesQuery {
    const PARAMS: &'static [(&'static str, &'static str)] = &[
        (
            "province",
            "a province of the filter\u{2019}s list, or none",
        ),
        ("city", "a city"),
        (
            "carrier",
            "a declared carrier of the filter\u{2019}s list, or none",
        ),
        ("actual", "an actual carrier of the filter\u{2019}s list"),
        ("verdict", "a verdict of the filter\u{2019}s list"),
        ("trust", "low or normal"),
        ("from", "a date (YYYY-MM-DD)"),
        ("to", "a date (YYYY-MM-DD)"),
        (
            "after",
            "a page position, as the \u{201c}Next page\u{201d} link gives it",
        ),
        (
            "n",
            "how many lines came before the page (a whole number, 0 or more), as the \u{201c}Next page\u{201d} link gives it",
        ),
    ];
}

#[allow(
    clippy::ref_option,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn blank(value: &Option<String>) -> bool {
    value.as_deref().is_none_or(|v| v.trim().is_empty())
}

fn set(value: Option<&String>) -> Option<&str> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty())
}

impl LinesQuery {
    /// The same filters without paging, as a query string.
    fn filters_only(&self) -> String {
        let mut q = self.clone();
        q.after = None;
        q.n = None;
        serde_urlencoded::to_string(&q).unwrap_or_default()
    }

    /// The filter these parameters select, and a message for each value
    /// that was not understood (and not applied).
    fn filter(&self, state: &BackofficeState, limit: u32) -> (LineFilter, Vec<String>) {
        let catalog = state.catalog();
        let mut problems = Vec::new();
        let mut filter = LineFilter {
            limit,
            ..LineFilter::default()
        };
        if set(self.province.as_ref()) == Some(NOT_DECLARED) {
            filter.province_not_declared = true;
        } else if let Some(p) = set(self.province.as_ref()) {
            match catalog.province(p) {
                Some(p) => filter.province = Some(p.id.as_str().to_owned()),
                None => problems.push(format!("{p:?} is not a province")),
            }
        }
        if let Some(c) = set(self.city.as_ref()).filter(|c| !storable(c)) {
            problems.push(format!("{c:?} is not a city"));
        } else if let Some(c) = set(self.city.as_ref()) {
            let province = filter
                .province
                .as_deref()
                .and_then(|p| lineprobe_shared::ProvinceCode::new(p).ok());
            filter.city = Some(
                catalog
                    .city(province.as_ref(), c)
                    .and_then(|c| c.code.as_ref().map(|code| code.as_str().to_owned()))
                    .unwrap_or_else(|| c.to_owned()),
            );
        }
        let carrier = set(self.carrier.as_ref());
        filter.carrier_not_declared = carrier == Some(NOT_DECLARED);
        for (value, slot, what) in [
            (
                carrier.filter(|c| *c != NOT_DECLARED),
                &mut filter.declared_carrier,
                "declared carrier",
            ),
            (
                set(self.actual.as_ref()),
                &mut filter.actual_carrier,
                "actual carrier",
            ),
        ] {
            if let Some(value) = value {
                match catalog.carrier(value) {
                    Some(c) => *slot = Some(c.id.as_str().to_owned()),
                    None => problems.push(format!("{value:?} is not a {what}")),
                }
            }
        }
        if let Some(v) = set(self.verdict.as_ref()) {
            if VERDICTS.contains(&v) {
                filter.verdict = Some(v.to_owned());
            } else {
                problems.push(format!("{v:?} is not a verdict"));
            }
        }
        match set(self.trust.as_ref()) {
            None => {}
            Some("low") => filter.low_trust = Some(true),
            Some("normal") => filter.low_trust = Some(false),
            Some(t) => problems.push(format!("{t:?} is not a trust level (low or normal)")),
        }
        let offset_ms = i64::from(state.config().utc_offset_minutes) * 60_000;
        let day_start = |text: &str| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp_millis() - offset_ms)
        };
        if let Some(from) = set(self.from.as_ref()) {
            match day_start(from) {
                Some(ms) => filter.seen_since_ms = Some(ms),
                None => problems.push(format!("{from:?} is not a date (YYYY-MM-DD)")),
            }
        }
        if let Some(to) = set(self.to.as_ref()) {
            match day_start(to) {
                Some(ms) => filter.seen_until_ms = Some(ms + 86_400_000 - 1),
                None => problems.push(format!("{to:?} is not a date (YYYY-MM-DD)")),
            }
        }
        (filter, problems)
    }

    /// The keyset cursor, if any; a message when `after` is set but not
    /// understood (the page then starts at the first line).
    fn cursor(&self, refs: &LineRefs) -> Result<Option<LineCursor>, String> {
        let Some(after) = set(self.after.as_ref()) else {
            return Ok(None);
        };
        after
            .split_once('.')
            .and_then(|(ms, line)| Some((ms, refs.read(line).key()?)))
            .filter(|(_, key)| storable(key))
            .and_then(|(ms, key)| {
                Some(LineCursor {
                    last_seen_ms: ms.parse().ok()?,
                    line_key: key,
                })
            })
            .map(Some)
            .ok_or_else(|| format!("{after:?} is not a page position; showing the first page"))
    }
}

/// The codes of the findings that decided a verdict, from its stored
/// reasons (the `verdicts` command's rule, [`crate::verdicts::deciding`]).
pub(super) fn deciding_reasons(verdict: &str, reasons_json: &str) -> Vec<String> {
    let findings: Vec<serde_json::Value> = serde_json::from_str(reasons_json).unwrap_or_default();
    let field = |f: &serde_json::Value, k: &str| -> String {
        f.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let read: Vec<(String, String)> = findings
        .iter()
        .map(|f| (field(f, "code"), field(f, "outcome")))
        .collect();
    crate::verdicts::deciding(verdict, &read, |(code, outcome)| (code, outcome))
        .into_iter()
        .map(|(code, _)| code.clone())
        .collect()
}

/// What the list shows of a line's current verdict beyond its row: the
/// deciding reasons, and which declared attributes were filled from the
/// actual ones (not declared by the subscriber).
#[derive(Debug, Default)]
struct LineNotes {
    reasons: Vec<String>,
    filled: Vec<String>,
}

impl LineNotes {
    fn filled(&self, attribute: &str) -> bool {
        self.filled.iter().any(|f| f == attribute)
    }
}

async fn notes_of(state: &BackofficeState, rows: &[LineRow]) -> Result<Vec<LineNotes>, Error> {
    let ids: Vec<i64> = rows.iter().map(|r| r.verdict_id).collect();
    let found: std::collections::HashMap<i64, (String, String)> = state
        .store()
        .verdict_reasons(&ids)
        .await?
        .into_iter()
        .map(|(id, reasons, filled)| (id, (reasons, filled)))
        .collect();
    Ok(rows
        .iter()
        .map(|r| {
            found
                .get(&r.verdict_id)
                .map(|(reasons, filled)| LineNotes {
                    reasons: deciding_reasons(&r.verdict, reasons),
                    filled: Filled::attributes_in(filled),
                })
                .unwrap_or_default()
        })
        .collect())
}

/// The link to a line's case view: the line named by its reference, not
/// its key (see `lineref`).
pub(super) fn case_link(refs: &LineRefs, line_key: &str) -> String {
    format!("/case?line={}", refs.encode(line_key))
}

/// `GET /lines`.
pub(super) async fn page(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
    PageQuery(query): PageQuery<LinesQuery>,
) -> Response {
    let (filter, problems) = query.filter(&state, state.config().page_size);
    let refs = match state.line_refs().await {
        Ok(refs) => refs,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    let (cursor, cursor_problem) = match query.cursor(refs) {
        Ok(cursor) => (cursor, None),
        Err(problem) => (None, Some(problem)),
    };
    let store = state.store();
    // The dashboard's counts give the total (counting a filter's matches
    // among a million lines costs more than the page) and tell which
    // filter's index to walk.
    let figures = state.figures_if_ready();
    let lead = figures.as_ref().and_then(|f| f.lead(&filter));
    let rows = match store.line_page(&filter, cursor.as_ref(), lead).await {
        Ok(rows) => rows,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    let count = figures
        .as_ref()
        .and_then(|f| Some((f.count(&filter)?, f.computed_at_ms)));
    let notes = match notes_of(&state, &rows).await {
        Ok(notes) => notes,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    // `n` comes from the query string: whatever it says, the page counts
    // on from it without overflowing (the numbers shown are only wrong for
    // whoever wrote them).
    // Without a cursor the page is the first, whatever `n` says.
    let start = if cursor.is_some() {
        query.n.unwrap_or(0)
    } else {
        0
    };
    let shown = rows.len() as u64;
    let (first_shown, last_shown) = (start.saturating_add(1), start.saturating_add(shown));
    let next = (rows.len() == filter.limit as usize)
        .then(|| rows.last())
        .flatten()
        .map(|last| {
            let mut q = query.clone();
            q.after = Some(format!(
                "{}.{}",
                last.last_seen_ms,
                refs.encode(&last.line_key)
            ));
            q.n = Some(last_shown);
            format!(
                "/lines?{}",
                serde_urlencoded::to_string(&q).unwrap_or_default()
            )
        });
    let filters = query.filters_only();
    let count_text = match count {
        Some((n, at)) => format!("{n} lines matched at {}", state.time(at)),
        None if cursor.is_none() && next.is_none() => format!("{shown} lines match"),
        None => "Lines".to_owned(),
    };
    let catalog = state.catalog();
    let body = html! {
        h1 { "Lines 线路" }
        (filter_form(&state, &query))
        @for p in &problems { (Notice::error(&format!("{p}; that filter is not applied."))) }
        @if let Some(p) = &cursor_problem { (Notice::error(&format!("{p}."))) }
        div.pager {
            span { (count_text) @if shown > 0 { "; showing " (first_shown) "–" (last_shown) } "." }
            a.button.secondary href={"/lines/export.csv?" (filters)} { "Export CSV" }
            a.button.secondary href={"/lines/export.xlsx?" (filters)} { "Export Excel" }
        }
        div.panel {
            table {
                thead { tr {
                    th { "Line" } th { "Verdict" } th { "Declared 申报" } th { "Actual 实际" } th { "First public hop" }
                    th { "Egress" } th.num { "Reports" } th { "Last seen" } th { "Reasons" }
                } }
                tbody {
                    @for (row, notes) in rows.iter().zip(&notes) {
                        tr {
                            td { a href=(case_link(refs, &row.line_key)) { (row.line_key) } }
                            td { (verdict_badge(&row.verdict)) @if row.low_trust { (low_trust_badge()) } }
                            td { (declared_place(catalog, row, notes)) }
                            td { (place(catalog, row.actual_carrier.as_deref(), row.actual_province.as_deref(), row.actual_city.as_deref())) }
                            td.mono { (row.first_hop_ip.as_deref().unwrap_or("—")) }
                            td.mono { (row.egress_ip) }
                            td.num { (row.reports) }
                            td.mono { (state.time(row.last_seen_ms)) }
                            td.mono { (notes.reasons.join(", ")) }
                        }
                    }
                }
            }
            @if rows.is_empty() { p.muted { "No line matches." } }
            @if notes.iter().any(|n| !n.filled.is_empty()) {
                p.muted { (FILLED_MARK) " not declared: filled from the actual value (the IP check passed) 未申报，按实际值补全" }
            }
        }
        div.pager {
            @if cursor.is_some() { a href={"/lines?" (filters)} { "← First page" } }
            @if let Some(next) = next { a href=(next) { "Next page →" } }
        }
    };
    layout::page_response(StatusCode::OK, "Lines", Some(&viewer), "/lines", &body)
}

/// Carrier, province and city in one cell.
pub(super) fn place(
    catalog: &Catalog,
    carrier: Option<&str>,
    province: Option<&str>,
    city: Option<&str>,
) -> Markup {
    html! {
        (or_dash(carrier, |c| carrier_name(catalog, c))) " · "
        (or_dash(province, |p| province_name(catalog, p))) " · "
        (or_dash(city, |c| city_name(catalog, c)))
    }
}

/// The mark of a declared value that was filled from the actual one.
const FILLED_MARK: &str = "*";

/// The declared carrier, province and city in one cell, each value that
/// the subscriber did not declare (filled from the actual one) marked.
fn declared_place(catalog: &Catalog, row: &LineRow, notes: &LineNotes) -> Markup {
    let value = |attribute: &str, v: Option<&str>, name: fn(&Catalog, &str) -> String| {
        html! {
            (or_dash(v, |v| name(catalog, v)))
            @if notes.filled(attribute) {
                sup.filled title="not declared: filled from the actual value" { (FILLED_MARK) }
            }
        }
    };
    html! {
        (value("carrier", row.declared_carrier.as_deref(), carrier_name)) " · "
        (value("province", row.declared_province.as_deref(), province_name)) " · "
        (value("city", row.declared_city.as_deref(), city_name))
    }
}

fn filter_form(state: &BackofficeState, query: &LinesQuery) -> Markup {
    let catalog = state.catalog();
    let chosen = |v: &Option<String>, id: &str| v.as_deref() == Some(id);
    html! {
        form.filters method="get" action="/lines" {
            label { "Province 省份"
                select name="province" {
                    option value="" { "any" }
                    option value=(NOT_DECLARED) selected[chosen(&query.province, NOT_DECLARED)] { "(not declared) 未申报" }
                    @for p in catalog.provinces() {
                        option value=(p.id.as_str()) selected[chosen(&query.province, p.id.as_str())] { (p.name_zh) }
                    }
                }
            }
            label { "City 城市" input type="text" name="city" value=(query.city.as_deref().unwrap_or("")) placeholder="name or code"; }
            label { "Declared carrier 申报运营商"
                select name="carrier" {
                    option value="" { "any" }
                    option value=(NOT_DECLARED) selected[chosen(&query.carrier, NOT_DECLARED)] { "(not declared) 未申报" }
                    @for c in catalog.carriers().iter().filter(|c| c.is_declarable()) {
                        option value=(c.id.as_str()) selected[chosen(&query.carrier, c.id.as_str())] { (c.name_zh) }
                    }
                }
            }
            label { "Actual carrier 实际运营商"
                select name="actual" {
                    option value="" { "any" }
                    @for c in catalog.carriers() {
                        option value=(c.id.as_str()) selected[chosen(&query.actual, c.id.as_str())] { (c.name_zh) }
                    }
                }
            }
            label { "Verdict 结论"
                select name="verdict" {
                    option value="" { "any" }
                    @for v in VERDICTS {
                        option value=(v) selected[chosen(&query.verdict, v)] { (verdict_style(v).0) " " (verdict_style(v).1) }
                    }
                }
            }
            label { "Source trust 来源可信度"
                select name="trust" {
                    option value="" { "any" }
                    option value="low" selected[chosen(&query.trust, "low")] { "low trust only 仅低可信" }
                    option value="normal" selected[chosen(&query.trust, "normal")] { "trusted only 仅可信" }
                }
            }
            label { "Seen from 起" input type="date" name="from" value=(query.from.as_deref().unwrap_or("")); }
            label { "Seen until 止" input type="date" name="to" value=(query.to.as_deref().unwrap_or("")); }
            button type="submit" { "Filter" }
            a href="/lines" { "Clear" }
        }
    }
}

/// The columns of a lines export, CSV or Excel.
pub(super) const EXPORT_HEADER: [&str; 24] = [
    "line",
    "account",
    "install_id",
    "verdict",
    "declared_province",
    "declared_province_name",
    "declared_city",
    "declared_city_name",
    "declared_carrier",
    "declared_carrier_name",
    "actual_carrier",
    "actual_carrier_name",
    "actual_province",
    "actual_province_name",
    "actual_city",
    "actual_city_name",
    "first_hop_ip",
    "egress_ip",
    "reports",
    "first_seen",
    "last_seen",
    "reasons",
    "low_trust",
    "filled",
];

/// The sentence that ends an export cut at `max` lines.
pub(super) fn cut_note(max: u32) -> String {
    format!(
        "# export cut at {max} lines (export_max_rows): more lines match; narrow the filters \
         or raise backoffice.export_max_rows 导出已截断"
    )
}

/// The last row of a CSV export cut at `max` lines: the sentence in the
/// first column, the others empty, so that the file stays rectangular.
fn cut_row(max: u32) -> Result<Vec<u8>, csv::Error> {
    let mut row = vec![String::new(); EXPORT_HEADER.len()];
    row[0] = cut_note(max);
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&row)?;
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// CSV rows of `rows`, the header first when `header`.
fn csv_chunk(rows: &[Vec<Cell>], header: bool) -> Result<Vec<u8>, csv::Error> {
    let mut out = Vec::with_capacity(rows.len() * 300 + 400);
    if header {
        // Spreadsheets read UTF-8 CSV with Chinese text right only with a BOM.
        out.extend_from_slice("\u{feff}".as_bytes());
    }
    let mut w = csv::Writer::from_writer(out);
    if header {
        w.write_record(EXPORT_HEADER)?;
    }
    for row in rows {
        w.write_record(row.iter().map(Cell::csv))?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// A line's cells in an export, in the order of [`EXPORT_HEADER`].
fn export_cells(state: &BackofficeState, r: &LineRow, notes: &LineNotes) -> Vec<Cell> {
    let catalog = state.catalog();
    let text = |v: &str| Cell::Text(v.to_owned());
    let opt = |v: Option<&str>| text(v.unwrap_or_default());
    let named = |v: Option<&str>, f: &dyn Fn(&str) -> String| {
        v.map_or_else(|| text(""), |v| Cell::Text(f(v)))
    };
    let time = |ms: i64| {
        Cell::Time(
            chrono::DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&state.offset())),
        )
    };
    vec![
        text(&r.line_key),
        text(&r.account),
        text(&r.install_id),
        text(&r.verdict),
        opt(r.declared_province.as_deref()),
        named(r.declared_province.as_deref(), &|p| {
            province_name(catalog, p)
        }),
        opt(r.declared_city.as_deref()),
        named(r.declared_city.as_deref(), &|c| city_name(catalog, c)),
        opt(r.declared_carrier.as_deref()),
        named(r.declared_carrier.as_deref(), &|c| carrier_name(catalog, c)),
        opt(r.actual_carrier.as_deref()),
        named(r.actual_carrier.as_deref(), &|c| carrier_name(catalog, c)),
        opt(r.actual_province.as_deref()),
        named(r.actual_province.as_deref(), &|p| province_name(catalog, p)),
        opt(r.actual_city.as_deref()),
        named(r.actual_city.as_deref(), &|c| city_name(catalog, c)),
        opt(r.first_hop_ip.as_deref()),
        text(&r.egress_ip),
        Cell::Int(i128::from(r.reports)),
        time(r.first_seen_ms),
        time(r.last_seen_ms),
        text(&notes.reasons.join(" ")),
        Cell::Bool(r.low_trust),
        // The declared attributes the subscriber left out, filled from
        // the actual ones: their declared_* cells are not declarations.
        text(&notes.filled.join(" ")),
    ]
}

/// Where an export stands.
pub(super) struct Export {
    state: BackofficeState,
    filter: LineFilter,
    lead: Option<super::LineLead>,
    cursor: Option<LineCursor>,
    left: u64,
    done: bool,
}

/// What the next read of an export gives.
pub(super) enum Page {
    /// The next lines' cells (none when no line matches).
    Rows(Vec<Vec<Cell>>),
    /// The row limit is reached and more lines match: the export is cut.
    Cut,
    /// Every line matching is exported.
    End,
}

/// The filters of an export asked for by `query`, checked, and its row
/// limit; or the page refusing it.
pub(super) fn export_filter(
    state: &BackofficeState,
    viewer: &Viewer,
    query: &LinesQuery,
    max_rows: u32,
) -> Result<Export, Box<Response>> {
    let (mut filter, problems) = query.filter(state, EXPORT_BATCH);
    if !problems.is_empty() {
        return Err(Box::new(layout::error_page(
            StatusCode::BAD_REQUEST,
            Some(viewer),
            "Export refused",
            &format!("{}; fix the filters and export again.", problems.join("; ")),
        )));
    }
    filter.limit = EXPORT_BATCH.min(max_rows);
    let lead = state.figures_if_ready().and_then(|f| f.lead(&filter));
    Ok(Export {
        state: state.clone(),
        filter,
        lead,
        cursor: None,
        left: u64::from(max_rows),
        done: false,
    })
}

impl Export {
    /// Reads the next lines of the export.
    pub(super) async fn next_page(&mut self) -> Result<Page, Error> {
        if self.done {
            return Ok(Page::End);
        }
        let limit = u32::try_from(self.left.min(u64::from(EXPORT_BATCH))).unwrap_or(EXPORT_BATCH);
        if limit == 0 {
            self.done = true;
            // At the row limit with lines left over: say so in the file
            // itself, or a cut export reads as every line the filters select.
            self.filter.limit = 1;
            let more = self
                .state
                .store()
                .line_page(&self.filter, self.cursor.as_ref(), self.lead)
                .await?;
            return Ok(if more.is_empty() {
                Page::End
            } else {
                Page::Cut
            });
        }
        self.filter.limit = limit;
        let rows = self
            .state
            .store()
            .line_page(&self.filter, self.cursor.as_ref(), self.lead)
            .await?;
        let notes = notes_of(&self.state, &rows).await?;
        self.left -= rows.len() as u64;
        if rows.len() < limit as usize {
            self.done = true;
        }
        self.cursor = rows.last().map(|r| LineCursor {
            last_seen_ms: r.last_seen_ms,
            line_key: r.line_key.clone(),
        });
        Ok(Page::Rows(
            rows.iter()
                .zip(&notes)
                .map(|(r, n)| export_cells(&self.state, r, n))
                .collect(),
        ))
    }
}

/// The audit record of an export (`action`: `export_csv`, `export_xlsx`).
pub(super) async fn audit_export(
    state: &BackofficeState,
    viewer: &Viewer,
    action: &str,
    query: &LinesQuery,
    max_rows: u32,
) {
    state
        .audit(
            &viewer.name,
            action,
            &viewer.ip,
            serde_json::json!({
                "what": "lines",
                "filters": serde_json::to_value(query).unwrap_or_default(),
                "max_rows": max_rows,
            }),
        )
        .await;
}

/// `attachment; filename="lineprobe-lines-{now}.{extension}"`.
pub(super) fn export_file_name(state: &BackofficeState, extension: &str) -> String {
    format!(
        "attachment; filename=\"lineprobe-lines-{}.{extension}\"",
        chrono::DateTime::from_timestamp_millis(state.now_ms())
            .map(|t| t
                .with_timezone(&state.offset())
                .format("%Y%m%d-%H%M%S")
                .to_string())
            .unwrap_or_default()
    )
}

/// `GET /lines/export.csv`: every line the filters select (up to
/// `export_max_rows`), streamed; written to the audit log.
pub(super) async fn export_csv(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
    method: Method,
    PageQuery(query): PageQuery<LinesQuery>,
) -> Response {
    let max = state.config().export_max_rows;
    let export = match export_filter(&state, &viewer, &query, max) {
        Ok(export) => export,
        Err(refused) => return *refused,
    };
    let content_type = header_value("text/csv; charset=utf-8");
    // axum answers HEAD with the GET handler: a HEAD (a link checker, a
    // download manager probing the size) must neither run the export nor
    // be audited as one.
    if method == Method::HEAD {
        return ([(header::CONTENT_TYPE, content_type)], Body::empty()).into_response();
    }
    audit_export(&state, &viewer, "export_csv", &query, max).await;
    let stream = futures_util::stream::unfold((export, true), |(mut ex, first)| async move {
        if ex.done && !first {
            return None;
        }
        let chunk = next_chunk(&mut ex, first).await;
        if chunk.is_err() {
            ex.done = true;
        }
        Some((chunk, (ex, false)))
    });
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_DISPOSITION,
                header_value(&export_file_name(&state, "csv")),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The next piece of a CSV export, the header with the first.
async fn next_chunk(ex: &mut Export, first: bool) -> Result<Bytes, std::io::Error> {
    let fail = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "CSV export failed midway");
        std::io::Error::other(e.to_string())
    };
    let chunk = match ex.next_page().await.map_err(|e| fail(&e))? {
        Page::Rows(rows) => csv_chunk(&rows, first),
        Page::Cut => cut_row(ex.state.config().export_max_rows),
        Page::End if first => csv_chunk(&[], true),
        Page::End => Ok(Vec::new()),
    };
    chunk.map(Bytes::from).map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_follow_the_verdict() {
        let json = r#"[{"code":"carrier_match","outcome":"pass"},{"code":"province_mismatch","outcome":"fail"},{"code":"egress_anonymous","outcome":"unknown"}]"#;
        assert_eq!(
            deciding_reasons("violating_ip", json),
            ["province_mismatch"]
        );
        let compliant = r#"[{"code":"carrier_match","outcome":"pass"},{"code":"multi_level_path","outcome":"pass"}]"#;
        assert_eq!(deciding_reasons("compliant", compliant), ["carrier_match"]);
        assert!(deciding_reasons("compliant", "not json").is_empty());
        // A weak signal the verdict overruled decided nothing: it hid the
        // checks that held, or stood beside the one that failed.
        let overruled = r#"[{"code":"carrier_match","outcome":"pass"},{"code":"device_proxy","outcome":"signal"}]"#;
        assert_eq!(deciding_reasons("compliant", overruled), ["carrier_match"]);
        let beside = r#"[{"code":"device_proxy","outcome":"signal"},{"code":"carrier_mismatch","outcome":"fail"}]"#;
        assert_eq!(
            deciding_reasons("non_compliant", beside),
            ["carrier_mismatch"]
        );
        assert_eq!(
            deciding_reasons("proxy_suspected", beside),
            ["device_proxy", "carrier_mismatch"]
        );
    }

    #[test]
    fn cursors_round_trip_through_the_query() {
        let refs = LineRefs::new(&[3; 32]).unwrap();
        let q = LinesQuery {
            after: Some(format!("1700000000000.{}", refs.encode("account:a.b"))),
            ..LinesQuery::default()
        };
        let c = q.cursor(&refs).unwrap().unwrap();
        assert_eq!(c.last_seen_ms, 1_700_000_000_000);
        assert_eq!(c.line_key, "account:a.b");
        // A cursor written with the key itself (a link from before
        // references) still reads.
        let raw = LinesQuery {
            after: Some("1700000000000.account:a.b".to_owned()),
            ..LinesQuery::default()
        };
        assert_eq!(raw.cursor(&refs).unwrap().unwrap().line_key, "account:a.b");
        let bad = LinesQuery {
            after: Some("x.y".to_owned()),
            ..LinesQuery::default()
        };
        assert!(bad.cursor(&refs).is_err());
        let nul = LinesQuery {
            after: Some("1700000000000.account:\0".to_owned()),
            ..LinesQuery::default()
        };
        assert!(nul.cursor(&refs).is_err());
        assert_eq!(LinesQuery::default().cursor(&refs), Ok(None));
    }
}
