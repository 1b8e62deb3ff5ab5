//! The command bus's event repository: one statement per command, in sequence order, and a
//! second writer of the same sequence refused as an optimistic-concurrency conflict.

use connect_ledger::event_store::EventRepository;
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use ledger_aggregates::app_connection::AppConnection;
use serde_json::json;

use crate::helpers::fresh_database;

fn event(id: &str, sequence: usize, kind: &str) -> SerializedEvent {
    SerializedEvent::new(
        id.to_owned(),
        sequence,
        "AppConnection".to_owned(),
        kind.to_owned(),
        "1.0".to_owned(),
        json!({ kind: {"n": sequence} }),
        json!({"actor": "test"}),
    )
}

#[tokio::test]
async fn a_command_appends_in_order_at_once_and_a_second_writer_conflicts() {
    let url = fresh_database().await;
    let pool = connect_ledger::db::connect(&url).await.expect("pool");
    connect_ledger::db::migrate(&pool).await.expect("migrate");
    let repository = EventRepository::new(pool.clone());

    let first: Vec<SerializedEvent> = (1..=3).map(|n| event("shop", n, "Tested")).collect();
    repository
        .persist::<AppConnection>(&first, None)
        .await
        .expect("append");
    let stored: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT sequence, global_position, transaction_id::text FROM events ORDER BY global_position",
    )
    .fetch_all(&pool)
    .await
    .expect("events");
    let sequences: Vec<i64> = stored.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(
        sequences,
        vec![1, 2, 3],
        "global order follows the sequence"
    );
    assert!(
        stored.iter().all(|(_, _, tx)| *tx == stored[0].2),
        "one transaction"
    );

    // Another writer that loaded the aggregate at sequence 2 also tries to write sequence 3
    // (and 4): nothing of it is stored.
    let late = vec![event("shop", 3, "Other"), event("shop", 4, "Other")];
    let refused = repository.persist::<AppConnection>(&late, None).await;
    assert!(matches!(
        refused,
        Err(PersistenceError::OptimisticLockError)
    ));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(count, 3);
    let read = repository
        .get_events::<AppConnection>("shop")
        .await
        .expect("read");
    assert_eq!(read.len(), 3);
    assert_eq!(read[2].payload, json!({"Tested": {"n": 3}}));
}

/// Inside a request's recording (`connect_ledger::writes`), an append reports the place of its
/// last event, which the request's read-your-writes wait then targets; outside one, nothing.
#[tokio::test]
async fn an_append_reports_the_place_of_its_last_event_to_the_request() {
    use connect_ledger::writes;
    let url = fresh_database().await;
    let pool = connect_ledger::db::connect(&url).await.expect("pool");
    connect_ledger::db::migrate(&pool).await.expect("migrate");
    let repository = EventRepository::new(pool.clone());

    let first: Vec<SerializedEvent> = (1..=2).map(|n| event("shop", n, "Tested")).collect();
    repository
        .persist::<AppConnection>(&first, None)
        .await
        .expect("append outside a recording");
    assert_eq!(writes::appended("AppConnection", "shop"), None);

    let (reported, other) = writes::recording(async {
        let more: Vec<SerializedEvent> = (3..=5).map(|n| event("shop", n, "Tested")).collect();
        repository
            .persist::<AppConnection>(&more, None)
            .await
            .expect("append");
        (
            writes::appended("AppConnection", "shop"),
            writes::appended("AppConnection", "other"),
        )
    })
    .await;
    let last: (i64, i64) = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM events \
         ORDER BY global_position DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("last event");
    let reported = reported.expect("reported");
    assert_eq!((reported.transaction_id, reported.position), last);
    assert_eq!(other, None, "only the aggregate appended to");
}

/// A command decided on a state the caller held (`Versioned`) while another writer moved the
/// aggregate on is decided again on a fresh load: here the stale state would still allow the
/// refund, the fresh one does not.
#[tokio::test]
async fn a_command_on_a_stale_known_state_is_decided_again_on_fresh_state() {
    use connect_ledger::ledger::LedgerError;
    use ledger_aggregates::{EventMetadata, Source};

    use crate::helpers::request_refund;

    let app = crate::helpers::spawn_app().await;
    let ledger = app.ledger();
    let meta = EventMetadata::new("test", Source::System, "t");
    let known = ledger
        .charges
        .execute_versioned("ch_stale", None, request_refund("r1", 600), |_| None, &meta)
        .await
        .expect("first refund");
    assert_eq!(known.sequence, 2, "charge observed, refund requested");
    ledger
        .charges
        .execute("ch_stale", request_refund("r2", 300), &meta)
        .await
        .expect("another writer");
    let stale = ledger
        .charges
        .execute_versioned(
            "ch_stale",
            Some(known),
            request_refund("r3", 200),
            |_| None,
            &meta,
        )
        .await;
    assert!(
        matches!(stale, Err(LedgerError::Domain(_))),
        "only 100 is left once r2 is seen: {stale:?}"
    );
    // The same from the empty ledger a refund assumes for a charge the key claim found without
    // events (src/refunds/accept.rs), when another request's events came in since.
    let empty = connect_ledger::ledger::Versioned::loaded(
        ledger_aggregates::charge_ledger::ChargeLedger::default(),
        0,
    );
    let assumed_empty = ledger
        .charges
        .execute_versioned(
            "ch_stale",
            Some(empty),
            request_refund("r4", 200),
            |_| None,
            &meta,
        )
        .await;
    assert!(
        matches!(assumed_empty, Err(LedgerError::Domain(_))),
        "only 100 is left: {assumed_empty:?}"
    );
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = 'ch_stale'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(events, 3);
}

/// `SHOW synchronous_commit` on the one connection of `pool`.
async fn synchronous_commit(pool: &sqlx::PgPool) -> String {
    sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(pool)
        .await
        .expect("show synchronous_commit")
}

/// Projection batches and key claims commit without waiting for a flush (decisions 23 and 25),
/// each only for its own transaction: the pooled connection they ran on stays synchronous for
/// the event appends that may come next on it. Run on a one-connection pool, so the check
/// reads the very connection they used.
#[tokio::test]
async fn asynchronous_commits_leave_their_pooled_connection_synchronous() {
    use std::sync::Arc;

    use connect_ledger::ledger::Ledger;
    use connect_ledger::refunds::{RefundRequest, RefundService};
    use ledger_aggregates::charge_ledger::RefundReason;
    use ledger_aggregates::{EventMetadata, Source};
    use ledger_projections::ProjectionRunner;

    let url = fresh_database().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("pool");
    connect_ledger::db::migrate(&pool).await.expect("migrate");
    assert_eq!(synchronous_commit(&pool).await, "on");
    let runner = ProjectionRunner::new(pool.clone(), connect_ledger::startup::projections());
    runner.register().await.expect("register");

    // A key claim: the request then fails (no Stripe here) and releases its key.
    let ledger = Arc::new(Ledger::new(&pool, Arc::clone(&runner)));
    let refunds = RefundService::new(pool.clone(), ledger, None);
    let request = RefundRequest {
        app: "shop".to_owned(),
        purchase_id: "pur_1".to_owned(),
        charge_id: "ch_1".to_owned(),
        approval_id: "appr_1".to_owned(),
        amount: Some(100),
        reason: RefundReason::RequestedByCustomer,
        requested_by: "test".to_owned(),
    };
    let meta = EventMetadata::new("test", Source::System, "req_1");
    assert!(refunds.accept(request, &meta).await.is_err());
    assert_eq!(synchronous_commit(&pool).await, "on", "after a key claim");

    // A projection batch that applies and commits.
    repository_with_one_event(&pool).await;
    for projection in runner.projections() {
        runner
            .catch_up(projection.as_ref())
            .await
            .expect("catch up");
    }
    let (applied,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_entries")
        .fetch_one(&pool)
        .await
        .expect("audit");
    assert_eq!(applied, 1, "the batch was applied");
    assert_eq!(
        synchronous_commit(&pool).await,
        "on",
        "after projection batches"
    );
}

async fn repository_with_one_event(pool: &sqlx::PgPool) {
    EventRepository::new(pool.clone())
        .persist::<AppConnection>(
            &[SerializedEvent::new(
                "shop".to_owned(),
                1,
                "AppConnection".to_owned(),
                "AppRegistered".to_owned(),
                "1.0".to_owned(),
                json!({"AppRegistered": {"app_id": "0b7c2a52-6a8e-4a4e-9a55-0d1f3c7f1a10", "slug": "shop", "name": "Shop"}}),
                json!({"actor": "test", "source": "system"}),
            )],
            None,
        )
        .await
        .expect("append");
}

/// The appends' own connections (docs/decisions/0036): reused after a statement the server
/// answered or refused, dropped after one cancelled half way or cut off, replaced when found
/// dead after a while idle.
#[tokio::test]
async fn append_connections_are_reused_only_when_left_ready() {
    use connect_ledger::direct_connections::DirectConnections;
    use std::time::Duration;

    let url = fresh_database().await;
    let pool = connect_ledger::db::connect(&url).await.expect("pool");
    let direct = DirectConnections::for_pool(&pool);
    async fn backend(direct: &DirectConnections) -> i32 {
        let mut conn = direct.checkout().await.expect("checkout");
        let outcome = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await;
        conn.finish(outcome).expect("pid")
    }

    let first = backend(&direct).await;
    assert_eq!(
        backend(&direct).await,
        first,
        "an answered statement keeps it"
    );

    let mut conn = direct.checkout().await.expect("checkout");
    let outcome = sqlx::query("SELECT 1 / 0").execute(&mut *conn).await;
    let refused = conn.finish(outcome).expect_err("division by zero");
    assert!(matches!(refused, sqlx::Error::Database(_)), "{refused:?}");
    assert_eq!(
        backend(&direct).await,
        first,
        "a refused statement keeps it"
    );

    let mut conn = direct.checkout().await.expect("checkout");
    let cancelled = tokio::time::timeout(
        Duration::from_millis(200),
        sqlx::query("SELECT pg_sleep(30)").execute(&mut *conn),
    )
    .await;
    assert!(cancelled.is_err(), "the sleep was cut short");
    drop(conn);
    let second = backend(&direct).await;
    assert_ne!(
        second, first,
        "a cancelled statement's connection is not reused"
    );

    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(second)
        .fetch_one(&pool)
        .await
        .expect("terminate");
    assert!(terminated);
    // Used at once, the dead connection fails its statement and is dropped, not kept.
    let mut conn = direct.checkout().await.expect("checkout");
    let outcome = sqlx::query("SELECT 1").execute(&mut *conn).await;
    assert!(conn.finish(outcome).is_err(), "the server hung up");
    let third = backend(&direct).await;
    assert!(third != second && third != first);

    // Found dead after a while idle, it is replaced before the statement is sent.
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(third)
        .execute(&pool)
        .await
        .expect("terminate");
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    let fourth = backend(&direct).await;
    assert_ne!(fourth, third);
}
