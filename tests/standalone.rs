//! One real `ffrtmp-node --role standalone`, real FFmpeg, real cgroups:
//! the vertical slice end to end through the HTTP API.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(120);

#[test]
fn job_runs_to_success_with_progress_and_results() {
    let _g = serial();
    let node = Node::start("success", NodeOpts::default());
    let id = node.submit(json!({
        "scenario": "720p30-h264",
        "width": 640, "height": 360,
        "input": {"type": "testsrc", "duration_s": 2},
        "output": {"type": "file", "path": "out.mp4"},
        "priority": "high"
    }));
    let job = node.wait_state(&id, &["succeeded", "failed"], LONG);
    assert_eq!(job["state"], "succeeded", "{job}");
    let r = &job["result"];
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["frames"], 60, "2 s at 30 fps: {r}");
    assert!(r["wall_s"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(r["avg_fps"].as_f64().unwrap_or(0.0) > 0.0);
    let bytes = r["output_bytes"].as_u64().expect("output bytes");
    let on_disk = std::fs::metadata(node.media.join("out.mp4"))
        .expect("output file")
        .len();
    assert_eq!(bytes, on_disk);
    assert!(r["output_bitrate_kbps"].as_f64().unwrap_or(0.0) > 0.0);
    assert_eq!(job["isolation"], host_isolation());
    if host_isolation() != "none" {
        assert!(
            r["cpu_s"].as_f64().unwrap_or(0.0) > 0.0,
            "cpu from the cgroup: {r}"
        );
        assert!(
            r["peak_memory_bytes"].as_u64().unwrap_or(0) > 0,
            "peak memory from the cgroup: {r}"
        );
    }
    assert_eq!(job["progress"]["percent"], 100.0, "{job}");
    assert_eq!(job["attempt"], 1);
    assert!(
        node.job_cgroups(&id).is_empty(),
        "the job's cgroup is gone after it finished"
    );
}

#[test]
fn progress_is_visible_while_running_and_events_stream_ends_with_final_state() {
    let _g = serial();
    let node = Node::start("events", NodeOpts::default());
    let id = node.submit(long_job(6.0));
    // Live progress in GET while running.
    let running = wait_for("live progress", LONG, || {
        let job = node.job(&id);
        let out_time = job["progress"]["out_time_s"].as_f64().unwrap_or(0.0);
        (job["state"] == "running" && out_time > 0.0).then_some(job)
    });
    let pct = running["progress"]["percent"].as_f64().expect("percent");
    assert!(pct > 0.0 && pct < 100.0, "{running}");
    assert!(running["progress"]["out_time_s"].as_f64().unwrap_or(0.0) > 0.0);

    // Server-sent events: progress events, then the terminal state, then end of stream.
    let client = reqwest::blocking::Client::builder()
        .timeout(LONG)
        .build()
        .expect("client");
    let resp = client
        .get(node.url(&format!("/v1/jobs/{id}/events")))
        .send()
        .expect("events");
    assert_eq!(resp.status().as_u16(), 200);
    let mut kinds = Vec::new();
    let mut last: Option<Value> = None;
    let mut kind = String::new();
    for line in BufReader::new(resp).lines() {
        let line = line.expect("sse line");
        if let Some(k) = line.strip_prefix("event:") {
            kind = k.trim().to_string();
        } else if let Some(d) = line.strip_prefix("data:") {
            kinds.push(kind.clone());
            last = Some(serde_json::from_str(d.trim()).expect("event json"));
        }
    }
    let last = last.expect("at least one event");
    assert_eq!(
        last["state"], "succeeded",
        "stream ends with the final state"
    );
    // The final event carries the job's energy (a labelled estimate on a
    // host without RAPL).
    assert!(
        last["energy"]["energy_joules"].as_f64().unwrap_or(0.0) > 0.0,
        "energy in the last event: {last}"
    );
    assert!(
        kinds.iter().any(|k| k == "progress"),
        "progress events: {kinds:?}"
    );
    assert_eq!(kinds.last().map(String::as_str), Some("state"));
}

#[test]
fn priorities_are_strict_and_fifo_within_one_with_one_slot() {
    let _g = serial();
    let node = Node::start(
        "priority",
        NodeOpts {
            slots: 1,
            ..NodeOpts::default()
        },
    );
    // Occupy the single slot so the rest queue up.
    let blocker = node.submit(long_job(4.0));
    node.wait_state(&blocker, &["running"], LONG);
    let mut submitted = Vec::new();
    for (i, prio) in ["batch", "low", "high", "live", "medium", "high", "live"]
        .iter()
        .enumerate()
    {
        let mut body = small_job(0.5);
        body["priority"] = json!(prio);
        let id = node.submit(body);
        submitted.push((id, *prio, i));
    }
    let mut done: Vec<(u64, String, &str, usize)> = Vec::new();
    for (id, prio, i) in &submitted {
        let job = node.wait_state(id, &["succeeded"], LONG);
        let started = job["attempts"][0]["started_ms"]
            .as_u64()
            .expect("started_ms");
        done.push((started, id.clone(), prio, *i));
    }
    done.sort();
    let order: Vec<(&str, usize)> = done.iter().map(|(_, _, p, i)| (*p, *i)).collect();
    assert_eq!(
        order,
        vec![
            ("live", 3),
            ("live", 6),
            ("high", 2),
            ("high", 5),
            ("medium", 4),
            ("low", 1),
            ("batch", 0)
        ],
        "strict priority, FIFO within a priority"
    );
}

#[test]
fn never_more_running_than_slots() {
    let _g = serial();
    let node = Node::start(
        "slots",
        NodeOpts {
            slots: 2,
            ..NodeOpts::default()
        },
    );
    let ids: Vec<String> = (0..5).map(|_| node.submit(small_job(1.5))).collect();
    let mut max_running = 0;
    wait_for("all jobs done", LONG, || {
        let (_, page) = node.get("/v1/jobs?state=running");
        let running = page["jobs"].as_array().map(|a| a.len()).unwrap_or(0);
        max_running = max_running.max(running);
        let (_, done) = node.get("/v1/jobs?state=succeeded");
        (done["jobs"].as_array().map(|a| a.len()).unwrap_or(0) == ids.len()).then_some(())
    });
    assert!(
        max_running <= 2,
        "at most 2 running at once, saw {max_running}"
    );
    assert_eq!(max_running, 2, "both slots were used");
}

#[test]
fn cpu_quota_of_half_a_core_holds_on_a_cpu_bound_encode() {
    let _g = serial();
    let node = Node::start("quota", NodeOpts::default());
    let mut body = long_job(5.0);
    body["resource_limits"] = json!({"max_cpu_percent": 50, "max_memory_mb": 1024});
    let id = node.submit(body);
    let running = node.wait_state(&id, &["running"], LONG);
    assert_eq!(running["isolation"], host_isolation());
    if host_isolation() == "none" {
        // Without cgroups there is no quota to show; the job must say so.
        return;
    }
    // The limits are in the kernel's files for this job's cgroup.
    let dirs = wait_for("the job's cgroup", Duration::from_secs(10), || {
        let d = node.job_cgroups(&id);
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(
        cpu_quota(&dirs),
        Some((50_000, 100_000)),
        "50% of a 100 ms period"
    );
    assert_eq!(memory_limit(&dirs), Some(1024 * 1024 * 1024));
    // Let it run a few seconds under the quota, then read what the cgroup measured.
    let job = node.wait_state(
        &id,
        &["succeeded", "failed", "cancelled"],
        Duration::from_secs(300),
    );
    assert_eq!(job["state"], "succeeded", "{job}");
    let cpu = job["result"]["cpu_s"].as_f64().expect("cpu_s");
    let wall = job["result"]["wall_s"].as_f64().expect("wall_s");
    let share = cpu / wall;
    println!(
        "cpu quota 50%: cpu {cpu:.2} s over wall {wall:.2} s = {:.1}% of one core",
        share * 100.0
    );
    assert!(
        (0.40..=0.55).contains(&share),
        "CPU share {share:.3} not within 0.40..=0.55"
    );
}

#[test]
fn cancel_kills_the_process_group_and_removes_the_cgroup_within_two_seconds() {
    let _g = serial();
    let node = Node::start(
        "cancel",
        NodeOpts {
            slots: 1,
            ..NodeOpts::default()
        },
    );
    let running = node.submit(long_job(60.0));
    let queued = node.submit(small_job(1.0));
    node.wait_state(&running, &["running"], LONG);
    let pids = wait_for("ffmpeg in the job cgroup", Duration::from_secs(10), || {
        let p = node.job_pids(&running);
        (!p.is_empty()).then_some(p)
    });
    // A queued job is cancelled at once.
    let (status, job) = node.post(&format!("/v1/jobs/{queued}/cancel"));
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["state"], "cancelled");
    // A running one: the group dies and the cgroup goes within 2 s.
    let t0 = std::time::Instant::now();
    let (status, _) = node.post(&format!("/v1/jobs/{running}/cancel"));
    assert_eq!(status, 202);
    wait_for("processes and cgroup gone", Duration::from_secs(2), || {
        (pids.iter().all(|p| !pid_alive(*p)) && node.job_cgroups(&running).is_empty()).then_some(())
    });
    println!(
        "cancel: process group gone and cgroup removed {:?} after the request",
        t0.elapsed()
    );
    let job = node.wait_state(&running, &["cancelled"], Duration::from_secs(10));
    assert_eq!(job["attempt"], 1);
    // Cancelling a finished job is a conflict, and changes nothing.
    let (status, err) = node.post(&format!("/v1/jobs/{running}/cancel"));
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "already_finished");
}

#[test]
fn timeout_terminates_and_marks_timed_out() {
    let _g = serial();
    let node = Node::start("timeout", NodeOpts::default());
    let mut body = long_job(60.0);
    body["resource_limits"] = json!({"timeout_s": 2});
    let id = node.submit(body);
    node.wait_state(&id, &["running"], LONG);
    let pids = wait_for("ffmpeg pids", Duration::from_secs(10), || {
        let p = node.job_pids(&id);
        (!p.is_empty()).then_some(p)
    });
    let job = node.wait_state(
        &id,
        &["timed_out", "succeeded", "failed"],
        Duration::from_secs(30),
    );
    assert_eq!(job["state"], "timed_out", "{job}");
    assert_eq!(job["failure"]["reason"], "timeout");
    assert_eq!(job["attempt"], 1, "a timeout is terminal, not retried");
    assert!(pids.iter().all(|p| !pid_alive(*p)));
    assert!(node.job_cgroups(&id).is_empty());
}

#[test]
fn stalled_job_is_killed_and_retried_as_transient() {
    let _g = serial();
    // An RTMP "server" that accepts and then says nothing: FFmpeg blocks in
    // the handshake and makes no progress.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // It holds every connection open until the test says stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_flag = stop.clone();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while std::time::Instant::now() < deadline
            && !stop_flag.load(std::sync::atomic::Ordering::SeqCst)
        {
            if let Ok((c, _)) = listener.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        conns.len()
    });
    let node = Node::start("stall", NodeOpts::default());
    let id = node.submit(json!({
        "scenario": "480p30-h264", "width": 320, "height": 180,
        "input": {"type": "testsrc", "duration_s": 30},
        "output": {"type": "rtmp", "url": format!("rtmp://127.0.0.1:{port}/live/test")},
        "resource_limits": {"stall_timeout_s": 2},
        "max_retries": 1
    }));
    let job = node.wait_state(&id, &["failed", "succeeded"], Duration::from_secs(90));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(
        job["attempt"], 2,
        "first attempt stalled and was retried once"
    );
    assert_eq!(job["failure"]["reason"], "retries_exhausted", "{job}");
    let attempts = job["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2);
    for a in attempts {
        assert_eq!(a["outcome"]["outcome"], "transient", "{a}");
        assert_eq!(a["outcome"]["failure"]["reason"], "stalled", "{a}");
    }
    assert_eq!(
        held.join().expect("listener thread"),
        2,
        "both attempts connected"
    );
    assert!(node.job_cgroups(&id).is_empty());
}

#[test]
fn panicking_job_actor_leaves_nothing_behind_and_its_job_is_retried() {
    let _g = serial();
    let node = Node::start(
        "panic",
        NodeOpts {
            slots: 2,
            ..NodeOpts::default()
        },
    );
    let victim = node.submit(long_job(8.0));
    let bystander = node.submit(long_job(4.0));
    node.wait_state(&victim, &["running"], LONG);
    node.wait_state(&bystander, &["running"], LONG);
    let pids = wait_for("victim ffmpeg pids", Duration::from_secs(10), || {
        let p = node.job_pids(&victim);
        (!p.is_empty()).then_some(p)
    });
    let first_cgroups = node.job_cgroups(&victim);
    let (status, body) = node.post(&format!("/v1/debug/jobs/{victim}/panic"));
    assert_eq!(status, 202, "fault injection hook: {body}");
    wait_for(
        "the panicked attempt's processes and cgroup to be gone",
        Duration::from_secs(5),
        || {
            (pids.iter().all(|p| !pid_alive(*p)) && first_cgroups.iter().all(|d| !d.exists()))
                .then_some(())
        },
    );
    let job = node.wait_state(&victim, &["succeeded", "failed"], LONG);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 2, "retried as a new attempt");
    assert_eq!(
        job["attempts"][0]["outcome"]["failure"]["reason"],
        "worker_crash"
    );
    let other = node.wait_state(&bystander, &["succeeded", "failed"], LONG);
    assert_eq!(
        other["state"], "succeeded",
        "the other job carried on: {other}"
    );
    assert_eq!(other["attempt"], 1);
}

#[test]
fn bad_input_is_rejected_with_the_field_and_nothing_is_stored() {
    let node = Node::start("validation", NodeOpts::default());
    let outside = tempfile::NamedTempFile::new().expect("tmp");
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"scenario":"720p30-h264","input":{"type":"testsrc","duration_s":1},"output":{"type":"null"},"bogus":1}),
            "bogus",
        ),
        (
            json!({"scenario":"720p30-h264","input":{"type":"testsrc","duration_s":-1},"output":{"type":"null"}}),
            "input.duration_s",
        ),
        (
            json!({"scenario":"nope","input":{"type":"testsrc","duration_s":1},"output":{"type":"null"}}),
            "scenario",
        ),
        (
            json!({"scenario":"720p30-h264","input":{"type":"file","path":"../etc/passwd"},"output":{"type":"null"}}),
            "input.path",
        ),
        (
            json!({"scenario":"720p30-h264","input":{"type":"file","path": outside.path()},"output":{"type":"null"}}),
            "input.path",
        ),
        (
            json!({"scenario":"720p30-h264","input":{"type":"testsrc","duration_s":1},"output":{"type":"rtmp","url":"http://x/y"}}),
            "output.url",
        ),
        (
            json!({"scenario":"720p30-h264","input":{"type":"testsrc","duration_s":1},"output":{"type":"null"},"resource_limits":{"max_cpu_percent":0}}),
            "resource_limits.max_cpu_percent",
        ),
        (
            json!({"scenario":"720p30-h264","input":{"type":"testsrc","duration_s":1},"output":{"type":"null"},"priority":"urgent"}),
            "priority",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = node.post_json("/v1/jobs", &body);
        assert_eq!(status, 400, "{body} → {err}");
        assert_eq!(err["error"]["field"], field, "{body} → {err}");
        assert!(
            err["error"]["code"].is_string() && err["error"]["message"].is_string(),
            "{err}"
        );
    }
    // A symlink inside the media root that points outside it.
    std::os::unix::fs::symlink(outside.path(), node.media.join("escape.mp4")).expect("symlink");
    let (status, err) = node.post_json(
        "/v1/jobs",
        &json!({"scenario":"720p30-h264","input":{"type":"file","path":"escape.mp4"},"output":{"type":"null"}}),
    );
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "input.path");
    let (status, err) = node.post_json("/v1/jobs", &json!("not an object"));
    assert_eq!(status, 400, "{err}");
    let (_, page) = node.get("/v1/jobs");
    assert_eq!(
        page["jobs"].as_array().map(|a| a.len()),
        Some(0),
        "nothing stored: {page}"
    );
}

#[test]
fn with_the_api_key_a_job_runs_and_metrics_count_it() {
    // Refusals without the key, and the body limit: tests/security.rs.
    let node = Node::start(
        "auth",
        NodeOpts {
            api_key: Some("s3cret-key".into()),
            ..NodeOpts::default()
        },
    );
    // With the key it works, and metrics count it.
    let id = node.submit(small_job(0.5));
    node.wait_state(&id, &["succeeded"], LONG);
    let (status, text) = node.get_text("/metrics");
    assert_eq!(status, 200);
    for name in [
        "ffrtmp_jobs_submitted_total 1",
        "ffrtmp_jobs_finished_total{outcome=\"succeeded\"} 1",
        "ffrtmp_queue_depth{priority=\"high\"}",
        "ffrtmp_jobs_running",
        "ffrtmp_job_wall_seconds_bucket",
    ] {
        assert!(text.contains(name), "metrics lack {name:?}:\n{text}");
    }
    assert!(!text.contains(&id), "no job id as a label");
    let (_, page) = node.get("/v1/jobs");
    assert_eq!(page["jobs"].as_array().map(|a| a.len()), Some(1));
}

#[test]
fn file_input_is_probed_for_its_duration_and_transcoded_with_audio() {
    let _g = serial();
    let node = Node::start("file-input", NodeOpts::default());
    // A 2 s clip with a tone, made by the test in the node's media root.
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=2",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=2"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
        ])
        .arg(node.media.join("clip.mp4"))
        .status()
        .expect("make the input clip");
    assert!(status.success());
    let id = node.submit(json!({
        "scenario": "480p30-vp9", "width": 160, "height": 120,
        "input": {"type": "file", "path": "clip.mp4"},
        "output": {"type": "file", "path": "clip-small.webm"}
    }));
    let job = node.wait_state(&id, &["succeeded", "failed"], LONG);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["progress"]["percent"], 100.0,
        "percent against the probed duration: {job}"
    );
    let out = node.media.join("clip-small.webm");
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(&out)
        .output()
        .expect("ffprobe the output");
    let streams = String::from_utf8_lossy(&probe.stdout);
    assert!(streams.contains("vp9,video,160,120"), "{streams}");
    assert!(
        streams.contains("opus,audio"),
        "audio carried into webm as opus: {streams}"
    );
}

/// Clients of the Go `ffmpeg-rtmp` master post its shape to `POST /jobs`:
/// it runs as the job it maps onto, and refusals name the Go field.
#[test]
fn a_go_seed_submission_runs_as_the_job_it_maps_onto() {
    let _g = serial();
    let node = Node::start("seed", NodeOpts::default());
    let (status, job) = node.post_json(
        "/jobs",
        &json!({
            "scenario": "480p30-h264",
            "confidence": "auto",
            "engine": "ffmpeg",
            "queue": "default",
            "priority": "high",
            "parameters": {"duration": 1, "bitrate": "800k"}
        }),
    );
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["spec"]["priority"], "high", "{job}");
    assert_eq!(job["spec"]["scenario"], "480p30-h264", "{job}");
    assert_eq!(job["spec"]["encode"]["bitrate_kbps"], 800, "{job}");
    let id = job["id"].as_str().expect("id");
    let done = node.wait_state(id, &["succeeded", "failed"], LONG);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["frames"], 30, "1 s at 30 fps: {done}");

    let (status, err) = node.post_json(
        "/jobs",
        &json!({"scenario": "480p30-h264", "engine": "gstreamer"}),
    );
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "engine", "{err}");
    let (status, err) = node.post_json(
        "/jobs",
        &json!({"scenario": "480p30-h264", "parameters": {"duration": 0}}),
    );
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "parameters.duration", "{err}");
}

/// The state in the next event of an SSE stream; `None` at its end.
fn next_state(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> Option<String> {
    for line in lines.by_ref() {
        let line = line.expect("sse line");
        if let Some(d) = line.strip_prefix("data:") {
            let job: Value = serde_json::from_str(d.trim()).expect("event json");
            return job["state"].as_str().map(str::to_string);
        }
    }
    None
}

/// `job` without the fields a running job changes on its own.
fn at_rest(job: &Value) -> Value {
    let mut j = job.clone();
    if let Some(m) = j.as_object_mut() {
        m.remove("progress");
        m.remove("updated_ms");
    }
    j
}

/// `POST /v1/jobs/{id}/retry` re-queues the same job, which then really
/// runs again; `GET /v1/jobs/{id}/logs` shows FFmpeg's lines of the failed
/// attempt. Jobs that are queued, running or succeeded are refused and left
/// as they were; two retries at once re-queue once.
#[test]
fn a_failed_job_retried_runs_again_under_its_id_and_logs_keep_the_failure() {
    let _g = serial();
    let node = Node::start(
        "retry",
        NodeOpts {
            slots: 1,
            ..NodeOpts::default()
        },
    );
    // An input FFmpeg rejects: the job fails on its own (terminal).
    let input = node.media.join("in.mp4");
    std::fs::write(&input, b"this is not a video\n").expect("bad input");
    let id = node.submit(json!({
        "scenario": "480p30-h264", "width": 320, "height": 180,
        "input": {"type": "file", "path": "in.mp4"},
        "output": {"type": "null"}
    }));
    let failed = node.wait_state(&id, &["failed", "succeeded"], LONG);
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["failure"]["reason"], "ffmpeg_error", "{failed}");
    assert_eq!(failed["attempt"], 1);

    // The logs route: the failed attempt with FFmpeg's own lines.
    let (status, logs) = node.get(&format!("/v1/jobs/{id}/logs"));
    assert_eq!(status, 200, "{logs}");
    assert_eq!(logs["id"], id.as_str());
    assert_eq!(logs["state"], "failed");
    let attempts = logs["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{logs}");
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[0]["outcome"], "failed");
    assert_eq!(attempts[0]["reason"], "ffmpeg_error");
    assert_eq!(attempts[0]["node"], failed["attempts"][0]["node"]);
    let tail: Vec<&str> = attempts[0]["stderr_tail"]
        .as_array()
        .expect("stderr_tail")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tail.iter().any(|l| l.contains("in.mp4")),
        "FFmpeg's complaint about the input: {tail:?}"
    );
    assert_eq!(
        failed["attempts"][0]["outcome"]["failure"]["stderr_tail"], attempts[0]["stderr_tail"],
        "the lines the job record keeps"
    );

    // Fix the input, then retry: the same id runs again and succeeds.
    let fixed = node.media.join("fixed.mp4");
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=30:duration=1",
        ])
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .arg(&fixed)
        .status()
        .expect("make a real clip");
    assert!(status.success());
    std::fs::rename(&fixed, &input).expect("replace the input");
    let (status, requeued) = node.post(&format!("/v1/jobs/{id}/retry"));
    assert_eq!(status, 200, "{requeued}");
    assert_eq!(requeued["id"], id.as_str());
    assert_eq!(requeued["state"], "queued", "stored as queued: {requeued}");
    assert_eq!(requeued["attempts"], failed["attempts"], "history kept");
    assert_eq!(requeued["failure"], Value::Null);
    assert_eq!(requeued["requeue"]["count"], 1, "{requeued}");
    assert_eq!(requeued["requeue"]["after_attempt"], 1, "{requeued}");
    assert_eq!(
        requeued["seq"], failed["seq"],
        "its place in the list stays"
    );
    let done = node.wait_state(&id, &["succeeded", "failed"], LONG);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    let runs = done["attempts"].as_array().expect("attempts");
    assert_eq!(runs.len(), 2, "the attempt list grew: {done}");
    assert_eq!(runs[0], failed["attempts"][0], "the failed attempt stays");
    assert_eq!(runs[1]["attempt"], 2);
    assert_eq!(runs[1]["outcome"]["outcome"], "succeeded", "{done}");
    assert_eq!(done["result"]["frames"], 30, "1 s at 30 fps: {done}");
    assert_eq!(done["failure"], Value::Null);
    // Energy: each attempt once in the job's total.
    let sum: f64 = runs
        .iter()
        .filter_map(|a| a["energy"]["energy_joules"].as_f64())
        .sum();
    let total = done["energy"]["energy_joules"]
        .as_f64()
        .expect("the job's energy (an estimate on a host without RAPL)");
    assert!(
        total > 0.0 && (total - sum).abs() < 1e-6,
        "{total} J vs {sum} J: {done}"
    );
    let (_, logs) = node.get(&format!("/v1/jobs/{id}/logs"));
    let attempts = logs["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{logs}");
    assert_eq!(attempts[0]["outcome"], "failed");
    assert!(!attempts[0]["stderr_tail"]
        .as_array()
        .expect("tail")
        .is_empty());
    assert_eq!(attempts[1]["outcome"], "succeeded");
    assert_eq!(attempts[1]["stderr_tail"], json!([]), "{logs}");

    // A succeeded job is not retried; nothing changes.
    let (status, err) = node.post(&format!("/v1/jobs/{id}/retry"));
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "not_retryable", "{err}");
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("succeeded"), "names the state: {message}");
    assert_eq!(node.job(&id), done);

    // Running and queued jobs are refused too (one slot: a blocker runs,
    // the next job waits).
    let blocker = node.submit(long_job(60.0));
    node.wait_state(&blocker, &["running"], LONG);
    let before = node.job(&blocker);
    let (status, err) = node.post(&format!("/v1/jobs/{blocker}/retry"));
    assert_eq!(status, 409, "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("running"));
    let after = node.job(&blocker);
    assert_eq!(after["state"], "running");
    assert_eq!(at_rest(&after), at_rest(&before));
    let waiting = node.submit(small_job(1.0));
    let before = node.job(&waiting);
    assert_eq!(before["state"], "queued");
    let (status, err) = node.post(&format!("/v1/jobs/{waiting}/retry"));
    assert_eq!(status, 409, "{err}");
    assert_eq!(
        node.job(&waiting),
        before,
        "a refused retry changes nothing"
    );

    // Two retries at once of a cancelled job: exactly one re-queues.
    let (status, _) = node.post(&format!("/v1/jobs/{waiting}/cancel"));
    assert_eq!(status, 200);
    let path = format!("/v1/jobs/{waiting}/retry");
    let (a, b) = std::thread::scope(|s| {
        let one = s.spawn(|| node.post(&path));
        let two = s.spawn(|| node.post(&path));
        (
            one.join().expect("first retry"),
            two.join().expect("second retry"),
        )
    });
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let requeued = node.job(&waiting);
    assert_eq!(requeued["state"], "queued", "the slot is still taken");
    assert_eq!(requeued["requeue"]["count"], 1, "{requeued}");
    assert_eq!(requeued["attempts"], json!([]), "it never ran");

    // Its event stream starts from `queued` and follows it to the end once
    // the slot frees.
    let client = reqwest::blocking::Client::builder()
        .timeout(LONG)
        .build()
        .expect("client");
    let resp = client
        .get(node.url(&format!("/v1/jobs/{waiting}/events")))
        .send()
        .expect("events");
    assert_eq!(resp.status().as_u16(), 200);
    let mut lines = BufReader::new(resp).lines();
    let mut states: Vec<String> = Vec::new();
    states.extend(next_state(&mut lines));
    assert_eq!(states, ["queued"]);
    let (status, _) = node.post(&format!("/v1/jobs/{blocker}/cancel"));
    assert_eq!(status, 202);
    while let Some(s) = next_state(&mut lines) {
        states.push(s);
    }
    assert_eq!(
        states.last().map(String::as_str),
        Some("succeeded"),
        "{states:?}"
    );
    assert!(states.iter().any(|s| s == "running"), "{states:?}");

    // Unknown ids.
    for (status, err) in [
        node.post("/v1/jobs/no-such-job/retry"),
        node.get("/v1/jobs/no-such-job/logs"),
    ] {
        assert_eq!(status, 404, "{err}");
        assert_eq!(err["error"]["code"], "not_found", "{err}");
    }

    // The efficiency report counts each succeeded job once, however often
    // it ran: the retried one and the one retried after its cancel.
    let (status, report) = node.get("/v1/reports/efficiency");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["jobs_considered"], 2, "{report}");
}
