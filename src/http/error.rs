//! Errors of the HTTP layer: a safe JSON body for the caller, details in the logs.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::writer::WriteError;

/// The body of every error answer, as the OpenAPI document names it (`Error`).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    /// A stable code to switch on (`unauthorized`, `not_found`, `gone`, `invalid_user_id`, …; each answer's
    /// description lists its codes).
    pub error: &'a str,
    /// Text for a person; it may change between releases.
    pub message: &'a str,
}

/// An error answer: `{"error": "<code>", "message": "<human text>"}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After` (503 only).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn unavailable(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is unavailable; retry later",
            )
        }
    }

    /// A write that was not committed. Internals were logged by the writer.
    pub fn from_write(e: WriteError, retry_after: u64) -> Self {
        match e {
            WriteError::Unavailable => ApiError::unavailable(retry_after),
            WriteError::Rejected => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed",
                "the change could not be stored; see the daemon's logs",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            message: &self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
