//! One logical actor per Clerk user id: every write for a user goes through that user's serial lane, so two
//! deliveries for the same user never race while different users proceed in parallel.
//!
//! A lane is not a ractor actor of its own (16 KB each, and 100,000 users touched in a minute would hold
//! 1.6 GB): it is an entry in the map of one of a few [`Shard`] actors, chosen by a hash of the id. The entry
//! exists only while the user has work running or queued; the shard runs the user's jobs one at a time, each on
//! its own task, and starts the next when the previous one reports done. An idle user costs nothing.
//!
//! Clerk I/O never runs in a lane: a fallback fetch is a shared "flight" that waiters join (one Clerk call
//! sequence for all of them), and only its write goes through the lane, like a webhook's. The [`Actors`]
//! handle is what HTTP handlers use.

mod error;
mod fallback;
mod lane;
mod shard;

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;

pub use fallback::{FallbackError, FetchMode, Fetched, Hit};
pub use lane::Job;
pub use shard::{Shard, ShardMsg};

use crate::cache::UserCache;
use crate::clerk::ClerkClient;
use crate::store::writer::{WriteError, Writer};
use crate::store::{Db, Outcome};
use crate::webhook::VerifiedEvent;

/// What every lane needs to run its jobs.
#[derive(Clone, Debug)]
pub struct UserArgs {
    pub db: Arc<Db>,
    pub writer: Writer,
    pub cache: UserCache,
    /// Without `CLERK_SECRET_KEY` its calls fail with `NotConfigured`: the fallback then answers 503.
    pub clerk: Arc<ClerkClient>,
    pub hard_delete: bool,
}

/// A cloneable handle to the shards.
#[derive(Clone, Debug)]
pub struct Actors {
    ctx: Arc<UserArgs>,
    shards: Arc<[ActorRef<ShardMsg>]>,
    /// A fixed hasher, so one id always maps to one shard.
    hasher: std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>,
}

impl Actors {
    /// Spawns `shards` shard actors (unnamed: the global registry is process-wide and tests run many daemons).
    /// The handle resolves when every shard has stopped.
    pub async fn start(args: UserArgs, shards: usize) -> Result<(Actors, JoinHandle<()>), ractor::SpawnErr> {
        let args = Arc::new(args);
        let mut refs = Vec::with_capacity(shards.max(1));
        let mut handles = Vec::with_capacity(shards.max(1));
        for _ in 0..shards.max(1) {
            let (shard, handle) = Actor::spawn(None, Shard, args.clone()).await?;
            refs.push(shard);
            handles.push(handle);
        }
        let all = tokio::spawn(async move {
            for handle in handles {
                let _ = handle.await;
            }
        });
        let actors = Actors {
            ctx: args,
            shards: refs.into(),
            hasher: Default::default(),
        };
        Ok((actors, all))
    }

    fn shard(&self, clerk_id: &str) -> &ActorRef<ShardMsg> {
        &self.shards[(self.hasher.hash_one(clerk_id) % self.shards.len() as u64) as usize]
    }

    /// Hands a verified user event to that user's lane and waits for the committed outcome.
    pub async fn apply_webhook(&self, clerk_id: String, event: VerifiedEvent) -> Result<Outcome, WriteError> {
        let called = self
            .shard(&clerk_id)
            .call(
                |reply| ShardMsg::Run {
                    clerk_id,
                    job: Job::Webhook {
                        event: Box::new(event),
                        reply,
                    },
                },
                None,
            )
            .await;
        match called {
            Ok(CallResult::Success(result)) => result,
            // The shard stopped (shutdown): the change was not acknowledged, so the sender will retry.
            Ok(_) | Err(_) => Err(WriteError::Unavailable),
        }
    }

    /// The fallback path: the stored user, or (when missing, or with [`FetchMode::Sync`]) Clerk's.
    pub async fn fetch(&self, clerk_id: String, mode: FetchMode) -> Result<Fetched, FallbackError> {
        fallback::fetch(&self.ctx, self.shard(&clerk_id), clerk_id, mode).await
    }

    /// Drops the cache entries of records changed elsewhere (another replica's commit, read from the feed).
    pub fn invalidate(&self, ids: impl IntoIterator<Item = String>) {
        let mut by_shard: Vec<Vec<String>> = vec![Vec::new(); self.shards.len()];
        for id in ids {
            let shard = (self.hasher.hash_one(id.as_str()) % self.shards.len() as u64) as usize;
            by_shard[shard].push(id);
        }
        for (shard, ids) in self.shards.iter().zip(by_shard) {
            if !ids.is_empty() {
                // Fails only once the shard has stopped (shutdown), when nothing is served any more.
                let _ = shard.send_message(ShardMsg::Invalidate { ids });
            }
        }
    }

    /// Whether every shard is still running (a stopped shard would leave its users' webhooks unanswered).
    pub fn running(&self) -> bool {
        self.shards
            .iter()
            .all(|s| matches!(s.get_status(), ractor::ActorStatus::Running))
    }

    /// Users with work running or queued.
    pub async fn live(&self) -> usize {
        let mut total = 0;
        for shard in self.shards.iter() {
            if let Ok(CallResult::Success(n)) = shard.call(ShardMsg::Lanes, None).await {
                total += n;
            }
        }
        total
    }

    /// Lets every lane finish its running and queued jobs (bounded by `timeout`), then stops the shards.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut drained = true;
        for shard in self.shards.iter() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            drained &= matches!(
                shard.call(ShardMsg::Drain, Some(left)).await,
                Ok(CallResult::Success(()))
            );
        }
        for shard in self.shards.iter() {
            shard.stop(Some("shutdown".into()));
        }
        drained
    }
}

#[cfg(test)]
mod tests;
