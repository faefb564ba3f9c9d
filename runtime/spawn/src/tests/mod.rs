use super::*;

#[test]
fn ring_bounds_lines_and_bytes() {
    let mut r = StderrRing::new(3, 1000);
    for i in 0..10 {
        r.push(&format!("line {i}"));
    }
    assert_eq!(r.lines(), vec!["line 7", "line 8", "line 9"]);

    let mut r = StderrRing::new(100, 10);
    r.push("aaaa");
    r.push("bbbb");
    r.push("cccc");
    assert_eq!(r.lines(), vec!["bbbb", "cccc"]);
    r.push(&"x".repeat(50));
    assert_eq!(r.lines(), vec!["x".repeat(10)]);
}

#[test]
fn ring_truncates_on_char_boundary() {
    let mut r = StderrRing::new(10, 5);
    r.push("ééé"); // 6 bytes
    assert_eq!(r.lines(), vec!["éé"]);
    let mut empty = StderrRing::new(0, 10);
    empty.push("x");
    assert!(empty.lines().is_empty());
}

#[test]
fn futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let spec = SpawnSpec {
        program: "true".into(),
        args: vec![],
        nice: 0,
        cgroup_procs: vec![],
        env: Vec::new(),
        lease: None,
        run_log: None,
        fds: Vec::new(),
    };
    is_send(&spawn(spec));
    fn waits_are_send(child: &mut Child, guard: &ProcessGuard) {
        is_send(&terminate(child, guard, Duration::ZERO));
        is_send(&wait(child, guard));
        is_send(&child.wait());
        is_send(&child.exited());
    }
    let _ = waits_are_send;
}

#[test]
fn proc_stat_parsing() {
    let me = std::process::id() as i32;
    assert!(proc_start_time(me).is_some());
    let (state, pgrp) = proc_state_pgrp(me).unwrap();
    assert_ne!(state, 'Z');
    assert_eq!(pgrp, nix::unistd::getpgrp().as_raw());
}

// ---- the guard process, with real processes ----
//
// Every test reaps or kills what it spawns (wait, terminate, or the
// ProcessGuard's drop, which SIGKILLs the group by pgid).

use std::io::BufRead;
use tokio::io::AsyncReadExt;

const DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

fn cmd(program: &str, args: &[&str]) -> SpawnSpec {
    SpawnSpec {
        program: program.into(),
        args: args.iter().map(OsString::from).collect(),
        nice: 0,
        cgroup_procs: vec![],
        env: Vec::new(),
        lease: None,
        run_log: None,
        fds: Vec::new(),
    }
}

/// Polls `cond` until it holds; fails the test after `DEADLINE`.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// (ppid, pgrp) of a process.
fn ppid_pgrp(pid: i32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    (f[1].parse().unwrap(), f[2].parse().unwrap())
}

/// Processes whose parent is `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let ppid = s[s.rfind(')')? + 1..].split_whitespace().nth(1)?;
                    Some(ppid.parse::<i32>().ok()? == pid)
                })
                .unwrap_or(false)
        })
        .collect()
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap()
        .trim_end()
        .to_string()
}

/// Targets of `/proc/<pid>/fd/*`, `None` where not readable (the guard is
/// not dumpable, so only root may look).
fn fd_links(pid: i32) -> Option<Vec<(i32, String)>> {
    let mut links: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .map(|e| {
            let fd = e.file_name().to_str().unwrap().parse().unwrap();
            let target = std::fs::read_link(e.path()).unwrap();
            (fd, target.to_string_lossy().into_owned())
        })
        .collect();
    links.sort();
    Some(links)
}

async fn read_all(mut r: pipe::Receiver) -> String {
    let mut s = String::new();
    r.read_to_string(&mut s).await.unwrap();
    s
}

/// Kills and reaps a helper process by pid, whatever happens in the test.
struct Helper(std::process::Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const HELPER_ENV: &str = "FFRTMP_TEST_FROZEN_WORKER";
const HELPER_LEASE: Duration = Duration::from_millis(500);

/// Not a test: the worker of `a_frozen_worker_loses_its_job`, run in a
/// process of its own. Spawns a job with a lease and renews it forever.
#[tokio::test]
#[ignore = "helper process of a_frozen_worker_loses_its_job"]
async fn frozen_worker_helper() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let mut spec = cmd("sleep", &["100"]);
    spec.lease = Some(HELPER_LEASE);
    let sp = spawn(spec).await.unwrap();
    println!("\nFFRTMP_GUARD_PID={}", sp.guard.pid());
    let mut every = tokio::time::interval(Duration::from_millis(50));
    loop {
        every.tick().await;
        sp.guard.renew_lease(HELPER_LEASE).unwrap();
    }
}

/// The reason for the guard: a SIGSTOPped worker cannot kill its job, but
/// its lease runs out and the guard does.
#[test]
fn a_frozen_worker_loses_its_job() {
    let exe = std::env::current_exe().unwrap();
    let child = std::process::Command::new(exe)
        .args([
            "--exact",
            "tests::frozen_worker_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut helper = Helper(child);
    let worker = helper.0.id() as i32;
    let stdout = helper.0.stdout.take().unwrap();
    let guard: i32 = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split("FFRTMP_GUARD_PID=").nth(1)?.trim().parse().ok())
        .expect("the helper did not report its job");
    assert_eq!(ppid_pgrp(guard), (worker, guard));

    // Renewed, the job outlives its lease several times over.
    let start = Instant::now();
    while start.elapsed() < HELPER_LEASE * 4 {
        assert!(group_alive(guard), "killed while the worker renewed");
        std::thread::sleep(POLL);
    }
    let kids = children_of(guard);
    assert_eq!(kids.len(), 1, "{kids:?}");

    signal::kill(Pid::from_raw(worker), Signal::SIGSTOP).unwrap();
    let frozen = Instant::now();
    while group_alive(guard) {
        assert!(
            frozen.elapsed() < DEADLINE,
            "the job outlived its frozen worker"
        );
        std::thread::sleep(POLL);
    }
    assert!(frozen.elapsed() >= HELPER_LEASE / 2, "killed too early");
    // The worker is still there, frozen: it was the lease, not its death.
    assert!(proc_state_pgrp(worker).is_some_and(|(state, _)| state == 'T'));
}

mod guard;
mod spawn_failure;
