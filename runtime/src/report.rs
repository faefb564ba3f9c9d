//! The efficiency report (`GET /v1/reports/efficiency`): which configuration
//! — scenario × encoder × node — costs the least energy per minute of output.
//!
//! A pure function over finished jobs. Each sample is one job that
//! succeeded, with the energy of its succeeding attempt (failed attempts are
//! a cost of the job, not of the configuration). Samples are grouped by
//! configuration *and* energy source, so an estimate is never mixed with a
//! measurement; measured rows rank first, by median joules per output
//! minute, and every row says whether its figures are estimates.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::model::{Job, JobState, NodeId, Outcome};

/// One configuration's figures.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EfficiencyRow {
    /// 1 for the most efficient measured configuration; estimated rows
    /// follow the measured ones.
    pub rank: u32,
    /// The preset name, or `custom-<W>x<H>p<FPS>` for jobs without one.
    pub scenario: String,
    /// The FFmpeg encoder (`libx264`, ...).
    pub encoder: String,
    #[schema(value_type = String)]
    pub node: NodeId,
    /// `rapl`, `nvml`, `estimate` or a `+`-joined mix.
    pub energy_source: String,
    /// True when these figures are estimates, not measurements.
    pub estimate: bool,
    /// Jobs behind these figures.
    pub samples: u64,
    pub median_joules_per_output_minute: f64,
    pub median_joules_per_frame: Option<f64>,
    pub median_mean_power_watts: f64,
    /// Median of the jobs' average encoding rate (frames per second).
    pub median_fps: f64,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EfficiencyReport {
    pub rows: Vec<EfficiencyRow>,
    /// Succeeded jobs looked at.
    pub jobs_considered: u64,
    /// Of those, jobs left out: no energy figure (their worker had no power
    /// sampler) or no known output duration.
    pub jobs_without_energy: u64,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    scenario: String,
    encoder: String,
    node: NodeId,
    source: String,
}

#[derive(Default)]
struct Samples {
    estimate: bool,
    per_minute: Vec<f64>,
    per_frame: Vec<f64>,
    watts: Vec<f64>,
    fps: Vec<f64>,
}

/// The median of `v` (the mean of the middle two for an even count);
/// `None` when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn scenario_of(job: &Job) -> String {
    job.spec.scenario.clone().unwrap_or_else(|| {
        let e = &job.spec.encode;
        format!("custom-{}x{}p{}", e.width, e.height, e.fps)
    })
}

/// Build the report from any set of jobs (only succeeded ones count).
pub fn efficiency<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> EfficiencyReport {
    let mut groups: BTreeMap<Key, Samples> = BTreeMap::new();
    let (mut considered, mut without) = (0u64, 0u64);
    for job in jobs {
        if job.state != JobState::Succeeded {
            continue;
        }
        considered += 1;
        let Some(attempt) = job
            .attempts
            .iter()
            .rev()
            .find(|a| matches!(a.outcome, Some(Outcome::Succeeded { .. })))
        else {
            without += 1;
            continue;
        };
        let (Some(energy), Some(Outcome::Succeeded { result })) =
            (&attempt.energy, &attempt.outcome)
        else {
            without += 1;
            continue;
        };
        let Some(per_minute) = energy.joules_per_output_minute else {
            without += 1;
            continue;
        };
        let s = groups
            .entry(Key {
                scenario: scenario_of(job),
                encoder: job.spec.encode.codec.encoder().to_string(),
                node: attempt.node.clone(),
                source: energy.energy_source.clone(),
            })
            .or_default();
        s.estimate |= energy.estimate;
        s.per_minute.push(per_minute);
        if let Some(f) = energy.joules_per_frame {
            s.per_frame.push(f);
        }
        s.watts.push(energy.mean_power_watts);
        s.fps.push(result.avg_fps);
    }
    let mut rows: Vec<EfficiencyRow> = groups
        .into_iter()
        .filter_map(|(k, mut s)| {
            Some(EfficiencyRow {
                rank: 0,
                scenario: k.scenario,
                encoder: k.encoder,
                node: k.node,
                energy_source: k.source,
                estimate: s.estimate,
                samples: s.per_minute.len() as u64,
                median_joules_per_output_minute: median(&mut s.per_minute)?,
                median_joules_per_frame: median(&mut s.per_frame),
                median_mean_power_watts: median(&mut s.watts).unwrap_or(0.0),
                median_fps: median(&mut s.fps).unwrap_or(0.0),
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        a.estimate.cmp(&b.estimate).then(
            a.median_joules_per_output_minute
                .total_cmp(&b.median_joules_per_output_minute),
        )
    });
    for (i, r) in rows.iter_mut().enumerate() {
        r.rank = i as u32 + 1;
    }
    EfficiencyReport {
        rows,
        jobs_considered: considered,
        jobs_without_energy: without,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttemptRecord, Codec, DomainEnergy, Energy, JobResult, PowerSource};

    fn job(
        id: &str,
        scenario: Option<&str>,
        codec: Codec,
        node: &str,
        joules: f64,
        source: PowerSource,
        fps: f64,
    ) -> Job {
        let mut spec = crate::model::test_spec();
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

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
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
        assert_eq!(r.rows[2].scenario, "custom-640x360p30");
        assert_eq!(r.rows[2].energy_source, "estimate");
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
}
