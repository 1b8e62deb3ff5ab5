//! `GET /openapi.json`: the HTTP API as an OpenAPI 3.1 document generated from the handlers'
//! `#[utoipa::path]` annotations and the request and response types' `ToSchema` derives, so it
//! cannot drift from the code. The dashboard's HTML pages are not part of it.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{apps, audit, connect_callback, health, refunds, webhooks};

/// Every error: `{"error": {"code", "message"}}`.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"error": {"code": "app_not_found", "message": "no app has this slug"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable (docs/api.md lists them).
    pub code: String,
    /// For people.
    pub message: String,
}

struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "connect-ledger",
        description = "Event-sourced ledger for refunds on Stripe Connect accounts. Bearer tokens: operators may do everything, auditors may only read. Amounts are integers in minor units. Errors are {\"error\":{\"code\",\"message\"}}."
    ),
    modifiers(&BearerTokens),
    security(("bearer" = [])),
    paths(
        apps::get_apps, apps::create_app, apps::get_app, apps::start_connect, apps::disconnect,
        connect_callback::callback,
        refunds::create_refund, refunds::get_refunds, refunds::get_refund, refunds::get_charge,
        webhooks::receive, webhooks::list_events, webhooks::retry_event, webhooks::retry_dead,
        webhooks::run_backfill,
        audit::entries, audit::verify, audit::latest_report, audit::run_report,
        health::healthz, health::readyz, crate::metrics::render, serve,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "apps", description = "App connections through Stripe Connect OAuth"),
        (name = "refunds", description = "Refunds on the apps' connected accounts, and each charge's ledger"),
        (name = "webhooks", description = "Stripe's events: delivery, the inbox, backfill"),
        (name = "audit", description = "The audit log, its hash chain, reconciliation with Stripe"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The document, as served.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.openapi = utoipa::openapi::OpenApiVersion::Version31;
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "OpenAPI 3.1", body = Object,
        example = json!({"openapi": "3.1.0", "info": {"title": "connect-ledger"}, "paths": {}}))))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}
