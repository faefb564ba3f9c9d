//! `JobActor`: owns one FFmpeg process group and its cgroup, from spawn to
//! reaping.
//!
//! Ownership is enforced by `Drop`, not by `post_stop` (which ractor skips
//! when an actor panics): the actor's state holds the [`ProcessGuard`] and the
//! [`JobCgroup`], so whichever way the actor ends its state is dropped and the
//! whole process group is killed and the cgroup removed.
//!
//! The actor reports to its parent `NodeActor` exactly once with `Finished`,
//! then stops. It is never restarted in place: a retry is a new attempt with a
//! new fencing token, decided by the master.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ffrtmp_runtime::cgroup::{CgroupManager, JobCgroup};
use ffrtmp_runtime::ffmpeg::{self, ProgressParser, ProgressUpdate};
use ffrtmp_runtime::model::{
    Failure, FailureReason, Input, Isolation, JobResult, Outcome, Output, Progress,
};
use ffrtmp_runtime::process::{self, ProcessGuard, SpawnSpec, StderrRing};
use ffrtmp_runtime::wire::Assignment;
use nix::sys::signal::Signal;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;

use crate::node::NodeMsg;

/// Lines of FFmpeg stderr kept for a failure report.
const STDERR_LINES: usize = 40;
const STDERR_BYTES: usize = 16 * 1024;
/// How long the waiter lets the output readers drain after the process exits.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// How often the stall detector looks at progress.
const STALL_CHECK: Duration = Duration::from_millis(500);

/// Everything a `JobActor` needs, handed over by its `NodeActor`.
pub struct JobArgs {
    pub assignment: Assignment,
    pub node: ActorRef<NodeMsg>,
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    pub cgroups: Arc<CgroupManager>,
    pub nice: i32,
    /// SIGTERM → SIGKILL grace period for cancel and timeout.
    pub kill_grace: Duration,
}

/// Why we are killing the process; decides how its exit is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillReason {
    Cancel,
    Timeout,
    Stall,
    Drain,
}

pub enum JobMsg {
    Progress(ProgressUpdate),
    /// The process was reaped (after its output was drained).
    Exited(std::process::ExitStatus),
    Cancel,
    /// The node's drain deadline passed: stop, to be retried elsewhere.
    DrainStop,
    Timeout,
    StallCheck,
    /// Grace period after SIGTERM is over.
    Escalate,
    /// Test-only: make this actor panic mid-job.
    #[cfg(feature = "fault-injection")]
    InjectPanic,
}

pub struct JobState {
    job_id: String,
    token: u64,
    started: Instant,
    /// Declared before `cgroup` so the group is killed before the cgroup is removed.
    /// The only strong reference: dropping it kills the group.
    guard: Option<Arc<ProcessGuard>>,
    cgroup: Option<JobCgroup>,
    stderr: Arc<Mutex<StderrRing>>,
    last: Progress,
    last_advance: Instant,
    stall_timeout: Option<Duration>,
    kill: Option<KillReason>,
    kill_grace: Duration,
    node: ActorRef<NodeMsg>,
    output: Output,
    expected_duration_s: Option<f64>,
    tasks: Vec<JoinHandle<()>>,
    reported: bool,
}

impl Drop for JobState {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Field drop order does the rest: the guard kills the group, then the
        // cgroup kills stragglers and removes itself.
    }
}

pub struct JobActor;

impl JobActor {
    /// The ractor name of an attempt's actor (unique per attempt).
    pub fn name(job_id: &str, token: u64) -> String {
        format!("ffrtmp-job-{job_id}-{token}")
    }
}

/// Report the attempt's outcome to the node, exactly once.
fn report(state: &mut JobState, outcome: Outcome) {
    if state.reported {
        return;
    }
    state.reported = true;
    let _ = state.node.cast(NodeMsg::JobFinished {
        job_id: state.job_id.clone(),
        token: state.token,
        outcome,
    });
}

impl Actor for JobActor {
    type Msg = JobMsg;
    type State = JobState;
    type Arguments = JobArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<JobMsg>,
        args: JobArgs,
    ) -> Result<JobState, ActorProcessingErr> {
        let a = &args.assignment;
        let limits = &a.spec.resource_limits;
        let cgroup_name = format!("job-{}-{}", a.job_id, a.token);

        let cgroup = if args.cgroups.isolation() == Isolation::None {
            None
        } else {
            match args.cgroups.create_job(&cgroup_name, limits) {
                Ok(cg) => Some(cg),
                Err(e) => {
                    tracing::warn!(job = %a.job_id, error = %e, "cgroup unavailable; running with nice only");
                    None
                }
            }
        };
        let isolation = if cgroup.is_some() {
            args.cgroups.isolation()
        } else {
            Isolation::None
        };

        let expected_duration_s = match &a.spec.input {
            Input::Testsrc { duration_s } => Some(*duration_s),
            Input::File { path } => ffmpeg::probe_duration(&args.ffprobe, path)
                .await
                .ok()
                .flatten(),
        };

        let mut state = JobState {
            job_id: a.job_id.clone(),
            token: a.token,
            started: Instant::now(),
            guard: None,
            cgroup,
            stderr: Arc::new(Mutex::new(StderrRing::new(STDERR_LINES, STDERR_BYTES))),
            last: Progress::default(),
            last_advance: Instant::now(),
            stall_timeout: limits.stall_timeout_s.map(Duration::from_secs),
            kill: None,
            kill_grace: args.kill_grace,
            node: args.node.clone(),
            output: a.spec.output.clone(),
            expected_duration_s,
            tasks: Vec::new(),
            reported: false,
        };

        let cmd = ffmpeg::build_command(&args.ffmpeg, &a.spec);
        let spec = SpawnSpec {
            program: cmd.program,
            args: cmd.args,
            env: cmd.env,
            nice: args.nice,
            cgroup_procs: state
                .cgroup
                .as_ref()
                .map(|c| c.procs_files())
                .unwrap_or_default(),
            lease: None,
        };
        let spawned = match process::spawn(spec).await {
            Ok(s) => s,
            Err(e) => {
                metrics::counter!(crate::metrics::SPAWN_FAILURES).increment(1);
                let failure = Failure::new(
                    FailureReason::SpawnFailed,
                    format!("could not start ffmpeg: {e}"),
                );
                report(&mut state, Outcome::Failed { failure });
                myself.stop(Some("spawn failed".into()));
                return Ok(state);
            }
        };
        let mut child = spawned.child;
        let guard = spawned.guard;
        tracing::info!(job = %state.job_id, pid = guard.pid(), ?isolation, "ffmpeg started");
        let _ = state.node.cast(NodeMsg::JobStarted {
            job_id: state.job_id.clone(),
            token: state.token,
            isolation,
        });

        // stdout: machine-readable progress.
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let me = myself.clone();
            let expected = state.expected_duration_s;
            readers.push(tokio::spawn(async move {
                let mut parser = ProgressParser::new(expected);
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(update) = parser.push_line(&line) {
                        let _ = me.cast(JobMsg::Progress(update));
                    }
                }
            }));
        }
        // stderr: bounded ring for failure reports.
        if let Some(stderr) = child.stderr.take() {
            let ring = state.stderr.clone();
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut r) = ring.lock() {
                        r.push(&line);
                    }
                }
            }));
        }
        // Waiter: reap, let the readers drain, then report the exit. It holds
        // only a weak reference to the guard, so the actor's state stays the
        // sole owner of the process group.
        let guard_arc = Arc::new(guard);
        let weak: Weak<ProcessGuard> = Arc::downgrade(&guard_arc);
        let me = myself.clone();
        let waiter = tokio::spawn(async move {
            let status = child.wait().await;
            if let Some(g) = weak.upgrade() {
                g.mark_reaped();
            }
            for r in readers {
                let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, r).await;
            }
            if let Ok(status) = status {
                let _ = me.cast(JobMsg::Exited(status));
            }
        });
        state.tasks.push(waiter);
        state.guard = Some(guard_arc);

        if let Some(t) = limits.timeout_s {
            myself.send_after(Duration::from_secs(t), || JobMsg::Timeout);
        }
        if state.stall_timeout.is_some() {
            myself.send_interval(STALL_CHECK, || JobMsg::StallCheck);
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<JobMsg>,
        msg: JobMsg,
        state: &mut JobState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JobMsg::Progress(update) => {
                if update.progress.frame > state.last.frame
                    || update.progress.out_time_s > state.last.out_time_s
                {
                    state.last_advance = Instant::now();
                }
                state.last = update.progress.clone();
                let _ = state.node.cast(NodeMsg::JobProgress {
                    job_id: state.job_id.clone(),
                    token: state.token,
                    progress: update.progress,
                });
            }
            JobMsg::Cancel => begin_kill(&myself, state, KillReason::Cancel),
            JobMsg::DrainStop => begin_kill(&myself, state, KillReason::Drain),
            JobMsg::Timeout => begin_kill(&myself, state, KillReason::Timeout),
            JobMsg::StallCheck => {
                if let Some(limit) = state.stall_timeout {
                    if state.kill.is_none() && state.last_advance.elapsed() >= limit {
                        tracing::warn!(job = %state.job_id, "no progress for {limit:?}: killing as stalled");
                        begin_kill(&myself, state, KillReason::Stall);
                    }
                }
            }
            JobMsg::Escalate => {
                if let Some(g) = &state.guard {
                    let _ = g.signal_group(Signal::SIGKILL);
                }
            }
            JobMsg::Exited(status) => {
                let outcome = classify(state, status);
                // Kill stragglers and remove the cgroup before reporting, so
                // that "finished" always means "nothing left behind".
                state.guard = None;
                if let Some(cg) = state.cgroup.take() {
                    if let Err(e) = tokio::task::spawn_blocking(move || cg.remove()).await? {
                        tracing::warn!(error = %e, "cgroup removal failed");
                    }
                }
                report(state, outcome);
                myself.stop(None);
            }
            #[cfg(feature = "fault-injection")]
            JobMsg::InjectPanic => {
                panic!(
                    "fault injection: JobActor {} panics on request",
                    state.job_id
                );
            }
        }
        Ok(())
    }
}

fn begin_kill(myself: &ActorRef<JobMsg>, state: &mut JobState, why: KillReason) {
    if state.kill.is_some() {
        return;
    }
    state.kill = Some(why);
    if let Some(g) = &state.guard {
        let _ = g.signal_group(Signal::SIGTERM);
    }
    myself.send_after(state.kill_grace, || JobMsg::Escalate);
}

fn stderr_tail(state: &JobState) -> Vec<String> {
    state.stderr.lock().map(|r| r.lines()).unwrap_or_default()
}

/// Turn an exit into an outcome (DESIGN.md §4 failure classes).
fn classify(state: &JobState, status: std::process::ExitStatus) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    let wall_s = state.started.elapsed().as_secs_f64();
    let stats = state.cgroup.as_ref().map(|c| c.stats());
    let failure = |reason, message: String| Failure {
        reason,
        message,
        exit_code: status.code(),
        signal: status.signal(),
        stderr_tail: stderr_tail(state),
    };
    match state.kill {
        Some(KillReason::Cancel) => return Outcome::Cancelled,
        Some(KillReason::Timeout) => {
            return Outcome::TimedOut {
                failure: failure(FailureReason::Timeout, "timeout_s expired".into()),
            }
        }
        Some(KillReason::Drain) => {
            return Outcome::Transient {
                failure: failure(
                    FailureReason::WorkerCrash,
                    "stopped at its node's drain deadline".into(),
                ),
            }
        }
        Some(KillReason::Stall) => {
            return Outcome::Transient {
                failure: failure(
                    FailureReason::Stalled,
                    "no progress within stall_timeout_s".into(),
                ),
            }
        }
        None => {}
    }
    if status.success() {
        let frames = state.last.frame;
        let output_bytes = match &state.output {
            Output::File { path } => std::fs::metadata(path).ok().map(|m| m.len()),
            _ => None,
        };
        let out_time = if state.last.out_time_s > 0.0 {
            Some(state.last.out_time_s)
        } else {
            state.expected_duration_s
        };
        let output_bitrate_kbps = match (output_bytes, out_time) {
            (Some(b), Some(t)) if t > 0.0 => Some(b as f64 * 8.0 / 1000.0 / t),
            _ => None,
        };
        return Outcome::Succeeded {
            result: JobResult {
                exit_code: 0,
                wall_s,
                frames,
                avg_fps: if wall_s > 0.0 {
                    frames as f64 / wall_s
                } else {
                    0.0
                },
                speed: state.last.speed,
                output_bytes,
                output_bitrate_kbps,
                cpu_s: stats.as_ref().and_then(|s| s.cpu_s),
                peak_memory_bytes: stats.as_ref().and_then(|s| s.peak_memory_bytes),
            },
        };
    }
    let oom = stats.as_ref().map(|s| s.oom_kills > 0).unwrap_or(false);
    match status.signal() {
        Some(9) if oom => Outcome::Transient {
            failure: failure(
                FailureReason::ResourceKilled,
                "killed by the cgroup OOM killer (max_memory_mb)".into(),
            ),
        },
        Some(9) => Outcome::Transient {
            failure: failure(
                FailureReason::ResourceKilled,
                "ffmpeg was killed (SIGKILL) from outside the job".into(),
            ),
        },
        Some(sig) => Outcome::Failed {
            failure: failure(
                FailureReason::FfmpegError,
                format!("ffmpeg died on signal {sig}"),
            ),
        },
        None => Outcome::Failed {
            failure: failure(
                FailureReason::FfmpegError,
                format!("ffmpeg exited with status {}", status.code().unwrap_or(-1)),
            ),
        },
    }
}
