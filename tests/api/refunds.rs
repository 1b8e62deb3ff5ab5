//! Refunds on connected accounts against the in-process fake Stripe, with faults.

use std::time::Duration;

use connect_ledger::fake_stripe::Fault;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app, TestApp, AUDITOR_TOKEN};

const ACCOUNT: &str = "acct_1Refunds";

async fn app_with_charge(amount: i64) -> (TestApp, String) {
    let app = spawn_app().await;
    app.connected_app("shop", ACCOUNT).await;
    let charge = app.stripe.create_charge(ACCOUNT, amount, "usd");
    (app, charge)
}

async fn charge_ledger(app: &TestApp, charge: &str) -> Value {
    app.get(&format!("/v1/charges/{charge}"))
        .await
        .json()
        .await
        .expect("json")
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn a_partial_refund_reaches_stripe_once_with_the_account_and_key() {
    let (app, charge) = app_with_charge(5000).await;
    let response = app.refund("shop", &charge, "appr_1", Some(2000)).await;
    assert_eq!(response.status(), 201);
    let refund: Value = response.json().await.expect("json");
    assert_eq!(refund["status"], "succeeded");
    assert_eq!(refund["amount"], 2000);
    assert_eq!(refund["currency"], "usd");
    assert_eq!(refund["app"], "shop");
    assert_eq!(refund["reason"], "requested_by_customer");
    assert_eq!(refund["idempotency_key"], "refund:pur_1:appr_1");
    assert_eq!(refund["requested_by"], "agent@support.example");
    assert!(refund["stripe_refund_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("re_")));
    for field in [
        "id",
        "purchase_id",
        "charge_id",
        "approval_id",
        "failure_reason",
        "created_at",
        "updated_at",
    ] {
        assert!(refund.get(field).is_some(), "{field}");
    }

    let posts = app.stripe.requests_to("/v1/refunds");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].stripe_account.as_deref(), Some(ACCOUNT));
    assert_eq!(
        posts[0].idempotency_key.as_deref(),
        Some("refund:pur_1:appr_1")
    );
    assert_eq!(posts[0].param("amount"), Some("2000"));
    assert_eq!(posts[0].param("charge"), Some(charge.as_str()));
    assert_eq!(posts[0].param("reason"), Some("requested_by_customer"));
    assert_eq!(
        posts[0].param("metadata[ledger_refund_id]"),
        refund["id"].as_str()
    );
    let lookup = app.stripe.requests_to(&format!("/v1/charges/{charge}"));
    assert_eq!(lookup[0].stripe_account.as_deref(), Some(ACCOUNT));

    assert_eq!(
        charge_ledger(&app, &charge).await,
        json!({"charge_id": charge, "app": "shop", "amount": 5000, "currency": "usd",
               "refunded": 2000, "pending": 0, "refundable": 3000})
    );
    let id = refund["id"].as_str().expect("id");
    let one = app
        .request(
            Method::GET,
            &format!("/v1/refunds/{id}"),
            Some(AUDITOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(one.status(), 200);
    assert_eq!(one.json::<Value>().await.expect("json"), refund);
    for query in [
        "app=shop",
        "purchase_id=pur_1",
        &format!("charge_id={charge}"),
        "status=succeeded",
    ] {
        let list: Value = app
            .get(&format!("/v1/refunds?{query}"))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(list["refunds"].as_array().map(Vec::len), Some(1), "{query}");
    }
    let none: Value = app
        .get("/v1/refunds?status=failed")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(none["refunds"], json!([]));
}

/// A refund's answer does not wait for the read models (docs/decisions/0031); a read after it
/// does. An open transaction holds the projections below the refund's events (their horizon)
/// until the test ends it.
#[tokio::test]
async fn a_read_after_an_answer_waits_until_the_read_models_show_it() {
    let (app, charge) = app_with_charge(5000).await;
    let mut horizon = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *horizon)
        .await
        .expect("an id older than the refund's events");
    let response = app.refund("shop", &charge, "appr_1", Some(2000)).await;
    assert_eq!(response.status(), 201);
    let refund: Value = response.json().await.expect("json");
    assert_eq!(refund["status"], "succeeded");
    let id = refund["id"].as_str().expect("id").to_owned();
    assert_eq!(
        count(&app, "SELECT count(*) FROM refunds").await,
        0,
        "the projection cannot have applied the refund yet"
    );

    let reads = [
        format!("/v1/refunds/{id}"),
        format!("/v1/refunds?charge_id={charge}"),
        format!("/v1/charges/{charge}"),
    ]
    .map(|path| {
        let (client, base) = (app.http.clone(), app.address.clone());
        tokio::spawn(async move {
            let response = client
                .get(format!("{base}{path}"))
                .bearer_auth(crate::helpers::OPERATOR_TOKEN)
                .send()
                .await
                .expect("read");
            (
                response.status(),
                response.json::<Value>().await.expect("json"),
            )
        })
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for read in &reads {
        assert!(
            !read.is_finished(),
            "a read answered before the read models showed the refund"
        );
    }
    horizon.rollback().await.expect("rollback");

    let [one, listed, ledger] = reads;
    let (status, one) = one.await.expect("read");
    assert_eq!(status, 200);
    assert_eq!(one, refund, "the read shows what the answer said");
    let (_, listed) = listed.await.expect("read");
    assert_eq!(listed["refunds"], json!([refund]));
    let (_, ledger) = ledger.await.expect("read");
    assert_eq!(ledger["refunded"], 2000);
}

#[tokio::test]
async fn full_then_once_more_then_too_much() {
    let (app, charge) = app_with_charge(3000).await;
    assert_eq!(
        app.refund("shop", &charge, "a1", Some(1000)).await.status(),
        201
    );
    let rest: Value = app
        .refund("shop", &charge, "a2", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        rest["amount"], 2000,
        "omitted amount = all that is still refundable"
    );
    assert_eq!(rest["status"], "succeeded");

    // Once more: everything is already refunded. Not an error for whoever asked for it all.
    let again = app.refund("shop", &charge, "a3", None).await;
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["status"], "canceled");
    assert_eq!(again["failure_reason"], "charge_already_refunded");
    let ledger = charge_ledger(&app, &charge).await;
    assert_eq!(
        (ledger["refunded"].as_i64(), ledger["refundable"].as_i64()),
        (Some(3000), Some(0))
    );

    let too_much = app.refund("shop", &charge, "a4", Some(1)).await;
    assert_eq!(too_much.status(), 422);
    assert_eq!(error_code(too_much).await, "amount_exceeds_refundable");
    assert_eq!(app.stripe.refunds_of(&charge).len(), 2);
    assert_eq!(
        app.stripe.charge(&charge).map(|c| c.amount_refunded),
        Some(3000)
    );
}

#[tokio::test]
async fn a_refused_amount_records_nothing_and_frees_the_approval() {
    let (app, charge) = app_with_charge(1000).await;
    let response = app.refund("shop", &charge, "a1", Some(1001)).await;
    assert_eq!(response.status(), 422);
    assert_eq!(error_code(response).await, "amount_exceeds_refundable");
    assert_eq!(count(&app, "SELECT count(*) FROM refunds").await, 0);
    assert!(app.stripe.requests_to("/v1/refunds").is_empty());
    let corrected = app.refund("shop", &charge, "a1", Some(1000)).await;
    assert_eq!(corrected.status(), 201);
}

#[tokio::test]
async fn the_same_approval_is_one_refund_and_a_changed_one_is_409() {
    let (app, charge) = app_with_charge(1000).await;
    let first: Value = app
        .refund("shop", &charge, "a1", Some(400))
        .await
        .json()
        .await
        .expect("json");
    let replay = app.refund("shop", &charge, "a1", Some(400)).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(
        replay.json::<Value>().await.expect("json")["id"],
        first["id"]
    );
    let other_amount = app.refund("shop", &charge, "a1", Some(300)).await;
    assert_eq!(other_amount.status(), 409);
    assert_eq!(error_code(other_amount).await, "idempotency_key_reused");
    let other_charge = app.stripe.create_charge(ACCOUNT, 1000, "usd");
    let moved = app.refund("shop", &other_charge, "a1", Some(400)).await;
    assert_eq!(moved.status(), 409);
    assert_eq!(app.stripe.requests_to("/v1/refunds").len(), 1);
}

#[tokio::test]
async fn twenty_concurrent_posts_of_one_approval_make_one_refund() {
    let (app, charge) = app_with_charge(1000).await;
    let posts = (0..20).map(|_| app.refund("shop", &charge, "same", Some(250)));
    let responses = futures::future::join_all(posts).await;
    let mut ids = Vec::new();
    let mut created = 0;
    for response in responses {
        let status = response.status().as_u16();
        assert!(status == 201 || status == 200, "{status}");
        created += usize::from(status == 201);
        let body: Value = response.json().await.expect("json");
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(created, 1);
    ids.dedup();
    assert_eq!(ids.len(), 1, "every answer names the same refund");
    let refund = app
        .wait_for_refund(&ids[0], |r| r["status"] == "succeeded")
        .await;
    assert_eq!(refund["amount"], 250);
    assert_eq!(app.stripe.refunds_of(&charge).len(), 1);
    assert_eq!(count(&app, "SELECT count(*) FROM refunds").await, 1);
    assert!(app
        .stripe
        .requests_to("/v1/refunds")
        .iter()
        .all(|r| r.idempotency_key.as_deref() == Some("refund:pur_1:same")));
}

#[tokio::test]
async fn fifty_concurrent_partial_refunds_never_exceed_the_charge() {
    let (app, charge) = app_with_charge(10_000).await;
    let posts = (0..50).map(|i| {
        let app = &app;
        let charge = charge.clone();
        async move {
            app.refund("shop", &charge, &format!("appr_{i}"), Some(300))
                .await
        }
    });
    let responses = futures::future::join_all(posts).await;
    let mut accepted = 0;
    for response in responses {
        match response.status().as_u16() {
            201 => accepted += 1,
            422 => assert_eq!(error_code(response).await, "amount_exceeds_refundable"),
            other => panic!("unexpected status {other}: {:?}", response.text().await),
        }
    }
    assert_eq!(accepted, 33, "33 × 300 fit in 10,000");
    let fake = app.stripe.refunds_of(&charge);
    assert_eq!(fake.len(), 33);
    assert!(fake.iter().map(|r| r.amount).sum::<i64>() <= 10_000);
    // Each approval reached Stripe under its own single key.
    let mut keys: Vec<String> = fake
        .iter()
        .filter_map(|r| r.idempotency_key.clone())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 33);
    let ledger = charge_ledger(&app, &charge).await;
    assert_eq!(ledger["refunded"], 9900);
    assert_eq!(ledger["refundable"], 100);
    assert_eq!(
        app.stripe.charge(&charge).map(|c| c.amount_refunded),
        Some(9900)
    );
}

#[tokio::test]
async fn timeouts_and_500s_then_success_make_one_stripe_refund() {
    let (app, charge) = app_with_charge(1000).await;
    app.stripe.inject("refunds.create", Fault::Status(500));
    app.stripe
        .inject("refunds.create", Fault::Delay(Duration::from_millis(1500)));
    let response = app.refund("shop", &charge, "a1", Some(700)).await;
    assert_eq!(response.status(), 201);
    let refund: Value = response.json().await.expect("json");
    assert_eq!(refund["status"], "succeeded");
    let posts = app.stripe.requests_to("/v1/refunds");
    assert_eq!(posts.len(), 3, "500, timeout, success");
    assert!(posts
        .iter()
        .all(|p| p.idempotency_key.as_deref() == Some("refund:pur_1:a1")));
    assert_eq!(app.stripe.refunds_of(&charge).len(), 1);
}

#[tokio::test]
async fn a_lost_response_is_replayed_under_the_key_not_repeated() {
    let (app, charge) = app_with_charge(1000).await;
    app.stripe
        .inject("refunds.create", Fault::ExecuteThenFail(502));
    let refund: Value = app
        .refund("shop", &charge, "a1", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(refund["status"], "succeeded");
    assert_eq!(app.stripe.requests_to("/v1/refunds").len(), 2);
    assert_eq!(app.stripe.refunds_of(&charge).len(), 1);
    assert_eq!(
        app.stripe.charge(&charge).map(|c| c.amount_refunded),
        Some(1000)
    );
}

#[tokio::test]
async fn stripe_down_leaves_the_intent_and_the_worker_finishes_it() {
    let (app, charge) = app_with_charge(1000).await;
    for _ in 0..3 {
        app.stripe.inject("refunds.create", Fault::Status(503));
    }
    let response = app.refund("shop", &charge, "a1", Some(500)).await;
    assert_eq!(response.status(), 201, "accepted: the intent is durable");
    let refund: Value = response.json().await.expect("json");
    assert_eq!(refund["status"], "requested");
    let pending = charge_ledger(&app, &charge).await;
    assert_eq!(
        (pending["pending"].as_i64(), pending["refundable"].as_i64()),
        (Some(500), Some(500))
    );
    let done = app
        .wait_for_refund(refund["id"].as_str().expect("id"), |r| {
            r["status"] == "succeeded"
        })
        .await;
    assert!(done["stripe_refund_id"].is_string());
    assert_eq!(app.stripe.refunds_of(&charge).len(), 1);
    assert!(app
        .stripe
        .requests_to("/v1/refunds")
        .iter()
        .filter(|r| r.method == "POST")
        .all(|p| p.idempotency_key.as_deref() == Some("refund:pur_1:a1")));
}

#[tokio::test]
async fn rate_limits_are_retried_and_should_retry_false_is_honoured() {
    let (app, charge) = app_with_charge(1000).await;
    app.stripe
        .inject("refunds.create", Fault::ShouldRetry(429, true));
    let ok: Value = app
        .refund("shop", &charge, "a1", Some(100))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ok["status"], "succeeded");
    assert_eq!(app.stripe.requests_to("/v1/refunds").len(), 2);

    app.stripe
        .inject("refunds.create", Fault::ShouldRetry(500, false));
    let response = app.refund("shop", &charge, "a2", Some(100)).await;
    assert_eq!(
        response.status(),
        422,
        "Stripe said do not retry: a refusal"
    );
    assert_eq!(app.stripe.requests_to("/v1/refunds").len(), 3);
}

#[tokio::test]
async fn after_stripe_forgets_the_key_the_refund_is_found_not_repeated() {
    let (app, charge) = app_with_charge(1000).await;
    app.stripe
        .inject("refunds.create", Fault::ExecuteThenFail(500));
    app.stripe.inject("refunds.create", Fault::Status(503));
    app.stripe.inject("refunds.create", Fault::Status(503));
    let refund: Value = app
        .refund("shop", &charge, "a1", Some(600))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(refund["status"], "requested");
    // A day passes: Stripe no longer remembers the key. A blind retry would refund twice.
    app.stripe.forget_idempotency_keys();
    let done = app
        .wait_for_refund(refund["id"].as_str().expect("id"), |r| {
            r["status"] == "succeeded"
        })
        .await;
    let fake = app.stripe.refunds_of(&charge);
    assert_eq!(fake.len(), 1);
    assert_eq!(done["stripe_refund_id"], fake[0].id);
    assert!(
        !app.stripe
            .requests_to("/v1/refunds")
            .iter()
            .all(|r| r.method == "POST"),
        "it listed"
    );
}

#[tokio::test]
async fn stripe_refusing_the_amount_is_422_with_the_refund_recorded_failed() {
    let (app, charge) = app_with_charge(1000).await;
    app.stripe
        .inject("refunds.create", Fault::Delay(Duration::from_millis(300)));
    let refund = {
        let app = &app;
        let charge = charge.clone();
        async move { app.refund("shop", &charge, "a1", Some(800)).await }
    };
    let dashboard = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.stripe.refund_in_dashboard(&charge, 500)
    };
    let (response, _) = tokio::join!(refund, dashboard);
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "amount_exceeds_refundable");
    assert!(!body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("unrefunded amount"));
    let failed: Value = app
        .get("/v1/refunds?status=failed")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(failed["refunds"][0]["failure_reason"], "amount_too_large");
}

#[tokio::test]
async fn a_revoked_app_is_409_and_flagged_for_attention() {
    let (app, charge) = app_with_charge(1000).await;
    app.stripe.revoke(ACCOUNT);
    let response = app.refund("shop", &charge, "a1", Some(100)).await;
    assert_eq!(response.status(), 409);
    assert_eq!(error_code(response).await, "app_not_authorized");
    let reason: Option<String> =
        sqlx::query_scalar("SELECT attention_reason FROM apps WHERE slug = 'shop'")
            .fetch_one(&app.pool)
            .await
            .expect("row");
    assert_eq!(reason.as_deref(), Some("app_not_authorized"));
    assert_eq!(count(&app, "SELECT count(*) FROM refunds").await, 0);
}

#[tokio::test]
async fn disputed_charges_and_bad_requests_are_refused_and_change_nothing() {
    let (app, charge) = app_with_charge(1000).await;
    app.stripe.set_disputed(&charge);
    let disputed = app.refund("shop", &charge, "a1", None).await;
    assert_eq!(disputed.status(), 422);
    assert_eq!(error_code(disputed).await, "charge_disputed");

    let unknown_charge = app.refund("shop", "ch_doesnotexist", "a2", None).await;
    assert_eq!(unknown_charge.status(), 422);
    assert_eq!(error_code(unknown_charge).await, "charge_not_found");

    app.create_app("idle").await;
    let not_connected = app.refund("idle", &charge, "a3", None).await;
    assert_eq!(not_connected.status(), 409);
    assert_eq!(error_code(not_connected).await, "app_not_connected");
    assert_eq!(app.refund("ghost", &charge, "a4", None).await.status(), 404);

    let base = json!({"app": "shop", "purchase_id": "p", "charge_id": charge, "approval_id": "x", "requested_by": "me"});
    for (patch, code) in [
        (json!({"amount": 0}), "invalid_amount"),
        (json!({"amount": -5}), "invalid_amount"),
        (json!({"reason": "because"}), "invalid_reason"),
        (json!({"charge_id": "pi_123"}), "invalid_request"),
        (json!({"purchase_id": "has:colon"}), "invalid_request"),
        (json!({"approval_id": ""}), "invalid_request"),
        (json!({"requested_by": "  "}), "invalid_request"),
    ] {
        let mut body = base.clone();
        for (k, v) in patch.as_object().expect("object") {
            body[k] = v.clone();
        }
        let response = app.post("/v1/refunds", body.clone()).await;
        assert_eq!(response.status(), 422, "{body}");
        assert_eq!(error_code(response).await, code, "{body}");
    }
    let fractional = app
        .post("/v1/refunds", json!({"app": "shop", "purchase_id": "p", "charge_id": charge, "approval_id": "x", "requested_by": "me", "amount": 10.5}))
        .await;
    assert_eq!(fractional.status(), 400);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM events WHERE aggregate_type = 'ChargeLedger'"
        )
        .await,
        0
    );
    assert!(app.stripe.requests_to("/v1/refunds").is_empty());
}

#[tokio::test]
async fn a_pending_refund_holds_its_amount_until_it_settles() {
    let (app, charge) = app_with_charge(1000).await;
    app.stripe.set_refund_status("pending");
    let refund: Value = app
        .refund("shop", &charge, "a1", Some(400))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(refund["status"], "pending");
    let ledger = charge_ledger(&app, &charge).await;
    assert_eq!(
        (
            ledger["refunded"].as_i64(),
            ledger["pending"].as_i64(),
            ledger["refundable"].as_i64()
        ),
        (Some(0), Some(400), Some(600))
    );
}

#[tokio::test]
async fn auditors_read_refunds_and_charges_but_cannot_refund() {
    let (app, charge) = app_with_charge(1000).await;
    let body = json!({"app": "shop", "purchase_id": "p", "charge_id": charge, "approval_id": "x", "requested_by": "me"});
    let denied = app
        .request(Method::POST, "/v1/refunds", Some(AUDITOR_TOKEN), Some(body))
        .await;
    assert_eq!(denied.status(), 403);
    let list = app
        .request(Method::GET, "/v1/refunds", Some(AUDITOR_TOKEN), None)
        .await;
    assert_eq!(list.status(), 200);
    let missing = app
        .request(
            Method::GET,
            "/v1/charges/ch_unknown",
            Some(AUDITOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_circuit_stops_hammering_stripe_while_it_is_down_then_lets_the_refund_through() {
    let (app, charge) = app_with_charge(1000).await;
    for _ in 0..1000 {
        app.stripe.inject("refunds.create", Fault::Status(503));
    }
    let response = app.refund("shop", &charge, "a1", Some(500)).await;
    assert_eq!(response.status(), 201, "accepted: the intent is durable");
    let refund: Value = response.json().await.expect("json");
    assert_eq!(refund["status"], "requested");
    // Two seconds of outage: without a circuit the request's and the worker's retries (10 ms
    // base here) would reach Stripe dozens of times; with it, five failures open the circuit and
    // only single probes go out, ever more rarely (100 ms, 200 ms, 400 ms, 800 ms, …).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let posts = |app: &crate::helpers::TestApp| {
        app.stripe
            .requests_to("/v1/refunds")
            .iter()
            .filter(|r| r.method == "POST")
            .count()
    };
    let during_outage = posts(&app);
    assert!(
        (5..=12).contains(&during_outage),
        "{during_outage} calls reached Stripe in 2 s of outage"
    );
    app.stripe.forget_faults();
    let done = app
        .wait_for_refund(refund["id"].as_str().expect("id"), |r| {
            r["status"] == "succeeded"
        })
        .await;
    assert!(done["stripe_refund_id"].is_string());
    assert_eq!(app.stripe.refunds_of(&charge).len(), 1, "once at Stripe");
}

/// The service keeps the apps it has read for refunds, and uses a kept app only while the key
/// claim finds it at the same event: a disconnect and a reconnection to another account between
/// two refunds are seen by the next one.
#[tokio::test]
async fn a_refund_sees_the_app_as_its_last_event_left_it() {
    let (app, charge) = app_with_charge(1000).await;
    assert_eq!(
        app.refund("shop", &charge, "a1", Some(100)).await.status(),
        201
    );

    assert_eq!(
        app.post("/v1/apps/shop/disconnect", json!({}))
            .await
            .status(),
        200
    );
    let disconnected = app.refund("shop", &charge, "a2", Some(100)).await;
    assert_eq!(disconnected.status(), 409);
    assert_eq!(error_code(disconnected).await, "app_not_connected");

    let state = app.start_connect("shop").await;
    let code = app.stripe.issue_code("acct_2Moved");
    let location = app.callback(&[("code", &code), ("state", &state)]).await;
    assert!(location.ends_with("success=connected"), "{location}");
    let moved = app.stripe.create_charge("acct_2Moved", 500, "usd");
    assert_eq!(
        app.refund("shop", &moved, "a3", Some(100)).await.status(),
        201
    );
    let posts = app.stripe.requests_to("/v1/refunds");
    let accounts: Vec<Option<&str>> = posts.iter().map(|p| p.stripe_account.as_deref()).collect();
    assert_eq!(accounts, vec![Some(ACCOUNT), Some("acct_2Moved")]);
}
