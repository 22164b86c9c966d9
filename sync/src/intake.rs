//! The puller's sink is the internal database: a pulled page and the
//! collector's cursor land in one transaction, so a crash between the
//! commit and the acknowledgement only means the page is pulled again, and
//! the `(node_id, seq)` key keeps it from being stored twice.

use crate::{Error, PullBatch, PullSink, PulledLine, Store};

impl PullSink for Store {
    async fn cursor(&self, collector: &str) -> Result<Option<(String, u64)>, Error> {
        Ok(Store::cursor(self, collector)
            .await?
            // A cursor row written only by a failed first round knows no
            // node yet: there is nothing to resume from.
            .filter(|c| !c.node_id.is_empty())
            .map(|c| (c.node_id, c.after_seq)))
    }

    async fn commit(
        &self,
        collector: &str,
        node_id: &str,
        reports: &[PulledLine],
        next_after: u64,
    ) -> Result<u64, Error> {
        let commit = self
            .commit_pull(&PullBatch {
                collector,
                node_id,
                reports,
                next_after,
                pulled_at_ms: chrono::Utc::now().timestamp_millis(),
            })
            .await?;
        Ok(commit.inserted)
    }

    async fn store(&self, collector: &str) -> Result<Option<String>, Error> {
        self.cursor_store(collector).await
    }

    async fn bind_store(&self, collector: &str, store_id: &str) -> Result<(), Error> {
        self.bind_cursor_store(collector, store_id).await
    }

    async fn acked(&self, collector: &str, up_to: u64) -> Result<(), Error> {
        self.record_ack(collector, up_to).await
    }

    async fn caught_up(&self, collector: &str, round_started_ms: i64) -> Result<(), Error> {
        self.record_caught_up(collector, round_started_ms).await
    }

    async fn failed(&self, collector: &str, message: &str) -> Result<(), Error> {
        self.record_pull_error(collector, chrono::Utc::now().timestamp_millis(), message)
            .await
    }
}
