//! Checking probe signatures on reports before they are staged.
//!
//! A report may carry a `LineProbe-Signature` header (format in
//! `lineprobe_shared::SignatureHeader`). Before staging, the receiver checks,
//! in this order, and refuses with a JSON 4xx that says what is wrong:
//!
//! 1. the header is well-formed (400 `bad_signature_header`);
//! 2. the timestamp is within `signing.max_clock_skew_secs` of this node's
//!    clock (401 `stale_timestamp`, with `server_time` so that a probe with
//!    a wrong clock can correct itself);
//! 3. the key id names a key enrolled for the report's `install_id`
//!    (401 `unknown_key`: enrol first);
//! 4. the signature verifies over the decoded body's SHA-256, the
//!    `report_id`, the timestamp and the `install_id` (401 `bad_signature`:
//!    forged, or changed on the way);
//! 5. the same signed request was not already accepted within the window
//!    (409 `replayed`).
//!
//! An unsigned report is accepted as [`SignatureCheck::Unsigned`] unless
//! `signing.require` is set, or its `install_id` has enrolled a key: then it
//! is refused (401 `signature_required`). The second rule stops the obvious
//! downgrade — stripping the signature off, or writing an unsigned report in
//! an enrolled probe's name — since a probe that enrolled always signs.
//!
//! The replay cache is in memory and bounded. An entry lives until its
//! timestamp leaves the window, after which the timestamp check refuses the
//! request anyway (and so does the claim, for a request whose window ends
//! while its keys are read: its first copy may have been forgotten by
//! then). When the cache is full the entry closest to expiry is
//! dropped (counted in metrics); a replay that slips through that way, or
//! one sent to a restarted node, still cannot store anything twice, because
//! staging answers a known `report_id` with `duplicate`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use lineprobe_shared::{
    ArrivalTrust, InstallId, Report, SIGNATURE_HEADER, SignatureCheck, SignatureFault,
    SignatureHeader, SignedPurpose, TrustReason, TrustScore, body_sha256_hex, signed_message,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{Error, InstallKeys, Staging};

/// The `[signing]` configuration: signed probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Refuse unsigned reports (401 `signature_required`) instead of
    /// accepting them as `unsigned`. Leave off while probes that predate
    /// signing are still in the field.
    pub require: bool,
    /// Path patterns on which probes enrol their keys (`POST`), in the
    /// syntax of `public.paths`. Must not overlap the report paths.
    pub enrol_paths: Vec<String>,
    /// How far a signature's timestamp may be from this node's clock, in
    /// seconds, either way; also how long a signed request is remembered
    /// for the replay check.
    pub max_clock_skew_secs: u64,
    /// Most signed requests remembered for the replay check.
    pub replay_cache_max: usize,
    /// Reports of an installation whose key changed are flagged
    /// `key_changed` for this many days after the change.
    pub key_change_flag_days: u64,
    /// Most keys one `install_id` keeps, so that nobody can grow one
    /// installation's history without bound; one more retires the key
    /// enrolled least recently (the enrolment policy, `enrol.rs`).
    pub max_keys_per_install: usize,
    /// Most installations with enrolled keys this node keeps, so that
    /// nobody can grow the store (and the index of enrolled installations
    /// it keeps in memory) without bound by enrolling made-up install ids.
    /// One more forgets the installation heard from least recently (its
    /// last enrolment or the first signed report of its latest day), never
    /// one whose key changed within `key_change_flag_days`; when every
    /// installation is such a one, the enrolment is refused (503).
    pub max_enrolled_installs: u64,
}

impl Default for SigningConfig {
    fn default() -> Self {
        Self {
            require: false,
            enrol_paths: vec!["/api/v1/enrol".to_owned(), "/api/v1/*/enrol".to_owned()],
            max_clock_skew_secs: 300,
            replay_cache_max: 200_000,
            key_change_flag_days: 30,
            max_keys_per_install: 8,
            max_enrolled_installs: 1_000_000,
        }
    }
}

impl SigningConfig {
    /// The bounds enrolments are recorded within.
    pub fn enrolment_bounds(&self) -> crate::EnrolmentBounds {
        crate::EnrolmentBounds {
            max_keys_per_install: self.max_keys_per_install,
            max_enrolled_installs: self.max_enrolled_installs,
            contested_for: chrono::Duration::days(
                i64::try_from(self.key_change_flag_days).unwrap_or(i64::MAX / 86_400_000),
            ),
        }
    }

    /// Checks the rules types cannot; `report_paths` are `public.paths`,
    /// which the enrolment paths must not overlap.
    pub fn validate(&self, report_paths: &crate::PathSet) -> Result<(), Error> {
        let bad = |key: &str, reason: String| {
            Err(Error::Config {
                key: format!("signing.{key}"),
                reason,
            })
        };
        if self.enrol_paths.is_empty() {
            return bad(
                "enrol_paths",
                "list at least one path pattern, e.g. \"/api/v1/enrol\"".to_owned(),
            );
        }
        for (i, p) in self.enrol_paths.iter().enumerate() {
            let pattern = match crate::PathPattern::parse(p) {
                Err(reason) => return bad(&format!("enrol_paths[{i}]"), reason),
                Ok(pattern) => pattern,
            };
            // A path both patterns match would be ambiguous: the router
            // takes a `POST` there for an enrolment, so every report sent to
            // it would be refused. Checked on the patterns, both ways, not
            // only on this one's literal form.
            if let Some(report) = report_paths.overlapping(&pattern) {
                return bad(
                    &format!("enrol_paths[{i}]"),
                    format!(
                        "{p:?} is also a report path: it overlaps \"{report}\" in public.paths, \
                         so some paths would be both; use another path"
                    ),
                );
            }
        }
        if !(10..=86_400).contains(&self.max_clock_skew_secs) {
            return bad(
                "max_clock_skew_secs",
                format!(
                    "{} is out of range: use 10 to 86400 seconds (300 is a good start)",
                    self.max_clock_skew_secs
                ),
            );
        }
        if !(1_000..=50_000_000).contains(&self.replay_cache_max) {
            return bad(
                "replay_cache_max",
                format!(
                    "{} is out of range: use 1000 to 50000000",
                    self.replay_cache_max
                ),
            );
        }
        if self.key_change_flag_days > 3650 {
            return bad(
                "key_change_flag_days",
                "use at most 3650 days (0 flags no report)".to_owned(),
            );
        }
        if !(1..=64).contains(&self.max_keys_per_install) {
            return bad(
                "max_keys_per_install",
                format!("{} is out of range: use 1 to 64", self.max_keys_per_install),
            );
        }
        if !(1..=100_000_000).contains(&self.max_enrolled_installs) {
            return bad(
                "max_enrolled_installs",
                format!(
                    "{} is out of range: use 1 to 100000000 (each takes about 300 bytes on disk \
                     and 20 in memory)",
                    self.max_enrolled_installs
                ),
            );
        }
        Ok(())
    }
}

/// How signature checks and enrolments ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureOutcome {
    /// Signed by the enrolled key: accepted.
    Verified,
    /// Signed and verified, installation's key changed recently: accepted, flagged.
    KeyChanged,
    /// Not signed: accepted with lower trust.
    Unsigned,
    /// Not signed, but signatures are required (or the install enrolled): refused.
    UnsignedRefused,
    /// The header is not well-formed: refused.
    Malformed,
    /// The timestamp is outside the window: refused.
    Stale,
    /// The key is not enrolled for the installation: refused.
    UnknownKey,
    /// The signature does not verify: refused.
    Forged,
    /// The same signed request again: refused.
    Replayed,
    /// The enrolled keys could not be read: not checked (503). The
    /// receiver's failure, not the request's fault.
    StorageError,
}

impl SignatureOutcome {
    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::KeyChanged => "key_changed",
            Self::Unsigned => "unsigned",
            Self::UnsignedRefused => "unsigned_refused",
            Self::Malformed => "malformed",
            Self::Stale => "stale",
            Self::UnknownKey => "unknown_key",
            Self::Forged => "forged",
            Self::Replayed => "replayed",
            Self::StorageError => "storage_error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Counters of signature checks, enrolments and replay-cache evictions.
#[derive(Debug, Clone, Default)]
pub struct SignatureMetrics {
    checks: Family<ResultLabel, Counter>,
    enrolments: Family<ResultLabel, Counter>,
    replay_evictions: Counter,
}

impl SignatureMetrics {
    /// Creates the counters and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "signature_checks",
            "Signature checks of reports, by result (verified, key_changed, unsigned, and the \
             reasons for refusal)",
            metrics.checks.clone(),
        );
        registry.register(
            "enrolments",
            "Probe key enrolments, by result",
            metrics.enrolments.clone(),
        );
        registry.register(
            "replay_cache_evictions",
            "Signed requests dropped from the full replay cache before their window ended",
            metrics.replay_evictions.clone(),
        );
        metrics
    }

    /// Counts one report's signature check.
    pub fn check(&self, outcome: SignatureOutcome) {
        self.checks
            .get_or_create(&ResultLabel {
                result: outcome.as_str(),
            })
            .inc();
    }

    /// How many checks ended with `outcome`.
    pub fn check_count(&self, outcome: SignatureOutcome) -> u64 {
        self.checks
            .get_or_create(&ResultLabel {
                result: outcome.as_str(),
            })
            .get()
    }

    /// Counts one enrolment by its result label.
    pub fn enrolment(&self, result: &'static str) {
        self.enrolments.get_or_create(&ResultLabel { result }).inc();
    }

    /// How many enrolments ended with `result`.
    pub fn enrolment_count(&self, result: &'static str) -> u64 {
        self.enrolments.get_or_create(&ResultLabel { result }).get()
    }
}

/// A refused request: the status, a machine-readable code and a sentence.
#[derive(Debug, Clone)]
pub struct SignatureRejection {
    /// Counted as.
    pub outcome: SignatureOutcome,
    /// The HTTP status.
    pub status: StatusCode,
    /// The `error` code in the JSON answer.
    pub code: &'static str,
    /// What is wrong and what to do.
    pub detail: String,
}

impl IntoResponse for SignatureRejection {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.code,
            "detail": self.detail,
            // A probe with a wrong clock learns the right one here.
            "server_time": Utc::now().timestamp(),
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("LineProbe-Signature version=\"v1\""),
            );
        }
        response
    }
}

/// A report that passed the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedSignature {
    /// The result: `Verified`, `KeyChanged` or `Unsigned`.
    pub check: SignatureCheck,
    /// The id of the key that verified it; `None` when unsigned.
    pub key_id: Option<String>,
    /// The replay-cache entry taken for it, released again if the report
    /// is not stored (so that the probe's retry is not a "replay").
    replay_key: Option<[u8; 32]>,
}

/// Checks report signatures (shared by every ingest request).
#[derive(Debug)]
pub struct SignatureVerifier {
    config: SigningConfig,
    staging: Staging,
    replay: Mutex<ReplayCache>,
    metrics: SignatureMetrics,
}

impl SignatureVerifier {
    /// A verifier for `config`, reading enrolled keys from `staging`.
    pub fn new(config: SigningConfig, staging: Staging, metrics: SignatureMetrics) -> Arc<Self> {
        let replay = Mutex::new(ReplayCache::new(
            config.replay_cache_max,
            config.max_clock_skew_secs,
        ));
        Arc::new(Self {
            config,
            staging,
            replay,
            metrics,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SigningConfig {
        &self.config
    }

    /// The counters.
    pub fn metrics(&self) -> &SignatureMetrics {
        &self.metrics
    }

    /// The staging store (enrolments are kept there).
    pub(crate) fn staging(&self) -> &Staging {
        &self.staging
    }

    /// Checks `report`'s signature; `body` is the JSON it was parsed from
    /// (after `Content-Encoding`). Counts the result either way.
    pub async fn check_report(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        report: &Report,
    ) -> Result<CheckedSignature, SignatureRejection> {
        let result = self
            .check_report_at(headers, body, report, Utc::now())
            .await;
        self.metrics.check(match &result {
            Ok(c) => match c.check {
                SignatureCheck::Verified => SignatureOutcome::Verified,
                SignatureCheck::KeyChanged => SignatureOutcome::KeyChanged,
                SignatureCheck::Unsigned => SignatureOutcome::Unsigned,
            },
            Err(r) => r.outcome,
        });
        result
    }

    async fn check_report_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        report: &Report,
        now: DateTime<Utc>,
    ) -> Result<CheckedSignature, SignatureRejection> {
        let Some(header) = signature_header(headers)? else {
            return self.unsigned(&report.install_id).await;
        };
        self.check_time(header.ts, now)?;
        let install = self
            .install_keys(&report.install_id)
            .await?
            .ok_or_else(|| unknown_key(&report.install_id, &header.key_id))?;
        let key = install
            .key(&header.key_id)
            .ok_or_else(|| unknown_key(&report.install_id, &header.key_id))?;
        let message = signed_message(
            SignedPurpose::Report,
            &report.install_id,
            &report.report_id.to_string(),
            header.ts,
            &body_sha256_hex(body),
        );
        key.public_key
            .verify(&message, &header.signature)
            .map_err(|e| forged(&e))?;
        let replay_key = self.claim(&message, header.ts, now)?;
        // Heard from: the bound on enrolled installations forgets the one
        // silent longest.
        self.staging.note_active(&report.install_id, now);
        Ok(CheckedSignature {
            check: self.key_check(&install, now),
            key_id: Some(header.key_id.clone()),
            replay_key: Some(replay_key),
        })
    }

    /// The check of a verified request of `install`: `KeyChanged` while
    /// its latest key change is within the flag period.
    ///
    /// Both the new key and the earlier ones are flagged: when two parties
    /// hold keys for one `install_id`, the receiver cannot tell which is
    /// the real probe, so everything from that installation is marked until
    /// the period has passed without another change.
    fn key_check(&self, install: &InstallKeys, now: DateTime<Utc>) -> SignatureCheck {
        let period = self.config.enrolment_bounds().contested_for;
        match install.key_changed_at {
            Some(changed) if now - changed < period => SignatureCheck::KeyChanged,
            _ => SignatureCheck::Verified,
        }
    }

    async fn unsigned(
        &self,
        install_id: &InstallId,
    ) -> Result<CheckedSignature, SignatureRejection> {
        if self.config.require {
            return Err(SignatureRejection {
                outcome: SignatureOutcome::UnsignedRefused,
                status: StatusCode::UNAUTHORIZED,
                code: "signature_required",
                detail: format!(
                    "this receiver accepts only signed reports: enrol the probe's key at the \
                     enrolment path and send a {SIGNATURE_HEADER} header (update the probe)"
                ),
            });
        }
        if self.install_keys(install_id).await?.is_some() {
            return Err(SignatureRejection {
                outcome: SignatureOutcome::UnsignedRefused,
                status: StatusCode::UNAUTHORIZED,
                code: "signature_required",
                detail: format!(
                    "install_id {install_id} has enrolled a key, so its reports must be signed \
                     with it ({SIGNATURE_HEADER} header)"
                ),
            });
        }
        Ok(CheckedSignature {
            check: SignatureCheck::Unsigned,
            key_id: None,
            replay_key: None,
        })
    }

    /// Refuses a timestamp outside the window around `now`.
    pub(crate) fn check_time(&self, ts: i64, now: DateTime<Utc>) -> Result<(), SignatureRejection> {
        let skew = i64::try_from(self.config.max_clock_skew_secs).unwrap_or(i64::MAX);
        let off = ts.saturating_sub(now.timestamp());
        if off.abs() <= skew {
            return Ok(());
        }
        let (how, hint) = if off < 0 {
            (
                "expired",
                "sign every request (retries too) when it is sent",
            )
        } else {
            ("in the future", "set the probe's clock")
        };
        Err(SignatureRejection {
            outcome: SignatureOutcome::Stale,
            status: StatusCode::UNAUTHORIZED,
            code: "stale_timestamp",
            detail: format!(
                "the signature's timestamp {ts} is {how}: it is {} s from this receiver's clock \
                 ({}), more than the {skew} s allowed; {hint}, correcting the clock by \
                 server_time",
                off.unsigned_abs(),
                now.timestamp()
            ),
        })
    }

    /// Remembers a signed `message` for the replay check, refusing it when
    /// it is already remembered.
    pub(crate) fn claim(
        &self,
        message: &[u8],
        ts: i64,
        now: DateTime<Utc>,
    ) -> Result<[u8; 32], SignatureRejection> {
        let key: [u8; 32] = Sha256::digest(message).into();
        let expires =
            ts.saturating_add(i64::try_from(self.config.max_clock_skew_secs).unwrap_or(0));
        let mut cache = self.replay.lock().unwrap_or_else(PoisonError::into_inner);
        match cache.claim(key, expires, now.timestamp()) {
            Claim::Fresh { evicted } => {
                if evicted > 0 {
                    self.metrics.replay_evictions.inc_by(evicted);
                }
                Ok(key)
            }
            Claim::Expired => Err(SignatureRejection {
                outcome: SignatureOutcome::Stale,
                status: StatusCode::UNAUTHORIZED,
                code: "stale_timestamp",
                detail: format!(
                    "the signature's timestamp {ts} expired while the request was being checked \
                     (more than {} s from this receiver's clock); sign every request (retries \
                     too) when it is sent, correcting the clock by server_time",
                    self.config.max_clock_skew_secs
                ),
            }),
            Claim::Seen => Err(SignatureRejection {
                outcome: SignatureOutcome::Replayed,
                status: StatusCode::CONFLICT,
                code: "replayed",
                detail: "this exact signed request was already received; a retry must be signed \
                         again with a fresh timestamp"
                    .to_owned(),
            }),
        }
    }

    /// Forgets the replay entry of a report that was not stored, so that
    /// the probe may send the very same request again.
    pub fn release(&self, checked: &CheckedSignature) {
        if let Some(key) = checked.replay_key {
            self.release_key(key);
        }
    }

    /// Forgets one replay entry.
    pub(crate) fn release_key(&self, key: [u8; 32]) {
        self.replay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(&key);
    }

    async fn install_keys(
        &self,
        install_id: &InstallId,
    ) -> Result<Option<InstallKeys>, SignatureRejection> {
        self.staging.install_keys(install_id).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read enrolled keys; answering 503");
            SignatureRejection {
                outcome: SignatureOutcome::StorageError,
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "storage_unavailable",
                detail: "the receiver cannot read enrolled keys right now; retry later".to_owned(),
            }
        })
    }
}

/// The parsed signature header; `None` when absent.
pub(crate) fn signature_header(
    headers: &HeaderMap,
) -> Result<Option<SignatureHeader>, SignatureRejection> {
    let mut values = headers.get_all(SIGNATURE_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let malformed = |detail: String| SignatureRejection {
        outcome: SignatureOutcome::Malformed,
        status: StatusCode::BAD_REQUEST,
        code: "bad_signature_header",
        detail,
    };
    if values.next().is_some() {
        return Err(malformed(format!(
            "send one {SIGNATURE_HEADER} header, not several"
        )));
    }
    let text = value
        .to_str()
        .map_err(|_| malformed(format!("the {SIGNATURE_HEADER} header is not ASCII")))?;
    SignatureHeader::parse(text)
        .map(Some)
        .map_err(|e| malformed(e.to_string()))
}

fn unknown_key(install_id: &InstallId, key_id: &str) -> SignatureRejection {
    SignatureRejection {
        outcome: SignatureOutcome::UnknownKey,
        status: StatusCode::UNAUTHORIZED,
        code: "unknown_key",
        detail: format!(
            "key {key_id} is not enrolled for install_id {install_id} at this receiver; enrol it \
             at the enrolment path, then send the report again"
        ),
    }
}

pub(crate) fn forged(e: &lineprobe_shared::Error) -> SignatureRejection {
    let detail = match e {
        lineprobe_shared::Error::Signature {
            fault: SignatureFault::BadSignature,
            reason,
        } => reason.clone(),
        other => other.to_string(),
    };
    SignatureRejection {
        outcome: SignatureOutcome::Forged,
        status: StatusCode::UNAUTHORIZED,
        code: "bad_signature",
        detail,
    }
}

/// The trust recorded with a report on this branch.
///
/// INTEGRATION POINT (issue 7, trust scores): the traffic/trust code takes
/// the [`SignatureCheck`] as an argument and computes the real scores;
/// replace this function's single call in `ingest.rs` with that. Until
/// then the scores only reflect the signature: full for a verified report,
/// capped for an unsigned one or a changed key.
pub fn signature_only_trust(check: SignatureCheck) -> ArrivalTrust {
    let (score, reasons) = match check {
        SignatureCheck::Verified => (TrustScore::FULL, Vec::new()),
        SignatureCheck::Unsigned => (TrustScore::saturating(60.0), vec![TrustReason::Unsigned]),
        SignatureCheck::KeyChanged => (TrustScore::saturating(40.0), vec![TrustReason::KeyChanged]),
    };
    ArrivalTrust {
        score,
        install: TrustScore::FULL,
        prefix: TrustScore::FULL,
        signature: check,
        reasons,
        key_id: None,
    }
}

/// Signed requests seen within their window: a set by key, and an index by
/// expiry to drop expired entries (and, when full, the next to expire).
#[derive(Debug)]
struct ReplayCache {
    max: usize,
    expiry_of: HashMap<[u8; 32], i64>,
    by_expiry: BTreeSet<(i64, [u8; 32])>,
    /// The latest `now` any claim pruned with: every entry that expired
    /// before it may be gone, so a request whose window ended before it
    /// can no longer be told from a replay.
    pruned_before: i64,
    /// A `now` this far behind `pruned_before` is the clock stepped back,
    /// not a request checked a little earlier: the window's length.
    step_back: i64,
}

enum Claim {
    Fresh {
        evicted: u64,
    },
    Seen,
    /// The request's window ended before entries were last pruned: its
    /// first copy may have been forgotten, so it cannot be claimed.
    Expired,
}

impl ReplayCache {
    fn new(max: usize, window_secs: u64) -> Self {
        Self {
            max: max.max(1),
            expiry_of: HashMap::new(),
            by_expiry: BTreeSet::new(),
            pruned_before: i64::MIN,
            step_back: i64::try_from(window_secs).unwrap_or(i64::MAX),
        }
    }

    /// Claims `key`, a request valid until `expires`, checked at `now`.
    ///
    /// Requests are checked concurrently, each with the time it was read
    /// at, and claimed after an await (the enrolled keys' lookup): a claim
    /// with a later `now` may meanwhile have pruned an entry this request's
    /// own `now` still counts as alive. Pruning goes by the latest `now`
    /// seen, and a request whose window ended before it is refused, never
    /// taken as fresh because its first copy was pruned. A `now` a whole
    /// window behind that is the clock set back (requests are checked
    /// within `limits.request_timeout_ms`): pruning then starts again from
    /// it, rather than refusing every request until the clock catches up.
    fn claim(&mut self, key: [u8; 32], expires: i64, now: i64) -> Claim {
        if now.saturating_add(self.step_back) < self.pruned_before {
            self.pruned_before = now;
        }
        self.pruned_before = self.pruned_before.max(now);
        while let Some(&(at, old)) = self.by_expiry.first() {
            if at >= self.pruned_before {
                break;
            }
            self.by_expiry.pop_first();
            self.expiry_of.remove(&old);
        }
        if self.expiry_of.contains_key(&key) {
            return Claim::Seen;
        }
        if expires < self.pruned_before {
            return Claim::Expired;
        }
        let mut evicted = 0;
        while self.expiry_of.len() >= self.max {
            let Some((_, old)) = self.by_expiry.pop_first() else {
                break;
            };
            self.expiry_of.remove(&old);
            evicted += 1;
        }
        self.expiry_of.insert(key, expires);
        self.by_expiry.insert((expires, key));
        Claim::Fresh { evicted }
    }

    fn release(&mut self, key: &[u8; 32]) {
        if let Some(at) = self.expiry_of.remove(key) {
            self.by_expiry.remove(&(at, *key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_cache_remembers_within_the_window_and_stays_bounded() {
        let mut cache = ReplayCache::new(3, 300);
        assert!(matches!(
            cache.claim([1; 32], 100, 50),
            Claim::Fresh { evicted: 0 }
        ));
        assert!(matches!(cache.claim([1; 32], 100, 60), Claim::Seen));
        // Past its expiry the entry is gone (the timestamp check refuses it
        // by then anyway).
        assert!(matches!(
            cache.claim([1; 32], 150, 101),
            Claim::Fresh { evicted: 0 }
        ));
        cache.claim([2; 32], 200, 101);
        cache.claim([3; 32], 300, 101);
        // Full: the entry closest to expiry makes room.
        assert!(matches!(
            cache.claim([4; 32], 400, 101),
            Claim::Fresh { evicted: 1 }
        ));
        assert_eq!(cache.expiry_of.len(), 3);
        assert!(matches!(cache.claim([4; 32], 400, 102), Claim::Seen));
        cache.release(&[4; 32]);
        assert!(matches!(
            cache.claim([4; 32], 400, 102),
            Claim::Fresh { .. }
        ));
        assert_eq!(cache.expiry_of.len(), cache.by_expiry.len());
    }

    /// A replay checked before the original's window ended, but claimed
    /// after a later claim pruned the original (its enrolled keys were
    /// being read meanwhile), must not be taken as fresh.
    #[test]
    fn a_replay_claimed_after_its_original_was_pruned_is_not_fresh() {
        let mut cache = ReplayCache::new(10, 300);
        // The original, valid until 1000, claimed at 995.
        assert!(matches!(
            cache.claim([1; 32], 1000, 995),
            Claim::Fresh { evicted: 0 }
        ));
        // Another request, claimed at 1002, prunes it.
        assert!(matches!(
            cache.claim([2; 32], 1200, 1002),
            Claim::Fresh { evicted: 0 }
        ));
        // The replay passed the time check at 999 and is claimed now.
        assert!(matches!(cache.claim([1; 32], 1000, 999), Claim::Expired));
        assert!(!cache.expiry_of.contains_key(&[1; 32]));
        // A request still inside its window is claimed as ever.
        assert!(matches!(
            cache.claim([3; 32], 1100, 999),
            Claim::Fresh { evicted: 0 }
        ));
        assert!(matches!(cache.claim([2; 32], 1200, 1001), Claim::Seen));
        // The clock set back by more than a window: requests are claimed
        // from the new time, not refused until it catches up.
        assert!(matches!(
            cache.claim([4; 32], 600, 500),
            Claim::Fresh { evicted: 0 }
        ));
        assert!(matches!(cache.claim([4; 32], 600, 501), Claim::Seen));
    }

    #[test]
    fn config_rules() {
        let paths = crate::PathSet::parse(&["/api/v1/report".to_owned()]).expect("paths");
        SigningConfig::default().validate(&paths).expect("defaults");
        let overlapping = SigningConfig {
            enrol_paths: vec!["/api/v1/report".to_owned()],
            ..SigningConfig::default()
        };
        let e = overlapping.validate(&paths).expect_err("overlap");
        assert!(e.to_string().contains("also a report path"), "{e}");
        let skew = SigningConfig {
            max_clock_skew_secs: 1,
            ..SigningConfig::default()
        };
        assert!(skew.validate(&paths).is_err());
        let empty = SigningConfig {
            enrol_paths: Vec::new(),
            ..SigningConfig::default()
        };
        assert!(empty.validate(&paths).is_err());
        for (installs, ok) in [
            (0, false),
            (1, true),
            (100_000_000, true),
            (100_000_001, false),
        ] {
            let bound = SigningConfig {
                max_enrolled_installs: installs,
                ..SigningConfig::default()
            };
            let result = bound.validate(&paths);
            assert_eq!(result.is_ok(), ok, "{installs}: {result:?}");
            if let Err(e) = result {
                assert!(
                    e.to_string().contains("signing.max_enrolled_installs"),
                    "{e}"
                );
            }
        }
    }
}
