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
mod exec;
mod janitor;
mod sys;
mod watch;

use exec::*;
use janitor::*;
pub(super) use sys::monotonic_ns;
use sys::*;
use watch::*;

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

/// The guard's life. Never returns.
///
/// # Safety
///
/// Call only in the child of `fork()`, right after it, with a plan built
/// before the fork.
pub(super) unsafe fn run(plan: &GuardPlan) -> ! {
    let mut status_fd = plan.status;
    // Reports errno on `status_fd` and exits.
    let fail_errno = |status_fd: c_int| -> ! {
        // SAFETY: in the guard (this function's contract); `status_fd` is its
        // end of the status pipe.
        unsafe { fail(status_fd, errno()) }
    };

    // Lead the job's process group: the worker signals the group through us.
    // SAFETY: setpgid(2) with integer arguments, on the guard itself.
    if unsafe { libc::setpgid(0, 0) } != 0 {
        fail_errno(status_fd);
    }
    // Die with the worker's spawner thread...
    // SAFETY: in the guard (this function's contract).
    if unsafe { set_pdeathsig_kill() } != 0 {
        fail_errno(status_fd);
    }
    // ...which may have gone before the prctl: then nobody would kill us.
    // SAFETY: getppid(2) cannot fail.
    if unsafe { libc::getppid() } != plan.parent {
        // SAFETY: _exit(2) ends the guard without running anything of the
        // forked copy of the worker (no destructors, no atexit handlers).
        unsafe { libc::_exit(127) };
    }
    // Cosmetic; a failure changes nothing.
    // SAFETY: NAME is a NUL-terminated static string.
    unsafe {
        libc::prctl(
            libc::PR_SET_NAME,
            NAME.as_ptr() as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };

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
        // SAFETY: fcntl(2) F_DUPFD_CLOEXEC on a descriptor the worker kept
        // open across the fork for the guard.
        let moved = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, FIRST_UNUSED_FD) };
        if moved < 0 {
            fail_errno(status_fd);
        }
        if *fd == status_fd {
            status_fd = moved;
        }
        *fd = moved;
    }
    let mut job = [-1; MAX_JOB_FDS];
    for (moved, &fd) in job.iter_mut().zip(plan.job.iter()).take(plan.job_count) {
        // SAFETY: as above, for the job's files.
        *moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, FIRST_UNUSED_FD) };
        if *moved < 0 {
            fail_errno(status_fd);
        }
    }
    let [stdin, stdout, stderr, heartbeat, status] = fds;
    for (fd, target) in [(stdin, 0), (stdout, 1), (stderr, 2)] {
        // SAFETY: dup2(2) of the guard's own copies onto 0, 1 and 2, which
        // the guard owns after the fork.
        if unsafe { libc::dup2(fd, target) } < 0 {
            fail_errno(status_fd);
        }
    }
    for (fd, target) in [(heartbeat, HEARTBEAT_FD), (status, STATUS_FD)] {
        // SAFETY: as above, onto the fixed numbers, all below the moved
        // copies.
        if unsafe { libc::dup3(fd, target, libc::O_CLOEXEC) } < 0 {
            fail_errno(status_fd);
        }
    }
    status_fd = STATUS_FD;
    // The job's files, inheritable: FFmpeg gets them across its execve.
    let mut target = JOB_FD_BASE;
    for &fd in job.iter().take(plan.job_count) {
        // SAFETY: as above.
        if unsafe { libc::dup2(fd, target) } < 0 {
            fail_errno(status_fd);
        }
        target += 1;
    }
    // SAFETY: in the guard; everything from `target` on is a copy of the
    // worker's descriptors, which the guard must not hold.
    unsafe { close_from(target) };

    // Before the cgroup join: the janitor stays out of the job's cgroup.
    if !plan.cgroup_dirs.is_empty() {
        // SAFETY: in the guard, with the plan `run` was given.
        unsafe { start_janitor(plan) };
    }

    // Join every job cgroup, so FFmpeg starts inside them.
    for path in plan.cgroup_procs.iter() {
        // SAFETY: `path` is a NUL-terminated string of the plan.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            fail_errno(status_fd);
        }
        // SAFETY: writes 1 byte from a static string to the file just opened.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        let err = errno();
        // SAFETY: `fd` was opened above and is closed once.
        unsafe { libc::close(fd) };
        if n != 1 {
            // SAFETY: as `fail_errno`, with the write's error.
            unsafe { fail(status_fd, if n < 0 { err } else { libc::EIO }) };
        }
    }
    // SAFETY: setpriority(2) with integer arguments, on the guard itself.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, plan.nice) } != 0 {
        fail_errno(status_fd);
    }

    // The guard is a copy of the worker's memory: never dump it. (RLIMIT_CORE
    // stops core files; non-dumpable also stops a piped core_pattern. exec
    // makes FFmpeg dumpable again, and it gets its RLIMIT_CORE back.)
    // SAFETY: `rlimit` is plain data, for which all zeroes is valid.
    let mut core: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit(2) writes into `core`, a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut core) } != 0 {
        fail_errno(status_fd);
    }
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: core.rlim_max,
    };
    // SAFETY: setrlimit(2) reads `no_core`, a live local.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) } != 0 {
        fail_errno(status_fd);
    }
    // SAFETY: prctl(2) with integer arguments only.
    let dumpable = unsafe {
        libc::prctl(
            libc::PR_SET_DUMPABLE,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if dumpable != 0 {
        fail_errno(status_fd);
    }

    // Signals: the worker's handlers mean nothing here (they would write to
    // descriptors that are closed or reused): defaults everywhere, then ignore
    // what the worker sends the group to stop FFmpeg.
    let mut sig = 1;
    while sig < NSIG {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: in the guard (this function's contract).
            unsafe { set_disposition(sig, libc::SIG_DFL) };
        }
        sig += 1;
    }
    for sig in IGNORED {
        // SAFETY: as above.
        unsafe { set_disposition(sig, libc::SIG_IGN) };
    }
    // SAFETY: as above.
    unsafe { unblock_all_signals() };

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
        // SAFETY: getpid(2) cannot fail.
        guard: unsafe { libc::getpid() },
        core,
    };
    // Left uninitialised: zeroing it would fault in (and copy, the guard's
    // memory being copy-on-write) all 16 pages for the few the child uses.
    let mut stack = std::mem::MaybeUninit::<[u8; EXEC_STACK]>::uninit();
    // The stack grows down from the (16-byte aligned) end of the buffer.
    // SAFETY: one past the end of `stack`, a live local of EXEC_STACK bytes.
    let top = unsafe { stack.as_mut_ptr().cast::<u8>().add(EXEC_STACK) };
    // SAFETY: moves down by less than 16 bytes, staying inside `stack`.
    let top = unsafe { top.sub(top as usize % 16) };
    // SAFETY: `top` is the top of a stack of the child's own that outlives
    // it (CLONE_VFORK: the guard waits here until the child's execve or
    // exit); `exec_entry` gets `args`, alive on the guard's stack as long.
    let child = unsafe {
        libc::clone(
            exec_entry,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&args as *const ExecArgs<'_>).cast_mut().cast(),
        )
    };
    if child < 0 {
        fail_errno(status_fd);
    }
    // Back here once FFmpeg's side has called execve (or failed and exited).
    // SAFETY: in the guard (this function's contract).
    unsafe { log_event(plan.run_log.as_ref(), b"start") };
    // SAFETY: pidfd_open(2) takes a pid and flags.
    let pidfd = c_int::try_from(unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0 as c_uint) })
        .unwrap_or(-1);
    // The guard reads and writes nothing of the job's: only FFmpeg holds the
    // pipes now, so the worker sees EOF when FFmpeg is done with them.
    // SAFETY (these closes): the guard's own descriptors, each closed once.
    unsafe { libc::close(0) };
    // SAFETY: as above.
    unsafe { libc::close(1) };
    // SAFETY: as above.
    unsafe { libc::close(2) };
    let mut fd = JOB_FD_BASE;
    while fd < target {
        // SAFETY: as above.
        unsafe { libc::close(fd) };
        fd += 1;
    }
    // Last: with FFmpeg's copy closed by exec, this tells the worker the spawn worked.
    // SAFETY: as above.
    unsafe { libc::close(STATUS_FD) };
    // SAFETY: in the guard; `child` is FFmpeg and `pidfd` its pidfd (or -1).
    unsafe { watch(child, pidfd, plan.deadline, plan.run_log.as_ref()) }
}

#[cfg(test)]
mod tests;
