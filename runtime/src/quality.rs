//! The quality pass after an encode: the FFmpeg argv that compares an
//! output with its reference, and the pooling of its per-frame figures.
//!
//! PSNR and SSIM are FFmpeg's own `psnr` and `ssim` filters, writing one
//! line per frame to stdout (`stats_file=-`); this module parses those
//! lines and pools them per job ([`MetricScore`]: mean, 5th-percentile
//! frame, worst frame, frames). The files are FFmpeg's by descriptor
//! (`file:/proc/self/fd/N`, [`crate::ffmpeg::fd_url`]), opened by the
//! worker through `ffrtmp_os::confine`; the reference of a `testsrc` job is
//! the same synthetic source regenerated at the job's size, rate and
//! duration. Pure: no clock, no I/O.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::ffmpeg::{self, FfmpegCommand, FILE_PROTOCOLS, INPUT_FORMATS};
use crate::model::{EncodeParams, Input, MetricScore, QualityMetric};

/// PSNR reported for a frame identical to its reference (FFmpeg prints
/// `inf`, which JSON cannot carry).
pub const PSNR_IDENTICAL_DB: f64 = 100.0;

/// The reference a job's output is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    /// The job's input file, as an inherited descriptor, and the demuxer
    /// its probe found (`None`: the whole [`INPUT_FORMATS`]).
    File {
        /// The input's descriptor number in the quality pass's FFmpeg.
        fd: i32,
        /// The demuxer to open it with.
        format: Option<String>,
    },
    /// The job's `testsrc2` source, regenerated.
    Testsrc {
        /// Seconds of pattern, as the job's input had.
        duration_s: f64,
    },
}

/// The argv of a quality pass computing `metrics` (those of PSNR and SSIM:
/// VMAF is not FFmpeg's here) for an output encoded with `encode`, read
/// from descriptor `distorted_fd`, against `reference`. Both are brought
/// to the output's size and frame rate in `yuv420p`, timestamps from zero;
/// the shorter of the two ends the comparison. `None` when `metrics` names
/// neither PSNR nor SSIM.
pub fn build_command(
    ffmpeg_bin: &Path,
    encode: &EncodeParams,
    distorted_fd: i32,
    reference: &Reference,
    metrics: &[QualityMetric],
) -> Option<FfmpegCommand> {
    let psnr = metrics.contains(&QualityMetric::Psnr);
    let ssim = metrics.contains(&QualityMetric::Ssim);
    if !psnr && !ssim {
        return None;
    }
    let mut args: Vec<OsString> = [
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "error",
        "-protocol_whitelist",
        FILE_PROTOCOLS,
        "-i",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(ffmpeg::fd_url(distorted_fd));
    match reference {
        Reference::File { fd, format } => {
            args.push("-format_whitelist".into());
            args.push(match format {
                Some(f) => f.into(),
                None => INPUT_FORMATS.join(",").into(),
            });
            args.push("-i".into());
            args.push(ffmpeg::fd_url(*fd));
        }
        Reference::Testsrc { duration_s } => {
            for a in ["-f", "lavfi", "-i"] {
                args.push(a.into());
            }
            args.push(ffmpeg::testsrc_source(encode, *duration_s).into());
        }
    }
    args.push("-filter_complex".into());
    args.push(filtergraph(encode, reference, psnr, ssim).into());
    for a in ["-map", "[out]", "-f", "null", "-"] {
        args.push(a.into());
    }
    Some(FfmpegCommand {
        program: ffmpeg_bin.to_path_buf(),
        args,
        env: vec![("LC_ALL".into(), "C".into())],
    })
}

/// Both streams' frames renumbered 0, 1, 2, ... at the output's rate, so
/// that the comparison pairs them by index: pairing by their own
/// timestamps misses frames where a container rounds them (Matroska's
/// milliseconds at 30 fps paired every third frame with its neighbour).
fn by_index(encode: &EncodeParams) -> String {
    format!("settb=1/{},setpts=N,format=yuv420p", encode.fps.max(1))
}

/// `[0:v]` is the output, `[1:v]` the reference; the metrics are chained
/// (each passes its first input through unchanged).
fn filtergraph(encode: &EncodeParams, reference: &Reference, psnr: bool, ssim: bool) -> String {
    let common = by_index(encode);
    let reference_chain = match reference {
        // The encode scaled and resampled the input the same way.
        Reference::File { .. } => format!(
            "scale={}:{},fps={},{common}",
            encode.width, encode.height, encode.fps
        ),
        Reference::Testsrc { .. } => common.clone(),
    };
    let mut g = format!("[0:v]{common}[d];[1:v]{reference_chain}");
    match (psnr, ssim) {
        (true, true) => {
            g.push_str(",split[r1][r2];");
            g.push_str("[d][r1]psnr=stats_file=-:shortest=1[x];");
            g.push_str("[x][r2]ssim=stats_file=-:shortest=1[out]");
        }
        (true, false) => g.push_str("[r];[d][r]psnr=stats_file=-:shortest=1[out]"),
        _ => g.push_str("[r];[d][r]ssim=stats_file=-:shortest=1[out]"),
    }
    g
}

/// The name of the VMAF helper binary (`runtime/vmaf/`).
pub const VMAF_BIN: &str = "ffrtmp-vmaf";

/// Where a node looks for [`VMAF_BIN`], in order: `--vmaf-bin` when given
/// (then only there), else beside the node's own executable, else each
/// directory of `PATH`.
pub fn vmaf_candidates(
    flag: Option<&Path>,
    exe: Option<&Path>,
    path_env: Option<&OsStr>,
) -> Vec<PathBuf> {
    if let Some(f) = flag {
        return vec![f.to_path_buf()];
    }
    let mut v: Vec<PathBuf> = exe
        .and_then(Path::parent)
        .map(|d| d.join(VMAF_BIN))
        .into_iter()
        .collect();
    if let Some(p) = path_env {
        v.extend(std::env::split_paths(p).map(|d| d.join(VMAF_BIN)));
    }
    v
}

/// The metrics FFmpeg's own filters give (`psnr`, `ssim`) that a
/// `ffmpeg -filters` listing names.
pub fn filter_metrics(listing: &str) -> Vec<QualityMetric> {
    let named = |name: &str| {
        listing
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(name))
    };
    [QualityMetric::Psnr, QualityMetric::Ssim]
        .into_iter()
        .filter(|m| named(m.as_str()))
        .collect()
}

/// One side of a VMAF comparison decoded to raw `yuv420p` at the output's
/// size and rate, written to descriptor `out_fd` (a pipe to
/// [`VMAF_BIN`]). `source` is the output's descriptor (`None`: the
/// reference, as `reference` says).
pub fn decoder_command(
    ffmpeg_bin: &Path,
    encode: &EncodeParams,
    source: Option<i32>,
    reference: &Reference,
    out_fd: i32,
) -> FfmpegCommand {
    let mut args: Vec<OsString> = ["-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"]
        .iter()
        .map(OsString::from)
        .collect();
    let common = by_index(encode);
    let chain = match (source, reference) {
        (Some(fd), _) => {
            for a in ["-protocol_whitelist", FILE_PROTOCOLS, "-i"] {
                args.push(a.into());
            }
            args.push(ffmpeg::fd_url(fd));
            common.to_string()
        }
        (None, Reference::File { fd, format }) => {
            for a in ["-protocol_whitelist", FILE_PROTOCOLS, "-format_whitelist"] {
                args.push(a.into());
            }
            args.push(match format {
                Some(f) => f.into(),
                None => INPUT_FORMATS.join(",").into(),
            });
            args.push("-i".into());
            args.push(ffmpeg::fd_url(*fd));
            format!(
                "scale={}:{},fps={},{common}",
                encode.width, encode.height, encode.fps
            )
        }
        (None, Reference::Testsrc { duration_s }) => {
            for a in ["-f", "lavfi", "-i"] {
                args.push(a.into());
            }
            args.push(ffmpeg::testsrc_source(encode, *duration_s).into());
            common.to_string()
        }
    };
    for a in ["-map", "0:v:0", "-vf"] {
        args.push(a.into());
    }
    args.push(chain.into());
    // Every frame as decoded, none dropped or repeated for timestamps.
    for a in [
        "-fps_mode",
        "passthrough",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
    ] {
        args.push(a.into());
    }
    args.push(format!("pipe:{out_fd}").into());
    FfmpegCommand {
        program: ffmpeg_bin.to_path_buf(),
        args,
        env: vec![("LC_ALL".into(), "C".into())],
    }
}

/// [`VMAF_BIN`]'s argv: the reference and the distorted stream on
/// inherited descriptors.
pub fn vmaf_command(
    bin: &Path,
    encode: &EncodeParams,
    reference_fd: i32,
    distorted_fd: i32,
) -> FfmpegCommand {
    let args: Vec<OsString> = vec![
        "--width".into(),
        encode.width.to_string().into(),
        "--height".into(),
        encode.height.to_string().into(),
        "--reference".into(),
        format!("/proc/self/fd/{reference_fd}").into(),
        "--distorted".into(),
        format!("/proc/self/fd/{distorted_fd}").into(),
    ];
    FfmpegCommand {
        program: bin.to_path_buf(),
        args,
        env: Vec::new(),
    }
}

/// The per-frame scores [`VMAF_BIN`] prints (`{"model":"vmaf_v0.6.1",
/// "frames":[...]}`), checked: the model named, each score finite and in
/// 0–100.
pub fn parse_vmaf_output(stdout: &str) -> Result<Vec<f64>, String> {
    #[derive(serde::Deserialize)]
    struct Out {
        model: String,
        frames: Vec<f64>,
    }
    let out: Out = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("{VMAF_BIN} printed no scores: {e}"))?;
    if out.model != "vmaf_v0.6.1" {
        return Err(format!("{VMAF_BIN} used model {:?}", out.model));
    }
    if let Some(bad) = out
        .frames
        .iter()
        .find(|s| !s.is_finite() || !(0.0..=100.0).contains(*s))
    {
        return Err(format!("{VMAF_BIN} gave a score out of range: {bad}"));
    }
    Ok(out.frames)
}

/// The per-frame figures of a quality pass's stdout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameStats {
    /// Each frame's PSNR in dB (average over Y, U and V).
    pub psnr: Vec<f64>,
    /// Each frame's SSIM ("All").
    pub ssim: Vec<f64>,
}

impl FrameStats {
    /// Takes one stdout line: a `psnr` line (`n:1 mse_avg:.. psnr_avg:..`)
    /// or an `ssim` line (`n:1 Y:.. U:.. V:.. All:0.98 (17.1)`). Other
    /// lines, and lines whose figure does not parse, are ignored.
    pub fn push_line(&mut self, line: &str) {
        if let Some(v) = field(line, "psnr_avg:") {
            let db = if v == "inf" {
                Some(PSNR_IDENTICAL_DB)
            } else {
                v.parse::<f64>().ok().filter(|x| x.is_finite())
            };
            if let Some(db) = db {
                self.psnr.push(db.min(PSNR_IDENTICAL_DB));
            }
        } else if let Some(v) = field(line, "All:") {
            if let Some(x) = v.parse::<f64>().ok().filter(|x| x.is_finite()) {
                self.ssim.push(x);
            }
        }
    }

    /// Pooled scores; `None` for a metric with no frames.
    pub fn scores(&self) -> (Option<MetricScore>, Option<MetricScore>) {
        (pool(&self.psnr), pool(&self.ssim))
    }
}

/// The value after `key` up to the next space.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(key)? + key.len();
    line[at..].split_whitespace().next()
}

/// A metric pooled over frames: the mean, the 5th-percentile frame
/// (nearest rank: the smallest value with at least 5 % of the frames at
/// or below it) and the worst frame. `None` for no frames.
pub fn pool(frames: &[f64]) -> Option<MetricScore> {
    if frames.is_empty() {
        return None;
    }
    let mut sorted = frames.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let rank = (n * 5).div_ceil(100).max(1);
    Some(MetricScore {
        mean: sorted.iter().sum::<f64>() / n as f64,
        p5: Some(sorted[rank - 1]),
        min: Some(sorted[0]),
        frames: n as u64,
    })
}

/// The reference of a job's input, given the input file's descriptor and
/// demuxer when it is a file.
pub fn reference_for(input: &Input, file: Option<(i32, Option<String>)>) -> Option<Reference> {
    match (input, file) {
        (Input::Testsrc { duration_s }, _) => Some(Reference::Testsrc {
            duration_s: *duration_s,
        }),
        (Input::File { .. }, Some((fd, format))) => Some(Reference::File { fd, format }),
        (Input::File { .. }, None) => None,
    }
}

#[cfg(test)]
mod tests;
