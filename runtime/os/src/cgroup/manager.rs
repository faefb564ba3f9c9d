//! The node-wide parent cgroup: detection of the hierarchies, creation of
//! job cgroups, and the start-up sweep of leftovers.

use super::*;

/// Owns the node's cgroup parent (`<parent>` in every hierarchy used) and
/// creates job cgroups under it.
#[derive(Debug)]
pub struct CgroupManager {
    pub(super) parent: String,
    pub(super) layout: Option<Layout>,
    /// Why cgroups are unusable, when they are.
    pub(super) unavailable: Option<String>,
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

    pub(super) fn with_layout(parent: &str, layout: Result<Layout, String>) -> CgroupManager {
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
    pub(super) fn prepare(parent: &str, layout: Layout) -> Result<Layout, String> {
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

    pub(super) fn layout(&self) -> Result<&Layout, CgroupError> {
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
