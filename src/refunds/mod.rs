//! Refunds on connected accounts: accept (intent first), drive to Stripe under one
//! Idempotency-Key, recover after crashes, and keep a worker pushing every unanswered refund.

mod accept;
mod drive;
pub mod pause;
mod worker;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use ledger_aggregates::app_connection::AppConnectionError;
use ledger_aggregates::charge_ledger::{ChargeLedgerError, RefundRecord};
use sqlx::PgPool;

pub use accept::{Accepted, RefundRequest};
pub use drive::{APP_NOT_AUTHORIZED, METADATA_REFUND_ID};

use crate::ledger::{Ledger, LedgerError};
use crate::stripe::StripeApi;

/// Why a refund could not be accepted or driven.
#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error(transparent)]
    Charge(#[from] LedgerError<ChargeLedgerError>),
    #[error(transparent)]
    App(#[from] LedgerError<AppConnectionError>),
    #[error("the app is not connected to a Stripe account")]
    AppNotConnected,
    #[error("Stripe refused us access to the app's account")]
    AppNotAuthorized,
    #[error("the charge does not exist on the app's Stripe account")]
    ChargeNotFound,
    #[error("this purchase_id and approval_id were already used for a different refund")]
    KeyReused,
    #[error("Stripe could not be reached: {0}")]
    StripeUnavailable(String),
    #[error("Stripe is not configured")]
    StripeNotConfigured,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The refund service, shared by the HTTP handlers and the worker.
pub struct RefundService {
    pool: PgPool,
    ledger: Arc<Ledger>,
    stripe: Option<StripeApi>,
    /// Refunds this process is driving right now: a second driver here would only wait.
    driving: Mutex<HashSet<String>>,
}

impl RefundService {
    pub fn new(pool: PgPool, ledger: Arc<Ledger>, stripe: Option<StripeApi>) -> Arc<Self> {
        Arc::new(Self {
            pool,
            ledger,
            stripe,
            driving: Mutex::new(HashSet::new()),
        })
    }

    fn stripe(&self) -> Result<&StripeApi, RefundError> {
        self.stripe.as_ref().ok_or(RefundError::StripeNotConfigured)
    }

    pub async fn load(
        &self,
        charge_id: &str,
        refund_id: &str,
    ) -> Result<Option<RefundRecord>, RefundError> {
        let ledger = self.ledger.charges.load(charge_id).await?;
        Ok(ledger.refund(refund_id).cloned())
    }
}

/// Claims a refund for driving in this process; released on drop.
struct DrivingClaim<'a> {
    set: &'a Mutex<HashSet<String>>,
    refund_id: String,
}

impl<'a> DrivingClaim<'a> {
    fn take(set: &'a Mutex<HashSet<String>>, refund_id: &str) -> Option<Self> {
        let mut guard = set.lock().unwrap_or_else(|p| p.into_inner());
        guard.insert(refund_id.to_owned()).then(|| Self {
            set,
            refund_id: refund_id.to_owned(),
        })
    }
}

impl Drop for DrivingClaim<'_> {
    fn drop(&mut self) {
        let mut guard = self.set.lock().unwrap_or_else(|p| p.into_inner());
        guard.remove(&self.refund_id);
    }
}
