//! Real processes in real cgroups (needs root; cgroup tests are skipped,
//! loudly, when not root). Every test owns a unique cgroup parent
//! `ffrtmp-test/<test>-<pid>` and removes it at the end; everything spawned is
//! killed by pid, process group or cgroup, never by name.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::ffi::{CString, OsString};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ffrtmp_os::cgroup::{cgroup_exists, read_procs, CgroupManager, CgroupVersion};
use ffrtmp_runtime::model::{Isolation, ResourceLimits};
use ffrtmp_spawn::{self as process, group_alive, SpawnSpec, Spawned};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

const DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The test's own manager; sweeps and removes its parent when dropped.
struct TestParent {
    mgr: CgroupManager,
}

impl TestParent {
    /// `None` (test skipped) when not root.
    fn new(test: &str) -> Option<TestParent> {
        if !is_root() {
            eprintln!("SKIPPED {test}: needs root for cgroups");
            return None;
        }
        let mgr = CgroupManager::detect(&format!("ffrtmp-test/{test}-{}", std::process::id()));
        assert_ne!(
            mgr.isolation(),
            Isolation::None,
            "cgroups unusable as root: {:?}",
            mgr.unavailable_reason()
        );
        Some(TestParent { mgr })
    }
}

impl Drop for TestParent {
    fn drop(&mut self) {
        self.mgr.sweep();
        let _ = self.mgr.remove_parent();
    }
}

fn spec(program: &str, args: &[&str], procs: Vec<CString>) -> SpawnSpec {
    SpawnSpec {
        program: PathBuf::from(program),
        args: args.iter().map(OsString::from).collect(),
        nice: 10,
        cgroup_procs: procs,
        env: Vec::new(),
        lease: None,
        run_log: None,
        fds: Vec::new(),
    }
}

/// Polls `cond` until it holds or `DEADLINE` passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Live members of process group `pgid`.
fn group_members(pgid: i32) -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .ok()
                        .and_then(|s| {
                            let rest = s[s.rfind(')')? + 1..].to_string();
                            let f: Vec<&str> = rest.split_whitespace().collect();
                            Some(f[0] != "Z" && f[2].parse::<i32>().ok()? == pgid)
                        })
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

async fn stdout_of(sp: &mut Spawned) -> String {
    let mut out = String::new();
    if let Some(mut so) = sp.child.stdout.take() {
        so.read_to_string(&mut out).await.unwrap();
    }
    out
}

/// The fields of a `/proc/<pid>/stat` line after the command name.
fn stat_fields(stat: &str) -> Vec<String> {
    stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The members of a job: its guard process, and the guard's child.
fn guard_and_child(pids: &[i32], guard: i32) -> bool {
    pids.len() == 2
        && pids.contains(&guard)
        && pids.iter().filter(|&&p| p != guard).all(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .is_ok_and(|s| stat_fields(&s)[1] == guard.to_string())
        })
}

mod hierarchies;
mod lifecycle;
mod limits;
mod spawn;
