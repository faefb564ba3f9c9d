//! Splitting one interval's measured energy among the jobs that ran in it.
//!
//! A job is charged in proportion to its share of the resource the energy
//! paid for: its CPU time out of the node's busy CPU time (for RAPL or an
//! estimate), or its utilisation out of the device's (for a GPU). What no job
//! used (idle power, the OS, other processes) is not spread over the jobs: it
//! stays *unattributed*. Pure: no clock, no I/O.

/// One interval's energy, split.
#[derive(Debug, Clone, PartialEq)]
pub struct Split<K> {
    /// Per job, in the order of the weights given, zero entries included.
    pub shares: Vec<(K, f64)>,
    /// What no job was charged for.
    pub unattributed: f64,
}

/// Split `total` joules among jobs by `weights` (their CPU-time deltas, or
/// GPU utilisation) out of `capacity` (the node's whole busy CPU time over
/// the interval, or the device's utilisation): job k gets
/// `total * w_k / max(capacity, Σw)`.
///
/// Weights that are negative or not finite count as 0, and so does a
/// capacity that is (then the jobs share the whole total); a non-finite or
/// negative total splits as 0 everywhere. The remainder is `unattributed` =
/// total − Σ shares (so the parts always sum to the total), never below 0:
/// rounding can only make the shares overshoot the total by a few ulps.
/// Shares keep the input order and include zero entries; a job with weight 0
/// gets exactly 0.
pub fn attribute<K: Clone>(total: f64, weights: &[(K, f64)], capacity: f64) -> Split<K> {
    let total = if total.is_finite() && total > 0.0 {
        total
    } else {
        0.0
    };
    let clean = |x: f64| if x.is_finite() && x > 0.0 { x } else { 0.0 };
    let capacity = clean(capacity);
    // Scale by the largest figure first so that Σw cannot overflow.
    let scale = weights
        .iter()
        .map(|(_, w)| clean(*w))
        .fold(capacity, f64::max);
    let (capacity_s, sum_s) = if scale > 0.0 {
        let sum: f64 = weights.iter().map(|(_, w)| clean(*w) / scale).sum();
        (capacity / scale, sum)
    } else {
        (0.0, 0.0)
    };
    let denominator = capacity_s.max(sum_s);
    let shares: Vec<(K, f64)> = weights
        .iter()
        .map(|(k, w)| {
            let w = clean(*w);
            let share = if w > 0.0 && denominator > 0.0 {
                // total · w_s ≤ total: no overflow.
                total * (w / scale) / denominator
            } else {
                0.0
            };
            (k.clone(), share)
        })
        .collect();
    let attributed: f64 = shares.iter().map(|(_, s)| s).sum();
    Split {
        shares,
        unattributed: (total - attributed).max(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs())
    }

    #[test]
    fn jobs_share_in_proportion_to_their_cpu_time() {
        // 100 J over an interval where the node was busy 4 CPU-seconds: job a
        // used 2 s, job b 1 s; the remaining busy second was someone else's.
        let split = attribute(100.0, &[("a", 2.0), ("b", 1.0)], 4.0);
        assert_eq!(split.shares, [("a", 50.0), ("b", 25.0)]);
        assert_eq!(split.unattributed, 25.0);
    }

    #[test]
    fn jobs_using_more_than_the_capacity_take_everything() {
        // Sampling skew: the jobs' time exceeds the node's busy time.
        let split = attribute(90.0, &[("a", 2.0), ("b", 1.0)], 2.0);
        assert_eq!(split.shares, [("a", 60.0), ("b", 30.0)]);
        assert_eq!(split.unattributed, 0.0);
    }

    #[test]
    fn bad_inputs_count_as_zero() {
        let split = attribute(
            10.0,
            &[
                (1, f64::NAN),
                (2, -5.0),
                (3, f64::INFINITY),
                (4, 1.0),
                (5, 0.0),
            ],
            4.0,
        );
        assert_eq!(
            split.shares,
            [(1, 0.0), (2, 0.0), (3, 0.0), (4, 2.5), (5, 0.0)]
        );
        assert_eq!(split.unattributed, 7.5);

        for total in [f64::NAN, f64::INFINITY, -1.0, 0.0] {
            let split = attribute(total, &[("a", 1.0)], 1.0);
            assert_eq!(split.shares, [("a", 0.0)]);
            assert_eq!(split.unattributed, 0.0);
        }

        // No capacity known: the jobs share the total.
        let split = attribute(12.0, &[("a", 1.0), ("b", 0.5)], f64::NAN);
        assert_eq!(split.shares, [("a", 8.0), ("b", 4.0)]);
        assert_eq!(split.unattributed, 0.0);
    }

    #[test]
    fn no_jobs_or_no_usage_leaves_everything_unattributed() {
        let split = attribute::<&str>(42.0, &[], 8.0);
        assert!(split.shares.is_empty());
        assert_eq!(split.unattributed, 42.0);
        let split = attribute(42.0, &[("a", 0.0)], 0.0);
        assert_eq!(split.shares, [("a", 0.0)]);
        assert_eq!(split.unattributed, 42.0);
    }

    #[test]
    fn huge_weights_do_not_overflow() {
        let split = attribute(10.0, &[("a", f64::MAX), ("b", f64::MAX)], 0.0);
        assert_eq!(split.shares, [("a", 5.0), ("b", 5.0)]);
        assert_eq!(split.unattributed, 0.0);
    }

    fn weights() -> impl Strategy<Value = Vec<(usize, f64)>> {
        proptest::collection::vec(
            prop_oneof![Just(0.0), 1e-6f64..1e6, -1e3f64..0.0, Just(f64::NAN)],
            0..12,
        )
        .prop_map(|ws| ws.into_iter().enumerate().collect())
    }

    proptest! {
        #[test]
        fn parts_sum_to_the_total(
            total in 0.0f64..1e9,
            ws in weights(),
            capacity in prop_oneof![0.0f64..1e7, Just(0.0), Just(f64::NAN), -5.0f64..0.0],
        ) {
            let split = attribute(total, &ws, capacity);
            prop_assert_eq!(split.shares.len(), ws.len());
            let attributed: f64 = split.shares.iter().map(|(_, s)| s).sum();
            prop_assert!(
                (attributed + split.unattributed - total).abs() <= 1e-9 * total,
                "{} + {} != {}", attributed, split.unattributed, total
            );
            prop_assert!(split.shares.iter().all(|(_, s)| *s >= 0.0), "{:?}", split.shares);
            prop_assert!(split.unattributed >= -1e-9 * total);
            // Input order kept.
            for ((k, _), (sk, _)) in ws.iter().zip(&split.shares) {
                prop_assert_eq!(k, sk);
            }
        }

        #[test]
        fn zero_weight_gets_exactly_zero(
            total in 0.0f64..1e9,
            mut ws in weights(),
            at in any::<prop::sample::Index>(),
            capacity in 0.0f64..1e7,
        ) {
            ws.push((ws.len(), 0.0));
            let i = at.index(ws.len());
            ws[i].1 = 0.0;
            let split = attribute(total, &ws, capacity);
            prop_assert_eq!(split.shares[i].1, 0.0);
            prop_assert_eq!(split.shares.last().map(|s| s.1), Some(0.0));
        }

        #[test]
        fn weights_three_to_one_get_energy_three_to_one(
            total in 1e-6f64..1e9,
            w in 1e-6f64..1e6,
            others in weights(),
            capacity in prop_oneof![0.0f64..1e7, 1e-3f64..10.0],
        ) {
            let mut ws = vec![(usize::MAX, 3.0 * w), (usize::MAX - 1, w)];
            ws.extend(others);
            let split = attribute(total, &ws, capacity);
            let (a, b) = (split.shares[0].1, split.shares[1].1);
            prop_assert!(b > 0.0);
            prop_assert!(close(a, 3.0 * b, 1e-9), "{} vs 3 × {}", a, b);
        }

        #[test]
        fn spare_capacity_is_unattributed(
            total in 0.0f64..1e9,
            ws in weights(),
            spare in 0.0f64..1e6,
        ) {
            let sum: f64 = ws
                .iter()
                .map(|(_, w)| if w.is_finite() && *w > 0.0 { *w } else { 0.0 })
                .sum();
            let capacity = sum + spare;
            prop_assume!(capacity > 0.0);
            let split = attribute(total, &ws, capacity);
            let expected = total * (1.0 - sum / capacity);
            prop_assert!(
                (split.unattributed - expected).abs() <= 1e-9 * total,
                "{} vs {}", split.unattributed, expected
            );
        }
    }
}
