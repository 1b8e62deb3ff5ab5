//! The `refunds` table and the per-charge ledger (`charges`), from ChargeLedger events.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_aggregates::charge_ledger::{ChargeLedgerEvent, CHARGE_LEDGER};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, QueryBuilder};

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::runner::{moved_checkpoint_query, ONE_STATEMENT_RESULT};
use crate::touched::Touched;
use crate::{Checkpoint, Projection, ProjectionError, StoredEvent};

/// Writes refunds and charges into `<prefix>refunds` and `<prefix>charges`.
pub struct RefundsProjection {
    name: String,
    refunds: String,
    charges: String,
    external: String,
    kept: Mutex<Kept>,
}

/// How many charges' rows [`Kept`] holds before it starts again from empty (a charge with a
/// few refunds is about a kilobyte).
const KEPT_CHARGES: usize = 4096;

/// The rows of the charges this process's committed batches touched, current while the
/// projection's checkpoint stands where the last of those batches left it: every change to
/// these tables moves the checkpoint (docs/decisions/0028).
#[derive(Default)]
struct Kept {
    /// The checkpoint the rows are current at (`None`: none kept).
    at: Option<Checkpoint>,
    charges: HashMap<String, ChargeRows>,
    /// The rows as the batch applied last left them, and the checkpoints it moves between;
    /// kept once the runner reports that batch committed.
    pending: Option<(Checkpoint, Checkpoint, HashMap<String, ChargeRows>)>,
}

/// All the rows of one charge: the charge (absent until its first observation), its refunds
/// and the refunds made outside the platform.
#[derive(Clone, Default)]
struct ChargeRows {
    charge: Option<ChargeRecord>,
    refunds: Vec<RefundRecord>,
    external: Vec<ExternalRecord>,
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
            kept: Mutex::new(Kept::default()),
        }
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

    fn indexes_read_while_applying(&self) -> &[&'static str] {
        // `apply` loads a batch's refunds and outside refunds by charge.
        &["refunds_charge", "external_refunds_charge"]
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
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        let ids = charge_ids(events);
        let mut touched = self.load(conn, &ids).await?;
        self.fold(&mut touched, events)?;
        self.store(conn, &touched, None).await?;
        Ok(())
    }

    async fn apply_from(
        &self,
        conn: &mut PgConnection,
        events: &[&StoredEvent],
        from: Checkpoint,
    ) -> Result<(), ProjectionError> {
        let touched = self.prepare(conn, events, from).await?;
        self.store(conn, &touched, None).await?;
        self.keep_pending(events, from, &touched);
        Ok(())
    }

    fn one_statement_batches(&self) -> bool {
        true
    }

    /// The batch's rows and the checkpoint's move in one statement, outside any transaction
    /// (docs/decisions/0029).
    async fn apply_moving_checkpoint(
        &self,
        conn: &mut PgConnection,
        events: &[&StoredEvent],
        from: Checkpoint,
        to: Checkpoint,
    ) -> Result<bool, ProjectionError> {
        let touched = self.prepare(conn, events, from).await?;
        let moved = self.store(conn, &touched, Some((from, to))).await?;
        if moved {
            self.keep_pending(events, from, &touched);
        }
        Ok(moved)
    }

    fn committed(&self, from: Checkpoint, to: Checkpoint, applied: u64) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let pending = kept.pending.take();
        let still = kept.at == Some(from);
        match pending {
            // The rows of exactly this batch: the events between two checkpoints below a
            // horizon never change.
            Some((start, end, rows)) if applied > 0 && start == from && end == to => {
                if !still || kept.charges.len() + rows.len() > KEPT_CHARGES {
                    kept.charges.clear();
                }
                kept.charges.extend(rows);
                kept.at = Some(to);
            }
            // A batch that moved the checkpoint past other types' events only.
            _ if applied == 0 && still => kept.at = Some(to),
            _ => *kept = Kept::default(),
        }
    }
}

impl RefundsProjection {
    /// The refund as the table holds it, from the rows this process's committed batches kept,
    /// when they stand at or past `applied` (the events the caller needs to see); `None` when
    /// they do not, or do not hold the refund's charge.
    pub fn kept_refund(&self, charge_id: &str, id: &str, applied: Checkpoint) -> Option<RefundRow> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.at? < applied {
            return None;
        }
        let refund = kept
            .charges
            .get(charge_id)?
            .refunds
            .iter()
            .find(|r| r.id == id)?;
        Some(RefundRow {
            id: refund.id.clone(),
            app: refund.app.clone(),
            purchase_id: refund.purchase_id.clone(),
            charge_id: refund.charge_id.clone(),
            approval_id: refund.approval_id.clone(),
            amount: refund.amount,
            currency: refund.currency.clone(),
            reason: refund.reason.clone(),
            status: refund.status.clone(),
            stripe_refund_id: refund.stripe_refund_id.clone(),
            failure_reason: refund.failure_reason.clone(),
            idempotency_key: refund.idempotency_key.clone(),
            requested_by: refund.requested_by.clone(),
            created_at: refund.created_at,
            updated_at: refund.updated_at,
        })
    }

    /// The rows of the batch's charges with its events folded in. Reads only the charges it
    /// does not know: those whose rows it kept at `from`, and those whose first event ever is
    /// in this batch (a charge has rows only from its events), are not read. A batch that
    /// turns out to start elsewhere than `from` is undone or refused by the checkpoint's
    /// compare-and-set, so the rows it was given could not be stale.
    async fn prepare(
        &self,
        conn: &mut PgConnection,
        events: &[&StoredEvent],
        from: Checkpoint,
    ) -> Result<Ledgers, ProjectionError> {
        let ids = charge_ids(events);
        let mut known: HashMap<String, ChargeRows> = {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            kept.pending = None;
            if kept.at == Some(from) {
                ids.iter()
                    .filter_map(|id| Some((id.to_string(), kept.charges.get(*id)?.clone())))
                    .collect()
            } else {
                HashMap::new()
            }
        };
        let mut first_seen = HashSet::new();
        for event in events {
            let id = event.aggregate_id.as_str();
            if first_seen.insert(id) && event.sequence == 1 {
                known.entry(id.to_owned()).or_default();
            }
        }
        let unknown: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !known.contains_key(*id))
            .collect();
        let mut touched = if unknown.is_empty() {
            Ledgers::default()
        } else {
            self.load(conn, &unknown).await?
        };
        touched.add(known.into_values());
        self.fold(&mut touched, events)?;
        Ok(touched)
    }

    /// Holds the rows a batch wrote until the runner reports its commit (`committed`).
    fn keep_pending(&self, events: &[&StoredEvent], from: Checkpoint, touched: &Ledgers) {
        let last = events.last().map(|last| Checkpoint {
            transaction_id: last.transaction_id,
            position: last.global_position,
        });
        let rows = touched.by_charge(&charge_ids(events));
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.pending = last.map(|last| (from, last, rows));
    }
}

/// One column of `rows`, as an array parameter for `UNNEST`.
fn column<'r, R, T>(rows: &[&'r R], value: impl Fn(&'r R) -> T) -> Vec<T> {
    rows.iter().map(|row| value(row)).collect()
}

/// The charges of a batch, each once, in the order of their first event.
fn charge_ids<'a>(events: &[&'a StoredEvent]) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    events
        .iter()
        .map(|e| e.aggregate_id.as_str())
        .filter(|id| seen.insert(*id))
        .collect()
}

impl RefundsProjection {
    /// Folds the batch's events into the rows of its charges.
    fn fold(&self, touched: &mut Ledgers, events: &[&StoredEvent]) -> Result<(), ProjectionError> {
        use ChargeLedgerEvent as E;
        let Ledgers {
            charges,
            refunds,
            external,
        } = touched;
        for event in events {
            let charge_id = event.aggregate_id.as_str();
            let at = event.recorded_at;
            match event.decode::<ChargeLedgerEvent>()? {
                E::ChargeObserved { charge } => {
                    let mut fresh = true;
                    charges.update(charge_id, |row| {
                        fresh = false;
                        row.amount = charge.amount;
                        row.currency = charge.currency.clone();
                        row.stripe_refunded = charge.amount_refunded;
                        row.disputed = charge.disputed;
                        row.updated_at = at;
                    });
                    if fresh {
                        charges.insert_absent(
                            charge_id.to_owned(),
                            ChargeRecord {
                                charge_id: charge_id.to_owned(),
                                app: charge.app,
                                stripe_account_id: charge.stripe_account_id,
                                amount: charge.amount,
                                currency: charge.currency,
                                refunded: 0,
                                pending: 0,
                                unanswered: 0,
                                stripe_refunded: charge.amount_refunded,
                                disputed: charge.disputed,
                                updated_at: at,
                            },
                        );
                    }
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
                    // A refund is listed under its charge's app; without the charge it is not.
                    let Some(app) = charges.get(charge_id).map(|c| c.app.clone()) else {
                        continue;
                    };
                    refunds.insert_absent(
                        refund_id.clone(),
                        RefundRecord {
                            id: refund_id,
                            app,
                            purchase_id,
                            charge_id: charge_id.to_owned(),
                            approval_id,
                            amount,
                            currency,
                            reason: reason.as_str().to_owned(),
                            status: "requested".to_owned(),
                            stripe_refund_id: None,
                            failure_reason: None,
                            failure_message: None,
                            idempotency_key,
                            requested_by,
                            attempts: 0,
                            last_submitted_at: None,
                            created_at: at,
                            updated_at: at,
                        },
                    );
                }
                E::RefundSubmitted { refund_id, attempt } => {
                    refunds.update(refund_id.as_str(), |row| {
                        row.attempts = i32::try_from(attempt).unwrap_or(i32::MAX);
                        row.last_submitted_at = Some(at);
                        row.updated_at = at;
                    });
                }
                E::RefundStatusChanged {
                    refund_id,
                    stripe_refund_id,
                    status,
                    failure_reason,
                } => {
                    refunds.update(refund_id.as_str(), |row| {
                        row.status = status.as_str().to_owned();
                        if stripe_refund_id.is_some() {
                            row.stripe_refund_id = stripe_refund_id;
                        }
                        row.failure_reason = failure_reason;
                        row.updated_at = at;
                    });
                }
                E::ExternalRefundObserved {
                    stripe_refund_id,
                    amount,
                    status,
                    failure_reason,
                } => {
                    let record = ExternalRecord {
                        stripe_refund_id: stripe_refund_id.clone(),
                        charge_id: charge_id.to_owned(),
                        amount,
                        status: status.as_str().to_owned(),
                        failure_reason,
                        updated_at: at,
                    };
                    let mut fresh = true;
                    external.update(stripe_refund_id.as_str(), |row| {
                        fresh = false;
                        *row = ExternalRecord {
                            charge_id: row.charge_id.clone(),
                            ..record.clone()
                        };
                    });
                    if fresh {
                        external.insert_absent(stripe_refund_id, record);
                    }
                }
                E::RefundRejected {
                    refund_id,
                    code,
                    message,
                } => {
                    refunds.update(refund_id.as_str(), |row| {
                        row.status = "failed".to_owned();
                        row.failure_reason = Some(code);
                        row.failure_message = Some(message);
                        row.updated_at = at;
                    });
                }
            }
        }
        touched.recompute_sums();
        Ok(())
    }
}

/// The rows of the charges a batch touches: the charges, all their refunds, and all the refunds
/// made outside the platform, so their sums can be re-derived in memory.
#[derive(Default)]
struct Ledgers {
    charges: Touched<String, ChargeRecord>,
    refunds: Touched<String, RefundRecord>,
    external: Touched<String, ExternalRecord>,
}

impl Ledgers {
    /// Adds the rows of charges known without reading them, as unchanged.
    fn add(&mut self, known: impl IntoIterator<Item = ChargeRows>) {
        for rows in known {
            if let Some(charge) = rows.charge {
                self.charges.add(charge.charge_id.clone(), charge);
            }
            for refund in rows.refunds {
                self.refunds.add(refund.id.clone(), refund);
            }
            for external in rows.external {
                self.external
                    .add(external.stripe_refund_id.clone(), external);
            }
        }
    }

    /// The rows of each of `ids` as they now stand.
    fn by_charge(&self, ids: &[&str]) -> HashMap<String, ChargeRows> {
        let mut rows: HashMap<String, ChargeRows> = ids
            .iter()
            .map(|id| ((*id).to_owned(), ChargeRows::default()))
            .collect();
        for charge in self.charges.values() {
            if let Some(entry) = rows.get_mut(&charge.charge_id) {
                entry.charge = Some(charge.clone());
            }
        }
        for refund in self.refunds.values() {
            if let Some(entry) = rows.get_mut(&refund.charge_id) {
                entry.refunds.push(refund.clone());
            }
        }
        for external in self.external.values() {
            if let Some(entry) = rows.get_mut(&external.charge_id) {
                entry.external.push(external.clone());
            }
        }
        rows
    }

    /// Re-derives each charge's sums from its refunds (ours and external).
    fn recompute_sums(&mut self) {
        #[derive(Default, PartialEq)]
        struct Sums {
            refunded: i64,
            pending: i64,
            unanswered: i64,
        }
        let mut sums: HashMap<&str, Sums> = HashMap::new();
        let ours = self
            .refunds
            .values()
            .map(|r| (r.charge_id.as_str(), r.status.as_str(), r.amount, true));
        let external = self
            .external
            .values()
            .map(|r| (r.charge_id.as_str(), r.status.as_str(), r.amount, false));
        for (charge_id, status, amount, is_ours) in ours.chain(external) {
            let sum = sums.entry(charge_id).or_default();
            match status {
                "succeeded" => sum.refunded += amount,
                "requested" | "pending" | "requires_action" => sum.pending += amount,
                _ => {}
            }
            // Only our own requests can be waiting for Stripe's first answer.
            if is_ours && status == "requested" {
                sum.unanswered += amount;
            }
        }
        let ids: Vec<String> = self.charges.values().map(|c| c.charge_id.clone()).collect();
        for id in ids {
            let sum = sums.remove(id.as_str()).unwrap_or_default();
            self.charges.update_if(id.as_str(), |charge| {
                let now = Sums {
                    refunded: charge.refunded,
                    pending: charge.pending,
                    unanswered: charge.unanswered,
                };
                if now == sum {
                    return false;
                }
                (charge.refunded, charge.pending, charge.unanswered) =
                    (sum.refunded, sum.pending, sum.unanswered);
                true
            });
        }
    }
}

impl RefundsProjection {
    async fn load(&self, conn: &mut PgConnection, ids: &[&str]) -> Result<Ledgers, sqlx::Error> {
        let (refunds, charges, external) = (&self.refunds, &self.charges, &self.external);
        let loaded_charges: Vec<ChargeRecord> = sqlx::query_as(&format!(
            "SELECT {CHARGE_COLUMNS} FROM {charges} WHERE charge_id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
        let loaded_refunds: Vec<RefundRecord> = sqlx::query_as(&format!(
            "SELECT {RECORD_COLUMNS} FROM {refunds} WHERE charge_id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
        let loaded_external: Vec<ExternalRecord> = sqlx::query_as(&format!(
            "SELECT {EXTERNAL_COLUMNS} FROM {external} WHERE charge_id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
        Ok(Ledgers {
            charges: Touched::new(loaded_charges.into_iter().map(|r| (r.charge_id.clone(), r))),
            refunds: Touched::new(loaded_refunds.into_iter().map(|r| (r.id.clone(), r))),
            external: Touched::new(
                loaded_external
                    .into_iter()
                    .map(|r| (r.stripe_refund_id.clone(), r)),
            ),
        })
    }

    /// Writes every changed row once, all three tables in one statement. With `moving`, the
    /// same statement moves the projection's checkpoint from its first to its second
    /// checkpoint and writes only if it stood at the first (the compare-and-set of
    /// `runner::move_checkpoint`); returns whether it wrote.
    async fn store(
        &self,
        conn: &mut PgConnection,
        ledgers: &Ledgers,
        moving: Option<(Checkpoint, Checkpoint)>,
    ) -> Result<bool, ProjectionError> {
        let (refunds, charges, external) = (&self.refunds, &self.charges, &self.external);
        let changed_charges = ledgers.charges.changed();
        let changed_refunds = ledgers.refunds.changed();
        let changed_external = ledgers.external.changed();
        let nothing_changed =
            changed_charges.is_empty() && changed_refunds.is_empty() && changed_external.is_empty();
        if nothing_changed && moving.is_none() {
            return Ok(true);
        }
        let (moved, guard, result) = match moving {
            Some(_) => (
                format!("{}, ", moved_checkpoint_query(36)),
                "WHERE EXISTS (SELECT 1 FROM moved)",
                ONE_STATEMENT_RESULT,
            ),
            None => (String::new(), "", "SELECT true, true"),
        };
        let sql = format!(
            "WITH {moved}\
             charges_written AS ( \
               INSERT INTO {charges} (charge_id, app, stripe_account_id, amount, currency, refunded, pending, \
                 unanswered, stripe_refunded, disputed, updated_at) \
               SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::int8[], \
                 $7::int8[], $8::int8[], $9::int8[], $10::bool[], $11::timestamptz[]) {guard} \
               ON CONFLICT (charge_id) DO UPDATE SET amount = EXCLUDED.amount, currency = EXCLUDED.currency, \
                 refunded = EXCLUDED.refunded, pending = EXCLUDED.pending, unanswered = EXCLUDED.unanswered, \
                 stripe_refunded = EXCLUDED.stripe_refunded, disputed = EXCLUDED.disputed, \
                 updated_at = EXCLUDED.updated_at), \
             refunds_written AS ( \
               INSERT INTO {refunds} (id, app, purchase_id, charge_id, approval_id, amount, currency, reason, status, \
                 stripe_refund_id, failure_reason, failure_message, idempotency_key, requested_by, attempts, \
                 last_submitted_at, created_at, updated_at, projected_at) \
               SELECT u.*, clock_timestamp() FROM UNNEST($12::text[], $13::text[], $14::text[], $15::text[], \
                 $16::text[], $17::int8[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], \
                 $23::text[], $24::text[], $25::text[], $26::int4[], $27::timestamptz[], $28::timestamptz[], \
                 $29::timestamptz[]) u {guard} \
               ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, stripe_refund_id = EXCLUDED.stripe_refund_id, \
                 failure_reason = EXCLUDED.failure_reason, failure_message = EXCLUDED.failure_message, \
                 attempts = EXCLUDED.attempts, last_submitted_at = EXCLUDED.last_submitted_at, \
                 updated_at = EXCLUDED.updated_at, projected_at = EXCLUDED.projected_at), \
             external_written AS ( \
               INSERT INTO {external} (stripe_refund_id, charge_id, amount, status, failure_reason, updated_at) \
               SELECT * FROM UNNEST($30::text[], $31::text[], $32::int8[], $33::text[], $34::text[], \
                 $35::timestamptz[]) {guard} \
               ON CONFLICT (stripe_refund_id) DO UPDATE SET amount = EXCLUDED.amount, status = EXCLUDED.status, \
                 failure_reason = EXCLUDED.failure_reason, updated_at = EXCLUDED.updated_at) \
             {result}"
        );
        let (c, r, e) = (&changed_charges, &changed_refunds, &changed_external);
        let mut query = sqlx::query_as::<_, (bool, bool)>(&sql)
            .bind(column(c, |c| c.charge_id.as_str()))
            .bind(column(c, |c| c.app.as_str()))
            .bind(column(c, |c| c.stripe_account_id.as_str()))
            .bind(column(c, |c| c.amount))
            .bind(column(c, |c| c.currency.as_str()))
            .bind(column(c, |c| c.refunded))
            .bind(column(c, |c| c.pending))
            .bind(column(c, |c| c.unanswered))
            .bind(column(c, |c| c.stripe_refunded))
            .bind(column(c, |c| c.disputed))
            .bind(column(c, |c| c.updated_at))
            .bind(column(r, |r| r.id.as_str()))
            .bind(column(r, |r| r.app.as_str()))
            .bind(column(r, |r| r.purchase_id.as_str()))
            .bind(column(r, |r| r.charge_id.as_str()))
            .bind(column(r, |r| r.approval_id.as_str()))
            .bind(column(r, |r| r.amount))
            .bind(column(r, |r| r.currency.as_str()))
            .bind(column(r, |r| r.reason.as_str()))
            .bind(column(r, |r| r.status.as_str()))
            .bind(column(r, |r| r.stripe_refund_id.as_deref()))
            .bind(column(r, |r| r.failure_reason.as_deref()))
            .bind(column(r, |r| r.failure_message.as_deref()))
            .bind(column(r, |r| r.idempotency_key.as_str()))
            .bind(column(r, |r| r.requested_by.as_str()))
            .bind(column(r, |r| r.attempts))
            .bind(column(r, |r| r.last_submitted_at))
            .bind(column(r, |r| r.created_at))
            .bind(column(r, |r| r.updated_at))
            .bind(column(e, |r| r.stripe_refund_id.as_str()))
            .bind(column(e, |r| r.charge_id.as_str()))
            .bind(column(e, |r| r.amount))
            .bind(column(e, |r| r.status.as_str()))
            .bind(column(e, |r| r.failure_reason.as_deref()))
            .bind(column(e, |r| r.updated_at));
        if let Some((from, to)) = moving {
            query = query
                .bind(&self.name)
                .bind(from.transaction_id.to_string())
                .bind(from.position)
                .bind(to.transaction_id.to_string())
                .bind(to.position);
        }
        let (wrote, _) = query.fetch_one(&mut *conn).await?;
        Ok(wrote)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct ChargeRecord {
    charge_id: String,
    app: String,
    stripe_account_id: String,
    amount: i64,
    currency: String,
    refunded: i64,
    pending: i64,
    unanswered: i64,
    stripe_refunded: i64,
    disputed: bool,
    updated_at: DateTime<Utc>,
}

const CHARGE_COLUMNS: &str =
    "charge_id, app, stripe_account_id, amount, currency, refunded, pending, \
     unanswered, stripe_refunded, disputed, updated_at";

#[derive(Debug, Clone, sqlx::FromRow)]
struct RefundRecord {
    id: String,
    app: String,
    purchase_id: String,
    charge_id: String,
    approval_id: String,
    amount: i64,
    currency: String,
    reason: String,
    status: String,
    stripe_refund_id: Option<String>,
    failure_reason: Option<String>,
    failure_message: Option<String>,
    idempotency_key: String,
    requested_by: String,
    attempts: i32,
    last_submitted_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const RECORD_COLUMNS: &str = "id, app, purchase_id, charge_id, approval_id, amount, currency, reason, \
     status, stripe_refund_id, failure_reason, failure_message, idempotency_key, requested_by, attempts, \
     last_submitted_at, created_at, updated_at";

#[derive(Debug, Clone, sqlx::FromRow)]
struct ExternalRecord {
    stripe_refund_id: String,
    charge_id: String,
    amount: i64,
    status: String,
    failure_reason: Option<String>,
    updated_at: DateTime<Utc>,
}

const EXTERNAL_COLUMNS: &str =
    "stripe_refund_id, charge_id, amount, status, failure_reason, updated_at";

/// A refund as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(example = json!({"id": "rf_0d4c", "app": "total-typescript", "purchase_id": "pur_123", "charge_id": "ch_3Abc", "approval_id": "appr_9", "amount": 2000, "currency": "usd", "reason": "requested_by_customer", "status": "succeeded", "stripe_refund_id": "re_3Abc", "failure_reason": null, "idempotency_key": "refund:pur_123:appr_9", "requested_by": "agent@support.example", "created_at": "2026-11-22T10:00:00Z", "updated_at": "2026-11-22T10:00:01Z"}))]
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
    /// The latest first (the dashboard's recent refunds); the API lists oldest first.
    pub newest_first: bool,
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
        .push(if filter.newest_first {
            " ORDER BY created_at DESC, id DESC LIMIT "
        } else {
            " ORDER BY created_at, id LIMIT "
        })
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
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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
