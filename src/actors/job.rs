//! The jobs a user's actor runs, one at a time: a webhook's change, a fallback's change, and a read that fills
//! the cache. Running reads here too keeps a cache fill from racing a commit's invalidation.

use std::collections::VecDeque;
use std::sync::Arc;

use ractor::RpcReplyPort;

use super::error::FallbackError;
use crate::cache::{Absent, UserCache, UserJson};
use crate::clerk::ClerkClient;
use crate::store::writer::{WriteError, Writer};
use crate::store::{Change, Db, Lookup, Outcome, Store};
use crate::webhook::VerifiedEvent;

/// What every user's actor needs to run its jobs.
#[derive(Clone, Debug)]
pub struct UserArgs {
    pub db: Arc<Db>,
    pub writer: Writer,
    pub cache: UserCache,
    /// Without `CLERK_SECRET_KEY` its calls fail with `NotConfigured`: the fallback then answers 503.
    pub clerk: Arc<ClerkClient>,
    pub hard_delete: bool,
}

/// What the database holds for a user, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    Found(UserJson),
    Tombstoned,
    /// Tombstoned by a prune, which Clerk may yet contradict: looked up in Clerk like a missing record.
    Pruned,
    Missing,
}

pub enum Job {
    /// Apply a verified webhook event; the reply carries the committed outcome.
    Webhook {
        event: Box<VerifiedEvent>,
        reply: RpcReplyPort<Result<Outcome, WriteError>>,
    },
    /// Several webhooks of this user that queued up while its previous job ran: one commit for all, in order.
    Webhooks(Vec<Webhook>),
    /// Apply a change fetched from Clerk, then read the row back (and cache it).
    Apply {
        change: Box<Change>,
        reply: RpcReplyPort<Result<(Outcome, Stored), FallbackError>>,
    },
    /// Read the user (and cache it when found).
    Load {
        reply: RpcReplyPort<Result<Stored, FallbackError>>,
    },
    /// Drop the cache entry: the record changed elsewhere (see `ShardMsg::Invalidate`).
    Invalidate,
    /// Panics, as a bug in a job would: the supervisor's event (tests only).
    #[cfg(test)]
    Panic,
    /// Clerk said "no such record": read it again, and remember the miss only if the row is still missing.
    ConfirmMissing {
        reply: RpcReplyPort<Result<Stored, FallbackError>>,
    },
}

impl Job {
    pub(super) async fn run(self, ctx: &UserArgs, clerk_id: &str) {
        match self {
            Job::Webhook { event, reply } => webhooks(ctx, clerk_id, vec![(event, reply)]).await,
            Job::Webhooks(jobs) => webhooks(ctx, clerk_id, jobs).await,
            Job::Apply { change, reply } => {
                let result = async {
                    let outcome = ctx.writer.submit(*change).await.map_err(FallbackError::Store)?;
                    ctx.cache.invalidate(clerk_id).await;
                    Ok((outcome, load(ctx, clerk_id).await?))
                }
                .await;
                let _ = reply.send(result);
            }
            Job::Load { reply } => {
                let _ = reply.send(load(ctx, clerk_id).await);
            }
            Job::Invalidate => ctx.cache.invalidate(clerk_id).await,
            #[cfg(test)]
            Job::Panic => panic!("a job of {clerk_id} panicked (test)"),
            Job::ConfirmMissing { reply } => {
                let stored = load(ctx, clerk_id).await;
                match stored {
                    Ok(Stored::Missing) => ctx.cache.remember_absent(clerk_id, Absent::Missing).await,
                    // Clerk confirms what the prune inferred.
                    Ok(Stored::Pruned) => ctx.cache.remember_absent(clerk_id, Absent::Gone).await,
                    _ => {}
                }
                let _ = reply.send(stored);
            }
        }
    }
}

pub type Webhook = (Box<VerifiedEvent>, RpcReplyPort<Result<Outcome, WriteError>>);

/// Most queued webhooks of one user handed to the writer together.
const MAX_GROUP: usize = 64;

/// The next job of a queue; consecutive queued webhooks become one job, committed together in order.
pub fn next_job(queue: &mut VecDeque<Job>) -> Option<Job> {
    let first = queue.pop_front()?;
    let Job::Webhook { event, reply } = first else {
        return Some(first);
    };
    if !matches!(queue.front(), Some(Job::Webhook { .. })) {
        return Some(Job::Webhook { event, reply });
    }
    let mut group = vec![(event, reply)];
    while group.len() < MAX_GROUP {
        match queue.pop_front() {
            Some(Job::Webhook { event, reply }) => group.push((event, reply)),
            Some(other) => {
                queue.push_front(other);
                break;
            }
            None => break,
        }
    }
    Some(Job::Webhooks(group))
}

/// One record's webhooks, committed together in order; each caller gets its own outcome.
async fn webhooks(ctx: &UserArgs, clerk_id: &str, jobs: Vec<Webhook>) {
    // A membership event brings its organization's embedded copy: committed in the same batch, just before.
    let mut changes = Vec::with_capacity(jobs.len());
    let mut replies = Vec::with_capacity(jobs.len());
    let mut embedded = Vec::new();
    for (event, reply) in jobs {
        let (change, organization) = (*event).into_changes(ctx.hard_delete);
        if let Some(organization) = organization {
            embedded.push((changes.len(), organization.clerk_id().map(str::to_owned)));
            changes.push(organization);
        }
        replies.push((changes.len(), reply));
        changes.push(change);
    }
    // The writer answers after commit; only then may the next job of this record start.
    let outcomes = ctx.writer.submit_group(changes).await;
    let changed = |o: &Result<Outcome, _>| {
        matches!(
            o,
            Ok(Outcome::Created | Outcome::Updated | Outcome::Deleted | Outcome::Tombstoned | Outcome::Duplicate(_))
        )
    };
    if replies.iter().any(|(i, _)| outcomes.get(*i).is_some_and(changed)) {
        // A duplicate may be the retry of a commit whose answer was lost before the cache was
        // cleared; the next read goes through this actor to the database either way.
        ctx.cache.invalidate(clerk_id).await;
    }
    for (i, organization) in embedded {
        if let (Some(id), Some(Ok(Outcome::Created | Outcome::Updated))) = (organization, outcomes.get(i)) {
            // Written outside the organization's own actor: its next read goes to the database.
            ctx.cache.invalidate(&id).await;
        }
    }
    for (i, reply) in replies {
        // The caller may have gone away (client disconnect); the change is committed either way.
        let _ = reply.send(outcomes.get(i).cloned().unwrap_or(Err(WriteError::Unavailable)));
    }
}

/// Reads the user; a live row is cached.
async fn load(ctx: &UserArgs, clerk_id: &str) -> Result<Stored, FallbackError> {
    Ok(match ctx.db.lookup(clerk_id).await? {
        Lookup::Found(row) => {
            let json = UserJson::from_row(row.as_ref());
            ctx.cache.put(clerk_id, json.clone()).await;
            Stored::Found(json)
        }
        Lookup::Tombstoned => Stored::Tombstoned,
        Lookup::Pruned => Stored::Pruned,
        Lookup::Missing => Stored::Missing,
    })
}
