//! `/v1/refunds` and `/v1/charges/{id}`: refunds on connected accounts and the charge ledger.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use ledger_aggregates::app_connection::APP_CONNECTION;
use ledger_aggregates::charge_ledger::{RefundReason, RefundRecord, RefundStatus, CHARGE_LEDGER};
use ledger_projections::refunds::{
    find_charge, find_refund, list_refunds, ChargeRow, RefundFilter, RefundRow,
};
use serde::{Deserialize, Serialize};

use super::context::ApiCommand;
use super::error::ApiError;
use super::extract::{Json, Query};
use super::openapi::ErrorBody;
use super::state::AppState;
use crate::refunds::{Recorded, RefundError, RefundRequest, APP_NOT_AUTHORIZED};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/refunds", post(create_refund).get(get_refunds))
        .route("/v1/refunds/{id}", get(get_refund))
        .route("/v1/charges/{charge_id}", get(get_charge))
}

/// Stripe's largest amount is 8 digits in most currencies; this only keeps numbers sane.
const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// A refund request. The idempotency key is `refund:<purchase_id>:<approval_id>`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"app": "total-typescript", "purchase_id": "pur_123", "charge_id": "ch_3Abc",
    "approval_id": "appr_9", "amount": 2000, "reason": "requested_by_customer", "requested_by": "agent@support.example"}))]
pub struct CreateRefund {
    app: String,
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,100}$")]
    purchase_id: String,
    #[schema(pattern = "^(ch|py)_[A-Za-z0-9_]+$")]
    charge_id: String,
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,100}$")]
    approval_id: String,
    /// Minor units; the whole refundable rest when absent.
    #[schema(minimum = 1)]
    amount: Option<i64>,
    /// requested_by_customer (default), duplicate or fraudulent.
    reason: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    requested_by: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RefundQuery {
    app: Option<String>,
    purchase_id: Option<String>,
    charge_id: Option<String>,
    /// requested, pending, requires_action, succeeded, failed or canceled.
    status: Option<String>,
    /// 1 to 1000, default 100.
    limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RefundList {
    refunds: Vec<RefundRow>,
}

/// An id that becomes part of the Idempotency-Key: printable, no separators, bounded.
fn check_id(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = (1..=100).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_request",
            format!("{field} must be 1 to 100 characters of letters, digits, '_', '-' or '.'"),
        ))
    }
}

fn check_charge_id(value: &str) -> Result<(), ApiError> {
    let ok = (value.starts_with("ch_") || value.starts_with("py_"))
        && value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_request",
            "charge_id must be a Stripe charge id (ch_… or py_…)",
        ))
    }
}

impl CreateRefund {
    fn validate(self) -> Result<RefundRequest, ApiError> {
        ledger_aggregates::Slug::parse(&self.app)
            .map_err(|_| ApiError::invalid("invalid_request", "app must be an app slug"))?;
        check_id("purchase_id", &self.purchase_id)?;
        check_id("approval_id", &self.approval_id)?;
        check_charge_id(&self.charge_id)?;
        if matches!(self.amount, Some(a) if a <= 0 || a > MAX_AMOUNT) {
            return Err(ApiError::invalid(
                "invalid_amount",
                "amount must be a positive integer in the currency's minor unit",
            ));
        }
        let reason = match self.reason.as_deref() {
            None => RefundReason::default(),
            Some(raw) => RefundReason::parse(raw).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_reason",
                    "reason must be requested_by_customer, duplicate or fraudulent",
                )
            })?,
        };
        let requested_by = self.requested_by.trim().to_owned();
        if requested_by.is_empty() || requested_by.chars().count() > 200 {
            return Err(ApiError::invalid(
                "invalid_request",
                "requested_by must name who asked for the refund (1 to 200 characters)",
            ));
        }
        Ok(RefundRequest {
            app: self.app,
            purchase_id: self.purchase_id,
            charge_id: self.charge_id,
            approval_id: self.approval_id,
            amount: self.amount,
            reason,
            requested_by,
        })
    }
}

/// A refund Stripe refused outright is answered as the error it is; any other refund (in flight,
/// done, failed later at the bank, void because the charge was already refunded) as itself.
fn refusal(refund: &RefundRecord) -> Option<ApiError> {
    if refund.status != RefundStatus::Failed || refund.stripe_refund_id.is_some() {
        return None;
    }
    let code = refund.failure_reason.as_deref().unwrap_or("stripe_error");
    Some(match code {
        APP_NOT_AUTHORIZED => ApiError::new(
            StatusCode::CONFLICT,
            "app_not_authorized",
            "Stripe no longer lets the platform act on this app's account (access was revoked); the app is flagged for attention and must be reconnected",
        ),
        "charge_disputed" | "refund_disputed_payment" => ApiError::invalid(
            "charge_disputed",
            "the charge is disputed; it cannot be refunded until the dispute is resolved",
        ),
        "amount_too_large" => ApiError::invalid(
            "amount_exceeds_refundable",
            "Stripe says the amount is more than remains refundable on the charge",
        ),
        "charge_not_refundable" => ApiError::invalid(
            "charge_not_refundable",
            "Stripe says this charge cannot be refunded",
        ),
        "balance_insufficient" => ApiError::invalid(
            "balance_insufficient",
            "the connected account's Stripe balance is too low for this refund",
        ),
        other => ApiError::invalid(
            "refund_rejected",
            format!("Stripe refused the refund ({other})"),
        ),
    })
}

/// The refund as the refunds table shows it, once the projection has caught up.
async fn refund_view(
    state: &AppState,
    refund: &RefundRecord,
    charge_id: &str,
    app: &str,
) -> Result<RefundRow, ApiError> {
    if state.ledger.settle(CHARGE_LEDGER, charge_id).await {
        // The rows the projection's last batch wrote, when they include this request's events;
        // otherwise the table.
        let kept = crate::writes::appended(CHARGE_LEDGER, charge_id).and_then(|written| {
            state
                .refund_rows
                .kept_refund(charge_id, &refund.refund_id, written)
        });
        if let Some(row) = kept {
            return Ok(row);
        }
        if let Some(row) = find_refund(&state.pool, &refund.refund_id).await? {
            return Ok(row);
        }
    }
    let now = Utc::now();
    Ok(row_of(
        refund,
        charge_id,
        app,
        Recorded {
            created_at: now,
            updated_at: now,
        },
    ))
}

/// The refund as the `refunds` projection writes it, from the command side's record and the
/// times its events were recorded.
fn row_of(refund: &RefundRecord, charge_id: &str, app: &str, recorded: Recorded) -> RefundRow {
    RefundRow {
        id: refund.refund_id.clone(),
        app: app.to_owned(),
        purchase_id: refund.purchase_id.clone(),
        charge_id: charge_id.to_owned(),
        approval_id: refund.approval_id.clone(),
        amount: refund.amount,
        currency: refund.currency.clone(),
        reason: refund.reason.as_str().to_owned(),
        status: refund.status.as_str().to_owned(),
        stripe_refund_id: refund.stripe_refund_id.clone(),
        failure_reason: refund.failure_reason.clone(),
        idempotency_key: refund.idempotency_key.clone(),
        requested_by: refund.requested_by.clone(),
        created_at: recorded.created_at,
        updated_at: recorded.updated_at,
    }
}

/// Refund a purchase's charge on the app's connected account (full when `amount` is absent),
/// once per purchase and approval: a repeat answers the refund the first request made.
#[utoipa::path(post, path = "/v1/refunds", tag = "refunds", request_body = CreateRefund,
    responses(
        (status = 201, description = "a new refund, as Stripe answered it", body = RefundRow,
         example = json!({"id": "rf_0d4c", "app": "total-typescript", "purchase_id": "pur_123", "charge_id": "ch_3Abc",
             "approval_id": "appr_9", "amount": 2000, "currency": "usd", "reason": "requested_by_customer", "status": "succeeded",
             "stripe_refund_id": "re_3Abc", "failure_reason": null, "idempotency_key": "refund:pur_123:appr_9",
             "requested_by": "agent@support.example", "created_at": "2026-11-22T10:00:00Z", "updated_at": "2026-11-22T10:00:01Z"})),
        (status = 200, description = "the refund this purchase_id and approval_id already named", body = RefundRow),
        (status = 400, description = "unreadable body", body = ErrorBody),
        (status = 401, description = "no or unknown token", body = ErrorBody),
        (status = 403, description = "an auditor's token", body = ErrorBody),
        (status = 404, description = "app_not_found", body = ErrorBody),
        (status = 409, description = "app_not_connected, app_not_authorized, idempotency_key_reused, charge_belongs_to_another_app", body = ErrorBody),
        (status = 422, description = "invalid_request, invalid_amount, invalid_reason, charge_not_found, amount_exceeds_refundable, charge_disputed, refund_rejected", body = ErrorBody),
        (status = 503, description = "stripe_unavailable or database_unavailable: retry", body = ErrorBody)))]
async fn create_refund(
    State(state): State<AppState>,
    ApiCommand(meta): ApiCommand,
    Json(body): Json<CreateRefund>,
) -> Result<(StatusCode, Json<RefundRow>), ApiError> {
    let request = body.validate()?;
    let (charge_id, app) = (request.charge_id.clone(), request.app.clone());
    let accepted = match state.refunds.accept(request, &meta).await {
        Ok(accepted) => accepted,
        Err(error) => {
            if matches!(error, RefundError::AppNotAuthorized) {
                // The app was flagged: let readers see it before the caller does.
                state.ledger.settle(APP_CONNECTION, &app).await;
            }
            return Err(error.into());
        }
    };
    if let Some(error) = refusal(&accepted.refund) {
        state.ledger.settle(CHARGE_LEDGER, &charge_id).await;
        if error.code == "app_not_authorized" {
            state.ledger.settle(APP_CONNECTION, &app).await;
        }
        return Err(error);
    }
    metrics::counter!("refunds_total", "status" => accepted.refund.status.as_str()).increment(1);
    // A refund this request wrote alone is answered as it was recorded; readers wait for the
    // read models to show it (docs/decisions/0031).
    let view = match accepted.recorded {
        Some(recorded) => row_of(&accepted.refund, &charge_id, &app, recorded),
        None => refund_view(&state, &accepted.refund, &charge_id, &app).await?,
    };
    let status = if accepted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// One refund.
#[utoipa::path(get, path = "/v1/refunds/{id}", tag = "refunds", params(("id" = String, Path, description = "rf_…")),
    responses((status = 200, description = "the refund", body = RefundRow),
              (status = 401, description = "no or unknown token", body = ErrorBody),
              (status = 404, description = "refund_not_found", body = ErrorBody)))]
async fn get_refund(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RefundRow>, ApiError> {
    state.ledger.fresh(CHARGE_LEDGER).await;
    find_refund(&state.pool, &id)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "refund_not_found",
                "no refund with this id",
            )
        })
}

/// Refunds, oldest first, filtered.
#[utoipa::path(get, path = "/v1/refunds", tag = "refunds", params(RefundQuery),
    responses((status = 200, description = "the refunds", body = RefundList),
              (status = 400, description = "unreadable query", body = ErrorBody),
              (status = 401, description = "no or unknown token", body = ErrorBody),
              (status = 422, description = "invalid_status", body = ErrorBody)))]
async fn get_refunds(
    State(state): State<AppState>,
    Query(query): Query<RefundQuery>,
) -> Result<Json<RefundList>, ApiError> {
    if let Some(status) = &query.status {
        if RefundStatus::parse(status).is_none() {
            return Err(ApiError::invalid("invalid_status", "unknown refund status"));
        }
    }
    let filter = RefundFilter {
        app: query.app,
        purchase_id: query.purchase_id,
        charge_id: query.charge_id,
        status: query.status,
        limit: query.limit.unwrap_or(100).clamp(1, 1000),
        newest_first: false,
    };
    state.ledger.fresh(CHARGE_LEDGER).await;
    Ok(Json(RefundList {
        refunds: list_refunds(&state.pool, &filter).await?,
    }))
}

/// A charge's ledger: amount, refunded, pending at Stripe, still refundable.
#[utoipa::path(get, path = "/v1/charges/{charge_id}", tag = "refunds", params(("charge_id" = String, Path, description = "ch_… or py_…")),
    responses((status = 200, description = "the charge's ledger", body = ChargeRow,
               example = json!({"charge_id": "ch_3Abc", "app": "total-typescript", "amount": 9900, "currency": "usd",
                                "refunded": 3500, "pending": 0, "refundable": 6400})),
              (status = 401, description = "no or unknown token", body = ErrorBody),
              (status = 404, description = "charge_not_found", body = ErrorBody)))]
async fn get_charge(
    State(state): State<AppState>,
    Path(charge_id): Path<String>,
) -> Result<Json<ChargeRow>, ApiError> {
    state.ledger.fresh(CHARGE_LEDGER).await;
    find_charge(&state.pool, &charge_id)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "charge_not_found",
                "the ledger has no refunds for this charge",
            )
        })
}
