//! Per-job cgroups: one node-wide parent (`<parent>` in every hierarchy we
//! use), one child cgroup per job attempt, CPU quota and memory limit, stats,
//! kill and removal, and a start-up sweep of leftovers.
//!
//! Layout. Paths are relative to the root of each hierarchy:
//! - cgroup v2: `/sys/fs/cgroup/<parent>/<job>`; `cpu` and `memory` are
//!   enabled in `cgroup.subtree_control` of the root and of every ancestor
//!   down to `<parent>`.
//! - cgroup v1: `<mount>/<parent>/<job>` in the `cpu`, `cpuacct` and `memory`
//!   hierarchies (deduplicated when co-mounted, e.g. `cpu,cpuacct`). `cpu` and
//!   `memory` are required; without `cpuacct`, CPU time is not reported.
//!
//! `cgroups-rs` is used for detection (unified-mode check, v1 mount points
//! from `/proc/self/mountinfo`). Creation, limits, stats and removal use plain
//! sysfs: `cgroups_rs::fs::Cgroup` creates a v1 group in *every* mounted
//! hierarchy (cpuset included, which needs `cpus`/`mems` initialised), has
//! panicking paths (`unwrap` in its hierarchy helpers), and does not expose
//! the `cgroup.procs` paths a child must join before it execs.
//!
//! Processes join a job cgroup from the child side, before exec, by writing
//! `0` into each of [`JobCgroup::procs_files`] (see `crate::process`), so a job
//! never runs uncapped. On v1 those are the `tasks` files, not `cgroup.procs`
//! (the guard that writes them is single-threaded; see `join_file` for the
//! cost this avoids).

mod job;
mod manager;

pub use job::*;
pub use manager::*;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::fs::hierarchies::{self, V1};
use cgroups_rs::fs::Controllers;

use crate::energy::cpu::CpuProbe;
use ffrtmp_runtime::model::{Isolation, ResourceLimits};

/// Root of the cgroup filesystem on a unified (pure v2) system.
const V2_ROOT: &str = "/sys/fs/cgroup";
/// CFS period for CPU quotas: 100 ms.
const CPU_PERIOD_US: u64 = 100_000;
/// Smallest quota the kernel accepts (1 ms per period).
const MIN_CPU_QUOTA_US: u64 = 1_000;
/// How long [`JobCgroup::remove`] and the sweep wait for a cgroup to empty.
const REMOVE_WAIT: Duration = Duration::from_secs(5);
/// How long `Drop` waits for a cgroup to empty (it blocks its caller).
const DROP_REMOVE_WAIT: Duration = Duration::from_secs(2);
/// Polling interval while waiting for a cgroup to empty.
const POLL: Duration = Duration::from_millis(5);
/// Longest accepted name of one path segment.
const MAX_SEGMENT_LEN: usize = 128;

/// Which cgroup implementation the node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy (or hybrid) mode: one hierarchy per controller.
    V1,
    /// Unified hierarchy.
    V2,
}

/// Errors from cgroup management.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Cgroups cannot be used on this node (not mounted, no permission, a
    /// required controller missing); jobs run with `nice` only.
    #[error("cgroups are unavailable on this node: {0}")]
    Unavailable(String),
    /// A cgroup name or parent path that is not a safe relative path.
    #[error(
        "invalid cgroup name {0:?}: use segments of 1-128 characters from [A-Za-z0-9._-], not starting with '.'"
    )]
    InvalidName(String),
    /// A job cgroup of that name exists already (a leftover: run `sweep` at start-up).
    #[error("cgroup {0} already exists")]
    AlreadyExists(PathBuf),
    /// A filesystem operation on a cgroup file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted (`mkdir`, `write`, `rmdir`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The cgroup still had processes (or could not be removed) after waiting.
    #[error("cgroup {path} still busy after {waited_ms} ms")]
    Busy {
        /// The directory that could not be removed.
        path: PathBuf,
        /// How long we waited.
        waited_ms: u64,
    },
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> CgroupError {
    CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Figures read from a job's cgroup. Absent values are ones the kernel does
/// not provide here (e.g. `memory.peak` before Linux 5.19, no `cpuacct`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    /// CPU time used by every process that ran in the cgroup, in seconds.
    pub cpu_s: Option<f64>,
    /// Peak memory usage in bytes.
    pub peak_memory_bytes: Option<u64>,
    /// Processes killed by the OOM killer inside the cgroup.
    pub oom_kills: u64,
}

/// What [`CgroupManager::sweep`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Processes found in leftover job cgroups and sent SIGKILL.
    pub killed_pids: Vec<i32>,
    /// Names of the leftover job cgroups removed (relative to the parent).
    pub removed: Vec<String>,
    /// Leftovers that could not be removed, with the reason.
    pub failed: Vec<String>,
}

/// Where the hierarchies we use are mounted.
#[derive(Debug, Clone)]
struct Layout {
    version: CgroupVersion,
    /// v2: the unified root. v1: the `cpu` mount.
    cpu: PathBuf,
    /// v1 only: the `cpuacct` mount (may equal `cpu`).
    cpuacct: Option<PathBuf>,
    /// v2: the unified root. v1: the `memory` mount.
    memory: PathBuf,
    /// v2: controllers enabled down to the parent (`cpu`, `memory`).
    v2_controllers: Vec<&'static str>,
}

impl Layout {
    /// Finds the hierarchies, without creating anything.
    fn detect() -> Result<Layout, String> {
        let root = Path::new(V2_ROOT);
        if root.join("cgroup.controllers").exists() || hierarchies::is_cgroup2_unified_mode() {
            return Layout::v2_at(root, &["cpu", "memory"]);
        }
        let v1 = V1::new();
        let mount = |c: Controllers| v1.get_mount_point(c).map(|(point, _root)| point);
        let cpu = mount(Controllers::Cpu).ok_or("cgroup v1 cpu controller is not mounted")?;
        let memory = mount(Controllers::Mem).ok_or("cgroup v1 memory controller is not mounted")?;
        Ok(Layout {
            version: CgroupVersion::V1,
            cpu,
            cpuacct: mount(Controllers::CpuAcct),
            memory,
            v2_controllers: Vec::new(),
        })
    }

    /// A v2 hierarchy mounted at `root`, which must offer `controllers`.
    fn v2_at(root: &Path, controllers: &[&'static str]) -> Result<Layout, String> {
        let path = root.join("cgroup.controllers");
        let available =
            fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        for needed in controllers {
            if !available.split_whitespace().any(|c| c == *needed) {
                return Err(format!("cgroup v2 controller {needed} is not available"));
            }
        }
        Ok(Layout {
            version: CgroupVersion::V2,
            cpu: root.to_path_buf(),
            cpuacct: None,
            memory: root.to_path_buf(),
            v2_controllers: controllers.to_vec(),
        })
    }

    /// Every distinct hierarchy root we use.
    fn roots(&self) -> Vec<PathBuf> {
        let mut roots = vec![self.memory.clone(), self.cpu.clone()];
        if let Some(acct) = &self.cpuacct {
            roots.push(acct.clone());
        }
        let mut seen = BTreeSet::new();
        roots.retain(|r| seen.insert(r.clone()));
        roots
    }
}

/// The file a child writes `0` into to join a job cgroup.
///
/// On v1 that is `tasks`, which moves only the calling thread, not
/// `cgroup.procs`: the joining process is the single-threaded guard (a
/// fresh fork), so the two do the same, but the kernel takes the global
/// threadgroup lock for writing only for a `cgroup.procs` write or another
/// process's pid, and taking it for writing waits for an RCU grace period:
/// 7–11 ms per job start measured on a 2-vCPU VM (cgroup v1, Linux 6.18),
/// against ~0.1 ms for three `tasks` writes (docs/BENCHMARKS.md). v2 has no
/// `tasks` (and `cgroup.threads` only in threaded subtrees), so it keeps
/// `cgroup.procs`.
fn join_file(version: CgroupVersion) -> &'static str {
    match version {
        CgroupVersion::V1 => "tasks",
        CgroupVersion::V2 => "cgroup.procs",
    }
}

/// Checks that `path` is a relative path of safe segments.
fn validate_rel(path: &str) -> Result<(), CgroupError> {
    let ok = !path.is_empty()
        && path.split('/').all(|seg| {
            !seg.is_empty()
                && seg.len() <= MAX_SEGMENT_LEN
                && !seg.starts_with('.')
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName(path.to_string()))
    }
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| io_err("write", path, e))
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Value of `key` in a flat-keyed file such as `cpu.stat` or `memory.events`.
fn keyed_value(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        if it.next() == Some(key) {
            it.next().and_then(|v| v.parse().ok())
        } else {
            None
        }
    })
}

/// Process ids listed in `<dir>/cgroup.procs` (empty if unreadable).
pub fn read_procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// SIGKILLs every process of the cgroups in `dirs` (v2: `cgroup.kill` when
/// present, which also covers descendants). One pass; returns the pids seen.
fn kill_dirs(dirs: &[PathBuf], version: CgroupVersion) -> Vec<i32> {
    let mut pids: BTreeSet<i32> = BTreeSet::new();
    for dir in dirs {
        pids.extend(read_procs(dir));
    }
    if version == CgroupVersion::V2 {
        if let Some(dir) = dirs.first() {
            let kill = dir.join("cgroup.kill");
            if kill.exists() && write_file(&kill, "1").is_ok() {
                return pids.into_iter().collect();
            }
        }
    }
    for &pid in &pids {
        if pid > 0 {
            // Gone already (ESRCH) is what we want; nothing else can fail
            // for a positive pid and SIGKILL as root.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    pids.into_iter().collect()
}

/// Kills what is in `dirs`, waits (polling, until `deadline`) for them to be
/// empty, then removes the directories. Subdirectories are not handled here.
fn drain_and_rmdir(
    dirs: &[PathBuf],
    version: CgroupVersion,
    deadline: Instant,
    killed: &mut BTreeSet<i32>,
) -> Result<(), CgroupError> {
    let start = Instant::now();
    loop {
        killed.extend(kill_dirs(dirs, version));
        let mut busy: Option<(PathBuf, io::Error)> = None;
        let empty = dirs.iter().all(|d| read_procs(d).is_empty());
        if empty {
            for dir in dirs {
                match fs::remove_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        busy.get_or_insert((dir.clone(), e));
                    }
                }
            }
            match busy {
                None => return Ok(()),
                Some((path, e)) if e.raw_os_error() != Some(libc::EBUSY) => {
                    return Err(io_err("rmdir", &path, e));
                }
                Some(_) => {}
            }
        }
        if Instant::now() >= deadline {
            let path = dirs
                .iter()
                .find(|d| d.exists())
                .cloned()
                .unwrap_or_default();
            return Err(CgroupError::Busy {
                path,
                waited_ms: start.elapsed().as_millis().try_into().unwrap_or(u64::MAX),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Removes `dir` in one hierarchy and everything below it, depth first,
/// killing members first.
fn remove_tree(
    dir: &Path,
    version: CgroupVersion,
    deadline: Instant,
    killed: &mut BTreeSet<i32>,
) -> Result<(), CgroupError> {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&entry.path(), version, deadline, killed)?;
            }
        }
    }
    drain_and_rmdir(&[dir.to_path_buf()], version, deadline, killed)
}

#[cfg(test)]
mod tests;
