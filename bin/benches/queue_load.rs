//! Load: 2,000 queued jobs, three workers (docs/BENCHMARKS.md).
//!
//! `cargo bench -p ffrtmp --bench queue_load -- --runs 3`
//!
//! Each run starts a real master (`ffrtmp-node --role master`, its own sled
//! store in a temp dir), submits `--jobs` tiny real FFmpeg encodes while no
//! worker is connected, measures the master's memory and the paginated list
//! latency with the whole queue waiting, then starts `--workers` real
//! workers (QUIC on 127.0.0.1, one run log each) and measures the drain:
//! scheduling latency, throughput, the master's peak memory, and the list
//! latency while jobs move. Every job must succeed on its first attempt or
//! the benchmark fails. Medians and worst cases over the runs are printed
//! at the end.
//!
//! Definitions (also in docs/BENCHMARKS.md):
//! - *slot gap* (the scheduling latency): on one worker, from the moment a
//!   job's FFmpeg was reaped (the guard's `stop` line in the run log) to
//!   the next FFmpeg forked on that worker (`start`), i.e. how long a freed
//!   slot stays idle while jobs are queued. Both times are CLOCK_MONOTONIC,
//!   written by the guard processes themselves. It is split into four
//!   parts with the JobActor's `exit` line and the master's log lines
//!   "attempt finished" and "assigned" (each written once the write is
//!   durable; wall clock, mapped onto CLOCK_MONOTONIC by reading both
//!   clocks): 1 `stop` → `exit` (the JobActor sees its guard exit);
//!   2 `exit` → the result durable in the master (last energy sample, the
//!   worker's outbox flush, QUIC, the scheduler's turn, the master's flush);
//!   3 result durable → the freed slot's next assignment durable (pick, one
//!   flush); 4 assignment → `start` (QUIC, JobActor, cgroup, guard fork).
//!   With more than one slot per worker the k-th `stop` is paired with the
//!   (k + slots)-th `start` on that worker.
//! - *drain time*: from the first attempt's start to the last attempt's end,
//!   both as the master recorded them (`attempts[].started_ms/ended_ms`).
//! - *list latency*: one `GET /v1/jobs` page, from sending the request to the
//!   last byte of the body (keep-alive connection, JSON not parsed in the
//!   timing).
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
use support::{field, log_time, mono_to_unix, ms, pct, worst, Guard};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use serde_json::{json, Value};

struct Opts {
    runs: usize,
    jobs: usize,
    workers: usize,
    slots: u32,
    duration_s: f64,
    submitters: usize,
    /// Pause between two list requests made while the queue drains.
    drain_list_every: Duration,
    /// Give up on a drain after this long.
    drain_timeout: Duration,
    /// Copy each run's logs (master, workers, run logs) here.
    keep_logs: Option<PathBuf>,
}

impl Opts {
    fn parse() -> Opts {
        let mut o = Opts {
            runs: 3,
            jobs: 2000,
            workers: 3,
            slots: 1,
            duration_s: 0.2,
            submitters: 8,
            drain_list_every: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(900),
            keep_logs: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            // `cargo bench` passes `--bench` to every bench target.
            if a == "--bench" {
                continue;
            }
            let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
            match a.as_str() {
                "--runs" => o.runs = val().parse().expect("--runs N"),
                "--jobs" => o.jobs = val().parse().expect("--jobs N"),
                "--workers" => o.workers = val().parse().expect("--workers N"),
                "--slots" => o.slots = val().parse().expect("--slots N"),
                "--duration" => o.duration_s = val().parse().expect("--duration SECONDS"),
                "--submitters" => o.submitters = val().parse().expect("--submitters N"),
                "--drain-list-every-ms" => {
                    o.drain_list_every =
                        Duration::from_millis(val().parse().expect("--drain-list-every-ms MS"))
                }
                "--drain-timeout-s" => {
                    o.drain_timeout =
                        Duration::from_secs(val().parse().expect("--drain-timeout-s SECONDS"))
                }
                "--keep-logs" => o.keep_logs = Some(PathBuf::from(val())),
                other => panic!(
                    "unknown argument {other:?}; use --runs --jobs --workers --slots --duration \
                     --submitters --drain-list-every-ms --drain-timeout-s --keep-logs DIR"
                ),
            }
        }
        assert!(o.runs >= 1 && o.jobs >= 1 && o.workers >= 1 && o.slots >= 1);
        assert!(o.submitters >= 1);
        o
    }
}

/// The job every submission uses: a tiny real libx264 encode to `-f null`.
fn job_body(duration_s: f64) -> Value {
    json!({
        "scenario": "480p30-h264",
        "width": 160, "height": 90, "preset": "ultrafast",
        "input": {"type": "testsrc", "duration_s": duration_s},
        "output": {"type": "null"}
    })
}

// ---------------------------------------------------------------- stats

#[derive(Clone, Copy, Debug, Default)]
struct Dist {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn dist(values: &[f64]) -> Dist {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Dist {
        n: v.len(),
        p50: pct(&v, 50.0),
        p99: pct(&v, 99.0),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

// ---------------------------------------------------------------- /proc

/// (VmRSS, VmHWM) of `pid` in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or_else(|| panic!("{name} missing in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system) `pid` has used so far.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit(')').next().expect("stat line");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

// ---------------------------------------------------------------- HTTP

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// One list page: (latency, parsed body, body bytes).
fn list_page(
    http: &reqwest::blocking::Client,
    base: &str,
    query: &str,
) -> (Duration, Value, usize) {
    let t = Instant::now();
    let resp = http
        .get(format!("{base}/v1/jobs?{query}"))
        .send()
        .expect("GET /v1/jobs");
    let status = resp.status().as_u16();
    let body = resp.bytes().expect("list body");
    let took = t.elapsed();
    assert_eq!(
        status,
        200,
        "GET /v1/jobs?{query}: {}",
        String::from_utf8_lossy(&body)
    );
    (
        took,
        serde_json::from_slice(&body).expect("list JSON"),
        body.len(),
    )
}

/// Walk the whole list with `limit` (and `extra` filters): per-page
/// latencies (ms), the largest page's size in bytes, and the jobs seen.
fn walk(
    http: &reqwest::blocking::Client,
    base: &str,
    limit: usize,
    extra: &str,
) -> (Vec<f64>, usize, Vec<Value>) {
    let mut lat = Vec::new();
    let mut bytes = 0;
    let mut jobs = Vec::new();
    let mut cursor: Option<u64> = None;
    loop {
        let mut q = format!("limit={limit}{extra}");
        if let Some(c) = cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let (took, page, n) = list_page(http, base, &q);
        lat.push(ms(took));
        bytes = bytes.max(n);
        jobs.extend(page["jobs"].as_array().expect("jobs array").iter().cloned());
        match page["next_cursor"].as_u64() {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    (lat, bytes, jobs)
}

/// Terminal jobs so far, from the master's counters.
fn finished_count(http: &reqwest::blocking::Client, base: &str) -> u64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("GET /metrics");
    text.lines()
        .filter(|l| l.starts_with("ffrtmp_jobs_finished_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

// ---------------------------------------------------------------- run log

#[derive(Debug, Clone)]
struct Event {
    kind: String,
    ns: u64,
    job: String,
}

fn read_run_log(path: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut v: Vec<Event> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 3, "bad run-log line {l:?}");
            Event {
                kind: f[0].to_string(),
                ns: f[1].parse().unwrap_or_else(|_| panic!("bad time in {l:?}")),
                job: f[2].to_string(),
            }
        })
        .collect();
    v.sort_by_key(|e| e.ns);
    v
}

/// The parts of the slot gaps, in ms (see the module docs).
#[derive(Default)]
struct Gaps {
    /// `stop` → next `start` on the same worker.
    gap: Vec<f64>,
    /// `stop` → `exit` (worker).
    teardown: Vec<f64>,
    /// `exit` → the master logs "attempt finished" (result sent, applied
    /// and durable).
    to_master: Vec<f64>,
    /// "attempt finished" → "assigned" for the freed slot's next job (the
    /// assignment chosen and durable).
    dispatch: Vec<f64>,
    /// "assigned" → next `start` (to the worker over QUIC; cgroup, guard
    /// and FFmpeg spawned).
    to_worker: Vec<f64>,
}

/// Adds one worker's slot gaps to `out`. `mono_to_unix`: seconds to add to a
/// CLOCK_MONOTONIC time to get the wall clock the logs use.
fn slot_gaps(
    events: &[Event],
    slots: usize,
    master: &MasterTimes,
    mono_to_unix: f64,
    out: &mut Gaps,
) {
    let starts: Vec<&Event> = events.iter().filter(|e| e.kind == "start").collect();
    let stops: Vec<&Event> = events.iter().filter(|e| e.kind == "stop").collect();
    let exit_of: HashMap<&str, u64> = events
        .iter()
        .filter(|e| e.kind == "exit")
        .map(|e| (e.job.as_str(), e.ns))
        .collect();
    let unix = |ns: u64| ns as f64 / 1e9 + mono_to_unix;
    for (k, stop) in stops.iter().enumerate() {
        let Some(next) = starts.get(k + slots) else {
            break;
        };
        out.gap.push((next.ns as f64 - stop.ns as f64) / 1e6);
        let Some(&exit) = exit_of.get(stop.job.as_str()) else {
            continue;
        };
        out.teardown.push((exit as f64 - stop.ns as f64) / 1e6);
        if let (Some(&fin), Some(&asg)) = (
            master.finished.get(&stop.job),
            master.assigned.get(&next.job),
        ) {
            out.to_master.push((fin - unix(exit)) * 1e3);
            out.dispatch.push((asg - fin) * 1e3);
            out.to_worker.push((unix(next.ns) - asg) * 1e3);
        }
    }
}

// ---------------------------------------------------------------- master log

/// When the master logged each job's "assigned" and "attempt finished"
/// (Unix seconds; both lines come after the write is durable).
#[derive(Default)]
struct MasterTimes {
    assigned: HashMap<String, f64>,
    finished: HashMap<String, f64>,
}

fn master_times(log: &str) -> MasterTimes {
    let mut m = MasterTimes::default();
    for line in common::cluster::plain(log).lines() {
        let Some(t) = log_time(line) else {
            continue;
        };
        let map = if line.contains(" assigned ") {
            &mut m.assigned
        } else if line.contains(" attempt finished ") {
            &mut m.finished
        } else {
            continue;
        };
        if let Some(job) = field(line, "job") {
            map.insert(job.to_string(), t);
        }
    }
    m
}

// ---------------------------------------------------------------- one run

#[derive(Default, Debug)]
struct RunResult {
    submit_rate: f64,
    submit_lat: Dist,
    rss_idle: f64,
    rss_queued: f64,
    hwm_after_lists: f64,
    list: BTreeMap<String, Dist>,
    /// Median latency of the first and of the last quarter of the pages.
    list_first_last: BTreeMap<String, (f64, f64)>,
    list_bytes: BTreeMap<String, usize>,
    list_drain: BTreeMap<String, Dist>,
    gap: Dist,
    teardown: Dist,
    to_master: Dist,
    dispatch: Dist,
    to_worker: Dist,
    /// 4 KiB write + fdatasync next to the master's store during the drain.
    fsync: Dist,
    ffmpeg_wall: Dist,
    drain_s: f64,
    jobs_per_s: f64,
    rss_drain_max: f64,
    hwm_end: f64,
    rss_end: f64,
    master_cpu_drain_s: f64,
    worker_hwm_max: f64,
}

fn run(o: &Opts, run_no: usize) -> RunResult {
    let mut r = RunResult::default();
    let cluster = Cluster::start_opts(
        0,
        o.slots,
        vec!["--encoders".into(), "libx264".into()],
        Vec::new(),
    );
    let mut g = Guard(Some(cluster));
    let c = g.0.as_mut().expect("cluster");
    let base = c.base.clone();
    let master_pid = c.master.child.as_ref().expect("master").id();
    let http = client();
    std::thread::sleep(Duration::from_millis(500));
    r.rss_idle = rss_mib(master_pid).0;

    // ---- submit, no worker connected
    let body = job_body(o.duration_s);
    let t0 = Instant::now();
    let ids: Vec<(String, f64)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..o.submitters)
            .map(|t| {
                let (base, body) = (&base, &body);
                s.spawn(move || {
                    let http = client();
                    let mut out = Vec::new();
                    for _ in (t..o.jobs).step_by(o.submitters) {
                        let t = Instant::now();
                        let resp = http
                            .post(format!("{base}/v1/jobs"))
                            .json(body)
                            .send()
                            .expect("POST /v1/jobs");
                        let status = resp.status().as_u16();
                        let v: Value = resp.json().expect("job JSON");
                        let took = ms(t.elapsed());
                        assert_eq!(status, 201, "submission refused: {v}");
                        out.push((v["id"].as_str().expect("id").to_string(), took));
                    }
                    out
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("submitter"))
            .collect()
    });
    let submit_s = t0.elapsed().as_secs_f64();
    r.submit_rate = o.jobs as f64 / submit_s;
    r.submit_lat = dist(&ids.iter().map(|(_, t)| *t).collect::<Vec<_>>());
    let submitted: HashSet<String> = ids.into_iter().map(|(id, _)| id).collect();
    assert_eq!(submitted.len(), o.jobs, "distinct job ids");
    std::thread::sleep(Duration::from_millis(500));
    r.rss_queued = rss_mib(master_pid).0;

    // ---- list latency with the whole queue waiting
    const WALKS: usize = 5;
    for (name, limit, extra) in [
        ("all, limit 50", 50, ""),
        ("all, limit 100", 100, ""),
        ("all, limit 1000", 1000, ""),
        ("state=queued, limit 100", 100, "&state=queued"),
    ] {
        let mut lat = Vec::new();
        let (mut first, mut last) = (Vec::new(), Vec::new());
        let mut bytes = 0;
        for _ in 0..WALKS {
            let (l, b, jobs) = walk(&http, &base, limit, extra);
            assert_eq!(jobs.len(), o.jobs, "{name}: every job listed");
            // Does a page cost more the further it is from the start?
            let q = (l.len() / 4).max(1);
            first.extend_from_slice(&l[..q]);
            last.extend_from_slice(&l[l.len() - q..]);
            bytes = bytes.max(b);
            lat.extend(l);
        }
        r.list.insert(name.into(), dist(&lat));
        r.list_first_last
            .insert(name.into(), (dist(&first).p50, dist(&last).p50));
        r.list_bytes.insert(name.into(), bytes);
    }
    r.hwm_after_lists = rss_mib(master_pid).1;

    // ---- start the workers and drain
    let run_logs: Vec<PathBuf> = (0..o.workers)
        .map(|i| c.dir.path().join(format!("w{i}.runlog")))
        .collect();
    let cpu_before = cpu_s(master_pid);
    for (i, log) in run_logs.iter().enumerate() {
        let log = log.to_string_lossy().into_owned();
        c.add_worker_with(i, true, &["--run-log", &log]);
    }
    let stop = AtomicBool::new(false);
    let rss_max = Mutex::new(0f64);
    let fsyncs = Mutex::new(Vec::new());
    let probe_path = c.dir.path().join("fsync-probe");
    let drain_lists: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::default();
    let finished = std::thread::scope(|s| {
        // Master RSS every 100 ms.
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let v = rss_mib(master_pid).0;
                let mut m = rss_max.lock().expect("rss");
                *m = m.max(v);
                drop(m);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        // What one small write + fdatasync costs on the store's file system
        // meanwhile (the master flushes before every acknowledgement and
        // every assignment), every 100 ms.
        s.spawn(|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&probe_path).expect("fsync probe file");
            let block = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&block).expect("fsync probe write");
                let t = Instant::now();
                f.sync_data().expect("fsync probe sync");
                fsyncs.lock().expect("fsyncs").push(ms(t.elapsed()));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        // A client paging through the jobs, and the queued ones, while they move.
        s.spawn(|| {
            let http = client();
            let mut cursor: Option<u64> = None;
            let mut turn = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (name, q) = if turn % 2 == 0 {
                    let q = match cursor {
                        Some(c) => format!("limit=100&cursor={c}"),
                        None => "limit=100".to_string(),
                    };
                    ("all, limit 100", q)
                } else {
                    (
                        "state=queued, limit 100 (first page)",
                        "limit=100&state=queued".into(),
                    )
                };
                let (took, page, _) = list_page(&http, &base, &q);
                if turn % 2 == 0 {
                    cursor = page["next_cursor"].as_u64();
                }
                drain_lists
                    .lock()
                    .expect("lists")
                    .entry(name.to_string())
                    .or_default()
                    .push(ms(took));
                turn += 1;
                std::thread::sleep(o.drain_list_every);
            }
        });
        let deadline = Instant::now() + o.drain_timeout;
        let poll = client();
        let done = loop {
            let n = finished_count(&poll, &base);
            if n >= o.jobs as u64 {
                break Ok(n);
            }
            if Instant::now() > deadline {
                break Err(n);
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        stop.store(true, Ordering::Relaxed);
        done
    });
    let finished = finished.unwrap_or_else(|n| {
        panic!(
            "run {run_no}: only {n} of {} jobs finished within {:?}",
            o.jobs, o.drain_timeout
        )
    });
    r.master_cpu_drain_s = cpu_s(master_pid) - cpu_before;
    let (rss_end, hwm_end) = rss_mib(master_pid);
    r.rss_end = rss_end;
    r.hwm_end = hwm_end;
    r.rss_drain_max = rss_max.into_inner().expect("rss");
    r.fsync = dist(&fsyncs.into_inner().expect("fsyncs"));
    r.list_drain = drain_lists
        .into_inner()
        .expect("lists")
        .into_iter()
        .map(|(k, v)| (k, dist(&v)))
        .collect();
    for w in &c.workers {
        if let Some(ch) = &w.child {
            r.worker_hwm_max = r.worker_hwm_max.max(rss_mib(ch.id()).1);
        }
    }

    // ---- every job succeeded, once
    let (_, _, jobs) = walk(&http, &base, 1000, "");
    assert_eq!(finished, o.jobs as u64, "terminal jobs");
    assert_eq!(jobs.len(), o.jobs, "jobs listed after the drain");
    let mut first_start = u64::MAX;
    let mut last_end = 0u64;
    for j in &jobs {
        let id = j["id"].as_str().expect("id");
        assert!(submitted.contains(id), "unknown job {id} listed");
        assert_eq!(
            j["state"], "succeeded",
            "run {run_no}: job {id} did not succeed: {j}"
        );
        let attempts = j["attempts"].as_array().expect("attempts");
        assert_eq!(
            attempts.len(),
            1,
            "run {run_no}: job {id} took more than one attempt: {j}"
        );
        first_start = first_start.min(attempts[0]["started_ms"].as_u64().expect("started_ms"));
        last_end = last_end.max(attempts[0]["ended_ms"].as_u64().expect("ended_ms"));
    }
    r.drain_s = (last_end - first_start) as f64 / 1e3;
    r.jobs_per_s = o.jobs as f64 / r.drain_s;

    // ---- scheduling latency from the guards' run logs
    let master = master_times(&c.master_log());
    let offset = mono_to_unix();
    let mut gaps = Gaps::default();
    let mut wall = Vec::new();
    let mut started: HashSet<String> = HashSet::new();
    for log in &run_logs {
        let ev = read_run_log(log);
        slot_gaps(&ev, o.slots as usize, &master, offset, &mut gaps);
        let start_of: HashMap<&str, u64> = ev
            .iter()
            .filter(|e| e.kind == "start")
            .map(|e| (e.job.as_str(), e.ns))
            .collect();
        for e in ev.iter().filter(|e| e.kind == "stop") {
            if let Some(&s) = start_of.get(e.job.as_str()) {
                wall.push((e.ns - s) as f64 / 1e6);
            }
        }
        for e in ev.iter().filter(|e| e.kind == "start") {
            assert!(started.insert(e.job.clone()), "job {} started twice", e.job);
        }
    }
    assert_eq!(started, submitted, "every job started exactly once");
    assert_eq!(
        gaps.to_master.len(),
        gaps.gap.len(),
        "every slot gap found in the master's log"
    );
    r.gap = dist(&gaps.gap);
    r.teardown = dist(&gaps.teardown);
    r.to_master = dist(&gaps.to_master);
    r.dispatch = dist(&gaps.dispatch);
    r.to_worker = dist(&gaps.to_worker);
    r.ffmpeg_wall = dist(&wall);
    if let Some(keep) = &o.keep_logs {
        let to = keep.join(format!("run{run_no}"));
        std::fs::create_dir_all(&to).expect("--keep-logs dir");
        for e in std::fs::read_dir(c.dir.path())
            .expect("cluster dir")
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".log") || name.ends_with(".runlog") {
                std::fs::copy(e.path(), to.join(&name)).expect("copy a log");
            }
        }
    }
    drop(g);
    r
}

// ---------------------------------------------------------------- report

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    // Lower median for an even count, like the other benches.
    v[(v.len() - 1) / 2]
}

fn line(what: &str, unit: &str, v: &[f64], higher_is_worse: bool) {
    println!(
        "{what:<58} median {:>9.2} {unit:<5} worst {:>9.2} {unit}",
        median(v),
        worst(v, higher_is_worse)
    );
}

fn dist_lines(what: &str, ds: &[Dist]) {
    let n = ds.first().map(|d| d.n).unwrap_or(0);
    line(
        &format!("{what} p50 (n={n})"),
        "ms",
        &ds.iter().map(|d| d.p50).collect::<Vec<_>>(),
        true,
    );
    line(
        &format!("{what} p99"),
        "ms",
        &ds.iter().map(|d| d.p99).collect::<Vec<_>>(),
        true,
    );
    line(
        &format!("{what} max"),
        "ms",
        &ds.iter().map(|d| d.max).collect::<Vec<_>>(),
        true,
    );
}

fn main() {
    let o = Opts::parse();
    common::require_ffmpeg();
    println!(
        "queue_load: {} runs, {} jobs ({} s testsrc2 160x90 libx264 ultrafast → null), \
         {} workers × {} slots, {} submitters, binary {}",
        o.runs,
        o.jobs,
        o.duration_s,
        o.workers,
        o.slots,
        o.submitters,
        common::BIN
    );
    let mut results = Vec::new();
    for i in 1..=o.runs {
        let t = Instant::now();
        let load = || {
            std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        let load_before = load();
        let r = run(&o, i);
        println!(
            "run {i}: load average {load_before} before, {} after",
            load()
        );
        println!(
            "run {i}: {:.0} s; submit {:.0}/s, master RSS {:.1} MiB idle, {:.1} MiB queued, \
             peak {:.1} MiB; drain {:.1} s ({:.1} jobs/s); slot gap p50 {:.1} ms p99 {:.1} ms \
             max {:.1} ms (exit → result durable p99 {:.1} ms, FFmpeg forked p50 {:.1} ms); \
             fdatasync p99 {:.1} ms max {:.1} ms; FFmpeg wall p50 {:.0} ms; \
             list (limit 100) p50 {:.2} ms p99 {:.2} ms",
            t.elapsed().as_secs_f64(),
            r.submit_rate,
            r.rss_idle,
            r.rss_queued,
            r.hwm_end,
            r.drain_s,
            r.jobs_per_s,
            r.gap.p50,
            r.gap.p99,
            r.gap.max,
            r.to_master.p99,
            r.to_worker.p50,
            r.fsync.p99,
            r.fsync.max,
            r.ffmpeg_wall.p50,
            r.list["all, limit 100"].p50,
            r.list["all, limit 100"].p99,
        );
        results.push(r);
    }

    let col = |f: &dyn Fn(&RunResult) -> f64| results.iter().map(f).collect::<Vec<f64>>();
    let dcol = |f: &dyn Fn(&RunResult) -> Dist| results.iter().map(f).collect::<Vec<Dist>>();
    println!("\n== summary over {} runs (median, worst) ==", o.runs);
    println!("-- submission ({} jobs, no worker connected)", o.jobs);
    line("submission rate", "job/s", &col(&|r| r.submit_rate), false);
    dist_lines("POST /v1/jobs latency", &dcol(&|r| r.submit_lat));
    println!("-- master memory");
    line(
        "master VmRSS idle (empty store)",
        "MiB",
        &col(&|r| r.rss_idle),
        true,
    );
    line(
        "master VmRSS with all jobs queued",
        "MiB",
        &col(&|r| r.rss_queued),
        true,
    );
    line(
        "master VmHWM after the list walks",
        "MiB",
        &col(&|r| r.hwm_after_lists),
        true,
    );
    line(
        "master VmRSS max during the drain (100 ms samples)",
        "MiB",
        &col(&|r| r.rss_drain_max),
        true,
    );
    line(
        "master VmHWM at the end (peak of the run)",
        "MiB",
        &col(&|r| r.hwm_end),
        true,
    );
    line(
        "master VmRSS at the end (all succeeded)",
        "MiB",
        &col(&|r| r.rss_end),
        true,
    );
    line(
        "worker VmHWM, largest of the workers",
        "MiB",
        &col(&|r| r.worker_hwm_max),
        true,
    );
    println!("-- list latency, all jobs queued (5 walks each)");
    let names: Vec<String> = results[0].list.keys().cloned().collect();
    for name in &names {
        dist_lines(
            &format!(
                "GET /v1/jobs {name} ({} B/page)",
                results[0].list_bytes[name]
            ),
            &dcol(&|r| r.list[name]),
        );
        line(
            &format!("  … first quarter of the pages, p50 ({name})"),
            "ms",
            &col(&|r| r.list_first_last[name].0),
            true,
        );
        line(
            &format!("  … last quarter of the pages, p50 ({name})"),
            "ms",
            &col(&|r| r.list_first_last[name].1),
            true,
        );
    }
    println!(
        "-- list latency while draining (one request every {} ms)",
        o.drain_list_every.as_millis()
    );
    let names: Vec<String> = results[0].list_drain.keys().cloned().collect();
    for name in &names {
        dist_lines(
            &format!("GET /v1/jobs {name}"),
            &dcol(&|r| r.list_drain.get(name).copied().unwrap_or_default()),
        );
    }
    println!("-- drain");
    line(
        "drain time (first start → last end, master clock)",
        "s",
        &col(&|r| r.drain_s),
        true,
    );
    line("throughput", "job/s", &col(&|r| r.jobs_per_s), false);
    line(
        "master CPU during the drain",
        "s",
        &col(&|r| r.master_cpu_drain_s),
        true,
    );
    dist_lines("slot gap (stop → next start)", &dcol(&|r| r.gap));
    dist_lines("  1 worker: stop → exit", &dcol(&|r| r.teardown));
    dist_lines("  2 exit → master: result durable", &dcol(&|r| r.to_master));
    dist_lines(
        "  3 master: result durable → next assignment durable",
        &dcol(&|r| r.dispatch),
    );
    dist_lines(
        "  4 assignment durable → worker: FFmpeg forked",
        &dcol(&|r| r.to_worker),
    );
    dist_lines(
        "4 KiB write + fdatasync next to the store (every 100 ms)",
        &dcol(&|r| r.fsync),
    );
    dist_lines(
        "FFmpeg wall per job (start → stop)",
        &dcol(&|r| r.ffmpeg_wall),
    );
    println!(
        "all {} jobs succeeded on their first attempt in each of {} runs",
        o.jobs, o.runs
    );
}
