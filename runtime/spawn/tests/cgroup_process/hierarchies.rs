//! The v1 and v2 code paths (moved with the cgroup module's tests that
//! spawn through the guard).

use super::*;

/// Where a cgroup2 filesystem is mounted, if anywhere.
fn v2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

/// The v2 code paths (join, `cgroup.kill`, nested sweep, removal), run on
/// whatever cgroup2 mount exists even when it has no controllers (as the
/// empty `unified` mount of a hybrid system). Limits are not exercised here.
#[tokio::test]
async fn v2_paths_work_on_any_cgroup2_mount() {
    use std::os::unix::process::ExitStatusExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let Some(root) = v2_mount() else {
        eprintln!("SKIPPED: no cgroup2 mount");
        return;
    };
    let parent = format!("ffrtmp-test/v2-paths-{}", std::process::id());
    let mgr = CgroupManager::v2_mounted_at(&parent, &root);
    assert_eq!(mgr.isolation(), Isolation::CgroupV2, "{mgr:?}");
    let limits = ResourceLimits::default();
    let job = mgr.create_job("job", &limits).unwrap();
    assert_eq!(job.procs_files().len(), 1);
    let spec = process::SpawnSpec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "sleep 100 & sleep 100".into()],
        nice: 0,
        cgroup_procs: job.procs_files(),
        env: Vec::new(),
        lease: None,
        run_log: None,
        fds: Vec::new(),
    };
    let mut sp = process::spawn(spec).await.unwrap();
    let start = Instant::now();
    // The guard, sh and the two sleeps.
    while job.pids().len() < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            job.pids()
        );
        tokio::time::sleep(POLL).await;
    }
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", sp.guard.pid())).unwrap();
    assert!(
        own.lines().any(|l| l == format!("0::/{parent}/job")),
        "{own}"
    );
    assert!(job.stats().cpu_s.is_some());

    // A crashed run: the handle is lost, with a nested cgroup inside.
    let pids = job.pids();
    std::fs::create_dir(job.dirs()[0].join("nested")).unwrap();
    std::mem::forget(job);
    let report = mgr.sweep();
    assert_eq!(report.removed, vec!["job".to_string()], "{report:?}");
    assert!(pids.iter().all(|p| report.killed_pids.contains(p)));
    let status = process::wait(&mut sp.child, &sp.guard).await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));

    // remove() through cgroup.kill.
    let job = mgr.create_job("job2", &limits).unwrap();
    let spec = process::SpawnSpec {
        program: "/bin/sleep".into(),
        args: vec!["100".into()],
        nice: 0,
        cgroup_procs: job.procs_files(),
        env: Vec::new(),
        lease: None,
        run_log: None,
        fds: Vec::new(),
    };
    let mut sp = process::spawn(spec).await.unwrap();
    // The guard process and its child (the sleep).
    let pids = job.pids();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.contains(&sp.guard.pid()), "{pids:?}");
    job.remove().unwrap();
    assert!(!cgroup_exists(&parent, "job2"));
    let status = process::wait(&mut sp.child, &sp.guard).await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    mgr.remove_parent().unwrap();
    assert!(!root.join(&parent).exists());
}

/// On a v1 host: the guard joins through `tasks` in every hierarchy,
/// and what it forks (a shell and its children) is in the job cgroup in
/// every hierarchy too.
#[tokio::test]
async fn v1_children_join_every_hierarchy_through_tasks() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let parent = format!("ffrtmp-test/v1-join-{}", std::process::id());
    let mgr = CgroupManager::detect(&parent);
    if mgr.isolation() != Isolation::CgroupV1 {
        eprintln!("SKIPPED: not a cgroup v1 host ({:?})", mgr.isolation());
        return;
    }
    let job = mgr.create_job("job", &ResourceLimits::default()).unwrap();
    let files = job.procs_files();
    assert_eq!(files.len(), job.dirs().len());
    assert!(
        files.iter().all(|f| f.to_bytes().ends_with(b"/tasks")),
        "{files:?}"
    );
    let spec = process::SpawnSpec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "sleep 100 & sleep 100".into()],
        nice: 0,
        cgroup_procs: files,
        env: Vec::new(),
        lease: None,
        run_log: None,
        fds: Vec::new(),
    };
    let mut sp = process::spawn(spec).await.unwrap();
    // The guard, sh and the two sleeps, in each hierarchy.
    let start = Instant::now();
    while job.dirs().iter().any(|d| read_procs(d).len() < 4) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            job.dirs().iter().map(|d| read_procs(d)).collect::<Vec<_>>()
        );
        tokio::time::sleep(POLL).await;
    }
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", sp.guard.pid())).unwrap();
    let suffix = format!(":/{parent}/job");
    assert!(
        own.lines().filter(|l| l.ends_with(&suffix)).count() >= job.dirs().len(),
        "{own}"
    );
    job.remove().unwrap();
    let status = process::wait(&mut sp.child, &sp.guard).await.unwrap();
    assert!(!status.success());
    mgr.remove_parent().unwrap();
}
