//! A closed-loop load generator: `clients` tasks repeat an operation for a fixed time.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::Plan;

/// One measured row of the table.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: &'static str,
    pub clients: usize,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The figure this one is compared to, at the same client count.
    pub baseline: Option<&'static str>,
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Runs `op(client, iteration)` from `clients` tasks for `duration`; `per_op` scales throughput
/// (e.g. events per operation). Failed operations abort the run.
pub async fn run<F, Fut>(
    name: &'static str,
    baseline: Option<&'static str>,
    clients: usize,
    duration: Duration,
    per_op: f64,
    op: F,
) -> anyhow::Result<Figure>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let op = Arc::clone(&op);
        let counter = Arc::clone(&counter);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < duration {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                op(client, n).await?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let figure = Figure {
        name,
        clients,
        per_second: all.len() as f64 * per_op / elapsed,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        baseline,
    };
    eprintln!(
        "  {name:<32} {clients:>3} clients: {:>8.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
        figure.per_second, figure.p50_ms, figure.p99_ms
    );
    Ok(figure)
}

/// One scenario's figures, one per client count of the plan. The operation first runs
/// unmeasured for `plan.warm_up` at the most clients: each figure of a scenario used to start on
/// the tables as the previous one left them, the first on empty ones, whose plans (sequential
/// scans, cached on the pooled connections until the next `ANALYZE`) it then measured (measured:
/// 367 against 583 refunds/s at 64 clients, the same load run twice). Each figure is preceded by
/// `settle_server_before_figure`. `op(client, n)` gets an `n` unique across all the runs.
pub async fn figures<F, Fut>(
    name: &'static str,
    baseline: Option<&'static str>,
    plan: &Plan,
    pool: &PgPool,
    op: F,
) -> anyhow::Result<Vec<Figure>>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    /// Apart enough that no run reaches the next one's numbers.
    const RUN_STRIDE: usize = 1 << 40;
    let op = Arc::new(op);
    let numbered = |run: usize| {
        let op = Arc::clone(&op);
        move |client, n| op(client, run * RUN_STRIDE + n)
    };
    let most = plan.clients.iter().copied().max().unwrap_or(1);
    run(WARM_UP, None, most, plan.warm_up, 1.0, numbered(0)).await?;
    let mut figures = Vec::new();
    for (index, &clients) in plan.clients.iter().enumerate() {
        crate::scenarios::settle_server_before_figure(pool).await?;
        let op = numbered(index + 1);
        figures.push(run(name, baseline, clients, plan.duration, 1.0, op).await?);
    }
    Ok(figures)
}

/// The name under which warm-up runs print their (unreported) progress line.
pub const WARM_UP: &str = "(warm-up, not reported)";

/// Starts `op(n)` at a fixed `rate` per second for `duration` (an open loop: arrivals do not wait
/// for answers, as real traffic does not), at most `max_in_flight` at once; returns how many
/// completed. Failed operations abort the run.
pub async fn run_paced<F, Fut>(
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    op: F,
) -> anyhow::Result<usize>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1.0)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0;
    while started.elapsed() < duration {
        ticks.tick().await;
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let operation = op(n);
        n += 1;
        tasks.spawn(async move {
            let result = operation.await;
            drop(permit);
            result
        });
    }
    let mut done = 0;
    while let Some(result) = tasks.join_next().await {
        result??;
        done += 1;
    }
    Ok(done)
}
