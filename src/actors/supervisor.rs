//! Spawns user actors on demand, routes messages to them and retires idle ones.

use std::collections::HashMap;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::user::{UserActor, UserActorArgs};
use super::{UserArgs, UserMsg};

pub struct Supervisor;

pub enum SupervisorMsg {
    /// Route `msg` to the actor of `clerk_id`, spawning it if needed.
    Dispatch {
        clerk_id: String,
        msg: UserMsg,
    },
    /// An actor has been idle; retire it if it has handled everything forwarded to it.
    Idle {
        clerk_id: String,
        actor: ActorId,
        handled: u64,
    },
    LiveActors(RpcReplyPort<usize>),
}

struct Child {
    actor: ActorRef<UserMsg>,
    forwarded: u64,
}

pub struct SupervisorState {
    args: UserArgs,
    children: HashMap<String, Child>,
    /// Reverse index for supervision events, which name only the actor.
    by_actor: HashMap<ActorId, String>,
}

impl SupervisorState {
    fn forget(&mut self, actor: ActorId) -> Option<Child> {
        let clerk_id = self.by_actor.remove(&actor)?;
        let child = match self.children.get(&clerk_id) {
            Some(c) if c.actor.get_id() == actor => self.children.remove(&clerk_id),
            _ => None,
        };
        self.report();
        child
    }

    fn report(&self) {
        metrics::gauge!(crate::telemetry::metrics::USER_ACTORS).set(self.children.len() as f64);
    }
}

impl Supervisor {
    async fn spawn_child(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        clerk_id: &str,
    ) -> Result<ActorRef<UserMsg>, ActorProcessingErr> {
        let args = UserActorArgs {
            clerk_id: clerk_id.to_owned(),
            supervisor: myself.clone(),
            common: state.args.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, UserActor, args, myself.get_cell()).await?;
        state.by_actor.insert(actor.get_id(), clerk_id.to_owned());
        state.children.insert(
            clerk_id.to_owned(),
            Child {
                actor: actor.clone(),
                forwarded: 0,
            },
        );
        state.report();
        Ok(actor)
    }

    async fn dispatch(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        clerk_id: String,
        msg: UserMsg,
    ) -> Result<(), ActorProcessingErr> {
        let actor = match state.children.get(&clerk_id) {
            Some(child) => child.actor.clone(),
            None => Self::spawn_child(myself, state, &clerk_id).await?,
        };
        let msg = match actor.send_message(msg) {
            Ok(()) => None,
            // The child stopped between our bookkeeping and this send: start a fresh one and re-send.
            Err(ractor::MessagingErr::SendErr(msg)) => Some(msg),
            Err(_) => return Ok(()),
        };
        let actor = match msg {
            None => actor,
            Some(msg) => {
                let fresh = Self::spawn_child(myself, state, &clerk_id).await?;
                if let Err(e) = fresh.send_message(msg) {
                    tracing::error!(clerk_id, error = %e, "could not deliver to a fresh user actor");
                }
                fresh
            }
        };
        if let Some(child) = state.children.get_mut(&clerk_id) {
            if child.actor.get_id() == actor.get_id() {
                child.forwarded += 1;
            }
        }
        Ok(())
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = UserArgs;

    async fn pre_start(
        &self,
        _: ActorRef<SupervisorMsg>,
        args: UserArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            args,
            children: HashMap::new(),
            by_actor: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Dispatch { clerk_id, msg } => {
                // A failed spawn drops `msg` and its reply port: the caller sees "unavailable", never a hang,
                // and the supervisor keeps running.
                if let Err(e) = Self::dispatch(&myself, state, clerk_id, msg).await {
                    tracing::error!(error = %e, "could not spawn a user actor");
                }
            }
            SupervisorMsg::Idle {
                clerk_id,
                actor,
                handled,
            } => {
                let retire = state
                    .children
                    .get(&clerk_id)
                    .is_some_and(|c| c.actor.get_id() == actor && c.forwarded == handled);
                if let Some(child) = retire.then(|| state.forget(actor)).flatten() {
                    // Nothing is queued (forwarded == handled, and we forward nothing else meanwhile).
                    child.actor.stop(Some("idle".into()));
                }
            }
            SupervisorMsg::LiveActors(reply) => {
                let _ = reply.send(state.children.len());
            }
        }
        Ok(())
    }

    /// A child's stop or failure never stops the supervisor (the default would); it only forgets the child.
    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            SupervisionEvent::ActorFailed(cell, e) => (cell, Some(e)),
            _ => return Ok(()),
        };
        if let Some(e) = failure {
            tracing::error!(actor = %cell.get_id(), error = %e, "user actor failed; the next message starts a new one");
        }
        state.forget(cell.get_id());
        Ok(())
    }

    /// On shutdown, let every child finish what is queued before the supervisor reports stopped.
    async fn post_stop(
        &self,
        _: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.by_actor.clear();
        for (_, child) in state.children.drain() {
            let _ = child.actor.drain_and_wait(None).await;
        }
        Ok(())
    }
}
