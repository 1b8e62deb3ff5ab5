//! Extractors whose rejections speak the API's error shape.

use axum::extract::{FromRequest, FromRequestParts};

use super::error::ApiError;

/// JSON body; a bad body is a 400/413/415 in the uniform error shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// Query string; a bad one is a 400 in the uniform error shape.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}
