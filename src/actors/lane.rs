//! The jobs a user's lane runs, one at a time: a webhook's change, a fallback's change, and a read that fills
//! the cache. Running reads here too keeps a cache fill from racing a commit's invalidation.

use ractor::RpcReplyPort;

use super::fallback::FallbackError;
use super::UserArgs;
use crate::cache::UserJson;
use crate::store::writer::WriteError;
use crate::store::{Change, Lookup, Outcome, Store};
use crate::webhook::VerifiedEvent;

/// What the database holds for a user, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    Found(UserJson),
    Tombstoned,
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
        }
    }
}

type Webhook = (Box<VerifiedEvent>, RpcReplyPort<Result<Outcome, WriteError>>);

/// One user's webhooks, committed together in order; each caller gets its own outcome.
async fn webhooks(ctx: &UserArgs, clerk_id: &str, jobs: Vec<Webhook>) {
    let (changes, replies): (Vec<_>, Vec<_>) = jobs
        .into_iter()
        .map(|(event, reply)| ((*event).into_change(ctx.hard_delete), reply))
        .unzip();
    // The writer answers after commit; only then may the next job of this user start.
    let outcomes = ctx.writer.submit_group(changes).await;
    let changed = outcomes.iter().any(|o| {
        matches!(
            o,
            Ok(Outcome::Created | Outcome::Updated | Outcome::Deleted | Outcome::Tombstoned | Outcome::Duplicate(_))
        )
    });
    if changed {
        // A duplicate may be the retry of a commit whose answer was lost before the cache was
        // cleared; the next read goes through this lane to the database either way.
        ctx.cache.invalidate(clerk_id).await;
    }
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        // The caller may have gone away (client disconnect); the change is committed either way.
        let _ = reply.send(outcome);
    }
}

/// Reads the user; a live row is cached.
async fn load(ctx: &UserArgs, clerk_id: &str) -> Result<Stored, FallbackError> {
    Ok(match ctx.db.lookup(clerk_id).await? {
        Lookup::Found(row) => {
            let json = UserJson::from_row(&row);
            ctx.cache.put(clerk_id, json.clone()).await;
            Stored::Found(json)
        }
        Lookup::Tombstoned => Stored::Tombstoned,
        Lookup::Missing => Stored::Missing,
    })
}
