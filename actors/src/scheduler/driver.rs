//! The scheduler's mailbox: each [`SchedulerMsg`] becomes a call on the
//! pure core ([`Core`]), whose effects are executed here in the order it
//! hands them over (messages to links, replies, published updates, timers,
//! metrics). Between messages the durability waiter watches the mark the
//! core names and reports it with [`SchedulerMsg::Durable`]; at the commit
//! batch limit the driver waits for the flush in line.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ffrtmp_os::store::{Store, StoreError};
use ffrtmp_runtime::scheduler::{
    self as core, CancelReply, Clock, Core, Effect, Hello, LinkId, Metric, RetryReply, Ticket,
    Timer,
};
use ffrtmp_runtime::supervision::RestartIntensity;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::{
    submit, Durable, SchedulerActor, SchedulerArgs, SchedulerMsg, ADMIN_MAX_RESTARTS,
    ADMIN_RESTART_WINDOW,
};
use crate::events::{JobEvents, JobUpdates, UpdateKind};
use crate::metrics as m;
use crate::node_link::{NodeLink, NodeLinkArgs, NodeLinkMsg};
use crate::supervised::{ServingChild, ServingChildRef};
use crate::{mono_ms, now_ms};

/// A worker link the core knows by its [`LinkId`].
pub(super) struct LinkSlot {
    pub(super) link: ActorRef<NodeLinkMsg>,
    /// When the link last heard from the node ([`mono_ms`]).
    pub(super) last_heard: Arc<AtomicU64>,
}

/// The scheduler's state (private; public only because ractor's `Actor`
/// trait names it).
pub struct SchedulerState {
    pub(super) core: Core<Store>,
    /// The same store, for the waiter and the submissions off the actor.
    pub(super) store: Store,
    pub(super) events: JobEvents,
    pub(super) links: HashMap<LinkId, LinkSlot>,
    pub(super) by_actor: HashMap<ActorId, LinkId>,
    next_id: u64,
    cancel_ports: HashMap<Ticket, RpcReplyPort<CancelReply>>,
    retry_ports: HashMap<Ticket, RpcReplyPort<RetryReply>>,
    pub(super) admin_args: Option<Arc<dyn ServingChild<SchedulerMsg>>>,
    pub(super) admin: Option<ServingChildRef>,
    pub(super) admin_restarts: RestartIntensity,
}

impl Drop for SchedulerState {
    fn drop(&mut self) {
        // ractor does not stop children with their supervisor; this covers a
        // scheduler that panicked (post_stop handles the orderly stop).
        if let Some(a) = &self.admin {
            a.cell.stop(Some("scheduler stopped".into()));
        }
        for l in self.links.values() {
            l.link.stop(Some("scheduler stopped".into()));
        }
    }
}

/// The clocks, read once per event.
pub(super) fn clock() -> Clock {
    Clock {
        now_ms: now_ms(),
        mono_ms: mono_ms(),
    }
}

/// A core error as an actor error (the store's, kept for the
/// storage-full check).
fn err(e: StoreError) -> ActorProcessingErr {
    Box::new(e)
}

fn metric(mt: Metric) {
    match mt {
        Metric::Finished(st) => m::job_finished(st),
        Metric::WallSeconds(s) => metrics::histogram!(m::JOB_WALL_SECONDS).record(s),
        Metric::Retried(reason) => {
            metrics::counter!(m::JOBS_RETRIED, "reason" => reason).increment(1)
        }
        Metric::Energy {
            scenario,
            codec,
            energy,
        } => m::job_energy(scenario.as_deref(), codec, &energy),
        Metric::NodePower(node, p) => m::node_power(&node, &p),
        Metric::Gauges { depth, running } => {
            m::queue_depth(&depth);
            metrics::gauge!(m::JOBS_RUNNING).set(running as f64);
        }
    }
}

impl SchedulerState {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Execute what the core handed over, in order.
    pub(super) fn run_effects(&mut self, myself: &ActorRef<SchedulerMsg>) {
        for effect in self.core.take_effects() {
            match effect {
                Effect::Send { link, msg } => {
                    let sent = self
                        .links
                        .get(&link)
                        .is_some_and(|l| l.link.cast(NodeLinkMsg::Outbound(msg)).is_ok());
                    if !sent {
                        tracing::debug!("link gone before a held message could go");
                    }
                }
                Effect::Publish(kind, job) => {
                    let kind = match kind {
                        core::UpdateKind::State => UpdateKind::State,
                        core::UpdateKind::Progress => UpdateKind::Progress,
                    };
                    self.events.publish(kind, &job);
                }
                Effect::CancelReply(ticket, reply) => {
                    if let Some(port) = self.cancel_ports.remove(&ticket) {
                        let _ = port.send(reply);
                    }
                }
                Effect::RetryReply(ticket, reply) => {
                    if let Some(port) = self.retry_ports.remove(&ticket) {
                        let _ = port.send(reply);
                    }
                }
                Effect::StopLink(link, why) => {
                    if let Some(l) = self.links.get(&link) {
                        l.link.stop(Some(why));
                    }
                }
                Effect::RequestFlush => self.store.request_flush(),
                Effect::Metric(mt) => metric(mt),
                Effect::Timer(Timer::Wake, ms) => {
                    myself.send_after(Duration::from_millis(ms), || SchedulerMsg::Wake);
                }
                Effect::Timer(Timer::Fence, ms) => {
                    myself.send_after(Duration::from_millis(ms), || SchedulerMsg::Fence);
                }
            }
        }
    }

    /// After a core call: execute its effects, and while the commit batch
    /// is full, wait for the flush in line and let the core go on. Then
    /// the call's own result.
    pub(super) async fn settle(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        r: Result<(), StoreError>,
    ) -> Result<(), ActorProcessingErr> {
        self.run_effects(myself);
        let mut r = r.map_err(err);
        while let Some(mark) = self.core.take_commit_due() {
            self.store.wait_mark(mark).await?;
            self.core.durable(mark);
            self.run_effects(myself);
            if r.is_ok() {
                r = self.core.resume(clock()).map_err(err);
                self.run_effects(myself);
            }
        }
        r
    }

    /// Wait until every write made so far is durable, then release every
    /// held effect.
    async fn commit(&mut self, myself: &ActorRef<SchedulerMsg>) -> Result<(), StoreError> {
        let mark = self.core.commit_mark();
        self.store.wait_mark(mark).await?;
        self.core.durable(mark);
        self.run_effects(myself);
        Ok(())
    }

    /// After a message: if effects are held and no waiter runs, start one
    /// for the latest write. It tells the scheduler when the flush covering
    /// that write is done ([`SchedulerMsg::Durable`]); writes made
    /// meanwhile wait for the next waiter, and share its flush.
    fn watch_durability(&mut self, myself: &ActorRef<SchedulerMsg>) {
        let Some(mark) = self.core.start_waiter() else {
            return;
        };
        let store = self.store.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let result = store.wait_mark(mark).await.map_err(|e| e.to_string());
            // A scheduler that stopped meanwhile drops its held effects.
            let _ = me.cast(SchedulerMsg::Durable(Durable { mark, result }));
        });
    }
}

impl SchedulerActor {
    async fn handle_msg(
        &self,
        myself: &ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::Accept(job, reply) => accept(myself, state, vec![*job], reply).await?,
            SchedulerMsg::AcceptMany(jobs, reply) => accept(myself, state, jobs, reply).await?,
            SchedulerMsg::SubmitExperiment(record, specs, reply) => {
                submit::submit_experiment(&state.store, myself, *record, specs, reply);
            }
            SchedulerMsg::Submit(spec, reply) => {
                submit::submit(&state.store, myself, *spec, reply);
            }
            SchedulerMsg::Subscribe(job_id, reply) => {
                let r = JobUpdates::open(&state.events, state.store.clone(), &job_id);
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            SchedulerMsg::Cancel(job_id, reply) => {
                let ticket = state.next_id();
                state.cancel_ports.insert(ticket, reply);
                let r = state.core.cancel(&job_id, ticket, clock());
                state.settle(myself, r).await?;
            }
            SchedulerMsg::Retry(job_id, reply) => {
                let ticket = state.next_id();
                state.retry_ports.insert(ticket, reply);
                let r = state.core.retry(&job_id, ticket, clock());
                state.settle(myself, r).await?;
            }
            SchedulerMsg::AttachLink(link) => {
                let args = NodeLinkArgs {
                    link,
                    scheduler: Box::new(myself.clone()),
                    lease_ms: state.core.lease_ms(),
                };
                Actor::spawn_linked(None, NodeLink, args, myself.get_cell()).await?;
            }
            SchedulerMsg::NodeUp { hello, link } => {
                let id = state.next_id();
                state.by_actor.insert(link.get_id(), id);
                state.links.insert(
                    id,
                    LinkSlot {
                        link,
                        last_heard: hello.last_heard,
                    },
                );
                let hello = Hello {
                    node_id: hello.node_id,
                    slots: hello.slots,
                    capabilities: hello.capabilities,
                    running: hello.running,
                    unacked: hello.unacked,
                };
                let r = state.core.node_up(hello, id, clock());
                state.settle(myself, r).await?;
            }
            SchedulerMsg::FromWorker { node_id, msg } => {
                let r = state.core.from_worker(&node_id, msg, clock());
                state.settle(myself, r).await?;
            }
            SchedulerMsg::Fence => {
                let r = state.core.fence(clock());
                state.settle(myself, r).await?;
            }
            SchedulerMsg::Wake => {
                let r = state.core.wake(clock());
                state.settle(myself, r).await?;
            }
            SchedulerMsg::Sync(reply) => {
                let _ = reply.send(());
            }
            SchedulerMsg::Durable(Durable { mark, result }) => {
                state.core.waiter_done();
                if let Err(e) = result {
                    // Nothing held may go: the writes may not be on disk.
                    return Err(format!("store flush failed: {e}").into());
                }
                state.core.durable(mark);
                state.run_effects(myself);
            }
            SchedulerMsg::Drain(node_id, deadline, reply) => {
                let info = state.core.drain(&node_id, deadline);
                state.run_effects(myself);
                let _ = reply.send(info);
            }
            SchedulerMsg::Nodes(reply) => {
                let _ = reply.send(state.core.nodes());
            }
            SchedulerMsg::HttpAddr(reply) => {
                let _ = reply.send(state.admin.as_ref().map(|a| a.local_addr));
            }
        }
        Ok(())
    }
}

/// Queue jobs already written (`Accept`, `AcceptMany`) and reply with the
/// mark whose flush makes them and any assignment durable.
async fn accept(
    myself: &ActorRef<SchedulerMsg>,
    state: &mut SchedulerState,
    jobs: Vec<ffrtmp_runtime::model::Job>,
    reply: RpcReplyPort<ffrtmp_os::store::WriteMark>,
) -> Result<(), ActorProcessingErr> {
    let (mark, dispatched) = state.core.accept(jobs, clock());
    // The flush is requested (an effect) before the reply; the submissions
    // are stored whatever became of the dispatch.
    state.run_effects(myself);
    let _ = reply.send(mark);
    state.settle(myself, dispatched).await
}

/// Whether an actor error is the store refusing a write for want of space,
/// or while it reopens after a failed log write ([`StoreError::is_storage_full`]).
fn is_storage_full(e: &ActorProcessingErr) -> bool {
    e.downcast_ref::<StoreError>()
        .is_some_and(StoreError::is_storage_full)
}

impl Actor for SchedulerActor {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = SchedulerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        args: SchedulerArgs,
    ) -> Result<SchedulerState, ActorProcessingErr> {
        args.store.set_min_flush_interval(args.commit_interval);
        let config = core::Config {
            lease_ms: args.lease.as_millis() as u64,
            max_commit_batch: args.max_commit_batch,
            retry: args.retry,
            seed: rand::random::<u64>(),
        };
        let mut state = SchedulerState {
            core: Core::new(args.store.clone(), config),
            store: args.store,
            events: args.events,
            links: HashMap::new(),
            by_actor: HashMap::new(),
            next_id: 0,
            cancel_ports: HashMap::new(),
            retry_ports: HashMap::new(),
            admin_args: args.admin,
            admin: None,
            admin_restarts: RestartIntensity::new(
                ADMIN_MAX_RESTARTS,
                ADMIN_RESTART_WINDOW.as_millis() as u64,
            ),
        };
        // Recovery (the core's): queued jobs back in the queue, attempts in
        // flight fenced until the previous run's leases have ended, `lost`
        // finished off.
        let r = state.core.recover(clock());
        state.run_effects(&myself);
        r.map_err(err)?;
        // Recovery's own writes are durable before the scheduler starts.
        state.commit(&myself).await?;
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        state.spawn_admin(&myself).await?;
        let r = state.core.wake(clock());
        state.settle(&myself, r).await?;
        state.watch_durability(&myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        let r = self.handle_msg(&myself, msg, state).await;
        state.watch_durability(&myself);
        match r {
            // A write refused for want of space changed nothing (the store
            // checks before writing): what it would have licensed was not
            // done — no assignment sent, no result acknowledged (the worker
            // keeps it and sends it again) — and the scheduler carries on.
            // Writes resume by themselves once space is freed.
            Err(e) if is_storage_full(&e) => {
                tracing::warn!(error = %e, "a write was refused: storage full; carrying on");
                Ok(())
            }
            r => r,
        }
    }

    async fn post_stop(
        &self,
        myself: ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        // What is durable may still go (acknowledgements, assignments); a
        // failed flush releases nothing.
        if let Err(e) = state.commit(&myself).await {
            tracing::warn!(error = %e, "held messages dropped at stop: the store did not flush");
        }
        // Children first, so the lost-node path does not run for links we close.
        state.admin_args = None;
        myself
            .stop_children_and_wait(
                Some("scheduler stopping".into()),
                Some(Duration::from_secs(10)),
            )
            .await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SchedulerMsg>,
        evt: SupervisionEvent,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        let r = state.supervision_event(&myself, evt).await;
        state.watch_durability(&myself);
        match r {
            // As in `handle`: a write refused for want of space changed
            // nothing, and what it was for is tried again later.
            Err(e) if is_storage_full(&e) => {
                tracing::warn!(error = %e, "a write was refused: storage full; carrying on");
                Ok(())
            }
            r => r,
        }
    }
}

/// When a link last heard from its node.
pub(super) fn last_heard(slot: &LinkSlot) -> u64 {
    slot.last_heard.load(Ordering::Acquire)
}
