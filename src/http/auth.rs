//! Authentication of `/v1` callers: service tokens (the application's backend) and Clerk session JWTs
//! (end users, `/v1/me` only). A token of the wrong kind fails as any wrong token does.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use super::{ApiError, AppState};
use crate::clerk::AuthError;

/// A request carrying one of `CLERK_SYNC_API_TOKENS`.
pub struct ServiceCaller;

/// A request carrying a valid Clerk session token; `clerk_id` is its `sub`.
pub struct SessionUser {
    pub clerk_id: String,
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares without an early exit, so response time does not reveal how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<AppState> for ServiceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| unauthorized("send Authorization: Bearer <service token>"))?;
        // Every configured token is compared, matched or not.
        let matched = state.api_tokens.iter().filter(|t| t.is_set()).fold(false, |found, t| {
            constant_time_eq(t.expose().as_bytes(), token.as_bytes()) | found
        });
        if matched {
            Ok(ServiceCaller)
        } else {
            Err(unauthorized("invalid service token"))
        }
    }
}

impl FromRequestParts<AppState> for SessionUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| unauthorized("send Authorization: Bearer <Clerk session token>"))?;
        match state.jwt.verify(token).await {
            Ok(claims) => Ok(SessionUser { clerk_id: claims.sub }),
            Err(AuthError::Keys(e)) => {
                tracing::warn!(error = %e, "cannot verify session tokens: Clerk's keys are unavailable");
                Err(ApiError {
                    retry_after: Some(state.retry_after_secs),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "session tokens cannot be verified right now; retry later",
                    )
                })
            }
            // Signed out, as Clerk's SDKs see a pending session: the same 401 with a message that says why.
            Err(AuthError::Pending) => {
                tracing::info!("session token refused: the session is pending");
                Err(unauthorized("the session is pending"))
            }
            Err(e) => {
                tracing::info!(error = %e, "session token refused");
                Err(unauthorized("invalid session token"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
