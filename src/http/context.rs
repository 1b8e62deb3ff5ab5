//! The facts about a request that go into event metadata.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use ledger_aggregates::{EventMetadata, Source};

use super::auth::Principal;
use super::error::ApiError;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

pub fn request_id(parts: &Parts) -> String {
    parts
        .headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// An authenticated API command's metadata (actor from the token, `source = api`).
#[derive(Debug, Clone)]
pub struct ApiCommand(pub EventMetadata);

impl<S: Send + Sync> FromRequestParts<S> for ApiCommand {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Self(EventMetadata::new(
            principal.actor,
            Source::Api,
            request_id(parts),
        )))
    }
}

/// The request id of an unauthenticated request (the OAuth callback, webhooks).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(request_id(parts)))
    }
}
