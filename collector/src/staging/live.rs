//! What the store keeps in memory beside the database, so that questions
//! anyone on the internet may ask (is the store ready? which manifest is
//! current?) are answered without a read: a flood of them then costs no
//! reader connection and no blocking thread.
//!
//! The writer keeps these up to date as it commits; they are loaded from
//! the database when the store opens.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use axum::body::Bytes;

use crate::Error;

/// The `state` row's counters as last committed.
#[derive(Debug)]
pub(super) struct Backlog {
    /// `(highest_seq, acked_up_to)`, under one lock so that a reader never
    /// pairs one commit's `highest_seq` with another's cursor.
    counters: Mutex<(u64, u64)>,
}

impl Backlog {
    pub(super) fn new(highest_seq: u64, acked_up_to: u64) -> Self {
        Self {
            counters: Mutex::new((highest_seq, acked_up_to)),
        }
    }

    /// Reports committed and not yet acknowledged.
    pub(super) fn unacked(&self) -> u64 {
        let (highest, acked) = *self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        highest.saturating_sub(acked)
    }

    /// A commit assigned sequence numbers up to `seq`.
    pub(super) fn stored_up_to(&self, seq: u64) {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters.0 = counters.0.max(seq);
    }

    /// A commit moved the acknowledgement cursor to `seq`.
    pub(super) fn acked_up_to(&self, seq: u64) {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters.1 = counters.1.max(seq);
    }
}

/// The current signed manifest, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedManifest {
    /// Its serial.
    pub serial: u64,
    /// The signed manifest JSON exactly as stored (and served).
    pub signed: Bytes,
}

/// The manifest probes are served, replaced once a newer one is durable.
#[derive(Debug, Default)]
pub(super) struct ManifestCell(ArcSwapOption<PublishedManifest>);

impl ManifestCell {
    pub(super) fn new(current: Option<PublishedManifest>) -> Self {
        Self(ArcSwapOption::from_pointee(current))
    }

    pub(super) fn current(&self) -> Option<Arc<PublishedManifest>> {
        self.0.load_full()
    }

    /// Serves `manifest` from now on unless a newer one already is. Only
    /// the sync thread calls this, in commit order; the check keeps an
    /// older serial from ever replacing a newer one all the same.
    pub(super) fn publish(&self, manifest: PublishedManifest) {
        let newer = self
            .0
            .load()
            .as_ref()
            .is_none_or(|current| manifest.serial > current.serial);
        if newer {
            self.0.store(Some(Arc::new(manifest)));
        }
    }
}

/// How long a readiness probe of the store is believed.
pub(super) const PROBE_FOR: Duration = Duration::from_secs(1);

/// The last readiness probe (a small read that shows the database can be
/// read), shared by every readiness check: a flood of `/readyz` costs at
/// most one read per [`PROBE_FOR`].
#[derive(Debug, Default)]
pub(super) struct ReadinessProbe {
    /// When the last probe ended, and its outcome (the error's message).
    last: Mutex<Option<(Instant, Result<(), String>)>>,
    /// Held while a probe runs, so that the checks arriving meanwhile wait
    /// for its outcome instead of each starting a read of their own.
    running: tokio::sync::Mutex<()>,
}

impl ReadinessProbe {
    /// The last outcome while it is fresh.
    pub(super) fn fresh(&self) -> Option<Result<(), Error>> {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < PROBE_FOR)
            .map(|(_, outcome)| outcome.clone().map_err(Error::Staging))
    }

    pub(super) async fn running(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.running.lock().await
    }

    pub(super) fn record(&self, outcome: &Result<(), Error>) {
        let outcome = match outcome {
            Ok(()) => Ok(()),
            Err(Error::Staging(message)) => Err(message.clone()),
            Err(other) => Err(other.to_string()),
        };
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), outcome));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(serial: u64) -> PublishedManifest {
        PublishedManifest {
            serial,
            signed: Bytes::from(format!("manifest {serial}")),
        }
    }

    #[test]
    fn an_older_manifest_never_replaces_a_newer_one() {
        let cell = ManifestCell::new(None);
        cell.publish(manifest(5));
        cell.publish(manifest(4));
        cell.publish(manifest(5));
        assert_eq!(cell.current().map(|m| m.serial), Some(5));
        cell.publish(manifest(6));
        assert_eq!(cell.current().as_deref(), Some(&manifest(6)));
    }

    #[test]
    fn the_backlog_only_moves_forward() {
        let backlog = Backlog::new(10, 4);
        assert_eq!(backlog.unacked(), 6);
        backlog.stored_up_to(12);
        backlog.stored_up_to(11);
        backlog.acked_up_to(3);
        assert_eq!(backlog.unacked(), 8);
        backlog.acked_up_to(12);
        assert_eq!(backlog.unacked(), 0);
    }
}
