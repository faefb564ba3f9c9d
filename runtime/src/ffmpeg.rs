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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Codec;
    use crate::spec::{parse_job_request, MediaRoots};
    use crate::test_util::{after, args, feed, small_spec as spec, testsrc};
    use proptest::prelude::*;
    use serde_json::json;

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
}
