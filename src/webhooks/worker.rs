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
        for item in claimed {
            while running.len() >= CONCURRENCY {
                running.join_next().await;
            }
            let processor = Arc::clone(self);
            running.spawn(async move { processor.process_one(item).await });
        }
        while running.join_next().await.is_some() {}
        Ok(count)
    }

    async fn process_one(&self, item: inbox::Claimed) {
        let outcome = match EventEnvelope::parse(item.payload.as_bytes()) {
            Ok(event) => self.reconcile(&event).await,
            Err(error) => Outcome::Failed(error.to_string()),
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
        let label = match &outcome {
            Outcome::Handled(_) => "handled",
            Outcome::Ignored(_) => "ignored",
            Outcome::Unmatched(_) => "unmatched",
            Outcome::Failed(_) => "failed",
        };
        let kind = serde_json::from_str::<serde_json::Value>(&item.payload)
            .ok()
            .and_then(|v| v["type"].as_str().map(str::to_owned))
            .unwrap_or_default();
        metrics::counter!("webhook_events_total", "type" => kind, "outcome" => label).increment(1);
        let retry_in = self.retry.worker_delay(item.attempts.max(0) as u32);
        if let Err(error) = inbox::finish(&self.pool, &item, &outcome, MAX_ATTEMPTS, retry_in).await
        {
            tracing::warn!(event_id = item.event_id, %error, "could not record a webhook outcome");
        }
    }
}
