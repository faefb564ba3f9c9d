//! Statistics, rows and their keys, the query's filters.

use super::*;

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
