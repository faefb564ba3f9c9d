//! The end of an attempt: energy, the quality pass, killing, classifying
//! the exit, publishing the output and reporting.

use super::*;

impl JobActorState {
    pub(super) fn attempt(&self) -> AttemptRef {
        AttemptRef {
            job_id: self.job_id.clone(),
            token: self.token,
        }
    }

    /// Seconds of output written. The output is constant-rate at the
    /// job's fps (`testsrc2` at that rate, `-r` for files), so frames / fps
    /// is exact; FFmpeg's last `out_time` is the last frame's timestamp, one
    /// frame short. Without frames: `out_time`, else the expected duration.
    pub(super) fn output_s(&self) -> Option<f64> {
        if self.last.frame > 0 && self.fps > 0 {
            Some(self.last.frame as f64 / f64::from(self.fps))
        } else if self.last.out_time_s > 0.0 {
            Some(self.last.out_time_s)
        } else {
            self.expected_duration_s
        }
    }
}

/// The attempt's energy: the sampler takes a last sample with the cgroup's
/// final CPU time and stops tracking the attempt. `None` without a sampler
/// (or if it does not answer in time).
pub(super) async fn finish_energy(state: &mut JobActorState) -> Option<Energy> {
    let power = state.power.take()?;
    let final_cpu_s = state.cgroup.as_ref().and_then(|c| c.stats().cpu_s);
    let sampled = finish_power(&power, state.attempt(), final_cpu_s).await?;
    let frames = (state.last.frame > 0).then_some(state.last.frame);
    Some(Energy::new(
        sampled.domains,
        sampled.measured_s,
        frames,
        state.output_s(),
    ))
}

/// Runs the quality pass in a task of its own (aborted with the actor's
/// state), so that a cancel, a drain deadline or the lease's end still
/// reaches the job meanwhile; it answers with [`JobMsg::QualityDone`]. It
/// runs while the encode's guard still holds the cgroup open (its janitor
/// removes the cgroup once the guard goes), on the output before it is
/// published.
pub(super) fn start_quality_pass(
    myself: &ActorRef<JobMsg>,
    state: &mut JobActorState,
    plan: QualityPlan,
    distorted: Option<std::fs::File>,
) {
    let (stop, stopped) = tokio::sync::watch::channel(None);
    let cgroup = state.cgroup.take().map(Arc::new);
    state.shared_cgroup = cgroup.clone();
    state.quality_stop = Some(stop);
    state.quality_running = true;
    let (me, power, attempt) = (myself.clone(), state.sampler.clone(), state.attempt());
    state.tasks.push(tokio::spawn(async move {
        let quality = quality_pass::run(
            plan,
            distorted,
            cgroup.as_deref(),
            power.as_ref(),
            &attempt,
            stopped,
        )
        .await;
        // Let go of the cgroup before the actor takes it back.
        drop(cgroup);
        let _ = me.cast(JobMsg::QualityDone(Box::new(quality)));
    }));
}

/// The attempt's end: kill stragglers, publish the output (on success),
/// remove the cgroup, report, stop.
pub(super) async fn wind_up(
    myself: &ActorRef<JobMsg>,
    state: &mut JobActorState,
    mut outcome: Outcome,
    energy: Option<Energy>,
) -> Result<(), ActorProcessingErr> {
    // Kill stragglers and remove the cgroup before reporting, so
    // that "finished" always means "nothing left behind".
    state.guard = None;
    // The output gets its name only on success; otherwise its
    // temporary file goes (dropped).
    if let Some(out) = state.output_file.take() {
        if matches!(outcome, Outcome::Succeeded { .. }) {
            if let Err(e) = out.publish() {
                tracing::warn!(job = %state.job_id, error = %e, "output not published");
                outcome = Outcome::Failed {
                    failure: Failure::new(e.reason(), format!("the output was not published: {e}")),
                };
            }
        }
    }
    if let Some(cg) = state.cgroup.take() {
        if let Err(e) = tokio::task::spawn_blocking(move || cg.remove()).await? {
            tracing::warn!(error = %e, "cgroup removal failed");
        }
    }
    report(state, outcome, energy);
    myself.stop(None);
    Ok(())
}

pub(super) fn begin_kill(myself: &ActorRef<JobMsg>, state: &mut JobActorState, why: KillReason) {
    if state.kill.is_some() {
        return;
    }
    state.kill = Some(why);
    // After a successful encode: the quality pass stops; the encode's
    // success stands.
    if let Some(stop) = &state.quality_stop {
        let reason = match why {
            KillReason::Cancel => "cancelled",
            KillReason::Timeout => "timeout_s expired",
            KillReason::Stall => "stalled",
            KillReason::Drain => "the node's drain deadline passed",
            KillReason::LeaseExpired => "the node's lease with the master expired",
        };
        let _ = stop.send(Some(reason));
    }
    if let Some(g) = &state.guard {
        let _ = g.signal_group(Signal::SIGTERM);
    }
    myself.send_after(state.kill_grace, || JobMsg::Escalate);
}

pub(super) fn stderr_tail(state: &JobActorState) -> Vec<String> {
    state.stderr.lock().map(|r| r.lines()).unwrap_or_default()
}

/// Turn an exit into an outcome (the failure classes of docs/API.md).
pub(super) fn classify(state: &JobActorState, status: std::process::ExitStatus) -> Outcome {
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
        Some(KillReason::LeaseExpired) => {
            return Outcome::Transient {
                failure: failure(
                    FailureReason::WorkerCrash,
                    "the node's lease with the master expired".into(),
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
        // The temporary file, before it is published under its name.
        let output_bytes = match &state.output {
            Output::File { .. } => state.output_file.as_ref().and_then(OutputFile::len),
            _ => None,
        };
        let out_time = state.output_s();
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
                output_duration_s: out_time,
                quality: None,
                encoder: Some(state.encoder.clone()),
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
