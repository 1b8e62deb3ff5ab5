//! Secrets never leave the process: the Stripe key, webhook secrets, API tokens and the database
//! password appear in no log line (at `debug`, successes and failures alike), no answer and no
//! audit entry.

use std::time::Duration;

use connect_ledger::fake_stripe::{FakeStripe, Fault, FAKE_SECRET_KEY};
use connect_ledger::webhooks::signature::sign;
use serde_json::json;

use crate::crash::{connect_app_as, Service};
use crate::helpers::fresh_database;

const OPERATOR: &str = "op-canary-7f3a9c1e5b";
const AUDITOR: &str = "au-canary-2d8e4f6a0c";
const WEBHOOK_SECRET: &str = "whsec_canary_91b7d3f5e2";
const OLD_WEBHOOK_SECRET: &str = "whsec_canary_old_4c6a8e";
const DB_PASSWORD: &str = "dbpass-canary-5e1c";

#[tokio::test]
async fn no_secret_reaches_logs_answers_or_the_audit_log() {
    let stripe = FakeStripe::start().await.expect("fake");
    // Trust authentication ignores the password, so it can stand in for a real one.
    let database_url =
        fresh_database()
            .await
            .replacen("postgres@", &format!("postgres:{DB_PASSWORD}@"), 1);
    assert!(database_url.contains(DB_PASSWORD), "{database_url}");
    let tokens = format!("operator:{OPERATOR},auditor:{AUDITOR}");
    let secrets = format!("{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}");
    let service = Service::spawn_with(
        &database_url,
        &stripe,
        None,
        &[
            ("RUST_LOG", "debug"),
            ("LEDGER_TOKENS", &tokens),
            ("STRIPE_WEBHOOK_SECRET", &secrets),
        ],
    );
    let base = service.address.clone();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut answers: Vec<String> = Vec::new();
    let mut keep = |text: String| {
        answers.push(text);
    };

    // Tokens: a wrong one (a near miss), a missing one, an auditor trying to write.
    for token in [&format!("{OPERATOR}x"), AUDITOR] {
        let response = http
            .post(format!("{base}/v1/apps"))
            .bearer_auth(token)
            .json(&json!({"slug": "shop", "name": "Shop"}))
            .send()
            .await
            .expect("request");
        assert!(matches!(response.status().as_u16(), 401 | 403));
        keep(response.text().await.expect("body"));
    }
    // Connect (the code exchange sends the secret key to Stripe).
    for answer in connect_app_as(&http, &base, &stripe, "acct_canary", OPERATOR).await {
        keep(answer);
    }

    // Refunds: one that succeeds, one Stripe keeps failing (retries logged), one it refuses.
    let charge = stripe.create_charge("acct_canary", 5000, "usd");
    let refund = |purchase: &'static str, amount: i64| {
        http.post(format!("{base}/v1/refunds"))
            .bearer_auth(OPERATOR)
            .json(
                &json!({"app": "shop", "purchase_id": purchase, "charge_id": charge,
                          "approval_id": "ap", "amount": amount, "requested_by": "agent"}),
            )
            .send()
    };
    let ok = refund("p1", 1000).await.expect("refund");
    assert_eq!(ok.status(), 201);
    keep(ok.text().await.expect("body"));
    for _ in 0..4 {
        stripe.inject("POST /v1/refunds", Fault::Status(500));
    }
    let failing = refund("p2", 1000).await.expect("refund");
    keep(failing.text().await.expect("body"));
    stripe.forget_faults();
    stripe.inject("POST /v1/refunds", Fault::Status(401));
    let refused = refund("p3", 1000).await.expect("refund");
    keep(refused.text().await.expect("body"));
    stripe.forget_faults();

    // Webhooks: a good one, one signed with a wrong secret, one with no signature.
    let event = json!({"id": "evt_canary_1", "object": "event", "type": "customer.created",
        "created": chrono::Utc::now().timestamp(), "livemode": false,
        "data": {"object": {"id": "cus_1", "object": "customer"}}});
    let body = serde_json::to_vec(&event).expect("json");
    let now = chrono::Utc::now().timestamp();
    for signature in [
        Some(sign(&body, WEBHOOK_SECRET, now)),
        Some(sign(&body, "whsec_wrong", now)),
        None,
    ] {
        let mut request = http
            .post(format!("{base}/api/stripe/webhooks"))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        keep(
            request
                .send()
                .await
                .expect("webhook")
                .text()
                .await
                .expect("body"),
        );
    }

    // What auditors and operators read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for path in [
        "/v1/audit?limit=1000",
        "/v1/audit?limit=1000&format=csv",
        "/v1/audit/verify",
        "/v1/refunds",
        "/v1/apps/shop",
        "/v1/webhooks/events",
        "/metrics",
        "/readyz",
        "/openapi.json",
    ] {
        let response = http
            .get(format!("{base}{path}"))
            .bearer_auth(AUDITOR)
            .send()
            .await
            .expect("read");
        keep(response.text().await.expect("body"));
    }

    let logs = service.stop_and_collect();
    assert!(
        logs.len() > 20,
        "the service logged what it did ({} lines)",
        logs.len()
    );
    for secret in [
        FAKE_SECRET_KEY,
        OPERATOR,
        AUDITOR,
        WEBHOOK_SECRET,
        OLD_WEBHOOK_SECRET,
        DB_PASSWORD,
    ] {
        let in_logs: Vec<&String> = logs.iter().filter(|l| l.contains(secret)).collect();
        assert!(in_logs.is_empty(), "{secret} logged: {in_logs:#?}");
        let in_answers: Vec<&String> = answers.iter().filter(|a| a.contains(secret)).collect();
        assert!(in_answers.is_empty(), "{secret} answered: {in_answers:#?}");
    }
}
