//! A job's quality pass: after a successful encode, its `JobActor` compares
//! the output with its reference ([`ffrtmp_runtime::quality`] builds the
//! argv, parses the outputs and pools the figures): one FFmpeg with the
//! `psnr`/`ssim` filters, and for VMAF two FFmpeg decoders writing raw
//! frames into pipes that `ffrtmp-vmaf` (libvmaf) reads, all at once.
//!
//! It is a phase of its own: each process runs under its own guard, in
//! the attempt's cgroup (the encode's FFmpeg is gone by then), and the
//! power sampler charges them under the pass's own key
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

use ffrtmp_os::cgroup::JobCgroup;
use ffrtmp_runtime::model::{EncodeParams, Energy, Input, QualityMetric, QualityResult};
use ffrtmp_runtime::quality::{self, FrameStats, Reference};
use ffrtmp_runtime::wire::AttemptRef;
use ffrtmp_spawn::{self as process, ProcessGuard, SpawnSpec, StderrRing};
use ractor::ActorRef;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::power::{finish_power, track_power, PowerMsg};

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
    /// The node's working `ffrtmp-vmaf` (`None`: VMAF is not computed).
    pub vmaf_bin: Option<PathBuf>,
    pub nice: i32,
    /// The node's lease end on [`crate::mono_ms`]'s clock (`0`: none).
    pub lease_end_ms: Option<Arc<AtomicU64>>,
    pub timeout: Duration,
}

impl QualityPlan {
    /// The pass's time limit: the job's `timeout_s`, else an hour.
    pub(crate) fn timeout_for(timeout_s: Option<u64>) -> Duration {
        timeout_s
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// An anonymous file (`O_TMPFILE`: no name, gone when its last descriptor
/// closes, even if the worker dies) in `dir` (created if missing), else
/// in the system's temporary directory: where a `null` output is encoded
/// for its quality pass.
pub(crate) fn scratch_file(dir: Option<&std::path::Path>) -> Result<File, String> {
    match dir {
        Some(d) => std::fs::create_dir_all(d)
            .and_then(|()| tempfile::tempfile_in(d))
            .map_err(|e| format!("{}: {e}", d.display())),
        None => tempfile::tempfile().map_err(|e| e.to_string()),
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
/// descriptor, or the plan's scratch file) and returns its result: each
/// metric that could be computed, and in `error` what could not and why.
pub(crate) async fn run(
    plan: QualityPlan,
    distorted: Option<File>,
    cgroup: Option<&JobCgroup>,
    power: Option<&ActorRef<PowerMsg>>,
    attempt: &AttemptRef,
    stop: Stop,
) -> QualityResult {
    let started = Instant::now();
    let mut result = QualityResult::default();
    let measured = measure(&plan, distorted, cgroup, power, attempt, stop).await;
    result.wall_s = started.elapsed().as_secs_f64();
    let m = match measured {
        Ok(m) => m,
        Err(e) => {
            result.error = Some(e);
            return result;
        }
    };
    if let Some(e) = m.energy {
        result.quality_energy_joules = Some(e.energy_joules);
        result.energy_source = Some(e.energy_source);
        result.estimate = e.estimate;
    }
    let want = |metric| plan.metrics.contains(&metric);
    let mut errors: Vec<String> = Vec::new();
    match m.filters {
        Some(Ok(stats)) => {
            let (psnr, ssim) = stats.scores();
            result.psnr = psnr.filter(|_| want(QualityMetric::Psnr));
            result.ssim = ssim.filter(|_| want(QualityMetric::Ssim));
            let empty = (want(QualityMetric::Psnr) && result.psnr.is_none())
                || (want(QualityMetric::Ssim) && result.ssim.is_none());
            if empty {
                errors.push("psnr/ssim: no frames were compared (an empty output?)".into());
            }
        }
        Some(Err(e)) => errors.push(format!("psnr/ssim: {e}")),
        None => {}
    }
    match m.vmaf {
        Some(Ok(frames)) => result.vmaf = quality::pool(&frames),
        Some(Err(e)) => errors.push(format!("vmaf: {e}")),
        None => {}
    }
    if !errors.is_empty() {
        result.error = Some(errors.join("; "));
    }
    result
}

/// Set (with the reason) when the pass must stop: its processes are killed
/// and it ends with that reason as its error.
pub(crate) type Stop = tokio::sync::watch::Receiver<Option<&'static str>>;

/// Why VMAF is not computed on a node without a working `ffrtmp-vmaf`.
pub(crate) const VMAF_UNAVAILABLE: &str =
    "not computed: this node has no working ffrtmp-vmaf (docs/OPERATIONS.md)";

/// What the pass's processes gave.
struct Measured {
    /// FFmpeg's psnr/ssim figures, when asked.
    filters: Option<Result<FrameStats, String>>,
    /// VMAF per frame, when asked.
    vmaf: Option<Result<Vec<f64>, String>>,
    energy: Option<Energy>,
}

/// One process of the pass.
struct Part {
    what: &'static str,
    child: process::Child,
    guard: ProcessGuard,
    stderr: Arc<Mutex<StderrRing>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

/// What a part's stdout is read into.
enum Sink {
    Stats(Arc<Mutex<FrameStats>>),
    Text(Arc<Mutex<String>>),
    Ignore,
}

/// Bytes of a part's stdout kept as text (VMAF's JSON: ~11 bytes a frame).
const MAX_TEXT: usize = 64 * 1024 * 1024;

async fn spawn_part(
    what: &'static str,
    plan: &QualityPlan,
    cmd: ffrtmp_runtime::ffmpeg::FfmpegCommand,
    fds: Vec<Arc<OwnedFd>>,
    cgroup: Option<&JobCgroup>,
    sink: Sink,
) -> Result<Part, String> {
    let spec = SpawnSpec {
        program: cmd.program,
        args: cmd.args,
        env: cmd.env,
        nice: plan.nice,
        cgroup_procs: cgroup.map(|c| c.procs_files()).unwrap_or_default(),
        lease: current_lease(&plan.lease_end_ms),
        run_log: None,
        fds,
    };
    let spawned = process::spawn(spec)
        .await
        .map_err(|e| format!("could not start {what}: {e}"))?;
    let mut child = spawned.child;
    let stderr = Arc::new(Mutex::new(StderrRing::new(6, 2048)));
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match &sink {
                    Sink::Stats(s) => {
                        if let Ok(mut s) = s.lock() {
                            s.push_line(&line);
                        }
                    }
                    Sink::Text(t) => {
                        if let Ok(mut t) = t.lock() {
                            if t.len() + line.len() < MAX_TEXT {
                                t.push_str(&line);
                                t.push('\n');
                            }
                        }
                    }
                    Sink::Ignore => {}
                }
            }
        }));
    }
    if let Some(err) = child.stderr.take() {
        let ring = stderr.clone();
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut r) = ring.lock() {
                    r.push(&line);
                }
            }
        }));
    }
    Ok(Part {
        what,
        child,
        guard: spawned.guard,
        stderr,
        readers,
    })
}

fn clone_fd(f: &File, what: &str) -> Result<Arc<OwnedFd>, String> {
    f.try_clone()
        .map(|f| Arc::new(OwnedFd::from(f)))
        .map_err(|e| format!("{what}: {e}"))
}

/// How a comparison's reference reaches a process whose first reference
/// descriptor is number `first`: the descriptors to hand it (a second one
/// on the input file, or none for `testsrc`) and the [`Reference`].
fn reference_at(plan: &QualityPlan, first: i32) -> Result<(Vec<Arc<OwnedFd>>, Reference), String> {
    let mut fds = Vec::new();
    let file = match &plan.reference {
        Some((file, format)) => {
            fds.push(clone_fd(file, "the reference (the input file)")?);
            Some((first, format.clone()))
        }
        None => None,
    };
    let r = quality::reference_for(&plan.input, file)
        .ok_or("the reference (the input file) was not opened")?;
    Ok((fds, r))
}

/// Starts the pass's processes: FFmpeg with the psnr/ssim filters, and for
/// VMAF two FFmpeg decoders piping raw frames into `ffrtmp-vmaf`. All run
/// at once, in the attempt's cgroup. Returns why the VMAF part did not
/// start, if it did not (the rest runs without it).
async fn start_parts(
    plan: &QualityPlan,
    distorted: &File,
    cgroup: Option<&JobCgroup>,
    stats: &Arc<Mutex<FrameStats>>,
    vmaf_out: &Arc<Mutex<String>>,
    parts: &mut Vec<Part>,
) -> Result<Option<String>, String> {
    let base = process::JOB_FD_BASE;
    let (ref_fds, reference) = reference_at(plan, base + 1)?;
    if let Some(cmd) =
        quality::build_command(&plan.ffmpeg, &plan.encode, base, &reference, &plan.metrics)
    {
        let mut fds = vec![clone_fd(distorted, "the output")?];
        fds.extend(ref_fds);
        let sink = Sink::Stats(stats.clone());
        parts.push(spawn_part("ffmpeg (psnr/ssim)", plan, cmd, fds, cgroup, sink).await?);
    }
    if let (true, Some(bin)) = (plan.metrics.contains(&QualityMetric::Vmaf), &plan.vmaf_bin) {
        let before = parts.len();
        if let Err(e) = start_vmaf(plan, bin, distorted, cgroup, vmaf_out, parts).await {
            // Its decoders, if started, go with their guards.
            parts.truncate(before);
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// The VMAF part: two decoders, each writing raw frames into a pipe, and
/// `ffrtmp-vmaf` reading both.
async fn start_vmaf(
    plan: &QualityPlan,
    bin: &std::path::Path,
    distorted: &File,
    cgroup: Option<&JobCgroup>,
    vmaf_out: &Arc<Mutex<String>>,
    parts: &mut Vec<Part>,
) -> Result<(), String> {
    let base = process::JOB_FD_BASE;
    let pipe = |what: &str| process::pipe_cloexec().map_err(|e| format!("{what} pipe: {e}"));
    let (d_read, d_write) = pipe("the output's")?;
    let (r_read, r_write) = pipe("the reference's")?;
    // The output's decoder: [output, pipe].
    let fds = vec![clone_fd(distorted, "the output")?, Arc::new(d_write)];
    let (_, reference) = reference_at(plan, base)?;
    let cmd =
        quality::decoder_command(&plan.ffmpeg, &plan.encode, Some(base), &reference, base + 1);
    let what = "the output's decoder";
    parts.push(spawn_part(what, plan, cmd, fds, cgroup, Sink::Ignore).await?);
    // The reference's decoder: [input file?, pipe].
    let (mut fds, reference) = reference_at(plan, base)?;
    let out = base + fds.len() as i32;
    fds.push(Arc::new(r_write));
    let cmd = quality::decoder_command(&plan.ffmpeg, &plan.encode, None, &reference, out);
    let what = "the reference's decoder";
    parts.push(spawn_part(what, plan, cmd, fds, cgroup, Sink::Ignore).await?);
    // libvmaf, reading both pipes: [reference, output].
    let fds = vec![Arc::new(r_read), Arc::new(d_read)];
    let cmd = quality::vmaf_command(bin, &plan.encode, base, base + 1);
    let sink = Sink::Text(vmaf_out.clone());
    parts.push(spawn_part(quality::VMAF_BIN, plan, cmd, fds, cgroup, sink).await?);
    Ok(())
}

async fn measure(
    plan: &QualityPlan,
    distorted: Option<File>,
    cgroup: Option<&JobCgroup>,
    power: Option<&ActorRef<PowerMsg>>,
    attempt: &AttemptRef,
    mut stop: Stop,
) -> Result<Measured, String> {
    let distorted = match (&plan.scratch, distorted) {
        (Some(Err(e)), _) => return Err(format!("no temporary file for the output: {e}")),
        (Some(Ok(f)), _) => f.try_clone().map_err(|e| format!("the output: {e}"))?,
        (None, Some(f)) => f,
        (None, None) => return Err("the output is not available to compare".into()),
    };
    let want_vmaf = plan.metrics.contains(&QualityMetric::Vmaf);
    let stats = Arc::new(Mutex::new(FrameStats::default()));
    let vmaf_out = Arc::new(Mutex::new(String::new()));
    let mut parts: Vec<Part> = Vec::new();
    // A part that does not start ends the pass; those started are killed
    // with their guards when `parts` drops.
    let vmaf_not_started =
        start_parts(plan, &distorted, cgroup, &stats, &vmaf_out, &mut parts).await?;
    drop(distorted);
    let key = quality_attempt(attempt);
    let pids: Vec<i32> = parts.iter().map(|p| p.guard.pid()).collect();
    let tracked = power.filter(|p| !parts.is_empty() && track_power(p, key.clone(), cgroup, &pids));

    // Wait for every exit, handing the guards the node's lease as it moves.
    let deadline = tokio::time::Instant::now() + plan.timeout;
    let mut stopped: Option<&'static str> = None;
    let mut listening = true;
    let statuses = {
        let mut guards: Vec<&ProcessGuard> = Vec::new();
        let mut waits = Vec::new();
        for Part { child, guard, .. } in parts.iter_mut() {
            let guard: &ProcessGuard = guard;
            guards.push(guard);
            waits.push(process::wait(child, guard));
        }
        let all = futures::future::join_all(waits);
        tokio::pin!(all);
        let mut renew = tokio::time::interval(LEASE_RENEW_EVERY);
        loop {
            tokio::select! {
                s = &mut all => break Some(s),
                _ = tokio::time::sleep_until(deadline) => break None,
                changed = stop.changed(), if listening => match changed {
                    Ok(()) => {
                        if let Some(why) = *stop.borrow() {
                            stopped = Some(why);
                            break None;
                        }
                    }
                    // The sender is gone: no stop can come any more.
                    Err(_) => listening = false,
                },
                _ = renew.tick() => {
                    if let Some(remaining) = current_lease(&plan.lease_end_ms) {
                        for g in &guards {
                            let _ = g.renew_lease(remaining);
                        }
                    }
                }
            }
        }
    };
    // The last CPU reading before the guards go (a guard's janitor
    // removes the cgroup then); a pass over its time is killed with its
    // groups.
    let final_cpu_s = cgroup.and_then(|c| c.stats().cpu_s);
    let mut failures: Vec<(&'static str, String)> = Vec::new();
    let mut readers = Vec::new();
    for (i, p) in parts.into_iter().enumerate() {
        let tail = p
            .stderr
            .lock()
            .map(|r| r.lines().join(" | "))
            .unwrap_or_default();
        match statuses.as_ref().map(|s| &s[i]) {
            Some(Ok(st)) if st.success() => {}
            Some(Ok(st)) => failures.push((p.what, format!("{} exited {st}: {tail}", p.what))),
            Some(Err(e)) => failures.push((p.what, format!("waiting for {}: {e}", p.what))),
            None => {}
        }
        readers.extend(p.readers);
        drop(p.guard);
    }
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }
    let energy = match tracked {
        Some(p) => finish_power(p, key, final_cpu_s)
            .await
            .map(|s| Energy::new(s.domains, s.measured_s, None, None)),
        None => None,
    };
    if let Some(why) = stopped {
        return Err(format!("the quality pass was stopped: {why}"));
    }
    if statuses.is_none() {
        return Err(format!(
            "the quality pass took longer than {} s and was killed",
            plan.timeout.as_secs()
        ));
    }
    let failed = |names: &[&str]| -> Option<String> {
        let v: Vec<&str> = failures
            .iter()
            .filter(|(w, _)| names.contains(w))
            .map(|(_, m)| m.as_str())
            .collect();
        (!v.is_empty()).then(|| v.join("; "))
    };
    let filters_asked = plan.metrics.iter().any(|m| *m != QualityMetric::Vmaf);
    let filters = filters_asked.then(|| match failed(&["ffmpeg (psnr/ssim)"]) {
        Some(e) => Err(format!(
            "ffmpeg could not compare the output with its reference: {e}"
        )),
        None => Ok(stats.lock().map(|s| s.clone()).unwrap_or_default()),
    });
    let vmaf = want_vmaf.then(|| {
        if plan.vmaf_bin.is_none() {
            return Err(VMAF_UNAVAILABLE.to_string());
        }
        if let Some(e) = &vmaf_not_started {
            return Err(e.clone());
        }
        if let Some(e) = failed(&[
            "the output's decoder",
            "the reference's decoder",
            quality::VMAF_BIN,
        ]) {
            return Err(e);
        }
        let text = vmaf_out.lock().map(|t| t.clone()).unwrap_or_default();
        quality::parse_vmaf_output(&text)
    });
    Ok(Measured {
        filters,
        vmaf,
        energy,
    })
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
            encode: EncodeParams::new(
                160,
                90,
                10,
                ffrtmp_runtime::model::Codec::H264,
                100,
                "veryfast".into(),
            ),
            input: Input::Testsrc { duration_s: 0.5 },
            reference: None,
            scratch: None,
            ffmpeg: PathBuf::from("ffmpeg"),
            vmaf_bin: None,
            nice: 0,
            lease_end_ms: None,
            timeout: Duration::from_secs(60),
        }
    }

    fn no_stop() -> Stop {
        tokio::sync::watch::channel(None).1
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
            no_stop(),
        )
        .await;
        let err = r.error.expect("the pass fails");
        assert!(err.contains("psnr/ssim: ffmpeg could not compare"), "{err}");
        assert_eq!((r.psnr, r.ssim), (None, None));
        assert!(r.wall_s >= 0.0);
        assert_eq!(r.quality_energy_joules, None);
    }

    #[tokio::test]
    async fn a_missing_scratch_file_is_the_reason() {
        let mut p = plan(vec![QualityMetric::Psnr]);
        p.scratch = Some(Err("no space".into()));
        let r = run(p, None, None, None, &attempt(), no_stop()).await;
        assert!(
            r.error.as_deref().is_some_and(|e| e.contains("no space")),
            "{r:?}"
        );
        assert!(r.psnr.is_none());
    }

    #[test]
    fn a_scratch_file_has_no_name_in_its_work_dir() {
        use std::io::{Read, Seek};
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("work");
        let mut f = scratch_file(Some(&work)).expect("scratch");
        f.write_all(b"frames").expect("write");
        f.rewind().expect("rewind");
        let mut back = String::new();
        f.read_to_string(&mut back).expect("read");
        assert_eq!(back, "frames");
        assert!(work.is_dir());
        assert_eq!(std::fs::read_dir(&work).expect("list").count(), 0);
        // A work dir that cannot be made is the reason.
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, b"x").expect("file");
        let err = scratch_file(Some(&blocked.join("work"))).expect_err("not a dir");
        assert!(err.contains("work"), "{err}");
    }

    #[test]
    fn the_pass_is_charged_apart_from_its_attempt() {
        let a = attempt();
        let q = quality_attempt(&a);
        assert_ne!(q, a);
        assert_eq!(q.token, a.token);
    }
}
