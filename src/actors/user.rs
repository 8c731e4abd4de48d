//! One user's actor: a ractor actor per Clerk id, alive while that id has work, a child of its shard.
//!
//! It runs the id's jobs one at a time, in arrival order, awaiting each (so two writes for one record never
//! race), and hands consecutive queued webhooks to the writer as one group. When it has nothing left it tells
//! its shard how many jobs it has received; the shard retires it only if that is every job it sent (otherwise
//! one is already in the mailbox), removing it from its map before stopping it, so no job can reach a stopping
//! actor. A panic in a job fails this actor alone: its shard hears of it as a supervision event.

use std::collections::VecDeque;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef};

use super::job::{next_job, Job, UserArgs};

pub struct UserActor;

pub enum UserMsg {
    /// Queue a job behind the ones already here.
    Run(Job),
    /// Run what is queued (sent to itself, so jobs that arrived meanwhile are queued first and can be grouped).
    Flush,
}

/// "Nothing left to do after `received` jobs": what a user's actor tells its shard.
pub struct Idle {
    pub clerk_id: Arc<str>,
    pub received: u64,
}

pub struct UserInit {
    pub clerk_id: Arc<str>,
    pub ctx: Arc<UserArgs>,
    pub shard: DerivedActorRef<Idle>,
}

pub struct UserState {
    init: UserInit,
    queue: VecDeque<Job>,
    received: u64,
    flush_sent: bool,
}

impl Actor for UserActor {
    type Msg = UserMsg;
    type State = UserState;
    type Arguments = UserInit;

    async fn pre_start(&self, _: ActorRef<UserMsg>, init: UserInit) -> Result<UserState, ActorProcessingErr> {
        Ok(UserState {
            init,
            queue: VecDeque::new(),
            received: 0,
            flush_sent: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<UserMsg>,
        msg: UserMsg,
        state: &mut UserState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            UserMsg::Run(job) => {
                state.received += 1;
                state.queue.push_back(job);
                if !state.flush_sent {
                    state.flush_sent = true;
                    myself.send_message(UserMsg::Flush)?;
                }
            }
            UserMsg::Flush => {
                state.flush_sent = false;
                let ctx = &state.init.ctx;
                while let Some(job) = next_job(&mut state.queue) {
                    job.run(ctx, &state.init.clerk_id).await;
                }
                // Fails only once the shard has stopped (shutdown), which stops this actor too.
                let _ = state.init.shard.send_message(Idle {
                    clerk_id: state.init.clerk_id.clone(),
                    received: state.received,
                });
            }
        }
        Ok(())
    }
}
