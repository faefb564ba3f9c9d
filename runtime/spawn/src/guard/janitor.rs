//! The janitor: removes the job's cgroup directories once the worker's
//! end of the heartbeat channel closes (module docs of `guard`).

use super::*;

/// Starts the janitor (see the module docs). Best effort: without one (no
/// memory for its stack, no process left), the job's cgroup is removed by
/// the worker as before, or by the node's next start-up sweep.
pub(super) unsafe fn start_janitor(plan: &GuardPlan) {
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
pub(super) unsafe fn janitor(plan: &GuardPlan) -> ! {
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
