//! Failure detection and recovery (docs/BENCHMARKS.md, "Failure detection").
//!
//! `cargo bench -p ffrtmp --bench failure_detection -- --runs 10`
//! `cargo bench -p ffrtmp --bench failure_detection -- --busy --minutes 10`
//! `cargo bench -p ffrtmp --bench failure_detection -- --quick`
//!
//! Each run starts a fresh real cluster (the tests' harness: a master and
//! two workers, `ffrtmp-node` processes on 127.0.0.1, QUIC with mutual TLS,
//! sled stores in a temp dir; each worker writes a run log), submits one
//! long real libx264 encode, waits until its FFmpeg runs, then either
//! - `kill`: SIGKILLs the worker process running it, or
//! - `stop`: SIGSTOPs it (a hung host or a partition: no socket is closed),
//! - `restart`: SIGKILLs it and at once starts it again on the same data
//!   dir, as a supervisor (systemd `Restart=always`) would,
//!
//! and measures, from the signal:
//! - *declared lost*: the master's "node lost" log line (its own timestamp,
//!   written when the link's end reaches the scheduler); the first
//!   `GET /v1/nodes` (polled every 5 ms) that shows the node not connected
//!   is printed next to it as a cross-check;
//! - *requeued*: the master's "attempt lost" line (the fence passed, or the
//!   restarted node's hello proved the attempt gone);
//! - *running elsewhere*: the `start` line the guard of the new attempt
//!   writes into its worker's run log just after forking FFmpeg
//!   (CLOCK_MONOTONIC, read here too);
//! - *old copy gone*: every process of the old attempt (its guard and
//!   FFmpeg, read from the job's cgroup before the signal) seen gone, polled
//!   every 1 ms. After SIGSTOP the guard SIGKILLs FFmpeg when the lease
//!   ends; after SIGKILL the guard dies with the worker and FFmpeg with the
//!   guard (PR_SET_PDEATHSIG both), so no run-log line records that end.
//!
//! and checks on every run that the old copy was gone before the new one
//! started (the fencing invariant) and that the job's first attempt ended as
//! `node_lost` (`worker_crash` for `restart`).
//!
//! Configurations (`--config`, comma-separated; default `default,short,fast`;
//! `--faults` likewise, default `kill,stop,restart`):
//! - `default`: lease 10 s, QUIC keep-alive 300 ms / idle timeout 1.5 s,
//!   kill grace 2 s (the product's defaults);
//! - `short`: lease 1.5 s, kill grace 0.25 s, the same QUIC timers (what
//!   docs/BENCHMARKS.md recommends for the recovery goals);
//! - `fast`: `short` with keep-alive 100 ms / idle timeout 500 ms (quicker
//!   detection, paid for in false-positive margin);
//! - `custom`: the flags `--lease-ms --keep-alive-ms --idle-timeout-ms
//!   --kill-grace-s` (each defaults to `short`'s value).
//!
//! `--busy --minutes M`: the false-positive check. Two workers × one slot
//! (= the machine's two cores) encode long 720p libx264 `medium` jobs back
//! to back for M minutes under the first configuration given (`short`
//! unless `--config` says otherwise); `GET /v1/nodes` is polled every 50 ms
//! and the run fails if a worker is ever shown not connected, if the master
//! logs "node lost", if a worker stops its jobs for the lease or a guard
//! kills one, or if any job takes a second attempt.
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
use support::{loadavg, log_time, mono_ns, Guard};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cluster::{lines_with, plain, Cluster};
use serde_json::{json, Value};

// ---------------------------------------------------------------- options

#[derive(Clone, Debug)]
struct Config {
    name: String,
    lease_ms: u64,
    keep_alive_ms: u64,
    idle_timeout_ms: u64,
    kill_grace_s: f64,
}

impl Config {
    fn named(name: &str, custom: &Config) -> Config {
        let short = Config {
            name: "short".into(),
            lease_ms: 1500,
            keep_alive_ms: 300,
            idle_timeout_ms: 1500,
            kill_grace_s: 0.25,
        };
        match name {
            "default" => Config {
                name: "default".into(),
                lease_ms: 10_000,
                keep_alive_ms: 300,
                idle_timeout_ms: 1500,
                kill_grace_s: 2.0,
            },
            "short" => short,
            "fast" => Config {
                name: "fast".into(),
                keep_alive_ms: 100,
                idle_timeout_ms: 500,
                ..short
            },
            "custom" => custom.clone(),
            other => panic!("unknown --config {other:?}; use default, short, fast or custom"),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{}: lease {} ms, keep-alive {} ms, idle timeout {} ms, kill grace {} s",
            self.name, self.lease_ms, self.keep_alive_ms, self.idle_timeout_ms, self.kill_grace_s
        )
    }

    fn quic_args(&self) -> Vec<String> {
        vec![
            "--keep-alive-ms".into(),
            self.keep_alive_ms.to_string(),
            "--idle-timeout-ms".into(),
            self.idle_timeout_ms.to_string(),
        ]
    }

    fn master_args(&self) -> Vec<String> {
        let mut a = self.quic_args();
        a.extend(["--lease-ms".into(), self.lease_ms.to_string()]);
        a
    }

    fn worker_args(&self) -> Vec<String> {
        let mut a = self.quic_args();
        a.extend([
            "--kill-grace-s".into(),
            self.kill_grace_s.to_string(),
            "--encoders".into(),
            "libx264".into(),
        ]);
        a
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill,
    Stop,
    Restart,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "SIGKILL",
            Fault::Stop => "SIGSTOP",
            Fault::Restart => "SIGKILL + restart",
        }
    }
}

struct Opts {
    runs: usize,
    configs: Vec<Config>,
    faults: Vec<Fault>,
    busy: bool,
    minutes: f64,
}

impl Opts {
    fn parse() -> Opts {
        let mut runs = 10;
        let mut names = "default,short,fast".to_string();
        let mut faults = "kill,stop,restart".to_string();
        let mut busy = false;
        let mut minutes: f64 = 10.0;
        let mut quick = false;
        let mut custom = Config::named("short", &dummy());
        custom.name = "custom".into();
        let mut args = std::env::args().skip(1);
        let mut named = false;
        while let Some(a) = args.next() {
            // `cargo bench` passes `--bench` to every bench target.
            if a == "--bench" {
                continue;
            }
            let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
            match a.as_str() {
                "--runs" => runs = val().parse().expect("--runs N"),
                "--config" => {
                    names = val();
                    named = true;
                }
                "--faults" => faults = val(),
                "--busy" => busy = true,
                "--minutes" => minutes = val().parse().expect("--minutes M"),
                "--quick" => quick = true,
                "--lease-ms" => custom.lease_ms = val().parse().expect("--lease-ms MS"),
                "--keep-alive-ms" => {
                    custom.keep_alive_ms = val().parse().expect("--keep-alive-ms MS")
                }
                "--idle-timeout-ms" => {
                    custom.idle_timeout_ms = val().parse().expect("--idle-timeout-ms MS")
                }
                "--kill-grace-s" => custom.kill_grace_s = val().parse().expect("--kill-grace-s S"),
                other => panic!(
                    "unknown argument {other:?}; use --runs N --config default,short,fast,custom \
                     --faults kill,stop,restart --busy --minutes M --quick --lease-ms \
                     --keep-alive-ms --idle-timeout-ms --kill-grace-s"
                ),
            }
        }
        if quick {
            // A couple of runs of the recommended configuration, under a minute.
            runs = 2;
            if !named {
                names = "short".into();
            }
            minutes = minutes.min(1.0);
        }
        if busy && !named {
            names = "short".into();
        }
        let configs: Vec<Config> = names
            .split(',')
            .map(|n| Config::named(n.trim(), &custom))
            .collect();
        let faults = faults
            .split(',')
            .map(|f| match f.trim() {
                "kill" => Fault::Kill,
                "stop" => Fault::Stop,
                "restart" => Fault::Restart,
                other => panic!("unknown fault {other:?}; use kill, stop, restart"),
            })
            .collect();
        assert!(runs >= 1, "--runs must be at least 1");
        assert!(minutes > 0.0, "--minutes must be positive");
        Opts {
            runs,
            configs,
            faults,
            busy,
            minutes,
        }
    }
}

fn dummy() -> Config {
    Config {
        name: String::new(),
        lease_ms: 0,
        keep_alive_ms: 0,
        idle_timeout_ms: 0,
        kill_grace_s: 0.0,
    }
}

// ---------------------------------------------------------------- clocks

fn unix_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

// ---------------------------------------------------------------- run logs

/// `(event, CLOCK_MONOTONIC ns)` of the run-log lines about `job`.
fn run_log_events(path: &Path, job: &str) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[2] == job).then(|| (f[0].to_string(), f[1].parse().ok()))
        })
        .filter_map(|(e, ns)| Some((e, ns?)))
        .collect()
}

fn first(events: &[(String, u64)], kinds: &[&str]) -> Option<u64> {
    events
        .iter()
        .filter(|(e, _)| kinds.contains(&e.as_str()))
        .map(|(_, ns)| *ns)
        .min()
}

// ---------------------------------------------------------------- cluster

fn start_cluster(cfg: &Config, workers: usize, slots: u32) -> (Guard, Vec<PathBuf>) {
    let mut c = Cluster::start_opts(0, slots, cfg.worker_args(), cfg.master_args());
    let logs: Vec<PathBuf> = (0..workers)
        .map(|i| c.dir.path().join(format!("w{i}.runlog")))
        .collect();
    for (i, log) in logs.iter().enumerate() {
        let log = log.to_string_lossy().into_owned();
        c.add_worker_with(i, true, &["--run-log", &log]);
    }
    c.wait_nodes(workers);
    common::wait_for("every worker connected", Duration::from_secs(60), || {
        let n = c.nodes();
        n.iter()
            .all(|n| n["connected"] == true)
            .then_some(())
            .filter(|_| n.len() == workers)
    });
    (Guard(Some(c)), logs)
}

/// A long, CPU-bound real encode (720p libx264 `medium`).
fn long_job(duration_s: f64) -> Value {
    json!({
        "scenario": "720p30-h264",
        "preset": "medium",
        "input": {"type": "testsrc", "duration_s": duration_s},
        "output": {"type": "null"}
    })
}

// ---------------------------------------------------------------- one fault

#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    /// Signal → master logs "node lost" (s). NaN where the node never was
    /// (a restart whose hello came before the old link timed out).
    lost: f64,
    /// Signal → first `GET /v1/nodes` showing it not connected (s).
    lost_api: f64,
    /// Signal → master logs "attempt lost" (requeued) (s).
    requeued: f64,
    /// Signal → master logs the new "assigned" (s).
    assigned: f64,
    /// Signal → the new FFmpeg forked (guard's `start`) (s).
    elsewhere: f64,
    /// Signal → the old copy's processes (guard, FFmpeg) all gone (s).
    old_dead: f64,
}

fn one(cfg: &Config, fault: Fault, run_no: usize) -> Sample {
    let (mut g, logs) = start_cluster(cfg, 2, 1);
    let c = g.0.as_mut().expect("cluster");
    let id = c.submit(long_job(600.0));
    let running = c.wait_state(&id, &["running"], Duration::from_secs(60));
    let victim_node = running["node"].as_str().expect("node").to_string();
    let victim = c.worker_of(&victim_node);
    let other = 1 - victim;
    common::wait_for(
        "the job's FFmpeg in the victim's run log",
        Duration::from_secs(30),
        || first(&run_log_events(&logs[victim], &id), &["start"]),
    );
    // Let a few lease renewals pass, as in steady state.
    std::thread::sleep(Duration::from_millis(1200));
    // The old copy's processes (guard and FFmpeg, from the job's cgroup):
    // after a SIGKILL of the worker they die by PR_SET_PDEATHSIG (the
    // guard with the worker, FFmpeg with the guard) and log nothing.
    let old_pids = c.job_pids(victim, &id);
    assert!(!old_pids.is_empty(), "run {run_no}: the job's processes");
    let old_gone_ns: Mutex<Option<u64>> = Mutex::new(None);

    // Poll the node list every 5 ms from the signal on.
    let stop_poll = AtomicBool::new(false);
    let lost_api: Mutex<Option<Instant>> = Mutex::new(None);
    let base = c.base.clone();
    let (t0, t0_ns, t0_unix, sample) = std::thread::scope(|s| {
        let (t0_tx, t0_rx) = std::sync::mpsc::channel::<()>();
        let (stop_poll, lost_api, base, victim_node) = (&stop_poll, &lost_api, &base, &victim_node);
        let (old_pids, old_gone_ns) = (&old_pids, &old_gone_ns);
        let (gone_tx, gone_rx) = std::sync::mpsc::channel::<()>();
        s.spawn(move || {
            let _ = gone_rx.recv();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && !stop_poll.load(Ordering::Relaxed) {
                if old_pids.iter().all(|p| !common::pid_alive(*p)) {
                    *old_gone_ns.lock().expect("gone") = Some(mono_ns());
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        s.spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            let _ = t0_rx.recv();
            while !stop_poll.load(Ordering::Relaxed) {
                let nodes: Value = http
                    .get(format!("{base}/v1/nodes"))
                    .send()
                    .and_then(|r| r.json())
                    .unwrap_or(Value::Null);
                let at = Instant::now();
                let up = nodes["nodes"]
                    .as_array()
                    .map(|ns| {
                        ns.iter()
                            .any(|n| n["id"] == victim_node.as_str() && n["connected"] == true)
                    })
                    .unwrap_or(true);
                if !up {
                    *lost_api.lock().expect("poll") = Some(at);
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let t0_unix = unix_s();
        let t0_ns = mono_ns();
        let t0 = Instant::now();
        let _ = t0_tx.send(());
        let _ = gone_tx.send(());
        match fault {
            Fault::Stop => c.workers[victim].signal(nix::sys::signal::Signal::SIGSTOP),
            Fault::Kill | Fault::Restart => {
                c.workers[victim].signal(nix::sys::signal::Signal::SIGKILL)
            }
        }
        if fault == Fault::Restart {
            // Reap the old process, then start it again as a supervisor
            // would: same data dir (same node id), no token needed.
            c.workers[victim].wait_exit(Duration::from_secs(10));
            let log = logs[victim].to_string_lossy().into_owned();
            let mut args = c.worker_args(victim, false);
            args.extend(["--run-log".to_string(), log]);
            c.workers[victim].args = args;
            c.workers[victim].start();
        }
        // The new attempt's FFmpeg, on either worker for `restart`, on the
        // other one otherwise.
        let where_: Vec<usize> = if fault == Fault::Restart {
            vec![victim, other]
        } else {
            vec![other]
        };
        let started = common::wait_for(
            "the job's FFmpeg to run again",
            Duration::from_secs(60),
            || {
                let starts: Vec<u64> = where_
                    .iter()
                    .flat_map(|&w| run_log_events(&logs[w], &id))
                    .filter(|(e, ns)| e == "start" && *ns > t0_ns)
                    .map(|(_, ns)| ns)
                    .collect();
                starts.into_iter().min()
            },
        );
        // The declared-lost observation may come later than the rerun
        // (restart): give the poll a bounded while.
        let poll_deadline = Instant::now() + Duration::from_secs(5);
        while lost_api.lock().expect("poll").is_none() && Instant::now() < poll_deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop_poll.store(true, Ordering::Relaxed);
        let mut smp = Sample {
            elsewhere: (started - t0_ns) as f64 / 1e9,
            ..Sample::default()
        };
        // The old copy's end: its processes seen gone (polled every 1 ms).
        let old = run_log_events(&logs[victim], &id);
        let old_start = first(&old, &["start"]).expect("the old start");
        assert!(
            old_start < t0_ns,
            "run {run_no}: the old copy started before the fault"
        );
        let gone = *old_gone_ns.lock().expect("gone");
        // Never two copies at once: every process of the old copy was seen
        // gone before the new FFmpeg was forked.
        let gone = gone.unwrap_or_else(|| {
            panic!("run {run_no}: the old copy's processes {old_pids:?} still live")
        });
        assert!(
            gone < started,
            "run {run_no}: two copies at once: the old one was still running {:.3} s after the \
             new one started",
            (gone - started) as f64 / 1e9
        );
        smp.old_dead = (gone as f64 - t0_ns as f64) / 1e9;
        (t0, t0_ns, t0_unix, smp)
    });
    let _ = (t0, t0_ns);
    let mut smp = sample;
    smp.lost_api = lost_api
        .into_inner()
        .expect("poll")
        .map(|at| (at - t0).as_secs_f64())
        .unwrap_or(f64::NAN);

    // The master's own timestamps.
    let log = c.master_log();
    let after = |needles: &[&str]| -> f64 {
        lines_with(&log, needles)
            .iter()
            .filter_map(|l| log_time(l))
            .filter(|&t| t >= t0_unix - 0.001)
            .map(|t| t - t0_unix)
            .fold(f64::NAN, f64::min)
    };
    smp.lost = after(&["node lost", &victim_node]);
    smp.requeued = after(&["attempt lost", &id]);
    smp.assigned = after(&[" assigned", &id]);
    let job = c.get(&format!("/v1/jobs/{id}"));
    let reason = job["attempts"][0]["outcome"]["failure"]["reason"].clone();
    let want = if fault == Fault::Restart {
        "worker_crash"
    } else {
        "node_lost"
    };
    assert_eq!(reason, want, "run {run_no}: first attempt's end: {job}");
    assert!(
        job["attempt"].as_u64().unwrap_or(0) >= 2,
        "run {run_no}: a second attempt runs: {job}"
    );
    if fault != Fault::Restart {
        assert_eq!(
            job["node"],
            c.node_id_of(other),
            "run {run_no}: the second attempt runs on the other worker: {job}"
        );
    }
    drop(g);
    smp
}

// ---------------------------------------------------------------- busy

fn busy(cfg: &Config, minutes: f64) {
    println!(
        "busy check: 2 workers × 1 slot, back-to-back 720p libx264 medium encodes for {minutes} \
         min; {}",
        cfg.describe()
    );
    let load_before = loadavg();
    let (mut g, logs) = start_cluster(cfg, 2, 1);
    let c = g.0.as_mut().expect("cluster");
    let nodes: Vec<String> = c
        .nodes()
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_string))
        .collect();
    let cpu = || {
        let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
        let f: Vec<u64> = stat
            .lines()
            .next()
            .expect("cpu line")
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
        (f.iter().sum::<u64>(), idle)
    };
    let (tot0, idle0) = cpu();
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(minutes * 60.0);
    let mut ids: Vec<String> = Vec::new();
    let mut samples = 0u64;
    let mut worst_gap = Duration::ZERO;
    let mut last = Instant::now();
    while Instant::now() < end {
        // Keep two jobs queued behind the two running ones.
        let list = c.get("/v1/jobs?state=queued&limit=10");
        let queued = list["jobs"].as_array().map(|a| a.len()).unwrap_or(0);
        for _ in queued..2 {
            ids.push(c.submit(long_job(20.0)));
        }
        let listed = c.nodes();
        let now = Instant::now();
        worst_gap = worst_gap.max(now - last);
        last = now;
        samples += 1;
        for n in &nodes {
            let up = listed
                .iter()
                .any(|x| x["id"] == n.as_str() && x["connected"] == true);
            assert!(
                up,
                "after {:.1} s: node {n} declared lost under load: {listed:?}",
                t0.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (tot1, idle1) = cpu();
    let busy_pct = 100.0 * (1.0 - (idle1 - idle0) as f64 / (tot1 - tot0).max(1) as f64);
    let log = plain(&c.master_log());
    assert!(
        !log.contains("node lost") && !log.contains("node gone"),
        "the master lost a node: {}",
        log.lines()
            .filter(|l| l.contains("node lost") || l.contains("node gone"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut finished = 0;
    let mut running = 0;
    for id in &ids {
        let job = c.get(&format!("/v1/jobs/{id}"));
        assert!(
            job["attempt"].as_u64().unwrap_or(0) <= 1,
            "job {id} took a second attempt under load: {job}"
        );
        match job["state"].as_str().unwrap_or("") {
            "succeeded" => finished += 1,
            "running" | "assigned" => running += 1,
            "queued" => {}
            other => panic!("job {id} ended {other}: {job}"),
        }
    }
    for w in &c.workers {
        assert!(
            !plain(&w.log()).contains("the lease with the master runs out"),
            "{} stopped its jobs for the lease under load",
            w.name
        );
    }
    for l in &logs {
        let text = std::fs::read_to_string(l).unwrap_or_default();
        assert!(
            !text.lines().any(|x| x.starts_with("kill ")),
            "a guard killed a job for the lease under load: {text}"
        );
    }
    println!(
        "busy check passed: {minutes} min, {samples} node-list samples (largest gap between \
         two {:.0} ms), both workers connected in every one; {finished} encodes succeeded and \
         {running} running, all on their first attempt; no \"node lost\" in the master's log, \
         no lease stop in the workers' logs or kill in the run logs; CPU busy {busy_pct:.0} % (all cores, /proc/stat); load \
         average {load_before} before, {} after",
        worst_gap.as_secs_f64() * 1e3,
        loadavg()
    );
    drop(g);
}

// ---------------------------------------------------------------- report

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    // Lower median for an even count, like the other benches.
    v[(v.len() - 1) / 2]
}

/// Nearest-rank percentile.
fn pct(v: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn line(what: &str, v: &[f64]) {
    let n = v.iter().filter(|x| !x.is_nan()).count();
    let max = v
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f64::NAN, f64::max);
    let min = v
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f64::NAN, f64::min);
    println!(
        "  {what:<44} median {:>6.3} s  p99 {:>6.3} s  worst {:>6.3} s  best {:>6.3} s  (n={n})",
        median(v),
        pct(v, 99.0),
        max,
        min
    );
}

fn main() {
    let o = Opts::parse();
    common::require_ffmpeg();
    println!("failure_detection: binary {}", common::BIN);
    if o.busy {
        busy(&o.configs[0], o.minutes);
        return;
    }
    let mut results: BTreeMap<(usize, usize), Vec<Sample>> = BTreeMap::new();
    for (ci, cfg) in o.configs.iter().enumerate() {
        for (fi, &fault) in o.faults.iter().enumerate() {
            println!("== {} — {}", fault.name(), cfg.describe());
            for run in 1..=o.runs {
                let load = loadavg();
                let t = Instant::now();
                let s = one(cfg, fault, run);
                println!(
                    "run {run}: lost {:.3} s (API poll {:.3} s), requeued {:.3} s, assigned \
                     {:.3} s, FFmpeg running elsewhere {:.3} s, old copy gone \
                     {:.3} s; load average {load} ({:.0} s)",
                    s.lost,
                    s.lost_api,
                    s.requeued,
                    s.assigned,
                    s.elsewhere,
                    s.old_dead,
                    t.elapsed().as_secs_f64()
                );
                results.entry((ci, fi)).or_default().push(s);
            }
        }
    }
    println!(
        "\n== summary over {} runs each (seconds from the signal) ==",
        o.runs
    );
    for ((ci, fi), v) in &results {
        println!(
            "-- {} — {}",
            o.faults[*fi].name(),
            o.configs[*ci].describe()
        );
        let col = |f: fn(&Sample) -> f64| v.iter().map(f).collect::<Vec<f64>>();
        line("declared lost (master log)", &col(|s| s.lost));
        line(
            "declared lost (GET /v1/nodes, 5 ms poll)",
            &col(|s| s.lost_api),
        );
        line("attempt requeued (master log)", &col(|s| s.requeued));
        line("new attempt assigned (master log)", &col(|s| s.assigned));
        line("FFmpeg running elsewhere (run log)", &col(|s| s.elsewhere));
        line(
            "old copy's processes gone (1 ms poll)",
            &col(|s| s.old_dead),
        );
    }
    println!(
        "every run: the old copy's processes were gone before the new FFmpeg started; load \
         average now {}",
        loadavg()
    );
}
