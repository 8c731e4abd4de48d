//! The API for the application: `GET /v1/users/{clerk_id}`, `GET /v1/me`, `POST /v1/users/{clerk_id}/sync`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::auth::{ServiceCaller, SessionUser};
use super::{ApiError, AppState};
use crate::actors::{FallbackError, FetchMode, Fetched, Hit};
use crate::clerk::is_user_id;
use crate::store::UserRow;
use crate::telemetry::metrics::{self, fallback};

fn count(result: &'static str) {
    ::metrics::counter!(metrics::FALLBACK_REQUESTS, "result" => result).increment(1);
}

pub async fn get_user(_: ServiceCaller, State(state): State<AppState>, Path(clerk_id): Path<String>) -> Response {
    get_or_create(&state, clerk_id).await
}

pub async fn me(user: SessionUser, State(state): State<AppState>) -> Response {
    get_or_create(&state, user.clerk_id).await
}

pub async fn sync_user(_: ServiceCaller, State(state): State<AppState>, Path(clerk_id): Path<String>) -> Response {
    if !is_user_id(&clerk_id) {
        return invalid_id().into_response();
    }
    answer(&state, state.actors.fetch(clerk_id, FetchMode::Sync).await)
}

async fn get_or_create(state: &AppState, clerk_id: String) -> Response {
    if !is_user_id(&clerk_id) {
        return invalid_id().into_response();
    }
    // The hot path: no database, no actor mailbox.
    if let Some(row) = state.cache.get(&clerk_id).await {
        count(fallback::CACHE_HIT);
        return user_response(StatusCode::OK, row);
    }
    if state.cache.known_missing(&clerk_id).await {
        return answer(state, Err(FallbackError::NotFound));
    }
    answer(state, state.actors.fetch(clerk_id, FetchMode::GetOrCreate).await)
}

fn user_response(status: StatusCode, row: Arc<UserRow>) -> Response {
    (status, Json(row)).into_response()
}

fn invalid_id() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_user_id",
        "not a Clerk user id (expected user_ followed by letters and digits)",
    )
}

fn answer(state: &AppState, result: Result<Fetched, FallbackError>) -> Response {
    count(match &result {
        Ok(Fetched { hit: Hit::Cache, .. }) => fallback::CACHE_HIT,
        Ok(Fetched {
            hit: Hit::Database | Hit::Clerk,
            ..
        }) => fallback::DB_HIT,
        Ok(Fetched { hit: Hit::Created, .. }) => fallback::CREATED,
        Err(FallbackError::NotFound) => fallback::NOT_FOUND,
        Err(FallbackError::Gone) => fallback::GONE,
        Err(_) => fallback::ERROR,
    });
    let error = match result {
        Ok(Fetched { row, hit: Hit::Created }) => return user_response(StatusCode::CREATED, row),
        Ok(Fetched { row, .. }) => return user_response(StatusCode::OK, row),
        Err(e) => e,
    };
    let retry = state.retry_after_secs;
    match error {
        FallbackError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", "Clerk has no such user"),
        FallbackError::Gone => ApiError::new(StatusCode::GONE, "gone", "the user was deleted in Clerk"),
        FallbackError::NotConfigured => ApiError {
            retry_after: Some(retry),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_configured",
                "the user is not in the database and CLERK_SECRET_KEY is not configured",
            )
        },
        FallbackError::ClerkUnavailable(after) => ApiError {
            retry_after: Some(after.map(|d| d.as_secs().max(1)).unwrap_or(retry)),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "clerk_unavailable",
                "Clerk is unavailable; retry later",
            )
        },
        FallbackError::ClerkFailed(detail) => {
            tracing::error!(detail, "fallback: Clerk answered unexpectedly");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "clerk_error",
                "Clerk answered unexpectedly; see the daemon's logs",
            )
        }
        FallbackError::Store(e) => ApiError::from_write(e, retry),
    }
    .into_response()
}
