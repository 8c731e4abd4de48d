//! A shard: the supervisor of the user actors hashed to it.
//!
//! It spawns a user's actor on the user's first job, forwards the user's later jobs to it, and retires it when
//! it reports that it has run every job sent (see `user`). Its handler never awaits I/O (spawning a user's
//! actor runs only its trivial `pre_start`), so one slow user cannot hold up the others.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::job::{Job, UserArgs};
use super::user::{Idle, UserActor, UserInit, UserMsg};

pub struct Shard;

pub enum ShardMsg {
    /// Run `job` in the actor of `clerk_id`, after the jobs already there.
    Run { clerk_id: String, job: Job },
    /// The actor of `clerk_id` has run everything it received.
    Idle(Idle),
    /// Another replica (or backfill) changed these records: drop their cache entries, in their actors when they
    /// have work, so a read already under way cannot put the old row back afterwards.
    Invalidate { ids: Vec<String> },
    /// Users with a live actor (work running or queued).
    Lanes(RpcReplyPort<usize>),
    /// Answer once every user's actor has retired (shutdown).
    Drain(RpcReplyPort<()>),
}

impl From<Idle> for ShardMsg {
    fn from(idle: Idle) -> Self {
        ShardMsg::Idle(idle)
    }
}

impl TryFrom<ShardMsg> for Idle {
    type Error = ();
    fn try_from(msg: ShardMsg) -> Result<Self, ()> {
        match msg {
            ShardMsg::Idle(idle) => Ok(idle),
            _ => Err(()),
        }
    }
}

/// A live user's actor and how many jobs it has been sent.
struct Live {
    actor: ActorRef<UserMsg>,
    sent: u64,
}

pub struct ShardState {
    ctx: Arc<UserArgs>,
    users: HashMap<Arc<str>, Live>,
    drained: Vec<RpcReplyPort<()>>,
    live: metrics::Gauge,
}

impl ShardState {
    /// Takes `clerk_id`'s actor out of the map.
    fn retire(&mut self, clerk_id: &str) -> Option<Live> {
        let live = self.users.remove(clerk_id);
        if live.is_some() {
            self.live.decrement(1.0);
        }
        // A burst can leave a large, mostly empty table behind; give the memory back.
        if self.users.capacity() > 1024 && self.users.len() < self.users.capacity() / 8 {
            self.users.shrink_to_fit();
        }
        if self.users.is_empty() {
            for waiter in self.drained.drain(..) {
                let _ = waiter.send(());
            }
        }
        live
    }
}

impl Shard {
    /// Sends `job` to the actor of `clerk_id`, spawning it (as this shard's child) if the user has none.
    async fn run(myself: &ActorRef<ShardMsg>, state: &mut ShardState, clerk_id: String, job: Job) {
        let job = match state.users.get_mut(clerk_id.as_str()) {
            None => job,
            Some(live) => match live.actor.send_message(UserMsg::Run(job)) {
                Ok(()) => {
                    live.sent += 1;
                    return;
                }
                // The actor failed (its supervision event is on the way): a new one takes the job.
                Err(ractor::MessagingErr::SendErr(UserMsg::Run(job))) => {
                    state.retire(&clerk_id);
                    job
                }
                Err(_) => return,
            },
        };
        let clerk_id: Arc<str> = clerk_id.into();
        let init = UserInit {
            clerk_id: clerk_id.clone(),
            ctx: state.ctx.clone(),
            shard: myself.get_derived(),
        };
        // Fails only if this shard is stopping: the job's reply port is dropped, and its caller answers 503.
        let Ok((actor, _)) = Actor::spawn_linked(None, UserActor, init, myself.get_cell()).await else {
            return;
        };
        if actor.send_message(UserMsg::Run(job)).is_ok() {
            state.users.insert(clerk_id, Live { actor, sent: 1 });
            state.live.increment(1.0);
        }
    }
}

impl Actor for Shard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = Arc<UserArgs>;

    async fn pre_start(&self, _: ActorRef<ShardMsg>, ctx: Arc<UserArgs>) -> Result<ShardState, ActorProcessingErr> {
        Ok(ShardState {
            ctx,
            users: HashMap::new(),
            drained: Vec::new(),
            live: metrics::gauge!(crate::telemetry::metrics::USER_ACTORS),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Run { clerk_id, job } => Self::run(&myself, state, clerk_id, job).await,
            ShardMsg::Idle(Idle { clerk_id, received }) => {
                // Fewer received than sent: a job is in its mailbox, and it will report again.
                if state.users.get(&clerk_id).is_some_and(|live| live.sent == received) {
                    // Out of the map first: from here on a job for this user spawns a new actor.
                    if let Some(live) = state.retire(&clerk_id) {
                        live.actor.stop(None);
                    }
                }
            }
            ShardMsg::Invalidate { ids } => {
                for id in ids {
                    match state.users.get_mut(id.as_str()) {
                        // Behind the running job: a read that started before the commit puts its row, then this
                        // removes it.
                        Some(live) if live.actor.send_message(UserMsg::Run(Job::Invalidate)).is_ok() => live.sent += 1,
                        // No job runs, so no read is under way: any later read sees the commit.
                        _ => state.ctx.cache.invalidate_if_present(&id).await,
                    }
                }
            }
            ShardMsg::Lanes(reply) => {
                let _ = reply.send(state.users.len());
            }
            ShardMsg::Drain(reply) => {
                if state.users.is_empty() {
                    let _ = reply.send(());
                } else {
                    state.drained.push(reply);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<ShardMsg>,
        event: SupervisionEvent,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        // A retired actor's termination needs nothing: it left the map before it was stopped.
        if let SupervisionEvent::ActorFailed(cell, error) = event {
            // Its jobs' reply ports are dropped with it: their callers answer 503, and Clerk retries.
            let failed = state
                .users
                .iter()
                .find(|(_, live)| live.actor.get_id() == cell.get_id())
                .map(|(id, _)| id.clone());
            tracing::error!(clerk_id = failed.as_deref(), %error, "a user's actor failed; its queued jobs were answered 503");
            metrics::counter!(crate::telemetry::metrics::USER_ACTOR_FAILURES).increment(1);
            if let Some(id) = failed {
                state.retire(&id);
            }
        }
        Ok(())
    }
}
