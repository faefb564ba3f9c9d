//! The cheapest configuration reaching a quality, and the frontier.

use super::*;

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
