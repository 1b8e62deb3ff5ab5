//! Stripe webhooks: verified, stored once, reconciled into the ledger.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use connect_ledger::fake_stripe::Fault;
use connect_ledger::webhooks::signature::sign;
use rand::seq::SliceRandom;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{fresh_database, settings, spawn_app, spawn_app_with, TestApp};

const SECRET: &str = "whsec_test_secret";
const ACCOUNT: &str = "acct_1Hooks";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl TestApp {
    pub async fn deliver_raw(&self, body: &[u8], signature: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/api/stripe/webhooks", self.address))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        request.send().await.expect("delivery reaches the service")
    }

    pub async fn deliver(&self, event: &Value) -> reqwest::Response {
        let body = serde_json::to_vec(event).expect("json");
        let signature = sign(&body, SECRET, now());
        self.deliver_raw(&body, Some(&signature)).await
    }

    /// Waits until the inbox row for `event_id` reaches a final status; returns it.
    pub async fn processed(&self, event_id: &str) -> (String, Option<String>) {
        for _ in 0..300 {
            let row: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT status, outcome FROM webhook_events WHERE event_id = $1")
                    .bind(event_id)
                    .fetch_optional(&self.pool)
                    .await
                    .expect("inbox");
            if let Some((status, outcome)) = row {
                if ["handled", "ignored", "unmatched", "dead"].contains(&status.as_str()) {
                    self.projections_settled().await;
                    return (status, outcome);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("event {event_id} was never processed");
    }

    async fn inbox_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM webhook_events")
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }
}

fn event(kind: &str, account: Option<&str>, object: Value) -> Value {
    let mut event = json!({
        "id": format!("evt_{}", uuid::Uuid::new_v4().simple()),
        "object": "event",
        "api_version": "2026-09-30.endive",
        "created": now(),
        "data": {"object": object},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": kind,
    });
    if let Some(account) = account {
        event["account"] = json!(account);
    }
    event
}

/// Stripe's own example objects (../shared/stripe/fixtures3.json), when present beside the repo.
fn fixture(name: &str) -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/stripe/fixtures3.json");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|all| all["resources"][name].as_object().cloned())
        .map(Value::Object)
        .unwrap_or_else(|| json!({"object": name}))
}

fn refund_object(id: &str, charge: &str, amount: i64, status: &str, metadata: Value) -> Value {
    let mut refund = fixture("refund");
    refund["id"] = json!(id);
    refund["charge"] = json!(charge);
    refund["amount"] = json!(amount);
    refund["status"] = json!(status);
    refund["metadata"] = metadata;
    refund["object"] = json!("refund");
    refund
}

#[tokio::test]
async fn signatures_from_the_official_library_are_accepted_and_bad_ones_store_nothing() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&event(
        "customer.created",
        None,
        json!({"id": "cus_1", "object": "customer"}),
    ))
    .expect("json");
    let t = now();
    let oracle = Command::new("python3")
        .args([
            "-c",
            "import stripe,sys; print(stripe.WebhookSignature.generate_signature_header(sys.argv[1], sys.argv[2], timestamp=int(sys.argv[3])))",
        ])
        .arg(std::str::from_utf8(&body).expect("utf8"))
        .arg(SECRET)
        .arg(t.to_string())
        .output()
        .expect("python3 with the stripe package (scripts/test installs it)");
    assert!(
        oracle.status.success(),
        "{}",
        String::from_utf8_lossy(&oracle.stderr)
    );
    let header = String::from_utf8(oracle.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert_eq!(
        header,
        sign(&body, SECRET, t),
        "our signer agrees with Stripe's library"
    );

    let mut tampered = body.clone();
    let last = tampered.len() - 2;
    tampered[last] ^= 1;
    let not_json = b"this is not json".to_vec();
    let cases: Vec<(Vec<u8>, Option<String>)> = vec![
        (tampered, Some(header.clone())),
        (body.clone(), Some(sign(&body, "whsec_wrong", t))),
        (body.clone(), Some(sign(&body, SECRET, t - 301))),
        (body.clone(), None),
        (body.clone(), Some("garbage".into())),
        (body.clone(), Some("t=,v1=".into())),
        (not_json.clone(), Some(sign(&not_json, SECRET, t))),
        (b"{}".to_vec(), Some(sign(b"{}", SECRET, t))),
    ];
    for (payload, signature) in cases {
        let response = app.deliver_raw(&payload, signature.as_deref()).await;
        assert_eq!(response.status(), 400, "{signature:?}");
        let error: Value = response.json().await.expect("json");
        assert!(error["error"]["code"].is_string());
    }
    assert_eq!(
        app.inbox_count().await,
        0,
        "nothing stored for any bad delivery"
    );

    let ok = app.deliver_raw(&body, Some(&header)).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.expect("json")["duplicate"], false);
    let again = app
        .deliver_raw(&body, Some(&sign(&body, SECRET, now())))
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.json::<Value>().await.expect("json")["duplicate"],
        true
    );
    assert_eq!(app.inbox_count().await, 1);
    let id = serde_json::from_slice::<Value>(&body).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(app.processed(&id).await.0, "ignored");
}

#[tokio::test]
async fn a_secret_roll_accepts_both_secrets() {
    let stripe = connect_ledger::fake_stripe::FakeStripe::start()
        .await
        .expect("fake");
    let database_url = fresh_database().await;
    let mut settings = settings(&database_url, &stripe);
    settings.stripe_webhook_secret = Some("whsec_new, whsec_old".into());
    let app = spawn_app_with(settings, stripe).await;
    for secret in ["whsec_old", "whsec_new"] {
        let body = serde_json::to_vec(&event("customer.updated", None, json!({"id": "cus_1"})))
            .expect("json");
        let response = app
            .deliver_raw(&body, Some(&sign(&body, secret, now())))
            .await;
        assert_eq!(response.status(), 200, "{secret}");
    }
    let body =
        serde_json::to_vec(&event("customer.updated", None, json!({"id": "cus_2"}))).expect("json");
    let both = format!(
        "{},{}",
        sign(&body, "whsec_gone", now()),
        sign(&body, "whsec_old", now())
            .split(',')
            .nth(1)
            .expect("v1")
    );
    assert_eq!(app.deliver_raw(&body, Some(&both)).await.status(), 200);
}

#[tokio::test]
async fn refund_news_reconciles_our_refunds_and_records_dashboard_refunds() {
    let app = spawn_app().await;
    app.connected_app("hooks", ACCOUNT).await;
    let charge = app.stripe.create_charge(ACCOUNT, 5000, "usd");
    app.stripe.set_refund_status("pending");
    let ours: Value = app
        .refund("hooks", &charge, "w1", Some(1000))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ours["status"], "pending");
    let re = ours["stripe_refund_id"].as_str().expect("re").to_owned();
    let meta = json!({"ledger_refund_id": ours["id"]});

    // Stripe confirms; then a late `pending` arrives, which must not undo it.
    let confirmed = event(
        "refund.updated",
        Some(ACCOUNT),
        refund_object(&re, &charge, 1000, "succeeded", meta.clone()),
    );
    assert_eq!(app.deliver(&confirmed).await.status(), 200);
    assert_eq!(
        app.processed(confirmed["id"].as_str().expect("id")).await.0,
        "handled"
    );
    let late = event(
        "charge.refund.updated",
        Some(ACCOUNT),
        refund_object(&re, &charge, 1000, "pending", meta.clone()),
    );
    app.deliver(&late).await;
    app.processed(late["id"].as_str().expect("id")).await;
    let now_ours: Value = app
        .get(&format!("/v1/refunds/{}", ours["id"].as_str().expect("id")))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(now_ours["status"], "succeeded");

    // A refund made in the Dashboard, announced by Stripe.
    let dashboard = app
        .stripe
        .refund_in_dashboard(&charge, 1500)
        .expect("refund");
    let created = event(
        "refund.created",
        Some(ACCOUNT),
        refund_object(&dashboard.id, &charge, 1500, "succeeded", json!({})),
    );
    app.deliver(&created).await;
    assert_eq!(
        app.processed(created["id"].as_str().expect("id")).await.0,
        "handled"
    );
    let ledger: Value = app
        .get(&format!("/v1/charges/{charge}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (ledger["refunded"].as_i64(), ledger["refundable"].as_i64()),
        (Some(2500), Some(2500))
    );

    // The same information twice (another event id) changes nothing.
    let twice = event(
        "refund.updated",
        Some(ACCOUNT),
        refund_object(&dashboard.id, &charge, 1500, "succeeded", json!({})),
    );
    app.deliver(&twice).await;
    app.processed(twice["id"].as_str().expect("id")).await;
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'ExternalRefundObserved'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(count, 1);

    // Our refund fails later at the bank.
    let failed = event("refund.failed", Some(ACCOUNT), {
        let mut object = refund_object(&re, &charge, 1000, "failed", meta);
        object["failure_reason"] = json!("expired_or_canceled_card");
        object
    });
    app.deliver(&failed).await;
    app.processed(failed["id"].as_str().expect("id")).await;
    let after: Value = app
        .get(&format!("/v1/refunds/{}", ours["id"].as_str().expect("id")))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (after["status"].as_str(), after["failure_reason"].as_str()),
        (Some("failed"), Some("expired_or_canceled_card"))
    );
    let ledger: Value = app
        .get(&format!("/v1/charges/{charge}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ledger["refunded"], 1500);
}

#[tokio::test]
async fn charge_refunded_on_an_unseen_charge_lists_its_refunds() {
    let app = spawn_app().await;
    app.connected_app("hooks", ACCOUNT).await;
    let charge = app.stripe.create_charge(ACCOUNT, 3000, "usd");
    app.stripe.refund_in_dashboard(&charge, 1200);
    let mut object = app.stripe.charge_object(&charge).expect("charge");
    object["refunds"] = Value::Null;
    let refunded = event("charge.refunded", Some(ACCOUNT), object);
    app.deliver(&refunded).await;
    let (status, outcome) = app.processed(refunded["id"].as_str().expect("id")).await;
    assert_eq!(status, "handled", "{outcome:?}");
    let ledger: Value = app
        .get(&format!("/v1/charges/{charge}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        ledger,
        json!({"charge_id": charge, "app": "hooks", "amount": 3000, "currency": "usd",
               "refunded": 1200, "pending": 0, "refundable": 1800})
    );
}

#[tokio::test]
async fn deauthorization_disconnects_and_unknown_accounts_and_types_are_kept() {
    let app = spawn_app().await;
    app.connected_app("leaver", ACCOUNT).await;
    let mut application = fixture("application");
    application["id"] = json!("ca_fake_client");
    let gone = event(
        "account.application.deauthorized",
        Some(ACCOUNT),
        application.clone(),
    );
    app.deliver(&gone).await;
    assert_eq!(
        app.processed(gone["id"].as_str().expect("id")).await.0,
        "handled"
    );
    let stored: Value = app.get("/v1/apps/leaver").await.json().await.expect("json");
    assert_eq!(stored["status"], "disconnected");
    let source: String = sqlx::query_scalar(
        "SELECT metadata->>'source' || ' ' || (metadata->>'stripe_event_id') FROM events WHERE event_type = 'AppDisconnected'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("event");
    assert_eq!(
        source,
        format!("stripe_webhook {}", gone["id"].as_str().expect("id"))
    );

    // Again (Stripe retries): nothing more happens.
    let again = event(
        "account.application.deauthorized",
        Some(ACCOUNT),
        application.clone(),
    );
    app.deliver(&again).await;
    assert_eq!(
        app.processed(again["id"].as_str().expect("id")).await.0,
        "handled"
    );

    let stranger = event(
        "account.application.deauthorized",
        Some("acct_nobody"),
        application,
    );
    app.deliver(&stranger).await;
    assert_eq!(
        app.processed(stranger["id"].as_str().expect("id")).await.0,
        "unmatched"
    );
    let unknown = event(
        "invoice.paid",
        Some(ACCOUNT),
        json!({"id": "in_1", "object": "invoice"}),
    );
    app.deliver(&unknown).await;
    assert_eq!(
        app.processed(unknown["id"].as_str().expect("id")).await.0,
        "ignored"
    );
    let listed: Value = app
        .get("/v1/webhooks/events?status=unmatched")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["events"][0]["event_id"], stranger["id"]);
}

#[tokio::test]
async fn a_poison_event_is_parked_without_blocking_others_and_can_be_retried() {
    let app = spawn_app().await;
    app.connected_app("hooks", ACCOUNT).await;
    let unseen = app.stripe.create_charge(ACCOUNT, 1000, "usd");
    // Stripe cannot tell us about the charge for a while: the event keeps failing.
    for _ in 0..40 {
        app.stripe.inject("charges.retrieve", Fault::Status(500));
    }
    let poison = event(
        "refund.created",
        Some(ACCOUNT),
        refund_object("re_poison", &unseen, 100, "succeeded", json!({})),
    );
    app.deliver(&poison).await;
    let fine = event("customer.created", None, json!({"id": "cus_1"}));
    app.deliver(&fine).await;
    assert_eq!(
        app.processed(fine["id"].as_str().expect("id")).await.0,
        "ignored"
    );
    let (status, _) = app.processed(poison["id"].as_str().expect("id")).await;
    assert_eq!(status, "dead");
    let dead: Value = app
        .get("/v1/webhooks/events?status=dead")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(dead["events"][0]["attempts"], 8);
    assert!(dead["events"][0]["last_error"].is_string());

    // Stripe is back; an operator retries the dead letter.
    app.stripe.forget_faults();
    let retried = app
        .request(
            Method::POST,
            &format!(
                "/v1/webhooks/events/{}/retry",
                poison["id"].as_str().expect("id")
            ),
            Some(crate::helpers::OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(retried.status(), 200);
    assert_eq!(
        app.processed(poison["id"].as_str().expect("id")).await.0,
        "handled"
    );
    let auditor = app
        .request(
            Method::POST,
            "/v1/webhooks/retry-dead",
            Some(crate::helpers::AUDITOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(auditor.status(), 403);
}

#[tokio::test]
async fn backfill_feeds_missed_events_through_the_same_path() {
    let app = spawn_app().await;
    app.connected_app("hooks", ACCOUNT).await;
    let charge = app.stripe.create_charge(ACCOUNT, 2000, "usd");
    // Our endpoint was down: these were never delivered.
    app.stripe.refund_in_dashboard(&charge, 300);
    app.stripe.refund_in_dashboard(&charge, 200);
    let response = app
        .post(
            "/v1/webhooks/backfill",
            json!({"since": now() - 3600, "until": now() + 3600}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.expect("json");
    assert_eq!(
        (report["listed"].as_i64(), report["stored"].as_i64()),
        (Some(2), Some(2))
    );
    for event in app.stripe.events() {
        let (status, outcome) = app.processed(event["id"].as_str().expect("id")).await;
        assert_eq!(status, "handled", "{outcome:?}");
    }
    let ledger: Value = app
        .get(&format!("/v1/charges/{charge}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ledger["refunded"], 500);
    let again: Value = app
        .post("/v1/webhooks/backfill", json!({"since": now() - 3600}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["stored"], 0, "a second backfill stores nothing new");
}

/// Builds `n` events about external refunds on a few charges of one app.
async fn many_events(app: &TestApp, n: usize) -> Vec<Value> {
    app.connected_app("hooks", ACCOUNT).await;
    let charges: Vec<String> = (0..20)
        .map(|_| app.stripe.create_charge(ACCOUNT, 1_000_000, "usd"))
        .collect();
    (0..n)
        .map(|i| {
            let charge = &charges[i % charges.len()];
            let status = if i % 7 == 0 { "pending" } else { "succeeded" };
            event(
                "refund.created",
                Some(ACCOUNT),
                refund_object(
                    &format!("re_bulk_{i}"),
                    charge,
                    10 + i as i64,
                    status,
                    json!({}),
                ),
            )
        })
        .collect()
}

async fn ledger_state(app: &TestApp) -> (Vec<String>, Vec<String>) {
    let external: Vec<String> = sqlx::query_scalar(
        "SELECT stripe_refund_id || ':' || charge_id || ':' || amount || ':' || status FROM external_refunds ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .expect("external");
    let charges: Vec<String> = sqlx::query_scalar(
        "SELECT charge_id || ':' || amount || ':' || refunded || ':' || pending || ':' || refundable FROM charges ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .expect("charges");
    (external, charges)
}

async fn settle_inbox(app: &TestApp, expected: i64) {
    for _ in 0..600 {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM webhook_events WHERE status NOT IN ('handled', 'ignored', 'unmatched', 'dead')",
        )
        .fetch_one(&app.pool)
        .await
        .expect("count");
        if open == 0 && app.inbox_count().await == expected {
            app.projections_settled().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the inbox did not drain");
}

#[tokio::test]
async fn a_thousand_events_delivered_five_times_shuffled_are_processed_once() {
    let shuffled = spawn_app().await;
    let events = many_events(&shuffled, 1000).await;
    let mut deliveries: Vec<&Value> = events
        .iter()
        .flat_map(|e| std::iter::repeat_n(e, 5))
        .collect();
    deliveries.shuffle(&mut rand::thread_rng());
    let queue = std::sync::Mutex::new(deliveries.into_iter());
    let senders = (0..8).map(|_| async {
        loop {
            let next = queue.lock().expect("queue").next();
            let Some(event) = next else { break };
            let response = shuffled.deliver(event).await;
            assert_eq!(response.status(), 200);
        }
    });
    futures::future::join_all(senders).await;
    settle_inbox(&shuffled, 1000).await;
    let attempts: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT status, sum(attempts)::bigint FROM webhook_events GROUP BY status",
    )
    .fetch_all(&shuffled.pool)
    .await
    .expect("statuses")
    .into_iter()
    .collect();
    assert_eq!(
        attempts,
        HashMap::from([("handled".to_owned(), 1000)]),
        "each processed exactly once"
    );
    let observed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'ExternalRefundObserved'",
    )
    .fetch_one(&shuffled.pool)
    .await
    .expect("count");
    assert_eq!(observed, 1000);

    // The same events once each, in order, against a fresh service.
    let ordered = spawn_app().await;
    ordered.connected_app("hooks", ACCOUNT).await;
    for (id, charge) in shuffled.stripe.charges() {
        ordered.stripe.adopt_charge(&id, charge);
    }
    for event in &events {
        assert_eq!(ordered.deliver(event).await.status(), 200);
    }
    settle_inbox(&ordered, 1000).await;
    assert_eq!(ledger_state(&shuffled).await, ledger_state(&ordered).await);
}

#[tokio::test]
async fn an_oversized_delivery_is_413_in_the_error_shape_and_stores_nothing() {
    let app = spawn_app().await;
    let body = vec![b' '; 1024 * 1024 + 1];
    let response = app
        .deliver_raw(&body, Some(&sign(&body, SECRET, now())))
        .await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["code"], "payload_too_large");
    assert_eq!(app.inbox_count().await, 0);
}

#[tokio::test]
async fn concurrent_deliveries_share_commits_yet_each_id_is_new_exactly_once() {
    let app = spawn_app().await;
    // 50 events of a type the ledger ignores, each delivered four times, all at once: the
    // deliveries are grouped into shared inserts, duplicates of one id often in the same one.
    let events: Vec<Value> = (0..50)
        .map(|i| {
            event(
                "customer.created",
                Some(ACCOUNT),
                json!({"id": format!("cus_{i}"), "object": "customer"}),
            )
        })
        .collect();
    let deliveries = events
        .iter()
        .flat_map(|e| std::iter::repeat_n(e, 4))
        .map(|e| async {
            let response = app.deliver(e).await;
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.expect("json");
            (body["duplicate"] == false).then(|| e["id"].as_str().unwrap_or_default().to_owned())
        });
    let firsts: Vec<String> = futures::future::join_all(deliveries)
        .await
        .into_iter()
        .flatten()
        .collect();
    let mut unique = firsts.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(firsts.len(), 50, "each id answered new exactly once");
    assert_eq!(unique.len(), 50);
    let stored: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM webhook_events GROUP BY status")
            .fetch_all(&app.pool)
            .await
            .expect("inbox");
    assert_eq!(
        stored,
        vec![("ignored".to_owned(), 50)],
        "stored once each, never queued"
    );
}
