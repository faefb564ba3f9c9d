//! Dispatch latency: from sending `POST /v1/jobs` to FFmpeg being exec'd on
//! a worker, one job at a time, over QUIC on loopback, durable writes
//! included (docs/BENCHMARKS.md).
//!
//! `cargo bench -p ffrtmp --bench dispatch_latency -- --runs 3 --samples 200`
//! (`--quick`: one run of 20 samples, the CI smoke check).
//!
//! Each run starts a real master (`ffrtmp-node --role master`, sled in a
//! temp dir) and one real worker (`--slots 1`, `--run-log`), both on
//! 127.0.0.1. Then, `--samples` times, with the worker's slot free and the
//! system idle for `--gap-ms`:
//! - the bench reads CLOCK_MONOTONIC and writes a whole `POST /v1/jobs`
//!   request on a kept-alive TCP connection (its own tiny HTTP/1.1 client,
//!   nothing queued in front of the socket);
//! - the sample ends when FFmpeg is exec'd: the FFmpeg child of the job's
//!   guard process writes `exec <CLOCK_MONOTONIC ns>` to the run log right
//!   before `execve(2)` (runtime/spawn/src/guard.rs);
//! - the bench then waits for the job to finish (the run log's `exit`, then
//!   the master's record) before the next sample.
//!
//! The latency is split with timestamps the processes write anyway: the
//! `201` reaching the bench (the submission durable), the master's
//! `assigned` log line (the submission and the assignment written, the
//! `Assign` held until the one flush that covers both), the worker's debug lines `assignment received`
//! (NodeActor) and `job cgroup ready` (JobActor, cgroups made and limited),
//! `exec` (FFmpeg's side of the guard's vfork-style clone, right before
//! execve) and the guard's `start` (written once it resumes, after that
//! execve). Log lines carry the wall clock (µs), mapped onto CLOCK_MONOTONIC
//! by reading both clocks. A 4 KiB write + `fdatasync` loop in the master's
//! data dir before and after each run gives the disk's flush cost.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;
use support::Guard;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cluster::{plain, Cluster, Proc};
use serde_json::{json, Value};
use support::*;

struct Opts {
    runs: usize,
    samples: usize,
    warmup: usize,
    /// Idle time between a job's end and the next submission.
    gap: Duration,
    duration_s: f64,
    keep_logs: Option<PathBuf>,
    quick: bool,
}

impl Opts {
    fn parse() -> Opts {
        let mut o = Opts {
            runs: 3,
            samples: 200,
            warmup: 5,
            gap: Duration::from_millis(50),
            duration_s: 0.04,
            keep_logs: None,
            quick: false,
        };
        let (mut runs, mut samples) = (None, None);
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            // `cargo bench` passes `--bench` to every bench target.
            if a == "--bench" {
                continue;
            }
            let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
            match a.as_str() {
                "--quick" => o.quick = true,
                "--runs" => runs = Some(val().parse().expect("--runs N")),
                "--samples" => samples = Some(val().parse().expect("--samples N")),
                "--warmup" => o.warmup = val().parse().expect("--warmup N"),
                "--gap-ms" => o.gap = Duration::from_millis(val().parse().expect("--gap-ms MS")),
                "--duration" => o.duration_s = val().parse().expect("--duration SECONDS"),
                "--keep-logs" => o.keep_logs = Some(PathBuf::from(val())),
                other => panic!(
                    "unknown argument {other:?}; use --quick --runs N --samples N --warmup N \
                     --gap-ms MS --duration SECONDS --keep-logs DIR"
                ),
            }
        }
        if o.quick {
            o.runs = 1;
            o.samples = 20;
            o.warmup = 2;
        }
        o.runs = runs.unwrap_or(o.runs);
        o.samples = samples.unwrap_or(o.samples);
        assert!(o.runs >= 1 && o.samples >= 1, "--runs and --samples ≥ 1");
        o
    }
}

/// The job: a tiny real libx264 encode to `-f null`.
fn job_body(duration_s: f64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "scenario": "480p30-h264",
        "width": 160, "height": 90, "preset": "ultrafast",
        "input": {"type": "testsrc", "duration_s": duration_s},
        "output": {"type": "null"}
    }))
    .expect("job JSON")
}

/// Per-sample parts, in ms.
#[derive(Default)]
struct Parts {
    /// send → FFmpeg exec'd: the figure.
    total: Vec<f64>,
    /// send → the guard's `start` (after FFmpeg's execve).
    to_start: Vec<f64>,
    /// send → `201 Created` read (submission durable).
    response: Vec<f64>,
    /// send → master `assigned` (parsed, written, placed; not yet flushed).
    to_assigned: Vec<f64>,
    /// `assigned` → worker `assignment received` (the flush, QUIC, NodeActor).
    to_worker: Vec<f64>,
    /// `assignment received` → `job cgroup ready` (JobActor, cgroup mkdirs, limits).
    cgroup: Vec<f64>,
    /// `job cgroup ready` → `exec` (pipes, fork, cgroup join, vfork).
    spawn: Vec<f64>,
    /// `exec` → guard `start` (the guard resumes after FFmpeg's execve).
    start_exec: Vec<f64>,
    /// `exec` → worker `ffmpeg started` (execve done, the status pipe read).
    exec_seen: Vec<f64>,
}

struct RunResult {
    total: Dist,
    to_start: Dist,
    response: Dist,
    to_assigned: Dist,
    to_worker: Dist,
    cgroup: Dist,
    spawn: Dist,
    start_exec: Dist,
    exec_seen: Dist,
    fsync: Dist,
    fsync_inplace: Dist,
    load_before: String,
    load_after: String,
}

fn run(o: &Opts, run_no: usize) -> RunResult {
    let load_before = loadavg();
    let cluster = Cluster::start_opts(0, 1, common::cluster::libx264_only(), Vec::new());
    let mut g = Guard(Some(cluster));
    let c = g.0.as_mut().expect("cluster");
    let run_log = c.dir.path().join("w0.runlog");
    let mut args = c.worker_args(0, true);
    args.extend(["--run-log".into(), run_log.to_string_lossy().into_owned()]);
    // The two worker modules whose debug lines split the latency.
    let w = Proc::spawn_with_env(
        "w0",
        c.dir.path(),
        args,
        &[(
            "FFRTMP_LOG",
            "info,ffrtmp_actors::node=debug,ffrtmp_actors::job=debug",
        )],
    );
    c.workers.push(w);
    c.wait_nodes(1);
    let store_dir = c.dir.path().join("m");
    let mut fsync = fdatasync_probe(&store_dir, 100, true);
    let mut fsync_inplace = fdatasync_probe(&store_dir, 100, false);

    let body = job_body(o.duration_s);
    let mut http = RawHttp::connect(&c.base);
    let mut poll = RawHttp::connect(&c.base);
    // (job id, send ns, 201 read ns), measured samples only.
    let mut sent: Vec<(String, u64, u64)> = Vec::new();
    let mut last_end = Instant::now();
    for i in 0..o.warmup + o.samples {
        // Pace: the system idle for `gap` since the previous job ended.
        if let Some(rest) = o.gap.checked_sub(last_end.elapsed()) {
            std::thread::sleep(rest);
        }
        let t0 = mono_ns();
        http.send("POST", "/v1/jobs", Some(&body));
        let (status, resp) = http.read_response();
        let t1 = mono_ns();
        let v: Value = serde_json::from_slice(&resp).expect("job JSON");
        assert_eq!(status, 201, "submission refused: {v}");
        let id = v["id"].as_str().expect("id").to_string();
        // Done on the worker (the JobActor's `exit`), then on the master.
        common::wait_for(
            &format!("job {id} to exit on the worker"),
            Duration::from_secs(60),
            || {
                std::thread::sleep(Duration::from_millis(5));
                read_run_log(&run_log)
                    .iter()
                    .any(|e| e.kind == "exit" && e.job == id)
                    .then_some(())
            },
        );
        let job = common::wait_for(
            &format!("job {id} to end on the master"),
            Duration::from_secs(60),
            || {
                let (_, j) = poll.get_json(&format!("/v1/jobs/{id}"));
                matches!(
                    j["state"].as_str(),
                    Some("succeeded" | "failed" | "cancelled" | "timed_out")
                )
                .then_some(j)
            },
        );
        assert_eq!(job["state"], "succeeded", "run {run_no}: {job}");
        last_end = Instant::now();
        if i >= o.warmup {
            sent.push((id, t0, t1));
        }
    }
    fsync.extend(fdatasync_probe(&store_dir, 100, true));
    fsync_inplace.extend(fdatasync_probe(&store_dir, 100, false));

    // ---- the timestamps
    let events = read_run_log(&run_log);
    let exec = events_of(&events, "exec");
    let start = events_of(&events, "start");
    let master_log = plain(&c.master_log());
    let worker_log = plain(&c.workers[0].log());
    let assigned = times_of(&master_log, "assigned");
    let received = times_of(&worker_log, "assignment received");
    let cg_ready = times_of(&worker_log, "job cgroup ready");
    let started = times_of(&worker_log, "ffmpeg started");
    let off = mono_to_unix();
    let unix = |ns: u64| ns as f64 / 1e9 + off;
    let mut p = Parts::default();
    let msd = |a: f64, b: f64| (b - a) * 1e3;
    for (id, t0, t1) in &sent {
        let &x = exec
            .get(id.as_str())
            .unwrap_or_else(|| panic!("no exec line for job {id}: is `exec` in the run log?"));
        let &s = start.get(id.as_str()).expect("start line");
        p.total.push((x - t0) as f64 / 1e6);
        p.to_start.push((s - t0) as f64 / 1e6);
        p.response.push((t1 - t0) as f64 / 1e6);
        p.start_exec.push((s as f64 - x as f64) / 1e6);
        let (Some(&a), Some(&r), Some(&cg), Some(&st)) = (
            assigned.get(id),
            received.get(id),
            cg_ready.get(id),
            started.get(id),
        ) else {
            panic!("job {id}: a log line is missing (assigned / assignment received / job cgroup ready / ffmpeg started)");
        };
        p.to_assigned.push(msd(unix(*t0), a));
        p.to_worker.push(msd(a, r));
        p.cgroup.push(msd(r, cg));
        p.spawn.push(msd(cg, unix(x)));
        p.exec_seen.push(msd(unix(x), st));
    }
    if let Some(keep) = &o.keep_logs {
        let to = keep.join(format!("run{run_no}"));
        std::fs::create_dir_all(&to).expect("--keep-logs dir");
        for name in ["master.log", "w0.log", "w0.runlog"] {
            let _ = std::fs::copy(c.dir.path().join(name), to.join(name));
        }
    }
    drop(g);
    RunResult {
        total: dist(&p.total),
        to_start: dist(&p.to_start),
        response: dist(&p.response),
        to_assigned: dist(&p.to_assigned),
        to_worker: dist(&p.to_worker),
        cgroup: dist(&p.cgroup),
        spawn: dist(&p.spawn),
        start_exec: dist(&p.start_exec),
        exec_seen: dist(&p.exec_seen),
        fsync: dist(&fsync),
        fsync_inplace: dist(&fsync_inplace),
        load_before,
        load_after: loadavg(),
    }
}

fn main() {
    let o = Opts::parse();
    common::require_ffmpeg();
    println!(
        "dispatch_latency: {} runs × {} samples (+{} warm-up), one job at a time, {} ms idle \
         between jobs; job: testsrc2 {} s 160x90 libx264 ultrafast → null; binary {}",
        o.runs,
        o.samples,
        o.warmup,
        o.gap.as_millis(),
        o.duration_s,
        common::BIN
    );
    let started = Instant::now();
    let mut results = Vec::new();
    for i in 1..=o.runs {
        let t = Instant::now();
        let r = run(&o, i);
        println!(
            "run {i}: {:.0} s, load average {} → {}; send → exec p50 {:.3} ms p99 {:.3} ms \
             max {:.3} ms; 201 p50 {:.3} ms; fdatasync p50 {:.3} ms p99 {:.3} ms",
            t.elapsed().as_secs_f64(),
            r.load_before,
            r.load_after,
            r.total.p50,
            r.total.p99,
            r.total.max,
            r.response.p50,
            r.fsync.p50,
            r.fsync.p99,
        );
        results.push(r);
    }
    let d = |f: &dyn Fn(&RunResult) -> Dist| results.iter().map(f).collect::<Vec<Dist>>();
    println!(
        "\n== summary over {} runs (median of the runs, worst run) ==",
        o.runs
    );
    dist_lines_mean(
        "DISPATCH LATENCY send → FFmpeg exec'd",
        "ms",
        &d(&|r| r.total),
    );
    dist_lines(
        "send → guard `start` (FFmpeg exec'd, guard resumed)",
        "ms",
        &d(&|r| r.to_start),
    );
    println!("-- breakdown (log timestamps; the means add up, the percentiles do not)");
    dist_lines_mean(
        "  send → 201 read (submission durable)",
        "ms",
        &d(&|r| r.response),
    );
    dist_lines_mean(
        "  a send → master `assigned` (parse, write, place)",
        "ms",
        &d(&|r| r.to_assigned),
    );
    dist_lines_mean(
        "  b `assigned` → worker `assignment received` (flush, QUIC)",
        "ms",
        &d(&|r| r.to_worker),
    );
    dist_lines_mean(
        "  c → `job cgroup ready` (JobActor, cgroups)",
        "ms",
        &d(&|r| r.cgroup),
    );
    dist_lines_mean(
        "  d → `exec` (fork, cgroup join, vfork)",
        "ms",
        &d(&|r| r.spawn),
    );
    dist_lines_mean(
        "  (after) `exec` → guard `start` (execve done)",
        "ms",
        &d(&|r| r.start_exec),
    );
    dist_lines_mean(
        "  (after) `exec` → worker `ffmpeg started`",
        "ms",
        &d(&|r| r.exec_seen),
    );
    dist_lines(
        "4 KiB append + fdatasync in the master's data dir",
        "ms",
        &d(&|r| r.fsync),
    );
    dist_lines(
        "4 KiB rewrite in place + fdatasync, same dir",
        "ms",
        &d(&|r| r.fsync_inplace),
    );
    println!(
        "{} samples in {} runs, every job succeeded; {:.0} s in all",
        o.samples * o.runs,
        o.runs,
        started.elapsed().as_secs_f64()
    );
}
