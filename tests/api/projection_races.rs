//! The catch-up runner against the races that made event stores skip events: transactions that
//! commit out of order, one holding a reserved position open while later ones commit, rolled-back
//! transactions leaving permanent gaps, an idle store hit by a burst, and two service instances
//! running the same projection. Every committed event must be applied exactly once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ledger_projections::{Projection, ProjectionError, ProjectionRunner, StoredEvent};
use rand::Rng;
use sqlx::{PgConnection, PgPool};

use crate::helpers::{fresh_database, request_refund};

/// Records each applied position; the primary key makes a second application fail loudly.
/// With an `overtaker`, the first time it applies a batch another runner (here: another
/// connection) moves the checkpoint past the batch's first event before the batch commits: the
/// runner reads the checkpoint before taking the projection's lock, in one statement, and may
/// meet exactly this when another instance committed in between.
#[derive(Default)]
struct Seen {
    overtaker: Option<PgPool>,
    overtaken: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Projection for Seen {
    fn name(&self) -> &str {
        "seen"
    }
    fn aggregate_types(&self) -> &[&'static str] {
        &["Race"]
    }
    fn tables(&self) -> Vec<String> {
        vec!["seen".into()]
    }
    fn aside(&self) -> Arc<dyn Projection> {
        Arc::new(Seen::default())
    }
    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        if let Some(other) = &self.overtaker {
            if !self
                .overtaken
                .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                sqlx::query(
                    "UPDATE projection_checkpoints SET last_transaction_id = $2::text::xid8, \
                     last_position = $3 WHERE name = $1",
                )
                .bind(self.name())
                .bind(events[0].transaction_id.to_string())
                .bind(events[0].global_position)
                .execute(other)
                .await?;
            }
        }
        let positions: Vec<i64> = events.iter().map(|e| e.global_position).collect();
        sqlx::query("INSERT INTO seen (global_position) SELECT * FROM UNNEST($1::int8[])")
            .bind(positions)
            .execute(conn)
            .await?;
        Ok(())
    }
}

async fn write(pool: &PgPool, hold: Duration, commit: bool) {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Race', $1, 1, 'Tick', '1.0', '{}', '{}')",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .execute(&mut *tx)
    .await
    .expect("insert");
    tokio::time::sleep(hold).await;
    if commit {
        tx.commit().await.expect("commit");
    } else {
        tx.rollback().await.expect("rollback");
    }
}

/// A fresh database with the `seen` table.
async fn database_with_seen_table() -> (String, PgPool) {
    let url = fresh_database().await;
    let pool = connect_ledger::db::connect(&url).await.expect("pool");
    connect_ledger::db::migrate(&pool).await.expect("migrate");
    sqlx::query("CREATE TABLE seen (global_position bigint PRIMARY KEY)")
        .execute(&pool)
        .await
        .expect("seen table");
    (url, pool)
}

async fn committed(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT global_position FROM events WHERE aggregate_type = 'Race' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("events")
}

async fn seen(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT global_position FROM seen ORDER BY 1")
        .fetch_all(pool)
        .await
        .expect("seen")
}

#[tokio::test]
async fn no_event_is_skipped_or_applied_twice_under_racing_commits_and_two_instances() {
    let (url, pool) = database_with_seen_table().await;

    // Two service instances, each with its own pool, run the same projection.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for _ in 0..2 {
        let instance_pool = connect_ledger::db::connect(&url).await.expect("pool");
        let runner = ProjectionRunner::new(instance_pool, vec![Arc::new(Seen::default())]);
        runner.register().await.expect("register");
        let mut stop = stop_rx.clone();
        tokio::spawn(runner.run(async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }

    // A transaction reserves a low position and holds it open while later ones commit.
    let holder = tokio::spawn({
        let pool = pool.clone();
        async move { write(&pool, Duration::from_millis(1500), true).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Sixteen writers commit out of order; one in ten rolls back, leaving a permanent gap.
    let mut writers = Vec::new();
    for _ in 0..16 {
        let pool = pool.clone();
        writers.push(tokio::spawn(async move {
            for _ in 0..40 {
                let (hold, commit) = {
                    let mut rng = rand::thread_rng();
                    (
                        Duration::from_millis(rng.gen_range(0..15)),
                        rng.gen_range(0..10) != 0,
                    )
                };
                write(&pool, hold, commit).await;
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    holder.await.expect("holder");
    // The store goes idle, then takes a burst.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let burst: Vec<_> = (0..200)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { write(&pool, Duration::ZERO, true).await })
        })
        .collect();
    for task in burst {
        task.await.expect("burst");
    }

    let expected = committed(&pool).await;
    assert!(expected.len() > 700, "{}", expected.len());
    let mut applied = Vec::new();
    for _ in 0..400 {
        applied = seen(&pool).await;
        if applied.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    assert_eq!(
        applied, expected,
        "every committed event applied exactly once"
    );
    let positions: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(&pool)
        .await
        .expect("max");
    assert!(
        positions as usize > expected.len(),
        "rolled-back transactions left gaps"
    );
}

#[tokio::test]
async fn a_batch_whose_checkpoint_moved_under_it_is_rolled_back() {
    use ledger_projections::runner::CatchUp;
    let (_, pool) = database_with_seen_table().await;
    for _ in 0..3 {
        write(&pool, Duration::ZERO, true).await;
    }
    let projection = Arc::new(Seen {
        overtaker: Some(pool.clone()),
        ..Seen::default()
    });
    let runner = ProjectionRunner::new(pool.clone(), vec![projection.clone()]);
    runner.register().await.expect("register");

    // The horizon is the whole server's: another test's open transaction may hold these events
    // back for a moment, and a cycle then applies nothing (or only the older ones). So each
    // step looks again until it got somewhere.
    let mut overtaken = CatchUp::Applied(0);
    for _ in 0..200 {
        overtaken = runner
            .catch_up(projection.as_ref())
            .await
            .expect("catch up");
        if !matches!(overtaken, CatchUp::Applied(0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(overtaken, CatchUp::Busy), "{overtaken:?}");
    assert_eq!(
        seen(&pool).await,
        Vec::<i64>::new(),
        "the batch is rolled back"
    );

    let mut resumed = 0;
    for _ in 0..200 {
        match runner
            .catch_up(projection.as_ref())
            .await
            .expect("catch up")
        {
            CatchUp::Applied(n) => resumed += n,
            CatchUp::Busy => panic!("nothing else holds the projection"),
        }
        if resumed >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(resumed, 2, "the two events after the moved checkpoint");
    let all = committed(&pool).await;
    assert_eq!(
        seen(&pool).await,
        all[1..].to_vec(),
        "from the moved checkpoint on"
    );
}

/// Catches `projection` up with every event written so far. The horizon is the oldest open
/// transaction of the whole server, so a test running beside others may need a few tries.
async fn caught_up(
    pool: &PgPool,
    runner: &ProjectionRunner,
    projection: &dyn Projection,
) -> ledger_projections::Checkpoint {
    let last: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(pool)
        .await
        .expect("last event");
    for _ in 0..500 {
        runner.catch_up(projection).await.expect("catch up");
        let at = runner
            .checkpoint(projection.name())
            .await
            .expect("checkpoint");
        if at.position >= last {
            return at;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} did not catch up with event {last}", projection.name());
}

/// The refunds projection keeps the rows of its own committed batches and uses them only while
/// the checkpoint stands where its last batch left it (docs/decisions/0028). Here two instances
/// take turns: the second moves the refund on, and the first, applying the next batch, must
/// read the rows again rather than use what it kept.
#[tokio::test]
async fn kept_rows_are_not_used_once_another_instance_applied_a_batch() {
    use connect_ledger::ledger::Ledger;
    use ledger_aggregates::charge_ledger::{ChargeLedgerCommand, RefundStatus, StripeRefundAnswer};
    use ledger_aggregates::{EventMetadata, Source};
    use ledger_projections::refunds::RefundsProjection;

    let url = fresh_database().await;
    let pool = PgPool::connect(&url).await.expect("connect");
    connect_ledger::db::migrate(&pool).await.expect("migrate");
    let instance = || {
        let projection = Arc::new(RefundsProjection::live());
        (
            ProjectionRunner::new(pool.clone(), vec![projection.clone()]),
            projection,
        )
    };
    let ((first, first_refunds), (second, second_refunds)) = (instance(), instance());
    first.register().await.expect("register");
    let ledger = Ledger::new(&pool, ProjectionRunner::new(pool.clone(), Vec::new()));
    let meta = EventMetadata::new("test", Source::System, "t");
    let command = |command| ledger.charges.execute("ch_kept", command, &meta);

    command(request_refund("r1", 600)).await.expect("r1");
    caught_up(&pool, &first, first_refunds.as_ref()).await;
    command(ChargeLedgerCommand::RecordStripeAnswer {
        refund_id: "r1".into(),
        answer: StripeRefundAnswer {
            stripe_refund_id: "re_1".into(),
            status: RefundStatus::Succeeded,
            failure_reason: None,
        },
    })
    .await
    .expect("answer");
    let answered = caught_up(&pool, &second, second_refunds.as_ref()).await;
    // What the first instance kept is no answer for a request that needs the second's batch.
    assert_eq!(
        first_refunds.kept_refund("ch_kept", "r1", answered),
        None,
        "kept before the answer"
    );
    let kept = second_refunds
        .kept_refund("ch_kept", "r1", answered)
        .expect("the second instance's rows");
    assert_eq!(kept.status, "succeeded");
    command(request_refund("r2", 300)).await.expect("r2");
    caught_up(&pool, &first, first_refunds.as_ref()).await;

    let (refunded, pending): (i64, i64) =
        sqlx::query_as("SELECT refunded, pending FROM charges WHERE charge_id = 'ch_kept'")
            .fetch_one(&pool)
            .await
            .expect("charge");
    assert_eq!((refunded, pending), (600, 300), "r1 succeeded, r2 pending");
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT id, status FROM refunds ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("refunds");
    assert_eq!(
        statuses,
        [
            ("r1".to_owned(), "succeeded".to_owned()),
            ("r2".to_owned(), "requested".to_owned())
        ]
    );
}

/// The audit projection keeps the chain's last entry after its own committed batches and links
/// the next batch to it only while the checkpoint stands where that batch left it (decision 39).
/// Here two instances take turns: each must link to the entry the other wrote, and a batch read
/// at a checkpoint that has moved since writes nothing.
#[tokio::test]
async fn the_audit_chain_continues_from_the_entry_another_instance_wrote() {
    use connect_ledger::ledger::Ledger;
    use ledger_aggregates::{EventMetadata, Source};
    use ledger_projections::audit::{verify, AuditProjection};
    use ledger_projections::stored_event::STORED_EVENT_COLUMNS;
    use ledger_projections::Checkpoint;

    let url = fresh_database().await;
    let pool = PgPool::connect(&url).await.expect("connect");
    connect_ledger::db::migrate(&pool).await.expect("migrate");
    let instance = || {
        let projection = Arc::new(AuditProjection::live());
        (
            ProjectionRunner::new(pool.clone(), vec![projection.clone()]),
            projection,
        )
    };
    let ((first, first_audit), (second, second_audit)) = (instance(), instance());
    assert!(first_audit.one_statement_batches());
    first.register().await.expect("register");
    let ledger = Ledger::new(&pool, ProjectionRunner::new(pool.clone(), Vec::new()));
    let meta = EventMetadata::new("test", Source::System, "t");
    let command = |refund: &'static str| {
        ledger
            .charges
            .execute("ch_chain", request_refund(refund, 100), &meta)
    };

    command("r1").await.expect("r1");
    caught_up(&pool, &first, first_audit.as_ref()).await;
    command("r2").await.expect("r2");
    caught_up(&pool, &second, second_audit.as_ref()).await;
    command("r3").await.expect("r3");
    let at = caught_up(&pool, &first, first_audit.as_ref()).await;

    let entries: Vec<(i64, i64)> =
        sqlx::query_as("SELECT position, global_position FROM audit_entries ORDER BY position")
            .fetch_all(&pool)
            .await
            .expect("entries");
    let events: Vec<i64> = sqlx::query_scalar("SELECT global_position FROM events ORDER BY 1")
        .fetch_all(&pool)
        .await
        .expect("events");
    assert_eq!(
        entries,
        events
            .iter()
            .enumerate()
            .map(|(i, global)| (i as i64 + 1, *global))
            .collect::<Vec<_>>(),
        "one entry per event, gap-free"
    );
    let verification = verify(&pool).await.expect("verify");
    assert!(
        verification.ok,
        "chain broken at {:?}",
        verification.first_bad_position
    );
    assert_eq!(verification.checked, events.len() as i64);

    // The second instance kept the tip of r2's batch; r3's batch moved the checkpoint since.
    let stored: Vec<StoredEvent> = sqlx::query_as(&format!(
        "SELECT {STORED_EVENT_COLUMNS} FROM events ORDER BY global_position DESC LIMIT 1"
    ))
    .fetch_all(&pool)
    .await
    .expect("events");
    let stale: Vec<&StoredEvent> = stored.iter().collect();
    let mut conn = pool.acquire().await.expect("connection");
    let earlier = Checkpoint {
        position: at.position - 1,
        ..at
    };
    let moved = second_audit
        .apply_moving_checkpoint(&mut conn, &stale, earlier, at)
        .await
        .expect("stale batch");
    assert!(!moved, "the checkpoint is not where the batch was read");
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_entries")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(written, events.len() as i64, "nothing written");
}

/// A kept tip that no longer matches the table (here an entry written behind the projection's
/// back) fails the next batch on the primary key; the batch after it must read the tip from the
/// table and chain on from it, not fail for ever.
#[tokio::test]
async fn a_batch_that_failed_on_a_kept_tip_reads_the_tip_again() {
    use connect_ledger::ledger::Ledger;
    use ledger_aggregates::{EventMetadata, Source};
    use ledger_projections::audit::{entry_hash, AuditProjection};
    use ledger_projections::stored_event::STORED_EVENT_COLUMNS;

    let url = fresh_database().await;
    let pool = PgPool::connect(&url).await.expect("connect");
    connect_ledger::db::migrate(&pool).await.expect("migrate");
    let audit = Arc::new(AuditProjection::live());
    let runner = ProjectionRunner::new(pool.clone(), vec![audit.clone()]);
    runner.register().await.expect("register");
    let ledger = Ledger::new(&pool, ProjectionRunner::new(pool.clone(), Vec::new()));
    let meta = EventMetadata::new("test", Source::System, "t");
    ledger
        .charges
        .execute("ch_tip", request_refund("r1", 100), &meta)
        .await
        .expect("r1");
    caught_up(&pool, &runner, audit.as_ref()).await;
    let bogus: i64 = sqlx::query_scalar(
        "INSERT INTO audit_entries (position, global_position, recorded_at, aggregate_type, aggregate_id, \
           sequence, event_type, source, actor, hash) \
         SELECT max(position) + 1, -1, now(), 'Bogus', 'x', 0, 'Bogus', 'system', 'test', 'bogus' \
         FROM audit_entries RETURNING position",
    )
    .fetch_one(&pool)
    .await
    .expect("bogus entry");
    ledger
        .charges
        .execute("ch_tip", request_refund("r2", 100), &meta)
        .await
        .expect("r2");
    let last: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(&pool)
        .await
        .expect("last event");
    let mut failed = 0;
    for _ in 0..500 {
        match runner.catch_up(audit.as_ref()).await {
            Err(_) => failed += 1,
            Ok(_) => {
                let at = runner.checkpoint(audit.name()).await.expect("checkpoint");
                if at.position >= last {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        failed, 1,
        "one batch fails on the kept tip, the next reads it again"
    );
    let (global, hash): (i64, String) =
        sqlx::query_as("SELECT global_position, hash FROM audit_entries WHERE position = $1")
            .bind(bogus + 1)
            .fetch_one(&pool)
            .await
            .expect("the entry after the bogus one");
    let event: StoredEvent = sqlx::query_as(&format!(
        "SELECT {STORED_EVENT_COLUMNS} FROM events WHERE global_position = $1"
    ))
    .bind(global)
    .fetch_one(&pool)
    .await
    .expect("its event");
    assert_eq!(
        hash,
        entry_hash("bogus", &event),
        "chained on from the table's tip"
    );
}

/// The `refunds` projection writes a live batch in one statement outside any transaction, with
/// the checkpoint's compare-and-set in it (docs/decisions/0029): a batch read at a checkpoint
/// that has moved since writes nothing.
#[tokio::test]
async fn a_one_statement_batch_from_a_moved_checkpoint_writes_nothing() {
    use connect_ledger::ledger::Ledger;
    use ledger_aggregates::{EventMetadata, Source};
    use ledger_projections::refunds::RefundsProjection;
    use ledger_projections::stored_event::STORED_EVENT_COLUMNS;
    use ledger_projections::Checkpoint;

    let url = fresh_database().await;
    let pool = PgPool::connect(&url).await.expect("connect");
    connect_ledger::db::migrate(&pool).await.expect("migrate");
    let projection: Arc<dyn Projection> = Arc::new(RefundsProjection::live());
    assert!(projection.one_statement_batches());
    let runner = ProjectionRunner::new(pool.clone(), vec![Arc::clone(&projection)]);
    runner.register().await.expect("register");
    let ledger = Ledger::new(&pool, ProjectionRunner::new(pool.clone(), Vec::new()));
    let meta = EventMetadata::new("test", Source::System, "t");
    ledger
        .charges
        .execute("ch_moved", request_refund("r1", 100), &meta)
        .await
        .expect("r1");
    let at = caught_up(&pool, &runner, projection.as_ref()).await;
    ledger
        .charges
        .execute("ch_moved", request_refund("r2", 100), &meta)
        .await
        .expect("r2");
    let events: Vec<StoredEvent> = sqlx::query_as(&format!(
        "SELECT {STORED_EVENT_COLUMNS} FROM events WHERE aggregate_id = 'ch_moved' AND sequence > 2 \
         ORDER BY global_position"
    ))
    .fetch_all(&pool)
    .await
    .expect("events");
    let events: Vec<&StoredEvent> = events.iter().collect();
    let last = events.last().expect("r2's event");
    let to = Checkpoint {
        transaction_id: last.transaction_id,
        position: last.global_position,
    };
    let refunds = || async {
        sqlx::query_scalar::<_, String>("SELECT id FROM refunds ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("refunds")
    };

    let mut conn = pool.acquire().await.expect("connection");
    let stale = Checkpoint::default();
    let moved = projection
        .apply_moving_checkpoint(&mut conn, &events, stale, to)
        .await
        .expect("stale batch");
    assert!(!moved, "the checkpoint is not where the batch was read");
    assert_eq!(refunds().await, ["r1"], "nothing written");
    assert_eq!(
        runner
            .checkpoint(projection.name())
            .await
            .expect("checkpoint"),
        at
    );

    let moved = projection
        .apply_moving_checkpoint(&mut conn, &events, at, to)
        .await
        .expect("batch");
    assert!(moved);
    assert_eq!(refunds().await, ["r1", "r2"]);
    assert_eq!(
        runner
            .checkpoint(projection.name())
            .await
            .expect("checkpoint"),
        to
    );
}
