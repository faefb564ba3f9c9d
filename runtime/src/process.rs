//! Spawning and controlling FFmpeg processes (DESIGN §5).
//!
//! - argv only, never a shell; stdin null, stdout and stderr piped;
//! - the child leads its own process group (`process_group(0)`);
//! - before exec, in the child: `PR_SET_PDEATHSIG(SIGKILL)`, a check that the
//!   parent did not die already, `setpriority(nice)`, and the join of every
//!   job cgroup (`0` written into each `cgroup.procs`). Any failure fails the
//!   spawn, so a job never runs outside its cgroup, not even for a moment;
//! - every spawn happens on one long-lived thread ([`spawn`]), because
//!   `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits;
//! - a [`ProcessGuard`] owns the process group and SIGKILLs it when dropped.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::process::{Child, Command};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Polling interval where the kernel offers no pidfd (Linux < 5.3).
const EXIT_POLL: Duration = Duration::from_millis(20);

/// What to run and how.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// The executable (looked up in `PATH` when it has no slash).
    pub program: PathBuf,
    /// Arguments, passed as argv (no shell).
    pub args: Vec<OsString>,
    /// Niceness for the child (e.g. 10).
    pub nice: i32,
    /// `cgroup.procs` files the child joins before exec (from
    /// [`JobCgroup::procs_files`](crate::cgroup::JobCgroup::procs_files)).
    pub cgroup_procs: Vec<CString>,
    /// The child's whole environment besides `PATH`, which it inherits. The
    /// rest of the parent's environment (API keys among it) is not passed on.
    pub env: Vec<(OsString, OsString)>,
}

/// A running child and the guard that owns its process group.
///
/// Fields drop in order: the `Child` first (tokio reaps it later), then the
/// guard, which SIGKILLs the group unless it was marked reaped.
#[derive(Debug)]
pub struct Spawned {
    /// stdin is null; stdout and stderr are piped.
    pub child: Child,
    /// Kills the process group on drop.
    pub guard: ProcessGuard,
}

struct Request {
    spec: SpawnSpec,
    handle: Handle,
    reply: oneshot::Sender<io::Result<Spawned>>,
}

/// The spawner thread's request queue (started lazily, lives for the process).
static SPAWNER: Mutex<Option<mpsc::Sender<Request>>> = Mutex::new(None);

fn start_spawner() -> io::Result<mpsc::Sender<Request>> {
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("ffrtmp-spawner".into())
        .spawn(move || spawner_loop(rx))?;
    Ok(tx)
}

fn spawner_loop(rx: mpsc::Receiver<Request>) {
    while let Ok(req) = rx.recv() {
        let Request {
            spec,
            handle,
            reply,
        } = req;
        // A panic here would end this thread and, through PR_SET_PDEATHSIG,
        // kill every child spawned so far: contain it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _entered = handle.enter();
            spawn_now(spec)
        }))
        .unwrap_or_else(|_| Err(io::Error::other("spawn panicked")));
        // If the caller went away, the returned Spawned is dropped here and
        // its guard kills the process group.
        let _ = reply.send(result);
    }
}

/// Spawns `spec` on the process-wide spawner thread, within the caller's
/// tokio runtime (the child's I/O and reaping belong to that runtime).
///
/// Must be called from inside a tokio runtime.
pub async fn spawn(spec: SpawnSpec) -> io::Result<Spawned> {
    let handle = Handle::try_current().map_err(io::Error::other)?;
    let (reply, answer) = oneshot::channel();
    submit(Request {
        spec,
        handle,
        reply,
    })?;
    answer
        .await
        .map_err(|_| io::Error::other("spawner thread ended"))?
}

/// Hands `req` to the spawner thread, starting it on first use.
fn submit(mut req: Request) -> io::Result<()> {
    let mut spawner = SPAWNER.lock().unwrap_or_else(|p| p.into_inner());
    // Two tries: the thread never exits on its own, but if it did, start another.
    for _ in 0..2 {
        let tx = match spawner.as_ref() {
            Some(tx) => tx.clone(),
            None => {
                let tx = start_spawner()?;
                *spawner = Some(tx.clone());
                tx
            }
        };
        match tx.send(req) {
            Ok(()) => return Ok(()),
            Err(mpsc::SendError(back)) => {
                req = back;
                *spawner = None;
            }
        }
    }
    Err(io::Error::other("spawner thread unavailable"))
}

/// Runs on the spawner thread, inside the caller's runtime.
fn spawn_now(spec: SpawnSpec) -> io::Result<Spawned> {
    let parent = std::process::id() as libc::pid_t;
    let SpawnSpec {
        program,
        args,
        nice,
        cgroup_procs,
        env,
    } = spec;
    let mut cmd = Command::new(&program);
    cmd.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.envs(env);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false)
        .process_group(0);
    // SAFETY: the closure only makes async-signal-safe calls (prctl, getppid,
    // setpriority, open, write, close, _exit) on data prepared before the
    // fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || child_setup(parent, nice, &cgroup_procs));
    }
    let child = cmd.spawn()?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| io::Error::other("spawned child has no pid"))?;
    Ok(Spawned {
        child,
        guard: ProcessGuard {
            pid,
            pgid: pid,
            start_time: proc_start_time(pid),
            reaped: AtomicBool::new(false),
        },
    })
}

/// The child's side of the spawn, between fork and exec. Async-signal-safe.
fn child_setup(parent: libc::pid_t, nice: i32, procs: &[CString]) -> io::Result<()> {
    // SAFETY: plain syscalls on valid arguments; the C strings outlive the calls.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        // The parent may have died before the prctl: then nobody would kill us.
        if libc::getppid() != parent {
            libc::_exit(127);
        }
        if libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
            return Err(io::Error::last_os_error());
        }
        for path in procs {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = (n != 1).then(io::Error::last_os_error);
            libc::close(fd);
            if let Some(err) = err {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot):
/// with the pid, it identifies a process even after the pid is reused.
fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// State and process group of `/proc/<pid>/stat`.
fn proc_state_pgrp(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Owns a spawned child's process group: SIGKILLs the whole group when
/// dropped, unless [`mark_reaped`](Self::mark_reaped) was called.
#[derive(Debug)]
pub struct ProcessGuard {
    pid: i32,
    pgid: i32,
    /// The leader's start time, to tell it from a later process with its pid.
    start_time: Option<u64>,
    reaped: AtomicBool,
}

impl ProcessGuard {
    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The child's process group id (equal to its pid).
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Whether [`mark_reaped`](Self::mark_reaped) was called.
    pub fn is_reaped(&self) -> bool {
        self.reaped.load(Ordering::Acquire)
    }

    /// Sends `sig` to the whole process group.
    ///
    /// Once the leader was reaped its pgid could in principle be reused: the
    /// signal is then sent only if no *other* process now holds the leader's pid
    /// (while a member of the group lives, the kernel does not reuse the id).
    pub fn signal_group(&self, sig: Signal) -> io::Result<()> {
        if self.is_reaped() && !self.pgid_still_ours() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        signal::killpg(Pid::from_raw(self.pgid), sig).map_err(io::Error::from)
    }

    /// Records that the child was waited for (reaped). Drop then no longer
    /// signals the group, whose id may since have been reused.
    pub fn mark_reaped(&self) {
        self.reaped.store(true, Ordering::Release);
    }

    /// False when a process other than our leader now has the leader's pid.
    fn pgid_still_ours(&self) -> bool {
        match (self.start_time, proc_start_time(self.pgid)) {
            (Some(ours), Some(now)) => ours == now,
            // No process with that pid: the id is either free or still held
            // by surviving members of our group.
            (_, None) => true,
            (None, Some(_)) => false,
        }
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if !self.is_reaped() {
            let _ = signal::killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        }
    }
}

/// Waits until process `pid` (our unreaped child) has exited, without reaping
/// it, for at most `limit` (forever with `None`). Returns whether it exited.
///
/// Not reaping matters: while the leader is a zombie its pid (= the pgid)
/// cannot be reused, so the group can still be signalled safely.
async fn leader_exited(pid: i32, limit: Option<Duration>) -> bool {
    let deadline = limit.map(|l| Instant::now() + l);
    if let Some(fd) = pidfd_open(pid) {
        // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open
        // (and the same descriptor) for its whole lifetime.
        let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
        if let Ok(afd) = registered {
            let ready = afd.readable();
            return match limit {
                Some(l) => tokio::time::timeout(l, ready).await.is_ok(),
                None => ready.await.is_ok(),
            };
        }
    }
    loop {
        if exited_unreaped(pid) {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: `fd` was just returned to us and is owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether child `pid` has exited (zombie, or already reaped), leaving it unreaped.
fn exited_unreaped(pid: i32) -> bool {
    // SAFETY: waitid(2) writes into the zeroed siginfo we pass.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if r != 0 {
            // ECHILD: not (or no longer) our child.
            return true;
        }
        info.si_pid() == pid
    }
}

/// Kills whatever is left of the group once the leader has exited, then reaps
/// the leader and marks the guard reaped.
async fn finish(child: &mut Child, guard: &ProcessGuard) -> io::Result<ExitStatus> {
    if !guard.is_reaped() {
        // The leader is a zombie or still alive (SIGKILL below): the pgid is ours.
        let _ = signal::killpg(Pid::from_raw(guard.pgid()), Signal::SIGKILL);
    }
    let status = child.wait().await;
    if status.is_ok() {
        guard.mark_reaped();
    }
    status
}

/// Sends SIGTERM to the process group, waits up to `grace` for the leader to
/// exit, then SIGKILLs the group (any members still there included) and reaps
/// the leader. Marks the guard reaped. Other members of the group receive the
/// SIGKILL before this returns but may take a moment to be gone.
pub async fn terminate(
    child: &mut Child,
    guard: &ProcessGuard,
    grace: Duration,
) -> io::Result<ExitStatus> {
    if guard.is_reaped() {
        return child.wait().await;
    }
    if let Err(e) = guard.signal_group(Signal::SIGTERM) {
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    leader_exited(guard.pid(), Some(grace)).await;
    finish(child, guard).await
}

/// Waits for the child to exit on its own, then SIGKILLs what is left of its
/// process group and reaps it. Marks the guard reaped. Prefer this over
/// `child.wait()` so no group member outlives the leader.
pub async fn wait(child: &mut Child, guard: &ProcessGuard) -> io::Result<ExitStatus> {
    if guard.is_reaped() {
        return child.wait().await;
    }
    leader_exited(guard.pid(), None).await;
    finish(child, guard).await
}

/// Whether any live (non-zombie) process is in process group `pgid`.
/// Scans `/proc`; for tests and sweeps.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .and_then(proc_state_pgrp)
            .is_some_and(|(state, pgrp)| pgrp == pgid && !matches!(state, 'Z' | 'X' | 'x'))
    })
}

/// A bounded ring of the last stderr lines: at most `max_lines` lines and
/// `max_bytes` bytes in total; a line longer than `max_bytes` is truncated
/// (on a character boundary).
#[derive(Debug, Clone, Default)]
pub struct StderrRing {
    lines: std::collections::VecDeque<String>,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
}

impl StderrRing {
    /// An empty ring with the given bounds.
    pub fn new(max_lines: usize, max_bytes: usize) -> Self {
        StderrRing {
            lines: std::collections::VecDeque::new(),
            bytes: 0,
            max_lines,
            max_bytes,
        }
    }

    /// Appends a line (without its newline), evicting the oldest as needed.
    pub fn push(&mut self, line: &str) {
        if self.max_lines == 0 || self.max_bytes == 0 {
            return;
        }
        let mut end = line.len().min(self.max_bytes);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let line = &line[..end];
        while !self.lines.is_empty()
            && (self.lines.len() >= self.max_lines || self.bytes + line.len() > self.max_bytes)
        {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len();
            }
        }
        self.bytes += line.len();
        self.lines.push_back(line.to_string());
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
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
        };
        is_send(&spawn(spec));
        fn waits_are_send(child: &mut Child, guard: &ProcessGuard) {
            is_send(&terminate(child, guard, Duration::ZERO));
            is_send(&wait(child, guard));
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
}
