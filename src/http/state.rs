use std::sync::Arc;

use ledger_projections::refunds::RefundsProjection;
use sqlx::PgPool;
use url::Url;

use crate::http::error::ApiError;
use crate::ledger::Ledger;
use crate::refunds::RefundService;
use secrecy::SecretString;

use crate::stripe::{ConnectOAuth, StripeApi};
use crate::webhooks::inbox_writer::InboxWriter;
use crate::webhooks::WebhookProcessor;

/// What every handler can reach.
pub struct Services {
    pub pool: PgPool,
    pub ledger: Arc<Ledger>,
    pub refunds: Arc<RefundService>,
    /// The live `refunds` projection: a refund's answer is read from the rows its last batch
    /// kept, when they include the refund's events.
    pub refund_rows: Arc<RefundsProjection>,
    /// Absent when STRIPE_SECRET_KEY or STRIPE_CONNECT_CLIENT_ID is not configured.
    pub oauth: Option<ConnectOAuth>,
    /// Base of the OAuth redirect_uri.
    pub public_base: Url,
    pub stripe: Option<StripeApi>,
    pub webhook_secrets: Vec<SecretString>,
    pub webhooks: Arc<WebhookProcessor>,
    /// Stores deliveries, grouping concurrent ones into one commit.
    pub inbox: InboxWriter,
}

pub type AppState = Arc<Services>;

impl Services {
    pub fn oauth(&self) -> Result<&ConnectOAuth, ApiError> {
        self.oauth.as_ref().ok_or_else(|| {
            ApiError::stripe_not_configured(
                "Stripe Connect (STRIPE_SECRET_KEY and STRIPE_CONNECT_CLIENT_ID)",
            )
        })
    }

    pub fn redirect_uri(&self) -> String {
        format!(
            "{}/api/stripe/connect/callback",
            self.public_base.as_str().trim_end_matches('/')
        )
    }
}
