//! FFmpeg argv building, `-progress` parsing, and probing (durations,
//! encoders). Argv only: nothing here ever goes through a shell, and filter
//! arguments are built from validated numbers alone.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::model::{Codec, Input, JobSpec, Output, Progress};

/// Program and arguments for one FFmpeg run.
#[derive(Debug, Clone, PartialEq)]
pub struct FfmpegCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// Full argv for one job: `-progress pipe:1` for machine-readable progress on
/// stdout, warnings and errors on stderr.
pub fn build_command(ffmpeg: &Path, spec: &JobSpec) -> FfmpegCommand {
    let e = &spec.encode;
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(OsString::from(s));
    for s in [
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "warning",
        "-progress",
        "pipe:1",
    ] {
        push(s);
    }
    let live = matches!(spec.output, Output::Rtmp { .. });
    if live {
        // A live stream is paced in real time.
        push("-re");
    }
    let has_audio = match &spec.input {
        Input::Testsrc { duration_s } => {
            push("-f");
            push("lavfi");
            push("-i");
            push(&format!(
                "testsrc2=size={}x{}:rate={}:duration={}",
                e.width, e.height, e.fps, duration_s
            ));
            false
        }
        Input::File { path } => {
            push("-i");
            a.push(path.as_os_str().to_owned());
            true
        }
    };
    let mut push = |s: &str| a.push(OsString::from(s));
    if has_audio {
        for s in ["-map", "0:v:0", "-map", "0:a:0?"] {
            push(s);
        }
        push("-vf");
        push(&format!("scale={}:{}", e.width, e.height));
        push("-r");
        push(&e.fps.to_string());
    }
    let kbps = e.bitrate_kbps;
    push("-c:v");
    push(e.codec.encoder());
    match e.codec {
        Codec::H264 | Codec::H265 => {
            push("-preset");
            push(&e.preset);
            push("-b:v");
            push(&format!("{kbps}k"));
            push("-maxrate");
            push(&format!("{kbps}k"));
            push("-bufsize");
            push(&format!("{}k", kbps.saturating_mul(2)));
            push("-g");
            push(&(e.fps.saturating_mul(2)).to_string());
            if e.codec == Codec::H265 {
                push("-x265-params");
                push("log-level=error");
            }
        }
        Codec::Vp9 => {
            push("-deadline");
            push(&e.preset);
            push("-cpu-used");
            push(if e.preset == "realtime" { "8" } else { "4" });
            push("-row-mt");
            push("1");
            push("-b:v");
            push(&format!("{kbps}k"));
            push("-g");
            push(&(e.fps.saturating_mul(2)).to_string());
        }
        Codec::Av1 => {
            push("-preset");
            push(&e.preset);
            push("-b:v");
            push(&format!("{kbps}k"));
            push("-g");
            push(&(e.fps.saturating_mul(2)).to_string());
        }
    }
    push("-pix_fmt");
    push("yuv420p");
    match &spec.output {
        Output::Null => {
            push("-an");
            push("-f");
            push("null");
            push("-");
        }
        Output::File { path } => {
            let ext = path
                .extension()
                .and_then(|x| x.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            if has_audio {
                push("-c:a");
                if ext == "webm" {
                    push("libopus");
                } else {
                    push("aac");
                }
                push("-b:a");
                push("128k");
            } else {
                push("-an");
            }
            if ext == "mp4" || ext == "mov" {
                push("-movflags");
                push("+faststart");
            }
            push("-y");
            a.push(path.as_os_str().to_owned());
        }
        Output::Rtmp { url } => {
            if has_audio {
                for s in ["-c:a", "aac", "-b:a", "128k"] {
                    push(s);
                }
            } else {
                push("-an");
            }
            push("-f");
            push("flv");
            push(url);
        }
    }
    FfmpegCommand {
        program: ffmpeg.to_path_buf(),
        args: a,
    }
}

/// One block of `-progress` output, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressUpdate {
    pub progress: Progress,
    /// `progress=end`: FFmpeg finished writing.
    pub end: bool,
}

/// Incremental parser of FFmpeg's `-progress` key=value blocks.
///
/// Quirks handled (seen on FFmpeg 5.1): `out_time_ms` holds microseconds;
/// `fps=0.00` during the first second; `bitrate`, `total_size` and `speed`
/// are `N/A` with `-f null` or early on; values may be negative or garbage.
#[derive(Debug, Clone)]
pub struct ProgressParser {
    expected_duration_s: Option<f64>,
    cur: Progress,
    out_time_us: Option<i64>,
    out_time_text: Option<f64>,
}

fn finite(v: f64) -> Option<f64> {
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// `HH:MM:SS.micro` → seconds.
fn parse_clock(s: &str) -> Option<f64> {
    let neg = s.starts_with('-');
    let mut parts = s.trim_start_matches('-').split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || neg {
        return None;
    }
    finite(h * 3600.0 + m * 60.0 + sec)
}

impl ProgressParser {
    pub fn new(expected_duration_s: Option<f64>) -> ProgressParser {
        ProgressParser {
            expected_duration_s: expected_duration_s.filter(|d| d.is_finite() && *d > 0.0),
            cur: Progress::default(),
            out_time_us: None,
            out_time_text: None,
        }
    }

    /// Feed one line; returns an update at each `progress=continue|end`.
    pub fn push_line(&mut self, line: &str) -> Option<ProgressUpdate> {
        let (key, value) = line.trim().split_once('=')?;
        let value = value.trim();
        match key.trim() {
            "frame" => {
                if let Ok(f) = value.parse::<u64>() {
                    self.cur.frame = f;
                }
            }
            "fps" => self.cur.fps = value.parse().ok().and_then(finite).unwrap_or(0.0),
            "bitrate" => {
                self.cur.bitrate_kbps = value
                    .strip_suffix("kbits/s")
                    .and_then(|v| v.trim().parse().ok())
                    .and_then(finite)
            }
            "total_size" => self.cur.total_size_bytes = value.parse().ok(),
            "speed" => {
                self.cur.speed = value
                    .strip_suffix('x')
                    .and_then(|v| v.trim().parse().ok())
                    .and_then(finite)
            }
            // Both hold microseconds (out_time_ms is misnamed in FFmpeg 5.1).
            "out_time_us" => self.out_time_us = value.parse().ok().or(self.out_time_us),
            "out_time_ms" => {
                if self.out_time_us.is_none() {
                    self.out_time_us = value.parse().ok();
                }
            }
            "out_time" => self.out_time_text = parse_clock(value),
            "progress" => {
                let end = value == "end";
                let secs = self
                    .out_time_us
                    .filter(|us| *us >= 0)
                    .map(|us| us as f64 / 1e6)
                    .or(self.out_time_text);
                if let Some(s) = secs {
                    self.cur.out_time_s = s;
                }
                self.cur.percent = self.expected_duration_s.map(|d| {
                    if end {
                        100.0
                    } else {
                        (self.cur.out_time_s / d * 100.0).clamp(0.0, 100.0)
                    }
                });
                self.out_time_us = None;
                self.out_time_text = None;
                return Some(ProgressUpdate {
                    progress: self.cur.clone(),
                    end,
                });
            }
            _ => {}
        }
        None
    }
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Duration of a media file in seconds, via ffprobe (argv only). `Ok(None)` if unknown.
pub async fn probe_duration(ffprobe: &Path, input: &Path) -> std::io::Result<Option<f64>> {
    let mut cmd = tokio::process::Command::new(ffprobe);
    cmd.args([
        "-v",
        "error",
        "-show_entries",
        "format=duration",
        "-of",
        "default=noprint_wrappers=1:nokey=1",
    ])
    .arg(input)
    .stdin(Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(PROBE_TIMEOUT, cmd.output())
        .await
        .map_err(|_| std::io::Error::other("ffprobe timed out"))??;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(finite)
        .filter(|d| *d > 0.0))
}

/// Encoders that complete a tiny real encode. `ffmpeg -encoders` is not
/// enough: `h264_nvenc` is listed on machines without a GPU and fails at run time.
pub async fn probe_encoders(ffmpeg: &Path, candidates: &[&str]) -> Vec<String> {
    let mut ok = Vec::new();
    for enc in candidates {
        let mut cmd = tokio::process::Command::new(ffmpeg);
        cmd.args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=128x72:rate=10:duration=0.3",
            "-c:v",
            enc,
            "-pix_fmt",
            "yuv420p",
            "-f",
            "null",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
        let passed = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, cmd.status()).await,
            Ok(Ok(s)) if s.success()
        );
        if passed {
            ok.push(enc.to_string());
        } else {
            tracing::info!(
                encoder = enc,
                "encoder failed its test encode; not advertised"
            );
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EncodeParams, Priority, ResourceLimits};
    use proptest::prelude::*;

    fn spec(codec: Codec, preset: &str, output: Output) -> JobSpec {
        JobSpec {
            scenario: None,
            encode: EncodeParams {
                width: 160,
                height: 90,
                fps: 10,
                codec,
                bitrate_kbps: 200,
                preset: preset.into(),
            },
            input: Input::Testsrc { duration_s: 0.5 },
            output,
            priority: Priority::Medium,
            resource_limits: ResourceLimits::default(),
            max_retries: 3,
        }
    }

    fn feed(p: &mut ProgressParser, block: &str) -> Vec<ProgressUpdate> {
        block.lines().filter_map(|l| p.push_line(l)).collect()
    }

    #[test]
    fn parses_ffmpeg_51_quirks() {
        let mut p = ProgressParser::new(Some(10.0));
        let u = feed(
            &mut p,
            "frame=0\nfps=0.00\nbitrate=N/A\ntotal_size=N/A\nout_time_us=0\nout_time_ms=0\nout_time=00:00:00.000000\nspeed=N/A\nprogress=continue\n",
        );
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].progress.fps, 0.0);
        assert_eq!(u[0].progress.speed, None);
        assert_eq!(u[0].progress.bitrate_kbps, None);
        assert_eq!(u[0].progress.total_size_bytes, None);
        // out_time_ms carries microseconds.
        let u = feed(
            &mut p,
            "frame=75\nfps=30.5\nbitrate=1234.5kbits/s\ntotal_size=4096\nout_time_ms=2500000\nout_time=00:00:02.500000\nspeed=1.23x\nprogress=continue\n",
        );
        assert_eq!(u[0].progress.frame, 75);
        assert_eq!(u[0].progress.out_time_s, 2.5);
        assert_eq!(u[0].progress.percent, Some(25.0));
        assert_eq!(u[0].progress.speed, Some(1.23));
        assert_eq!(u[0].progress.bitrate_kbps, Some(1234.5));
        assert_eq!(u[0].progress.total_size_bytes, Some(4096));
        assert!(!u[0].end);
        let u = feed(
            &mut p,
            "frame=300\nout_time=00:00:10.000000\nprogress=end\n",
        );
        assert!(u[0].end);
        assert_eq!(u[0].progress.out_time_s, 10.0);
        assert_eq!(u[0].progress.percent, Some(100.0));
    }

    #[test]
    fn garbage_and_negative_values_are_ignored() {
        let mut p = ProgressParser::new(None);
        let u = feed(
            &mut p,
            "frame=abc\nfps=-3\nout_time_us=-5000\nout_time=-00:00:01.0\nspeed=fastx\nnonsense\n=\nprogress=continue\n",
        );
        assert_eq!(u[0].progress.frame, 0);
        assert_eq!(u[0].progress.fps, 0.0);
        assert_eq!(u[0].progress.out_time_s, 0.0);
        assert_eq!(u[0].progress.percent, None, "unknown duration: no percent");
    }

    #[test]
    fn percent_is_clamped() {
        let mut p = ProgressParser::new(Some(1.0));
        let u = feed(&mut p, "out_time_us=5000000\nprogress=continue\n");
        assert_eq!(u[0].progress.percent, Some(100.0));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_lines(lines in proptest::collection::vec(".*", 0..50)) {
            let mut p = ProgressParser::new(Some(3.0));
            for l in &lines {
                if let Some(u) = p.push_line(l) {
                    prop_assert!(u.progress.out_time_s.is_finite());
                    if let Some(pc) = u.progress.percent {
                        prop_assert!((0.0..=100.0).contains(&pc));
                    }
                }
            }
        }
    }

    #[test]
    fn argv_has_no_shell_and_puts_progress_on_stdout() {
        let c = build_command(
            Path::new("ffmpeg"),
            &spec(Codec::H264, "veryfast", Output::Null),
        );
        let args: Vec<String> = c
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.windows(2).any(|w| w == ["-progress", "pipe:1"]));
        assert!(args.contains(&"-nostdin".to_string()));
        assert!(args.contains(&"testsrc2=size=160x90:rate=10:duration=0.5".to_string()));
        assert!(args.ends_with(&["-f".into(), "null".into(), "-".into()]));
        let rtmp = build_command(
            Path::new("ffmpeg"),
            &spec(
                Codec::H264,
                "veryfast",
                Output::Rtmp {
                    url: "rtmp://127.0.0.1/live/k".into(),
                },
            ),
        );
        let args: Vec<String> = rtmp
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"-re".to_string()), "live output is paced");
        assert!(args.ends_with(&["-f".into(), "flv".into(), "rtmp://127.0.0.1/live/k".into()]));
    }

    fn ffmpeg_available() -> bool {
        std::process::Command::new("ffmpeg")
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Every codec's argv is accepted by the real FFmpeg, and the progress it
    /// prints parses to the expected frame count.
    #[test]
    fn real_ffmpeg_accepts_every_codec_argv_and_its_progress_parses() {
        assert!(
            ffmpeg_available(),
            "ffmpeg not found: sudo apt-get install -y ffmpeg"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        for (codec, preset, ext) in [
            (Codec::H264, "veryfast", "mp4"),
            (Codec::H265, "ultrafast", "mkv"),
            (Codec::Vp9, "realtime", "webm"),
            (Codec::Av1, "12", "mkv"),
        ] {
            let out = dir.path().join(format!("out-{}.{ext}", codec.as_str()));
            let s = spec(codec, preset, Output::File { path: out.clone() });
            let c = build_command(Path::new("ffmpeg"), &s);
            let o = std::process::Command::new(&c.program)
                .args(&c.args)
                .stdin(Stdio::null())
                .output()
                .expect("run ffmpeg");
            assert!(
                o.status.success(),
                "{codec:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let mut p = ProgressParser::new(s.expected_duration_s());
            let last = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| p.push_line(l))
                .last()
                .expect("progress blocks");
            assert!(last.end);
            assert_eq!(last.progress.frame, 5, "{codec:?}: 0.5 s at 10 fps");
            assert_eq!(last.progress.percent, Some(100.0));
            assert!(std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) > 0);
        }
    }

    #[tokio::test]
    async fn probes_find_software_encoders_and_reject_unknown_ones() {
        assert!(
            ffmpeg_available(),
            "ffmpeg not found: sudo apt-get install -y ffmpeg"
        );
        let found = probe_encoders(Path::new("ffmpeg"), &["libx264", "no_such_encoder"]).await;
        assert_eq!(found, vec!["libx264".to_string()]);
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("d.mp4");
        let s = spec(Codec::H264, "veryfast", Output::File { path: out.clone() });
        let c = build_command(Path::new("ffmpeg"), &s);
        let st = std::process::Command::new(&c.program)
            .args(&c.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("ffmpeg");
        assert!(st.success());
        let d = probe_duration(Path::new("ffprobe"), &out)
            .await
            .expect("ffprobe")
            .expect("a duration");
        assert!((d - 0.5).abs() < 0.15, "duration {d}");
        let none = probe_duration(Path::new("ffprobe"), &dir.path().join("missing.mp4"))
            .await
            .expect("ffprobe runs");
        assert_eq!(none, None);
    }
}
