//! Signed probes: the wire format of a probe's request signature.
//!
//! A probe holds an Ed25519 key pair of its own, enrols the public key with
//! its `install_id` at the collector, and signs every upload. The signature
//! covers a canonical, domain-separated text (see [`signed_message`]) built
//! from:
//!
//! - a version tag and the request's purpose (`report` or `enrol`), so that
//!   a signature made for one purpose or format version is never valid for
//!   another;
//! - the `install_id`;
//! - a nonce: the report's `report_id` (an enrolment carries its own);
//! - a timestamp in Unix seconds, which the collector checks against its own
//!   clock within a window;
//! - the SHA-256 of the request body *after* any `Content-Encoding` is
//!   removed, i.e. of the JSON the collector parses. Signing the decoded JSON
//!   rather than the bytes on the wire lets a proxy re-compress without
//!   breaking signatures, while any change to the report itself does.
//!
//! The signature travels in one header, `LineProbe-Signature`:
//!
//! ```text
//! LineProbe-Signature: v1; key=3f2a…(16 hex); ts=1767225600; sig=<base64 of 64 bytes>
//! ```
//!
//! `install_id` and the nonce are not repeated in the header: the collector
//! takes them from the body it has just parsed, so they cannot disagree.
//! Ed25519 signatures are deterministic, so the same message always gives the
//! same signature; a retry is therefore signed again with a fresh timestamp,
//! which keeps good-faith retries apart from replays.

use std::fmt;
use std::fmt::Write as _;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, InstallId};

/// The request header that carries a probe's signature.
pub const SIGNATURE_HEADER: &str = "lineprobe-signature";

/// The version tag of the signature format, first in the header and in the
/// signed message.
pub const SIGNATURE_VERSION: &str = "v1";

/// Longest `LineProbe-Signature` header value accepted, in bytes: the
/// fields take about 130; anything much longer is not ours.
pub const MAX_SIGNATURE_HEADER_LEN: usize = 512;

/// What a signature is for. Part of the signed message, so a signature over
/// an enrolment can never pass as one over a report, or the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignedPurpose {
    /// A report upload; the nonce is its `report_id`.
    Report,
    /// An enrolment of the signing key; the nonce is the enrolment's own.
    Enrol,
}

impl SignedPurpose {
    /// The name in the signed message.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Enrol => "enrol",
        }
    }
}

/// Why a signature, a signature header or a probe key was refused, for
/// callers that answer each differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureFault {
    /// The header is not well-formed: missing fields, bad base64, wrong
    /// lengths, an unknown version.
    Malformed,
    /// The signature does not verify: forged, or the body, nonce,
    /// timestamp or `install_id` changed after signing.
    BadSignature,
    /// A public or private key could not be read, or is weak.
    Key,
}

fn fault(fault: SignatureFault, reason: impl Into<String>) -> Error {
    Error::Signature {
        fault,
        reason: reason.into(),
    }
}

/// SHA-256 of `body`, as 64 lowercase hex digits.
pub fn body_sha256_hex(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

/// Whether `text` is a key id: 16 lowercase hex digits, the form
/// [`ProbePublicKey::key_id`] gives.
pub fn is_key_id(text: &str) -> bool {
    text.len() == 16
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The exact bytes a probe signs: one `name=value` line per field, in a
/// fixed order, joined by `\n`, without a trailing newline.
///
/// ```text
/// lineprobe-signature-v1
/// purpose=report
/// install_id=…
/// nonce=…
/// ts=…
/// body_sha256=…
/// ```
///
/// No field can contain a newline (`install_id` and the nonce are validated
/// tokens, the others are numbers and hex), so the text is unambiguous.
pub fn signed_message(
    purpose: SignedPurpose,
    install_id: &InstallId,
    nonce: &str,
    ts: i64,
    body_sha256_hex: &str,
) -> Vec<u8> {
    format!(
        "lineprobe-signature-{SIGNATURE_VERSION}\npurpose={}\ninstall_id={}\nnonce={}\nts={ts}\n\
         body_sha256={body_sha256_hex}",
        purpose.as_str(),
        install_id.as_str(),
        nonce.replace(['\n', '\r'], ""),
    )
    .into_bytes()
}

/// A parsed `LineProbe-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// The id of the signing key ([`ProbePublicKey::key_id`]).
    pub key_id: String,
    /// When the probe signed, Unix seconds by its clock.
    pub ts: i64,
    /// The Ed25519 signature.
    pub signature: [u8; 64],
}

impl SignatureHeader {
    /// Reads a header value: `v1; key=<16 hex>; ts=<secs>; sig=<base64>`,
    /// fields in any order, separated by `;` with optional spaces. Every
    /// error says which field is wrong and what it should look like.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let malformed = |reason: String| fault(SignatureFault::Malformed, reason);
        if value.len() > MAX_SIGNATURE_HEADER_LEN {
            return Err(malformed(format!(
                "the LineProbe-Signature header is {} bytes; at most {MAX_SIGNATURE_HEADER_LEN} \
                 are accepted",
                value.len()
            )));
        }
        let mut parts = value.split(';').map(str::trim);
        match parts.next() {
            Some(SIGNATURE_VERSION) => {}
            Some(other) => {
                return Err(malformed(format!(
                    "the LineProbe-Signature header starts with {:?}; this receiver knows \
                     version `{SIGNATURE_VERSION}` (`{SIGNATURE_VERSION}; key=…; ts=…; sig=…`)",
                    cut(other)
                )));
            }
            None => return Err(malformed("the LineProbe-Signature header is empty".into())),
        }
        let (mut key_id, mut ts, mut sig) = (None, None, None);
        for part in parts.filter(|p| !p.is_empty()) {
            let Some((name, field)) = part.split_once('=') else {
                return Err(malformed(format!(
                    "{:?} in the LineProbe-Signature header is not `name=value`",
                    cut(part)
                )));
            };
            let slot = match name.trim() {
                "key" => &mut key_id,
                "ts" => &mut ts,
                "sig" => &mut sig,
                other => {
                    return Err(malformed(format!(
                        "unknown field {:?} in the LineProbe-Signature header; expected key, \
                         ts and sig",
                        cut(other)
                    )));
                }
            };
            if slot.replace(field.trim()).is_some() {
                return Err(malformed(format!(
                    "field `{}` appears twice in the LineProbe-Signature header",
                    name.trim()
                )));
            }
        }
        let missing =
            |name: &str| malformed(format!("the LineProbe-Signature header has no `{name}=`"));
        let key_id = key_id.ok_or_else(|| missing("key"))?;
        let ts = ts.ok_or_else(|| missing("ts"))?;
        let sig = sig.ok_or_else(|| missing("sig"))?;
        if !is_key_id(key_id) {
            return Err(malformed(format!(
                "key={:?} is not a key id: 16 lowercase hex digits",
                cut(key_id)
            )));
        }
        let ts = ts
            .parse::<i64>()
            .ok()
            .filter(|t| *t >= 0 && ts.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                malformed(format!(
                    "ts={:?} is not a timestamp: whole Unix seconds, e.g. ts=1767225600",
                    cut(ts)
                ))
            })?;
        let signature: [u8; 64] = STANDARD
            .decode(sig)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| {
                malformed(
                    "sig= is not a signature: standard base64 (with padding) of 64 bytes"
                        .to_owned(),
                )
            })?;
        Ok(Self {
            key_id: key_id.to_owned(),
            ts,
            signature,
        })
    }
}

impl fmt::Display for SignatureHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SIGNATURE_VERSION}; key={}; ts={}; sig={}",
            self.key_id,
            self.ts,
            STANDARD.encode(self.signature)
        )
    }
}

impl FromStr for SignatureHeader {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value)
    }
}

/// A value from the input, cut for a message.
fn cut(value: &str) -> String {
    value.chars().take(40).collect()
}

/// A probe's Ed25519 private key, for probes that keep it in a file. Its
/// `Debug` shows only the key id; the secret is wiped when it is dropped.
#[derive(Clone)]
pub struct ProbeSigningKey(SigningKey);

impl fmt::Debug for ProbeSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeSigningKey")
            .field("key_id", &self.public_key().key_id())
            .finish_non_exhaustive()
    }
}

impl ProbeSigningKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// The key from its 32-byte secret seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// Reads standard base64 of the 32-byte secret seed.
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        let seed: [u8; 32] = STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                fault(
                    SignatureFault::Key,
                    "the probe key is not standard base64 of a 32-byte Ed25519 seed",
                )
            })?;
        Ok(Self::from_seed(&seed))
    }

    /// Standard base64 of the 32-byte secret seed.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public_key(&self) -> ProbePublicKey {
        ProbePublicKey(self.0.verifying_key())
    }

    /// Signs `message` (normally [`signed_message`]'s output).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

/// A probe's Ed25519 public key, as enrolled at the collector.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ProbePublicKey(VerifyingKey);

impl fmt::Debug for ProbePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ProbePublicKey")
            .field(&self.key_id())
            .finish()
    }
}

impl ProbePublicKey {
    /// The key from its 32 raw bytes; refuses bytes that are not a point
    /// and weak (small-order) points, which would accept signatures anyone
    /// can make.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, Error> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| {
            fault(
                SignatureFault::Key,
                "the public key is 32 bytes but not an Ed25519 public key",
            )
        })?;
        if key.is_weak() {
            return Err(fault(
                SignatureFault::Key,
                "the public key is a weak (small-order) point; generate a real key pair",
            ));
        }
        Ok(Self(key))
    }

    /// Reads standard base64 of the 32 raw bytes.
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        let bytes: [u8; 32] = STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                fault(
                    SignatureFault::Key,
                    "the public key is not standard base64 of 32 raw Ed25519 bytes",
                )
            })?;
        Self::from_bytes(&bytes)
    }

    /// Standard base64 of the 32 raw bytes.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_bytes())
    }

    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The key id: the first 8 bytes of the SHA-256 of the raw key, as 16
    /// lowercase hex digits (the same rule as manifest key ids).
    pub fn key_id(&self) -> String {
        hex(Sha256::digest(self.0.as_bytes()).get(..8).unwrap_or(&[]))
    }

    /// Checks `signature` over `message` strictly (no malleable encodings,
    /// so one message has exactly one valid signature — what the replay
    /// check relies on).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), Error> {
        self.0
            .verify_strict(message, &Signature::from_bytes(signature))
            .map_err(|_| {
                fault(
                    SignatureFault::BadSignature,
                    format!(
                        "the signature does not verify with key {}: the body, report_id, \
                         install_id or timestamp changed after signing, or another key signed it",
                        self.key_id()
                    ),
                )
            })
    }
}

/// What a probe posts to the enrolment path: its public key for its
/// `install_id`. The request is signed (purpose `enrol`, nonce [`Self::nonce`])
/// by the private key of the key it enrols, proving the probe holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// The installation enrolling.
    pub install_id: InstallId,
    /// Standard base64 of the 32 raw Ed25519 public-key bytes.
    pub public_key: String,
    /// A fresh random token (a UUID) for this enrolment, signed as the nonce.
    pub nonce: String,
}

/// The collector's answer to an enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolResponse {
    /// `enrolled` (new), `already_enrolled` (the same key again) or
    /// `key_changed` (a different key for a known `install_id`: accepted,
    /// and its reports are flagged).
    pub status: String,
    /// The enrolled key's id.
    pub key_id: String,
    /// The collector's clock, Unix seconds: a probe whose clock is off
    /// signs with timestamps corrected by the difference.
    pub server_time: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install() -> InstallId {
        InstallId::parse("0190c3a5-7e4f-7b3c-9d2e-1f0a2b3c4d5e").expect("install id")
    }

    #[test]
    fn known_vector() {
        // Seed 0x01..=0x20: a fixed key, so that any change to the message
        // format or the encoding shows up here.
        let seed: [u8; 32] = std::array::from_fn(|i| u8::try_from(i + 1).unwrap_or(0));
        let key = ProbeSigningKey::from_seed(&seed);
        let public = key.public_key();
        assert_eq!(
            public.to_base64(),
            "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ="
        );
        assert_eq!(public.key_id(), "65b60673d6ed884b");
        let body = br#"{"report_id":"x"}"#;
        let digest = body_sha256_hex(body);
        assert_eq!(
            digest,
            "eab63822b17d9aefa4f6afd793696c746cee8c1ac0e6759c95a3c8ceca8361ec"
        );
        let message = signed_message(
            SignedPurpose::Report,
            &install(),
            "0190c3a5-8000-7000-8000-000000000001",
            1_767_225_600,
            &digest,
        );
        assert_eq!(
            String::from_utf8(message.clone()).expect("utf-8"),
            "lineprobe-signature-v1\npurpose=report\n\
             install_id=0190c3a5-7e4f-7b3c-9d2e-1f0a2b3c4d5e\n\
             nonce=0190c3a5-8000-7000-8000-000000000001\nts=1767225600\n\
             body_sha256=eab63822b17d9aefa4f6afd793696c746cee8c1ac0e6759c95a3c8ceca8361ec"
        );
        let header = SignatureHeader {
            key_id: public.key_id(),
            ts: 1_767_225_600,
            signature: key.sign(&message),
        };
        assert_eq!(header.to_string(), KNOWN_HEADER);
        let parsed = SignatureHeader::parse(KNOWN_HEADER).expect("parse");
        assert_eq!(parsed, header);
        public
            .verify(&message, &parsed.signature)
            .expect("verifies");
    }

    /// Computed independently with Python's `cryptography` (OpenSSL's
    /// Ed25519) from the same seed and message.
    const KNOWN_HEADER: &str = "v1; key=65b60673d6ed884b; ts=1767225600; \
        sig=9FTOh66ExnMcYEZFzvESLsoOjfPuT/KeCvk8dnYdCl72sauSBBg+MeiHLyoD3Nzy4M+rXml4y2uUo3LUfCFpDA==";

    #[test]
    fn any_change_breaks_the_signature() {
        let key = ProbeSigningKey::generate();
        let public = key.public_key();
        let digest = body_sha256_hex(b"{}");
        let message = signed_message(SignedPurpose::Report, &install(), "n1", 100, &digest);
        let sig = key.sign(&message);
        public.verify(&message, &sig).expect("verifies");
        let changed = [
            signed_message(SignedPurpose::Enrol, &install(), "n1", 100, &digest),
            signed_message(SignedPurpose::Report, &install(), "n2", 100, &digest),
            signed_message(SignedPurpose::Report, &install(), "n1", 101, &digest),
            signed_message(
                SignedPurpose::Report,
                &install(),
                "n1",
                100,
                &body_sha256_hex(b"{ }"),
            ),
            signed_message(
                SignedPurpose::Report,
                &InstallId::parse("other").expect("id"),
                "n1",
                100,
                &digest,
            ),
        ];
        for message in changed {
            let e = public.verify(&message, &sig).expect_err("must not verify");
            assert!(
                matches!(
                    e,
                    Error::Signature {
                        fault: SignatureFault::BadSignature,
                        ..
                    }
                ),
                "{e}"
            );
        }
        let other = ProbeSigningKey::generate().public_key();
        assert!(other.verify(&message, &sig).is_err());
    }

    #[test]
    fn header_errors_say_what_is_wrong() {
        let sig = STANDARD.encode([7_u8; 64]);
        let ok = format!("v1; key=0123456789abcdef; ts=5; sig={sig}");
        SignatureHeader::parse(&ok).expect("valid");
        // Order and spacing are free.
        SignatureHeader::parse(&format!("v1;sig={sig};ts=5;key=0123456789abcdef")).expect("valid");
        let cases = [
            (String::new(), "version"),
            (
                "v2; key=0123456789abcdef; ts=5; sig=x".to_owned(),
                "version `v1`",
            ),
            (format!("v1; ts=5; sig={sig}"), "no `key=`"),
            (format!("v1; key=0123456789abcdef; sig={sig}"), "no `ts=`"),
            ("v1; key=0123456789abcdef; ts=5".to_owned(), "no `sig=`"),
            (format!("v1; key=XYZ; ts=5; sig={sig}"), "16 lowercase hex"),
            (
                format!("v1; key=0123456789abcdef; ts=-5; sig={sig}"),
                "Unix seconds",
            ),
            (
                format!("v1; key=0123456789abcdef; ts=1e3; sig={sig}"),
                "Unix seconds",
            ),
            (
                "v1; key=0123456789abcdef; ts=5; sig=AAAA".to_owned(),
                "64 bytes",
            ),
            (
                format!("v1; key=0123456789abcdef; ts=5; ts=6; sig={sig}"),
                "twice",
            ),
            (
                format!("v1; key=0123456789abcdef; ts=5; alg=x; sig={sig}"),
                "unknown field",
            ),
            (
                format!("v1; key0123456789abcdef; ts=5; sig={sig}"),
                "name=value",
            ),
            ("v1; ".repeat(200), "at most"),
        ];
        for (value, says) in cases {
            let e = SignatureHeader::parse(&value).expect_err(&value);
            let text = e.to_string();
            assert!(
                text.contains(says) || (says == "version" && text.contains("starts with")),
                "{value:?}: {text}"
            );
            assert!(matches!(
                e,
                Error::Signature {
                    fault: SignatureFault::Malformed,
                    ..
                }
            ));
        }
    }

    #[test]
    fn keys_round_trip_and_weak_keys_are_refused() {
        let key = ProbeSigningKey::generate();
        let again = ProbeSigningKey::from_base64(&key.to_base64()).expect("seed");
        assert_eq!(key.public_key(), again.public_key());
        let public = ProbePublicKey::from_base64(&key.public_key().to_base64()).expect("public");
        assert_eq!(public, key.public_key());
        assert!(!format!("{key:?}").contains(&key.to_base64()));
        // The identity point is small-order.
        let mut identity = [0_u8; 32];
        identity[0] = 1;
        let e = ProbePublicKey::from_bytes(&identity).expect_err("weak");
        assert!(e.to_string().contains("weak"), "{e}");
        assert!(ProbePublicKey::from_base64("AAAA").is_err());
        assert!(ProbeSigningKey::from_base64("not base64!").is_err());
    }
}
