//! The guard process: the code that runs in the child of `fork()`, without
//! `exec` (see the [module documentation](super) for why the guard exists).
//!
//! The guard is a forked copy of a multi-threaded process, so everything in
//! here must be async-signal-safe: only raw syscalls on data prepared before
//! the fork ([`GuardPlan`]). No allocation, no locks, no std I/O, no tracing,
//! and no panics (a panic allocates): no slice indexing that could go out of
//! bounds and no arithmetic that could overflow.
//!
//! Descriptors in the guard, once set up: 0, 1, 2 (`/dev/null`, the stdout and
//! stderr pipes, inherited by FFmpeg and closed in the guard right after
//! FFmpeg's execve), [`HEARTBEAT_FD`], [`STATUS_FD`] (closed then too), the
//! job's files from [`JOB_FD_BASE`] on (inherited by FFmpeg, closed in the
//! guard after its execve too) and a pidfd for FFmpeg. Every other
//! descriptor inherited from the worker is closed.
//!
//! The guard also starts a **janitor** (when the job has a cgroup): a
//! `clone(CLONE_VM)` of it on a stack of its own, in its own session, left
//! in the worker's cgroup (it is started before the guard joins the job's).
//! It holds only the guard's end of the heartbeat channel and sleeps until
//! the worker's end closes (the worker dropped the job, or died: a worker
//! SIGKILLed and never restarted included), then removes the job's cgroup
//! directories, retrying while the kernel tears the job's processes down
//! (they die with the guard: `PR_SET_PDEATHSIG`). A worker that lives
//! removes them itself, after reading the job's figures from them, before
//! it closes its end; the janitor then finds them gone. It never signals
//! anything: by then the guard's pid, the job's process group id, may
//! belong to another process.

use std::ffi::CString;
use std::ptr;

use libc::{c_char, c_int, c_uint, pid_t};

/// The guard's end of the heartbeat channel.
const HEARTBEAT_FD: c_int = 3;
/// The spawn status pipe: an errno written here fails the spawn; EOF (the
/// guard's copy closed and FFmpeg's closed by a successful exec) means success.
const STATUS_FD: c_int = 4;
/// Where the job's files (the worker's `SpawnSpec::fds`) sit in the guard
/// and in FFmpeg: `JOB_FD_BASE + i`, not close-on-exec.
pub(super) const JOB_FD_BASE: c_int = 5;
/// At most this many job files.
pub(super) const MAX_JOB_FDS: usize = 4;
/// Above every number the guard places a descriptor at: where the
/// descriptors it keeps are moved first, out of the way.
const FIRST_UNUSED_FD: c_int = JOB_FD_BASE + MAX_JOB_FDS as c_int;
/// Where `close_range(2)` is missing: close up to this many descriptors.
const MAX_FALLBACK_FDS: c_int = 1 << 20;
/// Signal numbers are 1..NSIG on Linux.
const NSIG: c_int = 65;
/// Ignored by the guard, so that what the worker sends to the job's process
/// group reaches FFmpeg but does not end the guard, and so that a terminal
/// cannot stop it. FFmpeg gets them back at their defaults.
const IGNORED: [c_int; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGPIPE,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
];
/// A deadline that never comes.
pub(super) const NO_DEADLINE: u64 = u64::MAX;
/// How often the guard looks for FFmpeg's exit where there is no pidfd.
const EXIT_POLL_MS: c_int = 20;
/// The guard's name in `/proc/<pid>/comm` (at most 15 bytes).
const NAME: &[u8] = b"ffrtmp-guard\0";
/// The janitor's name in `/proc/<pid>/comm`.
const JANITOR_NAME: &[u8] = b"ffrtmp-janitor\0";
/// The janitor's stack (a few frames of plain syscalls).
const JANITOR_STACK: usize = 64 * 1024;
/// How often, and how many times, the janitor tries to remove a cgroup
/// directory that is still busy (10 s in all); past that it leaves it to
/// the next start-up sweep of the node.
const JANITOR_POLL_MS: c_int = 20;
const JANITOR_TRIES: u32 = 500;

/// Everything the guard needs, prepared before the fork.
///
/// Holds raw pointers into its own `CString`s: build it, fork, and drop it in
/// the parent; the guard only reads it.
pub(super) struct GuardPlan {
    /// The resolved executable.
    path: CString,
    /// Owns the strings `argv_ptrs` points into.
    _argv: Vec<CString>,
    /// NULL-terminated.
    argv_ptrs: Vec<*const c_char>,
    /// Owns the strings `envp_ptrs` points into.
    _envp: Vec<CString>,
    /// NULL-terminated.
    envp_ptrs: Vec<*const c_char>,
    /// `cgroup.procs` files to join.
    cgroup_procs: Vec<CString>,
    /// The job's cgroup directories (those of `cgroup_procs`), which the
    /// janitor removes.
    cgroup_dirs: Vec<CString>,
    nice: c_int,
    /// The worker: if the guard's parent is no longer this, the worker died
    /// before `PR_SET_PDEATHSIG` was armed.
    parent: pid_t,
    /// Absolute `CLOCK_MONOTONIC` deadline in ns, or [`NO_DEADLINE`].
    deadline: u64,
    stdin: c_int,
    stdout: c_int,
    stderr: c_int,
    heartbeat: c_int,
    status: c_int,
    /// The job's files; the first `job_count` are used.
    job: [c_int; MAX_JOB_FDS],
    job_count: usize,
    run_log: Option<RunLogPlan>,
}

/// The run log as the guard writes it: a path and the line's tag, prepared
/// before the fork.
pub(super) struct RunLogPlan {
    pub path: CString,
    /// At most [`MAX_TAG`] bytes, no newline.
    pub tag: Vec<u8>,
}

/// Longest run-log tag (the line is built in a fixed stack buffer).
pub(super) const MAX_TAG: usize = 400;

/// Appends `<event> <CLOCK_MONOTONIC ns> <tag>\n` to the run log: one
/// `write(2)` on an `O_APPEND` descriptor, so lines from several processes
/// never interleave. Async-signal-safe; failures are ignored (the log is
/// evidence for tests and operators, never a reason to fail a job).
unsafe fn log_event(log: Option<&RunLogPlan>, event: &[u8]) {
    let Some(log) = log else {
        return;
    };
    let mut line = [0u8; 512];
    let mut len = 0usize;
    put(&mut line, &mut len, event);
    put(&mut line, &mut len, b" ");
    put_u64(&mut line, &mut len, monotonic_ns());
    put(&mut line, &mut len, b" ");
    put(&mut line, &mut len, &log.tag);
    put(&mut line, &mut len, b"\n");
    let fd = libc::open(
        log.path.as_ptr(),
        libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
        0o644 as c_uint,
    );
    if fd >= 0 {
        libc::write(fd, line.as_ptr().cast(), len.min(line.len()));
        libc::close(fd);
    }
}

/// Appends `bytes` to `buf` at `len`, dropping what does not fit.
fn put(buf: &mut [u8], len: &mut usize, bytes: &[u8]) {
    for &b in bytes {
        if let Some(slot) = buf.get_mut(*len) {
            *slot = b;
            *len += 1;
        }
    }
}

/// Appends `n` in decimal.
fn put_u64(buf: &mut [u8], len: &mut usize, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    while i > 0 {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    put(buf, len, digits.get(i..).unwrap_or(&[]));
}

/// The descriptors the guard receives (raw numbers in the worker; the worker
/// keeps them open until after the fork).
pub(super) struct GuardFds {
    pub stdin: c_int,
    pub stdout: c_int,
    pub stderr: c_int,
    pub heartbeat: c_int,
    pub status: c_int,
    /// The job's files, placed at `JOB_FD_BASE + i`; the first `job_count`
    /// are used (at most [`MAX_JOB_FDS`]).
    pub job: [c_int; MAX_JOB_FDS],
    pub job_count: usize,
}

/// Where and how the guard sets itself (and so FFmpeg) up.
pub(super) struct GuardSetup {
    /// `cgroup.procs` files to join.
    pub cgroup_procs: Vec<CString>,
    pub nice: c_int,
    /// The worker's pid (see [`GuardPlan`]'s `parent`).
    pub parent: pid_t,
    /// Absolute `CLOCK_MONOTONIC` deadline in ns, or [`NO_DEADLINE`].
    pub deadline: u64,
    pub run_log: Option<RunLogPlan>,
}

impl GuardPlan {
    /// `path` is executed with `argv` and exactly the environment `envp`
    /// (`NAME=value` strings).
    pub(super) fn new(
        path: CString,
        argv: Vec<CString>,
        envp: Vec<CString>,
        setup: GuardSetup,
        fds: GuardFds,
    ) -> GuardPlan {
        let argv_ptrs = nul_terminated(&argv);
        let envp_ptrs = nul_terminated(&envp);
        let cgroup_dirs = setup.cgroup_procs.iter().filter_map(parent_dir).collect();
        GuardPlan {
            path,
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            cgroup_procs: setup.cgroup_procs,
            cgroup_dirs,
            nice: setup.nice,
            parent: setup.parent,
            deadline: setup.deadline,
            stdin: fds.stdin,
            stdout: fds.stdout,
            stderr: fds.stderr,
            heartbeat: fds.heartbeat,
            status: fds.status,
            job: fds.job,
            job_count: fds.job_count.min(MAX_JOB_FDS),
            run_log: setup.run_log,
        }
    }
}

/// The directory of a `cgroup.procs` (or v1 `tasks`) file: the job's cgroup.
fn parent_dir(file: &CString) -> Option<CString> {
    let bytes = file.as_bytes();
    let slash = bytes.iter().rposition(|&b| b == b'/')?;
    let dir = bytes.get(..slash).filter(|d| !d.is_empty())?;
    CString::new(dir).ok()
}

fn nul_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

/// `CLOCK_MONOTONIC` now, in ns. Async-signal-safe; the worker uses it too, so
/// that both sides compute deadlines the same way.
pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; CLOCK_MONOTONIC
    // always exists on Linux, so it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Reports `err` on the status pipe and exits.
unsafe fn fail(status_fd: c_int, err: c_int) -> ! {
    let bytes = err.to_ne_bytes();
    libc::write(status_fd, bytes.as_ptr().cast(), bytes.len());
    libc::_exit(127)
}

/// Kills the job's whole process group (the guard leads it, so this is the
/// guard too): FFmpeg dies, and so does the guard, by SIGKILL.
unsafe fn kill_group() -> ! {
    libc::kill(0, libc::SIGKILL);
    libc::_exit(128 + libc::SIGKILL)
}

unsafe fn set_disposition(sig: c_int, handler: libc::sighandler_t) {
    let mut sa: libc::sigaction = std::mem::zeroed();
    sa.sa_sigaction = handler;
    libc::sigemptyset(&mut sa.sa_mask);
    // Fails only for SIGKILL, SIGSTOP, and the C library's internal signals.
    libc::sigaction(sig, &sa, ptr::null_mut());
}

unsafe fn unblock_all_signals() {
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
}

/// Closes every descriptor from `first` on.
unsafe fn close_from(first: c_int) {
    let first_u = c_uint::try_from(first).unwrap_or(0);
    if libc::syscall(libc::SYS_close_range, first_u, c_uint::MAX, 0 as c_uint) == 0 {
        return;
    }
    // Linux < 5.9: one close per possible descriptor.
    let mut lim: libc::rlimit = std::mem::zeroed();
    let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
        c_int::try_from(lim.rlim_cur)
            .unwrap_or(MAX_FALLBACK_FDS)
            .min(MAX_FALLBACK_FDS)
    } else {
        MAX_FALLBACK_FDS
    };
    let mut fd = first;
    while fd < max {
        libc::close(fd);
        fd += 1;
    }
}

/// The guard's life. Never returns.
///
/// # Safety
///
/// Call only in the child of `fork()`, right after it, with a plan built
/// before the fork.
pub(super) unsafe fn run(plan: &GuardPlan) -> ! {
    let mut status_fd = plan.status;

    // Lead the job's process group: the worker signals the group through us.
    if libc::setpgid(0, 0) != 0 {
        fail(status_fd, errno());
    }
    // Die with the worker's spawner thread...
    if set_pdeathsig_kill() != 0 {
        fail(status_fd, errno());
    }
    // ...which may have gone before the prctl: then nobody would kill us.
    if libc::getppid() != plan.parent {
        libc::_exit(127);
    }
    // Cosmetic; a failure changes nothing.
    libc::prctl(
        libc::PR_SET_NAME,
        NAME.as_ptr() as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
    );

    // Descriptors: first move the five we keep and the job's files above the
    // fixed numbers (any of them may currently sit on 0..FIRST_UNUSED_FD),
    // then put them in place, then close everything else inherited from the
    // worker (other jobs' pipes and heartbeat ends among it: held here, they
    // would hide EOFs).
    let mut fds = [
        plan.stdin,
        plan.stdout,
        plan.stderr,
        plan.heartbeat,
        plan.status,
    ];
    for fd in fds.iter_mut() {
        let moved = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, FIRST_UNUSED_FD);
        if moved < 0 {
            fail(status_fd, errno());
        }
        if *fd == status_fd {
            status_fd = moved;
        }
        *fd = moved;
    }
    let mut job = [-1; MAX_JOB_FDS];
    for (moved, &fd) in job.iter_mut().zip(plan.job.iter()).take(plan.job_count) {
        *moved = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, FIRST_UNUSED_FD);
        if *moved < 0 {
            fail(status_fd, errno());
        }
    }
    let [stdin, stdout, stderr, heartbeat, status] = fds;
    for (fd, target) in [(stdin, 0), (stdout, 1), (stderr, 2)] {
        if libc::dup2(fd, target) < 0 {
            fail(status_fd, errno());
        }
    }
    for (fd, target) in [(heartbeat, HEARTBEAT_FD), (status, STATUS_FD)] {
        if libc::dup3(fd, target, libc::O_CLOEXEC) < 0 {
            fail(status_fd, errno());
        }
    }
    status_fd = STATUS_FD;
    // The job's files, inheritable: FFmpeg gets them across its execve.
    let mut target = JOB_FD_BASE;
    for &fd in job.iter().take(plan.job_count) {
        if libc::dup2(fd, target) < 0 {
            fail(status_fd, errno());
        }
        target += 1;
    }
    close_from(target);

    // Before the cgroup join: the janitor stays out of the job's cgroup.
    if !plan.cgroup_dirs.is_empty() {
        start_janitor(plan);
    }

    // Join every job cgroup, so FFmpeg starts inside them.
    for path in plan.cgroup_procs.iter() {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            fail(status_fd, errno());
        }
        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
        let err = errno();
        libc::close(fd);
        if n != 1 {
            fail(status_fd, if n < 0 { err } else { libc::EIO });
        }
    }
    if libc::setpriority(libc::PRIO_PROCESS, 0, plan.nice) != 0 {
        fail(status_fd, errno());
    }

    // The guard is a copy of the worker's memory: never dump it. (RLIMIT_CORE
    // stops core files; non-dumpable also stops a piped core_pattern. exec
    // makes FFmpeg dumpable again, and it gets its RLIMIT_CORE back.)
    let mut core: libc::rlimit = std::mem::zeroed();
    if libc::getrlimit(libc::RLIMIT_CORE, &mut core) != 0 {
        fail(status_fd, errno());
    }
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: core.rlim_max,
    };
    if libc::setrlimit(libc::RLIMIT_CORE, &no_core) != 0 {
        fail(status_fd, errno());
    }
    if libc::prctl(
        libc::PR_SET_DUMPABLE,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
    ) != 0
    {
        fail(status_fd, errno());
    }

    // Signals: the worker's handlers mean nothing here (they would write to
    // descriptors that are closed or reused): defaults everywhere, then ignore
    // what the worker sends the group to stop FFmpeg.
    let mut sig = 1;
    while sig < NSIG {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            set_disposition(sig, libc::SIG_DFL);
        }
        sig += 1;
    }
    for sig in IGNORED {
        set_disposition(sig, libc::SIG_IGN);
    }
    unblock_all_signals();

    // FFmpeg's process: `clone(CLONE_VM | CLONE_VFORK)` on a stack of its
    // own, as posix_spawn does, rather than a second fork. A fork copies
    // the page tables of the guard, a copy of the whole worker (it was most
    // of the worker's spawn time: docs/BENCHMARKS.md, dispatch latency);
    // the child here shares the guard's memory until its execve, and the
    // guard sleeps until then. The child has its own descriptor table and
    // signal handlers (no CLONE_FILES, no CLONE_SIGHAND) and runs only
    // async-signal-safe code on its own stack.
    let args = ExecArgs {
        plan,
        guard: libc::getpid(),
        core,
    };
    // Left uninitialised: zeroing it would fault in (and copy, the guard's
    // memory being copy-on-write) all 16 pages for the few the child uses.
    let mut stack = std::mem::MaybeUninit::<[u8; EXEC_STACK]>::uninit();
    // The stack grows down from the (16-byte aligned) end of the buffer.
    let top = stack.as_mut_ptr().cast::<u8>().add(EXEC_STACK);
    let top = top.sub(top as usize % 16);
    let child = libc::clone(
        exec_entry,
        top.cast(),
        libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
        (&args as *const ExecArgs<'_>).cast_mut().cast(),
    );
    if child < 0 {
        fail(status_fd, errno());
    }
    // Back here once FFmpeg's side has called execve (or failed and exited).
    log_event(plan.run_log.as_ref(), b"start");
    let pidfd =
        c_int::try_from(libc::syscall(libc::SYS_pidfd_open, child, 0 as c_uint)).unwrap_or(-1);
    // The guard reads and writes nothing of the job's: only FFmpeg holds the
    // pipes now, so the worker sees EOF when FFmpeg is done with them.
    libc::close(0);
    libc::close(1);
    libc::close(2);
    let mut fd = JOB_FD_BASE;
    while fd < target {
        libc::close(fd);
        fd += 1;
    }
    // Last: with FFmpeg's copy closed by exec, this tells the worker the spawn worked.
    libc::close(STATUS_FD);
    watch(child, pidfd, plan.deadline, plan.run_log.as_ref())
}

/// Starts the janitor (see the module docs). Best effort: without one (no
/// memory for its stack, no process left), the job's cgroup is removed by
/// the worker as before, or by the node's next start-up sweep.
unsafe fn start_janitor(plan: &GuardPlan) {
    // Its own mapping, never unmapped: the janitor shares the guard's
    // memory and may outlive it (the memory lives as long as one of them).
    let stack = libc::mmap(
        ptr::null_mut(),
        JANITOR_STACK,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
        -1,
        0,
    );
    if stack == libc::MAP_FAILED {
        return;
    }
    // Page-aligned, so the top is 16-byte aligned.
    let top = stack.cast::<u8>().add(JANITOR_STACK);
    // No CLONE_FILES, no CLONE_SIGHAND: its own descriptor table and signal
    // dispositions (copies). Shared memory: it reads `plan`, which the guard
    // never frees (it never returns from `run`), and writes only its stack.
    libc::clone(
        janitor_entry,
        top.cast(),
        libc::CLONE_VM | libc::SIGCHLD,
        (plan as *const GuardPlan).cast_mut().cast(),
    );
}

/// The janitor's entry point.
extern "C" fn janitor_entry(arg: *mut libc::c_void) -> c_int {
    // SAFETY: `arg` is the guard's plan, which stays in memory for as long
    // as this process shares it (see `start_janitor`).
    unsafe { janitor(&*(arg as *const GuardPlan)) }
}

/// The janitor's life: wait for the worker's end of the heartbeat channel
/// to close, then remove the job's cgroup directories. Never returns.
///
/// It shares the guard's memory, `errno` included (same thread pointer): it
/// makes no call that can fail while the guard may still read `errno`
/// (setsid and close of open descriptors cannot; poll on a descriptor
/// cannot, with no signal handler installed). Once the channel has closed,
/// every path of the guard ends in the group's SIGKILL whatever it reads.
unsafe fn janitor(plan: &GuardPlan) -> ! {
    // Out of the job's process group: a SIGKILL of the group spares it.
    libc::setsid();
    libc::prctl(
        libc::PR_SET_NAME,
        JANITOR_NAME.as_ptr() as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
    );
    // Only the heartbeat is kept: a copy of FFmpeg's pipes or of the spawn
    // status pipe would hide their EOFs from the worker.
    libc::close(0);
    libc::close(1);
    libc::close(2);
    libc::close(STATUS_FD);
    // Nor the job's files (placed before it started, so each is open and
    // `close` cannot fail): a dead worker's janitor must not keep them open.
    let mut fd = JOB_FD_BASE;
    for _ in 0..plan.job_count {
        libc::close(fd);
        fd = fd.saturating_add(1);
    }
    // No events asked for: POLLHUP (the worker's end closed) always comes.
    loop {
        let mut fds = [libc::pollfd {
            fd: HEARTBEAT_FD,
            events: 0,
            revents: 0,
        }];
        if libc::poll(fds.as_mut_ptr(), 1, -1) > 0 {
            break;
        }
    }
    libc::close(HEARTBEAT_FD);
    let mut tries = 0;
    loop {
        let mut left = false;
        for dir in plan.cgroup_dirs.iter() {
            // Busy while a process is inside; gone if the worker removed it.
            if libc::rmdir(dir.as_ptr()) != 0 && libc::access(dir.as_ptr(), libc::F_OK) == 0 {
                left = true;
            }
        }
        if !left || tries >= JANITOR_TRIES {
            libc::_exit(0);
        }
        tries += 1;
        libc::poll(ptr::null_mut(), 0, JANITOR_POLL_MS);
    }
}

/// The stack of FFmpeg's side of the guard's `clone` until its execve: a
/// few frames of plain syscalls and a 512-byte log line.
const EXEC_STACK: usize = 64 * 1024;

/// What [`exec_entry`] gets from the guard (it lives on the guard's stack,
/// which the guard does not leave while the child runs: `CLONE_VFORK`).
struct ExecArgs<'a> {
    plan: &'a GuardPlan,
    guard: pid_t,
    core: libc::rlimit,
}

/// The entry point of FFmpeg's side of the guard's `clone`.
extern "C" fn exec_entry(arg: *mut libc::c_void) -> c_int {
    // SAFETY: `arg` is the guard's `ExecArgs`, alive until the guard resumes,
    // which is after this side has exec'd or exited (`CLONE_VFORK`).
    unsafe {
        let args = &*(arg as *const ExecArgs<'_>);
        exec_ffmpeg(args.plan, args.guard, &args.core)
    }
}

/// FFmpeg's side of the guard's `clone`: back to default signals, armed to
/// die with the guard, then exec. Never returns.
unsafe fn exec_ffmpeg(plan: &GuardPlan, guard: pid_t, core: &libc::rlimit) -> ! {
    for sig in IGNORED {
        set_disposition(sig, libc::SIG_DFL);
    }
    unblock_all_signals();
    if set_pdeathsig_kill() != 0 {
        fail(STATUS_FD, errno());
    }
    if libc::getppid() != guard {
        libc::_exit(127);
    }
    if libc::setrlimit(libc::RLIMIT_CORE, core) != 0 {
        fail(STATUS_FD, errno());
    }
    libc::close(HEARTBEAT_FD);
    // The instant FFmpeg is handed to the kernel (the guard's `start` comes
    // after it, once the guard resumes): what the dispatch-latency benchmark
    // measures up to.
    log_event(plan.run_log.as_ref(), b"exec");
    libc::execve(
        plan.path.as_ptr(),
        plan.argv_ptrs.as_ptr(),
        plan.envp_ptrs.as_ptr(),
    );
    fail(STATUS_FD, errno())
}

/// The guard's loop: enforce the deadline, kill on heartbeat EOF, relay
/// FFmpeg's exit.
unsafe fn watch(child: pid_t, pidfd: c_int, mut deadline: u64, log: Option<&RunLogPlan>) -> ! {
    // FFmpeg is dead once reaped ("stop"); a SIGKILL to the group ends it
    // within moments ("kill", logged just before).
    let stop = |status| -> ! {
        log_event(log, b"stop");
        relay(status)
    };
    let kill = || -> ! {
        log_event(log, b"kill");
        kill_group()
    };
    loop {
        // FFmpeg's exit wins over a deadline that passed in the meantime.
        if let Some(status) = reap(child) {
            stop(status);
        }
        let now = monotonic_ns();
        if now >= deadline {
            kill();
        }
        let mut timeout = if deadline == NO_DEADLINE {
            -1
        } else {
            // Rounded up, so the guard does not wake just before the deadline.
            c_int::try_from((deadline - now) / 1_000_000 + 1).unwrap_or(c_int::MAX)
        };
        if pidfd < 0 && !(0..=EXIT_POLL_MS).contains(&timeout) {
            timeout = EXIT_POLL_MS;
        }
        let mut fds = [
            libc::pollfd {
                fd: HEARTBEAT_FD,
                events: libc::POLLIN,
                revents: 0,
            },
            // A negative fd is skipped by poll.
            libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if libc::poll(fds.as_mut_ptr(), 2, timeout) < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            kill();
        }
        let [heartbeat, _] = fds;
        if heartbeat.revents != 0 {
            match read_heartbeats(deadline) {
                Some(latest) => deadline = latest,
                None => {
                    // EOF: the worker is gone, or dropped its guard.
                    if let Some(status) = reap(child) {
                        stop(status);
                    }
                    kill();
                }
            }
        }
    }
}

/// Reads every pending heartbeat; returns the latest deadline (or `current`
/// if none was pending), or `None` at EOF.
unsafe fn read_heartbeats(mut current: u64) -> Option<u64> {
    loop {
        let mut buf = [0u8; 8];
        let n = libc::recv(
            HEARTBEAT_FD,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        );
        if n == 8 {
            current = u64::from_ne_bytes(buf);
        } else if n == 0 {
            return None;
        } else if n < 0 {
            match errno() {
                libc::EINTR => {}
                libc::EAGAIN => return Some(current),
                // The channel is broken: as good as EOF.
                _ => return None,
            }
        }
        // A short message (never sent by the worker) is ignored.
    }
}

/// FFmpeg's wait status, if it has exited (reaping it).
unsafe fn reap(child: pid_t) -> Option<c_int> {
    loop {
        let mut status: c_int = 0;
        let r = libc::waitpid(child, &mut status, libc::WNOHANG);
        if r == child {
            return Some(status);
        }
        if r == 0 {
            return None;
        }
        if errno() != libc::EINTR {
            // ECHILD: FFmpeg is lost to us, so it cannot be relayed; fence.
            kill_group();
        }
    }
}

/// Ends the guard the way FFmpeg ended, so the worker reads the same status.
unsafe fn relay(status: c_int) -> ! {
    if libc::WIFEXITED(status) {
        libc::_exit(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        set_disposition(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, ptr::null_mut());
        libc::kill(libc::getpid(), sig);
        // A signal whose default is to be ignored (FFmpeg cannot have died of
        // one): the shell's convention.
        libc::_exit(128 + (sig & 0x7f));
    }
    libc::_exit(127)
}

/// `PR_SET_PDEATHSIG(SIGKILL)` for the calling process. Async-signal-safe.
unsafe fn set_pdeathsig_kill() -> libc::c_int {
    libc::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
    )
}

#[cfg(test)]
mod tests;
