//! The `refunds` table and the per-charge ledger (`charges`), from ChargeLedger events.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_aggregates::charge_ledger::{ChargeLedgerEvent, CHARGE_LEDGER};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, QueryBuilder};

use crate::{Projection, ProjectionError, StoredEvent};

/// Writes refunds and charges into `<prefix>refunds` and `<prefix>charges`.
pub struct RefundsProjection {
    name: String,
    refunds: String,
    charges: String,
    external: String,
}

impl RefundsProjection {
    pub const NAME: &'static str = "refunds";

    pub fn live() -> Self {
        Self::with_tables(Self::NAME, "")
    }

    /// A copy writing to prefixed tables: `prefix` must be a trusted identifier part.
    pub fn with_tables(name: &str, prefix: &str) -> Self {
        Self {
            name: name.to_owned(),
            refunds: format!("{prefix}refunds"),
            charges: format!("{prefix}charges"),
            external: format!("{prefix}external_refunds"),
        }
    }

    /// Re-derives the charge's sums from its refunds.
    async fn recompute(&self, conn: &mut PgConnection, charge_id: &str) -> Result<(), sqlx::Error> {
        let (refunds, charges, external) = (&self.refunds, &self.charges, &self.external);
        sqlx::query(&format!(
            "UPDATE {charges} c SET \
               refunded = s.refunded + e.refunded, pending = s.pending + e.pending, unanswered = s.unanswered \
             FROM (SELECT \
               COALESCE(SUM(amount) FILTER (WHERE status = 'succeeded'), 0) AS refunded, \
               COALESCE(SUM(amount) FILTER (WHERE status IN ('requested', 'pending', 'requires_action')), 0) AS pending, \
               COALESCE(SUM(amount) FILTER (WHERE status = 'requested'), 0) AS unanswered \
               FROM {refunds} WHERE charge_id = $1) s, \
             (SELECT \
               COALESCE(SUM(amount) FILTER (WHERE status = 'succeeded'), 0) AS refunded, \
               COALESCE(SUM(amount) FILTER (WHERE status IN ('requested', 'pending', 'requires_action')), 0) AS pending \
               FROM {external} WHERE charge_id = $1) e \
             WHERE c.charge_id = $1"
        ))
        .bind(charge_id)
        .execute(conn)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Projection for RefundsProjection {
    fn name(&self) -> &str {
        &self.name
    }

    fn aggregate_types(&self) -> &[&'static str] {
        &[CHARGE_LEDGER]
    }

    fn tables(&self) -> Vec<String> {
        vec![
            self.refunds.clone(),
            self.charges.clone(),
            self.external.clone(),
        ]
    }

    fn aside(&self) -> std::sync::Arc<dyn Projection> {
        std::sync::Arc::new(Self::with_tables(
            &format!("{}{}", self.name, crate::rebuild::ASIDE_SUFFIX),
            crate::rebuild::ASIDE_PREFIX,
        ))
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        use ChargeLedgerEvent as E;
        let (refunds, charges, external) = (&self.refunds, &self.charges, &self.external);
        let charge_id = event.aggregate_id.as_str();
        let at = event.recorded_at;
        let decoded = event.decode::<ChargeLedgerEvent>()?;
        match decoded {
            E::ChargeObserved { charge } => {
                sqlx::query(&format!(
                    "INSERT INTO {charges} (charge_id, app, stripe_account_id, amount, currency, stripe_refunded, disputed, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (charge_id) DO UPDATE SET amount = EXCLUDED.amount, currency = EXCLUDED.currency, \
                       stripe_refunded = EXCLUDED.stripe_refunded, disputed = EXCLUDED.disputed, updated_at = EXCLUDED.updated_at"
                ))
                .bind(charge_id)
                .bind(&charge.app)
                .bind(&charge.stripe_account_id)
                .bind(charge.amount)
                .bind(&charge.currency)
                .bind(charge.amount_refunded)
                .bind(charge.disputed)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            E::RefundRequested {
                refund_id,
                idempotency_key,
                purchase_id,
                approval_id,
                amount,
                currency,
                reason,
                requested_by,
                ..
            } => {
                sqlx::query(&format!(
                    "INSERT INTO {refunds} (id, app, purchase_id, charge_id, approval_id, amount, currency, reason, status, \
                       idempotency_key, requested_by, created_at, updated_at) \
                     SELECT $1, c.app, $2, $3, $4, $5, $6, $7, 'requested', $8, $9, $10, $10 FROM {charges} c WHERE c.charge_id = $3"
                ))
                .bind(&refund_id)
                .bind(purchase_id)
                .bind(charge_id)
                .bind(approval_id)
                .bind(amount)
                .bind(currency)
                .bind(reason.as_str())
                .bind(idempotency_key)
                .bind(requested_by)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            E::RefundSubmitted { refund_id, attempt } => {
                sqlx::query(&format!(
                    "UPDATE {refunds} SET attempts = $2, last_submitted_at = $3, updated_at = $3 WHERE id = $1"
                ))
                .bind(refund_id)
                .bind(attempt as i32)
                .bind(at)
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            E::RefundStatusChanged {
                refund_id,
                stripe_refund_id,
                status,
                failure_reason,
            } => {
                sqlx::query(&format!(
                    "UPDATE {refunds} SET status = $2, stripe_refund_id = COALESCE($3, stripe_refund_id), \
                       failure_reason = $4, updated_at = $5, projected_at = clock_timestamp() WHERE id = $1"
                ))
                .bind(refund_id)
                .bind(status.as_str())
                .bind(stripe_refund_id)
                .bind(failure_reason)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            E::ExternalRefundObserved {
                stripe_refund_id,
                amount,
                status,
                failure_reason,
            } => {
                sqlx::query(&format!(
                    "INSERT INTO {external} (stripe_refund_id, charge_id, amount, status, failure_reason, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (stripe_refund_id) DO UPDATE SET \
                       amount = EXCLUDED.amount, status = EXCLUDED.status, failure_reason = EXCLUDED.failure_reason, \
                       updated_at = EXCLUDED.updated_at"
                ))
                .bind(stripe_refund_id)
                .bind(charge_id)
                .bind(amount)
                .bind(status.as_str())
                .bind(failure_reason)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            E::RefundRejected {
                refund_id,
                code,
                message,
            } => {
                sqlx::query(&format!(
                    "UPDATE {refunds} SET status = 'failed', failure_reason = $2, failure_message = $3, updated_at = $4 WHERE id = $1"
                ))
                .bind(refund_id)
                .bind(code)
                .bind(message)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
        }
        self.recompute(conn, charge_id).await?;
        Ok(())
    }
}

/// A refund as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RefundRow {
    pub id: String,
    pub app: String,
    pub purchase_id: String,
    pub charge_id: String,
    pub approval_id: String,
    pub amount: i64,
    pub currency: String,
    pub reason: String,
    pub status: String,
    pub stripe_refund_id: Option<String>,
    pub failure_reason: Option<String>,
    pub idempotency_key: String,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const REFUND_COLUMNS: &str =
    "id, app, purchase_id, charge_id, approval_id, amount, currency, reason, status, \
     stripe_refund_id, failure_reason, idempotency_key, requested_by, created_at, updated_at";

pub async fn find_refund(pool: &PgPool, id: &str) -> Result<Option<RefundRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Filters of `GET /v1/refunds`; every one optional.
#[derive(Debug, Default, Clone)]
pub struct RefundFilter {
    pub app: Option<String>,
    pub purchase_id: Option<String>,
    pub charge_id: Option<String>,
    pub status: Option<String>,
    pub limit: i64,
}

pub async fn list_refunds(
    pool: &PgPool,
    filter: &RefundFilter,
) -> Result<Vec<RefundRow>, sqlx::Error> {
    let mut query = QueryBuilder::new(format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE true"));
    for (column, value) in [
        ("app", &filter.app),
        ("purchase_id", &filter.purchase_id),
        ("charge_id", &filter.charge_id),
        ("status", &filter.status),
    ] {
        if let Some(value) = value {
            query
                .push(format!(" AND {column} = "))
                .push_bind(value.clone());
        }
    }
    query
        .push(" ORDER BY created_at, id LIMIT ")
        .push_bind(filter.limit);
    query.build_query_as().fetch_all(pool).await
}

/// The refunds a worker should drive: still unanswered, and idle for longer than their backoff.
pub async fn refunds_to_drive(
    pool: &PgPool,
    base_delay_ms: i64,
    limit: i64,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, charge_id FROM refunds WHERE status = 'requested' \
           AND updated_at < now() - make_interval(secs => ($1::float8 * power(2, LEAST(attempts, 12))) / 1000.0) \
         ORDER BY updated_at LIMIT $2",
    )
    .bind(base_delay_ms)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A charge's ledger as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ChargeRow {
    pub charge_id: String,
    pub app: String,
    pub amount: i64,
    pub currency: String,
    pub refunded: i64,
    pub pending: i64,
    pub refundable: i64,
}

pub async fn find_charge(pool: &PgPool, charge_id: &str) -> Result<Option<ChargeRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT charge_id, app, amount, currency, refunded, pending, refundable FROM charges WHERE charge_id = $1",
    )
    .bind(charge_id)
    .fetch_optional(pool)
    .await
}
