//! Real FFmpeg runs: the argv `ffrtmp_runtime::ffmpeg` builds, run through
//! this machine's FFmpeg, and the probes of this module.

use super::*;
use ffrtmp_runtime::ffmpeg::*;
use ffrtmp_runtime::model::*;
use ffrtmp_runtime::spec::{parse_job_request, MediaRoots};
use ffrtmp_runtime::test_util::{after, args, feed, small_spec as spec, testsrc};
use serde_json::{json, Value};
use std::ffi::OsString;

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
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
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
    if !Path::new(ffrtmp_runtime::encoders::VAAPI_DEVICE).exists() {
        let r = reason("h264_vaapi").expect("h264_vaapi unavailable");
        assert!(r.contains(ffrtmp_runtime::encoders::VAAPI_DEVICE), "{r}");
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
    for enc in ffrtmp_runtime::encoders::ENCODERS {
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
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
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
