//! The Connect OAuth flow end to end against the fake Stripe Connect server.

use chrono::{Duration, Utc};
use connect_ledger::fake_stripe::{Fault, FAKE_CLIENT_ID, FAKE_SECRET_KEY};
use ledger_aggregates::app_connection::AppConnectionCommand;
use ledger_aggregates::secret_token::fingerprint;
use ledger_aggregates::{EventMetadata, Source};
use serde_json::{json, Value};
use url::Url;

use crate::helpers::{error_code, spawn_app};

#[tokio::test]
async fn the_whole_connect_flow_records_the_account() {
    let app = spawn_app().await;
    app.create_app("total-typescript").await;
    let response = app
        .post("/v1/apps/total-typescript/connect", json!({}))
        .await;
    assert_eq!(response.status(), 200);
    let started: Value = response.json().await.expect("json");
    let state = started["state"].as_str().expect("state");
    let authorize = Url::parse(started["authorize_url"].as_str().expect("url")).expect("url");
    assert_eq!(authorize.path(), "/oauth/authorize");
    assert!(authorize.as_str().starts_with(&app.stripe.base_url()));
    let params: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], FAKE_CLIENT_ID);
    assert_eq!(params["scope"], "read_write");
    assert_eq!(
        params["redirect_uri"],
        "https://ledger.example.test/api/stripe/connect/callback"
    );
    assert_eq!(params["state"], state);
    let expires: chrono::DateTime<Utc> =
        serde_json::from_value(started["expires_at"].clone()).expect("RFC 3339");
    let ttl = expires - Utc::now();
    assert!(
        ttl > Duration::minutes(9) && ttl <= Duration::minutes(10),
        "{ttl}"
    );

    let code = app.stripe.issue_code("acct_1TotalTS");
    let location = app.callback(&[("code", &code), ("state", state)]).await;
    assert_eq!(
        location,
        "/settings/integrations?app=total-typescript&success=connected"
    );
    let stored: Value = app
        .get("/v1/apps/total-typescript")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(stored["status"], "connected");
    assert_eq!(stored["stripe_account_id"], "acct_1TotalTS");
    assert_eq!(stored["livemode"], false);
    assert!(stored["connected_at"].is_string());

    let exchanges = app.stripe.requests_to("/oauth/token");
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].param("grant_type"), Some("authorization_code"));
    assert_eq!(exchanges[0].param("code"), Some(code.as_str()));
    assert_eq!(
        exchanges[0].authorization.as_deref(),
        Some(format!("Bearer {FAKE_SECRET_KEY}").as_str())
    );
    // The state itself is never stored, only its fingerprint; no access token either.
    let payloads: String = sqlx::query_scalar("SELECT string_agg(payload::text, ' ') FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("payloads");
    assert!(!payloads.contains(state));
    assert!(payloads.contains(&fingerprint(state)));
    assert!(!payloads.contains("sk_test_fake_access_token"));
}

#[tokio::test]
async fn a_user_who_denies_access_is_sent_back_with_denied() {
    let app = spawn_app().await;
    app.create_app("denier").await;
    let state = app.start_connect("denier").await;
    let location = app
        .callback(&[
            ("error", "access_denied"),
            ("error_description", "The user denied your request"),
            ("state", &state),
        ])
        .await;
    assert_eq!(location, "/settings/integrations?app=denier&error=denied");
    // The state is used up: a later code with it is refused.
    let code = app.stripe.issue_code("acct_denier");
    let again = app.callback(&[("code", &code), ("state", &state)]).await;
    assert_eq!(again, "/settings/integrations?error=invalid_state");
    assert!(app.stripe.requests_to("/oauth/token").is_empty());
    let stored: Value = app.get("/v1/apps/denier").await.json().await.expect("json");
    assert_eq!(stored["status"], "disconnected");
    assert_eq!(
        app.event_types("denier").await,
        [
            "AppRegistered",
            "ConnectStarted",
            "ConnectStateConsumed",
            "ConnectFailed"
        ]
    );
}

#[tokio::test]
async fn forged_reused_expired_and_other_app_states_are_invalid() {
    let app = spawn_app().await;
    app.create_app("first").await;
    app.create_app("second").await;
    let first_state = app.start_connect("first").await;
    let _second_state = app.start_connect("second").await;
    let code = app.stripe.issue_code("acct_x");

    let moved = first_state.replacen("first", "second", 1);
    let forged = format!("first.{}", "A".repeat(43));
    for state in [
        forged.as_str(),
        "garbage",
        "",
        moved.as_str(),
        "second.short",
    ] {
        let location = app.callback(&[("code", &code), ("state", state)]).await;
        assert_eq!(
            location, "/settings/integrations?error=invalid_state",
            "{state}"
        );
    }
    let missing = app.callback(&[("code", &code)]).await;
    assert_eq!(missing, "/settings/integrations?error=invalid_state");

    // Used once, then replayed.
    let location = app
        .callback(&[("code", &code), ("state", &first_state)])
        .await;
    assert!(location.ends_with("success=connected"));
    let replay_code = app.stripe.issue_code("acct_y");
    let replayed = app
        .callback(&[("code", &replay_code), ("state", &first_state)])
        .await;
    assert_eq!(replayed, "/settings/integrations?error=invalid_state");

    // Expired: a state issued eleven minutes ago.
    let ledger = app.ledger();
    let old_state = "second.expired-state-issued-long-ago";
    ledger
        .apps
        .execute(
            "second",
            AppConnectionCommand::StartConnect {
                state_fingerprint: fingerprint(old_state),
                now: Utc::now() - Duration::minutes(11),
            },
            &EventMetadata::new("test", Source::System, "t"),
        )
        .await
        .expect("plant an old state");
    let expired = app
        .callback(&[("code", &replay_code), ("state", old_state)])
        .await;
    assert_eq!(expired, "/settings/integrations?error=invalid_state");

    // Only the one valid exchange ever reached Stripe; `second` is untouched.
    assert_eq!(app.stripe.requests_to("/oauth/token").len(), 1);
    let second: Value = app.get("/v1/apps/second").await.json().await.expect("json");
    assert_eq!(second["status"], "disconnected");
}

#[tokio::test]
async fn a_callback_without_a_code_keeps_the_state_usable() {
    let app = spawn_app().await;
    app.create_app("nocode").await;
    let state = app.start_connect("nocode").await;
    let location = app.callback(&[("state", &state)]).await;
    assert_eq!(location, "/settings/integrations?error=missing_code");
    let code = app.stripe.issue_code("acct_nocode");
    let location = app.callback(&[("code", &code), ("state", &state)]).await;
    assert!(location.ends_with("success=connected"), "{location}");
}

#[tokio::test]
async fn a_code_stripe_refuses_fails_the_connection_clearly() {
    let app = spawn_app().await;
    app.create_app("refused").await;
    let state = app.start_connect("refused").await;
    let location = app
        .callback(&[("code", "ac_never_issued"), ("state", &state)])
        .await;
    assert_eq!(
        location,
        "/settings/integrations?app=refused&error=oauth_failed"
    );
    let stored: Value = app
        .get("/v1/apps/refused")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(stored["status"], "disconnected");
    let error: Option<String> =
        sqlx::query_scalar("SELECT last_connect_error FROM apps WHERE slug = 'refused'")
            .fetch_one(&app.pool)
            .await
            .expect("row");
    assert_eq!(error.as_deref(), Some("invalid_grant"));
    // A fresh state works afterwards.
    let state = app.start_connect("refused").await;
    let code = app.stripe.issue_code("acct_refused");
    assert!(app
        .callback(&[("code", &code), ("state", &state)])
        .await
        .ends_with("success=connected"));
}

#[tokio::test]
async fn stripe_down_during_the_exchange_is_oauth_failed_and_never_retried() {
    let app = spawn_app().await;
    app.create_app("flaky").await;
    let state = app.start_connect("flaky").await;
    let code = app.stripe.issue_code("acct_flaky");
    app.stripe.inject("oauth/token", Fault::Status(500));
    let location = app.callback(&[("code", &code), ("state", &state)]).await;
    assert_eq!(
        location,
        "/settings/integrations?app=flaky&error=oauth_failed"
    );
    assert_eq!(app.stripe.requests_to("/oauth/token").len(), 1);
}

#[tokio::test]
async fn two_callbacks_racing_with_one_state_connect_exactly_once() {
    let app = spawn_app().await;
    app.create_app("racer").await;
    let state = app.start_connect("racer").await;
    let code = app.stripe.issue_code("acct_racer");
    let query = [("code", code.as_str()), ("state", state.as_str())];
    let racers = (0..8).map(|_| app.callback(&query));
    let locations = futures::future::join_all(racers).await;
    let successes = locations
        .iter()
        .filter(|l| l.ends_with("success=connected"))
        .count();
    assert_eq!(successes, 1, "{locations:?}");
    assert!(locations
        .iter()
        .filter(|l| !l.ends_with("success=connected"))
        .all(|l| l == "/settings/integrations?error=invalid_state"));
    let connected: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = 'racer' AND event_type = 'AppConnected'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(connected, 1);
    assert_eq!(
        app.stripe.requests_to("/oauth/token").len(),
        1,
        "one exchange of the code"
    );
}

#[tokio::test]
async fn disconnect_deauthorizes_and_reconnect_keeps_history() {
    let app = spawn_app().await;
    app.connected_app("mover", "acct_first").await;
    assert!(app.stripe.is_authorized("acct_first"));

    let response = app.post("/v1/apps/mover/disconnect", json!({})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "disconnected");
    assert_eq!(body["stripe_account_id"], Value::Null);
    let deauth = app.stripe.requests_to("/oauth/deauthorize");
    assert_eq!(deauth.len(), 1);
    assert_eq!(deauth[0].param("client_id"), Some(FAKE_CLIENT_ID));
    assert_eq!(deauth[0].param("stripe_user_id"), Some("acct_first"));
    assert!(!app.stripe.is_authorized("acct_first"));

    let again = app.post("/v1/apps/mover/disconnect", json!({})).await;
    assert_eq!(again.status(), 409);
    assert_eq!(error_code(again).await, "app_not_connected");

    let state = app.start_connect("mover").await;
    let code = app.stripe.issue_code("acct_second");
    assert!(app
        .callback(&[("code", &code), ("state", &state)])
        .await
        .ends_with("success=connected"));
    let stored: Value = app.get("/v1/apps/mover").await.json().await.expect("json");
    assert_eq!(stored["stripe_account_id"], "acct_second");
    let accounts: Vec<String> = sqlx::query_scalar(
        "SELECT payload->'AppConnected'->>'stripe_account_id' FROM events \
         WHERE aggregate_id = 'mover' AND event_type = 'AppConnected' ORDER BY sequence",
    )
    .fetch_all(&app.pool)
    .await
    .expect("history");
    assert_eq!(accounts, ["acct_first", "acct_second"]);
}

#[tokio::test]
async fn connecting_a_connected_app_is_409() {
    let app = spawn_app().await;
    app.connected_app("busy", "acct_busy").await;
    let response = app.post("/v1/apps/busy/connect", json!({})).await;
    assert_eq!(response.status(), 409);
    assert_eq!(error_code(response).await, "app_already_connected");
}

#[tokio::test]
async fn a_disconnect_stripe_already_forgot_still_disconnects_and_outages_change_nothing() {
    let app = spawn_app().await;
    app.connected_app("gone", "acct_gone").await;
    app.stripe.inject("oauth/deauthorize", Fault::Status(503));
    let failed = app.post("/v1/apps/gone/disconnect", json!({})).await;
    assert_eq!(failed.status(), 502);
    assert_eq!(error_code(failed).await, "stripe_unavailable");
    let still: Value = app.get("/v1/apps/gone").await.json().await.expect("json");
    assert_eq!(still["status"], "connected");

    // The owner revoked us in their Dashboard: Stripe answers invalid_client.
    let deauth_elsewhere = reqwest::Client::new()
        .post(format!("{}/oauth/deauthorize", app.stripe.base_url()))
        .bearer_auth(FAKE_SECRET_KEY)
        .form(&[
            ("client_id", FAKE_CLIENT_ID),
            ("stripe_user_id", "acct_gone"),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(deauth_elsewhere.status(), 200);
    let response = app.post("/v1/apps/gone/disconnect", json!({})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "disconnected");
}
