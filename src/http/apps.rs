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
use super::state::AppState;
use crate::stripe::OAuthError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/apps", post(create_app).get(get_apps))
        .route("/v1/apps/{slug}", get(get_app))
        .route("/v1/apps/{slug}/connect", post(start_connect))
        .route("/v1/apps/{slug}/disconnect", post(disconnect))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApp {
    slug: String,
    name: String,
}

#[derive(Debug, Serialize)]
struct AppList {
    apps: Vec<AppRow>,
}

#[derive(Debug, Serialize)]
struct ConnectStarted {
    authorize_url: String,
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

async fn get_apps(State(state): State<AppState>) -> Result<Json<AppList>, ApiError> {
    Ok(Json(AppList {
        apps: list_apps(&state.pool).await?,
    }))
}

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
