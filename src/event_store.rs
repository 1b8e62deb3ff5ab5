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
use serde_json::Value;
use sqlx::PgPool;

pub struct EventRepository {
    reads: PostgresEventRepository,
    pool: PgPool,
}

impl EventRepository {
    pub fn new(pool: PgPool) -> Self {
        Self {
            reads: PostgresEventRepository::new(pool.clone()),
            pool,
        }
    }

    async fn append<A: Aggregate>(&self, events: &[SerializedEvent]) -> Result<(), sqlx::Error> {
        let Some(first) = events.first() else {
            return Ok(());
        };
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
        // In array order, so that global positions follow the sequence (as postgres-es's
        // one-by-one inserts do); jsonb then json, as postgres-es binds its values. The place of
        // the last event and the time the append was recorded (one transaction: one time) come
        // back for the request's answer (`crate::writes`).
        let (transaction_id, position, recorded_at): (i64, i64, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
            "WITH appended AS ( \
               INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
               SELECT $1, e.id, e.sequence, e.event_type, e.event_version, e.payload::json, e.metadata::json \
               FROM UNNEST($2::text[], $3::int8[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[]) \
                 WITH ORDINALITY AS e(id, sequence, event_type, event_version, payload, metadata, n) \
               ORDER BY e.n \
               RETURNING transaction_id, global_position, recorded_at) \
             SELECT max(transaction_id::text::bigint), max(global_position), max(recorded_at) FROM appended",
        )
        .bind(A::TYPE)
        .bind(&ids)
        .bind(&sequences)
        .bind(&types)
        .bind(&versions)
        .bind(&payloads)
        .bind(&metadata)
        .fetch_one(&self.pool)
        .await?;
        crate::writes::record(
            A::TYPE,
            &first.aggregate_id,
            Checkpoint {
                transaction_id,
                position,
            },
            recorded_at,
        );
        Ok(())
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
