//! `scripts/bench [--quick]`: starts connect-ledger (release build, a separate process) against a
//! fresh PostgreSQL database and an in-process zero-latency fake Stripe, loads it over real HTTP
//! from this process, measures the baselines in the same run, and prints one table.

mod baselines;
mod load;
mod scenarios;
mod service;

use std::time::Duration;

use load::Figure;

pub struct Plan {
    pub quick: bool,
    pub duration: Duration,
    /// How long each scenario runs unmeasured before its figures (`load::figures`).
    pub warm_up: Duration,
    pub clients: Vec<usize>,
    pub rebuild_events: i64,
}

/// The same allocator as the service binary (the rebuild figure runs in this process).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let plan = Plan {
        quick,
        duration: Duration::from_secs(if quick { 2 } else { 10 }),
        warm_up: Duration::from_secs(if quick { 1 } else { 3 }),
        // Profiling aid: BENCH_CLIENTS=64 (or "16,64") measures only those client counts.
        clients: match std::env::var("BENCH_CLIENTS") {
            Ok(list) => list
                .split(',')
                .map(|n| n.trim().parse())
                .collect::<Result<_, _>>()?,
            Err(_) => vec![1, 16, 64],
        },
        rebuild_events: if quick { 20_000 } else { 1_000_000 },
    };
    let server = std::env::var("BENCH_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    eprintln!(
        "connect-ledger bench ({}), PostgreSQL at {server}",
        if quick { "quick" } else { "full" }
    );

    if let Some(events) = std::env::args()
        .skip_while(|a| a != "--rebuild-only")
        .nth(1)
    {
        // Profiling aid: only the rebuild, from the given number of events.
        let plan = Plan {
            rebuild_events: events.parse()?,
            ..plan
        };
        let rebuild = scenarios::rebuild(&server, &plan).await?;
        service::drop_databases(&server).await?;
        println!(
            "rebuild: {} events in {:.1} s = {:.0} events/s",
            rebuild.events,
            rebuild.seconds,
            rebuild.events as f64 / rebuild.seconds
        );
        return Ok(());
    }
    if std::env::args().any(|a| a == "--refunds-only") {
        // Profiling aid: only the refund figures and their projection lag (PostgreSQL
        // statistics, perf, alternating runs of two builds).
        let database = service::fresh_database(&server).await?;
        let pool = connect_ledger::db::connect(&database).await?;
        connect_ledger::db::migrate(&pool).await?;
        let cqrs = baselines::PlainCqrs::set_up(&pool).await?;
        let service = service::Service::start(&database).await?;
        let figures = scenarios::refunds(&service, &pool, &plan, &cqrs).await?;
        let peak = scenarios::peak_refunds(&figures);
        let lag = scenarios::projection_lag(&service, &pool, &plan, peak).await?;
        drop(service);
        pool.close().await;
        service::drop_databases(&server).await?;
        for figure in figures {
            println!(
                "{} {}: {:.0}/s",
                figure.name, figure.clients, figure.per_second
            );
        }
        println!(
            "projection lag at {:.0} refunds/s: p50 {:.1} ms, p99 {:.1} ms",
            lag.rate, lag.p50_ms, lag.p99_ms
        );
        return Ok(());
    }
    let mut figures: Vec<Figure> = Vec::new();
    let database = service::fresh_database(&server).await?;
    let pool = connect_ledger::db::connect(&database).await?;
    connect_ledger::db::migrate(&pool).await?;
    figures.extend(baselines::raw_inserts(&pool, &plan).await?);
    let cqrs = baselines::PlainCqrs::set_up(&pool).await?;
    figures.extend(cqrs.figures(&pool, &plan).await?);

    let service = service::Service::start(&database).await?;
    let idle_rss = service.rss_kib();
    figures.extend(scenarios::webhooks(&service, &pool, &plan).await?);
    // Let the worker finish the stored events, so the next figures do not pay for them.
    let drained = scenarios::drain_inbox(&pool).await?;
    eprintln!("  inbox drained in {drained:.1} s");
    figures.extend(scenarios::refunds(&service, &pool, &plan, &cqrs).await?);
    let peak_rss = service.peak_rss_kib();
    figures.extend(scenarios::reads(&service, &pool, &plan).await?);
    let peak = scenarios::peak_refunds(&figures);
    let lag = scenarios::projection_lag(&service, &pool, &plan, peak).await?;
    drop(service);
    // The rebuild gets a quiet server: the loaded database goes first, so autovacuum does not
    // work through its million rows while the rebuild is timed.
    pool.close().await;
    service::drop_databases(&server).await?;
    let rebuild = scenarios::rebuild(&server, &plan).await?;
    if let Err(error) = service::drop_databases(&server).await {
        eprintln!("  could not drop the bench databases: {error}");
    }

    println!();
    println!("| scenario | clients | throughput (/s) | p50 (ms) | p99 (ms) | vs baseline |");
    println!("|---|---:|---:|---:|---:|---|");
    for figure in &figures {
        let ratio = figure
            .baseline
            .and_then(|name| {
                figures
                    .iter()
                    .find(|f| f.name == name && f.clients == figure.clients)
            })
            .map(|base| {
                format!(
                    "{:.2}× {}",
                    figure.per_second / base.per_second.max(1e-9),
                    base.name
                )
            })
            .unwrap_or_default();
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} |",
            figure.name, figure.clients, figure.per_second, figure.p50_ms, figure.p99_ms, ratio
        );
    }
    println!();
    println!(
        "| projection lag (refunds table, {:.0} refunds/s arriving: half the peak) | p50 {:.1} ms | p99 {:.1} ms | {} rows |",
        lag.rate, lag.p50_ms, lag.p99_ms, lag.rows
    );
    println!(
        "| rebuild of all projections | {} events | {:.1} s | {:.0} events/s |",
        rebuild.events,
        rebuild.seconds,
        rebuild.events as f64 / rebuild.seconds.max(1e-9)
    );
    println!(
        "| service memory | idle {:.1} MiB | peak {:.1} MiB (VmHWM) | |",
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
    Ok(())
}
