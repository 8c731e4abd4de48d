//! Backfill and reconciliation: walk Clerk's whole user list and make the table right.
//!
//! Pages of 500 users in `created_at` order go through the same batch logic as webhooks (ordering guard,
//! tombstones never resurrected, `created_via = 'backfill'`), one transaction per page. A backfill needs no
//! lane per user: the statements are conflict-safe on their own and take the same per-user advisory locks, so
//! a webhook for the same user, in this process or another, is ordered against it by `updated_at` alone.
//! The cursor and the ids seen are checkpointed after every page, so an interrupted run resumes; memory holds
//! one page whatever the number of users. `--prune` tombstones the live users Clerk no longer lists, only
//! after the whole list was read.

pub mod progress;
pub mod reconcile;

use std::sync::Arc;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

use crate::cache::UserCache;
use crate::clerk::{ClerkClient, ClerkError, ClerkUser, Cursor, PAGE_SIZE};
use crate::config::Settings;
use crate::store::backfill::{Checkpoint, Known};
use crate::store::writer::count_created;
use crate::store::{Change, Db, Outcome, Source, Store, StoreError};
use crate::telemetry::metrics;

/// The checkpoint name of the users walk.
const USERS: &str = "users";
/// A dry run records the ids it saw under its own name (bookkeeping only, never `users`), so `--prune` can say
/// who would be tombstoned without holding the list in memory; it is cleared at the end.
const DRY_RUN: &str = "users-dry-run";

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub prune: bool,
    pub dry_run: bool,
    pub restart: bool,
}

/// What a run did (or, with `--dry-run`, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub scanned: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub pruned: u64,
    pub skipped_tombstoned: u64,
    pub failed: u64,
    #[serde(skip)]
    pub duration: Duration,
    /// The run continued an interrupted one.
    pub resumed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("Clerk: {0}")]
    Clerk(#[from] ClerkError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Setup(String),
}

/// Told of progress after every page.
pub trait Progress: Send {
    fn total(&mut self, _total: u64) {}
    fn page(&mut self, _summary: &Summary) {}
}

/// No progress reporting (reconciliation inside `serve` logs its summary instead).
pub struct Quiet;
impl Progress for Quiet {}

pub struct Backfill {
    pub db: Arc<Db>,
    pub clerk: Arc<ClerkClient>,
    /// Inside `serve`: entries of changed users are dropped after each page commits.
    pub cache: Option<UserCache>,
}

impl Backfill {
    /// Connects to the configured database (applying pending migrations) and Clerk, for the CLI.
    pub async fn connect(settings: &Settings) -> Result<Backfill, BackfillError> {
        if !settings.clerk.secret_key.is_set() {
            return Err(BackfillError::Setup(
                "clerk.secret_key (CLERK_SECRET_KEY): not set; backfill reads Clerk's user list with it".into(),
            ));
        }
        let db = Db::connect(&settings.database).await?;
        db.migrate().await?;
        let clerk = ClerkClient::new(&settings.clerk).map_err(|e| BackfillError::Setup(e.to_string()))?;
        Ok(Backfill {
            db: Arc::new(db),
            clerk,
            cache: None,
        })
    }

    pub async fn run(&self, options: Options, progress: &mut dyn Progress) -> Result<Summary, BackfillError> {
        let started = Instant::now();
        let mut summary = Summary::default();
        if let Ok(total) = self.clerk.count_users().await {
            progress.total(total);
        }
        // A dry run changes no user and keeps no checkpoint: it always reads from the start.
        let mut checkpoint = match (options.dry_run, options.restart) {
            (true, _) => {
                self.db.backfill_start(DRY_RUN).await?;
                Checkpoint::default()
            }
            (false, false) => match self.db.backfill_checkpoint(USERS).await? {
                Some(resume) => {
                    summary.resumed = true;
                    summary.scanned = resume.scanned.max(0) as u64;
                    resume
                }
                None => self.fresh().await?,
            },
            (false, true) => self.fresh().await?,
        };
        // The next page is fetched while this one is written: the walk takes the longer of the two, not both.
        let (pages_tx, mut pages) = tokio::sync::mpsc::channel::<Result<Vec<ClerkUser>, ClerkError>>(2);
        let clerk = &self.clerk;
        let start = checkpoint.cursor.clone();
        let resumed_at = summary.scanned;
        let fetch = async move {
            let mut cursor = start.map(Cursor::After);
            let mut fetched = resumed_at;
            loop {
                let mut page = clerk.list_users(cursor.as_ref(), PAGE_SIZE).await;
                // An instance that refuses the cursor is walked by offset instead (slower on Clerk's side at
                // large offsets, so only as a fallback).
                if let (Err(ClerkError::Refused(400 | 422)), Some(Cursor::After(_))) = (&page, &cursor) {
                    tracing::warn!(
                        offset = fetched,
                        "Clerk refused starting_after; paging by offset instead"
                    );
                    cursor = Some(Cursor::Offset(fetched));
                    page = clerk.list_users(cursor.as_ref(), PAGE_SIZE).await;
                }
                let next = match (&page, &cursor) {
                    (Ok(users), Some(Cursor::Offset(n))) if users.len() == PAGE_SIZE => {
                        Some(Cursor::Offset(n + PAGE_SIZE as u64))
                    }
                    (Ok(users), _) if users.len() == PAGE_SIZE => users.last().map(|u| Cursor::After(u.id.clone())),
                    _ => None,
                };
                if let Ok(users) = &page {
                    fetched += users.len() as u64;
                }
                if pages_tx.send(page).await.is_err() {
                    return;
                }
                match next {
                    Some(next) => cursor = Some(next),
                    None => return,
                }
            }
        };
        // Up to `pages_in_flight` pages are written at once (Postgres; SQLite has one writer), each in its own
        // transaction with the ids it holds; the cursor advances in page order, only past pages whose
        // transaction committed, so a resumed run never skips a page (it may rewrite a few: harmless).
        let pages_in_flight = if matches!(*self.db, Db::Postgres(_)) { 3 } else { 1 };
        let apply = async {
            let mut writing: std::collections::VecDeque<(Checkpoint, JoinHandle<PageResult>)> = Default::default();
            let mut more = true;
            loop {
                while more && writing.len() < pages_in_flight {
                    let Some(page) = pages.recv().await else {
                        more = false;
                        break;
                    };
                    let page = page?;
                    let Some(last) = page.last().map(|u| u.id.clone()) else {
                        more = false;
                        break;
                    };
                    let changes: Vec<Change> = page
                        .into_iter()
                        .map(|u| Change::Upsert {
                            user: u.into_user_data(),
                            via: Source::Backfill,
                            delivery: None,
                        })
                        .collect();
                    summary.scanned += changes.len() as u64;
                    checkpoint.cursor = Some(last);
                    checkpoint.scanned = summary.scanned as i64;
                    if options.dry_run {
                        self.classify(&changes, &mut summary).await?;
                        let seen: Vec<&str> = changes.iter().map(change_id).collect();
                        self.db.backfill_page(DRY_RUN, &seen, Some(&checkpoint)).await?;
                        progress.page(&summary);
                    } else {
                        let task = tokio::spawn(write_page(self.db.clone(), changes));
                        writing.push_back((checkpoint.clone(), task));
                    }
                }
                let Some((written_up_to, task)) = writing.pop_front() else {
                    break;
                };
                let (changes, outcomes) = task.await.map_err(|_| StoreError::Closed)??;
                self.account(&changes, outcomes, &mut summary).await?;
                self.db.backfill_save_cursor(USERS, &written_up_to).await?;
                progress.page(&summary);
            }
            Ok::<(), BackfillError>(())
        };
        let ((), applied) = tokio::join!(fetch, apply);
        applied?;
        if options.prune {
            summary.pruned = self.prune(options.dry_run).await?;
        }
        if options.dry_run {
            self.db.backfill_finish(DRY_RUN).await?;
        } else {
            self.db.backfill_finish(USERS).await?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            ::metrics::gauge!(metrics::BACKFILL_LAST_SUCCESS).set(now);
        }
        summary.duration = started.elapsed();
        Ok(summary)
    }

    async fn fresh(&self) -> Result<Checkpoint, StoreError> {
        self.db.backfill_start(USERS).await?;
        Ok(Checkpoint::default())
    }

    /// Counts a written page's outcomes and drops the cache entries of the users it changed.
    async fn account(
        &self,
        changes: &[Change],
        outcomes: Vec<Result<Outcome, StoreError>>,
        summary: &mut Summary,
    ) -> Result<(), StoreError> {
        for (change, outcome) in changes.iter().zip(outcomes) {
            let label = match &outcome {
                Ok(o) => {
                    count_created(change, o);
                    count(summary, o)
                }
                Err(e) if e.is_unavailable() => return Err(StoreError::Closed),
                Err(e) => {
                    tracing::error!(error = %e, clerk_id = change_id(change), "backfill: user not written");
                    summary.failed += 1;
                    "failed"
                }
            };
            ::metrics::counter!(metrics::BACKFILL_USERS, "outcome" => label).increment(1);
            if let (Some(cache), "created" | "updated") = (&self.cache, label) {
                cache.invalidate(change_id(change)).await;
            }
        }
        Ok(())
    }

    /// A dry run's classification of one page against what the database holds.
    async fn classify(&self, changes: &[Change], summary: &mut Summary) -> Result<(), StoreError> {
        let ids: Vec<&str> = changes.iter().map(change_id).collect();
        let known = self.db.known(&ids).await?;
        for change in changes {
            let Change::Upsert { user, .. } = change else { continue };
            match known.get(&user.clerk_id) {
                None => summary.created += 1,
                Some(Known::Deleted) => summary.skipped_tombstoned += 1,
                Some(Known::Live { clerk_updated_at })
                    if clerk_updated_at.is_none_or(|t| t < user.clerk_updated_at) =>
                {
                    summary.updated += 1
                }
                Some(Known::Live { .. }) => summary.unchanged += 1,
            }
        }
        Ok(())
    }

    /// Tombstones (soft delete) every live user the walk did not see; with `dry_run`, only counts them.
    async fn prune(&self, dry_run: bool) -> Result<u64, StoreError> {
        if dry_run {
            let (mut after, mut absent) = (String::new(), 0);
            loop {
                let page = self.db.backfill_unseen(DRY_RUN, &after, PAGE_SIZE as i64).await?;
                let Some(last) = page.last().cloned() else { break };
                absent += page.len() as u64;
                after = last;
            }
            return Ok(absent);
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut after = String::new();
        let mut pruned = 0;
        loop {
            let absent = self.db.backfill_unseen(USERS, &after, PAGE_SIZE as i64).await?;
            let Some(last) = absent.last().cloned() else { break };
            let changes: Vec<Change> = absent
                .iter()
                .map(|id| Change::Delete {
                    clerk_id: id.clone(),
                    deleted_at_ms: now_ms,
                    via: Source::Backfill,
                    hard: false,
                    delivery: None,
                })
                .collect();
            let outcomes = self.db.apply(&changes).await?;
            for (id, outcome) in absent.iter().zip(outcomes) {
                if outcome == Outcome::Deleted {
                    pruned += 1;
                    tracing::info!(clerk_id = id, "backfill --prune: absent from Clerk; tombstoned");
                    ::metrics::counter!(metrics::BACKFILL_USERS, "outcome" => "pruned").increment(1);
                    if let Some(cache) = &self.cache {
                        cache.invalidate(id).await;
                    }
                }
            }
            after = last;
        }
        Ok(pruned)
    }
}

type PageResult = Result<(Vec<Change>, Vec<Result<Outcome, StoreError>>), StoreError>;

/// Writes one page and records its ids as seen, in one transaction. A page the database refuses is applied
/// one user at a time, so one refused user does not stop the walk.
async fn write_page(db: Arc<Db>, mut changes: Vec<Change>) -> PageResult {
    changes.iter_mut().for_each(Change::strip_nul);
    match db.backfill_apply_page(USERS, &changes).await {
        Ok(outcomes) => {
            let outcomes = outcomes.into_iter().map(Ok).collect();
            Ok((changes, outcomes))
        }
        Err(e) if e.is_unavailable() => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "backfill page failed; applying its users one by one");
            let mut each = Vec::with_capacity(changes.len());
            for change in &changes {
                each.push(db.apply(std::slice::from_ref(change)).await.map(|mut o| o.remove(0)));
            }
            let seen: Vec<&str> = changes.iter().map(change_id).collect();
            db.backfill_page(USERS, &seen, None).await?;
            Ok((changes, each))
        }
    }
}

fn change_id(change: &Change) -> &str {
    match change {
        Change::Upsert { user, .. } => &user.clerk_id,
        Change::Delete { clerk_id, .. } => clerk_id,
        Change::Record { delivery, .. } => &delivery.svix_id,
    }
}

/// Adds an outcome to the summary; returns its label.
fn count(summary: &mut Summary, outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Created => {
            summary.created += 1;
            "created"
        }
        Outcome::Updated => {
            summary.updated += 1;
            "updated"
        }
        Outcome::Tombstoned => {
            summary.skipped_tombstoned += 1;
            "tombstoned"
        }
        _ => {
            summary.unchanged += 1;
            "unchanged"
        }
    }
}
