//! Probe key enrolment: `POST` on one of `signing.enrol_paths`.
//!
//! A probe sends an [`EnrolRequest`] (its `install_id`, its Ed25519 public
//! key, a fresh nonce) signed with the private key of the key it enrols
//! (purpose `enrol`), which proves it holds that key: nobody can enrol a
//! public key copied from someone else. The timestamp window and the replay
//! check apply as for reports.
//!
//! # Policy: a different key for a known `install_id`
//!
//! An `install_id` is not a secret, so the obvious attack is to enrol one's
//! own key under someone else's `install_id`, to send reports in its name
//! or to lock the real probe out. The receiver cannot refuse a new key
//! outright either: a real probe that lost its key (app data cleared,
//! platform key store reset) has no way to prove who it is. So:
//!
//! - the new key is accepted and becomes the current one, but the
//!   installation is marked as changed: every report from it — signed by
//!   the new key *or an earlier one* — carries `key_changed` for
//!   `signing.key_change_flag_days`. Neither party can make its reports look
//!   clean, and the internal side sees the installation as contested;
//! - earlier keys stay valid: a hijacker cannot lock the real probe out by
//!   enrolling over it, only make its reports flagged;
//! - keys are kept with when and from which address they were enrolled, so
//!   a contested installation can be investigated; at most
//!   `signing.max_keys_per_install` keys per installation, so the history
//!   stays bounded: one more retires the key enrolled least recently (the
//!   retirement is logged with its history). Refusing it instead (409) let
//!   anyone who knew an `install_id` fill its keys at a node before the
//!   probe enrolled there and lock the probe out for good; now a probe
//!   whose key was retired is answered `unknown_key` and enrols again,
//!   retiring one of theirs, and its reports are flagged as contested;
//! - at most `signing.max_enrolled_installs` installations are kept, so
//!   that nobody can grow the store (and the index of enrolled
//!   installations in memory) without bound by enrolling made-up install
//!   ids: one more forgets the installation heard from least recently (its
//!   last enrolment, or the first verified report of the latest day it sent
//!   one), logged. A contested one (key changed within
//!   `signing.key_change_flag_days`) is never forgotten, so a contest cannot
//!   be washed out by a flood of enrolments; when every one is contested
//!   the enrolment is refused (503, `enrolments_full`). A forgotten
//!   installation is as one that never enrolled: its probe is answered
//!   `unknown_key` and enrols again, and until it does, unsigned reports in
//!   its name are taken (flagged `unsigned`) unless `signing.require` is on;
//! - unsigned reports for an enrolled installation are refused (see
//!   [`crate::signature`]), so enrolling never makes it easier to speak in a
//!   probe's name than not enrolling.
//!
//! Enrolments are rare (once per probe and node, again after key loss); the
//! traffic limits of the public listener bound the rate at which anyone can
//! enrol: the ingest router admits an enrolment as it admits a report,
//! counting it for its source and throttling it with the source's reports,
//! and an enrolment refused for what was sent counts as a reject of its
//! source, as an invalid or forged report does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use http_body_util::{BodyExt, Limited};
use lineprobe_shared::{
    EnrolRequest, EnrolResponse, InstallId, ProbePublicKey, SignedPurpose, body_sha256_hex,
    signed_message,
};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::signature::{SignatureRejection, SignatureVerifier, forged, signature_header};
use crate::{ConnInfo, EnrolOutcome, IngestOutcome, egress_address};

/// Largest enrolment body accepted, in bytes: the request is about 150.
pub const MAX_ENROL_BODY_BYTES: usize = 4096;

/// Serves one enrolment request (the caller matched the path and method,
/// and admitted it) within `request_timeout` (`limits.request_timeout_ms`,
/// body and store included, as for a report): the answer, and how traffic
/// accounting should take it (see [`traffic_outcome`]).
pub(crate) async fn enrol(
    verifier: &Arc<SignatureVerifier>,
    trusted_proxies: &[ipnet::IpNet],
    request_timeout: Duration,
    slots: &Arc<Semaphore>,
    request: Request,
) -> (Response, Option<IngestOutcome>) {
    let outcome = enrol_inner(verifier, trusted_proxies, request_timeout, slots, request).await;
    let (result, response) = match outcome {
        Ok((result, response)) => (result, response),
        Err(rejection) => (rejection.0, rejection.1),
    };
    verifier.metrics().enrolment(result);
    (response, traffic_outcome(result))
}

/// How traffic accounting takes an enrolment that ended with `result`: as
/// a reject of its source when it was refused for what was sent (malformed,
/// unsigned, forged, replayed…), as an invalid or forged report is; `None`
/// (counted, and neither a reject nor an accepted report) when it was
/// accepted — an enrolment is no report, and must not raise its source's
/// trust — or refused by policy or for the receiver's own failure.
fn traffic_outcome(result: &str) -> Option<IngestOutcome> {
    match result {
        "enrolled" | "already_enrolled" | "key_changed" | "enrolments_full" | "storage_error"
        | "timeout" | "aborted" | "overloaded" => None,
        "invalid" => Some(IngestOutcome::Invalid),
        "unsupported" => Some(IngestOutcome::UnsupportedMedia),
        _ => Some(IngestOutcome::SignatureRejected),
    }
}

type Refusal = Box<(&'static str, Response)>;

fn refuse(result: &'static str, status: StatusCode, code: &str, detail: &str) -> Refusal {
    Box::new((
        result,
        (
            status,
            axum::Json(json!({
                "error": code,
                "detail": detail,
                "server_time": Utc::now().timestamp(),
            })),
        )
            .into_response(),
    ))
}

#[allow(clippy::needless_pass_by_value)] // used as a `map_err` function
fn from_signature(rejection: SignatureRejection) -> Refusal {
    Box::new((rejection.outcome.as_str(), rejection.into_response()))
}

async fn enrol_inner(
    verifier: &Arc<SignatureVerifier>,
    trusted_proxies: &[ipnet::IpNet],
    request_timeout: Duration,
    slots: &Arc<Semaphore>,
    request: Request,
) -> Result<(&'static str, Response), Refusal> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    check_identity_coding(&parts.headers)?;
    let bytes = read_body(body, request_timeout).await?;
    // A request slot only once the body is in, as for reports: a client
    // trickling its body must not hold one.
    let _slot = take_slot(slots)?;
    let (enrolment, key) = parse_enrolment(&bytes)?;
    let header = signature_header(&parts.headers)
        .map_err(from_signature)?
        .ok_or_else(|| {
            refuse(
                "unsigned",
                StatusCode::UNAUTHORIZED,
                "signature_required",
                "sign the enrolment with the key it enrols (LineProbe-Signature header, purpose \
                 enrol, the enrolment's nonce as nonce)",
            )
        })?;
    if header.key_id != key.key_id() {
        return Err(refuse(
            "forged",
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            &format!(
                "the signature names key {} but the enrolment carries key {}; sign with the key \
                 being enrolled",
                header.key_id,
                key.key_id()
            ),
        ));
    }
    let now = Utc::now();
    verifier
        .check_time(header.ts, now)
        .map_err(from_signature)?;
    let message = signed_message(
        SignedPurpose::Enrol,
        &enrolment.install_id,
        &enrolment.nonce,
        header.ts,
        &body_sha256_hex(&bytes),
    );
    key.verify(&message, &header.signature)
        .map_err(|e| from_signature(forged(&e)))?;
    let replay_key = verifier
        .claim(&message, header.ts, now)
        .map_err(from_signature)?;
    let from = parts.extensions.get::<ConnInfo>().map_or_else(
        || std::net::IpAddr::from([0, 0, 0, 0]),
        |conn| egress_address(conn, &parts.headers, trusted_proxies).0,
    );
    let stored = tokio::time::timeout(
        request_timeout.saturating_sub(started.elapsed()),
        verifier.staging().enrol_key(
            &enrolment.install_id,
            key,
            from,
            verifier.config().enrolment_bounds(),
        ),
    )
    .await;
    let outcome = match stored {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            // As after a timeout, the replay entry is forgotten so that the
            // probe may send the same signed request again.
            verifier.release_key(replay_key);
            return Err(not_recorded(Some(&e)));
        }
        Err(_) => {
            // The key may still be recorded after this; a retry is then
            // answered `already_enrolled`.
            verifier.release_key(replay_key);
            return Err(not_recorded(None));
        }
    };
    Ok(answer(&enrolment.install_id, &key, &outcome))
}

/// The refusal of an enrolment the store did not record: `error`, or no
/// confirmation in time (`None`).
fn not_recorded(error: Option<&crate::Error>) -> Refusal {
    let (result, code, detail, retry_after) = match error {
        None => (
            "timeout",
            "timeout",
            "the enrolment was not confirmed recorded in time; retry later",
            5,
        ),
        Some(e @ crate::Error::EnrolmentsFull { .. }) => {
            tracing::warn!(error = %e, "an enrolment was refused");
            (
                "enrolments_full",
                "enrolments_full",
                "the receiver cannot take more enrolled installations right now; retry later",
                3600,
            )
        }
        Some(e) => {
            tracing::error!(error = %e, "cannot record an enrolment; answering 503");
            (
                "storage_error",
                "storage_unavailable",
                "the enrolment was not recorded; retry later",
                30,
            )
        }
    };
    let mut refusal = refuse(result, StatusCode::SERVICE_UNAVAILABLE, code, detail);
    refusal
        .1
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after.into());
    refusal
}

/// The enrolment and its key, checked.
fn parse_enrolment(bytes: &[u8]) -> Result<(EnrolRequest, ProbePublicKey), Refusal> {
    let enrolment: EnrolRequest = serde_json::from_slice(bytes).map_err(|e| {
        refuse(
            "invalid",
            StatusCode::BAD_REQUEST,
            "invalid_enrolment",
            &format!(
                "the body is not an enrolment ({{\"install_id\", \"public_key\", \"nonce\"}}): {e}"
            ),
        )
    })?;
    let key = ProbePublicKey::from_base64(&enrolment.public_key).map_err(|e| {
        refuse(
            "invalid",
            StatusCode::BAD_REQUEST,
            "invalid_enrolment",
            &format!("public_key: {e}"),
        )
    })?;
    if !(8..=64).contains(&enrolment.nonce.len())
        || !enrolment
            .nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(refuse(
            "invalid",
            StatusCode::BAD_REQUEST,
            "invalid_enrolment",
            "nonce: use a fresh random UUID (8 to 64 letters, digits and '-')",
        ));
    }
    Ok((enrolment, key))
}

fn answer(
    install_id: &InstallId,
    key: &ProbePublicKey,
    outcome: &EnrolOutcome,
) -> (&'static str, Response) {
    let respond = |result: &'static str, status: StatusCode| {
        let body = EnrolResponse {
            status: result.to_owned(),
            key_id: key.key_id(),
            server_time: Utc::now().timestamp(),
        };
        (result, (status, axum::Json(body)).into_response())
    };
    match outcome {
        EnrolOutcome::New { forgotten } => {
            for gone in forgotten {
                tracing::info!(
                    install_id = gone.install_id,
                    first_seen = %gone.first_seen,
                    last_active = %gone.last_active,
                    "the node keeps as many enrolled installations as \
                     signing.max_enrolled_installs allows: the one heard from least recently is \
                     forgotten (its probe enrols again when it is next answered unknown_key)"
                );
            }
            respond("enrolled", StatusCode::CREATED)
        }
        EnrolOutcome::Same => respond("already_enrolled", StatusCode::OK),
        EnrolOutcome::Changed {
            previous_key_id,
            retired,
        } => {
            tracing::warn!(
                %install_id,
                previous_key_id,
                key_id = key.key_id(),
                "a probe enrolled a different key for a known install_id; its reports are flagged"
            );
            if let Some(r) = retired {
                tracing::warn!(
                    %install_id,
                    retired_key_id = r.key_id,
                    enrolled_at = %r.enrolled_at,
                    last_enrolled_at = %r.last_enrolled_at,
                    enrolled_from = r.enrolled_from,
                    "the installation has as many keys as signing.max_keys_per_install keeps: \
                     the key enrolled least recently is retired (a probe holding it enrols again)"
                );
            }
            respond("key_changed", StatusCode::CREATED)
        }
    }
}

/// One of the public listener's request slots, or the prompt 503 that
/// sheds the enrolment when all are taken.
fn take_slot(slots: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, Refusal> {
    Arc::clone(slots)
        .try_acquire_owned()
        .map_err(|_| Box::new(("overloaded", crate::ingest::overloaded())))
}

/// An enrolment is about 150 bytes, and probes send it as it is: a coded
/// body (gzip…) is refused as such (415), not parsed as JSON and refused as
/// a malformed enrolment of its source.
fn check_identity_coding(headers: &axum::http::HeaderMap) -> Result<(), Refusal> {
    // The reports' reading of the header (every header and list element,
    // identity being no coding); an enrolment takes no coding at all.
    match crate::ingest::gzip_layers(headers) {
        Ok(0) => Ok(()),
        Ok(_) | Err(_) => Err(refuse(
            "unsupported",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            "send the enrolment as plain JSON, without Content-Encoding",
        )),
    }
}

async fn read_body(body: Body, timeout: Duration) -> Result<axum::body::Bytes, Refusal> {
    match tokio::time::timeout(timeout, Limited::new(body, MAX_ENROL_BODY_BYTES).collect()).await {
        // Slow, not wrong: like a report's body that comes too slowly, no
        // reject of its source.
        Err(_) => Err(refuse(
            "timeout",
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the body did not arrive in time",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(refuse(
            "invalid",
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("an enrolment is at most {MAX_ENROL_BODY_BYTES} bytes"),
        )),
        // Broken off: a dropped connection, no reject of its source either.
        Ok(Err(e)) => Err(refuse(
            "aborted",
            StatusCode::BAD_REQUEST,
            "bad_body",
            &format!("cannot read the body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}
