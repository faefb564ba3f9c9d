//! The janitor: removes the job's cgroup directories once the worker's
//! end of the heartbeat channel closes (module docs of `guard`).

use super::*;

/// Starts the janitor (see the module docs). Best effort: without one (no
/// memory for its stack, no process left), the job's cgroup is removed by
/// the worker as before, or by the node's next start-up sweep.
///
/// # Safety
///
/// Only in the guard, from `run`, with the plan `run` was given (the
/// janitor reads it for as long as it lives).
pub(super) unsafe fn start_janitor(plan: &GuardPlan) {
    // Its own mapping, never unmapped: the janitor shares the guard's
    // memory and may outlive it (the memory lives as long as one of them).
    // SAFETY: a fresh anonymous mapping (no address asked for, no file).
    let stack = unsafe {
        libc::mmap(
            ptr::null_mut(),
            JANITOR_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return;
    }
    // Page-aligned, so the top is 16-byte aligned.
    // SAFETY: one past the end of the JANITOR_STACK bytes just mapped.
    let top = unsafe { stack.cast::<u8>().add(JANITOR_STACK) };
    // No CLONE_FILES, no CLONE_SIGHAND: its own descriptor table and signal
    // dispositions (copies). Shared memory: it reads `plan`, which the guard
    // never frees (it never returns from `run`), and writes only its stack.
    // SAFETY: `top` is the top of a stack of its own; `janitor_entry` gets
    // the plan, alive for as long as the janitor shares this memory.
    unsafe {
        libc::clone(
            janitor_entry,
            top.cast(),
            libc::CLONE_VM | libc::SIGCHLD,
            (plan as *const GuardPlan).cast_mut().cast(),
        )
    };
}

/// The janitor's entry point.
pub(super) extern "C" fn janitor_entry(arg: *mut libc::c_void) -> c_int {
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
///
/// # Safety
///
/// Only in the janitor's clone of the guard, on its own stack.
pub(super) unsafe fn janitor(plan: &GuardPlan) -> ! {
    // Out of the job's process group: a SIGKILL of the group spares it.
    // SAFETY: setsid(2) takes nothing; it cannot fail here (the janitor
    // leads no group).
    unsafe { libc::setsid() };
    // SAFETY: JANITOR_NAME is a NUL-terminated static string.
    unsafe {
        libc::prctl(
            libc::PR_SET_NAME,
            JANITOR_NAME.as_ptr() as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    // Only the heartbeat is kept: a copy of FFmpeg's pipes or of the spawn
    // status pipe would hide their EOFs from the worker.
    // SAFETY (the four closes): the janitor's own copies of the guard's
    // descriptors (no CLONE_FILES), each closed once.
    unsafe { libc::close(0) };
    // SAFETY: as above.
    unsafe { libc::close(1) };
    // SAFETY: as above.
    unsafe { libc::close(2) };
    // SAFETY: as above.
    unsafe { libc::close(STATUS_FD) };
    // Nor the job's files (placed before it started, so each is open and
    // `close` cannot fail): a dead worker's janitor must not keep them open.
    let mut fd = JOB_FD_BASE;
    for _ in 0..plan.job_count {
        // SAFETY: as above.
        unsafe { libc::close(fd) };
        fd = fd.saturating_add(1);
    }
    // No events asked for: POLLHUP (the worker's end closed) always comes.
    loop {
        let mut fds = [libc::pollfd {
            fd: HEARTBEAT_FD,
            events: 0,
            revents: 0,
        }];
        // SAFETY: `fds` is a live array of the 1 entry poll is told of.
        if unsafe { libc::poll(fds.as_mut_ptr(), 1, -1) } > 0 {
            break;
        }
    }
    // SAFETY: the janitor's copy of the heartbeat end, closed once.
    unsafe { libc::close(HEARTBEAT_FD) };
    let mut tries = 0;
    loop {
        let mut left = false;
        for dir in plan.cgroup_dirs.iter() {
            // Busy while a process is inside; gone if the worker removed it.
            // SAFETY: `dir` is a NUL-terminated string of the plan.
            let removed = unsafe { libc::rmdir(dir.as_ptr()) } == 0;
            // SAFETY: as above.
            if !removed && unsafe { libc::access(dir.as_ptr(), libc::F_OK) } == 0 {
                left = true;
            }
        }
        if !left || tries >= JANITOR_TRIES {
            // SAFETY: _exit(2) ends the janitor without touching the memory
            // it shares with the guard.
            unsafe { libc::_exit(0) };
        }
        tries += 1;
        // SAFETY: poll(2) on no descriptors: a sleep (a null array of 0).
        unsafe { libc::poll(ptr::null_mut(), 0, JANITOR_POLL_MS) };
    }
}
