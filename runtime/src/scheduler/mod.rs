//! The master's scheduling decisions, sans I/O: events in, effects out.
//!
//! [`Core`] owns the ready queue, the nodes as the master sees them, the
//! fenced attempts of lost nodes and the effects held back for durability
//! (group commit). It reads and writes jobs through [`JobStore`], a small
//! trait ([`MemStore`] in memory for tests; the sled `Store` in
//! `store/durable_impl.rs`). Time ([`Clock`]: the wall clock for job
//! records, a monotonic one for fences) and randomness (a seed for the
//! retry jitter) come in as data; nothing here reads a clock, draws a
//! random number, spawns a task or touches a socket. The ractor driver
//! (`ffrtmp_actors::scheduler`) maps its mailbox onto the methods of
//! [`Core`], executes the [`Effect`]s it takes with [`Core::take_effects`],
//! waits for the marks [`Core::start_waiter`] and [`Core::take_commit_due`]
//! name, and reports them with [`Core::durable`].
//!
//! The rules (docs/PROTOCOL.md), each in one place:
//! - placement: [`Core`]'s dispatch loop (`core.rs`);
//! - what a worker's message does, and the `Kill` for a stale or unknown
//!   attempt: `worker.rs`;
//! - node up (adoption versus requeue), node lost (fencing until
//!   [`crate::lease::fence_deadline`]), fence expiry: `nodes.rs`;
//! - accept, cancel, retry, drain: `requests.rs`;
//! - group commit: every effect a write licenses waits until that write is
//!   durable and effects go in the order they were made (`core.rs`,
//!   `hold`/`durable`).

mod core;
mod durable;
mod nodes;
mod requests;
mod worker;

#[cfg(test)]
mod tests;

use serde::Serialize;

use crate::model::{Codec, Energy};
use crate::model::{Job, JobId, JobState, NodeId, NodePower};
use crate::wire::{AttemptRef, Capabilities, ToWorker};

pub use self::core::{Config, Core};
pub use self::durable::{JobStore, MemStore, MemStoreError, WriteMark};

/// The master's clocks at an event: `now_ms` (Unix time, for job records
/// and retry backoff) and `mono_ms` (monotonic, for fences and leases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Clock {
    /// Unix time in milliseconds.
    pub now_ms: u64,
    /// A monotonic clock in milliseconds (the link's `last_heard` is on it).
    pub mono_ms: u64,
}

/// A worker link, as the driver names it (a new link, a new id).
pub type LinkId = u64;

/// A reply port the driver keeps; the core hands it back in an effect.
pub type Ticket = u64;

/// What kind of change a published job update is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// A state or attempt change.
    State,
    /// Progress only.
    Progress,
}

/// The core's timers; the driver sends the event back after `after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// A retry backoff may have elapsed: call [`Core::wake`].
    Wake,
    /// A fence may have expired: call [`Core::fence`].
    Fence,
}

/// A count or gauge for the metrics registry (no effect on decisions).
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// A job reached a terminal state.
    Finished(JobState),
    /// A successful job's wall time.
    WallSeconds(f64),
    /// A job was requeued; the reason as the API names it.
    Retried(String),
    /// A finished attempt's energy, with what the metric is labelled by:
    /// the job's scenario (`None`: explicit settings) and codec.
    Energy {
        /// The job's scenario preset, if it named one.
        scenario: Option<String>,
        /// The job's codec.
        codec: Codec,
        /// The attempt's energy.
        energy: Energy,
    },
    /// A node's power report.
    NodePower(NodeId, NodePower),
    /// Queue depth by priority and the jobs running.
    Gauges {
        /// Depth per priority.
        depth: [(crate::model::Priority, usize); 5],
        /// Jobs the nodes run.
        running: usize,
    },
}

/// What the driver does for the core, in the order taken.
#[derive(Debug)]
pub enum Effect {
    /// A message to a worker, on the link it had when the effect was made.
    Send {
        /// The link.
        link: LinkId,
        /// The message.
        msg: ToWorker,
    },
    /// A job update for watchers.
    Publish(UpdateKind, Box<Job>),
    /// The answer to a cancel.
    CancelReply(Ticket, CancelReply),
    /// The answer to a retry.
    RetryReply(Ticket, RetryReply),
    /// Stop a link (replaced by a newer one of the same node).
    StopLink(LinkId, String),
    /// Start a flush of everything written so far (returns at once).
    RequestFlush,
    /// A metric.
    Metric(Metric),
    /// Arm a timer.
    Timer(Timer, u64),
}

/// A worker's hello, as the core needs it.
#[derive(Debug, Clone)]
pub struct Hello {
    /// The worker's node id.
    pub node_id: NodeId,
    /// Jobs it runs at once.
    pub slots: u32,
    /// What it can do.
    pub capabilities: Capabilities,
    /// Attempts it runs now.
    pub running: Vec<AttemptRef>,
    /// Attempts whose result waits in its outbox.
    pub unacked: Vec<AttemptRef>,
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
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct NodeInfo {
    /// The node's id (from its certificate in a cluster).
    #[schema(value_type = String)]
    pub id: NodeId,
    /// Jobs it runs at once (0 for a node that is gone).
    pub slots: u32,
    /// The jobs the master believes it runs, sorted.
    #[schema(value_type = Vec<String>)]
    pub running: Vec<JobId>,
    /// What it said it can do when it connected.
    pub capabilities: Capabilities,
    /// It takes no new jobs and leaves once its jobs are done.
    pub draining: bool,
    /// False for a node that is gone but whose attempts are fenced: they
    /// may still run there until its lease ends, or be adopted when it
    /// reconnects.
    pub connected: bool,
    /// The node's power by domain and source, from its last report
    /// (absent until the first, and for a node without a sampler).
    pub power: Option<NodePower>,
}
