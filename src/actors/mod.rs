//! One ractor actor per Clerk id: every write for a record goes through that id's own actor, so two deliveries
//! for the same record never race while different records proceed in parallel.
//!
//! A user's actor (`user`) lives only while its id has work: a few [`Shard`] supervisors, chosen by a hash of
//! the id, spawn it as their child on the id's first job and retire it when it has run everything it was sent.
//! It costs about 8 KiB while alive and nothing once retired (mimalloc gives the memory back, see the README);
//! spawning and retiring it costs a few microseconds per job. A panic in one user's job fails that actor alone
//! and reaches its shard as a supervision event.
//!
//! Clerk I/O never runs in a user's actor: a fallback fetch is a shared "flight" that waiters join (one Clerk
//! call sequence for all of them), and only its write goes through the actor, like a webhook's. The [`Actors`]
//! handle is what HTTP handlers use.

mod error;
mod fallback;
mod job;
mod shard;
mod user;

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;

use fallback::Flights;
pub use fallback::{FallbackError, FetchMode, Fetched, Hit};
pub use job::{Job, UserArgs};
pub use shard::{Shard, ShardMsg};

use crate::store::writer::WriteError;
use crate::store::Outcome;
use crate::webhook::VerifiedEvent;

/// A cloneable handle to the shards.
#[derive(Clone, Debug)]
pub struct Actors {
    ctx: Arc<UserArgs>,
    shards: Arc<[ActorRef<ShardMsg>]>,
    flights: Arc<Flights>,
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
            flights: Default::default(),
            hasher: Default::default(),
        };
        Ok((actors, all))
    }

    fn shard(&self, clerk_id: &str) -> &ActorRef<ShardMsg> {
        &self.shards[(self.hasher.hash_one(clerk_id) % self.shards.len() as u64) as usize]
    }

    /// Hands a verified event to its record's actor and waits for the committed outcome.
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
        fallback::fetch(&self.ctx, &self.flights, self.shard(&clerk_id), clerk_id, mode).await
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

    /// Lets every user's actor finish its running and queued jobs (bounded by `timeout`), then stops the shards
    /// (and with them any actor still alive).
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
