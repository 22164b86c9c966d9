//! The dashboard: the compliance rate and the lines by verdict, declared
//! carrier and province, the daily trend, and how each collector's pull
//! stands.
//!
//! The figures come from one pass over every current line, which over
//! millions of lines takes longer than a page may. They are kept in memory
//! and recomputed in the background once older than
//! `dashboard_max_age_s`: a page never waits for a recount except the very
//! first after start. The collectors' pull status is read fresh on every
//! page (one small table).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::BackofficeState;
use super::auth::Viewer;
use super::charts::{self, Counts, percent};
use super::layout::{self, VERDICTS, carrier_name, province_name, verdict_badge};
use crate::Error;
use crate::store::Wanted;

/// Days the trend covers.
const TREND_DAYS: i64 = 30;
/// Provinces charted (the rest are in the table).
const CHART_PROVINCES: usize = 20;

/// The dashboard's counted figures.
#[derive(Debug, Clone)]
pub(super) struct Figures {
    /// When they were counted (Unix ms).
    pub(super) computed_at_ms: i64,
    /// How long counting took (ms).
    pub(super) took_ms: i64,
    /// Every line by verdict.
    pub(super) all: Counts,
    /// By declared carrier (`None`: not declared), most lines first.
    pub(super) by_carrier: Vec<(Option<String>, Counts)>,
    /// By declared province, most lines first.
    pub(super) by_province: Vec<(Option<String>, Counts)>,
    /// Per day (days since the epoch at the display offset), oldest first,
    /// every day of the window present.
    pub(super) trend: Vec<(i64, Counts)>,
    /// Reports in quarantine.
    pub(super) quarantined: i64,
    /// Pulled reports not processed yet.
    pub(super) pending: i64,
    /// Every line by declared province, declared and actual carrier and
    /// verdict: the counts of the lines page's filters.
    pub(super) breakdown: Vec<super::BreakdownRow>,
}

impl Figures {
    /// The filter whose index a page of `filter` should walk: the one the
    /// counts say selects the fewest lines (a city always: it is the
    /// narrowest). `None` with fewer than two filters to choose from.
    pub(super) fn lead(&self, filter: &crate::LineFilter) -> Option<super::LineLead> {
        use super::LineLead;
        if filter.city.is_some() {
            return Some(LineLead::City);
        }
        let count = |keep: &dyn Fn(&super::BreakdownRow) -> bool| -> i64 {
            self.breakdown
                .iter()
                .filter(|r| keep(r))
                .map(|r| r.lines)
                .sum()
        };
        let mut options: Vec<(i64, LineLead)> = Vec::new();
        let province = filter.wanted_province();
        if province != Wanted::Any {
            options.push((
                count(&|r| province.keeps(r.province.as_deref())),
                LineLead::Province,
            ));
        }
        let declared = filter.wanted_declared_carrier();
        if declared != Wanted::Any {
            options.push((
                count(&|r| declared.keeps(r.carrier.as_deref())),
                LineLead::DeclaredCarrier,
            ));
        }
        if let Some(a) = &filter.actual_carrier {
            options.push((
                count(&|r| r.actual_carrier.as_ref() == Some(a)),
                LineLead::ActualCarrier,
            ));
        }
        if let (true, Some(a)) = (declared != Wanted::Any, &filter.actual_carrier) {
            options.push((
                count(&|r| {
                    declared.keeps(r.carrier.as_deref()) && r.actual_carrier.as_ref() == Some(a)
                }),
                LineLead::Carriers,
            ));
        }
        if let Some(v) = &filter.verdict {
            options.push((count(&|r| &r.verdict == v), LineLead::Verdict));
        }
        if options.len() < 2 {
            return None;
        }
        options
            .into_iter()
            .min_by_key(|(n, _)| *n)
            .map(|(_, lead)| lead)
    }

    /// How many lines `filter` selected when the figures were counted;
    /// `None` when it filters on what the figures do not split by (city,
    /// trust, dates): the breakdown would count lines the filter leaves
    /// out.
    pub(super) fn count(&self, filter: &crate::LineFilter) -> Option<i64> {
        if filter.city.is_some()
            || filter.low_trust.is_some()
            || filter.seen_since_ms.is_some()
            || filter.seen_until_ms.is_some()
        {
            return None;
        }
        Some(
            self.breakdown
                .iter()
                .filter(|r| {
                    filter.wanted_province().keeps(r.province.as_deref())
                        && filter.wanted_declared_carrier().keeps(r.carrier.as_deref())
                        && Wanted::exact(filter.actual_carrier.as_deref())
                            .keeps(r.actual_carrier.as_deref())
                        && Wanted::exact(filter.verdict.as_deref()).keeps(Some(&r.verdict))
                })
                .map(|r| r.lines)
                .sum(),
        )
    }
}

/// The figures in memory, and the refresh under way.
#[derive(Default)]
pub(super) struct Cache {
    current: Mutex<Option<Arc<Figures>>>,
    refreshing: AtomicBool,
    first: tokio::sync::Mutex<()>,
}

impl BackofficeState {
    /// The figures: the ones in memory (starting a background recount when
    /// they are old), or, the first time, counted now.
    pub(super) async fn figures(&self) -> Result<Arc<Figures>, Error> {
        let cache = &self.inner.dashboard;
        let max_age_ms = i64::try_from(self.config().dashboard_max_age_s).unwrap_or(3600) * 1000;
        if let Some(figures) = cache.current() {
            if self.now_ms() - figures.computed_at_ms >= max_age_ms
                && !cache.refreshing.swap(true, Ordering::AcqRel)
            {
                let state = self.clone();
                tokio::spawn(async move {
                    match count(&state).await {
                        Ok(fresh) => state.inner.dashboard.set(fresh),
                        Err(e) => tracing::warn!(error = %e, "dashboard figures not refreshed"),
                    }
                    state
                        .inner
                        .dashboard
                        .refreshing
                        .store(false, Ordering::Release);
                });
            }
            return Ok(figures);
        }
        let _first = cache.first.lock().await;
        if let Some(figures) = cache.current() {
            return Ok(figures);
        }
        let figures = count(self).await?;
        cache.set(figures);
        cache
            .current()
            .ok_or_else(|| Error::Internal("dashboard figures vanished".to_owned()))
    }
}

impl BackofficeState {
    /// The figures in memory, if any, without waiting: a missing or old
    /// set is counted in the background.
    pub(super) fn figures_if_ready(&self) -> Option<Arc<Figures>> {
        let figures = self.inner.dashboard.current();
        match &figures {
            Some(f) => self.refresh_if_old(f),
            None => self.recount_in_background(),
        }
        figures
    }

    fn refresh_if_old(&self, figures: &Figures) {
        let max_age_ms = i64::try_from(self.config().dashboard_max_age_s).unwrap_or(3600) * 1000;
        if self.now_ms() - figures.computed_at_ms >= max_age_ms {
            self.recount_in_background();
        }
    }

    /// Starts a recount unless one is under way.
    fn recount_in_background(&self) {
        if self.inner.dashboard.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let state = self.clone();
        tokio::spawn(async move {
            match count(&state).await {
                Ok(fresh) => state.inner.dashboard.set(fresh),
                Err(e) => tracing::warn!(error = %e, "dashboard figures not counted"),
            }
            state
                .inner
                .dashboard
                .refreshing
                .store(false, Ordering::Release);
        });
    }
}

impl Cache {
    fn current(&self) -> Option<Arc<Figures>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, figures: Figures) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(figures));
    }
}

/// Counts the figures now.
pub(super) async fn count(state: &BackofficeState) -> Result<Figures, Error> {
    let started = std::time::Instant::now();
    let now = state.now_ms();
    let store = state.store();
    let offset_ms = i64::from(state.config().utc_offset_minutes) * 60_000;
    let today = (now + offset_ms).div_euclid(86_400_000);
    let first_day = today - (TREND_DAYS - 1);
    let since_ms = first_day * 86_400_000 - offset_ms;
    let (breakdown, trend, quarantined, pending) = tokio::try_join!(
        store.line_breakdown(),
        store.line_trend(since_ms, offset_ms),
        store.quarantine_count(),
        store.pending_count(),
    )?;
    let mut all = Counts::default();
    let mut by_carrier: BTreeMap<Option<String>, Counts> = BTreeMap::new();
    let mut by_province: BTreeMap<Option<String>, Counts> = BTreeMap::new();
    for row in &breakdown {
        all.add(&row.verdict, row.lines);
        by_carrier
            .entry(row.carrier.clone())
            .or_default()
            .add(&row.verdict, row.lines);
        by_province
            .entry(row.province.clone())
            .or_default()
            .add(&row.verdict, row.lines);
    }
    let mut days: BTreeMap<i64, Counts> = (first_day..=today)
        .map(|d| (d, Counts::default()))
        .collect();
    for row in &trend {
        if let Some(c) = days.get_mut(&row.day) {
            c.add(&row.verdict, row.lines);
        }
    }
    let sorted = |map: BTreeMap<Option<String>, Counts>| {
        let mut rows: Vec<_> = map.into_iter().collect();
        rows.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then_with(|| a.0.cmp(&b.0)));
        rows
    };
    Ok(Figures {
        computed_at_ms: now,
        took_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        all,
        by_carrier: sorted(by_carrier),
        by_province: sorted(by_province),
        trend: days.into_iter().collect(),
        quarantined,
        pending,
        breakdown,
    })
}

/// A lines-page link filtered by `key` = `value`; `None`: the lines where
/// it was not declared.
fn lines_link(key: &str, value: Option<&str>) -> String {
    format!(
        "/lines?{}",
        serde_urlencoded::to_string([(key, value.unwrap_or(super::NOT_DECLARED))])
            .unwrap_or_default()
    )
}

/// `GET /`.
pub(super) async fn page(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let (figures, cursors) = match tokio::try_join!(state.figures(), state.store().cursors()) {
        Ok(pair) => pair,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    let catalog = state.catalog();
    let now = state.now_ms();
    let day_label = |day: i64| {
        chrono::DateTime::from_timestamp_millis(day * 86_400_000)
            .map(|t| t.format("%m-%d").to_string())
            .unwrap_or_default()
    };
    let carrier_rows: Vec<(String, String, Counts)> = figures
        .by_carrier
        .iter()
        .map(|(c, counts)| {
            (
                c.as_deref()
                    .map_or_else(|| "(not declared)".to_owned(), |c| carrier_name(catalog, c)),
                lines_link("carrier", c.as_deref()),
                *counts,
            )
        })
        .collect();
    let province_rows: Vec<(String, String, Counts)> = figures
        .by_province
        .iter()
        .map(|(p, counts)| {
            (
                p.as_deref().map_or_else(
                    || "(not declared)".to_owned(),
                    |p| province_name(catalog, p),
                ),
                lines_link("province", p.as_deref()),
                *counts,
            )
        })
        .collect();
    let trend: Vec<(String, Counts)> = figures
        .trend
        .iter()
        .map(|(day, c)| (day_label(*day), *c))
        .collect();
    let body = html! {
        h1 { "Dashboard 总览" }
        div.cards {
            div.card { div.muted { "Lines 线路" } div.big { (figures.all.total()) } }
            div.card { div.muted { "Compliance rate 合规率" } div.big { (percent(figures.all.compliance_rate())) }
                div.muted { "compliant among lines with a determinate verdict" } }
            @for v in VERDICTS {
                div.card { div { (verdict_badge(v)) } div.big { a href=(lines_link("verdict", Some(v))) { (figures.all.get(v)) } } }
            }
            div.card { div.muted { "Quarantined reports 隔离" } div.big { a href="/quarantine" { (figures.quarantined) } } }
            div.card { div.muted { "Reports waiting 待处理" } div.big { (figures.pending) } }
        }
        div.panel {
            (charts::share_bar(&figures.all))
            (charts::legend())
        }
        div.grid2 {
            div.panel {
                h2 { "By declared carrier 按申报运营商" }
                (charts::stacked_bars(&carrier_rows))
            }
            div.panel {
                h2 { "By declared province 按申报省份 (top " (CHART_PROVINCES) ")" }
                (charts::stacked_bars(&province_rows[..province_rows.len().min(CHART_PROVINCES)]))
            }
        }
        div.panel {
            h2 { "Trend: lines by day last seen, last " (TREND_DAYS) " days 趋势" }
            (charts::trend_chart(&trend))
            p.muted { "Bars: lines last seen that day (" (state.offset_label()) "); line: the compliance rate of those lines." }
        }
        (collectors_table(&state, &cursors, now))
        div.grid2 {
            div.panel {
                h2 { "Carriers 运营商" }
                (breakdown_table(&carrier_rows))
            }
            div.panel {
                h2 { "Provinces 省份" }
                (breakdown_table(&province_rows))
            }
        }
        p.muted {
            "Figures as of " (state.time(figures.computed_at_ms)) " (" (state.offset_label()) "), counted in "
            (figures.took_ms) " ms and recounted every " (state.config().dashboard_max_age_s) " s; the pull status is live."
        }
    };
    layout::page_response(StatusCode::OK, "Dashboard", Some(&viewer), "/", &body)
}

/// Each collector's pull: configured ones first, then any other with a
/// cursor.
fn collectors_table(
    state: &BackofficeState,
    cursors: &[crate::PullCursor],
    now: i64,
) -> maud::Markup {
    let mut collectors: Vec<String> = state
        .inner
        .collectors
        .iter()
        .map(|c| c.name.clone())
        .collect();
    for c in cursors {
        if !collectors.contains(&c.collector) {
            collectors.push(c.collector.clone());
        }
    }
    html! {
        div.panel {
        h2 { "Collectors: pull status 采集节点" }
        table {
            thead { tr { th { "Collector" } th { "Node" } th { "Status" } th { "Last successful pull" } th.num { "Lag" } th.num { "Cursor" } th.num { "Acknowledged" } th.num { "Reports pulled" } th { "Last error" } } }
            tbody {
                @for name in &collectors {
                    @let cursor = cursors.iter().find(|c| &c.collector == name);
                    tr {
                        td { (name) }
                        td.mono { (cursor.map_or("—", |c| c.node_id.as_str())) }
                        td {
                            @match cursor {
                                None => span.muted { "never pulled" },
                                Some(c) if c.last_error.is_some() => span.bad { "failing" },
                                Some(c) if c.last_ok_at_ms.is_none() => span.muted { "no success yet" },
                                Some(_) => span.ok { "ok" },
                            }
                        }
                        td { (cursor.and_then(|c| c.last_ok_at_ms).map_or_else(|| "—".to_owned(), |t| state.time(t))) }
                        td.num { (cursor.and_then(|c| c.last_ok_at_ms).map_or_else(|| "—".to_owned(), |t| lag(now - t))) }
                        td.num { (cursor.map_or(0, |c| c.after_seq)) }
                        td.num { (cursor.map_or(0, |c| c.acked_seq)) }
                        td.num { (cursor.map_or(0, |c| c.pulled_total)) }
                        td { (cursor.and_then(|c| c.last_error.as_deref()).unwrap_or("")) }
                    }
                }
            }
        }
        @if collectors.is_empty() { p.muted { "No collector is configured." } }
    }
    }
}

fn breakdown_table(rows: &[(String, String, Counts)]) -> maud::Markup {
    html! {
        table {
            thead { tr { th { "" } th.num { "Lines" } th.num { "Rate" }
                @for v in VERDICTS { th.num { (layout::verdict_style(v).0) } } } }
            tbody {
                @for (label, href, counts) in rows {
                    tr {
                        td { a href=(href) { (label) } }
                        td.num { (counts.total()) }
                        td.num { (percent(counts.compliance_rate())) }
                        @for v in VERDICTS { td.num { (counts.get(v)) } }
                    }
                }
            }
        }
    }
}

/// A duration in ms as `42 s`, `5 min`, `3 h`, `2 d`.
fn lag(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lags_read_naturally() {
        assert_eq!(lag(-5), "0 s");
        assert_eq!(lag(42_000), "42 s");
        assert_eq!(lag(300_000), "5 min");
        assert_eq!(lag(3 * 3_600_000), "3 h");
        assert_eq!(lag(2 * 86_400_000), "2 d");
    }
}
