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

/// What a GPU's engines were busy with over an interval, in percent of each
/// engine (NVML's figures): the encoder (NVENC), the decoder (NVDEC) and the
/// streaming multiprocessors (SM, CUDA and filters). For the whole device,
/// or one process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineUtil {
    /// NVENC, percent.
    pub enc: f64,
    /// NVDEC, percent.
    pub dec: f64,
    /// SM, percent.
    pub sm: f64,
}

impl EngineUtil {
    /// Busy percent summed over the engines; figures that are negative or
    /// not finite count as 0.
    pub fn busy(&self) -> f64 {
        let clean = |x: f64| if x.is_finite() && x > 0.0 { x } else { 0.0 };
        clean(self.enc) + clean(self.dec) + clean(self.sm)
    }
}

/// The GPU rule: the weights and capacity to split one GPU's interval
/// energy with [`attribute`]. A job weighs what its processes (`jobs`: its
/// pids) kept the GPU's engines busy, from NVML's per-process samples
/// (`processes`; a hardware encode shows as the FFmpeg process's `enc`),
/// summed over the engines; the capacity is the device's own busy figure
/// on the same engines, or the processes' sum where sampling skew makes
/// that larger. So a job that uses NVENC is charged for it, and what other
/// processes (not jobs) did on any engine, decoder included, stays
/// unattributed. A pid is counted once, for the first job that lists it;
/// a job none of whose pids the samples name (or only pids an earlier job
/// listed) gets 0.
pub fn gpu_weights<K: Clone>(
    device: EngineUtil,
    processes: &[(u32, EngineUtil)],
    jobs: &[(K, Vec<u32>)],
) -> (Vec<(K, f64)>, f64) {
    // A pid is charged once, to the first job that lists it: a process
    // belongs to one job, and two jobs naming the same pid (a pid reused
    // between two samples) would otherwise both be charged for it.
    let mut charged: Vec<u32> = Vec::new();
    let weights = jobs
        .iter()
        .map(|(k, pids)| {
            let w: f64 = processes
                .iter()
                .enumerate()
                .filter(|(i, (pid, _))| {
                    pids.contains(pid)
                        && !charged.contains(pid)
                        && !processes[..*i].iter().any(|(p, _)| p == pid)
                })
                .map(|(_, (_, u))| u.busy())
                .sum();
            charged.extend(pids.iter().copied());
            (k.clone(), w)
        })
        .collect();
    let by_processes: f64 = processes.iter().map(|(_, u)| u.busy()).sum();
    (weights, device.busy().max(by_processes))
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

    // --- GPU ------------------------------------------------------------
    // Per-process samples below are given as data: a hardware-edge fake
    // (no GPU here), in the shape `nvml::Gpus::read` reports them.

    fn util(enc: f64, dec: f64, sm: f64) -> EngineUtil {
        EngineUtil { enc, dec, sm }
    }

    #[test]
    fn an_nvenc_job_is_charged_for_its_encoder_use() {
        // Job a's FFmpeg (pid 10) encodes on NVENC at 40 %; job b (pid 20)
        // runs on the CPU and never shows; pid 99, not a job, decodes at 60 %.
        let device = util(40.0, 60.0, 0.0);
        let procs = [(10, util(40.0, 0.0, 0.0)), (99, util(0.0, 60.0, 0.0))];
        let jobs = [("a", vec![10, 11]), ("b", vec![20])];
        let (weights, capacity) = gpu_weights(device, &procs, &jobs);
        assert_eq!(weights, [("a", 40.0), ("b", 0.0)]);
        assert_eq!(capacity, 100.0);
        let split = attribute(50.0, &weights, capacity);
        // 40 % of the busy engines: 20 J; the other process's decode stays
        // unattributed (it was charged to the job when the capacity left
        // the decoder out).
        assert_eq!(split.shares, [("a", 20.0), ("b", 0.0)]);
        assert_eq!(split.unattributed, 30.0);
    }

    #[test]
    fn two_encoding_jobs_split_by_their_encoder_share() {
        let device = util(90.0, 0.0, 10.0);
        let procs = [(10, util(60.0, 0.0, 5.0)), (20, util(30.0, 0.0, 5.0))];
        let (weights, capacity) =
            gpu_weights(device, &procs, &[("a", vec![10]), ("b", vec![20, 20])]);
        assert_eq!(weights, [("a", 65.0), ("b", 35.0)]);
        let split = attribute(100.0, &weights, capacity);
        assert_eq!(split.shares, [("a", 65.0), ("b", 35.0)]);
        assert_eq!(split.unattributed, 0.0);
        // An idle device, or no per-process figures: nothing attributed.
        let (weights, capacity) = gpu_weights(EngineUtil::default(), &[], &[("a", vec![10])]);
        let split = attribute(30.0, &weights, capacity);
        assert_eq!(split.shares, [("a", 0.0)]);
        assert_eq!(split.unattributed, 30.0);
    }

    fn engine() -> impl Strategy<Value = f64> {
        prop_oneof![Just(0.0), 0.0f64..=100.0, Just(f64::NAN), -5.0f64..0.0]
    }

    fn engine_util() -> impl Strategy<Value = EngineUtil> {
        (engine(), engine(), engine()).prop_map(|(enc, dec, sm)| EngineUtil { enc, dec, sm })
    }

    proptest! {
        /// Whatever NVML reports: the jobs' GPU energy and the unattributed
        /// rest add up to the device's, nobody gets a negative share, a job
        /// none of whose processes were sampled gets nothing, and a job
        /// that used the encoder more never gets less.
        #[test]
        fn gpu_split_is_a_partition_and_follows_encoder_use(
            total in 0.0f64..1e6,
            device in engine_util(),
            procs in proptest::collection::vec((0u32..8, engine_util()), 0..8),
            jobs in proptest::collection::vec(proptest::collection::vec(0u32..10, 0..3), 1..4),
            more in 0.0f64..50.0,
        ) {
            let jobs: Vec<(usize, Vec<u32>)> = jobs.into_iter().enumerate().collect();
            let (weights, capacity) = gpu_weights(device, &procs, &jobs);
            let split = attribute(total, &weights, capacity);
            let attributed: f64 = split.shares.iter().map(|(_, s)| s).sum();
            prop_assert!((attributed + split.unattributed - total).abs() <= 1e-9 * total.max(1.0));
            prop_assert!(split.shares.iter().all(|(_, s)| *s >= 0.0));
            for ((_, pids), (_, share)) in jobs.iter().zip(&split.shares) {
                if !procs.iter().any(|(p, _)| pids.contains(p)) {
                    prop_assert_eq!(*share, 0.0);
                }
            }
            // Job 0's first sampled process encodes `more` percent more.
            let Some(pid) = jobs[0].1.iter().find(|p| procs.iter().any(|(q, _)| q == *p)) else {
                return Ok(());
            };
            let Some(at) = procs.iter().position(|(q, _)| q == pid) else {
                return Ok(());
            };
            let mut busier = procs.clone();
            let u = &mut busier[at].1;
            u.enc = if u.enc.is_finite() && u.enc > 0.0 { u.enc + more } else { more };
            let device_busier = EngineUtil { enc: device.enc.max(0.0) + more, ..device };
            let (w2, c2) = gpu_weights(device_busier, &busier, &jobs);
            let after = attribute(total, &w2, c2).shares[0].1;
            let before = split.shares[0].1;
            prop_assert!(after + 1e-9 * total.max(1.0) >= before, "{} < {}", after, before);
        }
    }
}
