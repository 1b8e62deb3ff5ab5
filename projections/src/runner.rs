//! The catch-up runner: feeds each projection the event log in a global order, exactly once.
//!
//! ## Why not just `ORDER BY global_position`?
//! A `bigserial` is taken when a row is inserted, not when its transaction commits: position 11
//! can become visible before position 10. A reader that remembers "I have seen up to 11" would skip
//! 10 for ever. Instead we order by `(transaction_id, global_position)` and only read events whose
//! transaction id is below the oldest transaction still running (`pg_snapshot_xmin`). Every
//! transaction below that bound has ended, so nothing can appear behind the checkpoint later:
//! rolled-back transactions leave gaps that never block, and a long open transaction delays the
//! projection rather than making it skip.
//!
//! ## Exactly once
//! The projection's writes and its checkpoint move in one transaction. The transaction first takes
//! the projection's advisory lock without waiting (`pg_try_advisory_xact_lock`), so among several
//! service instances one runner works on a projection at a time and the others simply find it
//! busy. The checkpoint is read in the same statement as the lock, so in a snapshot taken just
//! before it; the batch therefore moves the checkpoint only from where it read it (a
//! compare-and-set), and a batch that finds it moved is rolled back (docs/decisions/0026).
//!
//! A projection that answers `one_statement_batches` (`refunds`, `audit`) has no transaction
//! around its live batch: its one write statement moves the checkpoint by the same
//! compare-and-set and writes its rows only if that moved it, and the lock is only tried in the
//! read (docs/decisions/0029 and 0039).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{watch, Notify};

use crate::stored_event::STORED_EVENT_COLUMNS;
use crate::{ProjectionError, StoredEvent};

/// How many events one transaction applies while following the log.
pub const LIVE_BATCH_SIZE: i64 = 1000;
/// How many events one transaction applies while rebuilding aside.
pub const REBUILD_BATCH_SIZE: i64 = 10_000;
/// How long a waiting command trusts this process's own progress signal before also reading the
/// checkpoint from the database (another instance may be the one applying).
const WAIT_POLL: Duration = Duration::from_millis(10);
/// The same while this process's loop is the one applying the projection: its progress signal
/// comes with each batch, so the database is read only as a safety net (measured: one such
/// read per refund under load with `WAIT_POLL`).
const WAIT_POLL_APPLYING_HERE: Duration = Duration::from_millis(50);
/// How often an idle runner looks for events written by other instances.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// How long a runner woken by new events lets more gather before it reads them, unless a
/// command or a read waits for them: one batch then carries the events of many commands, and
/// the read models still follow within about this long (docs/decisions/0032).
const GATHER: Duration = Duration::from_millis(20);
/// How soon a runner looks again when committed events wait behind an open transaction.
const BLOCKED_RETRY: Duration = Duration::from_millis(2);
/// How long a failing projection waits before trying again.
const FAILURE_BACKOFF: Duration = Duration::from_secs(1);
/// How often an idle projection moves its checkpoint past other types' events (a write).
const IDLE_ADVANCE: Duration = Duration::from_secs(1);

/// A read model fed from the event log.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The stable name under which its checkpoint is stored.
    fn name(&self) -> &str;
    /// The aggregate types whose events it reads.
    fn aggregate_types(&self) -> &[&'static str];
    /// Whether commands wait for it before answering (read-your-writes). The audit log does not
    /// serve command answers, so commands need not wait for it.
    fn read_your_writes(&self) -> bool {
        true
    }
    /// The tables it writes (rebuilt aside, then swapped in).
    fn tables(&self) -> Vec<String>;
    /// The non-unique indexes of its live tables that `apply` reads through. A rebuild creates
    /// these (and every unique index) before replaying, and the others only after the replay,
    /// in one pass over the finished table instead of one insertion per row.
    fn indexes_read_while_applying(&self) -> &[&'static str] {
        &[]
    }
    /// The same projection writing to `rebuild_`-prefixed tables under its own checkpoint.
    fn aside(&self) -> Arc<dyn Projection>;
    /// Applies a batch of events, in order, inside the runner's transaction. Implementations
    /// work set-based: read the rows the batch touches once, fold the events in memory, write
    /// each changed row once.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError>;
    /// [`Self::apply`] for a live batch that starts at the checkpoint `from`: a projection may
    /// then use rows it kept from its own committed batches while the checkpoint stands where
    /// they left it (docs/decisions/0028).
    async fn apply_from(
        &self,
        conn: &mut PgConnection,
        events: &[&StoredEvent],
        _from: Checkpoint,
    ) -> Result<(), ProjectionError> {
        self.apply(conn, events).await
    }
    /// Told after the commit of a live batch that applied `applied` events and moved the
    /// checkpoint from `from` to `to`.
    fn committed(&self, _from: Checkpoint, _to: Checkpoint, _applied: u64) {}
    /// Whether the live runner applies this projection's batches with
    /// [`Self::apply_moving_checkpoint`], outside any transaction (docs/decisions/0029).
    fn one_statement_batches(&self) -> bool {
        false
    }
    /// Applies a live batch and moves the checkpoint from `from` to `to` atomically, without
    /// the runner's transaction: false, with nothing written, when the checkpoint no longer
    /// stands at `from`. This default does it in a transaction of its own; a projection that
    /// answers `one_statement_batches` does it in one statement.
    async fn apply_moving_checkpoint(
        &self,
        conn: &mut PgConnection,
        events: &[&StoredEvent],
        from: Checkpoint,
        to: Checkpoint,
    ) -> Result<bool, ProjectionError> {
        use sqlx::Connection;
        let mut tx = conn.begin().await?;
        self.apply_from(&mut tx, events, from).await?;
        if !move_checkpoint(&mut tx, self.name(), from, to).await? {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// A place in the global order: events at or before it have been applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Checkpoint {
    pub transaction_id: i64,
    pub position: i64,
}

/// A projection's distance from the head of the log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Lag {
    pub projection: String,
    /// Events it has not applied yet.
    pub behind: i64,
    /// Age of the oldest of them, in seconds.
    pub oldest_seconds: f64,
}

/// What one call of [`ProjectionRunner::catch_up`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Applied this many events and found no more.
    Applied(u64),
    /// Another runner holds the projection right now.
    Busy,
}

pub struct ProjectionRunner {
    pool: PgPool,
    projections: Vec<Arc<dyn Projection>>,
    batch_size: i64,
    /// Each projection's signals, by name.
    lanes: HashMap<String, Lane>,
}

/// What this process knows and wants of one projection.
struct Lane {
    /// Wakes its loop: events of its types were committed here.
    wake: Notify,
    /// The checkpoint it is known to have reached (by this process, or found in the database).
    progress: watch::Sender<Checkpoint>,
    /// The furthest event a waiting command needs it to reach: while short of it, the loop
    /// looks again soon (the event may be committed behind a transaction still open).
    wanted: watch::Sender<Checkpoint>,
    /// When it last moved its checkpoint past other types' events.
    idle_advanced: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Whether this process's loop held the projection in its last cycle.
    applying_here: std::sync::atomic::AtomicBool,
    /// Whether its loop sleeps because a waiting command's event sits behind an open
    /// transaction; then `unblock` wakes it when one of this process's projections commits.
    blocked: std::sync::atomic::AtomicBool,
    unblock: Notify,
    /// When the first commit since its loop last started a cycle woke it: the gathering for
    /// the next cycle counts from then, not from the end of the cycle under way.
    woken_at: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Lane {
    fn new() -> Self {
        Self {
            wake: Notify::new(),
            progress: watch::Sender::new(Checkpoint::default()),
            wanted: watch::Sender::new(Checkpoint::default()),
            idle_advanced: std::sync::Mutex::new(None),
            applying_here: std::sync::atomic::AtomicBool::new(false),
            blocked: std::sync::atomic::AtomicBool::new(false),
            unblock: Notify::new(),
            woken_at: std::sync::Mutex::new(None),
        }
    }

    /// Wakes the loop, remembering when the first of these wake-ups came.
    fn wake(&self) {
        self.woken_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(tokio::time::Instant::now);
        self.wake.notify_waiters();
    }

    /// When the events the next cycle reads started to gather, and a fresh count from now.
    fn take_woken_at(&self) -> Option<tokio::time::Instant> {
        self.woken_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Whether an idle batch should move the checkpoint past other types' events now; if so,
    /// the time is taken.
    fn take_idle_advance(&self) -> bool {
        let mut last = self.idle_advanced.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        let due = last.is_none_or(|at| now.duration_since(at) >= IDLE_ADVANCE);
        if due {
            *last = Some(now);
        }
        due
    }

    fn reached(&self, checkpoint: Checkpoint) {
        self.progress.send_if_modified(|seen| {
            let moved = checkpoint > *seen;
            if moved {
                *seen = checkpoint;
            }
            moved
        });
    }
}

impl ProjectionRunner {
    pub fn new(pool: PgPool, projections: Vec<Arc<dyn Projection>>) -> Arc<Self> {
        Self::with_batch_size(pool, projections, LIVE_BATCH_SIZE)
    }

    /// A runner applying up to `batch_size` events per transaction.
    pub fn with_batch_size(
        pool: PgPool,
        projections: Vec<Arc<dyn Projection>>,
        batch_size: i64,
    ) -> Arc<Self> {
        let lanes = projections
            .iter()
            .map(|p| (p.name().to_owned(), Lane::new()))
            .collect();
        Arc::new(Self {
            pool,
            projections,
            batch_size: batch_size.max(1),
            lanes,
        })
    }

    pub fn projections(&self) -> &[Arc<dyn Projection>] {
        &self.projections
    }

    /// Tells every background loop that new events were committed here.
    pub fn nudge(&self) {
        for lane in self.lanes.values() {
            lane.wake();
        }
    }

    /// Tells the loops of the projections reading `aggregate_type` that its events were
    /// committed here; the others sleep on.
    pub fn nudge_type(&self, aggregate_type: &str) {
        for projection in &self.projections {
            if projection.aggregate_types().contains(&aggregate_type) {
                if let Some(lane) = self.lanes.get(projection.name()) {
                    lane.wake();
                }
            }
        }
    }

    /// Wakes the loops (other than `except`'s) sleeping because the event a waiting command
    /// needs sat behind an open transaction: it may have been `except`'s.
    fn wake_blocked(&self, except: &str) {
        for (name, lane) in &self.lanes {
            if name != except && lane.blocked.load(std::sync::atomic::Ordering::Acquire) {
                lane.unblock.notify_waiters();
            }
        }
    }

    /// Creates the checkpoint rows; idempotent.
    pub async fn register(&self) -> Result<(), ProjectionError> {
        for projection in &self.projections {
            sqlx::query(
                "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING",
            )
            .bind(projection.name())
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Applies every committed event the projection has not seen yet.
    pub async fn catch_up(&self, projection: &dyn Projection) -> Result<CatchUp, ProjectionError> {
        let mut applied = 0;
        let lane = self.lanes.get(projection.name());
        loop {
            let idle_advance = lane.is_none_or(Lane::take_idle_advance);
            let batch = if projection.one_statement_batches() {
                let mut conn = self.pool.acquire().await?;
                apply_batch(
                    &mut conn,
                    projection,
                    Batch::OneStatement,
                    idle_advance,
                    self.batch_size,
                )
                .await?
            } else {
                let mut tx = self.pool.begin().await?;
                let batch = apply_batch(
                    &mut tx,
                    projection,
                    Batch::SkipLocked,
                    idle_advance,
                    self.batch_size,
                )
                .await?;
                if batch.is_some() {
                    tx.commit().await?;
                }
                batch
            };
            let Some((n, from, reached)) = batch else {
                return Ok(CatchUp::Busy);
            };
            projection.committed(from, reached, n);
            if let Some(lane) = lane {
                lane.reached(reached);
            }
            // This transaction may have held back another projection's horizon: one waiting
            // for an event beyond it looks again now, not at its next retry.
            self.wake_blocked(projection.name());
            applied += n;
            if n < self.batch_size as u64 {
                break;
            }
        }
        Ok(CatchUp::Applied(applied))
    }

    /// Applies everything visible inside the caller's transaction (used by rebuild's swap).
    pub async fn apply_until_done(
        &self,
        conn: &mut PgConnection,
        projection: &dyn Projection,
    ) -> Result<u64, ProjectionError> {
        let mut applied = 0;
        loop {
            let n = apply_batch(conn, projection, Batch::Blocking, true, self.batch_size)
                .await?
                .map_or(0, |(n, _, _)| n);
            applied += n;
            if n < self.batch_size as u64 {
                return Ok(applied);
            }
        }
    }

    pub async fn checkpoint(&self, name: &str) -> Result<Checkpoint, ProjectionError> {
        let (transaction_id, position): (i64, i64) = sqlx::query_as(
            "SELECT last_transaction_id::text::bigint, last_position FROM projection_checkpoints WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .unwrap_or_default();
        Ok(Checkpoint {
            transaction_id,
            position,
        })
    }

    /// How far behind each projection is: events not yet applied, and the age in seconds of the
    /// oldest of them.
    pub async fn lag(&self) -> Result<Vec<Lag>, ProjectionError> {
        let mut lags = Vec::new();
        for projection in &self.projections {
            let types: Vec<String> = projection
                .aggregate_types()
                .iter()
                .map(|t| (*t).to_owned())
                .collect();
            let at = self.checkpoint(projection.name()).await?;
            let (behind, age): (i64, Option<f64>) = sqlx::query_as(
                "SELECT count(*), EXTRACT(EPOCH FROM now() - min(recorded_at))::float8 FROM events \
                 WHERE transaction_id >= $1::text::xid8 \
                   AND (transaction_id, global_position) > ($1::text::xid8, $2) \
                   AND aggregate_type = ANY($3)",
            )
            .bind(at.transaction_id.to_string())
            .bind(at.position)
            .bind(&types)
            .fetch_one(&self.pool)
            .await?;
            lags.push(Lag {
                projection: projection.name().to_owned(),
                behind,
                oldest_seconds: age.unwrap_or(0.0),
            });
        }
        Ok(lags)
    }

    /// The place of the latest event of one aggregate, if it has any.
    pub async fn latest_of(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Checkpoint>, ProjectionError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT transaction_id::text::bigint, global_position FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence DESC LIMIT 1",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(transaction_id, position)| Checkpoint {
            transaction_id,
            position,
        }))
    }

    /// Waits until every read-your-writes projection reading `aggregate_type` has applied the
    /// aggregate's latest event (for the HTTP API's answers). Returns false on timeout.
    pub async fn wait_for_aggregate(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        timeout: Duration,
    ) -> Result<bool, ProjectionError> {
        let Some(target) = self.latest_of(aggregate_type, aggregate_id).await? else {
            return Ok(true);
        };
        self.wait_for(aggregate_type, target, timeout).await
    }

    /// Waits until every read-your-writes projection reading `aggregate_type` has applied every
    /// event of that type committed before the call, so that a read follows every answer given
    /// before it. One statement reads the newest such event and whether the projections'
    /// checkpoints stand at or past it; only when one does not is there anything to wait for.
    /// Returns false on timeout.
    pub async fn wait_for_head(
        &self,
        aggregate_type: &str,
        timeout: Duration,
    ) -> Result<bool, ProjectionError> {
        let names: Vec<&str> = self
            .projections
            .iter()
            .filter(|p| p.read_your_writes() && p.aggregate_types().contains(&aggregate_type))
            .map(|p| p.name())
            .collect();
        if names.is_empty() {
            return Ok(true);
        }
        // The newest event of the type in the checkpoints' order, found by a backward walk of
        // the `(transaction_id, global_position)` index.
        let head: Option<(i64, i64, Option<bool>)> = sqlx::query_as(
            "SELECT h.transaction_id::text::bigint, h.global_position, \
               (SELECT bool_and((c.last_transaction_id, c.last_position) >= (h.transaction_id, h.global_position)) \
                FROM projection_checkpoints c WHERE c.name = ANY($2)) \
             FROM (SELECT transaction_id, global_position FROM events WHERE aggregate_type = $1 \
                   ORDER BY transaction_id DESC, global_position DESC LIMIT 1) h",
        )
        .bind(aggregate_type)
        .bind(&names)
        .fetch_optional(&self.pool)
        .await?;
        match head {
            None | Some((_, _, Some(true))) => Ok(true),
            Some((transaction_id, position, _)) => {
                let target = Checkpoint {
                    transaction_id,
                    position,
                };
                self.wait_for(aggregate_type, target, timeout).await
            }
        }
    }

    /// Waits until every read-your-writes projection reading `aggregate_type` has applied the
    /// event at `target`. Returns false on timeout.
    pub async fn wait_for(
        &self,
        aggregate_type: &str,
        target: Checkpoint,
        timeout: Duration,
    ) -> Result<bool, ProjectionError> {
        let waited_for = self
            .projections
            .iter()
            .filter(|p| p.read_your_writes() && p.aggregate_types().contains(&aggregate_type))
            .filter_map(|p| Some((p, self.lanes.get(p.name())?)));
        for (_, lane) in waited_for.clone() {
            lane.wanted.send_if_modified(|wanted| {
                let further = target > *wanted;
                if further {
                    *wanted = target;
                }
                further
            });
        }
        self.nudge_type(aggregate_type);
        let deadline = tokio::time::Instant::now() + timeout;
        for (projection, lane) in waited_for {
            let mut local = lane.progress.subscribe();
            loop {
                if *local.borrow_and_update() >= target {
                    break;
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Ok(false);
                }
                // Woken by this process's runner as soon as its batch commits; otherwise the
                // database says whether another instance got there.
                let poll = if lane
                    .applying_here
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    WAIT_POLL_APPLYING_HERE
                } else {
                    WAIT_POLL
                };
                let wait = poll.min(deadline - now);
                if tokio::time::timeout(wait, local.changed()).await.is_err()
                    && self.checkpoint(projection.name()).await? >= target
                {
                    break;
                }
                // Not `Lane::wake`: a waiter makes the loop skip its gathering anyway.
                lane.wake.notify_waiters();
            }
        }
        Ok(true)
    }

    /// Runs every projection until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()> + Send) {
        let mut loops = tokio::task::JoinSet::new();
        for projection in self.projections.iter().cloned() {
            let runner = Arc::clone(&self);
            loops.spawn(async move { runner.run_one(projection).await });
        }
        shutdown.await;
        loops.shutdown().await;
    }

    async fn run_one(&self, projection: Arc<dyn Projection>) {
        let Some(lane) = self.lanes.get(projection.name()) else {
            return;
        };
        loop {
            let notified = lane.wake.notified();
            lane.take_woken_at();
            let cycle = self.catch_up(projection.as_ref()).await;
            let held = matches!(cycle, Ok(CatchUp::Applied(_)));
            lane.applying_here
                .store(held, std::sync::atomic::Ordering::Relaxed);
            match cycle {
                Ok(_) => {
                    // A command waits for an event not applied yet: it is committed, but may sit
                    // behind a transaction still open below it (the horizon), so look again soon
                    // rather than at the next poll.
                    let behind = *lane.wanted.borrow() > *lane.progress.borrow();
                    if behind {
                        let unblocked = lane.unblock.notified();
                        lane.blocked
                            .store(true, std::sync::atomic::Ordering::Release);
                        let _ = tokio::time::timeout(BLOCKED_RETRY, async {
                            tokio::select! {
                                _ = notified => {}
                                _ = unblocked => {}
                            }
                        })
                        .await;
                        lane.blocked
                            .store(false, std::sync::atomic::Ordering::Release);
                    } else {
                        let mut waiters = lane.wanted.subscribe();
                        waiters.borrow_and_update();
                        if tokio::time::timeout(IDLE_POLL, notified).await.is_ok() {
                            // Let more events gather, for GATHER from the first commit that
                            // woke it (it may have come while the last cycle ran), unless
                            // someone waits for them already or starts to meanwhile.
                            let awaited = *lane.wanted.borrow() > *lane.progress.borrow();
                            if !awaited {
                                let since = lane
                                    .take_woken_at()
                                    .unwrap_or_else(tokio::time::Instant::now);
                                let _ = tokio::time::timeout_at(since + GATHER, waiters.changed())
                                    .await;
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(projection = projection.name(), %error, "projection failed; retrying");
                    tokio::time::sleep(FAILURE_BACKOFF).await;
                }
            }
        }
    }
}

/// The namespace of the projections' advisory locks.
const LOCK_CLASS: i32 = 0x4c45_4447; // "LEDG"

/// Takes the projection's transaction-scoped lock: waits for it, or with `skip_locked` gives up
/// at once (false) when another runner holds it. An advisory lock, unlike a row lock, does not
/// give the transaction an id, so the runner's reads and folding do not hold back the horizon
/// other projections read below; only its final writes do.
pub async fn lock_projection(
    conn: &mut PgConnection,
    name: &str,
    skip_locked: bool,
) -> Result<bool, sqlx::Error> {
    if skip_locked {
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(name)
            .fetch_one(conn)
            .await
    } else {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(name)
            .execute(conn)
            .await?;
        Ok(true)
    }
}

/// How a batch holds its projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    /// Inside the caller's transaction, under the projection's lock, tried: `None` when another
    /// runner holds it.
    SkipLocked,
    /// Inside the caller's transaction, waiting for the projection's lock (a rebuild's swap).
    Blocking,
    /// Outside any transaction (`Projection::apply_moving_checkpoint`): the read statement
    /// still tries the lock, only to leave a projection someone holds alone, and the
    /// checkpoint's compare-and-set, in the write, is what keeps the batch exactly-once.
    OneStatement,
}

/// One batch: how many events it applied, the checkpoint it started from and the one the
/// projection stands at after it, or `None` when another runner holds the projection (or, for
/// a one-statement batch, moved it meanwhile). With `idle_advance`, a batch that finds none of
/// its types' events moves the checkpoint past the others' (a write); without, it writes
/// nothing. Transactional batches leave the commit to the caller.
async fn apply_batch(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    batch: Batch,
    idle_advance: bool,
    batch_size: i64,
) -> Result<Option<(u64, Checkpoint, Checkpoint)>, ProjectionError> {
    let types: Vec<String> = projection
        .aggregate_types()
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    let (horizon, checkpoint, read) = if batch != Batch::Blocking {
        match first_statement(&mut *conn, projection.name(), &types, batch_size).await? {
            Some((horizon, checkpoint, events)) => (horizon, checkpoint, Some(events)),
            None => return Ok(None),
        }
    } else {
        let horizon = horizon(&mut *conn).await?;
        lock_projection(&mut *conn, projection.name(), false).await?;
        // Read after the lock: the previous holder's checkpoint is committed by then.
        let checkpoint: Option<(i64, i64)> = sqlx::query_as(
            "SELECT last_transaction_id::text::bigint, last_position FROM projection_checkpoints \
             WHERE name = $1",
        )
        .bind(projection.name())
        .fetch_optional(&mut *conn)
        .await?;
        let Some(checkpoint) = checkpoint else {
            return Ok(None);
        };
        (horizon, checkpoint, None)
    };
    let (last_txid, last_position) = checkpoint;
    let current = Checkpoint {
        transaction_id: last_txid,
        position: last_position,
    };
    let events = match read {
        Some(events) => events,
        None => read_events(&mut *conn, current, horizon, &types, batch_size).await?,
    };
    let mut next = events.last().map(|last| Checkpoint {
        transaction_id: last.transaction_id,
        position: last.global_position,
    });
    if events.is_empty() && idle_advance {
        // Nothing below the horizon is for this projection: move past the other aggregate
        // types' events. Otherwise a projection of a rare type (apps) would keep its
        // checkpoint at its own last event, and every later read from it would walk all the
        // events written since (measured: 2.2 ms per look under refund load, growing).
        let tail: Option<(i64, i64)> = sqlx::query_as(
            "SELECT transaction_id::text::bigint, global_position FROM events \
             WHERE transaction_id < $1::text::xid8 \
             ORDER BY events.transaction_id DESC, events.global_position DESC LIMIT 1",
        )
        .bind(horizon.to_string())
        .fetch_optional(&mut *conn)
        .await?;
        let tail = tail.map(|(transaction_id, position)| Checkpoint {
            transaction_id,
            position,
        });
        next = next.max(tail);
    }
    let Some(next) = next.filter(|next| *next > current) else {
        return Ok(Some((0, current, current)));
    };
    let events: Vec<&StoredEvent> = events.iter().collect();
    let moved = match (batch, events.is_empty()) {
        (Batch::OneStatement, false) => {
            projection
                .apply_moving_checkpoint(&mut *conn, &events, current, next)
                .await?
        }
        (_, empty) => {
            if !empty {
                projection.apply_from(&mut *conn, &events, current).await?;
            }
            move_checkpoint(&mut *conn, projection.name(), current, next).await?
        }
    };
    if !moved {
        // Another runner moved it since this batch read it (before the lock was taken, or, for a
        // one-statement batch, before the write): what it applied, this batch applied again.
        // Rolled back by the caller (a one-statement batch wrote nothing): as busy when the
        // checkpoint was read before the lock, as an error when after it.
        if batch != Batch::Blocking {
            return Ok(None);
        }
        return Err(ProjectionError::CheckpointMoved(
            projection.name().to_owned(),
        ));
    }
    Ok(Some((events.len() as u64, current, next)))
}

/// A live batch's first statement, one round trip: the horizon (read before the lock is tried,
/// as in [`horizon`]), the lock, the checkpoint, the batch's commit made asynchronous, and the
/// events after the checkpoint below the horizon. `None` when another runner holds the lock.
///
/// The commit is asynchronous because a projection is derived from events already durable, and
/// its rows move with its checkpoint: a crash that loses the last batches only sends the
/// projection back to apply them again (docs/decisions/0023). The checkpoint is read in the
/// statement's snapshot, taken before the lock: a runner that committed in between is caught
/// by the checkpoint's compare-and-set (docs/decisions/0026). The events are read only once
/// the lock is held (the `locked` condition in the lateral join, evaluated after the lock).
async fn first_statement(
    conn: &mut PgConnection,
    name: &str,
    types: &[String],
    limit: i64,
) -> Result<Option<(i64, (i64, i64), Vec<StoredEvent>)>, sqlx::Error> {
    use sqlx::{FromRow, Row};
    let rows = sqlx::query(&format!(
        "WITH batch AS MATERIALIZED ( \
           SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon, \
             pg_try_advisory_xact_lock($1, hashtext($2)) AS locked, \
             set_config('synchronous_commit', 'off', true) AS asynchronous, \
             last_transaction_id, last_position \
           FROM projection_checkpoints WHERE name = $2) \
         SELECT batch.horizon::text::bigint AS batch_horizon, batch.locked AS batch_locked, \
           batch.last_transaction_id::text::bigint AS batch_transaction_id, \
           batch.last_position AS batch_position, unread.* \
         FROM batch LEFT JOIN LATERAL ( \
           SELECT {STORED_EVENT_COLUMNS} FROM events \
           WHERE batch.locked \
             AND (events.transaction_id, events.global_position) \
               > (batch.last_transaction_id, batch.last_position) \
             AND events.transaction_id < batch.horizon \
             AND events.aggregate_type = ANY($3) \
           ORDER BY events.transaction_id, events.global_position LIMIT $4) unread ON true"
    ))
    .bind(LOCK_CLASS)
    .bind(name)
    .bind(types)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    if !first.try_get::<bool, _>("batch_locked")? {
        return Ok(None);
    }
    let horizon: i64 = first.try_get("batch_horizon")?;
    let checkpoint: (i64, i64) = (
        first.try_get("batch_transaction_id")?,
        first.try_get("batch_position")?,
    );
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        // The lateral join's one row of nulls when there is nothing to read.
        if row.try_get::<Option<i64>, _>("global_position")?.is_some() {
            events.push(StoredEvent::from_row(row)?);
        }
    }
    Ok(Some((horizon, checkpoint, events)))
}

/// The oldest transaction still running: every event of a transaction below it is committed
/// or gone, so nothing can appear behind a checkpoint taken below it.
pub(crate) async fn horizon(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        .fetch_one(conn)
        .await
}

/// Up to `limit` events of `types` after `after` and below `horizon`, in the global order.
pub(crate) async fn read_events(
    conn: &mut PgConnection,
    after: Checkpoint,
    horizon: i64,
    types: &[String],
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    // `ORDER BY events.…`: unqualified, `transaction_id` would name the selected bigint cast and
    // PostgreSQL would sort everything past the checkpoint on each batch instead of walking the
    // (transaction_id, global_position) index (measured: 1 s instead of 5 ms per 10,000 events).
    sqlx::query_as(&format!(
        "SELECT {STORED_EVENT_COLUMNS} FROM events \
         WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
           AND transaction_id < $3::text::xid8 \
           AND aggregate_type = ANY($4) \
         ORDER BY events.transaction_id, events.global_position LIMIT $5"
    ))
    .bind(after.transaction_id.to_string())
    .bind(after.position)
    .bind(horizon.to_string())
    .bind(types)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The `moved` query of a one-statement batch (decisions 29 and 39): moves the checkpoint as
/// [`move_checkpoint`] does, from its five parameters numbered from `$first` in the same order
/// (the name, `from`'s transaction id and position, `to`'s). The batch guards its writes with
/// `WHERE EXISTS (SELECT 1 FROM moved)` and ends with [`ONE_STATEMENT_RESULT`].
pub(crate) fn moved_checkpoint_query(first: usize) -> String {
    let [name, from_transaction, from_position, to_transaction, to_position] =
        std::array::from_fn(|i| first + i);
    format!(
        "moved AS (UPDATE projection_checkpoints SET last_transaction_id = ${to_transaction}::text::xid8, \
           last_position = ${to_position}, updated_at = now() \
           WHERE name = ${name} AND last_transaction_id = ${from_transaction}::text::xid8 \
             AND last_position = ${from_position} \
           RETURNING 1)"
    )
}

/// What a one-statement batch selects: whether it moved the checkpoint, and (true) that its
/// commit is asynchronous, as the runner's transactions are (docs/decisions/0023).
pub(crate) const ONE_STATEMENT_RESULT: &str =
    "SELECT EXISTS (SELECT 1 FROM moved), set_config('synchronous_commit', 'off', true) = 'off'";

/// Moves the projection's checkpoint from `from` to `to`, inside the caller's transaction;
/// false when it no longer stands at `from` (another runner moved it: a compare-and-set, which
/// PostgreSQL evaluates on the row's latest committed version, waiting for a writer still open).
async fn move_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    from: Checkpoint,
    to: Checkpoint,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "UPDATE projection_checkpoints SET last_transaction_id = $4::text::xid8, \
         last_position = $5, updated_at = now() \
         WHERE name = $1 AND last_transaction_id = $2::text::xid8 AND last_position = $3",
    )
    .bind(name)
    .bind(from.transaction_id.to_string())
    .bind(from.position)
    .bind(to.transaction_id.to_string())
    .bind(to.position)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(moved == 1)
}

/// Moves the projection's checkpoint, inside the caller's transaction.
pub(crate) async fn save_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    reached: Checkpoint,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints SET last_transaction_id = $2::text::xid8, \
         last_position = $3, updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(reached.transaction_id.to_string())
    .bind(reached.position)
    .execute(conn)
    .await
    .map(drop)
}
