use super::*;
use crate::model::{
    AttemptRecord, Codec, DomainEnergy, Energy, MetricScore, PowerSource, QualityResult,
};
use proptest::prelude::*;

fn job(
    id: &str,
    scenario: Option<&str>,
    codec: Codec,
    node: &str,
    joules: f64,
    source: PowerSource,
    fps: f64,
) -> Job {
    let mut spec = crate::test_util::test_spec();
    spec.scenario = scenario.map(String::from);
    spec.encode.codec = codec;
    let mut j = Job::new(id.into(), 1, spec, 0);
    j.state = JobState::Succeeded;
    let result = JobResult {
        frames: 300,
        avg_fps: fps,
        output_duration_s: Some(30.0),
        ..JobResult::default()
    };
    let energy = Energy::new(
        vec![DomainEnergy {
            domain: "package-0".into(),
            source,
            joules,
        }],
        10.0,
        Some(300),
        Some(30.0),
    );
    j.attempts.push(AttemptRecord {
        attempt: 1,
        node: node.into(),
        started_ms: Some(0),
        ended_ms: Some(10_000),
        isolation: None,
        outcome: Some(Outcome::Succeeded {
            result: result.clone(),
        }),
        energy: Some(energy),
    });
    j.result = Some(result);
    j
}

/// A measured x264 job of `joules` per 30 s (2 × that per output minute).
fn x264(id: &str, joules: f64) -> Job {
    job(id, None, Codec::H264, "n1", joules, PowerSource::Rapl, 30.0)
}

fn score(mean: f64) -> MetricScore {
    MetricScore {
        mean,
        frames: 300,
        ..MetricScore::default()
    }
}

/// Sets the scores of `j`'s succeeding result.
fn with_quality(mut j: Job, vmaf: Option<f64>, psnr: Option<f64>, ssim: Option<f64>) -> Job {
    let q = QualityResult {
        vmaf: vmaf.map(score),
        psnr: psnr.map(score),
        ssim: ssim.map(score),
        wall_s: 1.0,
        ..QualityResult::default()
    };
    for a in &mut j.attempts {
        if let Some(Outcome::Succeeded { result }) = &mut a.outcome {
            result.quality = Some(Box::new(q.clone()));
        }
    }
    j
}

#[test]
fn medians() {
    assert_eq!(median(&mut []), None);
    assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
}

#[test]
fn quartiles_interpolate() {
    let s = Stat::of(&mut [4.0, 1.0, 3.0, 2.0, 5.0]).unwrap();
    assert_eq!((s.median, s.q1, s.q3, s.iqr, s.n), (3.0, 2.0, 4.0, 2.0, 5));
    let s = Stat::of(&mut [1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!((s.median, s.q1, s.q3, s.iqr), (2.5, 1.75, 3.25, 1.5));
    let s = Stat::of(&mut [7.0]).unwrap();
    assert_eq!((s.median, s.iqr, s.n), (7.0, 0.0, 1));
    assert_eq!(Stat::of(&mut []), None);
}

#[test]
fn ranks_measured_configurations_by_median_joules_per_output_minute() {
    let jobs = vec![
        // x264 on n1: 100, 120, 500 J per 30 s → 200, 240, 1000 J/min: median 240.
        job(
            "a",
            Some("720p30-h264"),
            Codec::H264,
            "n1",
            100.0,
            PowerSource::Rapl,
            60.0,
        ),
        job(
            "b",
            Some("720p30-h264"),
            Codec::H264,
            "n1",
            120.0,
            PowerSource::Rapl,
            50.0,
        ),
        job(
            "c",
            Some("720p30-h264"),
            Codec::H264,
            "n1",
            500.0,
            PowerSource::Rapl,
            40.0,
        ),
        // x265 on n1: 90 J → 180 J/min, cheaper.
        job(
            "d",
            Some("720p30-h264"),
            Codec::H265,
            "n1",
            90.0,
            PowerSource::Rapl,
            20.0,
        ),
        // An estimate cheaper than everything still ranks after the measurements.
        job(
            "e",
            None,
            Codec::H264,
            "n2",
            1.0,
            PowerSource::Estimate,
            90.0,
        ),
    ];
    let r = efficiency(&jobs);
    assert_eq!(r.jobs_considered, 5);
    assert_eq!(r.jobs_without_energy, 0);
    let got: Vec<(u32, &str, &str, bool, u64, f64)> = r
        .rows
        .iter()
        .map(|x| {
            (
                x.rank,
                x.encoder.as_str(),
                x.node.as_str(),
                x.estimate,
                x.samples,
                x.median_joules_per_output_minute,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "libx265", "n1", false, 1, 180.0),
            (2, "libx264", "n1", false, 3, 240.0),
            (3, "libx264", "n2", true, 1, 2.0),
        ]
    );
    assert_eq!(r.rows[1].median_fps, 50.0);
    assert_eq!(r.rows[1].median_joules_per_frame, Some(0.4));
    // 200, 240, 1000: quartiles 220 and 620.
    assert_eq!(r.rows[1].joules_per_output_minute.iqr, 400.0);
    assert_eq!(r.rows[1].label, "libx264 veryfast 800k 640x360p30");
    assert_eq!(r.rows[2].scenario, "custom-640x360p30");
    assert_eq!(r.rows[2].energy_source, "estimate");
    assert!(r.cheapest.is_empty() && r.frontier_metric.is_none());
}

#[test]
fn two_presets_never_share_a_row() {
    // The case: one scenario name, ultrafast and medium, whose
    // figures used to be averaged into one meaningless median.
    let mut fast = job(
        "a",
        Some("720p30-h264"),
        Codec::H264,
        "n1",
        3.2,
        PowerSource::Rapl,
        300.0,
    );
    fast.spec.encode.preset = "ultrafast".into();
    let mut slow = job(
        "b",
        Some("720p30-h264"),
        Codec::H264,
        "n1",
        21.2,
        PowerSource::Rapl,
        40.0,
    );
    slow.spec.encode.preset = "medium".into();
    let r = efficiency(&[fast, slow]);
    let got: Vec<(&str, f64)> = r
        .rows
        .iter()
        .map(|x| {
            (
                x.configuration.preset.as_str(),
                x.median_joules_per_output_minute,
            )
        })
        .collect();
    assert_eq!(got, vec![("ultrafast", 6.4), ("medium", 42.4)]);
}

#[test]
fn every_setting_that_changes_the_encode_splits_rows() {
    let base = x264("base", 10.0);
    type Change = (&'static str, fn(&mut Job));
    let variants: Vec<Change> = vec![
        ("crf", |j| j.spec.encode.crf = Some(23)),
        ("bitrate", |j| j.spec.encode.bitrate_kbps = 1600),
        ("encoder", |j| {
            j.spec.encode.encoder = Some("h264_nvenc".into())
        }),
        ("pix_fmt", |j| {
            j.spec.encode.pix_fmt = Some("yuv444p".into())
        }),
        ("width", |j| j.spec.encode.width = 1280),
        ("height", |j| j.spec.encode.height = 720),
        ("fps", |j| j.spec.encode.fps = 60),
        ("codec", |j| j.spec.encode.codec = Codec::H265),
        ("preset", |j| j.spec.encode.preset = "slow".into()),
    ];
    for (what, change) in variants {
        let mut other = base.clone();
        change(&mut other);
        let r = efficiency(&[base.clone(), other]);
        assert_eq!(r.rows.len(), 2, "{what} differs: {:#?}", r.rows);
    }
    // Naming the default pixel format, or another scenario name for
    // the same settings, changes nothing.
    let mut same = base.clone();
    same.spec.encode.pix_fmt = Some("yuv420p".into());
    same.spec.scenario = Some("360p30-h264".into());
    let r = efficiency(&[base.clone(), same]);
    assert_eq!(r.rows.len(), 1, "{:#?}", r.rows);
    assert_eq!(r.rows[0].scenario, "360p30-h264+custom-640x360p30");
    // In CRF mode the bitrate is not a setting.
    let mut a = base.clone();
    a.spec.encode.crf = Some(28);
    let mut b = a.clone();
    b.spec.encode.bitrate_kbps = 5000;
    let r = efficiency(&[a, b]);
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.rows[0].configuration.rate_control, "crf");
    assert_eq!(r.rows[0].configuration.bitrate_kbps, None);
    assert_eq!(r.rows[0].label, "libx264 veryfast crf28 640x360p30");
}

#[test]
fn estimates_and_measurements_of_one_configuration_are_separate_rows() {
    let jobs = vec![
        job("a", None, Codec::H264, "n1", 100.0, PowerSource::Rapl, 60.0),
        job(
            "b",
            None,
            Codec::H264,
            "n1",
            100.0,
            PowerSource::Estimate,
            60.0,
        ),
    ];
    let r = efficiency(&jobs);
    assert_eq!(r.rows.len(), 2);
    assert!(!r.rows[0].estimate && r.rows[1].estimate);
}

#[test]
fn jobs_without_energy_or_success_are_left_out_and_counted() {
    let mut no_energy = job("a", None, Codec::H264, "n1", 1.0, PowerSource::Rapl, 1.0);
    no_energy.attempts[0].energy = None;
    let mut failed = job("b", None, Codec::H264, "n1", 1.0, PowerSource::Rapl, 1.0);
    failed.state = JobState::Failed;
    let r = efficiency(&[no_energy, failed]);
    assert!(r.rows.is_empty());
    assert_eq!((r.jobs_considered, r.jobs_without_energy), (1, 1));
}

#[test]
fn quality_medians_spread_and_counts() {
    let jobs = vec![
        with_quality(x264("a", 10.0), Some(90.0), Some(40.0), Some(0.97)),
        with_quality(x264("b", 10.0), Some(94.0), Some(42.0), None),
        with_quality(x264("c", 10.0), None, Some(41.0), None),
        x264("d", 10.0),
    ];
    let r = efficiency(&jobs);
    assert_eq!(r.rows.len(), 1);
    let row = &r.rows[0];
    assert_eq!(row.samples, 4);
    let vmaf = row.vmaf.unwrap();
    assert_eq!((vmaf.median, vmaf.iqr, vmaf.n), (92.0, 2.0, 2));
    let psnr = row.psnr.unwrap();
    assert_eq!((psnr.median, psnr.n), (41.0, 3));
    assert_eq!(row.ssim.map(|s| (s.median, s.n)), Some((0.97, 1)));
    assert_eq!(r.frontier_metric, Some(FrontierMetric::Vmaf));
    assert!(row.frontier, "alone, it is the frontier");
}

#[test]
fn the_query_filters_by_experiment_and_every_label() {
    let mut a = x264("a", 10.0);
    a.spec.experiment = Some("sweep".into());
    a.spec.labels.insert("clip".into(), "park".into());
    a.spec.labels.insert("run".into(), "1".into());
    let mut b = x264("b", 20.0);
    b.spec.experiment = Some("sweep".into());
    b.spec.labels.insert("clip".into(), "crowd".into());
    let mut c = x264("c", 30.0);
    c.spec.labels.insert("clip".into(), "park".into());
    let jobs = [a, b, c];
    let q = |pairs: &[(&str, &str)]| {
        let q = ReportQuery::from_pairs(pairs.iter().copied()).unwrap();
        let r = efficiency_filtered(&jobs, &q);
        (r.jobs_considered, r.rows[0].median_joules_per_output_minute)
    };
    assert_eq!(q(&[]), (3, 40.0));
    assert_eq!(q(&[("experiment", "sweep")]), (2, 30.0));
    assert_eq!(q(&[("label", "clip=park")]), (2, 40.0));
    assert_eq!(
        q(&[("experiment", "sweep"), ("label", "clip=park")]),
        (1, 20.0)
    );
    assert_eq!(q(&[("label", "clip=park"), ("label", "run=1")]), (1, 20.0));
    let none = ReportQuery::from_pairs([("experiment", "other")]).unwrap();
    let r = efficiency_filtered(&jobs, &none);
    assert_eq!((r.jobs_considered, r.rows.len()), (0, 0));
    // A value may hold `=`: only the first splits.
    let q = ReportQuery::from_pairs([("label", "f=a=b")]).unwrap();
    assert_eq!(q.labels.get("f").map(String::as_str), Some("a=b"));
}

#[test]
fn bad_queries_are_refused_naming_the_parameter() {
    for (name, value, field) in [
        ("min_vmaf", "101", "min_vmaf"),
        ("min_vmaf", "-1", "min_vmaf"),
        ("min_vmaf", "NaN", "min_vmaf"),
        ("min_vmaf", "inf", "min_vmaf"),
        ("min_vmaf", "high", "min_vmaf"),
        ("min_vmaf", "", "min_vmaf"),
        ("min_psnr", "100.5", "min_psnr"),
        ("min_psnr", "-0.1", "min_psnr"),
        ("label", "novalue", "label"),
        ("label", "=v", "label"),
        ("experiment", "", "experiment"),
        ("colour", "red", "colour"),
    ] {
        let e = ReportQuery::from_pairs([(name, value)]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some(field), "{name}={value}: {e:?}");
    }
    let e = ReportQuery::from_pairs([("label", "a=1"), ("label", "a=2")]).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("label"));
    let q = ReportQuery::from_pairs([("min_vmaf", "0"), ("min_psnr", "100")]).unwrap();
    assert_eq!((q.min_vmaf, q.min_psnr), (Some(0.0), Some(100.0)));
    assert!(ReportQuery::from_pairs([("label", "a=1"), ("label", "a=1")]).is_ok());
}

#[test]
fn cheapest_reaching_quality_per_codec_and_overall() {
    let mut h265 = job("e", None, Codec::H265, "n1", 15.0, PowerSource::Rapl, 9.0);
    h265.spec.encode.preset = "medium".into();
    let mut slow = x264("b", 20.0);
    slow.spec.encode.preset = "slow".into();
    let mut fast = x264("a", 5.0);
    fast.spec.encode.preset = "ultrafast".into();
    let mut cheap_est = job(
        "f",
        None,
        Codec::H264,
        "n1",
        1.0,
        PowerSource::Estimate,
        9.0,
    );
    cheap_est.spec.encode.preset = "slow".into();
    let jobs = vec![
        with_quality(fast, Some(80.0), Some(35.0), None), // 10 J/min, too poor
        with_quality(slow, Some(95.0), Some(44.0), None), // 40 J/min
        with_quality(h265, Some(94.0), Some(43.0), None), // 30 J/min
        x264("c", 2.0),                                   // 4 J/min, unscored
        with_quality(cheap_est, Some(96.0), None, None),  // estimate
    ];
    let q = ReportQuery::from_pairs([("min_vmaf", "93")]).unwrap();
    let r = efficiency_filtered(&jobs, &q);
    let got: Vec<(&str, bool, Option<&str>)> = r
        .cheapest
        .iter()
        .map(|c| (c.scope.as_str(), c.estimate, c.label.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("overall", false, Some("libx265 medium 800k 640x360p30")),
            ("h264", false, Some("libx264 slow 800k 640x360p30")),
            ("h265", false, Some("libx265 medium 800k 640x360p30")),
            ("overall", true, Some("libx264 slow 800k 640x360p30")),
            ("h264", true, Some("libx264 slow 800k 640x360p30")),
        ]
    );
    assert_eq!(r.cheapest[0].median_joules_per_output_minute, Some(30.0));
    // Both thresholds must hold: PSNR 43.5 rules out the x265 row.
    let q = ReportQuery::from_pairs([("min_vmaf", "93"), ("min_psnr", "43.5")]).unwrap();
    let r = efficiency_filtered(&jobs, &q);
    assert_eq!(
        r.cheapest[0].label.as_deref(),
        Some("libx264 slow 800k 640x360p30")
    );
    assert_eq!(r.cheapest[2].scope, "h265");
    assert_eq!(r.cheapest[2].rank, None, "no x265 row reaches it");
    // Nothing reaches VMAF 99.
    let q = ReportQuery::from_pairs([("min_vmaf", "99")]).unwrap();
    let r = efficiency_filtered(&jobs, &q);
    assert!(r.cheapest.iter().all(|c| c.rank.is_none()));
    // The frontier: x264 ultrafast (10, 80), x265 (30, 94), x264 slow
    // (40, 95) measured; the unscored row is on nothing; the estimate
    // is alone on its own.
    let marks: Vec<(String, bool)> = r
        .rows
        .iter()
        .map(|x| (format!("{} {}", x.label, x.estimate), x.frontier))
        .collect();
    assert_eq!(
        marks,
        vec![
            ("libx264 veryfast 800k 640x360p30 false".to_string(), false),
            ("libx264 ultrafast 800k 640x360p30 false".to_string(), true),
            ("libx265 medium 800k 640x360p30 false".to_string(), true),
            ("libx264 slow 800k 640x360p30 false".to_string(), true),
            ("libx264 slow 800k 640x360p30 true".to_string(), true),
        ]
    );
}

#[test]
fn the_frontier_uses_psnr_when_no_row_has_vmaf() {
    let mut a = x264("a", 10.0);
    a.spec.encode.preset = "fast".into();
    let jobs = vec![
        with_quality(a, None, Some(40.0), None),
        with_quality(x264("b", 20.0), None, Some(39.0), None), // dominated
    ];
    let r = efficiency(&jobs);
    assert_eq!(r.frontier_metric, Some(FrontierMetric::Psnr));
    let marks: Vec<bool> = r.rows.iter().map(|x| x.frontier).collect();
    assert_eq!(marks, vec![true, false]);
}

// ---- properties ----

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
