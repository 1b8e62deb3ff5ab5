//! `POST /api/stripe/webhooks` (Stripe's delivery) and the operators' inbox endpoints.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Json, Query};
use super::openapi::ErrorBody;
use super::state::AppState;
use crate::webhooks::backfill;
use crate::webhooks::envelope::EventEnvelope;
use crate::webhooks::inbox::{self, Arrival, InboxRow, ReceivedVia};
use crate::webhooks::inbox_writer::WriteError;
use crate::webhooks::signature;

/// Stripe's events are small; this leaves room for large objects.
pub const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;

/// The endpoint Stripe delivers to (no token: the signature protects it).
pub fn delivery_router() -> Router<AppState> {
    Router::new().route(
        "/api/stripe/webhooks",
        post(receive).layer(axum::extract::DefaultBodyLimit::max(MAX_WEBHOOK_BYTES)),
    )
}

/// The operators' view of the inbox (behind tokens).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks/events", get(list_events))
        .route("/v1/webhooks/events/{id}/retry", post(retry_event))
        .route("/v1/webhooks/retry-dead", post(retry_dead))
        .route("/v1/webhooks/backfill", post(run_backfill))
}

fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// A Stripe event delivery: verified against `Stripe-Signature` (any configured secret, 5 minutes
/// of tolerance), stored durably once per event id, answered 200, then reconciled by the worker.
#[utoipa::path(post, path = "/api/stripe/webhooks", tag = "webhooks", security(()),
    params(("Stripe-Signature" = String, Header, description = "t=<unix>,v1=<hex HMAC-SHA256>")),
    request_body(content = Object, description = "the event, as Stripe sends it", content_type = "application/json",
        example = json!({"id": "evt_1Q", "object": "event", "type": "charge.refunded", "account": "acct_1Nv0FGQ9RKHgCVdK",
                         "created": 1763800000, "livemode": false, "data": {"object": {"id": "ch_3Abc", "object": "charge"}}})),
    responses((status = 200, description = "stored, or a duplicate", body = Received, example = json!({"received": true, "duplicate": false})),
              (status = 400, description = "invalid_signature or invalid_event", body = ErrorBody),
              (status = 413, description = "payload_too_large", body = ErrorBody),
              (status = 503, description = "stripe_not_configured or database_unavailable: Stripe retries", body = ErrorBody)))]
async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Received>, ApiError> {
    let body = body.map_err(|rejection| {
        let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "invalid_body"
        };
        ApiError::new(rejection.status(), code, rejection.body_text())
    })?;
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    if let Err(error) = signature::verify(header, &body, &state.webhook_secrets, now) {
        if error == signature::SignatureError::NoSecret {
            return Err(ApiError::stripe_not_configured("STRIPE_WEBHOOK_SECRET"));
        }
        return Err(bad_request("invalid_signature", error.to_string()));
    }
    let event =
        EventEnvelope::parse(&body).map_err(|e| bad_request("invalid_event", e.to_string()))?;
    let payload = std::str::from_utf8(&body)
        .map_err(|_| bad_request("invalid_event", "the body is not UTF-8"))?;
    let arrival = Arrival::new(&event, payload, ReceivedVia::Webhook);
    let for_the_ledger = arrival.is_for_the_ledger();
    let new = state.inbox.store(arrival).await.map_err(|error| {
        tracing::error!(%error, event_id = %event.id, "could not store a webhook event");
        match error {
            WriteError::Database(e) if crate::db::is_unavailable(&e) => {
                ApiError::database_unavailable(e)
            }
            other => ApiError::internal(other),
        }
    })?;
    if new && for_the_ledger {
        state.webhooks.nudge();
    } else if new {
        metrics::counter!("webhook_events_total", "type" => event.kind.clone(), "outcome" => "ignored")
            .increment(1);
    }
    Ok(Json(Received {
        received: true,
        duplicate: !new,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// pending, processing, handled, ignored, unmatched, failed or dead.
    status: Option<String>,
    /// 1 to 1000, default 100.
    limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventList {
    events: Vec<InboxRow>,
}

/// How many events were queued again.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"requeued": 3}))]
pub struct Requeued {
    pub requeued: u64,
}

/// A delivery's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Received {
    pub received: bool,
    /// The event id was stored before: nothing new was done.
    pub duplicate: bool,
}

const STATUSES: [&str; 7] = [
    "pending",
    "processing",
    "handled",
    "ignored",
    "unmatched",
    "failed",
    "dead",
];

/// The webhook inbox, newest first.
#[utoipa::path(get, path = "/v1/webhooks/events", tag = "webhooks", params(ListQuery),
    responses((status = 200, description = "inbox rows", body = EventList),
              (status = 401, description = "no or unknown token", body = ErrorBody),
              (status = 422, description = "invalid_status", body = ErrorBody)))]
async fn list_events(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<EventList>, ApiError> {
    if let Some(status) = &query.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(ApiError::invalid(
                "invalid_status",
                format!("status is one of {}", STATUSES.join(", ")),
            ));
        }
    }
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(EventList {
        events: inbox::list(&state.pool, query.status.as_deref(), limit).await?,
    }))
}

/// Queue one dead, failed or unmatched event again.
#[utoipa::path(post, path = "/v1/webhooks/events/{id}/retry", tag = "webhooks", params(("id" = String, Path, description = "evt_…")),
    responses((status = 200, description = "requeued", body = Requeued, example = json!({"requeued": 1})),
              (status = 401, description = "no or unknown token", body = ErrorBody),
              (status = 403, description = "an auditor's token", body = ErrorBody),
              (status = 404, description = "event_not_retryable", body = ErrorBody)))]
async fn retry_event(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Requeued>, ApiError> {
    let count = inbox::retry(&state.pool, Some(&id)).await?;
    if count == 0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "event_not_retryable",
            "no dead, failed or unmatched event has this id",
        ));
    }
    state.webhooks.nudge();
    Ok(Json(Requeued { requeued: count }))
}

/// Queue every dead event again.
#[utoipa::path(post, path = "/v1/webhooks/retry-dead", tag = "webhooks",
    responses((status = 200, description = "requeued", body = Requeued),
              (status = 401, description = "no or unknown token", body = ErrorBody),
              (status = 403, description = "an auditor's token", body = ErrorBody)))]
async fn retry_dead(State(state): State<AppState>) -> Result<Json<Requeued>, ApiError> {
    let count = inbox::retry(&state.pool, None).await?;
    state.webhooks.nudge();
    Ok(Json(Requeued { requeued: count }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"since": 1763800000, "account": "acct_1Nv0FGQ9RKHgCVdK"}))]
pub struct BackfillBody {
    /// Start of the window, Unix seconds.
    #[schema(minimum = 0)]
    since: i64,
    /// End of the window (default: now).
    until: Option<i64>,
    /// Only this connected account (acct_…).
    account: Option<String>,
}

/// Fetch a window of events from Stripe (`GET /v1/events`, platform and connected accounts) and
/// feed the missed ones through the inbox.
#[utoipa::path(post, path = "/v1/webhooks/backfill", tag = "webhooks", request_body = BackfillBody,
    responses((status = 200, description = "what was listed and stored", body = backfill::BackfillReport,
               example = json!({"accounts": 2, "listed": 40, "stored": 3})),
              (status = 401, description = "no or unknown token", body = ErrorBody),
              (status = 403, description = "an auditor's token", body = ErrorBody),
              (status = 422, description = "invalid_window or invalid_account", body = ErrorBody),
              (status = 502, description = "stripe_unavailable", body = ErrorBody)))]
async fn run_backfill(
    State(state): State<AppState>,
    Json(body): Json<BackfillBody>,
) -> Result<Json<backfill::BackfillReport>, ApiError> {
    let until = body.until.unwrap_or_else(|| chrono::Utc::now().timestamp());
    if body.since < 0 {
        return Err(ApiError::invalid(
            "invalid_window",
            "since is a Unix time in seconds",
        ));
    }
    if let Some(account) = &body.account {
        let well_formed = account.len() <= 255
            && account.strip_prefix("acct_").is_some_and(|rest| {
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        if !well_formed {
            return Err(ApiError::invalid(
                "invalid_account",
                "account is a Stripe account id (acct_…)",
            ));
        }
    }
    if body.since > until {
        return Err(ApiError::invalid(
            "invalid_window",
            "since must not be after until",
        ));
    }
    let stripe = state
        .stripe
        .as_ref()
        .ok_or_else(|| ApiError::stripe_not_configured("STRIPE_SECRET_KEY"))?;
    let accounts = backfill::accounts(&state.pool, body.account.as_deref()).await?;
    let report = backfill::run(&state.pool, stripe, &accounts, body.since, until, |_| {})
        .await
        .map_err(|e| match e {
            backfill::BackfillError::Stripe(e) => {
                tracing::warn!(error = %e, "backfill failed");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "stripe_unavailable",
                    "Stripe could not list events; retry later",
                )
            }
            backfill::BackfillError::Database(e) => e.into(),
        })?;
    state.webhooks.nudge();
    Ok(Json(report))
}
