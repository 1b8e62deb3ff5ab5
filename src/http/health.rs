//! Liveness and readiness.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::render))
        .route("/openapi.json", get(super::openapi::serve))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "up", body = Object, example = json!({"status": "ok"}))))]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers (within 2 s); the projections' lag.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "ready", body = Object,
               example = json!({"status": "ready", "database": "ok", "projections": [{"projection": "refunds", "behind": 0, "oldest_seconds": 0.0}]})),
              (status = 503, description = "not ready: the database did not answer", body = Object)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool);
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(_)) => {
            let lag = state.ledger.projections.lag().await.unwrap_or_default();
            (
                StatusCode::OK,
                Json(json!({"status": "ready", "database": "ok", "projections": lag})),
            )
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "not_ready",
                "database": "unreachable",
                "error": {"code": "database_unreachable", "message": "the database did not answer"}
            })),
        ),
    }
}
