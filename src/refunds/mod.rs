//! Refunds on connected accounts: accept (intent first), drive to Stripe under one
//! Idempotency-Key, recover after crashes, and keep a worker pushing every unanswered refund.

mod accept;
mod drive;
mod known;
pub mod pause;
mod worker;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use ledger_aggregates::app_connection::{AppConnection, AppConnectionError};
use ledger_aggregates::charge_ledger::{ChargeLedger, ChargeLedgerError, RefundRecord};
use sqlx::PgPool;

pub use accept::{Accepted, Recorded, RefundRequest};
pub use drive::{APP_NOT_AUTHORIZED, METADATA_REFUND_ID};

use self::known::KnownStates;
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
    /// The apps as this process last loaded them; used only when the key claim reports the
    /// app still at the same sequence (`accept.rs`).
    apps: KnownStates<AppConnection>,
    /// The charges' ledgers as this process's refunds last left them; likewise.
    charges: KnownStates<ChargeLedger>,
}

/// How many apps `RefundService::apps` keeps before it starts again from empty (a platform
/// serves a handful of apps; the bound only guards memory against a flood of unknown slugs,
/// which are not kept anyway).
const KNOWN_APPS: usize = 1024;
/// How many charges' ledgers are kept: those being refunded now, with room to spare (a
/// ledger of a few refunds is a few hundred bytes).
const KNOWN_CHARGES: usize = 4096;

impl RefundService {
    pub fn new(pool: PgPool, ledger: Arc<Ledger>, stripe: Option<StripeApi>) -> Arc<Self> {
        Arc::new(Self {
            pool,
            ledger,
            stripe,
            driving: Mutex::new(HashSet::new()),
            apps: KnownStates::new(KNOWN_APPS),
            charges: KnownStates::new(KNOWN_CHARGES),
        })
    }

    fn stripe(&self) -> Result<&StripeApi, RefundError> {
        self.stripe.as_ref().ok_or(RefundError::StripeNotConfigured)
    }

    /// The app as of its last event, whose sequence the caller read from the event store
    /// (`None`: it has none): this process's copy when it is at that sequence, otherwise
    /// loaded from its events and kept.
    async fn app_at(
        &self,
        slug: &str,
        sequence: Option<i64>,
    ) -> Result<AppConnection, RefundError> {
        if let Some(app) = self.apps.at(slug, sequence) {
            return Ok(app.state);
        }
        let loaded = self.ledger.apps.load_versioned(slug).await?;
        self.apps.keep(slug, &loaded);
        Ok(loaded.state)
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
