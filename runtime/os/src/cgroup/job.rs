//! One job attempt's cgroup: the files a child joins, limits, stats, kill
//! and removal.

use super::*;

/// One job attempt's cgroup (a directory in each hierarchy used). Dropping it
/// kills what is inside and removes it (best effort; blocks up to 2 s while
/// the members die).
#[derive(Debug)]
pub struct JobCgroup {
    pub(super) name: String,
    pub(super) version: CgroupVersion,
    /// Every directory of this cgroup, one per hierarchy.
    pub(super) dirs: Vec<PathBuf>,
    /// The file to join each of `dirs` through ([`join_file`]), ready for
    /// the child.
    pub(super) procs: Vec<CString>,
    pub(super) cpu_dir: PathBuf,
    pub(super) cpuacct_dir: Option<PathBuf>,
    pub(super) mem_dir: PathBuf,
    pub(super) removed: bool,
}

impl JobCgroup {
    pub(super) fn apply_limits(&self, limits: &ResourceLimits) -> Result<(), CgroupError> {
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

    pub(super) fn remove_within(&mut self, wait: Duration) -> Result<(), CgroupError> {
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
