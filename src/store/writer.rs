//! Group commit: one task owns all writes and folds whatever is queued into one transaction.
//!
//! Actors submit a [`Change`] and wait for its outcome; the writer drains up to `max_batch` queued changes,
//! applies them in one transaction and answers each. Per-user order holds because an actor waits for its own
//! commit before it handles its next message. When a batch fails for a reason other than the database being
//! unavailable, each change is retried alone so one bad row cannot fail its neighbours.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{Change, Outcome, Store, StoreError};

/// Why a submitted change was not committed. Cheap to clone: the details are logged once by the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Try again later (database down, locked, pool exhausted, shutting down).
    #[error("the database is unavailable")]
    Unavailable,
    /// The database refused this change (for example a constraint on an application-owned column).
    #[error("the database rejected the change")]
    Rejected,
}

impl From<&StoreError> for WriteError {
    fn from(e: &StoreError) -> Self {
        if e.is_unavailable() {
            WriteError::Unavailable
        } else {
            WriteError::Rejected
        }
    }
}

type Reply = oneshot::Sender<Result<Outcome, WriteError>>;

struct Job {
    change: Change,
    reply: Reply,
    /// The submitter's span: the batch's span links to it (one batch serves many requests).
    span: tracing::Span,
}

/// A cloneable handle to submit changes.
#[derive(Clone, Debug)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task. It ends once every handle is dropped and the queue is drained.
    pub fn spawn<S: Store>(store: Arc<S>, max_batch: usize) -> (Writer, JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(max_batch.max(1) * 8);
        let task = tokio::spawn(run(store, queue, max_batch.max(1)));
        (Writer { jobs }, task)
    }

    /// Queues a change and waits until it is committed (or failed).
    pub async fn submit(&self, change: Change) -> Result<Outcome, WriteError> {
        let (reply, answer) = oneshot::channel();
        let span = tracing::Span::current();
        let job = Job { change, reply, span };
        self.jobs.send(job).await.map_err(|_| WriteError::Unavailable)?;
        answer.await.unwrap_or(Err(WriteError::Unavailable))
    }
}

async fn run<S: Store>(store: Arc<S>, mut queue: mpsc::Receiver<Job>, max_batch: usize) {
    let mut buffer = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut buffer, max_batch).await > 0 {
        let span = tracing::info_span!("write_batch", changes = buffer.len());
        for job in &buffer {
            span.follows_from(&job.span);
        }
        let (changes, replies): (Vec<Change>, Vec<Reply>) = buffer.drain(..).map(|j| (j.change, j.reply)).unzip();
        commit(&*store, changes, replies).instrument(span).await;
    }
}

/// Applies one batch in one transaction and answers each submitter.
async fn commit<S: Store>(store: &S, changes: Vec<Change>, replies: Vec<Reply>) {
    match store.apply(&changes).await {
        Ok(outcomes) => {
            for ((reply, outcome), change) in replies.into_iter().zip(outcomes).zip(&changes) {
                count_created(change, &outcome);
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(e) if changes.len() > 1 && !e.is_unavailable() => {
            tracing::warn!(error = %e, batch = changes.len(), "batch failed; applying its changes one by one");
            for (change, reply) in changes.iter().zip(replies) {
                let result = store.apply(std::slice::from_ref(change)).await.map(|mut o| o.remove(0));
                if let Ok(outcome) = &result {
                    count_created(change, outcome);
                }
                let _ = reply.send(result.map_err(|e| log_failure(&e, 1)));
            }
        }
        Err(e) => {
            let failure = log_failure(&e, changes.len());
            for reply in replies {
                let _ = reply.send(Err(failure));
            }
        }
    }
}

/// `clerk_sync_users_created_total` counts exactly the committed inserts, by the path that made them.
fn count_created(change: &Change, outcome: &Outcome) {
    if let (Change::Upsert { via, .. }, Outcome::Created) = (change, outcome) {
        metrics::counter!(crate::telemetry::metrics::USERS_CREATED, "source" => via.as_str()).increment(1);
    }
}

fn log_failure(e: &StoreError, changes: usize) -> WriteError {
    let failure = WriteError::from(e);
    match failure {
        WriteError::Unavailable => tracing::warn!(error = %e, changes, "write failed: database unavailable"),
        WriteError::Rejected => tracing::error!(error = %e, changes, "write rejected by the database"),
    }
    failure
}
