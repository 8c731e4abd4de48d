//! Every error answer carries the `Error` body, including the ones axum makes before a handler runs: no route
//! (404), a method the route does not take (405), a body over the limit (413) or one that cannot be read (400),
//! a path segment that is not UTF-8 (400). Those come as plain text or empty; clients (and the OpenAPI document)
//! expect one shape.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("route_not_found", "no such route; see GET /v1/openapi.json"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this route does not take that method"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "unsupported request content type"),
        s if s.is_client_error() => ("bad_request", "the request could not be read"),
        _ => ("failed", "the request failed; see the daemon's logs"),
    };
    let (parts, _) = response.into_parts();
    let mut answer = ApiError::new(status, code, message).into_response();
    // Headers axum set for the refusal (`Allow` with a 405, `Connection: close`) stay.
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == HeaderValue::from_static("application/json"))
}
