//! `GET /v1/changes`: the change feed for the application (service token).
//!
//! As JSON, a page: `{"changes": [...], "next": SEQ}` after `after` (default 0), at most `limit` (default 100,
//! capped at 1000). With `Accept: text/event-stream`, a Server-Sent Events stream of every change after
//! `Last-Event-ID` (which wins over `after`, as on a browser's reconnect): `id:` the seq, `event:`
//! `<kind>.<op>`, `data:` the change; a keep-alive comment every 15 s. 410 when the resume point is older than
//! the retention (`changes.retention_hours`): changes after it were pruned.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde_json::json;

use super::auth::ServiceCaller;
use super::{ApiError, AppState};
use crate::store::changes::{FeedChange, FeedHead};

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;
/// SSE: changes read per query.
const STREAM_PAGE: i64 = 500;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn changes(
    _: ServiceCaller,
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(feed) = state.feed.clone() else {
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
    // A fresh horizon for a page (what was committed before this request is in it); a stream follows the
    // follower's.
    let head = if stream {
        state.db.feed_pruned_through().await.map(|pruned_through| FeedHead {
            last: feed.head(),
            pruned_through,
        })
    } else {
        state.db.feed_head().await
    };
    let head = match head {
        Ok(head) if after < head.pruned_through => {
            return ApiError::new(
                StatusCode::GONE,
                "changes_pruned",
                format!(
                    "changes up to seq {} were pruned (changes.retention_hours); resume after seq {} or later",
                    head.pruned_through, head.pruned_through
                ),
            )
            .into_response()
        }
        Ok(head) => head,
        Err(e) => {
            tracing::warn!(error = %e, "changes: database read failed");
            return ApiError::unavailable(state.retry_after_secs).into_response();
        }
    };
    if stream {
        let events = events(state.clone(), feed.subscribe(), after);
        return Sse::new(events)
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
            .into_response();
    }
    match state.db.changes_after(after, limit, head.last).await {
        Ok(changes) => {
            let next = changes.last().map_or(after, |c| c.seq);
            Json(json!({"changes": changes, "next": next})).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "changes: database read failed");
            ApiError::unavailable(state.retry_after_secs).into_response()
        }
    }
}

/// What the stream holds between two events.
struct Cursor {
    state: AppState,
    head: tokio::sync::watch::Receiver<i64>,
    after: i64,
    ready: VecDeque<FeedChange>,
}

/// Every change after `after`, then each new one as the follower sees it commit. Ends when the daemon shuts
/// down (the follower, and with it `head`, stops).
fn events(
    state: AppState,
    head: tokio::sync::watch::Receiver<i64>,
    after: i64,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let cursor = Cursor {
        state,
        head,
        after,
        ready: VecDeque::new(),
    };
    stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(change) = c.ready.pop_front() {
                c.after = change.seq;
                return Some((Ok(event(&change)), c));
            }
            let upto = *c.head.borrow_and_update();
            match c.state.db.changes_after(c.after, STREAM_PAGE, upto).await {
                Ok(page) if !page.is_empty() => c.ready.extend(page),
                Ok(_) => {
                    // Caught up: wait for the follower to see a commit. The timeout re-reads now and then in
                    // case a wake-up was missed; a closed channel means shutdown.
                    if let Ok(Err(_)) = tokio::time::timeout(Duration::from_secs(1), c.head.changed()).await {
                        return None;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "changes stream: database read failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
}

fn event(change: &FeedChange) -> Event {
    Event::default()
        .id(change.seq.to_string())
        .event(format!("{}.{}", change.kind, change.op))
        .data(serde_json::to_string(change).unwrap_or_default())
}
