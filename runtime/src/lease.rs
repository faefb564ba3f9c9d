//! Round-trip leases (docs/PROTOCOL.md, "Leases"): the decisions, as plain
//! functions over times in milliseconds. Each side passes readings of its own
//! monotonic clock; the two clocks are never compared.
//!
//! - The worker pings every [`PING_INTERVAL_MS`] with its send time `s`; each
//!   answered ping extends its lease to `s + L`. It starts stopping its jobs
//!   at `until − G` (SIGTERM), so they are dead (SIGKILL) by `until`; a guard
//!   process per job enforces `until` even if the worker is frozen.
//! - The master answers a ping only on a live link and records `t_last`, the
//!   last time it heard from the node. It may give a silent node's attempts to
//!   another node only after [`fence_deadline`]`(t_last, L)`.
//!
//! Why two copies never run at once: the ping that set `until` was sent at
//! `s ≤ t_last` (the master heard it), so in real time the worker's jobs are
//! dead by `s + L·(1+ρ) ≤ t_last + L·(1+ρ)`, where `ρ` bounds how much faster
//! the master's clock may run than the worker's. The master waits for
//! `t_last + L·(1+ρ) + M`.

use std::collections::HashSet;

use crate::wire::AttemptRef;

/// Default lease `L`.
pub const DEFAULT_LEASE_MS: u64 = 10_000;
/// How often a worker asks for renewal.
pub const PING_INTERVAL_MS: u64 = 500;
/// `ρ`: the largest relative clock-rate difference tolerated (1 %; NTP keeps
/// real clocks within 0.05 %).
pub const CLOCK_DRIFT: f64 = 0.01;
/// `M`: slack for signal delivery and scheduling after the deadline.
pub const FENCE_MARGIN_MS: u64 = 1_000;
/// The shortest lease a node may be configured with. The kill grace must
/// fit well inside it.
pub const MIN_LEASE_MS: u64 = 1_000;
/// The longest lease a node may be configured with (ten minutes), and the
/// most a single renewal is trusted for.
pub const MAX_LEASE_MS: u64 = 600_000;

/// The earliest time (master clock) at which a node last heard from at
/// `last_heard_ms` can no longer be running any attempt under a lease of
/// `lease_ms`.
pub fn fence_deadline(last_heard_ms: u64, lease_ms: u64) -> u64 {
    let stretched = (lease_ms as f64 * (1.0 + CLOCK_DRIFT)).ceil() as u64;
    last_heard_ms
        .saturating_add(stretched)
        .saturating_add(FENCE_MARGIN_MS)
}

/// A worker's lease, on the worker's monotonic clock.
#[derive(Debug, Clone, Default)]
pub struct WorkerLease {
    until_ms: Option<u64>,
}

impl WorkerLease {
    /// A `Pong` for the ping sent at `sent_ms` arrived at `now_ms`. Returns the
    /// new end of the lease if it moved. A pong claiming a send time in the
    /// future is ignored.
    pub fn on_pong(&mut self, sent_ms: u64, lease_ms: u64, now_ms: u64) -> Option<u64> {
        if sent_ms > now_ms {
            return None;
        }
        let until = sent_ms.saturating_add(lease_ms.min(MAX_LEASE_MS));
        if self.until_ms.is_some_and(|u| u >= until) {
            return None;
        }
        self.until_ms = Some(until);
        Some(until)
    }

    /// When the lease ends, if there ever was one.
    pub fn until(&self) -> Option<u64> {
        self.until_ms
    }

    /// Time left at `now_ms` (zero once over, `None` without a lease).
    pub fn remaining(&self, now_ms: u64) -> Option<u64> {
        self.until_ms.map(|u| u.saturating_sub(now_ms))
    }

    /// Whether jobs may start now: the lease must outlast the kill grace.
    pub fn can_start(&self, now_ms: u64, grace_ms: u64) -> bool {
        self.until_ms
            .is_some_and(|u| now_ms.saturating_add(grace_ms) < u)
    }

    /// Whether running jobs must begin stopping now, so that `grace_ms` after
    /// their SIGTERM (their SIGKILL) falls no later than the lease's end.
    pub fn must_stop(&self, now_ms: u64, grace_ms: u64) -> bool {
        !self.can_start(now_ms, grace_ms)
    }
}

/// What the master does with a node's attempts when the node says hello.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Current attempts the node still runs: keep them, nothing reruns.
    pub adopt: Vec<AttemptRef>,
    /// Current attempts the node finished; their `Finished` follows the hello.
    pub awaiting_result: Vec<AttemptRef>,
    /// Current attempts the node does not hold (it restarted, or never got
    /// the assignment): requeue now, no fence needed.
    pub requeue: Vec<AttemptRef>,
    /// Attempts the node runs that are not current: it must kill them.
    pub kill: Vec<AttemptRef>,
}

/// Compare what the master believes `node` holds (`believed`: the current
/// attempts assigned to it) with what it reports.
pub fn reconcile(
    believed: &[AttemptRef],
    running: &[AttemptRef],
    unacked: &[AttemptRef],
) -> Reconciled {
    let running_set: HashSet<&AttemptRef> = running.iter().collect();
    let unacked_set: HashSet<&AttemptRef> = unacked.iter().collect();
    let believed_set: HashSet<&AttemptRef> = believed.iter().collect();
    let mut r = Reconciled::default();
    for a in believed {
        if running_set.contains(a) {
            r.adopt.push(a.clone());
        } else if unacked_set.contains(a) {
            r.awaiting_result.push(a.clone());
        } else {
            r.requeue.push(a.clone());
        }
    }
    for a in running {
        if !believed_set.contains(a) {
            r.kill.push(a.clone());
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(job: &str, token: u64) -> AttemptRef {
        AttemptRef {
            job_id: job.into(),
            token,
        }
    }

    #[test]
    fn fence_covers_lease_drift_and_margin() {
        assert_eq!(fence_deadline(1_000, 10_000), 1_000 + 10_100 + 1_000);
        assert_eq!(fence_deadline(u64::MAX - 5, 10_000), u64::MAX);
    }

    #[test]
    fn lease_moves_forward_only() {
        let mut l = WorkerLease::default();
        assert!(l.must_stop(0, 0));
        assert_eq!(l.on_pong(100, 10_000, 150), Some(10_100));
        // An older ping answered late does not shorten it.
        assert_eq!(l.on_pong(50, 10_000, 200), None);
        assert_eq!(l.until(), Some(10_100));
        assert_eq!(l.on_pong(600, 10_000, 650), Some(10_600));
        // A pong from the future is ignored.
        assert_eq!(l.on_pong(10_000, 10_000, 700), None);
        assert_eq!(l.remaining(10_000), Some(600));
        assert_eq!(l.remaining(20_000), Some(0));
    }

    #[test]
    fn stopping_starts_one_grace_before_the_end() {
        let mut l = WorkerLease::default();
        l.on_pong(0, 10_000, 1);
        assert!(l.can_start(7_999, 2_000));
        assert!(!l.must_stop(7_999, 2_000));
        assert!(l.must_stop(8_000, 2_000));
        assert!(!l.can_start(8_000, 2_000));
    }

    #[test]
    fn reconcile_sorts_every_case() {
        let believed = [a("j1", 1), a("j2", 2), a("j3", 3)];
        let running = [a("j1", 1), a("j9", 9), a("j3", 2)];
        let unacked = [a("j2", 2), a("j8", 8)];
        let r = reconcile(&believed, &running, &unacked);
        assert_eq!(r.adopt, vec![a("j1", 1)]);
        assert_eq!(r.awaiting_result, vec![a("j2", 2)]);
        // j3 runs with an old token: the current attempt is not held.
        assert_eq!(r.requeue, vec![a("j3", 3)]);
        assert_eq!(r.kill, vec![a("j9", 9), a("j3", 2)]);
    }

    proptest! {
        /// The ordering argument: whatever the worker's clock rate (within ρ)
        /// and however late the master heard the ping, the worker's lease
        /// ends (in real time) before the master's fence.
        #[test]
        fn worker_lease_ends_before_the_master_fence(
            sent in 0u64..1_000_000,
            delay in 0u64..5_000,
            lease in MIN_LEASE_MS..MAX_LEASE_MS,
            // Worker clock runs slow by up to ρ: one worker ms lasts this long.
            slow in 1.0f64..(1.0 + CLOCK_DRIFT),
        ) {
            let mut l = WorkerLease::default();
            let until = l.on_pong(sent, lease, sent).unwrap();
            // Real time (master clock) at which the worker's lease ends, with
            // both clocks reading `sent` at the ping's send time.
            let real_end = sent as f64 + (until - sent) as f64 * slow;
            let heard = sent + delay;
            let fence = fence_deadline(heard, lease) as f64;
            prop_assert!(real_end + FENCE_MARGIN_MS as f64 <= fence + 1.0);
        }

        #[test]
        fn reconcile_partitions_believed(
            believed in proptest::collection::hash_set((0u8..20, 0u64..4), 0..12),
            running in proptest::collection::hash_set((0u8..20, 0u64..4), 0..12),
            unacked in proptest::collection::hash_set((0u8..20, 0u64..4), 0..12),
        ) {
            let v = |s: &HashSet<(u8, u64)>| s.iter().map(|(j, t)| a(&j.to_string(), *t)).collect::<Vec<_>>();
            let (b, r, u) = (v(&believed), v(&running), v(&unacked));
            let out = reconcile(&b, &r, &u);
            prop_assert_eq!(out.adopt.len() + out.awaiting_result.len() + out.requeue.len(), b.len());
            for x in &out.kill {
                prop_assert!(!b.contains(x));
                prop_assert!(r.contains(x));
            }
            for x in &out.requeue {
                prop_assert!(!r.contains(x));
                prop_assert!(!u.contains(x));
            }
        }
    }
}
