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

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ffrtmp_os::cgroup::{CgroupManager, JobCgroup};
use ffrtmp_os::confine::{ConfineError, OutputFile, Resolver};
use ffrtmp_os::energy::cpu::CpuProbe;
use ffrtmp_os::probe::{self, ProbeError};
use ffrtmp_runtime::encoders;
use ffrtmp_runtime::ffmpeg::{self, JobFiles, ProgressParser, ProgressUpdate};
use ffrtmp_runtime::model::{
    Energy, Failure, FailureReason, Input, Isolation, JobResult, Outcome, Output, Progress,
    QualityResult,
};
use ffrtmp_runtime::wire::{Assignment, AttemptRef};
use ffrtmp_spawn::{self as process, ProcessGuard, RunLog, SpawnSpec, StderrRing};
use nix::sys::signal::Signal;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;

use crate::node_msg::NodeMsg;
use crate::power::{JobPids, PowerMsg, SampledEnergy};
use crate::quality_pass::{self, QualityPlan};

mod end;
mod files;

use end::*;
pub(crate) use end::{finish_power, track_power};
use files::*;

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

impl Actor for JobActor {
    type Msg = JobMsg;
    type State = JobActorState;
    type Arguments = JobArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<JobMsg>,
        args: JobArgs,
    ) -> Result<JobActorState, ActorProcessingErr> {
        // This runs in the actor's own task, not in its node's handler
        // (`NodeActor` spawns it with `spawn_linked_instant`): nothing here
        // can hold up the node's lease renewals or its other jobs. Each step
        // has its own time limit.
        let began = Instant::now();
        let a = &args.assignment;
        let limits = &a.spec.resource_limits;
        let cgroup_name = format!("job-{}-{}", a.job_id, a.token);

        // The job's files first: a job that may not run gets no cgroup.
        let opened = open_job_files(&args).await;

        let cgroup = if args.cgroups.isolation() == Isolation::None || opened.is_err() {
            None
        } else {
            let (cgroups, name, lim) = (args.cgroups.clone(), cgroup_name.clone(), limits.clone());
            let create = tokio::task::spawn_blocking(move || cgroups.create_job(&name, &lim));
            // A late result is dropped by the blocking task, which removes it.
            match tokio::time::timeout(CGROUP_SETUP_TIMEOUT, create).await {
                Ok(Ok(Ok(cg))) => Some(cg),
                Ok(Ok(Err(e))) => {
                    tracing::warn!(job = %a.job_id, error = %e, "cgroup unavailable; running with nice only");
                    None
                }
                Ok(Err(e)) => {
                    tracing::warn!(job = %a.job_id, error = %e, "cgroup set-up failed; running with nice only");
                    None
                }
                Err(_) => {
                    tracing::warn!(job = %a.job_id, timeout = ?CGROUP_SETUP_TIMEOUT, "cgroup set-up timed out; running with nice only");
                    None
                }
            }
        };
        let isolation = if cgroup.is_some() {
            args.cgroups.isolation()
        } else {
            Isolation::None
        };
        tracing::debug!(job = %a.job_id, ?isolation, "job cgroup ready");

        let expected_duration_s = match &a.spec.input {
            Input::Testsrc { duration_s } => Some(*duration_s),
            Input::File { .. } => opened.as_ref().ok().and_then(|f| f.input_duration_s),
        };

        let mut state = JobActorState {
            job_id: a.job_id.clone(),
            token: a.token,
            started: Instant::now(),
            guard: None,
            output_file: None,
            cgroup,
            stderr: Arc::new(Mutex::new(StderrRing::new(STDERR_LINES, STDERR_BYTES))),
            last: Progress::default(),
            last_advance: Instant::now(),
            stall_timeout: limits.stall_timeout_s.map(Duration::from_secs),
            kill: None,
            kill_grace: args.kill_grace,
            node: args.node.clone(),
            output: a.spec.output.clone(),
            fps: a.spec.encode.fps,
            encoder: encoders::chosen(&a.spec.encode).name.to_string(),
            expected_duration_s,
            tasks: Vec::new(),
            reported: false,
            power: None,
            quality: None,
            sampler: args.power.clone(),
            quality_running: false,
            quality_stop: None,
            shared_cgroup: None,
            pending: None,
            run_log: args.run_log.clone().map(|path| RunLog {
                path,
                // The worker's pid too: if the worker is SIGKILLed its
                // guard dies with it (PDEATHSIG) before it can write.
                tag: format!("{} {} {}", a.job_id, a.token, std::process::id()),
            }),
        };

        let files = match opened {
            Ok(f) => f,
            Err(failure) => {
                tracing::warn!(job = %state.job_id, reason = ?failure.reason, "{}", failure.message);
                report(&mut state, Outcome::Failed { failure }, None);
                myself.stop(Some("job files refused".into()));
                return Ok(state);
            }
        };
        // FFmpeg gets the descriptors (input first), named in its argv.
        let mut fds: Vec<Arc<OwnedFd>> = Vec::new();
        let mut job_files = JobFiles::default();
        // The quality pass keeps its own descriptor on the input (its
        // reference); a `null` output is encoded to a scratch file for it.
        let mut quality = a.spec.quality.as_ref().map(|q| QualityPlan {
            metrics: q.metrics.clone(),
            encode: a.spec.encode.clone(),
            input: a.spec.input.clone(),
            reference: None,
            scratch: matches!(a.spec.output, Output::Null)
                .then(|| quality_pass::scratch_file(args.work_dir.as_deref())),
            ffmpeg: args.ffmpeg.clone(),
            vmaf_bin: args.vmaf_bin.clone(),
            nice: args.nice,
            lease_end_ms: args.lease_end_ms.clone(),
            timeout: QualityPlan::timeout_for(limits.timeout_s),
        });
        if let Some((file, format)) = files.input {
            if let Some(plan) = quality.as_mut() {
                match file.try_clone() {
                    Ok(f) => plan.reference = Some((f, format.clone())),
                    Err(e) => {
                        tracing::warn!(job = %state.job_id, error = %e, "no reference for the quality pass")
                    }
                }
            }
            job_files.input = Some((process::JOB_FD_BASE, format));
            fds.push(Arc::new(OwnedFd::from(file)));
        }
        // The encode's own spec, but for a `null` output with a scratch
        // file: that file (Matroska) instead.
        let mut encode_spec = std::borrow::Cow::Borrowed(&a.spec);
        if let Some(Some(Ok(scratch))) = quality.as_ref().map(|p| p.scratch.as_ref()) {
            match scratch.try_clone() {
                Ok(f) => {
                    job_files.output_fd = Some(process::JOB_FD_BASE + fds.len() as i32);
                    fds.push(Arc::new(OwnedFd::from(f)));
                    encode_spec.to_mut().output = Output::File {
                        path: PathBuf::from("quality-scratch.mkv"),
                    };
                }
                Err(e) => {
                    if let Some(plan) = quality.as_mut() {
                        plan.scratch = Some(Err(e.to_string()));
                    }
                }
            }
        }
        state.quality = quality;
        if let Some(out) = &files.output {
            let fd = match out.file().try_clone() {
                Ok(f) => OwnedFd::from(f),
                Err(e) => {
                    let failure = Failure::new(
                        FailureReason::SpawnFailed,
                        format!("could not pass the output to ffmpeg: {e}"),
                    );
                    report(&mut state, Outcome::Failed { failure }, None);
                    myself.stop(Some("spawn failed".into()));
                    return Ok(state);
                }
            };
            job_files.output_fd = Some(process::JOB_FD_BASE + fds.len() as i32);
            fds.push(Arc::new(fd));
        }
        state.output_file = files.output;

        let mut fd_names: Vec<(String, String)> = Vec::new();
        if let (Some((fd, _)), Input::File { path }) = (&job_files.input, &a.spec.input) {
            let url = ffmpeg::fd_url(*fd).to_string_lossy().into_owned();
            fd_names.push((url, path.display().to_string()));
        }
        if let (Some(fd), Output::File { path }) = (job_files.output_fd, &a.spec.output) {
            let url = ffmpeg::fd_url(fd).to_string_lossy().into_owned();
            fd_names.push((url, path.display().to_string()));
        }
        // The lease as it stands now, not when the assignment came in.
        let lease = match &args.lease_end_ms {
            Some(end) => match end.load(Ordering::SeqCst) {
                0 => None,
                end => Some(Duration::from_millis(end.saturating_sub(crate::mono_ms()))),
            },
            None => args.lease.map(|l| l.saturating_sub(began.elapsed())),
        };
        let cmd = ffmpeg::build_command_with(&args.ffmpeg, &encode_spec, &job_files);
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
            lease,
            run_log: state.run_log.clone(),
            fds,
        };
        // A late spawn's result is dropped by the spawner thread, which kills its group.
        let spawned = match tokio::time::timeout(SPAWN_TIMEOUT, process::spawn(spec)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                metrics::counter!(crate::metrics::SPAWN_FAILURES).increment(1);
                // The node's own exhaustion (EMFILE, ...) is transient.
                report(&mut state, ffrtmp_spawn::spawn_failed(&e), None);
                myself.stop(Some("spawn failed".into()));
                return Ok(state);
            }
            Err(_) => {
                metrics::counter!(crate::metrics::SPAWN_FAILURES).increment(1);
                let failure = Failure::new(
                    FailureReason::NodeExhausted,
                    format!("ffmpeg did not start within {} s", SPAWN_TIMEOUT.as_secs()),
                );
                report(&mut state, Outcome::Transient { failure }, None);
                myself.stop(Some("spawn timed out".into()));
                return Ok(state);
            }
        };
        let mut child = spawned.child;
        let guard = spawned.guard;
        tracing::info!(job = %state.job_id, pid = guard.pid(), ?isolation, "ffmpeg started");
        if let Some(power) = &args.power {
            if track_power(
                power,
                state.attempt(),
                state.cgroup.as_ref(),
                &[guard.pid()],
            ) {
                state.power = Some(power.clone());
            }
        }
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
        // stderr: bounded ring for failure reports, FFmpeg's names for the
        // descriptors put back to the job's paths (what the user knows).
        if let Some(stderr) = child.stderr.take() {
            let ring = state.stderr.clone();
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(mut line)) = lines.next_line().await {
                    for (url, path) in &fd_names {
                        if line.contains(url.as_str()) {
                            line = line.replace(url.as_str(), path);
                        }
                    }
                    if let Ok(mut r) = ring.lock() {
                        r.push(&line);
                    }
                }
            }));
        }
        // Waiter: reap, let the readers drain, then report the exit. It holds
        // only a weak reference to the guard, so the actor's state stays the
        // sole owner of the process group (it upgrades it just to reap).
        let guard_arc = Arc::new(guard);
        let weak: Weak<ProcessGuard> = Arc::downgrade(&guard_arc);
        let me = myself.clone();
        let waiter = tokio::spawn(async move {
            // Exited but not reaped: the group id is still ours, so `wait` can
            // kill whatever is left in the group, then reap and mark reaped.
            child.exited().await;
            let status = match weak.upgrade() {
                Some(g) => process::wait(&mut child, &g).await,
                None => child.wait().await,
            };
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
        state: &mut JobActorState,
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
                    // The quality pass makes no encode progress: not a stall.
                    if state.kill.is_none()
                        && !state.quality_running
                        && state.last_advance.elapsed() >= limit
                    {
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
            JobMsg::RenewLease(remaining) => {
                if let Some(g) = &state.guard {
                    // Not fatal: the guard is stopped (the channel is full) or
                    // gone (the exit is on its way through the waiter).
                    if let Err(e) = g.renew_lease(remaining) {
                        tracing::debug!(job = %state.job_id, error = %e, "lease renewal not delivered");
                    }
                }
            }
            JobMsg::LeaseExpired => begin_kill(&myself, state, KillReason::LeaseExpired),
            JobMsg::Exited(status) => {
                // The guard is reaped: the group is gone (the guard's own
                // `stop`/`kill` line is the precise one).
                if let Some(log) = &state.run_log {
                    if let Err(e) = process::append_run_log(log, "exit") {
                        tracing::warn!(error = %e, "cannot write the run log");
                    }
                }
                let outcome = classify(state, status);
                // The last sample, with the cgroup's final CPU time, before the cgroup goes.
                let energy = finish_energy(state).await;
                // The quality pass, while the encode's guard still holds the
                // cgroup open (its janitor removes it once the guard goes),
                // on the output before it is published.
                let distorted = match (&state.quality, &state.output_file) {
                    (Some(_), Some(o)) => o.file().try_clone().ok(),
                    _ => None,
                };
                match (outcome, state.quality.take()) {
                    (outcome @ Outcome::Succeeded { .. }, Some(plan)) => {
                        start_quality_pass(&myself, state, plan, distorted);
                        state.pending = Some((outcome, energy));
                    }
                    (outcome, _) => wind_up(&myself, state, outcome, energy).await?,
                }
            }
            JobMsg::QualityDone(quality) => {
                if let Some(e) = &quality.error {
                    tracing::warn!(job = %state.job_id, error = %e, "quality pass");
                }
                state.quality_running = false;
                state.quality_stop = None;
                // The cgroup back from the pass (it let go of it first).
                if let Some(shared) = state.shared_cgroup.take() {
                    state.cgroup = Arc::try_unwrap(shared).ok();
                }
                if let Some((mut outcome, energy)) = state.pending.take() {
                    if let Outcome::Succeeded { result } = &mut outcome {
                        result.quality = Some(quality);
                    }
                    wind_up(&myself, state, outcome, energy).await?;
                }
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

#[cfg(test)]
mod tests;
