//! The guard process, with real processes.

use super::*;

#[tokio::test]
async fn exit_codes_and_signals_are_relayed() {
    let cases: [(&str, Option<i32>, Option<i32>); 5] = [
        ("true", Some(0), None),
        ("exit 3", Some(3), None),
        ("kill -KILL $$", None, Some(libc::SIGKILL)),
        ("kill -TERM $$", None, Some(libc::SIGTERM)),
        ("kill -USR1 $$", None, Some(libc::SIGUSR1)),
    ];
    for (script, code, sig) in cases {
        // "sh" without a slash: looked up in PATH.
        let mut sp = spawn(cmd("sh", &["-c", script])).await.unwrap();
        let status = tokio::time::timeout(DEADLINE, wait(&mut sp.child, &sp.guard))
            .await
            .expect("child did not exit")
            .unwrap();
        assert_eq!(
            (status.code(), status.signal()),
            (code, sig),
            "{script}: {status:?}"
        );
        assert!(!status.core_dumped(), "{script}: {status:?}");
        assert!(sp.guard.is_reaped());
    }
}

/// `(event, ns, tag)` lines of a run log.
fn run_log_lines(path: &std::path::Path) -> Vec<(String, u64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut it = l.splitn(3, ' ');
            let ev = it.next().unwrap_or("").to_string();
            let ns = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            (ev, ns, it.next().unwrap_or("").to_string())
        })
        .collect()
}

#[tokio::test]
async fn the_guard_writes_start_and_stop_to_the_run_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let before = monotonic_ns();
    let mut spec = cmd("true", &[]);
    spec.run_log = Some(RunLog {
        path: log.clone(),
        tag: "job-1 7".into(),
    });
    let mut sp = spawn(spec).await.unwrap();
    let status = tokio::time::timeout(DEADLINE, wait(&mut sp.child, &sp.guard))
        .await
        .expect("child did not exit")
        .unwrap();
    assert!(status.success());
    let mut lines = run_log_lines(&log);
    lines.sort_by_key(|(_, ns, _)| *ns);
    let events: Vec<&str> = lines.iter().map(|(e, _, _)| e.as_str()).collect();
    // `start` (the guard) and `exec` (FFmpeg's side of its fork) race.
    assert!(
        events == ["start", "exec", "stop"] || events == ["exec", "start", "stop"],
        "{lines:?}"
    );
    assert!(lines.iter().all(|(_, _, t)| t == "job-1 7"), "{lines:?}");
    let (first, stop) = (lines[0].1, lines[2].1);
    assert!(before <= first && first <= stop && stop <= monotonic_ns());
}

#[tokio::test]
async fn a_lease_kill_is_in_the_run_log_even_if_the_worker_never_looks() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let mut spec = cmd("sleep", &["100"]);
    spec.lease = Some(Duration::from_millis(200));
    spec.run_log = Some(RunLog {
        path: log.clone(),
        tag: "job-2 9".into(),
    });
    let before = monotonic_ns();
    let sp = spawn(spec).await.unwrap();
    // Nobody waits on the child: the guard alone records the kill.
    eventually("a kill line", || {
        run_log_lines(&log).iter().any(|(e, _, _)| e == "kill")
    })
    .await;
    let lines = run_log_lines(&log);
    let at = |event: &str| {
        lines
            .iter()
            .find(|l| l.0 == event)
            .map(|l| l.1)
            .unwrap_or_else(|| panic!("no {event} line: {lines:?}"))
    };
    assert!(
        at("start") < at("kill") && at("exec") < at("kill"),
        "{lines:?}"
    );
    // The lease runs from the spawn call.
    assert!(at("kill") >= before + 200_000_000, "{lines:?}");
    drop(sp);
}

#[tokio::test]
async fn a_run_log_tag_with_a_newline_is_refused() {
    let mut spec = cmd("true", &[]);
    spec.run_log = Some(RunLog {
        path: "/tmp/never".into(),
        tag: "a\nb".into(),
    });
    assert!(spawn(spec).await.is_err());
}

#[tokio::test]
async fn sigterm_to_the_group_ends_the_child_and_the_guard_relays_it() {
    let mut sp = spawn(cmd("sleep", &["100"])).await.unwrap();
    sp.guard.signal_group(Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(DEADLINE, wait(&mut sp.child, &sp.guard))
        .await
        .expect("SIGTERM did not end the job")
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    // Reaped: calling again gives the same status.
    assert_eq!(sp.child.wait().await.unwrap(), status);
}

#[tokio::test]
async fn the_guard_outlives_sigterm_and_relays_the_childs_own_exit() {
    // The child handles SIGTERM (as FFmpeg does, finishing its output).
    let script = "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done";
    let mut sp = spawn(cmd("sh", &["-c", script])).await.unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        sp.child.stdout.take().unwrap(),
    ));
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
    sp.guard.signal_group(Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(DEADLINE, wait(&mut sp.child, &sp.guard))
        .await
        .expect("the child did not exit on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(7), "{status:?}");
}

#[tokio::test]
async fn the_guard_leads_the_group_and_holds_only_its_own_descriptors() {
    let mut sp = spawn(cmd("sleep", &["100"])).await.unwrap();
    let guard = sp.guard.pid();
    assert_eq!(sp.child.id(), guard);
    assert_eq!(sp.guard.pgid(), guard);
    let me = std::process::id() as i32;
    assert_eq!(ppid_pgrp(guard), (me, guard), "the guard leads its group");
    assert_eq!(comm(guard), "ffrtmp-guard");
    let kids = children_of(guard);
    assert_eq!(kids.len(), 1, "{kids:?}");
    let ffmpeg = kids[0];
    assert_eq!(
        ppid_pgrp(ffmpeg),
        (guard, guard),
        "the child is in the group"
    );
    assert_eq!(comm(ffmpeg), "sleep");

    if let Some(links) = fd_links(guard) {
        // The heartbeat end and the child's pidfd; nothing of the worker's
        // (the test harness's own descriptors, the other tests' pipes).
        let kinds: Vec<&str> = links
            .iter()
            .map(|(_, t)| t.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(links.len(), 2, "{links:?}");
        assert!(kinds.contains(&"socket"), "{links:?}");
        assert!(links.iter().any(|(_, t)| t.contains("pidfd")), "{links:?}");
    } else {
        assert!(!nix::unistd::geteuid().is_root());
        eprintln!("SKIPPED the guard's descriptors: needs root");
    }
    if let Some(links) = fd_links(ffmpeg) {
        assert_eq!(
            links.first().map(|(fd, t)| (*fd, t.as_str())),
            Some((0, "/dev/null"))
        );
        assert!(links
            .iter()
            .any(|(fd, t)| *fd == 1 && t.starts_with("pipe:")));
        assert!(links
            .iter()
            .any(|(fd, t)| *fd == 2 && t.starts_with("pipe:")));
        assert!(
            !links.iter().any(|(_, t)| t.starts_with("socket:")),
            "the heartbeat leaked into the child: {links:?}"
        );
    }

    let status = terminate(&mut sp.child, &sp.guard, DEADLINE).await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    eventually("group gone", || !group_alive(guard)).await;
}

#[tokio::test]
async fn job_files_reach_the_child_at_fixed_numbers_and_leave_the_guard() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in"), b"the input").unwrap();
    let input = std::fs::File::open(dir.path().join("in")).unwrap();
    let output = std::fs::File::create(dir.path().join("out")).unwrap();
    // Opened before the child could name them, and moved aside: the
    // paths are gone, the descriptors still reach the files.
    std::fs::rename(dir.path().join("in"), dir.path().join("in.moved")).unwrap();
    let mut spec = cmd(
        "sh",
        &[
            "-c",
            "cat /proc/self/fd/5 > /proc/self/fd/6 && echo copied && exec sleep 100",
        ],
    );
    spec.fds = vec![
        Arc::new(OwnedFd::from(input)),
        Arc::new(OwnedFd::from(output)),
    ];
    let mut sp = spawn(spec).await.unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        sp.child.stdout.take().unwrap(),
    ));
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("copied"));
    assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), b"the input");
    let guard = sp.guard.pid();
    if let Some(links) = fd_links(guard) {
        assert_eq!(links.len(), 2, "the guard kept a job file: {links:?}");
    }
    let kids = children_of(guard);
    assert_eq!(kids.len(), 1, "{kids:?}");
    if let Some(links) = fd_links(kids[0]) {
        let at = |n: i32| {
            links
                .iter()
                .find(|(fd, _)| *fd == n)
                .map(|(_, t)| t.clone())
        };
        assert!(
            at(JOB_FD_BASE).is_some_and(|t| t.ends_with("in.moved")),
            "{links:?}"
        );
        assert!(
            at(JOB_FD_BASE + 1).is_some_and(|t| t.ends_with("/out")),
            "{links:?}"
        );
        assert_eq!(at(JOB_FD_BASE + 2), None, "{links:?}");
    }
    let status = terminate(&mut sp.child, &sp.guard, DEADLINE).await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");

    // More than the guard places: refused before any fork.
    let mut spec = cmd("true", &[]);
    let null = || Arc::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
    spec.fds = (0..=MAX_JOB_FDS).map(|_| null()).collect();
    assert!(spawn(spec).await.is_err());
}

#[tokio::test]
async fn an_unrenewed_lease_kills_the_group() {
    let lease = Duration::from_millis(300);
    let start = Instant::now();
    let mut spec = cmd("sleep", &["100"]);
    spec.lease = Some(lease);
    let mut sp = spawn(spec).await.unwrap();
    let pgid = sp.guard.pgid();
    // Not through `wait`, which would kill the group itself.
    eventually("group killed at the end of its lease", || {
        !group_alive(pgid)
    })
    .await;
    assert!(start.elapsed() >= lease, "killed before its lease ran out");
    let status = wait(&mut sp.child, &sp.guard).await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
}

#[tokio::test]
async fn renewals_keep_the_job_alive_until_they_stop() {
    let mut spec = cmd("sleep", &["100"]);
    spec.lease = Some(Duration::from_millis(300));
    let mut sp = spawn(spec).await.unwrap();
    let pgid = sp.guard.pgid();
    let start = Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(50));
    while start.elapsed() < Duration::from_millis(1500) {
        every.tick().await;
        sp.guard.renew_lease(Duration::from_secs(1)).unwrap();
    }
    // Five times the initial lease later.
    assert!(group_alive(pgid), "killed although renewed");
    assert!(sp.child.try_wait().unwrap().is_none());

    let last = Instant::now();
    sp.guard.renew_lease(Duration::from_millis(300)).unwrap();
    eventually("group killed once renewals stopped", || !group_alive(pgid)).await;
    assert!(last.elapsed() >= Duration::from_millis(300), "killed early");
    let status = wait(&mut sp.child, &sp.guard).await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
}

#[tokio::test]
async fn heartbeat_eof_kills_the_group_despite_later_spawns() {
    // No lease: only the EOF can end it.
    let mut sp = spawn(cmd("sleep", &["100"])).await.unwrap();
    // The second guard is a fork of this process, made while the first
    // job's heartbeat end was open here: it must not keep a copy.
    let mut other = spawn(cmd("sleep", &["100"])).await.unwrap();
    let pgid = sp.guard.pgid();
    sp.guard.close_heartbeat();
    eventually("group killed on heartbeat EOF", || !group_alive(pgid)).await;
    let status = wait(&mut sp.child, &sp.guard).await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(sp.guard.renew_lease(Duration::from_secs(1)).is_err());

    assert!(group_alive(other.guard.pgid()), "the other job was touched");
    let status = terminate(&mut other.child, &other.guard, DEADLINE)
        .await
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
}

#[tokio::test]
async fn stdout_and_stderr_are_read_to_the_end() {
    let script = "echo out; echo err >&2; echo more";
    let mut sp = spawn(cmd("sh", &["-c", script])).await.unwrap();
    let out = sp.child.stdout.take().unwrap();
    let err = sp.child.stderr.take().unwrap();
    let (out, err) = tokio::time::timeout(DEADLINE, async {
        tokio::join!(read_all(out), read_all(err))
    })
    .await
    .expect("no EOF on the child's output");
    assert_eq!(out, "out\nmore\n");
    assert_eq!(err, "err\n");
    assert!(wait(&mut sp.child, &sp.guard).await.unwrap().success());
}

#[tokio::test]
async fn output_reaches_eof_while_another_job_still_runs() {
    let script = "echo first; exec sleep 100";
    let mut first = spawn(cmd("sh", &["-c", script])).await.unwrap();
    let mut second = spawn(cmd("sleep", &["100"])).await.unwrap();
    let stdout = first.child.stdout.take().unwrap();
    let reader = tokio::spawn(read_all(stdout));
    first.guard.signal_group(Signal::SIGTERM).unwrap();
    let out = tokio::time::timeout(DEADLINE, reader)
        .await
        .expect("first job's stdout never reached EOF")
        .unwrap();
    assert_eq!(out, "first\n");
    let status = wait(&mut first.child, &first.guard).await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert!(group_alive(second.guard.pgid()));
    assert!(second.child.try_wait().unwrap().is_none());
    terminate(&mut second.child, &second.guard, DEADLINE)
        .await
        .unwrap();
}

#[tokio::test]
async fn exec_errors_fail_the_spawn() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = spawn(cmd(script.to_str().unwrap(), &[])).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    let err = spawn(cmd("ffrtmp-no-such-program", &[])).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    let mut bad_env = cmd("true", &[]);
    bad_env.env = vec![("A=B".into(), "1".into())];
    let err = spawn(bad_env).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
}

#[test]
fn program_lookup_follows_path() {
    let sh = resolve_program(Path::new("sh"), Some(OsStr::new("/nonexistent:/bin"))).unwrap();
    assert_eq!(sh, PathBuf::from("/bin/sh"));
    let err = resolve_program(Path::new("sh"), Some(OsStr::new("/nonexistent"))).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    // With a slash: as is, unchecked (exec reports the error).
    let p = resolve_program(Path::new("./x/sh"), None).unwrap();
    assert_eq!(p, PathBuf::from("./x/sh"));
}

#[tokio::test]
async fn the_environment_is_path_plus_the_given_variables() {
    let mut spec = cmd("env", &[]);
    spec.env = vec![
        ("B".into(), "2".into()),
        ("PATH".into(), "/bin:/usr/bin".into()),
        ("B".into(), "3".into()),
    ];
    let mut sp = spawn(spec).await.unwrap();
    let out = read_all(sp.child.stdout.take().unwrap()).await;
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["B=3", "PATH=/bin:/usr/bin"]);
    assert!(wait(&mut sp.child, &sp.guard).await.unwrap().success());
}

#[tokio::test]
async fn a_dropped_child_is_reaped_once_it_exits() {
    let sp = spawn(cmd("sleep", &["100"])).await.unwrap();
    let pid = sp.guard.pid();
    // The Child goes first (to the orphans), then the guard kills the group.
    drop(sp);
    eventually("no zombie left", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    })
    .await;
}
