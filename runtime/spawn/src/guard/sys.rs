//! The guard's async-signal-safe helpers: the run log, the clock, errno,
//! failing the spawn, killing the group, signal dispositions, closing
//! descriptors.

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

pub(super) fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Reports `err` on the status pipe and exits.
pub(super) unsafe fn fail(status_fd: c_int, err: c_int) -> ! {
    let bytes = err.to_ne_bytes();
    libc::write(status_fd, bytes.as_ptr().cast(), bytes.len());
    libc::_exit(127)
}

/// Kills the job's whole process group (the guard leads it, so this is the
/// guard too): FFmpeg dies, and so does the guard, by SIGKILL.
pub(super) unsafe fn kill_group() -> ! {
    libc::kill(0, libc::SIGKILL);
    libc::_exit(128 + libc::SIGKILL)
}

pub(super) unsafe fn set_disposition(sig: c_int, handler: libc::sighandler_t) {
    let mut sa: libc::sigaction = std::mem::zeroed();
    sa.sa_sigaction = handler;
    libc::sigemptyset(&mut sa.sa_mask);
    // Fails only for SIGKILL, SIGSTOP, and the C library's internal signals.
    libc::sigaction(sig, &sa, ptr::null_mut());
}

pub(super) unsafe fn unblock_all_signals() {
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
}

/// Closes every descriptor from `first` on.
pub(super) unsafe fn close_from(first: c_int) {
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

/// `PR_SET_PDEATHSIG(SIGKILL)` for the calling process. Async-signal-safe.
pub(super) unsafe fn set_pdeathsig_kill() -> libc::c_int {
    libc::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
    )
}
