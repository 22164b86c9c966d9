//! The signed probe manifest: signing, verification, and every way a forged,
//! replayed or stale manifest is refused.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use lineprobe_shared::{
    AgentRelease, Error, Manifest, ManifestFault, ManifestSigningKey, ManifestVerifyingKey,
    ProbeSchedule, SignedManifest, accept_update,
};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test timestamp")
        .with_timezone(&Utc)
}

fn manifest(serial: u64) -> Manifest {
    Manifest {
        serial,
        issued_at: at("2025-09-01T00:00:00Z"),
        expires_at: at("2025-10-01T00:00:00Z"),
        endpoints: vec![
            "https://collector.example.net".to_owned(),
            "https://192.0.2.10:8443".to_owned(),
            "https://[2001:db8::10]".to_owned(),
        ],
        path_patterns: vec!["/api/v1/report".to_owned(), "/s/*/up".to_owned()],
        schedule: ProbeSchedule {
            interval_secs: 3600,
            jitter_secs: 300,
        },
        catalog_versions: [("carriers".to_owned(), "2025.09.1".to_owned())].into(),
        latest_agent: Some(AgentRelease {
            version: "1.2.3".to_owned(),
            url: "https://downloads.example.net/agent-1.2.3.zip".to_owned(),
            sha256: "ab".repeat(32),
        }),
    }
}

fn now() -> DateTime<Utc> {
    at("2025-09-15T00:00:00Z")
}

/// The fault of a manifest error, and its message.
fn fault_of(result: Result<Manifest, Error>) -> (ManifestFault, String) {
    match result {
        Err(err @ Error::Manifest { fault, .. }) => (fault, err.to_string()),
        Err(other) => panic!("expected a manifest error, got {other}"),
        Ok(m) => panic!("expected a refusal, got manifest {}", m.serial),
    }
}

fn flip_base64_byte(text: &str, index: usize) -> String {
    let mut bytes = STANDARD.decode(text).expect("base64");
    let i = index % bytes.len();
    bytes[i] ^= 0x01;
    STANDARD.encode(bytes)
}

#[test]
fn sign_verify_round_trip() {
    let key = ManifestSigningKey::generate();
    let original = manifest(3);
    let signed = SignedManifest::sign(&original, &key).expect("sign");
    assert_eq!(signed.key_id, key.key_id());
    let wire = signed.to_json().expect("to json");
    let back = SignedManifest::from_json(&wire).expect("from json");
    assert_eq!(back, signed);
    let verified = back.verify(&key.verifying_key()).expect("verifies");
    assert_eq!(verified, original);
    // The payload is the exact manifest JSON.
    let payload = STANDARD.decode(&signed.payload).expect("base64");
    assert_eq!(payload, original.to_json().expect("json"));
}

#[test]
fn flipped_payload_byte_is_refused() {
    let key = ManifestSigningKey::generate();
    let signed = SignedManifest::sign(&manifest(3), &key).expect("sign");
    let len = STANDARD.decode(&signed.payload).expect("base64").len();
    // Every position matters, not only some: try a spread of them.
    for index in [0, 1, len / 3, len / 2, len - 1] {
        let forged = SignedManifest {
            payload: flip_base64_byte(&signed.payload, index),
            ..signed.clone()
        };
        let (fault, message) = fault_of(forged.verify(&key.verifying_key()));
        assert_eq!(
            fault,
            ManifestFault::BadSignature,
            "byte {index}: {message}"
        );
        assert!(message.contains("signature does not verify"), "{message}");
    }
}

#[test]
fn flipped_signature_byte_is_refused() {
    let key = ManifestSigningKey::generate();
    let signed = SignedManifest::sign(&manifest(3), &key).expect("sign");
    for index in [0, 17, 31, 32, 63] {
        let forged = SignedManifest {
            signature: flip_base64_byte(&signed.signature, index),
            ..signed.clone()
        };
        let (fault, message) = fault_of(forged.verify(&key.verifying_key()));
        assert_eq!(
            fault,
            ManifestFault::BadSignature,
            "byte {index}: {message}"
        );
    }
}

#[test]
fn another_key_is_refused_by_key_id() {
    let ours = ManifestSigningKey::generate();
    let theirs = ManifestSigningKey::generate();
    let signed = SignedManifest::sign(&manifest(3), &theirs).expect("sign");
    let (fault, message) = fault_of(signed.verify(&ours.verifying_key()));
    assert_eq!(fault, ManifestFault::UnknownKey);
    assert!(message.contains(&ours.key_id()), "{message}");
    assert!(message.contains(&theirs.key_id()), "{message}");
}

#[test]
fn another_key_claiming_our_key_id_fails_the_signature() {
    let ours = ManifestSigningKey::generate();
    let theirs = ManifestSigningKey::generate();
    let mut signed = SignedManifest::sign(&manifest(3), &theirs).expect("sign");
    signed.key_id = ours.key_id();
    let (fault, _) = fault_of(signed.verify(&ours.verifying_key()));
    assert_eq!(fault, ManifestFault::BadSignature);
}

#[test]
fn wrong_key_id_is_refused_even_with_a_good_signature() {
    let key = ManifestSigningKey::generate();
    let mut signed = SignedManifest::sign(&manifest(3), &key).expect("sign");
    signed.key_id = "0000000000000000".to_owned();
    let (fault, message) = fault_of(signed.verify(&key.verifying_key()));
    assert_eq!(fault, ManifestFault::UnknownKey);
    assert!(message.contains("\"0000000000000000\""), "{message}");
}

#[test]
fn malformed_envelopes_are_refused() {
    let key = ManifestSigningKey::generate();
    let signed = SignedManifest::sign(&manifest(3), &key).expect("sign");
    let bad_payload = SignedManifest {
        payload: "not base64!".to_owned(),
        ..signed.clone()
    };
    let (fault, message) = fault_of(bad_payload.verify(&key.verifying_key()));
    assert_eq!(fault, ManifestFault::Malformed);
    assert!(
        message.contains("`payload` is not standard base64"),
        "{message}"
    );

    let short_signature = SignedManifest {
        signature: STANDARD.encode([0u8; 63]),
        ..signed
    };
    let (fault, message) = fault_of(short_signature.verify(&key.verifying_key()));
    assert_eq!(fault, ManifestFault::Malformed);
    assert!(message.contains("`signature`"), "{message}");

    for text in [
        &b"{}"[..],
        b"[]",
        b"not json",
        br#"{"payload":"","signature":"","key_id":"","extra":1}"#,
    ] {
        match SignedManifest::from_json(text) {
            Err(Error::Manifest {
                fault: ManifestFault::Malformed,
                ..
            }) => {}
            other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(text)),
        }
    }
    let huge = vec![b' '; lineprobe_shared::MAX_SIGNED_MANIFEST_BYTES + 1];
    assert!(SignedManifest::from_json(&huge).is_err());
}

#[test]
fn a_signed_invalid_payload_is_refused_as_invalid() {
    let key = ManifestSigningKey::generate();
    let mut bad = manifest(3);
    bad.endpoints = vec!["http://collector.example.net".to_owned()];
    // `sign` refuses to sign it at all …
    let (fault, message) = fault_of(SignedManifest::sign(&bad, &key).map(|_| manifest(0)));
    assert_eq!(fault, ManifestFault::Invalid);
    assert!(message.contains("endpoints[0]"), "{message}");
    // … and a publisher that signs the bytes anyway is refused on verify.
    let signed = SignedManifest::sign_bytes(&bad.to_json().expect("json"), &key);
    let (fault, message) = fault_of(signed.verify(&key.verifying_key()));
    assert_eq!(fault, ManifestFault::Invalid);
    assert!(message.contains("https://"), "{message}");

    let signed = SignedManifest::sign_bytes(br#"{"serial": 4, "surprise": true}"#, &key);
    let (fault, message) = fault_of(signed.verify(&key.verifying_key()));
    assert_eq!(fault, ManifestFault::Invalid);
    assert!(message.contains("surprise"), "{message}");
}

#[test]
fn accept_update_takes_a_newer_valid_manifest() {
    let key = ManifestSigningKey::generate();
    let signed = SignedManifest::sign(&manifest(5), &key).expect("sign");
    let vk = key.verifying_key();
    assert_eq!(
        accept_update(None, now(), &signed, &vk)
            .expect("first")
            .serial,
        5
    );
    assert_eq!(
        accept_update(Some(4), now(), &signed, &vk)
            .expect("newer")
            .serial,
        5
    );
}

#[test]
fn accept_update_refuses_older_and_equal_serials() {
    let key = ManifestSigningKey::generate();
    let signed = SignedManifest::sign(&manifest(5), &key).expect("sign");
    for current in [5, 6, u64::MAX] {
        let (fault, message) = fault_of(accept_update(
            Some(current),
            now(),
            &signed,
            &key.verifying_key(),
        ));
        assert_eq!(fault, ManifestFault::NotNewer);
        assert!(message.contains("serial 5 is not newer"), "{message}");
        assert!(message.contains(&current.to_string()), "{message}");
    }
}

#[test]
fn accept_update_refuses_an_expired_manifest() {
    let key = ManifestSigningKey::generate();
    let m = manifest(5);
    let signed = SignedManifest::sign(&m, &key).expect("sign");
    let vk = key.verifying_key();
    let (fault, message) = fault_of(accept_update(None, m.expires_at, &signed, &vk));
    assert_eq!(fault, ManifestFault::Expired);
    assert!(message.contains("expired"), "{message}");
    let just_before = m.expires_at - Duration::seconds(1);
    assert!(accept_update(None, just_before, &signed, &vk).is_ok());
}

#[test]
fn accept_update_refuses_forgeries_before_looking_at_serials() {
    let key = ManifestSigningKey::generate();
    let other = ManifestSigningKey::generate();
    let signed = SignedManifest::sign(&manifest(9), &other).expect("sign");
    let (fault, _) = fault_of(accept_update(Some(1), now(), &signed, &key.verifying_key()));
    assert_eq!(fault, ManifestFault::UnknownKey);
}

#[test]
fn validation_lists_every_problem() {
    let mut m = manifest(0);
    m.expires_at = m.issued_at;
    m.endpoints = vec![
        "https://ok.example".to_owned(),
        "https://ok.example".to_owned(),
        "https://user@bad.example".to_owned(),
    ];
    m.path_patterns = vec!["/**".to_owned(), "no-slash".to_owned()];
    m.schedule = ProbeSchedule {
        interval_secs: 10,
        jitter_secs: 11,
    };
    m.catalog_versions = [("Bad Name".to_owned(), "1".to_owned())].into();
    m.latest_agent = Some(AgentRelease {
        version: String::new(),
        url: "https://dl.example/a.zip#x".to_owned(),
        sha256: "AB".repeat(32),
    });
    let fields: Vec<String> = m.violations().0.into_iter().map(|v| v.field).collect();
    for expected in [
        "serial",
        "expires_at",
        "endpoints[1]",
        "endpoints[2]",
        "path_patterns[0]",
        "path_patterns[1]",
        "schedule.interval_secs",
        "schedule.jitter_secs",
        "catalog_versions.\"Bad Name\"",
        "latest_agent.version",
        "latest_agent.url",
        "latest_agent.sha256",
    ] {
        assert!(
            fields.iter().any(|f| f == expected),
            "{expected} not in {fields:?}"
        );
    }
    assert!(manifest(1).violations().is_empty());

    let mut empty = manifest(1);
    empty.endpoints.clear();
    empty.path_patterns.clear();
    empty.expires_at = empty.issued_at + Duration::days(500);
    let fields: Vec<String> = empty.violations().0.into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["expires_at", "endpoints", "path_patterns"]);
}

#[test]
fn keys_read_from_base64_and_pem() {
    let key = ManifestSigningKey::generate();
    let vk = key.verifying_key();

    let from_b64 = ManifestSigningKey::from_base64(&key.to_base64()).expect("b64 secret");
    assert_eq!(from_b64.key_id(), key.key_id());
    let pem = key.to_pem().expect("pem");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    let from_pem = ManifestSigningKey::parse(&pem).expect("pem secret");
    assert_eq!(from_pem.key_id(), key.key_id());

    let vk_b64 = vk.to_base64();
    assert_eq!(
        ManifestVerifyingKey::parse(&format!("  {vk_b64}\n")).expect("b64 public"),
        vk
    );
    let vk_pem = vk.to_pem().expect("public pem");
    assert!(vk_pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{vk_pem}");
    let parsed: ManifestVerifyingKey = vk_pem.parse().expect("pem public");
    assert_eq!(parsed, vk);

    // A manifest signed with the key read back verifies with the public key read back.
    let signed = SignedManifest::sign(&manifest(2), &from_pem).expect("sign");
    assert!(signed.verify(&parsed).is_ok());
}

#[test]
fn keys_from_openssl_pem_are_read() {
    // RFC 8410 section 10.3's example private key, and the public key it derives.
    let private = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
                   -----END PRIVATE KEY-----\n";
    let key = ManifestSigningKey::from_pem(private).expect("RFC 8410 key");
    let public = key.verifying_key().to_pem().expect("pem");
    let back = ManifestVerifyingKey::from_pem(&public).expect("public");
    assert_eq!(back.key_id(), key.key_id());
}

#[test]
fn bad_keys_are_refused_clearly() {
    let cases: [(&str, &str); 4] = [
        ("", "neither standard base64"),
        ("AAAA", "neither standard base64"),
        (
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "PUBLIC KEY",
        ),
        (
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "this is a private key",
        ),
    ];
    for (text, expected) in cases {
        match ManifestVerifyingKey::parse(text) {
            Err(
                err @ Error::Manifest {
                    fault: ManifestFault::Key,
                    ..
                },
            ) => assert!(err.to_string().contains(expected), "{text:?}: {err}"),
            other => panic!("{text:?} gave {other:?}"),
        }
    }
    // The identity point is a small-order key: it would accept forged signatures.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let err = ManifestVerifyingKey::from_base64(&STANDARD.encode(identity))
        .expect_err("weak key refused");
    assert!(err.to_string().contains("weak"), "{err}");
    assert!(ManifestSigningKey::parse("short").is_err());
}

#[test]
fn example_file_parses_and_validates() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/manifest.example.json"
    );
    let text = std::fs::read(path).expect("config/manifest.example.json");
    let example = Manifest::from_json(&text).expect("example is a valid manifest");
    assert!(example.endpoints.iter().all(|e| e.starts_with("https://")));
    assert!(example.latest_agent.is_some());
    // It signs and verifies like any other.
    let key = ManifestSigningKey::generate();
    let signed = SignedManifest::sign(&example, &key).expect("sign");
    assert_eq!(
        signed.verify(&key.verifying_key()).expect("verify"),
        example
    );
}
