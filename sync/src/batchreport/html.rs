//! The HTML form of a report: one self-contained file — inline CSS, inline
//! SVG charts, no script, no font, image or style sheet to fetch — that
//! opens offline in any browser. Every text from the data is escaped.
//! Labels are Chinese and English.

use std::fmt::Write as _;

use super::figures::{
    GroupFigures, ListedLine, Named, PeriodFigures, TrendPoint, VERDICTS, VerdictCounts,
};

/// Most listed lines the HTML shows; the JSON and CSV files list them all.
pub const HTML_MAX_LISTED: usize = 1000;

/// Most groups a bar chart shows (the table below it shows them all).
const CHART_MAX_GROUPS: usize = 40;

const STYLE: &str = "
:root{--ok:#2e7d32;--bad:#c62828;--ip:#ef6c00;--proxy:#6a1b9a;--unk:#9e9e9e;--ink:#1f2933;--mute:#616e7c;--line:#d9e2ec;--bg:#f5f7fa}
*{box-sizing:border-box}
body{margin:0;padding:24px 32px;font:14px/1.5 -apple-system,'Segoe UI','PingFang SC','Hiragino Sans GB','Microsoft YaHei','Noto Sans CJK SC','Source Han Sans SC',sans-serif;color:var(--ink);background:#fff}
h1{font-size:24px;margin:0 0 4px}
h1 small,h2 small{font-weight:normal;color:var(--mute);margin-left:8px}
h2{font-size:18px;margin:32px 0 8px;padding-bottom:4px;border-bottom:2px solid var(--line)}
.period{color:var(--mute);margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid var(--line);border-radius:6px;padding:10px 14px;min-width:140px;background:var(--bg)}
.card .k{color:var(--mute);font-size:12px}
.card .v{font-size:22px;font-weight:600}
.card .d{font-size:12px;color:var(--mute)}
.up{color:var(--ok)}.down{color:var(--bad)}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
td{unicode-bidi:isolate}
th{background:var(--bg);font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.v-compliant{color:var(--ok)}.v-non_compliant{color:var(--bad)}.v-violating_ip{color:var(--ip)}.v-proxy_suspected{color:var(--proxy)}.v-indeterminate{color:var(--unk)}
.reason{margin:0 0 2px}.reason code{font-weight:600}
.note{color:var(--mute);font-size:12px}
.incomplete{border:1px solid var(--ip);border-left-width:4px;border-radius:4px;padding:8px 12px;margin:0 0 16px;background:#fff8e1}
svg{display:block;margin:8px 0;max-width:100%;height:auto}
svg text{font-family:inherit;font-size:12px;fill:var(--ink)}
svg .axis{stroke:#9aa5b1;stroke-width:1}
svg .grid{stroke:var(--line);stroke-width:1}
dl{margin:8px 0}dt{font-weight:600;margin-top:6px}dd{margin:0 0 0 16px;color:var(--mute)}
footer{margin-top:40px;color:var(--mute);font-size:12px}
@media print{body{padding:0}h2{break-after:avoid}}
";

/// The verdicts' names and colours.
fn verdict_names(verdict: &str) -> (&'static str, &'static str, &'static str) {
    match verdict {
        "compliant" => ("合规", "Compliant", "#2e7d32"),
        "non_compliant" => ("运营商不符", "Non-compliant", "#c62828"),
        "violating_ip" => ("IP 属地不符", "Violating IP", "#ef6c00"),
        "proxy_suspected" => ("疑似代理", "Proxy suspected", "#6a1b9a"),
        _ => ("无法判定", "Indeterminate", "#9e9e9e"),
    }
}

fn kind_names(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "day" => ("日报", "Daily report"),
        "week" => ("周报", "Weekly report"),
        _ => ("月报", "Monthly report"),
    }
}

/// Escapes text for HTML content and attribute values.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn both(n: &Named) -> String {
    if n.name_zh == n.name_en {
        esc(&n.name_zh)
    } else {
        format!("{} <small>{}</small>", esc(&n.name_zh), esc(&n.name_en))
    }
}

fn plain_both(n: &Named) -> String {
    if n.name_zh == n.name_en {
        n.name_zh.clone()
    } else {
        format!("{} {}", n.name_zh, n.name_en)
    }
}

/// A rate as a percentage with one decimal; one that is not whole or
/// nothing never shows as 100.0% or 0.0% (a carrier with one non-compliant
/// line among 10 000 is not 100.0% compliant).
fn pct(rate: Option<f64>) -> String {
    let Some(r) = rate else {
        return "–".to_owned();
    };
    let shown = format!("{:.1}", r * 100.0);
    if r < 1.0 && shown == "100.0" {
        ">99.9%".to_owned()
    } else if r > 0.0 && shown == "0.0" {
        "<0.1%".to_owned()
    } else {
        format!("{shown}%")
    }
}

fn signed(n: i64) -> String {
    match n {
        0 => "±0".to_owned(),
        n if n > 0 => format!("+{n}"),
        n => format!("−{}", n.unsigned_abs()),
    }
}

/// A rate change in percentage points, coloured by direction.
fn pp(change: Option<f64>) -> String {
    match change {
        None => "–".to_owned(),
        Some(c) if c > 0.0 => format!("<span class=\"up\">+{:.1} pp</span>", c * 100.0),
        Some(c) if c < 0.0 => format!("<span class=\"down\">−{:.1} pp</span>", -c * 100.0),
        Some(_) => "±0.0 pp".to_owned(),
    }
}

/// The whole HTML file.
pub fn html(f: &PeriodFigures) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let (kind_zh, kind_en) = kind_names(f.period.kind);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>LineProbe 线路合规{kind_zh} · {kind_en} {label}</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n",
        label = esc(&f.period.label),
    );
    let _ = write!(
        h,
        "<header>\n<h1>LineProbe 线路合规{kind_zh}<small>Line compliance — {kind_en}</small></h1>\n\
         <p class=\"period\">{label} · {start} – {end} (UTC{offset}) · 对比上期 compared with \
         {previous}</p>\n</header>\n",
        label = esc(&f.period.label),
        start = esc(&f.period.start),
        end = esc(&f.period.end),
        offset = esc(&f.period.utc_offset),
        previous = esc(&f.period.previous_label),
    );
    incomplete(&mut h, f);
    cards(&mut h, f);
    section(&mut h, "按运营商合规情况", "Compliance by declared carrier");
    h.push_str(&bar_chart(&f.by_carrier));
    group_table(&mut h, &f.by_carrier, "运营商 Carrier", false);
    section(&mut h, "按省份合规情况", "Compliance by declared province");
    h.push_str(&bar_chart(&f.by_province));
    group_table(&mut h, &f.by_province, "省份 Province", false);
    let (bucket_zh, bucket_en) = if f.trend.bucket == "hour" {
        ("逐小时", "hour by hour")
    } else {
        ("逐日", "day by day")
    };
    section(
        &mut h,
        &format!("趋势（{bucket_zh}）"),
        &format!("Trend, {bucket_en}"),
    );
    h.push_str(&trend_chart(&f.trend.points));
    section(&mut h, "按城市合规情况", "Compliance by declared city");
    group_table(&mut h, &f.by_city, "城市 City", true);
    mismatches(&mut h, f);
    listed(
        &mut h,
        &f.listed_lines,
        "问题线路",
        "Proxy-suspected, non-compliant and violating-IP lines",
        None,
    );
    listed(
        &mut h,
        &f.low_trust_lines,
        "低可信来源的问题线路",
        "The same, from low-trust sources",
        Some(
            "这些结论来自低可信来源（异常流量、被拒报告、未签名或密钥变更），单列于此，仅供核查。 \
             These verdicts come from low-trust sources (anomalous traffic, rejected reports, \
             no signature or a changed key): listed apart, to be checked before acting on them.",
        ),
    );
    quarantine(&mut h, f);
    activity(&mut h, f);
    definitions(&mut h, f);
    let _ = write!(
        h,
        "<footer>LineProbe · {report} format {format} · {kind} {label}</footer>\n</body>\n</html>\n",
        report = esc(f.report),
        format = f.format,
        kind = esc(f.period.kind),
        label = esc(&f.period.label),
    );
    h
}

fn section(h: &mut String, zh: &str, en: &str) {
    let _ = writeln!(h, "<h2>{}<small>{}</small></h2>", esc(zh), esc(en));
}

fn cards(h: &mut String, f: &PeriodFigures) {
    let s = &f.summary;
    let c = &f.change;
    h.push_str("<section class=\"cards\">\n");
    let mut card = |k: &str, v: String, d: String| {
        let _ = writeln!(
            h,
            "<div class=\"card\"><div class=\"k\">{k}</div><div class=\"v\">{v}</div>\
             <div class=\"d\">{d}</div></div>"
        );
    };
    let vs = |n: i64| format!("较上期 vs previous {}", signed(n));
    card(
        "观测线路 Lines observed",
        s.lines_observed.to_string(),
        vs(c.lines_observed),
    );
    card(
        "合规率 Compliance rate",
        pct(s.compliance_rate),
        format!(
            "{}/{} · 较上期 vs previous {}",
            s.verdicts.compliant,
            s.judged,
            pp(c.compliance_rate)
        ),
    );
    for v in VERDICTS {
        let (zh, en, colour) = verdict_names(v);
        card(
            &format!("<span style=\"color:{colour}\">■</span> {zh} {en}"),
            s.verdicts.get(v).to_string(),
            vs(c.verdicts.get(v).copied().unwrap_or(0)),
        );
    }
    card(
        "收到报告 Reports received",
        s.reports_received.to_string(),
        vs(c.reports_received),
    );
    card(
        "隔离 Quarantined",
        s.reports_quarantined.to_string(),
        vs(c.reports_quarantined),
    );
    card("终端 Installs", s.installs.to_string(), vs(c.installs));
    h.push_str("</section>\n");
    if s.reports_pending > 0 {
        let _ = writeln!(
            h,
            "<p class=\"note\">{} 份报告尚未处理，本报告在处理后会变化。 {} reports received in the \
             period were still pending when this report was written; it changes once they are \
             processed.</p>",
            s.reports_pending, s.reports_pending
        );
    }
}

/// A horizontal stacked bar per group: its lines by verdict, scaled to the
/// largest group, with its compliance rate.
fn bar_chart(groups: &[GroupFigures]) -> String {
    let shown: Vec<&GroupFigures> = groups
        .iter()
        .filter(|g| g.lines_observed > 0)
        .take(CHART_MAX_GROUPS)
        .collect();
    if shown.is_empty() {
        return "<p class=\"note\">本期没有观测到线路。 No line was observed in the period.</p>\n"
            .to_owned();
    }
    let (label_w, bar_w, rate_w, row_h, top) = (230.0, 420.0, 130.0, 24.0, 30.0);
    let width = label_w + bar_w + rate_w;
    let height = top + row_h * count_f64(shown.len()) + 8.0;
    let max = shown
        .iter()
        .map(|g| g.lines_observed)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg viewBox=\"0 0 {width:.0} {height:.0}\" width=\"{width:.0}\" height=\"{height:.0}\" \
         role=\"img\">"
    );
    // Legend.
    let mut legend_x = label_w;
    for v in VERDICTS {
        let (zh, _, colour) = verdict_names(v);
        let _ = write!(
            svg,
            "<rect x=\"{legend_x:.1}\" y=\"6\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"15\">{zh}</text>",
            legend_x + 14.0
        );
        legend_x += 30.0 + text_width(zh);
    }
    for (i, g) in shown.iter().enumerate() {
        let row_y = top + row_h * count_f64(i);
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            label_w - 8.0,
            row_y + 15.0,
            esc(&fit(&plain_both(&g.group), label_w - 16.0))
        );
        let mut bar_x = label_w;
        for v in VERDICTS {
            let lines = g.verdicts.get(v);
            if lines == 0 {
                continue;
            }
            let bar_len = bar_w * ratio(lines, max);
            let (zh, en, colour) = verdict_names(v);
            let _ = write!(
                svg,
                "<rect x=\"{bar_x:.1}\" y=\"{:.1}\" width=\"{bar_len:.1}\" height=\"{:.1}\" fill=\"{colour}\">\
                 <title>{} {zh} {en}: {lines}</title></rect>",
                row_y + 3.0,
                row_h - 6.0,
                esc(&plain_both(&g.group)),
            );
            bar_x += bar_len;
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\">{} ({}/{})</text>",
            bar_x + 6.0,
            row_y + 15.0,
            pct(g.compliance_rate),
            g.verdicts.compliant,
            g.judged
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The geometry of the trend chart.
struct Plot {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    inner_w: f64,
    inner_h: f64,
    step: f64,
}

impl Plot {
    fn new(buckets: usize) -> Self {
        let (left, right, top, bottom, width, height) = (48.0, 56.0, 16.0, 36.0, 820.0, 260.0);
        let inner_w = width - left - right;
        Self {
            left,
            top,
            width,
            height,
            inner_w,
            inner_h: height - top - bottom,
            step: inner_w / count_f64(buckets.max(1)),
        }
    }

    /// The left edge of bucket `i`.
    fn x(&self, i: usize) -> f64 {
        self.left + self.step * count_f64(i)
    }

    /// The height of `fraction` of the plot, from its bottom.
    fn y(&self, fraction: f64) -> f64 {
        self.top + self.inner_h * (1.0 - fraction)
    }
}

/// The compliance rate as a line over the buckets (broken where no line was
/// judged), over bars of the reports received.
fn trend_chart(points: &[TrendPoint]) -> String {
    if points.is_empty() {
        return String::new();
    }
    let plot = Plot::new(points.len());
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg viewBox=\"0 0 {w:.0} {h:.0}\" width=\"{w:.0}\" height=\"{h:.0}\" role=\"img\">",
        w = plot.width,
        h = plot.height
    );
    trend_axes(&mut svg, &plot, points);
    trend_bars(&mut svg, &plot, points);
    trend_line(&mut svg, &plot, points);
    svg.push_str("</svg>\n");
    svg.push_str(
        "<p class=\"note\">线：合规率（左轴）；柱：收到的报告（右轴）。 Line: compliance rate (left \
         axis); bars: reports received (right axis).</p>\n",
    );
    svg
}

fn max_reports(points: &[TrendPoint]) -> u64 {
    points
        .iter()
        .map(|p| p.reports_received)
        .max()
        .unwrap_or(0)
        .max(1)
}

/// Grid lines, the rate axis (left), the reports axis (right) and the
/// bucket labels (thinned out to about 16).
fn trend_axes(svg: &mut String, plot: &Plot, points: &[TrendPoint]) {
    let right = plot.left + plot.inner_w;
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let y = plot.y(tick);
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{right:.1}\" y2=\"{y:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}%</text>",
            plot.left,
            plot.left - 6.0,
            y + 4.0,
            tick * 100.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\">{}</text><text x=\"{:.1}\" y=\"{:.1}\">0</text>",
        right + 6.0,
        plot.y(1.0) + 4.0,
        max_reports(points),
        right + 6.0,
        plot.y(0.0) + 4.0
    );
    let every = points.len().div_ceil(16).max(1);
    for (i, p) in points.iter().enumerate().filter(|(i, _)| i % every == 0) {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            plot.x(i) + plot.step / 2.0,
            plot.y(0.0) + 18.0,
            esc(&p.label)
        );
    }
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"{:.1}\" y1=\"{bottom:.1}\" x2=\"{right:.1}\" y2=\"{bottom:.1}\"/>",
        plot.left,
        bottom = plot.y(0.0),
    );
}

fn trend_bars(svg: &mut String, plot: &Plot, points: &[TrendPoint]) {
    let max = max_reports(points);
    for (i, p) in points.iter().enumerate() {
        if p.reports_received == 0 {
            continue;
        }
        let fraction = ratio(p.reports_received, max);
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#bcccdc\">\
             <title>{} 收到报告 reports received: {}</title></rect>",
            plot.x(i) + plot.step * 0.15,
            plot.y(fraction),
            plot.step * 0.7,
            plot.inner_h * fraction,
            esc(&p.label),
            p.reports_received
        );
    }
}

/// One polyline per run of buckets with a rate, and a dot per bucket.
fn trend_line(svg: &mut String, plot: &Plot, points: &[TrendPoint]) {
    let mut run: Vec<String> = Vec::new();
    let mut dots = String::new();
    let flush = |run: &mut Vec<String>, svg: &mut String| {
        if run.len() > 1 {
            let _ = write!(
                svg,
                "<polyline fill=\"none\" stroke=\"#2e7d32\" stroke-width=\"2\" points=\"{}\"/>",
                run.join(" ")
            );
        }
        run.clear();
    };
    for (i, p) in points.iter().enumerate() {
        let x = plot.x(i) + plot.step / 2.0;
        match p.compliance_rate {
            Some(rate) => {
                let y = plot.y(rate);
                run.push(format!("{x:.1},{y:.1}"));
                let _ = write!(
                    dots,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"#2e7d32\">\
                     <title>{} 合规率 compliance rate {} ({}/{})</title></circle>",
                    esc(&p.label),
                    pct(Some(rate)),
                    p.compliant,
                    p.judged
                );
            }
            None => flush(&mut run, svg),
        }
    }
    flush(&mut run, svg);
    svg.push_str(&dots);
}

fn verdict_header() -> String {
    VERDICTS.iter().fold(String::new(), |mut out, v| {
        let (zh, en, _) = verdict_names(v);
        let _ = write!(out, "<th>{zh}<br><small>{en}</small></th>");
        out
    })
}

fn counts_cells(c: &VerdictCounts) -> String {
    VERDICTS.iter().fold(String::new(), |mut out, v| {
        let _ = write!(out, "<td class=\"n\">{}</td>", c.get(v));
        out
    })
}

fn group_table(h: &mut String, groups: &[GroupFigures], what: &str, with_province: bool) {
    if groups.is_empty() {
        return;
    }
    let _ = write!(
        h,
        "<table>\n<tr><th>{what}</th>{}<th>观测线路<br><small>Lines</small></th>{}\
         <th>合规率<br><small>Rate</small></th><th>上期线路<br><small>Previous lines</small></th>\
         <th>上期合规率<br><small>Previous rate</small></th><th>变化<br><small>Change</small></th></tr>\n",
        if with_province {
            "<th>省份代码<br><small>Province</small></th>"
        } else {
            ""
        },
        verdict_header()
    );
    for g in groups {
        let _ = writeln!(
            h,
            "<tr><td>{}</td>{}<td class=\"n\">{}</td>{}<td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            both(&g.group),
            if with_province {
                format!("<td>{}</td>", esc(g.province.as_deref().unwrap_or("–")))
            } else {
                String::new()
            },
            g.lines_observed,
            counts_cells(&g.verdicts),
            pct(g.compliance_rate),
            g.previous_lines_observed,
            pct(g.previous_compliance_rate),
            pp(g.compliance_rate_change),
        );
    }
    h.push_str("</table>\n");
}

fn mismatches(h: &mut String, f: &PeriodFigures) {
    section(
        h,
        "申报运营商与实际运营商",
        "Declared vs actual carrier of non-compliant lines",
    );
    if f.carrier_mismatches.is_empty() {
        h.push_str("<p class=\"note\">无。 None.</p>\n");
        return;
    }
    h.push_str("<table>\n<tr><th>申报 Declared</th><th>实际 Actual</th><th>线路 Lines</th></tr>\n");
    for p in &f.carrier_mismatches {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            both(&p.declared),
            both(&p.actual),
            p.lines
        );
    }
    h.push_str("</table>\n");
}

fn listed(h: &mut String, lines: &[ListedLine], zh: &str, en: &str, note: Option<&str>) {
    section(h, zh, en);
    if let Some(note) = note {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(note));
    }
    if lines.is_empty() {
        h.push_str("<p class=\"note\">无。 None.</p>\n");
        return;
    }
    if lines.len() > HTML_MAX_LISTED {
        let _ = writeln!(
            h,
            "<p class=\"note\">共 {n} 条，此处列出前 {HTML_MAX_LISTED} 条；完整列表见 JSON 与 CSV 文件。 \
             {n} lines; the first {HTML_MAX_LISTED} are shown here, the JSON and CSV files list \
             them all.</p>",
            n = lines.len()
        );
    }
    h.push_str(
        "<table>\n<tr><th>线路 Line</th><th>结论 Verdict</th><th>申报 Declared</th>\
         <th>实际 Actual</th><th>出口 IP Egress</th><th>首个公网跳 First public hop</th>\
         <th>报告 Reports</th><th>原因 Reasons</th></tr>\n",
    );
    for l in lines.iter().take(HTML_MAX_LISTED) {
        let (zh, en, _) = verdict_names(&l.verdict);
        let place = |p: &super::figures::Place| {
            format!(
                "{}<br>{}<br>{}",
                both(&p.carrier),
                both(&p.province),
                both(&p.city)
            )
        };
        let reasons = l.reasons.iter().fold(String::new(), |mut out, r| {
            let _ = write!(
                out,
                "<p class=\"reason\"><code>{}</code> {}</p>",
                esc(&r.code),
                esc(&r.message)
            );
            out
        });
        let _ = writeln!(
            h,
            "<tr><td>{line}<br><small>{install}</small></td>\
             <td class=\"v-{vclass}\">{zh}<br><small>{en}</small></td><td>{declared}</td>\
             <td>{actual}</td><td>{egress}<br>{egress_carrier}</td><td>{hop}<br>{hop_carrier}</td>\
             <td class=\"n\">{reports}<br><small>{last}</small></td><td>{reasons}</td></tr>",
            line = esc(&l.line),
            install = esc(&l.install_id),
            vclass = esc(&l.verdict),
            declared = place(&l.declared),
            actual = place(&l.actual),
            egress = esc(&l.egress_ip),
            egress_carrier = both(&l.egress_carrier),
            hop = esc(l.first_hop_ip.as_deref().unwrap_or("–")),
            hop_carrier = both(&l.first_hop_carrier),
            reports = l.reports,
            last = esc(&l.last_report),
        );
    }
    h.push_str("</table>\n");
}

fn quarantine(h: &mut String, f: &PeriodFigures) {
    let q = &f.quarantine;
    section(h, "隔离的报告", "Quarantined reports by reason");
    let _ = writeln!(
        h,
        "<p>本期 {} 份，上期 {} 份（{}）。 {} this period, {} the previous one ({}).</p>",
        q.reports,
        q.previous_reports,
        signed(q.change),
        q.reports,
        q.previous_reports,
        signed(q.change)
    );
    if q.by_reason.is_empty() {
        return;
    }
    h.push_str(
        "<table>\n<tr><th>原因 Reason</th><th>报告 Reports</th><th>上期 Previous</th></tr>\n",
    );
    for r in &q.by_reason {
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&r.code),
            r.reports,
            r.previous_reports
        );
    }
    h.push_str("</table>\n");
}

/// The warning that collectors were not pulled past the period's end.
fn incomplete(h: &mut String, f: &PeriodFigures) {
    if f.collectors_behind.is_empty() {
        return;
    }
    let behind: Vec<String> = f
        .collectors_behind
        .iter()
        .map(|c| match &c.pulled_through {
            Some(t) => format!("{} ({})", esc(&c.collector), esc(t)),
            None => format!("{} (never)", esc(&c.collector)),
        })
        .collect();
    let _ = writeln!(
        h,
        "<p class=\"incomplete\"><strong>未完整 Incomplete:</strong> 以下采集节点在本期结束后尚未\
         拉取完毕，本期末段收到的报告可能未计入，拉取后报告将更新。 These collectors had not been \
         pulled past the period's end when this report was written: reports they received late \
         in the period may be missing, and the report changes once they are pulled. {}</p>",
        behind.join(", ")
    );
}

fn activity(h: &mut String, f: &PeriodFigures) {
    let a = &f.activity;
    section(h, "探针活动", "Probe activity");
    let _ = writeln!(
        h,
        "<p>收到报告 {} 份（已处理 {}，隔离 {}，待处理 {}），来自 {} 个终端。 {} reports received \
         ({} processed, {} quarantined, {} pending) from {} installs.</p>",
        f.summary.reports_received,
        f.summary.reports_processed,
        f.summary.reports_quarantined,
        f.summary.reports_pending,
        f.summary.installs,
        f.summary.reports_received,
        f.summary.reports_processed,
        f.summary.reports_quarantined,
        f.summary.reports_pending,
        f.summary.installs,
    );
    if !a.by_collector.is_empty() {
        h.push_str(
            "<table>\n<tr><th>采集节点 Collector</th><th>报告 Reports</th><th>已处理 Processed</th>\
             <th>隔离 Quarantined</th><th>待处理 Pending</th><th>上期 Previous</th></tr>\n",
        );
        for c in &a.by_collector {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&c.collector),
                c.reports,
                c.processed,
                c.quarantined,
                c.pending,
                c.previous_reports
            );
        }
        h.push_str("</table>\n");
    }
    if !a.by_probe.is_empty() {
        h.push_str(
            "<table>\n<tr><th>探测引擎 Engine</th><th>探针版本 Agent version</th>\
             <th>报告 Reports</th><th>终端 Installs</th></tr>\n",
        );
        for p in &a.by_probe {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&p.engine),
                esc(&p.agent_version),
                p.reports,
                p.installs
            );
        }
        h.push_str("</table>\n");
    }
}

fn definitions(h: &mut String, f: &PeriodFigures) {
    section(h, "口径说明", "Definitions");
    h.push_str("<dl>\n");
    for (term, text) in &f.definitions {
        let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", esc(term), esc(text));
    }
    h.push_str("</dl>\n");
}

/// About how wide a text is drawn at 12 px: CJK characters a full em,
/// others a little over half.
fn text_width(text: &str) -> f64 {
    text.chars()
        .map(|c| if u32::from(c) >= 0x2E80 { 12.0 } else { 7.0 })
        .sum()
}

/// The text cut (with an ellipsis) to about `max_px` wide.
fn fit(text: &str, max_px: f64) -> String {
    if text_width(text) <= max_px {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut width = text_width("…");
    for c in text.chars() {
        let w = text_width(c.encode_utf8(&mut [0; 4]));
        if width + w > max_px {
            break;
        }
        width += w;
        out.push(c);
    }
    out.push('…');
    out
}

#[allow(
    clippy::cast_precision_loss,
    reason = "chart coordinates of small counts"
)]
fn count_f64(n: usize) -> f64 {
    n as f64
}

#[allow(
    clippy::cast_precision_loss,
    reason = "chart proportions of counts far below 2^52"
)]
fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">Tom & 'Jerry'</a>"),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
        assert_eq!(esc("中国移动"), "中国移动");
    }

    #[test]
    fn signs_and_points() {
        assert_eq!(signed(3), "+3");
        assert_eq!(signed(-2), "−2");
        assert_eq!(signed(0), "±0");
        assert_eq!(pp(None), "–");
        assert_eq!(pct(Some(0.9999)), ">99.9%");
        assert_eq!(pct(Some(0.9995)), ">99.9%");
        assert_eq!(pct(Some(1.0)), "100.0%");
        assert_eq!(pct(Some(0.0001)), "<0.1%");
        assert_eq!(pct(Some(0.0)), "0.0%");
        assert_eq!(pct(Some(0.6667)), "66.7%");
        assert!(pp(Some(-0.4167)).contains("−41.7 pp"));
        assert_eq!(fit("中国移动通信集团", 60.0), "中国移动…");
        assert_eq!(fit("广东省 Guangdong", 200.0), "广东省 Guangdong");
    }
}
