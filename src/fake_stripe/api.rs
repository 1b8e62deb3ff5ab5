//! The REST API: charges, refunds (with Stripe's Idempotency-Key semantics), refund lists.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{json, Value};

use super::{admit, apply_fault, check_key, record, FakeState};

type Shared = Arc<Mutex<FakeState>>;

pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route("/v1/charges/{id}", get(retrieve_charge))
        .route("/v1/refunds", post(create_refund).get(list_refunds))
        .route("/v1/events", get(list_events))
}

/// Builds an event the way Stripe would send it, and keeps it for `GET /v1/events`.
pub(super) fn push_event(
    state: &mut FakeState,
    kind: &str,
    account: Option<&str>,
    object: Value,
) -> Value {
    state.clock = state.clock.max(chrono::Utc::now().timestamp());
    let mut event = json!({
        "id": format!("evt_{}", uuid::Uuid::new_v4().simple()),
        "object": "event",
        "api_version": "2026-09-30.endive",
        "created": state.clock,
        "data": {"object": object},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": kind,
    });
    if let Some(account) = account {
        event["account"] = json!(account);
    }
    state.events.push(event.clone());
    event
}

/// A charge on a connected account.
#[derive(Debug, Clone)]
pub struct FakeCharge {
    pub account: String,
    pub amount: i64,
    pub currency: String,
    pub amount_refunded: i64,
    pub disputed: bool,
}

/// A refund as the fake holds it.
#[derive(Debug, Clone)]
pub struct FakeRefund {
    pub id: String,
    pub account: String,
    pub charge: String,
    pub amount: i64,
    pub status: String,
    pub reason: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
}

/// A saved answer for an Idempotency-Key.
#[derive(Debug, Clone)]
pub(crate) struct SavedAnswer {
    params: String,
    status: u16,
    body: Value,
}

/// Stripe's error object.
fn error_body(kind: &str, code: Option<&str>, param: Option<&str>, message: &str) -> Value {
    let mut error = json!({"type": kind, "message": message});
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    if let Some(param) = param {
        error["param"] = json!(param);
    }
    json!({ "error": error })
}

pub(super) fn stripe_error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
    message: &str,
) -> Response {
    (status, Json(error_body(kind, code, param, message))).into_response()
}

pub(super) fn charge_json(id: &str, charge: &FakeCharge) -> Value {
    json!({
        "id": id,
        "object": "charge",
        "amount": charge.amount,
        "amount_captured": charge.amount,
        "amount_refunded": charge.amount_refunded,
        "balance_transaction": "txn_fake",
        "captured": true,
        "created": 1_234_567_890,
        "currency": charge.currency,
        "description": "Fake charge",
        "disputed": charge.disputed,
        "livemode": false,
        "metadata": {},
        "paid": true,
        "refunded": charge.amount_refunded >= charge.amount,
        "status": "succeeded"
    })
}

pub(super) fn refund_json(refund: &FakeRefund) -> Value {
    json!({
        "id": refund.id,
        "object": "refund",
        "amount": refund.amount,
        "balance_transaction": "txn_fake_refund",
        "charge": refund.charge,
        "created": 1_234_567_890,
        "currency": "usd",
        "metadata": refund.metadata,
        "payment_intent": null,
        "reason": refund.reason,
        "receipt_number": null,
        "status": refund.status,
    })
}

fn account_of(headers: &HeaderMap) -> String {
    headers
        .get("stripe-account")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `account_invalid` for accounts that revoked us, as Stripe answers a platform that lost access.
fn check_account(state: &FakeState, account: &str) -> Option<Response> {
    state.revoked_accounts.contains(account).then(|| {
        stripe_error(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            Some("account_invalid"),
            None,
            "The provided key does not have access to account (or that account does not exist). Application access may have been revoked.",
        )
    })
}

async fn retrieve_charge(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/charges/{id}");
    if let Err(response) = admit(
        &state,
        "charges.retrieve",
        "GET",
        &path,
        &headers,
        Vec::new(),
    )
    .await
    {
        return response;
    }
    let account = account_of(&headers);
    let state = state.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(response) = check_account(&state, &account) {
        return response;
    }
    match state.charges.get(&id).filter(|c| c.account == account) {
        Some(charge) => Json(charge_json(&id, charge)).into_response(),
        None => stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            Some("id"),
            &format!("No such charge: '{id}'"),
        ),
    }
}

fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn create_refund(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let fault = record(
        &shared,
        "refunds.create",
        "POST",
        "/v1/refunds",
        &headers,
        form.clone(),
    );
    let execute_then_fail = match fault {
        Some(super::Fault::ExecuteThenFail(status)) => Some(status),
        other => {
            if let Some(response) = apply_fault(other).await {
                return response;
            }
            None
        }
    };
    if let Some(response) = check_key(&headers) {
        return response;
    }
    let account = account_of(&headers);
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut sorted = form.clone();
    sorted.sort();
    let params = serde_urlencoded::to_string(&sorted).unwrap_or_default();
    let mut state = shared.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(key) = &key {
        if let Some(saved) = state.idempotency.get(&(account.clone(), key.clone())) {
            if saved.params != params {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    None,
                    None,
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                );
            }
            let status = StatusCode::from_u16(saved.status).unwrap_or(StatusCode::OK);
            let mut response = (status, Json(saved.body.clone())).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return response;
        }
    }
    let (status, body) = execute_refund(&mut state, &account, key.as_deref(), &form);
    if let Some(key) = key {
        state.idempotency.insert(
            (account, key),
            SavedAnswer {
                params,
                status: status.as_u16(),
                body: body.clone(),
            },
        );
    }
    if let Some(fail) = execute_then_fail {
        // The refund exists and its answer is saved under the key; this response is lost.
        let status = StatusCode::from_u16(fail).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, "upstream connection reset").into_response();
    }
    (status, Json(body)).into_response()
}

fn execute_refund(
    state: &mut FakeState,
    account: &str,
    key: Option<&str>,
    form: &[(String, String)],
) -> (StatusCode, Value) {
    let error =
        |status: StatusCode, kind: &str, code: Option<&str>, param: Option<&str>, message: &str| {
            (status, error_body(kind, code, param, message))
        };
    if state.revoked_accounts.contains(account) {
        return error(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            Some("account_invalid"),
            None,
            "The provided key does not have access to account. Application access may have been revoked.",
        );
    }
    let charge_id = param(form, "charge").unwrap_or_default().to_owned();
    let Some(charge) = state
        .charges
        .get_mut(&charge_id)
        .filter(|c| c.account == account)
    else {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            Some("charge"),
            &format!("No such charge: '{charge_id}'"),
        );
    };
    if charge.disputed {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("charge_disputed"),
            None,
            &format!("Charge {charge_id} has been charged back; cannot issue a refund."),
        );
    }
    let remaining = charge.amount - charge.amount_refunded;
    if remaining <= 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("charge_already_refunded"),
            None,
            &format!("Charge {charge_id} has already been refunded."),
        );
    }
    let amount = match param(form, "amount").map(str::parse::<i64>) {
        None => remaining,
        Some(Ok(amount)) if amount > 0 => amount,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("parameter_invalid_integer"),
                Some("amount"),
                "Invalid integer",
            )
        }
    };
    if amount > remaining {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            Some("amount"),
            &format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})"),
        );
    }
    charge.amount_refunded += amount;
    let metadata = form
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_owned(), v.clone()))
        })
        .collect();
    let refund = FakeRefund {
        id: format!("re_{}", uuid::Uuid::new_v4().simple()),
        account: account.to_owned(),
        charge: charge_id,
        amount,
        status: state.refund_status.clone(),
        reason: param(form, "reason").map(str::to_owned),
        metadata,
        idempotency_key: key.map(str::to_owned),
    };
    let body = refund_json(&refund);
    state.refunds.push(refund);
    push_event(state, "refund.created", Some(account), body.clone());
    (StatusCode::OK, body)
}

#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    charge: Option<String>,
    limit: Option<usize>,
    starting_after: Option<String>,
}

async fn list_refunds(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    if let Err(response) = admit(
        &state,
        "refunds.list",
        "GET",
        "/v1/refunds",
        &headers,
        Vec::new(),
    )
    .await
    {
        return response;
    }
    let account = account_of(&headers);
    let state = state.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(response) = check_account(&state, &account) {
        return response;
    }
    let mut matching: Vec<&FakeRefund> = state
        .refunds
        .iter()
        .filter(|r| r.account == account && query.charge.as_ref().is_none_or(|c| &r.charge == c))
        .collect();
    if let Some(after) = &query.starting_after {
        if let Some(index) = matching.iter().position(|r| &r.id == after) {
            matching = matching.split_off(index + 1);
        }
    }
    let limit = query.limit.unwrap_or(10).clamp(1, 100);
    let has_more = matching.len() > limit;
    let data: Vec<Value> = matching.into_iter().take(limit).map(refund_json).collect();
    Json(json!({"object": "list", "data": data, "has_more": has_more, "url": "/v1/refunds"}))
        .into_response()
}

async fn list_events(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(response) = admit(
        &state,
        "events.list",
        "GET",
        "/v1/events",
        &headers,
        Vec::new(),
    )
    .await
    {
        return response;
    }
    let account = headers
        .get("stripe-account")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bound = |name: &str| query.get(name).and_then(|v| v.parse::<i64>().ok());
    let (gte, lte) = (bound("created[gte]"), bound("created[lte]"));
    let state = state.lock().unwrap_or_else(|p| p.into_inner());
    // Stripe lists newest first.
    let mut matching: Vec<&Value> = state
        .events
        .iter()
        .rev()
        .filter(|e| e.get("account").and_then(Value::as_str) == account.as_deref())
        .filter(|e| {
            let created = e["created"].as_i64().unwrap_or_default();
            gte.is_none_or(|g| created >= g) && lte.is_none_or(|l| created <= l)
        })
        .collect();
    if let Some(after) = query.get("starting_after") {
        if let Some(index) = matching
            .iter()
            .position(|e| e["id"].as_str() == Some(after.as_str()))
        {
            matching = matching.split_off(index + 1);
        }
    }
    let limit = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10usize)
        .clamp(1, 100);
    let has_more = matching.len() > limit;
    let data: Vec<Value> = matching.into_iter().take(limit).cloned().collect();
    Json(json!({"object": "list", "data": data, "has_more": has_more, "url": "/v1/events"}))
        .into_response()
}
