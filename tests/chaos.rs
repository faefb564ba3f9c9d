//! The chaos suite (issue 5): a master and three workers as real
//! `ffrtmp-node` processes, a stream of short real encodes, and a seeded
//! random schedule of faults while they run:
//! - SIGKILL of a worker, restarted on the same data dir a moment later;
//! - SIGSTOP of a worker for longer than its lease, then SIGCONT;
//! - SIGKILL of the master, restarted on the same data dir;
//! - a cut link: every worker reaches the master through a UDP relay this
//!   test controls (`common::relay`), and a cut drops all of one worker's
//!   datagrams both ways for a while — shorter or longer than the lease;
//! - a damaged outbox: the worker is SIGKILLed, its outbox's sled log is
//!   emptied (as a bad disk or an over-eager cleanup would), and it is
//!   restarted: it must refuse to start, loudly, if results could have been
//!   lost; it is then started with the outbox moved aside, as its message
//!   says;
//! - a stale outbox: likewise, with another worker's outbox copied in (a
//!   data dir restored from the wrong host); always refused.
//!
//! At the end the delivery guarantees are checked and reported with
//! counts: every accepted job reached exactly one terminal state; no job ran
//! on two workers at once — from the run log the workers' guard processes
//! write (`--run-log`), not from the master's opinion; every recorded result
//! is the only one; no FFmpeg process or job cgroup is left; the master's
//! store reopens and agrees with the HTTP API. "No FFmpeg process left" is
//! checked by a marker in the workers' environment, which their guards and
//! FFmpeg inherit: no live process may carry it.
//!
//! `FFRTMP_CHAOS_SEED=N` replays a schedule (the seed is printed);
//! `FFRTMP_SOAK_SECS=N` keeps submitting and faulting for N seconds (the CI
//! run submits a fixed batch and takes about three minutes).
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{plain, Cluster};
use common::relay::Relay;
use common::*;
use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// The lease the master grants: short, so a frozen worker's jobs move on
/// within seconds (it must exceed the workers' 1 s kill grace).
const LEASE_MS: u64 = 3000;
const TERMINAL: [&str; 4] = ["succeeded", "failed", "cancelled", "timed_out"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillWorker,
    StopWorker,
    KillMaster,
    CutLink,
    CorruptOutbox,
    StaleOutbox,
}

/// The environment variable that marks this run's worker processes (and,
/// by inheritance, their guards and FFmpeg processes).
const MARKER: &str = "FFRTMP_CHAOS_RUN";

/// Live processes whose environment carries `MARKER=value`.
fn marked_processes(value: &str) -> Vec<(i32, String)> {
    let needle = format!("{MARKER}={value}");
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            let cmd = std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default();
            found.push((pid, cmd));
        }
    }
    found
}

/// What an outbox fault did.
#[derive(Debug, Default)]
struct OutboxFaults {
    /// Restarts that were refused, as expected.
    refused: u32,
    /// Damaged outboxes that held no result yet, so nothing could be lost
    /// and the worker rightly started.
    nothing_to_lose: u32,
}

/// SIGKILL worker `w`, damage its outbox (`stale`: replace it with another
/// worker's; otherwise empty its sled log), restart it, and check that it
/// refuses to start when results could have been lost; then move the
/// outbox aside, as the refusal says, and start it again.
fn outbox_fault(c: &mut Cluster, w: usize, stale: bool, n: usize, report: &mut OutboxFaults) {
    let dir = c.worker_dir(w);
    let (ob, side) = (dir.join("outbox.sled"), dir.join("outbox.meta"));
    c.workers[w].kill9();
    let expect_refusal = if stale {
        let other = c.worker_dir((w + 1) % c.workers.len());
        let _ = std::fs::remove_dir_all(&ob);
        copy_dir(&other.join("outbox.sled"), &ob);
        std::fs::copy(other.join("outbox.meta"), &side).expect("copy side file");
        true
    } else {
        let seq = std::fs::read(&side)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["seq"].as_u64())
            .unwrap_or(0);
        std::fs::OpenOptions::new()
            .write(true)
            .open(ob.join("db"))
            .and_then(|f| f.set_len(0))
            .expect("empty the outbox log");
        seq > 0
    };
    let log_before = c.workers[w].log().len();
    c.workers[w].start();
    if !expect_refusal {
        report.nothing_to_lose += 1;
        return;
    }
    let status = c.workers[w].wait_exit(Duration::from_secs(30));
    let said = c.workers[w].log()[log_before..].to_string();
    assert!(!status.success(), "a refused worker exits with an error");
    // A stale outbox names its node; a damaged one is refused by the
    // sequence check or, where sled notices the damage itself, by sled.
    let why = if stale {
        "belongs to node"
    } else {
        "refusing the outbox"
    };
    assert!(
        said.contains("refusing the outbox") && said.contains(why),
        "worker {w} did not refuse its damaged outbox loudly:\n{said}"
    );
    report.refused += 1;
    for p in [&ob, &side] {
        let mut aside = p.as_os_str().to_owned();
        aside.push(format!(".rejected-{n}"));
        std::fs::rename(p, aside).expect("move the outbox aside");
    }
    c.workers[w].start();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            // A live sled file may change under the copy: sled recovers a
            // prefix, and the side file names its node either way.
            let _ = std::fs::copy(e.path(), to.join(e.file_name()));
        }
    }
}

/// One attempt's life on a worker, from the run log.
#[derive(Debug, Clone)]
struct Run {
    start: Option<u64>,
    /// The earliest `stop`, `kill` or `exit` line.
    end: Option<u64>,
    /// The worker process that ran it.
    worker_pid: u32,
}

/// A run of a worker this test SIGKILLed has no end line: its guard died
/// with it (PDEATHSIG) and FFmpeg with the guard. It ended when the test
/// killed the worker, plus this much for that chain of deaths.
const DEATH_CHAIN_NS: u64 = 100_000_000;

/// `(job, token) → run` from the shared run log of all workers.
fn read_runs(path: &Path) -> BTreeMap<(String, u64), Run> {
    let mut runs: BTreeMap<(String, u64), Run> = BTreeMap::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let [event, ns, job, token, pid] = f[..] else {
            panic!("malformed run log line {line:?}");
        };
        let ns: u64 = ns.parse().expect("ns");
        let token: u64 = token.parse().expect("token");
        let worker_pid: u32 = pid.parse().expect("pid");
        let r = runs.entry((job.to_string(), token)).or_insert(Run {
            start: None,
            end: None,
            worker_pid,
        });
        match event {
            "start" => r.start = Some(r.start.map_or(ns, |s| s.min(ns))),
            "stop" | "kill" | "exit" => r.end = Some(r.end.map_or(ns, |e| e.min(ns))),
            // FFmpeg's child about to execve: inside [start, stop] already.
            "exec" => {}
            other => panic!("unknown run log event {other:?}"),
        }
    }
    runs
}

/// Pairs of runs of one job (different tokens) that overlap in time.
fn overlaps(runs: &BTreeMap<(String, u64), Run>) -> Vec<String> {
    let mut by_job: HashMap<&str, Vec<(u64, &Run)>> = HashMap::new();
    for ((job, token), r) in runs {
        by_job.entry(job).or_default().push((*token, r));
    }
    let mut bad = Vec::new();
    for (job, rs) in by_job {
        for (i, (ta, a)) in rs.iter().enumerate() {
            for (tb, b) in rs.iter().skip(i + 1) {
                let (Some(sa), Some(sb)) = (a.start, b.start) else {
                    continue;
                };
                let ea = a.end.unwrap_or(u64::MAX);
                let eb = b.end.unwrap_or(u64::MAX);
                if sa < eb && sb < ea {
                    bad.push(format!(
                        "job {job}: token {ta} [{sa}, {ea}] overlaps token {tb} [{sb}, {eb}]"
                    ));
                }
            }
        }
    }
    bad
}

fn job_body(rng: &mut StdRng) -> Value {
    let priority = ["live", "high", "medium", "low", "batch"][rng.random_range(0..5)];
    // 640x360, 2–12 s of video: a second or two of encoding each, so that
    // faults land while jobs run.
    let duration = rng.random_range(20..=120) as f64 / 10.0;
    let mut body = json!({
        "scenario": "480p30-h264",
        "width": 640, "height": 360,
        "input": {"type": "testsrc", "duration_s": duration},
        "output": {"type": "null"}
    });
    body["priority"] = json!(priority);
    if rng.random_bool(0.2) {
        body["max_retries"] = json!(0);
    } else {
        body["max_retries"] = json!(10);
    }
    body
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn chaos_no_job_lost_none_twice_nothing_left_behind() {
    let _g = serial();
    let seed = env_u64("FFRTMP_CHAOS_SEED").unwrap_or_else(rand::random);
    let soak = env_u64("FFRTMP_SOAK_SECS").map(Duration::from_secs);
    eprintln!("chaos seed {seed} (replay with FFRTMP_CHAOS_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let log_dir = tempfile::Builder::new()
        .prefix("ffrtmp-chaos-")
        .tempdir()
        .expect("tempdir");
    let run_log = log_dir.path().join("runs.log");
    let mut c = Cluster::start_opts(
        0,
        2,
        vec!["--run-log".into(), run_log.to_string_lossy().into_owned()],
        vec!["--lease-ms".into(), LEASE_MS.to_string()],
    );
    let marker = format!("{}-{seed}", std::process::id());
    let upstream = c.quic.parse().expect("master QUIC address");
    let relays: Vec<Relay> = (0..3).map(|_| Relay::start(upstream)).collect();
    for (i, r) in relays.iter().enumerate() {
        c.add_worker_via(i, &r.addr.to_string(), &[(MARKER, &marker)]);
    }
    c.wait_nodes(3);
    let mut outbox_report = OutboxFaults::default();

    let mut ids: Vec<String> = Vec::new();
    let mut cancel_asked: Vec<String> = Vec::new();
    let mut faults: BTreeMap<Fault, u32> = BTreeMap::new();
    let batch = if soak.is_some() { 40 } else { 150 };
    let t0 = Instant::now();
    let deadline = t0 + soak.unwrap_or(Duration::ZERO) + Duration::from_secs(240);
    let mut next_fault = Instant::now() + Duration::from_secs(rng.random_range(2..=4));
    // Worker pid → when this test SIGKILLed it (run log clock).
    let mut killed_at: HashMap<u32, u64> = HashMap::new();

    let submit_batch = |c: &Cluster, rng: &mut StdRng, ids: &mut Vec<String>| {
        for _ in 0..batch {
            // The master may be down: a refused submission was not accepted.
            let body = job_body(rng);
            let resp = c
                .http
                .post(format!("{}/v1/jobs", c.base))
                .json(&body)
                .send();
            if let Ok(r) = resp {
                if r.status().as_u16() == 201 {
                    if let Ok(v) = r.json::<Value>() {
                        if let Some(id) = v["id"].as_str() {
                            ids.push(id.to_string());
                        }
                    }
                }
            }
        }
    };
    submit_batch(&c, &mut rng, &mut ids);

    loop {
        let states: Vec<String> = ids
            .iter()
            .map(|id| {
                c.http
                    .get(format!("{}/v1/jobs/{id}", c.base))
                    .send()
                    .ok()
                    .and_then(|r| r.json::<Value>().ok())
                    .and_then(|v| v["state"].as_str().map(String::from))
                    .unwrap_or_else(|| "unknown".into())
            })
            .collect();
        let open = states
            .iter()
            .filter(|s| !TERMINAL.contains(&s.as_str()))
            .count();
        let soaking = soak.is_some_and(|s| t0.elapsed() < s);
        if open == 0 && !soaking {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs still open at the deadline: {open}"
        );
        if soaking && open < batch / 2 {
            submit_batch(&c, &mut rng, &mut ids);
        }
        // Cancel a running job now and then.
        if rng.random_bool(0.1) {
            if let Some((id, _)) = ids
                .iter()
                .zip(&states)
                .find(|(id, s)| s.as_str() == "running" && !cancel_asked.contains(id))
            {
                let _ = c
                    .http
                    .post(format!("{}/v1/jobs/{id}/cancel", c.base))
                    .send();
                cancel_asked.push(id.clone());
            }
        }
        if Instant::now() >= next_fault {
            let fault = match rng.random_range(0..14) {
                0..=2 => Fault::KillWorker,
                3..=5 => Fault::StopWorker,
                6..=7 => Fault::KillMaster,
                8..=10 => Fault::CutLink,
                11..=12 => Fault::CorruptOutbox,
                _ => Fault::StaleOutbox,
            };
            *faults.entry(fault).or_default() += 1;
            let w = rng.random_range(0..c.workers.len());
            match fault {
                Fault::KillWorker => {
                    eprintln!("[{:>6.1}s] SIGKILL worker {w}", t0.elapsed().as_secs_f64());
                    if let Some(pid) = c.workers[w].child.as_ref().map(|ch| ch.id()) {
                        killed_at.insert(pid, ffrtmp_spawn::monotonic_ns());
                    }
                    c.workers[w].kill9();
                    std::thread::park_timeout(Duration::from_millis(rng.random_range(200..2000)));
                    c.workers[w].start();
                }
                Fault::StopWorker => {
                    let ms = LEASE_MS + rng.random_range(500..3000);
                    eprintln!(
                        "[{:>6.1}s] SIGSTOP worker {w} for {ms} ms",
                        t0.elapsed().as_secs_f64()
                    );
                    c.workers[w].signal(Signal::SIGSTOP);
                    std::thread::park_timeout(Duration::from_millis(ms));
                    c.workers[w].signal(Signal::SIGCONT);
                }
                Fault::CutLink => {
                    let ms = rng.random_range(500..LEASE_MS + 3000);
                    eprintln!(
                        "[{:>6.1}s] cut worker {w}'s link for {ms} ms",
                        t0.elapsed().as_secs_f64()
                    );
                    relays[w].set_cut(true);
                    std::thread::park_timeout(Duration::from_millis(ms));
                    relays[w].set_cut(false);
                }
                Fault::CorruptOutbox | Fault::StaleOutbox => {
                    let stale = fault == Fault::StaleOutbox;
                    eprintln!(
                        "[{:>6.1}s] SIGKILL worker {w}, {} its outbox, restart",
                        t0.elapsed().as_secs_f64(),
                        if stale {
                            "swap another worker's outbox in for"
                        } else {
                            "empty"
                        }
                    );
                    if let Some(pid) = c.workers[w].child.as_ref().map(|ch| ch.id()) {
                        killed_at.insert(pid, ffrtmp_spawn::monotonic_ns());
                    }
                    let n = faults.values().sum::<u32>() as usize;
                    outbox_fault(&mut c, w, stale, n, &mut outbox_report);
                }
                Fault::KillMaster => {
                    eprintln!("[{:>6.1}s] SIGKILL master", t0.elapsed().as_secs_f64());
                    c.master.kill9();
                    std::thread::park_timeout(Duration::from_millis(rng.random_range(200..1500)));
                    c.restart_master();
                }
            }
            next_fault = Instant::now() + Duration::from_millis(rng.random_range(3000..7000));
        }
        // The scheduler's pace between looks, not a wait for a condition.
        std::thread::park_timeout(Duration::from_millis(250));
    }

    // ---- invariants ----
    let jobs: Vec<Value> = ids
        .iter()
        .map(|id| c.get(&format!("/v1/jobs/{id}")))
        .collect();
    let mut by_state: BTreeMap<String, u32> = BTreeMap::new();
    for j in &jobs {
        *by_state
            .entry(j["state"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    // 1. Exactly one terminal state: terminal now, and the master applied
    //    one terminal outcome per job (one "attempt finished" line with a
    //    terminal state, across its restarts).
    let master_log = plain(&c.master.log());
    let mut terminal_lines: HashMap<String, u32> = HashMap::new();
    for line in master_log
        .lines()
        .filter(|l| l.contains("attempt finished"))
    {
        if TERMINAL
            .iter()
            .any(|t| line.contains(&format!("state=\"{t}\"")))
        {
            if let Some(id) = ids.iter().find(|id| line.contains(id.as_str())) {
                *terminal_lines.entry(id.clone()).or_default() += 1;
            }
        }
    }
    let mut twice_terminal = Vec::new();
    for j in &jobs {
        let id = j["id"].as_str().unwrap_or("");
        assert!(TERMINAL.contains(&j["state"].as_str().unwrap_or("")), "{j}");
        let n = terminal_lines.get(id).copied().unwrap_or(0);
        // A job cancelled while queued ends without a worker's report.
        if n > 1 {
            twice_terminal.push(format!("{id}: {n} terminal outcomes applied"));
        }
    }
    // 3. One result per recorded result: a succeeded job has exactly one
    //    succeeded attempt, and it is the last.
    let mut double_results = Vec::new();
    for j in &jobs {
        let attempts = j["attempts"].as_array().cloned().unwrap_or_default();
        let succeeded = attempts
            .iter()
            .filter(|a| a["outcome"]["outcome"] == "succeeded")
            .count();
        let want = usize::from(j["state"] == "succeeded");
        if succeeded != want || (want == 1 && j["result"].is_null()) {
            double_results.push(format!("{}: {succeeded} succeeded attempts", j["id"]));
        }
    }
    // 2. Never two copies at once, from the workers' guards.
    let settle = Instant::now();
    let runs = loop {
        let mut runs = read_runs(&run_log);
        for r in runs.values_mut() {
            if r.end.is_none() {
                r.end = killed_at.get(&r.worker_pid).map(|t| t + DEATH_CHAIN_NS);
            }
        }
        let open: Vec<_> = runs.iter().filter(|(_, r)| r.end.is_none()).collect();
        if open.is_empty() {
            break runs;
        }
        if settle.elapsed() > Duration::from_secs(30) {
            for ((job, token), _) in &open {
                for w in &c.workers {
                    for l in plain(&w.log()).lines().filter(|l| l.contains(job.as_str())) {
                        eprintln!("{}: {l}", w.name);
                    }
                }
                eprintln!("open run: {job} {token}");
            }
            panic!("{} runs never ended", open.len());
        }
        std::thread::park_timeout(Duration::from_millis(100));
    };
    let overlap = overlaps(&runs);
    // 4. Nothing left behind: no job cgroup, no process in them.
    let parents: Vec<String> = c.workers.iter().map(|w| w.cgroup_parent.clone()).collect();
    wait_for("job cgroups to be gone", Duration::from_secs(30), || {
        parents
            .iter()
            .all(|p| {
                cgroup_dirs(p).iter().all(|d| {
                    !d.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("job-"))
                })
            })
            .then_some(())
    });
    let api_states: BTreeMap<String, String> = jobs
        .iter()
        .map(|j| {
            (
                j["id"].as_str().unwrap_or("").to_string(),
                j["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    // 4b. No process of this run is left: with every job ended, the only
    //     marked processes are the workers themselves; once they are
    //     SIGKILLed, none at all (their guards and FFmpeg die with them).
    drop(relays);
    let worker_pids: Vec<i32> = c
        .workers
        .iter()
        .filter_map(|w| w.child.as_ref().map(|ch| ch.id() as i32))
        .collect();
    let gone = |allowed: &[i32]| -> Vec<(i32, String)> {
        let settle = Instant::now();
        loop {
            let left: Vec<_> = marked_processes(&marker)
                .into_iter()
                .filter(|(p, _)| !allowed.contains(p))
                .collect();
            if left.is_empty() || settle.elapsed() > Duration::from_secs(30) {
                return left;
            }
            std::thread::park_timeout(Duration::from_millis(100));
        }
    };
    let mut left = gone(&worker_pids);
    for w in &mut c.workers {
        w.kill9();
    }
    left.extend(gone(&[]));
    // 5. The master's store reopens cleanly and agrees with the API.
    let master_dir = c.dir.path().join("m");
    c.master.kill9();
    let store = ffrtmp_os::store::Store::open(&master_dir.join("master.sled"))
        .expect("the master's store reopens");
    let mut disagree = Vec::new();
    for (id, state) in &api_states {
        match store.get(id) {
            Ok(Some(job)) if job.state.as_str() == state => {}
            other => disagree.push(format!("{id}: API {state}, store {other:?}")),
        }
    }
    drop(store);

    eprintln!(
        "chaos report (seed {seed}, {:.0} s):",
        t0.elapsed().as_secs_f64()
    );
    eprintln!("  jobs accepted: {}; by state: {by_state:?}", ids.len());
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    for j in jobs.iter().filter(|j| j["state"] == "failed") {
        let r = j["failure"]["reason"].as_str().unwrap_or("?").to_string();
        *reasons.entry(r).or_default() += 1;
    }
    eprintln!("  failed, by reason: {reasons:?}");
    eprintln!("  cancels asked: {}", cancel_asked.len());
    eprintln!("  faults: {faults:?}");
    eprintln!(
        "  outbox faults: {} refused loudly, {} held nothing to lose",
        outbox_report.refused, outbox_report.nothing_to_lose
    );
    eprintln!("  processes left behind: {}", left.len());
    eprintln!(
        "  attempts in the run log: {}; jobs with more than one attempt: {}",
        runs.len(),
        {
            let mut per: HashMap<&str, u32> = HashMap::new();
            for (job, _) in runs.keys() {
                *per.entry(job.as_str()).or_default() += 1;
            }
            per.values().filter(|n| **n > 1).count()
        }
    );
    eprintln!("  overlapping runs: {}", overlap.len());
    eprintln!(
        "  jobs with more than one terminal outcome: {}",
        twice_terminal.len()
    );
    eprintln!(
        "  jobs with a wrong number of results: {}",
        double_results.len()
    );
    eprintln!("  store/API disagreements: {}", disagree.len());
    assert!(overlap.is_empty(), "two copies at once: {overlap:#?}");
    assert!(twice_terminal.is_empty(), "{twice_terminal:#?}");
    assert!(double_results.is_empty(), "{double_results:#?}");
    assert!(disagree.is_empty(), "{disagree:#?}");
    assert!(left.is_empty(), "processes left behind: {left:#?}");
    assert!(
        faults.values().sum::<u32>() > 0,
        "the run applied no fault: make it longer"
    );
}

#[test]
fn overlap_checker_finds_overlaps_and_only_those() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("runs.log");
    std::fs::write(
        &p,
        "start 100 j1 1 7\nkill 200 j1 1 7\nexit 900 j1 1 7\nstart 300 j1 2 8\nstop 400 j1 2 8\n\
         start 100 j2 3 7\nstart 150 j2 4 8\nstop 160 j2 4 8\nstop 500 j2 3 7\n",
    )
    .expect("write");
    let runs = read_runs(&p);
    assert_eq!(runs[&("j1".to_string(), 1)].end, Some(200), "earliest end");
    let bad = overlaps(&runs);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("job j2"), "{bad:?}");
}

#[test]
fn relay_forwards_both_ways_and_a_cut_drops_both_ways() {
    use std::net::UdpSocket;
    let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
    server
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let relay = Relay::start(server.local_addr().expect("addr"));
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    // Through: client → relay → server, and the answer back.
    client.send_to(b"ping", relay.addr).expect("send");
    let (n, via) = server.recv_from(&mut buf).expect("server receives");
    assert_eq!(&buf[..n], b"ping");
    server.send_to(b"pong", via).expect("send");
    let (n, from) = client.recv_from(&mut buf).expect("client receives");
    assert_eq!((&buf[..n], from), (&b"pong"[..], relay.addr));
    // Cut: neither direction gets through (the relay counts the drops).
    relay.set_cut(true);
    client.send_to(b"lost", relay.addr).expect("send");
    assert!(
        server.recv_from(&mut buf).is_err(),
        "client→server while cut"
    );
    server.send_to(b"lost", via).expect("send");
    assert!(
        client.recv_from(&mut buf).is_err(),
        "server→client while cut"
    );
    wait_for("both drops counted", Duration::from_secs(5), || {
        (relay.dropped() == 2).then_some(())
    });
    // Restored.
    relay.set_cut(false);
    client.send_to(b"again", relay.addr).expect("send");
    let (n, _) = server.recv_from(&mut buf).expect("server receives again");
    assert_eq!(&buf[..n], b"again");
}
