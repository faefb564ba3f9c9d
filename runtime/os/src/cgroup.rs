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

/// Owns the node's cgroup parent (`<parent>` in every hierarchy used) and
/// creates job cgroups under it.
#[derive(Debug)]
pub struct CgroupManager {
    parent: String,
    layout: Option<Layout>,
    /// Why cgroups are unusable, when they are.
    unavailable: Option<String>,
}

impl CgroupManager {
    /// Detects v1/v2 and creates `parent` (e.g. `ffrtmp/node-abc`, relative to
    /// each hierarchy's root) in every hierarchy used, enabling `cpu` and
    /// `memory` for its children on v2.
    ///
    /// Never fails: when cgroups are unusable (not mounted, no permission, a
    /// controller missing, an invalid `parent`), [`isolation`](Self::isolation)
    /// is [`Isolation::None`] and [`create_job`](Self::create_job) returns an error.
    pub fn detect(parent: &str) -> CgroupManager {
        Self::with_layout(parent, Layout::detect())
    }

    /// Jobs under `parent` of the cgroup2 hierarchy mounted at `root`,
    /// whatever controllers it offers (none are required, so no limit may
    /// apply): the v2 code paths on any cgroup2 mount, as on the empty
    /// `unified` mount of a hybrid v1 host. Never fails, as [`detect`](Self::detect).
    pub fn v2_mounted_at(parent: &str, root: &Path) -> CgroupManager {
        Self::with_layout(parent, Layout::v2_at(root, &[]))
    }

    fn with_layout(parent: &str, layout: Result<Layout, String>) -> CgroupManager {
        let parent = parent.trim_matches('/').to_string();
        match layout.and_then(|l| Self::prepare(&parent, l)) {
            Ok(layout) => CgroupManager {
                parent,
                layout: Some(layout),
                unavailable: None,
            },
            Err(reason) => {
                tracing::warn!(%parent, %reason, "cgroups unusable; jobs will run with nice only");
                CgroupManager {
                    parent,
                    layout: None,
                    unavailable: Some(reason),
                }
            }
        }
    }

    /// Creates the parent in every hierarchy (and, on v2, enables the
    /// controllers down to it).
    fn prepare(parent: &str, layout: Layout) -> Result<Layout, String> {
        validate_rel(parent).map_err(|e| e.to_string())?;
        match layout.version {
            CgroupVersion::V2 => {
                // Enable cpu and memory in the root and each ancestor, so that
                // `<parent>` has them and hands them on to its job children.
                let mut dir = layout.memory.clone();
                let segments: Vec<&str> = parent.split('/').collect();
                for i in 0..=segments.len() {
                    if i > 0 {
                        dir.push(segments[i - 1]);
                        match fs::create_dir(&dir) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                            Err(e) => return Err(format!("mkdir {}: {e}", dir.display())),
                        }
                    }
                    let subtree = dir.join("cgroup.subtree_control");
                    let enabled = read_trimmed(&subtree).unwrap_or_default();
                    for ctrl in &layout.v2_controllers {
                        if !enabled.split_whitespace().any(|c| c == *ctrl) {
                            write_file(&subtree, &format!("+{ctrl}")).map_err(|e| {
                                format!("enable {ctrl} for children of {}: {e}", dir.display())
                            })?;
                        }
                    }
                }
            }
            CgroupVersion::V1 => {
                for root in layout.roots() {
                    let dir = root.join(parent);
                    fs::create_dir_all(&dir)
                        .map_err(|e| format!("mkdir -p {}: {e}", dir.display()))?;
                }
                let quota = layout.cpu.join(parent).join("cpu.cfs_quota_us");
                if !quota.exists() {
                    return Err(format!(
                        "{} missing (kernel without CFS bandwidth control)",
                        quota.display()
                    ));
                }
            }
        }
        Ok(layout)
    }

    /// How jobs are isolated on this node.
    pub fn isolation(&self) -> Isolation {
        match self.layout.as_ref().map(|l| l.version) {
            Some(CgroupVersion::V1) => Isolation::CgroupV1,
            Some(CgroupVersion::V2) => Isolation::CgroupV2,
            None => Isolation::None,
        }
    }

    /// The cgroup version in use, if cgroups are usable.
    pub fn version(&self) -> Option<CgroupVersion> {
        self.layout.as_ref().map(|l| l.version)
    }

    /// The parent path this manager owns, relative to each hierarchy's root.
    pub fn parent(&self) -> &str {
        &self.parent
    }

    /// Why cgroups are unusable, when [`isolation`](Self::isolation) is `None`.
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    fn layout(&self) -> Result<&Layout, CgroupError> {
        self.layout
            .as_ref()
            .ok_or_else(|| CgroupError::Unavailable(self.unavailable.clone().unwrap_or_default()))
    }

    /// Creates the job cgroup `<parent>/<name>` with a CPU quota of
    /// `max_cpu_percent` of one core (CFS period 100 ms) and a memory limit of
    /// `max_memory_mb` (swap included where the kernel accounts it); `None`
    /// fields set no limit. A leftover of the same name is an error
    /// ([`CgroupError::AlreadyExists`]); [`sweep`](Self::sweep) at start-up
    /// removes leftovers.
    pub fn create_job(
        &self,
        name: &str,
        limits: &ResourceLimits,
    ) -> Result<JobCgroup, CgroupError> {
        let layout = self.layout()?;
        validate_rel(name)?;
        if name.contains('/') {
            return Err(CgroupError::InvalidName(name.to_string()));
        }
        let dir_in = |root: &Path| root.join(&self.parent).join(name);
        let mut job = JobCgroup {
            name: name.to_string(),
            version: layout.version,
            dirs: Vec::new(),
            procs: Vec::new(),
            cpu_dir: dir_in(&layout.cpu),
            cpuacct_dir: layout.cpuacct.as_deref().map(dir_in),
            mem_dir: dir_in(&layout.memory),
            removed: false,
        };
        // From here on, `job`'s Drop removes whatever was created.
        for root in layout.roots() {
            let dir = dir_in(&root);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Not ours: `dirs` holds only what we created, so Drop
                    // removes those and leaves this one alone.
                    return Err(CgroupError::AlreadyExists(dir));
                }
                Err(e) => return Err(io_err("mkdir", &dir, e)),
            }
            let procs = dir.join(join_file(layout.version));
            let c = CString::new(procs.as_os_str().as_bytes())
                .map_err(|_| CgroupError::InvalidName(procs.display().to_string()))?;
            job.procs.push(c);
            job.dirs.push(dir);
        }
        job.apply_limits(limits)?;
        Ok(job)
    }

    /// Start-up sweep: SIGKILLs every process left in job cgroups under this
    /// manager's parent (from an earlier run of the node) and removes those
    /// cgroups, nested ones included. Call it before creating any job: it
    /// treats every child of the parent as a leftover.
    pub fn sweep(&self) -> SweepReport {
        let mut report = SweepReport::default();
        let Ok(layout) = self.layout() else {
            return report;
        };
        let deadline = Instant::now() + REMOVE_WAIT;
        let mut killed = BTreeSet::new();
        let mut removed = BTreeSet::new();
        let mut failed = BTreeSet::new();
        for root in layout.roots() {
            let parent = root.join(&self.parent);
            let Ok(entries) = fs::read_dir(&parent) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                match remove_tree(&entry.path(), layout.version, deadline, &mut killed) {
                    Ok(()) => {
                        removed.insert(name);
                    }
                    Err(e) => {
                        tracing::warn!(cgroup = %entry.path().display(), error = %e, "sweep could not remove leftover cgroup");
                        failed.insert(format!("{name}: {e}"));
                    }
                }
            }
        }
        if !killed.is_empty() || !removed.is_empty() {
            tracing::info!(parent = %self.parent, killed = killed.len(), removed = removed.len(), "swept leftover job cgroups");
        }
        report.killed_pids = killed.into_iter().collect();
        report.removed = removed.into_iter().collect();
        report.failed = failed.into_iter().collect();
        report
    }

    /// Removes the parent directories (they must be empty: remove or sweep
    /// the jobs first), then each ancestor that became empty. For shutdown
    /// and tests. Ancestors still in use are left alone.
    pub fn remove_parent(&self) -> Result<(), CgroupError> {
        let layout = self.layout()?;
        let mut first_err = None;
        for root in layout.roots() {
            let dir = root.join(&self.parent);
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_err.get_or_insert(io_err("rmdir", &dir, e));
                    continue;
                }
            }
            let mut ancestor = dir.parent();
            while let Some(a) = ancestor {
                if a == root || !a.starts_with(&root) || fs::remove_dir(a).is_err() {
                    break;
                }
                ancestor = a.parent();
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Whether a cgroup `<parent>/<name>` exists in any mounted cgroup hierarchy
/// (v1 or v2). For tests and diagnostics.
pub fn cgroup_exists(parent: &str, name: &str) -> bool {
    let rel = Path::new(parent.trim_matches('/')).join(name);
    let mut roots: Vec<PathBuf> = hierarchies::mountinfo_self()
        .into_iter()
        .map(|m| m.mount_point)
        .collect();
    if let Ok(mounts) = fs::read_to_string("/proc/self/mounts") {
        roots.extend(mounts.lines().filter_map(|l| {
            let mut f = l.split_whitespace();
            let _dev = f.next();
            let point = f.next()?;
            (f.next()? == "cgroup2").then(|| PathBuf::from(point))
        }));
    }
    roots.iter().any(|r| r.join(&rel).is_dir())
}

/// One job attempt's cgroup (a directory in each hierarchy used). Dropping it
/// kills what is inside and removes it (best effort; blocks up to 2 s while
/// the members die).
#[derive(Debug)]
pub struct JobCgroup {
    name: String,
    version: CgroupVersion,
    /// Every directory of this cgroup, one per hierarchy.
    dirs: Vec<PathBuf>,
    /// The file to join each of `dirs` through ([`join_file`]), ready for
    /// the child.
    procs: Vec<CString>,
    cpu_dir: PathBuf,
    cpuacct_dir: Option<PathBuf>,
    mem_dir: PathBuf,
    removed: bool,
}

impl JobCgroup {
    fn apply_limits(&self, limits: &ResourceLimits) -> Result<(), CgroupError> {
        let quota_us = limits
            .max_cpu_percent
            .map(|p| (u64::from(p) * CPU_PERIOD_US / 100).max(MIN_CPU_QUOTA_US));
        let mem_bytes = limits
            .max_memory_mb
            .map(|mb| mb.saturating_mul(1024 * 1024));
        match self.version {
            CgroupVersion::V2 => {
                if let Some(q) = quota_us {
                    write_file(
                        &self.cpu_dir.join("cpu.max"),
                        &format!("{q} {CPU_PERIOD_US}"),
                    )?;
                }
                if let Some(b) = mem_bytes {
                    write_file(&self.mem_dir.join("memory.max"), &b.to_string())?;
                    let swap = self.mem_dir.join("memory.swap.max");
                    if swap.exists() {
                        write_file(&swap, "0")?;
                    }
                }
            }
            CgroupVersion::V1 => {
                if let Some(q) = quota_us {
                    write_file(
                        &self.cpu_dir.join("cpu.cfs_period_us"),
                        &CPU_PERIOD_US.to_string(),
                    )?;
                    write_file(&self.cpu_dir.join("cpu.cfs_quota_us"), &q.to_string())?;
                }
                if let Some(b) = mem_bytes {
                    write_file(&self.mem_dir.join("memory.limit_in_bytes"), &b.to_string())?;
                    // memsw must be >= the memory limit, so it is written second.
                    let memsw = self.mem_dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write_file(&memsw, &b.to_string())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The job cgroup's name (the last path segment).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cgroup version of this job cgroup.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The cgroup's directories, one per hierarchy used.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Absolute paths of the files the child must write `0` into before exec
    /// to join the cgroup: `tasks` in each v1 hierarchy used (see
    /// [`join_file`]: the child must be single-threaded), or the single v2
    /// `cgroup.procs`.
    pub fn procs_files(&self) -> Vec<CString> {
        self.procs.clone()
    }

    /// Processes currently in the cgroup (any hierarchy), sorted.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = BTreeSet::new();
        for dir in &self.dirs {
            pids.extend(read_procs(dir));
        }
        pids.into_iter().collect()
    }

    /// CPU time, peak memory and OOM kills so far.
    ///
    /// v1: `cpuacct.usage`, `memory.max_usage_in_bytes`, `memory.oom_control`
    /// (`oom_kill`); v2: `cpu.stat` (`usage_usec`), `memory.peak`,
    /// `memory.events` (`oom_kill`).
    pub fn stats(&self) -> CgroupStats {
        match self.version {
            CgroupVersion::V2 => CgroupStats {
                cpu_s: keyed_value(&self.cpu_dir.join("cpu.stat"), "usage_usec")
                    .map(|us| us as f64 / 1e6),
                peak_memory_bytes: read_trimmed(&self.mem_dir.join("memory.peak"))
                    .and_then(|s| s.parse().ok()),
                oom_kills: keyed_value(&self.mem_dir.join("memory.events"), "oom_kill")
                    .unwrap_or(0),
            },
            CgroupVersion::V1 => CgroupStats {
                cpu_s: self
                    .cpuacct_dir
                    .as_ref()
                    .and_then(|d| read_trimmed(&d.join("cpuacct.usage")))
                    .and_then(|s| s.parse::<u64>().ok())
                    .map(|ns| ns as f64 / 1e9),
                peak_memory_bytes: read_trimmed(&self.mem_dir.join("memory.max_usage_in_bytes"))
                    .and_then(|s| s.parse().ok()),
                oom_kills: keyed_value(&self.mem_dir.join("memory.oom_control"), "oom_kill")
                    .unwrap_or(0),
            },
        }
    }

    /// Where the job's cumulative CPU time can be read while the cgroup
    /// lives (for the power sampler's attribution). `None` on v1 without a
    /// `cpuacct` hierarchy.
    pub fn cpu_probe(&self) -> Option<CpuProbe> {
        match self.version {
            CgroupVersion::V2 => Some(CpuProbe::CgroupV2Stat(self.cpu_dir.join("cpu.stat"))),
            CgroupVersion::V1 => self
                .cpuacct_dir
                .as_ref()
                .map(|d| CpuProbe::CgroupV1Usage(d.join("cpuacct.usage"))),
        }
    }

    /// The `cgroup.procs` file that lists the job's processes (of the first
    /// hierarchy: every hierarchy holds the same processes).
    pub fn procs_file(&self) -> Option<PathBuf> {
        self.dirs.first().map(|d| d.join("cgroup.procs"))
    }

    /// SIGKILLs everything inside (v2: through `cgroup.kill` when present).
    /// Does not wait.
    pub fn kill_all(&self) {
        kill_dirs(&self.dirs, self.version);
    }

    fn remove_within(&mut self, wait: Duration) -> Result<(), CgroupError> {
        self.removed = true;
        let mut killed = BTreeSet::new();
        drain_and_rmdir(&self.dirs, self.version, Instant::now() + wait, &mut killed)
    }

    /// Kills what is left, waits (bounded, polling) until the cgroup is empty
    /// and removes its directories. On error the cgroup is left for the next
    /// start-up [`sweep`](CgroupManager::sweep).
    ///
    /// Blocks the calling thread while it waits (milliseconds normally, at
    /// most 5 s); from async code, call it via `spawn_blocking` if that matters.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.remove_within(REMOVE_WAIT)
    }

    /// True once none of the cgroup's directories exists any more.
    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|d| d.exists())
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        if let Err(e) = self.remove_within(DROP_REMOVE_WAIT) {
            tracing::warn!(cgroup = %self.name, error = %e, "could not remove job cgroup on drop");
        }
    }
}

#[cfg(test)]
mod tests;
