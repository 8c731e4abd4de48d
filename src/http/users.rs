//! The API for the application: `GET /v1/users/{clerk_id}`, `GET /v1/me`, `POST /v1/users/{clerk_id}/sync`,
//! and the same get-or-create for `GET /v1/organizations/{clerk_id}` (organizations.rs).

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth::{ServiceCaller, SessionUser};
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::actors::{FallbackError, FetchMode, Fetched, Hit};
use crate::cache::Absent;
use crate::cache::UserJson;
use crate::clerk::{is_organization_id, is_user_id};
use crate::store::Kind;
use crate::telemetry::metrics::{self, fallback};

/// `clerk_sync_fallback_requests_total{result}`, one handle per result, resolved once: the cached path is hot.
#[derive(Clone)]
pub struct Counters {
    cache_hit: ::metrics::Counter,
    db_hit: ::metrics::Counter,
    created: ::metrics::Counter,
    not_found: ::metrics::Counter,
    gone: ::metrics::Counter,
    error: ::metrics::Counter,
}

impl Counters {
    pub fn new() -> Self {
        let counter = |result: &'static str| ::metrics::counter!(metrics::FALLBACK_REQUESTS, "result" => result);
        Counters {
            cache_hit: counter(fallback::CACHE_HIT),
            db_hit: counter(fallback::DB_HIT),
            created: counter(fallback::CREATED),
            not_found: counter(fallback::NOT_FOUND),
            gone: counter(fallback::GONE),
            error: counter(fallback::ERROR),
        }
    }
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new()
    }
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counters")
    }
}

#[utoipa::path(
    get,
    path = "/v1/users/{clerk_id}",
    tag = "users",
    operation_id = "getUser",
    summary = "A user, created from Clerk when it is not in the table yet",
    description = "The stored user (cache, then database); when the row is missing, the user is fetched from \
        Clerk's Backend API and created (`created_via = \"fallback\"`). Concurrent requests for one unknown user \
        make one Clerk call.",
    params(("clerk_id" = String, Path, description = "A Clerk user id.", pattern = r"^user_[A-Za-z0-9]{1,64}$",
        example = "user_29w83sxmDNGwOuEthce5gg56FcC")),
    security(("service_token" = [])),
    responses(
        (status = 200, description = "The user existed.", body = crate::store::UserRow),
        (status = 201, description = "This request created the row from Clerk.", body = crate::store::UserRow),
        (status = 400, description = "`invalid_user_id`: not a Clerk user id; Clerk was not called.",
            body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing or wrong service token.", body = ErrorBody),
        (status = 404, description = "`not_found`: Clerk has no such user (remembered for \
            `cache.not_found_ttl_secs`).", body = ErrorBody),
        (status = 410, description = "`gone`: the user was deleted in Clerk; it is never re-created.",
            body = ErrorBody),
        (status = 500, description = "`failed`: the database refused the change (see the daemon's logs).",
            body = ErrorBody),
        (status = 502, description = "`clerk_error`: Clerk answered something unexpected.", body = ErrorBody),
        (status = 503, description = "`unavailable` (the database), `clerk_unavailable` or `not_configured` \
            (`CLERK_SECRET_KEY` is not set and the user is not in the table).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
pub async fn get_user(_: ServiceCaller, State(state): State<AppState>, Path(clerk_id): Path<String>) -> Response {
    get_or_create(&state, Kind::User, clerk_id).await
}

#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "users",
    operation_id = "getMe",
    summary = "The signed-in user (Clerk session token)",
    description = "The same get-or-create as `GET /v1/users/{clerk_id}`, for the `sub` of the Clerk session token \
        (what `getToken()` returns). Tokens are RS256 only, checked against Clerk's JWKS or `CLERK_JWT_KEY`; a \
        pending session is signed out.",
    security(("session_token" = [])),
    responses(
        (status = 200, description = "The user existed.", body = crate::store::UserRow),
        (status = 201, description = "This request created the row from Clerk.", body = crate::store::UserRow),
        (status = 400, description = "`invalid_user_id`: the token's `sub` is not a Clerk user id.",
            body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing, invalid, expired or pending-session token, or a \
            service token.", body = ErrorBody),
        (status = 404, description = "`not_found`: Clerk has no such user.", body = ErrorBody),
        (status = 410, description = "`gone`: the user was deleted in Clerk.", body = ErrorBody),
        (status = 500, description = "`failed`: the database refused the change (see the daemon's logs).",
            body = ErrorBody),
        (status = 502, description = "`clerk_error`: Clerk answered something unexpected.", body = ErrorBody),
        (status = 503, description = "`unavailable` (the database, or Clerk's keys before any were loaded), \
            `clerk_unavailable` or `not_configured`.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
pub async fn me(user: SessionUser, State(state): State<AppState>) -> Response {
    get_or_create(&state, Kind::User, user.clerk_id).await
}

#[utoipa::path(
    post,
    path = "/v1/users/{clerk_id}/sync",
    tag = "users",
    operation_id = "syncUser",
    summary = "Re-fetch a user from Clerk now",
    description = "Fetches the user from Clerk's Backend API and applies it under the same ordering guard and \
        tombstone rule as a webhook. No request body.",
    params(("clerk_id" = String, Path, description = "A Clerk user id.", pattern = r"^user_[A-Za-z0-9]{1,64}$",
        example = "user_29w83sxmDNGwOuEthce5gg56FcC")),
    security(("service_token" = [])),
    responses(
        (status = 200, description = "The user as stored after the sync.", body = crate::store::UserRow),
        (status = 201, description = "The sync created the row.", body = crate::store::UserRow),
        (status = 400, description = "`invalid_user_id`: not a Clerk user id.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing or wrong service token.", body = ErrorBody),
        (status = 404, description = "`not_found`: Clerk has no such user.", body = ErrorBody),
        (status = 410, description = "`gone`: the user was deleted in Clerk.", body = ErrorBody),
        (status = 500, description = "`failed`: the database refused the change (see the daemon's logs).",
            body = ErrorBody),
        (status = 502, description = "`clerk_error`: Clerk answered something unexpected.", body = ErrorBody),
        (status = 503, description = "`unavailable`, `clerk_unavailable` or `not_configured`.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
pub async fn sync_user(_: ServiceCaller, State(state): State<AppState>, Path(clerk_id): Path<String>) -> Response {
    sync(&state, Kind::User, clerk_id).await
}

/// Fetches the record from Clerk now and applies it under the ordering guard and tombstone rule.
pub(super) async fn sync(state: &AppState, kind: Kind, clerk_id: String) -> Response {
    if !fetchable(kind, &clerk_id) {
        return invalid_id(kind).into_response();
    }
    answer(state, kind, state.actors.fetch(clerk_id, FetchMode::Sync).await)
}

/// The stored record (cache, then database), else Clerk's, created in the database. `kind` is a user or an
/// organization (memberships have no Backend API lookup by id).
pub(super) async fn get_or_create(state: &AppState, kind: Kind, clerk_id: String) -> Response {
    if !fetchable(kind, &clerk_id) {
        return invalid_id(kind).into_response();
    }
    // The hot path: no database, no actor mailbox, no serialization.
    if let Some(json) = state.cache.get(&clerk_id).await {
        state.counters.cache_hit.increment(1);
        return json_response(StatusCode::OK, json);
    }
    match state.cache.known_absent(&clerk_id).await {
        Some(Absent::Missing) => return answer(state, kind, Err(FallbackError::NotFound)),
        Some(Absent::Gone) => return answer(state, kind, Err(FallbackError::Gone)),
        None => {}
    }
    answer(state, kind, state.actors.fetch(clerk_id, FetchMode::GetOrCreate).await)
}

/// Whether `clerk_id` is an id of `kind` that the fallback can fetch (memberships have no lookup by id).
fn fetchable(kind: Kind, clerk_id: &str) -> bool {
    match kind {
        Kind::User => is_user_id(clerk_id),
        Kind::Organization => is_organization_id(clerk_id),
        Kind::Membership => false,
    }
}

pub(super) fn json_response(status: StatusCode, json: UserJson) -> Response {
    let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    (status, content_type, json.bytes()).into_response()
}

pub(super) fn invalid_id(kind: Kind) -> ApiError {
    match kind {
        Kind::Organization => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_organization_id",
            "not a Clerk organization id (expected org_ followed by letters and digits)",
        ),
        Kind::User | Kind::Membership => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
            "not a Clerk user id (expected user_ followed by letters and digits)",
        ),
    }
}

fn answer(state: &AppState, kind: Kind, result: Result<Fetched, FallbackError>) -> Response {
    let c = &state.counters;
    match &result {
        Ok(Fetched { hit: Hit::Cache, .. }) => &c.cache_hit,
        Ok(Fetched {
            hit: Hit::Database | Hit::Clerk,
            ..
        }) => &c.db_hit,
        Ok(Fetched { hit: Hit::Created, .. }) => &c.created,
        Err(FallbackError::NotFound) => &c.not_found,
        Err(FallbackError::Gone) => &c.gone,
        Err(_) => &c.error,
    }
    .increment(1);
    let error = match result {
        Ok(Fetched {
            json,
            hit: Hit::Created,
        }) => return json_response(StatusCode::CREATED, json),
        Ok(Fetched { json, .. }) => return json_response(StatusCode::OK, json),
        Err(e) => e,
    };
    let retry = state.retry_after_secs;
    let noun = kind.as_str();
    match error {
        FallbackError::NotFound => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("Clerk has no such {noun}"))
        }
        FallbackError::Gone => ApiError::new(StatusCode::GONE, "gone", format!("the {noun} was deleted in Clerk")),
        FallbackError::NotConfigured => ApiError {
            retry_after: Some(retry),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_configured",
                format!("the {noun} is not in the database and CLERK_SECRET_KEY is not configured"),
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
