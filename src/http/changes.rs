//! `GET /v1/changes`: the change feed for the application (service token).
//!
//! As JSON, a page: `{"changes": [...], "next": SEQ}` after `after` (default 0), at most `limit` (default 100,
//! capped at 1000). With `Accept: text/event-stream`, a Server-Sent Events stream of every change after
//! `Last-Event-ID` (which wins over `after`, as on a browser's reconnect): `id:` the seq, `event:`
//! `<kind>.<op>`, `data:` the change; a keep-alive comment every 15 s (`change_stream.rs`). At most
//! `changes.max_streams` streams at once; one more is answered 503 `too_many_streams`. 410 when the resume point
//! is older than the retention (`changes.retention_hours`): changes after it were pruned.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::auth::ServiceCaller;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::store::changes::FeedChange;

/// A page of the feed as JSON.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ChangesPage {
    /// In seq order; empty when nothing was committed after `after`.
    pub changes: Vec<FeedChange>,
    /// The seq to pass back as `after` (the last change's, or `after` itself when the page is empty).
    #[schema(minimum = 0)]
    pub next: i64,
}

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;
/// Longest a page waits for the follower's horizon to reach what was committed before it; past that it shows
/// what is final by then (a writer holding a seq open for that long holds up the pages after it, not the page).
const HORIZON_WAIT: Duration = Duration::from_secs(1);

#[utoipa::path(
    get,
    path = "/v1/changes",
    tag = "changes",
    operation_id = "listChanges",
    summary = "The change feed: a page as JSON, or a Server-Sent Events stream",
    description = "Every committed change of a user, organization or membership, in seq order. As JSON, a page of \
        the changes after `after` (pass `next` back as `after`). With `Accept: text/event-stream`, a stream of \
        every change after `after`, or after the `Last-Event-ID` header (which wins, as on an `EventSource` \
        reconnect): `id:` the seq, `event:` `<kind>.<op>` (`user.created`, `membership.deleted`, …), `data:` the \
        change as JSON, and a `:` comment every 15 s. At most `changes.max_streams` streams are open at once.",
    params(
        ("after" = Option<i64>, Query, nullable = false, description = "Changes after this seq (default 0).", minimum = 0,
            maximum = 9223372036854775807_i64),
        ("limit" = Option<i64>, Query, nullable = false, description = "Page size: default 100; 0 counts as 1, above 1000 as 1000.",
            minimum = 0, maximum = 9223372036854775807_i64),
    ),
    security(("service_token" = [])),
    responses(
        (status = 200, description = "A page (JSON), or the stream (text/event-stream).", content(
            (ChangesPage = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = 400, description = "`invalid_parameter`: `after`, `limit` or `Last-Event-ID` is not a \
            non-negative integer.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing or wrong service token.", body = ErrorBody),
        (status = 404, description = "`feed_disabled`: `changes.enabled = false`.", body = ErrorBody),
        (status = 410, description = "`changes_pruned`: changes after `after` were pruned \
            (`changes.retention_hours`); the message says from which seq to resume.", body = ErrorBody),
        (status = 503, description = "`unavailable` (the database) or `too_many_streams` (a stream past \
            `changes.max_streams`; page with JSON meanwhile).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
pub async fn changes(
    _: ServiceCaller,
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(feed) = state.feed.as_ref() else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "feed_disabled",
            "the change feed is off (changes.enabled = false)",
        )
        .into_response();
    };
    let params = super::query_params(query);
    let number = |name: &'static str, value: &str| {
        value.trim().parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                format!("{name} must be a non-negative integer"),
            )
        })
    };
    let stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let after = match (stream, last_event_id, params.get("after")) {
        (true, Some(id), _) => number("Last-Event-ID", id),
        (_, _, Some(after)) => number("after", after),
        _ => Ok(0),
    };
    let after = match after {
        Ok(after) => after,
        Err(e) => return e.into_response(),
    };
    let limit = match params.get("limit").map(|l| number("limit", l)) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) => n.clamp(1, MAX_LIMIT),
        Some(Err(e)) => return e.into_response(),
    };
    if stream {
        // Counted first, so a refused stream costs no database read.
        let Ok(permit) = state.streams.clone().try_acquire_owned() else {
            return too_many_streams(state.retry_after_secs);
        };
        return match latest(&state, after).await {
            Ok(_) => super::change_stream::response(state.clone(), feed, after, permit),
            Err(refusal) => refusal,
        };
    }
    let latest = match latest(&state, after).await {
        Ok(latest) => latest,
        Err(refusal) => return refusal,
    };
    // Nothing was committed after `after`. A change committed later may still get a lower seq than `latest`
    // (Postgres hands out seqs before commit), which is why the page stops at the horizon.
    if after >= latest {
        return Json(ChangesPage {
            changes: Vec::new(),
            next: after,
        })
        .into_response();
    }
    // Everything committed before this request is at or below `latest`: once the follower's horizon reaches it,
    // the page holds all of it, and nothing a writer still holds. The follower learns the horizon for every
    // reader at once, so pollers never take the feed lock themselves.
    let upto = feed.reach(latest, HORIZON_WAIT).await;
    match state.db.changes_after(after, limit, upto).await {
        Ok(changes) => {
            let next = changes.last().map_or(after, |c| c.seq);
            Json(ChangesPage { changes, next }).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "changes: database read failed");
            ApiError::unavailable(state.retry_after_secs).into_response()
        }
    }
}

/// The highest committed seq, or the answer when the resume point `after` was pruned or the database fails.
async fn latest(state: &AppState, after: i64) -> Result<i64, Response> {
    match state.db.feed_latest().await {
        Ok(head) if after < head.pruned_through => Err(ApiError::new(
            StatusCode::GONE,
            "changes_pruned",
            format!(
                "changes up to seq {} were pruned (changes.retention_hours); resume after seq {} or later",
                head.pruned_through, head.pruned_through
            ),
        )
        .into_response()),
        Ok(head) => Ok(head.last),
        Err(e) => {
            tracing::warn!(error = %e, "changes: database read failed");
            Err(ApiError::unavailable(state.retry_after_secs).into_response())
        }
    }
}

/// 503 with `Retry-After`; the connection closes, so a client told to come back later holds no slot meanwhile.
fn too_many_streams(retry_after: u64) -> Response {
    let mut response = ApiError {
        retry_after: Some(retry_after),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            "too many change streams are open (changes.max_streams); retry later, or page with JSON",
        )
    }
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
