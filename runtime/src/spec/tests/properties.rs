//! Properties, and the decoder under attack.

use super::*;

fn json_value() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "scenario",
        "input",
        "output",
        "type",
        "path",
        "url",
        "duration_s",
        "width",
        "height",
        "fps",
        "codec",
        "bitrate",
        "preset",
        "priority",
        "resource_limits",
        "max_cpu_percent",
        "timeout_s",
        "max_retries",
        "zzz",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[ -~]{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "testsrc",
            "file",
            "null",
            "rtmp",
            "h264",
            "av1",
            "1080p60-h265",
            "6M",
            "../x",
            "rtmp://h/a",
            "in.mp4",
            "x.webm",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((keys.clone(), inner), 0..8).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_job_request(&body, &no_roots());
    }

    #[test]
    fn arbitrary_json_never_panics(v in json_value()) {
        let f = fixture_light();
        let r = parse_job_request(v.to_string().as_bytes(), &f);
        if let Err(e) = r {
            prop_assert!(!e.code.is_empty() && !e.message.is_empty());
        }
    }

    #[test]
    fn valid_shapes_round_trip(
        w in 8u32..=3840, h in 8u32..=2160, fps in 1u32..=240,
        codec in prop::sample::select(Codec::ALL.to_vec()),
        kbps in 1u32..=200_000,
        d in 0.001f64..=86_400.0,
    ) {
        let (w, h) = (w * 2, h * 2);
        let v = json!({
            "input": {"type": "testsrc", "duration_s": d},
            "output": {"type": "null"},
            "width": w, "height": h, "fps": fps, "codec": codec.as_str(), "bitrate": format!("{kbps}k"),
        });
        let spec = parse(&v);
        if codec == Codec::Av1 && (w < 64 || h < 64) {
            prop_assert!(spec.is_err());
        } else {
            let spec = spec.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(spec.encode.width, w);
            prop_assert_eq!(spec.encode.height, h);
            prop_assert_eq!(spec.encode.fps, fps);
            prop_assert_eq!(spec.encode.bitrate_kbps, kbps);
            // serde_json's default float parsing may be off by an ulp.
            match spec.input {
                Input::Testsrc { duration_s } => prop_assert!((duration_s - d).abs() <= d * 1e-12),
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }

    #[test]
    fn bitrate_strings_round_trip(kbps in 1u64..=200_000) {
        prop_assert_eq!(parse_bitrate_str(&format!("{kbps}k")), Some(kbps));
        let m = format!("{}.{:03}M", kbps / 1000, kbps % 1000);
        prop_assert_eq!(parse_bitrate_str(&m), Some(kbps));
    }
}

/// Found by the `job_spec_parse` fuzz target: an empty key gave a
/// refusal whose `field` was empty.
#[test]
fn an_empty_key_is_named() {
    let mut v = base();
    v[""] = json!(1280);
    let e = assert_err(parse(&v), codes::UNKNOWN_FIELD, Some("\"\""));
    assert_eq!(e.message, "unknown field `\"\"`");
    let mut v = base();
    v["input"][""] = json!(1);
    assert_err(parse(&v), codes::UNKNOWN_FIELD, Some("input.\"\""));
}

/// What every accepted spec satisfies, whatever body it came from.
fn spec_invariants(spec: &JobSpec, roots: &MediaRoots) -> Result<(), TestCaseError> {
    let e = &spec.encode;
    prop_assert!((WIDTH_RANGE.0..=WIDTH_RANGE.1).contains(&e.width) && e.width % 2 == 0);
    prop_assert!((HEIGHT_RANGE.0..=HEIGHT_RANGE.1).contains(&e.height) && e.height % 2 == 0);
    prop_assert!((FPS_RANGE.0..=FPS_RANGE.1).contains(&e.fps));
    prop_assert!((BITRATE_KBPS_RANGE.0..=BITRATE_KBPS_RANGE.1).contains(&e.bitrate_kbps));
    prop_assert!(
        presets(e.codec).contains(&e.preset.as_str()),
        "preset {}",
        e.preset
    );
    if e.codec == Codec::Av1 {
        prop_assert!(e.width >= AV1_MIN_DIMENSION && e.height >= AV1_MIN_DIMENSION);
    }
    if let Some(name) = &spec.scenario {
        prop_assert!(scenario(name).is_some());
    }
    prop_assert!(spec.max_retries <= MAX_RETRIES);
    let l = &spec.resource_limits;
    prop_assert!(l.max_cpu_percent.is_none_or(|v| (1..=25_600).contains(&v)));
    prop_assert!(l
        .max_memory_mb
        .is_none_or(|v| (16..=1_048_576).contains(&v)));
    prop_assert!(l.timeout_s.is_none_or(|v| (1..=604_800).contains(&v)));
    prop_assert!(l.stall_timeout_s.is_none_or(|v| (1..=86_400).contains(&v)));
    match &spec.input {
        Input::Testsrc { duration_s } => prop_assert!(
            duration_s.is_finite() && *duration_s > 0.0 && *duration_s <= MAX_TESTSRC_DURATION_S
        ),
        Input::File { path } => {
            prop_assert!(path.is_absolute() && roots.contains(path), "{:?}", path);
            prop_assert!(std::fs::metadata(path).is_ok_and(|m| m.is_file()));
        }
    }
    match &spec.output {
        Output::Null => {}
        Output::File { path } => {
            prop_assert!(path.is_absolute() && roots.contains(path), "{:?}", path);
            let ext = path.extension().and_then(|x| x.to_str()).unwrap_or("");
            let allowed = container_for_extension(ext).map(|(_, c)| c);
            prop_assert!(allowed.is_some_and(|c| c.contains(&e.codec)), "{:?}", path);
            prop_assert!(
                !matches!(&spec.input, Input::File { path: i } if i == path),
                "output is the input"
            );
        }
        Output::Rtmp { url } => {
            prop_assert_eq!(e.codec, Codec::H264);
            prop_assert!(url.len() <= MAX_URL_LEN);
            prop_assert!(
                url.starts_with("rtmp://") || url.starts_with("rtmps://"),
                "{}",
                url
            );
        }
    }
    Ok(())
}

const CODES: [&str; 7] = [
    codes::INVALID_JSON,
    codes::UNKNOWN_FIELD,
    codes::MISSING_FIELD,
    codes::INVALID_FIELD,
    codes::PATH_OUTSIDE_MEDIA_ROOT,
    codes::FILE_NOT_FOUND,
    codes::UNKNOWN_SCENARIO,
];

/// A refusal has a known code and a message, and names the field unless
/// the body as a whole is not a JSON object.
fn refusal_shape(e: &FieldError) -> Result<(), TestCaseError> {
    prop_assert!(CODES.contains(&e.code.as_str()), "code {}", e.code);
    prop_assert!(!e.message.is_empty());
    if e.code == codes::INVALID_JSON {
        prop_assert!(e.field.is_none(), "{:?}", e);
    } else {
        prop_assert!(e.field.as_deref().is_some_and(|f| !f.is_empty()), "{:?}", e);
    }
    Ok(())
}

fn accepted_or_refused(body: &[u8], roots: &MediaRoots) -> Result<(), TestCaseError> {
    match parse_job_request(body, roots) {
        Ok(spec) => spec_invariants(&spec, roots),
        Err(e) => refusal_shape(&e),
    }
}

/// Valid bodies to mutate, covering each input and output kind.
fn valid_bodies() -> Vec<Vec<u8>> {
    [
        base(),
        json!({
            "input": {"type": "file", "path": "in.mp4"},
            "output": {"type": "file", "path": "out.webm"},
            "width": 1280, "height": 720, "fps": 30, "codec": "vp9",
            "bitrate": "2.5M", "preset": "good", "priority": "high",
            "resource_limits": {"max_cpu_percent": 200, "max_memory_mb": 512,
                                "timeout_s": 60, "stall_timeout_s": 10},
            "max_retries": 2
        }),
        json!({
            "scenario": "1080p30-h264",
            "input": {"type": "testsrc", "duration_s": 1.5},
            "output": {"type": "rtmp", "url": "rtmp://127.0.0.1:1935/live/key"},
            "bitrate": 4500
        }),
    ]
    .iter()
    .map(|v| v.to_string().into_bytes())
    .collect()
}

/// A valid spec (within the fixture's root) and the body that asks for it.
fn valid_spec_body() -> impl Strategy<Value = Value> {
    (
        (8u32..=1920, 8u32..=1080, 1u32..=240),
        prop::sample::select(Codec::ALL.to_vec()),
        1u32..=200_000,
        prop::sample::select(Priority::ALL.to_vec()),
        0u32..=MAX_RETRIES,
        0usize..3,
        0usize..3,
        any::<prop::sample::Index>(),
    )
        .prop_map(
            |((w, h, fps), codec, kbps, prio, retries, input, output, pick)| {
                let (w, h) = (w.max(32) * 2, h.max(32) * 2);
                let mut v = json!({
                    "width": w, "height": h, "fps": fps, "codec": codec.as_str(),
                    "bitrate": kbps, "priority": prio.as_str(), "max_retries": retries,
                    "preset": *pick.get(presets(codec)),
                });
                v["input"] = match input {
                    0 => json!({"type": "file", "path": "in.mp4"}),
                    _ => json!({"type": "testsrc", "duration_s": 2.25}),
                };
                v["output"] = match (output, codec) {
                    (0, Codec::H264) => {
                        json!({"type": "rtmp", "url": "rtmps://example.org/app/k"})
                    }
                    (1, _) => json!({"type": "file", "path": "./out.mkv"}),
                    (2, _) => json!({"type": "file", "path": "out.mkv"}),
                    _ => json!({"type": "null"}),
                };
                v
            },
        )
}

proptest! {
    /// Arbitrary bytes up to 4 KiB, and the same as a JSON string or
    /// field value: refused with a well-formed error, or accepted only
    /// as a spec that passes every invariant.
    #[test]
    fn arbitrary_bodies_are_refused_or_valid(
        body in prop::collection::vec(any::<u8>(), 0..4096),
        key in prop::sample::select(vec!["scenario", "preset", "codec", "bitrate", "priority", "input", "output"]),
    ) {
        let roots = fixture_light();
        accepted_or_refused(&body, &roots)?;
        let s = String::from_utf8_lossy(&body).into_owned();
        accepted_or_refused(with(base(), key, Value::String(s.clone())).to_string().as_bytes(), &roots)?;
        let path = json!({"input": {"type": "file", "path": s.clone()}, "output": {"type": "file", "path": s},
                          "scenario": "720p30-h264"});
        accepted_or_refused(path.to_string().as_bytes(), &roots)?;
    }

    /// Valid bodies truncated, with bytes flipped or overwritten.
    #[test]
    fn mutated_valid_bodies_are_refused_or_valid(
        which in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 0..6),
    ) {
        let roots = fixture_light();
        let bodies = valid_bodies();
        let body = which.get(&bodies);
        prop_assert!(parse_job_request(body, &roots).is_ok());
        let cut_at = cut.index(body.len());
        // A strict prefix of a JSON object is never a JSON object.
        let e = parse_job_request(&body[..cut_at], &roots).err();
        prop_assert_eq!(e.map(|e| e.code), Some(codes::INVALID_JSON.to_string()));
        let mut m = body.clone();
        for (at, v, flip) in &edits {
            let i = at.index(m.len());
            if *flip { m[i] ^= 1 << (v % 8) } else { m[i] = *v }
        }
        accepted_or_refused(&m, &roots)?;
    }

    /// A valid request parses to the spec it asks for, which passes the
    /// invariants; file paths come back canonical.
    #[test]
    fn valid_requests_round_trip(v in valid_spec_body()) {
        let roots = fixture_light();
        let spec = parse_in(&v, &roots).map_err(|e| TestCaseError::fail(format!("{e:?} for {v}")))?;
        spec_invariants(&spec, &roots)?;
        prop_assert_eq!(Some(u64::from(spec.encode.width)), v["width"].as_u64());
        prop_assert_eq!(Some(u64::from(spec.encode.bitrate_kbps)), v["bitrate"].as_u64());
        prop_assert_eq!(Some(spec.priority.as_str()), v["priority"].as_str());
        prop_assert_eq!(Some(spec.encode.preset.as_str()), v["preset"].as_str());
        let root = &roots.roots()[0];
        match &spec.input {
            Input::File { path } => prop_assert_eq!(path, &root.join("in.mp4")),
            Input::Testsrc { duration_s } => prop_assert_eq!(*duration_s, 2.25),
        }
        if let Output::File { path } = &spec.output {
            prop_assert_eq!(path, &root.join("out.mkv"));
        }
    }
}

/// Roots for the property test: one shared temp dir with an input file.
fn fixture_light() -> MediaRoots {
    use std::sync::OnceLock;
    static DIR: OnceLock<Option<(tempfile::TempDir, MediaRoots)>> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().ok()?;
        std::fs::write(d.path().join("in.mp4"), b"x").ok()?;
        let roots = MediaRoots::new(&[d.path().to_path_buf()]).ok()?;
        Some((d, roots))
    })
    .as_ref()
    .map_or_else(no_roots, |(_, r)| r.clone())
}
