//! Command execution: cqrs-es frameworks over the PostgreSQL event store, with optimistic
//! concurrency conflicts retried on fresh state, and read-your-writes for the HTTP API.

use std::sync::Arc;
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{
    EventStoreAggregateContext, EventUpcaster, PersistedEventStore, SemanticVersionEventUpcaster,
    SerializedEvent,
};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore};
use ledger_aggregates::app_connection::AppConnection;
use ledger_aggregates::charge_ledger::ChargeLedger;
use ledger_aggregates::upcasting::UPCASTS;
use ledger_aggregates::EventMetadata;
use ledger_projections::ProjectionRunner;
use rand::Rng;
use sqlx::PgPool;

use crate::direct_connections::DirectConnections;
use crate::event_store::{EventRepository, KeyClaim};

type Store<A> = PersistedEventStore<EventRepository, A>;

/// How often a command is retried after losing an optimistic-concurrency race.
const MAX_ATTEMPTS: usize = 8;
/// How long a command's caller waits for the projections to show its events.
const READ_YOUR_WRITES: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LedgerError<E: std::error::Error> {
    /// The aggregate refused the command.
    #[error(transparent)]
    Domain(E),
    /// Lost the optimistic-concurrency race too often in a row.
    #[error("the aggregate is contended")]
    Contended,
    /// The database could not be reached; nothing was decided.
    #[error("the event store is unreachable: {0}")]
    Unavailable(String),
    #[error("event store failure: {0}")]
    Store(String),
}

fn store_error<E: std::error::Error>(error: AggregateError<E>) -> LedgerError<E> {
    match error {
        AggregateError::UserError(e) => LedgerError::Domain(e),
        AggregateError::AggregateConflict => LedgerError::Contended,
        AggregateError::DatabaseConnectionError(e) => LedgerError::Unavailable(e.to_string()),
        AggregateError::UnexpectedError(e) if crate::db::is_unavailable_source(e.as_ref()) => {
            LedgerError::Unavailable(e.to_string())
        }
        other => LedgerError::Store(other.to_string()),
    }
}

/// Commands on one aggregate are serialized within this process (striped by aggregate id), so
/// concurrent requests queue instead of burning optimistic-concurrency retries; across processes
/// the event store's primary key still decides.
const LOCK_STRIPES: usize = 128;

/// The domain's upcasts (aggregates/src/upcasting.rs) as cqrs-es upcasters.
fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    UPCASTS
        .iter()
        .map(|step| {
            let apply = step.apply;
            Box::new(SemanticVersionEventUpcaster::new(
                step.event_type,
                step.to_version,
                Box::new(apply),
            )) as Box<dyn EventUpcaster>
        })
        .collect()
}

/// An aggregate's state and the sequence of its last event: enough to decide a next command
/// without reading its events again. The append still checks that no other event came in
/// between (the event store's primary key); if one did, the command is decided again on a fresh
/// load.
#[derive(Debug, Clone)]
pub struct Versioned<A> {
    pub state: A,
    pub sequence: usize,
    /// How many of the events up to `sequence` the command that produced it appended (0 for a
    /// load).
    pub appended: usize,
}

impl<A> Versioned<A> {
    /// A state as read, with nothing appended.
    pub fn loaded(state: A, sequence: usize) -> Self {
        Self {
            state,
            sequence,
            appended: 0,
        }
    }
}

/// One aggregate type's command side: cqrs-es's event store and aggregates, executed the way
/// `CqrsFramework::execute` does (load, handle into an `EventSink`, commit), except that the
/// caller gets the resulting state back and may follow a command with a second one decided on
/// that state, committed in the same transaction (docs/decisions/0012).
pub struct CommandBus<A: Aggregate> {
    store: Store<A>,
    services: A::Services,
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Told of every commit, so that the read models follow at once (docs/decisions/0032).
    projections: Arc<ProjectionRunner>,
    /// The same event store, for appends that carry a key claim (`execute_claiming`).
    repository: EventRepository,
}

impl<A> CommandBus<A>
where
    A: Aggregate + Clone,
    A::Command: Clone,
    A::Services: Default,
{
    fn new(
        pool: &PgPool,
        appends: &Arc<DirectConnections>,
        projections: Arc<ProjectionRunner>,
    ) -> Self {
        let repository = || EventRepository::sharing(pool.clone(), Arc::clone(appends));
        Self {
            store: PersistedEventStore::new_event_store(repository()).with_upcasters(upcasters()),
            services: A::Services::default(),
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            projections,
            repository: repository(),
        }
    }

    fn stripe(&self, id: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        &self.locks[(hasher.finish() as usize) % LOCK_STRIPES]
    }

    /// Executes a command, re-deciding it on fresh state when another writer got there first.
    /// Returns the aggregate as the command left it.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<A, LedgerError<A::Error>> {
        self.execute_then(id, command, |_| None, metadata).await
    }

    /// Executes `first`, then the command `then` picks on the resulting state (if any); the
    /// events of both are committed together or not at all.
    pub async fn execute_then(
        &self,
        id: &str,
        first: A::Command,
        then: impl Fn(&A) -> Option<A::Command>,
        metadata: &EventMetadata,
    ) -> Result<A, LedgerError<A::Error>> {
        self.execute_versioned(id, None, first, then, metadata)
            .await
            .map(|done| done.state)
    }

    /// [`Self::execute_then`], starting from `known` when given, returning the sequence too.
    pub async fn execute_versioned(
        &self,
        id: &str,
        mut known: Option<Versioned<A>>,
        first: A::Command,
        then: impl Fn(&A) -> Option<A::Command>,
        metadata: &EventMetadata,
    ) -> Result<Versioned<A>, LedgerError<A::Error>> {
        let _serialized = self.stripe(id).lock().await;
        for attempt in 1..=MAX_ATTEMPTS {
            match self
                .try_execute(id, known.take(), &first, &then, metadata)
                .await
            {
                Err(AggregateError::AggregateConflict) if attempt < MAX_ATTEMPTS => {
                    let jitter = rand::thread_rng().gen_range(0..=(2u64 << attempt.min(6)));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                other => return other.map_err(store_error),
            }
        }
        Err(LedgerError::Contended)
    }

    async fn try_execute(
        &self,
        id: &str,
        known: Option<Versioned<A>>,
        first: &A::Command,
        then: &impl Fn(&A) -> Option<A::Command>,
        metadata: &EventMetadata,
    ) -> Result<Versioned<A>, AggregateError<A::Error>> {
        let mut context = match known {
            Some(known) => EventStoreAggregateContext {
                aggregate_id: id.to_owned(),
                aggregate: known.state,
                current_sequence: known.sequence,
                current_snapshot: None,
            },
            None => self.store.load_aggregate(id).await?,
        };
        let aggregate = context.aggregate();
        let events = self
            .decide(aggregate, first.clone(), then)
            .await
            .map_err(AggregateError::UserError)?;
        let state = aggregate.clone();
        let appended = events.len();
        let sequence = context.current_sequence + appended;
        if !events.is_empty() {
            self.store
                .commit(events, context, metadata.clone().into_map())
                .await?;
            self.projections.nudge_type(A::TYPE);
        }
        Ok(Versioned {
            state,
            sequence,
            appended,
        })
    }

    /// Handles `first`, then the command `then` picks on the state it left, applying their
    /// events to `aggregate`; returns the events, or the first refusal.
    async fn decide(
        &self,
        aggregate: &mut A,
        first: A::Command,
        then: &impl Fn(&A) -> Option<A::Command>,
    ) -> Result<Vec<A::Event>, A::Error> {
        let sink = EventSink::default();
        aggregate.handle(first, &self.services, &sink).await?;
        if let Some(next) = then(aggregate) {
            aggregate.handle(next, &self.services, &sink).await?;
        }
        Ok(sink.collect().await)
    }

    /// Decides `first` (then the command `then` picks) on `known`, and appends the events only
    /// together with `claim`, in one statement (docs/decisions/0034). `Ok(None)` means nothing
    /// was written and the caller should take the long way: the claim was refused (its key
    /// taken, or the app past the sequence it names), another writer's events came in since
    /// `known`, or a command was refused on `known`, which may be out of date.
    pub async fn execute_claiming(
        &self,
        id: &str,
        known: Versioned<A>,
        first: A::Command,
        then: impl Fn(&A) -> Option<A::Command>,
        metadata: &EventMetadata,
        claim: &KeyClaim<'_>,
    ) -> Result<Option<Versioned<A>>, LedgerError<A::Error>> {
        let _serialized = self.stripe(id).lock().await;
        let Versioned {
            state: mut aggregate,
            sequence,
            ..
        } = known;
        let Ok(events) = self.decide(&mut aggregate, first, &then).await else {
            return Ok(None);
        };
        let appended = events.len();
        if appended == 0 {
            return Ok(None);
        }
        let metadata = metadata.clone().into_map();
        let serialized = events
            .into_iter()
            .zip(sequence + 1..)
            .map(|(payload, sequence)| {
                SerializedEvent::try_from(&EventEnvelope::<A> {
                    aggregate_id: id.to_owned(),
                    sequence,
                    payload,
                    metadata: metadata.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| LedgerError::Store(error.to_string()))?;
        match self
            .repository
            .append_claiming::<A>(&serialized, claim)
            .await
        {
            Ok(true) => {
                self.projections.nudge_type(A::TYPE);
                Ok(Some(Versioned {
                    state: aggregate,
                    sequence: sequence + appended,
                    appended,
                }))
            }
            Ok(false) => Ok(None),
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("23505") => {
                Ok(None)
            }
            Err(error) if crate::db::is_unavailable(&error) => {
                Err(LedgerError::Unavailable(error.to_string()))
            }
            Err(error) => Err(LedgerError::Store(error.to_string())),
        }
    }

    /// The aggregate's current state and the sequence of its last event, from its events.
    pub async fn load_versioned(&self, id: &str) -> Result<Versioned<A>, LedgerError<A::Error>> {
        let mut context = self.store.load_aggregate(id).await.map_err(store_error)?;
        Ok(Versioned::loaded(
            std::mem::take(context.aggregate()),
            context.current_sequence,
        ))
    }

    /// The aggregate's current state, from its events.
    pub async fn load(&self, id: &str) -> Result<A, LedgerError<A::Error>> {
        Ok(self.load_versioned(id).await?.state)
    }
}

/// The ledger's command side and the runner that keeps its read models current.
pub struct Ledger {
    pub apps: CommandBus<AppConnection>,
    pub charges: CommandBus<ChargeLedger>,
    pub projections: Arc<ProjectionRunner>,
}

impl Ledger {
    pub fn new(pool: &PgPool, projections: Arc<ProjectionRunner>) -> Self {
        let appends = Arc::new(DirectConnections::for_pool(pool));
        Self {
            apps: CommandBus::new(pool, &appends, Arc::clone(&projections)),
            charges: CommandBus::new(pool, &appends, Arc::clone(&projections)),
            projections,
        }
    }

    /// Waits until the read models of `aggregate_type` show every event of that type committed
    /// before the call, so that a read follows every answer given before it, also those given
    /// without waiting for the read models (docs/decisions/0031); false after a timeout or an
    /// error, when the read shows what the tables hold.
    pub async fn fresh(&self, aggregate_type: &str) -> bool {
        waited(
            self.projections
                .wait_for_head(aggregate_type, READ_YOUR_WRITES)
                .await,
        )
    }

    /// Waits until the read models show the events this request appended to the aggregate, or
    /// else its latest event; false after a timeout (the write is durable either way).
    pub async fn settle(&self, aggregate_type: &str, id: &str) -> bool {
        // The request's own appends are the target when it made any (`crate::writes`);
        // otherwise the aggregate's latest event, asked of the store.
        waited(match crate::writes::appended(aggregate_type, id) {
            Some(target) => {
                self.projections
                    .wait_for(aggregate_type, target, READ_YOUR_WRITES)
                    .await
            }
            None => {
                self.projections
                    .wait_for_aggregate(aggregate_type, id, READ_YOUR_WRITES)
                    .await
            }
        })
    }
}

/// Whether a wait for the read models ended with them caught up; an error is logged and
/// counts as not caught up.
fn waited(result: Result<bool, ledger_projections::ProjectionError>) -> bool {
    result.unwrap_or_else(|error| {
        tracing::warn!(%error, "could not wait for projections");
        false
    })
}
