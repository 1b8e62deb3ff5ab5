//! `GET /openapi.json`: the HTTP API as an OpenAPI 3.1 document, written next to the routes it
//! describes (generation with utoipa annotations is the planned next step, see CHANGELOG).

use axum::Json;
use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(description: &str, schema: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn query(name: &str, description: &str, kind: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": kind}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

pub fn document() -> Value {
    let unauthorized = error_response("no or unknown bearer token");
    let forbidden = error_response("an auditor token on a write");
    json!({
        "openapi": "3.1.0",
        "info": {"title": "connect-ledger", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Event-sourced ledger for refunds on Stripe Connect accounts. Errors are {\"error\":{\"code\",\"message\"}}."},
        "security": [{"bearer": []}],
        "paths": {
            "/v1/apps": {
                "get": {"summary": "List apps", "responses": {"200": ok("apps", "AppList"), "401": unauthorized}},
                "post": {"summary": "Register an app",
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewApp"},
                             "example": {"slug": "total-typescript", "name": "Total TypeScript"}}}},
                         "responses": {"201": ok("the app", "App"), "400": error_response("unreadable body"), "401": unauthorized,
                                       "403": forbidden, "409": error_response("slug_taken"), "413": error_response("too large"),
                                       "415": error_response("not JSON"), "422": error_response("invalid_slug or invalid_name")}}
            },
            "/v1/apps/{slug}": {"get": {"summary": "One app", "parameters": [path_param("slug")],
                "responses": {"200": ok("the app", "App"), "401": unauthorized, "404": error_response("app_not_found")}}},
            "/v1/apps/{slug}/connect": {"post": {"summary": "Start Connect OAuth", "parameters": [path_param("slug")],
                "responses": {"200": ok("where to send the owner", "ConnectStarted"), "401": unauthorized, "403": forbidden,
                              "404": error_response("app_not_found"), "409": error_response("app_already_connected"),
                              "503": error_response("stripe_not_configured")}}},
            "/v1/apps/{slug}/disconnect": {"post": {"summary": "Deauthorize and disconnect", "parameters": [path_param("slug")],
                "responses": {"200": ok("the app, disconnected", "App"), "401": unauthorized, "403": forbidden,
                              "404": error_response("app_not_found"), "409": error_response("app_not_connected"),
                              "502": error_response("stripe_unavailable or stripe_refused")}}},
            "/api/stripe/connect/callback": {"get": {"summary": "Stripe's OAuth redirect", "security": [],
                "parameters": [query("code", "authorization code", "string"), query("state", "the state from /connect", "string"),
                               query("error", "e.g. access_denied", "string"), query("error_description", "", "string")],
                "responses": {"303": {"description": "to /settings/integrations?app=<slug>&success=connected or ?error=denied|invalid_state|oauth_failed|missing_code"}}}},
            "/v1/refunds": {
                "get": {"summary": "List refunds", "parameters": [query("app", "", "string"), query("purchase_id", "", "string"),
                        query("charge_id", "", "string"), query("status", "requested|pending|requires_action|succeeded|failed|canceled", "string"),
                        query("limit", "1..1000, default 100", "integer")],
                        "responses": {"200": ok("refunds, oldest first", "RefundList"), "401": unauthorized, "422": error_response("invalid_status")}},
                "post": {"summary": "Refund a purchase's charge on the app's connected account",
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewRefund"},
                             "example": {"app": "total-typescript", "purchase_id": "pur_123", "charge_id": "ch_3Abc", "approval_id": "appr_9",
                                         "amount": 2000, "reason": "requested_by_customer", "requested_by": "agent@support.example"}}}},
                         "responses": {"201": ok("a new refund", "Refund"), "200": ok("the refund this purchase_id + approval_id already named", "Refund"),
                                       "400": error_response("unreadable body"), "401": unauthorized, "403": forbidden,
                                       "404": error_response("app_not_found"),
                                       "409": error_response("app_not_connected, app_not_authorized, idempotency_key_reused, charge_belongs_to_another_app"),
                                       "422": error_response("invalid_request, invalid_amount, invalid_reason, charge_not_found, amount_exceeds_refundable, charge_disputed, refund_rejected…"),
                                       "503": error_response("stripe_unavailable")}}
            },
            "/v1/refunds/{id}": {"get": {"summary": "One refund", "parameters": [path_param("id")],
                "responses": {"200": ok("the refund", "Refund"), "401": unauthorized, "404": error_response("refund_not_found")}}},
            "/v1/charges/{charge_id}": {"get": {"summary": "A charge's ledger", "parameters": [path_param("charge_id")],
                "responses": {"200": ok("amount, refunded, pending, refundable", "Charge"), "401": unauthorized, "404": error_response("charge_not_found")}}},
            "/api/stripe/webhooks": {"post": {"summary": "Stripe event delivery (signed)", "security": [],
                "parameters": [{"name": "Stripe-Signature", "in": "header", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "stored (or a duplicate)", "content": {"application/json": {"schema": {"type": "object",
                                 "properties": {"received": {"type": "boolean"}, "duplicate": {"type": "boolean"}}}}}},
                              "400": error_response("invalid_signature or invalid_event"), "413": error_response("too large")}}},
            "/v1/webhooks/events": {"get": {"summary": "The webhook inbox", "parameters": [query("status", "pending|processing|handled|ignored|unmatched|failed|dead", "string"), query("limit", "", "integer")],
                "responses": {"200": {"description": "events"}, "401": unauthorized, "422": error_response("invalid_status")}}},
            "/v1/webhooks/events/{id}/retry": {"post": {"summary": "Requeue one event", "parameters": [path_param("id")],
                "responses": {"200": {"description": "requeued"}, "401": unauthorized, "403": forbidden, "404": error_response("event_not_retryable")}}},
            "/v1/webhooks/retry-dead": {"post": {"summary": "Requeue every dead event", "responses": {"200": {"description": "requeued"}, "401": unauthorized, "403": forbidden}}},
            "/v1/webhooks/backfill": {"post": {"summary": "Fetch missed events from Stripe",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["since"],
                    "properties": {"since": {"type": "integer"}, "until": {"type": "integer"}, "account": {"type": "string"}}}}}},
                "responses": {"200": {"description": "accounts, listed, stored"}, "401": unauthorized, "403": forbidden, "502": error_response("stripe_unavailable")}}},
            "/v1/audit": {"get": {"summary": "Audit entries, oldest first (CSV with Accept: text/csv)",
                "parameters": [query("app", "", "string"), query("purchase_id", "", "string"), query("charge_id", "", "string"),
                               query("refund_id", "", "string"), query("source", "api|stripe_webhook|system", "string"),
                               query("since", "RFC 3339", "string"), query("until", "RFC 3339, exclusive", "string"),
                               query("after", "position cursor", "integer"), query("limit", "1..1000", "integer")],
                "responses": {"200": {"description": "{entries, next}", "content": {"application/json": {"schema": {"type": "object"}}, "text/csv": {}}},
                              "401": unauthorized, "422": error_response("invalid_source")}}},
            "/v1/audit/verify": {"get": {"summary": "Check the audit log's hash chain",
                "responses": {"200": {"description": "{ok, checked, first_bad_position, head}"}, "401": unauthorized}}},
            "/v1/reconciliation/{app}": {
                "get": {"summary": "Latest reconciliation report", "parameters": [path_param("app")],
                        "responses": {"200": {"description": "report"}, "401": unauthorized, "404": error_response("report_not_found")}},
                "post": {"summary": "Reconcile the app's refunds with Stripe", "parameters": [path_param("app")],
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "properties": {"since": {"type": "integer"}}}}}},
                         "responses": {"200": {"description": "report"}, "401": unauthorized, "403": forbidden, "404": error_response("app_not_found"),
                                       "409": error_response("app_not_connected"), "502": error_response("stripe_unavailable")}}
            },
            "/healthz": {"get": {"summary": "Process up", "security": [], "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Database reachable; projection lag", "security": [], "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {"200": {"description": "text exposition format"}}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"],
                          "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "NewApp": {"type": "object", "required": ["slug", "name"], "additionalProperties": false,
                           "properties": {"slug": {"type": "string", "pattern": "^[a-z0-9-]{1,64}$"}, "name": {"type": "string", "minLength": 1, "maxLength": 200}}},
                "App": {"type": "object", "properties": {"slug": {"type": "string"}, "name": {"type": "string"},
                        "status": {"enum": ["connected", "disconnected"]}, "stripe_account_id": {"type": ["string", "null"]},
                        "livemode": {"type": ["boolean", "null"]}, "connected_at": {"type": ["string", "null"], "format": "date-time"}}},
                "AppList": {"type": "object", "properties": {"apps": {"type": "array", "items": {"$ref": "#/components/schemas/App"}}}},
                "ConnectStarted": {"type": "object", "properties": {"authorize_url": {"type": "string"}, "state": {"type": "string"},
                                   "expires_at": {"type": "string", "format": "date-time"}}},
                "NewRefund": {"type": "object", "required": ["app", "purchase_id", "charge_id", "approval_id", "requested_by"], "additionalProperties": false,
                              "properties": {"app": {"type": "string"}, "purchase_id": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,100}$"},
                                             "charge_id": {"type": "string", "pattern": "^(ch|py)_[A-Za-z0-9_]+$"},
                                             "approval_id": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,100}$"},
                                             "amount": {"type": "integer", "minimum": 1}, "reason": {"enum": ["requested_by_customer", "duplicate", "fraudulent"]},
                                             "requested_by": {"type": "string", "minLength": 1, "maxLength": 200}}},
                "Refund": {"type": "object", "properties": {"id": {"type": "string"}, "app": {"type": "string"}, "purchase_id": {"type": "string"},
                           "charge_id": {"type": "string"}, "approval_id": {"type": "string"}, "amount": {"type": "integer"}, "currency": {"type": "string"},
                           "reason": {"type": "string"}, "status": {"enum": ["requested", "pending", "requires_action", "succeeded", "failed", "canceled"]},
                           "stripe_refund_id": {"type": ["string", "null"]}, "failure_reason": {"type": ["string", "null"]},
                           "idempotency_key": {"type": "string"}, "requested_by": {"type": "string"},
                           "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"}}},
                "RefundList": {"type": "object", "properties": {"refunds": {"type": "array", "items": {"$ref": "#/components/schemas/Refund"}}}},
                "Charge": {"type": "object", "properties": {"charge_id": {"type": "string"}, "app": {"type": "string"}, "amount": {"type": "integer"},
                           "currency": {"type": "string"}, "refunded": {"type": "integer"}, "pending": {"type": "integer"}, "refundable": {"type": "integer"}}}
            }
        }
    })
}

pub async fn serve() -> Json<Value> {
    Json(document())
}
