//! Ending a job: the guard's drop, terminate, cgroup removal, the start-up
//! sweep, unusable cgroups, children outliving their spawner.

use super::*;

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
