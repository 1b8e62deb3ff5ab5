//! Stripe webhooks as external commands: verified over the raw body, stored once in an inbox,
//! then reconciled by workers into commands on the same aggregates the API uses.

pub mod backfill;
pub mod envelope;
pub mod inbox;
pub mod inbox_writer;
pub mod reconcile;
pub mod signature;
mod worker;

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::Notify;

use crate::ledger::Ledger;
use crate::stripe::{RetryPolicy, StripeApi};

/// Attempts before an event is parked as dead.
pub const MAX_ATTEMPTS: i32 = 8;

/// Turns inbox events into commands.
pub struct WebhookProcessor {
    pool: PgPool,
    ledger: Arc<Ledger>,
    stripe: Option<StripeApi>,
    retry: RetryPolicy,
    wake: Notify,
}

impl WebhookProcessor {
    pub fn new(
        pool: PgPool,
        ledger: Arc<Ledger>,
        stripe: Option<StripeApi>,
        retry: RetryPolicy,
    ) -> Arc<Self> {
        Arc::new(Self {
            pool,
            ledger,
            stripe,
            retry,
            wake: Notify::new(),
        })
    }

    /// A new event was stored: process it now rather than at the next poll.
    pub fn nudge(&self) {
        self.wake.notify_one();
    }
}
