//! `SchedulerActor`: the root of the master's tree. Owns the ready queue,
//! places jobs on nodes, applies every state transition through
//! `ffrtmp_runtime::state`, and supervises one `NodeLink` per connected worker
//! and the `AdminActor` (HTTP).
//!
//! Talk to it with [`SchedulerMsg`]; [`crate::embed`] wraps the messages an
//! embedding application needs (submit, subscribe, attach a worker).
//!
//! Group commit: the scheduler writes each transition to the store without
//! waiting for the flush ([`Store::put_marked`]) and holds back what the
//! transition licenses (an `Assign` or `Ack` to a worker, a cancel's reply,
//! the job update published to watchers) until a flush covering the write
//! has completed; then it releases them in the order they were made. One
//! flush runs at a time (the store's flusher), and every write made while
//! it runs joins the next, so the batch grows with the load. Nothing leaves
//! the master before the write that justifies it is durable.
//! [`SchedulerArgs::max_commit_batch`] bounds the writes held back: at
//! that many the scheduler waits for the flush in line (1: a flush per
//! write, the scheduler waiting on each).
//!
//! Restart policy:
//! - `NodeLink`: never restarted by the master; a link is re-created only
//!   when its worker connects again. Its end (clean or failed) starts the
//!   lost-node path: the node's attempts are *fenced* until the worker's
//!   lease has certainly run out ([`lease::fence_deadline`]), then become
//!   `lost` and are requeued as new attempts while attempts remain. If the
//!   worker comes back within the fence and reports them, they are adopted
//!   and nothing reruns (docs/PROTOCOL.md, "Leases").
//! - `AdminActor`: restarted with the same arguments, at most
//!   [`ADMIN_MAX_RESTARTS`] times in [`ADMIN_RESTART_WINDOW`]; beyond that the
//!   scheduler stops itself (escalates to whoever supervises it).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ffrtmp_os::store::{Store, StoreError, WriteMark};
use ffrtmp_runtime::encoders;
use ffrtmp_runtime::experiment::Experiment;
use ffrtmp_runtime::lease;
use ffrtmp_runtime::model::{
    Failure, FailureReason, Job, JobId, JobSpec, JobState, NodeId, NodePower, Outcome,
};
use ffrtmp_runtime::retry::RetryPolicy;
use ffrtmp_runtime::sched::{NodeView, QueuedJob, ReadyQueue};
use ffrtmp_runtime::state::{self, Applied, CancelAction, JobOpError};
use ffrtmp_runtime::supervision::RestartIntensity;
use ffrtmp_runtime::wire::{AttemptRef, Capabilities, ToMaster, ToWorker};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::events::{JobEvents, JobUpdates, UpdateKind};
use crate::link::LinkEnd;
use crate::metrics as m;
use crate::node_link::{NodeHello, NodeLink, NodeLinkArgs, NodeLinkMsg};
use crate::supervised::{ServingChild, ServingChildRef};
use crate::{mono_ms, now_ms};

/// How many times the scheduler restarts its `AdminActor` within
/// [`ADMIN_RESTART_WINDOW`] before it gives up and stops itself.
pub const ADMIN_MAX_RESTARTS: u32 = 3;
/// The window [`ADMIN_MAX_RESTARTS`] is counted over.
pub const ADMIN_RESTART_WINDOW: Duration = Duration::from_secs(60);

/// What a [`SchedulerActor`] is started with.
pub struct SchedulerArgs {
    /// The job store. The scheduler is the only writer of transitions; on
    /// start it requeues the stored `queued` jobs and fences the attempts
    /// left `assigned`/`running` by an earlier run.
    pub store: Store,
    /// Where job updates are published. Give the HTTP API (if any) a clone
    /// of the same handle.
    pub events: JobEvents,
    /// Backoff between attempts after a transient failure.
    pub retry: RetryPolicy,
    /// The HTTP API to run under this scheduler, if any (an
    /// `Arc::new(AdminArgs {..})`: the scheduler spawns it, restarts it and
    /// fills in [`AdminArgs::scheduler`](crate::admin::AdminArgs::scheduler)).
    pub admin: Option<Arc<dyn ServingChild<SchedulerMsg>>>,
    /// The lease granted to workers with every `Pong`: a worker stops its
    /// jobs when it runs out, and a silent node's attempts are held back
    /// until then (docs/PROTOCOL.md, "Leases").
    pub lease: Duration,
    /// Group commit: at most this many writes wait for a flush while the
    /// scheduler goes on; at the limit it waits for the flush itself. 1
    /// makes every transition wait for its own flush. Default
    /// [`DEFAULT_MAX_COMMIT_BATCH`]; 0 counts as 1.
    pub max_commit_batch: usize,
    /// Group commit: store flushes start at most once per this interval
    /// (`Store::set_min_flush_interval`; the scheduler sets it on its store
    /// at start). Zero flushes back to back. Default
    /// [`DEFAULT_COMMIT_INTERVAL`].
    pub commit_interval: Duration,
}

/// The default of [`SchedulerArgs::max_commit_batch`].
pub const DEFAULT_MAX_COMMIT_BATCH: usize = 4096;

/// The default of [`SchedulerArgs::commit_interval`]: 1 ms. It only ever
/// delays a flush that would start less than 1 ms after the previous one,
/// i.e. above ~1,000 flushes a second; there it makes each flush cover
/// more writes (sled's flush costs CPU in its I/O threads): end to end
/// with 50 workers 2,819 → 4,277 jobs/s on 2 cores, while a single 4-slot
/// worker, whose jobs each wait for two flushes in series, loses (4,155 →
/// 2,384; docs/BENCHMARKS.md, "Scheduling throughput"). A flush after a
/// quiet spell starts at once, so a lone job waits for no timer.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(1);

impl SchedulerArgs {
    /// A scheduler over `store` with the defaults of `ffrtmp-node`: a fresh
    /// [`JobEvents`], the default retry policy, the default lease
    /// ([`lease::DEFAULT_LEASE_MS`]) and no HTTP API.
    pub fn new(store: Store) -> SchedulerArgs {
        SchedulerArgs {
            store,
            events: JobEvents::default(),
            retry: RetryPolicy::default(),
            admin: None,
            lease: Duration::from_millis(lease::DEFAULT_LEASE_MS),
            max_commit_batch: DEFAULT_MAX_COMMIT_BATCH,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
        }
    }
}

/// What a retry request did.
#[derive(Debug, Clone)]
pub enum RetryReply {
    /// The job was re-queued (the same id) and is stored as `queued`; this is
    /// the job as stored.
    Requeued(Box<Job>),
    /// The job is in a state a retry does not apply to (anything but
    /// `failed`, `cancelled`, `timed_out` and `lost`); nothing changed.
    NotRetryable(Box<Job>),
    /// No job has that id.
    NotFound,
}

/// What a cancel request did.
#[derive(Debug, Clone)]
pub enum CancelReply {
    /// The job was queued and is now `cancelled`.
    Cancelled(Box<Job>),
    /// The job is running; its worker was told to stop it.
    Requested(Box<Job>),
    /// The job had already reached a terminal state (or could not be
    /// cancelled from the one it is in); nothing changed.
    AlreadyFinished(Box<Job>),
    /// No job has that id.
    NotFound,
}

/// A node as the API shows it (`GET /v1/nodes`).
pub use ffrtmp_api::NodeInfo;

/// The messages a [`SchedulerActor`] handles. Replies come through the
/// [`RpcReplyPort`]s (use `ractor::call!`); a dropped reply port means the
/// scheduler stopped before it could answer.
pub enum SchedulerMsg {
    /// A new `queued` job was written to the store, not yet durably (by
    /// the HTTP API or [`SchedulerMsg::Submit`]): queue it, place it if a
    /// node is free, and reply with the [`WriteMark`] whose flush makes
    /// both the submission and any assignment durable (one flush for the
    /// two). Nothing it licenses (its `queued` update, the assignment) goes
    /// out before that flush.
    Accept(Box<Job>, RpcReplyPort<WriteMark>),
    /// Store a new job durably and queue it. Replies once the job is on disk
    /// (what `201 Created` means over HTTP) with the job as stored, or with
    /// why it could not be stored. The spec is not validated again: build it
    /// with `ffrtmp_runtime::spec::parse_job_request`. Sent by
    /// [`crate::embed::submit`].
    Submit(Box<JobSpec>, RpcReplyPort<Result<Job, String>>),
    /// Store an experiment and all its jobs, then queue them (`POST
    /// /v1/experiments`): the record first (every job id, `complete:
    /// false`), the jobs, one flush, the record again as `complete`. Replies
    /// once every job is on disk (what `201` means), with the record as
    /// stored; `Exists` (nothing written) when the name is taken. The specs
    /// are not validated again: build them with
    /// `ffrtmp_runtime::experiment::parse_experiment`.
    SubmitExperiment(
        Box<Experiment>,
        Vec<JobSpec>,
        RpcReplyPort<Result<Experiment, ExperimentRefused>>,
    ),
    /// Like [`SchedulerMsg::Accept`] for many jobs written before it (an
    /// experiment's): queue them all, place what fits, one mark for all.
    AcceptMany(Vec<Job>, RpcReplyPort<WriteMark>),
    /// Watch one job: replies with its updates (the job now, then every
    /// change until a terminal state), `Ok(None)` if no job has that id, or
    /// the store's error. Sent by [`crate::embed::subscribe`].
    Subscribe(JobId, RpcReplyPort<Result<Option<JobUpdates>, String>>),
    /// Cancel a job: a queued job is cancelled at once; a running one's
    /// worker is told to stop it (the job becomes `cancelled` when the worker
    /// reports). The reply says which.
    Cancel(JobId, RpcReplyPort<CancelReply>),
    /// Re-queue a job that ended without success (`POST
    /// /v1/jobs/{id}/retry`) through `state::retry`: the same job, stored
    /// durably as `queued` before the reply, then placed like a new
    /// submission. Handled one at a time like every message, so of two
    /// concurrent retries exactly one re-queues and the other finds the job
    /// `queued` (or further) and is refused.
    Retry(JobId, RpcReplyPort<RetryReply>),
    /// A new worker link: the scheduler spawns a `NodeLink` for it under
    /// itself. The link's first frame must be the worker's hello. Sent by the
    /// QUIC accept loop and by [`crate::embed::link_in_process`].
    AttachLink(LinkEnd),
    /// From a `NodeLink`: its worker said hello. The scheduler reconciles
    /// what the node reports with what it believes the node runs, then
    /// places jobs on it.
    NodeUp {
        /// What the worker said.
        hello: NodeHello,
        /// The link it said it on.
        link: ActorRef<NodeLinkMsg>,
    },
    /// From a `NodeLink`: a message from its worker about a job (started,
    /// progress, finished) or itself (power, draining).
    FromWorker {
        /// The worker it came from.
        node_id: NodeId,
        /// What it said.
        msg: ToMaster,
    },
    /// A retry backoff may have elapsed (the scheduler's own timer).
    Wake,
    /// Replies with every node, connected or gone but still holding fenced
    /// attempts, sorted by id.
    Nodes(RpcReplyPort<Vec<NodeInfo>>),
    /// Drain a node: no new assignments; it finishes its jobs within the
    /// deadline and leaves. `None` if no such node is connected.
    Drain(NodeId, Duration, RpcReplyPort<Option<NodeInfo>>),
    /// Replies once every message queued before it has been handled.
    Sync(RpcReplyPort<()>),
    /// The local address of the HTTP API, once it is listening (`None`
    /// without one).
    HttpAddr(RpcReplyPort<Option<std::net::SocketAddr>>),
    /// A fence may have expired (the scheduler's own timer).
    Fence,
    /// From the scheduler's own durability waiter: every write up to a
    /// mark is durable (or the flush failed), so the effects held back for
    /// them can go. Only the scheduler can make one (the fields are
    /// private): a forged one would release effects early.
    Durable(Durable),
}

/// What a [`SchedulerMsg::Durable`] carries; made by the scheduler only.
pub struct Durable {
    mark: WriteMark,
    result: Result<(), String>,
}

/// Something a transition licenses, held back until the transition is
/// durable (group commit).
enum Effect {
    /// A message to a worker, on the link it had when the effect was made.
    Send(ActorRef<NodeLinkMsg>, ToWorker),
    /// A job update for watchers.
    Publish(UpdateKind, Box<Job>),
    /// The reply to a cancel that changed the job.
    CancelReply(RpcReplyPort<CancelReply>, CancelReply),
    /// The reply to a retry that re-queued the job.
    RetryReply(RpcReplyPort<RetryReply>, RetryReply),
}

impl Effect {
    fn release(self, events: &JobEvents) {
        match self {
            Effect::Send(link, msg) => {
                if link.cast(NodeLinkMsg::Outbound(msg)).is_err() {
                    tracing::debug!("link gone before a held message could go");
                }
            }
            Effect::Publish(kind, job) => events.publish(kind, &job),
            Effect::CancelReply(port, reply) => {
                let _ = port.send(reply);
            }
            Effect::RetryReply(port, reply) => {
                let _ = port.send(reply);
            }
        }
    }
}

struct NodeEntry {
    link: ActorRef<NodeLinkMsg>,
    slots: u32,
    capabilities: Capabilities,
    running: HashSet<JobId>,
    draining: bool,
    /// When the link last heard from the node ([`mono_ms`]).
    last_heard: Arc<AtomicU64>,
    power: Option<NodePower>,
}

/// An attempt that may still run on a node the master cannot reach.
#[derive(Debug, Clone)]
struct Fenced {
    node: NodeId,
    token: u64,
    /// [`mono_ms`] after which it certainly does not.
    until_ms: u64,
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
        connected: true,
        power: n.power.clone(),
    }
}

/// The scheduler's state (private; public only because ractor's `Actor`
/// trait names it).
pub struct SchedulerState {
    store: Store,
    events: JobEvents,
    retry: RetryPolicy,
    queue: ReadyQueue,
    nodes: HashMap<NodeId, NodeEntry>,
    by_link: HashMap<ActorId, NodeId>,
    wake_at: Option<u64>,
    admin_args: Option<Arc<dyn ServingChild<SchedulerMsg>>>,
    admin: Option<ServingChildRef>,
    admin_restarts: RestartIntensity,
    lease_ms: u64,
    fenced: HashMap<JobId, Fenced>,
    fence_timer_at: Option<u64>,
    /// Until then, a lease from the previous run may be outstanding.
    recovery_until_ms: Option<u64>,
    /// Group commit: effects waiting for the writes before their mark to be
    /// durable, in the order they were made.
    held: std::collections::VecDeque<(WriteMark, Effect)>,
    /// The mark of this scheduler's last write.
    last_mark: WriteMark,
    /// Writes made since the last one known durable.
    unflushed: usize,
    /// The mark a durability waiter is waiting for, if one runs.
    waiting_for: Option<WriteMark>,
    max_commit_batch: usize,
}

impl Drop for SchedulerState {
    fn drop(&mut self) {
        // ractor does not stop children with their supervisor; this covers a
        // scheduler that panicked (post_stop handles the orderly stop).
        if let Some(a) = &self.admin {
            a.cell.stop(Some("scheduler stopped".into()));
        }
        for n in self.nodes.values() {
            n.link.stop(Some("scheduler stopped".into()));
        }
    }
}

/// The root of the master's tree: the single writer of job transitions.
/// Spawn it with [`crate::embed::spawn_scheduler`] (or `Actor::spawn_linked`
/// with [`SchedulerArgs`]); it spawns its HTTP API, if configured, and a
/// `NodeLink` per attached worker under itself, and stops them when it
/// stops. It stops itself only when its HTTP API fails more often than
/// [`ADMIN_MAX_RESTARTS`] allows; a failing store makes it fail.
pub struct SchedulerActor;

fn queued(job: &Job) -> QueuedJob {
    QueuedJob {
        id: job.id.clone(),
        priority: job.spec.priority,
        seq: job.queue_seq(),
        not_before_ms: job.not_before_ms,
        encoder: encoders::requirement(&job.spec.encode),
        metrics: job
            .spec
            .quality
            .as_ref()
            .map(|q| q.metrics.clone())
            .unwrap_or_default(),
    }
}

impl SchedulerState {
    /// Publish a job update once every write made so far is durable.
    fn publish(&mut self, kind: UpdateKind, job: &Job) {
        self.hold(Effect::Publish(kind, Box::new(job.clone())));
    }

    /// Write a job without waiting for the flush; what the write licenses
    /// goes through [`SchedulerState::hold`]. At `max_commit_batch`
    /// unflushed writes, waits for the flush here (and releases what it
    /// covers).
    async fn put(&mut self, job: &Job) -> Result<(), ActorProcessingErr> {
        self.last_mark = self.store.put_marked(job)?;
        self.unflushed += 1;
        if self.unflushed >= self.max_commit_batch {
            self.commit().await?;
        }
        Ok(())
    }

    /// Wait until every write made so far is durable, then release every
    /// held effect.
    async fn commit(&mut self) -> Result<(), ActorProcessingErr> {
        let mark = self.last_mark;
        self.store.wait_mark(mark).await?;
        self.release_up_to(mark);
        Ok(())
    }

    /// Run `effect` once every write made so far is durable: now if they
    /// are (and nothing is held before it), else in order after them.
    fn hold(&mut self, effect: Effect) {
        if self.held.is_empty() && self.store.is_durable(self.last_mark) {
            self.unflushed = 0;
            effect.release(&self.events);
        } else {
            self.held.push_back((self.last_mark, effect));
        }
    }

    /// Every write up to `mark` is durable: release what waited for them.
    fn release_up_to(&mut self, mark: WriteMark) {
        if mark >= self.last_mark {
            self.unflushed = 0;
        }
        while self.held.front().is_some_and(|(m, _)| *m <= mark) {
            if let Some((_, effect)) = self.held.pop_front() {
                effect.release(&self.events);
            }
        }
    }

    /// After a message: if effects are held and no waiter runs, start one
    /// for the latest write. It tells the scheduler when the flush covering
    /// that write is done ([`SchedulerMsg::Durable`]); writes made
    /// meanwhile wait for the next waiter, and share its flush.
    fn watch_durability(&mut self, myself: &ActorRef<SchedulerMsg>) {
        if self.waiting_for.is_some() || self.held.is_empty() {
            return;
        }
        let mark = self.last_mark;
        self.waiting_for = Some(mark);
        let store = self.store.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let result = store.wait_mark(mark).await.map_err(|e| e.to_string());
            // A scheduler that stopped meanwhile drops its held effects.
            let _ = me.cast(SchedulerMsg::Durable(Durable { mark, result }));
        });
    }

    fn gauges(&self) {
        m::queue_depth(&self.queue.depth_by_priority());
        let running: usize = self.nodes.values().map(|n| n.running.len()).sum();
        metrics::gauge!(m::JOBS_RUNNING).set(running as f64);
    }

    /// The nodes as placement sees them, borrowed (nothing copied; `pick`
    /// breaks ties by id, so their order does not matter).
    fn views(&self) -> Vec<NodeView<'_>> {
        self.nodes
            .iter()
            .map(|(id, n)| NodeView {
                id,
                slots: n.slots,
                running: u32::try_from(n.running.len()).unwrap_or(u32::MAX),
                encoders: &n.capabilities.encoders,
                metrics: &n.capabilities.metrics,
                draining: n.draining,
            })
            .collect()
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
                    // The API's name for it (`worker_crash`), not the Debug one.
                    .and_then(|r| serde_json::to_value(r).ok())
                    .and_then(|v| v.as_str().map(str::to_string))
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
            // The token is on disk before the worker hears of it: the
            // assignment is held until the write is durable.
            if let Err(e) = self.put(&job).await {
                // Not assigned (the write was refused, e.g. storage full):
                // back into the queue as it is stored.
                if let Ok(Some(stored)) = self.store.get(&job_id) {
                    self.queue.push(queued(&stored));
                }
                return Err(e);
            }
            let Some(node) = self.nodes.get_mut(&node_id) else {
                continue;
            };
            node.running.insert(job_id.clone());
            let link = node.link.clone();
            self.hold(Effect::Send(link, ToWorker::Assign(Box::new(assignment))));
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

    /// Node lost: its attempts are fenced until its lease has certainly run
    /// out, counted from when its link last heard from it.
    fn lose_node(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        node_id: &NodeId,
        why: &str,
    ) -> Result<(), ActorProcessingErr> {
        let Some(entry) = self.nodes.remove(node_id) else {
            return Ok(());
        };
        let last_heard = entry.last_heard.load(Ordering::Acquire);
        let until_ms = lease::fence_deadline(last_heard, self.lease_ms);
        if entry.running.is_empty() {
            tracing::info!(node = %node_id, "node gone: {why}");
        } else {
            tracing::warn!(
                node = %node_id,
                jobs = entry.running.len(),
                fence_s = until_ms.saturating_sub(mono_ms()) as f64 / 1000.0,
                "node lost: {why}; its attempts are held until its lease has run out"
            );
        }
        for job_id in entry.running {
            let Some(job) = self.store.get(&job_id)? else {
                continue;
            };
            if job.node.as_deref() != Some(node_id.as_str()) || job.state.is_terminal() {
                continue;
            }
            self.fenced.insert(
                job_id,
                Fenced {
                    node: node_id.clone(),
                    token: job.token,
                    until_ms,
                },
            );
        }
        self.arm_fence_timer(myself);
        Ok(())
    }

    fn arm_fence_timer(&mut self, myself: &ActorRef<SchedulerMsg>) {
        let now = mono_ms();
        let next = self
            .fenced
            .values()
            .map(|f| f.until_ms)
            .chain(self.recovery_until_ms)
            .min();
        if let Some(at) = next {
            if self.fence_timer_at.is_none_or(|t| at < t || t <= now) {
                self.fence_timer_at = Some(at);
                myself.send_after(Duration::from_millis(at.saturating_sub(now)), || {
                    SchedulerMsg::Fence
                });
            }
        }
    }

    /// Requeue every fenced attempt whose fence has passed.
    async fn expire_fences(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let now = mono_ms();
        self.fence_timer_at = None;
        let expired: Vec<(JobId, Fenced)> = self
            .fenced
            .iter()
            .filter(|(_, f)| f.until_ms <= now)
            .map(|(j, f)| (j.clone(), f.clone()))
            .collect();
        for (job_id, f) in expired {
            self.fenced.remove(&job_id);
            let why = format!("node {} lost and its lease ran out", f.node);
            if let Err(e) = self
                .requeue_attempt(&job_id, f.token, &f.node, FailureReason::NodeLost, &why)
                .await
            {
                // Not stored (a full disk refuses the write whole): held
                // again, with the others not reached yet, and tried at a
                // later tick — never forgotten, and no busy loop meanwhile.
                self.fenced.insert(job_id, f);
                let retry_at = now.saturating_add(FENCE_RETRY_MS);
                for held in self.fenced.values_mut() {
                    if held.until_ms <= now {
                        held.until_ms = retry_at;
                    }
                }
                self.arm_fence_timer(myself);
                return Err(e);
            }
        }
        if self.recovery_until_ms.is_some_and(|t| t <= now) {
            // Leases granted by the previous run have all ended.
            match self.store.set_granted_lease(self.lease_ms) {
                Ok(()) => self.recovery_until_ms = None,
                Err(e) if e.is_storage_full() => {
                    // The value stored stands (never below the leases
                    // granted): tried again at a later tick, and the
                    // fences above keep their timer meanwhile.
                    tracing::warn!(error = %e, "granted lease not lowered yet");
                    self.recovery_until_ms = Some(now.saturating_add(FENCE_RETRY_MS));
                }
                Err(e) => {
                    self.arm_fence_timer(myself);
                    return Err(e.into());
                }
            }
        }
        self.arm_fence_timer(myself);
        Ok(())
    }

    /// The attempt `token` of `job_id` no longer runs on `node`: `lost`, and
    /// requeued as a new attempt while attempts remain.
    async fn requeue_attempt(
        &mut self,
        job_id: &JobId,
        token: u64,
        node: &NodeId,
        reason: FailureReason,
        why: &str,
    ) -> Result<(), ActorProcessingErr> {
        let Some(mut job) = self.store.get(job_id)? else {
            return Ok(());
        };
        if job.token != token
            || job.node.as_deref() != Some(node.as_str())
            || job.state.is_terminal()
        {
            return Ok(());
        }
        let failure = Failure::new(reason, why);
        match state::lose(
            &mut job,
            failure,
            now_ms(),
            &self.retry,
            rand::random::<f64>(),
        ) {
            Ok(applied) => {
                self.put(&job).await?;
                tracing::info!(job = %job_id, state = job.state.as_str(), "attempt lost: {why}");
                self.after_applied(&job, &applied);
            }
            Err(e) => tracing::error!(job = %job_id, error = ?e, "cannot mark lost"),
        }
        Ok(())
    }

    /// A node said hello: compare what it holds with what we believe it
    /// holds, adopt what still runs, requeue what it does not have.
    async fn node_up(
        &mut self,
        hello: NodeHello,
        link: ActorRef<NodeLinkMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let node_id = hello.node_id.clone();
        let mut candidates: HashSet<JobId> = HashSet::new();
        if let Some(old) = self.nodes.remove(&node_id) {
            // The same node again on a new link: the old link is dead.
            old.link.stop(Some("replaced by a new link".into()));
            candidates.extend(old.running);
        }
        candidates.extend(
            self.fenced
                .iter()
                .filter(|(_, f)| f.node == node_id)
                .map(|(j, _)| j.clone()),
        );
        let mut believed = Vec::new();
        for job_id in &candidates {
            if let Some(job) = self.store.get(job_id)? {
                if job.node.as_deref() == Some(node_id.as_str())
                    && matches!(job.state, JobState::Assigned | JobState::Running)
                {
                    believed.push(AttemptRef {
                        job_id: job.id.clone(),
                        token: job.token,
                    });
                }
            }
        }
        let r = lease::reconcile(&believed, &hello.running, &hello.unacked);
        let mut running = HashSet::new();
        for a in r.adopt.iter().chain(&r.awaiting_result) {
            self.fenced.remove(&a.job_id);
            running.insert(a.job_id.clone());
        }
        if !r.adopt.is_empty() {
            tracing::info!(node = %node_id, jobs = ?r.adopt.iter().map(|a| &a.job_id).collect::<Vec<_>>(), "adopted running attempts");
        }
        for a in &r.requeue {
            self.fenced.remove(&a.job_id);
            self.requeue_attempt(
                &a.job_id,
                a.token,
                &node_id,
                FailureReason::WorkerCrash,
                "its node came back without it (the worker restarted, or never got the assignment)",
            )
            .await?;
        }
        tracing::info!(node = %node_id, slots = hello.slots, encoders = ?hello.capabilities.encoders, "node up");
        self.by_link.insert(link.get_id(), node_id.clone());
        self.nodes.insert(
            node_id.clone(),
            NodeEntry {
                link,
                slots: hello.slots,
                capabilities: hello.capabilities,
                running,
                draining: false,
                last_heard: hello.last_heard,
                power: None,
            },
        );
        for a in r.kill {
            tracing::warn!(job = %a.job_id, node = %node_id, token = a.token, "node runs an attempt that is not current: killing it");
            self.tell(
                &node_id,
                ToWorker::Kill {
                    job_id: a.job_id,
                    token: a.token,
                },
            );
        }
        Ok(())
    }

    /// Send `msg` to the node's current link, in order after every held
    /// effect (an `Ack` goes once the result it acknowledges is durable).
    fn tell(&mut self, node_id: &NodeId, msg: ToWorker) {
        if let Some(n) = self.nodes.get(node_id) {
            let link = n.link.clone();
            self.hold(Effect::Send(link, msg));
        }
    }

    async fn on_worker_message(
        &mut self,
        node_id: NodeId,
        msg: ToMaster,
    ) -> Result<(), ActorProcessingErr> {
        let now = now_ms();
        let (job_id, token) = match &msg {
            ToMaster::Hello { .. } | ToMaster::Ping { .. } => return Ok(()),
            ToMaster::Draining => {
                if let Some(n) = self.nodes.get_mut(&node_id) {
                    n.draining = true;
                    tracing::info!(node = %node_id, "node is draining");
                }
                return Ok(());
            }
            ToMaster::Power(power) => {
                crate::metrics::node_power(&node_id, power);
                if let Some(n) = self.nodes.get_mut(&node_id) {
                    n.power = Some(power.clone());
                }
                return Ok(());
            }
            ToMaster::Started { job_id, token, .. }
            | ToMaster::Progress { job_id, token, .. }
            | ToMaster::Finished { job_id, token, .. } => (job_id.clone(), *token),
        };
        let is_result = matches!(msg, ToMaster::Finished { .. });
        let ack = AttemptRef {
            job_id: job_id.clone(),
            token,
        };
        let Some(mut job) = self.store.get(&job_id)? else {
            if is_result {
                tracing::warn!(job = %job_id, node = %node_id, "result for an unknown job dropped");
                self.tell(&node_id, ToWorker::Ack(ack));
            } else {
                tracing::warn!(job = %job_id, node = %node_id, "worker reported an unknown job; telling it to kill");
                self.tell(&node_id, ToWorker::Kill { job_id, token });
            }
            return Ok(());
        };
        // The current attempt's token from a node it was not assigned to:
        // another worker's job. (A stale token takes the paths below.)
        if token == job.token && job.node.as_deref() != Some(node_id.as_str()) {
            tracing::warn!(job = %job_id, node = %node_id, assigned = ?job.node, token, "message about an attempt assigned to another node ignored");
            if is_result {
                self.tell(&node_id, ToWorker::Ack(ack));
            } else {
                self.tell(&node_id, ToWorker::Kill { job_id, token });
            }
            return Ok(());
        }
        let result = match msg {
            ToMaster::Hello { .. }
            | ToMaster::Ping { .. }
            | ToMaster::Draining
            | ToMaster::Power(_) => return Ok(()),
            // Resent on every new link in case the first one was lost.
            ToMaster::Started { .. } if job.state == JobState::Running && job.token == token => {
                return Ok(())
            }
            ToMaster::Started { isolation, .. } => {
                state::start(&mut job, token, isolation, now).map(|()| None)
            }
            ToMaster::Progress { progress, .. } => {
                match state::progress(&mut job, token, progress, now) {
                    Ok(()) => {
                        // Not waited for: progress licenses nothing. Its
                        // update still goes in order after held ones.
                        self.store.put(&job)?;
                        self.publish(UpdateKind::Progress, &job);
                        return Ok(());
                    }
                    Err(e) => Err(e),
                }
            }
            ToMaster::Finished {
                outcome, energy, ..
            } => state::finish(
                &mut job,
                token,
                outcome,
                energy,
                now,
                &self.retry,
                rand::random::<f64>(),
            )
            .map(Some),
        };
        match result {
            Ok(applied) => {
                self.put(&job).await?;
                if let Some(applied) = applied {
                    if let Some(n) = self.nodes.get_mut(&node_id) {
                        n.running.remove(&job_id);
                    }
                    tracing::info!(job = %job_id, state = job.state.as_str(), "attempt finished");
                    if let Some(e) = job.attempts.last().and_then(|a| a.energy.as_ref()) {
                        crate::metrics::job_energy(&job.spec, e);
                    }
                    self.after_applied(&job, &applied);
                } else {
                    self.publish(UpdateKind::State, &job);
                }
            }
            // A result for an attempt that is over (applied before: this is
            // a resend from the outbox) only needs its acknowledgement.
            Err(e) if is_result => {
                tracing::info!(job = %job_id, node = %node_id, token, error = %e, "result not applied (a resend, or a fenced attempt); acknowledged");
            }
            Err(JobOpError::StaleToken { current, got }) => {
                tracing::warn!(job = %job_id, node = %node_id, current, got, "stale token: telling the worker to kill that attempt");
                self.tell(&node_id, ToWorker::Kill { job_id, token });
            }
            // The attempt is not live on the master (ended, or never
            // started as the message says): whatever runs there for it must
            // stop, as for a stale token (docs/PROTOCOL.md, "Stale messages").
            Err(e) => {
                tracing::warn!(job = %job_id, node = %node_id, error = ?e, "message about an attempt that is not live: telling the worker to kill it");
                self.tell(&node_id, ToWorker::Kill { job_id, token });
            }
        }
        if is_result {
            // Held until the outcome is durable: then the worker may forget it.
            self.tell(&node_id, ToWorker::Ack(ack));
        }
        Ok(())
    }

    async fn spawn_admin(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(args) = self.admin_args.clone() {
            self.admin = Some(args.spawn(myself.clone()).await?);
        }
        Ok(())
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
            SchedulerMsg::SubmitExperiment(mut record, specs, reply) => {
                let now = now_ms();
                let mut jobs = Vec::with_capacity(specs.len());
                for spec in specs {
                    let seq = match state.store.next_seq() {
                        Ok(seq) => seq,
                        Err(e) => {
                            let _ = reply.send(Err(ExperimentRefused::store(&e, "")));
                            return Ok(());
                        }
                    };
                    jobs.push(Job::new(uuid::Uuid::now_v7().to_string(), seq, spec, now));
                }
                record.job_ids = jobs.iter().map(|j| j.id.clone()).collect();
                record.complete = false;
                // Stored off the actor, like `Submit`.
                let (store, me) = (state.store.clone(), myself.clone());
                tokio::spawn(async move {
                    let r = store_experiment(&store, &me, *record, jobs).await;
                    let _ = reply.send(r);
                });
            }
            SchedulerMsg::Submit(spec, reply) => {
                let seq = match state.store.next_seq() {
                    Ok(seq) => seq,
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                        return Ok(());
                    }
                };
                let job = Job::new(uuid::Uuid::now_v7().to_string(), seq, *spec, now_ms());
                // Stored off the actor, so submissions share a flush and the
                // scheduler does not wait on the disk.
                let (store, me) = (state.store.clone(), myself.clone());
                tokio::spawn(async move {
                    let r = store_new_job(&store, &me, &job).await;
                    let _ = reply.send(r.map(|()| job).map_err(|e| e.to_string()));
                });
            }
            SchedulerMsg::Subscribe(job_id, reply) => {
                let r = JobUpdates::open(&state.events, state.store.clone(), &job_id);
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            SchedulerMsg::Cancel(job_id, reply) => {
                let Some(mut job) = state.store.get(&job_id)? else {
                    let _ = reply.send(CancelReply::NotFound);
                    return Ok(());
                };
                if job.state.is_terminal() {
                    // As it is once durable (it may have just finished).
                    state.hold(Effect::CancelReply(
                        reply,
                        CancelReply::AlreadyFinished(Box::new(job)),
                    ));
                    return Ok(());
                }
                match state::cancel(&mut job, now_ms()) {
                    Ok(CancelAction::CancelledWhileQueued) => {
                        state.queue.remove(&job_id);
                        state.put(&job).await?;
                        m::job_finished(JobState::Cancelled);
                        state.publish(UpdateKind::State, &job);
                        state.gauges();
                        // Answered once the cancellation is durable.
                        state.hold(Effect::CancelReply(
                            reply,
                            CancelReply::Cancelled(Box::new(job)),
                        ));
                    }
                    Ok(CancelAction::NotifyWorker { node, token }) => {
                        state.tell(&node, ToWorker::Cancel { job_id, token });
                        state.hold(Effect::CancelReply(
                            reply,
                            CancelReply::Requested(Box::new(job)),
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(job = %job_id, error = ?e, "cancel refused");
                        state.hold(Effect::CancelReply(
                            reply,
                            CancelReply::AlreadyFinished(Box::new(job)),
                        ));
                    }
                }
            }
            SchedulerMsg::Retry(job_id, reply) => {
                let Some(mut job) = state.store.get(&job_id)? else {
                    let _ = reply.send(RetryReply::NotFound);
                    return Ok(());
                };
                // Refused before a queue place is drawn for it, with the
                // job as it is once durable (it may have just changed).
                if state::transition(job.state, state::JobEvent::Retry).is_err() {
                    state.hold(Effect::RetryReply(
                        reply,
                        RetryReply::NotRetryable(Box::new(job)),
                    ));
                    return Ok(());
                }
                let queue_seq = state.store.next_seq()?;
                let from = job.state;
                if let Err(e) = state::retry(&mut job, queue_seq, now_ms()) {
                    tracing::warn!(job = %job_id, error = ?e, "retry refused");
                    state.hold(Effect::RetryReply(
                        reply,
                        RetryReply::NotRetryable(Box::new(job)),
                    ));
                    return Ok(());
                }
                state.put(&job).await?;
                tracing::info!(job = %job_id, from = from.as_str(), attempts = job.attempt, "re-queued by a retry");
                metrics::counter!(m::JOBS_RETRIED, "reason" => "manual").increment(1);
                state.queue.push(queued(&job));
                state.publish(UpdateKind::State, &job);
                // Answered once the re-queue is durable, like every transition.
                state.hold(Effect::RetryReply(
                    reply,
                    RetryReply::Requeued(Box::new(job)),
                ));
                // As for a submission: place it now if a slot is free (the
                // assignment is held behind the re-queue's write).
                state.dispatch(myself).await?;
            }
            SchedulerMsg::AttachLink(link) => {
                let args = NodeLinkArgs {
                    link,
                    scheduler: myself.clone(),
                    lease_ms: state.lease_ms,
                };
                Actor::spawn_linked(None, NodeLink, args, myself.get_cell()).await?;
            }
            SchedulerMsg::NodeUp { hello, link } => {
                state.node_up(hello, link).await?;
                state.dispatch(myself).await?;
            }
            SchedulerMsg::FromWorker { node_id, msg } => {
                let finished = matches!(msg, ToMaster::Finished { .. });
                state.on_worker_message(node_id, msg).await?;
                if finished {
                    state.dispatch(myself).await?;
                }
            }
            SchedulerMsg::Fence => {
                state.expire_fences(myself).await?;
                state.dispatch(myself).await?;
            }
            SchedulerMsg::Wake => {
                state.wake_at = None;
                state.dispatch(myself).await?;
            }
            SchedulerMsg::Sync(reply) => {
                let _ = reply.send(());
            }
            SchedulerMsg::Durable(Durable { mark, result }) => {
                state.waiting_for = None;
                if let Err(e) = result {
                    // Nothing held may go: the writes may not be on disk.
                    return Err(format!("store flush failed: {e}").into());
                }
                state.release_up_to(mark);
            }
            SchedulerMsg::Drain(node_id, deadline, reply) => {
                let info = match state.nodes.get_mut(&node_id) {
                    Some(n) => {
                        n.draining = true;
                        tracing::info!(node = %node_id, ?deadline, "drain requested");
                        Some(node_info(&node_id, n))
                    }
                    None => None,
                };
                if info.is_some() {
                    // After the assignments already held for it.
                    state.tell(
                        &node_id,
                        ToWorker::Drain {
                            deadline_ms: deadline.as_millis() as u64,
                        },
                    );
                }
                let _ = reply.send(info);
            }
            SchedulerMsg::Nodes(reply) => {
                let mut nodes: Vec<NodeInfo> =
                    state.nodes.iter().map(|(id, n)| node_info(id, n)).collect();
                // Nodes that are gone but may still run fenced attempts.
                let mut gone: HashMap<&NodeId, Vec<JobId>> = HashMap::new();
                for (job_id, f) in &state.fenced {
                    if !state.nodes.contains_key(&f.node) {
                        gone.entry(&f.node).or_default().push(job_id.clone());
                    }
                }
                for (id, mut running) in gone {
                    running.sort();
                    nodes.push(NodeInfo {
                        id: id.clone(),
                        slots: 0,
                        running,
                        capabilities: Capabilities::default(),
                        draining: false,
                        connected: false,
                        power: None,
                    });
                }
                nodes.sort_by(|a, b| a.id.cmp(&b.id));
                let _ = reply.send(nodes);
            }
            SchedulerMsg::HttpAddr(reply) => {
                let _ = reply.send(state.admin.as_ref().map(|a| a.local_addr));
            }
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
        args.store.set_min_flush_interval(args.commit_interval);
        let mut state = SchedulerState {
            store: args.store,
            events: args.events,
            retry: args.retry,
            queue: ReadyQueue::new(),
            nodes: HashMap::new(),
            by_link: HashMap::new(),
            wake_at: None,
            admin_args: args.admin,
            admin: None,
            lease_ms: (args.lease.as_millis() as u64)
                .clamp(lease::MIN_LEASE_MS, lease::MAX_LEASE_MS),
            fenced: HashMap::new(),
            fence_timer_at: None,
            recovery_until_ms: None,
            held: std::collections::VecDeque::new(),
            last_mark: 0,
            unflushed: 0,
            waiting_for: None,
            max_commit_batch: args.max_commit_batch.max(1),
            admin_restarts: RestartIntensity::new(
                ADMIN_MAX_RESTARTS,
                ADMIN_RESTART_WINDOW.as_millis() as u64,
            ),
        };
        // Recovery. Queued jobs go back in the queue; `lost` (a crash
        // between losing and requeueing) is finished off. Attempts that were
        // assigned or running are fenced: their workers keep them while their
        // lease lasts and report them when they reconnect (then they are
        // adopted). The previous run may have granted a longer lease.
        for job in state.store.in_states(&[JobState::Queued])? {
            state.queue.push(queued(&job));
        }
        let granted = state
            .store
            .granted_lease()?
            .unwrap_or(0)
            .max(state.lease_ms);
        state.store.set_granted_lease(granted)?;
        let until_ms = lease::fence_deadline(mono_ms(), granted);
        state.recovery_until_ms = Some(until_ms);
        for job in state
            .store
            .in_states(&[JobState::Assigned, JobState::Running])?
        {
            if let Some(node) = &job.node {
                tracing::info!(job = %job.id, node = %node, "attempt in flight at start-up: waiting for its node");
                state.fenced.insert(
                    job.id.clone(),
                    Fenced {
                        node: node.clone(),
                        token: job.token,
                        until_ms,
                    },
                );
            }
        }
        for job in state.store.in_states(&[JobState::Lost])? {
            let node = job.node.clone().unwrap_or_default();
            state
                .requeue_attempt(
                    &job.id,
                    job.token,
                    &node,
                    FailureReason::WorkerCrash,
                    "interrupted while being requeued",
                )
                .await?;
        }
        // Recovery's own writes are durable before the scheduler starts.
        state.commit().await?;
        state.arm_fence_timer(&myself);
        state.gauges();
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        state.spawn_admin(&myself).await?;
        state.dispatch(&myself).await?;
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
        if let Err(e) = state.commit().await {
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
        let r = self.supervision_event(&myself, evt, state).await;
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

impl SchedulerActor {
    async fn supervision_event(
        &self,
        myself: &ActorRef<SchedulerMsg>,
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
                state.lose_node(myself, &node_id, &why)?;
                state.dispatch(myself).await?;
            }
            return Ok(());
        }
        if state.admin.as_ref().map(|a| a.cell.get_id()) == Some(id) {
            state.admin = None;
            if state.admin_restarts.record_restart(now_ms()) {
                tracing::error!("HTTP API actor ended ({why}); restarting it");
                state.spawn_admin(myself).await?;
            } else {
                tracing::error!("HTTP API actor ended ({why}) too often; stopping the scheduler");
                myself.stop(Some(format!("admin restart intensity exceeded: {why}")));
            }
        }
        Ok(())
    }
}

/// Stores a new `queued` job and hands it to `scheduler`, which queues it,
/// places it if it can, and publishes it; returns once the job is durable.
/// The write happens here, off the actor, so submissions share the work and
/// the scheduler does not encode them; the flush that makes it durable also
/// covers the job's assignment when a node was free
/// ([`SchedulerMsg::Accept`]): one flush between submission and dispatch.
/// `Ok` means the job is on disk; if the scheduler is gone by then the job
/// is queued on its next start.
/// Queue jobs already written (`Accept`, `AcceptMany`) and reply with the
/// mark whose flush makes them and any assignment durable.
async fn accept(
    myself: &ActorRef<SchedulerMsg>,
    state: &mut SchedulerState,
    jobs: Vec<Job>,
    reply: RpcReplyPort<WriteMark>,
) -> Result<(), ActorProcessingErr> {
    // The submissions were written before this message was sent: a mark
    // taken now covers them. No flush yet, so that the assignments below
    // (if any) share it.
    state.last_mark = state.store.mark_unflushed();
    let mut any_queued = false;
    for job in &jobs {
        state.unflushed += 1;
        state.publish(UpdateKind::State, job);
        if job.state == JobState::Queued {
            state.queue.push(queued(job));
            any_queued = true;
        }
    }
    let dispatched = if any_queued {
        state.dispatch(myself).await
    } else {
        Ok(())
    };
    state.store.request_flush();
    // The submissions are stored whatever became of the dispatch.
    let _ = reply.send(state.last_mark);
    dispatched
}

/// Why `SubmitExperiment` stored no experiment, or not all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExperimentRefused {
    /// An experiment of that name exists; nothing was written.
    Exists,
    /// The store failed. The record, if written, says how many jobs were
    /// expected; the jobs written before the failure are queued.
    Store {
        /// What failed, and how many jobs landed.
        message: String,
        /// The store refused a write for want of space (`503 storage_full`).
        full: bool,
    },
}

impl ExperimentRefused {
    fn store(e: &StoreError, context: &str) -> ExperimentRefused {
        ExperimentRefused::Store {
            message: format!("{e}{context}"),
            full: matches!(e, StoreError::Full { .. }),
        }
    }
}

/// The write order of `SubmitExperiment` (runtime `store::experiments`):
/// record (incomplete), jobs, flush, record (complete), flush.
async fn store_experiment(
    store: &Store,
    scheduler: &ActorRef<SchedulerMsg>,
    mut record: Experiment,
    jobs: Vec<Job>,
) -> Result<Experiment, ExperimentRefused> {
    let failed = |e: StoreError| ExperimentRefused::store(&e, "");
    if !store.insert_experiment(&record).map_err(failed)? {
        return Err(ExperimentRefused::Exists);
    }
    let mut landed = Vec::with_capacity(jobs.len());
    let mut error = None;
    for job in jobs {
        match store.put(&job) {
            Ok(()) => landed.push(job),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    // Whatever landed is queued (and so never silently lost).
    let n = landed.len() as u64;
    match ractor::call_t!(
        scheduler,
        SchedulerMsg::AcceptMany,
        ACCEPT_TIMEOUT_MS,
        landed
    ) {
        Ok(mark) => store.wait_mark(mark).await.map_err(failed)?,
        Err(e) => {
            store.flush().await.map_err(failed)?;
            tracing::error!(experiment = %record.name, error = %e, "scheduler unreachable after storing an experiment's jobs");
        }
    }
    metrics::counter!(m::JOBS_SUBMITTED).increment(n);
    if let Some(e) = error {
        return Err(ExperimentRefused::store(
            &e,
            &format!(
                " ({n} of {} jobs stored and queued; the experiment is marked incomplete)",
                record.job_ids.len()
            ),
        ));
    }
    record.complete = true;
    store.put_experiment(&record).map_err(failed)?;
    store.flush().await.map_err(failed)?;
    Ok(record)
}

pub(crate) async fn store_new_job(
    store: &Store,
    scheduler: &ActorRef<SchedulerMsg>,
    job: &Job,
) -> Result<(), ffrtmp_os::store::StoreError> {
    store.put(job)?;
    match ractor::call_t!(
        scheduler,
        SchedulerMsg::Accept,
        ACCEPT_TIMEOUT_MS,
        Box::new(job.clone())
    ) {
        Ok(mark) => store.wait_mark(mark).await?,
        Err(e) => {
            // Stored, so not lost once flushed: the scheduler queues it on
            // its next start.
            store.flush().await?;
            tracing::error!(job = %job.id, error = %e, "scheduler unreachable after storing a job");
        }
    }
    metrics::counter!(m::JOBS_SUBMITTED).increment(1);
    Ok(())
}

/// Whether an actor error is the store refusing a write for want of space,
/// or while it reopens after a failed log write ([`StoreError::is_storage_full`]).
fn is_storage_full(e: &ActorProcessingErr) -> bool {
    e.downcast_ref::<StoreError>()
        .is_some_and(StoreError::is_storage_full)
}

/// How long a fenced attempt whose requeue could not be stored waits before
/// it is tried again.
const FENCE_RETRY_MS: u64 = 1_000;

/// How long [`store_new_job`] waits for the scheduler to take a job.
const ACCEPT_TIMEOUT_MS: u64 = 10_000;

/// Shared handle used by the HTTP layer.
pub type SchedulerRef = Arc<ActorRef<SchedulerMsg>>;
