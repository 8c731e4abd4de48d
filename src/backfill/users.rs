//! The users walk: `GET /v1/users` 500 at a time with the `starting_after` cursor (see `cursor.rs`), written while
//! the next page is fetched.

use std::collections::VecDeque;

use tokio::task::JoinHandle;

use super::cursor::{trail_text, UserPages};
use super::page::{write_page, Page, PageResult};
use super::{walk_name, Backfill, BackfillError, Options, Progress, Tally};
use crate::clerk::ClerkUser;
use crate::store::backfill::Checkpoint;
use crate::store::{Change, Db, Entity, Kind, Source, StoreError};

const USERS: Kind = Kind::User;

impl Backfill {
    pub(super) async fn users(
        &self,
        options: Options,
        run: Option<&str>,
        progress: &mut dyn Progress,
        tally: &mut Tally,
    ) -> Result<(), BackfillError> {
        let mut checkpoint = self.begin(USERS, options, tally).await?;
        let count = self.clerk.count_users().await.ok();
        tally.clerk_count = count;
        progress.start(USERS, count);
        // The next page is fetched while this one is written: the walk takes the longer of the two, not both.
        let (pages_tx, mut pages) = tokio::sync::mpsc::channel::<Result<Vec<ClerkUser>, BackfillError>>(2);
        let mut walk = UserPages::new(&self.clerk, checkpoint.cursor.as_deref(), tally.scanned, count);
        let fetch = async move {
            loop {
                let page = walk.next().await.transpose();
                let last = page.is_none() || matches!(page, Some(Err(_)));
                if let Some(page) = page {
                    if pages_tx.send(page).await.is_err() {
                        return;
                    }
                }
                if last {
                    return;
                }
            }
        };
        // Up to `pages_in_flight` pages are written at once (Postgres; SQLite has one writer), each in its own
        // transaction with the ids it holds; the cursor advances in page order, only past pages whose
        // transaction committed, so a resumed run never skips a page (it may rewrite a few: harmless). One page
        // at a time moves the cursor in the page's own transaction.
        let pages_in_flight = if matches!(*self.db, Db::Postgres(_)) { 3 } else { 1 };
        let cursor_with_page = pages_in_flight == 1;
        let apply = async {
            let mut writing: VecDeque<(Checkpoint, JoinHandle<PageResult>)> = VecDeque::new();
            let mut more = true;
            // A page that cannot be read ends the run, but only after the pages already being written have
            // committed and moved the cursor: a resumed run then continues after them.
            let mut failed: Option<BackfillError> = None;
            loop {
                while more && writing.len() < pages_in_flight {
                    let Some(page) = pages.recv().await else {
                        more = false;
                        break;
                    };
                    let page = match page {
                        Ok(page) => page,
                        Err(e) => {
                            failed = Some(e);
                            more = false;
                            break;
                        }
                    };
                    let Some(trail) = trail_text(&page) else {
                        more = false;
                        break;
                    };
                    let changes: Vec<Change> = page
                        .into_iter()
                        .map(|u| Change::Upsert {
                            entity: Entity::User(u.into_user_data()),
                            via: Source::Backfill,
                            delivery: None,
                        })
                        .collect();
                    checkpoint.cursor = Some(trail);
                    checkpoint.scanned += changes.len() as i64;
                    if options.dry_run {
                        self.apply_page(USERS, changes, true, None, options, tally).await?;
                        progress.page(USERS, tally);
                    } else {
                        let page = Page {
                            walk: walk_name(USERS),
                            keeps_seen: checkpoint.keeps_seen,
                            checkpoint: cursor_with_page.then(|| checkpoint.clone()),
                        };
                        let task = tokio::spawn(write_page(self.db.clone(), page, changes, self.store_payload));
                        writing.push_back((checkpoint.clone(), task));
                    }
                }
                let Some((written_up_to, task)) = writing.pop_front() else {
                    break;
                };
                let (changes, outcomes) = task.await.map_err(|_| StoreError::Closed)??;
                tally.scanned += changes.len() as u64;
                self.account(USERS, &changes, outcomes, tally).await?;
                if !cursor_with_page {
                    self.db.backfill_save_cursor(walk_name(USERS), &written_up_to).await?;
                }
                progress.page(USERS, tally);
            }
            failed.map_or(Ok(()), Err)
        };
        let ((), applied) = tokio::join!(fetch, apply);
        applied?;
        if options.prune {
            tally.pruned = self.prune(USERS, options, run, tally).await?;
        }
        self.end(USERS, options).await?;
        Ok(())
    }
}
