//! Scheduling throughput: jobs per second accepted, durably stored,
//! dispatched, reported finished and recorded (docs/BENCHMARKS.md).
//!
//! `cargo bench -p ffrtmp --bench throughput -- --runs 3`
//! `cargo bench -p ffrtmp --bench throughput -- --quick` (a smoke check:
//! 10 workers, 500 jobs, one run; asserts that it ran and produced numbers)
//!
//! Each run starts a real master (`ffrtmp-node --role master`, its own sled
//! store in a temp dir, real flushes, the product's default log level) with
//! `--max-commit-batch B --commit-interval-us I` (`--modes B/I,...`; the
//! default compares `1/0`, a flush per transition with the scheduler
//! waiting on each, as before group commit, with `4096/0` and `4096/1000`),
//! and `W` *simulated workers* in this process (`--workers 1,10,50,100`). A
//! simulated worker is a QUIC client with its own endpoint and its own node
//! certificate (issued by the cluster CA, as `join` would), that speaks the
//! real protocol: the versioned hello with its slots and capabilities, a
//! lease `Ping` every 500 ms, and for every `Assign` the messages a real
//! worker sends for a job that succeeds (`Started`, then `Finished` with the
//! assignment's token), keeping each result until the master's `Ack`. It
//! never runs FFmpeg: this measures the master, not encoding. It lives here,
//! in the benchmark, and nowhere in the product.
//!
//! Three phases per run, `--jobs M` jobs each, submitted over HTTP by
//! `--submitters C` concurrent keep-alive clients as fast as the master
//! answers `201`:
//! 1. *submit*: no worker is connected; M submissions. Rate = M / time.
//! 2. *dispatch*: the W workers connect and drain the M queued jobs. Rate =
//!    M / (first `Assign` seen → last `Ack` seen).
//! 3. *end to end*: M more submissions while the workers run them. Rate =
//!    acknowledged results per second between the 20 % and 90 % marks of
//!    the acks (the steady part: after the pipeline fills, before the tail).
//!    An `Ack` means the result is durably recorded, so every counted job
//!    was accepted (201 = durable), stored, dispatched, reported finished
//!    and recorded. Also measured in this phase: the master's CPU use and
//!    the mean batch of its store flushes (from `/metrics`:
//!    `ffrtmp_store_flushed_writes_total / ffrtmp_store_flushes_total`).
//!
//! Every run checks that each job was acknowledged exactly once and that the
//! master counts 2·M succeeded jobs. Medians and worst cases (the lowest
//! rate) over the runs are printed per configuration at the end.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ffrtmp_runtime::lease::PING_INTERVAL_MS;
use ffrtmp_runtime::model::{Isolation, JobResult, Outcome};
use ffrtmp_runtime::wire::{self, Capabilities, ToMaster, ToWorker};
use ffrtmp_transport_quic::endpoint::{self, Timers};
use ffrtmp_transport_quic::pki::{self, CertificateAuthority, NodeIdentity, MASTER_SERVER_NAME};
use ffrtmp_transport_quic::{bridge, tls};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ffrtmp-node");
const DEFAULT_BATCH: usize = ffrtmp_actors::scheduler::DEFAULT_MAX_COMMIT_BATCH;
const DEFAULT_INTERVAL_US: u64 =
    ffrtmp_actors::scheduler::DEFAULT_COMMIT_INTERVAL.as_micros() as u64;

struct Opts {
    runs: usize,
    quick: bool,
    workers: Vec<usize>,
    /// (max commit batch, commit interval µs) pairs.
    modes: Vec<(usize, u64)>,
    slots: u32,
    jobs: usize,
    submitters: usize,
    timeout: Duration,
    keep_logs: Option<PathBuf>,
}

/// `B/I,B/I,...`: max commit batch / commit interval in µs.
fn modes(v: &str) -> Vec<(usize, u64)> {
    v.split(',')
        .map(|m| {
            let (b, i) = m
                .trim()
                .split_once('/')
                .unwrap_or_else(|| panic!("--modes: {m:?} is not BATCH/INTERVAL_US"));
            (
                b.parse().expect("--modes: batch"),
                i.parse().expect("--modes: interval (µs)"),
            )
        })
        .collect()
}

fn list(v: &str, flag: &str) -> Vec<usize> {
    v.split(',')
        .map(|x| {
            x.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{flag}: {x:?} is not a number"))
        })
        .collect()
}

impl Opts {
    fn parse() -> Opts {
        let mut o = Opts {
            runs: 3,
            quick: false,
            workers: vec![1, 10, 50, 100],
            modes: vec![(1, 0), (DEFAULT_BATCH, 0), (DEFAULT_BATCH, 1000)],
            slots: 4,
            jobs: 5000,
            submitters: 16,
            timeout: Duration::from_secs(300),
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
                "--quick" => o.quick = true,
                "--runs" => o.runs = val().parse().expect("--runs N"),
                "--workers" => o.workers = list(&val(), "--workers"),
                "--modes" => o.modes = modes(&val()),
                "--slots" => o.slots = val().parse().expect("--slots N"),
                "--jobs" => o.jobs = val().parse().expect("--jobs N"),
                "--submitters" => o.submitters = val().parse().expect("--submitters N"),
                "--timeout-s" => {
                    o.timeout = Duration::from_secs(val().parse().expect("--timeout-s SECONDS"))
                }
                "--keep-logs" => o.keep_logs = Some(PathBuf::from(val())),
                other => panic!(
                    "unknown argument {other:?}; use --quick --runs --workers LIST --modes B/I,.. \
                     --slots --jobs --submitters --timeout-s --keep-logs DIR"
                ),
            }
        }
        if o.quick {
            o.runs = 1;
            o.workers = vec![10];
            o.modes = vec![(DEFAULT_BATCH, DEFAULT_INTERVAL_US)];
            o.jobs = 500;
            o.timeout = Duration::from_secs(60);
        }
        assert!(o.runs >= 1 && o.jobs >= 10 && o.slots >= 1 && o.submitters >= 1);
        assert!(!o.workers.is_empty() && o.workers.iter().all(|&w| w >= 1));
        assert!(!o.modes.is_empty() && o.modes.iter().all(|&(b, _)| b >= 1));
        o
    }
}

/// The job every submission uses; the simulated workers never run it.
fn job_body() -> Value {
    json!({
        "scenario": "480p30-h264",
        "width": 160, "height": 90, "preset": "ultrafast",
        "input": {"type": "testsrc", "duration_s": 0.2},
        "output": {"type": "null"}
    })
}

// ---------------------------------------------------------------- stats

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[(v.len() - 1) / 2]
}

fn lowest(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn highest(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// CPU seconds (user + system) `pid` has used so far.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    let rest = stat.rsplit(')').next().expect("stat line");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// The 1-minute load average.
fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------- master

/// A real `ffrtmp-node --role master`, killed by pid when dropped.
struct Master {
    child: Child,
    base: String,
    quic: SocketAddr,
    pki: PathBuf,
    log: PathBuf,
    /// Removed when the run ends (after the process is killed).
    _dir: tempfile::TempDir,
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_file(path: &Path, child: &mut Child, log: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            panic!(
                "master exited early ({s}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Some(s) = std::fs::read_to_string(path)
            .ok()
            .filter(|s| !s.trim().is_empty())
        {
            return s.trim().to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "master did not write {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Master {
    fn start(batch: usize, interval_us: u64) -> Master {
        let dir = tempfile::Builder::new()
            .prefix("ffrtmp-tput-")
            .tempdir()
            .expect("tempdir");
        let pki = dir.path().join("pki");
        let out = Command::new(BIN)
            .args(["pki", "init", "--dir"])
            .arg(&pki)
            .output()
            .expect("pki init");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let media = dir.path().join("media");
        std::fs::create_dir_all(&media).expect("media");
        let log = dir.path().join("master.log");
        let (quic_file, http_file) = (dir.path().join("quic.addr"), dir.path().join("http.addr"));
        let mut child = Command::new(BIN)
            .args(["--role", "master", "--pki"])
            .arg(&pki)
            .arg("--data-dir")
            .arg(dir.path().join("m"))
            .arg("--media-root")
            .arg(&media)
            .args(["--listen", "127.0.0.1:0", "--listen-addr-file"])
            .arg(&quic_file)
            .args(["--http", "127.0.0.1:0", "--http-addr-file"])
            .arg(&http_file)
            .args(["--max-commit-batch", &batch.to_string()])
            .args(["--commit-interval-us", &interval_us.to_string()])
            // The product's defaults: no API key, its own log level.
            .env_remove("FFRTMP_API_KEY")
            .env_remove("FFRTMP_LOG")
            .env_remove("FFRTMP_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn ffrtmp-node");
        let http = wait_file(&http_file, &mut child, &log);
        let quic = wait_file(&quic_file, &mut child, &log)
            .parse()
            .expect("QUIC address");
        Master {
            child,
            base: format!("http://{http}"),
            quic,
            pki,
            log,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

// ---------------------------------------------------------------- workers

/// What the simulated workers saw, shared by all of them.
#[derive(Default)]
struct Seen {
    assigns: AtomicU64,
    first_assign: Mutex<Option<Instant>>,
    /// When each acknowledgement arrived.
    acks: Mutex<Vec<Instant>>,
    /// Anything a real worker would not expect (the run fails).
    errors: Mutex<Vec<String>>,
}

impl Seen {
    fn error(&self, e: String) {
        self.errors.lock().expect("errors").push(e);
    }

    fn acked(&self) -> usize {
        self.acks.lock().expect("acks").len()
    }
}

fn mono_ms(origin: Instant) -> u64 {
    origin.elapsed().as_millis() as u64
}

fn success() -> Outcome {
    Outcome::Succeeded {
        result: JobResult {
            exit_code: 0,
            wall_s: 0.2,
            frames: 6,
            avg_fps: 30.0,
            speed: Some(1.0),
            output_bytes: None,
            output_bitrate_kbps: None,
            cpu_s: None,
            peak_memory_bytes: None,
            output_duration_s: Some(0.2),
            quality: None,
            encoder: None,
        },
    }
}

/// A node identity signed by the cluster CA, as `join` would obtain it.
fn identity(ca: &CertificateAuthority, node_id: &str) -> NodeIdentity {
    let (key_pem, csr_pem) = pki::new_key_and_csr(node_id).expect("key and CSR");
    let cert_pem = ca.issue_node_cert(node_id, &csr_pem).expect("certificate");
    NodeIdentity {
        cert_pem,
        key_pem,
        ca_pem: ca.cert_pem().to_string(),
    }
}

/// One simulated worker: connect, say hello, then answer the master until
/// the link ends or the task is aborted.
async fn sim_worker(
    node_id: String,
    id: NodeIdentity,
    master: SocketAddr,
    slots: u32,
    seen: Arc<Seen>,
) {
    let fail = |what: &str, e: String| seen.error(format!("{node_id}: {what}: {e}"));
    let secret: [u8; 32] = rand::random();
    let ep = match endpoint::client_endpoint("127.0.0.1:0".parse().expect("addr"), &secret) {
        Ok(ep) => ep,
        Err(e) => return fail("endpoint", e.to_string()),
    };
    let hello = ToMaster::Hello {
        node_id: node_id.clone(),
        protocol_version: wire::PROTOCOL_VERSION,
        slots,
        capabilities: Capabilities {
            encoders: vec!["libx264".into()],
            cores: 2,
            memory_bytes: 1 << 30,
            unavailable_encoders: Vec::new(),
            metrics: Vec::new(),
        },
        running: Vec::new(),
        unacked: Vec::new(),
    };
    let tls_cfg = match tls::client_config(&id) {
        Ok(c) => c,
        Err(e) => return fail("TLS config", e.to_string()),
    };
    let link = match endpoint::connect(
        &ep,
        master,
        MASTER_SERVER_NAME,
        tls_cfg,
        Timers::default(),
        &hello,
    )
    .await
    {
        Ok(l) => l,
        Err(e) => return fail("connect", e.to_string()),
    };
    let (tx, mut rx) = bridge::bridge(link, Vec::new());
    // Lease renewals, as a real worker sends them.
    let pinger = {
        let tx = tx.clone();
        tokio::spawn(async move {
            let origin = Instant::now();
            let mut every = tokio::time::interval(Duration::from_millis(PING_INTERVAL_MS));
            loop {
                every.tick().await;
                let ping = ToMaster::Ping {
                    sent_ms: mono_ms(origin),
                };
                let Ok(frame) = wire::encode(&ping) else {
                    return;
                };
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
        })
    };
    // Results sent and not yet acknowledged (a real worker's outbox).
    let mut unacked: HashSet<(String, u64)> = HashSet::new();
    while let Some(frame) = rx.recv().await {
        let msg: ToWorker = match wire::decode(&frame) {
            Ok(m) => m,
            Err(e) => {
                fail("bad frame", e.to_string());
                break;
            }
        };
        match msg {
            ToWorker::Assign(a) => {
                if seen.assigns.fetch_add(1, Ordering::SeqCst) == 0 {
                    *seen.first_assign.lock().expect("first") = Some(Instant::now());
                }
                let started = ToMaster::Started {
                    job_id: a.job_id.clone(),
                    token: a.token,
                    isolation: Isolation::None,
                };
                let finished = ToMaster::Finished {
                    job_id: a.job_id.clone(),
                    token: a.token,
                    outcome: success(),
                    energy: None,
                };
                unacked.insert((a.job_id, a.token));
                for m in [started, finished] {
                    let frame = wire::encode(&m).expect("encode");
                    if tx.send(frame).await.is_err() {
                        break;
                    }
                }
            }
            ToWorker::Ack(r) => {
                if unacked.remove(&(r.job_id.clone(), r.token)) {
                    seen.acks.lock().expect("acks").push(Instant::now());
                } else {
                    fail("ack", format!("for a result not held: {r:?}"));
                }
            }
            ToWorker::Pong { .. } | ToWorker::Drain { .. } => {}
            other @ (ToWorker::Cancel { .. } | ToWorker::Kill { .. }) => {
                fail("unexpected", format!("{other:?}"));
            }
        }
    }
    pinger.abort();
}

// ---------------------------------------------------------------- HTTP

/// Submit `n` jobs with `clients` concurrent keep-alive connections; returns
/// how long it took. Every answer must be `201`.
async fn submit(base: &str, n: usize, clients: usize) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(serde_json::to_vec(&job_body()).expect("body"));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (next, body, url) = (next.clone(), body.clone(), format!("{base}/v1/jobs"));
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .expect("http client");
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    let resp = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.as_ref().clone())
                        .send()
                        .await
                        .expect("POST /v1/jobs");
                    let status = resp.status().as_u16();
                    let text = resp.text().await.expect("response body");
                    assert_eq!(status, 201, "submission refused: {text}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("submitter");
    }
    t0.elapsed()
}

/// The sum of a metric's samples (all label sets) from `/metrics`.
async fn metric(http: &reqwest::Client, base: &str, name: &str, label: Option<&str>) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter(|l| label.is_none_or(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_acks(seen: &Seen, n: usize, timeout: Duration, what: &str) {
    let start = Instant::now();
    loop {
        let got = seen.acked();
        if got >= n {
            return;
        }
        let errors = seen.errors.lock().expect("errors").clone();
        assert!(errors.is_empty(), "{what}: simulated workers: {errors:?}");
        assert!(
            start.elapsed() < timeout,
            "{what}: {got} of {n} results acknowledged after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------- one run

#[derive(Debug, Clone, Copy, Default)]
struct RunResult {
    submit: f64,
    dispatch: f64,
    e2e: f64,
    /// Submissions per second while the workers ran (phase 3).
    e2e_submit: f64,
    writes_per_flush: f64,
    master_cpu_pct: f64,
    load1: f64,
}

async fn run(o: &Opts, workers: usize, mode: (usize, u64), run_no: usize) -> RunResult {
    let (batch, interval) = mode;
    let load = load1();
    let master = Master::start(batch, interval);
    let http = reqwest::Client::new();
    let base = master.base.clone();
    let m = o.jobs;

    // 1. submissions only
    let took = submit(&base, m, o.submitters).await;
    let submit_rate = m as f64 / took.as_secs_f64();

    // 2. dispatch only: the workers drain the queue
    let ca = CertificateAuthority::load(&master.pki).expect("CA");
    let seen = Arc::new(Seen::default());
    let mut tasks = Vec::new();
    for i in 0..workers {
        let node_id = format!("sim-{i:03}");
        let id = identity(&ca, &node_id);
        tasks.push(tokio::spawn(sim_worker(
            node_id,
            id,
            master.quic,
            o.slots,
            seen.clone(),
        )));
    }
    wait_acks(&seen, m, o.timeout, "dispatch").await;
    let first = seen.first_assign.lock().expect("first").expect("an assign");
    let last = *seen.acks.lock().expect("acks").last().expect("acks");
    let dispatch_rate = m as f64 / (last - first).as_secs_f64();

    // 3. end to end: submit while the workers run them
    let flushes0 = metric(&http, &base, "ffrtmp_store_flushes_total", None).await;
    let writes0 = metric(&http, &base, "ffrtmp_store_flushed_writes_total", None).await;
    let cpu0 = cpu_s(master.pid());
    let t0 = Instant::now();
    let took = submit(&base, m, o.submitters).await;
    wait_acks(&seen, 2 * m, o.timeout, "end to end").await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_s(master.pid()) - cpu0;
    let flushes = metric(&http, &base, "ffrtmp_store_flushes_total", None).await - flushes0;
    let writes = metric(&http, &base, "ffrtmp_store_flushed_writes_total", None).await - writes0;
    let acks: Vec<Instant> = seen.acks.lock().expect("acks")[m..].to_vec();
    let (lo, hi) = (m / 5, m * 9 / 10);
    let e2e = (hi - lo) as f64 / (acks[hi] - acks[lo]).as_secs_f64();

    let errors = seen.errors.lock().expect("errors").clone();
    assert!(errors.is_empty(), "simulated workers: {errors:?}");
    assert_eq!(seen.acked(), 2 * m, "every job acknowledged exactly once");
    let succeeded = metric(
        &http,
        &base,
        "ffrtmp_jobs_finished_total",
        Some("outcome=\"succeeded\""),
    )
    .await;
    assert_eq!(succeeded as usize, 2 * m, "the master's succeeded count");
    for t in &tasks {
        t.abort();
    }
    if let Some(keep) = &o.keep_logs {
        std::fs::create_dir_all(keep).expect("keep-logs dir");
        let to = keep.join(format!(
            "master-w{workers}-b{batch}-i{interval}-r{run_no}.log"
        ));
        std::fs::copy(&master.log, &to).expect("copy log");
    }
    let r = RunResult {
        submit: submit_rate,
        dispatch: dispatch_rate,
        e2e,
        e2e_submit: m as f64 / took.as_secs_f64(),
        writes_per_flush: if flushes > 0.0 {
            writes / flushes
        } else {
            f64::NAN
        },
        master_cpu_pct: cpu / wall * 100.0,
        load1: load,
    };
    for (what, v) in [
        ("submit", r.submit),
        ("dispatch", r.dispatch),
        ("end-to-end", r.e2e),
    ] {
        assert!(v.is_finite() && v > 0.0, "{what} rate is {v}");
    }
    r
}

fn main() {
    let o = Opts::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    println!(
        "throughput: {} run(s) per configuration, {} jobs per phase, {} slots per worker, {} submitters",
        o.runs, o.jobs, o.slots, o.submitters
    );
    println!(
        "{:>7} {:>11} {:>4} | {:>9} {:>9} {:>9} {:>9} | {:>7} {:>6} {:>5}",
        "workers",
        "batch/µs",
        "run",
        "submit/s",
        "disp./s",
        "e2e/s",
        "e2e sub/s",
        "wr/flush",
        "cpu%",
        "load1"
    );
    let mut table = Vec::new();
    for &mode in &o.modes {
        for &workers in &o.workers {
            let mut rs = Vec::new();
            for run_no in 1..=o.runs {
                let r = rt.block_on(run(&o, workers, mode, run_no));
                println!(
                    "{:>7} {:>11} {:>4} | {:>9.0} {:>9.0} {:>9.0} {:>9.0} | {:>7.1} {:>6.0} {:>5.2}",
                    workers,
                    format!("{}/{}", mode.0, mode.1),
                    run_no,
                    r.submit,
                    r.dispatch,
                    r.e2e,
                    r.e2e_submit,
                    r.writes_per_flush,
                    r.master_cpu_pct,
                    r.load1
                );
                rs.push(r);
            }
            table.push((workers, mode, rs));
        }
    }
    println!();
    println!(
        "summary: jobs/s, median (worst = lowest) over {} run(s); writes per flush median; master CPU % median",
        o.runs
    );
    println!(
        "| workers | max commit batch / interval µs | submit only | dispatch only | end to end | writes/flush | master CPU % | load1 max |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (workers, (batch, interval), rs) in &table {
        let col = |f: fn(&RunResult) -> f64| rs.iter().map(f).collect::<Vec<f64>>();
        let mw = |f: fn(&RunResult) -> f64| {
            let v = col(f);
            format!("{:.0} ({:.0})", median(&v), lowest(&v))
        };
        println!(
            "| {} | {} / {} | {} | {} | {} | {:.1} | {:.0} | {:.2} |",
            workers,
            batch,
            interval,
            mw(|r| r.submit),
            mw(|r| r.dispatch),
            mw(|r| r.e2e),
            median(&col(|r| r.writes_per_flush)),
            median(&col(|r| r.master_cpu_pct)),
            highest(&col(|r| r.load1)),
        );
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
