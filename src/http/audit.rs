//! `/v1/audit` (JSON or CSV), `/v1/audit/verify`, and reconciliation reports.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use ledger_aggregates::Source;
use ledger_projections::audit::{self, AuditEntry, AuditFilter, Verification};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{Json, Query};
use super::state::AppState;
use crate::reconcile::{self, ReconcileError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/audit", get(entries))
        .route("/v1/audit/verify", get(verify))
        .route(
            "/v1/reconciliation/{app}",
            get(latest_report).post(run_report),
        )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    app: Option<String>,
    purchase_id: Option<String>,
    charge_id: Option<String>,
    refund_id: Option<String>,
    source: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    after: Option<i64>,
    limit: Option<i64>,
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/csv"))
}

const CSV_COLUMNS: [&str; 15] = [
    "position",
    "recorded_at",
    "aggregate_type",
    "aggregate_id",
    "sequence",
    "event_type",
    "source",
    "actor",
    "correlation_id",
    "stripe_event_id",
    "app",
    "purchase_id",
    "charge_id",
    "refund_id",
    "data",
];

fn csv_body(entries: &[AuditEntry]) -> Result<String, ApiError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(CSV_COLUMNS)
        .map_err(ApiError::internal)?;
    for e in entries {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        writer
            .write_record([
                e.position.to_string(),
                e.recorded_at.to_rfc3339(),
                e.aggregate_type.clone(),
                e.aggregate_id.clone(),
                e.sequence.to_string(),
                e.event_type.clone(),
                e.source.clone(),
                e.actor.clone(),
                opt(&e.correlation_id),
                opt(&e.stripe_event_id),
                opt(&e.app),
                opt(&e.purchase_id),
                opt(&e.charge_id),
                opt(&e.refund_id),
                e.data.to_string(),
            ])
            .map_err(ApiError::internal)?;
    }
    let bytes = writer.into_inner().map_err(ApiError::internal)?;
    String::from_utf8(bytes).map_err(ApiError::internal)
}

async fn entries(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    if let Some(source) = &query.source {
        if Source::parse(source).is_none() {
            return Err(ApiError::invalid(
                "invalid_source",
                "source is api, stripe_webhook or system",
            ));
        }
    }
    let filter = AuditFilter {
        app: query.app,
        purchase_id: query.purchase_id,
        charge_id: query.charge_id,
        refund_id: query.refund_id,
        source: query.source,
        since: query.since,
        until: query.until,
        after: query.after,
        limit: query.limit.unwrap_or(100).clamp(1, 1000),
    };
    let (entries, next) = audit::query(&state.pool, &filter).await?;
    if wants_csv(&headers) {
        let mut response = (StatusCode::OK, csv_body(&entries)?).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        if let Some(next) = next {
            if let Ok(value) = header::HeaderValue::from_str(&next.to_string()) {
                response.headers_mut().insert("x-next-position", value);
            }
        }
        return Ok(response);
    }
    Ok(Json(json!({"entries": entries, "next": next})).into_response())
}

async fn verify(State(state): State<AppState>) -> Result<Json<Verification>, ApiError> {
    Ok(Json(audit::verify(&state.pool).await?))
}

async fn latest_report(
    State(state): State<AppState>,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    reconcile::latest(&state.pool, &app)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "report_not_found",
                "no reconciliation report for this app yet",
            )
        })
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunReport {
    since: Option<i64>,
}

async fn run_report(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Json(body): Json<RunReport>,
) -> Result<Json<reconcile::Report>, ApiError> {
    let since = body.since;
    let stripe = state
        .stripe
        .as_ref()
        .ok_or_else(|| ApiError::stripe_not_configured("STRIPE_SECRET_KEY"))?;
    reconcile::run(&state.pool, stripe, &app, since, &|_| {})
        .await
        .map(Json)
        .map_err(|e| match e {
            ReconcileError::UnknownApp(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "app_not_found", e.to_string())
            }
            ReconcileError::NotConnected(_) => {
                ApiError::new(StatusCode::CONFLICT, "app_not_connected", e.to_string())
            }
            ReconcileError::Stripe(e) => {
                tracing::warn!(error = %e, "reconciliation could not list refunds");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "stripe_unavailable",
                    "Stripe could not list the account's refunds",
                )
            }
            ReconcileError::Database(e) => e.into(),
        })
}
