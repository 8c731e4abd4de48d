//! The Server-Sent Events form of `GET /v1/changes`: every change after the resume point, then each new one
//! as this replica's follower reads it.
//!
//! A stream reads the database only to catch up to the follower's horizon; once caught up it takes the
//! follower's batches, each rendered once for every stream. So open streams cost the database (whose pool the
//! webhooks need) nothing while they keep up, and a stream that falls behind the batches kept reads the
//! database again from where it is, missing nothing. Each stream holds one permit of `changes.max_streams` for
//! as long as it is open, and is marked [`LongLived`]: it does not hold a connection slot.

use std::convert::Infallible;
use std::io::Write;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::serve::LongLived;
use super::AppState;
use crate::feed::{Batch, FeedHandle, Rendered};
use crate::store::changes::FeedChange;

/// Changes read per query while catching up.
const STREAM_PAGE: i64 = 500;
/// A comment after this long without an event, so proxies and clients see the stream is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
const KEEP_ALIVE_COMMENT: &[u8] = b":\n\n";

/// The stream of every change after `after`; it ends when the daemon shuts down (the follower stops).
pub fn response(state: AppState, feed: &FeedHandle, after: i64, permit: OwnedSemaphorePermit) -> Response {
    // Subscribed before the first read of the horizon, so no batch past it can be missed.
    let cursor = Cursor {
        batches: feed.batches(),
        head: feed.subscribe(),
        state,
        read_to: after,
        quiet_since: Instant::now(),
        _permit: permit,
    };
    let body = Body::from_stream(stream::unfold(cursor, next));
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response();
    response.extensions_mut().insert(LongLived);
    response
}

/// What a stream holds between two writes.
struct Cursor {
    state: AppState,
    head: watch::Receiver<i64>,
    batches: broadcast::Receiver<std::sync::Arc<Batch>>,
    /// Every change up to this seq was sent (or does not exist).
    read_to: i64,
    /// Since the last write, for the keep-alive.
    quiet_since: Instant,
    _permit: OwnedSemaphorePermit,
}

type Item = Result<Bytes, Infallible>;

async fn next(mut c: Cursor) -> Option<(Item, Cursor)> {
    loop {
        let horizon = *c.head.borrow_and_update();
        if c.read_to < horizon {
            match c.state.db.changes_after(c.read_to, STREAM_PAGE, horizon).await {
                Ok(page) => {
                    // A short page is everything up to the horizon.
                    c.read_to = match page.last() {
                        Some(change) if page.len() as i64 == STREAM_PAGE => change.seq,
                        _ => horizon,
                    };
                    if !page.is_empty() {
                        return Some(c.send(render(&page).bytes));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "changes stream: database read failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        }
        // Caught up: the follower's next batch; a batch comes before the horizon that covers it, so the
        // horizon moving is only a cue to look again. A closed channel means shutdown.
        let keep_alive_at = c.quiet_since + KEEP_ALIVE;
        tokio::select! {
            biased;
            batch = c.batches.recv() => match batch {
                Ok(batch) => {
                    if let Some(bytes) = c.take(&batch) {
                        return Some(c.send(bytes));
                    }
                }
                // Fell behind the batches kept: the horizon shows past them, and the database has them.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            },
            changed = c.head.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            () = tokio::time::sleep_until(keep_alive_at) => {
                return Some(c.send(Bytes::from_static(KEEP_ALIVE_COMMENT)));
            }
        }
    }
}

impl Cursor {
    fn send(mut self, bytes: Bytes) -> (Item, Cursor) {
        self.quiet_since = Instant::now();
        (Ok(bytes), self)
    }

    /// What of `batch` this stream has not sent yet, if the batch continues where the stream is. One that
    /// starts further on means a batch was missed: the stream then waits for the horizon and reads the gap
    /// from the database.
    fn take(&mut self, batch: &Batch) -> Option<Bytes> {
        if batch.upto <= self.read_to || batch.after > self.read_to {
            return None;
        }
        let first = batch.changes.partition_point(|c| c.seq <= self.read_to);
        self.read_to = batch.upto;
        let rendered = batch.rendered(render);
        let start = rendered.starts.get(first).copied().unwrap_or(rendered.bytes.len());
        let bytes = rendered.bytes.slice(start..);
        (!bytes.is_empty()).then_some(bytes)
    }
}

/// Changes as events: `id:` the seq, `event:` `<kind>.<op>`, `data:` the change as one line of JSON.
fn render(changes: &[FeedChange]) -> Rendered {
    let mut bytes = Vec::with_capacity(changes.len() * 256);
    let mut starts = Vec::with_capacity(changes.len());
    for change in changes {
        starts.push(bytes.len());
        let data = match serde_json::to_vec(change) {
            Ok(data) => data,
            Err(e) => {
                // Plain strings and numbers: cannot happen; an event without data would be worse than none.
                tracing::error!(error = %e, seq = change.seq, "changes stream: cannot serialize a change");
                continue;
            }
        };
        // Writing to a Vec cannot fail.
        let _ = write!(
            bytes,
            "id: {}\nevent: {}.{}\ndata: ",
            change.seq, change.kind, change.op
        );
        bytes.extend_from_slice(&data);
        bytes.extend_from_slice(b"\n\n");
    }
    Rendered {
        bytes: Bytes::from(bytes),
        starts,
    }
}
