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
    assert!(a.contains(&"/m/in.mp4".to_string()) && a.contains(&"-protocol_whitelist".to_string()));
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
