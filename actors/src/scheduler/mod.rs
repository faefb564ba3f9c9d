//! `SchedulerActor`: the root of the master's tree. Owns the ready queue,
//! places jobs on nodes, applies every state transition through
//! `ffrtmp_runtime::state`, and supervises one `NodeLink` per connected worker
//! and the `AdminActor` (HTTP).
//!
//! Talk to it with [`SchedulerMsg`]; [`crate::embed`] wraps the messages an
//! embedding application needs (submit, subscribe, attach a worker).
//!
//! The decisions are the pure core's ([`ffrtmp_runtime::scheduler::Core`]:
//! placement, the worker-message rules, adoption and fencing, cancel, retry,
//! drain, and the order held effects go in). This module is its driver:
//! the mailbox (`driver.rs`: messages to core calls, effects executed),
//! the durability waiter, links and the HTTP API under it
//! (`supervision.rs`), and submissions stored off the actor (`submit.rs`).
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

mod driver;
mod submit;
mod supervision;

use std::sync::Arc;
use std::time::Duration;

use ffrtmp_os::store::{Store, WriteMark};
use ffrtmp_runtime::experiment::Experiment;
use ffrtmp_runtime::lease;
use ffrtmp_runtime::model::{Job, JobId, JobSpec, NodeId};
use ffrtmp_runtime::retry::RetryPolicy;
use ffrtmp_runtime::wire::ToMaster;
use ractor::{ActorRef, RpcReplyPort};

use crate::events::{JobEvents, JobUpdates};
use crate::link::LinkEnd;
use crate::node_link::{LinkReport, NodeHello, NodeLinkMsg};
use crate::supervised::ServingChild;

pub use driver::SchedulerState;
/// The replies and the node view are the core's types.
pub use ffrtmp_runtime::scheduler::{CancelReply, NodeInfo, RetryReply};
pub(crate) use submit::store_new_job;
pub use submit::ExperimentRefused;

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

impl From<LinkReport> for SchedulerMsg {
    fn from(report: LinkReport) -> SchedulerMsg {
        match report {
            LinkReport::NodeUp { hello, link } => SchedulerMsg::NodeUp { hello, link },
            LinkReport::FromWorker { node_id, msg } => SchedulerMsg::FromWorker { node_id, msg },
            LinkReport::Sync(reply) => SchedulerMsg::Sync(reply),
        }
    }
}

/// What a [`SchedulerMsg::Durable`] carries; made by the scheduler only.
pub struct Durable {
    mark: WriteMark,
    result: Result<(), String>,
}

/// The root of the master's tree: the single writer of job transitions.
/// Spawn it with [`crate::embed::spawn_scheduler`] (or `Actor::spawn_linked`
/// with [`SchedulerArgs`]); it spawns its HTTP API, if configured, and a
/// `NodeLink` per attached worker under itself, and stops them when it
/// stops. It stops itself only when its HTTP API fails more often than
/// [`ADMIN_MAX_RESTARTS`] allows; a failing store makes it fail.
pub struct SchedulerActor;

/// Shared handle used by the HTTP layer.
pub type SchedulerRef = Arc<ActorRef<SchedulerMsg>>;
