//! Nothing a job does can stall its node (issue 15, point 7), and a job's
//! cgroup does not outlive a dead worker; spawn failures caused by the
//! node's own exhaustion are transient (point 5). One real
//! `ffrtmp-node --role standalone`, real FFmpeg, real cgroups.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A hang guard, not a threshold: the probe alone may take 30 s to time out.
const LONG: Duration = Duration::from_secs(300);

/// A real one-second MP4 at `path`.
fn make_clip(path: &Path) {
    lavfi_clip(
        path,
        "testsrc2=size=64x64:rate=10",
        &["-t", "1", "-c:v", "libx264", "-preset", "ultrafast"],
    );
}

/// The outcome object of each attempt of a job.
fn outcomes(job: &Value) -> Vec<Value> {
    job["attempts"]
        .as_array()
        .map(|a| a.iter().map(|r| r["outcome"].clone()).collect())
        .unwrap_or_default()
}

#[test]
fn a_stuck_probe_fails_only_its_own_job_and_the_node_keeps_its_lease() {
    let _g = serial();
    // A short lease (the shortest a 1 s kill grace allows): a node that
    // stops renewing for 2 s loses its jobs.
    let node = Node::start(
        "stuck-probe",
        NodeOpts {
            slots: 2,
            extra: vec!["--lease-ms".into(), "2000".into()],
            ..NodeOpts::default()
        },
    );
    let stuck = node.media.join("stuck.mp4");
    make_clip(&stuck);

    // Both slots busy, so the stuck job waits in the queue.
    let running = node.submit(long_job(30.0));
    let filler = node.submit(long_job(120.0));
    node.wait_state(&running, &["running"], LONG);
    node.wait_state(&filler, &["running"], LONG);
    // Accepted while `stuck.mp4` is a real clip...
    let stuck_job = node.submit(json!({
        "scenario": "480p30-h264", "width": 64, "height": 64,
        "input": {"type": "file", "path": "stuck.mp4"},
        "output": {"type": "null"}
    }));
    assert_eq!(node.job(&stuck_job)["state"], "queued");
    // ...then swapped for an HLS playlist whose segment is a FIFO nobody
    // writes: whatever opens it blocks for good.
    nix::unistd::mkfifo(
        &node.media.join("seg.ts"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    let playlist = node.media.join("playlist.tmp");
    std::fs::write(
        &playlist,
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nseg.ts\n#EXT-X-ENDLIST\n",
    )
    .expect("write the playlist");
    std::fs::rename(&playlist, &stuck).expect("swap the input");
    // A slot frees: the stuck job starts (its probe blocks) beside `running`.
    let (status, body) = node.post(&format!("/v1/jobs/{filler}/cancel"));
    assert!(status == 200 || status == 202, "cancel: {status} {body}");
    node.wait_state(&filler, &["cancelled"], LONG);

    let stuck_end = node.wait_state(&stuck_job, &["succeeded", "failed", "cancelled"], LONG);
    assert_eq!(stuck_end["state"], "failed", "{stuck_end}");
    // The run-time checks refuse the playlist before anything opens its
    // segment (the container allow-list: `docs/SECURITY.md`); were the probe
    // to hang instead (a file system that blocks), it would be killed at its
    // timeout and the job fail `probe_timeout`
    // (`ffmpeg::tests::a_probe_that_blocks_is_killed_at_its_timeout`).
    // Either way the reason is the job's own, never the node's.
    let reason = stuck_end["failure"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason == "input_refused" || reason == "probe_timeout",
        "the true reason: {stuck_end}"
    );
    let run_end = node.wait_state(&running, &["succeeded", "failed", "cancelled"], LONG);
    assert_eq!(run_end["state"], "succeeded", "{run_end}");
    // In one go: never killed, never retried, its node never lost.
    let outs = outcomes(&run_end);
    assert_eq!(outs.len(), 1, "one attempt: {run_end}");
    assert_eq!(outs[0]["outcome"], "succeeded", "{run_end}");
    let log = node.log();
    assert!(
        !log.contains("lease with the master runs out"),
        "the node let its lease run out"
    );
}

#[test]
fn a_dead_workers_job_cgroups_are_removed_without_a_restart() {
    let _g = serial();
    if host_isolation() == "none" {
        eprintln!("no usable cgroups here: skipped");
        return;
    }
    let mut node = Node::start("janitor", NodeOpts::default());
    let id = node.submit(long_job(120.0));
    node.wait_state(&id, &["running"], LONG);
    let dirs = wait_for("the job's cgroup with FFmpeg in it", LONG, || {
        let dirs = node.job_cgroups(&id);
        (!dirs.is_empty() && !node.job_pids(&id).is_empty()).then_some(dirs)
    });
    // SIGKILL the worker (standalone: the whole node) and never restart it.
    node.kill9();
    wait_for("the dead worker's job cgroups to go", LONG, || {
        dirs.iter().all(|d| !d.exists()).then_some(())
    });
}

/// The node's soft `RLIMIT_NOFILE`, set from outside (`prlimit(2)`); returns
/// the old one.
fn set_nofile(pid: i32, soft: u64) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads the old limits into `old`, then reads `new`.
    unsafe {
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old),
            0
        );
        let new = libc::rlimit {
            rlim_cur: soft.min(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()),
            0,
            "prlimit: {}",
            std::io::Error::last_os_error()
        );
    }
    old
}

/// The soft limit that leaves exactly `free` descriptor numbers open to `pid`.
fn limit_leaving(pid: i32, free: usize) -> u64 {
    let used: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the node's descriptors")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let mut left = free;
    let mut n = 0;
    loop {
        if !used.contains(&n) {
            if left == 0 {
                return n;
            }
            left -= 1;
        }
        n += 1;
    }
}

#[test]
fn a_spawn_failing_on_the_nodes_own_fd_exhaustion_is_retried_not_failed() {
    let _g = serial();
    let node = Node::start(
        "emfile",
        NodeOpts {
            slots: 1,
            ..NodeOpts::default()
        },
    );
    let pid = node.pid().expect("node pid") as i32;
    // The client's keep-alive connection is open; a few numbers are left
    // for the HTTP side, fewer than a spawn's pipes need.
    assert_eq!(node.get("/healthz").0, 200);
    let old = set_nofile(pid, limit_leaving(pid, 3));
    let mut body = small_job(1.0);
    body["max_retries"] = json!(10);
    let id = node.submit(body);
    let first = wait_for("an attempt that failed to spawn", LONG, || {
        let job = node.job(&id);
        outcomes(&job)
            .into_iter()
            .find(|o| !o.is_null())
            .map(|o| (o, job))
    });
    // Descriptors back: the retry runs.
    set_nofile(pid, old.rlim_cur);
    let (outcome, job) = first;
    assert_eq!(outcome["outcome"], "transient", "{job}");
    assert_eq!(outcome["failure"]["reason"], "node_exhausted", "{job}");
    let msg = outcome["failure"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("Too many open files"), "{job}");
    let end = node.wait_state(&id, &["succeeded", "failed", "cancelled"], LONG);
    assert_eq!(end["state"], "succeeded", "{end}");
    assert!(
        outcomes(&end)
            .iter()
            .all(|o| o["outcome"] == "transient" || o["outcome"] == "succeeded"),
        "{end}"
    );
}
