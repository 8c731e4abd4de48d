//! Reading Clerk's user list page after page with the `starting_after` cursor, and knowing when it is really
//! read to its end.
//!
//! Three things can go wrong with a cursor, and each would make `--prune` tombstone users Clerk still has:
//!
//! - **Clerk ignores it** (or a proxy drops it): every request answers the first page again. A page that does not
//!   move past the cursor, or a walk that has read far more users than Clerk counted, fails the walk.
//! - **The cursor's user is deleted** between two requests (or between an interrupted run and its resume): Clerk
//!   may then refuse the cursor or answer an empty page, which looks like the end of the list. So the walk keeps a
//!   short *trail* of the last ids it read (also in its checkpoint): an empty page after a cursor is confirmed as
//!   the end by asking again after the id before it (if that answer lists the cursor's user, the user exists and
//!   the list really ended; if not, the answer is the rest of the list), and a refused cursor is retried after the
//!   id before it.
//! - **Clerk refuses cursors altogether**: the walk continues by offset (slower on Clerk's side at large offsets,
//!   and a deletion during the walk can shift a user past it — `--prune` confirms every absent user with Clerk).

use super::BackfillError;
use crate::clerk::{ClerkClient, ClerkError, ClerkUser, Cursor, PAGE_SIZE};

/// Ids kept from the end of each page: enough that all of them being deleted between two requests is not a case.
const TRAIL: usize = 5;

/// The trail as a checkpoint stores it: ids joined by `,` (Clerk ids hold none), oldest first.
pub(super) fn trail_text(users: &[ClerkUser]) -> Option<String> {
    let from = users.len().saturating_sub(TRAIL);
    (!users.is_empty()).then(|| {
        users[from..]
            .iter()
            .map(|u| u.id.as_str())
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// Pages of Clerk's users from a checkpoint's trail (or from the start).
pub(super) struct UserPages<'a> {
    clerk: &'a ClerkClient,
    /// The last ids read, oldest first; the cursor is the last one.
    trail: Vec<String>,
    /// Users read so far (with those of the run this one resumes).
    fetched: u64,
    /// Clerk's count at the start of the walk, when it answered.
    count: Option<u64>,
    /// Paging by offset: Clerk refused every cursor offered.
    offset: Option<u64>,
    /// A cursor has worked in this walk (so a refused one means its user is gone, not that cursors are refused).
    cursor_worked: bool,
    done: bool,
}

impl<'a> UserPages<'a> {
    pub(super) fn new(clerk: &'a ClerkClient, resume: Option<&str>, fetched: u64, count: Option<u64>) -> Self {
        let trail = resume
            .map(|t| t.split(',').filter(|id| !id.is_empty()).map(String::from).collect())
            .unwrap_or_default();
        UserPages {
            clerk,
            trail,
            fetched,
            count,
            offset: None,
            cursor_worked: false,
            done: false,
        }
    }

    /// The next non-empty page, or `None` once the whole list was read.
    pub(super) async fn next(&mut self) -> Result<Option<Vec<ClerkUser>>, BackfillError> {
        if self.done {
            return Ok(None);
        }
        let page = match self.offset {
            Some(offset) => self.at_offset(offset).await?,
            None => self.after_trail().await?,
        };
        if page.len() < PAGE_SIZE {
            self.done = true;
        }
        if page.is_empty() {
            return Ok(None);
        }
        self.fetched += page.len() as u64;
        if let Some(count) = self.count {
            // Users created during the walk add to the list, but not this many.
            if self.fetched > count.saturating_mul(2) + PAGE_SIZE as u64 {
                return Err(BackfillError::Stalled(format!(
                    "read {} users where Clerk counted {count} at the start: Clerk is not moving through its list",
                    self.fetched
                )));
            }
        }
        self.trail = page[page.len().saturating_sub(TRAIL)..]
            .iter()
            .map(|u| u.id.clone())
            .collect();
        Ok(Some(page))
    }

    async fn at_offset(&mut self, offset: u64) -> Result<Vec<ClerkUser>, BackfillError> {
        let page = self.clerk.list_users(Some(&Cursor::Offset(offset)), PAGE_SIZE).await?;
        if let (Some(last), Some(previous)) = (page.last(), self.trail.last()) {
            if &last.id == previous {
                return Err(stalled("offset", previous));
            }
        }
        self.offset = Some(offset + page.len() as u64);
        Ok(page)
    }

    /// The page after the trail's last id, stepping back along the trail when that id's user is gone.
    async fn after_trail(&mut self) -> Result<Vec<ClerkUser>, BackfillError> {
        loop {
            let Some(cursor) = self.trail.last().cloned() else {
                return Ok(self.clerk.list_users(None, PAGE_SIZE).await?);
            };
            let page = match self
                .clerk
                .list_users(Some(&Cursor::After(cursor.clone())), PAGE_SIZE)
                .await
            {
                Ok(page) => page,
                Err(
                    ClerkError::NotFound
                    | ClerkError::Refused {
                        status: 400 | 404 | 422,
                        ..
                    },
                ) => {
                    if self.trail.len() > 1 {
                        // Its user may be gone: the id before it is as good a cursor (a few users are read twice).
                        self.trail.pop();
                        continue;
                    }
                    return self.refused(&cursor).await;
                }
                Err(e) => return Err(e.into()),
            };
            self.cursor_worked = true;
            if page.iter().any(|u| u.id == cursor) {
                return Err(stalled("starting_after", &cursor));
            }
            if !page.is_empty() || self.trail.len() < 2 {
                return Ok(page);
            }
            // An empty page: the end of the list, or a cursor whose user was deleted. Ask after the id before it.
            let before = self.trail[self.trail.len() - 2].clone();
            let probe = self.clerk.list_users(Some(&Cursor::After(before)), PAGE_SIZE).await?;
            if probe.iter().any(|u| u.id == cursor) {
                return Ok(page);
            }
            self.trail.pop();
            if !probe.is_empty() {
                return Ok(probe);
            }
        }
    }

    /// Clerk refused the only cursor the walk has: its user is gone (re-read from a page back by offset, then
    /// continue by cursor), or Clerk takes no cursors at all (continue by offset).
    async fn refused(&mut self, cursor: &str) -> Result<Vec<ClerkUser>, BackfillError> {
        let offset = if self.cursor_worked {
            self.fetched.saturating_sub(PAGE_SIZE as u64)
        } else {
            tracing::warn!(
                offset = self.fetched,
                "Clerk refused starting_after; paging by offset instead"
            );
            self.fetched
        };
        tracing::info!(
            cursor,
            offset,
            "backfill: Clerk refused the cursor; reading on by offset"
        );
        let page = self.clerk.list_users(Some(&Cursor::Offset(offset)), PAGE_SIZE).await?;
        if self.cursor_worked {
            // The ids of this page are a fresh trail: back to cursors. Users before the walk's position were read
            // already, so only what follows counts as fetched.
            self.fetched = offset;
        } else {
            self.offset = Some(offset + page.len() as u64);
        }
        Ok(page)
    }
}

fn stalled(paging: &str, at: &str) -> BackfillError {
    BackfillError::Stalled(format!(
        "Clerk answered the same page again after {paging} {at}: it is not moving through its list (a proxy dropping \
         the parameter?)"
    ))
}
