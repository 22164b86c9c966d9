//! The probe configuration (admins): the endpoints, path patterns, schedule,
//! catalog versions and latest agent release that probes follow. On
//! publishing, the back office signs the manifest with its Ed25519 key,
//! raises the serial, and puts it to every collector's export API — the
//! internal side connects out, as for pulling; collectors never connect
//! in. The page shows which collectors accepted it.

use std::collections::BTreeMap;
use std::path::Path;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Redirect, Response};
use axum::{Extension, Form};
use chrono::{DateTime, Utc};
use lineprobe_shared::{AgentRelease, Manifest, ManifestSigningKey, ProbeSchedule, SignedManifest};
use maud::html;
use serde::Deserialize;

use super::auth::Viewer;
use super::layout::{self, Notice, csrf_field};
use super::query::{PageQuery, QueryParams};
use super::{AuditEntry, BackofficeState, ManifestRow, PublicationRow};
use crate::{CollectorClient, Error};

/// Reads the manifest signing key: a PEM `PRIVATE KEY` (PKCS#8 Ed25519)
/// or standard base64 of the 32-byte seed.
pub fn load_manifest_key(path: &Path) -> Result<ManifestSigningKey, Error> {
    let bad = |reason: String| Error::Config {
        key: "backoffice.manifest_key".to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    ManifestSigningKey::parse(&text).map_err(|e| {
        bad(format!(
            "{}: {e}; generate one with `openssl genpkey -algorithm ed25519 -out {}` and give \
             the collectors its public key (`openssl pkey -in {} -pubout`)",
            path.display(),
            path.display(),
            path.display()
        ))
    })
}

/// The configuration form as sent.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ManifestForm {
    /// Collector base URLs, one per line.
    #[serde(default)]
    pub endpoints: String,
    /// Report path patterns, one per line.
    #[serde(default)]
    pub path_patterns: String,
    /// Seconds between probe runs.
    #[serde(default)]
    pub interval_secs: String,
    /// Random extra wait, in seconds.
    #[serde(default)]
    pub jitter_secs: String,
    /// `name = version` lines.
    #[serde(default)]
    pub catalog_versions: String,
    /// The latest agent version (empty: no update offered).
    #[serde(default)]
    pub agent_version: String,
    /// Its download URL.
    #[serde(default)]
    pub agent_url: String,
    /// Its SHA-256.
    #[serde(default)]
    pub agent_sha256: String,
}

fn lines_of(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

impl ManifestForm {
    /// The form showing `manifest`.
    fn from_manifest(manifest: &Manifest) -> Self {
        Self {
            endpoints: manifest.endpoints.join("\n"),
            path_patterns: manifest.path_patterns.join("\n"),
            interval_secs: manifest.schedule.interval_secs.to_string(),
            jitter_secs: manifest.schedule.jitter_secs.to_string(),
            catalog_versions: manifest
                .catalog_versions
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            agent_version: manifest
                .latest_agent
                .as_ref()
                .map(|a| a.version.clone())
                .unwrap_or_default(),
            agent_url: manifest
                .latest_agent
                .as_ref()
                .map(|a| a.url.clone())
                .unwrap_or_default(),
            agent_sha256: manifest
                .latest_agent
                .as_ref()
                .map(|a| a.sha256.clone())
                .unwrap_or_default(),
        }
    }

    /// The manifest the form describes, or every problem with it.
    pub fn to_manifest(
        &self,
        serial: u64,
        issued_at: DateTime<Utc>,
        validity_days: u32,
    ) -> Result<Manifest, Vec<String>> {
        let mut problems = Vec::new();
        let mut number = |text: &str, what: &str| {
            text.trim().parse::<u64>().unwrap_or_else(|_| {
                problems.push(format!(
                    "{what}: {:?} is not a whole number of seconds",
                    text.trim()
                ));
                0
            })
        };
        let interval_secs = number(&self.interval_secs, "schedule.interval_secs");
        let jitter_secs = number(&self.jitter_secs, "schedule.jitter_secs");
        let mut catalog_versions = BTreeMap::new();
        for line in lines_of(&self.catalog_versions) {
            match line.split_once('=') {
                Some((k, v)) => {
                    let name = k.trim();
                    if catalog_versions
                        .insert(name.to_owned(), v.trim().to_owned())
                        .is_some()
                    {
                        problems.push(format!(
                            "catalog_versions: {name:?} is listed twice; keep one line per \
                             catalog"
                        ));
                    }
                }
                None => problems.push(format!(
                    "catalog_versions: {line:?} is not `name = version`"
                )),
            }
        }
        let agent =
            [&self.agent_version, &self.agent_url, &self.agent_sha256].map(|s| s.trim().to_owned());
        let latest_agent = if agent.iter().all(String::is_empty) {
            None
        } else if agent.iter().any(String::is_empty) {
            problems.push(
                "latest_agent: give the version, the download URL and its SHA-256 together \
                 (or none of them)"
                    .to_owned(),
            );
            None
        } else {
            let [version, url, sha256] = agent;
            Some(AgentRelease {
                version,
                url,
                sha256: sha256.to_ascii_lowercase(),
            })
        };
        let manifest = Manifest {
            serial,
            issued_at,
            expires_at: issued_at + chrono::Duration::days(i64::from(validity_days)),
            endpoints: lines_of(&self.endpoints),
            path_patterns: lines_of(&self.path_patterns),
            schedule: ProbeSchedule {
                interval_secs,
                jitter_secs,
            },
            catalog_versions,
            latest_agent,
        };
        let violations = manifest.violations();
        if !violations.is_empty() {
            problems.push(violations.to_string());
        }
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(problems)
        }
    }
}

/// What publishing did: the manifest and each collector's answer.
#[derive(Debug, Clone)]
pub struct PublishOutcome {
    /// The manifest's serial.
    pub serial: i64,
    /// One row per collector tried.
    pub results: Vec<PublicationRow>,
}

/// Whether `client`'s collector serves `signed_json` (the same signed
/// manifest, whatever the encoding's whitespace).
async fn holds(client: &CollectorClient, signed_json: &str) -> bool {
    let Ok(Some(held)) = client.held_manifest().await else {
        return false;
    };
    match (
        SignedManifest::from_json(&held),
        SignedManifest::from_json(signed_json.as_bytes()),
    ) {
        (Ok(held), Ok(ours)) => held == ours,
        _ => false,
    }
}

/// How far above the manifest just published a collector's claim to hold
/// a newer one is believed. The claim raises the serial of the next
/// manifest (another back office may have published), but a collector is
/// untrusted: one claiming `i64::MAX` would leave no serial to publish
/// with, ever, and shut the compromised collector's own removal out.
const MAX_SERIAL_LEAD: i64 = 1_000_000;

/// The serial a collector says it holds (`claimed`, answering the
/// publication of `serial`), when it is to be believed.
fn believed_serial(claimed: Option<u64>, serial: i64) -> Option<i64> {
    let claimed = i64::try_from(claimed?).ok()?;
    (claimed <= serial.saturating_add(MAX_SERIAL_LEAD)).then_some(claimed)
}

/// Puts `signed_json` to each enabled collector named in `only` (all when
/// `None`), at once, and records every answer.
async fn publish_to_collectors(
    state: &BackofficeState,
    serial: i64,
    signed_json: &str,
    only: Option<&[String]>,
) -> Result<PublishOutcome, Error> {
    let targets: Vec<_> = state
        .inner
        .collectors
        .iter()
        .filter(|c| c.enabled)
        .filter(|c| only.is_none_or(|names| names.contains(&c.name)))
        .collect();
    let attempts = targets.iter().map(|endpoint| {
        let body = signed_json.as_bytes().to_vec();
        async move {
            let answer = match CollectorClient::new(endpoint) {
                Ok(client) => match client.publish_manifest(body).await {
                    // Refused as not newer while holding this serial: it
                    // holds this manifest only if what it serves is this
                    // one (another back office, or one restored from a
                    // backup, may have signed other contents under it).
                    Ok(mut a)
                        if !a.accepted
                            && a.current_serial.and_then(|s| i64::try_from(s).ok())
                                == Some(serial) =>
                    {
                        a.accepted = holds(&client, signed_json).await;
                        if !a.accepted {
                            a.current_serial = None;
                            a.message = format!(
                                "{} (it holds serial {serial} with other contents: publish a \
                                 newer manifest)",
                                a.message
                            );
                        }
                        Ok(a)
                    }
                    other => other,
                },
                Err(e) => Err(e),
            };
            (endpoint.name.clone(), answer)
        }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let at_ms = state.now_ms();
    let mut results = Vec::with_capacity(answers.len());
    for (collector, answer) in answers {
        let row = match answer {
            Ok(a) => {
                let held = believed_serial(a.current_serial, serial);
                let doubted = a.current_serial.filter(|_| held.is_none());
                let accepted = a.accepted;
                PublicationRow {
                    serial,
                    collector,
                    at_ms,
                    accepted,
                    http_status: Some(i64::from(a.status)),
                    collector_serial: held,
                    message: match doubted {
                        Some(claimed) => format!(
                            "{} (it claims to hold serial {claimed}, more than {MAX_SERIAL_LEAD} \
                             above this one: not believed; check that collector)",
                            a.message
                        ),
                        None if a.accepted && a.status == 409 => "already held".to_owned(),
                        None => a.message,
                    },
                }
            }
            Err(e) => PublicationRow {
                serial,
                collector,
                at_ms,
                accepted: false,
                http_status: None,
                collector_serial: None,
                message: e.to_string(),
            },
        };
        state.store().publication_insert(&row).await?;
        results.push(row);
    }
    Ok(PublishOutcome { serial, results })
}

/// The query of the configuration page.
#[derive(Debug, Deserialize)]
pub(super) struct ConfigQuery {
    published: Option<i64>,
}

impl QueryParams for ConfigQuery {
    const PARAMS: &'static [(&'static str, &'static str)] = &[(
        "published",
        "the serial of the manifest just published (a whole number)",
    )];
}

/// `GET /config`.
pub(super) async fn page(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
    PageQuery(query): PageQuery<ConfigQuery>,
) -> Response {
    let notice = query.published.map(|s| {
        Notice::info(&format!(
            "Manifest {s} signed and published; the answers are below."
        ))
    });
    config_response(&state, &viewer, StatusCode::OK, notice, None).await
}

async fn config_response(
    state: &BackofficeState,
    viewer: &Viewer,
    status: StatusCode,
    notice: Option<Notice>,
    form: Option<&ManifestForm>,
) -> Response {
    let store = state.store();
    let latest = match store.manifest_latest().await {
        Ok(latest) => latest,
        Err(e) => return layout::internal_error(Some(viewer), &e),
    };
    let latest_manifest = latest
        .as_ref()
        .and_then(|m| Manifest::from_json(m.manifest_json.as_bytes()).ok());
    let publications = match &latest {
        Some(m) => match store.publications(m.serial).await {
            Ok(p) => p,
            Err(e) => return layout::internal_error(Some(viewer), &e),
        },
        None => Vec::new(),
    };
    let defaults = ManifestForm {
        interval_secs: "3600".to_owned(),
        jitter_secs: "600".to_owned(),
        ..ManifestForm::default()
    };
    let shown = form.cloned().unwrap_or_else(|| {
        latest_manifest
            .as_ref()
            .map_or(defaults, ManifestForm::from_manifest)
    });
    let key = state.inner.signing_key.as_ref();
    let collectors: Vec<_> = state
        .inner
        .collectors
        .iter()
        .filter(|c| c.enabled)
        .collect();
    let body = html! {
        h1 { "Probe configuration 探针配置" }
        @if let Some(notice) = &notice { (notice) }
        div.panel {
            dl.facts {
                dt { "Signing key" }
                dd { @match key {
                    Some(k) => span.mono { "Ed25519, key id " (k.key_id()) },
                    None => span.bad { "none: set backoffice.manifest_key in the configuration to publish" },
                } }
                dt { "Collectors" }
                dd { @if collectors.is_empty() { span.bad { "none configured ([[collector]])" } }
                     @else { @for (i, c) in collectors.iter().enumerate() { @if i > 0 { ", " } (c.name) } } }
            }
        }
        @if let (Some(row), Some(m)) = (&latest, &latest_manifest) {
            (current_manifest(state, viewer, row, m, &publications))
        } @else {
            p.muted { "No manifest has been published from here yet." }
        }
        h2 { "Edit and publish" }
        div.panel {
            form method="post" action="/config/publish" {
                (csrf_field(viewer))
                label { "Collector endpoints (https base URLs, tried in order; one per line)"
                    textarea name="endpoints" rows="4" placeholder="https://collector-1.example.net" { (shown.endpoints) } }
                label { "Report path patterns (one per line; `*` one segment, `**` any)"
                    textarea name="path_patterns" rows="4" placeholder="/api/v1/report" { (shown.path_patterns) } }
                label { "Probe interval (seconds) " input type="number" name="interval_secs" min="60" value=(shown.interval_secs); }
                label { "Random extra wait (seconds) " input type="number" name="jitter_secs" min="0" value=(shown.jitter_secs); }
                label { "Catalog versions (`name = version`, one per line)"
                    textarea name="catalog_versions" rows="3" placeholder="carriers = 2026.11" { (shown.catalog_versions) } }
                fieldset {
                    legend { "Latest agent release (leave all three empty for none)" }
                    label { "Version " input type="text" name="agent_version" value=(shown.agent_version) placeholder="1.4.0"; }
                    label { "Download URL " input type="text" name="agent_url" size="60" value=(shown.agent_url) placeholder="https://downloads.example.net/lineprobe-1.4.0.msi"; }
                    label { "SHA-256 " input type="text" name="agent_sha256" size="66" value=(shown.agent_sha256); }
                }
                p.muted { "Publishing signs a new manifest (serial " (latest.as_ref().map_or(1, |r| r.serial.saturating_add(1))) " or higher), valid " (state.config().manifest_validity_days) " days, and sends it to every collector." }
                button type="submit" disabled[key.is_none()] { "Sign and publish" }
            }
        }
    };
    layout::page_response(
        status,
        "Probe configuration",
        Some(viewer),
        "/config",
        &body,
    )
}

/// The current manifest and each collector's newest answer to it, with a
/// button to publish it again where it was not accepted.
fn current_manifest(
    state: &BackofficeState,
    viewer: &Viewer,
    row: &ManifestRow,
    m: &Manifest,
    publications: &[PublicationRow],
) -> maud::Markup {
    let mut by_collector: BTreeMap<&str, &PublicationRow> = BTreeMap::new();
    for p in publications {
        by_collector.insert(&p.collector, p);
    }
    let collectors: Vec<_> = state
        .inner
        .collectors
        .iter()
        .filter(|c| c.enabled)
        .collect();
    let pending: Vec<&str> = collectors
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| !by_collector.get(n).is_some_and(|p| p.accepted))
        .collect();
    let key = state.inner.signing_key.as_ref();
    html! {
            h2 { "Current manifest: serial " (row.serial) }
        div.panel {
            dl.facts {
                dt { "Signed" } dd { (state.time(row.created_at_ms)) " by " (row.created_by) ", key id " span.mono { (row.key_id) } }
                dt { "Valid until" } dd { (m.expires_at.with_timezone(&state.offset()).format("%Y-%m-%d %H:%M")) }
            }
            table {
                thead { tr { th { "Collector" } th { "Accepted" } th { "Answer" } th { "When" } } }
                tbody {
                    @for c in &collectors {
                        @let p = by_collector.get(c.name.as_str());
                        tr {
                            td { (c.name) }
                            td { @match p {
                                Some(p) if p.accepted => span.ok { "✓ accepted" },
                                Some(_) => span.bad { "✗ not accepted" },
                                None => span.muted { "not tried" },
                            } }
                            td { (p.map_or("", |p| p.message.as_str())) }
                            td { (p.map_or_else(String::new, |p| state.time(p.at_ms))) }
                        }
                    }
                }
            }
            @if !pending.is_empty() && key.is_some() {
                form method="post" action="/config/republish" {
                    (csrf_field(viewer))
                    input type="hidden" name="serial" value=(row.serial);
                    button.secondary type="submit" { "Publish manifest " (row.serial) " again to " (pending.join(", ")) }
                }
            }
        }
    }
}

/// `POST /config/publish`.
pub(super) async fn publish(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
    Form(form): Form<ManifestForm>,
) -> Response {
    let Some(key) = state.inner.signing_key.clone() else {
        return config_response(
            &state,
            &viewer,
            StatusCode::CONFLICT,
            Some(Notice::error(
                "No signing key is configured (backoffice.manifest_key); nothing was published.",
            )),
            Some(&form),
        )
        .await;
    };
    let store = state.store();
    let floor = match store.manifest_serial_floor().await {
        Ok(floor) => floor,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    // Serials are stored as 64-bit signed integers; a floor at the top
    // (only a hand-edited database) leaves none to sign with.
    let Some(serial) = floor.checked_add(1).and_then(|s| u64::try_from(s).ok()) else {
        return layout::internal_error(
            Some(&viewer),
            &Error::Internal(format!(
                "the highest manifest serial recorded ({floor}) leaves no serial to publish with"
            )),
        );
    };
    let now = DateTime::<Utc>::from_timestamp_millis(state.now_ms()).unwrap_or_else(Utc::now);
    // Whole seconds: the manifest's times are what probes compare.
    let now = DateTime::<Utc>::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    let manifest = match form.to_manifest(serial, now, state.config().manifest_validity_days) {
        Ok(manifest) => manifest,
        Err(problems) => {
            return config_response(
                &state,
                &viewer,
                StatusCode::BAD_REQUEST,
                Some(Notice::error(&format!(
                    "Not published: {}.",
                    problems.join("; ")
                ))),
                Some(&form),
            )
            .await;
        }
    };
    let signed = match SignedManifest::sign(&manifest, &key) {
        Ok(signed) => signed,
        Err(e) => return layout::internal_error(Some(&viewer), &Error::Shared(e)),
    };
    let (Ok(manifest_json), Ok(signed_json)) = (manifest.to_json(), signed.to_json()) else {
        return layout::internal_error(
            Some(&viewer),
            &Error::Internal("cannot encode the manifest".to_owned()),
        );
    };
    let row = ManifestRow {
        serial: i64::try_from(serial).unwrap_or(i64::MAX),
        manifest_json: String::from_utf8_lossy(&manifest_json).into_owned(),
        signed_json: String::from_utf8_lossy(&signed_json).into_owned(),
        key_id: key.key_id(),
        created_at_ms: state.now_ms(),
        created_by: viewer.name.clone(),
    };
    let stored = store_audited(&state, &viewer, &row, &manifest).await;
    match stored {
        Ok(true) => {}
        Ok(false) => {
            return config_response(
                &state,
                &viewer,
                StatusCode::CONFLICT,
                Some(Notice::error(
                    "Another manifest with this serial was signed at the same moment; nothing \
                     was published. Check the current manifest below and publish again.",
                )),
                Some(&form),
            )
            .await;
        }
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    }
    send_and_audit(
        &state,
        &viewer,
        "manifest_publish_result",
        row.serial,
        &row.signed_json,
        None,
    )
    .await
}

/// Stores the signed manifest `row` (of `manifest`) with the audit entry of
/// the attempt to publish it, in one transaction, before anything is sent:
/// however the sending ends (an error, a crash, a hung collector), the log
/// says who published which serial, and what, to which collectors. The
/// outcome follows as its own entry (the log is append-only). `false` when
/// the serial is taken.
async fn store_audited(
    state: &BackofficeState,
    viewer: &Viewer,
    row: &ManifestRow,
    manifest: &Manifest,
) -> Result<bool, Error> {
    let attempt = serde_json::json!({
        "serial": row.serial,
        "key_id": row.key_id,
        "collectors": enabled_collectors(state),
        "manifest": manifest,
    });
    let entry = AuditEntry {
        at_ms: state.now_ms(),
        actor: &viewer.name,
        action: "manifest_publish",
        source_ip: &viewer.ip,
        detail: &attempt,
    };
    state.store().manifest_insert_audited(row, &entry).await
}

/// The names of the enabled collectors (the ones a publication goes to).
fn enabled_collectors(state: &BackofficeState) -> Vec<&str> {
    state
        .inner
        .collectors
        .iter()
        .filter(|c| c.enabled)
        .map(|c| c.name.as_str())
        .collect()
}

/// Audits how a publication of `serial` ended (`action`, the entry after
/// the attempt's): which collectors accepted and which refused and why, or
/// the error that cut it short.
/// Sends the signed manifest `serial` to the collectors (`only` those
/// named, or all), audits the outcome as `action` and answers the admin:
/// back to the configuration page, or the error.
async fn send_and_audit(
    state: &BackofficeState,
    viewer: &Viewer,
    action: &str,
    serial: i64,
    signed_json: &str,
    only: Option<&[String]>,
) -> Response {
    let outcome = publish_to_collectors(state, serial, signed_json, only).await;
    audit_outcome(state, viewer, action, serial, &outcome).await;
    match outcome {
        Ok(outcome) => {
            Redirect::to(&format!("/config?published={}", outcome.serial)).into_response()
        }
        Err(e) => layout::internal_error(Some(viewer), &e),
    }
}

async fn audit_outcome(
    state: &BackofficeState,
    viewer: &Viewer,
    action: &str,
    serial: i64,
    outcome: &Result<PublishOutcome, Error>,
) {
    let detail = match outcome {
        Ok(outcome) => {
            let accepted: Vec<&str> = outcome
                .results
                .iter()
                .filter(|r| r.accepted)
                .map(|r| r.collector.as_str())
                .collect();
            let refused: Vec<serde_json::Value> = outcome
                .results
                .iter()
                .filter(|r| !r.accepted)
                .map(|r| serde_json::json!({ "collector": r.collector, "message": r.message }))
                .collect();
            serde_json::json!({ "serial": serial, "accepted": accepted, "refused": refused })
        }
        Err(e) => serde_json::json!({ "serial": serial, "error": e.to_string() }),
    };
    state.audit(&viewer.name, action, &viewer.ip, detail).await;
}

/// The republish form.
#[derive(Debug, Deserialize)]
pub(super) struct RepublishForm {
    serial: i64,
}

/// `POST /config/republish`: the current manifest again, to the collectors
/// that have not accepted it.
pub(super) async fn republish(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
    Form(form): Form<RepublishForm>,
) -> Response {
    let store = state.store();
    let latest = match store.manifest_latest().await {
        Ok(latest) => latest,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    let Some(row) = latest.filter(|m| m.serial == form.serial) else {
        return config_response(
            &state,
            &viewer,
            StatusCode::CONFLICT,
            Some(Notice::error(
                "Only the current manifest can be published again; a newer one exists.",
            )),
            None,
        )
        .await;
    };
    let done = match store.publications(row.serial).await {
        Ok(p) => p,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    let pending: Vec<String> = state
        .inner
        .collectors
        .iter()
        .filter(|c| c.enabled)
        .map(|c| c.name.clone())
        .filter(|n| !done.iter().any(|p| &p.collector == n && p.accepted))
        .collect();
    // Audited before anything is sent, as a first publication is; nothing
    // is sent when the entry cannot be written.
    let attempt = serde_json::json!({ "serial": row.serial, "collectors": pending });
    let entry = AuditEntry {
        at_ms: state.now_ms(),
        actor: &viewer.name,
        action: "manifest_republish",
        source_ip: &viewer.ip,
        detail: &attempt,
    };
    if let Err(e) = store.audit(&entry).await {
        return layout::internal_error(Some(&viewer), &e);
    }
    send_and_audit(
        &state,
        &viewer,
        "manifest_republish_result",
        row.serial,
        &row.signed_json,
        Some(&pending),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collectors_claimed_serial_is_believed_only_near_the_published_one() {
        // Another back office's newer manifest: believed, the next serial
        // goes above it.
        assert_eq!(believed_serial(Some(41), 2), Some(41));
        assert_eq!(believed_serial(Some(7), 7), Some(7));
        assert_eq!(believed_serial(None, 7), None);
        let top = 7 + MAX_SERIAL_LEAD;
        assert_eq!(
            believed_serial(Some(u64::try_from(top).unwrap()), 7),
            Some(top)
        );
        // A compromised collector's claims that would use the serials up.
        assert_eq!(
            believed_serial(Some(u64::try_from(top + 1).unwrap()), 7),
            None
        );
        assert_eq!(believed_serial(Some(u64::MAX), 7), None);
        assert_eq!(
            believed_serial(Some(u64::try_from(i64::MAX).unwrap()), 7),
            None
        );
    }

    fn form() -> ManifestForm {
        ManifestForm {
            endpoints: "https://c1.example.net\n\n https://c2.example.net \n".to_owned(),
            path_patterns: "/api/v1/report\n/r/*/up".to_owned(),
            interval_secs: "3600".to_owned(),
            jitter_secs: "600".to_owned(),
            catalog_versions: "carriers = 2026.11".to_owned(),
            ..ManifestForm::default()
        }
    }

    #[test]
    fn the_form_becomes_a_valid_manifest() {
        let now = Utc::now();
        let m = form().to_manifest(7, now, 90).unwrap();
        assert_eq!(m.serial, 7);
        assert_eq!(
            m.endpoints,
            ["https://c1.example.net", "https://c2.example.net"]
        );
        assert_eq!(m.catalog_versions["carriers"], "2026.11");
        assert_eq!(m.expires_at - m.issued_at, chrono::Duration::days(90));
        assert!(m.latest_agent.is_none());
        // And back.
        let again = ManifestForm::from_manifest(&m)
            .to_manifest(7, now, 90)
            .unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn a_catalog_listed_twice_is_a_problem_not_a_silent_choice() {
        // The second line used to replace the first without a word.
        let twice = ManifestForm {
            catalog_versions: "carriers = 2026.11\ncities = 2026.01\ncarriers = 2025.01".to_owned(),
            ..form()
        };
        let problems = twice.to_manifest(1, Utc::now(), 90).unwrap_err().join("; ");
        assert!(
            problems.contains("\"carriers\" is listed twice"),
            "{problems}"
        );
        let once = ManifestForm {
            catalog_versions: "carriers = 2026.11\ncities = 2026.01".to_owned(),
            ..form()
        };
        assert_eq!(
            once.to_manifest(1, Utc::now(), 90)
                .unwrap()
                .catalog_versions
                .len(),
            2
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let bad = ManifestForm {
            endpoints: "http://plain.example.net".to_owned(),
            interval_secs: "often".to_owned(),
            agent_version: "1.2.0".to_owned(),
            catalog_versions: "carriers".to_owned(),
            ..form()
        };
        let problems = bad.to_manifest(1, Utc::now(), 90).unwrap_err().join("; ");
        for want in [
            "interval_secs",
            "latest_agent",
            "catalog_versions",
            "https://",
        ] {
            assert!(problems.contains(want), "{want}: {problems}");
        }
    }
}
