//! Signed probes, the agent's side: the probe's own Ed25519 key, its
//! enrolment at each collector, and the signature on every upload.
//!
//! The key pair is created on first use and kept by a [`KeyStore`]. The
//! default, [`FileKeyStore`], keeps the secret seed in the state folder
//! (`probe_key`, mode 0600 on Unix). An embedding app should supply its own
//! store through [`crate::Agent::with_key_store`] where the platform offers
//! one, so that the private key never leaves it:
//!
//! - Android: an Android Keystore key (`KeyPairGenerator` with
//!   `KeyProperties.KEY_ALGORITHM_EC` and the `Ed25519` curve, API 33+; the
//!   app signs through `Signature.getInstance("Ed25519")`);
//! - Windows: a CNG key in the Microsoft Software (or Platform/TPM) Key
//!   Storage Provider, signing through `NCryptSignHash`.
//!
//! The store only has to hand out the public key and sign bytes; the agent
//! builds the message (`lineprobe_shared::signed_message`) and the header.
//!
//! Enrolment happens per collector endpoint, on the first upload to it in
//! this process (it is idempotent at the collector), and again whenever the
//! collector answers `unknown_key` (a node that lost its store, or another
//! node behind the same name) or `signature_required` (it knows enrolment,
//! whatever an earlier 404 said). A collector that answers the enrolment with
//! 404 predates signing: reports go to it unsigned, and enrolment is tried
//! again after [`UNSUPPORTED_RECHECK`].
//!
//! Every attempt is signed when it is sent, with a timestamp that never
//! repeats for the same report (or enrolment) and endpoint within the
//! process, so a retry of a spooled report is a fresh request and never
//! looks like a replay. Different reports may share a second: their nonces
//! (report ids) differ, and so do their signed messages; a timestamp that
//! rose for every request would run ahead of the clock while a spool drains
//! (a few hundred reports sent in a burst) and be refused as stale. The collector's `server_time`
//! (in enrolment answers and `stale_timestamp` refusals) corrects a wrong
//! device clock.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use lineprobe_shared::{
    InstallId, ProbePublicKey, ProbeSigningKey, SignatureHeader, SignedPurpose, body_sha256_hex,
    signed_message,
};

use crate::Error;

/// The key file in the state folder.
pub const KEY_FILE: &str = "probe_key";

/// How long a collector that does not know enrolment is left alone before
/// enrolment is tried again.
pub const UNSUPPORTED_RECHECK: Duration = Duration::from_hours(24);

/// Where a probe's key pair lives. Implementations must be usable from any
/// thread; `public_key` creates the key pair on first use and returns the
/// same key afterwards.
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// The probe's public key, creating the key pair if there is none yet.
    fn public_key(&self) -> Result<ProbePublicKey, Error>;
    /// Signs `message` with the private key (Ed25519, 64 bytes).
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], Error>;
}

/// The default [`KeyStore`]: the secret seed in a file (base64), readable
/// only by its owner on Unix.
#[derive(Debug)]
pub struct FileKeyStore {
    path: PathBuf,
    key: Mutex<Option<ProbeSigningKey>>,
}

impl FileKeyStore {
    /// A store keeping the key in `path` (created on first use).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            key: Mutex::new(None),
        }
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn key(&self) -> Result<ProbeSigningKey, Error> {
        let mut cached = self.key.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = cached.as_ref() {
            return Ok(key.clone());
        }
        let key = match std::fs::read_to_string(&self.path) {
            Ok(text) => ProbeSigningKey::from_base64(&text).map_err(|e| Error::State {
                path: self.path.display().to_string(),
                reason: format!(
                    "{e}; delete it to make a new key (the collectors will flag the key change)"
                ),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let fresh = ProbeSigningKey::generate();
                if crate::state::write_new(&self.path, fresh.to_base64().as_bytes())? {
                    fresh
                } else {
                    // Another process (the daemon and a CLI started
                    // together) made the key first: that one is the
                    // probe's, or this process would sign with a key no
                    // longer on disk and the next start would change keys.
                    let text = std::fs::read_to_string(&self.path)
                        .map_err(|source| crate::state::io(&self.path, "read", source))?;
                    ProbeSigningKey::from_base64(&text).map_err(|e| Error::State {
                        path: self.path.display().to_string(),
                        reason: e.to_string(),
                    })?
                }
            }
            Err(source) => return Err(crate::state::io(&self.path, "read", source)),
        };
        *cached = Some(key.clone());
        Ok(key)
    }
}

impl KeyStore for FileKeyStore {
    fn public_key(&self) -> Result<ProbePublicKey, Error> {
        Ok(self.key()?.public_key())
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64], Error> {
        Ok(self.key()?.sign(message))
    }
}

/// What the agent knows about one endpoint's enrolment.
#[derive(Debug, Clone, Copy)]
enum Enrolment {
    /// Enrolled; the collector's clock minus ours, in seconds.
    Enrolled { offset: i64 },
    /// The collector does not know enrolment (404): unsigned until then.
    Unsupported { until: Instant },
}

/// How to send to one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Sign (enrolled, or enrolment failed for a reason worth signing anyway).
    Sign,
    /// Send unsigned: the collector predates signing.
    Unsigned,
    /// Enrol first.
    Enrol,
}

/// The signing side of one agent: its key store, install id, and what it
/// learned about each endpoint. Cheap to clone; clones share what they learn.
#[derive(Debug, Clone)]
pub(crate) struct Signer {
    store: Arc<dyn KeyStore>,
    enrol_patterns: Arc<[String]>,
    learned: Arc<Mutex<Learned>>,
}

#[derive(Debug, Default)]
struct Learned {
    endpoints: HashMap<String, Enrolment>,
    /// The last timestamp signed with, per endpoint and nonce: an attempt
    /// never repeats an earlier one's timestamp, so no two attempts ever
    /// carry the same signed message.
    last_ts: HashMap<(String, String), i64>,
}

/// Nonces remembered before the old ones are pruned.
const LAST_TS_PRUNE_AT: usize = 4_096;
/// How old a remembered timestamp must be to be pruned: beyond twice the
/// widest window a collector may keep signatures in (`max_clock_skew_secs`
/// is at most a day), no collector remembers it any more.
const LAST_TS_KEEP_SECS: i64 = 2 * 86_400;

impl Learned {
    /// After `endpoint`'s clock offset was learned: timestamps continue from
    /// the corrected clock. They only ever rose to stay unique, and kept
    /// above the timestamps a fast clock signed with, every later signature
    /// would be as far ahead as that clock was, refused as stale for good.
    /// The ones signed ahead were refused (a stale timestamp is checked
    /// before anything is remembered), so none of them can repeat.
    fn follow_clock(&mut self, endpoint: &str, offset: i64) {
        let corrected = Utc::now().timestamp().saturating_add(offset);
        for ((e, _), last) in &mut self.last_ts {
            if e == endpoint {
                *last = (*last).min(corrected.saturating_sub(1)).max(0);
            }
        }
    }
}

impl Signer {
    pub(crate) fn new(store: Arc<dyn KeyStore>, enrol_patterns: Vec<String>) -> Self {
        Self {
            store,
            enrol_patterns: enrol_patterns.into(),
            learned: Arc::new(Mutex::new(Learned::default())),
        }
    }

    /// The same signer with another key store (and nothing learned yet:
    /// enrolments were of the other store's key).
    pub(crate) fn with_store(&self, store: Arc<dyn KeyStore>) -> Self {
        Self::new(store, self.enrol_patterns.to_vec())
    }

    fn learned(&self) -> std::sync::MutexGuard<'_, Learned> {
        self.learned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The enrolment path patterns.
    pub(crate) fn enrol_patterns(&self) -> &[String] {
        &self.enrol_patterns
    }

    /// How to send to `endpoint` now.
    pub(crate) fn mode(&self, endpoint: &str) -> Mode {
        match self.learned().endpoints.get(endpoint) {
            Some(Enrolment::Enrolled { .. }) => Mode::Sign,
            Some(Enrolment::Unsupported { until }) if Instant::now() < *until => Mode::Unsigned,
            _ => Mode::Enrol,
        }
    }

    /// Records a successful enrolment at `endpoint` and its clock.
    pub(crate) fn enrolled(&self, endpoint: &str, server_time: Option<i64>) {
        let offset = server_time.map_or(0, |t| t.saturating_sub(Utc::now().timestamp()));
        let mut learned = self.learned();
        learned
            .endpoints
            .insert(endpoint.to_owned(), Enrolment::Enrolled { offset });
        learned.follow_clock(endpoint, offset);
    }

    /// Records that `endpoint` does not know enrolment.
    pub(crate) fn unsupported(&self, endpoint: &str) {
        self.learned().endpoints.insert(
            endpoint.to_owned(),
            Enrolment::Unsupported {
                until: Instant::now() + UNSUPPORTED_RECHECK,
            },
        );
    }

    /// Forgets `endpoint`'s enrolment (it answered `unknown_key`).
    pub(crate) fn forget(&self, endpoint: &str) {
        self.learned().endpoints.remove(endpoint);
    }

    /// Corrects `endpoint`'s clock offset from its `server_time`.
    pub(crate) fn clock(&self, endpoint: &str, server_time: i64) {
        let offset = server_time.saturating_sub(Utc::now().timestamp());
        let mut learned = self.learned();
        if let Some(Enrolment::Enrolled { offset: o }) = learned.endpoints.get_mut(endpoint) {
            *o = offset;
        } else {
            learned
                .endpoints
                .insert(endpoint.to_owned(), Enrolment::Enrolled { offset });
        }
        learned.follow_clock(endpoint, offset);
    }

    /// A timestamp for signing `nonce` to `endpoint`: our clock corrected
    /// by its offset, and above every timestamp `nonce` was signed with for
    /// it before.
    fn timestamp(&self, endpoint: &str, nonce: &str) -> i64 {
        let mut learned = self.learned();
        let offset = match learned.endpoints.get(endpoint) {
            Some(Enrolment::Enrolled { offset }) => *offset,
            _ => 0,
        };
        let now = Utc::now().timestamp().saturating_add(offset);
        if learned.last_ts.len() >= LAST_TS_PRUNE_AT {
            let old = now.saturating_sub(LAST_TS_KEEP_SECS);
            learned.last_ts.retain(|_, last| *last >= old);
        }
        let last = learned
            .last_ts
            .entry((endpoint.to_owned(), nonce.to_owned()))
            .or_insert(0);
        let ts = now.max(last.saturating_add(1));
        *last = ts;
        ts
    }

    /// The `LineProbe-Signature` header for a report upload to `endpoint`.
    pub(crate) fn sign_report(
        &self,
        endpoint: &str,
        install_id: &InstallId,
        report_id: &str,
        body: &[u8],
    ) -> Result<String, Error> {
        self.sign(endpoint, SignedPurpose::Report, install_id, report_id, body)
    }

    /// An enrolment of `install_id` and its signature header for `endpoint`.
    pub(crate) fn enrolment(
        &self,
        endpoint: &str,
        install_id: &InstallId,
    ) -> Result<(Vec<u8>, String), Error> {
        let nonce = uuid::Uuid::now_v7().to_string();
        let request = lineprobe_shared::EnrolRequest {
            install_id: install_id.clone(),
            public_key: self.store.public_key()?.to_base64(),
            nonce: nonce.clone(),
        };
        let body = serde_json::to_vec(&request).map_err(|e| Error::State {
            path: KEY_FILE.to_owned(),
            reason: format!("cannot encode the enrolment: {e}"),
        })?;
        let header = self.sign(endpoint, SignedPurpose::Enrol, install_id, &nonce, &body)?;
        Ok((body, header))
    }

    fn sign(
        &self,
        endpoint: &str,
        purpose: SignedPurpose,
        install_id: &InstallId,
        nonce: &str,
        body: &[u8],
    ) -> Result<String, Error> {
        let ts = self.timestamp(endpoint, nonce);
        let message = signed_message(purpose, install_id, nonce, ts, &body_sha256_hex(body));
        let header = SignatureHeader {
            key_id: self.store.public_key()?.key_id(),
            ts,
            signature: self.store.sign(&message)?,
        };
        Ok(header.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon and a CLI started together both find no key: they must
    /// end up with the one key on disk, not each with its own.
    #[test]
    fn processes_racing_to_make_the_key_agree_on_the_one_on_disk() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join(KEY_FILE);
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
            let keys: Vec<String> = (0..4)
                .map(|_| {
                    let (path, barrier) = (path.clone(), std::sync::Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        let store = FileKeyStore::new(path);
                        barrier.wait();
                        store.public_key().expect("key").to_base64()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().expect("thread"))
                .collect();
            let on_disk = FileKeyStore::new(&path)
                .public_key()
                .expect("key")
                .to_base64();
            assert!(keys.iter().all(|k| *k == on_disk), "{keys:?} vs {on_disk}");
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .expect("dir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(left.len(), 1, "temporary files left: {left:?}");
        }
    }

    #[test]
    fn file_key_store_creates_once_keeps_and_protects_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KEY_FILE);
        let store = FileKeyStore::new(&path);
        let first = store.public_key().expect("create");
        assert_eq!(store.public_key().expect("again"), first);
        let reopened = FileKeyStore::new(&path).public_key().expect("read");
        assert_eq!(reopened, first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let message = b"m";
        let sig = store.sign(message).expect("sign");
        first.verify(message, &sig).expect("verifies");
        std::fs::write(&path, "garbage").expect("write");
        let e = FileKeyStore::new(&path).public_key().expect_err("bad file");
        assert!(e.to_string().contains("delete it"), "{e}");
    }

    #[test]
    fn timestamps_never_repeat_and_follow_the_collector_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = Signer::new(
            Arc::new(FileKeyStore::new(dir.path().join(KEY_FILE))),
            vec!["/api/v1/enrol".to_owned()],
        );
        let a = signer.timestamp("https://c", "r1");
        let b = signer.timestamp("https://c", "r1");
        assert!(b > a);
        signer.clock("https://c", Utc::now().timestamp() + 10_000);
        assert!(signer.timestamp("https://c", "r1") >= Utc::now().timestamp() + 9_990);
        assert_eq!(signer.mode("https://c"), Mode::Sign);
        signer.forget("https://c");
        assert_eq!(signer.mode("https://c"), Mode::Enrol);
        signer.unsupported("https://c");
        assert_eq!(signer.mode("https://c"), Mode::Unsigned);
    }

    #[test]
    fn a_fast_clock_corrected_by_the_collector_signs_on_the_corrected_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = Signer::new(
            Arc::new(FileKeyStore::new(dir.path().join(KEY_FILE))),
            vec!["/api/v1/enrol".to_owned()],
        );
        // The probe's clock as if 10 minutes fast: its first signatures.
        signer.clock("https://c", Utc::now().timestamp() + 600);
        let fast = signer.timestamp("https://c", "r1");
        assert!(signer.timestamp("https://c", "r1") > fast);
        // The collector answers stale_timestamp with its own time.
        signer.clock("https://c", Utc::now().timestamp());
        let corrected = signer.timestamp("https://c", "r1");
        assert!(
            (corrected - Utc::now().timestamp()).abs() <= 2,
            "{corrected} still follows the fast clock ({fast})"
        );
        assert!(signer.timestamp("https://c", "r1") > corrected);
        // The same after an enrolment's answer.
        signer.clock("https://c", Utc::now().timestamp() + 600);
        let _ = signer.timestamp("https://c", "r1");
        signer.enrolled("https://c", Some(Utc::now().timestamp()));
        assert!((signer.timestamp("https://c", "r1") - Utc::now().timestamp()).abs() <= 2);
    }

    /// A spool drained in a burst: every report signed within the same
    /// seconds, none pushed ahead of the clock (a timestamp that rose for
    /// every request ran 300 s ahead after 300 reports, refused as stale),
    /// while a retry of one report still never repeats its timestamp.
    #[test]
    fn many_reports_signed_at_once_stay_on_the_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = Signer::new(
            Arc::new(FileKeyStore::new(dir.path().join(KEY_FILE))),
            vec!["/api/v1/enrol".to_owned()],
        );
        let ids: Vec<String> = (0..1_000).map(|i| format!("report-{i}")).collect();
        for id in &ids {
            let ts = signer.timestamp("https://c", id);
            assert!((ts - Utc::now().timestamp()).abs() <= 2, "{id}: {ts}");
        }
        let retries: Vec<i64> = (0..3)
            .map(|_| signer.timestamp("https://c", &ids[0]))
            .collect();
        assert!(retries.windows(2).all(|w| w[1] > w[0]), "{retries:?}");
        // Another endpoint keeps its own.
        let other = signer.timestamp("https://d", &ids[0]);
        assert!((other - Utc::now().timestamp()).abs() <= 2);
        // Old nonces are forgotten past the bound; recent ones are kept.
        signer
            .learned()
            .last_ts
            .insert(("https://old".to_owned(), "x".to_owned()), 5);
        for i in 0..(LAST_TS_PRUNE_AT + 10) {
            signer.timestamp("https://e", &format!("n-{i}"));
        }
        let learned = signer.learned();
        assert!(learned.last_ts.len() > LAST_TS_PRUNE_AT);
        assert!(
            !learned
                .last_ts
                .contains_key(&("https://old".to_owned(), "x".to_owned()))
        );
    }

    #[test]
    fn a_hostile_server_time_does_not_overflow() {
        // The collector's `server_time` is untrusted input: the extremes
        // must neither panic (debug builds check overflow) nor wrap round.
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = Signer::new(
            Arc::new(FileKeyStore::new(dir.path().join(KEY_FILE))),
            vec!["/api/v1/enrol".to_owned()],
        );
        signer.clock("https://low", i64::MIN);
        // Far in the past: held at one past the last timestamp (none yet).
        assert_eq!(signer.timestamp("https://low", "r1"), 1);
        signer.enrolled("https://high", Some(i64::MAX));
        assert_eq!(signer.timestamp("https://high", "r1"), i64::MAX);
        assert_eq!(signer.timestamp("https://high", "r1"), i64::MAX);
    }
}
