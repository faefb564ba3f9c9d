use std::collections::BTreeSet;

use serde_json::json;

use super::*;

fn schema() -> Value {
    serde_json::to_value(job_request()).expect("the schema serialises")
}

fn parse(v: &Value) -> Result<JobSpec, FieldError> {
    let roots = MediaRoots::new(&[]).expect("no roots");
    parse_job_request(v.to_string().as_bytes(), &roots)
}

/// A scenario and the encode fields too, so that either may be `null`.
fn base() -> Value {
    json!({
        "scenario": "720p30-h264",
        "width": 1280, "height": 720, "fps": 30, "codec": "h264",
        "input": {"type": "testsrc", "duration_s": 1},
        "output": {"type": "null"}
    })
}

/// `base()` with `value` at the dotted `field`.
fn with(field: &str, value: Value) -> Value {
    let mut v = base();
    let mut at = &mut v;
    let mut parts = field.split('.').peekable();
    while let Some(p) = parts.next() {
        if parts.peek().is_some() {
            if !at[p].is_object() {
                at[p] = json!({});
            }
            at = &mut at[p];
        } else {
            at[p] = value.clone();
        }
    }
    v
}

#[track_caller]
fn accepted(v: &Value) {
    if let Err(e) = parse(v) {
        panic!("{v} refused: {e:?}");
    }
}

#[track_caller]
fn refused_naming(v: &Value, field: &str) {
    match parse(v) {
        Ok(_) => panic!("{v} accepted"),
        Err(e) => assert_eq!(e.field.as_deref(), Some(field), "{v}: {e:?}"),
    }
}

/// The field names serde accepts for `T`, from its unknown-field message.
fn serde_fields<T: serde::de::DeserializeOwned>() -> BTreeSet<String> {
    let message = match serde_json::from_str::<T>(r#"{"\u0000": 0}"#) {
        Ok(_) => panic!("an unknown field was accepted"),
        Err(e) => e.to_string(),
    };
    let (_, expected) = message
        .split_once(", expected ")
        .unwrap_or_else(|| panic!("no field list in {message:?}"));
    // `a`, `b` or `c`: the names are every other backticked part.
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn keys(object: &Value) -> BTreeSet<String> {
    object["properties"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn variant_keys(one_of: &Value) -> BTreeSet<String> {
    one_of["oneOf"]
        .as_array()
        .expect("oneOf")
        .iter()
        .flat_map(keys)
        .collect()
}

#[test]
fn the_schema_names_exactly_the_fields_the_parser_takes() {
    let s = schema();
    let top = &s["allOf"][0];
    assert_eq!(keys(top), serde_fields::<RawRequest>());
    assert_eq!(top["additionalProperties"], false);
    let p = &top["properties"];
    assert_eq!(variant_keys(&p["input"]), serde_fields::<RawInput>());
    assert_eq!(variant_keys(&p["output"]), serde_fields::<RawOutput>());
    assert_eq!(keys(&p["resource_limits"]), serde_fields::<RawLimits>());
    assert_eq!(keys(&p["quality"]), serde_fields::<RawQuality>());
    // Not a vacuous comparison.
    assert!(serde_fields::<RawRequest>().contains("max_retries"));
}

#[test]
fn each_integer_bound_is_the_parsers_edge() {
    let s = schema();
    let p = &s["allOf"][0]["properties"];
    let mut fields: Vec<(String, Value)> = Vec::new();
    for (name, f) in p.as_object().expect("properties") {
        fields.push((name.clone(), f.clone()));
    }
    for (name, f) in p["resource_limits"]["properties"]
        .as_object()
        .expect("limits")
    {
        fields.push((format!("resource_limits.{name}"), f.clone()));
    }
    fields.push(("bitrate".into(), p["bitrate"]["anyOf"][0].clone()));
    let mut checked = 0;
    for (name, f) in fields {
        let (Some(lo), Some(hi)) = (f["minimum"].as_u64(), f["maximum"].as_u64()) else {
            continue;
        };
        accepted(&with(&name, json!(lo)));
        accepted(&with(&name, json!(hi)));
        refused_naming(&with(&name, json!(hi + 1)), &name);
        if lo > 0 {
            refused_naming(&with(&name, json!(lo - 1)), &name);
        }
        if f["multipleOf"] == 2 {
            refused_naming(&with(&name, json!(lo + 1)), &name);
        }
        checked += 1;
    }
    // width, height, fps, crf, max_retries, bitrate, four limits.
    assert_eq!(checked, 10);
}

#[test]
fn each_allowed_value_is_accepted_and_others_refused() {
    let s = schema();
    let p = &s["allOf"][0]["properties"];
    for name in ["scenario", "priority", "codec", "hardware", "pix_fmt"] {
        let values = p[name]["enum"].as_array().expect("enum");
        for v in values {
            accepted(&with(name, v.clone()));
        }
        refused_naming(&with(name, json!("nope")), name);
    }
    // An encoder is allowed with its codec.
    for e in encoders::ENCODERS {
        let mut body = with("encoder", json!(e.name));
        body["codec"] = json!(e.codec.as_str());
        accepted(&body);
    }
    let names: Vec<Value> = encoders::ENCODERS.map(|e| json!(e.name)).to_vec();
    assert_eq!(
        p["encoder"]["enum"].as_array().map(|a| &a[..a.len() - 1]),
        Some(&names[..])
    );
    refused_naming(&with("encoder", json!("nope")), "encoder");
    // A preset is allowed for one codec or encoder or another.
    for v in p["preset"]["enum"].as_array().expect("enum") {
        let ok = encoders::ENCODERS.iter().any(|e| {
            let mut body = with("preset", v.clone());
            body["codec"] = json!(e.codec.as_str());
            body["encoder"] = json!(e.name);
            parse(&body).is_ok()
        });
        assert!(ok, "preset {v} fits no encoder");
    }
    refused_naming(&with("preset", json!("nope")), "preset");
}

#[test]
fn null_is_absent_wherever_the_schema_allows_it() {
    let s = schema();
    let p = &s["allOf"][0]["properties"];
    let nullable = |f: &Value| {
        f["type"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("null")))
            || f["anyOf"]
                .as_array()
                .is_some_and(|a| a.contains(&json!({"type": "null"})))
    };
    let mut n = 0;
    for (name, f) in p.as_object().expect("properties") {
        if nullable(f) {
            accepted(&with(name, Value::Null));
            n += 1;
        } else {
            refused_naming(&with(name, Value::Null), name);
        }
    }
    for (name, f) in p["resource_limits"]["properties"]
        .as_object()
        .expect("limits")
    {
        assert!(nullable(f), "{name}");
        accepted(&with(&format!("resource_limits.{name}"), Value::Null));
    }
    assert!(n >= 10, "{n}");
    // The variants' `null` fields.
    for (field, body) in [
        (
            "input",
            json!({"type": "testsrc", "duration_s": 1, "path": null}),
        ),
        ("output", json!({"type": "null", "path": null, "url": null})),
        (
            "output",
            json!({"type": "rtmp", "url": "RTMPS://h/app", "path": null}),
        ),
    ] {
        accepted(&with(field, body));
    }
}

/// The branch of the codec rules for `codec` named as `codec`, and
/// the one for a scenario of that codec.
fn codec_branches(s: &Value, codec: Codec) -> (Value, Value) {
    let branches = s["allOf"][2]["anyOf"].as_array().expect("codec rules");
    let find = |title: String| {
        branches
            .iter()
            .find(|b| b["title"] == title.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("no branch {title}"))
    };
    (
        find(format!("codec {}", codec.as_str())),
        find(format!("a {} scenario", codec.as_str())),
    )
}

#[test]
fn the_codec_rules_are_the_parsers() {
    let s = schema();
    let all_presets = s["allOf"][0]["properties"]["preset"]["enum"]
        .as_array()
        .expect("presets")
        .clone();
    let media = tempfile::tempdir().expect("media root");
    let roots = MediaRoots::new(&[media.path().to_path_buf()]).expect("roots");
    let mut scenarios = BTreeSet::new();
    for codec in Codec::ALL {
        let (named, by_scenario) = codec_branches(&s, codec);
        for b in [&named, &by_scenario] {
            assert_eq!(b["properties"]["preset"], named["properties"]["preset"]);
        }
        let with_codec = |field: &str, v: Value| {
            let mut body = with(field, v);
            body["codec"] = json!(codec.as_str());
            body
        };
        // Presets.
        let allowed = named["properties"]["preset"]["enum"]
            .as_array()
            .expect("enum")
            .clone();
        for p in &all_presets {
            let ok = parse(&with_codec("preset", p.clone())).is_ok();
            assert_eq!(ok, allowed.contains(p), "{codec:?} preset {p}");
        }
        // The smallest frame.
        let min = named["properties"]["width"]["minimum"]
            .as_u64()
            .expect("minimum");
        assert_eq!(named["properties"]["height"]["minimum"], min);
        for dim in ["width", "height"] {
            accepted(&with_codec(dim, json!(min)));
            if min - 2 >= 16 {
                refused_naming(&with_codec(dim, json!(min - 2)), dim);
            }
        }
        // Output types and file extensions.
        let output = &named["properties"]["output"]["properties"];
        let types = output["type"]["enum"].as_array().expect("types").clone();
        let rtmp = with_codec("output", json!({"type": "rtmp", "url": "rtmp://h/a"}));
        assert_eq!(
            parse(&rtmp).is_ok(),
            types.contains(&json!("rtmp")),
            "{codec:?}"
        );
        let exts = extensions_for(codec);
        assert_eq!(output["path"]["pattern"], extension_pattern(&exts));
        for e in OUTPUT_EXTENSIONS {
            let body = with_codec("output", json!({"type": "file", "path": format!("o.{e}")}));
            let ok = parse_job_request(body.to_string().as_bytes(), &roots).is_ok();
            assert_eq!(ok, exts.contains(&e), "{codec:?} .{e}");
        }
        // The scenarios of this codec.
        for n in by_scenario["properties"]["scenario"]["enum"]
            .as_array()
            .expect("scenarios")
        {
            let n = n.as_str().expect("a name");
            assert_eq!(scenario(n).map(|p| p.codec), Some(codec), "{n}");
            scenarios.insert(n.to_string());
        }
    }
    assert_eq!(scenarios, scenario_names().into_iter().collect());
}

#[test]
fn the_output_extensions_are_the_containers_known() {
    for e in OUTPUT_EXTENSIONS {
        assert!(container_for_extension(e).is_some(), "{e}");
    }
    for e in ["avi", "mp3", "mpg", ""] {
        assert!(container_for_extension(e).is_none(), "{e}");
    }
}

#[test]
fn the_input_duration_bounds_are_the_parsers() {
    let s = schema();
    let d = &s["allOf"][0]["properties"]["input"]["oneOf"][0]["properties"]["duration_s"];
    let hi = d["maximum"].as_f64().expect("maximum");
    assert_eq!(d["exclusiveMinimum"], 0.0);
    let input = |v: f64| with("input", json!({"type": "testsrc", "duration_s": v}));
    accepted(&input(hi));
    accepted(&input(1e-6));
    refused_naming(&input(0.0), "input.duration_s");
    refused_naming(&input(hi + 1.0), "input.duration_s");
}

#[test]
fn a_scenario_or_all_four_encode_fields() {
    let encode = ["width", "height", "fps", "codec"];
    let s = schema();
    let branches = s["allOf"][1]["anyOf"].as_array().expect("anyOf").clone();
    assert_eq!(branches[0]["required"], json!(["scenario"]));
    assert_eq!(branches[1]["required"], json!(encode));
    let mut body = base();
    body["scenario"] = Value::Null;
    accepted(&body);
    for f in encode {
        let mut b = body.clone();
        b[f] = Value::Null;
        refused_naming(&b, f);
    }
    for f in ["input", "output"] {
        let mut b = base();
        b.as_object_mut().expect("object").remove(f);
        refused_naming(&b, f);
    }
}
