//! The agent as a library: what the CLI, the Android app and the Windows
//! service host. An [`Agent`] owns everything it needs (config, state
//! folder, catalog, tracer, platform) — there is no global state, so a host
//! may run several, and every entry point can be called from any thread.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lineprobe_shared::{
    Catalog, ConsentRecord, DeclaredLocation, Manifest, ManifestVerifyingKey,
    REPORT_SCHEMA_VERSION, Report, ReportId, ReportTrace,
};
use rand::Rng;

use crate::config::{AgentConfig, Settings};
use crate::consent::{accept_consent, read_consent, revoke_consent};
use crate::declared::{Declared, resolve_declared};
use crate::facts::{Platform, SystemPlatform, collect_facts};
use crate::manifest::{ManifestCheck, in_force, load_applied, update_manifest};
use crate::probe::{SharedTracer, Tracer, report_trace, resolve_target};
use crate::signing::{FileKeyStore, KEY_FILE, KeyStore, Signer};
use crate::spool::{Spool, SpoolEntry, backoff};
use crate::state::{STATUS_FILE, StateDir};
use crate::status::{
    AgentStatus, ManifestCheckRecord, ProbeRecord, StatusRecord, is_newer_version,
};
use crate::submit::{Delivery, Submitter, TransportOptions, Undelivered};
use crate::{Engine, Error, TraceRequest};

/// The state folder used when neither the command line nor the config names one.
pub const DEFAULT_STATE_DIR: &str = "lineprobe-agent-state";

/// How to set up an [`Agent`].
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// The configuration.
    pub config: AgentConfig,
    /// The state folder; wins over `config.state_dir`.
    pub state_dir: Option<PathBuf>,
    /// Endpoints that replace the configured (and manifest) list.
    pub endpoints: Vec<String>,
    /// Lab use only: do not verify the collector's certificate.
    pub insecure_skip_verify: bool,
}

/// What one probe run did with its report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// An endpoint accepted it.
    Delivered {
        /// The report.
        report_id: ReportId,
        /// Who took it and how.
        delivery: Delivery,
    },
    /// No endpoint could be reached: it waits in the spool.
    Spooled {
        /// The report.
        report_id: ReportId,
        /// Older reports evicted to make room.
        evicted: u64,
        /// When it is tried again.
        retry_at: DateTime<Utc>,
    },
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Delivered {
                report_id,
                delivery: Delivery::Stored { endpoint },
            } => write!(f, "report {report_id} stored by {endpoint}"),
            Self::Delivered {
                report_id,
                delivery: Delivery::Duplicate { endpoint },
            } => write!(f, "report {report_id} was already stored ({endpoint})"),
            Self::Spooled {
                report_id, evicted, ..
            } => {
                write!(
                    f,
                    "report {report_id} spooled: no endpoint could be reached"
                )?;
                if *evicted > 0 {
                    write!(f, " ({evicted} older report(s) evicted)")?;
                }
                Ok(())
            }
        }
    }
}

/// What a spool drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainSummary {
    /// Reports an endpoint accepted (stored or duplicate).
    pub delivered: usize,
    /// Reports an endpoint refused as invalid (removed).
    pub refused: usize,
    /// Reports still waiting.
    pub waiting: usize,
    /// When the drain stopped at a report that found no endpoint (the line
    /// or the collectors are down, or a collector asked to wait): when that
    /// report is due again. The rest of the spool waits as long, instead of
    /// each overdue report trying on its own.
    pub held_until: Option<DateTime<Utc>>,
}

/// A probe agent.
pub struct Agent {
    config: AgentConfig,
    state: StateDir,
    spool: Spool,
    catalog: Catalog,
    declared: Declared,
    tracer: SharedTracer,
    platform: Arc<dyn Platform>,
    manifest_key: Option<ManifestVerifyingKey>,
    cli_endpoints: Vec<String>,
    transport: TransportOptions,
    gps: Mutex<Option<DeclaredLocation>>,
    status_lock: Mutex<()>,
    /// Signs uploads; `None` when `signing.enabled` is off. Shared by every
    /// submitter so that enrolments and clock corrections are learned once.
    signer: Option<Signer>,
    /// Times the daemon loop woke: a loop that wakes far more often than
    /// it has work burns a subscriber's battery unseen, so hosts and tests
    /// can watch it.
    wakeups: AtomicU64,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("state", &self.state)
            .field("manifest_key", &self.manifest_key)
            .field("cli_endpoints", &self.cli_endpoints)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Sets up an agent that traces with `tracer`. Checks the config, the
    /// declared values against the catalog, the manifest key and the pinned
    /// CA now, so that a mistake shows at start rather than at the first probe.
    pub fn new(options: AgentOptions, tracer: SharedTracer) -> Result<Self, Error> {
        let AgentOptions {
            config,
            state_dir,
            endpoints,
            insecure_skip_verify,
        } = options;
        config.check()?;
        let root = state_dir
            .or_else(|| config.state_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let state = StateDir::open(root)?;
        let spool = Spool::new(state.spool_dir(), config.spool.max_reports);
        let catalog = match &config.catalog.dir {
            Some(dir) => Catalog::load_dir(dir)?,
            None => Catalog::embedded()?,
        };
        let declared = resolve_declared(&config.declared, &catalog, None)?;
        let manifest_key = config.manifest_key()?;
        let pinned_roots = match &config.endpoints.ca_file {
            Some(path) => TransportOptions::load_pinned(path)?,
            None => Vec::new(),
        };
        let transport = TransportOptions {
            connect_timeout: Duration::from_secs(config.endpoints.connect_timeout_secs),
            request_timeout: Duration::from_secs(config.endpoints.request_timeout_secs),
            pinned_roots,
            insecure_skip_verify,
        };
        // The endpoint overrides are checked now, like the config.
        Settings::resolve(&config, None, &endpoints)?;
        let signer = if config.signing.enabled {
            let store: Arc<dyn KeyStore> = Arc::new(FileKeyStore::new(state.path(KEY_FILE)));
            Some(Signer::new(store, config.signing.enrol_patterns.clone()))
        } else {
            None
        };
        Ok(Self {
            config,
            state,
            spool,
            catalog,
            declared,
            tracer,
            platform: Arc::new(SystemPlatform),
            manifest_key,
            cli_endpoints: endpoints,
            transport,
            gps: Mutex::new(None),
            status_lock: Mutex::new(()),
            signer,
            wakeups: AtomicU64::new(0),
        })
    }

    /// An agent tracing with `engines`, best first.
    pub fn with_engines(
        options: AgentOptions,
        engines: Vec<Box<dyn Engine>>,
    ) -> Result<Self, Error> {
        let tracer: Arc<dyn Tracer> = Arc::new(engines);
        Self::new(options, tracer)
    }

    /// Replaces the platform the device facts come from (the Android app
    /// knows things the Linux code paths cannot read).
    #[must_use]
    pub fn with_platform(mut self, platform: Arc<dyn Platform>) -> Self {
        self.platform = platform;
        self
    }

    /// Keeps the probe's key in `store` instead of the state folder's
    /// `probe_key` file: the Android app passes an Android Keystore key, the
    /// Windows service a CNG key, so that the private key never leaves the
    /// platform's store (see [`KeyStore`]). No effect when `signing.enabled`
    /// is off.
    #[must_use]
    pub fn with_key_store(mut self, store: Arc<dyn KeyStore>) -> Self {
        if let Some(signer) = &self.signer {
            self.signer = Some(signer.with_store(store));
        }
        self
    }

    /// The state folder.
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// The spool.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The catalogs declared values are checked against.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// How many times [`Agent::run`] has gone round its loop: once per
    /// probe, spool retry or manifest check it had due, and once a minute
    /// while it waits for consent.
    pub fn daemon_wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }

    // ─────────────────────────────── consent ───────────────────────────────

    /// The recorded consent, if any.
    pub fn consent(&self) -> Result<Option<ConsentRecord>, Error> {
        read_consent(&self.state)
    }

    /// Records that the subscriber accepted the configured consent text now.
    pub fn accept_consent(&self) -> Result<ConsentRecord, Error> {
        accept_consent(&self.state, &self.config.consent_version())
    }

    /// Withdraws consent and deletes the spool; returns how many spooled
    /// reports were deleted.
    pub fn revoke_consent(&self) -> Result<usize, Error> {
        revoke_consent(&self.state, &self.spool)
    }

    /// The consent, when it was given to the consent text configured now
    /// (and to the MAC address, while it is sent): agreeing to one text is
    /// not agreeing to the next (it may ask for more, the MAC address say).
    fn require_consent(&self) -> Result<ConsentRecord, Error> {
        let record = self.consent()?.ok_or(Error::NoConsent)?;
        let current = self.config.consent_version();
        if !consent_covers(&record.text_version, &current) {
            return Err(Error::ConsentOutdated {
                accepted: record.text_version,
                current,
            });
        }
        Ok(record)
    }

    // ────────────────────────────── location ───────────────────────────────

    /// Passes a position from the device (source `gps`), used by later
    /// reports instead of the configured one; `None` forgets it.
    pub fn set_gps_fix(&self, fix: Option<(f64, f64, f64)>) -> Result<(), Error> {
        let location = match fix {
            None => None,
            Some((lat, lon, accuracy_m)) => {
                let ok = (-90.0..=90.0).contains(&lat)
                    && (-180.0..=180.0).contains(&lon)
                    && (0.0..=lineprobe_shared::ReportLimits::MAX_LOCATION_ACCURACY_M)
                        .contains(&accuracy_m);
                if !ok {
                    return Err(Error::Config {
                        key: "location".to_owned(),
                        reason: format!(
                            "({lat}, {lon}) ±{accuracy_m} m is not a position: latitude -90 to 90, \
                             longitude -180 to 180, accuracy 0 to 1000000 m"
                        ),
                    });
                }
                Some(DeclaredLocation {
                    lat,
                    lon,
                    accuracy_m,
                    source: lineprobe_shared::LocationSource::Gps,
                })
            }
        };
        *self.gps.lock().unwrap_or_else(PoisonError::into_inner) = location;
        Ok(())
    }

    // ────────────────────────────── settings ───────────────────────────────

    /// The applied manifest, verified again.
    pub fn applied_manifest(&self) -> Option<Manifest> {
        load_applied(&self.state, self.manifest_key.as_ref())
    }

    /// What a probe runs with now: config, manifest (while it is in force),
    /// command line.
    pub fn settings(&self) -> Result<Settings, Error> {
        self.settings_under(self.applied_manifest())
    }

    /// [`Agent::settings`] under `applied`, the applied manifest already
    /// loaded (it is read from disk and its signature checked each time).
    fn settings_under(&self, applied: Option<Manifest>) -> Result<Settings, Error> {
        Settings::resolve(
            &self.config,
            in_force(applied, Utc::now()).as_ref(),
            &self.cli_endpoints,
        )
    }

    fn submitter(&self) -> Result<Submitter, Error> {
        let settings = self.settings()?;
        if settings.endpoints.is_empty() {
            return Err(Error::Config {
                key: "endpoints.urls".to_owned(),
                reason: "no endpoint to send to: list collector URLs in endpoints.urls or pass \
                         --endpoint URL"
                    .to_owned(),
            });
        }
        Ok(Submitter::new(settings, self.transport.clone())?.with_signer(self.signer.clone()))
    }

    // ─────────────────────────────── tracing ───────────────────────────────

    /// Traces to `target` (default: `trace.target`, else the endpoints'
    /// hosts) with `engine` (default: `trace.engine`). Needs consent.
    pub async fn trace(
        &self,
        target: Option<&str>,
        engine: Option<&str>,
    ) -> Result<ReportTrace, Error> {
        self.require_consent()?;
        let candidates = match target {
            Some(t) => vec![t.to_owned()],
            None => self.trace_targets()?,
        };
        let (name, addr) = resolve_target(
            &candidates,
            Duration::from_secs(self.config.endpoints.connect_timeout_secs),
        )
        .await?;
        let mut request = TraceRequest::new(addr, name);
        request.max_ttl = self.config.trace.max_ttl;
        request.rounds = self.config.trace.rounds;
        request.deadline = Duration::from_secs(self.config.trace.deadline_secs);
        let choice = engine.unwrap_or(&self.config.trace.engine).to_owned();
        let started_at = Utc::now().fixed_offset();
        let tracer = Arc::clone(&self.tracer);
        let req = request.clone();
        let (outcome, fallbacks) = tokio::task::spawn_blocking(move || tracer.trace(&choice, &req))
            .await
            .map_err(|e| Error::TraceFailed {
                engine: "auto".to_owned(),
                reason: format!("the trace thread stopped: {e}"),
            })??;
        Ok(report_trace(&request, started_at, outcome, fallbacks))
    }

    fn trace_targets(&self) -> Result<Vec<String>, Error> {
        let configured = self.config.trace.target.trim();
        if !configured.is_empty() {
            return Ok(vec![configured.to_owned()]);
        }
        Ok(self
            .settings()?
            .endpoints
            .iter()
            .filter_map(|e| e.url.host_str().map(str::to_owned))
            .collect())
    }

    // ─────────────────────────────── probing ───────────────────────────────

    /// Traces and builds the report, without sending it. Needs consent.
    pub async fn make_report(&self) -> Result<Report, Error> {
        let trace = self.trace(None, None).await?;
        let gps = self
            .gps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let declared = match &gps {
            Some(fix) => resolve_declared(&self.config.declared, &self.catalog, Some(fix))?,
            None => self.declared.clone(),
        };
        let platform = Arc::clone(&self.platform);
        let with_mac = self.config.device.send_mac;
        let device =
            tokio::task::spawn_blocking(move || collect_facts(platform.as_ref(), with_mac))
                .await
                .map_err(|e| Error::Io {
                    what: "collecting device facts".to_owned(),
                    source: std::io::Error::other(e.to_string()),
                })?;
        // Asked again now, not before the trace: a trace may take up to
        // `trace.deadline_secs`, and a subscriber who withdrew consent
        // meanwhile must not have the report made (or kept) anyway.
        let consent = self.require_consent()?;
        let report = Report {
            schema: REPORT_SCHEMA_VERSION,
            report_id: ReportId::new_v7(),
            install_id: self.state.install_id()?,
            account: declared.account,
            created_at: Utc::now().fixed_offset(),
            declared: declared.line,
            device,
            consent: Some(consent),
            trace,
            endpoint_attempts: Vec::new(),
            spool_evicted: None,
            envelope: None,
        };
        report.validate_submitted()?;
        Ok(report)
    }

    /// One probe: trace, build the report, send it (or spool it).
    pub async fn probe_once(&self) -> Result<ProbeOutcome, Error> {
        let (submitter, report) = self.prepare_probe().await?;
        self.deliver_fresh(&submitter, report).await
    }

    /// The submitter and a fresh report: the trace, before anything is sent.
    async fn prepare_probe(&self) -> Result<(Submitter, Report), Error> {
        // Fail on a missing endpoint before spending a trace on it.
        let submitter = self.submitter()?;
        Ok((submitter, self.make_report().await?))
    }

    /// Delivers a report just made and records the probe in the status.
    async fn deliver_fresh(
        &self,
        submitter: &Submitter,
        report: Report,
    ) -> Result<ProbeOutcome, Error> {
        // A copy waits in the spool, due at once, while the report is on
        // its way (up to every endpoint's timeouts): a process killed
        // meanwhile (a phone's OS kills apps, a power cut) finds it at the
        // next start. Delivered or refused, it is removed; undelivered, it
        // is spooled in its place. Consent is asked once more before the
        // first copy is written: a withdrawal must leave nothing behind.
        if let Err(e) = self.require_consent() {
            tracing::info!(report_id = %report.report_id, "consent is not given now: the report is discarded");
            return Err(e);
        }
        // The evictions no report has told yet go with this one, on this
        // first send and every retry, taken in one step with writing the
        // copy that carries them.
        let now = Utc::now();
        let mut held = SpoolEntry {
            report,
            spooled_at: now,
            retries: 0,
            next_attempt_at: now,
        };
        if let Err(e) = self.spool.hold_telling_evictions(&mut held) {
            tracing::warn!(report_id = %held.report.report_id, error = %e,
                "cannot keep a copy of the report while it is sent");
        }
        let report = held.report;
        let outcome = self.deliver(submitter, report, None).await;
        let (report_id, result) = match &outcome {
            Ok(
                o @ (ProbeOutcome::Delivered { report_id, .. }
                | ProbeOutcome::Spooled { report_id, .. }),
            ) => (*report_id, o.to_string()),
            Err((id, e)) => (*id, format!("refused: {e}")),
        };
        // The status file only serves `status`: the probe's outcome stands
        // (and the daemon acts on it) whether or not it can be recorded.
        if let Err(e) = self.update_status(|s| {
            s.last_probe = Some(ProbeRecord {
                at: Utc::now(),
                report_id,
                result,
            });
        }) {
            tracing::warn!(%report_id, error = %e, "cannot record the probe in the status file");
        }
        outcome.map_err(|(_, e)| e)
    }

    /// Sends `report` (a fresh one, or `spooled`'s) once round the
    /// endpoints; spools it when none could be reached. The evictions it
    /// tells (`spool_evicted`) were fixed when it was first sent.
    async fn deliver(
        &self,
        submitter: &Submitter,
        mut report: Report,
        spooled: Option<&SpoolEntry>,
    ) -> Result<ProbeOutcome, (ReportId, Error)> {
        let report_id = report.report_id;
        let fail = |e: Error| (report_id, e);
        let submission = submitter.submit(&mut report).await;
        // The status file only serves `status`: a damaged or unwritable one
        // must not cost the report, which is delivered or spooled below.
        if let Err(e) = self.update_status(|s| s.record_attempts(&submission.attempts)) {
            tracing::warn!(%report_id, error = %e, "cannot record the endpoints' results");
        }
        match submission.result {
            Ok(delivery) => {
                // Stored now or before (`duplicate`), every copy told the
                // same evictions: they were taken off the tally already.
                self.spool.remove(&report_id).map_err(fail)?;
                Ok(ProbeOutcome::Delivered {
                    report_id,
                    delivery,
                })
            }
            Err(Undelivered::Rejected {
                endpoint,
                status,
                detail,
            }) => {
                tracing::error!(%report_id, %endpoint, status, %detail, "report refused as invalid");
                self.spool.remove(&report_id).map_err(fail)?;
                // Not stored: the evictions it carried are still untold.
                self.spool
                    .evictions_untold(report.spool_evicted.unwrap_or(0))
                    .map_err(fail)?;
                Err(fail(Error::Rejected {
                    endpoint,
                    status,
                    detail,
                }))
            }
            Err(Undelivered::Unreachable { retry_after }) => {
                // Consent withdrawn while the report was on its way: the
                // spool was deleted with it, and must not come back.
                if matches!(self.consent(), Ok(None)) {
                    self.spool.remove(&report_id).map_err(fail)?;
                    tracing::info!(%report_id, "consent was withdrawn while sending: the report is discarded");
                    return Err(fail(Error::NoConsent));
                }
                let retries = spooled.map_or(0, |e| e.retries.saturating_add(1));
                let wait = backoff(
                    retries,
                    Duration::from_secs(self.config.schedule.retry_base_secs),
                    Duration::from_secs(self.config.schedule.retry_max_secs),
                    retry_after,
                    &mut rand::thread_rng(),
                );
                let now = Utc::now();
                let entry = SpoolEntry {
                    report,
                    spooled_at: spooled.map_or(now, |e| e.spooled_at),
                    retries,
                    // `backoff` keeps the wait within retry_max_secs, which
                    // the config bounds; the fallback is never reached.
                    next_attempt_at: chrono::Duration::from_std(wait)
                        .ok()
                        .and_then(|wait| now.checked_add_signed(wait))
                        .unwrap_or(now),
                };
                let evicted_now = self.spool.put(&entry).map_err(fail)?;
                Ok(ProbeOutcome::Spooled {
                    report_id,
                    evicted: evicted_now,
                    retry_at: entry.next_attempt_at,
                })
            }
        }
    }

    /// Retries the spooled reports whose backoff has passed, oldest first;
    /// stops at the first that finds no endpoint (the line is still down).
    pub async fn drain_spool(&self) -> Result<DrainSummary, Error> {
        self.drain(false).await
    }

    /// Retries every spooled report now, backoff or not (the host knows the
    /// network just came back).
    pub async fn flush_spool(&self) -> Result<DrainSummary, Error> {
        self.drain(true).await
    }

    async fn drain(&self, all: bool) -> Result<DrainSummary, Error> {
        self.require_consent()?;
        let mut summary = DrainSummary::default();
        if self.spool.depth()? == 0 {
            return Ok(summary);
        }
        let submitter = self.submitter()?;
        let now = Utc::now();
        for id in self.spool.ids()? {
            let Some(entry) = self.spool.get(&id)? else {
                continue;
            };
            if !all && self.due_at(entry.next_attempt_at, now) > now {
                continue;
            }
            match self
                .deliver(&submitter, entry.report.clone(), Some(&entry))
                .await
            {
                Ok(ProbeOutcome::Delivered { .. }) => summary.delivered += 1,
                Ok(ProbeOutcome::Spooled { retry_at, .. }) => {
                    summary.held_until = Some(retry_at);
                    break;
                }
                Err((_, Error::Rejected { .. })) => summary.refused += 1,
                Err((_, e)) => return Err(e),
            }
        }
        summary.waiting = self.spool.depth()?;
        Ok(summary)
    }

    /// When a spooled report due at `due` is retried, seen at `now`. No
    /// backoff reaches past `retry_max_secs`, so a retry time further ahead
    /// was written while the clock ran ahead (a device dated a month on,
    /// then corrected): it is due now, not stranded for as long.
    fn due_at(&self, due: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        let most =
            chrono::Duration::from_std(Duration::from_secs(self.config.schedule.retry_max_secs))
                .ok()
                .and_then(|max| now.checked_add_signed(max))
                .unwrap_or(now);
        if due > most { now } else { due }
    }

    // ─────────────────────────────── manifest ──────────────────────────────

    /// Fetches the manifest and applies it if it verifies and is newer.
    /// Needs consent (it contacts the endpoints) and a manifest key.
    pub async fn update_manifest(&self) -> Result<ManifestCheck, Error> {
        self.require_consent()?;
        let key = self.manifest_key.ok_or_else(|| Error::Config {
            key: "manifest.public_key".to_owned(),
            reason: "no manifest public key is configured or built in, so no manifest can be \
                     trusted; set manifest.public_key"
                .to_owned(),
        })?;
        let submitter = self.submitter()?;
        let result = update_manifest(&self.state, &key, &submitter, Utc::now()).await;
        let text = match &result {
            Ok(ManifestCheck::Applied { serial, from }) => {
                format!("applied serial {serial} from {from}")
            }
            Ok(ManifestCheck::Current { serial, .. }) => match serial {
                Some(s) => format!("serial {s} is current"),
                None => "no newer manifest".to_owned(),
            },
            Err(e) => format!("refused or failed: {e}"),
        };
        self.update_status(|s| {
            s.last_manifest_check = Some(ManifestCheckRecord {
                at: Utc::now(),
                result: text,
            });
        })?;
        result
    }

    // ──────────────────────────────── status ───────────────────────────────

    fn read_status(&self) -> Result<StatusRecord, Error> {
        Ok(self.state.read_json(STATUS_FILE)?.unwrap_or_default())
    }

    fn update_status(&self, change: impl FnOnce(&mut StatusRecord)) -> Result<(), Error> {
        let _guard = self
            .status_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut record = self.read_status()?;
        change(&mut record);
        self.state.write_json(STATUS_FILE, &record)
    }

    /// Consent, last probe, spool, endpoint results and manifest.
    pub fn status(&self) -> Result<AgentStatus, Error> {
        let record = self.read_status()?;
        let manifest = self.applied_manifest();
        let endpoints = self
            .settings_under(manifest.clone())
            .map(|s| s.endpoints.iter().map(|e| e.as_str().to_owned()).collect())
            .unwrap_or_default();
        Ok(AgentStatus {
            install_id: self.state.install_id()?,
            consent: self.consent()?,
            consent_text_version: self.config.consent_version(),
            last_probe: record.last_probe,
            spool_depth: self.spool.depth()?,
            spool_evicted: self.spool.untold_evictions()?,
            spool_newer: self.spool.newer()?.len(),
            last_endpoint_results: record.last_endpoint_results,
            manifest_serial: manifest.as_ref().map(|m| m.serial),
            manifest_expires_at: manifest.as_ref().map(|m| m.expires_at),
            last_manifest_check: record.last_manifest_check,
            // An expired manifest's release may be long superseded.
            update_available: in_force(manifest, Utc::now())
                .and_then(|m| m.latest_agent)
                .filter(|r| is_newer_version(&r.version, env!("CARGO_PKG_VERSION"))),
            endpoints,
        })
    }

    // ──────────────────────────────── daemon ───────────────────────────────

    /// Runs until `shutdown` completes: a probe every interval (plus
    /// jitter), the spool drained in between, the manifest checked now and
    /// then. Without consent it only waits for it. Returns promptly once
    /// `shutdown` fires, even in the middle of a probe (a report cut off
    /// before it was spooled is simply not made). A state folder it cannot
    /// read (a damaged consent file, a spool folder it may not list) is
    /// logged and tried again after a growing pause, up to a minute: ending
    /// the daemon would stop probing for good on a machine nobody watches.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut next_probe = tokio::time::Instant::now();
        // The same time by the wall clock: Tokio's clock stops while the
        // machine sleeps (Linux, Android), so a laptop awake two hours a
        // day would otherwise probe a tenth as often as scheduled. The
        // probe is due at whichever comes first; the loop naps at most
        // `MAX_NAP` to notice.
        let mut probe_due = Utc::now();
        let mut next_manifest = tokio::time::Instant::now();
        // After a report found no endpoint, the spool is left alone until
        // that report's own retry is due: the others would only find the
        // same endpoints down (or the same collector asking to wait).
        let mut spool_hold: Option<DateTime<Utc>> = None;
        // The pause after the state folder could not be read; zero while
        // it can.
        let mut trouble = Duration::ZERO;
        loop {
            self.wakeups.fetch_add(1, Ordering::Relaxed);
            let now = tokio::time::Instant::now();
            let consented = match self.require_consent() {
                Ok(_) => true,
                Err(Error::NoConsent | Error::ConsentOutdated { .. }) => false,
                Err(e) => {
                    let pause = longer_pause(&mut trouble);
                    tracing::warn!(error = %e, retry_secs = pause.as_secs(),
                        "cannot read the consent; trying again later");
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(pause) => continue,
                    }
                }
            };
            if consented {
                if self.manifest_key.is_some() && next_manifest <= now {
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        result = self.update_manifest() => if let Err(e) = result {
                            tracing::warn!(error = %e, "manifest check failed");
                        },
                    }
                    next_manifest =
                        now + Duration::from_secs(self.config.schedule.manifest_check_secs.max(60));
                }
                if next_probe <= now || Utc::now() >= probe_due {
                    // A shutdown during the trace drops it: nothing was made
                    // yet. One while the report is on its way keeps a copy in
                    // the spool for the next start: the collector may or may
                    // not have stored it, and answers a repeat `duplicate`.
                    let made = tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        made = self.prepare_probe() => made,
                    };
                    match made {
                        Ok((submitter, report)) => {
                            let copy = report.clone();
                            tokio::select! {
                                () = &mut shutdown => {
                                    self.keep_for_next_start(copy)?;
                                    return Ok(());
                                }
                                result = self.deliver_fresh(&submitter, report) => match result {
                                    Ok(outcome) => {
                                        spool_hold = match &outcome {
                                            ProbeOutcome::Spooled { retry_at, .. } => Some(*retry_at),
                                            // The line works again: what
                                            // waits is worth trying now.
                                            ProbeOutcome::Delivered { .. } => None,
                                        };
                                        tracing::info!(%outcome, "probe done");
                                    }
                                    Err(e) => tracing::warn!(error = %e, "probe failed"),
                                },
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "probe failed"),
                    }
                    let wait = self.probe_wait();
                    next_probe = tokio::time::Instant::now() + wait;
                    probe_due = wall_after(Utc::now(), wait);
                }
                if self.hold_at(spool_hold, Utc::now()).is_none() {
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        result = self.drain_spool() => spool_hold = self.hold_after(result),
                    }
                }
            }
            let wake = self.wake_at(
                consented,
                next_probe,
                next_manifest,
                spool_hold,
                &mut trouble,
            );
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// When the daemon wakes next: for the probe, the manifest check (with
    /// a key) or the spool's next retry; a minute on while it waits for
    /// consent. `trouble` is the pause after the spool could not be read.
    fn wake_at(
        &self,
        consented: bool,
        next_probe: tokio::time::Instant,
        next_manifest: tokio::time::Instant,
        spool_hold: Option<DateTime<Utc>>,
        trouble: &mut Duration,
    ) -> tokio::time::Instant {
        if !consented {
            // Without consent the spool is not sent, so it wakes nobody.
            *trouble = Duration::ZERO;
            return tokio::time::Instant::now() + IDLE;
        }
        // Without a manifest key `next_manifest` never moves on: left in,
        // it would keep the wake time in the past and the loop spinning.
        let wake = if self.manifest_key.is_some() {
            next_probe.min(next_manifest)
        } else {
            next_probe
        };
        let wake = wake.min(tokio::time::Instant::now() + MAX_NAP);
        match self.spool_wait(spool_hold, Utc::now()) {
            Ok(wait) => {
                *trouble = Duration::ZERO;
                wait.map_or(wake, |wait| wake.min(tokio::time::Instant::now() + wait))
            }
            Err(e) => {
                let pause = longer_pause(trouble);
                tracing::warn!(error = %e, retry_secs = pause.as_secs(),
                    "cannot read the spool; trying again later");
                wake.min(tokio::time::Instant::now() + pause)
            }
        }
    }

    /// The spool's hold after a drain that gave `result`.
    fn hold_after(&self, result: Result<DrainSummary, Error>) -> Option<DateTime<Utc>> {
        match result {
            Ok(summary) => summary.held_until,
            Err(e) => {
                tracing::warn!(error = %e, "spool retry failed");
                // A spool that cannot be written (a full disk) fails the
                // same way a second later.
                let wait = chrono::Duration::seconds(
                    i64::try_from(self.config.schedule.retry_base_secs).unwrap_or(i64::MAX),
                );
                Utc::now().checked_add_signed(wait)
            }
        }
    }

    /// The spool's hold as it stands at `now`: `None` once it has passed,
    /// and once it lies further ahead than any backoff reaches, as a hold
    /// set while the clock ran ahead does once the clock is put right.
    fn hold_at(&self, hold: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        hold.map(|h| self.due_at(h, now)).filter(|h| *h > now)
    }

    /// How long until the spool's next retry (under `hold`), seen at
    /// `now`; `None` when the spool is empty.
    fn spool_wait(
        &self,
        hold: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, Error> {
        let Some(due) = self.spool.next_due()? else {
            return Ok(None);
        };
        let due = self.due_at(due, now);
        let due = self.hold_at(hold, now).map_or(due, |hold| due.max(hold));
        let delta = (due - now).to_std().unwrap_or(Duration::ZERO);
        // Never spin: a retry that is due now waits a second.
        Ok(Some(delta.max(Duration::from_secs(1))))
    }

    /// Spools a report whose delivery a shutdown interrupted, due at once,
    /// and records the probe as such. The copy held while it was on its
    /// way is kept if it is there: it carries the evictions the report
    /// took to tell.
    fn keep_for_next_start(&self, report: Report) -> Result<(), Error> {
        let report_id = report.report_id;
        let now = Utc::now();
        let entry = match self.spool.get(&report_id)? {
            Some(held) => held,
            None => SpoolEntry {
                report,
                spooled_at: now,
                retries: 0,
                next_attempt_at: now,
            },
        };
        self.spool.put(&entry)?;
        tracing::info!(%report_id, "shutdown while sending: the report is spooled for the next start");
        self.update_status(|s| {
            s.last_probe = Some(ProbeRecord {
                at: now,
                report_id,
                result: "interrupted by shutdown; spooled for the next start".to_owned(),
            });
        })
    }

    fn probe_wait(&self) -> Duration {
        let (interval, jitter) = self.settings().map_or_else(
            |_| {
                (
                    Duration::from_secs(self.config.schedule.interval_secs),
                    Duration::from_secs(self.config.schedule.jitter_secs),
                )
            },
            |s| (s.interval, s.jitter),
        );
        let extra =
            rand::thread_rng().gen_range(0..=u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX));
        interval + Duration::from_millis(extra)
    }
}

/// Whether a consent given to version `accepted` covers what version
/// `required` asks: the same text, with the MAC address when it is asked
/// for (a consent that covers the MAC covers the reports without it).
pub(crate) fn consent_covers(accepted: &str, required: &str) -> bool {
    accepted == required
        || accepted
            .strip_suffix(crate::config::MAC_CONSENT_SUFFIX)
            .is_some_and(|text| text == required)
}

/// How long the daemon sleeps while it may do nothing (no consent), and
/// the longest pause after its state folder could not be read.
const IDLE: Duration = Duration::from_mins(1);

/// The next pause after the state folder could not be read: doubling from
/// a second up to [`IDLE`].
fn longer_pause(pause: &mut Duration) -> Duration {
    *pause = (*pause * 2).clamp(Duration::from_secs(1), IDLE);
    *pause
}

/// The daemon's longest sleep: it looks at the wall clock at least this
/// often, so time the machine spent asleep counts towards the schedule.
const MAX_NAP: Duration = Duration::from_mins(5);

/// `now` plus `wait` by the wall clock (far ahead when that overflows).
fn wall_after(now: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(wait)
        .ok()
        .and_then(|w| now.checked_add_signed(w))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(state: &std::path::Path) -> Agent {
        let mut config = AgentConfig::default();
        config.schedule.retry_base_secs = 30;
        config.schedule.retry_max_secs = 600;
        let options = AgentOptions {
            config,
            state_dir: Some(state.to_path_buf()),
            ..AgentOptions::default()
        };
        Agent::with_engines(options, Vec::new()).expect("agent")
    }

    /// Tokio's clock stops while the machine sleeps: however far off the
    /// next probe is by it, the daemon looks at the wall clock within
    /// `MAX_NAP`, and a probe due by the wall clock is made.
    #[tokio::test]
    async fn the_daemon_naps_at_most_max_nap_so_sleep_counts() {
        let state = tempfile::tempdir().expect("tempdir");
        let agent = agent(state.path());
        let far = tokio::time::Instant::now() + Duration::from_hours(6);
        let mut trouble = Duration::ZERO;
        let wake = agent.wake_at(true, far, far, None, &mut trouble);
        assert!(
            wake <= tokio::time::Instant::now() + MAX_NAP,
            "the daemon would sleep {:?}",
            wake - tokio::time::Instant::now()
        );
        assert!(MAX_NAP <= Duration::from_mins(5));
    }

    /// A consent given while the MAC address was not sent does not cover
    /// it: turning `send_mac` on asks the subscriber again.
    #[test]
    fn sending_the_mac_needs_a_consent_that_covers_it() {
        let state = tempfile::tempdir().expect("tempdir");
        agent(state.path()).accept_consent().expect("consent");
        agent(state.path())
            .require_consent()
            .expect("covers the reports");

        let with_mac = || {
            let mut config = AgentConfig::default();
            config.device.send_mac = true;
            let options = AgentOptions {
                config,
                state_dir: Some(state.path().to_path_buf()),
                ..AgentOptions::default()
            };
            Agent::with_engines(options, Vec::new()).expect("agent")
        };
        match with_mac().require_consent() {
            Err(Error::ConsentOutdated { accepted, current }) => {
                assert_eq!(accepted, "1");
                assert_eq!(current, "1+mac");
            }
            other => panic!("expected ConsentOutdated, got {other:?}"),
        }
        let record = with_mac().accept_consent().expect("consent with the MAC");
        assert_eq!(record.text_version, "1+mac");
        with_mac().require_consent().expect("covers the MAC");
        // What covers the MAC covers less too; another text covers nothing.
        agent(state.path())
            .require_consent()
            .expect("covers the reports");
        assert!(consent_covers("1+mac", "1"));
        assert!(!consent_covers("1", "1+mac"));
        assert!(!consent_covers("2+mac", "1"));
        assert!(!consent_covers("1+mac", "1+"));
    }

    #[test]
    fn a_wall_clock_deadline_saturates() {
        let now = Utc::now();
        assert_eq!(
            wall_after(now, Duration::from_mins(1)),
            now + chrono::Duration::seconds(60)
        );
        assert_eq!(wall_after(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn a_spool_hold_set_while_the_clock_ran_ahead_does_not_hold() {
        let state = tempfile::tempdir().expect("tempdir");
        let agent = agent(state.path());
        let now = Utc::now();
        let later = now + chrono::Duration::seconds(300);
        assert_eq!(agent.hold_at(Some(later), now), Some(later));
        assert_eq!(
            agent.hold_at(Some(now - chrono::Duration::seconds(1)), now),
            None
        );
        assert_eq!(agent.hold_at(None, now), None);
        // Further ahead than retry_max_secs: set by a clock a month fast.
        let stranded = now + chrono::Duration::days(30);
        assert_eq!(agent.hold_at(Some(stranded), now), None);

        // A report due now is retried a second on, not a month on.
        let report = Report::from_json(
            &std::fs::read(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../config/report.example.json"),
            )
            .expect("example"),
        )
        .expect("report");
        agent
            .spool
            .put(&SpoolEntry {
                report,
                spooled_at: now,
                retries: 0,
                next_attempt_at: now,
            })
            .expect("put");
        let wait = agent.spool_wait(Some(stranded), now).expect("wait");
        assert_eq!(wait, Some(Duration::from_secs(1)));
        let wait = agent.spool_wait(Some(later), now).expect("wait");
        assert_eq!(wait, Some(Duration::from_mins(5)));
    }
}
