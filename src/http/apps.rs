//! `/v1/apps`: register apps, start the Connect OAuth flow, disconnect.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use chrono::{DateTime, Utc};
use ledger_aggregates::app_connection::{
    AppConnectionCommand, AppConnectionError, DisconnectInitiator, APP_CONNECTION,
};
use ledger_aggregates::secret_token::fingerprint;
use ledger_aggregates::Slug;
use ledger_projections::apps::{find_app, list_apps, AppRow};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::context::ApiCommand;
use super::error::ApiError;
use super::extract::Json;
use super::openapi::ErrorBody;
use super::state::AppState;
use crate::stripe::OAuthError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/apps", post(create_app).get(get_apps))
        .route("/v1/apps/{slug}", get(get_app))
        .route("/v1/apps/{slug}/connect", post(start_connect))
        .route("/v1/apps/{slug}/disconnect", post(disconnect))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"slug": "total-typescript", "name": "Total TypeScript"}))]
pub struct CreateApp {
    #[schema(pattern = "^[a-z0-9-]{1,64}$")]
    slug: String,
    #[schema(min_length = 1, max_length = 200)]
    name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppList {
    apps: Vec<AppRow>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectStarted {
    /// Where to send the app's owner: Stripe's consent page.
    authorize_url: String,
    /// Single-use, bound to this app, expiring.
    state: String,
    expires_at: DateTime<Utc>,
}

fn parse_slug(raw: &str) -> Result<Slug, ApiError> {
    // A slug that cannot exist names no app.
    Slug::parse(raw).map_err(|_| AppConnectionError::AppNotFound.into())
}

/// Reads the app after a command, once the projection shows it.
async fn app_after_command(state: &AppState, slug: &Slug) -> Result<AppRow, ApiError> {
    if !state.ledger.settle(APP_CONNECTION, slug.as_str()).await {
        tracing::warn!(slug = %slug, "apps projection lagging; answering from the event store");
        let app = state.ledger.apps.load(slug.as_str()).await?;
        let snapshot = app.snapshot().ok_or(AppConnectionError::AppNotFound)?;
        return Ok(AppRow {
            slug: snapshot.slug,
            name: snapshot.name,
            status: snapshot.status.as_str().to_owned(),
            stripe_account_id: snapshot.stripe_account_id,
            livemode: snapshot.livemode,
            connected_at: snapshot.connected_at,
        });
    }
    find_app(&state.pool, slug.as_str())
        .await?
        .ok_or_else(|| AppConnectionError::AppNotFound.into())
}

/// Register an app.
#[utoipa::path(post, path = "/v1/apps", tag = "apps", request_body = CreateApp,
    responses(
        (status = 201, description = "the app", body = AppRow,
         example = json!({"slug": "total-typescript", "name": "Total TypeScript", "status": "disconnected",
                          "stripe_account_id": null, "livemode": null, "connected_at": null})),
        (status = 400, description = "unreadable body", body = ErrorBody),
        (status = 401, description = "no or unknown token", body = ErrorBody),
        (status = 403, description = "an auditor's token", body = ErrorBody),
        (status = 409, description = "slug_taken", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 422, description = "invalid_slug or invalid_name", body = ErrorBody)))]
async fn create_app(
    State(state): State<AppState>,
    ApiCommand(meta): ApiCommand,
    Json(body): Json<CreateApp>,
) -> Result<(StatusCode, Json<AppRow>), ApiError> {
    let slug =
        Slug::parse(&body.slug).map_err(|e| ApiError::invalid("invalid_slug", e.to_string()))?;
    let command = AppConnectionCommand::Register {
        app_id: Uuid::new_v4(),
        slug: slug.clone(),
        name: body.name,
    };
    state
        .ledger
        .apps
        .execute(slug.as_str(), command, &meta)
        .await?;
    let app = app_after_command(&state, &slug).await?;
    Ok((StatusCode::CREATED, Json(app)))
}

/// Every app, from the `apps` table.
#[utoipa::path(get, path = "/v1/apps", tag = "apps",
    responses((status = 200, description = "the apps", body = AppList),
              (status = 401, description = "no or unknown token", body = ErrorBody)))]
async fn get_apps(State(state): State<AppState>) -> Result<Json<AppList>, ApiError> {
    Ok(Json(AppList {
        apps: list_apps(&state.pool).await?,
    }))
}

/// One app.
#[utoipa::path(get, path = "/v1/apps/{slug}", tag = "apps", params(("slug" = String, Path, description = "the app's slug")),
    responses((status = 200, description = "the app", body = AppRow,
               example = json!({"slug": "total-typescript", "name": "Total TypeScript", "status": "connected",
                                "stripe_account_id": "acct_1Nv0FGQ9RKHgCVdK", "livemode": false, "connected_at": "2026-11-22T10:00:00Z"})),
              (status = 401, description = "no or unknown token", body = ErrorBody),
              (status = 404, description = "app_not_found", body = ErrorBody)))]
async fn get_app(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> Result<Json<AppRow>, ApiError> {
    let slug = parse_slug(&slug)?;
    find_app(&state.pool, slug.as_str())
        .await?
        .map(Json)
        .ok_or_else(|| AppConnectionError::AppNotFound.into())
}

/// A fresh OAuth state: `<slug>.<256 random bits>`. The slug tells the callback which app to
/// ask; only the app's record of the state's fingerprint makes it valid.
fn new_state(slug: &Slug) -> String {
    let mut random = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut random);
    format!(
        "{slug}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    )
}

/// Start the Connect OAuth flow: a fresh CSRF `state` and Stripe's consent URL.
#[utoipa::path(post, path = "/v1/apps/{slug}/connect", tag = "apps", params(("slug" = String, Path, description = "the app's slug")),
    responses((status = 200, description = "where to send the owner", body = ConnectStarted,
               example = json!({"authorize_url": "https://connect.stripe.com/oauth/authorize?response_type=code&client_id=ca_123&scope=read_write&redirect_uri=https%3A%2F%2Fledger.example%2Fapi%2Fstripe%2Fconnect%2Fcallback&state=total-typescript.Zm9v",
                                "state": "total-typescript.Zm9v", "expires_at": "2026-11-22T10:15:00Z"})),
              (status = 401, description = "no or unknown token", body = ErrorBody),
              (status = 403, description = "an auditor's token", body = ErrorBody),
              (status = 404, description = "app_not_found", body = ErrorBody),
              (status = 409, description = "app_already_connected", body = ErrorBody),
              (status = 503, description = "stripe_not_configured", body = ErrorBody)))]
async fn start_connect(
    State(state): State<AppState>,
    ApiCommand(meta): ApiCommand,
    Path(slug): Path<String>,
) -> Result<Json<ConnectStarted>, ApiError> {
    let slug = parse_slug(&slug)?;
    let oauth = state.oauth()?;
    let token = new_state(&slug);
    let now = Utc::now();
    let command = AppConnectionCommand::StartConnect {
        state_fingerprint: fingerprint(&token),
        now,
    };
    state
        .ledger
        .apps
        .execute(slug.as_str(), command, &meta)
        .await?;
    let authorize_url = oauth
        .authorize_url(&state.redirect_uri(), &token)
        .to_string();
    Ok(Json(ConnectStarted {
        authorize_url,
        state: token,
        expires_at: now
            + chrono::Duration::minutes(ledger_aggregates::app_connection::STATE_TTL_MINUTES),
    }))
}

/// Deauthorize the app's account at Stripe and disconnect it.
#[utoipa::path(post, path = "/v1/apps/{slug}/disconnect", tag = "apps", params(("slug" = String, Path, description = "the app's slug")),
    responses((status = 200, description = "the app, disconnected", body = AppRow),
              (status = 401, description = "no or unknown token", body = ErrorBody),
              (status = 403, description = "an auditor's token", body = ErrorBody),
              (status = 404, description = "app_not_found", body = ErrorBody),
              (status = 409, description = "app_not_connected", body = ErrorBody),
              (status = 502, description = "stripe_unavailable or stripe_refused", body = ErrorBody)))]
async fn disconnect(
    State(state): State<AppState>,
    ApiCommand(meta): ApiCommand,
    Path(slug): Path<String>,
) -> Result<Json<AppRow>, ApiError> {
    let slug = parse_slug(&slug)?;
    let oauth = state.oauth()?;
    let app = state.ledger.apps.load(slug.as_str()).await?;
    let snapshot = app.snapshot().ok_or(AppConnectionError::AppNotFound)?;
    let account = snapshot
        .stripe_account_id
        .ok_or(AppConnectionError::NotConnected)?;
    match oauth.deauthorize(&account).await {
        Ok(()) => {}
        // Stripe no longer knows us on this account: it is disconnected already.
        Err(OAuthError::Refused { error, .. }) if error == "invalid_client" => {
            tracing::info!(slug = %slug, "account was already deauthorized at Stripe");
        }
        Err(OAuthError::Refused { error, .. }) => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "stripe_refused",
                format!("Stripe refused to deauthorize the account ({error}); nothing was changed"),
            ));
        }
        Err(OAuthError::Unavailable(reason)) => {
            tracing::warn!(slug = %slug, %reason, "deauthorize failed");
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "stripe_unavailable",
                "Stripe could not be reached to deauthorize the account; nothing was changed, retry later",
            ));
        }
    }
    let command = AppConnectionCommand::Disconnect {
        stripe_account_id: Some(account),
        initiated_by: DisconnectInitiator::Platform,
    };
    state
        .ledger
        .apps
        .execute(slug.as_str(), command, &meta)
        .await?;
    Ok(Json(app_after_command(&state, &slug).await?))
}
