//! Spawning into a cgroup: placement before exec, process group and nice,
//! environment, a failed join.

use super::*;

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
