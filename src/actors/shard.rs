//! A shard actor: owns the serial lanes of the users hashed to it, and their fallback flights.
//!
//! Its handler never awaits I/O: it only starts jobs (each on its own task) and queues the ones whose user is
//! busy, so one slow user cannot hold up the others.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::Instrument;

use super::fallback::{Flight, FlightHandle, WeakFlight};
use super::lane::Job;
use super::{FetchMode, UserArgs};

pub struct Shard;

pub enum ShardMsg {
    /// Run `job` in the lane of `clerk_id`, after the jobs already there.
    Run { clerk_id: String, job: Job },
    /// The running job of `clerk_id` has finished.
    Done { clerk_id: String },
    /// Join the fallback flight for `clerk_id` (starting one if none is under way).
    Flight {
        clerk_id: String,
        mode: FetchMode,
        reply: RpcReplyPort<FlightHandle>,
    },
    /// Flight `id` has finished: later requests start a new one.
    FlightDone { clerk_id: String, mode: FetchMode, id: u64 },
    /// Another replica (or backfill) changed these records: drop their cache entries, in their lanes when
    /// they have work running, so a read already under way cannot put the old row back afterwards.
    Invalidate { ids: Vec<String> },
    /// Users with work running or queued.
    Lanes(RpcReplyPort<usize>),
    /// Answer once every lane is empty (shutdown).
    Drain(RpcReplyPort<()>),
}

/// A lane: the jobs waiting behind the one running. Present in the map only while a job runs.
type Lane = VecDeque<(Job, tracing::Span)>;

pub struct ShardState {
    ctx: Arc<UserArgs>,
    lanes: HashMap<String, Lane>,
    flights: HashMap<(String, FetchMode), (u64, WeakFlight)>,
    next_flight: u64,
    drained: Vec<RpcReplyPort<()>>,
    live: metrics::Gauge,
}

impl Shard {
    /// Runs `job` on its own task; the task reports `Done` so the lane's next job can start.
    fn start(myself: &ActorRef<ShardMsg>, ctx: &Arc<UserArgs>, clerk_id: String, job: Job, span: tracing::Span) {
        let (myself, ctx) = (myself.clone(), ctx.clone());
        tokio::spawn(
            async move {
                job.run(&ctx, &clerk_id).await;
                // Fails only once the shard has stopped, when no lane is waiting any more.
                let _ = myself.send_message(ShardMsg::Done { clerk_id });
            }
            .instrument(span),
        );
    }
}

/// Most queued webhooks of one user handed to the writer together.
const MAX_GROUP: usize = 64;

/// The lane's next job; consecutive queued webhooks become one job, committed together in order.
fn next_job(lane: &mut Lane) -> Option<(Job, tracing::Span)> {
    let (first, span) = lane.pop_front()?;
    let Job::Webhook { event, reply } = first else {
        return Some((first, span));
    };
    let mut group = vec![(event, reply)];
    while group.len() < MAX_GROUP && matches!(lane.front(), Some((Job::Webhook { .. }, _))) {
        if let Some((Job::Webhook { event, reply }, _)) = lane.pop_front() {
            group.push((event, reply));
        }
    }
    let job = match group.len() {
        1 => {
            let (event, reply) = group.remove(0);
            Job::Webhook { event, reply }
        }
        _ => Job::Webhooks(group),
    };
    Some((job, span))
}

impl Actor for Shard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = Arc<UserArgs>;

    async fn pre_start(&self, _: ActorRef<ShardMsg>, ctx: Arc<UserArgs>) -> Result<ShardState, ActorProcessingErr> {
        Ok(ShardState {
            ctx,
            lanes: HashMap::new(),
            flights: HashMap::new(),
            next_flight: 0,
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
            ShardMsg::Run { clerk_id, job } => {
                // ractor carries the sender's span into this handler; the job's task continues it.
                let span = tracing::Span::current();
                match state.lanes.entry(clerk_id) {
                    Entry::Occupied(mut lane) => lane.get_mut().push_back((job, span)),
                    Entry::Vacant(lane) => {
                        let clerk_id = lane.key().clone();
                        lane.insert(VecDeque::new());
                        state.live.increment(1.0);
                        Self::start(&myself, &state.ctx, clerk_id, job, span);
                    }
                }
            }
            ShardMsg::Done { clerk_id } => {
                let next = state.lanes.get_mut(&clerk_id).and_then(next_job);
                match next {
                    Some((job, span)) => Self::start(&myself, &state.ctx, clerk_id, job, span),
                    None => {
                        if state.lanes.remove(&clerk_id).is_some() {
                            state.live.decrement(1.0);
                        }
                        // A burst can leave a large, mostly empty table behind; give the memory back.
                        if state.lanes.capacity() > 1024 && state.lanes.len() < state.lanes.capacity() / 8 {
                            state.lanes.shrink_to_fit();
                        }
                        if state.lanes.is_empty() {
                            for waiter in state.drained.drain(..) {
                                let _ = waiter.send(());
                            }
                        }
                    }
                }
            }
            ShardMsg::Flight { clerk_id, mode, reply } => {
                let key = (clerk_id, mode);
                let joined = state.flights.get(&key).and_then(|(_, weak)| weak.upgrade());
                let flight = match joined {
                    Some(flight) => flight,
                    None => {
                        state.next_flight += 1;
                        let id = state.next_flight;
                        let (flight, weak) = Flight::start(state.ctx.clone(), myself.clone(), key.0.clone(), mode, id);
                        state.flights.insert(key, (id, weak));
                        flight
                    }
                };
                let _ = reply.send(flight);
            }
            ShardMsg::FlightDone { clerk_id, mode, id } => {
                let key = (clerk_id, mode);
                if state.flights.get(&key).is_some_and(|(current, _)| *current == id) {
                    state.flights.remove(&key);
                }
                // Flights whose every waiter went away never report done; forget them here.
                if state.flights.len() > 64 {
                    state.flights.retain(|_, (_, weak)| weak.upgrade().is_some());
                }
            }
            ShardMsg::Invalidate { ids } => {
                for id in ids {
                    match state.lanes.get_mut(&id) {
                        // Behind the running job: a read that started before the commit puts its row, then
                        // this removes it.
                        Some(lane) => lane.push_back((Job::Invalidate, tracing::Span::current())),
                        // No job runs, so no read is under way: any later read sees the commit.
                        None => state.ctx.cache.invalidate_if_present(&id).await,
                    }
                }
            }
            ShardMsg::Lanes(reply) => {
                let _ = reply.send(state.lanes.len());
            }
            ShardMsg::Drain(reply) => {
                if state.lanes.is_empty() {
                    let _ = reply.send(());
                } else {
                    state.drained.push(reply);
                }
            }
        }
        Ok(())
    }
}
