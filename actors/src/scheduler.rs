//! `SchedulerActor`: the root of the master's tree. Owns the ready queue,
//! places jobs on nodes, applies every state transition through
//! `ffrtmp_runtime::state`, and supervises one `NodeLink` per connected worker
//! and the `AdminActor` (HTTP).
//!
//! Restart policy:
//! - `NodeLink`: never restarted by the master; a link is re-created only
//!   when its worker connects again. Its end (clean or failed) starts the
//!   lost-node path: the node's attempts become `lost` and are requeued as new
//!   attempts while attempts remain.
//! - `AdminActor`: restarted with the same arguments, at most
//!   [`ADMIN_MAX_RESTARTS`] times in [`ADMIN_RESTART_WINDOW`]; beyond that the
//!   scheduler stops itself (escalates to whoever supervises it).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ffrtmp_runtime::model::{Failure, FailureReason, Job, JobId, JobState, NodeId, Outcome};
use ffrtmp_runtime::retry::RetryPolicy;
use ffrtmp_runtime::sched::{NodeView, QueuedJob, ReadyQueue};
use ffrtmp_runtime::state::{self, Applied, CancelAction, JobOpError};
use ffrtmp_runtime::store::Store;
use ffrtmp_runtime::supervision::RestartIntensity;
use ffrtmp_runtime::wire::{Capabilities, ToMaster, ToWorker};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::Serialize;

use crate::admin::{AdminActor, AdminArgs};
use crate::events::{JobEvents, UpdateKind};
use crate::link::LinkEnd;
use crate::metrics as m;
use crate::node_link::{NodeHello, NodeLink, NodeLinkArgs, NodeLinkMsg};
use crate::now_ms;

pub const ADMIN_MAX_RESTARTS: u32 = 3;
pub const ADMIN_RESTART_WINDOW: Duration = Duration::from_secs(60);

pub struct SchedulerArgs {
    pub store: Store,
    pub events: JobEvents,
    pub retry: RetryPolicy,
    /// The HTTP API to run under this scheduler, if any.
    pub admin: Option<AdminArgs>,
    /// How long a lost node's attempts wait before they may run elsewhere:
    /// long enough that the node has stopped them itself (docs/PROTOCOL.md).
    /// Zero in standalone, where the worker dies with the master.
    pub lost_requeue_delay: Duration,
}

/// What a cancel request did.
#[derive(Debug, Clone)]
pub enum CancelReply {
    /// The job was queued and is now `cancelled`.
    Cancelled(Box<Job>),
    /// The job is running; its worker was told to stop it.
    Requested(Box<Job>),
    AlreadyFinished(Box<Job>),
    NotFound,
}

/// A node as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub id: NodeId,
    pub slots: u32,
    pub running: Vec<JobId>,
    pub capabilities: Capabilities,
    pub draining: bool,
}

pub enum SchedulerMsg {
    /// A job was stored durably by the API and waits to be queued.
    Enqueued(JobId),
    Cancel(JobId, RpcReplyPort<CancelReply>),
    /// A new worker link: the scheduler spawns a `NodeLink` for it.
    AttachLink(LinkEnd),
    NodeUp {
        hello: NodeHello,
        link: ActorRef<NodeLinkMsg>,
    },
    FromWorker {
        node_id: NodeId,
        msg: ToMaster,
    },
    /// A retry backoff may have elapsed.
    Wake,
    Nodes(RpcReplyPort<Vec<NodeInfo>>),
    /// Drain a node: no new assignments; it finishes its jobs within the
    /// deadline and leaves. `None` if no such node is connected.
    Drain(NodeId, Duration, RpcReplyPort<Option<NodeInfo>>),
    /// Replies once every message queued before it has been handled.
    Sync(RpcReplyPort<()>),
    /// The local address of the HTTP API, once it is listening.
    HttpAddr(RpcReplyPort<Option<std::net::SocketAddr>>),
}

struct NodeEntry {
    link: ActorRef<NodeLinkMsg>,
    slots: u32,
    capabilities: Capabilities,
    running: HashSet<JobId>,
    draining: bool,
}

fn node_info(id: &NodeId, n: &NodeEntry) -> NodeInfo {
    let mut running: Vec<JobId> = n.running.iter().cloned().collect();
    running.sort();
    NodeInfo {
        id: id.clone(),
        slots: n.slots,
        running,
        capabilities: n.capabilities.clone(),
        draining: n.draining,
    }
}

pub struct SchedulerState {
    store: Store,
    events: JobEvents,
    retry: RetryPolicy,
    queue: ReadyQueue,
    nodes: HashMap<NodeId, NodeEntry>,
    by_link: HashMap<ActorId, NodeId>,
    wake_at: Option<u64>,
    admin_args: Option<AdminArgs>,
    admin: Option<ActorRef<crate::admin::AdminMsg>>,
    admin_restarts: RestartIntensity,
    lost_requeue_delay: Duration,
}

impl Drop for SchedulerState {
    fn drop(&mut self) {
        // ractor does not stop children with their supervisor; this covers a
        // scheduler that panicked (post_stop handles the orderly stop).
        if let Some(a) = &self.admin {
            a.stop(Some("scheduler stopped".into()));
        }
        for n in self.nodes.values() {
            n.link.stop(Some("scheduler stopped".into()));
        }
    }
}

pub struct SchedulerActor;

fn queued(job: &Job) -> QueuedJob {
    QueuedJob {
        id: job.id.clone(),
        priority: job.spec.priority,
        seq: job.seq,
        not_before_ms: job.not_before_ms,
        encoder: job.spec.encode.codec.encoder().to_string(),
    }
}

impl SchedulerState {
    fn publish(&self, kind: UpdateKind, job: &Job) {
        self.events.publish(kind, job);
    }

    fn gauges(&self) {
        m::queue_depth(&self.queue.depth_by_priority());
        let running: usize = self.nodes.values().map(|n| n.running.len()).sum();
        metrics::gauge!(m::JOBS_RUNNING).set(running as f64);
    }

    fn views(&self) -> Vec<NodeView> {
        let mut v: Vec<NodeView> = self
            .nodes
            .iter()
            .map(|(id, n)| NodeView {
                id: id.clone(),
                slots: n.slots,
                running: n.running.len() as u32,
                encoders: n.capabilities.encoders.clone(),
                draining: n.draining,
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// After a terminal transition or a requeue: metrics, queue, events.
    fn after_applied(&mut self, job: &Job, applied: &Applied) {
        match applied {
            Applied::Terminal(st) => {
                m::job_finished(*st);
                if let Some(r) = &job.result {
                    metrics::histogram!(m::JOB_WALL_SECONDS).record(r.wall_s);
                }
            }
            Applied::Requeued { .. } => {
                let reason = job
                    .attempts
                    .last()
                    .and_then(|a| match &a.outcome {
                        Some(Outcome::Transient { failure }) => Some(failure.reason),
                        _ => None,
                    })
                    .map(|r| format!("{r:?}").to_lowercase())
                    .unwrap_or_else(|| "node_lost".into());
                metrics::counter!(m::JOBS_RETRIED, "reason" => reason).increment(1);
                self.queue.push(queued(job));
            }
        }
        self.publish(UpdateKind::State, job);
    }

    /// Place every job that can run now.
    async fn dispatch(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
    ) -> Result<(), ActorProcessingErr> {
        loop {
            let now = now_ms();
            let Some((job_id, node_id)) = self.queue.pick(now, &self.views()) else {
                break;
            };
            self.queue.remove(&job_id);
            let Some(mut job) = self.store.get(&job_id)? else {
                tracing::warn!(job = %job_id, "queued job missing from the store");
                continue;
            };
            if job.state != JobState::Queued {
                continue;
            }
            let token = self.store.next_token()?;
            let assignment = match state::assign(&mut job, &node_id, token, now) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(job = %job_id, error = ?e, "cannot assign");
                    continue;
                }
            };
            // The token is on disk before the worker hears of it.
            self.store.put_durable(&job).await?;
            let Some(node) = self.nodes.get_mut(&node_id) else {
                continue;
            };
            node.running.insert(job_id.clone());
            if node
                .link
                .cast(NodeLinkMsg::Outbound(ToWorker::Assign(assignment)))
                .is_err()
            {
                tracing::warn!(node = %node_id, "link gone while assigning; the lost-node path will requeue");
            }
            tracing::info!(job = %job_id, node = %node_id, attempt = job.attempt, "assigned");
            self.publish(UpdateKind::State, &job);
        }
        let now = now_ms();
        if let Some(at) = self.queue.next_wakeup(now) {
            if self.wake_at.is_none_or(|w| at < w || w <= now) {
                self.wake_at = Some(at);
                myself.send_after(Duration::from_millis(at.saturating_sub(now)), || {
                    SchedulerMsg::Wake
                });
            }
        }
        self.gauges();
        Ok(())
    }

    /// Node lost: every attempt it held is lost; requeue while attempts remain.
    async fn lose_node(&mut self, node_id: &NodeId, why: &str) -> Result<(), ActorProcessingErr> {
        let Some(entry) = self.nodes.remove(node_id) else {
            return Ok(());
        };
        if entry.running.is_empty() {
            tracing::info!(node = %node_id, "node gone: {why}");
        } else {
            tracing::warn!(node = %node_id, jobs = entry.running.len(), "node lost: {why}");
        }
        for job_id in entry.running {
            let Some(mut job) = self.store.get(&job_id)? else {
                continue;
            };
            if job.node.as_deref() != Some(node_id.as_str()) || job.state.is_terminal() {
                continue;
            }
            let failure = Failure::new(
                FailureReason::NodeLost,
                format!("node {node_id} lost: {why}"),
            );
            let now = now_ms();
            match state::lose(&mut job, failure, now, &self.retry, rand::random::<f64>()) {
                Ok(applied) => {
                    if matches!(applied, Applied::Requeued { .. }) {
                        // Fencing by time: the node may still be running it
                        // until its own link-loss kill has certainly happened.
                        let fence = now + self.lost_requeue_delay.as_millis() as u64;
                        job.not_before_ms = Some(job.not_before_ms.unwrap_or(0).max(fence));
                    }
                    self.store.put_durable(&job).await?;
                    self.after_applied(&job, &applied);
                }
                Err(e) => tracing::error!(job = %job_id, error = ?e, "cannot mark lost"),
            }
        }
        Ok(())
    }

    fn tell(&self, node_id: &NodeId, msg: ToWorker) {
        if let Some(n) = self.nodes.get(node_id) {
            let _ = n.link.cast(NodeLinkMsg::Outbound(msg));
        }
    }

    async fn on_worker_message(
        &mut self,
        node_id: NodeId,
        msg: ToMaster,
    ) -> Result<(), ActorProcessingErr> {
        let now = now_ms();
        let (job_id, token) = match &msg {
            ToMaster::Hello { .. } => return Ok(()),
            ToMaster::Draining => {
                if let Some(n) = self.nodes.get_mut(&node_id) {
                    n.draining = true;
                    tracing::info!(node = %node_id, "node is draining");
                }
                return Ok(());
            }
            ToMaster::Started { job_id, token, .. }
            | ToMaster::Progress { job_id, token, .. }
            | ToMaster::Finished { job_id, token, .. } => (job_id.clone(), *token),
        };
        let Some(mut job) = self.store.get(&job_id)? else {
            tracing::warn!(job = %job_id, node = %node_id, "worker reported an unknown job; telling it to kill");
            self.tell(&node_id, ToWorker::Kill { job_id, token });
            return Ok(());
        };
        let result = match msg {
            ToMaster::Hello { .. } | ToMaster::Draining => return Ok(()),
            ToMaster::Started { isolation, .. } => {
                state::start(&mut job, token, isolation, now).map(|()| None)
            }
            ToMaster::Progress { progress, .. } => {
                match state::progress(&mut job, token, progress, now) {
                    Ok(()) => {
                        self.store.put(&job)?;
                        self.publish(UpdateKind::Progress, &job);
                        return Ok(());
                    }
                    Err(e) => Err(e),
                }
            }
            ToMaster::Finished { outcome, .. } => state::finish(
                &mut job,
                token,
                outcome,
                now,
                &self.retry,
                rand::random::<f64>(),
            )
            .map(Some),
        };
        match result {
            Ok(applied) => {
                self.store.put_durable(&job).await?;
                if let Some(applied) = applied {
                    if let Some(n) = self.nodes.get_mut(&node_id) {
                        n.running.remove(&job_id);
                    }
                    tracing::info!(job = %job_id, state = job.state.as_str(), "attempt finished");
                    self.after_applied(&job, &applied);
                } else {
                    self.publish(UpdateKind::State, &job);
                }
            }
            Err(JobOpError::StaleToken { current, got }) => {
                tracing::warn!(job = %job_id, node = %node_id, current, got, "stale token: telling the worker to kill that attempt");
                self.tell(&node_id, ToWorker::Kill { job_id, token });
            }
            Err(e) => {
                tracing::warn!(job = %job_id, node = %node_id, error = ?e, "ignored worker message");
            }
        }
        Ok(())
    }

    async fn spawn_admin(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(args) = &self.admin_args {
            let (admin, _) =
                Actor::spawn_linked(None, AdminActor, args.clone(), myself.get_cell()).await?;
            self.admin = Some(admin);
        }
        Ok(())
    }
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
        let mut state = SchedulerState {
            store: args.store,
            events: args.events,
            retry: args.retry,
            queue: ReadyQueue::new(),
            nodes: HashMap::new(),
            by_link: HashMap::new(),
            wake_at: None,
            admin_args: args.admin.map(|mut a| {
                a.scheduler = Some(myself.clone());
                a
            }),
            admin: None,
            lost_requeue_delay: args.lost_requeue_delay,
            admin_restarts: RestartIntensity::new(
                ADMIN_MAX_RESTARTS,
                ADMIN_RESTART_WINDOW.as_millis() as u64,
            ),
        };
        // Recovery. Queued jobs go back in the queue. Attempts that were
        // assigned or running when the previous master stopped are lost: in
        // standalone their worker (this process) died with it, and its
        // start-up sweep has killed what was left. They are requeued as new
        // attempts while attempts remain.
        for job in state.store.in_states(&[JobState::Queued])? {
            state.queue.push(queued(&job));
        }
        let interrupted =
            state
                .store
                .in_states(&[JobState::Assigned, JobState::Running, JobState::Lost])?;
        for mut job in interrupted {
            let failure = Failure::new(
                FailureReason::WorkerCrash,
                "the node restarted while this attempt was in flight",
            );
            match state::lose(
                &mut job,
                failure,
                now_ms(),
                &state.retry,
                rand::random::<f64>(),
            ) {
                Ok(applied) => {
                    state.store.put_durable(&job).await?;
                    tracing::info!(job = %job.id, state = job.state.as_str(), "recovered interrupted attempt");
                    state.after_applied(&job, &applied);
                }
                Err(e) => tracing::error!(job = %job.id, error = ?e, "cannot recover job"),
            }
        }
        state.gauges();
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        state.spawn_admin(&myself).await?;
        state.dispatch(&myself).await
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::Enqueued(job_id) => {
                if let Some(job) = state.store.get(&job_id)? {
                    if job.state == JobState::Queued {
                        state.queue.push(queued(&job));
                        state.dispatch(&myself).await?;
                    }
                }
            }
            SchedulerMsg::Cancel(job_id, reply) => {
                let Some(mut job) = state.store.get(&job_id)? else {
                    let _ = reply.send(CancelReply::NotFound);
                    return Ok(());
                };
                if job.state.is_terminal() {
                    let _ = reply.send(CancelReply::AlreadyFinished(Box::new(job)));
                    return Ok(());
                }
                match state::cancel(&mut job, now_ms()) {
                    Ok(CancelAction::CancelledWhileQueued) => {
                        state.queue.remove(&job_id);
                        state.store.put_durable(&job).await?;
                        m::job_finished(JobState::Cancelled);
                        state.publish(UpdateKind::State, &job);
                        state.gauges();
                        let _ = reply.send(CancelReply::Cancelled(Box::new(job)));
                    }
                    Ok(CancelAction::NotifyWorker { node, token }) => {
                        state.tell(&node, ToWorker::Cancel { job_id, token });
                        let _ = reply.send(CancelReply::Requested(Box::new(job)));
                    }
                    Err(e) => {
                        tracing::warn!(job = %job_id, error = ?e, "cancel refused");
                        let _ = reply.send(CancelReply::AlreadyFinished(Box::new(job)));
                    }
                }
            }
            SchedulerMsg::AttachLink(link) => {
                let args = NodeLinkArgs {
                    link,
                    scheduler: myself.clone(),
                };
                Actor::spawn_linked(None, NodeLink, args, myself.get_cell()).await?;
            }
            SchedulerMsg::NodeUp { hello, link } => {
                if let Some(old) = state.nodes.get(&hello.node_id) {
                    // The same node again on a new link: the old link is dead.
                    old.link.stop(Some("replaced by a new link".into()));
                }
                tracing::info!(node = %hello.node_id, slots = hello.slots, encoders = ?hello.capabilities.encoders, "node up");
                state.by_link.insert(link.get_id(), hello.node_id.clone());
                let running = state
                    .nodes
                    .remove(&hello.node_id)
                    .map(|n| n.running)
                    .unwrap_or_default();
                state.nodes.insert(
                    hello.node_id,
                    NodeEntry {
                        link,
                        slots: hello.slots,
                        capabilities: hello.capabilities,
                        running,
                        draining: false,
                    },
                );
                state.dispatch(&myself).await?;
            }
            SchedulerMsg::FromWorker { node_id, msg } => {
                let finished = matches!(msg, ToMaster::Finished { .. });
                state.on_worker_message(node_id, msg).await?;
                if finished {
                    state.dispatch(&myself).await?;
                }
            }
            SchedulerMsg::Wake => {
                state.wake_at = None;
                state.dispatch(&myself).await?;
            }
            SchedulerMsg::Sync(reply) => {
                let _ = reply.send(());
            }
            SchedulerMsg::Drain(node_id, deadline, reply) => {
                let info = match state.nodes.get_mut(&node_id) {
                    Some(n) => {
                        n.draining = true;
                        let _ = n.link.cast(NodeLinkMsg::Outbound(ToWorker::Drain {
                            deadline_ms: deadline.as_millis() as u64,
                        }));
                        tracing::info!(node = %node_id, ?deadline, "drain requested");
                        Some(node_info(&node_id, n))
                    }
                    None => None,
                };
                let _ = reply.send(info);
            }
            SchedulerMsg::Nodes(reply) => {
                let mut nodes: Vec<NodeInfo> =
                    state.nodes.iter().map(|(id, n)| node_info(id, n)).collect();
                nodes.sort_by(|a, b| a.id.cmp(&b.id));
                let _ = reply.send(nodes);
            }
            SchedulerMsg::HttpAddr(reply) => match &state.admin {
                Some(admin) => {
                    let addr = ractor::call!(admin, crate::admin::AdminMsg::LocalAddr).ok();
                    let _ = reply.send(addr);
                }
                None => {
                    let _ = reply.send(None);
                }
            },
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
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
        let (cell, why) = match &evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell.clone(),
                reason.clone().unwrap_or_else(|| "stopped".into()),
            ),
            SupervisionEvent::ActorFailed(cell, err) => (cell.clone(), format!("failed: {err}")),
            _ => return Ok(()),
        };
        let id = cell.get_id();
        if let Some(node_id) = state.by_link.remove(&id) {
            // Only if this link is still the node's current one.
            let current = state
                .nodes
                .get(&node_id)
                .map(|n| n.link.get_id() == id)
                .unwrap_or(false);
            if current {
                state.lose_node(&node_id, &why).await?;
                state.dispatch(&myself).await?;
            }
            return Ok(());
        }
        if state.admin.as_ref().map(|a| a.get_id()) == Some(id) {
            state.admin = None;
            if state.admin_restarts.record_restart(now_ms()) {
                tracing::error!("HTTP API actor ended ({why}); restarting it");
                state.spawn_admin(&myself).await?;
            } else {
                tracing::error!("HTTP API actor ended ({why}) too often; stopping the scheduler");
                myself.stop(Some(format!("admin restart intensity exceeded: {why}")));
            }
        }
        Ok(())
    }
}

/// Shared handle used by the HTTP layer.
pub type SchedulerRef = Arc<ActorRef<SchedulerMsg>>;
