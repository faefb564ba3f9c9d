//! The quality pass after an encode: the FFmpeg argv that compares an
//! output with its reference, and the pooling of its per-frame figures.
//!
//! PSNR and SSIM are FFmpeg's own `psnr` and `ssim` filters, writing one
//! line per frame to stdout (`stats_file=-`); this module parses those
//! lines and pools them per job ([`MetricScore`]: mean, 5th-percentile
//! frame, worst frame, frames). The files are FFmpeg's by descriptor
//! (`file:/proc/self/fd/N`, [`crate::ffmpeg::fd_url`]), opened by the
//! worker through [`crate::confine`]; the reference of a `testsrc` job is
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
    File { fd: i32, format: Option<String> },
    /// The job's `testsrc2` source, regenerated.
    Testsrc { duration_s: f64 },
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
mod tests {
    use super::*;
    use crate::model::Codec;

    fn encode() -> EncodeParams {
        EncodeParams::new(160, 90, 10, Codec::H264, 100, "veryfast".into())
    }

    fn after(args: &[String], flag: &str) -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn testsrc_reference_is_the_same_source_regenerated() {
        let cmd = build_command(
            Path::new("/usr/bin/ffmpeg"),
            &encode(),
            3,
            &Reference::Testsrc { duration_s: 0.5 },
            &[QualityMetric::Psnr, QualityMetric::Ssim],
        )
        .expect("psnr and ssim");
        let a = cmd.args_lossy();
        assert_eq!(
            after(&a, "-i"),
            vec![
                "file:/proc/self/fd/3".to_string(),
                "testsrc2=size=160x90:rate=10:duration=0.5".to_string()
            ]
        );
        assert_eq!(after(&a, "-f"), vec!["lavfi", "null"]);
        let graph = after(&a, "-filter_complex").concat();
        assert!(graph.contains("psnr=stats_file=-:shortest=1"), "{graph}");
        assert!(graph.contains("ssim=stats_file=-:shortest=1"), "{graph}");
        // The synthetic reference is already at the output's size.
        assert!(!graph.contains("scale="), "{graph}");
        // Frames paired by index at the output's rate, not by timestamp.
        assert!(graph.starts_with("[0:v]settb=1/10,setpts=N,"), "{graph}");
        assert!(graph.contains("[1:v]settb=1/10,setpts=N,"), "{graph}");
        assert_eq!(a.last().map(String::as_str), Some("-"));
        assert_eq!(after(&a, "-protocol_whitelist"), vec!["file"]);
    }

    #[test]
    fn file_reference_is_scaled_like_the_encode_and_whitelisted() {
        let cmd = build_command(
            Path::new("ffmpeg"),
            &encode(),
            4,
            &Reference::File {
                fd: 3,
                format: Some("matroska".into()),
            },
            &[QualityMetric::Ssim],
        )
        .expect("ssim");
        let a = cmd.args_lossy();
        assert_eq!(
            after(&a, "-i"),
            vec!["file:/proc/self/fd/4", "file:/proc/self/fd/3"]
        );
        assert_eq!(after(&a, "-format_whitelist"), vec!["matroska"]);
        let graph = after(&a, "-filter_complex").concat();
        assert!(graph.contains("[1:v]scale=160:90,fps=10,"), "{graph}");
        assert!(
            graph.contains("ssim=") && !graph.contains("psnr="),
            "{graph}"
        );
    }

    #[test]
    fn vmaf_alone_needs_no_ffmpeg_pass() {
        let r = Reference::Testsrc { duration_s: 1.0 };
        assert!(build_command(
            Path::new("ffmpeg"),
            &encode(),
            3,
            &r,
            &[QualityMetric::Vmaf]
        )
        .is_none());
        let cmd = build_command(
            Path::new("ffmpeg"),
            &encode(),
            3,
            &r,
            &[QualityMetric::Vmaf, QualityMetric::Psnr],
        )
        .expect("psnr");
        let graph = after(&cmd.args_lossy(), "-filter_complex").concat();
        assert!(
            graph.contains("psnr=") && !graph.contains("ssim="),
            "{graph}"
        );
    }

    #[test]
    fn stats_lines_are_parsed_and_pooled() {
        // As FFmpeg 5.1's psnr and ssim filters print them (stats_file=-).
        let out = "\
n:1 mse_avg:12.90 mse_y:13.06 mse_u:12.79 mse_v:12.41 psnr_avg:37.02 psnr_y:36.97 psnr_u:37.06 psnr_v:37.19 
n:1 Y:0.977618 U:0.981862 V:0.990765 All:0.980517 (17.103383)
n:2 mse_avg:17.75 mse_y:16.97 mse_u:18.48 mse_v:20.18 psnr_avg:35.64 psnr_y:35.84 psnr_u:35.46 psnr_v:35.08 
n:2 Y:0.972121 U:0.978179 V:0.984929 All:0.975265 (16.066930)
n:3 mse_avg:0.00 mse_y:0.00 mse_u:0.00 mse_v:0.00 psnr_avg:inf psnr_y:inf psnr_u:inf psnr_v:inf 
n:3 Y:1.000000 U:1.000000 V:1.000000 All:1.000000 (inf)
garbage line
n:4 mse_avg:x psnr_avg:nan
";
        let mut s = FrameStats::default();
        for line in out.lines() {
            s.push_line(line);
        }
        assert_eq!(s.psnr, vec![37.02, 35.64, PSNR_IDENTICAL_DB]);
        assert_eq!(s.ssim, vec![0.980517, 0.975265, 1.0]);
        let (psnr, ssim) = s.scores();
        let psnr = psnr.expect("psnr frames");
        assert_eq!(psnr.frames, 3);
        assert!((psnr.mean - (37.02 + 35.64 + 100.0) / 3.0).abs() < 1e-9);
        assert_eq!(psnr.min, Some(35.64));
        let ssim = ssim.expect("ssim frames");
        assert_eq!(ssim.min, Some(0.975265));
        assert_eq!(ssim.frames, 3);
        assert_eq!(FrameStats::default().scores(), (None, None));
    }

    #[test]
    fn vmaf_is_looked_up_by_flag_then_beside_the_node_then_on_path() {
        let path = OsString::from("/a:/b/c");
        assert_eq!(
            vmaf_candidates(
                Some(Path::new("/x/v")),
                Some(Path::new("/bin/n")),
                Some(&path)
            ),
            vec![PathBuf::from("/x/v")]
        );
        assert_eq!(
            vmaf_candidates(None, Some(Path::new("/opt/f/ffrtmp-node")), Some(&path)),
            vec![
                PathBuf::from("/opt/f/ffrtmp-vmaf"),
                PathBuf::from("/a/ffrtmp-vmaf"),
                PathBuf::from("/b/c/ffrtmp-vmaf")
            ]
        );
        assert!(vmaf_candidates(None, None, None).is_empty());
    }

    #[test]
    fn vmaf_decoders_write_raw_frames_to_the_pipe() {
        let e = encode();
        let d = decoder_command(
            Path::new("ffmpeg"),
            &e,
            Some(3),
            &Reference::Testsrc { duration_s: 2.0 },
            5,
        )
        .args_lossy();
        assert_eq!(after(&d, "-i"), vec!["file:/proc/self/fd/3"]);
        assert_eq!(after(&d, "-pix_fmt"), vec!["yuv420p"]);
        assert_eq!(after(&d, "-f"), vec!["rawvideo"]);
        assert_eq!(d.last().map(String::as_str), Some("pipe:5"));
        let r = decoder_command(
            Path::new("ffmpeg"),
            &e,
            None,
            &Reference::Testsrc { duration_s: 2.0 },
            6,
        )
        .args_lossy();
        assert_eq!(
            after(&r, "-i"),
            vec!["testsrc2=size=160x90:rate=10:duration=2"]
        );
        let f = decoder_command(
            Path::new("ffmpeg"),
            &e,
            None,
            &Reference::File {
                fd: 4,
                format: None,
            },
            6,
        )
        .args_lossy();
        assert!(after(&f, "-vf")
            .concat()
            .starts_with("scale=160:90,fps=10,"));
        assert_eq!(
            after(&f, "-format_whitelist"),
            vec![INPUT_FORMATS.join(",")]
        );
        let v = vmaf_command(Path::new("/v"), &e, 3, 4).args_lossy();
        assert_eq!(
            v,
            [
                "--width",
                "160",
                "--height",
                "90",
                "--reference",
                "/proc/self/fd/3",
                "--distorted",
                "/proc/self/fd/4"
            ]
        );
    }

    #[test]
    fn filter_listing_names_the_metrics() {
        // As `ffmpeg -hide_banner -filters` (5.1) prints them.
        let listing = "\
Filters:
  T.. = Timeline support
 ... psnr              VV->V      Calculate the PSNR between two video streams.
 TS. ssim              VV->V      Calculate the SSIM between two video streams.
 ... ssim360           VV->V      Calculate the SSIM between two 360 video streams.
";
        assert_eq!(
            filter_metrics(listing),
            vec![QualityMetric::Psnr, QualityMetric::Ssim]
        );
        let no_psnr = listing.replace(" psnr ", " xpsnr ");
        assert_eq!(filter_metrics(&no_psnr), vec![QualityMetric::Ssim]);
        assert!(filter_metrics("").is_empty());
    }

    #[test]
    fn vmaf_output_is_checked() {
        assert_eq!(
            parse_vmaf_output("{\"model\":\"vmaf_v0.6.1\",\"frames\":[97.5,100.0]}\n"),
            Ok(vec![97.5, 100.0])
        );
        for bad in [
            "",
            "{\"model\":\"vmaf_4k\",\"frames\":[1.0]}",
            "{\"model\":\"vmaf_v0.6.1\",\"frames\":[101.0]}",
            "{\"model\":\"vmaf_v0.6.1\",\"frames\":[-1]}",
        ] {
            assert!(parse_vmaf_output(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pooling_takes_the_nearest_rank_fifth_percentile() {
        assert_eq!(pool(&[]), None);
        let one = pool(&[42.0]).expect("one frame");
        assert_eq!(
            (one.mean, one.p5, one.min, one.frames),
            (42.0, Some(42.0), Some(42.0), 1)
        );
        // 1..=100: the 5th percentile is the 5th smallest.
        let frames: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = pool(&frames).expect("frames");
        assert_eq!(s.p5, Some(5.0));
        assert_eq!(s.min, Some(1.0));
        assert!((s.mean - 50.5).abs() < 1e-9);
        // 30 frames: ceil(1.5) = 2nd smallest.
        let frames: Vec<f64> = (0..30).map(f64::from).collect();
        assert_eq!(pool(&frames).and_then(|s| s.p5), Some(1.0));
    }
}
