//! The `ffrtmp` client CLI as a process, against a real standalone node:
//! submit (flags, --file, stdin), list (table, JSON, pages), get, cancel,
//! retry, logs, --wait and watch exit codes, the error lines and exit codes
//! for a wrong key, an unreachable master and a field that does not
//! validate, and shell completions.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::path::PathBuf;

use common::cli::*;
use common::*;
use serde_json::{json, Value};

/// Run the CLI against `node` (its URL, and its key if it has one).
fn cli(node: &Node, args: &[&str]) -> Out {
    cli_in(node, args, "")
}

fn cli_in(node: &Node, args: &[&str], stdin: &str) -> Out {
    let mut env = vec![("FFRTMP_MASTER", node.base.as_str())];
    if let Some(k) = &node.opts.api_key {
        env.push(("FFRTMP_API_KEY", k.as_str()));
    }
    run(args, &env, stdin, LONG)
}

fn ok(out: &Out) {
    assert_eq!(out.code, 0, "expected success: {out:?}");
}

#[test]
fn submit_list_get_cancel_retry_logs_and_wait() {
    let _g = serial();
    let node = Node::start(
        "cli",
        NodeOpts {
            slots: 1,
            ..NodeOpts::default()
        },
    );

    // Every spec flag, followed to the end: exit 0, the id first on stdout.
    let out = cli(
        &node,
        &[
            "jobs",
            "submit",
            "--scenario",
            "480p30-h264",
            "--size",
            "320x180",
            "--fps",
            "25",
            "--bitrate",
            "400k",
            "--preset",
            "ultrafast",
            "--input",
            "testsrc:1",
            "--to",
            "flags.mp4",
            "--priority",
            "high",
            "--max-cpu-percent",
            "150",
            "--max-memory-mb",
            "512",
            "--timeout-s",
            "120",
            "--stall-timeout-s",
            "30",
            "--max-retries",
            "1",
            "--wait",
        ],
    );
    ok(&out);
    let flags_id = out
        .stdout
        .lines()
        .next()
        .expect("id line")
        .trim()
        .to_string();
    let job = node.job(&flags_id);
    assert_eq!(job["state"], "succeeded", "{job}");
    let spec = &job["spec"];
    assert_eq!(spec["scenario"], "480p30-h264");
    assert_eq!(spec["encode"]["width"], 320);
    assert_eq!(spec["encode"]["height"], 180);
    assert_eq!(spec["encode"]["fps"], 25);
    assert_eq!(spec["encode"]["bitrate_kbps"], 400);
    assert_eq!(spec["encode"]["preset"], "ultrafast");
    assert_eq!(spec["input"], json!({"type": "testsrc", "duration_s": 1.0}));
    assert_eq!(spec["output"]["type"], "file");
    assert_eq!(spec["priority"], "high");
    assert_eq!(
        spec["resource_limits"],
        json!({"max_cpu_percent": 150, "max_memory_mb": 512, "timeout_s": 120, "stall_timeout_s": 30})
    );
    assert_eq!(spec["max_retries"], 1);
    assert!(node.media.join("flags.mp4").is_file());
    // The summary after --wait: the outcome and its energy.
    assert!(
        out.stdout.contains(&flags_id) && out.stdout.contains("succeeded"),
        "{out:?}"
    );

    // --file, with a flag on top; JSON out is the created job.
    let spec_file = node.dir.path().join("spec.json");
    std::fs::write(
        &spec_file,
        json!({"codec": "h264", "width": 160, "height": 90, "fps": 10,
               "input": {"type": "testsrc", "duration_s": 0.5}, "priority": "low"})
        .to_string(),
    )
    .expect("spec file");
    let spec_path = spec_file.to_string_lossy().to_string();
    let out = cli(
        &node,
        &[
            "jobs",
            "submit",
            "--file",
            &spec_path,
            "--priority",
            "batch",
            "-o",
            "json",
        ],
    );
    ok(&out);
    let created = out.json();
    let file_id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["spec"]["priority"], "batch", "the flag wins");
    assert_eq!(created["spec"]["encode"]["width"], 160, "from the file");
    assert_eq!(created["spec"]["output"]["type"], "null", "default output");
    // The same from stdin.
    let out = cli_in(
        &node,
        &["jobs", "submit", "-f", "-"],
        &json!({"scenario": "480p30-h264", "width": 160, "height": 90,
                "input": {"type": "testsrc", "duration_s": 0.5}, "output": {"type": "null"}})
        .to_string(),
    );
    ok(&out);
    let stdin_id = out.stdout.trim().to_string();
    assert_eq!(node.job(&stdin_id)["id"], stdin_id.as_str());
    for id in [&file_id, &stdin_id] {
        node.wait_state(id, &["succeeded"], LONG);
    }

    // A job that fails: exit 1 with --wait, and its FFmpeg lines in `logs`.
    std::fs::write(node.media.join("bad.mp4"), b"this is not a video\n").expect("bad input");
    let out = cli(
        &node,
        &[
            "jobs", "submit", "--codec", "h264", "--width", "320", "--height", "180", "--fps",
            "30", "--input", "bad.mp4", "--wait",
        ],
    );
    assert_eq!(out.code, 1, "a failed job with --wait exits 1: {out:?}");
    let bad_id = out.stdout.lines().next().expect("id").trim().to_string();
    assert_eq!(node.job(&bad_id)["state"], "failed");
    let out = cli(&node, &["jobs", "logs", &bad_id]);
    ok(&out);
    assert!(out.stdout.contains("ffmpeg_error"), "{out:?}");
    assert!(
        out.stdout.contains("  | "),
        "FFmpeg's stderr lines: {out:?}"
    );

    // Retry: the same job runs again. Its input is still bad, so it fails
    // again and --wait exits 1.
    let out = cli(&node, &["jobs", "retry", &bad_id, "--wait"]);
    assert_eq!(out.code, 1, "the retried job failed again: {out:?}");
    let first = out.stdout.lines().next().unwrap_or_default();
    assert!(
        first.contains(bad_id.as_str()) && first.contains("queued again"),
        "{out:?}"
    );
    let job = node.job(&bad_id);
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["attempt"], 2, "{job}");
    // -o json: the job as re-queued, same id.
    let out = cli(&node, &["jobs", "retry", &bad_id, "-o", "json"]);
    ok(&out);
    let again = out.json();
    assert_eq!(again["id"], bad_id.as_str());
    assert_eq!(again["state"], "queued", "{again}");
    assert_eq!(again["requeue"]["count"], 2, "{again}");
    let out = cli(&node, &["jobs", "get", &bad_id]);
    ok(&out);
    assert!(
        out.stdout.contains("requeued") && out.stdout.contains("2 time(s)"),
        "{out:?}"
    );
    let job = node.wait_state(&bad_id, &["failed"], LONG);
    assert_eq!(
        job["attempts"].as_array().map(Vec::len),
        Some(3),
        "three attempts under one id: {job}"
    );
    // logs: one header per attempt, each with FFmpeg's lines; JSON is the
    // route's document.
    let out = cli(&node, &["jobs", "logs", &bad_id]);
    ok(&out);
    let headers: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("attempt "))
        .collect();
    assert_eq!(headers.len(), 3, "{out:?}");
    assert!(
        headers.iter().all(|h| h.contains("ffmpeg_error")),
        "{out:?}"
    );
    let out = cli(&node, &["jobs", "logs", &bad_id, "-o", "json"]);
    ok(&out);
    let logs = out.json();
    assert_eq!(logs["id"], bad_id.as_str());
    assert_eq!(logs["state"], "failed");
    let attempts = logs["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3, "{logs}");
    for (n, a) in attempts.iter().enumerate() {
        assert_eq!(a["attempt"], n as u64 + 1, "{logs}");
        assert_eq!(a["outcome"], "failed", "{logs}");
        assert!(
            !a["stderr_tail"].as_array().expect("tail").is_empty(),
            "{logs}"
        );
    }

    // get: for people and for scripts.
    let out = cli(&node, &["jobs", "get", &flags_id]);
    ok(&out);
    assert!(
        out.stdout.contains("succeeded") && out.stdout.contains("energy"),
        "{out:?}"
    );
    let out = cli(&node, &["jobs", "get", &flags_id, "-o", "json"]);
    ok(&out);
    assert_eq!(out.json()["id"], flags_id.as_str());

    // list: four jobs so far (a retry makes none), in submission order.
    let all = [&flags_id, &file_id, &stdin_id, &bad_id];
    let out = cli(&node, &["jobs", "list"]);
    ok(&out);
    let header = out.stdout.lines().next().expect("header");
    assert!(
        header.starts_with("ID") && header.contains("STATE"),
        "{out:?}"
    );
    for id in all {
        assert!(out.stdout.contains(id.as_str()), "{id} listed: {out:?}");
    }
    let out = cli(&node, &["jobs", "list", "-o", "json"]);
    ok(&out);
    let ids_of = |v: &Value| -> Vec<String> {
        v["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .map(|j| j["id"].as_str().expect("id").to_string())
            .collect()
    };
    let want: Vec<String> = all.iter().map(|s| s.to_string()).collect();
    assert_eq!(ids_of(&out.json()), want);
    // Pages: two at a time by hand, then --all.
    let out = cli(&node, &["jobs", "list", "--limit", "2", "-o", "json"]);
    ok(&out);
    let page = out.json();
    assert_eq!(ids_of(&page), want[..2].to_vec());
    let cursor = page["next_cursor"].as_u64().expect("a next page");
    let out = cli(
        &node,
        &[
            "jobs",
            "list",
            "--limit",
            "2",
            "--cursor",
            &cursor.to_string(),
            "-o",
            "json",
        ],
    );
    ok(&out);
    assert_eq!(ids_of(&out.json()), want[2..4].to_vec());
    let out = cli(
        &node,
        &["jobs", "list", "--limit", "2", "--all", "-o", "json"],
    );
    ok(&out);
    let every = out.json();
    assert_eq!(ids_of(&every), want, "--all follows next_cursor");
    assert_eq!(every["next_cursor"], Value::Null);
    let out = cli(&node, &["jobs", "list", "--limit", "2"]);
    ok(&out);
    assert!(
        out.stderr.contains("--cursor"),
        "the next page is named: {out:?}"
    );
    // Filters.
    let out = cli(&node, &["jobs", "list", "--state", "failed", "-o", "json"]);
    ok(&out);
    assert_eq!(ids_of(&out.json()), vec![bad_id.clone()]);
    let out = cli(
        &node,
        &["jobs", "list", "--priority", "batch", "-o", "json"],
    );
    ok(&out);
    assert_eq!(ids_of(&out.json()), vec![file_id.clone()]);

    // cancel: a queued job at once, then 409 -> exit 6; a running one -> 202.
    let out = cli(
        &node,
        &[
            "jobs",
            "submit",
            "--scenario",
            "720p30-h264",
            "--preset",
            "medium",
            "--input",
            "testsrc:60",
        ],
    );
    ok(&out);
    let blocker = out.stdout.trim().to_string();
    node.wait_state(&blocker, &["running"], LONG);
    let out = cli(
        &node,
        &[
            "jobs",
            "submit",
            "--scenario",
            "480p30-h264",
            "--input",
            "testsrc:1",
        ],
    );
    ok(&out);
    let queued = out.stdout.trim().to_string();
    let out = cli(&node, &["jobs", "cancel", &queued]);
    ok(&out);
    assert!(out.stdout.contains("cancelled"), "{out:?}");
    assert_eq!(node.job(&queued)["state"], "cancelled");
    let out = cli(&node, &["jobs", "cancel", &queued]);
    assert_eq!(out.code, 6, "cancelling a finished job is refused: {out:?}");
    assert!(out.stderr.contains("already_finished"), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "one line: {out:?}");
    let out = cli(&node, &["jobs", "cancel", &blocker]);
    ok(&out);
    assert!(out.stdout.contains("cancelling"), "{out:?}");
    node.wait_state(&blocker, &["cancelled"], LONG);
    // retry refuses a job that has not finished.
    let out = cli(
        &node,
        &[
            "jobs",
            "submit",
            "--scenario",
            "720p30-h264",
            "--preset",
            "medium",
            "--input",
            "testsrc:60",
        ],
    );
    ok(&out);
    let running = out.stdout.trim().to_string();
    let out = cli(&node, &["jobs", "retry", &running]);
    assert_eq!(out.code, 6, "{out:?}");
    assert!(out.stderr.contains("not_retryable"), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "one line: {out:?}");
    let out = cli(&node, &["jobs", "retry", "no-such-job"]);
    assert_eq!(out.code, 5, "{out:?}");
    let out = cli(&node, &["jobs", "logs", "no-such-job"]);
    assert_eq!(out.code, 5, "{out:?}");
    let out = cli(&node, &["jobs", "cancel", &running]);
    ok(&out);

    // Not found, and a field that does not validate.
    let out = cli(&node, &["jobs", "get", "no-such-job"]);
    assert_eq!(out.code, 5, "{out:?}");
    assert!(out.stderr.contains("no-such-job"), "{out:?}");
    let out = cli(
        &node,
        &[
            "jobs",
            "submit",
            "--scenario",
            "480p30-h264",
            "--width",
            "17",
            "--input",
            "testsrc:1",
        ],
    );
    assert_eq!(out.code, 6, "{out:?}");
    assert!(out.stderr.contains("`width`"), "names the field: {out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "one line: {out:?}");
    let out = cli(
        &node,
        &[
            "jobs",
            "submit",
            "--scenario",
            "480p30-h264",
            "--input",
            "testsrc:1",
            "--timeout-s",
            "0",
        ],
    );
    assert_eq!(out.code, 6, "{out:?}");
    assert!(
        out.stderr.contains("`resource_limits.timeout_s`"),
        "{out:?}"
    );
    // A --file that is not JSON: nothing is sent, exit 2.
    std::fs::write(&spec_file, "{not json").expect("write");
    let out = cli(&node, &["jobs", "submit", "--file", &spec_path]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("not JSON"), "{out:?}");
    // clap's own usage errors are 2 too.
    let out = cli(&node, &["jobs", "submit", "--priority", "urgent"]);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn watch_follows_two_running_jobs_to_their_outcome_and_energy() {
    let _g = serial();
    let node = Node::start("cli-watch", NodeOpts::default());
    let a = node.submit(long_job(4.0));
    let b = node.submit(long_job(4.0));
    for id in [&a, &b] {
        node.wait_state(id, &["running"], LONG);
    }
    // No ids: every running job.
    let out = cli(&node, &["jobs", "watch", "-o", "json"]);
    ok(&out);
    let lines = out.json_lines();
    for id in [&a, &b] {
        let mine: Vec<&Value> = lines.iter().filter(|l| l["id"] == id.as_str()).collect();
        assert!(mine.len() >= 2, "events for {id}: {out:?}");
        let first = mine.first().expect("first");
        assert_eq!(
            first["event"], "state",
            "the stream starts with the job now"
        );
        let end = mine.last().expect("end");
        assert_eq!(end["event"], "end", "each job ends with its outcome: {end}");
        assert_eq!(end["outcome"], "succeeded", "{end}");
        let energy = &end["energy"];
        assert!(
            energy["joules"].as_f64().unwrap_or(0.0) > 0.0,
            "energy in the end line: {end}"
        );
        assert!(energy["source"].is_string(), "{end}");
        assert!(energy["estimate"].is_boolean(), "{end}");
        // Only the end line comes after the terminal state.
        let terminal = mine
            .iter()
            .position(|l| l["state"] == "succeeded")
            .expect("a terminal event");
        assert_eq!(terminal, mine.len() - 2, "{out:?}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "progress" && l["progress"]["frame"].as_u64().unwrap_or(0) > 0),
        "progress events with frames: {out:?}"
    );

    // Named ids, for people: the summary table (bars are drawn only on a
    // terminal); a job that failed makes the exit code 1.
    std::fs::write(node.media.join("bad.mp4"), b"not a video").expect("bad input");
    let good = node.submit(small_job(1.0));
    let bad = node.submit(json!({
        "codec": "h264", "width": 320, "height": 180, "fps": 30,
        "input": {"type": "file", "path": "bad.mp4"}, "output": {"type": "null"}
    }));
    let out = cli(&node, &["jobs", "watch", &good, &bad]);
    assert_eq!(out.code, 1, "{out:?}");
    let row = |id: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("a row for {id}: {out:?}"))
            .to_string()
    };
    assert!(row(&good).contains("succeeded"), "{out:?}");
    assert!(
        row(&bad).contains("failed") && row(&bad).contains("ffmpeg_error"),
        "{out:?}"
    );
}

#[test]
fn wrong_key_unreachable_master_nodes_and_report() {
    let _g = serial();
    let node = Node::start(
        "cli-auth",
        NodeOpts {
            api_key: Some("s3cret".to_string()),
            ..NodeOpts::default()
        },
    );
    let base = node.base.as_str();
    let no_key = run(&["jobs", "list", "--master", base], &[], "", LONG);
    assert_eq!(no_key.code, 4, "{no_key:?}");
    assert!(no_key.stderr.contains("needs an API key"), "{no_key:?}");
    let wrong = run(
        &["jobs", "list"],
        &[("FFRTMP_MASTER", base), ("FFRTMP_API_KEY", "nope")],
        "",
        LONG,
    );
    assert_eq!(wrong.code, 4, "{wrong:?}");
    assert!(
        wrong.stderr.contains("refused the API key") && wrong.stderr.contains("FFRTMP_API_KEY"),
        "{wrong:?}"
    );
    assert_eq!(wrong.stderr.lines().count(), 1, "one line: {wrong:?}");
    let right = run(
        &[
            "jobs",
            "list",
            "--master",
            base,
            "--api-key",
            "s3cret",
            "-o",
            "json",
        ],
        &[],
        "",
        LONG,
    );
    ok(&right);
    assert_eq!(right.json()["jobs"], json!([]));

    // nodes and the report.
    let out = cli(&node, &["nodes", "list"]);
    ok(&out);
    let nodes = cli(&node, &["nodes", "list", "-o", "json"]).json();
    let node_id = nodes["nodes"][0]["id"]
        .as_str()
        .expect("a node")
        .to_string();
    assert!(
        out.stdout.contains(&node_id) && out.stdout.contains("libx264"),
        "{out:?}"
    );
    let out = cli(&node, &["report", "efficiency", "-o", "json"]);
    ok(&out);
    assert!(out.json()["rows"].is_array(), "{out:?}");
    ok(&cli(&node, &["report", "efficiency"]));
    let out = cli(&node, &["nodes", "drain", "no-such-node"]);
    assert_eq!(out.code, 5, "{out:?}");

    // A master nobody listens on: exit 3, naming the URL and the variable.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let out = run(&["jobs", "list"], &[("FFRTMP_MASTER", &url)], "", LONG);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains(&url) && out.stderr.contains("FFRTMP_MASTER"),
        "{out:?}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "one line: {out:?}");
    assert!(
        !out.stderr.contains("QUIC"),
        "a URL is not mistaken: {out:?}"
    );
    // A bare HOST:PORT, as a worker's FFRTMP_MASTER would be: the hint
    // says the CLI wants the HTTP API's URL.
    let bare = format!("127.0.0.1:{port}");
    let out = run(&["jobs", "list"], &[("FFRTMP_MASTER", &bare)], "", LONG);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("HTTP API URL") && out.stderr.contains("QUIC address"),
        "{out:?}"
    );
    let out = run(
        &["jobs", "watch", "x"],
        &[("FFRTMP_MASTER", &url)],
        "",
        LONG,
    );
    assert_eq!(out.code, 3, "{out:?}");
}

/// `ffrtmp report efficiency` over real jobs: two presets of one scenario
/// are two rows (each with its jobs, median ± IQR), `--json` is the API's
/// document with the query echoed, filters apply, bad thresholds and
/// labels are refused by the master naming the parameter (exit 6), and a
/// plot is refused clearly, writing nothing, when no job has scores (the
/// drawing itself: the unit tests of src/cli/report.rs).
#[test]
fn report_efficiency_groups_presets_answers_and_refuses() {
    let _g = serial();
    let node = Node::start("cli-report", NodeOpts::default());
    let mut ids = Vec::new();
    for preset in ["ultrafast", "medium", "ultrafast", "medium"] {
        let mut body = small_job(1.0);
        body["preset"] = json!(preset);
        ids.push(node.submit(body));
    }
    for id in &ids {
        let job = node.wait_state(id, &["succeeded", "failed", "timed_out"], LONG);
        assert_eq!(job["state"], "succeeded", "{job}");
    }

    let out = cli(&node, &["report", "efficiency"]);
    ok(&out);
    let line = |needle: &str| -> String {
        let found: Vec<&str> = out.stdout.lines().filter(|l| l.contains(needle)).collect();
        assert_eq!(found.len(), 1, "one row for {needle}: {out:?}");
        found[0].to_string()
    };
    assert!(out.stdout.contains("J/OUT MIN ±IQR"), "{out:?}");
    assert!(
        line("libx264 ultrafast ").contains(" 320x180p30"),
        "{out:?}"
    );
    assert!(line("libx264 medium ").contains(" 320x180p30"), "{out:?}");
    assert!(
        out.stderr.contains("4 succeeded job(s) considered"),
        "{out:?}"
    );

    let doc = cli(&node, &["report", "efficiency", "--json"]).json();
    let rows = doc["rows"].as_array().expect("rows");
    let mut presets: Vec<&str> = rows
        .iter()
        .map(|r| r["configuration"]["preset"].as_str().expect("preset"))
        .collect();
    presets.sort();
    assert_eq!(presets, ["medium", "ultrafast"], "{doc}");
    for r in rows {
        assert_eq!(r["samples"], 2, "{r}");
        assert_eq!(r["joules_per_output_minute"]["n"], 2, "{r}");
        assert!(r["joules_per_output_minute"]["iqr"].as_f64().expect("iqr") >= 0.0);
        assert_eq!(r["scenario"], "480p30-h264", "{r}");
    }

    // A threshold: answered per kind and codec; nothing has scores yet.
    let out = cli(&node, &["report", "efficiency", "--min-vmaf", "93"]);
    ok(&out);
    assert!(
        out.stdout
            .contains("cheapest reaching VMAF >= 93 (estimated), overall: none reaches it")
            || out
                .stdout
                .contains("cheapest reaching VMAF >= 93 (measured), overall: none reaches it"),
        "{out:?}"
    );
    let doc = cli(
        &node,
        &["report", "efficiency", "--min-vmaf", "93", "-o", "json"],
    )
    .json();
    assert_eq!(doc["query"]["min_vmaf"], 93.0, "{doc}");
    assert_eq!(doc["cheapest"][0]["scope"], "overall", "{doc}");
    assert_eq!(doc["cheapest"][0]["rank"], Value::Null, "{doc}");
    let doc = cli(
        &node,
        &[
            "report",
            "efficiency",
            "--experiment",
            "none-such",
            "--json",
        ],
    )
    .json();
    assert_eq!(doc["jobs_considered"], 0, "{doc}");
    assert_eq!(doc["rows"], json!([]), "{doc}");
    let doc = cli(
        &node,
        &["report", "efficiency", "--label", "clip=park", "--json"],
    )
    .json();
    assert_eq!(doc["jobs_considered"], 0, "no job has that label: {doc}");

    // Refused by the master, naming the parameter; over HTTP too.
    for (args, field) in [
        (&["--min-vmaf", "150"][..], "min_vmaf"),
        (&["--min-psnr=-1"][..], "min_psnr"),
        (&["--min-vmaf", "lots"][..], "min_vmaf"),
        (&["--label", "no-equals-sign"][..], "label"),
    ] {
        let mut a = vec!["report", "efficiency"];
        a.extend_from_slice(args);
        let out = cli(&node, &a);
        assert_eq!(out.code, 6, "{out:?}");
        assert!(out.stderr.contains(&format!("`{field}`")), "{out:?}");
    }
    for (query, field) in [
        ("min_vmaf=100.01", "min_vmaf"),
        ("min_psnr=-5", "min_psnr"),
        ("label=k", "label"),
        ("label=k=1&label=k=2", "label"),
    ] {
        let (status, body) = node.get(&format!("/v1/reports/efficiency?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_field", "{query}: {body}");
    }
    // Usage errors, before the master is asked.
    let out = cli(
        &node,
        &[
            "report",
            "efficiency",
            "--min-vmaf",
            "90",
            "--min-psnr",
            "30",
        ],
    );
    assert_eq!(out.code, 2, "{out:?}");
    let plot = node.dir.path().join("frontier.svg");
    let plot_arg = plot.to_str().expect("utf-8 path");
    let out = cli(&node, &["report", "efficiency", "--plot", "frontier.jpg"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(".svg or .png"), "{out:?}");
    // No job has quality scores: nothing to plot, said clearly, no file.
    let out = cli(&node, &["report", "efficiency", "--plot", plot_arg]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("no configuration has VMAF or PSNR"),
        "{out:?}"
    );
    assert!(!plot.exists());
}

#[test]
fn completions_and_help() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell], &[], "", LONG);
        ok(&out);
        assert!(
            out.stdout.len() > 500 && out.stdout.contains("submit") && out.stdout.contains("watch"),
            "{shell}: {}",
            out.stdout.len()
        );
    }
    let out = run(&["completions", "tcsh"], &[], "", LONG);
    assert_eq!(out.code, 2, "{out:?}");
    let out = run(&["--help"], &[], "", LONG);
    ok(&out);
    assert!(
        out.stdout.contains("Exit codes") && out.stdout.contains("FFRTMP_MASTER"),
        "{out:?}"
    );
}

/// The README's first command: sample jobs through a throw-away node, a
/// results table with energy, and nothing left behind (data dir, job
/// cgroups, FFmpeg processes); `--keep` keeps the dir and its output file.
#[test]
fn demo_runs_the_sample_jobs_and_leaves_nothing_behind() {
    let _g = serial();
    require_ffmpeg();
    let data_dir = |out: &Out| -> PathBuf {
        let line = out
            .stdout
            .lines()
            .find(|l| l.contains("(data in "))
            .unwrap_or_else(|| panic!("the demo names its data dir: {out:?}"));
        let dir = line
            .rsplit_once("(data in ")
            .and_then(|(_, d)| d.strip_suffix(')'))
            .unwrap_or_else(|| panic!("a dir in {line:?}"));
        PathBuf::from(dir)
    };
    let job_cgroups = demo_job_cgroups;

    let out = run(&["demo", "--duration", "1"], &[], "", LONG);
    ok(&out);
    // One row per sample job, each succeeded, with joules and a source.
    let rows: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains(" succeeded ") && !l.contains('['))
        .collect();
    assert_eq!(rows.len(), 5, "five sample jobs: {out:?}");
    for r in &rows {
        let source = r.split_whitespace().last().unwrap_or("");
        assert!(
            ["estimate", "rapl", "nvml", "rapl+nvml"].contains(&source),
            "{r}"
        );
    }
    let dir = data_dir(&out);
    assert!(!dir.exists(), "{} removed: {out:?}", dir.display());
    assert!(out.stdout.contains("--keep"), "{out:?}");
    assert_eq!(job_cgroups(), Vec::<PathBuf>::new(), "no job cgroup left");
    // No process still works in the demo's dir (FFmpeg's argv names it).
    let left: Vec<String> = processes_naming(&dir).into_iter().map(|(_, c)| c).collect();
    assert_eq!(left, Vec::<String>::new(), "processes left");

    // No FFmpeg on PATH (and no apt-get to install it with): the exact
    // command to run, exit 1, and nothing started.
    let out = run(&["demo"], &[("PATH", "/nonexistent")], "", LONG);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("sudo apt-get update && sudo apt-get install -y ffmpeg"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("standalone node"), "{out:?}");

    let out = run(&["demo", "--duration", "0.5", "--keep"], &[], "", LONG);
    ok(&out);
    let dir = data_dir(&out);
    let file = dir.join("media").join("demo-720p.mp4");
    let kept = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(kept > 0, "{} kept: {out:?}", file.display());
}

/// The job cgroups under the demo's cgroup parent (the parent itself left out).
fn demo_job_cgroups() -> Vec<PathBuf> {
    cgroup_dirs("ffrtmp-demo")
        .into_iter()
        .filter(|d| !d.ends_with("ffrtmp-demo"))
        .collect()
}

/// Every process whose command line names `dir`: (pid, command line).
fn processes_naming(dir: &std::path::Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse().ok()?;
            let c = std::fs::read(e.path().join("cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&c).replace('\0', " ")))
        })
        .filter(|(_, c)| c.contains(&needle))
        .collect()
}

/// Ctrl-C (SIGINT to `ffrtmp` alone) while the demo's jobs run: its
/// `ffrtmp-node` child is stopped by pid and waited for, so no process, job
/// cgroup or data dir is left, and the demo exits 1 saying it was
/// interrupted. (Before, the demo's node was in the `ffrtmp` process and
/// SIGINT ended it on the spot: the data dir and the FFmpeg processes
/// stayed.)
#[test]
fn an_interrupted_demo_stops_its_node_and_leaves_nothing_behind() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};

    let _g = serial();
    require_ffmpeg();
    /// The demo, interrupted and waited for if the test fails part way.
    struct Demo(std::process::Child);
    impl Drop for Demo {
        fn drop(&mut self) {
            // Only while it runs: a reaped pid may be another process's.
            let running = matches!(self.0.try_wait(), Ok(None));
            if let (true, Ok(pid)) = (running, i32::try_from(self.0.id())) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            }
            let _ = self.0.wait();
        }
    }
    let mut demo = Demo(
        Command::new(CLI)
            .args(["demo", "--duration", "120"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the demo"),
    );
    let stdout = demo.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let dir = wait_for("the demo's data dir", LONG, || {
        let line = rx.try_recv().ok()?;
        let (_, d) = line.rsplit_once("(data in ")?;
        Some(PathBuf::from(d.strip_suffix(')')?))
    });
    wait_for("a running job's cgroup", LONG, || {
        (!demo_job_cgroups().is_empty()).then_some(())
    });
    // The node: the demo's own child (its job guards are forks of it).
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let node: Vec<u32> = processes_naming(&dir)
        .into_iter()
        .filter(|(pid, c)| c.contains("ffrtmp-node") && parent_of(*pid) == Some(demo.0.id()))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(node.len(), 1, "one ffrtmp-node child: {node:?}");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(demo.0.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let status = wait_for("the demo to exit", LONG, || {
        demo.0.try_wait().expect("wait")
    });
    let mut stderr = String::new();
    demo.0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        !std::path::Path::new(&format!("/proc/{}", node[0])).exists(),
        "the node process {} is gone (and reaped)",
        node[0]
    );
    assert_eq!(processes_naming(&dir), Vec::new(), "processes left");
    assert_eq!(
        demo_job_cgroups(),
        Vec::<PathBuf>::new(),
        "no job cgroup left: {stderr}"
    );
    assert!(!dir.exists(), "{} removed", dir.display());
}
