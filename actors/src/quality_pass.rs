//! A job's quality pass: after a successful encode, its `JobActor` runs
//! FFmpeg once more to compare the output with its reference
//! ([`ffrtmp_runtime::quality`] builds the argv and pools the figures).
//!
//! It is a phase of its own: FFmpeg runs under its own guard process, in
//! the attempt's cgroup (the encode's FFmpeg is gone by then), and the
//! power sampler charges it under its own attempt key
//! ([`quality_attempt`]), so the encode's energy stays the encode's and
//! the pass gets its own wall time and joules. A pass that fails (a
//! corrupt output, an unreadable reference, a timeout) gives a
//! [`QualityResult`] with `error` set; the job's success is not touched.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ffrtmp_runtime::cgroup::JobCgroup;
use ffrtmp_runtime::model::{EncodeParams, Energy, Input, QualityMetric, QualityResult};
use ffrtmp_runtime::process::{self, SpawnSpec, StderrRing};
use ffrtmp_runtime::quality::{self, FrameStats};
use ffrtmp_runtime::wire::AttemptRef;
use ractor::ActorRef;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::job::{finish_power, track_power};
use crate::power::PowerMsg;

/// How often the pass's guard gets the node's current lease.
const LEASE_RENEW_EVERY: Duration = Duration::from_secs(1);
/// The pass's time limit when the job sets no `timeout_s`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// What a job's quality pass needs, gathered when its encode starts.
pub(crate) struct QualityPlan {
    pub metrics: Vec<QualityMetric>,
    pub encode: EncodeParams,
    pub input: Input,
    /// A second descriptor on the job's input file (the reference), and
    /// the demuxer its probe found.
    pub reference: Option<(File, Option<String>)>,
    /// A job with a `null` output encodes to this anonymous temporary file
    /// (no name: gone when closed), or why it could not be created.
    pub scratch: Option<Result<File, String>>,
    pub ffmpeg: PathBuf,
    pub nice: i32,
    /// The node's lease end on [`crate::mono_ms`]'s clock (`0`: none).
    pub lease_end_ms: Option<Arc<AtomicU64>>,
    pub timeout: Duration,
}

impl QualityPlan {
    /// The pass's time limit: the job's `timeout_s`, else an hour.
    pub fn timeout_for(timeout_s: Option<u64>) -> Duration {
        timeout_s
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// The key the power sampler charges a quality pass to: not the attempt's
/// own, so the two phases' joules stay apart.
pub(crate) fn quality_attempt(attempt: &AttemptRef) -> AttemptRef {
    AttemptRef {
        job_id: format!("{}#quality", attempt.job_id),
        token: attempt.token,
    }
}

/// Runs the pass on `distorted` (the encode's output: the file output's
/// descriptor, or the plan's scratch file) and returns its result.
pub(crate) async fn run(
    plan: QualityPlan,
    distorted: Option<File>,
    cgroup: Option<&JobCgroup>,
    power: Option<&ActorRef<PowerMsg>>,
    attempt: &AttemptRef,
) -> QualityResult {
    let started = Instant::now();
    let mut result = QualityResult::default();
    let vmaf = plan.metrics.contains(&QualityMetric::Vmaf);
    let outcome = measure(&plan, distorted, cgroup, power, attempt).await;
    result.wall_s = started.elapsed().as_secs_f64();
    match outcome {
        Ok((stats, energy)) => {
            let (psnr, ssim) = stats.scores();
            let want = |m| plan.metrics.contains(&m);
            result.psnr = psnr.filter(|_| want(QualityMetric::Psnr));
            result.ssim = ssim.filter(|_| want(QualityMetric::Ssim));
            if let Some(e) = energy {
                result.quality_energy_joules = Some(e.energy_joules);
                result.energy_source = Some(e.energy_source);
                result.estimate = e.estimate;
            }
            let empty = (want(QualityMetric::Psnr) && result.psnr.is_none())
                || (want(QualityMetric::Ssim) && result.ssim.is_none());
            if empty {
                result.error = Some("no frames were compared (an empty output?)".into());
            } else if vmaf {
                result.error = Some(VMAF_UNAVAILABLE.into());
            }
        }
        Err(e) => result.error = Some(e),
    }
    result
}

/// VMAF needs libvmaf, which this node's FFmpeg lacks.
pub(crate) const VMAF_UNAVAILABLE: &str =
    "vmaf: not computed: this node has no libvmaf (psnr and ssim, when asked, are)";

async fn measure(
    plan: &QualityPlan,
    distorted: Option<File>,
    cgroup: Option<&JobCgroup>,
    power: Option<&ActorRef<PowerMsg>>,
    attempt: &AttemptRef,
) -> Result<(FrameStats, Option<Energy>), String> {
    let distorted = match (&plan.scratch, distorted) {
        (Some(Err(e)), _) => return Err(format!("no temporary file for the output: {e}")),
        (Some(Ok(f)), _) => f.try_clone().map_err(|e| format!("the output: {e}"))?,
        (None, Some(f)) => f,
        (None, None) => return Err("the output is not available to compare".into()),
    };
    let mut fds: Vec<Arc<OwnedFd>> = vec![Arc::new(OwnedFd::from(distorted))];
    let reference_fd = match &plan.reference {
        Some((file, format)) => {
            let f = file
                .try_clone()
                .map_err(|e| format!("the reference (the input file): {e}"))?;
            fds.push(Arc::new(OwnedFd::from(f)));
            Some((process::JOB_FD_BASE + 1, format.clone()))
        }
        None => None,
    };
    let reference = quality::reference_for(&plan.input, reference_fd)
        .ok_or("the reference (the input file) was not opened")?;
    let Some(cmd) = quality::build_command(
        &plan.ffmpeg,
        &plan.encode,
        process::JOB_FD_BASE,
        &reference,
        &plan.metrics,
    ) else {
        // VMAF alone: nothing FFmpeg computes here.
        return Err(VMAF_UNAVAILABLE.into());
    };
    let lease = current_lease(&plan.lease_end_ms);
    let spec = SpawnSpec {
        program: cmd.program,
        args: cmd.args,
        env: cmd.env,
        nice: plan.nice,
        cgroup_procs: cgroup.map(|c| c.procs_files()).unwrap_or_default(),
        lease,
        run_log: None,
        fds,
    };
    let spawned = process::spawn(spec)
        .await
        .map_err(|e| format!("could not start ffmpeg for the quality pass: {e}"))?;
    let mut child = spawned.child;
    let guard = spawned.guard;
    let key = quality_attempt(attempt);
    let tracked = power.filter(|p| track_power(p, key.clone(), cgroup, guard.pid()));

    let stats = Arc::new(Mutex::new(FrameStats::default()));
    let ring = Arc::new(Mutex::new(StderrRing::new(8, 4096)));
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let stats = stats.clone();
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut s) = stats.lock() {
                    s.push_line(&line);
                }
            }
        }));
    }
    if let Some(stderr) = child.stderr.take() {
        let ring = ring.clone();
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut r) = ring.lock() {
                    r.push(&line);
                }
            }
        }));
    }

    // Wait for the exit, handing the guard the node's lease as it moves.
    let deadline = tokio::time::Instant::now() + plan.timeout;
    let status = {
        let wait = process::wait(&mut child, &guard);
        tokio::pin!(wait);
        let mut renew = tokio::time::interval(LEASE_RENEW_EVERY);
        loop {
            tokio::select! {
                status = &mut wait => break Some(status),
                _ = tokio::time::sleep_until(deadline) => break None,
                _ = renew.tick() => {
                    if let Some(remaining) = current_lease(&plan.lease_end_ms) {
                        let _ = guard.renew_lease(remaining);
                    }
                }
            }
        }
    };
    // Its last CPU reading before its guard goes (the guard's janitor
    // removes the cgroup then); a pass over its time is killed with its
    // group.
    let final_cpu_s = cgroup.and_then(|c| c.stats().cpu_s);
    drop(guard);
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }
    let energy = match tracked {
        Some(p) => finish_power(p, key, final_cpu_s)
            .await
            .map(|s| Energy::new(s.domains, s.measured_s, None, None)),
        None => None,
    };
    let stderr = ring
        .lock()
        .map(|r| r.lines().join(" | "))
        .unwrap_or_default();
    match status {
        None => Err(format!(
            "the quality pass took longer than {} s and was killed",
            plan.timeout.as_secs()
        )),
        Some(Err(e)) => Err(format!("could not wait for the quality pass: {e}")),
        Some(Ok(st)) if !st.success() => Err(format!(
            "ffmpeg could not compare the output with its reference ({st}): {stderr}"
        )),
        Some(Ok(_)) => {
            let stats = stats.lock().map(|s| s.clone()).unwrap_or_default();
            Ok((stats, energy))
        }
    }
}

/// The node's lease as it stands now (`None`: no deadline).
fn current_lease(end: &Option<Arc<AtomicU64>>) -> Option<Duration> {
    match end.as_ref()?.load(Ordering::SeqCst) {
        0 => None,
        end => Some(Duration::from_millis(end.saturating_sub(crate::mono_ms()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn plan(metrics: Vec<QualityMetric>) -> QualityPlan {
        QualityPlan {
            metrics,
            encode: EncodeParams {
                width: 160,
                height: 90,
                fps: 10,
                codec: ffrtmp_runtime::model::Codec::H264,
                bitrate_kbps: 100,
                preset: "veryfast".into(),
                encoder: None,
                hardware: Default::default(),
                crf: None,
                pix_fmt: None,
            },
            input: Input::Testsrc { duration_s: 0.5 },
            reference: None,
            scratch: None,
            ffmpeg: PathBuf::from("ffmpeg"),
            nice: 0,
            lease_end_ms: None,
            timeout: Duration::from_secs(60),
        }
    }

    fn attempt() -> AttemptRef {
        AttemptRef {
            job_id: "q".into(),
            token: 1,
        }
    }

    /// Real FFmpeg on a corrupt "output" (bytes that are no container).
    #[tokio::test]
    async fn a_corrupt_output_fails_the_pass_with_the_reason() {
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(&[0x42; 4096]).expect("write");
        let r = run(
            plan(vec![QualityMetric::Psnr, QualityMetric::Ssim]),
            Some(f),
            None,
            None,
            &attempt(),
        )
        .await;
        let err = r.error.expect("the pass fails");
        assert!(err.contains("could not compare"), "{err}");
        assert_eq!((r.psnr, r.ssim), (None, None));
        assert!(r.wall_s >= 0.0);
        assert_eq!(r.quality_energy_joules, None);
    }

    #[tokio::test]
    async fn a_missing_scratch_file_is_the_reason() {
        let mut p = plan(vec![QualityMetric::Psnr]);
        p.scratch = Some(Err("no space".into()));
        let r = run(p, None, None, None, &attempt()).await;
        assert!(
            r.error.as_deref().is_some_and(|e| e.contains("no space")),
            "{r:?}"
        );
        assert!(r.psnr.is_none());
    }

    #[test]
    fn the_pass_is_charged_apart_from_its_attempt() {
        let a = attempt();
        let q = quality_attempt(&a);
        assert_ne!(q, a);
        assert_eq!(q.token, a.token);
    }
}
