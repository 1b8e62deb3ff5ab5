//! Backfill: pull `GET /v1/events` for a time window, on the platform and on every connected
//! account, and feed what our endpoint missed through the same inbox.

use sqlx::PgPool;

use super::envelope::EventEnvelope;
use super::inbox::{self, ReceivedVia};
use crate::stripe::{StripeApi, StripeCallError};

#[derive(Debug, Default, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct BackfillReport {
    /// Platform plus connected accounts asked.
    pub accounts: usize,
    /// Events Stripe listed in the window.
    pub listed: usize,
    /// Events that were new to the inbox.
    pub stored: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Stripe(#[from] StripeCallError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The accounts to ask: the platform (`None`), and the given or all connected accounts.
pub async fn accounts(
    pool: &PgPool,
    only: Option<&str>,
) -> Result<Vec<Option<String>>, sqlx::Error> {
    if let Some(account) = only {
        return Ok(vec![Some(account.to_owned())]);
    }
    let connected: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT COALESCE(stripe_account_id, last_stripe_account_id) FROM apps \
         WHERE COALESCE(stripe_account_id, last_stripe_account_id) IS NOT NULL ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    Ok(std::iter::once(None)
        .chain(connected.into_iter().map(Some))
        .collect())
}

/// Stores every event of `[since, until]` from each account; `progress` hears each page.
pub async fn run(
    pool: &PgPool,
    stripe: &StripeApi,
    accounts: &[Option<String>],
    since: i64,
    until: i64,
    progress: impl Fn(&BackfillReport),
) -> Result<BackfillReport, BackfillError> {
    let mut report = BackfillReport::default();
    for account in accounts {
        report.accounts += 1;
        let mut after: Option<String> = None;
        loop {
            let (events, more) = stripe
                .list_events(account.as_deref(), since, until, after.as_deref())
                .await?;
            for mut raw in events {
                if let (Some(account), Some(object)) = (account, raw.as_object_mut()) {
                    object
                        .entry("account")
                        .or_insert_with(|| serde_json::Value::String(account.clone()));
                }
                let payload = raw.to_string();
                let Ok(event) = EventEnvelope::parse(payload.as_bytes()) else {
                    tracing::warn!("backfill skipped an event it could not read");
                    continue;
                };
                report.listed += 1;
                if inbox::store(pool, &event, &payload, ReceivedVia::Backfill).await? {
                    report.stored += 1;
                }
                after = Some(event.id);
            }
            progress(&report);
            if !more || after.is_none() {
                break;
            }
        }
    }
    Ok(report)
}
