//! [`NodeMsg`], the messages of a worker's `NodeActor`, in a leaf module:
//! the node spawns `JobActor`s and its power sampler, and they report back
//! to it with these messages, so both sides import this module and the
//! dependency goes one way only: `node` → `job`, `power` → `node_msg`.
//! Re-exported as `crate::node::NodeMsg`.

use std::time::Duration;

use ffrtmp_runtime::model::{Energy, Isolation, JobId, NodePower, Outcome, Progress};
use ffrtmp_runtime::wire::{ToMaster, ToWorker};
use ractor::RpcReplyPort;
use tokio::sync::oneshot;

use crate::link::LinkEnd;

/// The messages a [`NodeActor`](crate::node::NodeActor) handles. Its owner sends `Hello`,
/// `LinkUp` and `Drain`; its `JobActor`s send `JobStarted`, `JobProgress`
/// and `JobFinished`; its sampler sends `Power`; the rest come from its own
/// link reader and timers.
pub enum NodeMsg {
    /// A new link to the master, whose handshake carried the hello from
    /// [`NodeMsg::Hello`]. `down` is dropped when the node is done with it.
    LinkUp {
        /// The worker's end of the link; replaces the current one.
        link: LinkEnd,
        /// Dropped when the node lets go of this link (it ended, was
        /// replaced, or the node stopped): the owner's cue to reconnect.
        down: oneshot::Sender<()>,
    },
    /// The link of generation `gen` ended.
    LinkDown(u64),
    /// A frame from the master on the link of generation `gen`.
    Inbound(u64, ToWorker),
    /// The hello for the next link: identity, capabilities, and the attempts
    /// this node holds (running, and finished but unacknowledged).
    Hello(RpcReplyPort<ToMaster>),
    /// Periodic: ping, and stop the jobs when the lease runs out.
    Tick,
    /// From a `JobActor`: FFmpeg is running; forwarded to the master (and
    /// resent on every new link while the attempt runs).
    JobStarted {
        /// The job.
        job_id: JobId,
        /// The attempt's fencing token.
        token: u64,
        /// How FFmpeg was isolated (a cgroup, or `nice` only).
        isolation: Isolation,
    },
    /// From a `JobActor`: FFmpeg's latest progress; forwarded to the master
    /// if linked (dropped otherwise: the next one supersedes it).
    JobProgress {
        /// The job.
        job_id: JobId,
        /// The attempt's fencing token.
        token: u64,
        /// The figures FFmpeg reported.
        progress: Progress,
    },
    /// From a `JobActor`, once, just before it stops: the attempt's
    /// outcome. Written to the outbox, then sent to the master, and resent
    /// until the master acknowledges it.
    JobFinished {
        /// The job.
        job_id: JobId,
        /// The attempt's fencing token.
        token: u64,
        /// How the attempt ended.
        outcome: Outcome,
        /// What the attempt cost, when this node samples power.
        energy: Option<Energy>,
    },
    /// Drain: take no new jobs, let the running ones finish for at most
    /// `deadline`, then stop them (reported transient) and stop the node.
    Drain {
        /// How long running jobs may still take.
        deadline: Duration,
    },
    /// The drain deadline passed.
    DrainDeadline,
    /// The node's power, from its `PowerSamplerActor` (about once a second):
    /// forwarded to the master.
    Power(NodePower),
    /// A `JobActor`'s `pre_start` failed (or panicked): it reported nothing
    /// and is not linked under the node. Reported as a transient
    /// `worker_crash` if the attempt is still the node's.
    JobStartFailed {
        /// The job.
        job_id: JobId,
        /// The attempt's fencing token.
        token: u64,
        /// What ractor said.
        why: String,
    },
    /// Test-only: make the JobActor of `job_id` panic.
    #[cfg(feature = "fault-injection")]
    InjectJobPanic(JobId),
}
