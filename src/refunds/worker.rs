//! The background worker: every refund accepted and not yet answered by Stripe is driven again,
//! with backoff, until Stripe answers. After a crash this is what finishes the job.

use std::sync::Arc;
use std::time::Duration;

use ledger_aggregates::{EventMetadata, Source};
use ledger_projections::refunds::refunds_to_drive;

use super::RefundService;

const POLL: Duration = Duration::from_millis(250);
const BATCH: i64 = 32;

impl RefundService {
    /// Runs until `shutdown` flips to true.
    pub async fn run_worker(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let Some(stripe) = self.stripe.clone() else {
            return;
        };
        let base_ms = stripe.policy().base.as_millis() as i64;
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            let due = match refunds_to_drive(&self.pool, base_ms, BATCH).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "refund worker could not read its queue");
                    continue;
                }
            };
            let mut drives = tokio::task::JoinSet::new();
            for (refund_id, charge_id) in due {
                let service = Arc::clone(&self);
                drives.spawn(async move {
                    let meta =
                        EventMetadata::new("refund_worker", Source::System, refund_id.clone());
                    if let Err(error) = service.drive(&charge_id, &refund_id, &meta).await {
                        tracing::warn!(refund_id, %error, "refund worker could not drive a refund");
                    }
                });
            }
            while drives.join_next().await.is_some() {}
        }
    }
}
