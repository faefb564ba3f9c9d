//! A job's process group once spawned: the [`ProcessGuard`] that owns it,
//! lease renewals, signals, termination and reaping.

use super::*;

/// Owns a spawned job's process group: SIGKILLs the whole group when
/// dropped, unless [`mark_reaped`](Self::mark_reaped) was called; and holds
/// the worker's end of the heartbeat channel, whose closing (on drop, or when
/// the worker dies) makes the guard process kill the group as well.
#[derive(Debug)]
pub struct ProcessGuard {
    pub(super) pid: i32,
    pub(super) pgid: i32,
    /// The leader's start time, to tell it from a later process with its pid.
    pub(super) start_time: Option<u64>,
    pub(super) reaped: AtomicBool,
    /// The worker's end of the heartbeat channel (non-blocking writes).
    pub(super) heartbeat: Option<OwnedFd>,
}

impl ProcessGuard {
    /// The guard process's pid (it leads the group; FFmpeg is its child).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The job's process group id (equal to the guard process's pid).
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Whether [`mark_reaped`](Self::mark_reaped) was called.
    pub fn is_reaped(&self) -> bool {
        self.reaped.load(Ordering::Acquire)
    }

    /// Sends `sig` to the whole process group.
    ///
    /// Once the leader was reaped its pgid could in principle be reused: the
    /// signal is then sent only if no *other* process now holds the leader's pid
    /// (while a member of the group lives, the kernel does not reuse the id).
    pub fn signal_group(&self, sig: Signal) -> io::Result<()> {
        if self.is_reaped() && !self.pgid_still_ours() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        signal::killpg(Pid::from_raw(self.pgid), sig).map_err(io::Error::from)
    }

    /// Records that the child was waited for (reaped). Drop then no longer
    /// signals the group, whose id may since have been reused.
    pub fn mark_reaped(&self) {
        self.reaped.store(true, Ordering::Release);
    }

    /// Moves the lease's deadline to `remaining` from now (`CLOCK_MONOTONIC`):
    /// the guard process SIGKILLs the group if the deadline passes before the
    /// next renewal. A `remaining` too large to represent means no deadline.
    ///
    /// Never blocks. Errors need not fail the job (its exit is reported by
    /// [`wait()`] as usual), only be noted:
    /// - `WouldBlock`: the channel is full, because the guard process is not
    ///   reading it (stopped); the previous deadline stands;
    /// - `BrokenPipe` (or another error): the guard process has exited (the
    ///   job is over or being killed).
    pub fn renew_lease(&self, remaining: Duration) -> io::Result<()> {
        let fd = self
            .heartbeat
            .as_ref()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        let msg = deadline_after(remaining).to_ne_bytes();
        // MSG_NOSIGNAL turns a gone reader into EPIPE instead of SIGPIPE.
        match socket::send(
            fd.as_raw_fd(),
            &msg,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(sent) if sent == msg.len() => Ok(()),
            // A datagram goes whole or not at all.
            Ok(_) => Err(io::Error::other("short heartbeat write")),
            Err(e) => Err(e.into()),
        }
    }

    /// Closes the worker's end of the heartbeat channel, as if the worker had
    /// died, leaving everything else as it is.
    #[cfg(test)]
    pub(super) fn close_heartbeat(&mut self) {
        self.heartbeat = None;
    }

    /// False when a process other than our leader now has the leader's pid.
    pub(super) fn pgid_still_ours(&self) -> bool {
        match (self.start_time, proc_start_time(self.pgid)) {
            (Some(ours), Some(now)) => ours == now,
            // No process with that pid: the id is either free or still held
            // by surviving members of our group.
            (_, None) => true,
            (None, Some(_)) => false,
        }
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if !self.is_reaped() {
            let _ = signal::killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        }
        // The heartbeat end closes after this: the guard process, if the
        // SIGKILL somehow missed it, sees EOF and kills the group itself.
    }
}

/// Waits until process `pid` (our unreaped child) has exited, without reaping
/// it, for at most `limit` (forever with `None`). Returns whether it exited.
///
/// Not reaping matters: while the leader is a zombie its pid (= the pgid)
/// cannot be reused, so the group can still be signalled safely.
pub(super) async fn leader_exited(pid: i32, limit: Option<Duration>) -> bool {
    let deadline = limit.map(|l| Instant::now() + l);
    if let Some(fd) = pidfd_open(pid) {
        // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open
        // (and the same descriptor) for its whole lifetime (tokio's safe
        // `with_interest` is deprecated as unsound for that reason).
        let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
        if let Ok(afd) = registered {
            let ready = afd.readable();
            return match limit {
                Some(l) => tokio::time::timeout(l, ready).await.is_ok(),
                None => ready.await.is_ok(),
            };
        }
    }
    loop {
        if exited_unreaped(pid) {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
}

pub(super) fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: `fd` was just returned to us and is owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether child `pid` has exited (zombie, or already reaped), leaving it unreaped.
pub(super) fn exited_unreaped(pid: i32) -> bool {
    match wait::waitid(
        wait::Id::Pid(Pid::from_raw(pid)),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
    ) {
        // Nothing to report yet: still running.
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        // ECHILD: not (or no longer) our child.
        Err(_) => true,
    }
}

/// Kills whatever is left of the group once the leader has exited, then reaps
/// the leader and marks the guard reaped.
pub(super) async fn finish(child: &mut Child, guard: &ProcessGuard) -> io::Result<ExitStatus> {
    if !guard.is_reaped() && child.status.is_none() {
        // The leader is a zombie or still alive (SIGKILL below): the pgid is ours.
        let _ = signal::killpg(Pid::from_raw(guard.pgid()), Signal::SIGKILL);
    }
    let status = child.wait().await;
    if status.is_ok() {
        guard.mark_reaped();
    }
    status
}

/// Sends SIGTERM to the process group, waits up to `grace` for the leader to
/// exit, then SIGKILLs the group (any members still there included) and reaps
/// the leader. Marks the guard reaped. Other members of the group receive the
/// SIGKILL before this returns but may take a moment to be gone.
///
/// The guard process ignores the SIGTERM; it exits, relaying FFmpeg's status,
/// once FFmpeg has.
pub async fn terminate(
    child: &mut Child,
    guard: &ProcessGuard,
    grace: Duration,
) -> io::Result<ExitStatus> {
    if guard.is_reaped() || child.status.is_some() {
        return finish(child, guard).await;
    }
    if let Err(e) = guard.signal_group(Signal::SIGTERM) {
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    leader_exited(child.id(), Some(grace)).await;
    finish(child, guard).await
}

/// Waits for the child to exit on its own, then SIGKILLs what is left of its
/// process group and reaps it. Marks the guard reaped. Prefer this over
/// [`Child::wait`] so no group member outlives the leader.
pub async fn wait(child: &mut Child, guard: &ProcessGuard) -> io::Result<ExitStatus> {
    if !guard.is_reaped() && child.status.is_none() {
        leader_exited(child.id(), None).await;
    }
    finish(child, guard).await
}

/// Whether any live (non-zombie) process is in process group `pgid`.
/// Scans `/proc`; for tests and sweeps.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .and_then(proc_state_pgrp)
            .is_some_and(|(state, pgrp)| pgrp == pgid && !matches!(state, 'Z' | 'X' | 'x'))
    })
}
