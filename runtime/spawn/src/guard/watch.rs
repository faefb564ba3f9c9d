//! The guard's loop once FFmpeg runs: the lease deadline, the heartbeat
//! channel, and relaying FFmpeg's exit.

use super::*;

/// The guard's loop: enforce the deadline, kill on heartbeat EOF, relay
/// FFmpeg's exit.
pub(super) unsafe fn watch(
    child: pid_t,
    pidfd: c_int,
    mut deadline: u64,
    log: Option<&RunLogPlan>,
) -> ! {
    // FFmpeg is dead once reaped ("stop"); a SIGKILL to the group ends it
    // within moments ("kill", logged just before).
    let stop = |status| -> ! {
        // SAFETY: in the guard (this function's contract).
        unsafe { log_event(log, b"stop") };
        // SAFETY: in the guard, with FFmpeg reaped: its status is final.
        unsafe { relay(status) }
    };
    let kill = || -> ! {
        // SAFETY: in the guard (this function's contract).
        unsafe { log_event(log, b"kill") };
        // SAFETY: in the guard, which leads the job's process group.
        unsafe { kill_group() }
    };
    loop {
        // FFmpeg's exit wins over a deadline that passed in the meantime.
        // SAFETY: `child` is the guard's own child, FFmpeg.
        if let Some(status) = unsafe { reap(child) } {
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
        // SAFETY: `fds` is a live array of the 2 entries poll is told of.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) } < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            kill();
        }
        let [heartbeat, _] = fds;
        if heartbeat.revents != 0 {
            // SAFETY: in the guard, which holds HEARTBEAT_FD.
            match unsafe { read_heartbeats(deadline) } {
                Some(latest) => deadline = latest,
                None => {
                    // EOF: the worker is gone, or dropped its guard.
                    // SAFETY: as the reap above.
                    if let Some(status) = unsafe { reap(child) } {
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
pub(super) unsafe fn read_heartbeats(mut current: u64) -> Option<u64> {
    loop {
        let mut buf = [0u8; 8];
        // SAFETY: receives at most `buf.len()` bytes into `buf`, a live
        // local; HEARTBEAT_FD is the guard's end of the channel.
        let n = unsafe {
            libc::recv(
                HEARTBEAT_FD,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
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
pub(super) unsafe fn reap(child: pid_t) -> Option<c_int> {
    loop {
        let mut status: c_int = 0;
        // SAFETY: waitpid(2) writes into `status`, a live local.
        let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if r == child {
            return Some(status);
        }
        if r == 0 {
            return None;
        }
        if errno() != libc::EINTR {
            // ECHILD: FFmpeg is lost to us, so it cannot be relayed; fence.
            // SAFETY: in the guard, which leads the job's process group.
            unsafe { kill_group() };
        }
    }
}

/// Ends the guard the way FFmpeg ended, so the worker reads the same status.
pub(super) unsafe fn relay(status: c_int) -> ! {
    if libc::WIFEXITED(status) {
        // SAFETY: _exit(2) ends the guard without running anything of the
        // forked copy of the worker.
        unsafe { libc::_exit(libc::WEXITSTATUS(status)) };
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: in the guard (this function's contract).
        unsafe { set_disposition(sig, libc::SIG_DFL) };
        // SAFETY: `sigset_t` is plain data, for which all zeroes is valid.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: initialises `set`, a live local.
        unsafe { libc::sigemptyset(&mut set) };
        // SAFETY: `set` is initialised; `sig` came from a wait status.
        unsafe { libc::sigaddset(&mut set, sig) };
        // SAFETY: `set` is initialised; no old mask is asked for (null).
        unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, ptr::null_mut()) };
        // SAFETY: getpid(2) cannot fail.
        let me = unsafe { libc::getpid() };
        // SAFETY: kill(2) on the guard itself, with FFmpeg's signal.
        unsafe { libc::kill(me, sig) };
        // A signal whose default is to be ignored (FFmpeg cannot have died of
        // one): the shell's convention.
        // SAFETY: _exit(2), as above.
        unsafe { libc::_exit(128 + (sig & 0x7f)) };
    }
    // SAFETY: _exit(2), as above.
    unsafe { libc::_exit(127) }
}
