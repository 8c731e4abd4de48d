//! Following the change feed (`clerk_sync_changes`): every replica learns of each committed change within
//! milliseconds (Postgres `NOTIFY`) or one poll interval (missed notifications, SQLite), and
//!
//! - drops the cache entries of the changed records, so no replica serves a row another one changed (or a
//!   deleted user as live) for longer than that;
//! - wakes the Server-Sent Events streams of `GET /v1/changes` and the forwarder, through [`FeedHandle`].
//!
//! The follower starts at the head of the feed: the cache is empty at start, so older changes matter to it no
//! more than to a replica that never ran.

pub mod forward;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::actors::Actors;
use crate::store::Db;

/// Most changes read per query while catching up.
const PAGE: i64 = 1000;

/// What readers of the feed share: the horizon this replica has seen — every change up to it is committed and
/// none can still appear below it — so readers that stop there never skip one committed later.
#[derive(Clone, Debug)]
pub struct FeedHandle {
    head: watch::Receiver<i64>,
}

impl FeedHandle {
    /// A receiver that changes whenever new changes were committed (by any replica).
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }

    /// The horizon: read changes up to this seq, no further.
    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }
}

/// Starts the follower; it stops when `shutdown` resolves.
pub fn follow(
    db: Arc<Db>,
    actors: Actors,
    poll: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (FeedHandle, JoinHandle<()>) {
    let (tx, rx) = watch::channel(0);
    let task = tokio::spawn(async move {
        tokio::select! {
            () = run(db, actors, poll, tx) => {}
            () = shutdown => {}
        }
    });
    (FeedHandle { head: rx }, task)
}

async fn run(db: Arc<Db>, actors: Actors, poll: Duration, head: watch::Sender<i64>) {
    // Where invalidation stands: from the horizon at start (the cache is empty, so older changes do not matter).
    let mut cursor = loop {
        match db.feed_head().await {
            Ok(h) => break h.last,
            Err(e) => {
                tracing::warn!(error = %e, "change feed: cannot read the head; retrying");
                tokio::time::sleep(poll.max(Duration::from_millis(500))).await;
            }
        }
    };
    head.send_replace(cursor);
    let mut wake = Wake::new(&db).await;
    loop {
        wake.wait(poll).await;
        // Learning the horizon makes writers wait an instant (see `Db::feed_head`): under a stream of
        // notifications, at most every MIN_GAP.
        let since = tokio::time::Instant::now();
        let last = match db.feed_head().await {
            Ok(h) => h.last,
            Err(e) => {
                tracing::debug!(error = %e, "change feed: head unreadable");
                continue;
            }
        };
        while cursor < last {
            let page = match db.changes_after(cursor, PAGE, last).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: cannot read changes");
                    break;
                }
            };
            let Some(end) = page.last().map(|c| c.seq) else {
                // Only gaps (rolled-back seqs) or pruned changes up to `last`.
                cursor = last;
                break;
            };
            actors.invalidate(page.into_iter().map(|c| c.clerk_id));
            cursor = end;
        }
        head.send_if_modified(|h| {
            let moved = *h < cursor;
            *h = (*h).max(cursor);
            moved
        });
        tokio::time::sleep_until(since + MIN_GAP).await;
    }
}

/// Least time between two horizon reads of one follower.
const MIN_GAP: Duration = Duration::from_millis(200);

/// What wakes the follower: a Postgres notification, or the poll interval.
struct Wake {
    listener: Option<sqlx::postgres::PgListener>,
}

impl Wake {
    async fn new(db: &Db) -> Wake {
        let listener = match db {
            Db::Postgres(s) => match sqlx::postgres::PgListener::connect_with(s.pool()).await {
                Ok(mut listener) => match listener.listen("clerk_sync_changes").await {
                    Ok(()) => Some(listener),
                    Err(e) => {
                        tracing::warn!(error = %e, "change feed: LISTEN failed; polling only");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: no LISTEN connection; polling only");
                    None
                }
            },
            Db::Sqlite(_) => None,
        };
        Wake { listener }
    }

    /// Returns on a notification or after `poll`, whichever comes first.
    async fn wait(&mut self, poll: Duration) {
        let Some(listener) = self.listener.as_mut() else {
            tokio::time::sleep(poll).await;
            return;
        };
        // Polling stays the fallback for missed notifications (one sent before LISTEN took effect, or while
        // the connection was down), at the same interval: the 1 s promise must hold without them.
        match tokio::time::timeout(poll, listener.recv()).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                // The listener reconnects on the next recv; until then, poll.
                tracing::debug!(error = %e, "change feed: notification connection lost");
                tokio::time::sleep(poll).await;
            }
        }
    }
}
