//! The one-way puller: the internal side asks each collector for the reports
//! it has not yet stored, stores them, and only then acknowledges them.
//!
//! Every exchange is a request the internal side starts (see the one-way
//! rule in the design). Per collector, a round repeats: fetch a page after
//! the stored cursor → commit its reports and the new cursor in one
//! transaction ([`PullSink::commit`]) → acknowledge up to the new cursor;
//! the next page is fetched while the previous one is committed.
//! A crash between commit and ack only means the ack is repeated later
//! (acks are idempotent); a crash before the commit means the page is pulled
//! again, and the sink ignores `(node_id, seq)` it already holds.
//!
//! [`Puller::pull_once`] is one round of every collector, concurrently, and
//! ends with the slowest. [`Puller::run`] (the daemon) pulls each collector
//! on a schedule of its own: one that is down, hangs until its timeout, or
//! answers slowly page after page delays only its own next round, never
//! another collector's.

mod client;
mod endpoint;
mod ndjson;
mod traffic;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

pub use client::{AckReceipt, CollectorClient, ManifestAnswer, Page};
pub use endpoint::{CollectorEndpoint, ExportSecret, PullSettings, validate_collectors};
pub use ndjson::PulledLine;
pub use traffic::{LowTrustSource, TrafficEpisode, TrafficView};

use crate::Error;
use client::PageFault;

/// Where pulled reports are stored: the internal database implements it.
///
/// The futures are `Send` so that a puller can run on a spawned task.
pub trait PullSink: Send + Sync {
    /// The stored cursor of `collector`: the node id it answered with and
    /// the last `seq` committed, or `None` before the first commit.
    fn cursor(
        &self,
        collector: &str,
    ) -> impl Future<Output = Result<Option<(String, u64)>, Error>> + Send;

    /// Stores `reports` from `node_id` and moves the cursor of `collector`
    /// to `(node_id, next_after)`, all in ONE transaction: either both land
    /// or neither. Reports whose `(node_id, seq)` is already stored are
    /// skipped (a page pulled again after a lost commit or ack). Returns how
    /// many reports were newly stored.
    fn commit(
        &self,
        collector: &str,
        node_id: &str,
        reports: &[PulledLine],
        next_after: u64,
    ) -> impl Future<Output = Result<u64, Error>> + Send;

    /// The staging store `collector`'s pulls came from (its
    /// `X-LineProbe-Store`), once known.
    fn store(&self, collector: &str) -> impl Future<Output = Result<Option<String>, Error>> + Send;

    /// Records that `collector`'s pulls come from store `store_id`: done
    /// before anything from that store is committed, so that a store made
    /// afresh later is told apart.
    fn bind_store(
        &self,
        collector: &str,
        store_id: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Records that the collector confirmed the acknowledgement up to
    /// `up_to` (bookkeeping; nothing depends on it).
    fn acked(&self, collector: &str, up_to: u64) -> impl Future<Output = Result<(), Error>> + Send;

    /// Records that a round started at `round_started_ms` (Unix ms) pulled
    /// `collector` to the end of its export: every report the collector
    /// received before then is stored (batch reports wait for it).
    fn caught_up(
        &self,
        collector: &str,
        round_started_ms: i64,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Records a failed round or a failed acknowledgement of `collector`,
    /// for operators; `message` says what failed and what to check.
    fn failed(
        &self,
        collector: &str,
        message: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// What one round did with one collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorRound {
    /// The collector's configured name.
    pub collector: String,
    /// The node id it answered with, when it answered.
    pub node_id: Option<String>,
    /// Pages of reports committed.
    pub pages: u32,
    /// Reports pulled.
    pub pulled: u64,
    /// Reports newly stored.
    pub inserted: u64,
    /// Reports pulled that were already stored.
    pub duplicates: u64,
    /// The cursor at the end of the round: the last `seq` committed.
    pub cursor: u64,
    /// The highest `seq` the collector confirmed acknowledged this round.
    pub acked_up_to: Option<u64>,
    /// The collector answered an empty page: nothing more is waiting.
    pub caught_up: bool,
    /// Why the round stopped early; what was committed before stays.
    pub error: Option<String>,
    /// The last acknowledgement of the round failed (not fatal: the next
    /// round acknowledges again).
    pub ack_error: Option<String>,
    /// How long the round took.
    pub elapsed: Duration,
    /// When the round started (Unix ms): once it is caught up, every
    /// report the collector received before then is stored.
    pub started_at_ms: i64,
}

impl CollectorRound {
    fn new(collector: &str) -> Self {
        Self {
            collector: collector.to_owned(),
            node_id: None,
            pages: 0,
            pulled: 0,
            inserted: 0,
            duplicates: 0,
            cursor: 0,
            acked_up_to: None,
            caught_up: false,
            started_at_ms: chrono::Utc::now().timestamp_millis(),
            error: None,
            ack_error: None,
            elapsed: Duration::ZERO,
        }
    }
}

/// Pulls every enabled collector: fetch a page, commit it with the cursor,
/// then acknowledge it (the order that makes a re-pull harmless).
#[derive(Debug)]
pub struct Puller {
    clients: Vec<CollectorClient>,
    settings: PullSettings,
    /// Per collector, the highest `seq` this puller has had acknowledged.
    /// Empty at start, so a new puller acknowledges its stored cursor once:
    /// an ack lost before a restart is repeated.
    acked: Mutex<HashMap<String, u64>>,
}

impl Puller {
    /// Validates the collectors (names unique) and settings and builds a
    /// client for each enabled collector, reading tokens from the
    /// environment (`token_env`) and the TLS files.
    pub fn new(endpoints: &[CollectorEndpoint], settings: PullSettings) -> Result<Self, Error> {
        validate_collectors(endpoints)?;
        let clients = endpoints
            .iter()
            .filter(|e| e.enabled)
            .map(CollectorClient::new)
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_clients(clients, settings)
    }

    /// A puller over clients already built; disabled ones are left out.
    pub fn from_clients(
        clients: Vec<CollectorClient>,
        settings: PullSettings,
    ) -> Result<Self, Error> {
        settings.validate()?;
        let endpoints: Vec<CollectorEndpoint> =
            clients.iter().map(|c| c.endpoint().clone()).collect();
        validate_collectors(&endpoints)?;
        Ok(Self {
            clients: clients
                .into_iter()
                .filter(|c| c.endpoint().enabled)
                .collect(),
            settings,
            acked: Mutex::new(HashMap::new()),
        })
    }

    /// The names of the collectors pulled.
    pub fn collectors(&self) -> Vec<&str> {
        self.clients.iter().map(CollectorClient::name).collect()
    }

    /// The pacing settings.
    pub fn settings(&self) -> &PullSettings {
        &self.settings
    }

    /// One round: every enabled collector concurrently, each until it has
    /// caught up, failed, or given `max_pages_per_round` pages. It ends when
    /// the slowest collector's round ends.
    pub async fn pull_once<S: PullSink>(&self, sink: &S) -> Vec<CollectorRound> {
        let shutdown = CancellationToken::new();
        // Polled together on this task: no detached work, and a collector
        // waiting on its network does not stop the others from progressing.
        join_all(
            self.clients
                .iter()
                .map(|client| self.pull_collector(client, sink, &shutdown)),
        )
        .await
    }

    /// Pulls until `shutdown` is cancelled, each collector on its own
    /// schedule: one that has more waiting is pulled again at once; one
    /// that has caught up or failed is pulled again `interval` after its
    /// round ended. A collector that is down, hangs or answers slowly thus
    /// delays only itself. On shutdown no new page is fetched; a commit
    /// under way completes. Every collector's loop runs on the calling task
    /// (nothing is detached), and `run` returns once all have stopped.
    pub async fn run<S: PullSink>(
        &self,
        sink: &S,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        tracing::info!(
            collectors = ?self.collectors(),
            interval_s = interval.as_secs_f64(),
            "puller started"
        );
        join_all(
            self.clients
                .iter()
                .map(|client| self.run_collector(client, sink, interval, &shutdown)),
        )
        .await;
        tracing::info!("puller stopped");
    }

    /// The schedule of one collector in [`Puller::run`].
    async fn run_collector<S: PullSink>(
        &self,
        client: &CollectorClient,
        sink: &S,
        interval: Duration,
        shutdown: &CancellationToken,
    ) {
        while !shutdown.is_cancelled() {
            let round = self.pull_collector(client, sink, shutdown).await;
            // Behind: the round stopped at `max_pages_per_round` with more
            // waiting (each such round committed at least one page).
            if round.error.is_none() && !round.caught_up && !shutdown.is_cancelled() {
                tracing::debug!(
                    collector = client.name(),
                    "more reports waiting: pulling again"
                );
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    async fn pull_collector<S: PullSink>(
        &self,
        client: &CollectorClient,
        sink: &S,
        shutdown: &CancellationToken,
    ) -> CollectorRound {
        let started = Instant::now();
        let mut round = CollectorRound::new(client.name());
        if let Err(e) = self.pull_pages(client, sink, shutdown, &mut round).await {
            let message = match e {
                Error::Collector { message, .. } => message,
                other => other.to_string(),
            };
            tracing::warn!(collector = client.name(), error = %message, "pull failed");
            if let Err(e) = sink.failed(client.name(), &message).await {
                tracing::warn!(collector = client.name(), error = %e,
                    "cannot record the failed pull");
            }
            round.error = Some(message);
            // Acknowledge again once the collector answers, even with
            // nothing new: the confirmed ack also clears the recorded error.
            self.acked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(client.name());
        }
        round.elapsed = started.elapsed();
        if round.pulled > 0 || round.error.is_some() {
            tracing::info!(
                collector = %round.collector,
                pages = round.pages,
                pulled = round.pulled,
                inserted = round.inserted,
                duplicates = round.duplicates,
                cursor = round.cursor,
                caught_up = round.caught_up,
                elapsed_ms = round.elapsed.as_millis(),
                "pull round"
            );
        } else {
            tracing::debug!(collector = %round.collector, cursor = round.cursor,
                "pull round: nothing new");
        }
        round
    }

    async fn pull_pages<S: PullSink>(
        &self,
        client: &CollectorClient,
        sink: &S,
        shutdown: &CancellationToken,
        round: &mut CollectorRound,
    ) -> Result<(), Error> {
        let name = client.name();
        let (mut expected_node, mut after) = match sink.cursor(name).await? {
            Some((node, after)) => (Some(node), after),
            None => (None, 0),
        };
        round.cursor = after;
        let mut known_store = sink.store(name).await?;
        let mut limit = client.endpoint().batch;
        let max_pages = self.settings.max_pages_per_round;
        // The page fetched while the previous one was being committed.
        let mut ahead: Option<Result<Page, PageFault>> = None;
        while round.pages < max_pages {
            let fetched = if let Some(fetched) = ahead.take() {
                fetched
            } else {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ok(()),
                    fetched = client.fetch(after, limit) => fetched,
                }
            };
            let page = match fetched {
                Ok(page) => page,
                Err(PageFault::TooLarge(message)) if limit > 1 => {
                    limit = (limit / 2).max(1);
                    tracing::warn!(collector = name, %message, batch = limit,
                        "page too large: asking for fewer reports");
                    continue;
                }
                Err(fault) => {
                    return Err(Error::Collector {
                        name: name.to_owned(),
                        message: fault.message().to_owned(),
                    });
                }
            };
            if let Some(expected) = &expected_node
                && *expected != page.node_id
            {
                return Err(Error::Collector {
                    name: name.to_owned(),
                    message: format!(
                        "the collector answers as node {:?} but the cursor of {name:?} was \
                         committed for node {expected:?}: refusing to pull. A replaced \
                         collector starts its seqs over; configure it under a new name",
                        page.node_id
                    ),
                });
            }
            round.node_id = Some(page.node_id.clone());
            // Checked on every page, an empty one too (whose repeated ack
            // would tell a store made afresh to drop reports never pulled).
            check_store(sink, name, &page, &mut known_store).await?;
            if page.reports.is_empty() {
                round.caught_up = true;
                self.record_caught_up(sink, name, round).await;
                // An acknowledgement lost in an earlier round (or before a
                // restart) is repeated once nothing new would carry it; one
                // that failed in this round waits for the next.
                if after > 0 && round.ack_error.is_none() && self.last_acked(name) < after {
                    self.acknowledge(client, sink, &page, after, round).await;
                }
                return Ok(());
            }
            // The next page is fetched while this one is committed and
            // acknowledged: the network and the collector work while the
            // database does. The collector keeps every report until it is
            // acknowledged, so a page fetched ahead of a commit that fails is
            // only dropped, and pulled again next round.
            let fetch_ahead = round.pages + 1 < max_pages;
            let next_after = page.next_after;
            let store = self.store_page(client, sink, &page, round);
            let fetch_next = async {
                if !fetch_ahead {
                    return None;
                }
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => None,
                    fetched = client.fetch(next_after, limit) => Some(fetched),
                }
            };
            let (stored, fetched_next) = tokio::join!(store, fetch_next);
            stored?;
            // A page that reached the collector's durable end when asked
            // for: under steady traffic the page after it is seldom empty.
            if page.reaches_the_end() {
                self.record_caught_up(sink, name, round).await;
            }
            after = next_after;
            expected_node = Some(page.node_id);
            ahead = fetched_next;
        }
        Ok(())
    }

    /// Records that `round` pulled the collector to its end. Bookkeeping
    /// for batch reports: a failure only leaves them waiting for a later
    /// round.
    async fn record_caught_up<S: PullSink>(&self, sink: &S, name: &str, round: &CollectorRound) {
        if let Err(e) = sink.caught_up(name, round.started_at_ms).await {
            tracing::warn!(collector = name, error = %e,
                "cannot record that the collector was pulled to its end");
        }
    }

    /// Commits one page (its reports and the new cursor in one transaction)
    /// and, only once it is committed, acknowledges it.
    async fn store_page<S: PullSink>(
        &self,
        client: &CollectorClient,
        sink: &S,
        page: &Page,
        round: &mut CollectorRound,
    ) -> Result<(), Error> {
        let name = client.name();
        let pulled = page.reports.len() as u64;
        let inserted = sink
            .commit(name, &page.node_id, &page.reports, page.next_after)
            .await?
            .min(pulled);
        round.pages += 1;
        round.pulled += pulled;
        round.inserted += inserted;
        round.duplicates += pulled - inserted;
        round.cursor = page.next_after;
        tracing::debug!(
            collector = name,
            pulled,
            inserted,
            cursor = page.next_after,
            "page committed"
        );
        // Only now, with the page committed, may the collector forget it.
        self.acknowledge(client, sink, page, page.next_after, round)
            .await;
        Ok(())
    }

    /// Acknowledges up to `up_to` to the node and store `page` came from
    /// (checked against the ones pulled from before); a failure is logged
    /// and recorded, never fatal.
    async fn acknowledge<S: PullSink>(
        &self,
        client: &CollectorClient,
        sink: &S,
        page: &Page,
        up_to: u64,
        round: &mut CollectorRound,
    ) {
        let name = client.name();
        match client
            .ack(&page.node_id, up_to, page.store_id.as_deref())
            .await
        {
            Ok(receipt) => {
                // What the collector confirms is what is recorded: a lower
                // confirmation is shown as such and the ack repeated once
                // the puller has caught up.
                let confirmed = receipt.acked_up_to.min(up_to);
                self.acked
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(name.to_owned(), confirmed);
                round.acked_up_to = Some(confirmed);
                round.ack_error = None;
                if confirmed < up_to {
                    tracing::warn!(
                        collector = name,
                        up_to,
                        acked_up_to = receipt.acked_up_to,
                        "the collector confirms a lower acknowledgement than sent"
                    );
                }
                if let Err(e) = sink.acked(name, confirmed).await {
                    tracing::warn!(collector = name, error = %e, "cannot record the ack");
                }
            }
            Err(e) => {
                let message = match e {
                    Error::Collector { message, .. } => message,
                    other => other.to_string(),
                };
                tracing::warn!(collector = name, up_to, error = %message,
                    "acknowledgement failed; it is repeated next round");
                let note = format!(
                    "acknowledgement up to seq {up_to} failed (repeated next round): {message}"
                );
                if let Err(e) = sink.failed(name, &note).await {
                    tracing::warn!(collector = name, error = %e, "cannot record the failed ack");
                }
                round.ack_error = Some(message);
            }
        }
    }

    fn last_acked(&self, collector: &str) -> u64 {
        self.acked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(collector)
            .copied()
            .unwrap_or(0)
    }
}

/// Checks the store a page says it comes from against the one this
/// collector's pulls came from, binding the first one seen.
async fn check_store<S: PullSink>(
    sink: &S,
    name: &str,
    page: &client::Page,
    known_store: &mut Option<String>,
) -> Result<(), Error> {
    match (&page.store_id, &*known_store) {
        (Some(store), Some(known)) if known != store => Err(Error::CollectorStoreReplaced {
            collector: name.to_owned(),
            node: page.node_id.clone(),
        }),
        (Some(_), Some(_)) | (None, None) => Ok(()),
        (Some(store), None) => {
            sink.bind_store(name, store).await?;
            *known_store = Some(store.clone());
            Ok(())
        }
        // A collector that named its store before and names none now
        // cannot be told apart from one whose store was made afresh (an
        // older build, or a proxy that drops the header): acknowledging to
        // it could drop reports never pulled.
        (None, Some(known)) => Err(Error::Collector {
            name: name.to_owned(),
            message: format!(
                "the page does not say which staging store it comes from (no \
                 X-LineProbe-Store header), though this collector's pulls came from store \
                 {known}: refusing to pull, so that a store made afresh is not acknowledged. \
                 Check that the collector is a current lineprobe-collector and that nothing \
                 between drops the header"
            ),
        }),
    }
}
