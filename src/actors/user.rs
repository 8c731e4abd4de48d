//! The actor that owns one Clerk user id.

use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::fallback::{self, FallbackError, FetchMode, Fetched};
use super::{SupervisorMsg, UserArgs};
use crate::store::writer::WriteError;
use crate::store::Outcome;
use crate::webhook::VerifiedEvent;

pub struct UserActor;

pub enum UserMsg {
    /// Apply a verified webhook event; the reply carries the committed outcome.
    Webhook {
        event: Box<VerifiedEvent>,
        reply: RpcReplyPort<Result<Outcome, WriteError>>,
    },
    /// Fallback: get-or-create from Clerk, or re-sync from Clerk.
    Fetch {
        mode: FetchMode,
        reply: RpcReplyPort<Result<Fetched, FallbackError>>,
    },
    /// Timer: stop if nothing happened for the idle timeout.
    IdleCheck,
}

pub struct UserState {
    pub(super) clerk_id: String,
    supervisor: ActorRef<SupervisorMsg>,
    pub(super) common: UserArgs,
    last_active: Instant,
    /// Messages handled, compared by the supervisor with the messages it forwarded before it retires us.
    handled: u64,
}

pub struct UserActorArgs {
    pub clerk_id: String,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub common: UserArgs,
}

impl Actor for UserActor {
    type Msg = UserMsg;
    type State = UserState;
    type Arguments = UserActorArgs;

    async fn pre_start(&self, myself: ActorRef<UserMsg>, args: UserActorArgs) -> Result<UserState, ActorProcessingErr> {
        // One pending timer per actor: re-armed from IdleCheck, never per message.
        myself.send_after(args.common.idle_timeout, || UserMsg::IdleCheck);
        Ok(UserState {
            clerk_id: args.clerk_id,
            supervisor: args.supervisor,
            common: args.common,
            last_active: Instant::now(),
            handled: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<UserMsg>,
        msg: UserMsg,
        state: &mut UserState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            UserMsg::Webhook { event, reply } => {
                // The writer answers after commit; only then may the next message for this user start.
                let outcome = state
                    .common
                    .writer
                    .submit((*event).into_change(state.common.hard_delete))
                    .await;
                if matches!(outcome, Ok(Outcome::Created | Outcome::Updated | Outcome::Deleted)) {
                    // The next read goes through this actor to the database, after this commit.
                    state.common.cache.invalidate(&state.clerk_id).await;
                }
                // The caller may have gone away (client disconnect); the change is committed either way.
                let _ = reply.send(outcome);
                state.handled += 1;
                state.last_active = Instant::now();
            }
            UserMsg::Fetch { mode, reply } => {
                let _ = reply.send(fallback::fetch(state, mode).await);
                state.handled += 1;
                state.last_active = Instant::now();
            }
            UserMsg::IdleCheck => {
                let idle = state.last_active.elapsed();
                let timeout = state.common.idle_timeout;
                if idle >= timeout {
                    // The supervisor decides: it may have forwarded a message we have not seen yet.
                    let _ = state.supervisor.send_message(SupervisorMsg::Idle {
                        clerk_id: state.clerk_id.clone(),
                        actor: myself.get_id(),
                        handled: state.handled,
                    });
                    myself.send_after(timeout, || UserMsg::IdleCheck);
                } else {
                    myself.send_after(timeout - idle, || UserMsg::IdleCheck);
                }
            }
        }
        Ok(())
    }
}
