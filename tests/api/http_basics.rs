//! Health, readiness, unknown routes and malformed requests.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app, TestApp, OPERATOR_TOKEN};

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let health = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status(), 200);
    let ready = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.expect("json")["status"],
        "ready"
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let response = app.request(Method::GET, "/healthz", None, None).await;
    assert!(response.headers().get("x-request-id").is_some());
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_error_shape() {
    let app = spawn_app().await;
    let missing = app.get("/v1/nothing-here").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(error_code(missing).await, "not_found");
    let wrong_method = app
        .request(Method::DELETE, "/v1/apps", Some(OPERATOR_TOKEN), None)
        .await;
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(error_code(wrong_method).await, "method_not_allowed");
}

#[tokio::test]
async fn malformed_bodies_are_4xx() {
    let app = spawn_app().await;
    let url = format!("{}/v1/apps", app.address);
    let text = app
        .http
        .post(&url)
        .bearer_auth(OPERATOR_TOKEN)
        .header("content-type", "text/plain")
        .body(r#"{"slug":"a","name":"b"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(text.status(), 415);
    assert_eq!(error_code(text).await, "unsupported_media_type");
    let broken = app
        .http
        .post(&url)
        .bearer_auth(OPERATOR_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(broken.status(), 400);
    assert_eq!(error_code(broken).await, "invalid_json");
    let huge = app
        .http
        .post(&url)
        .bearer_auth(OPERATOR_TOKEN)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"slug":"a","name":"{}"}}"#,
            "x".repeat(300 * 1024)
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(huge.status(), 413);
    assert_eq!(error_code(huge).await, "payload_too_large");
}

async fn scrape(app: &TestApp) -> String {
    app.request(Method::GET, "/metrics", None, None)
        .await
        .text()
        .await
        .expect("text")
}

#[tokio::test]
async fn metrics_count_requests_and_show_projection_lag() {
    let app = spawn_app().await;
    let count = |text: &str, needle: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("http_requests_total") && l.contains(needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = scrape(&app).await;
    for _ in 0..3 {
        app.get("/v1/apps").await;
    }
    let after = scrape(&app).await;
    let needle = "route=\"/v1/apps\"";
    assert!(
        count(&after, needle) >= count(&before, needle) + 3.0,
        "{after}"
    );
    assert!(after.contains("projection_lag_events{projection=\"apps\"}"));
    assert!(after.contains("webhook_inbox_depth"));
    assert!(after.contains("http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn the_openapi_document_covers_the_contract() {
    let app = spawn_app().await;
    let doc: Value = app
        .request(Method::GET, "/openapi.json", None, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/apps",
        "/v1/apps/{slug}",
        "/v1/apps/{slug}/connect",
        "/v1/apps/{slug}/disconnect",
        "/api/stripe/connect/callback",
        "/v1/refunds",
        "/v1/refunds/{id}",
        "/v1/charges/{charge_id}",
        "/api/stripe/webhooks",
        "/v1/audit",
        "/v1/audit/verify",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
    // Every operation that answers with a body shows an example of a request or a success
    // (directly, or on the schema it names); the redirect of the OAuth callback has none.
    let schemas = &doc["components"]["schemas"];
    fn has_example(value: &Value, schemas: &Value, depth: usize) -> bool {
        match value {
            Value::Object(map) => {
                map.contains_key("example")
                    || map.contains_key("examples")
                    || map.get("$ref").and_then(Value::as_str).is_some_and(|r| {
                        depth < 4
                            && has_example(
                                &schemas[r.rsplit('/').next().unwrap_or_default()],
                                schemas,
                                depth + 1,
                            )
                    })
                    || map.values().any(|v| has_example(v, schemas, depth))
            }
            Value::Array(items) => items.iter().any(|v| has_example(v, schemas, depth)),
            _ => false,
        }
    }
    let mut without = Vec::new();
    for (path, operations) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in operations.as_object().expect("operations") {
            let successes: Vec<&Value> = operation["responses"]
                .as_object()
                .expect("responses")
                .iter()
                .filter(|(status, _)| status.starts_with('2'))
                .map(|(_, response)| response)
                .collect();
            let shown = has_example(&operation["requestBody"], schemas, 0)
                || successes.iter().any(|r| has_example(r, schemas, 0));
            if !shown && path != "/api/stripe/connect/callback" {
                without.push(format!("{method} {path}"));
            }
            // The API asks for a bearer token; Stripe's deliveries and redirects do not.
            let open = operation["security"] == json!([{}]);
            let public = !path.starts_with("/v1/");
            assert_eq!(
                open, public,
                "{method} {path}: security {}",
                operation["security"]
            );
        }
    }
    assert!(
        without.is_empty(),
        "operations without an example: {without:?}"
    );
}

#[tokio::test]
async fn nul_characters_are_400_and_store_nothing() {
    let app = spawn_app().await;
    let body = app
        .http
        .post(format!("{}/v1/apps", app.address))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&serde_json::json!({"slug": "shop", "name": "Sh\u{0}op"}))
        .send()
        .await
        .expect("send");
    assert_eq!(body.status(), 400);
    assert_eq!(error_code(body).await, "invalid_body");
    for path in [
        "/v1/refunds?purchase_id=a%00b",
        "/v1/refunds/rf_%00",
        "/v1/apps/sh%00op",
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(error_code(response).await, "invalid_request");
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(events, 0);
}

/// The sum of a metric's samples whose labels contain every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_series_move_with_refunds_webhooks_and_stripe_calls() {
    let app = spawn_app().await;
    app.connected_app("shop", "acct_metrics").await;
    let charge = app.stripe.create_charge("acct_metrics", 5_000, "usd");
    let series: [(&str, &[&str]); 6] = [
        ("refunds_total", &["status=\"succeeded\""]),
        (
            "stripe_requests_total",
            &["endpoint=\"refunds.create\"", "status=\"200\""],
        ),
        (
            "stripe_request_duration_seconds_count",
            &["endpoint=\"charges.retrieve\""],
        ),
        (
            "webhook_events_total",
            &["type=\"customer.created\"", "outcome=\"ignored\""],
        ),
        (
            "http_requests_total",
            &["route=\"/v1/refunds\"", "status=\"201\""],
        ),
        (
            "http_request_duration_seconds_count",
            &["route=\"/api/stripe/webhooks\""],
        ),
    ];
    let before = scrape(&app).await;

    let refund = app.refund("shop", &charge, "appr_metrics", Some(700)).await;
    assert_eq!(refund.status(), 201);
    let event = serde_json::to_vec(&serde_json::json!({"id": "evt_metrics_1", "object": "event",
        "type": "customer.created", "account": "acct_metrics", "created": chrono::Utc::now().timestamp(),
        "livemode": false, "data": {"object": {"id": "cus_1", "object": "customer"}}}))
    .expect("json");
    let signature = connect_ledger::webhooks::signature::sign(
        &event,
        "whsec_test_secret",
        chrono::Utc::now().timestamp(),
    );
    let delivered = app
        .http
        .post(format!("{}/api/stripe/webhooks", app.address))
        .header("Stripe-Signature", signature)
        .body(event)
        .send()
        .await
        .expect("deliver");
    assert_eq!(delivered.status(), 200);

    let after = scrape(&app).await;
    for (name, labels) in series {
        let (was, is) = (sample(&before, name, labels), sample(&after, name, labels));
        assert!(
            is >= was + 1.0,
            "{name}{labels:?} did not move: {was} → {is}"
        );
    }
    for gauge in [
        "projection_lag_events{projection=\"refunds\"}",
        "projection_lag_seconds{projection=\"audit\"}",
        "webhook_inbox_depth",
        "webhook_dead_letters",
        "stripe_request_duration_seconds_bucket",
    ] {
        assert!(after.contains(gauge), "{gauge} missing");
    }
}

#[tokio::test]
async fn metrics_count_the_open_and_dead_webhook_events_only() {
    let app = spawn_app().await;
    // None of them due, so the worker leaves them as they are while the test looks.
    sqlx::query(
        "INSERT INTO webhook_events (event_id, event_type, livemode, payload, status, next_attempt_at, locked_until) \
         SELECT 'evt_' || n, 'customer.created', false, '{}', status, now() + interval '1 hour', \
           CASE WHEN status = 'processing' THEN now() + interval '1 hour' END \
         FROM unnest(ARRAY['pending', 'pending', 'failed', 'processing', 'dead', 'dead', \
           'handled', 'handled', 'ignored', 'ignored', 'unmatched']) WITH ORDINALITY AS s(status, n)",
    )
    .execute(&app.pool)
    .await
    .expect("inbox entries");
    let text = scrape(&app).await;
    assert_eq!(sample(&text, "webhook_inbox_depth", &[]), 4.0, "{text}");
    assert_eq!(sample(&text, "webhook_dead_letters", &[]), 2.0, "{text}");
}
