//! One actor per Clerk user id: every write for a user goes through its actor, so two deliveries for the same
//! user never race while different users proceed in parallel. The [`Actors`] handle is what HTTP handlers use.

mod fallback;
mod supervisor;
mod user;

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;

pub use fallback::{FallbackError, FetchMode, Fetched, Hit};
pub use supervisor::{Supervisor, SupervisorMsg};
pub use user::UserMsg;

use crate::cache::UserCache;
use crate::clerk::ClerkClient;
use crate::store::writer::{WriteError, Writer};
use crate::store::{Db, Outcome};
use crate::webhook::VerifiedEvent;

/// What every user actor needs, handed over by the supervisor when it spawns one.
#[derive(Clone, Debug)]
pub struct UserArgs {
    pub db: Arc<Db>,
    pub writer: Writer,
    pub cache: UserCache,
    /// Without `CLERK_SECRET_KEY` its calls fail with `NotConfigured`: the fallback then answers 503.
    pub clerk: Arc<ClerkClient>,
    pub idle_timeout: Duration,
    pub hard_delete: bool,
}

/// A cloneable handle to the supervisor.
#[derive(Clone, Debug)]
pub struct Actors {
    supervisor: ActorRef<SupervisorMsg>,
}

impl Actors {
    /// Spawns the supervisor (unnamed: the global registry is process-wide and tests run many daemons).
    pub async fn start(args: UserArgs) -> Result<(Actors, JoinHandle<()>), ractor::SpawnErr> {
        let (supervisor, handle) = Actor::spawn(None, Supervisor, args).await?;
        Ok((Actors { supervisor }, handle))
    }

    /// Hands a verified user event to that user's actor and waits for the committed outcome.
    pub async fn apply_webhook(&self, clerk_id: String, event: VerifiedEvent) -> Result<Outcome, WriteError> {
        let called = self
            .supervisor
            .call(
                |reply| SupervisorMsg::Dispatch {
                    clerk_id,
                    msg: UserMsg::Webhook {
                        event: Box::new(event),
                        reply,
                    },
                },
                None,
            )
            .await;
        match called {
            Ok(CallResult::Success(result)) => result,
            // The supervisor or the actor stopped (shutdown, or a crash already logged): the change was not
            // acknowledged, so the sender will retry.
            Ok(_) | Err(_) => Err(WriteError::Unavailable),
        }
    }

    /// Runs the fallback path for `clerk_id` in its actor.
    pub async fn fetch(&self, clerk_id: String, mode: FetchMode) -> Result<Fetched, FallbackError> {
        let called = self
            .supervisor
            .call(
                |reply| SupervisorMsg::Dispatch {
                    clerk_id,
                    msg: UserMsg::Fetch { mode, reply },
                },
                None,
            )
            .await;
        match called {
            Ok(CallResult::Success(result)) => result,
            Ok(_) | Err(_) => Err(FallbackError::Store(WriteError::Unavailable)),
        }
    }

    /// Number of live user actors.
    pub async fn live(&self) -> usize {
        match self.supervisor.call(SupervisorMsg::LiveActors, None).await {
            Ok(CallResult::Success(n)) => n,
            _ => 0,
        }
    }

    /// Lets every actor finish its queued work, then stops them and the supervisor.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.supervisor.drain_and_wait(Some(timeout)).await.is_ok()
    }
}

#[cfg(test)]
mod tests;
