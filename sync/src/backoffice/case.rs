//! A line's case view, printable as evidence: declared against actual with
//! where each value came from, the hop path with each hop's class, carrier
//! and region, every reason of the verdict, the observations and the
//! history.

use std::net::IpAddr;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Viewer;
use super::layout::{
    self, carrier_name, city_name, low_trust_badge, or_dash, province_name, verdict_badge,
};
use super::lineref::Named;
use super::lines::{case_link, deciding_reasons};
use super::query::{PageQuery, QueryParams};
use super::{BackofficeState, storable};
use crate::{LineHistoryRow, LineRow, ObservationRow, VerdictRow};

/// Most verdicts, observations and replaced verdicts the case view reads
/// and shows of a line, the newest (and the current ones wherever they
/// stand): a line gets another of each with every new observation, and a
/// probe varying its path under any account it names makes as many as it
/// likes.
const CASE_ROWS: u32 = 200;

/// The query of the case view.
#[derive(Debug, Deserialize)]
pub(super) struct CaseQuery {
    #[serde(default)]
    line: String,
}

impl QueryParams for CaseQuery {
    const PARAMS: &'static [(&'static str, &'static str)] = &[(
        "line",
        "a line\u{2019}s reference, as the lines page links to it",
    )];
}

/// A JSON string field, or nothing.
fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// "source version" of a resolved attribute (`{value, source, version}`).
fn source_of(attribute: &Value) -> String {
    let source = attribute
        .get("source")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let version = attribute
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{source} {version}").trim().to_owned()
}

/// Where an actual value came from, in words: "first public hop
/// 113.108.209.1 (TTL 2), regions demo-2026.11".
fn provenance_text(p: &Value) -> String {
    let role = match text(p, "/role") {
        Some("egress") => "egress address",
        Some("first_public_hop") => "first public hop",
        Some("public_hop") => "public hop",
        _ => "address",
    };
    let ip = text(p, "/ip").unwrap_or("?");
    let ttl = p
        .get("ttl")
        .and_then(Value::as_u64)
        .map(|t| format!(" (TTL {t})"))
        .unwrap_or_default();
    format!("{role} {ip}{ttl}, {}", source_of(p))
}

/// A resolved attribute's value as text (strings as they are, numbers
/// written out).
fn resolved_value(attribute: &Value) -> Option<String> {
    match attribute.get("value")? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// One declared attribute against the actual one.
struct Attribute<'a> {
    label: &'static str,
    key: &'static str,
    declared: Option<&'a str>,
    actual: Option<&'a str>,
    name: fn(&lineprobe_shared::Catalog, &str) -> String,
    checks: [&'static str; 3],
}

/// The current verdict's JSON parts.
struct Decision<'a> {
    verdict: Option<&'a VerdictRow>,
    evidence: Value,
    findings: Vec<Value>,
    filled: Vec<Value>,
    versions: serde_json::Map<String, Value>,
}

impl<'a> Decision<'a> {
    fn of(verdict: Option<&'a VerdictRow>) -> Self {
        let parse = |f: fn(&VerdictRow) -> &str| {
            verdict.and_then(|v| serde_json::from_str::<Value>(f(v)).ok())
        };
        let list = |v: Option<Value>| match v {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        Self {
            verdict,
            // Either version of the document, in the version 1 shape.
            evidence: verdict
                .and_then(|v| crate::read_evidence(&v.record.evidence_json))
                .unwrap_or(Value::Null),
            findings: list(parse(|v| &v.record.reasons_json)),
            filled: list(parse(|v| &v.record.filled_json)),
            versions: match parse(|v| &v.record.data_versions_json) {
                Some(Value::Object(map)) => map,
                _ => serde_json::Map::new(),
            },
        }
    }

    /// The code and outcome of the first finding among `codes`.
    fn outcome_of(&self, codes: &[&str]) -> Option<(String, String)> {
        self.findings
            .iter()
            .find(|f| codes.iter().any(|c| text(f, "/code") == Some(c)))
            .and_then(|f| {
                Some((
                    text(f, "/code")?.to_owned(),
                    text(f, "/outcome")?.to_owned(),
                ))
            })
    }
}

/// `GET /case?line=KEY`.
pub(super) async fn page(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
    PageQuery(query): PageQuery<CaseQuery>,
) -> Response {
    let store = state.store();
    let refs = match state.line_refs().await {
        Ok(refs) => refs,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    // Links name the line by its reference; a key as it is (a link from
    // before references) is sent on to its reference, so that the account
    // leaves the address bar, and the bookmark or history entry made now.
    let key = match refs.read(&query.line) {
        Named::Reference(key) => key,
        Named::Key(key) if storable(&key) => {
            return Redirect::to(&case_link(refs, &key)).into_response();
        }
        Named::Key(_) | Named::Nothing => String::new(),
    };
    let key = key.as_str();
    // A key no line can have is not asked for (PostgreSQL fails the query).
    let found = if storable(key) {
        store.line(key).await
    } else {
        Ok(None)
    };
    let line = match found {
        Ok(Some(line)) => line,
        Ok(None) => {
            return layout::error_page(
                StatusCode::NOT_FOUND,
                Some(&viewer),
                "No such line",
                "The database holds no line with this key.",
            );
        }
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    let (verdicts, history, observations) = match tokio::try_join!(
        store.case_verdicts(key, line.verdict_id, CASE_ROWS),
        store.case_history(key, CASE_ROWS),
        store.case_observations(key, line.observation_id, CASE_ROWS),
    ) {
        Ok(all) => all,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    let decision = Decision::of(
        verdicts
            .iter()
            .find(|v| v.id == line.verdict_id)
            .or_else(|| verdicts.first()),
    );
    let cut = |n: usize| n >= CASE_ROWS as usize;
    let cut_note = html! {
        p.muted { "Only the newest " (CASE_ROWS) " (and the current one) are shown." }
    };
    let observation = observations
        .iter()
        .find(|o| o.id == line.observation_id)
        .or_else(|| observations.first());
    let body = html! {
        div.print-only {
            p { "LineProbe compliance evidence — printed " (state.time(state.now_ms())) " (" (state.offset_label()) ") by " (viewer.name) "." }
        }
        h1 { "Line " span.mono { (line.line_key) } " " (verdict_badge(&line.verdict)) @if line.low_trust { (low_trust_badge()) } }
        p.noprint { a href="/lines" { "← Lines" } " · Print this page (Ctrl+P) for the evidence file." }
        (facts(&state, &line, &decision))
        h2 { "Declared against actual 申报与实际" }
        (declared_vs_actual(&state, &line, &decision))
        h2 { "Path 路由路径" }
        div.panel {
            (hop_table(&state, observation.map(|o| o.facts.path_json.as_str()), &decision.evidence, &line.egress_ip))
        }
        h2 { "Reasons 判定依据" }
        (reasons_table(&decision))
        h2 { "Observations 观测" }
        (observations_table(&state, &line, &observations))
        @if cut(observations.len()) { (cut_note) }
        h2 { "History 历史" }
        (history_table(&state, &line, &verdicts, &history))
        @if cut(verdicts.len()) || cut(history.len()) { (cut_note) }
    };
    layout::page_response(
        StatusCode::OK,
        // The title goes into the browser's history; the line's key (the
        // account) stays in the page.
        "Line case",
        Some(&viewer),
        "/lines",
        &body,
    )
}

fn facts(state: &BackofficeState, line: &LineRow, decision: &Decision<'_>) -> Markup {
    let reasons = decision.verdict.map_or_else(Vec::new, |v| {
        deciding_reasons(&v.record.verdict, &v.record.reasons_json)
    });
    let evidence = &decision.evidence;
    html! {
        div.panel {
            dl.facts {
                dt { "Account 宽带账号" } dd.mono { (if line.account.is_empty() { "—" } else { &line.account }) }
                dt { "Installation 终端" } dd.mono { (line.install_id) }
                dt { "Verdict 结论" } dd { (verdict_badge(&line.verdict)) " since " (state.time(line.current_from_ms)) " — " (reasons.join(", ")) }
                dt { "Reports 报告" } dd { (line.reports) ", first " (state.time(line.first_seen_ms)) ", last " (state.time(line.last_seen_ms)) " (" (state.offset_label()) ")" }
                @if let Some(v) = decision.verdict {
                    dt { "Deciding report" } dd.mono { (v.report_id) }
                    dt { "Decided" } dd { (state.time(v.record.decided_at_ms)) }
                }
                @if let Some(address) = text(evidence, "/declared/address") {
                    dt { "Declared address 装机地址" } dd { (address) }
                }
                @if let Some(env) = evidence.get("envelope").filter(|e| !e.is_null()) {
                    dt { "Received" } dd {
                        "by node " span.mono { (text(env, "/node_id").unwrap_or("?")) }
                        " on " span.mono { (text(env, "/path").unwrap_or("?")) }
                        " from " span.mono { (text(env, "/peer_ip").unwrap_or("?")) }
                        " at " (text(env, "/received_at").unwrap_or("?"))
                    }
                }
                @if let Some(trust) = evidence.get("trust").filter(|t| !t.is_null()) {
                    dt { "Source trust 来源可信度" } dd {
                        @if trust.get("low").and_then(serde_json::Value::as_bool) == Some(true) { (low_trust_badge()) " " }
                        "score " (trust.get("score").map_or_else(|| "?".to_owned(), ToString::to_string)) "/100 at arrival"
                        @if let Some(sig) = text(trust, "/signature") { ", signature " span.mono { (sig) } }
                        @if let Some(reasons) = trust.get("reasons").and_then(serde_json::Value::as_array) {
                            @if !reasons.is_empty() {
                                " — " (reasons.iter().filter_map(serde_json::Value::as_str).collect::<Vec<_>>().join(", "))
                            }
                        }
                        @if let Some(why) = text(trust, "/why_low") { p.muted { (why) } }
                    }
                }
            }
        }
    }
}

fn declared_vs_actual(state: &BackofficeState, line: &LineRow, decision: &Decision<'_>) -> Markup {
    let catalog = state.catalog();
    let attributes = [
        Attribute {
            label: "Carrier 运营商",
            key: "carrier",
            declared: line.declared_carrier.as_deref(),
            actual: line.actual_carrier.as_deref(),
            name: carrier_name,
            checks: [
                "carrier_match",
                "carrier_mismatch",
                "carrier_via_expected_upstream",
            ],
        },
        Attribute {
            label: "Province 省份",
            key: "province",
            declared: line.declared_province.as_deref(),
            actual: line.actual_province.as_deref(),
            name: province_name,
            checks: ["province_match", "province_mismatch", "region_unknown"],
        },
        Attribute {
            label: "City 城市",
            key: "city",
            declared: line.declared_city.as_deref(),
            actual: line.actual_city.as_deref(),
            name: city_name,
            checks: ["city_match", "city_mismatch", "region_unknown"],
        },
    ];
    let evidence = &decision.evidence;
    html! {
        div.panel {
            table {
                thead { tr { th { "" } th { "Declared 申报" } th { "Declared by" } th { "Actual 实际" } th { "Actual from" } th { "Check" } } }
                tbody {
                    @for a in &attributes {
                        @let fill = decision.filled.iter().find(|f| text(f, "/attribute") == Some(a.key));
                        tr {
                            td { (a.label) }
                            td { (or_dash(a.declared, |v| (a.name)(catalog, v))) @if let Some(v) = a.declared { " " span.mono.muted { (v) } } }
                            td {
                                @if let Some(fill) = fill {
                                    "filled from the actual value: " (fill.get("provenance").map(provenance_text).unwrap_or_default())
                                } @else if a.declared.is_some() {
                                    "the subscriber"
                                    @if let Some(raw) = text(evidence, &format!("/declared/{}", a.key)) { " (" span.mono { (raw) } ")" }
                                } @else { "—" }
                            }
                            td { (or_dash(a.actual, |v| (a.name)(catalog, v))) @if let Some(v) = a.actual { " " span.mono.muted { (v) } } }
                            td { (evidence.pointer(&format!("/actual/{}/provenance", a.key)).map_or_else(|| "—".to_owned(), provenance_text)) }
                            td {
                                @match decision.outcome_of(&a.checks) {
                                    Some((code, outcome)) => span class=(match outcome.as_str() { "fail" => "bad", "pass" => "ok", _ => "muted" }) { (code) },
                                    None => span.muted { "—" },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn reasons_table(decision: &Decision<'_>) -> Markup {
    html! {
        div.panel {
            table {
                thead { tr { th { "Check" } th { "Outcome" } th { "Finding" } th { "Evidence" } } }
                tbody {
                    @for f in &decision.findings {
                        @let outcome = text(f, "/outcome").unwrap_or("?");
                        tr {
                            td.mono { (text(f, "/code").unwrap_or("?")) }
                            td { span class=(match outcome { "fail" | "signal" => "bad", "pass" => "ok", _ => "muted" }) { (outcome) } }
                            td { (text(f, "/message").unwrap_or("")) }
                            td.mono { (f.get("evidence").filter(|e| !e.is_null()).map(Value::to_string).unwrap_or_default()) }
                        }
                    }
                }
            }
            @if !decision.versions.is_empty() {
                p.muted { "Address data used: "
                    @for (i, (source, version)) in decision.versions.iter().enumerate() {
                        @if i > 0 { ", " }
                        (source) " " (version.as_str().unwrap_or(""))
                    }
                }
            }
        }
    }
}

fn observations_table(
    state: &BackofficeState,
    line: &LineRow,
    observations: &[ObservationRow],
) -> Markup {
    html! {
        div.panel {
            table {
                thead { tr { th { "" } th { "First seen" } th { "Last seen" } th.num { "Reports" } th { "Egress" } th { "First public hop" } th { "Engine" } th { "Agent" } th { "OS" } } }
                tbody {
                    @for o in observations {
                        tr {
                            td { @if o.id == line.observation_id { "current" } }
                            td { (state.time(o.first_seen_ms)) }
                            td { (state.time(o.last_seen_ms)) }
                            td.num { (o.count) }
                            td.mono { (o.facts.egress_ip) }
                            td.mono { (o.facts.first_hop_ip.as_deref().unwrap_or("—")) }
                            td { (o.facts.engine) }
                            td { (o.facts.agent_version) }
                            td { (o.facts.os) }
                        }
                    }
                }
            }
        }
    }
}

fn history_table(
    state: &BackofficeState,
    line: &LineRow,
    verdicts: &[VerdictRow],
    history: &[LineHistoryRow],
) -> Markup {
    let catalog = state.catalog();
    html! {
        div.panel {
            table {
                thead { tr { th { "Decided" } th { "Verdict" } th { "Actual" } th { "Report" } th { "State" } } }
                tbody {
                    @for v in verdicts {
                        @let replaced = history.iter().find(|h| h.verdict_id == v.id);
                        tr {
                            td { (state.time(v.record.decided_at_ms)) }
                            td { (verdict_badge(&v.record.verdict)) @if v.record.low_trust { (low_trust_badge()) } }
                            td { (super::lines::place(catalog, v.record.actual_carrier.as_deref(), v.record.actual_province.as_deref(), v.record.actual_city.as_deref())) }
                            td.mono { (v.report_id) }
                            td {
                                @if v.id == line.verdict_id { "current" }
                                @else if let Some(h) = replaced { "current " (state.time(h.current_from_ms)) " – " (state.time(h.replaced_at_ms)) }
                                @else { "not current (an older observation)" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The hops of the observation's path: TTL, addresses, each address's
/// class, and for public hops what the sources said.
fn hop_table(
    state: &BackofficeState,
    path_json: Option<&str>,
    evidence: &Value,
    egress: &str,
) -> Markup {
    let hops: Vec<(u64, Vec<String>)> = path_json
        .and_then(|p| serde_json::from_str::<Vec<Value>>(p).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|hop| {
            let ttl = hop.get(0)?.as_u64()?;
            let addrs = hop
                .get(1)?
                .as_array()?
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            Some((ttl, addrs))
        })
        .collect();
    let public: Vec<&Value> = evidence
        .get("public_hops")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let first_hop = text(evidence, "/public_hops/0/ip");
    let catalog = state.catalog();
    let resolved_cells = |resolved: Option<&Value>| {
        let attr = |name: &str| resolved.and_then(|r| r.get(name)).filter(|a| !a.is_null());
        let carrier = attr("carrier")
            .and_then(resolved_value)
            .map(|c| carrier_name(catalog, &c));
        let province = attr("province")
            .and_then(resolved_value)
            .map(|p| province_name(catalog, &p));
        let city = attr("city")
            .and_then(resolved_value)
            .map(|c| city_name(catalog, &c));
        let asn = attr("asn").and_then(resolved_value);
        let org = attr("org").and_then(resolved_value);
        let ip_type = attr("ip_type").and_then(resolved_value);
        let sources: Vec<String> = ["carrier", "province", "city"]
            .iter()
            .filter_map(|n| attr(n).map(|a| format!("{n}: {}", source_of(a))))
            .collect();
        html! {
            td { (carrier.unwrap_or_else(|| "—".to_owned())) }
            td { (province.unwrap_or_else(|| "—".to_owned())) " " (city.unwrap_or_default()) }
            td { @if let Some(asn) = asn { "AS" (asn) " " } (org.unwrap_or_default()) }
            td { (ip_type.unwrap_or_else(|| "—".to_owned())) }
            td.muted { (sources.join("; ")) }
        }
    };
    html! {
        table {
            thead { tr { th.num { "TTL" } th { "Address" } th { "Class" } th { "Carrier" } th { "Region" } th { "Network" } th { "Type" } th { "Sources" } } }
            tbody {
                @for (ttl, addrs) in &hops {
                    @if addrs.is_empty() {
                        tr { td.num { (ttl) } td.muted { "* (no answer)" } td {} td {} td {} td {} td {} td {} }
                    }
                    @for addr in addrs {
                        @let class = addr.parse::<IpAddr>().ok().map(|ip| state.inner.classifier.classify(ip).class);
                        @let resolved = public.iter().find(|h| text(h, "/ip") == Some(addr.as_str())).and_then(|h| h.get("resolved"));
                        tr {
                            td.num { (ttl) }
                            td.mono { (addr) @if Some(addr.as_str()) == first_hop { " ★ first public hop" } }
                            td { (class.map_or("?", |c| c.as_str())) }
                            @if class.is_some_and(|c| c == lineprobe_shared::AddressClass::Public) {
                                (resolved_cells(resolved))
                            } @else {
                                td.muted { "not public: no owner to look up" } td {} td {} td {} td {}
                            }
                        }
                    }
                }
                tr {
                    td.num { "egress" }
                    td.mono { (egress) }
                    td { (egress.parse::<IpAddr>().ok().map_or("?", |ip| state.inner.classifier.classify(ip).class.as_str())) }
                    (resolved_cells(evidence.pointer("/egress/resolved")))
                }
            }
        }
        @if hops.is_empty() { p.muted { "The observation has no hops." } }
        p.muted { "Egress: the address the collector saw the report come from. ★ the first public hop, whose carrier is the line's actual carrier." }
    }
}
