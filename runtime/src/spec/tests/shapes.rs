//! Input and output shapes, RTMP URLs, priority, retries and limits.

use super::*;

#[test]
fn testsrc_duration_rules() {
    let inp = |d: Value| with(base(), "input", json!({"type": "testsrc", "duration_s": d}));
    for (d, want) in [
        (json!(0.5), 0.5),
        (json!(86_400), 86_400.0),
        (json!(1e-3), 1e-3),
    ] {
        assert_eq!(
            parse(&inp(d)).map(|s| s.input),
            Ok(Input::Testsrc { duration_s: want })
        );
    }
    for bad in [json!(0), json!(-1), json!(86_400.001), json!(1e300)] {
        assert_err(
            parse(&inp(bad)),
            codes::INVALID_FIELD,
            Some("input.duration_s"),
        );
    }
    for bad in [json!("10"), json!(null_value()), json!([1])] {
        let r = parse(&inp(bad.clone()));
        if bad.is_null() {
            assert_err(r, codes::MISSING_FIELD, Some("input.duration_s"));
        } else {
            assert_err(r, codes::INVALID_FIELD, Some("input.duration_s"));
        }
    }
    let v = with(base(), "input", json!({"type": "testsrc"}));
    assert_err(parse(&v), codes::MISSING_FIELD, Some("input.duration_s"));
    let v = with(
        base(),
        "input",
        json!({"type": "testsrc", "duration_s": 1, "path": "a.mp4"}),
    );
    assert_err(parse(&v), codes::UNKNOWN_FIELD, Some("input.path"));
}

fn null_value() -> Value {
    Value::Null
}

#[test]
fn input_shape_rules() {
    let mut v = base();
    v.as_object_mut().map(|o| o.remove("input"));
    assert_err(parse(&v), codes::MISSING_FIELD, Some("input"));
    assert_err(
        parse(&with(base(), "input", json!({"duration_s": 1}))),
        codes::MISSING_FIELD,
        Some("input.type"),
    );
    assert_err(
        parse(&with(base(), "input", json!({"type": "webcam"}))),
        codes::INVALID_FIELD,
        Some("input.type"),
    );
    assert_err(
        parse(&with(base(), "input", json!("testsrc"))),
        codes::INVALID_FIELD,
        Some("input"),
    );
    assert_err(
        parse(&with(base(), "input", json!({"type": "file"}))),
        codes::MISSING_FIELD,
        Some("input.path"),
    );
    assert_err(
        parse(&with(
            base(),
            "input",
            json!({"type": "file", "path": "a.mp4", "duration_s": 3}),
        )),
        codes::UNKNOWN_FIELD,
        Some("input.duration_s"),
    );
    // No roots configured: no file is acceptable.
    assert_err(
        parse(&with(
            base(),
            "input",
            json!({"type": "file", "path": "a.mp4"}),
        )),
        codes::PATH_OUTSIDE_MEDIA_ROOT,
        Some("input.path"),
    );
}

#[test]
fn output_shape_rules() {
    let mut v = base();
    v.as_object_mut().map(|o| o.remove("output"));
    assert_err(parse(&v), codes::MISSING_FIELD, Some("output"));
    let out = |o: Value| with(base(), "output", o);
    assert_err(
        parse(&out(json!({}))),
        codes::MISSING_FIELD,
        Some("output.type"),
    );
    assert_err(
        parse(&out(json!({"type": "srt"}))),
        codes::INVALID_FIELD,
        Some("output.type"),
    );
    assert_err(
        parse(&out(json!({"type": "null", "path": "x.mp4"}))),
        codes::UNKNOWN_FIELD,
        Some("output.path"),
    );
    assert_err(
        parse(&out(json!({"type": "null", "url": "rtmp://h/a"}))),
        codes::UNKNOWN_FIELD,
        Some("output.url"),
    );
    assert_err(
        parse(&out(json!({"type": "file", "url": "rtmp://h/a"}))),
        codes::UNKNOWN_FIELD,
        Some("output.url"),
    );
    assert_err(
        parse(&out(json!({"type": "file"}))),
        codes::MISSING_FIELD,
        Some("output.path"),
    );
    assert_err(
        parse(&out(json!({"type": "rtmp"}))),
        codes::MISSING_FIELD,
        Some("output.url"),
    );
    assert_err(
        parse(&out(
            json!({"type": "rtmp", "url": "rtmp://h/a", "path": "x.flv"}),
        )),
        codes::UNKNOWN_FIELD,
        Some("output.path"),
    );
}

#[test]
fn rtmp_url_rules() {
    let out = |url: &str| with(base(), "output", json!({"type": "rtmp", "url": url}));
    for ok in [
        "rtmp://live.example.com/app/streamkey",
        "rtmps://live.example.com:443/app/key?token=abc",
        "rtmp://127.0.0.1:1935/live/x",
        "rtmp://user:pass@[::1]/live/x",
    ] {
        assert_eq!(
            parse(&out(ok)).map(|s| s.output),
            Ok(Output::Rtmp {
                url: ok.to_string()
            }),
            "{ok}"
        );
    }
    // The scheme in any case reaches FFmpeg lower-cased (its protocol
    // names are case-sensitive); the rest as sent.
    assert_eq!(
        parse(&out("Rtmp://H/App")).map(|s| s.output),
        Ok(Output::Rtmp {
            url: "rtmp://H/App".to_string()
        })
    );
    let long = format!("rtmp://h/{}", "a".repeat(MAX_URL_LEN));
    for bad in [
        "http://example.com/live",
        "file:///etc/passwd",
        "rtmp:///app/key",
        "rtmp:app",
        "rtmp://",
        "not a url",
        "rtmp://host/app live=1",
        "rtmp://host/app\tkey",
        "rtmp://host/app\nkey",
        "rtmp://host/app\u{7f}",
        " rtmp://host/app",
        "",
        long.as_str(),
    ] {
        assert_err(parse(&out(bad)), codes::INVALID_FIELD, Some("output.url"));
    }
    // FLV in FFmpeg 5.1 carries h264 only.
    for codec in ["h265", "vp9", "av1"] {
        let v = with(out("rtmp://h/app/k"), "codec", json!(codec));
        assert_err(parse(&v), codes::INVALID_FIELD, Some("output.url"));
    }
}

#[test]
fn priority_and_retries() {
    for p in Priority::ALL {
        let v = with(base(), "priority", json!(p.as_str()));
        assert_eq!(parse(&v).map(|s| s.priority), Ok(p));
    }
    for bad in [json!("urgent"), json!("HIGH"), json!(1)] {
        assert_err(
            parse(&with(base(), "priority", bad)),
            codes::INVALID_FIELD,
            Some("priority"),
        );
    }
    for ok in [0, 10] {
        assert_eq!(
            parse(&with(base(), "max_retries", json!(ok))).map(|s| s.max_retries),
            Ok(ok)
        );
    }
    for bad in [json!(11), json!(-1), json!("3"), json!(1.5)] {
        assert_err(
            parse(&with(base(), "max_retries", bad)),
            codes::INVALID_FIELD,
            Some("max_retries"),
        );
    }
}

#[test]
fn resource_limit_rules() {
    let cases: [(&str, u64, u64); 4] = [
        ("max_cpu_percent", 1, 25_600),
        ("max_memory_mb", 16, 1_048_576),
        ("timeout_s", 1, 604_800),
        ("stall_timeout_s", 1, 86_400),
    ];
    for (name, lo, hi) in cases {
        let field = format!("resource_limits.{name}");
        for ok in [lo, hi] {
            let v = with(base(), "resource_limits", json!({ name: ok }));
            let l = parse(&v).expect("valid").resource_limits;
            let got = match name {
                "max_cpu_percent" => l.max_cpu_percent.map(u64::from),
                "max_memory_mb" => l.max_memory_mb,
                "timeout_s" => l.timeout_s,
                _ => l.stall_timeout_s,
            };
            assert_eq!(got, Some(ok), "{field}");
        }
        for bad in [
            json!(lo - 1),
            json!(hi + 1),
            json!(-1),
            json!("10"),
            json!(1.5),
        ] {
            let v = with(base(), "resource_limits", json!({ name: bad }));
            assert_err(parse(&v), codes::INVALID_FIELD, Some(&field));
        }
    }
    let v = with(base(), "resource_limits", json!({}));
    assert_eq!(
        parse(&v).map(|s| s.resource_limits),
        Ok(ResourceLimits::default())
    );
    let v = with(base(), "resource_limits", json!(5));
    assert_err(parse(&v), codes::INVALID_FIELD, Some("resource_limits"));
}
