//! The certificate store: the generated self-signed certificate, and
//! reloading (by call, by polling, by SIGHUP) as seen by new TLS clients.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test on any setup error"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use lineprobe_collector::{CertStore, ListenerOptions, TlsConfig, serve};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const BOUND: Duration = Duration::from_secs(10);

/// A fresh certificate for `localhost`, as (cert PEM, key PEM, DER).
fn new_pair() -> (String, String, CertificateDer<'static>) {
    let k = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (
        k.cert.pem(),
        k.signing_key.serialize_pem(),
        k.cert.der().clone(),
    )
}

struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        Self {
            _dir: dir,
            cert,
            key,
        }
    }

    fn write(&self, pair: &(String, String, CertificateDer<'static>)) {
        std::fs::write(&self.key, &pair.1).unwrap();
        std::fs::write(&self.cert, &pair.0).unwrap();
    }

    fn config(&self) -> TlsConfig {
        TlsConfig {
            cert: Some(self.cert.clone()),
            key: Some(self.key.clone()),
            ..TlsConfig::default()
        }
    }
}

/// Serves a trivial router over TLS from `config`.
async fn start(config: Arc<rustls::ServerConfig>) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        Some(config),
        ListenerOptions::default(),
        Router::new().route("/", get(|| async { "ok" })),
        shutdown.clone(),
        None,
    ));
    (addr, shutdown)
}

/// The end-entity certificate a new connection is served, trusting any of
/// `candidates`.
async fn served(
    addr: SocketAddr,
    candidates: &[&CertificateDer<'static>],
) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    for c in candidates {
        roots.add((*c).clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = timeout(
        BOUND,
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .unwrap()
    .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[test]
fn the_self_signed_certificate_is_generated_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsConfig {
        self_signed_names: vec!["collector.example".to_owned(), "192.0.2.10".to_owned()],
        ..TlsConfig::default()
    };
    let first = CertStore::load_or_generate(&tls, dir.path()).unwrap();
    assert!(first.is_generated());
    assert_eq!(first.cert_path(), dir.path().join("tls/cert.pem"));
    assert_eq!(first.key_path(), dir.path().join("tls/key.pem"));
    let cert_pem = std::fs::read(first.cert_path()).unwrap();
    let key_pem = std::fs::read(first.key_path()).unwrap();
    assert!(String::from_utf8_lossy(&key_pem).contains("PRIVATE KEY"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(first.key_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let second = CertStore::load_or_generate(&tls, dir.path()).unwrap();
    assert_eq!(std::fs::read(second.cert_path()).unwrap(), cert_pem);
    assert_eq!(std::fs::read(second.key_path()).unwrap(), key_pem);
    assert_eq!(first.current_chain(), second.current_chain());
    assert!(!second.reload().unwrap(), "nothing changed");

    // A lost key means a new pair rather than a certificate without one.
    std::fs::remove_file(second.key_path()).unwrap();
    let third = CertStore::load_or_generate(&tls, dir.path()).unwrap();
    assert_ne!(first.current_chain(), third.current_chain());
}

#[test]
fn configured_files_that_are_missing_or_wrong_say_which() {
    let files = Files::new();
    let err = CertStore::load_or_generate(&files.config(), Path::new("/nonexistent"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.crt"), "{err}");
    std::fs::write(&files.cert, "not pem").unwrap();
    std::fs::write(&files.key, "not pem").unwrap();
    let err = CertStore::load_or_generate(&files.config(), Path::new("/nonexistent"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.crt"), "{err}");
}

#[test]
fn key_and_client_ca_mistakes_say_which_file_and_what_to_fix() {
    let files = Files::new();
    let pair = new_pair();
    files.write(&pair);
    // One of the two configured.
    let half = TlsConfig {
        key: None,
        ..files.config()
    };
    let err = CertStore::load_or_generate(&half, Path::new("/unused"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tls.cert") && err.contains("set both"),
        "{err}"
    );

    // A certificate where the key should be.
    std::fs::write(&files.key, &pair.0).unwrap();
    let err = CertStore::load_or_generate(&files.config(), Path::new("/unused"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("server.key") && err.contains("no usable PEM private key"),
        "{err}"
    );
    files.write(&pair);
    let store = CertStore::load_or_generate(&files.config(), Path::new("/unused")).unwrap();

    // The client CA file for the export listener's client certificates.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("clients-ca.pem");
    let err = store.server_config(Some(&ca)).unwrap_err().to_string();
    assert!(err.contains("cannot read the client CA file"), "{err}");
    std::fs::write(&ca, &pair.1).unwrap();
    let err = store.server_config(Some(&ca)).unwrap_err().to_string();
    assert!(
        err.contains("clients-ca.pem") && err.contains("no CERTIFICATE block"),
        "{err}"
    );
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = store.server_config(Some(&ca)).unwrap_err().to_string();
    assert!(err.contains("clients-ca.pem"), "{err}");
    std::fs::write(&ca, &pair.0).unwrap();
    assert!(store.server_config(Some(&ca)).is_ok());
}

#[tokio::test]
async fn reload_serves_the_new_certificate_and_keeps_the_old_on_bad_files() {
    let files = Files::new();
    let a = new_pair();
    let b = new_pair();
    files.write(&a);
    let store = CertStore::load_or_generate(&files.config(), Path::new("/unused")).unwrap();
    assert!(!store.is_generated());
    // Two configurations from one store, as for the two listeners.
    let (addr1, stop1) = start(store.server_config(None).unwrap()).await;
    let (addr2, stop2) = start(store.server_config(None).unwrap()).await;
    let both = [&a.2, &b.2];
    assert_eq!(served(addr1, &both).await, a.2);

    files.write(&b);
    assert!(store.reload().unwrap());
    assert!(!store.reload().unwrap());
    assert_eq!(served(addr1, &both).await, b.2);
    assert_eq!(served(addr2, &both).await, b.2);

    // Garbage, then a certificate with someone else's key: refused, and the
    // served certificate stays.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnope\n").unwrap();
    assert!(store.reload().is_err());
    let c = new_pair();
    std::fs::write(&files.cert, &c.0).unwrap();
    std::fs::write(&files.key, &a.1).unwrap();
    let err = store.reload().unwrap_err().to_string();
    assert!(err.contains("do not form"), "{err}");
    std::fs::remove_file(&files.key).unwrap();
    assert!(store.reload().is_err());
    assert_eq!(served(addr1, &[&a.2, &b.2, &c.2]).await, b.2);
    assert_eq!(store.current_chain()[0], b.2);
    stop1.cancel();
    stop2.cancel();
}

#[tokio::test]
async fn the_reloader_picks_up_changed_files() {
    let files = Files::new();
    let a = new_pair();
    files.write(&a);
    let store = CertStore::load_or_generate(&files.config(), Path::new("/unused")).unwrap();
    let (addr, stop) = start(store.server_config(None).unwrap()).await;
    let cancel = CancellationToken::new();
    let reloader = store.spawn_reloader(Duration::from_millis(50), cancel.clone());

    // A broken pair first: polled, refused, old certificate kept.
    std::fs::write(&files.cert, "garbage").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = new_pair();
    assert_eq!(served(addr, &[&a.2, &b.2]).await, a.2);

    files.write(&b);
    timeout(BOUND, async {
        while store.current_chain()[0] != b.2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the poller did not reload");
    assert_eq!(served(addr, &[&a.2, &b.2]).await, b.2);
    cancel.cancel();
    timeout(BOUND, reloader).await.unwrap().unwrap();
    stop.cancel();
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_at_once() {
    let files = Files::new();
    let a = new_pair();
    files.write(&a);
    let store = CertStore::load_or_generate(&files.config(), Path::new("/unused")).unwrap();
    let cancel = CancellationToken::new();
    // Polling once an hour: only the signal can explain a reload.
    let reloader = store.spawn_reloader(Duration::from_hours(1), cancel.clone());
    let b = new_pair();
    files.write(&b);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.current_chain()[0], a.2);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    timeout(BOUND, async {
        while store.current_chain()[0] != b.2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("SIGHUP did not reload");
    cancel.cancel();
    timeout(BOUND, reloader).await.unwrap().unwrap();
}
