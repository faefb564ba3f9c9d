//! Footprint and store reopen (docs/BENCHMARKS.md).
//!
//! `cargo bench -p ffrtmp --bench footprint -- --runs 3`
//! (`--quick`: one run, 2,000 jobs, one reopen).
//!
//! Each run, on real processes (`ffrtmp-node`, loopback, sled in a temp dir):
//! 1. **idle master**: a master with an empty store and no worker; its
//!    VmRSS once it has settled (three 100 ms samples within 64 KiB, 20 s
//!    deadline);
//! 2. **idle worker**: one worker (`--slots K`, libx264 only) connects;
//!    its settled VmRSS, and the master's with a worker connected;
//! 3. **per running job**: `K` long encodes (720p libx264 `medium`, 600 s
//!    of `testsrc2`) run on that worker; once every FFmpeg is forked, after
//!    `--hold-s` (5 s) and once the worker's RSS has settled, (worker RSS − idle worker RSS) / K. FFmpeg and
//!    the guard processes are separate processes, not in that figure: the
//!    guards' RSS, PSS and private memory (`/proc/PID/smaps_rollup`; a guard
//!    is a fork of the worker, so most of its RSS is shared) and FFmpeg's RSS
//!    are printed apart. The jobs are then cancelled and the worker stopped;
//! 4. **master with N queued jobs**: `--jobs` submissions (8 concurrent
//!    keep-alive clients) with no worker connected, so all stay queued; the
//!    master's settled VmRSS, its VmHWM, and the store's size on disk;
//! 5. **store reopen**, `--reopens` times: SIGTERM the master and wait for
//!    its exit, start it again on the same data dir, and time from the spawn
//!    to the first `200` from `/readyz` (polled every 2 ms), and to the job
//!    list answering; then a worker is started, and the time from the
//!    master's `node up` log line to its first `assigned` line (the queue of N
//!    picked from) is the "ready to schedule" part. The worker is killed
//!    before the next reopen. One more reopen follows a **SIGKILL** of the
//!    master instead: no clean-close marker, so the store checks its
//!    indexes at open (every record and index entry read once), and its
//!    spawn → `/readyz` is printed apart.
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

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{plain, Cluster};
use serde_json::{json, Value};
use support::*;

struct Opts {
    runs: usize,
    jobs: usize,
    slots: u32,
    reopens: usize,
    submitters: usize,
    /// How long the K jobs run before the worker's RSS is read.
    hold: Duration,
}

impl Opts {
    fn parse() -> Opts {
        let mut o = Opts {
            runs: 3,
            jobs: 100_000,
            slots: 2,
            reopens: 3,
            submitters: 8,
            hold: Duration::from_secs(5),
        };
        let mut quick = false;
        let (mut runs, mut jobs, mut reopens) = (None, None, None);
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            if a == "--bench" {
                continue;
            }
            let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
            match a.as_str() {
                "--quick" => quick = true,
                "--runs" => runs = Some(val().parse().expect("--runs N")),
                "--jobs" => jobs = Some(val().parse().expect("--jobs N")),
                "--slots" => o.slots = val().parse().expect("--slots K"),
                "--reopens" => reopens = Some(val().parse().expect("--reopens N")),
                "--submitters" => o.submitters = val().parse().expect("--submitters N"),
                "--hold-s" => o.hold = Duration::from_secs(val().parse().expect("--hold-s S")),
                other => panic!(
                    "unknown argument {other:?}; use --quick --runs N --jobs N --slots K \
                     --reopens N --submitters N --hold-s S"
                ),
            }
        }
        if quick {
            o.runs = 1;
            o.jobs = 2000;
            o.reopens = 1;
        }
        o.runs = runs.unwrap_or(o.runs);
        o.jobs = jobs.unwrap_or(o.jobs);
        o.reopens = reopens.unwrap_or(o.reopens);
        assert!(o.runs >= 1 && o.jobs >= 1 && o.slots >= 1 && o.submitters >= 1);
        o
    }
}

fn tiny_job() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "scenario": "480p30-h264",
        "width": 160, "height": 90, "preset": "ultrafast",
        "input": {"type": "testsrc", "duration_s": 0.2},
        "output": {"type": "null"}
    }))
    .expect("JSON")
}

fn long_job() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "scenario": "720p30-h264",
        "preset": "medium",
        "input": {"type": "testsrc", "duration_s": 600},
        "output": {"type": "null"}
    }))
    .expect("JSON")
}

/// (RSS, PSS, private) of `pid` in MiB from `/proc/PID/smaps_rollup`.
fn smaps(pid: i32) -> Option<(f64, f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kib = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some((
        kib("Rss:") / 1024.0,
        kib("Pss:") / 1024.0,
        (kib("Private_Clean:") + kib("Private_Dirty:")) / 1024.0,
    ))
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn du_mib(dir: &Path) -> f64 {
    let out = Command::new("du")
        .args(["-sk"])
        .arg(dir)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| k / 1024.0)
        .unwrap_or(f64::NAN)
}

#[derive(Default)]
struct RunResult {
    master_idle: f64,
    master_idle_settled: bool,
    worker_idle: f64,
    master_with_worker: f64,
    per_job: f64,
    guard_rss: f64,
    guard_pss: f64,
    guard_private: f64,
    ffmpeg_rss: f64,
    submit_s: f64,
    master_queued: f64,
    master_queued_hwm: f64,
    store_mib: f64,
    stop_s: Vec<f64>,
    readyz_s: Vec<f64>,
    /// spawn → `/readyz` after a SIGKILL (the index check at open).
    readyz_unclean_s: Vec<f64>,
    list_s: Vec<f64>,
    node_up_to_assigned_ms: Vec<f64>,
    rss_after_reopen: Vec<f64>,
    load: String,
}

fn run(o: &Opts, run_no: usize) -> RunResult {
    let mut r = RunResult::default();
    let load_before = loadavg();
    let cluster = Cluster::start_opts(0, o.slots, common::cluster::libx264_only(), Vec::new());
    let mut g = Guard(Some(cluster));
    let c = g.0.as_mut().expect("cluster");
    let mpid = c_master_pid(c);
    let (v, ok) = settled_rss(mpid, Duration::from_secs(20));
    r.master_idle = v;
    r.master_idle_settled = ok;

    // ---- idle worker
    c.add_worker(0, true);
    c.wait_nodes(1);
    let wpid = c.workers[0].child.as_ref().expect("worker").id();
    r.worker_idle = settled_rss(wpid, Duration::from_secs(20)).0;
    r.master_with_worker = settled_rss(mpid, Duration::from_secs(20)).0;

    // ---- K running jobs on the worker
    let mut http = RawHttp::connect(&c.base);
    let mut ids = Vec::new();
    for _ in 0..o.slots {
        let (s, b) = http.request("POST", "/v1/jobs", Some(&long_job()));
        let v: Value = serde_json::from_slice(&b).expect("JSON");
        assert_eq!(s, 201, "{v}");
        ids.push(v["id"].as_str().expect("id").to_string());
    }
    let procs: Vec<(i32, i32)> = common::wait_for(
        "every long job's guard and FFmpeg",
        Duration::from_secs(60),
        || {
            let mut out = Vec::new();
            for id in &ids {
                let pids = c.job_pids(0, id);
                let guard = pids.iter().copied().find(|p| comm(*p) == "ffrtmp-guard")?;
                let ff = pids.iter().copied().find(|p| comm(*p) == "ffmpeg")?;
                out.push((guard, ff));
            }
            Some(out)
        },
    );
    // Let the jobs run a while (progress parsing, stderr rings and energy
    // tracking fill up), then take the settled RSS.
    std::thread::sleep(o.hold);
    let (busy, settled) = settled_rss(wpid, Duration::from_secs(20));
    if !settled {
        println!(
            "run {run_no}: worker RSS with {} jobs did not settle within 20 s",
            o.slots
        );
    }
    r.per_job = (busy - r.worker_idle) / o.slots as f64;
    let mut guards = (0.0, 0.0, 0.0);
    for (gp, fp) in &procs {
        let (rss, pss, private) = smaps(*gp).expect("guard smaps");
        guards.0 += rss;
        guards.1 += pss;
        guards.2 += private;
        r.ffmpeg_rss += rss_mib(*fp as u32).unwrap_or(f64::NAN) / procs.len() as f64;
    }
    let k = procs.len() as f64;
    (r.guard_rss, r.guard_pss, r.guard_private) = (guards.0 / k, guards.1 / k, guards.2 / k);
    for id in &ids {
        let (s, _) = http.request("POST", &format!("/v1/jobs/{id}/cancel"), None);
        assert!(s == 200 || s == 202, "cancel {id}: {s}");
    }
    for id in &ids {
        c.wait_state(id, &["cancelled"], Duration::from_secs(30));
    }
    c.workers[0].kill9();
    c.workers.clear();

    // ---- N queued jobs, no worker
    let body = tiny_job();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..o.submitters {
            let (base, body) = (&c.base, &body);
            s.spawn(move || {
                let mut h = RawHttp::connect(base);
                for _ in (t..o.jobs).step_by(o.submitters) {
                    let (st, b) = h.request("POST", "/v1/jobs", Some(body));
                    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
                }
            });
        }
    });
    r.submit_s = t0.elapsed().as_secs_f64();
    r.master_queued = settled_rss(mpid, Duration::from_secs(30)).0;
    r.master_queued_hwm = status_kib(mpid, "VmHWM:").unwrap_or(f64::NAN) / 1024.0;
    r.store_mib = du_mib(&c.dir.path().join("m"));
    let queued_now = |h: &mut RawHttp| -> usize {
        let (s, v) = h.get_json("/v1/jobs?state=queued&limit=1");
        assert_eq!(s, 200, "{v}");
        v["jobs"].as_array().map(|a| a.len()).unwrap_or(0)
    };
    assert_eq!(queued_now(&mut http), 1, "jobs queued");

    // ---- reopen
    // The last one after a SIGKILL: an unclean stop.
    for k in 0..=o.reopens {
        let unclean = k == o.reopens;
        drop(http);
        let t = Instant::now();
        c.master.signal(if unclean {
            nix::sys::signal::Signal::SIGKILL
        } else {
            nix::sys::signal::Signal::SIGTERM
        });
        c.master.wait_exit(Duration::from_secs(120));
        if !unclean {
            r.stop_s.push(t.elapsed().as_secs_f64());
        }
        for f in ["quic.addr", "http.addr"] {
            let _ = std::fs::remove_file(c.dir.path().join(f));
        }
        // Same ports: the workers and clients know them.
        let http_addr = c.base.trim_start_matches("http://").to_string();
        let quic = c.quic.clone();
        let args = &mut c.master.args;
        for (flag, value) in [("--listen", quic), ("--http", http_addr)] {
            let i = args.iter().position(|a| a == flag).expect(flag);
            args[i + 1] = value;
        }
        let t = Instant::now();
        c.master.start();
        let probe = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let ready = format!("{}/readyz", c.base);
        common::wait_for(
            "/readyz 200 after the reopen",
            Duration::from_secs(300),
            || {
                std::thread::sleep(Duration::from_millis(2));
                probe
                    .get(&ready)
                    .send()
                    .ok()
                    .filter(|resp| resp.status().as_u16() == 200)
                    .map(|_| ())
            },
        );
        if unclean {
            r.readyz_unclean_s.push(t.elapsed().as_secs_f64());
        } else {
            r.readyz_s.push(t.elapsed().as_secs_f64());
        }
        http = RawHttp::connect(&c.base);
        assert_eq!(
            queued_now(&mut http),
            1,
            "jobs still queued after the reopen"
        );
        if !unclean {
            r.list_s.push(t.elapsed().as_secs_f64());
        }
        let mpid = c_master_pid(c);
        r.rss_after_reopen
            .push(settled_rss(mpid, Duration::from_secs(20)).0);
        // A worker connects: node up → first assignment.
        c.add_worker(k + 1, true);
        let log_has_assignment = || {
            let log = plain(&c.master_log());
            // This start's part of the log only.
            let tail = log
                .rsplit("HTTP API listening")
                .next()
                .unwrap_or("")
                .to_string();
            let up = tail
                .lines()
                .find(|l| l.contains(" node up"))
                .and_then(log_time)?;
            let asg = tail
                .lines()
                .find(|l| l.contains(" assigned "))
                .and_then(log_time)?;
            Some((asg - up) * 1e3)
        };
        let ms = common::wait_for(
            "the first assignment after the reopen",
            Duration::from_secs(120),
            log_has_assignment,
        );
        r.node_up_to_assigned_ms.push(ms);
        for w in c.workers.iter_mut() {
            w.kill9();
        }
        c.workers.clear();
    }
    drop(http);
    drop(g);
    r.load = format!("{load_before} → {}", loadavg());
    r
}

fn c_master_pid(c: &Cluster) -> u32 {
    c.master.child.as_ref().expect("master running").id()
}

fn main() {
    let o = Opts::parse();
    common::require_ffmpeg();
    println!(
        "footprint: {} runs; worker --slots {}; {} queued jobs ({} submitters); {} reopens a run; \
         binary {}",
        o.runs,
        o.slots,
        o.jobs,
        o.submitters,
        o.reopens,
        common::BIN
    );
    let mut all = Vec::new();
    for i in 1..=o.runs {
        let t = Instant::now();
        let r = run(&o, i);
        println!(
            "run {i}: {:.0} s, load average {}; master idle {:.1} MiB{}, worker idle {:.1} MiB, \
             per running job {:.2} MiB (guard RSS {:.1} / PSS {:.2} / private {:.2} MiB, FFmpeg \
             RSS {:.0} MiB); {} jobs submitted in {:.1} s ({:.0}/s); master {:.1} MiB queued \
             (HWM {:.1}); store {:.0} MiB on disk; stop {:?} s; reopen → /readyz {:?} s; node up \
             → assigned {:?} ms",
            t.elapsed().as_secs_f64(),
            r.load,
            r.master_idle,
            if r.master_idle_settled {
                ""
            } else {
                " (not settled)"
            },
            r.worker_idle,
            r.per_job,
            r.guard_rss,
            r.guard_pss,
            r.guard_private,
            r.ffmpeg_rss,
            o.jobs,
            r.submit_s,
            o.jobs as f64 / r.submit_s,
            r.master_queued,
            r.master_queued_hwm,
            r.store_mib,
            r.stop_s,
            r.readyz_s,
            r.node_up_to_assigned_ms,
        );
        all.push(r);
    }
    let col = |f: &dyn Fn(&RunResult) -> f64| all.iter().map(f).collect::<Vec<f64>>();
    let flat = |f: &dyn Fn(&RunResult) -> &Vec<f64>| {
        all.iter()
            .flat_map(|r| f(r).iter().copied())
            .collect::<Vec<f64>>()
    };
    println!("\n== summary over {} runs (median, worst) ==", o.runs);
    line(
        "IDLE MASTER VmRSS (empty store)",
        "MiB",
        &col(&|r| r.master_idle),
        true,
    );
    line("IDLE WORKER VmRSS", "MiB", &col(&|r| r.worker_idle), true);
    line(
        "master VmRSS, one idle worker connected",
        "MiB",
        &col(&|r| r.master_with_worker),
        true,
    );
    line(
        &format!("MASTER VmRSS with {} jobs queued", o.jobs),
        "MiB",
        &col(&|r| r.master_queued),
        true,
    );
    line(
        "  … master VmHWM then",
        "MiB",
        &col(&|r| r.master_queued_hwm),
        true,
    );
    line(
        "  … store on disk (du)",
        "MiB",
        &col(&|r| r.store_mib),
        true,
    );
    line(
        &format!("  … submission rate ({} clients)", o.submitters),
        "job/s",
        &col(&|r| o.jobs as f64 / r.submit_s),
        false,
    );
    line(
        &format!("WORKER VmRSS PER RUNNING JOB ({} jobs)", o.slots),
        "MiB",
        &col(&|r| r.per_job),
        true,
    );
    line(
        "  guard process VmRSS (each)",
        "MiB",
        &col(&|r| r.guard_rss),
        true,
    );
    line(
        "  guard process PSS (each)",
        "MiB",
        &col(&|r| r.guard_pss),
        true,
    );
    line(
        "  guard process private (each)",
        "MiB",
        &col(&|r| r.guard_private),
        true,
    );
    line(
        "  FFmpeg VmRSS (each, 720p medium)",
        "MiB",
        &col(&|r| r.ffmpeg_rss),
        true,
    );
    println!(
        "-- store reopen with {} jobs ({} reopens in all)",
        o.jobs,
        flat(&|r| &r.readyz_s).len()
    );
    line("SIGTERM → exit", "s", &flat(&|r| &r.stop_s), true);
    line(
        "REOPEN: spawn → /readyz 200",
        "s",
        &flat(&|r| &r.readyz_s),
        true,
    );
    line(
        "REOPEN after SIGKILL (index check): spawn → /readyz",
        "s",
        &flat(&|r| &r.readyz_unclean_s),
        true,
    );
    line("spawn → job list answers", "s", &flat(&|r| &r.list_s), true);
    line(
        "worker `node up` → first `assigned`",
        "ms",
        &flat(&|r| &r.node_up_to_assigned_ms),
        true,
    );
    line(
        "master VmRSS after the reopen",
        "MiB",
        &flat(&|r| &r.rss_after_reopen),
        true,
    );
}
