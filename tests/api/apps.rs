//! Registering and reading apps, and who may do it.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app, AUDITOR_TOKEN, OPERATOR_TOKEN};

#[tokio::test]
async fn an_operator_registers_an_app_and_everyone_reads_it() {
    let app = spawn_app().await;
    let created = app.create_app("total-typescript").await;
    assert_eq!(
        created,
        json!({"slug": "total-typescript", "name": "App total-typescript", "status": "disconnected",
               "stripe_account_id": null, "livemode": null, "connected_at": null})
    );
    let one = app
        .request(
            Method::GET,
            "/v1/apps/total-typescript",
            Some(AUDITOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(one.status(), 200);
    assert_eq!(one.json::<Value>().await.expect("json"), created);
    app.create_app("pro-tailwind").await;
    let list: Value = app.get("/v1/apps").await.json().await.expect("json");
    let slugs: Vec<&str> = list["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .filter_map(|a| a["slug"].as_str())
        .collect();
    assert_eq!(slugs, ["pro-tailwind", "total-typescript"]);
}

#[tokio::test]
async fn a_taken_slug_is_409_and_changes_nothing() {
    let app = spawn_app().await;
    app.create_app("total-typescript").await;
    let again = app
        .post(
            "/v1/apps",
            json!({"slug": "total-typescript", "name": "Impostor"}),
        )
        .await;
    assert_eq!(again.status(), 409);
    assert_eq!(error_code(again).await, "slug_taken");
    let stored: Value = app
        .get("/v1/apps/total-typescript")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(stored["name"], "App total-typescript");
    assert_eq!(app.event_types("total-typescript").await, ["AppRegistered"]);
}

#[tokio::test]
async fn concurrent_registrations_of_one_slug_yield_one_app() {
    let app = spawn_app().await;
    let attempts = (0..10).map(|i| {
        app.post(
            "/v1/apps",
            json!({"slug": "racy", "name": format!("Racer {i}")}),
        )
    });
    let statuses: Vec<u16> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        9,
        "{statuses:?}"
    );
    assert_eq!(app.event_types("racy").await, ["AppRegistered"]);
}

#[tokio::test]
async fn bad_app_input_is_refused_with_a_clear_4xx_and_stores_nothing() {
    let app = spawn_app().await;
    for (body, status, code) in [
        (
            json!({"slug": "Bad Slug", "name": "x"}),
            422,
            "invalid_slug",
        ),
        (json!({"slug": "", "name": "x"}), 422, "invalid_slug"),
        (
            json!({"slug": "a".repeat(65), "name": "x"}),
            422,
            "invalid_slug",
        ),
        (json!({"slug": "ok", "name": "   "}), 422, "invalid_name"),
        (json!({"slug": "ok"}), 400, "invalid_body"),
        (
            json!({"slug": "ok", "name": "x", "extra": 1}),
            400,
            "invalid_body",
        ),
        (json!(["not", "an", "object"]), 400, "invalid_json"),
    ] {
        let response = app.post("/v1/apps", body.clone()).await;
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(error_code(response).await, code, "{body}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(count, 0);
}

#[tokio::test]
async fn unknown_apps_are_404() {
    let app = spawn_app().await;
    for path in ["/v1/apps/nope", "/v1/apps/NOT%20A%20SLUG"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(error_code(response).await, "app_not_found");
    }
    let response = app.post("/v1/apps/nope/connect", json!({})).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn tokens_and_roles_guard_the_api() {
    let app = spawn_app().await;
    let body = json!({"slug": "guarded", "name": "Guarded"});
    for (token, status, code) in [
        (None, 401, "unauthorized"),
        (Some("not-a-known-token"), 401, "unauthorized"),
        (Some(AUDITOR_TOKEN), 403, "forbidden"),
    ] {
        let response = app
            .request(Method::POST, "/v1/apps", token, Some(body.clone()))
            .await;
        assert_eq!(response.status(), status, "{token:?}");
        assert_eq!(error_code(response).await, code);
    }
    let no_token_read = app.request(Method::GET, "/v1/apps", None, None).await;
    assert_eq!(no_token_read.status(), 401);
    let auditor_connect = app
        .request(
            Method::POST,
            "/v1/apps/guarded/connect",
            Some(AUDITOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(auditor_connect.status(), 403);
    let created = app
        .request(Method::POST, "/v1/apps", Some(OPERATOR_TOKEN), Some(body))
        .await;
    assert_eq!(created.status(), 201);
    let actor: String = sqlx::query_scalar("SELECT metadata->>'actor' FROM events LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .expect("actor");
    assert!(actor.starts_with("operator:"), "{actor}");
    assert!(!actor.contains(OPERATOR_TOKEN));
}
