//! Reconciliation: the ledger's refunds on an app's charges against Stripe's own list of refunds
//! on the connected account. Every difference is reported; nothing is changed.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::refunds::METADATA_REFUND_ID;
use crate::stripe::{StripeApi, StripeCallError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// Stripe has a refund the ledger does not know.
    MissingInLedger,
    /// The ledger has a refund Stripe does not list.
    MissingInStripe,
    AmountDiffers,
    StatusDiffers,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Difference {
    pub kind: DifferenceKind,
    pub stripe_refund_id: Option<String>,
    /// Our refund id, when the difference concerns one of ours.
    pub refund_id: Option<String>,
    pub charge_id: Option<String>,
    pub ledger_amount: Option<i64>,
    pub stripe_amount: Option<i64>,
    pub ledger_status: Option<String>,
    pub stripe_status: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": 7, "app": "total-typescript", "since": null, "created_at": "2026-11-22T10:00:00Z", "checked": 12, "differences": []}))]
pub struct Report {
    pub id: i64,
    pub app: String,
    pub since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Refunds compared (the union of both sides).
    pub checked: i32,
    pub differences: Vec<Difference>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("no app {0}")]
    UnknownApp(String),
    #[error("the app {0} is not connected to a Stripe account")]
    NotConnected(String),
    #[error(transparent)]
    Stripe(#[from] StripeCallError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// One refund as the ledger knows it.
#[derive(Debug, sqlx::FromRow)]
struct LedgerRefund {
    refund_id: Option<String>,
    stripe_refund_id: Option<String>,
    charge_id: String,
    amount: i64,
    status: String,
}

/// Compares, stores and returns a report; `progress` hears what it is doing.
pub async fn run(
    pool: &PgPool,
    stripe: &StripeApi,
    app: &str,
    since: Option<i64>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Report, ReconcileError> {
    let account: Option<Option<String>> = sqlx::query_scalar(
        "SELECT COALESCE(stripe_account_id, last_stripe_account_id) FROM apps WHERE slug = $1",
    )
    .bind(app)
    .fetch_optional(pool)
    .await?;
    let account = account
        .ok_or_else(|| ReconcileError::UnknownApp(app.to_owned()))?
        .ok_or_else(|| ReconcileError::NotConnected(app.to_owned()))?;
    let since_time = since.and_then(|s| Utc.timestamp_opt(s, 0).single());
    progress(&format!("listing the refunds on {account} at Stripe"));
    let at_stripe = stripe
        .list_account_refunds(&account, since, &|n| {
            progress(&format!("  {n} refunds listed"));
        })
        .await?;
    // Ours that Stripe answered or that should exist there, and external ones, on this app's charges.
    let ledger: Vec<LedgerRefund> = sqlx::query_as(
        "SELECT r.id AS refund_id, r.stripe_refund_id, r.charge_id, r.amount, r.status FROM refunds r \
         WHERE r.app = $1 AND ($2::timestamptz IS NULL OR r.created_at >= $2) \
           AND (r.stripe_refund_id IS NOT NULL OR r.status IN ('succeeded', 'pending', 'requires_action')) \
         UNION ALL \
         SELECT NULL, e.stripe_refund_id, e.charge_id, e.amount, e.status FROM external_refunds e \
         JOIN charges c ON c.charge_id = e.charge_id \
         WHERE c.app = $1 AND ($2::timestamptz IS NULL OR e.updated_at >= $2)",
    )
    .bind(app)
    .bind(since_time)
    .fetch_all(pool)
    .await?;

    progress(&format!(
        "comparing {} refunds at Stripe with {} in the ledger",
        at_stripe.len(),
        ledger.len()
    ));
    let by_stripe_id: HashMap<&str, usize> = ledger
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.stripe_refund_id.as_deref().map(|id| (id, i)))
        .collect();
    let by_our_id: HashMap<&str, usize> = ledger
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.refund_id.as_deref().map(|id| (id, i)))
        .collect();
    let mut matched: HashSet<usize> = HashSet::new();
    let mut differences = Vec::new();
    for refund in &at_stripe {
        let stripe_status = refund.status.clone().unwrap_or_default();
        let charge_id = refund.charge.as_ref().and_then(|c| match c {
            serde_json::Value::String(id) => Some(id.clone()),
            other => other.get("id").and_then(|i| i.as_str()).map(str::to_owned),
        });
        let ours = by_stripe_id.get(refund.id.as_str()).copied().or_else(|| {
            refund
                .metadata
                .get(METADATA_REFUND_ID)
                .and_then(|id| by_our_id.get(id.as_str()).copied())
        });
        let Some(index) = ours else {
            differences.push(Difference {
                kind: DifferenceKind::MissingInLedger,
                stripe_refund_id: Some(refund.id.clone()),
                refund_id: refund.metadata.get(METADATA_REFUND_ID).cloned(),
                charge_id,
                ledger_amount: None,
                stripe_amount: Some(refund.amount),
                ledger_status: None,
                stripe_status: Some(stripe_status),
            });
            continue;
        };
        matched.insert(index);
        let known = &ledger[index];
        let base = |kind| Difference {
            kind,
            stripe_refund_id: Some(refund.id.clone()),
            refund_id: known.refund_id.clone(),
            charge_id: Some(known.charge_id.clone()),
            ledger_amount: Some(known.amount),
            stripe_amount: Some(refund.amount),
            ledger_status: Some(known.status.clone()),
            stripe_status: Some(stripe_status.clone()),
        };
        if known.amount != refund.amount {
            differences.push(base(DifferenceKind::AmountDiffers));
        }
        if known.status != stripe_status {
            differences.push(base(DifferenceKind::StatusDiffers));
        }
    }
    for (index, known) in ledger.iter().enumerate() {
        if !matched.contains(&index) {
            differences.push(Difference {
                kind: DifferenceKind::MissingInStripe,
                stripe_refund_id: known.stripe_refund_id.clone(),
                refund_id: known.refund_id.clone(),
                charge_id: Some(known.charge_id.clone()),
                ledger_amount: Some(known.amount),
                stripe_amount: None,
                ledger_status: Some(known.status.clone()),
                stripe_status: None,
            });
        }
    }
    let checked = (at_stripe.len() + ledger.len() - matched.len()) as i32;
    let (id, created_at): (i64, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO reconciliation_reports (app, since, checked, differences) VALUES ($1, $2, $3, $4) \
         RETURNING id, created_at",
    )
    .bind(app)
    .bind(since_time)
    .bind(checked)
    .bind(sqlx::types::Json(&differences))
    .fetch_one(pool)
    .await?;
    Ok(Report {
        id,
        app: app.to_owned(),
        since: since_time,
        created_at,
        checked,
        differences,
    })
}

#[derive(sqlx::FromRow)]
struct StoredReport {
    id: i64,
    app: String,
    since: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    checked: i32,
    differences: sqlx::types::Json<Vec<serde_json::Value>>,
}

/// The latest report for an app, as stored.
pub async fn latest(pool: &PgPool, app: &str) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let row: Option<StoredReport> = sqlx::query_as(
        "SELECT id, app, since, created_at, checked, differences FROM reconciliation_reports \
         WHERE app = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(app)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| {
        serde_json::json!({
            "id": r.id, "app": r.app, "since": r.since, "created_at": r.created_at,
            "checked": r.checked, "differences": r.differences.0,
        })
    }))
}
