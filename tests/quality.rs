//! The quality pass, end to end: a real `ffrtmp-node --role standalone`,
//! real FFmpeg encodes, then FFmpeg's own `psnr` and `ssim` filters and
//! Netflix libvmaf (`ffrtmp-vmaf`, built from `runtime/vmaf/`) comparing
//! each output with its reference (the regenerated `testsrc2` source, or
//! the input file).
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

const LONG: Duration = Duration::from_secs(180);

fn finished(node: &Node, id: &str) -> Value {
    node.wait_state(id, &["succeeded", "failed", "cancelled", "timed_out"], LONG)
}

/// A 320x180 h264 encode of 2 s of testsrc2 at `kbps`, asking for `metrics`.
fn job(kbps: u32, metrics: Value) -> Value {
    json!({
        "scenario": "480p30-h264",
        "width": 320, "height": 180, "fps": 15,
        "bitrate": kbps,
        "input": {"type": "testsrc", "duration_s": 2},
        "output": {"type": "null"},
        "quality": {"metrics": metrics}
    })
}

fn mean(job: &Value, metric: &str) -> f64 {
    job["result"]["quality"][metric]["mean"]
        .as_f64()
        .unwrap_or_else(|| panic!("no {metric} mean: {job}"))
}

#[track_caller]
fn assert_score(job: &Value, metric: &str, range: (f64, f64), frames: u64) {
    let s = &job["result"]["quality"][metric];
    let m = mean(job, metric);
    assert!(
        m >= range.0 && m <= range.1,
        "{metric} {m} outside {range:?}: {job}"
    );
    let min = s["min"].as_f64().expect("min");
    let p5 = s["p5"].as_f64().expect("p5");
    assert!(
        min <= p5 && min <= m,
        "{metric}: min {min} p5 {p5} mean {m}"
    );
    assert_eq!(s["frames"].as_u64(), Some(frames), "{metric} frames: {job}");
}

fn with_vmaf() -> NodeOpts {
    let bin = common::vmaf::vmaf_bin();
    NodeOpts {
        extra: vec!["--vmaf-bin".into(), bin.display().to_string()],
        ..NodeOpts::default()
    }
}

#[test]
fn scores_are_plausible_and_a_worse_encode_scores_lower() {
    let opts = with_vmaf();
    let _g = serial();
    let node = Node::start("quality-rank", opts);
    let low = node.submit(job(40, json!(["ssim", "vmaf", "psnr"])));
    let high = node.submit(job(1500, json!(["psnr", "ssim", "vmaf"])));
    let (low, high) = (finished(&node, &low), finished(&node, &high));
    for j in [&low, &high] {
        assert_eq!(j["state"], "succeeded", "{j}");
        eprintln!("quality: {}", j["result"]["quality"]);
        let q = &j["result"]["quality"];
        assert!(q["error"].is_null(), "{j}");
        // 2 s at 15 fps: every frame compared.
        assert_score(j, "psnr", (15.0, 100.0), 30);
        assert_score(j, "ssim", (0.3, 1.0), 30);
        assert_score(j, "vmaf", (1.0, 100.0), 30);
        assert!(q["wall_s"].as_f64().unwrap_or(0.0) > 0.0, "{j}");
        // The pass's energy is its own, beside the encode's.
        if !j["energy"].is_null() {
            assert!(q["quality_energy_joules"].as_f64().is_some(), "{j}");
            assert!(q["energy_source"].as_str().is_some(), "{j}");
        }
    }
    assert!(
        mean(&low, "psnr") < mean(&high, "psnr"),
        "40 kbit/s scores below 1500 kbit/s: {} vs {}",
        mean(&low, "psnr"),
        mean(&high, "psnr")
    );
    assert!(mean(&low, "ssim") < mean(&high, "ssim"));
    // Every frame is compared with its own reference frame: paired by
    // timestamp, the Matroska scratch file's rounded ones matched some
    // frames with a neighbour (~22 dB at this bitrate).
    let worst = high["result"]["quality"]["psnr"]["min"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(worst > 35.0, "worst frame {worst} dB: {high}");
    assert!(
        mean(&low, "vmaf") + 10.0 < mean(&high, "vmaf"),
        "VMAF ranks them apart: {} vs {}",
        mean(&low, "vmaf"),
        mean(&high, "vmaf")
    );
    // The scratch files of the `null` outputs had no name and are gone:
    // nothing in the node's work dir, nothing under the media root.
    let count = |d: &Path| std::fs::read_dir(d).map(|d| d.count()).unwrap_or(0);
    assert!(node.data_dir().join("work").is_dir());
    assert_eq!(count(&node.data_dir().join("work")), 0);
    assert_eq!(count(&node.media), 0);
}

fn make_mp4(path: &Path) {
    lavfi_clip(
        path,
        "testsrc2=size=640x360:rate=25:duration=1",
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-qp",
            "0",
            "-f",
            "mp4",
        ],
    );
}

#[test]
fn a_file_output_is_compared_with_its_input_file() {
    let opts = with_vmaf();
    let _g = serial();
    let node = Node::start("quality-file", opts);
    make_mp4(&node.media.join("in.mp4"));
    let id = node.submit(json!({
        "scenario": "480p30-h264",
        "width": 320, "height": 180, "fps": 25,
        "bitrate": 800,
        "input": {"type": "file", "path": "in.mp4"},
        "output": {"type": "file", "path": "out.mkv"},
        "quality": {"metrics": ["psnr", "vmaf"]}
    }));
    let j = finished(&node, &id);
    assert_eq!(j["state"], "succeeded", "{j}");
    assert!(j["result"]["quality"]["error"].is_null(), "{j}");
    // The reference is scaled to 320x180 like the encode: a close match.
    assert_score(&j, "psnr", (25.0, 100.0), 25);
    assert_score(&j, "vmaf", (60.0, 100.0), 25);
    assert!(j["result"]["quality"]["ssim"].is_null(), "not asked: {j}");
    // The output was published.
    assert!(node.media.join("out.mkv").is_file());
}

/// The metrics the node's worker advertises, once it is linked.
fn metrics_of(node: &Node) -> Value {
    wait_for("the worker in /v1/nodes", LONG, || {
        let (status, body) = node.get("/v1/nodes");
        assert_eq!(status, 200, "{body}");
        let m = body["nodes"][0]["capabilities"]["metrics"].clone();
        (!m.is_null()).then_some(m)
    })
}

#[test]
fn a_failed_quality_pass_keeps_the_encode_success() {
    // A copy of ffrtmp-vmaf that passes the node's self-test at start, then
    // is gone when the job's pass wants it: the pass fails.
    let bin = common::vmaf::vmaf_bin();
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("ffrtmp-vmaf");
    std::fs::copy(&bin, &copy).expect("copy ffrtmp-vmaf");
    let opts = NodeOpts {
        extra: vec!["--vmaf-bin".into(), copy.display().to_string()],
        ..NodeOpts::default()
    };
    let node = Node::start("quality-fail", opts);
    assert_eq!(metrics_of(&node), json!(["vmaf", "psnr", "ssim"]));
    std::fs::remove_file(&copy).expect("remove the copy");
    let id = node.submit(job(300, json!(["vmaf", "psnr"])));
    let j = finished(&node, &id);
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["result"]["frames"].as_u64(), Some(30), "{j}");
    let q = &j["result"]["quality"];
    let err = q["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {j}"));
    assert!(
        err.starts_with("vmaf: could not start ffrtmp-vmaf"),
        "{err}"
    );
    assert!(q["vmaf"].is_null(), "{j}");
    // What could be measured still is; the encode keeps its own energy.
    assert_score(&j, "psnr", (15.0, 100.0), 30);
    if !j["energy"].is_null() {
        assert!(j["energy"]["energy_joules"].as_f64().is_some(), "{j}");
    }
}

#[test]
fn a_vmaf_job_waits_for_a_node_that_computes_vmaf() {
    let _g = serial();
    // No ffrtmp-vmaf where the node is told to look: it does not offer VMAF.
    let opts = NodeOpts {
        extra: vec!["--vmaf-bin".into(), "/nonexistent/ffrtmp-vmaf".into()],
        ..NodeOpts::default()
    };
    let node = Node::start("quality-wait", opts);
    assert_eq!(metrics_of(&node), json!(["psnr", "ssim"]));
    let mut vmaf_job = job(300, json!(["vmaf"]));
    vmaf_job["priority"] = json!("live");
    let waiting = node.submit(vmaf_job);
    // Submitted after it, at a lower priority: placed all the same.
    let psnr = node.submit(job(300, json!(["psnr"])));
    let done = finished(&node, &psnr);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(done["result"]["quality"]["psnr"]["mean"].as_f64().is_some());
    let (_, plain) = node.post_json("/v1/jobs", &small_job(0.5));
    let plain = plain["id"].as_str().expect("id").to_string();
    assert_eq!(finished(&node, &plain)["state"], "succeeded");
    // Two jobs were placed since; the VMAF job was never.
    let w = node.job(&waiting);
    assert_eq!(w["state"], "queued", "{w}");
    assert!(w["attempts"].as_array().is_none_or(|a| a.is_empty()), "{w}");
}

/// The command name of a process (`/proc/<pid>/comm`).
fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn a_cancel_stops_the_quality_pass_and_the_encode_stands() {
    let opts = with_vmaf();
    let _g = serial();
    let node = Node::start("quality-cancel", opts);
    // A quick encode, then a long comparison (VMAF on 1,800 720p frames).
    let id = node.submit(json!({
        "scenario": "720p30-h264",
        "preset": "ultrafast",
        "input": {"type": "testsrc", "duration_s": 60},
        "output": {"type": "null"},
        "quality": {"metrics": ["vmaf", "psnr", "ssim"]}
    }));
    // The pass runs once ffrtmp-vmaf is in the job's cgroup.
    wait_for("ffrtmp-vmaf in the job's cgroup", LONG, || {
        node.job_pids(&id)
            .into_iter()
            .any(|p| comm(p) == "ffrtmp-vmaf")
            .then_some(())
    });
    let (status, body) = node.post(&format!("/v1/jobs/{id}/cancel"));
    assert_eq!(status, 202, "{body}");
    let j = finished(&node, &id);
    // The encode had succeeded: it stands, with its frames and energy.
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["result"]["frames"].as_u64(), Some(1800), "{j}");
    let q = &j["result"]["quality"];
    let err = q["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {j}"));
    assert_eq!(err, "the quality pass was stopped: cancelled", "{j}");
    assert!(q["vmaf"].is_null() && q["psnr"].is_null(), "{j}");
    // Nothing of the pass is left: no process, no cgroup.
    assert_eq!(node.job_pids(&id), Vec::<i32>::new());
    assert_eq!(node.job_cgroups(&id), Vec::<std::path::PathBuf>::new());
}
