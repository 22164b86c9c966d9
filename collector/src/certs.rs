//! The server certificate: loaded from PEM files (or generated once as a
//! self-signed certificate), swapped in place when the files change, and
//! turned into rustls server configurations for both listeners.
//!
//! Every configuration built from one [`CertStore`] resolves the certificate
//! through the same [`ArcSwap`], so a reload applies to the next handshake on
//! every listener without rebuilding anything; connections already open keep
//! the certificate they were made with.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Error, TlsConfig};

/// Folder under `data_dir` that holds the generated certificate.
pub const GENERATED_TLS_DIR: &str = "tls";

/// The server certificate and key, reloadable at run time.
///
/// Cheap to clone: clones share the current certificate.
#[derive(Clone)]
pub struct CertStore {
    inner: Arc<Inner>,
}

struct Inner {
    cert_path: PathBuf,
    key_path: PathBuf,
    generated: bool,
    provider: Arc<CryptoProvider>,
    current: Arc<ArcSwap<CertifiedKey>>,
    /// Contents of the files behind `current`, to tell a real change from a
    /// touch, and the last problem met, so that a broken or unreadable file
    /// is reported once rather than on every poll.
    state: Mutex<FileState>,
}

#[derive(Default)]
struct FileState {
    loaded: (Vec<u8>, Vec<u8>),
    failed: Option<Failure>,
}

/// Why the files last failed to load.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// They could not be read (missing during a rotation, no permission…):
    /// the error, which names the file and the reason.
    Unreadable(String),
    /// They were read but do not form a usable pair: their contents.
    Invalid(Vec<u8>, Vec<u8>),
}

/// What one look at the files found.
enum Check {
    /// The files are those in service, as at the last look.
    Unchanged,
    /// The files are those in service again, after a failure.
    Recovered,
    /// A new certificate is in service.
    Reloaded,
    /// The files cannot be used; the old certificate stays in service.
    /// `repeated`: the same problem as at the last look.
    Failed { error: Error, repeated: bool },
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_path", &self.inner.cert_path)
            .field("key_path", &self.inner.key_path)
            .field("generated", &self.inner.generated)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads `tls.cert` and `tls.key`, or — when neither is configured — the
    /// self-signed certificate in `data_dir/tls/`, generating it on first
    /// start (key file mode 0600) and reusing it afterwards.
    pub fn load_or_generate(tls: &TlsConfig, data_dir: &Path) -> Result<Self, Error> {
        let (cert_path, key_path, generated) = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone(), false),
            (None, None) => {
                let dir = data_dir.join(GENERATED_TLS_DIR);
                let cert = dir.join("cert.pem");
                let key = dir.join("key.pem");
                if !(cert.is_file() && key.is_file()) {
                    generate_self_signed(&tls.self_signed_names, &dir, &cert, &key)?;
                    tracing::info!(
                        cert = %cert.display(),
                        names = ?tls.self_signed_names,
                        "generated a self-signed server certificate; configure tls.cert and \
                         tls.key for a certificate clients can verify"
                    );
                }
                (cert, key, true)
            }
            _ => {
                return Err(Error::Config {
                    key: "tls.cert".to_owned(),
                    reason: "set both tls.cert and tls.key (PEM files), or neither".to_owned(),
                });
            }
        };
        Self::from_files(cert_path, key_path, generated)
    }

    /// Loads the certificate chain and key from the given PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, Error> {
        Self::from_files(cert.to_path_buf(), key.to_path_buf(), false)
    }

    fn from_files(cert_path: PathBuf, key_path: PathBuf, generated: bool) -> Result<Self, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (cert_pem, key_pem) = read_pair(&cert_path, &key_path)?;
        let key = certified_key(&cert_pem, &key_pem, &cert_path, &key_path, &provider)?;
        Ok(Self {
            inner: Arc::new(Inner {
                cert_path,
                key_path,
                generated,
                provider,
                current: Arc::new(ArcSwap::from_pointee(key)),
                state: Mutex::new(FileState {
                    loaded: (cert_pem, key_pem),
                    failed: None,
                }),
            }),
        })
    }

    /// The certificate chain file.
    pub fn cert_path(&self) -> &Path {
        &self.inner.cert_path
    }

    /// The private key file.
    pub fn key_path(&self) -> &Path {
        &self.inner.key_path
    }

    /// Whether the certificate is the generated self-signed one.
    pub fn is_generated(&self) -> bool {
        self.inner.generated
    }

    /// The DER certificate chain currently served, end entity first.
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.inner.current.load().cert.clone()
    }

    /// A rustls server configuration that serves this store's current
    /// certificate (HTTP/1.1 by ALPN). With `client_ca`, clients must present
    /// a certificate signed by one of the CA certificates in that PEM file.
    pub fn server_config(&self, client_ca: Option<&Path>) -> Result<Arc<ServerConfig>, Error> {
        let provider = Arc::clone(&self.inner.provider);
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(format!("no usable TLS protocol version: {e}")))?;
        let builder = match client_ca {
            Some(path) => {
                let roots = load_client_roots(path)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| {
                            Error::Tls(format!(
                                "client CA file {}: cannot verify clients with it: {e}",
                                path.display()
                            ))
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config =
            builder.with_cert_resolver(Arc::new(SwapResolver(Arc::clone(&self.inner.current))));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Rereads the files. Returns `Ok(true)` when a new certificate is now
    /// served, `Ok(false)` when the files are unchanged. When the new files
    /// are unreadable or do not form a valid pair, the old certificate stays
    /// in service and the error is returned.
    pub fn reload(&self) -> Result<bool, Error> {
        match self.check() {
            Check::Unchanged | Check::Recovered => Ok(false),
            Check::Reloaded => Ok(true),
            Check::Failed { error, .. } => Err(error),
        }
    }

    /// Rereads the files and serves them when they are new and usable,
    /// remembering a problem so that it is told apart from a new one.
    fn check(&self) -> Check {
        // Held while the files are read, so two reloads at once (a poll and
        // SIGHUP) cannot store an older pair over a newer one.
        let mut state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (cert_pem, key_pem) = match read_pair(&self.inner.cert_path, &self.inner.key_path) {
            Ok(pair) => pair,
            Err(error) => {
                let failure = Failure::Unreadable(error.to_string());
                let repeated = state.failed.as_ref() == Some(&failure);
                state.failed = Some(failure);
                return Check::Failed { error, repeated };
            }
        };
        if state.loaded.0 == cert_pem && state.loaded.1 == key_pem {
            return if state.failed.take().is_some() {
                Check::Recovered
            } else {
                Check::Unchanged
            };
        }
        match certified_key(
            &cert_pem,
            &key_pem,
            &self.inner.cert_path,
            &self.inner.key_path,
            &self.inner.provider,
        ) {
            Ok(key) => {
                self.inner.current.store(Arc::new(key));
                state.loaded = (cert_pem, key_pem);
                state.failed = None;
                Check::Reloaded
            }
            Err(error) => {
                let repeated = matches!(
                    &state.failed,
                    Some(Failure::Invalid(cert, key)) if *cert == cert_pem && *key == key_pem
                );
                state.failed = Some(Failure::Invalid(cert_pem, key_pem));
                Check::Failed { error, repeated }
            }
        }
    }

    /// Like [`CertStore::reload`], but logs instead of returning: a broken
    /// or unreadable file once per distinct problem (a half-written pair
    /// seen on several polls, or a file missing for a while during a
    /// rotation, is reported once), and again when the files are usable.
    fn reload_logged(&self, why: &str) {
        match self.check() {
            Check::Unchanged => {}
            Check::Recovered => tracing::info!(
                cert = %self.inner.cert_path.display(),
                trigger = why,
                "server certificate files are usable again; they hold the certificate \
                 still in service"
            ),
            Check::Reloaded => tracing::info!(
                cert = %self.inner.cert_path.display(),
                trigger = why,
                "server certificate reloaded"
            ),
            Check::Failed {
                repeated: true,
                error,
            } => tracing::debug!(
                trigger = why,
                error = %error,
                "server certificate still not reloaded (reported already)"
            ),
            Check::Failed {
                repeated: false,
                error,
            } => tracing::error!(
                trigger = why,
                error = %error,
                "server certificate not reloaded; the previous one stays in service"
            ),
        }
    }

    /// Checks the files every `interval` (and on SIGHUP on Unix) and reloads
    /// them when they changed, until `cancel` fires.
    ///
    /// Must be called inside a Tokio runtime; the SIGHUP handler is installed
    /// before this returns.
    pub fn spawn_reloader(&self, interval: Duration, cancel: CancellationToken) -> JoinHandle<()> {
        let store = self.clone();
        let mut hangup = Hangup::new();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick completes at once; the files were just loaded.
            ticker.tick().await;
            loop {
                let why = tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = ticker.tick() => "poll",
                    () = hangup.recv() => "SIGHUP",
                };
                let store = store.clone();
                // File reads and key parsing are blocking work.
                let _ = tokio::task::spawn_blocking(move || store.reload_logged(why)).await;
            }
        })
    }
}

/// SIGHUP on Unix; never fires elsewhere or when the handler cannot be set.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn new() -> Self {
        #[cfg(unix)]
        {
            let signal = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot handle SIGHUP; certificate files are still polled");
                    None
                }
            };
            Self { signal }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
            self.signal = None;
        }
        std::future::pending::<()>().await;
    }
}

/// Serves whatever certificate the store holds at handshake time.
#[derive(Debug)]
struct SwapResolver(Arc<ArcSwap<CertifiedKey>>);

impl ResolvesServerCert for SwapResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let read = |path: &Path, what: &str| {
        fs::read(path).map_err(|source| Error::Io {
            what: format!("cannot read the TLS {what} {}", path.display()),
            source,
        })
    };
    Ok((read(cert, "certificate")?, read(key, "private key")?))
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, Error> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::Tls(format!(
                "{}: not a PEM certificate chain: {e}",
                cert_path.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(Error::Tls(format!(
            "{}: no CERTIFICATE block found; give the PEM certificate chain, server \
             certificate first",
            cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        Error::Tls(format!(
            "{}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            key_path.display()
        ))
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        Error::Tls(format!(
            "{} and {} do not form a usable certificate and key pair: {e}",
            cert_path.display(),
            key_path.display()
        ))
    })
}

fn load_client_roots(path: &Path) -> Result<RootCertStore, Error> {
    let pem = fs::read(path).map_err(|source| Error::Io {
        what: format!("cannot read the client CA file {}", path.display()),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            Error::Tls(format!(
                "client CA file {}: not a PEM certificate: {e}",
                path.display()
            ))
        })?;
        roots.add(cert).map_err(|e| {
            Error::Tls(format!(
                "client CA file {}: unusable CA certificate: {e}",
                path.display()
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(Error::Tls(format!(
            "client CA file {}: no CERTIFICATE block found",
            path.display()
        )));
    }
    Ok(roots)
}

/// Writes a fresh self-signed certificate for `names` into `dir`. Each file
/// is written under a temporary name and renamed, the key first, so a crash
/// never leaves a certificate without its key.
fn generate_self_signed(
    names: &[String],
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), Error> {
    let names = if names.is_empty() {
        vec!["localhost".to_owned()]
    } else {
        names.to_vec()
    };
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| Error::Tls(format!("cannot generate a self-signed certificate: {e}")))?;
    create_private_dir(dir)?;
    write_atomic(
        key_path,
        generated.signing_key.serialize_pem().as_bytes(),
        true,
    )?;
    write_atomic(cert_path, generated.cert.pem().as_bytes(), false)?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| Error::Io {
        what: format!("cannot create the TLS folder {}", dir.display()),
        source,
    })
}

fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), Error> {
    let tmp = path.with_extension("pem.tmp");
    let io = |what: &str, source| Error::Io {
        what: format!("cannot {what} {}", tmp.display()),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(|e| io("create", e))?;
    // A leftover temporary file from a crash may have been created with other
    // permissions; `mode` only applies to new files.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| io("restrict", e))?;
    }
    file.write_all(bytes).map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("sync", e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|source| Error::Io {
        what: format!("cannot move {} to {}", tmp.display(), path.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatched_pair_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        fs::write(&cert, a.cert.pem()).unwrap();
        fs::write(&key, b.signing_key.serialize_pem()).unwrap();
        let err = CertStore::from_pem_files(&cert, &key).unwrap_err();
        assert!(matches!(err, Error::Tls(_)), "{err}");
    }

    /// Log lines written while a test runs, on this thread.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Self;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Captured {
        fn count(&self, what: &str) -> usize {
            let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            String::from_utf8_lossy(&bytes).matches(what).count()
        }
    }

    #[test]
    fn an_unreadable_file_is_logged_once_per_problem_and_its_recovery_once() {
        const FAILED: &str = "server certificate not reloaded";
        const AGAIN: &str = "usable again";
        const RELOADED: &str = "server certificate reloaded";
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        let a = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let write_a = || {
            fs::write(&cert, a.cert.pem()).unwrap();
            fs::write(&key, a.signing_key.serialize_pem()).unwrap();
        };
        write_a();
        let store = CertStore::from_pem_files(&cert, &key).unwrap();
        let served_a = store.current_chain();
        let log = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let polls = |n: usize| {
                for _ in 0..n {
                    store.reload_logged("poll");
                }
            };
            // Deleted during a rotation: one error, however many polls.
            fs::remove_file(&cert).unwrap();
            polls(3);
            assert_eq!(log.count(FAILED), 1);
            assert_eq!(store.current_chain(), served_a);

            // Another problem (the key missing instead) is logged once too.
            fs::write(&cert, a.cert.pem()).unwrap();
            fs::remove_file(&key).unwrap();
            polls(3);
            assert_eq!(log.count(FAILED), 2);

            // Back as they were: logged once as usable again.
            write_a();
            polls(3);
            assert_eq!(log.count(AGAIN), 1);
            assert_eq!(log.count(FAILED), 2);
            assert_eq!(store.current_chain(), served_a);

            // Broken, then unreadable, then broken again: three problems.
            fs::write(&cert, "not a certificate\n").unwrap();
            polls(2);
            assert_eq!(log.count(FAILED), 3);
            fs::remove_file(&cert).unwrap();
            polls(2);
            assert_eq!(log.count(FAILED), 4);
            fs::write(&cert, "not a certificate\n").unwrap();
            polls(2);
            assert_eq!(log.count(FAILED), 5);
            assert_eq!(store.current_chain(), served_a);

            // A new pair after the failures is served and logged as such.
            let b = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
            fs::write(&cert, b.cert.pem()).unwrap();
            fs::write(&key, b.signing_key.serialize_pem()).unwrap();
            polls(2);
            assert_eq!(log.count(RELOADED), 1);
            assert_eq!(store.current_chain(), vec![b.cert.der().clone()]);

            // Unreadable again after a success: logged again.
            fs::remove_file(&key).unwrap();
            polls(2);
            assert_eq!(log.count(FAILED), 6);
            assert_eq!(log.count(AGAIN), 1);
        });
    }

    #[test]
    fn empty_client_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        fs::write(&ca, "nothing here\n").unwrap();
        assert!(matches!(load_client_roots(&ca), Err(Error::Tls(_))));
    }
}
