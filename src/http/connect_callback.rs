//! `GET /api/stripe/connect/callback`: where Stripe sends the app owner back after consent.
//!
//! The `state` is used up (committed) before the code is exchanged, so one state leads to at
//! most one exchange even when the browser, a proxy or an attacker replays the redirect.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use ledger_aggregates::app_connection::{AppConnectionCommand, AppConnectionError, APP_CONNECTION};
use ledger_aggregates::secret_token::fingerprint;
use ledger_aggregates::{EventMetadata, Slug, Source};
use serde::Deserialize;

use super::context::RequestId;
use super::error::ApiError;
use super::extract::Query;
use super::state::AppState;
use crate::ledger::LedgerError;
use crate::stripe::OAuthError;

const ACTOR: &str = "connect_callback";
const SETTINGS_PAGE: &str = "/settings/integrations";

pub fn router() -> Router<AppState> {
    Router::new().route("/api/stripe/connect/callback", get(callback))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Where the owner's browser goes next.
enum Outcome {
    Connected(Slug),
    Failed(Option<Slug>, &'static str),
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        match &self {
            Outcome::Connected(slug) => {
                query.append_pair("app", slug.as_str());
                query.append_pair("success", "connected");
            }
            Outcome::Failed(slug, reason) => {
                if let Some(slug) = slug {
                    query.append_pair("app", slug.as_str());
                }
                query.append_pair("error", reason);
            }
        }
        let location = format!("{SETTINGS_PAGE}?{}", query.finish());
        (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
    }
}

/// The app a state claims to belong to; whether it really does is the aggregate's decision.
fn claimed_app(state: Option<&str>) -> Option<(Slug, &str)> {
    let state = state?;
    let (slug, random) = state.split_once('.')?;
    if random.len() < 16 {
        return None;
    }
    Some((Slug::parse(slug).ok()?, state))
}

fn is_invalid_state(error: &LedgerError<AppConnectionError>) -> bool {
    matches!(
        error,
        LedgerError::Domain(AppConnectionError::InvalidState | AppConnectionError::AppNotFound)
    )
}

/// Stripe's OAuth redirect: exchanges the code for the account and connects the app, then sends
/// the owner to `/settings/integrations?app=<slug>&success=connected` or `…?error=<reason>`
/// (`denied`, `invalid_state`, `oauth_failed`, `missing_code`).
#[utoipa::path(get, path = "/api/stripe/connect/callback", tag = "apps", security(()), params(CallbackQuery),
    responses((status = 303, description = "to the platform's settings page", headers(("Location" = String,
        description = "/settings/integrations?app=total-typescript&success=connected")))))]
async fn callback(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Query(query): Query<CallbackQuery>,
) -> Result<Outcome, ApiError> {
    let meta = EventMetadata::new(ACTOR, Source::Api, request_id);
    let claimed = claimed_app(query.state.as_deref());
    let now = Utc::now();

    if let Some(error) = query.error {
        let reason = if error == "access_denied" {
            "denied"
        } else {
            "oauth_failed"
        };
        let Some((slug, token)) = claimed else {
            // Nothing to attribute the refusal to, and nothing to change.
            return Ok(Outcome::Failed(None, reason));
        };
        let command = AppConnectionCommand::DeclineConnect {
            state_fingerprint: fingerprint(token),
            now,
            error,
            description: query.error_description,
        };
        return match state
            .ledger
            .apps
            .execute(slug.as_str(), command, &meta)
            .await
        {
            Ok(_) => {
                state.ledger.settle(APP_CONNECTION, slug.as_str()).await;
                Ok(Outcome::Failed(Some(slug), reason))
            }
            Err(e) if is_invalid_state(&e) => Ok(Outcome::Failed(None, reason)),
            Err(e) => Err(e.into()),
        };
    }

    let Some((slug, token)) = claimed else {
        return Ok(Outcome::Failed(None, "invalid_state"));
    };
    let state_fingerprint = fingerprint(token);
    let Some(code) = query.code.filter(|c| !c.is_empty()) else {
        // Keep the state usable: this redirect carried no code to spend it on.
        return Ok(Outcome::Failed(None, "missing_code"));
    };
    let oauth = state.oauth()?;

    let consume = AppConnectionCommand::ConsumeConnectState {
        state_fingerprint,
        now,
    };
    match state
        .ledger
        .apps
        .execute(slug.as_str(), consume, &meta)
        .await
    {
        Ok(_) => {}
        Err(e) if is_invalid_state(&e) => return Ok(Outcome::Failed(None, "invalid_state")),
        Err(e) => return Err(e.into()),
    }

    let result = match oauth.exchange_code(&code).await {
        Ok(grant) => AppConnectionCommand::CompleteConnect {
            stripe_account_id: grant.stripe_user_id,
            livemode: grant.livemode,
            scope: grant.scope,
            now: Utc::now(),
        },
        Err(OAuthError::Refused { error, description }) => {
            tracing::info!(slug = %slug, %error, "Stripe refused the authorization code");
            AppConnectionCommand::FailConnect { error, description }
        }
        Err(OAuthError::Unavailable(reason)) => {
            tracing::warn!(slug = %slug, %reason, "code exchange failed");
            AppConnectionCommand::FailConnect {
                error: "stripe_unavailable".into(),
                description: None,
            }
        }
    };
    let connected = matches!(result, AppConnectionCommand::CompleteConnect { .. });
    state
        .ledger
        .apps
        .execute(slug.as_str(), result, &meta)
        .await?;
    state.ledger.settle(APP_CONNECTION, slug.as_str()).await;
    if connected {
        Ok(Outcome::Connected(slug))
    } else {
        Ok(Outcome::Failed(Some(slug), "oauth_failed"))
    }
}
