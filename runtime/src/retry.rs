//! Retry backoff for transient failures: exponential backoff
//! with full jitter, as a pure function. The caller supplies the random number
//! (`jitter_unit`), so the result is reproducible in tests and the decision
//! never touches a random source itself.

use serde::{Deserialize, Serialize};

/// How long a requeued job waits before it may be assigned again.
///
/// The n-th retry waits a uniformly jittered fraction of
/// `min(max_ms, base_ms * 2^(n-1))` ("full jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// The ceiling of the first retry's delay, in milliseconds.
    pub base_ms: u64,
    /// The ceiling of every retry's delay, in milliseconds.
    pub max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_ms: 1_000,
            max_ms: 60_000,
        }
    }
}

impl RetryPolicy {
    /// The delay ceiling for the n-th retry (1-based; 0 is treated as 1):
    /// `min(max_ms, base_ms * 2^(n-1))`, saturating instead of overflowing.
    pub fn ceiling_ms(&self, retry: u32) -> u64 {
        let doublings = retry.max(1) - 1;
        let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
        self.base_ms.saturating_mul(factor).min(self.max_ms)
    }

    /// Exponential backoff with full jitter: the delay for the n-th retry
    /// (1-based), given `jitter_unit` in `[0, 1)`. Pure.
    ///
    /// `jitter_unit` outside `[0, 1]` is clamped into it; NaN counts as 0.
    /// The result is never above [`RetryPolicy::ceiling_ms`] (and so never
    /// above `max_ms`).
    pub fn delay_ms(&self, retry: u32, jitter_unit: f64) -> u64 {
        let ceiling = self.ceiling_ms(retry);
        let unit = if jitter_unit.is_nan() {
            0.0
        } else {
            jitter_unit.clamp(0.0, 1.0)
        };
        // `as` saturates for floats; the integer `min` guards against the
        // float rounding `ceiling` up (it has only 53 bits of mantissa).
        (((ceiling as f64) * unit).floor() as u64).min(ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_is_one_second_to_one_minute() {
        let p = RetryPolicy::default();
        assert_eq!((p.base_ms, p.max_ms), (1_000, 60_000));
    }

    #[test]
    fn doubles_until_the_cap() {
        let p = RetryPolicy::default();
        let ceilings: Vec<u64> = (1..=8).map(|n| p.ceiling_ms(n)).collect();
        assert_eq!(
            ceilings,
            vec![1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
        );
        assert_eq!(p.ceiling_ms(0), p.ceiling_ms(1));
    }

    #[test]
    fn grows_with_n_at_top_jitter() {
        let p = RetryPolicy::default();
        let d: Vec<u64> = (1..=6).map(|n| p.delay_ms(n, 0.999)).collect();
        for w in d.windows(2) {
            assert!(w[0] < w[1], "{d:?}");
        }
        assert_eq!(p.delay_ms(1, 0.5), 500);
        assert_eq!(p.delay_ms(3, 0.25), 1_000);
    }

    #[test]
    fn huge_retry_numbers_do_not_overflow() {
        let p = RetryPolicy {
            base_ms: u64::MAX / 3,
            max_ms: u64::MAX,
        };
        assert_eq!(p.ceiling_ms(u32::MAX), u64::MAX);
        assert_eq!(p.ceiling_ms(65), u64::MAX);
        assert_eq!(p.delay_ms(u32::MAX, 1.0), u64::MAX);
        let d = RetryPolicy::default();
        assert_eq!(d.delay_ms(u32::MAX, 1.0), 60_000);
        assert_eq!(d.delay_ms(64, 1.0), 60_000);
    }

    #[test]
    fn jitter_out_of_range_is_clamped() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_ms(2, -3.0), 0);
        assert_eq!(p.delay_ms(2, f64::NEG_INFINITY), 0);
        assert_eq!(p.delay_ms(2, f64::NAN), 0);
        assert_eq!(p.delay_ms(2, 7.5), 2_000);
        assert_eq!(p.delay_ms(2, f64::INFINITY), 2_000);
    }

    #[test]
    fn max_below_base_caps_everything() {
        let p = RetryPolicy {
            base_ms: 5_000,
            max_ms: 100,
        };
        assert_eq!(p.delay_ms(1, 0.999), 99);
        assert_eq!(p.ceiling_ms(1), 100);
    }

    proptest! {
        #[test]
        fn bounded_by_ceiling_and_max(
            base in 0u64..=u64::MAX,
            max in 0u64..=u64::MAX,
            retry in 0u32..=u32::MAX,
            jitter in proptest::num::f64::ANY,
        ) {
            let p = RetryPolicy { base_ms: base, max_ms: max };
            let d = p.delay_ms(retry, jitter);
            prop_assert!(d <= p.ceiling_ms(retry));
            prop_assert!(d <= max);
        }

        #[test]
        fn monotonic_in_jitter_and_in_retry(
            base in 0u64..1_000_000,
            max in 0u64..100_000_000,
            retry in 1u32..100,
            a in 0.0f64..1.0,
            b in 0.0f64..1.0,
        ) {
            let p = RetryPolicy { base_ms: base, max_ms: max };
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(p.delay_ms(retry, lo) <= p.delay_ms(retry, hi));
            prop_assert!(p.ceiling_ms(retry) <= p.ceiling_ms(retry + 1));
        }
    }
}
