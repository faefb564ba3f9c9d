//! Real processes in real cgroups (needs root; cgroup tests are skipped,
//! loudly, when not root). Every test owns a unique cgroup parent
//! `ffrtmp-test/<test>-<pid>` and removes it at the end; everything spawned is
//! killed by pid, process group or cgroup, never by name.

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

#[tokio::test]
async fn child_is_in_its_cgroup_before_exec() {
    let Some(tp) = TestParent::new("in-cgroup") else {
        return;
    };
    let job = tp
        .mgr
        .create_job("job-1", &ResourceLimits::default())
        .unwrap();
    let mut sp = process::spawn(spec("/bin/cat", &["/proc/self/cgroup"], job.procs_files()))
        .await
        .unwrap();
    // What `cat` read is its own cgroup membership at exec time: no post-spawn add.
    let out = stdout_of(&mut sp).await;
    let status = process::wait(&mut sp.child, &sp.guard).await.unwrap();
    assert!(status.success());
    let want = format!("/{}/job-1", tp.mgr.parent());
    let in_job = |ctrl: &str| {
        out.lines().any(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
            ctrls.split(',').any(|c| c == ctrl) && path == want
        })
    };
    match tp.mgr.version() {
        Some(CgroupVersion::V1) => {
            for ctrl in ["cpu", "cpuacct", "memory"] {
                assert!(in_job(ctrl), "{ctrl} not {want} in:\n{out}");
            }
        }
        Some(CgroupVersion::V2) => assert!(in_job(""), "not {want} in:\n{out}"),
        None => unreachable!(),
    }
    assert!(job.pids().is_empty());
    job.remove().unwrap();
    assert!(!cgroup_exists(tp.mgr.parent(), "job-1"));
}

#[tokio::test]
async fn spawn_sets_group_and_nice_without_cgroup() {
    let mut sp = process::spawn(spec("/bin/cat", &["/proc/self/stat"], vec![]))
        .await
        .unwrap();
    // The pid is the guard's: it leads the group, and `cat` is its child.
    let pid = sp.guard.pid();
    assert_eq!(sp.guard.pgid(), pid);
    // (Unreaped until the wait below, so its stat stays readable.)
    let guard = stat_fields(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap());
    let out = stdout_of(&mut sp).await;
    process::wait(&mut sp.child, &sp.guard).await.unwrap();
    let cat = stat_fields(&out);
    // Fields after the name: state(0) ppid(1) pgrp(2) ... nice(16).
    assert_eq!(guard[1].parse::<u32>().unwrap(), std::process::id());
    assert_eq!(
        guard[2].parse::<i32>().unwrap(),
        pid,
        "the guard leads the group"
    );
    assert_eq!(cat[1].parse::<i32>().unwrap(), pid, "the guard's child");
    assert_eq!(cat[2].parse::<i32>().unwrap(), pid, "in the guard's group");
    assert_eq!(cat[16], "10", "nice");
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

#[tokio::test]
async fn child_gets_only_path_and_the_given_environment() {
    // cargo sets this for the test process; the child must not inherit it.
    assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
    let mut sp_spec = spec("/usr/bin/env", &[], Vec::new());
    sp_spec.env = vec![("SVT_LOG".into(), "1".into())];
    let mut sp = process::spawn(sp_spec).await.unwrap();
    let out = stdout_of(&mut sp).await;
    let mut names: Vec<&str> = out.lines().filter_map(|l| l.split('=').next()).collect();
    names.sort();
    assert_eq!(names, vec!["PATH", "SVT_LOG"], "{out}");
    assert!(out.contains("SVT_LOG=1"));
}

#[tokio::test]
async fn failed_cgroup_join_fails_the_spawn() {
    let bogus = CString::new("/nonexistent/ffrtmp/cgroup.procs").unwrap();
    let err = process::spawn(spec("/bin/true", &[], vec![bogus]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    let err = process::spawn(spec("/nonexistent/ffmpeg", &[], vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn cpu_quota_caps_at_half_a_core() {
    let Some(tp) = TestParent::new("cpu-quota") else {
        return;
    };
    let limits = ResourceLimits {
        max_cpu_percent: Some(50),
        ..Default::default()
    };
    let job = tp.mgr.create_job("job-cpu", &limits).unwrap();
    let quota = match tp.mgr.version() {
        Some(CgroupVersion::V1) => {
            let cpu = job
                .dirs()
                .iter()
                .find(|d| d.join("cpu.cfs_quota_us").exists())
                .unwrap();
            let q = std::fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap();
            let p = std::fs::read_to_string(cpu.join("cpu.cfs_period_us")).unwrap();
            format!("{} {}", q.trim(), p.trim())
        }
        _ => std::fs::read_to_string(job.dirs()[0].join("cpu.max"))
            .unwrap()
            .trim()
            .to_string(),
    };
    assert_eq!(quota, "50000 100000");

    let args = [
        "-hide_banner",
        "-nostats",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-t",
        "30",
        "-c:v",
        "libx264",
        "-preset",
        "medium",
        "-f",
        "null",
        "-",
    ];
    let mut sp = process::spawn(spec("ffmpeg", &args, job.procs_files()))
        .await
        .unwrap();
    // Start measuring once the encoder is busy.
    eventually("ffmpeg uses CPU", || job.stats().cpu_s.unwrap_or(0.0) > 0.2).await;
    let (t0, c0) = (Instant::now(), job.stats().cpu_s.unwrap());
    while t0.elapsed() < Duration::from_secs(3) {
        assert!(sp.child.try_wait().unwrap().is_none(), "ffmpeg ended early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (wall, c1) = (t0.elapsed().as_secs_f64(), job.stats().cpu_s.unwrap());
    let share = (c1 - c0) / wall;
    eprintln!(
        "cpu share under a 50% quota: {share:.3} ({:.3} cpu-s over {wall:.3} s)",
        c1 - c0
    );
    let status = process::terminate(&mut sp.child, &sp.guard, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(!status.success());
    assert!(
        (share - 0.5).abs() <= 0.1,
        "cpu share {share:.3} not within 0.5 ± 0.1"
    );
    job.remove().unwrap();
}

#[tokio::test]
async fn memory_limit_is_written_and_oom_kills_counted() {
    let Some(tp) = TestParent::new("memory") else {
        return;
    };
    let limits = ResourceLimits {
        max_memory_mb: Some(32),
        ..Default::default()
    };
    let job = tp.mgr.create_job("job-mem", &limits).unwrap();
    let (file, want) = match tp.mgr.version() {
        Some(CgroupVersion::V1) => ("memory.limit_in_bytes", 32 << 20),
        _ => ("memory.max", 32u64 << 20),
    };
    let mem_dir = job
        .dirs()
        .iter()
        .find(|d| d.join(file).exists())
        .unwrap()
        .clone();
    let got: u64 = std::fs::read_to_string(mem_dir.join(file))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(got, want);

    // `tail` buffers a "line" of /dev/zero without end: it grows until killed.
    let mut sp = process::spawn(spec("tail", &["/dev/zero"], job.procs_files()))
        .await
        .unwrap();
    let status = tokio::time::timeout(DEADLINE, process::wait(&mut sp.child, &sp.guard))
        .await
        .expect("tail was not OOM-killed in time")
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let stats = job.stats();
    assert!(stats.oom_kills >= 1, "{stats:?}");
    let peak = stats.peak_memory_bytes.unwrap_or(0);
    assert!(peak > 16 << 20 && peak <= want + (1 << 20), "{stats:?}");
    job.remove().unwrap();
}

#[tokio::test]
async fn dropping_the_guard_kills_the_whole_group() {
    // A shell only as a test child: it makes a group of several processes.
    let sp = process::spawn(spec("/bin/sh", &["-c", "sleep 100 & sleep 100"], vec![]))
        .await
        .unwrap();
    let pgid = sp.guard.pgid();
    eventually("guard, sh and both sleeps running", || {
        group_members(pgid) >= 4
    })
    .await;
    drop(sp);
    eventually("group dead after guard drop", || !group_alive(pgid)).await;
}

#[tokio::test]
async fn terminate_escalates_to_sigkill() {
    let script = "trap '' TERM; echo ready; while :; do sleep 0.05; done";
    let mut sp = process::spawn(spec("/bin/sh", &["-c", script], vec![]))
        .await
        .unwrap();
    let mut lines = BufReader::new(sp.child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
    let grace = Duration::from_millis(300);
    let start = Instant::now();
    let status = process::terminate(&mut sp.child, &sp.guard, grace)
        .await
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(start.elapsed() >= grace);
    assert!(sp.guard.is_reaped());
    // The shell's `sleep` got SIGKILL too; it dies asynchronously.
    eventually("no member left", || !group_alive(sp.guard.pgid())).await;
}

#[tokio::test]
async fn terminate_is_quick_when_sigterm_works() {
    let mut sp = process::spawn(spec("/bin/sleep", &["100"], vec![]))
        .await
        .unwrap();
    let start = Instant::now();
    let status = process::terminate(&mut sp.child, &sp.guard, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // Calling it again on a reaped child just returns the status.
    let again = process::terminate(&mut sp.child, &sp.guard, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(again, status);
}

#[tokio::test]
async fn remove_kills_members_and_leaves_no_directory() {
    let Some(tp) = TestParent::new("remove") else {
        return;
    };
    let job = tp
        .mgr
        .create_job("job-rm", &ResourceLimits::default())
        .unwrap();
    let dirs: Vec<PathBuf> = job.dirs().to_vec();
    let mut sp = process::spawn(spec("/bin/sleep", &["100"], job.procs_files()))
        .await
        .unwrap();
    let pids = job.pids();
    assert!(guard_and_child(&pids, sp.guard.pid()), "{pids:?}");
    assert!(cgroup_exists(tp.mgr.parent(), "job-rm"));
    job.remove().unwrap();
    assert!(dirs.iter().all(|d| !d.exists()));
    assert!(!cgroup_exists(tp.mgr.parent(), "job-rm"));
    let status = process::wait(&mut sp.child, &sp.guard).await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[tokio::test]
async fn dropping_a_job_cgroup_removes_it() {
    let Some(tp) = TestParent::new("drop") else {
        return;
    };
    let job = tp
        .mgr
        .create_job("job-drop", &ResourceLimits::default())
        .unwrap();
    let mut sp = process::spawn(spec("/bin/sleep", &["100"], job.procs_files()))
        .await
        .unwrap();
    assert!(matches!(
        tp.mgr.create_job("job-drop", &ResourceLimits::default()),
        Err(ffrtmp_os::cgroup::CgroupError::AlreadyExists(_))
    ));
    assert!(
        job.exists(),
        "a failed duplicate must not remove the original"
    );
    drop(job);
    assert!(!cgroup_exists(tp.mgr.parent(), "job-drop"));
    let status = process::wait(&mut sp.child, &sp.guard).await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[tokio::test]
async fn sweep_kills_and_removes_leftovers() {
    let Some(tp) = TestParent::new("sweep") else {
        return;
    };
    let job = tp
        .mgr
        .create_job("leftover", &ResourceLimits::default())
        .unwrap();
    let mut sp = process::spawn(spec(
        "/bin/sh",
        &["-c", "sleep 100 & sleep 100"],
        job.procs_files(),
    ))
    .await
    .unwrap();
    eventually("guard, sh and two sleeps in the cgroup", || {
        job.pids().len() >= 4
    })
    .await;
    let pids = job.pids();
    // A nested cgroup inside the leftover, in every hierarchy.
    for d in job.dirs() {
        std::fs::create_dir(d.join("nested")).unwrap();
    }
    // Simulate a crash: the handle is lost without cleanup.
    std::mem::forget(job);

    let fresh = CgroupManager::detect(tp.mgr.parent());
    let report = fresh.sweep();
    assert_eq!(report.removed, vec!["leftover".to_string()]);
    assert!(report.failed.is_empty(), "{report:?}");
    for pid in &pids {
        assert!(report.killed_pids.contains(pid), "{pid} not in {report:?}");
    }
    assert!(!cgroup_exists(tp.mgr.parent(), "leftover"));
    let status = process::wait(&mut sp.child, &sp.guard).await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    eventually("no member left", || !group_alive(sp.guard.pgid())).await;
    assert_eq!(fresh.sweep(), Default::default());
}

#[test]
fn unusable_cgroups_mean_isolation_none() {
    let mgr = CgroupManager::detect("../escape");
    assert_eq!(mgr.isolation(), Isolation::None);
    assert!(mgr.unavailable_reason().is_some());
    assert!(mgr.create_job("job", &ResourceLimits::default()).is_err());
    assert_eq!(mgr.sweep(), Default::default());
    if let Some(tp) = TestParent::new("bad-name") {
        for bad in ["", "a/b", "..", ".x", "a b"] {
            assert!(tp.mgr.create_job(bad, &ResourceLimits::default()).is_err());
        }
    }
}

/// PR_SET_PDEATHSIG fires when the spawning *thread* exits. A control child
/// forked directly by a short-lived thread (with the same prctl) dies when
/// that thread ends; a child spawned through `process::spawn` from a runtime
/// on that same thread survives, because the fork happened on the long-lived
/// spawner thread.
#[test]
fn children_outlive_the_thread_and_runtime_that_asked_for_them() {
    use std::os::unix::process::CommandExt;
    let (control, guard) = std::thread::spawn(|| {
        let mut cmd = std::process::Command::new("/bin/sleep");
        cmd.arg("100").process_group(0);
        // SAFETY: prctl only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let control = cmd.spawn().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sp = rt
            .block_on(process::spawn(spec("/bin/sleep", &["100"], vec![])))
            .unwrap();
        let Spawned { child, guard } = sp;
        drop(child); // reaped later by tokio's orphan queue
        drop(rt);
        (control, guard)
    })
    .join()
    .unwrap();
    let mut control = control;
    let control_pgid = control.id() as i32;
    let start = Instant::now();
    while group_alive(control_pgid) {
        assert!(
            start.elapsed() < DEADLINE,
            "control child survived its thread"
        );
        std::thread::sleep(POLL);
    }
    let _ = control.wait();
    assert!(
        group_alive(guard.pgid()),
        "spawned child died with the requesting thread"
    );
    let pgid = guard.pgid();
    drop(guard);
    let start = Instant::now();
    while group_alive(pgid) {
        assert!(start.elapsed() < DEADLINE, "guard drop did not kill");
        std::thread::sleep(POLL);
    }
}

// --- moved with the cgroup module's v1/v2 tests that spawn through the guard

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
