//! `JobActor`: owns one FFmpeg process group and its cgroup, from spawn to
//! reaping.
//!
//! Ownership is enforced by `Drop`, not by `post_stop` (which ractor skips
//! when an actor panics): the actor's state holds the [`ProcessGuard`] and the
//! [`JobCgroup`], so whichever way the actor ends its state is dropped and the
//! whole process group is killed and the cgroup removed.
//!
//! FFmpeg runs under a guard process (see [`ffrtmp_spawn`]) that
//! kills it when the lease given in [`JobArgs::lease`] runs out, unless
//! renewed with [`JobMsg::RenewLease`]: that fences the job even when this
//! whole worker process is frozen.
//!
//! A file job's input and output are opened here, beneath the worker's
//! media roots without following any symlink
//! ([`ffrtmp_os::confine`]), and FFmpeg gets the descriptors, never
//! the paths. The input must probe as a container on the allow-list
//! ([`ffmpeg::INPUT_FORMATS`]); the output is written to a temporary file
//! in the resolved directory and published under its name only when FFmpeg
//! succeeds (dropped unpublished, it is unlinked).
//!
//! The actor reports to its parent `NodeActor` exactly once with `Finished`,
//! then stops. It is never restarted in place: a retry is a new attempt with a
//! new fencing token, decided by the master.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ffrtmp_os::cgroup::{CgroupManager, JobCgroup};
use ffrtmp_os::confine::{ConfineError, OutputFile, Resolver};
use ffrtmp_os::probe::{self, ProbeError};
use ffrtmp_runtime::ffmpeg::ProgressUpdate;
use ffrtmp_runtime::model::{
    Energy, Failure, FailureReason, Input, JobResult, Outcome, Output, Progress, QualityResult,
};
use ffrtmp_runtime::wire::{Assignment, AttemptRef};
use ffrtmp_spawn::{ProcessGuard, RunLog, StderrRing};
use nix::sys::signal::Signal;
use ractor::{ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use crate::node_msg::NodeMsg;
use crate::power::{finish_power, track_power, PowerMsg};
use crate::quality_pass::{self, QualityPlan};

mod actor;
mod end;
mod files;

/// Lines of FFmpeg stderr kept for a failure report.
const STDERR_LINES: usize = 40;
const STDERR_BYTES: usize = 16 * 1024;
/// How long the waiter lets the output readers drain after the process exits.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// How often the stall detector looks at progress.
const STALL_CHECK: Duration = Duration::from_millis(500);
/// How long creating the attempt's cgroup may take (sysfs writes, on the
/// blocking pool); past it the job runs with `nice` only, as when the cgroup
/// cannot be created.
const CGROUP_SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long starting FFmpeg (the guard's fork, its set-up, the exec) may
/// take before the attempt is given up as the node's failure (transient).
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a `JobActor` needs, handed over by its `NodeActor`.
pub struct JobArgs {
    /// What to run: the job's spec, its id and the attempt's fencing token.
    pub assignment: Assignment,
    /// The node to report to (`JobStarted`, `JobProgress`, then one
    /// `JobFinished`).
    pub node: ActorRef<NodeMsg>,
    /// The FFmpeg binary.
    pub ffmpeg: PathBuf,
    /// The ffprobe binary (measures a file output after a success).
    pub ffprobe: PathBuf,
    /// The node's working `ffrtmp-vmaf`, for a quality pass asking for
    /// VMAF (`None`: the node cannot compute it).
    pub vmaf_bin: Option<PathBuf>,
    /// Where the scratch file of a `null` output's quality pass goes
    /// (`None`: the system's temporary directory).
    pub work_dir: Option<PathBuf>,
    /// Where the attempt's cgroup is created (with the job's limits).
    pub cgroups: Arc<CgroupManager>,
    /// The `nice` value FFmpeg runs at.
    pub nice: i32,
    /// SIGTERM → SIGKILL grace period for cancel and timeout.
    pub kill_grace: Duration,
    /// The job's initial lease: the guard process SIGKILLs FFmpeg this long
    /// after the spawn unless [`JobMsg::RenewLease`] extends it. `None`: no
    /// deadline (FFmpeg is still killed if this worker process dies).
    /// Counted from the actor's start, so time spent probing is taken off.
    pub lease: Option<Duration>,
    /// The node's lease as it stands when FFmpeg is forked: the instant it
    /// ends on [`crate::mono_ms`]'s clock (`0`: none), kept current by the
    /// node. Overrides `lease` when set: the probe may take long enough for
    /// the node to renew (or lose) its lease meanwhile.
    pub lease_end_ms: Option<Arc<AtomicU64>>,
    /// The node's power sampler, which attributes energy to this attempt.
    pub power: Option<ActorRef<PowerMsg>>,
    /// Where FFmpeg's start and stop are recorded (`--run-log`).
    pub run_log: Option<PathBuf>,
    /// The worker's media roots (canonical): a file job's paths are opened
    /// beneath them, or the job fails (`path_outside_media_root`).
    pub media_roots: Vec<PathBuf>,
}

/// Why we are killing the process; decides how its exit is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillReason {
    Cancel,
    Timeout,
    Stall,
    Drain,
    LeaseExpired,
}

/// The messages a [`JobActor`] handles. Its node sends `Cancel`,
/// `DrainStop`, `RenewLease` and `LeaseExpired`; the rest come from the
/// actor's own tasks and timers.
pub enum JobMsg {
    /// A block of FFmpeg's `-progress` output, parsed (from the stdout reader).
    Progress(ProgressUpdate),
    /// The process was reaped (after its output was drained).
    Exited(std::process::ExitStatus),
    /// Stop FFmpeg (SIGTERM, SIGKILL after the kill grace); the attempt
    /// ends `cancelled`. The node sends it when the master cancels the job
    /// or kills a stale attempt.
    Cancel,
    /// The node's drain deadline passed: stop, to be retried elsewhere.
    DrainStop,
    /// The job's `timeout_s` passed: stop; the attempt ends `timed_out`.
    Timeout,
    /// Periodic: stop as `stalled` (transient) if FFmpeg has made no
    /// progress for the job's `stall_timeout_s`.
    StallCheck,
    /// Grace period after SIGTERM is over.
    Escalate,
    /// Moves the guard process's deadline to this long from now.
    RenewLease(Duration),
    /// The node's lease with the master expired: stop, to be retried elsewhere.
    LeaseExpired,
    /// The quality pass ended (from its task).
    QualityDone(Box<QualityResult>),
    /// Test-only: make this actor panic mid-job.
    #[cfg(feature = "fault-injection")]
    InjectPanic,
}

/// A `JobActor`'s state (private; public only because ractor's `Actor` trait
/// names it). Dropping it kills the process group and removes the cgroup.
pub struct JobActorState {
    job_id: String,
    token: u64,
    started: Instant,
    /// Declared before `cgroup` so the group is killed before the cgroup is removed.
    /// The only strong reference: dropping it kills the group.
    guard: Option<Arc<ProcessGuard>>,
    /// A file output's temporary file: published on success, unlinked when
    /// dropped otherwise (after the guard above has killed the group).
    output_file: Option<OutputFile>,
    cgroup: Option<JobCgroup>,
    stderr: Arc<Mutex<StderrRing>>,
    last: Progress,
    last_advance: Instant,
    stall_timeout: Option<Duration>,
    kill: Option<KillReason>,
    kill_grace: Duration,
    node: ActorRef<NodeMsg>,
    output: Output,
    /// The output's constant frame rate.
    fps: u32,
    /// The FFmpeg encoder the encode runs with (the result's `encoder`).
    encoder: String,
    expected_duration_s: Option<f64>,
    tasks: Vec<JoinHandle<()>>,
    reported: bool,
    /// Set when the power sampler tracks this attempt.
    power: Option<ActorRef<PowerMsg>>,
    run_log: Option<RunLog>,
    /// Set when the job asked for quality metrics: run after a success.
    quality: Option<QualityPlan>,
    /// The node's power sampler (charges the quality pass too).
    sampler: Option<ActorRef<PowerMsg>>,
    /// Set while the quality pass runs.
    quality_running: bool,
    /// Stops the running quality pass, with the reason.
    quality_stop: Option<tokio::sync::watch::Sender<Option<&'static str>>>,
    /// The attempt's cgroup while the quality pass uses it.
    shared_cgroup: Option<Arc<JobCgroup>>,
    /// The encode's outcome and energy, reported once the pass ends.
    pending: Option<(Outcome, Option<Energy>)>,
}

impl Drop for JobActorState {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Stopped without its figures (it failed): the sampler forgets it.
        if let Some(p) = self.power.take() {
            let _ = p.cast(PowerMsg::Untrack(self.attempt()));
        }
        // Stopped in its quality pass: that too.
        if let (Some(p), true) = (&self.sampler, self.quality_running) {
            let _ = p.cast(PowerMsg::Untrack(quality_pass::quality_attempt(
                &self.attempt(),
            )));
        }
        // Field drop order does the rest: the guard kills the group, then the
        // cgroup kills stragglers and removes itself.
    }
}

/// Runs one attempt of one job: FFmpeg in its own process group and cgroup,
/// under a guard process. Spawned linked under its `NodeActor` by the node
/// itself, one per assignment; it reports its outcome once and stops.
pub struct JobActor;

impl JobActor {
    /// The ractor name of an attempt's actor (unique per attempt).
    pub fn name(job_id: &str, token: u64) -> String {
        format!("ffrtmp-job-{job_id}-{token}")
    }
}

/// Report the attempt's outcome to the node, exactly once.
fn report(state: &mut JobActorState, outcome: Outcome, energy: Option<Energy>) {
    if state.reported {
        return;
    }
    state.reported = true;
    let _ = state.node.cast(NodeMsg::JobFinished {
        job_id: state.job_id.clone(),
        token: state.token,
        outcome,
        energy,
    });
}

#[cfg(test)]
mod tests;
