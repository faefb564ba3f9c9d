//! Hardware encoders on a machine without any: a real `ffrtmp-node --role
//! standalone` probes NVENC, QSV and VAAPI with real test encodes (Debian's
//! FFmpeg lists them; they fail without their device), shows them in
//! `/v1/nodes` as not available with FFmpeg's reason, and places jobs by
//! what the probes found. Nothing here is faked.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(120);

fn job(extra: Value) -> Value {
    let mut body = json!({
        "scenario": "480p30-h264",
        "width": 320, "height": 180,
        "input": {"type": "testsrc", "duration_s": 1},
        "output": {"type": "null"},
    });
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    body
}

#[test]
fn hardware_is_probed_for_real_and_jobs_wait_for_it_without_blocking_software() {
    let node = Node::start("hardware", NodeOpts::default());

    // The node tried every hardware encoder; without a device each failed,
    // with the reason FFmpeg gave.
    let (status, nodes) = node.get("/v1/nodes");
    assert_eq!(status, 200, "{nodes}");
    let caps = &nodes["nodes"][0]["capabilities"];
    let working: Vec<&str> = caps["encoders"]
        .as_array()
        .expect("encoders")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(working.contains(&"libx264"), "{caps}");
    let unavailable = caps["unavailable_encoders"]
        .as_array()
        .expect("unavailable");
    let reason = |name: &str| {
        unavailable
            .iter()
            .find(|u| u["encoder"] == name)
            .and_then(|u| u["reason"].as_str())
            .map(str::to_string)
    };
    let no_gpu = !Path::new("/dev/nvidiactl").exists();
    assert!(no_gpu, "this test is for a machine without an NVIDIA GPU");
    assert!(!working.contains(&"h264_nvenc"), "{caps}");
    let nvenc = reason("h264_nvenc").unwrap_or_else(|| panic!("h264_nvenc not listed: {caps}"));
    assert!(nvenc.contains("libcuda"), "FFmpeg's own words: {nvenc}");
    for name in ["hevc_nvenc", "h264_qsv", "h264_vaapi", "av1_vaapi"] {
        let r = reason(name).unwrap_or_else(|| panic!("{name} not listed: {caps}"));
        assert!(!r.is_empty() && !r.contains(" @ 0x"), "{name}: {r}");
    }

    // `required` (and an explicit NVENC encoder) wait; software jobs
    // submitted after them run.
    let required = node.submit(job(json!({"hardware": "required", "priority": "live"})));
    let named = node.submit(job(json!({"codec": "h265", "scenario": "480p30-h265",
        "encoder": "hevc_nvenc", "priority": "live"})));
    let software = node.submit(job(json!({"priority": "low"})));
    let preferred = node.submit(job(json!({"hardware": "preferred", "preset": "ultrafast"})));
    for id in [&software, &preferred] {
        let done = node.wait_state(id, &["succeeded", "failed"], LONG);
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["result"]["encoder"], "libx264", "{done}");
    }
    for id in [&required, &named] {
        let waiting = node.job(id);
        assert_eq!(waiting["state"], "queued", "no node can run it: {waiting}");
        assert_eq!(waiting["attempt"], 0, "never assigned: {waiting}");
    }

    // Bad input: 400 naming the field, nothing stored.
    let (_, before) = node.get("/v1/jobs");
    for (extra, field) in [
        (json!({"encoder": "h264_amf"}), "encoder"),
        (json!({"encoder": "hevc_nvenc"}), "encoder"),
        (json!({"hardware": "gpu"}), "hardware"),
        (json!({"encoder": "h264_nvenc", "crf": 0}), "crf"),
        (json!({"pix_fmt": "rgb48"}), "pix_fmt"),
        (json!({"encoder": "h264_vaapi", "preset": "p2"}), "preset"),
    ] {
        let (status, err) = node.post_json("/v1/jobs", &job(extra.clone()));
        assert_eq!(status, 400, "{extra} → {err}");
        assert_eq!(err["error"]["field"], field, "{extra} → {err}");
    }
    let (_, after) = node.get("/v1/jobs");
    assert_eq!(before["jobs"], after["jobs"], "nothing stored");

    for id in [&required, &named] {
        let (status, body) = node.post(&format!("/v1/jobs/{id}/cancel"));
        assert!(status < 300, "cancel {id}: {body}");
    }
}
