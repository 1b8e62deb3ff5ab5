//! Extractors whose rejections speak the API's error shape, and the refusal of NUL characters
//! (PostgreSQL cannot store them in text: they would otherwise surface as 500s).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// JSON body; a bad body is a 400/413/415 in the uniform error shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// Whether a JSON text holds a `\u0000` escape (one whose backslash is not itself escaped).
fn has_nul_escape(json: &[u8]) -> bool {
    let mut backslashes = 0;
    for (index, byte) in json.iter().enumerate() {
        if *byte == b'\\' {
            backslashes += 1;
            continue;
        }
        if backslashes % 2 == 1 && *byte == b'u' && json[index + 1..].starts_with(b"0000") {
            return true;
        }
        backslashes = 0;
    }
    false
}

/// Refuses JSON bodies carrying a NUL character, before any handler sees them.
pub async fn refuse_nul_in_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, super::MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body exceeds {} bytes", super::MAX_BODY_BYTES),
            )
            .into_response()
        }
    };
    if has_nul_escape(&bytes) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "text may not contain NUL characters (\\u0000)",
        )
        .into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// Query string; a bad one is a 400 in the uniform error shape.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Refuses a path or query string carrying an encoded NUL (`%00`) before any handler sees it.
pub async fn refuse_nul_in_uri(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let encoded_nul = |text: &str| text.contains("%00");
    if encoded_nul(uri.path()) || uri.query().is_some_and(encoded_nul) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "paths and query strings may not contain NUL characters (%00)",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::has_nul_escape;

    #[test]
    fn finds_nul_escapes_but_not_escaped_backslashes() {
        assert!(has_nul_escape(br#"{"a":"x\u0000"}"#));
        assert!(has_nul_escape(br#"{"a\u0000":1}"#));
        assert!(has_nul_escape(br#"{"a":"\\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"a":"\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"a":"u0000 \u0001"}"#));
    }
}
