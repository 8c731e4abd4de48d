//! `GET /v1/organizations/{org_id}` (get-or-create, as for users), `POST /v1/organizations/{org_id}/sync`, and the live memberships of an organization
//! or of a user from the database: `GET /v1/organizations/{org_id}/memberships`,
//! `GET /v1/users/{user_id}/memberships`.
//!
//! A membership list is a JSON array, newest first (Clerk's `created_at`, then id). `limit` (1..=500, default
//! 100) bounds a page; when more follow, the answer carries the next page's opaque `cursor` in `X-Next-Cursor`
//! and a `Link: <…>; rel="next"` header.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::auth::ServiceCaller;
use super::error::ErrorBody;
use super::users::{get_or_create, invalid_id, sync};
use super::{query_params as params, ApiError, AppState};
use crate::clerk::{is_organization_id, is_user_id};
use crate::store::{Kind, MembersOf, MembershipCursor, Store};

/// Default and largest page of memberships.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 500;

#[utoipa::path(
    get,
    path = "/v1/organizations/{clerk_id}",
    tag = "organizations",
    operation_id = "getOrganization",
    summary = "An organization, created from Clerk when it is not in the table yet",
    description = "Get-or-create as for users: the stored organization, else Clerk's \
        `GET /v1/organizations/{organization_id}`, created in the table (`created_via = \"fallback\"`).",
    params(("clerk_id" = String, Path, description = "A Clerk organization id.",
        pattern = r"^org_[A-Za-z0-9]{1,64}$", example = "org_294MJK9vEruOBGV1B15maCyHAbK")),
    security(("service_token" = [])),
    responses(
        (status = 200, description = "The organization existed.", body = crate::store::OrganizationRow),
        (status = 201, description = "This request created the row from Clerk.",
            body = crate::store::OrganizationRow),
        (status = 400, description = "`invalid_organization_id`: not a Clerk organization id; Clerk was not \
            called.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing or wrong service token.", body = ErrorBody),
        (status = 404, description = "`not_found`: Clerk has no such organization.", body = ErrorBody),
        (status = 410, description = "`gone`: the organization was deleted in Clerk.", body = ErrorBody),
        (status = 500, description = "`failed`: the database refused the change (see the daemon's logs).",
            body = ErrorBody),
        (status = 502, description = "`clerk_error`: Clerk answered something unexpected.", body = ErrorBody),
        (status = 503, description = "`unavailable`, `clerk_unavailable` or `not_configured`.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
pub async fn get_organization(
    _: ServiceCaller,
    State(state): State<AppState>,
    Path(clerk_id): Path<String>,
) -> Response {
    get_or_create(&state, Kind::Organization, clerk_id).await
}

#[utoipa::path(
    post,
    path = "/v1/organizations/{clerk_id}/sync",
    tag = "organizations",
    operation_id = "syncOrganization",
    summary = "Re-fetch an organization from Clerk now",
    description = "Fetches the organization from Clerk and applies it under the ordering guard and tombstone rule. \
        No request body.",
    params(("clerk_id" = String, Path, description = "A Clerk organization id.",
        pattern = r"^org_[A-Za-z0-9]{1,64}$", example = "org_294MJK9vEruOBGV1B15maCyHAbK")),
    security(("service_token" = [])),
    responses(
        (status = 200, description = "The organization as stored after the sync.",
            body = crate::store::OrganizationRow),
        (status = 201, description = "The sync created the row.", body = crate::store::OrganizationRow),
        (status = 400, description = "`invalid_organization_id`: not a Clerk organization id.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing or wrong service token.", body = ErrorBody),
        (status = 404, description = "`not_found`: Clerk has no such organization.", body = ErrorBody),
        (status = 410, description = "`gone`: the organization was deleted in Clerk.", body = ErrorBody),
        (status = 500, description = "`failed`: the database refused the change (see the daemon's logs).",
            body = ErrorBody),
        (status = 502, description = "`clerk_error`: Clerk answered something unexpected.", body = ErrorBody),
        (status = 503, description = "`unavailable`, `clerk_unavailable` or `not_configured`.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
pub async fn sync_organization(
    _: ServiceCaller,
    State(state): State<AppState>,
    Path(clerk_id): Path<String>,
) -> Response {
    sync(&state, Kind::Organization, clerk_id).await
}

#[utoipa::path(
    get,
    path = "/v1/organizations/{clerk_id}/memberships",
    tag = "memberships",
    operation_id = "listOrganizationMemberships",
    summary = "The live memberships of an organization",
    description = "From the database, newest first by Clerk's `created_at`. When more follow, the answer carries \
        `X-Next-Cursor` and a `Link: <…>; rel=\"next\"` header: pass the cursor back as `cursor`.",
    params(
        ("clerk_id" = String, Path, description = "A Clerk organization id.",
            pattern = r"^org_[A-Za-z0-9]{1,64}$", example = "org_294MJK9vEruOBGV1B15maCyHAbK"),
        ("limit" = Option<i64>, Query, nullable = false, description = "Page size (default 100).", minimum = 1, maximum = 500),
        ("cursor" = Option<String>, Query, nullable = false, description = "`X-Next-Cursor` of the previous page."),
    ),
    security(("service_token" = [])),
    responses(
        (status = 200, description = "A page of memberships.", body = Vec<crate::store::MembershipRow>,
            headers(
                ("X-Next-Cursor" = String, description = "The next page's cursor, when more follow."),
                ("Link" = String, description = "`<path?limit=…&cursor=…>; rel=\"next\"`, when more follow."),
            )),
        (status = 400, description = "`invalid_organization_id`, `invalid_limit` or `invalid_cursor`.",
            body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing or wrong service token.", body = ErrorBody),
        (status = 503, description = "`unavailable`: the database did not answer.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
pub async fn organization_memberships(
    _: ServiceCaller,
    State(state): State<AppState>,
    Path(clerk_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if !is_organization_id(&clerk_id) {
        return invalid_id(Kind::Organization).into_response();
    }
    let path = format!("/v1/organizations/{clerk_id}/memberships");
    list(&state, MembersOf::Organization(&clerk_id), &path, &params(query)).await
}

#[utoipa::path(
    get,
    path = "/v1/users/{clerk_id}/memberships",
    tag = "memberships",
    operation_id = "listUserMemberships",
    summary = "The live memberships of a user",
    description = "From the database, newest first by Clerk's `created_at`, paged like an organization's.",
    params(
        ("clerk_id" = String, Path, description = "A Clerk user id.", pattern = r"^user_[A-Za-z0-9]{1,64}$",
            example = "user_29w83sxmDNGwOuEthce5gg56FcC"),
        ("limit" = Option<i64>, Query, nullable = false, description = "Page size (default 100).", minimum = 1, maximum = 500),
        ("cursor" = Option<String>, Query, nullable = false, description = "`X-Next-Cursor` of the previous page."),
    ),
    security(("service_token" = [])),
    responses(
        (status = 200, description = "A page of memberships.", body = Vec<crate::store::MembershipRow>,
            headers(
                ("X-Next-Cursor" = String, description = "The next page's cursor, when more follow."),
                ("Link" = String, description = "`<path?limit=…&cursor=…>; rel=\"next\"`, when more follow."),
            )),
        (status = 400, description = "`invalid_user_id`, `invalid_limit` or `invalid_cursor`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing or wrong service token.", body = ErrorBody),
        (status = 503, description = "`unavailable`: the database did not answer.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
pub async fn user_memberships(
    _: ServiceCaller,
    State(state): State<AppState>,
    Path(clerk_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if !is_user_id(&clerk_id) {
        return invalid_id(Kind::User).into_response();
    }
    let path = format!("/v1/users/{clerk_id}/memberships");
    list(&state, MembersOf::User(&clerk_id), &path, &params(query)).await
}

async fn list(state: &AppState, of: MembersOf<'_>, path: &str, query: &HashMap<String, String>) -> Response {
    let limit = match query.get("limit").map(|l| l.parse::<i64>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_limit",
                format!("limit must be an integer from 1 to {MAX_LIMIT}"),
            )
            .into_response()
        }
    };
    let after = match query.get("cursor").map(|c| decode_cursor(c)) {
        None => None,
        Some(Some(cursor)) => Some(cursor),
        Some(None) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_cursor",
                "cursor must be a value this API returned in X-Next-Cursor",
            )
            .into_response()
        }
    };
    // One more than asked tells whether another page follows.
    let mut rows = match state.db.memberships(of, after.as_ref(), limit + 1).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "memberships: database read failed");
            return ApiError::unavailable(state.retry_after_secs).into_response();
        }
    };
    let next = (rows.len() as i64 > limit).then(|| {
        rows.truncate(limit as usize);
        rows.last().map(|last| {
            encode_cursor(&MembershipCursor {
                created_at: last.clerk_created_at.clone().unwrap_or_default(),
                clerk_id: last.clerk_id.clone(),
            })
        })
    });
    let mut response = axum::Json(rows).into_response();
    if let Some(Some(cursor)) = next {
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&cursor) {
            headers.insert("x-next-cursor", value);
        }
        if let Ok(value) = HeaderValue::from_str(&format!("<{path}?limit={limit}&cursor={cursor}>; rel=\"next\"")) {
            headers.insert(header::LINK, value);
        }
    }
    response
}

/// The cursor is the last row's sort key, base64url: opaque to clients, and only URL-safe characters.
fn encode_cursor(cursor: &MembershipCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}\n{}", cursor.created_at, cursor.clerk_id))
}

fn decode_cursor(text: &str) -> Option<MembershipCursor> {
    let bytes = URL_SAFE_NO_PAD.decode(text.as_bytes()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (created_at, clerk_id) = text.split_once('\n')?;
    // A membership id (and a timestamp without control characters): anything else was not made here.
    (crate::clerk::is_membership_id(clerk_id) && created_at.len() <= 40 && !created_at.contains(char::is_control)).then(
        || MembershipCursor {
            created_at: created_at.to_owned(),
            clerk_id: clerk_id.to_owned(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let cursor = MembershipCursor {
            created_at: "2026-11-28T10:00:00.123Z".into(),
            clerk_id: "orgmem_2abc".into(),
        };
        let text = encode_cursor(&cursor);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(decode_cursor(&text), Some(cursor));
        assert_eq!(decode_cursor("not base64!"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("x\nuser_1")), None);
    }
}
