//! Orchestration overhead: the wall time of a real 10-second 720p libx264
//! encode run through the cluster, divided by the wall time of the same
//! FFmpeg command run directly (docs/BENCHMARKS.md).
//!
//! `cargo bench -p ffrtmp --bench overhead -- --runs 1 --pairs 5`
//!
//! A real master and one real worker (`--slots 1`) on 127.0.0.1. A first
//! job through the cluster (not timed) gives the exact argv the worker
//! runs: it is read from `/proc/<FFmpeg pid>/cmdline` while that job runs.
//! Then `--pairs` pairs, in alternating order (cluster first, then direct
//! first, ...), each with `--gap-ms` of idle before it:
//! - *cluster*: from writing `POST /v1/jobs` to the end of the job's event
//!   stream (`GET /v1/jobs/{id}/events`, which ends right after the terminal
//!   state), i.e. what a client waits for; the job must succeed;
//! - *direct*: the same argv spawned by this process (`std::process`, no
//!   shell) at the niceness the worker gave FFmpeg (`--direct-nice N` to
//!   change it; on a busy machine a nice 10 FFmpeg gets much less CPU than a
//!   nice 0 one), stdout (`-progress pipe:1`) and stderr read to the end,
//!   from the spawn to the exit status.
//!
//! The ratio cluster / direct is computed per pair. FFmpeg's own wall time in
//! the cluster (the guard's `start` → `stop`) is printed too, which splits
//! the difference between "FFmpeg ran slower" and "the path around it".
//! The job cgroup's CPU quota and memory limit are read while it runs.
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

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use serde_json::{json, Value};
use support::*;

struct Opts {
    runs: usize,
    pairs: usize,
    duration_s: f64,
    gap: Duration,
    quick: bool,
    /// Niceness of the direct runs; default: the cluster FFmpeg's.
    direct_nice: Option<i32>,
}

impl Opts {
    fn parse() -> Opts {
        let mut o = Opts {
            runs: 1,
            pairs: 5,
            duration_s: 10.0,
            gap: Duration::from_secs(2),
            quick: false,
            direct_nice: None,
        };
        let (mut pairs, mut duration) = (None, None);
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            if a == "--bench" {
                continue;
            }
            let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
            match a.as_str() {
                "--quick" => o.quick = true,
                "--runs" => o.runs = val().parse().expect("--runs N"),
                "--pairs" => pairs = Some(val().parse().expect("--pairs N")),
                "--duration" => duration = Some(val().parse().expect("--duration SECONDS")),
                "--gap-ms" => o.gap = Duration::from_millis(val().parse().expect("--gap-ms MS")),
                "--direct-nice" => o.direct_nice = Some(val().parse().expect("--direct-nice N")),
                other => panic!(
                    "unknown argument {other:?}; use --quick --runs N --pairs N \
                     --duration SECONDS --gap-ms MS --direct-nice N"
                ),
            }
        }
        if o.quick {
            o.pairs = 2;
            o.duration_s = 1.0;
        }
        o.pairs = pairs.unwrap_or(o.pairs);
        o.duration_s = duration.unwrap_or(o.duration_s);
        assert!(o.runs >= 1 && o.pairs >= 1);
        o
    }
}

/// The job: the `720p30-h264` scenario's defaults on a `testsrc2` input.
fn job_body(duration_s: f64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "scenario": "720p30-h264",
        "input": {"type": "testsrc", "duration_s": duration_s},
        "output": {"type": "null"}
    }))
    .expect("job JSON")
}

/// Submits the job and follows its event stream to the end: (job id, wall).
fn through_cluster(base: &str, body: &[u8]) -> (String, Duration) {
    let mut http = RawHttp::connect(base);
    let mut events = RawHttp::connect(base);
    let t0 = Instant::now();
    let (status, resp) = http.request("POST", "/v1/jobs", Some(body));
    let v: Value = serde_json::from_slice(&resp).expect("job JSON");
    assert_eq!(status, 201, "submission refused: {v}");
    let id = v["id"].as_str().expect("id").to_string();
    // Ends after the terminal state (docs/API.md).
    let (status, _) = events.request("GET", &format!("/v1/jobs/{id}/events"), None);
    let wall = t0.elapsed();
    assert_eq!(status, 200, "GET /v1/jobs/{id}/events");
    (id, wall)
}

/// Spawns `argv` with no shell at niceness `nice` and reads its output to
/// the end: wall time.
fn direct(argv: &[String], nice: i32) -> Duration {
    use std::os::unix::process::CommandExt;
    let t0 = Instant::now();
    let mut cmd = Command::new(&argv[0]);
    // SAFETY: setpriority(2) is async-signal-safe; nothing else runs
    // between fork and exec here.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg");
    let mut err = child.stderr.take().expect("stderr");
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut sink = Vec::new();
    out.read_to_end(&mut sink).expect("ffmpeg stdout");
    let status = child.wait().expect("wait ffmpeg");
    let wall = t0.elapsed();
    let stderr = errs.join().expect("stderr reader");
    assert!(status.success(), "direct ffmpeg failed: {status}\n{stderr}");
    wall
}

struct RunResult {
    ratio: Vec<f64>,
    cluster_s: Vec<f64>,
    direct_s: Vec<f64>,
    ffmpeg_in_cluster_s: Vec<f64>,
    /// Cluster wall − FFmpeg's own wall in the cluster, ms.
    around_ms: Vec<f64>,
    limits: String,
    load: String,
}

fn run(o: &Opts, run_no: usize) -> RunResult {
    let load_before = loadavg();
    let cluster = Cluster::start_opts(0, 1, common::cluster::libx264_only(), Vec::new());
    let mut g = Guard(Some(cluster));
    let c = g.0.as_mut().expect("cluster");
    let run_log = c.dir.path().join("w0.runlog");
    let rl = run_log.to_string_lossy().into_owned();
    c.add_worker_with(0, true, &["--run-log", &rl]);
    c.wait_nodes(1);
    let body = job_body(o.duration_s);

    // ---- the argv, from a first (untimed) job
    let mut http = RawHttp::connect(&c.base);
    let (status, resp) = http.request("POST", "/v1/jobs", Some(&body));
    let v: Value = serde_json::from_slice(&resp).expect("job JSON");
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let (argv, limits, cluster_nice) = common::wait_for(
        "the first job's FFmpeg process",
        Duration::from_secs(60),
        || {
            let pid = c.job_pids(0, &id).into_iter().find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .map(|s| s.trim() == "ffmpeg")
                    .unwrap_or(false)
            })?;
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let dirs: Vec<_> = common::cgroup_dirs(&c.workers[0].cgroup_parent)
                .into_iter()
                .filter(|d| d.to_string_lossy().contains(&id))
                .collect();
            let quota = common::cpu_quota(&dirs);
            let mem = common::memory_limit(&dirs);
            let nice: i32 = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|st| {
                    st.rsplit(')')
                        .next()?
                        .split_whitespace()
                        .nth(16)?
                        .parse()
                        .ok()
                })?;
            let limits = format!(
                "FFmpeg nice {nice}; job cgroup: CPU quota {}, memory limit {}",
                match quota {
                    Some((q, p)) if q as i64 > 0 && q != u64::MAX => format!("{q}/{p} µs"),
                    _ => "none".into(),
                },
                match mem {
                    Some(b) if b < (1u64 << 60) => format!("{} MiB", b >> 20),
                    _ => "none".into(),
                }
            );
            (!argv.is_empty()).then_some((argv, limits, nice))
        },
    );
    let (status, _) = http.request("GET", &format!("/v1/jobs/{id}/events"), None);
    assert_eq!(status, 200);
    println!("run {run_no}: argv {argv:?}");
    println!("run {run_no}: {limits}");
    // The direct runs start `ffmpeg` from PATH like the worker does, at the
    // niceness the worker gave FFmpeg unless --direct-nice says otherwise.
    let mut argv = argv;
    argv[0] = "ffmpeg".into();
    let nice = o.direct_nice.unwrap_or(cluster_nice);
    println!("run {run_no}: direct runs at nice {nice}");

    let mut r = RunResult {
        ratio: Vec::new(),
        cluster_s: Vec::new(),
        direct_s: Vec::new(),
        ffmpeg_in_cluster_s: Vec::new(),
        around_ms: Vec::new(),
        limits,
        load: String::new(),
    };
    for pair in 0..o.pairs {
        let mut cl = None;
        let mut di = None;
        for turn in 0..2 {
            std::thread::sleep(o.gap);
            if (turn == 0) == (pair % 2 == 0) {
                let (id, wall) = through_cluster(&c.base, &body);
                let (_, job) = http.get_json(&format!("/v1/jobs/{id}"));
                assert_eq!(job["state"], "succeeded", "{job}");
                cl = Some((id, wall));
            } else {
                di = Some(direct(&argv, nice));
            }
        }
        let (id, cw) = cl.expect("cluster half");
        let dw = di.expect("direct half");
        let ev = read_run_log(&run_log);
        let start = events_of(&ev, "start");
        let stop = events_of(&ev, "stop");
        if let (Some(a), Some(b)) = (start.get(id.as_str()), stop.get(id.as_str())) {
            let ff = (b - a) as f64 / 1e9;
            r.ffmpeg_in_cluster_s.push(ff);
            r.around_ms.push((cw.as_secs_f64() - ff) * 1e3);
        }
        let ratio = cw.as_secs_f64() / dw.as_secs_f64();
        println!(
            "run {run_no} pair {}: cluster {:.3} s, direct {:.3} s, ratio {:.4} ({} first)",
            pair + 1,
            cw.as_secs_f64(),
            dw.as_secs_f64(),
            ratio,
            if pair % 2 == 0 { "cluster" } else { "direct" }
        );
        r.ratio.push(ratio);
        r.cluster_s.push(cw.as_secs_f64());
        r.direct_s.push(dw.as_secs_f64());
    }
    drop(g);
    r.load = format!("{load_before} → {}", loadavg());
    r
}

fn main() {
    let o = Opts::parse();
    common::require_ffmpeg();
    println!(
        "overhead: {} run(s) × {} pairs, 720p30-h264 defaults, testsrc2 {} s → null, \
         {} ms idle before each half; binary {}",
        o.runs,
        o.pairs,
        o.duration_s,
        o.gap.as_millis(),
        common::BIN
    );
    let mut all = Vec::new();
    for i in 1..=o.runs {
        let r = run(&o, i);
        println!(
            "run {i}: load average {}; ratio median {:.4} worst {:.4}",
            r.load,
            median(&r.ratio),
            worst(&r.ratio, true)
        );
        all.push(r);
    }
    let flat = |f: &dyn Fn(&RunResult) -> &Vec<f64>| {
        all.iter()
            .flat_map(|r| f(r).iter().copied())
            .collect::<Vec<f64>>()
    };
    println!(
        "\n== summary over {} pairs (median, worst) ==",
        flat(&|r| &r.ratio).len()
    );
    line(
        "OVERHEAD cluster / direct wall time",
        "×",
        &flat(&|r| &r.ratio),
        true,
    );
    line(
        "cluster: POST sent → event stream ended",
        "s",
        &flat(&|r| &r.cluster_s),
        true,
    );
    line("direct: spawn → exit", "s", &flat(&|r| &r.direct_s), true);
    line(
        "FFmpeg in the cluster: guard start → stop",
        "s",
        &flat(&|r| &r.ffmpeg_in_cluster_s),
        true,
    );
    line(
        "cluster wall − FFmpeg's own wall in it (the path around FFmpeg)",
        "ms",
        &flat(&|r| &r.around_ms),
        true,
    );
    for r in &all {
        println!("{}", r.limits);
    }
}
