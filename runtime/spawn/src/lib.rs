//! Spawning and controlling FFmpeg processes, each behind a
//! per-job guard process.
//!
//! # Why a guard
//!
//! The master reassigns a job when it loses the worker's lease. A worker that
//! is frozen (SIGSTOP, a hung VM, a debugger) cannot kill its FFmpeg, which
//! would then go on writing the job's output beside the new attempt. So every
//! job runs under a small **guard process** that fences it on its own:
//!
//! ```text
//! worker ──fork──▶ guard (leads the job's process group) ──vfork+exec──▶ FFmpeg
//!        ◀─ heartbeat channel (deadlines) ─┘
//! ```
//!
//! - the worker keeps renewing a lease ([`ProcessGuard::renew_lease`]): it
//!   sends the guard absolute `CLOCK_MONOTONIC` deadlines over a heartbeat
//!   channel. When the deadline passes, the guard SIGKILLs the whole group
//!   (FFmpeg and itself). A frozen worker renews nothing, so its jobs die;
//! - when the heartbeat channel reaches EOF (the worker died, or dropped the
//!   [`ProcessGuard`]), the guard SIGKILLs the group at once;
//! - when FFmpeg exits, the guard exits the same way (same code, or same
//!   signal), so the worker reads the same [`ExitStatus`] it would from FFmpeg.
//!
//! The guard is forked, not exec'd: the library is embedded in other
//! programs, so there is no binary of ours to run. It is therefore a copy of
//! the (multi-threaded) worker and runs only async-signal-safe code on data
//! prepared before the fork (module `guard`).
//!
//! # Spawning
//!
//! - argv only, never a shell; stdin null, stdout and stderr piped; the
//!   program is looked up in `PATH` before the fork when it has no slash, and
//!   FFmpeg's environment is exactly `PATH` plus [`SpawnSpec::env`];
//! - the guard leads its own process group; FFmpeg is in it. The worker
//!   signals the group ([`ProcessGuard::signal_group`]); the guard ignores
//!   SIGTERM, SIGINT, SIGHUP and SIGPIPE, so a SIGTERM stops FFmpeg and the
//!   guard then relays its exit;
//! - in the guard: `PR_SET_PDEATHSIG(SIGKILL)` and a check that the worker did
//!   not die already; every descriptor but its own closed (it does not exec,
//!   so it would otherwise hold other jobs' pipes open); the join of every job
//!   cgroup (`0` written into each `cgroup.procs`); `setpriority(nice)`; no
//!   core dumps. FFmpeg inherits the cgroups and the niceness, and arms its
//!   own `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with the guard. Any failure,
//!   the exec's included, fails the spawn, so a job never runs outside its
//!   cgroup, not even for a moment;
//! - every spawn happens on one long-lived thread ([`spawn`]), because
//!   `PR_SET_PDEATHSIG` fires when the *thread* that forked the guard exits;
//! - a [`ProcessGuard`] owns the process group and SIGKILLs it when dropped
//!   (and closes the heartbeat channel, which makes the guard do the same);
//! - the pid of [`Child`] and [`ProcessGuard`] is the guard's; it is also the
//!   process group id.

mod guard;

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{self, Signal};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::sys::wait::{self, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::unix::pipe;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use ffrtmp_runtime::model::{Failure, FailureReason, Outcome};
use guard::{GuardFds, GuardPlan, GuardSetup, RunLogPlan, NO_DEADLINE};

/// Polling interval where the kernel offers no pidfd (Linux < 5.3).
const EXIT_POLL: Duration = Duration::from_millis(20);
/// `PATH` for the lookup when the worker has none (as `execvp`).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

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
    /// [`JobCgroup::procs_files`](ffrtmp_os::cgroup::JobCgroup::procs_files)).
    pub cgroup_procs: Vec<CString>,
    /// The child's whole environment besides `PATH`, which it inherits. The
    /// rest of the parent's environment (API keys among it) is not passed on.
    pub env: Vec<(OsString, OsString)>,
    /// The initial lease: the guard kills the job this long after the spawn
    /// unless [`ProcessGuard::renew_lease`] extends it. `None`: no deadline;
    /// the guard then kills the job only when the worker goes away.
    pub lease: Option<Duration>,
    /// Record when FFmpeg starts and stops (see [`RunLog`]).
    pub run_log: Option<RunLog>,
    /// Descriptors FFmpeg inherits, the `i`th at number
    /// [`JOB_FD_BASE`]` + i` (at most [`MAX_JOB_FDS`]): the job's input and
    /// output as the worker opened them (`ffrtmp_os::confine`). The guard
    /// closes its copies once FFmpeg has exec'd.
    pub fds: Vec<Arc<OwnedFd>>,
}

/// The descriptor number in FFmpeg of the first of [`SpawnSpec::fds`]
/// (0–2 are stdio; 3 and 4 are the guard's own, close-on-exec).
pub const JOB_FD_BASE: i32 = guard::JOB_FD_BASE;
/// At most this many [`SpawnSpec::fds`].
pub const MAX_JOB_FDS: usize = guard::MAX_JOB_FDS;

/// A file where the guard process itself appends `start` (FFmpeg forked),
/// `stop` (FFmpeg reaped) and `kill` (the group SIGKILLed) lines, and FFmpeg's
/// side of the guard's fork an `exec` line right before `execve(2)` (it may
/// come before or after `start`): `<event> <CLOCK_MONOTONIC ns> <tag>`. Written by the guard, it holds even when the worker is frozen
/// or killed — the evidence the chaos suite checks "never two copies at
/// once" against. The worker adds an `exit` line when it reaps the guard
/// ([`append_run_log`]). Lines are whole (one `O_APPEND` write each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLog {
    pub path: PathBuf,
    /// Names the attempt, e.g. `<job id> <token>`; at most 400 bytes, no newline.
    pub tag: String,
}

/// `CLOCK_MONOTONIC` now, in ns: the run log's clock (comparable between
/// processes on one machine).
pub fn monotonic_ns() -> u64 {
    guard::monotonic_ns()
}

/// Appends `<event> <monotonic ns> <tag>` to a run log from the worker.
pub fn append_run_log(log: &RunLog, event: &str) -> io::Result<()> {
    use std::io::Write;
    let line = format!("{event} {} {}\n", monotonic_ns(), log.tag);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log.path)?
        .write_all(line.as_bytes())
}

/// A running child and the guard that owns its process group.
///
/// Fields drop in order: the [`Child`] first (if it was not reaped, it is
/// reaped in the background once it exits), then the [`ProcessGuard`], which
/// SIGKILLs the group unless it was marked reaped, and closes the heartbeat
/// channel, so the guard process kills the group too.
#[derive(Debug)]
pub struct Spawned {
    /// stdin is null; stdout and stderr are piped.
    pub child: Child,
    /// Kills the process group on drop.
    pub guard: ProcessGuard,
}

/// The worker's handle on a spawned job: the guard process (whose exit
/// status is FFmpeg's) and FFmpeg's output pipes.
///
/// Reap it with [`wait`] or [`terminate`] (or [`Child::wait`]). Dropped
/// unreaped, it is reaped in the background once it exits.
#[derive(Debug)]
pub struct Child {
    pid: i32,
    /// Set once reaped.
    status: Option<ExitStatus>,
    /// FFmpeg's stdout (non-blocking; read it with tokio).
    pub stdout: Option<pipe::Receiver>,
    /// FFmpeg's stderr (non-blocking; read it with tokio).
    pub stderr: Option<pipe::Receiver>,
}

impl Child {
    /// The guard process's pid (= the job's process group id).
    pub fn id(&self) -> i32 {
        self.pid
    }

    /// Waits until the process has exited, without reaping it (so its pid,
    /// the group id, stays ours).
    pub async fn exited(&self) {
        if self.status.is_none() {
            leader_exited(self.pid, None).await;
        }
    }

    /// Reaps the process if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = reap_nohang(self.pid)?;
        }
        Ok(self.status)
    }

    /// Waits for the process to exit and reaps it. Signals nothing: prefer
    /// [`wait`], which also kills what is left of the group.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            leader_exited(self.pid, None).await;
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            // Exited but not reapable yet (should not happen): do not spin.
            tokio::time::sleep(EXIT_POLL).await;
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            adopt_orphan(self.pid);
        }
    }
}

/// Children dropped before they were reaped: reaped as they exit, so no
/// zombie is left behind.
static ORPHANS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn adopt_orphan(pid: i32) {
    ORPHANS.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
    reap_orphans();
    // Within a runtime, reap it as soon as it exits; otherwise at the next spawn.
    if let Ok(handle) = Handle::try_current() {
        handle.spawn(async move {
            leader_exited(pid, None).await;
            reap_orphans();
        });
    }
}

/// Reaps every orphan that has exited.
fn reap_orphans() {
    let mut orphans = ORPHANS.lock().unwrap_or_else(|p| p.into_inner());
    // Keep only those still running (an error means not ours any more).
    orphans.retain(|&pid| matches!(reap_nohang(pid), Ok(None)));
}

/// `waitpid(pid, WNOHANG)`: the status if `pid` had exited (now reaped).
fn reap_nohang(pid: i32) -> io::Result<Option<ExitStatus>> {
    loop {
        match wait::waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => {
                return Ok(Some(ExitStatus::from_raw((code & 0xff) << 8)))
            }
            Ok(WaitStatus::Signaled(_, sig, core)) => {
                return Ok(Some(ExitStatus::from_raw(
                    sig as i32 | if core { 0x80 } else { 0 },
                )))
            }
            // Not exited (WNOHANG), or stopped/continued: not an exit.
            Ok(_) => return Ok(None),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
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
        // Within the caller's runtime: the pipes register with its reactor, and
        // an unwanted result is dropped (and reaped) there.
        let _entered = handle.enter();
        // A panic here would end this thread and, through PR_SET_PDEATHSIG,
        // kill every guard spawned so far: contain it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| spawn_now(spec)))
            .unwrap_or_else(|_| Err(io::Error::other("spawn panicked")));
        // If the caller went away, the returned Spawned is dropped here and
        // its guard kills the process group.
        let _ = reply.send(result);
    }
}

/// Spawns `spec` on the process-wide spawner thread, within the caller's
/// tokio runtime (the child's I/O and reaping belong to that runtime).
///
/// Returns once FFmpeg was exec'd (or failed to be: the exec's error, e.g.
/// `NotFound`, is the spawn's).
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

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

fn cstring(bytes: impl Into<Vec<u8>>, what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| invalid(&format!("{what} contains a NUL byte")))
}

/// The child's environment: `PATH` (the worker's), overridden or extended by
/// `env`, later entries winning.
fn child_env(env: Vec<(OsString, OsString)>) -> io::Result<Vec<(OsString, OsString)>> {
    let mut vars: Vec<(OsString, OsString)> = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        vars.push(("PATH".into(), path));
    }
    for (name, value) in env {
        if name.is_empty() || name.as_bytes().contains(&b'=') {
            return Err(invalid(&format!("bad environment variable name {name:?}")));
        }
        match vars.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => vars.push((name, value)),
        }
    }
    Ok(vars)
}

/// Where `execvp` would find `program`: as is when it has a slash, else the
/// first executable regular file of that name in `path` (`:`-separated; an
/// empty entry is the current directory).
fn resolve_program(program: &Path, path: Option<&OsStr>) -> io::Result<PathBuf> {
    let name = program.as_os_str().as_bytes();
    if name.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "empty program name",
        ));
    }
    if name.contains(&b'/') {
        return Ok(program.to_path_buf());
    }
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    path.as_bytes()
        .split(|&b| b == b':')
        .map(|dir| {
            if dir.is_empty() {
                Path::new(".").join(program)
            } else {
                Path::new(OsStr::from_bytes(dir)).join(program)
            }
        })
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} not found in PATH", program.display()),
            )
        })
}

/// A pipe, both ends close-on-exec: (read end, write end). A child gets
/// an end only as one of its [`SpawnSpec::fds`].
pub fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// The heartbeat channel: a socket pair rather than a pipe, so that the
/// worker can write with `MSG_NOSIGNAL` (a pipe whose guard is gone would
/// SIGPIPE the whole embedding program) and every deadline is one message.
fn heartbeat_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// `now + remaining` on `CLOCK_MONOTONIC`, in ns ([`NO_DEADLINE`] if it
/// does not fit).
fn deadline_after(remaining: Duration) -> u64 {
    let remaining = u64::try_from(remaining.as_nanos()).unwrap_or(u64::MAX);
    guard::monotonic_ns().saturating_add(remaining)
}

/// Reads the spawn status pipe to EOF: `Ok(())` when FFmpeg was exec'd, the
/// guard's or FFmpeg's errno otherwise.
fn read_spawn_status(status: OwnedFd) -> io::Result<()> {
    let mut file = std::fs::File::from(status);
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    match got {
        0 => Ok(()),
        4 => Err(io::Error::from_raw_os_error(i32::from_ne_bytes(buf))),
        _ => Err(io::Error::other("malformed spawn status from the guard")),
    }
}

/// In the guard process: ends it if a panic unwinds (`guard::run` never
/// returns, so the drop runs only then).
struct ExitOnUnwind;

impl Drop for ExitOnUnwind {
    fn drop(&mut self) {
        // SAFETY: _exit(2) is always safe to call.
        unsafe { libc::_exit(127) }
    }
}

/// Runs on the spawner thread, inside the caller's runtime.
fn spawn_now(spec: SpawnSpec) -> io::Result<Spawned> {
    reap_orphans();
    let parent = libc::pid_t::try_from(std::process::id())
        .map_err(|_| io::Error::other("pid out of range"))?;
    let SpawnSpec {
        program,
        args,
        nice,
        cgroup_procs,
        env,
        lease,
        run_log,
        fds: job_fds,
    } = spec;
    if job_fds.len() > MAX_JOB_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("at most {MAX_JOB_FDS} descriptors can be passed to a job"),
        ));
    }
    let mut job = [-1; MAX_JOB_FDS];
    for (slot, fd) in job.iter_mut().zip(&job_fds) {
        *slot = fd.as_raw_fd();
    }
    let run_log = match run_log {
        Some(RunLog { path, tag }) => {
            if tag.len() > guard::MAX_TAG || tag.contains('\n') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "run log tag too long or has a newline",
                ));
            }
            Some(RunLogPlan {
                path: cstring(path.into_os_string().into_vec(), "run log path")?,
                tag: tag.into_bytes(),
            })
        }
        None => None,
    };

    let env = child_env(env)?;
    let path_var = env
        .iter()
        .find(|(n, _)| n == "PATH")
        .map(|(_, v)| v.as_os_str());
    let resolved = resolve_program(&program, path_var)?;
    let path = cstring(resolved.into_os_string().into_vec(), "program")?;
    let mut argv = vec![cstring(program.into_os_string().into_vec(), "program")?];
    for arg in args {
        argv.push(cstring(arg.into_vec(), "argument")?);
    }
    let envp = env
        .into_iter()
        .map(|(name, value)| {
            let mut entry = name.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            cstring(entry, "environment")
        })
        .collect::<io::Result<Vec<_>>>()?;

    // Every descriptor is close-on-exec in the worker: another thread's
    // fork+exec must not carry them off.
    let stdin = OwnedFd::from(std::fs::File::open("/dev/null")?);
    let (stdout_r, stdout_w) = pipe_cloexec()?;
    let (stderr_r, stderr_w) = pipe_cloexec()?;
    let (heartbeat, heartbeat_guard) = heartbeat_pair()?;
    let (status_r, status_w) = pipe_cloexec()?;

    let plan = GuardPlan::new(
        path,
        argv,
        envp,
        GuardSetup {
            cgroup_procs,
            nice,
            parent,
            deadline: lease.map_or(NO_DEADLINE, deadline_after),
            run_log,
        },
        GuardFds {
            stdin: stdin.as_raw_fd(),
            stdout: stdout_w.as_raw_fd(),
            stderr: stderr_w.as_raw_fd(),
            heartbeat: heartbeat_guard.as_raw_fd(),
            status: status_w.as_raw_fd(),
            job,
            job_count: job_fds.len(),
        },
    );
    // SAFETY: fork(2). The child runs only guard::run, which is
    // async-signal-safe, reads only `plan` (built above) and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // guard::run cannot panic by construction; should it anyway, the
        // unwinding must not return into this copy of the spawner's frames.
        let _exit_on_unwind = ExitOnUnwind;
        // SAFETY: we are the child of the fork above.
        unsafe { guard::run(&plan) }
    }
    drop(plan);
    drop((
        stdin,
        stdout_w,
        stderr_w,
        heartbeat_guard,
        status_w,
        job_fds,
    ));

    if let Err(err) = read_spawn_status(status_r) {
        // SAFETY: `pid` is our unreaped child; kill and waitpid on it.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            let mut status = 0;
            while libc::waitpid(pid, &mut status, 0) < 0
                && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
            {}
        }
        return Err(err);
    }
    // From here on the guard leads its group and FFmpeg runs. Build the
    // handles first, so that an error below drops them and kills the group.
    let guard = ProcessGuard {
        pid,
        pgid: pid,
        start_time: proc_start_time(pid),
        reaped: AtomicBool::new(false),
        heartbeat: Some(heartbeat),
    };
    let mut child = Child {
        pid,
        status: None,
        stdout: None,
        stderr: None,
    };
    child.stdout = Some(pipe::Receiver::from_owned_fd(stdout_r)?);
    child.stderr = Some(pipe::Receiver::from_owned_fd(stderr_r)?);
    Ok(Spawned { child, guard })
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

/// Owns a spawned job's process group: SIGKILLs the whole group when
/// dropped, unless [`mark_reaped`](Self::mark_reaped) was called; and holds
/// the worker's end of the heartbeat channel, whose closing (on drop, or when
/// the worker dies) makes the guard process kill the group as well.
#[derive(Debug)]
pub struct ProcessGuard {
    pid: i32,
    pgid: i32,
    /// The leader's start time, to tell it from a later process with its pid.
    start_time: Option<u64>,
    reaped: AtomicBool,
    /// The worker's end of the heartbeat channel (non-blocking writes).
    heartbeat: Option<OwnedFd>,
}

impl ProcessGuard {
    /// The guard process's pid (it leads the group; FFmpeg is its child).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The job's process group id (equal to the guard process's pid).
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

    /// Moves the lease's deadline to `remaining` from now (`CLOCK_MONOTONIC`):
    /// the guard process SIGKILLs the group if the deadline passes before the
    /// next renewal. A `remaining` too large to represent means no deadline.
    ///
    /// Never blocks. Errors need not fail the job (its exit is reported by
    /// [`wait`] as usual), only be noted:
    /// - `WouldBlock`: the channel is full, because the guard process is not
    ///   reading it (stopped); the previous deadline stands;
    /// - `BrokenPipe` (or another error): the guard process has exited (the
    ///   job is over or being killed).
    pub fn renew_lease(&self, remaining: Duration) -> io::Result<()> {
        let fd = self
            .heartbeat
            .as_ref()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        let msg = deadline_after(remaining).to_ne_bytes();
        // MSG_NOSIGNAL turns a gone reader into EPIPE instead of SIGPIPE.
        match socket::send(
            fd.as_raw_fd(),
            &msg,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(sent) if sent == msg.len() => Ok(()),
            // A datagram goes whole or not at all.
            Ok(_) => Err(io::Error::other("short heartbeat write")),
            Err(e) => Err(e.into()),
        }
    }

    /// Closes the worker's end of the heartbeat channel, as if the worker had
    /// died, leaving everything else as it is.
    #[cfg(test)]
    fn close_heartbeat(&mut self) {
        self.heartbeat = None;
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
        // The heartbeat end closes after this: the guard process, if the
        // SIGKILL somehow missed it, sees EOF and kills the group itself.
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
        // (and the same descriptor) for its whole lifetime (tokio's safe
        // `with_interest` is deprecated as unsound for that reason).
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
    match wait::waitid(
        wait::Id::Pid(Pid::from_raw(pid)),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
    ) {
        // Nothing to report yet: still running.
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        // ECHILD: not (or no longer) our child.
        Err(_) => true,
    }
}

/// Kills whatever is left of the group once the leader has exited, then reaps
/// the leader and marks the guard reaped.
async fn finish(child: &mut Child, guard: &ProcessGuard) -> io::Result<ExitStatus> {
    if !guard.is_reaped() && child.status.is_none() {
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
///
/// The guard process ignores the SIGTERM; it exits, relaying FFmpeg's status,
/// once FFmpeg has.
pub async fn terminate(
    child: &mut Child,
    guard: &ProcessGuard,
    grace: Duration,
) -> io::Result<ExitStatus> {
    if guard.is_reaped() || child.status.is_some() {
        return finish(child, guard).await;
    }
    if let Err(e) = guard.signal_group(Signal::SIGTERM) {
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    leader_exited(child.id(), Some(grace)).await;
    finish(child, guard).await
}

/// Waits for the child to exit on its own, then SIGKILLs what is left of its
/// process group and reaps it. Marks the guard reaped. Prefer this over
/// [`Child::wait`] so no group member outlives the leader.
pub async fn wait(child: &mut Child, guard: &ProcessGuard) -> io::Result<ExitStatus> {
    if !guard.is_reaped() && child.status.is_none() {
        leader_exited(child.id(), None).await;
    }
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

/// The outcome of an attempt whose FFmpeg could not be started: transient
/// ([`ffrtmp_runtime::model::FailureReason::NodeExhausted`]) when the node itself ran out of
/// descriptors, processes or memory (`EMFILE`, `ENFILE`, `EAGAIN`,
/// `ENOMEM`), since the job would start elsewhere or later; terminal
/// ([`ffrtmp_runtime::model::FailureReason::SpawnFailed`]) otherwise (no such program, not
/// executable, a bad argument: a retry would fail the same way).
pub fn spawn_failed(err: &std::io::Error) -> Outcome {
    let exhausted = matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM)
    );
    if exhausted {
        Outcome::Transient {
            failure: Failure::new(
                FailureReason::NodeExhausted,
                format!("could not start ffmpeg, the node is out of resources: {err}"),
            ),
        }
    } else {
        Outcome::Failed {
            failure: Failure::new(
                FailureReason::SpawnFailed,
                format!("could not start ffmpeg: {err}"),
            ),
        }
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
}

#[cfg(test)]
mod spawn_failure_tests {
    use super::*;
    use ffrtmp_runtime::model::FailureReason;

    fn reason(errno: i32) -> (bool, FailureReason) {
        match spawn_failed(&std::io::Error::from_raw_os_error(errno)) {
            Outcome::Transient { failure } => (true, failure.reason),
            Outcome::Failed { failure } => (false, failure.reason),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_nodes_own_exhaustion_is_transient() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::EAGAIN, libc::ENOMEM] {
            assert_eq!(
                reason(errno),
                (true, FailureReason::NodeExhausted),
                "{errno}"
            );
            assert!(FailureReason::NodeExhausted.is_transient());
        }
    }

    #[test]
    fn other_spawn_errors_stay_terminal() {
        for errno in [
            libc::ENOENT,
            libc::EACCES,
            libc::ENOEXEC,
            libc::EINVAL,
            libc::E2BIG,
        ] {
            assert_eq!(
                reason(errno),
                (false, FailureReason::SpawnFailed),
                "{errno}"
            );
        }
        let no_errno = spawn_failed(&std::io::Error::other("spawner thread ended"));
        assert!(matches!(no_errno, Outcome::Failed { .. }), "{no_errno:?}");
        assert!(!FailureReason::ProbeTimeout.is_transient());
    }
}
