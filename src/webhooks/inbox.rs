//! The webhook inbox table: store once, claim for processing, record outcomes.

use std::collections::HashSet;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::envelope::EventEnvelope;
use super::reconcile::{not_acted_on, LEDGER_EVENT_TYPES};

/// How an event reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceivedVia {
    Webhook,
    Backfill,
}

/// A verified event on its way into the inbox.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub event_id: String,
    pub event_type: String,
    pub account: Option<String>,
    pub livemode: bool,
    pub stripe_created: Option<DateTime<Utc>>,
    pub payload: String,
    pub via: ReceivedVia,
}

impl Arrival {
    pub fn new(event: &EventEnvelope, payload: &str, via: ReceivedVia) -> Self {
        Self {
            event_id: event.id.clone(),
            event_type: event.kind.clone(),
            account: event.account.clone(),
            livemode: event.livemode,
            stripe_created: event.created.and_then(|t| Utc.timestamp_opt(t, 0).single()),
            payload: payload.to_owned(),
            via,
        }
    }

    /// Whether the worker has anything to do with it.
    pub fn is_for_the_ledger(&self) -> bool {
        LEDGER_EVENT_TYPES.contains(&self.event_type.as_str())
    }
}

/// Stores a verified event unless its id is already there. Returns whether it was new.
pub async fn store(
    pool: &PgPool,
    event: &EventEnvelope,
    payload: &str,
    via: ReceivedVia,
) -> Result<bool, sqlx::Error> {
    Ok(store_all(pool, &[Arrival::new(event, payload, via)]).await?[0])
}

/// Stores verified events in one statement, skipping ids already there; says of each whether it
/// was new (of two arrivals with one id, only the first can be). An event of a type the ledger
/// does not act on is stored already `ignored`: kept for the record, never queued.
pub async fn store_all(pool: &PgPool, arrivals: &[Arrival]) -> Result<Vec<bool>, sqlx::Error> {
    let column = |f: fn(&Arrival) -> Option<String>| arrivals.iter().map(f).collect::<Vec<_>>();
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO webhook_events (event_id, event_type, account, livemode, stripe_created, payload, received_via, \
           status, outcome, processed_at) \
         SELECT u.event_id, u.event_type, u.account, u.livemode, u.stripe_created, u.payload, u.via, \
           CASE WHEN u.ignored IS NULL THEN 'pending' ELSE 'ignored' END, u.ignored, \
           CASE WHEN u.ignored IS NULL THEN NULL ELSE now() END \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bool[], $5::timestamptz[], $6::text[], $7::text[], $8::text[]) \
           AS u(event_id, event_type, account, livemode, stripe_created, payload, via, ignored) \
         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
    )
    .bind(column(|a| Some(a.event_id.clone())))
    .bind(column(|a| Some(a.event_type.clone())))
    .bind(column(|a| a.account.clone()))
    .bind(arrivals.iter().map(|a| a.livemode).collect::<Vec<_>>())
    .bind(arrivals.iter().map(|a| a.stripe_created).collect::<Vec<_>>())
    .bind(arrivals.iter().map(|a| a.payload.as_str()).collect::<Vec<_>>())
    .bind(
        arrivals
            .iter()
            .map(|a| match a.via {
                ReceivedVia::Webhook => "webhook",
                ReceivedVia::Backfill => "backfill",
            })
            .collect::<Vec<_>>(),
    )
    .bind(column(|a| (!a.is_for_the_ledger()).then(|| not_acted_on(&a.event_type))))
    .fetch_all(pool)
    .await?;
    let mut new: HashSet<String> = inserted.into_iter().collect();
    Ok(arrivals.iter().map(|a| new.remove(&a.event_id)).collect())
}

/// An event claimed for processing.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub event_id: String,
    pub payload: String,
    pub attempts: i32,
}

/// Claims due events (and ones whose claimant died) for this worker, oldest due first. Each
/// half walks its partial index in order (a plain index scan, not a bitmap): entries left behind
/// by events that moved on are marked dead as they are passed, so an idle worker's poll stays
/// cheap however much the inbox churned (measured: 62 ms per empty poll after 200,000 events
/// with the former single `OR` query, 4 ms now).
pub async fn claim(pool: &PgPool, limit: i64) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS ( \
           SELECT event_id FROM webhook_events WHERE status IN ('pending', 'failed') AND next_attempt_at <= now() \
           ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED), \
         stuck AS ( \
           SELECT event_id FROM webhook_events WHERE status = 'processing' AND locked_until < now() \
           ORDER BY locked_until LIMIT $1 FOR UPDATE SKIP LOCKED) \
         UPDATE webhook_events w SET status = 'processing', attempts = w.attempts + 1, \
           locked_until = now() + interval '60 seconds' \
         FROM (SELECT event_id FROM due UNION SELECT event_id FROM stuck LIMIT $1) claimed \
         WHERE w.event_id = claimed.event_id \
         RETURNING w.event_id, w.payload, w.attempts",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Where an event ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Reconciled into the ledger (or found to change nothing).
    Handled(String),
    /// A type the ledger does not act on, or one for the other mode (live/test).
    Ignored(String),
    /// About an account no app owns: kept and reported, retried by an operator.
    Unmatched(String),
    /// Failed this time; retried with backoff, then parked as dead.
    Failed(String),
}

impl Outcome {
    /// The inbox status it leads to after `attempts` attempts.
    pub fn status(&self, attempts: i32, max_attempts: i32) -> &'static str {
        match self {
            Outcome::Handled(_) => "handled",
            Outcome::Ignored(_) => "ignored",
            Outcome::Unmatched(_) => "unmatched",
            Outcome::Failed(_) if attempts >= max_attempts => "dead",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// One processing attempt's result, ready to record.
pub struct Finished {
    pub claimed: Claimed,
    pub outcome: Outcome,
    /// When a failed event is due again.
    pub retry_in: std::time::Duration,
}

/// Records the outcomes of a batch of processing attempts in one statement.
pub async fn finish(
    pool: &PgPool,
    finished: &[Finished],
    max_attempts: i32,
) -> Result<(), sqlx::Error> {
    if finished.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(finished.len());
    let mut statuses = Vec::with_capacity(finished.len());
    let mut details = Vec::with_capacity(finished.len());
    let mut errors = Vec::with_capacity(finished.len());
    let mut delays = Vec::with_capacity(finished.len());
    for done in finished {
        let (detail, error) = match &done.outcome {
            Outcome::Handled(d) | Outcome::Ignored(d) | Outcome::Unmatched(d) => {
                (Some(d.as_str()), None)
            }
            Outcome::Failed(e) => (None, Some(e.as_str())),
        };
        ids.push(done.claimed.event_id.as_str());
        statuses.push(done.outcome.status(done.claimed.attempts, max_attempts));
        details.push(detail);
        errors.push(error);
        delays.push(done.retry_in.as_secs_f64());
    }
    sqlx::query(
        "UPDATE webhook_events w SET status = u.status, outcome = COALESCE(u.detail, w.outcome), \
           last_error = u.error, locked_until = NULL, \
           processed_at = CASE WHEN u.status IN ('handled', 'ignored', 'unmatched') THEN now() ELSE w.processed_at END, \
           next_attempt_at = now() + make_interval(secs => u.delay) \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[]) AS u(event_id, status, detail, error, delay) \
         WHERE w.event_id = u.event_id",
    )
    .bind(ids)
    .bind(statuses)
    .bind(details)
    .bind(errors)
    .bind(delays)
    .execute(pool)
    .await?;
    Ok(())
}

/// An inbox row as operators see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(example = json!({"event_id": "evt_1Q", "event_type": "charge.refunded", "account": "acct_1Nv0FGQ9RKHgCVdK", "livemode": false, "received_via": "webhook", "status": "handled", "attempts": 1, "outcome": "refund_confirmed", "last_error": null, "received_at": "2026-11-22T10:00:00Z", "processed_at": "2026-11-22T10:00:00Z"}))]
pub struct InboxRow {
    pub event_id: String,
    pub event_type: String,
    pub account: Option<String>,
    pub livemode: bool,
    pub received_via: String,
    pub status: String,
    pub attempts: i32,
    pub outcome: Option<String>,
    pub last_error: Option<String>,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
}

pub async fn list(
    pool: &PgPool,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<InboxRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event_id, event_type, account, livemode, received_via, status, attempts, outcome, last_error, \
           received_at, processed_at FROM webhook_events WHERE ($1::text IS NULL OR status = $1) \
         ORDER BY received_at, event_id LIMIT $2",
    )
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Puts dead (or unmatched, or failed) events back in the queue. `None` retries every dead one.
pub async fn retry(pool: &PgPool, event_id: Option<&str>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_events SET status = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL \
         WHERE ($1::text IS NULL AND status = 'dead') \
            OR ($1::text IS NOT NULL AND event_id = $1 AND status IN ('dead', 'unmatched', 'failed'))",
    )
    .bind(event_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
