//! The users walk: `GET /v1/users` 500 at a time with the `starting_after` cursor, written while the next page
//! is fetched.

use std::collections::VecDeque;

use tokio::task::JoinHandle;

use super::page::{write_page, PageResult};
use super::{walk_name, Backfill, BackfillError, Options, Progress, Tally};
use crate::clerk::{ClerkError, ClerkUser, Cursor, PAGE_SIZE};
use crate::store::backfill::Checkpoint;
use crate::store::{Change, Db, Entity, Kind, Source, StoreError};

const USERS: Kind = Kind::User;

impl Backfill {
    pub(super) async fn users(
        &self,
        options: Options,
        progress: &mut dyn Progress,
        tally: &mut Tally,
    ) -> Result<(), BackfillError> {
        let mut checkpoint = self.begin(USERS, options, tally).await?;
        progress.start(USERS, self.clerk.count_users().await.ok());
        // The next page is fetched while this one is written: the walk takes the longer of the two, not both.
        let (pages_tx, mut pages) = tokio::sync::mpsc::channel::<Result<Vec<ClerkUser>, ClerkError>>(2);
        let clerk = &self.clerk;
        let start = checkpoint.cursor.clone();
        let resumed_at = tally.scanned;
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
                            failed = Some(e.into());
                            more = false;
                            break;
                        }
                    };
                    let Some(last) = page.last().map(|u| u.id.clone()) else {
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
                    checkpoint.cursor = Some(last);
                    checkpoint.scanned += changes.len() as i64;
                    if options.dry_run {
                        self.apply_page(USERS, changes, None, options, tally).await?;
                        progress.page(USERS, tally);
                    } else {
                        let task = tokio::spawn(write_page(
                            self.db.clone(),
                            walk_name(USERS),
                            changes,
                            self.store_payload,
                        ));
                        writing.push_back((checkpoint.clone(), task));
                    }
                }
                let Some((written_up_to, task)) = writing.pop_front() else {
                    break;
                };
                let (changes, outcomes) = task.await.map_err(|_| StoreError::Closed)??;
                tally.scanned += changes.len() as u64;
                self.account(USERS, &changes, outcomes, tally).await?;
                self.db.backfill_save_cursor(walk_name(USERS), &written_up_to).await?;
                progress.page(USERS, tally);
            }
            failed.map_or(Ok(()), Err)
        };
        let ((), applied) = tokio::join!(fetch, apply);
        applied?;
        if options.prune {
            // The cursor walk skips no one (a user deleted meanwhile is simply absent): no confirmation needed.
            tally.pruned = self.prune(USERS, options.dry_run).await?;
        }
        self.end(USERS, options).await?;
        Ok(())
    }
}
