use super::*;
use proptest::prelude::*;
use serde_json::json;

fn roots() -> MediaRoots {
    MediaRoots::new(&[]).expect("empty roots")
}

fn expand(v: &Value, max: u64) -> Result<Expanded, FieldError> {
    parse_experiment(v.to_string().as_bytes(), &roots(), max)
}

fn base() -> Value {
    json!({
        "scenario": "720p30-h264",
        "input": {"type": "testsrc", "duration_s": 2},
        "output": {"type": "null"}
    })
}

#[track_caller]
fn refused(v: Value, code: &str, field: &str) -> FieldError {
    match expand(&v, DEFAULT_MAX_JOBS) {
        Ok(e) => panic!("expected {code} on {field}, got {} jobs", e.jobs.len()),
        Err(e) => {
            assert_eq!(
                (e.code.as_str(), e.field.as_deref()),
                (code, Some(field)),
                "{e:?}"
            );
            e
        }
    }
}

#[test]
fn a_matrix_expands_in_the_documented_order() {
    let e = expand(
        &json!({
            "name": "h264-vs-h265",
            "base": base(),
            "matrix": {"preset": ["ultrafast", "medium"], "codec": ["h264", "h265"], "bitrate": [500, "1M", 2000]},
            "repeat": 2,
            "labels": {"study": "codecs"}
        }),
        DEFAULT_MAX_JOBS,
    )
    .expect("valid");
    assert_eq!(e.jobs.len(), 2 * 2 * 3 * 2);
    // Keys sorted: bitrate, codec, preset; preset varies fastest.
    let first: Vec<(u32, &str, &str)> = e.jobs[..4]
        .iter()
        .map(|j| {
            (
                j.encode.bitrate_kbps,
                j.encode.codec.as_str(),
                j.encode.preset.as_str(),
            )
        })
        .collect();
    assert_eq!(
        first,
        [
            (500, "h264", "ultrafast"),
            (500, "h264", "medium"),
            (500, "h265", "ultrafast"),
            (500, "h265", "medium")
        ]
    );
    assert_eq!(e.jobs[4].encode.bitrate_kbps, 1000);
    // Round 2 repeats round 1.
    for i in 0..12 {
        assert_eq!(e.jobs[i], e.jobs[i + 12]);
    }
    let j = &e.jobs[5];
    assert_eq!(j.experiment.as_deref(), Some("h264-vs-h265"));
    assert_eq!(j.labels["study"], "codecs");
    assert_eq!(j.labels["bitrate"], "\"1M\"".trim_matches('"'));
    assert_eq!(j.labels["codec"], "h264");
    assert_eq!(j.labels["preset"], "medium");
    assert_eq!(j.labels.len(), 4);
}

#[test]
fn nested_fields_and_no_matrix() {
    let e = expand(
        &json!({"name": "cpu", "base": base(), "matrix": {"resource_limits.max_cpu_percent": [50, 100, 200]}}),
        DEFAULT_MAX_JOBS,
    )
    .expect("valid");
    let got: Vec<Option<u32>> = e
        .jobs
        .iter()
        .map(|j| j.resource_limits.max_cpu_percent)
        .collect();
    assert_eq!(got, [Some(50), Some(100), Some(200)]);
    assert_eq!(e.jobs[2].labels["resource_limits.max_cpu_percent"], "200");
    let one = expand(
        &json!({"name": "one", "base": base(), "repeat": 3}),
        DEFAULT_MAX_JOBS,
    )
    .expect("valid");
    assert_eq!(one.jobs.len(), 3);
}

#[test]
fn bad_input_names_the_field() {
    let with = |k: &str, v: Value| {
        let mut e = json!({"name": "x", "base": base(), "matrix": {"preset": ["fast"]}});
        e[k] = v;
        e
    };
    refused(with("extra", json!(1)), codes::UNKNOWN_FIELD, "extra");
    refused(
        with("name", json!("Bad Name")),
        codes::INVALID_FIELD,
        "name",
    );
    refused(with("name", json!("a/b")), codes::INVALID_FIELD, "name");
    refused(json!({"base": base()}), codes::MISSING_FIELD, "name");
    refused(json!({"name": "x"}), codes::MISSING_FIELD, "base");
    refused(with("repeat", json!(0)), codes::INVALID_FIELD, "repeat");
    refused(
        with("labels", json!({"experiment": "y"})),
        codes::INVALID_FIELD,
        "labels.experiment",
    );
    refused(
        with("labels", json!({"a": 1})),
        codes::INVALID_FIELD,
        "labels.a",
    );
    refused(
        with("matrix", json!({"preset": []})),
        codes::INVALID_FIELD,
        "matrix.preset",
    );
    refused(
        with("matrix", json!({"preset": "fast"})),
        codes::INVALID_FIELD,
        "matrix.preset",
    );
    refused(
        with(
            "matrix",
            json!({"preset": ["fast", "medium", "slow", "warp"]}),
        ),
        codes::INVALID_FIELD,
        "matrix.preset[3]",
    );
    refused(
        with("matrix", json!({"colour": ["red"]})),
        codes::UNKNOWN_FIELD,
        "matrix.colour[0]",
    );
    refused(
        with("matrix", json!({"labels.a": ["x"]})),
        codes::INVALID_FIELD,
        "matrix.labels.a",
    );
    refused(
        with(
            "matrix",
            json!({"resource_limits": [{}], "resource_limits.timeout_s": [5]}),
        ),
        codes::INVALID_FIELD,
        "matrix.resource_limits.timeout_s",
    );
    let mut b = base();
    b["width"] = json!(7);
    refused(with("base", b), codes::INVALID_FIELD, "base.width");
    let mut b = base();
    b["output"] = json!({"type": "rtmp", "url": "rtmp://127.0.0.1/live/x"});
    refused(with("base", b), codes::INVALID_FIELD, "base.output");
}

#[test]
fn the_bound_is_checked_before_any_job_is_built() {
    // 10^6 combinations of an invalid preset: refused for the count
    // (not the preset), so nothing was expanded.
    let many: Vec<Value> = (0..1000).map(|i| json!(format!("p{i}"))).collect();
    let e = json!({"name": "big", "base": base(), "matrix": {"preset": many.clone(), "fps": many}});
    let err = expand(&e, DEFAULT_MAX_JOBS).expect_err("too many");
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        (TOO_MANY_JOBS, Some("matrix"))
    );
    // Overflowing products are refused too.
    assert_eq!(job_count(&[usize::MAX, usize::MAX], 2), None);
    let ok = json!({"name": "b", "base": base(), "matrix": {"fps": [24, 25, 30]}, "repeat": 2});
    assert_eq!(expand(&ok, 6).expect("at the bound").jobs.len(), 6);
    let err = expand(&ok, 5).expect_err("over the bound");
    assert_eq!(err.code, TOO_MANY_JOBS);
}

proptest! {
    #[test]
    fn counts_are_the_product_times_repeat_and_expansion_is_deterministic(
        fps in proptest::collection::vec(1u32..=60, 1..4),
        bitrates in proptest::collection::vec(100u32..=5000, 1..4),
        presets in proptest::sample::subsequence(vec!["ultrafast", "veryfast", "medium", "slow"], 1..4),
        repeat in 1u64..4,
    ) {
        let e = json!({"name": "p", "base": base(), "repeat": repeat,
            "matrix": {"fps": fps, "bitrate": bitrates, "preset": presets}});
        let a = expand(&e, DEFAULT_MAX_JOBS).expect("valid");
        let b = expand(&e, DEFAULT_MAX_JOBS).expect("valid");
        prop_assert_eq!(a.jobs.len() as u64, fps.len() as u64 * bitrates.len() as u64 * presets.len() as u64 * repeat);
        prop_assert_eq!(&a.jobs, &b.jobs);
        // Every combination appears exactly `repeat` times.
        let mut seen = std::collections::BTreeMap::new();
        for j in &a.jobs {
            *seen.entry((j.encode.fps, j.encode.bitrate_kbps, j.encode.preset.clone())).or_insert(0u64) += 1;
        }
        let distinct = |v: &[u32]| v.iter().collect::<std::collections::BTreeSet<_>>().len() as u64;
        prop_assert_eq!(seen.len() as u64, distinct(&fps) * distinct(&bitrates) * presets.len() as u64);
    }

    #[test]
    fn one_invalid_value_refuses_the_whole_experiment(bad in 0usize..5) {
        let mut widths: Vec<Value> = (0..5).map(|i| json!(320 + 2 * i)).collect();
        widths[bad] = json!(321);
        let e = json!({"name": "w", "base": base(), "matrix": {"width": widths}});
        let err = expand(&e, DEFAULT_MAX_JOBS).expect_err("odd width");
        prop_assert_eq!(err.field, Some(format!("matrix.width[{bad}]")));
    }
}

#[test]
fn the_schema_names_exactly_the_fields_the_parser_takes() {
    let s = serde_json::to_value(<ExperimentRequest as utoipa::PartialSchema>::schema())
        .expect("serialises");
    let mut names: Vec<&str> = s["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    names.sort();
    let mut fields = FIELDS.to_vec();
    fields.sort();
    assert_eq!(names, fields);
    assert_eq!(s["additionalProperties"], false);
    assert_eq!(s["properties"]["repeat"]["maximum"], MAX_REPEAT);
}

#[test]
fn combination_is_an_odometer() {
    assert_eq!(combination(&[2, 3], 0), [0, 0]);
    assert_eq!(combination(&[2, 3], 1), [0, 1]);
    assert_eq!(combination(&[2, 3], 3), [1, 0]);
    assert_eq!(combination(&[2, 3], 5), [1, 2]);
    assert_eq!(combination(&[], 0), Vec::<usize>::new());
}
