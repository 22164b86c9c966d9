//! Review findings on the signed manifest: each test pins a hole that was
//! open (a manifest or key accepted that must not be).

use chrono::{DateTime, Duration, Utc};
use lineprobe_shared::{
    Error, MAX_ISSUED_AHEAD_SECS, Manifest, ManifestFault, ManifestSigningKey, ProbeSchedule,
    SignedManifest, accept_update,
};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test timestamp")
        .with_timezone(&Utc)
}

fn manifest(serial: u64, issued_at: DateTime<Utc>) -> Manifest {
    Manifest {
        serial,
        issued_at,
        expires_at: issued_at + Duration::days(30),
        endpoints: vec!["https://collector.example.net".to_owned()],
        path_patterns: vec!["/api/v1/report".to_owned()],
        schedule: ProbeSchedule {
            interval_secs: 3600,
            jitter_secs: 300,
        },
        catalog_versions: [("carriers".to_owned(), "2025.09.1".to_owned())].into(),
        latest_agent: None,
    }
}

fn fault_of(result: Result<Manifest, Error>) -> (ManifestFault, String) {
    match result {
        Err(err @ Error::Manifest { fault, .. }) => (fault, err.to_string()),
        Err(other) => panic!("expected a manifest error, got {other}"),
        Ok(m) => panic!("expected a refusal, got manifest {}", m.serial),
    }
}

/// A manifest dated years ahead was accepted: only `expires_at - issued_at`
/// was bounded (400 days), so `issued_at` in 2100 made one that any probe
/// that lost its state would take for 75 years.
#[test]
fn a_manifest_issued_far_ahead_of_the_clock_is_not_valid_yet() {
    let key = ManifestSigningKey::generate();
    let vk = key.verifying_key();
    let now = at("2025-09-15T00:00:00Z");
    let future =
        SignedManifest::sign(&manifest(9, at("2100-01-01T00:00:00Z")), &key).expect("sign");
    let (fault, message) = fault_of(accept_update(None, now, &future, &vk));
    assert_eq!(fault, ManifestFault::NotYetValid, "{message}");
    assert!(message.contains("not valid yet"), "{message}");
    // Just past the allowed skew: refused; within it (a signer's clock a
    // little ahead of the probe's): accepted.
    let skew = Duration::seconds(MAX_ISSUED_AHEAD_SECS);
    let ahead =
        SignedManifest::sign(&manifest(9, now + skew + Duration::seconds(1)), &key).expect("sign");
    assert_eq!(
        fault_of(accept_update(Some(1), now, &ahead, &vk)).0,
        ManifestFault::NotYetValid
    );
    let slightly = SignedManifest::sign(&manifest(9, now + skew), &key).expect("sign");
    assert_eq!(
        accept_update(Some(1), now, &slightly, &vk)
            .expect("within the skew")
            .serial,
        9
    );
    let hours = SignedManifest::sign(&manifest(9, now + Duration::hours(8)), &key).expect("sign");
    assert!(accept_update(Some(1), now, &hours, &vk).is_ok());
    assert!(manifest(9, now).is_not_yet_valid_at(now - skew - Duration::seconds(1)));
    assert!(!manifest(9, now).is_not_yet_valid_at(now - skew));
}

/// A catalog named twice in the signed JSON was accepted, the last version
/// winning: the same signed bytes then say another version to a reader
/// where the first wins (or that refuses them), while serde refuses a
/// repeated manifest field.
#[test]
fn a_catalog_named_twice_in_the_signed_payload_is_refused() {
    let key = ManifestSigningKey::generate();
    let json = String::from_utf8(
        manifest(3, at("2025-09-01T00:00:00Z"))
            .to_json()
            .expect("json"),
    )
    .expect("utf-8");
    let twice = json.replace(
        r#""catalog_versions":{"carriers":"2025.09.1"}"#,
        r#""catalog_versions":{"carriers":"2025.09.1","carriers":"2020.01.1"}"#,
    );
    assert_ne!(twice, json, "the test edits the catalogs");
    let signed = SignedManifest::sign_bytes(twice.as_bytes(), &key);
    let (fault, message) = fault_of(signed.verify(&key.verifying_key()));
    assert_eq!(fault, ManifestFault::Invalid, "{message}");
    assert!(message.contains("named twice"), "{message}");
    assert!(message.contains("catalog_versions"), "{message}");
    // Different names, and no catalogs at all, still read.
    let two = json.replace(
        r#""catalog_versions":{"carriers":"2025.09.1"}"#,
        r#""catalog_versions":{"carriers":"2025.09.1","cities":"2025.06.1"}"#,
    );
    assert_eq!(
        Manifest::from_json(two.as_bytes())
            .expect("two catalogs")
            .catalog_versions
            .len(),
        2
    );
    let none = json.replace(r#","catalog_versions":{"carriers":"2025.09.1"}"#, "");
    assert!(
        Manifest::from_json(none.as_bytes())
            .expect("no catalogs")
            .catalog_versions
            .is_empty()
    );
}

/// A host written as hex or short numbers passed as a host name, but
/// probes (WHATWG URL rules) read it as an IPv4 address and connected
/// there: `https://0x7f000001` sent every report to the subscriber's own
/// machine. The checks meant to refuse what probes read as an address.
#[test]
fn a_host_that_probes_read_as_an_ipv4_address_is_refused() {
    let key = ManifestSigningKey::generate();
    for host in ["0x7f000001", "0x7f.1", "0xc0.0xa8.0.1", "collector.0x7f.1"] {
        let mut m = manifest(3, at("2025-09-01T00:00:00Z"));
        m.endpoints = vec![format!("https://{host}:8443")];
        let (fault, message) = fault_of(SignedManifest::sign(&m, &key).map(|_| m.clone()));
        assert_eq!(fault, ManifestFault::Invalid, "{host}: {message}");
        assert!(message.contains("endpoints[0]"), "{host}: {message}");
        let mut m = manifest(3, at("2025-09-01T00:00:00Z"));
        m.latest_agent = Some(lineprobe_shared::AgentRelease {
            version: "1.2.3".to_owned(),
            url: format!("https://{host}/agent.zip"),
            sha256: "ab".repeat(32),
        });
        let message = m.validate().expect_err(host).to_string();
        assert!(message.contains("latest_agent.url"), "{host}: {message}");
    }
    // Addresses written as addresses, and real names, still pass.
    for url in [
        "https://203.0.113.7",
        "https://203.0.113.7:8443/base",
        "https://[2001:db8::7]:443",
        "https://collector.example.net:8443",
        "https://c0ffee.example.net",
        "https://0x7f.example.net",
    ] {
        let mut m = manifest(3, at("2025-09-01T00:00:00Z"));
        m.endpoints = vec![url.to_owned()];
        assert!(m.violations().is_empty(), "{url}: {}", m.violations());
    }
}

/// A serial above `i64::MAX` passed validation, so probes would follow a
/// manifest no collector can store or the back office publish.
#[test]
fn a_serial_beyond_what_collectors_store_is_invalid() {
    let now = Utc::now();
    let largest = manifest(u64::try_from(i64::MAX).expect("fits"), now);
    assert!(
        largest.violations().is_empty(),
        "{:?}",
        largest.violations()
    );
    for serial in [u64::try_from(i64::MAX).expect("fits") + 1, u64::MAX] {
        let found = manifest(serial, now).violations().to_string();
        assert!(found.contains("serial"), "{serial}: {found}");
    }
}
