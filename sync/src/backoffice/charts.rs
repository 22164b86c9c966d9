//! Inline SVG charts: no script, no external file, and they print.

use maud::{Markup, html};

use super::layout::{VERDICTS, verdict_style};

/// Lines per verdict, in [`VERDICTS`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts(pub(super) [i64; 5]);

impl Counts {
    /// Adds `lines` to `verdict` (an unknown verdict counts as
    /// indeterminate).
    pub(super) fn add(&mut self, verdict: &str, lines: i64) {
        let i = VERDICTS
            .iter()
            .position(|v| *v == verdict)
            .unwrap_or(VERDICTS.len() - 1);
        self.0[i] += lines;
    }

    /// The lines with `verdict`.
    pub(super) fn get(&self, verdict: &str) -> i64 {
        VERDICTS
            .iter()
            .position(|v| *v == verdict)
            .map_or(0, |i| self.0[i])
    }

    /// Every line.
    pub(super) fn total(&self) -> i64 {
        self.0.iter().sum()
    }

    /// Compliant lines among those with a determinate verdict, as a
    /// fraction; `None` when no line has one.
    pub(super) fn compliance_rate(&self) -> Option<f64> {
        let determinate = self.total() - self.get("indeterminate");
        (determinate > 0).then(|| as_f64(self.get("compliant")) / as_f64(determinate))
    }
}

/// Counts become chart coordinates; a few ulps do not matter on a chart.
#[allow(clippy::cast_precision_loss, reason = "chart geometry")]
pub(super) fn as_f64(n: i64) -> f64 {
    n as f64
}

/// A rate as `97.3 %`, or a dash.
pub(super) fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "—".to_owned(), |r| format!("{:.1} %", r * 100.0))
}

/// The verdict colours, named.
pub(super) fn legend() -> Markup {
    html! {
        p.legend {
            @for v in VERDICTS {
                @let (zh, en, _) = verdict_style(v);
                span { i class={"lg-" (v)} {} (zh) " " (en) }
            }
        }
    }
}

/// One bar, 100 % wide, split by verdict.
pub(super) fn share_bar(counts: &Counts) -> Markup {
    let total = counts.total().max(1);
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1000 28" width="100%" height="28" preserveAspectRatio="none" role="img" aria-label="lines by verdict" {
            @for (i, (v, x, w)) in segments(counts, total, 0.0, 1000.0).into_iter().enumerate() {
                @let (zh, en, colour) = verdict_style(v);
                rect x=(fmt(x)) y="0" width=(fmt(w)) height="28" fill=(colour) {
                    title { (zh) " " (en) ": " (counts.0[i]) }
                }
            }
        }
    }
}

/// Each verdict's `(verdict, x, width)` in a bar starting at `start`,
/// `scale` wide for `full` lines.
fn segments(counts: &Counts, full: i64, start: f64, scale: f64) -> Vec<(&'static str, f64, f64)> {
    let mut x = start;
    VERDICTS
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let w = as_f64(counts.0[i]) / as_f64(full.max(1)) * scale;
            let segment = (*v, x, w);
            x += w;
            segment
        })
        .collect()
}

/// Horizontal stacked bars, one per row, scaled to the largest row; each
/// row's label links to `href`.
pub(super) fn stacked_bars(rows: &[(String, String, Counts)]) -> Markup {
    // Sized for a half-width panel, so that text is drawn near 1:1.
    const LABEL: f64 = 110.0;
    const BAR: f64 = 390.0;
    const ROW: f64 = 22.0;
    let max = rows.iter().map(|r| r.2.total()).max().unwrap_or(1).max(1);
    let height = ROW * as_f64(i64::try_from(rows.len()).unwrap_or(0)) + 4.0;
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox={"0 0 600 " (fmt(height))} width="100%" role="img" aria-label="lines by verdict per row" {
            @for (row, (label, href, counts)) in rows.iter().enumerate() {
                @let y = ROW * as_f64(i64::try_from(row).unwrap_or(0));
                a href=(href) {
                    text x=(fmt(LABEL - 6.0)) y=(fmt(y + 16.0)) text-anchor="end" font-size="13" fill="#1d2330" { (label) }
                }
                @let parts = segments(counts, max, LABEL, BAR);
                @for (i, (v, x, w)) in parts.iter().enumerate() {
                    @let (zh, en, colour) = verdict_style(v);
                    @if counts.0[i] > 0 {
                        rect x=(fmt(*x)) y=(fmt(y + 3.0)) width=(fmt(w.max(0.5))) height=(fmt(ROW - 6.0)) fill=(colour) {
                            title { (label) " — " (zh) " " (en) ": " (counts.0[i]) }
                        }
                    }
                }
                @let end = parts.last().map_or(LABEL, |(_, x, w)| x + w);
                text x=(fmt(end + 6.0)) y=(fmt(y + 16.0)) font-size="12" fill="#5f6b7a" {
                    (counts.total()) " · " (percent(counts.compliance_rate()))
                }
            }
        }
    }
}

/// Lines per day (bars) and the day's compliance rate (line, right axis).
pub(super) fn trend_chart(days: &[(String, Counts)]) -> Markup {
    const LEFT: f64 = 50.0;
    const WIDTH: f64 = 860.0;
    const TOP: f64 = 10.0;
    const HEIGHT: f64 = 180.0;
    let n = as_f64(i64::try_from(days.len()).unwrap_or(0)).max(1.0);
    let step = WIDTH / n;
    let max = days.iter().map(|d| d.1.total()).max().unwrap_or(1).max(1);
    let points: Vec<String> = days
        .iter()
        .enumerate()
        .filter_map(|(i, (_, c))| {
            c.compliance_rate().map(|r| {
                let x = LEFT + step * (as_f64(i64::try_from(i).unwrap_or(0)) + 0.5);
                let y = TOP + HEIGHT * (1.0 - r);
                format!("{},{}", fmt(x), fmt(y))
            })
        })
        .collect();
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox="0 0 960 230" width="100%" role="img" aria-label="lines and compliance rate per day" {
            line x1=(fmt(LEFT)) y1=(fmt(TOP + HEIGHT)) x2=(fmt(LEFT + WIDTH)) y2=(fmt(TOP + HEIGHT)) stroke="#b8c1cc" {}
            text x=(fmt(LEFT - 6.0)) y=(fmt(TOP + 10.0)) text-anchor="end" font-size="11" fill="#5f6b7a" { (max) }
            text x=(fmt(LEFT - 6.0)) y=(fmt(TOP + HEIGHT)) text-anchor="end" font-size="11" fill="#5f6b7a" { "0" }
            text x=(fmt(LEFT + WIDTH + 4.0)) y=(fmt(TOP + 10.0)) font-size="11" fill="#2e7d32" { "100%" }
            text x=(fmt(LEFT + WIDTH + 4.0)) y=(fmt(TOP + HEIGHT)) font-size="11" fill="#2e7d32" { "0%" }
            @for (i, (label, counts)) in days.iter().enumerate() {
                @let x = LEFT + step * as_f64(i64::try_from(i).unwrap_or(0));
                @let h = as_f64(counts.total()) / as_f64(max) * HEIGHT;
                rect x=(fmt(x + step * 0.15)) y=(fmt(TOP + HEIGHT - h)) width=(fmt(step * 0.7)) height=(fmt(h)) fill="#c9d6e6" {
                    title { (label) ": " (counts.total()) " lines, " (percent(counts.compliance_rate())) " compliant" }
                }
                @if i % 5 == 0 || i + 1 == days.len() {
                    text x=(fmt(x + step / 2.0)) y=(fmt(TOP + HEIGHT + 16.0)) text-anchor="middle" font-size="11" fill="#5f6b7a" { (label) }
                }
            }
            @if points.len() > 1 {
                polyline points=(points.join(" ")) fill="none" stroke="#2e7d32" stroke-width="2" {}
            }
            @for p in &points {
                @let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                circle cx=(x) cy=(y) r="2.5" fill="#2e7d32" {}
            }
        }
    }
}

/// A coordinate with one decimal.
fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rates() {
        let mut c = Counts::default();
        c.add("compliant", 6);
        c.add("non_compliant", 2);
        c.add("indeterminate", 5);
        c.add("something_new", 1);
        assert_eq!(c.total(), 14);
        assert_eq!(c.get("indeterminate"), 6);
        assert_eq!(percent(c.compliance_rate()), "75.0 %");
        assert_eq!(Counts::default().compliance_rate(), None);
    }

    #[test]
    fn charts_are_svg_with_one_bar_per_row() {
        let mut c = Counts::default();
        c.add("compliant", 3);
        c.add("proxy_suspected", 1);
        let rows = vec![
            ("中国移动".to_owned(), "/lines?a=1".to_owned(), c),
            ("<b>".to_owned(), "/lines?a=2".to_owned(), Counts::default()),
        ];
        let svg = stacked_bars(&rows).into_string();
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        assert!(svg.contains("&lt;b&gt;"));
        let trend = trend_chart(&[("11-01".to_owned(), c), ("11-02".to_owned(), c)]).into_string();
        assert!(trend.contains("<polyline"));
        assert_eq!(share_bar(&c).into_string().matches("<rect").count(), 5);
    }
}
