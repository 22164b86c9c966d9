//! Prometheus metrics: requests by outcome, connections, staging depth, the
//! age of the oldest unacknowledged report and commit latency.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::net::SocketAddr;

use crate::{Error, ListenerEvent, ListenerObserver, Staging};

/// Which listener a request or connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum ListenerName {
    /// The public listener (probes).
    Public,
    /// The export listener (the internal puller).
    Export,
}

/// How an ingest request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum IngestOutcome {
    /// Committed to staging (2xx).
    Stored,
    /// Already stored (2xx, `duplicate`).
    Duplicate,
    /// The report broke the schema (4xx).
    Invalid,
    /// Body over the size limit, before or after decompression (413).
    TooLarge,
    /// Not JSON, or an encoding we do not take (415).
    UnsupportedMedia,
    /// Shed by the concurrency limit (503).
    Shed,
    /// Staging at its bound (503).
    StagingFull,
    /// Staging failed, e.g. disk full (503).
    StorageError,
    /// The request took longer than allowed (408/503).
    Timeout,
    /// The body broke off before it was all in (400 `bad_body`): what a
    /// dropped mobile connection looks like, so no reject of its source.
    Aborted,
    /// Any path or method that is not an ingest endpoint (404/405).
    NotFound,
    /// Refused by the signature check (4xx; the reason is counted in
    /// `signature_checks`).
    SignatureRejected,
    /// A unit in an anomaly episode over its budget (429).
    Throttled,
    /// The receiver could not record how the report arrived in a form the
    /// stored schema accepts (500). Not expected: it would be a receiver bug.
    Unrecordable,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct IngestLabels {
    outcome: IngestOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConnectionLabels {
    listener: ListenerName,
    event: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UnitLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: ListenerName,
}

/// The collector's metrics (shared by every task).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    ingest: Family<IngestLabels, Counter>,
    connections: Family<ConnectionLabels, Counter>,
    open_connections: Family<ListenerLabels, Gauge>,
    commits: CommitMetrics,
    staging_unacked: Gauge,
    staging_highest_seq: Gauge,
    oldest_unacked_seconds: Gauge<f64, AtomicU64>,
    exported: Counter,
    enrolled_installs: Gauge,
    /// Signature checks and enrolments.
    pub signatures: crate::SignatureMetrics,
    episodes_open: Gauge,
    episodes_opened: Counter,
    throttled: Family<UnitLabels, Counter>,
    low_trust_units: Family<UnitLabels, Gauge>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("lineprobe_collector");
        let ingest = Family::<IngestLabels, Counter>::default();
        registry.register(
            "ingest_requests",
            "Ingest requests by outcome",
            ingest.clone(),
        );
        let connections = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "connection_events",
            "Connection events by listener (accepted, refused at the cap, TLS failures, timeouts…)",
            connections.clone(),
        );
        let open_connections = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "open_connections",
            "Connections currently open, by listener",
            open_connections.clone(),
        );
        let commits = CommitMetrics::register(&mut registry);
        let staging_unacked = Gauge::default();
        registry.register(
            "staging_unacked_reports",
            "Reports committed and not yet acknowledged by the puller",
            staging_unacked.clone(),
        );
        let staging_highest_seq = Gauge::default();
        registry.register(
            "staging_highest_seq",
            "Highest sequence number assigned",
            staging_highest_seq.clone(),
        );
        let oldest_unacked_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "staging_oldest_unacked_age_seconds",
            "Age of the oldest unacknowledged report (0 when none)",
            oldest_unacked_seconds.clone(),
        );
        let exported = Counter::default();
        registry.register(
            "exported_reports",
            "Reports sent to the puller",
            exported.clone(),
        );
        let enrolled_installs = Gauge::default();
        registry.register(
            "enrolled_installations",
            "Installations with enrolled keys kept at this node (at most \
             signing.max_enrolled_installs)",
            enrolled_installs.clone(),
        );
        let signatures = crate::SignatureMetrics::register(&mut registry);
        let episodes_open = Gauge::default();
        registry.register(
            "traffic_anomaly_episodes_open",
            "Traffic anomaly episodes going on now",
            episodes_open.clone(),
        );
        let episodes_opened = Counter::default();
        registry.register(
            "traffic_anomaly_episodes",
            "Traffic anomaly episodes opened",
            episodes_opened.clone(),
        );
        let throttled = Family::<UnitLabels, Counter>::default();
        registry.register(
            "traffic_throttled_requests",
            "Requests answered 429 because their unit (prefix or install) was in an anomaly \
             episode and over its budget",
            throttled.clone(),
        );
        let low_trust_units = Family::<UnitLabels, Gauge>::default();
        registry.register(
            "trust_low_units",
            "Units (prefix or install) whose trust is below trust.low_threshold",
            low_trust_units.clone(),
        );
        Arc::new(Self {
            registry,
            ingest,
            connections,
            open_connections,
            commits,
            staging_unacked,
            staging_highest_seq,
            oldest_unacked_seconds,
            exported,
            enrolled_installs,
            signatures,
            episodes_open,
            episodes_opened,
            throttled,
            low_trust_units,
        })
    }

    /// Counts one ingest request.
    pub fn ingest(&self, outcome: IngestOutcome) {
        self.ingest.get_or_create(&IngestLabels { outcome }).inc();
    }

    /// The number of ingest requests that ended with `outcome` so far.
    pub fn ingest_count(&self, outcome: IngestOutcome) -> u64 {
        self.ingest.get_or_create(&IngestLabels { outcome }).get()
    }

    /// An observer that counts `listener`'s connection events.
    pub fn listener_observer(
        self: &Arc<Self>,
        listener: ListenerName,
    ) -> Arc<dyn ListenerObserver> {
        Arc::new(ConnectionCounter {
            metrics: Arc::clone(self),
            listener,
        })
    }

    /// How many times `event` happened on `listener` so far.
    pub fn connection_events(&self, listener: ListenerName, event: ListenerEvent) -> u64 {
        self.connections
            .get_or_create(&ConnectionLabels {
                listener,
                event: event_name(event),
            })
            .get()
    }

    /// Records one staging commit.
    pub fn commit(&self, took: Duration, reports: usize) {
        self.commits.seconds.observe(took.as_secs_f64());
        #[allow(clippy::cast_precision_loss)] // batch sizes are far below 2^52
        self.commits.reports.observe(reports as f64);
    }

    /// Records one WAL restart of the staging store.
    pub fn wal_restart(&self, took: Duration) {
        self.commits.wal_restart_seconds.observe(took.as_secs_f64());
    }

    /// Counts reports handed to the puller.
    pub fn exported(&self, reports: u64) {
        self.exported.inc_by(reports);
    }

    /// Counts an anomaly episode opened.
    pub fn traffic_episode_opened(&self) {
        self.episodes_opened.inc();
    }

    /// Counts a request throttled for its unit of `kind`.
    pub fn traffic_throttled(&self, kind: &'static str) {
        self.throttled.get_or_create(&UnitLabels { kind }).inc();
    }

    /// Requests throttled so far for units of `kind`.
    pub fn traffic_throttled_count(&self, kind: &'static str) -> u64 {
        self.throttled.get_or_create(&UnitLabels { kind }).get()
    }

    /// Sets the traffic gauges.
    pub fn traffic_gauges(&self, open_episodes: usize, low_prefixes: usize, low_installs: usize) {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.episodes_open.set(n(open_episodes));
        self.low_trust_units
            .get_or_create(&UnitLabels { kind: "prefix" })
            .set(n(low_prefixes));
        self.low_trust_units
            .get_or_create(&UnitLabels { kind: "install" })
            .set(n(low_installs));
    }

    /// Refreshes the staging gauges and renders everything in the
    /// Prometheus text format.
    pub async fn render(&self, staging: &Staging) -> Result<String, Error> {
        let stats = staging.stats().await?;
        self.staging_unacked
            .set(i64::try_from(stats.unacked).unwrap_or(i64::MAX));
        self.staging_highest_seq
            .set(i64::try_from(stats.highest_seq).unwrap_or(i64::MAX));
        let age = stats.oldest_unacked.map_or(0.0, |t| {
            let ms = (chrono::Utc::now() - t).num_milliseconds().max(0);
            #[allow(clippy::cast_precision_loss)] // ages in ms fit easily
            let secs = ms as f64 / 1000.0;
            secs
        });
        self.oldest_unacked_seconds.set(age);
        self.enrolled_installs
            .set(i64::try_from(staging.enrolled_installs()).unwrap_or(i64::MAX));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| Error::Staging(format!("cannot encode metrics: {e}")))?;
        Ok(out)
    }
}

/// How the staging store's commits go.
#[derive(Debug)]
struct CommitMetrics {
    seconds: Histogram,
    reports: Histogram,
    wal_restart_seconds: Histogram,
}

impl CommitMetrics {
    fn register(registry: &mut Registry) -> Self {
        // 100 µs to ~13 s: an fsync on a slow disk can take long.
        let seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 18));
        registry.register(
            "staging_commit_seconds",
            "Duration of staging commits (one fsync'd transaction each)",
            seconds.clone(),
        );
        let reports = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "staging_commit_reports",
            "Reports per staging commit (group commit size)",
            reports.clone(),
        );
        // 100 µs to ~3 s.
        let wal_restart_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register(
            "staging_wal_restart_seconds",
            "Duration of staging WAL restarts; commits wait through most of each",
            wal_restart_seconds.clone(),
        );
        Self {
            seconds,
            reports,
            wal_restart_seconds,
        }
    }
}

/// Counts a listener's connection events into [`Metrics`].
struct ConnectionCounter {
    metrics: Arc<Metrics>,
    listener: ListenerName,
}

impl ListenerObserver for ConnectionCounter {
    fn on_event(&self, event: ListenerEvent, _peer: SocketAddr) {
        let listener = self.listener;
        match event {
            ListenerEvent::Accepted => {
                self.metrics
                    .open_connections
                    .get_or_create(&ListenerLabels { listener })
                    .inc();
            }
            ListenerEvent::Closed => {
                self.metrics
                    .open_connections
                    .get_or_create(&ListenerLabels { listener })
                    .dec();
                // Every accepted connection closes once; counting closes too
                // would only repeat `accepted`.
                return;
            }
            _ => {}
        }
        self.metrics
            .connections
            .get_or_create(&ConnectionLabels {
                listener,
                event: event_name(event),
            })
            .inc();
    }
}

fn event_name(event: ListenerEvent) -> &'static str {
    match event {
        ListenerEvent::Accepted => "accepted",
        ListenerEvent::RefusedAtCap => "refused_at_cap",
        ListenerEvent::RefusedAtPrefixCap => "refused_at_prefix_cap",
        ListenerEvent::TlsHandshakeFailed => "tls_handshake_failed",
        ListenerEvent::TlsHandshakeTimedOut => "tls_handshake_timed_out",
        ListenerEvent::ProxyHeaderRejected => "proxy_header_rejected",
        ListenerEvent::HeaderReadTimedOut => "header_read_timed_out",
        ListenerEvent::IdleTimedOut => "idle_timed_out",
        ListenerEvent::ForceClosed => "force_closed",
        ListenerEvent::Closed => "closed",
    }
}
