//! FFmpeg's side of the guard's `clone(CLONE_VM | CLONE_VFORK)`: default
//! signals, armed to die with the guard, then execve.

use super::*;

/// The stack of FFmpeg's side of the guard's `clone` until its execve: a
/// few frames of plain syscalls and a 512-byte log line.
pub(super) const EXEC_STACK: usize = 64 * 1024;

/// What [`exec_entry`] gets from the guard (it lives on the guard's stack,
/// which the guard does not leave while the child runs: `CLONE_VFORK`).
pub(super) struct ExecArgs<'a> {
    pub(super) plan: &'a GuardPlan,
    pub(super) guard: pid_t,
    pub(super) core: libc::rlimit,
}

/// The entry point of FFmpeg's side of the guard's `clone`.
pub(super) extern "C" fn exec_entry(arg: *mut libc::c_void) -> c_int {
    // SAFETY: `arg` is the guard's `ExecArgs`, alive until the guard resumes,
    // which is after this side has exec'd or exited (`CLONE_VFORK`).
    unsafe {
        let args = &*(arg as *const ExecArgs<'_>);
        exec_ffmpeg(args.plan, args.guard, &args.core)
    }
}

/// FFmpeg's side of the guard's `clone`: back to default signals, armed to
/// die with the guard, then exec. Never returns.
pub(super) unsafe fn exec_ffmpeg(plan: &GuardPlan, guard: pid_t, core: &libc::rlimit) -> ! {
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
