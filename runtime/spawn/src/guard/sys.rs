//! The guard's async-signal-safe helpers: the run log, the clock, errno,
//! failing the spawn, killing the group, signal dispositions, closing
//! descriptors.
//!
//! Their `unsafe fn`s share one contract: call them only in the guard, or
//! in its clones (the janitor, FFmpeg's side before execve), after the
//! fork, where the descriptors they name are the guard's own.

use super::*;

/// Appends `<event> <CLOCK_MONOTONIC ns> <tag>\n` to the run log: one
/// `write(2)` on an `O_APPEND` descriptor, so lines from several processes
/// never interleave. Async-signal-safe; failures are ignored (the log is
/// evidence for tests and operators, never a reason to fail a job).
pub(super) unsafe fn log_event(log: Option<&RunLogPlan>, event: &[u8]) {
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
    // SAFETY: `log.path` is a NUL-terminated string that outlives the call;
    // open(2) is async-signal-safe.
    let fd = unsafe {
        libc::open(
            log.path.as_ptr(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
            0o644 as c_uint,
        )
    };
    if fd >= 0 {
        // SAFETY: writes at most `line.len()` bytes from `line`, a live
        // buffer; `fd` was just opened here.
        unsafe { libc::write(fd, line.as_ptr().cast(), len.min(line.len())) };
        // SAFETY: `fd` was opened above and is closed once.
        unsafe { libc::close(fd) };
    }
}

/// Appends `bytes` to `buf` at `len`, dropping what does not fit.
pub(super) fn put(buf: &mut [u8], len: &mut usize, bytes: &[u8]) {
    for &b in bytes {
        if let Some(slot) = buf.get_mut(*len) {
            *slot = b;
            *len += 1;
        }
    }
}

/// Appends `n` in decimal.
pub(super) fn put_u64(buf: &mut [u8], len: &mut usize, mut n: u64) {
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

/// `CLOCK_MONOTONIC` now, in ns. Async-signal-safe; the worker uses it too, so
/// that both sides compute deadlines the same way.
pub(crate) fn monotonic_ns() -> u64 {
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

/// This thread's `errno` (the guard's: the janitor shares it, module docs
/// of `guard`).
pub(super) fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Reports `err` on the status pipe and exits.
pub(super) unsafe fn fail(status_fd: c_int, err: c_int) -> ! {
    let bytes = err.to_ne_bytes();
    // SAFETY: writes the 4 bytes of `bytes`, a live local; `status_fd` is
    // the guard's end of the status pipe (the caller's contract).
    unsafe { libc::write(status_fd, bytes.as_ptr().cast(), bytes.len()) };
    // SAFETY: _exit(2) ends the process without running anything of the
    // forked copy of the worker (no destructors, no atexit handlers).
    unsafe { libc::_exit(127) }
}

/// Kills the job's whole process group (the guard leads it, so this is the
/// guard too): FFmpeg dies, and so does the guard, by SIGKILL.
pub(super) unsafe fn kill_group() -> ! {
    // SAFETY: kill(2) on our own process group, which the guard leads.
    unsafe { libc::kill(0, libc::SIGKILL) };
    // SAFETY: _exit(2), as in `fail`; reached only if the SIGKILL was not
    // delivered yet.
    unsafe { libc::_exit(128 + libc::SIGKILL) }
}

/// Sets the disposition of `sig` to `handler` (`SIG_DFL` or `SIG_IGN`),
/// with an empty mask.
pub(super) unsafe fn set_disposition(sig: c_int, handler: libc::sighandler_t) {
    // SAFETY: `sigaction` is a plain C struct, for which all zeroes is a
    // valid value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler;
    // SAFETY: initialises the mask of `sa`, a live local.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // Fails only for SIGKILL, SIGSTOP, and the C library's internal signals.
    // SAFETY: `sa` is initialised; no old action is asked for (null).
    unsafe { libc::sigaction(sig, &sa, ptr::null_mut()) };
}

/// Sets the signal mask to empty (the worker's thread may have blocked some).
pub(super) unsafe fn unblock_all_signals() {
    // SAFETY: `sigset_t` is plain data, for which all zeroes is valid.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: initialises `empty`, a live local.
    unsafe { libc::sigemptyset(&mut empty) };
    // SAFETY: `empty` is initialised; no old mask is asked for (null).
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut()) };
}

/// Closes every descriptor from `first` on.
pub(super) unsafe fn close_from(first: c_int) {
    let first_u = c_uint::try_from(first).unwrap_or(0);
    // SAFETY: close_range(2) takes three integers; the descriptors it closes
    // are the guard's, which nothing else in this process uses.
    if unsafe { libc::syscall(libc::SYS_close_range, first_u, c_uint::MAX, 0 as c_uint) } == 0 {
        return;
    }
    // Linux < 5.9: one close per possible descriptor.
    // SAFETY: `rlimit` is plain data, for which all zeroes is valid.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit(2) writes into `lim`, a live local.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        c_int::try_from(lim.rlim_cur)
            .unwrap_or(MAX_FALLBACK_FDS)
            .min(MAX_FALLBACK_FDS)
    } else {
        MAX_FALLBACK_FDS
    };
    let mut fd = first;
    while fd < max {
        // SAFETY: as close_range above; a number with no descriptor gives
        // EBADF and nothing else.
        unsafe { libc::close(fd) };
        fd += 1;
    }
}

/// `PR_SET_PDEATHSIG(SIGKILL)` for the calling process. Async-signal-safe.
pub(super) unsafe fn set_pdeathsig_kill() -> libc::c_int {
    // SAFETY: prctl(2) with integer arguments only; it changes only the
    // calling process's parent-death signal.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    }
}
