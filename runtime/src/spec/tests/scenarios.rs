//! Scenarios, labels and default bitrates.

use super::*;

#[test]
fn labels_are_parsed_and_bounded() {
    let spec = parse(&with(
        base(),
        "labels",
        json!({"team": "video", "run.id": "7-a_b", "9x": ""}),
    ))
    .expect("valid labels");
    assert_eq!(spec.labels.len(), 3);
    assert_eq!(spec.labels["team"], "video");
    assert!(parse(&with(base(), "labels", Value::Null))
        .expect("null")
        .labels
        .is_empty());
    assert!(parse(&base()).expect("absent").labels.is_empty());

    let refused = |labels: Value, field: &str| {
        assert_err(
            parse(&with(base(), "labels", labels)),
            codes::INVALID_FIELD,
            Some(field),
        );
    };
    refused(json!({"Team": "x"}), "labels.Team");
    refused(json!({"-a": "x"}), "labels.-a");
    refused(json!({"a b": "x"}), "labels.a b");
    refused(json!({"experiment": "x"}), "labels.experiment");
    refused(json!({"a/b": "x"}), "labels.a/b");
    let long_key = "k".repeat(64);
    refused(
        json!({ long_key.clone(): "x" }),
        &format!("labels.{long_key}"),
    );
    let ok_key = "k".repeat(63);
    parse(&with(base(), "labels", json!({ ok_key: "x".repeat(128) }))).expect("at the bounds");
    refused(json!({"a": "x".repeat(129)}), "labels.a");
    refused(json!({"a": "line\nbreak"}), "labels.a");
    refused(json!({"a": "\u{7f}"}), "labels.a");
    let many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    refused(Value::Object(many.clone()), "labels");
    let sixteen: serde_json::Map<String, Value> = many.into_iter().take(16).collect();
    parse(&with(base(), "labels", Value::Object(sixteen))).expect("16 labels");
    // Values must be strings, named at the innermost field.
    refused(json!({"a": 1}), "labels.a");
    refused(json!(["a"]), "labels");
}

proptest! {
    #[test]
    fn label_keys_accepted_are_exactly_the_documented_set(key in "[a-zA-Z0-9_./ -]{0,70}") {
        let documented = (1..=63).contains(&key.len())
            && key.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
            && key != "experiment";
        let r = parse(&with(base(), "labels", json!({ key.clone(): "v" })));
        prop_assert_eq!(r.is_ok(), documented, "{:?}: {:?}", key, r);
    }
}

#[test]
fn every_scenario_name_resolves() {
    let names = scenario_names();
    assert_eq!(names.len(), 20);
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 20);
    for name in &names {
        let p = scenario(name).unwrap_or_else(|| panic!("{name} does not resolve"));
        assert!(name.ends_with(p.codec.as_str()), "{name}: {p:?}");
        assert!(presets(p.codec).contains(&p.preset.as_str()));
        assert!(p.width % 2 == 0 && p.height % 2 == 0);
        assert!(p.bitrate_kbps >= 500 && p.bitrate_kbps <= 20_000, "{name}");
        // And a request naming only the scenario gets exactly these params.
        let spec = parse(&with(base(), "scenario", json!(name))).expect("valid");
        assert_eq!(spec.encode, p);
        assert_eq!(spec.scenario.as_deref(), Some(name.as_str()));
    }
    assert!(names.contains(&"1080p60-h265".to_string()));
}

#[test]
fn scenario_shapes_and_bitrates_are_sensible() {
    let p = scenario("1080p60-h265").expect("exists");
    assert_eq!(
        (p.width, p.height, p.fps, p.codec),
        (1920, 1080, 60, Codec::H265)
    );
    assert_eq!(
        scenario("480p30-vp9").map(|p| (p.width, p.height)),
        Some((854, 480))
    );
    assert_eq!(
        scenario("2160p30-av1").map(|p| (p.width, p.height)),
        Some((3840, 2160))
    );
    assert_eq!(scenario("1080p30-h264").map(|p| p.bitrate_kbps), Some(5000));
    let kbps = |n: &str| scenario(n).map(|p| p.bitrate_kbps).unwrap_or(0);
    for res in ["480p30", "720p30", "1080p30", "1080p60", "2160p30"] {
        let [h264, h265, vp9, av1] =
            ["h264", "h265", "vp9", "av1"].map(|c| kbps(&format!("{res}-{c}")));
        assert!(av1 < h265 && h265 < vp9 && vp9 < h264, "{res}");
    }
    for c in ["h264", "h265", "vp9", "av1"] {
        let seq = ["480p30", "720p30", "1080p30", "1080p60", "2160p30"]
            .map(|r| kbps(&format!("{r}-{c}")));
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "{c}: {seq:?}");
    }
    assert_eq!(
        scenario("1080p60-vp9").map(|p| p.preset),
        Some("realtime".into())
    );
    assert_eq!(scenario("1080p60-av1").map(|p| p.preset), Some("10".into()));
    assert_eq!(
        scenario("1080p60-h264").map(|p| p.preset),
        Some("veryfast".into())
    );
}

#[test]
fn unknown_scenarios() {
    for n in [
        "",
        "1080p60",
        "1080p60-h266",
        "1080p61-h264",
        "-h264",
        "1080p60-h264-x",
    ] {
        assert_eq!(scenario(n), None, "{n}");
    }
    assert_err(
        parse(&with(base(), "scenario", json!("4320p30-h264"))),
        codes::UNKNOWN_SCENARIO,
        Some("scenario"),
    );
    assert_err(
        parse(&with(base(), "scenario", json!(7))),
        codes::INVALID_FIELD,
        Some("scenario"),
    );
}

#[test]
fn default_bitrate_outside_scenarios_scales() {
    let b = |c, w, h, f| default_bitrate_kbps(c, w, h, f);
    assert!(b(Codec::H264, 640, 360, 30) < b(Codec::H264, 1280, 720, 30));
    assert!(b(Codec::H264, 1920, 1080, 120) > b(Codec::H264, 1920, 1080, 60));
    assert!(b(Codec::Av1, 1000, 1000, 25) < b(Codec::H264, 1000, 1000, 25));
    for c in Codec::ALL {
        for (w, h, f) in [(16, 16, 1), (7680, 4320, 240), (160, 90, 10)] {
            let k = b(c, w, h, f);
            assert!(
                (100..=BITRATE_KBPS_RANGE.1).contains(&k),
                "{c:?} {w}x{h}@{f}: {k}"
            );
        }
    }
}
