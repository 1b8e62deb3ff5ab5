//! The inbox worker: claims due events, reconciles them, records outcomes.

use std::sync::Arc;
use std::time::Duration;

use super::envelope::EventEnvelope;
use super::inbox::{self, Outcome};
use super::{WebhookProcessor, MAX_ATTEMPTS};

const POLL: Duration = Duration::from_millis(200);
const BATCH: i64 = 64;
/// Events processed at once; aggregates serialize what touches the same charge or app.
const CONCURRENCY: usize = 16;

impl WebhookProcessor {
    /// Processes the inbox until `shutdown` flips to true.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let processed = match self.process_batch().await {
                Ok(n) => n,
                Err(error) => {
                    tracing::warn!(%error, "webhook worker could not read the inbox");
                    0
                }
            };
            if processed > 0 {
                continue;
            }
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Claims and processes one batch; returns how many events it took.
    pub async fn process_batch(self: &Arc<Self>) -> Result<usize, sqlx::Error> {
        let claimed = inbox::claim(&self.pool, BATCH).await?;
        let count = claimed.len();
        let mut running = tokio::task::JoinSet::new();
        let mut finished = Vec::with_capacity(count);
        for item in claimed {
            while running.len() >= CONCURRENCY {
                if let Some(Ok(done)) = running.join_next().await {
                    finished.push(done);
                }
            }
            let processor = Arc::clone(self);
            running.spawn(async move { processor.process_one(item).await });
        }
        while let Some(done) = running.join_next().await {
            if let Ok(done) = done {
                finished.push(done);
            }
        }
        // A task that panicked leaves its event `processing`: it is claimed again once its
        // lock expires.
        if let Err(error) = inbox::finish(&self.pool, &finished, MAX_ATTEMPTS).await {
            tracing::warn!(%error, "could not record webhook outcomes; the events will be claimed again");
        }
        Ok(count)
    }

    async fn process_one(&self, item: inbox::Claimed) -> inbox::Finished {
        let (kind, outcome) = match EventEnvelope::parse(item.payload.as_bytes()) {
            Ok(event) => (event.kind.clone(), self.reconcile(&event).await),
            Err(error) => (String::new(), Outcome::Failed(error.to_string())),
        };
        match &outcome {
            Outcome::Failed(error) => {
                tracing::warn!(event_id = item.event_id, attempts = item.attempts, %error, "webhook event failed")
            }
            Outcome::Unmatched(detail) => {
                tracing::warn!(event_id = item.event_id, %detail, "webhook event for no known app")
            }
            _ => {}
        }
        let label = outcome.status(item.attempts, MAX_ATTEMPTS);
        metrics::counter!("webhook_events_total", "type" => kind, "outcome" => label).increment(1);
        inbox::Finished {
            retry_in: self.retry.worker_delay(item.attempts.max(0) as u32),
            claimed: item,
            outcome,
        }
    }
}
