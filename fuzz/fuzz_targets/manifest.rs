//! The manifest parsers a probe runs on what it downloads: the signed wire
//! form, the signed payload, and public keys from configuration.
//!
//! The fuzzer cannot forge a signature, so the payload is also signed here
//! with a fixed test key and passed through `accept_update`, the probe's whole
//! acceptance path.

#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use lineprobe_shared::{
    Error, Manifest, ManifestSigningKey, ManifestVerifyingKey, SignedManifest, accept_update,
};
use std::sync::OnceLock;

fn key() -> &'static ManifestSigningKey {
    static KEY: OnceLock<ManifestSigningKey> = OnceLock::new();
    KEY.get_or_init(|| {
        ManifestSigningKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
            .expect("fixed test key")
    })
}

fn expect_manifest_error<T: std::fmt::Debug>(result: Result<T, Error>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e @ Error::Manifest { .. }) => {
            assert!(!e.to_string().is_empty());
            None
        }
        Err(other) => panic!("unexpected error kind from a manifest parser: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let signing = key();
    let verifying = signing.verifying_key();

    if let Some(manifest) = expect_manifest_error(Manifest::from_json(data)) {
        assert!(manifest.violations().is_empty());
        let encoded = manifest.to_json().expect("an accepted manifest encodes");
        let again = Manifest::from_json(&encoded).expect("an accepted manifest re-decodes");
        assert_eq!(again, manifest, "the round trip changed the manifest");
    }

    let signed = SignedManifest::sign_bytes(data, signing);
    let now = Utc
        .with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .expect("a date");
    let _ = expect_manifest_error(accept_update(Some(1), now, &signed, &verifying));

    if let Some(wire) = expect_manifest_error(SignedManifest::from_json(data)) {
        let _ = expect_manifest_error(wire.verify(&verifying));
    }

    if let Ok(text) = std::str::from_utf8(data) {
        let _ = expect_manifest_error(ManifestVerifyingKey::parse(text));
        let _ = expect_manifest_error(ManifestSigningKey::parse(text));
    }
});
