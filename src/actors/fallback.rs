//! The fallback path: get-or-create from Clerk, and on-demand re-sync.
//!
//! Clerk I/O never runs inside a user's actor, so a webhook for a user is applied at its usual speed while a
//! lookup of that user waits on a slow Clerk. Concurrent lookups of one user join one *flight*: a shared future
//! that calls Clerk (with its retries) once and hands every waiter the same outcome, success or failure. The
//! flight runs only while someone waits on it: when every caller has gone away it is dropped, and no further
//! Clerk call is made. Its result is written through the user's actor, under the same ordering guard and
//! tombstone rule as a webhook, so the newest state wins and only one row is ever inserted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, FutureExt, Shared, WeakShared};
use ractor::rpc::CallResult;
use ractor::ActorRef;

pub use super::error::FallbackError;
use super::job::{Job, Stored, UserArgs};
use super::shard::ShardMsg;
use crate::cache::UserJson;
use crate::clerk::ClerkError;
use crate::store::writer::WriteError;
use crate::store::{Change, Entity, Kind, Outcome, Source};

/// What a fallback request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FetchMode {
    /// Return the stored user, creating it from Clerk when missing.
    GetOrCreate,
    /// Fetch from Clerk now and apply under the ordering guard and tombstone rule.
    Sync,
}

/// A user returned by the fallback path, and where it came from.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub json: UserJson,
    pub hit: Hit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hit {
    Cache,
    Database,
    /// This request fetched the user from Clerk (and, unless `Created`, found the row already there).
    Clerk,
    /// This request inserted the row (of the requests sharing a flight, exactly one is told so).
    Created,
}

/// What a flight hands each of its waiters.
#[derive(Clone, Debug)]
pub struct FlightOutcome {
    json: UserJson,
    created: bool,
    /// Taken by the first waiter to see a creation, so one answer says "created".
    claimed: Arc<AtomicBool>,
}

type FlightHandle = Shared<BoxFuture<'static, Result<FlightOutcome, FallbackError>>>;
type WeakFlight = WeakShared<BoxFuture<'static, Result<FlightOutcome, FallbackError>>>;

/// The flights under way, by record and mode. A flight is listed from its first waiter until it ends; one that
/// every waiter abandoned is dropped (and forgotten the next time the list grows).
#[derive(Debug, Default)]
pub struct Flights {
    /// (record, mode) -> (flight id, flight). The lock is held only to look up or insert, never across an await.
    under_way: Mutex<HashMap<(String, FetchMode), (u64, WeakFlight)>>,
    next: std::sync::atomic::AtomicU64,
}

impl Flights {
    /// The flight for `clerk_id` under way, or a new one. Nothing runs until a waiter polls it.
    fn join(
        self: &Arc<Self>,
        ctx: &Arc<UserArgs>,
        shard: &ActorRef<ShardMsg>,
        clerk_id: String,
        mode: FetchMode,
    ) -> FlightHandle {
        let mut under_way = self.under_way.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (clerk_id, mode);
        if let Some(flight) = under_way.get(&key).and_then(|(_, weak)| weak.upgrade()) {
            return flight;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (ctx, shard, flights, clerk_id) = (ctx.clone(), shard.clone(), self.clone(), key.0.clone());
        let flight = async move {
            let result = fly(&ctx, &shard, &clerk_id, mode).await;
            flights.done(clerk_id, mode, id);
            result
        }
        .boxed()
        .shared();
        // A flight that was never polled cannot have completed, so it can always be downgraded.
        if let Some(weak) = flight.downgrade() {
            // Flights whose every waiter went away never report done; forget them here.
            if under_way.len() > 64 {
                under_way.retain(|_, (_, weak)| weak.upgrade().is_some());
            }
            under_way.insert(key, (id, weak));
        }
        flight
    }

    /// Flight `id` has finished: later requests start a new one.
    fn done(&self, clerk_id: String, mode: FetchMode, id: u64) {
        let mut under_way = self.under_way.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (clerk_id, mode);
        if under_way.get(&key).is_some_and(|(current, _)| *current == id) {
            under_way.remove(&key);
        }
    }
}

/// One Clerk call sequence and its write.
async fn fly(
    ctx: &UserArgs,
    shard: &ActorRef<ShardMsg>,
    clerk_id: &str,
    mode: FetchMode,
) -> Result<FlightOutcome, FallbackError> {
    let fetched = match Kind::of(clerk_id) {
        Some(Kind::Organization) => ctx
            .clerk
            .get_organization(clerk_id)
            .await
            .map(|o| Entity::Organization(o.into_data())),
        _ => ctx
            .clerk
            .get_user(clerk_id)
            .await
            .map(|u| Entity::User(u.into_user_data())),
    };
    let entity = match fetched {
        Err(ClerkError::NotFound) if mode == FetchMode::GetOrCreate => {
            // Clerk's answer may be older than a creation that committed while it was on its way (a webhook
            // here, another replica's write). The miss is remembered only by a read in the user's actor that still finds
            // no row: a creation committed before that read is served; one committed after it clears the
            // memory, since its invalidation comes after this job.
            return match run(shard, clerk_id, |reply| Job::ConfirmMissing { reply }).await?? {
                Stored::Found(json) => Ok(FlightOutcome {
                    json,
                    created: false,
                    claimed: Arc::new(AtomicBool::new(false)),
                }),
                Stored::Missing => Err(FallbackError::NotFound),
                // Clerk confirms what the prune inferred.
                Stored::Tombstoned | Stored::Pruned => Err(FallbackError::Gone),
            };
        }
        // A stored row stays readable until its delete arrives: a sync that Clerk answers 404 changes nothing.
        Err(ClerkError::NotFound) => return Err(FallbackError::NotFound),
        other => other?,
    };
    if entity.clerk_id() != clerk_id {
        return Err(FallbackError::ClerkFailed(format!(
            "asked for {clerk_id}, Clerk returned {}",
            entity.clerk_id()
        )));
    }
    let change = Box::new(Change::Upsert {
        entity,
        via: Source::Fallback,
        delivery: None,
    });
    let (outcome, stored) = run(shard, clerk_id, |reply| Job::Apply { change, reply }).await??;
    if outcome == Outcome::Created {
        tracing::info!(clerk_id, "not found in the database; created from Clerk (fallback)");
    }
    match stored {
        Stored::Found(json) => Ok(FlightOutcome {
            json,
            created: outcome == Outcome::Created,
            claimed: Arc::new(AtomicBool::new(false)),
        }),
        // Tombstoned (or still pruned: a deletion Clerk announced in between); or Missing, which only a
        // concurrent hard delete by another replica causes.
        Stored::Tombstoned | Stored::Pruned | Stored::Missing => Err(FallbackError::Gone),
    }
}

/// Runs a job in the actor of `clerk_id` and waits for its answer.
async fn run<T>(
    shard: &ActorRef<ShardMsg>,
    clerk_id: &str,
    job: impl FnOnce(ractor::RpcReplyPort<T>) -> Job,
) -> Result<T, FallbackError>
where
    T: Send + 'static,
{
    let called = shard
        .call(
            |reply| ShardMsg::Run {
                clerk_id: clerk_id.to_owned(),
                job: job(reply),
            },
            None,
        )
        .await;
    match called {
        Ok(CallResult::Success(answer)) => Ok(answer),
        // The shard stopped (shutdown).
        Ok(_) | Err(_) => Err(FallbackError::Store(WriteError::Unavailable)),
    }
}

/// The fallback for one request.
pub(super) async fn fetch(
    ctx: &Arc<UserArgs>,
    flights: &Arc<Flights>,
    shard: &ActorRef<ShardMsg>,
    clerk_id: String,
    mode: FetchMode,
) -> Result<Fetched, FallbackError> {
    if mode == FetchMode::GetOrCreate {
        if let Some(json) = ctx.cache.get(&clerk_id).await {
            return Ok(Fetched { json, hit: Hit::Cache });
        }
    }
    // Both modes: a deleted user is gone, whatever Clerk says now (it answers 404 after a delete). A pruned one is
    // asked about once more (then remembered as gone for a while, like a missing one).
    match run(shard, &clerk_id, |reply| Job::Load { reply }).await?? {
        Stored::Tombstoned => return Err(FallbackError::Gone),
        Stored::Pruned if ctx.cache.known_absent(&clerk_id).await.is_some() => return Err(FallbackError::Gone),
        Stored::Found(json) if mode == FetchMode::GetOrCreate => {
            return Ok(Fetched {
                json,
                hit: Hit::Database,
            })
        }
        Stored::Missing if mode == FetchMode::GetOrCreate && ctx.cache.known_absent(&clerk_id).await.is_some() => {
            return Err(FallbackError::NotFound)
        }
        Stored::Found(_) | Stored::Missing | Stored::Pruned => {}
    }
    let outcome = flights.join(ctx, shard, clerk_id, mode).await?;
    let first = outcome.created && !outcome.claimed.swap(true, Ordering::AcqRel);
    Ok(Fetched {
        json: outcome.json,
        hit: if first { Hit::Created } else { Hit::Clerk },
    })
}
