//! Following the change feed (`clerk_sync_changes`): every replica learns of each committed change within
//! milliseconds (Postgres `NOTIFY`) or one poll interval (missed notifications, SQLite), and
//!
//! - drops the cache entries of the changed records, so no replica serves a row another one changed (or a
//!   deleted user as live) for longer than that;
//! - wakes the Server-Sent Events streams of `GET /v1/changes` and the forwarder, through [`FeedHandle`];
//! - hands the changes it read to the open streams ([`Batch`]), so a thousand streams cost one read, not a
//!   thousand; a stream reads the database itself only to catch up, or when it fell behind the batches kept.
//!
//! The follower starts at the head of the feed: the cache is empty at start, so older changes matter to it no
//! more than to a replica that never ran.

pub mod forward;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;

use crate::actors::Actors;
use crate::store::changes::FeedChange;
use crate::store::Db;

/// Most changes read per query while catching up.
const PAGE: i64 = 1000;

/// Batches kept for streams that are a little behind (at most `PAGE` changes each); one further behind reads
/// the database.
const BATCHES_KEPT: usize = 16;

/// What readers of the feed share: the horizon this replica has seen — every change up to it is committed and
/// none can still appear below it — so readers that stop there never skip one committed later.
#[derive(Clone, Debug)]
pub struct FeedHandle {
    head: watch::Receiver<i64>,
    /// Weak, so the follower's receivers are the open streams alone (it reads the full changes only for them),
    /// and the channel closes when the follower stops.
    batches: broadcast::WeakSender<Arc<Batch>>,
    nudge: Arc<Notify>,
}

impl FeedHandle {
    /// A receiver that changes whenever new changes were committed (by any replica).
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }

    /// The batches the follower reads from now on, in seq order, each starting where the previous one ended
    /// (closed at once when the follower has stopped).
    pub fn batches(&self) -> broadcast::Receiver<Arc<Batch>> {
        match self.batches.upgrade() {
            Some(sender) => sender.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// The horizon: read changes up to this seq, no further.
    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }

    /// The horizon once it reaches `seq` (a seq known to be committed), or after `within` whatever it is then.
    /// The follower is woken rather than waited for, but it still learns the horizon at most every `MIN_GAP`:
    /// however many readers ask, the feed lock is taken no more often for them.
    pub async fn reach(&self, seq: i64, within: Duration) -> i64 {
        let mut head = self.head.clone();
        if *head.borrow_and_update() < seq {
            self.nudge.notify_one();
            let _ = tokio::time::timeout(within, head.wait_for(|h| *h >= seq)).await;
        }
        let horizon = *head.borrow();
        horizon
    }
}

/// Every change with a seq in `(after, upto]`, in seq order, as the follower read them: final (`upto` is at
/// most a horizon), with gaps where seqs were rolled back or pruned.
#[derive(Debug)]
pub struct Batch {
    pub after: i64,
    pub upto: i64,
    pub changes: Vec<FeedChange>,
    /// Whatever readers make of `changes` (their wire form), made once for all of them.
    rendered: OnceLock<Rendered>,
}

/// `changes` in a reader's wire form: one buffer, and where each change starts in it.
#[derive(Debug)]
pub struct Rendered {
    pub bytes: bytes::Bytes,
    pub starts: Vec<usize>,
}

impl Batch {
    /// The batch in a reader's wire form; `render` runs once per batch, for the first reader that asks.
    pub fn rendered(&self, render: impl FnOnce(&[FeedChange]) -> Rendered) -> &Rendered {
        self.rendered.get_or_init(|| render(&self.changes))
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
    let (batches, _) = broadcast::channel(BATCHES_KEPT);
    let weak = batches.downgrade();
    let nudge = Arc::new(Notify::new());
    let woken = nudge.clone();
    let task = tokio::spawn(async move {
        let out = Out {
            head: tx,
            batches,
            nudge: woken,
        };
        tokio::select! {
            () = run(db, actors, poll, out) => {}
            () = shutdown => {}
        }
    });
    let handle = FeedHandle {
        head: rx,
        batches: weak,
        nudge,
    };
    (handle, task)
}

/// What the follower tells the readers, and what wakes it early.
struct Out {
    head: watch::Sender<i64>,
    batches: broadcast::Sender<Arc<Batch>>,
    nudge: Arc<Notify>,
}

async fn run(db: Arc<Db>, actors: Actors, poll: Duration, out: Out) {
    let Out { head, batches, nudge } = out;
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
    let mut wake = Wake::new(&db, nudge).await;
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
            // With no stream open, only which records changed matters (the cache); a stream opened meanwhile
            // sees the batch it missed as a gap and reads it from the database.
            if batches.receiver_count() == 0 {
                match db.changed_ids_after(cursor, PAGE, last).await {
                    Ok((ids, end)) => {
                        actors.invalidate(ids);
                        cursor = end;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "change feed: cannot read changes");
                        break;
                    }
                }
            }
            let page = match db.changes_after(cursor, PAGE, last).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: cannot read changes");
                    break;
                }
            };
            // A short page is everything up to `last`; an empty one means only gaps (rolled-back seqs) or
            // pruned changes were left.
            let end = match page.last() {
                Some(change) if page.len() as i64 == PAGE => change.seq,
                _ => last,
            };
            actors.invalidate(page.iter().map(|c| c.clerk_id.clone()));
            // No open stream (no receiver) is not an error.
            let _ = batches.send(Arc::new(Batch {
                after: cursor,
                upto: end,
                changes: page,
                rendered: OnceLock::new(),
            }));
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

/// What wakes the follower: a Postgres notification, a reader that needs a fresher horizon, or the poll
/// interval.
struct Wake {
    listener: Option<sqlx::postgres::PgListener>,
    nudge: Arc<Notify>,
}

impl Wake {
    async fn new(db: &Db, nudge: Arc<Notify>) -> Wake {
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
        Wake { listener, nudge }
    }

    /// Returns on a notification, a nudge or after `poll`, whichever comes first.
    async fn wait(&mut self, poll: Duration) {
        let nudge = self.nudge.clone();
        tokio::select! {
            () = self.notified_or(poll) => {}
            () = nudge.notified() => {}
        }
    }

    async fn notified_or(&mut self, poll: Duration) {
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
