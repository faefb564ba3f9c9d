//! Probing the machine's FFmpeg and media: durations, an input's container
//! (refused unless it is on the allow-list), which encoders really work,
//! which quality metrics a node can compute and whether its `ffrtmp-vmaf`
//! passes its self-test. Each probe is a real `ffprobe`/`ffmpeg` run (argv
//! only, never a shell), killed *and reaped* at its time limit.
//!
//! What a probe runs and how its output is read is pure and lives in
//! `ffrtmp_runtime::ffmpeg` ([`probe_args`], [`format_allowed`], ...); this
//! module runs it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ffrtmp_runtime::error::FieldError;
use ffrtmp_runtime::ffmpeg::{
    first_useful_line, format_allowed, is_encoder_name, parse_nonneg_f64, probe_args,
    refused_format, EncoderProbe, UnavailableEncoder, FILE_PROTOCOLS, INPUT_FORMATS,
};
use ffrtmp_runtime::model::QualityMetric;
use ffrtmp_runtime::quality::{filter_metrics, VMAF_BIN};
use ffrtmp_runtime::spec::{self, MediaRoots};

use crate::confine::{ConfineError, Resolver};

/// How long one probe may take before it is killed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Duration of a media file in seconds via ffprobe (argv only); `Ok(None)` if
/// the container does not say. An error if ffprobe cannot run or rejects the
/// file; [`std::io::ErrorKind::TimedOut`] if it takes longer than
/// [`PROBE_TIMEOUT`] (see [`probe_duration_within`]).
pub async fn probe_duration(ffprobe: &Path, input: &Path) -> std::io::Result<Option<f64>> {
    probe_duration_within(ffprobe, input, PROBE_TIMEOUT).await
}

/// [`probe_duration`] with its own time limit. An input can make ffprobe
/// block for good (a playlist whose segment is a FIFO nobody writes): past
/// `timeout` ffprobe is SIGKILLed *and reaped* here before the
/// [`std::io::ErrorKind::TimedOut`] error returns, so no probe outlives its
/// call, not even as a zombie.
pub async fn probe_duration_within(
    ffprobe: &Path,
    input: &Path,
    timeout: Duration,
) -> std::io::Result<Option<f64>> {
    let mut cmd = tokio::process::Command::new(ffprobe);
    cmd.args([
        "-hide_banner",
        "-v",
        "error",
        "-show_entries",
        "format=duration",
        "-of",
        "default=noprint_wrappers=1:nokey=1",
        "-i",
    ])
    .arg(input)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let (status, out, err) = output_within(cmd, timeout).await?;
    if !status.success() {
        let stderr = String::from_utf8_lossy(&err);
        return Err(std::io::Error::other(format!(
            "ffprobe failed ({}): {}",
            status,
            stderr.trim()
        )));
    }
    let stdout = String::from_utf8_lossy(&out);
    Ok(stdout
        .lines()
        .find_map(|l| parse_nonneg_f64(l.trim()))
        .filter(|d| *d > 0.0))
}

/// Runs `cmd` to its end, collecting stdout and stderr, within `timeout`.
/// Past it the process is SIGKILLed *and reaped* before the
/// [`std::io::ErrorKind::TimedOut`] error returns, so none outlives the call,
/// not even as a zombie (tokio's `kill_on_drop` only signals it).
async fn output_within(
    mut cmd: tokio::process::Command,
    timeout: Duration,
) -> std::io::Result<(std::process::ExitStatus, Vec<u8>, Vec<u8>)> {
    use tokio::io::AsyncReadExt;

    // Only if this future is dropped midway; the timeout below kills and reaps.
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let run = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let read_out = async {
            match stdout.as_mut() {
                Some(s) => s.read_to_end(&mut out).await.map(|_| ()),
                None => Ok(()),
            }
        };
        let read_err = async {
            match stderr.as_mut() {
                Some(s) => s.read_to_end(&mut err).await.map(|_| ()),
                None => Ok(()),
            }
        };
        let (o, e) = tokio::join!(read_out, read_err);
        o?;
        e?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out, err))
    };
    let finished = tokio::time::timeout(timeout, run).await;
    match finished {
        Ok(r) => r,
        Err(_) => {
            // SIGKILL, then wait(2) for it: nothing is left behind.
            child.kill().await?;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("did not finish within {} ms", timeout.as_millis()),
            ))
        }
    }
}

/// What [`probe_input`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct InputProbe {
    /// The demuxer, as ffprobe names it (`mov,mp4,m4a,3gp,3g2,mj2`), one of
    /// [`INPUT_FORMATS`]; `None` where ffprobe recognised nothing (not
    /// media at all): FFmpeg then gets the whole allow-list and fails on
    /// its own, with its own words.
    pub format: Option<String>,
    /// Seconds, where the container says.
    pub duration_s: Option<f64>,
}

/// Why [`probe_input`] refused an input.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The input is not a container on [`INPUT_FORMATS`] (named where
    /// FFmpeg said which format it found).
    #[error("the input's container format {} is not allowed (allowed: {}): {detail}", format.as_deref().unwrap_or("(unknown)"), INPUT_FORMATS.join(", "))]
    NotAllowed {
        /// The format ffprobe found, when it named one.
        format: Option<String>,
        /// ffprobe's account of the input.
        detail: String,
    },
    /// ffprobe could not run, or did not finish in time.
    #[error("ffprobe: {0}")]
    Io(#[from] std::io::Error),
}

/// Probes an input the worker opened (`file`, from `crate::confine`): ffprobe
/// reads it as its stdin through `file:/proc/self/fd/0` (the same file,
/// seekable), with only the `file` protocol and only the demuxers of
/// [`INPUT_FORMATS`], so a playlist is refused before it opens anything.
/// An error only where FFmpeg recognised a format that is not allowed (or
/// ffprobe could not run); a file it does not recognise at all probes as
/// `format: None`.
pub async fn probe_input(ffprobe: &Path, file: &std::fs::File) -> Result<InputProbe, ProbeError> {
    let stdin = file.try_clone()?;
    let mut cmd = tokio::process::Command::new(ffprobe);
    cmd.args([
        "-hide_banner",
        "-v",
        "error",
        "-protocol_whitelist",
        FILE_PROTOCOLS,
        "-format_whitelist",
        &INPUT_FORMATS.join(","),
        "-show_entries",
        "format=format_name,duration",
        "-of",
        "default=noprint_wrappers=1",
        "-i",
        "file:/proc/self/fd/0",
    ])
    .stdin(Stdio::from(stdin))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .env_clear()
    .env("LC_ALL", "C");
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    let (status, out, err) = output_within(cmd, PROBE_TIMEOUT).await?;
    let stdout = String::from_utf8_lossy(&out);
    let stderr = String::from_utf8_lossy(&err);
    let mut format = None;
    let mut duration_s = None;
    for line in stdout.lines() {
        if let Some(f) = line.strip_prefix("format_name=") {
            format = Some(f.trim().to_string());
        } else if let Some(d) = line.strip_prefix("duration=") {
            duration_s = parse_nonneg_f64(d.trim()).filter(|d| *d > 0.0);
        }
    }
    let refused = stderr.contains("not on whitelist");
    match format {
        Some(format) if status.success() && format_allowed(&format) => Ok(InputProbe {
            format: Some(format),
            duration_s,
        }),
        None if !refused => Ok(InputProbe {
            format: None,
            duration_s: None,
        }),
        format => Err(ProbeError::NotAllowed {
            // FFmpeg names the format it refused: `[hls @ 0x...] Format not on whitelist`.
            format: format.or_else(|| refused_format(&stderr)),
            detail: stderr.trim().chars().take(400).collect(),
        }),
    }
}

/// Runs `encoder`'s test encode ([`probe_args`]) within `timeout`:
/// `Err(reason)` where it fails.
async fn encoder_works(ffmpeg: &Path, encoder: &str, timeout: Duration) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(ffmpeg);
    cmd.args(probe_args(encoder))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match output_within(cmd, timeout).await {
        Ok((status, _, _)) if status.success() => Ok(()),
        Ok((status, _, err)) => Err(first_useful_line(&String::from_utf8_lossy(&err))
            .unwrap_or_else(|| format!("the test encode failed ({status})"))),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(format!(
            "the test encode did not finish within {} s",
            timeout.as_secs()
        )),
        Err(e) => Err(format!("could not run {}: {e}", ffmpeg.display())),
    }
}

/// Encoders (by FFmpeg encoder name, e.g. `"libx264"`) that complete a tiny
/// real encode, and those that do not with the reason. `ffmpeg -encoders`
/// alone is not trusted: Debian's FFmpeg lists `h264_nvenc`, `h264_qsv`
/// and `h264_vaapi`, which fail at run time without their device. The
/// probes run at once, each within [`PROBE_TIMEOUT`]; the lists follow
/// `candidates`' order; names that are not plain encoder names, and
/// repeats, are dropped.
pub async fn probe_encoders(ffmpeg: &Path, candidates: &[&str]) -> EncoderProbe {
    probe_encoders_within(ffmpeg, candidates, PROBE_TIMEOUT).await
}

/// [`probe_encoders`] with its own time limit per probe.
pub async fn probe_encoders_within(
    ffmpeg: &Path,
    candidates: &[&str],
    timeout: Duration,
) -> EncoderProbe {
    let mut names: Vec<&str> = Vec::new();
    for &name in candidates {
        if is_encoder_name(name) && !names.contains(&name) {
            names.push(name);
        }
    }
    let mut probes = tokio::task::JoinSet::new();
    for (i, name) in names.iter().enumerate() {
        let (ffmpeg, name) = (ffmpeg.to_path_buf(), name.to_string());
        probes.spawn(async move { (i, encoder_works(&ffmpeg, &name, timeout).await) });
    }
    let mut results: Vec<Option<Result<(), String>>> = vec![None; names.len()];
    while let Some(done) = probes.join_next().await {
        if let Ok((i, r)) = done {
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(r);
            }
        }
    }
    let mut found = EncoderProbe::default();
    for (name, r) in names.iter().zip(results) {
        match r.unwrap_or_else(|| Err("the probe task failed".into())) {
            Ok(()) => found.available.push(name.to_string()),
            Err(reason) => {
                tracing::info!(encoder = name, %reason, "encoder failed its test encode");
                found.unavailable.push(UnavailableEncoder {
                    encoder: name.to_string(),
                    reason,
                });
            }
        }
    }
    found
}
/// How long `ffrtmp-vmaf --self-test` may take.
const VMAF_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The first of `candidates` that is a file and passes `--self-test`
/// (libvmaf loads its built-in model and tells a clean copy from a noisy
/// one), with why each other one did not.
pub async fn probe_vmaf(candidates: &[PathBuf]) -> (Option<PathBuf>, Vec<String>) {
    let mut why = Vec::new();
    for c in candidates {
        if !c.is_file() {
            continue;
        }
        let mut cmd = tokio::process::Command::new(c);
        cmd.arg("--self-test")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match tokio::time::timeout(VMAF_PROBE_TIMEOUT, cmd.output()).await {
            Ok(Ok(out)) if out.status.success() => return (Some(c.clone()), why),
            Ok(Ok(out)) => why.push(format!(
                "{}: self-test failed: {}",
                c.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Ok(Err(e)) => why.push(format!("{}: {e}", c.display())),
            Err(_) => why.push(format!("{}: self-test timed out", c.display())),
        }
    }
    if why.is_empty() {
        why.push(format!("no {VMAF_BIN} found"));
    }
    (None, why)
}

/// The quality metrics a node computes: PSNR/SSIM where its FFmpeg lists
/// the filters, VMAF where it has a working `ffrtmp-vmaf`. Sorted.
pub async fn probe_metrics(ffmpeg_bin: &Path, vmaf: bool) -> Vec<QualityMetric> {
    let mut cmd = tokio::process::Command::new(ffmpeg_bin);
    cmd.args(["-hide_banner", "-filters"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut metrics = match tokio::time::timeout(VMAF_PROBE_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => {
            filter_metrics(&String::from_utf8_lossy(&out.stdout))
        }
        _ => Vec::new(),
    };
    if vmaf {
        metrics.push(QualityMetric::Vmaf);
    }
    metrics.sort();
    metrics
}

/// The submission's probe of a file input: opened beneath its root as the
/// worker will open it (`crate::confine`, no symlink followed) and probed on
/// that descriptor with only the `file` protocol and the allowed demuxers
/// ([`probe_input`]). A container that is not on
/// [`ffrtmp_runtime::ffmpeg::INPUT_FORMATS`] (an HLS playlist saved as `.mp4`, say)
/// is refused with `input_format_not_allowed` on `input.path`. The worker
/// probes again before it runs the job.
pub async fn check_input_format(
    ffprobe: &Path,
    input: &Path,
    roots: &MediaRoots,
) -> Result<(), FieldError> {
    const F: &str = "input.path";
    let file = Resolver::new(roots.roots())
        .open_input(input)
        .map_err(|e| match e {
            ConfineError::Outside { .. } => spec::outside_roots(F, input),
            ConfineError::NotFound { .. } => FieldError::new(
                spec::codes::FILE_NOT_FOUND,
                Some(F),
                format!("input file {} does not exist", input.display()),
            ),
            e => FieldError::invalid(F, format!("input {e}")),
        })?;
    match probe_input(ffprobe, &file).await {
        Ok(_) => Ok(()),
        Err(e @ ProbeError::NotAllowed { .. }) => Err(FieldError::new(
            spec::codes::INPUT_FORMAT_NOT_ALLOWED,
            Some(F),
            format!("input {}: {e}", input.display()),
        )),
        Err(ProbeError::Io(e)) => Err(FieldError::invalid(
            F,
            format!("input {} could not be probed: {e}", input.display()),
        )),
    }
}

#[cfg(test)]
mod tests;
