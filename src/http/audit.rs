//! `/v1/audit` (JSON or CSV), `/v1/audit/verify`, and reconciliation reports.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use ledger_aggregates::charge_ledger::CHARGE_LEDGER;
use ledger_aggregates::Source;
use ledger_projections::audit::{self, AuditEntry, AuditFilter, Verification};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;
use super::extract::{Json, Query};
use super::openapi::ErrorBody;
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    app: Option<String>,
    purchase_id: Option<String>,
    charge_id: Option<String>,
    refund_id: Option<String>,
    /// api, stripe_webhook or system.
    source: Option<String>,
    /// On `recorded_at`, RFC 3339.
    since: Option<DateTime<Utc>>,
    /// On `recorded_at`, RFC 3339, exclusive.
    until: Option<DateTime<Utc>>,
    /// The position cursor: entries after it.
    after: Option<i64>,
    /// 1 to 1000, default 100.
    limit: Option<i64>,
}

/// A page of the audit log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    entries: Vec<AuditEntry>,
    /// The cursor of the next page (`after`), if there is one.
    next: Option<i64>,
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

/// Audit entries, oldest first, filtered and paged; CSV with `Accept: text/csv` (the next cursor
/// in `X-Next-Position`).
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "a page of entries", content(
                  (AuditPage = "application/json", example = json!({"entries": [{"position": 1, "recorded_at": "2026-11-22T10:00:00Z",
                      "aggregate_type": "AppConnection", "aggregate_id": "total-typescript", "sequence": 1, "event_type": "AppRegistered",
                      "source": "api", "actor": "operator:3559b50c80b0", "correlation_id": "6f1c…", "stripe_event_id": null,
                      "app": "total-typescript", "purchase_id": null, "charge_id": null, "refund_id": null,
                      "data": {"slug": "total-typescript", "name": "Total TypeScript"}}], "next": null})),
                  (String = "text/csv"))),
              (status = 400, description = "unreadable query", body = ErrorBody),
              (status = 401, description = "no or unknown token", body = ErrorBody),
              (status = 422, description = "invalid_source", body = ErrorBody)))]
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
    Ok(Json(AuditPage { entries, next }).into_response())
}

/// Recompute the audit log's hash chain.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "the verification", body = Verification,
               example = json!({"ok": true, "checked": 120, "first_bad_position": null, "head": "015cb982…"})),
              (status = 401, description = "no or unknown token", body = ErrorBody)))]
async fn verify(State(state): State<AppState>) -> Result<Json<Verification>, ApiError> {
    Ok(Json(audit::verify(&state.pool).await?))
}

/// The latest reconciliation report of an app.
#[utoipa::path(get, path = "/v1/reconciliation/{app}", tag = "audit", params(("app" = String, Path, description = "the app's slug")),
    responses((status = 200, description = "the report", body = reconcile::Report),
              (status = 401, description = "no or unknown token", body = ErrorBody),
              (status = 404, description = "report_not_found", body = ErrorBody)))]
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

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"since": 1763800000}))]
pub struct RunReport {
    /// Only refunds created since (Unix seconds).
    since: Option<i64>,
}

/// Compare the app's refunds in the ledger with Stripe's list, store and return the report.
#[utoipa::path(post, path = "/v1/reconciliation/{app}", tag = "audit", params(("app" = String, Path, description = "the app's slug")),
    request_body = RunReport,
    responses((status = 200, description = "the report", body = reconcile::Report,
               example = json!({"id": 7, "app": "total-typescript", "since": null, "created_at": "2026-11-22T10:00:00Z", "checked": 12,
                                "differences": [{"kind": "missing_in_ledger", "stripe_refund_id": "re_9", "refund_id": null, "charge_id": "ch_3Abc",
                                                 "ledger_amount": null, "stripe_amount": 500, "ledger_status": null, "stripe_status": "succeeded"}]})),
              (status = 401, description = "no or unknown token", body = ErrorBody),
              (status = 403, description = "an auditor's token", body = ErrorBody),
              (status = 404, description = "app_not_found", body = ErrorBody),
              (status = 409, description = "app_not_connected", body = ErrorBody),
              (status = 502, description = "stripe_unavailable", body = ErrorBody)))]
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
    // The report compares what the read models show: every refund answered before it.
    state.ledger.fresh(CHARGE_LEDGER).await;
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
