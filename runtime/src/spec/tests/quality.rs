//! Quality metrics.

use super::*;

#[test]
fn quality_metrics_are_parsed_distinct_and_sorted() {
    let v = with(
        base(),
        "quality",
        json!({"metrics": ["ssim", "vmaf", "psnr"]}),
    );
    let spec = parse(&v).expect("valid");
    assert_eq!(
        spec.quality,
        Some(QualitySpec {
            metrics: vec![
                QualityMetric::Vmaf,
                QualityMetric::Psnr,
                QualityMetric::Ssim
            ]
        })
    );
    let spec = parse(&with(base(), "quality", json!({"metrics": ["psnr"]}))).expect("valid");
    assert_eq!(
        spec.quality.map(|q| q.metrics),
        Some(vec![QualityMetric::Psnr])
    );
    // Absent or null: no quality pass.
    assert_eq!(parse(&base()).expect("valid").quality, None);
    assert_eq!(
        parse(&with(base(), "quality", Value::Null))
            .expect("valid")
            .quality,
        None
    );
}

#[test]
fn bad_quality_requests_name_the_field() {
    let q = |metrics: Value| with(base(), "quality", json!({ "metrics": metrics }));
    let e = assert_err(
        parse(&q(json!(["psnr", "vmaf2"]))),
        codes::INVALID_FIELD,
        Some("quality.metrics[1]"),
    );
    assert!(e.message.contains("vmaf2"), "{e:?}");
    assert_err(
        parse(&q(json!([]))),
        codes::INVALID_FIELD,
        Some("quality.metrics"),
    );
    let e = assert_err(
        parse(&q(json!(["ssim", "psnr", "ssim"]))),
        codes::INVALID_FIELD,
        Some("quality.metrics[2]"),
    );
    assert!(e.message.contains("twice"), "{e:?}");
    assert_err(
        parse(&q(json!(["psnr", 3]))),
        codes::INVALID_FIELD,
        Some("quality.metrics[1]"),
    );
    assert_err(
        parse(&with(
            base(),
            "quality",
            json!({"metrics": ["psnr"], "model": "x"}),
        )),
        codes::UNKNOWN_FIELD,
        Some("quality.model"),
    );
    assert_err(
        parse(&with(base(), "quality", json!({}))),
        codes::MISSING_FIELD,
        Some("quality.metrics"),
    );
    assert_err(
        parse(&with(base(), "quality", json!(["psnr"]))),
        codes::INVALID_FIELD,
        Some("quality"),
    );
    let rtmp = with(
        with(
            base(),
            "output",
            json!({"type": "rtmp", "url": "rtmp://127.0.0.1/live/x"}),
        ),
        "quality",
        json!({"metrics": ["psnr"]}),
    );
    assert_err(parse(&rtmp), codes::UNKNOWN_FIELD, Some("quality"));
}
