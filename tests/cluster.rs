//! A real cluster on loopback: `ffrtmp-node --role master` and two
//! `--role worker` processes joined by token over QUIC with mutual TLS.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(120);

#[test]
fn jobs_spread_over_two_workers_and_all_succeed() {
    let _g = serial();
    let c = Cluster::start(2);
    let nodes = c.nodes();
    for n in &nodes {
        assert!(
            n["capabilities"]["encoders"]
                .as_array()
                .map(|e| e.iter().any(|x| x == "libx264"))
                .unwrap_or(false),
            "{n}"
        );
    }
    let ids: Vec<String> = (0..4).map(|_| c.submit(small_job(1.5))).collect();
    let mut used = std::collections::BTreeSet::new();
    for id in &ids {
        let job = c.wait_state(id, &["succeeded", "failed"], LONG);
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["attempt"], 1);
        // Energy crosses the cluster with the result (RAPL where the host
        // has it, else the labelled estimate).
        let e = &job["energy"];
        assert!(e["energy_joules"].as_f64().unwrap_or(0.0) > 0.0, "{job}");
        assert!(e["energy_source"].is_string(), "{e}");
        used.insert(job["node"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(used.len(), 2, "both workers ran jobs: {used:?}");
    // Each worker reports its power to the master.
    let powered = wait_for("both workers' power reports", LONG, || {
        let nodes = c.nodes();
        let n = nodes
            .iter()
            .filter(|n| n["power"]["samples"].as_u64().unwrap_or(0) > 0)
            .count();
        (n == 2).then_some(nodes)
    });
    for n in &powered {
        assert!(
            n["power"]["joules_total"].as_f64().unwrap_or(0.0) > 0.0,
            "{n}"
        );
    }
}

#[test]
fn sigkill_of_a_worker_mid_job_the_job_completes_on_the_other() {
    let _g = serial();
    let mut c = Cluster::start(2);
    let id = c.submit(long_job(6.0));
    let running = c.wait_state(&id, &["running"], LONG);
    let victim_node = running["node"].as_str().expect("node").to_string();
    let idx = c.worker_of(&victim_node);
    let pids = wait_for("ffmpeg pids", Duration::from_secs(10), || {
        let p = c.job_pids(idx, &id);
        (!p.is_empty()).then_some(p)
    });
    let t0 = Instant::now();
    c.workers[idx].kill9();
    wait_for(
        "the killed worker's ffmpeg to die",
        Duration::from_secs(5),
        || pids.iter().all(|p| !pid_alive(*p)).then_some(()),
    );
    wait_for(
        "the node to be declared lost",
        Duration::from_secs(10),
        || {
            // Still listed while its attempt is fenced, but not connected.
            (!c.nodes()
                .iter()
                .any(|n| n["id"] == victim_node.as_str() && n["connected"] == true))
            .then_some(())
        },
    );
    let detected = t0.elapsed();
    println!("worker SIGKILL → node declared lost after {detected:?}");
    assert!(
        detected < Duration::from_millis(2500),
        "declared lost within 2.5 s, took {detected:?}"
    );
    let job = c.wait_state(&id, &["succeeded", "failed"], LONG);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 2, "{job}");
    assert_ne!(job["node"], victim_node.as_str(), "ran on the other worker");
    assert_eq!(
        job["attempts"][0]["outcome"]["failure"]["reason"], "node_lost",
        "{job}"
    );
    println!(
        "job finished on the other worker {:?} after the kill",
        t0.elapsed()
    );
}

#[test]
fn sigkill_of_the_master_mid_job_the_job_is_adopted_and_a_result_made_meanwhile_arrives_once() {
    let _g = serial();
    // An idle timeout longer than a master restart takes, so that only a
    // stateless reset can tell the worker early that its master is new.
    let idle = vec!["--idle-timeout-ms".to_string(), "8000".to_string()];
    let mut c = Cluster::start_opts(1, 2, idle.clone(), idle);
    let node = c.nodes()[0]["id"].as_str().expect("id").to_string();
    let long = c.submit(long_job(40.0));
    let short = c.submit(long_job(4.0));
    c.wait_state(&long, &["running"], LONG);
    c.wait_state(&short, &["running"], LONG);
    let pids = wait_for("the long job's ffmpeg", Duration::from_secs(10), || {
        let p = c.job_pids(0, &long);
        (!p.is_empty()).then_some(p)
    });

    c.master.kill9();
    // The short job finishes while there is no master: its result waits in
    // the worker's outbox.
    wait_for(
        "the short job to end on the worker",
        Duration::from_secs(60),
        || c.job_pids(0, &short).is_empty().then_some(()),
    );
    assert!(
        pids.iter().all(|p| pid_alive(*p)),
        "the long job kept running without a master"
    );

    let up = c.restart_master();
    wait_for("the worker to reconnect", Duration::from_secs(20), || {
        c.connected(&node).then_some(())
    });
    println!(
        "master restarted: worker reconnected {:?} after the master listened again",
        up.elapsed()
    );
    let s = c.wait_state(&short, &["succeeded", "failed"], Duration::from_secs(20));
    assert_eq!(s["state"], "succeeded", "{s}");
    assert_eq!(s["attempt"], 1, "{s}");
    assert_eq!(s["attempts"].as_array().map(Vec::len), Some(1), "{s}");
    let j = c.get(&format!("/v1/jobs/{long}"));
    assert_eq!(j["state"], "running", "adopted, still running: {j}");
    assert!(
        pids.iter().all(|p| pid_alive(*p)),
        "the same ffmpeg carries on"
    );
    let j = c.wait_state(&long, &["succeeded", "failed"], LONG);
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["attempt"], 1, "adopted, never rerun: {j}");
    assert_eq!(j["attempts"].as_array().map(Vec::len), Some(1), "{j}");
    let log = c.master.log();
    let applied = log
        .lines()
        .filter(|l| l.contains("attempt finished") && l.contains(&short))
        .count();
    assert_eq!(applied, 1, "the outbox result was applied once");
    assert!(log.contains("adopted running attempts"), "{log}");

    // A master back within the idle timeout: the worker's next packet gets
    // a stateless reset from the new process, so it need not wait for the
    // idle timeout to notice.
    let killed = Instant::now();
    c.master.kill9();
    let up = c.restart_master();
    let restart = killed.elapsed();
    wait_for("the worker to reconnect", Duration::from_secs(20), || {
        c.connected(&node).then_some(())
    });
    let reconnected = killed.elapsed();
    println!(
        "quick master restart: listening {restart:?} after the kill, worker reconnected {:?} later ({reconnected:?} after the kill; idle timeout 8 s)",
        up.elapsed()
    );
    let log = c.workers[0].log();
    let lost: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("link to the master lost; reconnecting"))
        .collect();
    assert!(
        lost.last().is_some_and(|l| l.contains("reset by peer")),
        "the old connection ended by a stateless reset: {lost:?}"
    );
}

#[test]
fn sigstop_of_a_worker_past_its_lease_its_job_stops_and_runs_elsewhere_never_twice() {
    let _g = serial();
    let lease = vec!["--lease-ms".to_string(), "4000".to_string()];
    let c = Cluster::start_opts(2, 1, Vec::new(), lease);
    let id = c.submit(long_job(60.0));
    let running = c.wait_state(&id, &["running"], LONG);
    let victim_node = running["node"].as_str().expect("node").to_string();
    let victim = c.worker_of(&victim_node);
    let other = 1 - victim;
    wait_for("the job's processes", Duration::from_secs(10), || {
        (!c.job_pids(victim, &id).is_empty()).then_some(())
    });

    let t0 = Instant::now();
    c.workers[victim].signal(nix::sys::signal::Signal::SIGSTOP);
    let mut victim_stopped = None;
    // Sampled every poll until the copy elsewhere runs: never both at once.
    wait_for(
        "the job to run on the other worker",
        Duration::from_secs(60),
        || {
            let frozen = c.job_pids(victim, &id);
            let fresh = c.job_pids(other, &id);
            assert!(
                frozen.is_empty() || fresh.is_empty(),
                "two copies at once: {frozen:?} on the frozen worker, {fresh:?} elsewhere"
            );
            if frozen.is_empty() && victim_stopped.is_none() {
                victim_stopped = Some(t0.elapsed());
            }
            (!fresh.is_empty()).then_some(())
        },
    );
    let moved = t0.elapsed();
    let stopped = victim_stopped.expect("the frozen worker's copy ended first");
    println!(
        "SIGSTOP: the frozen worker's job was killed by its guard {stopped:?} after the stop; \
         it started elsewhere {moved:?} after the stop (lease 4 s)"
    );

    // Thawed, the worker finds its lease long over; its late report of the
    // killed attempt is ignored, and it rejoins.
    c.workers[victim].signal(nix::sys::signal::Signal::SIGCONT);
    wait_for(
        "the thawed worker to rejoin",
        Duration::from_secs(30),
        || c.connected(&victim_node).then_some(()),
    );
    wait_for(
        "the thawed worker's stale result to be ignored",
        Duration::from_secs(30),
        || {
            c.master
                .log()
                .lines()
                .any(|l| l.contains("result not applied") && l.contains(&id))
                .then_some(())
        },
    );
    let job = c.wait_state(&id, &["succeeded", "failed"], LONG);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 2, "{job}");
    assert_eq!(job["node"], c.node_id_of(other), "{job}");
    assert_eq!(
        job["attempts"][0]["outcome"]["failure"]["reason"], "node_lost",
        "{job}"
    );
    assert!(c.job_pids(victim, &id).is_empty());
}

#[test]
fn a_lease_shorter_than_the_workers_kill_grace_fails_jobs_with_a_clear_reason() {
    let _g = serial();
    // Workers here use a 1 s kill grace; a 1 s lease leaves them no time.
    let lease = vec!["--lease-ms".to_string(), "1000".to_string()];
    let c = Cluster::start_opts(1, 1, Vec::new(), lease);
    let mut job = small_job(0.5);
    job["max_retries"] = serde_json::json!(0);
    let id = c.submit(job);
    let job = c.wait_state(&id, &["failed", "succeeded"], LONG);
    assert_eq!(job["state"], "failed", "{job}");
    let why = job["attempts"][0]["outcome"]["failure"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        why.contains("lease (1000 ms) is not longer than this worker's kill grace (1000 ms)"),
        "{job}"
    );
}

#[test]
fn a_restarted_worker_reconnects_without_a_token() {
    let _g = serial();
    let mut c = Cluster::start(1);
    let before = c.nodes()[0]["id"].clone();
    c.workers[0].kill9();
    wait_for("the node to go", Duration::from_secs(10), || {
        c.nodes().is_empty().then_some(())
    });
    c.workers.clear();
    c.add_worker(0, false);
    let nodes = c.wait_nodes(1);
    assert_eq!(nodes[0]["id"], before, "same node id, from its certificate");
    let id = c.submit(small_job(0.5));
    assert_eq!(
        c.wait_state(&id, &["succeeded", "failed"], LONG)["state"],
        "succeeded"
    );
}

#[test]
fn a_worker_given_the_masters_host_name_joins_and_runs_a_job() {
    let _g = serial();
    let mut c = Cluster::start(0);
    let port = c.quic.rsplit_once(':').map(|(_, p)| p.to_string());
    let port = port.expect("the master's QUIC address has a port");
    // `localhost` may resolve to ::1 first; the master listens on
    // 127.0.0.1 only, so the worker must try the next address.
    c.add_worker_via(0, &format!("localhost:{port}"), &[]);
    let nodes = c.wait_nodes(1);
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let id = c.submit(small_job(0.5));
    assert_eq!(
        c.wait_state(&id, &["succeeded", "failed"], LONG)["state"],
        "succeeded"
    );
}

#[test]
fn a_worker_with_metrics_listen_serves_its_own_metrics() {
    let _g = serial();
    let mut c = Cluster::start(0);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    c.add_worker_with(0, true, &["--metrics-listen", &listen]);
    c.wait_nodes(1);
    let http = reqwest::blocking::Client::new();
    // The sampler's cycle histogram exists only in the worker's process.
    let text = wait_for("the worker's sampler histogram", LONG, || {
        let r = http.get(format!("http://{listen}/metrics")).send().ok()?;
        let text = r.text().ok()?;
        text.contains("ffrtmp_power_sampler_cycle_seconds_count")
            .then_some(text)
    });
    assert!(
        !text.contains("ffrtmp_queue_depth"),
        "the master's metrics are not the worker's: {text}"
    );
    let health = http
        .get(format!("http://{listen}/healthz"))
        .send()
        .expect("GET /healthz");
    assert_eq!(health.status().as_u16(), 200);
}

#[test]
fn a_worker_with_every_core_encoding_is_never_declared_lost() {
    let _g = serial();
    let c = Cluster::start_with(1, 2);
    let node = c.nodes()[0]["id"].clone();
    // Two CPU-bound encodes on this 2-core machine: every core busy.
    let ids: Vec<String> = (0..2).map(|_| c.submit(long_job(15.0))).collect();
    let mut samples = 0;
    wait_for("both encodes to finish", Duration::from_secs(180), || {
        let nodes = c.nodes();
        assert!(
            nodes.iter().any(|n| n["id"] == node),
            "the busy worker was declared lost: {nodes:?}"
        );
        samples += 1;
        ids.iter()
            .all(|id| {
                let st = c.get(&format!("/v1/jobs/{id}"))["state"].clone();
                st == "succeeded" || st == "failed"
            })
            .then_some(())
    });
    for id in &ids {
        let job = c.get(&format!("/v1/jobs/{id}"));
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["attempt"], 1, "never requeued: {job}");
    }
    assert!(
        samples > 20,
        "the node list was checked throughout ({samples} samples)"
    );
}

#[test]
fn a_job_no_node_can_run_waits_without_blocking_the_jobs_behind_it() {
    let _g = serial();
    let c = Cluster::start_full(1, 1, vec!["--encoders".into(), "libx264".into()]);
    let enc = c.nodes()[0]["capabilities"]["encoders"].clone();
    assert_eq!(
        enc,
        serde_json::json!(["libx264"]),
        "the node advertises only what it may run"
    );
    let mut h265 = small_job(0.5);
    h265["codec"] = serde_json::json!("h265");
    h265["priority"] = serde_json::json!("live");
    let stuck = c.submit(h265);
    let mut later = small_job(0.5);
    later["priority"] = serde_json::json!("batch");
    let runnable = c.submit(later);
    let done = c.wait_state(&runnable, &["succeeded", "failed"], LONG);
    assert_eq!(done["state"], "succeeded", "{done}");
    let waiting = c.get(&format!("/v1/jobs/{stuck}"));
    assert_eq!(waiting["state"], "queued", "nobody can run h265: {waiting}");
    assert_eq!(waiting["attempt"], 0);
}

#[test]
fn drain_via_the_api_finishes_running_jobs_takes_no_new_ones_then_the_worker_leaves() {
    let _g = serial();
    let mut c = Cluster::start(1);
    let node = c.nodes()[0]["id"].as_str().expect("id").to_string();
    let running = c.submit(long_job(4.0));
    c.wait_state(&running, &["running"], LONG);
    let r = c
        .http
        .post(format!("{}/v1/nodes/{node}/drain?deadline_s=120", c.base))
        .send()
        .expect("drain");
    assert_eq!(r.status().as_u16(), 202);
    let body: Value = r.json().expect("node");
    assert_eq!(body["draining"], true, "{body}");
    assert_eq!(c.nodes()[0]["draining"], true, "visible in /v1/nodes");
    let later = c.submit(small_job(0.5));
    let job = c.wait_state(&running, &["succeeded", "failed"], LONG);
    assert_eq!(job["state"], "succeeded", "the running job finished: {job}");
    assert_eq!(job["attempt"], 1);
    let status = c.workers[0].wait_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "the drained worker left cleanly: {status}"
    );
    wait_for("the node to leave", Duration::from_secs(10), || {
        c.nodes().is_empty().then_some(())
    });
    assert_eq!(
        c.get(&format!("/v1/jobs/{later}"))["state"],
        "queued",
        "nothing new went to the draining node"
    );
    // A fresh worker picks the waiting job up.
    c.add_worker(1, true);
    assert_eq!(
        c.wait_state(&later, &["succeeded", "failed"], LONG)["state"],
        "succeeded"
    );
    let r = c
        .http
        .post(format!("{}/v1/nodes/no-such-node/drain", c.base))
        .send()
        .expect("drain");
    assert_eq!(r.status().as_u16(), 404);
}

#[test]
fn sigterm_drains_and_a_job_past_the_deadline_is_handed_back() {
    let _g = serial();
    let mut c = Cluster::start(0);
    c.add_worker_with(0, true, &["--drain-deadline-s", "1"]);
    c.wait_nodes(1);
    let id = c.submit(long_job(30.0));
    c.wait_state(&id, &["running"], LONG);
    c.workers[0].signal(nix::sys::signal::Signal::SIGTERM);
    let status = c.workers[0].wait_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "clean exit after the drain deadline: {status}"
    );
    let job = c.wait_state(&id, &["queued"], Duration::from_secs(10));
    assert_eq!(
        job["attempts"][0]["outcome"]["outcome"], "transient",
        "{job}"
    );
    assert_eq!(
        job["attempts"][0]["outcome"]["failure"]["reason"], "worker_crash",
        "{job}"
    );
    c.add_worker(1, true);
    let job = c.wait_state(&id, &["running"], LONG);
    assert_eq!(job["attempt"], 2, "handed back and run again: {job}");
}

// ---------------------------------------------------------------------------
// Refusals: the real master keeps out workers that speak another protocol
// version, hold a certificate from another CA, present no certificate, or
// join with a bad token. Each test checks both processes' logs and that the
// refused worker never shows up in /v1/nodes. (An expired certificate, and
// messages about another node's job: tests/security.rs, which lists every
// security check.)

#[test]
fn a_worker_speaking_another_protocol_version_is_refused_and_exits() {
    let _g = serial();
    let v = ffrtmp_runtime::wire::PROTOCOL_VERSION;
    assert_ne!(v, 99, "the test needs a version the master does not speak");
    let mut c = Cluster::start_full(0, 1, libx264_only());
    // Joins with a token in the same run (that works: joining is not
    // versioned), then announces version 99 in its hello.
    let args = c.worker_args(0, true);
    let w = Proc::spawn_with_env(
        "w0-v99",
        c.dir.path(),
        args,
        &[
            ("FFRTMP_FAULT_INJECTION", "1"),
            ("FFRTMP_FAULT_PROTOCOL_VERSION", "99"),
        ],
    );
    c.workers.push(w);
    let status = c.wait_refused_exit(0, Duration::from_secs(90));
    assert!(
        !status.success(),
        "the refused worker exits non-zero: {status}"
    );
    assert!(
        c.nodes().is_empty(),
        "never listed, after exit: {:?}",
        c.nodes()
    );
    assert!(
        c.dir.path().join("w0/node.pem").is_file(),
        "it had joined: the refusal came at the hello"
    );

    let wlog = c.workers[0].log();
    let fatal = lines_with(&wlog, &["refused this worker for good", "protocol version"]);
    assert_eq!(
        fatal.len(),
        1,
        "one fatal line in the worker's log:\n{wlog}"
    );
    let nums = numbers_in(&fatal[0]);
    assert!(
        nums.contains(&99) && nums.contains(&u64::from(v)),
        "the worker names both versions: {}",
        fatal[0]
    );
    println!("worker: {}", fatal[0]);

    let mlog = c.master_log();
    let refused = lines_with(&mlog, &["connection refused", "protocol version"]);
    assert!(!refused.is_empty(), "the master logs the refusal:\n{mlog}");
    for line in &refused {
        let nums = numbers_in(line);
        assert!(
            nums.contains(&99) && nums.contains(&u64::from(v)),
            "the master names both versions: {line}"
        );
    }
    println!("master: {}", refused[0]);
    assert!(
        lines_with(&mlog, &["worker connected"]).is_empty(),
        "the master never attached it"
    );

    // Control: the same data dir (same certificate) speaking the right
    // version gets in, so what kept it out was the version.
    c.workers.clear();
    c.add_worker(0, false);
    let nodes = c.wait_nodes(1);
    let id = std::fs::read_to_string(c.dir.path().join("w0/node_id")).expect("node id");
    assert_eq!(nodes[0]["id"], id.trim());
}

#[test]
fn a_worker_with_a_certificate_from_another_ca_is_refused() {
    let _g = serial();
    let c = Cluster::start_full(0, 1, libx264_only());
    let dir = c.dir.path().to_path_buf();
    // Another, unrelated cluster: its own CA, its own master.
    let other = dir.join("other");
    run_pki(&["init"], &other);
    let other_token = run_pki(&["join-token"], &other);
    let (mut other_master, other_base, other_quic) = spawn_master(&dir, "other-master", &other);
    let data = dir.join("stranger");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let worker_args = |master: &str| -> Vec<String> {
        let mut a = vec![
            "--role".into(),
            "worker".into(),
            "--master".into(),
            master.into(),
            "--data-dir".into(),
            s(&data),
            "--media-root".into(),
            s(&dir.join("media")),
            "--slots".into(),
            "1".into(),
        ];
        a.extend(libx264_only());
        a
    };
    let mut args = worker_args(&other_quic);
    args.extend(["--join-token".into(), other_token]);
    let mut joined = Proc::spawn("stranger-join", &dir, args);
    let id = wait_for(
        "the stranger in the other cluster",
        Duration::from_secs(60),
        || {
            let nodes: Value = c
                .http
                .get(format!("{other_base}/v1/nodes"))
                .send()
                .ok()?
                .json()
                .ok()?;
            nodes["nodes"][0]["id"].as_str().map(str::to_string)
        },
    );
    joined.kill9();
    other_master.kill9();
    let ca = std::fs::read(data.join("ca.pem")).expect("the worker kept ca.pem");
    assert_eq!(ca, std::fs::read(other.join("ca.pem")).expect("other ca"));
    assert_ne!(ca, std::fs::read(c.pki().join("ca.pem")).expect("our ca"));
    assert!(data.join("node.pem").is_file() && data.join("node.key").is_file());

    // 1. The same data dir against the real master: the worker's TLS stack
    // rejects the master's certificate (not from the CA it pinned), says so,
    // and keeps retrying.
    let mut w = Proc::spawn("stranger", &dir, worker_args(&c.quic));
    let untrusted = "the master's certificate does not validate under this node's cluster CA";
    let wlines = wait_for(
        "the worker to refuse the master twice",
        Duration::from_secs(60),
        || {
            assert!(w.running(), "the worker keeps retrying:\n{}", w.log());
            assert!(c.nodes().is_empty(), "listed: {:?}", c.nodes());
            let l = lines_with(&w.log(), &[untrusted, "UnknownIssuer"]);
            (l.len() >= 2).then_some(l)
        },
    );
    let mlines = wait_for(
        "the master to log the aborted handshake",
        Duration::from_secs(10),
        || {
            let l = lines_with(
                &c.master_log(),
                &[
                    "connection refused",
                    "invalid peer certificate: UnknownIssuer",
                ],
            );
            (!l.is_empty()).then_some(l)
        },
    );
    assert!(lines_with(&w.log(), &["connected to the master"]).is_empty());
    println!("worker (pinned CA mismatch): {}", wlines[0]);
    println!("master (pinned CA mismatch): {}", mlines[0]);
    w.kill9();
    assert!(c.nodes().is_empty(), "listed: {:?}", c.nodes());

    // 2. Give it our CA, so it trusts the master and gets as far as
    // presenting its certificate: now the master refuses it.
    std::fs::copy(c.pki().join("ca.pem"), data.join("ca.pem")).expect("copy ca");
    let before = lines_with(&c.master_log(), &["connection refused"]).len();
    let mut w = Proc::spawn("stranger-mixed", &dir, worker_args(&c.quic));
    let wlines = wait_for(
        "the master to refuse the worker twice",
        Duration::from_secs(60),
        || {
            assert!(w.running(), "the worker keeps retrying:\n{}", w.log());
            assert!(c.nodes().is_empty(), "listed: {:?}", c.nodes());
            let l = lines_with(
                &w.log(),
                &[
                    "refused by the master",
                    "invalid peer certificate: UnknownIssuer",
                ],
            );
            (l.len() >= 2).then_some(l)
        },
    );
    let mlog = c.master_log();
    let mlines: Vec<String> = lines_with(
        &mlog,
        &[
            "connection refused",
            "invalid peer certificate: UnknownIssuer",
        ],
    )
    .into_iter()
    .filter(|l| !l.contains("aborted by peer"))
    .collect();
    assert!(
        !mlines.is_empty() && lines_with(&mlog, &["connection refused"]).len() > before,
        "the master's own verifier refused the certificate:\n{mlog}"
    );
    println!("worker (foreign client certificate): {}", wlines[0]);
    println!("master (foreign client certificate): {}", mlines[0]);
    assert!(
        !c.nodes().iter().any(|n| n["id"] == id.as_str()),
        "never listed"
    );
    assert!(lines_with(&mlog, &["worker connected"]).is_empty());
}

#[test]
fn a_client_without_a_certificate_is_closed_with_the_no_client_certificate_code() {
    use ffrtmp_transport_quic::{endpoint, pki, tls};
    use std::sync::Arc;
    let _g = serial();
    let c = Cluster::start(0);
    let quic: std::net::SocketAddr = c.quic.trim().parse().expect("quic addr");
    let ca = std::fs::read_to_string(c.pki().join("ca.pem")).expect("ca.pem");
    let mut cfg = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(pki::root_store_from_pem(&ca).expect("roots"))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![tls::ALPN.to_vec()];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (alpn, closed) = rt.block_on(async {
        let ep = endpoint::client_endpoint("127.0.0.1:0".parse().expect("addr"), &[5; 32])
            .expect("client endpoint");
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(cfg).expect("quic tls");
        let conn = ep
            .connect_with(
                quinn::ClientConfig::new(Arc::new(crypto)),
                quic,
                pki::MASTER_SERVER_NAME,
            )
            .expect("connect")
            .await
            .expect("the TLS handshake succeeds without a client certificate");
        let alpn = conn
            .handshake_data()
            .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|h| h.protocol);
        // The master looks at the certificate once the first stream opens.
        let (mut send, _recv) = conn.open_bi().await.expect("stream");
        let _ = send.write_all(&[0, 0, 0, 1, 0]).await;
        let closed = tokio::time::timeout(Duration::from_secs(20), conn.closed())
            .await
            .expect("the master closes the connection");
        ep.close(endpoint::close::NORMAL, b"done");
        (alpn, closed)
    });
    assert_eq!(alpn.as_deref(), Some(tls::ALPN), "ffrtmp/1 was negotiated");
    let quinn::ConnectionError::ApplicationClosed(close) = &closed else {
        panic!("expected an application close, got {closed}");
    };
    assert_eq!(
        close.error_code,
        endpoint::close::NO_CLIENT_CERT,
        "{close:?}"
    );
    let reason = String::from_utf8_lossy(&close.reason).into_owned();
    assert!(reason.contains("client certificate"), "{reason}");
    println!("client: closed with code {}: {reason}", close.error_code);
    let line = wait_for(
        "the master to log the refusal",
        Duration::from_secs(10),
        || {
            lines_with(
                &c.master_log(),
                &["connection refused", "no cluster certificate"],
            )
            .into_iter()
            .next()
        },
    );
    println!("master: {line}");
    assert!(c.nodes().is_empty(), "listed: {:?}", c.nodes());
}

#[test]
fn a_join_with_a_wrong_or_expired_token_is_refused_and_the_worker_exits() {
    use ffrtmp_transport_quic::pki;
    let _g = serial();
    let mut c = Cluster::start_full(0, 1, libx264_only());
    let good = pki::JoinToken::parse(&c.token).expect("token");
    let mut wrong = good.clone();
    wrong.secret = "A".repeat(good.secret.len());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    // Written to the master's tokens.json, which it reads on every join.
    let expired = pki::create_join_token(&c.pki(), Duration::from_millis(1), now_ms - 10_000)
        .expect("expired token");
    let cases = [
        (wrong, "wrong secret for join token"),
        (expired, "expired at"),
    ];
    for (i, (token, detail)) in cases.into_iter().enumerate() {
        let mut args = c.worker_args(i, false);
        args.extend(["--join-token".into(), token.to_string_token()]);
        c.workers
            .push(Proc::spawn(&format!("w{i}"), c.dir.path(), args));
        let status = c.wait_refused_exit(i, Duration::from_secs(60));
        assert!(!status.success(), "exits non-zero: {status}");
        let wlog = c.workers[i].log();
        let fatal = lines_with(&wlog, &["refused this worker for good", "token rejected"]);
        assert_eq!(fatal.len(), 1, "{wlog}");
        assert!(
            !plain(&wlog).contains(detail),
            "the worker is told no details"
        );
        assert!(!c.dir.path().join(format!("w{i}/node.pem")).exists());
        let mlines = lines_with(&c.master_log(), &["join refused", detail, &token.id]);
        assert!(!mlines.is_empty(), "{}", c.master_log());
        println!("worker: {}", fatal[0]);
        println!("master: {}", mlines[0]);
    }
    assert!(c.nodes().is_empty());
}
