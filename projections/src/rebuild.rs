//! Rebuilding a projection from the whole event log without taking it away from readers: build
//! it aside in `rebuild_*` tables under its own checkpoint, then, in one transaction that holds the
//! live projection's checkpoint, apply the last events and swap the tables by renaming.

use std::sync::Arc;

use sqlx::PgPool;

use crate::runner::{
    horizon, lock_projection, read_events, save_checkpoint, Checkpoint, ProjectionRunner,
    REBUILD_BATCH_SIZE,
};
use crate::{Projection, ProjectionError, StoredEvent};

pub const ASIDE_PREFIX: &str = "rebuild_";
pub const ASIDE_SUFFIX: &str = ":rebuild";

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RebuildReport {
    /// Events replayed into the new tables.
    pub events: u64,
}

/// An index of a live table, recreated on its aside copy.
#[derive(sqlx::FromRow)]
struct IndexSpec {
    name: String,
    /// `CREATE [UNIQUE] INDEX name ON table …`, as PostgreSQL prints it.
    definition: String,
    is_unique: bool,
    /// `p` (primary key) or `u` (unique constraint) when the index backs a constraint.
    constraint_type: Option<String>,
}

impl IndexSpec {
    fn aside_name(&self) -> String {
        format!("{ASIDE_PREFIX}{}", self.name)
    }

    /// The same index on `aside_table`, under its aside name.
    fn create_on(&self, aside_table: &str) -> Result<String, ProjectionError> {
        let using = self.definition.find(" USING ").ok_or_else(|| {
            ProjectionError::Rebuild(format!("unexpected index definition: {}", self.definition))
        })?;
        let unique = if self.is_unique { "UNIQUE " } else { "" };
        Ok(format!(
            "CREATE {unique}INDEX {} ON {aside_table}{}",
            self.aside_name(),
            &self.definition[using..]
        ))
    }
}

async fn indexes_of(pool: &PgPool, table: &str) -> Result<Vec<IndexSpec>, sqlx::Error> {
    sqlx::query_as(
        "SELECT i.relname::text AS name, pg_get_indexdef(x.indexrelid) AS definition, x.indisunique AS is_unique, \
           (SELECT c.contype::text FROM pg_constraint c WHERE c.conindid = x.indexrelid LIMIT 1) AS constraint_type \
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
         WHERE x.indrelid = $1::regclass ORDER BY i.relname",
    )
    .bind(table)
    .fetch_all(pool)
    .await
}

/// Fresh statistics, so the catch-up reads plan an ordered index walk even right after a bulk
/// load (a few hundred milliseconds: ANALYZE samples).
async fn analyze_events(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("ANALYZE events").execute(pool).await.map(drop)
}

/// Rebuilds `live`; `progress` hears the running count of replayed events. Two rebuilds of one
/// projection never run at once (the second is refused).
pub async fn rebuild(
    pool: &PgPool,
    live: Arc<dyn Projection>,
    progress: impl Fn(u64) + Sync,
) -> Result<RebuildReport, ProjectionError> {
    let progress = |_: usize, n| progress(n);
    let mut reports = rebuild_together(pool, vec![live], &progress).await?;
    Ok(reports.pop().unwrap_or_default())
}

/// Rebuilds several projections from one reading of the log: each batch is read and decoded
/// once, and applied to every projection in its own transaction, on its own connection (so
/// PostgreSQL works on them in parallel) while the next batch is read. `progress` hears each
/// one's index and running count. Returns each one's report, in the order given.
async fn rebuild_together(
    pool: &PgPool,
    projections: Vec<Arc<dyn Projection>>,
    progress: &(dyn Fn(usize, u64) + Sync),
) -> Result<Vec<RebuildReport>, ProjectionError> {
    analyze_events(pool).await?;
    let mut locks = Vec::new();
    for live in &projections {
        match RebuildLock::take(pool, live.name()).await {
            Ok(lock) => locks.push(lock),
            Err(error) => {
                release_all(locks).await;
                return Err(error);
            }
        }
    }
    let result = rebuild_locked(pool, projections, progress).await;
    release_all(locks).await;
    result
}

/// The session-level lock that keeps a second rebuild of the same projection out. Its
/// connection leaves the pool: were it dropped on an error path, closing it frees the lock.
struct RebuildLock {
    conn: sqlx::PgConnection,
    key: String,
}

impl RebuildLock {
    async fn take(pool: &PgPool, projection: &str) -> Result<Self, ProjectionError> {
        let mut conn = pool.acquire().await?.detach();
        let key = format!("connect-ledger rebuild {projection}");
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(&key)
            .fetch_one(&mut conn)
            .await?;
        if !locked {
            return Err(ProjectionError::Rebuild(format!(
                "a rebuild of {projection} is already running"
            )));
        }
        Ok(Self { conn, key })
    }

    async fn release(mut self) {
        let released = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
            .bind(&self.key)
            .execute(&mut self.conn)
            .await;
        if let Err(error) = released {
            tracing::warn!(%error, "could not release a rebuild lock; closing its connection");
        }
        let _ = sqlx::Connection::close(self.conn).await;
    }
}

async fn release_all(locks: Vec<RebuildLock>) {
    for lock in locks {
        lock.release().await;
    }
}

async fn rebuild_locked(
    pool: &PgPool,
    projections: Vec<Arc<dyn Projection>>,
    progress: &(dyn Fn(usize, u64) + Sync),
) -> Result<Vec<RebuildReport>, ProjectionError> {
    let mut asides = Vec::new();
    for live in projections {
        asides.push(Aside::prepare(pool, live).await?);
    }
    let replayed = replay(pool, &asides, progress).await?;
    let finishing =
        asides
            .into_iter()
            .zip(replayed)
            .enumerate()
            .map(|(index, (aside, events))| async move {
                let events = events + aside.finish(pool).await?;
                progress(index, events);
                Ok::<_, ProjectionError>(RebuildReport { events })
            });
    futures::future::try_join_all(finishing).await
}

/// A live projection's copy being built aside.
struct Aside {
    live: Arc<dyn Projection>,
    aside: Arc<dyn Projection>,
    /// (live table, aside table)
    pairs: Vec<(String, String)>,
    /// (aside index name, live index name), renamed at the swap.
    renames: Vec<(String, String)>,
    /// The indexes created after the replay.
    deferred: Vec<String>,
}

impl Aside {
    /// Creates the aside tables and a fresh aside checkpoint.
    async fn prepare(pool: &PgPool, live: Arc<dyn Projection>) -> Result<Self, ProjectionError> {
        let aside = live.aside();
        let pairs: Vec<(String, String)> = live.tables().into_iter().zip(aside.tables()).collect();
        // The aside tables get the live tables' indexes under aside names, and every index
        // takes its live name back at the swap (so later migrations find the names they
        // created). The unique ones and those `apply` reads through exist from the start; the
        // rest are built once the replay is done, each in one pass over the finished table,
        // which costs a fraction of maintaining it row by row (docs/performance.md).
        let read_while_applying = live.indexes_read_while_applying();
        let mut renames = Vec::new();
        let mut deferred = Vec::new();
        for (live_table, aside_table) in &pairs {
            sqlx::query(&format!("DROP TABLE IF EXISTS {aside_table}"))
                .execute(pool)
                .await?;
            sqlx::query(&format!(
                "CREATE TABLE {aside_table} (LIKE {live_table} INCLUDING ALL EXCLUDING INDEXES)"
            ))
            .execute(pool)
            .await?;
            for index in indexes_of(pool, live_table).await? {
                let create = index.create_on(aside_table)?;
                if !index.is_unique && !read_while_applying.contains(&index.name.as_str()) {
                    deferred.push(create);
                    renames.push((index.aside_name(), index.name));
                    continue;
                }
                sqlx::query(&create).execute(pool).await?;
                if index.is_unique {
                    let kind = match index.constraint_type.as_deref() {
                        Some("p") => Some("PRIMARY KEY"),
                        Some("u") => Some("UNIQUE"),
                        _ => None,
                    };
                    if let Some(kind) = kind {
                        sqlx::query(&format!(
                            "ALTER TABLE {aside_table} ADD CONSTRAINT {name} {kind} USING INDEX {name}",
                            name = index.aside_name()
                        ))
                        .execute(pool)
                        .await?;
                    }
                }
                renames.push((index.aside_name(), index.name));
            }
        }
        sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1")
            .bind(aside.name())
            .execute(pool)
            .await?;
        ProjectionRunner::new(pool.clone(), vec![Arc::clone(&aside)])
            .register()
            .await?;
        Ok(Self {
            live,
            aside,
            pairs,
            renames,
            deferred,
        })
    }

    /// Builds the deferred indexes, then, holding the live projection, applies the events
    /// written since the replay and swaps the tables in. Returns how many events it applied.
    async fn finish(self, pool: &PgPool) -> Result<u64, ProjectionError> {
        create_indexes(pool, self.deferred).await?;
        let mut tx = pool.begin().await?;
        // Hold the live projection: its runners wait (or skip) until the swap is done.
        lock_projection(&mut tx, self.live.name(), false).await?;
        let runner = ProjectionRunner::with_batch_size(
            pool.clone(),
            vec![Arc::clone(&self.aside)],
            REBUILD_BATCH_SIZE,
        );
        let applied = runner
            .apply_until_done(&mut tx, self.aside.as_ref())
            .await?;
        for (live_table, aside_table) in &self.pairs {
            let old = format!("{ASIDE_PREFIX}old_{live_table}");
            sqlx::query(&format!("ALTER TABLE {live_table} RENAME TO {old}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!("ALTER TABLE {aside_table} RENAME TO {live_table}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!("DROP TABLE {old}"))
                .execute(&mut *tx)
                .await?;
        }
        for (aside_name, live_name) in &self.renames {
            sqlx::query(&format!("ALTER INDEX {aside_name} RENAME TO {live_name}"))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE projection_checkpoints l SET last_transaction_id = a.last_transaction_id, \
               last_position = a.last_position, updated_at = now() \
             FROM projection_checkpoints a WHERE l.name = $1 AND a.name = $2",
        )
        .bind(self.live.name())
        .bind(self.aside.name())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1")
            .bind(self.aside.name())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(applied)
    }
}

/// Replays the committed log into every aside, all from the start: one reader reads and decodes
/// each batch once (the next while the current one is applied), and each aside applies its
/// types' events of the batch in its own transaction. Returns each aside's count.
async fn replay(
    pool: &PgPool,
    asides: &[Aside],
    progress: &(dyn Fn(usize, u64) + Sync),
) -> Result<Vec<u64>, ProjectionError> {
    let mut types: Vec<String> = Vec::new();
    for aside in asides {
        for t in aside.aside.aggregate_types() {
            if !types.iter().any(|known| known == t) {
                types.push((*t).to_owned());
            }
        }
    }
    let read = |after: Checkpoint| {
        let (pool, types) = (pool.clone(), types.clone());
        tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            let horizon = horizon(&mut conn).await?;
            read_events(&mut conn, after, horizon, &types, REBUILD_BATCH_SIZE).await
        })
    };
    let mut counts = vec![0; asides.len()];
    let mut reading = read(Checkpoint::default());
    loop {
        let events = reading
            .await
            .map_err(|e| ProjectionError::Rebuild(e.to_string()))??;
        let Some(last) = events.last() else {
            return Ok(counts);
        };
        let reached = Checkpoint {
            transaction_id: last.transaction_id,
            position: last.global_position,
        };
        reading = read(reached);
        let applying = asides
            .iter()
            .map(|aside| apply_aside(pool, aside.aside.as_ref(), &events, reached));
        let applied = futures::future::try_join_all(applying).await?;
        for (index, n) in applied.into_iter().enumerate() {
            counts[index] += n;
            progress(index, counts[index]);
        }
    }
}

/// One batch into one aside, in its own transaction (committed asynchronously, as the live
/// runner's are: docs/decisions/0023), with the aside's checkpoint.
async fn apply_aside(
    pool: &PgPool,
    aside: &dyn Projection,
    events: &[StoredEvent],
    reached: Checkpoint,
) -> Result<u64, ProjectionError> {
    let mine: Vec<&StoredEvent> = events
        .iter()
        .filter(|e| aside.aggregate_types().contains(&e.aggregate_type.as_str()))
        .collect();
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('synchronous_commit', 'off', true)")
        .execute(&mut *tx)
        .await?;
    if !mine.is_empty() {
        aside.apply(&mut tx, &mine).await?;
    }
    save_checkpoint(&mut tx, aside.name(), reached).await?;
    tx.commit().await?;
    Ok(mine.len() as u64)
}

/// Creates indexes on finished aside tables, two at a time: `CREATE INDEX` takes a lock that
/// does not exclude another one on the same table, so each sorts its table on its own connection.
async fn create_indexes(pool: &PgPool, statements: Vec<String>) -> Result<(), ProjectionError> {
    let mut pending = statements.into_iter();
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < 2 {
            let Some(statement) = pending.next() else {
                break;
            };
            let pool = pool.clone();
            running.spawn(async move { sqlx::query(&statement).execute(&pool).await.map(drop) });
        }
        match running.join_next().await {
            Some(done) => done.map_err(|e| ProjectionError::Rebuild(e.to_string()))??,
            None => return Ok(()),
        }
    }
}

/// Hears a projection's name and how many events it has replayed so far.
pub type Progress = Arc<dyn Fn(&str, u64) + Send + Sync>;

/// Rebuilds several projections at once, from one reading of the log; `progress` hears each
/// one's name and running count. Returns each one's report, in the order given.
pub async fn rebuild_all(
    pool: &PgPool,
    projections: Vec<Arc<dyn Projection>>,
    progress: Progress,
) -> Result<Vec<(String, RebuildReport)>, ProjectionError> {
    let names: Vec<String> = projections.iter().map(|p| p.name().to_owned()).collect();
    let started = std::time::Instant::now();
    let by_index = |index: usize, n: u64| progress(&names[index], n);
    let reports = rebuild_together(pool, projections, &by_index).await?;
    for (name, report) in names.iter().zip(&reports) {
        tracing::info!(projection = %name, events = report.events, seconds = started.elapsed().as_secs_f64(), "rebuilt");
    }
    Ok(names.into_iter().zip(reports).collect())
}
