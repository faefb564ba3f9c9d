//! The spawner thread that forks every guard, and what it prepares before
//! the fork: the program's path, its environment, the pipes and the
//! heartbeat channel; orphaned children reaped as they exit.

use super::*;

/// Children dropped before they were reaped: reaped as they exit, so no
/// zombie is left behind.
pub(super) static ORPHANS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

pub(super) fn adopt_orphan(pid: i32) {
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
pub(super) fn reap_orphans() {
    let mut orphans = ORPHANS.lock().unwrap_or_else(|p| p.into_inner());
    // Keep only those still running (an error means not ours any more).
    orphans.retain(|&pid| matches!(reap_nohang(pid), Ok(None)));
}

/// `waitpid(pid, WNOHANG)`: the status if `pid` had exited (now reaped).
pub(super) fn reap_nohang(pid: i32) -> io::Result<Option<ExitStatus>> {
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

pub(super) struct Request {
    pub(super) spec: SpawnSpec,
    pub(super) handle: Handle,
    pub(super) reply: oneshot::Sender<io::Result<Spawned>>,
}

/// The spawner thread's request queue (started lazily, lives for the process).
pub(super) static SPAWNER: Mutex<Option<mpsc::Sender<Request>>> = Mutex::new(None);

pub(super) fn start_spawner() -> io::Result<mpsc::Sender<Request>> {
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("ffrtmp-spawner".into())
        .spawn(move || spawner_loop(rx))?;
    Ok(tx)
}

pub(super) fn spawner_loop(rx: mpsc::Receiver<Request>) {
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

/// Hands `req` to the spawner thread, starting it on first use.
pub(super) fn submit(mut req: Request) -> io::Result<()> {
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

pub(super) fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

pub(super) fn cstring(bytes: impl Into<Vec<u8>>, what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| invalid(&format!("{what} contains a NUL byte")))
}

/// The child's environment: `PATH` (the worker's), overridden or extended by
/// `env`, later entries winning.
pub(super) fn child_env(env: Vec<(OsString, OsString)>) -> io::Result<Vec<(OsString, OsString)>> {
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
pub(super) fn resolve_program(program: &Path, path: Option<&OsStr>) -> io::Result<PathBuf> {
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
pub(super) fn heartbeat_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// `now + remaining` on `CLOCK_MONOTONIC`, in ns ([`NO_DEADLINE`] if it
/// does not fit).
pub(super) fn deadline_after(remaining: Duration) -> u64 {
    let remaining = u64::try_from(remaining.as_nanos()).unwrap_or(u64::MAX);
    guard::monotonic_ns().saturating_add(remaining)
}

/// Reads the spawn status pipe to EOF: `Ok(())` when FFmpeg was exec'd, the
/// guard's or FFmpeg's errno otherwise.
pub(super) fn read_spawn_status(status: OwnedFd) -> io::Result<()> {
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
pub(super) struct ExitOnUnwind;

impl Drop for ExitOnUnwind {
    fn drop(&mut self) {
        // SAFETY: _exit(2) is always safe to call.
        unsafe { libc::_exit(127) }
    }
}

/// Runs on the spawner thread, inside the caller's runtime.
pub(super) fn spawn_now(spec: SpawnSpec) -> io::Result<Spawned> {
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
pub(super) fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// State and process group of `/proc/<pid>/stat`.
pub(super) fn proc_state_pgrp(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, pgrp))
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
