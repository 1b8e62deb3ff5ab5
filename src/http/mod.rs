//! The HTTP surface: routes per resource, one error type, layers for ids, tracing and limits.

pub mod apps;
pub mod audit;
pub mod auth;
pub mod connect_callback;
pub mod context;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod health;
pub mod openapi;
pub mod refunds;
pub mod state;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderName, StatusCode};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use self::auth::Authenticator;
use self::state::AppState;

/// Bodies larger than this are refused with 413 (by the body extractors, in the error shape).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

pub fn router(state: AppState, tokens: Arc<Authenticator>) -> Router {
    let request_id = HeaderName::from_static(context::REQUEST_ID_HEADER);
    let dashboard = dashboard::router(Arc::clone(&tokens));
    let api = apps::router()
        .merge(refunds::router())
        .merge(webhooks::router())
        .merge(audit::router())
        .route_layer(axum::middleware::from_fn(extract::refuse_nul_in_body))
        .route_layer(axum::middleware::from_fn_with_state(
            tokens,
            auth::require_token,
        ));
    Router::new()
        .merge(api)
        .merge(connect_callback::router())
        .merge(webhooks::delivery_router())
        .merge(health::router())
        .merge(dashboard)
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
        .route_layer(axum::middleware::from_fn(crate::metrics::track_requests))
        .route_layer(axum::middleware::from_fn(
            |request: axum::extract::Request, next: axum::middleware::Next| {
                crate::writes::recording(next.run(request))
            },
        ))
        .layer(axum::middleware::from_fn(extract::refuse_nul_in_uri))
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveHeadersLayer::new([
                    header::AUTHORIZATION,
                    // The dashboard's cookie holds its token.
                    header::COOKIE,
                    header::SET_COOKIE,
                    HeaderName::from_static("stripe-signature"),
                ]))
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|request: &axum::extract::Request| {
                        let id = request
                            .headers()
                            .get(context::REQUEST_ID_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        tracing::info_span!("request", method = %request.method(), uri = %request.uri().path(), request_id = %id)
                    }),
                )
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(CatchPanicLayer::custom(|_| {
                    error::ApiError::internal("handler panicked").into_response_boxed()
                }))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Duration::from_secs(30),
                ))
                .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
}
