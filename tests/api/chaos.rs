//! Fault injection with real processes and real PostgreSQL: the service binary is killed with
//! SIGKILL at random instants while clients connect apps, refund and deliver webhooks, then
//! restarted. Afterwards every acknowledged request and webhook is reflected, no refund reached
//! Stripe twice, Stripe and the ledger agree on every charge, the projections equal a rebuild
//! and the audit chain verifies. Three instances share the database (`CHAOS_INSTANCES`); each
//! round kills one, while the fake Stripe answers some calls with 500s, 429s, slow or unreadable
//! answers, or creates a refund and loses the answer. `scripts/chaos` runs it with 20 kills
//! (`CHAOS_KILLS`); the test suite runs 3.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connect_ledger::fake_stripe::{FakeStripe, Fault};
use connect_ledger::webhooks::signature::sign;
use rand::Rng;
use serde_json::{json, Value};

use crate::crash::{connect_app, Service};
use crate::helpers::{fresh_database, OPERATOR_TOKEN};
use crate::private_cluster::PrivateCluster;

const BIN: &str = env!("CARGO_BIN_EXE_connect-ledger");
const SECRET: &str = "whsec_chaos";
const ACCOUNT: &str = "acct_chaos";
const CHARGES: usize = 12;

/// What the service acknowledged (2xx) before it died.
#[derive(Default)]
struct Acknowledged {
    refunds: Vec<String>,
    webhooks: Vec<String>,
    apps: Vec<String>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicUsize,
    acknowledged: AtomicUsize,
    refused: AtomicUsize,
    /// Answers 500: a fault of the service's own (an unreachable database is a 503).
    internal_errors: AtomicUsize,
    cut: AtomicUsize,
}

struct Load {
    /// The instances' base URLs; each request goes to one at random.
    addresses: Vec<String>,
    http: reqwest::Client,
    charges: Vec<String>,
    acked: Mutex<Acknowledged>,
    counters: Counters,
    stop: AtomicBool,
}

impl Load {
    /// Starts the mixed load on `addresses`: three refunders, two webhook senders, one
    /// registrar, each tagging what it creates with `tag`.
    fn start(
        addresses: Vec<String>,
        http: &reqwest::Client,
        charges: &[String],
        tag: &str,
    ) -> (Arc<Self>, tokio::task::JoinSet<()>) {
        let load = Arc::new(Self {
            addresses,
            http: http.clone(),
            charges: charges.to_vec(),
            acked: Mutex::new(Acknowledged::default()),
            counters: Counters::default(),
            stop: AtomicBool::new(false),
        });
        let mut clients = tokio::task::JoinSet::new();
        for task in 0..3 {
            let (load, tag) = (Arc::clone(&load), format!("{tag}_{task}"));
            clients.spawn(async move { load.refunder(tag).await });
        }
        for task in 0..2 {
            let (load, tag) = (Arc::clone(&load), format!("{tag}_{task}"));
            clients.spawn(async move { load.webhooks(tag).await });
        }
        let (registrar, tag) = (Arc::clone(&load), tag.to_owned());
        clients.spawn(async move { registrar.registrar(tag).await });
        (load, clients)
    }

    /// Stops the clients, waits for them, and adds what they saw to the totals.
    async fn finish(
        &self,
        mut clients: tokio::task::JoinSet<()>,
        acked: &mut Acknowledged,
        counters: &Counters,
    ) {
        self.stop.store(true, Ordering::Relaxed);
        while clients.join_next().await.is_some() {}
        let mut seen = self.acked.lock().expect("acked");
        acked.refunds.append(&mut seen.refunds);
        acked.webhooks.append(&mut seen.webhooks);
        acked.apps.append(&mut seen.apps);
        for (total, part) in [
            (&counters.requests, &self.counters.requests),
            (&counters.acknowledged, &self.counters.acknowledged),
            (&counters.refused, &self.counters.refused),
            (&counters.internal_errors, &self.counters.internal_errors),
            (&counters.cut, &self.counters.cut),
        ] {
            total.fetch_add(part.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    fn address(&self) -> &str {
        &self.addresses[rand::thread_rng().gen_range(0..self.addresses.len())]
    }

    fn count(&self, result: &Result<reqwest::Response, reqwest::Error>) -> Option<u16> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(response) if response.status().is_success() => {
                self.counters.acknowledged.fetch_add(1, Ordering::Relaxed);
                Some(response.status().as_u16())
            }
            Ok(response) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                if response.status() == 500 {
                    self.counters
                        .internal_errors
                        .fetch_add(1, Ordering::Relaxed);
                }
                Some(response.status().as_u16())
            }
            Err(_) => {
                self.counters.cut.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    async fn refunder(&self, tag: String) {
        let mut n = 0;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let (charge, amount) = {
                let mut rng = rand::thread_rng();
                (
                    self.charges[rng.gen_range(0..self.charges.len())].clone(),
                    rng.gen_range(50..400),
                )
            };
            let result = self
                .http
                .post(format!("{}/v1/refunds", self.address()))
                .bearer_auth(OPERATOR_TOKEN)
                .json(
                    &json!({"app": "shop", "purchase_id": format!("pur_{tag}_{n}"),
                              "charge_id": charge, "approval_id": "appr", "amount": amount,
                              "requested_by": "chaos"}),
                )
                .send()
                .await;
            if let (Some(200 | 201), Ok(response)) = (self.count(&result), result) {
                if let Ok(body) = response.json::<Value>().await {
                    if let Some(id) = body["id"].as_str() {
                        self.acked
                            .lock()
                            .expect("acked")
                            .refunds
                            .push(id.to_owned());
                    }
                }
            }
        }
    }

    async fn webhooks(&self, tag: String) {
        let mut n = 0;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let id = format!("evt_chaos_{tag}_{n}");
            let event = json!({"id": id, "object": "event", "type": "customer.created",
                "account": ACCOUNT, "created": chrono::Utc::now().timestamp(), "livemode": false,
                "data": {"object": {"id": format!("cus_{n}"), "object": "customer"}}});
            let body = serde_json::to_vec(&event).expect("json");
            let signature = sign(&body, SECRET, chrono::Utc::now().timestamp());
            let result = self
                .http
                .post(format!("{}/api/stripe/webhooks", self.address()))
                .header("Stripe-Signature", signature)
                .body(body)
                .send()
                .await;
            if self.count(&result) == Some(200) {
                self.acked.lock().expect("acked").webhooks.push(id);
            }
        }
    }

    async fn registrar(&self, tag: String) {
        let mut n = 0;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let slug = format!("app-{tag}-{n}");
            let result = self
                .http
                .post(format!("{}/v1/apps", self.address()))
                .bearer_auth(OPERATOR_TOKEN)
                .json(&json!({"slug": slug, "name": "Chaos app"}))
                .send()
                .await;
            if self.count(&result) == Some(201) {
                self.acked.lock().expect("acked").apps.push(slug);
            }
        }
    }
}

/// Queues a random handful of faults on the fake's endpoints; returns how many.
fn inject_stripe_faults(stripe: &FakeStripe) -> usize {
    let mut rng = rand::thread_rng();
    let mut injected = 0;
    for _ in 0..rng.gen_range(2..8) {
        let (endpoint, fault) = match rng.gen_range(0..6) {
            0 => ("refunds.create", Fault::Status(500)),
            1 => ("refunds.create", Fault::ShouldRetry(429, true)),
            2 => ("refunds.create", Fault::Delay(Duration::from_millis(300))),
            3 => ("refunds.create", Fault::ExecuteThenFail(502)),
            4 => ("refunds.create", Fault::Garbage),
            _ => ("charges.retrieve", Fault::Status(503)),
        };
        stripe.inject(endpoint, fault);
        injected += 1;
    }
    injected
}

fn spawn(database_url: &str, stripe: &FakeStripe) -> Service {
    Service::spawn_with(
        database_url,
        stripe,
        None,
        &[
            ("STRIPE_WEBHOOK_SECRET", SECRET),
            ("RUST_LOG", "warn,connect_ledger=info"),
        ],
    )
}

async fn cli(database_url: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", database_url)
        .env_remove("LEDGER_ENV")
        .output()
        .await
        .expect("run the CLI")
}

async fn read_models(pool: &sqlx::PgPool) -> Vec<Vec<String>> {
    let mut tables = Vec::new();
    for (table, order) in [
        ("apps", "slug"),
        ("refunds", "id"),
        ("charges", "charge_id"),
        ("external_refunds", "stripe_refund_id"),
        ("audit_entries", "position"),
    ] {
        tables.push(
            sqlx::query_scalar(&format!(
                "SELECT (to_jsonb(t) - 'projected_at')::text FROM (SELECT * FROM {table} ORDER BY {order}) t"
            ))
            .fetch_all(pool)
            .await
            .expect("rows"),
        );
    }
    tables
}

/// Lets the surviving instance finish what the faults interrupted, stops the instances, then
/// checks every promise; returns the violations and how many refunds Stripe holds.
#[allow(clippy::too_many_arguments)]
async fn check_invariants(
    http: &reqwest::Client,
    services: Vec<Service>,
    database_url: &str,
    stripe: &FakeStripe,
    charges: &[String],
    acked: &Acknowledged,
    counters: &Counters,
) -> (Vec<String>, usize) {
    let pool = &sqlx::PgPool::connect(database_url).await.expect("pool");
    // The last instance finishes what the kills interrupted: its projections catch up with
    // what the killed ones wrote, and its worker drives every refund still unanswered.
    let base = services[0].address.clone();
    let mut unfinished: (i64, i64) = (-1, -1);
    for _ in 0..300 {
        unfinished = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events e, projection_checkpoints c WHERE c.name = 'refunds' \
               AND e.aggregate_type = 'ChargeLedger' \
               AND (e.transaction_id, e.global_position) > (c.last_transaction_id, c.last_position)), \
             (SELECT count(*) FROM refunds WHERE status = 'requested')",
        )
        .fetch_one(pool)
        .await
        .expect("progress");
        if unfinished == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut violations: Vec<String> = Vec::new();
    if unfinished != (0, 0) {
        violations.push(format!(
            "never finished: {} events unprojected, {} refunds unanswered",
            unfinished.0, unfinished.1
        ));
    }
    // 1. Every acknowledged refund is in the ledger, final.
    for id in &acked.refunds {
        let refund: Value = http
            .get(format!("{base}/v1/refunds/{id}"))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .expect("refund")
            .json()
            .await
            .expect("json");
        if !["succeeded", "canceled", "failed"].contains(&refund["status"].as_str().unwrap_or("")) {
            violations.push(format!("acknowledged refund {id} is {refund}"));
        }
    }
    // 2. Every acknowledged webhook is stored; 3. every acknowledged app exists.
    let stored: HashSet<String> = sqlx::query_scalar("SELECT event_id FROM webhook_events")
        .fetch_all(pool)
        .await
        .expect("inbox")
        .into_iter()
        .collect();
    for id in acked.webhooks.iter().filter(|id| !stored.contains(*id)) {
        violations.push(format!("acknowledged webhook {id} lost"));
    }
    for slug in &acked.apps {
        let status = http
            .get(format!("{base}/v1/apps/{slug}"))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .expect("app")
            .status();
        if status != 200 {
            violations.push(format!("acknowledged app {slug} answers {status}"));
        }
    }
    // 4. No refund reached Stripe twice; Stripe and the ledger agree on every charge.
    let mut stripe_refunds = 0;
    for charge in charges {
        let at_stripe = stripe.refunds_of(charge);
        stripe_refunds += at_stripe.len();
        let mut per_ledger_refund: HashMap<String, usize> = HashMap::new();
        for refund in &at_stripe {
            let key = refund
                .metadata
                .get("ledger_refund_id")
                .cloned()
                .unwrap_or_default();
            *per_ledger_refund.entry(key).or_default() += 1;
        }
        for (id, count) in per_ledger_refund.iter().filter(|(_, c)| **c > 1) {
            violations.push(format!("{id} reached Stripe {count} times"));
        }
        let ledger: Value = http
            .get(format!("{base}/v1/charges/{charge}"))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .expect("charge")
            .json()
            .await
            .expect("json");
        let stripe_refunded = stripe.charge(charge).map_or(0, |c| c.amount_refunded);
        let ledger_refunded = ledger["refunded"].as_i64().unwrap_or(0);
        if stripe_refunded != ledger_refunded || stripe_refunded > 10_000 {
            let ours: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT id, status || ' ' || COALESCE(stripe_refund_id, '-'), amount FROM refunds WHERE charge_id = $1",
            )
            .bind(charge)
            .fetch_all(pool)
            .await
            .expect("refunds");
            let ours: HashMap<String, (String, i64)> =
                ours.into_iter().map(|(id, s, a)| (id, (s, a))).collect();
            let unmatched: Vec<String> = at_stripe
                .iter()
                .filter(|r| {
                    let id = r
                        .metadata
                        .get("ledger_refund_id")
                        .cloned()
                        .unwrap_or_default();
                    ours.get(&id)
                        .is_none_or(|(s, a)| !s.starts_with("succeeded") || *a != r.amount)
                })
                .map(|r| {
                    let id = r
                        .metadata
                        .get("ledger_refund_id")
                        .cloned()
                        .unwrap_or_default();
                    format!(
                        "stripe {} {} {} for {id}: ledger {:?}",
                        r.id,
                        r.amount,
                        r.status,
                        ours.get(&id)
                    )
                })
                .collect();
            violations.push(format!(
                "{charge}: Stripe refunded {stripe_refunded}, the ledger says {ledger_refunded}; {unmatched:?}"
            ));
        }
    }
    // 5. The projections equal a rebuild; 6. the audit chain verifies.
    drop(services);
    let live = read_models(pool).await;
    let rebuilt = cli(database_url, &["projections", "rebuild"]).await;
    if !rebuilt.status.success() {
        violations.push(format!(
            "rebuild failed: {}",
            String::from_utf8_lossy(&rebuilt.stderr)
        ));
    }
    let after = read_models(pool).await;
    for (index, (live, after)) in live.iter().zip(&after).enumerate() {
        if live != after {
            violations.push(format!("read model {index} differs from its rebuild"));
        }
    }
    let verified = cli(database_url, &["audit", "verify"]).await;
    if !verified.status.success() {
        violations.push(format!(
            "audit verify: {}",
            String::from_utf8_lossy(&verified.stdout)
        ));
    }

    no_internal_errors(counters, &mut violations);
    (violations, stripe_refunds)
}

/// A 500 is a fault of the service's own: a request cut by a kill gets no answer, and an
/// unreachable database is a 503 (retry later).
fn no_internal_errors(counters: &Counters, violations: &mut Vec<String>) {
    let internal = counters.internal_errors.load(Ordering::Relaxed);
    if internal > 0 {
        violations.push(format!("{internal} requests answered 500"));
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn print_table(title: &str, counters: &Counters, acked: &Acknowledged, rows: Vec<(&str, String)>) {
    println!("\n| {title} | |\n|---|---:|");
    let load = counters.requests.load(Ordering::Relaxed);
    let answered = [
        ("requests sent", load),
        (
            "acknowledged",
            counters.acknowledged.load(Ordering::Relaxed),
        ),
        (
            "refused (4xx/5xx)",
            counters.refused.load(Ordering::Relaxed),
        ),
        (
            "of which 500",
            counters.internal_errors.load(Ordering::Relaxed),
        ),
        ("cut (no answer)", counters.cut.load(Ordering::Relaxed)),
    ];
    let (first, last) = rows.split_at(rows.len().saturating_sub(2));
    for (name, value) in first {
        println!("| {name} | {value} |");
    }
    for (name, value) in answered {
        println!("| {name} | {value} |");
    }
    println!(
        "| acknowledged refunds / webhooks / apps | {} / {} / {} |",
        acked.refunds.len(),
        acked.webhooks.len(),
        acked.apps.len()
    );
    for (name, value) in last {
        println!("| {name} | {value} |");
    }
}

#[tokio::test]
async fn sigkill_at_random_instants_under_mixed_load_loses_and_repeats_nothing() {
    let kills: usize = std::env::var("CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let stripe = FakeStripe::start().await.expect("fake");
    let database_url = fresh_database().await;
    let http = http_client();
    // Several instances share the database, as when the service scales out; each round one of
    // them is killed and started again while the others keep serving.
    let instances: usize = std::env::var("CHAOS_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let mut services: Vec<Service> = (0..instances)
        .map(|_| spawn(&database_url, &stripe))
        .collect();
    connect_app(&http, &services[0], &stripe, ACCOUNT).await;
    let charges: Vec<String> = (0..CHARGES)
        .map(|_| stripe.create_charge(ACCOUNT, 10_000, "usd"))
        .collect();
    let mut acked = Acknowledged::default();
    let counters = Counters::default();
    let mut faults = 0;

    for round in 0..kills {
        let addresses = services.iter().map(|s| s.address.clone()).collect();
        let (load, clients) = Load::start(addresses, &http, &charges, &round.to_string());
        // Stripe misbehaves too: errors, rate limits, slow answers, unreadable answers, and
        // refunds created whose answer is lost.
        faults += inject_stripe_faults(&stripe);
        let pause = rand::thread_rng().gen_range(200..1200);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let victim = rand::thread_rng().gen_range(0..services.len());
        services.swap_remove(victim).kill9();
        load.finish(clients, &mut acked, &counters).await;
        services.push(spawn(&database_url, &stripe));
    }

    let (violations, stripe_refunds) = check_invariants(
        &http,
        services,
        &database_url,
        &stripe,
        &charges,
        &acked,
        &counters,
    )
    .await;
    print_table(
        "chaos: SIGKILL under mixed load",
        &counters,
        &acked,
        vec![
            (
                "processes killed (SIGKILL), instances sharing the database",
                format!("{kills}, {instances}"),
            ),
            (
                "Stripe faults queued (500, 429, slow, unreadable, answer lost)",
                faults.to_string(),
            ),
            ("refunds at Stripe", stripe_refunds.to_string()),
            ("invariant violations", violations.len().to_string()),
        ],
    );
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(
        !acked.refunds.is_empty() && !acked.webhooks.is_empty() && !acked.apps.is_empty(),
        "the load did something"
    );
}

/// Polls `/readyz` until it answers `want`; returns how long that took, or None after `limit`.
async fn await_readiness(
    http: &reqwest::Client,
    base: &str,
    want: u16,
    limit: Duration,
) -> Option<Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        let status = http
            .get(format!("{base}/readyz"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if status.ok() == Some(want) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// PostgreSQL crashes (immediate shutdown: no checkpoint, every connection cut) under the mixed
/// load and comes back after a few seconds: the instances say they are not ready while it is
/// gone, become ready again by themselves, and nothing they acknowledged is lost. The cluster
/// is the test's own, so the other tests keep their server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_not_ready_then_recovered_and_nothing_lost() {
    let restarts: usize = std::env::var("CHAOS_PG_RESTARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let cluster = PrivateCluster::start().await;
    let database_url = cluster.url();
    let stripe = FakeStripe::start().await.expect("fake");
    let http = http_client();
    let services: Vec<Service> = (0..2).map(|_| spawn(&database_url, &stripe)).collect();
    connect_app(&http, &services[0], &stripe, ACCOUNT).await;
    let charges: Vec<String> = (0..CHARGES)
        .map(|_| stripe.create_charge(ACCOUNT, 10_000, "usd"))
        .collect();
    let addresses: Vec<String> = services.iter().map(|s| s.address.clone()).collect();
    let mut acked = Acknowledged::default();
    let counters = Counters::default();
    let mut violations = Vec::new();
    let (mut not_ready_after, mut ready_after) = (Vec::new(), Vec::new());

    for round in 0..restarts {
        let (load, clients) =
            Load::start(addresses.clone(), &http, &charges, &format!("pg{round}"));
        let pause = rand::thread_rng().gen_range(300..1000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        tokio::task::block_in_place(|| cluster.crash_server());
        for base in &addresses {
            match await_readiness(&http, base, 503, Duration::from_secs(10)).await {
                Some(took) => not_ready_after.push(took),
                None => violations.push(format!("{base} still ready 10 s after PostgreSQL died")),
            }
        }
        // The load goes on against a service without its database for a while.
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::block_in_place(|| cluster.start_server());
        for base in &addresses {
            match await_readiness(&http, base, 200, Duration::from_secs(60)).await {
                Some(took) => ready_after.push(took),
                None => {
                    violations.push(format!("{base} not ready 60 s after PostgreSQL came back"))
                }
            }
        }
        // And on against the recovered service: it must acknowledge work again.
        let acknowledged_before = load.counters.acknowledged.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        if load.counters.acknowledged.load(Ordering::Relaxed) == acknowledged_before {
            violations.push(format!(
                "round {round}: nothing acknowledged after recovery"
            ));
        }
        load.finish(clients, &mut acked, &counters).await;
    }

    let (mut found, stripe_refunds) = check_invariants(
        &http,
        services,
        &database_url,
        &stripe,
        &charges,
        &acked,
        &counters,
    )
    .await;
    violations.append(&mut found);
    let slowest = |d: &[Duration]| {
        d.iter()
            .max()
            .map_or("-".to_owned(), |d| format!("{} ms", d.as_millis()))
    };
    print_table(
        "chaos: PostgreSQL crashed and restarted under mixed load",
        &counters,
        &acked,
        vec![
            (
                "PostgreSQL crashes (immediate stop, 2 s down), instances",
                format!("{restarts}, 2"),
            ),
            ("slowest to report not ready", slowest(&not_ready_after)),
            ("slowest to be ready again", slowest(&ready_after)),
            ("refunds at Stripe", stripe_refunds.to_string()),
            ("invariant violations", violations.len().to_string()),
        ],
    );
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(
        !acked.refunds.is_empty() && !acked.webhooks.is_empty() && !acked.apps.is_empty(),
        "the load did something"
    );
}
