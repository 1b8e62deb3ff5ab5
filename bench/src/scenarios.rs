//! The service's figures: webhook ingestion, refunds to `succeeded`, reads, projection lag,
//! rebuild throughput.

use std::sync::Arc;
use std::time::Instant;

use connect_ledger::webhooks::signature::sign;
use ledger_projections::rebuild::rebuild_all;
use sqlx::PgPool;

use crate::baselines::{PlainCqrs, CQRS_BESIDE, RAW};
use crate::load::{self, run, run_paced, Figure};
use crate::service::{fresh_database, Service, ACCOUNT, TOKEN, WEBHOOK_SECRET};
use crate::Plan;

/// The name of the refund throughput figure.
pub const REFUNDS: &str = "refunds (POST → succeeded)";

/// Before each figure, `ANALYZE`: the bench fills a fresh database within minutes, faster than
/// autovacuum (one-minute naps) refreshes its statistics, and plans made from an empty table's
/// statistics (sequential scans) stay cached on the pooled connections. A database in service
/// has been analyzed; this measures that steady state.
///
/// Then `CHECKPOINT`: the figure before (or the set-up that stored the rebuild's million
/// events) leaves gigabytes of dirty buffers and WAL, and the checkpoint that flushes them would
/// otherwise land in whichever figure comes next. Without the privilege, it is skipped.
pub async fn settle_server_before_figure(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("ANALYZE").execute(pool).await?;
    if let Err(error) = sqlx::query("CHECKPOINT").execute(pool).await {
        eprintln!("  no CHECKPOINT before the figure: {error}");
    }
    Ok(())
}

pub async fn webhooks(
    service: &Service,
    pool: &PgPool,
    plan: &Plan,
) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    // Most of what Stripe delivers to a Connect platform is of types the ledger does not act on
    // (stored as `ignored` on arrival); the ledger's own types are queued for the worker, which
    // runs during the measurement (these refund updates carry no charge: the worker claims,
    // decodes and records them as ignored, the whole inbox path without a Stripe call).
    for (name, kind) in [
        (
            "webhook ingestion, other type (verified+stored)",
            "customer.created",
        ),
        (
            "webhook ingestion, ledger type (verified+stored+worked)",
            "refund.updated",
        ),
    ] {
        let (http, url) = (
            service.http.clone(),
            format!("{}/api/stripe/webhooks", service.base),
        );
        let scenario = load::figures(name, Some(RAW), plan, pool, move |client, n| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let object = if kind == "refund.updated" {
                    serde_json::json!({"id": format!("re_bench_{n}"), "object": "refund", "amount": 100, "status": "succeeded"})
                } else {
                    serde_json::json!({"id": format!("cus_{n}"), "object": "customer"})
                };
                let body = serde_json::to_vec(&serde_json::json!({
                    "id": format!("evt_bench_{kind}_{client}_{n}"), "object": "event", "type": kind,
                    "account": ACCOUNT, "created": chrono::Utc::now().timestamp(), "livemode": false,
                    "api_version": "2026-09-30.endive", "data": {"object": object}
                }))?;
                let signature = sign(&body, WEBHOOK_SECRET, chrono::Utc::now().timestamp());
                let response = http
                    .post(&url)
                    .header("Stripe-Signature", signature)
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(response.status() == 200, "webhook: {}", response.status());
                Ok(())
            }
        });
        figures.extend(scenario.await?);
    }
    Ok(figures)
}

/// Waits (at most five minutes) until the webhook worker has processed every stored event;
/// returns the seconds it took.
pub async fn drain_inbox(pool: &PgPool) -> anyhow::Result<f64> {
    let started = Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(300) {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM webhook_events WHERE status IN ('pending', 'processing', 'failed')",
        )
        .fetch_one(pool)
        .await?;
        if open == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn event_count(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?)
}

/// Refunds through to `succeeded`: each client works on its own charges, a new one every
/// `REFUNDS_PER_CHARGE` refunds (real charges see a few refunds, not thousands).
async fn refund_load(
    service: &Service,
    name: &'static str,
    duration: std::time::Duration,
    clients: usize,
) -> anyhow::Result<Figure> {
    const REFUNDS_PER_CHARGE: usize = 4;
    let stripe = service.stripe.clone();
    let charges: Arc<std::sync::Mutex<Vec<(String, usize)>>> = Arc::new(std::sync::Mutex::new(
        (0..clients)
            .map(|_| (String::new(), REFUNDS_PER_CHARGE))
            .collect(),
    ));
    // Each load names its own purchases, so that a second load at the same client count (a
    // warm-up) asks new refunds, not repeats.
    static LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let load = LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (http, url) = (service.http.clone(), format!("{}/v1/refunds", service.base));
    run(name, None, clients, duration, 1.0, move |client, n| {
        let (http, url) = (http.clone(), url.clone());
        let charge = {
            let mut all = charges.lock().unwrap_or_else(|p| p.into_inner());
            let slot = &mut all[client];
            if slot.1 >= REFUNDS_PER_CHARGE {
                *slot = (stripe.create_charge(ACCOUNT, 1_000_000, "usd"), 0);
            }
            slot.1 += 1;
            slot.0.clone()
        };
        async move {
            let response = http
                .post(&url)
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({"app": "bench", "purchase_id": format!("p{load}-{client}"),
                    "charge_id": charge, "approval_id": format!("a{n}"), "amount": 1, "requested_by": "bench"}))
                .send()
                .await?;
            anyhow::ensure!(response.status() == 201, "refund: {}", response.status());
            let body: serde_json::Value = response.json().await?;
            anyhow::ensure!(body["status"] == "succeeded", "refund status {}", body["status"]);
            Ok(())
        }
    })
    .await
}

/// Refunds at each client count, after a warm-up as in `load::figures`; with each, the events
/// written per second, counted in the event store, and the cqrs-es baseline measured for half
/// as long just before and just after it (their mean is what the events are compared to).
pub async fn refunds(
    service: &Service,
    pool: &PgPool,
    plan: &Plan,
    cqrs: &PlainCqrs,
) -> anyhow::Result<Vec<Figure>> {
    let most = plan.clients.iter().copied().max().unwrap_or(1);
    refund_load(service, load::WARM_UP, plan.warm_up, most).await?;
    let mut figures = Vec::new();
    for &clients in &plan.clients {
        settle_server_before_figure(pool).await?;
        let before_refunds = cqrs.measure("before", clients, plan.duration / 2).await?;
        settle_server_before_figure(pool).await?;
        let before = event_count(pool).await?;
        let started = Instant::now();
        let figure = refund_load(service, REFUNDS, plan.duration, clients).await?;
        let events = (event_count(pool).await? - before) as f64 / started.elapsed().as_secs_f64();
        settle_server_before_figure(pool).await?;
        let after_refunds = cqrs.measure("after", clients, plan.duration / 2).await?;
        let mean = |f: fn(&Figure) -> f64| (f(&before_refunds) + f(&after_refunds)) / 2.0;
        figures.push(Figure {
            name: CQRS_BESIDE,
            clients,
            per_second: mean(|f| f.per_second),
            p50_ms: mean(|f| f.p50_ms),
            p99_ms: mean(|f| f.p99_ms),
            baseline: None,
        });
        figures.push(figure.clone());
        figures.push(Figure {
            name: "refund events written",
            per_second: events,
            baseline: Some(CQRS_BESIDE),
            ..figure
        });
    }
    Ok(figures)
}

/// The best refund rate among `figures`: the projection lag is measured at half of it.
pub fn peak_refunds(figures: &[Figure]) -> f64 {
    figures
        .iter()
        .filter(|f| f.name == REFUNDS)
        .map(|f| f.per_second)
        .fold(0.0, f64::max)
}

pub async fn reads(service: &Service, pool: &PgPool, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for (name, path) in [
        ("GET /v1/apps/{slug}", "/v1/apps/bench"),
        ("GET /v1/audit?limit=100", "/v1/audit?limit=100"),
    ] {
        let (http, url) = (service.http.clone(), format!("{}{path}", service.base));
        let scenario = load::figures(name, None, plan, pool, move |_, _| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let response = http.get(&url).bearer_auth(TOKEN).send().await?;
                anyhow::ensure!(response.status() == 200, "read: {}", response.status());
                response.bytes().await?;
                Ok(())
            }
        });
        figures.extend(scenario.await?);
    }
    Ok(figures)
}

pub struct Lag {
    /// Refunds started per second: half the most the service completed in this run.
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub rows: i64,
}

/// Time from a refund's last event commit to its row in `refunds`, at half the maximum load:
/// refunds arrive at half the best rate the refund figures reached (an open loop, so a slow
/// answer does not slow the arrivals down). The load runs for the warm-up's length first,
/// unmeasured, as every other figure's scenario does: the first seconds after the
/// `CHECKPOINT` of [`settle_server_before_figure`] write every touched page whole into the WAL,
/// and the probe's new HTTP connections are opened then.
pub async fn projection_lag(
    service: &Service,
    pool: &PgPool,
    plan: &Plan,
    peak_refunds_per_second: f64,
) -> anyhow::Result<Lag> {
    const REFUNDS_PER_CHARGE: usize = 4;
    let rate = (peak_refunds_per_second / 2.0).max(1.0);
    settle_server_before_figure(pool).await?;
    let started: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
    let measured_from = started + plan.warm_up;
    let stripe = service.stripe.clone();
    let (http, url) = (service.http.clone(), format!("{}/v1/refunds", service.base));
    let charge = Arc::new(std::sync::Mutex::new((String::new(), REFUNDS_PER_CHARGE)));
    let completed = run_paced(rate, plan.warm_up + plan.duration, 512, move |n| {
        let charge_id = {
            let mut slot = charge.lock().unwrap_or_else(|p| p.into_inner());
            if slot.1 >= REFUNDS_PER_CHARGE {
                *slot = (stripe.create_charge(ACCOUNT, 1_000_000, "usd"), 0);
            }
            slot.1 += 1;
            slot.0.clone()
        };
        let (http, url) = (http.clone(), url.clone());
        async move {
            let response = http
                .post(&url)
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({"app": "bench", "purchase_id": format!("lag-{n}"),
                    "charge_id": charge_id, "approval_id": "a", "amount": 1, "requested_by": "bench"}))
                .send()
                .await?;
            anyhow::ensure!(response.status() == 201, "refund: {}", response.status());
            Ok(())
        }
    })
    .await?;
    eprintln!(
        "  lag probe: {completed} refunds at {rate:.0}/s, the first {:?} unmeasured",
        plan.warm_up
    );
    let (p50, p99, rows): (Option<f64>, Option<f64>, i64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), count(*) \
         FROM (SELECT EXTRACT(EPOCH FROM projected_at - updated_at) * 1000 AS ms FROM refunds \
               WHERE created_at >= $1 AND status = 'succeeded') lag",
    )
    .bind(measured_from)
    .fetch_one(pool)
    .await?;
    Ok(Lag {
        rate,
        p50_ms: p50.unwrap_or(0.0),
        p99_ms: p99.unwrap_or(0.0),
        rows,
    })
}

pub struct Rebuild {
    pub events: i64,
    pub seconds: f64,
}

/// Stores `plan.rebuild_events` events (refund lifecycles of four events each), then rebuilds
/// every projection from them.
pub async fn rebuild(server: &str, plan: &Plan) -> anyhow::Result<Rebuild> {
    let database = fresh_database(server).await?;
    let pool = connect_ledger::db::connect(&database).await?;
    connect_ledger::db::migrate(&pool).await?;
    let charges = plan.rebuild_events / 4;
    eprintln!("  storing {} events for the rebuild…", charges * 4);
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT 'ChargeLedger', 'ch_' || c, s.seq, s.kind, '1.0', \
           CASE s.seq \
             WHEN 1 THEN json_build_object('ChargeObserved', json_build_object('charge', json_build_object('app', 'bench', \
               'stripe_account_id', 'acct_bench', 'amount', 1000, 'currency', 'usd', 'amount_refunded', 0, 'disputed', false))) \
             WHEN 2 THEN json_build_object('RefundRequested', json_build_object('refund_id', 'rf_' || c, \
               'idempotency_key', 'refund:p' || c || ':a', 'purchase_id', 'p' || c, 'approval_id', 'a', \
               'requested_amount', 500, 'amount', 500, 'currency', 'usd', 'reason', 'requested_by_customer', 'requested_by', 'bench')) \
             WHEN 3 THEN json_build_object('RefundSubmitted', json_build_object('refund_id', 'rf_' || c, 'attempt', 1)) \
             ELSE json_build_object('RefundStatusChanged', json_build_object('refund_id', 'rf_' || c, \
               'stripe_refund_id', 're_' || c, 'status', 'succeeded', 'failure_reason', null)) END, \
           json_build_object('actor', 'bench', 'source', 'system', 'correlation_id', 'bench', 'recorded_at', now()) \
         FROM generate_series(1, $1) c, \
           (VALUES (1, 'ChargeObserved'), (2, 'RefundRequested'), (3, 'RefundSubmitted'), (4, 'RefundStatusChanged')) s(seq, kind) \
         ORDER BY c, s.seq",
    )
    .bind(charges)
    .execute(&pool)
    .await?;
    let events = charges * 4;
    settle_server_before_figure(&pool).await?;
    let started = Instant::now();
    let reports = rebuild_all(
        &pool,
        connect_ledger::startup::projections(),
        Arc::new(move |name: &str, n: u64| {
            if n as i64 == events {
                eprintln!(
                    "  rebuilt {name:<8} {n:>8} events in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
        }),
    )
    .await?;
    drop(reports);
    Ok(Rebuild {
        events,
        seconds: started.elapsed().as_secs_f64(),
    })
}
