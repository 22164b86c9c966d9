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
    /// touch, and of the last contents that failed, so a broken file is
    /// reported once rather than on every poll.
    state: Mutex<FileState>,
}

#[derive(Default)]
struct FileState {
    loaded: (Vec<u8>, Vec<u8>),
    failed: Option<(Vec<u8>, Vec<u8>)>,
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
        let (cert_pem, key_pem) = read_pair(&self.inner.cert_path, &self.inner.key_path)?;
        let mut state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if state.loaded.0 == cert_pem && state.loaded.1 == key_pem {
            state.failed = None;
            return Ok(false);
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
                Ok(true)
            }
            Err(e) => {
                state.failed = Some((cert_pem, key_pem));
                Err(e)
            }
        }
    }

    /// Like [`CertStore::reload`], but logs instead of returning, and logs a
    /// broken file only once until its contents change again.
    fn reload_logged(&self, why: &str) {
        // Compare with the last failure before logging, so a half-written
        // pair seen on several polls is reported once.
        let unchanged_failure = {
            let state = self
                .inner
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match (
                &state.failed,
                read_pair(&self.inner.cert_path, &self.inner.key_path),
            ) {
                (Some(failed), Ok(now)) => *failed == now,
                _ => false,
            }
        };
        if unchanged_failure {
            return;
        }
        match self.reload() {
            Ok(true) => tracing::info!(
                cert = %self.inner.cert_path.display(),
                trigger = why,
                "server certificate reloaded"
            ),
            Ok(false) => {}
            Err(e) => tracing::error!(
                trigger = why,
                error = %e,
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

    #[test]
    fn empty_client_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        fs::write(&ca, "nothing here\n").unwrap();
        assert!(matches!(load_client_roots(&ca), Err(Error::Tls(_))));
    }
}
