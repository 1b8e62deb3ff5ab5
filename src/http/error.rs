//! The one HTTP error type: every failure leaves as `{"error":{"code","message"}}`.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::ledger::LedgerError;
use ledger_aggregates::app_connection::AppConnectionError;
use ledger_aggregates::charge_ledger::ChargeLedgerError;

use crate::refunds::RefundError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token's role may not do this",
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} was not found"),
        )
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn stripe_not_configured(what: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stripe_not_configured",
            format!("{what} is not configured on this service"),
        )
    }

    /// The database could not be reached: logged, answered 503 so that clients (and Stripe)
    /// retry; every request of this API is safe to repeat.
    pub fn database_unavailable(error: impl std::fmt::Display) -> Self {
        tracing::warn!(%error, "database unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database could not be reached; retry shortly (repeating this request is safe)",
        )
    }

    /// A fault of ours: logged here once, answered without detail.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the service failed to handle this request; it has been logged",
        )
    }
}

impl ApiError {
    /// For layers that need a concrete response type.
    pub fn into_response_boxed(self) -> Response {
        self.into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<AppConnectionError> for ApiError {
    fn from(error: AppConnectionError) -> Self {
        use AppConnectionError as E;
        let status = match error {
            E::AppNotFound => StatusCode::NOT_FOUND,
            E::SlugTaken | E::AlreadyConnected | E::NotConnected | E::NoExchangeInProgress => {
                StatusCode::CONFLICT
            }
            E::InvalidName | E::InvalidState => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, error.code(), error.to_string())
    }
}

impl<E> From<LedgerError<E>> for ApiError
where
    E: std::error::Error + Into<ApiError>,
{
    fn from(error: LedgerError<E>) -> Self {
        match error {
            LedgerError::Domain(e) => e.into(),
            LedgerError::Contended => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "contended",
                "too many concurrent changes to the same record; retry shortly",
            ),
            LedgerError::Unavailable(e) => Self::database_unavailable(e),
            LedgerError::Store(e) => Self::internal(e),
        }
    }
}

impl From<ChargeLedgerError> for ApiError {
    fn from(error: ChargeLedgerError) -> Self {
        use ChargeLedgerError as E;
        let status = match error {
            E::ChargeBelongsToAnotherApp | E::IdempotencyKeyReused | E::AlreadyRequested { .. } => {
                StatusCode::CONFLICT
            }
            E::UnknownRefund | E::UnknownCharge => StatusCode::NOT_FOUND,
            E::ChargeDisputed | E::InvalidAmount | E::ExceedsRefundable { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
        };
        Self::new(status, error.code(), error.to_string())
    }
}

impl From<RefundError> for ApiError {
    fn from(error: RefundError) -> Self {
        match error {
            RefundError::Charge(e) => e.into(),
            RefundError::App(e) => e.into(),
            RefundError::AppNotConnected => AppConnectionError::NotConnected.into(),
            RefundError::AppNotAuthorized => Self::new(
                StatusCode::CONFLICT,
                "app_not_authorized",
                "Stripe no longer lets the platform act on this app's account (access was revoked); the app is flagged for attention and must be reconnected",
            ),
            RefundError::ChargeNotFound => Self::invalid(
                "charge_not_found",
                "the charge does not exist on the app's Stripe account",
            ),
            RefundError::KeyReused => Self::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this purchase_id and approval_id were already used for a different refund (another amount, charge or app)",
            ),
            RefundError::StripeUnavailable(reason) => {
                tracing::warn!(%reason, "Stripe unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "stripe_unavailable",
                    "Stripe could not be reached; nothing was recorded, retry later",
                )
            }
            RefundError::StripeNotConfigured => Self::stripe_not_configured("STRIPE_SECRET_KEY"),
            RefundError::Database(e) => e.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&error) {
            Self::database_unavailable(error)
        } else {
            Self::internal(error)
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match rejection {
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::JsonSyntaxError(_) => "invalid_json",
            JsonRejection::JsonDataError(_) => "invalid_body",
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            _ => "invalid_body",
        };
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        Self::new(status, code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    }
}

/// The fallback for unknown routes.
pub async fn route_not_found() -> ApiError {
    ApiError::not_found("this route")
}

/// The fallback for known routes called with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept this method",
    )
}
