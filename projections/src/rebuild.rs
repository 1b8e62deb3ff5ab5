//! Rebuilding a projection from the whole event log without taking it away from readers: build
//! it aside in `rebuild_*` tables under its own checkpoint, then, in one transaction that holds the
//! live projection's checkpoint, apply the last events and swap the tables by renaming.

use std::sync::Arc;

use sqlx::PgPool;

use crate::runner::{lock_projection, CatchUp, ProjectionRunner, REBUILD_BATCH_SIZE};
use crate::{Projection, ProjectionError};

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
    progress: impl Fn(u64),
) -> Result<RebuildReport, ProjectionError> {
    analyze_events(pool).await?;
    rebuild_analyzed(pool, live, progress).await
}

/// [`rebuild`], the statistics of `events` being fresh already.
async fn rebuild_analyzed(
    pool: &PgPool,
    live: Arc<dyn Projection>,
    progress: impl Fn(u64),
) -> Result<RebuildReport, ProjectionError> {
    let mut lock = pool.acquire().await?;
    let key = format!("connect-ledger rebuild {}", live.name());
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
        .bind(&key)
        .fetch_one(&mut *lock)
        .await?;
    if !locked {
        return Err(ProjectionError::Rebuild(format!(
            "a rebuild of {} is already running",
            live.name()
        )));
    }
    let result = rebuild_locked(pool, live, progress).await;
    sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind(&key)
        .execute(&mut *lock)
        .await?;
    result
}

async fn rebuild_locked(
    pool: &PgPool,
    live: Arc<dyn Projection>,
    progress: impl Fn(u64),
) -> Result<RebuildReport, ProjectionError> {
    let aside = live.aside();
    let pairs: Vec<(String, String)> = live.tables().into_iter().zip(aside.tables()).collect();
    // The aside tables get the live tables' indexes under aside names, and every index takes
    // its live name back at the swap (so later migrations find the names they created). The
    // unique ones and those `apply` reads through exist from the start; the rest are built once
    // the replay is done, each in one pass over the finished table, which costs a fraction of
    // maintaining it row by row (docs/performance.md).
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
    let runner = ProjectionRunner::with_batch_size(
        pool.clone(),
        vec![Arc::clone(&aside)],
        REBUILD_BATCH_SIZE,
    );
    runner.register().await?;
    let mut report = RebuildReport::default();
    loop {
        match runner.catch_up_batches(aside.as_ref(), 5).await? {
            CatchUp::Applied(n) => {
                report.events += n;
                progress(report.events);
                if n == 0 {
                    break;
                }
            }
            CatchUp::Busy => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
    create_indexes(pool, deferred).await?;

    let mut tx = pool.begin().await?;
    // Hold the live projection: its runners wait (or skip) until the swap is done.
    lock_projection(&mut tx, live.name(), false).await?;
    report.events += runner.apply_until_done(&mut tx, aside.as_ref()).await?;
    progress(report.events);
    for (live_table, aside_table) in &pairs {
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
    for (aside_name, live_name) in &renames {
        sqlx::query(&format!("ALTER INDEX {aside_name} RENAME TO {live_name}"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "UPDATE projection_checkpoints l SET last_transaction_id = a.last_transaction_id, \
           last_position = a.last_position, updated_at = now() \
         FROM projection_checkpoints a WHERE l.name = $1 AND a.name = $2",
    )
    .bind(live.name())
    .bind(aside.name())
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1")
        .bind(aside.name())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(report)
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

/// Rebuilds several projections at once (each on its own connection, so PostgreSQL works on
/// them in parallel); `progress` hears each one's name and running count. Returns each one's
/// report, in the order given.
pub async fn rebuild_all(
    pool: &PgPool,
    projections: Vec<Arc<dyn Projection>>,
    progress: Progress,
) -> Result<Vec<(String, RebuildReport)>, ProjectionError> {
    analyze_events(pool).await?;
    let mut running = tokio::task::JoinSet::new();
    for (index, projection) in projections.into_iter().enumerate() {
        let (pool, progress) = (pool.clone(), Arc::clone(&progress));
        running.spawn(async move {
            let name = projection.name().to_owned();
            let started = std::time::Instant::now();
            let report = rebuild_analyzed(&pool, projection, |n| progress(&name, n)).await?;
            tracing::info!(projection = %name, events = report.events, seconds = started.elapsed().as_secs_f64(), "rebuilt");
            Ok::<_, ProjectionError>((index, name, report))
        });
    }
    let mut reports = Vec::new();
    while let Some(done) = running.join_next().await {
        let done = done.map_err(|e| ProjectionError::Rebuild(e.to_string()))??;
        reports.push(done);
    }
    reports.sort_by_key(|(index, _, _)| *index);
    Ok(reports
        .into_iter()
        .map(|(_, name, report)| (name, report))
        .collect())
}
