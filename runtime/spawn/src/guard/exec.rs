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
///
/// # Safety
///
/// Only in the child of the guard's `clone(CLONE_VM | CLONE_VFORK)`, on
/// its own stack, with the guard's plan and pid.
pub(super) unsafe fn exec_ffmpeg(plan: &GuardPlan, guard: pid_t, core: &libc::rlimit) -> ! {
    for sig in IGNORED {
        // SAFETY: in the guard's clone (this function's contract).
        unsafe { set_disposition(sig, libc::SIG_DFL) };
    }
    // SAFETY: as above.
    unsafe { unblock_all_signals() };
    // SAFETY: as above.
    if unsafe { set_pdeathsig_kill() } != 0 {
        // SAFETY: STATUS_FD is the status pipe, inherited from the guard.
        unsafe { fail(STATUS_FD, errno()) };
    }
    // SAFETY: getppid(2) cannot fail.
    if unsafe { libc::getppid() } != guard {
        // SAFETY: _exit(2) ends this side without running anything of the
        // guard's (shared) memory.
        unsafe { libc::_exit(127) };
    }
    // SAFETY: `core` points at the guard's live `rlimit` (`CLONE_VFORK`).
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, core) } != 0 {
        // SAFETY: as above.
        unsafe { fail(STATUS_FD, errno()) };
    }
    // SAFETY: this side's copy of the heartbeat end (its own descriptor
    // table), closed once.
    unsafe { libc::close(HEARTBEAT_FD) };
    // The instant FFmpeg is handed to the kernel (the guard's `start` comes
    // after it, once the guard resumes): what the dispatch-latency benchmark
    // measures up to.
    // SAFETY: in the guard's clone (this function's contract).
    unsafe { log_event(plan.run_log.as_ref(), b"exec") };
    // SAFETY: the path and the NULL-terminated argv and envp arrays point
    // into the plan's own `CString`s, alive in the guard's memory.
    unsafe {
        libc::execve(
            plan.path.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        )
    };
    // SAFETY: as above.
    unsafe { fail(STATUS_FD, errno()) }
}
