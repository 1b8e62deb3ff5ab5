//! The same-run baselines: (a) raw PostgreSQL, one event-shaped row per transaction; (b) plain
//! cqrs-es + postgres-es executing a trivial one-event command.

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, CqrsFramework, DomainEvent};
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::load::{figures, Figure};
use crate::Plan;

pub const RAW: &str = "baseline: raw INSERT per tx";
pub const CQRS: &str = "baseline: plain cqrs-es command";
/// The same baseline measured just before and just after each refund figure, averaged: the
/// refund events' ratio is taken against it, so that the machine's speed, which drifts within
/// minutes here, is the same on both sides of the ratio.
pub const CQRS_BESIDE: &str = "baseline: plain cqrs-es command, around the refunds";

pub async fn raw_inserts(pool: &PgPool, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
    sqlx::query("CREATE TABLE bench_raw (LIKE events INCLUDING DEFAULTS)")
        .execute(pool)
        .await?;
    let inserts = pool.clone();
    figures(RAW, None, plan, pool, move |client, n| {
        let pool = inserts.clone();
        async move {
            sqlx::query(
                "INSERT INTO bench_raw (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                 VALUES ('Bench', $1, 1, 'Happened', '1.0', $2, $3)",
            )
            .bind(format!("{client}-{n}"))
            .bind(serde_json::json!({"Happened": {"amount": n}}))
            .bind(serde_json::json!({"actor": "bench", "source": "system"}))
            .execute(&pool)
            .await?;
            Ok(())
        }
    })
    .await
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Counted {
    Incremented,
}

impl DomainEvent for Counted {
    fn event_type(&self) -> String {
        "Incremented".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

mod thiserror_free {
    /// An error that cannot happen.
    #[derive(Debug)]
    pub enum Never {}
    impl std::fmt::Display for Never {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match *self {}
        }
    }
    impl std::error::Error for Never {}
}

impl Aggregate for Counter {
    const TYPE: &'static str = "BenchCounter";
    type Command = ();
    type Event = Counted;
    type Error = thiserror_free::Never;
    type Services = ();

    async fn handle(&mut self, _: (), _: &(), sink: &EventSink<Self>) -> Result<(), Self::Error> {
        sink.write(Counted::Incremented, self).await;
        Ok(())
    }

    fn apply(&mut self, _: Counted) {
        self.count += 1;
    }
}

/// The cqrs-es baseline, set up once: measured with the other baseline first, then again
/// around each refund figure (`scenarios::refunds`).
pub struct PlainCqrs {
    cqrs: std::sync::Arc<
        CqrsFramework<Counter, PersistedEventStore<PostgresEventRepository, Counter>>,
    >,
}

impl PlainCqrs {
    pub async fn set_up(pool: &PgPool) -> anyhow::Result<Self> {
        sqlx::query(
            "CREATE TABLE bench_cqrs_events (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
             sequence bigint NOT NULL, event_type text NOT NULL, event_version text NOT NULL, \
             payload json NOT NULL, metadata json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
        )
        .execute(pool)
        .await?;
        let repo = PostgresEventRepository::new(pool.clone())
            .with_tables("bench_cqrs_events", "bench_cqrs_snapshots");
        let cqrs = std::sync::Arc::new(CqrsFramework::<Counter, _>::new(
            PersistedEventStore::new_event_store(repo),
            Vec::new(),
            (),
        ));
        Ok(Self { cqrs })
    }

    /// One trivial command on a fresh aggregate per operation; `run` keeps the ids of
    /// different measurements apart.
    fn command(
        &self,
        run: String,
    ) -> impl Fn(
        usize,
        usize,
    )
        -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>
           + Send
           + Sync
           + 'static {
        let cqrs = std::sync::Arc::clone(&self.cqrs);
        move |client, n| {
            let cqrs = std::sync::Arc::clone(&cqrs);
            let id = format!("{run}-{client}-{n}");
            Box::pin(async move {
                cqrs.execute(&id, ())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))
            })
        }
    }

    pub async fn figures(&self, pool: &PgPool, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
        figures(CQRS, None, plan, pool, self.command("first".to_owned())).await
    }

    /// The baseline at `clients` for `duration`, unreported (the caller averages it); `run`
    /// must differ between calls at the same client count (the ids also name the count, so
    /// that every command meets a fresh aggregate).
    pub async fn measure(
        &self,
        run: &'static str,
        clients: usize,
        duration: std::time::Duration,
    ) -> anyhow::Result<Figure> {
        let run = format!("{run}-{clients}");
        crate::load::run(CQRS_BESIDE, None, clients, duration, 1.0, self.command(run)).await
    }
}
