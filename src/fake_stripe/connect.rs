//! Connect OAuth: `POST /oauth/token` and `POST /oauth/deauthorize`.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use serde_json::json;

use super::{apply_fault, check_key, record, FakeState, FAKE_CLIENT_ID};

type Shared = Arc<Mutex<FakeState>>;

pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/oauth/deauthorize", post(deauthorize))
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn token(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let fault = record(
        &state,
        "oauth/token",
        "POST",
        "/oauth/token",
        &headers,
        form.clone(),
    );
    if let Some(response) = apply_fault(fault).await {
        return response;
    }
    if let Some(response) = check_key(&headers) {
        return response;
    }
    if param(&form, "grant_type") != Some("authorization_code") {
        return oauth_error(
            "unsupported_grant_type",
            "Only authorization_code is supported here.",
        );
    }
    let code = param(&form, "code").unwrap_or_default();
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    let Some((account, livemode)) = state.codes.remove(code) else {
        return oauth_error(
            "invalid_grant",
            &format!("Authorization code does not exist: {code}"),
        );
    };
    state.authorized.insert(account.clone(), true);
    Json(json!({
        "access_token": "sk_test_fake_access_token",
        "livemode": livemode,
        "refresh_token": "rt_fake",
        "scope": "read_write",
        "stripe_publishable_key": "pk_test_fake",
        "stripe_user_id": account,
        "token_type": "bearer"
    }))
    .into_response()
}

async fn deauthorize(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let fault = record(
        &state,
        "oauth/deauthorize",
        "POST",
        "/oauth/deauthorize",
        &headers,
        form.clone(),
    );
    if let Some(response) = apply_fault(fault).await {
        return response;
    }
    if let Some(response) = check_key(&headers) {
        return response;
    }
    if param(&form, "client_id") != Some(FAKE_CLIENT_ID) {
        return oauth_error("invalid_client", "No such application.");
    }
    let account = param(&form, "stripe_user_id")
        .unwrap_or_default()
        .to_owned();
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    if state.authorized.get(&account).copied() != Some(true) {
        return oauth_error(
            "invalid_client",
            &format!("Stripe account {account} is not connected to your platform."),
        );
    }
    state.authorized.insert(account.clone(), false);
    Json(json!({"stripe_user_id": account})).into_response()
}
