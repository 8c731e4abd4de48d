//! Group commit: actors submit changes; the writer folds whatever is queued into one transaction.
//!
//! Up to `in_flight` batches are committed at once, each on its own pooled connection: while they are busy, new
//! changes queue up and go into the next, larger batch, so the database sees few large transactions under load
//! and a single-change transaction when idle. A second batch starts beside a running one only once that one has
//! taken 10 ms or half a batch is waiting: on a fast database the running batch usually ends first. Per-user order holds because a user's actor waits for its own
//! commit before it submits that user's next change, so one user is never in two batches in flight; batches
//! lock rows and advisory locks in sorted order, so batches in flight (or on other replicas) cannot deadlock.
//! When a batch fails for a reason other than the database being unavailable, each change is retried alone so
//! one bad row cannot fail its neighbours.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use super::{Change, Kind, Outcome, Source, Store, StoreError};

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

/// One or more changes that must land in the same batch, in this order (one user's queued webhooks).
struct Job {
    changes: Vec<Change>,
    replies: Vec<Reply>,
    /// The submitter's span: the batch's span links to it (one batch serves many requests).
    span: tracing::Span,
}

/// How the writer is run.
#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// Most changes in one transaction.
    pub max_batch: usize,
    /// Batches committed at the same time.
    pub in_flight: usize,
    /// Whether the whole Clerk object is kept in `data` (`sync.store_payload`).
    pub store_payload: bool,
}

/// What `/readyz` asks of the writer.
#[derive(Debug, Default)]
struct Health {
    /// False once the writer task has ended.
    running: AtomicBool,
    /// Milliseconds since `epoch` at which the oldest batch still in flight started; 0 when none is.
    busy_since_ms: AtomicU64,
    /// Milliseconds since `epoch` of the last batch that failed because the database was unavailable.
    last_unavailable_ms: AtomicU64,
    /// Milliseconds since `epoch` of the last committed batch.
    last_commit_ms: AtomicU64,
}

/// A cloneable handle to submit changes.
#[derive(Clone, Debug)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    store_payload: bool,
    health: Arc<Health>,
    epoch: Instant,
}

impl Writer {
    /// Starts the writer task. It ends once every handle is dropped and the queue is drained.
    pub fn spawn<S: Store>(store: Arc<S>, options: WriterOptions) -> (Writer, JoinHandle<()>) {
        let max_batch = options.max_batch.max(1);
        let (jobs, queue) = mpsc::channel(max_batch * options.in_flight.max(1) * 4);
        let health = Arc::new(Health::default());
        health.running.store(true, Ordering::Relaxed);
        let epoch = Instant::now();
        let task = tokio::spawn(run(store, queue, options, health.clone(), epoch));
        let store_payload = options.store_payload;
        (
            Writer {
                jobs,
                store_payload,
                health,
                epoch,
            },
            task,
        )
    }

    /// Queues a change and waits until it is committed (or failed).
    pub async fn submit(&self, change: Change) -> Result<Outcome, WriteError> {
        let mut outcomes = self.submit_group(vec![change]).await;
        outcomes.pop().unwrap_or(Err(WriteError::Unavailable))
    }

    /// Queues changes that go into one batch, applied in this order, and waits for their outcomes. A user's actor
    /// hands over its queued webhooks this way: one commit for all of them instead of one each.
    pub async fn submit_group(&self, mut changes: Vec<Change>) -> Vec<Result<Outcome, WriteError>> {
        let store_payload = self.store_payload;
        changes.iter_mut().for_each(|c| c.prepare(store_payload));
        let (replies, answers): (Vec<Reply>, Vec<_>) = changes.iter().map(|_| oneshot::channel()).unzip();
        let span = tracing::Span::current();
        let job = Job { changes, replies, span };
        if self.jobs.send(job).await.is_err() {
            return answers.iter().map(|_| Err(WriteError::Unavailable)).collect();
        }
        let mut outcomes = Vec::with_capacity(answers.len());
        for answer in answers {
            outcomes.push(answer.await.unwrap_or(Err(WriteError::Unavailable)));
        }
        outcomes
    }

    /// Why writes are not going through right now, if they are not: the writer stopped, a batch has been in
    /// flight for longer than `stuck_after`, or within `stuck_after` a batch failed as unavailable and none
    /// committed since (a locked table fails each write after `lock_timeout_ms`; the window lets readiness
    /// recover when no write comes to prove the database is back).
    pub fn trouble(&self, stuck_after: Duration) -> Option<&'static str> {
        let h = &self.health;
        if !h.running.load(Ordering::Relaxed) {
            return Some("the writer has stopped");
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let busy_since = h.busy_since_ms.load(Ordering::Relaxed);
        if busy_since != 0 && now.saturating_sub(busy_since) > stuck_after.as_millis() as u64 {
            return Some("a write has been waiting on the database for too long");
        }
        let failed = h.last_unavailable_ms.load(Ordering::Relaxed);
        if failed > h.last_commit_ms.load(Ordering::Relaxed)
            && now.saturating_sub(failed) <= stuck_after.as_millis() as u64
        {
            return Some("the last write failed: the database is unavailable");
        }
        None
    }
}

/// How long a batch commits alone before a second one may start beside it (see `run`).
const OVERLAP_AFTER: Duration = Duration::from_millis(10);

/// Marks the writer stopped however its task ends (drained, panicked or aborted).
struct Running(Arc<Health>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Relaxed);
    }
}

async fn run<S: Store>(
    store: Arc<S>,
    mut queue: mpsc::Receiver<Job>,
    options: WriterOptions,
    health: Arc<Health>,
    epoch: Instant,
) {
    let _running = Running(health.clone());
    let max_batch = options.max_batch.max(1);
    let slots = Arc::new(Semaphore::new(options.in_flight.max(1)));
    let counters = Arc::new(CreatedCounters::new());
    let in_flight = Arc::new(InFlight::default());
    let mut batches = JoinSet::new();
    let overlap_at = (max_batch / 2).max(1);
    let mut last_started = Instant::now();
    loop {
        // Wait for a free slot first: changes arriving meanwhile join the next batch.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        // A free slot while another batch commits: start a second one only if that one is slow (a distant or
        // locked database) or half a batch has queued. On a fast database the running batch ends first and the
        // next one takes everything queued meanwhile: fewer, larger batches, which is most of the database's
        // cost per event (a batch costs about as much as a dozen users, BENCHMARKS.md).
        while !batches.is_empty() && queue.len() < overlap_at && last_started.elapsed() < OVERLAP_AFTER {
            tokio::select! {
                _ = batches.join_next() => {}
                () = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        }
        let mut buffer = Vec::with_capacity(max_batch);
        if queue.recv_many(&mut buffer, max_batch).await == 0 {
            break;
        }
        let span = tracing::debug_span!(target: crate::telemetry::SPAN_TARGET, "write_batch", changes = buffer.len());
        for job in &buffer {
            span.follows_from(&job.span);
        }
        last_started = Instant::now();
        let (store, health, counters, in_flight) = (store.clone(), health.clone(), counters.clone(), in_flight.clone());
        batches.spawn(
            async move {
                let started = epoch.elapsed().as_millis() as u64 + 1;
                in_flight.start(&health, started);
                let (changes, replies): (Vec<Change>, Vec<Reply>) = buffer
                    .into_iter()
                    .flat_map(|j| j.changes.into_iter().zip(j.replies))
                    .unzip();
                // Only a commit that wrote users proves users can be written (a locked `users` table lets
                // delivery-only batches through).
                let touches_users = changes.iter().any(|c| c.clerk_id().is_some());
                let ok = commit(&*store, changes, replies, &counters).await;
                let done = epoch.elapsed().as_millis() as u64 + 1;
                if !ok {
                    health.last_unavailable_ms.fetch_max(done, Ordering::Relaxed);
                } else if touches_users {
                    health.last_commit_ms.fetch_max(done, Ordering::Relaxed);
                }
                in_flight.finish(&health, started);
                drop(permit);
            }
            .instrument(span),
        );
        while batches.try_join_next().is_some() {}
    }
    while batches.join_next().await.is_some() {}
}

/// Start times of the batches in flight, so `busy_since_ms` always names the oldest.
#[derive(Default)]
struct InFlight(std::sync::Mutex<Vec<u64>>);

impl InFlight {
    fn start(&self, health: &Health, at: u64) {
        let mut started = self.0.lock().unwrap_or_else(|e| e.into_inner());
        started.push(at);
        health
            .busy_since_ms
            .store(started.iter().copied().min().unwrap_or(0), Ordering::Relaxed);
    }

    fn finish(&self, health: &Health, at: u64) {
        let mut started = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = started.iter().position(|&t| t == at) {
            started.swap_remove(i);
        }
        health
            .busy_since_ms
            .store(started.iter().copied().min().unwrap_or(0), Ordering::Relaxed);
    }
}

/// Applies one batch in one transaction and answers each submitter; `false` when the database was unavailable.
async fn commit<S: Store>(store: &S, changes: Vec<Change>, replies: Vec<Reply>, counters: &CreatedCounters) -> bool {
    match store.apply(&changes).await {
        Ok(outcomes) => {
            for ((reply, outcome), change) in replies.into_iter().zip(outcomes).zip(&changes) {
                counters.count(change, &outcome);
                let _ = reply.send(Ok(outcome));
            }
            true
        }
        Err(e) if changes.len() > 1 && !e.is_unavailable() => {
            tracing::warn!(error = %e, batch = changes.len(), "batch failed; applying its changes one by one");
            let mut available = true;
            for (change, reply) in changes.iter().zip(replies) {
                let result = store.apply(std::slice::from_ref(change)).await.map(|mut o| o.remove(0));
                match &result {
                    Ok(outcome) => counters.count(change, outcome),
                    Err(e) => available &= !e.is_unavailable(),
                }
                let _ = reply.send(result.map_err(|e| log_failure(&e, 1)));
            }
            available
        }
        Err(e) => {
            let failure = log_failure(&e, changes.len());
            for reply in replies {
                let _ = reply.send(Err(failure));
            }
            failure != WriteError::Unavailable
        }
    }
}

/// Counts a committed change in `clerk_sync_{users,organizations,memberships}_created_total` (for writes that
/// bypass the writer: backfill).
pub fn count_created(change: &Change, outcome: &Outcome) {
    if let (Change::Upsert { entity, via, .. }, Outcome::Created) = (change, outcome) {
        metrics::counter!(created_metric(entity.kind()), "source" => via.as_str()).increment(1);
    }
}

fn created_metric(kind: Kind) -> &'static str {
    use crate::telemetry::metrics::{MEMBERSHIPS_CREATED, ORGANIZATIONS_CREATED, USERS_CREATED};
    match kind {
        Kind::User => USERS_CREATED,
        Kind::Organization => ORGANIZATIONS_CREATED,
        Kind::Membership => MEMBERSHIPS_CREATED,
    }
}

/// The `*_created_total` counters count exactly the committed inserts, by kind and by the path that made them;
/// the label sets are resolved once rather than per change.
struct CreatedCounters {
    /// Indexed by kind, then source.
    counters: [[metrics::Counter; 3]; 3],
}

impl CreatedCounters {
    fn new() -> Self {
        let of = |kind: Kind| {
            [Source::Webhook, Source::Fallback, Source::Backfill]
                .map(|via| metrics::counter!(created_metric(kind), "source" => via.as_str()))
        };
        CreatedCounters {
            counters: [Kind::User, Kind::Organization, Kind::Membership].map(of),
        }
    }

    fn count(&self, change: &Change, outcome: &Outcome) {
        if let (Change::Upsert { entity, via, .. }, Outcome::Created) = (change, outcome) {
            let kind = match entity.kind() {
                Kind::User => 0,
                Kind::Organization => 1,
                Kind::Membership => 2,
            };
            let source = match via {
                Source::Webhook => 0,
                Source::Fallback => 1,
                Source::Backfill => 2,
            };
            self.counters[kind][source].increment(1);
        }
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

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
