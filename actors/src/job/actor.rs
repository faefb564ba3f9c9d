//! The `JobActor`'s life as ractor runs it: `pre_start` opens the job's
//! files, sets up its cgroup, spawns FFmpeg under its guard and starts the
//! readers and the waiter; `handle` acts on the node's messages and the
//! waiter's exit; `post_stop` makes sure nothing of the attempt is left.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ffrtmp_runtime::encoders;
use ffrtmp_runtime::ffmpeg::{self, JobFiles, ProgressParser};
use ffrtmp_runtime::model::{Failure, FailureReason, Input, Isolation, Outcome, Output, Progress};
use ffrtmp_spawn::{self as process, ProcessGuard, RunLog, SpawnSpec, StderrRing};
use nix::sys::signal::Signal;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::node_msg::NodeMsg;
use crate::quality_pass::{self, QualityPlan};

use super::end::*;
use super::files::*;
use super::*;

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
