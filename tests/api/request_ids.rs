//! A request id (the caller's `X-Request-Id`, or one the service makes) is on every log line of
//! its request, the Stripe calls' lines included, in JSON logs, and in the metadata of the events
//! the request recorded.

use serde_json::{json, Value};

use crate::crash::{connect_app, Service};
use crate::helpers::{fresh_database, OPERATOR_TOKEN};
use connect_ledger::fake_stripe::FakeStripe;

#[tokio::test]
async fn a_request_id_reaches_every_log_line_the_stripe_calls_and_the_events() {
    let stripe = FakeStripe::start().await.expect("fake");
    let database_url = fresh_database().await;
    let service = Service::spawn_with(
        &database_url,
        &stripe,
        None,
        &[("LOG_FORMAT", "json"), ("RUST_LOG", "info")],
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    connect_app(&http, &service, &stripe, "acct_ids").await;
    let charge = stripe.create_charge("acct_ids", 3_000, "usd");
    let request_id = "req-2f6c1e0a-trace-me";
    let refund = http
        .post(format!("{}/v1/refunds", service.address))
        .bearer_auth(OPERATOR_TOKEN)
        .header("x-request-id", request_id)
        .json(
            &json!({"app": "shop", "purchase_id": "pur_ids", "charge_id": charge,
                      "approval_id": "appr_ids", "amount": 1000, "requested_by": "agent"}),
        )
        .send()
        .await
        .expect("refund");
    assert_eq!(refund.status(), 201);
    assert_eq!(refund.headers()["x-request-id"], request_id, "echoed back");

    let pool = sqlx::PgPool::connect(&database_url).await.expect("pool");
    let correlation: Vec<String> = sqlx::query_scalar(
        "SELECT metadata->>'correlation_id' FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&charge)
    .fetch_all(&pool)
    .await
    .expect("events");
    assert!(correlation.len() >= 3, "{correlation:?}");
    assert!(
        correlation.iter().all(|c| c == request_id),
        "{correlation:?}"
    );

    let lines = service.stop_and_collect();
    let logs: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    assert!(!logs.is_empty(), "JSON logs: {lines:?}");
    let of_request: Vec<&Value> = logs
        .iter()
        .filter(|l| l.to_string().contains(request_id))
        .collect();
    let stripe_calls: Vec<&&Value> = of_request
        .iter()
        .filter(|l| l["message"] == "Stripe call")
        .collect();
    let endpoints: Vec<&str> = stripe_calls
        .iter()
        .filter_map(|l| l["endpoint"].as_str())
        .collect();
    assert!(
        endpoints.contains(&"charges.retrieve") && endpoints.contains(&"refunds.create"),
        "the Stripe calls' lines carry the request id: {of_request:#?}"
    );
    for line in &of_request {
        assert_eq!(line["span"]["request_id"], request_id, "{line}");
    }
}
