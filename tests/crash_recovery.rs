//! `kill -9` of a real `ffrtmp-node` while jobs run and wait, then a restart
//! on the same data dir (issue 2, point 9).
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::time::{Duration, Instant};

use common::*;

const LONG: Duration = Duration::from_secs(180);

#[test]
fn sigkill_mid_run_then_restart_recovers_every_job() {
    let _g = serial();
    let mut node = Node::start(
        "crash",
        NodeOpts {
            slots: 1,
            ..NodeOpts::default()
        },
    );

    // One job finishes before the crash and must keep its result.
    let finished = node.submit(small_job(0.5));
    let before = node.wait_state(&finished, &["succeeded"], LONG);

    // One runs at the crash, two wait behind it.
    let interrupted = node.submit(long_job(6.0));
    let waiting: Vec<String> = (0..2).map(|_| node.submit(small_job(1.0))).collect();
    node.wait_state(&interrupted, &["running"], LONG);
    let pids = wait_for(
        "ffmpeg pids of the running job",
        Duration::from_secs(10),
        || {
            let p = node.job_pids(&interrupted);
            (!p.is_empty()).then_some(p)
        },
    );
    for w in &waiting {
        assert_eq!(node.job(w)["state"], "queued");
    }

    let t_kill = Instant::now();
    node.kill9();
    // PR_SET_PDEATHSIG: FFmpeg dies with its parent, before any restart.
    wait_for(
        "ffmpeg to die with the node",
        Duration::from_secs(5),
        || pids.iter().all(|p| !pid_alive(*p)).then_some(()),
    );
    println!(
        "orphaned ffmpeg gone {:?} after SIGKILL of the node",
        t_kill.elapsed()
    );

    let t_restart = Instant::now();
    node.restart();
    println!(
        "node back up (HTTP answering) {:?} after restart",
        t_restart.elapsed()
    );
    // The interrupted job is requeued as attempt 2 and completes.
    let job = node.wait_state(&interrupted, &["succeeded", "failed"], LONG);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 2, "requeued as a new attempt: {job}");
    assert_eq!(
        job["attempts"][0]["outcome"]["failure"]["reason"], "worker_crash",
        "{job}"
    );
    println!(
        "interrupted job recovered and finished {:?} after restart",
        t_restart.elapsed()
    );

    // The waiting jobs are still there and run once.
    for w in &waiting {
        let j = node.wait_state(w, &["succeeded", "failed"], LONG);
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_eq!(j["attempt"], 1, "never started before the crash: {j}");
    }
    // The finished job kept its result.
    let after = node.job(&finished);
    assert_eq!(after["state"], "succeeded");
    assert_eq!(after["result"], before["result"]);
    assert_eq!(after["attempt"], 1);
    // Nothing of any job is left in the node's cgroups.
    for id in waiting.iter().chain([&interrupted, &finished]) {
        assert!(
            node.job_cgroups(id).is_empty(),
            "cgroup of {id} left behind"
        );
    }
}

#[test]
fn startup_sweep_kills_and_removes_leftover_job_cgroups() {
    let _g = serial();
    let mut node = Node::start("sweep", NodeOpts::default());
    let id = node.submit(long_job(30.0));
    node.wait_state(&id, &["running"], LONG);
    let dirs = wait_for("job cgroup", Duration::from_secs(10), || {
        let d = node.job_cgroups(&id);
        (!d.is_empty()).then_some(d)
    });
    node.kill9();
    // Simulate a survivor PDEATHSIG could not catch: a process in a job
    // cgroup of this node that nothing removed (a test child of ours,
    // cleaned up by pid). The killed job's own cgroups are removed by its
    // janitor (`stall.rs`), so the leftover is one made here by hand, named
    // as a job cgroup of this node, beside each of them.
    let dirs: Vec<_> = dirs
        .iter()
        .filter_map(|d| d.parent().map(|p| p.join("job-leftover-1")))
        .collect();
    let mut survivor = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .expect("spawn sleep");
    let pid = survivor.id() as i32;
    for d in &dirs {
        std::fs::create_dir_all(d).expect("make the leftover cgroup");
        std::fs::write(d.join("cgroup.procs"), pid.to_string()).expect("join it");
    }
    node.restart();
    let reaped = wait_for(
        "the survivor to be killed by the sweep",
        Duration::from_secs(10),
        || match survivor.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => None,
        },
    );
    assert!(!reaped.success(), "killed, not exited: {reaped}");
    assert!(
        dirs.iter().all(|d| !d.exists()),
        "old job cgroups removed: {dirs:?}"
    );
    let _ = survivor.kill();
}

#[test]
fn sigterm_stops_cleanly_leaving_no_process_or_cgroup_and_the_job_reruns() {
    let _g = serial();
    let mut node = Node::start("sigterm", NodeOpts::default());
    let id = node.submit(long_job(8.0));
    node.wait_state(&id, &["running"], LONG);
    let pids = wait_for("ffmpeg pids", Duration::from_secs(10), || {
        let p = node.job_pids(&id);
        (!p.is_empty()).then_some(p)
    });
    let status = node.terminate().expect("node was running");
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status}\n{}",
        node.log()
    );
    assert!(
        pids.iter().all(|p| !pid_alive(*p)),
        "ffmpeg stopped with the node"
    );
    let left = cgroup_dirs(&node.cgroup_parent);
    assert!(
        left.is_empty(),
        "no cgroup left after a clean stop: {left:?}"
    );
    node.restart();
    let job = node.wait_state(&id, &["succeeded", "failed"], LONG);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["attempt"], 2,
        "the interrupted attempt was requeued: {job}"
    );
}
