//! FFmpeg argv building, `-progress` parsing, and what a probe runs and how
//! its output reads (the probes themselves run in `ffrtmp_os::probe`).
//!
//! The argv is built only from a validated [`JobSpec`]: numbers are formatted
//! by us, presets come from allow-lists, paths are canonical and URLs parsed
//! (see [`crate::spec`]). Nothing here goes through a shell.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::encoders::{self, Encoder};
use crate::model::{EncodeParams, Input, JobSpec, Output, Progress};

/// A program and its argv, ready for `std::process::Command` (no shell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FfmpegCommand {
    /// The `ffmpeg` binary to execute.
    pub program: PathBuf,
    /// Arguments after the program name.
    pub args: Vec<OsString>,
    /// Environment for the child (it gets nothing else but `PATH`).
    pub env: Vec<(OsString, OsString)>,
}

impl FfmpegCommand {
    /// The args as lossy UTF-8, for logs and tests.
    pub fn args_lossy(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }
}

/// Audio bitrate used when a file input carries audio.
pub const AUDIO_BITRATE: &str = "128k";

/// Format a duration for the `testsrc2` filter: fixed-point, never an exponent,
/// never zero (zero would not end the source).
fn format_duration(d: f64) -> String {
    let d = if d.is_finite() { d } else { 1.0 };
    let s = format!("{:.6}", d.max(0.000_001));
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// `-c:v` and the encoder's own options ([`crate::encoders`]), then the GOP.
fn video_args(e: &EncodeParams, encoder: &Encoder, output: &Output, args: &mut Vec<OsString>) {
    for a in encoder.video_args(e, output_format(output)) {
        args.push(a.into());
    }
    args.push("-g".into());
    args.push((u64::from(e.fps) * 2).to_string().into());
}

/// The FFmpeg muxer for an output, if it is a file or a stream.
fn output_format(output: &Output) -> Option<&'static str> {
    match output {
        Output::Null => Some("null"),
        Output::Rtmp { .. } => Some("flv"),
        Output::File { path } => path
            .extension()
            .and_then(|e| e.to_str())
            .and_then(crate::spec::container_for_extension)
            .map(|(fmt, _)| fmt),
    }
}

/// The `lavfi` source of a `testsrc` job: `testsrc2` at the output's size
/// and rate (the quality pass regenerates the same frames as its reference).
pub fn testsrc_source(e: &EncodeParams, duration_s: f64) -> String {
    format!(
        "testsrc2=size={}x{}:rate={}:duration={}",
        e.width,
        e.height,
        e.fps,
        format_duration(duration_s)
    )
}

/// The files of a job as the worker opened them (`crate::confine`): FFmpeg
/// gets their descriptors at these numbers, never the paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFiles {
    /// The input's descriptor number in FFmpeg, and the demuxer the probe
    /// found for it (`ffrtmp_os::probe::probe_input`; put on the input's
    /// `-format_whitelist`; `None`: the whole [`INPUT_FORMATS`]).
    pub input: Option<(i32, Option<String>)>,
    /// The output's (temporary file's) descriptor number in FFmpeg.
    pub output_fd: Option<i32>,
}

/// The URL of an inherited descriptor for FFmpeg's `file` protocol: it
/// reopens the very file the worker resolved, seekable (which `pipe:N` is
/// not, and MP4's `+faststart` needs).
pub fn fd_url(fd: i32) -> OsString {
    format!("file:/proc/self/fd/{fd}").into()
}

/// The protocols a file job's input may use: only `file` (no `http`, no
/// `concat`, no `subfile` tricks).
pub const FILE_PROTOCOLS: &str = "file";

/// Input container formats a file job may use: plain containers that carry
/// their media inside and never open another file or URL (FFmpeg's `mov`
/// demuxer follows external data references only with `-enable_drefs 1`,
/// off by default). Playlists (HLS, DASH), `concat`/`ffconcat`, image
/// sequences and subtitle formats are not on it. FFmpeg demuxer names, as
/// `-format_whitelist` matches them.
pub const INPUT_FORMATS: &[&str] = &[
    "mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "mpegts", "flv", "avi", "mpeg",
    "ogg", "asf", "wav",
];

/// Full argv for one job. Always starts with
/// `-hide_banner -nostdin -nostats -loglevel warning -progress pipe:1`.
/// Paths go into the argv as they are; the worker uses
/// [`build_command_with`] and passes descriptors instead.
pub fn build_command(ffmpeg: &Path, spec: &JobSpec) -> FfmpegCommand {
    build_command_with(ffmpeg, spec, &JobFiles::default())
}

/// [`build_command`], with the file input and output named by the
/// descriptors in `files` (`file:/proc/self/fd/N`) where given, and a file
/// input limited to the `file` protocol and to its probed demuxer.
pub fn build_command_with(ffmpeg: &Path, spec: &JobSpec, files: &JobFiles) -> FfmpegCommand {
    let e = &spec.encode;
    let mut args: Vec<OsString> = [
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "warning",
        "-progress",
        "pipe:1",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let encoder = encoders::chosen(e);
    let upload = encoder.upload_filter(e.pix_fmt.as_deref().unwrap_or(encoders::DEFAULT_PIX_FMT));
    args.extend(encoder.device_args().iter().map(OsString::from));
    let live = matches!(spec.output, Output::Rtmp { .. });
    if matches!(spec.output, Output::File { .. }) {
        args.push("-y".into());
    }
    if live {
        // Pace the input in real time: a live stream must not run ahead.
        args.push("-re".into());
    }
    match &spec.input {
        Input::Testsrc { duration_s } => {
            args.push("-f".into());
            args.push("lavfi".into());
            args.push("-i".into());
            args.push(testsrc_source(e, *duration_s).into());
            args.push("-an".into());
            if let Some(upload) = &upload {
                args.push("-vf".into());
                args.push(upload.into());
            }
        }
        Input::File { path } => {
            args.push("-protocol_whitelist".into());
            args.push(FILE_PROTOCOLS.into());
            match &files.input {
                Some((fd, format)) => {
                    args.push("-format_whitelist".into());
                    args.push(match format {
                        Some(f) => f.into(),
                        None => INPUT_FORMATS.join(",").into(),
                    });
                    args.push("-i".into());
                    args.push(fd_url(*fd));
                }
                None => {
                    args.push("-format_whitelist".into());
                    args.push(INPUT_FORMATS.join(",").into());
                    args.push("-i".into());
                    args.push(path.as_os_str().to_owned());
                }
            }
            for a in ["-map", "0:v:0", "-map", "0:a:0?"] {
                args.push(a.into());
            }
            args.push("-vf".into());
            let scale = format!("scale={}:{}", e.width, e.height);
            args.push(match &upload {
                Some(upload) => format!("{scale},{upload}").into(),
                None => scale.into(),
            });
            args.push("-r".into());
            args.push(e.fps.to_string().into());
        }
    }
    video_args(e, &encoder, &spec.output, &mut args);
    if matches!(spec.input, Input::File { .. }) {
        let audio = if output_format(&spec.output) == Some("webm") {
            "libopus"
        } else {
            "aac"
        };
        for a in ["-c:a", audio, "-b:a", AUDIO_BITRATE] {
            args.push(a.into());
        }
    }
    match &spec.output {
        Output::Null => {
            for a in ["-f", "null", "-"] {
                args.push(a.into());
            }
        }
        Output::File { path } => {
            // Validated by spec; fall back to letting FFmpeg guess if not.
            if let Some(fmt) = output_format(&spec.output) {
                args.push("-f".into());
                args.push(fmt.into());
                if fmt == "mp4" {
                    args.push("-movflags".into());
                    args.push("+faststart".into());
                }
            }
            match files.output_fd {
                Some(fd) => args.push(fd_url(fd)),
                None => args.push(path.as_os_str().to_owned()),
            }
        }
        Output::Rtmp { url } => {
            args.push("-f".into());
            args.push("flv".into());
            args.push(url.into());
        }
    }
    // SVT-AV1 writes `Svt[info]` lines to stderr whatever -loglevel says;
    // level 1 keeps its errors only, so the stderr tail stays useful.
    let mut env: Vec<(OsString, OsString)> = vec![("LC_ALL".into(), "C".into())];
    if encoder.name == "libsvtav1" {
        env.push(("SVT_LOG".into(), "1".into()));
    }
    FfmpegCommand {
        program: ffmpeg.to_path_buf(),
        args,
        env,
    }
}

// ---------------------------------------------------------------------------
// Progress.

/// One progress report, emitted at each `progress=continue|end` line.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressUpdate {
    /// The state after this block.
    pub progress: Progress,
    /// `progress=end`: FFmpeg has finished writing.
    pub end: bool,
}

/// Incremental parser of FFmpeg's `-progress` key=value output.
///
/// Values that are `N/A`, negative or garbage never panic: counters keep their
/// last good value, optional fields become `None`.
#[derive(Debug, Clone)]
pub struct ProgressParser {
    expected_duration_s: Option<f64>,
    current: Progress,
    // Candidate out_time sources seen in the current block, in seconds.
    block_us: Option<f64>,
    block_ms: Option<f64>,
    block_hms: Option<f64>,
}

/// Plain decimal digits only (no sign), as FFmpeg writes counters.
fn parse_u64(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// A finite, non-negative number, or `None`.
pub fn parse_nonneg_f64(v: &str) -> Option<f64> {
    v.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0)
}

/// `HH:MM:SS.ffffff` (hours may exceed 24); `None` for negatives or garbage.
fn parse_hms(v: &str) -> Option<f64> {
    let mut parts = v.split(':');
    let h: u64 = parts.next()?.parse().ok()?;
    let m: u64 = parts.next()?.parse().ok()?;
    let s = parse_nonneg_f64(parts.next()?)?;
    if parts.next().is_some() || m >= 60 || s >= 60.0 || !parts_are_plain(v) {
        return None;
    }
    Some(h as f64 * 3600.0 + m as f64 * 60.0 + s)
}

/// Reject signs and exponents that `parse` would accept.
fn parts_are_plain(v: &str) -> bool {
    v.bytes()
        .all(|b| b.is_ascii_digit() || b == b':' || b == b'.')
}

impl ProgressParser {
    /// `expected_duration_s` is the output length used for `percent`.
    pub fn new(expected_duration_s: Option<f64>) -> ProgressParser {
        ProgressParser {
            expected_duration_s: expected_duration_s.filter(|d| d.is_finite() && *d > 0.0),
            current: Progress::default(),
            block_us: None,
            block_ms: None,
            block_hms: None,
        }
    }

    /// The latest state, as of the last complete block.
    pub fn current(&self) -> &Progress {
        &self.current
    }

    /// Feed one line of FFmpeg's `-progress` output; returns an update at each
    /// `progress=continue|end` line.
    pub fn push_line(&mut self, line: &str) -> Option<ProgressUpdate> {
        let (key, value) = line.split_once('=')?;
        let key = key.trim();
        let value = value.trim();
        match key {
            "frame" => {
                if let Some(f) = parse_u64(value) {
                    self.current.frame = f;
                }
            }
            "fps" => {
                if let Some(f) = parse_nonneg_f64(value) {
                    self.current.fps = f;
                }
            }
            "bitrate" => {
                self.current.bitrate_kbps = value
                    .strip_suffix("kbits/s")
                    .and_then(|v| parse_nonneg_f64(v.trim()));
            }
            "total_size" => {
                self.current.total_size_bytes = parse_u64(value);
            }
            "out_time_us" => {
                self.block_us = parse_u64(value).map(|us| us as f64 / 1e6);
            }
            // FFmpeg 5.1 writes microseconds here despite the name.
            "out_time_ms" => {
                self.block_ms = parse_u64(value).map(|us| us as f64 / 1e6);
            }
            "out_time" => self.block_hms = parse_hms(value),
            "speed" => {
                self.current.speed = value
                    .strip_suffix('x')
                    .and_then(|v| parse_nonneg_f64(v.trim()));
            }
            "progress" => {
                let end = match value {
                    "end" => true,
                    "continue" => false,
                    _ => return None,
                };
                return Some(self.finish_block(end));
            }
            _ => {}
        }
        None
    }

    fn finish_block(&mut self, end: bool) -> ProgressUpdate {
        if let Some(t) = self.block_us.or(self.block_ms).or(self.block_hms) {
            if t.is_finite() {
                self.current.out_time_s = t;
            }
        }
        self.block_us = None;
        self.block_ms = None;
        self.block_hms = None;
        self.current.percent = self
            .expected_duration_s
            .map(|d| (self.current.out_time_s / d * 100.0).clamp(0.0, 100.0))
            .filter(|p| p.is_finite());
        ProgressUpdate {
            progress: self.current.clone(),
            end,
        }
    }
}

/// Whether ffprobe's `format_name` (a comma list) is one of [`INPUT_FORMATS`].
pub fn format_allowed(format_name: &str) -> bool {
    !format_name.is_empty()
        && format_name
            .split(',')
            .all(|n| INPUT_FORMATS.contains(&n.trim()))
}

/// The demuxer FFmpeg names in `[<name> @ 0x...] Format not on whitelist`.
pub fn refused_format(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|l| {
        let rest = l.strip_prefix('[')?;
        let (name, tail) = rest.split_once(" @ ")?;
        (tail.contains("not on whitelist") && is_encoder_name(name)).then(|| name.to_string())
    })
}

/// Whether `name` can be an FFmpeg encoder or demuxer name (ASCII letters,
/// digits, `_` and `-`, at most 64 bytes, no leading `-`).
pub fn is_encoder_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An encoder that failed its test encode, and why.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    bincode::Encode,
    bincode::Decode,
    utoipa::ToSchema,
)]
pub struct UnavailableEncoder {
    /// FFmpeg's name for it (`h264_nvenc`).
    pub encoder: String,
    /// The first useful line of FFmpeg's stderr (`Cannot load
    /// libcuda.so.1`), or why FFmpeg could not run or finish.
    pub reason: String,
}

/// What `ffrtmp_os::probe::probe_encoders` found: the encoders that work, and those that
/// did not, with the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncoderProbe {
    /// Encoders that completed the test encode, in the candidates' order.
    pub available: Vec<String>,
    /// Encoders that did not, in the candidates' order.
    pub unavailable: Vec<UnavailableEncoder>,
}

/// The first line of FFmpeg's stderr that says something: its
/// `[h264_nvenc @ 0x55d…] ` context prefix removed (the address changes
/// every run), at most 300 characters.
pub fn first_useful_line(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .map(|l| {
            let l = l.trim();
            match l.strip_prefix('[').and_then(|r| r.split_once("] ")) {
                Some((ctx, rest)) if ctx.contains(" @ ") => rest.trim(),
                _ => l,
            }
        })
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(300).collect())
}

/// The argv of an encoder's test encode: a few frames of testsrc2 through
/// it, with its family's device setup and upload filter, to `-f null`.
pub fn probe_args(encoder: &str) -> Vec<String> {
    let mut a: Vec<String> = ["-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"]
        .map(String::from)
        .to_vec();
    let known = encoders::lookup(encoder);
    if let Some(k) = known {
        a.extend(k.device_args().iter().map(|s| s.to_string()));
    }
    // 128x128: SVT-AV1 needs at least 64x64, some hardware encoders more.
    a.extend(
        [
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=128x128:rate=10",
            "-frames:v",
            "3",
            "-an",
        ]
        .map(String::from),
    );
    if let Some(upload) = known.and_then(|k| k.upload_filter(encoders::DEFAULT_PIX_FMT)) {
        a.extend(["-vf".to_string(), upload]);
    }
    a.extend(["-c:v", encoder, "-f", "null", "-"].map(String::from));
    a
}

#[cfg(test)]
mod tests;
