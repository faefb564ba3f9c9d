//! The documented example, overrides and encode ranges.

use super::*;

#[test]
fn full_example_parses() {
    let body = br#"{"scenario":"720p30-h264","input":{"type":"testsrc","duration_s":10},"output":{"type":"null"},"priority":"high",
 "width":1280,"height":720,"fps":30,"codec":"h264","bitrate":"3000k","preset":"veryfast",
 "resource_limits":{"max_cpu_percent":50,"max_memory_mb":512,"timeout_s":60,"stall_timeout_s":30},
 "max_retries":3}"#;
    let spec = parse_job_request(body, &no_roots()).expect("valid");
    assert_eq!(
        spec,
        JobSpec {
            scenario: Some("720p30-h264".into()),
            encode: EncodeParams::new(1280, 720, 30, Codec::H264, 3000, "veryfast".into()),
            input: Input::Testsrc { duration_s: 10.0 },
            output: Output::Null,
            priority: Priority::High,
            resource_limits: ResourceLimits {
                max_cpu_percent: Some(50),
                max_memory_mb: Some(512),
                timeout_s: Some(60),
                stall_timeout_s: Some(30),
            },
            max_retries: 3,
            overwrite: false,
            quality: None,
            labels: Default::default(),
            experiment: None,
        }
    );
}

#[test]
fn defaults_apply() {
    let spec = parse(&base()).expect("valid");
    assert_eq!(spec.priority, Priority::Medium);
    assert_eq!(spec.max_retries, DEFAULT_MAX_RETRIES);
    assert_eq!(spec.resource_limits, ResourceLimits::default());
    // Explicit nulls mean "absent".
    let spec2 = parse(&with(
        with(base(), "priority", Value::Null),
        "width",
        Value::Null,
    ))
    .expect("valid");
    assert_eq!(spec2, spec);
}

#[test]
fn explicit_fields_override_the_scenario() {
    let mut v = with(base(), "scenario", json!("1080p60-h265"));
    for (k, val) in [
        ("width", json!(1280)),
        ("height", json!(720)),
        ("fps", json!(25)),
        ("codec", json!("h264")),
        ("bitrate", json!("2500k")),
        ("preset", json!("fast")),
    ] {
        v[k] = val;
    }
    let e = parse(&v).expect("valid").encode;
    assert_eq!(
        e,
        EncodeParams::new(1280, 720, 25, Codec::H264, 2500, "fast".into())
    );
}

#[test]
fn a_codec_override_takes_that_codecs_defaults() {
    let v = with(
        with(base(), "scenario", json!("1080p30-h264")),
        "codec",
        json!("vp9"),
    );
    let e = parse(&v).expect("valid").encode;
    assert_eq!(e.codec, Codec::Vp9);
    assert_eq!(e.preset, "realtime");
    assert_eq!(
        Some(e.bitrate_kbps),
        scenario("1080p30-vp9").map(|p| p.bitrate_kbps)
    );
    // A resolution override re-derives the default bitrate too.
    let v = with(
        with(base(), "scenario", json!("1080p30-h264")),
        "fps",
        json!(60),
    );
    let e = parse(&v).expect("valid").encode;
    assert_eq!(
        Some(e.bitrate_kbps),
        scenario("1080p60-h264").map(|p| p.bitrate_kbps)
    );
}

#[test]
fn without_scenario_the_shape_is_required() {
    let full = json!({
        "input": {"type": "testsrc", "duration_s": 1},
        "output": {"type": "null"},
        "width": 640, "height": 360, "fps": 24, "codec": "av1"
    });
    let e = parse(&full).expect("valid").encode;
    assert_eq!(e.preset, "10");
    assert_eq!(
        e.bitrate_kbps,
        default_bitrate_kbps(Codec::Av1, 640, 360, 24)
    );
    for field in ["width", "height", "fps", "codec"] {
        let mut v = full.clone();
        v.as_object_mut().map(|o| o.remove(field));
        assert_err(parse(&v), codes::MISSING_FIELD, Some(field));
    }
}

#[test]
fn dimension_rules() {
    for (field, ok, bad) in [
        (
            "width",
            vec![16, 854, 7680],
            vec![json!(14), json!(7682), json!(855), json!(0)],
        ),
        (
            "height",
            vec![16, 480, 4320],
            vec![json!(14), json!(4322), json!(481)],
        ),
    ] {
        for v in ok {
            let spec = parse(&with(base(), field, json!(v))).expect("valid");
            let got = if field == "width" {
                spec.encode.width
            } else {
                spec.encode.height
            };
            assert_eq!(got, v);
        }
        for v in bad.into_iter().chain([
            json!(-2),
            json!(640.0),
            json!("640"),
            json!(true),
            json!(1u64 << 40),
            json!([640]),
        ]) {
            assert_err(
                parse(&with(base(), field, v)),
                codes::INVALID_FIELD,
                Some(field),
            );
        }
    }
}

#[test]
fn fps_rules() {
    for ok in [1, 30, 240] {
        assert_eq!(
            parse(&with(base(), "fps", json!(ok))).map(|s| s.encode.fps),
            Ok(ok)
        );
    }
    for bad in [json!(0), json!(241), json!(29.97), json!(-30)] {
        assert_err(
            parse(&with(base(), "fps", bad)),
            codes::INVALID_FIELD,
            Some("fps"),
        );
    }
}

#[test]
fn codec_rules() {
    for c in Codec::ALL {
        let v = with(base(), "codec", json!(c.as_str()));
        assert_eq!(parse(&v).map(|s| s.encode.codec), Ok(c));
    }
    for bad in [json!("H264"), json!("mpeg2"), json!(""), json!(264)] {
        assert_err(
            parse(&with(base(), "codec", bad)),
            codes::INVALID_FIELD,
            Some("codec"),
        );
    }
}

#[test]
fn av1_needs_64_pixels() {
    let v = with(with(base(), "codec", json!("av1")), "width", json!(62));
    assert_err(parse(&v), codes::INVALID_FIELD, Some("width"));
    let v = with(with(base(), "codec", json!("av1")), "height", json!(32));
    assert_err(parse(&v), codes::INVALID_FIELD, Some("height"));
    let v = with(
        with(with(base(), "codec", json!("av1")), "height", json!(64)),
        "width",
        json!(64),
    );
    assert!(parse(&v).is_ok());
    // Other codecs go down to 16.
    let v = with(with(base(), "width", json!(16)), "height", json!(16));
    assert!(parse(&v).is_ok());
}

#[test]
fn bitrate_rules() {
    for (val, kbps) in [
        (json!(3000), 3000),
        (json!(1), 1),
        (json!(200_000), 200_000),
        (json!("2500k"), 2500),
        (json!("2500K"), 2500),
        (json!("6M"), 6000),
        (json!("2.5M"), 2500),
        (json!("0.001M"), 1),
        (json!("200M"), 200_000),
        (json!("1500.000k"), 1500),
    ] {
        let got = parse(&with(base(), "bitrate", val.clone())).map(|s| s.encode.bitrate_kbps);
        assert_eq!(got, Ok(kbps), "{val}");
    }
    for bad in [
        json!(0),
        json!(200_001),
        json!(-5),
        json!(2500.5),
        json!(true),
        json!("2500"),
        json!("0k"),
        json!("1.5k"),
        json!("0.0015M"),
        json!("201M"),
        json!("k"),
        json!(".5M"),
        json!("-5k"),
        json!("+5k"),
        json!("5 k"),
        json!("1e3k"),
        json!("2500kb"),
        json!("99999999999999999999k"),
        json!(""),
        json!({"kbps": 5}),
    ] {
        assert_err(
            parse(&with(base(), "bitrate", bad)),
            codes::INVALID_FIELD,
            Some("bitrate"),
        );
    }
}

#[test]
fn encoder_hardware_crf_and_pix_fmt() {
    let body = |fields: Value| {
        let mut v = base();
        for (k, x) in fields.as_object().expect("object") {
            v[k] = x.clone();
        }
        v
    };
    // Accepted, parsed into the encode.
    let s = parse(&body(
        json!({"codec": "h265", "encoder": "hevc_nvenc", "preset": "p5", "crf": 28}),
    ))
    .expect("nvenc");
    assert_eq!(s.encode.encoder.as_deref(), Some("hevc_nvenc"));
    assert_eq!((s.encode.preset.as_str(), s.encode.crf), ("p5", Some(28)));
    let s = parse(&body(json!({"hardware": "required", "pix_fmt": "yuv420p"}))).expect("required");
    assert_eq!(s.encode.hardware, HardwarePref::Required);
    assert_eq!(
        (s.encode.encoder, s.encode.pix_fmt.as_deref()),
        (None, Some("yuv420p"))
    );
    let s = parse(&body(json!({"hardware": "preferred", "preset": "slow"}))).expect("preferred");
    assert_eq!(
        (s.encode.hardware, s.encode.preset.as_str()),
        (HardwarePref::Preferred, "slow")
    );
    // The codec's software presets go with any encoder (mapped);
    // VAAPI has none of its own.
    parse(&body(
        json!({"encoder": "h264_vaapi", "preset": "veryslow"}),
    ))
    .expect("vaapi");
    parse(&body(
        json!({"encoder": "libx264", "hardware": "preferred"}),
    ))
    .expect("named wins");
    let s = parse(&body(json!({"hardware": "none"}))).expect("none");
    assert_eq!(
        (s.encode.hardware, s.encode.crf),
        (HardwarePref::None, None)
    );

    // Refused, naming the field.
    for (fields, field) in [
        (json!({"encoder": "h264_amf"}), "encoder"),
        (json!({"encoder": "hevc_nvenc"}), "encoder"), // the job's codec is h264
        (json!({"encoder": "libx264 -f"}), "encoder"),
        (json!({"hardware": "gpu"}), "hardware"),
        (json!({"hardware": true}), "hardware"),
        (json!({"codec": "vp9", "hardware": "required"}), "hardware"),
        (
            json!({"encoder": "h264_nvenc", "hardware": "none"}),
            "hardware",
        ),
        (
            json!({"encoder": "libx264", "hardware": "required"}),
            "hardware",
        ),
        (json!({"crf": 52}), "crf"),
        (json!({"crf": -1}), "crf"),
        (json!({"encoder": "h264_nvenc", "crf": 0}), "crf"),
        (json!({"hardware": "required", "crf": 0}), "crf"),
        (
            json!({"codec": "av1", "encoder": "libsvtav1", "crf": 64}),
            "crf",
        ),
        (json!({"crf": 23, "bitrate": "2M"}), "crf"),
        (json!({"pix_fmt": "rgb24"}), "pix_fmt"),
        (
            json!({"pix_fmt": "yuv420p10le", "encoder": "h264_qsv"}),
            "pix_fmt",
        ),
        (
            json!({"pix_fmt": "yuv420p10le", "hardware": "required"}),
            "pix_fmt",
        ),
        (json!({"encoder": "h264_vaapi", "preset": "p2"}), "preset"),
        (json!({"encoder": "h264_nvenc", "preset": "p8"}), "preset"),
        (json!({"hardware": "required", "preset": "p2"}), "preset"),
    ] {
        let v = body(fields.clone());
        let e = parse(&v).expect_err(&fields.to_string());
        assert_eq!(e.field.as_deref(), Some(field), "{fields}: {e:?}");
    }
    // Ranges are the encoder's.
    let s = parse(&body(
        json!({"codec": "av1", "encoder": "av1_vaapi", "crf": 200}),
    ))
    .expect("vaapi qp");
    assert_eq!(s.encode.crf, Some(200));
    let s = parse(&body(json!({"codec": "vp9", "crf": 63}))).expect("vp9 crf");
    assert_eq!(s.encode.crf, Some(63));
    // 10-bit H.264 with `preferred`: software will take it.
    parse(&body(
        json!({"pix_fmt": "yuv420p10le", "hardware": "preferred"}),
    ))
    .expect("10-bit");
}

#[test]
fn preset_rules() {
    let ok = [
        ("h264", "ultrafast"),
        ("h264", "veryslow"),
        ("h265", "medium"),
        ("vp9", "good"),
        ("vp9", "best"),
        ("av1", "0"),
        ("av1", "13"),
    ];
    for (codec, preset) in ok {
        let v = with(with(base(), "codec", json!(codec)), "preset", json!(preset));
        assert_eq!(parse(&v).map(|s| s.encode.preset), Ok(preset.to_string()));
    }
    let bad = [
        ("h264", json!("placebo")),
        ("h265", json!("realtime")),
        ("vp9", json!("veryfast")),
        ("av1", json!("14")),
        ("av1", json!("07")),
        ("av1", json!("-1")),
        ("av1", json!(10)),
        ("h264", json!("veryfast; rm -rf /")),
    ];
    for (codec, preset) in bad {
        let v = with(with(base(), "codec", json!(codec)), "preset", preset);
        assert_err(parse(&v), codes::INVALID_FIELD, Some("preset"));
    }
    // A scenario's preset is replaced when the codec changes and no preset is given.
    let v = with(
        with(base(), "codec", json!("av1")),
        "preset",
        json!("veryfast"),
    );
    assert_err(parse(&v), codes::INVALID_FIELD, Some("preset"));
}
