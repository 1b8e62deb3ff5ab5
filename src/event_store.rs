//! The event repository behind the command bus: postgres-es's for every read, with a
//! command's events appended by one statement (docs/decisions/0017).
//!
//! postgres-es commits a command as `BEGIN`, one `INSERT` per event, `COMMIT`: four round trips
//! for a two-event command. A single `INSERT … SELECT FROM UNNEST` is atomic by itself, so the
//! same events take one. The optimistic-concurrency rule is unchanged: the primary key
//! `(aggregate_type, aggregate_id, sequence)` refuses a second writer of the same sequence.

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use ledger_projections::Checkpoint;
use postgres_es::PostgresEventRepository;
use std::sync::{Arc, LazyLock};

use crate::direct_connections::DirectConnections;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{PgPool, Postgres};

pub struct EventRepository {
    reads: PostgresEventRepository,
    /// The appends' connections, outside the pool (docs/decisions/0036).
    appends: Arc<DirectConnections>,
}

impl EventRepository {
    pub fn new(pool: PgPool) -> Self {
        let appends = Arc::new(DirectConnections::for_pool(&pool));
        Self::sharing(pool, appends)
    }

    /// A repository that appends through `appends`, which other repositories share.
    pub fn sharing(pool: PgPool, appends: Arc<DirectConnections>) -> Self {
        Self {
            reads: PostgresEventRepository::new(pool),
            appends,
        }
    }

    async fn append<A: Aggregate>(&self, events: &[SerializedEvent]) -> Result<(), sqlx::Error> {
        if events.is_empty() {
            return Ok(());
        }
        let columns = EventColumns::of(events);
        // In array order, so that global positions follow the sequence (as postgres-es's
        // one-by-one inserts do); jsonb then json, as postgres-es binds its values. The place of
        // the last event and the time the append was recorded (one transaction: one time) come
        // back for the request's answer (`crate::writes`).
        static APPEND: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH appended AS ({INSERT_EVENTS} ORDER BY e.n RETURNING transaction_id, global_position, recorded_at) \
                 SELECT max(transaction_id::text::bigint), max(global_position), max(recorded_at) FROM appended"
            )
        });
        let mut conn = self.appends.checkout().await?;
        let outcome = columns
            .bind::<A, _>(sqlx::query_as(&APPEND))
            .fetch_one(&mut *conn)
            .await;
        let appended: (i64, i64, DateTime<Utc>) = conn.finish(outcome)?;
        record::<A>(events, appended);
        Ok(())
    }

    /// Appends a refund's first events only together with the claim of its idempotency key, in
    /// one statement (docs/decisions/0034): false, with nothing written, when the key is taken
    /// already or the app's last event is no longer the one at `claim.app_sequence`. The primary
    /// key refuses the events, and the claim with them, when the charge moved past the sequence
    /// they follow.
    pub async fn append_claiming<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        claim: &KeyClaim<'_>,
    ) -> Result<bool, sqlx::Error> {
        let columns = EventColumns::of(events);
        static APPEND_CLAIMING: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH claimed AS ( \
                   INSERT INTO refund_keys (idempotency_key, app, charge_id, requested_amount, refund_id) \
                   SELECT $8, $9, $10, $11, $12 \
                   WHERE (SELECT max(sequence) FROM events WHERE aggregate_type = $13 AND aggregate_id = $9) \
                     IS NOT DISTINCT FROM $14 \
                   ON CONFLICT (idempotency_key) DO NOTHING RETURNING 1), \
                 appended AS ({INSERT_EVENTS} WHERE EXISTS (SELECT 1 FROM claimed) ORDER BY e.n \
                   RETURNING transaction_id, global_position, recorded_at) \
                 SELECT max(transaction_id::text::bigint), max(global_position), max(recorded_at) FROM appended"
            )
        });
        let mut conn = self.appends.checkout().await?;
        let outcome = columns
            .bind::<A, _>(sqlx::query_as(&APPEND_CLAIMING))
            .bind(claim.key)
            .bind(claim.app)
            .bind(claim.charge_id)
            .bind(claim.requested_amount)
            .bind(claim.refund_id)
            .bind(claim.app_type)
            .bind(claim.app_sequence)
            .fetch_one(&mut *conn)
            .await;
        let appended: (Option<i64>, Option<i64>, Option<DateTime<Utc>>) = conn.finish(outcome)?;
        match appended {
            (Some(transaction_id), Some(position), Some(recorded_at)) => {
                record::<A>(events, (transaction_id, position, recorded_at));
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// The claim of a refund's idempotency key that its first events are appended with.
pub struct KeyClaim<'a> {
    pub key: &'a str,
    pub app: &'a str,
    pub charge_id: &'a str,
    pub requested_amount: Option<i64>,
    pub refund_id: &'a str,
    /// The app's aggregate type, and the sequence of its last event the caller decided on.
    pub app_type: &'a str,
    pub app_sequence: i64,
}

/// `INSERT … SELECT FROM UNNEST($2 … $7)`, `$1` the aggregate type, without its `ORDER BY`.
const INSERT_EVENTS: &str = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
   SELECT $1, e.id, e.sequence, e.event_type, e.event_version, e.payload::json, e.metadata::json \
   FROM UNNEST($2::text[], $3::int8[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[]) \
     WITH ORDINALITY AS e(id, sequence, event_type, event_version, payload, metadata, n)";

/// Tells the request's record (`crate::writes`) where the events went and when.
fn record<A: Aggregate>(
    events: &[SerializedEvent],
    (transaction_id, position, recorded_at): (i64, i64, DateTime<Utc>),
) {
    if let Some(first) = events.first() {
        crate::writes::record(
            A::TYPE,
            &first.aggregate_id,
            Checkpoint {
                transaction_id,
                position,
            },
            recorded_at,
        );
    }
}

/// The events' columns as arrays, bound as `$2 … $7` after the aggregate type.
struct EventColumns<'a> {
    ids: Vec<&'a str>,
    sequences: Vec<i64>,
    types: Vec<&'a str>,
    versions: Vec<&'a str>,
    payloads: Vec<&'a Value>,
    metadata: Vec<&'a Value>,
}

impl<'a> EventColumns<'a> {
    fn of(events: &'a [SerializedEvent]) -> Self {
        let mut ids = Vec::with_capacity(events.len());
        let mut sequences = Vec::with_capacity(events.len());
        let mut types = Vec::with_capacity(events.len());
        let mut versions = Vec::with_capacity(events.len());
        let mut payloads = Vec::with_capacity(events.len());
        let mut metadata = Vec::with_capacity(events.len());
        for event in events {
            ids.push(event.aggregate_id.as_str());
            sequences.push(event.sequence as i64);
            types.push(event.event_type.as_str());
            versions.push(event.event_version.as_str());
            payloads.push(&event.payload);
            metadata.push(&event.metadata);
        }
        Self {
            ids,
            sequences,
            types,
            versions,
            payloads,
            metadata,
        }
    }

    fn bind<A: Aggregate, O>(
        self,
        query: QueryAs<'a, Postgres, O, PgArguments>,
    ) -> QueryAs<'a, Postgres, O, PgArguments> {
        query
            .bind(A::TYPE)
            .bind(self.ids)
            .bind(self.sequences)
            .bind(self.types)
            .bind(self.versions)
            .bind(self.payloads)
            .bind(self.metadata)
    }
}

fn persistence_error(error: sqlx::Error) -> PersistenceError {
    let conflict =
        matches!(&error, sqlx::Error::Database(e) if e.code().as_deref() == Some("23505"));
    if conflict {
        PersistenceError::OptimisticLockError
    } else if crate::db::is_unavailable(&error) {
        PersistenceError::ConnectionError(Box::new(error))
    } else {
        PersistenceError::UnknownError(Box::new(error))
    }
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.reads.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if snapshot_update.is_some() {
            // Not used by the ledger (its stores are event-sourced); kept correct all the same.
            return self.reads.persist::<A>(events, snapshot_update).await;
        }
        if events.is_empty() {
            return Ok(());
        }
        self.append::<A>(events).await.map_err(persistence_error)
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_all_events::<A>().await
    }
}
