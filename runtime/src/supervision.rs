//! Restart intensity, as in OTP: a supervisor restarts a child at most
//! `max_restarts` times within `window_ms`; one more failure in that window
//! means the fault is not transient and the supervisor escalates instead.

use std::collections::VecDeque;

use crate::model::UnixMs;

/// A supervisor's record of its child's recent restarts, which decides
/// whether the next failure is restarted or escalated.
#[derive(Debug, Clone)]
pub struct RestartIntensity {
    max_restarts: u32,
    window_ms: u64,
    recent: VecDeque<UnixMs>,
}

impl RestartIntensity {
    /// Allows `max_restarts` restarts within any `window_ms` milliseconds.
    pub fn new(max_restarts: u32, window_ms: u64) -> RestartIntensity {
        RestartIntensity {
            max_restarts,
            window_ms,
            recent: VecDeque::new(),
        }
    }

    /// Record a child failure at `now`. `true`: restart it; `false`: escalate.
    pub fn record_restart(&mut self, now: UnixMs) -> bool {
        while let Some(&t) = self.recent.front() {
            if now.saturating_sub(t) >= self.window_ms {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() as u32 >= self.max_restarts {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_max_restarts_in_window_then_escalates() {
        let mut r = RestartIntensity::new(3, 1000);
        assert!(r.record_restart(0));
        assert!(r.record_restart(10));
        assert!(r.record_restart(20));
        assert!(
            !r.record_restart(30),
            "fourth failure within the window escalates"
        );
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut r = RestartIntensity::new(2, 1000);
        assert!(r.record_restart(0));
        assert!(r.record_restart(500));
        assert!(!r.record_restart(900));
        assert!(
            r.record_restart(1000),
            "the failure at 0 has left the window"
        );
        assert!(!r.record_restart(1100));
        assert!(r.record_restart(2600));
    }

    #[test]
    fn zero_restarts_always_escalates() {
        let mut r = RestartIntensity::new(0, 1000);
        assert!(!r.record_restart(0));
    }
}
