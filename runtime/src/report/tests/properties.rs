//! Properties of the report over arbitrary jobs.

use super::*;

/// A job from small domains of every configuration field (so that
/// equal configurations happen), with an energy, an estimate flag and
/// scores that may be absent.
#[allow(clippy::type_complexity)]
fn arb_job() -> impl Strategy<Value = Job> {
    (
        (
            prop::sample::select(vec![Codec::H264, Codec::H265]),
            prop::sample::select(vec![None, Some("h264_nvenc")]),
            prop::sample::select(vec!["ultrafast", "medium"]),
            prop::option::of(prop::sample::select(vec![23u32, 28])),
            prop::sample::select(vec![800u32, 1600]),
            prop::sample::select(vec![(640u32, 360u32), (1280, 720)]),
            prop::sample::select(vec![30u32, 60]),
            prop::sample::select(vec![None, Some("yuv420p"), Some("yuv444p")]),
        ),
        (
            prop::sample::select(vec!["n1", "n2"]),
            any::<bool>(),
            1u32..200,
            prop::option::of(prop::sample::select(vec![
                60.0f64, 80.0, 90.0, 93.0, 95.0, 99.0,
            ])),
            prop::option::of(prop::sample::select(vec![30.0f64, 40.0, 45.0])),
        ),
    )
        .prop_map(
            |(
                (codec, encoder, preset, crf, kbps, (w, h), fps, pix),
                (node, estimate, joules, vmaf, psnr),
            )| {
                let source = if estimate {
                    PowerSource::Estimate
                } else {
                    PowerSource::Rapl
                };
                let mut j = job("j", None, codec, node, joules as f64, source, 30.0);
                let e = &mut j.spec.encode;
                e.encoder = encoder.map(String::from);
                e.preset = preset.into();
                e.crf = crf;
                e.bitrate_kbps = kbps;
                (e.width, e.height, e.fps) = (w, h, fps);
                e.pix_fmt = pix.map(String::from);
                with_quality(j, vmaf, psnr, None)
            },
        )
}

/// The settings of a job, from its spec, as the issue lists them.
fn settings(j: &Job) -> impl PartialEq + std::fmt::Debug {
    let e = &j.spec.encode;
    (
        e.codec,
        e.encoder
            .clone()
            .unwrap_or_else(|| e.codec.encoder().to_string()),
        e.preset.clone(),
        e.crf,
        e.crf.is_none().then_some(e.bitrate_kbps),
        (e.width, e.height, e.fps),
        e.pix_fmt.clone().unwrap_or_else(|| "yuv420p".into()),
        j.attempts[0].node.clone(),
        j.attempts[0]
            .energy
            .as_ref()
            .map(|x| x.energy_source.clone()),
    )
}

proptest! {
    #[test]
    fn jobs_share_a_row_exactly_when_every_setting_is_equal(
        a in arb_job(), b in arb_job()
    ) {
        let r = efficiency(&[a.clone(), b.clone()]);
        let same = settings(&a) == settings(&b);
        prop_assert_eq!(r.rows.len(), if same { 1 } else { 2 });
    }

    #[test]
    fn the_cheapest_answer_reaches_the_quality_and_nothing_cheaper_does(
        jobs in prop::collection::vec(arb_job(), 1..24),
        min_vmaf in prop::option::of(prop::sample::select(vec![0.0f64, 85.0, 93.0, 100.0])),
        min_psnr in prop::option::of(prop::sample::select(vec![0.0f64, 35.0, 42.0])),
    ) {
        prop_assume!(min_vmaf.is_some() || min_psnr.is_some());
        let q = ReportQuery { min_vmaf, min_psnr, ..ReportQuery::default() };
        let r = efficiency_filtered(&jobs, &q);
        prop_assert!(!r.cheapest.is_empty());
        for c in &r.cheapest {
            let in_scope = |row: &&EfficiencyRow| {
                row.estimate == c.estimate
                    && (c.scope == "overall" || row.configuration.codec == c.scope)
            };
            let scope: Vec<&EfficiencyRow> = r.rows.iter().filter(in_scope).collect();
            prop_assert!(!scope.is_empty(), "an answer for a scope with no rows");
            let reaching = |row: &EfficiencyRow| {
                min_vmaf.is_none_or(|m| row.vmaf.is_some_and(|s| s.median >= m))
                    && min_psnr.is_none_or(|m| row.psnr.is_some_and(|s| s.median >= m))
            };
            match c.rank {
                None => prop_assert!(scope.iter().all(|row| !reaching(row))),
                Some(rank) => {
                    let best = r.rows.iter().find(|row| row.rank == rank).unwrap();
                    prop_assert!(in_scope(&best));
                    prop_assert!(reaching(best), "the answer reaches the quality");
                    prop_assert_eq!(c.median_joules_per_output_minute,
                        Some(best.median_joules_per_output_minute));
                    for row in &scope {
                        if row.median_joules_per_output_minute
                            < best.median_joules_per_output_minute
                        {
                            prop_assert!(!reaching(row), "a cheaper row reaches it");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_frontier_is_exactly_the_undominated_rows(
        jobs in prop::collection::vec(arb_job(), 1..24),
    ) {
        let r = efficiency(&jobs);
        let Some(metric) = r.frontier_metric else {
            prop_assert!(r.rows.iter().all(|x| !x.frontier));
            return Ok(());
        };
        // Written out here, apart from `dominates`.
        let better = |a: &EfficiencyRow, b: &EfficiencyRow| {
            let (ea, eb) = (a.median_joules_per_output_minute, b.median_joules_per_output_minute);
            match (a.metric(metric), b.metric(metric)) {
                (Some(qa), Some(qb)) => {
                    a.estimate == b.estimate && ea <= eb && qa >= qb && (ea < eb || qa > qb)
                }
                _ => false,
            }
        };
        for row in &r.rows {
            let dominated = r.rows.iter().any(|o| better(o, row));
            if row.frontier {
                prop_assert!(row.metric(metric).is_some());
                prop_assert!(!dominated, "a frontier row is dominated: {}", row.label);
            } else if row.metric(metric).is_some() {
                prop_assert!(dominated, "an undominated row is off the frontier: {}", row.label);
            }
        }
    }
}
