//! FFmpeg argv building, `-progress` parsing and probing (durations, encoders).
//!
//! The argv is built only from a validated [`JobSpec`]: numbers are formatted
//! by us, presets come from allow-lists, paths are canonical and URLs parsed
//! (see [`crate::spec`]). Nothing here goes through a shell.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

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
    /// found for it ([`probe_input`]; put on the input's
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

fn parse_nonneg_f64(v: &str) -> Option<f64> {
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

// ---------------------------------------------------------------------------
// Probing.

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
        format: Option<String>,
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

/// Whether ffprobe's `format_name` (a comma list) is one of [`INPUT_FORMATS`].
pub fn format_allowed(format_name: &str) -> bool {
    !format_name.is_empty()
        && format_name
            .split(',')
            .all(|n| INPUT_FORMATS.contains(&n.trim()))
}

/// The demuxer FFmpeg names in `[<name> @ 0x...] Format not on whitelist`.
fn refused_format(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|l| {
        let rest = l.strip_prefix('[')?;
        let (name, tail) = rest.split_once(" @ ")?;
        (tail.contains("not on whitelist") && is_encoder_name(name)).then(|| name.to_string())
    })
}

fn is_encoder_name(name: &str) -> bool {
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

/// What [`probe_encoders`] found: the encoders that work, and those that
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Codec, EncodeParams, Priority, ResourceLimits};
    use crate::spec::{parse_job_request, MediaRoots};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn spec(codec: Codec, input: Input, output: Output) -> JobSpec {
        JobSpec {
            scenario: None,
            encode: EncodeParams::new(
                160,
                90,
                10,
                codec,
                200,
                crate::spec::default_preset(codec).to_string(),
            ),
            input,
            output,
            priority: Priority::Medium,
            resource_limits: ResourceLimits::default(),
            max_retries: 3,
            overwrite: false,
            quality: None,
            labels: Default::default(),
            experiment: None,
        }
    }

    fn testsrc() -> Input {
        Input::Testsrc { duration_s: 0.5 }
    }

    fn args(cmd: &FfmpegCommand) -> Vec<String> {
        cmd.args_lossy()
    }

    /// The value following `flag` (first occurrence).
    fn after(a: &[String], flag: &str) -> Option<String> {
        a.iter()
            .position(|x| x == flag)
            .and_then(|i| a.get(i + 1))
            .cloned()
    }

    const PREFIX: [&str; 7] = [
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "warning",
        "-progress",
        "pipe:1",
    ];

    // --- argv ---------------------------------------------------------------

    #[test]
    fn testsrc_to_null_h264_argv() {
        let cmd = build_command(
            Path::new("/usr/bin/ffmpeg"),
            &spec(Codec::H264, testsrc(), Output::Null),
        );
        assert_eq!(cmd.program, PathBuf::from("/usr/bin/ffmpeg"));
        let want = [
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "warning",
            "-progress",
            "pipe:1",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x90:rate=10:duration=0.5",
            "-an",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-b:v",
            "200k",
            "-maxrate",
            "200k",
            "-bufsize",
            "400k",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "20",
            "-f",
            "null",
            "-",
        ];
        assert_eq!(args(&cmd), want);
    }

    #[test]
    fn every_command_starts_with_the_fixed_prefix() {
        for codec in Codec::ALL {
            for output in [
                Output::Null,
                Output::File {
                    path: "/m/o.mkv".into(),
                },
                Output::Rtmp {
                    url: "rtmp://h/a/k".into(),
                },
            ] {
                for input in [
                    testsrc(),
                    Input::File {
                        path: "/m/in.mp4".into(),
                    },
                ] {
                    let a = args(&build_command(
                        Path::new("ffmpeg"),
                        &spec(codec, input, output.clone()),
                    ));
                    assert_eq!(&a[..7], PREFIX);
                    assert_eq!(after(&a, "-c:v").as_deref(), Some(codec.encoder()));
                    assert_eq!(after(&a, "-pix_fmt").as_deref(), Some("yuv420p"));
                    assert_eq!(after(&a, "-g").as_deref(), Some("20"));
                    assert_eq!(after(&a, "-b:v").as_deref(), Some("200k"));
                }
            }
        }
    }

    #[test]
    fn encoder_specific_arguments() {
        let a = args(&build_command(
            Path::new("ffmpeg"),
            &spec(Codec::H265, testsrc(), Output::Null),
        ));
        assert_eq!(
            after(&a, "-x265-params").as_deref(),
            Some("log-level=error")
        );
        assert_eq!(after(&a, "-preset").as_deref(), Some("veryfast"));
        assert_eq!(after(&a, "-maxrate").as_deref(), Some("200k"));
        assert_eq!(after(&a, "-tag:v"), None);

        for (preset, deadline, cpu) in [
            ("realtime", "realtime", "8"),
            ("good", "good", "4"),
            ("best", "best", "0"),
        ] {
            let mut s = spec(Codec::Vp9, testsrc(), Output::Null);
            s.encode.preset = preset.into();
            let a = args(&build_command(Path::new("ffmpeg"), &s));
            assert_eq!(after(&a, "-deadline").as_deref(), Some(deadline));
            assert_eq!(after(&a, "-cpu-used").as_deref(), Some(cpu));
            assert_eq!(after(&a, "-row-mt").as_deref(), Some("1"));
            assert_eq!(after(&a, "-preset"), None);
        }

        let mut s = spec(Codec::Av1, testsrc(), Output::Null);
        s.encode.preset = "7".into();
        let a = args(&build_command(Path::new("ffmpeg"), &s));
        assert_eq!(after(&a, "-preset").as_deref(), Some("7"));
        assert_eq!(after(&a, "-maxrate"), None);
    }

    #[test]
    fn file_input_maps_scales_and_encodes_audio() {
        let s = spec(
            Codec::H264,
            Input::File {
                path: "/m/in put.mov".into(),
            },
            Output::File {
                path: "/m/out.mp4".into(),
            },
        );
        let a = args(&build_command(Path::new("ffmpeg"), &s));
        assert_eq!(after(&a, "-i").as_deref(), Some("/m/in put.mov"));
        let maps: Vec<_> = a
            .windows(2)
            .filter(|w| w[0] == "-map")
            .map(|w| w[1].clone())
            .collect();
        assert_eq!(maps, ["0:v:0", "0:a:0?"]);
        assert_eq!(after(&a, "-vf").as_deref(), Some("scale=160:90"));
        assert_eq!(after(&a, "-r").as_deref(), Some("10"));
        assert_eq!(after(&a, "-c:a").as_deref(), Some("aac"));
        assert_eq!(after(&a, "-b:a").as_deref(), Some("128k"));
        assert!(!a.contains(&"-an".to_string()));
        assert!(!a.contains(&"lavfi".to_string()));
        assert!(a.contains(&"-y".to_string()));
        assert_eq!(after(&a, "-movflags").as_deref(), Some("+faststart"));
        assert_eq!(a.last().map(String::as_str), Some("/m/out.mp4"));
        assert_eq!(
            a[a.len() - 4..a.len() - 1],
            ["mp4", "-movflags", "+faststart"]
        );

        let mut s = s;
        s.encode.codec = Codec::Vp9;
        s.output = Output::File {
            path: "/m/out.webm".into(),
        };
        let a = args(&build_command(Path::new("ffmpeg"), &s));
        assert_eq!(after(&a, "-c:a").as_deref(), Some("libopus"));
        assert_eq!(a[a.len() - 3..], ["-f", "webm", "/m/out.webm"]);
        assert_eq!(after(&a, "-movflags"), None);
    }

    #[test]
    fn container_follows_the_extension() {
        for (ext, fmt) in [
            ("mp4", "mp4"),
            ("mkv", "matroska"),
            ("MKV", "matroska"),
            ("mov", "mov"),
            ("ts", "mpegts"),
            ("flv", "flv"),
        ] {
            let path = PathBuf::from(format!("/m/o.{ext}"));
            let s = spec(Codec::H265, testsrc(), Output::File { path: path.clone() });
            let a = args(&build_command(Path::new("ffmpeg"), &s));
            assert_eq!(after(&a, "-f").as_deref(), Some("lavfi"));
            let last_f = a.iter().rposition(|x| x == "-f").map(|i| a[i + 1].clone());
            assert_eq!(last_f.as_deref(), Some(fmt), "{ext}");
            assert_eq!(a.last().map(PathBuf::from), Some(path));
            assert_eq!(a.iter().filter(|x| *x == "-y").count(), 1);
            // hvc1 tagging only where Apple players look for it.
            let tagged = after(&a, "-tag:v").is_some();
            assert_eq!(tagged, matches!(fmt, "mp4" | "mov"), "{ext}");
        }
    }

    #[test]
    fn rtmp_output_is_paced_flv() {
        for input in [
            testsrc(),
            Input::File {
                path: "/m/in.mp4".into(),
            },
        ] {
            let s = spec(
                Codec::H264,
                input,
                Output::Rtmp {
                    url: "rtmp://live.example/app/key".into(),
                },
            );
            let a = args(&build_command(Path::new("ffmpeg"), &s));
            let re = a.iter().position(|x| x == "-re").expect("-re present");
            let i = a.iter().position(|x| x == "-i").expect("-i present");
            assert!(re < i, "-re must come before the input: {a:?}");
            assert_eq!(
                a[a.len() - 3..],
                ["-f", "flv", "rtmp://live.example/app/key"]
            );
            assert!(!a.contains(&"-y".to_string()));
        }
        let a = args(&build_command(
            Path::new("ffmpeg"),
            &spec(Codec::H264, testsrc(), Output::Null),
        ));
        assert!(!a.contains(&"-re".to_string()));
    }

    #[test]
    fn durations_are_plain_decimals() {
        for (d, s) in [
            (10.0, "10"),
            (0.5, "0.5"),
            (86_400.0, "86400"),
            (1e-9, "0.000001"),
            (1.234_567_89, "1.234568"),
            (f64::NAN, "1"),
        ] {
            assert_eq!(format_duration(d), s, "{d}");
        }
    }

    proptest! {
        #[test]
        fn argv_from_any_valid_request_uses_only_validated_tokens(
            w in 8u32..=3840, h in 8u32..=2160, fps in 1u32..=240,
            codec in prop::sample::select(Codec::ALL.to_vec()),
            d in 0.000_001f64..=86_400.0,
            kbps in 1u32..=200_000,
        ) {
            let body = json!({
                "input": {"type": "testsrc", "duration_s": d},
                "output": {"type": "null"},
                "width": (w * 2).max(64), "height": (h * 2).max(64), "fps": fps,
                "codec": codec.as_str(), "bitrate": kbps,
            });
            let roots = MediaRoots::new(&[]).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let s = parse_job_request(body.to_string().as_bytes(), &roots)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let a = args(&build_command(Path::new("ffmpeg"), &s));
            let src = after(&a, "-i").unwrap_or_default();
            let rest = src.strip_prefix("testsrc2=size=").unwrap_or("");
            let ok = rest.split([':', 'x', '=']).all(|t| {
                t.is_empty() || t == "rate" || t == "duration"
                    || t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            });
            prop_assert!(ok && !rest.is_empty(), "{}", src);
            prop_assert_eq!(after(&a, "-b:v"), Some(format!("{kbps}k")));
        }
    }

    // --- progress -------------------------------------------------------------

    fn feed(p: &mut ProgressParser, text: &str) -> Vec<ProgressUpdate> {
        text.lines().filter_map(|l| p.push_line(l)).collect()
    }

    /// Two blocks as FFmpeg 5.1 wrote them for `-f null`.
    const NULL_OUTPUT: &str = "frame=1\nfps=0.00\nstream_0_0_q=0.0\nbitrate=N/A\ntotal_size=N/A\n\
out_time_us=0\nout_time_ms=0\nout_time=00:00:00.000000\ndup_frames=0\ndrop_frames=0\nspeed=N/A\nprogress=continue\n\
frame=15\nfps=0.00\nstream_0_0_q=-1.0\nbitrate=N/A\ntotal_size=N/A\nout_time_us=1300000\n\
out_time_ms=1300000\nout_time=00:00:01.300000\ndup_frames=0\ndrop_frames=0\nspeed=  68x\nprogress=end\n";

    #[test]
    fn parses_ffmpeg_5_1_null_output() {
        let mut p = ProgressParser::new(Some(2.6));
        let ups = feed(&mut p, NULL_OUTPUT);
        assert_eq!(ups.len(), 2);
        assert!(!ups[0].end);
        assert_eq!(ups[0].progress.frame, 1);
        assert_eq!(ups[0].progress.speed, None);
        assert_eq!(ups[0].progress.percent, Some(0.0));
        let last = &ups[1];
        assert!(last.end);
        assert_eq!(
            last.progress,
            Progress {
                frame: 15,
                fps: 0.0,
                speed: Some(68.0),
                out_time_s: 1.3,
                percent: Some(50.0),
                bitrate_kbps: None,
                total_size_bytes: None,
            }
        );
        assert_eq!(p.current(), &last.progress);
    }

    #[test]
    fn file_output_values() {
        let mut p = ProgressParser::new(None);
        let ups = feed(
            &mut p,
            "frame=240\nfps=59.94\nbitrate= 812.3kbits/s\ntotal_size=1048576\nout_time_us=4000000\nspeed=1.23x\nprogress=continue\n",
        );
        assert_eq!(ups.len(), 1);
        let g = &ups[0].progress;
        assert_eq!(g.frame, 240);
        assert_eq!(g.fps, 59.94);
        assert_eq!(g.bitrate_kbps, Some(812.3));
        assert_eq!(g.total_size_bytes, Some(1_048_576));
        assert_eq!(g.out_time_s, 4.0);
        assert_eq!(g.speed, Some(1.23));
        assert_eq!(g.percent, None);
    }

    #[test]
    fn out_time_sources_in_order_of_preference() {
        let cases = [
            (
                "out_time_us=2000000\nout_time_ms=9000000\nout_time=00:00:07.000000\n",
                2.0,
            ),
            // out_time_ms holds microseconds on 5.1.
            ("out_time_ms=1500000\nout_time=00:00:07.000000\n", 1.5),
            ("out_time_us=N/A\nout_time_ms=2500000\n", 2.5),
            ("out_time=01:02:03.500000\n", 3723.5),
            (
                "out_time_us=N/A\nout_time_ms=N/A\nout_time=00:00:04.25\n",
                4.25,
            ),
        ];
        for (block, want) in cases {
            let mut p = ProgressParser::new(None);
            let ups = feed(&mut p, &format!("{block}progress=continue\n"));
            assert_eq!(ups.len(), 1);
            assert_eq!(ups[0].progress.out_time_s, want, "{block}");
        }
    }

    #[test]
    fn negative_and_garbage_values_keep_the_last_good_state() {
        let mut p = ProgressParser::new(Some(10.0));
        feed(
            &mut p,
            "frame=50\nfps=25.0\nout_time_us=2000000\nbitrate=100.0kbits/s\ntotal_size=10\nspeed=1x\nprogress=continue\n",
        );
        let ups = feed(
            &mut p,
            "frame=-3\nfps=nan\nout_time_us=-9223372036854775807\nout_time_ms=-9223372036854775807\n\
out_time=-577014:32:22.775808\nbitrate=garbage\ntotal_size=-1\nspeed=-2x\nnonsense\n=\nkey_only=\nnew_key=7\n\
progress=continue\n",
        );
        let g = &ups[0].progress;
        assert_eq!(g.frame, 50);
        assert_eq!(g.fps, 25.0);
        assert_eq!(g.out_time_s, 2.0);
        assert_eq!(g.percent, Some(20.0));
        // Optional fields say "unknown" rather than repeat a stale value.
        assert_eq!(g.bitrate_kbps, None);
        assert_eq!(g.total_size_bytes, None);
        assert_eq!(g.speed, None);
        for bad in [
            "fps=inf",
            "fps=-1",
            "fps=1e400",
            "frame=1.5",
            "frame=+7",
            "out_time=00:61:00.0",
            "out_time=1:2",
            "out_time=+1:00:00",
        ] {
            let mut q = p.clone();
            let u = q
                .push_line(bad)
                .or_else(|| q.push_line("progress=continue"));
            let g = u.map(|u| u.progress);
            assert_eq!(
                g.as_ref().map(|g| (g.frame, g.fps, g.out_time_s)),
                Some((50, 25.0, 2.0)),
                "{bad}"
            );
        }
    }

    #[test]
    fn progress_markers() {
        let mut p = ProgressParser::new(None);
        assert_eq!(p.push_line("progress=paused"), None);
        assert_eq!(p.push_line("progress"), None);
        assert_eq!(p.push_line(""), None);
        assert_eq!(p.push_line("progress=end\r").map(|u| u.end), Some(true));
        assert_eq!(p.push_line("progress=continue").map(|u| u.end), Some(false));
        assert_eq!(p.push_line(" progress = end ").map(|u| u.end), Some(true));
    }

    #[test]
    fn percent_is_clamped_and_needs_a_known_duration() {
        for (expected, out_us, want) in [
            (Some(10.0), 5_000_000u64, Some(50.0)),
            (Some(10.0), 12_000_000, Some(100.0)),
            (Some(10.0), 0, Some(0.0)),
            (None, 5_000_000, None),
            (Some(0.0), 5_000_000, None),
            (Some(-1.0), 5_000_000, None),
            (Some(f64::NAN), 5_000_000, None),
            (Some(f64::INFINITY), 5_000_000, None),
        ] {
            let mut p = ProgressParser::new(expected);
            let ups = feed(&mut p, &format!("out_time_us={out_us}\nprogress=continue"));
            assert_eq!(ups[0].progress.percent, want, "{expected:?} {out_us}");
        }
    }

    proptest! {
        #[test]
        fn any_input_never_panics_and_stays_sane(
            lines in prop::collection::vec(
                prop_oneof![
                    "[ -~]{0,40}",
                    (prop::sample::select(vec![
                        "frame", "fps", "bitrate", "total_size", "out_time_us", "out_time_ms",
                        "out_time", "speed", "progress", "dup_frames",
                    ]), "[-0-9.:eEnaNAxkbits/ ]{0,24}")
                        .prop_map(|(k, v)| format!("{k}={v}")),
                    Just("progress=continue".to_string()),
                    Just("progress=end".to_string()),
                ],
                0..64,
            ),
            expected in prop::option::of(any::<f64>()),
        ) {
            let mut p = ProgressParser::new(expected);
            for l in &lines {
                if let Some(u) = p.push_line(l) {
                    let g = &u.progress;
                    prop_assert!(g.fps.is_finite() && g.fps >= 0.0);
                    prop_assert!(g.out_time_s.is_finite() && g.out_time_s >= 0.0);
                    if let Some(pc) = g.percent { prop_assert!((0.0..=100.0).contains(&pc)); }
                    if let Some(s) = g.speed { prop_assert!(s.is_finite() && s >= 0.0); }
                    if let Some(b) = g.bitrate_kbps { prop_assert!(b.is_finite() && b >= 0.0); }
                }
            }
        }
    }

    // --- real FFmpeg runs -------------------------------------------------------

    fn ffmpeg() -> PathBuf {
        std::env::var_os("FFMPEG").map_or_else(|| PathBuf::from("ffmpeg"), PathBuf::from)
    }

    fn ffprobe() -> PathBuf {
        std::env::var_os("FFPROBE").map_or_else(|| PathBuf::from("ffprobe"), PathBuf::from)
    }

    struct Run {
        status: std::process::ExitStatus,
        stdout: String,
        stderr: String,
    }

    /// Runs a command; a hang guard (not an assertion) kills it after two minutes.
    async fn run(program: &Path, args: &[OsString]) -> Run {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .expect("ffmpeg hung")
            .expect("ffmpeg runs");
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `codec_name,codec_type[,width,height]` per stream.
    async fn streams(path: &Path) -> Vec<String> {
        let args: Vec<OsString> = [
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,width,height",
            "-of",
            "csv=p=0",
            "-i",
        ]
        .iter()
        .map(OsString::from)
        .chain([path.as_os_str().to_owned()])
        .collect();
        let r = run(&ffprobe(), &args).await;
        assert!(r.status.success(), "ffprobe: {}", r.stderr);
        // MPEG-TS lists its streams again under their program: keep each once.
        let mut out: Vec<String> = Vec::new();
        for l in r.stdout.lines().map(|l| l.trim_end_matches(',')) {
            if !l.is_empty() && !out.iter().any(|o| o == l) {
                out.push(l.to_string());
            }
        }
        out
    }

    fn request(codec: &str, input: Value, output: Value) -> Value {
        json!({
            "scenario": "1080p30-h264",
            "width": 160, "height": 90, "fps": 10, "codec": codec,
            "input": input, "output": output,
        })
    }

    fn parse_ok(v: &Value, roots: &MediaRoots) -> JobSpec {
        parse_job_request(v.to_string().as_bytes(), roots).expect("valid request")
    }

    fn no_roots() -> MediaRoots {
        MediaRoots::new(&[]).expect("roots")
    }

    #[tokio::test]
    async fn every_encoder_runs_to_null_and_reports_progress() {
        for codec in Codec::ALL {
            let v = request(
                codec.as_str(),
                json!({"type": "testsrc", "duration_s": 0.5}),
                json!({"type": "null"}),
            );
            let s = parse_ok(&v, &no_roots());
            let cmd = build_command(&ffmpeg(), &s);
            let r = run(&cmd.program, &cmd.args).await;
            assert!(r.status.success(), "{codec:?}: {}", r.stderr);
            let mut p = ProgressParser::new(s.expected_duration_s());
            let ups = feed(&mut p, &r.stdout);
            let last = ups.last().expect("progress blocks");
            assert!(last.end, "{codec:?}: last block is progress=end");
            assert!(ups[..ups.len() - 1].iter().all(|u| !u.end));
            assert_eq!(last.progress.frame, 5, "{codec:?}");
            assert!(
                last.progress.out_time_s > 0.0,
                "{codec:?}: {:?}",
                last.progress
            );
            assert!(last.progress.percent.is_some_and(|p| p > 0.0));
            // -f null has no size or bitrate.
            assert_eq!(last.progress.total_size_bytes, None);
        }
    }

    /// Constant quality and 10-bit through every software encoder, for
    /// real: the file holds the pixel format asked for, and a lower CRF
    /// (better quality) makes a bigger file than a higher one.
    #[tokio::test]
    async fn crf_and_ten_bit_run_through_every_software_encoder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roots = MediaRoots::new(&[dir.path().to_path_buf()]).expect("roots");
        for codec in Codec::ALL {
            let mut sizes = Vec::new();
            for crf in [10, 50] {
                let name = format!("{}-{crf}.mkv", codec.as_str());
                let mut v = request(
                    codec.as_str(),
                    json!({"type": "testsrc", "duration_s": 1}),
                    json!({"type": "file", "path": name}),
                );
                v["crf"] = json!(crf);
                v["pix_fmt"] = json!("yuv420p10le");
                let s = parse_ok(&v, &roots);
                let cmd = build_command(&ffmpeg(), &s);
                assert_eq!(after(&args(&cmd), "-crf"), Some(crf.to_string()));
                let r = run(&cmd.program, &cmd.args).await;
                assert!(r.status.success(), "{codec:?} crf {crf}: {}", r.stderr);
                let out = dir.path().join(&name);
                let probe: Vec<OsString> = [
                    "-v",
                    "error",
                    "-select_streams",
                    "v:0",
                    "-show_entries",
                    "stream=pix_fmt",
                    "-of",
                    "csv=p=0",
                ]
                .iter()
                .map(OsString::from)
                .chain([out.as_os_str().to_owned()])
                .collect();
                let p = run(&ffprobe(), &probe).await;
                assert_eq!(p.stdout.trim(), "yuv420p10le", "{codec:?}: {}", p.stderr);
                sizes.push(std::fs::metadata(&out).expect("output").len());
            }
            assert!(
                sizes[0] > sizes[1],
                "{codec:?}: crf 10 vs 50 sizes {sizes:?}"
            );
        }
    }

    #[tokio::test]
    async fn every_allowed_container_produces_a_playable_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roots = MediaRoots::new(&[dir.path().to_path_buf()]).expect("roots");
        let combos = [
            ("h264", "mp4", "h264"),
            ("h264", "mkv", "h264"),
            ("h264", "mov", "h264"),
            ("h264", "ts", "h264"),
            ("h264", "flv", "h264"),
            ("h265", "mp4", "hevc"),
            ("h265", "mkv", "hevc"),
            ("h265", "mov", "hevc"),
            ("h265", "ts", "hevc"),
            ("vp9", "mp4", "vp9"),
            ("vp9", "mkv", "vp9"),
            ("vp9", "webm", "vp9"),
            ("av1", "mp4", "av1"),
            ("av1", "mkv", "av1"),
            ("av1", "webm", "av1"),
        ];
        for (codec, ext, probed) in combos {
            let name = format!("{codec}.{ext}");
            let v = request(
                codec,
                json!({"type": "testsrc", "duration_s": 0.5}),
                json!({"type": "file", "path": name}),
            );
            let s = parse_ok(&v, &roots);
            let cmd = build_command(&ffmpeg(), &s);
            let r = run(&cmd.program, &cmd.args).await;
            assert!(r.status.success(), "{name}: {}", r.stderr);
            let last = feed(&mut ProgressParser::new(Some(0.5)), &r.stdout)
                .pop()
                .expect("progress");
            assert!(
                last.end && last.progress.total_size_bytes.is_some_and(|n| n > 0),
                "{name}"
            );
            assert_eq!(
                streams(&dir.path().join(&name)).await,
                [format!("{probed},video,160,90")],
                "{name}"
            );
        }
    }

    /// A 1 s source with audio, as users would upload.
    async fn make_source(dir: &Path) -> PathBuf {
        let src = dir.join("src.mkv");
        let args: Vec<OsString> = [
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=176x144:rate=15:duration=1",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100:duration=1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "flac",
            "-y",
        ]
        .iter()
        .map(OsString::from)
        .chain([src.as_os_str().to_owned()])
        .collect();
        let r = run(&ffmpeg(), &args).await;
        assert!(r.status.success(), "make source: {}", r.stderr);
        src
    }

    #[tokio::test]
    async fn file_input_is_scaled_and_keeps_audio() {
        let dir = tempfile::tempdir().expect("tempdir");
        make_source(dir.path()).await;
        let roots = MediaRoots::new(&[dir.path().to_path_buf()]).expect("roots");
        for (codec, out, video, audio) in [
            ("h264", "out.mp4", "h264", "aac"),
            ("vp9", "out.webm", "vp9", "opus"),
        ] {
            let v = request(
                codec,
                json!({"type": "file", "path": "src.mkv"}),
                json!({"type": "file", "path": out}),
            );
            let s = parse_ok(&v, &roots);
            let cmd = build_command(&ffmpeg(), &s);
            let r = run(&cmd.program, &cmd.args).await;
            assert!(r.status.success(), "{out}: {}", r.stderr);
            assert_eq!(
                streams(&dir.path().join(out)).await,
                [format!("{video},video,160,90"), format!("{audio},audio")],
                "{out}"
            );
            let d = probe_duration(&ffprobe(), &dir.path().join(out))
                .await
                .expect("probe");
            assert!(d.is_some_and(|d| (0.5..=1.5).contains(&d)), "{out}: {d:?}");
        }
    }

    #[tokio::test]
    async fn rtmp_argv_runs_when_pointed_at_a_file() {
        // No RTMP server in tests: run the exact argv with the URL swapped for a
        // file, which proves FFmpeg accepts -re, the encoder settings and FLV.
        let dir = tempfile::tempdir().expect("tempdir");
        let v = request(
            "h264",
            json!({"type": "testsrc", "duration_s": 0.3}),
            json!({"type": "rtmp", "url": "rtmp://127.0.0.1/live/key"}),
        );
        let s = parse_ok(&v, &no_roots());
        let mut cmd = build_command(&ffmpeg(), &s);
        let target = dir.path().join("stream.flv");
        assert_eq!(
            cmd.args
                .last()
                .map(|a| a.to_string_lossy().into_owned())
                .as_deref(),
            Some("rtmp://127.0.0.1/live/key")
        );
        if let Some(last) = cmd.args.last_mut() {
            *last = target.as_os_str().to_owned();
        }
        let r = run(&cmd.program, &cmd.args).await;
        assert!(r.status.success(), "{}", r.stderr);
        assert_eq!(streams(&target).await, ["h264,video,160,90"]);
    }

    #[tokio::test]
    async fn probe_duration_reads_files_and_reports_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = make_source(dir.path()).await;
        let d = probe_duration(&ffprobe(), &src).await.expect("probe");
        assert!(d.is_some_and(|d| (0.9..=1.1).contains(&d)), "{d:?}");

        let junk = dir.path().join("junk.mp4");
        std::fs::write(&junk, b"not media at all").expect("write");
        assert!(probe_duration(&ffprobe(), &junk).await.is_err());
        assert!(probe_duration(&ffprobe(), &dir.path().join("missing.mp4"))
            .await
            .is_err());
        assert!(probe_duration(&dir.path().join("no-ffprobe"), &src)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_probe_that_blocks_is_killed_at_its_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A FIFO nobody writes: ffprobe blocks in open(2) for good.
        let fifo = dir.path().join("stuck.mp4");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let err = probe_duration_within(&ffprobe(), &fifo, Duration::from_millis(300))
            .await
            .expect_err("a probe of a FIFO nobody writes cannot succeed");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        // ffprobe is gone: a reader blocked in open(2) counts as one, so a
        // non-blocking open for writing would succeed while it lived.
        let open = nix::fcntl::open(
            &fifo,
            nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_NONBLOCK,
            nix::sys::stat::Mode::empty(),
        );
        assert_eq!(
            open.err(),
            Some(nix::errno::Errno::ENXIO),
            "ffprobe still holds the FIFO"
        );
    }

    #[tokio::test]
    async fn probe_encoders_keeps_only_working_ones() {
        let found = probe_encoders(
            &ffmpeg(),
            &[
                "libx264",
                "libx265",
                "libvpx-vp9",
                "libsvtav1",
                "no_such_encoder",
                "-h",
                "libx264",
                "a b",
                "h264_nvenc",
                "h264_vaapi",
            ],
        )
        .await;
        let base: Vec<&str> = found
            .available
            .iter()
            .map(String::as_str)
            .filter(|n| !["h264_nvenc", "h264_vaapi"].contains(n))
            .collect();
        assert_eq!(base, ["libx264", "libx265", "libvpx-vp9", "libsvtav1"]);
        let reason = |name: &str| {
            found
                .unavailable
                .iter()
                .find(|u| u.encoder == name)
                .map(|u| u.reason.clone())
        };
        assert_eq!(
            reason("no_such_encoder").as_deref(),
            Some("Unknown encoder 'no_such_encoder'")
        );
        // h264_nvenc is listed by `ffmpeg -encoders` but needs a driver;
        // h264_vaapi a render node with a VA driver.
        if !Path::new("/dev/nvidiactl").exists() {
            let r = reason("h264_nvenc").expect("h264_nvenc unavailable");
            assert!(r.contains("libcuda"), "{r}");
            assert!(!r.contains(" @ 0x"), "{r}");
        }
        if !Path::new(crate::encoders::VAAPI_DEVICE).exists() {
            let r = reason("h264_vaapi").expect("h264_vaapi unavailable");
            assert!(r.contains(crate::encoders::VAAPI_DEVICE), "{r}");
        }
        assert_eq!(found.unavailable.len() + found.available.len(), 7);
        let missing = probe_encoders(Path::new("/nonexistent/ffmpeg"), &["libx264"]).await;
        assert!(missing.available.is_empty());
        assert!(missing.unavailable[0].reason.starts_with("could not run"));
    }

    /// The options every encoder's argv uses are ones this FFmpeg's encoder
    /// takes (`ffmpeg -h encoder=NAME` lists them), with a named value where
    /// the value is not a number; generic options are FFmpeg's own.
    /// Encoders this build lacks are skipped (no AV1 hardware in 5.1).
    /// Whether the encoder then opens needs its device: the probe's job.
    #[test]
    fn every_encoders_options_are_known_to_this_ffmpeg() {
        const GENERIC: [&str; 9] = [
            "-c:v",
            "-b:v",
            "-maxrate",
            "-bufsize",
            "-pix_fmt",
            "-g",
            "-tag:v",
            "-compression_level",
            "-global_quality",
        ];
        let mut checked = Vec::new();
        for enc in crate::encoders::ENCODERS {
            let out = std::process::Command::new(ffmpeg())
                .args(["-hide_banner", "-h", &format!("encoder={}", enc.name)])
                .output()
                .expect("run ffmpeg -h");
            let help = String::from_utf8_lossy(&out.stdout);
            if help.contains("is not recognized") {
                continue;
            }
            let line = |token: &str| {
                help.lines()
                    .find(|l| l.trim_start().starts_with(&format!("{token} ")))
                    .map(str::to_string)
            };
            let listed = |token: &str| line(token).is_some();
            let pix_fmts: Vec<&str> = help
                .lines()
                .find_map(|l| l.trim().strip_prefix("Supported pixel formats:"))
                .map(|l| l.split_whitespace().collect())
                .unwrap_or_default();
            let ten_bit = enc.takes_pix_fmt("yuv420p10le").then_some("yuv420p10le");
            for preset in enc.presets() {
                for (crf, pix_fmt) in [
                    (None, "yuv420p"),
                    (Some(enc.crf_range().1), ten_bit.unwrap_or("yuv420p")),
                ] {
                    let e = EncodeParams {
                        encoder: Some(enc.name.into()),
                        preset: preset.into(),
                        crf,
                        pix_fmt: Some(pix_fmt.into()),
                        ..spec(enc.codec, testsrc(), Output::Null).encode
                    };
                    let a = enc.video_args(&e, Some("mp4"));
                    for pair in a.chunks(2) {
                        let (flag, value) = (pair[0].as_str(), pair[1].as_str());
                        if flag == "-pix_fmt" {
                            assert!(
                                pix_fmts.contains(&value),
                                "{}: {value} not in {pix_fmts:?}",
                                enc.name
                            );
                        }
                        if GENERIC.contains(&flag) {
                            continue;
                        }
                        let Some(option) = line(flag) else {
                            panic!("{}: {flag} unknown to this FFmpeg", enc.name);
                        };
                        // An integer option takes a number or one of its
                        // named constants (NVENC's `p2`, QSV's `veryfast`,
                        // VAAPI's `CQP`, vp9's `realtime`).
                        if option.contains("<int>") && value.parse::<i64>().is_err() {
                            assert!(listed(value), "{}: {flag} {value}", enc.name);
                        }
                    }
                }
            }
            checked.push(enc.name);
        }
        // Debian 12's FFmpeg 5.1: all but the three AV1 hardware encoders.
        assert!(checked.len() >= 10, "{checked:?}");
    }

    #[test]
    fn the_first_useful_line_drops_ffmpegs_context_prefix() {
        let stderr = "\n[h264_nvenc @ 0x56280fc96040] Cannot load libcuda.so.1\nError initializing output stream 0:0\n";
        assert_eq!(
            first_useful_line(stderr).as_deref(),
            Some("Cannot load libcuda.so.1")
        );
        assert_eq!(
            first_useful_line(
                "[AVHWDeviceContext @ 0x1] No VA display found for device /dev/dri/renderD128."
            )
            .as_deref(),
            Some("No VA display found for device /dev/dri/renderD128.")
        );
        assert_eq!(
            first_useful_line("[not a context] kept"),
            Some("[not a context] kept".into())
        );
        assert_eq!(first_useful_line("  \n\n"), None);
        assert_eq!(
            first_useful_line(&"x".repeat(1000)).map(|l| l.len()),
            Some(300)
        );
    }

    #[test]
    fn hardware_encoders_get_their_device_and_upload_filter() {
        // VAAPI, testsrc: the device before the input, upload as the filter.
        let mut s = spec(Codec::H265, testsrc(), Output::Null);
        s.encode.encoder = Some("hevc_vaapi".into());
        s.encode.crf = Some(30);
        let a = args(&build_command(Path::new("ffmpeg"), &s));
        let dev = a.iter().position(|x| x == "-vaapi_device").expect("device");
        let input = a.iter().position(|x| x == "-i").expect("input");
        assert!(dev < input, "{a:?}");
        assert_eq!(
            after(&a, "-vaapi_device").as_deref(),
            Some(crate::encoders::VAAPI_DEVICE)
        );
        assert_eq!(after(&a, "-vf").as_deref(), Some("format=nv12,hwupload"));
        assert_eq!(after(&a, "-c:v").as_deref(), Some("hevc_vaapi"));
        assert_eq!(after(&a, "-qp").as_deref(), Some("30"));
        assert_eq!(after(&a, "-pix_fmt"), None);
        assert_eq!(after(&a, "-x265-params"), None);
        // QSV, file input: upload after the scale.
        let mut s = spec(
            Codec::H264,
            Input::File {
                path: "/m/in.mp4".into(),
            },
            Output::Null,
        );
        s.encode.encoder = Some("h264_qsv".into());
        let a = args(&build_command(Path::new("ffmpeg"), &s));
        assert_eq!(after(&a, "-init_hw_device").as_deref(), Some("qsv=hw"));
        assert_eq!(
            after(&a, "-vf").as_deref(),
            Some("scale=160:90,format=nv12,hwupload=extra_hw_frames=64")
        );
        assert_eq!(after(&a, "-b:v").as_deref(), Some("200k"));
        // NVENC: no device setup, system-memory frames with a pix_fmt.
        let mut s = spec(Codec::H264, testsrc(), Output::Null);
        s.encode.encoder = Some("h264_nvenc".into());
        let a = args(&build_command(Path::new("ffmpeg"), &s));
        assert_eq!(after(&a, "-vf"), None);
        assert_eq!(after(&a, "-preset").as_deref(), Some("p2"));
        assert_eq!(after(&a, "-pix_fmt").as_deref(), Some("yuv420p"));
        assert_eq!(&a[..7], PREFIX);
        // The probe's argv: the same device setup and upload.
        let p = probe_args("av1_vaapi");
        assert_eq!(
            after(&p, "-vaapi_device").as_deref(),
            Some(crate::encoders::VAAPI_DEVICE)
        );
        assert_eq!(after(&p, "-vf").as_deref(), Some("format=nv12,hwupload"));
        assert_eq!(p[p.len() - 5..], ["-c:v", "av1_vaapi", "-f", "null", "-"]);
    }

    #[tokio::test]
    async fn probe_input_allows_plain_containers_and_refuses_playlists_unopened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = make_source(dir.path()).await;
        let open = |p: &Path| std::fs::File::open(p).expect("open");
        let p = probe_input(&ffprobe(), &open(&src)).await.expect("mkv");
        assert_eq!(p.format.as_deref(), Some("matroska,webm"));
        assert!(
            p.duration_s.is_some_and(|d| (0.9..=1.1).contains(&d)),
            "{p:?}"
        );

        // An HLS playlist saved as .mp4 whose segment is a FIFO elsewhere:
        // refused by name, and the FIFO is never opened (the probe would
        // block on it otherwise).
        let fifo = dir.path().join("segment.ts");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644))
            .expect("mkfifo");
        let hls = dir.path().join("evil.mp4");
        std::fs::write(
            &hls,
            format!(
                "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1.0,\n{}\n#EXT-X-ENDLIST\n",
                fifo.display()
            ),
        )
        .expect("playlist");
        match probe_input(&ffprobe(), &open(&hls)).await {
            Err(ProbeError::NotAllowed { format, .. }) => {
                assert_eq!(format.as_deref(), Some("hls"))
            }
            other => panic!("{other:?}"),
        }
        let concat = dir.path().join("list.mp4");
        std::fs::write(
            &concat,
            format!("ffconcat version 1.0\nfile '{}'\n", src.display()),
        )
        .expect("ffconcat");
        assert!(matches!(
            probe_input(&ffprobe(), &open(&concat)).await,
            Err(ProbeError::NotAllowed { .. })
        ));
        // Not media at all: nothing recognised, left to FFmpeg's own error.
        let junk = dir.path().join("junk.mp4");
        std::fs::write(&junk, b"not media at all").expect("write");
        let p = probe_input(&ffprobe(), &open(&junk)).await.expect("junk");
        assert_eq!(p.format, None);
        assert!(format_allowed("mov,mp4,m4a,3gp,3g2,mj2"));
        assert!(!format_allowed("hls") && !format_allowed("concat") && !format_allowed(""));
    }

    #[test]
    fn descriptors_replace_paths_and_file_inputs_are_whitelisted() {
        let s = spec(
            Codec::H264,
            Input::File {
                path: "/m/in.mp4".into(),
            },
            Output::File {
                path: "/m/out.mp4".into(),
            },
        );
        let files = JobFiles {
            input: Some((5, Some("mov,mp4,m4a,3gp,3g2,mj2".into()))),
            output_fd: Some(6),
        };
        let a = build_command_with(Path::new("ffmpeg"), &s, &files).args_lossy();
        let i = a.iter().position(|x| x == "-i").expect("-i");
        assert_eq!(
            a[i - 4..=i + 1],
            [
                "-protocol_whitelist",
                "file",
                "-format_whitelist",
                "mov,mp4,m4a,3gp,3g2,mj2",
                "-i",
                "file:/proc/self/fd/5"
            ]
        );
        assert_eq!(a.last().map(String::as_str), Some("file:/proc/self/fd/6"));
        assert!(!a.iter().any(|x| x.contains("/m/")), "{a:?}");
        // Without descriptors (tools, tests): the paths, still whitelisted.
        let a = build_command(Path::new("ffmpeg"), &s).args_lossy();
        assert!(
            a.contains(&"/m/in.mp4".to_string()) && a.contains(&"-protocol_whitelist".to_string())
        );
    }
}
